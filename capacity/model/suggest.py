"""The configuration line for a worker count, where capplan recognises the program.

Pure: it reads the names a model recorded (process names, the executable, the parent's
command line) and returns Suggestion records; it runs nothing and reads no file. A program
it does not recognise gets no suggestion: the number alone is the honest answer, since a
wrong directive name would be worse than none.

Each directive caps the number of worker *processes*, the unit capplan measured:

* apache2 prefork: ``MaxRequestWorkers`` (and ``ServerLimit``, whose default of 256 caps
  it). Threaded MPMs (event, worker) run ``ThreadsPerChild`` threads per process, so the
  process count goes to ``ServerLimit`` and ``MaxRequestWorkers`` is that times the threads.
* php-fpm: ``pm.max_children`` per pool.
* gunicorn: ``--workers`` (``workers =`` in gunicorn.conf.py).
* PostgreSQL: ``max_connections``: one backend process per connection.
* nginx: ``worker_processes``; uWSGI: ``processes``; celery's prefork pool:
  ``--concurrency``; unicorn: ``worker_processes``; puma (cluster mode): ``workers``. These
  come from the group's roles rule only: a file without groups names no line for them.

With the roles of a group (``GroupEstimate``, issue 13) the lines follow the server as it
runs: PostgreSQL's answer is in client backends, with ``superuser_reserved_connections``
and the background processes (fixed cost, not connections) accounted for and the
``shared_buffers`` the fixed cost was measured with; php-fpm's is one pool's
``pm.max_children``; apache2's follows the group's MPM (prefork: ``ServerLimit`` and
``MaxRequestWorkers`` in processes; event and worker: ``ThreadsPerChild``, ``ServerLimit``
in processes and ``MaxRequestWorkers`` in threads, their product).
* Kubernetes: a memory request and limit for a container running N workers; Kubernetes
  quantities in ``Mi`` are powers of 1024, like capplan's units.

A line for a count from a fit marked low confidence says so on the same line, as a comment
in the file's own syntax (``#``; ``;`` for php-fpm's ini files): the reasons and what to
measure to fix it (issue 14). The count itself is the conservative one, which
``fitting.conservative_instances`` widens for such a fit. apache2 reads comments only on
lines of their own, so its note says to move the comment before pasting.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Literal

from capacity.records import Estimate, GroupEstimate, ModelFit, Notice, ServerSetting, Suggestion
from capacity.units import kubernetes_quantity

SOFTWARE = ("apache2", "php-fpm", "gunicorn", "postgres")
_INTERPRETERS = ("python", "python2", "python3")
_APACHE_DEFAULT_SERVER_LIMIT = 256


def _names(name: str, exe: str | None, cmdline: Sequence[str]) -> list[str]:
    """Every name the program goes by: comm names, the executable, argv[0], a script."""
    names = [part.strip() for part in name.split(",") if part.strip()]
    if exe:
        names.append(os.path.basename(exe.removesuffix(" (deleted)")))
    if cmdline:
        first = cmdline[0]
        names.append(os.path.basename(first.split(":")[0].split(" ")[0]))
        if os.path.basename(first).rstrip("0123456789.") in _INTERPRETERS:
            rest = list(cmdline[1:])
            if len(rest) >= 2 and rest[0] == "-m":
                names.append(rest[1])
            elif rest and not rest[0].startswith("-"):
                names.append(os.path.basename(rest[0]))
    return [n.lower() for n in names if n]


def recognise(name: str, exe: str | None = None, cmdline: Sequence[str] = ()) -> str | None:
    """Which known server this is ("apache2", "php-fpm", "gunicorn", "postgres") or None."""
    for candidate in _names(name, exe, cmdline):
        if candidate in ("apache2", "httpd", "apache"):
            return "apache2"
        if candidate.startswith("php-fpm"):
            return "php-fpm"
        if candidate == "gunicorn":
            return "gunicorn"
        if candidate in ("postgres", "postmaster"):
            return "postgres"
    return None


def recognise_estimate(estimate: Estimate) -> str | None:
    w = estimate.workload
    return recognise(w.name, w.exe, w.parent_cmdline)


def threads_per_worker(estimate: Estimate) -> int:
    """The median thread count of the workers: 1 for prefork servers."""
    threads = [p.threads for snap in estimate.samples for p in snap.workers]
    return round(statistics.median(threads)) if threads else 1


def configuration(software: str | None, instances: int, threads: int = 1) -> Suggestion | None:
    """The directive that caps the worker processes at ``instances``, or None."""
    n = max(instances, 0)
    if software == "apache2":
        if threads <= 1:
            lines = [f"MaxRequestWorkers {n}"]
            if n > _APACHE_DEFAULT_SERVER_LIMIT:
                lines.insert(0, f"ServerLimit {n}")
            else:
                lines.append(f"ServerLimit {max(n, 1)}")
            return Suggestion(
                software="apache2",
                title="apache2 (prefork MPM)",
                instances=n,
                lines=tuple(lines),
                note="prefork runs one request per process; ServerLimit caps "
                "MaxRequestWorkers and defaults to 256",
            )
        return Suggestion(
            software="apache2",
            title="apache2 (threaded MPM: event or worker)",
            instances=n,
            lines=(f"ServerLimit {n}", f"MaxRequestWorkers {n} * ThreadsPerChild"),
            note=f"the workers run {threads} threads each: capplan sized processes, "
            "so MaxRequestWorkers is the process count times ThreadsPerChild",
        )
    if software == "php-fpm":
        return Suggestion(
            software="php-fpm",
            title="php-fpm",
            instances=n,
            lines=(f"pm.max_children = {n}",),
            note="per pool; with several pools, share the number among them",
        )
    if software == "gunicorn":
        return Suggestion(
            software="gunicorn",
            title="gunicorn",
            instances=n,
            lines=(f"--workers {n}", f"workers = {n}  # gunicorn.conf.py"),
            note="memory allows this many; CPU usually caps gunicorn sooner "
            "(its docs start from 2 x cores + 1)",
        )
    if software == "postgres":
        return Suggestion(
            software="postgres",
            title="PostgreSQL",
            instances=n,
            lines=(f"max_connections = {n}",),
            note="each connection is a backend process; work_mem is spent per sort or "
            "hash on top: measure under real queries",
        )
    return _other_server(software, n, threads)


def _other_server(software: str | None, n: int, threads: int) -> Suggestion | None:
    """The worker-process directive of nginx, uWSGI, celery, unicorn and puma (issue 13),
    known from the roles rule that classified them."""
    if software == "nginx":
        return Suggestion(
            software="nginx",
            title="nginx",
            instances=n,
            lines=(f"worker_processes {n};",),
            note="in the main context of nginx.conf; the master and the cache manager and "
            "loader are fixed cost. Each worker serves worker_connections connections: "
            "nginx usually runs one worker per core (worker_processes auto), so CPU caps "
            "it long before memory does",
        )
    if software == "uwsgi":
        return Suggestion(
            software="uwsgi",
            title="uWSGI",
            instances=n,
            lines=(f"processes = {n}", f"--processes {n}"),
            note="in the [uwsgi] section of the ini file, or on the command line; the "
            "master, mules and the spooler are fixed cost, not processes",
        )
    if software == "celery":
        return Suggestion(
            software="celery",
            title="celery (prefork pool)",
            instances=n,
            lines=(f"--concurrency {n}", f"worker_concurrency = {n}"),
            note="celery worker's option, or the app's setting; the main process is fixed "
            "cost. A task's own peak is on top: measure while the pool runs real tasks",
        )
    if software == "unicorn":
        return Suggestion(
            software="unicorn",
            title="unicorn",
            instances=n,
            lines=(f"worker_processes {n}",),
            note="in unicorn's configuration file (-c); the master is fixed cost",
        )
    if software == "puma":
        words = (
            f"which ran {threads} threads each, puma's own included"
            if threads > 1
            else "each with its threads"
        )
        return Suggestion(
            software="puma",
            title="puma (cluster mode)",
            instances=n,
            lines=(f"workers {n}", f"--workers {n}"),
            note=f"in config/puma.rb, or on the command line: {n:,} worker processes, "
            f"{words} (the threads setting is per worker); the master is fixed cost",
        )
    return None


def kubernetes(instances: int, request_bytes: int, limit_bytes: int) -> Suggestion:
    """Requests and limits for a container running ``instances`` workers (and its parent).

    The request is the point estimate of what they use, the limit the upper end of its
    95 % prediction interval: a container above it is outside what was measured.
    """
    return Suggestion(
        software="kubernetes",
        title=f"Kubernetes container running {instances} workers",
        instances=instances,
        lines=(
            "resources:",
            "  requests:",
            f"    memory: {kubernetes_quantity(request_bytes)}",
            "  limits:",
            f"    memory: {kubernetes_quantity(limit_bytes)}",
        ),
        note="the container's cgroup also charges page cache it reads; "
        "leave room for it if the workers read large files",
    )


ServerKind = Literal["database", "http"]

# HTTP servers capplan has no configuration line for, known by name for the load they take.
_HTTP_NAMES = ("nginx", "uwsgi", "puma", "unicorn", "lighttpd", "caddy", "uvicorn", "hypercorn")


def server_kind(
    name: str, exe: str | None = None, cmdline: Sequence[str] = ()
) -> ServerKind | None:
    """What load the program serves, for the load generator a hint names: "database"
    (PostgreSQL), "http" (apache2, nginx, gunicorn, php-fpm behind a web server, ...) or
    None when capplan cannot tell."""
    software = recognise(name, exe, cmdline)
    if software == "postgres":
        return "database"
    if software in ("apache2", "php-fpm", "gunicorn"):
        return "http"
    if any(candidate in _HTTP_NAMES for candidate in _names(name, exe, cmdline)):
        return "http"
    return None


# --------------------------------------------------------------------------- per group


# The rules of measure/roles whose servers ``configuration`` knows by another name.
_RULE_SOFTWARE = {
    "postgresql": "postgres",
    "php-fpm": "php-fpm",
    "gunicorn": "gunicorn",
    "nginx": "nginx",
    "uwsgi": "uwsgi",
    "celery": "celery",
    "unicorn": "unicorn",
    "puma": "puma",
}


def top_group(estimate: Estimate) -> GroupEstimate | None:
    """The entry of ``groups`` that the top level is (issue 13), None in older files."""
    w = estimate.workload
    for group in estimate.groups:
        if (group.server, group.pool, group.instance) == (w.server, w.pool, w.instance):
            return group
    return estimate.groups[0] if len(estimate.groups) == 1 else None


def for_estimate(estimate: Estimate, instances: int) -> Suggestion | None:
    """The configuration line for ``instances`` workers of the model: the group's own
    (``for_group``) when the model file names it, else by the program's name."""
    group = top_group(estimate)
    if group is not None:
        return for_group(group, instances)
    found = configuration(recognise_estimate(estimate), instances, threads_per_worker(estimate))
    return flag_low_confidence(found, estimate.model, estimate.warnings)


