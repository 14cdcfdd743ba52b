"""Renderers for ``capplan predict``: a table per host size, the reverse question, settings.

Same rules as ``report``: records in, text out, host text passed through
``escape.terminal_safe`` before a terminal sees it.
"""

from __future__ import annotations

from tabulate import tabulate

from capacity.answers import WhatIf
from capacity.codec import dumps
from capacity.records import Suggestion
from capacity.render.escape import terminal_safe
from capacity.units import format_bytes, format_in, format_interval, pick_unit


def _suggestion_lines(suggestion: Suggestion) -> list[str]:
    lines = [f"{suggestion.title}:"]
    lines += [f"    {line}" for line in suggestion.lines]
    if suggestion.note:
        lines.append(f"  ({suggestion.note})")
    return lines


def render_whatif_text(whatif: WhatIf) -> str:
    safe = terminal_safe
    w = whatif
    per_unit = pick_unit([w.per_instance_bytes])
    out = [
        f"Model {safe(w.source)}: {safe(w.workload.name)} ({safe(w.workload.selector)}), measured "
        f"{safe(w.measured_at)} on {safe(w.hostname)}, method {w.method}, confidence {w.confidence}",
        f"Per worker {format_bytes(w.per_instance_bytes, per_unit)} "
        f"[95% CI {format_interval(*w.per_instance_ci95)}], "
        f"fixed {format_bytes(w.fixed_bytes)}",
        f"Reserve: {safe(w.reserve_source)}",
        "",
    ]
    unit = pick_unit([s.memory_bytes for s in w.sizes])
    with_settings = any(s.settings for s in w.sizes)
    headers = [
        f"memory\n{unit[0]}",
        f"reserve\n{unit[0]}",
        f"room\n{unit[0]}",
        "max\nworkers",
        "conservative\n(95%)",
    ]
    if with_settings:
        headers.append("setting\n(conservative)")
    rows = []
    for size in w.sizes:
        row = [
            format_in(size.memory_bytes, unit),
            format_in(size.reserve_bytes, unit),
            format_in(size.room_bytes, unit),
            f"{size.max_instances:,}",
            f"{size.max_instances_conservative:,}",
        ]
        if with_settings:
            row.append(" ".join(size.settings))
        rows.append(row)
    out.append(
        tabulate(
            rows,
            headers=headers,
            tablefmt="simple",
            disable_numparse=True,
            colalign=("right",) * 5 + (("left",) if with_settings else ()),
        )
    )
    if not with_settings:
        out.append("")
        out.append(
            "capplan does not recognise this program's configuration: set its worker limit to "
            "the conservative number."
        )
    if w.instances is not None:
        i = w.instances
        mem_unit = pick_unit([i.memory_bytes])
        out.append("")
        out.append(
            f"Memory for {i.instances:,} workers: {format_bytes(i.memory_bytes, mem_unit)}   "
            f"[95% prediction interval {format_interval(i.low_bytes, i.high_bytes)}]"
        )
        out.append(
            f"  = fixed {format_bytes(w.fixed_bytes)} + {i.instances:,} × "
            f"{format_bytes(w.per_instance_bytes)}; with the reserve "
            f"({format_bytes(i.reserve_bytes)}) a host needs at least "
            f"{format_bytes(i.host_bytes)} of MemTotal"
        )
        for suggestion in w.suggestions:
            out.append("")
            out += _suggestion_lines(suggestion)
    if w.confidence == "low":
        out.append("")
        out.append(
            "Warning: the model's confidence is low; these figures are only as good as it is."
        )
    return "\n".join(out) + "\n"


def render_whatif_json(whatif: WhatIf) -> str:
    return dumps(whatif)
