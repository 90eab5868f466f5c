"""Metrics, baselines and evaluation: baselines on the model's grid, masked metrics with shape checks, reports."""

from __future__ import annotations

import numpy as np
import pytest

from aesr_sci.baselines import upsample
from aesr_sci.metrics import psnr, ssim


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic", "lanczos"])
@pytest.mark.parametrize("convention", ["fov", "origin"])
def test_linear_ramp_lands_on_the_right_positions(method: str, convention: str) -> None:
    # a linear ramp is reproduced exactly by linear, cubic and lanczos away from the borders, so
    # interior values reveal the sample positions: (j + .5)/s - .5 (fov) or j/s (origin)
    n, s = 40, 2
    lq = np.arange(n, dtype=float)[None]
    up = upsample(lq, s, convention=convention, method=method)[0]
    j = np.arange(n * s)
    expected = (j + 0.5) / s - 0.5 if convention == "fov" else j / s
    inner = slice(20, n * s - 20)
    if method == "nearest":
        assert np.all(np.abs(up[inner] - expected[inner]) <= 0.5 + 1e-9)
    else:
        # linear is exact; the cubic B-spline and Lanczos-3 reproduce a ramp to within 2.5 % of a voxel
        # (Lanczos is not exactly linear-preserving at quarter offsets); half a voxel off would be 0.25+
        tol = {"linear": 1e-9, "cubic": 5e-3, "lanczos": 0.025}[method]
        np.testing.assert_allclose(up[inner], expected[inner], atol=tol)


def test_per_axis_scale_3d() -> None:
    lq = np.random.default_rng(0).random((2, 5, 6, 3))
    up = upsample(lq, (1, 1, 4), convention="fov", method="linear")
    assert up.shape == (2, 5, 6, 12)
    np.testing.assert_allclose(up[..., ::4].mean(), lq.mean(), rtol=0.05)


@pytest.mark.parametrize("n", [16, 15])
def test_fourier_recovers_band_limited_signal(n: int) -> None:
    t = np.arange(2 * n)
    hr = np.cos(2 * np.pi * 3 * t / (2 * n)) + 0.3 * np.sin(2 * np.pi * 2 * t / (2 * n))
    lq = hr[::2][None]  # origin convention: low-res sample k sits at high-res index 2k
    np.testing.assert_allclose(upsample(lq, 2, convention="origin", method="fourier")[0], hr, atol=1e-10)


def test_psnr_is_masked() -> None:
    ref = np.zeros((8, 8))
    ref[0, 0] = 1.0
    test = ref.copy()
    test[4:, 4:] = 5.0  # outside the mask: must not count
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    assert psnr(ref, test, mask=mask) == float("inf")
    assert psnr(ref, test) < 10
    test[1, 1] = 0.1
    assert psnr(ref, test, mask=mask) == pytest.approx(10 * np.log10(1 / (0.01 / 16)))


def test_ssim_masked_and_bounded() -> None:
    rng = np.random.default_rng(1)
    ref = rng.random((16, 16, 16))
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = ref + 0.3 * rng.standard_normal(ref.shape)
    assert 0 < ssim(ref, noisy) < 0.9


def test_unknown_baseline(tmp_path) -> None:
    from aesr_sci.errors import ParameterError
    from aesr_sci.evaluation import evaluate

    with pytest.raises(ParameterError, match="unknown baseline"):
        upsample(np.zeros((1, 4)), 2, method="spline7")
    with pytest.raises(ParameterError, match="unknown grid convention 'corner'"):
        upsample(np.zeros((1, 4)), 2, convention="corner", method="linear")
    with pytest.raises(ParameterError, match=r"unknown baseline\(s\) spline7: choose from nearest"):
        evaluate(tmp_path / "no_model", [tmp_path / "a.nii.gz"], baselines=["cubic", "spline7"])


