"""Which role each process of a selection plays: a pure classifier over the process tree.

Input: one ``ProcessFacts`` per selected process (pid, ppid, comm, argv, exe, threads, the
signal masks) and, for apache2, the MPM each parent has mapped; ``measure/workload`` reads
them (``role_facts``). Output: a ``Classification`` of independent groups, each with its
instance (the master's pid), its roles (role name -> pids), which role holds the workers;
every other role is fixed cost. Nothing here reads the host.

How (docs/how-it-measures.md, "Roles"): the selection's processes form a forest. Walking it
from the roots, the first process a server rule recognises as a master takes its whole
subtree, so two postmasters or two apache2 servers are two instances, never merged. A
process whose title says it is a server's child while its master is not selected (a
``postgres: ...`` backend picked by pid) forms an instance with its siblings under their
common parent. Whatever no server rule took goes to the generic rule: under each root, the
largest set of siblings with the same command-line shape are the workers, and the rest
(singletons) fixed cost; lone roots with the same parent and shape are workers together.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from capacity.roles_records import Classification, Group, ProcessFacts, Rule, SharedCost

SIGCHLD_MASK = 1 << (17 - 1)  # SIGCHLD is 17 on x86, arm and most others; bit N-1 of SigIgn


# --------------------------------------------------------------------------- the tree


class _Tree:
    """The selection as a forest: children in (start, pid) order, cycles cut at their
    smallest pid (a damaged captured tree), a process that is its own parent a root."""

    def __init__(self, processes: Iterable[ProcessFacts]) -> None:
        self.by_pid: dict[int, ProcessFacts] = {}
        for process in processes:
            self.by_pid.setdefault(process.pid, process)
        parent: dict[int, int | None] = {
            pid: p.ppid if p.ppid in self.by_pid and p.ppid != pid else None
            for pid, p in self.by_pid.items()
        }
        done: set[int] = set()
        for pid in sorted(self.by_pid):
            path: list[int] = []
            on_path: set[int] = set()
            node: int | None = pid
            while node is not None and node not in done:
                if node in on_path:
                    cycle = path[path.index(node) :]
                    parent[min(cycle)] = None
                    break
                path.append(node)
                on_path.add(node)
                node = parent[node]
            done.update(path)
        self.parent = parent
        self.children: dict[int, list[int]] = {pid: [] for pid in self.by_pid}
        for pid, up in parent.items():
            if up is not None:
                self.children[up].append(pid)
        for kids in self.children.values():
            kids.sort(key=self.order)
        self.roots = sorted((pid for pid, up in parent.items() if up is None), key=self.order)

    def order(self, pid: int) -> tuple[int, int]:
        return (self.by_pid[pid].start_ticks, pid)

    def kids(self, pid: int) -> list[ProcessFacts]:
        return [self.by_pid[c] for c in self.children[pid]]

    def below(self, pid: int) -> list[int]:
        """Every descendant of ``pid``, depth first in (start, pid) order."""
        found: list[int] = []
        stack = list(reversed(self.children[pid]))
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(reversed(self.children[node]))
        return found


# --------------------------------------------------------------------------- helpers


_DIGITS = re.compile(r"\d+")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def program(process: ProcessFacts) -> str:
    """The program's name: argv[0]'s basename (its first word when argv was rewritten into
    one title), else the comm name."""
    words = process.title.split()
    if process.cmdline and words:
        return _basename(words[0]).rstrip(":") or process.comm
    return process.comm


def shape(process: ProcessFacts) -> tuple[str, ...]:
    """A command line's shape: program name and arguments with every run of digits as ``#``
    (``worker --id 3`` and ``worker --id 12`` are alike; ``ForkPoolWorker-7`` too)."""
    words = process.title.split()
    rest = words[1:] if process.cmdline else []
    return (_DIGITS.sub("#", program(process)), *(_DIGITS.sub("#", w) for w in rest))


def _same_command(a: ProcessFacts, b: ProcessFacts) -> bool:
    """Two processes run the same command: same argv, same executable where both are known."""
    return a.cmdline == b.cmdline and (a.exe is None or b.exe is None or a.exe == b.exe)


def _exe_name(process: ProcessFacts) -> str:
    return _basename(process.exe.removesuffix(" (deleted)")) if process.exe else ""


@dataclasses.dataclass
class _Found:
    """One instance's classification while it is built (mutable, then frozen into Groups)."""

    rule: Rule
    instance: int
    server: str
    groups: list[Group]
    shared: dict[str, list[int]] = dataclasses.field(default_factory=dict)


