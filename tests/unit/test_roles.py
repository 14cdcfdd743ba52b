"""Roles (issue 13): the classifier on hand-built process trees, one rule at a time.

Titles are the ones the servers really write (PostgreSQL 15 and 10, php-fpm 8.2, apache2
2.4, nginx, uWSGI with and without auto-procname, gunicorn with and without setproctitle,
celery, puma, unicorn); the signal masks of apache2's children are those read from a
Debian apache2 with mod_cgid. The readers are checked on a constructed /proc tree; the
real servers are in tests/live/test_roles_live.py, a captured host in
tests/hosts/test_roles_host.py. Hypothesis checks what must hold for any tree.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_procfs import stat_line

from capacity.errors import ParseError
from capacity.measure.procparse import parse_mapped_mpm, parse_signal_masks
from capacity.measure.roles import apache_masters, classify, postgres_role, shape
from capacity.measure.workload import Selector, classify_selection, role_facts, select_processes
from capacity.roles_records import Classification, Group, ProcessFacts

# apache2 2.4 on Debian 12, read from /proc/PID/status: (SigIgn, SigCgt).
HTTPD_MASTER = (0x1001000, 0x80046EB)
PREFORK_CHILD = (0x1001002, 0x80046E9)
EVENT_CHILD = (0x1001000, 0x1080046EB)
CGID_DAEMON = (0x10000, 0x1)  # SIGCHLD ignored, SIGHUP caught


def proc(
    pid: int,
    ppid: int,
    title: str | tuple[str, ...],
    *,
    comm: str | None = None,
    exe: str | None = None,
    threads: int = 1,
    signals: tuple[int, int] | None = None,
    start: int | None = None,
) -> ProcessFacts:
    """A process as /proc shows it: a str title is a rewritten argv (one string), a tuple is
    argv as exec'd."""
    argv = (title,) if isinstance(title, str) else title
    name = comm if comm is not None else argv[0].split()[0].rsplit("/", 1)[-1].rstrip(":")[:15]
    return ProcessFacts(
        pid=pid,
        ppid=ppid,
        comm=name,
        cmdline=argv,
        exe=exe,
        threads=threads,
        start_ticks=start if start is not None else pid,
        signals=signals,
    )


def only(classification: Classification) -> Group:
    assert len(classification.groups) == 1, classification.groups
    return classification.groups[0]


def every_pid(classification: Classification) -> list[int]:
    pids = [pid for group in classification.groups for pid in group.pids]
    return pids + [pid for shared in classification.shared for pid in shared.pids]


# --------------------------------------------------------------------------- PostgreSQL


POSTMASTER = ("/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main")
PG15_BACKGROUND = (
    "postgres: checkpointer ",
    "postgres: background writer ",
    "postgres: walwriter ",
    "postgres: autovacuum launcher ",
    "postgres: logical replication launcher ",
)


def postgres_tree(master: int, backends: int, prefix: str = "") -> list[ProcessFacts]:
    tree = [proc(master, 1, POSTMASTER, comm="postgres")]
    for i, title in enumerate(PG15_BACKGROUND):
        tree.append(
            proc(master + 1 + i, master, title.replace("postgres: ", f"postgres: {prefix}"))
        )
    for i in range(backends):
        host = "[local]" if i % 2 else f"127.0.0.1({40000 + i})"
        state = ("idle", "UPDATE waiting", "idle in transaction")[i % 3]
        title = f"postgres: {prefix}bench pgbench {host} {state}"
        tree.append(proc(master + 10 + i, master, title, comm="postgres"))
    return tree


def test_postgresql_backends_are_the_workers_and_background_processes_fixed_cost() -> None:
    group = only(classify(postgres_tree(100, 6)))
    assert group.rule == "postgresql"
    assert group.server == "postgresql"
    assert group.instance == 100
    assert group.pool is None
    assert group.worker_role == "client backend"
    assert group.workers == tuple(range(110, 116))
    assert group.counts == {
        "postmaster": 1,
        "client backend": 6,
        "checkpointer": 1,
        "background writer": 1,
        "walwriter": 1,
        "autovacuum launcher": 1,
        "logical replication launcher": 1,
    }
    assert group.fixed == (100, 101, 102, 103, 104, 105)


