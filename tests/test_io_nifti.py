"""NIfTI adapter: reading, windows, round trips of values and header fields, errors, atomicity."""

from __future__ import annotations

import gzip
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from aesr_sci import io
from aesr_sci.errors import DataError, FileFormatError, FileReadError, FileWriteError, OutputExistsError
from aesr_sci.spatial import Image, SpatialMeta

LAS = np.array([[-1.2, 0, 0, 30.0], [0, 1.0, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_oblique_volume(nifti_path):
    img = io.read(nifti_path)
    ref = nib.load(nifti_path)
    assert img.data.shape == (1, 20, 18, 16)
    assert img.data.dtype == np.float32 and img.meta.dtype == "float32"
    np.testing.assert_array_equal(img.affine, ref.affine)
    np.testing.assert_array_equal(img.data[0], ref.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(img.meta.spacing, (0.9, 1.1, 2.5), rtol=1e-6)
    assert img.meta.format == "nifti" and img.meta.crs is None and img.mask is None


def test_read_meta_matches_read(nifti_path):
    meta, shape = io.read_meta(nifti_path)
    assert shape == (1, 20, 18, 16)
    np.testing.assert_array_equal(meta.affine, io.read(nifti_path).affine)


def test_round_trip_keeps_header(tmp_path, make_nifti):
    src = make_nifti(
        tmp_path / "in.nii.gz",
        qform_code=1,
        sform_code=4,
        description="subject 7, T1",
        extensions=[(6, b"a plain comment"), (40, b"\x00\x01binary")],
        xyzt_units=("mm", "msec"),
        intent="t test",
    )
    before = _digest(src)
    out = io.write(io.read(src), tmp_path / "out.nii.gz")
    assert _digest(src) == before  # the input is never modified
    a, b = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert b.get_data_dtype() == a.get_data_dtype()
    for form in ("get_qform", "get_sform"):
        qa, ca = getattr(a.header, form)(coded=True)
        qb, cb = getattr(b.header, form)(coded=True)
        assert int(ca) == int(cb)
        np.testing.assert_array_equal(qa, qb)
    assert (int(b.header["qform_code"]), int(b.header["sform_code"])) == (1, 4)
    assert b.header.get_xyzt_units() == ("mm", "msec")
    assert b.header.get_intent()[0] == "t test"
    assert b.header["descrip"].item() == b"subject 7, T1"
    contents = [(int(e.get_code()), e.content) for e in b.header.extensions]
    assert (6, b"a plain comment") in contents and (40, b"\x00\x01binary") in contents
    assert b.header.get_zooms() == a.header.get_zooms()


def test_round_trip_4d_series(tmp_path, make_nifti):
    src = make_nifti(tmp_path / "series.nii", channels=3, dtype="int16")
    img = io.read(src)
    raw = np.asarray(nib.load(src).dataobj)
    assert img.data.shape == (3, 20, 18, 16) and img.data.dtype == np.int16
    np.testing.assert_array_equal(img.data, np.moveaxis(raw, 3, 0))
    out = io.write(img, tmp_path / "copy.nii")
    back = nib.load(out)
    assert back.shape == (20, 18, 16, 3)
    np.testing.assert_array_equal(np.asarray(back.dataobj), raw)


def test_las_orientation_is_kept(tmp_path, make_nifti):
    src = make_nifti(tmp_path / "las.nii.gz", affine=LAS)
    img = io.read(src)
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    np.testing.assert_array_equal(img.data[0], nib.load(src).get_fdata(dtype=np.float32))  # not flipped
    back = nib.load(io.write(img, tmp_path / "las_out.nii.gz"))
    np.testing.assert_array_equal(back.affine, nib.load(src).affine)
    np.testing.assert_allclose(back.affine, LAS, rtol=1e-6)


def test_scaled_int16_round_trip(tmp_path, make_nifti):
    raw = np.arange(-500, 20 * 18 * 16 - 500, dtype=np.int16).reshape(20, 18, 16)
    src = make_nifti(tmp_path / "scaled.nii.gz", dtype="int16", data=raw, slope=0.25, inter=-7.0)
    img = io.read(src)
    assert img.data.dtype == np.float32 and img.meta.dtype == "int16"
    np.testing.assert_allclose(img.data[0], raw * 0.25 - 7.0)
    back = nib.load(io.write(img, tmp_path / "scaled_out.nii.gz"))
    assert back.get_data_dtype() == np.int16
    assert (back.dataobj.slope, back.dataobj.inter) == (0.25, -7.0)
    np.testing.assert_array_equal(back.dataobj.get_unscaled(), raw)


def test_scaled_values_beyond_the_source_range_survive(tmp_path, make_nifti):
    raw = np.full((6, 6, 6), 100, dtype=np.uint8)
    img = io.read(make_nifti(tmp_path / "u8.nii.gz", dtype="uint8", data=raw, slope=2.0, inter=0.0))
    bigger = img.replace(data=np.linspace(-50, 900, img.data.size, dtype=np.float32).reshape(img.data.shape))
    back = io.read(io.write(bigger, tmp_path / "u8_out.nii.gz"))
    assert back.meta.dtype == "uint8"
    step = (900 + 50) / 255
    np.testing.assert_allclose(back.data, bigger.data, atol=step)


def test_windowed_read_matches_slice_and_world(nifti_path):
    full = io.read(nifti_path)
    window = ((3, 11), (0, 7), (5, 16))
    part = io.read(nifti_path, window=window)
    np.testing.assert_array_equal(part.data, full.data[:, 3:11, 0:7, 5:16])
    for idx in [(0, 0, 0), (7, 6, 10), (2.5, -0.5, 1)]:
        shifted = np.add(idx, [w[0] for w in window])
        np.testing.assert_allclose(part.world(idx), full.world(shifted), atol=1e-9)


def test_window_outside_volume_is_a_data_error(nifti_path):
    with pytest.raises(DataError, match="outside the image"):
        io.read(nifti_path, window=((0, 30), (0, 5), (0, 5)))
    with pytest.raises(DataError, match="spatial axes"):
        io.read(nifti_path, window=((0, 5), (0, 5)))


@pytest.mark.parametrize("shape", [(8, 9), (4, 4, 4, 2, 3)])
def test_2d_and_5d_files_are_rejected(tmp_path, make_nifti, shape):
    path = make_nifti(tmp_path / "bad.nii.gz", shape=shape, affine=np.eye(4))
    with pytest.raises(FileFormatError, match="only 3D volumes"):
        io.read(path)


def test_trailing_singleton_axes_are_dropped(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "five.nii.gz", shape=(4, 5, 6, 1, 1), affine=np.eye(4))
    assert io.read(path).data.shape == (1, 4, 5, 6)


@pytest.mark.parametrize("keep", [0.01, 0.6])
def test_truncated_gzip_is_a_read_error(nifti_path, keep):
    blob = nifti_path.read_bytes()
    nifti_path.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(FileReadError, match=r"corrupt|truncated"):
        io.read(nifti_path)


def test_gzip_with_garbage_payload_is_a_read_error(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    with pytest.raises((FileReadError, FileFormatError)):
        io.read(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileReadError, match="no such file"):
        io.read(tmp_path / "absent.nii.gz")


def test_nan_is_a_data_error(tmp_path, make_nifti):
    data = np.ones((5, 5, 5), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    path = make_nifti(tmp_path / "nan.nii.gz", data=data)
    with pytest.raises(DataError, match=r"2 of 125 values are NaN or Inf.*replace them"):
        io.read(path)
    assert np.isnan(io.read(path, check_finite=False).data).sum() == 1


def test_integer_output_is_rounded_and_clipped(tmp_path):
    meta = SpatialMeta(np.diag([1.0, 1.0, 2.0, 1.0]), dtype="uint8", format=None)
    values = np.array([300.7, -3.0, 12.6, 12.4], np.float32).reshape(1, 4, 1, 1)
    out = io.write(Image(values, meta), tmp_path / "clip.nii.gz")
    back = nib.load(out)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj).ravel(), [255, 0, 13, 12])
    np.testing.assert_array_equal(back.affine, meta.affine)
    assert back.header["sform_code"] == 2


def test_zoomed_image_moves_both_forms_and_zooms(tmp_path, nifti_path):
    img = io.read(nifti_path)
    zoomed_meta = img.meta.zoom((1, 1, 4), convention="fov")
    zoomed = Image(np.repeat(img.data, 4, axis=3), zoomed_meta)
    back = nib.load(io.write(zoomed, tmp_path / "z.nii.gz"))
    assert back.shape == (20, 18, 64)
    np.testing.assert_allclose(back.header.get_zooms(), (0.9, 1.1, 0.625), rtol=1e-6)
    np.testing.assert_allclose(back.header.get_sform(), zoomed_meta.affine, atol=1e-5)
    np.testing.assert_allclose(back.header.get_qform(), zoomed_meta.affine, atol=1e-4)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 2)


def test_provenance_round_trip(tmp_path, nifti_path):
    img = io.read(nifti_path)
    tagged = img.replace(meta=img.meta.with_provenance(model="srae", scale=[1, 1, 4], degradation="kspace"))
    out = io.write(tagged, tmp_path / "p.nii.gz")
    back = io.read(out)
    assert back.meta.provenance["model"] == "srae" and back.meta.provenance["scale"] == [1, 1, 4]
    assert back.meta.provenance["aesr_sci_version"]
    hdr = nib.load(out).header
    assert b"model=srae" in hdr["descrip"].item() and len(hdr["descrip"].item()) <= 80
    payloads = [json.loads(e.content) for e in hdr.extensions if e.get_code() == 6]
    assert len(payloads) == 1  # written again, not duplicated
    io.write(back, tmp_path / "p2.nii.gz")
    assert sum(e.get_code() == 6 for e in nib.load(tmp_path / "p2.nii.gz").header.extensions) == 1


def test_existing_output_is_not_overwritten(tmp_path, nifti_path):
    img = io.read(nifti_path)
    out = tmp_path / "exists.nii.gz"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite"):
        io.write(img, out)
    assert out.read_bytes() == b"keep me"
    io.write(img, out, overwrite=True)
    np.testing.assert_array_equal(io.read(out).data, img.data)


def test_failure_while_writing_leaves_nothing(tmp_path, nifti_path, monkeypatch):
    img = io.read(nifti_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def boom(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        io.write(img, out_dir / "x.nii.gz")
    assert list(out_dir.iterdir()) == []


def test_unwritable_directory(tmp_path, nifti_path):
    with pytest.raises(FileWriteError, match="does not exist"):
        io.write(io.read(nifti_path), tmp_path / "missing" / "x.nii.gz")


def test_unsupported_extension(tmp_path, nifti_path):
    with pytest.raises(FileFormatError, match=r"\.nii\.gz.*\.tif"):
        io.write(io.read(nifti_path), tmp_path / "x.mgz")
    other = tmp_path / "scan.mgz"
    other.write_bytes(b"\x00" * 400)
    with pytest.raises(FileFormatError, match="supported extensions"):
        io.read(other)


def test_sform_and_qform_that_differ_each_keep_their_own_geometry(tmp_path):
    """A file whose sform and qform disagree: each written form is its own input form, zoomed."""
    import nibabel as nib

    from aesr_sci.data.degrade import degrade
    from aesr_sci.spatial import zoom_affine

    sform = np.array([[0.9, 0.1, 0, -50], [-0.1, 0.95, 0.2, -60], [0, -0.2, 2.5, -20], [0, 0, 0, 1]])
    qform = np.array([[1.0, 0, 0, -40], [0, 1.0, 0, -55], [0, 0, 2.4, -10], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.random.default_rng(0).random((20, 18, 16)).astype("float32"), sform)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    img.header["pixdim"][4] = 2.5  # TR
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_intent("estimate")
    img.header["cal_min"], img.header["cal_max"] = 3.0, 90.0
    img.header["descrip"] = b"T1 MPRAGE 1mm"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(4, b"<AFNI_attributes ni_form='ni_group'/>"))
    nib.save(img, tmp_path / "a.nii")
    lq = degrade(io.read(tmp_path / "a.nii"), scale=2, method="area")
    io.write(lq, tmp_path / "b.nii")
    out = nib.load(tmp_path / "b.nii")
    hdr = out.header
    corners = np.array([[-0.5, -0.5, -0.5], [9.5, 8.5, 7.5], [0.0, 0.0, 0.0], [9.0, 8.0, 7.0]])
    for written, source in ((hdr.get_sform(), sform), (hdr.get_qform(), qform)):
        expected = zoom_affine(source, 0.5, convention="fov")
        world = corners @ written[:3, :3].T + written[:3, 3]
        np.testing.assert_allclose(world, corners @ expected[:3, :3].T + expected[:3, 3], atol=1e-4)
    # the far corner of the input's field of view is where it was, in both forms
    far = np.array([19.5, 17.5, 15.5])
    np.testing.assert_allclose(
        hdr.get_qform()[:3, :3] @ (far / 2 - 0.25) + hdr.get_qform()[:3, 3],
        qform[:3, :3] @ far + qform[:3, 3],
        atol=1e-4,
    )
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 1)
    assert hdr["pixdim"][4] == 2.5 and hdr.get_xyzt_units() == ("mm", "msec")
    assert hdr.get_intent()[0] == "estimate" and (hdr["cal_min"], hdr["cal_max"]) == (3.0, 90.0)
    assert [e.get_code() for e in hdr.extensions] == [6]  # the AFNI extension described the old grid
    descrip = hdr["descrip"].item().decode()
    assert descrip.startswith("aesr-sci") and "degradation=area" in descrip and "{" not in descrip
    assert io.read(tmp_path / "b.nii").meta.provenance["source_description"] == "T1 MPRAGE 1mm"


def test_unchanged_grid_keeps_extensions(tmp_path, make_nifti):
    src = make_nifti(tmp_path / "a.nii.gz", extensions=[(4, b"<AFNI/>")])
    io.write(io.read(src), tmp_path / "b.nii.gz")
    import nibabel as nib

    assert [e.get_code() for e in nib.load(tmp_path / "b.nii.gz").header.extensions] == [4, 6]


def test_masked_voxels_get_the_fill_value(tmp_path, nifti_path):
    img = io.read(nifti_path)
    mask = np.ones(img.spatial_shape, bool)
    mask[:3] = False
    io.write(img.replace(mask=mask), tmp_path / "m.nii.gz")
    back = io.read(tmp_path / "m.nii.gz").data
    assert (back[:, :3] == 0).all()
    np.testing.assert_array_equal(back[:, 3:], img.data[:, 3:])
