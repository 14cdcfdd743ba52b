"""capplan plan: several pools on one host, on fits whose truth we know.

The point answer is checked against exact arithmetic and a brute-force walk over every
scale along the ratio; the conservative answer against the single-pool prediction (one pool
planned is ``predict``, to the worker) and against real draws (the sum of the workers that
will actually run fits in about 95 % of cases). The CLI tests at the end run ``capplan
plan`` over model files in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capacity import modelfile
from capacity.answers import Plan
from capacity.app.plan import PlanOptions, pool_name, run_plan
from capacity.errors import BudgetError, ModelFileError, PlanError
from capacity.model import whatif
from capacity.model.assemble import BudgetOptions
from capacity.model.fitting import (
    SamplePoints,
    _band,
    _t,
    fit,
    pooled_dof,
    upper_bound,
    upper_bound_of_sum,
)
from capacity.model.plan import (
    PoolModel,
    parse_count,
    parse_counts,
    parse_weight,
    parse_weights,
    plan_host,
)
from capacity.records import Estimate, ModelFit
from capacity.render.plan import render_plan_json, render_plan_text

KiB, MiB, GiB = 1024, 1024**2, 1024**3
MODEL = REPO / "models" / "demo.json"
BASE = modelfile.load_estimate(MODEL)
TIME = "2026-12-01T10:00:00+00:00"


def exact_fit(fixed: int, per: int, **extra: object) -> ModelFit:
    """A fit known exactly: no spread unless asked for (``extra`` replaces fields)."""
    model = dataclasses.replace(
        BASE.model,
        fixed_bytes=fixed,
        per_instance_bytes=per,
        per_instance_ci95=(per, per),
        fixed_ci95=(fixed, fixed),
        per_instance_se_bytes=0.0,
        fixed_se_bytes=0.0,
        fixed_slope_cov=0.0,
        worker_sd_bytes=0.0,
        systematic_sd_bytes=0.0,
        layout_allowance_bytes=0,
        reclaimable_bytes=0,
    )
    return dataclasses.replace(model, **extra)  # type: ignore[arg-type]


def estimate(
    model: ModelFit,
    workers: int,
    *,
    process: str = "python3",
    exe: str | None = None,
    host: str = "host1",
    time: str = TIME,
    page_size: int = 4096,
    total: int = 16 * GiB,
    reserve: int = GiB,
    reserve_source: str = "what everything outside the workload uses now: MemTotal - ...",
    reserve_fraction: float | None = None,
) -> Estimate:
    return dataclasses.replace(
        BASE,
        model=model,
        workload=dataclasses.replace(
            BASE.workload, name=process, exe=exe, worker_count=workers, parent_cmdline=()
        ),
        environment=dataclasses.replace(
            BASE.environment, hostname=host, time=time, page_size=page_size
        ),
        budget=dataclasses.replace(
            BASE.budget,
            total_bytes=total,
            reserve_bytes=reserve,
            available_bytes=total - reserve,
            reserve_source=reserve_source,
            reserve_fraction=reserve_fraction,
        ),
    )


def pool(name: str, model: ModelFit, workers: int, **kwargs: object) -> PoolModel:
    return PoolModel(
        name=name,
        source=f"models/{name}.json",
        estimate=estimate(model, workers, **kwargs),  # type: ignore[arg-type]
    )


def budget(memory: int, reserve: int = 0) -> BudgetOptions:
    return BudgetOptions(memory=memory, reserve_bytes=reserve)


def counts(plan: Plan, which: str = "point") -> dict[str, int]:
    attribute = "max_instances" if which == "point" else "max_instances_conservative"
    return {p.name: getattr(p, attribute) for p in plan.pools}


# Two pools with known fits: web (fixed 100 MiB, 10 MiB a worker, measured with 4) and db
# (fixed 50 MiB, 30 MiB a worker, measured with 2). Along 4:2, one step of scale costs
# 4 x 10 + 2 x 30 = 100 MiB.
WEB = exact_fit(100 * MiB, 10 * MiB)
DB = exact_fit(50 * MiB, 30 * MiB)


def two_pools() -> list[PoolModel]:
    return [pool("web", WEB, 4), pool("db", DB, 2)]


# --------------------------------------------------------------------------- the point answer


def test_the_measured_ratio_is_kept() -> None:
    plan = plan_host(two_pools(), budget=budget(2048 * MiB))
    # room 2048 - 150 = 1898 MiB: scale 18.98, counts (75, 37) use 2010 MiB; at scale 19
    # (76, 38) would need 2050 MiB.
    assert counts(plan) == {"web": 75, "db": 37}
    assert plan.point.memory_bytes == (150 + 750 + 1110) * MiB
    assert plan.point.room_bytes == 38 * MiB
    assert plan.point.workers == 112
    assert plan.point.scale == pytest.approx(18.75)
    assert [p.weight for p in plan.pools] == [4.0, 2.0]
    assert plan.ratio_source == "the worker counts the models were measured at"


def test_each_fixed_cost_is_paid_once() -> None:
    plan = plan_host(two_pools(), budget=budget(2048 * MiB))
    web, db = plan.pools
    assert web.memory_bytes == 100 * MiB + 75 * 10 * MiB
    assert db.memory_bytes == 50 * MiB + 37 * 30 * MiB
    assert plan.point.memory_bytes == web.memory_bytes + db.memory_bytes


def test_a_pinned_pool_runs_its_count_and_the_others_share_the_rest() -> None:
    plan = plan_host(two_pools(), budget=budget(2048 * MiB), counts={"db": 10})
    # 2048 - 150 - 300 = 1598 MiB for web alone: 159 workers.
    assert counts(plan) == {"web": 159, "db": 10}
    db = plan.pools[1]
    assert db.pinned and db.weight is None and db.weight_source == "--set"
    assert "--set" in plan.ratio_source
    assert counts(plan, "conservative")["db"] == 10


def test_every_pool_pinned() -> None:
    plan = plan_host(two_pools(), budget=budget(2048 * MiB), counts={"web": 3, "db": 2})
    assert counts(plan) == counts(plan, "conservative") == {"web": 3, "db": 2}
    assert plan.point.room_bytes == 2048 * MiB - (150 + 30 + 60) * MiB
    assert plan.ratio_source == "every pool is pinned with --set"


def test_weights_change_the_ratio() -> None:
    plan = plan_host(
        two_pools(), budget=budget(2048 * MiB), weights={"web": Fraction(1), "db": Fraction(1)}
    )
    # One step costs 10 + 30 = 40 MiB: 1898 / 40 = 47.45.
    assert counts(plan) == {"web": 47, "db": 47}
    assert plan.pools[0].weight_source == "--weight"
    # One weight given: db keeps its measured count (2) as its share.
    plan = plan_host(two_pools(), budget=budget(2048 * MiB), weights={"web": Fraction(8)})
    web, db = counts(plan).values()
    assert web in (4 * db, 4 * db + 1, 4 * db + 2, 4 * db + 3)
    assert "--weight" in plan.ratio_source


def test_fractional_weights_are_exact() -> None:
    """0.1 is no float here: scale 30 gives web 3 and db 30 workers, not 2 and 29."""
    plan = plan_host(
        two_pools(),
        budget=budget(150 * MiB + 3 * 10 * MiB + 30 * 30 * MiB),
        weights={"web": Fraction("0.1"), "db": Fraction(1)},
    )
    assert counts(plan) == {"web": 3, "db": 30}
    assert plan.point.room_bytes == 0


def test_the_floors_leave_no_step_that_still_fits() -> None:
    """Past the continuous optimum the floors may leave room for the next breakpoint: a
    heavy pool of weight 1 and a light one of weight 1/2 (see the search's docstring)."""
    heavy, light = exact_fit(0, 100 * MiB), exact_fit(0, 1 * MiB)
    plan = plan_host([pool("heavy", heavy, 2), pool("light", light, 1)], budget=budget(100 * MiB))
    # Continuous: 100 / (2 x 100 + 1) = 0.4975; at scale 0.5 the counts (1, 0) cost 100 MiB.
    assert counts(plan) == {"heavy": 1, "light": 0}
    assert plan.point.room_bytes == 0


def brute_force(pools: list[PoolModel], weights: list[Fraction], available: int) -> list[int]:
    """Every breakpoint along the ratio in order, until the counts stop fitting."""
    fixed = sum(p.estimate.model.fixed_bytes for p in pools)
    per = [p.estimate.model.per_instance_bytes for p in pools]
    best = [0] * len(pools)
    scale = Fraction(0)
    while True:
        scale = min(Fraction(math.floor(scale * w) + 1) / w for w in weights)
        step = [math.floor(scale * w) for w in weights]
        if fixed + sum(n * p for n, p in zip(step, per, strict=True)) > available:
            return best
        best = step


@pytest.mark.parametrize("seed", range(20))
def test_the_search_agrees_with_a_walk_over_every_breakpoint(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    pools = [
        pool(f"p{i}", exact_fit(int(rng.integers(0, 50 * MiB)), int(rng.integers(1, 40)) * MiB), 1)
        for i in range(n)
    ]
    weights = [Fraction(int(rng.integers(1, 12)), int(rng.integers(1, 5))) for _ in range(n)]
    available = int(rng.integers(200 * MiB, 2 * GiB))
    plan = plan_host(
        pools,
        budget=budget(available),
        weights={p.name: w for p, w in zip(pools, weights, strict=True)},
    )
    assert list(counts(plan).values()) == brute_force(pools, weights, available)


def test_one_pool_is_what_predict_answers() -> None:
    """One pool planned: the point and the conservative count of predict, to the worker."""
    for memory in (2 * GiB, 8 * GiB, 64 * GiB, *range(GiB, 40 * GiB, 1_999_999_999)):
        result = whatif.what_if(BASE, source="m", memories=[memory], reserve_bytes=GiB // 2)
        plan = plan_host(
            [PoolModel(name="demo", source="m", estimate=BASE)], budget=budget(memory, GiB // 2)
        )
        (row,) = result.sizes
        (planned,) = plan.pools
        assert planned.max_instances == row.max_instances
        assert planned.max_instances_conservative == row.max_instances_conservative


# --------------------------------------------------------------------------- the conservative answer


def spread(model: ModelFit, *, se: float, sd: float, fixed_se: float, dof: int) -> ModelFit:
    return dataclasses.replace(
        model,
        per_instance_se_bytes=se,
        worker_sd_bytes=sd,
        fixed_se_bytes=fixed_se,
        fixed_slope_cov=-0.5 * se * fixed_se,
        dof=dof,
    )


def uncertain_pools() -> list[PoolModel]:
    return [
        pool("web", spread(WEB, se=200 * KiB, sd=1 * MiB, fixed_se=2 * MiB, dof=5), 4),
        pool("db", spread(DB, se=50 * KiB, sd=3 * MiB, fixed_se=1 * MiB, dof=20), 2),
    ]


def test_the_conservative_answer_bounds_the_sum_and_is_never_above_the_point() -> None:
    pools = uncertain_pools()
    plan = plan_host(pools, budget=budget(8 * GiB))
    point, conservative = counts(plan), counts(plan, "conservative")
    assert all(conservative[name] <= point[name] for name in point)
    assert plan.conservative.workers < plan.point.workers
    models = [p.estimate.model for p in pools]
    assert plan.conservative.high_bytes == math.ceil(
        upper_bound_of_sum(models, list(conservative.values()))
    )
    assert plan.conservative.high_bytes <= plan.conservative.limit_bytes
    assert plan.conservative.room_bytes >= 0
    # The next step along the ratio (web's 5th worker of each 4-2 pair, or db's) does not fit.
    web, db = conservative.values()
    scale = Fraction(plan.conservative.scale)
    following = min(Fraction(math.floor(scale * 4) + 1, 4), Fraction(math.floor(scale * 2) + 1, 2))
    step = [math.floor(following * 4), math.floor(following * 2)]
    assert step != [web, db]
    assert upper_bound_of_sum(models, step) > plan.conservative.limit_bytes
    # The point plan's own bound is over: the point answer is not a conservative one.
    assert plan.point.high_bytes > plan.available_bytes


def test_one_band_for_the_sum_is_narrower_than_one_per_pool() -> None:
    """Independent pools' errors partly cancel: the band of the sum is below the sum of bands."""
    web, db = (p.estimate.model for p in uncertain_pools())
    together = _band([web, db], [100, 50], 0.95)
    apart = _band([web], [100], 0.95) + _band([db], [50], 0.95)
    assert together < apart


def test_independent_variances_add_and_the_systematic_part_adds_linearly() -> None:
    model = spread(WEB, se=100 * KiB, sd=1 * MiB, fixed_se=1 * MiB, dof=7)
    one = _band([model], [40], 0.95) / _t(7, 0.95)
    two = _band([model, model], [40, 40], 0.95) / _t(7, 0.95)
    assert two == pytest.approx(math.sqrt(2) * one)
    # Only the slab estimate's error: a standard deviation per worker that is the same in
    # every pool, so it adds as the workers do, N1 s1 + N2 s2, not in quadrature.
    slab = exact_fit(0, MiB, systematic_sd_bytes=10 * KiB, dof=7)
    other = exact_fit(0, MiB, systematic_sd_bytes=20 * KiB, dof=7)
    assert _band([slab, other], [30, 10], 0.95) == pytest.approx(
        _t(7, 0.95) * (30 * 10 * KiB + 10 * 20 * KiB)
    )
    # And one pool is the single-pool bound exactly.
    assert upper_bound_of_sum([model], [40]) == upper_bound(model, 40)


def test_degrees_of_freedom_combine_by_welch_satterthwaite() -> None:
    assert pooled_dof([5.0, 1.0], [4, 4]) == 4
    assert pooled_dof([1.0, 0.0], [3, 30]) == pytest.approx(3)
    assert pooled_dof([0.0, 1.0], [3, 30]) == pytest.approx(30)
    combined = pooled_dof([1.0, 1.0], [3, 30])
    assert 3 < combined < 33
    assert combined == pytest.approx(4 / (1 / 3 + 1 / 30))
    assert pooled_dof([0.0, 0.0], [3, 30]) == 3


def simulated(
    rng: np.random.Generator, n: int, samples: int, mean: float, sd: float, base: int
) -> list[SamplePoints]:
    """As tests/unit/test_model.py: n workers of one population, re-measured ``samples`` times."""
    workers = rng.normal(mean, sd, size=n)
    return [
        SamplePoints(
            base=base,
            increments=tuple(int(x) for x in workers + rng.normal(0, sd * 0.05, size=n)),
        )
        for _ in range(samples)
    ]


def test_the_conservative_plan_holds_for_real_draws() -> None:
    """Fit two pools from draws of their populations, plan them, then draw the workers that
    will actually run: the host's total must fit in at least ~95 % of cases."""
    rng = np.random.default_rng(2024)
    web_base, db_base = 10 * MiB, 40 * MiB
    failures, trials = 0, 500
    for _ in range(trials):
        web = fit(simulated(rng, 8, 3, 300 * KiB, 60 * KiB, web_base), "smaps")
        db = fit(simulated(rng, 5, 3, 2 * MiB, 300 * KiB, db_base), "smaps")
        plan = plan_host(
            [PoolModel(name="web", source="w", estimate=estimate(web, 8)),
             PoolModel(name="db", source="d", estimate=estimate(db, 5))],
            budget=budget(2 * GiB),
        )  # fmt: skip
        n_web, n_db = counts(plan, "conservative").values()
        assert n_web > 0 and n_db > 0
        actual = (
            web_base
            + db_base
            + rng.normal(300 * KiB, 60 * KiB, size=n_web).sum()
            + rng.normal(2 * MiB, 300 * KiB, size=n_db).sum()
        )
        failures += actual > plan.available_bytes
    # Nominal 5 %; 7.9 % is three binomial standard deviations above it at 500 trials.
    assert failures / trials <= 0.079


# --------------------------------------------------------------------------- property


Pool = tuple[int, int, int, float, str, int]  # fixed, per worker, workers, sd, role, value
POOLS = st.lists(
    st.tuples(
        st.integers(0, GiB),
        st.integers(4 * KiB, 512 * MiB),
        st.integers(1, 50),
        st.floats(0, 0.25),
        st.sampled_from(["measured", "weight", "pin"]),
        st.integers(0, 1000),
    ),
    min_size=1,
    max_size=4,
)


def host_of(drawn: list[Pool]) -> tuple[list[PoolModel], dict[str, Fraction], dict[str, int]]:
    pools, weights, pins = [], {}, {}
    for i, (fixed, per, workers, sd, role, value) in enumerate(drawn):
        model = exact_fit(
            fixed, per, worker_sd_bytes=sd * per, per_instance_se_bytes=sd * per / 10, dof=3
        )
        pools.append(pool(f"p{i}", model, workers))
        if role == "weight":
            weights[f"p{i}"] = Fraction(value + 1, 7)
        elif role == "pin":
            pins[f"p{i}"] = value % 21
    return pools, weights, pins


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(POOLS, st.integers(MiB, 2**40))
def test_property_the_point_plan_fits_and_one_more_step_does_not(
    drawn: list[Pool], memory: int
) -> None:
    """For any positive fits and memory: the point plan's total is within the memory, and
    one more worker for the pool furthest behind its ratio (every pool as far behind, at a
    tie) is over it; the conservative counts are never above the point's."""
    pools, weights, pins = host_of(drawn)
    fixed = sum(p.estimate.model.fixed_bytes for p in pools)
    pinned = sum(
        pins[p.name] * p.estimate.model.per_instance_bytes for p in pools if p.name in pins
    )
    try:
        plan = plan_host(pools, budget=budget(memory), counts=pins, weights=weights)
    except BudgetError as err:
        assert fixed + pinned > memory, err
        assert "more than the" in err.message
        return
    assert plan.point.memory_bytes <= memory
    point = counts(plan)
    for name, n in pins.items():
        assert point[name] == n
    free = {
        p.name: weights.get(p.name, Fraction(p.estimate.workload.worker_count))
        for p in pools
        if p.name not in pins
    }
    if free:
        # The pool furthest behind its ratio is the one whose next worker comes first.
        following = min(Fraction(point[name] + 1) / w for name, w in free.items())
        step = {n: math.floor(following * w) for n, w in free.items()}
        assert any(step[n] > point[n] for n in free)
        total = fixed + pinned
        total += sum(
            step[p.name] * p.estimate.model.per_instance_bytes for p in pools if p.name in free
        )
        assert total > memory
    conservative = counts(plan, "conservative")
    assert all(conservative[name] <= point[name] for name in point)


# --------------------------------------------------------------------------- edges


def test_pinned_pools_over_the_memory_say_by_how_much() -> None:
    with pytest.raises(BudgetError) as caught:
        plan_host(two_pools(), budget=budget(GiB), counts={"db": 40})
    # 150 MiB fixed + 40 x 30 MiB = 1350 MiB: 326 MiB over 1 GiB.
    assert caught.value.message.startswith(
        "the pools' fixed costs and the pinned workers need 1.32 GiB: 326.0 MiB more than the "
        "1.00 GiB available"
    )
    assert "--set" in (caught.value.hint or "")


def test_fixed_costs_alone_over_the_memory() -> None:
    with pytest.raises(
        BudgetError, match=r"the pools' fixed costs need 150\.0 MiB: 22\.0 MiB more"
    ):
        plan_host(two_pools(), budget=budget(128 * MiB))


def test_pins_that_fit_only_by_the_point_fit_are_said_so() -> None:
    pools = uncertain_pools()
    memory = 150 * MiB + 40 * 10 * MiB + 2 * 30 * MiB
    plan = plan_host(pools, budget=budget(memory), counts={"web": 40, "db": 2})
    assert plan.point.fits and plan.point.room_bytes == 0
    assert not plan.conservative.fits and plan.conservative.room_bytes < 0
    assert counts(plan, "conservative") == {"web": 40, "db": 2}
    assert any("do not fit by the 95% bound" in note for note in plan.notes)
    assert "OVER by" in render_plan_text(plan)


def test_a_pool_measured_without_workers_needs_a_weight_or_a_pin() -> None:
    pools = [pool("web", WEB, 4), pool("idle", DB, 0)]
    with pytest.raises(PlanError, match="idle was measured with no workers"):
        plan_host(pools, budget=budget(GiB))
    plan = plan_host(pools, budget=budget(GiB), weights={"idle": Fraction(1)})
    assert counts(plan)["idle"] > 0
    assert counts(plan_host(pools, budget=budget(GiB), counts={"idle": 0}))["idle"] == 0


@pytest.mark.parametrize(
    ("pins", "weights", "needle"),
    [
        ({"wbe": 3}, {}, "--set wbe=...: no pool is named 'wbe' (the pools: web, db)"),
        ({}, {"dbb": Fraction(1)}, "--weight dbb=...: no pool is named 'dbb'"),
        ({"web": 3}, {"web": Fraction(2)}, "web is given both --set and --weight"),
    ],
)
def test_names_must_be_pools(
    pins: dict[str, int], weights: dict[str, Fraction], needle: str
) -> None:
    with pytest.raises(PlanError) as caught:
        plan_host(two_pools(), budget=budget(GiB), counts=pins, weights=weights)
    assert needle in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("web=40", ("web", 40)), ("web=0", ("web", 0)), ("a=b=3", ("a=b", 3)), ("w= 7 ", ("w", 7))],
)
def test_parse_count(text: str, expected: tuple[str, int]) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("web", "write NAME=N"),
        ("=3", "write NAME=N"),
        ("web=", "whole number"),
        ("web=-1", "whole number"),
        ("web=2.5", "whole number"),
        ("web=1e3", "whole number"),
        ("web=1000000001", "from 0 to 1,000,000,000"),
    ],
)
def test_bad_counts(text: str, needle: str) -> None:
    with pytest.raises(PlanError, match=needle):
        parse_count(text)


