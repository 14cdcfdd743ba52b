"""Parse /proc exactly, read it thinly.

Two halves, kept apart so that each can be tested alone:

* ``parse_*(data: bytes)`` are pure: they take a file's bytes and return a record. They do
  no I/O, ignore keys they do not know, default optional keys (each noted with the kernel
  version that added it) and raise ``ParseError`` for a missing required key.
* ``read_*(pid, root)`` open ``root/proc/PID/<file>``, read it in one go and translate
  ``OSError`` into capplan's exceptions through ``_translating``. ``root`` is the only seam:
  a captured tree under ``tests/fixtures/hosts/<case>/`` stands in for ``/``.

Nothing here decides what a vanished or forbidden process *means*; the sampler does.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from capacity.errors import (
    AccessDenied,
    CapplanError,
    KernelThread,
    NoSuchProcess,
    ParseError,
    ZombieProcess,
)
from capacity.measure.procparse import (
    Mapping,
    ProcStat,
    ProcStatus,
    SmapsEntry,
    count_address_regions,
    count_maps_lines,
    parse_bracketed_choice,
    parse_cmdline,
    parse_mapped_mpm,
    parse_maps,
    parse_meminfo,
    parse_proc_cgroup,
    parse_signal_masks,
    parse_smaps,
    parse_smaps_rollup,
    parse_stat,
    parse_status,
    rollup_from_smaps,
)
from capacity.records import HostMemory, MemoryRollup

DEFAULT_ROOT = Path("/")


def _clock_ticks() -> int:
    """USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on every mainstream arch."""
    try:
        return os.sysconf("SC_CLK_TCK") or 100
    except (ValueError, OSError):
        return 100


CLOCK_TICKS = _clock_ticks()


# --------------------------------------------------------------------------- pure parsers


# --------------------------------------------------------------------------- thin readers


def proc_dir(pid: int, root: Path = DEFAULT_ROOT) -> Path:
    return root / "proc" / str(pid)


_PROC_PREFIXES: dict[Path, str] = {DEFAULT_ROOT: "/proc/"}


def proc_file(pid: int, root: Path, name: str) -> str:
    """``root/proc/PID/name`` as a string.

    The per-sample readers build three paths per process; a ``pathlib`` join costs more
    than reading ``stat`` itself (issue 7 measured it), so the hot paths use strings.
    """
    prefix = _PROC_PREFIXES.get(root)
    if prefix is None:
        prefix = _PROC_PREFIXES[root] = os.path.join(os.fspath(root), "proc", "")
    return f"{prefix}{pid}/{name}"


READ_SIZE = 65536


def _read(path: str | Path, single: bool = False) -> bytes:
    """The whole file, read with ``os.read`` until end of file.

    /proc files are generated per read() call. The single-record files (stat, status,
    smaps_rollup: ``single``) are produced whole by the first read, so a read shorter than
    the buffer is the whole file and the end-of-file read is skipped. For the multi-record
    ones (maps, smaps) a short read is not the end, and a large buffer means fewer calls,
    each of which takes the target's mmap lock (psutil #708, #2050 discuss the buffer
    size). ``os.open``/``os.read`` skip the file-object machinery of ``open()``, which
    costs more than the read of a small file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, READ_SIZE)
        if not data or (single and len(data) < READ_SIZE):
            return data
        parts = [data]
        while chunk := os.read(fd, READ_SIZE):
            parts.append(chunk)
        return data if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _translated(
    err: OSError, pid: int, root: Path, path: str | Path, name: str | None = None
) -> CapplanError:
    """The capplan exception for an OSError from reading ``path`` of process ``pid``."""
    if isinstance(err, PermissionError):
        return AccessDenied(pid, name, str(path))
    if isinstance(err, ProcessLookupError):
        # ESRCH: the task is exiting, or is a zombie, or is a kernel thread asked for smaps
        # (Linux 4.19+ answers ESRCH there; psutil #2283).
        return _vanished_or_zombie(pid, root, name)
    if isinstance(err, FileNotFoundError):
        try:
            stat = parse_stat(_read(proc_file(pid, root, "stat")))
        except (OSError, ParseError):
            return NoSuchProcess(pid, name)
        if stat.state == "Z" or stat.is_kernel_thread:
            # A zombie or kernel thread has no exe; a captured tree leaves out the files the
            # kernel refused (ESRCH) for them, so an absent file reads like the live refusal.
            return _vanished_or_zombie(pid, root, name)
        return ParseError(str(path), "missing although the process exists")
    if err.errno in (errno.ESRCH, errno.ENOENT):
        return _vanished_or_zombie(pid, root, name)
    return CapplanError(f"cannot read {path}: {err.strerror}")