def low_confidence_comment(model: ModelFit, warnings: Sequence[Notice] = ()) -> str | None:
    """``low confidence: REASONS; to fix: HINT`` for a fit marked low, else None. The hint
    is the LOW_CONFIDENCE warning's (the command to run), where there is one."""
    if model.confidence != "low":
        return None
    reasons = "; ".join(model.confidence_reasons) or "the fit is uncertain"
    hint = next((w.hint for w in warnings if w.code == "LOW_CONFIDENCE" and w.hint), None)
    return f"low confidence: {reasons}; to fix: {hint or 'measure more workers and samples'}"


_COMMENT = {"php-fpm": ";"}


def _from_the_fit(line: str) -> bool:
    """Whether a suggestion's line holds a figure from the fit: not a YAML key
    (``resources:``) nor apache2's ThreadsPerChild, which is the server's own setting."""
    return bool(line.strip()) and not line.endswith(":") and not line.startswith("ThreadsPerChild")


def flag_low_confidence(
    suggestion: Suggestion | None, model: ModelFit, warnings: Sequence[Notice] = ()
) -> Suggestion | None:
    """``suggestion`` with every line saying, on the line, that its fit is low confidence
    (``low_confidence_comment``); as it is for any other fit."""
    comment = low_confidence_comment(model, warnings)
    if suggestion is None or comment is None:
        return suggestion
    mark = _COMMENT.get(suggestion.software, "#")
    lines = tuple(
        f"{line}   {mark} {comment}" if _from_the_fit(line) else line for line in suggestion.lines
    )
    note = suggestion.note
    if suggestion.software == "apache2":
        note += (
            "; apache2 reads comments only on lines of their own: move the low-confidence "
            "comment above its directive before pasting"
        )
    return dataclasses.replace(suggestion, lines=lines, note=note)


