"""Neuroimaging conventions for outputs: BIDS-style JSON sidecars and BIDS-derivative names.

A NIfTI output ``out.nii.gz`` gets ``out.json`` beside it with its provenance (model and the
sha256 of its weights, scale, degradation, source file and its sha256, package version, command).
A BIDS dataset (``sub-01/anat/sub-01_T1w.nii.gz``) upscales into a BIDS-derivative dataset:
``OUT/sub-01/anat/sub-01_desc-superres_T1w.nii.gz`` with its sidecar, and
``OUT/dataset_description.json`` (``DatasetType: derivative``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import FileReadError
from ..fileutil import atomic_output, check_output
from ._common import NIFTI_SUFFIXES, is_gdal_virtual, provenance_record

__all__ = [
    "DESC",
    "bids_plan",
    "derivative_name",
    "file_sha256",
    "sidecar_path",
    "sidecar_record",
    "write_dataset_description",
    "write_output_sidecar",
    "write_sidecar",
]

#: the ``desc`` entity of super-resolved outputs
DESC = "superres"
_BIDS_NAME = re.compile(r"^(sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*)_([A-Za-z0-9]+)(\.nii(?:\.gz)?)$")


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """Hex sha256 of a local file's bytes; None for a GDAL virtual path or a missing file."""
    if is_gdal_virtual(path) or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(path: str | os.PathLike[str]) -> Path | None:
    """``scan.json`` for ``scan.nii.gz`` or ``scan.nii``; None for a file that is not NIfTI."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return Path(path).with_name(name[: -len(suffix)] + ".json")
    return None


def sidecar_record(
    provenance: Mapping[str, Any],
    *,
    source: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    source_uri: str | None = None,
) -> dict[str, Any]:
    """The sidecar's content: BIDS ``Description`` and ``Sources``, then the provenance (with the
    package version), the source's and the model weights' sha256 and the command that ran."""
    from ..checkpoint import model_files

    record: dict[str, Any] = {
        "Description": f"{provenance.get('operation', 'output')} by aesr-sci",
        "Sources": [source_uri or str(source)],
    }
    record.update(provenance_record(provenance))
    record["source"] = str(source)
    record["source_sha256"] = file_sha256(source)
    if model is not None:
        weights = [p for p in model_files(model) if p.suffix == ".safetensors"]
        record["model_sha256"] = file_sha256(weights[0]) if weights else None
    record.update(_command())
    return record


def _command() -> dict[str, Any]:
    """The command that runs: the ``aesr-sci`` subcommand and its arguments, or the Python
    program's command line."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click is not None else None
    if ctx is None:
        return {"command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    return {"command": ctx.command_path, "arguments": dict(ctx.params)}


def write_sidecar(
    path: str | os.PathLike[str], record: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write ``record`` as JSON to ``path`` atomically (refusing an existing file unless
    ``overwrite``)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


def write_output_sidecar(
    output: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    *,
    source: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    source_uri: str | None = None,
) -> Path | None:
    """Write the sidecar of the NIfTI ``output`` just written (nothing for other formats); if that
    fails, ``output`` is removed too, so no image is left without its provenance."""
    path = sidecar_path(output)
    if path is None:
        return None
    try:
        record = sidecar_record(provenance, source=source, model=model, source_uri=source_uri)
        return write_sidecar(path, record, overwrite=overwrite)
    except BaseException:
        Path(output).unlink(missing_ok=True)
        raise


def derivative_name(name: str) -> str:
    """The BIDS-derivative name of a BIDS file name: ``desc-superres`` before the suffix, replacing
    a ``desc`` the source has.

    Examples
    --------
    >>> derivative_name("sub-01_ses-2_run-1_T1w.nii.gz")
    'sub-01_ses-2_run-1_desc-superres_T1w.nii.gz'
    """
    match = _BIDS_NAME.match(name)
    if match is None:
        raise FileReadError(f"{name} is not a BIDS name (sub-<label>[_<key>-<value>...]_<suffix>.nii.gz)")
    entities = [e for e in match.group(1).split("_") if not e.startswith("desc-")]
    return "_".join([*entities, f"desc-{DESC}", match.group(2)]) + match.group(3)


def bids_plan(root: str | os.PathLike[str], output: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs for every BIDS-named NIfTI under ``root``'s ``sub-*`` folders, the
    outputs at the same relative place under ``output`` with :func:`derivative_name` names.

    Raises
    ------
    FileReadError
        If ``root`` is not a folder or holds no ``sub-*/**/sub-*.nii[.gz]`` file.
    """
    root, out = Path(root), Path(output)
    if not root.is_dir():
        raise FileReadError(f"{root}: --bids needs the folder of a BIDS dataset (holding sub-*/ folders)")
    files = sorted(
        p
        for p in root.glob("sub-*/**/sub-*")
        if p.is_file() and _BIDS_NAME.match(p.name) and not p.name.startswith(".")
    )
    if not files:
        raise FileReadError(
            f"{root} holds no BIDS-named NIfTI files (sub-<label>/anat/sub-<label>_T1w.nii.gz): give a BIDS dataset"
        )
    return [(f, out / f.relative_to(root).parent / derivative_name(f.name)) for f in files]


def write_dataset_description(root: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """``output/dataset_description.json`` of the derivative dataset, written once (an existing
    one, from an earlier run, is kept)."""
    from .. import __version__

    path = Path(output) / "dataset_description.json"
    if path.exists():
        return path
    check_output(path)
    doc = {
        "Name": "aesr-sci super-resolution",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "aesr-sci", "Version": __version__}],
        "SourceDatasets": [{"URL": Path(root).resolve().as_uri()}],
        "DatasetLinks": {"raw": Path(root).resolve().as_uri()},
    }
    return write_sidecar(path, doc)
