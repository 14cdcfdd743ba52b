"""Every value that crosses a layer, as a frozen dataclass.

Data flows one way: process records -> snapshots -> samples -> fitted model -> prediction ->
report. Each stage returns one of these records and never mutates what it was given, so a
record can be saved, reloaded and re-rendered without re-measuring (pyperf keeps its raw
values for the same reason). What predict, check and inspect answer is in ``answers``; the
JSON codec is ``codec``, the model file ``modelfile``.

Sizes are ``int`` bytes everywhere and every size field ends in ``_bytes``, so a JSON reader
never has to guess. Names read from the host (process names, command lines, file names) are
stored raw and untrusted: only ``capacity.render`` escapes them, per output format.

Schema history (bump ``SCHEMA_VERSION`` when a reader of the old version would misread the
new one; adding a field with a default does not need a bump):

* 1 -- first version: workload, samples, model, budget, prediction, estimators, warnings,
  environment, timing. Added since, with defaults: ``load``, ``drift`` and ``launch``;
  ``prediction.max_is_upper_bound``; ``ProcessMemory.instance``;
  ``Breakdown.per_instance_shared_bytes`` (launch mode and load, issue 4);
  ``Skipped.reason`` "unreadable" (a damaged captured tree, issue 11);
  ``ProcessMemory.cpu_seconds``, ``voluntary_switches`` and ``nonvoluntary_switches``,
  ``Estimate.activity`` (busy or idle) and ``Workload.cgroup`` (``--cgroup``/``--unit``,
  issue 13). A file without them reads with None: its activity is not known.
  ``groups``,
  ``workload.server``, ``pool``, ``instance``, ``rule``, ``worker_role`` and ``roles``
  (issue 13: one answer per group of a selection; ``workload.worker_count`` counts the
  worker role only). ``GroupEstimate.activity`` (each group busy or idle), and
  ``Estimate.activity`` in launch mode too, with ``Activity.unit`` "instance" there
  (issue 13; "worker" by default, as every file before it).
* 2 -- ``file_cache`` (the workload's page cache, hot and cold: ``cache_records``) and
  ``model.hot_cache_bytes``, which the conservative answer keeps resident (issue 14): a
  reader of version 1 would predict a larger conservative count from the same model.
  Version 1 files load with neither (no hot cache kept).
  Also in 2 (issue 14): ``Estimate.shared_memory`` (the ``--shm`` choice and the segments, configured
  beside touched), ``ProcessMemory.shm`` (each process's shared mappings) and
  ``Breakdown.fixed_shm_untouched_bytes``, ``model.shm_kept_bytes``; since then the conservative answer keeps each shared
  memory segment at its configured size (``--shm auto``; ``configured`` puts it in ``fixed_bytes``), and a segment's
  pages one worker touched alone count once, not per worker. A file without them reads with
  ``shared_memory`` None: its fixed cost counted the touched pages, and ``capplan check`` will
  not compare it with a measurement that moved segment pages or counted segments configured.
  Also in 2: ``probe`` (issue 14: ``--probe``, the pressure probe's steps and readings, and in
  launch mode a system-side fit through the sizes it found). A version-1 reader would drop
  it and read the probed ``launch.system_model`` as the cgroup's resident usage; files of
  version 1 read as before, with ``probe`` None.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar, Literal

from capacity.cache_records import FileCache
from capacity.shmem_records import SharedMemory, ShmMapping

SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
DOCUMENT_KIND = "capplan.estimate"


Role = Literal["parent", "worker"]


class Method(str, enum.Enum):
    """How a cost was counted: the one vocabulary of the sampler, inspect, the CLI and files.

    ``smaps`` and ``exact`` count pages per process (``--method``); ``cgroup`` and
    ``memavailable`` are launch mode's system side. A str enum, so a model file holds the
    plain word and ``model.method == "exact"`` reads as it did.
    """

    SMAPS = "smaps"
    EXACT = "exact"
    CGROUP = "cgroup"
    MEMAVAILABLE = "memavailable"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class FallbackCause(str, enum.Enum):
    """Why the exact tier did not run, so that the hint can follow the cause."""

    PERMISSION = "permission"  # not root: kpagecount unreadable, or frame numbers hidden
    NO_KPAGEFLAGS = "no_kpageflags"  # a kernel without pagemap or kpageflags
    TOO_LARGE = "too_large"  # over capacity.measure.gentle's thresholds without --deep
    PROCESS_LOST = "process_lost"  # the parent exited or changed during the walk


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ExactFallback:
    """The exact method was wanted and not used: the cause, the words, what to run next.

    ``hint`` None means the usual one (run as root, or choose --method smaps).
    """

    cause: FallbackCause
    reason: str
    hint: str | None = None


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
    instance: int | None = None  # launch mode: the instance whose process tree holds it
    # Separate regions of its address space (procparse.count_address_regions): each may need one
    # more page-table page in another instance, whose ASLR layout differs.
    address_regions: int | None = None
    # Since the process started, as read at this sample (None: not read, an older model):
    # CPU time in user and kernel mode (utime + stime of /proc/PID/stat, all threads), and
    # its main thread's context switches (/proc/PID/status). Two samples apart they tell
    # whether it ran in between (``capacity.model.activity``).
    cpu_seconds: float | None = None
    voluntary_switches: int | None = None
    nonvoluntary_switches: int | None = None
    # Its shared memory mappings (``measure/shmem``), one per segment; () where it maps
    # none, or in a file saved before issue 14.
    shm: tuple[ShmMapping, ...] = ()


KernelSource = Literal["estimate", "cgroup"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SlabCalibration:
    """How far the per-process slab estimate is trusted: ``factor`` scales every process's
    ``slab_bytes``; ``source`` says where it came from ("estimate": uncalibrated, factor 1;
    "cgroup": measured against the workload's own cgroup, see ``accounting``).
    ``SlabCalibration.UNCALIBRATED`` is the estimate as it is."""

    factor: float
    source: KernelSource

    UNCALIBRATED: ClassVar[SlabCalibration]


SlabCalibration.UNCALIBRATED = SlabCalibration(factor=1.0, source="estimate")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProcessCost:
    """What the host gets back when one process exits, by part (``accounting.process_cost``):
    its own pages (USS and private hugetlb pages) and the kernel memory no page count shows
    (page tables, kernel stack, slab as calibrated).

    ``calibrated_slab`` is the slab estimate times the calibration, not rounded: the
    breakdown's means are taken before rounding. ``slab_bytes`` is it rounded, as every
    total counts it."""

    uss_bytes: int
    private_hugetlb_bytes: int
    page_tables_bytes: int
    kernel_stack_bytes: int
    calibrated_slab: float

    @property
    def own_bytes(self) -> int:
        """The pages only this process maps: USS plus private hugetlb pages."""
        return self.uss_bytes + self.private_hugetlb_bytes

    @property
    def slab_bytes(self) -> int:
        return round(self.calibrated_slab)

    @property
    def kernel_bytes(self) -> int:
        """Page tables, kernel stack and calibrated slab."""
        return self.page_tables_bytes + self.kernel_stack_bytes + self.slab_bytes

    @property
    def total_bytes(self) -> int:
        """A worker's marginal cost: its own pages plus its kernel memory."""
        return self.own_bytes + self.kernel_bytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """A process the sampler could not use in one sample, and why."""

    pid: int
    name: str
    # "changed": its pagemap kept failing while its mappings changed (exact tier only).
    # "unreadable": a captured tree's stat that does not parse (--root only).
    reason: Literal["vanished", "zombie", "replaced", "kernel thread", "changed", "unreadable"]


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
    # The cgroup whose limit binds: a parent's smaller limit binds its children too.
    limit_path: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PageCounts:
    """One exact walk of the workload's page tables (``capacity.measure.pages``): distinct frames.

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
    # Pages mapped by each worker alone (walk order): what one more worker adds. Pages two
    # or more workers share without the parent are paid once, as in the smaps method.
    worker_private_bytes: tuple[int, ...] = ()
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
    # Charged file pages (not anon, not shmem) paid once: the parents' and those shared by
    # workers; page cache the kernel reclaims before an OOM kill (accounting keeps it apart).
    file_once_bytes: int = 0
    file_parent_only_bytes: int = 0
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
    """What was measured: the selector, the processes, and who is paid once.

    ``parent_pids`` are every process of the fixed cost (the master and the group's other
    non-worker roles), ``worker_count`` the worker role's processes only. ``server``,
    ``pool``, ``instance``, ``rule``, ``worker_role`` and ``roles`` (role name -> count, in
    the last sample) name the group the model is of (``measure/roles``); None and empty in
    files saved before issue 13. In launch mode the one role is ``instance``.
    """

    selector: str
    name: str
    pids: tuple[int, ...]
    parent_pids: tuple[int, ...]
    worker_count: int
    parent_cmdline: tuple[str, ...] = ()
    exe: str | None = None
    # --cgroup and --unit: the cgroup selected, as /proc/PID/cgroup names it.
    cgroup: str | None = None
    server: str | None = None
    pool: str | None = None
    instance: int | None = None
    rule: str | None = None
    worker_role: str | None = None
    roles: dict[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Breakdown:
    """What one worker costs, and what is paid once, split by kind."""

    per_instance_uss_bytes: int
    per_instance_page_tables_bytes: int
    per_instance_kernel_stack_bytes: int
    per_instance_slab_bytes: int
    kernel_source: KernelSource
    fixed_parent_bytes: int
    fixed_shared_bytes: int
    fixed_kernel_bytes: int
    # exact method only: pages shared with processes outside the workload, not charged
    shared_outside_bytes: int = 0
    shared_outside_pss_bytes: int = 0
    # Launch mode: pages an instance's processes share among themselves (its tree's
    # PSS - USS), which every new instance brings again.
    per_instance_shared_bytes: int = 0
    # Paid once but not in fixed: the kernel reclaims them before it OOM-kills (see
    # accounting). The parent's and the shared file pages are in these, not the two above.
    fixed_file_bytes: int = 0
    fixed_unexplained_kernel_bytes: int = 0
    # In fixed (issue 14): the shared memory segments' configured size beyond their touched
    # pages (``--shm configured``); the touched pages are in the two shared parts above.
    fixed_shm_untouched_bytes: int = 0


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
    # Paid once, not in fixed_bytes, counted by the conservative prediction only: the page
    # cache of the workload's own files and kernel memory its cgroup holds beyond its
    # processes. The kernel reclaims it before an OOM kill; a host that does runs slowly.
    reclaimable_bytes: int = 0
    # Paid once, kept by the conservative prediction only, beyond reclaimable_bytes: the hot
    # part of the workload's page cache that those do not hold already (issue 14,
    # ``FileCache.kept_bytes``). Evicting it costs refaults, not an OOM kill.
    hot_cache_bytes: int = 0
    # Paid once, kept by the conservative prediction only: shared memory segments' untouched
    # rest under ``--shm auto`` (issue 14, ``SharedMemory.kept_bytes``), which the point
    # answer leaves out because a segment may never fill.
    shm_kept_bytes: int = 0
    # Per worker: one page-table page per address region, the most a new instance's random
    # layout (ASLR) can add to the page tables measured here; the bounds add it N times.
    layout_allowance_bytes: int = 0
    # Per worker: the standard deviation of what capplan estimates rather than reads (the
    # slab estimate). Measuring more workers does not shrink it, so the bounds add it N
    # times over, not sqrt(N) times.
    systematic_sd_bytes: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """How much memory the workload may use, and where each figure came from."""

    total_bytes: int
    reserve_bytes: int
    available_bytes: int
    source: str
    reserve_source: str
    # Set when the reserve was given as a share of the budget (--reserve 10%): `capplan
    # predict` applies the same share to other host sizes instead of the same bytes.
    reserve_fraction: float | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """The answer: how many instances fit in the budget.

    ``max_is_upper_bound`` is True when workers were still growing at the last sample (no
    plateau): the per-worker cost is then a lower bound, and the counts are upper bounds.
    """

    max_instances: int
    max_instances_conservative: int | None
    room_bytes: int
    confidence: Confidence
    conservative_note: str = ""
    max_is_upper_bound: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EstimatorResult:
    """One sizing rule applied to the same measurement, for comparison."""

    per_instance_bytes: int
    max_instances: int
    fixed_bytes: int = 0
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """A warning for the reader, with the command to run next (JSON: an entry of
    ``warnings``). Not named Warning: that would shadow the builtin."""

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


# --------------------------------------------------------------------------- load, drift, launch


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoadRun:
    """A load generator capplan ran while it sampled (``--load``); times are epoch seconds.

    ``requests`` is known when the command says it (``ab -n``, ``hey -n``); with the run's
    start and end it turns growth per minute into growth per request.
    """

    command: tuple[str, ...]
    shell: bool = False
    instance: int | None = None  # launch mode: the instance it drove
    requests: int | None = None
    started_at: float
    ended_at: float | None = None  # None: still running when capplan stopped it
    exit_status: int | None = None
    stderr_tail: str = ""


ActivityState = Literal["idle", "busy", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """Did the workers serve anything while capplan sampled? (``capacity.model.activity``)

    From the CPU time and context switches of the workers present at the first and the
    last sample (same pid and start time), between those two samples. ``state`` "idle":
    none of them ran; "busy": ``busy_workers`` ran; "unknown": it cannot be told (one
    sample, no worker followed, figures not read), ``note`` says why. Rates are per second
    of the window; ``cpu_per_worker`` is CPU seconds per worker per second (1.0 is one
    CPU all the time), ``busiest_cpu`` the same for the busiest worker.

    ``unit`` "instance" in launch mode: ``workers`` and ``busy_workers`` count launched
    instances, each followed from the first sample its process tree was in (its step) to
    the last, and one ran when any of its processes ran; the rates are per instance.
    """

    state: ActivityState
    unit: Literal["worker", "instance"] = "worker"
    workers: int = 0
    busy_workers: int = 0
    duration_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_per_worker: float = 0.0
    busiest_cpu: float = 0.0
    context_switches: int = 0
    switches_per_second: float = 0.0
    switches_per_worker: float = 0.0
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Drift:
    """How each worker's private memory (USS) changed across the samples.

    Workers are followed by identity (pid, start time). ``unit`` is "worker" in attach mode
    and "instance" (a launched instance's whole process tree) in launch mode. Growth is the
    pooled within-worker slope; ``plateau`` says whether the last third of the samples is
    flat (see ``capacity.model.drift``). ``fit_from_sample`` is the first sample the prediction
    used: the plateau's samples, or only the last one while workers still grow.
    """

    unit: Literal["worker", "instance"]
    tracked: int
    samples: int
    duration_seconds: float
    first_bytes: int
    last_bytes: int
    growth_per_minute_bytes: float
    growth_p_value: float | None
    growing: bool
    plateau: bool
    plateau_bytes: int | None = None
    plateau_since_seconds: float | None = None
    plateau_growth_per_minute_bytes: float | None = None
    plateau_p_value: float | None = None
    growth_per_request_bytes: float | None = None
    requests_in_window: float | None = None
    headroom_bytes: int | None = None  # inherited (shared) anonymous memory not yet copied
    sample_more_seconds: float | None = None
    fit_from_sample: int = 0
    adjustment_bytes: int = 0  # launch mode: change of the per-instance slope from drift
    note: str = ""
    series: tuple[tuple[float, int], ...] = ()  # (seconds since first sample, mean bytes)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InstanceMemory:
    """One launched instance at one step: its process tree and what it costs."""

    number: int
    pid: int
    start_ticks: int
    pids: tuple[int, ...]
    cgroup_bytes: int | None = None  # its own cgroup's usage, when it has one
    private_bytes: int = 0  # USS summed over the tree (filled by assemble)
    # What it costs (filled by assemble): over its tree, PSS plus kernel memory, that is
    # USS, kernel memory and its share of every page it shares; the instances' costs add
    # up to the process-side total(N).
    marginal_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LaunchStep:
    """What launch mode measured with ``instances`` instances running."""

    instances: int
    sample: int  # index of its snapshot in Estimate.samples
    taken_at: float
    settle_seconds: float
    system_total_bytes: int
    mem_available_bytes: int
    members: tuple[InstanceMemory, ...]
    cgroup: CgroupMemory | None = None
    process_total_bytes: int = 0  # filled by assemble (needs the kernel calibration)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QuadraticCheck:
    """Is total(N) a line? ``fixed + b N + c N^2`` fitted to the same points.

    ``contribution_bytes`` is ``c * N^2`` at ``at_instances`` (the predicted maximum) and
    ``share`` its size relative to the line's total there; ``significant`` needs both a
    small p-value and a share over 10 %.
    """

    method: Method
    coefficient_bytes: float
    se_bytes: float | None
    p_value: float | None
    at_instances: int
    contribution_bytes: float
    share: float
    significant: bool
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """Launch mode: the command capplan started N times, and what each step measured.

    ``system_model`` is the fit of the system-side totals (the run's cgroup, or the host's
    MemAvailable delta); the Estimate's ``model`` is the process-side (smaps) fit.
    ``difference`` splits (system - process) per instance by part, in bytes.
    """

    command: str
    shell: bool
    instances: int
    settle: str
    system_source: Literal["cgroup", "memavailable"]
    cgroup_path: str | None = None
    baseline_mem_available_bytes: int
    steps: tuple[LaunchStep, ...]
    system_model: ModelFit | None = None
    quadratic: tuple[QuadraticCheck, ...] = ()
    difference: dict[str, int] = dataclasses.field(default_factory=dict)


ProbeVerdict = Literal["ok", "pressure", "refaults", "refused", "oom", "floor"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProbeStep:
    """One step of the pressure probe (issue 14): the limit set, held ``seconds``, and
    what the workload did under it.

    ``limit_bytes`` is what was written (v2 ``memory.high``, v1 ``memory.limit_in_bytes``),
    ``usage_bytes`` the cgroup's usage at the end of the hold. ``some_avg10`` is PSI's
    ``some avg10`` in percent and ``stall_share`` the share of the hold some task stalled
    on memory (the ``total`` counter's delta over the hold), both from the cgroup's
    memory.pressure (v2) or the host's /proc/pressure/memory (v1: no per-cgroup PSI).
    ``refaults`` is the delta of workingset_refault_file (pages), ``limit_hits`` of v1's
    memory.failcnt or v2's memory.events ``high``.
    """

    limit_bytes: int
    usage_bytes: int
    some_avg10: float | None
    stall_share: float | None
    refaults: int
    limit_hits: int
    verdict: ProbeVerdict
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRun:
    """One probe of one cgroup: with ``instances`` launched instances (launch mode), or
    the selected cgroup at its current worker count (attach mode).

    ``found_bytes`` is the smallest limit the workload ran under without pressure (the
    usage before the first step when the first step already showed pressure);
    ``floor_bytes`` the lowest limit the probe would set (what reclaim cannot free:
    anonymous memory, shared memory, kernel memory, plus a margin). ``knob`` is the file
    that was lowered and ``original`` its value before, written back at the end.
    """

    instances: int
    cgroup_path: str
    version: Literal[1, 2]
    knob: str
    original: str
    start_usage_bytes: int
    floor_bytes: int
    found_bytes: int
    pressure_source: Literal["cgroup", "system", "none"]
    stopped: str
    restored: bool
    steps: tuple[ProbeStep, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """What ``--probe`` did (issue 14): the rule it followed and every run.

    In launch mode ``model`` is the system-side line fitted through each step's
    ``found_bytes`` (it is also ``launch.system_model``); in attach mode one run gives
    total(N) at the current N and ``model`` is None.
    """

    mode: Literal["launch", "attach"]
    step_share: float
    hold_seconds: float
    stall_threshold: float
    refault_threshold_bytes: int
    runs: tuple[ProbeRun, ...]
    model: ModelFit | None = None


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
class DemoOptions:
    """The embedded demo workload's sizes, so ``capplan check --demo`` starts the same one."""

    shared_bytes: int = 64 * 1024 * 1024
    private_bytes: int = 16 * 1024 * 1024
    workers: int = 4
    dirty: float = 0.0
    shm_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """How the samples were taken, so that ``capplan check`` can measure the same way."""

    samples: int
    interval_seconds: float
    demo: DemoOptions | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    """The configuration that runs ``instances`` workers of a recognised program."""

    software: str  # "apache2", "php-fpm", "gunicorn", "postgres", "kubernetes"
    title: str
    instances: int
    lines: tuple[str, ...]
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerSetting:
    """One setting of the server that the answer depends on, as capplan read it.

    ``value`` is the text as configured (``16MB``), or None when capplan could not read it;
    ``source`` says where it came from ("the postmaster's command line", a file, "the
    default") or why it is unknown. Host text, stored raw.
    """

    name: str
    value: str | None
    source: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GroupEstimate:
    """One group of a selection answered on its own (issue 13): one PostgreSQL instance,
    one php-fpm pool, one apache2 server, or launch mode's instances.

    ``instance`` is the master's pid (None in launch mode), ``roles`` role name -> count and
    ``role_cost_bytes`` role name -> the summed cost of its processes in the last sample
    (USS and kernel memory: what the host gets back when they exit), both in the last
    sample; ``shared_roles`` are the fixed roles the group shares with the other groups of
    its instance (a php-fpm master of several pools), counted in each group's fixed cost.
    ``worker_count`` is the worker role's processes. ``model``, ``budget`` and
    ``prediction`` are fitted on this group's processes alone, ``suggestion`` is the
    configuration line for the conservative count (None for a program capplan does not
    recognise) and ``settings`` what it was read from.
    """

    rule: str
    instance: int | None
    server: str
    pool: str | None = None
    worker_role: str
    worker_count: int
    roles: dict[str, int]
    role_cost_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    shared_roles: tuple[str, ...] = ()
    mpm: str | None = None
    threads_per_child: int | None = None
    threads: int = 1
    pids: tuple[int, ...] = ()
    model: ModelFit
    budget: Budget
    prediction: Prediction
    suggestion: Suggestion | None = None
    settings: tuple[ServerSetting, ...] = ()
    warnings: tuple[Notice, ...] = ()
    activity: Activity | None = None  # this group's workers busy or idle (older files: None)

    @property
    def label(self) -> str:
        """How the group is named to the reader: ``php-fpm pool site1``, ``apache2 1234``."""
        if self.pool is not None:
            return f"{self.server} pool {self.pool}"
        return self.server if self.instance is None else f"{self.server} {self.instance}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """The whole result of ``capplan estimate``: also the model file's content.

    ``groups`` holds one entry per group of the selection (``GroupEstimate``): one for a
    single group, whose model and prediction are the top level's. With several groups the
    top level (``workload``, ``samples``, ``model``, ``prediction`` ...) is one group's
    whole estimate, the group with the most workers unless asked otherwise, and a
    ``SEVERAL_GROUPS`` warning names it. Files saved before issue 13 have none.
    """

    schema_version: int = SCHEMA_VERSION
    kind: str = DOCUMENT_KIND
    unit: str = "bytes"
    workload: Workload
    samples: tuple[Snapshot, ...]
    model: ModelFit
    budget: Budget
    prediction: Prediction
    estimators: dict[str, EstimatorResult]
    warnings: tuple[Notice, ...]
    environment: Environment
    timing: Timing
    load: tuple[LoadRun, ...] = ()
    drift: Drift | None = None
    launch: Launch | None = None
    measurement: Measurement | None = None
    activity: Activity | None = None  # None in older files (launch mode: before issue 13)
    groups: tuple[GroupEstimate, ...] = ()
    file_cache: FileCache | None = None  # the page cache, hot and cold (issue 14)
    # How the fixed cost counted shared memory segments (issue 14); None where no process
    # maps one, and in files saved before issue 14.
    shared_memory: SharedMemory | None = None
    probe: Probe | None = None  # --probe (issue 14); schema 2
