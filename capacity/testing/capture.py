"""Capture a process tree's /proc files, and the host files capplan reads, into a fixture tree.

    python -m capacity.testing.capture --pid PID --out tests/fixtures/hosts/NAME [--scrub-cmdline]
    python -m capacity.testing.capture --pid A --pid B --files stat,status,cmdline --out ...

The output mirrors ``/``: ``proc/PID/{stat,status,smaps_rollup,smaps,maps,cmdline,cgroup}``
for PID and its descendants, ``proc/meminfo``, ``proc/mounts`` (cgroup lines only),
``proc/slabinfo``, ``proc/sys/kernel/osrelease``, the THP and KSM knobs under ``sys/``, and
the memory cgroup directories of the captured processes (their ``memory.*`` figures,
``cgroup.procs``, and the ancestors' limits). ``capplan estimate --root OUT --pid PID``
then reads it as if it were the live host.

Only a whitelist is copied: never ``environ`` (secrets live there), never ``fd`` or ``mem``.
``exe`` is a symlink in /proc; here it becomes a plain file holding the link's target, which
``procfs.read_exe`` understands. ``--pid`` may be given several times (a host running several
servers at once, each its own tree), and ``--files`` keeps a fixture small by copying only
the per-process files its readers need. A file the kernel refuses to give (ESRCH for a zombie's or
a kernel thread's smaps_rollup, ENOENT for their exe) is left out, exactly as an absent file
reads back: ``procfs`` then asks the process's stat why.

This is a development tool, not part of capplan: it imports nothing from ``capacity`` so
that a fixture records what the kernel said, not what capplan thinks it said.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path, PurePosixPath

PROCESS_FILES = ("stat", "status", "smaps_rollup", "smaps", "maps", "cmdline", "cgroup")
HOST_FILES = (
    "proc/meminfo",
    "proc/slabinfo",
    "proc/sys/kernel/osrelease",
    "sys/kernel/mm/transparent_hugepage/enabled",
    "sys/kernel/mm/ksm/run",
)
CGROUP_FILES = (
    "cgroup.procs",
    "cgroup.controllers",
    "memory.current",
    "memory.max",
    "memory.peak",
    "memory.stat",
    "memory.events",
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.kmem.usage_in_bytes",
    "memory.oom_control",
)
# Up the hierarchy only what bounds the workload's cgroup: v2 limits bind children.
ANCESTOR_FILES = ("memory.max", "cgroup.controllers", "memory.limit_in_bytes")


def read(path: Path) -> bytes | None:
    """The file's bytes in one read, or None when the kernel refuses (vanished, zombie)."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return handle.readall()
    except OSError:
        return None


def write(out: Path, relative: str, data: bytes) -> None:
    target = out / relative.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def parent_of(pid: int) -> int | None:
    data = read(Path(f"/proc/{pid}/stat"))
    if not data:
        return None
    # comm may contain ") ", so split after the last one (proc(5)).
    return int(data.rpartition(b")")[2].split()[1])


