"""Guided training data by Wald's protocol: guide windows, joined guide files, statistics, the feed, held-out cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import pair_source

from aesr_sci.data.dataset import PairDataset
from aesr_sci.data.degrade import Degradation
from aesr_sci.data.normalize import Normalizer
from aesr_sci.data.source import inspect_sources
from aesr_sci.errors import MismatchError
from aesr_sci.spatial import Image, SpatialMeta

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

X0, Y0 = 585000.0, 4415000.0


def _grid(pixel: float, dx: float = 0.0) -> Affine:
    return Affine(pixel, 0.0, X0 + dx, 0.0, -pixel, Y0)


def _replicated_guide(target: np.ndarray, factors) -> np.ndarray:
    """A 1-band guide that is exactly ``2 * band 0 - band 1`` of the target, replicated by ``factors``."""
    guide = 2 * target[:1] - target[1:2]
    for axis, f in enumerate(factors, start=1):
        guide = np.repeat(guide, f, axis=axis)
    return guide


def _scene(tmp_path: Path, make_geotiff, name="a", *, nodata=None, seed=0, size=(64, 60)):
    """A 2-band 20 m target and its 1-band 10 m guide equal to the replicated target's combination."""
    rng = np.random.default_rng(seed)
    target = rng.random((2, *size)).astype(np.float32) * 100 + 10
    guide = _replicated_guide(target, (2, 2)).astype(np.float32)
    kw = {"dtype": "float32", "nodata": nodata, "nodata_border": 4}
    t = make_geotiff(tmp_path / f"{name}_20m.tif", bands=2, height=size[0], width=size[1], data=target, **kw)
    g = make_geotiff(
        tmp_path / f"{name}_10m.tif",
        bands=1,
        height=2 * size[0],
        width=2 * size[1],
        data=guide,
        transform=_grid(10.0),
        **kw,
    )
    return t, g


@pytest.mark.parametrize("cache", [10**9, 1000])
def test_the_guide_window_is_the_target_window_times_the_scale_and_moves_with_it(
    tmp_path, make_geotiff, cache
):
    t, g = _scene(tmp_path, make_geotiff)
    ds = PairDataset(
        [t],
        guides=[g],
        spatial_dims=2,
        patch_size=16,
        degradation=Degradation("area", (2, 2)),  # block means: the degraded guide is the combination
        normalizer="none",
        samples_per_epoch=12,
        min_valid=0.0,
        max_cached_bytes=cache,
    )
    assert ds.pairs.windowed(ds.sources[0]) == (cache == 1000) and ds.guide_channels == 1
    for i in range(len(ds)):
        item = ds[i]  # random flips and axis swaps
        gt, guide, lq = item["gt"].numpy(), item["guide"].numpy(), item["lq"].numpy()
        assert guide.shape == (1, 16, 16) and lq.shape == (2, 8, 8)
        np.testing.assert_allclose(guide[0], 2 * gt[0] - gt[1], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(lq, gt.reshape(2, 8, 2, 8, 2).mean(axis=(2, 4)), rtol=1e-5, atol=1e-3)
    start = ds[0]["location"].tolist()[1:]
    assert all(a % 2 == 0 for a in start)


def test_a_volume_guided_on_its_thick_axis_pairs_the_same_way():
    rng = np.random.default_rng(1)
    target = rng.random((2, 12, 10, 8)).astype(np.float32)
    meta = SpatialMeta(np.diag([0.9, 0.9, 4.0, 1.0]))
    guide = Image(_replicated_guide(target, (1, 1, 4)), meta.zoom((1, 1, 4), convention="fov"))
    ds = PairDataset(
        [Image(target, meta)],
        guides=[guide],
        spatial_dims=3,
        patch_size=(8, 8, 4),
        degradation=Degradation("area", (1, 1, 4)),
        normalizer="none",
        samples_per_epoch=6,
        min_valid=0.0,
    )
    for i in range(len(ds)):
        item = ds[i]
        gt, guide_patch = item["gt"].numpy(), item["guide"].numpy()
        assert guide_patch.shape == (1, 8, 8, 4) and item["lq"].shape == (2, 8, 8, 1)
        np.testing.assert_allclose(guide_patch[0], 2 * gt[0] - gt[1], rtol=1e-5, atol=1e-5)


def _two_guides(tmp_path: Path, make_geotiff):
    """A 40 m target guided by a 10 m file and a 20 m file (scale 4), with nodata borders."""
    t = make_geotiff(tmp_path / "t_40m.tif", bands=2, height=40, width=36, transform=_grid(40.0), seed=1)
    g10 = make_geotiff(
        tmp_path / "t_10m.tif", bands=2, height=160, width=144, transform=_grid(10.0), nodata_border=6, seed=2
    )
    g20 = make_geotiff(tmp_path / "t_20m.tif", bands=3, height=80, width=72, transform=_grid(20.0), seed=3)
    return t, [g10, g20]


def _source(paths, guides, *, deg, cache, patch=16):
    return pair_source(paths, guides=guides, deg=deg, patch=patch, max_cached_bytes=cache)


@pytest.mark.parametrize("params", [{}, {"sigma_jitter": 0.3}])
def test_windowed_guided_pairs_equal_the_cached_ones(tmp_path, make_geotiff, params):
    t, guides = _two_guides(tmp_path, make_geotiff)
    deg = Degradation("gaussian", (4, 4), {"sigma": 0.25, **params})
    windowed = _source([t], [guides], deg=deg, cache=1000)
    cached = _source([t], [guides], deg=deg, cache=10**9)
    src_w, src_c = windowed.sources[0], cached.sources[0]
    assert windowed.windowed(src_w) and not cached.windowed(src_c) and src_w.guide_channels == 5
    assert windowed.guide_stats[0]["low"] == pytest.approx(cached.guide_stats[0]["low"], rel=0.05)
    rng = np.random.default_rng(0)
    for start in [(0, 0), (24, 20), (12, 8), (8, 16)]:
        d = deg.randomized(rng) if params else deg
        a, b = windowed.pair(src_w, start, d), cached.pair(src_c, start, d)
        assert a.keys() == b.keys() >= {"guide", "guide_valid"}
        for role in a:
            x, y = a[role], b[role]
            if x is None or y is None:
                assert (x is None or x.all()) and (y is None or y.all()), role
                continue
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-3, equal_nan=True)
        assert a["guide"].shape == (5, 16, 16)
    assert not cached.pair(src_c, (0, 0), deg)["guide_valid"].all()  # the 10 m nodata border


