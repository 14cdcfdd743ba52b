"""Copy-on-write drift: how each worker's private memory changes while it serves requests.

A worker measured right after fork shares almost every page with its parent; each write to
an inherited page (a refcount, a cache entry, allocator metadata) copies it, and the worker
grows until what it writes stops changing. Sizing from an idle snapshot over-predicts the
worker count. Pure maths over snapshots, no /proc:

* Workers are followed by identity ``(pid, start_ticks)``, so a recycled worker is a new
  one, not a sudden shrink. In launch mode the unit is an instance's whole process tree.
* Growth is the pooled within-worker slope of private memory (USS) over time: each worker's
  own mean is removed before the fit (fixed effects), so workers of different sizes and
  workers that come and go do not bias it. One-sided t-test (scipy) for growth > 0, with
  ``n - workers - 1`` degrees of freedom.
* It is growing when that test is significant at 5 % and the growth over the samples is at
  least 1 % of a worker's cost: smaller drifts do not change the answer.
* It has flattened (plateau) when the slope over the last third of the samples (at least 3)
  is not significantly above zero and at most a quarter of the whole run's slope. A plateau
  that starts after the load generator finished only shows that the load stopped, so it
  does not count.
* Without a plateau the cost measured last is a lower bound. How long to sample follows
  from the growth rate: a worker cannot copy more than the inherited anonymous memory it
  still shares (its headroom), so ``headroom / rate`` bounds the time to flatten.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import numpy as np

from capacity.records import Drift, LoadRun, ProcessMemory, Snapshot
from capacity.units import format_bytes

ALPHA = 0.05
MIN_GROWTH_SHARE = 0.01  # growth over the samples smaller than this share of a worker is noise
PLATEAU_SLOPE_SHARE = 0.25  # a plateau's slope is at most this share of the whole run's slope
MIN_PLATEAU_POINTS = 3
MIN_SAMPLES_FOR_PLATEAU = 6
NO_HEADROOM_FACTOR = 3.0  # without a bound from inherited memory: sample 3x as long again
MIN_SUGGESTED_SECONDS = 60.0

Key = Hashable


@dataclasses.dataclass(frozen=True, slots=True)
class UnitSample:
    """One sample: each unit's private memory and its headroom (inherited anon not copied)."""

    taken_at: float
    private: dict[Key, int]
    headroom: dict[Key, int]


def private_bytes(process: ProcessMemory) -> int:
    return process.rollup.uss_bytes + process.rollup.private_hugetlb_bytes


def headroom_bytes(process: ProcessMemory) -> int:
    """Anonymous memory still shared copy-on-write: what the process could yet copy.

    RssAnon counts private and shared anonymous pages; private anonymous pages are dirty,
    so RssAnon - Private_Dirty is close to the anonymous pages it still shares.
    """
    return max(0, process.rss_anon_bytes - process.rollup.private_dirty_bytes)


def worker_samples(snapshots: Sequence[Snapshot]) -> list[UnitSample]:
    """Attach mode: every worker process, by identity."""
    return [
        UnitSample(
            taken_at=snap.taken_at,
            private={(w.pid, w.start_ticks): private_bytes(w) for w in snap.workers},
            headroom={(w.pid, w.start_ticks): headroom_bytes(w) for w in snap.workers},
        )
        for snap in snapshots
    ]


def grouped_samples(
    snapshots: Sequence[Snapshot], unit_of: Callable[[ProcessMemory], Key | None]
) -> list[UnitSample]:
    """Launch mode: the processes of each unit (an instance's tree) summed."""
    result = []
    for snap in snapshots:
        private: dict[Key, int] = {}
        headroom: dict[Key, int] = {}
        for process in snap.processes:
            unit = unit_of(process)
            if unit is None:
                continue
            private[unit] = private.get(unit, 0) + private_bytes(process)
            headroom[unit] = headroom.get(unit, 0) + headroom_bytes(process)
        result.append(UnitSample(taken_at=snap.taken_at, private=private, headroom=headroom))
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class Slope:
    """Pooled within-unit slope in bytes per second, with its one-sided p-value (> 0)."""

    per_second: float
    p_value: float | None


