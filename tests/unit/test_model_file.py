"""The model file: what it holds, how it is written, and how a damaged one is refused.

Damaged files are made from the committed model (a real run) by truncating or hand-editing
it the way people do, then fed to the commands that load models. Each must fail with one
line naming the field, exit 2 and no traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli

from capacity import codec, modelfile, records
from capacity.errors import CapplanError, ModelFileError

MODEL = REPO / "models" / "demo.json"


def committed() -> dict[str, Any]:
    return json.loads(MODEL.read_text())


def write(tmp_path: Path, doc: Any, name: str = "x.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def edited(path: str, value: Any) -> dict[str, Any]:
    """The committed model with one value replaced; ``path`` is dotted, DELETE removes it."""
    doc = committed()
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()


def test_committed_model_holds_everything_the_issue_lists() -> None:
    doc = committed()
    assert doc["kind"] == "capplan.estimate"
    # Saved before schema 2 (which only added ``probe``): it must still read as it is.
    assert doc["schema_version"] in records.SUPPORTED_SCHEMAS
    # Raw samples: every process of every snapshot with its own figures.
    assert len(doc["samples"]) == doc["measurement"]["samples"] >= 2
    assert 1 <= doc["model"]["n_samples"] <= len(doc["samples"])
    for snapshot in doc["samples"]:
        assert len(snapshot["processes"]) == doc["workload"]["worker_count"] + 1
        for process in snapshot["processes"]:
            assert process["rollup"]["rss_bytes"] >= process["rollup"]["pss_bytes"] > 0
    model = doc["model"]
    low, high = model["per_instance_ci95"]
    assert low <= model["per_instance_bytes"] <= high
    assert model["method"] in ("exact", "smaps")
    if model["method"] == "exact":  # the page walk is kept with the samples that took one
        assert any(snapshot.get("pages") for snapshot in doc["samples"])
    for key in ("total_bytes", "reserve_bytes", "available_bytes", "source"):
        assert key in doc["budget"]
    assert doc["prediction"]["max_instances"] > 0
    assert {"largest_rss", "pss", "capplan"} <= set(doc["estimators"])
    assert isinstance(doc["warnings"], list)
    env = doc["environment"]
    for key in (
        "hostname",
        "kernel",
        "thp_enabled",
        "ksm_run",
        "mem_total_bytes",
        "cpu_count",
        "capplan_version",
        "executable",
        "executable_version",
        "time",
    ):
        assert key in env, key
    assert env["command_line"][:3] == ["capplan", "estimate", "--demo"]
    assert doc["measurement"]["samples"] == len(doc["samples"])
    assert doc["measurement"]["demo"]["private_bytes"] == 16 * 1024 * 1024


def test_model_round_trips_through_the_codec() -> None:
    estimate = modelfile.load_estimate(MODEL)
    again = modelfile.estimate_from_dict(json.loads(codec.dumps(estimate)))
    assert again == estimate


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            edited("model.per_instance_bytes", "17M"),
            "field 'model.per_instance_bytes': expected an integer, got a string",
        ),
        (
            edited("model.per_instance_bytes", 0),
            "field 'model.per_instance_bytes': must be more than 0",
        ),
        (edited("model.per_instance_bytes", DELETE), "field 'model.per_instance_bytes': missing"),
        (
            edited("model.per_instance_ci95", [1, 2, 3]),
            "field 'model.per_instance_ci95': expected 2 items, got 3",
        ),
        (
            edited("model.per_instance_ci95", [20000000, 10]),
            "field 'model.per_instance_ci95': the lower end",
        ),
        (edited("model.method", "guess"), "field 'model.method': expected one of"),
        (edited("model.r2", "NaN"), "field 'model.r2': expected a number, got a string"),
        (edited("budget.available_bytes", 1), "field 'budget.available_bytes': must equal"),
        (
            edited("environment.thp_enabled", None),
            "field 'environment.thp_enabled': expected a string, got null",
        ),
        (edited("samples", []), "field 'samples': expected at least one sample"),
        (
            edited("samples.0.processes.0.rollup.rss_bytes", True),
            "field 'samples[0].processes[0].rollup.rss_bytes': expected an integer, got a boolean",
        ),
        (edited("schema_version", 99), "schema_version 99 is not supported"),
        (edited("schema_version", "1"), "field 'schema_version' is '1', not an integer"),
        (edited("kind", "something.else"), "not a capplan model"),
        ([1, 2, 3], "the top level is not an object"),
    ],
    ids=[
        "wrong-type",
        "zero-cost",
        "missing-field",
        "tuple-length",
        "swapped-interval",
        "unknown-method",
        "string-number",
        "inconsistent-budget",
        "null-string",
        "no-samples",
        "bool-for-int",
        "future-version",
        "string-version",
        "wrong-kind",
        "not-an-object",
    ],
)
def test_damaged_model_gives_one_line_naming_the_field(
    tmp_path: Path, doc: Any, needle: str
) -> None:
    path = write(tmp_path, doc)
    result = run_cli("predict", str(path))
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"Error: {path}: "), first
    assert needle in first, first
    assert result.stdout == ""


def test_every_command_that_loads_a_model_refuses_a_damaged_one(tmp_path: Path) -> None:
    path = write(tmp_path, edited("model.fixed_bytes", "73M"))
    needle = f"Error: {path}: field 'model.fixed_bytes': expected an integer, got a string"
    for command in (["report", str(path)], ["check", str(path), "--demo"]):
        result = run_cli(*command)
        assert result.code == 2, (command, result.stderr)
        assert result.stderr.splitlines()[0] == needle
        assert result.stdout == ""
    # As a --current model, too: named as such.
    result = run_cli("check", str(MODEL), "--current", str(path))
    assert result.code == 2
    assert result.stderr.splitlines()[0] == needle


def test_future_version_says_to_upgrade(tmp_path: Path) -> None:
    result = run_cli("predict", str(write(tmp_path, edited("schema_version", 2))))
    assert result.code == 2
    assert "Hint: upgrade capplan" in result.stderr


def test_nan_and_infinity_are_refused(tmp_path: Path) -> None:
    """json.loads accepts NaN; a hand-edited NaN must not reach the maths. The reader
    refuses the literal where it stands; the codec refuses a NaN in a document built in
    memory, naming the field."""
    text = MODEL.read_text().replace('"r2": ', '"r2": NaN, "ignored": ', 1)
    line = text[: text.index("NaN")].count("\n") + 1
    result = run_cli("predict", str(write(tmp_path, text)))
    assert result.code == 2
    assert f"not valid JSON (line {line}, column 11: NaN is not a JSON number)" in result.stderr
    for literal in ("Infinity", "-Infinity"):
        path = write(tmp_path, MODEL.read_text().replace('"r2": ', f'"r2": {literal}, "x": ', 1))
        with pytest.raises(ModelFileError, match=f"{literal} is not a JSON number"):
            modelfile.load_estimate(path)
    # A string that says NaN is a string, not the literal.
    path = write(tmp_path, MODEL.read_text().replace('"r2": ', '"r2": "NaN", "r": ', 1))
    with pytest.raises(ModelFileError, match=r"field 'model\.r2': expected a number, got a string"):
        modelfile.load_estimate(path)
    with pytest.raises(
        ModelFileError, match=r"field 'model\.r2': expected a finite number, got nan"
    ):
        modelfile.estimate_from_dict(edited("model.r2", float("nan")))


@pytest.mark.parametrize("keep", [0, 1, 100, 5000, -2])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    text = MODEL.read_text()
    result = run_cli("predict", str(write(tmp_path, text[:keep])))
    assert result.code == 2
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_directory_and_binary(tmp_path: Path) -> None:
    result = run_cli("predict", str(tmp_path / "nope.json"))
    assert result.code == 2 and "no such file" in result.stderr
    assert "capplan estimate ... --save" in result.stderr
    result = run_cli("predict", str(tmp_path))
    assert result.code == 2 and "is a directory" in result.stderr
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = run_cli("predict", str(binary))
    assert result.code == 2 and "not a text file" in result.stderr


def test_old_file_without_new_fields_still_loads(tmp_path: Path) -> None:
    """Fields added after schema 1 have defaults: a file from before them loads."""
    doc = committed()
    del doc["measurement"]
    del doc["budget"]["reserve_fraction"]
    result = run_cli("predict", str(write(tmp_path, doc)), "--memory", "8G")
    assert result.code == 0, result.stderr


def test_activity_and_the_selected_cgroup_round_trip_and_old_files_lack_them() -> None:
    """Issue 13's fields: an estimate with activity, a workload.cgroup and per-process CPU
    figures reads back equal; models/demo.json, saved before them, reads them as None."""
    old = modelfile.estimate_from_dict(committed())
    assert old.activity is None and old.workload.cgroup is None
    assert all(p.cpu_seconds is None and p.voluntary_switches is None
               for s in old.samples for p in s.processes)  # fmt: skip
    first, *rest = old.samples
    processes = tuple(
        dataclasses.replace(p, cpu_seconds=1.25, voluntary_switches=7, nonvoluntary_switches=2)
        for p in first.processes
    )
    new = dataclasses.replace(
        old,
        samples=(dataclasses.replace(first, processes=processes), *rest),
        workload=dataclasses.replace(old.workload, cgroup="/system.slice/php8.2-fpm.service"),
        activity=records.Activity(state="busy", workers=4, busy_workers=1, duration_seconds=4.0,
                                  cpu_seconds=0.3, cpu_per_worker=0.019, busiest_cpu=0.075,
                                  context_switches=800, switches_per_second=200.0,
                                  switches_per_worker=50.0),
    )  # fmt: skip
    again = modelfile.estimate_from_dict(json.loads(codec.dumps(new)))
    assert again == new
    with pytest.raises(ModelFileError, match=r"field 'activity.state': expected one of"):
        damaged = json.loads(codec.dumps(new))
        damaged["activity"]["state"] = "sleepy"
        modelfile.estimate_from_dict(damaged)


def test_writes_are_atomic_and_keep_a_readable_mode(tmp_path: Path) -> None:
    estimate = modelfile.load_estimate(MODEL)
    target = tmp_path / "m.json"
    modelfile.save_estimate(target, estimate)
    assert modelfile.load_estimate(target) == estimate
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(CapplanError, match="already exists"):  # the output policy
        modelfile.save_estimate(target, estimate)
    target.chmod(0o640)
    modelfile.save_estimate(target, estimate, force=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # replacing keeps the file's mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporary left


def test_estimate_save_refuses_to_replace_without_force(tmp_path: Path) -> None:
    target = tmp_path / "demo.json"
    target.write_text("precious")
    result = run_cli("estimate", "--demo", "--samples", "1", "--save", str(target))
    assert result.code == 2
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert target.read_text() == "precious"


# --------------------------------------------------------------------------- bounded reader


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "m.json"
    os.mkfifo(fifo)
    result = run_cli("predict", str(fifo), timeout=20)
    assert result.code == 2
    assert (
        result.stderr.splitlines()[0] == f"Error: {fifo}: is a FIFO (named pipe), not a model file"
    )


def test_a_symlink_to_dev_zero_is_refused_unread(tmp_path: Path) -> None:
    link = tmp_path / "m.json"
    link.symlink_to("/dev/zero")
    result = run_cli("predict", str(link), timeout=20)
    assert result.code == 2
    assert (
        result.stderr.splitlines()[0] == f"Error: {link}: is a character device, not a model file"
    )
    with pytest.raises(ModelFileError, match="is a character device"):
        modelfile.load_estimate(Path("/dev/null"))


def test_a_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ModelFileError, match="is a socket, not a model file"):
            modelfile.load_estimate(path)


def test_an_oversize_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:  # sparse: no disk and no memory spent
        handle.truncate(modelfile.MAX_MODEL_BYTES + 1)
    result = run_cli("predict", str(big), timeout=20)
    assert result.code == 2
    assert result.stderr.splitlines()[0] == (
        f"Error: {big}: is larger than 128 MiB, the most a model file may be"
    )
    assert "Hint:" in result.stderr
    # Exactly at the limit it is read, and refused for what it holds.
    with big.open("r+b") as handle:
        handle.truncate(modelfile.MAX_MODEL_BYTES)
    with pytest.raises(ModelFileError, match="not valid JSON"):
        modelfile.parse_model_text(b" " * 10 + b"\0", str(big))


def test_the_limit_has_room_for_a_large_real_model(tmp_path: Path) -> None:
    """2,000 processes x 10 samples, from the committed model's records, fits 5 times over."""
    doc = committed()
    snapshot = doc["samples"][0]
    worker = next(p for p in snapshot["processes"] if p["role"] == "worker")
    one = len(json.dumps(worker, indent=2)) + 2
    assert 2000 * 10 * one * 5 < modelfile.MAX_MODEL_BYTES


