"""Every output format, and the only place that escapes what came from the host.

Renderers take records and return text; they never print (the CLI writes). Each target has
its own escaping: a terminal gets control characters stripped (a process may name itself
with escape sequences), Markdown and HTML get their metacharacters escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence

from tabulate import tabulate

from capacity.answers import Inspection, MappingRow
from capacity.codec import dumps
from capacity.model.drift import sampling_advice
from capacity.records import Estimate, ModelFit, ProcessMemory
from capacity.units import format_bytes, format_in, pick_unit

MAX_PROCESS_ROWS = 24

# C0 controls (but not tab/newline, handled by callers), DEL, and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")
_LINE_BREAKS = re.compile(r"[\t\n\r\v\f]+")
_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]|~#$!])")


def terminal_safe(text: str) -> str:
    """Strip control characters (ESC included) so host-provided text cannot drive the terminal."""
    return _CONTROL.sub("", text)


def markdown_escape(text: str) -> str:
    """Escape Markdown metacharacters and HTML so host text renders as literal text."""
    # A line break would end a table row or a paragraph: it becomes a space.
    cleaned = _MARKDOWN_SPECIAL.sub(r"\\\1", terminal_safe(_LINE_BREAKS.sub(" ", text)))
    # Entities, not backslashes, for HTML: a Markdown renderer passes raw HTML through.
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_inline_escape(text: str) -> str:
    """Escape host text placed inside a line (a table cell, after a label), never starting one.

    Inside a line only inline syntax can fire: emphasis, code, links, HTML, tables' pipes,
    strikethrough, math and trailing heading marks. Block markers (``-``, ``+``, ``1.``)
    matter only at the start of a line, so they stay as they are and the Markdown source
    stays readable (``2026-11-25``, not ``2026\\-11\\-25``). Use ``markdown_escape`` where the
    text may start a line.
    """
    cleaned = _MARKDOWN_INLINE.sub(r"\\\1", terminal_safe(_LINE_BREAKS.sub(" ", text)))
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_escape(text: str) -> str:
    return html.escape(terminal_safe(text), quote=True)


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


def _process_table(
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


def _interval(low: int, high: int, unit: tuple[str, int]) -> str:
    return f"[95% CI {format_in(low, unit)} … {format_in(high, unit)} {unit[0]}]"


def _model_lines(model: ModelFit, noun: str = "worker") -> list[str]:
    per_unit = pick_unit([model.per_instance_bytes])
    fixed_unit = pick_unit([model.fixed_bytes])
    lines = [
        f"Per {noun} (marginal):  {format_in(model.per_instance_bytes, per_unit)} {per_unit[0]} "
        f"± {format_bytes(model.worker_sd_bytes)} between {noun}s   "
        + _interval(*model.per_instance_ci95, per_unit),
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
            else "estimated, checked against the cgroup"
        )
        lines.append(
            "    = "
            + " + ".join(f"{name} {format_in(value, per_unit)}" for name, value in parts)
            + f" {per_unit[0]}  (stack and slab {note})"
        )
    lines.append(
        f"Fixed (paid once):      {format_in(model.fixed_bytes, fixed_unit)} {fixed_unit[0]}   "
        + _interval(*model.fixed_ci95, fixed_unit)
    )
    if b is not None and noun != "instance":
        lines.append(
            f"    = parent {format_bytes(b.fixed_parent_bytes)} + shared pages once "
            f"{format_bytes(b.fixed_shared_bytes)} + parent kernel {format_bytes(b.fixed_kernel_bytes)}"
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


def render_text(estimate: Estimate) -> str:
    e = estimate
    escape = terminal_safe
    model, budget, prediction = e.model, e.budget, e.prediction
    last = e.samples[-1]
    parents = ", ".join(f"{p.pid} ({escape(p.name)})" for p in last.parents) or "none"
    heading = (
        f"{e.workload.worker_count} instances ({len(last.processes)} processes)"
        if e.launch is not None
        else f"parent {parents}, {e.workload.worker_count} workers"
    )
    out: list[str] = [
        f"Workload {escape(e.workload.selector)}: {heading}, {len(e.samples)} samples",
        "",
        _process_table(last.processes, escape),
        "",
        *(_launch_lines(e, escape) if e.launch is not None else []),
        *_model_lines(model, "instance" if e.launch is not None else "worker"),
        *(_system_lines(e) if e.launch is not None else []),
        *_load_lines(e, escape),
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
    conservative = (
        f"{prediction.max_instances_conservative:,}"
        if prediction.max_instances_conservative is not None
        else "n/a"
    )
    bound = "at most " if prediction.max_is_upper_bound else ""
    out.append(
        f"Max workers: {bound}{prediction.max_instances:,}   conservative (95%): {bound}{conservative}   "
        f"confidence: {prediction.confidence}"
    )
    if prediction.max_is_upper_bound:
        out.append(
            "    (workers were still growing at the last sample: the per-worker cost is a "
            "lower bound, so these counts are upper bounds)"
        )
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
        lines.append(
            f"System side ({source}): {format_in(system.per_instance_bytes, unit)} {unit[0]} "
            f"per instance {_interval(*system.per_instance_ci95, unit)}, fixed "
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


def render_json(estimate: Estimate) -> str:
    return dumps(estimate)


# --------------------------------------------------------------------------- OpenMetrics

_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def openmetrics_label(text: str) -> str:
    """A label value as the OpenMetrics spec escapes it: ``\\``, ``\"`` and ``\\n``.

    Other control characters are legal there but no dashboard wants them: they go.
    """
    cleaned = _CONTROL_BUT_NEWLINE.sub("", text)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_openmetrics(estimate: Estimate) -> str:
    """Gauges for node_exporter's textfile collector, labelled by workload and host.

    Only gauges, no timestamps and no OpenMetrics-only types: the textfile collector reads
    the Prometheus text format, which takes ``# UNIT`` and ``# EOF`` as comments, so one
    file serves both parsers. The measurement time is a gauge of its own, because the
    textfile collector refuses samples that carry a timestamp.
    """
    import datetime

    e = estimate
    labels = (
        f'workload="{openmetrics_label(e.workload.name)}",'
        f'host="{openmetrics_label(e.environment.hostname)}"'
    )
    try:
        measured = datetime.datetime.fromisoformat(e.environment.time).timestamp()
    except ValueError:
        measured = None
    model, budget, prediction = e.model, e.budget, e.prediction
    conservative = prediction.max_instances_conservative
    max_workers: list[tuple[str, float]] = [(',estimate="point"', prediction.max_instances)]
    if conservative is not None:
        max_workers.append((',estimate="conservative"', conservative))
    families: list[tuple[str, str, str | None, list[tuple[str, float]]]] = [
        (
            "capplan_worker_memory_bytes",
            "What one more worker costs: its private pages plus kernel memory (fitted slope).",
            "bytes",
            [("", model.per_instance_bytes)],
        ),
        (
            "capplan_worker_memory_ci95_lower_bytes",
            "Lower end of the 95% confidence interval of the per-worker cost.",
            "bytes",
            [("", model.per_instance_ci95[0])],
        ),
        (
            "capplan_worker_memory_ci95_upper_bytes",
            "Upper end of the 95% confidence interval of the per-worker cost.",
            "bytes",
            [("", model.per_instance_ci95[1])],
        ),
        (
            "capplan_fixed_memory_bytes",
            "What the workload pays once: parents and shared pages counted once (intercept).",
            "bytes",
            [("", model.fixed_bytes)],
        ),
        (
            "capplan_max_workers",
            "How many workers fit in the budget: point estimate and conservative (95%).",
            None,
            max_workers,
        ),
        (
            "capplan_budget_bytes",
            "Memory the workload may use before the reserve (MemTotal, cgroup limit or --memory).",
            "bytes",
            [("", budget.total_bytes)],
        ),
        (
            "capplan_budget_reserve_bytes",
            "Memory kept for everything else.",
            "bytes",
            [("", budget.reserve_bytes)],
        ),
        (
            "capplan_workers_measured",
            "Workers the model was fitted on.",
            None,
            [("", e.workload.worker_count)],
        ),
    ]
    if measured is not None:
        families.append(
            (
                "capplan_model_timestamp_seconds",
                "When the workload was measured (Unix time).",
                "seconds",
                [("", measured)],
            )
        )
    lines: list[str] = []
    for name, help_text, unit, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        if unit:
            lines.append(f"# UNIT {name} {unit}")
        for extra, value in samples:
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{name}{{{labels}{extra}}} {number}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Estimate], str]] = {
    "text": render_text,
    "json": render_json,
    "openmetrics": render_openmetrics,
}


# --------------------------------------------------------------------------- inspect

MAX_MAPPING_ROWS = 40
_METHOD_LABEL = {
    "exact": "exact (pagemap + kpagecount: distinct physical pages)",
    "smaps": "smaps (per-mapping page counts; paid once = proportional share)",
}


MAX_NAME = 44


def _shorten(name: str) -> str:
    """Keep the end of a long path, where the file name is (JSON has the whole path)."""
    return name if len(name) <= MAX_NAME else "…" + name[-(MAX_NAME - 1) :]


def _mapping_table(inspection: Inspection, escape: Callable[[str], str]) -> str:
    rows = list(inspection.rows)
    hidden = rows[MAX_MAPPING_ROWS:]
    rows = rows[:MAX_MAPPING_ROWS]
    shown: list[MappingRow] = [*rows, inspection.total]
    n = inspection.max_workers
    columns: list[tuple[str, Callable[[MappingRow], float | None]]] = [
        ("RSS\nsum", lambda r: r.rss_bytes),
        ("paid\nonce", lambda r: r.shared_once_bytes),
        ("private\nmean", lambda r: r.private_mean_bytes),
        ("private\nmax", lambda r: r.private_max_bytes),
        ("host\nshared", lambda r: r.shared_host_bytes),
        (f"cost at\n{n:,}", lambda r: r.cost_at_max_bytes),
    ]
    headers = ["kind", "mapping"]
    formatted: list[list[str]] = []
    for title, getter in columns:
        values = [getter(r) for r in shown]
        # The unit of the largest value: the top rows are the ones that matter here.
        unit = pick_unit([max((abs(v) for v in values if v is not None), default=0)])
        headers.append(f"{title}\n{unit[0]}")
        formatted.append(["n/a" if v is None else format_in(v, unit) for v in values])
    table_rows = [
        [row.kind if row.kind != "total" else "", _shorten(escape(row.name))]
        + [column[i] for column in formatted]
        for i, row in enumerate(shown)
    ]
    if hidden:
        table_rows.insert(
            len(rows),
            ["", f"... {len(hidden)} more rows (all in --format json)"] + [""] * len(columns),
        )
    return tabulate(
        table_rows,
        headers=headers,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "left") + ("right",) * len(columns),
    )


def render_inspect_text(inspection: Inspection) -> str:
    escape = terminal_safe
    i = inspection
    parents = ", ".join(str(pid) for pid in i.workload.parent_pids) or "none"
    out = [
        f"Workload {escape(i.workload.selector)} ({escape(i.workload.name)}): parent {parents}, "
        f"{i.workload.worker_count} workers; method {_METHOD_LABEL.get(i.method, i.method)}",
        f"Rows sorted by cost at {i.max_workers:,} workers: {escape(i.max_workers_source)}.",
        f"private: what each worker pays alone (mean, max); cost at {i.max_workers:,} = "
        f"paid once + {i.max_workers:,} × private mean.",
        "host shared: also mapped by processes outside the workload; not charged.",
        "",
        _mapping_table(i, escape),
    ]
    pages = i.pages
    if pages is not None:
        out += [
            "",
            f"Distinct physical pages: {format_bytes(pages.distinct_bytes)} = anonymous "
            f"{format_bytes(pages.anon_bytes)} + file {format_bytes(pages.file_bytes)} + shmem "
            f"{format_bytes(pages.shmem_bytes)} (transparent huge pages {format_bytes(pages.thp_bytes)}, "
            f"KSM {format_bytes(pages.ksm_bytes)})",
            f"    parent only {format_bytes(pages.parent_only_bytes)}, shared with the parent "
            f"{format_bytes(pages.shared_with_parent_bytes)}, shared among workers only "
            f"{format_bytes(pages.shared_workers_bytes)}, private to one worker "
            f"{format_bytes(pages.private_workers_bytes)}",
            f"    shared with processes outside the workload {format_bytes(pages.shared_outside_bytes)} "
            f"(not charged; the workload's PSS share {format_bytes(pages.shared_outside_pss_bytes)})",
        ]
        if pages.swapped_bytes:
            out.append(f"    in swap (not counted above) {format_bytes(pages.swapped_bytes)}")
    if i.processes:
        out += [
            "",
            "Per process (smaps_rollup, as smem shows it)",
            _process_table(i.processes, escape, SMEM_COLUMNS, limit=None),
        ]
    for warning in i.warnings:
        out.append("")
        out.append(f"Warning: {escape(warning.message)}")
        if warning.hint:
            out.append(f"  Hint: {escape(warning.hint)}")
    return "\n".join(out) + "\n"


def render_inspect_json(inspection: Inspection) -> str:
    return dumps(inspection)


INSPECT_RENDERERS: dict[str, Callable[[Inspection], str]] = {
    "text": render_inspect_text,
    "json": render_inspect_json,
}
