"""The ``capplan`` command: thin typer commands that compose the library.

Each command parses its options, calls the library, picks a renderer and writes. Errors
the user can act on (``CapplanError``) become ``Error: ...`` and ``Hint: ...`` on stderr
with exit status 2; a regression found by ``check`` exits 1; Ctrl-C exits 130 and SIGTERM
143, after cleanup. numpy and scipy are imported inside the commands, never at module
level, so that ``capplan --help`` stays fast (issue 7).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from capacity.errors import CapplanError
from capacity.units import SizeError, parse_size, parse_size_or_percent

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

app = typer.Typer(
    name="capplan",
    help=(
        "How many workers of this program fit in this machine's memory, and how sure are we?\n\n"
        "capplan measures what one more worker really costs (its private pages plus the kernel "
        "memory every process needs) and what is paid once, fits "
        "total(N) = fixed + N * per_worker, and predicts the maximum worker count."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    text = "text"
    json = "json"


class MethodOption(str, Enum):
    smaps = "smaps"
    exact = "exact"


MethodFlag = Annotated[
    MethodOption | None,
    typer.Option(
        "--method",
        help="exact: count distinct physical pages (pagemap + kpagecount, needs root). "
        "smaps: per-process page counts. Default: exact where available, else smaps "
        "(with a warning that says why).",
    ),
]


DeepFlag = Annotated[
    bool,
    typer.Option(
        "--deep",
        help="Also walk processes over 4 GiB resident or 10,000 mappings page by page "
        "(exact method, inspect's per-mapping read). Without it they are read from "
        "smaps_rollup only: a walk holds the process's memory-map lock and can stall it.",
    ),
]


def _size_option(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_size(value)
        except SizeError as err:
            raise typer.BadParameter(str(err)) from None
    return value


def _reserve_option(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_size_or_percent(value)
        except SizeError as err:
            raise typer.BadParameter(str(err)) from None
    return value


CmdOption = Annotated[
    str | None,
    typer.Option(
        "--cmd",
        metavar="NAME",
        help="Every process named NAME (comm, argv[0] or executable), as ps -C.",
    ),
]
PidOption = Annotated[
    int | None,
    typer.Option("--pid", metavar="PID", help="That process and all its descendants."),
]
RootOption = Annotated[
    Path,
    typer.Option(
        "--root",
        metavar="DIR",
        help="Read /proc and /sys under DIR instead of / (a captured host tree).",
    ),
]
MemoryOption = Annotated[
    str | None,
    typer.Option(
        "--memory",
        metavar="SIZE",
        callback=_size_option,
        help="Size for a host with SIZE of memory (512M, 16G, 16GiB, bytes) instead of this one.",
    ),
]
ReserveOption = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        metavar="SIZE|PCT",
        callback=_reserve_option,
        help="Memory kept for everything else (2G or 10%). Default: what the rest of this host uses now.",
    ),
]


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[object]:
    """A rich progress bar on stderr, quiet when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
    with progress:
        task = progress.add_task(label, total=total)

        def advance(done: int, _total: int) -> None:
            progress.update(task, completed=done)

        yield advance


def _selector(cmd: str | None, pid: int | None, demo: bool = False) -> object:
    from capacity.workload import Selector

    given = sum(x is not None for x in (cmd, pid)) + int(demo)
    if given != 1:
        raise typer.BadParameter(
            "give exactly one selector: --cmd NAME, --pid PID"
            + (" or --demo" if demo is not None else ""),
            param_hint="--cmd / --pid",
        )
    return Selector(cmd=cmd, pid=pid)


@app.callback()
def _root() -> None:
    """How many workers of this program fit in this machine's memory, and how sure are we?"""


