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
    assert (
        result.exit_code == 2 and isinstance(result.exception, SystemExit) and "no such file" in result.output
    )
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00truncated")
    result = CliRunner().invoke(main, ["degrade", str(bad), str(tmp_path / "o.nii.gz"), "--scale", "2"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()
    assert bad.read_bytes() == b"\x1f\x8b\x08\x00truncated"


def test_missing_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["upscale", str(tmp_path / "no_run"), str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    )
    assert result.exit_code == 2 and "no model at" in result.output


def _assert_one_line_error(result, *words: str) -> None:
    """Exit status 2, one ``Error:`` line naming ``words``, and no exception but the exit itself."""
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert all(w in lines[0] for w in words), lines[0]


@pytest.mark.parametrize("scale", ["0", "nan", "inf", "-2", "2.5", "two"])
def test_degrade_refuses_a_bad_scale_in_one_line(make_nifti, tmp_path: Path, scale: str) -> None:
    src = make_nifti(tmp_path / "a.nii.gz", shape=(8, 8, 8))
    before = src.read_bytes()
    result = CliRunner().invoke(main, ["degrade", str(src), str(tmp_path / "b.nii.gz"), "--scale", scale])
    _assert_one_line_error(result, "--scale", "whole numbers >= 1", repr(scale))
    assert not (tmp_path / "b.nii.gz").exists() and src.read_bytes() == before


def test_degrade_refuses_a_scale_with_the_wrong_axis_count(make_nifti, tmp_path: Path) -> None:
    src = make_nifti(tmp_path / "a.nii.gz", shape=(8, 8, 8))
    result = CliRunner().invoke(main, ["degrade", str(src), str(tmp_path / "b.nii.gz"), "--scale", "1,4"])
    _assert_one_line_error(result, str(src), "2 factors", "3 spatial axes")
    assert not (tmp_path / "b.nii.gz").exists()
    result = CliRunner().invoke(main, ["degrade", str(src), str(tmp_path / "b.nii.gz"), "--scale", "1,1,2"])
    assert result.exit_code == 0, result.output
    assert "scale 1x1x2" in result.output


@pytest.mark.parametrize("patch", ["-4", "2.5", "0"])
def test_upscale_refuses_a_bad_patch_size_in_one_line(tmp_path: Path, patch: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "upscale",
            str(tmp_path / "run"),
            str(tmp_path / "a.nii.gz"),
            str(tmp_path / "b.nii.gz"),
            "--patch-size",
            patch,
        ],
    )
    _assert_one_line_error(result, "--patch-size", "whole numbers >= 1")
