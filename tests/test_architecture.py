"""The house rules, checked on the source: imports go one way, no generic package names a family."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ditmeter"

#: package → the ditmeter packages it may import at run time (besides errors, validate and files).
ALLOWED = {
    "analytic": {"analytic"},
    "tracer": {"tracer"},
    "compare": {"compare", "analytic"},
    "models": {"models", "analytic", "compare"},
    "reports": {"reports", "analytic", "compare"},
    "commands": {"commands", "analytic", "compare", "tracer", "reports", "models", "config", "catalog"},
}
COMMON = {"errors", "validate", "files", "__init__"}


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
        assert _runtime_imports(path) <= {"tracer"} | COMMON, path


def test_a_new_family_is_one_folder(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder under ditmeter/models/ whose __init__ names FAMILY is a family: no other file changes."""
    import ditmeter.models as models

    folder = tmp_path / "toy"  # type: ignore[operator]
    folder.mkdir()
    (folder / "__init__.py").write_text(
        "from ditmeter.models.wan21.family import Wan21\n\n"
        "class Toy(Wan21):\n    name = 'toy1.0'\n    slug = 'toy1_0'\n\nFAMILY = Toy()\n"
    )
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    assert set(models.families()) == {"wan2.1", "wan2.2", "toy1.0"}
    assert models.family("toy1.0").slug == "toy1_0"


def test_no_modules_import_each_other_in_a_circle() -> None:
    """Every import counts (inside functions and ``if TYPE_CHECKING:`` too); a package's
    ``__init__`` aside, which its own modules name as their parent."""
    import networkx as nx

    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    }
    graph = nx.DiGraph()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph.add_edges_from((module, n) for n in names if n in modules and n != module)
    assert list(nx.simple_cycles(graph)) == []