def within_slope(samples: Sequence[UnitSample], t0: float) -> Slope | None:
    """Fixed-effects slope: each unit's series centred on its own means, then one OLS."""
    from scipy import stats

    xs: list[float] = []
    ys: list[float] = []
    units = 0
    keys = {key for s in samples for key in s.private}
    for key in keys:
        points = [(s.taken_at - t0, s.private[key]) for s in samples if key in s.private]
        if len(points) < 2:
            continue
        units += 1
        x = np.array([p[0] for p in points], dtype=np.float64)
        y = np.array([p[1] for p in points], dtype=np.float64)
        xs.extend(x - x.mean())
        ys.extend(y - y.mean())
    if units == 0:
        return None
    x_all, y_all = np.asarray(xs), np.asarray(ys)
    sxx = float(np.sum(x_all**2))
    if sxx <= 0:
        return None
    slope = float(np.sum(x_all * y_all) / sxx)
    dof = len(x_all) - units - 1
    if dof < 1:
        return Slope(per_second=slope, p_value=None)
    residual = float(np.sum((y_all - slope * x_all) ** 2)) / dof
    se = math.sqrt(residual / sxx)
    if se == 0:
        return Slope(per_second=slope, p_value=0.0 if slope > 0 else 1.0)
    return Slope(per_second=slope, p_value=float(stats.t.sf(slope / se, dof)))


def _mean_at(sample: UnitSample, keys: set[Key]) -> float | None:
    values = [sample.private[k] for k in keys if k in sample.private]
    return float(np.mean(values)) if values else None


