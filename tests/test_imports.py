"""The import graph inside ``ailand`` has no cycle, every module imports alone, and the
top level offers both models (issue 11)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ailand"


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = _modules()


def import_graph(deep: bool = True) -> dict[str, set[str]]:
    """``module -> ailand modules it imports``. ``deep``: also the imports inside functions
    (lazy imports are still arrows). ``from pkg import name`` points at ``pkg.name`` when
    that is a module, else at ``pkg``; the implicit import of parent packages is left out
    (a package's ``__init__`` may lazily re-export its children)."""
    graph = {}
    for mod, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = ast.walk(tree) if deep else tree.body
        deps = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in MODULES else pkg for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in MODULES:  # `import ailand.physics.model as m` -> the module itself
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    g = import_graph()
    assert "ailand.emulator.model" in g["ailand.emulator.train"] or "ailand.emulator.train" in g["ailand.emulator.model"]


def test_no_import_cycle_inside_ailand():
    g = import_graph(deep=True)
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_ailand_never_imports_the_inference_packages():
    for mod, deps in import_graph().items():
        tree = ast.parse(MODULES[mod].read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not names & {"calibration", "sensitivity"}, mod


def test_every_module_imports_alone_in_a_fresh_interpreter():
    mods = [m for m in MODULES if not m.endswith(".plots")]  # plots need matplotlib's backend only; imported below too
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        "for m in sys.argv[1:]:\n"
        "    for k in [k for k in sys.modules if k == 'ailand' or k.startswith('ailand.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad)); sys.exit(bool(bad))\n"
    )
    # one interpreter per module would cost ~2 s each; forgetting ailand.* between imports gives
    # each module a cold start of its own package (third-party modules stay cached)
    r = subprocess.run([sys.executable, "-c", code, *mods, *[m for m in MODULES if m.endswith(".plots")]],
                       capture_output=True, text=True, cwd=ROOT, env={"MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                                                                     "PATH": "/usr/bin:/bin"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("mod", ["ailand.emulator.model", "ailand.emulator.train", "ailand.emulator.evaluate"])
def test_emulator_modules_import_first_in_a_fresh_interpreter(mod):
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, cwd=ROOT,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr


def test_both_models_at_the_top_level():
    import ailand
    from ailand.emulator import Emulator
    from ailand.physics import ToyEcLand

    assert ailand.Emulator is Emulator and ailand.ToyEcLand is ToyEcLand
    assert {"Emulator", "ToyEcLand"} <= set(ailand.__all__)
    assert "Emulator" in ailand.__doc__
    for name in ailand.__all__:
        assert getattr(ailand, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Emulatr'"):
        ailand.Emulatr
