"""The docs stay true to the code: docs/commands.md and ``--help``, the generated CLI
reference, the README's two commands, the links, and the module map.

As in sqlite-utils: every command is documented in docs/commands.md under
``## capplan NAME`` with an example, its ``--help`` runs and shows an ``Example`` block,
every option that ``--help`` lists is mentioned in that section, and docs/cli.md is exactly
what ``scripts/generate-cli-reference`` writes from the help now. The commands are read from
the typer app itself, so a command added later is covered without touching this file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest
from typer.main import get_command

from capacity.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text()
COMMANDS_MD = (DOCS / "commands.md").read_text()
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]
OPTION = re.compile(r"^\s+(?:-\w,\s+)?(--[a-z][\w-]*)", re.MULTILINE)
ALWAYS = {"--help"}
README_LIMIT = 12_000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "capacity", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def command_section(command: str) -> str:
    """docs/commands.md under ``## capplan COMMAND`` up to the next ``## `` heading
    (its ``###`` subsections, such as ``estimate --launch``, included)."""
    match = re.search(
        rf"^## capplan {re.escape(command)}\s*$(.*?)(?=^## |\Z)",
        COMMANDS_MD,
        re.MULTILINE | re.DOTALL,
    )
    assert match, f"docs/commands.md has no '## capplan {command}' section"
    return match.group(1)


def help_options(command: str) -> set[str]:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    options_part = result.stdout.split("Options:", 1)[1]
    return set(OPTION.findall(options_part)) - ALWAYS


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[\w-]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_there_are_commands() -> None:
    assert "estimate" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_documented_with_an_example(command: str) -> None:
    section = command_section(command)
    examples = [line for block in code_blocks(section) for line in block.splitlines()]
    assert any(line.startswith(f"capplan {command}") for line in examples), (
        f"docs/commands.md's section on capplan {command} has no example in a code block"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_and_shows_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    before_options = result.stdout.split("Options:", 1)[0]
    assert "Example" in before_options
    assert f"capplan {command}" in before_options.split("Example", 1)[1]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_help_is_documented(command: str) -> None:
    options = help_options(command)
    assert options, f"capplan {command} --help lists no options"
    # The help is typer's rendering of the command's parameters: it lists all of them.
    params = get_command(app).commands[command].params  # type: ignore[attr-defined]
    declared = {opt for p in params for opt in p.opts if opt.startswith("--")}
    assert options == declared - ALWAYS
    section = command_section(command)
    missing = sorted(opt for opt in options if not re.search(rf"{opt}(?![\w-])", section))
    assert not missing, f"docs/commands.md's capplan {command} does not mention {missing}"


def test_top_level_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def generator() -> ModuleType:
    path = REPO / "scripts" / "generate-cli-reference"
    loader = SourceFileLoader("generate_cli_reference", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_cli_reference_is_what_the_generator_writes_now() -> None:
    expected = generator().render()
    assert (DOCS / "cli.md").read_text() == expected, (
        "docs/cli.md is stale: run scripts/generate-cli-reference"
    )


def test_cli_reference_covers_every_command() -> None:
    reference = (DOCS / "cli.md").read_text()
    for command in COMMANDS:
        assert f"\n## capplan {command}\n" in reference, command


def test_readme_is_short_and_opens_with_the_two_commands() -> None:
    size = len(README.encode())
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}"
    blocks = code_blocks(README)
    assert len(blocks) >= 2
    assert "capplan estimate --demo" in blocks[0]
    test_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert blocks[1].strip() == test_command, (
        f"README's second code block must be exactly .ci/run's test command: {test_command}"
    )


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "page", [REPO / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][\w+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_architecture_names_every_module() -> None:
    architecture = (DOCS / "architecture.md").read_text()
    package = REPO / "capacity"
    modules = [
        path.relative_to(package).with_suffix("").as_posix()
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
    ]
    assert modules
    missing = [m for m in modules if f"`{m}`" not in architecture]
    assert not missing, f"docs/architecture.md does not name {missing}"
