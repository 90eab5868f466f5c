"""Guided super-resolution end to end: training, upscaling on the guide's grid, evaluation, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from affine import Affine
from click.testing import CliRunner

from aesr_sci.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

X0, Y0 = 585000.0, 4415000.0
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _grid(pixel: float, dx: float = 0.0) -> Affine:
    return Affine(pixel, 0.0, X0 + dx, 0.0, -pixel, Y0)


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], blobs: int = 8) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(blobs):
        c, r = rng.uniform(-0.8, 0.8, len(shape)), rng.uniform(0.05, 0.2)
        out += rng.uniform(200, 900) * np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * r * r))
    return out


def scene(folder: Path, make_geotiff, name: str = "a", *, seed: int = 0, size=(32, 28), guide_bands: int = 2):
    """A 2-band 20 m target and its 10 m guide: the target's bands are mixtures of the guide's at 10 m,
    block-averaged; the guide holds the detail the target lacks."""
    rng = np.random.default_rng(seed)
    fine = np.stack([_smooth(rng, (2 * size[0], 2 * size[1])) for _ in range(guide_bands)]) + 100
    mix = rng.uniform(0.3, 1.0, (2, guide_bands))
    target_fine = np.einsum("tg,g...->t...", mix, fine)
    target = target_fine.reshape(2, size[0], 2, size[1], 2).mean((2, 4))
    kw = {"dtype": "uint16", "nodata": 0, "nodata_border": 2}
    t = make_geotiff(folder / f"{name}_20m.tif", bands=2, height=size[0], width=size[1], data=target, **kw)
    g = make_geotiff(
        folder / f"{name}_10m.tif",
        bands=guide_bands,
        height=2 * size[0],
        width=2 * size[1],
        data=fine,
        transform=_grid(10.0),
        band_names=[f"G{i + 2}" for i in range(guide_bands)],
        **kw,
    )
    return t, g


def train_guided(tmp_path: Path, make_geotiff, *extra: str) -> tuple[Path, list[Path]]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    files = [scene(data, make_geotiff, n, seed=i) for i, n in enumerate("abc")]
    sets = [
        f"data.paths=[{data}/a_20m.tif,{data}/b_20m.tif]",
        f"data.guides=[{data}/a_10m.tif,{data}/b_10m.tif]",
        f"data.val_paths=[{data}/c_20m.tif]",
        f"data.val_guides=[{data}/c_10m.tif]",
        "data.patch_size=12",
        "data.samples_per_epoch=8",
        "data.min_valid=0.1",
        "model.features=4",
        "model.blocks=1",
        "train.batch_size=2",
        "train.max_steps=3",
        "train.val_every=2",
        *extra,
    ]
    run = tmp_path / "run"
    args = ["-q", "train", str(RECIPES / "sentinel2_guided_x2.yaml"), "--out", str(run)]
    result = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    return run, [p for pair in files for p in pair]


# ------------------------------------------------------------------------------- training
def test_a_guided_recipe_trains_and_records_its_guides(tmp_path, make_geotiff):
    run, _ = train_guided(tmp_path, make_geotiff)
    doc = json.loads((run / "model" / "model.json").read_text())
    assert doc["guide_channels"] == 2 and doc["guide_band_names"] == ["G2", "G3"]
    assert doc["guide_statistics"]["policy"] == doc["statistics"]["policy"]
    assert doc["guide_factors"] == [[1, 1]]
    assert doc["network"]["guide_channels"] == 2
    val = doc["training"]
    assert {"cubic_psnr", "hpf_psnr"} <= val.keys() and val["baseline"] in ("cubic", "hpf")
    assert val["gain_db"] == pytest.approx(val["val_psnr"] - max(val["cubic_psnr"], val["hpf_psnr"]))


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["model.name=residual"], "takes no guide"),
        (["data.guides=[]", "data.val_guides=[]"], "is guided but the recipe names no guides"),
    ],
)
def test_guides_and_model_must_agree_before_any_work(tmp_path, make_geotiff, sets, says):
    t, g = scene(tmp_path, make_geotiff)
    tv, gv = scene(tmp_path, make_geotiff, "v", seed=1)
    base = [f"data.paths=[{t}]", f"data.guides=[{g}]", f"data.val_paths=[{tv}]", f"data.val_guides=[{gv}]"]
    base += ["data.patch_size=12"]
    args = ["train", str(RECIPES / "sentinel2_guided_x2.yaml"), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args + [x for s in [*base, *sets] for x in ("--set", s)])
    assert result.exit_code == 2 and says in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_t1_guides_a_thick_slice_volume_through_training(tmp_path):
    """A 1 mm T1-like volume guides a 4 mm-slice T2-like volume of the same head on one grid."""
    rng = np.random.default_rng(3)
    paths, guides = [], []
    for i in range(2):
        t1 = _smooth(rng, (16, 16, 16), blobs=6)
        t2 = 1000 - 0.8 * t1
        thick = t2.reshape(16, 16, 4, 4).mean(-1)
        thick_affine = np.diag([1.0, 1.0, 4.0, 1.0])
        thick_affine[2, 3] = 1.5  # voxel centres: the thick slices span the fine ones exactly
        nib.save(nib.Nifti1Image(t1, np.eye(4)), tmp_path / f"t1_{i}.nii.gz")
        nib.save(nib.Nifti1Image(thick.astype(np.float32), thick_affine), tmp_path / f"t2_{i}.nii.gz")
        paths.append(str(tmp_path / f"t2_{i}.nii.gz"))
        guides.append(str(tmp_path / f"t1_{i}.nii.gz"))
    recipe = {
        "name": "t1_guides_t2",
        "data": {
            "paths": paths[:1],
            "guides": guides[:1],
            "val_paths": paths[1:],
            "val_guides": guides[1:],
            "spatial_dims": 3,
            "scale": [1, 1, 4],
            "patch_size": [8, 8, 4],
            "degradation": {"method": "area"},
            "min_valid": 0.1,
            "samples_per_epoch": 8,
        },
        "model": {"name": "guided_residual", "features": 4, "blocks": 1},
        "train": {"batch_size": 2, "max_steps": 3, "val_every": 2, "seed": 1},
    }
    path = tmp_path / "t1t2.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["-q", "train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert doc["guide_channels"] == 1 and doc["network"]["scale"] == [1, 1, 4]
    assert np.isfinite(doc["training"]["val_psnr"])


# ------------------------------------------------------------------------------ inference
@pytest.fixture(scope="module")
def guided_model(tmp_path_factory):
    """A guided x2 model trained for a few steps on synthetic scenes (with one more scene to upscale)."""
    from conftest import write_geotiff

    tmp = tmp_path_factory.mktemp("guided")
    run, files = train_guided(tmp, write_geotiff, "train.max_steps=2")
    return run / "model", files


def _transform(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.transform, ds.crs, ds.shape, ds.count, ds.dtypes[0], ds.nodata, ds.descriptions


def test_upscale_lands_exactly_on_the_guides_grid(tmp_path, guided_model):
    model, files = guided_model
    target, guide = files[4], files[5]  # the validation scene
    out = tmp_path / "out.tif"
    result = CliRunner().invoke(
        main, ["-q", "upscale", str(model), str(target), str(out), "--guide", str(guide)]
    )
    assert result.exit_code == 0, result.output
    t_out, t_guide, t_in = _transform(out), _transform(guide), _transform(target)
    assert t_out[0] == t_guide[0] and t_out[1] == t_guide[1] and t_out[2] == t_guide[2]
    assert t_out[3:] == t_in[3:]  # the input's band count, dtype, nodata and band names
    from aesr_sci import io as aio

    up, src = aio.read(out), aio.read(target)
    valid_in = np.repeat(np.repeat(src.common_mask, 2, 0), 2, 1) & aio.read(guide).common_mask
    assert np.array_equal(up.common_mask, valid_in)  # nodata in either input stays nodata


def test_guided_upscale_tiles_and_streams_as_it_runs_whole(tmp_path, guided_model):
    import aesr_sci
    from aesr_sci import io as aio
    from aesr_sci.infer import upscale_files

    model, files = guided_model
    target, guide = files[4], files[5]
    whole = aesr_sci.upscale(target, model, guide=guide, patch_size=0, precision="float32")
    tiled = aesr_sci.upscale(
        aio.read(target), model, guide=[aio.read(guide)], patch_size=5, precision="float32"
    )
    np.testing.assert_allclose(tiled.data, whole.data, atol=1e-2)
    streamed = tmp_path / "streamed.tif"
    upscale_files(model, [target], streamed, guide=[guide], stream=True, block=16, precision="float32")
    aio.write(whole, tmp_path / "whole.tif")
    a, b = aio.read(streamed), aio.read(tmp_path / "whole.tif")
    assert a.meta.affine.tolist() == b.meta.affine.tolist()
    np.testing.assert_array_equal(a.common_mask, b.common_mask)
    assert np.abs(a.data.astype(float) - b.data.astype(float))[:, a.common_mask].max() <= 1


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("no guide", "the model is guided: give it its guide"),
        ("bands", "the guide has 1 band(s) but the model was trained with 2 (G2, G3)"),
        ("shifted", "shifted off the target's grid"),
        ("crs", "EPSG"),
        ("pixel", "pixel"),
    ],
)
def test_guided_upscale_refuses_in_one_line(tmp_path, guided_model, make_geotiff, case, says):
    model, files = guided_model
    target, guide = files[4], str(files[5])
    kw = {"dtype": "uint16", "height": 64, "width": 56}
    if case == "bands":
        guide = str(make_geotiff(tmp_path / "g.tif", bands=1, transform=_grid(10.0), **kw))
    elif case == "shifted":
        guide = str(make_geotiff(tmp_path / "g.tif", bands=2, transform=_grid(10.0, dx=3.0), **kw))
    elif case == "crs":
        guide = str(make_geotiff(tmp_path / "g.tif", bands=2, transform=_grid(10.0), crs="EPSG:32633", **kw))
    elif case == "pixel":
        guide = str(make_geotiff(tmp_path / "g.tif", bands=2, transform=_grid(5.0), **kw))
    out = tmp_path / "out.tif"
    args = ["upscale", str(model), str(target), str(out)] + ([] if case == "no guide" else ["--guide", guide])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and says in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_guide_given_to_an_unguided_model_is_refused(tmp_path, make_geotiff):
    from conftest import save_model_dir

    model = save_model_dir(tmp_path / "m", channels=2)
    t, g = scene(tmp_path, make_geotiff)
    result = CliRunner().invoke(
        main, ["upscale", str(model), str(t), str(tmp_path / "o.tif"), "--guide", str(g)]
    )
    assert result.exit_code == 2 and "the model takes no guide" in result.output, result.output


def test_a_guided_model_expects_inputs_at_its_training_files_spacing(tmp_path):
    """Wald's protocol trains on 20 m files degraded to 40 m, and upscales 20 m files: no warning."""
    from conftest import save_guided_model_dir

    from aesr_sci.checkpoint import load_model
    from aesr_sci.infer import check_spacing

    model = load_model(save_guided_model_dir(tmp_path))
    model.config["training_spacing"] = [20.0, 20.0]
    assert check_spacing(model, (20.0, 20.0), "a_20m.tif") is None
    assert "expects about 20x20" in check_spacing(model, (60.0, 60.0), "a_60m.tif")


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_a_guided_model_by_walds_protocol(tmp_path, guided_model):
    model, files = guided_model
    targets, guides = [str(files[0]), str(files[4])], [str(files[1]), str(files[5])]
    out = tmp_path / "scores.json"
    args = ["-q", "evaluate", str(model), *targets, "--json", str(out), "--figures", str(tmp_path / "figs")]
    result = CliRunner().invoke(main, args + [x for g in guides for x in ("--guide", g)])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    methods = {r[1] for r in rows if r and r[0] == "mean"}
    assert methods == {"model", "cubic", "hpf", "brovey"}
    report = json.loads(out.read_text())
    for entry in [*report["files"], report["mean"]]:
        for sc in [entry["model"], *entry["baselines"].values()]:
            assert len(sc["psnr_per_band"]) == 2 and len(sc["rmse_bands"]) == 2
            assert sc["rmse"] > 0 and 0 <= sc["sam"] < 90
    # the guide carries the detail: pansharpening beats bicubic on these scenes
    assert len(list((tmp_path / "figs").glob("*.png"))) == 2
    base = report["mean"]["baselines"]
    assert base["hpf"]["psnr"] > base["cubic"]["psnr"]


