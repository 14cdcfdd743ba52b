"""The pressure probe (``--probe``, issue 14): how small the workload's cgroup can get
before the workload feels it.

While the load runs, the probe lowers the memory the cgroup may use in small steps
(Senpai's rule, from Meta's TMO, ASPLOS 2022) and holds each step for a moment, reading
what the workload did under it: stall time from pressure stall information (PSI), file
refaults (a page read back soon after reclaim took it: the cache was hot), how often the
limit was hit, and the OOM killer's count. It stops at the first sign of pressure and
writes the original value back; the smallest limit held without pressure is the size the
workload needs (``ProbeRun.found_bytes``).

* cgroup v2: ``memory.reclaim`` (Linux 5.19+) pushes the cgroup down to the step's size
  and ``memory.high`` holds it there; ``memory.high`` throttles and reclaims but never
  invokes the OOM killer. Pressure comes from the cgroup's own ``memory.pressure``.
* cgroup v1: ``memory.limit_in_bytes`` with care. Writing a limit below usage makes the
  kernel reclaim first and fail the write with EBUSY when it cannot (the step is then
  "refused"); while the limit is lowered, ``memory.oom_control``'s ``oom_kill_disable`` is
  set, so a task that would be OOM-killed waits instead, and the probe writes the limit
  back as soon as it sees ``under_oom``. v1 cgroups have no PSI of their own: the host's
  /proc/pressure/memory is read, and a stall there counts when the cgroup hit its limit
  (``memory.failcnt`` rose) or refaulted in the same step: its tasks can stall on the
  limit only after a charge failed against it.

The probe never sets a limit below the floor: usage minus the file cache reclaim could
free (``file - shmem``: shared memory does not go without swap), plus a margin. Before it
changes a knob, it writes the original value to a state file in capplan's runtime
directory (``runtime_dir``), removed once the value is back; a later capplan run finds the
file of a killed run and writes the value back (``capacity.measure.leftovers``). Original
values are written back on a normal end, an error, Ctrl-C and SIGTERM (held while it
writes).

The rule (``next_limit``, ``judge``, ``floor_of``) is pure and tested on recorded readings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from capacity.errors import CapplanError
from capacity.measure.cgroup import (
    RunIdentity,
    own_identity,
    parse_memory_stat,
)
from capacity.records import ProbeRun, ProbeStep, ProbeVerdict

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SYSTEM_PRESSURE = Path("/proc/pressure/memory")
RUNTIME_ENV = "CAPPLAN_RUNTIME_DIR"
STATE_PREFIX = "probe-"
POLL_SECONDS = 0.1
MIB = 1024 * 1024

PressureSource = Literal["cgroup", "system", "none"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRule:
    """How the probe steps: a share of usage per step, at most ``max_steps`` steps, each
    held ``hold_seconds``; pressure is a stall over ``stall_threshold`` of the hold, or more
    than ``refault_threshold_bytes`` of file refaults during it."""

    step_share: float = 0.05
    max_steps: int = 12
    hold_seconds: float = 1.0
    stall_threshold: float = 0.005
    refault_threshold_bytes: int = 1 * MIB
    margin_share: float = 0.02
    margin_min_bytes: int = 2 * MIB


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """One read of a cgroup's counters."""

    at: float  # monotonic seconds
    usage_bytes: int
    stat: dict[str, int]  # memory.stat as the kernel names it (v1: the total_ lines)
    some_avg10: float | None
    some_total_us: int | None
    refault_pages: int
    limit_hits: int
    oom_kills: int
    under_oom: bool = False


# --------------------------------------------------------------------------- the rule


def parse_pressure(text: str) -> tuple[float, int] | None:
    """(``some avg10``, ``some total`` in microseconds) of a PSI file; None without."""
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "some":
            continue
        fields = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
        try:
            return float(fields["avg10"]), int(fields["total"])
        except (KeyError, ValueError):
            return None
    return None


def refault_pages(stat: dict[str, int], version: int) -> int:
    """File refaults so far: ``workingset_refault_file`` (5.9+), else ``workingset_refault``;
    v1 reads the hierarchical ``total_`` line."""
    prefix = "" if version == 2 else "total_"
    for name in ("workingset_refault_file", "workingset_refault"):
        if prefix + name in stat:
            return stat[prefix + name]
    return 0


def floor_of(usage_bytes: int, stat: dict[str, int], version: int, rule: ProbeRule) -> int:
    """The lowest limit the probe sets: usage minus the file cache reclaim could free
    (page cache, not shared memory), plus a margin; page-aligned."""
    prefix = "" if version == 2 else "total_"
    file_bytes = stat.get(prefix + ("file" if version == 2 else "cache"), 0)
    shmem = stat.get(prefix + "shmem", 0)
    reclaimable = max(file_bytes - shmem, 0)
    needed = max(usage_bytes - reclaimable, 0)
    margin = max(rule.margin_min_bytes, round(rule.margin_share * usage_bytes))
    return min(_page_up(needed + margin), _page_up(usage_bytes))


