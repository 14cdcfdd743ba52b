"""The typer declarations of capplan's options: types, help texts, bounds and validators.

``capacity.cli`` declares the commands with these; keeping them here leaves cli.py to the
commands, the selection rule and the exit codes. Every numeric option is bounded (a
sampling run of a million samples, or an interval of ``inf``, is a typing mistake, not a
request), and sizes are checked by the same parsers the commands use, so bad input is a
usage error (exit 2) before anything is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from capacity.units import (
    SizeError,
    parse_percent,
    parse_size,
    parse_size_list,
    parse_size_or_percent,
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


class ShmOption(str, Enum):
    auto = "auto"
    configured = "configured"
    touched = "touched"


ShmFlag = Annotated[
    ShmOption,
    typer.Option(
        "--shm",
        help="How shared memory segments (SysV, POSIX /dev/shm, memfd, shared anonymous: "
        "PostgreSQL's shared_buffers, opcache, apache2's scoreboard) count in the fixed "
        "cost. auto: the point answer counts the pages resident when sampled, the "
        "conservative one every segment at its mapped size, as it will be once filled. "
        "configured: both at the mapped size, for a segment you know fills (shared_buffers "
        "smaller than the data). touched: both as resident, for a segment you know stays "
        "cold.",
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


ProbeFlag = Annotated[
    bool,
    typer.Option(
        "--probe",
        help="Pressure probe (off by default): while the load runs, lower the workload's "
        "cgroup limit step by step (v2 memory.high and memory.reclaim, v1 "
        "memory.limit_in_bytes), stop at the first stall or refault rise and write the "
        "original back; the smallest size without pressure is reported (attach mode, "
        "--cgroup or --unit: at the current worker count) or fitted as total(k) on the "
        "system side (--launch: after each step).",
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


# Bounds on the numeric options: beyond them a value is a typing mistake, not a request.
MAX_SAMPLES = 100_000  # a day at one snapshot per second
MAX_INSTANCES = 1_000  # launch mode starts this many copies of a server
MAX_SECONDS = 86_400.0  # intervals, settle times and warm-ups: a day at most
MAX_WORKERS = 10**9  # predict --instances


def _finite(value: float | None) -> float | None:
    """Reject nan (typer's range check lets it through: every comparison with nan is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


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
CgroupOption = Annotated[
    str | None,
    typer.Option(
        "--cgroup",
        metavar="PATH",
        help="Every process in that cgroup and below, v1 or v2, PATH as /proc/PID/cgroup "
        "shows it (/system.slice/nginx.service), with or without the mount point. Its memory "
        "cgroup calibrates the kernel part and its limit is the budget.",
    ),
]
UnitOption = Annotated[
    str | None,
    typer.Option(
        "--unit",
        metavar="NAME",
        help="A systemd unit's processes: its cgroup (NAME.service without a suffix), found "
        "in the cgroup tree, so systemd need not run; then as --cgroup.",
    ),
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


ModelArgument = Annotated[
    Path,
    typer.Argument(
        metavar="MODEL", help="A model file saved by capplan estimate --save (models/NAME.json)."
    ),
]


class ReportFormat(str, Enum):
    markdown = "markdown"
    html = "html"
    openmetrics = "openmetrics"
    text = "text"
    json = "json"


EstimateDemo = Annotated[
    bool, typer.Option("--demo", help="Start the embedded demo workload, measure it, stop it.")
]

EstimateSamples = Annotated[
    int,
    typer.Option("--samples", metavar="K", min=1, max=MAX_SAMPLES, help="Snapshots to take."),
]

EstimateInterval = Annotated[
    float,
    typer.Option(
        "--interval",
        metavar="S",
        min=0.0,
        max=MAX_SECONDS,
        callback=_finite,
        help="Seconds between snapshots.",
    ),
]

EstimateOutputFormat = Annotated[EstimateFormat, typer.Option("--format", help="Output format.")]

EstimateSave = Annotated[
    Path | None,
    typer.Option(
        "--save", metavar="FILE", help="Write the model (JSON) to FILE, e.g. models/NAME.json."
    ),
]

EstimateForce = Annotated[bool, typer.Option("--force", help="Replace an existing --save file.")]

EstimateLaunch = Annotated[
    str | None,
    typer.Option(
        "--launch",
        metavar="COMMAND",
        help="Start COMMAND once per step, up to --instances copies, and measure each "
        "step. {i} is the instance number, {port} a free loopback port per instance.",
    ),
]

EstimateInstances = Annotated[
    int,
    typer.Option(
        "--instances",
        metavar="N",
        min=1,
        max=MAX_INSTANCES,
        help="--launch: how many copies to start.",
    ),
]

EstimateShell = Annotated[
    bool,
    typer.Option("--shell", help="Run --launch and --load with /bin/sh -c, not split by shlex."),
]

EstimateSettle = Annotated[
    float | None,
    typer.Option(
        "--settle",
        metavar="SECONDS",
        min=0.0,
        max=MAX_SECONDS,
        callback=_finite,
        help="--launch: wait this long after each start (default: until its memory "
        "stops changing).",
    ),
]

EstimateSettleTimeout = Annotated[
    float,
    typer.Option(
        "--settle-timeout",
        metavar="SECONDS",
        min=0.1,
        max=MAX_SECONDS,
        callback=_finite,
        help="--launch: give up on an instance that has not settled after this long.",
    ),
]

EstimateLoad = Annotated[
    str | None,
    typer.Option(
        "--load",
        metavar="COMMAND",
        help="Run this load generator while sampling (with --launch: one per instance, "
        "{port} is its port), e.g. 'ab -n 20000 -c 16 http://127.0.0.1:8080/'.",
    ),
]

EstimateWarmup = Annotated[
    float,
    typer.Option(
        "--warmup",
        metavar="SECONDS",
        min=0.0,
        max=MAX_SECONDS,
        callback=_finite,
        help="Seconds between starting the load and the first sample.",
    ),
]

InspectDemo = Annotated[
    bool, typer.Option("--demo", help="Start the embedded demo workload, inspect it, stop it.")
]

InspectPerProcess = Annotated[
    bool,
    typer.Option(
        "--per-process", help="Add the per-process table (RSS, PSS, USS, shared, swap, ...)."
    ),
]

InspectOutputFormat = Annotated[Format, typer.Option("--format", help="Output format.")]

PredictMemory = Annotated[
    str | None,
    typer.Option(
        "--memory",
        metavar="SIZES",
        callback=_size_list_option,
        help="Host sizes to predict for, comma-separated (8G,16G,32G). "
        "Default: the model's own budget.",
    ),
]

PredictReserve = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        metavar="SIZE|PCT",
        callback=_reserve_option,
        help="Memory kept for everything else on each host (2G or 10%). Default: the "
        "reserve measured with the model, in bytes (or its share, if saved as one).",
    ),
]