def test_guide_files_join_by_windows_as_whole_images(tmp_path, make_geotiff):
    from aesr_sci import io as aio
    from aesr_sci.guide import join_guides

    t, guides = _two_guides(tmp_path, make_geotiff)
    source = _source([t], [guides], deg=Degradation("gaussian", (4, 4)), cache=1000)
    src = source.sources[0]
    whole = join_guides([aio.read(g) for g in guides])
    assert whole.meta.band_names == ("B1", "B2", "B1", "B2", "B3")
    for window in [((0, 40), (0, 36)), ((33, 91), (17, 64)), ((120, 160), (100, 144))]:
        data, valid = source.read_guide(src, window)
        region = tuple(slice(a, b) for a, b in window)
        np.testing.assert_allclose(data, whole.data[(slice(None), *region)], rtol=1e-6, atol=1e-3)
        valid = np.ones(data.shape[1:], bool) if valid is None else valid  # None: all valid
        np.testing.assert_array_equal(valid, whole.mask[region])
    # the 20 m bands are interpolated linearly: a pixel of the 10 m grid lies between two 20 m pixels
    g20 = aio.read(guides[1]).data.astype(np.float64)
    np.testing.assert_allclose(
        whole.data[2, 21, 30],
        0.75 * 0.75 * g20[0, 10, 15]
        + 0.75 * 0.25 * g20[0, 10, 14]
        + 0.25 * 0.75 * g20[0, 11, 15]
        + 0.25 * 0.25 * g20[0, 11, 14],
        rtol=1e-5,
    )


def test_the_guide_is_degraded_as_wald_degrade_does(tmp_path, make_geotiff):
    from aesr_sci import io as aio
    from aesr_sci.guide import dsen2_sigma, wald_degrade

    t, g = _scene(tmp_path, make_geotiff)
    deg = Degradation("gaussian", (2, 2), {"sigma": dsen2_sigma(2)})
    source = _source([t], [g], deg=deg, cache=10**9)
    expected = wald_degrade(aio.read(g), 2).data  # DSen2: sigma 1/s, then block means
    for start in [(0, 0), (20, 30), (48, 44)]:
        got = source.pair(source.sources[0], start, deg)["guide"]
        region = tuple(slice(a, a + 16) for a in start)
        np.testing.assert_allclose(got, expected[(slice(None), *region)], rtol=1e-5, atol=1e-3)


