"""``--cgroup PATH`` and ``--unit NAME``: the cgroup a selection names, and what is in it.

PATH is a cgroup as ``/proc/PID/cgroup`` shows it (``/system.slice/php8.2-fpm.service``),
with or without the mount point in front (``/sys/fs/cgroup/memory/...``). It is looked for
in the hierarchies that name a process's cgroup, the memory-accounting one first: cgroup v2
(where it has the memory controller), v1's ``memory``, v2 without memory, and systemd's own
v1 hierarchy (``name=systemd``). The first that has the directory lists the processes: every
``cgroup.procs`` in it and below. A mount point given in front chooses that hierarchy.

NAME is a systemd unit, ``NAME.service`` when it has no unit suffix. Its cgroup is found in
the cgroup tree, not asked of systemd, so it works where systemd is not running (a
container, a captured tree under ``--root``): the directory of that name under the v2 mount
and the v1 ``memory`` and ``name=systemd`` hierarchies. None is an error with the closest
unit names; two different paths are an error that lists them (``--cgroup`` chooses).

The memory cgroup at the selected path, where one accounts it, is the one the kernel part
is calibrated from and whose limit is the budget (``Target.memory``).
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import os
from pathlib import Path

from capacity.errors import SelectionError
from capacity.measure.cgroup import Layout, detect_layout
from capacity.measure.procfs import DEFAULT_ROOT

# The unit types systemd gives a cgroup of their own (systemd.unit(5)); another suffix
# (php8.2-fpm's ".2-fpm") is part of the name, and ".service" is added.
UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap")
MAX_LISTED = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted cgroup hierarchy: what it is, where it is under ``root``, and the mount
    point as the host names it."""

    label: str  # "cgroup v2", "v1 memory", "v1 name=systemd"
    mount: Path
    shown: str


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A selected cgroup: its path as /proc/PID/cgroup names it, the directory that lists
    its processes, and the memory cgroup at the same path, (version, directory, mount),
    where one accounts it."""

    path: str
    hierarchy: Hierarchy
    directory: Path
    memory: tuple[int, Path, Path] | None


def hierarchies(layout: Layout, root: Path = DEFAULT_ROOT) -> list[Hierarchy]:
    """The hierarchies a selection may name, the memory-accounting one first."""

    def shown(mount: Path) -> str:
        try:
            return "/" + str(mount.relative_to(root)).lstrip(".").lstrip("/")
        except ValueError:
            return str(mount)

    found: list[Hierarchy] = []
    v2 = layout.v2_mount
    if v2 is not None and layout.v2_memory:
        found.append(Hierarchy("cgroup v2", v2, shown(v2)))
    if layout.v1_memory_mount is not None:
        found.append(Hierarchy("v1 memory", layout.v1_memory_mount, shown(layout.v1_memory_mount)))
    if v2 is not None and not layout.v2_memory:
        found.append(Hierarchy("cgroup v2", v2, shown(v2)))
    if layout.v1_systemd_mount is not None:
        found.append(
            Hierarchy("v1 name=systemd", layout.v1_systemd_mount, shown(layout.v1_systemd_mount))
        )
    return found


def _normal(path: str) -> str:
    """``/a/b`` from ``a/b/``, ``//a//b``; SelectionError for ``..`` or an empty path."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not path.strip() or ".." in parts or "\0" in path:
        raise SelectionError(
            f"--cgroup {path!r} is not a cgroup path",
            hint="give it as /proc/PID/cgroup shows it, e.g. --cgroup /system.slice/nginx.service",
        )
    return "/" + "/".join(parts)


def _split_mount(path: str, found: list[Hierarchy]) -> tuple[str, Hierarchy | None]:
    """``path`` without a mount point in front, and the hierarchy that mount point names."""
    for hierarchy in sorted(found, key=lambda h: -len(h.shown)):
        for prefix in {hierarchy.shown.rstrip("/"), str(hierarchy.mount).rstrip("/")}:
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                return path[len(prefix) :] or "/", hierarchy
    return path, None


def _in(hierarchy: Hierarchy, path: str) -> Path:
    return hierarchy.mount / path.lstrip("/")


def _is_directory(directory: Path) -> bool:
    """Whether the cgroup exists; SelectionError when the host will not say."""
    try:
        return directory.is_dir()
    except PermissionError:
        raise _denied(directory) from None
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise SelectionError(f"cannot read {directory}: {err.strerror}") from None


def _denied(path: Path) -> SelectionError:
    return SelectionError(
        f"cannot read {path}: permission denied",
        hint="run capplan as root, or as a user who may read the cgroup tree",
    )


def _memory_at(path: str, layout: Layout) -> tuple[int, Path, Path] | None:
    """The memory cgroup at ``path``, where a memory controller accounts it."""
    if layout.v2_memory and layout.v2_mount is not None:
        directory = layout.v2_mount / path.lstrip("/")
        if (directory / "memory.current").exists():
            return 2, directory, layout.v2_mount
    if layout.v1_memory_mount is not None:
        directory = layout.v1_memory_mount / path.lstrip("/")
        if (directory / "memory.usage_in_bytes").exists():
            return 1, directory, layout.v1_memory_mount
    return None