def test_evaluate_reports_table_json_and_figure(tmp_path) -> None:
    """evaluate end to end with a saved (untrained) model on a synthetic volume."""
    import json

    import nibabel as nib
    from conftest import save_model_dir

    import aesr_sci
    from aesr_sci.evaluation import evaluate, format_table

    assert aesr_sci.evaluate is evaluate  # the public API
    save_model_dir(tmp_path, spatial_dims=3, method="kspace", convention="origin", patch=8)
    g = np.meshgrid(*[np.linspace(-1, 1, 20)] * 3, indexing="ij")
    vol = (np.exp(-(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) * 4) * 100).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "hr.nii.gz")
    report = evaluate(
        tmp_path / "model", [tmp_path / "hr.nii.gz"], json_path=tmp_path / "r.json", figures=tmp_path / "fig"
    )
    table = format_table(report)
    assert "fourier" in table and "mean" in table
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["mean"]["baselines"]) == {"nearest", "linear", "cubic", "lanczos", "fourier"}
    for scores in [saved["mean"]["model"], *saved["mean"]["baselines"].values()]:
        assert {"psnr", "ssim", "hf_energy_ratio"} <= set(scores)
    # on a smooth blob zero-filled Fourier interpolation is nearly exact and beats cubic
    base = saved["mean"]["baselines"]
    assert base["fourier"]["psnr"] > base["cubic"]["psnr"] > base["nearest"]["psnr"]
    assert saved["mean"]["best_baseline"] == "fourier"
    assert np.isfinite(saved["mean"]["model"]["psnr"])
    assert (tmp_path / "fig" / "hr.png").stat().st_size > 1000


def test_foreground_ignores_a_constant_negative_background() -> None:
    """z-scored volumes (BRATS) have a negative constant background: it is not foreground."""
    from aesr_sci.evaluation import foreground
    from aesr_sci.spatial import Image, SpatialMeta

    data = np.full((1, 20, 20, 20), -5.4, np.float32)
    data[0, 5:15, 5:15, 5:15] = np.random.default_rng(0).normal(0, 1, (10, 10, 10))
    fg = foreground(Image(data, SpatialMeta(np.eye(4), format="nifti")))
    assert fg[5:15, 5:15, 5:15].mean() > 0.9
    assert not fg[:4].any() and not fg[16:].any()


