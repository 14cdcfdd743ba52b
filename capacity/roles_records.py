"""The records of server roles: what each process of a selection is (issue 13).

``measure/roles`` classifies a selection's processes from their titles, command lines and
process tree; these frozen records carry what it found, in and out:

* ``ProcessFacts``: one process as the classifier sees it (read by ``measure/workload``).
* ``Group``: one independent pool of workers (one postmaster, one php-fpm pool, one apache2
  server): its instance (the master's pid), its roles (role name -> pids), which role holds
  the workers; every other role is fixed cost.
* ``SharedCost``: the fixed cost that several groups of one instance share (the php-fpm
  master of several pools).
* ``Classification``: the rule that classified the selection and every group.

Kept apart from ``records`` (which holds what crosses the measurement and the model) so
that neither grows past one screenful of concerns; both are bottom modules. Titles and
command lines are host text, stored raw: only ``capacity.render`` escapes them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

# Which rule classified a group: a server capplan knows, or the generic sibling rule.
Rule = Literal[
    "postgresql",
    "php-fpm",
    "apache2",
    "gunicorn",
    "uwsgi",
    "nginx",
    "celery",
    "puma",
    "unicorn",
    "generic",
]
# The same names as a tuple, from the Literal itself: one list to keep.
RULES: tuple[Rule, ...] = typing.get_args(Rule)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessFacts:
    """One process as the classifier sees it: identity, tree, title and thread count.

    ``cmdline`` is argv as /proc/PID/cmdline holds it: a process that rewrites its title
    (postgres, php-fpm, nginx, gunicorn with setproctitle) leaves one string with spaces.
    ``signals`` is ``(SigIgn, SigCgt)`` from /proc/PID/status where it was read: two
    children of one apache2 with the same command line differ there when one is mod_cgid's
    daemon.
    """

    pid: int
    ppid: int
    comm: str
    cmdline: tuple[str, ...] = ()
    exe: str | None = None
    threads: int = 1
    start_ticks: int = 0
    signals: tuple[int, int] | None = None

    @property
    def title(self) -> str:
        """What ``ps -o args`` shows: argv joined by spaces, or the comm name without argv."""
        return " ".join(self.cmdline).strip() or self.comm


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """One independent pool of workers and the fixed cost that comes with it.

    ``roles`` maps each role to its pids (sorted), the worker role first-class among them:
    ``workers`` are ``roles[worker_role]`` (possibly none), every other role is fixed cost.
    ``instance`` is the master's pid: the postmaster, the php-fpm master, the apache2
    parent; for siblings whose parent is outside the selection, that parent's pid.
    ``mpm`` and ``threads_per_child`` are apache2's (``ThreadsPerChild``: 1 with prefork);
    ``threads`` is the most threads one worker process has, for every server.
    """

    rule: Rule
    instance: int
    server: str
    pool: str | None
    worker_role: str
    roles: dict[str, tuple[int, ...]]
    mpm: str | None = None
    threads_per_child: int | None = None
    threads: int = 1

    @property
    def workers(self) -> tuple[int, ...]:
        return self.roles.get(self.worker_role, ())

    @property
    def fixed(self) -> tuple[int, ...]:
        """Every pid of the group that is not a worker: its fixed cost."""
        return tuple(
            sorted(
                pid for role, pids in self.roles.items() if role != self.worker_role for pid in pids
            )
        )

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted(pid for pids in self.roles.values() for pid in pids))

    @property
    def counts(self) -> dict[str, int]:
        """Role name -> how many processes hold it."""
        return {role: len(pids) for role, pids in self.roles.items()}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SharedCost:
    """Fixed cost of one instance that several of its groups share: the php-fpm master
    (and anything else under it that belongs to no pool) when it runs several pools."""

    instance: int
    server: str
    roles: dict[str, tuple[int, ...]]

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted(pid for pids in self.roles.values() for pid in pids))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """A selection's processes in groups and roles; every pid is in exactly one role of
    exactly one group, or of one ``shared`` entry.

    ``rule`` is the rule of the groups that have workers when they agree, ``"mixed"`` when
    they do not, and the first group's rule when no group has workers.
    """

    rule: Rule | Literal["mixed"]
    groups: tuple[Group, ...]
    shared: tuple[SharedCost, ...] = ()

    def group_of(self, pid: int) -> Group | None:
        for group in self.groups:
            if pid in group.pids:
                return group
        return None

    def shared_of(self, group: Group) -> tuple[int, ...]:
        """The fixed cost ``group`` shares with the other groups of its instance."""
        return tuple(
            pid
            for shared in self.shared
            if shared.instance == group.instance and shared.server == group.server
            for pid in shared.pids
        )

    def fixed_of(self, group: Group) -> tuple[int, ...]:
        """Everything ``group`` pays once: its own fixed roles and its instance's shared cost."""
        return tuple(sorted((*group.fixed, *self.shared_of(group))))