def process_tree(pid: int) -> list[int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid = parent_of(int(name))
            if ppid is not None:
                parents[int(name)] = ppid
    tree, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = sorted(child for child, ppid in parents.items() if ppid == current)
        tree.extend(children)
        frontier.extend(children)
    return tree


def cgroup_mounts() -> tuple[Path | None, Path | None]:
    """(cgroup2 mount, v1 memory controller mount) from /proc/self/mounts."""
    v2 = v1_memory = None
    for line in (read(Path("/proc/self/mounts")) or b"").decode().splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        if parts[2] == "cgroup2" and v2 is None:
            v2 = Path(parts[1])
        elif parts[2] == "cgroup" and "memory" in parts[3].split(",") and v1_memory is None:
            v1_memory = Path(parts[1])
    return v2, v1_memory


def strip_prefix(path: str, prefix: str) -> str:
    if prefix and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
        return "/" + path[len(prefix.rstrip("/")) :].lstrip("/")
    return path


def rewrite_cgroup_file(data: bytes, prefix: str) -> bytes:
    lines = []
    for line in data.decode("utf-8", "replace").splitlines():
        hierarchy, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        lines.append(
            f"{hierarchy}:{controllers}:{strip_prefix(path, prefix)}" if sep and sep2 else line
        )
    return ("\n".join(lines) + "\n").encode()


def copy_cgroup(out: Path, mount: Path, path: str, prefix: str) -> None:
    """The workload's cgroup directory, its children's process lists, and its ancestors."""
    stripped = strip_prefix(path, prefix)
    # The live directory that the fixture's hierarchy root stands for.
    live_root = mount / prefix.lstrip("/") if stripped != path else mount
    parts = PurePosixPath(stripped).parts[1:]
    live, local = live_root.joinpath(*parts), mount.joinpath(*parts)
    for name in CGROUP_FILES:
        if name == "cgroup.procs" and not parts:
            continue  # the whole host's processes: a hierarchy's root is never 'own' anyway
        data = read(live / name)
        if data is not None:
            write(out, f"{local}/{name}", data)
    if parts:
        # Child cgroups' processes decide whether the cgroup holds only the workload.
        for child in sorted(p for p in live.rglob("*") if p.is_dir()):
            data = read(child / "cgroup.procs")
            if data is not None:
                write(out, f"{local}/{child.relative_to(live)}/cgroup.procs", data)
    for depth in range(len(parts) - 1, -1, -1):
        for name in ANCESTOR_FILES:
            data = read(live_root.joinpath(*parts[:depth]) / name)
            if data is not None:
                write(out, f"{mount.joinpath(*parts[:depth])}/{name}", data)
    (out / str(mount).lstrip("/")).mkdir(parents=True, exist_ok=True)


def capture(
    pids: list[int],
    out: Path,
    scrub_cmdline: bool,
    prefix: str,
    files: tuple[str, ...] = PROCESS_FILES,
) -> list[str]:
    notes = []
    v2_mount, v1_memory = cgroup_mounts()
    cgroups: set[tuple[Path, str]] = set()
    for pid in pids:
        base = Path(f"/proc/{pid}")
        for name in files:
            data = read(base / name)
            if data is None:
                notes.append(f"pid {pid}: {name} unreadable, left out")
                continue
            if name == "cmdline" and scrub_cmdline and data:
                data = data.split(b"\0", 1)[0] + b"\0"
            if name == "cgroup":
                for line in data.decode("utf-8", "replace").splitlines():
                    hierarchy, _, rest = line.partition(":")
                    controllers, _, path = rest.partition(":")
                    if hierarchy == "0" and v2_mount is not None:
                        cgroups.add((v2_mount, path))
                    elif "memory" in controllers.split(",") and v1_memory is not None:
                        cgroups.add((v1_memory, path))
                data = rewrite_cgroup_file(data, prefix)
            write(out, f"proc/{pid}/{name}", data)
        try:
            write(out, f"proc/{pid}/exe", os.readlink(base / "exe").encode())
        except OSError:
            notes.append(f"pid {pid}: exe unreadable, left out")
    for relative in HOST_FILES:
        data = read(Path("/") / relative)
        if data is not None:
            write(out, relative, data)
    mounts = read(Path("/proc/self/mounts")) or b""
    kept = [line for line in mounts.splitlines() if b" cgroup" in line]
    write(out, "proc/mounts", b"\n".join(kept) + b"\n")
    # The host name is the capturing machine's business, not the fixture's.
    write(out, "proc/sys/kernel/hostname", b"fixture-host\n")
    for mount in (v2_mount, v1_memory):
        if mount is not None:
            data = read(mount / "cgroup.controllers")
            if data is not None:
                write(out, f"{mount}/cgroup.controllers", data)
    for mount, path in sorted(cgroups):
        copy_cgroup(out, mount, path, prefix)
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pid",
        type=int,
        action="append",
        required=True,
        help="a tree's top process (repeat for several trees)",
    )
    parser.add_argument(
        "--files",
        default=",".join(PROCESS_FILES),
        help=f"the per-process files to copy, comma-separated (default {','.join(PROCESS_FILES)})",
    )
    parser.add_argument("--out", type=Path, required=True, help="fixture directory to create")
    parser.add_argument(
        "--scrub-cmdline", action="store_true", help="keep only argv[0] of each command line"
    )
    parser.add_argument(
        "--no-descendants", action="store_true", help="capture PID alone (kthreadd has hundreds)"
    )
    parser.add_argument(
        "--strip-cgroup-prefix",
        default="",
        metavar="PATH",
        help="rewrite cgroup paths under PATH as if PATH were the hierarchy's root",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    for top in args.pid:
        if not Path(f"/proc/{top}").exists():
            parser.error(f"no process with pid {top}")
    files = tuple(name for name in args.files.split(",") if name)
    unknown = sorted(set(files) - set(PROCESS_FILES))
    if unknown:
        parser.error(f"--files: not a file capture copies: {', '.join(unknown)}")
    if args.out.exists():
        if not args.force:
            parser.error(f"{args.out} exists (pass --force to replace it)")
        shutil.rmtree(args.out)
    pids: list[int] = []
    for top in args.pid:
        tree = [top] if args.no_descendants else process_tree(top)
        pids += [pid for pid in tree if pid not in pids]
    notes = capture(pids, args.out, args.scrub_cmdline, args.strip_cgroup_prefix, files)
    print(f"captured {len(pids)} processes into {args.out}: {' '.join(map(str, pids))}")
    for note in notes:
        print(f"  {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
