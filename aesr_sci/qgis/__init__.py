"""Installing the QGIS Processing plugin (the ``aesr_sci_processing`` folder here) into a QGIS profile.

The plugin is a thin client of the command line: it runs the ``aesr-sci`` executable whose path
:func:`install` records in the installed plugin's ``config.json``, so QGIS's own Python never
imports torch. Nothing in this module imports QGIS either.

Examples
--------
>>> from aesr_sci.qgis import install
>>> install("default")  # doctest: +SKIP
Installed(path=PosixPath('/home/me/.local/share/QGIS/QGIS3/profiles/default/python/plugins/aesr_sci_processing'), ...)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import FileWriteError, OutputExistsError

__all__ = ["PLUGIN_NAME", "Installed", "default_qgis_dir", "find_executable", "install", "plugin_source"]

PLUGIN_NAME = "aesr_sci_processing"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass(frozen=True)
class Installed:
    """Where the plugin went, which ``aesr-sci`` it runs, and whether anything changed."""

    path: Path
    executable: str
    changed: bool


def plugin_source() -> Path:
    """The plugin folder shipped inside this package."""
    return Path(__file__).resolve().parent / PLUGIN_NAME


def default_qgis_dir() -> Path:
    """QGIS 3's settings folder (holding ``profiles/``) on this platform."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "QGIS" / "QGIS3"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "QGIS" / "QGIS3"
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "QGIS" / "QGIS3"


def find_executable() -> str:
    """The absolute path of the ``aesr-sci`` script of the running Python environment."""
    bindir = Path(sys.executable).absolute().parent
    for name in ("aesr-sci", "aesr-sci.exe"):
        if (bindir / name).is_file():
            return str(bindir / name)
    found = shutil.which("aesr-sci")
    if found:
        return str(Path(found).absolute())
    raise FileWriteError(
        f"cannot find the aesr-sci command beside {sys.executable} or on PATH: install aesr-sci "
        "in this environment (pip install aesr-sci) and run 'aesr-sci qgis install' from it"
    )


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (bytecode caches aside) by its relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _stage(staging: Path, executable: str) -> Path:
    """Copy the plugin into ``staging`` with its ``config.json`` and the package's version."""
    target = staging / PLUGIN_NAME
    shutil.copytree(plugin_source(), target, ignore=_IGNORE)
    metadata = target / "metadata.txt"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    lines = [f"version={__version__}" if line.startswith("version=") else line for line in lines]
    metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"executable": executable, "version": __version__}
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


def _plugins_dir(profile: str, qgis_dir: str | os.PathLike[str] | None) -> Path:
    if not profile or profile in (".", "..") or any(sep in profile for sep in "/\\"):
        raise FileWriteError(f"--profile {profile!r}: give a QGIS profile name such as 'default'")
    if qgis_dir is not None and not Path(qgis_dir).is_dir():
        raise FileWriteError(
            f"--qgis-dir {qgis_dir}: no such folder (QGIS's settings folder, holding profiles/)"
        )
    base = Path(qgis_dir) if qgis_dir is not None else default_qgis_dir()
    plugins = base / "profiles" / profile / "python" / "plugins"
    try:
        plugins.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot create {plugins}: {exc.strerror or exc}") from None
    if not os.access(plugins, os.W_OK | os.X_OK):
        raise FileWriteError(f"cannot write {plugins}: the folder is not writable")
    return plugins


def _replace(target: Path, staged: Path, aside: Path) -> None:
    """Move ``staged`` to ``target``, putting the old ``target`` back if the move fails."""
    if target.exists():
        target.rename(aside)
    try:
        staged.rename(target)
    except OSError:
        if aside.exists():
            aside.rename(target)
        raise


def install(
    profile: str = "default",
    *,
    qgis_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    executable: str | None = None,
) -> Installed:
    """Copy the plugin into a QGIS profile and record the ``aesr-sci`` it runs.

    Parameters
    ----------
    profile
        The QGIS user profile (``default`` unless you made others).
    qgis_dir
        QGIS's settings folder that holds ``profiles/`` (default: :func:`default_qgis_dir`).
    overwrite
        Replace an installed copy that differs (another version, or another ``aesr-sci``).
    executable
        The ``aesr-sci`` command to record (default: :func:`find_executable`).

    Raises
    ------
    OutputExistsError
        If a different copy is installed and ``overwrite`` is false.
    FileWriteError
        If the profile folder cannot be written or ``aesr-sci`` cannot be found.
    """
    executable = str(Path(executable).absolute()) if executable else find_executable()
    plugins = _plugins_dir(profile, qgis_dir)
    target = plugins / PLUGIN_NAME
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN_NAME}.", dir=plugins))
    try:
        staged = _stage(staging, executable)
        if target.exists() and _tree(target) == _tree(staged):
            return Installed(target, executable, changed=False)
        if target.exists() and not overwrite:
            raise OutputExistsError(
                f"{target} holds another copy of the plugin (another version or aesr-sci): "
                "pass --overwrite to replace it"
            )
        _replace(target, staged, staging / "old")
        return Installed(target, executable, changed=True)
    except OutputExistsError:
        raise
    except OSError as exc:
        raise FileWriteError(f"cannot install the plugin into {plugins}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
