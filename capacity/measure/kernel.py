"""Kernel memory a process costs that no per-process page count shows.

Measured on this project's reference host (apache2 prefork, N = 10..150 workers), the host's
available memory fell by 437 KiB per added worker while the worker's USS was 262 KiB: page
tables 62 KiB (in /proc/PID/status as VmPTE, so we read it), kernel stack 16 KiB per thread,
and about 76 KiB of unreclaimable slab (task, mm, one vm_area per mapping, signal handlers,
open files). A USS-only model is 40 % short, so capplan adds these.

Page tables are read. The kernel stack is THREAD_SIZE per thread, a build-time constant we
know per architecture. Slab is an estimate from the process's threads and mappings and the
object sizes in /proc/slabinfo (root only; the defaults below were read from Linux 6.18 on
x86-64). Where the workload has a cgroup of its own, the model calibrates this estimate
against the cgroup's measured kernel memory instead.
"""

from __future__ import annotations

import mmap
import platform

# THREAD_SIZE per architecture (arch/*/include/asm/thread_info.h or page_*.h). x86-64 has
# used 16 KiB since Linux 3.15; arm64, ppc64 and s390x use 16 KiB too.
_STACK_SIZES = {
    "x86_64": 16384,
    "aarch64": 16384,
    "ppc64le": 16384,
    "ppc64": 16384,
    "s390x": 16384,
    "riscv64": 16384,
}
DEFAULT_STACK_SIZE = 8192


def kernel_stack_size(machine: str | None = None) -> int:
    return _STACK_SIZES.get(machine or platform.machine(), DEFAULT_STACK_SIZE)


# Slab object sizes in bytes, from /proc/slabinfo of Linux 6.18 x86-64 (column objsize).
DEFAULT_SLAB_SIZES: dict[str, int] = {
    "task_struct": 5888,
    "pid": 192,
    "mm_struct": 1600,
    "signal_cache": 1152,
    "sighand_cache": 2112,
    "files_cache": 704,
    "fs_cache": 192,
    "cred_jar": 192,
    "vm_area_struct": 192,
    "anon_vma": 104,
    "anon_vma_chain": 64,
    "maple_node": 256,
}

# Mappings per maple-tree node: a leaf holds up to 16 entries, about 10 when half full.
_VMAS_PER_MAPLE_NODE = 10


# Kernel memory every process costs beyond VmPTE, its stacks and the slab objects counted
# below: its top-level page table (the PGD is not in VmPTE, which counts the PTE, PMD and
# PUD levels: one page, two with page-table isolation) and small kmalloc allocations
# (audit, seccomp, cgroup links, credentials' security blobs). Measured on the reference
# host (Linux 6.18, x86-64, no PTI) against cgroup v1 kmem: 11.6 KiB per demo Python worker
# (1..41 workers) and 13.1 KiB per apache2 prefork worker (slope over 10..170 workers)
# beyond page tables, stacks and the slab objects below; the PGD is 4 KiB of that.
OTHER_PER_PROCESS = 8192


def top_level_page_table(page_size: int = mmap.PAGESIZE, pti: bool | None = None) -> int:
    """Bytes of a process's PGD: one page, two with page-table isolation (x86 PTI)."""
    if pti is None:
        try:
            with open("/sys/devices/system/cpu/vulnerabilities/meltdown") as handle:
                pti = "PTI" in handle.read()
        except OSError:
            pti = False
    return page_size * (2 if pti else 1)


_PGD = top_level_page_table()


def slab_estimate(
    threads: int, mappings: int, writable_private: int, sizes: dict[str, int] | None = None
) -> int:
    """Kernel memory a forked process adds beyond VmPTE and its stacks, in bytes.

    Per thread: task_struct and pid. Per process: mm, signal, sighand, files, fs, cred, its
    top-level page table and small allocations (``OTHER_PER_PROCESS``). Per mapping:
    vm_area_struct and a share of a maple-tree node. Per writable private mapping (the ones
    that hold anonymous or copied-on-write pages): an anon_vma plus two anon_vma_chain
    links, one to its own anon_vma and one to the parent's.
    """
    # Look up only the caches we use: /proc/slabinfo lists hundreds, and this runs once per
    # process per sample.
    size = (
        DEFAULT_SLAB_SIZES
        if not sizes
        else {k: sizes.get(k, v) for k, v in DEFAULT_SLAB_SIZES.items()}
    )
    threads = max(threads, 1)
    per_thread = size["task_struct"] + size["pid"]
    per_process = sum(
        size[name]
        for name in (
            "mm_struct",
            "signal_cache",
            "sighand_cache",
            "files_cache",
            "fs_cache",
            "cred_jar",
        )
    )
    per_mapping = size["vm_area_struct"] + size["maple_node"] / _VMAS_PER_MAPLE_NODE
    per_anon_mapping = size["anon_vma"] + 2 * size["anon_vma_chain"]
    total = (
        threads * per_thread
        + per_process
        + _PGD
        + OTHER_PER_PROCESS
        + mappings * per_mapping
        + writable_private * per_anon_mapping
    )
    return round(total)


def page_table_span(page_size: int = mmap.PAGESIZE) -> int:
    """Address space one last-level page-table page maps: a page of 8-byte entries, each
    mapping one page (2 MiB with 4 KiB pages, 512 MiB with 64 KiB pages)."""
    return page_size * (page_size // 8)
