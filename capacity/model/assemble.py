"""Compose measured snapshots into the whole answer: model, budget, prediction, comparison.

Pure: it takes what the sampler measured and the options the user gave, and returns an
``Estimate`` record that every output format renders. The CLI and library users call it
the same way.

A selection of several groups (issue 13) is fitted one group at a time, each on its own
snapshots (``measure/groups``), never one line through groups that differ:
``group_estimate`` records each group's answer, ``combine`` makes the whole ``Estimate``
with one group's estimate at the top level and every group in ``groups``.
"""

from __future__ import annotations

import dataclasses
import shlex
import statistics
from collections.abc import Mapping, Sequence

from capacity.cache_records import FileCache
from capacity.errors import ModelError
from capacity.model import (
    accounting,
    activity,
    diagnostics,
    drift,
    estimators,
    filecache,
    shmem,
    suggest,
)
from capacity.model.fitting import (
    RESOLUTION_SD,
    cgroup_resolution_sd,
    fit,
    fit_independent,
    make_budget,
    predict,
    quadratic_check,
    slope_of,
    systematic_sd,
)
from capacity.model.probe import probed_totals
from capacity.records import (
    Activity,
    CgroupMemory,
    Drift,
    Environment,
    Estimate,
    ExactFallback,
    GroupEstimate,
    Launch,
    LaunchStep,
    LoadRun,
    Method,
    ModelFit,
    Notice,
    Probe,
    ProcessMemory,
    ServerSetting,
    SlabCalibration,
    Snapshot,
    Timing,
    Workload,
)
from capacity.roles_records import Group
from capacity.shmem_records import ShmChoice
from capacity.units import parse_size, parse_size_or_percent


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetOptions:
    """What the user said about the budget: ``--memory`` and ``--reserve``, both optional.

    The field names are ``model.make_budget``'s keyword arguments, so the options pass as
    ``**dataclasses.asdict(options)``."""

    memory: int | None = None
    memory_text: str | None = None
    reserve_bytes: int | None = None
    reserve_fraction: float | None = None
    reserve_text: str | None = None

    @classmethod
    def parse(cls, memory: str | None = None, reserve: str | None = None) -> BudgetOptions:
        """``--memory SIZE`` and ``--reserve SIZE|PCT`` as typed: the one place they are
        read (units.SizeError on bad input)."""
        reserve_bytes, reserve_fraction = (
            parse_size_or_percent(reserve) if reserve else (None, None)
        )
        return cls(
            memory=parse_size(memory) if memory else None,
            memory_text=memory,
            reserve_bytes=reserve_bytes,
            reserve_fraction=reserve_fraction,
            reserve_text=reserve,
        )


def describe_workload(
    selector: str,
    snapshots: Sequence[Snapshot],
    exe: str | None = None,
    parent_cmdline: tuple[str, ...] = (),
    *,
    group: Group | None = None,
    roles: Mapping[str, int] | None = None,
) -> Workload:
    """What the snapshots measured; with ``group``, the group they are of and its roles
    (role name -> count in the last sample)."""
    last = snapshots[-1]
    names = sorted({p.name for p in last.processes})
    workload = Workload(
        selector=selector,
        name=names[0] if len(names) == 1 else ",".join(names),
        pids=tuple(p.pid for p in last.processes),
        parent_pids=tuple(p.pid for p in last.parents),
        worker_count=len(last.workers),
        parent_cmdline=parent_cmdline,
        exe=exe,
    )
    if group is None:
        return workload
    return dataclasses.replace(
        workload,
        server=group.server,
        pool=group.pool,
        instance=group.instance,
        rule=group.rule,
        worker_role=group.worker_role,
        roles=dict(roles or {}),
    )


def timing(snapshots: Sequence[Snapshot], total_seconds: float) -> Timing:
    """What the measurement cost: each sample's reads, each exact walk, the whole run."""
    return Timing(
        sample_read_seconds=tuple(round(s.read_seconds, 6) for s in snapshots),
        total_seconds=round(total_seconds, 3),
        exact_read_seconds=tuple(s.pages.read_seconds for s in snapshots if s.pages),
    )


