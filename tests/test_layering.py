"""The import graph of the package (issue #24): layers import downward only, and no two packages import each other.

Read from the source with ``ast`` (module-level and function-local imports alike; ``if TYPE_CHECKING:`` blocks,
which never run, are left out), at the granularity of cinet's sub-packages and top-level modules.
"""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cinet"

#: Layer of every sub-package / top-level module; an import may only go to the same or a lower layer.
LAYERS = {
    "errors": 0, "utils": 0, "recipe": 0,
    "ops": 1,
    "models": 2, "losses": 2, "metrics": 2, "data": 2,
    "config": 3, "preprocess": 3, "checkpoint": 3,
    "engine": 4, "inference": 4, "checks": 4,  # checks: memory (also the Predictor's), files, labels, outputs
    "build": 5, "bench": 5,
    "commands": 6, "cli": 7, "cinet": 7,
}  # fmt: skip
#: Library code: never reads the config, never builds from it.
LIBRARY = ("ops", "models", "losses", "metrics", "data")


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        return "cinet" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph() -> dict[str, dict[str, set[str]]]:
    """``{unit: {imported unit: {files}}}`` over every module of ``src/cinet``."""
    graph: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for path in SRC.rglob("*.py"):
        src = _unit(path)
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("cinet")
            ):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("cinet")]
            else:
                continue
            for name in names:
                parts = name.split(".")
                dst = parts[1] if len(parts) > 1 else "cinet"
                if dst != src:
                    graph[src][dst].add(str(path.relative_to(SRC)))
    return graph


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in SRC.rglob("*.py")}
    assert units <= set(LAYERS), units - set(LAYERS)


def test_imports_point_downward():
    upward = [
        f"{src} -> {dst} ({', '.join(sorted(files))})"
        for src, targets in import_graph().items()
        for dst, files in targets.items()
        if LAYERS[dst] > LAYERS[src]
    ]
    assert not upward, "\n".join(upward)


def test_no_two_packages_import_each_other():
    graph = import_graph()
    pairs = [f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph.get(b, {})]
    assert not pairs, pairs


@pytest.mark.parametrize("unit", LIBRARY)
def test_library_code_does_not_read_the_config(unit):
    targets = import_graph().get(unit, {})
    assert not {"config", "build", "checks", "engine", "inference", "commands"} & set(targets), dict(targets)
    text = "\n".join(p.read_text() for p in (SRC / unit).rglob("*.py"))
    assert "ConfigError" not in text


def test_engine_and_inference_are_peers_that_do_not_read_the_config():
    graph = import_graph()
    assert "inference" not in graph.get("engine", {}) and "engine" not in graph.get("inference", {})
    for unit in ("engine", "inference"):
        assert not {"config", "build", "commands"} & set(graph.get(unit, {})), (unit, dict(graph[unit]))


def help_modules() -> set[str]:
    """The cinet modules ``cinet --help`` loads (a fresh interpreter), after checking it loads no torch."""
    code = (
        "import sys\nfrom cinet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'cinet --help loaded torch'\n"
        "print(' '.join(m for m in sys.modules if m == 'cinet' or m.startswith('cinet.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_function_local_imports_only_where_they_keep_help_fast():
    """A function-local import of a cinet module is kept only in a module ``cinet --help`` loads, of a module
    it does not load (so ``--help`` stays torch-free), or on a line that says why (``# local: <reason>``)."""
    loaded = help_modules()
    assert "cinet.cli" in loaded and "cinet.commands.train" in loaded
    modules = {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in SRC.rglob("*.py")
    }
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        source = path.read_text()
        tree = ast.parse(source)
        skip = _type_checking_nodes(tree) | {id(n) for n in tree.body}
        lines = source.splitlines()
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level:
                continue
            if not (node.module or "").startswith("cinet") or "# local:" in lines[node.lineno - 1]:
                continue
            targets = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            target = targets[0] if targets else node.module
            where = f"{path.relative_to(SRC)}:{node.lineno} ({ast.unparse(node)})"
            if module not in loaded:
                bad.append(f"{where}: cinet --help does not load {module}; import at the top")
            elif target in loaded:
                bad.append(f"{where}: cinet --help loads {target} anyway; import at the top")
    assert not bad, "\n".join(bad)
