"""The page cache of the files a workload holds open or maps, read file by file (issue 14).

A process that reads a file with read() keeps its data in the page cache, outside its own
mappings: no smaps or pagemap figure shows it. Where the workload has a memory cgroup of
its own, that cgroup's file LRU lists and refault counters say how much of it there is and
how hot it is (``Snapshot.cgroup.stat``, classified by ``model/filecache``). For a workload
without one, this module probes each file it holds open (``/proc/PID/fd``) or maps
(``/proc/PID/maps``), once, after the samples:

* **Which files.** Every entry is first opened with ``O_PATH`` through the process's own
  link (``/proc/PID/fd/N``, ``/proc/PID/map_files/START-END``): that opens nothing, so a
  device, FIFO or socket is never opened for reading. Only a regular file on a disk-backed
  file system goes on (``fstat``; ``fstatfs`` leaves out tmpfs, hugetlbfs, /proc, /sys and
  the other in-memory file systems: their pages are shared memory, not reclaimable cache);
  it is reopened read-only through ``/proc/self/fd`` with ``O_NOATIME`` (where the kernel
  allows it: the file's owner or CAP_FOWNER) and ``O_NONBLOCK``. Each file counts once
  (device and inode), up to ``max_files`` files and ``max_bytes_per_file`` bytes of each.
* **How much of it is cached.** ``cachestat(2)`` (syscall 451, Linux 6.5+): cached, dirty,
  under writeback, evicted and recently evicted pages of a range of the file, without
  mapping it. Without it (ENOSYS: the guest's 6.1), ``mincore(2)`` on a fresh read-only
  shared mapping of the file: residency only.
* **How hot.** As root: the cached pages' flags. The probe maps the file read-only with
  ``MADV_RANDOM`` (no readahead), touches only the pages mincore says are resident (a
  fault on a cached page reads nothing from disk and does not mark the page accessed: the
  active flag reads as the kernel left it, checked on this host by probing one file three
  times), reads their frames from ``/proc/self/pagemap`` and their flags from
  ``/proc/kpageflags``: ``KPF_ACTIVE`` (bit 6) is the active LRU list. A page read once
  by read() sits on the inactive list, referenced; a second access promotes it to the
  active list (``folio_mark_accessed``, mm/swap.c). Without root the flags are unknown.
  Touching a mapped page past the end of a file that was truncated meanwhile raises
  SIGBUS, which no Python code survives: so the touching runs in a helper process of its
  own (``python -m capacity.measure.filecache``, handed each file's descriptor over a unix
  socket, SIGKILLed when capplan dies); a helper killed by SIGBUS costs that file its
  flags (counted hot), and a new helper takes the next file.

The syscalls go through ctypes with errno checked; the parsers (``parse_cachestat``,
``resident_pages``, ``active_count``) are pure and tested on captured bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import mmap
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from capacity.cache_records import CachedFile, FileProbe, Hotness, ProbeCall
from capacity.errors import CapplanError
from capacity.measure.children import die_with_parent
from capacity.measure.procfs import DEFAULT_ROOT, read_maps
from capacity.measure.sharing import ENTRY, PAGE_SIZE, U64, coalesce, gather_spans

MAX_FILES = 1000
MAX_BYTES_PER_FILE = 4 * 1024**3  # 4 GiB of each file: one million page flags at most
# Cached bytes whose flags one probe reads, all files together (the touching costs about a
# second per GiB here); files past it are probed for residency only, and count as hot.
MAX_FLAG_BYTES = 16 * 1024**3

SYS_CACHESTAT = 451  # the same number on every architecture (include/uapi/asm-generic)
CACHESTAT_FIELDS = ("cache", "dirty", "writeback", "evicted", "recently_evicted")
KPF_ACTIVE = 6
PM_PRESENT = 1 << 63
PM_PFN_MASK = (1 << 55) - 1
MADV_RANDOM = 1

# fstatfs f_type of file systems whose "files" are not reclaimable page cache, or not files
# (include/uapi/linux/magic.h): their pages are shared memory or kernel state.
IN_MEMORY_FILESYSTEMS = frozenset(
    {
        0x01021994,  # tmpfs (and devtmpfs, shm, memfd)
        0x958458F6,  # hugetlbfs
        0x858458F6,  # ramfs
        0x00009FA0,  # proc
        0x62656572,  # sysfs
        0x0027E0EB,  # cgroup
        0x63677270,  # cgroup2
        0x64626720,  # debugfs
        0x74726163,  # tracefs
        0x73636673,  # securityfs
        0x00001CD1,  # devpts
        0xCAFE4A11,  # bpf
        0x09041934,  # anon_inode_fs
        0x5345434D,  # secretmem
        0x42494E4D,  # binfmt_misc
        0x6E736673,  # nsfs
    }
)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


# --------------------------------------------------------------------------- pure parsers


def parse_cachestat(raw: bytes, page_size: int = PAGE_SIZE) -> dict[str, int]:
    """``struct cachestat`` (five native u64 page counts, include/uapi/linux/mman.h) as
    bytes by field name: cache, dirty, writeback, evicted, recently_evicted."""
    if len(raw) != 8 * len(CACHESTAT_FIELDS):
        raise ValueError(f"struct cachestat is 40 bytes, got {len(raw)}")
    counts = struct.unpack(f"={len(CACHESTAT_FIELDS)}Q", raw)
    return {name: count * page_size for name, count in zip(CACHESTAT_FIELDS, counts, strict=True)}


def resident_pages(vector: bytes) -> list[int]:
    """The page indexes mincore(2) reports resident: bit 0 of each byte (the other bits are
    reserved and may be set, mm/mincore.c)."""
    return [index for index, byte in enumerate(vector) if byte & 1]


def active_count(pagemap: U64, flags_of: dict[int, int]) -> tuple[int, int]:
    """(present pages, active pages) of raw pagemap entries, given each frame's
    kpageflags; a present page with frame 0 is hidden (not root) and is not counted."""
    present = (pagemap & np.uint64(PM_PRESENT)) != 0
    frames = (pagemap[present] & np.uint64(PM_PFN_MASK)).tolist()
    seen = [frame for frame in frames if frame]
    active = sum(1 for frame in seen if (flags_of.get(frame, 0) >> KPF_ACTIVE) & 1)
    return len(seen), active


def filesystem_type(raw: bytes) -> int:
    """``f_type`` of a ``struct statfs``: its first field, a native long."""
    return int(struct.unpack_from("=q" if ctypes.sizeof(ctypes.c_long) == 8 else "=i", raw)[0])


# --------------------------------------------------------------------------- system calls


def cachestat(fd: int, length: int, page_size: int = PAGE_SIZE) -> dict[str, int] | None:
    """The page-cache state of the file's first ``length`` bytes (0: all of it), in bytes;
    None where the kernel has no cachestat (ENOSYS: before 6.5)."""
    span = _CachestatRange(0, length)
    raw = ctypes.create_string_buffer(8 * len(CACHESTAT_FIELDS))
    result = _libc.syscall(
        ctypes.c_long(SYS_CACHESTAT),
        ctypes.c_long(fd),
        ctypes.byref(span),
        raw,
        ctypes.c_ulong(0),
    )
    if result != 0:
        if ctypes.get_errno() == errno.ENOSYS:
            return None
        _raise_errno("cachestat")
    return parse_cachestat(raw.raw, page_size)


def _fs_type(fd: int) -> int:
    raw = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.fstatfs(fd, raw) != 0:
        _raise_errno("fstatfs")
    return filesystem_type(raw.raw)


@contextlib.contextmanager
def _mapped(fd: int, length: int) -> Iterator[int]:
    """A fresh read-only shared mapping of the file's first ``length`` bytes, without
    readahead; unmapped however the block ends."""
    address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        _raise_errno("mmap")
    assert address is not None
    try:
        if _libc.madvise(address, length, MADV_RANDOM) != 0:
            _raise_errno("madvise")
        yield address
    finally:
        _libc.munmap(address, length)


def _mincore(address: int, length: int, page_size: int) -> bytes:
    pages = (length + page_size - 1) // page_size
    vector = ctypes.create_string_buffer(pages)
    if _libc.mincore(address, length, vector) != 0:
        _raise_errno("mincore")
    return vector.raw[:pages]


def _active_pages(address: int, resident: Sequence[int], page_size: int) -> int | None:
    """How many of the ``resident`` pages of a mapping at ``address`` are on the active
    list; None when the frames or their flags cannot be read (not root)."""
    if not resident:
        return 0
    touched = 0
    for index in resident:  # a cached page: mapped from the cache, nothing read from disk
        touched |= ctypes.c_ubyte.from_address(address + index * page_size).value
    first, last = resident[0], resident[-1]
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            raw = os.pread(
                pagemap.fileno(),
                (last - first + 1) * ENTRY,
                (address // page_size + first) * ENTRY,
            )
        entries = np.frombuffer(raw, dtype=np.uint64)
        wanted = np.asarray(resident, dtype=np.int64) - first
        entries = entries[wanted[wanted < len(entries)]]
        present = (entries & np.uint64(PM_PRESENT)) != 0
        frames = np.unique(entries[present] & np.uint64(PM_PFN_MASK))
        if len(frames) == 0 or not np.any(frames):
            return None  # frames hidden: not CAP_SYS_ADMIN
        starts, lengths = coalesce(frames)
        fd = os.open("/proc/kpageflags", os.O_RDONLY | os.O_CLOEXEC)
        try:
            flags = gather_spans(
                frames, starts, lengths, lambda at, count: os.pread(fd, count * ENTRY, at * ENTRY)
            )
        finally:
            os.close(fd)
    except OSError:
        return None
    flags_of = dict(zip(frames.tolist(), flags.tolist(), strict=True))
    return active_count(entries, flags_of)[1]


# --------------------------------------------------------------------------- one file


def _reopen(path_fd: int) -> int:
    """The O_PATH file opened read-only for real, without touching its access time where
    the kernel lets us (O_NOATIME: the owner or CAP_FOWNER, else EPERM)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    link = f"/proc/self/fd/{path_fd}"
    try:
        return os.open(link, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(link, flags)


def resident_and_active(
    fd: int, length: int, page_size: int = PAGE_SIZE, read_flags: bool = True
) -> tuple[int, int | None]:
    """(resident pages, active pages or None) of the file's first ``length`` bytes, from a
    fresh mapping: mincore, and with ``read_flags`` the page flags (this touches the
    resident pages: run it where a SIGBUS kills nothing but the helper)."""
    with _mapped(fd, length) as address:
        resident = resident_pages(_mincore(address, length, page_size))
        active = _active_pages(address, resident, page_size) if read_flags else None
    return len(resident), active


FlagsReader = Callable[[int, int], tuple[int, int | None] | None]


def probe_file(
    fd: int,
    path: str,
    mapped: bool,
    *,
    max_bytes: int = MAX_BYTES_PER_FILE,
    page_size: int = PAGE_SIZE,
    use_cachestat: bool = True,
    flags: FlagsReader | None = None,
) -> tuple[CachedFile, ProbeCall | None]:
    """One open regular file's page cache over its first ``max_bytes`` bytes, and the call
    that read it (None for an empty file: nothing to probe). ``flags`` reads the resident
    and active pages in a helper (``FlagsHelper``); None: residency only, read here
    (mincore touches nothing)."""
    info = os.fstat(fd)
    size = info.st_size
    probed = min(size, max_bytes)
    counts = cachestat(fd, probed) if use_cachestat and probed > 0 else None
    active: int | None = None
    cached: int | None = None
    if probed > 0 and (counts is None or (flags is not None and counts["cache"] > 0)):
        found = flags(fd, probed) if flags is not None else None
        if found is None:  # no helper, or it died on this file: residency only
            found = resident_and_active(fd, probed, page_size, read_flags=False)
        cached = found[0] * page_size
        active = None if found[1] is None else found[1] * page_size
    call: ProbeCall | None = None
    if counts is not None:
        call, cached_bytes = "cachestat", counts["cache"]
    else:
        call, cached_bytes = ("mincore" if probed > 0 else None), cached or 0
    return (
        CachedFile(
            path=path,
            device=info.st_dev,
            inode=info.st_ino,
            size_bytes=size,
            probed_bytes=probed,
            cached_bytes=cached_bytes,
            mapped=mapped,
            active_bytes=None if active is None else min(active, cached_bytes),
            dirty_bytes=None if counts is None else counts["dirty"],
            writeback_bytes=None if counts is None else counts["writeback"],
            evicted_bytes=None if counts is None else counts["evicted"],
            recently_evicted_bytes=None if counts is None else counts["recently_evicted"],
        ),
        call,
    )


# --------------------------------------------------------------------------- the helper


class FlagsHelper:
    """The process that touches the cached pages of each file to read their flags, so that
    a SIGBUS (a file truncated under the mapping) kills it and not capplan.

    Started on first use, with ``PR_SET_PDEATHSIG`` (``measure/children``); each request
    hands it the file's descriptor (SCM_RIGHTS) and the length to probe, and it answers
    (resident pages, active pages). A helper that dies or stalls past ``timeout`` is killed
    and that file gets no flags; the next file starts a new one, at most ``MAX_STARTS``
    times in a probe. Always stopped when the block ends.
    """

    MAX_STARTS = 3

    def __init__(self, page_size: int = PAGE_SIZE, timeout: float = 120.0) -> None:
        self.page_size = page_size
        self.timeout = timeout
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None

    def __enter__(self) -> FlagsHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def usable() -> bool:
        """Whether page flags can be read at all: root, and /proc/kpageflags readable."""
        return os.geteuid() == 0 and os.access("/proc/kpageflags", os.R_OK)

    def _start(self) -> bool:
        if self.starts >= self.MAX_STARTS:
            return False
        self.starts += 1
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "capacity.measure.filecache", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 (prctl only, looked up before)
            )
        except OSError:
            mine.close()
            return False
        finally:
            theirs.close()
        mine.settimeout(self.timeout)
        self._socket = mine
        return True

    def read(self, fd: int, length: int) -> tuple[int, int | None] | None:
        """(resident pages, active pages or None) of the file's first ``length`` bytes, or
        None when the helper could not answer (it is then stopped)."""
        if self._socket is None and not self._start():
            return None
        assert self._socket is not None
        try:
            socket.send_fds(self._socket, [struct.pack("=QQ", length, self.page_size)], [fd])
            reply = self._socket.recv(16)
        except OSError:  # a helper that died (BrokenPipe, reset) or stalled (timeout)
            reply = b""
        if len(reply) != 16:
            self.stop()
            return None
        resident, active = struct.unpack("=qq", reply)
        if resident < 0:
            return None
        return resident, None if active < 0 else active

    def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait()
            self._process = None