def test_postgresql_debian_cluster_name_prefix() -> None:
    group = only(classify(postgres_tree(200, 3, prefix="15/main: ")))
    assert group.roles["checkpointer"] == (201,)
    assert group.roles["logical replication launcher"] == (205,)
    assert group.workers == (210, 211, 212)


@pytest.mark.parametrize(
    ("title", "role"),
    [
        ("postgres: checkpointer ", "checkpointer"),
        ("postgres: 15/main: background writer", "background writer"),
        ("postgres: walwriter", "walwriter"),
        ("postgres: autovacuum launcher", "autovacuum launcher"),
        ("postgres: autovacuum worker pgbench", "autovacuum worker"),
        ("postgres: logical replication launcher", "logical replication launcher"),
        (
            "postgres: logical replication worker for subscription 16394",
            "logical replication worker",
        ),
        (
            "postgres: logical replication apply worker for subscription 16394",
            "logical replication worker",
        ),
        ("postgres: archiver last was 000000010000000000000002", "archiver"),
        ("postgres: walsender replicator 10.0.0.2(51234) streaming 0/3000148", "walsender"),
        ("postgres: 15/main: walsender replicator [local] streaming 0/3000148", "walsender"),
        ("postgres: walreceiver streaming 0/3000148", "walreceiver"),
        ("postgres: stats collector ", "stats collector"),
        ("postgres: parallel worker for PID 4242", "parallel worker"),
        ("postgres: startup recovering 000000010000000000000003", "startup"),
        ("postgres: logger ", "logger"),
        # PostgreSQL 10 and older: " process" in every title, bgworkers named so.
        ("postgres: checkpointer process   ", "checkpointer"),
        ("postgres: writer process   ", "background writer"),
        ("postgres: wal writer process   ", "walwriter"),
        ("postgres: stats collector process   ", "stats collector"),
        ("postgres: bgworker: logical replication launcher   ", "logical replication launcher"),
        ("postgres: wal sender process replicator 10.0.0.2(5432) streaming", "walsender"),
        # Client backends: USER DB HOST ACTIVITY, whatever the names.
        ("postgres: app shop [local] idle", "client backend"),
        ("postgres: app shop 10.1.2.3(33412) SELECT", "client backend"),
        ("postgres: checkpointer shop [local] idle", "client backend"),
        ("postgres: main: app shop ::1(5999) idle in transaction", "client backend"),
        # An extension's background worker: fixed cost, never a connection.
        ("postgres: TimescaleDB Background Worker Launcher", "background worker"),
        ("postgres: 15/main: pg_cron launcher", "background worker"),
        ("/usr/lib/postgresql/15/bin/postgres -D /data", None),
    ],
)
def test_postgres_role_by_title(title: str, role: str | None) -> None:
    assert postgres_role(title) == role


def test_two_postmasters_are_two_groups() -> None:
    result = classify([*postgres_tree(100, 2), *postgres_tree(300, 4, prefix="16/other: ")])
    assert [(g.instance, len(g.workers)) for g in result.groups] == [(100, 2), (300, 4)]
    assert result.rule == "postgresql"
    assert set(result.groups[0].pids).isdisjoint(result.groups[1].pids)


def test_postgresql_background_roles_of_a_busy_primary() -> None:
    tree = postgres_tree(100, 2)
    tree += [
        proc(150, 100, "postgres: autovacuum worker pgbench"),
        proc(151, 100, "postgres: parallel worker for PID 110"),
        proc(152, 100, "postgres: archiver last was 000000010000000000000002"),
        proc(153, 152, ("sh", "-c", "cp pg_wal/0001 /archive/0001")),
        proc(154, 100, "postgres: walsender replicator 10.0.0.2(51234) streaming 0/3000148"),
    ]
    group = only(classify(tree))
    assert group.workers == (110, 111)
    assert group.roles["autovacuum worker"] == (150,)
    assert group.roles["parallel worker"] == (151,)
    assert group.roles["archiver"] == (152, 153)  # its archive_command is its own cost
    assert group.roles["walsender"] == (154,)


def test_backends_whose_postmaster_is_not_selected_are_one_instance_under_it() -> None:
    tree = [p for p in postgres_tree(100, 3) if p.pid != 100]
    group = only(classify(tree))
    assert group.instance == 100
    assert "postmaster" not in group.roles
    assert group.workers == (110, 111, 112)


# --------------------------------------------------------------------------- php-fpm


FPM_MASTER = "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"