def _setting(settings: Sequence[ServerSetting], name: str) -> ServerSetting | None:
    return next((s for s in settings if s.name == name), None)


def _as_count(setting: ServerSetting | None, default: int) -> tuple[int, bool]:
    """The setting as a whole number, and whether it was read (not assumed)."""
    if setting is None or setting.value is None:
        return default, False
    try:
        return int(setting.value.strip()), True
    except ValueError:
        return default, False


def for_group(group: GroupEstimate, instances: int) -> Suggestion | None:
    """The lines that run ``instances`` workers of ``group`` (the module docstring),
    flagged on each line when its fit is low confidence."""
    return flag_low_confidence(_for_group(group, instances), group.model, group.warnings)


def _for_group(group: GroupEstimate, instances: int) -> Suggestion | None:
    n = max(instances, 0)
    if group.rule == "postgresql":
        return _postgresql(group, n)
    if group.rule == "php-fpm" and group.pool is not None:
        return Suggestion(
            software="php-fpm",
            title=f"php-fpm pool {group.pool}",
            instances=n,
            lines=(f"pm.max_children = {n}",),
            note=f"in the [{group.pool}] section of pool {group.pool}'s configuration; each "
            "pool is sized on its own, the master's cost counted in its fixed cost",
        )
    if group.rule == "apache2" and group.mpm in ("event", "worker"):
        per_child = group.threads_per_child or max(group.threads - 2, 1)
        return Suggestion(
            software="apache2",
            title=f"apache2 ({group.mpm} MPM)",
            instances=n,
            lines=(
                f"ThreadsPerChild {per_child}",
                f"ServerLimit {max(n, 1)}",
                f"MaxRequestWorkers {max(n, 1) * per_child}",
            ),
            note=f"the answer is {n:,} processes (ServerLimit), each running "
            f"{per_child} request threads: {n * per_child:,} request workers "
            "(MaxRequestWorkers = ServerLimit x ThreadsPerChild)",
        )
    if group.rule == "apache2" and group.mpm == "prefork":
        return Suggestion(
            software="apache2",
            title="apache2 (prefork MPM)",
            instances=n,
            lines=(f"ServerLimit {max(n, 1)}", f"MaxRequestWorkers {n}"),
            note="prefork runs one request per process: the answer is in processes, "
            "and ServerLimit (default 256) caps MaxRequestWorkers",
        )
    software = _RULE_SOFTWARE.get(group.rule) or recognise(group.server)
    if group.rule == "apache2":
        software = "apache2"
    return configuration(software, n, group.threads)


