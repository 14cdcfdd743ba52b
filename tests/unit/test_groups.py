"""Pools and instances (issue 13 part 2) on constructed snapshots: every group fitted on its
own, its non-worker roles as fixed cost, the top level one group's whole estimate, and the
files saved before groups still read.

The processes are built here with known sizes, classified by ``measure/roles`` from their
titles, and fitted by ``app.estimate.fit_groups`` exactly as ``capplan estimate`` does after
sampling; nothing reads the host (``root`` is an empty directory).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import REPO

from capacity.app.estimate import EstimateOptions, fit_groups
from capacity.codec import to_jsonable
from capacity.measure.groups import Grouping
from capacity.measure.roles import classify
from capacity.measure.workload import Selector
from capacity.model import assemble, check, suggest
from capacity.model.plan import PoolModel, group_estimate, plan_groups, plan_host
from capacity.modelfile import estimate_from_dict, load_estimate
from capacity.records import (
    Environment,
    Estimate,
    HostMemory,
    MemoryRollup,
    ProcessMemory,
    Snapshot,
)
from capacity.render.report import render_text
from capacity.roles_records import ProcessFacts

KiB, MiB, GiB = 1024, 1024**2, 1024**3
MODELS = REPO / "models"


@pytest.fixture(scope="module")
def environment() -> Environment:
    return load_estimate(MODELS / "demo.json").environment


def fact(pid: int, ppid: int, title: str, comm: str = "", **kw: object) -> ProcessFacts:
    words = title.split(" ")
    argv = (title,) if title.startswith(("postgres: ", "php-fpm: ")) else tuple(words)
    return ProcessFacts(
        pid=pid,
        ppid=ppid,
        comm=comm or words[0].rstrip(":").rsplit("/", 1)[-1],
        cmdline=argv,
        start_ticks=pid,
        **kw,  # type: ignore[arg-type]
    )


def memory(pid: int, ppid: int, own: int, *, name: str, shared: int = 2 * MiB) -> ProcessMemory:
    """A process whose own pages are ``own`` bytes and that shares ``shared`` bytes."""
    return ProcessMemory(
        pid=pid,
        start_ticks=pid,
        ppid=ppid,
        name=name,
        state="S",
        role="worker",  # as the selection says: capplan's roles replace it
        threads=1,
        rollup=MemoryRollup(
            rss_bytes=own + shared,
            pss_bytes=own + shared // 4,
            pss_anon_bytes=own + shared // 4,
            private_dirty_bytes=own,
            shared_dirty_bytes=shared,
        ),
        page_tables_bytes=64 * KiB,
        kernel_stack_bytes=16 * KiB,
        slab_bytes=40 * KiB,
    )


def snapshots(processes: list[ProcessMemory], count: int = 3) -> tuple[Snapshot, ...]:
    host = HostMemory(mem_total_bytes=8 * GiB, mem_available_bytes=6 * GiB)
    return tuple(
        Snapshot(
            index=i,
            taken_at=1000.0 + i,
            elapsed_seconds=float(i),
            read_seconds=0.01,
            processes=tuple(processes),
            host=host,
        )
        for i in range(count)
    )


def estimate_of(
    facts: list[ProcessFacts],
    processes: list[ProcessMemory],
    environment: Environment,
    tmp_path: Path,
    selector: str = "--cmd server",
    **options: object,
) -> Estimate:
    grouping = Grouping(classify(facts), facts, root=tmp_path)
    samples = snapshots(processes)
    for sample in samples:
        grouping.observe(sample.processes)
    return fit_groups(
        EstimateOptions(selector=Selector(cmd="server"), root=tmp_path, **options),  # type: ignore[arg-type]
        grouping,
        grouping.snapshots(samples),
        selector_text=selector,
        environment=environment,
    )


# --------------------------------------------------------------------------- PostgreSQL

BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
)


def postgresql() -> tuple[list[ProcessFacts], list[ProcessMemory]]:
    """A postmaster (3 MiB of its own), its 5 background processes (512 KiB each) and 6
    client backends (2 MiB each)."""
    facts = [fact(100, 1, "/usr/lib/postgresql/15/bin/postgres -D /srv/data", "postgres")]
    processes = [memory(100, 1, 3 * MiB, name="postgres")]
    for i, title in enumerate(BACKGROUND):
        facts.append(fact(101 + i, 100, f"postgres: {title} ", "postgres"))
        processes.append(memory(101 + i, 100, 512 * KiB, name="postgres"))
    for i in range(6):
        facts.append(fact(110 + i, 100, "postgres: app app [local] idle", "postgres"))
        processes.append(memory(110 + i, 100, 2 * MiB, name="postgres"))
    return facts, processes


def test_background_processes_are_fixed_cost_and_the_backends_the_workers(
    environment: Environment, tmp_path: Path
) -> None:
    facts, processes = postgresql()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd postgres")
    workload = estimate.workload
    assert workload.worker_count == 6
    assert (workload.server, workload.rule, workload.worker_role, workload.instance) == (
        "postgresql",
        "postgresql",
        "client backend",
        100,
    )
    assert workload.roles == {
        "postmaster": 1,
        "client backend": 6,
        **dict.fromkeys(BACKGROUND, 1),
    }
    assert sorted(workload.parent_pids) == [100, 101, 102, 103, 104, 105]
    # A backend costs its 2 MiB and its kernel memory, every backend alike.
    kernel = 64 * KiB + 16 * KiB + 40 * KiB
    assert estimate.model.per_instance_bytes == pytest.approx(2 * MiB + kernel, abs=1)
    assert estimate.model.worker_sd_bytes < 1 * KiB
    # The fixed cost holds the postmaster and the 5 background processes.
    assert estimate.model.fixed_bytes >= 3 * MiB + 5 * 512 * KiB
    (group,) = estimate.groups
    assert group.model == estimate.model and group.prediction == estimate.prediction
    assert group.role_cost_bytes["client backend"] == 6 * (2 * MiB + kernel)
    assert group.role_cost_bytes["checkpointer"] == 512 * KiB + kernel
    assert [w.code for w in estimate.warnings if w.code == "HIGH_SPREAD"] == []

    # Before issue 13 the 5 background processes were workers: one line through both kinds.
    before = tuple(
        dataclasses.replace(
            s,
            processes=tuple(
                dataclasses.replace(p, role="parent" if p.pid == 100 else "worker")
                for p in s.processes
            ),
        )
        for s in snapshots(processes)
    )
    old = assemble.build_estimate(
        workload=assemble.describe_workload("--cmd postgres", before),
        snapshots=before,
        environment=environment,
        budget_options=assemble.BudgetOptions(),
        total_seconds=1.0,
        samples_requested=3,
    )
    assert old.workload.worker_count == 11
    assert old.model.per_instance_bytes < estimate.model.per_instance_bytes
    assert "HIGH_SPREAD" in [w.code for w in old.warnings]


def test_postgresql_suggestion_is_in_backends_with_the_reserved_connections(
    environment: Environment, tmp_path: Path
) -> None:
    facts, processes = postgresql()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd postgres")
    (group,) = estimate.groups
    suggestion = group.suggestion
    assert suggestion is not None
    count = group.prediction.max_instances_conservative
    assert suggestion.lines == (f"max_connections = {count}",)
    assert "superuser_reserved_connections, assumed 3" in suggestion.note
    assert "1 checkpointer" in suggestion.note and "not connections" in suggestion.note
    # No data directory under this root: shared_buffers is said to be unknown, not guessed.
    assert "shared_buffers unknown" in suggestion.note
    # The load hint names a load generator for a database, not ab.
    hints = " ".join(w.hint for w in estimate.warnings)
    assert "ab -n" not in hints


def test_a_backend_that_connects_later_is_a_worker_and_an_unknown_child_too(
    environment: Environment, tmp_path: Path
) -> None:
    facts, processes = postgresql()
    grouping = Grouping(classify(facts), facts, root=tmp_path)
    later = memory(120, 100, 2 * MiB, name="postgres")  # not classified: no /proc under root
    stranger = memory(130, 999, 2 * MiB, name="postgres")  # nobody's child
    grouping.observe([*processes, later, stranger])
    (members,) = grouping.split([*processes, later, stranger])
    roles = {p.pid: p.role for p in members}
    assert roles[120] == "worker"
    assert 130 not in roles
    assert roles[101] == "parent" and roles[100] == "parent" and roles[110] == "worker"


# --------------------------------------------------------------------------- two groups


def two_apache2() -> tuple[list[ProcessFacts], list[ProcessMemory]]:
    """Two apache2 prefork servers: 3 children of 1 MiB under 200, 5 of 4 MiB under 300."""
    facts, processes = [], []
    for master, children, size in ((200, 3, 1 * MiB), (300, 5, 4 * MiB)):
        argv = f"/usr/sbin/apache2 -k start -f /srv/{master}.conf"
        facts.append(fact(master, 1, argv, "apache2", signals=(0x1000, 0x4A02)))
        processes.append(memory(master, 1, 2 * MiB, name="apache2"))
        for i in range(children):
            facts.append(
                fact(master + 1 + i, master, argv, "apache2", signals=(0x1000, 0x18004A03))
            )
            processes.append(memory(master + 1 + i, master, size, name="apache2"))
    return facts, processes


def test_two_servers_are_fitted_apart(environment: Environment, tmp_path: Path) -> None:
    facts, processes = two_apache2()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd apache2")
    assert [(g.instance, g.worker_count, g.mpm) for g in estimate.groups] == [
        (200, 3, "prefork"),
        (300, 5, "prefork"),
    ]
    kernel = 64 * KiB + 16 * KiB + 40 * KiB
    first, second = estimate.groups
    assert first.model.per_instance_bytes == pytest.approx(1 * MiB + kernel, abs=1)
    assert second.model.per_instance_bytes == pytest.approx(4 * MiB + kernel, abs=1)
    # The top level is the group with the most workers, whole: workload, model, samples.
    assert estimate.workload.instance == 300 and estimate.workload.worker_count == 5
    assert estimate.model == second.model
    assert {p.pid for p in estimate.samples[-1].processes} == {300, *range(301, 306)}
    notice = next(w for w in estimate.warnings if w.code == "SEVERAL_GROUPS")
    assert "apache2 300" in notice.message and "--pid 200" in notice.hint
    assert second.suggestion is not None
    assert second.suggestion.lines[0].startswith("ServerLimit ")
    # The host plan pays each server's fixed cost once and plans both together.
    plan = plan_groups(estimate)
    assert plan is not None
    assert [p.name for p in plan.pools] == ["apache2 200", "apache2 300"]
    assert plan.point.workers > 0
    text = render_text(estimate)
    assert "Group 1 of 2: apache2 200" in text and "Group 2 of 2: apache2 300" in text
    assert "Plan for this host, its 2 groups together" in text


def test_check_refuses_a_baseline_of_another_group(
    environment: Environment, tmp_path: Path
) -> None:
    facts, processes = two_apache2()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd apache2")
    verdict = check.compare(
        estimate, estimate, check.parse_tolerance(None, None), baseline_source="b.json"
    )
    # Two apache2 groups with no pool to tell them apart: which is which is not known.
    assert verdict.status == "not_comparable"
    assert any("cannot be told" in reason for reason in verdict.not_comparable)
    waived = check.compare(
        estimate,
        estimate,
        check.parse_tolerance(None, None),
        baseline_source="b.json",
        allow_env_change=True,
    )
    assert waived.status == "not_comparable"


def test_php_fpm_pools_are_two_groups_sharing_the_master(
    environment: Environment, tmp_path: Path
) -> None:
    facts = [fact(400, 1, "php-fpm: master process (/srv/fpm.conf)", "php-fpm8.2")]
    processes = [memory(400, 1, 6 * MiB, name="php-fpm8.2")]
    for pid, pool, size in [(401, "site1", MiB), (402, "site1", MiB), (403, "site1", MiB)] + [
        (410 + i, "site2", 3 * MiB) for i in range(5)
    ]:
        facts.append(fact(pid, 400, f"php-fpm: pool {pool}", "php-fpm8.2"))
        processes.append(memory(pid, 400, size, name="php-fpm8.2"))
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd php-fpm8.2")
    assert [(g.pool, g.worker_count, g.roles) for g in estimate.groups] == [
        ("site1", 3, {"master": 1, "pool site1 child": 3}),
        ("site2", 5, {"master": 1, "pool site2 child": 5}),
    ]
    assert all(g.shared_roles == ("master",) for g in estimate.groups)
    suggestions = [g.suggestion for g in estimate.groups if g.suggestion is not None]
    assert [s.title for s in suggestions] == ["php-fpm pool site1", "php-fpm pool site2"]
    assert all(s.lines == (f"pm.max_children = {s.instances}",) for s in suggestions)
    assert "[site1] section" in suggestions[0].note
    # The pools share one master: the hint does not send the reader to --pid of it.
    notice = next(w for w in estimate.warnings if w.code == "SEVERAL_GROUPS")
    assert "share one master" in notice.hint
    plan = plan_groups(estimate)
    assert plan is not None
    # The master is paid once: the second pool's fixed cost is taken less the smaller of
    # the two pools' fixed costs (each holds the master and what it shares with its children).
    fixed = [g.model.fixed_bytes for g in estimate.groups]
    less = min(fixed)
    assert less > 0
    assert [p.fixed_bytes for p in plan.pools] == [fixed[0], fixed[1] - less]
    assert any("pays the shared part once" in note for note in plan.notes)
    twice = [
        PoolModel(name=g.label, source="x", estimate=group_estimate(estimate, g))
        for g in estimate.groups
    ]
    # With the reserve measured, each group's reserve less the other groups took the master
    # off once too many, so the sum came out right; with a reserve given, paying the master
    # once leaves room the double count did not.
    given = assemble.BudgetOptions.parse("8G", "0")
    once = plan_groups(estimate, budget=given)
    paid_twice = plan_host(twice, budget=given).point
    assert once is not None
    assert once.point.limit_bytes == paid_twice.limit_bytes
    assert once.point.workers > paid_twice.workers
    # check follows a pool by name: the same pool compares, another is refused.
    same = check.compare(estimate, estimate, check.parse_tolerance(None, None), baseline_source="b")
    assert same.status == "pass"
    other = dataclasses.replace(
        estimate, workload=dataclasses.replace(estimate.workload, pool="site9")
    )
    refused = check.compare(other, estimate, check.parse_tolerance(None, None), baseline_source="b")
    assert refused.status == "not_comparable"


# --------------------------------------------------------------------------- one group


def test_single_group_json_is_the_old_json_with_the_new_keys(
    environment: Environment, tmp_path: Path
) -> None:
    """A server whose roles are a parent and its workers answers as before groups: the
    same document, plus workload's group keys and a one-entry groups."""
    facts = [fact(500, 1, "myserver --port 8000")]
    processes = [memory(500, 1, 3 * MiB, name="myserver")]
    for i in range(4):
        facts.append(fact(501 + i, 500, "myserver --port 8000"))
        processes.append(memory(501 + i, 500, (2 + i % 2) * MiB, name="myserver"))
    new = estimate_of(facts, processes, environment, tmp_path, "--cmd myserver")
    samples = tuple(
        dataclasses.replace(
            s,
            processes=tuple(
                dataclasses.replace(p, role="parent" if p.pid == 500 else "worker")
                for p in s.processes
            ),
        )
        for s in snapshots(processes)
    )
    old = assemble.build_estimate(
        workload=assemble.describe_workload(
            "--cmd myserver", samples, parent_cmdline=("myserver", "--port", "8000")
        ),
        snapshots=samples,
        environment=environment,
        budget_options=assemble.BudgetOptions(),
        total_seconds=1.0,
        samples_requested=3,
    )
    new_doc, old_doc = to_jsonable(new), to_jsonable(old)
    (group,) = new_doc.pop("groups")
    assert old_doc.pop("groups") == []
    added = {"server", "pool", "instance", "rule", "worker_role", "roles"}
    assert {k: new_doc["workload"].pop(k) for k in added} == {
        "server": "myserver",
        "pool": None,
        "instance": 500,
        "rule": "generic",
        "worker_role": "worker",
        "roles": {"parent": 1, "worker": 4},
    }
    for k in added:
        old_doc["workload"].pop(k)
    new_doc.pop("timing"), old_doc.pop("timing")
    assert new_doc == old_doc
    assert group["model"] == new_doc["model"] and group["worker_count"] == 4


