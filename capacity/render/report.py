"""Every output format, and the only place that escapes what came from the host.

Renderers take records and return text; they never print (the CLI writes). Each target has
its own escaping: a terminal gets control characters stripped (a process may name itself
with escape sequences), Markdown and HTML get their metacharacters escaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from tabulate import tabulate

from capacity.answers import Plan
from capacity.codec import to_jsonable
from capacity.model.drift import sampling_advice
from capacity.records import Activity, Estimate, GroupEstimate, ModelFit, Prediction, ProcessMemory
from capacity.render.escape import terminal_safe
from capacity.render.filecache import file_cache_lines
from capacity.render.openmetrics import render_openmetrics
from capacity.render.probe import probe_lines
from capacity.shmem_records import SharedMemory
from capacity.units import format_bytes, format_in, format_interval, pick_unit

MAX_PROCESS_ROWS = 24


# --------------------------------------------------------------------------- text


def _size_column(values: Sequence[float]) -> tuple[str, list[str]]:
    unit = pick_unit(values)
    return unit[0], [format_in(v, unit) for v in values]


ProcessColumn = tuple[str, Callable[[ProcessMemory], float]]

# smem's view: what `capplan inspect --per-process` shows.
SMEM_COLUMNS: tuple[ProcessColumn, ...] = (
    ("RSS", lambda p: p.rollup.rss_bytes),
    ("PSS", lambda p: p.rollup.pss_bytes),
    ("USS", lambda p: p.rollup.uss_bytes),
    ("shared", lambda p: p.rollup.shared_bytes),
    ("swap", lambda p: p.rollup.swap_bytes),
    ("page tables", lambda p: p.page_tables_bytes),
)
# estimate's view adds the anon / file / shmem split and the estimated kernel memory.
ESTIMATE_COLUMNS: tuple[ProcessColumn, ...] = (
    *SMEM_COLUMNS[:5],
    ("anon", lambda p: p.rss_anon_bytes),
    ("file", lambda p: p.rss_file_bytes),
    ("shmem", lambda p: p.rss_shmem_bytes),
    SMEM_COLUMNS[5],
    ("kernel est.", lambda p: p.kernel_stack_bytes + p.slab_bytes),
)


def process_table(
    processes: Sequence[ProcessMemory],
    escape: Callable[[str], str],
    columns: Sequence[ProcessColumn] = ESTIMATE_COLUMNS,
    limit: int | None = MAX_PROCESS_ROWS,
) -> str:
    """Parents first, then workers in fork order; one unit per column."""
    shown = sorted(processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    hidden = 0 if limit is None else max(0, len(shown) - limit)
    shown = shown if limit is None else shown[:limit]
    headers = ["pid", "role", "name"]
    formatted: list[list[str]] = []
    for title, getter in columns:
        unit, cells = _size_column([getter(p) for p in shown])
        headers.append(f"{title}\n{unit}")
        formatted.append(cells)
    rows = [
        [str(p.pid), p.role, escape(p.name)] + [column[i] for column in formatted]
        for i, p in enumerate(shown)
    ]
    table = tabulate(
        rows,
        headers=headers,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("right", "left", "left") + ("right",) * len(columns),
    )
    if hidden:
        table += f"\n... and {hidden} more processes (all of them are in --format json)"
    return table


def _interval(low: int, high: int) -> str:
    """``units.format_interval``: enough digits that the two ends differ."""
    return f"[95% CI {format_interval(low, high)}]"


def _model_lines(
    model: ModelFit, noun: str = "worker", calibrated_by: str | None = None
) -> list[str]:
    per_unit = pick_unit([model.per_instance_bytes])
    fixed_unit = pick_unit([model.fixed_bytes])
    lines = [
        f"Per {noun} (marginal):  {format_in(model.per_instance_bytes, per_unit)} {per_unit[0]} "
        f"± {format_bytes(model.worker_sd_bytes)} between {noun}s   "
        + _interval(*model.per_instance_ci95),
    ]
    b = model.breakdown
    if b is not None:
        parts = [
            # exact: the distinct physical pages each worker adds, not a per-process sum
            ("USS" if model.method != "exact" else "own pages", b.per_instance_uss_bytes),
            *(
                [("shared (PSS)", b.per_instance_shared_bytes)]
                if b.per_instance_shared_bytes
                else []
            ),
            ("page tables", b.per_instance_page_tables_bytes),
            ("kernel stack", b.per_instance_kernel_stack_bytes),
            ("slab", b.per_instance_slab_bytes),
        ]
        note = (
            "estimated"
            if b.kernel_source == "estimate"
            else f"estimated, checked against cgroup {calibrated_by}"
            if calibrated_by
            else "estimated, checked against the cgroup"
        )
        lines.append(
            "    = "
            + " + ".join(f"{name} {format_in(value, per_unit)}" for name, value in parts)
            + f" {per_unit[0]}  (stack and slab {note})"
        )
    lines.append(
        f"Fixed (paid once):      {format_in(model.fixed_bytes, fixed_unit)} {fixed_unit[0]}   "
        + _interval(*model.fixed_ci95)
    )
    if b is not None and noun != "instance":
        untouched = (
            f" + shared memory not yet touched {format_bytes(b.fixed_shm_untouched_bytes)}"
            if b.fixed_shm_untouched_bytes
            else ""
        )
        lines.append(
            f"    = parent {format_bytes(b.fixed_parent_bytes)} + shared pages once "
            f"{format_bytes(b.fixed_shared_bytes)} + parent kernel {format_bytes(b.fixed_kernel_bytes)}"
            + untouched
        )
    if b is not None and model.method == "exact":
        lines.append(
            f"Not charged:            {format_bytes(b.shared_outside_bytes)} of pages shared with "
            f"processes outside the workload (its PSS share {format_bytes(b.shared_outside_pss_bytes)}): "
            "they would be in memory anyway"
        )
    points = (
        f"N = 1..{model.n_workers}, one measurement each"
        if noun == "instance"
        else f"{model.n_workers} workers × {model.n_samples} samples"
    )
    if model.reclaimable_bytes:
        kept = [f"{format_bytes(model.reclaimable_bytes)} of page cache and kernel memory"]
        if b is not None:
            kept = [f"page cache of its files {format_bytes(b.fixed_file_bytes)}"]
            if b.fixed_unexplained_kernel_bytes:
                kept.append(
                    "kernel memory beyond its processes "
                    + format_bytes(b.fixed_unexplained_kernel_bytes)
                )
        lines.append(
            "    not counted: "
            + " and ".join(kept)
            + " (reclaimed before an OOM kill; the conservative answer keeps it)"
        )
    lines.append(
        f"Fit:                    R² {model.r2:.4f}, residual sd {format_bytes(model.residual_sd_bytes)}, "
        f"{model.n_points} points ({points}), method {model.method}"
    )
    return lines


SHOWN_SEGMENTS = 8


def shared_memory_lines(shared: SharedMemory | None, escape: Callable[[str], str]) -> list[str]:
    """The shared memory segments in the fixed cost: configured beside touched (issue 14)."""
    if shared is None or not shared.segments:
        return []
    configured = sum(s.configured_bytes for s in shared.segments)
    touched = sum(s.touched_bytes for s in shared.segments)
    how = {
        "auto": "as touched in the point answer, at their configured size in the conservative "
        "one (--shm auto; configured or touched counts both alike)",
        "configured": "at their configured size (--shm configured; --shm touched counts "
        "the touched pages only)",
        "touched": "as touched (--shm touched: pages not yet touched are not counted)",
    }[shared.choice]
    count = len(shared.segments)
    lines = [
        f"Shared memory:          {count} segment{'s' if count != 1 else ''} in fixed, counted "
        f"{how}: configured {format_bytes(configured)}, touched {format_bytes(touched)}"
    ]
    for segment in shared.segments[:SHOWN_SEGMENTS]:
        lines.append(
            f"    {escape(segment.name)} ({segment.kind}): configured "
            f"{format_bytes(segment.configured_bytes)}, touched "
            f"{format_bytes(segment.touched_bytes)}, counted {format_bytes(segment.counted_bytes)}"
            f" ({segment.processes} process{'es' if segment.processes != 1 else ''})"
        )
    if count > SHOWN_SEGMENTS:
        lines.append(f"    ... and {count - SHOWN_SEGMENTS} more (all in --format json)")
    if shared.kept_bytes:
        lines.append(
            f"    the conservative answer keeps the untouched {format_bytes(shared.kept_bytes)}"
            " resident, as if every segment filled; the point answer does not"
        )
    if shared.moved_bytes:
        lines.append(
            f"    segment pages single workers had touched alone, {format_bytes(shared.moved_bytes)}"
            ", are paid once: in fixed, not per worker"
        )
    return lines


def _group_title(group: GroupEstimate, escape: Callable[[str], str]) -> str:
    words = [escape(group.label)]
    if group.mpm is not None:
        words.append(f"({escape(group.mpm)} MPM)")
    return " ".join(words) + f", rule {escape(group.rule)}"


def role_lines(group: GroupEstimate, escape: Callable[[str], str]) -> list[str]:
    """The group's roles: count and cost of each (the last sample), workers or fixed."""
    costs = [float(group.role_cost_bytes.get(role, 0)) for role in group.roles]
    unit, cells = _size_column(costs)
    rows = []
    for (role, count), cost in zip(group.roles.items(), cells, strict=True):
        if role == group.worker_role:
            kind = "workers"
        elif role in group.shared_roles:
            kind = "fixed, shared with the instance's other groups"
        else:
            kind = "fixed"
        rows.append([escape(role), f"{count:,}", cost, kind])
    table = tabulate(
        rows,
        headers=["role", "count", f"cost\n{unit}", ""],
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "right", "right", "left"),
    )
    workers = f"{group.worker_count:,} {escape(group.worker_role)}"
    lines = [
        f"Roles ({_group_title(group, escape)}): the {workers} processes are the workers, "
        "every other role is paid once",
        table,
        "    cost in the last sample, as the model counts it: workers their USS and kernel "
        "memory, fixed roles the same less their page cache; shared pages are in the fixed "
        "cost, once",
    ]
    if group.threads_per_child is not None and group.mpm in ("event", "worker"):
        lines.append(
            f"    {group.threads} threads per worker process: ThreadsPerChild "
            f"{group.threads_per_child} request threads, a listener and the main thread"
        )
    for setting in group.settings:
        value = escape(setting.value) if setting.value is not None else "unknown"
        lines.append(f"    {escape(setting.name)} = {value}: {escape(setting.source)}")
    return lines


