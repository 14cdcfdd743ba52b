"""The workload's page cache, hot and cold (issue 14), on real files read by real processes.

A parent reads a cold file once and a hot file twice, then forks three workers that read
the hot file through read() in a loop; both files are ours, in a temporary directory, and
their cache is dropped (fsync, then POSIX_FADV_DONTNEED) before the workload starts, so
that the pages the kernel caches are the ones this workload read. ``capplan estimate`` is
run on it twice: in a memory cgroup of its own (the cgroup's file LRU lists: on this host
the v1 memory hierarchy, on a v2 host a v2 cgroup), and without one (the per-file probe:
cachestat or mincore, and the cached pages' active flags). Both must count the hot file as
hot and not the cold one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, run_cli

from capacity.measure.cgroup import temporary_cgroup

pytestmark = [needs_root]
MiB = 1024 * 1024
SIZE = 32 * MiB  # each file

READER = r"""
import os, sys, time
hot_path, cold_path, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])

def read_all(f):
    f.seek(0)
    while f.read(1 << 20):
        pass

cold = open(cold_path, "rb", buffering=0)
read_all(cold)  # once: the inactive list
hot = open(hot_path, "rb", buffering=0)
read_all(hot)
read_all(hot)  # twice: the active list
pids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        while True:  # and again and again
            read_all(hot)
            time.sleep(0.2)
    pids.append(pid)
print("ready", os.getpid(), *pids, flush=True)
while True:
    time.sleep(1)
"""


def uncached_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes, written to disk and dropped from the page cache."""
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


@contextlib.contextmanager
def reader(hot: Path, cold: Path, preexec: Callable[[], None] | None = None) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(hot), str(cold), "3"],
        stdout=subprocess.PIPE,
        preexec_fn=preexec,  # noqa: PLW1509 (a child that joins its cgroup before it reads)
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        assert line and line[0] == "ready", line
        yield int(line[1])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def estimate(pid: int) -> dict[str, Any]:
    result = run_cli(
        "estimate", "--pid", str(pid), "--samples", "3", "--interval", "0.5",
        "--method", "smaps", "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def check_kept(document: dict[str, Any]) -> None:
    cache, model = document["file_cache"], document["model"]
    already = model["breakdown"]["fixed_file_bytes"]
    assert cache["kept_bytes"] == max(0, cache["hot_bytes"] - already)
    assert model["hot_cache_bytes"] == cache["kept_bytes"]
    assert cache["hot_bytes"] + cache["cold_bytes"] == cache["cached_bytes"]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return uncached_file(tmp_path / "hot.dat", SIZE), uncached_file(tmp_path / "cold.dat", SIZE)


def test_own_cgroup_counts_the_hot_file_hot_and_the_cold_file_cold(
    files: tuple[Path, Path],
) -> None:
    hot, cold = files
    with temporary_cgroup("capplan-test") as group, reader(hot, cold, group.join_self) as pid:
        document = estimate(pid)
    cache = document["file_cache"]
    assert cache["source"] == "cgroup" and cache["hotness"] == "cgroup"
    assert cache["probe"] is None  # the cgroup is the reading: no file was probed
    # Most of the hot file is on the active list; the cold file is not: what is hot beyond
    # the hot file is well under the cold file's size (the interpreter's own pages, charged
    # here only where no other process read them first).
    assert cache["hot_bytes"] >= 0.8 * SIZE
    assert cache["hot_bytes"] - SIZE < 0.5 * SIZE
    assert cache["cold_bytes"] >= 0.8 * SIZE
    assert cache["active_bytes"] + cache["inactive_bytes"] == cache["cached_bytes"]
    assert cache["refaults_per_second"] is not None and cache["refaults_per_second"] >= 0
    check_kept(document)


def test_without_a_cgroup_the_files_are_probed(files: tuple[Path, Path]) -> None:
    hot, cold = files
    with reader(hot, cold) as pid:
        document = estimate(pid)
    cache = document["file_cache"]
    assert cache["source"] == "files" and cache["hotness"] == "kpageflags"
    probe = cache["probe"]
    by_path = {f["path"]: f for f in probe["files"]}
    hot_file, cold_file = by_path[str(hot)], by_path[str(cold)]
    assert hot_file["mapped"] is False and cold_file["mapped"] is False  # read() only
    assert hot_file["cached_bytes"] >= 0.8 * SIZE and cold_file["cached_bytes"] >= 0.8 * SIZE
    assert hot_file["active_bytes"] >= 0.8 * SIZE
    assert cold_file["active_bytes"] <= 0.05 * SIZE
    # Each file once, though four processes hold the hot one open.
    assert sum(1 for f in probe["files"] if f["path"] == str(hot)) == 1
    assert cache["hot_bytes"] >= 0.8 * SIZE and cache["cold_bytes"] >= 0.8 * SIZE
    check_kept(document)


def test_text_output_says_hot_and_cold(files: tuple[Path, Path]) -> None:
    hot, cold = files
    with reader(hot, cold) as pid:
        result = run_cli("estimate", "--pid", str(pid), "--samples", "2", "--interval", "0.2")
    assert result.code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("Page cache:"))
    assert "hot " in line and "cold " in line and "can be reclaimed without harm" in line
    assert str(hot) in result.stdout  # the most cached files, by name


