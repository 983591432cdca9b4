"""The package's import graph has no cycle: every module of src/ddpmkit parsed with `ast`,
every import counted (inside functions too, where a cycle only bites at run time), relative
imports resolved, and `import a.b` counted as a dependency on package a's __init__ as well
(which Python runs first), except for a module's own enclosing packages. `from a import b`
counts a's __init__ even where b is a submodule: conservative, it never misses a cycle."""

import ast
import re
import sys
from pathlib import Path

import ddpmkit

PACKAGE = Path(ddpmkit.__file__).parent


def modules_of(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (its file, whether it is a package's __init__)."""
    mods = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def imported(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, mods) -> list[str]:
    """The modules of the package an import statement names (each trimmed to the longest
    prefix that is a module), without `mod` itself."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        names = [target] + [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
    found = []
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name and name != mod:
            found.append(name)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    mods = modules_of(package)
    graph = {}
    for mod, (f, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(imported(mod, is_pkg, node, mods))
        for dep in list(deps):  # importing a.b runs a/__init__ first
            parent = dep.rpartition(".")[0]
            while parent:
                if parent in mods and parent != mod and not mod.startswith(parent + "."):
                    deps.add(parent)
                parent = parent.rpartition(".")[0]
        graph[mod] = deps
    return graph


def import_cycles(package: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = import_graph(package)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(cycles)


def test_ddpmkit_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and "ddpmkit.api" in graph["ddpmkit.cli.train"]  # the whole package, imports inside functions too
    cycles = import_cycles(PACKAGE)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_the_check_finds_cycles_through_function_bodies_and_package_inits(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from .b import g\n",  # a -> b, only at run time
        "pkg/b.py": "from pkg import a\n",  # b -> a
        "pkg/sub/__init__.py": "from ..c import x\n",  # pkg.sub -> c
        "pkg/sub/leaf.py": "import numpy\nfrom .sibling import thing\n",  # not on its own package's __init__
        "pkg/sub/sibling.py": "",
        "pkg/c.py": "import pkg.sub.leaf\n",  # c -> leaf, and so -> pkg.sub's __init__
        "pkg/d.py": "from .sub import sibling\nfrom . import a\n",  # d -> sibling, sub, a: nothing comes back
        "pkg/s/__init__.py": "from . import x\nHELPER = 1\n",  # a package importing its module ...
        "pkg/s/x.py": "from . import HELPER\n",  # ... which takes a name from the package (what samplers/ once did)
    })
    assert import_graph(package)["pkg.sub.leaf"] == {"pkg.sub.sibling"}
    assert import_graph(package)["pkg.d"] == {"pkg", "pkg.sub", "pkg.sub.sibling", "pkg.a"}
    assert import_cycles(package) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.sub"], ["pkg.s", "pkg.s.x"]]


ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"


def room_graph(package: Path) -> dict[str, set[str]]:
    """The import graph between rooms: the package's top-level modules and sub-packages, each
    one room (`ddpmkit.data.images` is in the room `data`), without imports inside a room."""
    rooms: dict[str, set[str]] = {}
    for mod, deps in import_graph(package).items():
        parts = mod.split(".")
        if len(parts) < 2 or parts[1] == "__main__":
            continue
        rooms.setdefault(parts[1], set()).update(d.split(".")[1] for d in deps if "." in d and d.split(".")[1] != parts[1])
    return rooms


def drawn_arrows(text: str) -> set[tuple[str, str]]:
    """The arrows `a[A] --> b[B]` of the mermaid picture of docs/architecture.md, as (A, B)."""
    return set(re.findall(r"\w+\[([\w/]+)\]\s*-->\s*\w+\[([\w/]+)\]", text))


def test_the_architecture_page_draws_the_imports_exactly():
    """Every arrow docs/architecture.md draws is an import between rooms, every room is drawn, and
    every import is drawn or implied by a path of drawn arrows (the page leaves those out)."""
    rooms, drawn = room_graph(PACKAGE), drawn_arrows(ARCHITECTURE.read_text())
    false = sorted((a, b) for a, b in drawn if b not in rooms.get(a, set()))
    assert not false, f"drawn in docs/architecture.md but not imported: {false}"
    assert set(rooms) <= {room for arrow in drawn for room in arrow}, "rooms missing from the picture"
    below = {a: set() for a in rooms}
    for a, b in drawn:
        below[a].add(b)
    changed = True
    while changed:  # the transitive closure of the drawn arrows
        changed = False
        for a in below:
            more = set().union(*(below.get(b, set()) for b in below[a])) - below[a]
            if more:
                below[a] |= more
                changed = True
    missing = sorted((a, b) for a in rooms for b in rooms[a] if b not in below[a])
    assert not missing, f"imports docs/architecture.md does not draw (add the arrow A --> B): {missing}"
