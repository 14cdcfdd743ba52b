"""Memory cgroups, v1 and v2, read into one shape.

A workload's cgroup answers two questions no per-process figure can: what limit the kernel
will enforce (the budget may be smaller than MemTotal), and, when the cgroup holds only the
workload (a systemd service has one), how much kernel memory the workload really costs.

Most hosts are pure v2 (``/sys/fs/cgroup`` is cgroup2). Some, like capplan's own CI host,
mount the v1 memory controller beside a v2 hierarchy that has no memory controller; then the
v1 hierarchy is the one that accounts memory. We detect which from /proc/self/mounts and
/proc/PID/cgroup and never assume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from capacity.errors import CapplanError
from capacity.measure.procfs import DEFAULT_ROOT, read_proc_cgroup, read_stat
from capacity.records import CgroupMemory

# v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712 on x86-64).
V1_UNLIMITED_THRESHOLD = 2**62

# v1 memory.stat names -> the v2 names used in CgroupMemory.stat. v1 has no kernel-memory
# breakdown in memory.stat; memory.kmem.usage_in_bytes gives its total as "kernel".
_V1_STAT_NAMES = {
    "total_rss": "anon",
    "total_cache": "file",
    "total_shmem": "shmem",
    "total_mapped_file": "file_mapped",
    "total_swap": "swap",
    "total_rss_huge": "anon_thp",
    "total_inactive_file": "inactive_file",
    # The file LRU lists and refaults (issue 14: hot and cold page cache). The refault
    # counters are event counts (pages), not bytes, where v1 prints them (6.18 does, without
    # workingset_activate_file); a v1 kernel without them leaves them out.
    "total_active_file": "active_file",
    "total_workingset_refault_file": "workingset_refault_file",
    "total_workingset_activate_file": "workingset_activate_file",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """Where the memory-accounting hierarchies are mounted on this host."""

    v2_mount: Path | None
    v2_memory: bool
    v1_memory_mount: Path | None
    # systemd's own v1 hierarchy (no controller, ``name=systemd``): on a v1 or hybrid host
    # it names each unit's cgroup even where the memory controller does not follow units.
    v1_systemd_mount: Path | None = None

    @property
    def version(self) -> str:
        if self.v2_memory:
            return "v2"
        if self.v1_memory_mount is not None:
            return "v1" if self.v2_mount is None else "v1 (memory) + v2"
        return "none"


def parse_mounts(data: bytes, root: Path = DEFAULT_ROOT) -> Layout:
    """Find the cgroup2 mount, the v1 memory controller's mount and systemd's v1 hierarchy
    in /proc/self/mounts."""
    v2_mount: Path | None = None
    v1_memory: Path | None = None
    v1_systemd: Path | None = None
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mount_point, fstype, options = parts[1], parts[2], parts[3].split(",")
        local = root / mount_point.lstrip("/")
        if fstype == "cgroup2" and v2_mount is None:
            v2_mount = local
        elif fstype == "cgroup" and "memory" in options and v1_memory is None:
            v1_memory = local
        elif fstype == "cgroup" and "name=systemd" in options and v1_systemd is None:
            v1_systemd = local
    v2_memory = False
    if v2_mount is not None:
        controllers = _read_text(v2_mount / "cgroup.controllers") or ""
        v2_memory = "memory" in controllers.split()
    return Layout(
        v2_mount=v2_mount,
        v2_memory=v2_memory,
        v1_memory_mount=v1_memory,
        v1_systemd_mount=v1_systemd,
    )


def detect_layout(root: Path = DEFAULT_ROOT) -> Layout:
    for name in ("proc/self/mounts", "proc/mounts"):
        try:
            return parse_mounts((root / name).read_bytes(), root)
        except OSError:
            continue
    return Layout(v2_mount=None, v2_memory=False, v1_memory_mount=None)


def memory_cgroup_of(
    pid: int, layout: Layout, root: Path = DEFAULT_ROOT
) -> tuple[int, Path] | None:
    """The (version, directory) of the memory cgroup that accounts ``pid``, if any."""
    try:
        entries = read_proc_cgroup(pid, root)
    except CapplanError:  # a vanished process simply has no cgroup to report
        return None
    if layout.v2_memory and layout.v2_mount is not None:
        for hierarchy, _controllers, path in entries:
            if hierarchy == 0:
                return 2, layout.v2_mount / path.lstrip("/")
    if layout.v1_memory_mount is not None:
        for _hierarchy, controllers, path in entries:
            if "memory" in controllers:
                return 1, layout.v1_memory_mount / path.lstrip("/")
    return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except (OSError, ValueError):  # ValueError: a NUL in a mount point read from mounts
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None or text == "max":
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def parse_memory_stat(data: str) -> dict[str, int]:
    """``key value`` lines of memory.stat, as a dict."""
    stat: dict[str, int] = {}
    for line in data.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                stat[parts[0]] = int(parts[1])
    return stat


def _shown(directory: Path, display_root: Path | None) -> str:
    """A cgroup directory as the kernel names it (``/system.slice/x.service``)."""
    if display_root is not None:
        with contextlib.suppress(ValueError):
            return "/" + str(directory.relative_to(display_root)).lstrip(".")
    return str(directory)


def read_cgroup_memory(
    version: int, directory: Path, display_root: Path | None = None
) -> CgroupMemory | None:
    """One cgroup's usage, limit and breakdown; None when it cannot be read."""
    shown = _shown(directory, display_root)
    if version == 2:
        current = _read_int(directory / "memory.current")
        if current is None:
            return None
        stat = parse_memory_stat(_read_text(directory / "memory.stat") or "")
        limit, binding = _effective_v2_limit(directory, display_root)
        return CgroupMemory(
            path=shown,
            version=2,
            current_bytes=current,
            limit_bytes=limit,
            peak_bytes=_read_int(directory / "memory.peak"),  # since Linux 5.19
            stat=stat,
            limit_path=None if binding is None else _shown(binding, display_root),
        )
    usage = _read_int(directory / "memory.usage_in_bytes")
    if usage is None:
        return None
    raw = parse_memory_stat(_read_text(directory / "memory.stat") or "")
    stat = {new: raw[old] for old, new in _V1_STAT_NAMES.items() if old in raw}
    kmem = _read_int(directory / "memory.kmem.usage_in_bytes")
    if kmem is not None:
        stat["kernel"] = kmem
    # v1 charges socket buffers to a counter of their own, outside usage_in_bytes, and only
    # once memory.kmem.tcp.limit_in_bytes has been written (mm/memcontrol-v1.c, tcpmem).
    tcp = _read_int(directory / "memory.kmem.tcp.usage_in_bytes")
    if tcp is not None:
        stat["sock"] = tcp
    own_limit = _read_int(directory / "memory.limit_in_bytes")
    limit = raw.get("hierarchical_memory_limit", own_limit)
    if limit is not None and limit >= V1_UNLIMITED_THRESHOLD:
        limit = None
    return CgroupMemory(
        path=shown,
        version=1,
        current_bytes=usage,
        limit_bytes=limit,
        peak_bytes=_read_int(directory / "memory.max_usage_in_bytes"),
        stat=stat,
        limit_path=(
            shown
            if limit is None or limit == own_limit
            else _v1_limit_owner(directory, limit, display_root)
        ),
    )


