"""capplan inspect on the demo workload: a row per mapping, with the known sizes in them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MiB, RunningWorkload, needs_root, run_cli, start_demo

from capacity.answers import Inspection, MappingRow
from capacity.measure import pages
from capacity.measure.procfs import read_maps
from capacity.measure.procparse import Mapping
from capacity.records import Workload
from capacity.render import inspect

exact_available = pytest.mark.skipif(
    os.geteuid() != 0 or pages.exact_unavailable() is not None,
    reason="the exact tier needs root and /proc/kpageflags",
)
SHARED, PRIVATE, SHM, WORKERS = 16 * MiB, 8 * MiB, 4 * MiB, 3


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningWorkload]:
    with start_demo(
        "--shared", "16M", "--private", "8M", "--workers", str(WORKERS), "--shm", "4M"
    ) as w:
        yield w


def inspect_json(pid: int, *extra: str) -> dict:
    result = run_cli("inspect", "--pid", str(pid), "--format", "json", *extra)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def rows_by_name(doc: dict) -> dict[str, dict]:
    return {row["name"]: row for row in doc["rows"]}


@needs_root
@exact_available
def test_exact_rows_hold_the_known_sizes(demo: RunningWorkload) -> None:
    doc = inspect_json(demo.parent)
    assert doc["kind"] == "capplan.inspect"
    assert doc["method"] == "exact"
    assert doc["workload"]["parent_pids"] == [demo.parent]
    assert doc["workload"]["worker_count"] == WORKERS
    rows = rows_by_name(doc)
    exe = os.path.basename(os.readlink(f"/proc/{demo.parent}/exe"))
    assert rows[exe]["kind"] == "executable"
    assert rows["libc.so.6"]["kind"] == "library"
    # libc is mapped by every Python on the host, pytest included: shared with the host.
    assert rows["libc.so.6"]["shared_host_bytes"] > 0
    maps = read_maps(demo.parent)
    libpython = {os.path.basename(m.path) for m in maps if "libpython" in m.path}
    for name in libpython:  # only interpreters built with --enable-shared map it
        assert rows[name]["kind"] == "library"
    for name in ("[heap]", "[stack]"):
        assert rows[name]["rss_bytes"] > 0
    anon = rows["[anon]"]
    # The parent's heap is paid once; each worker's private region is its own.
    assert anon["shared_once_bytes"] >= SHARED
    assert PRIVATE <= anon["private_mean_bytes"] <= PRIVATE + 2 * MiB
    assert anon["private_max_bytes"] >= anon["private_mean_bytes"]
    assert anon["shared_host_bytes"] == 0
    shm = rows["/dev/zero (deleted)"]
    assert shm["kind"] == "shmem"
    assert shm["shared_once_bytes"] == SHM
    assert shm["private_mean_bytes"] == 0
    assert shm["rss_bytes"] == SHM * (1 + WORKERS)  # summed over processes, as pmap does


@needs_root
@exact_available
def test_rows_are_sorted_by_cost_at_the_predicted_maximum(demo: RunningWorkload) -> None:
    doc = inspect_json(demo.parent, "--memory", "4G", "--reserve", "0")
    n = doc["max_workers"]
    assert n > WORKERS
    assert "predicted maximum" in doc["max_workers_source"]
    costs = [row["cost_at_max_bytes"] for row in doc["rows"]]
    assert costs == sorted(costs, reverse=True)
    for row in doc["rows"]:
        assert row["cost_at_max_bytes"] == pytest.approx(
            row["shared_once_bytes"] + n * row["private_mean_bytes"], abs=n
        )
    # The whole workload: paid once + every worker's private pages = the charged pages.
    total, counts = doc["total"], doc["pages"]
    charged = counts["distinct_bytes"] - counts["shared_outside_bytes"]
    assert total["shared_once_bytes"] + WORKERS * total["private_mean_bytes"] == pytest.approx(
        charged, abs=WORKERS
    )
    assert total["shared_host_bytes"] == counts["shared_outside_bytes"]


@needs_root
@exact_available
def test_text_table_reads_at_a_glance(demo: RunningWorkload) -> None:
    result = run_cli("inspect", "--pid", str(demo.parent))
    assert result.code == 0, result.stderr
    out = result.stdout
    for needle in (
        "method exact",
        "Rows sorted by cost at",
        "paid",
        "private",
        "host",
        "libc.so.6",
        "[heap]",
        "[anon]",
        "/dev/zero (deleted)",
        "Distinct physical pages:",
        "shared with processes outside the workload",
    ):
        assert needle in out, needle
    assert "Per process" not in out


def test_per_process_table(demo: RunningWorkload) -> None:
    result = run_cli("inspect", "--pid", str(demo.parent), "--per-process")
    assert result.code == 0, result.stderr
    table = result.stdout.split("Per process", 1)[1]
    for pid in [demo.parent, *demo.workers]:
        assert str(pid) in table
    for column in ("RSS", "PSS", "USS", "shared", "swap", "page tables"):
        assert column in table
    doc = inspect_json(demo.parent, "--per-process")
    assert {p["pid"] for p in doc["processes"]} == {demo.parent, *demo.workers}
    assert all(p["rollup"]["pss_bytes"] > 0 for p in doc["processes"])
    assert inspect_json(demo.parent)["processes"] == []


def test_smaps_rows_say_they_cannot_see_the_host(demo: RunningWorkload) -> None:
    doc = inspect_json(demo.parent, "--method", "smaps")
    assert doc["method"] == "smaps"
    assert doc["pages"] is None
    assert all(row["shared_host_bytes"] is None for row in doc["rows"])
    anon = rows_by_name(doc)["[anon]"]
    assert PRIVATE <= anon["private_mean_bytes"] <= PRIVATE + 2 * MiB
    assert "n/a" in run_cli("inspect", "--pid", str(demo.parent), "--method", "smaps").stdout


def test_bad_selectors_are_one_line_errors() -> None:
    result = run_cli("inspect")
    assert result.code == 2
    result = run_cli("inspect", "--pid", "999999999")
    assert result.code == 2
    assert result.stderr.startswith("Error: no process with pid 999999999")
    assert "Traceback" not in result.stderr


def test_host_text_is_stripped_of_control_characters() -> None:
    evil = "lib\x1b[31mred\x07.so"
    row = MappingRow(
        kind="library",
        name=evil,
        path="/tmp/" + evil,
        rss_bytes=4096,
        shared_once_bytes=4096,
        private_mean_bytes=0,
        private_max_bytes=0,
        shared_host_bytes=0,
        cost_at_max_bytes=4096,
    )
    inspection = Inspection(
        workload=Workload(
            selector="--cmd \x1b]0;x\x07",
            name="a\x1bb",
            pids=(1,),
            parent_pids=(1,),
            worker_count=0,
        ),
        method="exact",
        max_workers=0,
        max_workers_source="the current worker count",
        rows=(row,),
        total=row,
    )
    text = inspect.render_inspect_text(inspection)
    assert "\x1b" not in text and "\x07" not in text
    assert "lib[31mred.so" in text
    assert json.loads(inspect.render_inspect_json(inspection))["rows"][0]["name"] == evil


def test_row_kinds() -> None:
    from capacity.app.inspect import row_key

    def kind(path: str, perms: str = "r--p", exe: str | None = "/usr/bin/x") -> tuple[str, str]:
        m = Mapping(start=0, end=4096, perms=perms, offset=0, dev="00:00", inode=0, path=path)
        found, name, _ = row_key(m, exe)
        return found, name

    assert kind("/usr/bin/x") == ("executable", "x")
    assert kind("/usr/lib/x86_64-linux-gnu/libc.so.6") == ("library", "libc.so.6")
    assert kind("/usr/lib/locale/C.utf8/LC_CTYPE") == ("file", "/usr/lib/locale/C.utf8/LC_CTYPE")
    assert kind("[heap]") == ("heap", "[heap]")
    assert kind("[stack]") == ("stack", "[stack]")
    assert kind("") == ("anonymous", "[anon]")
    assert kind("", "rw-s") == ("shmem", "[shared anonymous]")
    assert kind("/dev/zero (deleted)", "rw-s") == ("shmem", "/dev/zero (deleted)")
    assert kind("/SYSV00000000 (deleted)", "rw-s")[0] == "shmem"
    assert kind("/memfd:pool (deleted)", "rw-s")[0] == "shmem"
    assert kind("[anon:jemalloc]") == ("anonymous", "[anon:jemalloc]")
    assert kind("[vdso]") == ("kernel", "[vdso]")


def test_docs_document_every_inspect_option() -> None:
    root = next(p for p in Path(__file__).resolve().parents if (p / "docs").is_dir())
    doc = (root / "docs" / "commands.md").read_text()
    section = doc.split("## capplan inspect\n", 1)[1].split("\n## ", 1)[0]
    help_text = run_cli("inspect", "--help").stdout
    for option in (
        "--cmd",
        "--pid",
        "--demo",
        "--per-process",
        "--format",
        "--method",
        "--memory",
        "--reserve",
        "--root",
    ):
        assert option in help_text, option
        assert option in section, option
    assert "--method exact|smaps" in doc.split("## capplan inspect\n", 1)[0]  # estimate's
