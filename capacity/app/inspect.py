"""``capplan inspect``: where the workload's memory goes, a row per mapping kind or file.

Like ``pmap -X`` aggregated over every process of the workload. Each row (the executable,
each shared library by name, [heap], [stack], anonymous memory, each shmem segment, other
files) says what is paid once for the whole workload, what each worker pays on its own
(mean and max over the workers), and what is shared with the rest of the host. Rows are
sorted by what they cost at the predicted maximum worker count,
``shared_once + N_max * private_mean``: the row that matters most at scale comes first,
which is not always the largest one now.

With the exact tier (root: pagemap frames and kpagecount), every number is a count of
distinct physical pages. Without it, the rows come from /proc/PID/smaps per mapping: a
worker's private pages are exact there too, but what is paid once is the workload's
proportional share (PSS) of shared pages, and smaps cannot say who else maps a page, so
the host column stays empty. The method used is named in the output.

N_max comes from one sample: the same points ``capplan estimate`` fits, with the same
budget rules. With fewer than two workers no line can be fitted, and rows are sorted at
the current worker count instead (said so in the output).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capacity.answers import Inspection, MappingRow
from capacity.errors import ExactUnavailable, ModelError, NoSuchProcess
from capacity.measure import gentle, pages, sharing
from capacity.measure.procfs import DEFAULT_ROOT, read_exe, read_smaps
from capacity.measure.procparse import Mapping, SmapsEntry
from capacity.measure.sampler import Sampler
from capacity.measure.workload import Selector, launched_demo
from capacity.model import accounting
from capacity.model.assemble import BudgetOptions
from capacity.model.diagnostics import fallback_warning
from capacity.model.fitting import fit, make_budget, predict
from capacity.records import Method, Notice, ProcessMemory, Skipped, Snapshot, Workload

RowKey = tuple[str, str, str]  # kind, name, path

_KERNEL_MAPPINGS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]")
_SHMEM_PREFIXES = ("/dev/zero", "/SYSV", "/memfd:", "/dev/shm/", "/run/shm/")


def row_key(mapping: Mapping, executable: str | None) -> RowKey:
    """The row a mapping belongs to: (kind, display name, path)."""
    path = mapping.path
    shared = mapping.perms[3:4] == "s"
    if path == "[heap]":
        return ("heap", "[heap]", path)
    if path.startswith("[stack"):
        return ("stack", "[stack]", "[stack]")
    if path in _KERNEL_MAPPINGS:
        return ("kernel", path, path)
    if path.startswith("[anon_shmem:"):  # named shared anonymous memory (Linux 6.2+)
        return ("shmem", path, path)
    if path.startswith("[anon:"):  # named anonymous memory, PR_SET_VMA_ANON_NAME (5.17+)
        return ("anonymous", path, path)
    if path == "":
        return ("shmem", "[shared anonymous]", "") if shared else ("anonymous", "[anon]", "")
    if path.startswith("["):
        return ("kernel", path, path)
    plain = path.removesuffix(" (deleted)")
    if path.startswith(_SHMEM_PREFIXES) and (shared or "(deleted)" in path):
        return ("shmem", path, path)
    base = plain.rsplit("/", 1)[-1]
    if executable is not None and plain == executable.removesuffix(" (deleted)"):
        return ("executable", base, plain)
    if ".so" in base:
        return ("library", base, plain)
    return ("file", path, path)


class _Rows:
    """Row keys to dense ids, in first-seen order."""

    def __init__(self) -> None:
        self.ids: dict[RowKey, int] = {}

    def id(self, key: RowKey) -> int:
        return self.ids.setdefault(key, len(self.ids))

    @property
    def keys(self) -> list[RowKey]:
        return list(self.ids)


@dataclasses.dataclass(frozen=True, slots=True)
class _RowFigures:
    """Per-row figures in bytes before N_max is known."""

    key: RowKey
    rss: int
    once: int
    private: tuple[int, ...]  # one per worker
    host: int | None
    anon: int | None


def _finish(figures: _RowFigures, max_workers: int) -> MappingRow:
    private = figures.private
    mean = statistics.fmean(private) if private else 0.0
    kind, name, path = figures.key
    return MappingRow(
        kind=kind,
        name=name,
        path=path,
        rss_bytes=figures.rss,
        shared_once_bytes=figures.once,
        private_mean_bytes=round(mean),
        private_max_bytes=max(private, default=0),
        shared_host_bytes=figures.host,
        cost_at_max_bytes=round(figures.once + max_workers * mean),
        anon_bytes=figures.anon,
    )


def _executables(processes: Sequence[ProcessMemory], root: Path) -> dict[int, str | None]:
    return {p.pid: read_exe(p.pid, root) for p in processes}


def exact_rows(
    walk: pages.Walk, executables: dict[int, str | None], page_size: int
) -> tuple[list[_RowFigures], _RowFigures]:
    """Rows from an exact walk, and the whole workload as one row."""
    rows = _Rows()
    row_of_parts = []
    for process in walk.processes:
        exe = executables.get(process.pid)
        lookup = np.fromiter(
            (rows.id(row_key(m, exe)) for m in process.mappings),
            dtype=np.intp,
            count=len(process.mappings),
        )
        row_of_parts.append(lookup[process.mapping_of] if len(lookup) else process.mapping_of)
    cls = walk.classification
    row_of = np.concatenate(row_of_parts).astype(np.intp) if row_of_parts else np.empty(0, np.intp)
    per_row = sharing.row_pages(cls, row_of, len(rows.ids))
    figures = [
        _RowFigures(
            key=key,
            rss=int(per_row.rss[i]) * page_size,
            once=int(per_row.once[i]) * page_size,
            private=tuple(int(v) * page_size for v in per_row.private[i]),
            host=int(per_row.outside[i]) * page_size,
            anon=int(per_row.anon[i]) * page_size,
        )
        for i, key in enumerate(rows.keys)
    ]
    total_rows = sharing.row_pages(cls, np.zeros(len(row_of), dtype=np.intp), 1)
    total = _RowFigures(
        key=("total", "total", ""),
        rss=int(total_rows.rss[0]) * page_size,
        once=int(total_rows.once[0]) * page_size,
        private=tuple(int(v) * page_size for v in total_rows.private[0]),
        host=int(total_rows.outside[0]) * page_size,
        anon=int(total_rows.anon[0]) * page_size,
    )
    return figures, total


def smaps_rows(
    entries: Sequence[tuple[ProcessMemory, Sequence[SmapsEntry]]],
    executables: dict[int, str | None],
) -> tuple[list[_RowFigures], _RowFigures]:
    """Rows from /proc/PID/smaps of every process, when the exact tier is not available.

    Paid once: the parents' private pages plus every process's ``Pss - Private`` (the
    workload's proportional share of pages it shares), as the smaps method's fixed cost.
    """
    rows = _Rows()
    workers = [p.pid for p, _ in entries if p.role == "worker"]
    column = {pid: i for i, pid in enumerate(workers)}
    rss: dict[int, int] = {}
    once: dict[int, int] = {}
    private: dict[int, list[int]] = {}
    for process, vmas in entries:
        exe = executables.get(process.pid)
        for entry in vmas:
            row = rows.id(row_key(entry.mapping, exe))
            fields = entry.fields
            own = fields.get("private_clean_bytes", 0) + fields.get("private_dirty_bytes", 0)
            rss[row] = rss.get(row, 0) + fields.get("rss_bytes", 0)
            shared_share = max(fields.get("pss_bytes", 0) - own, 0)
            once[row] = once.get(row, 0) + shared_share + (own if process.role == "parent" else 0)
            if process.role == "worker":
                private.setdefault(row, [0] * len(workers))[column[process.pid]] += own
    figures = [
        _RowFigures(
            key=key,
            rss=rss.get(i, 0),
            once=once.get(i, 0),
            private=tuple(private.get(i, [0] * len(workers))),
            host=None,
            anon=None,
        )
        for i, key in enumerate(rows.keys)
    ]
    per_worker = [sum(f.private[w] for f in figures) for w in range(len(workers))]
    total = _RowFigures(
        key=("total", "total", ""),
        rss=sum(f.rss for f in figures),
        once=sum(f.once for f in figures),
        private=tuple(per_worker),
        host=None,
        anon=None,
    )
    return figures, total


def _read_smaps_all(
    processes: Sequence[ProcessMemory], root: Path
) -> tuple[list[tuple[ProcessMemory, list[SmapsEntry]]], list[Skipped]]:
    read, skipped = [], []
    for process in processes:
        try:
            read.append((process, read_smaps(process.pid, root, process.name)))
        except NoSuchProcess:
            skipped.append(Skipped(pid=process.pid, name=process.name, reason="vanished"))
    return read, skipped


def _max_workers(
    snapshot: Snapshot,
    method: Method,
    options: BudgetOptions,
) -> tuple[int, str]:
    """N_max from this one sample, as ``capplan estimate`` would predict it."""
    workers = len(snapshot.workers)
    try:
        calibration = accounting.slab_calibration([snapshot])
        points = accounting.points_for(method, [snapshot], calibration)
        model = fit(points, method, None)
        if snapshot.host is None:
            raise ModelError("no host memory figures")
        total = accounting.workload_totals(points)[0]
        budget = make_budget(
            snapshot.host,
            total,
            cgroup=snapshot.cgroup,
            memory=options.memory,
            reserve_bytes=options.reserve_bytes,
            reserve_fraction=options.reserve_fraction,
        )
        prediction = predict(model, budget)
    except ModelError as err:
        return workers, f"the current worker count: no prediction ({err.message})"
    return (
        prediction.max_instances,
        f"the predicted maximum ({method} method, one sample, {budget.source})",
    )


def run_inspect(selector: Selector | None, *, demo: bool = False, **options: Any) -> Inspection:
    """``capplan inspect`` as one call: ``selector``, or the demo workload started and
    always stopped; ``options`` are ``inspect_workload``'s."""
    from capacity.measure.leftovers import clean_up_after_killed_runs

    clean_up_after_killed_runs()  # what a killed capplan run left (issue 11)
    if demo:
        with launched_demo() as launched:
            return inspect_workload(Selector(pid=launched.parent_pid), **options)
    if selector is None:
        raise ValueError("give a selector, or demo=True")
    return inspect_workload(selector, **options)


def inspect_workload(
    selector: Selector,
    *,
    root: Path = DEFAULT_ROOT,
    method: Method | None = None,
    per_process: bool = False,
    budget: BudgetOptions | None = None,
    deep: bool = False,
) -> Inspection:
    """Read the workload once and break its memory down per mapping.

    ``method`` EXACT raises ExactUnavailable when the exact tier cannot run; None then
    falls back to smaps and says why in ``method_note`` and a warning. Both methods read
    every mapping of every process, so a process over ``capacity.measure.gentle``'s thresholds
    stops the command unless ``deep`` is set.
    """
    sampler = Sampler(selector, root)
    snapshot = sampler.snapshot(0)
    large = [] if deep else gentle.too_large(snapshot.processes)
    if large:
        raise gentle.refuse_mappings(large, f"capplan inspect {selector}")
    processes = sorted(snapshot.processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    executables = _executables(processes, root)
    skipped = list(snapshot.skipped)
    fallback = None
    walk = None
    if method != Method.SMAPS:
        try:
            unavailable = pages.exact_unavailable(root)
            if unavailable is not None:
                raise ExactUnavailable(unavailable)
            walked = pages.walk_workload(processes, root)
            skipped += walked.skipped
            processes = list(walked.processes)
            if walked.walk is None:
                raise ExactUnavailable(pages.parent_lost())
            walk = walked.walk
        except ExactUnavailable as err:
            if method == Method.EXACT:
                raise
            fallback = err.fallback
    note = f"fell back to smaps: {fallback.reason}" if fallback is not None else ""

    used: Method
    if walk is not None:
        used = Method.EXACT
        snapshot = dataclasses.replace(
            snapshot, processes=tuple(processes), pages=walk.counts, skipped=tuple(skipped)
        )
        figures, total = exact_rows(walk, executables, walk.counts.page_size)
    else:
        used = Method.SMAPS
        entries, lost_smaps = _read_smaps_all(processes, root)
        skipped += lost_smaps
        kept = {p.pid for p, _ in entries}
        processes = [p for p in processes if p.pid in kept]
        snapshot = dataclasses.replace(snapshot, processes=tuple(processes), skipped=tuple(skipped))
        figures, total = smaps_rows(entries, executables)

    max_workers, source = _max_workers(snapshot, used, budget or BudgetOptions())
    rows = sorted(
        (_finish(f, max_workers) for f in figures),
        key=lambda r: (-r.cost_at_max_bytes, -r.rss_bytes, r.kind, r.name),
    )
    rows = [r for r in rows if r.rss_bytes > 0 or r.cost_at_max_bytes > 0]
    warnings = []
    if fallback is not None:
        warnings.append(fallback_warning(fallback, f"capplan inspect {selector}", note))
    if skipped:
        warnings.append(
            Notice(
                code="SKIPPED_PROCESSES",
                message=f"skipped while reading: {len(skipped)} processes exited or changed",
                hint=f"if the workload was restarting, inspect it once it is steady: "
                f"capplan inspect {selector}",
            )
        )
    names = sorted({p.name for p in processes})
    return Inspection(
        workload=Workload(
            selector=str(selector),
            cgroup=sampler.target.path if sampler.target is not None else None,
            name=names[0] if len(names) == 1 else ",".join(names),
            pids=tuple(p.pid for p in processes),
            parent_pids=tuple(p.pid for p in processes if p.role == "parent"),
            worker_count=sum(p.role == "worker" for p in processes),
            exe=executables.get(processes[0].pid) if processes else None,
        ),
        method=used,
        method_note=note,
        max_workers=max_workers,
        max_workers_source=source,
        rows=tuple(rows),
        total=_finish(total, max_workers),
        pages=snapshot.pages,
        processes=tuple(processes) if per_process else (),
        skipped=tuple(skipped),
        warnings=tuple(warnings),
    )
