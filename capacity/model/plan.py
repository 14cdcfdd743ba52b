"""One plan for a host: how many workers of each pool fit together (``capplan plan``).

Pure: saved models in (one per pool, each an Estimate with its name), a ``Plan`` out.

What is paid: every pool's fixed cost once, and each worker of each pool; the sum must fit
the memory less the reserve. Which counts: pools pinned with ``--set NAME=N`` run N; the
others keep a ratio, by default the worker counts the models were measured at, and
``--weight NAME=W`` puts W in a pool's place. The answer is the largest scale ``s`` along
that ratio whose counts, ``floor(s * weight)`` for each unpinned pool, fit: the point
answer by the point fits (``fixed + N * per_worker`` summed over the pools), the
conservative one by the one-sided 95 % upper prediction bound of the *sum* over the pools
(``fitting.upper_bound_of_sum``: one band for the whole host, not a band per pool), with the
pools' reclaimable page cache (and hot file cache) kept resident as the single-pool answer keeps it.

The search is exact: weights are Fractions, and the counts change only at the breakpoints
``s = k / w_i``. With L the pool of the largest weight, every other pool has at most one
breakpoint between two of L's, so a binary search over L's count, then a walk over the
others' breakpoints up to L's next one, finds the largest ``s`` that fits.

The budget. ``--memory`` is the host's total, as ``predict`` takes it; without it, the budget
every model recorded, when they were measured on one host and agree. The reserve:
``--reserve`` (bytes, or a share of the memory); else the share every model was saved with;
else the bytes measured with the models. A model's measured reserve is what everything
outside *its* workload used, and on a host that runs the pools together that includes the
other pools: when the models were measured on one host within an hour of each other (so the
pools ran together), each model's measured reserve is taken less the other pools' memory at
their measured counts, and the largest of those stands (what the rest of the host used).
Otherwise the reserves are kept whole, and the largest stands.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

from capacity.answers import Plan, PlanPool, PlanTotal
from capacity.errors import BudgetError, PlanError
from capacity.model import suggest
from capacity.model.assemble import BudgetOptions
from capacity.model.fitting import low_confidence_guard, total_for, upper_bound_of_sum
from capacity.records import Budget, Estimate, GroupEstimate
from capacity.units import format_bytes

NAMING = "a pool's name is its model file's name without .json"
MAX_COUNT = 10**9  # as predict --instances
MAX_WEIGHT = 10**9
# Models measured this close together are taken as measured while every pool ran, so each
# model's measured reserve counted the other pools (see the module docstring).
MEASURED_TOGETHER_SECONDS = 3600

_COUNT = re.compile(r"^[0-9]+$")
_WEIGHT = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")

V = TypeVar("V")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PoolModel:
    """One pool of the host: its name, the file it was read from, and its saved model."""

    name: str
    source: str
    estimate: Estimate


# --------------------------------------------------------------------------- --set, --weight


def _split(option: str, text: str, letter: str, example: str) -> tuple[str, str]:
    name, equals, value = text.rpartition("=")
    if not equals or not name:
        raise PlanError(
            f"bad {option} {text!r}: write NAME={letter}, e.g. {option} web={example}",
            hint=NAMING,
        )
    return name, value.strip()


def parse_count(text: str) -> tuple[str, int]:
    """``--set NAME=N``: (NAME, N), N a whole number of workers, 0 to 10**9."""
    name, value = _split("--set", text, "N", "40")
    if not _COUNT.match(value) or int(value) > MAX_COUNT:
        raise PlanError(
            f"bad --set {text!r}: N must be a whole number of workers, from 0 to {MAX_COUNT:,}",
            hint=f"e.g. --set {name}=40",
        )
    return name, int(value)


def parse_weight(text: str) -> tuple[str, Fraction]:
    """``--weight NAME=W``: (NAME, W), W a decimal number above 0 (kept exact)."""
    name, value = _split("--weight", text, "W", "2")
    if not _WEIGHT.match(value):
        raise PlanError(
            f"bad --weight {text!r}: W must be a number above 0, such as 2 or 0.5",
            hint=f"e.g. --weight {name}=2",
        )
    weight = Fraction(value)
    if weight <= 0:
        raise PlanError(
            f"bad --weight {text!r}: W must be above 0",
            hint=f"to run none of a pool's workers, pin it: --set {name}=0",
        )
    if weight > MAX_WEIGHT:
        raise PlanError(f"bad --weight {text!r}: W must be at most {MAX_WEIGHT:,}")
    return name, weight


def _assignments(
    option: str, texts: Sequence[str], parse: Callable[[str], tuple[str, V]]
) -> dict[str, V]:
    found: dict[str, V] = {}
    for text in texts:
        name, value = parse(text)
        if name in found:
            raise PlanError(f"{option} {name}=... is given twice", hint="give each pool once")
        found[name] = value
    return found


def parse_counts(texts: Sequence[str]) -> dict[str, int]:
    """Every ``--set NAME=N`` as typed, each pool at most once."""
    return _assignments("--set", texts, parse_count)


def parse_weights(texts: Sequence[str]) -> dict[str, Fraction]:
    """Every ``--weight NAME=W`` as typed, each pool at most once."""
    return _assignments("--weight", texts, parse_weight)


# --------------------------------------------------------------------------- checks


def _check_pools(pools: Sequence[PoolModel]) -> None:
    if not pools:
        raise PlanError(
            "no models to plan with",
            hint="give the model of each pool: capplan plan models/web.json models/db.json",
        )
    seen: dict[str, str] = {}
    for pool in pools:
        if pool.name in seen:
            raise PlanError(
                f"two models are named {pool.name!r} ({seen[pool.name]} and {pool.source}): "
                f"{NAMING}",
                hint=f"copy one under another name, e.g. cp {pool.source} "
                f"{_renamed(pool.source, pool.name)}",
            )
        seen[pool.name] = pool.source
    # One host has one page size and one architecture: models of others cannot share it.
    kinds = {(p.estimate.environment.arch, p.estimate.environment.page_size) for p in pools}
    if len(kinds) > 1:
        listed = ", ".join(
            f"{p.name} {p.estimate.environment.arch} with "
            f"{format_bytes(p.estimate.environment.page_size)} pages"
            for p in pools
        )
        raise PlanError(
            f"the models were measured on hosts of different architectures or page sizes "
            f"({listed}): one host has one",
            hint="plan with models measured on the host the pools will share, or on one of its kind",
        )


def _renamed(source: str, name: str) -> str:
    head = source[: len(source) - len(source.rsplit("/", 1)[-1])]
    return f"{head}{name}-2.json"


def _check_names(
    pools: Sequence[PoolModel], counts: Mapping[str, int], weights: Mapping[str, Fraction]
) -> None:
    names = [p.name for p in pools]
    for option, given in (("--set", counts), ("--weight", weights)):
        for name in given:
            if name not in names:
                raise PlanError(
                    f"{option} {name}=...: no pool is named {name!r} (the pools: "
                    f"{', '.join(names)})",
                    hint=NAMING,
                )
    both = [name for name in names if name in counts and name in weights]
    if both:
        raise PlanError(
            f"{both[0]} is given both --set and --weight: a pinned pool has no share of the ratio",
            hint=f"give one of --set {both[0]}=N and --weight {both[0]}=W",
        )


# --------------------------------------------------------------------------- budget


def _hostnames(pools: Sequence[PoolModel]) -> list[str]:
    return sorted({p.estimate.environment.hostname for p in pools})


def _memory(pools: Sequence[PoolModel], options: BudgetOptions) -> tuple[int, str]:
    if options.memory is not None:
        if options.memory <= 0:
            raise BudgetError(
                f"bad --memory {options.memory_text or options.memory}: must be more than 0"
            )
        return options.memory, f"--memory {options.memory_text or options.memory}"
    hosts = _hostnames(pools)
    if len(hosts) > 1:
        raise PlanError(
            f"the models were measured on different hosts ({', '.join(hosts)}): no budget "
            "they recorded is the one host's",
            hint="give --memory SIZE, the MemTotal of the host the pools will share",
        )
    totals = {p.estimate.budget.total_bytes for p in pools}
    if len(totals) > 1:
        listed = ", ".join(f"{p.name} {format_bytes(p.estimate.budget.total_bytes)}" for p in pools)
        raise PlanError(
            f"the models record different budgets ({listed})",
            hint="give --memory SIZE, the MemTotal of the host the pools will share",
        )
    budget = pools[0].estimate.budget
    return budget.total_bytes, (
        f"the budget every model recorded on {hosts[0]} ({budget.source}); give --memory "
        "to change it"
    )


def _reserve_was_measured(budget: Budget) -> bool:
    """A reserve estimate measured (what else the host or cgroup used), not one typed."""
    return not budget.reserve_source.startswith("--reserve")


def measured_memory(estimate: Estimate) -> int:
    """What a pool held when it was measured: its fixed cost and the workers it ran."""
    model = estimate.model
    return model.fixed_bytes + estimate.workload.worker_count * model.per_instance_bytes


def _measured_together(pools: Sequence[PoolModel]) -> bool:
    """Were the models measured within MEASURED_TOGETHER_SECONDS of each other? Only then is
    each pool taken to have run while the others were measured."""
    try:
        times = [datetime.datetime.fromisoformat(p.estimate.environment.time) for p in pools]
        stamps = [t.timestamp() for t in times]
    except (ValueError, TypeError, OverflowError, OSError):
        return False
    return max(stamps) - min(stamps) <= MEASURED_TOGETHER_SECONDS


def _reserve(pools: Sequence[PoolModel], memory: int, options: BudgetOptions) -> tuple[int, str]:
    if options.reserve_bytes is not None:
        reserve, source = (
            options.reserve_bytes,
            f"--reserve {options.reserve_text or options.reserve_bytes}",
        )
    elif options.reserve_fraction is not None:
        reserve = int(memory * options.reserve_fraction)
        source = f"--reserve {options.reserve_text or options.reserve_fraction} of the memory"
    else:
        reserve, source = _measured_reserve(pools, memory)
    if reserve >= memory:
        raise BudgetError(
            f"the reserve ({format_bytes(reserve)}) is not smaller than the memory "
            f"({format_bytes(memory)})",
            hint="give a smaller --reserve or a larger --memory",
        )
    return reserve, source


def _measured_reserve(pools: Sequence[PoolModel], memory: int) -> tuple[int, str]:
    shares = {p.estimate.budget.reserve_fraction for p in pools}
    share = shares.pop() if len(shares) == 1 else None
    if share is not None:
        return int(memory * share), (
            f"{share:.0%} of the memory, the share every model was saved with; give --reserve "
            "to change it"
        )
    hosts = _hostnames(pools)
    if len(hosts) > 1:
        return max(p.estimate.budget.reserve_bytes for p in pools), (
            f"the largest reserve measured with the models (on {', '.join(hosts)}), kept in "
            "bytes; give --reserve for the host the pools will share"
        )
    if len(pools) == 1:
        return pools[0].estimate.budget.reserve_bytes, (
            f"what everything outside the workload used on {hosts[0]} when the model was "
            "measured, kept in bytes; give --reserve to change it"
        )
    if not _measured_together(pools):
        return max(p.estimate.budget.reserve_bytes for p in pools), (
            f"the largest reserve measured with the models on {hosts[0]}, kept in bytes; they "
            f"were not measured within {MEASURED_TOGETHER_SECONDS // 60} minutes of each "
            "other, so it may count other pools too: give --reserve for what the rest of the "
            "host uses"
        )
    rest = []
    for pool in pools:
        reserve = pool.estimate.budget.reserve_bytes
        if _reserve_was_measured(pool.estimate.budget):
            # The other pools were outside this model's workload: they are planned here.
            reserve -= sum(measured_memory(o.estimate) for o in pools if o is not pool)
        rest.append(reserve)
    return max(*rest, 0), (
        f"what the rest of {hosts[0]} used when the models were measured: each model's "
        "reserve less the other pools at their measured counts (it counted them as outside "
        "its workload), the largest; give --reserve to change it"
    )


# --------------------------------------------------------------------------- the search

Counts = tuple[int, ...]


def _largest_scale(
    fits: Callable[[Counts], bool],
    counts_at: Callable[[Fraction], Counts],
    weights: Mapping[int, Fraction],
) -> Fraction | None:
    """The largest scale whose counts fit, or None when even scale 0 does not."""
    if not fits(counts_at(Fraction(0))):
        return None
    if not weights:
        return Fraction(0)
    lead = max(weights, key=lambda i: weights[i])

    def at(k: int) -> Fraction:
        return Fraction(k) / weights[lead]

    # Every worker of the lead pool costs memory, so doubling its count ends.
    low, high = 0, 1
    while fits(counts_at(at(high))):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(counts_at(at(middle))):
            low = middle
        else:
            high = middle
    best, following = at(low), at(low + 1)
    # Before the lead pool's next worker, each other pool has at most one breakpoint.
    breakpoints = sorted(
        {
            Fraction(math.floor(best * weight) + 1) / weight
            for i, weight in weights.items()
            if i != lead
        }
    )
    for scale in breakpoints:
        if scale >= following or not fits(counts_at(scale)):
            break
        best = scale
    return best


def _point_memory(pools: Sequence[PoolModel], counts: Counts) -> int:
    return sum(
        p.estimate.model.fixed_bytes + n * p.estimate.model.per_instance_bytes
        for p, n in zip(pools, counts, strict=True)
    )


def _bound(pools: Sequence[PoolModel], counts: Counts) -> float:
    return upper_bound_of_sum([p.estimate.model for p in pools], counts)


def _guarded(pools: Sequence[PoolModel], counts: Counts) -> float:
    """The memory of ``counts`` with each low-confidence pool at its guard (every worker at
    the costliest measured or the fit's upper bound, the fixed cost at its upper bound:
    ``fitting.low_confidence_guard``) and the others at their point figure."""
    total = 0.0
    for pool, n in zip(pools, counts, strict=True):
        guard = low_confidence_guard(pool.estimate.model)
        total += guard[0] + n * guard[1] if guard is not None else total_for(pool.estimate.model, n)
    return total


def _high(pools: Sequence[PoolModel], counts: Counts) -> int:
    return math.ceil(_bound(pools, counts))


# --------------------------------------------------------------------------- the plan


def plan_host(
    pools: Sequence[PoolModel],
    *,
    budget: BudgetOptions = BudgetOptions(),
    counts: Mapping[str, int] | None = None,
    weights: Mapping[str, Fraction] | None = None,
) -> Plan:
    """How many workers of each pool fit together in ``budget`` (see the module docstring)."""
    pins = dict(counts or {})
    chosen = dict(weights or {})
    _check_pools(pools)
    _check_names(pools, pins, chosen)
    memory, memory_source = _memory(pools, budget)
    reserve, reserve_source = _reserve(pools, memory, budget)
    available = memory - reserve

    index = {p.name: i for i, p in enumerate(pools)}
    pinned = {index[name]: n for name, n in pins.items()}
    ratio: dict[int, Fraction] = {}
    for i, pool in enumerate(pools):
        if i in pinned:
            continue
        weight = chosen.get(pool.name, Fraction(pool.estimate.workload.worker_count))
        if weight <= 0:
            raise PlanError(
                f"{pool.name} was measured with no workers, so it has no share of the ratio",
                hint=f"give it one with --weight {pool.name}=W, or pin it with --set {pool.name}=N",
            )
        ratio[i] = weight

    def counts_at(scale: Fraction) -> Counts:
        return tuple(
            pinned[i] if i in pinned else math.floor(scale * ratio[i]) for i in range(len(pools))
        )

    point_scale = _largest_scale(lambda c: _point_memory(pools, c) <= available, counts_at, ratio)
    if point_scale is None:
        need = _point_memory(pools, counts_at(Fraction(0)))
        what = "the pools' fixed costs" + (" and the pinned workers" if pinned else "")
        raise BudgetError(
            f"{what} need {format_bytes(need)}: {format_bytes(need - available)} more than "
            f"the {format_bytes(available)} available (memory {format_bytes(memory)} less "
            f"reserve {format_bytes(reserve)})",
            hint=("lower a --set count, or " if pinned else "")
            + "give a larger --memory or a smaller --reserve",
        )
    # What each pool's conservative answer keeps resident: its page cache and kernel memory,
    # and the hot part of the page cache it reads (issue 14).
    reclaimable = sum(
        p.estimate.model.reclaimable_bytes
        + p.estimate.model.hot_cache_bytes
        + p.estimate.model.shm_kept_bytes
        for p in pools
    )
    limit = available - reclaimable
    # Compared unrounded, as conservative_instances compares: one pool is predict's answer.
    # A low-confidence pool's conservative count also holds at its guard (issue 14).
    conservative_scale = _largest_scale(
        lambda c: _bound(pools, c) <= limit and _guarded(pools, c) <= limit, counts_at, ratio
    )
    point = counts_at(point_scale)
    conservative = counts_at(conservative_scale or Fraction(0))

    planned = tuple(
        _pool(pool, i in pinned, ratio.get(i), pool.name in chosen, point[i], conservative[i])
        for i, pool in enumerate(pools)
    )
    point_memory = _point_memory(pools, point)
    conservative_high = _high(pools, conservative)
    notes = _notes(pools, planned)
    if conservative_scale is None:
        notes.append(
            f"the pinned counts do not fit by the 95% bound of the sum: it is "
            f"{format_bytes(conservative_high - limit)} over"
            + (
                ", and the conservative answer runs none of the other pools' workers"
                if ratio
                else ""
            )
        )
    return Plan(
        memory_bytes=memory,
        memory_source=memory_source,
        reserve_bytes=reserve,
        reserve_source=reserve_source,
        available_bytes=available,
        naming=NAMING,
        ratio_source=_ratio_source(pools, pinned, ratio, chosen),
        pools=planned,
        point=PlanTotal(
            workers=sum(point),
            memory_bytes=point_memory,
            high_bytes=_high(pools, point),
            limit_bytes=available,
            room_bytes=available - point_memory,
            fits=True,
            scale=float(point_scale),
        ),
        conservative=PlanTotal(
            workers=sum(conservative),
            memory_bytes=_point_memory(pools, conservative),
            high_bytes=conservative_high,
            limit_bytes=limit,
            room_bytes=limit - conservative_high,
            fits=conservative_scale is not None,
            scale=float(conservative_scale or 0),
        ),
        notes=tuple(notes),
    )


def _pool(
    pool: PoolModel,
    pinned: bool,
    weight: Fraction | None,
    weighted: bool,
    point: int,
    conservative: int,
) -> PlanPool:
    estimate, model = pool.estimate, pool.estimate.model
    software = suggest.recognise_estimate(estimate)
    group = suggest.top_group(estimate)
    return PlanPool(
        name=pool.name,
        source=pool.source,
        server=software if group is None else group.server,
        workload=estimate.workload.name,
        hostname=estimate.environment.hostname,
        measured_workers=estimate.workload.worker_count,
        pinned=pinned,
        weight=None if weight is None else float(weight),
        weight_source="--set" if pinned else "--weight" if weighted else "measured",
        fixed_bytes=model.fixed_bytes,
        per_instance_bytes=model.per_instance_bytes,
        per_instance_ci95=model.per_instance_ci95,
        confidence=model.confidence,
        max_instances=point,
        memory_bytes=model.fixed_bytes + point * model.per_instance_bytes,
        max_instances_conservative=conservative,
        conservative_memory_bytes=model.fixed_bytes + conservative * model.per_instance_bytes,
        max_is_upper_bound=estimate.prediction.max_is_upper_bound,
        suggestion=suggest.for_estimate(estimate, conservative),
    )


def _ratio_source(
    pools: Sequence[PoolModel],
    pinned: Mapping[int, int],
    ratio: Mapping[int, Fraction],
    chosen: Mapping[str, Fraction],
) -> str:
    if not ratio:
        return "every pool is pinned with --set"
    if len(ratio) == 1:
        (i,) = ratio
        text = f"{pools[i].name} takes what the other pools leave"
    elif any(pools[i].name in chosen for i in ratio):
        text = "--weight, and the worker counts the models were measured at for the others"
    else:
        text = "the worker counts the models were measured at"
    return text + (", the pinned pools at their --set counts" if pinned else "")


def _notes(pools: Sequence[PoolModel], planned: Sequence[PlanPool]) -> list[str]:
    notes = []
    hosts = _hostnames(pools)
    if len(hosts) > 1:
        notes.append(
            f"the models were measured on different hosts ({', '.join(hosts)}): the plan "
            "takes each pool to cost on this host what it cost on its own"
        )
    for pool, result in zip(pools, planned, strict=True):
        if result.confidence == "low":
            reasons = "; ".join(pool.estimate.model.confidence_reasons)
            notes.append(
                f"{pool.name}: the model's confidence is low"
                + (f" ({reasons})" if reasons else "")
                + ": its counts are only as good as it is"
            )
        if result.max_is_upper_bound:
            notes.append(
                f"{pool.name}: its workers were still growing when it was measured, so its "
                "per-worker cost is a lower bound and every count here an upper bound"
            )
    return notes


# --------------------------------------------------------------------------- one estimate

GROUP_NAMING = "a pool's name is its group's: the server and its pool, or its master's pid"


def group_estimate(estimate: Estimate, group: GroupEstimate) -> Estimate:
    """One group of a measured selection as a model of its own: its fit, budget and
    prediction in place of the top level's, the rest (host, time, samples) shared."""
    workload = dataclasses.replace(
        estimate.workload,
        name=group.label,
        worker_count=group.worker_count,
        pids=group.pids,
        server=group.server,
        pool=group.pool,
        instance=group.instance,
        rule=group.rule,
        worker_role=group.worker_role,
        roles=dict(group.roles),
    )
    return dataclasses.replace(
        estimate,
        workload=workload,
        model=group.model,
        budget=group.budget,
        prediction=group.prediction,
        warnings=group.warnings,
        groups=(group,),
    )


