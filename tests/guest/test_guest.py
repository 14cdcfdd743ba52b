"""Boot the pure cgroup v2 guest once and run the v2 tests inside it (issue 12).

Inside: tests/guest/v2 (live v2 cgroups: attach by --cgroup, check, --probe by --unit,
launch, NO_CGROUP as nobody; and the OOM truth on v2 for three validation workloads). Measured on this machine kind under TCG:
boot about 25 s, the live tests 2 min 41 s, the whole suite 8-10 min (docs/guest.md).
Skipped only when the runner's packages are missing; CI installs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUEST = REPO / "scripts" / "guest"
# Boot (about 40-95 s under TCG) plus the v2 suite; issue 12 allows the guest suite 15 minutes.
TIMEOUT = 22 * 60  # 577 s on a quiet host; 817 s timed out in CI after issue 14's merges


def _missing() -> list[str]:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("guest_runner", str(GUEST))
    spec = importlib.util.spec_from_loader("guest_runner", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    missing: list[str] = module.missing_packages()
    if not (REPO / ".venv" / "bin" / "vng").exists() and not any(
        (Path(d) / "vng").exists() for d in os.environ.get("PATH", "").split(":") if d
    ):
        missing.append("virtme-ng (pip)")
    return missing


def test_v2_suite_passes_in_guest(capsys: pytest.CaptureFixture[str]) -> None:
    missing = _missing()
    if missing:
        pytest.skip(f"guest runner's packages missing: {', '.join(missing)}")
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    start = time.monotonic()
    result = subprocess.run(
        [
            str(GUEST),
            "--memory",
            "2G",
            "--cpus",
            "2",
            "--timeout",
            str(TIMEOUT - 30),
            "--",
            # pytest captures into unlinked temp files, which 9p (/tmp here) cannot truncate.
            "env",
            "TMPDIR=/dev/shm",
            str(python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-m",
            "v2",
            "-v",
            "-rs",
            "tests/guest/v2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    elapsed = time.monotonic() - start
    # Past pytest's capture, pass or fail: the CI log shows each v2 test run in the guest.
    with capsys.disabled():
        sys.stdout.write("\n" + result.stdout)
        sys.stderr.write(result.stderr)
        print(f"guest suite: {elapsed:.0f} s wall, boot included", flush=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
