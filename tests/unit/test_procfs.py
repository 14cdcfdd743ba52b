"""Pure parsers for /proc, cgroup files and sizes, on exact text.

Every field of every block holds a DISTINCT number (psutil's trick): if a parser read the
wrong line, summed the wrong keys or double-counted one, the total could not come out
right by accident. Sizes in /proc are kB; the expected values are written as ``N * KiB``.
"""

from __future__ import annotations

import errno
import textwrap
from pathlib import Path

import pytest
from conftest import FIXTURES

from capacity import units
from capacity.errors import (
    AccessDenied,
    CapplanError,
    NoSuchProcess,
    ParseError,
    ZombieProcess,
)
from capacity.measure import cgroup, procfs, procparse

KiB = 1024


def block(text: str) -> bytes:
    return textwrap.dedent(text).lstrip("\n").encode()


def stat_line(
    pid: int,
    comm: str,
    state: str = "S",
    ppid: int = 1,
    flags: int = 4194560,
    threads: int = 1,
    start: int = 5000,
    rss: int = 700,
) -> bytes:
    """A /proc/PID/stat line with every field distinct (proc(5) numbering in comments)."""
    fields = [
        state,  # 3
        ppid,  # 4
        ppid + 1,  # 5 pgrp
        ppid + 2,  # 6 session
        0,  # 7 tty_nr
        -1,  # 8 tpgid
        flags,  # 9 flags
        11,  # 10 minflt
        12,  # 11 cminflt
        13,  # 12 majflt
        14,  # 13 cmajflt
        15,  # 14 utime
        16,  # 15 stime
        17,  # 16 cutime
        18,  # 17 cstime
        20,  # 18 priority
        0,  # 19 nice
        threads,  # 20 num_threads
        0,  # 21 itrealvalue
        start,  # 22 starttime
        123456789,  # 23 vsize
        rss,  # 24 rss
        *range(25, 53),
    ]
    return f"{pid} ({comm}) ".encode() + " ".join(map(str, fields)).encode() + b"\n"


# --------------------------------------------------------------------------- stat


def test_parse_stat_comm_with_spaces_and_parentheses() -> None:
    stat = procparse.parse_stat(
        stat_line(4321, "a) b (c) d", ppid=77, threads=3, start=98765, rss=432)
    )
    assert stat.pid == 4321
    assert stat.comm == "a) b (c) d"
    assert (stat.state, stat.ppid, stat.num_threads) == ("S", 77, 3)
    assert (stat.start_ticks, stat.rss_pages, stat.flags) == (98765, 432, 4194560)
    assert not stat.is_kernel_thread


def test_parse_stat_kernel_thread_and_zombie() -> None:
    kthread = procparse.parse_stat(stat_line(2, "kthreadd", flags=0x00208040, ppid=0))
    assert kthread.is_kernel_thread
    zombie = procparse.parse_stat(stat_line(99, "python3", state="Z"))
    assert zombie.state == "Z"


def test_parse_stat_reads_cpu_time_from_fields_14_and_15() -> None:
    stat = procparse.parse_stat(stat_line(4321, "worker"))
    assert (stat.utime_ticks, stat.stime_ticks) == (15, 16)  # not cutime/cstime (17, 18)


def test_parse_stat_and_status_of_a_captured_process() -> None:
    """The demo's captured parent: utime 3, stime 0 (fields 14, 15); 21 voluntary and 5
    involuntary context switches (the last two lines of status)."""
    base = FIXTURES / "hosts" / "demo" / "proc" / "18121"
    stat = procparse.parse_stat((base / "stat").read_bytes())
    assert (stat.utime_ticks, stat.stime_ticks) == (3, 0)
    status = procparse.parse_status((base / "status").read_bytes())
    assert (status.voluntary_switches, status.nonvoluntary_switches) == (21, 5)
    assert procparse._STATUS_IN_ORDER.match((base / "status").read_bytes())


@pytest.mark.parametrize("data", [b"", b"garbage", b"12 (x) S 1"])
def test_parse_stat_rejects_other_formats(data: bytes) -> None:
    with pytest.raises(ParseError, match="not in the format of proc"):
        procparse.parse_stat(data, "/proc/12/stat")