def requests_in_window(loads: Sequence[LoadRun], start: float, end: float) -> float | None:
    """Requests served between two instants, from each run's known count and duration,
    assuming a steady rate; None when a run that overlaps the window is not known."""
    total = 0.0
    for run in loads:
        run_end = run.ended_at if run.ended_at is not None else math.inf
        overlap = min(run_end, end) - max(run.started_at, start)
        if overlap <= 0:
            continue
        if run.requests is None or run.ended_at is None or run.ended_at <= run.started_at:
            return None
        total += run.requests * overlap / (run.ended_at - run.started_at)
    return total if total > 0 else None


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def measure(
    samples: Sequence[UnitSample],
    unit: Literal["worker", "instance"],
    loads: Sequence[LoadRun] = (),
) -> Drift | None:
    """The drift over ``samples``; None when fewer than 3 samples or nothing to follow."""
    if len(samples) < 3:
        return None
    t0 = samples[0].taken_at
    counts: dict[Key, int] = {}
    for s in samples:
        for key in s.private:
            counts[key] = counts.get(key, 0) + 1
    tracked = {key for key, count in counts.items() if count >= 2}
    overall = within_slope(samples, t0)
    if not tracked or overall is None:
        return None
    first = _mean_at(samples[0], tracked)
    last = _mean_at(samples[-1], tracked)
    first_bytes = round(first if first is not None else 0.0)
    last_bytes = round(last if last is not None else 0.0)
    duration = samples[-1].taken_at - t0
    growth = overall.per_second * duration
    growing = (
        overall.p_value is not None
        and overall.p_value < ALPHA
        and growth >= MIN_GROWTH_SHARE * max(last_bytes, 1)
    )
    series = tuple(
        (round(s.taken_at - t0, 3), round(m))
        for s in samples
        if (m := _mean_at(s, tracked)) is not None
    )
    headrooms = [v for k, v in samples[-1].headroom.items() if k in tracked]
    headroom = round(float(np.mean(headrooms))) if headrooms else None

    both = [k for k in tracked if k in samples[0].private and k in samples[-1].private]
    grown_total = sum(samples[-1].private[k] - samples[0].private[k] for k in both)
    requests = requests_in_window(loads, t0, samples[-1].taken_at)
    per_request = grown_total / requests if requests and both else None

    base = Drift(
        unit=unit,
        tracked=len(tracked),
        samples=len(samples),
        duration_seconds=round(duration, 3),
        first_bytes=first_bytes,
        last_bytes=last_bytes,
        growth_per_minute_bytes=overall.per_second * 60,
        growth_p_value=overall.p_value,
        growing=growing,
        plateau=False,
        growth_per_request_bytes=per_request,
        requests_in_window=requests,
        headroom_bytes=headroom,
        series=series,
    )
    if not growing:
        return dataclasses.replace(
            base,
            plateau=True,
            plateau_bytes=last_bytes,
            note=f"no significant growth over {len(samples)} samples in {duration_text(duration)}",
        )

    size = max(MIN_PLATEAU_POINTS, math.ceil(len(samples) / 3))
    window = list(samples[-size:])
    window_start = window[0].taken_at
    flat = within_slope(window, t0) if len(samples) >= MIN_SAMPLES_FOR_PLATEAU else None
    ended = [r.ended_at for r in loads if r.ended_at is not None and r.ended_at < window_start]
    plateau = False
    note = ""
    if len(samples) < MIN_SAMPLES_FOR_PLATEAU or flat is None:
        note = (
            f"still growing; {len(samples)} samples are too few to tell whether it flattens "
            f"(plateau detection needs {MIN_SAMPLES_FOR_PLATEAU})"
        )
    elif ended:
        note = (
            f"growth stopped when the load generator finished ({min(ended) - t0:.1f} s after "
            "the first sample), before the last third of the samples: that shows the load "
            "stopping, not the workers flattening"
        )
    else:
        not_rising = flat.p_value is None or flat.p_value >= ALPHA or flat.per_second <= 0
        small = flat.per_second <= PLATEAU_SLOPE_SHARE * overall.per_second
        plateau = not_rising and small
        if not plateau:
            note = (
                "still growing in the last third of the samples "
                f"({format_bytes(flat.per_second * 60)}/min)"
            )
    if plateau:
        means = [m for s in window if (m := _mean_at(s, tracked)) is not None]
        return dataclasses.replace(
            base,
            plateau=True,
            plateau_bytes=round(float(np.mean(means))),
            plateau_since_seconds=round(window_start - t0, 3),
            plateau_growth_per_minute_bytes=flat.per_second * 60 if flat else None,
            plateau_p_value=flat.p_value if flat else None,
            fit_from_sample=len(samples) - size,
            note=f"flat since {window_start - t0:.1f} s (the last {size} samples)",
        )
    rate = overall.per_second
    if headroom and rate > 0:
        more = headroom / rate
    else:
        more = max(NO_HEADROOM_FACTOR * duration, MIN_SUGGESTED_SECONDS)
    return dataclasses.replace(
        base,
        plateau_since_seconds=round(window_start - t0, 3),
        plateau_growth_per_minute_bytes=flat.per_second * 60 if flat else None,
        plateau_p_value=flat.p_value if flat else None,
        sample_more_seconds=round(more, 1),
        fit_from_sample=len(samples) - 1,
        note=note,
    )


def sampling_advice(drift: Drift) -> str:
    """How long to sample, and why: the bound from inherited memory when there is one."""
    if drift.sample_more_seconds is None:
        return ""
    total = duration_text(drift.duration_seconds + drift.sample_more_seconds)
    if drift.headroom_bytes and drift.growth_per_minute_bytes > 0:
        return (
            f"sample longer, up to {total}: at {format_bytes(drift.growth_per_minute_bytes)}/min "
            f"each {drift.unit} would have copied all the inherited memory it still shares "
            f"({format_bytes(drift.headroom_bytes)}) by then"
        )
    return (
        f"sample for at least {total}, or until it flattens: no inherited memory bounds "
        "this growth (new allocations: a cache, or a leak)"
    )