def _roles(
    assignments: Iterable[tuple[str, int]], first: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """role -> sorted pids: the roles in ``first`` first (present even when empty), then the
    others in the order they first appear."""
    gathered: dict[str, list[int]] = {role: [] for role in first}
    for role, pid in assignments:
        gathered.setdefault(role, []).append(pid)
    return {role: tuple(sorted(pids)) for role, pids in gathered.items() if pids or role in first}


def _assign_below(
    tree: _Tree, top: ProcessFacts, role: str, worker_role: str
) -> list[tuple[str, int]]:
    """``top`` in ``role`` and its descendants: a helper's own children share its role (a
    piped logger's shell and logger, an archiver's archive_command); a worker's children
    are not workers (a CGI script, a subprocess it started) and count as ``other``."""
    below = "other" if role == worker_role else role
    return [(role, top.pid), *((below, pid) for pid in tree.below(top.pid))]


# --------------------------------------------------------------------------- PostgreSQL


# Background processes by title (after "postgres: " and an optional "CLUSTER: "), from
# GetBackendTypeDesc() and the bgworker types in PostgreSQL's source; the " process" forms
# are PostgreSQL 10's and older.
_PG_BACKGROUND: tuple[tuple[str, str], ...] = (
    ("checkpointer", "checkpointer"),
    ("background writer", "background writer"),
    ("writer process", "background writer"),
    ("walwriter", "walwriter"),
    ("wal writer process", "walwriter"),
    ("autovacuum launcher", "autovacuum launcher"),
    ("autovacuum worker", "autovacuum worker"),
    ("logical replication launcher", "logical replication launcher"),
    ("bgworker: logical replication launcher", "logical replication launcher"),
    ("logical replication worker", "logical replication worker"),
    ("logical replication apply worker", "logical replication worker"),
    ("logical replication tablesync worker", "logical replication worker"),
    ("logical replication parallel apply worker", "logical replication worker"),
    ("archiver", "archiver"),
    ("walreceiver", "walreceiver"),
    ("wal receiver process", "walreceiver"),
    ("stats collector", "stats collector"),
    ("parallel worker", "parallel worker"),
    ("startup", "startup"),
    ("logger", "logger"),
    ("walsummarizer", "walsummarizer"),
    ("slotsync worker", "slotsync worker"),
    ("io worker", "io worker"),
)
# A client backend's title: USER DATABASE HOST ACTIVITY, HOST "[local]" or "ADDR(PORT)".
_PG_HOST = re.compile(r"\[local\]|\S+\(\d+\)")
PG_PREFIX = "postgres: "


def _pg_named(rest: str) -> str | None:
    if rest.startswith(("walsender ", "wal sender process ")) or rest == "walsender":
        return "walsender"
    words = rest.split()
    if len(words) >= 3 and _PG_HOST.fullmatch(words[2]):
        return "client backend"
    for title, role in _PG_BACKGROUND:
        if rest == title or rest.startswith(title + " "):
            return role
    return None


def postgres_role(title: str) -> str | None:
    """The role a PostgreSQL child's title names (``postgres: 15/main: checkpointer`` ->
    ``checkpointer``); ``background worker`` for an extension's, None if not a child's."""
    if not title.startswith(PG_PREFIX):
        return None
    rest = title[len(PG_PREFIX) :].strip()
    role = _pg_named(rest)
    if role is None and ": " in rest:  # cluster_name's prefix: "15/main: checkpointer"
        role = _pg_named(rest.split(": ", 1)[1].strip())
    return role or "background worker"


def _pg_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    if process.title.startswith(PG_PREFIX):
        return False
    named = program(process) in ("postgres", "postmaster") or process.comm in (
        "postgres",
        "postmaster",
    )
    return named or any(kid.title.startswith(PG_PREFIX) for kid in kids)


def _pg_classify(tree: _Tree, master: ProcessFacts | None, tops: list[ProcessFacts]) -> _Found:
    worker = "client backend"
    assigned: list[tuple[str, int]] = [("postmaster", master.pid)] if master else []
    for top in tops:
        assigned += _assign_below(tree, top, postgres_role(top.title) or "other", worker)
    roles = _roles(assigned, ("postmaster", worker) if master else (worker,))
    instance = master.pid if master else tops[0].ppid
    group = Group(
        rule="postgresql",
        instance=instance,
        server="postgresql",
        pool=None,
        worker_role=worker,
        roles=roles,
        threads=_most_threads(tree, roles[worker]),
    )
    return _Found("postgresql", instance, "postgresql", [group])


# --------------------------------------------------------------------------- php-fpm


FPM_MASTER = "php-fpm: master process"
FPM_POOL = "php-fpm: pool "


def _fpm_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    if process.title.startswith(FPM_MASTER):
        return True
    return process.comm.startswith("php-fpm") and any(
        kid.title.startswith(FPM_POOL) for kid in kids
    )


def _fpm_classify(tree: _Tree, master: ProcessFacts | None, tops: list[ProcessFacts]) -> _Found:
    """One group per pool (``php-fpm: pool NAME``); the master is the pools' shared cost
    when there are several, the one pool's fixed cost otherwise."""
    pools: dict[str, list[tuple[str, int]]] = {}
    rest: list[tuple[str, int]] = [("master", master.pid)] if master else []
    for top in tops:
        if top.title.startswith(FPM_POOL):
            name = top.title[len(FPM_POOL) :].strip()
            role = f"pool {name} child"
            pools.setdefault(name, []).extend(_assign_below(tree, top, role, role))
        else:  # a child forked a moment ago still bears the master's title
            rest += _assign_below(tree, top, "other", "")
    instance = master.pid if master else tops[0].ppid
    found = _Found("php-fpm", instance, "php-fpm", [])
    if len(pools) > 1:
        for role, pid in rest:
            found.shared.setdefault(role, []).append(pid)
    for name, assigned in pools.items():
        worker = f"pool {name} child"
        own = assigned if len(pools) > 1 else [*rest, *assigned]
        first = ("master", worker) if len(pools) == 1 and master else (worker,)
        roles = _roles(own, first)
        found.groups.append(
            Group(
                rule="php-fpm",
                instance=instance,
                server="php-fpm",
                pool=name,
                worker_role=worker,
                roles=roles,
                threads=_most_threads(tree, roles[worker]),
            )
        )
    if not pools:
        roles = _roles(rest, ("master", "pool child") if master else ("pool child",))
        found.groups.append(
            Group(
                rule="php-fpm",
                instance=instance,
                server="php-fpm",
                pool=None,
                worker_role="pool child",
                roles=roles,
            )
        )
    return found


# --------------------------------------------------------------------------- apache2


def is_httpd(process: ProcessFacts) -> bool:
    """apache2 (Debian) or httpd (Red Hat, the Apache build) by comm, argv[0] or executable."""
    names = (process.comm, program(process), _exe_name(process))
    return any(name in ("apache2", "httpd") or name.startswith("httpd.") for name in names)


def apache_masters(processes: Iterable[ProcessFacts]) -> tuple[int, ...]:
    """The apache2/httpd processes whose parent is not one: the pids whose maps say the MPM
    (``procfs.read_mapped_mpm``), for ``classify``'s ``mpms``."""
    listed = list(processes)
    httpd = {p.pid for p in listed if is_httpd(p)}
    return tuple(sorted(p.pid for p in listed if p.pid in httpd and p.ppid not in httpd))


def _httpd_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    return is_httpd(process)


def _apache_workers(children: list[ProcessFacts]) -> list[ProcessFacts]:
    """The children that serve requests: the largest set with the same signal dispositions
    (mod_cgid's daemon ignores SIGCHLD and catches SIGHUP only; a worker catches more).
    A tie goes to the set that does not ignore SIGCHLD, then to the later-forked one (the
    cgid daemon is forked before the MPM forks its children)."""
    buckets: dict[tuple[int, int] | None, list[ProcessFacts]] = {}
    for child in children:
        buckets.setdefault(child.signals, []).append(child)

    def key(item: tuple[tuple[int, int] | None, list[ProcessFacts]]) -> tuple[int, bool, int]:
        signals, members = item
        ignores_chld = signals is not None and bool(signals[0] & SIGCHLD_MASK)
        return (len(members), not ignores_chld, min(m.start_ticks for m in members))

    return max(buckets.items(), key=key)[1] if buckets else []


def _apache_classify(tree: _Tree, master: ProcessFacts, mpms: Mapping[int, str]) -> _Found:
    """Children that run the master's command are httpd children: the workers, and helpers
    such as mod_cgid's daemon; children that run another command are piped loggers."""
    worker = "child"
    kids = tree.kids(master.pid)
    httpd_kids = [kid for kid in kids if _same_command(kid, master)]
    httpd = {kid.pid for kid in httpd_kids}
    workers = {w.pid for w in _apache_workers(httpd_kids)}
    assigned: list[tuple[str, int]] = [("parent", master.pid)]
    for kid in kids:
        if kid.pid in workers:
            role = worker
        elif kid.pid in httpd:
            ignores = kid.signals is not None and bool(kid.signals[0] & SIGCHLD_MASK)
            role = "cgid daemon" if ignores else "helper"
        else:
            role = "piped logger"
        assigned += _assign_below(tree, kid, role, worker)
    roles = _roles(assigned, ("parent", worker))
    threads = _most_threads(tree, roles[worker])
    mpm = mpms.get(master.pid)
    if mpm is None and roles[worker] and threads == 1:
        mpm = "prefork"  # no MPM module mapped (built in) and one thread per child
    per_child: int | None = None
    if mpm == "prefork":
        per_child = 1
    elif mpm in ("event", "worker") and roles[worker]:
        per_child = max(threads - 2, 1)  # ThreadsPerChild + the main and listener threads
    server = "httpd" if "httpd" in (master.comm, program(master)) else "apache2"
    group = Group(
        rule="apache2",
        instance=master.pid,
        server=server,
        pool=None,
        worker_role=worker,
        roles=roles,
        mpm=mpm,
        threads_per_child=per_child,
        threads=threads,
    )
    return _Found("apache2", master.pid, server, [group])


# --------------------------------------------------------------------------- title rules


ChildRole = Callable[[ProcessFacts, ProcessFacts | None], str]


@dataclasses.dataclass(frozen=True)
class _TitleRule:
    """A server whose master and children say what they are in their titles (or, without a
    title, whose children run the master's own command line): one group per master."""

    rule: Rule
    master_role: str
    worker_role: str
    is_master: Callable[[ProcessFacts, list[ProcessFacts]], bool]
    child_role: ChildRole
    orphan_titles: tuple[str, ...] = ()
    # Children that run the master's own command line (no titles) are split by their signal
    # dispositions (``_untitled_workers``): those outside the workers' set play this role.
    untitled_helper: str | None = None

    def is_orphan(self, process: ProcessFacts) -> bool:
        title = process.title
        return bool(self.orphan_titles) and any(t in title for t in self.orphan_titles)

    def classify(
        self, tree: _Tree, master: ProcessFacts | None, tops: list[ProcessFacts]
    ) -> _Found:
        assigned: list[tuple[str, int]] = [(self.master_role, master.pid)] if master else []
        helpers: set[int] = set()
        if self.untitled_helper is not None and master is not None:
            untitled = [
                top
                for top in tops
                if _same_command(top, master) and self.child_role(top, master) == self.worker_role
            ]
            workers = {w.pid for w in _untitled_workers(untitled)}
            helpers = {top.pid for top in untitled if top.pid not in workers}
        for top in tops:
            if top.pid in helpers and self.untitled_helper is not None:
                role = self.untitled_helper
            else:
                role = self.child_role(top, master)
            assigned += _assign_below(tree, top, role, self.worker_role)
        first = (self.master_role, self.worker_role) if master else (self.worker_role,)
        roles = _roles(assigned, first)
        instance = master.pid if master else tops[0].ppid
        group = Group(
            rule=self.rule,
            instance=instance,
            server=self.rule,
            pool=None,
            worker_role=self.worker_role,
            roles=roles,
            threads=_most_threads(tree, roles[self.worker_role]),
        )
        return _Found(self.rule, instance, self.rule, [group])


def _untitled_workers(children: list[ProcessFacts]) -> list[ProcessFacts]:
    """The workers among children that all run the master's command line (uWSGI without
    ``--auto-procname``, whose mules, spooler and routers look the same): the set with the
    same signal dispositions that catches the most signals (a uWSGI 2.0 worker catches 10,
    a mule, the spooler or a router 5 or 6), then the larger set, then the later-forked
    one. Without signal masks (not read) every child is a worker."""
    buckets: dict[tuple[int, int] | None, list[ProcessFacts]] = {}
    for child in children:
        buckets.setdefault(child.signals, []).append(child)

    def key(item: tuple[tuple[int, int] | None, list[ProcessFacts]]) -> tuple[int, int, int]:
        signals, members = item
        caught = bin(signals[1]).count("1") if signals is not None else 0
        return (caught, len(members), min(m.start_ticks for m in members))

    if None in buckets:
        return list(children)
    return max(buckets.items(), key=key)[1] if buckets else []


def _by_title(table: Sequence[tuple[str, str]], same_command: str | None = None) -> ChildRole:
    """A child's role from the first title prefix of ``table`` it starts with; a child that
    runs the master's command line (no title set) is ``same_command``; else ``other``."""

    def role(child: ProcessFacts, master: ProcessFacts | None) -> str:
        title = child.title
        for prefix, name in table:
            if title.startswith(prefix):
                return name
        if same_command and master is not None and _same_command(child, master):
            return same_command
        return "other"

    return role


def _argv_runs(process: ProcessFacts, name: str) -> bool:
    """argv runs ``name``: as argv[0], as the script an interpreter runs, or ``-m name``."""
    argv = process.cmdline
    if not argv:
        return False
    if _basename(argv[0]) == name:
        return True
    if len(argv) > 1 and _basename(argv[1]) == name:
        return True
    return len(argv) > 2 and argv[1] == "-m" and argv[2] == name


def _nginx_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    if process.title.startswith("nginx: master process"):
        return True
    return process.comm == "nginx" and any(k.title.startswith("nginx: ") for k in kids)


def _uwsgi_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    title = process.title
    if title.startswith("uWSGI master"):
        return True
    if title.startswith("uWSGI "):
        return False
    return program(process) == "uwsgi" or process.comm == "uwsgi"


def _gunicorn_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    title = process.title
    if title.startswith("gunicorn: master"):
        return True
    return not title.startswith("gunicorn: ") and _argv_runs(process, "gunicorn")


def _celery_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    title = process.title
    if ":MainProcess]" in title:
        return True
    if "ForkPoolWorker" in title:
        return False
    return _argv_runs(process, "celery") and "worker" in process.cmdline


def _celery_child(child: ProcessFacts, master: ProcessFacts | None) -> str:
    """``[celeryd: NAME@HOST:ForkPoolWorker-N]``, or the main process's own argv untitled."""
    if ":ForkPoolWorker-" in child.title:
        return "pool worker"
    return "pool worker" if master is not None and _same_command(child, master) else "other"


def _puma_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    title = process.title
    return title.startswith("puma ") and "cluster worker" not in title


def _unicorn_master(process: ProcessFacts, kids: list[ProcessFacts]) -> bool:
    return process.title.startswith(("unicorn master", "unicorn_rails master"))


_NGINX = _TitleRule(
    "nginx",
    "master",
    "worker",
    _nginx_master,
    _by_title(
        (
            ("nginx: worker process", "worker"),
            ("nginx: cache manager process", "cache manager"),
            ("nginx: cache loader process", "cache loader"),
        )
    ),
    ("nginx: worker process", "nginx: cache manager", "nginx: cache loader"),
)
_UWSGI = _TitleRule(
    "uwsgi",
    "master",
    "worker",
    _uwsgi_master,
    _by_title(
        (
            ("uWSGI worker", "worker"),
            ("uWSGI mule", "mule"),
            ("uWSGI spooler", "spooler"),
            ("uWSGI ", "gateway"),  # the http, fastrouter and other routers
        ),
        same_command="worker",
    ),
    ("uWSGI worker", "uWSGI mule", "uWSGI spooler"),
    untitled_helper="helper",  # a mule, the spooler or a router, without titles
)
_GUNICORN = _TitleRule(
    "gunicorn",
    "arbiter",
    "worker",
    _gunicorn_master,
    _by_title((("gunicorn: worker", "worker"),), same_command="worker"),
    ("gunicorn: worker",),
)
_CELERY = _TitleRule(
    "celery",
    "main",
    "pool worker",
    _celery_master,
    _celery_child,
    ("ForkPoolWorker-",),
)
_PUMA = _TitleRule(
    "puma",
    "master",
    "cluster worker",
    _puma_master,
    _by_title((("puma: cluster worker", "cluster worker"),)),
    ("puma: cluster worker",),
)
_UNICORN = _TitleRule(
    "unicorn",
    "master",
    "worker",
    _unicorn_master,
    _by_title((("unicorn worker[", "worker"), ("unicorn_rails worker[", "worker"))),
    ("unicorn worker[", "unicorn_rails worker["),
)
TITLE_RULES = (_NGINX, _UWSGI, _GUNICORN, _CELERY, _PUMA, _UNICORN)


def _most_threads(tree: _Tree, pids: Iterable[int]) -> int:
    return max((tree.by_pid[pid].threads for pid in pids), default=1)


# --------------------------------------------------------------------------- generic


def _generic_group(tree: _Tree, root: ProcessFacts, below: list[int]) -> Group:
    """Under ``root``: the largest set of siblings with one command-line shape are the
    workers (a tie goes to the set that runs the parent's own shape, then the earliest);
    every other process is fixed cost."""
    sets: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for pid in below:
        process = tree.by_pid[pid]
        sets.setdefault((process.ppid, shape(process)), []).append(pid)

    def key(
        item: tuple[tuple[int, tuple[str, ...]], list[int]],
    ) -> tuple[int, bool, tuple[int, int]]:
        (parent, kind), pids = item
        like_parent = parent in tree.by_pid and shape(tree.by_pid[parent]) == kind
        earliest = min(tree.order(p) for p in pids)
        return (len(pids), like_parent, (-earliest[0], -earliest[1]))

    workers = set(max(sets.items(), key=key)[1]) if sets else set()
    assigned = [("parent", root.pid)]
    assigned += [("worker" if pid in workers else "other", pid) for pid in below]
    roles = _roles(assigned, ("parent", "worker"))
    return Group(
        rule="generic",
        instance=root.pid,
        server=program(root),
        pool=None,
        worker_role="worker",
        roles=roles,
        threads=_most_threads(tree, roles["worker"]),
    )


# --------------------------------------------------------------------------- classify


def classify(
    processes: Iterable[ProcessFacts], mpms: Mapping[int, str] | None = None
) -> Classification:
    """Classify one selection's processes into groups and roles.

    ``mpms`` maps an apache2 parent's pid to the MPM its maps show (``apache_masters`` says
    which pids to read, ``procfs.read_mapped_mpm`` reads them). The answer does not depend
    on the order of ``processes``; a pid listed twice counts once.
    """
    tree = _Tree(processes)
    mpm_of = dict(mpms or {})
    found: list[_Found] = []
    taken: set[int] = set()
    orphans: dict[tuple[str, int], list[ProcessFacts]] = {}
    leftover: list[int] = []

    def take(result: _Found) -> None:
        found.append(result)
        for group in result.groups:
            taken.update(group.pids)
        for pids in result.shared.values():
            taken.update(pids)

    stack = list(reversed(tree.roots))
    while stack:
        pid = stack.pop()
        process = tree.by_pid[pid]
        kids = tree.kids(pid)
        result = _master_of(tree, process, kids, mpm_of)
        if result is not None:
            take(result)
            continue
        orphan = _orphan_rule(process)
        if orphan is not None:
            orphans.setdefault((orphan, process.ppid), []).append(process)
            continue
        leftover.append(pid)
        stack.extend(reversed(tree.children[pid]))
    for (rule_name, _parent), tops in orphans.items():
        tops.sort(key=lambda p: tree.order(p.pid))
        take(_classify_orphans(tree, rule_name, tops))
    groups = [group for result in found for group in result.groups]
    groups += _generic(tree, [pid for pid in leftover if pid not in taken])
    shared = tuple(
        SharedCost(
            instance=result.instance,
            server=result.server,
            roles={role: tuple(sorted(pids)) for role, pids in result.shared.items()},
        )
        for result in found
        if result.shared
    )
    return Classification(rule=_overall_rule(groups), groups=tuple(groups), shared=shared)


def _master_of(
    tree: _Tree, process: ProcessFacts, kids: list[ProcessFacts], mpms: Mapping[int, str]
) -> _Found | None:
    """The instance ``process`` is the master of, classified, or None."""
    if _pg_master(process, kids):
        return _pg_classify(tree, process, kids)
    if _fpm_master(process, kids):
        return _fpm_classify(tree, process, kids)
    if process.title.startswith(PG_PREFIX) or process.title.startswith(FPM_POOL):
        return None
    if _httpd_master(process, kids):
        return _apache_classify(tree, process, mpms)
    for rule in TITLE_RULES:
        if not rule.is_orphan(process) and rule.is_master(process, kids):
            return rule.classify(tree, process, kids)
    return None


def _orphan_rule(process: ProcessFacts) -> str | None:
    """The rule whose child ``process``'s title says it is, when it is no master itself."""
    title = process.title
    if title.startswith(PG_PREFIX):
        return "postgresql"
    if title.startswith(FPM_POOL):
        return "php-fpm"
    for rule in TITLE_RULES:
        if rule.is_orphan(process):
            return rule.rule
    return None


def _classify_orphans(tree: _Tree, rule_name: str, tops: list[ProcessFacts]) -> _Found:
    """Children of one server whose master is not selected: one instance under their parent."""
    if rule_name == "postgresql":
        return _pg_classify(tree, None, tops)
    if rule_name == "php-fpm":
        return _fpm_classify(tree, None, tops)
    rule = next(r for r in TITLE_RULES if r.rule == rule_name)
    return rule.classify(tree, None, tops)


def _generic(tree: _Tree, leftover: list[int]) -> list[Group]:
    """The generic rule on what no server rule took: a root with children of its own is a
    parent with its workers; lone roots with the same parent and shape are workers together."""
    left = set(leftover)
    groups: list[Group] = []
    lone: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for pid in leftover:
        if tree.parent[pid] is not None:
            continue  # below a leftover root: that root's group holds it
        below = [p for p in tree.below(pid) if p in left]
        process = tree.by_pid[pid]
        if below:
            groups.append(_generic_group(tree, process, below))
        else:
            lone.setdefault((process.ppid, shape(process)), []).append(pid)
    for (parent, _kind), pids in lone.items():
        first = tree.by_pid[pids[0]]
        if len(pids) > 1:
            roles = {"worker": tuple(sorted(pids))}
            instance = parent
        else:
            roles = {"parent": (first.pid,), "worker": ()}
            instance = first.pid
        groups.append(
            Group(
                rule="generic",
                instance=instance,
                server=program(first),
                pool=None,
                worker_role="worker",
                roles=roles,
                threads=_most_threads(tree, roles["worker"]),
            )
        )
    return groups


def _overall_rule(groups: Sequence[Group]) -> Rule | Literal["mixed"]:
    with_workers = {group.rule for group in groups if group.workers}
    if len(with_workers) == 1:
        return with_workers.pop()
    if len(with_workers) > 1:
        return "mixed"
    return groups[0].rule if groups else "generic"
