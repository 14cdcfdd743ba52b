"""``--cgroup PATH`` and ``--unit NAME`` on constructed /proc and cgroup trees.

Each test builds a host under ``tmp_path`` (``proc/mounts``, a stat per process, the
cgroup directories with their ``cgroup.procs``), as ``--root`` reads it: pure v2 and hybrid
(v1 memory and name=systemd beside a v2 hierarchy without memory) layouts, unit names
resolved from the tree, ambiguity, missing cgroups and units, empty cgroups and a cgroup
capplan may not read. The live tests (tests/live/test_cgroup_live.py) do the same on real
cgroups of this host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_procfs import stat_line

from capacity.errors import SelectionError
from capacity.measure import cgroupselect
from capacity.measure.cgroup import detect_layout
from capacity.measure.sampler import Sampler
from capacity.measure.workload import Selector, resolve_target, select_processes

PURE_V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
HYBRID = (
    "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
    "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
)


def host(root: Path, mounts: str = PURE_V2, controllers: str = "cpu io memory pids") -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "mounts").write_text(mounts)
    for line in mounts.splitlines():
        mount = root / line.split()[1].lstrip("/")
        mount.mkdir(parents=True, exist_ok=True)
        if line.split()[2] == "cgroup2":
            (mount / "cgroup.controllers").write_text(controllers + "\n")
    return root


def process(root: Path, pid: int, ppid: int = 1, comm: str = "server") -> None:
    base = root / "proc" / str(pid)
    base.mkdir(parents=True)
    (base / "stat").write_bytes(stat_line(pid, comm, ppid=ppid, start=1000 + pid))


def cgroup(root: Path, mount: str, path: str, pids: list[int] = (), memory: int | None = None) -> Path:  # type: ignore[assignment]  # fmt: skip
    directory = root / mount.lstrip("/") / path.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
    if memory is not None:
        name = "memory.current" if "memory" not in mount else "memory.usage_in_bytes"
        (directory / name).write_text(f"{memory}\n")
    return directory


PHP = "/system.slice/php8.2-fpm.service"


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    """php-fpm in its unit on pure v2: a master (10) with two workers in the unit, a third
    worker (13) in a child cgroup, a lone helper (20) whose parent (1) is outside, and a
    process (30) in another unit."""
    root = host(tmp_path)
    for pid, ppid in ((1, 0), (10, 1), (11, 10), (12, 10), (13, 10), (20, 1), (30, 1)):
        process(root, pid, ppid)
    cgroup(root, "/sys/fs/cgroup", "/init.scope", [1])
    cgroup(root, "/sys/fs/cgroup", PHP, [10, 11, 12, 20], memory=50_000_000)
    cgroup(root, "/sys/fs/cgroup", PHP + "/pool-b", [13], memory=10_000_000)
    cgroup(root, "/sys/fs/cgroup", "/system.slice/cron.service", [30], memory=1_000_000)
    cgroup(root, "/sys/fs/cgroup", "/system.slice/nginx.service", [], memory=0)
    return root


def roles(selection) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return {m.pid: m.role for m in selection.members}


def test_cgroup_selects_its_processes_and_those_below_and_splits_per_root_tree(v2: Path) -> None:
    selection = select_processes(Selector(cgroup=PHP), v2)
    # 13 is in a child cgroup: selected. 20's parent (1) is outside: a root of its own.
    assert roles(selection) == {10: "parent", 11: "worker", 12: "worker", 13: "worker",
                                20: "parent"}  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [PHP, PHP + "/", "system.slice/php8.2-fpm.service", "/sys/fs/cgroup" + PHP, "//system.slice//php8.2-fpm.service"],
)  # fmt: skip
def test_cgroup_path_with_or_without_the_mount_point(v2: Path, path: str) -> None:
    target = resolve_target(Selector(cgroup=path), v2)
    assert target is not None
    assert target.path == PHP
    assert target.directory == v2 / "sys/fs/cgroup" / PHP.lstrip("/")
    assert target.memory == (2, target.directory, v2 / "sys/fs/cgroup")


def test_the_mount_point_under_root_is_accepted_too(v2: Path) -> None:
    target = resolve_target(Selector(cgroup=str(v2 / "sys/fs/cgroup") + PHP), v2)
    assert target is not None and target.path == PHP


@pytest.mark.parametrize("name", ["php8.2-fpm", "php8.2-fpm.service"])
def test_unit_adds_service_unless_the_name_has_a_unit_suffix(v2: Path, name: str) -> None:
    assert cgroupselect.unit_name(name) == "php8.2-fpm.service"
    selection = select_processes(Selector(unit=name), v2)
    assert sorted(selection.pids) == [10, 11, 12, 13, 20]


def test_unit_keeps_a_scope_or_slice_suffix(v2: Path) -> None:
    assert cgroupselect.unit_name("session-2.scope") == "session-2.scope"
    assert cgroupselect.unit_name("system.slice") == "system.slice"
    selection = select_processes(Selector(unit="system.slice"), v2)
    assert sorted(selection.pids) == [10, 11, 12, 13, 20, 30]


def test_unit_with_the_same_name_in_two_places_is_ambiguous(v2: Path) -> None:
    cgroup(v2, "/sys/fs/cgroup", "/user.slice/user-1000.slice/user@1000.service/app.slice/php8.2-fpm.service", [])  # fmt: skip
    with pytest.raises(SelectionError) as err:
        select_processes(Selector(unit="php8.2-fpm"), v2)
    assert err.value.message == (
        "unit php8.2-fpm.service is ambiguous: 2 cgroups carry its name: "
        "/system.slice/php8.2-fpm.service, "
        "/user.slice/user-1000.slice/user@1000.service/app.slice/php8.2-fpm.service"
    )
    assert (
        err.value.hint == "choose one with --cgroup, e.g. --cgroup /system.slice/php8.2-fpm.service"
    )


def test_missing_unit_names_the_closest_units(v2: Path) -> None:
    with pytest.raises(SelectionError) as err:
        select_processes(Selector(unit="php8.1-fpm"), v2)
    assert err.value.message == (
        "no cgroup for unit php8.1-fpm.service (looked in /sys/fs/cgroup); "
        "closest: php8.2-fpm.service"
    )
    assert "\n" not in err.value.message
    assert "A unit that runs no process has no cgroup" in (err.value.hint or "")
    with pytest.raises(SelectionError, match=r"closest: nginx\.service$"):
        select_processes(Selector(unit="ngnix"), v2)


def test_missing_cgroup_names_its_closest_siblings(v2: Path) -> None:
    with pytest.raises(SelectionError) as err:
        select_processes(Selector(cgroup="/system.slice/php-fpm.service"), v2)
    assert err.value.message == (
        "no cgroup /system.slice/php-fpm.service (looked in /sys/fs/cgroup); "
        "closest: /system.slice/php8.2-fpm.service"
    )
    assert "cat /proc/PID/cgroup" in (err.value.hint or "")


def test_a_cgroup_without_processes_is_an_error(v2: Path) -> None:
    with pytest.raises(SelectionError) as err:
        select_processes(Selector(cgroup="/system.slice/nginx.service"), v2)
    assert err.value.message.startswith(
        "cgroup /system.slice/nginx.service has no processes, in it or below"
    )
    with pytest.raises(SelectionError, match=r"^unit nginx\.service's cgroup /system\.slice/nginx\.service has no processes"):  # fmt: skip
        select_processes(Selector(unit="nginx"), v2)


def test_a_cgroup_listing_only_vanished_or_kernel_processes_is_empty(v2: Path) -> None:
    cgroup(v2, "/sys/fs/cgroup", "/system.slice/gone.service", [4242])  # no /proc/4242
    with pytest.raises(SelectionError, match="has no processes"):
        select_processes(Selector(cgroup="/system.slice/gone.service"), v2)


def test_a_cgroup_that_may_not_be_read_is_one_line(v2: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    original = Path.read_text

    def refuse(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.name == "cgroup.procs" and "pool-b" in str(self):
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(SelectionError) as err:
        select_processes(Selector(cgroup=PHP), v2)
    assert err.value.message == (
        f"cannot read {v2}/sys/fs/cgroup/system.slice/php8.2-fpm.service/pool-b/cgroup.procs: "
        "permission denied"
    )
    assert err.value.hint is not None and "root" in err.value.hint


@pytest.mark.parametrize("path", ["", "/system.slice/../../etc", "a\0b"])
def test_a_path_that_is_no_cgroup_path_is_refused(v2: Path, path: str) -> None:
    with pytest.raises(SelectionError, match="is not a cgroup path"):
        select_processes(Selector(cgroup=path), v2)


@pytest.mark.parametrize("name", ["", "system.slice/x.service", ".."])
def test_a_unit_name_with_a_slash_is_refused(v2: Path, name: str) -> None:
    with pytest.raises(SelectionError, match="is not a unit name"):
        select_processes(Selector(unit=name), v2)


def test_selector_text_is_the_option_as_typed() -> None:
    assert str(Selector(cgroup=PHP)) == f"--cgroup {PHP}"
    assert str(Selector(unit="php8.2-fpm")) == "--unit php8.2-fpm"
    assert str(Selector(cgroup="/a b/c")) == "--cgroup '/a b/c'"
    with pytest.raises(SelectionError, match="--cgroup PATH or --unit NAME"):
        Selector(cgroup=PHP, unit="x")


# --------------------------------------------------------------------------- hybrid hosts


@pytest.fixture
def hybrid(tmp_path: Path) -> Path:
    """v1 memory and name=systemd beside a v2 hierarchy without memory (this CI host's
    layout). The unit exists in name=systemd and v2 only, or also in memory."""
    root = host(tmp_path, HYBRID, controllers="")
    for pid, ppid in ((1, 0), (10, 1), (11, 10), (12, 10)):
        process(root, pid, ppid)
    for mount in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"):
        cgroup(root, mount, "/system.slice/web.service", [10, 11, 12])
    cgroup(root, "/sys/fs/cgroup/memory", "/", [1, 10, 11, 12], memory=10**9)
    return root


def test_hybrid_layout_finds_systemd_hierarchy(hybrid: Path) -> None:
    layout = detect_layout(hybrid)
    assert layout.v1_systemd_mount == hybrid / "sys/fs/cgroup/systemd"
    assert [h.label for h in cgroupselect.hierarchies(layout, hybrid)] == [
        "v1 memory", "cgroup v2", "v1 name=systemd"
    ]  # fmt: skip


def test_hybrid_unit_without_a_memory_cgroup_selects_and_does_not_calibrate(hybrid: Path) -> None:
    target = resolve_target(Selector(unit="web"), hybrid)
    assert target is not None
    assert target.path == "/system.slice/web.service"
    assert target.hierarchy.label == "cgroup v2"  # memory has no such cgroup: the next one
    assert target.memory is None
    selection = select_processes(Selector(unit="web"), hybrid)
    assert roles(selection) == {10: "parent", 11: "worker", 12: "worker"}


def test_hybrid_unit_with_a_memory_cgroup_uses_it(hybrid: Path) -> None:
    directory = cgroup(hybrid, "/sys/fs/cgroup/memory", "/system.slice/web.service", [10, 11, 12],
                       memory=30_000_000)  # fmt: skip
    target = resolve_target(Selector(unit="web.service"), hybrid)
    assert target is not None
    assert target.hierarchy.label == "v1 memory"
    assert target.memory == (1, directory, hybrid / "sys/fs/cgroup/memory")


def test_hybrid_mount_point_in_front_chooses_the_hierarchy(hybrid: Path) -> None:
    target = resolve_target(Selector(cgroup="/sys/fs/cgroup/systemd/system.slice/web.service"), hybrid)  # fmt: skip
    assert target is not None and target.hierarchy.label == "v1 name=systemd"
    with pytest.raises(SelectionError, match=r"looked in /sys/fs/cgroup/memory\)$"):
        resolve_target(Selector(cgroup="/sys/fs/cgroup/memory/system.slice/web.service"), hybrid)


def test_the_selected_cgroup_is_the_one_read_with_every_snapshot(v2: Path) -> None:
    """The sampler keeps the target it resolved once and reads that memory cgroup: the
    unit's, not the leaf of its first process."""
    sampler = Sampler(Selector(unit="php8.2-fpm"), v2)
    assert sampler.target is not None and sampler.target.path == PHP
    assert sampler.target.memory is not None
    assert sampler.target.memory[1] == v2 / "sys/fs/cgroup" / PHP.lstrip("/")
