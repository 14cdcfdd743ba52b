"""What-if: a saved model applied to other host sizes and worker counts, without measuring.

Pure: it takes a loaded Estimate and the sizes asked about, and returns a WhatIf record that
the report renders. The maths is the model's own (``predict``, ``conservative_instances``,
``memory_for``), so `capplan predict` and `capplan estimate --memory` agree to the worker.

The reserve on another host. A model's reserve was measured on its own host: what everything
outside the workload used there (the OS, agents, other services). Those do not grow with RAM,
so by default the same bytes are kept on every size. A reserve given as a share when the
model was saved (``--reserve 10%``) is carried as that share. ``--reserve`` overrides both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from capacity.answers import HostSize, InstancesMemory, WhatIf
from capacity.errors import BudgetError
from capacity.model import suggest
from capacity.model.fitting import memory_for, predict
from capacity.records import Budget, Estimate, Suggestion


def reserve_choice(
    estimate: Estimate,
    reserve_bytes: int | None = None,
    reserve_fraction: float | None = None,
    reserve_text: str | None = None,
) -> tuple[int | None, float | None, str]:
    """(bytes, share, where it came from): exactly one of bytes and share is set."""
    if reserve_bytes is not None:
        return reserve_bytes, None, f"--reserve {reserve_text or reserve_bytes}"
    if reserve_fraction is not None:
        return None, reserve_fraction, f"--reserve {reserve_text or reserve_fraction} of each size"
    budget = estimate.budget
    if budget.reserve_fraction is not None:
        return (
            None,
            budget.reserve_fraction,
            f"{budget.reserve_fraction:.0%} of each size, the share the model was saved with",
        )
    return (
        budget.reserve_bytes,
        None,
        f"what everything outside the workload used on {estimate.environment.hostname} when "
        "the model was measured, kept in bytes on every size (the OS and other services do "
        "not grow with RAM); give --reserve to change it",
    )


def size_row(
    estimate: Estimate,
    memory: int,
    reserve_bytes: int | None,
    reserve_fraction: float | None,
) -> HostSize:
    if memory <= 0:
        raise BudgetError(f"bad memory size {memory}: must be more than 0")
    reserve = reserve_bytes if reserve_bytes is not None else int(memory * (reserve_fraction or 0))
    # A size the reserve fills fits no worker: its row says so (and the true room, below
    # zero) rather than failing the whole list of sizes.
    available = max(memory - reserve, 0)
    budget = Budget(
        total_bytes=memory,
        reserve_bytes=reserve,
        available_bytes=available,
        source="what-if",
        reserve_source="what-if",
    )
    prediction = predict(estimate.model, budget)
    # The model's own conservative answer (it keeps the reclaimable page cache resident).
    conservative = prediction.max_instances_conservative or 0
    config = suggest.for_estimate(estimate, conservative)
    return HostSize(
        memory_bytes=memory,
        reserve_bytes=reserve,
        available_bytes=available,
        room_bytes=prediction.room_bytes
        if memory > reserve
        else memory - reserve - estimate.model.fixed_bytes,
        max_instances=prediction.max_instances,
        max_instances_conservative=conservative,
        settings=config.lines[:1] if config else (),
    )


def instances_row(
    estimate: Estimate, instances: int, reserve_bytes: int | None, reserve_fraction: float | None
) -> InstancesMemory:
    if instances < 0:
        raise BudgetError(f"bad --instances {instances}: must be 0 or more")
    point, low, high = memory_for(estimate.model, instances)
    if reserve_bytes is not None:
        reserve = reserve_bytes
    else:
        # A share of a host not chosen yet: the host H with H - share * H = high.
        reserve = math.ceil(high / (1 - (reserve_fraction or 0))) - high
    return InstancesMemory(
        instances=instances,
        memory_bytes=point,
        low_bytes=max(low, 0),
        high_bytes=high,
        reserve_bytes=reserve,
        host_bytes=high + reserve,
    )


def what_if(
    estimate: Estimate,
    *,
    source: str,
    memories: Sequence[int] = (),
    instances: int | None = None,
    reserve_bytes: int | None = None,
    reserve_fraction: float | None = None,
    reserve_text: str | None = None,
) -> WhatIf:
    """Predictions for each host size (the model's own budget when none is given)."""
    fixed_bytes, share, reserve_source = reserve_choice(
        estimate, reserve_bytes, reserve_fraction, reserve_text
    )
    sizes = list(memories) or [estimate.budget.total_bytes]
    rows = tuple(size_row(estimate, memory, fixed_bytes, share) for memory in sizes)
    reverse = None
    suggestions: list[Suggestion] = []
    if instances is not None:
        reverse = instances_row(estimate, instances, fixed_bytes, share)
        config = suggest.for_estimate(estimate, instances)
        if config is not None:
            suggestions.append(config)
        suggestions.append(suggest.kubernetes(instances, reverse.memory_bytes, reverse.high_bytes))
    model = estimate.model
    return WhatIf(
        source=source,
        workload=estimate.workload,
        hostname=estimate.environment.hostname,
        measured_at=estimate.environment.time,
        method=model.method,
        confidence=model.confidence,
        per_instance_bytes=model.per_instance_bytes,
        per_instance_ci95=model.per_instance_ci95,
        fixed_bytes=model.fixed_bytes,
        fixed_ci95=model.fixed_ci95,
        reserve_source=reserve_source,
        sizes=rows,
        instances=reverse,
        suggestions=tuple(suggestions),
    )