def _v1_limit_owner(directory: Path, limit: int, stop: Path | None) -> str | None:
    """Which ancestor sets a v1 hierarchical_memory_limit (None when we cannot tell)."""
    current = directory.parent
    while current != current.parent:
        if _read_int(current / "memory.limit_in_bytes") == limit:
            return _shown(current, stop)
        if stop is not None and current == stop:
            return None
        current = current.parent
    return None


def _effective_v2_limit(directory: Path, stop: Path | None) -> tuple[int | None, Path | None]:
    """The smallest memory.max on the way up, and the cgroup that sets it: a parent's limit
    binds its children too."""
    limit: int | None = None
    binding: Path | None = None
    current = directory
    while True:
        value = _read_int(current / "memory.max")
        if value is not None and (limit is None or value < limit):
            limit, binding = value, current
        parent = current.parent
        if parent == current or not (parent / "memory.max").exists():
            return limit, binding
        if stop is not None and current == stop:
            return limit, binding
        current = parent


def cgroup_pids(directory: Path) -> set[int]:
    """Processes directly in the cgroup (not in its children)."""
    text = _read_text(directory / "cgroup.procs") or ""
    return {int(line) for line in text.split() if line.isdigit()}


def cgroup_pids_recursive(directory: Path) -> set[int]:
    pids = cgroup_pids(directory)
    with contextlib.suppress(OSError):
        for child in directory.iterdir():
            if child.is_dir():
                pids |= cgroup_pids_recursive(child)
    return pids


