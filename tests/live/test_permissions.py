"""capplan run as an unprivileged user on a root-owned workload: a clear error, never zero.

The kernel shows /proc/PID/stat and status to everyone but smaps_rollup and maps only to
who may ptrace the process. Summing what can be read would give a silently wrong answer;
capplan must stop with one ``Error:`` line that says permission denied and a ``Hint:``
that says to run as the workload's user or as root.

We run capplan as ``nobody`` through ``runuser``. This host's Python may live under a
directory ``nobody`` cannot enter (pyenv under /root, mode 700); then we bind-mount the
interpreter's prefix at a readable path inside a private mount namespace (``unshare -m``),
which changes nothing outside the test's own process.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, needs_root, start_demo

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("runuser") is None, reason="runuser (util-linux) missing"),
]

PROBE = "import capacity.cli, numpy, scipy.stats, typer, tabulate"


def _readable_copy(directory: Path) -> Path:
    """A copy of the package that ``nobody`` may read, whatever the checkout's modes."""
    source = directory / "src"
    shutil.copytree(REPO / "capacity", source / "capacity", ignore=shutil.ignore_patterns("*.pyc"))
    for path in [directory, *directory.rglob("*")]:
        mode = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            mode |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IWUSR
        path.chmod(mode)
    return source


def _as_nobody(directory: Path, source: Path) -> list[str] | None:
    """The command prefix that runs this Python as ``nobody`` with ``source`` importable."""
    direct = [
        "runuser",
        "-u",
        "nobody",
        "--",
        "env",
        f"PYTHONPATH={source}",
        sys.executable,
    ]
    if subprocess.run([*direct, "-c", PROBE], capture_output=True).returncode == 0:
        return direct
    if shutil.which("unshare") is None:
        return None
    # The interpreter's prefix is not readable by nobody (pyenv under /root): show it, and
    # the site-packages in use (a virtual environment's too, as CI runs the tests in one),
    # at readable paths inside a private mount namespace.
    prefix = Path(sys.base_prefix)
    executable = Path(sys.executable).resolve()
    if not executable.is_relative_to(prefix):
        return None
    mounts = [(prefix, directory / "python")]
    paths = [str(source)]
    for number, site in enumerate(p for p in sys.path if p.endswith("site-packages")):
        if Path(site).is_relative_to(prefix):
            paths.append(str(directory / "python" / Path(site).relative_to(prefix)))
        else:
            mounts.append((Path(site), directory / f"site{number}"))
            paths.append(str(directory / f"site{number}"))
    for _, target in mounts:
        target.mkdir()
        target.chmod(0o755)
    binds = " && ".join(f"mount --bind {src} {dst}" for src, dst in mounts)
    inner = (
        f"{binds} && exec runuser -u nobody -- env PYTHONPATH={':'.join(paths)} "
        f'{directory / "python" / executable.relative_to(prefix)} "$@"'
    )
    wrapped = ["unshare", "-m", "--propagation", "private", "sh", "-c", inner, "sh"]
    if subprocess.run([*wrapped, "-c", PROBE], capture_output=True).returncode == 0:
        return wrapped
    return None


@pytest.fixture(scope="module")
def nobody_python() -> Iterator[list[str]]:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this host")
    directory = Path(tempfile.mkdtemp(prefix="capplan-nobody-"))
    try:
        command = _as_nobody(directory, _readable_copy(directory))
        if command is None:
            pytest.skip("cannot make this Python runnable as nobody")
        yield command
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("selector", ["--pid", "--cmd"])
def test_unreadable_workload_is_an_error_not_zero(nobody_python: list[str], selector: str) -> None:
    with start_demo("--shared", "4M", "--private", "2M", "--workers", "2") as w:
        assert os.stat(f"/proc/{w.parent}").st_uid == 0
        target = str(w.parent)
        if selector == "--cmd":
            # The demo's comm name; other root-owned processes of that name are unreadable
            # too, so whichever capplan reads first must stop it the same way.
            target = Path(f"/proc/{w.parent}/comm").read_text().strip()
        result = subprocess.run(
            [*nobody_python, "-m", "capacity", "estimate", selector, target, "--samples", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "permission denied" in errors[0]
    assert "/smaps_rollup" in errors[0]
    hints = [line for line in lines if line.startswith("Hint:")]
    assert len(hints) == 1 and "as root" in hints[0]