def fpm_tree(master: int, pools: dict[str, int]) -> list[ProcessFacts]:
    tree = [proc(master, 1, FPM_MASTER, comm="php-fpm8.2")]
    pid = master
    for name, count in pools.items():
        for _ in range(count):
            pid += 1
            tree.append(proc(pid, master, f"php-fpm: pool {name}", comm="php-fpm8.2"))
    return tree


def test_php_fpm_one_pool_holds_its_master() -> None:
    group = only(classify(fpm_tree(10, {"www": 4})))
    assert group.rule == "php-fpm"
    assert group.pool == "www"
    assert group.worker_role == "pool www child"
    assert group.counts == {"master": 1, "pool www child": 4}
    assert group.fixed == (10,)


def test_php_fpm_a_group_per_pool_and_the_master_shared() -> None:
    result = classify(fpm_tree(10, {"site1": 3, "site2": 5}))
    assert [(g.instance, g.pool, len(g.workers)) for g in result.groups] == [
        (10, "site1", 3),
        (10, "site2", 5),
    ]
    assert [g.worker_role for g in result.groups] == ["pool site1 child", "pool site2 child"]
    assert all(g.fixed == () for g in result.groups)
    (shared,) = result.shared
    assert (shared.instance, shared.server, shared.roles) == (10, "php-fpm", {"master": (10,)})
    assert result.fixed_of(result.groups[1]) == (10,)
    assert result.shared_of(result.groups[0]) == (10,)
    assert result.rule == "php-fpm"


def test_php_fpm_child_still_bearing_the_masters_title_is_no_worker() -> None:
    tree = [*fpm_tree(10, {"www": 2}), proc(13, 10, FPM_MASTER, comm="php-fpm8.2")]
    group = only(classify(tree))
    assert group.workers == (11, 12)
    assert group.roles["other"] == (13,)


def test_two_php_fpm_masters_are_never_merged() -> None:
    result = classify([*fpm_tree(10, {"www": 2}), *fpm_tree(50, {"www": 3})])
    assert [(g.instance, g.pool, len(g.workers)) for g in result.groups] == [
        (10, "www", 2),
        (50, "www", 3),
    ]


# --------------------------------------------------------------------------- apache2


APACHE = ("/usr/sbin/apache2", "-k", "start")
APACHE_EXE = "/usr/sbin/apache2"


def apache(pid: int, ppid: int, signals: tuple[int, int], threads: int = 1) -> ProcessFacts:
    return proc(pid, ppid, APACHE, comm="apache2", exe=APACHE_EXE, signals=signals, threads=threads)


def test_apache2_prefork_with_mod_cgid_and_piped_loggers() -> None:
    tree = [
        apache(10, 1, HTTPD_MASTER),
        # CustomLog "|/usr/bin/rotatelogs ..." and "|$/usr/bin/cronolog ..." (through sh).
        proc(11, 10, ("/usr/bin/rotatelogs", "/var/log/apache2/access.%Y", "86400"),
             exe="/usr/bin/rotatelogs", signals=(0, 0)),
        proc(12, 10, ("/bin/sh", "-c", "/usr/bin/cronolog /var/log/x"), exe="/usr/bin/dash"),
        proc(13, 12, ("/usr/bin/cronolog", "/var/log/x"), exe="/usr/bin/cronolog"),
        apache(14, 10, CGID_DAEMON),  # forked in post_config, before the workers
        proc(15, 14, ("/usr/lib/cgi-bin/report.cgi",), exe="/usr/lib/cgi-bin/report.cgi"),
        *(apache(pid, 10, PREFORK_CHILD) for pid in range(16, 21)),
    ]  # fmt: skip
    group = only(classify(tree, {10: "prefork"}))
    assert group.rule == "apache2"
    assert group.server == "apache2"
    assert group.worker_role == "child"
    assert group.workers == (16, 17, 18, 19, 20)
    assert group.roles["parent"] == (10,)
    assert group.roles["piped logger"] == (11, 12, 13)
    assert group.roles["cgid daemon"] == (14, 15)
    assert (group.mpm, group.threads_per_child, group.threads) == ("prefork", 1, 1)


