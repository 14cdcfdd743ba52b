"""Reading on a few threads keeps the sequential semantics: order, errors, Ctrl-C (issue 7)."""

from __future__ import annotations

import threading

import pytest
from conftest import start_demo

from capacity.errors import AccessDenied
from capacity.measure import parallel, sampler
from capacity.measure.workload import Interrupted, Selector

MANY = 10 * parallel.MIN_ITEMS_PER_THREAD


def test_results_in_item_order_from_several_threads() -> None:
    seen: set[str] = set()

    def square(x: int) -> int:
        seen.add(threading.current_thread().name)
        return x * x

    assert parallel.map_ordered(square, list(range(MANY)), 3) == [x * x for x in range(MANY)]
    assert len(seen) == 3


def test_few_items_stay_in_the_calling_thread() -> None:
    names: set[str] = set()

    def name(x: int) -> int:
        names.add(threading.current_thread().name)
        return x

    items = list(range(2 * parallel.MIN_ITEMS_PER_THREAD - 1))
    assert parallel.map_ordered(name, items, 4) == items
    assert names == {threading.current_thread().name}
    assert parallel.map_ordered(name, [], 4) == []


def test_the_earliest_failing_item_is_raised_and_the_others_stop() -> None:
    calls: list[int] = []

    def fail_on_odd(x: int) -> int:
        calls.append(x)
        if x in (41, 43):
            raise AccessDenied(x, "w", "/proc/x/smaps_rollup")
        return x

    with pytest.raises(AccessDenied) as raised:
        parallel.map_ordered(fail_on_odd, list(range(MANY)), 2)
    assert raised.value.pid == 41
    assert len(calls) < MANY  # both threads stopped early


def test_an_interrupt_in_the_calling_thread_propagates_at_once() -> None:
    def interrupt_at_zero(x: int) -> int:
        if x == 0:
            raise Interrupted()
        return x

    with pytest.raises(Interrupted):
        parallel.map_ordered(interrupt_at_zero, list(range(MANY)), 2)


def test_sampler_reads_the_same_processes_on_one_or_two_threads() -> None:
    workers = 2 * parallel.MIN_ITEMS_PER_THREAD + 6
    with start_demo("--shared", "1M", "--private", "0", "--workers", str(workers)) as demo:
        selector = Selector(pid=demo.parent)
        one = sampler.Sampler(selector, readers=1).snapshot(0)
        two = sampler.Sampler(selector, readers=2).snapshot(0)
    expected = [demo.parent, *sorted(demo.workers)]
    for snapshot in (one, two):
        assert sorted(p.pid for p in snapshot.processes) == sorted(expected)
        assert [p.role for p in snapshot.processes].count("parent") == 1
    assert [p.pid for p in one.processes] == [p.pid for p in two.processes]
    assert [p.mappings for p in one.processes] == [p.mappings for p in two.processes]
