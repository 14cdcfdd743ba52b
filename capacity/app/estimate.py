"""``capplan estimate`` as one library call: select, sample, fit, predict.

``run_estimate(EstimateOptions(...))`` does everything the command does and returns the
same ``Estimate`` record the command prints and saves: load generators and the demo are
started and always stopped, the exact method falls back to smaps with the reason recorded,
the server's version is detected, and the measurement itself (samples, interval, demo
sizes) is stamped on the result so that ``check`` can repeat it. The CLI only turns its
flags into ``EstimateOptions`` and renders what comes back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from capacity.errors import CapplanError
from capacity.measure.launch import LaunchOptions
from capacity.measure.procfs import DEFAULT_ROOT
from capacity.measure.workload import Selector
from capacity.model.assemble import BudgetOptions
from capacity.records import DemoOptions, Estimate, Measurement, Method

ProgressCallback = Callable[[int, int], None]
# A progress display: given the number of steps and a label, a context that yields the
# callback to advance it. The CLI passes a rich bar; the library default shows nothing.
Progress = Callable[[int, str], AbstractContextManager[ProgressCallback]]


@contextlib.contextmanager
def no_progress(total: int, label: str) -> Iterator[ProgressCallback]:
    yield lambda done, total: None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EstimateOptions:
    """What to measure and how; exactly one of ``selector``, ``demo`` and ``launch``.

    ``method`` None picks exact where available (else smaps, saying why); EXACT or SMAPS
    insist on that method, as ``check`` does to measure the way its baseline was measured.
    """

    selector: Selector | None = None
    demo: DemoOptions | None = None
    launch: LaunchOptions | None = None
    samples: int = 5
    interval: float = 1.0
    root: Path = DEFAULT_ROOT
    method: Method | None = None
    budget: BudgetOptions = dataclasses.field(default_factory=BudgetOptions)
    load: str | None = None
    shell: bool = False
    warmup: float = 0.0
    deep: bool = False
    # The command as typed, recorded in the environment (the CLI passes its argv).
    command_line: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("selector", self.selector),
                ("demo", self.demo),
                ("launch", self.launch),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(f"give exactly one of selector, demo or launch (got {given})")
        if self.method is not None and self.method not in (Method.SMAPS, Method.EXACT):
            raise ValueError(f"method {self.method} cannot be asked for")


def run_estimate(options: EstimateOptions, *, progress: Progress = no_progress) -> Estimate:
    """Measure as ``options`` say and return the whole answer (see the module docstring)."""
    from capacity.measure.leftovers import clean_up_after_killed_runs

    clean_up_after_killed_runs()  # what a killed capplan run left (issue 11)
    if options.launch is not None:
        return _run_launch(options, options.launch, progress)
    return _run_attach(options, progress)


def _run_attach(options: EstimateOptions, progress: Progress) -> Estimate:
    from capacity.measure import sampler, workload
    from capacity.measure.environment import read_environment
    from capacity.measure.loadgen import LoadGenerators
    from capacity.measure.procfs import read_cmdline, read_exe
    from capacity.measure.versions import detect_version
    from capacity.model import assemble, suggest

    root = options.root
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        generators = (
            stack.enter_context(LoadGenerators(options.load, shell=options.shell))
            if options.load is not None
            else None
        )
        if options.demo is not None:
            demo = options.demo
            launched = stack.enter_context(
                workload.launched_demo(
                    shared=str(demo.shared_bytes),
                    private=str(demo.private_bytes),
                    workers=demo.workers,
                    dirty=demo.dirty,
                    shm=str(demo.shm_bytes),
                )
            )
            selector = workload.Selector(pid=launched.parent_pid)
            selector_text = "--demo"
        else:
            assert options.selector is not None
            selector = options.selector
            selector_text = str(selector)
        target = workload.resolve_target(selector, root)  # --cgroup, --unit: once
        first = workload.select_processes(selector, root, target=target)
        parent_pid = first.parents[0].pid if first.parents else first.members[0].pid
        try:
            parent_cmdline = read_cmdline(parent_pid, root)
        except CapplanError:
            parent_cmdline = ()
        exe = read_exe(parent_pid, root)
        reader = sampler.Sampler(
            selector,
            root,
            method=options.method,
            exclude=generators.exclude if generators else None,
            deep=options.deep,
            target=target,
        )
        if generators is not None:
            generators.start()
        if options.warmup > 0:
            time.sleep(options.warmup)
        with progress(options.samples, "sampling") as advance:
            snapshots = sampler.collect(
                selector,
                options.samples,
                options.interval,
                root=root,
                on_progress=advance,
                sampler=reader,
            )
        runs = generators.stop() if generators is not None else ()
        environment = read_environment(
            root, workload_pid=parent_pid, executable=exe, command_line=options.command_line
        )
    fallback = reader.exact_fallback()
    described = assemble.describe_workload(selector_text, snapshots, exe, parent_cmdline)
    if reader.target is not None:
        described = dataclasses.replace(described, cgroup=reader.target.path)
    if root == Path("/"):
        # Only on the live host: a captured tree's executable path is another host's.
        software = suggest.recognise(described.name, exe, parent_cmdline)
        environment = dataclasses.replace(
            environment, executable_version=detect_version(software, exe, parent_cmdline)
        )
    result = assemble.build_estimate(
        workload=described,
        snapshots=snapshots,
        environment=environment,
        budget_options=options.budget,
        total_seconds=time.monotonic() - started,
        samples_requested=options.samples,
        method=Method.SMAPS if options.method == Method.SMAPS else None,
        exact_fallback=fallback,
        loads=runs,
    )
    return dataclasses.replace(
        result,
        measurement=Measurement(
            samples=options.samples, interval_seconds=options.interval, demo=options.demo
        ),
    )


def _run_launch(options: EstimateOptions, launch: LaunchOptions, progress: Progress) -> Estimate:
    """``estimate --launch``: start, measure, always stop; then fit both sides."""
    from capacity.measure.environment import read_environment
    from capacity.measure.launch import Launcher
    from capacity.measure.procfs import read_exe
    from capacity.model import assemble

    started = time.monotonic()
    total = launch.instances + launch.samples - 1
    with Launcher(launch) as launcher:
        with progress(total, "launching") as advance:
            outcome = launcher.run(on_progress=advance)
        environment = read_environment(
            workload_pid=outcome.first_pid,
            executable=read_exe(outcome.first_pid),
            command_line=options.command_line,
        )
    return assemble.build_launch_estimate(
        launch=outcome.launch,
        snapshots=outcome.snapshots,
        environment=environment,
        budget_options=options.budget,
        total_seconds=time.monotonic() - started,
        loads=outcome.loads,
        no_cgroup_reason=outcome.no_cgroup_reason,
    )
