"""capplan's own words on the terminal: output on stdout, messages on stderr, signals.

The command's output and every message pass here, so that a closed or full stdout or
stderr, a reader that went away, host text with escape sequences in a path, Ctrl-C and
SIGTERM are each handled once, for every command, by ``capacity.cli.main``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from capacity.errors import CapplanError


def say(text: str) -> None:
    """A line for the user on stderr; paths in it came from the user or the host."""
    from capacity.render.escape import terminal_safe

    stderr(terminal_safe(text) + "\n")


def write(text: str) -> None:
    """The command's output on stdout. A reader that went away (``capplan ... | head``) is
    not an error of ours; a full device or a closed stdout is, in one line."""
    stream = sys.stdout
    if stream is None:  # started with stdout closed (>&-)
        raise CapplanError(
            "cannot write the output: standard output is closed",
            hint="send it somewhere, e.g. capplan ... > capplan.txt",
        )
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        silence_stdout()
    except OSError as err:
        silence_stdout()
        raise CapplanError(f"cannot write to standard output: {err.strerror}") from None


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's last flush at exit cannot fail too."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def stderr(text: str) -> None:
    """stderr may be closed or full as well: then the exit status is all that is said."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(text)
        sys.stderr.flush()


def fail(message: str, hint: str | None, code: int) -> NoReturn:
    from capacity.render.escape import terminal_safe

    stderr(f"Error: {terminal_safe(message)}\n")
    if hint:
        stderr(f"Hint: {terminal_safe(hint)}\n")
    raise SystemExit(code)


# Signals received. The exception a handler raises is lost when it lands in a weakref
# callback (seen: SIGTERM during an import, in importlib's _get_module_lock callback:
# "Exception ignored in ..."), and the command then runs on to its end: main() reads this to
# exit with the signal's status all the same (a fresh-clone CI run, 2026-12-03).
RECEIVED: list[int] = []


def install_signal_handlers() -> None:
    """Ctrl-C and SIGTERM become exceptions that unwind through every cleanup block.

    They derive from BaseException, so no ``except Exception`` swallows them, and they are
    not KeyboardInterrupt, so click does not turn them into its own "Aborted!" with status 1
    (1 means "regression" here).
    """
    import signal

    from capacity.errors import Interrupted, Terminated

    def on_int(signum: int, frame: object) -> None:
        RECEIVED.append(signum)
        raise Interrupted()

    def on_term(signum: int, frame: object) -> None:
        RECEIVED.append(signum)
        raise Terminated()

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)