PredictInstances = Annotated[
    int | None,
    typer.Option(
        "--instances",
        metavar="N",
        min=0,
        max=MAX_WORKERS,
        help="The reverse question: how much memory N workers need, with its interval.",
    ),
]

PredictOutputFormat = Annotated[Format, typer.Option("--format", help="Output format.")]

ReportOutput = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write to FILE (written atomically; a Markdown report gets its plot as "
        "FILE's name with .png beside it). Default: stdout.",
    ),
]

ReportOutputFormat = Annotated[
    ReportFormat | None,
    typer.Option(
        "--format",
        help="Output format. Default: from FILE's suffix (.md, .html, .prom), else markdown.",
    ),
]

CheckBaseline = Annotated[
    Path,
    typer.Argument(metavar="BASELINE", help="The baseline model (models/NAME.json)."),
]

CheckDemo = Annotated[
    bool,
    typer.Option("--demo", help="Start the embedded demo workload (with the baseline's sizes)."),
]

CheckCurrent = Annotated[
    Path | None,
    typer.Option(
        "--current",
        metavar="FILE",
        help="Compare with this saved model instead of measuring now.",
    ),
]

CheckMaxIncrease = Annotated[
    str | None,
    typer.Option(
        "--max-increase",
        metavar="PCT",
        callback=_percent_option,
        help="Largest increase that still passes, as a share of the baseline "
        "(default 5% when --max-increase-bytes is not given either).",
    ),
]

