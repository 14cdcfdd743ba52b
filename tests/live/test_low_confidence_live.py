"""No confident number from a low-confidence fit (issue 14), on real processes.

Three workers that differ (2, 4 and 12 MiB written each, in fork order), measured in three
samples: the line through them is low confidence. Its conservative count must hold with
every worker as costly as the costliest one capplan read, and the configuration line says
low confidence on the line itself, with the command that would fix it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

from conftest import run_cli

MiB = 1024 * 1024
SIZES = (2, 4, 12)
WORKLOAD = f"""
import mmap, os, signal, time
kids = []
for n, size in enumerate({SIZES!r}):
    pid = os.fork()
    if pid == 0:
        m = mmap.mmap(-1, size << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for i, off in enumerate(range(0, size << 20, mmap.PAGESIZE)):
            m[off] = (n + i) % 251 + 1
        signal.pause()
        os._exit(0)
    kids.append(pid)
time.sleep(0.5)
print("ready", os.getpid(), *kids, flush=True)
signal.pause()
"""


@contextlib.contextmanager
def spread_workload() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("ready"), line
        yield int(line.split()[1])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def worker_cost(process: dict) -> int:  # type: ignore[type-arg]
    """What capplan read of a worker: its USS and kernel memory."""
    rollup = process["rollup"]
    return (
        rollup["private_clean_bytes"]
        + rollup["private_dirty_bytes"]
        + process["page_tables_bytes"]
        + process["kernel_stack_bytes"]
        + process["slab_bytes"]
    )


def test_low_confidence_keeps_the_conservative_count_safe_and_says_so_on_the_line() -> None:
    common = ("--samples", "3", "--interval", "0.3", "--method", "smaps")
    with spread_workload() as parent:
        result = run_cli("estimate", "--pid", str(parent), *common, "--format", "json")
        text = run_cli("estimate", "--pid", str(parent), *common)
    assert result.code == 0 and text.code == 0, result.stderr + text.stderr
    doc = json.loads(result.stdout)
    model, prediction, budget = doc["model"], doc["prediction"], doc["budget"]
    assert model["confidence"] == "low" and prediction["confidence"] == "low"
    costliest = max(
        worker_cost(p) for s in doc["samples"] for p in s["processes"] if p["role"] == "worker"
    )
    assert costliest > SIZES[-1] * MiB
    count = prediction["max_instances_conservative"]
    assert 0 < count < prediction["max_instances"]
    # Safe even if every one of them were the costliest worker, with the fixed cost at the
    # upper end of its interval and the page cache kept resident.
    fixed = max(model["fixed_bytes"], model["fixed_ci95"][1])
    available = budget["available_bytes"] - model["reclaimable_bytes"]
    assert fixed + count * costliest <= available
    assert "low confidence: also with every worker at" in prediction["conservative_note"]
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("Configuration")]
    # (a second run: its budget's reserve, and so the count, may differ by a few workers)
    assert re.search(r"set its worker limit to [\d,]+   \(low confidence: ", line), line
    assert f"to fix: measure more workers or more samples: capplan estimate --pid {parent}" in line
    assert "(low confidence: the conservative count also fits with every worker at" in text.stdout