def test_parse_weight() -> None:
    assert parse_weight("web=2") == ("web", Fraction(2))
    assert parse_weight("web=0.25") == ("web", Fraction(1, 4))
    assert parse_weight("web=.5") == ("web", Fraction(1, 2))
    for text, needle in [
        ("web=0", "W must be above 0"),
        ("web=0.0", "W must be above 0"),
        ("web=-2", "a number above 0"),
        ("web=nan", "a number above 0"),
        ("web=inf", "a number above 0"),
        ("web=1e400", "a number above 0"),
        ("web=2000000000", "at most"),
        ("web", "write NAME=W"),
    ]:
        with pytest.raises(PlanError, match=needle):
            parse_weight(text)
    with pytest.raises(PlanError) as caught:
        parse_weight("web=0")
    assert caught.value.hint == "to run none of a pool's workers, pin it: --set web=0"


def test_a_pool_given_twice() -> None:
    with pytest.raises(PlanError, match=r"--set web=\.\.\. is given twice"):
        parse_counts(["web=1", "web=2"])
    with pytest.raises(PlanError, match=r"--weight db=\.\.\. is given twice"):
        parse_weights(["db=1", "db=2"])


def test_two_models_of_one_name_are_refused_with_a_rename() -> None:
    one = PoolModel(name="web", source="a/web.json", estimate=estimate(WEB, 4))
    two = PoolModel(name="web", source="b/web.json", estimate=estimate(DB, 2))
    with pytest.raises(PlanError) as caught:
        plan_host([one, two], budget=budget(GiB))
    assert caught.value.message == (
        "two models are named 'web' (a/web.json and b/web.json): a pool's name is its model "
        "file's name without .json"
    )
    assert caught.value.hint == "copy one under another name, e.g. cp b/web.json b/web-2.json"


