"""Copy-on-write drift maths on series whose truth we know (capacity.model.drift is pure)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from capacity.model.drift import UnitSample, measure, requests_in_window, sampling_advice
from capacity.records import LoadRun

MiB = 1024 * 1024
T0 = 1_000_000.0


def series(
    value: Callable[[float], float],
    *,
    samples: int = 12,
    interval: float = 0.5,
    workers: int = 3,
    noise: float = 0.0,
    headroom: int = 32 * MiB,
    seed: int = 1,
) -> list[UnitSample]:
    rng = np.random.default_rng(seed)
    out = []
    for index in range(samples):
        t = index * interval
        out.append(
            UnitSample(
                taken_at=T0 + t,
                private={
                    (100 + w, 7): round(
                        value(t) + w * MiB + (rng.normal(0, noise) if noise else 0.0)
                    )
                    for w in range(workers)
                },
                headroom={(100 + w, 7): headroom for w in range(workers)},
            )
        )
    return out


def test_flat_workers_do_not_drift() -> None:
    drift = measure(series(lambda t: 8 * MiB), "worker")
    assert drift is not None
    assert not drift.growing
    assert drift.plateau
    assert drift.first_bytes == drift.last_bytes
    assert drift.fit_from_sample == 0


def test_growth_that_stops_reaches_a_plateau_at_the_cap() -> None:
    # 2 MiB/s for 2 s, then flat at +4 MiB: the last third (4 of 12 samples) is flat.
    drift = measure(series(lambda t: 8 * MiB + min(t, 2.0) * 2 * MiB), "worker")
    assert drift is not None
    assert drift.growing and drift.plateau
    assert drift.last_bytes - drift.first_bytes == 4 * MiB
    assert drift.plateau_bytes == drift.last_bytes
    assert drift.fit_from_sample == 8  # the prediction uses the plateau's 4 samples
    assert drift.sample_more_seconds is None


def test_steady_growth_has_no_plateau_and_says_how_long_to_sample() -> None:
    drift = measure(series(lambda t: 8 * MiB + t * MiB, headroom=30 * MiB), "worker")
    assert drift is not None
    assert drift.growing and not drift.plateau
    assert drift.growth_per_minute_bytes == pytest.approx(60 * MiB, rel=1e-6)
    assert drift.fit_from_sample == 11  # only the last sample: a lower bound on the cost
    # 30 MiB of inherited memory left at 1 MiB/s: at least 30 s more.
    assert drift.sample_more_seconds == pytest.approx(30.0, rel=0.01)
    assert "inherited memory" in sampling_advice(drift)


def test_growth_without_inherited_memory_suggests_sampling_longer() -> None:
    drift = measure(series(lambda t: 8 * MiB + t * MiB, headroom=0), "worker")
    assert drift is not None and not drift.plateau
    assert drift.sample_more_seconds is not None and drift.sample_more_seconds >= 60
    assert "leak" in sampling_advice(drift)


def test_a_flat_tail_after_the_load_ended_is_not_a_plateau() -> None:
    samples = series(lambda t: 8 * MiB + min(t, 2.0) * 2 * MiB)
    load = LoadRun(command=("ab",), requests=1000, started_at=T0 - 0.1, ended_at=T0 + 2.0)
    drift = measure(samples, "worker", [load])
    assert drift is not None
    assert drift.growing and not drift.plateau
    assert "load generator finished" in drift.note


def test_too_few_samples_cannot_show_a_plateau() -> None:
    drift = measure(series(lambda t: 8 * MiB + t * MiB, samples=4), "worker")
    assert drift is not None and drift.growing and not drift.plateau
    assert "too few" in drift.note
    assert measure(series(lambda t: 8 * MiB, samples=2), "worker") is None


def test_a_recycled_worker_is_a_new_worker_not_growth() -> None:
    """Worker (100, 7) is replaced by a bigger (200, 9) halfway: followed by identity,
    neither grows; the mean over whoever is there would show a jump."""
    samples = []
    for index in range(12):
        worker = (100, 7) if index < 6 else (200, 9)
        size = 5 * MiB if index < 6 else 9 * MiB
        samples.append(
            UnitSample(
                taken_at=T0 + index,
                private={worker: size, (300, 1): 6 * MiB},
                headroom={worker: 0, (300, 1): 0},
            )
        )
    drift = measure(samples, "worker")
    assert drift is not None
    assert not drift.growing
    assert drift.tracked == 3


def test_noise_alone_rarely_reads_as_growth() -> None:
    """No trend, workers that jitter by 64 KiB: flagged as growing in at most ~5 % of runs."""
    flagged = 0
    trials = 200
    for seed in range(trials):
        drift = measure(series(lambda t: 8 * MiB, noise=64 * 1024, seed=seed), "worker")
        assert drift is not None
        flagged += drift.growing
    assert flagged / trials <= 0.08


def test_growth_per_request_uses_the_requests_served_while_sampling() -> None:
    # 3 workers each grow by 16 KiB per request at 50 requests/s each (150/s in all).
    per_worker_rate = 50 * 16 * 1024
    samples = series(lambda t: 8 * MiB + t * per_worker_rate, samples=10, interval=0.2)
    load = LoadRun(command=("ab", "-n", "600"), requests=600, started_at=T0, ended_at=T0 + 4.0)
    drift = measure(samples, "worker", [load])
    assert drift is not None
    assert drift.requests_in_window == pytest.approx(150 * 1.8)
    assert drift.growth_per_request_bytes == pytest.approx(16 * 1024, rel=1e-3)


def test_requests_in_window() -> None:
    done = LoadRun(command=("ab",), requests=1000, started_at=0.0, ended_at=10.0)
    assert requests_in_window([done], 5.0, 20.0) == pytest.approx(500)
    running = LoadRun(command=("ab",), requests=1000, started_at=0.0, ended_at=None)
    assert requests_in_window([running], 5.0, 20.0) is None
    unknown = LoadRun(command=("wrk",), requests=None, started_at=0.0, ended_at=10.0)
    assert requests_in_window([unknown], 5.0, 20.0) is None
    before = LoadRun(command=("ab",), requests=1000, started_at=0.0, ended_at=1.0)
    assert requests_in_window([before], 5.0, 20.0) is None  # served nothing in the window
