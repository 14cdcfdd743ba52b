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
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from capacity.errors import CapplanError
from capacity.units import (
    SizeError,
    parse_percent,
    parse_size,
    parse_size_list,
    parse_size_or_percent,
)

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from capacity.app.estimate import Progress
    from capacity.measure.workload import Selector
    from capacity.records import Method

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


class EstimateFormat(str, Enum):
    text = "text"
    json = "json"
    openmetrics = "openmetrics"


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


def _checked_by(parse: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """A typer callback that rejects what ``parse`` cannot read as a usage error (exit 2),
    and passes the text on: commands parse it again where they use it."""

    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except SizeError as err:
                raise typer.BadParameter(str(err)) from None
        return value

    return check


_size_option = _checked_by(parse_size)
_reserve_option = _checked_by(parse_size_or_percent)
_size_list_option = _checked_by(parse_size_list)
_percent_option = _checked_by(parse_percent)


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
        exists=True,
        file_okay=False,
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


def _progress(enabled: bool) -> Progress:
    """A rich progress bar on stderr, quiet when stderr is not a terminal."""

    @contextlib.contextmanager
    def bar(total: int, label: str) -> Iterator[Callable[[int, int], None]]:
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
    samples: Annotated[
        int, typer.Option("--samples", metavar="K", min=1, help="Snapshots to take.")
    ] = 5,
    interval: Annotated[
        float, typer.Option("--interval", metavar="S", min=0.0, help="Seconds between snapshots.")
    ] = 1.0,
    memory: MemoryOption = None,
    reserve: ReserveOption = None,
    output_format: Annotated[
        EstimateFormat, typer.Option("--format", help="Output format.")
    ] = EstimateFormat.text,
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
    launch: Annotated[
        str | None,
        typer.Option(
            "--launch",
            metavar="COMMAND",
            help="Start COMMAND once per step, up to --instances copies, and measure each "
            "step. {i} is the instance number, {port} a free loopback port per instance.",
        ),
    ] = None,
    instances: Annotated[
        int,
        typer.Option("--instances", metavar="N", help="--launch: how many copies to start."),
    ] = 4,
    shell: Annotated[
        bool,
        typer.Option(
            "--shell", help="Run --launch and --load with /bin/sh -c, not split by shlex."
        ),
    ] = False,
    settle: Annotated[
        float | None,
        typer.Option(
            "--settle",
            metavar="SECONDS",
            help="--launch: wait this long after each start (default: until its memory "
            "stops changing).",
        ),
    ] = None,
    settle_timeout: Annotated[
        float,
        typer.Option(
            "--settle-timeout",
            metavar="SECONDS",
            help="--launch: give up on an instance that has not settled after this long.",
        ),
    ] = 60.0,
    load: Annotated[
        str | None,
        typer.Option(
            "--load",
            metavar="COMMAND",
            help="Run this load generator while sampling (with --launch: one per instance, "
            "{port} is its port), e.g. 'ab -n 20000 -c 16 http://127.0.0.1:8080/'.",
        ),
    ] = None,
    warmup: Annotated[
        float,
        typer.Option(
            "--warmup",
            metavar="SECONDS",
            min=0.0,
            help="Seconds between starting the load and the first sample.",
        ),
    ] = 0.0,
    deep: DeepFlag = False,
) -> None:
    """Measure a running workload and predict how many workers fit.

    Example:

        capplan estimate --cmd apache2 --samples 5

        capplan estimate --pid 1234 --memory 16G --reserve 10% --format json

        capplan estimate --cmd apache2 --load 'ab -n 50000 -c 8 http://127.0.0.1/' --samples 30

        capplan estimate --launch 'redis-server --port {port} --save ""' --instances 4

        capplan estimate --demo --save models/demo.json
    """
    from capacity import modelfile
    from capacity.app.estimate import EstimateOptions, run_estimate
    from capacity.measure.launch import LaunchOptions
    from capacity.model.assemble import BudgetOptions
    from capacity.records import DemoOptions
    from capacity.render import report

    _one_of(
        {
            "--cmd NAME": cmd is not None,
            "--pid PID": pid is not None,
            "--demo": demo,
            "--launch COMMAND": launch is not None,
        }
    )
    if (demo or launch is not None or load is not None) and root != Path("/"):
        raise typer.BadParameter(
            "--demo, --launch and --load run on this host; they cannot be combined with --root",
            param_hint="--root",
        )
    if save is not None:
        _check_save_target(save, force)
    if launch is not None and method is not None:
        raise typer.BadParameter(
            "--launch measures each instance's process tree with smaps and the cgroup; "
            "--method applies to --cmd, --pid and --demo",
            param_hint="--method",
        )
    launch_options = None
    if launch is not None:
        launch_options = LaunchOptions(
            command=launch,
            instances=instances,
            shell=shell,
            settle=settle,
            settle_timeout=settle_timeout,
            load=load,
            warmup=warmup,
            samples=samples,
            interval=interval,
        )
    result = run_estimate(
        EstimateOptions(
            selector=_selector(cmd, pid),
            demo=DemoOptions() if demo else None,
            launch=launch_options,
            samples=samples,
            interval=interval,
            root=root,
            method=_method(method),
            budget=BudgetOptions.parse(memory, reserve),
            load=load if launch is None else None,
            shell=shell,
            warmup=warmup,
            deep=deep,
            command_line=_command_line(),
        ),
        progress=_progress(output_format == EstimateFormat.text),
    )
    rendered = report.RENDERERS[output_format.value](result)
    if save is not None:
        # Save before printing: a save that fails must leave stdout empty, as every error does.
        modelfile.save_estimate(save, result, force=force)
        typer.echo(f"Saved the model to {save}", err=True)
    _write(rendered)


