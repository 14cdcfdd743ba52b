"""Renderers for ``capplan plan``: a table of the pools, the totals, the settings.

Same rules as ``report`` and ``predict``: records in, text out, and every name from a model
file (pool names, process names, host names, paths) passed through
``escape.terminal_safe`` before a terminal sees it. JSON keeps it raw.
"""

from __future__ import annotations

from tabulate import tabulate

from capacity.answers import Plan, PlanPool, PlanTotal
from capacity.codec import dumps
from capacity.render.escape import terminal_safe
from capacity.units import format_bytes, format_in, pick_unit


def _weight(pool: PlanPool) -> str:
    if pool.pinned or pool.weight is None:
        return "--set"
    text = f"{pool.weight:,.6g}"
    return text + (" (--weight)" if pool.weight_source == "--weight" else "")


def _table(plan: Plan) -> str:
    pools = plan.pools
    columns = {
        "fixed": [p.fixed_bytes for p in pools],
        "per worker": [p.per_instance_bytes for p in pools],
        "memory at max": [p.memory_bytes for p in pools],
        "memory at cons.": [p.conservative_memory_bytes for p in pools],
    }
    totals = {
        "fixed": sum(columns["fixed"]),
        "memory at max": plan.point.memory_bytes,
        "memory at cons.": plan.conservative.memory_bytes,
    }
    # The unit of the largest value, as inspect's columns: the big pools are what matter.
    units = {
        title: pick_unit([max([*values, totals.get(title, 0)])])
        for title, values in columns.items()
    }
    headers = [
        "pool",
        "server",
        f"fixed\n{units['fixed'][0]}",
        f"per worker\n{units['per worker'][0]}",
        "ratio",
        "max\nworkers",
        f"memory\n{units['memory at max'][0]}",
        "conservative\n(95%, sum)",
        f"memory\n{units['memory at cons.'][0]}",
    ]
    rows = [
        [
            terminal_safe(p.name),
            terminal_safe(p.server or "-"),
            format_in(p.fixed_bytes, units["fixed"]),
            format_in(p.per_instance_bytes, units["per worker"]),
            _weight(p),
            f"{p.max_instances:,}",
            format_in(p.memory_bytes, units["memory at max"]),
            f"{p.max_instances_conservative:,}",
            format_in(p.conservative_memory_bytes, units["memory at cons."]),
        ]
        for p in pools
    ]
    rows.append(
        [
            "total",
            "",
            format_in(totals["fixed"], units["fixed"]),
            "",
            "",
            f"{plan.point.workers:,}",
            format_in(plan.point.memory_bytes, units["memory at max"]),
            f"{plan.conservative.workers:,}",
            format_in(plan.conservative.memory_bytes, units["memory at cons."]),
        ]
    )
    return tabulate(
        rows,
        headers=headers,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "left", *("right",) * 7),
    )


def _room(total: PlanTotal) -> str:
    if total.room_bytes >= 0:
        return f"room left {format_bytes(total.room_bytes)}"
    return f"OVER by {format_bytes(-total.room_bytes)}"


def _settings(pool: PlanPool) -> str:
    name = terminal_safe(pool.name)
    if pool.suggestion is None:
        return (
            f"{name}: capplan does not recognise this program's configuration: set its worker "
            f"limit to {pool.max_instances_conservative:,}"
        )
    title = "" if pool.suggestion.title == pool.name else f"{pool.suggestion.title}: "
    return f"{name}: {terminal_safe(title)}" + "; ".join(pool.suggestion.lines)


def render_plan_text(plan: Plan, *, of_groups: bool = False) -> str:
    """``capplan plan``'s text; ``of_groups`` for the plan ``capplan estimate`` prints for
    the groups of one selection (no model files, no --set or --weight to mention)."""
    safe = terminal_safe
    p, c = plan.point, plan.conservative
    sources = ", ".join(f"{safe(pool.name)} ({safe(pool.source)})" for pool in plan.pools)
    count = len(plan.pools)
    heading = (
        f"Plan for this host, its {count} groups together: "
        + ", ".join(safe(x.name) for x in plan.pools)
        if of_groups
        else f"Plan for one host: {count} pool{'s' if count != 1 else ''}: {sources}"
    )
    names = (
        f"Names: {safe(plan.naming)}; capplan plan plans saved models the same way, with "
        "--set NAME=N and --weight NAME=W."
        if of_groups
        else f"Names: {safe(plan.naming)}; --set NAME=N pins a pool, --weight NAME=W changes its share."
    )
    out = [
        heading,
        f"Memory {format_bytes(plan.memory_bytes)}: {safe(plan.memory_source)}",
        f"Reserve {format_bytes(plan.reserve_bytes)}: {safe(plan.reserve_source)}",
        f"Available {format_bytes(plan.available_bytes)} = memory - reserve; each pool's "
        "fixed cost is paid once",
        f"Ratio: {safe(plan.ratio_source)}",
        "",
        _table(plan),
        "",
        f"Max workers: {p.workers:,}, using {format_bytes(p.memory_bytes)} of the "
        f"{format_bytes(p.limit_bytes)} available: {_room(p)}",
        f"Conservative (95%): {c.workers:,}, whose total is at most {format_bytes(c.high_bytes)} "
        "by one 95% upper prediction bound for the sum over the pools (not one per pool), "
        f"within {format_bytes(c.limit_bytes)}"
        + (" (the pools' page cache kept)" if c.limit_bytes < plan.available_bytes else "")
        + f": {_room(c)}",
        "",
        "Settings for the conservative counts:",
        *(f"    {_settings(pool)}" for pool in plan.pools),
        "",
        names,
    ]
    if plan.notes:
        out.append("")
        out += [f"Note: {safe(note)}" for note in plan.notes]
    return "\n".join(out) + "\n"


def render_plan_json(plan: Plan) -> str:
    return dumps(plan)


PLAN_RENDERERS = {"text": render_plan_text, "json": render_plan_json}
