"""Nothing capplan starts outlives it, even after SIGKILL; bounded output from what it starts.

Real processes, real cgroups, real signals (issue 11). capplan runs as ``python -m capacity``
with an environment variable that only this test's run carries, so the processes of one run
are found by it even after they have been reparented; its cgroups are found by capplan's pid
in their names. Other engineers run capplan on this host at the same time: a leftover of
ours may be reaped by their run before ours gets to it, so the tests that need our run to
be the one that reports make the leftover themselves, just before they start it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capacity.measure.cgroup import (
    candidate_parents,
    cgroup_pids,
    leftover_cgroups,
    own_identity,
    pid_namespace,
)
from capacity.measure.procfs import read_stat

pytestmark = [pytest.mark.live]

REPO = Path(__file__).resolve().parents[2]
PY = shlex.quote(sys.executable)
SERVER = f"{PY} -m capacity.demo --port {{port}} --workers 0 --shared 0 --private 4M"
TOKEN = "CAPPLAN_LEFTOVER_TEST"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups)")


def env(token: str, **extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
        TOKEN: token,
        **extra,
    }


def capplan(*args: str, token: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capacity", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env=env(token, **extra),
    )


def processes_of_run(token: str) -> dict[int, str]:
    """Every live (not zombie) process whose environment carries ``token``: pid -> comm."""
    marker = f"{TOKEN}={token}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if marker in environ.split(b"\0") and stat.rsplit(")", 1)[1].split()[0] not in "ZX":
            found[int(entry)] = stat.split("(", 1)[1].rsplit(")", 1)[0]
    return found


def cgroups_of(pid: int) -> list[Path]:
    return [p for p in leftover_cgroups("capplan") if f"-{pid}-" in p.name]


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def kill_cgroup(path: Path) -> None:
    """Test cleanup: SIGKILL what is in ``path`` and remove it, children first."""
    if not path.exists():
        return
    directories = sorted(
        [path, *(p for p in path.rglob("*") if p.is_dir())], key=lambda p: -len(p.parts)
    )
    deadline = time.monotonic() + 10
    for directory in directories:
        while directory.exists():
            for pid in cgroup_pids(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError, OSError):
                directory.rmdir()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)


@pytest.fixture
def token() -> Iterator[str]:
    """A token for one test's capplan runs; whatever carries it is killed afterwards, and
    the cgroups of every capplan the test started are removed."""
    value = uuid.uuid4().hex
    yield value
    for pid in processes_of_run(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def killed_pids() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        for path in cgroups_of(pid):
            kill_cgroup(path)


def start_capplan(*args: str, token: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "capacity", "estimate", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=env(token),
    )


def instances(token: str, capplan_pid: int) -> set[int]:
    return set(processes_of_run(token)) - {capplan_pid}


def next_run(token: str) -> subprocess.CompletedProcess[str]:
    """A short run of capplan that measures: the first thing it does is reap."""
    return capplan(
        "estimate", "--launch", SERVER, "--instances", "3", "--settle", "0.2", token=token
    )


# --------------------------------------------------------------------------- SIGKILL


@needs_root
@pytest.mark.parametrize("moment", ["after-the-first-instance", "mid-sampling"])
def test_after_sigkill_the_instances_die_and_the_next_run_reaps_the_cgroup(
    moment: str, token: str, killed_pids: list[int]
) -> None:
    extra = ("--samples", "50", "--interval", "0.1") if moment == "mid-sampling" else ()
    run = start_capplan(
        "--launch", SERVER, "--instances", "4", "--settle", "0.5", *extra, token=token
    )
    killed_pids.append(run.pid)
    try:
        wanted = 1 if moment == "after-the-first-instance" else 4
        wait_for(lambda: len(instances(token, run.pid)) >= wanted)
        if moment == "mid-sampling":
            time.sleep(1.0)  # four instances are up: capplan samples them every 0.1 s
        assert cgroups_of(run.pid), "the run's cgroup should exist while it runs"
        started = instances(token, run.pid)
    finally:
        run.kill()
        run.wait(timeout=30)
    # PR_SET_PDEATHSIG: each instance (one process each) dies with capplan, by itself.
    wait_for(lambda: not instances(token, run.pid), timeout=10)
    assert started
    # The run's cgroup is still there (nobody ran its cleanup) until a capplan run reaps it:
    # ours, or (on a busy host) another engineer's that started first.
    result = next_run(token)
    assert result.returncode == 0, result.stderr
    assert cgroups_of(run.pid) == []
    assert "Traceback" not in result.stderr
    for line in result.stderr.splitlines():
        if line.startswith("Cleaned up after an earlier capplan run"):
            assert line.count("\n") == 0 and "that was killed:" in line


@needs_root
def test_a_dead_runs_cgroup_is_reaped_and_a_live_runs_is_not(token: str) -> None:
    """A cgroup named as a capplan run that is gone (a pid that exited), with a sleeping
    process inside and an instance cgroup below it; beside it one named as a run that is
    alive (this test process), with a sleeper too. The next run kills the first one's
    sleeper, removes it and says so in one line; the live run's is left alone."""
    version, parent, _mount = next(
        (v, p, m) for v, p, m in candidate_parents() if os.access(p, os.W_OK)
    )
    gone = subprocess.Popen(["true"])
    gone_start = read_stat(gone.pid).start_ticks if os.path.exists(f"/proc/{gone.pid}") else 0
    gone.wait()
    namespace = pid_namespace() or 0
    dead = parent / f"capplan-launch-{gone.pid}-{gone_start}-{namespace}-1"
    me = own_identity()
    alive = parent / f"capplan-launch-{me.pid}-{me.start_ticks}-{namespace}-99"
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        dead.mkdir()
        (dead / "instance-1").mkdir()
        alive.mkdir()
        for target in (dead / "instance-1", dead, alive):
            sleeper = subprocess.Popen(["sleep", "600"], env=env(token))
            sleepers.append(sleeper)
            (target / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        result = next_run(token)
        assert result.returncode == 0, result.stderr
        lines = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("Cleaned up after an earlier capplan run")
        ]
        if dead.exists() or any(f"(pid {gone.pid})" in line for line in lines):
            # Not reaped by another engineer's run first: ours did it, and said so.
            assert [line for line in lines if f"(pid {gone.pid})" in line] == [
                f"Cleaned up after an earlier capplan run (pid {gone.pid}) that was killed: "
                f"2 processes, cgroup {dead}"
            ]
        assert not dead.exists()
        for sleeper in sleepers[:2]:
            assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert alive.exists() and sleepers[2].poll() is None
        assert cgroup_pids(alive) == {sleepers[2].pid}
        assert version in (1, 2)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait(timeout=10)
        kill_cgroup(dead)
        kill_cgroup(alive)


