"""``--cgroup`` and ``--unit`` on real cgroups of this host, with a real forked workload.

Each test makes a memory cgroup of its own (``capacity.measure.cgroup.temporary_cgroup``,
named ``capplan-test-...`` after this process, so that no other run reaps it while we live),
a ``system.slice/capplan-test-<random>.service`` inside it, and starts the demo in that
unit before it allocates (``preexec_fn``). The cgroups are always removed, with whatever is
left in them killed, however the test ends. On this host that is the v1 memory hierarchy
(beside a v2 one without memory); on a pure v2 host the same code makes v2 cgroups.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, needs_root, run_cli

from capacity.measure.cgroup import OwnCgroup, leftover_cgroups, temporary_cgroup

pytestmark = [needs_root]
GiB = 1024**3
PREFIX = "capplan-test"


@dataclass
class Unit:
    top: OwnCgroup  # capplan-test-...: what the test made
    unit: OwnCgroup  # .../system.slice/NAME.service, where the demo runs
    name: str  # NAME, without .service
    path: str  # the unit's cgroup as /proc/PID/cgroup shows it
    top_path: str
    parent: int
    workers: list[int]


def shown(group: OwnCgroup) -> str:
    return "/" + str(group.path.relative_to(group.mount))


@contextlib.contextmanager
def demo_in_a_unit(*demo_args: str, limit: int | None = None) -> Iterator[Unit]:
    name = f"{PREFIX}-{uuid.uuid4().hex[:10]}"
    with temporary_cgroup(PREFIX) as top:
        unit = top.child("system.slice").child(f"{name}.service")
        if limit is not None:
            unit.set_limit(limit)
        process = subprocess.Popen(
            [sys.executable, "-m", "capacity.demo", "--shared", "16M", "--private", "2M",
             "--workers", "3", *demo_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
            preexec_fn=unit.join_self,  # noqa: PLW1509 (a child that joins before it allocates)
            start_new_session=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode().split()
            assert line and line[0] == "ready", line
            parent, *workers = (int(pid) for pid in line[1:])
            yield Unit(top, unit, name, shown(unit), shown(top), parent, workers)
        finally:
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
    assert not [p for p in leftover_cgroups(PREFIX) if p.name == top.path.name]


def as_proc_shows_it(pid: int, version: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if (version == 2 and hierarchy == "0") or (
            version == 1 and "memory" in controllers.split(",")
        ):
            return path
    raise AssertionError(f"pid {pid} has no memory cgroup line")  # fmt: skip


def estimate(*args: str) -> dict:
    result = run_cli("estimate", *args, "--samples", "3", "--interval", "0.3", "--format", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_cgroup_as_proc_shows_it_selects_the_unit_calibrates_and_binds() -> None:
    with demo_in_a_unit(limit=GiB) as unit:
        path = as_proc_shows_it(unit.parent, unit.unit.version)
        assert path == unit.path
        doc = estimate("--cgroup", path)
    workload = doc["workload"]
    assert workload["selector"] == f"--cgroup {path}"
    assert workload["cgroup"] == path
    assert sorted(workload["pids"]) == sorted([unit.parent, *unit.workers])
    assert workload["parent_pids"] == [unit.parent] and workload["worker_count"] == 3
    last = doc["samples"][-1]["cgroup"]
    assert last["path"] == path and last["own"] is True
    assert doc["model"]["breakdown"]["kernel_source"] == "cgroup"
    assert doc["budget"]["source"] == f"memory limit of cgroup {path}"
    assert doc["budget"]["total_bytes"] == GiB
    assert "KERNEL_ESTIMATED" not in {w["code"] for w in doc["warnings"]}


def test_cgroup_with_the_mount_point_in_front_is_the_same_cgroup() -> None:
    with demo_in_a_unit() as unit:
        doc = estimate("--cgroup", str(unit.unit.path))
    assert doc["workload"]["cgroup"] == unit.path
    assert sorted(doc["workload"]["pids"]) == sorted([unit.parent, *unit.workers])


def test_unit_resolves_from_the_cgroup_tree_without_systemd() -> None:
    with demo_in_a_unit(limit=GiB) as unit:
        doc = estimate("--unit", unit.name)
        text = run_cli("estimate", "--unit", unit.name, "--samples", "2", "--interval", "0.3")
    assert doc["workload"]["selector"] == f"--unit {unit.name}"
    assert doc["workload"]["cgroup"] == unit.path
    assert doc["workload"]["worker_count"] == 3
    assert doc["budget"]["source"] == f"memory limit of cgroup {unit.path}"
    assert text.code == 0, text.stderr
    heading = text.stdout.splitlines()[0]
    # The roles rule names the group by its master (issue 13): "python 29252: 3 workers".
    assert heading.startswith(f"Workload --unit {unit.name} (cgroup {unit.path}): "), heading
    assert f" {unit.parent}: 3 workers" in heading, heading
    assert f"checked against cgroup {unit.path})" in text.stdout


def test_the_selected_cgroup_calibrates_not_the_first_process_cgroup() -> None:
    """Selecting the test's top cgroup (the unit is inside it): that one is read with every
    snapshot, although each process's own memory cgroup is the unit below it."""
    with demo_in_a_unit() as unit:
        doc = estimate("--cgroup", unit.top_path)
    assert doc["workload"]["cgroup"] == unit.top_path
    assert doc["samples"][-1]["cgroup"]["path"] == unit.top_path
    assert doc["samples"][-1]["cgroup"]["own"] is True
    assert doc["model"]["breakdown"]["kernel_source"] == "cgroup"


