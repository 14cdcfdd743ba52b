"""Fit ``total(N) = fixed + N * per_instance`` and predict how many instances fit.

Pure maths over numbers the sampler measured: no /proc, no printing.

The points. In every sample the workers are taken in fork order and ``total(k)`` is the
memory of the parent, the pages shared inside the workload (counted once) and the first
``k`` workers' marginal costs. OLS over those points (``numpy.polyfit``) gives the
slope (per instance) and the intercept (fixed).

The uncertainty. Points of one sample are cumulative sums, so their residuals are not
independent and the usual OLS standard errors would be far too small. The OLS slope of
one sample is a weighted mean of the worker costs, ``b = sum(w_i * m_i)`` with
``w_i = sum_{k>=i} (k - mean_k) / Sxx``, so under independent workers of spread ``sigma`` its
variance is ``sigma^2 * sum(w_i^2)``; the intercept is likewise linear in the costs. We use
those exact expressions, with ``n - 1`` degrees of freedom for the ``n`` workers (repeating
samples re-measures the same workers: it does not add workers), and add the spread of the
per-sample estimates for what changes over time.

The conservative prediction is the largest N whose one-sided 95 % upper prediction bound
fits the budget: ``fixed + N * per_instance + t * sqrt(var_fixed + N^2 var_slope +
2 N cov + N sigma^2)``. The first terms are what we do not know about the mean; ``N sigma^2``
is the spread of the N workers that will actually run. README explains the choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from capacity.errors import BudgetError, ModelError
from capacity.records import (
    Breakdown,
    Budget,
    CgroupMemory,
    Confidence,
    HostMemory,
    Method,
    ModelFit,
    Prediction,
    QuadraticCheck,
)

# smaps reports whole kB, so a single figure is known to +-512 bytes: the spread between
# workers is never taken as smaller than that rounding (uniform: 1024 / sqrt(12)).
RESOLUTION_SD = 1024 / math.sqrt(12)

# A memory cgroup's usage is charged in batches: each CPU keeps up to MEMCG_CHARGE_BATCH
# (64) pages charged ahead (the per-CPU "stock", mm/memcontrol.c), so memory.current and
# memory.usage_in_bytes are known only to within that, per CPU.
MEMCG_CHARGE_BATCH_PAGES = 64


def cgroup_resolution_sd(cpus: int, page_size: int) -> float:
    """Standard deviation of a cgroup usage reading from per-CPU charge batching: each
    CPU's stock is anywhere between 0 and 64 pages (uniform), independently."""
    return math.sqrt(max(cpus, 1)) * MEMCG_CHARGE_BATCH_PAGES * page_size / math.sqrt(12)


HIGH_CONFIDENCE_HALF_WIDTH = 0.05
MEDIUM_CONFIDENCE_HALF_WIDTH = 0.20
SAMPLES_DISAGREE_CV = 0.25


@dataclasses.dataclass(frozen=True, slots=True)
class SamplePoints:
    """One sample's worker costs: ``total(k) = base + sum(increments[:k])``."""

    base: int
    increments: tuple[int, ...]

    def totals(self) -> npt.NDArray[np.float64]:
        return self.base + np.cumsum(np.asarray(self.increments, dtype=np.float64))


