"""Editing with a trained model: SDEdit (sdedit.py), RePaint inpainting (repaint.py) and DDIM
interpolation (interpolation.py), each a pure function over a DenoiserLike, a timestep grid and
tensors in model space (so a guided or clipped denoiser passes through unchanged); apply.py runs
them on a loaded Run's images and writes what `sample` writes plus each edit's own pictures."""

from .apply import edit_images, inpaint_images, interpolate_pair
from .interpolation import Interpolation, interpolate, slerp
from .repaint import REPAINT_SAMPLERS, check_inpaint_sampler, jump_schedule, repaint
from .sdedit import edit_grid, sdedit, start_step

__all__ = [
    "REPAINT_SAMPLERS", "Interpolation", "check_inpaint_sampler", "edit_grid", "edit_images", "inpaint_images", "interpolate", "interpolate_pair",
    "jump_schedule", "repaint", "sdedit", "slerp", "start_step",
]
