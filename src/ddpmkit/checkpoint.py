"""Checkpoints: save and load weights and training state, safely.

A checkpoint is run_dir/checkpoints/step-NNNNNNNN/{model,ema}.safetensors, state.pt and
meta.json, and posthoc.safetensors when the run tracks post-hoc EMA profiles (the layout and
the top-level copies are rundir.py's). The post-hoc EMA snapshots, run_dir/posthoc/, are
written and listed here too: one safetensors file per profile and snapshot step, its step,
t and σ_rel in the file's metadata. checkpoints/ is
authoritative: --resume reads only the newest complete checkpoint there.
A checkpoint directory is written under a temporary name (.step-N.tmp-PID) and renamed
when every file in it is on disk (meta.json last), so a crash never leaves a half
checkpoint that looks complete. A complete checkpoint is never overwritten: the trainer
never writes the same step twice (save_checkpoint refuses to), and old ones are renamed
to a temporary name before they are deleted. Temporary directories of crashed processes
are removed at the next save.
Nothing is unpickled on load: weights are safetensors and state.pt loads with
torch.load(weights_only=True). A file that cannot be read that way (truncated, or a pickle
that holds code) is a DamagedCheckpoint, and resuming skips a damaged newest checkpoint
for the newest one that reads (`newest_readable`), setting the damaged one aside unchanged.
Files are written by Python's own calls (safetensors and torch serialise to bytes first),
so a full disk or a read-only one is the OSError it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from safetensors import safe_open
from torch import nn

from .errors import UserError
from .rundir import (
    BEST,
    CHECKPOINTS,
    CONFIG,
    GUIDE,
    atomic_write_bytes,
    POSTHOC,
    TOP_LEVEL_FILES,
    atomic_write_bytes,
    atomic_write_text,
    copy_top_level,
    fsync_dir,
)

POSTHOC_WEIGHTS = "posthoc.safetensors"  # a checkpoint's post-hoc EMA profiles (PowerEMA.weights)


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be read: missing, truncated, or not a ddpmkit file."""


def _check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise FloatingPointError(f"refusing to save {what}: non-finite values in {bad[:3]}")


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    _check_finite(tensors, str(path))
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"format": "pt", **(metadata or {})}))


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors themselves (names, dtypes, shapes, bytes), whatever file holds
    them: equal for two modules only if their weights are bit for bit the same."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_digest(module: nn.Module) -> torch.Tensor:
    """weights_sha256 of a module's state as 32 uint8: a tensor the data-parallel ranks can all_gather."""
    return torch.frombuffer(bytearray(bytes.fromhex(weights_sha256(module.state_dict()))), dtype=torch.uint8)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise DamagedCheckpoint(f"no weights at {path}; train a model first or pass the right --run directory")
    data = Path(path).read_bytes()  # the file system's errors are OSError; what follows is the file's
    try:
        return safetensors_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise DamagedCheckpoint(f"{path} is not a readable safetensors file ({e}): it is damaged or not a ddpmkit "
                                f"file{_intact_copy(Path(path))}") from None


def _intact_copy(path: Path) -> str:
    """For a damaged top-level weight file of a run directory: the newest checkpoint whose copy of
    it still reads, as the way out ('' for any other file, or when no checkpoint reads)."""
    run_dir = path.parent
    if path.name not in TOP_LEVEL_FILES or not (run_dir / CONFIG).is_file():
        return ""
    for found in reversed(complete_checkpoints(run_dir)):
        try:
            safetensors_load((found / path.name).read_bytes())
        except Exception:  # noqa: BLE001 - damaged too: try an older one
            continue
        return (f"; the checkpoint {found} is intact: pass --weights {found / path.name}, or `ddpmkit train --resume "
                f"{run_dir}`, which starts from it and writes the top-level files again")
    return ""


def weights_metadata(path: Path) -> dict[str, str]:
    """The text metadata stored in a safetensors file's header (what save_weights was given)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - safetensors raises its own error types; load_weights reports a damaged file
        return {}


def save_guide(run_dir: Path, step: int, ema: dict[str, torch.Tensor]) -> Path:
    """RUN/guide.safetensors: the EMA weights at `step`, autoguidance's guide (build.load_guide "auto")."""
    path = Path(run_dir) / GUIDE
    save_weights(path, ema, {"step": str(step)})
    return path


