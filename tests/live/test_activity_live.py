"""Busy or idle, live: the demo left alone is measured idle; the demo under ab is busy.

The demo's idle workers poll their parent five times a second: those wakes must not count
as work. Under ``--load`` (ab against the demo in server mode) every worker serves, and the
CPU time and context switches between the first and last sample are above zero.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest
from conftest import run_cli, start_demo


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_demo_left_alone_is_measured_idle() -> None:
    with start_demo("--shared", "32M", "--private", "1M", "--workers", "3") as demo:
        args = ("estimate", "--pid", str(demo.parent), "--samples", "4", "--interval", "0.5",
                "--method", "smaps")  # fmt: skip
        doc = json.loads(run_cli(*args, "--format", "json").stdout)
        text = run_cli(*args)
    activity = doc["activity"]
    assert activity["state"] == "idle"
    assert activity["workers"] == 3 and activity["busy_workers"] == 0
    assert activity["duration_seconds"] == pytest.approx(1.5, abs=0.5)
    [cow] = [w for w in doc["warnings"] if w["code"] == "COW_DRIFT_LIKELY"]
    assert cow["message"].startswith("measured idle: the 3 workers did not run")
    assert text.code == 0, text.stderr
    assert "Activity: measured idle: the 3 workers did not run" in text.stdout
    # The demo is not a server capplan knows: no load generator is proposed for it.
    assert "ab -n" not in cow["hint"] and "pgbench" not in cow["hint"]


@pytest.mark.skipif(shutil.which("ab") is None, reason="needs ab (apache2-utils)")
def test_the_demo_under_load_is_busy_and_says_how_busy() -> None:
    port = free_port()
    with start_demo("--port", str(port), "--shared", "32M", "--private", "1M",
                    "--workers", "2", "--request-delay", "0.001") as demo:  # fmt: skip
        result = run_cli(
            "estimate", "--pid", str(demo.parent), "--samples", "4", "--interval", "0.5",
            "--method", "smaps", "--load", f"ab -n 1000000 -c 4 http://127.0.0.1:{port}/",
            "--format", "json",
        )  # fmt: skip
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    activity = doc["activity"]
    assert activity["state"] == "busy"
    assert activity["workers"] == 2 and activity["busy_workers"] >= 1
    assert activity["cpu_seconds"] > 0 and activity["cpu_per_worker"] > 0
    assert activity["context_switches"] > 0 and activity["switches_per_second"] > 0
    codes = {w["code"] for w in doc["warnings"]}
    assert "COW_DRIFT_LIKELY" not in codes and "LOAD_MISSED" not in codes


def test_a_load_generator_that_misses_the_workers_is_named() -> None:
    """The load goes to a port nobody listens on: the workers stay idle, and capplan says
    the load missed them rather than that it measured under load."""
    closed = free_port()
    with start_demo("--shared", "8M", "--private", "1M", "--workers", "2") as demo:
        result = run_cli(
            "estimate", "--pid", str(demo.parent), "--samples", "3", "--interval", "0.4",
            "--method", "smaps", "--format", "json", "--load",
            f"python3 -c \"import socket, time; s = socket.socket(); s.connect_ex(('127.0.0.1', {closed})); time.sleep(30)\"",
        )  # fmt: skip
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["activity"]["state"] == "idle"
    assert "LOAD_MISSED" in {w["code"] for w in doc["warnings"]}
