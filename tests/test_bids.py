"""Neuroimaging conventions: JSON sidecars with provenance, BIDS-derivative names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import save_model_dir, write_nifti

from aesr_sci.cli import main
from aesr_sci.errors import OutputExistsError
from aesr_sci.infer import upscale_files
from aesr_sci.io import read
from aesr_sci.io.bids import derivative_name, sidecar_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save_model_dir(tmp_path / "run", spatial_dims=3, channels=1, method="kspace", patch=8)


def test_upscale_writes_a_sidecar_with_provenance(tmp_path: Path, model: Path) -> None:
    src = write_nifti(tmp_path / "t1.nii.gz", shape=(8, 8, 6))
    out = tmp_path / "t1_sr.nii.gz"
    result = CliRunner().invoke(main, ["upscale", str(model), str(src), str(out)])
    assert result.exit_code == 0, result.output
    side = json.loads((tmp_path / "t1_sr.json").read_text())
    assert side["Sources"] == [str(src)] and side["source"] == str(src)
    assert side["source_sha256"] == _sha(src)
    assert side["model"] == str(model) and side["model_sha256"] == _sha(model / "model.safetensors")
    assert side["scale"] == [2, 2, 2] and side["degradation"] == "kspace"
    assert side["aesr_sci_version"] and "upscale" in side["command"]
    # never overwritten without --overwrite, checked before any work
    out.unlink()
    result = CliRunner().invoke(main, ["upscale", str(model), str(src), str(out)])
    assert result.exit_code == 2 and "t1_sr.json already exists" in result.output
    assert not out.exists()
    result = CliRunner().invoke(main, ["upscale", str(model), str(src), str(out), "--overwrite"])
    assert result.exit_code == 0 and out.exists()


def test_a_failing_sidecar_takes_its_output_with_it(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aesr_sci.io.bids as bids

    def broken(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bids, "write_sidecar", broken)
    src = write_nifti(tmp_path / "t1.nii.gz", shape=(8, 8, 6))
    with pytest.raises(OSError, match="disk full"):
        upscale_files(model, [src], tmp_path / "out.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "t1.nii.gz"]


def test_degrade_writes_a_sidecar(tmp_path: Path) -> None:
    src = write_nifti(tmp_path / "t1.nii.gz", shape=(8, 8, 6))
    result = CliRunner().invoke(main, ["degrade", str(src), str(tmp_path / "lo.nii"), "--scale", "2"])
    assert result.exit_code == 0, result.output
    side = json.loads((tmp_path / "lo.json").read_text())
    assert side["source_sha256"] == _sha(src) and "degrade" in side["command"]
    assert "model_sha256" not in side
    (tmp_path / "lo.nii").unlink()
    with pytest.raises(OutputExistsError):
        from aesr_sci.fileutil import check_output

        check_output(sidecar_path(tmp_path / "lo.nii"))


def test_derivative_names() -> None:
    assert derivative_name("sub-01_T1w.nii.gz") == "sub-01_desc-superres_T1w.nii.gz"
    assert (
        derivative_name("sub-01_ses-2_acq-lo_desc-brain_T2w.nii")
        == "sub-01_ses-2_acq-lo_desc-superres_T2w.nii"
    )
    assert sidecar_path("a/sub-01_T1w.nii.gz") == Path("a/sub-01_T1w.json")
    assert sidecar_path("a.tif") is None


def test_bids_dataset_upscales_into_a_derivative_dataset(tmp_path: Path, model: Path) -> None:
    root = tmp_path / "bids"
    files = [
        root / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
        root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_run-1_T2w.nii.gz",
    ]
    for f in files:
        f.parent.mkdir(parents=True)
        write_nifti(f, shape=(8, 8, 6))
    (root / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}')
    deriv = root / "derivatives" / "aesr-sci"
    result = CliRunner().invoke(main, ["upscale", str(model), str(root), str(deriv), "--bids"])
    assert result.exit_code == 0, result.output
    outs = [
        deriv / "sub-01" / "anat" / "sub-01_desc-superres_T1w.nii.gz",
        deriv / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_run-1_desc-superres_T2w.nii.gz",
    ]
    assert result.stdout.split() == [str(p) for p in outs]
    assert read(outs[0]).spatial_shape == (16, 16, 12)
    side = json.loads(outs[1].with_name("sub-02_ses-1_run-1_desc-superres_T2w.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_run-1_T2w.nii.gz"]
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "aesr-sci"
    assert desc["DatasetLinks"]["raw"] == root.resolve().as_uri()
    # a second run finds the outputs and refuses them; the derivatives are never read as inputs
    result = CliRunner().invoke(main, ["upscale", str(model), str(root), str(deriv), "--bids"])
    assert result.exit_code == 2 and "already exists" in result.output
    result = CliRunner().invoke(main, ["upscale", str(model), str(tmp_path / "run"), str(deriv), "--bids"])
    assert result.exit_code == 2 and "no BIDS-named NIfTI files" in result.output


def test_a_bids_dataset_of_one_scan(tmp_path: Path, model: Path) -> None:
    scan = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii"
    scan.parent.mkdir(parents=True)
    write_nifti(scan, shape=(8, 8, 6))
    (written,) = upscale_files(model, [tmp_path / "bids"], tmp_path / "deriv", bids=True)
    assert written == tmp_path / "deriv" / "sub-01" / "anat" / "sub-01_desc-superres_T1w.nii"
    assert written.with_suffix(".json").is_file()
