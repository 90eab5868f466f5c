"""Tests of self-supervised super-resolution: aesr-sci selfsr, upscale --adapt and training.fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import aesr_sci
from aesr_sci.cli import main
from aesr_sci.data.degrade import Degradation
from aesr_sci.errors import MismatchError
from aesr_sci.io import read
from aesr_sci.nets import build_model
from aesr_sci.selfsr import output_meta, slice_geometry
from aesr_sci.spatial import Image, SpatialMeta
from aesr_sci.training import fit
from tests.conftest import folder_digest, oblique_affine, save_model_dir, write_geotiff, write_nifti


def _tissues(shape, seed: int = 0) -> np.ndarray:
    """Smooth blobs of 'tissue' on air, isotropic: what a head looks like at low resolution."""
    rng = np.random.default_rng(seed)
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    r2 = sum(x**2 for x in k)
    f = np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * np.exp(-r2 * 200.0)).real
    f = (f - f.mean()) / f.std()
    out = 100.0 + 30.0 * np.tanh(2.0 * f)
    out[:2] = out[-2:] = out[:, :2] = out[:, -2:] = 0.0
    return out.astype(np.float32)


def _thick_nifti(path: Path, shape=(32, 32, 32), s: int = 4) -> Path:
    """A volume of ``shape`` made s times thicker along its last axis (box slices, 1 x 1 x s mm)."""
    hr = _tissues(shape)
    lo = Degradation("slice", (1, 1, s), {"fwhm": float(s), "profile": "box"})
    thick = lo.apply(torch.from_numpy(hr)[None, None])[0, 0].numpy()
    return write_nifti(path, thick.shape, oblique_affine((1.0, 1.0, float(s))), data=thick)


def _cli(*args: str):
    return CliRunner().invoke(main, ["-q", *args])


def test_selfsr_writes_the_fov_grid_and_its_saved_model_upscales_other_scans_alike(tmp_path):
    thick = _thick_nifti(tmp_path / "thick.nii.gz")
    out, model = tmp_path / "thin.nii.gz", tmp_path / "protocol"
    result = _cli("selfsr", str(thick), str(out), "--minutes", "0.05", "--save-model", str(model))
    assert result.exit_code == 0, result.output
    src, got = read(thick), read(out)
    geometry = slice_geometry(src.meta)
    assert geometry.axis == 2 and geometry.scale == 4
    assert got.spatial_shape == (32, 32, 32) and np.isfinite(got.data).all()
    np.testing.assert_allclose(got.meta.affine, output_meta(src.meta, geometry).affine, atol=1e-5)
    # every thick slice's centre is the mean of the world positions of the four thin ones it covers
    thin = got.meta.affine @ np.array([[5, 7, k, 1.0] for k in range(4, 8)]).T
    np.testing.assert_allclose(thin.mean(1), src.meta.affine @ np.array([5, 7, 1, 1.0]), atol=1e-4)
    # the saved model, applied by upscale, gives the same volume (both orientations across the thick axis)
    again = tmp_path / "again.nii.gz"
    result = _cli("upscale", str(model), str(thick), str(again))
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read(again).data, got.data, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(read(again).meta.affine, got.meta.affine)
    # upscale --adapt fine-tunes a copy: the model folder stays byte for byte as it was
    before = folder_digest(model)
    adapted = tmp_path / "adapted.nii.gz"
    result = _cli("upscale", str(model), str(thick), str(adapted), "--adapt", "0.01")
    assert result.exit_code == 0, result.output
    assert folder_digest(model) == before and read(adapted).spatial_shape == (32, 32, 32)
    # a thick-slice model refuses an isotropic scan in one line
    iso = write_nifti(tmp_path / "iso.nii.gz", (32, 32, 32), oblique_affine((1.0, 1.0, 1.0)))
    result = _cli("upscale", str(model), str(iso), str(tmp_path / "no.nii.gz"))
    assert result.exit_code == 2 and "no thick axis" in result.output
    assert not (tmp_path / "no.nii.gz").exists()


def test_the_slice_profile_is_as_wide_as_the_slice_thickness_unless_asked_to_measure_it(
    tmp_path, monkeypatch
):
    """The width is the header's (the spacing) or the thickness given; 'auto' fits it from the data,
    which a volume whose in-plane axes are blurrier than its grid misleads (as ARC M2208 did)."""
    from aesr_sci import selfsupervised
    from aesr_sci.training.loop import FitResult

    # no training: only the profile chosen before it matters here
    monkeypatch.setattr(
        selfsupervised, "fit", lambda network, *a, **k: FitResult(network.eval(), 0, 0.0, 0.0)
    )
    thick = read(_thick_nifti(tmp_path / "t.nii.gz", s=4))
    widths = {
        t: aesr_sci.selfsr(thick, thickness=t).meta.provenance["slice_profile"] for t in (None, 3.0, "auto")
    }
    assert widths[None]["fwhm"] == pytest.approx(4.0) and widths[3.0]["fwhm"] == pytest.approx(3.0)
    assert widths["auto"]["source"] == "data" and widths["auto"]["fwhm"] != pytest.approx(4.0)


def test_isotropic_images_learn_from_themselves_degraded_one_scale_further():
    image = Image(_tissues((40, 36))[None], SpatialMeta(np.diag([10.0, 10.0, 1.0])))
    out = aesr_sci.selfsr(image, scale=2, minutes=0.02)
    assert out.spatial_shape == (80, 72) and np.isfinite(out.data).all()
    assert out.meta.spacing == pytest.approx((5.0, 5.0))
    assert out.meta.provenance["operation"] == "selfsr"


def test_upscale_adapt_fine_tunes_a_copy_and_leaves_the_model_folder_alone(tmp_path):
    model = save_model_dir(tmp_path, spatial_dims=3)
    scan = write_nifti(tmp_path / "scan.nii.gz", (24, 24, 24), data=_tissues((24, 24, 24)))
    before = folder_digest(model)
    plain, adapted = tmp_path / "plain.nii.gz", tmp_path / "adapted.nii.gz"
    assert _cli("upscale", str(model), str(scan), str(plain)).exit_code == 0
    result = _cli("upscale", str(model), str(scan), str(adapted), "--adapt", "0.01")
    assert result.exit_code == 0, result.output
    assert folder_digest(model) == before
    a, b = read(plain), read(adapted)
    assert a.spatial_shape == b.spatial_shape and np.allclose(a.meta.affine, b.meta.affine)
    assert not np.allclose(a.data, b.data)  # the weights moved
    result = _cli("upscale", str(model), str(scan), str(scan), str(tmp_path / "out"), "--adapt", "1")
    assert result.exit_code == 2 and "one INPUT" in result.output


def test_selfsr_refusals_are_one_line_and_leave_nothing_behind(tmp_path):
    iso = write_nifti(tmp_path / "iso.nii.gz", (32, 32, 32), oblique_affine((1.0, 1.0, 1.0)))
    raster = write_geotiff(tmp_path / "r.tif", bands=1)
    small = _thick_nifti(tmp_path / "small.nii.gz", shape=(12, 12, 16), s=4)
    cases = [
        ([str(iso), str(tmp_path / "a.nii.gz")], "give --scale"),
        ([str(raster), str(tmp_path / "a.tif")], "give --scale"),
        ([str(small), str(tmp_path / "a.nii.gz")], "too small"),
        ([str(iso), str(small), "--scale", "2"], "exists"),
    ]
    files = sorted(tmp_path.iterdir())
    for args, words in cases:
        result = _cli("selfsr", *args, "--minutes", "0.01")
        assert result.exit_code == 2, result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == files


def test_fit_trains_for_the_steps_asked_and_lowers_the_loss():
    from aesr_sci.data.dataset import PairDataset

    image = Image(_tissues((48, 48))[None], SpatialMeta(np.eye(3)))
    pairs = PairDataset(
        [image], spatial_dims=2, patch_size=16, degradation=Degradation("area", (2, 2)), min_valid=0.0
    )
    torch.manual_seed(0)
    net = build_model("residual", spatial_dims=2, in_channels=1, scale=2, features=8, blocks=1)
    short = fit(net, pairs, minutes=None, steps=2, batch_size=4, precision="float32", device="cpu")
    assert short.steps == 2 and not short.network.training and np.isfinite(short.loss)
    longer = fit(net, pairs, minutes=None, steps=60, batch_size=4, precision="float32", device="cpu")
    assert longer.steps == 60 and longer.loss < short.loss


# ------------------------------------------------------------------------------ selfsr --guide
def _fields(shape, k: int, seed: int = 0) -> np.ndarray:
    """``k`` rough random fields of unit variance: detail that cubic interpolation cannot restore."""
    rng = np.random.default_rng(seed)
    f2 = sum(x**2 for x in np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij"))
    out = [np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * np.exp(-f2 * 5.0)).real for _ in range(k)]
    return np.stack([x / x.std() for x in out])


def _guided_scene(tmp_path: Path, n: int = 64):
    """A 3-band truth at 10 m, the input made from it by Wald's degradation to 20 m (uint16, nodata
    0 on a 2-pixel border, band names), and a 2-band 10 m guide mixing the same detail."""
    from affine import Affine

    from aesr_sci.guide import wald_degrade

    latent = _fields((n, n), 2)
    truth = np.einsum("bk,khw->bhw", [[1.0, 0.5], [0.3, 1.0], [0.8, -0.6]], latent) * 400 + 3000
    guide = np.einsum("bk,khw->bhw", [[1.0, 0.2], [-0.4, 1.0]], latent) * 400 + 3000
    t10, t20 = (Affine(p, 0.0, 585000.0, 0.0, -p, 4415000.0) for p in (10.0, 20.0))
    meta = SpatialMeta(np.eye(3))
    lq = wald_degrade(Image(truth.astype(np.float32), meta), 2).data
    names = ["B5", "B6", "B7"]
    src = write_geotiff(
        tmp_path / "in_20m.tif",
        3,
        n // 2,
        n // 2,
        nodata=0,
        nodata_border=2,
        band_names=names,
        transform=t20,
        data=np.round(lq),
    )
    g = write_geotiff(tmp_path / "g_10m.tif", 2, n, n, nodata=None, transform=t10, data=guide)
    return src, g, truth


def test_selfsr_guide_lands_on_the_guide_grid_beats_cubic_and_saves_a_guided_model(tmp_path, monkeypatch):
    import rasterio

    from aesr_sci import selfsupervised
    from aesr_sci.baselines import upsample
    from aesr_sci.metrics import psnr

    # a small network, a brisk learning rate and a step cap: the same result however busy the machine
    monkeypatch.setitem(selfsupervised._GUIDED, "features", 8)
    monkeypatch.setitem(selfsupervised._GUIDED, "blocks", 1)
    src, guide, truth = _guided_scene(tmp_path, n=32)
    model = tmp_path / "model"
    out = aesr_sci.selfsr(
        str(src), guide=str(guide), minutes=30, max_steps=40, lr=2e-2, batch_size=4, save_model=model
    )
    assert out.meta.provenance["steps"] == 40
    inner = (slice(None), slice(4, -4), slice(4, -4))
    cubic = upsample(read(src).data.astype(np.float32), (2, 2), convention="fov", method="cubic")
    peak = float(np.ptp(truth))
    got = np.asarray(out.data, np.float32)
    gain = psnr(truth[inner], got[inner], data_range=peak) - psnr(truth[inner], cubic[inner], data_range=peak)
    assert gain > 3.0, gain
    # on disk: the guide's grid, the input's dtype, band names and nodata (nodata in the input stays nodata)
    written = tmp_path / "out_10m.tif"
    assert _cli("selfsr", str(src), str(written), "--guide", str(guide), "--minutes", "0.02").exit_code == 0
    with rasterio.open(written) as o, rasterio.open(guide) as g, rasterio.open(src) as s:
        assert (o.transform, o.crs, o.shape) == (g.transform, g.crs, g.shape)
        assert o.dtypes == s.dtypes and o.nodata == s.nodata == 0
        assert o.descriptions == s.descriptions == ("B5", "B6", "B7")
        assert (o.read()[:, :4] == 0).all() and (o.read()[:, 4:-4, 4:-4] > 0).all()
    # the saved model is a guided model that upscale --guide applies as selfsr did
    again = tmp_path / "again.tif"
    result = _cli("upscale", str(model), str(src), str(again), "--guide", str(guide))
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read(again).data[inner], np.round(got[inner]), atol=1.0)


def test_selfsr_guide_with_consistency_gives_back_its_input_when_degraded(tmp_path, monkeypatch):
    """``selfsr --guide --tta --consistency``: the output, degraded as the pairs were made, is the
    input to the output's rounding (without --consistency it is not), and the provenance says so."""
    from aesr_sci import selfsupervised
    from aesr_sci.guide import wald_degrade

    monkeypatch.setitem(selfsupervised._GUIDED, "features", 8)
    monkeypatch.setitem(selfsupervised._GUIDED, "blocks", 1)
    src, guide, _ = _guided_scene(tmp_path, n=32)
    inner = (slice(None), slice(3, -3), slice(3, -3))  # away from the nodata border
    lq = read(src).data.astype(np.float32)[inner]
    errors = {}
    for consistency in (False, True):
        out = aesr_sci.selfsr(
            str(src),
            guide=str(guide),
            minutes=30,
            max_steps=3,
            batch_size=4,
            tta=True,
            consistency=consistency,
        )
        assert out.meta.provenance["tta"] is True and out.meta.provenance["consistency"] is consistency
        again = wald_degrade(Image(np.asarray(out.data, np.float32), out.meta), 2).data[inner]
        errors[consistency] = float(np.abs(again - lq).max())
    assert errors[True] <= 1.0 < errors[False], errors