def serve(connection: int) -> None:
    """The helper's loop: one file per message, until capplan closes the socket."""
    with socket.socket(fileno=connection) as channel:
        while True:
            try:
                message, fds, _flags, _address = socket.recv_fds(channel, 16, 1)
            except OSError:
                return
            if len(message) != 16 or len(fds) != 1:
                for extra in fds:
                    os.close(extra)
                return
            length, page_size = struct.unpack("=QQ", message)
            try:
                resident, active = resident_and_active(fds[0], length, page_size)
            except OSError:
                resident, active = -1, None
            finally:
                os.close(fds[0])
            channel.send(struct.pack("=qq", resident, -1 if active is None else active))


# --------------------------------------------------------------------------- the workload


def _entries(pid: int, root: Path) -> Iterator[tuple[str, str, bool]]:
    """(link to open with O_PATH, the name to show, mapped) for each open file descriptor
    and each file mapping of ``pid``; a process that vanished yields nothing more."""
    proc = root / "proc" / str(pid)
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(proc / "fd"), key=lambda n: int(n) if n.isdigit() else 0):
            link = str(proc / "fd" / name)
            with contextlib.suppress(OSError):
                yield link, os.readlink(link), False
    with contextlib.suppress(CapplanError):
        for mapping in read_maps(pid, root):
            if mapping.inode == 0 or not mapping.path.startswith("/"):
                continue
            link = str(proc / "map_files" / f"{mapping.start:x}-{mapping.end:x}")
            yield link, mapping.path, True