def build_estimate(
    *,
    workload: Workload,
    snapshots: Sequence[Snapshot],
    environment: Environment,
    budget_options: BudgetOptions,
    total_seconds: float,
    samples_requested: int,
    under_load: bool = False,
    method: Method | None = None,
    exact_fallback: ExactFallback | None = None,
    loads: Sequence[LoadRun] = (),
    server: str | None = None,
    calibration: SlabCalibration | None = None,
    file_cache: FileCache | None = None,
    shm: ShmChoice = "auto",
) -> Estimate:
    """The whole answer. ``method`` None picks "exact" when a snapshot carries an exact
    page walk, else "smaps"; ``exact_fallback`` is why exact was wanted but not used;
    ``server`` the rule that classified the workload (for the hints); ``calibration`` the
    slab calibration when it comes from elsewhere (a group's cgroup holds the other groups
    too: the whole selection's snapshots calibrate it), else from ``snapshots``;
    ``file_cache`` the workload's page cache (``model/filecache``), whose hot part the
    conservative answer keeps; ``shm``
    how shared memory segments are counted (``model/shmem``)."""
    if not snapshots:
        raise ModelError("no samples were taken")
    all_snapshots = snapshots
    # Copy-on-write drift: while workers grow, the prediction uses the plateau's samples,
    # or only the last one (a lower bound on the cost) when they have not flattened.
    measured_drift = drift.measure(drift.worker_samples(snapshots), "worker", loads)
    if measured_drift is not None and measured_drift.growing:
        snapshots = snapshots[measured_drift.fit_from_sample :]
    if calibration is None:
        calibration = accounting.slab_calibration(snapshots)
    if method is None:
        method = Method.EXACT if accounting.exact_snapshots(snapshots) else Method.SMAPS
    points = accounting.points_for(method, snapshots, calibration, shm)
    if method == Method.EXACT:
        if not accounting.exact_snapshots(snapshots):
            raise ModelError(
                "no sample carries an exact page walk",
                hint="measure with --method exact as root, or use --method smaps",
            )
        breakdown = accounting.exact_breakdown(snapshots, calibration, shm)
        reclaimable = accounting.exact_reclaimable_once(snapshots, calibration)
    else:
        breakdown = accounting.smaps_breakdown(snapshots, calibration, shm)
        reclaimable = accounting.reclaimable_once(snapshots, calibration)
    model = dataclasses.replace(
        fit(points, method, breakdown),
        reclaimable_bytes=reclaimable,
        layout_allowance_bytes=accounting.layout_allowance(snapshots, environment.page_size),
        systematic_sd_bytes=systematic_sd(breakdown),
    )
    if file_cache is not None:
        file_cache = filecache.with_kept(file_cache, breakdown)
        model = dataclasses.replace(model, hot_cache_bytes=file_cache.kept_bytes)
    fitted = accounting.exact_snapshots(snapshots) if method == Method.EXACT else snapshots
    shared_memory = shmem.summary(fitted, shm)
    if shared_memory is not None and shared_memory.kept_bytes:
        model = dataclasses.replace(model, shm_kept_bytes=shared_memory.kept_bytes)

    estimate = _estimate(
        workload=workload,
        model=model,
        measured=snapshots,
        samples=all_snapshots,
        judged=all_snapshots,
        workload_total=int(statistics.fmean(accounting.workload_totals(points))),
        cgroup=snapshots[-1].cgroup,
        budget_options=budget_options,
        measured_drift=measured_drift,
        loads=loads,
        environment=environment,
        total_seconds=total_seconds,
        samples_requested=samples_requested,
        under_load=under_load or bool(loads),
        exact_fallback=exact_fallback,
        measured_activity=activity.measure(all_snapshots),
        server=server,
    )
    estimate = dataclasses.replace(estimate, shared_memory=shared_memory)
    return estimate if file_cache is None else dataclasses.replace(estimate, file_cache=file_cache)


