"""Reap what a capplan run that was killed (SIGKILL, the OOM killer, a power cut of its
container) left behind: its cgroups and the processes still in them.

A cgroup capplan makes is named ``capplan-launch-PID-START-PIDNS-N`` (``cgroup.py``): the
maker's pid, its start time and its pid namespace. A cgroup so named whose maker is gone
(no such pid, or a pid with another start time: it was reused) is a dead run's; its
processes are SIGKILLed (v2 ``cgroup.kill`` where it exists, else each member of
``cgroup.procs`` until none is left), its directories removed, children first, and one line
on stderr says so. A cgroup whose maker is alive, or whose maker lived in another pid
namespace (its pid means nothing here), or whose name is not capplan's, is never touched.

capplan writes no temporary files for the processes it starts (their stderr is kept in
memory: ``children.StreamTail``), so a dead run leaves no directory to remove. The one file
it writes is the pressure probe's state (``capacity.measure.probe``): the original value of
each cgroup knob it lowered, kept while the value is changed. A state file whose maker is
gone has its values written back (a removed cgroup needs nothing) and is removed.

It is cheap: one read of /proc/self/mounts and a directory listing of each place capplan
creates its cgroups (the top of each memory hierarchy, the cgroup capplan runs in, and the
cgroups one level below the top), so every measuring command can run it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import TextIO

from capacity.errors import CapplanError
from capacity.measure.cgroup import (
    CgroupError,
    OwnCgroup,
    RunIdentity,
    candidate_parents,
    parse_own_name,
    pid_namespace,
)
from capacity.measure.probe import read_states, restore_knobs
from capacity.measure.procfs import DEFAULT_ROOT, read_stat


@dataclasses.dataclass
class DeadRun:
    """What one killed capplan run had left, and what became of it."""

    pid: int
    cgroups: list[Path] = dataclasses.field(default_factory=list)
    processes: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        noun = "process" if self.processes == 1 else "processes"
        parts = [f"{self.processes} {noun}"]
        parts += [f"cgroup {path}" for path in self.cgroups]
        text = (
            f"Cleaned up after an earlier capplan run (pid {self.pid}) that was killed: "
            + ", ".join(parts)
        )
        if self.problems:
            text += f"; could not remove everything: {self.problems[0]}"
        return text


def maker_is_alive(maker: RunIdentity, namespace: int | None) -> bool | None:
    """True if the capplan process that named a cgroup still runs, False if it is gone,
    None when this process cannot tell (it was in another pid namespace)."""
    if maker.start_ticks is None:
        # A legacy name: the pid alone. Any process with that pid might be its maker.
        return os.path.exists(f"/proc/{maker.pid}")
    if maker.pid_namespace is None or maker.pid_namespace != namespace:
        return None
    try:
        stat = read_stat(maker.pid)
    except CapplanError:
        return not _gone(maker.pid)
    return stat.start_ticks == maker.start_ticks


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _places(root: Path) -> list[tuple[int, Path, Path]]:
    """Where capplan creates cgroups, and the cgroups one level below each mount's top."""
    places: dict[Path, tuple[int, Path, Path]] = {}
    for version, parent, mount in candidate_parents(root):
        places.setdefault(parent, (version, parent, mount))
        if parent == mount:
            with contextlib.suppress(OSError):
                for child in mount.iterdir():
                    if child.is_dir() and parse_own_name(child.name) is None:
                        places.setdefault(child, (version, child, mount))
    return list(places.values())


def find_dead_cgroups(root: Path = DEFAULT_ROOT) -> list[tuple[RunIdentity, OwnCgroup]]:
    """Every cgroup named as capplan's whose maker is certainly gone."""
    namespace = pid_namespace()
    me = os.getpid()
    found: list[tuple[RunIdentity, OwnCgroup]] = []
    seen: set[Path] = set()
    for version, parent, mount in _places(root):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            parsed = parse_own_name(entry.name)
            if parsed is None or entry in seen or not entry.is_dir() or entry.is_symlink():
                continue
            _prefix, maker = parsed
            if maker.pid == me or maker_is_alive(maker, namespace) is not False:
                continue
            seen.add(entry)
            found.append((maker, OwnCgroup(version=version, path=entry, mount=mount)))
    return found


def reap(root: Path = DEFAULT_ROOT) -> list[DeadRun]:
    """Stop and remove what killed capplan runs left; one DeadRun per run."""
    runs: dict[tuple[int, int | None], DeadRun] = {}
    for maker, group in find_dead_cgroups(root):
        if not group.path.exists():  # another capplan run got there first
            continue
        pids = group.pids()
        try:
            group.remove()
        except CgroupError as err:
            problem: str | None = err.message
        except OSError as err:
            problem = f"{group.path}: {err.strerror or err}"
        else:
            problem = None
        run = runs.setdefault((maker.pid, maker.start_ticks), DeadRun(pid=maker.pid))
        run.cgroups.append(group.path)
        run.processes += len(pids)
        if problem is not None:
            run.problems.append(problem)
    return list(runs.values())


def restore_dead_probes(directory: Path | None = None) -> list[str]:
    """Write back what the probes of killed runs lowered; one line per state file."""
    namespace = pid_namespace()
    lines: list[str] = []
    for state in read_states(directory):
        if state.maker.pid == os.getpid() or maker_is_alive(state.maker, namespace) is not False:
            continue
        problems = restore_knobs(state.knobs)
        if not problems:
            with contextlib.suppress(OSError):
                state.path.unlink()
        restored = ", ".join(f"{k.file} = {k.original}" for k in state.knobs if k.file.exists())
        line = (
            f"Restored what the probe of an earlier capplan run (pid {state.maker.pid}) that "
            f"was killed had lowered: {restored or 'nothing left to restore'}"
        )
        if problems:
            line += f"; could not restore everything: {problems[0]}"
        lines.append(line)
    return lines


def clean_up_after_killed_runs(stream: TextIO | None = None, root: Path = DEFAULT_ROOT) -> int:
    """Reap what killed runs left and say so, one line per run on stderr; returns how many
    runs there were. Never fails: a problem is part of the line, not an exception."""
    out = sys.stderr if stream is None else stream
    lines: list[str] = []
    if root == DEFAULT_ROOT:  # a captured tree has no knobs to restore
        with contextlib.suppress(OSError, CapplanError):
            lines += restore_dead_probes()
    runs: list[DeadRun] = []
    with contextlib.suppress(OSError, CapplanError):
        runs = reap(root)
    lines += [run.line() for run in runs]
    for line in lines:
        with contextlib.suppress(OSError, ValueError):
            out.write(line + "\n")
            out.flush()
    return len(lines)
