"""Shared memory segments (issue 14): which mappings are segments, and how the fixed cost
counts them (configured beside touched, each segment once, touched replaced not added).

The parser runs on smaps bytes as the kernel writes them (the mapping lines of a real
PostgreSQL 15 backend and an apache2 worker, sizes edited to round figures); the model on
constructed records with known figures.
"""

from __future__ import annotations

import dataclasses

import pytest

from capacity.measure import shmem as measure_shmem
from capacity.measure.procparse import parse_maps
from capacity.model import accounting, shmem
from capacity.records import MemoryRollup, ProcessMemory, Snapshot
from capacity.shmem_records import ShmMapping

KiB, MiB = 1024, 1024 * 1024


def vma(head: str, size_kb: int, rss_kb: int, pss_kb: int, private_kb: int) -> str:
    shared = rss_kb - private_kb
    return (
        f"{head}\n"
        f"Size:           {size_kb:>8} kB\n"
        "KernelPageSize:        4 kB\n"
        "MMUPageSize:           4 kB\n"
        f"Rss:            {rss_kb:>8} kB\n"
        f"Pss:            {pss_kb:>8} kB\n"
        f"Pss_Dirty:      {pss_kb:>8} kB\n"
        "Shared_Clean:          0 kB\n"
        f"Shared_Dirty:   {shared:>8} kB\n"
        "Private_Clean:         0 kB\n"
        f"Private_Dirty:  {private_kb:>8} kB\n"
        f"Referenced:     {rss_kb:>8} kB\n"
        "Anonymous:             0 kB\n"
        "KSM:                   0 kB\n"
        "LazyFree:              0 kB\n"
        "AnonHugePages:         0 kB\n"
        "ShmemPmdMapped:        0 kB\n"
        "FilePmdMapped:         0 kB\n"
        "Shared_Hugetlb:        0 kB\n"
        "Private_Hugetlb:       0 kB\n"
        "Swap:                  0 kB\n"
        "SwapPss:               0 kB\n"
        "Locked:                0 kB\n"
        "THPeligible:           0\n"
        "VmFlags: rd wr sh mr mw me ms sd \n"
    )


SMAPS = "".join(
    [
        vma(
            "55d0c4a00000-55d0c4b00000 r-xp 00000000 08:01 131        /usr/lib/postgresql/15/bin/postgres",
            1024,
            900,
            100,
            0,
        ),
        # PostgreSQL's main segment: 64 MiB mapped, 16 MiB resident here, 1 MiB alone.
        vma(
            "7f961921a000-7f961d21a000 rw-s 00000000 00:01 1112       /dev/zero (deleted)",
            65536,
            16384,
            4096,
            1024,
        ),
        # The same segment split in two VMAs (mprotect): summed into one.
        vma(
            "7f961d21a000-7f961d31a000 rw-s 04000000 00:01 1112       /dev/zero (deleted)",
            1024,
            0,
            0,
            0,
        ),
        vma(
            "7f96190f9000-7f96191f9000 rw-s 00000000 00:1b 43         /dev/shm/PostgreSQL.4287481122",
            1024,
            8,
            2,
            0,
        ),
        vma(
            "7f961e284000-7f961e285000 rw-s 00000000 00:01 19         /SYSV0020c1ca (deleted)",
            4,
            4,
            1,
            0,
        ),
        vma(
            "7f961e300000-7f961e700000 rw-s 00000000 00:01 2048       /memfd:cache (deleted)",
            4096,
            40,
            40,
            40,
        ),
        vma(
            "7f961e800000-7f961e900000 rw-s 00000000 00:01 2049       [anon_shmem:opcache]",
            1024,
            4,
            4,
            4,
        ),
        # Not segments: a private copy of a shm file, a shared mapping of an ordinary file
        # (page cache), anonymous private memory.
        vma(
            "7f961ea00000-7f961eb00000 rw-p 00000000 00:1b 44         /dev/shm/private-copy",
            1024,
            4,
            4,
            4,
        ),
        vma(
            "7f961ec00000-7f961ed00000 rw-s 00000000 08:01 777        /var/lib/data.bin",
            1024,
            1024,
            512,
            0,
        ),
        vma("7f961ee00000-7f961ef00000 rw-p 00000000 00:00 0 ", 1024, 1024, 1024, 1024),
    ]
).encode()


