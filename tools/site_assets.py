"""A MkDocs hook (mkdocs.yml `hooks:`): files the site serves itself, added at build time.

- KaTeX, the math renderer, from `node_modules/katex/dist` (`npm ci` installs the version that
  package-lock.json pins) into `assets/katex/`: its script, stylesheet, auto-render and fonts.
  `docs/js/math.js` draws the math with it, so no page fetches anything from another site.
- `img/import-graph.svg`, the architecture page's graph of the rooms, drawn from the package's
  own imports by `tools/import_graph.py` on every build, so it cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
KATEX = ROOT / "node_modules" / "katex" / "dist"
KATEX_FILES = ["katex.min.js", "katex.min.css", "contrib/auto-render.min.js"]  # and fonts/


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files, config):
    if not (KATEX / "katex.min.js").is_file():
        raise PluginError(f"KaTeX is not installed in {KATEX.parent}: run `npm ci` in {ROOT} first "
                          "(package-lock.json pins the version the site serves)")
    for name in KATEX_FILES + [f.relative_to(KATEX).as_posix() for f in sorted((KATEX / "fonts").iterdir())]:
        files.append(File.generated(config, f"assets/katex/{name}", abs_src_path=str(KATEX / name)))
    files.append(File.generated(config, "img/import-graph.svg", content=_import_graph().architecture_svg()))
    return files
