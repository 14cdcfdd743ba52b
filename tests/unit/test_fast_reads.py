"""The per-sample read path's fast code gives exactly what the plain parsers give (issue 7).

The parsers have fast paths (one regular expression for smaps_rollup, one ``find`` per key
for status, ``os.read`` instead of ``open()``) and the selection caches name matches per
process identity. Each is checked against a plain, line-by-line reading of the same bytes,
on every process of this host, and on inputs the fast paths must hand to the slow ones.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from conftest import start_demo

from capacity.errors import ParseError, SelectionError
from capacity.measure import procfs, procparse, workload
from capacity.measure.workload import Selector, select_processes
from capacity.records import MemoryRollup


def _host_files(name: str) -> list[bytes]:
    found = []
    for pid in procfs.iter_pids():
        try:
            with open(f"/proc/{pid}/{name}", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if data:
            found.append(data)
    return found


def _plain_rollup(data: bytes) -> MemoryRollup:
    """Line by line, as the parser did before its fast path."""
    return MemoryRollup(**procparse._parse_kb_fields(data.splitlines(), "plain"))


def test_rollup_fast_path_equals_line_parser_on_every_process() -> None:
    files = _host_files("smaps_rollup")
    assert len(files) >= 2  # at least pytest and its parent
    for data in files:
        # The kernel's files take the fast path (every line after the header matches).
        assert len(procparse._KB_LINE.findall(data)) == data.count(b"\n") - 1
        assert procparse.parse_smaps_rollup(data) == _plain_rollup(data)


def test_rollup_odd_input_takes_the_line_parser() -> None:
    header = b"00400000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\n"
    good = header + b"Rss:  100 kB\nPss:  50 kB\nSwap: 3 kB\n"
    assert procparse.parse_smaps_rollup(good) == MemoryRollup(
        rss_bytes=100 * 1024, pss_bytes=50 * 1024, swap_bytes=3 * 1024
    )
    # No trailing newline, a value without a unit: the line parser reads both.
    odd = header + b"Rss:  100 kB\nPss:  50 kB\nSwap: 7"
    assert procparse.parse_smaps_rollup(odd).swap_bytes == 7
    with pytest.raises(ParseError, match="bad value for Pss"):
        procparse.parse_smaps_rollup(header + b"Rss: 1 kB\nPss: x kB\n")
    with pytest.raises(ParseError, match="missing field Pss"):
        procparse.parse_smaps_rollup(header + b"Rss: 1 kB\n")


def _plain_smaps(data: bytes) -> list[procparse.SmapsEntry]:
    """Line by line with ``partition``, as the parser did before issue 7."""
    entries: list[procparse.SmapsEntry] = []
    current = None
    lines: list[bytes] = []
    for line in data.splitlines():
        if not line:
            continue
        head = line.split(b" ", 1)[0]
        if b"-" in head and not head.endswith(b":"):
            if current is not None:
                entries.append(procparse.SmapsEntry(mapping=current, fields=_fields(lines)))
            current = procparse._parse_maps_line(line, "plain")
            lines = []
        else:
            lines.append(line)
    if current is not None:
        entries.append(procparse.SmapsEntry(mapping=current, fields=_fields(lines)))
    return entries


def _fields(lines: list[bytes]) -> dict[str, int]:
    return procparse._parse_kb_fields(lines, "plain")


def test_smaps_parser_equals_line_parser_on_every_process() -> None:
    files = _host_files("smaps")
    assert len(files) >= 2
    for data in files:
        assert procparse.parse_smaps(data) == _plain_smaps(data)


def test_smaps_odd_lines() -> None:
    header = b"00400000-00401000 r-xp 00000000 fe:00 12 /usr/bin/x\n"
    data = b"Rss: 4 kB\n" + header + b"Rss:  8 kB\nPss: 3\nVmFlags: rd ex\n" + header
    assert procparse.parse_smaps(data) == _plain_smaps(data)
    first, second = procparse.parse_smaps(data)
    assert first.fields == {"rss_bytes": 8 * 1024, "pss_bytes": 3}
    assert second.fields == {}
    with pytest.raises(ParseError, match="bad value for Pss"):
        procparse.parse_smaps(header + b"Pss: many kB\n")


def _plain_status(data: bytes) -> dict[str, object]:
    values: dict[bytes, bytes] = {}
    for line in data.splitlines():
        key, sep, value = line.partition(b":")
        if sep:
            values[key] = value.strip()

    def size(key: bytes) -> int:
        if key not in values:
            return 0
        number, unit = values[key].split()
        assert unit == b"kB"
        return int(number) * 1024

    return {
        "name": values[b"Name"].decode("utf-8", "replace"),
        "state": values[b"State"][:1].decode(),
        "tgid": int(values[b"Tgid"]),
        "pid": int(values[b"Pid"]),
        "ppid": int(values[b"PPid"]),
        "uid": int(values[b"Uid"].split()[0]),
        "euid": int(values[b"Uid"].split()[1]),
        "threads": int(values[b"Threads"]),
        "vm_rss_bytes": size(b"VmRSS"),
        "rss_anon_bytes": size(b"RssAnon"),
        "rss_file_bytes": size(b"RssFile"),
        "rss_shmem_bytes": size(b"RssShmem"),
        "vm_pte_bytes": size(b"VmPTE"),
        "vm_swap_bytes": size(b"VmSwap"),
        "has_mm": b"VmRSS" in values,
        "voluntary_switches": _count(values, b"voluntary_ctxt_switches"),
        "nonvoluntary_switches": _count(values, b"nonvoluntary_ctxt_switches"),
    }


def _count(values: dict[bytes, bytes], key: bytes) -> int | None:
    return int(values[key]) if key in values else None


@pytest.mark.live
def test_status_fast_path_equals_line_parser_on_every_process() -> None:
    files = _host_files("status")
    assert len(files) >= 2
    # This process's status takes the one-match path; kernel threads (if listed) do not.
    with open("/proc/self/status", "rb") as handle:
        assert procparse._STATUS_IN_ORDER.match(handle.read())
    for data in files:
        parsed = procparse.parse_status(data)
        for field, expected in _plain_status(data).items():
            assert getattr(parsed, field) == expected, (field, data[:40])


def test_status_missing_and_bad_fields() -> None:
    with pytest.raises(ParseError, match="missing field Name"):
        procparse.parse_status(b"State:\tS (sleeping)\nTgid:\t1\nPid:\t1\nPPid:\t0\n")
    base = b"Name:\tx\nState:\tS\nTgid:\t5\nPid:\t5\nPPid:\t1\n"
    assert procparse.parse_status(base + b"VmPTE:\t  48 kB\n").vm_pte_bytes == 48 * 1024
    with pytest.raises(ParseError, match="bad value for VmPTE"):
        procparse.parse_status(base + b"VmPTE:\tlots kB\n")
    # A "Name" inside another line's value is not the Name line.
    tricky = b"Name:\ta\\nVmRSS: 9 kB\nState:\tS\nTgid:\t5\nPid:\t5\nPPid:\t1\n"
    assert not procparse.parse_status(tricky).has_mm


@pytest.mark.live
def test_read_gets_whole_files(tmp_path: Path) -> None:
    big = tmp_path / "big"
    content = os.urandom(3 * procfs.READ_SIZE + 17)
    big.write_bytes(content)
    assert procfs._read(big) == content
    assert procfs._read(str(big), single=True) == content  # a full first read goes on
    small = tmp_path / "small"
    small.write_bytes(b"abc")
    assert procfs._read(small, single=True) == b"abc"
    # maps is generated a few records per read() call: a short read is not its end.
    with open("/proc/self/maps", "rb") as handle:
        expected_lines = len(handle.read().splitlines())
    got = procfs._read(f"/proc/{os.getpid()}/maps").splitlines()
    assert abs(len(got) - expected_lines) <= 5  # the reads themselves may add a mapping


def test_readers_still_translate_errors() -> None:
    with pytest.raises(procfs.NoSuchProcess):
        procfs.read_status(2**22 + 12345)
    with pytest.raises(procfs.NoSuchProcess):
        procfs.read_rollup(2**22 + 12345)


@pytest.mark.live
def test_name_cache_gives_the_same_selection_and_skips_known_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache: workload.NameCache = {}
    with start_demo("--shared", "1M", "--private", "0", "--workers", "3") as demo:
        demo_pids = {demo.parent, *demo.workers}
        selector = Selector(cmd=procfs.read_stat(demo.parent).comm)
        plain = select_processes(selector)
        first = select_processes(selector, names=cache)
        assert first.pids == plain.pids
        assert demo_pids <= set(first.pids)
        demo_keys = {key for key in cache if key[0] in demo_pids}
        assert len(demo_keys) == len(demo_pids)

        calls: list[int] = []
        real = workload.matches_name

        def counting(name: str, stat: procparse.ProcStat, pid: int, root: Path) -> bool:
            calls.append(pid)
            return real(name, stat, pid, root)

        monkeypatch.setattr(workload, "matches_name", counting)
        second = select_processes(selector, names=cache)
        assert set(second.pids) >= demo_pids
        # Only processes started since the first call are read again.
        assert not set(calls) & set(first.pids)
        monkeypatch.undo()
    # Once the demo is gone (and reaped), its entries leave the cache on the next call.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in demo_pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(SelectionError):
        select_processes(selector, names=cache)
    assert not demo_keys & set(cache)