def shared_once(estimate: Estimate) -> dict[int, int]:
    """What to take off each group's fixed cost so that a fixed part several groups share
    is paid once: group index -> bytes.

    A php-fpm master of several pools is in every pool's fixed cost, with the pages it
    shares with its children (a pool has no fixed process of its own). The part they share
    is at most the smallest of their fixed costs; the first of them keeps it and the others
    are counted without it. Measured (issue 13, reports/validation.md, php-fpm-pools): paid
    once per pool, the plan said 55 site1 workers beside 10 of site2 where 59 fitted; paid
    once, 59."""
    by_instance: dict[int | None, list[int]] = {}
    for i, group in enumerate(estimate.groups):
        if group.shared_roles:
            by_instance.setdefault(group.instance, []).append(i)
    deductions: dict[int, int] = {}
    for members in by_instance.values():
        if len(members) < 2:
            continue
        shared = max(0, min(estimate.groups[i].model.fixed_bytes for i in members))
        for i in members[1:]:
            deductions[i] = shared
    return deductions


def _less_fixed(estimate: Estimate, amount: int) -> Estimate:
    if amount <= 0:
        return estimate
    model = estimate.model
    low, high = model.fixed_ci95
    return dataclasses.replace(
        estimate,
        model=dataclasses.replace(
            model, fixed_bytes=model.fixed_bytes - amount, fixed_ci95=(low - amount, high - amount)
        ),
    )


