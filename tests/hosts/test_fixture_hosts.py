"""capplan estimate on captured and constructed host trees: one directory, one test case.

Every directory under ``tests/fixtures/hosts/`` mirrors ``/`` (see ``tests/capture.py`` and
``tests/fixtures/hosts/derive.py``) and holds an ``expected.json`` written by hand: the
arguments, the exit status, and what the answer must be (worker count, budget source and
size, warning codes, processes skipped, or the exact error line). As in sqlite-utils, adding
a case is adding a directory.

The per-worker and fixed costs are not copied from capplan's output: ``independent_model``
below recomputes them from the fixture's files with its own regex and numpy's polyfit, from
the rules docs/how-it-measures.md states (USS + private hugetlb + VmPTE + 16 KiB stack per thread + slab from
threads and mappings; fixed = parents + sum of PSS - USS + one shared hugetlb segment;
since issue 14 each shared memory segment at its mapped size: ``shm_segments``).
"""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

from capacity.measure.kernel import DEFAULT_SLAB_SIZES, OTHER_PER_PROCESS, top_level_page_table

HOSTS = FIXTURES / "hosts"
CASES = sorted(p.name for p in HOSTS.iterdir() if (p / "expected.json").exists())
THREAD_SIZE = 16384  # x86-64 and arm64 kernel stacks (arch/x86/include/asm/page_64_types.h)
KB_LINE = re.compile(rb"^(\w+):\s+(\d+) kB$", re.MULTILINE)


def kb_fields(data: bytes) -> dict[str, int]:
    """Every ``Key: N kB`` line in bytes, summed over repeats (smaps has one block per VMA)."""
    found: dict[str, int] = {}
    for key, value in KB_LINE.findall(data):
        found[key.decode()] = found.get(key.decode(), 0) + int(value) * 1024
    return found


def slab_sizes(root: Path) -> dict[str, int]:
    sizes = dict(DEFAULT_SLAB_SIZES)  # caches merged away (fs_cache, cred_jar) keep these
    path = root / "proc/slabinfo"
    if path.exists():
        for line in path.read_text().splitlines()[2:]:
            name, _active, _total, objsize, *_ = line.split()
            if name in sizes:
                sizes[name] = int(objsize)
    return sizes


def slab_of(threads: int, maps: str, size: dict[str, int]) -> int:
    """The slab rule (docs/how-it-measures.md): per thread task_struct + pid; per process mm, signal, sighand,
    files, fs, cred, the PGD and small allocations; per mapping a vm_area_struct and a tenth of a maple node; per writable
    private mapping an anon_vma and two anon_vma_chain links."""
    vmas = [line.split()[1] for line in maps.splitlines() if line.strip()]
    writable_private = sum(1 for perms in vmas if perms[1] == "w" and perms[3] == "p")
    per_process = sum(
        size[k] for k in ("mm_struct", "signal_cache", "sighand_cache", "files_cache", "fs_cache")
    )
    per_process += size["cred_jar"]
    # the top-level page table (not in VmPTE) and small allocations, per process
    per_process += top_level_page_table() + OTHER_PER_PROCESS
    return round(
        threads * (size["task_struct"] + size["pid"])
        + per_process
        + len(vmas) * (size["vm_area_struct"] + size["maple_node"] / 10)
        + writable_private * (size["anon_vma"] + 2 * size["anon_vma_chain"])
    )


def read_process(root: Path, pid: int, size: dict[str, int]) -> dict[str, int] | None:
    """One process's figures from its files; None for a zombie (capplan skips it)."""
    base = root / "proc" / str(pid)
    after_comm = (base / "stat").read_bytes().rpartition(b")")[2].split()
    if after_comm[0] == b"Z":
        return None
    rollup_path = base / "smaps_rollup"
    pages = kb_fields((rollup_path if rollup_path.exists() else base / "smaps").read_bytes())
    status = kb_fields((base / "status").read_bytes())
    threads = int(re.search(rb"^Threads:\s+(\d+)", (base / "status").read_bytes(), re.M)[1])
    uss = pages["Private_Clean"] + pages["Private_Dirty"]
    return {
        "ppid": int(after_comm[1]),
        "start": int(after_comm[19]),
        "uss": uss,
        "shared_part": max(pages["Pss"] - uss, 0),
        # File pages it alone maps (clean private pages are file pages without swap), and
        # its PSS share of the file pages it shares: page cache, kept out of fixed.
        "private_file": min(pages["Private_Clean"], pages.get("Pss_File", 0)),
        "pss_file": pages.get("Pss_File", 0),
        "private_hugetlb": pages.get("Private_Hugetlb", 0),
        "shared_hugetlb": pages.get("Shared_Hugetlb", 0),
        "kernel_fixed": status.get("VmPTE", 0) + threads * THREAD_SIZE,
        "slab": slab_of(threads, (base / "maps").read_text(), size),
    }