def _estimate(
    *,
    workload: Workload,
    model: ModelFit,
    measured: Sequence[Snapshot],
    samples: Sequence[Snapshot],
    judged: Sequence[Snapshot],
    workload_total: int,
    cgroup: CgroupMemory | None,
    budget_options: BudgetOptions,
    measured_drift: Drift | None,
    loads: Sequence[LoadRun],
    environment: Environment,
    total_seconds: float,
    samples_requested: int,
    under_load: bool,
    exact_fallback: ExactFallback | None = None,
    advise_confidence: bool = True,
    measured_activity: Activity | None = None,
    server: str | None = None,
) -> Estimate:
    """The tail attach and launch mode share: budget, prediction, the usual rules and
    the warnings. ``measured_activity``: whether the workers (launch mode: the instances)
    ran. ``measured`` are the samples the model was fitted on (the host figures
    are the last one's), ``judged`` those drift and load are judged over, ``samples``
    every sample taken. ``advise_confidence`` False leaves LOW_CONFIDENCE to the caller,
    whose advice differs (launch mode: more instance counts)."""
    last = measured[-1]
    if last.host is None:
        raise ModelError("the snapshot has no host memory figures")
    budget = make_budget(
        last.host,
        workload_total,
        cgroup=cgroup,
        **dataclasses.asdict(budget_options),
    )
    prediction = predict(model, budget)
    if measured_drift is not None and measured_drift.growing and not measured_drift.plateau:
        prediction = dataclasses.replace(prediction, max_is_upper_bound=True)
    warnings = diagnostics.diagnose(
        measured,
        model,
        budget,
        prediction,
        environment,
        selector=workload.selector,
        samples_requested=samples_requested,
        under_load=under_load,
        exact_fallback=exact_fallback,
        advise_confidence=advise_confidence,
        activity=measured_activity,
        workload=workload,
        server=server,
    )
    warnings += diagnostics.diagnose_load_and_drift(
        measured_drift, loads, judged, selector=workload.selector
    )
    return Estimate(
        workload=workload,
        samples=tuple(samples),
        model=model,
        budget=budget,
        prediction=prediction,
        estimators=estimators.compare(measured, model, budget, prediction),
        warnings=tuple(warnings),
        environment=environment,
        timing=timing(samples, total_seconds),
        load=tuple(loads),
        drift=measured_drift,
        activity=measured_activity,
    )


# --------------------------------------------------------------------------- groups


def role_costs(
    estimate: Estimate,
    roles: Mapping[str, Sequence[ProcessMemory]],
    worker_role: str,
    calibration: SlabCalibration | None = None,
) -> dict[str, int]:
    """Role name -> the summed cost of its processes, as the model counts them: a worker's
    marginal cost (USS and kernel memory, the slab as calibrated), a fixed role's own pages
    less their page cache (reclaimable, kept apart) and its kernel memory. The pages they
    share are in the fixed cost once, in no role. ``calibration`` is the fit's (by default
    the one ``estimate``'s samples give)."""
    if calibration is None:
        calibration = accounting.slab_calibration(estimate.samples)

    def cost(process: ProcessMemory, worker: bool) -> int:
        total = accounting.process_cost(process, calibration).total_bytes
        return total if worker else total - accounting.private_file(process)

    return {
        role: sum(cost(p, role == worker_role) for p in processes)
        for role, processes in roles.items()
    }


def group_estimate(
    *,
    estimate: Estimate,
    group: Group,
    roles: Mapping[str, Sequence[ProcessMemory]],
    shared_roles: Sequence[str] = (),
    settings: Sequence[ServerSetting] = (),
    calibration: SlabCalibration | None = None,
) -> GroupEstimate:
    """``estimate`` (fitted on ``group``'s snapshots alone) as one entry of ``groups``.
    ``roles`` are the processes of each role in the last sample; the suggestion is for
    the conservative count (the point count without one)."""
    prediction = estimate.prediction
    record = GroupEstimate(
        rule=group.rule,
        instance=group.instance,
        server=group.server,
        pool=group.pool,
        worker_role=group.worker_role,
        worker_count=estimate.workload.worker_count,
        roles={role: len(processes) for role, processes in roles.items()},
        role_cost_bytes=role_costs(estimate, roles, group.worker_role, calibration),
        shared_roles=tuple(shared_roles),
        mpm=group.mpm,
        threads_per_child=group.threads_per_child,
        threads=group.threads,
        pids=estimate.workload.pids,
        model=estimate.model,
        budget=estimate.budget,
        prediction=prediction,
        settings=tuple(settings),
        warnings=estimate.warnings,
        activity=estimate.activity,
    )
    count = (
        prediction.max_instances_conservative
        if prediction.max_instances_conservative is not None
        else prediction.max_instances
    )
    return dataclasses.replace(record, suggestion=suggest.for_group(record, count))


