"""OpenMetrics for Prometheus: the estimate as gauges, for node_exporter's textfile collector.

The top level's gauges are labelled by workload and host; every group of ``groups`` (one
php-fpm pool, one apache2 server) has ``capplan_group_*`` gauges of its own, labelled by
host, server, pool, instance (the master's pid) and worker_role, so a dashboard can sum or
compare pools. Busy or idle (``model.activity``) is ``capplan_activity_*``, for the top
level and per group: one ``capplan_activity_state`` sample per state, 1 for the state
measured and 0 for the others, the usual way to put an enum in gauges.
"""

from __future__ import annotations

from capacity.records import Activity, Estimate, GroupEstimate
from capacity.render.escape import openmetrics_label

# name, help, unit, samples: (labels after the family's own, value)
Family = tuple[str, str, str | None, list[tuple[str, float]]]
STATES = ("idle", "busy", "unknown")


def _group_labels(estimate: Estimate, group: GroupEstimate) -> str:
    pairs = (
        ("host", estimate.environment.hostname),
        ("server", group.server),
        ("pool", group.pool or ""),
        ("instance", "" if group.instance is None else str(group.instance)),
        ("worker_role", group.worker_role),
    )
    return ",".join(f'{key}="{openmetrics_label(value)}"' for key, value in pairs)


def _group_families(estimate: Estimate) -> list[Family]:
    """One sample per group in each family; the labels say which group."""
    groups = [(_group_labels(estimate, g), g) for g in estimate.groups]
    max_workers: list[tuple[str, float]] = []
    for labels, g in groups:
        max_workers.append((f'{labels},estimate="point"', g.prediction.max_instances))
        if g.prediction.max_instances_conservative is not None:
            conservative = g.prediction.max_instances_conservative
            max_workers.append((f'{labels},estimate="conservative"', conservative))
    return [
        (
            "capplan_group_worker_memory_bytes",
            "What one more worker of the group costs (the group's own fitted slope).",
            "bytes",
            [(labels, g.model.per_instance_bytes) for labels, g in groups],
        ),
        (
            "capplan_group_fixed_memory_bytes",
            "What the group pays once: its master and other fixed roles, shared pages once.",
            "bytes",
            [(labels, g.model.fixed_bytes) for labels, g in groups],
        ),
        (
            "capplan_group_workers_measured",
            "Processes in the group's worker role at the last sample.",
            None,
            [(labels, g.worker_count) for labels, g in groups],
        ),
        (
            "capplan_group_max_workers",
            "How many of the group's workers fit in the budget on their own: point and "
            "conservative (95%).",
            None,
            max_workers,
        ),
    ]


def _activity_families(prefix: str, measured: list[tuple[str, Activity]]) -> list[Family]:
    """Busy or idle, for each (labels, activity): the state, what was followed, the rates."""
    if not measured:
        return []
    return [
        (
            f"{prefix}_state",
            "Whether the workers (launch mode: instances) ran while capplan sampled: 1 for "
            "the state measured (idle, busy, unknown), 0 for the others.",
            None,
            [
                (f'{labels},state="{state}"', 1 if a.state == state else 0)
                for labels, a in measured
                for state in STATES
            ],
        ),
        (
            f"{prefix}_workers",
            "Workers (instances) followed from the first to the last sample.",
            None,
            [(labels, a.workers) for labels, a in measured],
        ),
        (
            f"{prefix}_busy_workers",
            "Of those, how many ran more than idle wakes explain.",
            None,
            [(labels, a.busy_workers) for labels, a in measured],
        ),
        (
            f"{prefix}_cpu_per_worker",
            "CPU seconds per worker per second between the first and last sample "
            "(1 is one CPU all the time).",
            None,
            [(labels, a.cpu_per_worker) for labels, a in measured],
        ),
        (
            f"{prefix}_context_switches_per_second",
            "Context switches per second of the workers' main threads, all together.",
            None,
            [(labels, a.switches_per_second) for labels, a in measured],
        ),
        (
            f"{prefix}_window_seconds",
            "The time between the first and the last sample.",
            "seconds",
            [(labels, a.duration_seconds) for labels, a in measured],
        ),
    ]


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
    families: list[Family] = [
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
    if e.file_cache is not None:  # issue 14: the page cache the workload reads
        families.append(
            (
                "capplan_file_cache_bytes",
                "The workload's page cache: hot (needed) and cold (reclaimable without harm).",
                "bytes",
                [
                    (',state="hot"', e.file_cache.hot_bytes),
                    (',state="cold"', e.file_cache.cold_bytes),
                ],
            )
        )
    if measured is not None:
        families.append(
            (
                "capplan_model_timestamp_seconds",
                "When the workload was measured (Unix time).",
                "seconds",
                [("", measured)],
            )
        )
    families += _activity_families(
        "capplan_activity", [("", e.activity)] if e.activity is not None else []
    )
    lines: list[str] = []
    for name, help_text, unit, samples in families:
        lines += _family(name, help_text, unit, [(labels + extra, v) for extra, v in samples])
    grouped = _group_families(e) if e.groups else []
    grouped += _activity_families(
        "capplan_group_activity",
        [(_group_labels(e, g), g.activity) for g in e.groups if g.activity is not None],
    )
    for name, help_text, unit, samples in grouped:
        lines += _family(name, help_text, unit, samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _family(
    name: str, help_text: str, unit: str | None, samples: list[tuple[str, float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    if unit:
        lines.append(f"# UNIT {name} {unit}")
    for labels, value in samples:
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{name}{{{labels}}} {number}")
    return lines
