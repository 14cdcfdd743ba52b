"""Compose measured snapshots into the whole answer: model, budget, prediction, comparison.

Pure: it takes what the sampler measured and the options the user gave, and returns an
``Estimate`` record that every output format renders. The CLI and library users call it
the same way.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from capacity import accounting, diagnostics, estimators
from capacity.errors import ModelError
from capacity.model import fit, make_budget, predict
from capacity.records import Environment, Estimate, Method, Snapshot, Timing, Workload


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetOptions:
    """What the user said about the budget: ``--memory`` and ``--reserve``, both optional."""

    memory: int | None = None
    memory_text: str | None = None
    reserve_bytes: int | None = None
    reserve_fraction: float | None = None
    reserve_text: str | None = None


def describe_workload(
    selector: str,
    snapshots: Sequence[Snapshot],
    exe: str | None = None,
    parent_cmdline: tuple[str, ...] = (),
) -> Workload:
    last = snapshots[-1]
    names = sorted({p.name for p in last.processes})
    return Workload(
        selector=selector,
        name=names[0] if len(names) == 1 else ",".join(names),
        pids=tuple(p.pid for p in last.processes),
        parent_pids=tuple(p.pid for p in last.parents),
        worker_count=len(last.workers),
        parent_cmdline=parent_cmdline,
        exe=exe,
    )


def build_estimate(
    *,
    workload: Workload,
    snapshots: Sequence[Snapshot],
    environment: Environment,
    budget_options: BudgetOptions,
    total_seconds: float,
    samples_requested: int,
    under_load: bool = False,
    method: Method | None = None,
    exact_fallback: str | None = None,
) -> Estimate:
    """The whole answer. ``method`` None picks "exact" when a snapshot carries an exact
    page walk, else "smaps"; ``exact_fallback`` is why exact was wanted but not used."""
    if not snapshots:
        raise ModelError("no samples were taken")
    slab_factor = accounting.slab_calibration(snapshots)
    factor = 1.0 if slab_factor is None else slab_factor
    if method is None:
        method = "exact" if accounting.exact_snapshots(snapshots) else "smaps"
    if method == "exact":
        if not accounting.exact_snapshots(snapshots):
            raise ModelError(
                "no sample carries an exact page walk",
                hint="measure with --method exact as root, or use --method smaps",
            )
        points = accounting.exact_points(snapshots, factor)
        breakdown = accounting.exact_breakdown(snapshots, slab_factor)
    else:
        points = accounting.smaps_points(snapshots, factor)
        breakdown = accounting.smaps_breakdown(snapshots, slab_factor)
    model = fit(points, method, breakdown)

    last = snapshots[-1]
    if last.host is None:
        raise ModelError("the snapshot has no host memory figures")
    workload_total = int(statistics.fmean(accounting.workload_totals(points)))
    budget = make_budget(
        last.host,
        workload_total,
        cgroup=last.cgroup,
        memory=budget_options.memory,
        memory_text=budget_options.memory_text,
        reserve_bytes=budget_options.reserve_bytes,
        reserve_fraction=budget_options.reserve_fraction,
        reserve_text=budget_options.reserve_text,
    )
    prediction = predict(model, budget)
    compared = estimators.compare(snapshots, model, budget, prediction)
    warnings = diagnostics.diagnose(
        snapshots,
        model,
        budget,
        prediction,
        environment,
        selector=workload.selector,
        samples_requested=samples_requested,
        under_load=under_load,
        exact_fallback=exact_fallback,
    )
    return Estimate(
        workload=workload,
        samples=tuple(snapshots),
        model=model,
        budget=budget,
        prediction=prediction,
        estimators=compared,
        warnings=tuple(warnings),
        environment=environment,
        timing=Timing(
            sample_read_seconds=tuple(round(s.read_seconds, 6) for s in snapshots),
            total_seconds=round(total_seconds, 3),
            exact_read_seconds=tuple(s.pages.read_seconds for s in snapshots if s.pages),
        ),
    )