def _one_of(given: dict[str, bool]) -> None:
    """The selection rule of every command that measures: exactly one selector."""
    if sum(given.values()) != 1:
        names = list(given)
        listed = ", ".join(names[:-1]) + " or " + names[-1]
        hint = " / ".join(name.split()[0] for name in names)
        raise typer.BadParameter(f"give exactly one of {listed}", param_hint=hint)


def _selector(cmd: str | None, pid: int | None) -> Selector | None:
    from capacity.measure.workload import Selector

    return Selector(cmd=cmd, pid=pid) if cmd is not None or pid is not None else None


def _method(option: MethodOption | None) -> Method | None:
    from capacity.records import Method

    return None if option is None else Method(option.value)


def _command_line() -> tuple[str, ...]:
    """The command as typed; argv[0] is capplan whether run as a script or python -m capacity."""
    return ("capplan", *sys.argv[1:])


def _check_save_target(save: Path, force: bool) -> None:
    """Refuse a --save FILE that cannot be written before measuring, not after."""
    if save.exists() and not force:
        raise CapplanError(f"{save} already exists", hint="pass --force to replace it")
    if save.is_dir():
        raise CapplanError(f"{save} is a directory", hint="give a file name: models/NAME.json")
    existing = save.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CapplanError(
            f"cannot write {save}: {existing} is not a writable directory",
            hint="choose a file under a directory you can write, e.g. models/NAME.json",
        )


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
    from capacity.app.inspect import run_inspect
    from capacity.model.assemble import BudgetOptions
    from capacity.render import report

    _one_of({"--cmd NAME": cmd is not None, "--pid PID": pid is not None, "--demo": demo})
    if demo and root != Path("/"):
        raise typer.BadParameter(
            "--demo runs on this host; it cannot be combined with --root", param_hint="--root"
        )
    result = run_inspect(
        _selector(cmd, pid),
        demo=demo,
        root=root,
        method=_method(method),
        per_process=per_process,
        budget=BudgetOptions.parse(memory, reserve),
        deep=deep,
    )
    _write(report.INSPECT_RENDERERS[output_format.value](result))


ModelArgument = Annotated[
    Path,
    typer.Argument(
        metavar="MODEL", help="A model file saved by capplan estimate --save (models/NAME.json)."
    ),
]


