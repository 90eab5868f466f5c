"""The training engine end to end on tiny synthetic recipes: outputs, resume, bad input, GAN, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from aesr_sci.cli import main
from aesr_sci.errors import DataError, OutputExistsError, RecipeError
from aesr_sci.train import train


def _phantom(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth blobs on an empty background: foreground for the sampler, detail for the network."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(6):
        c = rng.uniform(-0.5, 0.5, len(shape))
        r = rng.uniform(0.15, 0.4)
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        out += rng.uniform(50, 200) * np.exp(-d2 / (2 * r * r))
    return out


def write_volumes(folder: Path, n: int = 2, shape=(24, 24, 20)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        affine = np.diag([1.0, 1.1, 0.9, 1.0])
        affine[:3, 3] = [-12, -13, -9]
        p = folder / f"sub{i}.nii.gz"
        nib.save(nib.Nifti1Image(_phantom(shape, i), affine), p)
        paths.append(str(p))
    return paths


def tiny_recipe(paths: list[str], **train: object) -> dict:
    return {
        "name": "tiny",
        "data": {
            "paths": paths,
            "spatial_dims": 3,
            "scale": 2,
            "patch_size": 8,
            "degradation": {"method": "kspace"},
            "min_valid": 0.1,
            "samples_per_epoch": 16,
        },
        "model": {"name": "residual", "features": 4, "blocks": 1},
        "train": {"batch_size": 2, "max_steps": 6, "val_every": 3, "seed": 1, "lr": 1e-3, **train},
    }


def test_cli_train_writes_a_complete_run(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(tiny_recipe(paths)))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["-q", "train", str(recipe), "--out", str(out), "--set", "train.max_steps=4"]
    )
    assert result.exit_code == 0, result.output
    assert "validation: model" in result.output
    for name in (
        "recipe.yaml",
        "run.json",
        "log.csv",
        "model/model.json",
        "model/model.safetensors",
        "state.json",
    ):
        assert (out / name).is_file(), name
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["train"]["max_steps"] == 4  # the override is recorded
    assert len(resolved["data"]["paths"]) == 1 and len(resolved["data"]["val_paths"]) == 1  # split by file
    run = json.loads((out / "run.json").read_text())
    assert run["aesr_sci_version"] and run["train_files"] != run["val_files"]
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["degradation"]["convention"] == "origin"
    assert model["network"]["name"] == "residual"
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,loss,val_psnr")
    assert len(lines) >= 3
    # the run directory is reused only when asked
    again = CliRunner().invoke(main, ["-q", "train", str(recipe), "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    # and the model upscales a file through the command line
    up = CliRunner().invoke(main, ["-q", "upscale", str(out), paths[0], str(tmp_path / "sr.nii.gz")])
    assert up.exit_code == 0, up.output
    sr = nib.load(tmp_path / "sr.nii.gz")
    assert sr.shape == (48, 48, 40)


def _gan_recipe(paths: list[str], **train: object) -> dict:
    recipe = tiny_recipe(paths, **train)
    recipe["model"] = {"name": "gan", "generator": "residual", "features": 4, "blocks": 1}
    recipe["train"]["adversarial"] = {"start_fraction": 0.25}
    return recipe


@pytest.mark.parametrize("make_recipe", [tiny_recipe, _gan_recipe], ids=["content", "adversarial"])
def test_resume_reaches_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_recipe
) -> None:
    paths = write_volumes(tmp_path / "data")
    train(make_recipe(paths), out_dir=tmp_path / "full")

    import aesr_sci.training.steps as engine

    original = engine.lr_at  # called once at the start of each step
    calls = {"n": 0}

    def interrupt_at_step_5(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "lr_at", interrupt_at_step_5)
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train(make_recipe(paths), out_dir=tmp_path / "split")
    assert json.loads((tmp_path / "split" / "state.json").read_text())["step"] == 4
    monkeypatch.setattr(engine, "lr_at", original)
    train(make_recipe(paths), out_dir=tmp_path / "split", resume=True)

    a = load_file(str(tmp_path / "full" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "state.safetensors"))
    keys = [k for k in a if k.startswith("module/")]
    assert keys and (make_recipe is tiny_recipe or any(k.startswith("module/discriminator/") for k in keys))
    for k in keys:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)


def test_bad_input_is_reported_before_training(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data")
    with pytest.raises(RecipeError, match="matches no file"):
        train(tiny_recipe([str(tmp_path / "nothing" / "*.nii.gz")]), out_dir=tmp_path / "r1")
    small = write_volumes(tmp_path / "small", n=2, shape=(6, 6, 6))
    with pytest.raises(DataError):
        train(tiny_recipe(small), out_dir=tmp_path / "r2")
    four_d = tmp_path / "data" / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_phantom((24, 24, 20), 5)] * 2, -1), np.eye(4)), four_d)
    with pytest.raises(DataError, match=r"band|channel"):
        train(tiny_recipe([*paths, str(four_d)]), out_dir=tmp_path / "r3")
    with pytest.raises(RecipeError, match="at least 2 files"):
        train(tiny_recipe(paths[:1]), out_dir=tmp_path / "r4")
    for name in ("r1", "r2", "r3", "r4"):
        assert not (tmp_path / name).exists(), name  # nothing written for a bad recipe


def test_existing_run_needs_overwrite(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        train(tiny_recipe(paths, max_steps=2), out_dir=out)
    train(tiny_recipe(paths, max_steps=2), out_dir=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_check_only_validates(tmp_path: Path) -> None:
    import yaml

    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(paths)))
    result = CliRunner().invoke(main, ["train", "--check", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "1 training and 1 validation file(s), 1 channel(s)" in result.output
    bad = CliRunner().invoke(main, ["train", "--check", str(recipe), "--set", "model.name=resnet"])
    assert bad.exit_code == 2 and "resnet" in bad.output and "residual" in bad.output


def test_gan_trains(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "data")
    result = train(_gan_recipe(paths, max_steps=4, val_every=2), out_dir=tmp_path / "gan")
    assert result.steps == 4
    tensors = load_file(str(tmp_path / "gan" / "state.safetensors"))
    assert any(k.startswith("module/discriminator/") for k in tensors)
    # a GAN keeps its final weights: choosing by validation PSNR would undo the adversarial loss
    saved = json.loads((tmp_path / "gan" / "model" / "model.json").read_text())
    assert saved["training"]["step"] == 4 and result.best_step == 4 and result.keep == "last"


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_chooses_the_saved_weights(tmp_path: Path, keep: str) -> None:
    paths = write_volumes(tmp_path / "data")
    recipe = tiny_recipe(paths, max_steps=6, val_every=1, keep=keep, lr=0.05)  # a jumpy run
    result = train(recipe, out_dir=tmp_path / keep)
    saved = json.loads((tmp_path / keep / "model" / "model.json").read_text())["training"]
    with (tmp_path / keep / "log.csv").open() as fh:
        scores = {int(r["step"]): float(r["val_psnr"]) for r in csv.DictReader(fh)}
    expected = max(scores, key=lambda k: scores[k]) if keep == "best" else 6
    assert saved["step"] == expected == result.best_step
    assert saved["val_psnr"] == pytest.approx(scores[expected], abs=1e-3)


def test_distributed_two_cpu_processes(tmp_path: Path) -> None:
    import yaml

    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(paths, max_steps=4, val_every=2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",  # a free port: other runs of this test may be going on
        "-m",
        "aesr_sci.cli",
        "-q",
        "train",
        str(recipe),
        "--out",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",  # two processes on the CPU (gloo), also on a machine with fewer GPUs than processes
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()


def test_every_process_checks_the_run_folder_before_rank_0_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun, a process that checked the folder after rank 0 had written into it refused
    the run as "not empty" (exit 2 on one rank, a crash on the other): a barrier now separates them."""
    from aesr_sci.training import device, rundir

    events: list[str] = []
    monkeypatch.setattr(device.Placement, "barrier", lambda self: events.append("barrier"))
    prepare, start = rundir.RunDirectory.prepare, rundir.RunDirectory.start
    monkeypatch.setattr(
        rundir.RunDirectory, "prepare", lambda self, **k: (events.append("check"), prepare(self, **k))[1]
    )
    monkeypatch.setattr(
        rundir.RunDirectory, "start", lambda self, *a, **k: (events.append("write"), start(self, *a, **k))[1]
    )
    train(tiny_recipe(write_volumes(tmp_path / "data"), max_steps=1), out_dir=tmp_path / "run")
    assert events[:3] == ["check", "barrier", "write"]


