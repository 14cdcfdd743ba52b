"""Pure parsers of /proc files: bytes in, records out, exactly as the kernel writes them.

No I/O here, so every quirk is tested on bytes (tests/unit and the captured hosts), and
the readers in ``procfs`` stay thin."""

from __future__ import annotations

import dataclasses
import re

from capacity.errors import (
    ParseError,
)
from capacity.records import HostMemory, MemoryRollup

# PF_KTHREAD in include/linux/sched.h: the flags field of /proc/PID/stat marks kernel threads.
PF_KTHREAD = 0x00200000

# Every figure capplan reads is a count or a size the kernel prints unsigned: at most 20
# decimal digits, and (once a kB count is made bytes) below 2**63, where the codec bounds
# what a model file may hold. A sign, a 5,000-digit number (whose int() is a ValueError
# beyond sys.get_int_max_str_digits) or a size of 2**63 bytes or more is not this kernel
# writing: ParseError, not a figure that says "the workers cost no memory".
MAX_VALUE = 2**63 - 1


def _number(text: bytes, path: str, what: str) -> int:
    """A decimal the kernel printed: ASCII digits only (``int`` would take ``-5``, ``+5``,
    ``5_000`` and surrounding blanks), at most 20 of them, below 2**63."""
    if not text.isdigit() or len(text) > 20:
        raise ParseError(path, f"bad value for {what}")
    value = int(text)
    if value > MAX_VALUE:
        raise ParseError(path, f"value for {what} out of range")
    return value


def _kib(count: int, path: str, what: str) -> int:
    if count > MAX_VALUE >> 10:
        raise ParseError(path, f"value for {what} out of range")
    return count * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcStat:
    """The fields of /proc/PID/stat that capplan uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    num_threads: int
    start_ticks: int
    rss_pages: int
    pgrp: int = 0
    session: int = 0  # a process started with setsid() leads its own session: launch uses it
    # CPU time in user and kernel mode, in clock ticks (sysconf(_SC_CLK_TCK)), all threads
    # of the thread group: fields 14 and 15 of proc(5).
    utime_ticks: int = 0
    stime_ticks: int = 0

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcStatus:
    """The fields of /proc/PID/status that capplan uses; sizes in bytes."""

    name: str
    state: str
    tgid: int
    pid: int
    ppid: int
    uid: int
    euid: int
    threads: int
    vm_rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int
    rss_shmem_bytes: int
    vm_pte_bytes: int
    vm_swap_bytes: int
    has_mm: bool
    # Times the process gave up the CPU (it waited: I/O, a lock, accept) and was made to
    # (its time slice ran out): of its main thread only, the kernel does not sum them over
    # threads (fs/proc/array.c); since Linux 2.6.23, None without.
    voluntary_switches: int | None = None
    nonvoluntary_switches: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Mapping:
    """One line of /proc/PID/maps (a VMA)."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SmapsEntry:
    """One VMA of /proc/PID/smaps: the maps line plus its page counts in bytes."""

    mapping: Mapping
    fields: dict[str, int]


def parse_stat(data: bytes, path: str = "stat") -> ProcStat:
    """Parse /proc/PID/stat.

    ``comm`` may hold spaces and parentheses (a process can name itself ``a) b (c``), so we
    split at the *last* ``)``, as procps and psutil do.
    """
    try:
        head, _, rest = data.rpartition(b")")
        pid_text, sep, comm = head.partition(b" (")
        fields = rest.split()
        # fields[0] is field 3 of proc(5) (state); field N is fields[N - 3].
        if not sep or not head:
            raise IndexError
        return ProcStat(
            pid=_number(pid_text, path, "pid"),
            comm=comm.decode("utf-8", "replace"),
            state=fields[0].decode("ascii", "replace"),
            ppid=_number(fields[1], path, "ppid"),
            pgrp=_number(fields[2], path, "pgrp"),
            session=_number(fields[3], path, "session"),
            flags=_number(fields[6], path, "flags"),
            utime_ticks=_number(fields[11], path, "utime"),
            stime_ticks=_number(fields[12], path, "stime"),
            num_threads=_number(fields[17], path, "num_threads"),
            start_ticks=_number(fields[19], path, "starttime"),
            rss_pages=_number(fields[21], path, "rss"),
        )
    except IndexError:
        raise ParseError(path, "not in the format of proc(5)") from None


