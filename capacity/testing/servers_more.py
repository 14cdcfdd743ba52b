"""More real servers for the tests (issue 13): nginx, uWSGI, a celery prefork pool, unicorn
and puma, started and always stopped here, like ``capacity.testing.servers``.

Each runs from a temporary directory of its own (configuration, pid file, logs, temp and
cache directories), on a free loopback port (celery needs none: its broker is kombu's
``filesystem://`` transport in that directory, so no broker server runs), in a process
group of its own, optionally in a memory cgroup of its own, and gets ``PR_SET_PDEATHSIG``
(``capacity.measure.children``) so that a killed test run does not leave its master
behind. Nothing reads or writes a system instance's configuration: nginx gets ``-p``,
``-c`` and ``-e`` so that it never opens /etc/nginx or /var/log/nginx.

Readiness is waited for, never slept for: the port accepts and every expected process is
there. The pids of each role come from the server's own account where it has one (nginx's
and unicorn's titles, uWSGI's ``spawned ... (pid: N)`` log lines, puma's titles), never
from capplan's classifier, so that a test can hold the classifier to them.

When root, nginx's and uWSGI's workers drop to www-data, as on a real host.

No pytest here: validation scripts use the same starters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from capacity.measure.cgroup import OwnCgroup
from capacity.measure.children import die_with_parent
from capacity.testing.servers import (
    Server,
    ServerUnavailable,
    children_of,
    descendants_of,
    find_binary,
    free_port,
    port_accepts,
    private_dir,
    read_title,
    stop_server,
    wait_until,
    www_user,
)

UWSGI_PYTHON_PLUGIN = Path("/usr/lib/uwsgi/plugins/python3_plugin.so")
UWSGI_HTTP_PLUGIN = Path("/usr/lib/uwsgi/plugins/http_plugin.so")  # in uwsgi-core
_PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)


def nginx_binary() -> str:
    return find_binary(("nginx",), "nginx")


def uwsgi_binary() -> str:
    binary = find_binary(("uwsgi", "uwsgi-core"), "uwsgi-core")
    if not UWSGI_PYTHON_PLUGIN.exists():
        raise ServerUnavailable(
            "uWSGI's Python 3 plugin is not installed: install the uwsgi-plugin-python3 "
            "package (.ci/install-system-packages does)"
        )
    return binary


def celery_available() -> None:
    if importlib.util.find_spec("celery") is None:
        raise ServerUnavailable(
            "celery is not installed: pip install celery (it is in the 'test' extra)"
        )


def unicorn_binary() -> str:
    return find_binary(("unicorn",), "unicorn")


def puma_binary() -> str:
    return find_binary(("puma",), "puma")


@dataclasses.dataclass
class PreforkServer(Server):
    """A running server whose processes play several roles: ``roles()`` reads them afresh
    (role -> pids, from the server's own account), ``workers()`` is the worker role's."""

    worker_role: str = "worker"
    read_roles: Callable[[], dict[str, list[int]]] = dataclasses.field(
        default=lambda: {}, repr=False
    )

    def roles(self) -> dict[str, list[int]]:
        return self.read_roles()

    def workers(self) -> list[int]:
        return sorted(self.read_roles().get(self.worker_role, []))

    def helpers(self) -> list[int]:
        """Every child that is not a worker (cache manager, mule, spooler, ...)."""
        return sorted(
            pid
            for role, pids in self.read_roles().items()
            if role != self.worker_role
            for pid in pids
        )


def _popen(
    command: list[str],
    cgroup: OwnCgroup | None,
    log: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, in ``cgroup`` before exec, SIGKILLed
    when this process dies."""
    dies = die_with_parent()

    def before_exec() -> None:
        if cgroup is not None:
            cgroup.join_self()
        if dies is not None:
            dies()

    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=before_exec,  # noqa: PLW1509  (no threads start servers here)
            env=env,
        )


