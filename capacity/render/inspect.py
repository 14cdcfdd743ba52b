"""capplan inspect's output: the mapping table as text, and the whole inspection as JSON."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from capacity.answers import Inspection, MappingRow
from capacity.codec import dumps
from capacity.render.escape import terminal_safe
from capacity.render.report import SMEM_COLUMNS, process_table
from capacity.units import format_bytes, format_in, pick_unit

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
    selected = i.workload.cgroup
    where = (
        f", cgroup {escape(selected)}"
        if selected is not None and selected not in i.workload.selector
        else ""
    )
    out = [
        f"Workload {escape(i.workload.selector)} ({escape(i.workload.name)}{where}): "
        f"parent {parents}, "
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
            process_table(i.processes, escape, SMEM_COLUMNS, limit=None),
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
