"""capplan predict (other host sizes, the reverse question), the configuration suggestions,
and the version detection the model file records.

Predictions come from the committed model; they must agree with the model's own maths
(``model.predict``, ``conservative_instances``, ``memory_for``) to the worker, because
`capplan estimate --memory` and `capplan predict --memory` must never disagree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from capacity import modelfile
from capacity.measure.versions import detect_version, version_command
from capacity.model import suggest, whatif
from capacity.model.fitting import memory_for, predict
from capacity.records import Budget, Estimate
from capacity.units import kubernetes_quantity

MODEL = REPO / "models" / "demo.json"
GiB, MiB = 1024**3, 1024**2


@pytest.fixture(scope="module")
def base() -> Estimate:
    return modelfile.load_estimate(MODEL)


def named(estimate: Estimate, name: str, cmdline: tuple[str, ...] = (), exe: str = "") -> Estimate:
    return dataclasses.replace(
        estimate,
        workload=dataclasses.replace(
            estimate.workload, name=name, parent_cmdline=cmdline, exe=exe or None
        ),
    )


# --------------------------------------------------------------------------- predict


def test_table_agrees_with_the_model_for_every_size(base: Estimate) -> None:
    result = run_cli("predict", str(MODEL), "--memory", "8G,16G,32G,64G", "--format", "json")
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "capplan.predict"
    reserve = base.budget.reserve_bytes  # the default: the model's reserve, in bytes
    previous = -1
    for row, size in zip(doc["sizes"], (8, 16, 32, 64), strict=True):
        memory = size * GiB
        budget = Budget(
            total_bytes=memory,
            reserve_bytes=reserve,
            available_bytes=memory - reserve,
            source="test",
            reserve_source="test",
        )
        expected = predict(base.model, budget)
        assert row["memory_bytes"] == memory
        assert row["reserve_bytes"] == reserve
        assert row["max_instances"] == expected.max_instances
        assert row["max_instances_conservative"] == expected.max_instances_conservative
        assert row["max_instances_conservative"] <= row["max_instances"]
        assert row["max_instances"] > previous
        previous = row["max_instances"]


def test_own_budget_reproduces_the_saved_prediction(base: Estimate) -> None:
    """No --memory: the model's own host, and the same answer estimate gave."""
    result = whatif.what_if(base, source="m.json")
    (row,) = result.sizes
    assert row.max_instances == base.prediction.max_instances
    assert row.max_instances_conservative == base.prediction.max_instances_conservative


def test_text_table_says_which_reserve_it_used(base: Estimate) -> None:
    result = run_cli("predict", str(MODEL), "--memory", "8G,16G")
    assert result.code == 0, result.stderr
    assert "Reserve: what everything outside the workload used on" in result.stdout
    assert "give --reserve to change it" in result.stdout
    assert "conservative" in result.stdout
    # The demo is not a server capplan knows: the number alone, said so.
    assert "does not recognise this program" in result.stdout


def test_reserve_as_a_share_applies_to_each_size() -> None:
    result = run_cli(
        "predict", str(MODEL), "--memory", "10G,20G", "--reserve", "10%", "--format", "json"
    )
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)["sizes"]
    assert [r["reserve_bytes"] for r in rows] == [GiB, 2 * GiB]


def test_share_saved_with_the_model_is_carried_over(base: Estimate) -> None:
    shared = dataclasses.replace(
        base, budget=dataclasses.replace(base.budget, reserve_fraction=0.25)
    )
    result = whatif.what_if(shared, source="m.json", memories=[8 * GiB])
    assert result.sizes[0].reserve_bytes == 2 * GiB
    assert "25% of each size" in result.reserve_source


def test_too_small_a_host_fits_nothing(base: Estimate) -> None:
    result = whatif.what_if(base, source="m.json", memories=[64 * MiB], reserve_bytes=0)
    assert result.sizes[0].max_instances == 0
    assert result.sizes[0].max_instances_conservative == 0


def test_reverse_question_memory_for_n_workers(base: Estimate) -> None:
    result = run_cli(
        "predict", str(MODEL), "--instances", "200", "--reserve", "1G", "--format", "json"
    )
    assert result.code == 0, result.stderr
    reverse = json.loads(result.stdout)["instances"]
    point, low, high = memory_for(base.model, 200)
    assert (reverse["memory_bytes"], reverse["low_bytes"], reverse["high_bytes"]) == (
        point,
        low,
        high,
    )
    assert low <= point <= high
    assert point == base.model.fixed_bytes + 200 * base.model.per_instance_bytes
    assert reverse["host_bytes"] == high + GiB
    text = run_cli("predict", str(MODEL), "--instances", "200", "--reserve", "1G")
    assert "Memory for 200 workers:" in text.stdout
    assert "95% prediction interval" in text.stdout
    assert "memory: " in text.stdout  # the Kubernetes request and limit