def test_model_json_records_the_band_names_and_dtype(tmp_path: Path, make_geotiff) -> None:
    """model.json's band names and dtype come from the data (they used to be always empty and null)."""
    from aesr_sci.nets import build_model
    from aesr_sci.recipe import load_recipe
    from aesr_sci.train import _model_config, check_data_files

    files = [
        str(make_geotiff(tmp_path / f"t{i}.tif", bands=2, dtype="int16", band_names=["B04", "B08"]))
        for i in range(2)
    ]
    recipe = load_recipe(
        {
            "data": {
                "paths": files,
                "spatial_dims": 2,
                "scale": 2,
                "patch_size": 8,
                "degradation": {"method": "area"},
            }
        }
    )
    summary = check_data_files(recipe, files[:1], files[1:])
    net = build_model("residual", spatial_dims=2, in_channels=2, scale=2, features=4, blocks=1)
    config = _model_config(recipe, net, 2, summary)
    assert config["band_names"] == ["B04", "B08"] and config["dtype"] == "int16"


# ------------------------------------------------------------------ runs: resume, failures, full disks
def _cli_train(recipe: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["-q", "train", str(recipe), "--out", str(out), *args])


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, SystemExit) or result.exception.code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    import yaml

    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(paths, max_steps=4, val_every=2)))
    out = tmp_path / "run"
    assert _cli_train(recipe, out).exit_code == 0
    return recipe, out


