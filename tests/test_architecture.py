"""The house rules, checked on the source: imports go one way, no generic package names a family."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ditmeter"

#: package → the ditmeter packages it may import at run time (besides errors and validate).
ALLOWED = {
    "analytic": {"analytic"},
    "tracer": {"tracer"},
    "compare": {"compare", "analytic"},
    "models": {"models", "analytic", "compare"},
    "reports": {"reports", "analytic", "compare"},
    "commands": {"commands", "analytic", "compare", "tracer", "reports", "models", "config"},
}
COMMON = {"errors", "validate", "__init__"}


def _runtime_imports(path: Path) -> set[str]:
    """``ditmeter.<package>`` names a module imports, leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        out |= {n.split(".")[1] for n in names if n.startswith("ditmeter.")}
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    wrong = {
        str(p.relative_to(PACKAGE)): bad
        for p in (PACKAGE / package).rglob("*.py")
        if (bad := _runtime_imports(p) - ALLOWED[package] - COMMON)
    }
    assert wrong == {}


def test_no_generic_package_names_a_family() -> None:
    for package in ("analytic", "tracer", "compare", "reports", "commands"):
        for path in (PACKAGE / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            modules = [
                f"{n.module}.{a.name}" if n.module == "ditmeter.models" else n.module or ""
                for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)
                for a in n.names
            ]
            modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            named = {m for m in modules if m.startswith("ditmeter.models.")}
            assert named <= {"ditmeter.models.family", "ditmeter.models.families"}, path


def test_the_tracer_imports_no_cost_rule() -> None:
    for path in (PACKAGE / "tracer").rglob("*.py"):
        assert _runtime_imports(path) <= {"tracer"}, path
