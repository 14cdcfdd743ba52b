"""Benchmark: what a full measurement of a workload costs, capplan against smem, ps_mem and
psutil, on the same processes (not a test: it prints figures and writes a report).

Run as root from the repository root, with the Python that has capplan's dependencies:

    python3 benchmarks/measurement_cost.py                 # everything; writes reports/performance.md
    python3 benchmarks/measurement_cost.py --quick         # 10 and 100 workers, 3 repeats, no report
    python3 benchmarks/measurement_cost.py --sizes 10,500 --repeats 7 --report /tmp/perf.md

It installs what is missing: ``smem`` with apt-get, ``ps_mem`` and ``psutil`` with pip.

Workloads (``capacity/testing/forkserver.py --idle``, a pre-forking server whose idle workers block in
``read()``, so they cost no CPU while they are measured): 10, 100 and 500 workers of a
typical small Python worker (``--shared 16M --private 4M``: about 30 MiB resident each);
150 small workers (``--shared 1M --private 0``, issue 7's goal for the exact path); and
2,000 tiny workers for scale. Every workload runs in its own process group and is killed
at the end, on errors and on Ctrl-C alike.

What is timed, per workload, in rounds (each round runs every tool once, so a busy moment
on a shared host hits all tools alike); figures are medians over the rounds:

in-process (``time.perf_counter`` inside this Python process, capplan imported from this
checkout; no interpreter start-up):

* capplan snapshot read: ``Sampler.snapshot().read_seconds``, what ``capplan estimate``
  reports as ``timing.sample_read_seconds`` (smaps_rollup + status + stat of every
  process; a warm sample: the first sample also reads each process's maps once);
* capplan snapshot whole: the same ``snapshot()`` call end to end (adds the selection
  scan of every /proc/PID/stat on the host, meminfo and the cgroup);
* capplan per-mapping: ``procfs.read_smaps`` (read and parse /proc/PID/smaps) of every
  process, what ``capplan inspect --method smaps`` reads;
* capplan exact: ``pages.measure``, the exact tier (maps, pagemap, kpagecount, kpageflags,
  classification);
* bare read: ``open(f"/proc/{pid}/smaps_rollup", "rb").read()`` of every process;
* psutil scan: ``psutil.Process(pid).memory_full_info()`` of every process.

whole-process (wall time of a child process from ``Popen`` to exit; includes starting
Python, about 40 ms on the reference host, see the ``python -c pass`` row):

* capplan estimate --samples 1 --method smaps, and with the default method (exact where
  available), run as the console script runs it (``from capacity.cli import main``) from
  this checkout; their peak RSS (VmHWM, read by capplan's process as it exits);
* bare read and psutil scan as one-line Python scripts;
* ``ps_mem -p PID,PID,...`` and ``smem -P TAG`` (smem selects by command line: the
  workload's carries a unique tag).

It also times ``capplan --help``, the model fit and prediction at 10,000 points (1,000
workers x 10 samples), and, to ground ``--deep``'s thresholds, one process of 4 GiB
resident and one of 20,000 mappings: how long each reader takes on it and how long the
process's own ``mmap()`` calls stall meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from capacity.measure import pages, parallel, procfs, sampler
from capacity.measure.workload import Selector
from capacity.model import fitting as model
from capacity.records import HostMemory

REPO = Path(__file__).resolve().parent.parent
# Child processes (capplan, smem's python) import this checkout's package too.
os.environ["PYTHONPATH"] = str(REPO) + (
    os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
)

PYTHON = sys.executable
FORKSERVER = REPO / "capacity" / "testing" / "forkserver.py"
MiB = 1 << 20


class Stop(BaseException):
    """SIGTERM: unwind so that every workload is killed."""


# --------------------------------------------------------------------------- tools


def ensure_tools() -> dict[str, str]:
    """Install smem (apt), ps_mem and psutil (pip) where missing; their versions."""
    if shutil.which("smem") is None:
        print("installing smem (apt-get install smem)...", flush=True)
        install = ["apt-get", "install", "-y", "-q", "smem"]
        if subprocess.run(install, check=False, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            subprocess.run(install, check=True, capture_output=True)
    for module in ("ps_mem", "psutil"):
        probe = [PYTHON, "-c", f"import {module}"]
        if subprocess.run(probe, check=False, capture_output=True).returncode:
            print(f"installing {module} (pip install {module})...", flush=True)
            subprocess.run(
                [PYTHON, "-m", "pip", "install", "-q", module], check=True, capture_output=True
            )
    versions = {}
    smem = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "smem"],
        check=False,
        capture_output=True,
        text=True,
    )
    versions["smem"] = smem.stdout.strip() or "unknown"
    for module in ("ps_mem", "psutil"):
        found = subprocess.run(
            [PYTHON, "-c", f"import importlib.metadata as m; print(m.version('{module}'))"],
            check=False,
            capture_output=True,
            text=True,
        )
        versions[module] = found.stdout.strip() or "unknown"
    return versions


def ps_mem_command() -> list[str]:
    script = Path(PYTHON).parent / "ps_mem"
    return [str(script)] if script.exists() else [shutil.which("ps_mem") or "ps_mem"]


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    label: str
    process: subprocess.Popen[bytes]
    tag: str
    parent: int
    workers: list[int]

    @property
    def pids(self) -> list[int]:
        return [self.parent, *self.workers]

    @property
    def smem_pattern(self) -> str:
        """A regular expression for the tag that smem's own command line does not match."""
        return f"{self.tag[:-1]}[{self.tag[-1]}]"