# --------------------------------------------------------------------------- status

STATUS = block(
    """
    Name:\tphp-fpm8.2
    Umask:\t0022
    State:\tS (sleeping)
    Tgid:\t3001
    Ngid:\t0
    Pid:\t3001
    PPid:\t2999
    TracerPid:\t0
    Uid:\t33\t34\t35\t36
    Gid:\t33\t33\t33\t33
    VmPeak:\t  200001 kB
    VmSize:\t  200002 kB
    VmHWM:\t   10003 kB
    VmRSS:\t   10004 kB
    RssAnon:\t    6005 kB
    RssFile:\t    3006 kB
    RssShmem:\t     993 kB
    VmData:\t    5008 kB
    VmPTE:\t     109 kB
    VmSwap:\t      11 kB
    Threads:\t4
    """
)


def test_parse_status_reads_each_field_from_its_own_line() -> None:
    status = procparse.parse_status(STATUS)
    assert (status.name, status.state, status.tgid, status.pid, status.ppid) == (
        "php-fpm8.2",
        "S",
        3001,
        3001,
        2999,
    )
    assert (status.uid, status.euid, status.threads) == (33, 34, 4)
    assert status.vm_rss_bytes == 10004 * KiB
    assert status.rss_anon_bytes == 6005 * KiB
    assert status.rss_file_bytes == 3006 * KiB
    assert status.rss_shmem_bytes == 993 * KiB
    assert status.vm_pte_bytes == 109 * KiB
    assert status.vm_swap_bytes == 11 * KiB
    assert status.has_mm


SWITCHES = (
    b"Mems_allowed_list:\t0\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n"
)


def test_parse_status_reads_the_context_switches_both_ways() -> None:
    """The one-match path and the line reader give the same counts; a kernel before
    2.6.23 (no such lines) gives None, not 0: unknown, not idle."""
    fast = procparse.parse_status(STATUS + SWITCHES)
    assert (fast.voluntary_switches, fast.nonvoluntary_switches) == (1234, 56)
    assert procparse._parse_status_lines(STATUS + SWITCHES, "status") == fast
    assert procparse.parse_status((STATUS + SWITCHES).rstrip(b"\n")) == fast
    old = procparse.parse_status(STATUS)
    assert (old.voluntary_switches, old.nonvoluntary_switches) == (None, None)
    assert old.vm_rss_bytes == fast.vm_rss_bytes
    with pytest.raises(ParseError, match="bad value for voluntary_ctxt_switches"):
        procparse.parse_status(STATUS + SWITCHES.replace(b"1234", b"-1234"))


def test_parse_status_before_linux_4_5_has_no_rss_split() -> None:
    old = b"".join(line for line in STATUS.splitlines(keepends=True) if b"Rss" not in line)
    status = procparse.parse_status(old)
    assert (status.rss_anon_bytes, status.rss_file_bytes, status.rss_shmem_bytes) == (0, 0, 0)
    assert status.vm_rss_bytes == 10004 * KiB and status.has_mm


def test_parse_status_of_a_kernel_thread_has_no_memory() -> None:
    status = procparse.parse_status(
        block(
            """
            Name:\tkworker/0:1
            State:\tI (idle)
            Tgid:\t17
            Pid:\t17
            PPid:\t2
            Uid:\t0\t0\t0\t0
            Threads:\t1
            """
        )
    )
    assert not status.has_mm
    assert (status.vm_rss_bytes, status.vm_pte_bytes) == (0, 0)


@pytest.mark.parametrize("missing", [b"Name", b"State", b"Tgid", b"Pid", b"PPid"])
def test_parse_status_missing_required_field(missing: bytes) -> None:
    data = b"".join(
        line for line in STATUS.splitlines(keepends=True) if not line.startswith(missing + b":")
    )
    with pytest.raises(ParseError, match=f"missing field {missing.decode()}"):
        procparse.parse_status(data, "/proc/3001/status")


def test_parse_status_bad_number() -> None:
    with pytest.raises(ParseError, match="bad value for VmRSS"):
        procparse.parse_status(STATUS.replace(b"10004 kB", b"lots kB"))


