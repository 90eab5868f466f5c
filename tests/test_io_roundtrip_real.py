"""Round trips of a few real files (slow; skipped without the data folder)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REAL_FILES = [
    "mri/anisotropic/chris_PD.nii.gz",
    "mri/ixi_2mm/IXI012-HH-1211_T1_2mm.nii.gz",
    "mri/stroke/T2.nii.gz",
    "sat/small/rasterio_RGB.byte.tif",
    "sat/sentinel2_18SVG/S2_T18SVG_20160112_L1C_60m_B01-B09-B10.tif",
    "sat/sentinel2_T49JGM/S2B_MSIL1C_20171022_T49JGM_60m.tif",
]


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "roundtrip.py"
    spec = importlib.util.spec_from_file_location("aesr_roundtrip_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_round_trip(data_dir, tmp_path, name):
    path = data_dir / name
    if not path.exists():
        pytest.skip(f"{path} not in the data folder")
    problems, _, _, _ = _benchmark().compare(path, tmp_path)
    assert problems == []
