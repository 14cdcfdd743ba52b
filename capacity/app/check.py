"""``capplan check`` measures again the way its baseline was measured, in one call.

Like with like: the baseline's method, insisted on (exact needs root), its number of
samples and interval, and for ``--demo`` the demo sizes it was measured with, all read
from the baseline's ``measurement`` record (older files without one: their sample count
and a 1 s interval). What differs is then the workload, not the way it was looked at.
"""

from __future__ import annotations

from pathlib import Path

from capacity.app.estimate import EstimateOptions, Progress, no_progress, run_estimate
from capacity.errors import CapplanError, ExactUnavailable
from capacity.measure.procfs import DEFAULT_ROOT
from capacity.measure.workload import Selector
from capacity.records import DemoOptions, Estimate, Method


def measure_like(
    baseline: Estimate,
    *,
    source: str,
    selector: Selector | None = None,
    demo: bool = False,
    samples: int | None = None,
    interval: float | None = None,
    root: Path = DEFAULT_ROOT,
    command_line: tuple[str, ...] = (),
    progress: Progress = no_progress,
) -> Estimate:
    """The current estimate, measured as ``baseline`` (read from ``source``) was."""
    if baseline.model.method not in (Method.SMAPS, Method.EXACT):
        raise CapplanError(
            f"{source} was measured with method {baseline.model.method}, which check cannot repeat",
            hint="measure the current build the same way, save it, and pass --current FILE",
        )
    measured = baseline.measurement
    demo_options = None
    if demo:
        demo_options = measured.demo if measured and measured.demo else DemoOptions()
    options = EstimateOptions(
        selector=None if demo else selector,
        demo=demo_options,
        samples=samples or (measured.samples if measured else len(baseline.samples)),
        interval=interval
        if interval is not None
        else (measured.interval_seconds if measured else 1.0),
        root=root,
        method=Method(baseline.model.method),
        shm=baseline.shared_memory.choice if baseline.shared_memory else "auto",
        command_line=command_line,
        # With several groups, the baseline's group at the top level, to compare like with
        # like (model/check refuses a pair of different groups).
        group=(baseline.workload.server, baseline.workload.pool)
        if baseline.workload.server is not None
        else None,
    )
    try:
        return run_estimate(options, progress=progress)
    except ExactUnavailable as err:
        # check has no --method: its hint is the way round, not estimate's.
        raise CapplanError(
            err.message,
            hint=f"{source} was measured with the exact method, which needs root and the "
            "live /proc: run check as root on the host, or measure the current build with "
            "capplan estimate --method smaps --save FILE and compare a baseline measured "
            "the same way with capplan check BASELINE --current FILE",
        ) from None