def test_a_helper_killed_by_sigbus_costs_one_file_its_flags(tmp_path: Path) -> None:
    """The page flags are read in a helper process because touching a page of a file
    truncated under the mapping raises SIGBUS: a helper that dies so answers nothing for
    that file, and the next file starts a new one."""
    import signal

    from capacity.measure.filecache import FlagsHelper

    path = tmp_path / "data"
    path.write_bytes(os.urandom(MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        with FlagsHelper() as helper:
            assert helper.read(fd, MiB) == (256, 0)  # written, cached, never read twice
            assert helper._process is not None
            first = helper._process.pid
            os.kill(first, signal.SIGBUS)
            helper._process.wait(timeout=10)
            assert helper.read(fd, MiB) is None  # that file: no flags
            assert helper.read(fd, MiB) == (256, 0)  # a new helper takes the next one
            assert helper._process is not None and helper._process.pid != first
            assert helper.starts == 2
            process = helper._process
        assert process.poll() is not None  # stopped with the block
    finally:
        os.close(fd)


def test_without_cachestat_mincore_reads_the_residency(files: tuple[Path, Path]) -> None:
    """The guest's 6.1 has no cachestat (ENOSYS): mincore on a fresh mapping, the same
    residency; the page flags as with cachestat."""
    from capacity.measure.filecache import FlagsHelper, probe_file

    hot, cold = files
    with reader(hot, cold):
        for path, active in ((hot, True), (cold, False)):
            fd = os.open(path, os.O_RDONLY)
            try:
                alone, call = probe_file(fd, str(path), False, use_cachestat=False)
                assert call == "mincore" and alone.cached_bytes >= 0.8 * SIZE
                assert alone.active_bytes is None and alone.recently_evicted_bytes is None
                with FlagsHelper() as helper:
                    flagged, _ = probe_file(
                        fd, str(path), False, use_cachestat=False, flags=helper.read
                    )
                assert flagged.active_bytes is not None
                assert (flagged.active_bytes >= 0.8 * SIZE) is active
            finally:
                os.close(fd)


INSTANCE = r"""
import sys, time

def read_all(f):
    f.seek(0)
    while f.read(1 << 20):
        pass

if sys.argv[3] == "1":  # the first instance alone reads the cold file, once
    cold = open(sys.argv[2], "rb", buffering=0)
    read_all(cold)
hot = open(sys.argv[1], "rb", buffering=0)
while True:
    read_all(hot)
    time.sleep(0.2)
"""


def test_launch_mode_reads_the_run_cgroup(files: tuple[Path, Path], tmp_path: Path) -> None:
    hot, cold = files
    script = tmp_path / "instance.py"
    script.write_text(INSTANCE)
    command = f"{sys.executable} {script} {hot} {cold} {{i}}"
    result = run_cli(
        "estimate", "--launch", command, "--instances", "3", "--settle", "1",
        "--samples", "3", "--interval", "0.5", "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    cache = document["file_cache"]
    assert cache["source"] == "cgroup" and "capplan-launch-" in cache["cgroup"]
    assert cache["hot_bytes"] >= 0.8 * SIZE and cache["hot_bytes"] - SIZE < 0.5 * SIZE
    assert cache["cold_bytes"] >= 0.8 * SIZE
    check_kept(document)
