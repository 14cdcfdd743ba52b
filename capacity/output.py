"""Writing files: atomically, via a temporary file and a rename in the same directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from capacity.errors import CapplanError, ModelFileError


def write_atomic(path: Path, text: str, *, force: bool = True) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename in the same directory.

    A reader never sees half a file, and a crash leaves the old file intact. With
    ``force=False`` an existing file is an error (pyperf refuses to overwrite results too).
    """
    path = Path(path)
    if not force and path.exists():
        raise ModelFileError(str(path), "already exists", hint="pass --force to replace it")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise ModelFileError(str(path), f"cannot write: {err.strerror}") from None
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _set_mode(fd: int, path: Path) -> None:
    """Give the temporary file the mode a plain ``open()`` would have given the target.

    mkstemp creates files 0600; a model, a report or a node_exporter textfile (read by
    another user) should keep the existing file's mode, or follow the umask like any file.
    """
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.fchmod(fd, mode)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Binary sibling of ``write_atomic`` (for PNG plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_target(save: Path, force: bool) -> None:
    """Refuse a --save FILE that cannot be written before measuring, not after."""
    if save.exists() and not force:
        raise CapplanError(f"{save} already exists", hint="pass --force to replace it")
    if save.is_dir():
        raise CapplanError(f"{save} is a directory", hint="give a file name: models/NAME.json")
    existing = save.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CapplanError(
            f"cannot write {save}: {existing} is not a writable directory",
            hint="choose a file under a directory you can write, e.g. models/NAME.json",
        )
