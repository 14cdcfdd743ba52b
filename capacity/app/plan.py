"""``capplan plan`` as one library call: the saved models of a host's pools, planned together.

``run_plan(PlanOptions(...))`` takes what the command takes, as typed (model paths,
``--memory``, ``--reserve``, ``--set NAME=N``, ``--weight NAME=W``), reads every model
(``modelfile.load_estimate``: a damaged one is a one-line ModelFileError), names each pool
after its file and returns the ``Plan`` record the command renders. The sizes are read by
``BudgetOptions.parse``, the one reader of ``--memory`` and ``--reserve``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from capacity import modelfile
from capacity.answers import Plan
from capacity.errors import PlanError
from capacity.model.assemble import BudgetOptions
from capacity.model.plan import PoolModel, parse_counts, parse_weights, plan_host


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """The models of one host's pools and what to plan them for, as typed on the command line."""

    models: tuple[Path, ...]
    memory: str | None = None
    reserve: str | None = None
    counts: tuple[str, ...] = ()  # --set NAME=N
    weights: tuple[str, ...] = ()  # --weight NAME=W


def pool_name(path: Path) -> str:
    """A pool's name: its model file's name without ``.json`` (models/web.json -> web)."""
    return path.name.removesuffix(".json") or path.name


def run_plan(options: PlanOptions) -> Plan:
    """Read the options as the command does, load every model, and plan the host."""
    budget = BudgetOptions.parse(options.memory, options.reserve)
    counts = parse_counts(options.counts)
    weights = parse_weights(options.weights)
    if not options.models:
        raise PlanError(
            "no models to plan with",
            hint="give the model of each pool: capplan plan models/web.json models/db.json",
        )
    seen: set[Path] = set()
    for path in options.models:
        if path.resolve() in seen:
            raise PlanError(f"{path} is given twice", hint="give each pool's model once")
        seen.add(path.resolve())
    pools = [
        PoolModel(name=pool_name(path), source=str(path), estimate=modelfile.load_estimate(path))
        for path in options.models
    ]
    return plan_host(pools, budget=budget, counts=counts, weights=weights)
