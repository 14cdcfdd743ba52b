"""Copy-on-write drift, live: demo workers that copy inherited pages as they serve requests.

The demo in server mode makes each worker write ``--grow-per-request`` more bytes of the
heap it inherited from its parent with every request it serves, up to ``--grow-limit``:
the growth per request and the plateau are known. ``--request-delay`` bounds the request
rate (two workers at 10 ms per request serve at most 200 requests/s), so how far the
workers can have grown by a given sample is bounded too, whatever the machine's speed:
the tests never depend on how fast this host is, only on that bound.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import MiB, needs_root, run_cli, start_demo

KiB = 1024
PY = shlex.quote(sys.executable)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def estimate_under_load(parent: int, load: str, *extra: str) -> dict:
    result = run_cli("estimate", "--pid", str(parent), "--load", load, *extra, "--format", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


@needs_root
def test_workers_that_stop_growing_reach_a_plateau_and_the_prediction_uses_it() -> None:
    port = free_port()
    with start_demo(
        "--port", str(port), "--shared", "32M", "--private", "1M", "--workers", "2",
        "--grow-per-request", "16K", "--grow-limit", "2M", "--request-delay", "0.01",
    ) as demo:  # fmt: skip
        doc = estimate_under_load(
            demo.parent,
            f"ab -n 1000000 -c 2 http://127.0.0.1:{port}/",
            "--samples", "12", "--interval", "0.3",
        )  # fmt: skip
    drift = doc["drift"]
    assert drift["unit"] == "worker" and drift["tracked"] == 2
    assert drift["growing"] and drift["plateau"]
    # 2 MiB per worker at most; at most ~20 requests (320 KiB) before the first sample.
    grown = drift["last_bytes"] - drift["first_bytes"]
    assert 1.5 * MiB <= grown <= 2 * MiB + 256 * KiB  # + the interpreter's own allocations
    assert drift["growth_per_minute_bytes"] > 0
    # The prediction uses the plateau's samples, not the idle start.
    assert drift["fit_from_sample"] > 0
    uss = doc["model"]["breakdown"]["per_instance_uss_bytes"]
    assert uss == pytest.approx(drift["plateau_bytes"], rel=0.01)
    assert not doc["prediction"]["max_is_upper_bound"]
    assert "DRIFT_NO_PLATEAU" not in {w["code"] for w in doc["warnings"]}
    # The load generator ran through the sampling and was never part of the workload.
    (load,) = doc["load"]
    assert load["requests"] == 1000000 and load["ended_at"] is None
    assert set(doc["workload"]["pids"]) == {demo.parent, *demo.workers}


@needs_root
def test_workers_still_growing_give_a_lower_bound_and_say_how_long_to_sample() -> None:
    """32 MiB to grow at 16 KiB per request and at most 100 requests/s per worker: at
    least 20 s to flatten, and capplan samples for about 2 s."""
    port = free_port()
    with start_demo(
        "--port", str(port), "--shared", "48M", "--private", "1M", "--workers", "2",
        "--grow-per-request", "16K", "--grow-limit", "32M", "--request-delay", "0.01",
    ) as demo:  # fmt: skip
        doc = estimate_under_load(
            demo.parent,
            f"ab -n 1000000 -c 2 http://127.0.0.1:{port}/",
            "--samples", "8", "--interval", "0.3",
        )  # fmt: skip
    drift = doc["drift"]
    assert drift["growing"] and not drift["plateau"]
    assert drift["last_bytes"] > drift["first_bytes"]
    assert "still growing" in drift["note"]
    # At most 100 requests/s * 16 KiB = 1.56 MiB/s per worker, ~94 MiB/min.
    assert 0 < drift["growth_per_minute_bytes"] <= 100 * 16 * KiB * 60 * 1.05
    assert drift["sample_more_seconds"] > 0
    assert drift["fit_from_sample"] == 7  # only the last sample: the cost is a lower bound
    assert doc["prediction"]["max_is_upper_bound"]
    (warning,) = [w for w in doc["warnings"] if w["code"] == "DRIFT_NO_PLATEAU"]
    assert "lower bound" in warning["message"]
    assert "--samples" in warning["hint"] and "sample longer, up to" in warning["hint"]


@needs_root
def test_growth_per_request_and_a_load_that_ends_too_soon() -> None:
    """ab -n 400 at no more than 1000 requests/s ends well before the last third of the
    samples: the flat tail shows the load stopping, which is not a plateau. With ab's
    request count, each request's growth is known: 16 KiB."""
    port = free_port()
    with start_demo(
        "--port", str(port), "--shared", "32M", "--private", "1M", "--workers", "2",
        "--grow-per-request", "16K", "--request-delay", "0.002",
    ) as demo:  # fmt: skip
        doc = estimate_under_load(
            demo.parent,
            f"ab -n 400 -c 2 http://127.0.0.1:{port}/",
            "--samples", "12", "--interval", "0.25",
        )  # fmt: skip
    drift = doc["drift"]
    (load,) = doc["load"]
    assert load["ended_at"] is not None and load["exit_status"] == 0
    assert drift["growing"] and not drift["plateau"]
    assert "load generator finished" in drift["note"]
    assert drift["growth_per_request_bytes"] == pytest.approx(16 * KiB, rel=0.15)
    codes = {w["code"] for w in doc["warnings"]}
    assert {"LOAD_ENDED_EARLY", "DRIFT_NO_PLATEAU"} <= codes