SHM_VMA = re.compile(
    rb"^[0-9a-f]+-[0-9a-f]+ ...s \S+ (\S+) (\d+) +(/SYSV|/dev/zero \(deleted\)|/dev/shm/|"
    rb"/run/shm/|/memfd:|\[anon_shmem:)"
)


def shm_segments(root: Path, pid: int) -> dict[str, tuple[int, int, int]]:
    """A process's shared memory segments from its smaps, by device and inode: (Size, Pss,
    Private_Clean + Private_Dirty) in bytes, its VMAs of one segment summed."""
    path = root / "proc" / str(pid) / "smaps"
    found: dict[str, tuple[int, int, int]] = {}
    if not path.exists():
        return found
    for block in re.split(rb"\n(?=[0-9a-f]+-[0-9a-f]+ )", path.read_bytes()):
        head = SHM_VMA.match(block)
        if head is None:
            continue
        f = kb_fields(block)
        key = f"{head[1].decode()}:{head[2].decode()}"
        size, pss, private = found.get(key, (0, 0, 0))
        found[key] = (
            size + f["Size"],
            pss + f["Pss"],
            private + f["Private_Clean"] + f["Private_Dirty"],
        )
    return found


def slab_factor(root: Path, expected: dict, processes: dict[int, dict[str, int]]) -> float:
    """The calibration a cgroup of the workload's own gives: measured slab / estimated."""
    own = expected.get("calibration")
    if own is None:
        return 1.0
    directory = root / own["cgroup_dir"].lstrip("/")
    estimated = sum(p["slab"] for p in processes.values())
    if own["version"] == 2:
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        measured = int(stat["slab_unreclaimable"])
    else:  # v1: kmem usage minus page tables and stacks
        measured = int((directory / "memory.kmem.usage_in_bytes").read_text()) - sum(
            p["kernel_fixed"] for p in processes.values()
        )
    return min(max(measured / estimated, 0.2), 1.0)  # the cgroup may only lower the estimate


def independent_model(root: Path, expected: dict) -> dict[str, float]:
    size = slab_sizes(root)
    pids = expected["pids"] + list(expected.get("skipped_pids", []))
    figures = {pid: read_process(root, pid, size) for pid in pids}
    live = {pid: f for pid, f in figures.items() if f is not None}
    factor = slab_factor(root, expected, live)

    # Shared memory segments (issue 14): each counted once at its mapped size, the pages a
    # worker alone touched paid once (not in its cost), the touched rest already in PSS.
    segments = {pid: shm_segments(root, pid) for pid in live}
    configured: dict[str, int] = {}
    touched: dict[str, int] = {}
    for own in segments.values():
        for key, (size, pss, _private) in own.items():
            configured[key] = max(configured.get(key, 0), size)
            touched[key] = touched.get(key, 0) + pss
    untouched = sum(max(configured[key] - touched[key], 0) for key in configured)

    def own_shm(pid: int) -> int:
        return sum(private for _size, _pss, private in segments[pid].values())

    def cost(f: dict[str, int]) -> float:
        return f["uss"] + f["private_hugetlb"] + f["kernel_fixed"] + round(f["slab"] * factor)

    # Paid once: the parents, and since issue 13 every other non-worker role of the group
    # (PostgreSQL's background processes): expected.json's parent_pids.
    fixed = set(expected["parent_pids"])
    parents = [f for pid, f in live.items() if pid in fixed]
    workers = sorted(
        ((f["start"], pid, f) for pid, f in live.items() if pid not in fixed),
        key=lambda item: item[:2],
    )
    base = sum(cost(f) for f in parents) + sum(f["shared_part"] for f in live.values())
    base += max(f["shared_hugetlb"] for f in live.values())
    # The page cache of the workload's files is reclaimed before an OOM kill: not fixed.
    file_cache = sum(f["private_file"] for f in parents) + sum(
        max(f["pss_file"] - f["private_file"], 0) for f in live.values()
    )
    kernel_floor = sum(f["kernel_fixed"] + f["slab"] for f in parents)
    moved = sum(own_shm(pid) for _, pid, _ in workers)
    base = max(base - file_cache, kernel_floor) + moved + untouched
    totals = base + np.cumsum([cost(f) - own_shm(pid) for _, pid, f in workers])
    slope, intercept = np.polyfit(np.arange(1, len(workers) + 1), totals, 1)
    return {"per_instance": slope, "fixed": intercept, "workload_total": float(totals[-1])}


