"""Which processes are the workload, and starting (and always stopping) the ones we launch.

Selection follows ``ps -C NAME``: a process belongs to ``--cmd NAME`` when its comm name is
NAME (the kernel truncates comm to 15 characters), or when the basename of its argv[0] or of
its executable is NAME, so ``apache2``, ``php-fpm8.2`` and ``gunicorn`` all work.
``--pid PID`` takes that process and all its descendants. ``--cgroup PATH`` and ``--unit
NAME`` take every process in that cgroup and below (``capacity.measure.cgroupselect``).
Parents are the selected processes whose parent is not selected, the roots of the
selection's trees; every other selected process is a worker. /proc lists thread groups, not
threads, so each multi-threaded worker counts once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from capacity.errors import (
    CapplanError,
    Interrupted,  # noqa: F401  (re-exported: it used to live here)
    LaunchError,
    NoSuchProcess,
    ParseError,
    SelectionError,
    Terminated,  # noqa: F401
)
from capacity.measure import cgroupselect
from capacity.measure.procfs import (
    DEFAULT_ROOT,
    iter_pids,
    read_cmdline,
    read_exe,
    read_mapped_mpm,
    read_signal_masks,
    read_stat,
    read_status,
)
from capacity.measure.procparse import ProcStat
from capacity.measure.roles import apache_masters, classify
from capacity.roles_records import Classification, ProcessFacts

COMM_LENGTH = 15  # TASK_COMM_LEN - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Selector:
    """``--cmd NAME``, ``--pid PID``, ``--cgroup PATH`` or ``--unit NAME``: exactly one.

    ``str()`` gives the option as typed, which the model records (``Workload.selector``) and
    the hints repeat, so ``check`` and a re-run select the same way."""

    cmd: str | None = None
    pid: int | None = None
    cgroup: str | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.cmd, self.pid, self.cgroup, self.unit) if v is not None]
        if len(given) != 1:
            raise SelectionError(
                "give exactly one selector: --cmd NAME, --pid PID, --cgroup PATH or --unit NAME"
            )

    def __str__(self) -> str:
        if self.cmd is not None:
            return f"--cmd {self.cmd}"
        if self.pid is not None:
            return f"--pid {self.pid}"
        if self.cgroup is not None:
            return f"--cgroup {shlex.quote(self.cgroup)}"
        return f"--unit {shlex.quote(str(self.unit))}"

    @property
    def by_cgroup(self) -> bool:
        return self.cgroup is not None or self.unit is not None


def resolve_target(selector: Selector, root: Path = DEFAULT_ROOT) -> cgroupselect.Target | None:
    """The cgroup ``--cgroup`` or ``--unit`` names (None for the other selectors)."""
    if selector.cgroup is not None:
        return cgroupselect.resolve_cgroup(selector.cgroup, root)
    if selector.unit is not None:
        return cgroupselect.resolve_unit(selector.unit, root)
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One selected process at selection time: its identity and its role."""

    pid: int
    start_ticks: int
    ppid: int
    name: str
    role: str  # "parent" or "worker"


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    members: tuple[Member, ...]
    # Pids of a captured tree (--root) whose stat does not parse: maybe the workload's,
    # so they are reported as skipped rather than dropped without a word.
    unreadable: tuple[int, ...] = ()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(m.pid for m in self.members)

    @property
    def parents(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "parent")

    @property
    def workers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "worker")


def scan(root: Path = DEFAULT_ROOT, unparsed: list[int] | None = None) -> dict[int, ProcStat]:
    """Every live process's stat, skipping the ones that vanish while we look.

    A stat that does not parse is a process going away on the live host (the kernel
    writes it whole, in one read); in a captured tree it is damage, listed in ``unparsed``.
    """
    stats: dict[int, ProcStat] = {}
    for pid in iter_pids(root):
        try:
            stats[pid] = read_stat(pid, root)
        except ParseError:
            if unparsed is not None and root != DEFAULT_ROOT:
                unparsed.append(pid)
            continue
        except NoSuchProcess:
            continue
        except CapplanError:
            continue  # stat is world-readable; anything else is a process going away
    return stats