def test_segments_are_the_shared_shmem_mappings_only() -> None:
    found = measure_shmem.parse_shm_mappings(SMAPS)
    assert [(m.kind, m.name) for m in found] == [
        ("anonymous", "[shared anonymous]"),
        ("posix", "/dev/shm/PostgreSQL.4287481122"),
        ("sysv", "/SYSV0020c1ca"),
        ("memfd", "/memfd:cache"),
        ("anonymous", "[anon_shmem:opcache]"),
    ]
    main = found[0]
    assert main.key == "00:01:1112"
    assert (main.size_bytes, main.rss_bytes, main.pss_bytes, main.private_bytes) == (
        65 * MiB,
        16 * MiB,
        4 * MiB,
        1 * MiB,
    )
    # The same mappings as /proc/PID/maps lists them: the smaps header lines.
    heads = [line for line in SMAPS.splitlines() if b"-" in line.split(b" ")[0]]
    assert measure_shmem.maps_show_shm(parse_maps(b"\n".join(heads)))
    plain = [line for line in heads if b"/var/lib" in line or b"private-copy" in line]
    assert len(plain) == 2 and not measure_shmem.maps_show_shm(parse_maps(b"\n".join(plain)))


def test_a_hugetlb_segment_is_left_out() -> None:
    data = vma(
        "7f0000000000-7f0000200000 rw-s 00000000 00:0f 5     /SYSV00000000 (deleted)", 2048, 0, 0, 0
    )
    data = data.replace("Shared_Hugetlb:        0 kB", "Shared_Hugetlb:     2048 kB")
    assert measure_shmem.parse_shm_mappings(data.encode()) == ()


# --------------------------------------------------------------------------- the model


def member(pid: int, role: str, *, uss: int, shm: tuple[ShmMapping, ...] = ()) -> ProcessMemory:
    shm_pss = sum(m.pss_bytes - m.private_bytes for m in shm)
    rollup = MemoryRollup(
        rss_bytes=uss + 8 * MiB,
        pss_bytes=uss + shm_pss,
        private_dirty_bytes=uss,
        pss_shmem_bytes=sum(m.pss_bytes for m in shm),
    )
    return ProcessMemory(
        pid=pid,
        start_ticks=pid,
        ppid=1 if role == "parent" else 100,
        name="server",
        state="S",
        role="parent" if role == "parent" else "worker",
        threads=1,
        rollup=rollup,
        page_tables_bytes=0,
        kernel_stack_bytes=0,
        slab_bytes=0,
        shm=shm,
    )


def segment(pss: int, private: int = 0, size: int = 64 * MiB, key: str = "00:01:7") -> ShmMapping:
    return ShmMapping(
        key=key,
        kind="anonymous",
        name="[shared anonymous]",
        size_bytes=size,
        rss_bytes=pss,
        pss_bytes=pss,
        private_bytes=private,
    )


def sample() -> Snapshot:
    """A parent and 3 workers map one 64 MiB segment: 8 MiB touched by all four (2 MiB of
    PSS each), and 1 MiB more by each worker alone (in its USS of 3 MiB: 2 MiB its own
    heap). A second 16 MiB segment of the parent's alone, 4 MiB touched."""
    parent = member(
        100,
        "parent",
        uss=1 * MiB + 4 * MiB,
        shm=(segment(2 * MiB), segment(4 * MiB, 4 * MiB, 16 * MiB, "00:01:8")),
    )
    workers = [
        member(101 + i, "worker", uss=3 * MiB, shm=(segment(3 * MiB, 1 * MiB),)) for i in range(3)
    ]
    return Snapshot(
        index=0,
        taken_at=0.0,
        elapsed_seconds=0.0,
        read_seconds=0.0,
        processes=(parent, *workers),
    )


def test_each_segment_once_with_configured_beside_touched() -> None:
    found = shmem.segments(sample(), "configured")
    assert [
        (s.key, s.configured_bytes, s.touched_bytes, s.counted_bytes, s.processes) for s in found
    ] == [
        ("00:01:7", 64 * MiB, 2 * MiB + 3 * 3 * MiB, 64 * MiB, 4),
        ("00:01:8", 16 * MiB, 4 * MiB, 16 * MiB, 1),
    ]
    touched = shmem.segments(sample(), "touched")
    assert [s.counted_bytes for s in touched] == [11 * MiB, 4 * MiB]


