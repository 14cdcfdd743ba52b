"""Shared fixtures: real workloads with known sizes, started and always stopped by the tests.

Workloads print a ``ready`` line when their memory is in place; we wait for that line, never
for a fixed sleep, and kill the whole process group in ``finally`` so a failing assertion
cannot leave an orphan behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Subprocesses (the CLI, the demo workload) must import this checkout's package, not an
# installed copy elsewhere.
os.environ["PYTHONPATH"] = str(REPO) + (
    os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
)

MiB = 1024 * 1024


@dataclasses.dataclass
class RunningWorkload:
    process: subprocess.Popen[bytes]
    parent: int
    workers: list[int]


@contextlib.contextmanager
def start_demo(*args: str, timeout: float = 60.0) -> Iterator[RunningWorkload]:
    """Start ``python -m capacity.demo ARGS`` and stop its whole process group afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "capacity.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("ready"):
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"demo workload failed: {line!r} {err}")
        pids = [int(x) for x in line.split()[1:]]
        yield RunningWorkload(process=process, parent=pids[0], workers=pids[1:])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def demo() -> Callable[..., contextlib.AbstractContextManager[RunningWorkload]]:
    return start_demo


@dataclasses.dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, timeout: float = 300.0, env: dict[str, str] | None = None) -> CliResult:
    """Run ``capplan ARGS`` as a real process (``python -m capacity``), as users do."""
    completed = subprocess.run(
        [sys.executable, "-m", "capacity", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def estimate_json(pid: int, *extra: str, samples: int = 3, interval: float = 0.2) -> dict[str, Any]:
    """``capplan estimate --pid PID --format json`` as a parsed document; it must succeed."""
    result = run_cli(
        "estimate", "--pid", str(pid), "--samples", str(samples), "--interval", str(interval),
        "--format", "json", *extra,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    return run_cli


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(
    not is_root(), reason="needs root (pagemap frames, cgroups, other users' /proc)"
)


# Markers by folder: tests/live -> live, tests/validation -> live + validation,
# tests/hosts -> hosts. A test elsewhere that needs root or real processes says
# @pytest.mark.live itself. `pytest -m "not live"` is then the fast set.
FOLDER_MARKERS = {
    "live": ("live",),
    "validation": ("live", "validation"),
    "hosts": ("hosts",),
    "guest": ("live",),
}


# A test that starts a process (the CLI, the demo, a server) is live wherever it stands:
# each start costs an interpreter with numpy and scipy, and the fast set is for seconds.
STARTS_A_PROCESS = ("run_cli(", "start_demo(", "subprocess.", "estimate_json(", "cli(")
STARTS_BY_FIXTURE = {"cli", "demo"}


def _starts_a_process(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    if function is None:
        return False
    if STARTS_BY_FIXTURE & set(getattr(item, "fixturenames", ())):
        return True
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in STARTS_A_PROCESS)


# The guest tests (issue 12): tests/guest/v2 needs a pure cgroup v2 host with memory enabled at
# the root, as root: it runs inside scripts/guest and skips elsewhere. (One conftest for the
# whole tree: a second module named conftest would shadow this one's helpers.)
CGROUP = Path("/sys/fs/cgroup")


def pure_v2_reason() -> str | None:
    """Why this host cannot run the v2 tests, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    if not (CGROUP / "cgroup.controllers").exists():
        return "/sys/fs/cgroup is not a cgroup v2 root (hybrid or v1)"
    if any(
        line.split()[2].startswith("cgroup") and line.split()[2] != "cgroup2"
        for line in Path("/proc/mounts").read_text().splitlines()
    ):
        return "a cgroup v1 hierarchy is mounted: not pure v2"
    if "memory" not in (CGROUP / "cgroup.subtree_control").read_text().split():
        return "the memory controller is not enabled in the root's cgroup.subtree_control"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    v2_reason = pure_v2_reason()
    for item in items:
        try:
            folder = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        for name in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(getattr(pytest.mark, name))
        if folder == "guest":
            parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
            if len(parts) > 2 and parts[1] == "v2":
                item.add_marker(pytest.mark.v2)
                if v2_reason is not None:
                    item.add_marker(
                        pytest.mark.skip(reason=f"v2 test outside a pure v2 host: {v2_reason}")
                    )
            else:
                item.add_marker(pytest.mark.guest)
        if folder in ("unit", "hosts") and _starts_a_process(item):
            item.add_marker(pytest.mark.live)