def _own_process(root: Path) -> set[int]:
    """capplan itself is never part of a workload (``--cmd python3`` would match it).

    Processes capplan starts (the demo, launched instances) are meant to be measured; a
    load generator is excluded by its caller through ``exclude``.
    """
    return {os.getpid()} if root == DEFAULT_ROOT else set()


def descendants(pid: int, stats: dict[int, ProcStat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, stat in stats.items():
        children.setdefault(stat.ppid, []).append(child)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def matches_name(name: str, stat: ProcStat, pid: int, root: Path) -> bool:
    if stat.comm == name or stat.comm == name[:COMM_LENGTH]:
        return True
    try:
        argv = read_cmdline(pid, root)
    except CapplanError:
        argv = ()
    if argv and (_basename(argv[0]) == name or _basename(argv[0].split(" ", 1)[0]) == name):
        return True
    exe = read_exe(pid, root)
    return exe is not None and _basename(exe.removesuffix(" (deleted)")) == name


NameCache = dict[tuple[int, int, str], bool]


def _matches_cached(
    name: str, stats: dict[int, ProcStat], root: Path, cache: NameCache | None
) -> set[int]:
    """The pids whose process matches ``name``; ``cache`` remembers answers between calls.

    ``matches_name`` reads the command line and executable of every process whose comm
    differs, on every sample. A process's argv and exe do not change while its identity
    ``(pid, start time, comm)`` holds (exec changes comm), so the answer is cached per
    identity and only new processes are read again (issue 7). Entries of processes that
    are gone are dropped, so the cache never outgrows the process table.
    """
    if cache is None:
        return {
            pid
            for pid, stat in stats.items()
            if not stat.is_kernel_thread and matches_name(name, stat, pid, root)
        }
    seen: NameCache = {}
    chosen = set()
    for pid, stat in stats.items():
        if stat.is_kernel_thread:
            continue
        key = (pid, stat.start_ticks, stat.comm)
        found = cache.get(key)
        if found is None:
            found = matches_name(name, stat, pid, root)
        seen[key] = found
        if found:
            chosen.add(pid)
    cache.clear()
    cache.update(seen)
    return chosen


def select_processes(
    selector: Selector,
    root: Path = DEFAULT_ROOT,
    stats: dict[int, ProcStat] | None = None,
    exclude: frozenset[int] = frozenset(),
    names: NameCache | None = None,
    target: cgroupselect.Target | None = None,
) -> Selection:
    """The workload's processes with their roles; SelectionError when nothing matches.

    ``names`` (optional, kept by the caller between samples) caches ``--cmd`` matches;
    ``target`` is the cgroup of ``--cgroup``/``--unit`` when the caller resolved it once.
    """
    unparsed: list[int] = []
    stats = scan(root, unparsed) if stats is None else stats
    if selector.pid is not None and selector.pid in unparsed:
        raise SelectionError(
            f"pid {selector.pid}: cannot parse {root / 'proc' / str(selector.pid) / 'stat'}",
            hint="the captured tree is damaged: capture it again",
        )
    excluded = _own_process(root) | exclude
    if selector.pid is not None:
        chosen = _select_tree(selector.pid, stats, root)
    elif selector.by_cgroup:
        target = target or resolve_target(selector, root)
        assert target is not None
        chosen = _select_cgroup(selector, target, stats)
    else:
        assert selector.cmd is not None
        chosen = _matches_cached(selector.cmd, stats, root, names)
        if not chosen:
            raise _no_match(selector.cmd, stats)
    chosen -= excluded
    if not chosen:
        raise SelectionError(f"{selector} matches only capplan itself")
    members = []
    for pid in sorted(chosen, key=lambda p: (stats[p].start_ticks, p)):
        stat = stats[pid]
        role = "worker" if stat.ppid in chosen else "parent"
        members.append(
            Member(pid=pid, start_ticks=stat.start_ticks, ppid=stat.ppid, name=stat.comm, role=role)
        )
    return Selection(members=tuple(members), unreadable=tuple(unparsed))


def role_facts(
    pids: Iterable[int], root: Path = DEFAULT_ROOT
) -> tuple[list[ProcessFacts], dict[int, str]]:
    """What ``roles.classify`` needs, read for ``pids``: each process's stat (tree, comm,
    threads), argv, executable and signal masks, and the MPM each apache2 parent maps.

    A process that vanished meanwhile is left out; an argv, executable, signal mask or maps
    that cannot be read is left unknown, and the classifier does without it."""
    facts: list[ProcessFacts] = []
    for pid in pids:
        try:
            stat = read_stat(pid, root)
        except CapplanError:
            continue
        try:
            argv = read_cmdline(pid, root)
        except CapplanError:
            argv = ()
        try:
            signals: tuple[int, int] | None = read_signal_masks(pid, root, stat.comm)
        except CapplanError:
            signals = None
        facts.append(
            ProcessFacts(
                pid=pid,
                ppid=stat.ppid,
                comm=stat.comm,
                cmdline=argv,
                exe=read_exe(pid, root),
                threads=stat.num_threads,
                start_ticks=stat.start_ticks,
                signals=signals,
            )
        )
    mpms: dict[int, str] = {}
    for pid in apache_masters(facts):
        try:
            mpm = read_mapped_mpm(pid, root)
        except CapplanError:
            continue
        if mpm is not None:
            mpms[pid] = mpm
    return facts, mpms


def classify_selection(selection: Selection, root: Path = DEFAULT_ROOT) -> Classification:
    """The selection's processes in groups and roles (``measure/roles``), read under ``root``."""
    facts, mpms = role_facts(selection.pids, root)
    return classify(facts, mpms)


def _select_tree(pid: int, stats: dict[int, ProcStat], root: Path) -> set[int]:
    if pid not in stats:
        # A thread id is not listed in /proc but can be opened: use its thread group.
        try:
            pid = read_status(pid, root).tgid
        except CapplanError:
            raise _not_listed(pid, root) from None
        if pid not in stats:
            raise _not_listed(pid, root)
    if stats[pid].is_kernel_thread:
        raise SelectionError(
            f"pid {pid} ({stats[pid].comm}) is a kernel thread: it has no user memory"
        )
    if stats[pid].state in ("Z", "X"):
        raise SelectionError(
            f"pid {pid} ({stats[pid].comm}) is a zombie: it has exited and holds no memory; "
            f"its parent, pid {stats[pid].ppid}, has not reaped it",
            hint="measure a running process: ps -eo pid,ppid,stat,comm",
        )
    return {pid} | {p for p in descendants(pid, stats) if not stats[p].is_kernel_thread}


def _select_cgroup(
    selector: Selector, target: cgroupselect.Target, stats: dict[int, ProcStat]
) -> set[int]:
    """Every user process in the cgroup and below that /proc lists."""
    inside = cgroupselect.members(target)
    chosen = {pid for pid in inside if pid in stats and not stats[pid].is_kernel_thread}
    if not chosen:
        whose = (
            f"unit {cgroupselect.unit_name(str(selector.unit))}'s cgroup"
            if selector.unit
            else "cgroup"
        )
        raise SelectionError(
            f"{whose} {target.path} has no processes, in it or below ({target.directory})",
            hint="is the service running? the cgroups of a process: cat /proc/PID/cgroup",
        )
    return chosen


def _not_listed(pid: int, root: Path) -> SelectionError:
    """No /proc entry for ``pid``: it does not exist, or /proc hides it from us.

    With ``hidepid=1`` or ``2`` (Linux 3.3+; ``invisible`` since 5.8) /proc shows other
    users' processes to root and the ``gid=`` group only; kill(pid, 0) still tells that
    the process exists (EPERM).
    """
    if root == DEFAULT_ROOT and pid > 0:
        try:
            os.kill(pid, 0)
            exists = True
        except PermissionError:
            exists = True
        except OSError:
            exists = False
        if exists:
            return SelectionError(
                f"pid {pid} exists, but /proc hides it from this user "
                "(/proc is mounted with hidepid)",
                hint="run capplan as root, or as a member of the group named by /proc's "
                "gid= mount option",
            )
    return SelectionError(
        f"no process with pid {pid}", hint="list candidates with: ps -eo pid,ppid,comm"
    )


def _no_match(name: str, stats: dict[int, ProcStat]) -> SelectionError:
    names = sorted({s.comm for s in stats.values() if not s.is_kernel_thread})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if name.lower() in n.lower() or n.lower() in name.lower()][:5]
    if not close:
        # Nothing is much alike: still name the nearest few, so the reader sees what runs.
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.0)
    listing = ", ".join(close) if close else "no user processes at all"
    return SelectionError(
        f"no running process is named {name!r} (closest: {listing})",
        hint="list running command names with: ps -eo comm | sort -u",
    )