def test_apache2_event_threads_per_child_from_the_threads_of_a_child() -> None:
    tree = [
        apache(10, 1, HTTPD_MASTER),
        apache(11, 10, CGID_DAEMON),
        apache(12, 10, EVENT_CHILD, threads=27),
        apache(13, 10, EVENT_CHILD, threads=27),
    ]
    group = only(classify(tree, {10: "event"}))
    assert group.workers == (12, 13)
    assert group.roles["cgid daemon"] == (11,)
    # Debian's default: ThreadsPerChild 25, plus the main and listener threads.
    assert (group.mpm, group.threads_per_child, group.threads) == ("event", 25, 27)


def test_apache2_one_worker_beside_the_cgid_daemon_is_still_the_worker() -> None:
    tree = [apache(10, 1, HTTPD_MASTER), apache(11, 10, CGID_DAEMON), apache(12, 10, PREFORK_CHILD)]
    group = only(classify(tree))
    assert group.workers == (12,)
    assert group.roles["cgid daemon"] == (11,)


def test_apache2_mpm_without_a_module_mapped() -> None:
    prefork = [apache(10, 1, HTTPD_MASTER), *(apache(p, 10, PREFORK_CHILD) for p in (11, 12))]
    assert only(classify(prefork)).mpm == "prefork"  # one thread per child
    threaded = [apache(10, 1, HTTPD_MASTER), apache(11, 10, EVENT_CHILD, threads=9)]
    group = only(classify(threaded))
    assert (group.mpm, group.threads_per_child, group.threads) == (None, None, 9)


def test_apache2_without_signal_masks_every_httpd_child_is_a_worker() -> None:
    tree = [
        proc(10, 1, APACHE, comm="apache2"),
        *(proc(p, 10, APACHE, comm="apache2") for p in (11, 12, 13)),
    ]
    assert only(classify(tree)).workers == (11, 12, 13)


def test_two_apache2_servers_are_two_groups() -> None:
    other = ("/usr/sbin/apache2", "-f", "/srv/b/apache2.conf", "-DFOREGROUND")
    tree = [
        apache(10, 1, HTTPD_MASTER),
        *(apache(p, 10, PREFORK_CHILD) for p in (11, 12, 13)),
        proc(50, 1, other, comm="apache2", exe=APACHE_EXE, signals=HTTPD_MASTER),
        *(proc(p, 50, other, comm="apache2", exe=APACHE_EXE, signals=EVENT_CHILD, threads=12)
          for p in (51, 52)),
    ]  # fmt: skip
    assert apache_masters(tree) == (10, 50)
    result = classify(tree, {10: "prefork", 50: "event"})
    assert [(g.instance, g.mpm, g.threads_per_child, len(g.workers)) for g in result.groups] == [
        (10, "prefork", 1, 3),
        (50, "event", 10, 2),
    ]


def test_httpd_is_apache_by_its_red_hat_name() -> None:
    httpd = ("/usr/sbin/httpd", "-DFOREGROUND")
    tree = [proc(10, 1, httpd), *(proc(p, 10, httpd) for p in (11, 12))]
    group = only(classify(tree, {10: "event"}))
    assert (group.rule, group.server, group.workers) == ("apache2", "httpd", (11, 12))


# --------------------------------------------------------------------------- other servers


def test_gunicorn_with_setproctitle() -> None:
    tree = [
        proc(10, 1, "gunicorn: master [app:application]", comm="gunicorn"),
        *(proc(p, 10, "gunicorn: worker [app:application]", comm="gunicorn") for p in (11, 12, 13)),
    ]
    group = only(classify(tree))
    assert (group.rule, group.worker_role) == ("gunicorn", "worker")
    assert group.counts == {"arbiter": 1, "worker": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ("/usr/bin/python3", "/usr/bin/gunicorn", "app:application"),
        ("/usr/bin/python3", "-m", "gunicorn", "--workers", "3", "app:application"),
        ("/srv/venv/bin/gunicorn", "app:application"),
    ],
)
def test_gunicorn_without_titles_by_argv(argv: tuple[str, ...]) -> None:
    tree = [proc(10, 1, argv), *(proc(p, 10, argv) for p in (11, 12, 13))]
    group = only(classify(tree))
    assert group.rule == "gunicorn"
    assert group.roles["arbiter"] == (10,)
    assert group.workers == (11, 12, 13)