# --------------------------------------------------------------------------- smaps_rollup

ROLLUP = block(
    """
    55d5c7a3e000-7ffd2b1f1000 ---p 00000000 00:00 0                          [rollup]
    Rss:                9001 kB
    Pss:                4002 kB
    Pss_Dirty:          3003 kB
    Pss_Anon:           2004 kB
    Pss_File:           1005 kB
    Pss_Shmem:           606 kB
    Shared_Clean:       3007 kB
    Shared_Dirty:       2008 kB
    Private_Clean:       409 kB
    Private_Dirty:      3577 kB
    Referenced:         8011 kB
    Anonymous:          5012 kB
    KSM:                  13 kB
    LazyFree:             14 kB
    AnonHugePages:      2048 kB
    ShmemPmdMapped:       16 kB
    FilePmdMapped:        17 kB
    Shared_Hugetlb:     4096 kB
    Private_Hugetlb:    6144 kB
    Swap:                 20 kB
    SwapPss:              21 kB
    Locked:               22 kB
    """
)


def test_parse_smaps_rollup_reads_each_field() -> None:
    rollup = procparse.parse_smaps_rollup(ROLLUP)
    assert rollup.rss_bytes == 9001 * KiB
    assert rollup.pss_bytes == 4002 * KiB  # not Pss + Pss_Anon + ... (ps_mem #68)
    assert (rollup.pss_anon_bytes, rollup.pss_file_bytes, rollup.pss_shmem_bytes) == (
        2004 * KiB,
        1005 * KiB,
        606 * KiB,
    )
    assert rollup.shared_bytes == (3007 + 2008) * KiB
    assert rollup.uss_bytes == (409 + 3577) * KiB
    assert rollup.anonymous_bytes == 5012 * KiB
    assert rollup.anon_huge_bytes == 2048 * KiB
    assert rollup.shmem_huge_bytes == 16 * KiB
    assert (rollup.shared_hugetlb_bytes, rollup.private_hugetlb_bytes) == (4096 * KiB, 6144 * KiB)
    assert (rollup.swap_bytes, rollup.swap_pss_bytes, rollup.locked_bytes) == (
        20 * KiB,
        21 * KiB,
        22 * KiB,
    )


def test_parse_smaps_rollup_before_linux_5_3_has_no_pss_split() -> None:
    old = b"".join(
        line for line in ROLLUP.splitlines(keepends=True) if not line.startswith(b"Pss_")
    )
    rollup = procparse.parse_smaps_rollup(old)
    assert rollup.pss_bytes == 4002 * KiB
    assert (rollup.pss_anon_bytes, rollup.pss_file_bytes, rollup.pss_shmem_bytes) == (0, 0, 0)


@pytest.mark.parametrize("missing", ["Rss", "Pss"])
def test_parse_smaps_rollup_without_rss_or_pss_is_an_error(missing: str) -> None:
    data = b"".join(
        line
        for line in ROLLUP.splitlines(keepends=True)
        if not line.startswith(missing.encode() + b":")
    )
    with pytest.raises(ParseError, match=f"smaps_rollup: missing field {missing}$"):
        procparse.parse_smaps_rollup(data, "/proc/1/smaps_rollup")


# --------------------------------------------------------------------------- smaps, maps

