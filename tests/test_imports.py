"""The house's floors: every import of a vaekit module points down a floor (or stays in its own
package), and the import graph has no cycle. Every import counts: module level, inside
functions, and ``importlib.import_module("vaekit....")`` by name, and the CLI's command table (the one place
that imports by a computed name: ``vaekit.cli.main.COMMANDS``). Optional third-party extras
are imported through one helper, :func:`vaekit.extras.require`.

The floors, lowest first: 0 errors, version; 1 registry, extras, io; 2 data, compute; 3 parts;
4 config; 5 models; 6 runs; 7 evaluation; 8 training, sampling; 9 pipeline; 10 report,
estimator, export; 11 cli.
The package root (``vaekit/__init__``: the lazy ``vaekit.VAE``) and ``__main__`` stand above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vaekit

ROOT = Path(vaekit.__file__).parent
FLOORS = {
    "errors": 0, "version": 0,
    "registry": 1, "io": 1, "extras": 1,
    "data": 2, "compute": 2,
    "parts": 3,  # may read the data's column schema (vaekit.data.schema)
    "config": 4,
    "models": 5,
    "runs": 6,
    "evaluation": 7,
    "training": 8, "sampling": 8,
    "pipeline": 9,
    "report": 10, "estimator": 10, "export": 10,
    "cli": 11,
    "__main__": 12, "": 12,  # "": the package root
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = ("vaekit",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The top-level package (or module) of ``vaekit.<room>....``; "" for the root."""
    return module.split(".")[1] if "." in module else ""


def imports(source: str, name: str, is_package: bool, known: set[str]) -> set[tuple[str, int]]:
    """(vaekit module, line) for every import in ``source``, the module ``name``: anywhere in
    the file, relative ones resolved, ``from pkg import module`` naming the module, and
    ``import_module("vaekit.x")`` calls with a literal name."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()

    def add(target: str, line: int) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target.startswith("vaekit") and target != name:
            found.add((target, line))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("vaekit") and base not in known:  # a module that is not there
                found.add((f"<no module {base}>", node.lineno))
                continue
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno)
        elif (isinstance(node, ast.Call) and node.args
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(arg.value, node.lineno)
            elif name not in ("vaekit.cli.main", "vaekit.extras"):  # hides an edge from readers
                found.add(("<computed import_module>", node.lineno))
        elif (isinstance(node, ast.Assign) and name == "vaekit.cli.main"
              and getattr(node.targets[0], "id", "") == "COMMANDS"):
            for v in node.value.values:  # the command table: "module:function"
                add(v.value.partition(":")[0], v.lineno)
    return found


def graph(root: Path = ROOT) -> dict[str, set[tuple[str, int]]]:
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    return {m: imports(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", set(paths))
            for m, p in paths.items()}


def upward(g: dict[str, set[tuple[str, int]]]) -> list[str]:
    """Every import that does not point down a floor, nor stays in its own package."""
    bad = []
    for m, targets in sorted(g.items()):
        for t, line in sorted(targets):
            if t.startswith("<"):
                bad.append(f"{m}:{line} {t}")
                continue
            if room(t) == room(m):
                continue
            if room(m) not in FLOORS or room(t) not in FLOORS:
                bad.append(f"{m}:{line} -> {t}: a room without a floor (add it to FLOORS)")
            elif FLOORS[room(t)] >= FLOORS[room(m)]:
                bad.append(f"{m}:{line} -> {t} (floor {FLOORS[room(m)]} -> {FLOORS[room(t)]})")
    return bad


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(g.get(m, ())):
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


def plain(g: dict[str, set[tuple[str, int]]]) -> dict[str, set[str]]:
    return {m: {t for t, _ in ts} for m, ts in g.items()}


def test_the_graph_is_read_with_function_level_imports():
    g = plain(graph())
    assert "vaekit.models.vae" in g["vaekit.models.build"]
    assert "vaekit.pipeline.training" in g["vaekit.pipeline"]
    # imported inside a function only: the registries' names for the options' choices
    assert "vaekit.parts.likelihoods" in g["vaekit.config.options"]
    # the CLI's command table, imported by name when a command runs
    assert {"vaekit.cli.train", "vaekit.cli.use", "vaekit.cli.show"} <= g["vaekit.cli.main"]


def test_the_checks_catch_a_planted_upward_import_and_cycle(tmp_path):
    # a copy of two rooms with one planted import inside a function, upwards
    pkg = tmp_path / "vaekit"
    (pkg / "__init__.py").parent.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A copy of two rooms."""\n')
    for rel in ("version.py", "errors.py", "registry.py", "parts/__init__.py", "parts/nets.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text((ROOT / rel).read_text(encoding="utf-8"), encoding="utf-8")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("from vaekit.parts.nets import BODIES\n")
    assert upward(graph(pkg)) == []
    with open(pkg / "parts" / "nets.py", "a") as f:
        f.write("\n\ndef planted():\n    from vaekit.cli import main\n")
    assert [b.split(" ")[0].split(":")[0] for b in upward(graph(pkg))] == ["vaekit.parts.nets"]
    assert find_cycle(plain(graph(pkg))) == ["vaekit.cli.main", "vaekit.parts.nets",
                                             "vaekit.cli.main"]
    (pkg / "errors.py").write_text("import importlib\nimportlib.import_module(f'vaekit.{1}')\n")
    assert any("computed" in b for b in upward(graph(pkg)))
    (pkg / "errors.py").write_text("def f():\n    from .gone import x\n")
    assert any("no module vaekit.gone" in b for b in upward(graph(pkg)))


def test_every_import_points_down_a_floor():
    assert upward(graph()) == []


def test_no_import_cycle_counting_every_import():
    assert find_cycle(plain(graph())) is None


@pytest.mark.parametrize("package", sorted({p.parent.name for p in ROOT.glob("*/*.py")}))
def test_every_package_has_a_floor_and_says_what_it_holds(package):
    assert package in FLOORS
    assert ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