def test_a_five_thousand_digit_integer_is_one_line(tmp_path: Path) -> None:
    text = MODEL.read_text().replace('"dof": ', '"dof": ' + "9" * 5000 + ', "x": ', 1)
    result = run_cli("predict", str(write(tmp_path, text)))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "an integer of more than 4300 digits" in result.stderr.splitlines()[0]


def test_a_huge_integer_is_out_of_range_naming_the_field(tmp_path: Path) -> None:
    for value in (10**400, -(2**64), 2**63 + 1):
        path = write(tmp_path, edited("model.per_instance_bytes", value))
        with pytest.raises(
            ModelFileError, match=r"field 'model.per_instance_bytes': .* out of range"
        ):
            modelfile.load_estimate(path)
    # A float field given a huge integer: refused, not an OverflowError from float().
    with pytest.raises(ModelFileError, match=r"field 'model.r2': .* out of range"):
        modelfile.load_estimate(write(tmp_path, edited("model.r2", 10**400)))


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    for depth in (1000, 100_000):
        text = MODEL.read_text().replace(
            '"dof": ', '"dof": ' + "[" * depth + "]" * depth + ', "x": ', 1
        )
        result = run_cli("predict", str(write(tmp_path, text)))
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr[-300:]
        assert len(result.stderr.splitlines()[0]) < 200
    with pytest.raises(ModelFileError, match="nested too deeply"):
        modelfile.parse_model_text(b"[" * 100_000 + b"]" * 100_000, "x")


def test_invalid_utf8_and_lone_surrogates(tmp_path: Path) -> None:
    raw = MODEL.read_bytes().replace(b'"name": "python"', b'"name": "py\xffthon"', 1)
    path = tmp_path / "u.json"
    path.write_bytes(raw)
    with pytest.raises(ModelFileError, match="not a text file: invalid UTF-8 at byte"):
        modelfile.load_estimate(path)
    text = MODEL.read_text().replace('"name": "python"', '"name": "py\\ud800thon"', 1)
    with pytest.raises(ModelFileError, match=r"field 'workload.name': not text: a lone surrogate"):
        modelfile.load_estimate(write(tmp_path, text))


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    text = MODEL.read_text().replace('"dof": ', '"dof": 1, "dof": ', 1)
    with pytest.raises(ModelFileError, match="the key 'dof' appears twice in one object"):
        modelfile.load_estimate(write(tmp_path, text))