def load_matching(net: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights that must match the network exactly, with a clear error if not."""
    own = net.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {names[:3]}" for what, names in (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong)) if names
        )
        raise UserError(f"the weights in {source} do not fit the model config.json describes ({detail}); "
                        "was config.json edited? restore the config the run was trained with")
    net.load_state_dict(weights)


def save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """A state.pt, unpickling nothing but tensors and plain containers (weights_only). Its
    errors become one DamagedCheckpoint line: torch's own text for a refused pickle advises
    loading it with weights_only=False, that is running whatever code the file holds."""
    if not Path(path).is_file():
        raise DamagedCheckpoint(f"no training state at {path}; the checkpoint is incomplete")
    data = io.BytesIO(Path(path).read_bytes())  # the file system's errors are OSError; what follows is the file's
    try:
        state = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DamagedCheckpoint(f"{path} holds objects other than tensors, which ddpmkit never loads (a file "
                                "ddpmkit did not write, possibly malicious); delete it or resume from another run") from None
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file: the zip reader's RuntimeError, EOFError, ...
        raise DamagedCheckpoint(f"{path} is damaged ({type(e).__name__}: truncated or not a torch file)") from None
    if not isinstance(state, dict) or "step" not in state:
        raise DamagedCheckpoint(f"{path} is not a ddpmkit training state (no step in it)")
    return state


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """The live weights, EMA weights and training state of checkpoint directory `path`
    (DamagedCheckpoint if any of them cannot be read)."""
    path = Path(path)
    return load_weights(path / "model.safetensors"), load_weights(path / "ema.safetensors"), load_state(path / "state.pt")


def newest_readable(run_dir: Path, report: Callable[[str], None] = lambda message: None):
    """The newest complete checkpoint of run_dir that reads, as (its directory, what
    read_checkpoint returns, the newer ones that did not read), each skipped one reported;
    None if there is no complete checkpoint at all. If every one is damaged: DamagedCheckpoint."""
    found = complete_checkpoints(run_dir)
    damaged: list[Path] = []
    for path in reversed(found):
        try:
            return path, read_checkpoint(path), damaged
        except DamagedCheckpoint as e:
            report(f"skipping checkpoint {path.name}, which cannot be read: {e}")
            damaged.append(path)
    if damaged:
        raise DamagedCheckpoint(f"no checkpoint of {run_dir} can be read ({', '.join(p.name for p in damaged)} are "
                                "damaged); the run cannot be continued: start a new run with --out")
    return None


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint directory step-N to damaged-step-N (kept, never deleted; no
    longer a complete checkpoint, so a later one of the same step can be written)."""
    aside = Path(path).with_name(f"damaged-{Path(path).name}")
    n = 1
    while aside.exists():
        aside, n = Path(path).with_name(f"damaged-{Path(path).name}-{n}"), n + 1
    os.replace(path, aside)
    fsync_dir(aside.parent)
    return aside


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories (with meta.json), oldest first."""
    return _complete(Path(run_dir) / CHECKPOINTS)


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint directory step-NNNNNNNN."""
    return int(Path(path).name.split("-")[1])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep: int,
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point the top-level files at it, keep the newest `keep`.
    `extra`: further weight files of the checkpoint, file name -> tensors (posthoc.safetensors).
    Refuses (FileExistsError) to replace a complete checkpoint of the same step."""
    run_dir = Path(run_dir)
    final = step_dir(run_dir, step)
    if is_complete(final):
        raise FileExistsError(f"{final} is a complete checkpoint already; a checkpoint is never overwritten")
    for name, tensors in (("model.safetensors", model), ("ema.safetensors", ema)):  # before anything is written
        _check_finite(tensors, f"{final / name}")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)

    def fill(tmp: Path) -> None:
        for name, tensors in (("model.safetensors", model), ("ema.safetensors", ema), *(extra or {}).items()):
            save_weights(tmp / name, tensors)
        save_state(tmp / "state.pt", state)
        atomic_write_text(tmp / "meta.json", json.dumps({"step": step}))

    # an existing `final` has no meta.json (an older version's half deletion): never a good checkpoint
    _write_folder(final, fill)
    copy_top_level(run_dir, final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        _delete(old)
    return final


def is_complete(path: Path) -> bool:
    return (Path(path) / "meta.json").is_file()


def _temporary(path: Path) -> Path:
    """The temporary name this process writes (or deletes) checkpoint directory `path` under."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_folder(final: Path, fill) -> None:
    """fill(tmp) a temporary folder beside `final`, then rename it to `final`. A `final` that
    exists already is moved aside first (under another name than the temporary folder's) and
    deleted once the new one is in place; a failure leaves no temporary folder behind."""
    tmp = _temporary(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(final.parent)


def _delete(path: Path) -> None:
    """Delete a checkpoint directory, renaming it first so that a crash half-way never
    leaves a `step-N` directory whose meta.json outlived its weights."""
    doomed = _temporary(path)
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the .step-N.tmp-PID directories in run_dir/checkpoints of processes that no
    longer run (what a crash while saving or deleting leaves); returns them."""
    root = Path(run_dir) / CHECKPOINTS
    removed = []
    for path in root.glob(".step-*.tmp-*") if root.is_dir() else ():
        pid = path.name.rpartition(".tmp-")[2]
        if path.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# ---- the best measured step ------------------------------------------------------------------
def save_best(run_dir: Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write run_dir/best/step-N/ ({model,ema}.safetensors, then meta.json with `meta`: the
    step's quality record) under a temporary name and rename it whole, then delete the older
    best step: a crash leaves the old best or the new one complete, never neither. best/ is
    a copy of weights, never the training state a resume reads (checkpoints/ has that)."""
    final = Path(run_dir) / BEST / f"step-{step:08d}"
    final.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        save_weights(tmp / "model.safetensors", model)
        save_weights(tmp / "ema.safetensors", ema)
        atomic_write_text(tmp / "meta.json", json.dumps({"step": step, **meta}))

    _write_folder(final, fill)  # the same step measured again after a resume: the new copy replaces it
    for old in _complete(final.parent):
        if old != final:
            _delete(old)
    return final


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and is_complete(p)),
                  key=checkpoint_step)