# --------------------------------------------------------------------------- old files


@pytest.mark.parametrize("name", ["demo.json", "php.json", "web.json"])
def test_models_saved_before_groups_still_load_and_answer(name: str) -> None:
    estimate = load_estimate(MODELS / name)
    assert estimate.groups == ()
    assert estimate.workload.server is None and estimate.workload.roles == {}
    assert suggest.top_group(estimate) is None
    # Their suggestion is by the program's name, as it was.
    assert suggest.for_estimate(estimate, 10) == suggest.configuration(
        suggest.recognise_estimate(estimate), 10, suggest.threads_per_worker(estimate)
    )
    text = render_text(estimate)
    assert "Roles (" not in text and "Max workers:" in text


def test_an_old_baseline_is_refused_against_a_selection_of_several_groups(
    environment: Environment, tmp_path: Path
) -> None:
    baseline = load_estimate(MODELS / "web.json")
    facts, processes = two_apache2()
    now = estimate_of(facts, processes, environment, tmp_path, "--cmd apache2")
    verdict = check.compare(baseline, now, check.parse_tolerance(None, None), baseline_source="w")
    assert verdict.status == "not_comparable"
    assert any("before capplan told groups apart" in r for r in verdict.not_comparable)


def test_a_model_with_groups_round_trips(environment: Environment, tmp_path: Path) -> None:
    facts, processes = two_apache2()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd apache2")
    again = estimate_from_dict(json.loads(json.dumps(to_jsonable(estimate))))
    assert again == estimate
    assert suggest.top_group(again) == again.groups[1]


