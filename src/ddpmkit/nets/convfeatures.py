"""A small convolutional network whose pooled activations are ddpmkit's own image features.

Trained as a classifier where the data has labels (its penultimate layer then separates
what the labels separate, as Inception's pool layer does for ImageNet), or left at a fixed
random initialisation where it has none (random convolutional features, stated as such by
features.OwnFeatures). Any channel count and image size: inputs larger than `max_side`
are first averaged down to fit it, then each stage halves the size until it is 2 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConvFeaturesConfig:
    in_channels: int = 1  # image channels, 1..4
    image_size: tuple[int, int] = (8, 8)  # (H, W) of the run's images
    base_width: int = 32  # channels of the first stage; doubled per stage up to max_width
    max_width: int = 128  # channels of the later stages = the feature dimension
    max_side: int = 32  # images with a longer side are area-downsampled to fit first
    num_classes: int = 0  # classifier outputs; 0: no head (random features)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) after the area downsampling (unchanged when the image fits max_side)."""
        h, w = self.image_size
        factor = max(1, -(-max(h, w) // self.max_side))  # ceil(side / max_side)
        return (max(1, h // factor), max(1, w // factor))

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per stage: stage 0 keeps the size, each later one halves it (stride 2)
        until the longer side is 2 px or less."""
        side, widths = max(self.input_size), [self.base_width]
        while side > 2:
            side = -(-side // 2)
            widths.append(min(self.max_width, self.base_width * 2 ** len(widths)))
        return tuple(widths) if len(widths) > 1 else (self.base_width, self.max_width)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


class ConvFeatures(nn.Module):
    """uint8-range images mapped to [-1, 1], [N, C, H, W] → features [N, F] (ReLU, global mean)."""

    def __init__(self, config: ConvFeaturesConfig):
        super().__init__()
        self.config = config
        layers, channels = [], config.in_channels
        for i, width in enumerate(config.widths):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, stride=1 if i == 0 else 2, padding=1))
            channels = width
        self.stages = nn.ModuleList(layers)
        self.head = nn.Linear(channels, config.num_classes) if config.num_classes else None
        # features are divided by this, set once from the data (features.train_own_features) so
        # that E‖f‖²/F = 1 on it: distances and KID's (xᵀy/F + 1)³ kernel then work at a unit scale
        self.register_buffer("feature_scale", torch.ones(()))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's ReLU activations averaged over space [N, F], unscaled."""
        if tuple(x.shape[-2:]) != self.config.input_size:
            x = F.adaptive_avg_pool2d(x, self.config.input_size)  # exact area averaging for whole factors
        for conv in self.stages:
            x = F.relu(conv(x))
        return x.mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x) / self.feature_scale  # [N, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] (needs a head)."""
        if self.head is None:
            raise RuntimeError("this feature network has no classifier head (num_classes = 0)")
        return self.head(self.pooled(x))
