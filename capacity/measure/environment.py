"""Facts about the host and the workload that change the answer, recorded with every result.

THP mode decides whether copy-on-write copies 4 KiB or 2 MiB; KSM merges identical pages;
MALLOC_ARENA_MAX changes how much a threaded worker reserves; swap hides memory. A saved
model without these cannot be compared with a later one (``capplan check`` refuses to).
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from pathlib import Path

from capacity import __version__
from capacity.measure.cgroup import detect_layout
from capacity.measure.procfs import (
    DEFAULT_ROOT,
    read_environ_var,
    read_kernel_release,
    read_ksm_mode,
    read_meminfo,
    read_text_or,
    read_thp_mode,
)
from capacity.records import Environment


def read_environment(
    root: Path = DEFAULT_ROOT,
    *,
    workload_pid: int | None = None,
    executable: str | None = None,
    command_line: tuple[str, ...] = (),
) -> Environment:
    live = root == DEFAULT_ROOT
    host = read_meminfo(root)
    hostname = (
        socket.gethostname() if live else read_text_or(root / "proc/sys/kernel/hostname", "unknown")
    )
    return Environment(
        hostname=hostname,
        kernel=read_kernel_release(root),
        arch=platform.machine(),
        thp_enabled=read_thp_mode(root),
        ksm_run=read_ksm_mode(root),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        cpu_count=os.cpu_count() or 1,
        mem_total_bytes=host.mem_total_bytes,
        swap_total_bytes=host.swap_total_bytes,
        cgroup_version=detect_layout(root).version,
        capplan_version=__version__,
        python_version=platform.python_version(),
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command_line=command_line or tuple(sys.argv),
        malloc_arena_max=(
            read_environ_var(workload_pid, "MALLOC_ARENA_MAX", root) if workload_pid else None
        ),
        executable=executable,
    )