# --------------------------------------------------------------------------- PostgreSQL's settings


def test_postgresql_conf_lines() -> None:
    from capacity.measure.serverconf import parse_conf_line

    assert parse_conf_line("shared_buffers = 128MB\t\t# min 128kB") == ("shared_buffers", "128MB")
    assert parse_conf_line("Max_Connections 50") == ("max_connections", "50")
    assert parse_conf_line("listen_addresses = ''") == ("listen_addresses", "")
    assert parse_conf_line("cluster_name = 'it''s 15/main' # c") == ("cluster_name", "it's 15/main")
    assert parse_conf_line("#shared_buffers = 1GB") is None
    assert parse_conf_line("   ") is None


def test_postmaster_argv() -> None:
    from capacity.measure.serverconf import parse_postmaster_argv

    argv = ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main", "-c",
            "config_file=/etc/postgresql/15/main/postgresql.conf", "-B", "2048", "--max-connections=7",
            "-csuperuser_reserved_connections=2"]  # fmt: skip
    assert parse_postmaster_argv(argv) == (
        "/var/lib/postgresql/15/main",
        {
            "config_file": "/etc/postgresql/15/main/postgresql.conf",
            "shared_buffers": "2048 (8kB buffers)",
            "max_connections": "7",
            "superuser_reserved_connections": "2",
        },
    )