@app.command()
def estimate(
    cmd: CmdOption = None,
    pid: PidOption = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Start the embedded demo workload, measure it, stop it.")
    ] = False,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Snapshots to take.")] = 5,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="Seconds between snapshots.")
    ] = 1.0,
    memory: MemoryOption = None,
    reserve: ReserveOption = None,
    output_format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", metavar="FILE", help="Write the model (JSON) to FILE, e.g. models/NAME.json."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --save file.")
    ] = False,
    root: RootOption = Path("/"),
    method: MethodFlag = None,
    deep: DeepFlag = False,
) -> None:
    """Measure a running workload and predict how many workers fit.

    Example:

        capplan estimate --cmd apache2 --samples 5

        capplan estimate --pid 1234 --memory 16G --reserve 10% --format json
    """
    from capacity import assemble, records, sampler, workload
    from capacity.environment import read_environment
    from capacity.procfs import read_cmdline, read_exe

    if sum([cmd is not None, pid is not None, demo]) != 1:
        raise typer.BadParameter(
            "give exactly one of --cmd NAME, --pid PID or --demo",
            param_hint="--cmd / --pid / --demo",
        )
    if demo and root != Path("/"):
        raise typer.BadParameter(
            "--demo runs on this host; it cannot be combined with --root", param_hint="--root"
        )
    if save is not None and save.exists() and not force:
        raise CapplanError(f"{save} already exists", hint="pass --force to replace it")

    memory_bytes = parse_size(memory) if memory else None
    reserve_bytes, reserve_fraction = parse_size_or_percent(reserve) if reserve else (None, None)
    options = assemble.BudgetOptions(
        memory=memory_bytes,
        memory_text=memory,
        reserve_bytes=reserve_bytes,
        reserve_fraction=reserve_fraction,
        reserve_text=reserve,
    )
    started = time.monotonic()

    with contextlib.ExitStack() as stack:
        if demo:
            launched = stack.enter_context(workload.launched_demo())
            selector = workload.Selector(pid=launched.parent_pid)
            selector_text = "--demo"
        else:
            selector = workload.Selector(cmd=cmd, pid=pid)
            selector_text = str(selector)
        first = workload.select_processes(selector, root)
        parent_pid = first.parents[0].pid if first.parents else first.members[0].pid
        try:
            parent_cmdline = read_cmdline(parent_pid, root)
        except CapplanError:
            parent_cmdline = ()
        exe = read_exe(parent_pid, root)
        exact_mode: sampler.ExactMode = (
            "auto" if method is None else "require" if method == MethodOption.exact else "off"
        )
        reader = sampler.Sampler(selector, root, exact=exact_mode, deep=deep)
        with _progress(output_format == Format.text, samples, "sampling") as advance:
            snapshots = sampler.collect(
                selector,
                samples,
                interval,
                root=root,
                on_progress=advance,  # type: ignore[arg-type]
                sampler=reader,
            )
        environment = read_environment(root, workload_pid=parent_pid, executable=exe)
    fallback = reader.exact_unavailable if exact_mode == "auto" else None
    if exact_mode != "off" and fallback is None and not any(s.pages for s in snapshots):
        fallback = "no exact page walk was usable (the parent exited or changed during it)"
        if exact_mode == "require":
            raise CapplanError(f"exact page accounting failed: {fallback}")
    result = assemble.build_estimate(
        workload=assemble.describe_workload(selector_text, snapshots, exe, parent_cmdline),
        snapshots=snapshots,
        environment=environment,
        budget_options=options,
        total_seconds=time.monotonic() - started,
        samples_requested=samples,
        method=None if exact_mode != "off" else "smaps",
        exact_fallback=fallback,
    )
    from capacity import report

    _write(report.RENDERERS[output_format.value](result))
    if save is not None:
        records.save_estimate(save, result, force=force)
        typer.echo(f"Saved the model to {save}", err=True)


@app.command()
def inspect(
    cmd: CmdOption = None,
    pid: PidOption = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Start the embedded demo workload, inspect it, stop it.")
    ] = False,
    per_process: Annotated[
        bool,
        typer.Option(
            "--per-process", help="Add the per-process table (RSS, PSS, USS, shared, swap, ...)."
        ),
    ] = False,
    output_format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    method: MethodFlag = None,
    memory: MemoryOption = None,
    reserve: ReserveOption = None,
    root: RootOption = Path("/"),
    deep: DeepFlag = False,
) -> None:
    """Show where a workload's memory goes: a row per library, file, heap, stack, shmem...

    Each row says what is paid once for the whole workload, what each worker pays (mean
    and max), and what is shared with the rest of the host, sorted by what the row costs
    at the predicted maximum worker count.

    Example:

        capplan inspect --cmd apache2

        capplan inspect --pid 1234 --per-process --format json

        capplan inspect --demo
    """
    from capacity import inspection, report, workload

    if sum([cmd is not None, pid is not None, demo]) != 1:
        raise typer.BadParameter(
            "give exactly one of --cmd NAME, --pid PID or --demo",
            param_hint="--cmd / --pid / --demo",
        )
    if demo and root != Path("/"):
        raise typer.BadParameter(
            "--demo runs on this host; it cannot be combined with --root", param_hint="--root"
        )
    reserve_bytes, reserve_fraction = parse_size_or_percent(reserve) if reserve else (None, None)
    with contextlib.ExitStack() as stack:
        if demo:
            launched = stack.enter_context(workload.launched_demo())
            selector = workload.Selector(pid=launched.parent_pid)
        else:
            selector = workload.Selector(cmd=cmd, pid=pid)
        result = inspection.inspect_workload(
            selector,
            root=root,
            method="auto" if method is None else method.value,
            per_process=per_process,
            memory=parse_size(memory) if memory else None,
            reserve_bytes=reserve_bytes,
            reserve_fraction=reserve_fraction,
            deep=deep,
        )
    _write(report.INSPECT_RENDERERS[output_format.value](result))


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (capplan ... | head): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    from capacity.report import terminal_safe

    sys.stderr.write(f"Error: {terminal_safe(message)}\n")
    if hint:
        sys.stderr.write(f"Hint: {terminal_safe(hint)}\n")
    raise SystemExit(code)


def _install_signal_handlers() -> None:
    """Ctrl-C and SIGTERM become exceptions that unwind through every cleanup block.

    They derive from BaseException, so no ``except Exception`` swallows them, and they are
    not KeyboardInterrupt, so click does not turn them into its own "Aborted!" with status 1
    (1 means "regression" here).
    """
    import signal

    from capacity.errors import Interrupted, Terminated

    def on_int(signum: int, frame: object) -> None:
        raise Interrupted()

    def on_term(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the typer app and map every outcome to an exit status."""
    from capacity.errors import Interrupted, Terminated

    _install_signal_handlers()
    try:
        app(args=argv, prog_name="capplan")
    except Interrupted:
        sys.stderr.write("Interrupted: every process capplan started was stopped.\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Terminated:
        sys.stderr.write("Terminated: every process capplan started was stopped.\n")
        raise SystemExit(EXIT_TERMINATED) from None
    except CapplanError as err:
        if os.environ.get("CAPPLAN_DEBUG"):
            raise
        _fail(err.message, err.hint, EXIT_ERROR)
    raise SystemExit(EXIT_OK)
