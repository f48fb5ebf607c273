"""The packages point one way (docs/experiments.md, "The packages, and what each may import"):
a module-level import that climbs a layer fails here, naming the module and the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "robustlab"
CORE = {"errors", "registry", "io", "provenance", "device", "precision", "batching", "modes"}
ALLOWED: dict[str, set[str]] = {
    "config": CORE,
    "data": CORE,
    "models": CORE,
    "attacks": CORE | {"models"},
    "defenses": CORE | {"models"},
    "store": CORE | {"config", "data", "models"},
    "evaluate": CORE | {"data", "attacks", "defenses", "store"},
    "train": CORE | {"config", "data", "models", "attacks", "defenses", "evaluate", "store"},
    "crypto": CORE | {"models", "attacks"},
    "compression": CORE,
    "experiments": CORE
    | {"config", "data", "models", "attacks", "defenses", "store", "evaluate", "train"}
    | {"compression"},
}
"""Each package's allowed robustlab imports besides itself (``cli`` may import everything)."""


def module_imports(path: Path) -> list[tuple[int, str]]:
    """Top-level ``robustlab.X`` imports of a module, outside ``if TYPE_CHECKING`` blocks."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robustlab."):
            found.append((node.lineno, node.module.split(".")[1]))  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("robustlab."):
                    found.append((node.lineno, alias.name.split(".")[1]))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    climbing = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, imported in module_imports(path):
            if imported != package and imported not in ALLOWED[package]:
                climbing.append(f"{path.relative_to(PACKAGE)}:{line} imports robustlab.{imported}")
    assert not climbing, "\n".join(climbing)


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_modules_import_only_each_other(module: str) -> None:
    imported = {name for _, name in module_imports(PACKAGE / f"{module}.py")}
    assert imported <= CORE, imported - CORE


def test_only_the_cli_prints() -> None:
    printing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.parts[-2] != "cli"
        and any(
            isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert not printing, printing