def workload_cgroup(
    pids: list[int], layout: Layout, root: Path = DEFAULT_ROOT
) -> CgroupMemory | None:
    """The memory cgroup of the workload's first process, marked ``own`` when it holds
    nothing but the workload (then its kernel figures can calibrate the model)."""
    if not pids:
        return None
    found = memory_cgroup_of(pids[0], layout, root)
    if found is None:
        return None
    version, directory = found
    mount = layout.v2_mount if version == 2 else layout.v1_memory_mount
    return cgroup_holding(version, directory, mount, pids)


def cgroup_holding(
    version: int, directory: Path, mount: Path | None, pids: list[int]
) -> CgroupMemory | None:
    """The memory cgroup at ``directory``, marked ``own`` when everything in it (and below)
    is one of ``pids``: a selected cgroup (``--cgroup``, ``--unit``) or the workload's."""
    memory = read_cgroup_memory(version, directory, mount)
    if memory is None:
        return None
    is_root = mount is not None and directory == mount
    members = cgroup_pids_recursive(directory)
    own = bool(members) and not is_root and members <= set(pids)
    return dataclasses.replace(memory, own=own)


# --------------------------------------------------------------------------- own cgroups


class CgroupError(CapplanError):
    """capplan could not create, fill or remove a cgroup of its own."""


@dataclasses.dataclass
class OwnCgroup:
    """A memory cgroup capplan created, and must remove, for the processes it starts."""

    version: int
    path: Path
    mount: Path

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as err:
            raise CgroupError(f"cannot move pid {pid} into {self.path}: {err.strerror}") from None

    def join_self(self) -> None:
        """Move the calling process in; meant for ``preexec_fn`` so a child starts inside
        before it execs and allocates (memory charged before a move stays behind in v2)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def pids(self) -> set[int]:
        return cgroup_pids_recursive(self.path)

    def child(self, name: str) -> OwnCgroup:
        """A cgroup inside this one (one per launched instance), removed with it.

        v2 allows processes only in leaves, and a child has a memory controller only when
        its parent delegates it: we enable it here, before any process joins.
        """
        if self.version == 2:
            controllers = (_read_text(self.path / "cgroup.subtree_control") or "").split()
            if "memory" not in controllers:
                _write(self.path / "cgroup.subtree_control", "+memory")
        path = self.path / name
        try:
            path.mkdir()
        except OSError as err:
            raise CgroupError(f"cannot create {path}: {err.strerror}") from None
        return OwnCgroup(version=self.version, path=path, mount=self.mount)

    def memory(self) -> CgroupMemory | None:
        found = read_cgroup_memory(self.version, self.path, self.mount)
        return dataclasses.replace(found, own=True) if found is not None else None

    def set_limit(self, limit_bytes: int) -> None:
        """A hard limit with no swap, so that exceeding it means the OOM killer, not swap."""
        if self.version == 2:
            _write(self.path / "memory.max", str(limit_bytes))
            if (self.path / "memory.swap.max").exists():
                _write(self.path / "memory.swap.max", "0")
        else:
            _write(self.path / "memory.limit_in_bytes", str(limit_bytes))
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                _write(self.path / "memory.memsw.limit_in_bytes", str(limit_bytes))

    def oom_kills(self) -> int:
        """How many processes the cgroup's OOM killer has killed (v2 memory.events,
        v1 memory.oom_control's oom_kill line, since Linux 4.13)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return parse_memory_stat(_read_text(self.path / name) or "").get("oom_kill", 0)

    def directories(self) -> list[Path]:
        """This cgroup and every cgroup inside it, deepest first."""
        found = [self.path]
        with contextlib.suppress(OSError):
            found.extend(p for p in self.path.rglob("*") if p.is_dir())
        return sorted(found, key=lambda p: -len(p.parts))

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL everything inside until the cgroup is empty: v2's ``cgroup.kill`` where
        the kernel has it (Linux 5.14+), else each member of each ``cgroup.procs``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pids():
                return
            if self.version == 2 and (self.path / "cgroup.kill").exists():
                with contextlib.suppress(OSError, CgroupError):
                    _write(self.path / "cgroup.kill", "1")
            for directory in self.directories():
                for pid in cgroup_pids(directory):
                    kill_member(pid, directory)
            time.sleep(0.02)
        raise CgroupError(f"processes in {self.path} did not exit: {sorted(self.pids())}")

    def remove(self) -> None:
        """Kill what is left and remove the directory (children first)."""
        if not self.path.exists():
            return
        self.kill_all()
        for directory in self.directories():
            _rmdir_retry(directory)


