"""The command-line reference page, written from ddpmkit's own argparse parsers (never by hand).

`mkdocs build` runs this file through mkdocs-gen-files (mkdocs.yml, plugin `gen-files`), which
adds the page `cli.md` to the site; tests/test_docs.py calls `markdown()` to check that every
command of `ddpmkit.cli.COMMANDS` is on it. Each command's section is its `--help` as argparse
prints it at a fixed width, so the page says exactly what the installed command says.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:  # the checkout's ddpmkit, whatever copy is installed
    sys.path.insert(0, str(SRC))

WIDTH = 100  # columns of the help text (argparse reads $COLUMNS)


def _help_texts() -> tuple[str, dict[str, tuple[str, str]]]:
    """`ddpmkit --help` and, per command of COMMANDS, (its one-line help, its --help)."""
    from ddpmkit.cli import COMMANDS, command_parser, parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        top = parser()
        sub = next(a for a in top._actions if a.dest == "command")
        one_line = {a.dest: a.help for a in sub._choices_actions}
        return top.format_help(), {name: (one_line[name], command_parser(top, name).format_help()) for name in COMMANDS}
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def markdown() -> str:
    """The whole page: a table of the commands, then each command's help."""
    top, commands = _help_texts()
    lines = [
        "# Command-line reference",
        "",
        "Generated from ddpmkit's argparse parsers when the site is built (`tools/cli_reference.py`), "
        "so it is what `ddpmkit COMMAND --help` prints. Every command is a thin layer over a function "
        "of the [Python API](reference/api.md); exit codes and one-line errors are described in "
        "[run directories and faults](run-directory.md).",
        "",
        "| command | what it does |",
        "| --- | --- |",
        *(f"| [`ddpmkit {name}`](#ddpmkit-{name}) | {help} |" for name, (help, _) in commands.items()),
        "",
        "## `ddpmkit`",
        "",
        "```text",
        top.rstrip(),
        "```",
    ]
    for name, (help, text) in commands.items():
        lines += ["", f"## `ddpmkit {name}` {{ #ddpmkit-{name} }}", "", help[0].upper() + help[1:] + ".", "",
                  "```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "<run_path>":  # run by mkdocs-gen-files
    import mkdocs_gen_files

    with mkdocs_gen_files.open("cli.md", "w") as f:
        f.write(markdown())
elif __name__ == "__main__":
    sys.stdout.write(markdown())
