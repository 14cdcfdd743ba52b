"""The fit and the prediction, on numbers whose truth we know."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capacity.errors import BudgetError, ModelError
from capacity.model.fitting import (
    SamplePoints,
    conservative_instances,
    fit,
    make_budget,
    memory_for,
    predict,
    total_for,
    upper_bound,
)
from capacity.records import Budget, CgroupMemory, HostMemory

KiB, MiB, GiB = 1024, 1024**2, 1024**3


def simulated(
    rng: np.random.Generator, n: int, samples: int, mean: float, sd: float, base: int
) -> list[SamplePoints]:
    workers = rng.normal(mean, sd, size=n)
    out = []
    for _ in range(samples):
        noise = rng.normal(0, sd * 0.05, size=n)  # small re-measurement noise
        out.append(SamplePoints(base=base, increments=tuple(int(x) for x in workers + noise)))
    return out


def test_exact_line_is_recovered() -> None:
    points = [SamplePoints(base=50 * MiB, increments=(400 * KiB,) * 8) for _ in range(3)]
    model = fit(points, "smaps")
    assert model.per_instance_bytes == 400 * KiB
    assert model.fixed_bytes == 50 * MiB
    assert model.r2 == pytest.approx(1.0)
    assert model.n_workers == 8 and model.n_samples == 3 and model.n_points == 24


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    """The slope interval must be honest: linregress's own errors on cumulative points
    would cover far less often. 400 simulated workloads of 10 workers each."""
    rng = np.random.default_rng(12345)
    true_mean = 500 * KiB
    covered = 0
    trials = 400
    for _ in range(trials):
        model = fit(simulated(rng, 10, 5, true_mean, 40 * KiB, 20 * MiB), "smaps")
        low, high = model.per_instance_ci95
        covered += low <= true_mean <= high
    assert 0.90 <= covered / trials <= 0.99


def test_conservative_prediction_holds_for_real_draws() -> None:
    """Draw N actual workers from the same population: their total must fit the budget
    in at least ~95 % of cases when N is the conservative prediction."""
    rng = np.random.default_rng(7)
    population_mean, population_sd = 300 * KiB, 60 * KiB
    budget = Budget(
        total_bytes=2 * GiB,
        reserve_bytes=0,
        available_bytes=2 * GiB,
        source="test",
        reserve_source="test",
    )
    failures, trials = 0, 1000
    for _ in range(trials):
        model = fit(simulated(rng, 12, 3, population_mean, population_sd, 10 * MiB), "smaps")
        n = predict(model, budget).max_instances_conservative
        assert n is not None and n > 0
        actual = 10 * MiB + rng.normal(population_mean, population_sd, size=n).sum()
        failures += actual > budget.available_bytes
    # Nominal 5 %; 7 % is three binomial standard deviations above it at 1000 trials.
    assert failures / trials <= 0.07


def test_point_prediction_arithmetic() -> None:
    points = [
        SamplePoints(base=100 * MiB, increments=(1 * MiB, 1 * MiB + 4096, 1 * MiB - 4096) * 3)
    ]
    model = fit(points, "smaps")
    budget = Budget(
        total_bytes=1 * GiB,
        reserve_bytes=124 * MiB,
        available_bytes=900 * MiB,
        source="t",
        reserve_source="t",
    )
    prediction = predict(model, budget)
    room = 900 * MiB - model.fixed_bytes
    assert prediction.room_bytes == room
    assert prediction.max_instances == math.floor(room / model.per_instance_bytes)
    assert prediction.max_instances_conservative is not None
    assert prediction.max_instances_conservative <= prediction.max_instances
    assert upper_bound(model, prediction.max_instances_conservative) <= budget.available_bytes
    assert upper_bound(model, prediction.max_instances_conservative + 1) > budget.available_bytes


def test_one_worker_is_refused() -> None:
    with pytest.raises(ModelError, match="only one worker"):
        fit([SamplePoints(base=MiB, increments=(MiB,))], "smaps")


def test_no_workers_is_refused() -> None:
    with pytest.raises(ModelError, match="no workers"):
        fit([SamplePoints(base=MiB, increments=())], "smaps")


def test_zero_size_workers_are_refused() -> None:
    with pytest.raises(ModelError, match="no memory of their own"):
        fit([SamplePoints(base=MiB, increments=(0, 0, 0, 0))], "smaps")


def test_two_workers_give_low_confidence_and_a_wide_interval() -> None:
    model = fit([SamplePoints(base=MiB, increments=(400 * KiB, 480 * KiB))] * 3, "smaps")
    assert model.confidence == "low"
    low, high = model.per_instance_ci95
    assert high - low > 0.5 * model.per_instance_bytes


def test_samples_that_disagree_lower_the_confidence() -> None:
    points = [
        SamplePoints(base=MiB, increments=(400 * KiB,) * 10),
        SamplePoints(base=MiB, increments=(900 * KiB,) * 10),
        SamplePoints(base=MiB, increments=(200 * KiB,) * 10),
    ]
    model = fit(points, "smaps")
    assert model.confidence == "low"
    assert any("disagree" in reason for reason in model.confidence_reasons)


def test_memory_for_n_instances_brackets_the_point() -> None:
    rng = np.random.default_rng(3)
    model = fit(simulated(rng, 10, 4, 700 * KiB, 50 * KiB, 30 * MiB), "smaps")
    point, low, high = memory_for(model, 100)
    assert low < point < high
    assert point == model.fixed_bytes + 100 * model.per_instance_bytes


def test_conservative_is_zero_when_fixed_cost_does_not_fit() -> None:
    model = fit([SamplePoints(base=500 * MiB, increments=(MiB, 2 * MiB, MiB))], "smaps")
    assert conservative_instances(model, 100 * MiB) == 0


HOST = HostMemory(mem_total_bytes=16 * GiB, mem_available_bytes=10 * GiB)


def test_default_budget_reserves_what_the_rest_of_the_host_uses() -> None:
    budget = make_budget(HOST, workload_total=1 * GiB)
    assert budget.total_bytes == 16 * GiB
    assert budget.reserve_bytes == 16 * GiB - 10 * GiB - 1 * GiB
    assert budget.available_bytes == 11 * GiB
    assert "MemTotal" in budget.source


def test_cgroup_limit_below_memtotal_is_the_budget() -> None:
    cgroup = CgroupMemory(
        path="/svc",
        version=2,
        current_bytes=3 * GiB,
        limit_bytes=4 * GiB,
        stat={"inactive_file": 512 * MiB},
    )
    budget = make_budget(HOST, workload_total=2 * GiB, cgroup=cgroup)
    assert budget.total_bytes == 4 * GiB
    assert budget.reserve_bytes == 3 * GiB - 512 * MiB - 2 * GiB
    assert "cgroup" in budget.source


def test_memory_and_reserve_options() -> None:
    budget = make_budget(
        HOST, 1 * GiB, memory=32 * GiB, memory_text="32G", reserve_fraction=0.1, reserve_text="10%"
    )
    assert budget.total_bytes == 32 * GiB
    assert budget.reserve_bytes == int(32 * GiB * 0.1)
    assert budget.source == "--memory 32G"
    fixed = make_budget(HOST, 1 * GiB, memory=8 * GiB, reserve_bytes=2 * GiB)
    assert fixed.available_bytes == 6 * GiB


def test_reserve_larger_than_budget_is_an_error() -> None:
    with pytest.raises(BudgetError):
        make_budget(HOST, 1 * GiB, memory=1 * GiB, reserve_bytes=2 * GiB)


def test_a_systematic_error_widens_the_bound_linearly_in_n() -> None:
    """An error shared by every worker (the slab estimate) grows as N, not as sqrt(N)."""
    import dataclasses

    rng = np.random.default_rng(11)
    model = fit(simulated(rng, 10, 3, 400 * KiB, 10 * KiB, 20 * MiB), "smaps")
    wider = dataclasses.replace(model, systematic_sd_bytes=8 * KiB)
    for n in (10, 100, 1000):
        extra = upper_bound(wider, n) - upper_bound(model, n)
        assert extra > 0
    # At large N the margin per worker tends to t * sqrt(se_slope^2 + sd_systematic^2).
    from scipy import stats

    per_worker = (upper_bound(wider, 100_000) - total_for(wider, 100_000)) / 100_000
    t = stats.t.ppf(0.95, wider.dof)
    expected = t * math.sqrt(wider.per_instance_se_bytes**2 + (8 * KiB) ** 2)
    assert per_worker == pytest.approx(expected, rel=0.01)
    budget = Budget(
        total_bytes=GiB, reserve_bytes=0, available_bytes=GiB, source="t", reserve_source="t"
    )
    assert conservative_instances(wider, budget.available_bytes) < conservative_instances(
        model, budget.available_bytes
    )


def test_systematic_sd_follows_how_the_kernel_part_was_known() -> None:
    from capacity.model.fitting import SLAB_CHECKED_SD, SLAB_ESTIMATE_SD, systematic_sd
    from capacity.records import Breakdown

    def breakdown(source: str) -> Breakdown:
        return Breakdown(
            per_instance_uss_bytes=MiB, per_instance_page_tables_bytes=0,
            per_instance_kernel_stack_bytes=0, per_instance_slab_bytes=100 * KiB,
            kernel_source=source, fixed_parent_bytes=0, fixed_shared_bytes=0,  # type: ignore[arg-type]
            fixed_kernel_bytes=0,
        )  # fmt: skip

    assert systematic_sd(breakdown("estimate")) == pytest.approx(SLAB_ESTIMATE_SD * 100 * KiB)
    assert systematic_sd(breakdown("cgroup")) == pytest.approx(SLAB_CHECKED_SD * 100 * KiB)
    assert systematic_sd(None) == 0.0
