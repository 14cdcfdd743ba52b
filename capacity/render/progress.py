"""The progress bar on stderr while capplan samples or launches."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

ProgressCallback = Callable[[int, int], None]


def progress_bar(enabled: bool) -> Callable[[int, str], AbstractContextManager[ProgressCallback]]:
    """A rich progress bar on stderr, quiet when stderr is not a terminal."""

    @contextlib.contextmanager
    def bar(total: int, label: str) -> Iterator[ProgressCallback]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            # isatty, not console.is_terminal: rich answers yes under FORCE_COLOR or
            # TTY_COMPATIBLE (set by many CI systems), and a bar in a captured log is noise.
            disable=not (enabled and sys.stderr.isatty()),
        )
        with progress:
            task = progress.add_task(label, total=total)
            yield lambda done, _total: progress.update(task, completed=done)

    return bar
