"""Warnings as values: the fallback's hint, low confidence, and diagnose on the saved demo
estimate changed one fact at a time."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import REPO

from capacity.model.diagnostics import diagnose, fallback_warning, low_confidence
from capacity.modelfile import load_estimate
from capacity.records import ExactFallback, FallbackCause, Skipped


@pytest.fixture(scope="module")
def estimate():
    return load_estimate(REPO / "models/demo.json")


def _codes(notices) -> list[str]:
    return [n.code for n in notices]


def _diagnose(estimate, *, snapshots=None, model=None, budget=None, prediction=None,
              environment=None, **kwargs):  # fmt: skip
    kwargs.setdefault("selector", "--demo")
    kwargs.setdefault("samples_requested", 5)
    return diagnose(
        snapshots if snapshots is not None else estimate.samples,
        model or estimate.model,
        budget or estimate.budget,
        prediction or estimate.prediction,
        environment or estimate.environment,
        **kwargs,
    )


# --------------------------------------------------------------------------- fallback_warning


def test_fallback_uses_its_own_hint() -> None:
    fallback = ExactFallback(
        cause=FallbackCause.TOO_LARGE, reason="too many pages", hint="pass --deep to walk it"
    )
    notice = fallback_warning(fallback, "capplan estimate --pid 7", "fell back")
    assert notice.code == "EXACT_FALLBACK"
    assert notice.message == "fell back"
    assert notice.hint == "pass --deep to walk it"


def test_fallback_without_hint_suggests_root() -> None:
    fallback = ExactFallback(cause=FallbackCause.PERMISSION, reason="not root")
    notice = fallback_warning(fallback, "capplan estimate --pid 7", "fell back: not root")
    assert notice.code == "EXACT_FALLBACK"
    assert notice.message == "fell back: not root"
    assert "sudo capplan estimate --pid 7" in notice.hint
    assert "--method smaps" in notice.hint
    assert "--deep" not in notice.hint


def test_fallback_empty_hint_means_default() -> None:
    fallback = ExactFallback(cause=FallbackCause.PERMISSION, reason="x", hint="")
    assert (
        "sudo capplan estimate --demo"
        in fallback_warning(fallback, "capplan estimate --demo", "m").hint
    )


# --------------------------------------------------------------------------- low_confidence


def test_low_confidence_only_when_low(estimate) -> None:
    assert estimate.model.confidence == "high"
    assert low_confidence(estimate.model, "h") == []
    medium = dataclasses.replace(estimate.model, confidence="medium", confidence_reasons=("r",))
    assert low_confidence(medium, "h") == []
    low = dataclasses.replace(
        estimate.model, confidence="low", confidence_reasons=("only 2 workers", "r2 0.5")
    )
    [notice] = low_confidence(low, "measure more")
    assert notice.code == "LOW_CONFIDENCE"
    assert notice.message == "low confidence: only 2 workers; r2 0.5"
    assert notice.hint == "measure more"


# --------------------------------------------------------------------------- diagnose


def test_saved_demo_warnings(estimate) -> None:
    # models/demo.json was saved with these two: estimated slab, and no load.
    assert _codes(_diagnose(estimate)) == ["KERNEL_ESTIMATED", "COW_DRIFT_LIKELY"]
    assert _codes(estimate.warnings) == ["KERNEL_ESTIMATED", "COW_DRIFT_LIKELY"]


def test_under_load_drops_cow_drift(estimate) -> None:
    assert _codes(_diagnose(estimate, under_load=True)) == ["KERNEL_ESTIMATED"]


def test_cow_drift_hint_uses_selector(estimate) -> None:
    notices = _diagnose(estimate, selector="--pid 31484")
    [cow] = [n for n in notices if n.code == "COW_DRIFT_LIKELY"]
    # The demo is no server capplan recognises: its usual load, no load generator named.
    assert cow.hint.endswith("capplan estimate --pid 31484 --samples 30")
    # 73523200 bytes shared copy-on-write = 70.1 MiB.
    assert "70.1 MiB" in cow.message


@pytest.mark.parametrize(("requested", "suggested"), [(3, 10), (5, 10), (8, 16)])
def test_low_confidence_suggests_more_samples(estimate, requested, suggested) -> None:
    low = dataclasses.replace(estimate.model, confidence="low", confidence_reasons=("few",))
    notices = _diagnose(estimate, model=low, samples_requested=requested, under_load=True)
    assert _codes(notices) == ["LOW_CONFIDENCE", "KERNEL_ESTIMATED"]
    assert notices[0].hint.endswith(f"capplan estimate --demo --samples {suggested}")
    off = _diagnose(estimate, model=low, under_load=True, advise_confidence=False)
    assert "LOW_CONFIDENCE" not in _codes(off)


def test_exact_fallback_comes_first(estimate) -> None:
    fallback = ExactFallback(cause=FallbackCause.PERMISSION, reason="kpagecount unreadable")
    notices = _diagnose(estimate, exact_fallback=fallback, under_load=True)
    assert _codes(notices) == ["EXACT_FALLBACK", "KERNEL_ESTIMATED"]
    assert notices[0].message == "fell back to the smaps method: kpagecount unreadable"
    assert "sudo capplan estimate --demo" in notices[0].hint


def test_high_spread_above_ten_percent(estimate) -> None:
    per = estimate.model.per_instance_bytes
    just_below = dataclasses.replace(estimate.model, worker_sd_bytes=0.099 * per)
    assert "HIGH_SPREAD" not in _codes(_diagnose(estimate, model=just_below, under_load=True))
    above = dataclasses.replace(estimate.model, worker_sd_bytes=0.25 * per)
    [spread] = [
        n for n in _diagnose(estimate, model=above, samples_requested=4) if n.code == "HIGH_SPREAD"
    ]
    assert "25%" in spread.message
    assert spread.hint.endswith("--samples 20")  # max(4 * 4, 20)


def test_skipped_processes_counted(estimate) -> None:
    first = dataclasses.replace(
        estimate.samples[0],
        skipped=(
            Skipped(pid=1, name="a", reason="vanished"),
            Skipped(pid=2, name="b", reason="zombie"),
        ),
    )
    second = dataclasses.replace(
        estimate.samples[1], skipped=(Skipped(pid=3, name="c", reason="vanished"),)
    )
    snapshots = (first, second, *estimate.samples[2:])
    [notice] = [
        n for n in _diagnose(estimate, snapshots=snapshots) if n.code == "SKIPPED_PROCESSES"
    ]
    assert notice.message == "skipped while reading: 2 vanished, 1 zombie (counted, not measured)"


def test_swap_thp_and_smaps_source(estimate) -> None:
    last = estimate.samples[-1]
    worker = last.workers[0]
    swapped = dataclasses.replace(
        worker, rollup=dataclasses.replace(worker.rollup, swap_bytes=3 * 1024 * 1024)
    )
    changed = tuple(swapped if p is worker else p for p in last.processes)
    snapshots = (*estimate.samples[:-1], dataclasses.replace(last, processes=changed))
    environment = dataclasses.replace(estimate.environment, thp_enabled="always")
    codes = _codes(_diagnose(estimate, snapshots=snapshots, environment=environment))
    assert "SWAP_IN_USE" in codes and "THP_ALWAYS" in codes
    assert "NO_SMAPS_ROLLUP" not in codes

    from_smaps = dataclasses.replace(worker, source="smaps")
    changed = tuple(from_smaps if p is worker else p for p in last.processes)
    snapshots = (*estimate.samples[:-1], dataclasses.replace(last, processes=changed))
    assert "NO_SMAPS_ROLLUP" in _codes(_diagnose(estimate, snapshots=snapshots))


def test_no_room_and_cgroup_budget(estimate) -> None:
    prediction = dataclasses.replace(estimate.prediction, room_bytes=0)
    budget = dataclasses.replace(
        estimate.budget, source="memory limit of cgroup /sys/fs/cgroup/app", total_bytes=2**30
    )
    notices = _diagnose(estimate, prediction=prediction, budget=budget, under_load=True)
    assert _codes(notices) == ["KERNEL_ESTIMATED", "NO_ROOM", "BUDGET_FROM_CGROUP"]
    assert "(1.00 GiB)" in notices[-1].message


def test_calibrated_kernel_is_not_estimated(estimate) -> None:
    assert estimate.model.breakdown is not None
    breakdown = dataclasses.replace(estimate.model.breakdown, kernel_source="cgroup")
    model = dataclasses.replace(estimate.model, breakdown=breakdown)
    assert _codes(_diagnose(estimate, model=model, under_load=True)) == []
