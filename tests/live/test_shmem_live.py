"""Shared memory at its configured size (issue 14), on real processes and a real PostgreSQL.

``shm_workload.py`` maps one segment of each kind (shared anonymous, POSIX /dev/shm, SysV,
memfd) of a known size, each touched only in part, and forks three workers that touch 1 MiB
more of the shared anonymous one alone; PostgreSQL 15 right after start has touched a small
part of its main segment (shared_buffers). In both, capplan's fixed cost holds every segment
at its mapped size by default and only the touched pages with ``--shm touched``, and the
workers' cost is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from capacity.testing import servers
from capacity.testing.servers_postgresql import postgresql, postgresql_bindir

MiB = 1024 * 1024
WORKLOAD = Path(__file__).with_name("shm_workload.py")
# (kind, mapped size, touched by the parent): as shm_workload.py maps them.
SEGMENTS = {
    "anonymous": (64 * MiB, 16 * MiB),
    "posix": (32 * MiB, 8 * MiB),
    "sysv": (16 * MiB, 4 * MiB),
    "memfd": (8 * MiB, 2 * MiB),
}
WORKERS, WORKER_OWN, WORKER_SHM = 3, 4 * MiB, 1 * MiB


@contextlib.contextmanager
def shm_workload() -> Iterator[tuple[int, list[int]]]:
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("ready"):
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"shm workload failed: {line!r} {err}")
        parent, *workers = (int(x) for x in line.split()[1:])
        yield parent, workers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def estimate(*args: str) -> dict[str, Any]:
    result = run_cli("estimate", *args, "--samples", "2", "--interval", "0.3", "--format", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", ["smaps", "exact"])
def test_each_kind_of_segment_counts_at_its_mapped_size_unless_touched_is_asked(
    method: str,
) -> None:
    if method == "exact" and os.geteuid() != 0:
        pytest.skip("the exact method needs root")
    with shm_workload() as (parent, workers):
        configured = estimate("--pid", str(parent), "--method", method, "--shm", "configured")
        touched = estimate("--pid", str(parent), "--method", method, "--shm", "touched")
        auto = estimate("--pid", str(parent), "--method", method)  # the default
        text = run_cli(
            "estimate", "--pid", str(parent), "--samples", "1", "--method", method,
            "--shm", "configured",
        )  # fmt: skip
    assert configured["workload"]["worker_count"] == len(workers) == WORKERS
    shared = configured["shared_memory"]
    assert shared["choice"] == "configured" and touched["shared_memory"]["choice"] == "touched"
    by_kind = {s["kind"]: s for s in shared["segments"]}
    assert sorted(by_kind) == sorted(SEGMENTS)
    for kind, (size, parent_touched) in SEGMENTS.items():
        segment = by_kind[kind]
        extra = WORKERS * WORKER_SHM if kind == "anonymous" else 0
        assert segment["configured_bytes"] == segment["counted_bytes"] == size
        assert segment["processes"] == 1 + WORKERS  # one segment, counted once
        assert segment["touched_bytes"] == pytest.approx(parent_touched + extra, abs=64 * 1024)
    # Touched replaced by configured, not added: the fixed costs differ by exactly the
    # untouched parts.
    untouched = sum(s["configured_bytes"] - s["touched_bytes"] for s in shared["segments"])
    assert shared["untouched_bytes"] == pytest.approx(untouched, rel=0.01)
    difference = configured["model"]["fixed_bytes"] - touched["model"]["fixed_bytes"]
    assert difference == pytest.approx(untouched, rel=0.01)
    assert touched["model"]["breakdown"]["fixed_shm_untouched_bytes"] == 0
    # The default: the point answer's fixed cost as touched, the untouched rest kept by the
    # conservative answer only.
    assert auto["shared_memory"]["choice"] == "auto"
    assert auto["model"]["fixed_bytes"] == pytest.approx(touched["model"]["fixed_bytes"], rel=0.01)
    assert auto["model"]["shm_kept_bytes"] == pytest.approx(untouched, rel=0.01)
    assert auto["shared_memory"]["kept_bytes"] == auto["model"]["shm_kept_bytes"]
    # Every worker's 1 MiB of the segment is paid once, in fixed: its cost is its own 4 MiB
    # (and kernel memory), the same under either choice.
    assert shared["moved_bytes"] == pytest.approx(WORKERS * WORKER_SHM, abs=64 * 1024)
    for doc in (configured, touched):
        own = doc["model"]["breakdown"]["per_instance_uss_bytes"]
        assert own == pytest.approx(WORKER_OWN, abs=300 * 1024)
    assert configured["model"]["per_instance_bytes"] == pytest.approx(
        touched["model"]["per_instance_bytes"], rel=0.01
    )
    assert text.code == 0, text.stderr
    assert "configured 64.0 MiB, touched 19.0 MiB" in text.stdout
    assert "/memfd:capplan-test (memfd)" in text.stdout


def test_postgresql_shared_buffers_count_in_full_right_after_start() -> None:
    """A fresh cluster with shared_buffers 64MB and two idle client backends: its main
    segment (shared_buffers and the rest) is mapped whole, touched in small part."""
    try:
        postgresql_bindir()
    except servers.ServerUnavailable as missing:
        pytest.skip(str(missing))
    with postgresql(shared_buffers="64MB") as pg, idle_clients(pg, 2):
        configured = estimate("--pid", str(pg.pid), "--shm", "configured")
        touched = estimate("--pid", str(pg.pid), "--shm", "touched")
        auto = estimate("--pid", str(pg.pid))
    main = configured["shared_memory"]["segments"][0]  # the largest
    assert main["kind"] == "anonymous"
    assert main["configured_bytes"] > 64 * MiB  # shared_buffers plus the rest of the segment
    assert main["touched_bytes"] < main["configured_bytes"] / 2
    untouched = configured["shared_memory"]["untouched_bytes"]
    assert untouched > 32 * MiB
    # The fixed cost holds the whole segment by default, the touched pages with the flag;
    # the two samples of each run touch a little more, hence the margin.
    difference = configured["model"]["fixed_bytes"] - touched["model"]["fixed_bytes"]
    assert difference == pytest.approx(untouched, rel=0.05)
    assert configured["model"]["fixed_bytes"] > main["configured_bytes"]
    assert touched["model"]["fixed_bytes"] < main["configured_bytes"]
    # By default the conservative answer keeps the segment's untouched rest, the point not.
    assert auto["model"]["shm_kept_bytes"] == pytest.approx(untouched, rel=0.05)
    assert auto["model"]["fixed_bytes"] < main["configured_bytes"]
    # Two client backends are a low-confidence fit (issue 14's part 4): its max_connections
    # line says so on the line, with the command that would fix it.
    (group,) = configured["groups"]
    assert group["model"]["confidence"] == "low"
    (line,) = group["suggestion"]["lines"]
    count = group["prediction"]["max_instances_conservative"]
    assert line.startswith(f"max_connections = {count}   # low confidence: only 2 workers")
    assert f"to fix: measure more workers or more samples: capplan estimate --pid {pg.pid}" in line


@contextlib.contextmanager
def idle_clients(pg: servers.Server, count: int) -> Iterator[None]:
    """``count`` psql sessions connected and idle (one client backend each)."""
    from capacity.testing.servers_postgresql import PORT, client_backends

    psql = str(postgresql_bindir() / "psql")
    env = {**os.environ, "PGHOST": str(pg.workdir), "PGPORT": str(PORT), "PGUSER": "postgres"}
    sessions = [
        subprocess.Popen(
            [psql, "-X", "-q", "postgres"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        servers.wait_until(
            lambda: len(client_backends(pg)) >= count, 30, "psql sessions", pg.process, pg.log
        )
        yield
    finally:
        for session in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(session.pid, signal.SIGKILL)
            session.wait(timeout=10)
            if session.stdin is not None:
                session.stdin.close()


MARKUP_WORKLOAD = """
import mmap, os, signal, time
fd = os.memfd_create("seg\\x1b[31m<b>")
os.ftruncate(fd, 1 << 20)
m = mmap.mmap(fd, 1 << 20, flags=mmap.MAP_SHARED)
m[0] = 1
kids = []
for n in range(2):
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
time.sleep(0.3)
print("ready", os.getpid(), flush=True)
signal.pause()
"""


def test_a_segment_name_is_host_text_escaped_in_the_output() -> None:
    """A memfd's name is whatever the program chose: raw in the JSON, escaped on the
    terminal (render/escape)."""
    process = subprocess.Popen(
        [sys.executable, "-c", MARKUP_WORKLOAD], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("ready"), line
        parent = line.split()[1]
        doc = estimate("--pid", parent, "--method", "smaps")
        text = run_cli("estimate", "--pid", parent, "--samples", "1", "--method", "smaps")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    (segment,) = doc["shared_memory"]["segments"]
    assert segment["name"] == "/memfd:seg\x1b[31m<b>"
    assert text.code == 0, text.stderr
    (shown,) = [line for line in text.stdout.splitlines() if "/memfd:seg" in line]
    assert "\x1b" not in shown and "(memfd): configured 1.00 MiB" in shown
