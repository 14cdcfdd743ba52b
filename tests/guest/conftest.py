"""The guest tests (issue 12): markers, and skipping v2 tests outside a pure cgroup v2 host.

``guest``: host-side tests that boot scripts/guest. ``v2``: tests that need a pure cgroup v2
host with the memory controller enabled at the root, as root (they create cgroups under
/sys/fs/cgroup); they run inside the guest and skip elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CGROUP = Path("/sys/fs/cgroup")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "guest: boots the cgroup v2 guest (scripts/guest)")
    config.addinivalue_line("markers", "v2: needs a pure cgroup v2 host with memory, as root")


def pure_v2_reason() -> str | None:
    """Why this host cannot run the v2 tests, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    if not (CGROUP / "cgroup.controllers").exists():
        return "/sys/fs/cgroup is not a cgroup v2 root (hybrid or v1)"
    if any(
        line.split()[2].startswith("cgroup") and line.split()[2] != "cgroup2"
        for line in Path("/proc/mounts").read_text().splitlines()
    ):
        return "a cgroup v1 hierarchy is mounted: not pure v2"
    if "memory" not in (CGROUP / "cgroup.subtree_control").read_text().split():
        return "the memory controller is not enabled in the root's cgroup.subtree_control"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = pure_v2_reason()
    for item in items:
        path = Path(str(item.fspath))
        if here / "v2" in path.parents:
            item.add_marker(pytest.mark.v2)
            if reason is not None:
                item.add_marker(
                    pytest.mark.skip(reason=f"v2 test outside a pure v2 host: {reason}")
                )
        elif here in path.parents:
            item.add_marker(pytest.mark.guest)
