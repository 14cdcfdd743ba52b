"""The page cache, hot and cold (issue 14): the parsers on bytes captured on this host,
the v1 cgroup's counters read into the v2 names, the classification, what the
conservative answer keeps, the text and the model file.

The captured bytes under ``tests/fixtures/filecache/`` come from a 1 MiB file read twice
(``hot``) and one read once (``cold``) by a process in a v1 memory cgroup of its own, on
Linux 6.18: each file's ``struct cachestat``, its mincore vector, the pagemap entries of a
read-only mapping of it and the kpageflags of those frames (one per entry, same order),
its ``struct statfs``, and the cgroup's memory.stat a second apart.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, REPO

from capacity import modelfile, records
from capacity.cache_records import CachedFile, FileCache, FileProbe
from capacity.measure import filecache as measure
from capacity.measure.cgroup import read_cgroup_memory
from capacity.model import filecache
from capacity.model.fitting import predict
from capacity.records import Breakdown, CgroupMemory, Estimate, Snapshot
from capacity.render.escape import terminal_safe
from capacity.render.filecache import file_cache_lines

CAPTURED = FIXTURES / "filecache"
PAGE = 4096
MiB = 1024 * 1024


def captured(name: str) -> bytes:
    return (CAPTURED / name).read_bytes()


# --------------------------------------------------------------------------- parsers


def test_cachestat_of_the_captured_files() -> None:
    for name in ("hot", "cold"):
        found = measure.parse_cachestat(captured(f"{name}.cachestat"), PAGE)
        assert found["cache"] == MiB  # all 256 pages cached
        assert found["dirty"] == found["writeback"] == 0  # written, fsynced, then read


def test_cachestat_of_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="40 bytes"):
        measure.parse_cachestat(b"\0" * 32)


def test_cachestat_fields_in_order() -> None:
    raw = np.array([5, 4, 3, 2, 1], dtype=np.uint64).tobytes()
    assert measure.parse_cachestat(raw, 10) == {
        "cache": 50, "dirty": 40, "writeback": 30, "evicted": 20, "recently_evicted": 10,
    }  # fmt: skip


def test_mincore_resident_is_bit_zero_only() -> None:
    assert measure.resident_pages(captured("hot.mincore")) == list(range(256))
    assert measure.resident_pages(bytes([0, 1, 2, 3, 0xFE, 0xFF])) == [1, 3, 5]


def flags_of(name: str) -> dict[int, int]:
    entries = np.frombuffer(captured(f"{name}.pagemap"), dtype=np.uint64)
    flags = np.frombuffer(captured(f"{name}.kpageflags"), dtype=np.uint64)
    frames = (entries & np.uint64(measure.PM_PFN_MASK)).tolist()
    return dict(zip(frames, flags.tolist(), strict=True))


def test_active_pages_of_the_hot_file_and_none_of_the_cold() -> None:
    for name, active in (("hot", 256), ("cold", 0)):
        entries = np.frombuffer(captured(f"{name}.pagemap"), dtype=np.uint64)
        assert measure.active_count(entries, flags_of(name)) == (256, active)


def test_hidden_frames_are_not_counted() -> None:
    present_no_frame = np.array([1 << 63, 1 << 63], dtype=np.uint64)
    assert measure.active_count(present_no_frame, {}) == (0, 0)


def test_filesystem_type_of_the_captured_statfs() -> None:
    assert measure.filesystem_type(captured("hot.statfs")) == 0xEF53  # ext4
    assert 0xEF53 not in measure.IN_MEMORY_FILESYSTEMS
    assert 0x01021994 in measure.IN_MEMORY_FILESYSTEMS  # tmpfs: shared memory, not cache


def test_v1_memory_stat_reads_into_the_v2_names(tmp_path: Path) -> None:
    (tmp_path / "memory.usage_in_bytes").write_text("9000000\n")
    (tmp_path / "memory.stat").write_bytes(captured("v1-memory.stat"))
    memory = read_cgroup_memory(1, tmp_path)
    assert memory is not None
    assert memory.stat["active_file"] == MiB and memory.stat["inactive_file"] == MiB
    assert memory.stat["workingset_refault_file"] == 0  # a count, not bytes
    assert "workingset_activate_file" not in memory.stat  # v1 has none


# --------------------------------------------------------------------------- the model


def snapshot(at: float, stat: dict[str, int], own: bool = True) -> Snapshot:
    cgroup = CgroupMemory(path="/w", version=2, current_bytes=1, stat=stat, own=own)
    return Snapshot(
        index=int(at), taken_at=at, elapsed_seconds=at, read_seconds=0.0, processes=(),
        cgroup=cgroup,
    )  # fmt: skip


def test_split_moves_what_was_needed_again_to_hot() -> None:
    assert filecache.split(10, 6, 0) == (10, 6)
    assert filecache.split(10, 6, 4) == (14, 2)
    assert filecache.split(10, 6, 99) == (16, 0)  # never more than the inactive list
    assert filecache.split(10, 6, -3) == (10, 6)


def test_v2_cgroup_hot_is_active_plus_refaulted() -> None:
    first = {"active_file": 40 * MiB, "inactive_file": 60 * MiB,
             "workingset_refault_file": 1000, "workingset_activate_file": 200}  # fmt: skip
    last = {"active_file": 50 * MiB, "inactive_file": 50 * MiB, "file_mapped": 3 * MiB,
            "workingset_refault_file": 3560, "workingset_activate_file": 840}  # fmt: skip
    cache = filecache.from_cgroup([snapshot(0.0, first), snapshot(4.0, last)], PAGE)
    assert cache is not None and cache.source == "cgroup"
    refaulted = 2560 * PAGE  # 10 MiB in 4 s
    assert cache.refaulted_bytes == refaulted
    assert cache.refaults_per_second == pytest.approx(640.0)
    assert cache.activations_per_second == pytest.approx(160.0)
    assert cache.hot_bytes == 50 * MiB + refaulted and cache.cold_bytes == 50 * MiB - refaulted
    assert cache.cached_bytes == 100 * MiB and cache.mapped_bytes == 3 * MiB


def test_v1_cgroup_as_captured() -> None:
    stats = []
    for name in ("v1-memory.stat", "v1-memory.stat.later"):
        raw = dict(line.split() for line in captured(name).decode().splitlines())
        stats.append({new: int(raw[old]) for old, new in (
            ("total_active_file", "active_file"), ("total_inactive_file", "inactive_file"),
            ("total_workingset_refault_file", "workingset_refault_file"))})  # fmt: skip
    cache = filecache.from_cgroup([snapshot(0.0, stats[0]), snapshot(1.0, stats[1])], PAGE)
    assert cache is not None
    assert (cache.hot_bytes, cache.cold_bytes) == (MiB, MiB)  # the hot file and the cold
    assert cache.refaults_per_second == 0.0 and cache.activations_per_second is None


def test_a_cgroup_that_holds_more_than_the_workload_is_no_reading() -> None:
    stat = {"active_file": MiB, "inactive_file": MiB}
    assert filecache.from_cgroup([snapshot(0.0, stat, own=False)], PAGE) is None
    assert not filecache.has_own_cgroup([snapshot(0.0, stat, own=False)])
    assert filecache.has_own_cgroup([snapshot(0.0, stat)])


def cached(path: str, cached_bytes: int, active: int | None, evicted: int | None = 0,
           mapped: bool = False) -> CachedFile:  # fmt: skip
    return CachedFile(
        path=path, device=1, inode=hash(path) & 0xFFFF, size_bytes=cached_bytes,
        probed_bytes=cached_bytes, cached_bytes=cached_bytes, mapped=mapped,
        active_bytes=active, recently_evicted_bytes=evicted,
    )  # fmt: skip


def probe(*files: CachedFile, hotness: str = "kpageflags") -> FileProbe:
    return FileProbe(
        call="cachestat", hotness=hotness, files=files, files_probed=len(files),  # type: ignore[arg-type]
        max_files=10, max_bytes_per_file=MiB * 1024,
    )  # fmt: skip


def test_files_hot_is_active_pages_plus_recently_evicted() -> None:
    found = filecache.from_files(
        probe(
            cached("/hot", 32 * MiB, 32 * MiB),
            cached("/cold", 32 * MiB, 0, MiB),
            cached("/lib", 2 * MiB, MiB, mapped=True),
        )
    )
    assert found.hot_bytes == 32 * MiB + MiB + MiB  # active, plus the recently evicted MiB
    assert found.cold_bytes == 32 * MiB - MiB + MiB
    assert found.mapped_bytes == 2 * MiB and found.recently_evicted_bytes == MiB


def test_files_without_page_flags_count_every_cached_byte_hot() -> None:
    found = filecache.from_files(probe(cached("/a", 8 * MiB, None), hotness="unknown"))
    assert (found.hot_bytes, found.cold_bytes, found.hotness) == (8 * MiB, 0, "unknown")


def test_classify_prefers_the_cgroup() -> None:
    stat = {"active_file": MiB, "inactive_file": 0}
    files = probe(cached("/a", 8 * MiB, 0))
    assert filecache.classify([snapshot(0.0, stat)], files, PAGE).source == "cgroup"  # type: ignore[union-attr]
    assert filecache.classify([snapshot(0.0, stat, own=False)], files, PAGE).source == "files"  # type: ignore[union-attr]
    assert filecache.classify([snapshot(0.0, stat, own=False)], None, PAGE) is None


def committed() -> Estimate:
    return modelfile.load_estimate(REPO / "models" / "demo.json")


def test_kept_is_the_hot_part_beyond_the_file_pages_kept_already() -> None:
    base = committed()
    breakdown = base.model.breakdown
    assert isinstance(breakdown, Breakdown)
    cache = filecache.from_files(probe(cached("/hot", 200 * MiB, 200 * MiB)))
    kept = filecache.with_kept(cache, breakdown)
    assert kept.kept_bytes == 200 * MiB - breakdown.fixed_file_bytes
    small = filecache.from_files(probe(cached("/tiny", PAGE, PAGE)))
    assert filecache.with_kept(small, breakdown).kept_bytes == max(
        0, PAGE - breakdown.fixed_file_bytes
    )


def test_the_conservative_answer_keeps_the_hot_cache_and_the_point_does_not() -> None:
    base = committed()
    small_budget = dataclasses.replace(base.budget, available_bytes=base.model.fixed_bytes
                                       + 40 * base.model.per_instance_bytes)  # fmt: skip
    before = predict(base.model, small_budget)
    hot = dataclasses.replace(base.model, hot_cache_bytes=10 * base.model.per_instance_bytes)
    after = predict(hot, small_budget)
    assert after.max_instances == before.max_instances
    assert before.max_instances_conservative is not None
    assert after.max_instances_conservative is not None
    assert after.max_instances_conservative <= before.max_instances_conservative - 9
    assert "hot file cache" in after.conservative_note


# --------------------------------------------------------------------------- out


def with_cache() -> Estimate:
    cache = filecache.with_kept(
        filecache.from_files(probe(cached("/data/evil\x1b[31mname", 32 * MiB, 30 * MiB))), None
    )
    # As a run of this capplan makes it (the committed model is a version 1 file).
    return dataclasses.replace(committed(), file_cache=cache, schema_version=records.SCHEMA_VERSION)


def test_text_lines_name_hot_cold_and_escape_file_names() -> None:
    lines = file_cache_lines(with_cache().file_cache, terminal_safe)
    assert lines[0].startswith("Page cache:             hot 30.0 MiB (needed), cold 2.00 MiB")
    assert "can be reclaimed without harm" in lines[0]
    assert not any("\x1b" in line for line in lines)
    assert any("evil" in line and "30.0 MiB active" in line for line in lines)
    assert file_cache_lines(None, terminal_safe) == []


def test_model_file_round_trip_and_version_1_files_load(tmp_path: Path) -> None:
    estimate = with_cache()
    path = tmp_path / "m.json"
    modelfile.save_estimate(path, estimate)
    document = json.loads(path.read_text())
    assert document["schema_version"] == records.SCHEMA_VERSION == 2
    assert document["file_cache"]["hot_bytes"] == 30 * MiB
    assert modelfile.load_estimate(path) == estimate
    old = json.loads((REPO / "models" / "demo.json").read_text())
    assert old["schema_version"] == 1 and "file_cache" not in old
    loaded = modelfile.estimate_from_dict(old)
    assert loaded.file_cache is None and loaded.model.hot_cache_bytes == 0


def test_file_cache_record_is_frozen() -> None:
    cache = with_cache().file_cache
    assert isinstance(cache, FileCache)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cache.hot_bytes = 0  # type: ignore[misc]


def test_a_file_without_flags_counts_hot_whole_and_the_others_by_their_flags() -> None:
    found = filecache.from_files(
        probe(cached("/flagged", 10 * MiB, 2 * MiB), cached("/lost", 4 * MiB, None, None))
    )
    assert found.hotness == "kpageflags"
    assert found.hot_bytes == 2 * MiB + 4 * MiB and found.cold_bytes == 8 * MiB
    assert (found.active_bytes, found.inactive_bytes) == (2 * MiB, 8 * MiB)


def test_openmetrics_has_hot_and_cold_gauges_only_with_a_file_cache() -> None:
    from capacity.render.openmetrics import render_openmetrics

    text = render_openmetrics(with_cache())
    assert 'state="hot"} ' + str(30 * MiB) in text and 'state="cold"} ' + str(2 * MiB) in text
    assert "capplan_file_cache_bytes" not in render_openmetrics(committed())
