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
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from capacity import cli_options as opt
from capacity import cli_terminal as terminal
from capacity.errors import CapplanError
from capacity.render.progress import progress_bar
from capacity.units import (
    parse_size_list,
)

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
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


@app.callback()
def _root() -> None:
    """How many workers of this program fit in this machine's memory, and how sure are we?"""


@app.command()
def estimate(
    cmd: opt.CmdOption = None,
    pid: opt.PidOption = None,
    cgroup: opt.CgroupOption = None,
    unit: opt.UnitOption = None,
    demo: opt.EstimateDemo = False,
    samples: opt.EstimateSamples = 5,
    interval: opt.EstimateInterval = 1.0,
    memory: opt.MemoryOption = None,
    reserve: opt.ReserveOption = None,
    output_format: opt.EstimateOutputFormat = opt.EstimateFormat.text,
    save: opt.EstimateSave = None,
    force: opt.EstimateForce = False,
    root: opt.RootOption = Path("/"),
    method: opt.MethodFlag = None,
    launch: opt.EstimateLaunch = None,
    instances: opt.EstimateInstances = 4,
    shell: opt.EstimateShell = False,
    settle: opt.EstimateSettle = None,
    settle_timeout: opt.EstimateSettleTimeout = 60.0,
    load: opt.EstimateLoad = None,
    warmup: opt.EstimateWarmup = 0.0,
    deep: opt.DeepFlag = False,
    shm: opt.ShmFlag = opt.ShmOption.auto,
    probe: opt.ProbeFlag = False,
) -> None:
    """Measure a running workload and predict how many workers fit.

    Example:

        capplan estimate --cmd apache2 --samples 5

        capplan estimate --pid 1234 --memory 16G --reserve 10% --format json

        capplan estimate --unit php8.2-fpm --samples 10

        capplan estimate --cgroup /system.slice/nginx.service --format json

        capplan estimate --cmd apache2 --load 'ab -n 50000 -c 8 http://127.0.0.1/' --samples 30

        capplan estimate --launch 'redis-server --port {port} --save ""' --instances 4

        capplan estimate --demo --save models/demo.json

        capplan estimate --unit php8.2-fpm --load 'ab -n 20000 http://127.0.0.1/' --probe
    """
    from capacity import output as files
    from capacity.app.estimate import EstimateOptions, run_estimate
    from capacity.codec import dumps
    from capacity.measure.launch import LaunchOptions
    from capacity.measure.probe import ProbeRule
    from capacity.model.assemble import BudgetOptions
    from capacity.records import DemoOptions
    from capacity.render import report

    _one_of(
        {
            **_selectors(cmd, pid, cgroup, unit),
            "--demo": demo,
            "--launch COMMAND": launch is not None,
        }
    )
    if (demo or launch is not None or load is not None) and root != Path("/"):
        raise typer.BadParameter(
            "--demo, --launch and --load run on this host; they cannot be combined with --root",
            param_hint="--root",
        )
    # Every output is planned before measuring: a target that cannot be written fails first.
    saved = files.plan(save, force=force) if save is not None else None
    if launch is not None and method is not None:
        raise typer.BadParameter(
            "--launch measures each instance's process tree with smaps and the cgroup; "
            "--method applies to --cmd, --pid, --cgroup, --unit and --demo",
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
            selector=_selector(cmd, pid, cgroup, unit),
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
            shm=shm.value,
            command_line=_command_line(),
            probe=ProbeRule() if probe else None,
        ),
        progress=progress_bar(output_format == opt.EstimateFormat.text),
    )
    rendered = report.RENDERERS[output_format.value](result)
    if saved is not None:
        # Save before printing: a save that fails must leave stdout empty, as every error does.
        files.write(saved, dumps(result))
        terminal.say(f"Saved the model to {save}")
    terminal.write(rendered)


def _selectors(
    cmd: str | None, pid: int | None, cgroup: str | None, unit: str | None
) -> dict[str, bool]:
    """The selectors every measuring command takes, for ``_one_of``: which were given."""
    return {
        "--cmd NAME": cmd is not None,
        "--pid PID": pid is not None,
        "--cgroup PATH": cgroup is not None,
        "--unit NAME": unit is not None,
    }


def _one_of(given: dict[str, bool]) -> None:
    """The selection rule of every command that measures: exactly one selector."""
    if sum(given.values()) != 1:
        names = list(given)
        listed = ", ".join(names[:-1]) + " or " + names[-1]
        hint = " / ".join(name.split()[0] for name in names)
        raise typer.BadParameter(f"give exactly one of {listed}", param_hint=hint)