@contextlib.contextmanager
def started(label: str, workers: int, shared: str, private: str) -> Iterator[Workload]:
    """The fork server with ``workers`` workers; its whole process group dies afterwards."""
    tag = f"capplan-bench-{os.getpid()}-{random.randrange(1 << 30):x}"
    command = [PYTHON, str(FORKSERVER), "--idle", "--workers", str(workers), "--shared", shared]
    command += ["--private", private, "--tag", tag]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if not line or line[0] != b"ready":
            raise RuntimeError(f"the fork server did not start: {line!r}")
        pids = [int(p) for p in line[1:]]
        yield Workload(label, process, tag, pids[0], pids[1:])
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --------------------------------------------------------------------------- timing


@dataclass
class Row:
    name: str
    kind: str  # "in-process" or "whole-process"
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds (user + system)
    peak_rss_kib: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else math.nan

    def add(self, wall: float, cpu: float | None = None) -> None:
        self.times.append(wall)
        if cpu is not None:
            self.cpu.append(cpu)

    def run(self, function: Callable[[], object]) -> object:
        """Run ``function`` in this process; record its wall and CPU time."""
        cpu = time.process_time()
        began = time.perf_counter()
        result = function()
        self.add(time.perf_counter() - began, time.process_time() - cpu)
        return result


