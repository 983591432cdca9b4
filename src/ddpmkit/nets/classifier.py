"""The noise-aware classifier p(y | x_t, t) of classifier guidance (Dhariwal & Nichol 2021,
Sec. 4 and App. B: guided-diffusion's EncoderUNetModel): the U-Net's downsampling half with
its time embedding, then a pooling head.

  x_t [B, C, H, W], t [B] -> stem -> encoder levels (nets/unet.py's make_encoder)
  -> one middle block -> GN, SiLU, spatial mean -> linear -> logits [B, K]

The head is guided-diffusion's "adaptive" pooling (a spatial mean and a linear map) rather
than its attention pooling: at the small sizes this toolkit trains on a CPU (8x8 digits end
in 4x4 maps) attention over 16 positions adds parameters and time for nothing the mean does
not already see, and the mean pools any image size without a learned position embedding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, is_positive_int
from .blocks import group_norm
from .embeddings import TimeEmbedding
from .unet import BlockName, UNetConfig, make_block, make_encoder


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a NoisyClassifier: plain data, saved as JSON beside its weights."""

    in_channels: int = 1  # image channels
    num_classes: int = 10  # classes K of the labels 0..K-1 (at least 2)
    image_size: int = 8  # smaller side of the images, px
    base_width: int = 32  # channels of level 0; level i has base_width·channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2)  # width multiplier per level; H, W halve between levels
    blocks_per_level: int = 1  # residual blocks per level
    block: BlockName = "resnet"  # "resnet" or "convnext", as the U-Net's
    attention_resolutions: tuple[int, ...] = ()  # level sizes (px) with full self-attention
    attention_heads: int = 4  # heads of every attention
    dropout: float = 0.0  # drop probability in [0, 1) inside each block
    groups: int = 32  # GroupNorm groups, clamped to a divisor of each width

    def __post_init__(self):
        for name in ("channel_mults", "attention_resolutions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if not (is_positive_int(self.num_classes) and self.num_classes >= 2):
            raise UserError(f"a classifier needs at least 2 classes, got num_classes {self.num_classes!r}")
        self.encoder_config()  # the U-Net's checks of every shared field

    def encoder_config(self) -> UNetConfig:
        """The U-Net config whose downsampling half this classifier is."""
        return UNetConfig(in_channels=self.in_channels, out_channels=1, base_width=self.base_width,
                          channel_mults=self.channel_mults, blocks_per_level=self.blocks_per_level, block=self.block,
                          image_size=self.image_size, attention_resolutions=self.attention_resolutions,
                          attention_heads=self.attention_heads, dropout=self.dropout, groups=self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"the classifier's config has unknown fields {sorted(unknown)}; was it written by a newer ddpmkit?")
        return cls(**d)


class NoisyClassifier(nn.Module):
    """Logits of p(y | x_t, t): (x_t [B, C, H, W], t [B] timesteps of the run's schedule) -> [B, K]."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.unet_config = c = config.encoder_config()  # the shared fields, checked once
        self.time_embed = TimeEmbedding(c.base_width, c.emb_dim)
        self.stem = nn.Conv2d(c.in_channels, c.base_width, 3, padding=1)
        self.encoder, self.downsamples, channels = make_encoder(c)
        ch = channels[-1]
        self.middle = make_block(c, ch, ch)
        self.out_norm = group_norm(ch, c.groups)
        self.head = nn.Linear(ch, config.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        self.unet_config.check_image_size(H, W)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)
        emb = F.silu(self.time_embed(t))  # [B, emb_dim], SiLU applied once as in the U-Net
        h = self.stem(x.contiguous(memory_format=torch.channels_last))
        for i, level in enumerate(self.encoder):
            for stage in level:
                h = stage(h, emb)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        h = F.silu(self.out_norm(self.middle(h, emb)))  # [B, ch, H', W']
        return self.head(h.mean(dim=(2, 3)))  # [B, K]
