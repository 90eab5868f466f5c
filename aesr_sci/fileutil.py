"""Atomic output files: write to a temporary name beside the target, rename when complete."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import FileReadError, FileWriteError, OutputExistsError

__all__ = ["atomic_output", "check_output", "check_regular_file", "same_file"]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` both exist and are one file (same device and inode: symlinks and
    hard links included)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Refuse a FIFO, socket or device given as an input, before anything opens it (reading one
    can block for ever).

    Raises
    ------
    FileReadError
        If ``path`` exists but is not a regular file (a directory included).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # a missing file is reported by the reader
    if stat.S_ISDIR(mode):
        raise FileReadError(f"{path} is a directory: give a NIfTI or GeoTIFF file")
    if not stat.S_ISREG(mode):
        raise FileReadError(
            f"{path} is not a regular file (a FIFO, socket or device): copy the data into a "
            ".nii, .nii.gz, .tif or .tiff file first"
        )


def check_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Validate an output path before any work is done.

    ``inputs`` are the files the command reads: the output may never be one of them, not even with
    ``overwrite`` and not through a symbolic or hard link.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileWriteError
        If the parent directory is missing or not writable, or ``path`` is one of ``inputs``.
    """
    path = Path(path)
    for source in inputs:
        if same_file(path, source):
            which = "an input" if str(path) == str(source) else f"the same file as the input {source}"
            raise FileWriteError(
                f"{path} is {which}: writing it would destroy the input; choose another output name"
            )
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
