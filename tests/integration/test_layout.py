"""The layout rules of docs/layout.md, read from the source (no package is imported):

- no import cycle between the modules of a package, counting every import (those inside
  functions too: a lazy import hides a cycle, it does not remove it);
- an import inside a function is there for a reason written beside it: a ``# lazy:``
  comment between the ``def`` line and the function's first such import;
- each room imports only the rooms below it: the command-line modules are the only ones that
  use typer, rich or print, and nothing imports them; stn-train's data layer does not import
  the network, the training loop or the commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "bfm_prep": REPO / "packages" / "bfm-prep" / "src" / "bfm_prep",
    "stn_core": REPO / "packages" / "stn-core" / "src" / "stn_core",
    "stn_train": REPO / "packages" / "stn-train" / "src" / "stn_train",
}
LAZY_TAG = "# lazy:"


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package``."""
    root = PACKAGES[package]
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module name an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str, path: Path, node: ast.AST, known: set[str]) -> list[str]:
    """The modules an import statement names: ``from a import b`` is a.b when that is a
    module, else a."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _resolve(module, node, path.name == "__init__.py")
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return []


def _all_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module ``module`` imports, anywhere in it, but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) not in skip:
            found |= set(_imported(module, path, node, known))
    return found


def _graph(package: str) -> dict[str, set[str]]:
    mods = _modules(package)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        graph[name] = {m for m in _all_imports(path, name, known) if m in known} - {name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package):
    cycle = _find_cycle(_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _function_imports(tree: ast.Module):
    """(function, its import statements) for every function, nested functions apart."""

    def own_imports(fn):
        todo = list(fn.body)
        while todo:
            node = todo.pop(0)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                todo += list(ast.iter_child_nodes(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            imports = sorted(own_imports(node), key=lambda n: n.lineno)
            if imports:
                yield node, imports


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_lazy_imports_say_why(package):
    unexplained = []
    for path in _modules(package).values():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for fn, imports in _function_imports(tree):
            first = imports[0].lineno
            span = lines[fn.lineno - 1 : first]
            if not any(LAZY_TAG in line for line in span):
                unexplained.append(f"{path.relative_to(REPO)}:{first} ({fn.name})")
    assert not unexplained, (
        f"imports inside functions without a '{LAZY_TAG} <why>' comment between the def and "
        "the first one (move them to the top, or say why they must wait): " + ", ".join(unexplained)
    )


def _calls_print(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        for n in ast.walk(tree)
    )


def _is_cli(module: str) -> bool:
    return ".cli" in module + "." and module.split(".")[1] == "cli"


@pytest.mark.parametrize("package", ["bfm_prep", "stn_train"])
def test_only_the_commands_speak_to_the_terminal(package):
    mods = _modules(package)
    known = set(mods)
    offenders = []
    for name, path in mods.items():
        if name.split(".")[1:2] == ["cli"] or name == f"{package}.__main__":
            continue
        imports = _all_imports(path, name, known)
        terminal = {m for m in imports if m.split(".")[0] in ("typer", "rich")}
        cli = {m for m in imports if m.startswith(f"{package}.cli")}
        if terminal or cli or _calls_print(path):
            what = sorted(terminal | cli) + (["print()"] if _calls_print(path) else [])
            offenders.append(f"{name}: {', '.join(what)}")
    assert not offenders, "library modules that parse, print or import the CLI: " + "; ".join(
        offenders
    )


def test_stn_train_data_stays_below_the_network_and_the_loop():
    mods = _modules("stn_train")
    known = set(mods)
    above = (
        "stn_train.localiser",
        "stn_train.backbones",
        "stn_train.train",
        "stn_train.cli",
        "stn_train.evaluate",
        "stn_train.predict",
        "stn_train.fit",
    )
    offenders = []
    for name, path in mods.items():
        if not name.startswith("stn_train.data"):
            continue
        bad = sorted(m for m in _all_imports(path, name, known) if m.startswith(above))
        if bad:
            offenders.append(f"{name}: {', '.join(bad)}")
    assert not offenders, "the data layer reaches up: " + "; ".join(offenders)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_private_names_imported_across_modules(package):
    """``from x import _name`` nowhere: what another module needs is public (private
    *modules* such as ``stn_core._validate`` are fine; their names are public within the
    package)."""
    offenders = []
    for name, path in _modules(package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(name, node, path.name == "__init__.py")
                offenders += [
                    f"{name} imports {a.name} from {source}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not offenders, "private names reached across modules: " + "; ".join(offenders)
