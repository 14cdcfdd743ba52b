"""Which group and role each process plays over the samples (issue 13): the model's view.

``measure/roles`` classifies the first selection into groups (one postmaster, one php-fpm
pool, one apache2 server). ``Grouping`` carries that answer across the samples and turns
every snapshot into one snapshot per group, with the two roles the model knows:

* the group's worker role (client backends, a pool's children, apache2's children) is
  ``worker``;
* every other role of the group (the master, PostgreSQL's background processes, mod_cgid's
  daemon, piped loggers) and the cost its instance shares with its other groups (the
  php-fpm master of several pools, ``Classification.fixed_of``) is ``parent``: fixed cost.

A process that was not in the first selection (a backend that connected later, a child
apache2 forked) is classified again with the processes around it, from its title and
tree: it joins the group whose instance, server and pool the new classification gives it,
in the role it gives it. When that says nothing of it, a child of a group's instance is a
worker of that group; anything else belongs to no group and is measured in none. A process
whose role is still provisional (``other``: a php-fpm child forked a moment ago still
bears the master's title) is looked at again at the next sample.

The walk and the sampler read the host; ``split`` and ``snapshots`` are pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from capacity.measure.procfs import DEFAULT_ROOT
from capacity.measure.roles import classify
from capacity.measure.workload import Selection, role_facts
from capacity.records import PageCounts, ProcessMemory, Role, Snapshot
from capacity.roles_records import Classification, Group, ProcessFacts

Identity = tuple[int, int]  # (pid, start time in clock ticks)
GroupKey = tuple[str, str, str | None, int]  # (rule, server, pool, instance)

PROVISIONAL_ROLES = ("other",)


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    """One process in one group: its role's name, and whether that is the worker role."""

    group: int
    role: str
    worker: bool


def _key(group: Group) -> GroupKey:
    return (group.rule, group.server, group.pool, group.instance)


def placements(classification: Classification, pid: int) -> tuple[Placement, ...]:
    """Where ``classification`` puts ``pid``: its group and role, or, for an instance's
    shared cost, a fixed role in every group of that instance."""
    found: list[Placement] = []
    for index, group in enumerate(classification.groups):
        for role, pids in group.roles.items():
            if pid in pids:
                found.append(Placement(index, role, role == group.worker_role))
    for shared in classification.shared:
        for role, pids in shared.roles.items():
            if pid not in pids:
                continue
            for index, group in enumerate(classification.groups):
                if (group.instance, group.server) == (shared.instance, shared.server):
                    found.append(Placement(index, role, False))
    return tuple(found)


