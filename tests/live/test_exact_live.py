"""The exact tier against real processes of known sizes, through the real /proc.

The demo's parent writes a heap of S bytes before fork; each worker writes a fraction f of
it (copy-on-write makes that part its own) and P bytes of its own. The exact per-worker
cost must be f*S + P plus the cost of an idle worker measured the same way, and the exact
count of distinct pages must agree with what smaps_rollup's PSS says about the same pages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MiB, needs_root, run_cli, start_demo
from conftest import estimate_json as conftest_estimate_json

from capacity import modelfile
from capacity.measure import pages, sampler, sharing
from capacity.measure.procfs import read_rollup, read_stat
from capacity.measure.workload import Selector
from capacity.records import Method

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        pages.exact_unavailable() is not None,
        reason=f"exact tier unavailable: {pages.exact_unavailable()}",
    ),
]


def estimate_json(pid: int, *extra: str) -> dict[str, Any]:
    return conftest_estimate_json(pid, *extra, samples=2, interval=0.1)


def walk_demo(parent: int, workers: list[int]) -> pages.Walk:
    members = [(pid, read_stat(pid).start_ticks) for pid in [parent, *workers]]
    return pages.measure(members, 1)


@pytest.fixture(scope="module")
def exact_idle_baseline() -> int:
    with start_demo("--shared", "32M", "--private", "0", "--workers", "4") as w:
        doc = estimate_json(w.parent, "--method", "exact")
    assert doc["model"]["method"] == "exact"
    return doc["model"]["per_instance_bytes"]


@pytest.mark.parametrize(("private_mib", "dirty"), [(24, 0.0), (8, 0.25)])
def test_exact_per_worker_cost_is_the_known_size(
    exact_idle_baseline: int, private_mib: int, dirty: float
) -> None:
    shared = 32 * MiB
    with start_demo(
        "--shared", "32M", "--private", f"{private_mib}M", "--workers", "5", "--dirty", str(dirty)
    ) as w:
        doc = estimate_json(w.parent, "--method", "exact")
    model = doc["model"]
    assert model["method"] == "exact"
    expected = private_mib * MiB + dirty * shared + exact_idle_baseline
    assert model["per_instance_bytes"] == pytest.approx(expected, rel=0.02)
    # The heap's untouched part is shared with the parent and paid once.
    assert model["breakdown"]["fixed_shared_bytes"] >= shared * (1 - dirty)
    # The walk ran on the first and the last sample; the fit used both.
    walked = [s["pages"] is not None for s in doc["samples"]]
    assert walked == [True, True]
    assert model["n_samples"] == 2


def test_exact_sum_agrees_with_pss_where_nothing_is_shared_outside() -> None:
    with start_demo(
        "--shared", "32M", "--private", "8M", "--workers", "4", "--dirty", "0.25", "--shm", "4M"
    ) as w:
        walk = walk_demo(w.parent, w.workers)
        rollups = [read_rollup(pid)[0] for pid in [w.parent, *w.workers]]
    counts, cls = walk.counts, walk.classification
    anon = (cls.flags & np.uint64(1 << sharing.KPF_ANON)) != 0
    # Which pages can be shared outside the workload? Library and executable pages are
    # (pytest and every other Python on the host map the same libc and interpreter), and
    # for those PSS charges the workload only its share, so ΣPSS and the distinct count
    # differ by design. Anonymous pages are not: the demo was started by fork + exec,
    # and exec replaced its whole address space, so its anonymous pages (and its shmem
    # segment) are mapped only by the parent and its forked workers. We check that first,
    # then compare on exactly those pages: PSS divides each such page among its mappers,
    # all inside the workload, so ΣPss_Anon is the number of distinct anonymous pages.
    assert not np.any(anon & (cls.sharing == sharing.OUTSIDE))
    assert counts.anon_bytes == pytest.approx(sum(r.pss_anon_bytes for r in rollups), rel=0.02)
    assert counts.shmem_bytes == pytest.approx(sum(r.pss_shmem_bytes for r in rollups), rel=0.02)
    assert counts.shmem_bytes >= 4 * MiB
    # Over all pages: ΣPSS = the pages only the workload maps + its PSS share of the rest.
    total_pss = sum(r.pss_bytes for r in rollups)
    assert counts.charged_bytes + counts.shared_outside_pss_bytes == pytest.approx(
        total_pss, rel=0.02
    )
    assert counts.shared_outside_bytes > 0  # libc, the interpreter: mapped host-wide


def test_sharing_classes_on_the_demo() -> None:
    shared, private, dirty, workers = 32 * MiB, 8 * MiB, 0.25, 4
    with start_demo(
        "--shared", "32M", "--private", "8M", "--workers", str(workers), "--dirty", str(dirty)
    ) as w:
        counts = walk_demo(w.parent, w.workers).counts
    # The dirtied quarter was copied by every worker: the parent's original is its own.
    assert counts.parent_only_bytes >= dirty * shared
    assert counts.shared_with_parent_bytes >= (1 - dirty) * shared
    own = workers * (private + dirty * shared)
    assert own <= counts.private_workers_bytes <= own + workers * 2 * MiB
    increments = np.diff(counts.cumulative_bytes)
    assert len(increments) == workers
    assert all(
        private + dirty * shared <= i <= private + dirty * shared + 2 * MiB for i in increments
    )


def test_walks_run_on_the_first_and_last_sample_only() -> None:
    with start_demo("--shared", "4M", "--private", "1M", "--workers", "2") as w:
        selector = Selector(pid=w.parent)
        snapshots = sampler.collect(selector, 3, 0.0, method=Method.EXACT)
        every = sampler.collect(selector, 3, 0.0, method=Method.EXACT, exact_every=1)
        none = sampler.collect(selector, 2, 0.0)
    assert [s.pages is not None for s in snapshots] == [True, False, True]
    assert [s.pages is not None for s in every] == [True, True, True]
    assert [s.pages is not None for s in none] == [False, False]
    assert snapshots[0].pages is not None
    assert snapshots[0].pages.pids[0] == w.parent


def test_processes_gone_before_the_walk_are_skipped_and_counted() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = int(done.stdout)
    with start_demo("--shared", "4M", "--private", "1M", "--workers", "2") as w:
        start = read_stat(w.workers[0]).start_ticks
        walk = pages.measure(
            [
                (w.parent, read_stat(w.parent).start_ticks),
                (w.workers[0], start + 1),
                (gone, 1),
                (w.workers[1], None),
            ],
            1,
        )
    assert dict(walk.skipped) == {w.workers[0]: "replaced", gone: "vanished"}
    assert walk.counts.pids == (w.parent, w.workers[1])
    assert walk.counts.skipped == 2


def test_smaps_method_when_asked() -> None:
    with start_demo("--shared", "8M", "--private", "2M", "--workers", "3") as w:
        doc = estimate_json(w.parent, "--method", "smaps")
    assert doc["model"]["method"] == "smaps"
    assert all(s["pages"] is None for s in doc["samples"])
    assert "EXACT_FALLBACK" not in {x["code"] for x in doc["warnings"]}


def test_exact_is_the_default_as_root() -> None:
    with start_demo("--shared", "8M", "--private", "2M", "--workers", "3") as w:
        doc = estimate_json(w.parent)
        text = run_cli("estimate", "--pid", str(w.parent), "--samples", "1")
    assert doc["model"]["method"] == "exact"
    assert doc["model"]["breakdown"]["shared_outside_bytes"] > 0
    # A saved exact model loads back with its page counts (the codec checks every field).
    loaded = modelfile.estimate_from_dict(doc)
    assert loaded.samples[0].pages is not None
    assert loaded.samples[0].pages.cumulative_bytes == tuple(
        doc["samples"][0]["pages"]["cumulative_bytes"]
    )
    assert text.code == 0, text.stderr
    assert "method exact" in text.stdout
    assert "Not charged:" in text.stdout  # the part shared with the rest of the host
    assert "fell back" not in text.stdout


# --------------------------------------------------------------------------- fallbacks

SETPRIV = shutil.which("setpriv")


def run_without_sys_admin(*args: str) -> subprocess.CompletedProcess[str]:
    """capplan as root but without CAP_SYS_ADMIN: pagemap then zeroes every frame number."""
    assert SETPRIV is not None
    return subprocess.run(
        [SETPRIV, "--bounding-set", "-sys_admin", sys.executable, "-m", "capacity", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")
def test_hidden_frames_fall_back_to_smaps_with_one_warning() -> None:
    with start_demo("--shared", "8M", "--private", "2M", "--workers", "3") as w:
        result = run_without_sys_admin(
            "estimate",
            "--pid",
            str(w.parent),
            "--samples",
            "2",
            "--interval",
            "0.1",
            "--format",
            "json",
        )
        strict = run_without_sys_admin(
            "estimate", "--pid", str(w.parent), "--samples", "1", "--method", "exact"
        )
        inspected = run_without_sys_admin("inspect", "--pid", str(w.parent), "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"]["method"] == "smaps"
    fallbacks = [x for x in doc["warnings"] if x["code"] == "EXACT_FALLBACK"]
    assert len(fallbacks) == 1
    assert "frame number as 0" in fallbacks[0]["message"]
    assert "CAP_SYS_ADMIN" in fallbacks[0]["message"]
    # Asked for exact explicitly: a one-line error, not a silent smaps answer.
    assert strict.returncode == 2
    assert strict.stderr.startswith("Error: exact page accounting is not available: pagemap")
    assert "Traceback" not in strict.stderr
    assert inspected.returncode == 0, inspected.stderr
    ins = json.loads(inspected.stdout)
    assert ins["method"] == "smaps"
    assert "frame number as 0" in ins["method_note"]


def fake_root_without_kpageflags(tmp_path: Path, pids: list[int]) -> Path:
    """A --root tree whose /proc holds the demo's live process directories and meminfo,
    but no kpagecount or kpageflags: a kernel without CONFIG_PROC_PAGE_MONITOR."""
    proc = tmp_path / "proc"
    proc.mkdir()
    for pid in pids:
        (proc / str(pid)).symlink_to(f"/proc/{pid}")
    (proc / "meminfo").write_bytes(Path("/proc/meminfo").read_bytes())
    return tmp_path


def test_no_kpageflags_falls_back_to_smaps(tmp_path: Path) -> None:
    with start_demo("--shared", "8M", "--private", "2M", "--workers", "3") as w:
        root = fake_root_without_kpageflags(tmp_path, [w.parent, *w.workers])
        doc = estimate_json(w.parent, "--root", str(root))
        strict = run_cli(
            "inspect", "--pid", str(w.parent), "--root", str(root), "--method", "exact"
        )
    assert doc["model"]["method"] == "smaps"
    messages = [x["message"] for x in doc["warnings"] if x["code"] == "EXACT_FALLBACK"]
    assert len(messages) == 1 and "CONFIG_PROC_PAGE_MONITOR" in messages[0]
    assert strict.code == 2
    assert "CONFIG_PROC_PAGE_MONITOR" in strict.stderr
    assert "Traceback" not in strict.stderr
