"""Every usage error of ``capplan estimate``: exit 2, a short message, no traceback, no stdout.

Plus what an operator sees around a run: a progress bar only on a terminal, and Ctrl-C or
SIGTERM ending the run with 130 or 143 once every process capplan started is gone. Most
cases run on a captured host tree (``--root``) so that they are quick and do not depend on
what else runs on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO, CliResult, run_cli

from capacity.errors import CapplanError
from capacity.measure import procfs

DEMO = FIXTURES / "hosts" / "demo"
DEMO_ARGS = ("--root", str(DEMO), "--pid", "18121", "--samples", "1")


def assert_usage_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--cmd", "apache2", "--pid", "1"),
        ("--demo", "--pid", "1"),
        ("--demo", "--cmd", "apache2"),
        ("--demo", "--cmd", "apache2", "--pid", "1"),
        ("--cgroup", "/system.slice/x.service", "--pid", "1"),
        ("--unit", "x", "--cgroup", "/system.slice/x.service"),
        ("--unit", "x", "--demo"),
    ],
    ids=["none", "cmd+pid", "demo+pid", "demo+cmd", "all three", "cgroup+pid", "unit+cgroup",
         "unit+demo"],
)  # fmt: skip
def test_exactly_one_selector(args: tuple[str, ...]) -> None:
    result = run_cli("estimate", *args)
    assert_usage_error(
        result,
        "give exactly one of --cmd NAME, --pid PID, --cgroup PATH, --unit NAME, --demo or "
        "--launch COMMAND",
    )


@pytest.mark.live
def test_unknown_name_lists_the_closest_running_names() -> None:
    own = Path("/proc/self/comm").read_text().strip()  # this test's own process is running
    typo = own[:2] + own[3:]
    result = run_cli("estimate", "--cmd", typo, "--samples", "1")
    assert_usage_error(result, f"no running process is named {typo!r}", "closest:")
    closest = result.stderr.split("closest: ", 1)[1].split(")")[0].split(", ")
    assert own in closest


def test_unknown_name_on_a_captured_host() -> None:
    result = run_cli(
        "estimate", "--root", str(FIXTURES / "hosts/apache2-prefork"), "--cmd", "apache"
    )
    assert_usage_error(result, "no running process is named 'apache' (closest: apache2)")
    result = run_cli("estimate", "--root", str(FIXTURES / "hosts/apache2-prefork"), "--cmd", "zzz")
    assert_usage_error(result, "(closest: apache2)")  # nothing alike: still names what runs


@pytest.mark.live
def test_nonexistent_pid() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    result = run_cli("estimate", "--pid", str(pid_max), "--samples", "1")
    assert_usage_error(result, f"no process with pid {pid_max}")


@pytest.mark.live
def test_kernel_thread_pid() -> None:
    kthread = next((pid for pid in procfs.iter_pids() if _is_kthread(pid)), None)
    if kthread is None:
        pytest.skip("no kernel thread visible (a PID namespace hides them)")
    result = run_cli("estimate", "--pid", str(kthread), "--samples", "1")
    assert_usage_error(result, f"pid {kthread} (", ") is a kernel thread")


def _is_kthread(pid: int) -> bool:
    try:
        return procfs.read_stat(pid).is_kernel_thread
    except CapplanError:
        return False


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--memory", "12Q", "unknown unit 'Q'"),
        ("--memory", "-1G", "bad size '-1G'"),
        ("--memory", "lots", "bad size 'lots'"),
        ("--memory", "", "bad size ''"),
        ("--reserve", "120%", "must be below 100%"),
        ("--reserve", "10", None),  # a bare number is bytes: fine as an option
        ("--reserve", "ten%", "bad percentage 'ten%'"),
        ("--reserve", "5X", "unknown unit 'X'"),
        ("--samples", "0", "--samples"),
        ("--samples", "many", "--samples"),
        ("--interval", "-1", "--interval"),
        ("--pid", "abc", "--pid"),
        ("--format", "yaml", "--format"),
    ],
)
def test_bad_option_values(option: str, value: str, needle: str | None) -> None:
    args = dict(zip(DEMO_ARGS[::2], DEMO_ARGS[1::2], strict=True))
    args[option] = value
    result = run_cli("estimate", *[item for pair in args.items() for item in pair])
    if needle is None:
        assert result.code == 0, result.stderr
        return
    assert_usage_error(result, needle)


def test_budget_errors_after_measuring() -> None:
    assert_usage_error(run_cli("estimate", *DEMO_ARGS, "--memory", "0"), "--memory 0")
    assert_usage_error(
        run_cli("estimate", *DEMO_ARGS, "--memory", "1M"), "is not smaller than the budget"
    )


def test_save_never_replaces_a_file_without_force(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    target.write_text("keep me")
    result = run_cli("estimate", *DEMO_ARGS, "--save", str(target))
    assert_usage_error(result, f"{target} already exists")
    assert "--force" in result.stderr
    assert target.read_text() == "keep me"
    result = run_cli("estimate", *DEMO_ARGS, "--save", str(target), "--force")
    assert result.code == 0, result.stderr
    assert json.loads(target.read_text())["kind"] == "capplan.estimate"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]  # no temporary left


def test_save_to_an_unwritable_place_prints_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("estimate", *DEMO_ARGS, "--format", "json", "--save", f"{blocker}/m.json")
    assert_usage_error(result, "cannot write")
    result = run_cli("estimate", *DEMO_ARGS, "--save", str(tmp_path), "--force")
    assert_usage_error(result, "is a directory")


def test_root_must_be_a_host_tree(tmp_path: Path) -> None:
    result = run_cli("estimate", "--root", str(tmp_path / "missing"), "--pid", "1")
    assert_usage_error(result, "--root", "does not exist")
    result = run_cli("estimate", "--root", str(tmp_path), "--pid", "1")
    assert_usage_error(result, f"cannot list {tmp_path}/proc")
    assert "Hint: --root must mirror /" in result.stderr
    result = run_cli("estimate", "--demo", "--root", str(DEMO))
    assert_usage_error(result, "--demo, --launch and --load run on this host")


@pytest.mark.live
def test_debug_variable_is_the_only_way_to_a_traceback() -> None:
    pid_max = Path("/proc/sys/kernel/pid_max").read_text().strip()
    result = run_cli("estimate", "--pid", pid_max, env={"CAPPLAN_DEBUG": "1"})
    assert result.code != 0 and "Traceback" in result.stderr


# --------------------------------------------------------------------------- progress


def test_no_progress_bar_when_stderr_is_not_a_terminal() -> None:
    # FORCE_COLOR / TTY_COMPATIBLE make rich call a pipe a terminal; capplan must not.
    for env in ({}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}):
        result = run_cli("estimate", *DEMO_ARGS[:-1], "3", "--interval", "0.2", env=env)
        assert result.code == 0, result.stderr
        assert result.stderr == "", (env, result.stderr)


@pytest.mark.live
def test_progress_bar_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "capacity",
                "estimate",
                *DEMO_ARGS[:-1],
                "3",
                "--interval",
                "0.4",
            ],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        os.close(terminal)
        seen = b""
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    assert b"sampling" in seen


# --------------------------------------------------------------------------- signals


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{name}/stat").read_bytes().rpartition(b")")[2].split()
                if int(fields[1]) == pid:
                    found.append(int(name))
    return found


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _still_running(identities: dict[int, int | None]) -> list[int]:
    """Which of these processes still exist (same pid and start time: not a reused pid).

    An orphaned worker's zombie may linger a moment until init reaps it, so we allow a
    few seconds for the list to empty; a process capplan failed to stop stays in it.
    """
    deadline = time.monotonic() + 5
    while True:
        left = [
            pid
            for pid, ticks in identities.items()
            if ticks is not None and _start_ticks(pid) == ticks
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.live
def test_signal_during_demo_stops_everything(signum: int, code: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "capacity", "estimate", "--demo", "--samples", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,  # its own process group: the signal goes where Ctrl-C would
    )
    demo: dict[int, int | None] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            parents = _children(process.pid)
            workers = _children(parents[0]) if parents else []
            if len(workers) == 4:  # the demo's default
                demo = {pid: _start_ticks(pid) for pid in [parents[0], *workers]}
                break
            time.sleep(0.05)
        assert demo, "the demo never started its 4 workers"
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=60)
        left = _still_running(demo)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Whatever the outcome, take our demo's processes down (identity-checked).
        for pid, ticks in demo.items():
            if ticks is not None and _start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == code, stderr
    assert stdout == b""
    assert b"Traceback" not in stderr
    assert left == []
