"""No confident number from a low-confidence fit (issue 14, part 4).

A fit marked low confidence keeps its conservative count safe (every worker at the
costliest one measured or the fit's upper 95 % bound, the fixed cost at its upper bound),
and a configuration line printed from it says so on the same line. Fits of known points.
"""

from __future__ import annotations

import dataclasses

from capacity.model import suggest
from capacity.model.fitting import (
    SamplePoints,
    conservative_instances,
    fit,
    largest_increment,
    low_confidence_guard,
    make_budget,
    predict,
)
from capacity.records import HostMemory, Method, Notice

KiB, MiB, GiB = 1024, 1024**2, 1024**3
BUDGET = make_budget(HostMemory(mem_total_bytes=8 * GiB, mem_available_bytes=8 * GiB), 0)


def test_a_confident_fit_is_not_touched() -> None:
    points = [
        SamplePoints(base=100 * MiB, increments=(1 * MiB, 1 * MiB + 4096, 1 * MiB - 4096) * 3)
        for _ in range(3)
    ]
    model = fit(points, Method.SMAPS)
    assert model.confidence != "low"
    assert low_confidence_guard(model) is None
    assert "low confidence" not in predict(model, BUDGET).conservative_note
    line = suggest.configuration("postgres", 100)
    assert suggest.flag_low_confidence(line, model) == line


def spread() -> list[SamplePoints]:
    """Three workers of 2, 4 and 12 MiB in fork order, in three samples: the line through
    their cumulative costs has a slope of 5 MiB and a negative intercept, so it is low
    confidence, and the costliest worker is 8 MiB, more than the slope."""
    return [SamplePoints(base=10 * MiB, increments=(2 * MiB, 4 * MiB, 12 * MiB))] * 3


def test_the_costliest_worker_measured_is_read_from_the_points() -> None:
    model = fit(spread(), Method.SMAPS)
    assert largest_increment(model) == 12 * MiB  # k = 2 -> 3; k = 1 has no base to subtract
    two = fit([SamplePoints(base=10 * MiB, increments=(2 * MiB, 4 * MiB))] * 2, Method.SMAPS)
    assert largest_increment(two) == 4 * MiB


def test_a_low_confidence_fit_is_widened_to_its_costliest_worker() -> None:
    model = fit(spread(), Method.SMAPS)
    assert model.confidence == "low"
    # The fit's own interval is narrow here (three samples agree): the costliest worker,
    # not the interval, sets the guard.
    narrow = dataclasses.replace(
        model,
        per_instance_ci95=(4 * MiB, 7 * MiB),
        per_instance_se_bytes=0.5 * MiB,
        fixed_se_bytes=0.0,
        fixed_slope_cov=0.0,
        worker_sd_bytes=0.0,
    )
    guard = low_confidence_guard(narrow)
    assert guard == (max(narrow.fixed_bytes, narrow.fixed_ci95[1]), 12 * MiB)
    available = BUDGET.available_bytes
    count = conservative_instances(narrow, available)
    unguarded = conservative_instances(dataclasses.replace(narrow, confidence="medium"), available)
    assert count == (available - guard[0]) // (12 * MiB) < unguarded
    # Safe: that many workers all as costly as the costliest one fit.
    assert guard[0] + count * 12 * MiB <= available
    assert count < predict(narrow, BUDGET).max_instances
    # Where the fit's own bound is the lower, it stands.
    assert conservative_instances(model, available) <= count
    note = predict(narrow, BUDGET).conservative_note
    assert f"every worker at {12 * MiB:,} bytes" in note


def test_the_guard_takes_the_upper_bound_where_it_is_more() -> None:
    model = fit(spread(), Method.SMAPS)
    wide = dataclasses.replace(
        model, per_instance_ci95=(1 * MiB, 30 * MiB), layout_allowance_bytes=0
    )
    assert low_confidence_guard(wide) == (max(wide.fixed_bytes, wide.fixed_ci95[1]), 30 * MiB)
    with_layout = dataclasses.replace(wide, layout_allowance_bytes=64 * KiB)
    assert low_confidence_guard(with_layout)[1] == 30 * MiB + 64 * KiB  # type: ignore[index]


def test_a_config_line_from_a_low_confidence_fit_says_so_on_the_line() -> None:
    model = fit(spread(), Method.SMAPS)
    hint = "measure more workers or more samples: capplan estimate --pid 7 --samples 10"
    warnings = (Notice(code="LOW_CONFIDENCE", message="low confidence", hint=hint),)
    reasons = "; ".join(model.confidence_reasons)
    postgres = suggest.flag_low_confidence(suggest.configuration("postgres", 40), model, warnings)
    assert postgres is not None
    assert postgres.lines == (
        f"max_connections = 40   # low confidence: {reasons}; to fix: {hint}",
    )
    fpm = suggest.flag_low_confidence(suggest.configuration("php-fpm", 9), model)
    assert fpm is not None
    (line,) = fpm.lines
    assert line.startswith("pm.max_children = 9   ; low confidence: ")  # ini comments
    assert line.endswith("to fix: measure more workers and samples")
    apache = suggest.flag_low_confidence(suggest.configuration("apache2", 12), model)
    assert apache is not None
    assert all("# low confidence: " in line for line in apache.lines)
    assert "comments only on lines of their own" in apache.note


def test_kubernetes_yaml_keys_stay_clean_and_values_are_marked() -> None:
    model = fit(spread(), Method.SMAPS)
    flagged = suggest.flag_low_confidence(suggest.kubernetes(5, GiB, 2 * GiB), model)
    assert flagged is not None
    for line in flagged.lines:
        if "memory:" in line:
            assert "   # low confidence: " in line
        else:
            assert line.endswith(":") and "#" not in line


def test_a_plan_keeps_a_low_confidence_pool_at_its_guard_too() -> None:
    """``capplan plan`` of one low-confidence pool gives predict's conservative count; beside
    a confident pool, the low one still fits at its guard."""
    from pathlib import Path

    from capacity import modelfile
    from capacity.model.assemble import BudgetOptions
    from capacity.model.plan import PoolModel, plan_host

    base = modelfile.load_estimate(Path(__file__).parents[2] / "models" / "demo.json")
    low = dataclasses.replace(
        fit(spread(), Method.SMAPS),
        per_instance_ci95=(4 * MiB, 7 * MiB),
        per_instance_se_bytes=0.5 * MiB,
        fixed_se_bytes=0.0,
        fixed_slope_cov=0.0,
        worker_sd_bytes=0.0,
        systematic_sd_bytes=0.0,
        layout_allowance_bytes=0,
        reclaimable_bytes=0,
    )
    sure = dataclasses.replace(low, confidence="high", confidence_reasons=())

    def pool(name: str, model: object) -> PoolModel:
        return PoolModel(
            name=name,
            source=f"models/{name}.json",
            estimate=dataclasses.replace(
                base, model=model, workload=dataclasses.replace(base.workload, worker_count=3)
            ),
        )

    options = BudgetOptions(memory=2 * GiB, reserve_bytes=0)
    (alone,) = plan_host([pool("low", low)], budget=options).pools
    assert alone.max_instances_conservative == conservative_instances(low, 2 * GiB)
    assert alone.max_instances_conservative < conservative_instances(sure, 2 * GiB)
    both = plan_host([pool("low", low), pool("sure", sure)], budget=options).pools
    guard = low_confidence_guard(low)
    assert guard is not None
    n_low, n_sure = (p.max_instances_conservative for p in both)
    assert guard[0] + n_low * guard[1] + sure.fixed_bytes + n_sure * sure.per_instance_bytes <= (
        2 * GiB
    )
