"""A real PostgreSQL for the tests, and pgbench driving it, always stopped here.

Like every server in ``capacity.testing.servers``: a cluster of its own, created by
``initdb`` in a temporary directory, listening only on a unix socket in that directory
(``listen_addresses = ''``), with small ``shared_buffers``, in a process group of its own and
optionally in a memory cgroup of its own. Nothing here reads or writes a system cluster
(``/etc/postgresql``, ``/var/lib/postgresql``, port 5432 on the network are never used).

PostgreSQL refuses to run as root: when we are root the cluster runs as ``postgres`` (or
``nobody``) and its directory is handed to that user. Stopping asks for a fast shutdown
(SIGINT: clients disconnected, shared memory removed), then SIGQUIT, then SIGKILL of the
whole group, in ``finally``.

No pytest here: scripts use it as well as the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from capacity.measure.cgroup import OwnCgroup
from capacity.testing.servers import (
    Load,
    Server,
    ServerUnavailable,
    alive,
    children_of,
    descendants_of,
    private_dir,
    read_title,
    stop_server,
    wait_until,
)

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the cluster's own directory
USERS = ("postgres", "nobody")


def postgresql_bindir() -> Path:
    """Where initdb, postgres and pgbench are: the newest /usr/lib/postgresql/N/bin
    (Debian, Ubuntu), else the directory of ``pg_config --bindir``, else PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in versions:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    raise ServerUnavailable(
        "PostgreSQL is not installed: install the postgresql-15 package "
        "(.ci/install-system-packages does)"
    )


def pgbench_binary() -> Path:
    path = postgresql_bindir() / "pgbench"
    if not path.exists():
        raise ServerUnavailable(
            "pgbench is not installed: install postgresql-contrib-15 (or postgresql-15)"
        )
    return path


def cluster_user() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerUnavailable("running as root, and neither a postgres nor a nobody user exists")


def _demote(user: pwd.struct_passwd | None, cgroup: OwnCgroup | None) -> Callable[[], None]:
    """Run in the child before exec: join the cgroup (as root), then drop to ``user``.

    subprocess's own ``user=`` changes the uid before ``preexec_fn`` runs, when writing
    cgroup.procs needs root; so both happen here, in that order. No threads run here.
    """

    def preexec() -> None:
        if cgroup is not None:
            cgroup.join_self()
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    return preexec


def _environment(workdir: Path) -> dict[str, str]:
    # A clean environment: no PG* variables of the caller's reach a system cluster.
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "LANG": "C",
        "HOME": str(workdir),
    }


@contextlib.contextmanager
def postgresql(
    *,
    cgroup: OwnCgroup | None = None,
    shared_buffers: str = "16MB",
    max_connections: int = 40,
    cluster_name: str | None = None,
    settings: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[Server]:
    """A PostgreSQL cluster of its own on a unix socket in a temporary directory.

    ``Server.pid`` is the postmaster, ``Server.socket_path`` its socket (connect with
    ``-h Server.workdir``), ``Server.log`` the server log. ``cluster_name`` sets the prefix
    Debian's clusters give their process titles (``postgres: 15/main: checkpointer``).
    Durability is off (fsync, synchronous_commit): these clusters hold nothing worth keeping.
    """
    bindir = postgresql_bindir()
    user = cluster_user()
    with private_dir("capplan-postgresql-") as workdir:
        if user is not None:
            os.chown(workdir, user.pw_uid, user.pw_gid)
        data = workdir / "data"
        log = workdir / "postgresql.log"
        env = _environment(workdir)
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=workdir, env=env,
            preexec_fn=_demote(user, None),
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {(initdb.stdout + initdb.stderr)[-600:]}")
        options = {
            "listen_addresses": "",
            "unix_socket_directories": str(workdir),
            "port": str(PORT),
            "shared_buffers": shared_buffers,
            "max_connections": str(max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            **({"cluster_name": cluster_name} if cluster_name is not None else {}),
            **(settings or {}),
        }
        command = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in options.items():
            command += ["-c", f"{key}={value}"]
        with log.open("ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
                preexec_fn=_demote(user, cgroup),  # noqa: PLW1509
            )
        socket_path = workdir / f".s.PGSQL.{PORT}"
        isready = [str(bindir / "pg_isready"), "-q", "-h", str(workdir), "-p", str(PORT)]

        def ready() -> bool:
            if not socket_path.exists():
                return False
            return subprocess.run(isready, env=env, timeout=10, check=False).returncode == 0

        try:
            wait_until(ready, timeout, "postgresql", process, log, cgroup=cgroup)
            yield Server(
                name="postgresql",
                process=process,
                pid=process.pid,
                workdir=workdir,
                socket_path=socket_path,
                cgroup=cgroup,
                log=log,
            )
        finally:
            stop_postgresql(process)


def stop_postgresql(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL of the whole group.

    A clean stop matters here: a postmaster killed outright leaves its System V interlock
    segment behind."""
    pids = [process.pid, *descendants_of(process.pid)]
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGQUIT, 3.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    stop_server(process, [p for p in pids if alive(p)] or [process.pid], grace=1.0)


def client_backends(server: Server) -> list[int]:
    """The postmaster's children whose title is a client backend's (``USER DB [local] ...``)."""
    return [pid for pid in children_of(server.pid) if " [local]" in read_title(pid)]


def pgbench_init(server: Server, scale: int = 1, timeout: float = 120.0) -> None:
    """Create pgbench's tables in the ``postgres`` database (``pgbench -i -s SCALE``)."""
    completed = subprocess.run(
        [str(pgbench_binary()), "-h", str(server.workdir), "-p", str(PORT), "-U", "postgres",
         "-i", "-q", "-s", str(scale), "postgres"],
        capture_output=True, text=True, timeout=timeout, check=False,
        env=_environment(server.workdir),
    )  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {completed.stderr[-600:]}")


@contextlib.contextmanager
def pgbench_load(
    server: Server,
    clients: int,
    *,
    scale: int = 1,
    jobs: int | None = None,
    initialise: bool = True,
    timeout: float = 60.0,
) -> Iterator[Load]:
    """pgbench with ``clients`` clients (one backend each) running until the block ends.

    The tables are created first unless ``initialise`` is False (they exist already); the
    block starts once all ``clients`` backends are connected. pgbench runs in a process
    group of its own, killed as a whole afterwards; its backends exit with it.
    """
    binary = pgbench_binary()
    if initialise:
        pgbench_init(server, scale)
    output = server.workdir / f"pgbench-{clients}.log"
    threads = jobs if jobs is not None else max(1, min(clients, os.cpu_count() or 1))
    with output.open("ab") as log:
        process = subprocess.Popen(
            [str(binary), "-h", str(server.workdir), "-p", str(PORT), "-U", "postgres",
             "-c", str(clients), "-j", str(threads), "-T", "86400", "-n", "postgres"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=_environment(server.workdir),
        )  # fmt: skip
    try:
        wait_until(
            lambda: len(client_backends(server)) >= clients,
            timeout,
            "pgbench clients",
            process,
            output,
            cgroup=server.cgroup,
        )
        yield Load(process=process, output=output)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while client_backends(server) and time.monotonic() < deadline:
            time.sleep(0.02)