def test_guides_have_their_own_statistics_fitted_on_the_degraded_guide(tmp_path, make_geotiff):
    t, g = _scene(tmp_path, make_geotiff)
    norm = Normalizer("percentile", p_low=0.0, p_high=100.0)
    deg = Degradation("area", (2, 2))
    source = pair_source([t], guides=[[g]], deg=deg, patch=16, normalizer=norm)
    loaded = source._load(source.sources[0])
    target = loaded.gt
    combo = 2 * target[0] - target[1]  # the degraded guide, exactly
    assert source.guide_stats[0]["low"] == pytest.approx([combo.min()], rel=1e-5)
    assert source.guide_stats[0]["high"] == pytest.approx([combo.max()], rel=1e-5)
    assert len(source.stats[0]["low"]) == 2


# ------------------------------------------------------------------------------ refusals
def test_a_guide_off_the_grid_is_refused_naming_both_files(tmp_path, make_geotiff):
    t = make_geotiff(tmp_path / "t.tif", bands=2, height=32, width=32)
    shifted = make_geotiff(tmp_path / "g.tif", bands=1, height=64, width=64, transform=_grid(10.0, dx=3.0))
    with pytest.raises(MismatchError) as err:
        inspect_sources([t], spatial_dims=2, patch_size=16, scale=(2, 2), slice_axis=2, guides=[shifted])
    message = str(err.value)
    assert "\n" not in message and str(t) in message and str(shifted) in message and "gdalwarp" in message


def test_guides_with_different_band_counts_are_refused(tmp_path, make_geotiff):
    from aesr_sci.errors import DataError

    ta, ga = _scene(tmp_path, make_geotiff, "a")
    tb = make_geotiff(tmp_path / "b_20m.tif", bands=2, height=64, width=60)
    gb = make_geotiff(tmp_path / "b_10m.tif", bands=3, height=128, width=120, transform=_grid(10.0))
    with pytest.raises(
        DataError, match=r"guides have different band counts \(.*a_10m.tif: 1, .*b_10m.tif: 3\)"
    ):
        inspect_sources([ta, tb], spatial_dims=2, patch_size=16, scale=(2, 2), slice_axis=2, guides=[ga, gb])


# ------------------------------------------------------------------------------ the feed
def _recipe(tmp_path: Path, **data):
    from aesr_sci.recipe import load_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sentinel2_guided_x2.yaml"
    sets = [f"data.{k}={v}" for k, v in data.items()] + [
        "data.patch_size=16",
        "data.val_paths=[]",
        "data.val_guides=[]",
        "data.val_fraction=0.4",
    ]
    return load_recipe(recipe, overrides=sets)


def test_guides_follow_their_targets_through_the_split(tmp_path, make_geotiff):
    from aesr_sci.data.feed import build_dataset, check_data_files, resolve_files, resolve_guides

    for i, name in enumerate("abcde"):
        _scene(tmp_path, make_geotiff, name, seed=i)
    recipe = _recipe(tmp_path, paths=f"[{tmp_path}/*_20m.tif]", guides=f"[{tmp_path}/*_10m.tif]")
    train_files, val_files = resolve_files(recipe)
    assert len(train_files) == 3 and len(val_files) == 2
    for files in (train_files, val_files):
        for target, guides in zip(files, resolve_guides(recipe, files)):
            assert guides == (target.replace("_20m", "_10m"),)
    summary = check_data_files(recipe, train_files, val_files)
    assert summary["guide_channels"] == 1 and summary["guide_band_names"] == ["B1"]
    assert summary["guide_statistics"] == summary["statistics"] == {"policy": "valid", "threshold": 0.05}
    assert sorted(summary["guide_files"]) == sorted(str(p) for p in tmp_path.glob("*_10m.tif"))
    item = build_dataset(recipe, train_files, mode="random", seed=0)[0]
    assert item["guide"].shape == (1, 16, 16) and item["gt"].shape == (2, 16, 16)


def test_a_guide_glob_matching_another_count_is_one_recipe_line(tmp_path, make_geotiff):
    from aesr_sci.data.feed import resolve_files
    from aesr_sci.errors import RecipeError

    for name in "ab":
        _scene(tmp_path, make_geotiff, name)
    (tmp_path / "b_10m.tif").unlink()
    recipe = _recipe(tmp_path, paths=f"[{tmp_path}/*_20m.tif]", guides=f"[{tmp_path}/*_10m.tif]")
    with pytest.raises(RecipeError) as err:
        resolve_files(recipe)
    message = str(err.value)
    assert "\n" not in message
    assert "data.guides: entry 1" in message and "matches 1 file(s) but data.paths entry 1" in message
    assert "matches 2" in message


