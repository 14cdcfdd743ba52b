"""The pressure probe on this host's cgroup v1 memory controller (issue 14 part 3).

A real workload in a memory cgroup the test makes: 64 MiB of cold page cache (a file read
once by ``cat`` in the cgroup) beside the demo's anonymous and shared memory. The probe must
find a size below the resident usage and not below what reclaim cannot free, with no OOM
kill, and write the original ``memory.limit_in_bytes`` (set to 1 GiB here, so that
"restored" is not just "unlimited") and ``oom_kill_disable`` back after a normal end, an
error, SIGINT and SIGTERM; after SIGKILL the next capplan run writes them back. Each run
keeps its state files in a runtime directory of its own (``CAPPLAN_RUNTIME_DIR``), so the
other engineers' runs on this host neither see nor restore ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from capacity.measure.cgroup import cgroup_pids, detect_layout, leftover_cgroups

pytestmark = [pytest.mark.live]

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
ORIGINAL = str(1 << 30)

LAYOUT = detect_layout()
needs_v1 = pytest.mark.skipif(
    os.geteuid() != 0 or LAYOUT.v1_memory_mount is None,
    reason="needs root and the cgroup v1 memory controller (the guest tests pure v2)",
)


@dataclass
class Probed:
    directory: Path
    shown: str
    demo: subprocess.Popen[bytes]
    stat: dict[str, int]
    runtime: Path

    def knob(self, name: str) -> str:
        return (self.directory / name).read_text().strip()

    def oom(self) -> dict[str, int]:
        lines = self.knob("memory.oom_control").splitlines()
        return {k: int(v) for k, v in (line.split() for line in lines)}

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {
            **os.environ,
            "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
            "CAPPLAN_RUNTIME_DIR": str(self.runtime),
        }

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "capacity", "estimate", "--cgroup", self.shown,
            "--samples", "2", "--interval", "0.2", "--format", "json", *extra,
        ]  # fmt: skip

    def states(self) -> list[Path]:
        return sorted(self.runtime.glob("probe-*.json")) if self.runtime.exists() else []


def _enter(directory: Path) -> None:
    (directory / "cgroup.procs").write_text(str(os.getpid()))


@pytest.fixture
def probed(tmp_path: Path) -> Iterator[Probed]:
    assert LAYOUT.v1_memory_mount is not None
    name = f"probetest-{uuid.uuid4().hex[:8]}"
    directory = LAYOUT.v1_memory_mount / name
    directory.mkdir()
    demo: subprocess.Popen[bytes] | None = None
    try:
        (directory / "memory.limit_in_bytes").write_text(ORIGINAL)
        data = tmp_path / "data"
        with data.open("wb") as f:
            for _ in range(64):
                f.write(os.urandom(MIB))
            f.flush()
            os.fsync(f.fileno())
            # Out of the page cache, so that the read below charges it to the cgroup.
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        subprocess.run(
            ["cat", str(data)],
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda: _enter(directory),
            check=True,
        )
        demo = subprocess.Popen(
            [sys.executable, "-m", "capacity.demo", "--workers", "3", "--shared", "8M",
             "--private", "8M"],
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _enter(directory),  # noqa: PLW1509
        )  # fmt: skip
        assert demo.stdout is not None
        assert demo.stdout.readline().startswith(b"ready")
        time.sleep(0.5)
        raw = (directory / "memory.stat").read_text().splitlines()
        stat = {k: int(v) for k, v in (line.split() for line in raw)}
        assert stat["total_cache"] - stat["total_shmem"] >= 48 * MIB, stat
        yield Probed(directory, "/" + name, demo, stat, tmp_path / "run")
    finally:
        if demo is not None:
            with_group = demo.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(with_group, signal.SIGKILL)
            demo.wait(10)
            if demo.stdout is not None:
                demo.stdout.close()
        deadline = time.monotonic() + 10
        while cgroup_pids(directory) and time.monotonic() < deadline:
            for pid in cgroup_pids(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        directory.rmdir()


def _wait_lowered(p: Probed, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the probe has written its first step (the limit differs from the original)."""
    deadline = time.monotonic() + timeout
    while p.knob("memory.limit_in_bytes") == ORIGINAL:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the probe never lowered the limit"
        time.sleep(0.02)


def _assert_restored(p: Probed) -> None:
    assert p.knob("memory.limit_in_bytes") == ORIGINAL
    oom = p.oom()
    assert oom["oom_kill_disable"] == 0 and oom["oom_kill"] == 0, oom
    assert p.states() == []


