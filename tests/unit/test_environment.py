"""read_environment on a captured host: each field against the fixture's own files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FIXTURES

from capacity.measure.environment import read_environment

HOST = FIXTURES / "hosts/demo"


def _text(relative: str) -> str:
    return (HOST / relative).read_text().strip()


def _meminfo_bytes(key: str) -> int:
    for line in (HOST / "proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            number, unit = rest.split()
            assert unit == "kB"
            return int(number) * 1024
    raise KeyError(key)


@pytest.fixture(scope="module")
def env():
    return read_environment(HOST, command_line=("capplan", "estimate", "--pid", "18121"))


def test_hostname_and_kernel_from_fixture(env) -> None:
    assert env.hostname == _text("proc/sys/kernel/hostname") == "fixture-host"
    assert env.kernel == _text("proc/sys/kernel/osrelease") == "6.18.44-fc-v769"


def test_thp_mode_is_the_bracketed_choice(env) -> None:
    raw = _text("sys/kernel/mm/transparent_hugepage/enabled")
    match = re.search(r"\[(\w+)\]", raw)
    assert match is not None
    assert env.thp_enabled == match.group(1) == "madvise"


def test_ksm_mode(env) -> None:
    assert _text("sys/kernel/mm/ksm/run") == "0"
    assert env.ksm_run == "off"


def test_memory_totals_from_meminfo(env) -> None:
    assert env.mem_total_bytes == _meminfo_bytes("MemTotal")
    assert env.swap_total_bytes == _meminfo_bytes("SwapTotal") == 0
    # The captured run's budget was this host's MemTotal.
    assert env.mem_total_bytes == 25276063744


def test_cgroup_version_from_mounts(env) -> None:
    mounts = [line.split() for line in (HOST / "proc/mounts").read_text().splitlines()]
    v2 = [m[1] for m in mounts if m[2] == "cgroup2"]
    v1_memory = [m[1] for m in mounts if m[2] == "cgroup" and "memory" in m[3].split(",")]
    assert v2 == ["/sys/fs/cgroup/unified"] and v1_memory == ["/sys/fs/cgroup/memory"]
    controllers = (HOST / "sys/fs/cgroup/unified/cgroup.controllers").read_text().split()
    assert "memory" not in controllers
    # v1 accounts memory beside a v2 hierarchy without the memory controller.
    assert env.cgroup_version == "v1 (memory) + v2"


def test_passed_through_fields(env) -> None:
    assert env.command_line == ("capplan", "estimate", "--pid", "18121")
    assert env.malloc_arena_max is None  # no workload pid given
    assert env.executable is None
    assert env.page_size > 0 and env.cpu_count >= 1
    assert env.time.endswith("+00:00")
    with_exe = read_environment(HOST, executable="/usr/bin/python3", command_line=("x",))
    assert with_exe.executable == "/usr/bin/python3"


def _minimal_root(tmp_path: Path) -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal:        2048 kB\nMemFree:    1024 kB\nMemAvailable:  1536 kB\n"
        "SwapTotal:        512 kB\nSwapFree:    512 kB\n"
    )
    return tmp_path


def test_minimal_root_defaults(tmp_path: Path) -> None:
    env = read_environment(_minimal_root(tmp_path), command_line=("x",))
    assert env.hostname == "unknown"
    assert env.kernel == "unknown"
    assert env.thp_enabled == "unavailable"
    assert env.ksm_run == "unavailable"
    assert env.cgroup_version == "none"
    assert env.mem_total_bytes == 2048 * 1024
    assert env.swap_total_bytes == 512 * 1024


def test_other_modes_and_pure_v2(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    mm = root / "sys/kernel/mm"
    (mm / "transparent_hugepage").mkdir(parents=True)
    (mm / "transparent_hugepage/enabled").write_text("[always] madvise never\n")
    (mm / "ksm").mkdir()
    (mm / "ksm/run").write_text("2\n")
    (root / "proc/mounts").write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n")
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io memory pids\n")
    env = read_environment(root, command_line=("x",))
    assert env.thp_enabled == "always"
    assert env.ksm_run == "unmerge"
    assert env.cgroup_version == "v2"


def test_malloc_arena_max_from_workload_environ(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "proc/4242").mkdir()
    (root / "proc/4242/environ").write_bytes(b"PATH=/bin\0MALLOC_ARENA_MAX=2\0HOME=/root\0")
    assert read_environment(root, workload_pid=4242, command_line=("x",)).malloc_arena_max == "2"
    # A process without the variable, or without a readable environ, has none.
    (root / "proc/4243").mkdir()
    (root / "proc/4243/environ").write_bytes(b"PATH=/bin\0")
    assert read_environment(root, workload_pid=4243, command_line=("x",)).malloc_arena_max is None
    assert read_environment(root, workload_pid=9999, command_line=("x",)).malloc_arena_max is None
