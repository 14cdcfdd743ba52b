"""OpenMetrics for Prometheus: the estimate as gauges, for node_exporter's textfile collector."""

from __future__ import annotations

from capacity.records import Estimate
from capacity.render.escape import openmetrics_label


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