def test_no_models() -> None:
    with pytest.raises(PlanError, match="no models"):
        plan_host([], budget=budget(GiB))


def test_one_host_has_one_page_size() -> None:
    pools = [pool("web", WEB, 4), pool("db", DB, 2, page_size=65536)]
    with pytest.raises(PlanError, match="different architectures or page sizes"):
        plan_host(pools, budget=budget(GiB))


def test_without_memory_the_recorded_budget_when_the_models_agree() -> None:
    plan = plan_host(two_pools())
    assert plan.memory_bytes == 16 * GiB
    assert plan.memory_source.startswith("the budget every model recorded on host1")
    other = [pool("web", WEB, 4), pool("db", DB, 2, host="host2")]
    with pytest.raises(PlanError, match=r"different hosts \(host1, host2\)") as caught:
        plan_host(other)
    assert "--memory" in (caught.value.hint or "")
    # With --memory they plan, and say where each was measured.
    plan = plan_host(other, budget=budget(4 * GiB, GiB))
    assert any("different hosts (host1, host2)" in note for note in plan.notes)
    sizes = [pool("web", WEB, 4), pool("db", DB, 2, total=8 * GiB)]
    with pytest.raises(PlanError, match="different budgets"):
        plan_host(sizes)


def test_the_measured_reserve_leaves_out_the_other_pools() -> None:
    """Measured together, web's reserve counted db (and db's counted web): each is taken
    less the other pool at its measured count, and the largest stands."""
    pools = [pool("web", WEB, 4, reserve=GiB), pool("db", DB, 2, reserve=900 * MiB)]
    plan = plan_host(pools)
    web_there = 100 * MiB + 4 * 10 * MiB
    db_there = 50 * MiB + 2 * 30 * MiB
    assert plan.reserve_bytes == max(GiB - db_there, 900 * MiB - web_there)
    assert plan.reserve_source.startswith("what the rest of host1 used")
    # A day apart: the pools need not have run together; the reserves are kept whole.
    apart = [pools[0], pool("db", DB, 2, reserve=900 * MiB, time="2026-12-02T10:00:00+00:00")]
    plan = plan_host(apart)
    assert plan.reserve_bytes == GiB
    assert "may count other pools too" in plan.reserve_source
    # A reserve typed with --reserve when the model was saved is not a measurement.
    typed = [pool("web", WEB, 4, reserve=GiB, reserve_source="--reserve 1G"), pools[1]]
    assert plan_host(typed).reserve_bytes == max(GiB, 900 * MiB - web_there)