_SINGLE_RECORD = frozenset({"stat", "status", "smaps_rollup", "statm"})


def _read_proc(pid: int, root: Path, file: str, name: str | None = None) -> tuple[str, bytes]:
    """``(path, bytes)`` of /proc/PID/file, with OSError translated as ``_translating`` does."""
    path = proc_file(pid, root, file)
    try:
        return path, _read(path, single=file in _SINGLE_RECORD)
    except OSError as err:
        raise _translated(err, pid, root, path, name) from None


@contextlib.contextmanager
def _translating(pid: int, root: Path, path: str | Path, name: str | None = None) -> Iterator[None]:
    """Turn an OSError from reading ``path`` into NoSuchProcess / ZombieProcess / AccessDenied."""
    try:
        yield
    except OSError as err:
        raise _translated(err, pid, root, path, name) from None


def _vanished_or_zombie(pid: int, root: Path, name: str | None) -> NoSuchProcess:
    try:
        stat = parse_stat(_read(proc_file(pid, root, "stat")))
    except (OSError, ParseError):
        return NoSuchProcess(pid, name)
    if stat.state == "Z":
        return ZombieProcess(pid, name or stat.comm, stat.ppid)
    if stat.is_kernel_thread:
        return KernelThread(pid, name or stat.comm)
    return NoSuchProcess(pid, name or stat.comm)


def read_stat(pid: int, root: Path = DEFAULT_ROOT) -> ProcStat:
    path, data = _read_proc(pid, root, "stat")
    if not data:
        raise NoSuchProcess(pid)
    return parse_stat(data, path)


