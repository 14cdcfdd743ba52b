"""The capacity report for a sizing review: one document, rendered as Markdown or HTML.

The report is built once as a list of blocks (headings, paragraphs, tables, code, the plot)
and written by one emitter per format, so the two formats cannot drift apart and every
piece of text is escaped in one place. Text is either ours (``str``: fixed wording and
numbers) or the host's (``Host``: process names, command lines, paths, versions), and the
emitters escape the host's with ``escape.markdown_escape`` or ``escape.html_escape``.

Order, as a reviewer reads: the answer and how sure it is, the plot, the budget arithmetic,
the fit, the usual rules beside it, where the memory goes, drift, warnings, environment.
Records that other parts of capplan add to the Estimate later (drift from load runs,
per-mapping data) are rendered generically when present, so adding one needs no change here.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from typing import Any, Literal

from capacity.codec import to_jsonable
from capacity.model import suggest
from capacity.model.fitting import memory_for
from capacity.records import Estimate, GroupEstimate, ProcessMemory
from capacity.render.blocks import (
    Block,
    Bullets,
    Cell,
    Code,
    CodeBlock,
    Figure,
    Heading,
    Host,
    Para,
    Span,
    Strong,
    Table,
    to_html,
    to_markdown,
)
from capacity.render.document_runs import _launch, _load_and_drift
from capacity.render.plot import INSTALL_HINT, PlotUnavailable, render_png, render_svg
from capacity.render.report import MAX_PROCESS_ROWS, describe_activity, host_plan
from capacity.units import format_bytes, format_in, format_interval, pick_unit

# --------------------------------------------------------------------------- blocks


# --------------------------------------------------------------------------- building

KNOWN_FIELDS = {
    "schema_version",
    "kind",
    "unit",
    "workload",
    "samples",
    "model",
    "budget",
    "prediction",
    "estimators",
    "warnings",
    "environment",
    "timing",
    "measurement",
    "load",
    "drift",
    "launch",
    "activity",
    "groups",
}
# Records added to the Estimate later and not yet given a section of their own are rendered
# generically (a field/value table), in this order.
ORDERED_EXTRAS: tuple[str, ...] = ()


def _percent(value: float) -> str:
    return f"{value:.2%}" if abs(value) < 0.01 else f"{value:.1%}"


def _summary(estimate: Estimate) -> list[Block]:
    e = estimate
    model, budget, prediction = e.model, e.budget, e.prediction
    conservative = prediction.max_instances_conservative
    recommended = conservative if conservative is not None else prediction.max_instances
    low, high = model.per_instance_ci95
    half = (high - low) / 2 / model.per_instance_bytes
    per_unit = pick_unit([model.per_instance_bytes])
    blocks: list[Block] = [Heading(2, ("Summary",))]
    blocks.append(
        Para(
            (
                Strong(f"Recommended: {recommended:,} workers"),
                f" in {format_bytes(budget.total_bytes)} (",
                Host(budget.source),
                f", less a reserve of {format_bytes(budget.reserve_bytes)}). "
                + (
                    "This is the conservative maximum: the one-sided 95% upper prediction "
                    "bound of their memory fits the budget. "
                    if conservative is not None
                    else ""
                )
                + f"The point estimate is {prediction.max_instances:,} workers: at that count, "
                "workers like these overrun the budget about half the time.",
            )
        )
    )
    reasons = "; ".join(model.confidence_reasons)
    blocks.append(
        Para(
            (
                "How sure: confidence ",
                Strong(model.confidence),
                f". One more worker costs {format_bytes(model.per_instance_bytes, per_unit)}, "
                f"known to ±{_percent(half)} (95% CI {format_interval(low, high)}), "
                f"from {model.n_workers} workers "
                f"× {model.n_samples} samples; the workload pays "
                f"{format_bytes(model.fixed_bytes)} once."
                + (f" Reasons: {reasons}." if reasons else ""),
            )
        )
    )
    config = suggest.for_estimate(e, recommended)
    if config is not None:
        blocks.append(Para((f"Configuration for {config.title}:",)))
        blocks.append(CodeBlock(config.lines))
        if config.note:
            blocks.append(Para((config.note[0].upper() + config.note[1:] + ".",)))
    else:
        blocks.append(
            Para(
                (
                    "capplan does not recognise this program's configuration, so the number "
                    "above is the answer: set the worker limit to it.",
                )
            )
        )
    n = e.workload.worker_count
    if n > 0:
        point, _, upper = memory_for(model, n)
        k8s = suggest.kubernetes(n, point, upper)
        blocks.append(
            Para(
                (
                    f"For a container running the {n} workers measured (plus their parent): "
                    "the request is the point estimate of their memory, the limit the upper "
                    "end of its 95% prediction interval.",
                )
            )
        )
        blocks.append(CodeBlock(k8s.lines))
    return blocks


def _plot(figure: Figure) -> list[Block]:
    return [Heading(2, ("Memory against worker count",)), figure]


def _budget(estimate: Estimate) -> list[Block]:
    model, budget, prediction = estimate.model, estimate.budget, estimate.prediction
    unit = pick_unit([budget.total_bytes])
    rows: tuple[tuple[Cell, ...], ...] = (
        ("", "budget", format_in(budget.total_bytes, unit), Host(budget.source)),
        ("−", "reserve", format_in(budget.reserve_bytes, unit), Host(budget.reserve_source)),
        ("−", "fixed", format_in(model.fixed_bytes, unit), "paid once: parents and shared pages"),
        ("=", "room", format_in(prediction.room_bytes, unit), ""),
    )
    return [
        Heading(2, ("Budget arithmetic",)),
        Table(("", "", unit[0], "source"), rows, ("left", "left", "right", "left")),
        Para(
            (
                f"room / per worker = {format_bytes(prediction.room_bytes)} / "
                f"{format_bytes(model.per_instance_bytes)} = {prediction.max_instances:,} "
                "workers (point estimate).",
            )
        ),
    ]


def _fit(estimate: Estimate) -> list[Block]:
    m = estimate.model
    per_unit = pick_unit([m.per_instance_bytes])
    fixed_unit = pick_unit([m.fixed_bytes])
    rows: tuple[tuple[Cell, ...], ...] = (
        (
            "per worker (slope)",
            format_bytes(m.per_instance_bytes, per_unit),
            format_interval(*m.per_instance_ci95),
            format_bytes(m.per_instance_se_bytes),
        ),
        (
            "fixed (intercept)",
            format_bytes(m.fixed_bytes, fixed_unit),
            format_interval(*m.fixed_ci95),
            format_bytes(m.fixed_se_bytes),
        ),
    )
    return [
        Heading(2, ("The fit",)),
        Para(
            (
                "total(N) = fixed + N × per worker, fitted by least squares through every "
                "sample's cumulative totals (workers in fork order). The intervals come from "
                "how the workers differ, with one degree of freedom fewer than the workers "
                "measured, plus the spread of the per-sample estimates over time.",
            )
        ),
        Table(
            ("", "estimate", "95% CI", "standard error"),
            rows,
            ("left", "right", "right", "right"),
        ),
        Table(
            ("", ""),
            (
                ("method", m.method),
                ("points", f"{m.n_points} ({m.n_workers} workers × {m.n_samples} samples)"),
                ("degrees of freedom", str(m.dof)),
                ("R²", f"{m.r2:.4f}"),
                ("residual sd", format_bytes(m.residual_sd_bytes)),
                ("spread between workers (sd)", format_bytes(m.worker_sd_bytes)),
                ("confidence", m.confidence),
            ),
            ("left", "right"),
        ),
    ]


def _estimators(estimate: Estimate) -> list[Block]:
    results = estimate.estimators
    if not results:
        return []
    capplan = results.get("capplan")
    unit = pick_unit([r.per_instance_bytes for r in results.values()])
    rows = []
    for name, result in results.items():
        ratio = (
            f"{result.max_instances / capplan.max_instances:.2f}×"
            if capplan is not None and capplan.max_instances > 0
            else "n/a"
        )
        rows.append(
            (
                name,
                format_in(result.per_instance_bytes, unit),
                f"{result.max_instances:,}",
                ratio,
                result.note,
            )
        )
    return [
        Heading(2, ("The usual rules side by side",)),
        Para(
            (
                "Each rule divides the same budget by one per-process figure from the same "
                "samples. None separates what is paid once from what each worker adds, and "
                "none counts the kernel memory every process costs; the last column says "
                "which way each errs.",
            )
        ),
        Table(
            ("rule", f"per worker ({unit[0]})", "max workers", "vs capplan", "why it differs"),
            tuple(rows),
            ("left", "right", "right", "right", "left"),
        ),
    ]


def _breakdown(estimate: Estimate) -> list[Block]:
    blocks: list[Block] = [Heading(2, ("Where the memory goes",))]
    b = estimate.model.breakdown
    if b is not None:
        source = (
            "read from the workload's cgroup"
            if b.kernel_source == "cgroup"
            else "estimated from threads and mappings"
        )
        unit = pick_unit([b.per_instance_uss_bytes])
        rows: list[tuple[Cell, ...]] = [
            (
                "per worker",
                "private pages (USS: heap, stacks, written copies)"
                if estimate.model.method != "exact"
                else "own pages: the distinct physical pages each worker adds",
                format_bytes(b.per_instance_uss_bytes, unit),
            ),
            (
                "per worker",
                "kernel: page tables (VmPTE, read)",
                format_bytes(b.per_instance_page_tables_bytes, unit),
            ),
            (
                "per worker",
                f"kernel: stack ({source})",
                format_bytes(b.per_instance_kernel_stack_bytes, unit),
            ),
            (
                "per worker",
                f"kernel: slab ({source})",
                format_bytes(b.per_instance_slab_bytes, unit),
            ),
            ("once", "parents' private pages", format_bytes(b.fixed_parent_bytes)),
            (
                "once",
                "shared pages, counted once (libraries, inherited heap, shmem)",
                format_bytes(b.fixed_shared_bytes),
            ),
            ("once", "parents' kernel memory", format_bytes(b.fixed_kernel_bytes)),
        ]
        if b.fixed_shm_untouched_bytes:
            rows.append(
                (
                    "once",
                    "shared memory segments not yet touched, at their configured size "
                    "(--shm configured; each segment in Shared memory below)",
                    format_bytes(b.fixed_shm_untouched_bytes),
                )
            )
        # The exact method leaves out pages other programs map too (issue 3's breakdown
        # fields); found by name so a smaps-only breakdown needs nothing here.
        outside = getattr(b, "shared_outside_bytes", 0)
        if outside:
            rows.append(
                (
                    "not charged",
                    "pages shared with processes outside the workload (in memory anyway)",
                    format_bytes(outside),
                )
            )
        blocks.append(Table(("", "kind", "size"), tuple(rows), ("left", "left", "right")))
    else:
        blocks.append(Para(("This model carries no breakdown of the costs.",)))
    kinds = _pss_by_kind(estimate)
    if kinds:
        blocks.append(
            Para(
                (
                    "Proportional set size by kind (mean per process over every sample, from "
                    "smaps_rollup: file pages are libraries and executables, anonymous pages "
                    "heaps and stacks, shmem shared memory):",
                )
            )
        )
        blocks.append(Table(("kind", "parent", "worker"), kinds, ("left", "right", "right")))
    # The exact page tier stores its walk on the snapshots (``Snapshot.pages``) where it is
    # available; found by name so that this report needs no change when it arrives.
    walks = [getattr(s, "pages", None) for s in estimate.samples]
    walk = next((w for w in reversed(walks) if w is not None), None)
    if walk is not None:
        blocks.append(Para(("Exact page counts from the last sample with a page walk:",)))
        blocks.append(
            Table(
                ("field", "value"),
                tuple((Host(k), Host(v)) for k, v in _flatten(to_jsonable(walk))),
                ("left", "left"),
            )
        )
    else:
        blocks.append(
            Para(
                (
                    "Per-mapping detail (each library, the heap, each shared-memory segment) "
                    f"is not in this model: method {estimate.model.method} reads per-process "
                    "sums only.",
                )
            )
        )
    return blocks


def _pss_by_kind(estimate: Estimate) -> tuple[tuple[Cell, ...], ...]:
    parents = [p for s in estimate.samples for p in s.parents]
    workers = [p for s in estimate.samples for p in s.workers]
    if not workers:
        return ()

    def mean(values: list[int]) -> str:
        return format_bytes(statistics.fmean(values)) if values else "n/a"

    getters: list[tuple[str, Callable[[ProcessMemory], int]]] = [
        ("anonymous (heap, stacks)", lambda p: p.rollup.pss_anon_bytes),
        ("file (libraries, executable)", lambda p: p.rollup.pss_file_bytes),
        ("shmem (shared memory)", lambda p: p.rollup.pss_shmem_bytes),
    ]
    if all(g(p) == 0 for _, g in getters for p in parents + workers):
        return ()  # kernels before 5.3 do not split Pss by kind
    return tuple(
        (label, mean([g(p) for p in parents]), mean([g(p) for p in workers]))
        for label, g in getters
    )


def _groups(estimate: Estimate) -> list[Block]:
    """Groups and roles (issue 13): the roles of a single group, or with several a row per
    group, each fitted on its own, a section per group and the plan for the host (every
    group together, as ``capplan plan`` plans). Files saved before groups have none: no
    section."""
    from capacity.model.suggest import top_group

    groups = estimate.groups
    if not groups:
        return []
    blocks: list[Block] = [Heading(2, ("Groups and roles",))]
    top = top_group(estimate)
    if len(groups) > 1:
        blocks.append(
            Para(
                (
                    f"The selection holds {len(groups)} groups, each fitted on its own; this "
                    "report is of ",
                    Host(top.label if top is not None else "?"),
                    ", the top level of the model file (every group is in its groups).",
                )
            )
        )
        unit = pick_unit([g.model.per_instance_bytes for g in groups])
        fixed_unit = pick_unit([g.model.fixed_bytes for g in groups])
        rows: list[tuple[Cell, ...]] = []
        for g in groups:
            conservative = g.prediction.max_instances_conservative
            rows.append(
                (
                    Host(g.label),
                    Host(g.rule),
                    (f"{g.worker_count:,} ", Host(g.worker_role)),
                    format_in(g.model.fixed_bytes, fixed_unit),
                    format_in(g.model.per_instance_bytes, unit),
                    f"{g.prediction.max_instances:,}",
                    f"{conservative:,}" if conservative is not None else "n/a",
                    Host("; ".join(g.suggestion.lines)) if g.suggestion else "-",
                )
            )
        blocks.append(
            Table(
                (
                    "group",
                    "rule",
                    "workers",
                    f"fixed {fixed_unit[0]}",
                    f"per worker {unit[0]}",
                    "max",
                    "conservative",
                    "configuration",
                ),
                tuple(rows),
                ("left", "left", "left", "right", "right", "right", "right", "left"),
            )
        )
        for number, g in enumerate(groups, 1):
            blocks += _group_section(number, len(groups), g, top)
        # Each group's section has its roles: the top level's are among them.
        return blocks + _host_plan(estimate)
    if top is not None:
        costs = [top.role_cost_bytes.get(role, 0) for role in top.roles]
        cost_unit = pick_unit(costs)
        blocks.append(
            Para(
                (
                    "Roles of ",
                    Host(top.label),
                    " (rule ",
                    Host(top.rule),
                    "): the ",
                    Host(top.worker_role),
                    " processes are the workers, every other role is paid once. Cost: in the "
                    "last sample, a worker's USS and kernel memory, a fixed role's the same "
                    "less its page cache.",
                )
            )
        )
        blocks.append(
            Table(
                ("role", "count", f"cost {cost_unit[0]}", ""),
                tuple(
                    (
                        Host(role),
                        f"{count:,}",
                        format_in(cost, cost_unit),
                        "workers" if role == top.worker_role else "fixed",
                    )
                    for (role, count), cost in zip(top.roles.items(), costs, strict=True)
                ),
                ("left", "right", "right", "left"),
            )
        )
    return blocks


def _group_section(
    number: int, count: int, g: GroupEstimate, top: GroupEstimate | None
) -> list[Block]:
    """One group of several: its answer, how sure, its configuration and its roles."""
    model, prediction = g.model, g.prediction
    conservative = prediction.max_instances_conservative
    per_unit = pick_unit([model.per_instance_bytes])
    low, high = model.per_instance_ci95
    bound = "at most " if prediction.max_is_upper_bound else ""
    blocks: list[Block] = [
        Heading(3, (f"Group {number} of {count}: ", Host(g.label))),
        Para(
            (
                f"Max workers: {bound}{prediction.max_instances:,}, conservative (95%): "
                + (f"{bound}{conservative:,}" if conservative is not None else "n/a")
                + f", confidence {model.confidence}, fitted on its own: one more ",
                Host(g.worker_role),
                f" costs {format_bytes(model.per_instance_bytes, per_unit)} "
                f"(95% CI {format_interval(low, high)}), the group pays "
                f"{format_bytes(model.fixed_bytes)} once (95% CI "
                f"{format_interval(*model.fixed_ci95)}); {model.n_workers} workers × "
                f"{model.n_samples} samples, method {model.method}, rule ",
                Host(g.rule),
                "." + (" Its whole report is the rest of this document." if g is top else ""),
            )
        ),
    ]
    if g.activity is not None:
        blocks.append(Para(("Activity: ", Host(describe_activity(g.activity)), ".")))
    if g.suggestion is not None:
        blocks.append(
            Para(
                (
                    "Configuration (",
                    Host(g.suggestion.title),
                    f", for {g.suggestion.instances:,} workers): ",
                    *_joined([Code(line) for line in g.suggestion.lines], "; "),
                    *((" (", Host(g.suggestion.note), ")") if g.suggestion.note else ()),
                    ".",
                )
            )
        )
    costs = [g.role_cost_bytes.get(role, 0) for role in g.roles]
    cost_unit = pick_unit(costs)
    blocks.append(
        Para(
            (
                "Roles of ",
                Host(g.label),
                ": the ",
                Host(g.worker_role),
                " processes are the workers, every other role is paid once (cost in the last "
                "sample, as for the top level).",
            )
        )
    )
    blocks.append(
        Table(
            ("role", "count", f"cost {cost_unit[0]}", ""),
            tuple(
                (
                    Host(role),
                    f"{n:,}",
                    format_in(cost, cost_unit),
                    "workers"
                    if role == g.worker_role
                    else "fixed, shared with the instance's other groups"
                    if role in g.shared_roles
                    else "fixed",
                )
                for (role, n), cost in zip(g.roles.items(), costs, strict=True)
            ),
            ("left", "right", "right", "left"),
        )
    )
    if g.warnings:
        blocks.append(
            Para(("Warnings: ", ", ".join(w.code for w in g.warnings), " (each in the JSON)."))
        )
    return blocks


def _joined(spans: list[Span], separator: str) -> list[Span]:
    out: list[Span] = []
    for index, span in enumerate(spans):
        if index:
            out.append(separator)
        out.append(span)
    return out


def _host_plan(estimate: Estimate) -> list[Block]:
    """The plan for the host, every group together (``model.plan.plan_groups``), as the
    text output prints it after the groups."""
    plan, error = host_plan(estimate)
    blocks: list[Block] = [Heading(3, ("Plan for this host, every group together",))]
    if plan is None:
        blocks.append(Para(("No plan: ", Host(error or "one group"), ".")))
        return blocks
    p, c = plan.point, plan.conservative
    blocks.append(
        Para(
            (
                f"Memory {format_bytes(plan.memory_bytes)}: ",
                Host(plan.memory_source),
                f". Reserve {format_bytes(plan.reserve_bytes)}: ",
                Host(plan.reserve_source),
                f". Available {format_bytes(plan.available_bytes)} = memory - reserve; each "
                "group's fixed cost is paid once. Ratio: ",
                Host(plan.ratio_source),
                ".",
            )
        )
    )
    fixed_unit = pick_unit([pool.fixed_bytes for pool in plan.pools])
    unit = pick_unit([pool.per_instance_bytes for pool in plan.pools])
    memory_unit = pick_unit([p.memory_bytes])
    rows: list[tuple[Cell, ...]] = [
        (
            Host(pool.name),
            format_in(pool.fixed_bytes, fixed_unit),
            format_in(pool.per_instance_bytes, unit),
            f"{pool.weight:,.6g}" if pool.weight is not None else "--set",
            f"{pool.max_instances:,}",
            format_in(pool.memory_bytes, memory_unit),
            f"{pool.max_instances_conservative:,}",
            Host("; ".join(pool.suggestion.lines)) if pool.suggestion else "-",
        )
        for pool in plan.pools
    ]
    rows.append(
        (
            "total",
            format_in(sum(pool.fixed_bytes for pool in plan.pools), fixed_unit),
            "",
            "",
            f"{p.workers:,}",
            format_in(p.memory_bytes, memory_unit),
            f"{c.workers:,}",
            "",
        )
    )
    blocks.append(
        Table(
            (
                "pool",
                f"fixed {fixed_unit[0]}",
                f"per worker {unit[0]}",
                "ratio",
                "max",
                f"memory {memory_unit[0]}",
                "conservative (95%, sum)",
                "configuration (conservative)",
            ),
            tuple(rows),
            ("left", "right", "right", "right", "right", "right", "right", "left"),
        )
    )
    room = (
        f"room left {format_bytes(c.room_bytes)}"
        if c.room_bytes >= 0
        else f"over by {format_bytes(-c.room_bytes)}"
    )
    blocks.append(
        Para(
            (
                f"Max workers together: {p.workers:,}, using {format_bytes(p.memory_bytes)} of "
                f"{format_bytes(p.limit_bytes)}. Conservative: {c.workers:,}, whose total is "
                f"at most {format_bytes(c.high_bytes)} by one 95% upper prediction bound for "
                f"the sum over the groups (not one per group), within "
                f"{format_bytes(c.limit_bytes)}: {room}.",
            )
        )
    )
    if plan.notes:
        blocks.append(Bullets(tuple(("Note: ", Host(note)) for note in plan.notes)))
    return blocks


def _extra_fields(estimate: Estimate) -> list[str]:
    names = [
        f.name
        for f in dataclasses.fields(estimate)
        if f.name not in KNOWN_FIELDS and getattr(estimate, f.name) is not None
    ]
    ordered = [name for name in ORDERED_EXTRAS if name in names]
    return ordered + [name for name in names if name not in ordered]


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return [(prefix, ", ".join(_scalar(prefix, item) for item in value[:50]))]
        rows = []
        for index, item in enumerate(value[:20]):
            rows.extend(_flatten(item, f"{prefix}[{index}]"))
        if len(value) > 20:
            rows.append((prefix, f"... and {len(value) - 20} more (all of them are in the JSON)"))
        return rows
    return [(prefix, _scalar(prefix, value))]


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith("_bytes"):
        return format_bytes(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "null" if value is None else str(value)


def _extras(estimate: Estimate) -> list[Block]:
    blocks: list[Block] = []
    for name in _extra_fields(estimate):
        title = name.replace("_", " ").capitalize()
        rows = _flatten(to_jsonable(getattr(estimate, name)))
        blocks.append(Heading(2, (title,)))
        blocks.append(
            Table(
                ("field", "value"),
                tuple((Host(key), Host(value)) for key, value in rows),
                ("left", "left"),
            )
        )
    return blocks


def _warnings(estimate: Estimate) -> list[Block]:
    if not estimate.warnings:
        return [Heading(2, ("Warnings",)), Para(("None.",))]
    items = []
    for warning in estimate.warnings:
        spans: list[Span] = [Strong(warning.code), ": ", Host(warning.message)]
        if warning.hint:
            spans += [". Next: ", Host(warning.hint)]
        items.append(tuple(spans))
    return [Heading(2, ("Warnings",)), Bullets(tuple(items))]


def _environment(estimate: Estimate, source: str) -> list[Block]:
    env = estimate.environment
    rows: list[tuple[Cell, ...]] = [
        ("host", Host(env.hostname)),
        ("kernel", Host(f"{env.kernel} ({env.arch}, {env.page_size}-byte pages)")),
        ("transparent huge pages", Host(env.thp_enabled)),
        ("KSM", Host(env.ksm_run)),
        ("MemTotal", format_bytes(env.mem_total_bytes)),
        ("swap", format_bytes(env.swap_total_bytes)),
        ("CPUs", str(env.cpu_count)),
        ("cgroup", Host(env.cgroup_version)),
        ("executable", Host(env.executable or estimate.workload.exe or "unknown")),
        ("executable version", Host(env.executable_version or "not detected")),
        ("MALLOC_ARENA_MAX", Host(env.malloc_arena_max or "unset")),
        ("capplan", Host(env.capplan_version)),
        ("Python", Host(env.python_version)),
        ("measured at", Host(env.time)),
        ("command line", Host(" ".join(env.command_line))),
        ("workload", Host(estimate.workload.selector)),
        *(
            [("selected cgroup", Host(estimate.workload.cgroup))]
            if estimate.workload.cgroup is not None
            else []
        ),
        ("parent command line", Host(" ".join(estimate.workload.parent_cmdline) or "unknown")),
        ("model file", Host(source)),
    ]
    if estimate.measurement is not None:
        rows.append(
            (
                "sampling",
                f"{estimate.measurement.samples} samples, "
                f"{estimate.measurement.interval_seconds:g} s apart",
            )
        )
    reads = estimate.timing.sample_read_seconds
    if reads:
        rows.append(("read time per sample", f"{statistics.median(reads) * 1000:.1f} ms (median)"))
    return [
        Heading(2, ("Environment",)),
        Table(("", ""), tuple(rows), ("left", "left")),
    ]


def _processes(estimate: Estimate) -> list[Block]:
    last = estimate.samples[-1]
    shown = sorted(last.processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    hidden = max(0, len(shown) - MAX_PROCESS_ROWS)
    shown = shown[:MAX_PROCESS_ROWS]
    unit = pick_unit([p.rollup.rss_bytes for p in shown])
    rows = tuple(
        (
            str(p.pid),
            p.role,
            Host(p.name),
            format_in(p.rollup.rss_bytes, unit),
            format_in(p.rollup.pss_bytes, unit),
            format_in(p.rollup.uss_bytes, unit),
            format_in(p.page_tables_bytes, unit),
        )
        for p in shown
    )
    blocks: list[Block] = [
        Heading(2, ("Processes in the last sample",)),
        Table(
            (
                "pid",
                "role",
                "name",
                f"RSS ({unit[0]})",
                f"PSS ({unit[0]})",
                f"USS ({unit[0]})",
                f"page tables ({unit[0]})",
            ),
            rows,
            ("right", "left", "left", "right", "right", "right", "right"),
        ),
    ]
    if hidden:
        blocks.append(
            Para((f"... and {hidden} more processes (all of them are in the model file).",))
        )
    return blocks


def build(estimate: Estimate, *, source: str, figure: Figure) -> list[Block]:
    """The report's blocks, in reading order."""
    e = estimate
    blocks: list[Block] = [
        Heading(1, ("Capacity report: ", Host(e.workload.name))),
        Para(
            (
                "Model ",
                Host(source),
                ", measured ",
                Host(e.environment.time),
                " on ",
                Host(e.environment.hostname),
                " by capplan ",
                Host(e.environment.capplan_version),
                f" ({e.workload.worker_count} workers, selected with ",
                Host(e.workload.selector),
                ").",
            )
        ),
    ]
    blocks += _summary(e)
    blocks += _plot(figure)
    blocks += _budget(e)
    blocks += _fit(e)
    blocks += _estimators(e)
    blocks += _breakdown(e)
    blocks += _launch(e)
    blocks += _load_and_drift(e)
    blocks += _groups(e)
    blocks += _extras(e)
    blocks += _warnings(e)
    blocks += _environment(e, source)
    blocks += _processes(e)
    return blocks