SMAPS = block(
    """
    5581c3a00000-5581c3a21000 r-xp 00000000 fd:01 1311       /usr/sbin/apache2
    Size:                132 kB
    Rss:                 101 kB
    Pss:                  31 kB
    Shared_Clean:         92 kB
    Shared_Dirty:          0 kB
    Private_Clean:         9 kB
    Private_Dirty:         0 kB
    Anonymous:             0 kB
    Swap:                  0 kB
    Shared_Hugetlb:        0 kB
    Private_Hugetlb:       0 kB
    THPeligible:    0
    VmFlags: rd ex mr mw me sd
    7f1c2a000000-7f1c2a400000 rw-p 00000000 00:00 0
    Size:               4096 kB
    Rss:                3013 kB
    Pss:                2017 kB
    Shared_Clean:          0 kB
    Shared_Dirty:       1993 kB
    Private_Clean:         0 kB
    Private_Dirty:      1020 kB
    Anonymous:          3013 kB
    AnonHugePages:      2048 kB
    Swap:                 37 kB
    SwapPss:              19 kB
    Locked:                0 kB
    VmFlags: rd wr mr mw me ac sd
    7f1c2b000000-7f1c2b002000 rw-s 00000000 00:01 4242       /dev/shm/my segment (deleted)
    Size:                  8 kB
    Rss:                   8 kB
    Pss:                   2 kB
    Shared_Clean:          0 kB
    Shared_Dirty:          8 kB
    Private_Clean:         0 kB
    Private_Dirty:         0 kB
    Shared_Hugetlb:     2048 kB
    Private_Hugetlb:    4096 kB
    VmFlags: rd wr sh mr mw me ms sd
    """
)


def test_parse_smaps_one_entry_per_vma() -> None:
    entries = procparse.parse_smaps(SMAPS)
    assert [e.mapping.path for e in entries] == [
        "/usr/sbin/apache2",
        "",
        "/dev/shm/my segment (deleted)",
    ]
    assert entries[1].mapping.size == 0x400000
    assert entries[1].fields["private_dirty_bytes"] == 1020 * KiB
    assert entries[1].fields["anon_huge_bytes"] == 2048 * KiB
    assert entries[2].fields["private_hugetlb_bytes"] == 4096 * KiB


def test_rollup_from_smaps_sums_every_vma() -> None:
    rollup = procparse.rollup_from_smaps(procparse.parse_smaps(SMAPS))
    assert rollup.rss_bytes == (101 + 3013 + 8) * KiB
    assert rollup.pss_bytes == (31 + 2017 + 2) * KiB
    assert rollup.shared_clean_bytes == 92 * KiB
    assert rollup.shared_dirty_bytes == (1993 + 8) * KiB
    assert rollup.uss_bytes == (9 + 1020) * KiB
    assert rollup.swap_bytes == 37 * KiB and rollup.swap_pss_bytes == 19 * KiB
    assert rollup.shared_hugetlb_bytes == 2048 * KiB
    assert rollup.private_hugetlb_bytes == 4096 * KiB
    assert rollup.pss_anon_bytes == 0  # exists only in smaps_rollup


def test_rollup_from_empty_smaps_is_zero() -> None:
    rollup = procparse.rollup_from_smaps(procparse.parse_smaps(b""))
    assert (rollup.rss_bytes, rollup.pss_bytes, rollup.uss_bytes) == (0, 0, 0)


MAPS = block(
    """
    5581c3a00000-5581c3a21000 r-xp 00000000 fd:01 1311                       /usr/sbin/apache2
    5581c3c21000-5581c3c25000 rw-p 00021000 fd:01 1311                       /usr/sbin/apache2
    5581c4000000-5581c4100000 rw-p 00000000 00:00 0                          [heap]
    7f1c2a000000-7f1c2a400000 rw-p 00000000 00:00 0
    7f1c2b000000-7f1c2b002000 rw-s 00000000 00:01 4242                       /dev/shm/my segment (deleted)
    7f1c2c000000-7f1c2c001000 r--p 00003000 fd:01 77                         /opt/app/lib with  two  spaces.so
    7ffd2b1d0000-7ffd2b1f1000 rw-p 00000000 00:00 0                          [stack]
    """
)


def test_parse_maps_keeps_paths_with_spaces_and_deleted() -> None:
    maps = procparse.parse_maps(MAPS)
    assert len(maps) == 7
    assert maps[0].path == "/usr/sbin/apache2" and maps[0].perms == "r-xp"
    assert (maps[1].offset, maps[1].dev, maps[1].inode) == (0x21000, "fd:01", 1311)
    assert maps[2].path == "[heap]" and maps[2].size == 0x100000
    assert maps[3].path == ""
    assert maps[4].path == "/dev/shm/my segment (deleted)"
    assert maps[5].path == "/opt/app/lib with  two  spaces.so"
    assert procparse.count_maps_lines(MAPS) == (7, 4)  # rw-p: 2 apache2 data, heap, anon, stack


