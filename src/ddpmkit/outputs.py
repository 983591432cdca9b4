"""Output folders: a command writes only into a folder that is new, empty, or its own earlier
output of the same kind, and replaces that output as a whole (never merges into it).

    OUT/.ddpmkit-output     the marker: {"kind": "sample", ...} and the command's record, written last

The rules, checked by `claim` before any work (docs/run-directory.md, "Output folders"):
  - a folder that does not exist, or is empty: written;
  - a folder whose marker names the same kind (or, written before markers, holding that kind's
    record file: sample.json, compare.json, ...): its earlier output is replaced;
  - a run directory (its config.json): refused, even with --overwrite (a run is never replaced
    by another command's output; `train` keeps its own --resume rules);
  - any other non-empty folder: refused in one line naming it and the way out, unless the user
    passed --overwrite, which replaces it as a whole.

`write` is where the folder is filled: a new folder is written in place and removed again if the
command fails; a folder that holds output is replaced by writing beside it (.NAME.tmp-PID), then
swapping (the old one renamed to .NAME.old-PID, the new one into place, the old one deleted), so a
failure before the swap, a full disk included, leaves the earlier output exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserError
from .rundir import CONFIG, atomic_write_text, check_writable, fsync_dir

MARKER = ".ddpmkit-output"

# kind -> the record file that marked that kind's folders before markers existed (None: none)
KINDS = {
    "sample": "sample.json",  # ddpmkit sample --out
    "png-dir": None,  # ddpmkit sample --png-dir: numbered PNGs (and labels.csv) for FID tools
    "compare": "compare.json",  # ddpmkit compare-samplers --out
    "edit": "edit.json",
    "inpaint": "inpaint.json",
    "interpolate": "interpolation.json",
    "export": "model_index.json",  # ddpmkit export --out: a diffusers pipeline folder
}


@dataclass(frozen=True)
class Output:
    """An output folder: where (`path`, named by `option`), what kind of output, whether the user
    allowed replacing a folder that is not this kind's output (`overwrite`), and, once claimed,
    whether it holds output that writing it replaces (`replaces`)."""

    path: Path
    kind: str | None = None
    option: str = "--out"
    overwrite: bool = False  # --overwrite: replace whatever the folder holds (not a run directory)
    replaces: bool = False  # set by claim: the folder holds files that writing it replaces

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


def overwrite(path: Path | str) -> Output:
    """An output folder the user allows to be replaced whatever it holds (--overwrite), for the API:
    api.sample(run, 64, outputs.overwrite("samples"))."""
    return Output(Path(path), overwrite=True)


def kind_of(path: Path) -> str | None:
    """The kind of ddpmkit output a folder holds (its marker, else an older folder's record file); None if none."""
    marker = Path(path) / MARKER
    if marker.is_file():
        try:
            return json.loads(marker.read_text()).get("kind")
        except (ValueError, AttributeError, OSError):
            return None
    return next((kind for kind, record in KINDS.items() if record and (Path(path) / record).is_file()), None)


def claim(out: Path | str | Output, kind: str, option: str = "--out", *, overwrite: bool = False) -> Output:
    """Check an output folder before any work: new, empty, this kind's own earlier output, or
    (with overwrite) anything but a run directory or a file; refused in one line otherwise."""
    given = out if isinstance(out, Output) else Output(Path(out))
    out = Output(given.path, kind, option, overwrite=given.overwrite or overwrite)
    path, option = out.path, out.option
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; pass a folder (a new one is created)")
    if (path / CONFIG).is_file():
        raise UserError(f"{option} {path} is a run directory, which {kind} output never replaces (not even with "
                        f"--overwrite); choose another {option}, e.g. a folder inside it")
    check_writable(path, option)
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not held:
        return out
    found = kind_of(path)
    if found != kind and not out.overwrite:
        what = f"ddpmkit {found} output, not {kind} output" if found else f"files ddpmkit did not write ({_some(held)})"
        raise UserError(f"{option} {path} holds {what}; choose another {option}, or pass --overwrite to replace the "
                        "folder as a whole")
    return replace(out, replaces=True)


def inside(path: Path | str, out: Output) -> bool:
    """Whether `path` lies inside the output folder `out` (then it is part of that output); a
    folder that would hold `out` itself is refused."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(out.path))
    if folder.is_relative_to(path):
        raise UserError(f"{path} holds the output folder {out.path}; give a folder beside it or inside it")
    return path.is_relative_to(folder)


def claim_run_directory(out: Path | str, option: str = "--out", *, overwrite: bool = False) -> Output:
    """`train --out`: a run directory is written in place (its checkpoints are what --resume reads,
    so it cannot be written beside and swapped): new, empty, or with overwrite any folder but a
    run, whose contents `empty` removes once every check of the command has passed."""
    out = Output(Path(out), "run", option, overwrite=overwrite)
    if (out.path / CONFIG).is_file():
        raise UserError(f"{option} {out.path} already holds a run; continue it with --resume {out.path} (a run with no "
                        f"complete checkpoint starts again from step 0) or pick another {option}")
    if out.path.exists() and not out.path.is_dir():
        raise UserError(f"{option} {out.path} is a file; pass a directory (a new one is created)")
    check_writable(out.path, option)
    held = sorted(p.name for p in out.path.iterdir()) if out.path.is_dir() else []
    if held and not overwrite:
        raise UserError(f"{option} {out.path} holds files that are not a run ({_some(held)}); choose another {option}, "
                        "or pass --overwrite to replace the folder as a whole")
    return replace(out, replaces=bool(held))


def claim_file(path: Path | str, option: str, ours: Callable[[Path], bool], *, overwrite: bool = False) -> bool:
    """A single output file (evaluate --save-ref): new, or one `ours` recognises as this option's
    earlier output, or anything with overwrite; returns whether an existing file is replaced
    (atomically: rundir.atomic_write)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; pass the path of a file to write")
    check_writable(path, option, directory=False)
    if path.exists() and not overwrite and not ours(path):
        raise UserError(f"{option} {path} exists and is not a file {option} wrote; choose another path, or pass --overwrite "
                        "to replace it")
    return path.exists()


def empty(path: Path | str) -> None:
    """Remove everything in the folder `path` (train --overwrite, once every check has passed); never a run directory."""
    path = Path(path)
    if (path / CONFIG).is_file():
        raise UserError(f"{path} holds a run, which --overwrite never removes; continue it with --resume or delete it yourself")
    for p in path.iterdir() if path.is_dir() else ():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class NotWritten(OSError):
    """An operating-system fault (a full disk, a read-only folder) while an output folder was
    written: names the file, and what was left (`intact`: the earlier output, or nothing)."""

    intact: str = ""


@contextlib.contextmanager
def write(out: Output, record: dict | None = None) -> Iterator[Path]:
    """The folder to write `out`'s files into (the folder itself when it is new or empty, else a
    temporary folder beside it); on success the marker (kind and `record`) is written last and a
    replaced folder swapped in whole; on failure what was written is removed and the earlier
    output left as it was."""
    final = out.path
    final.parent.mkdir(parents=True, exist_ok=True)
    existed = final.is_dir()
    into = final.with_name(f".{final.name}.tmp-{os.getpid()}") if out.replaces else final
    if out.replaces:
        shutil.rmtree(into, ignore_errors=True)  # a leftover of this process id's earlier crash
    into.mkdir(exist_ok=True)
    try:
        yield into
        atomic_write_text(into / MARKER, json.dumps({"kind": out.kind, **(record or {})}, indent=2, allow_nan=False) + "\n")
    except BaseException as e:
        if into == final and existed:  # an empty folder: empty again
            empty(final)
        else:
            shutil.rmtree(into, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, NotWritten):
            raise _not_written(e, into, out) from e
        raise
    if out.replaces:
        _swap(into, final)


def _swap(new: Path, final: Path) -> None:
    """Put the folder `new` in the place of `final`: final renamed aside, new renamed into place, the old one deleted."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final, old)
    os.rename(new, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _not_written(e: OSError, into: Path, out: Output) -> NotWritten:
    """The fault with the file named as it would have been in the final folder, and what is intact."""
    name = str(e.filename) if e.filename else None
    if name and name.startswith(str(into)) and into != out.path:
        name = str(out.path) + name[len(str(into)):]
    fault = NotWritten(e.errno, e.strerror, name)
    fault.intact = (f"{out.path} was left as it was (its earlier output is whole)" if out.replaces
                    else f"nothing was left in {out.path}")
    return fault


def final_path(path: Path, into: Path, out: Output) -> Path:
    """Where a file written into `into` (write's folder) lies once the output is in place."""
    return out.path / Path(path).relative_to(into)


def replaced_note(out: Output) -> str:
    """What a command's summary adds when it replaced earlier output ('' otherwise)."""
    return f" (replacing the earlier contents of {out.path})" if out.replaces else ""
