"""Every documented command runs (issue 30 item 5).

The test finds the command lines itself: every line of a code block in README.md, in the pages
under docs/ and in the notebooks' markdown (and `!` shell lines of their code cells) that runs
ddpmkit (`ddpmkit ...`, `python -m ddpmkit ...`, `torchrun ... -m ddpmkit ...`), with its
continuation lines joined and its `&&` chain split. Each distinct line is one test case, named
after the first place it appears, and runs in-process through `ddpmkit.cli.main` in an empty
working folder: every segment of its chain must exit 0 with no traceback.

What a line names is placed in that folder first, at the path the line gives (so the line runs
as written); its options are read through ddpmkit's own parser, so any spelling or alias of an
option counts:
- a run it reads (--run, --resume, any option whose name says run) is a copy of one of the tiny
  runs below, made once per session: the kind that the line of the same code block that writes it
  makes (train --data moons, --conditional, --posthoc-ema; distill), else the kind the line itself
  asks for (a run with its classifier after a train-classifier line or for --classifier-scale,
  unless the chain trains it itself; --guidance or --class alone: a conditional run; ema: a
  --posthoc-ema run; a name with 'moons': the 2-D run), else the digits run;
- another path it reads (--input, --images, --a, --b, --mask, --data, import's folder) is made by
  the line of the same code block that writes it (its --out), run first, when there is one; else
  it is a stand-in: a few random 8x8 grey images (a folder, .png or .npy), a mask of the bottom
  half, and for training data a folder of 16 small RGB images, an IDX file, a Keras-layout .npz
  or a .npy;
- an absolute or home path is taken inside the working folder; a lone `...` (the docs' "and the
  other options") is dropped; VAR=value words before the command are set while it runs.

Then TINY's overrides (each replaces the line's value or is appended), STEP_CAP and IMAGE_CAP
keep each command tiny; nothing else of a line changes. A line that needs what a test cannot have
is listed in NOT_RUN with its reason, and the list must name only lines the docs still have.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import re
import shlex
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from ddpmkit.cli import main, parser
from ddpmkit.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from ddpmkit.data.toy import TOY_DATASETS

from helpers import TINY_IMAGES

ROOT = Path(__file__).resolve().parents[1]

# Documented lines a test cannot run, each with its reason (the line as the docs give it, its
# comment dropped and its continuation lines joined by one space).
NOT_RUN = {
    "torchrun --standalone --nproc-per-node 4 -m ddpmkit train --data path/to/folder --image-size 64 --out runs/faces "
    "--batch-size 256": "four torchrun processes, one per GPU (tests/test_distributed.py runs two CPU processes)",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0:29500 --rdzv-id faces -m ddpmkit "
    "train --data /shared/faces --image-size 64 --out /shared/runs/faces --batch-size 512":
        "two machines of eight GPUs each",
    "torchrun --standalone --nproc-per-node 4 -m ddpmkit distill --run-dir runs/digits --to-steps 4 --out runs/digits-4 "
    "--precision bf16": "four torchrun processes, one per GPU (tests/test_distributed.py distils with two CPU processes)",
    "torchrun --standalone --nproc-per-node 4 -m ddpmkit distill --run-dir runs/faces --out runs/faces-4":
        "four torchrun processes, one per GPU (tests/test_distributed.py distils with two CPU processes)",
    "ddpmkit sample --run RUN --autoguide step-380 --autoguide-scale 2.5":
        "the step-380 checkpoint of a 950-step run, which the 3-step tiny runs cannot keep (tests/test_autoguidance.py "
        "samples with step-N guides of a tiny run)",
    "ddpmkit sample --run RUN --autoguide posthoc:0.05@500":
        "post-hoc EMA snapshots up to step 500 of a long run (tests/test_autoguidance.py rebuilds posthoc:S@N guides of a tiny run)",
    "ddpmkit sample --run RUN --autoguide RUN2":
        "a second, narrower run trained on the same data (tests/test_autoguidance.py guides by a second tiny run)",
    "ddpmkit train --out RUN --guide-width 16":
        "a guide of width 16 beside the default width 32, wider than the tiny runs' width 8 (tests/test_guide_width.py "
        "trains width-4 guides beside them)",
    "ddpmkit evaluate --run RUN --features inception -n 50000":
        "Inception-v3's FID weights (a download that ddpmkit never makes; tests use random weights)",
    "ddpmkit evaluate --run RUN --features inception --save-ref ref.npz":
        "Inception-v3's FID weights (a download that ddpmkit never makes; tests use random weights)",
    "ddpmkit evaluate --run RUN --features inception --ref ref.npz -n 50000":
        "Inception-v3's FID weights (a download that ddpmkit never makes; tests use random weights)",
}

# The overrides that keep a documented line tiny, by command: option -> value, replacing the
# line's own value or appended where the line has none; DROP removes the option and its value,
# FLAG appends a flag. `when` limits an entry to the lines it fits (e.g. not a resumed run,
# whose config is its own). Nothing else of a line changes.
DROP, FLAG = object(), object()


@dataclass(frozen=True)
class Override:
    option: str
    value: object  # the value, DROP or FLAG
    # which lines: all, a new run or distillation (not --resume), evaluate's sample quality (not
    # --nll or --save-ref), evaluate --nll, ema --sweep
    when: Literal["always", "new", "quality", "nll", "sweep"] = "always"


TINY = {
    # a few optimiser steps of a small network on a short chain (T = 20), no progress bar
    "train": (Override("--epochs", DROP, "new"), Override("--steps", "2", "new"), Override("--timesteps", "20", "new"),
              Override("--batch-size", "8", "new"), Override("--width", "8", "new"), Override("--no-progress", FLAG)),
    "train-classifier": (Override("--steps", "2"), Override("--batch-size", "8")),
    # the tiny digits run has T = 20, fewer than the default 64 steps of the first teacher
    "distill": (Override("--start-steps", "16", "new"), Override("--rounds-steps", "2", "new"),
                Override("--batch-size", "8", "new"), Override("--no-progress", FLAG)),
    "evaluate": (Override("--num-samples", "40", "quality"), Override("--num-images", "16", "nll"),
                 Override("--ode-points", "8", "nll")),
    "compare-samplers": (Override("--num-samples", "40"),),
    "ema": (Override("--num-samples", "16", "sweep"),),
    "score": (Override("--num-reference", "16"),),
}
# Sampling step counts above the tiny runs' T are lowered to it (a documented 250 or 1,000 steps),
# and --strip's timesteps are scaled onto 0..T-1 when the largest is beyond it (999,750,... ->
# 19,14,...).
STEP_CAP = 20
# A documented --image-size above IMAGE_CAP px (on its smaller side) trains at IMAGE_CAP px, the
# aspect kept, each --attention-res and --linear-attention-res size moved with its level (28 px with
# attention at 28,14,7 -> 16 px at 16,8,4): the same network on smaller images. Drawing the end of
# training's 64 samples at 64 or 128 px would take minutes.
IMAGE_CAP = 16
SHORT = {"-n": "--num-samples"}  # short spellings of the options above

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.ipynb"))]
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


# ---- finding the documented lines -------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One command of a line's `&&` chain that runs ddpmkit: its arguments after `ddpmkit`."""

    args: tuple[str, ...]
    launcher: str | None = None  # torchrun, when it starts the processes
    env: tuple[tuple[str, str], ...] = ()  # the VAR=value words before it, set while it runs

    @property
    def command(self) -> str:
        return self.args[0] if self.args else ""