def suggestion_lines(group: GroupEstimate, escape: Callable[[str], str]) -> list[str]:
    """The configuration line for the conservative count, where the server is known."""
    s = group.suggestion
    if s is None:
        p = group.prediction
        count = (
            p.max_instances
            if p.max_instances_conservative is None
            else p.max_instances_conservative
        )
        from capacity.model.suggest import low_confidence_comment

        comment = low_confidence_comment(group.model, group.warnings)
        return [
            f"Configuration: capplan does not know {escape(group.server)}'s directives: set "
            f"its worker limit to {count:,}"
            + (f"   ({escape(comment)})" if comment is not None else "")
        ]
    lines = [f"Configuration ({escape(s.title)}, for {s.instances:,} workers):"]
    lines += [f"    {escape(line)}" for line in s.lines]
    if s.note:
        lines.append(f"    ({escape(s.note)})")
    return lines


def low_confidence_lines(model: ModelFit) -> list[str]:
    """How the conservative count of a low-confidence fit was kept safe (issue 14)."""
    from capacity.model.fitting import low_confidence_guard

    guard = low_confidence_guard(model)
    if guard is None:
        return []
    fixed, per_worker = guard
    return [
        f"    (low confidence: the conservative count also fits with every worker at "
        f"{format_bytes(per_worker)}, the costliest measured or the fit's 95% upper bound, "
        f"and the fixed cost at its 95% upper bound, {format_bytes(fixed)})"
    ]


