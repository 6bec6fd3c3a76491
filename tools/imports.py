"""The import graph of clframe's own modules, read from the source (no module is imported).

    python tools/imports.py            # print every import cycle and every private-name import

Edges are the imports a module makes when it runs, at module level or inside functions; imports under
``if TYPE_CHECKING:`` are left out (they never run). ``tests/test_architecture.py`` asserts that there
is no cycle and that no module of ``clframe/`` imports a private name (``_x``) from another module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the package name of each source folder (strategies/ and scenarios/ install under clframe)
SOURCES = {"clframe": ROOT / "clframe", "clframe.strategies": ROOT / "strategies",
           "clframe.scenarios": ROOT / "scenarios"}


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of clframe (packages by their ``__init__``)."""
    out = {}
    for package, folder in SOURCES.items():
        for f in folder.rglob("*.py"):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = f
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import of ``path`` that runs, resolved to known module names;
    ``names`` are the imported names when they are not modules themselves."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, []) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # a relative import: from the package, up level - 1
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                names = []
                for a in child.names:
                    if f"{base}.{a.name}" in known:
                        out.append((f"{base}.{a.name}", []))
                    else:
                        names.append(a.name)
                if names:
                    out.append((base, names))
            visit(child)

    visit(tree)
    return [(m, n) for m, n in out if m in known]


def graph() -> dict[str, set[str]]:
    """Module -> the clframe modules it imports."""
    mods = modules()
    known = set(mods)
    return {name: {m for m, _ in imports(path, name, known) if m != name} for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strong(w)
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

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            strong(v)
    return out


def private_imports() -> list[str]:
    """``module: name from other`` for every private name a module of clframe/ imports from another."""
    mods = modules()
    known = set(mods)
    out = []
    for name, path in mods.items():
        if not name.startswith("clframe.") or name.startswith(("clframe.strategies", "clframe.scenarios")):
            continue
        for other, names in imports(path, name, known):
            out += [f"{name}: {n} from {other}" for n in names if n.startswith("_") and other != name]
    return out


if __name__ == "__main__":
    found = cycles(graph())
    for c in found:
        print("cycle:", " -> ".join(c))
    for p in private_imports():
        print("private:", p)
    print(f"{len(found)} cycles, {len(private_imports())} private-name imports")
