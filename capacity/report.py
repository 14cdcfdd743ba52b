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

from capacity.records import Estimate, ModelFit, ProcessMemory, dumps
from capacity.units import format_bytes, format_in, pick_unit

MAX_PROCESS_ROWS = 24

# C0 controls (but not tab/newline, handled by callers), DEL, and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def terminal_safe(text: str) -> str:
    """Strip control characters (ESC included) so host-provided text cannot drive the terminal."""
    return _CONTROL.sub("", text)


def markdown_escape(text: str) -> str:
    """Escape Markdown metacharacters and HTML so host text renders as literal text."""
    cleaned = _MARKDOWN_SPECIAL.sub(r"\\\1", terminal_safe(text))
    # Entities, not backslashes, for HTML: a Markdown renderer passes raw HTML through.
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_escape(text: str) -> str:
    return html.escape(terminal_safe(text), quote=True)


# --------------------------------------------------------------------------- text


def _size_column(values: Sequence[float]) -> tuple[str, list[str]]:
    unit = pick_unit(values)
    return unit[0], [format_in(v, unit) for v in values]


def _process_table(processes: Sequence[ProcessMemory], escape: Callable[[str], str]) -> str:
    shown = sorted(processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    hidden = max(0, len(shown) - MAX_PROCESS_ROWS)
    shown = shown[:MAX_PROCESS_ROWS]
    columns: list[tuple[str, Callable[[ProcessMemory], float]]] = [
        ("RSS", lambda p: p.rollup.rss_bytes),
        ("PSS", lambda p: p.rollup.pss_bytes),
        ("USS", lambda p: p.rollup.uss_bytes),
        ("shared", lambda p: p.rollup.shared_bytes),
        ("swap", lambda p: p.rollup.swap_bytes),
        ("anon", lambda p: p.rss_anon_bytes),
        ("file", lambda p: p.rss_file_bytes),
        ("shmem", lambda p: p.rss_shmem_bytes),
        ("page tables", lambda p: p.page_tables_bytes),
        ("kernel est.", lambda p: p.kernel_stack_bytes + p.slab_bytes),
    ]
    headers = ["pid", "role", "name"]
    formatted: list[list[str]] = []
    for title, getter in columns:
        unit, cells = _size_column([getter(p) for p in shown])
        headers.append(f"{title}\n{unit}")
        formatted.append(cells)
    rows = []
    for index, process in enumerate(shown):
        rows.append(
            [str(process.pid), process.role, escape(process.name)]
            + [column[index] for column in formatted]
        )
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


def _model_lines(model: ModelFit) -> list[str]:
    per_unit = pick_unit([model.per_instance_bytes])
    fixed_unit = pick_unit([model.fixed_bytes])
    lines = [
        f"Per worker (marginal):  {format_in(model.per_instance_bytes, per_unit)} {per_unit[0]} "
        f"± {format_bytes(model.worker_sd_bytes)} between workers   "
        + _interval(*model.per_instance_ci95, per_unit),
    ]
    b = model.breakdown
    if b is not None:
        parts = [
            ("USS", b.per_instance_uss_bytes),
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
    if b is not None:
        lines.append(
            f"    = parent {format_bytes(b.fixed_parent_bytes)} + shared pages once "
            f"{format_bytes(b.fixed_shared_bytes)} + parent kernel {format_bytes(b.fixed_kernel_bytes)}"
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
        f"{model.n_points} points ({model.n_workers} workers × {model.n_samples} samples), "
        f"method {model.method}"
    )
    return lines


def render_text(estimate: Estimate) -> str:
    e = estimate
    escape = terminal_safe
    model, budget, prediction = e.model, e.budget, e.prediction
    last = e.samples[-1]
    parents = ", ".join(f"{p.pid} ({escape(p.name)})" for p in last.parents) or "none"
    out: list[str] = [
        f"Workload {escape(e.workload.selector)}: parent {parents}, {e.workload.worker_count} workers, "
        f"{len(e.samples)} samples",
        "",
        _process_table(last.processes, escape),
        "",
        *_model_lines(model),
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
    out.append(
        f"Max workers: {prediction.max_instances:,}   conservative (95%): {conservative}   "
        f"confidence: {prediction.confidence}"
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


def render_json(estimate: Estimate) -> str:
    return dumps(estimate)


RENDERERS: dict[str, Callable[[Estimate], str]] = {
    "text": render_text,
    "json": render_json,
}