@dataclass
class Line:
    text: str  # the line as documented: continuation lines joined, prompt and comment dropped
    segments: tuple[Segment, ...]  # its chain's ddpmkit commands
    block: list  # the Lines of its code block, in order (for the lines that write what it reads)
    places: list[str] = field(default_factory=list)  # FILE:LINE where it appears


def code_blocks(markdown: str) -> list[list[tuple[int, str]]]:
    """The fenced code blocks of a markdown text: each a list of (line number, line)."""
    blocks, current, fence = [], None, None
    for number, line in enumerate(markdown.splitlines(), 1):
        m = FENCE.match(line)
        if current is None:
            if m:
                current, fence = [], m.group(1)
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
            blocks.append(current)
            current = None
        else:
            current.append((number, line))
    return blocks


def logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The block's lines with continuation lines (a trailing backslash) joined, a `$ ` prompt dropped."""
    joined, start, parts = [], None, []
    for number, line in block:
        if not parts:
            start = number
        text = line.strip()
        parts.append(text[:-1].strip() if text.endswith("\\") else text)
        if not text.endswith("\\"):
            out = " ".join(p for p in parts if p)
            joined.append((start, out[2:] if out.startswith("$ ") else out))
            parts = []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def segment(tokens: list[str]) -> Segment | None:
    """The ddpmkit command of a shell command's tokens, or None when it runs something else."""
    env = []
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):  # VAR=value before the command
        env.append(tuple(tokens[0].split("=", 1)))
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "ddpmkit":
        return Segment(tuple(tokens[1:]), env=tuple(env))
    if tokens[0] in ("python", "python3") and tokens[1:3] == ["-m", "ddpmkit"]:
        return Segment(tuple(tokens[3:]), env=tuple(env))
    if tokens[0] == "torchrun" and "-m" in tokens and tokens[tokens.index("-m") + 1:][:1] == ["ddpmkit"]:
        return Segment(tuple(tokens[tokens.index("-m") + 2:]), launcher="torchrun", env=tuple(env))
    return None


