"""What a recipe feeds training: train --check reads the pixels, constant data stops training, model.json."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_train import tiny_recipe

from aesr_sci.checkpoint import LoadedModel
from aesr_sci.cli import main
from aesr_sci.data.feed import check_content
from aesr_sci.errors import DataError, FileReadError
from aesr_sci.train import train


def _volume(path: Path, data: np.ndarray | None = None, seed: int = 0) -> str:
    if data is None:
        data = np.zeros((16, 16, 16), np.float32)
        data[3:13, 3:13, 3:13] = np.random.default_rng(seed).uniform(50, 200, (10, 10, 10))
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    return str(path)


def _recipe(tmp_path: Path, paths: list[str]) -> Path:
    path = tmp_path / "feed.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(paths, max_steps=2, val_every=2)))
    return path


def _truncated(path: Path) -> str:
    _volume(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return str(path)


@pytest.mark.parametrize("kind", ["truncated", "all_nan", "all_zero"])
def test_train_check_reads_the_content(tmp_path: Path, kind: str) -> None:
    good = _volume(tmp_path / "good.nii", seed=1)
    bad_path = tmp_path / "bad.nii"
    if kind == "truncated":
        bad = _truncated(bad_path)
    else:
        fill = np.nan if kind == "all_nan" else 0.0
        bad = _volume(bad_path, np.full((16, 16, 16), fill, np.float32))
    recipe = _recipe(tmp_path, [good, _volume(tmp_path / "other.nii", seed=2), bad])
    before = bad_path.read_bytes()
    result = CliRunner().invoke(main, ["train", "--check", str(recipe)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a user's mistake: no traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "bad.nii" in lines[0], result.output
    assert bad_path.read_bytes() == before and not (tmp_path / "runs").exists()
    expected = {"truncated": FileReadError, "all_nan": DataError, "all_zero": DataError}[kind]
    with pytest.raises(expected):
        check_content([good, bad])
    check_content([good])  # a sound file passes


def test_training_on_all_zero_data_stops_with_one_line(tmp_path: Path) -> None:
    zeros = np.zeros((16, 16, 16), np.float32)
    paths = [_volume(tmp_path / f"z{i}.nii.gz", zeros) for i in range(2)]
    recipe = _recipe(tmp_path, paths)
    with pytest.raises(DataError, match=r"z\d.nii.gz: every valid value is 0, so there is nothing to learn"):
        train(str(recipe), out_dir=tmp_path / "run")
    result = CliRunner().invoke(main, ["-q", "train", str(recipe), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2 and "nothing to learn" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_model_json_records_the_statistics_policy_band_names_and_dtype(tmp_path: Path) -> None:
    paths = [_volume(tmp_path / f"v{i}.nii.gz", seed=i) for i in range(2)]
    result = train(str(_recipe(tmp_path, paths)), out_dir=tmp_path / "run")
    config = json.loads((result.run_dir / "model" / "model.json").read_text())
    assert config["statistics"] == {"policy": "foreground", "threshold": 0.05}
    assert config["dtype"] == "float32" and isinstance(config["band_names"], list)
    loaded = LoadedModel(network=None, config=config, path=tmp_path)  # type: ignore[arg-type]
    assert loaded.statistics == {"policy": "foreground", "threshold": 0.05}
    old = LoadedModel(network=None, config={}, path=tmp_path)  # type: ignore[arg-type]
    assert old.statistics == {"policy": "valid"}  # saved before the policy was recorded: as inferred then
