"""The model file: an ``Estimate`` saved as versioned JSON, and read back validated."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from capacity import output
from capacity.codec import DecodeError, dumps, from_jsonable, short
from capacity.errors import ModelFileError
from capacity.records import DOCUMENT_KIND, SUPPORTED_SCHEMAS, Estimate, ModelFit


def save_estimate(path: Path, estimate: Estimate, *, force: bool = False) -> None:
    """Write the model by the output policy (``capacity.output``): new files exclusively,
    an existing one only with ``force``, never a link, a device or a directory."""
    output.write_file(path, dumps(estimate), force=force)


def estimate_from_dict(data: Mapping[str, Any], source: str = "<data>") -> Estimate:
    """Validate a decoded JSON document and build the Estimate, or raise ModelFileError."""
    if not isinstance(data, dict):
        raise ModelFileError(source, "not a capplan model: the top level is not an object")
    if data.get("kind") != DOCUMENT_KIND:
        raise ModelFileError(
            source, f"not a capplan model: field 'kind' is {short(data.get('kind'))}"
        )
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(source, f"field 'schema_version' is {short(version)}, not an integer")
    if version not in SUPPORTED_SCHEMAS:
        newer = version > max(SUPPORTED_SCHEMAS)
        raise ModelFileError(
            source,
            f"schema_version {short(version)} is not supported (this capplan reads "
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


# The spreads of a fit, in bytes: standard errors and standard deviations.
SPREADS = (
    "per_instance_se_bytes",
    "fixed_se_bytes",
    "residual_sd_bytes",
    "worker_sd_bytes",
    "systematic_sd_bytes",
)
MAX_FIGURE = float(2**63)
MIN_SPREAD = 1e-30


def _check_model(m: ModelFit, at: str, need: Callable[[bool, str, str], None]) -> None:
    """The checks of one fit: the top level's ``model``, or a group's."""
    need(m.per_instance_bytes > 0, f"{at}.per_instance_bytes", "must be more than 0")
    need(m.fixed_bytes >= 0, f"{at}.fixed_bytes", "must be 0 or more")
    for name in ("per_instance_ci95", "fixed_ci95"):
        low, high = getattr(m, name)
        need(low <= high, f"{at}.{name}", f"the lower end {low} is above the upper end {high}")
    for name in SPREADS:
        value = getattr(m, name)
        need(value >= 0, f"{at}.{name}", "must be 0 or more")
        # Squared (and squared again by Welch's test) these overflow above ~1e77 bytes and
        # underflow to 0 below ~1e-77, where the test divides by them: no host holds 2**63
        # bytes, and no fit of whole bytes leaves a spread of 1e-30 bytes.
        need(value <= MAX_FIGURE, f"{at}.{name}", "must be at most 2**63 bytes")
        need(value == 0 or value >= MIN_SPREAD, f"{at}.{name}", "must be 0 or at least 1e-30")
    bound = m.fixed_se_bytes * m.per_instance_se_bytes
    need(
        abs(m.fixed_slope_cov) <= bound * (1 + 1e-9) + 1,
        f"{at}.fixed_slope_cov",
        "must be at most fixed_se_bytes x per_instance_se_bytes in magnitude "
        "(a covariance is bounded by its standard errors)",
    )
    need(m.dof >= 1, f"{at}.dof", "must be at least 1 (two workers or more)")
    need(m.n_workers >= 2, f"{at}.n_workers", "must be at least 2")
    need(m.n_samples >= 1, f"{at}.n_samples", "must be at least 1")


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
    _check_model(m, "model", need)
    for index, group in enumerate(estimate.groups):
        _check_model(group.model, f"groups[{index}].model", need)
        need(group.worker_count >= 0, f"groups[{index}].worker_count", "must be 0 or more")
        need(
            group.budget.total_bytes > 0,
            f"groups[{index}].budget.total_bytes",
            "must be more than 0",
        )
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


# The largest model file capplan reads. A model saved from 2,000 processes x 10 samples
# (the committed demo model's worker record repeated: 1.28 kB per process per sample, as
# ``codec.dumps`` indents it) is 25.6 MB, and loads in 1.7 s of CPU and 100 MB of memory;
# 128 MiB is five times that. A 200 MB model took 780 MB of memory and 17 s to load (issue
# 11): bigger files are refused before they are read.
MAX_MODEL_BYTES = 128 * 1024 * 1024

# What a path that is not a regular file is, in the words of the error.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    for test, words in _FILE_KINDS:
        if test(mode):
            return words
    return "not a regular file"


def _refuse_kind(path: str, mode: int) -> None:
    kind = _not_regular(mode)
    if kind is not None:
        raise ModelFileError(
            path,
            f"is {kind}, not a model file",
            hint="give the path of a model saved with: capplan estimate ... --save",
        )


def _refuse_size(path: str, size: int) -> None:
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(
            path,
            f"is larger than {MAX_MODEL_BYTES >> 20} MiB, the most a model file may be",
            hint="a model of 2,000 processes x 10 samples is about 25 MB: is this the right file?",
        )


def read_model_bytes(path: Path) -> bytes:
    """The bytes of a model file, read with bounds: a regular file of at most MAX_MODEL_BYTES.

    The path is stat()ed before it is opened, so a device (opening ``/dev/watchdog`` arms
    it) or a FIFO is never opened; it is then opened with O_NONBLOCK (a FIFO swapped in
    meanwhile cannot hang the open) and O_NOCTTY, and the open descriptor is fstat()ed
    again, so what is read is what was checked. At most MAX_MODEL_BYTES + 1 bytes are read,
    whatever the size said: a file that grows while it is read is refused too.
    """
    name = str(path)
    try:
        _refuse_kind(name, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ModelFileError(
            name, "no such file", hint="create one with: capplan estimate ... --save"
        ) from None
    except IsADirectoryError:
        raise ModelFileError(name, "is a directory, not a model file") from None
    except OSError as err:
        raise ModelFileError(name, f"cannot read: {err.strerror or err}") from None
    except ValueError:  # an embedded NUL byte
        raise ModelFileError(name, "cannot read: the path holds a NUL byte") from None
    try:
        info = os.fstat(fd)
        _refuse_kind(name, info.st_mode)
        _refuse_size(name, info.st_size)
        chunks: list[bytes] = []
        left = MAX_MODEL_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as err:
        raise ModelFileError(name, f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    _refuse_size(name, len(data))
    return data


# A literal JSON does not have: json.loads accepts them, capplan refuses them before the
# codec (which refuses non-finite numbers too, for documents built in memory).
_STRING_OR_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')


class _Refused(ValueError):
    """Raised from the json hooks; the message is the reason, without the file name."""


def _reject_constant(literal: str) -> Any:
    raise _Refused(f"{literal} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {short(key)} appears twice in one object")
            seen.add(key)
    return obj


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    return f"line {line}, column {index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def parse_model_text(data: bytes, source: str) -> Any:
    """The JSON document in ``data``, or one-line ModelFileError: every way json.loads can
    fail (invalid UTF-8, NaN and Infinity, duplicate keys, integers longer than Python's
    int max str digits, nesting deeper than the recursion limit) says what and where."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFileError(
            source, f"not a text file: invalid UTF-8 at byte {err.start}"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise ModelFileError(
            source, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except _Refused as err:
        where = ""
        if "JSON number" in str(err):
            for match in _STRING_OR_CONSTANT.finditer(text):
                if match.group(1):
                    where = _position(text, match.start()) + ": "
                    break
        raise ModelFileError(source, f"not valid JSON ({where}{err})") from None
    except RecursionError:
        raise ModelFileError(source, "not a capplan model: nested too deeply") from None
    except ValueError:  # int() of more digits than sys.get_int_max_str_digits()
        raise ModelFileError(
            source,
            f"not a capplan model: an integer of more than {sys.get_int_max_str_digits()} digits",
        ) from None


def load_estimate(path: Path) -> Estimate:
    """Read and validate a model file; every failure is a one-line ModelFileError.

    At most MAX_MODEL_BYTES (128 MiB) of a regular file are read (``read_model_bytes``).
    """
    path = Path(path)
    data = read_model_bytes(path)
    return estimate_from_dict(parse_model_text(data, str(path)), str(path))
