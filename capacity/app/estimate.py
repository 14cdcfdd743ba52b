"""``capplan estimate`` as one library call: select, sample, fit, predict.

``run_estimate(EstimateOptions(...))`` does everything the command does and returns the
same ``Estimate`` record the command prints and saves: load generators and the demo are
started and always stopped, the exact method falls back to smaps with the reason recorded,
the server's version is detected, and the measurement itself (samples, interval, demo
sizes) is stamped on the result so that ``check`` can repeat it. The CLI only turns its
flags into ``EstimateOptions`` and renders what comes back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from capacity.cache_records import FileProbe
from capacity.errors import CapplanError, ModelError
from capacity.measure.launch import LaunchOptions
from capacity.measure.probe import ProbeRule
from capacity.measure.procfs import DEFAULT_ROOT
from capacity.measure.workload import Selector
from capacity.model.assemble import BudgetOptions
from capacity.records import (
    DemoOptions,
    Environment,
    Estimate,
    ExactFallback,
    GroupEstimate,
    LoadRun,
    Measurement,
    Method,
    Probe,
    ProbeRun,
    ProcessMemory,
    Snapshot,
)
from capacity.roles_records import Group
from capacity.shmem_records import ShmChoice

if TYPE_CHECKING:
    from capacity.measure.cgroupselect import Target
    from capacity.measure.groups import Grouping

ProgressCallback = Callable[[int, int], None]
# A progress display: given the number of steps and a label, a context that yields the
# callback to advance it. The CLI passes a rich bar; the library default shows nothing.
Progress = Callable[[int, str], AbstractContextManager[ProgressCallback]]


@contextlib.contextmanager
def no_progress(total: int, label: str) -> Iterator[ProgressCallback]:
    yield lambda done, total: None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EstimateOptions:
    """What to measure and how; exactly one of ``selector``, ``demo`` and ``launch``.

    ``method`` None picks exact where available (else smaps, saying why); EXACT or SMAPS
    insist on that method, as ``check`` does to measure the way its baseline was measured.
    """

    selector: Selector | None = None
    demo: DemoOptions | None = None
    launch: LaunchOptions | None = None
    samples: int = 5
    interval: float = 1.0
    root: Path = DEFAULT_ROOT
    method: Method | None = None
    budget: BudgetOptions = dataclasses.field(default_factory=BudgetOptions)
    load: str | None = None
    shell: bool = False
    warmup: float = 0.0
    deep: bool = False
    # The command as typed, recorded in the environment (the CLI passes its argv).
    command_line: tuple[str, ...] = ()
    # Shared memory segments at their configured size, or as touched (issue 14).
    shm: ShmChoice = "auto"
    # With several groups, the (server, pool) whose estimate is the top level (check
    # passes its baseline's); None: the group with the most workers.
    group: tuple[str, str | None] | None = None
    # --probe (issue 14): the pressure probe of the launch's cgroup after each step, or of
    # the selected cgroup (--cgroup, --unit) once after sampling; None: no probe.
    probe: ProbeRule | None = None

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("selector", self.selector),
                ("demo", self.demo),
                ("launch", self.launch),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(f"give exactly one of selector, demo or launch (got {given})")
        if self.method is not None and self.method not in (Method.SMAPS, Method.EXACT):
            raise ValueError(f"method {self.method} cannot be asked for")


def run_estimate(options: EstimateOptions, *, progress: Progress = no_progress) -> Estimate:
    """Measure as ``options`` say and return the whole answer (see the module docstring)."""
    from capacity.measure.leftovers import clean_up_after_killed_runs

    clean_up_after_killed_runs()  # what a killed capplan run left (issue 11)
    if options.launch is not None:
        return _run_launch(options, options.launch, progress)
    return _run_attach(options, progress)


def _run_attach(options: EstimateOptions, progress: Progress) -> Estimate:
    from capacity.measure import sampler, workload
    from capacity.measure.environment import read_environment
    from capacity.measure.groups import Grouping
    from capacity.measure.loadgen import LoadGenerators
    from capacity.measure.probe import probe_cgroup
    from capacity.measure.procfs import read_cmdline, read_exe

    root = options.root
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        generators = (
            stack.enter_context(LoadGenerators(options.load, shell=options.shell))
            if options.load is not None
            else None
        )
        if options.demo is not None:
            demo = options.demo
            launched = stack.enter_context(
                workload.launched_demo(
                    shared=str(demo.shared_bytes),
                    private=str(demo.private_bytes),
                    workers=demo.workers,
                    dirty=demo.dirty,
                    shm=str(demo.shm_bytes),
                )
            )
            selector = workload.Selector(pid=launched.parent_pid)
            selector_text = "--demo"
        else:
            assert options.selector is not None
            selector = options.selector
            selector_text = str(selector)
        target = workload.resolve_target(selector, root)  # --cgroup, --unit: once
        if options.probe is not None:
            _check_probe_target(target, root)
        first = workload.select_processes(selector, root, target=target)
        # The groups and roles of the first selection (issue 13): each group is fitted on
        # its own, with its non-worker roles as fixed cost.
        grouping = Grouping.read(first, root)
        parent_pid = first.parents[0].pid if first.parents else first.members[0].pid
        try:
            parent_cmdline = read_cmdline(parent_pid, root)
        except CapplanError:
            parent_cmdline = ()
        exe = read_exe(parent_pid, root)
        reader = sampler.Sampler(
            selector,
            root,
            method=options.method,
            exclude=generators.exclude if generators else None,
            deep=options.deep,
            target=target,
            grouping=grouping,
        )
        if generators is not None:
            generators.start()
        if options.warmup > 0:
            time.sleep(options.warmup)
        with progress(options.samples, "sampling") as advance:
            snapshots = sampler.collect(
                selector,
                options.samples,
                options.interval,
                root=root,
                on_progress=advance,
                sampler=reader,
            )
        files = _probe_file_cache(snapshots, root)  # while the workload and its load run
        probe = None
        if options.probe is not None and target is not None and target.memory is not None:
            # While the load still runs: the probe watches the workload at work.
            version, directory, _mount = target.memory
            run = probe_cgroup(
                version,
                directory,
                target.path,
                len(first.members),
                options.probe,
                check=lambda: _check_still_running(directory, target.path),
            )
            probe = _probe_record("attach", options.probe, (run,))
        runs = generators.stop() if generators is not None else ()
        environment = read_environment(
            root, workload_pid=parent_pid, executable=exe, command_line=options.command_line
        )
    fallback = reader.exact_fallback()
    fitted = fit_groups(
        options,
        grouping,
        grouping.snapshots(snapshots, reader.group_pages),
        whole=snapshots,
        selector_text=selector_text,
        environment=environment,
        started=started,
        fallback=fallback,
        runs=runs,
        default=(exe, parent_cmdline),
        probe=files,
    )
    if reader.target is not None:
        fitted = dataclasses.replace(
            fitted, workload=dataclasses.replace(fitted.workload, cgroup=reader.target.path)
        )
    if probe is not None:  # the probe ran at the worker count the fit counts
        count = fitted.workload.worker_count
        probe = dataclasses.replace(
            probe, runs=tuple(dataclasses.replace(r, instances=count) for r in probe.runs)
        )
    return dataclasses.replace(
        fitted,
        probe=probe,
        measurement=Measurement(
            samples=options.samples, interval_seconds=options.interval, demo=options.demo
        ),
    )


def fit_groups(
    options: EstimateOptions,
    grouping: Grouping,
    per_group: tuple[tuple[Snapshot, ...], ...],
    *,
    selector_text: str,
    environment: Environment,
    started: float | None = None,
    fallback: ExactFallback | None = None,
    runs: tuple[LoadRun, ...] = (),
    default: tuple[str | None, tuple[str, ...]] = (None, ()),
    whole: Sequence[Snapshot] = (),
    probe: FileProbe | None = None,
) -> Estimate:
    """Fit every group on its own snapshots (``per_group``, from ``Grouping.snapshots``)
    and put the answers together (``assemble.combine``): the top level is
    ``options.group``'s group when it names one, else the group with the most workers.

    A group with nothing to fit (no worker, one worker) is named in GROUPS_NOT_FITTED;
    when no group fits, the error of the group with the most workers is raised, and with
    one group its own error, as before groups. ``default`` is the executable and command
    line to record for a group whose master was not selected; ``started`` the
    ``time.monotonic()`` the measurement began at (for ``timing``). ``whole`` are the
    samples of the whole selection: where its cgroup holds nothing else, they calibrate
    the kernel part of every group (a group's own snapshots cannot: the cgroup holds the
    other groups too).

    The workload's page cache (``model/filecache``: its own cgroup's LRU lists over
    ``whole``, else ``probe``, the per-file reading) is the whole selection's: with one
    group the conservative answer keeps its hot part; with several it is reported at the
    top level and kept by none (no group alone reads it)."""
    from capacity.measure.serverconf import postgresql_settings
    from capacity.measure.versions import detect_version
    from capacity.model import assemble, filecache, suggest
    from capacity.model.accounting import slab_calibration

    started = time.monotonic() if started is None else started
    calibration = slab_calibration(whole) if whole and len(grouping.groups) > 1 else None
    file_cache = filecache.classify(
        whole or (per_group[0] if per_group else ()), probe, environment.page_size
    )
    several = len(grouping.groups) > 1

    root = options.root
    estimates: list[Estimate] = []
    records: list[GroupEstimate] = []
    not_fitted: list[tuple[str, str]] = []
    errors: list[tuple[int, CapplanError]] = []
    for index, (group, snapshots) in enumerate(zip(grouping.groups, per_group, strict=True)):
        label = _label(group)
        if not snapshots:
            not_fitted.append((label, "none of its processes was read in any sample"))
            continue
        exe, cmdline = _instance_facts(grouping, group, default)
        last = snapshots[-1]
        roles = _roles(grouping, index, last.processes)
        described = assemble.describe_workload(
            selector_text,
            snapshots,
            exe,
            cmdline,
            group=group,
            roles={role: len(processes) for role, processes in roles.items()},
        )
        try:
            estimate = assemble.build_estimate(
                workload=described,
                snapshots=snapshots,
                environment=environment,
                budget_options=options.budget,
                total_seconds=time.monotonic() - started,
                samples_requested=options.samples,
                method=Method.SMAPS if options.method == Method.SMAPS else None,
                exact_fallback=fallback,
                loads=runs,
                server=group.rule,
                calibration=calibration,
                file_cache=None if several else file_cache,
                shm=options.shm,
            )
        except CapplanError as err:
            if len(grouping.groups) == 1:
                raise
            errors.append((len(group.workers), err))
            not_fitted.append((label, err.message))
            continue
        settings = (
            postgresql_settings(group.instance, root)
            if group.rule == "postgresql" and grouping.facts_of(group.instance) is not None
            else ()
        )
        instance_cost = set(grouping.classification.shared_of(group))
        shared = sorted(
            {
                name
                for name, members in roles.items()
                if any(p.pid in instance_cost for p in members)
            }
        )
        records.append(
            assemble.group_estimate(
                estimate=estimate,
                group=group,
                roles=roles,
                shared_roles=shared,
                settings=settings,
                calibration=calibration,
            )
        )
        estimates.append(estimate)
    if not estimates:
        if not errors:
            raise ModelError(
                f"no process of {selector_text} was read in any sample",
                hint="is the workload restarting? measure it once it is up",
            )
        errors.sort(key=lambda item: -item[0])
        raise errors[0][1]
    top, chosen = _top_group(records, options.group)
    result = assemble.combine(estimates, records, top=top, chosen=chosen, not_fitted=not_fitted)
    if several and file_cache is not None:
        result = dataclasses.replace(
            result,
            file_cache=dataclasses.replace(
                file_cache,
                note="the selection's groups share this cache: no group's answer keeps it",
            ),
        )
    if root == Path("/"):
        # Only on the live host: a captured tree's executable path is another host's.
        w = result.workload
        software = suggest.recognise(w.name, w.exe, w.parent_cmdline)
        result = dataclasses.replace(
            result,
            environment=dataclasses.replace(
                environment,
                executable_version=detect_version(software, w.exe, w.parent_cmdline),
            ),
        )
    return result


def _probe_file_cache(snapshots: Sequence[Snapshot], root: Path) -> FileProbe | None:
    """The per-file reading of the page cache (``measure/filecache``), for a workload on
    the live host without a memory cgroup of its own (that cgroup is the better reading)."""
    from capacity.measure.filecache import probe_files
    from capacity.model.filecache import has_own_cgroup

    if root != Path("/") or not snapshots or has_own_cgroup(snapshots):
        return None
    try:
        return probe_files([p.pid for p in snapshots[-1].processes], root)
    except (OSError, CapplanError):  # the estimate stands without it: no page-cache line
        return None


def _label(group: Group) -> str:
    if group.pool is not None:
        return f"{group.server} pool {group.pool}"
    return f"{group.server} {group.instance}"


def _instance_facts(
    grouping: Grouping, group: Group, default: tuple[str | None, tuple[str, ...]]
) -> tuple[str | None, tuple[str, ...]]:
    """The executable and command line of the group's master, where it was selected."""
    facts = grouping.facts_of(group.instance)
    if facts is None:
        return default
    return facts.exe, facts.cmdline


