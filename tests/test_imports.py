"""The module graph: no import cycle among vaekit's modules (imports at module level; an
import inside a function runs when called, after every module has loaded)."""

import ast
from pathlib import Path

import vaekit

ROOT = Path(vaekit.__file__).parent


def module_name(path: Path) -> str:
    parts = ("vaekit",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """vaekit modules that ``path`` imports at module level (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vaekit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("vaekit"):
                continue
            for a in node.names:  # `from . import x` may name a module
                found.add(f"{base}.{a.name}" if (ROOT.parent / f"{base}.{a.name}".replace(".", "/")
                                                 ).with_suffix(".py").exists() else base)
    return found - {name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: {d for d in top_level_imports(p) if d in modules} for m, p in modules.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_graph_is_read():
    g = graph()
    assert "vaekit.model" in g["vaekit.zoo"] and "vaekit.pipeline.training" in g["vaekit.pipeline"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    assert find_cycle(graph()) is None