@needs_v1
def test_probe_finds_cold_cache_not_below_what_reclaim_cannot_free(probed: Probed) -> None:
    out = subprocess.run(
        probed.argv("--probe"), capture_output=True, text=True, timeout=300, env=probed.env()
    )
    assert out.returncode == 0, out.stderr[-2000:]
    document = json.loads(out.stdout)
    (run,) = document["probe"]["runs"]
    print(json.dumps({k: v for k, v in run.items() if k != "steps"}))
    for step in run["steps"]:
        print(json.dumps(step))
    assert (run["version"], run["knob"], run["pressure_source"]) == (
        1, "memory.limit_in_bytes", "system",
    )  # fmt: skip
    assert run["original"] == ORIGINAL and run["restored"]
    assert run["instances"] == document["workload"]["worker_count"] == 3
    # Below the resident usage by most of the cold 64 MiB ...
    assert run["found_bytes"] <= run["start_usage_bytes"] - 32 * MIB, run
    # ... never below what reclaim cannot free (anonymous and shared memory).
    unreclaimable = probed.stat["total_rss"] + probed.stat["total_shmem"]
    assert run["found_bytes"] >= unreclaimable, (run, probed.stat)
    assert run["floor_bytes"] >= unreclaimable
    assert all(s["verdict"] in ("ok", "floor") for s in run["steps"][:-1]), run["steps"]
    _assert_restored(probed)


@needs_v1
@pytest.mark.parametrize("how", ["error", "SIGINT", "SIGTERM"])
def test_probe_writes_the_limit_back_on_error_and_signals(probed: Probed, how: str) -> None:
    process = subprocess.Popen(
        probed.argv("--probe"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=probed.env(),
    )
    try:
        _wait_lowered(probed, process)
        assert len(probed.states()) == 1  # written before the first change
        if how == "error":  # the workload goes away while it is probed
            os.killpg(probed.demo.pid, signal.SIGKILL)
        else:
            process.send_signal(getattr(signal, how))
        _stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    if how == "error":
        assert stderr.startswith("Error: ") and "exited while capplan probed" in stderr, stderr
        assert "Traceback" not in stderr
    _assert_restored(probed)


@needs_v1
def test_next_run_writes_back_what_a_sigkilled_probe_lowered(probed: Probed) -> None:
    process = subprocess.Popen(
        probed.argv("--probe"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=probed.env(),
    )
    try:
        _wait_lowered(probed, process)
        process.kill()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    # SIGKILL ran no cleanup: the limit is still lowered and the state file says so.
    assert probed.knob("memory.limit_in_bytes") != ORIGINAL
    assert probed.oom()["oom_kill_disable"] == 1
    assert len(probed.states()) == 1
    after = subprocess.run(
        probed.argv(), capture_output=True, text=True, timeout=300, env=probed.env()
    )
    assert after.returncode == 0, after.stderr[-2000:]
    assert f"(pid {process.pid}) that was killed" in after.stderr, after.stderr
    _assert_restored(probed)


@needs_v1
def test_launch_probe_fits_the_system_side_through_the_sizes_found(tmp_path: Path) -> None:
    for i in (1, 2, 3):  # 32 MiB each, out of the page cache: each instance reads its own
        with (tmp_path / f"data-{i}").open("wb") as f:
            f.write(os.urandom(32 * MIB))
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    script = tmp_path / "cold.py"
    script.write_text(
        "import sys, time\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    while f.read(1 << 20): pass\n"
        "anon = bytearray(16 << 20)\n"
        "for i in range(0, len(anon), 4096): anon[i] = 1\n"
        "while True: time.sleep(1)\n"
    )
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {tmp_path}/data-{{i}}"
    out = subprocess.run(
        [sys.executable, "-m", "capacity", "estimate", "--launch", command, "--instances", "3",
         "--probe", "--format", "json"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CAPPLAN_RUNTIME_DIR": str(tmp_path / "run")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    document = json.loads(out.stdout)
    probe, launch = document["probe"], document["launch"]
    assert [r["instances"] for r in probe["runs"]] == [1, 2, 3]
    assert probe["model"] is not None and probe["model"] == launch["system_model"]
    for run, step in zip(probe["runs"], launch["steps"], strict=True):
        assert run["restored"] and run["knob"] == "memory.limit_in_bytes"
        print(json.dumps(run))
        assert run["found_bytes"] < step["system_total_bytes"], (run, step)
        assert run["found_bytes"] >= step["cgroup"]["stat"]["anon"], (run, step)
    assert not list((tmp_path / "run").glob("probe-*.json"))
    assert not [p for p in leftover_cgroups("capplan-launch") if str(os.getpid()) in p.name]
