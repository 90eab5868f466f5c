"""A user's mistakes, one row each: every bad input gets one line and exit status 2, changes nothing.

Each row makes a bad input synthetically in ``tmp_path`` and runs the command line on it. The
harness checks, for every row: exit status 2 (a :class:`SystemExit`, not a Python exception), no
traceback, one ``Error:`` line that names the file (or the option) and the fix, and the folder
exactly as it was before (same names, same bytes): nothing left at or beside the output path, the
inputs unchanged, an existing output untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save_guided_model_dir, save_model_dir, write_geotiff, write_nifti

from aesr_sci.cli import main


@dataclass
class Case:
    """A command line, the words its error line must hold, and whether click reports it (usage)."""

    args: list[str]
    expect: list[str]
    usage: bool = False  # click's own option errors: a usage line precedes the one Error line
    patches: list[tuple[str, Any]] = field(default_factory=list)


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its bytes (symlinks by target, FIFOs by kind)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_fifo():
            out[rel] = "fifo"
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _model(tmp: Path, **kw: Any) -> Path:
    return save_model_dir(tmp / "run", spatial_dims=2, **kw)


def _nifti(tmp: Path, name: str = "t1.nii.gz", **kw: Any) -> Path:
    return write_nifti(tmp / name, **kw)


def _tif(tmp: Path, name: str = "s2.tif", **kw: Any) -> Path:
    kw.setdefault("bands", 1)
    return write_geotiff(tmp / name, **kw)


# ---------------------------------------------------------------------------------- the rows
def degrade_onto_itself(tmp: Path) -> Case:
    src = _nifti(tmp)
    return Case(["degrade", str(src), str(src), "--scale", "2", "--overwrite"], [str(src), "input"])


def degrade_onto_symlink_of_input(tmp: Path) -> Case:
    src = _nifti(tmp)
    (tmp / "link.nii.gz").symlink_to(src)
    return Case(["degrade", str(src), str(tmp / "link.nii.gz"), "--scale", "2", "--overwrite"], ["input"])


def degrade_onto_hard_link_of_input(tmp: Path) -> Case:
    src = _tif(tmp)
    os.link(src, tmp / "same.tif")
    return Case(["degrade", str(src), str(tmp / "same.tif"), "--scale", "2", "--overwrite"], ["input"])


def upscale_onto_hard_link_of_input(tmp: Path) -> Case:
    src = _tif(tmp)
    os.link(src, tmp / "same.tif")
    model = _model(tmp)
    return Case(["upscale", str(model), str(src), str(tmp / "same.tif"), "--overwrite"], ["input"])


def export_onto_model(tmp: Path) -> Case:
    model = _model(tmp)
    target = model / "model.safetensors"
    return Case(["export", str(model), str(target), "--format", "torchscript", "--overwrite"], ["input"])


def info_fifo(tmp: Path) -> Case:
    os.mkfifo(tmp / "pipe.nii.gz")
    return Case(["info", str(tmp / "pipe.nii.gz")], ["pipe.nii.gz", "not a regular file"])


def degrade_fifo(tmp: Path) -> Case:
    os.mkfifo(tmp / "pipe.tif")
    return Case(
        ["degrade", str(tmp / "pipe.tif"), str(tmp / "o.tif"), "--scale", "2"], ["not a regular file"]
    )


def info_device(tmp: Path) -> Case:
    return Case(["info", "/dev/null"], ["/dev/null", "not a regular file"])


def nifti_rgb24(tmp: Path) -> Case:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    src = _nifti(tmp, "rgb.nii", data=rgb)
    return Case(["degrade", str(src), str(tmp / "o.nii"), "--scale", "2"], ["rgb.nii", "RGB", "channels"])


def nifti_complex(tmp: Path) -> Case:
    src = _nifti(tmp, "c.nii.gz", data=np.ones((8, 8, 8), np.complex64))
    return Case(
        ["degrade", str(src), str(tmp / "o.nii.gz"), "--scale", "2"], ["c.nii.gz", "complex", "magnitude"]
    )


def geotiff_complex(tmp: Path) -> Case:
    src = _tif(tmp, "c.tif", dtype="complex64", nodata=None, data=np.ones((1, 40, 36), np.complex64))
    return Case(["degrade", str(src), str(tmp / "o.tif"), "--scale", "2"], ["c.tif", "complex"])


def _edit_header(path: Path, **fields: Any) -> None:
    """Change header fields of an uncompressed NIfTI-1 file in place (what a broken tool writes)."""
    import nibabel as nib

    with open(path, "rb") as f:
        hdr = nib.Nifti1Header.from_fileobj(f, check=False)
    for key, value in fields.items():
        hdr[key] = value
    raw = bytearray(path.read_bytes())
    raw[:348] = hdr.binaryblock
    path.write_bytes(bytes(raw))


def nifti_nan_affine(tmp: Path) -> Case:
    src = _nifti(tmp, "nan.nii", qform_code=0, sform_code=2)
    _edit_header(src, srow_z=[0.0, 0.0, np.nan, 1.0])
    return Case(["degrade", str(src), str(tmp / "o.nii"), "--scale", "2"], ["nan.nii", "NaN", "sform"])


def nifti_singular_affine(tmp: Path) -> Case:
    affine = np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    src = _nifti(tmp, "sing.nii.gz", affine=affine, qform_code=0, sform_code=2)
    return Case(["info", str(src)], ["sing.nii.gz", "singular"])


def geotiff_singular_transform(tmp: Path) -> Case:
    from affine import Affine

    src = _tif(tmp, "sing.tif", transform=Affine(10.0, 0.0, 0.0, 20.0, 0.0, 0.0))
    return Case(
        ["degrade", str(src), str(tmp / "o.tif"), "--scale", "2"], ["sing.tif", "singular", "gdal_edit"]
    )


def nifti_absurd_dimensions(tmp: Path) -> Case:
    src = _nifti(tmp, "huge.nii", shape=(8, 8, 8))
    _edit_header(src, dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])
    return Case(["degrade", str(src), str(tmp / "o.nii"), "--scale", "2"], ["huge.nii", "30000 x 30000"])


def geotiff_gcps_only(tmp: Path) -> Case:
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    src = tmp / "gcps.tif"
    gcps = [GroundControlPoint(0, 0, 500000, 4000000), GroundControlPoint(0, 30, 500300, 4000000)]
    gcps.append(GroundControlPoint(30, 0, 500000, 3999700))
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "uint8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(src, "w", **profile)
    with dst:
        dst.write(np.full((1, 32, 32), 7, np.uint8))
        dst.gcps = (gcps, CRS.from_epsg(32633))
    return Case(
        ["degrade", str(src), str(tmp / "o.tif"), "--scale", "2"], ["gcps.tif", "ground control", "gdalwarp"]
    )


def model_json_disagrees_with_weights(tmp: Path) -> Case:
    model = _model(tmp)
    doc = json.loads((model / "model.json").read_text())
    doc["network"]["features"] = 8
    (model / "model.json").write_text(json.dumps(doc))
    src = _tif(tmp)
    return Case(["upscale", str(model), str(src), str(tmp / "o.tif")], ["model.json", "disagree", "restore"])


def model_json_without_network(tmp: Path) -> Case:
    model = _model(tmp)
    doc = json.loads((model / "model.json").read_text())
    del doc["network"]
    (model / "model.json").write_text(json.dumps(doc))
    src = _tif(tmp)
    return Case(["upscale", str(model), str(src), str(tmp / "o.tif")], ["model.json", "network"])


def export_without_extra(tmp: Path) -> Case:
    model = _model(tmp)
    patch = ("aesr_sci.nets.export._ONNX_MODULES", ("aesr_sci_no_such_module",))
    return Case(["export", str(model), str(tmp / "m.onnx")], ["aesr-sci[export]"], patches=[patch])


def device_bogus(tmp: Path) -> Case:
    src = _tif(tmp)
    return Case(
        ["upscale", str(_model(tmp)), str(src), str(tmp / "o.tif"), "--device", "bogus"],
        ["--device", "cuda:N"],
        usage=True,
    )


def train_device_bogus(tmp: Path) -> Case:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mri_x2.yaml"
    return Case(
        ["train", str(recipe), "--out", str(tmp / "run"), "--device", "gpu0"], ["--device"], usage=True
    )


def evaluate_device_bogus(tmp: Path) -> Case:
    src = _tif(tmp)
    return Case(["evaluate", str(_model(tmp)), str(src), "--device", "cuda:x"], ["--device"], usage=True)


def models_too_many_channels(tmp: Path) -> Case:
    return Case(["models", "--channels", "100000"], ["--channels", "1024"], usage=True)


def degrade_huge_sigma(tmp: Path) -> Case:
    src = _tif(tmp)
    return Case(
        ["degrade", str(src), str(tmp / "o.tif"), "--scale", "2", "--sigma", "1e6"], ["--sigma"], usage=True
    )


def _full_disk_write(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def geotiff_full_disk(tmp: Path) -> Case:
    src = _tif(tmp)
    (tmp / "o.tif").write_bytes(b"previous output")
    patch = ("aesr_sci.io.geotiff.GeoTiffWriter._write", _full_disk_write)
    return Case(
        ["degrade", str(src), str(tmp / "o.tif"), "--scale", "2", "--overwrite"],
        ["o.tif", "disk is full"],
        patches=[patch],
    )


def cog_full_disk(tmp: Path) -> Case:
    src = _tif(tmp)
    patch = ("rasterio.shutil.copy", _full_disk_write)
    args = ["-q", "upscale", str(_model(tmp)), str(src), str(tmp / "o.tif"), "--cog"]
    return Case(args, ["o.tif", "disk is full"], patches=[patch])


def batch_same_basename(tmp: Path) -> Case:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    one, two = _tif(tmp / "a", "x.tif"), _tif(tmp / "b", "x.tif")
    out = tmp / "out"
    out.mkdir()
    return Case(["upscale", str(_model(tmp)), str(one), str(two), str(out)], ["x.tif", "different names"])


def batch_band_count_of_second_file(tmp: Path) -> Case:
    one, two = _tif(tmp, "one.tif", bands=1), _tif(tmp, "two.tif", bands=3)
    out = tmp / "out"
    out.mkdir()
    return Case(["upscale", str(_model(tmp, channels=2)), str(one), str(two), str(out)], ["one.tif", "band"])


def batch_corrupt_second_file(tmp: Path) -> Case:
    one = _tif(tmp, "one.tif")
    (tmp / "two.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    out = tmp / "out"
    out.mkdir()
    return Case(["upscale", str(_model(tmp)), str(one), str(tmp / "two.tif"), str(out)], ["two.tif"])


def batch_wrong_dimensionality(tmp: Path) -> Case:
    one, two = _tif(tmp, "one.tif"), _nifti(tmp, "vol.nii.gz")
    out = tmp / "out"
    out.mkdir()
    return Case(["upscale", str(_model(tmp)), str(one), str(two), str(out)], ["vol.nii.gz", "2D"])


def upscale_overwrite_and_skip(tmp: Path) -> Case:
    src = _tif(tmp)
    args = ["upscale", str(_model(tmp)), str(src), str(tmp / "o.tif"), "--overwrite", "--skip-existing"]
    return Case(args, ["--skip-existing"], usage=True)


def evaluate_json_onto_model(tmp: Path) -> Case:
    model = _model(tmp)
    src = _tif(tmp)
    args = ["evaluate", str(model), str(src), "--json", str(model / "model.json"), "--overwrite"]
    return Case(args, ["model.json", "input"])


def evaluate_overwrite_failing_file(tmp: Path) -> Case:
    model = _model(tmp)
    good = _tif(tmp, "good.tif")
    (tmp / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    (tmp / "scores.json").write_text('{"previous": true}\n')
    args = [
        "-q",
        "evaluate",
        str(model),
        str(good),
        str(tmp / "bad.tif"),
        "--json",
        str(tmp / "scores.json"),
        "--overwrite",
    ]
    return Case(args, ["bad.tif"])


# guided models (issue 16): a 2-band 20 m target and its 2-band 10 m guide, sharing a corner
def _guided(tmp: Path, **guide: Any) -> tuple[Path, Path, Path]:
    from affine import Affine

    guide.setdefault("transform", Affine(10.0, 0.0, 585000.0, 0.0, -10.0, 4415000.0))
    guide.setdefault("bands", 2)
    target = _tif(tmp, "t_20m.tif", bands=2)
    return save_guided_model_dir(tmp / "run"), target, _tif(tmp, "g_10m.tif", height=80, width=72, **guide)


def _upscale_guided(model: Path, target: Path, guide: Path | None, tmp: Path) -> list[str]:
    return [
        "upscale",
        str(model),
        str(target),
        str(tmp / "o.tif"),
        *(["--guide", str(guide)] if guide else []),
    ]


def guide_in_another_crs(tmp: Path) -> Case:
    model, target, guide = _guided(tmp, crs="EPSG:32633")
    return Case(_upscale_guided(model, target, guide, tmp), ["g_10m.tif", "EPSG:32633", "EPSG:32618"])


def guide_at_another_pixel_size(tmp: Path) -> Case:
    from affine import Affine

    model, target, guide = _guided(tmp, transform=Affine(5.0, 0.0, 585000.0, 0.0, -5.0, 4415000.0))
    return Case(_upscale_guided(model, target, guide, tmp), ["g_10m.tif", "pixel", "10"])


def guide_shifted_off_the_grid(tmp: Path) -> Case:
    from affine import Affine

    model, target, guide = _guided(tmp, transform=Affine(10.0, 0.0, 585002.5, 0.0, -10.0, 4415000.0))
    expect = ["g_10m.tif", "shifted off the target's grid by 0 x 0.25 guide pixels", "gdalwarp -tr 10 10 -te"]
    return Case(_upscale_guided(model, target, guide, tmp), expect)


def guided_model_without_guide(tmp: Path) -> Case:
    model, target, _ = _guided(tmp)
    return Case(_upscale_guided(model, target, None, tmp), ["the model is guided", "--guide"])


def guide_to_an_unguided_model(tmp: Path) -> Case:
    _, target, guide = _guided(tmp)
    model = save_model_dir(tmp / "plain", channels=2)
    return Case(_upscale_guided(model, target, guide, tmp), ["g_10m.tif", "takes no guide"])


def guide_band_count(tmp: Path) -> Case:
    model, target, guide = _guided(tmp, bands=3)
    return Case(_upscale_guided(model, target, guide, tmp), ["g_10m.tif", "3 band(s)", "2 (G2, G3)"])


def guide_with_several_inputs(tmp: Path) -> Case:
    model, target, guide = _guided(tmp)
    other = _tif(tmp, "u_20m.tif", bands=2)
    out = tmp / "out"
    out.mkdir()
    args = ["upscale", str(model), str(target), str(other), str(out), "--guide", str(guide)]
    return Case(args, ["--guide", "one INPUT"], usage=True)


def evaluate_guides_do_not_pair(tmp: Path) -> Case:
    model, target, guide = _guided(tmp)
    other = _tif(tmp, "u_20m.tif", bands=2)
    args = ["evaluate", str(model), str(target), str(other), "--guide", str(guide)]
    return Case(args, ["1 guide(s) for 2 file(s)", "one guide per file"])


def selfsr_thickness_not_a_number(tmp: Path) -> Case:
    thick = write_nifti(tmp / "thick.nii.gz", (16, 16, 8), np.diag([1.0, 1.0, 4.0, 1.0]))
    args = ["selfsr", str(thick), str(tmp / "thin.nii.gz"), "--thickness", "-1"]
    return Case(args, ["--thickness", "positive number of mm or 'auto'"], usage=True)


def selfsr_tta_on_a_thick_slice_input(tmp: Path) -> Case:
    thick = write_nifti(tmp / "thick.nii.gz", (16, 16, 8), np.diag([1.0, 1.0, 4.0, 1.0]))
    args = ["selfsr", str(thick), str(tmp / "thin.nii.gz"), "--minutes", "0.05", "--tta"]
    return Case(args, ["thick.nii.gz", "both orientations", "leave out --tta and --consistency"])


def adapt_a_guided_model_without_its_guide(tmp: Path) -> Case:
    model, target, _ = _guided(tmp)
    return Case(
        [*_upscale_guided(model, target, None, tmp), "--adapt", "0.1"], ["model is guided", "--guide"]
    )


def adapt_an_unguided_model_with_a_guide(tmp: Path) -> Case:
    _, target, guide = _guided(tmp)
    plain = save_model_dir(tmp / "plain", channels=2)
    return Case(
        [*_upscale_guided(plain, target, guide, tmp), "--adapt", "0.1"], ["g_10m.tif", "takes no guide"]
    )


# selfsr --guide (issue 17): the guide is checked as upscale --guide checks it, before any training
def _selfsr_guided(tmp: Path, *extra: str, **guide: Any) -> list[str]:
    _, target, guide_path = _guided(tmp, **guide)
    return [
        "selfsr",
        str(target),
        str(tmp / "o.tif"),
        "--guide",
        str(guide_path),
        "--minutes",
        "0.01",
        *extra,
    ]


def selfsr_guide_in_another_crs(tmp: Path) -> Case:
    return Case(_selfsr_guided(tmp, crs="EPSG:32633"), ["g_10m.tif", "EPSG:32633", "EPSG:32618"])


def selfsr_guide_not_a_whole_fraction_of_the_pixel_size(tmp: Path) -> Case:
    from affine import Affine

    args = _selfsr_guided(tmp, transform=Affine(15.0, 0.0, 585000.0, 0.0, -15.0, 4415000.0))
    return Case(args, ["g_10m.tif", "15 x 15 m", "20 x 20 m", "whole number of times finer"])


def selfsr_guide_shifted_off_the_grid(tmp: Path) -> Case:
    from affine import Affine

    args = _selfsr_guided(tmp, transform=Affine(10.0, 0.0, 585002.5, 0.0, -10.0, 4415000.0))
    return Case(args, ["g_10m.tif", "shifted off the target's grid by 0 x 0.25 guide pixels", "gdalwarp"])


def selfsr_scale_contradicts_the_guide(tmp: Path) -> Case:
    return Case(_selfsr_guided(tmp, "--scale", "3"), ["g_10m.tif", "2x2 times finer", "not 3", "--scale"])


GUIDE_ROWS: list[Callable[[Path], Case]] = [
    guide_in_another_crs,
    guide_at_another_pixel_size,
    guide_shifted_off_the_grid,
    guided_model_without_guide,
    guide_to_an_unguided_model,
    guide_band_count,
    guide_with_several_inputs,
    evaluate_guides_do_not_pair,
    selfsr_thickness_not_a_number,
    selfsr_tta_on_a_thick_slice_input,
    adapt_a_guided_model_without_its_guide,
    adapt_an_unguided_model_with_a_guide,
    selfsr_guide_in_another_crs,
    selfsr_guide_not_a_whole_fraction_of_the_pixel_size,
    selfsr_guide_shifted_off_the_grid,
    selfsr_scale_contradicts_the_guide,
]


ROWS: list[Callable[[Path], Case]] = [
    degrade_onto_itself,
    degrade_onto_symlink_of_input,
    degrade_onto_hard_link_of_input,
    upscale_onto_hard_link_of_input,
    export_onto_model,
    info_fifo,
    degrade_fifo,
    info_device,
    nifti_rgb24,
    nifti_complex,
    geotiff_complex,
    nifti_nan_affine,
    nifti_singular_affine,
    geotiff_singular_transform,
    nifti_absurd_dimensions,
    geotiff_gcps_only,
    model_json_disagrees_with_weights,
    model_json_without_network,
    export_without_extra,
    device_bogus,
    train_device_bogus,
    evaluate_device_bogus,
    models_too_many_channels,
    degrade_huge_sigma,
    geotiff_full_disk,
    cog_full_disk,
    batch_same_basename,
    batch_band_count_of_second_file,
    batch_corrupt_second_file,
    batch_wrong_dimensionality,
    upscale_overwrite_and_skip,
    evaluate_json_onto_model,
    evaluate_overwrite_failing_file,
    *GUIDE_ROWS,
]


def _degrade_option(option: str, value: str) -> Callable[[Path], Case]:
    def row(tmp: Path) -> Case:
        src = _nifti(tmp)
        args = ["degrade", str(src), str(tmp / "o.nii.gz"), "--scale", "2", option, value]
        if option == "--scale":
            args = ["degrade", str(src), str(tmp / "o.nii.gz"), "--scale", value]
        return Case(args, ["--scale" if option == "--scale" else option], usage=True)

    row.__name__ = f"degrade_{option.strip('-').replace('-', '_')}_{value}"
    return row


def _upscale_patch(value: str) -> Callable[[Path], Case]:
    def row(tmp: Path) -> Case:
        src = _tif(tmp)
        return Case(
            ["upscale", str(_model(tmp)), str(src), str(tmp / "o.tif"), "--patch-size", value],
            ["--patch-size"],
            usage=True,
        )

    row.__name__ = f"upscale_patch_size_{value}"
    return row


PARSER_ROWS = [_degrade_option("--scale", v) for v in ("0", "nan", "inf", "1,4")]
PARSER_ROWS += [_upscale_patch(v) for v in ("-4", "2.5")]


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: Callable[[Path], Case]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    case = row(work)
    for target, value in case.patches:
        monkeypatch.setattr(target, value)
    before = _snapshot(work)
    result = CliRunner().invoke(main, case.args)
    stderr = result.stderr
    assert result.exit_code == 2, f"{row.__name__}: exit {result.exit_code}\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"{row.__name__}: {result.exception!r}"
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    if not case.usage:  # our own messages: that one line and nothing else
        assert [line for line in stderr.splitlines() if line.strip()] == errors, stderr
    for word in case.expect:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    assert _snapshot(work) == before, "the folder changed"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.__name__)
def test_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: Callable[[Path], Case]) -> None:
    _check(tmp_path, monkeypatch, row)


@pytest.mark.parametrize("row", PARSER_ROWS, ids=lambda r: r.__name__)
def test_bad_scale_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, row: Callable[[Path], Case]
) -> None:
    _check(tmp_path, monkeypatch, row)


# ------------------------------------------------------------------ what goes right instead
def test_skip_existing_resumes_a_batch(tmp_path: Path) -> None:
    model = _model(tmp_path)
    one, two = _tif(tmp_path, "one.tif"), _tif(tmp_path, "two.tif", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "one.tif").write_bytes(b"done before")
    result = CliRunner().invoke(
        main, ["-q", "upscale", str(model), str(one), str(two), str(out), "--skip-existing"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "one.tif").read_bytes() == b"done before"
    assert (out / "two.tif").stat().st_size > 1000


def test_write_json_has_no_infinity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from aesr_sci.checkpoint import write_json

    write_json(tmp_path / "r.json", {"psnr": math.inf, "files": [{"ssim": 1.0, "x": math.nan}]})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"psnr": None, "files": [{"ssim": 1.0, "x": None}]}
    assert "2 non-finite" in caplog.text


def test_spacing_far_from_training_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(tmp_path)
    doc = json.loads((model / "model.json").read_text())
    doc["training_spacing"] = [2.5, 2.5]  # x2 expects 5 m inputs; these have 20 m pixels
    (model / "model.json").write_text(json.dumps(doc))
    one, two = _tif(tmp_path, "one.tif"), _tif(tmp_path, "two.tif")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["-q", "upscale", str(model), str(one), str(two), str(out)])
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if "the model expects" in r.getMessage()]
    assert len(lines) == 1 and "one.tif" in lines[0] and "20x20" in lines[0] and "5x5" in lines[0], lines


def test_python_warnings_once_without_source_lines(tmp_path: Path) -> None:
    """In a real process (no pytest filters): a no-CRS raster warns once, in one line."""
    src = _tif(tmp_path, crs=None)
    proc = subprocess.run(
        [sys.executable, "-m", "aesr_sci.cli", "degrade", str(src), str(tmp_path / "o.tif"), "--scale", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "coordinate reference system" in line]
    assert len(lines) == 1, proc.stderr
    assert ".py:" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_all_nodata_raster_upscales_to_all_nodata(tmp_path: Path) -> None:
    from aesr_sci.io import read

    src = _tif(tmp_path, "z.tif", bands=2, height=16, width=16, data=np.zeros((2, 16, 16)), nodata=0)
    result = CliRunner().invoke(
        main, ["-q", "upscale", str(_model(tmp_path)), str(src), str(tmp_path / "o.tif")]
    )
    assert result.exit_code == 0, result.output
    out = read(tmp_path / "o.tif")
    assert out.spatial_shape == (32, 32) and not out.mask.any() and (out.data == 0).all()


def test_per_band_nodata_survives_upscaling(tmp_path: Path) -> None:
    """A pixel missing in one band stays valid in the others through upscale."""
    from aesr_sci.io import read

    data = np.full((2, 16, 16), 100, np.uint16)
    data[0, 8, 8] = 0
    src = _tif(tmp_path, "a.tif", bands=2, height=16, width=16, data=data, nodata=0, nodata_border=0)
    result = CliRunner().invoke(
        main, ["-q", "upscale", str(_model(tmp_path)), str(src), str(tmp_path / "o.tif")]
    )
    assert result.exit_code == 0, result.output
    out = read(tmp_path / "o.tif")
    assert out.mask.shape == (2, 32, 32)
    assert (~out.mask[0]).sum() == 4 and out.mask[1].all()