def most_workers(groups: Sequence[GroupEstimate]) -> int:
    """The group the top level shows by default: the one with the most workers, the first
    of those."""
    return max(range(len(groups)), key=lambda i: (groups[i].worker_count, -i))


def combine(
    estimates: Sequence[Estimate],
    groups: Sequence[GroupEstimate],
    *,
    top: int,
    chosen: str = "the group with the most workers",
    not_fitted: Sequence[tuple[str, str]] = (),
) -> Estimate:
    """The whole answer of a selection: ``estimates[top]`` at the top level, every group
    in ``groups``; with several groups a SEVERAL_GROUPS warning names the top level's, and
    GROUPS_NOT_FITTED names the groups (label, why) that had nothing to fit."""
    estimate = estimates[top]
    warnings = list(estimate.warnings)
    selector = estimate.workload.selector
    if len(groups) > 1:
        listed = ", ".join(f"{g.label} ({g.worker_count} {g.worker_role})" for g in groups)
        shown = groups[top]
        apart = [g for g in groups if g.instance not in (None, shown.instance)]
        warnings.insert(
            0,
            Notice(
                code="SEVERAL_GROUPS",
                message=f"{selector} holds {len(groups)} groups, each fitted on its own: "
                f"{listed}. The top level (model, prediction, samples, --save) is "
                f"{shown.label}, {chosen}; every group's answer is in groups",
                hint="read each group's answer in its section (JSON: groups)"
                + (
                    f", or measure one alone: capplan estimate --pid {apart[0].instance}"
                    if apart
                    else f"; its groups share one master (pid {shown.instance}), so "
                    "--pid selects them all"
                ),
            ),
        )
    if not_fitted:
        listed = "; ".join(f"{label}: {why}" for label, why in not_fitted)
        warnings.append(
            Notice(
                code="GROUPS_NOT_FITTED",
                message=f"{len(not_fitted)} group(s) of {selector} had no fit and are in no "
                f"answer: {listed}",
                hint="measure them while they run workers, or select them with --pid MASTER",
            )
        )
    return dataclasses.replace(estimate, groups=tuple(groups), warnings=tuple(warnings))


# --------------------------------------------------------------------------- launch mode