def _by_title(pid: int, table: tuple[tuple[str, str], ...]) -> dict[str, list[int]]:
    """The children of ``pid`` by the first title prefix of ``table`` they bear."""
    found: dict[str, list[int]] = {}
    for child in children_of(pid):
        title = read_title(child)
        for prefix, role in table:
            if title.startswith(prefix):
                found.setdefault(role, []).append(child)
                break
    return found


@contextlib.contextmanager
def _serve(
    name: str,
    workdir: Path,
    start: Callable[[int], tuple[list[str], dict[str, str] | None]],
    roles: Callable[[int], dict[str, list[int]]],
    expected: dict[str, int],
    *,
    worker_role: str = "worker",
    cgroup: OwnCgroup | None,
    timeout: float,
    log: Path,
    use_port: bool = True,
    settled: Callable[[int], bool] | None = None,
) -> Iterator[PreforkServer]:
    """Start ``start(port)``'s command until it binds a free port (3 tries), wait until
    ``roles(master)`` has at least ``expected`` of each role (and ``settled(master)``
    holds), yield, always stop."""
    for _attempt in range(3):
        port = free_port() if use_port else 0
        command, env = start(port)
        (workdir / "stdout.log").write_bytes(b"")
        process = _popen(command, cgroup, workdir / "stdout.log", workdir, env)
        master = process.pid

        def port_taken() -> bool:
            text = "".join(
                p.read_text(errors="replace") for p in (log, workdir / "stdout.log") if p.exists()
            )
            return bool(_PORT_TAKEN.search(text))

        def ready(port: int = port, master: int = master) -> bool:
            if use_port and not port_accepts(port):
                return False
            found = roles(master)
            if not all(len(found.get(role, [])) >= n for role, n in expected.items()):
                return False
            return settled is None or settled(master)

        try:
            wait_until(
                lambda: ready() or (use_port and port_taken()),
                timeout,
                name,
                process,
                log,
                workdir / "stdout.log",
                cgroup=cgroup,
            )
        except RuntimeError:
            stop_server(process, [master, *descendants_of(master)])
            if use_port and port_taken():
                continue
            raise
        except BaseException:
            stop_server(process, [master, *descendants_of(master)])
            raise
        if not ready():  # the port was taken
            stop_server(process, [master, *descendants_of(master)])
            continue
        try:
            yield PreforkServer(
                name=name,
                process=process,
                pid=master,
                workdir=workdir,
                port=port if use_port else None,
                cgroup=cgroup,
                log=log,
                worker_role=worker_role,
                read_roles=functools.partial(roles, master),
            )
        finally:
            stop_server(process, [master, *descendants_of(master)])
        return
    raise RuntimeError(f"{name} could not bind a free loopback port in 3 attempts")


# --------------------------------------------------------------------------- nginx


_NGINX_TITLES = (
    ("nginx: worker process", "worker"),
    ("nginx: cache manager process", "cache manager"),
    ("nginx: cache loader process", "cache loader"),
)