def read_status(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> ProcStatus:
    path, data = _read_proc(pid, root, "status", name)
    if not data:
        raise _vanished_or_zombie(pid, root, name)
    return parse_status(data, path)


def read_rollup(
    pid: int, root: Path = DEFAULT_ROOT, name: str | None = None
) -> tuple[MemoryRollup, str]:
    """The process's page counts, and which file gave them (``smaps_rollup`` or ``smaps``).

    Falls back to summing ``smaps`` where the kernel has no ``smaps_rollup`` (before 4.14).
    An empty file means the process has no memory map: a zombie or a kernel thread.
    """
    try:
        rollup_path, data = _read_proc(pid, root, "smaps_rollup", name)
    except ParseError:
        # ENOENT while the process is alive: a kernel without smaps_rollup.
        smaps_path, data = _read_proc(pid, root, "smaps", name)
        if not data:
            raise _vanished_or_zombie(pid, root, name) from None
        return rollup_from_smaps(parse_smaps(data, smaps_path)), "smaps"
    if not data:
        raise _vanished_or_zombie(pid, root, name)
    return parse_smaps_rollup(data, rollup_path), "smaps_rollup"


def read_smaps(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> list[SmapsEntry]:
    path, data = _read_proc(pid, root, "smaps", name)
    return parse_smaps(data, path)


def read_maps(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> list[Mapping]:
    path, data = _read_proc(pid, root, "maps", name)
    return parse_maps(data, path)


def count_mappings(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> tuple[int, int]:
    """(VMAs, writable private VMAs) from /proc/PID/maps, which takes no page-table walk."""
    _path, data = _read_proc(pid, root, "maps", name)
    return count_maps_lines(data)


def read_maps_counts(
    pid: int, span: int, root: Path = DEFAULT_ROOT, name: str | None = None
) -> tuple[int, int, int]:
    """(VMAs, writable private VMAs, address regions) from one read of /proc/PID/maps."""
    path = proc_dir(pid, root) / "maps"
    with _translating(pid, root, path, name):
        data = _read(path)
    return (*count_maps_lines(data), count_address_regions(data, span))


def count_open_files(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> int:
    path = proc_dir(pid, root) / "fd"
    with _translating(pid, root, path, name):
        return len(os.listdir(path))


def read_cmdline(pid: int, root: Path = DEFAULT_ROOT) -> tuple[str, ...]:
    _path, data = _read_proc(pid, root, "cmdline")
    return parse_cmdline(data)


def read_signal_masks(
    pid: int, root: Path = DEFAULT_ROOT, name: str | None = None
) -> tuple[int, int]:
    """``(SigIgn, SigCgt)`` from /proc/PID/status (``procparse.parse_signal_masks``)."""
    path, data = _read_proc(pid, root, "status", name)
    if not data:
        raise _vanished_or_zombie(pid, root, name)
    return parse_signal_masks(data, path)


def read_mapped_mpm(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> str | None:
    """The apache2 MPM module mapped in the process (``event``, ``worker``, ``prefork``), or
    None when none is (an MPM built in); read from /proc/PID/maps."""
    _path, data = _read_proc(pid, root, "maps", name)
    return parse_mapped_mpm(data)


def read_exe(pid: int, root: Path = DEFAULT_ROOT) -> str | None:
    """The executable's path, or None where the kernel will not say (other users, kthreads)."""
    path = proc_file(pid, root, "exe")
    try:
        target = os.readlink(path)
    except OSError:
        # A captured fixture tree stores the link target in a plain file.
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace").strip() or None
        except OSError:
            return None
    return target


def read_proc_cgroup(pid: int, root: Path = DEFAULT_ROOT) -> list[tuple[int, tuple[str, ...], str]]:
    _path, data = _read_proc(pid, root, "cgroup")
    return parse_proc_cgroup(data)


def read_environ_var(pid: int, key: str, root: Path = DEFAULT_ROOT) -> str | None:
    """One variable of the process's environment, or None when unset or unreadable."""
    try:
        data = _read(proc_dir(pid, root) / "environ")
    except OSError:
        return None
    prefix = key.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def iter_pids(root: Path = DEFAULT_ROOT) -> list[int]:
    """Every thread-group id: /proc lists processes only, never their threads."""
    try:
        names = os.listdir(root / "proc")
    except OSError as err:
        hint = (
            None
            if root == DEFAULT_ROOT
            else "--root must mirror / with proc/ and sys/ (capture one with python -m capacity.testing.capture)"
        )
        raise CapplanError(f"cannot list {root / 'proc'}: {err.strerror}", hint) from None
    return sorted(int(name) for name in names if name.isdigit())


def read_meminfo(root: Path = DEFAULT_ROOT) -> HostMemory:
    path = root / "proc" / "meminfo"
    try:
        data = _read(path)
    except OSError as err:
        raise CapplanError(f"cannot read {path}: {err.strerror}") from None
    return parse_meminfo(data, str(path))


def read_text_or(path: Path, default: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return default


def read_thp_mode(root: Path = DEFAULT_ROOT) -> str:
    path = root / "sys" / "kernel" / "mm" / "transparent_hugepage" / "enabled"
    try:
        return parse_bracketed_choice(_read(path))
    except OSError:
        return "unavailable"


def read_ksm_mode(root: Path = DEFAULT_ROOT) -> str:
    """KSM merges identical pages across processes: it changes what 'shared' means."""
    value = read_text_or(root / "sys" / "kernel" / "mm" / "ksm" / "run", "")
    return {"0": "off", "1": "on", "2": "unmerge"}.get(value, "unavailable")


def read_kernel_release(root: Path = DEFAULT_ROOT) -> str:
    return read_text_or(root / "proc" / "sys" / "kernel" / "osrelease", "unknown")


def read_slab_object_sizes(root: Path = DEFAULT_ROOT) -> dict[str, int]:
    """Object sizes from /proc/slabinfo (root only); empty when unreadable."""
    try:
        data = _read(root / "proc" / "slabinfo")
    except OSError:
        return {}
    sizes: dict[str, int] = {}
    for line in data.splitlines()[2:]:
        parts = line.split()
        if len(parts) > 3:
            with contextlib.suppress(ValueError):
                sizes[parts[0].decode("ascii", "replace")] = int(parts[3])
    return sizes