def test_evaluate_refuses_guides_that_do_not_pair(tmp_path, guided_model):
    model, files = guided_model
    result = CliRunner().invoke(
        main, ["evaluate", str(model), str(files[0]), str(files[4]), "--guide", str(files[1])]
    )
    assert result.exit_code == 2 and "1 guide(s) for 2 file(s)" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(model), str(files[0])])
    assert result.exit_code == 2 and "the model is guided" in result.output


# ------------------------------------------------------------------------ Sentinel-2 product
S2 = {10: ["B2", "B3", "B4", "B8"], 20: ["B5", "B6", "B7", "B8A", "B11", "B12"], 60: ["B1", "B9", "B10"]}


def _product(folder: Path, make_geotiff) -> dict[int, Path]:
    files = {}
    for res, names in S2.items():
        n = 60 * 10 // res
        files[res] = make_geotiff(
            folder / f"S2_{res}m.tif",
            bands=len(names),
            height=n,
            width=n - n // 5,
            band_names=names,
            transform=_grid(float(res)),
            nodata=None,
            seed=res,
        )
    return files


def _guided_model(folder: Path, scale: int, targets: int, guides: list[str]) -> Path:
    """An untrained guided model (it returns the bilinear interpolation of its input) with its settings."""
    from conftest import save_guided_model_dir

    files = 1 if scale == 2 else 2  # x6: the 10 m and 20 m guide files
    return save_guided_model_dir(folder, scale=scale, channels=targets, guide_bands=guides, guide_files=files)


