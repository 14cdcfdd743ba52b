"""The model file: an ``Estimate`` saved as versioned JSON, and read back validated."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capacity import output
from capacity.codec import DecodeError, dumps, from_jsonable, short
from capacity.errors import ModelFileError
from capacity.records import DOCUMENT_KIND, SUPPORTED_SCHEMAS, Estimate


def save_estimate(path: Path, estimate: Estimate, *, force: bool = False) -> None:
    """Write the model by the output policy (``capacity.output``): new files exclusively,
    an existing one only with ``force``, never a link, a device or a directory."""
    output.write_file(path, dumps(estimate), force=force)


def estimate_from_dict(data: Mapping[str, Any], source: str = "<data>") -> Estimate:
    """Validate a decoded JSON document and build the Estimate, or raise ModelFileError."""
    if not isinstance(data, dict):
        raise ModelFileError(source, "not a capplan model: the top level is not an object")
    if data.get("kind") != DOCUMENT_KIND:
        raise ModelFileError(source, f"not a capplan model: field 'kind' is {data.get('kind')!r}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(source, f"field 'schema_version' is {version!r}, not an integer")
    if version not in SUPPORTED_SCHEMAS:
        newer = version > max(SUPPORTED_SCHEMAS)
        raise ModelFileError(
            source,
            f"schema_version {version} is not supported (this capplan reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMAS))})",
            hint="upgrade capplan to read it"
            if newer
            else "re-measure with capplan estimate --save",
        )
    try:
        estimate = from_jsonable(Estimate, dict(data), "")
        check_estimate(estimate)
    except DecodeError as err:
        raise ModelFileError(source, f"field '{err.field}': {err.detail}") from None
    return estimate


def check_estimate(estimate: Estimate) -> None:
    """Raise DecodeError for values of the right type that no measurement can produce.

    The codec checks types; a hand-edited file can still hold a per-worker cost of 0 (a
    division by zero in every prediction) or an interval whose ends are swapped. Each check
    names the field, as the codec does.
    """
    m, b, p = estimate.model, estimate.budget, estimate.prediction

    def need(ok: bool, field: str, detail: str) -> None:
        if not ok:
            raise DecodeError(field, detail)

    need(estimate.unit == "bytes", "unit", f"expected 'bytes', got {short(estimate.unit)}")
    need(len(estimate.samples) > 0, "samples", "expected at least one sample, got none")
    need(m.per_instance_bytes > 0, "model.per_instance_bytes", "must be more than 0")
    need(m.fixed_bytes >= 0, "model.fixed_bytes", "must be 0 or more")
    for name in ("per_instance_ci95", "fixed_ci95"):
        low, high = getattr(m, name)
        need(low <= high, f"model.{name}", f"the lower end {low} is above the upper end {high}")
    for name in ("per_instance_se_bytes", "fixed_se_bytes", "residual_sd_bytes", "worker_sd_bytes"):
        need(getattr(m, name) >= 0, f"model.{name}", "must be 0 or more")
    need(m.dof >= 1, "model.dof", "must be at least 1 (two workers or more)")
    need(m.n_workers >= 2, "model.n_workers", "must be at least 2")
    need(m.n_samples >= 1, "model.n_samples", "must be at least 1")
    need(b.total_bytes > 0, "budget.total_bytes", "must be more than 0")
    need(b.reserve_bytes >= 0, "budget.reserve_bytes", "must be 0 or more")
    need(
        b.available_bytes == b.total_bytes - b.reserve_bytes,
        "budget.available_bytes",
        "must equal total_bytes - reserve_bytes",
    )
    if b.reserve_fraction is not None:
        need(0 <= b.reserve_fraction < 1, "budget.reserve_fraction", "must be in [0, 1)")
    need(p.max_instances >= 0, "prediction.max_instances", "must be 0 or more")
    if p.max_instances_conservative is not None:
        need(
            p.max_instances_conservative >= 0,
            "prediction.max_instances_conservative",
            "must be 0 or more",
        )
    need(estimate.workload.worker_count >= 0, "workload.worker_count", "must be 0 or more")
    need(estimate.environment.cpu_count >= 1, "environment.cpu_count", "must be at least 1")
    if estimate.measurement is not None:
        need(estimate.measurement.samples >= 1, "measurement.samples", "must be at least 1")
        need(
            estimate.measurement.interval_seconds >= 0,
            "measurement.interval_seconds",
            "must be 0 or more",
        )


def load_estimate(path: Path) -> Estimate:
    """Read and validate a model file; every failure is a one-line ModelFileError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(
            str(path), "no such file", hint="create one with: capplan estimate ... --save"
        ) from None
    except IsADirectoryError:
        raise ModelFileError(str(path), "is a directory, not a model file") from None
    except OSError as err:
        raise ModelFileError(str(path), f"cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ModelFileError(str(path), "not a text file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelFileError(
            str(path), f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    return estimate_from_dict(data, str(path))