# --------------------------------------------------------------------------- Markdown


# --------------------------------------------------------------------------- HTML


# --------------------------------------------------------------------------- entry point


def missing_plot(reason: str) -> tuple[Span, ...]:
    return (
        "No plot: it needs matplotlib (",
        Host(reason),
        "). Install it with ",
        Code(INSTALL_HINT),
        " and run this command again.",
    )


def render(
    estimate: Estimate, fmt: Literal["markdown", "html"], *, source: str, png_name: str | None
) -> tuple[str, bytes | None]:
    """The report text, and the PNG to write beside a Markdown file (``png_name``).

    Without ``png_name`` a Markdown report has nowhere to put its plot (it goes to stdout),
    so it says how to get one.
    """
    png: bytes | None = None
    if fmt == "html":
        try:
            figure = Figure(svg=render_svg(estimate))
        except PlotUnavailable as err:
            figure = Figure(missing=missing_plot(str(err)))
        blocks = build(estimate, source=source, figure=figure)
        return to_html(blocks, f"Capacity report: {estimate.workload.name}"), None
    if png_name is None:
        figure = Figure(
            missing=(
                "No plot: it is written as a PNG beside the report file: give ",
                Code("-o reports/NAME.md"),
                " to get it.",
            )
        )
    else:
        try:
            png = render_png(estimate)
            figure = Figure(png_name=png_name)
        except PlotUnavailable as err:
            figure = Figure(missing=missing_plot(str(err)))
    return to_markdown(build(estimate, source=source, figure=figure)), png
