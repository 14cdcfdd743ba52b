"""Real servers for the tests and the validation script, started and always stopped here.

Every server runs from a temporary directory of its own (configuration, pid file, logs,
sockets, runtime and lock files), listens on a free loopback port or a unix socket there,
and runs in a process group of its own, optionally inside a memory cgroup of its own
(``capacity.measure.cgroup.create_cgroup``) and, for apache2, inside a PID namespace of its own so
that ``capplan ... --cmd apache2`` sees this instance and nothing else. Nothing here reads
or writes a system instance's configuration (/etc/apache2 is never used) or port.

Readiness is waited for, never slept for: a port that accepts, a socket that exists, the
expected number of workers present. Stopping kills the whole process group, the namespace
and the cgroup's members, in ``finally``, so a failed assertion leaves no orphan behind.

When root, apache2 and php-fpm workers run as www-data, as on a real host: their memory is
then unreadable to anyone but root, so capplan must run as root to measure them.

No pytest here: ``scripts/validate.py`` uses the same launchers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from capacity.measure.cgroup import OwnCgroup

HERE = Path(__file__).resolve().parent
FORKSERVER = HERE / "forkserver.py"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
WWW_USER = "www-data"


class ServerUnavailable(Exception):
    """A server or tool is not installed here; the message names the package to install."""


def find_binary(names: tuple[str, ...], package: str) -> str:
    """The first of ``names`` on PATH or in /usr/sbin; ServerUnavailable names ``package``."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    raise ServerUnavailable(
        f"{names[0]} is not installed: install the {package} package "
        "(.ci/install-system-packages does)"
    )


def apache2_binary() -> str:
    return find_binary(("apache2", "httpd"), "apache2")


def ab_binary() -> str:
    return find_binary(("ab",), "apache2-utils")


def php_fpm_binary() -> str:
    candidates = sorted(Path("/usr/sbin").glob("php-fpm*"), reverse=True)
    names = (*(p.name for p in candidates), "php-fpm")
    return find_binary(names, "php-fpm")


def gunicorn_available() -> None:
    try:
        import gunicorn  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ServerUnavailable(
            "gunicorn is not installed: pip install gunicorn (it is in the 'test' extra)"
        ) from None


def unshare_binary() -> str:
    return find_binary(("unshare",), "util-linux")


def pid_namespace_available() -> None:
    """ServerUnavailable unless this host lets us create a PID namespace (root, and not a
    container that forbids it): apache2 runs in one so that --cmd apache2 sees only it."""
    unshare = unshare_binary()
    find_binary(("nsenter",), "util-linux")
    completed = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if completed.returncode != 0:
        raise ServerUnavailable(
            "cannot create a PID namespace (unshare --pid --fork --mount-proc: "
            f"{completed.stderr.strip()}): the test needs one so that --cmd apache2 "
            "selects only its own apache2"
        )