CheckMaxIncreaseBytes = Annotated[
    str | None,
    typer.Option(
        "--max-increase-bytes",
        metavar="SIZE",
        callback=_size_option,
        help="Largest increase that still passes, in bytes (256K). With --max-increase "
        "too, a change must exceed both to fail.",
    ),
]

CheckSamples = Annotated[
    int | None,
    typer.Option(
        "--samples", min=1, max=MAX_SAMPLES, help="Snapshots to take. Default: the baseline's."
    ),
]

CheckInterval = Annotated[
    float | None,
    typer.Option(
        "--interval",
        min=0.0,
        max=MAX_SECONDS,
        callback=_finite,
        help="Seconds between snapshots. Default: the baseline's.",
    ),
]

CheckAllowEnvChange = Annotated[
    bool,
    typer.Option(
        "--allow-env-change",
        help="Compare even when the method, THP mode or schema differ from the baseline.",
    ),
]

CheckOutputFormat = Annotated[Format, typer.Option("--format", help="Output format.")]

CheckJunit = Annotated[
    Path | None,
    typer.Option("--junit", metavar="FILE", help="Also write the result as JUnit XML."),
]

ReportForce = Annotated[
    bool,
    typer.Option("--force", help="Replace an existing -o file (and the .png beside it)."),
]
CheckForce = Annotated[bool, typer.Option("--force", help="Replace an existing --junit file.")]


def _checked_assignments(
    parse: Callable[[list[str]], object],
) -> Callable[[list[str] | None], list[str] | None]:
    """As ``_checked_by``, for an option given many times (``--set a=1 --set b=2``)."""

    def check(values: list[str] | None) -> list[str] | None:
        from capacity.errors import CapplanError

        if values:
            try:
                parse(values)
            except CapplanError as err:
                raise typer.BadParameter(err.message) from None
        return values

    return check


def _parse_counts(values: list[str]) -> object:
    from capacity.model.plan import parse_counts  # numpy: only when the option is given

    return parse_counts(values)


def _parse_weights(values: list[str]) -> object:
    from capacity.model.plan import parse_weights

    return parse_weights(values)


PlanModels = Annotated[
    list[Path],
    typer.Argument(
        metavar="MODEL",
        help="The saved model of each pool on the host (models/NAME.json); a pool's NAME "
        "is its file's name without .json.",
    ),
]

PlanMemory = Annotated[
    str | None,
    typer.Option(
        "--memory",
        metavar="SIZE",
        callback=_size_option,
        help="The host's memory, as MemTotal (16G). Default: the budget the models "
        "recorded, when they were measured on one host and agree.",
    ),
]

PlanReserve = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        metavar="SIZE|PCT",
        callback=_reserve_option,
        help="Memory kept for everything but the pools (2G or 10%). Default: what the rest "
        "of the host used when the models were measured, the other pools left out.",
    ),
]

PlanSet = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=N",
        callback=_checked_assignments(_parse_counts),
        help="Pin pool NAME at N workers; the other pools share what is left. Repeatable.",
    ),
]

PlanWeight = Annotated[
    list[str] | None,
    typer.Option(
        "--weight",
        metavar="NAME=W",
        callback=_checked_assignments(_parse_weights),
        help="Give pool NAME the share W of the ratio (default: the worker count it was "
        "measured with); --weight web=3 --weight api=1 plans 3 web workers per api worker. "
        "Repeatable.",
    ),
]

PlanOutputFormat = Annotated[Format, typer.Option("--format", help="Output format.")]