def resolve_cgroup(
    path: str, root: Path = DEFAULT_ROOT, layout: Layout | None = None, *, option: str = "--cgroup"
) -> Target:
    """The cgroup ``--cgroup PATH`` names; SelectionError when no hierarchy has it."""
    layout = layout or detect_layout(root)
    found = hierarchies(layout, root)
    if not found:
        raise SelectionError(
            f"{option} {path}: no cgroup hierarchy is mounted",
            hint="mount cgroup2 on /sys/fs/cgroup, or select by --cmd or --pid",
        )
    relative, chosen = _split_mount(_normal(path), found)
    for hierarchy in [chosen] if chosen is not None else found:
        directory = _in(hierarchy, relative)
        if _is_directory(directory):
            return Target(
                path=relative,
                hierarchy=hierarchy,
                directory=directory,
                memory=_memory_at(relative, layout),
            )
    looked = ", ".join(h.shown for h in ([chosen] if chosen is not None else found))
    close = _close_paths(relative, [chosen] if chosen is not None else found)
    raise SelectionError(
        f"no cgroup {relative} (looked in {looked})"
        + (f"; closest: {', '.join(close)}" if close else ""),
        hint="give the path as /proc/PID/cgroup shows it for a process of the workload: "
        "cat /proc/PID/cgroup",
    )


def _stem(name: str) -> str:
    for suffix in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def closest(name: str, names: list[str]) -> list[str]:
    """The names nearest ``name``, best first, compared without their unit suffix (every
    ``.service`` looks alike), else those that contain it or that it contains."""
    stems: dict[str, list[str]] = {}
    for candidate in sorted(set(names)):
        stems.setdefault(_stem(candidate), []).append(candidate)
    near = difflib.get_close_matches(_stem(name), list(stems), n=MAX_LISTED, cutoff=0.6)
    if not near:
        word = _stem(name).lower()
        near = [s for s in stems if word and (word in s.lower() or s.lower() in word)]
    return [candidate for stem in near for candidate in stems[stem]][:MAX_LISTED]


def _close_paths(path: str, found: list[Hierarchy]) -> list[str]:
    """Cgroups beside the deepest part of ``path`` that exists, nearest in name first."""
    parts = [part for part in path.split("/") if part]
    candidates: list[str] = []
    for hierarchy in found:
        depth = len(parts)
        while depth > 0 and not _in(hierarchy, "/".join(parts[: depth - 1])).is_dir():
            depth -= 1
        if depth == 0:
            continue
        parent = "/".join(parts[: depth - 1])
        try:
            names = [p.name for p in _in(hierarchy, parent).iterdir() if p.is_dir()]
        except OSError:
            continue
        for name in closest(parts[depth - 1], names):
            candidates.append("/" + "/".join([*parts[: depth - 1], name]))
    return list(dict.fromkeys(candidates))[:MAX_LISTED]


def unit_name(name: str) -> str:
    """``NAME.service`` unless NAME ends in a unit type that has a cgroup."""
    return name if name.endswith(UNIT_SUFFIXES) else f"{name}.service"


def _walk(hierarchy: Hierarchy) -> list[tuple[str, str]]:
    """(path, name) of every cgroup in ``hierarchy`` below its top."""
    found = []
    for directory, subdirectories, _files in os.walk(hierarchy.mount):
        base = Path(directory).relative_to(hierarchy.mount)
        for name in subdirectories:
            found.append(("/" + str(base / name), name))
    return found


def resolve_unit(name: str, root: Path = DEFAULT_ROOT, layout: Layout | None = None) -> Target:
    """The cgroup of systemd unit ``name``, found in the cgroup tree; SelectionError when
    none or several cgroups carry the name."""
    if not name or "/" in name or name in (".", ".."):
        raise SelectionError(
            f"--unit {name!r} is not a unit name",
            hint="a unit name has no '/': give a cgroup path with --cgroup PATH",
        )
    layout = layout or detect_layout(root)
    unit = unit_name(name)
    found = hierarchies(layout, root)
    paths: list[str] = []
    units: set[str] = set()
    for hierarchy in found:
        if not _is_directory(hierarchy.mount):
            continue
        for path, base in _walk(hierarchy):
            if base == unit and path not in paths:
                paths.append(path)
            elif base.endswith(UNIT_SUFFIXES):
                units.add(base)
    looked = ", ".join(h.shown for h in found) or "no cgroup hierarchy is mounted"
    if not paths:
        close = closest(unit, sorted(units))
        raise SelectionError(
            f"no cgroup for unit {unit} (looked in {looked})"
            + (f"; closest: {', '.join(close)}" if close else ""),
            hint="is it running? A unit that runs no process has no cgroup; list the units "
            "that have one: find /sys/fs/cgroup -name '*.service'",
        )
    if len(paths) > 1:
        listed = ", ".join(paths[:MAX_LISTED]) + (
            f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
        )
        raise SelectionError(
            f"unit {unit} is ambiguous: {len(paths)} cgroups carry its name: {listed}",
            hint=f"choose one with --cgroup, e.g. --cgroup {paths[0]}",
        )
    return resolve_cgroup(paths[0], root, layout, option="--unit")


def members(target: Target) -> set[int]:
    """Every process in the cgroup and below (``cgroup.procs`` of each); SelectionError when
    the cgroup is gone or may not be read. A captured tree may leave out the
    ``cgroup.procs`` of a cgroup that holds no process directly: none is read as empty."""
    pids: set[int] = set()
    stack = [target.directory]
    while stack:
        directory = stack.pop()
        reading = directory
        try:
            children = [entry for entry in directory.iterdir() if entry.is_dir()]
            reading = directory / "cgroup.procs"
            text = reading.read_text(encoding="ascii", errors="replace") if reading.exists() else ""
        except PermissionError:
            raise _denied(reading) from None
        except FileNotFoundError:
            if directory == target.directory:
                raise SelectionError(
                    f"the cgroup {target.path} no longer exists ({directory})",
                    hint="was its service stopped? select it again once it runs",
                ) from None
            continue  # a child removed while we read
        except OSError as err:
            raise SelectionError(f"cannot read {directory}/cgroup.procs: {err.strerror}") from None
        pids.update(int(word) for word in text.split() if word.isdigit())
        stack.extend(children)
    return pids