def test_inspect_and_check_take_the_same_selectors(tmp_path: Path) -> None:
    with demo_in_a_unit() as unit:
        inspected = run_cli("inspect", "--unit", unit.name, "--method", "smaps")
        baseline = tmp_path / "unit.json"
        saved = run_cli("estimate", "--unit", unit.name, "--samples", "3", "--interval", "0.3",
                        "--method", "smaps", "--save", str(baseline))  # fmt: skip
        checked = run_cli("check", str(baseline), "--unit", unit.name, "--format", "json")
    assert inspected.code == 0, inspected.stderr
    assert inspected.stdout.startswith(f"Workload --unit {unit.name} (python, cgroup {unit.path}):")
    assert saved.code == 0, saved.stderr
    assert json.loads(baseline.read_text())["workload"]["selector"] == f"--unit {unit.name}"
    assert checked.code in (0, 1), checked.stderr  # measured again the same way
    verdict = json.loads(checked.stdout)
    assert (
        verdict["baseline"]["selector"] == verdict["current"]["selector"] == f"--unit {unit.name}"
    )


def first_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.code == 2, (result.code, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    return result.stderr.splitlines()[0]


def test_an_empty_cgroup_a_missing_one_and_a_missing_unit_are_one_line_errors() -> None:
    name = f"{PREFIX}-empty-{uuid.uuid4().hex[:10]}"
    with temporary_cgroup(PREFIX) as top:
        empty = top.child(f"{name}.service")
        path = shown(empty)
        assert first_error(run_cli("estimate", "--cgroup", path)) == (
            f"Error: cgroup {path} has no processes, in it or below ({empty.path})"
        )
        assert first_error(run_cli("estimate", "--unit", name)) == (
            f"Error: unit {name}.service's cgroup {path} has no processes, in it or below "
            f"({empty.path})"
        )
        missing = path.removesuffix(".service") + "s.service"
        error = first_error(run_cli("estimate", "--cgroup", missing))
        assert error.startswith(f"Error: no cgroup {missing} (looked in ")
        assert error.endswith(f"closest: {path}")
    gone = f"{PREFIX}-{uuid.uuid4().hex[:10]}"
    error = first_error(run_cli("inspect", "--unit", gone))
    assert error.startswith(f"Error: no cgroup for unit {gone}.service (looked in ")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_cgroup_capplan_may_not_read_is_one_line() -> None:
    """root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH obeys the file modes: a
    cgroup.procs of mode 000 is then permission denied."""
    with demo_in_a_unit() as unit:
        procs = unit.unit.path / "cgroup.procs"
        os.chmod(procs, 0)
        try:
            completed = subprocess.run(
                ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--",
                 sys.executable, "-m", "capacity", "estimate", "--cgroup", unit.top_path,
                 "--samples", "1"],
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )  # fmt: skip
        finally:
            os.chmod(procs, 0o644)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    assert completed.stderr.splitlines()[0] == f"Error: cannot read {procs}: permission denied"
