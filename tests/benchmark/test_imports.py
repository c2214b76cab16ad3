"""The import graph, read statically (ast, every import including those inside functions): no cycle, imports
run one way through the layers, and no module outside objectives/ decides behaviour by an objective's name."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]

# Lower layers never import higher ones. A module's layer is that of its longest matching prefix.
LAYERS = [
    # 0 foundation: what everything builds on
    ("benchmark", "benchmark.settings", "benchmark.config", "benchmark.registry", "benchmark.records",
     "benchmark.distributed", "benchmark.testing"),
    # 1 library: data and models
    ("benchmark.data", "benchmark.models"),
    # 2 plugins: objectives, then tasks (the FID/CLIP-score machinery: benchmark.tasks._generation)
    ("benchmark.objectives",),
    ("benchmark.tasks",),
    # 3 application: the loop, the commands, the readers of records, Slurm
    ("benchmark.train", "benchmark.cache", "benchmark.bench"),
    ("benchmark.run", "benchmark.status", "benchmark.tables", "benchmark.figures", "benchmark.slurm"),
    ("benchmark.generate", "benchmark.bench_sample", "benchmark.diagnose"),
    ("benchmark.cli", "benchmark.__main__"),
]
# Modules that spell out the paper's rows (Table 2's "MAR" row, Fig. 4's DREAM and FLUID sweeps): naming an
# objective there selects runs, it does not decide what a model can do.
PAPER_SPECS = {"benchmark.tables", "benchmark.figures", "benchmark.slurm.sweeps"}


def package_files() -> dict[str, Path]:
    """Module name -> file, through pyproject's package-dir (models/ installs as benchmark.models, ...)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = {}
    for pkg, folder in cfg["package-dir"].items():
        for f in (REPO / folder).glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    for pkg in cfg["packages"]:  # subpackages without their own package-dir entry (benchmark.data)
        parent, _, leaf = pkg.rpartition(".")
        if pkg not in cfg["package-dir"] and parent in cfg["package-dir"]:
            for f in (REPO / cfg["package-dir"][parent] / leaf).glob("*.py"):
                out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports_of(name: str, tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (module level, functions, importlib)."""
    is_pkg = name in modules and any(m.startswith(name + ".") for m in modules)
    out = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for t in targets:
            while t and t not in modules:  # `import benchmark.models.sad as s` -> the longest known module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    files = package_files()
    mods = set(files)
    return {m: imports_of(m, ast.parse(f.read_text(), str(f)), mods) for m, f in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> int:
    best, best_len = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                  for a, deps in graph.items() for b in deps if layer(b) > layer(a))


def builtin_objectives() -> set[str]:
    """Names registered by ``@register_objective("...")`` in objectives/."""
    names = set()
    for f in (REPO / "objectives").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "register_objective"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def _reads_objective_name(node: ast.AST) -> bool:
    """An expression that may evaluate to an objective's name: ``cfg.objective.name``, ``o.name`` (any ``.name``),
    ``objective``, ``obj``, ``spec.get("objective")``, ``rec["objective"]``."""
    src = ast.unparse(node)
    if isinstance(node, ast.Attribute):
        return node.attr in ("name", "objective", "obj")
    if isinstance(node, ast.Name):
        return node.id in ("objective", "obj", "objective_name")
    if isinstance(node, (ast.Call, ast.Subscript)):
        return "'objective'" in src or '"objective"' in src
    return False


def name_comparisons(source: str, names: set[str]) -> list[str]:
    """``==``/``!=``/``in``/``not in`` between an objective's name and a literal naming a built-in objective."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not all(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        literals = set()
        for s in sides:
            elts = s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
            literals |= {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if literals & names and any(_reads_objective_name(s) for s in sides):
            hits.append(f"line {node.lineno}: {ast.unparse(node)}")
    return hits


# ---------------------------------------------------------------- the tests
def test_the_walker_sees_function_level_imports_and_finds_cycles():
    mods = {"benchmark.a", "benchmark.b", "benchmark.c"}
    src = "def f():\n    from benchmark.b import x\n    import importlib\n    importlib.import_module('benchmark.c')\n"
    tree = ast.parse(src)
    assert imports_of("benchmark.a", tree, mods) == {"benchmark.b", "benchmark.c"}
    g = {"benchmark.a": {"benchmark.b"}, "benchmark.b": {"benchmark.c"}, "benchmark.c": {"benchmark.a"}}
    assert cycles(g) == [["benchmark.a", "benchmark.b", "benchmark.c"]]
    assert cycles({"benchmark.a": {"benchmark.b"}, "benchmark.b": set()}) == []
    assert upward_imports({"benchmark.config": {"benchmark.run"}}) != []  # foundation importing the application


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "benchmark.tasks.fid" in graph and "benchmark.models.sad" in graph  # the walker found the package
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_imports_run_one_way_through_the_layers():
    graph = import_graph()
    assert all(layer(m) >= 0 for m in graph), [m for m in graph if layer(m) < 0]
    assert not upward_imports(graph), "\n".join(upward_imports(graph))


def test_the_name_check_catches_a_comparison_and_ignores_other_strings():
    names = builtin_objectives()
    assert {"dream", "mar", "clip", "fluid", "repa"} <= names
    assert name_comparisons('if cfg.objective.name == "mar":\n    pass\n', names)
    assert name_comparisons('x = comps.objective.name != "mar"\n', names)
    assert name_comparisons('if obj in ("dream", "clip"):\n    pass\n', names)
    assert name_comparisons('ok = spec.get("objective") == "dream"\n', names)
    assert name_comparisons('check(o.name != "repa", "no teacher")\n', names)
    assert not name_comparisons('if spec.rerank == "clip":\n    pass\n', names)  # SAD's reranker, not an objective
    assert not name_comparisons('if model.objective.capabilities.text_conditioned:\n    pass\n', names)


def test_no_module_outside_objectives_compares_an_objective_name():
    names = builtin_objectives()
    files = package_files()
    found = {m: name_comparisons(f.read_text(), names) for m, f in files.items()
             if not m.startswith("benchmark.objectives") and m not in PAPER_SPECS}
    found = {m: h for m, h in found.items() if h}
    assert not found, f"compare objective names (declare a capability instead): {found}"
