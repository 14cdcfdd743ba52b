"""README and ``--help`` stay true to each other, for every command of the app.

As in sqlite-utils: every command is documented in README under ``### `capplan NAME` ``
with an example, its ``--help`` runs and shows an ``Example`` block, and every option that
``--help`` lists is mentioned in that README section. The commands are read from the typer
app itself, so a command added later is covered without touching this file.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_cli
from typer.main import get_command

from capacity.cli import app

README = (REPO / "README.md").read_text()
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]
OPTION = re.compile(r"^\s+(?:-\w,\s+)?(--[a-z][\w-]*)", re.MULTILINE)
ALWAYS = {"--help"}


def readme_section(command: str) -> str:
    """The README text under ``### `capplan COMMAND` ...`` up to the next heading."""
    match = re.search(
        rf"^### `capplan {re.escape(command)}`.*?$(.*?)(?=^##)", README, re.MULTILINE | re.DOTALL
    )
    assert match, f"README has no '### `capplan {command}`' section"
    return match.group(1)


def help_options(command: str) -> set[str]:
    result = run_cli(command, "--help")
    assert result.code == 0, result.stderr
    options_part = result.stdout.split("Options:", 1)[1]
    return set(OPTION.findall(options_part)) - ALWAYS


def test_there_are_commands() -> None:
    assert "estimate" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_in_readme_with_an_example(command: str) -> None:
    section = readme_section(command)
    blocks = re.findall(r"```(?:sh|console|bash)?\n(.*?)```", section, re.DOTALL)
    examples = [line for block in blocks for line in block.splitlines()]
    assert any(line.startswith(f"capplan {command}") for line in examples), (
        f"README's section on capplan {command} has no example command in a code block"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_and_shows_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    before_options = result.stdout.split("Options:", 1)[0]
    assert "Example" in before_options
    assert f"capplan {command}" in before_options.split("Example", 1)[1]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_help_is_in_readme(command: str) -> None:
    options = help_options(command)
    assert options, f"capplan {command} --help lists no options"
    # The help is typer's rendering of the command's parameters: it lists all of them.
    params = get_command(app).commands[command].params  # type: ignore[attr-defined]
    declared = {opt for p in params for opt in p.opts if opt.startswith("--")}
    assert options == declared - ALWAYS
    section = readme_section(command)
    missing = sorted(opt for opt in options if not re.search(rf"{opt}(?![\w-])", section))
    assert not missing, f"README's section on capplan {command} does not mention {missing}"


def test_top_level_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.code == 0, result.stderr
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