def _kb_line_value(value: bytes, path: str, key: str) -> int:
    parts = value.split()
    number = _number(parts[0] if parts else b"", path, key)
    if len(parts) > 1 and parts[1].lower() == b"kb":
        return _kib(number, path, key)
    return number


_STATUS_KEYS = (
    b"Name State Tgid Pid PPid Uid Threads VmRSS RssAnon RssFile RssShmem VmPTE VmSwap "
    b"voluntary_ctxt_switches nonvoluntary_ctxt_switches"
)


_STATUS_NEEDLES = tuple((key, b"\n" + key + b":") for key in _STATUS_KEYS.split())


def _status_values(data: bytes) -> dict[bytes, bytes]:
    """The values of the lines capplan uses, stripped, by key (the first line of each key).

    One ``bytes.find`` per key: status has ~60 lines and capplan uses 13, and a Python loop
    over every line (or a regular expression tried at every line) cost more than the
    kernel's read of the file (issue 7).
    """
    text = b"\n" + data
    values: dict[bytes, bytes] = {}
    for key, needle in _STATUS_NEEDLES:
        start = text.find(needle)
        if start >= 0:
            start += len(needle)
            end = text.find(b"\n", start)
            values[key] = text[start : end if end >= 0 else len(text)].strip()
    return values


# The lines capplan uses, in the order every kernel since 4.5 writes them (RssAnon, RssFile
# and RssShmem are 4.5's). One match reads them all; a status that does not fit (a kernel
# thread or zombie without Vm* lines, an older kernel) goes through the general reader.
_STATUS_IN_ORDER = re.compile(
    rb"Name:\t([^\n]*)\n.*?\nState:\t(.).*?\nTgid:\t(\d+)\n.*?\nPid:\t(\d+)\nPPid:\t(\d+)\n"
    rb".*?\nUid:\t(\d+)\t(\d+).*?\nVmRSS:\s+(\d+) kB\nRssAnon:\s+(\d+) kB\n"
    rb"RssFile:\s+(\d+) kB\nRssShmem:\s+(\d+) kB\n.*?\nVmPTE:\s+(\d+) kB\n"
    rb"VmSwap:\s+(\d+) kB\n.*?\nThreads:\t(\d+)\n"
    # The last two lines (2.6.23+), optional: without them the match still holds.
    rb"(?:.*?\nvoluntary_ctxt_switches:\t(\d+)\nnonvoluntary_ctxt_switches:\t(\d+)(?:\n|\Z))?",
    re.DOTALL,
)


def parse_status(data: bytes, path: str = "status") -> ProcStatus:
    """Parse /proc/PID/status. Kernel threads and zombies have no Vm* lines: they read as 0."""
    match = _STATUS_IN_ORDER.match(data)
    if match is not None:
        (
            name, state, tgid, pid, ppid, uid, euid, rss, anon, file, shmem, pte, swap, threads,
            voluntary, nonvoluntary,
        ) = match.groups()  # fmt: skip
        numbers = [number for number in match.groups()[2:] if number is not None]
        if max(len(number) for number in numbers) > 15:  # < 2**63 bytes as kB
            return _parse_status_lines(data, path)
        if nonvoluntary is None and b"\nvoluntary_ctxt_switches:" in data:
            return _parse_status_lines(data, path)  # there, but not as a kernel writes it
        return ProcStatus(
            name=name.strip().decode("utf-8", "replace"),
            state=state.decode("ascii", "replace"),
            tgid=int(tgid),
            pid=int(pid),
            ppid=int(ppid),
            uid=int(uid),
            euid=int(euid),
            threads=int(threads),
            vm_rss_bytes=int(rss) * 1024,
            rss_anon_bytes=int(anon) * 1024,
            rss_file_bytes=int(file) * 1024,
            rss_shmem_bytes=int(shmem) * 1024,
            vm_pte_bytes=int(pte) * 1024,
            vm_swap_bytes=int(swap) * 1024,
            has_mm=True,
            voluntary_switches=None if voluntary is None else int(voluntary),
            nonvoluntary_switches=None if nonvoluntary is None else int(nonvoluntary),
        )
    return _parse_status_lines(data, path)