def test_configured_replaces_touched_in_fixed_and_workers_keep_only_their_own() -> None:
    snap = sample()
    (before,) = accounting.smaps_points([snap], shm=None)  # as before issue 14
    (configured,) = accounting.smaps_points([snap], shm="configured")
    (touched,) = accounting.smaps_points([snap], shm="touched")
    (auto,) = accounting.smaps_points([snap])  # the default: the point answer as touched
    assert auto == touched
    # ... and the conservative one keeps the untouched rest of both segments.
    assert shmem.kept(snap, "auto") == (64 * MiB - 11 * MiB) + (16 * MiB - 4 * MiB)
    assert shmem.kept(snap, "configured") == shmem.kept(snap, "touched") == 0
    # Each worker's 1 MiB of the segment is paid once: out of its increment, into fixed.
    assert before.increments == (3 * MiB,) * 3
    assert configured.increments == touched.increments == (2 * MiB,) * 3
    assert touched.base == before.base + 3 * MiB
    # Configured: the untouched rest of both segments on top, never the touched part again.
    assert configured.base == touched.base + (64 * MiB - 11 * MiB) + (16 * MiB - 4 * MiB)
    # At the measured count, the whole workload holds both segments at their full size
    # once, beside the parent's 1 MiB and the workers' 2 MiB heaps.
    total = configured.base + sum(configured.increments)
    assert total == 1 * MiB + 3 * 2 * MiB + 64 * MiB + 16 * MiB
    breakdown = accounting.smaps_breakdown([snap], shm="configured")
    assert breakdown.per_instance_uss_bytes == 2 * MiB
    assert breakdown.fixed_shm_untouched_bytes == 65 * MiB
    assert breakdown.fixed_parent_bytes + breakdown.fixed_shared_bytes + 65 * MiB == (
        configured.base
    )


def test_the_summary_says_what_was_chosen_and_none_without_segments() -> None:
    summary = shmem.summary([sample()], "configured")
    assert summary is not None
    assert (summary.choice, summary.untouched_bytes, summary.moved_bytes) == (
        "configured",
        65 * MiB,
        3 * MiB,
    )
    assert shmem.summary([sample()], "touched").untouched_bytes == 0  # type: ignore[union-attr]
    plain = dataclasses.replace(
        sample(), processes=tuple(dataclasses.replace(p, shm=()) for p in sample().processes)
    )
    assert shmem.summary([plain], "configured") is None
    assert accounting.smaps_points([plain]) == accounting.smaps_points([plain], shm=None)


@pytest.mark.parametrize("choice", ["configured", "touched"])
def test_a_segment_larger_touched_than_mapped_is_never_counted_below_touched(choice: str) -> None:
    """Pss summed over kB-truncated VMAs can exceed Size by rounding only; configured is
    never below touched."""
    snap = Snapshot(
        index=0,
        taken_at=0.0,
        elapsed_seconds=0.0,
        read_seconds=0.0,
        processes=(member(100, "parent", uss=0, shm=(segment(5 * MiB, size=4 * MiB),)),),
    )
    (found,) = shmem.segments(snap, choice)  # type: ignore[arg-type]
    assert found.configured_bytes == found.counted_bytes == 5 * MiB


def test_check_compares_like_with_like() -> None:
    """A baseline saved before issue 14 counted touched pages: it is not compared with a
    measurement whose segments were counted at their configured size; nor are two
    measurements with different --shm choices."""
    from pathlib import Path

    from capacity.model.check import environment_differences
    from capacity.modelfile import load_estimate
    from capacity.shmem_records import SharedMemory

    old = load_estimate(Path(__file__).parents[2] / "models" / "demo.json")
    assert old.shared_memory is None
    filled = SharedMemory(choice="configured", untouched_bytes=64 * MiB)
    cold = SharedMemory(choice="touched")
    now = dataclasses.replace(old, shared_memory=filled)
    blocking, _ = environment_differences(old, now)
    assert any("saved before capplan counted shared memory" in r for r in blocking)
    # Nothing to count differently: no segment beyond its touched pages.
    blocking, _ = environment_differences(old, dataclasses.replace(old, shared_memory=cold))
    assert not any("shared memory" in r for r in blocking)
    blocking, _ = environment_differences(dataclasses.replace(old, shared_memory=cold), now)
    assert "baseline --shm touched, now --shm configured" in " ".join(blocking)
    assert environment_differences(now, now)[0] == []


def test_auto_keeps_the_untouched_rest_in_the_conservative_answer_only() -> None:
    """``--shm auto``: the point answer as the segments were, the conservative one as if
    every segment filled (``ModelFit.shm_kept_bytes``, kept like the hot page cache)."""
    import dataclasses

    from conftest import REPO

    from capacity import modelfile
    from capacity.model.fitting import predict

    base = modelfile.load_estimate(REPO / "models" / "demo.json")
    per = base.model.per_instance_bytes
    budget = dataclasses.replace(base.budget, available_bytes=base.model.fixed_bytes + 40 * per)
    before = predict(base.model, budget)
    kept = predict(dataclasses.replace(base.model, shm_kept_bytes=10 * per), budget)
    assert kept.max_instances == before.max_instances
    assert before.max_instances_conservative is not None
    assert kept.max_instances_conservative is not None
    assert kept.max_instances_conservative <= before.max_instances_conservative - 9
    assert "shared memory segment filled" in kept.conservative_note