def meminfo(root: Path) -> dict[str, int]:
    return kb_fields((root / "proc/meminfo").read_bytes())


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64"),
    reason="capplan takes the kernel stack size from this machine: 16 KiB on x86-64 and arm64",
)
@pytest.mark.parametrize("case", CASES)
def test_fixture_host(case: str) -> None:
    root = HOSTS / case
    expected = json.loads((root / "expected.json").read_text())
    # Captured trees hold no pagemap or kpageflags: the expected figures are smaps figures.
    result = run_cli(
        "estimate",
        "--root",
        str(root),
        *expected["args"],
        "--samples",
        "1",
        "--method",
        "smaps",
        "--format",
        "json",
    )
    assert "Traceback" not in result.stderr
    assert result.code == expected["exit"], result.stderr
    if expected["exit"] != 0:
        assert result.stdout == ""
        assert result.stderr.splitlines()[0] == expected["error"].format(root=root)
        return

    doc = json.loads(result.stdout)
    workload = doc["workload"]
    assert sorted(workload["pids"]) == sorted(expected["pids"])
    assert workload["parent_pids"] == expected["parent_pids"]
    assert workload["worker_count"] == expected["worker_count"]
    if "name" in expected:
        assert workload["name"] == expected["name"]
    assert sorted(w["code"] for w in doc["warnings"]) == sorted(expected["warnings"])
    skipped = [(s["pid"], s["reason"]) for snap in doc["samples"] for s in snap["skipped"]]
    assert skipped == [tuple(item) for item in expected.get("skipped", [])]

    budget = doc["budget"]
    assert budget["source"] == expected["budget"]["source"]
    assert budget["total_bytes"] == expected["budget"]["total_bytes"]
    sources = {p["source"] for snap in doc["samples"] for p in snap["processes"]}
    assert sources == {expected.get("source", "smaps_rollup")}

    mine = independent_model(root, expected)
    model = doc["model"]
    assert model["breakdown"]["kernel_source"] == (
        "cgroup" if "calibration" in expected else "estimate"
    )
    assert model["per_instance_bytes"] == pytest.approx(mine["per_instance"], abs=2)
    assert model["fixed_bytes"] == pytest.approx(mine["fixed"], abs=2)

    # The default reserve: what else uses memory now, outside the workload.
    if "calibration" in expected and expected["budget"]["source"].startswith("memory limit"):
        directory = root / expected["calibration"]["cgroup_dir"].lstrip("/")
        usage_file = (
            "memory.current" if expected["calibration"]["version"] == 2 else "memory.usage_in_bytes"
        )
        usage = int((directory / usage_file).read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        inactive = int(stat.get("inactive_file", stat.get("total_inactive_file", 0)))
        reserve = max(0.0, usage - inactive - mine["workload_total"])
    else:
        host = meminfo(root)
        reserve = host["MemTotal"] - host["MemAvailable"] - mine["workload_total"]
    assert budget["reserve_bytes"] == pytest.approx(reserve, abs=2)
    room = budget["total_bytes"] - budget["reserve_bytes"] - model["fixed_bytes"]
    assert doc["prediction"]["max_instances"] == math.floor(room / model["per_instance_bytes"])

    if "relative_to" in expected:
        other = expected["relative_to"]
        base = json.loads(
            run_cli(
                "estimate",
                "--root",
                str(HOSTS / other["case"]),
                *expected["args"],
                "--samples",
                "1",
                "--format",
                "json",
            ).stdout
        )["model"]
        assert (
            model["per_instance_bytes"] - base["per_instance_bytes"] == other["per_instance_bytes"]
        )
        if "fixed_bytes" in other:
            assert model["fixed_bytes"] - base["fixed_bytes"] == other["fixed_bytes"]

    if expected.get("check_text_output"):
        text = run_cli("estimate", "--root", str(root), *expected["args"], "--samples", "1")
        assert text.code == 0, text.stderr
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text.stdout), "control characters"
        assert expected["name"].replace("\x1b[31m", "") in text.stdout


def test_every_fixture_directory_is_a_case() -> None:
    """A directory without expected.json would silently test nothing."""
    dirs = sorted(p.name for p in HOSTS.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert dirs == CASES


def test_cases_cover_the_issue() -> None:
    """The edge cases issue 2 names are all here, as captured or constructed trees."""
    for needed in (
        "demo",
        "apache2-prefork",
        "zombie-worker",
        "kernel-thread",
        "no-smaps-rollup",
        "no-pss-anon",
        "status-no-rssanon",
        "rollup-missing-pss",
        "hugepages",
        "markup-name",
        "cgroup-v2-limit",
        "cgroup-v1-own-limit",
        "cgroup-v2-unit",
    ):
        assert needed in CASES
