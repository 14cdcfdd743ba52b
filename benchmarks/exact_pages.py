"""Benchmark: how long the exact page tier takes to classify a workload (not a test).

Run as root from the repository root:

    python3 benchmarks/exact_pages.py                  # both cases below
    python3 benchmarks/exact_pages.py --repeats 7

Case "50 x 100 MiB": the demo workload with 50 workers that each write 100 MiB of their
own (``--private 100M --workers 50``): about 1.3 million resident pages. Issue 3's goal is
classification in under 2 seconds on the reference host (2 cores).

Case "150 small": the demo with 150 idle workers (``--private 0``), each a Python
interpreter of about 1 MiB of its own: issue 7's goal is under 0.3 s.

For each case it prints the median and range of the wall time of ``pages.measure`` (read
maps and pagemap of every process, read kpagecount and kpageflags, classify) and of its
parts, over ``--repeats`` runs on the same running workload.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from capacity.measure import pages, sharing
from capacity.measure.procfs import read_stat
from capacity.measure.workload import launched_demo

REPO = Path(__file__).resolve().parent.parent


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return times


def summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times):.3f} s  "
        f"(min {min(times):.3f}, max {max(times):.3f}, {len(times)} runs)"
    )


def run_case(label: str, private: str, workers: int, shared: str, repeats: int) -> None:
    os.environ["PYTHONPATH"] = str(REPO)
    with launched_demo(shared=shared, private=private, workers=workers, timeout=300) as demo:
        pids = [demo.parent_pid, *demo.worker_pids]
        members = [(pid, read_stat(pid).start_ticks) for pid in pids]
        walk = pages.measure(members, 1)
        counts = walk.counts
        resident = sum(len(p.frames) for p in walk.processes)
        print(
            f"\n{label}: {len(pids)} processes, {resident:,} resident pages mapped, "
            f"{len(walk.classification.index.frames):,} distinct frames, "
            f"{counts.distinct_bytes / 2**20:,.1f} MiB distinct"
        )

        whole = timed(lambda: pages.measure(members, 1), repeats)
        print(f"  classify the workload (pages.measure):  {summary(whole)}")

        walked = timed(
            lambda: [pages.read_process_pages(pid, start_ticks=t) for pid, t in members],
            repeats,
        )
        print(f"    of which maps + pagemap reads:          {summary(walked)}")
        arrays = [p.frames for p in walk.processes]
        indexed = timed(lambda: sharing.index_pages(arrays, 1), repeats)
        print(f"    of which the index (one stable sort):   {summary(indexed)}")
        frames = walk.classification.index.frames
        starts, _ = sharing.coalesce(frames)
        read = timed(lambda: pages.read_frames(frames), repeats)
        print(
            f"    of which kpagecount + kpageflags reads: {summary(read)}  "
            f"({len(starts):,} preads each)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true", help="only the 150 small workers")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the exact tier needs pagemap frame numbers", file=sys.stderr)
        return 2
    fallback = pages.exact_unavailable()
    if fallback:
        print(f"exact tier unavailable: {fallback.reason}", file=sys.stderr)
        return 2
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with contextlib.suppress(KeyboardInterrupt):
        if not args.skip_large:
            run_case("50 workers x 100 MiB private", "100M", 50, "16M", args.repeats)
        run_case("150 small workers (idle)", "0", 150, "1M", args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