def build_launch_estimate(
    *,
    launch: Launch,
    snapshots: Sequence[Snapshot],
    environment: Environment,
    budget_options: BudgetOptions,
    total_seconds: float,
    loads: Sequence[LoadRun] = (),
    no_cgroup_reason: str | None = None,
    probe: Probe | None = None,
) -> Estimate:
    """Launch mode: fit the process-side and the system-side totals at N = 1..instances.

    With ``probe`` (``--probe``), the system side goes through the sizes the probe found
    (``model.probe.probed_totals``) instead of the cgroup's usage."""
    if not launch.steps:
        raise ModelError("no launch steps were measured")
    calibration = accounting.slab_calibration(snapshots)
    steps = []
    for step in launch.steps:
        snapshot = snapshots[step.sample]
        costs = accounting.instance_costs(snapshot, calibration)
        members = tuple(
            dataclasses.replace(
                m,
                marginal_bytes=costs.get(m.number, (0, 0))[0],
                private_bytes=costs.get(m.number, (0, 0))[1],
            )
            for m in step.members
        )
        steps.append(
            dataclasses.replace(
                step,
                members=members,
                process_total_bytes=accounting.launch_total(snapshot, calibration),
            )
        )
    counts = [s.instances for s in steps]
    last_step = steps[-1]
    last = snapshots[last_step.sample]
    process_totals = [float(s.process_total_bytes) for s in steps]
    system_totals = (
        probed_totals(steps, probe.runs)
        if probe is not None
        else [float(s.system_total_bytes) for s in steps]
    )

    # Drift over the samples taken with every instance running (the last step onwards).
    # While instances grow, each step's total is raised by what its instances still had
    # to grow (to the plateau, or to the last sample: then a lower bound), on both sides:
    # a copied page is charged to the cgroup as it shows in smaps.
    drift_snapshots = snapshots[last_step.sample :]
    measured_drift = drift.measure(
        drift.grouped_samples(drift_snapshots, lambda p: p.instance), "instance", loads
    )
    raw_process_totals = list(process_totals)
    if measured_drift is not None and measured_drift.growing:
        target = (
            measured_drift.plateau_bytes
            if measured_drift.plateau and measured_drift.plateau_bytes is not None
            else measured_drift.last_bytes
        )
        for index, step in enumerate(steps):
            missing = sum(target - m.private_bytes for m in step.members)
            process_totals[index] += missing
            system_totals[index] += missing

    breakdown = accounting.launch_breakdown(last, calibration)
    spread = [m.marginal_bytes for m in last_step.members]
    # Each process's figures are rounded to whole kB; a cgroup's usage to its charge batches.
    process_resolution = RESOLUTION_SD * len(last.processes) ** 0.5
    system_resolution = cgroup_resolution_sd(environment.cpu_count, environment.page_size)
    model = fit_independent(
        counts,
        process_totals,
        Method.SMAPS,
        breakdown,
        instance_sd=statistics.stdev(spread) if len(spread) > 1 else None,
        resolution_sd=process_resolution,
    )
    if measured_drift is not None and measured_drift.growing:
        adjustment = model.per_instance_bytes - round(slope_of(counts, raw_process_totals))
        measured_drift = dataclasses.replace(measured_drift, adjustment_bytes=adjustment)

    system_method = Method.CGROUP if launch.system_source == "cgroup" else Method.MEMAVAILABLE
    system_spread = [m.cgroup_bytes for m in last_step.members if m.cgroup_bytes is not None]
    system_model = None
    system_error = None
    try:
        system_model = fit_independent(
            counts,
            system_totals,
            system_method,
            instance_sd=statistics.stdev(system_spread) if len(system_spread) > 1 else None,
            resolution_sd=system_resolution,
        )
    except ModelError as err:
        system_error = err.message

    # The page cache of the run's cgroup (issue 14), over the samples with every instance
    # running: its hot part the conservative answer keeps, as in attach mode.
    file_cache = filecache.from_cgroup(drift_snapshots, environment.page_size)
    if file_cache is not None:
        file_cache = filecache.with_kept(file_cache, breakdown)
        model = dataclasses.replace(model, hot_cache_bytes=file_cache.kept_bytes)

    selector = f"--launch {shlex.quote(launch.command)} --instances {launch.instances}"
    name = ",".join(sorted({p.name for p in last.processes}))
    argv = tuple(shlex.split(launch.command)) if not launch.shell else ()
    # One group of instances, in one role: launch mode has no master to classify under.
    server = suggest.recognise(name, None, argv) or name
    workload = Workload(
        selector=selector,
        name=name,
        pids=tuple(p.pid for p in last.processes),
        parent_pids=(),
        worker_count=last_step.instances,
        parent_cmdline=argv,
        server=server,
        rule="launch",
        worker_role="instance",
        roles={"instance": last_step.instances},
    )
    estimate = _estimate(
        workload=workload,
        model=model,
        measured=[last],
        samples=snapshots,
        judged=drift_snapshots,
        workload_total=last_step.process_total_bytes,
        cgroup=None,  # sized for the host: the cgroup the instances run in is capplan's own
        budget_options=budget_options,
        measured_drift=measured_drift,
        loads=loads,
        environment=environment,
        total_seconds=total_seconds,
        samples_requested=len(drift_snapshots),
        # No idle warning without --load: separate instances share no copy-on-write pages
        # to lose (the breakdown's fixed shared pages are 0); with it, LOAD_MISSED when
        # the instances did not run.
        under_load=bool(loads),
        advise_confidence=False,
        measured_activity=activity.measure_instances(snapshots),
    )

    at = max(estimate.prediction.max_instances, *counts)
    # The process side's curvature is tested on the instances' own pages and kernel memory
    # (USS + kernel): shared pages are split by PSS, which saturates by construction
    # (N / (N + others) of each shared page), so they would look like curvature.
    own = [accounting.launch_own(snapshots[s.sample], calibration) for s in steps]
    checks = [quadratic_check(counts, own, Method.SMAPS, at, process_resolution)]
    if system_model is not None:
        checks.append(quadratic_check(counts, system_totals, system_method, at, system_resolution))
    difference = (
        split_difference(steps, snapshots, calibration)
        if system_model is not None and launch.system_source == "cgroup"
        else {}
    )
    completed = dataclasses.replace(
        launch,
        steps=tuple(steps),
        system_model=system_model,
        quadratic=tuple(checks),
        difference=difference,
    )
    # After the shared warnings: LOW_CONFIDENCE (advice: more instance counts) and the
    # launch's own.
    launch_warnings = diagnostics.diagnose_launch(
        completed,
        model,
        selector=selector,
        no_cgroup_reason=no_cgroup_reason,
        system_error=system_error,
    )
    estimate = dataclasses.replace(
        estimate,
        launch=completed,
        warnings=estimate.warnings + tuple(launch_warnings),
        file_cache=file_cache,
        probe=dataclasses.replace(probe, model=system_model) if probe is not None else None,
    )
    prediction = estimate.prediction
    group = GroupEstimate(
        rule="launch",
        instance=None,
        server=server,
        worker_role="instance",
        worker_count=last_step.instances,
        roles={"instance": last_step.instances},
        role_cost_bytes={"instance": sum(m.marginal_bytes for m in last_step.members)},
        pids=workload.pids,
        model=estimate.model,
        budget=estimate.budget,
        prediction=prediction,
        warnings=estimate.warnings,
        activity=estimate.activity,
    )
    count = prediction.max_instances_conservative
    suggestion = suggest.for_group(group, prediction.max_instances if count is None else count)
    return dataclasses.replace(
        estimate, groups=(dataclasses.replace(group, suggestion=suggestion),)
    )