@needs_root
def test_the_demo_dies_with_capplan(token: str) -> None:
    """``estimate --demo``: the demo's parent has PR_SET_PDEATHSIG, its workers exit when
    their parent does."""
    run = start_capplan("--demo", "--samples", "100", "--interval", "0.1", token=token)
    try:
        wait_for(lambda: len(instances(token, run.pid)) >= 5)  # a parent and 4 workers
    finally:
        run.kill()
        run.wait(timeout=30)
    wait_for(lambda: not instances(token, run.pid), timeout=10)


# --------------------------------------------------------------------------- bounded stderr


@needs_root
def test_an_instance_flooding_stderr_keeps_a_bounded_tail_in_memory(
    tmp_path: Path, token: str
) -> None:
    """An instance writes ~100 MB to stderr in a loop, then a last line, and exits: the
    error shows the last lines, its stderr was a pipe (not a file), and nothing was written
    to the temporary directory."""
    flood = tmp_path / "flood.py"
    flood.write_text(
        "import os, stat, sys\n"
        "kind = 'a pipe' if stat.S_ISFIFO(os.fstat(2).st_mode) else 'not a pipe'\n"
        "line = b'x' * 1023 + b'\\n'\n"
        "for _ in range(100 * 1024):\n"
        "    os.write(2, line)\n"
        "sys.stderr.write(f'last line: my stderr is {kind}\\n')\n"
        "sys.exit(5)\n"
    )
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = capplan(
        "estimate", "--launch", f"{PY} {flood}", "--instances", "3", "--settle", "60",
        token=token, TMPDIR=str(temporary),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "exited with status 5" in errors[0]
    assert "last line: my stderr is a pipe" in errors[0]
    assert "xxxxxxxx" in errors[0]  # the lines before it are shown too
    assert len(result.stderr) < 4096  # the tail, not the whole flood
    assert list(temporary.iterdir()) == []
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- unexecutable


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert any(line.startswith("Hint:") for line in lines), result.stderr
    return errors[0]


def test_a_launch_command_that_does_not_exist_is_a_one_line_error(token: str) -> None:
    error = one_line_error(
        capplan("estimate", "--launch", "/nonexistent/x", "--instances", "3", token=token)
    )
    assert "/nonexistent/x" in error and "no such file" in error


def test_a_launch_command_without_the_execute_bit_is_a_one_line_error(
    tmp_path: Path, token: str
) -> None:
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o644)
    error = one_line_error(
        capplan("estimate", "--launch", str(script), "--instances", "3", token=token)
    )
    assert "permission denied" in error


def test_a_load_command_that_cannot_run_is_a_one_line_error(tmp_path: Path, token: str) -> None:
    script = tmp_path / "load.sh"
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o644)
    result = capplan(
        "estimate", "--launch", SERVER, "--instances", "3", "--settle", "0.2",
        "--load", str(script), token=token,
    )  # fmt: skip
    error = one_line_error(result)
    assert "permission denied" in error
    assert processes_of_run(token) == {}


def test_demo_with_an_interpreter_that_cannot_be_executed_is_a_one_line_error(
    tmp_path: Path, token: str
) -> None:
    """The interpreter capplan runs under is started again for the demo; make it a file
    without the execute bit (as a noexec mount or a removed x bit would)."""
    interpreter = tmp_path / "python3"
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o644)
    program = (
        "import sys\n"
        f"sys.executable = {str(interpreter)!r}\n"
        "sys.argv = ['capplan', 'estimate', '--demo']\n"
        "from capacity.cli import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env(token),
    )
    error = one_line_error(result)
    assert str(interpreter) in error and "permission denied" in error
