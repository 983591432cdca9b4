"""ddpmkit's import graph: the one computation that tests/test_imports.py checks for cycles and
that the architecture page draws (`img/import-graph.svg`, written by the hook tools/site_assets.py
on every build, so the picture cannot drift from the code).

Every module of src/ddpmkit is parsed with `ast` and every import counted (inside functions too,
where a cycle only bites at run time), relative imports resolved, and `import a.b` counted as a
dependency on package a's __init__ as well (which Python runs first), except for a module's own
enclosing packages. `from a import b` counts a's __init__ even where b is a submodule:
conservative, it never misses a cycle.

The picture is drawn at the level of rooms (docs/architecture.md): a package such as `cli/` or
`evaluation/` is one room, and an arrow implied by a longer path is left out (the transitive
reduction), as the page says. The layout is a plain layered drawing in pure Python (Sugiyama
et al. 1981: longest-path layers, long arrows routed through the layers they cross, barycentre
ordering, then each box drawn towards the mean of its neighbours), so no Graphviz is needed.

    python tools/import_graph.py [OUT.svg]    # the SVG on stdout, or into OUT.svg
"""

from __future__ import annotations

import ast
import sys
from html import escape
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ddpmkit"


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


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
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


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
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


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the rooms it imports, with the arrows implied by a longer path left out.

    A module's room is its first name below the package (`ddpmkit.cli.train` -> `cli`); the
    package's own __init__ (only its version) and `__main__` are not rooms."""
    def room(mod: str) -> str | None:
        parts = mod.split(".")
        return None if len(parts) < 2 or parts[1] == "__main__" else parts[1]

    rooms: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        if (a := room(mod)) is None:
            continue
        rooms.setdefault(a, set()).update(b for b in map(room, deps) if b is not None and b != a)
    return transitive_reduction(rooms)