def test_reverse_with_a_share_reserve_solves_for_the_host(base: Estimate) -> None:
    result = whatif.what_if(base, source="m.json", instances=50, reserve_fraction=0.2)
    assert result.instances is not None
    host = result.instances.host_bytes
    assert host - 0.2 * host == pytest.approx(result.instances.high_bytes, abs=2)


@pytest.mark.parametrize(
    "args",
    [
        ["--memory", "8G,,16G"],
        ["--memory", "lots"],
        ["--reserve", "120%"],
        ["--instances", "-1"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = run_cli("predict", str(MODEL), *args)
    assert result.code == 2
    assert "Traceback" not in result.stderr


def test_reserve_larger_than_a_size_fits_nothing_rather_than_failing() -> None:
    result = run_cli(
        "predict", str(MODEL), "--memory", "1G,8G", "--reserve", "2G", "--format", "json"
    )
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)["sizes"]
    assert rows[0]["max_instances"] == 0 and rows[1]["max_instances"] > 0


# --------------------------------------------------------------------------- suggestions


@pytest.mark.parametrize(
    ("name", "exe", "cmdline", "expected"),
    [
        ("apache2", "/usr/sbin/apache2", ("/usr/sbin/apache2", "-k", "start"), "apache2"),
        ("httpd", "/usr/sbin/httpd", (), "apache2"),
        (
            "php-fpm8.2",
            "/usr/sbin/php-fpm8.2",
            ("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)",),
            "php-fpm",
        ),
        (
            "python3",
            "/usr/bin/python3.11",
            ("/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"),
            "gunicorn",
        ),
        ("python3", "/usr/bin/python3.11", ("python3", "-m", "gunicorn", "app:app"), "gunicorn"),
        ("gunicorn", None, ("gunicorn: master [app:app]",), "gunicorn"),
        (
            "postgres",
            "/usr/lib/postgresql/16/bin/postgres",
            ("/usr/lib/postgresql/16/bin/postgres", "-D", "/x"),
            "postgres",
        ),
        ("python3", "/usr/bin/python3.11", ("python3", "-m", "capacity.demo"), None),
        ("nginx", "/usr/sbin/nginx", (), None),
        ("php", "/usr/bin/php", ("php", "worker.php"), None),
    ],
)
def test_recognise(
    name: str, exe: str | None, cmdline: tuple[str, ...], expected: str | None
) -> None:
    assert suggest.recognise(name, exe, cmdline) == expected


def test_configuration_lines() -> None:
    apache = suggest.configuration("apache2", 150)
    assert apache is not None and apache.lines == ("MaxRequestWorkers 150", "ServerLimit 150")
    big = suggest.configuration("apache2", 400)
    assert big is not None and big.lines == ("ServerLimit 400", "MaxRequestWorkers 400")
    threaded = suggest.configuration("apache2", 40, threads=27)
    assert threaded is not None and threaded.lines[0] == "ServerLimit 40"
    assert "ThreadsPerChild" in threaded.lines[1]
    php = suggest.configuration("php-fpm", 37)
    assert php is not None and php.lines == ("pm.max_children = 37",)
    gunicorn = suggest.configuration("gunicorn", 9)
    assert gunicorn is not None and gunicorn.lines[0] == "--workers 9"
    pg = suggest.configuration("postgres", 120)
    assert pg is not None and pg.lines == ("max_connections = 120",)
    assert suggest.configuration(None, 10) is None


@pytest.mark.parametrize(
    ("software", "lines"),
    [
        ("nginx", ("worker_processes 12;",)),
        ("uwsgi", ("processes = 12", "--processes 12")),
        ("celery", ("--concurrency 12", "worker_concurrency = 12")),
        ("unicorn", ("worker_processes 12",)),
        ("puma", ("workers 12", "--workers 12")),
    ],
)
def test_configuration_lines_of_the_servers_the_roles_know(
    software: str, lines: tuple[str, ...]
) -> None:
    """nginx, uWSGI, celery, unicorn and puma (issue 13): the directive for the worker
    processes, named by the roles rule; the note says what stays fixed cost."""
    line = suggest.configuration(software, 12, threads=7)
    assert line is not None and line.lines == lines
    assert "fixed cost" in line.note
    if software == "puma":
        assert "7 threads each" in line.note


def test_kubernetes_quantities_round_up_in_binary_units() -> None:
    assert kubernetes_quantity(MiB) == "1Mi"
    assert kubernetes_quantity(MiB + 1) == "2Mi"
    assert kubernetes_quantity(0) == "1Mi"
    k8s = suggest.kubernetes(4, 100 * MiB + 5, 120 * MiB)
    assert k8s.lines == (
        "resources:",
        "  requests:",
        "    memory: 101Mi",
        "  limits:",
        "    memory: 120Mi",
    )


def test_predict_suggests_the_directive_for_a_recognised_server(
    tmp_path: Path, base: Estimate
) -> None:
    path = tmp_path / "fpm.json"
    modelfile.save_estimate(path, named(base, "php-fpm8.2", exe="/usr/sbin/php-fpm8.2"))
    result = run_cli("predict", str(path), "--memory", "4G", "--format", "json")
    row = json.loads(result.stdout)["sizes"][0]
    assert row["settings"] == [f"pm.max_children = {row['max_instances_conservative']}"]
    text = run_cli("predict", str(path), "--memory", "4G", "--instances", "30")
    assert f"pm.max_children = {row['max_instances_conservative']}" in text.stdout
    assert "pm.max_children = 30" in text.stdout  # the configuration for --instances N
    report = run_cli("report", str(path))
    conservative = base.prediction.max_instances_conservative
    assert f"pm.max_children = {conservative}" in report.stdout


# --------------------------------------------------------------------------- versions


def test_version_command_only_for_known_servers() -> None:
    assert version_command("apache2", "/usr/sbin/apache2") == ["/usr/sbin/apache2", "-v"]
    assert version_command("postgres", "/x/postgres") == ["/x/postgres", "--version"]
    assert version_command(None, "/usr/bin/python3") is None
    assert version_command("apache2", "/usr/sbin/apache2 (deleted)") is None
    assert version_command("gunicorn", "/usr/bin/python3", ("python3", "-m", "gunicorn")) == [
        "/usr/bin/python3",
        "-m",
        "gunicorn",
        "--version",
    ]
    # A relative script path would be resolved in our directory, not the workload's.
    assert version_command("gunicorn", "/usr/bin/python3", ("python3", "gunicorn")) is None


@pytest.mark.parametrize(
    ("software", "exe", "prefix"),
    [
        ("apache2", "/usr/sbin/apache2", "Server version: Apache/"),
        ("php-fpm", "/usr/sbin/php-fpm8.2", "PHP 8.2"),
    ],
)
def test_version_of_an_installed_server(software: str, exe: str, prefix: str) -> None:
    if not os.path.exists(exe):
        pytest.skip(f"{exe} is not installed (.ci/install-system-packages installs it)")
    version = detect_version(software, exe)
    assert version is not None and version.startswith(prefix)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_unknown_programs_are_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = write_script(tmp_path / "myserver", f"touch {marker}\necho 1.0\n")
    assert detect_version(suggest.recognise("myserver", str(program)), str(program)) is None
    assert not marker.exists()


def test_a_hanging_version_flag_times_out(tmp_path: Path) -> None:
    program = write_script(tmp_path / "apache2", "exec sleep 30\n")
    assert detect_version("apache2", str(program), timeout=0.5) is None


def test_version_is_the_first_line(tmp_path: Path) -> None:
    program = write_script(
        tmp_path / "postgres", "echo\necho 'postgres (PostgreSQL) 16.4'\necho more\n"
    )
    assert detect_version("postgres", str(program)) == "postgres (PostgreSQL) 16.4"


@pytest.mark.live
def test_estimate_records_the_servers_version(tmp_path: Path) -> None:
    """A real recognised server: php-fpm from the system, with a pool of 3 in a temp dir."""
    fpm = shutil.which("php-fpm8.2") or "/usr/sbin/php-fpm8.2"
    if not os.path.exists(fpm):
        pytest.skip("php-fpm8.2 is not installed (.ci/install-system-packages installs it)")
    config = tmp_path / "php-fpm.conf"
    config.write_text(
        "[global]\n"
        f"pid = {tmp_path}/fpm.pid\nerror_log = {tmp_path}/fpm.log\ndaemonize = no\n"
        "[pool]\n"
        f"listen = {tmp_path}/fpm.sock\n"
        "pm = static\npm.max_children = 3\n"
        + ("user = nobody\ngroup = nogroup\n" if os.geteuid() == 0 else "")
    )
    process = subprocess.Popen(
        [fpm, "--nodaemonize", "--fpm-config", str(config)] + (["-R"] if os.geteuid() == 0 else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            if children.exists() and len(children.read_text().split()) == 3:
                break
            time.sleep(0.1)
        saved = tmp_path / "fpm.json"
        result = run_cli(
            "estimate", "--pid", str(process.pid), "--samples", "2", "--interval", "0.2",
            "--save", str(saved),
        )  # fmt: skip
    finally:
        # The pool's workers share the master's process group: stop them all.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert result.code == 0, result.stderr
    env = json.loads(saved.read_text())["environment"]
    assert env["executable"].endswith("php-fpm8.2")
    assert env["executable_version"].startswith("PHP 8.2")
    text = run_cli("predict", str(saved), "--memory", "2G")
    assert "pm.max_children = " in text.stdout
