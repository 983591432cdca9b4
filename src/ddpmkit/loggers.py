"""Where the log records also go, beside log.jsonl (which stays the record): TensorBoard and
Weights & Biases, both optional extras, imported only by the logger that needs them.

A Logger receives what the Trainer writes to log.jsonl (scalars by step), the sample pictures
and the run's config. A run that resumes from the checkpoint of step S starts its loggers
with `start(config, S, logged)`, where `logged` is the last step the interrupted session had
logged: TensorBoard purges its events after S (the steps S+1.. are logged again, as log.jsonl
is truncated and rewritten), W&B, whose history cannot be rewound offline, skips the steps it
already holds. Either way a step is never logged twice and none is missing.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Protocol

from .errors import UserError
from .rundir import TENSORBOARD, WANDB, WANDB_ID, atomic_write_text

EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> the pip extra that installs it


class Logger(Protocol):
    def start(self, config: dict, step: int, logged: int) -> None:
        """Begin (step 0) or continue a run resumed at `step`; `logged`: the last step logged before."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Numbers under their tags at optimiser step `step` (None values are left out)."""

    def log_image(self, step: int, tag: str, path: Path) -> None:
        """A picture file (PNG) at `step`."""

    def close(self) -> None:
        """Flush and end."""


def _missing(name: str) -> UserError:
    return UserError(f"--logger {name} needs the {name} package: pip install \"ddpmkit[{EXTRAS[name]}]\" "
                     f"(or drop --logger {name})")


def _read_png(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # [H, W, 3] uint8


class TensorBoard:
    """Event files in RUN/tensorboard/ through torch.utils.tensorboard (`tensorboard --logdir runs/`)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self._writer_class = SummaryWriter
        self.directory = Path(run_dir) / TENSORBOARD
        self.writer = None

    def start(self, config: dict, step: int, logged: int) -> None:
        # SummaryWriter's purge_step: TensorBoard drops the earlier sessions' events at steps
        # >= step + 1 when it reads the files, so the resumed steps replace them.
        first = not any(self.directory.glob("events.out.tfevents.*"))  # no earlier session wrote here
        self.writer = self._writer_class(str(self.directory), purge_step=step + 1 if step else None)
        if first:  # the config once, at the step the log starts
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", step)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        self.writer.add_image(tag, _read_png(path), step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandB:
    """A Weights & Biases run in RUN/wandb/, offline unless WANDB_MODE says otherwise (no
    account needed; `wandb sync RUN/wandb/offline-run-*` uploads it later). The run's id is
    kept in RUN/wandb-id, so --resume continues the same W&B run."""

    def __init__(self, run_dir: Path):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.run = None
        self.logged = 0

    def start(self, config: dict, step: int, logged: int) -> None:
        self.logged = logged  # W&B steps only go forward: those already held are not sent again
        id_file = self.run_dir / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        if not id_file.is_file():
            atomic_write_text(id_file, run_id)
        (self.run_dir / WANDB).mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "ddpmkit"), name=self.run_dir.name, id=run_id, resume="allow",
            dir=str(self.run_dir), config=config, mode=os.environ.get("WANDB_MODE", "offline"),
            settings=self.wandb.Settings(console="off", silent=True),  # leaves stdout (and the progress bar) alone
        )

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if step > self.logged:
            self.run.log({tag: value for tag, value in scalars.items() if value is not None}, step=step)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        if step > self.logged:
            self.run.log({tag: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Loggers:
    """Several loggers as one (none: logs nothing)."""

    def __init__(self, loggers: list[Logger] = ()):
        self.loggers = list(loggers)

    def start(self, config: dict, step: int, logged: int) -> None:
        for logger in self.loggers:
            logger.start(config, step, logged)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_scalars(step, scalars)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        for logger in self.loggers:
            logger.log_image(step, tag, path)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