def test_upscale_adapt_fine_tunes_a_guided_model_on_the_scene_and_its_guide(tmp_path, monkeypatch):
    """``upscale --adapt --guide``: Wald's pairs of the input and its guide fine-tune a copy; the
    output lies on the guide's grid, the model folder is untouched, a guide at another scale refused."""
    import rasterio

    from aesr_sci import selfsupervised

    monkeypatch.setitem(selfsupervised._GUIDED, "features", 8)
    monkeypatch.setitem(selfsupervised._GUIDED, "blocks", 1)
    src, guide, _ = _guided_scene(tmp_path, n=32)
    model = tmp_path / "model"
    aesr_sci.selfsr(str(src), guide=str(guide), minutes=30, max_steps=2, batch_size=4, save_model=model)
    before = folder_digest(model)
    plain, adapted = tmp_path / "plain.tif", tmp_path / "adapted.tif"
    assert _cli("upscale", str(model), str(src), str(plain), "--guide", str(guide)).exit_code == 0
    result = _cli("upscale", str(model), str(src), str(adapted), "--guide", str(guide), "--adapt", "0.01")
    assert result.exit_code == 0, result.output
    assert folder_digest(model) == before
    with rasterio.open(adapted) as o, rasterio.open(guide) as g:
        assert (o.transform, o.crs, o.shape) == (g.transform, g.crs, g.shape)
    assert not np.array_equal(read(plain).data, read(adapted).data)  # the weights moved
    tuned = aesr_sci.adapt(str(model), str(src), guide=str(guide), minutes=0.01)
    assert tuned.config["adapted"]["steps"] >= 1 and tuned.guide_channels == 2
    coarse = write_geotiff(
        tmp_path / "in_40m.tif",
        3,
        8,
        8,
        nodata=None,
        transform=rasterio.Affine(40.0, 0, 585000.0, 0, -40.0, 4415000.0),
    )
    with pytest.raises(MismatchError, match="model's scale is 2x2"):
        aesr_sci.adapt(str(model), str(coarse), guide=str(guide), minutes=0.01)


