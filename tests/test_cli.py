"""The command-line package itself: its commands, help, exit codes and the one line an error
becomes. (Each command's behaviour is in test_cmd_<command>.py.)"""

import subprocess
import sys

import pytest

from ddpmkit.cli import COMMANDS, main, one_line, parser
from ddpmkit.errors import UserError


def test_console_script_help_and_exit_code():
    for cmd in ([], ["train"], ["sample"]):
        out = subprocess.run([sys.executable, "-m", "ddpmkit", *cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: ddpmkit" in out.stdout
    assert "--schedule" in subprocess.run([sys.executable, "-m", "ddpmkit", "train", "--help"], capture_output=True, text=True).stdout
    bad = subprocess.run([sys.executable, "-m", "ddpmkit", "sample", "--run", "/nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_a_command_starts_without_the_plotting_and_scikit_learn_stacks():
    """Every command imports ddpmkit.cli; matplotlib, scikit-learn (with scipy and pandas) are
    imported where they are used, so `ddpmkit --help` or a bad option answers without loading
    them (they took about 3 s of an 8 s start on this machine: benchmarks/startup.py)."""
    probe = ("import sys; from ddpmkit.cli import parser; parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'sklearn', 'scipy', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_command_has_a_parser(capsys):
    assert set(COMMANDS) == {"train", "sample", "show-forward", "evaluate", "show-schedule", "compare-samplers", "export", "import", "ema",
                             "edit", "inpaint", "interpolate", "score", "train-classifier", "distill"}
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            parser().parse_args([name, "--help"])
        assert info.value.code == 0 and f"usage: ddpmkit {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


def test_a_user_error_is_one_line_naming_the_command_and_exit_code_2(monkeypatch, capsys):
    def fail(args):
        raise UserError("the problem\n  continued; the fix")

    add, _ = COMMANDS["sample"]
    monkeypatch.setitem(COMMANDS, "sample", (add, fail))
    assert main(["sample", "--run", "x"]) == 2
    assert capsys.readouterr().err == "ddpmkit sample: error: the problem continued; the fix\n"


def test_one_line_keeps_what_the_error_itself_said():
    assert one_line("a plain message") == "a plain message"
    assert one_line("cannot read x.png: bad header\n  at byte 12; remove it") == "cannot read x.png: bad header at byte 12; remove it"
    wrapped = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               "  File \"x.py\", line 1, in f\nddpmkit.errors.UserError: cannot read 1.png; continue with --resume")
    assert one_line(wrapped) == "cannot read 1.png; continue with --resume"
