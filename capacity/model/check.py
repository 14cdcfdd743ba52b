"""The CI gate: is the workload heavier than its baseline, beyond tolerance and beyond noise?

Pure: it takes two Estimates (the saved baseline and a new measurement) and returns a
Verdict; measuring and printing are the CLI's and the report's jobs.

Two conditions make a regression, as in asv (``--factor`` and a significance test) and
pyperf (``--min-speed`` and a t-test): the change is larger than the tolerance, and it is
statistically significant given both measurements' spread. Welch's t-test suits two fits
with their own standard errors and degrees of freedom; scipy computes it from those
summaries. A change beyond the tolerance that the test cannot confirm is *inconclusive*
(exit 2, "measure more"), never a silent pass: incumbents that exit 0 on a regression
(pyperf compare_to, asv compare, criterion) are what the gate must not be.

The standard errors describe one run's workers, not the run-to-run noise of the host (page
sharing with other processes moves the fixed cost by a percent or so): that is what the
tolerance absorbs, and README gives the reproducibility measured for the demo.

Like with like: a different measurement method, THP mode or schema changes the figures
without any change in the workload, so those make the pair "not comparable" (asv's ``x``)
unless the caller allows it; other differences are listed for the reader.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from capacity.answers import CheckedModel, CheckStatus, Comparison, Outcome, Tolerance, Verdict
from capacity.records import SCHEMA_VERSION, Estimate
from capacity.units import SizeError, parse_percent, parse_size

ALPHA = 0.05
DEFAULT_MAX_INCREASE = 0.05


def parse_tolerance(max_increase: str | None, max_increase_bytes: str | None) -> Tolerance:
    """``--max-increase 5%`` and ``--max-increase-bytes 256K``; 5 % when neither is given."""
    ratio = parse_percent(max_increase) if max_increase is not None else None
    size = parse_size(max_increase_bytes) if max_increase_bytes is not None else None
    if ratio is None and size is None:
        ratio = DEFAULT_MAX_INCREASE
    if size is not None and size < 0:
        raise SizeError(f"bad --max-increase-bytes {max_increase_bytes!r}: must be 0 or more")
    return Tolerance(max_increase_ratio=ratio, max_increase_bytes=size)


def allowed_increase(tolerance: Tolerance, baseline_bytes: int) -> int:
    """The change in bytes that the tolerance allows for a figure of ``baseline_bytes``."""
    parts = []
    if tolerance.max_increase_ratio is not None:
        parts.append(tolerance.max_increase_ratio * abs(baseline_bytes))
    if tolerance.max_increase_bytes is not None:
        parts.append(float(tolerance.max_increase_bytes))
    return math.floor(max(parts)) if parts else 0


def welch(
    baseline: float,
    baseline_se: float,
    baseline_dof: int,
    current: float,
    current_se: float,
    current_dof: int,
) -> tuple[float | None, float | None, float]:
    """Welch's two-sided t-test from two estimates' standard errors: (t, dof, p).

    scipy's ``ttest_ind_from_stats`` takes means, standard deviations and counts; an
    estimate with standard error ``se`` and ``dof`` degrees of freedom is a mean of
    ``dof + 1`` values of deviation ``se * sqrt(dof + 1)``, which gives back the same
    ``se`` and the same Welch-Satterthwaite degrees of freedom. With no spread on either
    side (a hand-made model) there is no test: t and dof are None, and any difference is
    real (p = 0).
    """
    from scipy import stats

    # Squared, as the test uses them: a standard error so small that its square is 0.0
    # (5e-324) is no spread either, not a division of 0 by 0.
    if baseline_se**2 <= 0 and current_se**2 <= 0:
        return None, None, (0.0 if current != baseline else 1.0)
    n1, n2 = baseline_dof + 1, current_dof + 1
    result = stats.ttest_ind_from_stats(
        current,
        current_se * math.sqrt(n2),
        n2,
        baseline,
        baseline_se * math.sqrt(n1),
        n1,
        equal_var=False,
    )
    v1, v2 = baseline_se**2, current_se**2
    dof = (v1 + v2) ** 2 / (
        (v1**2 / baseline_dof if v1 else 0.0) + (v2**2 / current_dof if v2 else 0.0)
    )
    p = float(result.pvalue)
    return float(result.statistic), dof, (p if math.isfinite(p) else 1.0)


def compare_figure(
    quantity: Literal["per_instance", "fixed"],
    baseline: int,
    baseline_se: float,
    baseline_dof: int,
    current: int,
    current_se: float,
    current_dof: int,
    tolerance: Tolerance,
) -> Comparison:
    delta = current - baseline
    allowed = allowed_increase(tolerance, baseline)
    t, dof, p = welch(baseline, baseline_se, baseline_dof, current, current_se, current_dof)
    significant = p < ALPHA
    outcome: Outcome
    if abs(delta) <= allowed:
        outcome = "within_tolerance" if significant and delta != 0 else "same"
    elif delta > 0:
        outcome = "regression" if significant else "inconclusive"
    else:
        outcome = "improvement" if significant else "same"
    return Comparison(
        quantity=quantity,
        baseline_bytes=baseline,
        current_bytes=current,
        baseline_se_bytes=baseline_se,
        current_se_bytes=current_se,
        delta_bytes=delta,
        delta_ratio=delta / baseline if baseline else None,
        allowed_bytes=allowed,
        t_statistic=t,
        dof=dof,
        p_value=p,
        significant=significant,
        outcome=outcome,
    )


def describe(estimate: Estimate, source: str) -> CheckedModel:
    return CheckedModel(
        source=source,
        selector=estimate.workload.selector,
        workload_name=estimate.workload.name,
        worker_count=estimate.workload.worker_count,
        samples=len(estimate.samples),
        hostname=estimate.environment.hostname,
        time=estimate.environment.time,
        capplan_version=estimate.environment.capplan_version,
        method=estimate.model.method,
        thp_enabled=estimate.environment.thp_enabled,
        schema_version=estimate.schema_version,
    )


def _group_words(server: str | None, pool: str | None, instance: int | None) -> str:
    if server is None:
        return "?"
    if pool is not None:
        return f"{server} pool {pool}"
    return server if instance is None else f"{server} {instance}"


def group_differences(baseline: Estimate, current: Estimate) -> list[str]:
    """Why the two top levels may be different groups of a selection (issue 13): a model is
    one group's, and comparing one group with another would pass or fail for nothing.

    Groups are matched by server and pool (a master's pid changes with every restart):
    the pair is not comparable when they differ, or when either side holds several groups
    of that server and pool, since then which is which cannot be told."""
    b, c = baseline.workload, current.workload
    if b.server is None:
        if len(current.groups) > 1:
            return [
                f"the baseline was saved before capplan told groups apart, and "
                f"{c.selector} now holds {len(current.groups)} groups "
                f"({', '.join(g.label for g in current.groups)}): which one it measured is "
                "not known"
            ]
        return []
    if c.server is None:
        return []
    reasons = []
    if (b.server, b.pool) != (c.server, c.pool):
        listed = ", ".join(g.label for g in current.groups) or _group_words(
            c.server, c.pool, c.instance
        )
        reasons.append(
            f"the baseline is group {_group_words(b.server, b.pool, b.instance)}, and the "
            f"measurement has no such group (its groups: {listed})"
        )
    for side, estimate in (("the baseline", baseline), ("the measurement", current)):
        alike = [g for g in estimate.groups if (g.server, g.pool) == (b.server, b.pool)]
        if len(alike) > 1:
            reasons.append(
                f"{side} holds {len(alike)} groups of {_group_words(b.server, b.pool, None)} "
                f"({', '.join(g.label for g in alike)}): which one is the baseline's cannot "
                "be told"
            )
    return reasons


def _same_schema(a: Estimate, b: Estimate) -> bool:
    """Like with like: the same schema, or 1 and 2 without a probe (schema 2 added the
    probe, the page cache the conservative answer keeps and shared memory segments, issue
    14: the per-worker and fixed costs of a run without a probe are counted alike, and the
    shared memory rules in ``environment_differences`` refuse what is not)."""
    if a.schema_version == b.schema_version:
        return True
    return {a.schema_version, b.schema_version} <= {1, 2} and a.probe is None and b.probe is None


def environment_differences(baseline: Estimate, current: Estimate) -> tuple[list[str], list[str]]:
    """(reasons the pair is not comparable, other differences worth a line)."""
    blocking: list[str] = []
    if baseline.model.method != current.model.method:
        blocking.append(
            f"measurement method differs: baseline {baseline.model.method}, "
            f"now {current.model.method}"
        )
    b_env, c_env = baseline.environment, current.environment
    if b_env.thp_enabled != c_env.thp_enabled:
        blocking.append(
            f"transparent huge pages differ: baseline '{b_env.thp_enabled}', "
            f"now '{c_env.thp_enabled}' (copy-on-write copies 2 MiB instead of 4 KiB)"
        )
    if not _same_schema(baseline, current):
        blocking.append(
            f"capplan schema differs: baseline {baseline.schema_version}, "
            f"now {current.schema_version}"
        )
    b_shm, c_shm = baseline.shared_memory, current.shared_memory
    if b_shm is not None and c_shm is not None and b_shm.choice != c_shm.choice:
        blocking.append(
            f"shared memory counted differently: baseline --shm {b_shm.choice}, "
            f"now --shm {c_shm.choice}"
        )
    elif b_shm is None and c_shm is not None and (c_shm.untouched_bytes or c_shm.moved_bytes):
        blocking.append(
            "shared memory counted differently: the baseline was saved before capplan "
            "counted shared memory segments at their configured size (issue 14); "
            "re-measure the baseline"
        )
    notes: list[str] = []
    facts = [
        ("kernel", b_env.kernel, c_env.kernel),
        ("KSM", b_env.ksm_run, c_env.ksm_run),
        ("architecture", b_env.arch, c_env.arch),
        ("page size", str(b_env.page_size), str(c_env.page_size)),
        ("cgroup version", b_env.cgroup_version, c_env.cgroup_version),
        ("capplan version", b_env.capplan_version, c_env.capplan_version),
        ("host", b_env.hostname, c_env.hostname),
        ("executable version", b_env.executable_version or "?", c_env.executable_version or "?"),
        ("MALLOC_ARENA_MAX", b_env.malloc_arena_max or "unset", c_env.malloc_arena_max or "unset"),
        ("workload name", baseline.workload.name, current.workload.name),
        ("worker count", str(baseline.workload.worker_count), str(current.workload.worker_count)),
    ]
    for label, before, now in facts:
        if before != now:
            notes.append(f"{label} differs: baseline {before}, now {now}")
    if baseline.schema_version != current.schema_version and not blocking_schema(blocking):
        notes.append(
            f"schema differs: baseline {baseline.schema_version}, now "
            f"{current.schema_version} (the per-worker and fixed costs are counted alike)"
        )
    return blocking, notes


def blocking_schema(blocking: list[str]) -> bool:
    return any("schema" in reason for reason in blocking)


# Schema versions whose per-worker and fixed costs are counted alike, so that a baseline of
# one checks a run of the other: 2 added the page cache beside the model (issue 14) and
# moved neither cost.
def compare(
    baseline: Estimate,
    current: Estimate,
    tolerance: Tolerance,
    *,
    baseline_source: str,
    current_source: str = "measured now",
    allow_env_change: bool = False,
) -> Verdict:
    """Compare per-worker and fixed cost; the Verdict says pass, regression or why neither."""
    b, c = baseline.model, current.model
    comparisons = (
        compare_figure(
            "per_instance",
            b.per_instance_bytes,
            b.per_instance_se_bytes,
            b.dof,
            c.per_instance_bytes,
            c.per_instance_se_bytes,
            c.dof,
            tolerance,
        ),
        compare_figure(
            "fixed",
            b.fixed_bytes,
            b.fixed_se_bytes,
            b.dof,
            c.fixed_bytes,
            c.fixed_se_bytes,
            c.dof,
            tolerance,
        ),
    )
    blocking, notes = environment_differences(baseline, current)
    if not _same_schema(
        current, dataclasses.replace(current, schema_version=SCHEMA_VERSION)
    ) and not any("schema" in r for r in blocking):
        blocking.append(
            f"capplan schema differs: now {current.schema_version}, this capplan {SCHEMA_VERSION}"
        )
    outcomes = {item.outcome for item in comparisons}
    status: CheckStatus
    refresh = f"capplan estimate {baseline.workload.selector} --save {baseline_source} --force"
    groups = group_differences(baseline, current)
    blocking = groups + blocking
    if groups:
        # Never waived by --allow-env-change: that is for the host, not for another group.
        status = "not_comparable"
        hint = (
            "compare a group with itself: select it alone for both, e.g. capplan estimate "
            f"--pid MASTER --save {baseline_source} --force, then capplan check "
            f"{baseline_source} --pid MASTER"
        )
    elif blocking and not allow_env_change:
        status = "not_comparable"
        hint = (
            f"measure the baseline again where the check runs ({refresh}), "
            "or pass --allow-env-change to compare anyway"
        )
    elif "regression" in outcomes:
        status = "regression"
        hint = f"if the increase is intended, refresh the baseline: {refresh}"
    elif "inconclusive" in outcomes:
        status = "inconclusive"
        hint = (
            "the change exceeds the tolerance but the spread is too wide to confirm it: "
            f"measure more samples (--samples {max(2 * len(current.samples), 10)}) or more workers"
        )
    else:
        status = "pass"
        hint = (
            f"the workload got lighter: refresh the baseline so the gate guards the new figure: {refresh}"
            if "improvement" in outcomes
            else ""
        )
    return Verdict(
        status=status,
        baseline=describe(baseline, baseline_source),
        current=describe(current, current_source),
        tolerance=tolerance,
        alpha=ALPHA,
        comparisons=comparisons,
        not_comparable=tuple(blocking),
        differences=tuple(notes),
        env_change_allowed=allow_env_change,
        hint=hint,
    )