def www_user() -> str | None:
    """The user workers drop to when we are root (as Debian's servers do), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(WWW_USER)
    except KeyError:
        return None
    return WWW_USER


# --------------------------------------------------------------------------- /proc helpers


def ppid_of(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[1]) if fields[0] != b"Z" else None


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) direct children of ``pid``, in pid order."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ppid_of(int(entry)) == pid:
            found.append(int(entry))
    return sorted(found)


def descendants_of(pid: int) -> list[int]:
    stack, found = [pid], []
    while stack:
        for child in children_of(stack.pop()):
            found.append(child)
            stack.append(child)
    return found


def read_title(pid: int) -> str:
    """The process title as ``ps`` shows it: argv joined by spaces, NUL padding dropped."""
    try:
        data = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return b" ".join(data.rstrip(b"\0").split(b"\0")).decode("utf-8", "replace").strip()


def alive(pid: int) -> bool:
    return ppid_of(pid) is not None


class OutOfMemory(RuntimeError):
    """The server's cgroup OOM-killed a process while it started: it will not get ready."""


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    *logs: Path,
    cgroup: OwnCgroup | None = None,
) -> None:
    """Poll ``condition`` until it holds; RuntimeError with the log's tail after ``timeout``,
    OutOfMemory as soon as ``cgroup`` has OOM-killed anything (a server that respawns killed
    workers would otherwise keep an experiment waiting for the whole timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        if cgroup is not None and cgroup.oom_kills() > 0:
            raise OutOfMemory(f"{what}: the cgroup's OOM killer fired while it started")
        time.sleep(0.02)
    tail = " | ".join(
        line
        for log in logs
        if log.exists()
        for line in log.read_text(errors="replace").strip().splitlines()[-5:]
    )
    state = f"exited with {process.returncode}" if process and process.poll() is not None else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s {state} {tail}".strip())


def port_accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A port that is free now (the server binds it a moment later; callers retry on EADDRINUSE)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str = "/", timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass
class Server:
    """A running server: its master's pid (on the host), where it listens, its directory."""

    name: str
    process: subprocess.Popen[bytes]
    pid: int
    workdir: Path
    port: int | None = None
    socket_path: Path | None = None
    cgroup: OwnCgroup | None = None
    namespace: bool = False
    log: Path | None = None
    access_log: Path | None = None

    def requests_logged(self) -> int:
        """Requests in the access log so far (a test checks the load really ran)."""
        if self.access_log is None or not self.access_log.exists():
            return 0
        with self.access_log.open("rb") as lines:
            return sum(1 for _ in lines)

    def workers(self) -> list[int]:
        return children_of(self.pid)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def enter_command(self) -> list[str]:
        """Prefix that runs a command inside this server's PID namespace (``nsenter``)."""
        if not self.namespace:
            return []
        nsenter = find_binary(("nsenter",), "util-linux")
        return [nsenter, "-t", str(self.pid), "-p", "-m", "--"]


def _popen(
    command: list[str], cgroup: OwnCgroup | None, log: Path, cwd: Path, **kwargs: object
) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            # Joined before exec, so the server's first allocation is already charged there
            # (v2 leaves charges made before a move behind). No threads run here.
            preexec_fn=cgroup.join_self if cgroup is not None else None,  # noqa: PLW1509
            **kwargs,
        )


