"""Where capplan writes: the one output-path policy for every file it writes.

capplan runs as root, so a careless path must not destroy anything. For a model
(``--save``), a report (``-o`` and the PNG beside it) and a JUnit file (``--junit``):

* ``-`` is standard output;
* an existing device, FIFO or socket is written as a stream, never replaced
  (``/dev/null`` stays a device; a FIFO with no reader is an error, not a hang);
* a symbolic link is followed only to a device, FIFO or socket; a link to a file, or a
  dangling one, is refused (replacing it would swap the link for a file);
* an existing regular file is replaced only with ``--force``, atomically (a temporary
  file in the same directory, fsync, rename), keeping its permission bits but never its
  setuid, setgid or sticky bits;
* a new file is created atomically and exclusively (a hard link of the finished
  temporary file, which fails if another run created the name meanwhile), so two runs
  that race for one name cannot both say they saved it;
* no directory is created, and a command never writes over one of its own inputs.

Commands ``plan`` every target before they measure or render, so a target that cannot
be written fails first, with one line, and then ``write`` it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from capacity.errors import CapplanError

Kind = Literal["stdout", "stream", "new", "replace"]


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """How one output will be written: decided by ``plan``, carried out by ``write``."""

    path: Path | None  # None: standard output
    kind: Kind
    force: bool = False


def plan(
    path: Path | str | None,
    *,
    force: bool = False,
    inputs: Sequence[Path | str] = (),
    example: str = "models/NAME.json",
) -> Target:
    """Check ``path`` as a place to write, or raise a one-line CapplanError.

    ``inputs`` are the files the command reads (a model, a baseline): never written.
    ``example`` is the file name the hints suggest.
    """
    if path is None or str(path) == "-":
        return Target(None, "stdout")
    path = Path(path)
    try:
        link = path.lstat()
    except FileNotFoundError:
        link = None
    except OSError as err:
        raise CapplanError(f"cannot write {path}: {err.strerror}") from None
    if link is not None and stat.S_ISLNK(link.st_mode):
        return _plan_link(path)
    if link is None:
        _check_directory(path, example)
        return Target(path, "new", force)
    if stat.S_ISDIR(link.st_mode):
        raise CapplanError(f"{path} is a directory", hint=f"give a file name: {example}")
    if not stat.S_ISREG(link.st_mode):
        return Target(path, "stream")  # a device, FIFO or socket: written, not replaced
    for given in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(given, path):
                raise CapplanError(
                    f"{path} is this command's input: writing it would destroy it",
                    hint=f"give another file to write, e.g. {example}",
                )
    if not force:
        raise CapplanError(f"{path} already exists", hint="pass --force to replace it")
    _check_directory(path, example)
    return Target(path, "replace", force)


# Links through these name one of capplan's own open descriptors (/dev/stdout is a link to
# /proc/self/fd/1): writing through them writes to what the caller redirected there.
_DESCRIPTOR_LINKS = ("/proc/self/fd/", "/proc/thread-self/fd/", "/dev/fd/", "/dev/std")


def _plan_link(path: Path) -> Target:
    try:
        followed = path.stat()
    except OSError:
        followed = None
    if followed is not None and not (
        stat.S_ISREG(followed.st_mode) or stat.S_ISDIR(followed.st_mode)
    ):
        return Target(path, "stream")  # a link to a device, FIFO or socket
    if followed is not None and stat.S_ISREG(followed.st_mode) and _names_a_descriptor(path):
        return Target(path, "stream")  # /dev/stdout redirected to a file: append to it
    target = os.readlink(path)
    raise CapplanError(
        f"{path} is a symbolic link (to {target}): capplan does not replace links",
        hint="give the file itself, not a link to it",
    )


def _names_a_descriptor(path: Path) -> bool:
    hop = str(path)
    for _ in range(8):  # /dev/stdout -> /proc/self/fd/1 -> the file
        if hop.startswith(_DESCRIPTOR_LINKS):
            return True
        try:
            hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
        except OSError:
            return False
    return False


def _check_directory(path: Path, example: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CapplanError(
            f"cannot write {path}: the directory {directory} does not exist",
            hint=f"create it first (mkdir -p {directory}), or write to an existing one, "
            f"e.g. {example}",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CapplanError(
            f"cannot write {path}: {directory} is not a writable directory",
            hint=f"choose a file under a directory you can write, e.g. {example}",
        )


def write(target: Target, data: str | bytes) -> None:
    """Write ``data`` as ``plan`` decided; every OSError becomes one line."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    where = "standard output" if target.path is None else str(target.path)
    try:
        if target.kind == "stdout":
            sys.stdout.flush()
            _write_fd(sys.stdout.fileno(), payload)
        elif target.kind == "stream":
            _write_stream(_path(target), payload)
        else:
            _write_file(_path(target), payload, replace=target.kind == "replace")
    except FileExistsError:
        raise CapplanError(
            f"{where} already exists (created while capplan was working)",
            hint="pass --force to replace it",
        ) from None
    except OSError as err:
        raise CapplanError(f"cannot write {where}: {err.strerror or err}") from None


def write_file(
    path: Path | str | None, data: str | bytes, *, force: bool = False, inputs: Sequence[Path] = ()
) -> None:
    """``plan`` and ``write`` in one call, for a target decided at the last moment."""
    write(plan(path, force=force, inputs=inputs), data)


def _path(target: Target) -> Path:
    assert target.path is not None
    return target.path


def _write_fd(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_stream(path: Path, payload: bytes) -> None:
    # O_NONBLOCK: opening a FIFO nobody reads fails at once (ENXIO) instead of hanging.
    try:
        # O_APPEND: through /dev/stdout into a regular file, write where the shell's
        # redirection left off (the end), never over what is there.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENXIO:
            raise OSError(err.errno, "nothing is reading that FIFO") from None
        raise
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        _write_fd(fd, payload)
    finally:
        os.close(fd)


def _write_file(path: Path, payload: bytes, *, replace: bool) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _mode(path, replace))
        _write_fd(fd, payload)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if replace:
            # Still the regular file that was planned? A link or device put there since
            # must not be replaced.
            current = path.lstat()
            if not stat.S_ISREG(current.st_mode):
                raise OSError(errno.EEXIST, "it is no longer a regular file")
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # exclusive: FileExistsError if the name appeared
            os.unlink(tmp)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mode(path: Path, replace: bool) -> int:
    """The permission bits a plain ``open()`` would give, without setuid/setgid/sticky.

    mkstemp creates files 0600; a model, a report or a node_exporter textfile (read by
    another user) keeps the replaced file's permissions, or follows the umask when new.
    """
    if replace:
        with contextlib.suppress(OSError):
            return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
