"""capplan estimate --launch against real processes, real cgroups and real signals.

The launched command is the demo in server mode with no workers: one process that writes
``--private`` bytes of its own and answers HTTP. One more instance costs that private size
plus what an idle instance of the same program costs (its interpreter's heap, its private
copies of relocated library pages, page tables, kernel stack, slab); we measure that idle
baseline the same way, on the same host, with ``--private 0``, and expect the two to add
up. Pages the instances share (the interpreter's text) are paid once: in the intercept.

Processes of one run are found by an environment variable that only that run's capplan
and its children carry, and its cgroups by capplan's pid in their names: other engineers
run the same tests on this host at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, MiB, needs_root, run_cli

from capacity.measure.cgroup import leftover_cgroups

PY = shlex.quote(sys.executable)
SERVER = f"{PY} -m capacity.demo --port {{port}} --workers 0 --shared 0"
TOKEN_VARIABLE = "CAPPLAN_TEST_RUN"


def launch_json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("estimate", *args, "--format", "json", env=env)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def processes_of_run(token: str) -> dict[int, str]:
    """Every live process whose environment carries this run's token: pid -> comm."""
    marker = f"{TOKEN_VARIABLE}={token}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found[int(entry)] = comm
    return found


def cgroups_of(capplan_pid: int) -> list[Path]:
    return [p for p in leftover_cgroups("capplan-launch") if f"-{capplan_pid}-" in p.name]


@contextlib.contextmanager
def capplan_running(*args: str, token: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "capacity", "estimate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, TOKEN_VARIABLE: token},
    )
    try:
        yield process
    finally:
        if process.poll() is None:  # the test failed before capplan ended: do not leak it
            process.kill()
        process.communicate(timeout=60)
        for pid in processes_of_run(token):  # nor its children, should the test fail
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def idle_instance() -> dict:
    return launch_json("--launch", SERVER + " --private 0", "--instances", "4", "--samples", "1")


@needs_root
def test_per_instance_cost_is_the_private_size_plus_the_idle_baseline(idle_instance: dict) -> None:
    doc = launch_json(
        "--launch",
        SERVER + " --private 16M",
        "--instances",
        "4",
        "--samples",
        "1",
        env={"MALLOC_ARENA_MAX": "2"},
    )
    launch = doc["launch"]
    assert [s["instances"] for s in launch["steps"]] == [1, 2, 3, 4]
    assert launch["system_source"] == "cgroup"
    # Launch mode is one group of instances, in one role (issue 13).
    (group,) = doc["groups"]
    assert (group["rule"], group["instance"], group["worker_role"]) == ("launch", None, "instance")
    assert group["roles"] == {"instance": 4} == doc["workload"]["roles"]
    assert group["model"] == doc["model"] and group["prediction"] == doc["prediction"]
    sides = {
        "process": (doc["model"], idle_instance["model"]),
        "system": (launch["system_model"], idle_instance["launch"]["system_model"]),
    }
    for side, (model, idle) in sides.items():
        per_instance, baseline = model["per_instance_bytes"], idle["per_instance_bytes"]
        assert per_instance == pytest.approx(16 * MiB + baseline, rel=0.05), side
        assert per_instance - baseline == pytest.approx(16 * MiB, rel=0.05), side
        low, high = model["per_instance_ci95"]
        assert low <= per_instance <= high
    # Every step's instances are separate trees with their own cgroup.
    last = launch["steps"][-1]
    assert len({m["pid"] for m in last["members"]}) == 4
    assert all(m["cgroup_bytes"] > 16 * MiB for m in last["members"])
    # The knobs that change the answer are recorded, the workload's own environment too.
    environment = doc["environment"]
    assert environment["malloc_arena_max"] == "2"
    for key in ("thp_enabled", "ksm_run", "swap_total_bytes"):
        assert key in environment
    # Nothing is left: the run's cgroup and every instance are gone.
    mount = Path("/sys/fs/cgroup/memory")
    assert not (mount / launch["cgroup_path"].lstrip("/")).exists()
    assert [pid for pid in doc["workload"]["pids"] if os.path.exists(f"/proc/{pid}")] == []


@needs_root
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM", "SIGINT-then-SIGTERM-during-cleanup"],
)
def test_interrupted_run_leaves_no_process_and_no_cgroup(signals: tuple[int, ...]) -> None:
    """Each instance is a shell that ignores SIGTERM, with a sleep that ignores it too and
    a demo server that does not: capplan must SIGKILL the first two after its grace period.
    A load generator runs against every instance. The run is interrupted once two
    instances are up; a second signal during the cleanup must not cut it short."""
    token = uuid.uuid4().hex
    command = f"trap '' TERM; sleep 600 & {SERVER} --private 1M & wait"
    with capplan_running(
        "--launch",
        command,
        "--shell",
        "--instances",
        "8",
        "--settle",
        "0.3",
        "--load",
        "ab -n 10000000 -c 1 http://127.0.0.1:{port}/",
        token=token,
    ) as capplan:

        def two_instances_under_load() -> bool:
            names = list(processes_of_run(token).values())
            return names.count("sleep") >= 2 and names.count("ab") >= 2

        wait_for(two_instances_under_load)
        assert cgroups_of(capplan.pid), "the run's cgroup should exist while it runs"
        started = set(processes_of_run(token)) - {capplan.pid}
        capplan.send_signal(signals[0])
        if len(signals) > 1:
            # Cleanup is under way when the servers are gone but the sleeps (ignoring
            # SIGTERM) are still waiting for their SIGKILL.
            def in_cleanup() -> bool:
                names = [n for pid, n in processes_of_run(token).items() if pid != capplan.pid]
                return "sleep" in names and not any(n.startswith("python") for n in names)

            wait_for(in_cleanup)
            capplan.send_signal(signals[1])
        code = capplan.wait(timeout=60)
        stderr = capplan.stderr.read() if capplan.stderr else ""

    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}
    assert code in {expected[s] for s in signals}, stderr
    assert "every process capplan started was stopped" in stderr
    assert "Traceback" not in stderr
    assert started, "the run had started processes"
    assert processes_of_run(token) == {}
    assert cgroups_of(capplan.pid) == []


