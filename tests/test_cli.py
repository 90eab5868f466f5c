"""The command line: instant help, one-line errors with exit status 2, help for every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aesr_sci import __version__
from aesr_sci.cli import main

COMMANDS = ["info", "degrade", "train", "upscale", "evaluate", "models", "export", "sample"]


def test_help_and_version_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from aesr_sci.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'nibabel', 'rasterio', 'monai', 'skimage') if m in sys.modules]\n"
        "print('heavy:', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "heavy: []" in out
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main" in result.output or "Usage:" in result.output
    if command not in ("models", "sample"):
        assert "Example" in result.output


def test_recipe_typo_is_one_clear_line(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mri_x2.yaml"
    result = CliRunner().invoke(
        main, ["train", str(recipe), "--set", "train.batchsize=8", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"Error: {recipe}: train.batchsize: unknown key; did you mean 'batch_size'?"
    )
    assert not (tmp_path / "r").exists()


def test_missing_and_corrupt_inputs(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["degrade", str(tmp_path / "nope.nii.gz"), str(tmp_path / "o.nii.gz"), "--scale", "2"]
    )
    assert result.exit_code == 2 and "no such file" in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00truncated")
    result = CliRunner().invoke(main, ["degrade", str(bad), str(tmp_path / "o.nii.gz"), "--scale", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()
    assert bad.read_bytes() == b"\x1f\x8b\x08\x00truncated"


def test_missing_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["upscale", str(tmp_path / "no_run"), str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    )
    assert result.exit_code == 2 and "no model at" in result.output
