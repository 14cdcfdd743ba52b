"""Selecting the workload: ``--cmd`` as ``ps -C`` (plus argv[0] and exe), ``--pid`` with
descendants and thread ids, parents versus workers, kernel threads left out.

Live cases use real processes this test starts; name-matching corner cases use constructed
/proc trees under ``tmp_path``, where comm, argv and exe can be set independently.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from test_procfs import stat_line

from capacity.errors import SelectionError
from capacity.measure.workload import Selector, select_processes

KTHREAD_FLAGS = 0x00208040


@contextlib.contextmanager
def started(argv: list[str], executable: str = sys.executable) -> Iterator[list[int]]:
    """Start a helper that prints ``ready PID...``; kill its process group afterwards."""
    process = subprocess.Popen(
        argv, executable=executable, stdout=subprocess.PIPE, cwd=REPO, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        assert line and line[0] == "ready", line
        yield [int(pid) for pid in line[1:]]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.live
def test_pid_of_a_thread_selects_its_process() -> None:
    code = (
        "import os, threading, time\n"
        "threading.Thread(target=time.sleep, args=(120,), daemon=True).start()\n"
        "time.sleep(0.1)\n"
        "print('ready', os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    with started([sys.executable, "-c", code]) as (pid,):
        threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        tid = next(t for t in threads if t != pid)
        assert str(tid) not in os.listdir("/proc")  # /proc lists thread groups only
        selection = select_processes(Selector(pid=tid))
    assert selection.pids == (pid,)
    assert [m.role for m in selection.members] == ["parent"]


@pytest.mark.live
def test_cmd_matches_argv0_basename_and_splits_parent_from_workers() -> None:
    name = f"capplan-sel-{uuid.uuid4().hex[:8]}"  # unique: no other process has it
    argv = [f"/opt/fake/{name}", "-m", "capacity.demo", "--shared", "1M", "--private", "1M"]
    with started([*argv, "--workers", "3"]) as (parent, *workers):
        assert Path(f"/proc/{parent}/comm").read_text().strip() != name
        selection = select_processes(Selector(cmd=name))
    assert [m.pid for m in selection.parents] == [parent]
    assert sorted(m.pid for m in selection.workers) == sorted(workers)


@pytest.mark.live
def test_pid_selects_descendants_too() -> None:
    code = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        grandchild = os.fork()\n"  # a worker's own child is part of the workload
        "        time.sleep(120); os._exit(0)\n"
        "    kids.append(pid)\n"
        "time.sleep(0.3)\n"
        "print('ready', os.getpid(), *kids, flush=True)\n"
        "time.sleep(120)\n"
    )
    with started([sys.executable, "-c", code]) as (parent, *kids):
        selection = select_processes(Selector(pid=parent))
        grandchildren = [
            int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) in kids
        ]
    assert len(grandchildren) == 2
    assert set(selection.pids) == {parent, *kids, *grandchildren}
    assert [m.pid for m in selection.parents] == [parent]


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.live
def test_capplan_never_selects_itself() -> None:
    own = Path("/proc/self/comm").read_text().strip()
    selection = select_processes(Selector(cmd=own))
    assert os.getpid() not in selection.pids


# --------------------------------------------------------------------------- constructed trees


def add_process(
    root: Path,
    pid: int,
    comm: str,
    *,
    ppid: int = 1,
    argv: bytes = b"",
    exe: str | None = None,
    flags: int = 4194560,
    start: int = 1000,
) -> None:
    base = root / "proc" / str(pid)
    base.mkdir(parents=True)
    (base / "stat").write_bytes(stat_line(pid, comm, ppid=ppid, flags=flags, start=start + pid))
    (base / "cmdline").write_bytes(argv)
    if exe is not None:
        (base / "exe").write_text(exe)


def test_cmd_matches_the_executable_basename(tmp_path: Path) -> None:
    # php-fpm rewrites argv to "php-fpm: pool www"; comm is set by the pool to something else.
    add_process(tmp_path, 10, "php-fpm8.2", argv=b"php-fpm: master process\0")
    add_process(
        tmp_path, 11, "pool www", ppid=10, argv=b"php-fpm: pool www\0", exe="/usr/sbin/php-fpm8.2"
    )
    add_process(
        tmp_path,
        12,
        "pool www",
        ppid=10,
        argv=b"php-fpm: pool www\0",
        exe="/usr/sbin/php-fpm8.2 (deleted)",  # upgraded under it
    )
    add_process(tmp_path, 13, "pool www", ppid=1, argv=b"other\0", exe="/usr/bin/other")
    selection = select_processes(Selector(cmd="php-fpm8.2"), tmp_path)
    assert selection.pids == (10, 11, 12)
    assert [m.pid for m in selection.parents] == [10]


def test_cmd_compares_the_truncated_comm_as_ps_does(tmp_path: Path) -> None:
    add_process(tmp_path, 20, "very-long-daemo")  # the kernel keeps 15 characters
    assert select_processes(Selector(cmd="very-long-daemon-name"), tmp_path).pids == (20,)


def test_cmd_ignores_kernel_threads_and_finds_every_parent(tmp_path: Path) -> None:
    add_process(tmp_path, 2, "gunicorn", ppid=0, flags=KTHREAD_FLAGS)  # a kthread, same name
    add_process(tmp_path, 30, "python3", argv=b"/srv/venv/bin/gunicorn\0app:app\0")
    add_process(tmp_path, 31, "python3", ppid=30, argv=b"/srv/venv/bin/gunicorn\0app:app\0")
    add_process(tmp_path, 40, "python3", argv=b"/srv/b/bin/gunicorn\0b:app\0")
    add_process(tmp_path, 41, "python3", ppid=40, argv=b"/srv/b/bin/gunicorn\0b:app\0")
    add_process(tmp_path, 50, "python3", argv=b"python3\0-m\0http.server\0")
    selection = select_processes(Selector(cmd="gunicorn"), tmp_path)
    assert selection.pids == (30, 31, 40, 41)
    assert [m.pid for m in selection.parents] == [30, 40]
    assert [m.pid for m in selection.workers] == [31, 41]


def test_pid_refuses_a_kernel_thread_and_a_missing_pid(tmp_path: Path) -> None:
    add_process(tmp_path, 2, "kthreadd", ppid=0, flags=KTHREAD_FLAGS)
    with pytest.raises(SelectionError, match="kernel thread"):
        select_processes(Selector(pid=2), tmp_path)
    with pytest.raises(SelectionError, match="no process with pid 99"):
        select_processes(Selector(pid=99), tmp_path)


def test_selector_needs_exactly_one() -> None:
    with pytest.raises(SelectionError):
        Selector()
    with pytest.raises(SelectionError):
        Selector(cmd="a", pid=1)
