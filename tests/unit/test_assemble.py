"""assemble: the budget options as typed, the workload's description, and the whole
estimate rebuilt from the samples saved in models/demo.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import REPO

from capacity.errors import ModelError
from capacity.model.assemble import BudgetOptions, build_estimate, describe_workload
from capacity.modelfile import load_estimate
from capacity.records import Method
from capacity.units import SizeError

MODEL = REPO / "models/demo.json"
KiB, MiB, GiB = 1024, 1024**2, 1024**3


@pytest.fixture(scope="module")
def estimate():
    return load_estimate(MODEL)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(MODEL.read_text())


def _rebuild(estimate, options: BudgetOptions = BudgetOptions(), **kwargs):
    return build_estimate(
        workload=estimate.workload,
        snapshots=estimate.samples,
        environment=estimate.environment,
        budget_options=options,
        total_seconds=estimate.timing.total_seconds,
        samples_requested=len(estimate.samples),
        **kwargs,
    )


# --------------------------------------------------------------------------- BudgetOptions


def test_parse_nothing() -> None:
    assert BudgetOptions.parse() == BudgetOptions(None, None, None, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("16G", 16 * GiB), ("512M", 512 * MiB), ("1.5G", 3 * GiB // 2), ("64KiB", 64 * KiB),
     ("1000", 1000), ("2T", 2 * 1024**4)],
)  # fmt: skip
def test_parse_memory_sizes(text: str, expected: int) -> None:
    options = BudgetOptions.parse(memory=text)
    assert options.memory == expected
    assert options.memory_text == text
    assert options.reserve_bytes is None and options.reserve_fraction is None


def test_parse_reserve_size() -> None:
    options = BudgetOptions.parse(memory="8G", reserve="2G")
    assert (options.memory, options.reserve_bytes, options.reserve_fraction) == (
        8 * GiB,
        2 * GiB,
        None,
    )
    assert options.reserve_text == "2G"


@pytest.mark.parametrize(("text", "fraction"), [("10%", 0.10), ("12.5%", 0.125), ("0%", 0.0)])
def test_parse_reserve_percentage(text: str, fraction: float) -> None:
    options = BudgetOptions.parse(reserve=text)
    assert options.reserve_bytes is None
    assert options.reserve_fraction == pytest.approx(fraction)
    assert options.reserve_text == text
    assert options.memory is None


@pytest.mark.parametrize(
    ("memory", "reserve"),
    [("lots", None), ("16X", None), ("-1G", None), (None, "abc"), (None, "100%"),
     (None, "150%"), (None, "-5%"), (None, "x%"), (None, "5Q")],
)  # fmt: skip
def test_parse_errors(memory: str | None, reserve: str | None) -> None:
    with pytest.raises(SizeError):
        BudgetOptions.parse(memory=memory, reserve=reserve)


def test_options_are_make_budget_keywords(estimate) -> None:
    options = BudgetOptions.parse(memory="8G", reserve="10%")
    rebuilt = _rebuild(estimate, options)
    assert rebuilt.budget.total_bytes == 8 * GiB
    assert rebuilt.budget.reserve_bytes == int(8 * GiB * 0.10)
    assert rebuilt.budget.available_bytes == 8 * GiB - int(8 * GiB * 0.10)
    assert rebuilt.budget.source == "--memory 8G"


# --------------------------------------------------------------------------- describe_workload


def test_describe_workload_from_last_sample(estimate, raw) -> None:
    last = raw["samples"][-1]["processes"]
    workload = describe_workload("--demo", estimate.samples, exe="/usr/bin/python3")
    assert workload.selector == "--demo"
    assert workload.name == "python"
    assert workload.pids == tuple(p["pid"] for p in last)
    assert workload.parent_pids == tuple(p["pid"] for p in last if p["role"] == "parent")
    assert workload.parent_pids == (31484,)
    assert workload.worker_count == sum(p["role"] == "worker" for p in last) == 4
    assert workload.exe == "/usr/bin/python3"
    assert workload.parent_cmdline == ()


def test_describe_workload_names_and_last_sample_only(estimate) -> None:
    last = estimate.samples[-1]
    renamed = tuple(
        dataclasses.replace(p, name="zeta" if p.role == "parent" else "alpha")
        for p in last.processes
    )
    fewer = dataclasses.replace(last, processes=renamed[:3])
    workload = describe_workload("--pid 1", [estimate.samples[0], fewer], parent_cmdline=("a",))
    assert workload.name == "alpha,zeta"
    assert workload.pids == tuple(p.pid for p in renamed[:3])
    assert workload.worker_count == 2
    assert workload.parent_cmdline == ("a",)


# --------------------------------------------------------------------------- build_estimate


def test_rebuild_reproduces_saved_model(estimate, raw) -> None:
    rebuilt = _rebuild(estimate)
    saved = raw["model"]
    assert rebuilt.model.method == Method.EXACT  # two samples carry an exact walk
    assert rebuilt.model.per_instance_bytes == saved["per_instance_bytes"] == 17683742
    assert rebuilt.model.fixed_bytes == saved["fixed_bytes"] == 74453034
    assert rebuilt.model.n_samples == saved["n_samples"]
    assert rebuilt.budget.available_bytes == raw["budget"]["available_bytes"]
    assert rebuilt.prediction.max_instances == raw["prediction"]["max_instances"] == 1396
    assert [w.code for w in rebuilt.warnings] == [w["code"] for w in raw["warnings"]]
    assert {k: v.max_instances for k, v in rebuilt.estimators.items()} == {
        k: v["max_instances"] for k, v in raw["estimators"].items()
    }
    assert rebuilt.samples == estimate.samples
    assert rebuilt.timing.sample_read_seconds == tuple(raw["timing"]["sample_read_seconds"])


def test_breakdown_adds_up_to_per_instance(estimate) -> None:
    b = _rebuild(estimate).model.breakdown
    assert b is not None
    parts = (
        b.per_instance_uss_bytes
        + b.per_instance_page_tables_bytes
        + b.per_instance_kernel_stack_bytes
        + b.per_instance_slab_bytes
    )
    # 17374208 + 241664 + 16384 + 51691 = 17683947, within a few hundred bytes of the fit.
    assert abs(parts - 17683742) < 1024


def test_smaps_method_differs_from_exact(estimate) -> None:
    smaps = _rebuild(estimate, method=Method.SMAPS)
    assert smaps.model.method == Method.SMAPS
    assert smaps.model.per_instance_bytes > 0


def test_no_samples_is_an_error(estimate) -> None:
    with pytest.raises(ModelError):
        build_estimate(
            workload=estimate.workload,
            snapshots=(),
            environment=estimate.environment,
            budget_options=BudgetOptions(),
            total_seconds=0.0,
            samples_requested=1,
        )


def test_exact_without_a_walk_is_an_error(estimate) -> None:
    no_pages = [dataclasses.replace(s, pages=None) for s in estimate.samples]
    with pytest.raises(ModelError):
        build_estimate(
            workload=estimate.workload,
            snapshots=no_pages,
            environment=estimate.environment,
            budget_options=BudgetOptions(),
            total_seconds=1.0,
            samples_requested=5,
            method=Method.EXACT,
        )