def test_parse_maps_bad_line() -> None:
    with pytest.raises(ParseError, match="bad mapping line"):
        procparse.parse_maps(b"zzzz-yyyy r-xp 0 0 0\n")


# --------------------------------------------------------------------------- meminfo

MEMINFO = block(
    """
    MemTotal:       24683656 kB
    MemFree:        20100007 kB
    MemAvailable:   23000008 kB
    Buffers:          100009 kB
    Cached:          2000010 kB
    SwapTotal:       1048575 kB
    SwapFree:        1048000 kB
    KernelStack:       12013 kB
    PageTables:        30014 kB
    SUnreclaim:       150015 kB
    HugePages_Total:       0
    Hugepagesize:       2048 kB
    """
)


def test_parse_meminfo() -> None:
    host = procparse.parse_meminfo(MEMINFO)
    assert host.mem_total_bytes == 24683656 * KiB
    assert host.mem_available_bytes == 23000008 * KiB
    assert host.mem_free_bytes == 20100007 * KiB
    assert (host.swap_total_bytes, host.swap_free_bytes) == (1048575 * KiB, 1048000 * KiB)
    assert host.kernel_stack_bytes == 12013 * KiB
    assert host.page_tables_bytes == 30014 * KiB
    assert host.slab_unreclaimable_bytes == 150015 * KiB


def test_parse_meminfo_before_linux_3_14_estimates_available() -> None:
    old = MEMINFO.replace(b"MemAvailable:   23000008 kB\n", b"")
    host = procparse.parse_meminfo(old)
    assert host.mem_available_bytes == (20100007 + 100009 + 2000010) * KiB


def test_parse_meminfo_without_memtotal() -> None:
    with pytest.raises(ParseError, match="missing field MemTotal"):
        procparse.parse_meminfo(b"MemFree: 1 kB\n")


# --------------------------------------------------------------------------- cmdline


@pytest.mark.parametrize(
    ("data", "argv"),
    [
        (b"/usr/sbin/apache2\0-k\0start\0", ("/usr/sbin/apache2", "-k", "start")),
        (b"python3\0-c\0print(1 + 1)\0", ("python3", "-c", "print(1 + 1)")),
        (b"php-fpm: pool www\0\0\0\0\0\0", ("php-fpm: pool www",)),
        (b"gunicorn: worker [app]", ("gunicorn: worker [app]",)),
        (b"", ()),
        (b"caf\xc3\xa9\0\xff\0", ("café", "\ufffd")),
    ],
)
def test_parse_cmdline(data: bytes, argv: tuple[str, ...]) -> None:
    assert procparse.parse_cmdline(data) == argv


# --------------------------------------------------------------------------- /proc/PID/cgroup

CGROUP_V1 = b"12:pids:/system.slice/apache2.service\n4:memory:/system.slice/apache2.service\n3:cpu,cpuacct:/system.slice\n1:name=systemd:/system.slice/apache2.service\n"
CGROUP_V2 = b"0::/system.slice/php8.2-fpm.service\n"


def test_parse_proc_cgroup_v1() -> None:
    entries = procparse.parse_proc_cgroup(CGROUP_V1)
    assert entries[1] == (4, ("memory",), "/system.slice/apache2.service")
    assert entries[2] == (3, ("cpu", "cpuacct"), "/system.slice")
    assert entries[3] == (1, ("name=systemd",), "/system.slice/apache2.service")


def test_parse_proc_cgroup_v2_and_hybrid() -> None:
    assert procparse.parse_proc_cgroup(CGROUP_V2) == [(0, (), "/system.slice/php8.2-fpm.service")]
    hybrid = procparse.parse_proc_cgroup(
        CGROUP_V1 + b"0::/user.slice/session-3.scope\nnot a line\n"
    )
    assert hybrid[-1] == (0, (), "/user.slice/session-3.scope")
    assert len(hybrid) == 5


def test_parse_bracketed_choice() -> None:
    assert procparse.parse_bracketed_choice(b"always [madvise] never\n") == "madvise"
    assert procparse.parse_bracketed_choice(b"never\n") == "never"