@contextlib.contextmanager
def nginx(
    workers: int = 4,
    *,
    cache: bool = False,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
) -> Iterator[PreforkServer]:
    """nginx with a master and ``worker_processes`` = ``workers`` on a free loopback port,
    serving a static page (``/index.html``; ``access_log`` counts requests). ``cache=True``
    configures a ``proxy_cache_path``, so the master also starts its cache manager and
    cache loader (the loader exits about a minute after start, once it has loaded)."""
    binary = nginx_binary()
    with private_dir("capplan-nginx-") as workdir:
        for sub in ("html", "tmp", "cache", "logs"):
            (workdir / sub).mkdir()
            (workdir / sub).chmod(0o777)
        (workdir / "html" / "index.html").write_text("<html><body>capplan test</body></html>\n")
        log = workdir / "logs" / "error.log"
        access = workdir / "logs" / "access.log"
        user = www_user()

        def start(port: int) -> tuple[list[str], dict[str, str] | None]:
            lines = [
                "daemon off;",
                "master_process on;",
                f"worker_processes {workers};",
                f"pid {workdir}/nginx.pid;",
                f"error_log {log} warn;",
                *([f"user {user};"] if user is not None else []),
                "events { worker_connections 256; }",
                "http {",
                f"    access_log {access};",
                *(
                    f"    {kind}_temp_path {workdir}/tmp/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                ),
                *([f"    proxy_cache_path {workdir}/cache keys_zone=capplan:1m;"] if cache else []),
                "    server {",
                f"        listen 127.0.0.1:{port};",
                f"        root {workdir}/html;",
                "    }",
                "}",
            ]
            conf = workdir / "nginx.conf"
            conf.write_text("\n".join(lines) + "\n")
            log.write_text("")
            return [binary, "-p", f"{workdir}/", "-c", str(conf), "-e", str(log)], None

        expected = {"worker": workers}
        if cache:
            expected |= {"cache manager": 1, "cache loader": 1}
        with _serve(
            "nginx",
            workdir,
            start,
            lambda master: _by_title(master, _NGINX_TITLES),
            expected,
            cgroup=cgroup,
            timeout=timeout,
            log=log,
        ) as server:
            server.access_log = access
            yield server


# --------------------------------------------------------------------------- uWSGI


WSGI_APP = '''"""A tiny WSGI application: builds a small JSON document per request."""
import json


def application(environ, start_response):
    rows = [{"id": i, "name": "x" * 40 + str(i)} for i in range(500)]
    body = json.dumps({"path": environ.get("PATH_INFO"), "rows": len(rows)}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
'''

_UWSGI_SPAWNED = re.compile(rb"spawned uWSGI (worker|mule|http) \d+ \(pid: (\d+)")
_UWSGI_SPOOLER = re.compile(rb"spawned the uWSGI spooler on dir .* with pid (\d+)")


def _uwsgi_roles(log: Path, master: int) -> dict[str, list[int]]:
    """Role -> pids from uWSGI's own log (``spawned uWSGI worker 1 (pid: N, ...)``), kept
    to the master's live children (a respawned worker's old pid is gone)."""
    try:
        text = log.read_bytes()
    except OSError:
        return {}
    live = set(children_of(master))
    found: dict[str, list[int]] = {}
    for match in _UWSGI_SPAWNED.finditer(text):
        if int(match[2]) in live:
            found.setdefault(match[1].decode(), []).append(int(match[2]))
    for match in _UWSGI_SPOOLER.finditer(text):
        if int(match[1]) in live:
            found.setdefault("spooler", []).append(int(match[1]))
    return {role: sorted(set(pids)) for role, pids in found.items()}


def _signal_masks(pid: int) -> tuple[str, str] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return fields.get("SigIgn", "").strip(), fields.get("SigCgt", "").strip()


def _own_signal_handlers(master: int) -> bool:
    """Every child has set up its own signal handlers: uWSGI logs a child as spawned right
    after fork, while it still has the master's, and without titles its signals are what
    tells a worker from a mule or the spooler."""
    mine = _signal_masks(master)
    return mine is not None and all(_signal_masks(kid) != mine for kid in children_of(master))


@contextlib.contextmanager
def uwsgi(
    workers: int = 4,
    *,
    mules: int = 0,
    spooler: bool = False,
    router: bool = False,
    procname: bool = True,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
) -> Iterator[PreforkServer]:
    """uWSGI with a master and ``processes`` = ``workers`` serving a tiny WSGI app over
    HTTP on a free loopback port (``--http-socket``: the workers answer HTTP themselves),
    ``mules`` mules and optionally a spooler (fixed cost). ``router=True`` puts uWSGI's
    http router in front instead (``--http``: role ``http``, fixed cost), which passes
    requests to the workers over a socket of its own. ``procname=True`` passes
    ``--auto-procname`` (titles ``uWSGI master``, ``uWSGI worker 1``, ...); without it
    every process keeps the master's command line, as uWSGI's default is."""
    binary = uwsgi_binary()
    with private_dir("capplan-uwsgi-") as workdir:
        (workdir / "capplan_wsgi.py").write_text(WSGI_APP)
        (workdir / "spool").mkdir()
        (workdir / "spool").chmod(0o777)
        log = workdir / "uwsgi.log"
        user = www_user()

        def start(port: int) -> tuple[list[str], dict[str, str] | None]:
            log.write_text("")
            log.chmod(0o666)
            command = [
                binary,
                "--plugin",
                str(UWSGI_PYTHON_PLUGIN),
                "--master",
                "--processes",
                str(workers),
                *(["--plugin", str(UWSGI_HTTP_PLUGIN)] if router else []),
                "--http" if router else "--http-socket",
                f"127.0.0.1:{port}",
                "--chdir",
                str(workdir),
                "--wsgi-file",
                str(workdir / "capplan_wsgi.py"),
                "--die-on-term",
                "--logto",
                str(log),
                "--pidfile",
                str(workdir / "uwsgi.pid"),
                *(["--uid", user, "--gid", user] if user is not None else []),
                *(["--mule"] * mules),
                *(["--spooler", str(workdir / "spool")] if spooler else []),
                *(["--auto-procname"] if procname else []),
            ]
            return command, None

        expected = {"worker": workers}
        if mules:
            expected["mule"] = mules
        if spooler:
            expected["spooler"] = 1
        if router:
            expected["http"] = 1
        with _serve(
            "uwsgi",
            workdir,
            start,
            lambda master: _uwsgi_roles(log, master),
            expected,
            cgroup=cgroup,
            timeout=timeout,
            log=log,
            settled=_own_signal_handlers,
        ) as server:
            yield server


# --------------------------------------------------------------------------- celery


CELERY_APP = '''"""A celery app on kombu's filesystem:// transport: no broker server runs."""
import os

from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
app = Celery("capplan_tasks", broker="filesystem://")
app.conf.broker_transport_options = {
    "data_folder_in": os.path.join(HERE, "queue"),
    "data_folder_out": os.path.join(HERE, "queue"),
    "processed_folder": os.path.join(HERE, "processed"),
    "store_processed": False,
}
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False


@app.task
def rows(n):
    return len([{"id": i, "name": "x" * 40 + str(i)} for i in range(n)])
'''


@contextlib.contextmanager
def celery(
    workers: int = 4,
    *,
    cgroup: OwnCgroup | None = None,
    timeout: float = 120.0,
) -> Iterator[PreforkServer]:
    """``celery worker`` with the prefork pool at ``--concurrency`` = ``workers``: its main
    process and that many pool workers (``worker_role`` ``"pool worker"``), on kombu's
    filesystem:// transport in the temporary directory. Without setproctitle (not one of
    celery's requirements) every pool worker keeps the main process's command line."""
    celery_available()
    with private_dir("capplan-celery-") as workdir:
        (workdir / "capplan_tasks.py").write_text(CELERY_APP)
        for sub in ("queue", "processed"):
            (workdir / sub).mkdir()
        log = workdir / "celery.log"

        def start(port: int) -> tuple[list[str], dict[str, str] | None]:
            log.write_text("")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8",
                "PYTHONPATH": str(workdir),
                "C_FORCE_ROOT": "1",  # celery's warning about root, with JSON tasks only
            }
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "capplan_tasks",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(workers),
                "--hostname",
                "capplan@localhost",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
                "--logfile",
                str(log),
            ]
            return command, env

        def roles(master: int) -> dict[str, list[int]]:
            kids = children_of(master)
            return {"pool worker": kids} if kids else {}

        with _serve(
            "celery",
            workdir,
            start,
            roles,
            {"pool worker": workers},
            worker_role="pool worker",
            cgroup=cgroup,
            timeout=timeout,
            log=log,
            use_port=False,
        ) as server:
            yield server


