"""ddpmkit's options pass through torchrun's command line untouched. torchrun (torch.distributed.run)
parses its own options with argparse, which matches abbreviations anywhere on the line, so an
option of ddpmkit that is a prefix of two of torchrun's (--run: --run-path, --run_path) stops
torchrun before ddpmkit starts. Every option of every command has a spelling that no torchrun
option extends (the one to use under torchrun: --run-dir for --run), and every torchrun line of
the docs passes its ddpmkit arguments through exactly."""

import argparse
import re
import shlex
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from ddpmkit.cli import parser

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = get_args_parser()
TORCHRUN_OPTIONS = [s for action in TORCHRUN._actions for s in action.option_strings]


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def passes_through(argv: list[str]) -> bool:
    """Whether `torchrun --standalone --nproc-per-node 2 -m ddpmkit ARGV` hands ARGV to ddpmkit as it is."""
    try:
        parsed = TORCHRUN.parse_args(["--standalone", "--nproc-per-node", "2", "-m", "ddpmkit", *argv])
    except SystemExit:  # argparse's error: "ambiguous option: --run could match --run-path, --run_path"
        return False
    return parsed.training_script == "ddpmkit" and parsed.training_script_args == argv


def torchrun_spelling(option_strings: list[str]) -> str | None:
    """The first spelling of an option that no torchrun option extends (None: every spelling is a prefix of one)."""
    return next((o for o in option_strings if not any(t != o and t.startswith(o) for t in TORCHRUN_OPTIONS)), None)


def test_torchrun_has_the_options_this_test_guards_against():
    assert {"--run-path", "--run_path", "--nproc-per-node", "--standalone"} <= set(TORCHRUN_OPTIONS)
    assert not passes_through(["distill", "--run", "runs/x"])  # the failure this test is about


@pytest.mark.parametrize("command", sorted(commands()))
def test_every_option_has_a_spelling_torchrun_leaves_alone(command):
    for action in commands()[command]._actions:
        if not action.option_strings:
            continue
        spelling = torchrun_spelling(action.option_strings)
        assert spelling is not None, f"{command}: none of {action.option_strings} passes torchrun (it abbreviates its own options)"
        argv = [command, spelling] + ([] if action.nargs == 0 else ["1"])
        assert passes_through(argv), argv


def test_the_run_option_is_spelled_run_dir_under_torchrun():
    for command, p in commands().items():
        run = [a for a in p._actions if "--run" in a.option_strings]
        assert all(torchrun_spelling(a.option_strings) == "--run-dir" for a in run), command
    assert passes_through(["distill", "--run-dir", "runs/digits", "--out", "runs/digits-4", "--precision", "bf16"])


def torchrun_lines() -> list[tuple[str, str]]:
    """(file, command line) of every torchrun line in the README and the docs, continuation lines joined."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        for line in re.findall(r"torchrun [^\n`]*-m ddpmkit [^\n`]*", text):
            found.append((path.name, line.split("#")[0].strip()))
    return found


def test_the_docs_show_torchrun_lines_of_train_and_distill():
    commands_shown = {shlex.split(line)[shlex.split(line).index("ddpmkit") + 1] for _, line in torchrun_lines()}
    assert {"train", "distill"} <= commands_shown


@pytest.mark.parametrize("where,line", torchrun_lines())
def test_every_torchrun_line_of_the_docs_reaches_ddpmkit_as_written(where, line):
    words = [w for w in shlex.split(line) if w != "..."]
    argv = words[words.index("ddpmkit") + 1:]
    parsed = TORCHRUN.parse_args(words[1:])  # an ambiguous option would exit here
    assert parsed.training_script_args == argv, (where, line)
    command = commands()[argv[0]]
    known = {o for a in command._actions for o in a.option_strings}
    assert all(w in known for w in argv[1:] if w.startswith("--")), (where, line)
