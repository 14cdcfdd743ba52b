"""The workload's page cache, hot and cold, as the estimate's text lines (issue 14).

File names are host text: they reach the reader only through the ``escape`` given.
"""

from __future__ import annotations

from collections.abc import Callable

from capacity.cache_records import FileCache
from capacity.units import format_bytes

SHOWN_FILES = 3


def _rate(value: float | None, what: str) -> str | None:
    return None if value is None else f"{value:,.1f} {what}/s"


def file_cache_lines(cache: FileCache | None, escape: Callable[[str], str]) -> list[str]:
    """A line for hot and cold, the evidence, what the answers keep, the files probed."""
    if cache is None:
        return []
    if cache.source == "cgroup":
        where = f"the workload's cgroup {escape(cache.cgroup or '?')}"
    else:
        probe = cache.probe
        call = probe.call if probe is not None else "?"
        flags = " and page flags" if cache.hotness == "kpageflags" else ""
        where = f"the files it holds open or maps ({call}{flags})"
    lines = [
        f"Page cache:             hot {format_bytes(cache.hot_bytes)} (needed), cold "
        f"{format_bytes(cache.cold_bytes)} (can be reclaimed without harm), of "
        f"{format_bytes(cache.cached_bytes)} cached; from {where}"
    ]
    evidence = []
    if cache.active_bytes is not None and cache.inactive_bytes is not None:
        evidence.append(
            f"active {format_bytes(cache.active_bytes)}, inactive "
            f"{format_bytes(cache.inactive_bytes)}"
        )
    rates = [
        r
        for r in (
            _rate(cache.refaults_per_second, "refaults"),
            _rate(cache.activations_per_second, "activations"),
        )
        if r is not None
    ]
    if rates:
        evidence.append(" and ".join(rates) + f" while sampling ({cache.window_seconds:.1f} s)")
    if cache.recently_evicted_bytes is not None:
        evidence.append(
            f"recently evicted {format_bytes(cache.recently_evicted_bytes)} (would refault)"
        )
    if cache.mapped_bytes is not None:
        evidence.append(f"mapped {format_bytes(cache.mapped_bytes)}")
    if evidence:
        lines.append("    evidence: " + "; ".join(evidence))
    lines.append(f"    rule: {cache.rule}")
    lines.append(
        f"    the conservative answer keeps {format_bytes(cache.kept_bytes)} of it resident "
        "(the hot part beyond the file pages it keeps already); the point answer none "
        "(page cache is reclaimed before an OOM kill)"
    )
    probe = cache.probe
    if probe is not None:
        counts = f"{probe.files_probed:,} files probed, {probe.skipped:,} entries skipped"
        if probe.truncated:
            counts += f", {probe.truncated:,} probed up to {format_bytes(probe.max_bytes_per_file)}"
        if probe.over_limit:
            counts += f", {probe.over_limit:,} left out past {probe.max_files:,} files"
        lines.append(f"    {counts} in {probe.read_seconds:.2f} s; most cached:")
        for found in probe.files[:SHOWN_FILES]:
            active = (
                "" if found.active_bytes is None else f", {format_bytes(found.active_bytes)} active"
            )
            how = "mapped" if found.mapped else "read"
            lines.append(
                f"      {escape(found.path)}: {format_bytes(found.cached_bytes)} cached{active} "
                f"({how})"
            )
    if cache.note:
        lines.append(f"    ({escape(cache.note)})")
    return lines
