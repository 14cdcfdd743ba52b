"""Launch mode's fit through independent points, the quadratic check, and command templates."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.errors import LaunchError, ModelError
from capacity.measure.loadgen import expand, request_count
from capacity.model.fitting import cgroup_resolution_sd, fit_independent, quadratic_check

KiB, MiB = 1024, 1024**2


def test_exact_line_is_recovered() -> None:
    counts = [1, 2, 3, 4]
    model = fit_independent(counts, [5 * MiB + n * 20 * MiB for n in counts], "cgroup")
    assert model.per_instance_bytes == 20 * MiB
    assert model.fixed_bytes == 5 * MiB
    assert model.dof == 2 and model.n_points == 4 and model.n_samples == 1


def test_interval_covers_the_true_slope_about_95_percent_of_the_time() -> None:
    """Independent points: linregress's own standard errors are the honest ones here."""
    rng = np.random.default_rng(2024)
    truth = 24 * MiB
    covered, trials = 0, 400
    counts = [1, 2, 3, 4, 5]
    for _ in range(trials):
        totals = [3 * MiB + n * truth + rng.normal(0, 300 * KiB) for n in counts]
        low, high = fit_independent(counts, totals, "smaps").per_instance_ci95
        covered += low <= truth <= high
    assert 0.90 <= covered / trials <= 0.99


def test_resolution_floor_widens_an_interval_that_is_too_good_to_be_true() -> None:
    counts = [1, 2, 3, 4]
    totals = [n * 20 * MiB for n in counts]
    exact = fit_independent(counts, totals, "cgroup")
    floored = fit_independent(counts, totals, "cgroup", resolution_sd=cgroup_resolution_sd(2, 4096))
    assert exact.per_instance_ci95 == (20 * MiB, 20 * MiB)
    low, high = floored.per_instance_ci95
    assert low < 20 * MiB < high


def test_fewer_than_three_instance_counts_is_an_error() -> None:
    with pytest.raises(ModelError, match="fewer than 3"):
        fit_independent([1, 2], [10 * MiB, 20 * MiB], "smaps")


def test_quadratic_check_finds_a_cost_that_grows_with_n() -> None:
    counts = [1, 2, 3, 4, 5, 6]
    # Each instance costs 20 MiB plus 512 KiB for every other instance (a pool sized by N).
    totals = [n * 20 * MiB + n * n * 512 * KiB for n in counts]
    rng = np.random.default_rng(3)
    noisy = [t + rng.normal(0, 100 * KiB) for t in totals]
    check = quadratic_check(counts, noisy, "cgroup", at_instances=500)
    assert check.significant
    assert check.coefficient_bytes == pytest.approx(512 * KiB, rel=0.2)
    assert check.share > 0.10


def test_quadratic_check_rarely_fires_on_a_straight_line() -> None:
    rng = np.random.default_rng(11)
    counts = [1, 2, 3, 4, 5, 6]
    fired, trials = 0, 400
    for _ in range(trials):
        totals = [n * 20 * MiB + rng.normal(0, 100 * KiB) for n in counts]
        fired += quadratic_check(counts, totals, "smaps", at_instances=800).significant
    assert fired / trials <= 0.03  # tested at 1 %


def test_quadratic_check_needs_four_points() -> None:
    check = quadratic_check([1, 2, 3], [1.0, 2.0, 3.0], "smaps", at_instances=10)
    assert not check.significant and check.p_value is None
    assert "4 or more" in check.note


def test_expand_splits_then_substitutes() -> None:
    argv = expand(
        "server --port {port} --name 'worker {i}' --fmt '{print $1}'",
        shell=False,
        option="--launch",
        values={"i": 3, "port": 8123},
    )
    assert argv == ("server", "--port", "8123", "--name", "worker 3", "--fmt", "{print $1}")


def test_expand_with_shell_passes_one_string() -> None:
    argv = expand("a {i} | b; c", shell=True, option="--launch", values={"i": 2})
    assert argv == ("/bin/sh", "-c", "a 2 | b; c")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ab http://127.0.0.1:{port}/", "only --launch defines"),
        ("server 'unclosed", "cannot split"),
        ("   ", "empty"),
    ],
)
def test_expand_rejects_bad_templates(template: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        expand(template, shell=False, option="--load")


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (("ab", "-n", "500", "-c", "4", "http://x/"), 500),
        (("/usr/bin/ab", "-n2000", "http://x/"), 2000),
        (("hey", "-n", "10", "http://x/"), 10),
        (("/bin/sh", "-c", "ab -c 2 -n 7 http://x/"), 7),
        (("curl", "-n", "5"), None),
        (("ab", "-t", "10", "http://x/"), None),
    ],
)
def test_request_count(argv: tuple[str, ...], count: int | None) -> None:
    assert request_count(argv) == count
