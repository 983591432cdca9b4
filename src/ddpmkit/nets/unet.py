"""The U-Net noise predictor of Ho et al. 2020 (App. B), with the improvements of
Nichol & Dhariwal 2021: scale-shift norm, optional class conditioning, learned variance
through out_channels = 2·in_channels (the caller decides).

  x [B, C_in, H, W], t [B] -> stem -> encoder (levels, downsampling by 2 between them)
  -> middle (block, attention, block) -> decoder (skip connections concatenated)
  -> GN, SiLU, zero-initialised conv -> [B, C_out, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError, check_between, check_choice, check_positive, is_positive_int
from .blocks import ConvNeXtBlock, Downsample, LinearAttention, ResBlock, SelfAttention, Upsample, group_norm
from .embeddings import LabelEmbedding, TimeEmbedding

BlockName = Literal["resnet", "convnext"]
BLOCKS = get_args(BlockName)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a UNet: plain data, saved as JSON next to the weights."""

    in_channels: int = 1  # image channels: 1 grey, 3 RGB, 4 latents; any positive int
    out_channels: int = 1  # predicted channels; 2·in_channels when the variance is learned
    base_width: int = 64  # channels of level 0; level i has base_width·channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; H, W halve between levels
    blocks_per_level: int = 2  # blocks per encoder level; the decoder has one more per level
    block: BlockName = "resnet"  # "resnet": ResBlock (DDPM); "convnext": ConvNeXtBlock
    image_size: int = 32  # smaller side of the training images, px; fixes which level is which size
    attention_resolutions: tuple[int, ...] = ()  # level sizes (smaller side, px) with full self-attention
    linear_attention_resolutions: tuple[int, ...] = ()  # level sizes (px) with linear attention
    attention_heads: int = 4  # heads of every attention; channels per head = level width / heads
    dropout: float = 0.0  # drop probability in [0, 1) inside each block
    num_classes: int = 0  # 0: unconditional; >0: class labels 0..num_classes-1, plus a null label
    groups: int = 32  # GroupNorm groups, clamped to a divisor of each width
    grad_checkpoint: bool = False  # recompute blocks in backward to save memory (training only)

    def __post_init__(self):
        # Lists (e.g. from config.json) become tuples, so the config stays hashable.
        for name in ("channel_mults", "attention_resolutions", "linear_attention_resolutions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise UserError(f"unet.{name} must be a list of integers, e.g. [16, 8], got {value!r}")
        for name in ("in_channels", "out_channels", "base_width", "blocks_per_level", "image_size",
                     "attention_heads", "groups"):
            check_positive(f"unet.{name}", getattr(self, name))
        if not (self.num_classes == 0 or is_positive_int(self.num_classes)):
            raise UserError(f"unet.num_classes must be 0 (unconditional) or more, got {self.num_classes!r}")
        if not self.channel_mults:
            raise UserError("unet.channel_mults must be a non-empty list of positive integers, e.g. [1, 2, 2]")
        if not all(is_positive_int(m) for m in self.channel_mults):
            raise UserError(f"unet.channel_mults must hold positive integers, got {list(self.channel_mults)}")
        check_choice("unet.block", self.block, BLOCKS)
        check_between("--dropout", self.dropout, 0, 1, high_included=False, what="the drop probability in each block")
        if not isinstance(self.grad_checkpoint, bool):
            raise UserError(f"unet.grad_checkpoint must be true or false, got {self.grad_checkpoint!r}")
        factor = self.downsampling
        if self.image_size % factor:
            raise UserError(
                f"image size {self.image_size} (the smaller side, --image-size) does not fit a U-Net with "
                f"{len(self.channel_mults)} levels (--channel-mults {','.join(map(str, self.channel_mults))}): it must be "
                f"a multiple of {factor}, e.g. {_near_multiples(self.image_size, factor)}; or use fewer --channel-mults"
            )
        sizes = self.level_sizes()
        for name in ("attention_resolutions", "linear_attention_resolutions"):
            for r in getattr(self, name):
                if r not in sizes:
                    raise UserError(
                        f"unet.{name} has {r!r}, which is no level's size; with image_size {self.image_size} "
                        f"the levels are {', '.join(map(str, sizes))} px"
                    )
        both = set(self.attention_resolutions) & set(self.linear_attention_resolutions)
        if both:
            raise UserError(
                f"unet size {min(both)} is in both attention_resolutions and linear_attention_resolutions; keep one"
            )
        attended = set(self.attention_resolutions) | set(self.linear_attention_resolutions)
        for i, (mult, size) in enumerate(zip(self.channel_mults, sizes)):
            width = self.base_width * mult
            in_middle = i == len(sizes) - 1 and self.has_attention
            if (size in attended or in_middle) and width % self.attention_heads:
                raise UserError(
                    f"unet.attention_heads {self.attention_heads} does not divide the width {width} of level {i}; "
                    f"choose heads dividing base_width·channel_mults"
                )

    @property
    def downsampling(self) -> int:
        """Total downsampling factor from the input to the middle: 2**(levels - 1)."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def has_attention(self) -> bool:
        """Whether any attention is configured (which also puts full attention in the middle)."""
        return bool(self.attention_resolutions or self.linear_attention_resolutions)

    @property
    def emb_dim(self) -> int:
        """Width of the time (and label) embedding: 4·base_width, as in the DDPM U-Net."""
        return 4 * self.base_width

    def level_sizes(self) -> list[int]:
        """Smaller side (px) of the feature maps at each level for image_size inputs."""
        return [self.image_size // 2**i for i in range(len(self.channel_mults))]

    def check_image_size(self, height: int, width: int) -> None:
        """Raise UserError unless H and W are both divisible by the total downsampling."""
        f = self.downsampling
        if height % f or width % f:
            raise UserError(
                f"image size {height}x{width} does not fit a U-Net with {len(self.channel_mults)} levels: "
                f"height and width must be multiples of {f}, e.g. --image-size {_near_multiples(height, f, width)}"
            )


class _Stage(nn.Module):
    """A block followed by an optional attention layer."""

    def __init__(self, block: nn.Module, attention: nn.Module | None):
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block(x, emb)
        return h if self.attention is None else self.attention(h)


def _near_multiples(n: int, f: int, width: int | None = None) -> str:
    """The multiples of f nearest to n ("28 or 32"), or with `width` to n x width ("8x8 or 16x16")."""
    def near(m: int) -> list[int]:
        return [v for v in (m // f * f, (m // f + 1) * f) if v > 0]

    if width is None:
        return " or ".join(map(str, near(n)))
    hs, ws = near(n), near(width)
    return " or ".join(f"{h}x{w}" for h, w in sorted({(hs[0], ws[0]), (hs[-1], ws[-1])}))


def make_block(c: UNetConfig, cin: int, cout: int) -> nn.Module:
    """One residual block of the configured kind, cin -> cout channels, taking the time embedding."""
    if c.block == "resnet":
        return ResBlock(cin, cout, c.emb_dim, dropout=c.dropout, groups=c.groups)
    return ConvNeXtBlock(cin, cout, c.emb_dim, dropout=c.dropout)


def make_attention(c: UNetConfig, channels: int, size: int) -> nn.Module | None:
    """The attention a level of smaller side `size` px has (full, linear or none)."""
    if size in c.attention_resolutions:
        return SelfAttention(channels, c.attention_heads, c.groups)
    if size in c.linear_attention_resolutions:
        return LinearAttention(channels, c.attention_heads, c.groups)
    return None


def make_encoder(c: UNetConfig) -> tuple[nn.ModuleList, nn.ModuleList, list[int]]:
    """The U-Net's downsampling half after the stem: its levels (blocks_per_level stages each),
    the downsamplings between them, and the channels of every tensor it hands to the decoder
    (the stem's first, the last the encoder's output). The noise-aware classifier
    (nets/classifier.py) is built on the same half."""
    sizes = c.level_sizes()
    ch = c.base_width
    skip_channels = [ch]
    encoder, downsamples = nn.ModuleList(), nn.ModuleList()
    for i, mult in enumerate(c.channel_mults):
        level = nn.ModuleList()
        for _ in range(c.blocks_per_level):
            width = c.base_width * mult
            level.append(_Stage(make_block(c, ch, width), make_attention(c, width, sizes[i])))
            ch = width
            skip_channels.append(ch)
        encoder.append(level)
        if i < len(c.channel_mults) - 1:
            downsamples.append(Downsample(ch))
            skip_channels.append(ch)
    return encoder, downsamples, skip_channels


class UNet(nn.Module):
    """ε-predictor (or x₀, v, ... — the Denoiser decides) of Ho et al. 2020, App. B:
    (x [B, C_in, H, W], t [B], label [B] | None) -> [B, C_out, H, W]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        emb_dim = c.emb_dim
        self.time_embed = TimeEmbedding(c.base_width, emb_dim)
        self.label_embed = LabelEmbedding(c.num_classes, emb_dim) if c.num_classes > 0 else None
        self.stem = nn.Conv2d(c.in_channels, c.base_width, 3, padding=1)
        self.encoder, self.downsamples, skip_channels = make_encoder(c)
        ch = skip_channels[-1]
        sizes = c.level_sizes()

        middle_attention = SelfAttention(ch, c.attention_heads, c.groups) if c.has_attention else None
        self.middle = nn.ModuleList([_Stage(make_block(c, ch, ch), middle_attention), _Stage(make_block(c, ch, ch), None)])

        self.decoder = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(c.channel_mults))):
            mult = c.channel_mults[i]
            level = nn.ModuleList()
            for _ in range(c.blocks_per_level + 1):
                width = c.base_width * mult
                level.append(_Stage(make_block(c, ch + skip_channels.pop(), width), make_attention(c, width, sizes[i])))
                ch = width
            self.decoder.append(level)
            if i > 0:
                self.upsamples.append(Upsample(ch))

        self.out_norm = group_norm(ch, c.groups)
        self.out_conv = nn.Conv2d(ch, c.out_channels, 3, padding=1)
        # Zero init: the untrained network predicts 0 (Nichol & Dhariwal 2021's zero_module).
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def _run(self, stage: _Stage, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.config.grad_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, use_reentrant=False)
        return stage(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, C_in, H, W] noisy images; t: [B] (or scalar) timesteps, int or float;
        label: [B] long class ids in 0..num_classes-1, num_classes for the null label, or
        None (the null label). Returns [B, C_out, H, W]."""
        B, _, H, W = x.shape
        self.config.check_image_size(H, W)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)
        emb = self.time_embed(t)  # [B, emb_dim]
        if self.label_embed is not None:
            emb = emb + self.label_embed(label, B, x.device)
        elif label is not None:
            raise UserError("a label was given to an unconditional U-Net; set unet.num_classes or pass label=None")
        emb = F.silu(emb)  # every block's embedding projection starts with SiLU: apply it once here

        # Channels-last activations: 3×3 and depthwise convs and the pointwise maps of
        # blocks.py are faster on CPU. Weights stay contiguous (safetensors needs that).
        h = self.stem(x.contiguous(memory_format=torch.channels_last))
        skips = [h]
        for i, level in enumerate(self.encoder):
            for stage in level:
                h = self._run(stage, h, emb)
                skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
                skips.append(h)
        for stage in self.middle:
            h = self._run(stage, h, emb)
        for i, level in enumerate(self.decoder):
            for stage in level:
                h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsamples):
                h = self.upsamples[i](h)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return out.contiguous()  # back to the default layout for the caller


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in `module` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
