"""What ``predict``, ``plan``, ``check`` and ``inspect`` answer, as frozen records.

They are built from the measurement records in ``records`` and rendered by
``capacity.render``; like those, sizes are int bytes and host text is stored raw.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from capacity.records import (
    Confidence,
    Method,
    Notice,
    PageCounts,
    ProcessMemory,
    Skipped,
    Suggestion,
    Workload,
)

# --------------------------------------------------------------------------- inspect

INSPECT_KIND = "capplan.inspect"
INSPECT_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MappingRow:
    """One row of ``capplan inspect``: a mapping kind or file, over the whole workload.

    ``kind`` is executable, library, file, heap, stack, anonymous, shmem or kernel.
    ``name`` and ``path`` come from /proc/PID/maps: untrusted. ``shared_host_bytes`` is
    None with the smaps method, which cannot tell who else maps a page.
    """

    kind: str
    name: str
    path: str
    rss_bytes: int
    shared_once_bytes: int
    private_mean_bytes: int
    private_max_bytes: int
    shared_host_bytes: int | None
    cost_at_max_bytes: int
    anon_bytes: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Inspection:
    """The whole result of ``capplan inspect``: where the workload's memory goes."""

    schema_version: int = INSPECT_SCHEMA_VERSION
    kind: str = INSPECT_KIND
    unit: str = "bytes"
    workload: Workload
    method: Method
    method_note: str = ""
    max_workers: int
    max_workers_source: str
    rows: tuple[MappingRow, ...]
    total: MappingRow
    pages: PageCounts | None = None
    processes: tuple[ProcessMemory, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[Notice, ...] = ()


# --------------------------------------------------------------------------- what-if


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostSize:
    """One row of ``capplan predict``: how many workers fit in a host of this size."""

    memory_bytes: int
    reserve_bytes: int
    available_bytes: int
    room_bytes: int
    max_instances: int
    max_instances_conservative: int
    settings: tuple[str, ...] = ()  # the configuration line for the conservative count


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InstancesMemory:
    """The reverse question: the memory ``instances`` workers need, with its 95 % interval.

    ``memory_bytes`` and the interval are the workload's own (fixed + N workers);
    ``host_bytes`` adds the reserve to the upper end: the smallest budget that holds them.
    """

    instances: int
    memory_bytes: int
    low_bytes: int
    high_bytes: int
    reserve_bytes: int
    host_bytes: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WhatIf:
    """``capplan predict``: a saved model applied to other host sizes, without measuring."""

    kind: str = "capplan.predict"
    unit: str = "bytes"
    source: str
    workload: Workload
    hostname: str
    measured_at: str
    method: Method
    confidence: Confidence
    per_instance_bytes: int
    per_instance_ci95: tuple[int, int]
    fixed_bytes: int
    fixed_ci95: tuple[int, int]
    reserve_source: str
    sizes: tuple[HostSize, ...]
    instances: InstancesMemory | None = None
    suggestions: tuple[Suggestion, ...] = ()


# --------------------------------------------------------------------------- plan

PLAN_KIND = "capplan.plan"
PLAN_SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlanPool:
    """One pool of ``capplan plan``: a saved model, and how many of its workers fit beside
    the other pools.

    ``name`` is the model file's name without ``.json``; ``workload`` the process names the
    model measured (host text, untrusted). ``weight`` is the pool's share of the ratio the
    unpinned pools keep (None when ``--set`` pins it), from ``weight_source`` ("measured":
    its worker count when the model was measured, or "--weight"). ``max_instances`` is the
    point answer; ``max_instances_conservative`` the count in the plan whose *sum* fits by
    its 95 % bound, not a per-pool bound. ``suggestion`` is the configuration line for the
    conservative count, where capplan recognises the program.
    """

    name: str
    source: str
    server: str | None
    workload: str
    hostname: str
    measured_workers: int
    pinned: bool
    weight: float | None
    weight_source: str
    fixed_bytes: int
    per_instance_bytes: int
    per_instance_ci95: tuple[int, int]
    confidence: Confidence
    max_instances: int
    memory_bytes: int  # fixed + max_instances x per worker
    max_instances_conservative: int
    conservative_memory_bytes: int  # fixed + max_instances_conservative x per worker
    max_is_upper_bound: bool = False
    suggestion: Suggestion | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlanTotal:
    """The whole host at one answer's counts (the point answer, or the conservative one).

    ``memory_bytes`` is the point estimate of every pool's fixed cost and workers together,
    ``high_bytes`` the one-sided 95 % upper prediction bound of that sum. The point answer
    must keep ``memory_bytes`` within ``limit_bytes`` (the memory less the reserve); the
    conservative one ``high_bytes`` within ``limit_bytes`` (that, less the pools'
    reclaimable page cache, which it keeps resident). ``room_bytes`` is what is left;
    below 0 only when the pinned pools alone do not fit (``fits`` False). ``scale`` is the
    workers per unit of weight the unpinned pools reached along the ratio.
    """

    workers: int
    memory_bytes: int
    high_bytes: int
    limit_bytes: int
    room_bytes: int
    fits: bool
    scale: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """``capplan plan``: how many workers of each pool fit together on one host."""

    kind: str = PLAN_KIND
    schema_version: int = PLAN_SCHEMA_VERSION
    unit: str = "bytes"
    memory_bytes: int
    memory_source: str
    reserve_bytes: int
    reserve_source: str
    available_bytes: int
    naming: str
    ratio_source: str
    pools: tuple[PlanPool, ...]
    point: PlanTotal
    conservative: PlanTotal
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- check


Outcome = Literal["same", "within_tolerance", "regression", "improvement", "inconclusive"]
CheckStatus = Literal["pass", "regression", "not_comparable", "inconclusive"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tolerance:
    """How much heavier is still fine: a share of the baseline, bytes, or both.

    With both, a change is beyond tolerance only when it exceeds both: the byte floor keeps
    a tiny per-worker cost from failing on a few pages of noise.
    """

    max_increase_ratio: float | None = None
    max_increase_bytes: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """One figure (per-worker or fixed cost), baseline against now, with Welch's t-test."""

    quantity: Literal["per_instance", "fixed"]
    baseline_bytes: int
    current_bytes: int
    baseline_se_bytes: float
    current_se_bytes: float
    delta_bytes: int
    delta_ratio: float | None  # None when the baseline figure is 0
    allowed_bytes: int
    t_statistic: float | None  # None when neither side has any spread: no test to run
    dof: float | None
    p_value: float
    significant: bool
    outcome: Outcome


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckedModel:
    """Who was compared: enough of each side to tell a reader what the figures are."""

    source: str
    selector: str
    workload_name: str
    worker_count: int
    samples: int
    hostname: str
    time: str
    capplan_version: str
    method: Method
    thp_enabled: str
    schema_version: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of ``capplan check``: exit 0 on pass, 1 on regression, 2 otherwise."""

    kind: str = "capplan.check"
    unit: str = "bytes"
    status: CheckStatus
    baseline: CheckedModel
    current: CheckedModel
    tolerance: Tolerance
    alpha: float
    comparisons: tuple[Comparison, ...]
    not_comparable: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()
    env_change_allowed: bool = False
    hint: str = ""