def timed(function: Callable[[], object]) -> float:
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def run_child(command: Sequence[str]) -> tuple[float, float, bytes]:
    """Wall time, CPU time (user + system, from wait4) and stdout of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        data = out.read()
        if child.returncode != 0:
            err.seek(0)
            detail = err.read()[-500:]
            raise RuntimeError(f"{' '.join(command[:4])}... exited {child.returncode}: {detail!r}")
    return wall, usage.ru_utime + usage.ru_stime, data


def run_capplan(arguments: Sequence[str]) -> tuple[float, float, int, bytes]:
    """Wall time, CPU time, peak RSS (KiB, VmHWM) and stdout of one ``capplan`` process."""
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as hwm:
        os.environ["CAPPLAN_BENCH_HWM"] = hwm.name
        try:
            wall, cpu, data = run_child([PYTHON, "-c", CAPPLAN_SCRIPT, *arguments])
        finally:
            del os.environ["CAPPLAN_BENCH_HWM"]
        peak = int(hwm.read() or 0)
    return wall, cpu, peak, data


# capplan as its console script runs it (``from capacity.cli import main``), reporting its
# peak RSS on exit: VmHWM of its own memory map. ``ru_maxrss`` from wait4 would not do: a
# child started with vfork keeps the parent's high-water mark across exec.
CAPPLAN_SCRIPT = textwrap.dedent(
    """
    import atexit, os, sys

    def report():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    with open(os.environ["CAPPLAN_BENCH_HWM"], "w") as out:
                        out.write(line.split()[1])

    atexit.register(report)
    from capacity.cli import main

    main(sys.argv[1:])
    """
)
BARE_SCRIPT = textwrap.dedent(
    """
    import sys
    for pid in open(sys.argv[1]).read().split():
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            f.read()
    """
)
PSUTIL_SCRIPT = textwrap.dedent(
    """
    import sys, psutil
    for pid in open(sys.argv[1]).read().split():
        psutil.Process(int(pid)).memory_full_info()
    """
)


def bare_read(pids: Sequence[int]) -> None:
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            handle.read()


def psutil_scan(pids: Sequence[int]) -> None:
    import psutil

    for pid in pids:
        psutil.Process(pid).memory_full_info()


@dataclass
class CaseResult:
    label: str
    processes: int
    resident_mib: float
    rows: dict[str, Row]
    cold_read: float
    checks: list[str]
    stages: dict[str, float] = field(default_factory=dict)


def measure_case(workload: Workload, repeats: int, exact: bool) -> CaseResult:
    pids = workload.pids
    selector = Selector(pid=workload.parent)
    reader = sampler.Sampler(selector)  # as capplan estimate reads: default readers
    single = sampler.Sampler(selector, readers=1)
    first = reader.snapshot(0)
    single.snapshot(0)
    checks = []
    if len(first.processes) != len(pids):
        raise RuntimeError(f"capplan read {len(first.processes)} processes, expected {len(pids)}")
    # The exact walk's order: parents first, then workers in fork order (as the sampler).
    ordered = sorted(first.processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    members = [(p.pid, p.start_ticks) for p in ordered]
    resident = sum(p.rollup.rss_bytes for p in first.processes) / MiB
    with tempfile.NamedTemporaryFile("w", suffix=".pids", delete=False) as listing:
        listing.write(" ".join(map(str, pids)))
    pid_file = listing.name
    capplan = ["estimate", "--pid", str(workload.parent)]
    capplan += ["--samples", "1", "--interval", "0", "--format", "json"]
    rows = {
        name: Row(name, kind)
        for name, kind in [
            ("capplan snapshot read", "in-process"),
            ("capplan snapshot read, 1 thread", "in-process"),
            ("capplan snapshot whole", "in-process"),
            ("capplan per-mapping (smaps)", "in-process"),
            ("capplan exact (pagemap)", "in-process"),
            ("bare read of smaps_rollup", "in-process"),
            ("psutil memory_full_info scan", "in-process"),
            ("capplan estimate --method smaps", "whole-process"),
            ("capplan estimate (default method)", "whole-process"),
            ("bare read of smaps_rollup (script)", "whole-process"),
            ("psutil scan (script)", "whole-process"),
            ("ps_mem -p PIDS", "whole-process"),
            ("smem -P TAG", "whole-process"),
        ]
    }
    if not exact:
        del rows["capplan exact (pagemap)"]
    try:
        for round_number in range(repeats):
            snapshot = rows["capplan snapshot whole"].run(
                lambda index=round_number + 1: reader.snapshot(index)
            )
            rows["capplan snapshot read"].add(snapshot.read_seconds)  # type: ignore[attr-defined]
            one = single.snapshot(round_number + 1)
            rows["capplan snapshot read, 1 thread"].add(one.read_seconds)
            rows["capplan per-mapping (smaps)"].run(lambda: [procfs.read_smaps(p) for p in pids])
            if exact:
                walk = rows["capplan exact (pagemap)"].run(lambda: pages.measure(members, 1))
                if walk.skipped:  # type: ignore[attr-defined]
                    raise RuntimeError(f"the exact walk skipped {walk.skipped[:3]}")  # type: ignore[attr-defined]
            rows["bare read of smaps_rollup"].run(lambda: bare_read(pids))
            rows["psutil memory_full_info scan"].run(lambda: psutil_scan(pids))

            for name, extra in [
                ("capplan estimate --method smaps", ["--method", "smaps"]),
                ("capplan estimate (default method)", []),
            ]:
                wall, cpu, peak, out = run_capplan([*capplan, *extra])
                rows[name].add(wall, cpu)
                rows[name].peak_rss_kib.append(peak)
                doc = json.loads(out)
                if doc["workload"]["worker_count"] != len(workload.workers):
                    raise RuntimeError(f"{name} saw {doc['workload']['worker_count']} workers")
                if round_number == 0:
                    checks.append(
                        f"{name}: method {doc['model']['method']}, "
                        f"{doc['workload']['worker_count']} workers, "
                        f"timing.sample_read_seconds {doc['timing']['sample_read_seconds']}"
                    )
            wall, cpu, _ = run_child([PYTHON, "-c", BARE_SCRIPT, pid_file])
            rows["bare read of smaps_rollup (script)"].add(wall, cpu)
            wall, cpu, _ = run_child([PYTHON, "-c", PSUTIL_SCRIPT, pid_file])
            rows["psutil scan (script)"].add(wall, cpu)
            wall, cpu, out = run_child([*ps_mem_command(), "-p", ",".join(map(str, pids))])
            rows["ps_mem -p PIDS"].add(wall, cpu)
            if round_number == 0:
                checks.append(f"ps_mem: {_ps_mem_count(out)} processes counted")
            wall, cpu, out = run_child(["smem", "-P", workload.smem_pattern])
            rows["smem -P TAG"].add(wall, cpu)
            if round_number == 0:
                listed = len(out.decode(errors="replace").strip().splitlines()) - 1
                checks.append(f"smem: {listed} processes listed")
                if listed != len(pids):
                    raise RuntimeError(f"smem listed {listed} processes, expected {len(pids)}")
    finally:
        os.unlink(pid_file)
    return CaseResult(workload.label, len(pids), resident, rows, first.read_seconds, checks)


STAGES = (
    "selection scan",
    "select --pid",
    "select --cmd",
    "sample (2 samples)",
    "accounting",
    "build_estimate",
    "text report",
    "JSON report",
    "JSON load",
)


def pipeline_stages(workload: Workload) -> dict[str, float]:
    """CPU seconds of each stage of ``capplan estimate`` on this workload, in-process.

    Divided by the process count, equal figures at 500 and 2,000 processes mean that no
    stage is quadratic in the process count.
    """
    from capacity import modelfile
    from capacity.measure import workload as selection
    from capacity.measure.environment import read_environment
    from capacity.model import accounting, assemble
    from capacity.render import report

    selector = Selector(pid=workload.parent)
    comm = procfs.read_stat(workload.parent).comm
    stats = selection.scan()
    cpu: dict[str, float] = {}

    def stage(name: str, function: Callable[[], object]) -> object:
        began = time.process_time()
        result = function()
        cpu[name] = time.process_time() - began
        return result

    stage("selection scan", selection.scan)
    stage("select --pid", lambda: selection.select_processes(selector, stats=stats))
    names: selection.NameCache = {}
    selection.select_processes(Selector(cmd=comm), stats=stats, names=names)  # fills the cache
    stage(
        "select --cmd",
        lambda: selection.select_processes(Selector(cmd=comm), stats=stats, names=names),
    )
    snapshots = stage(
        "sample (2 samples)",
        lambda: sampler.collect(selector, 2, 0.0, sampler=sampler.Sampler(selector, readers=1)),
    )
    stage("accounting", lambda: accounting.smaps_points(snapshots))  # type: ignore[arg-type]
    environment = read_environment()
    estimate = stage(
        "build_estimate",
        lambda: assemble.build_estimate(
            workload=assemble.describe_workload(str(selector), snapshots),  # type: ignore[arg-type]
            snapshots=snapshots,  # type: ignore[arg-type]
            environment=environment,
            budget_options=assemble.BudgetOptions(),
            total_seconds=0.0,
            samples_requested=2,
        ),
    )
    stage("text report", lambda: report.RENDERERS["text"](estimate))  # type: ignore[arg-type]
    document = stage("JSON report", lambda: report.RENDERERS["json"](estimate))  # type: ignore[arg-type]
    stage("JSON load", lambda: modelfile.estimate_from_dict(json.loads(document)))  # type: ignore[arg-type]
    return cpu


def _ps_mem_count(out: bytes) -> str:
    # ps_mem groups processes by program: "... = 123.4 MiB\tpython3.11 (501)"
    counts = []
    for line in out.decode(errors="replace").splitlines():
        if "(" in line and line.rstrip().endswith(")"):
            inside = line.rstrip()[line.rstrip().rfind("(") + 1 : -1]
            if inside.isdigit():
                counts.append(int(inside))
    return str(sum(counts)) if counts else "?"


# --------------------------------------------------------------------------- other figures


def help_time(repeats: int) -> tuple[float, float]:
    """``capplan --help`` and ``python -c pass``, whole process, medians."""
    helps = [run_capplan(["--help"])[0] for _ in range(repeats * 2)]
    floor = [run_child([PYTHON, "-c", "pass"])[0] for _ in range(repeats * 2)]
    return statistics.median(helps), statistics.median(floor)


IMPORTS = ("typer", "numpy", "scipy.special", "scipy.stats", "matplotlib", "capacity.cli")


def import_times(repeats: int) -> dict[str, float]:
    """``python -c "import X"`` minus ``python -c pass``, whole process, medians."""
    floor = statistics.median(run_child([PYTHON, "-c", "pass"])[0] for _ in range(repeats))
    found = {}
    for module in IMPORTS:
        try:
            times = [run_child([PYTHON, "-c", f"import {module}"])[0] for _ in range(repeats)]
        except RuntimeError:
            continue  # not installed here (matplotlib is an optional extra)
        found[module] = statistics.median(times) - floor
    return found


def model_time(repeats: int, workers: int = 1000, samples: int = 10) -> dict[str, float]:
    """Fit and predict on ``workers * samples`` points (synthetic, as sampled)."""
    rng = random.Random(7)
    points = [
        model.SamplePoints(
            base=80 * MiB,
            increments=tuple(round(rng.gauss(17 * MiB, 200 * 1024)) for _ in range(workers)),
        )
        for _ in range(samples)
    ]
    host = HostMemory(mem_total_bytes=512 << 30, mem_available_bytes=500 << 30)
    cold = timed(lambda: model.fit(points, "smaps", None))  # imports scipy.special
    fits, predictions = [], []
    budget = model.make_budget(host, 80 * MiB + workers * 17 * MiB)
    for _ in range(repeats):
        began = time.perf_counter()
        fitted = model.fit(points, "smaps", None)
        fits.append(time.perf_counter() - began)
        began = time.perf_counter()
        model.predict(fitted, budget)
        predictions.append(time.perf_counter() - began)
    return {
        "points": workers * samples,
        "fit_cold": cold,
        "fit": statistics.median(fits),
        "predict": statistics.median(predictions),
    }


STALL_CHILD = textwrap.dedent(
    """
    import mmap, sys, threading, time
    size, vmas = int(sys.argv[1]), int(sys.argv[2])
    keep = []
    if size:
        big = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        big.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, size, mmap.PAGESIZE):
            big[offset] = 1
        keep.append(big)
    for i in range(vmas):  # alternate protections so the kernel cannot merge them
        prot = mmap.PROT_READ if i % 2 else mmap.PROT_READ | mmap.PROT_WRITE
        keep.append(mmap.mmap(-1, mmap.PAGESIZE, prot=prot))
    worst = [0.0]

    def churn():  # mmap + munmap take the mmap lock for writing
        while True:
            began = time.perf_counter()
            mmap.mmap(-1, 65536).close()
            worst[0] = max(worst[0], time.perf_counter() - began)
            time.sleep(0.0005)

    threading.Thread(target=churn, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "reset":
            worst[0] = 0.0
        print(worst[0], flush=True)
    """
)


@dataclass
class StallResult:
    label: str
    rss_mib: float
    mappings: int
    rows: list[tuple[str, float, float]]  # reader, read seconds, worst mmap() latency


def stall_case(label: str, size: int, vmas: int) -> StallResult:
    child = subprocess.Popen(
        [PYTHON, "-c", STALL_CHILD, str(size), str(vmas)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the large process did not start")
        pid = child.pid

        def during(read: Callable[[], object]) -> tuple[float, float]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("reset\n")
            child.stdin.flush()
            child.stdout.readline()
            seconds = timed(read)
            time.sleep(0.005)  # let the churn thread finish the call it was in
            child.stdin.write("max\n")
            child.stdin.flush()
            return seconds, float(child.stdout.readline())

        status = procfs.read_status(pid)
        mappings, _ = procfs.count_mappings(pid)
        readers: list[tuple[str, Callable[[], object]]] = [
            ("nothing (idle, 0.1 s)", lambda: time.sleep(0.1)),
            ("smaps_rollup (default, every sample)", lambda: procfs.read_rollup(pid)),
            ("status + stat", lambda: (procfs.read_status(pid), procfs.read_stat(pid))),
            ("smaps per mapping (inspect)", lambda: procfs.read_smaps(pid)),
            ("pagemap walk (exact)", lambda: pages.read_process_pages(pid)),
        ]
        rows = []
        for name, read in readers:
            results = [during(read) for _ in range(3)]
            rows.append(
                (
                    name,
                    statistics.median(r[0] for r in results),
                    max(r[1] for r in results),
                )
            )
        return StallResult(label, status.vm_rss_bytes / MiB, mappings, rows)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


# --------------------------------------------------------------------------- output


def fmt(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.3f}"


def case_table(case: CaseResult) -> list[str]:
    base_in = case.rows["capplan snapshot read"].median
    base_whole = case.rows["capplan estimate --method smaps"].median
    lines = [
        "| measurement | timed as | wall s (median) | range s | ÷ capplan | CPU s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in case.rows.values():
        base = base_in if row.kind == "in-process" else base_whole
        ratio = row.median / base
        peak = f"{max(row.peak_rss_kib) / 1024:.1f}" if row.peak_rss_kib else ""
        spread = f"{min(row.times):.3f}-{max(row.times):.3f}"
        lines.append(
            f"| {row.name} | {row.kind} | {fmt(row.median)} | {spread} | {ratio:.2f} "
            f"| {fmt(row.cpu_median)} | {peak} |"
        )
    return lines


def print_case(case: CaseResult) -> None:
    print(
        f"\n== {case.label}: {case.processes} processes, {case.resident_mib:,.0f} MiB resident "
        f"(summed RSS); medians of {len(case.rows['capplan snapshot read'].times)} rounds"
    )
    print(
        "   in-process rows: ÷ capplan snapshot read; whole-process rows: ÷ capplan estimate --method smaps"
    )
    for line in case_table(case):
        print("   " + line)
    print(
        f"   first (cold) snapshot read: {case.cold_read:.3f} s (also reads each process's maps once)"
    )
    for check in case.checks:
        print(f"   check: {check}")
    if case.stages:
        print(
            "   estimate's stages, CPU µs per process: "
            + ", ".join(
                f"{name} {seconds / case.processes * 1e6:.1f}"
                for name, seconds in case.stages.items()
            )
        )


def goals(cases: Sequence[CaseResult], help_s: float) -> list[str]:
    lines = []
    by_size = {c.label: c for c in cases}
    main = next((c for c in cases if c.label.startswith("500 ")), None)
    if main is not None:
        ps_mem = main.rows["ps_mem -p PIDS"].median
        bare = main.rows["bare read of smaps_rollup"].median
        bare_script = main.rows["bare read of smaps_rollup (script)"].median
        for label, row in [
            (
                f"default snapshot read ({parallel.default_threads()} threads)",
                "capplan snapshot read",
            ),
            ("the same on 1 thread", "capplan snapshot read, 1 thread"),
        ]:
            read = main.rows[row].median
            lines.append(
                f"| {label} of 500 workers ≤ ½ ps_mem's whole run | {read:.3f} s vs ps_mem "
                f"{ps_mem:.3f} s: {read / ps_mem:.2f}× | {'met' if read <= ps_mem / 2 else 'NOT met'} |"
            )
            lines.append(
                f"| {label} within 1.5× the bare read of the same smaps_rollup files "
                f"(in-process, 1 thread) | {read:.3f} s vs {bare:.3f} s: {read / bare:.2f}× "
                f"| {'met' if read <= 1.5 * bare else 'NOT met'} |"
            )
        read = main.rows["capplan snapshot read"].median
        lines.append(
            f"| (for reference: the default read against the bare read as a whole process, as the"
            f" issue's figures were taken) | {read:.3f} s vs {bare_script:.3f} s:"
            f" {read / bare_script:.2f}× | - |"
        )
    small = by_size.get("150 small workers")
    if small is not None and "capplan exact (pagemap)" in small.rows:
        exact = small.rows["capplan exact (pagemap)"].median
        lines.append(
            f"| exact path for 150 small workers < 0.3 s | {exact:.3f} s | {'met' if exact < 0.3 else 'NOT met'} |"
        )
    lines.append(
        f"| `capplan --help` < 0.3 s, whole process | {help_s:.3f} s | {'met' if help_s < 0.3 else 'NOT met'} |"
    )
    return lines


def host_facts() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = procfs.read_meminfo().mem_total_bytes / 2**30
    return {
        "kernel": platform.release(),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": f"{mem:.1f} GiB",
        "python": f"{platform.python_version()} ({PYTHON})",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(
    path: Path,
    facts: dict[str, str],
    versions: dict[str, str],
    loads: tuple[str, str],
    cases: Sequence[CaseResult],
    help_s: float,
    floor_s: float,
    fit: dict[str, float] | None,
    stalls: Sequence[StallResult],
    command: str,
    repeats: int,
    imports: dict[str, float],
) -> None:
    out = [
        "# capplan measurement cost",
        "",
        f"Written by `{command}` (`benchmarks/measurement_cost.py`); every figure below is from",
        "that one run. Re-run it to refresh this file.",
        "",
        "## Host",
        "",
        *(f"* {key}: {value}" for key, value in facts.items()),
        f"* tools: smem {versions.get('smem')} (Debian package), ps_mem {versions.get('ps_mem')},"
        f" psutil {versions.get('psutil')}",
        f"* load average at start / end: {loads[0]} / {loads[1]} (a shared host: other jobs ran"
        " beside this one; rounds interleave the tools so that busy moments hit all alike)",
        "",
        "## Method",
        "",
        f"Each workload is `capacity/testing/forkserver.py --idle` (idle workers blocked in `read()`, no CPU)."
        f" Every tool measures the same processes, once per round, {repeats} rounds; figures are"
        " medians with the range. **in-process** rows are `time.perf_counter` inside one Python"
        " process with capplan already imported: the read itself, no interpreter start-up."
        " **whole-process** rows are the wall time of a child process from start to exit, the way"
        f" the issue's reference figures were taken; starting Python costs {floor_s:.3f} s here"
        " (`python -c pass`). `÷ capplan` divides in-process rows by capplan's snapshot read and"
        " whole-process rows by `capplan estimate --samples 1 --method smaps`. capplan runs as"
        " its console script does (`from capacity.cli import main`); its peak RSS is the"
        " VmHWM it reads from /proc/self/status as it exits.",
        "",
        "* capplan snapshot read = `timing.sample_read_seconds`: smaps_rollup, status and stat of"
        " every process, on capplan's default readers (2 threads on a 2-CPU host; the"
        " `1 thread` row reads the same sequentially); warm: the first sample also reads each"
        " process's maps once, shown as the cold read.",
        "* capplan snapshot whole = the same sample end to end: also the selection scan of every"
        " /proc/PID/stat on the host, meminfo and the cgroup.",
        "* capplan per-mapping = `procfs.read_smaps` of every process (`capplan inspect --method"
        " smaps`); capplan exact = `pages.measure` (`--method exact`, `capplan inspect`).",
        '* bare read = `open(f"/proc/{pid}/smaps_rollup", "rb").read()` per process;'
        " psutil = `psutil.Process(pid).memory_full_info()` per process; `ps_mem -p PID,...`;"
        " `smem -P TAG` (selects the workload by its unique command-line tag; reads full smaps).",
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "|---|---|---|",
        *goals(cases, help_s),
        "",
    ]
    for case in cases:
        out += [
            f"## {case.label}: {case.processes} processes, {case.resident_mib:,.0f} MiB resident",
            "",
            *case_table(case),
            "",
            f"First (cold) snapshot read: {case.cold_read:.3f} s.",
            "",
        ]
    out += [
        "## Start-up, model",
        "",
        f"* `capplan --help`, whole process: {help_s:.3f} s (median of {repeats * 2});"
        f" `python -c pass`: {floor_s:.3f} s.",
    ]
    out.append(
        "* imports, whole process beyond `python -c pass`: "
        + ", ".join(f"`{module}` {seconds:.3f} s" for module, seconds in imports.items())
        + "."
    )
    if fit is not None:
        out.append(
            f"* `model.fit` on {fit['points']:,.0f} points (1,000 workers × 10 samples):"
            f" {fit['fit']:.3f} s (median; the first call, which imports scipy.special,"
            f" {fit['fit_cold']:.3f} s); `model.predict`: {fit['predict']:.4f} s."
        )
    out.append("")
    staged = [case for case in cases if case.stages]
    if staged:
        out += [
            "## Scale: capplan estimate's stages per process",
            "",
            "CPU µs per process of each stage (in-process, one thread); equal figures at",
            "different process counts mean no stage is quadratic in the process count.",
            "",
            "| stage | " + " | ".join(f"{c.processes:,} processes" for c in staged) + " |",
            "|---|" + "---:|" * len(staged),
            *(
                f"| {name} | "
                + " | ".join(f"{c.stages[name] / c.processes * 1e6:.1f}" for c in staged)
                + " |"
                for name in STAGES
            ),
            "",
        ]
    if stalls:
        out += [
            "## One large process: why `--deep` exists",
            "",
            "Each reader on one process, median of 3; *worst mmap() stall* is the longest a",
            "thread of that process waited in `mmap()`+`munmap()` (which take its mmap lock for",
            "writing) while the reader ran; the idle row is the noise floor.",
            "",
        ]
        for stall in stalls:
            out += [
                f"**{stall.label}** ({stall.rss_mib:,.0f} MiB resident, {stall.mappings:,} mappings)",
                "",
                "| reader | read s | worst mmap() stall s |",
                "|---|---:|---:|",
                *(f"| {name} | {read:.4f} | {worst:.4f} |" for name, read, worst in stall.rows),
                "",
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text("\n".join(out))
    temporary.replace(path)


# --------------------------------------------------------------------------- main


CASES = {
    10: ("10 workers", "16M", "4M"),
    100: ("100 workers", "16M", "4M"),
    500: ("500 workers", "16M", "4M"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,500", help="worker counts (typical workers)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per workload")
    parser.add_argument(
        "--scale", type=int, default=2000, help="tiny workers for the scale case (0: skip)"
    )
    parser.add_argument("--no-small", action="store_true", help="skip the 150 small workers")
    parser.add_argument("--no-large", action="store_true", help="skip the one-large-process case")
    parser.add_argument(
        "--quick", action="store_true", help="--sizes 10,100 --repeats 3, no report"
    )
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "performance.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.no_report = "10,100", 3, True
        args.scale, args.no_small, args.no_large = 0, True, True
    if os.geteuid() != 0:
        print(
            "run as root: the exact tier, ps_mem and smem need to read every process",
            file=sys.stderr,
        )
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)
    versions = ensure_tools()
    exact = pages.exact_unavailable() is None
    facts = host_facts()
    start_load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print("capplan measurement cost")
    for key, value in facts.items():
        print(f"  {key}: {value}")
    print(f"  tools: {versions}; exact tier {'available' if exact else 'unavailable'}")

    cases: list[CaseResult] = []
    plan = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        label, shared, private = CASES.get(size, (f"{size} workers", "16M", "4M"))
        plan.append((label, size, shared, private, args.repeats))
    if not args.no_small:
        plan.append(("150 small workers", 150, "1M", "0", args.repeats))
    if args.scale:
        plan.append(
            (f"{args.scale:,} tiny workers", args.scale, "0", "0", max(3, args.repeats // 2))
        )
    try:
        help_s, floor_s = help_time(args.repeats)
        print(f"\ncapplan --help (whole process): {help_s:.3f} s; python -c pass: {floor_s:.3f} s")
        imports = import_times(args.repeats)
        print(
            "imports (whole process, beyond python -c pass): "
            + ", ".join(f"{module} {seconds:.3f} s" for module, seconds in imports.items())
        )
        fit = model_time(args.repeats)
        print(
            f"model.fit at {fit['points']:,.0f} points: {fit['fit']:.3f} s "
            f"(first call, importing scipy.special: {fit['fit_cold']:.3f} s); "
            f"predict: {fit['predict']:.4f} s"
        )
        for label, size, shared, private, repeats in plan:
            print(f"\nstarting {label} (--shared {shared} --private {private})...", flush=True)
            with started(label, size, shared, private) as workload:
                case = measure_case(workload, repeats, exact)
                if size >= 500:
                    case.stages = pipeline_stages(workload)
            cases.append(case)
            print_case(case)
        stalls = []
        if not args.no_large:
            for label, size, vmas in [
                ("4 GiB resident, one mapping", 4 << 30, 0),
                ("20,000 mappings, little memory", 0, 20000),
            ]:
                print(f"\none large process: {label}...", flush=True)
                stall = stall_case(label, size, vmas)
                stalls.append(stall)
                for name, read, worst in stall.rows:
                    print(f"   {name:40s} read {read:.4f} s   worst mmap() stall {worst:.4f} s")
    except (KeyboardInterrupt, Stop):
        print("\nstopped: every workload was killed", file=sys.stderr)
        return 130
    print("\nGoals:")
    for line in goals(cases, help_s):
        print("  " + line)
    end_load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if not args.no_report:
        command = "python3 benchmarks/measurement_cost.py" + (
            " " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
        )
        write_report(
            args.report, facts, versions, (start_load, end_load), cases, help_s, floor_s, fit,
            stalls, command, args.repeats, imports,
        )  # fmt: skip
        print(f"\nwrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