def stop_server(process: subprocess.Popen[bytes], pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM the master, then SIGKILL its process group and every pid we saw."""
    for pid in pids[:1]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids[:1]):
        time.sleep(0.02)
    for group in {process.pid, *pids[:1]}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory the workers (www-data) may read: 0755, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


APACHE_BASE_MODULES = ("mpm_prefork", "authz_core", "authz_host", "mime", "dir", "alias", "status")


def apache2_config(
    workdir: Path,
    port: int,
    workers: int,
    *,
    max_workers: int | None = None,
    modules: tuple[str, ...] = (),
    extra: str = "",
    mpm: str = "prefork",
    threads_per_child: int = 25,
) -> str:
    """An apache2 configuration that lives entirely in ``workdir``.

    With prefork, StartServers = MinSpareServers = MaxSpareServers = ``workers`` and, unless
    ``max_workers`` says otherwise, ServerLimit = MaxRequestWorkers = ``workers`` too, so
    exactly that many workers run even under load (prefork would fork more while every
    worker is busy). With ``mpm="event"`` or ``"worker"`` (Debian's mod_mpm_event.so and
    mod_mpm_worker.so) ``workers`` is the number of child processes, each with
    ``threads_per_child`` threads: StartServers = ServerLimit = ``workers``, MaxRequestWorkers
    = ServerLimit x ThreadsPerChild, and spare-thread bounds that neither add nor retire a
    child. Modules are loaded by path from /usr/lib/apache2/modules: no a2enmod.
    """
    limit = max(workers, max_workers or workers, 1)
    user = www_user()
    lines = [f'ServerRoot "{workdir}"']
    base = tuple(f"mpm_{mpm}" if m == "mpm_prefork" else m for m in APACHE_BASE_MODULES)
    for module in dict.fromkeys((*base, *modules)):
        lines.append(f"LoadModule {module}_module {APACHE_MODULES}/mod_{module}.so")
    if user is not None:
        lines += [f"User {user}", f"Group {user}"]
    lines += [
        f'DefaultRuntimeDir "{workdir}/run"',
        f'PidFile "{workdir}/run/apache2.pid"',
        f"Mutex file:{workdir}/lock default",
        "ServerName 127.0.0.1",
        f"Listen 127.0.0.1:{port}",
        *_mpm_lines(mpm, workers, limit, threads_per_child),
        "MaxConnectionsPerChild 0",
        "KeepAlive Off",
        f'ErrorLog "{workdir}/logs/error.log"',
        "LogLevel warn",
        'LogFormat "%h %l %u %t \\"%r\\" %>s %b" common',
        f'CustomLog "{workdir}/logs/access.log" common',
        "TypesConfig /etc/mime.types",
        f'DocumentRoot "{workdir}/htdocs"',
        f'<Directory "{workdir}/htdocs">',
        "    Require all granted",
        "</Directory>",
        "DirectoryIndex index.html",
        "<Location /server-status>",
        "    SetHandler server-status",
        "    Require ip 127.0.0.1",
        "</Location>",
        extra,
    ]
    return "\n".join(lines) + "\n"


def _mpm_lines(mpm: str, workers: int, limit: int, threads: int) -> list[str]:
    if mpm == "prefork":
        return [
            f"StartServers {workers}",
            f"MinSpareServers {workers}",
            f"MaxSpareServers {workers}",
            f"ServerLimit {limit}",
            f"MaxRequestWorkers {limit}",
        ]
    if mpm not in ("event", "worker"):
        raise ValueError(f"unknown MPM {mpm!r}: prefork, worker or event")
    # Idle threads never fall below MinSpareThreads (1) nor rise above MaxSpareThreads (every
    # thread): the MPM keeps exactly StartServers children, idle or loaded.
    return [
        f"StartServers {workers}",
        f"ServerLimit {limit}",
        f"ThreadLimit {threads}",
        f"ThreadsPerChild {threads}",
        f"MaxRequestWorkers {limit * threads}",
        "MinSpareThreads 1",
        f"MaxSpareThreads {limit * threads}",
    ]


@contextlib.contextmanager
def apache2(
    workers: int = 10,
    *,
    cgroup: OwnCgroup | None = None,
    namespace: bool = False,
    max_workers: int | None = None,
    modules: tuple[str, ...] = (),
    extra: str = "",
    files: dict[str, str] | None = None,
    timeout: float = 60.0,
    mpm: str = "prefork",
    threads_per_child: int = 25,
) -> Iterator[Server]:
    """apache2 with ``workers`` worker processes on a free loopback port: prefork by
    default, or ``mpm="event"``/``"worker"`` with ``threads_per_child`` threads each.

    ``namespace=True`` runs it as PID 1 of a PID namespace (``unshare --pid --fork
    --mount-proc``), so ``capplan --cmd apache2`` run through ``Server.enter_command()`` sees
    only this instance, even on a host that runs its own apache2.
    """
    binary = apache2_binary()
    with private_dir("capplan-apache2-") as workdir:
        for sub in ("run", "lock", "logs", "htdocs"):
            (workdir / sub).mkdir()
            (workdir / sub).chmod(0o755)
        (workdir / "htdocs" / "index.html").write_text("<html><body>capplan test</body></html>\n")
        for name, text in (files or {}).items():
            (workdir / "htdocs" / name).write_text(text)
        log = workdir / "logs" / "error.log"
        for _attempt in range(3):
            port = free_port()
            conf = workdir / "apache2.conf"
            conf.write_text(
                apache2_config(
                    workdir,
                    port,
                    workers,
                    max_workers=max_workers,
                    modules=modules,
                    extra=extra,
                    mpm=mpm,
                    threads_per_child=threads_per_child,
                )
            )
            command = [binary, "-f", str(conf), "-DFOREGROUND"]
            if namespace:
                command = [unshare_binary(), "--pid", "--fork", "--mount-proc", *command]
            # A clean environment keeps a system instance's APACHE_* settings out.
            env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
            log.write_text("")
            process = _popen(command, cgroup, workdir / "logs" / "stdout.log", workdir, env=env)
            seen: list[int] = []
            try:
                master = _apache2_ready(
                    process, namespace, port, workers, log, timeout, seen, cgroup
                )
            except BaseException:
                stop_server(process, seen + descendants_of(process.pid))
                raise
            if master is None:  # the port was taken between free_port() and bind: retry
                stop_server(process, seen + descendants_of(process.pid))
                continue
            try:
                yield Server(
                    name="apache2",
                    process=process,
                    pid=master,
                    workdir=workdir,
                    port=port,
                    cgroup=cgroup,
                    namespace=namespace,
                    log=log,
                    access_log=workdir / "logs" / "access.log",
                )
            finally:
                stop_server(process, [master, *descendants_of(process.pid)])
            return
        raise RuntimeError("apache2 could not bind a free loopback port in 3 attempts")


def _apache2_ready(
    process: subprocess.Popen[bytes],
    namespace: bool,
    port: int,
    workers: int,
    log: Path,
    timeout: float,
    seen: list[int],
    cgroup: OwnCgroup | None = None,
) -> int | None:
    """The master's host pid once ``workers`` workers run; None when the port was taken."""
    if namespace:
        wait_until(
            lambda: bool(children_of(process.pid)), timeout, "unshare", process, cgroup=cgroup
        )
        master = children_of(process.pid)[0]
    else:
        master = process.pid
    seen.append(master)

    def port_taken() -> bool:
        return "AH00072" in log.read_text(errors="replace")  # make_sock: could not bind

    wait_until(
        lambda: port_accepts(port) or port_taken(),
        timeout,
        "apache2",
        process,
        log,
        log.with_name("stdout.log"),
        cgroup=cgroup,
    )
    if port_taken():
        return None
    wait_until(
        lambda: len(children_of(master)) >= workers,
        timeout,
        "apache2 workers",
        None,
        log,
        cgroup=cgroup,
    )
    return master


PHP_SCRIPT = """<?php
// A small page that builds and discards some data, as a real page would.
$rows = [];
for ($i = 0; $i < 2000; $i++) {
    $rows[] = ['id' => $i, 'name' => str_repeat(chr(65 + $i % 26), 40) . $i];
}
echo count($rows), ' ', strlen(json_encode($rows)), "\\n";
"""


@contextlib.contextmanager
def php_fpm(
    workers: int = 10,
    *,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
    pool_extra: str = "",
    pools: dict[str, int] | None = None,
) -> Iterator[Server]:
    """php-fpm with one static pool of exactly ``workers`` children on a unix socket, or
    with ``pools`` (name -> children, e.g. ``{"site1": 3, "site2": 5}``): one static pool
    each, on a socket of its own (``workdir / "NAME.sock"``), as a host with a pool per
    site runs. ``pool_extra`` is added to every pool.

    ``Server.workdir / "htdocs" / "index.php"`` is the page and ``Server.socket_path`` the
    first pool's socket; ``php_fpm_frontend`` puts an apache2 in front so that ``ab`` can
    load it over HTTP.
    """
    binary = php_fpm_binary()
    sizes = dict(pools) if pools is not None else {"capplan": workers}
    if not sizes or any(not name.isidentifier() or n < 1 for name, n in sizes.items()):
        raise ValueError(
            f"pools must name each pool (letters, digits, _) with 1+ children: {pools}"
        )
    with private_dir("capplan-php-fpm-") as workdir:
        (workdir / "htdocs").mkdir()
        (workdir / "htdocs").chmod(0o755)
        (workdir / "htdocs" / "index.php").write_text(PHP_SCRIPT)
        sockets = [
            workdir / ("php-fpm.sock" if pools is None else f"{name}.sock") for name in sizes
        ]
        log = workdir / "php-fpm.log"
        user = www_user()
        lines = ["[global]", f"pid = {workdir}/php-fpm.pid", f"error_log = {log}", "daemonize = no"]
        for (name, children), sock in zip(sizes.items(), sockets, strict=True):
            lines += [
                f"[{name}]",
                f"listen = {sock}",
                "listen.mode = 0666",
                "pm = static",
                f"pm.max_children = {children}",
                "catch_workers_output = yes",
                "clear_env = no",
            ]
            if user is not None:
                lines += [f"user = {user}", f"group = {user}"]
            lines.append(pool_extra)
        conf = workdir / "php-fpm.conf"
        conf.write_text("\n".join(lines) + "\n")
        command = [binary, "--nodaemonize", "--fpm-config", str(conf)]
        if os.geteuid() == 0 and user is None:
            command.append("--allow-to-run-as-root")
        process = _popen(command, cgroup, workdir / "stdout.log", workdir)
        seen = [process.pid]

        def ready() -> bool:
            # A child forked a moment ago still bears the master's title: count pool titles.
            titles = [read_title(child) for child in children_of(process.pid)]
            return all(s.exists() for s in sockets) and all(
                titles.count(f"php-fpm: pool {name}") >= n for name, n in sizes.items()
            )

        try:
            wait_until(
                ready,
                timeout,
                "php-fpm",
                process,
                log,
                workdir / "stdout.log",
                cgroup=cgroup,
            )
            seen += children_of(process.pid)
            yield Server(
                name="php-fpm",
                process=process,
                pid=process.pid,
                workdir=workdir,
                socket_path=sockets[0],
                cgroup=cgroup,
                log=log,
            )
        finally:
            seen += descendants_of(process.pid)
            stop_server(process, seen)


@contextlib.contextmanager
def php_fpm_frontend(fpm: Server, workers: int = 10) -> Iterator[Server]:
    """apache2 (outside the php-fpm cgroup) passing *.php to php-fpm's socket, as Debian's
    php-fpm configuration does, so that ``ab`` can load php-fpm."""
    assert fpm.socket_path is not None
    extra = "\n".join(
        [
            f'DocumentRoot "{fpm.workdir}/htdocs"',
            f'<Directory "{fpm.workdir}/htdocs">',
            "    Require all granted",
            "</Directory>",
            '<FilesMatch "\\.php$">',
            f'    SetHandler "proxy:unix:{fpm.socket_path}|fcgi://localhost"',
            "</FilesMatch>",
        ]
    )
    with apache2(workers, modules=("proxy", "proxy_fcgi"), extra=extra) as front:
        yield front


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


@contextlib.contextmanager
def gunicorn(
    workers: int = 4,
    *,
    cgroup: OwnCgroup | None = None,
    timeout: float = 60.0,
    preload: bool = False,
) -> Iterator[Server]:
    """gunicorn with ``workers`` sync workers serving a tiny WSGI app on a free port."""
    gunicorn_available()
    with private_dir("capplan-gunicorn-") as workdir:
        (workdir / "capplan_wsgi.py").write_text(WSGI_APP)
        log = workdir / "gunicorn.log"
        for _attempt in range(3):
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{port}",
                "--chdir",
                str(workdir),
                "--worker-tmp-dir",
                str(workdir),
                "--error-logfile",
                str(log),
                "--access-logfile",
                str(workdir / "access.log"),
                "--graceful-timeout",
                "2",
                *(["--preload"] if preload else []),
                "capplan_wsgi:application",
            ]
            log.write_text("")
            process = _popen(command, cgroup, workdir / "stdout.log", workdir)

            def ready(port: int = port, pid: int = process.pid) -> bool:
                return port_accepts(port) and len(children_of(pid)) >= workers

            try:
                wait_until(
                    ready,
                    timeout,
                    "gunicorn",
                    process,
                    log,
                    workdir / "stdout.log",
                    cgroup=cgroup,
                )
            except RuntimeError:
                stop_server(process, [process.pid, *descendants_of(process.pid)])
                if "Address already in use" in log.read_text(errors="replace"):
                    continue
                raise
            except BaseException:
                stop_server(process, [process.pid, *descendants_of(process.pid)])
                raise
            try:
                yield Server(
                    name="gunicorn",
                    process=process,
                    pid=process.pid,
                    workdir=workdir,
                    port=port,
                    cgroup=cgroup,
                    log=log,
                    access_log=workdir / "access.log",
                )
            finally:
                stop_server(process, [process.pid, *descendants_of(process.pid)])
            return
        raise RuntimeError("gunicorn could not bind a free loopback port in 3 attempts")