def test_selfsr_guide_api_takes_images_and_volumes_on_a_finer_grid():
    """A T1 at 1 mm guiding a T2 at 1 x 1 x 2 mm (a NIfTI guide on the co-registered grid): the output
    lies on the T1's grid; a scale the guide contradicts is refused."""
    t1 = _tissues((24, 24, 24))
    t2 = Image(
        Degradation("gaussian", (1, 1, 2)).apply(torch.from_numpy(t1)[None, None])[0].numpy(),
        SpatialMeta(oblique_affine((1.0, 1.0, 2.0)) @ np.diag([1.0, 1.0, 1.0, 1.0])),
    )
    guide = Image(t1[None], t2.meta.zoom((1, 1, 2), convention="fov"))
    out = aesr_sci.selfsr(t2, guide=guide, minutes=0.02)
    assert out.spatial_shape == (24, 24, 24) and np.isfinite(out.data).all()
    np.testing.assert_allclose(out.meta.affine, guide.meta.affine)
    with pytest.raises(MismatchError, match="not 3"):
        aesr_sci.selfsr(t2, guide=guide, scale=3, minutes=0.02)


def test_guided_defaults_are_the_sentinel2_guided_x2_recipe():
    from aesr_sci import selfsupervised
    from aesr_sci.guide import dsen2_sigma
    from aesr_sci.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "sentinel2_guided_x2.yaml")
    g = selfsupervised._GUIDED
    assert (recipe.model.name, recipe.model.features, recipe.model.blocks) == (
        g["name"],
        g["features"],
        g["blocks"],
    )
    assert (recipe.data.patch_size, recipe.train.batch_size, recipe.train.lr) == (
        g["patch"],
        g["batch_size"],
        g["lr"],
    )
    assert recipe.data.degradation.method == "gaussian"
    assert recipe.data.degradation.sigma == dsen2_sigma(recipe.data.scale)