def test_postgresql_settings_in_precedence_order(tmp_path: Path) -> None:
    """The command line over postgresql.auto.conf over postgresql.conf (and what it
    includes) over the defaults, each saying where it came from."""
    from capacity.measure.serverconf import postgresql_settings

    (tmp_path / "proc/100").mkdir(parents=True)
    (tmp_path / "proc/100/cmdline").write_bytes(b"postgres\0-D\0/data\0-c\0max_connections=50\0")
    data = tmp_path / "data"
    (data / "conf.d").mkdir(parents=True)
    (data / "postgresql.conf").write_text(
        "max_connections = 100\nshared_buffers = 32MB\ninclude_dir = 'conf.d'\n"
    )
    (data / "conf.d/reserved.conf").write_text("superuser_reserved_connections = 5\n")
    (data / "postgresql.auto.conf").write_text("shared_buffers = '64MB'\n")
    found = {s.name: (s.value, s.source) for s in postgresql_settings(100, tmp_path)}
    assert found == {
        "max_connections": ("50", "the postmaster's command line"),
        "superuser_reserved_connections": ("5", "/data/conf.d/reserved.conf"),
        "shared_buffers": ("64MB", "/data/postgresql.auto.conf"),
        "autovacuum_max_workers": ("3", "not set: PostgreSQL's default"),
    }


