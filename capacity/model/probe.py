"""The pressure probe's part of the model (issue 14): which total(k) the system-side fit
goes through when ``--probe`` ran.

In launch mode each step k was probed: the smallest cgroup size the k instances ran in
without pressure replaces the cgroup's usage as total(k) (usage counts cold page cache
that reclaim takes back without harm). A step without a probe keeps its usage. In attach
mode one probe gives total(N) at the current N only: it is reported beside the fit, not
fitted (one point has no slope).
"""

from __future__ import annotations

from collections.abc import Sequence

from capacity.records import LaunchStep, ProbeRun


def probed_totals(steps: Sequence[LaunchStep], runs: Sequence[ProbeRun]) -> list[float]:
    """total(k) per step: the probe's size where step k was probed, else the usage."""
    found = {run.instances: run.found_bytes for run in runs}
    return [float(found.get(step.instances, step.system_total_bytes)) for step in steps]


def reclaimable_share(run: ProbeRun) -> float:
    """The share of the usage at the start that the workload did without."""
    if run.start_usage_bytes <= 0:
        return 0.0
    return max(run.start_usage_bytes - run.found_bytes, 0) / run.start_usage_bytes
