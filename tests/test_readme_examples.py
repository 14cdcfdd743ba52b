"""README stays true to --help: every command has a section, its docstring's examples and
every one of its options appear in README (sqlite-utils keeps its docs honest the same way)."""

from __future__ import annotations

import pytest
import typer.main
from conftest import REPO

from capacity.cli import app

README = (REPO / "README.md").read_text()
COMMAND = typer.main.get_command(app)
NAMES = sorted(COMMAND.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
def test_command_has_a_readme_section_with_its_examples(name: str) -> None:
    command = COMMAND.commands[name]  # type: ignore[attr-defined]
    assert f"### `capplan {name}`" in README
    examples = [
        line.strip()
        for line in (command.help or "").split("Example:", 1)[-1].splitlines()
        if line.strip().startswith("capplan ")
    ]
    assert examples, f"capplan {name} --help has no example"
    for example in examples:
        assert example in README, example


@pytest.mark.parametrize("name", NAMES)
def test_every_option_is_documented(name: str) -> None:
    command = COMMAND.commands[name]  # type: ignore[attr-defined]
    section = README.split(f"### `capplan {name}`", 1)[1].split("\n### ", 1)[0]
    for param in command.params:
        for option in param.opts:
            if option.startswith("--") and option not in ("--help", "--root"):
                assert option in section, f"{option} of capplan {name} is not in README"