def _parse_status_lines(data: bytes, path: str) -> ProcStatus:
    values = _status_values(data)

    def need(key: bytes) -> bytes:
        if key not in values:
            raise ParseError(path, f"missing field {key.decode()}")
        return values[key]

    def size(key: bytes) -> int:
        value = values.get(key)
        if value is None:
            return 0
        if value.endswith(b" kB") and value[:-3].isdigit() and len(value) <= 18:  # a kernel's
            return int(value[:-3]) * 1024
        return _kb_line_value(value, path, key.decode())

    def size_needed(key: bytes) -> int:
        need(key)
        return size(key)

    def ids(key: bytes) -> tuple[int, int]:
        parts = values.get(key, b"0 0").split() or [b""]
        name = key.decode()
        return _number(parts[0], path, name), _number(parts[min(1, len(parts) - 1)], path, name)

    def number(key: bytes, default: bytes | None = None) -> int:
        text = values.get(key, default) if default is not None else need(key)
        return _number(text if text is not None else b"", path, key.decode())

    def optional(key: bytes) -> int | None:
        return number(key) if key in values else None

    uid, euid = ids(b"Uid")
    try:
        return ProcStatus(
            # Name is escaped by the kernel (\n as "\\n"); it stays raw and untrusted here.
            name=need(b"Name").decode("utf-8", "replace"),
            state=need(b"State")[:1].decode("ascii", "replace"),
            tgid=number(b"Tgid"),
            pid=number(b"Pid"),
            ppid=number(b"PPid"),
            uid=uid,
            euid=euid,
            threads=number(b"Threads", b"1"),
            vm_rss_bytes=size(b"VmRSS"),
            rss_anon_bytes=size(b"RssAnon"),  # RssAnon/RssFile/RssShmem: since Linux 4.5
            rss_file_bytes=size(b"RssFile"),
            rss_shmem_bytes=size(b"RssShmem"),
            # Since Linux 2.6.10 for every process with memory: missing, it is damage, not 0.
            vm_pte_bytes=size(b"VmPTE") if b"VmRSS" not in values else size_needed(b"VmPTE"),
            vm_swap_bytes=size(b"VmSwap"),  # since Linux 2.6.34
            has_mm=b"VmRSS" in values,
            voluntary_switches=optional(b"voluntary_ctxt_switches"),  # since Linux 2.6.23
            nonvoluntary_switches=optional(b"nonvoluntary_ctxt_switches"),
        )
    except ValueError:
        raise ParseError(path, "a numeric field is not a number") from None


# smaps_rollup key -> MemoryRollup field. Pss_Anon/Pss_File/Pss_Shmem appear in the rollup
# only (Linux 5.3); summing them with Pss would double-count (ps_mem #68).
_ROLLUP_FIELDS: dict[bytes, str] = {
    b"Rss": "rss_bytes",
    b"Pss": "pss_bytes",
    b"Pss_Anon": "pss_anon_bytes",
    b"Pss_File": "pss_file_bytes",
    b"Pss_Shmem": "pss_shmem_bytes",
    b"Shared_Clean": "shared_clean_bytes",
    b"Shared_Dirty": "shared_dirty_bytes",
    b"Private_Clean": "private_clean_bytes",
    b"Private_Dirty": "private_dirty_bytes",
    b"Anonymous": "anonymous_bytes",
    b"AnonHugePages": "anon_huge_bytes",
    b"ShmemPmdMapped": "shmem_huge_bytes",
    b"Swap": "swap_bytes",
    b"SwapPss": "swap_pss_bytes",  # since Linux 4.3
    b"Shared_Hugetlb": "shared_hugetlb_bytes",
    b"Private_Hugetlb": "private_hugetlb_bytes",
    b"Locked": "locked_bytes",
}


