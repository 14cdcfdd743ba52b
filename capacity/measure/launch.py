"""Launch mode: start a command N times, one more instance per step, and measure each step.

``capplan estimate --launch "COMMAND ARGS" --instances N`` starts the command once, waits
for it to settle, measures, starts a second instance, measures, and so on up to N. Each
step is an independent measurement of total(k) for k running instances, so the line is
fitted through real points instead of being built from one snapshot's workers.

Every instance runs in a memory cgroup of its own, inside one cgroup for the run, both
created before the first start and removed at the end. The run's cgroup gives the
system-side total (what the kernel charged: anonymous memory, page cache, kernel memory)
beside the process-side total from smaps; an instance's cgroup also says which processes
are its tree, even when the program daemonizes. Where no cgroup can be created (not root),
the system side falls back to the host's MemAvailable delta and the trees to descendants
and session members of the process we started.

Nothing capplan starts outlives it: instances and load generators are stopped (SIGTERM to
each instance's process group and every process in its cgroup, SIGKILL after a grace
period) and the cgroups removed, on a normal end, an error, Ctrl-C and SIGTERM alike;
SIGINT and SIGTERM are held while a process starts and while the cleanup runs. SIGKILL
runs no cleanup: then the kernel kills each instance's first process (PR_SET_PDEATHSIG),
an instance writing to stderr gets EPIPE, and the next capplan run kills what is left in
the run's cgroup and removes it (``capacity.measure.leftovers``). An instance's stderr is
kept in memory, its last 64 KiB only: nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from capacity.errors import CapplanError, LaunchError
from capacity.measure.cgroup import CgroupError, OwnCgroup, create_cgroup
from capacity.measure.children import StreamTail
from capacity.measure.loadgen import (
    LoadGenerators,
    deferred_signals,
    describe_status,
    expand,
    start_process,
    tail,
)
from capacity.measure.probe import ProbeRule, probe_cgroup
from capacity.measure.procfs import read_meminfo, read_stat
from capacity.measure.procparse import ProcStat
from capacity.measure.sampler import Sampler
from capacity.measure.workload import Member, descendants, scan
from capacity.records import InstanceMemory, Launch, LaunchStep, LoadRun, ProbeRun, Snapshot

SETTLE_POLL_SECONDS = 0.3
SETTLE_TOLERANCE_PAGES = 16  # RSS may wobble by a few pages (a timer, a log line) when idle
SETTLE_TOLERANCE_SHARE = 0.001
PORT_POLL_SECONDS = 0.05
STOP_POLL_SECONDS = 0.02
DEFAULT_GRACE_SECONDS = 3.0
CGROUP_PREFIX = "capplan-launch"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

ProgressCallback = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class LaunchOptions:
    """What ``--launch`` and its companions asked for."""

    command: str
    instances: int
    shell: bool = False
    settle: float | None = None  # fixed seconds; None: until memory stops changing
    settle_timeout: float = 60.0
    load: str | None = None
    warmup: float = 0.0
    samples: int = 1  # snapshots with all instances running (drift); the last step is one
    interval: float = 1.0
    grace: float = DEFAULT_GRACE_SECONDS
    probe: ProbeRule | None = None  # --probe: probe the run's cgroup after each step

    def __post_init__(self) -> None:
        if self.instances < 3:
            raise LaunchError(
                f"--instances {self.instances}: a line through fewer than 3 instance counts "
                "has no honest interval",
                hint="give --instances 3 or more (4 or more also tests whether it is a line)",
            )
        if self.settle is not None and self.settle < 0:
            raise LaunchError("--settle must not be negative")
        if self.settle_timeout <= 0:
            raise LaunchError("--settle-timeout must be more than 0")

    @property
    def settle_text(self) -> str:
        if self.settle is not None:
            return f"fixed {self.settle:g} s (--settle)"
        return f"until RSS stops changing between two reads {SETTLE_POLL_SECONDS:g} s apart"


@dataclasses.dataclass
class Instance:
    """One started copy of the command."""

    number: int
    port: int | None
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes]
    cgroup: OwnCgroup | None
    stderr: StreamTail
    started: float  # monotonic
    start_ticks: int = 0

    def pids(self, stats: dict[int, ProcStat]) -> set[int]:
        """Its process tree: the members of its cgroup, or without one the descendants and
        session members of the process we started (a daemon that calls setsid escapes)."""
        if self.cgroup is not None:
            found = self.cgroup.pids()
        else:
            root = self.process.pid
            found = {root} | descendants(root, stats)
            found |= {pid for pid, stat in stats.items() if stat.session == root}
        return {pid for pid in found if pid in stats and not stats[pid].is_kernel_thread}

    def alive(self) -> bool:
        if self.process.poll() is None:
            return True
        # A daemon's first process exits once it has forked; its cgroup still holds it.
        return self.cgroup is not None and bool(self.cgroup.pids())

    def failure(self, during: str) -> LaunchError:
        status = describe_status(self.process.returncode)
        if self.process.returncode == 0 and self.cgroup is not None:
            status += " and left no process running"
        oom = ""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                if self.cgroup.oom_kills():
                    oom = " (the OOM killer)"
        stderr = tail(self.stderr.data(wait=0.5))
        elapsed = time.monotonic() - self.started
        return LaunchError(
            f"instance {self.number} (pid {self.process.pid}) {status}{oom} {elapsed:.1f} s "
            f"after it started, {during}"
            + (f"; its stderr ends: {stderr}" if stderr else "; it wrote nothing on stderr"),
            hint=f"run it by hand to see why: {shlex.join(self.argv)}",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LaunchOutcome:
    """What a launch run measured: the raw Launch record (fits are added by assemble),
    every snapshot (steps, then the drift samples), and the load generators' runs."""

    launch: Launch
    snapshots: tuple[Snapshot, ...]
    loads: tuple[LoadRun, ...]
    first_pid: int
    no_cgroup_reason: str | None
    probes: tuple[ProbeRun, ...] = ()