def test_uwsgi_with_auto_procname() -> None:
    tree = [
        proc(10, 1, "uWSGI master", comm="uwsgi"),
        *(proc(p, 10, f"uWSGI worker {p - 10}", comm="uwsgi") for p in (11, 12, 13, 14)),
        proc(15, 10, "uWSGI mule 1", comm="uwsgi"),
        proc(16, 10, "uWSGI mule 2", comm="uwsgi"),
        proc(17, 10, "uWSGI spooler", comm="uwsgi"),
        proc(18, 10, "uWSGI http 1", comm="uwsgi"),
    ]
    group = only(classify(tree))
    assert group.rule == "uwsgi"
    assert group.counts == {"master": 1, "worker": 4, "mule": 2, "spooler": 1, "gateway": 1}


def test_uwsgi_without_titles_children_of_the_master_are_workers() -> None:
    argv = ("uwsgi", "--ini", "/etc/uwsgi/app.ini")
    group = only(classify([proc(10, 1, argv), *(proc(p, 10, argv) for p in (11, 12))]))
    assert (group.rule, group.workers) == ("uwsgi", (11, 12))


# uWSGI 2.0.21 (Debian 12) without --auto-procname, read from /proc/PID/status.
UWSGI_WORKER = (0x1000004, 0x8085E83)
UWSGI_MULE = (0x1083A00, 0x4487)
UWSGI_SPOOLER = (0x1083805, 0x4682)
UWSGI_HTTP = (0x1083A01, 0x4486)


@pytest.mark.parametrize("workers", [1, 3])
def test_uwsgi_without_titles_mules_spooler_and_router_are_helpers(workers: int) -> None:
    """Every child runs the master's argv; the workers catch more signals than the rest,
    even when one worker is outnumbered by two mules."""
    argv = ("uwsgi", "--master", "--processes", str(workers), "--mule", "--mule")
    tree = [
        proc(10, 1, argv, signals=(0x1001000, 0x84687)),
        proc(11, 10, argv, signals=UWSGI_SPOOLER),
        *(proc(12 + i, 10, argv, signals=UWSGI_WORKER) for i in range(workers)),
        proc(20, 10, argv, signals=UWSGI_MULE),
        proc(21, 10, argv, signals=UWSGI_MULE),
        proc(22, 10, argv, signals=UWSGI_HTTP),
    ]
    group = only(classify(tree))
    assert (group.rule, group.workers) == ("uwsgi", tuple(range(12, 12 + workers)))
    assert group.counts == {"master": 1, "worker": workers, "helper": 4}


def test_nginx_master_workers_and_cache_processes() -> None:
    tree = [
        proc(10, 1, "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"),
        *(proc(p, 10, "nginx: worker process") for p in (11, 12)),
        proc(13, 10, "nginx: worker process is shutting down"),
        proc(14, 10, "nginx: cache manager process"),
        proc(15, 10, "nginx: cache loader process"),
    ]
    group = only(classify([dataclass_comm(p, "nginx") for p in tree]))
    assert group.rule == "nginx"
    assert group.counts == {"master": 1, "worker": 3, "cache manager": 1, "cache loader": 1}


def dataclass_comm(process: ProcessFacts, comm: str) -> ProcessFacts:
    return ProcessFacts(
        pid=process.pid,
        ppid=process.ppid,
        comm=comm,
        cmdline=process.cmdline,
        start_ticks=process.start_ticks,
    )


def test_celery_prefork_with_and_without_titles() -> None:
    titled = [
        proc(10, 1, "[celeryd: celery@web1:MainProcess] -active- (worker -A proj -c 3)"),
        *(proc(p, 10, f"[celeryd: celery@web1:ForkPoolWorker-{p - 10}]") for p in (11, 12, 13)),
    ]
    group = only(classify(titled))
    assert (group.rule, group.worker_role) == ("celery", "pool worker")
    assert group.counts == {"main": 1, "pool worker": 3}
    argv = ("/srv/venv/bin/python3", "/srv/venv/bin/celery", "-A", "proj", "worker", "-c", "2")
    plain = only(classify([proc(10, 1, argv), proc(11, 10, argv), proc(12, 10, argv)]))
    assert (plain.rule, plain.workers) == ("celery", (11, 12))


def test_puma_cluster_workers() -> None:
    tree = [
        proc(10, 1, "puma 6.4.2 (tcp://0.0.0.0:3000) [app]", comm="ruby"),
        *(proc(p, 10, f"puma: cluster worker {p - 11}: 10 [app]", comm="ruby") for p in (11, 12)),
    ]
    group = only(classify(tree))
    assert (group.rule, group.worker_role, group.workers) == ("puma", "cluster worker", (11, 12))