@needs_root
def test_a_failing_load_generator_is_reported() -> None:
    with start_demo("--shared", "8M", "--private", "1M", "--workers", "2") as demo:
        doc = estimate_under_load(
            demo.parent,
            f"ab -n 10 http://127.0.0.1:{free_port()}/",  # nobody listens there
            "--samples", "3", "--interval", "0.3",
        )  # fmt: skip
    (warning,) = [w for w in doc["warnings"] if w["code"] == "LOAD_FAILED"]
    assert "exited with status" in warning["message"]
    assert "Connection refused" in warning["message"]  # the tail of ab's stderr


@needs_root
def test_warmup_lets_workers_reach_their_plateau_before_sampling() -> None:
    """512 KiB to grow at 16 KiB per request is 32 requests per worker: at most 100
    requests/s makes that at least 0.32 s, and the warm-up waits 2 s."""
    port = free_port()
    with start_demo(
        "--port", str(port), "--shared", "16M", "--private", "1M", "--workers", "2",
        "--grow-per-request", "16K", "--grow-limit", "512K", "--request-delay", "0.01",
    ) as demo:  # fmt: skip
        doc = estimate_under_load(
            demo.parent,
            f"ab -n 1000000 -c 2 http://127.0.0.1:{port}/",
            "--warmup", "2", "--samples", "6", "--interval", "0.2",
        )  # fmt: skip
    (load,) = doc["load"]
    assert doc["samples"][0]["taken_at"] - load["started_at"] >= 2.0
    drift = doc["drift"]
    assert not drift["growing"] and drift["plateau"]
    assert drift["fit_from_sample"] == 0


@needs_root
def test_launch_mode_under_load_follows_each_instance() -> None:
    """Three instances of a forking demo server (a parent and one worker each), each with
    its own load generator; the instances' trees grow by up to 1 MiB each under load."""
    command = (
        f"{PY} -m capacity.demo --port {{port}} --workers 1 --shared 8M --private 1M "
        "--grow-per-request 16K --grow-limit 1M --request-delay 0.005"
    )
    result = run_cli(
        "estimate", "--launch", command, "--instances", "3",
        "--load", "ab -n 1000000 -c 1 http://127.0.0.1:{port}/",
        "--samples", "4", "--interval", "0.3", "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert sorted(run["instance"] for run in doc["load"]) == [1, 2, 3]
    assert all(run["requests"] == 1000000 for run in doc["load"])
    members = doc["launch"]["steps"][-1]["members"]
    assert all(len(m["pids"]) == 2 for m in members)  # parent and worker of each instance
    workload = set(doc["workload"]["pids"])
    assert workload == {pid for m in members for pid in m["pids"]}  # no ab among them
    drift = doc["drift"]
    assert drift["unit"] == "instance" and drift["tracked"] == 3
    # The 8 MiB heap each instance's worker shares with its parent is that instance's.
    assert doc["model"]["per_instance_bytes"] > 8 * MiB + 1 * MiB
    assert doc["launch"]["system_model"]["per_instance_bytes"] > 8 * MiB + 1 * MiB


@needs_root
def test_the_load_generator_is_never_part_of_the_workload(tmp_path: Path) -> None:
    """The workload and the load generator run the same program under one name: --cmd
    matches both, and only the workload's processes may be measured."""
    name = f"cps{uuid.uuid4().hex[:8]}"
    program = tmp_path / name
    program.symlink_to(os.path.realpath(sys.executable))
    workload = subprocess.Popen(
        [str(program), "-m", "capacity.demo", "--shared", "8M", "--private", "1M",
         "--workers", "2"],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert workload.stdout is not None
        line = workload.stdout.readline().decode()
        assert line.startswith("ready"), line
        pids = {int(pid) for pid in line.split()[1:]}
        load = f"{program} -c 'import time; time.sleep(120)'"
        result = run_cli(
            "estimate", "--cmd", name, "--load", load, "--warmup", "0.5",
            "--samples", "2", "--interval", "0.2", "--format", "json",
        )  # fmt: skip
    finally:
        os.killpg(workload.pid, signal.SIGKILL)
        workload.wait(timeout=10)
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc["workload"]["pids"]) == pids
    assert all(p["pid"] in pids for s in doc["samples"] for p in s["processes"])
