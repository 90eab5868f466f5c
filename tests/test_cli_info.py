"""``aesr-sci info`` and the command line's handling of file errors (exit 2, one line, no traceback)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from aesr_sci.cli import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_user_error(result, pattern):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert pattern in lines[0]
    assert isinstance(result.exception, SystemExit) and result.stdout == ""


def test_info_nifti_text(nifti_path):
    result = _run("info", nifti_path)
    assert result.exit_code == 0, result.output
    assert "nifti" in result.stdout and "1 x 20 x 18 x 16" in result.stdout
    assert "orientation:" in result.stdout and "0.9, 1.1, 2.5" in result.stdout


def test_info_geotiff_json(geotiff_path):
    result = _run("info", geotiff_path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["crs"]["epsg"] == 32618 and data["shape"] == [3, 40, 36]
    assert data["band_names"] == ["B1", "B2", "B3"] and data["nodata"] == 0 and data["nonfinite"] == 0


def test_info_nifti_json_orientation(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "las.nii", affine=np.diag([-1.0, 1.0, 1.0, 1.0]))
    data = json.loads(_run("info", path, "--json").stdout)
    assert data["orientation"] == "LAS" and data["voxel_size"] == [1.0, 1.0, 1.0]


def test_info_counts_nonfinite(tmp_path, make_nifti):
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, :2] = np.nan
    result = json.loads(_run("info", make_nifti(tmp_path / "n.nii.gz", data=data), "--json").stdout)
    assert result["nonfinite"] == 2


def test_info_without_crs(tmp_path, make_geotiff):
    result = _run("info", make_geotiff(tmp_path / "nocrs.tif", crs=None))
    assert result.exit_code == 0 and "not georeferenced" in result.stdout


def test_missing_file(tmp_path):
    _assert_user_error(_run("info", tmp_path / "absent.nii.gz"), "no such file")


def test_truncated_gzip(tmp_path, nifti_path):
    blob = nifti_path.read_bytes()
    nifti_path.write_bytes(blob[: len(blob) // 2])
    _assert_user_error(_run("info", nifti_path), "corrupt")


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 500))
    _assert_user_error(_run("info", path), "not a NIfTI file")


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "readme.tif"
    path.write_text("hello\n")
    _assert_user_error(_run("info", path), "not a TIFF file")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "scan.mgz"
    path.write_bytes(b"\x00" * 10)
    _assert_user_error(_run("info", path), ".nii, .nii.gz, .tif, .tiff")


@pytest.mark.parametrize("shape", [(8, 9), (4, 4, 4, 2, 3)])
def test_2d_and_5d_nifti(tmp_path, make_nifti, shape):
    _assert_user_error(
        _run("info", make_nifti(tmp_path / "bad.nii", shape=shape, affine=np.eye(4))), "only 3D"
    )


def test_nan_input_to_degrade(tmp_path, make_nifti):
    data = np.ones((8, 8, 8), np.float32)
    data[2, 2, 2] = np.inf
    out = tmp_path / "out.nii.gz"
    result = _run("degrade", make_nifti(tmp_path / "inf.nii.gz", data=data), out, "--scale", "2")
    _assert_user_error(result, "NaN or Inf")
    assert not out.exists()


def test_existing_output(tmp_path, nifti_path):
    out = tmp_path / "exists.nii.gz"
    out.write_bytes(b"old")
    _assert_user_error(_run("degrade", nifti_path, out, "--scale", "2"), "already exists")
    assert out.read_bytes() == b"old"


def test_unwritable_output_directory(tmp_path, nifti_path):
    out = tmp_path / "no" / "such" / "dir.nii.gz"
    _assert_user_error(_run("degrade", nifti_path, out, "--scale", "2"), "does not exist")
    assert not out.parent.exists()