class Grouping:
    """The groups of one selection and every process's place in them, sample after sample."""

    def __init__(
        self,
        classification: Classification,
        facts: Sequence[ProcessFacts],
        mpms: Mapping[int, str] | None = None,
        root: Path = DEFAULT_ROOT,
    ) -> None:
        self.classification = classification
        self.groups = classification.groups
        self.root = root
        self._mpms = dict(mpms or {})
        self._facts: dict[Identity, ProcessFacts] = {}
        self._placed: dict[Identity, tuple[Placement, ...]] = {}
        self._provisional: set[Identity] = set()
        for fact in facts:
            identity = (fact.pid, fact.start_ticks)
            self._facts[identity] = fact
            self._place(identity, placements(classification, fact.pid))

    @classmethod
    def read(cls, selection: Selection, root: Path = DEFAULT_ROOT) -> Grouping:
        """Classify ``selection`` as ``workload.classify_selection`` does, keeping what was
        read so that later processes are classified among them."""
        facts, mpms = role_facts(selection.pids, root)
        return cls(classify(facts, mpms), facts, mpms, root)

    def facts_of(self, pid: int) -> ProcessFacts | None:
        return next((f for (p, _), f in self._facts.items() if p == pid), None)

    def _place(self, identity: Identity, found: tuple[Placement, ...]) -> None:
        self._placed[identity] = found
        if not found or any(place.role in PROVISIONAL_ROLES for place in found):
            self._provisional.add(identity)
        else:
            self._provisional.discard(identity)

    # ------------------------------------------------------------------ over the samples

    def observe(self, processes: Sequence[ProcessMemory]) -> None:
        """Place the processes of a sample that are new (or still provisional), reading
        their titles under ``root`` and classifying them among the processes present."""
        present = {(p.pid, p.start_ticks): p for p in processes}
        fresh = [i for i in present if i not in self._placed or i in self._provisional]
        if not fresh:
            return
        read, mpms = role_facts([pid for pid, _ in fresh], self.root)
        for fact in read:
            if (fact.pid, fact.start_ticks) in present:
                self._facts[(fact.pid, fact.start_ticks)] = fact
        self._mpms.update({pid: mpm for pid, mpm in mpms.items() if pid not in self._mpms})
        around = [self._facts[i] for i in present if i in self._facts]
        again = classify(around, self._mpms)
        by_key = {_key(group): index for index, group in enumerate(self.groups)}
        for identity in fresh:
            pid = identity[0]
            found = []
            for place in placements(again, pid):
                index = by_key.get(_key(again.groups[place.group]))
                if index is not None:
                    found.append(Placement(index, place.role, place.worker))
            if not found:
                found = self._child_of_instance(present[identity].ppid)
            self._place(identity, tuple(found))

    def _child_of_instance(self, ppid: int) -> list[Placement]:
        """A child of one group's instance that no rule named: that group's worker."""
        mine = [i for i, group in enumerate(self.groups) if group.instance == ppid]
        if len(mine) != 1:
            return []  # no group's, or several pools' of one master: not known which
        group = self.groups[mine[0]]
        return [Placement(mine[0], group.worker_role, True)]

    def siblings(self, group: int) -> tuple[int, ...]:
        """The other groups of ``group``'s instance (the other pools of its php-fpm master)."""
        mine = self.groups[group]
        return tuple(
            i
            for i, other in enumerate(self.groups)
            if i != group and (other.instance, other.server) == (mine.instance, mine.server)
        )

    def placements_of(self, process: ProcessMemory) -> tuple[Placement, ...]:
        return self._placed.get((process.pid, process.start_ticks), ())

    def role_of(self, group: int, process: ProcessMemory) -> str | None:
        """The name of ``process``'s role in ``group``, None when it is not in it."""
        for place in self.placements_of(process):
            if place.group == group:
                return place.role
        return None

    def relabel(self, processes: Sequence[ProcessMemory]) -> tuple[ProcessMemory, ...]:
        """The whole selection's processes, each a worker when it is one in its group."""
        return tuple(
            dataclasses.replace(
                p,
                role="worker" if any(x.worker for x in self.placements_of(p)) else "parent",
            )
            for p in processes
        )

    def split(self, processes: Sequence[ProcessMemory]) -> tuple[tuple[ProcessMemory, ...], ...]:
        """One tuple per group: its processes, ``worker`` in its worker role, else
        ``parent``; a process of no group is in none (``Grouping``'s docstring)."""
        split: list[list[ProcessMemory]] = [[] for _ in self.groups]
        for process in processes:
            for place in self.placements_of(process):
                role: Role = "worker" if place.worker else "parent"
                split[place.group].append(
                    process if process.role == role else dataclasses.replace(process, role=role)
                )
        return tuple(tuple(members) for members in split)

    def snapshots(
        self,
        snapshots: Sequence[Snapshot],
        pages: Mapping[int, Sequence[PageCounts | None]] | None = None,
    ) -> tuple[tuple[Snapshot, ...], ...]:
        """Every sample as each group sees it (see ``group_snapshot``); a sample in which a
        group has no process is left out of that group's."""
        per_group: list[list[Snapshot]] = [[] for _ in self.groups]
        for snapshot in snapshots:
            walks = (pages or {}).get(snapshot.index)
            for index, members in enumerate(self.split(snapshot.processes)):
                if not members:
                    continue
                walk = walks[index] if walks is not None and index < len(walks) else None
                per_group[index].append(self.group_snapshot(snapshot, index, members, walk))
        return tuple(tuple(group) for group in per_group)

    def group_snapshot(
        self,
        snapshot: Snapshot,
        group: int,
        members: tuple[ProcessMemory, ...],
        walk: PageCounts | None,
    ) -> Snapshot:
        """``snapshot`` with ``group``'s processes only and its own exact walk. Its cgroup
        calibrates kernel memory only when the group is every process measured in it."""
        pids = {p.pid for p in members}
        cgroup = snapshot.cgroup
        if cgroup is not None and cgroup.own and pids != {p.pid for p in snapshot.processes}:
            cgroup = dataclasses.replace(cgroup, own=False)
        # A skipped process has no start time: it is the group's when its pid was placed
        # in the group, everyone's when it was never placed (a damaged captured tree).
        groups_of: dict[int, set[int]] = {}
        for (pid, _), found in self._placed.items():
            groups_of.setdefault(pid, set()).update(place.group for place in found)
        skipped = tuple(s for s in snapshot.skipped if group in groups_of.get(s.pid, {group}))
        return dataclasses.replace(
            snapshot, processes=members, skipped=skipped, cgroup=cgroup, pages=walk
        )