def test_unicorn_master_and_workers() -> None:
    tree = [
        proc(10, 1, "unicorn master -c config/unicorn.rb -E production -D", comm="ruby"),
        *(proc(p, 10, f"unicorn worker[{p - 11}] -c config/unicorn.rb -E production -D",
               comm="ruby") for p in (11, 12, 13)),
    ]  # fmt: skip
    group = only(classify(tree))
    assert (group.rule, group.counts) == ("unicorn", {"master": 1, "worker": 3})


# --------------------------------------------------------------------------- generic


def test_generic_the_largest_set_of_alike_siblings_are_the_workers() -> None:
    tree = [
        proc(10, 1, ("/opt/app/server", "--config", "/etc/app.conf")),
        *(proc(p, 10, ("/opt/app/server", "--worker", str(p - 10))) for p in range(11, 16)),
        proc(16, 10, ("/opt/app/metrics-exporter", "--port", "9100")),
        proc(17, 10, ("/opt/app/logshipper",)),
    ]
    group = only(classify(tree))
    assert (group.rule, group.server, group.instance) == ("generic", "server", 10)
    assert group.workers == (11, 12, 13, 14, 15)
    assert group.roles["other"] == (16, 17)  # the singletons are fixed cost
    assert group.roles["parent"] == (10,)


def test_generic_a_tie_goes_to_the_siblings_that_run_the_parents_shape() -> None:
    tree = [
        proc(10, 1, ("myd", "-f")),
        proc(11, 10, ("helper", "--cache")),
        proc(12, 10, ("myd", "-f")),
    ]
    assert only(classify(tree)).workers == (12,)


def test_generic_lone_processes_under_one_outside_parent_are_workers_together() -> None:
    # Started by a supervisor that is not selected: each its own root, alike.
    tree = [proc(p, 7, ("/usr/bin/queue-consumer", "--id", str(p))) for p in (20, 21, 22)]
    group = only(classify(tree))
    assert (group.instance, group.workers, group.fixed) == (7, (20, 21, 22), ())


def test_generic_a_single_process_is_a_parent_without_workers() -> None:
    group = only(classify([proc(30, 1, ("/usr/bin/redis-server", "*:6379"))]))
    assert (group.instance, group.workers, group.roles) == (30, (), {"parent": (30,), "worker": ()})


def test_shape_ignores_digits() -> None:
    assert shape(proc(1, 0, ("w", "--id", "3"))) == shape(proc(2, 0, ("w", "--id", "12")))
    assert shape(proc(1, 0, "x:ForkPoolWorker-1")) == shape(proc(2, 0, "x:ForkPoolWorker-22"))
    assert shape(proc(1, 0, ("w", "--id", "3"))) != shape(proc(2, 0, ("w", "--name", "3")))


def test_a_supervisor_tree_holds_each_server_and_the_supervisor_apart() -> None:
    supervisor = proc(5, 1, ("/usr/bin/python3", "/usr/bin/supervisord"))
    tree = [
        supervisor,
        *(dataclass_ppid(p, 5) if p.pid == 100 else p for p in postgres_tree(100, 2)),
        *(dataclass_ppid(p, 5) if p.pid == 200 else p for p in fpm_tree(200, {"www": 2})),
    ]
    result = classify(tree)
    assert [(g.rule, g.instance) for g in result.groups] == [
        ("postgresql", 100),
        ("php-fpm", 200),
        ("generic", 5),
    ]
    assert result.groups[-1].roles == {"parent": (5,), "worker": ()}
    assert result.rule == "mixed"
    assert result.group_of(110) is result.groups[0]
    assert result.group_of(999) is None


def dataclass_ppid(process: ProcessFacts, ppid: int) -> ProcessFacts:
    return ProcessFacts(
        pid=process.pid,
        ppid=ppid,
        comm=process.comm,
        cmdline=process.cmdline,
        exe=process.exe,
        threads=process.threads,
        start_ticks=process.start_ticks,
        signals=process.signals,
    )


def test_a_damaged_tree_with_a_cycle_still_classifies_every_process() -> None:
    tree = [proc(10, 11, ("a",)), proc(11, 10, ("a",)), proc(12, 12, ("b",))]
    assert sorted(every_pid(classify(tree))) == [10, 11, 12]