def _roles(
    grouping: Grouping, index: int, processes: Sequence[ProcessMemory]
) -> dict[str, list[ProcessMemory]]:
    """Role name -> the processes of group ``index`` in that role, in the classifier's
    order (the master first), the instance's shared roles before the group's own; the
    worker role is there even with no process in it."""
    group = grouping.groups[index]
    found: dict[str, list[ProcessMemory]] = {}
    for process in processes:
        name = grouping.role_of(index, process)
        if name is not None:
            found.setdefault(name, []).append(process)
    order = [name for name in found if name not in group.roles] + list(group.roles)
    return {
        name: found.get(name, []) for name in order if found.get(name) or name == group.worker_role
    }


def _top_group(
    records: Sequence[GroupEstimate], wanted: tuple[str, str | None] | None
) -> tuple[int, str]:
    """Which group the top level is, and in what words it was chosen."""
    from capacity.model import assemble

    if wanted is not None:
        same = [i for i, g in enumerate(records) if (g.server, g.pool) == wanted]
        if len(same) == 1:
            return same[0], "the group the baseline measured"
    return assemble.most_workers(records), "the group with the most workers"


def _run_launch(options: EstimateOptions, launch: LaunchOptions, progress: Progress) -> Estimate:
    """``estimate --launch``: start, measure, always stop; then fit both sides."""
    from capacity.measure.environment import read_environment
    from capacity.measure.launch import Launcher
    from capacity.measure.procfs import read_exe
    from capacity.model import assemble

    started = time.monotonic()
    total = launch.instances + launch.samples - 1
    if options.probe is not None:
        launch = dataclasses.replace(launch, probe=options.probe)
    with Launcher(launch) as launcher:
        with progress(total, "launching") as advance:
            outcome = launcher.run(on_progress=advance)
        environment = read_environment(
            workload_pid=outcome.first_pid,
            executable=read_exe(outcome.first_pid),
            command_line=options.command_line,
        )
    return assemble.build_launch_estimate(
        launch=outcome.launch,
        snapshots=outcome.snapshots,
        environment=environment,
        budget_options=options.budget,
        total_seconds=time.monotonic() - started,
        loads=outcome.loads,
        no_cgroup_reason=outcome.no_cgroup_reason,
        probe=_probe_record("launch", options.probe, outcome.probes)
        if options.probe is not None
        else None,
    )