def test_train_check_refuses_a_shifted_guide_in_one_line(tmp_path, make_geotiff):
    from click.testing import CliRunner

    from aesr_sci.cli import main

    _scene(tmp_path, make_geotiff, "a")
    _scene(tmp_path, make_geotiff, "b")
    make_geotiff(tmp_path / "b_10m.tif", bands=1, height=128, width=120, transform=_grid(10.0, dx=5.0))
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sentinel2_guided_x2.yaml"
    sets = [
        f"data.paths=[{tmp_path}/a_20m.tif]",
        f"data.guides=[{tmp_path}/a_10m.tif]",
        f"data.val_paths=[{tmp_path}/b_20m.tif]",
        f"data.val_guides=[{tmp_path}/b_10m.tif]",
        "data.patch_size=16",
    ]
    args = ["train", str(recipe), "--check"] + [x for s in sets for x in ("--set", s)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "b_10m.tif" in lines[0] and "b_20m.tif" in lines[0] and "gdalwarp" in lines[0]


# ------------------------------------------------------------------------- held-out cases
def test_held_out_guided_case_is_walds_triple_with_pansharpening_baselines():
    from aesr_sci.evaluation import held_out_guided_case
    from aesr_sci.guide import wald_degrade

    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((2, 96, 96)), axis=1), axis=2)
    guide = Image(smooth.astype(np.float32), SpatialMeta(np.eye(3)))
    # a target whose bands are combinations of the guide's, seen at half the resolution
    combo = np.stack([guide.data[0] + 0.5 * guide.data[1], 2 * guide.data[1] - guide.data[0]])
    target = Image(combo.reshape(2, 48, 2, 48, 2).mean(axis=(2, 4)), SpatialMeta(np.diag([2.0, 2.0, 1.0])))
    deg = Degradation("gaussian", (2, 2), {"sigma": 0.5})
    norm = Normalizer("percentile", p_low=0.0, p_high=100.0)
    case = held_out_guided_case(target, guide, deg, norm, path="x", statistics={"policy": "valid"})
    assert case.inputs.shape == (2, 24, 24) and case.guide_inputs.shape == (2, 48, 48)
    assert case.reference.shape == (2, 48, 48)
    np.testing.assert_allclose(
        case.guide.data, wald_degrade(guide, 2, method="gaussian", sigma=0.5).data, atol=1e-4
    )
    np.testing.assert_allclose(case.physical(case.reference), target.data, rtol=1e-4, atol=1e-3)
    perfect = case.score(case.reference)
    assert perfect["rmse"] == pytest.approx(0.0, abs=1e-3) and perfect["sam"] == pytest.approx(0.0, abs=0.05)
    cubic, hpf = case.score(case.baseline("cubic")), case.score(case.baseline("hpf"))
    assert len(hpf["rmse_bands"]) == 2 and hpf["rmse"] < 0.5 * cubic["rmse"]
    assert hpf["psnr"] > cubic["psnr"] + 6 and case.score(case.baseline("brovey"))["sam"] >= 0


def test_held_out_guided_case_joins_several_guides_and_checks_shapes():
    from aesr_sci.errors import DataError
    from aesr_sci.evaluation import held_out_guided_case

    rng = np.random.default_rng(4)
    fine = Image(rng.random((1, 24, 24)).astype(np.float32), SpatialMeta(np.eye(3)))
    coarse = Image(rng.random((2, 12, 12)).astype(np.float32), SpatialMeta(np.diag([2.0, 2.0, 1.0])))
    target = Image(rng.random((3, 6, 6)).astype(np.float32), SpatialMeta(np.diag([4.0, 4.0, 1.0])))
    deg = Degradation("gaussian", (4, 4), {"sigma": 0.25})
    policy = {"statistics": {"policy": "valid"}}
    case = held_out_guided_case(target, [fine, coarse], deg, Normalizer(), **policy)
    # the target (6 pixels) is cropped to a multiple of the scale, the degraded guide with it
    assert case.guide_inputs.shape == (3, 4, 4) and len(case.guide_stats["low"]) == 3
    with pytest.raises(DataError, match="is not the target's"):
        held_out_guided_case(target, fine.replace(data=fine.data[:, :20]), deg, Normalizer(), **policy)
