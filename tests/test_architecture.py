"""The package's layout holds: the journey's steps in order, no module importing a later step, no import circles.

    foundation (errors, config, ledger, keys, rules, reference/, ...)
      <- intake/ <- returns/ <- delivery/ <- admin/
    the composition (app, pipeline, scheduler, cli) and the demo, which runs the whole journey, may import anything.

Every import counts, including those made only for type checking or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
STEPS = ("intake", "returns", "delivery", "admin")  # in the order of the journey, then the tools
COMPOSITION = {"app", "pipeline", "scheduler", "cli", "__main__", "__init__"}


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The gateway modules that `name` imports, resolved to their dotted names under gateway."""
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            stem = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names:
                whole = ".".join([*stem, alias.name])
                found.add(whole if whole in known else ".".join(stem))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for dotted in ([module] if module else [a.name for a in node.names]):
                if dotted and dotted.startswith("gateway."):
                    found.add(dotted.removeprefix("gateway."))
    return {module for module in found if module in known and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _rank(module: str) -> int | None:
    """0 for the foundation, 1.. for the steps in order, None for the composition."""
    head = module.split(".")[0]
    if head in STEPS:
        return 1 + STEPS.index(head)
    return None if module in COMPOSITION or head == "demo" else 0


def test_no_module_imports_a_later_step():
    wrong = []
    for module, imported in _graph().items():
        mine = _rank(module)
        if mine is None:
            continue
        for other in imported:
            theirs = _rank(other)
            if other == "app" and mine > 0:
                continue  # a step names the Gateway it is given (the composition root's type)
            if theirs is None or theirs > mine:
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_no_import_circles():
    graph = _graph()
    circles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                circles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_checker_sees_imports():
    """The graph is read: a known import of each kind is found (so the tests above can fail)."""
    graph = _graph()
    assert "returns.read" in graph["returns.examine"]  # from .read import ...
    assert "ledger" in graph["delivery.held"]  # from ..ledger import ...
    assert "app" in graph["delivery.held"]  # under TYPE_CHECKING
    assert "returns.read" in graph["returns.extent"] or "errors" in graph["returns.extent"]
    assert _rank("intake.unpack") < _rank("returns.read") < _rank("delivery.pack") < _rank("admin.check")


def test_every_module_says_its_job():
    missing = [name for name, path in _modules().items()
               if ast.get_docstring(ast.parse(path.read_text())) is None]
    assert missing == []