def test_nothing_selected_is_no_group() -> None:
    result = classify([])
    assert (result.rule, result.groups, result.shared) == ("generic", (), ())


# --------------------------------------------------------------------------- properties


TITLES = [
    *PG15_BACKGROUND,
    "postgres: 15/main: app db [local] idle",
    "postgres: app db 127.0.0.1(5000) SELECT",
    FPM_MASTER,
    "php-fpm: pool a",
    "php-fpm: pool b",
    "nginx: master process nginx",
    "nginx: worker process",
    "uWSGI master",
    "uWSGI worker 1",
    "gunicorn: master [x]",
    "gunicorn: worker [x]",
    "[celeryd: c@h:ForkPoolWorker-1]",
    "puma 6 (tcp://x) [a]",
    "puma: cluster worker 0: 1 [a]",
    "unicorn master",
    "unicorn worker[0]",
]
ARGVS = [
    POSTMASTER,
    APACHE,
    ("/usr/sbin/httpd",),
    ("/usr/bin/python3", "-m", "gunicorn", "app"),
    ("uwsgi", "--ini", "x"),
    ("celery", "-A", "p", "worker"),
    ("/opt/app/server", "--worker", "1"),
    ("/opt/app/server", "--worker", "2"),
    ("helper",),
]


@st.composite
def process_trees(draw: st.DrawFn) -> list[ProcessFacts]:
    """Any forest (and, now and then, a cycle or a parent outside): known titles and argvs,
    apache2 children with any of the signal masks, any thread counts."""
    count = draw(st.integers(min_value=0, max_value=30))
    pids = draw(st.lists(st.integers(2, 400), min_size=count, max_size=count, unique=True))
    processes = []
    for index, pid in enumerate(pids):
        ppid = draw(st.sampled_from([1, 7, *pids[: index + 1], *pids]))
        title: str | tuple[str, ...] = draw(st.sampled_from([*TITLES, *ARGVS]))
        signals = draw(
            st.sampled_from([None, HTTPD_MASTER, PREFORK_CHILD, EVENT_CHILD, CGID_DAEMON])
        )
        processes.append(
            proc(
                pid,
                ppid,
                title,
                threads=draw(st.integers(1, 40)),
                signals=signals,
                start=draw(st.integers(0, 5)),
            )
        )
    return processes


PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(process_trees(), st.sampled_from([{}, {"all": "event"}, {"all": "prefork"}]))
def test_every_pid_lands_in_exactly_one_role_of_exactly_one_group(
    tree: list[ProcessFacts], mpm: dict[str, str]
) -> None:
    mpms = dict.fromkeys(apache_masters(tree), mpm["all"]) if mpm else {}
    result = classify(tree, mpms)
    placed = every_pid(result)
    assert sorted(placed) == sorted(p.pid for p in tree)  # each once, none lost
    for group in result.groups:
        assert group.worker_role in group.roles
        assert set(group.workers).isdisjoint(group.fixed)
        assert all(pids for role, pids in group.roles.items() if role != group.worker_role)
        assert group.rule == "generic" or group.server in (group.rule, "httpd")


@PROPERTY
@given(process_trees(), st.randoms(use_true_random=False))
def test_the_answer_does_not_depend_on_the_order_of_the_processes(
    tree: list[ProcessFacts], shuffler: random.Random
) -> None:
    shuffled = list(tree)
    shuffler.shuffle(shuffled)
    assert classify(shuffled) == classify(tree)


@PROPERTY
@given(st.lists(st.integers(1, 12), min_size=1, max_size=4), st.integers(0, 8))
def test_independent_postmasters_are_never_merged(backends: list[int], extra: int) -> None:
    tree = [p for i, n in enumerate(backends) for p in postgres_tree(1000 * (i + 1), n)]
    tree += fpm_tree(9000, {"www": extra}) if extra else []
    result = classify(tree)
    postgres = [g for g in result.groups if g.rule == "postgresql"]
    assert [len(g.workers) for g in postgres] == backends
    assert [g.instance for g in postgres] == [1000 * (i + 1) for i in range(len(backends))]


# --------------------------------------------------------------------------- readers


STATUS = (
    b"Name:\tapache2\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\nPPid:\t%d\nThreads:\t%d\n"
    b"SigQ:\t0/15000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
    b"SigBlk:\t0000000000000000\nSigIgn:\t%016x\nSigCgt:\t%016x\nCapInh:\t0000000000000000\n"
)


