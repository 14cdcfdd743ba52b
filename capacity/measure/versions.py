"""The workload's own version, for the model file, where asking is cheap and known to be safe.

A baseline measured with apache2 2.4.57 and checked against 2.4.62 may differ for that
reason alone, so the model records the version. Asking means running the program, so
capplan only runs the version flag of servers it recognises (``apache2 -v``,
``php-fpm8.2 -v``, ``postgres --version``, ``gunicorn --version``), with no shell, no
standard input, a minimal environment and a short timeout; never an unknown program.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

TIMEOUT_SECONDS = 2.0
MAX_LENGTH = 200

_FLAGS = {"apache2": "-v", "php-fpm": "-v", "postgres": "--version", "gunicorn": "--version"}
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def version_command(
    software: str | None, exe: str | None, cmdline: Sequence[str] = ()
) -> list[str] | None:
    """The command that prints the version, or None when there is no safe way to ask."""
    if software not in _FLAGS or not exe or exe.endswith(" (deleted)"):
        return None
    flag = _FLAGS[software]
    if software != "gunicorn":
        return [exe, flag]
    # gunicorn is a Python script run by an interpreter: ask the same script.
    if os.path.basename(exe) == "gunicorn":
        return [exe, flag]
    args = list(cmdline[1:])
    if len(args) >= 2 and args[0] == "-m" and args[1] == "gunicorn":
        return [exe, "-m", "gunicorn", flag]
    if args and os.path.basename(args[0]) == "gunicorn" and os.path.isabs(args[0]):
        return [exe, args[0], flag]
    return None


def detect_version(
    software: str | None,
    exe: str | None,
    cmdline: Sequence[str] = (),
    timeout: float = TIMEOUT_SECONDS,
) -> str | None:
    """The first line the program prints for its version flag, or None."""
    command = version_command(software, exe, cmdline)
    if command is None:
        return None
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=_ENV,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for stream in (completed.stdout, completed.stderr):
        for line in stream.decode("utf-8", "replace").splitlines():
            if line.strip():
                return line.strip()[:MAX_LENGTH]
    return None
