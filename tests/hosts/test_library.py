"""The library does with one call what the CLI does: the same document, field for field.

``run_estimate`` on a captured host against ``capplan estimate --root ... --format json``:
only what differs between any two runs (timings, the time of day, the command line) may differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import FIXTURES, run_cli

from capacity.app.estimate import EstimateOptions, run_estimate
from capacity.codec import to_jsonable
from capacity.measure.workload import Selector
from capacity.model.assemble import BudgetOptions

HOST = FIXTURES / "hosts" / "demo"
PARENT = 18121


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    document.pop("timing")
    # --format json adds the host plan, derived from the groups at render time (none here).
    assert document.pop("plan", None) is None and document.pop("plan_error", None) is None
    document["environment"].pop("time")
    document["environment"].pop("command_line")
    for sample in document["samples"]:
        for key in ("taken_at", "read_seconds"):
            sample.pop(key)
        if sample.get("pages"):
            sample["pages"].pop("read_seconds", None)
    return document


def test_one_call_yields_the_document_the_cli_prints() -> None:
    args = ("--pid", str(PARENT), "--samples", "1", "--memory", "8G", "--reserve", "10%")
    result = run_cli("estimate", "--root", str(HOST), *args, "--format", "json")
    assert result.code == 0, result.stderr
    library = run_estimate(
        EstimateOptions(
            selector=Selector(pid=PARENT),
            samples=1,
            root=Path(HOST),
            budget=BudgetOptions.parse("8G", "10%"),
        )
    )
    assert comparable(to_jsonable(library)) == comparable(json.loads(result.stdout))
    assert library.measurement is not None and library.measurement.samples == 1