def test_parse_signal_masks() -> None:
    data = STATUS % (5, 5, 1, 1, *CGID_DAEMON)
    assert parse_signal_masks(data) == CGID_DAEMON
    with pytest.raises(ParseError, match="SigCgt"):
        parse_signal_masks(data.replace(b"SigCgt", b"SigXxx"))
    with pytest.raises(ParseError, match="bad value for SigIgn"):
        parse_signal_masks(data.replace(b"SigIgn:\t0000", b"SigIgn:\t-x00"))


def test_parse_mapped_mpm() -> None:
    maps = (
        b"55d0c0a00000-55d0c0a2c000 r--p 00000000 fe:00 1450 /usr/sbin/apache2\n"
        b"7eff0fc5e000-7eff0fc62000 r--p 00000000 fe:00 1451 "
        b"/usr/lib/apache2/modules/mod_mpm_event.so\n"
    )
    assert parse_mapped_mpm(maps) == "event"
    assert parse_mapped_mpm(maps.replace(b"event.so", b"prefork.so (deleted)")) == "prefork"
    assert parse_mapped_mpm(b"7f-8f r-xp 0 fe:00 1 /usr/lib/httpd/modules/mod_ssl.so\n") is None


def write_process(root: Path, process: ProcessFacts, maps: str = "") -> None:
    base = root / "proc" / str(process.pid)
    base.mkdir(parents=True)
    base.joinpath("stat").write_bytes(
        stat_line(process.pid, process.comm, ppid=process.ppid, threads=process.threads,
                  start=process.start_ticks)
    )  # fmt: skip
    signals = process.signals or (0, 0)
    status = STATUS % (process.pid, process.pid, process.ppid, process.threads, *signals)
    base.joinpath("status").write_bytes(status)
    base.joinpath("cmdline").write_bytes(b"\0".join(a.encode() for a in process.cmdline) + b"\0")
    if process.exe:
        base.joinpath("exe").write_text(process.exe)
    base.joinpath("maps").write_text(maps)


def test_role_facts_and_classify_selection_read_a_captured_tree(tmp_path: Path) -> None:
    mpm_line = "7eff0fc5e000-7eff0fc62000 r--p 00000000 fe:00 1 /x/mod_mpm_event.so\n"
    tree = [
        apache(10, 1, HTTPD_MASTER),
        apache(11, 10, CGID_DAEMON),
        apache(12, 10, EVENT_CHILD, threads=12),
        apache(13, 10, EVENT_CHILD, threads=12),
    ]
    for process in tree:
        write_process(tmp_path, process, mpm_line if process.pid == 10 else "")
    facts, mpms = role_facts([10, 11, 12, 13, 99], tmp_path)  # 99 has vanished
    assert [f.pid for f in facts] == [10, 11, 12, 13]
    assert facts[1].signals == CGID_DAEMON
    assert facts[2].threads == 12
    assert facts[0].exe == APACHE_EXE
    assert facts[0].cmdline == APACHE
    assert mpms == {10: "event"}
    group = only(classify_selection(select_processes(Selector(cmd="apache2"), tmp_path), tmp_path))
    assert (group.mpm, group.threads_per_child, group.workers) == ("event", 10, (12, 13))
    assert group.roles["cgid daemon"] == (11,)


# --------------------------------------------------------------------------- test servers


def test_apache2_config_for_the_event_mpm_keeps_exactly_its_children(tmp_path: Path) -> None:
    from capacity.testing.servers import apache2_config

    conf = apache2_config(tmp_path, 8080, 2, mpm="event", threads_per_child=10)
    assert "mod_mpm_event.so" in conf
    assert "mod_mpm_prefork.so" not in conf
    for line in ("StartServers 2", "ServerLimit 2", "ThreadsPerChild 10", "MaxRequestWorkers 20"):
        assert f"\n{line}\n" in conf
    assert "MinSpareServers" not in conf
    prefork = apache2_config(tmp_path, 8080, 3)
    assert "mod_mpm_prefork.so" in prefork
    assert "\nMaxSpareServers 3\n" in prefork
    assert "ThreadsPerChild" not in prefork
    with pytest.raises(ValueError, match="unknown MPM"):
        apache2_config(tmp_path, 8080, 2, mpm="winnt")
