"""The server settings an answer depends on, read where the server keeps them (issue 13).

PostgreSQL's configuration line counts client connections (``max_connections``), of which
``superuser_reserved_connections`` are kept for superusers, and its fixed cost grows with
``shared_buffers``. capplan does not connect to the server to ask (``SHOW`` would need a
client, a role and a password); it reads what the postmaster was started with, in
PostgreSQL's order of precedence:

1. the postmaster's command line (``/proc/PID/cmdline``): ``-c name=value``,
   ``--name=value``, ``-B`` (shared_buffers in 8 kB buffers), ``-N`` (max_connections),
   and ``-D`` the data directory;
2. ``postgresql.auto.conf`` in the data directory (``ALTER SYSTEM``);
3. ``postgresql.conf`` (``-c config_file=`` when given, as Debian's clusters do, else in the
   data directory), with its ``include``, ``include_if_exists`` and ``include_dir``;
4. PostgreSQL's defaults.

The data directory is ``-D``, else ``PGDATA`` from the postmaster's environment, else its
working directory (the postmaster changes into its data directory at start) when that holds
a ``postmaster.pid``. Files are read under ``root``, so a captured tree without them says
so. Every setting says where it came from (``ServerSetting.source``), and a file capplan
could not read is named with the reason, never silently taken as the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from capacity.errors import CapplanError
from capacity.measure.procfs import DEFAULT_ROOT, proc_file, read_cmdline, read_environ_var
from capacity.records import ServerSetting

POSTGRESQL_DEFAULTS = {
    "max_connections": "100",
    "superuser_reserved_connections": "3",
    "shared_buffers": "128MB",
    "autovacuum_max_workers": "3",
}
POSTGRESQL_NAMES = (*POSTGRESQL_DEFAULTS, "reserved_connections")
MAX_INCLUDE_DEPTH = 10  # PostgreSQL's own limit on nested configuration files
MAX_CONF_BYTES = 4 * 1024 * 1024


# --------------------------------------------------------------------------- pure


def parse_postmaster_argv(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """The data directory (``-D``) and the settings a postmaster's argv gives, lowercased
    names; ``-B`` and ``-N`` as shared_buffers (in 8 kB buffers) and max_connections."""
    datadir: str | None = None
    settings: dict[str, str] = {}
    letters = {"-B": "shared_buffers", "-N": "max_connections", "-D": ""}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        value: str | None
        if arg in ("-c", "-D", "-B", "-N"):
            value = args[i + 1] if i + 1 < len(args) else None
            i += 2
            flag = arg
        elif arg[:2] in ("-c", "-D", "-B", "-N") and len(arg) > 2:
            flag, value = arg[:2], arg[2:]
            i += 1
        elif arg.startswith("--") and "=" in arg:
            flag, value = "-c", arg[2:]
            i += 1
        else:
            i += 1
            continue
        if value is None:
            continue
        if flag == "-D":
            datadir = value
        elif flag == "-c":
            name, equals, setting = value.partition("=")
            if equals:
                settings[name.strip().lower().replace("-", "_")] = setting
        elif flag == "-B":
            settings["shared_buffers"] = f"{value} (8kB buffers)"
        else:
            settings[letters[flag]] = value
    if "data_directory" in settings and datadir is None:
        datadir = settings["data_directory"]
    return datadir, settings


# One line of postgresql.conf: a name, an optional "=", and a quoted string ('' or \' for a
# quote) or a bare word, then perhaps a comment (guc-file.l's grammar).
_CONF_LINE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.$]*)\s*=?\s*('(?:[^'\\]|''|\\.)*'|[^\s#']+)?\s*(?:#.*)?$"
)


def _unquote(value: str) -> str:
    if not value.startswith("'"):
        return value
    inner = value[1:-1]
    return re.sub(r"''|\\(.)", lambda m: m.group(1) or "'", inner)


def parse_conf_line(line: str) -> tuple[str, str] | None:
    """``(name, value)`` from one line of postgresql.conf (``name = value`` or
    ``name value``), name lowercased; None for a comment, a blank or a line it cannot read."""
    match = _CONF_LINE.match(line)
    if match is None or match.group(2) is None:
        return None
    return match.group(1).lower(), _unquote(match.group(2))


# --------------------------------------------------------------------------- reading


class _Conf:
    """postgresql.conf and what it includes, read under ``root``: settings, and every file
    that could not be read with the reason."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings: dict[str, tuple[str, str]] = {}  # name -> (value, file)
        self.unreadable: list[str] = []

    def path(self, name: str) -> Path:
        return self.root / name.lstrip("/") if self.root != DEFAULT_ROOT else Path(name)

    def read(self, name: str, *, missing_ok: bool = False, depth: int = 0) -> bool:
        if depth > MAX_INCLUDE_DEPTH:
            self.unreadable.append(f"{name}: included more than {MAX_INCLUDE_DEPTH} deep")
            return False
        try:
            with self.path(name).open("rb") as handle:
                data = handle.read(MAX_CONF_BYTES)
        except FileNotFoundError:
            if not missing_ok:
                self.unreadable.append(f"{name}: no such file")
            return False
        except OSError as err:
            self.unreadable.append(f"{name}: {err.strerror or err}")
            return False
        here = os.path.dirname(name)
        for line in data.decode("utf-8", "replace").splitlines():
            found = parse_conf_line(line)
            if found is None:
                continue
            key, value = found
            if key in ("include", "include_if_exists"):
                self.read(
                    os.path.join(here, value),
                    missing_ok=key == "include_if_exists",
                    depth=depth + 1,
                )
            elif key == "include_dir":
                self._read_dir(os.path.join(here, value), depth + 1)
            else:
                self.settings[key] = (value, name)
        return True

    def _read_dir(self, name: str, depth: int) -> None:
        try:
            entries = sorted(os.listdir(self.path(name)))
        except OSError as err:
            self.unreadable.append(f"{name}: {err.strerror or err}")
            return
        for entry in entries:
            if entry.endswith(".conf") and not entry.startswith("."):
                self.read(os.path.join(name, entry), depth=depth)


