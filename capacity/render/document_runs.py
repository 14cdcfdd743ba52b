"""The report's sections on runs over time: launch mode's steps, and load with drift."""

from __future__ import annotations

from capacity.model.drift import sampling_advice
from capacity.records import Estimate
from capacity.render.blocks import (
    Block,
    Bullets,
    Heading,
    Host,
    Para,
    Span,
    Strong,
    Table,
)
from capacity.render.report import describe_activity
from capacity.units import format_bytes, format_in, format_interval, pick_unit


def _launch(estimate: Estimate) -> list[Block]:
    """Launch mode: total(N) at every step, measured from both sides, and the line checks."""
    launch = estimate.launch
    if launch is None:
        return []
    where: list[Span] = (
        ["all instances ran in capplan's cgroup ", Host(launch.cgroup_path or "?")]
        if launch.system_source == "cgroup"
        else ["no cgroup could be created: the system side is the host's MemAvailable drop"]
    )
    blocks: list[Block] = [
        Heading(2, ("Launched instances",)),
        Para(
            (
                f"{launch.instances} instances of ",
                Host(launch.command),
                " (with /bin/sh -c)" if launch.shell else "",
                f", started one at a time; each settled {launch.settle}; ",
                *where,
                ".",
            )
        ),
    ]
    values = [float(s.process_total_bytes) for s in launch.steps] + [
        float(s.system_total_bytes) for s in launch.steps
    ]
    unit = pick_unit(values)
    system_title = "cgroup" if launch.system_source == "cgroup" else "MemAvailable drop"
    blocks.append(
        Table(
            (
                "N",
                f"total(N), smaps ({unit[0]})",
                f"total(N), {system_title} ({unit[0]})",
                "settled (s)",
            ),
            tuple(
                (
                    str(step.instances),
                    format_in(step.process_total_bytes, unit),
                    format_in(step.system_total_bytes, unit),
                    f"{step.settle_seconds:.1f}",
                )
                for step in launch.steps
            ),
            ("right", "right", "right", "right"),
        )
    )
    items: list[tuple[Span, ...]] = []
    system = launch.system_model
    if system is not None:
        share = (
            system.per_instance_bytes / estimate.model.per_instance_bytes - 1
            if estimate.model.per_instance_bytes
            else 0.0
        )
        made_of = ", ".join(
            f"{name} {'+' if value >= 0 else '-'}{format_bytes(abs(value))}"
            for name, value in launch.difference.items()
        )
        items.append(
            (
                f"System side: {format_bytes(system.per_instance_bytes)} per instance "
                f"(95% CI {format_interval(*system.per_instance_ci95)}), R² {system.r2:.4f}; "
                f"{share:+.1%} against the process side"
                + (f", made of: {made_of}" if made_of else ""),
            )
        )
    for check in launch.quadratic:
        if check.p_value is None:
            items.append((f"Line check ({check.method}): {check.note}",))
            continue
        verdict = "significant" if check.significant else "not significant"
        items.append(
            (
                f"Line check ({check.method}): a quadratic term adds "
                f"{format_bytes(check.contribution_bytes)} at N = {check.at_instances:,} "
                f"({check.share:+.0%} of the line), p = {check.p_value:.2g}: {verdict}",
            )
        )
    if items:
        blocks.append(Bullets(tuple(items)))
    return blocks


def _load_and_drift(estimate: Estimate) -> list[Block]:
    """The load generators that ran, and how the workers' private memory moved under them."""
    blocks: list[Block] = []
    d = estimate.drift
    if estimate.load or d is not None or estimate.activity is not None:
        blocks.append(Heading(2, ("Load and copy-on-write drift",)))
    if estimate.activity is not None:
        blocks.append(
            Para((Strong("Activity"), ": ", Host(describe_activity(estimate.activity)), "."))
        )
    if estimate.load:
        rows = []
        for run in estimate.load:
            shown = run.command[2:] if run.shell else run.command
            if run.ended_at is not None:
                what = f"finished after {run.ended_at - run.started_at:.1f} s, status {run.exit_status}"
            else:
                what = "ran through the sampling (stopped by capplan)"
            rows.append(
                (
                    Host(" ".join(shown)),
                    "" if run.instance is None else str(run.instance),
                    "" if run.requests is None else f"{run.requests:,}",
                    what,
                )
            )
        blocks.append(
            Table(
                ("load generator", "instance", "requests", "outcome"),
                tuple(rows),
                ("left", "right", "right", "left"),
            )
        )
    elif d is not None:
        blocks.append(Para(("Measured without a load generator (no --load).",)))
    if d is None:
        return blocks
    items: list[tuple[Span, ...]] = [
        (
            f"{d.tracked} {d.unit}s followed over {d.samples} samples ({d.duration_seconds:.1f} s): "
            f"private memory per {d.unit} {format_bytes(d.first_bytes)} at the first sample, "
            f"{format_bytes(d.last_bytes)} at the last, {format_bytes(d.growth_per_minute_bytes)}/min"
            + (f" (p = {d.growth_p_value:.2g})" if d.growth_p_value is not None else "")
            + ".",
        )
    ]
    if d.growth_per_request_bytes is not None and d.requests_in_window:
        items.append(
            (
                f"{format_bytes(d.growth_per_request_bytes)} per request "
                f"({d.requests_in_window:,.0f} requests while sampling).",
            )
        )
    if not d.growing:
        items.append((Strong("No drift"), ": ", Host(d.note)))
    elif d.plateau:
        plateau = format_bytes(d.plateau_bytes) if d.plateau_bytes is not None else "?"
        items.append(
            (
                Strong("Plateau reached"),
                ": ",
                Host(d.note),
                f"; the prediction uses the plateau ({plateau} private per {d.unit}).",
            )
        )
    else:
        items.append(
            (
                Strong("No plateau"),
                ": ",
                Host(d.note),
                "; the per-worker cost is a lower bound, so the worker counts are upper bounds.",
            )
        )
        if d.sample_more_seconds is not None:
            items.append((Host(sampling_advice(d)),))
    blocks.append(Bullets(tuple(items)))
    return blocks