def step_size(start_bytes: int, floor_bytes: int, rule: ProbeRule) -> int:
    """How far each step lowers the limit: ``step_share`` of the usage at the start, or
    more when that would need more than ``max_steps`` steps to reach the floor."""
    return max(
        round(rule.step_share * start_bytes),
        -(-max(start_bytes - floor_bytes, 0) // rule.max_steps),
        PAGE_SIZE,
    )


def next_limit(usage_bytes: int, floor_bytes: int, step_bytes: int) -> int:
    """The next step's limit: ``step_bytes`` below the usage now, never below the floor."""
    return max(_page_down(usage_bytes - step_bytes), floor_bytes)


def stall_share(before: Reading, after: Reading) -> float | None:
    if before.some_total_us is None or after.some_total_us is None:
        return None
    elapsed = after.at - before.at
    if elapsed <= 0:
        return None
    return max(after.some_total_us - before.some_total_us, 0) / 1e6 / elapsed


def judge(
    before: Reading,
    after: Reading,
    rule: ProbeRule,
    *,
    wrote: bool,
    at_floor: bool,
    host_wide: bool = False,
) -> ProbeVerdict:
    """What one step showed, the most serious first: an OOM (or a v1 task waiting in one),
    a limit the kernel refused, a stall, refaults; else "ok", or "floor" when the step was
    already the lowest the probe sets.

    ``host_wide``: the stall was read from the host's PSI (v1). A stall counts then only
    when the cgroup hit its limit during the step (``memory.failcnt`` rose) or refaulted: a
    task of the cgroup can stall on its limit only after a charge failed against it, so a
    stall with neither came from elsewhere on the host."""
    if after.oom_kills > before.oom_kills or after.under_oom:
        return "oom"
    if not wrote:
        return "refused"
    share = stall_share(before, after)
    ours = not host_wide or (
        after.limit_hits > before.limit_hits or after.refault_pages > before.refault_pages
    )
    if share is not None and share > rule.stall_threshold and ours:
        return "pressure"
    if (after.refault_pages - before.refault_pages) * PAGE_SIZE > rule.refault_threshold_bytes:
        return "refaults"
    return "floor" if at_floor else "ok"


def _page_down(value: int) -> int:
    return value // PAGE_SIZE * PAGE_SIZE


def _page_up(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


# --------------------------------------------------------------------------- state files


def runtime_dir() -> Path:
    """Where capplan keeps what a killed run must undo: ``$CAPPLAN_RUNTIME_DIR``, else
    /run/capplan as root, else ``$XDG_RUNTIME_DIR/capplan``, else a per-user directory in
    the temporary directory."""
    given = os.environ.get(RUNTIME_ENV)
    if given:
        return Path(given)
    if os.geteuid() == 0 and Path("/run").is_dir():
        return Path("/run/capplan")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "capplan"
    return Path(tempfile.gettempdir()) / f"capplan-{os.geteuid()}"


@dataclasses.dataclass(frozen=True, slots=True)
class SavedKnob:
    """A cgroup file the probe changed, and the value it had."""

    file: Path
    original: str


@dataclasses.dataclass(frozen=True, slots=True)
class StateFile:
    """A state file found in the runtime directory: who wrote it and what to restore."""

    path: Path
    maker: RunIdentity
    knobs: tuple[SavedKnob, ...]


def write_state(knobs: tuple[SavedKnob, ...], directory: Path | None = None) -> Path:
    """Record the original values before changing them (atomic: a reader sees the whole
    file or none)."""
    folder = runtime_dir() if directory is None else directory
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = own_identity()
    document = {
        "kind": "capplan.probe-state",
        "pid": me.pid,
        "start_ticks": me.start_ticks,
        "pid_namespace": me.pid_namespace,
        "knobs": [{"file": str(k.file), "original": k.original} for k in knobs],
    }
    name = f"{STATE_PREFIX}{me.pid}-{me.start_ticks}-{time.monotonic_ns()}.json"
    path = folder / name
    temporary = folder / f".{name}.tmp"
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)
    return path


def read_states(directory: Path | None = None) -> list[StateFile]:
    """Every probe state file in the runtime directory that reads whole."""
    folder = runtime_dir() if directory is None else directory
    found: list[StateFile] = []
    try:
        entries = sorted(folder.glob(f"{STATE_PREFIX}*.json"))
    except OSError:
        return found
    for path in entries:
        try:
            data: Any = json.loads(path.read_text())
            maker = RunIdentity(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                pid_namespace=(
                    int(data["pid_namespace"]) if data["pid_namespace"] is not None else None
                ),
            )
            knobs = tuple(
                SavedKnob(file=Path(str(k["file"])), original=str(k["original"]))
                for k in data["knobs"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(StateFile(path=path, maker=maker, knobs=knobs))
    return found


def restore_knobs(knobs: tuple[SavedKnob, ...]) -> list[str]:
    """Write every original value back, in the order saved (the limit before v1's
    ``oom_kill_disable``, so that no task is OOM-killed under the lowered limit); the
    problems, as text. A file that is gone (its cgroup was removed) needs nothing."""
    problems: list[str] = []
    for knob in knobs:
        if not knob.file.exists():
            continue
        try:
            knob.file.write_text(knob.original)
        except OSError as err:
            problems.append(f"cannot write {knob.original!r} back to {knob.file}: {err.strerror}")
    return problems


# --------------------------------------------------------------------------- the cgroup


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _number(path: Path) -> int:
    text = _text(path)
    try:
        return int(text.split()[0]) if text else 0
    except ValueError:
        return 0


class ProbeError(CapplanError):
    """The cgroup cannot be probed: a knob is missing or cannot be written."""


class Knobs:
    """The files of one memory cgroup the probe reads and writes."""

    def __init__(self, version: int, directory: Path) -> None:
        self.version = version
        self.directory = directory
        self.limit_file = directory / ("memory.high" if version == 2 else "memory.limit_in_bytes")
        if not self.limit_file.exists():
            raise ProbeError(
                f"--probe: {self.limit_file} does not exist: not a memory cgroup",
                hint="--probe needs the workload's own memory cgroup (v2, or v1 memory)",
            )
        own = directory / "memory.pressure"
        if version == 2 and own.exists():
            self.pressure_file: Path | None = own
            self.pressure_source: PressureSource = "cgroup"
        elif SYSTEM_PRESSURE.exists() and parse_pressure(_text(SYSTEM_PRESSURE) or ""):
            self.pressure_file = SYSTEM_PRESSURE
            self.pressure_source = "system"
        else:
            self.pressure_file = None
            self.pressure_source = "none"

    def originals(self) -> tuple[SavedKnob, ...]:
        knobs = [SavedKnob(self.limit_file, _text(self.limit_file) or "max")]
        if self.version == 1:
            control = self.directory / "memory.oom_control"
            disabled = parse_memory_stat(_text(control) or "").get("oom_kill_disable", 0)
            knobs.append(SavedKnob(control, str(disabled)))
        return tuple(knobs)

    def read(self) -> Reading:
        if self.version == 2:
            usage = _number(self.directory / "memory.current")
            events = parse_memory_stat(_text(self.directory / "memory.events") or "")
            hits, ooms, under = events.get("high", 0), events.get("oom_kill", 0), False
        else:
            usage = _number(self.directory / "memory.usage_in_bytes")
            hits = _number(self.directory / "memory.failcnt")
            control = parse_memory_stat(_text(self.directory / "memory.oom_control") or "")
            ooms, under = control.get("oom_kill", 0), bool(control.get("under_oom", 0))
        stat = parse_memory_stat(_text(self.directory / "memory.stat") or "")
        pressure = (
            parse_pressure(_text(self.pressure_file) or "")
            if self.pressure_file is not None
            else None
        )
        return Reading(
            at=time.monotonic(),
            usage_bytes=usage,
            stat=stat,
            some_avg10=pressure[0] if pressure else None,
            some_total_us=pressure[1] if pressure else None,
            refault_pages=refault_pages(stat, self.version),
            limit_hits=hits,
            oom_kills=ooms,
            under_oom=under,
        )

    def prepare(self) -> None:
        """v1: a task that would be OOM-killed while the limit is lowered waits instead."""
        if self.version == 1:
            with contextlib.suppress(OSError):
                (self.directory / "memory.oom_control").write_text("1")

    def lower(self, limit_bytes: int, usage_bytes: int) -> bool:
        """Set the step's limit; False when the kernel could not reclaim down to it."""
        try:
            return self._lower(limit_bytes, usage_bytes)
        except OSError as err:
            raise ProbeError(
                f"--probe: cannot write {limit_bytes} to {self.limit_file}: "
                f"{err.strerror or err}; the original was written back",
                hint="probe a cgroup capplan may change (root, or a delegated cgroup)",
            ) from None

    def _lower(self, limit_bytes: int, usage_bytes: int) -> bool:
        if self.version == 2:
            reclaim = self.directory / "memory.reclaim"
            if usage_bytes > limit_bytes and reclaim.exists():
                # EAGAIN when it could not reclaim all of it: memory.high then holds.
                with contextlib.suppress(OSError):
                    reclaim.write_text(str(usage_bytes - limit_bytes))
            self.limit_file.write_text(str(limit_bytes))
            return True
        try:
            self.limit_file.write_text(str(limit_bytes))
        except OSError as err:
            if err.errno in (16, 11):  # EBUSY (v1: could not reclaim), EAGAIN
                return False
            raise
        return True

    def waiting(self) -> bool:
        """v1: a task of the cgroup waits in an OOM (``under_oom``)."""
        if self.version != 1:
            return False
        control = parse_memory_stat(_text(self.directory / "memory.oom_control") or "")
        return bool(control.get("under_oom", 0))


# --------------------------------------------------------------------------- the probe


@contextlib.contextmanager
def _held_signals() -> Iterator[None]:
    import signal

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def probe_cgroup(
    version: int,
    directory: Path,
    shown: str,
    instances: int,
    rule: ProbeRule,
    *,
    check: Callable[[], None] | None = None,
    state_dir: Path | None = None,
) -> ProbeRun:
    """Probe one cgroup while its load runs; always write the original values back.

    ``check`` is called while a step holds (launch mode: every instance still runs) and
    may raise; the originals are written back before the error goes on.
    """
    knobs = Knobs(version, directory)
    saved = knobs.originals()
    first = knobs.read()
    floor = floor_of(first.usage_bytes, first.stat, version, rule)
    step = step_size(first.usage_bytes, floor, rule)
    steps: list[ProbeStep] = []
    found = first.usage_bytes
    stopped = f"stopped after {rule.max_steps} steps"
    restored = False
    state: Path | None = None
    try:
        with _held_signals():  # a signal now lands inside the try: restored below
            try:
                state = write_state(saved, state_dir)
            except OSError as err:
                raise ProbeError(
                    f"--probe: cannot keep the original limit in {runtime_dir()}: "
                    f"{err.strerror or err}; nothing was changed",
                    hint=f"make {RUNTIME_ENV} a directory capplan may write",
                ) from None
            knobs.prepare()
        before = first
        usage = first.usage_bytes
        for _ in range(rule.max_steps):
            if usage <= floor + PAGE_SIZE:
                stopped = "reached the floor: what reclaim cannot free, plus the margin"
                break
            target = next_limit(usage, floor, step)
            began = time.monotonic()
            wrote = knobs.lower(target, usage)
            _hold(knobs, rule.hold_seconds, check)
            after = knobs.read()
            verdict = judge(
                before,
                after,
                rule,
                wrote=wrote,
                at_floor=target <= floor,
                host_wide=knobs.pressure_source == "system",
            )
            share = stall_share(before, after)
            steps.append(
                ProbeStep(
                    limit_bytes=target,
                    usage_bytes=after.usage_bytes,
                    some_avg10=after.some_avg10,
                    stall_share=None if share is None else round(share, 5),
                    refaults=max(after.refault_pages - before.refault_pages, 0),
                    limit_hits=max(after.limit_hits - before.limit_hits, 0),
                    verdict=verdict,
                    seconds=round(time.monotonic() - began, 3),
                )
            )
            if verdict in ("ok", "floor"):
                found = target
                usage = min(after.usage_bytes, target)
                before = after
            if verdict != "ok":
                stopped = _STOPPED[verdict]
                break
    finally:
        with _held_signals():
            problems = restore_knobs(saved) if state is not None else []
            if not problems:
                restored = True
                if state is not None:
                    with contextlib.suppress(OSError):
                        state.unlink()
    return ProbeRun(
        instances=instances,
        cgroup_path=shown,
        version=2 if version == 2 else 1,
        knob=knobs.limit_file.name,
        original=saved[0].original,
        start_usage_bytes=first.usage_bytes,
        floor_bytes=floor,
        found_bytes=found,
        pressure_source=knobs.pressure_source,
        stopped=stopped,
        restored=restored,
        steps=tuple(steps),
    )


_STOPPED: dict[str, str] = {
    "pressure": "stopped at the first stall (PSI some) over the threshold",
    "refaults": "stopped when file refaults rose: the cache it was squeezing was hot",
    "refused": "stopped: the kernel could not reclaim down to the step's limit",
    "oom": "stopped at once: a task waited for memory (or the OOM killer ran)",
    "floor": "reached the floor: what reclaim cannot free, plus the margin",
}


def _hold(knobs: Knobs, seconds: float, check: Callable[[], None] | None) -> None:
    """Hold the step, returning early when a v1 task waits in an OOM (under_oom)."""
    deadline = time.monotonic() + seconds
    while True:
        if check is not None:
            check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if knobs.waiting():
            return
        time.sleep(min(left, POLL_SECONDS))
