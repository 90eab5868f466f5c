"""Atomic output files: write to a temporary name beside the target, rename when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import FileWriteError, OutputExistsError

__all__ = ["atomic_output", "check_output"]


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileWriteError
        If the parent directory is missing or not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists: pass --overwrite (overwrite=True) to replace it")
    if path.is_dir():
        raise FileWriteError(f"{path} is a directory: give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileWriteError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileWriteError(f"cannot write {path}: the directory {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.tif``) so writers that choose a
    format by extension still work. Nothing is left behind if the body raises.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    path = check_output(path, overwrite=overwrite)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{path} appeared while writing: pass --overwrite to replace it")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