def test_postgresql_settings_unread_say_why(tmp_path: Path) -> None:
    from capacity.measure.serverconf import postgresql_settings

    (tmp_path / "proc/100").mkdir(parents=True)
    (tmp_path / "proc/100/cmdline").write_bytes(b"postgres\0-D\0/gone\0")
    found = {s.name: s for s in postgresql_settings(100, tmp_path)}
    assert found["shared_buffers"].value is None
    assert "/gone/postgresql.conf: no such file" in found["shared_buffers"].source


def test_the_report_has_a_section_for_the_groups(environment: Environment, tmp_path: Path) -> None:
    from capacity.render.blocks import Figure, to_markdown
    from capacity.render.document import build

    facts, processes = two_apache2()
    estimate = estimate_of(facts, processes, environment, tmp_path, "--cmd apache2")
    text = to_markdown(build(estimate, source="m.json", figure=Figure(missing=("none",))))
    section = text.split("## Groups and roles", 1)[1].split("\n## ", 1)[0]
    assert "| apache2 200 | apache2 | 3 child |" in section
    assert "| apache2 300 | apache2 | 5 child |" in section
    assert "Roles of apache2 300" in section
    # A model saved before groups has no such section.
    old = load_estimate(MODELS / "demo.json")
    assert "## Groups" not in to_markdown(build(old, source="d", figure=Figure(missing=("x",))))


def test_a_damaged_group_is_refused_naming_its_field(
    environment: Environment, tmp_path: Path
) -> None:
    from capacity.errors import ModelFileError

    facts, processes = two_apache2()
    document = to_jsonable(estimate_of(facts, processes, environment, tmp_path, "--cmd apache2"))
    document["groups"][0]["model"]["per_instance_bytes"] = 0
    with pytest.raises(ModelFileError, match=r"groups\[0\]\.model\.per_instance_bytes"):
        estimate_from_dict(document)
