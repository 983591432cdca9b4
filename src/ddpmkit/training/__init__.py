"""Training: one loop (trainer.py) that runs any objective (objective.py's protocol): the
diffusion loss of a run (diffusion.py), the rounds of progressive distillation (distill.py) and
the noise-aware classifier of classifier guidance (classifier.py).
This package's __init__ names the loop only; the objectives, which assemble through build,
are imported from their modules."""

from .objective import Augmentation, Batch, Objective, ReplicasDiverged, TrainingDiverged, TrainResult
from .trainer import Trainer, lr_factor

__all__ = ["Augmentation", "Batch", "Objective", "ReplicasDiverged", "TrainResult", "Trainer", "TrainingDiverged",
           "lr_factor"]