def page_blocks(path: Path) -> list[tuple[str, list[tuple[int, str]]]]:
    """(where, block) for each code block of a page; a notebook's are those of its markdown
    cells and, as one block per cell, the shell lines (`!...`) of its code cells."""
    name = path.relative_to(ROOT).as_posix()
    if path.suffix != ".ipynb":
        return [(name, block) for block in code_blocks(path.read_text())]
    found = []
    for k, cell in enumerate(json.loads(path.read_text())["cells"]):
        source = "".join(cell["source"])
        where = f"{name}:cell{k}"
        if cell["cell_type"] == "markdown":
            found += [(where, block) for block in code_blocks(source)]
        elif cell["cell_type"] == "code":
            shell = [(n, line.strip()[1:]) for n, line in enumerate(source.splitlines(), 1)
                     if line.strip().startswith("!")]
            found += [(where, shell)] if shell else []
    return found


def command_line(text: str) -> tuple[str, tuple[Segment, ...]] | None:
    """A logical line of a code block as (the line: its words joined by one space, comment
    dropped; the ddpmkit commands of its `&&` chain), or None when it runs no ddpmkit."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # not shell (unbalanced quotes): no command here
        return None
    chain = [[]]
    for token in tokens:
        if token == "&&":
            chain.append([])
        else:
            chain[-1].append(token)
    segments = tuple(s for s in map(segment, chain) if s is not None)
    return (" ".join(tokens), segments) if segments else None


def documented_lines() -> list[Line]:
    """Every distinct documented line that runs ddpmkit, in the order of the pages."""
    lines: dict[str, Line] = {}
    for page in PAGES:
        for where, block in page_blocks(page):
            in_block = []
            for number, text in logical_lines(block):
                found = command_line(text)
                if found is None:
                    continue
                line = lines.setdefault(found[0], Line(*found, in_block))
                line.places.append(f"{where}:{number}")
                in_block.append(line)
    return list(lines.values())


LINES = documented_lines()


# ---- the tiny runs ----------------------------------------------------------------------------
# `ddpmkit train` options of the tiny image runs; they keep a guide as the digits default does
# (--guide-at 0.5: RUN/guide.safetensors), so the documented autoguided lines meet what a reader's run has
TINY_RUN = [*TINY_IMAGES[:TINY_IMAGES.index("--guide-at")], "--guide-at", "0.5", "--groups", "8"]


class TinyRuns:
    """The tiny runs documented lines read, each made once per session when a line first asks
    for it (T = 20, a few optimiser steps, base width 8; the 2-D run is conftest's toy_run).
    Their GroupNorm groups (8) divide every width, as export to diffusers needs."""

    def __init__(self, request, folder: Path):
        self.request, self.folder, self.runs = request, folder, {}

    def path(self, kind: str) -> Path:
        """The run directory of `kind` (digits, moons, conditional, posthoc, classifier, distilled)."""
        if kind not in self.runs:
            self.runs[kind] = getattr(self, kind)()
        return self.runs[kind]

    def _call(self, *argv) -> None:
        assert main([str(a) for a in argv]) == 0, argv

    def digits(self) -> Path:
        out = self.folder / "digits"
        self._call("train", "--out", out, *TINY_RUN)
        return out

    def moons(self) -> Path:
        return self.request.getfixturevalue("toy_run")

    def conditional(self) -> Path:
        out = self.folder / "conditional"
        self._call("train", "--conditional", "--out", out, *TINY_RUN)
        return out

    def posthoc(self) -> Path:
        out = self.folder / "posthoc"
        self._call("train", "--posthoc-ema", "--out", out, *TINY_RUN)
        return out

    def classifier(self) -> Path:
        out = self.folder / "classifier"
        shutil.copytree(self.path("digits"), out)
        self._call("train-classifier", "--run", out, "--steps", "2", "--batch-size", "8")
        return out

    def distilled(self) -> Path:
        out = self.folder / "distilled"
        self._call("distill", "--run", self.path("digits"), "--out", out, "--to-steps", "4", "--start-steps", "16",
                   "--rounds-steps", "2", "--batch-size", "8", "--no-progress")
        return out


@pytest.fixture(scope="session")
def tiny_runs(request, tmp_path_factory):
    return TinyRuns(request, tmp_path_factory.mktemp("documented-runs"))


# ---- placing what a line reads ----------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
STAND_INS = ("input", "images", "a", "b", "mask", "data", "path")  # what is placed when no line writes it
OUTPUTS = ("out", "save_ref", "png_dir")  # what a line writes that another may read


@functools.lru_cache(maxsize=None)
def _parser():
    return parser()


@functools.lru_cache(maxsize=None)
def parsed(args: tuple[str, ...]) -> dict:
    """A segment's options as ddpmkit's own parser reads them (its dests: any spelling or alias
    of an option gives the same name), {} when the parser refuses them (main then says why)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return vars(_parser().parse_args([a for a in args if a != "..."]))
    except SystemExit:
        return {}


def is_run(dest: str) -> bool:
    """Whether an option names a run directory the command reads (--run, --resume, --run-dir, ...)."""
    return dest == "resume" or "run" in dest.split("_")


def local(path) -> str:
    """A path of the docs inside the working folder: absolute and home paths made relative."""
    path = str(path)
    return path.lstrip("~/") if path.startswith(("/", "~")) else path


def same_path(a, b) -> bool:
    return a is not None and b is not None and Path(local(a)) == Path(local(b))


def writes(seg: Segment, path) -> bool:
    options = parsed(seg.args)
    return any(same_path(options.get(o), path) for o in OUTPUTS)


def writer(line: Line, path) -> tuple[Line, Segment] | None:
    """The line of `line`'s code block, before it, that writes `path`, and its segment that does."""
    for other in line.block[:line.block.index(line)]:
        for seg in other.segments:
            if writes(seg, path):
                return other, seg
    return None


def run_kind(line: Line, seg: Segment, path, chain_before: list[Segment]) -> str:
    """Which tiny run a line's run `path` is (see the module's docstring)."""
    made = writer(line, path)
    if made is not None:
        maker = parsed(made[1].args)
        if made[1].command == "distill":
            return "distilled"
        if maker.get("data") in TOY_DATASETS:
            return "moons"
        if maker.get("conditional"):
            return "conditional"
        if maker.get("posthoc_ema"):
            return "posthoc"
    earlier = [s for other in line.block[:line.block.index(line)] for s in (*other.segments, *chain_before)]
    options = parsed(seg.args)

    def trains_classifier(segments):
        return any(s.command == "train-classifier" and same_path(parsed(s.args).get("run"), path) for s in segments)

    if trains_classifier(earlier) and not trains_classifier(chain_before):
        return "classifier"
    if options.get("classifier_scale") and not trains_classifier(chain_before):
        return "classifier"
    if options.get("guidance") is not None or options.get("class_") is not None:
        return "conditional"
    if seg.command == "ema":
        return "posthoc"
    return "moons" if "moons" in str(path) else "digits"


def write_images(path: Path, count: int = 3) -> None:
    """Random 8x8 grey images: a .npy array, one image file, or a folder of PNGs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, images)
    elif path.suffix == ".npz":
        np.savez(path, images=images)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        Image.fromarray(images[0]).save(path)
    else:
        path.mkdir()
        for k, image in enumerate(images):
            Image.fromarray(image).save(path / f"{k}.png")


def write_mask(path: Path) -> None:
    """White (fill in) on the bottom half of an 8x8 image, black (keep) above."""
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """An IDX file (gzipped for a .gz name): the magic number, the sizes, the bytes."""
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_training_data(path: Path) -> None:
    """Stand-in training data at `path`, in the format its name says: an IDX images file (with its
    labels beside it), a .npz in Keras' layout, a .npy, one image, or a folder of 16 small RGB images."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8), np.arange(16, dtype=np.uint8) % 10
    path.parent.mkdir(parents=True, exist_ok=True)
    if re.search(r"idx3[-.]ubyte", path.name):
        write_idx(path, images, IMAGES_MAGIC)
        write_idx(path.with_name(path.name.replace("images-idx3", "labels-idx1")), labels, LABELS_MAGIC)
    elif path.suffix == ".npz":
        np.savez(path, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])
    elif path.suffix == ".npy":
        np.save(path, images)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    else:
        path.mkdir()
        for k in range(16):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path / f"{k:02d}.png")


