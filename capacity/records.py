"""Every value that crosses a layer, as a frozen dataclass, and their versioned JSON codec.

Data flows one way: process records -> snapshots -> samples -> fitted model -> prediction ->
report. Each stage returns one of these records and never mutates what it was given, so a
record can be saved, reloaded and re-rendered without re-measuring (pyperf keeps its raw
values for the same reason).

Sizes are ``int`` bytes everywhere and every size field ends in ``_bytes``, so a JSON reader
never has to guess. Names read from the host (process names, command lines, file names) are
stored raw and untrusted: only ``report`` escapes them, per output format.

Schema history (bump ``SCHEMA_VERSION`` when a reader of the old version would misread the
new one; adding a field with a default does not need a bump):

* 1 -- first version: workload, samples, model, budget, prediction, estimators, warnings,
  environment, timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from capacity.errors import ModelFileError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = (1,)
DOCUMENT_KIND = "capplan.estimate"


Role = Literal["parent", "worker"]
Method = Literal["smaps", "exact", "cgroup", "memavailable"]
Confidence = Literal["high", "medium", "low"]


# --------------------------------------------------------------------------- per process


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemoryRollup:
    """One process's page counts from ``/proc/PID/smaps_rollup`` (or summed ``smaps``)."""

    rss_bytes: int
    pss_bytes: int
    pss_anon_bytes: int = 0  # Pss_Anon/File/Shmem: since Linux 5.3
    pss_file_bytes: int = 0
    pss_shmem_bytes: int = 0
    shared_clean_bytes: int = 0
    shared_dirty_bytes: int = 0
    private_clean_bytes: int = 0
    private_dirty_bytes: int = 0
    anonymous_bytes: int = 0
    anon_huge_bytes: int = 0
    shmem_huge_bytes: int = 0
    swap_bytes: int = 0
    swap_pss_bytes: int = 0  # since Linux 4.3
    shared_hugetlb_bytes: int = 0
    private_hugetlb_bytes: int = 0
    locked_bytes: int = 0

    @property
    def uss_bytes(self) -> int:
        """Unique set size: what the kernel frees when this process exits."""
        return self.private_clean_bytes + self.private_dirty_bytes

    @property
    def shared_bytes(self) -> int:
        return self.shared_clean_bytes + self.shared_dirty_bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessMemory:
    """One process, read once: identity, its page counts and the kernel memory it costs.

    ``kernel_stack_bytes`` and ``slab_bytes`` are estimates from the process's own figures
    (threads, mappings, open files) unless the model calibrates them from a cgroup.
    """

    pid: int
    start_ticks: int
    ppid: int
    name: str
    state: str
    role: Role
    threads: int
    rollup: MemoryRollup
    rss_anon_bytes: int = 0
    rss_file_bytes: int = 0
    rss_shmem_bytes: int = 0
    page_tables_bytes: int = 0
    kernel_stack_bytes: int = 0
    slab_bytes: int = 0
    mappings: int | None = None
    open_files: int | None = None
    source: Literal["smaps_rollup", "smaps"] = "smaps_rollup"

    @property
    def uss_bytes(self) -> int:
        return self.rollup.uss_bytes

    @property
    def kernel_bytes(self) -> int:
        """Kernel memory this process costs that no per-process page count shows."""
        return self.page_tables_bytes + self.kernel_stack_bytes + self.slab_bytes

    @property
    def marginal_bytes(self) -> int:
        """What the host gets back when this process exits: private pages plus kernel."""
        return self.rollup.uss_bytes + self.kernel_bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """A process the sampler could not use in one sample, and why."""

    pid: int
    name: str
    # "changed": its pagemap kept failing while its mappings changed (exact tier only).
    reason: Literal["vanished", "zombie", "replaced", "kernel thread", "changed"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessInfo:
    """What does not change while a process lives: read once per identity."""

    pid: int
    start_ticks: int
    ppid: int
    name: str
    cmdline: tuple[str, ...] = ()
    exe: str | None = None


# --------------------------------------------------------------------------- host


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostMemory:
    """The host's /proc/meminfo figures that the budget and the reserve need."""

    mem_total_bytes: int
    mem_available_bytes: int
    mem_free_bytes: int = 0
    swap_total_bytes: int = 0
    swap_free_bytes: int = 0
    page_tables_bytes: int = 0
    kernel_stack_bytes: int = 0
    slab_unreclaimable_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CgroupMemory:
    """A memory cgroup's own accounting, v1 or v2, in one shape.

    ``stat`` keeps the v2 names (anon, file, shmem, kernel, kernel_stack, pagetables, slab,
    sock); v1 figures are mapped onto them where v1 has an equivalent.
    """

    path: str
    version: Literal[1, 2]
    current_bytes: int
    limit_bytes: int | None = None
    peak_bytes: int | None = None
    stat: dict[str, int] = dataclasses.field(default_factory=dict)
    own: bool = False  # True when every process in it belongs to the workload


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PageCounts:
    """One exact walk of the workload's page tables (``capacity.pages``): distinct frames.

    Every physical page counts once however many processes map it. Pages also mapped by
    processes outside the workload (kpagecount above the workload's own mappings) are in
    ``shared_outside_bytes`` and in no other class: they would be in memory anyway, so
    they are not charged. ``cumulative_bytes[k]`` is the charged distinct pages of the
    parents plus the first ``k`` workers of ``pids`` (parents first, then workers in fork
    order), k = 0..workers: the exact method's ``total(k)`` before kernel memory.
    ``anon/file/shmem_bytes`` split ``distinct_bytes`` (outside-shared pages included).
    """

    page_size: int
    pids: tuple[int, ...]
    parent_count: int
    cumulative_bytes: tuple[int, ...]
    distinct_bytes: int
    parent_only_bytes: int
    shared_with_parent_bytes: int
    shared_workers_bytes: int
    private_workers_bytes: int
    shared_outside_bytes: int
    shared_outside_pss_bytes: int = 0  # the workload's proportional share of those
    anon_bytes: int = 0
    file_bytes: int = 0
    shmem_bytes: int = 0
    thp_bytes: int = 0
    ksm_bytes: int = 0
    hugetlb_bytes: int = 0
    swapped_bytes: int = 0  # in swap: not in RAM and not in any class above
    read_seconds: float = 0.0
    skipped: int = 0  # processes that exited or changed during the walk

    @property
    def charged_bytes(self) -> int:
        return self.distinct_bytes - self.shared_outside_bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One sample: every selected process read once, plus the host and cgroup around it."""

    index: int
    taken_at: float
    elapsed_seconds: float
    read_seconds: float
    processes: tuple[ProcessMemory, ...]
    skipped: tuple[Skipped, ...] = ()
    host: HostMemory | None = None
    cgroup: CgroupMemory | None = None
    pages: PageCounts | None = None  # the exact walk, on the samples that took one

    @property
    def parents(self) -> tuple[ProcessMemory, ...]:
        return tuple(p for p in self.processes if p.role == "parent")

    @property
    def workers(self) -> tuple[ProcessMemory, ...]:
        return tuple(p for p in self.processes if p.role == "worker")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What was measured: the selector, the processes, and who is the parent."""

    selector: str
    name: str
    pids: tuple[int, ...]
    parent_pids: tuple[int, ...]
    worker_count: int
    parent_cmdline: tuple[str, ...] = ()
    exe: str | None = None


# --------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Breakdown:
    """What one worker costs, and what is paid once, split by kind."""

    per_instance_uss_bytes: int
    per_instance_page_tables_bytes: int
    per_instance_kernel_stack_bytes: int
    per_instance_slab_bytes: int
    kernel_source: Literal["estimate", "cgroup"]
    fixed_parent_bytes: int
    fixed_shared_bytes: int
    fixed_kernel_bytes: int
    # exact method only: pages shared with processes outside the workload, not charged
    shared_outside_bytes: int = 0
    shared_outside_pss_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModelFit:
    """``total(N) = fixed + N * per_instance`` with its uncertainty.

    ``per_instance_ci95`` and ``fixed_ci95`` are two-sided 95 % confidence intervals of the
    coefficients. ``worker_sd_bytes`` is the spread between workers, which the conservative
    prediction adds for the N workers that will actually run.
    """

    method: Method
    fixed_bytes: int
    per_instance_bytes: int
    per_instance_ci95: tuple[int, int]
    fixed_ci95: tuple[int, int]
    per_instance_se_bytes: float
    fixed_se_bytes: float
    fixed_slope_cov: float = 0.0
    r2: float
    residual_sd_bytes: float
    worker_sd_bytes: float
    dof: int
    n_points: int
    n_workers: int
    n_samples: int
    confidence: Confidence
    confidence_reasons: tuple[str, ...] = ()
    points: tuple[tuple[int, int], ...] = ()
    breakdown: Breakdown | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """How much memory the workload may use, and where each figure came from."""

    total_bytes: int
    reserve_bytes: int
    available_bytes: int
    source: str
    reserve_source: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """The answer: how many instances fit in the budget."""

    max_instances: int
    max_instances_conservative: int | None
    room_bytes: int
    confidence: Confidence
    conservative_note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EstimatorResult:
    """One sizing rule applied to the same measurement, for comparison."""

    per_instance_bytes: int
    max_instances: int
    fixed_bytes: int = 0
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Warning:
    """Something the reader should know, with the command to run next."""

    code: str
    message: str
    hint: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """The knobs and facts that change the answer, recorded with every result."""

    hostname: str
    kernel: str
    arch: str
    thp_enabled: str
    ksm_run: str
    page_size: int
    cpu_count: int
    mem_total_bytes: int
    swap_total_bytes: int
    cgroup_version: str
    capplan_version: str
    python_version: str
    time: str
    command_line: tuple[str, ...] = ()
    malloc_arena_max: str | None = None
    executable: str | None = None
    executable_version: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """What the measurement cost (issue 7).

    ``sample_read_seconds``: per sample, the reads of every process (smaps_rollup, status,
    stat; maps once per new process), without the selection scan. ``exact_read_seconds``:
    per exact page walk, in sample order (the samples whose ``pages`` is set).
    """

    sample_read_seconds: tuple[float, ...]
    total_seconds: float
    exact_read_seconds: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """The whole result of ``capplan estimate``: also the model file's content."""

    schema_version: int = SCHEMA_VERSION
    kind: str = DOCUMENT_KIND
    unit: str = "bytes"
    workload: Workload
    samples: tuple[Snapshot, ...]
    model: ModelFit
    budget: Budget
    prediction: Prediction
    estimators: dict[str, EstimatorResult]
    warnings: tuple[Warning, ...]
    environment: Environment
    timing: Timing


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
    warnings: tuple[Warning, ...] = ()


# --------------------------------------------------------------------------- JSON codec


def to_jsonable(value: Any) -> Any:
    """A record (or anything made of records) as plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    return value


def dumps(record: Any) -> str:
    return json.dumps(to_jsonable(record), indent=2, sort_keys=False) + "\n"


T = TypeVar("T")


class DecodeError(Exception):
    """Raised by ``from_jsonable``; ``field`` is a dotted path to the offending value."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def from_jsonable(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from JSON data, checking every field's type against the annotations."""
    return typing.cast(T, _decode(cls, data, path))


def _decode(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_record(tp, data, path)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, data, path)
            except DecodeError as err:
                errors.append(err)
        raise errors[0] if errors else DecodeError(path, "must not be null")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if data not in allowed:
            raise DecodeError(path, f"expected one of {list(allowed)}, got {data!r}")
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise DecodeError(path, f"expected a list, got {_kind(data)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(data))
        if len(data) != len(args):
            raise DecodeError(path, f"expected {len(args)} items, got {len(data)}")
        return tuple(
            _decode(a, item, f"{path}[{i}]")
            for i, (a, item) in enumerate(zip(args, data, strict=False))
        )
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(data, dict):
            raise DecodeError(path, f"expected an object, got {_kind(data)}")
        return {
            str(k): _decode(value_type, v, f"{path}.{k}" if path else str(k))
            for k, v in data.items()
        }
    if tp is type(None):
        if data is not None:
            raise DecodeError(path, f"expected null, got {_kind(data)}")
        return None
    if tp is bool:
        if not isinstance(data, bool):
            raise DecodeError(path, f"expected true or false, got {_kind(data)}")
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise DecodeError(path, f"expected an integer, got {_kind(data)}")
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise DecodeError(path, f"expected a number, got {_kind(data)}")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise DecodeError(path, f"expected a string, got {_kind(data)}")
        return data
    raise DecodeError(path, f"unsupported type {tp!r}")  # a programming error, not user input


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _decode_record(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise DecodeError(path, f"expected an object, got {_kind(data)}")
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        field_path = f"{path}.{field.name}" if path else field.name
        if field.name not in data:
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise DecodeError(field_path, "missing")
        kwargs[field.name] = _decode(hints[field.name], data[field.name], field_path)
    return cls(**kwargs)


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(data), type(data).__name__
    )


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, text: str, *, force: bool = True) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename in the same directory.

    A reader never sees half a file, and a crash leaves the old file intact. With
    ``force=False`` an existing file is an error (pyperf refuses to overwrite results too).
    """
    path = Path(path)
    if not force and path.exists():
        raise ModelFileError(str(path), "already exists", hint="pass --force to replace it")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise ModelFileError(str(path), f"cannot write: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Binary sibling of ``write_atomic`` (for PNG plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_estimate(path: Path, estimate: Estimate, *, force: bool = False) -> None:
    write_atomic(path, dumps(estimate), force=force)


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
        return from_jsonable(Estimate, dict(data), "")
    except DecodeError as err:
        raise ModelFileError(source, f"field '{err.field}': {err.detail}") from None


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