def kill_member(pid: int, directory: Path) -> None:
    """SIGKILL ``pid`` only while it is still in ``directory``'s cgroup.procs: a pidfd pins
    the process, so a pid that exited and was reused between the read and the kill is not
    hit (pidfd_open, Linux 5.3+; without it, a plain kill)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        return
    try:
        if pid in cgroup_pids(directory):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise CgroupError(f"cannot write {text!r} to {path}: {err.strerror}") from None


def _rmdir_retry(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            # EBUSY for a moment after the last process exits, while the kernel tears it down.
            if time.monotonic() > deadline:
                raise CgroupError(f"cannot remove {path}: {err.strerror}") from None
            time.sleep(0.05)


def _candidate_parents(layout: Layout, root: Path) -> list[tuple[int, Path, Path]]:
    """Where we may create a cgroup: under our own cgroup first, then at the top."""
    candidates: list[tuple[int, Path, Path]] = []
    own = memory_cgroup_of(os.getpid(), layout, root)
    if layout.v2_memory and layout.v2_mount is not None:
        # v2 forbids processes in inner nodes: only a cgroup without processes (the top, or
        # an empty one) can take children with the memory controller.
        candidates.append((2, layout.v2_mount, layout.v2_mount))
        if own is not None and own[0] == 2 and own[1] != layout.v2_mount:
            candidates.append((2, own[1].parent, layout.v2_mount))
    if layout.v1_memory_mount is not None:
        if own is not None and own[0] == 1:
            candidates.append((1, own[1], layout.v1_memory_mount))
        candidates.append((1, layout.v1_memory_mount, layout.v1_memory_mount))
    return candidates


# ------------------------------------------------------------------- names of our cgroups

# ``PREFIX-PID-START-PIDNS-N``: the pid of the capplan process that made it, that process's
# start time (clock ticks after boot, /proc/PID/stat field 22: a reused pid has another),
# the inode of its pid namespace (a pid means nothing in another one), and a serial number.
# A later run tells from these alone whether the maker is alive (capacity.measure.leftovers).
OWN_NAME = re.compile(
    r"^(capplan(?:-[a-z]+)*)-([0-9]{1,10})-([0-9]{1,20})-([0-9]{1,20})-([0-9]{1,6})$"
)
# What capplan 0.x named them, ``PREFIX-PID-MILLISECONDS``: the pid alone.
LEGACY_NAME = re.compile(r"^(capplan(?:-[a-z]+)*)-([0-9]{1,10})-([0-9]{1,8})$")

_serial = itertools.count(1)


@dataclasses.dataclass(frozen=True, slots=True)
class RunIdentity:
    """Who made a cgroup: a capplan process, told apart from any later one with its pid."""

    pid: int
    start_ticks: int | None  # None: a legacy name, which did not record it
    pid_namespace: int | None


def pid_namespace(pid: int | str = "self") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def own_identity() -> RunIdentity:
    pid = os.getpid()
    try:
        start = read_stat(pid).start_ticks
    except CapplanError:
        start = 0
    return RunIdentity(pid=pid, start_ticks=start, pid_namespace=pid_namespace())


def own_cgroup_name(prefix: str = "capplan") -> str:
    me = own_identity()
    return f"{prefix}-{me.pid}-{me.start_ticks}-{me.pid_namespace or 0}-{next(_serial)}"


def parse_own_name(name: str) -> tuple[str, RunIdentity] | None:
    """(prefix, maker) for a name capplan gives its cgroups; None for any other name."""
    found = OWN_NAME.match(name)
    if found is not None:
        prefix, pid, start, namespace, _serial_number = found.groups()
        return prefix, RunIdentity(int(pid), int(start), int(namespace) or None)
    found = LEGACY_NAME.match(name)
    if found is not None:
        return found.group(1), RunIdentity(int(found.group(2)), None, None)
    return None


def candidate_parents(root: Path = DEFAULT_ROOT) -> list[tuple[int, Path, Path]]:
    """(version, parent, mount) for every place ``create_cgroup`` may put a cgroup."""
    return _candidate_parents(detect_layout(root), root)


def create_cgroup(prefix: str = "capplan", root: Path = DEFAULT_ROOT) -> OwnCgroup:
    """Create an empty memory cgroup for processes capplan starts; CgroupError when the
    host lets us create none (not root, or no memory controller)."""
    layout = detect_layout(root)
    reasons = []
    name = own_cgroup_name(prefix)
    for version, parent, mount in _candidate_parents(layout, root):
        if version == 2:
            controllers = (_read_text(parent / "cgroup.subtree_control") or "").split()
            if "memory" not in controllers:
                try:
                    _write(parent / "cgroup.subtree_control", "+memory")
                except CgroupError as err:
                    reasons.append(str(err))
                    continue
        path = parent / name
        try:
            path.mkdir()
        except OSError as err:
            reasons.append(f"cannot create {path}: {err.strerror}")
            continue
        if not (path / ("memory.current" if version == 2 else "memory.usage_in_bytes")).exists():
            with contextlib.suppress(OSError):
                path.rmdir()
            reasons.append(f"{path} has no memory controller")
            continue
        return OwnCgroup(version=version, path=path, mount=mount)
    raise CgroupError(
        "cannot create a memory cgroup"
        + (f": {reasons[-1]}" if reasons else ": no memory controller is mounted"),
        hint="run as root on a host with the memory controller (cgroup v2, or v1 'memory')",
    )


@contextlib.contextmanager
def temporary_cgroup(prefix: str = "capplan", root: Path = DEFAULT_ROOT) -> Iterator[OwnCgroup]:
    """A cgroup that is removed, with everything in it killed, however the block ends."""
    group = create_cgroup(prefix, root)
    try:
        yield group
    finally:
        group.remove()


def leftover_cgroups(prefix: str = "capplan", root: Path = DEFAULT_ROOT) -> list[Path]:
    """Cgroups named like ours anywhere in the memory hierarchies (tests check for none)."""
    layout = detect_layout(root)
    found: list[Path] = []
    for mount in (layout.v2_mount, layout.v1_memory_mount):
        if mount is None:
            continue
        with contextlib.suppress(OSError):
            found.extend(p for p in mount.rglob(f"{prefix}-*") if p.is_dir())
    return found