def is_data_path(data: str) -> bool:
    """Whether a --data value names a file or folder (not a built-in set or hf:NAME)."""
    return data not in (*TOY_DATASETS, "digits") and not data.startswith("hf:")


class Workspace:
    """The empty working folder a documented line runs in, and what it places there."""

    def __init__(self, folder: Path, runs: TinyRuns, line: Line, capsys):
        self.folder, self.runs, self.line, self.capsys = folder, runs, line, capsys
        self.done: set[int] = set()  # the ids of the Lines already run here (writers of what others read)

    def where(self) -> str:
        return ", ".join(self.line.places)

    def run_line(self, line: Line) -> None:
        """Run every segment of `line`'s chain, placing what each reads first."""
        self.done.add(id(line))
        for k, seg in enumerate(line.segments):
            self.place(line, seg, list(line.segments[:k]))
            argv = tiny([local(a) for a in seg.args if a != "..."])
            shown = f"{self.where()}: `ddpmkit {' '.join(argv)}`"
            try:
                with pytest.MonkeyPatch.context() as mp:
                    for name, value in seg.env:
                        mp.setenv(name, value)
                    code = main(argv)
            except SystemExit as e:  # argparse refusing the line
                code = e.code
            except Exception:  # noqa: BLE001 - a bug: main re-raises what it does not handle
                pytest.fail(f"{shown} raised\n{traceback.format_exc()}")
            out, err = self.capsys.readouterr()
            assert code == 0, f"{shown} exited {code}:\n{err[-3000:]}"
            assert "Traceback" not in out + err, f"{shown} printed a traceback:\n{err}"

    def place(self, line: Line, seg: Segment, chain_before: list[Segment]) -> None:
        """Place what `seg` reads: runs, images, masks, training data, the output of another line."""
        for dest, value in parsed(seg.args).items():
            if not isinstance(value, (str, Path)) or not (is_run(dest) or dest in STAND_INS):
                continue
            if dest == "data" and not is_data_path(str(value)):
                continue
            target = self.folder / local(value)
            made = writer(line, value)
            if not target.exists() and made is not None and id(made[0]) not in self.done and not is_run(dest):
                self.run_line(made[0])
            if target.exists() or writes(seg, value):
                continue
            if is_run(dest):
                shutil.copytree(self.runs.path(run_kind(line, seg, value, chain_before)), target)
            elif dest == "mask":
                write_mask(target)
            elif dest == "data":
                write_training_data(target)
            elif dest == "path":
                pytest.fail(f"{self.where()}: import reads {value}, which no line of its code block writes")
            else:
                write_images(target)