def _datadir(pid: int, argv_datadir: str | None, root: Path) -> tuple[str | None, str]:
    """The data directory and how it was found, or None and why not."""
    if argv_datadir:
        return argv_datadir, "-D on its command line"
    pgdata = read_environ_var(pid, "PGDATA", root)
    if pgdata:
        return pgdata, "PGDATA in its environment"
    try:
        cwd = os.readlink(proc_file(pid, root, "cwd"))
    except OSError:
        return None, "no -D, no readable PGDATA, no readable working directory"
    marker = (root / cwd.lstrip("/")) if root != DEFAULT_ROOT else Path(cwd)
    if (marker / "postmaster.pid").exists():
        return cwd, "its working directory, which holds postmaster.pid"
    return None, "no -D, no readable PGDATA, and its working directory holds no postmaster.pid"


def postgresql_settings(pid: int, root: Path = DEFAULT_ROOT) -> tuple[ServerSetting, ...]:
    """The settings PostgreSQL's answer depends on, for the postmaster ``pid`` (module
    docstring): max_connections, superuser_reserved_connections, reserved_connections
    (PostgreSQL 16, only when set), shared_buffers, autovacuum_max_workers."""
    try:
        argv = read_cmdline(pid, root)
    except CapplanError:
        argv = ()
    datadir, command_line = parse_postmaster_argv(argv)
    found_dir, how = _datadir(pid, datadir, root)
    conf = _Conf(root)
    if "config_file" in command_line:
        conf.read(command_line["config_file"])
    elif found_dir is not None:
        conf.read(os.path.join(found_dir, "postgresql.conf"))
    if found_dir is None and "data_directory" in conf.settings:
        found_dir, how = conf.settings["data_directory"][0], "data_directory in postgresql.conf"
    auto = _Conf(root)
    if found_dir is not None:
        auto.read(os.path.join(found_dir, "postgresql.auto.conf"), missing_ok=True)
    problems = conf.unreadable + auto.unreadable
    if found_dir is None:
        problems.insert(0, f"data directory not found ({how})")
    unread = "; ".join(problems)
    settings = []
    for name in POSTGRESQL_NAMES:
        if name in command_line:
            settings.append(
                ServerSetting(
                    name=name, value=command_line[name], source="the postmaster's command line"
                )
            )
            continue
        configured = auto.settings.get(name) or conf.settings.get(name)
        if configured is not None:
            settings.append(ServerSetting(name=name, value=configured[0], source=configured[1]))
            continue
        if name not in POSTGRESQL_DEFAULTS:
            continue  # reserved_connections: PostgreSQL 16's, named only when set
        default = POSTGRESQL_DEFAULTS[name]
        if unread:
            source = f"not on the command line; {unread}"
            settings.append(ServerSetting(name=name, value=None, source=source))
        else:
            settings.append(
                ServerSetting(name=name, value=default, source="not set: PostgreSQL's default")
            )
    return tuple(settings)