def transitive_reduction(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The arrows a -> b for which no longer path leads from a to b (the graph must be acyclic)."""
    reach: dict[str, set[str]] = {}

    def reachable(v: str, seen: tuple[str, ...] = ()) -> set[str]:
        if v in seen:
            raise ValueError("the room graph has a cycle: " + " -> ".join(seen[seen.index(v):] + (v,)))
        if v not in reach:
            reach[v] = set(graph.get(v, ())).union(*(reachable(w, seen + (v,)) for w in graph.get(v, ())))
        return reach[v]

    return {a: {b for b in bs if not any(b in reachable(c) for c in bs - {b})} for a, bs in graph.items()}


# --- the drawing ---------------------------------------------------------------------------
BOX_H, LAYER_GAP, CHAR_W, PAD, GAP, MARGIN, LANE = 26, 46, 7.6, 12, 16, 16, 8  # pixels


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Rooms in layers: a room sits one layer below the lowest room that imports it, so the
    arrows point down and a room only one room uses sits right under it."""
    parents: dict[str, set[str]] = {}
    for a, bs in graph.items():
        for b in bs:
            parents.setdefault(b, set()).add(a)
    row: dict[str, int] = {}

    def level(v: str) -> int:
        if v not in row:
            row[v] = 1 + max((level(p) for p in parents.get(v, ())), default=-1)
        return row[v]

    nodes = sorted(set(graph) | set().union(*graph.values()))
    for v in nodes:
        level(v)
    return [sorted(v for v in nodes if row[v] == i) for i in range(max(row.values()) + 1)]


def place_in_order(row: list[str], want: dict[str, float], width, x: dict[str, float]) -> None:
    """x of each box of a row: as near its wanted x as the row's order and gaps allow (least
    squares: a run of boxes that would overlap is set as one block, centred on their mean)."""
    blocks: list[list] = []  # [first index, last index, left edge]
    for k, v in enumerate(row):
        blocks.append([k, k, want[v] - width(v) / 2])
        while len(blocks) > 1:
            a, b = blocks[-2], blocks[-1]
            a_right = a[2] + sum(width(row[i]) + GAP for i in range(a[0], a[1] + 1))
            if a_right <= b[2]:
                break
            blocks.pop()
            a[1] = b[1]
            offsets, off = [], 0.0
            for i in range(a[0], a[1] + 1):
                offsets.append(want[row[i]] - width(row[i]) / 2 - off)
                off += width(row[i]) + GAP
            a[2] = sum(offsets) / len(offsets)
    for first, last, left in blocks:
        for i in range(first, last + 1):
            x[row[i]] = left + width(row[i]) / 2
            left += width(row[i]) + GAP


def svg(graph: dict[str, set[str]]) -> str:
    """The room graph as a standalone SVG: boxes named by room, an arrow per import, each with a
    <title> "a → b" (what tests/test_imports.py checks, and a reader sees on hover)."""
    rows = layers(graph)
    row_of = {v: i for i, row in enumerate(rows) for v in row}
    # An arrow crossing layers passes through one invisible point per layer in between.
    chains: list[tuple[str, str, list[str]]] = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            points = [a]
            for i in range(row_of[a] + 1, row_of[b]):
                dummy = f"{a}>{b}#{i}"
                rows[i].append(dummy)
                row_of[dummy] = i
                points.append(dummy)
            chains.append((a, b, points + [b]))
    up: dict[str, list[str]] = {}
    down: dict[str, list[str]] = {}
    for _, _, points in chains:
        for p, q in zip(points, points[1:]):
            down.setdefault(p, []).append(q)
            up.setdefault(q, []).append(p)
    for sweep in range(8):  # barycentre ordering, alternately from the top and from the bottom
        order = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        for i in order:
            neighbours = up if sweep % 2 == 0 else down
            position = {v: k for k, v in enumerate(rows[i - 1 if sweep % 2 == 0 else i + 1])}
            key = {v: sum(position[w] for w in neighbours[v]) / len(neighbours[v]) if neighbours.get(v) else k
                   for k, v in enumerate(rows[i])}
            rows[i].sort(key=key.__getitem__)

    def width(v: str) -> float:
        return LANE if "#" in v else len(v) * CHAR_W + 2 * PAD

    x: dict[str, float] = {}
    for row in rows:  # packed from the left, then drawn towards the rooms each one is joined to
        left = 0.0
        for v in row:
            x[v] = left + width(v) / 2
            left += width(v) + GAP
    for _ in range(40):  # each room drawn towards the mean of those it is joined to
        for row in rows:
            want = {}
            for v in row:
                near = up.get(v, []) + down.get(v, [])
                want[v] = sum(x[w] for w in near) / len(near) if near else x[v]
            place_in_order(row, want, width, x)
    lo = min(x[v] - width(v) / 2 for v in x)
    for v in x:
        x[v] += MARGIN - lo
    total_w = max(x[v] + width(v) / 2 for v in x) + MARGIN
    y = {v: MARGIN + row_of[v] * (BOX_H + LAYER_GAP) + BOX_H / 2 for v in row_of}
    total_h = MARGIN * 2 + len(rows) * BOX_H + (len(rows) - 1) * LAYER_GAP

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="sans-serif" font-size="13">',
        "<title>ddpmkit's rooms: an arrow A → B means A imports B</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<rect width="{total_w:.0f}" height="{total_h:.0f}" fill="white"/>',
    ]
    for a, b, points in chains:
        path = [(x[p], y[p]) for p in points]
        path[0] = (path[0][0], path[0][1] + BOX_H / 2)
        path[-1] = (path[-1][0], path[-1][1] - BOX_H / 2)
        d = f"M{path[0][0]:.1f},{path[0][1]:.1f}"
        for (x0, y0), (x1, y1) in zip(path, path[1:]):  # a vertical S-curve between layers
            mid = (y0 + y1) / 2
            d += f" C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
        out.append(f'<path class="arrow" d="{d}" fill="none" stroke="#888" stroke-width="1.2" '
                   f'marker-end="url(#arrow)"><title>{escape(a)} → {escape(b)}</title></path>')
    for v in sorted(graph.keys() | set().union(*graph.values())):
        w = width(v)
        out.append(f'<g class="room"><title>{escape(v)}</title>'
                   f'<rect x="{x[v] - w / 2:.1f}" y="{y[v] - BOX_H / 2:.1f}" width="{w:.1f}" height="{BOX_H}" '
                   f'rx="5" fill="#e8eaf6" stroke="#3f51b5"/>'
                   f'<text x="{x[v]:.1f}" y="{y[v] + 4.5:.1f}" text-anchor="middle" fill="#1a237e">{escape(v)}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def architecture_svg(package: Path = PACKAGE) -> str:
    """The architecture page's picture, from the package as it is now."""
    return svg(room_graph(import_graph(package)))


if __name__ == "__main__":
    text = architecture_svg()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)
