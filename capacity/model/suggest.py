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
* Kubernetes: a memory request and limit for a container running N workers; Kubernetes
  quantities in ``Mi`` are powers of 1024, like capplan's units.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Literal

from capacity.answers import Suggestion
from capacity.records import Estimate
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
            note="each connection is a backend process; background processes were "
            "measured as workers too, and work_mem is spent per sort or hash on top: "
            "measure under real queries",
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