# --------------------------------------------------------------------------- cgroup files

MOUNTS_V2 = b"proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
MOUNTS_HYBRID = (
    b"cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
    b"cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
    b"cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_parse_mounts_pure_v2(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n"})
    layout = cgroup.parse_mounts(MOUNTS_V2, tmp_path)
    assert layout.v2_mount == tmp_path / "sys/fs/cgroup"
    assert layout.v2_memory and layout.v1_memory_mount is None
    assert layout.version == "v2"


def test_parse_mounts_v1_memory_beside_v2_without_it(tmp_path: Path) -> None:
    write_tree(tmp_path, {"sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"})
    layout = cgroup.parse_mounts(MOUNTS_HYBRID, tmp_path)
    assert layout.v1_memory_mount == tmp_path / "sys/fs/cgroup/memory"
    assert layout.v2_mount == tmp_path / "sys/fs/cgroup/unified" and not layout.v2_memory
    assert layout.version == "v1 (memory) + v2"
    assert cgroup.parse_mounts(b"", tmp_path).version == "none"


V2_STAT = "anon 1000001\nfile 2000002\nkernel 300003\nkernel_stack 40004\npagetables 50005\nslab_unreclaimable 60006\ninactive_file 700007\nbogus line here\n"
V1_STAT = (
    "cache 11\nrss 12\nhierarchical_memory_limit 1073741824\n"
    "total_rss 1000001\ntotal_cache 2000002\ntotal_shmem 30003\ntotal_mapped_file 40004\n"
    "total_swap 5\ntotal_rss_huge 2097152\ntotal_inactive_file 700007\n"
)


def test_read_cgroup_memory_v2(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "cg/system.slice/memory.max": "3221225472\n",
            "cg/system.slice/web.service/memory.max": "max\n",
            "cg/system.slice/web.service/memory.current": "123456789\n",
            "cg/system.slice/web.service/memory.peak": "223456789\n",
            "cg/system.slice/web.service/memory.stat": V2_STAT,
        },
    )
    memory = cgroup.read_cgroup_memory(2, tmp_path / "cg/system.slice/web.service", tmp_path / "cg")
    assert memory is not None
    assert memory.path == "/system.slice/web.service"
    assert memory.current_bytes == 123456789 and memory.peak_bytes == 223456789
    assert memory.limit_bytes == 3221225472  # the slice's limit binds its children
    assert memory.limit_path == "/system.slice"
    (tmp_path / "cg/system.slice/web.service/memory.max").write_text("1073741824\n")
    memory = cgroup.read_cgroup_memory(2, tmp_path / "cg/system.slice/web.service", tmp_path / "cg")
    assert memory is not None and memory.limit_bytes == 1073741824
    assert memory.limit_path == "/system.slice/web.service"
    assert memory.stat["slab_unreclaimable"] == 60006
    assert memory.stat["inactive_file"] == 700007
    assert "bogus" not in memory.stat


def test_read_cgroup_memory_v1(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "mem/memory.limit_in_bytes": "9223372036854771712\n",
            "mem/web/memory.limit_in_bytes": "1073741824\n",
            "mem/web/app/memory.usage_in_bytes": "99000009\n",
            "mem/web/app/memory.limit_in_bytes": "9223372036854771712\n",
            "mem/web/app/memory.max_usage_in_bytes": "99500001\n",
            "mem/web/app/memory.kmem.usage_in_bytes": "812345\n",
            "mem/web/app/memory.stat": V1_STAT,
        },
    )
    memory = cgroup.read_cgroup_memory(1, tmp_path / "mem/web/app", tmp_path / "mem")
    assert memory is not None
    assert (memory.path, memory.version) == ("/web/app", 1)
    assert memory.current_bytes == 99000009 and memory.peak_bytes == 99500001
    # hierarchical_memory_limit (a parent's limit) wins over the group's own "unlimited".
    assert memory.limit_bytes == 1073741824
    assert memory.limit_path == "/web"
    assert memory.stat == {
        "anon": 1000001,
        "file": 2000002,
        "shmem": 30003,
        "file_mapped": 40004,
        "swap": 5,
        "anon_thp": 2097152,
        "inactive_file": 700007,
        "kernel": 812345,
    }
    unlimited = V1_STAT.replace("1073741824", "9223372036854771712")
    (tmp_path / "mem/web/app/memory.stat").write_text(unlimited)
    memory = cgroup.read_cgroup_memory(1, tmp_path / "mem/web/app", tmp_path / "mem")
    assert memory is not None and memory.limit_bytes is None