def tiny(args: list[str]) -> list[str]:
    """A line's arguments with TINY's overrides and STEP_CAP applied."""
    args = [SHORT.get(a, a) for a in args]
    command = args[0]
    mode = {"new": "--resume" not in args, "quality": "--nll" not in args and "--save-ref" not in args,
            "nll": "--nll" in args, "sweep": "--sweep" in args, "always": True}
    for o in TINY.get(command, ()):
        if not mode[o.when]:
            continue
        if o.value is FLAG:
            args += [] if o.option in args else [o.option]
        elif o.option in args:
            i = args.index(o.option)
            args[i:i + 2] = [] if o.value is DROP else [o.option, o.value]
        elif o.value is not DROP:
            args += [o.option, o.value]
    if command in ("sample", "evaluate", "edit", "inpaint", "interpolate") and "--steps" in args:
        i = args.index("--steps") + 1
        args[i] = str(min(int(args[i]), STEP_CAP))
    if command == "sample" and "--strip" in args:
        i = args.index("--strip") + 1
        steps = [int(t) for t in args[i].split(",")]
        if max(steps) >= STEP_CAP:
            args[i] = ",".join(str(round(t * (STEP_CAP - 1) / max(steps))) for t in steps)
    if command == "train" and "--image-size" in args:
        smaller_images(args)
    return args