# --------------------------------------------------------------------------- launching


# Terminated and Interrupted live in capacity.errors (the CLI raises them from its signal
# handlers without importing this module, which keeps `capplan --help` fast); the imports
# above re-export them here.


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds.

    A second Ctrl-C or SIGTERM while we stop it must not cut the cleanup short: both are
    held back until the group is gone, then delivered (and end capplan as usual).
    """
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        _stop_process_group(process, grace)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None or _group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclasses.dataclass
class LaunchedDemo:
    """The embedded demo workload, running."""

    process: subprocess.Popen[bytes]
    parent_pid: int
    worker_pids: tuple[int, ...]
    command: tuple[str, ...]


def demo_command(
    shared: str, private: str, workers: int, dirty: float = 0.0, shm: str = "0"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "capacity.demo",
        "--shared",
        shared,
        "--private",
        private,
        "--workers",
        str(workers),
        "--dirty",
        str(dirty),
        "--shm",
        shm,
    ]


@contextlib.contextmanager
def launched_demo(
    shared: str = "64M",
    private: str = "16M",
    workers: int = 4,
    dirty: float = 0.0,
    shm: str = "0",
    timeout: float = 60.0,
) -> Iterator[LaunchedDemo]:
    """Start the demo workload and stop it, with all its workers, whatever happens."""
    from capacity.measure.children import popen

    command = demo_command(shared, private, workers, dirty, shm)
    # The kernel kills the demo if capplan dies (PR_SET_PDEATHSIG); its workers exit when
    # their parent does.
    process = popen(
        command,
        option="--demo (the Python interpreter capplan runs under)",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        line = _wait_for_line(process, b"ready", timeout)
        pids = [int(part) for part in line.split()[1:]]
        yield LaunchedDemo(
            process=process, parent_pid=pids[0], worker_pids=tuple(pids[1:]), command=tuple(command)
        )
    finally:
        stop_process_group(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _wait_for_line(process: subprocess.Popen[bytes], prefix: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = process.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            # Only whole lines: a pipe may deliver a line in pieces.
            for line in buffer.split(b"\n")[:-1]:
                if line.startswith(prefix):
                    return line
        elif process.poll() is not None:
            break
    status = process.poll()
    stderr = b""
    if status is not None and process.stderr is not None:
        stderr = process.stderr.read()[-2000:]
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    detail = (
        f"exited with status {status}" if status is not None else f"not ready after {timeout:.0f} s"
    )
    raise LaunchError(
        f"the demo workload {detail}" + (f": {' | '.join(last)}" if last else ""),
        hint="run it by hand to see why: python -m capacity.demo --workers 2",
    )