def _answer_line(prediction: Prediction) -> str:
    conservative = (
        f"{prediction.max_instances_conservative:,}"
        if prediction.max_instances_conservative is not None
        else "n/a"
    )
    bound = "at most " if prediction.max_is_upper_bound else ""
    return (
        f"Max workers: {bound}{prediction.max_instances:,}   conservative (95%): {bound}"
        f"{conservative}   confidence: {prediction.confidence}"
    )


def render_text(estimate: Estimate) -> str:
    """The estimate as text: one group's whole report, or with several groups a section
    per group, the plan for the host, then the top level's report."""
    if len(estimate.groups) > 1:
        return _render_groups(estimate)
    return _render_one(estimate)


def _render_groups(e: Estimate) -> str:
    from capacity.model.suggest import top_group
    from capacity.render.plan import render_plan_text

    escape = terminal_safe
    top = top_group(e)
    count = len(e.groups)
    out = [
        f"Workload {escape(e.workload.selector)}: {count} groups, each fitted on its own, "
        f"{len(e.samples)} samples",
        "",
    ]
    for number, group in enumerate(e.groups, 1):
        shown = " (the top level: its whole report is below)" if group is top else ""
        out += [
            f"Group {number} of {count}: {_group_title(group, escape)}{shown}",
            *("    " + line for line in "\n".join(role_lines(group, escape)).splitlines()),
            *("    " + line for line in _model_lines(group.model)),
            "    " + _answer_line(group.prediction),
            *("    " + line for line in activity_lines(group.activity)),
            *("    " + line for line in suggestion_lines(group, escape)),
        ]
        codes = [w.code for w in group.warnings]
        if codes:
            out.append(f"    Warnings: {', '.join(codes)} (each in full in --format json)")
        out.append("")
    plan, error = host_plan(e)
    if error is not None:
        out += [f"Plan for this host: none: {escape(error)}", ""]
    elif plan is not None:
        out += [render_plan_text(plan, of_groups=True).rstrip("\n"), ""]
    label = escape(top.label) if top is not None else "?"
    out += [f"The top level: {label}", "=" * (15 + len(label)), ""]
    return "\n".join(out) + "\n" + _render_one(e)