def test_reserve_options() -> None:
    plan = plan_host(two_pools(), budget=BudgetOptions.parse("8G", "10%"))
    assert plan.reserve_bytes == int(8 * GiB * 0.1)
    assert plan.reserve_source == "--reserve 10% of the memory"
    plan = plan_host(two_pools(), budget=BudgetOptions.parse("8G", "2G"))
    assert plan.reserve_bytes == 2 * GiB and plan.available_bytes == 6 * GiB
    shared = [pool("web", WEB, 4, reserve_fraction=0.25), pool("db", DB, 2, reserve_fraction=0.25)]
    assert plan_host(shared, budget=budget(8 * GiB)).reserve_bytes == 0  # --reserve 0 given
    plan = plan_host(shared, budget=BudgetOptions(memory=8 * GiB))
    assert plan.reserve_bytes == 2 * GiB
    assert "25% of the memory" in plan.reserve_source
    with pytest.raises(BudgetError, match="not smaller than the memory"):
        plan_host(two_pools(), budget=BudgetOptions.parse("1G", "1G"))


def test_each_pool_gets_its_configuration_line() -> None:
    pools = [
        pool("web", WEB, 4, process="apache2", exe="/usr/sbin/apache2"),
        pool("php", DB, 2, process="php-fpm8.2", exe="/usr/sbin/php-fpm8.2"),
        pool("app", DB, 2),
    ]
    plan = plan_host(pools, budget=budget(4 * GiB))
    web, php, app = plan.pools
    assert web.server == "apache2" and php.server == "php-fpm" and app.server is None
    assert web.suggestion is not None and php.suggestion is not None
    assert f"MaxRequestWorkers {web.max_instances_conservative}" in web.suggestion.lines
    assert php.suggestion.lines == (f"pm.max_children = {php.max_instances_conservative}",)
    assert app.suggestion is None
    text = render_plan_text(plan)
    assert f"pm.max_children = {php.max_instances_conservative}" in text
    assert "app: capplan does not recognise this program's configuration" in text