def celery_send(server: PreforkServer, tasks: int, rows: int = 2000) -> None:
    """Queue ``tasks`` tasks for the pool (written into the filesystem broker's folder)."""
    command = [
        sys.executable,
        "-c",
        "import sys, capplan_tasks\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    capplan_tasks.rows.delay(int(sys.argv[2]))\n",
        str(tasks),
        str(rows),
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(server.workdir)}
    subprocess.run(command, cwd=server.workdir, env=env, check=True, timeout=120)


def celery_queued(server: PreforkServer) -> int:
    """Tasks still waiting in the filesystem broker's folder."""
    return sum(1 for _ in (server.workdir / "queue").glob("*.msg"))


# --------------------------------------------------------------------------- Ruby: unicorn, puma


RACK_APP = """# A tiny Rack application: builds a small document per request.
run lambda { |env|
  rows = (0...500).map { |i| "x" * 40 + i.to_s }
  [200, { "content-type" => "text/plain" }, ["#{rows.length}\\n"]]
}
"""


def _ruby_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


@contextlib.contextmanager
def unicorn(
    workers: int = 4,
    *,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
) -> Iterator[PreforkServer]:
    """unicorn with its master and ``worker_processes`` = ``workers`` on a free loopback
    port, serving a tiny Rack app (titles ``unicorn master``, ``unicorn worker[N]``)."""
    binary = unicorn_binary()
    with private_dir("capplan-unicorn-") as workdir:
        (workdir / "config.ru").write_text(RACK_APP)
        log = workdir / "unicorn.log"

        def start(port: int) -> tuple[list[str], dict[str, str] | None]:
            log.write_text("")
            conf = workdir / "unicorn.rb"
            conf.write_text(
                f"worker_processes {workers}\n"
                f'listen "127.0.0.1:{port}"\n'
                f'pid "{workdir}/unicorn.pid"\n'
                f'stderr_path "{log}"\n'
                "timeout 60\n"
            )
            return [binary, "-c", str(conf), str(workdir / "config.ru")], _ruby_env()

        with _serve(
            "unicorn",
            workdir,
            start,
            lambda master: _by_title(master, (("unicorn worker[", "worker"),)),
            {"worker": workers},
            cgroup=cgroup,
            timeout=timeout,
            log=log,
        ) as server:
            yield server