@app.command()
def predict(
    model: ModelArgument,
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            metavar="SIZES",
            callback=_size_list_option,
            help="Host sizes to predict for, comma-separated (8G,16G,32G). "
            "Default: the model's own budget.",
        ),
    ] = None,
    reserve: Annotated[
        str | None,
        typer.Option(
            "--reserve",
            metavar="SIZE|PCT",
            callback=_reserve_option,
            help="Memory kept for everything else on each host (2G or 10%). Default: the "
            "reserve measured with the model, in bytes (or its share, if saved as one).",
        ),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            "--instances",
            metavar="N",
            min=0,
            help="The reverse question: how much memory N workers need, with its interval.",
        ),
    ] = None,
    output_format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
) -> None:
    """Predict from a saved model for other host sizes or worker counts, without measuring.

    Example:

        capplan predict models/demo.json --memory 8G,16G,32G,64G

        capplan predict models/demo.json --memory 16G --reserve 10% --instances 200
    """
    from capacity import modelfile
    from capacity.model import whatif
    from capacity.model.assemble import BudgetOptions
    from capacity.render import predict as report_predict
    from capacity.units import parse_size_list

    estimate = modelfile.load_estimate(model)
    kept = BudgetOptions.parse(reserve=reserve)
    result = whatif.what_if(
        estimate,
        source=str(model),
        memories=parse_size_list(memory) if memory else (),
        instances=instances,
        reserve_bytes=kept.reserve_bytes,
        reserve_fraction=kept.reserve_fraction,
        reserve_text=reserve,
    )
    render = report_predict.render_whatif_json if output_format == Format.json else None
    _write((render or report_predict.render_whatif_text)(result))


class ReportFormat(str, Enum):
    markdown = "markdown"
    html = "html"
    openmetrics = "openmetrics"
    text = "text"
    json = "json"


_SUFFIX_FORMATS = {
    ".md": ReportFormat.markdown,
    ".markdown": ReportFormat.markdown,
    ".html": ReportFormat.html,
    ".htm": ReportFormat.html,
    ".prom": ReportFormat.openmetrics,
    ".om": ReportFormat.openmetrics,
    ".txt": ReportFormat.text,
    ".json": ReportFormat.json,
}


@app.command("report")
def report_command(
    model: ModelArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (written atomically; a Markdown report gets its plot as "
            "FILE's name with .png beside it). Default: stdout.",
        ),
    ] = None,
    output_format: Annotated[
        ReportFormat | None,
        typer.Option(
            "--format",
            help="Output format. Default: from FILE's suffix (.md, .html, .prom), else markdown.",
        ),
    ] = None,
) -> None:
    """Render a saved model as a report (Markdown, HTML) or as OpenMetrics for Prometheus.

    Example:

        capplan report models/demo.json -o reports/demo.md

        capplan report models/demo.json -o reports/demo.html

        capplan report models/demo.json --format openmetrics -o /var/lib/node_exporter/textfile/capplan.prom
    """
    from capacity import modelfile
    from capacity import output as files

    to_stdout = output is None or str(output) == "-"
    if output_format is None:
        if to_stdout or output is None:
            output_format = ReportFormat.markdown
        else:
            suffix = output.suffix.lower()
            if suffix not in _SUFFIX_FORMATS:
                raise CapplanError(
                    f"cannot tell the format from {output}",
                    hint="name the file .md, .html or .prom, or pass --format",
                )
            output_format = _SUFFIX_FORMATS[suffix]
    estimate = modelfile.load_estimate(model)
    png: bytes | None = None
    png_path: Path | None = None
    if output_format in (ReportFormat.markdown, ReportFormat.html):
        from capacity.render import document as report_document

        if output_format == ReportFormat.markdown and not to_stdout and output is not None:
            png_path = output.with_suffix(".png")
        text, png = report_document.render(
            estimate,
            output_format.value,
            source=str(model),
            png_name=png_path.name if png_path is not None else None,
        )
    else:
        from capacity.render import report

        text = report.RENDERERS[output_format.value](estimate)
    if to_stdout or output is None:
        _write(text)
        return
    try:
        if png is not None and png_path is not None:
            files.write_bytes_atomic(png_path, png)
        files.write_atomic(output, text, force=True)
    except OSError as err:
        raise CapplanError(f"cannot write {output}: {err.strerror}") from None
    typer.echo(f"Wrote {output}" + (f" and {png_path}" if png is not None else ""), err=True)