def _render_one(estimate: Estimate) -> str:
    from capacity.model.suggest import top_group

    e = estimate
    escape = terminal_safe
    model, budget, prediction = e.model, e.budget, e.prediction
    last = e.samples[-1]
    group = top_group(e)
    parents = ", ".join(f"{p.pid} ({escape(p.name)})" for p in last.parents) or "none"
    heading = (
        f"{e.workload.worker_count} instances ({len(last.processes)} processes)"
        if e.launch is not None
        else f"parent {parents}, {e.workload.worker_count} workers"
    )
    selected = e.workload.cgroup
    where = (
        f" (cgroup {escape(selected)})"
        if selected is not None and selected not in e.workload.selector
        else ""
    )
    calibrated_by = last.cgroup.path if last.cgroup is not None and last.cgroup.own else None
    if group is not None and e.launch is None:
        fixed = len(last.processes) - e.workload.worker_count
        heading = (
            f"{escape(group.label)}: {e.workload.worker_count} workers "
            f"({escape(group.worker_role)}), {fixed} process{'es' if fixed != 1 else ''} "
            "paid once"
        )
    roles = [*role_lines(group, escape), ""] if group is not None and e.launch is None else []
    out: list[str] = [
        f"Workload {escape(e.workload.selector)}{where}: {heading}, {len(e.samples)} samples",
        "",
        process_table(last.processes, escape),
        "",
        *roles,
        *(_launch_lines(e, escape) if e.launch is not None else []),
        *_model_lines(
            model,
            "instance" if e.launch is not None else "worker",
            escape(calibrated_by) if calibrated_by is not None else None,
        ),
        *file_cache_lines(e.file_cache, escape),
        *shared_memory_lines(e.shared_memory, escape),
        *(_system_lines(e) if e.launch is not None else []),
        *probe_lines(e, escape),
        *_load_lines(e, escape),
        *activity_lines(e.activity),
        *_drift_lines(e),
        "",
        "Budget arithmetic",
    ]
    unit = pick_unit([budget.total_bytes])
    rows = [
        ["", "budget", format_in(budget.total_bytes, unit), budget.source],
        ["-", "reserve", format_in(budget.reserve_bytes, unit), budget.reserve_source],
        ["-", "fixed", format_in(model.fixed_bytes, unit), "paid once: parent and shared pages"],
        ["=", "room", format_in(prediction.room_bytes, unit), ""],
    ]
    out.append(
        tabulate(
            rows,
            headers=["", "", unit[0], "source"],
            tablefmt="plain",
            disable_numparse=True,
            colalign=("left", "left", "right", "left"),
        )
    )
    out.append(
        f"  room / per worker = {format_bytes(prediction.room_bytes)} / "
        f"{format_bytes(model.per_instance_bytes)} = {prediction.max_instances:,}"
    )
    out.append("")
    out.append(_answer_line(prediction))
    if prediction.max_is_upper_bound:
        out.append(
            "    (workers were still growing at the last sample: the per-worker cost is a "
            "lower bound, so these counts are upper bounds)"
        )
    out += low_confidence_lines(model)
    if group is not None:
        out += suggestion_lines(group, escape)
    out.append("")
    out.append("How the usual rules compare (same measurement, same budget)")
    names = list(e.estimators)
    per_unit = pick_unit([r.per_instance_bytes for r in e.estimators.values()])
    rows = [
        [
            name,
            format_in(e.estimators[name].per_instance_bytes, per_unit),
            f"{e.estimators[name].max_instances:,}",
            e.estimators[name].note,
        ]
        for name in names
    ]
    out.append(
        tabulate(
            rows,
            headers=["rule", f"per worker\n{per_unit[0]}", "max\nworkers", "why it differs"],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", "right", "right", "left"),
        )
    )
    if e.warnings:
        out.append("")
        for warning in e.warnings:
            out.append(f"Warning: {escape(warning.message)}")
            if warning.hint:
                out.append(f"  Hint: {escape(warning.hint)}")
    return "\n".join(out) + "\n"