# --------------------------------------------------------------------------- rendering, run_plan


def test_text_and_json_carry_the_same_plan() -> None:
    plan = plan_host(uncertain_pools(), budget=budget(8 * GiB, GiB))
    text = render_plan_text(plan)
    assert text.startswith("Plan for one host: 2 pools: web (models/web.json), db (models/db.json)")
    assert "Reserve 1.00 GiB: --reserve" in text
    for p in plan.pools:
        assert f"{p.max_instances:,}" in text and f"{p.max_instances_conservative:,}" in text
    assert f"Max workers: {plan.point.workers:,}" in text
    assert f"Conservative (95%): {plan.conservative.workers:,}" in text
    assert "for the sum over the pools (not one per pool)" in text
    document = json.loads(render_plan_json(plan))
    assert document["kind"] == "capplan.plan" and document["schema_version"] == 1
    assert document["unit"] == "bytes"
    assert [p["max_instances"] for p in document["pools"]] == [p.max_instances for p in plan.pools]
    assert document["conservative"]["high_bytes"] == plan.conservative.high_bytes


def test_host_text_is_made_safe_for_the_terminal() -> None:
    hostile = PoolModel(
        name="we\x1b[31mb\u202e",
        source="models/we\x1b[31mb.json",
        estimate=estimate(WEB, 4, process="apa\x1b]0;owned\x07che", host="h\x1bost"),
    )
    plan = plan_host([hostile, pool("db", DB, 2, host="h\x1bost")], budget=budget(GiB))
    text = render_plan_text(plan)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "we[31mb" in text
    assert json.loads(render_plan_json(plan))["pools"][0]["name"] == "we\x1b[31mb\u202e"