@app.command("check")
def check_command(
    baseline: Annotated[
        Path,
        typer.Argument(metavar="BASELINE", help="The baseline model (models/NAME.json)."),
    ],
    cmd: CmdOption = None,
    pid: PidOption = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Start the embedded demo workload (with the baseline's sizes)."
        ),
    ] = False,
    current: Annotated[
        Path | None,
        typer.Option(
            "--current",
            metavar="FILE",
            help="Compare with this saved model instead of measuring now.",
        ),
    ] = None,
    max_increase: Annotated[
        str | None,
        typer.Option(
            "--max-increase",
            metavar="PCT",
            callback=_percent_option,
            help="Largest increase that still passes, as a share of the baseline "
            "(default 5% when --max-increase-bytes is not given either).",
        ),
    ] = None,
    max_increase_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-increase-bytes",
            metavar="SIZE",
            callback=_size_option,
            help="Largest increase that still passes, in bytes (256K). With --max-increase "
            "too, a change must exceed both to fail.",
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", min=1, help="Snapshots to take. Default: the baseline's."),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval", min=0.0, help="Seconds between snapshots. Default: the baseline's."
        ),
    ] = None,
    allow_env_change: Annotated[
        bool,
        typer.Option(
            "--allow-env-change",
            help="Compare even when the method, THP mode or schema differ from the baseline.",
        ),
    ] = False,
    output_format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.text,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", metavar="FILE", help="Also write the result as JUnit XML."),
    ] = None,
    root: RootOption = Path("/"),
) -> None:
    """Measure again and fail when the workload got heavier than its baseline (the CI gate).

    Exit status: 0 within tolerance, 1 on a regression (larger than the tolerance and
    statistically significant), 2 when it could not measure, the pair is not comparable or
    the result is inconclusive.

    Example:

        capplan check models/demo.json --demo

        capplan check models/app.json --cmd gunicorn --max-increase 5% --junit capplan.xml
    """
    from capacity import modelfile
    from capacity import output as files
    from capacity.app.check import measure_like
    from capacity.model import check
    from capacity.render import check as report_check

    base = modelfile.load_estimate(baseline)
    tolerance = check.parse_tolerance(max_increase, max_increase_bytes)
    if current is not None:
        if cmd is not None or pid is not None or demo:
            raise typer.BadParameter(
                "give either --current FILE or a selector to measure, not both",
                param_hint="--current",
            )
        now = modelfile.load_estimate(current)
        current_source = str(current)
    else:
        _one_of(
            {
                "--cmd NAME": cmd is not None,
                "--pid PID": pid is not None,
                "--demo": demo,
                "--current FILE": False,
            }
        )
        now = measure_like(
            base,
            source=str(baseline),
            selector=_selector(cmd, pid),
            demo=demo,
            samples=samples,
            interval=interval,
            root=root,
            command_line=_command_line(),
            progress=_progress(output_format == Format.text),
        )
        current_source = "measured now"
    verdict = check.compare(
        base,
        now,
        tolerance,
        baseline_source=str(baseline),
        current_source=current_source,
        allow_env_change=allow_env_change,
    )
    if output_format == Format.json:
        _write(report_check.render_verdict_json(verdict))
    else:
        _write(report_check.render_verdict_text(verdict))
    if junit is not None:
        try:
            files.write_atomic(junit, report_check.render_junit(verdict), force=True)
        except OSError as err:
            raise CapplanError(f"cannot write {junit}: {err.strerror}") from None
    if verdict.status == "regression":
        raise typer.Exit(EXIT_REGRESSION)
    if verdict.status == "not_comparable":
        _fail("not comparable: " + "; ".join(verdict.not_comparable), verdict.hint, EXIT_ERROR)
    if verdict.status == "inconclusive":
        _fail(
            "inconclusive: a change beyond the tolerance that the measurements' spread "
            "cannot confirm",
            verdict.hint,
            EXIT_ERROR,
        )


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (capplan ... | head): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    from capacity.render.report import terminal_safe

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