@needs_root
def test_instance_that_exits_at_once_is_a_clear_error() -> None:
    crash = f"{PY} -c \"import sys; sys.stderr.write('boom: no config file\\n'); sys.exit(3)\""
    result = run_cli("estimate", "--launch", crash, "--instances", "3")
    assert result.code == 2
    assert "instance 1" in result.stderr
    assert "exited with status 3" in result.stderr
    assert "boom: no config file" in result.stderr
    assert "Hint: run it by hand" in result.stderr
    assert "Traceback" not in result.stderr


@needs_root
def test_instance_that_exits_later_stops_the_run_and_the_others() -> None:
    token = uuid.uuid4().hex
    command = (
        "if [ {i} -eq 2 ]; then echo 'port {port} is taken' >&2; exit 4; fi; "
        f"exec {SERVER} --private 1M"
    )
    with capplan_running("--launch", command, "--shell", "--instances", "3", token=token) as run:
        code = run.wait(timeout=60)
        stderr = run.stderr.read() if run.stderr else ""
    assert code == 2, stderr
    assert "instance 2" in stderr and "exited with status 4" in stderr
    assert "is taken" in stderr
    assert processes_of_run(token) == {}  # instance 1 was stopped too
    assert cgroups_of(run.pid) == []


@needs_root
def test_instance_whose_memory_keeps_changing_times_out(tmp_path: Path) -> None:
    grower = tmp_path / "grow.py"
    grower.write_text(
        "import time\nblocks = []\nwhile True:\n"
        "    blocks.append(b'x' * 262144)\n    time.sleep(0.02)\n"
    )
    result = run_cli(
        "estimate", "--launch", f"{PY} {grower}", "--instances", "3", "--settle-timeout", "1.5"
    )
    assert result.code == 2
    assert "instance 1 did not settle within 1.5 s" in result.stderr
    assert "--settle" in result.stderr  # the hint says how to give a fixed wait
    assert "Traceback" not in result.stderr


@needs_root
def test_server_that_never_listens_times_out() -> None:
    result = run_cli(
        "estimate", "--launch", "sleep 30 {port}", "--instances", "3", "--settle-timeout", "1"
    )
    assert result.code == 2
    assert "did not accept connections on 127.0.0.1:" in result.stderr


def test_bad_launch_options_are_one_line_errors() -> None:
    too_few = run_cli("estimate", "--launch", "sleep 60", "--instances", "2")
    assert too_few.code == 2 and "--instances 2" in too_few.stderr
    missing = run_cli("estimate", "--launch", "no-such-program-capplan {port}", "--instances", "3")
    assert missing.code == 2 and "command not found: no-such-program-capplan" in missing.stderr
    port_in_attach = run_cli("estimate", "--pid", "1", "--load", "ab http://127.0.0.1:{port}/")
    assert port_in_attach.code == 2 and "only --launch defines" in port_in_attach.stderr
    unused_port = run_cli(
        "estimate", "--launch", "sleep 60", "--load", "ab http://127.0.0.1:{port}/"
    )
    assert unused_port.code == 2 and "--launch does not" in unused_port.stderr
    for result in (too_few, missing, port_in_attach, unused_port):
        assert "Traceback" not in result.stderr


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_without_a_cgroup_the_system_side_is_memavailable(idle_instance: dict) -> None:
    """In a mount namespace where every cgroup hierarchy is read-only, capplan cannot
    create a cgroup: it says so, falls back to MemAvailable, and still finds and stops
    every instance by its process tree."""
    token = uuid.uuid4().hex
    read_only = (
        "for m in $(awk '$3 ~ /^cgroup/ {print $2}' /proc/self/mounts); do "
        'mount -o remount,bind,ro "$m" || exit 99; done; exec "$@"'
    )
    completed = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            read_only,
            "sh",
            sys.executable,
            "-m",
            "capacity",
            "estimate",
            "--launch",
            SERVER + " --private 16M",
            "--instances",
            "4",
            "--samples",
            "1",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, TOKEN_VARIABLE: token},
    )
    if completed.returncode == 99:
        pytest.skip("cannot remount the cgroup hierarchies read-only here")
    assert completed.returncode == 0, completed.stderr
    doc = json.loads(completed.stdout)
    assert doc["launch"]["system_source"] == "memavailable"
    assert doc["launch"]["cgroup_path"] is None
    assert "NO_CGROUP" in {w["code"] for w in doc["warnings"]}
    baseline = idle_instance["model"]["per_instance_bytes"]
    assert doc["model"]["per_instance_bytes"] == pytest.approx(16 * MiB + baseline, rel=0.05)
    assert processes_of_run(token) == {}