def _postgresql(group: GroupEstimate, n: int) -> Suggestion:
    settings = group.settings
    reserved_setting = _setting(settings, "superuser_reserved_connections")
    reserved, read = _as_count(reserved_setting, 3)
    also, also_read = _as_count(_setting(settings, "reserved_connections"), 0)
    kept = reserved + (also if also_read else 0)
    reserved_words = (
        f"superuser_reserved_connections = {reserved} ({reserved_setting.source})"
        if read and reserved_setting is not None
        else f"superuser_reserved_connections, assumed {reserved} (PostgreSQL's default; "
        + (reserved_setting.source if reserved_setting is not None else "not read")
        + ")"
    )
    if also_read and also:
        reserved_words += f" and reserved_connections = {also}"
    fixed = {
        role: count
        for role, count in group.roles.items()
        if role not in (group.worker_role, "postmaster")
    }
    background = ", ".join(f"{count} {role}" for role, count in fixed.items()) or "none"
    buffers = _setting(settings, "shared_buffers")
    buffers_words = (
        f"shared_buffers = {buffers.value} ({buffers.source})"
        if buffers is not None and buffers.value is not None
        else "shared_buffers unknown: " + (buffers.source if buffers is not None else "not read")
    )
    ordinary = max(n - kept, 0)
    note = (
        f"{n:,} client backends fit: max_connections counts every client connection, "
        f"{kept} of them kept for superusers by {reserved_words}, so {ordinary:,} for "
        f"ordinary clients. The background processes ({background}) are not connections: "
        "they are in the fixed cost, as the postmaster is; autovacuum workers come and go "
        "beside them. The fixed cost was measured with "
        f"{buffers_words}: a larger shared_buffers raises it. work_mem is spent per sort or "
        "hash on top: measure under real queries"
    )
    if n <= kept:
        note += f". {n} connections leave none for ordinary clients: give it more memory"
    return Suggestion(
        software="postgres",
        title="PostgreSQL",
        instances=n,
        lines=(f"max_connections = {n}",),
        note=note,
    )


def role_counts(roles: Mapping[str, int]) -> str:
    """``1 postmaster, 6 client backend, ...`` for a line of text."""
    return ", ".join(f"{count} {role}" for role, count in roles.items())