def _selector(
    cmd: str | None, pid: int | None, cgroup: str | None = None, unit: str | None = None
) -> Selector | None:
    """The one selector given (``_one_of`` checked there is at most one), or None."""
    from capacity.measure.workload import Selector

    if not any(_selectors(cmd, pid, cgroup, unit).values()):
        return None
    return Selector(cmd=cmd, pid=pid, cgroup=cgroup, unit=unit)


def _method(option: opt.MethodOption | None) -> Method | None:
    from capacity.records import Method

    return None if option is None else Method(option.value)


def _command_line() -> tuple[str, ...]:
    """The command as typed; argv[0] is capplan whether run as a script or python -m capacity."""
    return ("capplan", *sys.argv[1:])


@app.command()
def inspect(
    cmd: opt.CmdOption = None,
    pid: opt.PidOption = None,
    cgroup: opt.CgroupOption = None,
    unit: opt.UnitOption = None,
    demo: opt.InspectDemo = False,
    per_process: opt.InspectPerProcess = False,
    output_format: opt.InspectOutputFormat = opt.Format.text,
    method: opt.MethodFlag = None,
    memory: opt.MemoryOption = None,
    reserve: opt.ReserveOption = None,
    root: opt.RootOption = Path("/"),
    deep: opt.DeepFlag = False,
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
    from capacity.render import inspect

    _one_of({**_selectors(cmd, pid, cgroup, unit), "--demo": demo})
    if demo and root != Path("/"):
        raise typer.BadParameter(
            "--demo runs on this host; it cannot be combined with --root", param_hint="--root"
        )
    result = run_inspect(
        _selector(cmd, pid, cgroup, unit),
        demo=demo,
        root=root,
        method=_method(method),
        per_process=per_process,
        budget=BudgetOptions.parse(memory, reserve),
        deep=deep,
    )
    terminal.write(inspect.INSPECT_RENDERERS[output_format.value](result))


@app.command()
def predict(
    model: opt.ModelArgument,
    memory: opt.PredictMemory = None,
    reserve: opt.PredictReserve = None,
    instances: opt.PredictInstances = None,
    output_format: opt.PredictOutputFormat = opt.Format.text,
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
    render = report_predict.render_whatif_json if output_format == opt.Format.json else None
    terminal.write((render or report_predict.render_whatif_text)(result))


@app.command()
def plan(
    models: opt.PlanModels,
    memory: opt.PlanMemory = None,
    reserve: opt.PlanReserve = None,
    counts: opt.PlanSet = None,
    weights: opt.PlanWeight = None,
    output_format: opt.PlanOutputFormat = opt.Format.text,
) -> None:
    """Plan one host of several pools: how many workers of each fit together.

    Each pool's fixed cost is paid once; the pools keep the ratio of workers they were
    measured at unless --set pins one or --weight changes its share. The conservative
    answer bounds the total over the pools at 95%, not each pool.

    Example:

        capplan plan models/web.json models/php.json --memory 8G

        capplan plan models/web.json models/php.json --memory 16G --set php=20 --format json
    """
    from capacity.app.plan import PlanOptions, run_plan
    from capacity.render.plan import PLAN_RENDERERS

    result = run_plan(
        PlanOptions(
            models=tuple(models),
            memory=memory,
            reserve=reserve,
            counts=tuple(counts or ()),
            weights=tuple(weights or ()),
        )
    )
    terminal.write(PLAN_RENDERERS[output_format.value](result))


@app.command("report")
def report_command(
    model: opt.ModelArgument,
    output: opt.ReportOutput = None,
    output_format: opt.ReportOutputFormat = None,
    force: opt.ReportForce = False,
) -> None:
    """Render a saved model as a report (Markdown, HTML) or as OpenMetrics for Prometheus.

    Example:

        capplan report models/demo.json -o reports/demo.md

        capplan report models/demo.json -o reports/demo.html

        capplan report models/demo.json --format openmetrics -o /var/lib/node_exporter/textfile/capplan.prom
    """
    from capacity import modelfile
    from capacity import output as files
    from capacity.app.report import format_for, render_report

    fmt = format_for(
        None if output is None or str(output) == "-" else output,
        output_format.value if output_format else None,
    )
    target = files.plan(output, force=force, inputs=[model], example="reports/NAME.md")
    # A Markdown report written to a file gets its plot beside it, by the same policy.
    beside = None
    if fmt == "markdown" and target.kind in ("new", "replace") and output is not None:
        beside = files.plan(output.with_suffix(".png"), force=force, inputs=[model])
    estimate = modelfile.load_estimate(model)
    rendered = render_report(
        estimate, fmt, source=str(model), output=output if beside is not None else None
    )
    if target.kind == "stdout":
        terminal.write(rendered.text)
        return
    if rendered.png is not None and beside is not None:
        files.write(beside, rendered.png)
    files.write(target, rendered.text)
    also = f" and {rendered.png_path}" if rendered.png is not None else ""
    terminal.say(f"Wrote {output}{also}")


@app.command("check")
def check_command(
    baseline: opt.CheckBaseline,
    cmd: opt.CmdOption = None,
    pid: opt.PidOption = None,
    cgroup: opt.CgroupOption = None,
    unit: opt.UnitOption = None,
    demo: opt.CheckDemo = False,
    current: opt.CheckCurrent = None,
    max_increase: opt.CheckMaxIncrease = None,
    max_increase_bytes: opt.CheckMaxIncreaseBytes = None,
    samples: opt.CheckSamples = None,
    interval: opt.CheckInterval = None,
    allow_env_change: opt.CheckAllowEnvChange = False,
    output_format: opt.CheckOutputFormat = opt.Format.text,
    junit: opt.CheckJunit = None,
    force: opt.CheckForce = False,
    root: opt.RootOption = Path("/"),
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

    inputs = [baseline, *([current] if current is not None else [])]
    junit_target = (
        files.plan(junit, force=force, inputs=inputs, example="capplan.xml") if junit else None
    )
    base = modelfile.load_estimate(baseline)
    tolerance = check.parse_tolerance(max_increase, max_increase_bytes)
    if current is not None:
        if any(_selectors(cmd, pid, cgroup, unit).values()) or demo:
            raise typer.BadParameter(
                "give either --current FILE or a selector to measure, not both",
                param_hint="--current",
            )
        now = modelfile.load_estimate(current)
        current_source = str(current)
    else:
        _one_of(
            {
                **_selectors(cmd, pid, cgroup, unit),
                "--demo": demo,
                "--current FILE": False,
            }
        )
        now = measure_like(
            base,
            source=str(baseline),
            selector=_selector(cmd, pid, cgroup, unit),
            demo=demo,
            samples=samples,
            interval=interval,
            root=root,
            command_line=_command_line(),
            progress=progress_bar(output_format == opt.Format.text),
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
    if output_format == opt.Format.json:
        terminal.write(report_check.render_verdict_json(verdict))
    else:
        terminal.write(report_check.render_verdict_text(verdict))
    if junit_target is not None:
        files.write(junit_target, report_check.render_junit(verdict))
    if verdict.status == "regression":
        raise typer.Exit(EXIT_REGRESSION)
    if verdict.status == "not_comparable":
        terminal.fail(
            "not comparable: " + "; ".join(verdict.not_comparable), verdict.hint, EXIT_ERROR
        )
    if verdict.status == "inconclusive":
        terminal.fail(
            "inconclusive: a change beyond the tolerance that the measurements' spread "
            "cannot confirm",
            verdict.hint,
            EXIT_ERROR,
        )


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the typer app and map every outcome to an exit status.

    The one top-level guard: an error the user can act on, an interrupt, and any OSError
    that escaped (a full or closed stdout or stderr while typer prints help or a usage
    error) all end in one line and a status, never a traceback.
    """
    from capacity.errors import Interrupted, Terminated

    terminal.install_signal_handlers()
    try:
        try:
            app(args=argv, prog_name="capplan")
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stdout.flush()
    except Interrupted:
        terminal.stderr("Interrupted: every process capplan started was stopped.\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Terminated:
        terminal.stderr("Terminated: every process capplan started was stopped.\n")
        raise SystemExit(EXIT_TERMINATED) from None
    except CapplanError as err:
        if os.environ.get("CAPPLAN_DEBUG"):
            raise
        terminal.fail(err.message, err.hint, EXIT_ERROR)
    except OSError as err:
        if os.environ.get("CAPPLAN_DEBUG"):
            raise
        terminal.silence_stdout()
        terminal.fail(f"cannot write: {err.strerror or err}", None, EXIT_ERROR)
    if terminal.RECEIVED:  # its exception was swallowed: the command ran on to its end
        import signal

        name = "Interrupted" if terminal.RECEIVED[0] == signal.SIGINT else "Terminated"
        terminal.stderr(f"{name}: every process capplan started was stopped.\n")
        raise SystemExit(
            EXIT_INTERRUPTED if terminal.RECEIVED[0] == signal.SIGINT else EXIT_TERMINATED
        )
    raise SystemExit(EXIT_OK)