def free_port(taken: set[int]) -> int:
    """A loopback port nobody listens on now (the kernel picks it; we release it at once)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port
    raise LaunchError("no free loopback port found")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Launcher:
    """Starts the instances, measures the steps, and always stops what it started.

    Use as a context manager: ``with Launcher(options) as launcher: launcher.run()``.
    """

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.instances: list[Instance] = []
        self.cgroup: OwnCgroup | None = None
        self.no_cgroup_reason: str | None = None
        self.loads = (
            LoadGenerators(options.load, shell=options.shell, grace=options.grace)
            if options.load
            else None
        )
        self._ports: set[int] = set()
        self._sampler: Sampler | None = None
        self._baseline_available = 0
        # Fail on a bad command line before anything starts.
        expand(options.command, shell=options.shell, option="--launch", values={"i": 1, "port": 1})
        if options.load:
            expand(options.load, shell=options.shell, option="--load", values={"i": 1, "port": 1})
            if "{port}" in options.load and "{port}" not in options.command:
                raise LaunchError(
                    "--load uses {port}, but --launch does not: nothing would listen there",
                    hint="pass {port} to the server in --launch, or write the port in --load",
                )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Launcher:
        try:
            self.cgroup = create_cgroup(CGROUP_PREFIX)
        except CgroupError as err:
            self.cgroup = None
            self.no_cgroup_reason = err.message
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        errors = self.close()
        if errors and exc_type is None:
            raise LaunchError(
                f"cleanup failed: {errors[0]}",
                hint="check for leftover processes and cgroups named capplan-launch-*",
            )

    def close(self) -> list[str]:
        """Stop load generators and instances, remove the cgroups. Idempotent."""
        errors: list[str] = []
        with deferred_signals():
            if self.loads is not None:
                try:
                    self.loads.close()
                except (OSError, CapplanError) as err:
                    errors.append(str(err))
            try:
                self._stop_instances()
            except (OSError, CapplanError) as err:
                errors.append(str(err))
            if self.cgroup is not None:
                try:
                    self.cgroup.remove()
                    self.cgroup = None
                except CgroupError as err:
                    errors.append(err.message)
            for instance in self.instances:
                instance.stderr.close()
        return errors

    def _stop_instances(self) -> None:
        if not self.instances:
            return
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace
        while time.monotonic() < deadline and any(self._running(i) for i in self.instances):
            time.sleep(STOP_POLL_SECONDS)
        # Whatever ignored SIGTERM (or is still shutting down) gets SIGKILL.
        if any(self._running(i) for i in self.instances):
            self._signal_all(signal.SIGKILL)
        for instance in self.instances:
            with contextlib.suppress(subprocess.TimeoutExpired):
                instance.process.wait(timeout=self.options.grace)
        if self.cgroup is None:  # no cgroup to sweep: make sure the trees are gone
            deadline = time.monotonic() + self.options.grace
            while time.monotonic() < deadline and any(self._running(i) for i in self.instances):
                self._signal_all(signal.SIGKILL)
                time.sleep(STOP_POLL_SECONDS)

    def _signal_all(self, signum: signal.Signals) -> None:
        stats = scan()
        for instance in self.instances:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(instance.process.pid, signum)
            for pid in instance.pids(stats) | (
                instance.cgroup.pids() if instance.cgroup is not None else set()
            ):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def _running(self, instance: Instance) -> bool:
        if instance.process.poll() is None:
            return True
        if instance.cgroup is not None and instance.cgroup.pids():
            return True
        try:
            os.killpg(instance.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # ------------------------------------------------------------------ steps

    def start_instance(self, number: int) -> Instance:
        values = {"i": number}
        port = None
        if "{port}" in self.options.command or (
            self.options.load is not None and "{port}" in self.options.load
        ):
            port = free_port(self._ports)
            self._ports.add(port)
            values["port"] = port
        argv = expand(
            self.options.command, shell=self.options.shell, option="--launch", values=values
        )
        with deferred_signals() as previous:
            group = self.cgroup.child(f"instance-{number}") if self.cgroup is not None else None
            process, stderr = start_process(
                argv,
                name=f"instance-{number}",
                mask=previous,
                join=group.join_self if group is not None else None,
                option="--launch",
            )
            instance = Instance(
                number=number,
                port=port,
                argv=argv,
                process=process,
                cgroup=group,
                stderr=stderr,
                started=time.monotonic(),
            )
            self.instances.append(instance)
        with contextlib.suppress(CapplanError):
            instance.start_ticks = read_stat(process.pid).start_ticks
        return instance

    def _check_alive(self, during: str) -> None:
        for instance in self.instances:
            if not instance.alive():
                raise instance.failure(during)

    def _sleep(self, seconds: float, during: str) -> None:
        """Sleep, watching that every instance stays up."""
        deadline = time.monotonic() + seconds
        while True:
            self._check_alive(during)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, SETTLE_POLL_SECONDS))

    def settle(self, instance: Instance) -> float:
        """Wait until the new instance is ready; returns how long that took."""
        options = self.options
        began = time.monotonic()
        deadline = began + options.settle_timeout
        during = "while capplan waited for it to settle"
        if instance.port is not None and "{port}" in options.command:
            while not accepts(instance.port):
                self._check_alive(during)
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"instance {instance.number} did not accept connections on "
                        f"127.0.0.1:{instance.port} within {options.settle_timeout:g} s",
                        hint="does the command listen on {port}? "
                        "Give it longer with --settle-timeout",
                    )
                time.sleep(PORT_POLL_SECONDS)
        if options.settle is not None:
            self._sleep(options.settle, during)
            return time.monotonic() - began
        previous: tuple[frozenset[int], int] | None = None
        while True:
            self._check_alive(during)
            stats = scan()
            pids = frozenset(instance.pids(stats))
            rss = sum(stats[pid].rss_pages for pid in pids) * PAGE_SIZE
            if previous is not None and pids and previous[0] == pids:
                tolerance = max(SETTLE_TOLERANCE_PAGES * PAGE_SIZE, SETTLE_TOLERANCE_SHARE * rss)
                if abs(rss - previous[1]) <= tolerance:
                    return time.monotonic() - began
            if time.monotonic() > deadline:
                last = f"{previous[1]:,} then {rss:,} bytes" if previous else f"{rss:,} bytes"
                raise LaunchError(
                    f"instance {instance.number} did not settle within "
                    f"{options.settle_timeout:g} s: its memory kept changing (RSS {last})",
                    hint="give a fixed wait with --settle SECONDS, or more time with "
                    "--settle-timeout",
                )
            previous = (pids, rss)
            time.sleep(SETTLE_POLL_SECONDS)

    def measure(self, index: int, settle_seconds: float) -> tuple[Snapshot, LaunchStep]:
        """One snapshot of every instance's tree, with the run's and each instance's cgroup."""
        assert self._sampler is not None
        self._check_alive(f"while {len(self.instances)} instances were running")
        stats = scan()
        members: list[Member] = []
        owner: dict[int, int] = {}
        for instance in self.instances:
            for pid in sorted(instance.pids(stats), key=lambda p: (stats[p].start_ticks, p)):
                stat = stats[pid]
                owner[pid] = instance.number
                members.append(
                    Member(
                        pid=pid,
                        start_ticks=stat.start_ticks,
                        ppid=stat.ppid,
                        name=stat.comm,
                        role="worker",
                    )
                )
        run_cgroup = self.cgroup.memory() if self.cgroup is not None else None
        label = f"--launch instances 1..{len(self.instances)}"
        snapshot = self._sampler.read_members(index, members, label, cgroup=run_cgroup)
        snapshot = dataclasses.replace(
            snapshot,
            processes=tuple(
                dataclasses.replace(p, instance=owner.get(p.pid)) for p in snapshot.processes
            ),
        )
        host = snapshot.host if snapshot.host is not None else read_meminfo()
        if run_cgroup is not None:
            system_total = run_cgroup.current_bytes
        else:
            system_total = self._baseline_available - host.mem_available_bytes
        read = {p.pid for p in snapshot.processes}
        instances = []
        for instance in self.instances:
            own = instance.cgroup.memory() if instance.cgroup is not None else None
            instances.append(
                InstanceMemory(
                    number=instance.number,
                    pid=instance.process.pid,
                    start_ticks=instance.start_ticks,
                    pids=tuple(
                        sorted(p for p, n in owner.items() if n == instance.number and p in read)
                    ),
                    cgroup_bytes=own.current_bytes if own is not None else None,
                )
            )
        step = LaunchStep(
            instances=len(self.instances),
            sample=index,
            taken_at=snapshot.taken_at,
            settle_seconds=round(settle_seconds, 3),
            system_total_bytes=system_total,
            mem_available_bytes=host.mem_available_bytes,
            members=tuple(instances),
            cgroup=run_cgroup,
        )
        return snapshot, step

    def run(self, on_progress: ProgressCallback | None = None) -> LaunchOutcome:
        """Start instance 1, settle, (load, warm up,) measure; repeat up to N; then sample
        all N ``samples - 1`` more times for drift."""
        options = self.options
        self._sampler = Sampler(None)
        self._baseline_available = read_meminfo().mem_available_bytes
        total = options.instances + max(options.samples - 1, 0)
        snapshots: list[Snapshot] = []
        steps: list[LaunchStep] = []
        probes: list[ProbeRun] = []
        if options.probe is not None and self.cgroup is None:
            raise LaunchError(
                f"--probe needs the run's own memory cgroup: {self.no_cgroup_reason}",
                hint="run as root on a host with the memory controller, or leave out --probe",
            )
        for number in range(1, options.instances + 1):
            instance = self.start_instance(number)
            settled = self.settle(instance)
            if self.loads is not None:
                values = {"i": number} | (
                    {"port": instance.port} if instance.port is not None else {}
                )
                self.loads.start(values, instance=number)
            if options.warmup > 0:
                self._sleep(options.warmup, "during the warm-up")
            snapshot, step = self.measure(len(snapshots), settled)
            snapshots.append(snapshot)
            steps.append(step)
            if options.probe is not None:
                probes.append(self.probe(number, options.probe))
            if on_progress is not None:
                on_progress(len(snapshots), total)
        next_at = time.monotonic() + options.interval
        for _ in range(options.samples - 1):
            self._sleep(max(next_at - time.monotonic(), 0.0), "while capplan sampled")
            snapshot, _step = self.measure(len(snapshots), 0.0)
            snapshots.append(snapshot)
            next_at += options.interval
            if on_progress is not None:
                on_progress(len(snapshots), total)
        loads = self.loads.stop() if self.loads is not None else ()
        mount = self.cgroup.mount if self.cgroup is not None else None
        cgroup_path = None
        if self.cgroup is not None and mount is not None:
            cgroup_path = "/" + str(self.cgroup.path.relative_to(mount))
        launch = Launch(
            command=options.command,
            shell=options.shell,
            instances=options.instances,
            settle=options.settle_text,
            system_source="cgroup" if self.cgroup is not None else "memavailable",
            cgroup_path=cgroup_path,
            baseline_mem_available_bytes=self._baseline_available,
            steps=tuple(steps),
        )
        return LaunchOutcome(
            launch=launch,
            snapshots=tuple(snapshots),
            loads=loads,
            first_pid=self.instances[0].process.pid,
            no_cgroup_reason=self.no_cgroup_reason,
            probes=tuple(probes),
        )

    def probe(self, number: int, rule: ProbeRule) -> ProbeRun:
        """The pressure probe of the run's cgroup with ``number`` instances running (their
        load too); its limit is written back before the next instance starts."""
        assert self.cgroup is not None
        shown = "/" + str(self.cgroup.path.relative_to(self.cgroup.mount))
        return probe_cgroup(
            self.cgroup.version,
            self.cgroup.path,
            shown,
            number,
            rule,
            check=lambda: self._check_alive(f"while capplan probed {number} instances"),
        )