def test_sentinel2_writes_every_band_at_10m_in_wavelength_order(tmp_path, make_geotiff):
    import rasterio

    from aesr_sci import io as aio

    files = _product(tmp_path, make_geotiff)
    x2 = _guided_model(tmp_path / "x2", 2, 6, S2[10])
    x6 = _guided_model(tmp_path / "x6", 6, 3, S2[10] + S2[20])
    out = tmp_path / "all_10m.tif"
    args = ["-q", "sentinel2", str(x2), "--model-x6", str(x6), *map(str, files.values()), str(out), "--cog"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds, rasterio.open(files[10]) as ten:
        assert ds.transform == ten.transform and ds.crs == ten.crs and ds.shape == ten.shape
        assert " ".join(ds.descriptions) == "B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12"
        stack = ds.read()
        np.testing.assert_array_equal(stack[[1, 2, 3, 7]], ten.read())  # the 10 m bands copied as they are
    # the (untrained) x2 model returns the bilinear interpolation of the 20 m bands
    twenty = aio.read(files[20]).data.astype(np.float32)
    block = stack[4].reshape(30, 2, 24, 2).mean((1, 3))
    assert np.abs(block - twenty[0]).mean() < 0.05 * twenty[0].mean()


def test_sentinel2_adapts_a_copy_of_the_model_and_keeps_its_20m_bands_consistent(tmp_path, make_geotiff):
    """``sentinel2 --adapt --tta --consistency``: the model folder is left as it is, and each 20 m
    band of the stack, degraded as the model's pairs were made, gives back the 20 m file."""
    import torch
    from conftest import folder_digest

    from aesr_sci import io as aio
    from aesr_sci.checkpoint import load_model

    files = _product(tmp_path, make_geotiff)
    x2 = _guided_model(tmp_path / "x2", 2, 6, S2[10])
    before = folder_digest(x2)
    out = tmp_path / "all.tif"
    args = ["-q", "sentinel2", str(x2), str(files[10]), str(files[20]), str(out)]
    result = CliRunner().invoke(main, [*args, "--adapt", "0.02", "--tta", "--consistency"])
    assert result.exit_code == 0, result.output
    assert folder_digest(x2) == before
    twenty = [3, 4, 5, 7, 8, 9]  # B5, B6, B7, B8A, B11, B12 among B2 ... B12
    stack = torch.from_numpy(aio.read(out).data[twenty].astype(np.float64))[None]
    again = load_model(x2).degradation.apply(stack)[0].numpy()
    np.testing.assert_allclose(again, aio.read(files[20]).data.astype(np.float64), atol=1.0)


def test_sentinel2_refuses_a_60m_file_without_its_model(tmp_path, make_geotiff):
    files = _product(tmp_path, make_geotiff)
    x2 = _guided_model(tmp_path / "x2", 2, 6, S2[10])
    out = tmp_path / "all.tif"
    result = CliRunner().invoke(main, ["sentinel2", str(x2), *map(str, files.values()), str(out)])
    assert result.exit_code == 2 and "--model-x6" in result.output and not out.exists()
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["sentinel2", str(x2), str(files[10]), str(files[20]), str(out)])
    assert result.exit_code == 0, result.output
    import rasterio

    with rasterio.open(out) as ds:
        assert ds.count == 10 and ds.descriptions[0] == "B2"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.filterwarnings("ignore::aesr_sci.errors.NoCRSWarning")
def test_evaluate_guided_on_files_without_georeferencing(tmp_path, guided_model):
    """The DSen2 crops have neither CRS nor transform: target and guide are matched by shape."""
    import rasterio

    from aesr_sci.evaluation import evaluate

    model, files = guided_model
    plain = [tmp_path / Path(p).name for p in files[4:6]]
    for path, out in zip(files[4:6], plain):
        with rasterio.open(path) as src:
            profile = {**src.profile, "crs": None, "transform": Affine.identity()}
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(src.read())
    report = evaluate(model, [plain[0]], guides=[plain[1]])
    assert report["guided"] and np.isfinite(report["mean"]["model"]["psnr"])