def save(path: Path, model: ModelFit, workers: int, **kwargs: object) -> Path:
    modelfile.save_estimate(path, estimate(model, workers, **kwargs))  # type: ignore[arg-type]
    return path


def test_run_plan_reads_the_files_and_names_the_pools(tmp_path: Path) -> None:
    web = save(tmp_path / "web.json", WEB, 4)
    db = save(tmp_path / "db.v2.json", DB, 2)
    plan = run_plan(PlanOptions(models=(web, db), memory="2G", reserve="0", counts=("db.v2=3",)))
    assert [p.name for p in plan.pools] == ["web", "db.v2"]
    assert counts(plan) == {"web": (2048 - 150 - 90) // 10, "db.v2": 3}
    assert pool_name(Path("x/web")) == "web"
    with pytest.raises(PlanError, match="is given twice"):
        run_plan(PlanOptions(models=(web, tmp_path / "." / "web.json")))
    with pytest.raises(PlanError, match="no models"):
        run_plan(PlanOptions(models=()))
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": "capplan.estimate", "schema_version": 1')
    with pytest.raises(ModelFileError, match="not valid JSON"):
        run_plan(PlanOptions(models=(web, broken)))


# --------------------------------------------------------------------------- the command


@pytest.fixture
def models(tmp_path: Path) -> Path:
    save(tmp_path / "web.json", WEB, 4, process="apache2", exe="/usr/sbin/apache2")
    save(tmp_path / "php.json", DB, 2, process="php-fpm8.2", exe="/usr/sbin/php-fpm8.2")
    return tmp_path


def test_cli_text_and_json(models: Path) -> None:
    args = (str(models / "web.json"), str(models / "php.json"), "--memory", "2G", "--reserve", "0")
    text = run_cli("plan", *args)
    assert text.code == 0, text.stderr
    assert text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0].startswith("Plan for one host: 2 pools: web (")
    assert any(line.startswith("web ") and " 75 " in line for line in lines), text.stdout
    assert any(line.startswith("php ") and " 37 " in line for line in lines), text.stdout
    assert "MaxRequestWorkers 75" in text.stdout and "pm.max_children = 37" in text.stdout
    result = run_cli("plan", *args, "--format", "json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["kind"] == "capplan.plan"
    assert [p["max_instances"] for p in document["pools"]] == [75, 37]
    assert document["point"]["room_bytes"] == 38 * MiB
    library = run_plan(
        PlanOptions(models=(models / "web.json", models / "php.json"), memory="2G", reserve="0")
    )
    assert document == json.loads(render_plan_json(library))


def assert_error(result: object, needle: str) -> None:
    code, stdout, stderr = result.code, result.stdout, result.stderr  # type: ignore[attr-defined]
    assert code == 2, (code, stderr)
    assert stdout == ""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert needle in errors[0], (needle, errors[0])


def test_cli_errors_are_one_line(models: Path, tmp_path: Path) -> None:
    web, php = str(models / "web.json"), str(models / "php.json")
    assert_error(run_cli("plan", web, php, "--set", "wbe=3"), "no pool is named 'wbe'")
    assert_error(run_cli("plan", web, php, "--set", "web=x"), "N must be a whole number")
    assert_error(run_cli("plan", web, php, "--weight", "web=0"), "W must be above 0")
    assert_error(
        run_cli("plan", web, php, "--memory", "2G", "--reserve", "0", "--set", "php=100"),
        "more than the 2.00 GiB available",
    )
    assert_error(run_cli("plan"), "Missing argument 'MODEL'")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert_error(run_cli("plan", web, str(broken)), "broken.json: not valid JSON")
    other = tmp_path / "other"
    other.mkdir()
    save(other / "web.json", DB, 2)
    result = run_cli("plan", web, str(other / "web.json"))
    assert_error(result, "two models are named 'web'")
    assert "Hint: copy one under another name" in result.stderr
    page = save(tmp_path / "arm.json", DB, 2, page_size=65536)
    assert_error(run_cli("plan", web, str(page), "--memory", "2G"), "page sizes")