def group_pools(estimate: Estimate) -> list[PoolModel]:
    """The groups of one estimate as the pools of a plan, named after their groups, a
    fixed part they share counted once (``shared_once``)."""
    names: list[str] = []
    for group in estimate.groups:
        name = group.label
        while name in names:
            name = f"{name}'"
        names.append(name)
    less = shared_once(estimate)
    return [
        PoolModel(
            name=name,
            source=f"group {i + 1} of {estimate.workload.selector}",
            estimate=_less_fixed(group_estimate(estimate, group), less.get(i, 0)),
        )
        for i, (name, group) in enumerate(zip(names, estimate.groups, strict=True))
    ]


def plan_groups(
    estimate: Estimate,
    *,
    budget: BudgetOptions | None = None,
    counts: Mapping[str, int] | None = None,
) -> Plan | None:
    """The plan for the host a selection of several groups was measured on: every group a
    pool (``plan_host`` with the budget each group was measured with, or ``budget``; the
    pools ``counts`` names pinned), None for one group.

    The budget is the one the estimate was given: every group recorded the same memory,
    and their reserves (each counted the other groups as outside its workload) are taken
    less the other groups, as for models measured together. A fixed cost several groups
    share (a php-fpm master of several pools) is paid once (``shared_once``); a note says
    how much was taken off."""
    if len(estimate.groups) < 2:
        return None
    pools = group_pools(estimate)
    plan = plan_host(pools, budget=budget or BudgetOptions(), counts=counts)
    memory_source, reserve_source = plan.memory_source, plan.reserve_source
    if budget is None:
        measured = estimate.groups[0].budget
        memory_source = f"the estimate's budget ({measured.source})"
        if measured.reserve_fraction is None and _reserve_was_measured(measured):
            reserve_source = (
                f"what the rest of {estimate.environment.hostname} used while capplan "
                "sampled: each group's reserve less the other groups (each counted them as "
                "outside its workload), the largest"
            )
        elif measured.reserve_fraction is None:
            reserve_source = f"{measured.reserve_source}, as the estimate was given"
    ratio_source = plan.ratio_source.replace("the models were", "the groups were")
    notes = list(plan.notes)
    less = shared_once(estimate)
    if less:
        taken = ", ".join(
            f"{pools[i].name} {format_bytes(amount)}" for i, amount in sorted(less.items())
        )
        shared = sorted({r for i in less for r in estimate.groups[i].shared_roles})
        notes.append(
            f"{', '.join(shared)} is shared by several groups and in each one's fixed cost: "
            f"the plan pays the shared part once, taking off {taken} (at most the smallest "
            "fixed cost of the groups that share it)"
        )
    return dataclasses.replace(
        plan,
        naming=GROUP_NAMING,
        memory_source=memory_source,
        reserve_source=reserve_source,
        ratio_source=ratio_source,
        notes=tuple(notes),
    )