def _open_path(link: str, shown: str, mapped: bool) -> int:
    """An O_PATH descriptor of the entry's file: through the process's own link (the very
    file, even deleted or renamed); for a mapping whose map_files link we may not follow
    (it needs CAP_SYS_ADMIN), the path maps names."""
    flags = os.O_PATH | os.O_CLOEXEC
    try:
        return os.open(link, flags)
    except PermissionError:
        if not mapped:
            raise
        return os.open(shown, flags | os.O_NOFOLLOW)


def probe_files(
    pids: Sequence[int],
    root: Path = DEFAULT_ROOT,
    *,
    max_files: int = MAX_FILES,
    max_bytes_per_file: int = MAX_BYTES_PER_FILE,
    page_size: int = PAGE_SIZE,
) -> FileProbe:
    """Probe the page cache of every regular file the ``pids`` hold open or map, each file
    once (device and inode), at most ``max_files`` files; see the module docstring."""
    with FlagsHelper(page_size) as helper:
        return _probe_files(pids, root, max_files, max_bytes_per_file, page_size, helper)


def _probe_files(
    pids: Sequence[int],
    root: Path,
    max_files: int,
    max_bytes_per_file: int,
    page_size: int,
    helper: FlagsHelper,
) -> FileProbe:
    began = time.perf_counter()
    use_cachestat = True
    read_flags = helper.usable()
    flag_bytes = 0
    seen: dict[tuple[int, int], CachedFile] = {}
    skipped = truncated = over_limit = 0
    calls: set[ProbeCall] = set()
    for pid in pids:
        for link, shown, mapped in _entries(pid, root):
            try:
                path_fd = _open_path(link, shown, mapped)
            except OSError:
                skipped += 1
                continue
            try:
                info = os.fstat(path_fd)
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    if mapped and not seen[key].mapped:
                        seen[key] = dataclasses.replace(seen[key], mapped=True)
                    continue
                if not stat.S_ISREG(info.st_mode) or _fs_type(path_fd) in IN_MEMORY_FILESYSTEMS:
                    skipped += 1
                    continue
                if len(seen) >= max_files:
                    over_limit += 1
                    continue
                fd = _reopen(path_fd)
            except OSError:
                skipped += 1
                continue
            finally:
                os.close(path_fd)
            try:
                found, call = probe_file(
                    fd,
                    shown,
                    mapped,
                    max_bytes=max_bytes_per_file,
                    page_size=page_size,
                    use_cachestat=use_cachestat,
                    flags=helper.read if read_flags else None,
                )
            except OSError:
                skipped += 1
                continue
            finally:
                os.close(fd)
            if call is not None:
                calls.add(call)
                use_cachestat = call == "cachestat"
            if found.active_bytes is not None:
                flag_bytes += found.cached_bytes
                read_flags = flag_bytes < MAX_FLAG_BYTES
            truncated += found.size_bytes > found.probed_bytes
            seen[key] = found
    files = sorted(
        (f for f in seen.values() if f.cached_bytes > 0), key=lambda f: (-f.cached_bytes, f.path)
    )
    unflagged = sum(1 for f in files if f.active_bytes is None)
    hotness: Hotness = "kpageflags" if files and unflagged < len(files) else "unknown"
    note = ""
    if files and hotness == "unknown":
        note = (
            "the active flag of the cached pages could not be read (/proc/kpageflags and "
            "frame numbers need root): every cached byte of these files counts as hot"
        )
    elif unflagged:
        note = (
            f"{unflagged} of {len(files)} files without page flags (past the probe's "
            f"{MAX_FLAG_BYTES // 1024**3} GiB of flags, or the helper died on them): "
            "every cached byte of those counts as hot"
        )
    return FileProbe(
        call="mincore" if "mincore" in calls else "cachestat",
        hotness=hotness,
        files=tuple(files),
        files_probed=len(seen),
        skipped=skipped,
        truncated=truncated,
        over_limit=over_limit,
        max_files=max_files,
        max_bytes_per_file=max_bytes_per_file,
        read_seconds=time.perf_counter() - began,
        note=note,
    )


if __name__ == "__main__":
    serve(int(sys.argv[1]))