def _system_kernel(stat: dict[str, int]) -> int:
    if "kernel" in stat:  # v2 since Linux 5.18; v1 memory.kmem.usage_in_bytes
        return stat["kernel"]
    return sum(stat.get(k, 0) for k in ("kernel_stack", "pagetables", "slab", "percpu"))


def split_difference(
    steps: Sequence[LaunchStep], snapshots: Sequence[Snapshot], calibration: SlabCalibration
) -> dict[str, int]:
    """Per instance, what the cgroup charged beyond the process-side figures, by part.

    Slopes over N of the cgroup's memory.stat parts against the processes' own: anonymous
    memory (cgroup anon vs the processes' Pss_Anon), file pages (cgroup file, shmem
    included, vs Pss_File + Pss_Shmem), kernel memory (measured vs estimated), sockets (v2
    only: v1 keeps them outside the usage), and what is left. The parts add up to the
    difference of the two sides' slopes. Pss_Anon/File/Shmem exist since Linux 5.3;
    before, the anonymous part is taken against USS.

    File pages read both ways. Positive: page cache the instances read or wrote (logs,
    data files), charged to the cgroup but mapped by nobody. Negative: the instances' PSS
    share of files they map with processes outside the workload (the interpreter, libc):
    PSS hands each new instance a share although no new page is used, and the cgroup is
    not charged for pages another cgroup brought in first.
    """
    counts = [s.instances for s in steps]
    stats = [s.cgroup.stat if s.cgroup is not None else {} for s in steps]
    processes = [accounting.launch_members(snapshots[s.sample]) for s in steps]
    has_pss_parts = any(p.rollup.pss_anon_bytes for ps in processes for p in ps)
    anon = [
        sum(p.rollup.pss_anon_bytes if has_pss_parts else p.rollup.uss_bytes for p in ps)
        for ps in processes
    ]
    files = [
        sum(p.rollup.pss_file_bytes + p.rollup.pss_shmem_bytes for p in ps) if has_pss_parts else 0
        for ps in processes
    ]
    kernel = [
        sum(accounting.process_cost(p, calibration).kernel_bytes for p in ps) for ps in processes
    ]
    process_slope = slope_of(counts, [s.process_total_bytes for s in steps])
    system_slope = slope_of(counts, [s.system_total_bytes for s in steps])
    version = steps[-1].cgroup.version if steps[-1].cgroup is not None else 2
    parts = {
        "anonymous memory": slope_of(counts, [st.get("anon", 0) for st in stats])
        - slope_of(counts, anon),
        "file pages": slope_of(counts, [st.get("file", 0) for st in stats])
        - slope_of(counts, files),
        "kernel memory": slope_of(counts, [_system_kernel(st) for st in stats])
        - slope_of(counts, kernel),
    }
    if version == 2:
        parts["sockets"] = slope_of(counts, [st.get("sock", 0) for st in stats])
    parts["other"] = system_slope - process_slope - sum(parts.values())
    return {name: round(value) for name, value in parts.items()}