def _check_still_running(directory: Path, shown: str) -> None:
    """The probe stops (and writes the limit back) when the workload it squeezes is gone."""
    from capacity.measure.cgroup import cgroup_pids_recursive

    if not cgroup_pids_recursive(directory):
        raise CapplanError(
            f"the workload in cgroup {shown} exited while capplan probed it; the original "
            "limit was written back",
            hint="probe it while it runs: estimate --cgroup PATH --probe",
        )


def _check_probe_target(target: Target | None, root: Path) -> None:
    """``--probe`` in attach mode needs a memory cgroup the selection names, on this host."""
    if root != DEFAULT_ROOT:
        raise CapplanError(
            "--probe changes the live host's cgroup limits: not with --root",
            hint="leave out --probe to read a captured tree",
        )
    if target is None:
        raise CapplanError(
            "--probe needs the workload in a memory cgroup of its own",
            hint="select it with --cgroup PATH or --unit NAME, or start it with --launch",
        )
    if target.memory is None:
        raise CapplanError(
            f"--probe: no memory controller accounts cgroup {target.path}",
            hint="probe a cgroup of the memory hierarchy (v2, or v1 memory)",
        )


def _probe_record(
    mode: Literal["launch", "attach"], rule: ProbeRule, runs: Sequence[ProbeRun]
) -> Probe:
    return Probe(
        mode=mode,
        step_share=rule.step_share,
        hold_seconds=rule.hold_seconds,
        stall_threshold=rule.stall_threshold,
        refault_threshold_bytes=rule.refault_threshold_bytes,
        runs=tuple(runs),
    )