def test_read_cgroup_memory_unreadable_is_none(tmp_path: Path) -> None:
    assert cgroup.read_cgroup_memory(2, tmp_path / "nothing") is None
    assert cgroup.read_cgroup_memory(1, tmp_path / "nothing") is None


def test_workload_cgroup_is_own_only_when_it_holds_nothing_else(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "proc/mounts": MOUNTS_V2.decode(),
            "sys/fs/cgroup/cgroup.controllers": "memory\n",
            "proc/10/cgroup": "0::/web.service\n",
            "sys/fs/cgroup/web.service/memory.current": "5000\n",
            "sys/fs/cgroup/web.service/cgroup.procs": "10\n11\n",
            "sys/fs/cgroup/web.service/child/cgroup.procs": "12\n",
        },
    )
    layout = cgroup.detect_layout(tmp_path)
    found = cgroup.workload_cgroup([10, 11, 12], layout, tmp_path)
    assert found is not None and found.own
    found = cgroup.workload_cgroup([10, 11], layout, tmp_path)  # 12 is someone else
    assert found is not None and not found.own
    (tmp_path / "proc/10/cgroup").write_text("0::/\n")
    (tmp_path / "sys/fs/cgroup/memory.current").write_text("1\n")
    found = cgroup.workload_cgroup([10], layout, tmp_path)
    assert found is not None and not found.own  # the root cgroup is never the workload's own


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 1024**2),
        ("16G", 16 * 1024**3),
        ("16GiB", 16 * 1024**3),
        ("16gb", 16 * 1024**3),
        ("1.5K", 1536),
        ("4096", 4096),
        (" 2 T ", 2 * 1024**4),
        ("0", 0),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert units.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1G", "12Q", "1e3", "ten", "1,5G", "9" * 30 + "T"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(units.SizeError, match="bad size"):
        units.parse_size(text)


def test_parse_percent_and_reserve() -> None:
    assert units.parse_percent("5%") == pytest.approx(0.05)
    assert units.parse_percent(" 12.5% ") == pytest.approx(0.125)
    for bad in ("5", "-1%", "x%", "nan%"):
        with pytest.raises(units.SizeError):
            units.parse_percent(bad)
    assert units.parse_size_or_percent("10%") == (None, pytest.approx(0.1))
    assert units.parse_size_or_percent("2G") == (2 * 1024**3, None)
    with pytest.raises(units.SizeError, match="below 100%"):
        units.parse_size_or_percent("100%")


def test_format_one_unit_per_column() -> None:
    assert units.format_bytes(448000) == "437.5 KiB"
    assert units.format_bytes(512) == "512 B"
    assert units.format_bytes(5 * 1024**3) == "5.00 GiB"
    assert units.pick_unit([1024, 2 * 1024**2, 3 * 1024**2]) == ("MiB", 1024**2)
    assert units.format_in(1536 * 1024, ("MiB", 1024**2)) == "1.50"
    assert units.parse_size_list("8G,16G") == [8 * 1024**3, 16 * 1024**3]
    with pytest.raises(units.SizeError):
        units.parse_size_list("8G,,16G")


# --------------------------------------------------------------------------- error translation


def fake_process(root: Path, pid: int, state: str = "S", flags: int = 4194560) -> None:
    (root / "proc" / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / "proc" / str(pid) / "stat").write_bytes(
        stat_line(pid, "worker", state=state, flags=flags)
    )


def translate(root: Path, pid: int, error: OSError) -> None:
    with procfs._translating(pid, root, root / "proc" / str(pid) / "smaps_rollup", "worker"):
        raise error


