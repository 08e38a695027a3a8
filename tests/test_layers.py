"""Dependencies run one way: config -> layers -> model -> peft | quant -> training ->
tasks / recipes -> the CLI and the chapters.

Every module of minillama is imported, then parsed with ``ast``: its imports, at module
level and inside functions (not those under ``if TYPE_CHECKING:``, which never run),
are resolved to minillama modules. No module may reach itself through them (an import
cycle), and the model's own layers import nothing above them.
"""

import ast
import importlib
from pathlib import Path

import pytest

import minillama

ROOT = Path(minillama.__file__).parent
LAYERS = ["config", "norm", "rope", "attention", "feedforward", "moe", "model"]
ABOVE = ["peft", "quant", "devices", "train", "finetune", "dpo", "recipes", "tasks", "checkpoints",
         "__main__"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


class Imports(ast.NodeVisitor):
    """The minillama modules one module imports (``from . import x``: module x if it is one)."""

    def __init__(self, name: str):
        self.package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        self.found: set[str] = set()

    def add(self, name: str):
        while name and name not in MODULES:        # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name:
            self.found.add(name)

    def visit_If(self, node: ast.If):
        test = ast.unparse(node.test)
        if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self.generic_visit(node)
        else:
            for child in node.orelse:
                self.visit(child)

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = self.package.split(".")
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        for alias in node.names:
            self.add(f"{base}.{alias.name}")


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        visitor = Imports(name)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges[name] = visitor.found - {name}
    return edges


def reachable(edges, start) -> dict[str, list[str]]:
    """Every module ``start`` reaches through imports, with one path to it."""
    paths, todo = {}, [[start]]
    while todo:
        path = todo.pop()
        for nxt in sorted(edges[path[-1]]):
            if nxt not in paths:
                paths[nxt] = path + [nxt]
                todo.append(path + [nxt])
    return paths


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycles():
    edges = graph()
    cycles = [" -> ".join(path) for name in sorted(edges)
              if (path := reachable(edges, name).get(name))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_model_layers_import_nothing_above_them():
    edges = graph()
    bad = []
    for layer in LAYERS:
        for name, path in reachable(edges, f"minillama.{layer}").items():
            top = name.split(".")[1]
            if top in ABOVE:
                bad.append(" -> ".join(path))
    assert not bad, "layers importing upwards:\n" + "\n".join(bad)