# --------------------------------------------------------------------------- forkserver


@dataclasses.dataclass
class ForkServer(Server):
    """capacity/testing/forkserver.py: adds one worker per ``add()``."""

    def _ask(self, command: str, answer: str, timeout: float = 60.0) -> list[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\n".encode())
        self.process.stdin.flush()
        line = _read_line(self.process, timeout)
        parts = line.split()
        if not parts or parts[0] != answer:
            raise RuntimeError(f"forkserver answered {line!r} to {command!r}")
        return parts[1:]

    def add(self) -> int:
        """Fork one more worker; its pid once its memory is in place."""
        return int(self._ask("add", "added")[0])

    def status(self) -> tuple[int, int, int]:
        """(live workers, fewest requests a worker served, most)."""
        workers, low, high = (int(x) for x in self._ask("status", "status"))
        return workers, low, high


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    import select

    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            byte = os.read(fd, 1)
            if not byte:
                break
            if byte == b"\n":
                return buffer.decode()
            buffer += byte
    raise RuntimeError(f"forkserver gave no answer (exit status {process.poll()})")


@contextlib.contextmanager
def forkserver(
    *args: str, workers: int = 2, cgroup: OwnCgroup | None = None, timeout: float = 120.0
) -> Iterator[ForkServer]:
    """Start capacity/testing/forkserver.py with ``args`` and ``workers`` initial workers."""
    with private_dir("capplan-forkserver-") as workdir:
        log = workdir / "stderr.log"
        with log.open("ab") as errors:
            process = subprocess.Popen(
                [sys.executable, str(FORKSERVER), "--workers", str(workers), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=workdir,
                start_new_session=True,
                preexec_fn=cgroup.join_self if cgroup is not None else None,  # noqa: PLW1509
            )
        seen = [process.pid]
        try:
            line = _read_line(process, timeout)
            if not line.startswith("ready"):
                raise RuntimeError(f"forkserver: {line!r} {log.read_text()[-500:]}")
            _, pid, port, *_pids = line.split()
            yield ForkServer(
                name="forkserver",
                process=process,
                pid=int(pid),
                workdir=workdir,
                port=int(port),
                cgroup=cgroup,
                log=log,
            )
        finally:
            seen += descendants_of(process.pid)
            for stream in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            stop_server(process, seen)


# --------------------------------------------------------------------------- load


@dataclasses.dataclass
class Load:
    process: subprocess.Popen[bytes]
    output: Path


@contextlib.contextmanager
def ab_load(url: str, concurrency: int, batch: int = 50000) -> Iterator[Load]:
    """``ab`` hammering ``url`` in the background until the block ends.

    ab keeps a record per request (``-n`` of them, allocated up front), so it cannot run
    unbounded: a shell loop restarts it every ``batch`` requests. ``-r`` keeps it going
    through the connection resets of an OOM kill. The loop runs in a process group of its
    own, killed as a whole when the block ends.
    """
    binary = ab_binary()
    with tempfile.NamedTemporaryFile(prefix="capplan-ab-", suffix=".log", delete=False) as out:
        output = Path(out.name)
    loop = 'while :; do "$0" -q -r -s 30 -n "$1" -c "$2" "$3" >"$4" 2>&1 || sleep 0.1; done'
    process = subprocess.Popen(
        ["/bin/sh", "-c", loop, binary, str(batch), str(concurrency), url, str(output)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield Load(process=process, output=output)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        output.unlink(missing_ok=True)


def ab_run(url: str, requests: int, concurrency: int, timeout: float = 300.0) -> str:
    """Run ``ab`` to completion and return its report; RuntimeError when requests failed."""
    completed = subprocess.run(
        [ab_binary(), "-r", "-s", "30", "-n", str(requests), "-c", str(concurrency), url],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0 or "Complete requests:" not in completed.stdout:
        raise RuntimeError(f"ab failed: {completed.stdout[-400:]} {completed.stderr[-400:]}")
    return completed.stdout