@contextlib.contextmanager
def puma(
    workers: int = 4,
    *,
    threads: int = 2,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
) -> Iterator[PreforkServer]:
    """puma in cluster mode: its master and ``workers`` workers (``-w``) of ``threads``
    threads each (``-t``) on a free loopback port, serving a tiny Rack app (titles
    ``puma 5.6.5 (tcp://...)``, ``puma: cluster worker N: MASTER``)."""
    binary = puma_binary()
    with private_dir("capplan-puma-") as workdir:
        (workdir / "config.ru").write_text(RACK_APP)
        log = workdir / "stdout.log"

        def start(port: int) -> tuple[list[str], dict[str, str] | None]:
            command = [
                binary,
                "--workers",
                str(workers),
                "--threads",
                f"{threads}:{threads}",
                "--bind",
                f"tcp://127.0.0.1:{port}",
                "--pidfile",
                str(workdir / "puma.pid"),
                "--dir",
                str(workdir),
                str(workdir / "config.ru"),
            ]
            return command, _ruby_env()

        with _serve(
            "puma",
            workdir,
            start,
            lambda master: _by_title(master, (("puma: cluster worker", "cluster worker"),)),
            {"cluster worker": workers},
            worker_role="cluster worker",
            cgroup=cgroup,
            timeout=timeout,
            log=log,
        ) as server:
            yield server
