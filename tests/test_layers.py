"""The package's layers point one way, with no import cycle hidden anywhere.

Rule: base modules (``errors``, ``io``, ``progress``, ``metrics``) <- ``data`` <- ``models`` <-
``training`` <- ``evaluation`` <- ``export``; the CLI (``cli/``, another package) sits on top.
Every ``.py`` file of ``geco_tf/`` is parsed with ``ast`` and *every* import is read, those
inside functions included (a function-local import that hides a cycle is still a cycle). The
test fails on a cycle between files, a cycle between subpackages, a lower layer importing a
higher one, ``import click`` in the library, and a ``_private`` name imported from another
module (in ``geco_tf``, ``cli``, ``tests``, ``benchmarks`` and ``experiments``), and a test that
imports a benchmark or experiment script.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geco_tf"
LAYERS = {"base": 0, "data": 1, "models": 2, "training": 3, "evaluation": 4, "export": 5}


@functools.cache
def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` in ``geco_tf/``."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    return files


def imported_names(path: Path, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every ``(dotted name, line)`` ``path`` imports, anywhere in the file; relative imports
    resolved; ``from a import b`` gives ``a.b`` (a submodule or a name in ``a``)."""
    found = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest module of the package that ``name`` is or lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """File-level graph: module -> modules of ``geco_tf`` it imports (the package root's
    ``__init__`` is not an edge: importing ``geco_tf.x`` runs it, it imports nothing heavy)."""
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name, _ in imported_names(path, module, path.name == "__init__.py"):
            if not name.startswith("geco_tf"):
                continue
            target = resolve(name, modules)
            if target and target not in (module, "geco_tf"):
                graph[module].add(target)
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "base"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_finds_a_planted_cycle():
    """The checker itself: a cycle through three files is one component; a chain is none."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_every_module_is_seen_with_its_function_local_imports():
    graph = import_graph()
    assert len(graph) > 40 and "geco_tf.evaluation.report" in graph
    assert "geco_tf.training.run" in graph["geco_tf.evaluation.report"]


def test_no_import_cycle_between_files():
    found = cycles(import_graph())
    assert found == [], f"import cycles between files: {found}"


def test_no_cycle_between_subpackages_and_layers_point_down():
    graph = import_graph()
    upward = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if LAYERS[layer_of(target)] > LAYERS[layer_of(source)]
    )
    assert upward == [], "a lower layer imports a higher one:\n" + "\n".join(upward)
    packages: dict[str, set[str]] = {}
    for source, targets in graph.items():
        packages.setdefault(layer_of(source), set()).update(layer_of(t) for t in targets if layer_of(t) != layer_of(source))
    assert cycles(packages) == []


def test_the_library_does_not_import_click():
    modules = module_files()
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for module, path in modules.items()
        for name, line in imported_names(path, module, path.name == "__init__.py")
        if name == "click" or name.startswith("click.")
    ]
    assert offenders == [], f"geco_tf imports click (the CLI's job): {offenders}"


def test_no_private_name_is_imported_from_another_module():
    """``from geco_tf.x import _name`` (or ``geco_tf.x._name``) outside ``geco_tf/x``."""
    offenders = []
    modules = module_files()
    for folder in ("geco_tf", "cli", "tests", "benchmarks", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = parse(path)
            aliases = _geco_aliases(tree, modules)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("geco_tf"):
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    if private:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {private}")
                elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    base = node.value
                    while isinstance(base, ast.Attribute):
                        base = base.value
                    if isinstance(base, ast.Name) and (base.id == "geco_tf" or base.id in aliases):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {base.id}...{node.attr}")
    assert offenders == [], "private names used outside their module:\n" + "\n".join(offenders)


def test_no_test_imports_a_benchmark_or_an_experiment():
    """Benchmarks and experiments are scripts, not the product: tests run benchmarks in a
    subprocess (``test_benchmarks.py``) and never touch experiments."""
    scripts = {p.stem for folder in ("benchmarks", "experiments") for p in (ROOT / folder).glob("*.py")}
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(parse(path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in scripts]
            if (  # sys.path.insert(...) / sys.path.append(...): how scripts used to be imported
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append") and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "path" and isinstance(node.func.value.value, ast.Name)
                and node.func.value.value.id == "sys"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} changes sys.path")
    assert offenders == [], "tests importing scripts:\n" + "\n".join(offenders)


def _geco_aliases(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Names bound to a ``geco_tf`` module in ``tree`` (``from geco_tf.x import y``,
    ``import geco_tf.x as y``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("geco_tf"):
            names.update(a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in modules)
        elif isinstance(node, ast.Import):
            names.update(a.asname for a in node.names if a.asname and a.name.startswith("geco_tf"))
    return names