def smaller_images(args: list[str]) -> None:
    """IMAGE_CAP's rule, applied in place to a train line's arguments."""
    i = args.index("--image-size") + 1
    h, _, w = args[i].partition("x")
    h, w = int(h), int(w or h)
    side = min(h, w)
    if side <= IMAGE_CAP:
        return
    args[i] = f"{h * IMAGE_CAP // side}x{w * IMAGE_CAP // side}" if h != w else str(IMAGE_CAP)
    for option in ("--attention-res", "--linear-attention-res"):
        if option in args:
            j = args.index(option) + 1
            levels = {side >> level: IMAGE_CAP >> level for level in range(8)}
            args[j] = ",".join(str(levels.get(int(a), a)) for a in args[j].split(",")) if args[j] != "none" else "none"


# ---- the tests --------------------------------------------------------------------------------
def test_the_docs_have_command_lines_and_the_finder_finds_them():
    texts = [line.text for line in LINES]
    assert len(LINES) >= 40, texts
    readme = "ddpmkit train-classifier --run RUN && ddpmkit sample --run RUN --class all -n 10 --classifier-scale 4"
    assert readme in texts  # the README's classifier-guidance line (issue 30)
    joined = next(line for line in LINES if "fashion/train-images-idx3-ubyte.gz" in line.text)
    assert joined.text.endswith("--hflip --out runs/fashion")  # continuation lines joined
    assert [s.command for s in LINES[texts.index(readme)].segments] == ["train-classifier", "sample"]


def test_the_finder_joins_splits_and_recognises_ddpmkit():
    page = """text `ddpmkit sample --gif` in prose is not a command line
```bash
pip install -e . && ddpmkit train   # comment
$ ddpmkit sample --run RUN \\
    -n 4
WANDB_MODE=online python -m ddpmkit train --logger wandb
torchrun --nproc-per-node 2 -m ddpmkit train --out x
tensorboard --logdir runs/
~~~
```
"""
    [block] = code_blocks(page)
    found = [(n, command_line(text)) for n, text in logical_lines(block)]
    assert found == [
        (3, ("pip install -e . && ddpmkit train", (Segment(("train",)),))),
        (4, ("ddpmkit sample --run RUN -n 4", (Segment(("sample", "--run", "RUN", "-n", "4")),))),  # joined, no prompt
        (6, ("WANDB_MODE=online python -m ddpmkit train --logger wandb",
             (Segment(("train", "--logger", "wandb"), env=(("WANDB_MODE", "online"),)),))),
        (7, ("torchrun --nproc-per-node 2 -m ddpmkit train --out x",
             (Segment(("train", "--out", "x"), launcher="torchrun"),))),
        (8, None),  # not ddpmkit
        (9, None),  # a ~~~ line inside a ``` block is text
    ]


def test_a_line_that_fails_fails_its_test(tiny_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    broken = Line("ddpmkit show-schedule --schedule nope", (Segment(("show-schedule", "--schedule", "nope")),), [])
    broken.block.append(broken)
    broken.places.append("nowhere.md:1")
    with pytest.raises(AssertionError, match="nowhere.md:1: .* exited 2"):
        Workspace(tmp_path, tiny_runs, broken, capsys).run_line(broken)


def test_every_line_listed_as_not_run_is_still_documented():
    texts = {line.text for line in LINES}
    gone = [text for text in NOT_RUN if text not in texts]
    assert not gone, f"NOT_RUN lists lines the docs no longer have (drop them from the list): {gone}"


def test_a_line_that_starts_processes_is_listed_as_not_run():
    launched = [line.text for line in LINES if any(s.launcher for s in line.segments) and line.text not in NOT_RUN]
    assert not launched, f"these lines start a launcher's processes: list them in NOT_RUN with the reason: {launched}"


@pytest.mark.parametrize("line", [line for line in LINES if line.text not in NOT_RUN and not any(
    s.launcher for s in line.segments)], ids=lambda line: line.places[0])
def test_documented_line_runs(line, tiny_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Workspace(tmp_path, tiny_runs, line, capsys).run_line(line)
