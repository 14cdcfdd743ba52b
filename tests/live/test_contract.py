"""Contracts over the live host: every process, and processes that come and go.

As psutil's ``test_process_all``: for every pid in /proc, each reader either returns a record
whose figures hold together, or raises exactly one of the three exceptions that mean
"gone", "zombie" or "forbidden". Anything else (a ParseError, a bare OSError, a negative
size) is a bug that a real host would one day hit.

The churn test forks and reaps short-lived children as fast as it can while the sampler
snapshots the tree again and again: processes vanish between listing and reading, turn
zombie, and must be skipped and counted, never crash the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from capacity.errors import AccessDenied, NoSuchProcess, ZombieProcess
from capacity.measure import procfs, procparse
from capacity.measure.sampler import Sampler
from capacity.measure.workload import Selector
from capacity.records import MemoryRollup

ALLOWED = (NoSuchProcess, ZombieProcess, AccessDenied)
HAS_ROLLUP = Path("/proc/self/smaps_rollup").exists()  # Linux 4.14+
HAS_RSS_SPLIT = b"RssAnon:" in Path("/proc/self/status").read_bytes()  # Linux 4.5+
KiB = 1024


def check_rollup(pid: int, rollup: MemoryRollup) -> None:
    sizes = {f.name: getattr(rollup, f.name) for f in dataclasses.fields(rollup)}
    assert all(value >= 0 for value in sizes.values()), (pid, sizes)
    # Every resident page is counted once as shared or private, clean or dirty.
    assert rollup.rss_bytes == rollup.shared_bytes + rollup.uss_bytes, (pid, sizes)
    # The rollup truncates Pss to whole kB: a private page's full share can read 1 kB low.
    assert rollup.uss_bytes <= rollup.pss_bytes + KiB, (pid, sizes)
    assert rollup.pss_bytes <= rollup.rss_bytes, (pid, sizes)
    assert rollup.anonymous_bytes <= rollup.rss_bytes, (pid, sizes)
    if rollup.pss_anon_bytes or rollup.pss_file_bytes or rollup.pss_shmem_bytes:
        split = rollup.pss_anon_bytes + rollup.pss_file_bytes + rollup.pss_shmem_bytes
        assert abs(split - rollup.pss_bytes) <= 3 * KiB, (pid, sizes)


def test_every_live_process_reads_or_raises_a_known_error() -> None:
    outcomes: dict[str, int] = {}
    readable: set[int] = set()
    for pid in procfs.iter_pids():
        try:
            stat = procfs.read_stat(pid)
            assert stat.pid == pid and stat.num_threads >= 1 and stat.start_ticks >= 0
            assert stat.ppid >= 0 and stat.rss_pages >= 0
            status = procfs.read_status(pid)
            assert status.tgid == pid and status.pid == pid and status.threads >= 1
            split = status.rss_anon_bytes + status.rss_file_bytes + status.rss_shmem_bytes
            if HAS_RSS_SPLIT:  # VmRSS is the sum of the three (fs/proc/task_mmu.c)
                assert split == status.vm_rss_bytes, (pid, status)
            assert status.vm_pte_bytes >= 0 and status.vm_swap_bytes >= 0
            rollup, source = procfs.read_rollup(pid, name=stat.comm)
            assert source == ("smaps_rollup" if HAS_ROLLUP else "smaps")
            check_rollup(pid, rollup)
            readable.add(pid)
            outcomes["read"] = outcomes.get("read", 0) + 1
        except ALLOWED as err:
            outcomes[type(err).__name__] = outcomes.get(type(err).__name__, 0) + 1
    assert os.getpid() in readable
    # Kernel threads have no memory map: they must come out as NoSuchProcess, not zero.
    kthreads = [
        pid
        for pid in procfs.iter_pids()
        if pid not in readable
        and (stat := _stat_or_none(pid)) is not None
        and stat.is_kernel_thread
    ]
    for pid in kthreads[:5]:
        with pytest.raises(NoSuchProcess, match=r"kernel thread|vanished"):
            procfs.read_rollup(pid)


def _stat_or_none(pid: int) -> procparse.ProcStat | None:
    try:
        return procfs.read_stat(pid)
    except ALLOWED:
        return None


# --------------------------------------------------------------------------- churn

CHURN = r"""
import os, random, signal, sys, time

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
steady = []
for _ in range(3):  # workers that stay, with some memory of their own
    pid = os.fork()
    if pid == 0:
        block = bytearray(2 * 1024 * 1024)
        while os.getppid() != 1:
            time.sleep(0.2)
        os._exit(0)
    steady.append(pid)
print("ready", os.getpid(), *steady, flush=True)
live = set()
while True:
    if len(live) < 12:
        pid = os.fork()
        if pid == 0:
            time.sleep(random.random() * 0.004)
            os._exit(0)
        live.add(pid)
    if random.random() < 0.5:  # sometimes leave the dead unreaped a while: zombies
        while live:
            done, _ = os.waitpid(-1, os.WNOHANG)
            if done == 0:
                break
            live.discard(done)
    else:
        time.sleep(0.0005)
"""


@contextlib.contextmanager
def churning() -> Iterator[tuple[int, list[int]]]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHURN], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        assert line and line[0] == "ready", line
        yield int(line[1]), [int(pid) for pid in line[2:]]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_sampler_survives_churn_and_counts_what_it_skipped() -> None:
    with churning() as (parent, steady):
        sampler = Sampler(Selector(pid=parent))
        skipped: dict[str, int] = {}
        snapshots = 0
        # At least 50 snapshots, and on until churn has been seen a few times; the upper
        # bound only keeps a broken helper from looping for ever.
        while snapshots < 50 or (snapshots < 3000 and sum(skipped.values()) < 5):
            snap = sampler.snapshot(snapshots)
            snapshots += 1
            pids = {p.pid for p in snap.processes}
            assert parent in pids and set(steady) <= pids
            for item in snap.skipped:
                skipped[item.reason] = skipped.get(item.reason, 0) + 1
            for process in snap.processes:
                check_rollup(process.pid, process.rollup)
                assert process.state != "Z"
    assert sum(skipped.values()) >= 5, f"no churn seen in {snapshots} snapshots"
    assert set(skipped) <= {"vanished", "zombie", "replaced"}


def test_estimate_on_a_churning_tree_exits_cleanly() -> None:
    with churning() as (parent, steady):
        result = run_cli(
            "estimate",
            "--pid",
            str(parent),
            "--samples",
            "20",
            "--interval",
            "0.01",
            "--format",
            "json",
        )
    assert "Traceback" not in result.stderr
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["workload"]["parent_pids"] == [parent]
    assert set(steady) <= set(doc["workload"]["pids"])
    assert doc["prediction"]["max_instances"] > 0
