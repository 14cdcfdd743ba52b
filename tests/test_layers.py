"""Imports point down only: each module may import only the modules README's map allows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "capacity"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "capacity":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("capacity."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("capacity."):
                    found.add(alias.name.split(".")[1])
    return found


def readme_map() -> dict[str, set[str]]:
    """The module map table in README: | `module` | job | imports |."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    allowed: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`(\w+)`\s*\|[^|]*\|\s*([^|]*)\|", line)
        if match:
            module, deps = match.groups()
            deps = deps.strip()
            if deps in ("—", "-", ""):
                allowed[module] = set()
            elif deps == "everything above":
                allowed[module] = {"*"}
            else:
                allowed[module] = {d.strip() for d in deps.split(",")}
    return allowed


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_every_module_is_in_the_readme_map() -> None:
    documented = set(readme_map())
    assert set(MODULES) == documented, f"README map differs: {set(MODULES) ^ documented}"


def test_imports_point_down_only() -> None:
    allowed = readme_map()
    problems = []
    for module in MODULES:
        if "*" in allowed[module]:
            continue
        extra = imports_of(PACKAGE / f"{module}.py") - allowed[module] - {"__version__"}
        if extra:
            problems.append(
                f"{module} imports {sorted(extra)} (README allows {sorted(allowed[module])})"
            )
    assert not problems, "\n".join(problems)


def test_no_cycles() -> None:
    allowed = readme_map()
    order: list[str] = []
    visiting: set[str] = set()

    def visit(module: str) -> None:
        if module in order:
            return
        assert module not in visiting, f"import cycle through {module}"
        visiting.add(module)
        for dep in imports_of(PACKAGE / f"{module}.py") & set(MODULES):
            visit(dep)
        visiting.discard(module)
        order.append(module)

    for module in allowed:
        if module in MODULES:
            visit(module)
