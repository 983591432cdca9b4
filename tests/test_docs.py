"""The documentation: the generated CLI reference covers every command and option, and the
README's links (which the site build does not see) lead to files and headings that exist.
`mkdocs build --strict` itself runs in CI (.ci/run), which checks the site's own links."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ddpmkit.cli import COMMANDS, command_parser, parser

ROOT = Path(__file__).resolve().parents[1]


def cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sections(page: str) -> dict[str, str]:
    """`ddpmkit NAME` -> the text of its section on the CLI page."""
    parts = re.split(r"(?m)^## `ddpmkit ([^`]+)`.*$", page)
    return dict(zip(parts[1::2], parts[2::2]))


def test_cli_reference_has_every_command_and_its_options():
    page = cli_reference().markdown()
    found = sections(page)
    assert list(found) == list(COMMANDS)  # every command, in COMMANDS' order, and nothing else
    p = parser()
    for name in COMMANDS:
        text = found[name]
        assert f"usage: ddpmkit {name}" in text
        options = {o for a in command_parser(p, name)._actions for o in a.option_strings if o.startswith("--")}
        missing = sorted(o for o in options if not re.search(re.escape(o) + r"\b", text))
        assert not missing, f"ddpmkit {name}: options missing from the CLI reference: {missing}"
        assert f"(#ddpmkit-{name})" in page  # the summary table links to it


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_readme_links_lead_to_files_and_headings():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 10  # the landing page links into the pages
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"(?m)^#+ (.+)$", target.read_text())
            assert anchor in {github_slug(h) for h in headings}, f"README links to {link}: no such heading"