def test_evaluate_cli_on_a_multiband_geotiff(tmp_path, make_geotiff) -> None:
    """The command on a GeoTIFF: table on stdout, per-band scores in JSON, one figure, valid pixels only."""
    import json

    from click.testing import CliRunner
    from conftest import save_model_dir

    from aesr_sci.cli import main

    model = save_model_dir(tmp_path, spatial_dims=2, channels=3, method="bicubic")
    src = make_geotiff(tmp_path / "scene.tif", bands=3, height=40, width=36, nodata=0, nodata_border=4)
    before = src.read_bytes()
    args = [
        "evaluate",
        str(model),
        str(src),
        "--json",
        str(tmp_path / "r.json"),
        "--figures",
        str(tmp_path / "f"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "scene.tif" in result.output and "mean" in result.output and "lanczos" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    (entry,) = report["files"]
    assert "fourier" not in entry["baselines"]  # only k-space models get the Fourier baseline
    assert len(entry["model"]["psnr_per_band"]) == 3
    assert entry["model"]["psnr"] == pytest.approx(np.mean(entry["model"]["psnr_per_band"]))
    assert entry["shape"] == [40, 36]
    assert (tmp_path / "f" / "scene.png").stat().st_size > 1000
    assert src.read_bytes() == before
    # run again: the JSON exists, so nothing is computed or written without --overwrite
    (tmp_path / "f" / "scene.png").unlink()
    result = CliRunner().invoke(main, args)
    assert (
        result.exit_code == 2
        and isinstance(result.exception, SystemExit)
        and "already exists" in result.output
    )
    assert not (tmp_path / "f" / "scene.png").exists()


def test_evaluate_refuses_bad_input_before_writing(tmp_path, make_nifti, make_geotiff) -> None:
    from click.testing import CliRunner
    from conftest import save_model_dir

    from aesr_sci.cli import main

    model = save_model_dir(tmp_path, spatial_dims=3, method="kspace", convention="origin", patch=8)
    good = make_nifti(tmp_path / "good.nii.gz", shape=(12, 12, 12))
    figs = tmp_path / "figs"
    # the second file is missing: one line, exit 2, and the first file's figure is not left behind
    result = CliRunner().invoke(
        main, ["evaluate", str(model), str(good), str(tmp_path / "gone.nii.gz"), "--figures", str(figs)]
    )
    assert result.exit_code == 2 and "gone.nii.gz" in result.output
    assert len(result.output.strip().splitlines()) == 1 and isinstance(result.exception, SystemExit)
    assert not figs.exists()
    # an existing figure is refused up front, and left as it was
    figs.mkdir()
    (figs / "good.png").write_bytes(b"mine")
    result = CliRunner().invoke(main, ["evaluate", str(model), str(good), "--figures", str(figs)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (figs / "good.png").read_bytes() == b"mine"
    # a 2D raster for a 3D model: a clear mismatch, not a traceback
    raster = make_geotiff(tmp_path / "x.tif", bands=1)
    result = CliRunner().invoke(
        main, ["evaluate", str(model), str(raster), "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 2 and "3D" in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "r.json").exists()


def test_figures_being_replaced_come_back_when_a_later_file_fails(tmp_path) -> None:
    from aesr_sci.evaluation import _figures_all_or_none

    figs = tmp_path / "figs"
    figs.mkdir()
    old, new = figs / "a.png", figs / "b.png"
    old.write_bytes(b"mine")
    with pytest.raises(KeyboardInterrupt), _figures_all_or_none(figs, [old, new]):
        old.write_bytes(b"replaced")
        new.write_bytes(b"new")
        raise KeyboardInterrupt  # any failure, even an interrupt, puts the old figures back
    assert old.read_bytes() == b"mine" and not new.exists()
    assert sorted(p.name for p in figs.iterdir()) == ["a.png"]
    with _figures_all_or_none(figs, [old, new]):
        old.write_bytes(b"replaced")
        new.write_bytes(b"new")
    assert old.read_bytes() == b"replaced" and sorted(p.name for p in figs.iterdir()) == ["a.png", "b.png"]
    made = tmp_path / "made"
    with pytest.raises(ValueError), _figures_all_or_none(made, [made / "c.png"]):
        (made / "c.png").write_bytes(b"new")
        raise ValueError
    assert not made.exists()


def test_figure_names_are_unique_per_file() -> None:
    from aesr_sci.evaluation import figure_names

    assert figure_names(["a/pat0006/T1c.nii.gz", "a/pat0007/T1c.nii.gz", "b/MR.nii.gz"]) == [
        "pat0006_T1c.png",
        "pat0007_T1c.png",
        "MR.png",
    ]
    assert figure_names(["x/s/T1.nii", "y/s/T1.nii.gz"]) == ["000_s_T1.png", "001_s_T1.png"]


@pytest.mark.parametrize("metric", ["psnr", "ssim", "score"])
def test_metrics_refuse_arrays_of_different_shapes(metric: str) -> None:
    from aesr_sci import metrics
    from aesr_sci.errors import ShapeError

    fn = getattr(metrics, metric)
    with pytest.raises(ShapeError, match=r"reference \(2, 8, 8\), test \(2, 8, 9\)") as err:
        fn(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    assert isinstance(err.value, ValueError)
    ref = np.zeros((8, 8)) if metric != "score" else np.zeros((1, 8, 8))
    with pytest.raises(ShapeError, match=r"mask has shape \(8, 9\) but the image has shape \(8, 8\)"):
        fn(ref, ref, mask=np.ones((8, 9), bool))


def test_sharpness_refuses_a_mask_of_another_shape() -> None:
    from aesr_sci.errors import ShapeError
    from aesr_sci.metrics import sharpness

    with pytest.raises(ShapeError, match=r"\(4, 4\).*\(4, 5\)"):
        sharpness(np.zeros((4, 5)), mask=np.ones((4, 4), bool))


def test_evaluate_scores_as_validation_does(tmp_path) -> None:
    """evaluate's model score equals the validation path: held_out_case, the network on case.inputs, case.score."""
    import nibabel as nib
    import torch
    from conftest import save_model_dir

    from aesr_sci.checkpoint import load_model
    from aesr_sci.data.normalize import Normalizer
    from aesr_sci.evaluation import evaluate, held_out_case
    from aesr_sci.infer import predict
    from aesr_sci.io import read

    model = load_model(
        save_model_dir(tmp_path, spatial_dims=3, method="kspace", convention="origin", patch=8)
    )
    g = np.meshgrid(*[np.linspace(-1, 1, 20)] * 3, indexing="ij")
    vol = (np.exp(-(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) * 4) * 100 + 3 * g[0]).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 1.1, 2.0, 1.0])), tmp_path / "hr.nii.gz")
    report = evaluate(model, [tmp_path / "hr.nii.gz"], baselines=["cubic", "fourier"])
    (entry,) = report["files"]
    case = held_out_case(
        read(tmp_path / "hr.nii.gz"),
        model.degradation,
        Normalizer.from_dict(model.normalization),
        statistics=model.statistics,
    )
    lq = torch.from_numpy(case.inputs)[None]
    with torch.no_grad():
        pred = predict(model.network, lq, precision="auto")[0].numpy()
    assert entry["model"]["psnr"] == pytest.approx(case.score(pred)["psnr"], abs=1e-3)
    assert entry["baselines"]["fourier"]["psnr"] == pytest.approx(
        case.score(case.baseline("fourier"))["psnr"]
    )
    assert entry["shape"] == list(case.reference.shape[1:]) == [20, 20, 20]


def test_figures_keep_the_callers_backend_and_cut_across_the_thick_axis(tmp_path) -> None:
    import matplotlib

    from aesr_sci.data.degrade import Degradation
    from aesr_sci.data.normalize import Normalizer
    from aesr_sci.evaluation import draw_figure, held_out_case
    from aesr_sci.spatial import Image, SpatialMeta

    data = np.random.default_rng(0).random((1, 16, 12, 24)).astype(np.float32)
    hr = Image(data, SpatialMeta(np.diag([1.0, 1.0, 1.0, 1.0]), format="nifti"))
    case = held_out_case(hr, Degradation("slice", (1, 1, 4)), Normalizer("percentile"))
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        target = draw_figure(tmp_path / "f.png", case, case.reference, case.reference, ("cubic", "model"))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from aesr_sci.evaluation import choose_view

    view = choose_view(case.meta, case.mask, case.factors)
    assert view.cut_axis != 2 and 2 in (view.horizontal, view.vertical)  # the plane holds the thick axis
    assert view.picture(case.reference).shape == (24, 16)  # the thick axis runs up the picture
    assert view.edges == {"right": "R", "left": "L", "top": "S", "bottom": "I"}
    iso = choose_view(case.meta, case.mask, (2, 2, 2))
    assert iso.cut_axis == 2 and iso.edges == {"right": "R", "left": "L", "top": "A", "bottom": "P"}


def test_raster_views_face_the_compass_and_name_band_and_units() -> None:
    from aesr_sci.evaluation import band_label, choose_view
    from aesr_sci.spatial import SpatialMeta

    north_up = np.array([[0.0, 20.0, 585010.0], [-20.0, 0.0, 4414990.0], [0, 0, 1]])
    meta = SpatialMeta(north_up, crs="EPSG:32618", format="geotiff", band_names=("B04", ""))
    view = choose_view(meta, np.ones((8, 8), bool), (2, 2))
    assert view.cut_axis is None and view.edges == {"right": "E", "left": "W", "top": "N", "bottom": "S"}
    assert choose_view(meta.replace(crs=None), np.ones((8, 8), bool), (2, 2)).edges == {
        "right": "col +",
        "bottom": "row +",
    }
    assert band_label(meta) == ("B04", "DN")
    assert band_label(meta, 1) == ("band 2", "DN")
    scaled = meta.replace(extra={"scales": [1e-4, 1e-4], "offsets": [0.0, 0.0], "units": ["reflectance", ""]})
    assert band_label(scaled) == ("B04", "DN (reflectance = DN x 0.0001 + 0)")
    assert band_label(meta.replace(extra={"units": ["W m-2", ""]})) == ("B04", "W m-2")
    assert band_label(SpatialMeta(np.eye(4), format="nifti")) == ("", "intensity")
