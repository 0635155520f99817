"""The layering of ``xapp``: transport → pipeline → components → engines, and no import cycle.

Imports are read from the source (module level and inside functions alike), so a lazy import that runs
upward fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "xapp"
# What each lower layer must never import: the layers above it.
UPWARD = {
    "xapp.components": ("xapp.pipeline", "xapp.server", "xapp.cli", "xapp.bench"),
    "xapp.llm": ("xapp.components", "xapp.pipeline", "xapp.server", "xapp.cli", "xapp.bench", "xapp.store"),
    "xapp.store": ("xapp.components", "xapp.pipeline", "xapp.server", "xapp.cli", "xapp.bench", "xapp.llm"),
    "xapp.pipeline": ("xapp.server", "xapp.cli", "xapp.bench"),
    "xapp.domain": ("xapp.",),
    "xapp.text": ("xapp.",),
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("xapp")}


def _graph() -> dict[str, set[str]]:
    files = [p for p in ROOT.rglob("*.py") if "_proto" not in p.parts]
    modules = {_module(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_lower_layers_never_import_upward() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        for layer, banned in UPWARD.items()
        if mod == layer or mod.startswith(layer + ".")
        for dep in deps
        if any(dep == b.rstrip(".") or dep.startswith(b if b.endswith(".") else b + ".") or dep == b for b in banned)
        and not dep.startswith(layer)
    ]
    assert not wrong, wrong


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
