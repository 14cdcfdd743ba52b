"""Gentle on the workload: no page walk of a large process without --deep (issue 7).

The thresholds (4 GiB resident, 10,000 mappings) are lowered for these tests so that the
demo workload's small processes cross them; everything else is the real code path on
real processes.
"""

from __future__ import annotations

import json

import pytest
from conftest import MiB, needs_root, run_cli, start_demo

from capacity.app import inspect as inspection
from capacity.errors import CapplanError, ExactUnavailable
from capacity.measure import gentle, pages, sampler
from capacity.measure.environment import read_environment
from capacity.measure.workload import Selector
from capacity.model import assemble
from capacity.records import FallbackCause, MemoryRollup, Method, ProcessMemory

exact_available = pytest.mark.skipif(
    pages.exact_unavailable() is not None,
    reason=f"exact tier unavailable: {pages.exact_unavailable()}",
)


def process(pid: int, rss: int, mappings: int | None) -> ProcessMemory:
    return ProcessMemory(
        pid=pid,
        start_ticks=1,
        ppid=1,
        name=f"w{pid}",
        state="S",
        role="worker",
        threads=1,
        rollup=MemoryRollup(rss_bytes=rss, pss_bytes=rss),
        mappings=mappings,
    )


def test_too_large_takes_either_threshold_and_sorts_largest_first() -> None:
    limit = gentle.DEEP_RSS_BYTES
    small = process(1, limit, gentle.DEEP_MAPPINGS)  # at the limits: allowed
    big = process(2, limit + 1, 10)
    many = process(3, MiB, gentle.DEEP_MAPPINGS + 1)
    unknown = process(4, MiB, None)
    assert gentle.too_large([small, unknown]) == []
    assert gentle.too_large([small, many, big, unknown]) == [big, many]
    reason = gentle.refusal([big, many])
    assert reason.startswith("too large for a page walk without --deep")
    assert "pid 2 (w2) 4.00 GiB resident" in reason
    assert "10,001 mappings" in reason
    assert gentle.refusal([process(i, limit + i, 1) for i in range(1, 6)]).count("pid ") == 3
    err = ExactUnavailable(gentle.refused([big], "capplan estimate --cmd x"))
    assert err.fallback.cause == FallbackCause.TOO_LARGE
    assert err.hint is not None and "capplan estimate --cmd x --deep" in err.hint


@pytest.fixture
def low_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every demo process (a Python interpreter: more than 1 MiB resident) is 'large'."""
    monkeypatch.setattr(gentle, "DEEP_RSS_BYTES", 1 * MiB)


@needs_root
@exact_available
@pytest.mark.usefixtures("low_thresholds")
def test_exact_walk_refused_without_deep_and_run_with_it() -> None:
    with start_demo("--shared", "4M", "--private", "1M", "--workers", "3") as demo:
        selector = Selector(pid=demo.parent)

        reader = sampler.Sampler(selector, method=None)
        snapshots = sampler.collect(selector, 2, 0.0, sampler=reader)
        assert all(s.pages is None for s in snapshots)
        fallback = reader.exact_fallback()
        assert fallback is not None and fallback.cause == FallbackCause.TOO_LARGE
        estimate = assemble.build_estimate(
            workload=assemble.describe_workload(str(selector), snapshots),
            snapshots=snapshots,
            environment=read_environment(),
            budget_options=assemble.BudgetOptions(),
            total_seconds=0.0,
            samples_requested=2,
            exact_fallback=fallback,
        )
        assert estimate.model.method == "smaps"
        assert estimate.timing.exact_read_seconds == ()
        (warning,) = [w for w in estimate.warnings if w.code == "EXACT_FALLBACK"]
        assert "too large for a page walk without --deep" in warning.message
        assert f"capplan estimate {selector} --deep" in warning.hint
        assert "root" not in warning.hint

        with pytest.raises(ExactUnavailable) as raised:
            sampler.Sampler(selector, method=Method.EXACT).snapshot(0, exact=True)
        assert raised.value.fallback.cause == FallbackCause.TOO_LARGE
        assert "--deep" in (raised.value.hint or "")

        deep = sampler.Sampler(selector, method=None, deep=True)
        walked = sampler.collect(selector, 2, 0.0, sampler=deep)
        assert deep.exact_fallback() is None
        assert all(s.pages is not None for s in walked)


@pytest.mark.usefixtures("low_thresholds")
def test_inspect_refuses_per_mapping_reads_without_deep() -> None:
    with start_demo("--shared", "4M", "--private", "1M", "--workers", "2") as demo:
        selector = Selector(pid=demo.parent)
        for method in (Method.SMAPS, None):
            with pytest.raises(CapplanError) as raised:
                inspection.inspect_workload(selector, method=method)
            assert "too large for a page walk without --deep" in raised.value.message
            assert f"capplan inspect {selector} --deep" in (raised.value.hint or "")
        result = inspection.inspect_workload(selector, method=Method.SMAPS, deep=True)
        assert result.workload.worker_count == 2
        assert result.rows


@needs_root
@exact_available
def test_json_reports_the_exact_walk_time() -> None:
    with start_demo("--shared", "4M", "--private", "1M", "--workers", "3") as demo:
        result = run_cli(
            "estimate", "--pid", str(demo.parent), "--samples", "3", "--interval", "0",
            "--format", "json", "--deep",
        )  # fmt: skip
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    timing = doc["timing"]
    assert len(timing["sample_read_seconds"]) == 3
    assert all(t > 0 for t in timing["sample_read_seconds"])
    walks = [s["pages"]["read_seconds"] for s in doc["samples"] if s["pages"]]
    assert len(walks) == 2  # the first and the last sample
    assert timing["exact_read_seconds"] == walks