def _weights(n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weights of each worker cost in the OLS slope and intercept of cumulative sums."""
    k = np.arange(1, n + 1, dtype=np.float64)
    centred = k - k.mean()
    sxx = float(np.sum(centred**2))
    # w_i = sum_{k >= i} (k - kbar) / Sxx : reverse cumulative sum.
    w = np.cumsum(centred[::-1])[::-1] / sxx
    # intercept a = ybar - b * kbar, ybar = base + (1/n) sum_i (n - i + 1) m_i
    c = (n - k + 1) / n - k.mean() * w
    return w, c


def _t(dof: float, level: float) -> float:
    # scipy.special, not scipy.stats: stats.t.ppf is this same function, and importing
    # scipy.stats costs about 0.9 s against 0.2 s for scipy.special (issue 7).
    from scipy import special

    return float(special.stdtrit(dof, level))


def _confidence(half_width: float, reasons: list[str]) -> Confidence:
    """high / medium / low from the slope's relative 95 % half-width; any reason already
    given (too few workers, disagreeing samples) makes it low. Appends the width's reason."""
    if not reasons and half_width <= HIGH_CONFIDENCE_HALF_WIDTH:
        return "high"
    if not reasons and half_width <= MEDIUM_CONFIDENCE_HALF_WIDTH:
        return "medium"
    if half_width > MEDIUM_CONFIDENCE_HALF_WIDTH:
        reasons.append(f"per-instance cost known only to +-{half_width:.0%}")
    return "low"


def fit(
    samples: Sequence[SamplePoints],
    method: Method,
    breakdown: Breakdown | None = None,
) -> ModelFit:
    """The line through every sample's cumulative points, with honest intervals."""
    usable = [s for s in samples if len(s.increments) > 0]
    if not usable:
        raise ModelError(
            "no workers to measure: the selection holds only parent processes",
            hint="select a pre-forking server with workers running, or use --pid of its parent",
        )
    n_workers = max(len(s.increments) for s in usable)
    if n_workers < 2:
        raise ModelError(
            "only one worker: one worker cannot show how workers differ, so no honest "
            "interval exists",
            hint="start at least 2 workers (3 or more for a confident answer) and measure again",
        )
    usable = [s for s in usable if len(s.increments) >= 2]

    xs = np.concatenate([np.arange(1, len(s.increments) + 1) for s in usable]).astype(np.float64)
    ys = np.concatenate([s.totals() for s in usable])
    # The point estimates from scipy's linregress; its standard errors are not used (see the
    # module docstring: cumulative points are not independent).
    from scipy import stats

    result = stats.linregress(xs, ys)
    slope, intercept = float(result.slope), float(result.intercept)
    if (
        not math.isfinite(slope)
        or slope <= 0
        or float(np.mean(np.concatenate([s.increments for s in usable]))) <= 0
    ):
        raise ModelError(
            "the workers cost no memory of their own (per-worker cost is not positive)",
            hint="check the selection: are these idle threads of one process, or kernel threads?",
        )
    predicted = intercept + slope * xs
    residuals = ys - predicted
    residual_sd = float(np.sqrt(np.sum(residuals**2) / max(len(xs) - 2, 1)))
    r2 = float(result.rvalue**2)

    var_b_terms, var_a_terms, cov_terms, sigmas, slopes, intercepts = [], [], [], [], [], []
    for s in usable:
        m = np.asarray(s.increments, dtype=np.float64)
        n = len(m)
        w, c = _weights(n)
        sigma = max(float(np.std(m, ddof=1)), RESOLUTION_SD)
        sigmas.append(sigma)
        var_b_terms.append(sigma**2 * float(np.sum(w**2)))
        var_a_terms.append(sigma**2 * float(np.sum(c**2)))
        cov_terms.append(sigma**2 * float(np.sum(w * c)))
        slopes.append(float(np.sum(w * m)))
        intercepts.append(float(np.mean(s.totals())) - slopes[-1] * (n + 1) / 2)
    count = len(usable)
    between_b = float(np.var(slopes, ddof=1)) / count if count > 1 else 0.0
    between_a = float(np.var(intercepts, ddof=1)) / count if count > 1 else 0.0
    var_b = float(np.mean(var_b_terms)) + between_b
    var_a = float(np.mean(var_a_terms)) + between_a
    cov_ab = float(np.mean(cov_terms))
    worker_sd = float(np.sqrt(np.mean(np.square(sigmas))))

    reasons: list[str] = []
    if n_workers < 3:
        reasons.append(f"only {n_workers} workers measured")
    cv = float(np.std(slopes, ddof=1) / np.mean(slopes)) if count > 1 else 0.0
    if cv > SAMPLES_DISAGREE_CV:
        reasons.append(f"samples disagree: per-sample slopes vary by {cv:.0%}")

    return _model_fit(
        method=method,
        slope=slope,
        intercept=intercept,
        se_b=math.sqrt(var_b),
        se_a=math.sqrt(var_a),
        cov_ab=cov_ab,
        dof=min(len(s.increments) for s in usable) - 1,
        r2=r2,
        residual_sd=residual_sd,
        worker_sd=worker_sd,
        n_workers=n_workers,
        n_samples=count,
        reasons=reasons,
        points=tuple(
            (int(k), round(total))
            for s in usable
            for k, total in zip(range(1, len(s.increments) + 1), s.totals(), strict=False)
        ),
        breakdown=breakdown,
    )


def _model_fit(
    *,
    method: Method,
    slope: float,
    intercept: float,
    se_b: float,
    se_a: float,
    cov_ab: float,
    dof: int,
    r2: float,
    residual_sd: float,
    worker_sd: float,
    n_workers: int,
    n_samples: int,
    reasons: list[str],
    points: tuple[tuple[int, int], ...],
    breakdown: Breakdown | None,
) -> ModelFit:
    """The fit record, for ``fit`` and ``fit_independent`` alike: the 95 % intervals from
    the standard errors (t with ``dof`` degrees of freedom) and the confidence from the
    slope's relative half-width and the ``reasons`` already found."""
    t975 = _t(dof, 0.975)
    if intercept < 0:
        # A fixed cost below zero is a fit artefact: the points do not lie on one line
        # through a positive intercept (workers of different kinds, workers that grew, or
        # a pid reused by a lighter process). Nothing is paid once less than nothing, so it
        # is 0, said plainly, and the confidence is low (issue 11: such a model was saved
        # and then refused by every reader).
        reasons = [
            *reasons,
            f"the fit's fixed cost came out negative ({round(intercept):,} bytes), taken as 0: "
            "the workers' costs do not lie on one line",
        ]
    confidence = _confidence(t975 * se_b / slope, reasons)
    return ModelFit(
        method=method,
        fixed_bytes=max(round(intercept), 0),
        per_instance_bytes=round(slope),
        per_instance_ci95=(round(slope - t975 * se_b), round(slope + t975 * se_b)),
        fixed_ci95=(round(intercept - t975 * se_a), round(intercept + t975 * se_a)),
        per_instance_se_bytes=se_b,
        fixed_se_bytes=se_a,
        fixed_slope_cov=cov_ab,
        r2=r2,
        residual_sd_bytes=residual_sd,
        worker_sd_bytes=worker_sd,
        dof=dof,
        n_points=len(points),
        n_workers=n_workers,
        n_samples=n_samples,
        confidence=confidence,
        confidence_reasons=tuple(reasons),
        points=points,
        breakdown=breakdown,
    )


# --------------------------------------------------------------------------- prediction


def total_for(model: ModelFit, instances: int) -> float:
    return model.fixed_bytes + instances * model.per_instance_bytes


def upper_bound(model: ModelFit, instances: int, level: float = 0.95) -> float:
    """One-sided upper prediction bound of the memory ``instances`` workers need, in this or
    another instance of the program (whose random layout may need more page tables)."""
    return upper_bound_of_sum((model,), (instances,), level)


def lower_bound(model: ModelFit, instances: int, level: float = 0.95) -> float:
    return (
        total_for(model, instances)
        - _band((model,), (instances,), level)
        - instances * model.layout_allowance_bytes
    )


def upper_bound_of_sum(
    models: Sequence[ModelFit], counts: Sequence[int], level: float = 0.95
) -> float:
    """One-sided upper prediction bound of the memory of several pools together on one host,
    pool ``i`` running ``counts[i]`` workers of ``models[i]`` (``capplan plan``): each pool's
    fixed cost once, every worker, one band for the sum (see ``_band``). For one pool this
    is ``upper_bound``."""
    return (
        sum(total_for(m, n) for m, n in zip(models, counts, strict=True))
        + _band(models, counts, level)
        + sum(n * m.layout_allowance_bytes for m, n in zip(models, counts, strict=True))
    )


# How far the per-worker slab estimate (capacity.measure.kernel) may be off, as a standard deviation.
# Measured on the reference host: the demo's Python workers cost 54 KiB of slab by their
# cgroup's v1 kmem against an estimate of 42 (-22 %). Checked against the workload's own
# cgroup (which may only lower it, see accounting), what remains is the run-to-run spread:
# the validation's kernel-heavy workload (slab two thirds of a worker) measured 4101 to 4167
# KiB per worker over five runs, and its true maximum sat on the edge between 40 and 41.
SLAB_ESTIMATE_SD = 0.15
SLAB_CHECKED_SD = 0.03


def systematic_sd(breakdown: Breakdown | None) -> float:
    """Per-worker standard deviation of the estimated kernel memory (see SLAB_ESTIMATE_SD)."""
    if breakdown is None:
        return 0.0
    share = SLAB_ESTIMATE_SD if breakdown.kernel_source == "estimate" else SLAB_CHECKED_SD
    return share * breakdown.per_instance_slab_bytes


def _random_variance(model: ModelFit, instances: int) -> float:
    """The variance of one pool's total at N but for the systematic part: what the fit does
    not know about the mean (its coefficients and their covariance) and the spread of the
    N workers that will actually run."""
    n = float(instances)
    return (
        model.fixed_se_bytes**2
        + n**2 * model.per_instance_se_bytes**2
        + 2 * n * model.fixed_slope_cov
        + n * model.worker_sd_bytes**2
    )


def pooled_dof(variances: Sequence[float], dofs: Sequence[int]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent estimates, each with
    its variance and degrees of freedom: ``(sum v)^2 / sum(v^2 / dof)``, between the
    smallest ``dof`` and their sum. Estimates of equal ``dof`` keep it (one pool's band is
    what it always was); with no variance at all the smallest ``dof`` stands."""
    if len(set(dofs)) == 1:
        return float(dofs[0])
    denominator = sum(v * v / d for v, d in zip(variances, dofs, strict=True) if v > 0)
    if denominator <= 0:
        return float(min(dofs))
    return min(max(sum(variances) ** 2 / denominator, min(dofs)), sum(dofs))


def _band(models: Sequence[ModelFit], counts: Sequence[int], level: float) -> float:
    """t times the standard deviation of the total of ``counts[i]`` workers of each model.

    One pool: ``var_fixed + N^2 var_slope + 2 N cov + N sigma^2 + N^2 sd_systematic^2``.
    Several pools measured apart (``capplan plan``): their fits and their workers are
    independent, so those variances add; the systematic part is the error of capplan's own
    slab estimate on one kernel, taken as the same in every pool, so its standard
    deviations add before squaring, as they do over the N workers of one pool. The degrees
    of freedom are the pools' own, combined by Welch-Satterthwaite (``pooled_dof``), each
    pool carrying its share of the systematic variance.
    """
    randoms = [_random_variance(m, n) for m, n in zip(models, counts, strict=True)]
    systematic = [n * m.systematic_sd_bytes for m, n in zip(models, counts, strict=True)]
    shared = sum(systematic)
    variance = sum(randoms) + shared**2
    shares = [r + s * shared for r, s in zip(randoms, systematic, strict=True)]
    dof = pooled_dof(shares, [max(m.dof, 1) for m in models])
    return _t(dof, level) * math.sqrt(max(variance, 0.0))


def make_budget(
    host: HostMemory,
    workload_total: int,
    *,
    cgroup: CgroupMemory | None = None,
    memory: int | None = None,
    memory_text: str | None = None,
    reserve_bytes: int | None = None,
    reserve_fraction: float | None = None,
    reserve_text: str | None = None,
) -> Budget:
    """The budget and the reserve, each with the sentence that says where it came from.

    Budget: ``--memory`` when given, else the smaller of MemTotal and the workload's cgroup
    limit. Reserve: ``--reserve`` when given; else what everything outside the workload uses
    right now: MemTotal - MemAvailable - the workload's own total on the host, or, under a
    cgroup limit, the cgroup's working set (usage - inactive file) minus the workload.
    """
    limited = cgroup is not None and cgroup.limit_bytes is not None and memory is None
    if memory is not None:
        if memory <= 0:
            raise BudgetError(f"bad --memory {memory_text or memory}: must be more than 0")
        total, source = memory, f"--memory {memory_text or memory}"
    elif (
        limited
        and cgroup is not None
        and cgroup.limit_bytes is not None
        and cgroup.limit_bytes < host.mem_total_bytes
    ):
        total, source = (
            cgroup.limit_bytes,
            f"memory limit of cgroup {cgroup.limit_path or cgroup.path}",
        )
        limited = True
    else:
        total, source = host.mem_total_bytes, "MemTotal of this host"
        limited = False

    if reserve_bytes is not None:
        reserve, reserve_source = reserve_bytes, f"--reserve {reserve_text or reserve_bytes}"
    elif reserve_fraction is not None:
        reserve = int(total * reserve_fraction)
        reserve_source = f"--reserve {reserve_text or f'{reserve_fraction:.0%}'} of the budget"
    elif limited and cgroup is not None:
        working_set = cgroup.current_bytes - cgroup.stat.get("inactive_file", 0)
        reserve = max(0, working_set - workload_total)
        reserve_source = "what else the cgroup holds now: working set - workload"
    else:
        reserve = max(0, host.mem_total_bytes - host.mem_available_bytes - workload_total)
        reserve_source = (
            "what everything outside the workload uses now: MemTotal - MemAvailable - workload"
        )
        if memory is not None:
            reserve_source += " (measured on this host)"
    if reserve >= total:
        raise BudgetError(
            f"the reserve ({reserve} bytes) is not smaller than the budget ({total} bytes)",
            hint="give a smaller --reserve or a larger --memory",
        )
    return Budget(
        total_bytes=total,
        reserve_bytes=reserve,
        available_bytes=total - reserve,
        source=source,
        reserve_source=reserve_source,
        reserve_fraction=reserve_fraction if reserve_bytes is None else None,
    )


def predict(model: ModelFit, budget: Budget) -> Prediction:
    """How many instances fit: the point estimate and the conservative one."""
    room = budget.available_bytes - model.fixed_bytes
    point = max(0, math.floor(room / model.per_instance_bytes)) if room > 0 else 0
    # The conservative answer also keeps the reclaimable part resident (the workload's own
    # page cache: a host that evicts its programs' code runs, but slowly), and the hot part
    # of the page cache it reads (issue 14, ``model/filecache``).
    conservative = conservative_instances(
        model,
        budget.available_bytes
        - model.reclaimable_bytes
        - model.hot_cache_bytes
        - model.shm_kept_bytes,
        point,
    )
    note = (
        "largest N whose one-sided 95% upper prediction bound "
        "(fit uncertainty, the spread of N workers"
        + (" and the error of the kernel-memory estimate" if model.systematic_sd_bytes else "")
        + ") fits the budget"
        + (" with the workload's page cache kept" if model.reclaimable_bytes else "")
        + (" and its hot file cache" if model.hot_cache_bytes else "")
        + (
            " and every shared memory segment filled to its configured size"
            if model.shm_kept_bytes
            else ""
        )
        + (", in any address-space layout (ASLR)" if model.layout_allowance_bytes else "")
    )
    guard = low_confidence_guard(model)
    if guard is not None:
        note += (
            f"; low confidence: also with every worker at {guard[1]:,} bytes (the costliest "
            "measured or the fit's 95% upper bound, whichever is more) and the fixed cost at "
            f"its 95% upper bound, {guard[0]:,} bytes"
        )
    return Prediction(
        max_instances=point,
        max_instances_conservative=conservative,
        room_bytes=room,
        confidence=model.confidence,
        conservative_note=note,
    )


def conservative_instances(model: ModelFit, available: int, point: int | None = None) -> int:
    """Largest N with ``upper_bound(N) <= available`` (binary search; the bound grows with N),
    and for a fit marked low confidence at most ``low_confidence_instances``."""
    if point is None:
        room = available - model.fixed_bytes
        point = max(0, math.floor(room / model.per_instance_bytes)) if room > 0 else 0
    if upper_bound(model, 0) > available:
        return 0
    low, high = 0, point
    while low < high:
        middle = (low + high + 1) // 2
        if upper_bound(model, middle) <= available:
            low = middle
        else:
            high = middle - 1
    guard = low_confidence_guard(model)
    if guard is not None:
        fixed, per_worker = guard
        room = available - fixed
        low = min(low, room // per_worker if room > 0 else 0)
    return low


def largest_increment(model: ModelFit) -> int:
    """The most one worker added to total(k) in the fitted points (k >= 2 within a sample:
    ``points`` run k = 1..n per sample), 0 where no sample has two workers."""
    increments = [
        total - before
        for (k_before, before), (k, total) in zip(model.points, model.points[1:], strict=False)
        if k == k_before + 1
    ]
    return max(increments, default=0)


def low_confidence_guard(model: ModelFit) -> tuple[int, int] | None:
    """For a fit marked low confidence: (fixed, per worker) that the conservative count must
    also fit with, else None.

    A low-confidence fit's own bound rests on what made it low: two workers, samples whose
    slopes disagree, a line that does not hold (negative fixed cost), an interval wider than
    +-20 %. So the conservative count must also hold if every one of N workers costs as
    much as the costliest worker measured, or the upper end of the slope's 95 % interval
    where that is more, with the fixed cost at the upper end of its own interval, and
    another address-space layout's page tables for each worker (issue 14: a low-confidence
    PostgreSQL fit through backends and background processes put the per-connection cost
    at 0.95 MiB where each cost 1.2 MiB or more).
    """
    if model.confidence != "low":
        return None
    per_worker = max(model.per_instance_bytes, model.per_instance_ci95[1], largest_increment(model))
    fixed = max(model.fixed_bytes, model.fixed_ci95[1])
    return fixed, max(per_worker + model.layout_allowance_bytes, 1)


def memory_for(model: ModelFit, instances: int) -> tuple[int, int, int]:
    """Memory ``instances`` workers need: (point, 95 % lower, 95 % upper prediction bound)."""
    return (
        round(total_for(model, instances)),
        round(lower_bound(model, instances, 0.975)),
        round(upper_bound(model, instances, 0.975)),
    )


# --------------------------------------------------------------------------- independent points


def fit_independent(
    instances: Sequence[int],
    totals: Sequence[float],
    method: Method,
    breakdown: Breakdown | None = None,
    instance_sd: float | None = None,
    resolution_sd: float = 0.0,
) -> ModelFit:
    """The line through independent measurements ``total(N)`` at N = 1, 2, ... (launch mode).

    Each point is its own measurement of a different number of running instances, so the
    residuals are independent and linregress's own standard errors are the right ones here
    (unlike the cumulative points of ``fit``). ``instance_sd`` is the spread between the
    instances themselves, which the conservative prediction adds for N instances; without
    it the residual spread stands in. ``resolution_sd`` is how finely one total is known
    at all (a cgroup's usage moves in per-CPU charge batches): four points that happen to lie
    closer to a line than that do not make the slope better known.
    """
    from scipy import stats

    x = np.asarray(instances, dtype=np.float64)
    y = np.asarray(totals, dtype=np.float64)
    if len(x) < 3 or len(set(instances)) < 3:
        raise ModelError(
            f"{len(set(instances))} instance counts measured: a line through fewer than 3 "
            "independent points has no honest interval",
            hint="launch at least 3 instances: --instances 4",
        )
    result = stats.linregress(x, y)
    slope, intercept = float(result.slope), float(result.intercept)
    if not math.isfinite(slope) or slope <= 0:
        raise ModelError(
            "each added instance costs no memory (the slope of total(N) is not positive)",
            hint="check that the instances really run: do they exit, or share one server?",
        )
    dof = len(x) - 2
    residuals = y - (intercept + slope * x)
    residual_sd = float(np.sqrt(np.sum(residuals**2) / dof))
    # linregress's standard errors, recomputed from the residual spread or the resolution,
    # whichever is larger: se(b) = s / sqrt(Sxx), se(a) = s * sqrt(1/n + mean(x)^2 / Sxx).
    spread = max(residual_sd, resolution_sd)
    sxx = float(np.sum((x - x.mean()) ** 2))
    se_b = spread / math.sqrt(sxx)
    se_a = spread * math.sqrt(1 / len(x) + float(x.mean()) ** 2 / sxx)
    cov_ab = -float(np.mean(x)) * se_b**2  # OLS: cov(a, b) = -mean(x) * var(b)
    worker_sd = max(instance_sd if instance_sd is not None else residual_sd, RESOLUTION_SD)

    reasons: list[str] = []
    if len(x) < 4:
        reasons.append(f"only {len(x)} instance counts measured")
    return _model_fit(
        method=method,
        slope=slope,
        intercept=intercept,
        se_b=se_b,
        se_a=se_a,
        cov_ab=cov_ab,
        dof=dof,
        r2=float(result.rvalue**2),
        residual_sd=residual_sd,
        worker_sd=worker_sd,
        n_workers=int(max(instances)),
        n_samples=1,
        reasons=reasons,
        points=tuple((int(n), round(t)) for n, t in zip(instances, totals, strict=True)),
        breakdown=breakdown,
    )


QUADRATIC_ALPHA = 0.01  # two checks per run, extrapolated far: keep false alarms rare
QUADRATIC_SHARE = 0.10


def quadratic_check(
    instances: Sequence[int],
    totals: Sequence[float],
    method: Method,
    at_instances: int,
    resolution_sd: float = 0.0,
) -> QuadraticCheck:
    """Fit ``a + b N + c N^2`` and ask whether ``c`` matters at the predicted maximum.

    A line fitted at N = 1..4 and extrapolated to N = 500 hides any per-instance cost that
    grows with N (lock tables, connection pools sized by N, caches keyed by peers). The
    t-test on ``c`` (scipy's t distribution, n - 3 degrees of freedom, residual spread no
    smaller than ``resolution_sd``) says whether the curvature is real, at 1 % because the
    answer is extrapolated far; ``c * N^2`` at the maximum says whether it matters. Both
    must hold.
    """
    from scipy import stats

    x = np.asarray(instances, dtype=np.float64)
    y = np.asarray(totals, dtype=np.float64)
    dof = len(x) - 3
    linear = stats.linregress(x, y) if len(x) >= 2 else None
    linear_total = (
        float(linear.intercept) + float(linear.slope) * at_instances if linear is not None else 0.0
    )
    if dof < 1:
        return QuadraticCheck(
            method=method,
            coefficient_bytes=0.0,
            se_bytes=None,
            p_value=None,
            at_instances=at_instances,
            contribution_bytes=0.0,
            share=0.0,
            significant=False,
            note="not tested: needs 4 or more instance counts",
        )
    design = np.column_stack([np.ones_like(x), x, x**2])
    coefficients, _residuals, _rank, _sv = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ coefficients
    variance = max(float(np.sum(residuals**2)) / dof, resolution_sd**2)
    covariance = variance * np.linalg.pinv(design.T @ design)
    c = float(coefficients[2])
    se_c = math.sqrt(max(float(covariance[2, 2]), 0.0))
    # An exact fit (se 0) leaves c either certainly zero or certainly not.
    exact = 0.0 if c != 0 else 1.0
    p_value = float(2 * stats.t.sf(abs(c) / se_c, dof)) if se_c > 0 else exact
    contribution = c * at_instances**2
    share = contribution / linear_total if linear_total > 0 else 0.0
    significant = p_value < QUADRATIC_ALPHA and abs(share) > QUADRATIC_SHARE
    return QuadraticCheck(
        method=method,
        coefficient_bytes=c,
        se_bytes=se_c,
        p_value=p_value,
        at_instances=at_instances,
        contribution_bytes=contribution,
        share=share,
        significant=significant,
    )


def slope_of(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The OLS slope alone (for splitting a difference between two fits into parts)."""
    if len(xs) < 2:
        return 0.0
    return float(
        np.polyfit(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), 1)[0]
    )