# "Key: N kB" lines, each found from the newline before it: a pattern that starts with a
# literal is searched for at C speed, where a ^ anchor is tried at every position (a
# regular expression anchored with ^ read smaps 50 times slower).
_KB_LINE = re.compile(rb"\n(\w+): +(\d+) kB(?=\n)")


def _parse_kb_fields(lines: list[bytes], path: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in lines:
        key, sep, value = line.partition(b":")
        if not sep:
            continue
        name = _ROLLUP_FIELDS.get(key)
        if name is not None:
            found[name] = _kb_line_value(value, path, key.decode())
    return found


def parse_smaps_rollup(data: bytes, path: str = "smaps_rollup") -> MemoryRollup:
    """Parse /proc/PID/smaps_rollup (Linux 4.14+). Rss and Pss are required.

    Fast path: when every line after the header is ``Key: N kB`` (always, from a kernel),
    one regular expression reads them all; anything else goes through the line parser,
    which names the bad line. Both give the same record for the same bytes.
    """
    matches = _KB_LINE.findall(data)
    if data.endswith(b"\n") and len(matches) == data.count(b"\n") - 1:
        found = {}
        for key, value in matches:
            name = _ROLLUP_FIELDS.get(key)
            if name is not None:
                found[name] = _kib(_number(value, path, key.decode()), path, key.decode())
    else:
        found = _parse_kb_fields(data.splitlines(), path)
    for required in ("rss_bytes", "pss_bytes"):
        if required not in found:
            key = required.removesuffix("_bytes").capitalize()
            raise ParseError(path, f"missing field {key}")
    return MemoryRollup(**found)


def _parse_maps_line(line: bytes, path: str) -> Mapping:
    # address perms offset dev inode [pathname]; the pathname may contain spaces.
    parts = line.split(None, 5)
    try:
        start_text, _, end_text = parts[0].partition(b"-")
        start, end = _hex(start_text), _hex(end_text)
        if end < start:
            raise ValueError
        return Mapping(
            start=start,
            end=end,
            perms=parts[1].decode("ascii", "replace"),
            offset=_hex(parts[2]),
            dev=parts[3].decode("ascii", "replace"),
            inode=_number(parts[4], path, "inode"),
            path=parts[5].decode("utf-8", "replace") if len(parts) > 5 else "",
        )
    except (ValueError, IndexError, ParseError):
        raise ParseError(path, f"bad mapping line {line[:60]!r}") from None


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _hex(text: bytes) -> int:
    """An address or offset as maps prints it: 1 to 16 hex digits (``int(x, 16)`` would
    take ``0x``, signs, underscores and any length)."""
    if not 0 < len(text) <= 16 or not _HEX_DIGITS.issuperset(text):
        raise ValueError(text)
    return int(text, 16)


def parse_maps(data: bytes, path: str = "maps") -> list[Mapping]:
    """Parse /proc/PID/maps into VMAs."""
    return [_parse_maps_line(line, path) for line in data.splitlines() if line.strip()]


# "Key:" tokens of smaps_rollup/smaps lines -> MemoryRollup field.
_KB_KEYS = {key + b":": name for key, name in _ROLLUP_FIELDS.items()}


def parse_smaps(data: bytes, path: str = "smaps") -> list[SmapsEntry]:
    """Parse /proc/PID/smaps into one entry per VMA with its page counts in bytes.

    One pass over the lines with one ``split`` each: a ``Key: N kB`` line (all but two of
    each mapping's ~25) is read from its three tokens; anything else goes through the
    general line reading. About 9 µs per mapping, against 17 µs reading each line with
    ``partition`` and more with regular expressions (measured for issue 7): smem reads
    smaps this way too, and ``capplan inspect`` should not be slower than smem.
    """
    entries: list[SmapsEntry] = []
    fields: dict[str, int] | None = None  # of the current mapping; None before the first
    for line in data.split(b"\n"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 3 and parts[2] == b"kB":
            name = _KB_KEYS.get(parts[0])
            if name is not None and fields is not None:
                what = parts[0][:-1].decode()
                fields[name] = _kib(_number(parts[1], path, what), path, what)
            continue
        head = parts[0]
        if b"-" in head and not head.endswith(b":"):
            fields = {}
            entries.append(SmapsEntry(mapping=_parse_maps_line(line, path), fields=fields))
        elif fields is not None:
            key, sep, value = line.partition(b":")
            name = _ROLLUP_FIELDS.get(key)
            if sep and name is not None:
                fields[name] = _kb_line_value(value, path, key.decode())
    return entries


def rollup_from_smaps(entries: list[SmapsEntry]) -> MemoryRollup:
    """Sum per-VMA smaps into a rollup, for kernels older than 4.14.

    The per-VMA Pss lines are truncated to whole kB, so the sum under-reports PSS by up to
    1 KiB per VMA (13 % for an apache2 worker with 197 VMAs, measured). Pss_Anon/File/Shmem
    exist only in the rollup; here they stay 0.
    """
    totals: dict[str, int] = {}
    for entry in entries:
        for name, value in entry.fields.items():
            totals[name] = totals.get(name, 0) + value
    totals.setdefault("rss_bytes", 0)
    totals.setdefault("pss_bytes", 0)
    return MemoryRollup(**totals)


_MEMINFO_KEYS = frozenset(
    b"MemTotal MemAvailable MemFree Buffers Cached SwapTotal SwapFree PageTables KernelStack "
    b"SUnreclaim".split()
)


def parse_meminfo(data: bytes, path: str = "meminfo") -> HostMemory:
    """Parse /proc/meminfo: the lines capplan uses, each strictly (``Key: N kB``); the
    others are not read, so a kernel's odd figure in one of them (Committed_AS has been
    printed as 2**64 - N) does not stop a measurement."""
    values: dict[bytes, int] = {}
    for line in data.splitlines():
        key, sep, value = line.partition(b":")
        if sep and key in _MEMINFO_KEYS and key not in values:
            values[key] = _kb_line_value(value, path, key.decode())
    if b"MemTotal" not in values:
        raise ParseError(path, "missing field MemTotal")
    available = values.get(b"MemAvailable")  # since Linux 3.14
    if available is None:
        # Before 3.14 the kernel gave no estimate; free + page cache is the usual stand-in.
        available = values.get(b"MemFree", 0) + values.get(b"Buffers", 0) + values.get(b"Cached", 0)
    return HostMemory(
        mem_total_bytes=values[b"MemTotal"],
        mem_available_bytes=available,
        mem_free_bytes=values.get(b"MemFree", 0),
        swap_total_bytes=values.get(b"SwapTotal", 0),
        swap_free_bytes=values.get(b"SwapFree", 0),
        page_tables_bytes=values.get(b"PageTables", 0),
        kernel_stack_bytes=values.get(b"KernelStack", 0),
        slab_unreclaimable_bytes=values.get(b"SUnreclaim", 0),
    )


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """NUL-separated argv. A process may rewrite it (php-fpm, postgres): it is untrusted."""
    if not data:
        return ()
    parts = data.rstrip(b"\0").split(b"\0")
    if len(parts) == 1 and b" " in parts[0]:
        # Processes that rewrite argv (php-fpm: "php-fpm: pool www") leave one string.
        return (parts[0].decode("utf-8", "replace"),)
    return tuple(part.decode("utf-8", "replace") for part in parts)


def parse_proc_cgroup(data: bytes) -> list[tuple[int, tuple[str, ...], str]]:
    """Parse /proc/PID/cgroup: (hierarchy id, controllers, path); v2 is id 0 with no controllers."""
    result: list[tuple[int, tuple[str, ...], str]] = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hierarchy = int(parts[0])
        except ValueError:
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        result.append((hierarchy, controllers, parts[2]))
    return result


def parse_bracketed_choice(data: bytes) -> str:
    """``always [madvise] never`` -> ``madvise`` (sysfs THP knobs)."""
    text = data.decode("ascii", "replace")
    start, end = text.find("["), text.find("]")
    if start != -1 and end > start:
        return text[start + 1 : end]
    return text.strip()


def count_maps_lines(data: bytes) -> tuple[int, int]:
    """(VMAs, writable private VMAs) of a maps file, without building Mapping records."""
    total = writable_private = 0
    for line in data.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 2:
            continue
        total += 1
        perms = parts[1]
        if perms[1:2] == b"w" and perms[3:4] == b"p":
            writable_private += 1
    return total, writable_private


# x86-64 lists its legacy vsyscall page in maps, but it is no VMA and needs no page tables
# of the process (arch/x86/entry/vsyscall).
_GATE_AREA_START = 0xFFFFFFFFFF600000


def count_address_regions(data: bytes, span: int) -> int:
    """Separate regions of a maps file's address space: runs of mappings less than ``span``
    bytes apart (the reach of one last-level page-table page: 2 MiB with 4 KiB pages).

    ASLR places the program, its heap, the mmap area and the stack at random offsets on
    every exec, so in another instance of the same program each region may straddle one
    more ``span`` boundary and need one more page-table page.
    """
    ranges = []
    for line in data.splitlines():
        address = line.split(None, 1)[0] if line.strip() else b""
        low, sep, high = address.partition(b"-")
        if not sep:
            continue
        try:
            start, end = int(low, 16), int(high, 16)
        except ValueError:
            continue
        if start < _GATE_AREA_START:
            ranges.append((start, end))
    regions, reach = 0, -1
    for start, end in sorted(ranges):
        if start - reach >= span or regions == 0:
            regions += 1
        reach = max(reach, end)
    return regions


def parse_signal_masks(data: bytes, path: str = "status") -> tuple[int, int]:
    """``(SigIgn, SigCgt)`` of /proc/PID/status: the signals a process ignores and catches,
    as the kernel prints them (16 hex digits each, since Linux 2.6). Two forks of one
    program that differ here run different code: apache2's workers and mod_cgid's daemon."""
    values = _status_values_of(data, (b"SigIgn", b"SigCgt"))
    masks = []
    for key in (b"SigIgn", b"SigCgt"):
        text = values.get(key)
        if text is None:
            raise ParseError(path, f"missing field {key.decode()}")
        try:
            masks.append(_hex(text))
        except ValueError:
            raise ParseError(path, f"bad value for {key.decode()}") from None
    return masks[0], masks[1]


def _status_values_of(data: bytes, keys: tuple[bytes, ...]) -> dict[bytes, bytes]:
    text = b"\n" + data
    values: dict[bytes, bytes] = {}
    for key in keys:
        start = text.find(b"\n" + key + b":")
        if start >= 0:
            start += len(key) + 2
            end = text.find(b"\n", start)
            values[key] = text[start : end if end >= 0 else len(text)].strip()
    return values


# Debian, Red Hat and the Apache build itself load the MPM as a module: mod_mpm_event.so.
_MPM_MODULE = re.compile(rb"/mod_mpm_([A-Za-z0-9_]+)\.so(?: \(deleted\))?$", re.MULTILINE)


def parse_mapped_mpm(data: bytes) -> str | None:
    """The apache2/httpd MPM that a maps file shows loaded (``mod_mpm_event.so`` -> ``event``),
    or None: an MPM built into the binary maps no module of its own."""
    found = _MPM_MODULE.search(data)
    return found.group(1).decode("ascii") if found is not None else None
