"""The layers hold: no service loads the development stack or the CLI (they stand on the kit,
not under it), and the kit's modules import one another without a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Sequence
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
KIT = REPOSITORY / "choreo"

SERVICES = (
    "gateway_service",
    "user_service",
    "order_service",
    "payment_service",
    "inventory_service",
    "notification_service",
)
DEV_ONLY = ("choreo.stack", "choreo.cli")

# Run in a fresh interpreter, so that nothing this test run imported hides what the service loads.
PROBE = """
import sys
import {service}.main
dev_only = {dev_only!r}
inside = tuple(package + "." for package in dev_only)
print(*sorted(name for name in sys.modules if name in dev_only or name.startswith(inside)))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_loads_no_module_of_the_dev_stack_or_the_cli(service: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", PROBE.format(service=service, dev_only=DEV_ONLY)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == [], f"{service}.main loads {finished.stdout.strip()}"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_run_on_load(statements: Sequence[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: not those in functions (run
    when called) nor under `if TYPE_CHECKING:` (never run)."""
    for statement in statements:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(statement, ast.If) and is_type_checking(statement.test):
            yield from imports_run_on_load(statement.orelse)
        else:
            for body in ("body", "orelse", "finalbody"):
                yield from imports_run_on_load(getattr(statement, body, []))
            for handler in getattr(statement, "handlers", []):
                yield from imports_run_on_load(handler.body)
            for case in getattr(statement, "cases", []):
                yield from imports_run_on_load(case.body)


def kit_imports(modules: dict[str, Path], name: str) -> set[str]:
    """The kit's modules that module `name` imports when it is loaded."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported: set[str] = set()
    for statement in imports_run_on_load(ast.parse(path.read_text()).body):
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                anchor = package.split(".")[: len(package.split(".")) - statement.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import name` imports the submodule `name` if there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in statement.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]  # a name in a module: the module
            if target and target != name:
                imported.add(target)
    return imported


def test_the_kit_has_no_import_circle() -> None:
    modules = {module_name(path): path for path in KIT.rglob("*.py")}
    graph = {name: kit_imports(modules, name) for name in modules}
    assert "choreo.settings" in graph["choreo.service"]  # the walk sees the kit's imports
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(
            f"the kit's modules import each other in a circle: {' -> '.join(error.args[1])}"
        )