def _launch_lines(e: Estimate, escape: Callable[[str], str]) -> list[str]:
    """Launch mode: what was started, and total(N) at every step, both sides."""
    launch = e.launch
    assert launch is not None
    if launch.system_source == "cgroup":
        where = f"cgroup {escape(launch.cgroup_path or '?')}"
    else:
        where = "no cgroup: system side from the host's MemAvailable"
    lines = [
        f"Launched {launch.instances} instances of: {escape(launch.command)}"
        + ("  (with /bin/sh -c)" if launch.shell else ""),
        f"    settle: {launch.settle}; {where}",
    ]
    values = [float(s.process_total_bytes) for s in launch.steps] + [
        float(s.system_total_bytes) for s in launch.steps
    ]
    unit = pick_unit(values)
    rows = []
    for step in launch.steps:
        own = [m.marginal_bytes for m in step.members]
        rows.append(
            [
                str(step.instances),
                format_in(step.process_total_bytes, unit),
                format_in(step.system_total_bytes, unit),
                format_in(own[-1], unit) if own else "",
                f"{step.settle_seconds:.1f}",
            ]
        )
    system_title = "cgroup" if launch.system_source == "cgroup" else "MemAvailable Δ"
    lines.append(
        tabulate(
            rows,
            headers=[
                "N",
                f"total(N) smaps\n{unit[0]}",
                f"total(N) {system_title}\n{unit[0]}",
                f"newest instance\n{unit[0]}",
                "settled\ns",
            ],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("right", "right", "right", "right", "right"),
        )
    )
    lines.append("")
    return lines


def _system_lines(e: Estimate) -> list[str]:
    """The system-side fit beside the process-side one, and whether total(N) is a line."""
    launch = e.launch
    assert launch is not None
    lines = []
    system = launch.system_model
    if system is not None:
        unit = pick_unit([system.per_instance_bytes])
        source = "cgroup usage" if system.method == "cgroup" else "MemAvailable delta"
        if e.probe is not None:
            source = "the sizes the probe found"
        lines.append(
            f"System side ({source}): {format_in(system.per_instance_bytes, unit)} {unit[0]} "
            f"per instance {_interval(*system.per_instance_ci95)}, fixed "
            f"{format_bytes(system.fixed_bytes)}, R² {system.r2:.4f}"
        )
        if e.model.per_instance_bytes > 0:
            share = system.per_instance_bytes / e.model.per_instance_bytes - 1
            lines.append(f"    differs from the process side by {share:+.1%} per instance")
        if launch.difference:
            lines.append(
                "    = "
                + ", ".join(
                    f"{name} {'+' if value >= 0 else '-'}{format_bytes(abs(value))}"
                    for name, value in launch.difference.items()
                )
            )
    for check in launch.quadratic:
        if check.p_value is None:
            lines.append(f"Line check ({check.method}): {check.note}")
            continue
        verdict = "significant" if check.significant else "not significant"
        # No "-0 B": a coefficient that rounds to nothing has no sign.
        contribution = check.contribution_bytes if abs(check.contribution_bytes) >= 0.5 else 0.0
        share = check.share if abs(check.share) >= 0.005 else 0.0
        lines.append(
            f"Line check ({check.method}): quadratic term {format_bytes(contribution)} "
            f"at N = {check.at_instances:,} ({share:+.0%} of the line), "
            f"p = {check.p_value:.2g}: {verdict}"
        )
    return lines