def save_classifier(final: Path, weights: dict[str, dict[str, torch.Tensor]], texts: dict[str, str]) -> Path:
    """A classifier folder (RUN/classifier/) written whole under a temporary name and renamed
    into place, replacing an earlier one: `weights` file name -> state dict, `texts` file name -> text."""

    def fill(tmp: Path) -> None:
        for name, tensors in weights.items():
            save_weights(tmp / name, tensors)
        for name, text in texts.items():
            atomic_write_text(tmp / name, text)

    _write_folder(Path(final), fill)
    return Path(final)


def best_checkpoint(run_dir: Path) -> Path | None:
    """run_dir/best/step-N/ (the newest complete one: a crash may leave two), or None."""
    found = _complete(Path(run_dir) / BEST)
    return found[-1] if found else None


def best_meta(run_dir: Path) -> dict | None:
    """The meta.json of the best step (its step and quality record), or None."""
    found = best_checkpoint(run_dir)
    return json.loads((found / "meta.json").read_text()) if found else None


def newest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


# ---- post-hoc EMA snapshots ---------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """One stored power-function EMA profile (posthoc_ema.py)."""

    step: int  # the optimiser step it was taken at
    t: int  # EMA updates it averages (its profile's t; below `step` when non-finite steps were skipped)
    sigma_rel: float
    path: Path


def snapshot_path(run_dir: Path, step: int, sigma_rel: float) -> Path:
    return Path(run_dir) / POSTHOC / f"step-{step:08d}-sigma-{sigma_rel:.3f}.safetensors"


def save_snapshot(run_dir: Path, step: int, t: int, sigma_rel: float, weights: dict[str, torch.Tensor]) -> Path:
    """run_dir/posthoc/step-N-sigma-S.safetensors, atomically; never over an existing snapshot
    (FileExistsError: a resume first drops those after its checkpoint, remove_snapshots_after)."""
    path = snapshot_path(run_dir, step, sigma_rel)
    if path.exists():
        raise FileExistsError(f"{path} exists already; a post-hoc EMA snapshot is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, weights, {"step": str(step), "t": str(t), "sigma_rel": repr(float(sigma_rel))})
    return path


def snapshots(run_dir: Path) -> list[Snapshot]:
    """The post-hoc EMA snapshots of a run, oldest first (from each file's metadata)."""
    found = []
    for path in sorted((Path(run_dir) / POSTHOC).glob("step-*-sigma-*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
            found.append(Snapshot(int(meta["step"]), int(meta["t"]), float(meta["sigma_rel"]), path))
        except Exception as e:  # safetensors raises its own error types; a file without our metadata
            raise UserError(f"{path} is not a readable post-hoc EMA snapshot ({e}); move it out of {path.parent}") from None
    return sorted(found, key=lambda s: (s.step, s.sigma_rel))


def remove_snapshots_after(run_dir: Path, step: int) -> list[Path]:
    """Delete the snapshots taken after `step`: a resume from checkpoint `step` takes them again
    (as rundir.truncate_log drops the log records after it)."""
    removed = [s.path for s in snapshots(run_dir) if s.step > step]
    for path in removed:
        path.unlink()
    return removed