def test_resuming_a_finished_run_changes_nothing(finished_run: tuple[Path, Path], caplog) -> None:
    recipe, out = finished_run
    before = _snapshot(out)
    result = train(recipe, out_dir=out, resume=True)
    assert result.steps == 4 and result.best_step is not None
    assert "finished at step 4" in caplog.text and "train.max_steps" in caplog.text
    assert _snapshot(out) == before  # no duplicate log row, no new checkpoint


@pytest.mark.parametrize("older", [False, True], ids=["run", "run saved before limits were recorded"])
def test_resume_with_more_steps_trains_on_to_the_new_total(
    finished_run: tuple[Path, Path], older: bool
) -> None:
    import yaml

    recipe, out = finished_run
    if older:
        state = json.loads((out / "state.json").read_text())
        for key in ("max_steps", "max_minutes", "budget_fitted", "finished", "scalers"):
            del state[key]
        (out / "state.json").write_text(json.dumps(state))
    result = _cli_train(recipe, out, "--resume", "--set", "train.max_steps=6")
    assert result.exit_code == 0, result.output
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 6 and state["total_steps"] == 6 and state["finished"]
    with (out / "log.csv").open() as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == [2, 4, 6]  # one row per checkpoint, none twice
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["max_steps"] == 6


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.features=8", "model.features"),
        ("data.patch_size=4", "data.patch_size"),
        ("train.lr=0.1", "train.lr"),
    ],
)
def test_resume_refuses_a_change_to_what_the_run_learns(
    finished_run: tuple[Path, Path], override: str, key: str
) -> None:
    recipe, out = finished_run
    before = _snapshot(out)
    result = _cli_train(recipe, out, "--resume", "--set", override, "--set", "train.max_steps=8")
    _one_line_error(result, key, "--resume")
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("state.safetensors", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        ("state.json", lambda p: p.write_text(p.read_text()[:40])),
        ("state.json", lambda p: p.write_text('{"step": 2}')),
    ],
    ids=["truncated weights", "truncated json", "foreign json"],
)
def test_resume_from_a_damaged_state_is_one_line(finished_run: tuple[Path, Path], name: str, damage) -> None:
    recipe, out = finished_run
    damage(out / name)
    before = _snapshot(out)
    _one_line_error(_cli_train(recipe, out, "--resume", "--set", "train.max_steps=6"), name, "--overwrite")
    assert _snapshot(out) == before


def test_resume_from_another_networks_state_is_one_line(
    tmp_path: Path, finished_run: tuple[Path, Path]
) -> None:
    import yaml

    recipe, out = finished_run
    other = tiny_recipe(yaml.safe_load(recipe.read_text())["data"]["paths"], max_steps=2)
    other["model"]["features"] = 6
    train(other, out_dir=tmp_path / "other")
    for name in ("state.json", "state.safetensors"):
        (out / name).write_bytes((tmp_path / "other" / name).read_bytes())
    _one_line_error(_cli_train(recipe, out, "--resume", "--set", "train.max_steps=6"), "does not fit")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aesr_sci.training.steps as steps

    paths = write_volumes(tmp_path / "data")
    monkeypatch.setattr(steps, "content_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    out = tmp_path / "runs" / "deep" / "run"
    with pytest.raises(DataError, match="loss became nan"):
        train(tiny_recipe(paths), out_dir=out)
    assert not (tmp_path / "runs").exists()
    mine = tmp_path / "mine"  # a folder of the user's: kept, with the user's files, and nothing else
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        train(tiny_recipe(paths), out_dir=mine, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import yaml

    import aesr_sci.checkpoint as checkpoint

    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(paths)))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    _one_line_error(_cli_train(recipe, tmp_path / "run"), "disk is full", "--out")
    assert not (tmp_path / "run").exists()


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path) -> None:
    import yaml

    paths = write_volumes(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(paths)))
    (tmp_path / "file.txt").write_text("not a folder")
    _one_line_error(_cli_train(recipe, tmp_path / "file.txt" / "run"), "file.txt", "--out")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        _one_line_error(_cli_train(recipe, locked / "run"), "not writable", "--out")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_train_and_upscale_show_progress_where_a_person_watches() -> None:
    """progress=None lets tqdm decide: a bar in a terminal or notebook, none in a log file."""
    import inspect

    from aesr_sci.infer import upscale
    from aesr_sci.train import train

    assert inspect.signature(train).parameters["progress"].default is None
    assert inspect.signature(upscale).parameters["progress"].default is None