def _load_lines(e: Estimate, escape: Callable[[str], str]) -> list[str]:
    lines = []
    for run in e.load:
        shown = run.command[2:] if run.shell else run.command
        which = f" (instance {run.instance})" if run.instance is not None else ""
        if run.ended_at is not None:
            what = f"finished after {run.ended_at - run.started_at:.1f} s, status {run.exit_status}"
        else:
            what = "ran through the sampling (stopped by capplan)"
        requests = f", {run.requests:,} requests" if run.requests is not None else ""
        lines.append(f"Load{which}: {escape(' '.join(shown))}: {what}{requests}")
    return lines


def describe_activity(a: Activity) -> str:
    """Busy or idle in one sentence (the text report and the Markdown/HTML one)."""
    window = f"{a.duration_seconds:.1f} s between the first and last sample"
    unit = a.unit
    if a.state == "idle":
        return f"measured idle: the {a.workers} {unit}s did not run in the {window}"
    if a.state == "unknown":
        return f"not known whether the {unit}s ran: {a.note}"
    return (
        f"busy: {a.busy_workers} of {a.workers} {unit}s ran in the {window}: "
        f"{_cpu(a.cpu_per_worker)} CPU seconds per {unit} per second "
        f"(busiest {_cpu(a.busiest_cpu)}), "
        f"{_rate(a.switches_per_second)} context switches per second "
        f"({_rate(a.switches_per_worker)} per {unit})"
    )


def _cpu(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.2g}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def activity_lines(a: Activity | None) -> list[str]:
    if a is None:
        return []
    lines = [f"Activity: {describe_activity(a)}"]
    if a.state != "unknown" and a.note:
        lines.append(f"    {a.note}")
    return lines


def _drift_lines(e: Estimate) -> list[str]:
    d = e.drift
    if d is None:
        return []
    unit = pick_unit([d.first_bytes, d.last_bytes])
    lines = [
        "",
        f"Drift ({d.tracked} {d.unit}s followed over {d.samples} samples, "
        f"{d.duration_seconds:.1f} s): private memory per {d.unit} "
        f"{format_in(d.first_bytes, unit)} → {format_in(d.last_bytes, unit)} {unit[0]}, "
        f"{format_bytes(d.growth_per_minute_bytes)}/min"
        + (f" (p = {d.growth_p_value:.2g})" if d.growth_p_value is not None else ""),
    ]
    if d.growth_per_request_bytes is not None and d.requests_in_window:
        lines.append(
            f"    {format_bytes(d.growth_per_request_bytes)} per request "
            f"({d.requests_in_window:,.0f} requests while sampling)"
        )
    if not d.growing:
        lines.append(f"    no drift: {d.note}")
    elif d.plateau:
        plateau = format_bytes(d.plateau_bytes) if d.plateau_bytes is not None else "?"
        lines.append(
            f"    plateau reached: {d.note}; the prediction uses the plateau "
            f"({plateau} private per {d.unit})"
        )
    else:
        lines.append(f"    NO plateau: {d.note}")
        if d.sample_more_seconds is not None:
            lines.append(f"    {sampling_advice(d)}")
    if d.unit == "instance" and d.growing:
        sign = "+" if d.adjustment_bytes >= 0 else "-"
        lines.append(
            "    each step's total was raised by what its instances had still to grow: "
            f"{sign}{format_bytes(abs(d.adjustment_bytes))} per instance"
        )
    return lines


def host_plan(estimate: Estimate) -> tuple[Plan | None, str | None]:
    """The plan for the host of a selection of several groups (``model.plan.plan_groups``),
    or why there is none: (None, None) for one group, (None, the reason) when the groups'
    fixed costs alone do not fit."""
    from capacity.errors import CapplanError
    from capacity.model.plan import plan_groups

    try:
        return plan_groups(estimate), None
    except CapplanError as err:
        return None, err.message


def render_json(estimate: Estimate) -> str:
    """The estimate's document, as the model file holds it, and ``plan``: the host plan
    the text prints for several groups (the ``capplan.plan`` document ``capplan plan``
    writes), with ``plan_error`` why there is none; both null for one group. The plan is
    derived from ``groups``, so the model file does not store it (loading ignores it)."""
    plan, error = host_plan(estimate)
    document = to_jsonable(estimate)
    document["plan"] = None if plan is None else to_jsonable(plan)
    document["plan_error"] = error
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


# --------------------------------------------------------------------------- OpenMetrics


RENDERERS: dict[str, Callable[[Estimate], str]] = {
    "text": render_text,
    "json": render_json,
    "openmetrics": render_openmetrics,
}


# --------------------------------------------------------------------------- inspect
