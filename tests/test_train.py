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


def test_resume_reaches_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_volumes(tmp_path / "data")
    train(tiny_recipe(paths), out_dir=tmp_path / "full")

    import aesr_sci.training.steps as engine

    original = engine.content_loss
    calls = {"n": 0}

    def interrupt_at_step_5(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "content_loss", interrupt_at_step_5)
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train(tiny_recipe(paths), out_dir=tmp_path / "split")
    assert json.loads((tmp_path / "split" / "state.json").read_text())["step"] == 4
    monkeypatch.setattr(engine, "content_loss", original)
    train(tiny_recipe(paths), out_dir=tmp_path / "split", resume=True)

    a = load_file(str(tmp_path / "full" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "state.safetensors"))
    keys = [k for k in a if k.startswith("module/")]
    assert keys
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
    recipe = tiny_recipe(paths, max_steps=4, val_every=2)
    recipe["model"] = {"name": "gan", "generator": "residual", "features": 4, "blocks": 1}
    recipe["train"]["adversarial"] = {"start_fraction": 0.25}
    result = train(recipe, out_dir=tmp_path / "gan")
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
        "--master_port",
        "29517",
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
