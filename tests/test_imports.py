"""The package's import graph has no cycle. The graph is computed by tools/import_graph.py (the
same graph the architecture page draws): every module of src/ddpmkit parsed with `ast`, every
import counted (inside functions too, where a cycle only bites at run time), relative imports
resolved, and `import a.b` counted as a dependency on package a's __init__ as well (which Python
runs first), except for a module's own enclosing packages. `from a import b` counts a's __init__
even where b is a submodule: conservative, it never misses a cycle."""

import importlib.util
from pathlib import Path

import ddpmkit

PACKAGE = Path(ddpmkit.__file__).parent
_spec = importlib.util.spec_from_file_location("import_graph", Path(__file__).resolve().parents[1] / "tools" / "import_graph.py")
_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_graph)
import_graph, import_cycles, room_graph = _graph.import_graph, _graph.import_cycles, _graph.room_graph


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


def test_rooms_are_packages_and_arrows_implied_by_a_longer_path_are_left_out(tmp_path):
    package = write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/__main__.py": "from .top import main\n",  # not a room
        "pkg/top.py": "from .mid import f\nfrom .low import g\nfrom .sub import leaf\n",  # top -> low is implied
        "pkg/mid.py": "from . import low\n",
        "pkg/low.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from ..low import g\nfrom . import other\n",  # inside the room: no arrow
        "pkg/sub/other.py": "",
    })
    assert room_graph(import_graph(package)) == {"top": {"mid", "sub"}, "mid": {"low"}, "low": set(), "sub": {"low"}}
    assert _graph.transitive_reduction({"a": {"b", "c", "d"}, "b": {"c"}, "c": {"d"}, "d": set()}) == \
        {"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": set()}


def test_the_architecture_picture_draws_every_arrow_of_the_room_graph():
    """docs/architecture.md shows img/import-graph.svg, drawn from this graph on every build:
    each arrow of the rooms is one <path> titled "a → b", each room one box, and nothing else."""
    import re

    rooms = room_graph(import_graph(PACKAGE))
    picture = _graph.architecture_svg(PACKAGE)
    arrows = set(re.findall(r'<path class="arrow"[^>]*><title>(\S+) → (\S+)</title>', picture))
    assert arrows == {(a, b) for a, bs in rooms.items() for b in bs}
    boxes = set(re.findall(r'<g class="room"><title>(\S+)</title>', picture))
    assert boxes == set(rooms) | set().union(*rooms.values())
    assert {"cli", "api", "errors", "evaluation"} <= boxes and ("cli", "api") in arrows
