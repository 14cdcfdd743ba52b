"""Imports point down only: a test over the package tree, not a list of modules.

The layers are the folders of ``capacity/``. A module's layer is its subpackage
(``capacity/measure/sampler.py`` is in ``measure``); the top-level modules are the bottom
(records, errors, units, the codec, the model file, the output policy) except ``cli`` and
``__main__``, which sit on top. ``LAYERS`` says what each layer may import besides itself;
every ``import`` in every module, including those inside functions, is checked against it,
so a new module is covered the moment it exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "capacity"

# What each layer may import besides itself. measure and model are siblings that never
# import each other: the model is pure (records in, records out), measurement never fits.
LAYERS: dict[str, set[str]] = {
    "bottom": set(),
    "measure": {"bottom"},
    "model": {"bottom"},
    "render": {"bottom", "model"},
    "app": {"bottom", "measure", "model", "render"},
    "testing": {"bottom", "measure", "model", "render", "app"},
    "cli": {"bottom", "measure", "model", "render", "app"},
}
TOP = {"cli", "cli_options", "cli_terminal", "__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "bottom"  # the capacity package itself (its __version__)
    if parts[1] in LAYERS and parts[1] not in ("bottom", "cli"):
        return parts[1]
    return "cli" if parts[1] in TOP else "bottom"


def imports_of(source: str, module: str) -> set[str]:
    """Every capacity module that ``source`` imports, as dotted names."""
    found: set[str] = set()
    package = module if module.count(".") == 0 else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "capacity" or base.startswith("capacity."):
                # "from capacity.measure import sampler" imports capacity.measure.sampler
                found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("capacity"))
    return found


def upward_imports(source: str, module: str) -> list[str]:
    """The imports in ``source`` that point up or sideways out of ``module``'s layer."""
    own = layer_of(module)
    allowed = LAYERS[own] | {own}
    bad = []
    for target in sorted(imports_of(source, module)):
        if layer_of(target) not in allowed:
            bad.append(f"{module} ({own}) imports {target} ({layer_of(target)})")
    return bad


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_layers() -> None:
    found = {layer_of(module_name(p)) for p in MODULES}
    assert found == set(LAYERS), found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    assert upward_imports(path.read_text(), module_name(path)) == []


def test_an_upward_import_fails() -> None:
    """The checker itself: measurement importing the model, or the model rendering."""
    assert upward_imports("from capacity.model import fitting\n", "capacity.measure.sampler")
    assert upward_imports("from capacity.render import report\n", "capacity.model.assemble")
    assert upward_imports("def f():\n    from capacity import cli\n", "capacity.records")
    assert upward_imports("from ..app import inspect\n", "capacity.render.report")
    assert not upward_imports("from capacity.measure import procfs\n", "capacity.app.inspect")


def test_subpackage_inits_import_nothing() -> None:
    """``capplan --help`` imports cli only; an import in a package __init__ would add to it."""
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not imports, f"{init.relative_to(REPO)} imports something"


def test_no_cycles() -> None:
    graph = {
        module_name(p): {
            t for t in imports_of(p.read_text(), module_name(p)) if t != module_name(p)
        }
        for p in MODULES
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path, module])
        if module in done or module not in graph:
            return
        for dep in graph[module]:
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