def test_translating_permission_denied(tmp_path: Path) -> None:
    fake_process(tmp_path, 7)
    with pytest.raises(AccessDenied) as caught:
        translate(tmp_path, 7, PermissionError(errno.EACCES, "Permission denied"))
    assert "permission denied reading" in caught.value.message
    assert caught.value.hint is not None and "as root" in caught.value.hint
    with pytest.raises(AccessDenied):
        translate(tmp_path, 7, OSError(errno.EPERM, "Operation not permitted"))


def test_translating_esrch_tells_zombie_from_vanished(tmp_path: Path) -> None:
    fake_process(tmp_path, 8, state="Z")
    with pytest.raises(ZombieProcess):
        translate(tmp_path, 8, OSError(errno.ESRCH, "No such process"))
    with pytest.raises(NoSuchProcess) as caught:
        translate(tmp_path, 9, OSError(errno.ESRCH, "No such process"))  # no stat: gone
    assert not isinstance(caught.value, ZombieProcess)
    fake_process(tmp_path, 2, flags=0x00208040)
    with pytest.raises(NoSuchProcess, match="kernel thread"):
        translate(tmp_path, 2, OSError(errno.ESRCH, "No such process"))


def test_translating_enoent(tmp_path: Path) -> None:
    with pytest.raises(NoSuchProcess):
        translate(tmp_path, 10, FileNotFoundError(errno.ENOENT, "gone"))
    fake_process(tmp_path, 11, state="Z")
    with pytest.raises(ZombieProcess):
        translate(tmp_path, 11, FileNotFoundError(errno.ENOENT, "no such file"))
    fake_process(tmp_path, 12)
    with pytest.raises(ParseError, match="missing although the process exists"):
        translate(tmp_path, 12, FileNotFoundError(errno.ENOENT, "no such file"))


def test_translating_other_errors_stay_capplan_errors(tmp_path: Path) -> None:
    fake_process(tmp_path, 13)
    with pytest.raises(CapplanError, match="Input/output error") as caught:
        translate(tmp_path, 13, OSError(errno.EIO, "Input/output error"))
    assert not isinstance(caught.value, (NoSuchProcess, AccessDenied))


def test_read_rollup_falls_back_to_smaps_and_spots_zombies(tmp_path: Path) -> None:
    fake_process(tmp_path, 20)
    (tmp_path / "proc/20/smaps").write_bytes(SMAPS)
    rollup, source = procfs.read_rollup(20, tmp_path)
    assert source == "smaps" and rollup.uss_bytes == (9 + 1020) * KiB
    (tmp_path / "proc/20/smaps_rollup").write_bytes(ROLLUP)
    rollup, source = procfs.read_rollup(20, tmp_path)
    assert source == "smaps_rollup" and rollup.pss_bytes == 4002 * KiB
    fake_process(tmp_path, 21, state="Z")
    (tmp_path / "proc/21/smaps_rollup").write_bytes(b"")  # a zombie's empty rollup
    with pytest.raises(ZombieProcess):
        procfs.read_rollup(21, tmp_path)
    fake_process(tmp_path, 22, state="Z")  # rollup refused (ESRCH): not captured at all
    with pytest.raises(ZombieProcess):
        procfs.read_rollup(22, tmp_path)
    with pytest.raises(NoSuchProcess):
        procfs.read_rollup(23, tmp_path)


def test_read_exe_from_a_captured_tree(tmp_path: Path) -> None:
    fake_process(tmp_path, 30)
    assert procfs.read_exe(30, tmp_path) is None
    (tmp_path / "proc/30/exe").write_text("/usr/sbin/php-fpm8.2\n")
    assert procfs.read_exe(30, tmp_path) == "/usr/sbin/php-fpm8.2"


def test_iter_pids_lists_only_numeric_entries(tmp_path: Path) -> None:
    for name in ("1", "42", "self", "meminfo", "7"):
        (tmp_path / "proc" / name).mkdir(parents=True)
    assert procfs.iter_pids(tmp_path) == [1, 7, 42]
    with pytest.raises(CapplanError, match="cannot list"):
        procfs.iter_pids(tmp_path / "missing")
