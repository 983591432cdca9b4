"""Building blocks of the U-Net noise predictor.

Every block maps [B, C_in, H, W] -> [B, C_out, H', W']. Blocks that take the time
embedding receive it as `emb` [B, emb_dim] with the SiLU already applied: the U-Net
activates the embedding once per forward pass, not once per block.

Memory layout: the U-Net keeps activations channels-last (torch.channels_last), where
x.permute(0, 2, 3, 1) -> (B, H, W, C) is a free view. Pointwise (1×1) maps are therefore
nn.Linear over that view: on CPU this is several times faster than a 1×1 Conv2d, with the
same parameters. Any input layout gives the same values; only speed differs.

Notation: GN -> GroupNorm, (s, b) -> scale and shift from the embedding, N -> H·W
positions, h -> heads, d -> channels per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._tensor import append_dims


def norm_groups(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is at most `groups`, so GroupNorm fits any width."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


def pointwise(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply `linear` over the channels of x [B, C, H, W] at every position (a 1×1 conv)."""
    return linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ChannelsLastGroupNormFn(torch.autograd.Function):
    """GroupNorm of a channels-last x [B, C, H, W] on the CPU, optionally followed by the
    scale-shift y·(1 + s) + b with s, b [B, C, 1, 1], with the gradient computed from
    per-channel sums over positions, which are cheap in this layout.

    ATen's CPU backward for channels-last GroupNorm is several times slower than its NCHW
    one (13× in bf16). Same math: with x̂ = (x − μ)·r, r = 1/√(σ² + eps), per group of
    M = (C/G)·H·W values, and z = γ' x̂ + β' where γ' = γ(1 + s), β' = β(1 + s) + b per
    (b, c) (γ' = γ, β' = β without the scale-shift),
        dx = r·(γ' dz − mean(γ' dz) − x̂·mean(γ' dz x̂)),
        dγ = Σ_b (1 + s) Σ_hw dz x̂,  dβ = Σ_b (1 + s) Σ_hw dz,
        ds = γ Σ_hw dz x̂ + β Σ_hw dz,  db = Σ_hw dz,
    where dx is written as A·dz + B·x + C with A per (b, c) and B, C per (b, group). The
    scale-shift in here costs no pass of its own in backward: everything comes from the two
    per-channel sums Σ_hw dz and Σ_hw dz·x, and GN's output is not kept.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift, groups: int, eps: float):
        B, C, H, W = x.shape
        y, mean, rstd = torch.native_group_norm(x, weight, bias, B, C, H * W, groups, eps)
        if scale is not None:
            torch.addcmul(shift, y, scale + 1, out=y)  # GN(x)·(1 + s) + b, in place
        ctx.save_for_backward(x, weight, bias, scale, mean.view(B, groups, 1), rstd.view(B, groups, 1))
        ctx.groups = groups
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, bias, scale, mu, r = ctx.saved_tensors  # mu, r: [B, G, 1] in acc
        B, C, H, W = x.shape
        acc = torch.promote_types(x.dtype, torch.float32)  # sums of bf16 values in float32
        G, D, N = ctx.groups, C // ctx.groups, H * W
        xv = x.permute(0, 2, 3, 1).reshape(B, N, C)  # views of channels-last memory
        dyv = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(B, N, C)
        s_dy = dyv.sum(1, dtype=acc).view(B, G, D)  # Σ_hw dy
        dx = dyv * xv  # (B, N, C); its memory is reused for dx below
        s_dyx = dx.sum(1, dtype=acc).view(B, G, D)  # Σ_hw dy·x
        gamma = weight.to(acc).view(1, G, D)
        s_dyxhat = (s_dyx - mu * s_dy) * r  # Σ_hw dy·x̂, per channel
        one_s = None if scale is None else scale.to(acc).view(B, G, D) + 1
        gamma_eff = gamma if one_s is None else gamma * one_s  # γ'
        mean_gdy = (gamma_eff * s_dy).sum(-1, keepdim=True) / (D * N)  # mean(γ' dy) per group
        mean_gdyxhat = (gamma_eff * s_dyxhat).sum(-1, keepdim=True) / (D * N)  # mean(γ' dy x̂)
        A = (r * gamma_eff).reshape(B, 1, C)
        Bg = (-r * r * mean_gdyxhat).expand(B, G, D).reshape(B, 1, C)
        Cg = (r * (r * mu * mean_gdyxhat - mean_gdy)).expand(B, G, D).reshape(B, 1, C)
        torch.addcmul(Cg.to(x.dtype), xv, Bg.to(x.dtype), out=dx).addcmul_(dyv, A.to(x.dtype))
        dx = dx.view(B, H, W, C).permute(0, 3, 1, 2)
        if scale is None:
            dweight, dbias, dscale, dshift = s_dyxhat.sum(0), s_dy.sum(0), None, None
        else:
            dweight, dbias = (s_dyxhat * one_s).sum(0), (s_dy * one_s).sum(0)
            dscale = (gamma * s_dyxhat + bias.to(acc).view(1, G, D) * s_dy).reshape(scale.shape).to(scale.dtype)
            dshift = s_dy.reshape(scale.shape).to(scale.dtype)
        return dx, dweight.reshape(C).to(weight.dtype), dbias.reshape(C).to(weight.dtype), dscale, dshift, None, None


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and values) whose backward is fast for channels-last
    CPU tensors, the U-Net's layout; any other input takes nn.GroupNorm's own path.

    Given `scale` and `shift` [B, C, 1, 1] it returns GN(x)·(1 + scale) + shift, the
    scale-shift norm of Nichol & Dhariwal 2021, in the same fast path."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        if (x.ndim == 4 and x.device.type == "cpu" and self.affine and torch.is_grad_enabled() and x.requires_grad
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
                and (scale is None or scale.dtype == shift.dtype == x.dtype)):
            return _ChannelsLastGroupNormFn.apply(x, self.weight, self.bias, scale, shift, self.num_groups, self.eps)
        y = super().forward(x)
        return y if scale is None else torch.addcmul(shift, y, scale + 1)


def group_norm(channels: int, groups: int) -> GroupNorm:
    """GroupNorm with `groups` clamped to a divisor of `channels` (Wu & He 2018)."""
    return GroupNorm(norm_groups(channels, groups), channels)


class ResBlock(nn.Module):
    """Residual block of the DDPM U-Net (Ho et al. 2020, App. B) with the scale-shift norm
    of Nichol & Dhariwal 2021 (improved-diffusion's use_scale_shift_norm):
    h = conv(GN(x)); h = GN(h)·(1 + s) + b; out = skip(x) + conv(dropout(SiLU(h))).
    """

    def __init__(
        self,
        in_channels: int,  # channels of x
        out_channels: int,  # channels of the result
        emb_dim: int,  # width of the (SiLU-activated) time embedding
        dropout: float = 0.0,  # drop probability in [0, 1) before the second conv
        groups: int = 32,  # GroupNorm groups, clamped to a divisor of each width
    ):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)  # -> (s, b)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Linear(in_channels, out_channels) if in_channels != out_channels else None  # 1×1

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = append_dims(self.emb_proj(emb), h.ndim).chunk(2, dim=1)  # [B, C, 1, 1] each
        h = self.norm2(h, scale, shift)  # GN(h)·(1 + s) + b
        h = self.conv2(self.dropout(F.silu(h)))
        return (x if self.skip is None else pointwise(self.skip, x)) + h


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022, Fig. 4) conditioned on time by adding the projected
    embedding after the depthwise conv, as lucidrains' ConvNextBlock does:
    h = dwconv7x7(x) + Linear(emb); out = skip(x) + pw2(dropout(GELU(pw1(LN(h))))).
    LN is GroupNorm with one group (normalises over C, H and W).
    """

    def __init__(
        self,
        in_channels: int,  # channels of x
        out_channels: int,  # channels of the result
        emb_dim: int,  # width of the (SiLU-activated) time embedding
        dropout: float = 0.0,  # drop probability in [0, 1) inside the pointwise MLP
        mult: int = 4,  # hidden width of the pointwise MLP, in multiples of out_channels
    ):
        super().__init__()
        self.dwconv = nn.Conv2d(in_channels, in_channels, 7, padding=3, groups=in_channels)
        self.emb_proj = nn.Linear(emb_dim, in_channels)
        self.norm = nn.GroupNorm(1, in_channels)
        self.pw1 = nn.Linear(in_channels, mult * out_channels)  # 1×1
        self.dropout = nn.Dropout(dropout)
        self.pw2 = nn.Linear(mult * out_channels, out_channels)  # 1×1
        self.skip = nn.Linear(in_channels, out_channels) if in_channels != out_channels else None  # 1×1

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x) + append_dims(self.emb_proj(emb), x.ndim)
        h = self.norm(h).permute(0, 2, 3, 1)  # (B, H, W, C)
        h = self.pw2(self.dropout(F.gelu(self.pw1(h)))).permute(0, 3, 1, 2)  # (B, C_out, H, W)
        return (x if self.skip is None else pointwise(self.skip, x)) + h


class _Attention(nn.Module):
    """Shared parts of both attentions: GroupNorm first, 1×1 qkv, 1×1 output, residual."""

    def __init__(
        self,
        channels: int,  # channels of x, divisible by heads
        heads: int = 4,  # attention heads; d = channels / heads
        groups: int = 32,  # GroupNorm groups, clamped to a divisor of channels
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        # 1×1 maps as Linear on (B, N, C), so that q, k, v come out with d contiguous (what
        # SDPA is fastest on). No bias on qkv: GN's affine shift already feeds a constant in.
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.proj = nn.Linear(channels, channels)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, C, H, W] -> q, k, v, each (B, h, N, d)."""
        B, C, H, W = x.shape
        y = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, N, C), a view if channels-last
        qkv = self.qkv(y).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x + proj(out), out (B, h, N, d) with heads merged back into channels."""
        B, C, H, W = x.shape
        out = self.proj(out.transpose(1, 2).reshape(B, H, W, C))  # (B, H, W, C)
        return x + out.permute(0, 3, 1, 2)


class SelfAttention(_Attention):
    """Multi-head self-attention over all N = H·W positions (Vaswani et al. 2017) as a
    pre-norm residual block, as in the DDPM U-Net: x + proj(softmax(q kᵀ/√d) v), O(N²)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)
        return self.residual(x, F.scaled_dot_product_attention(q, k, v))


class LinearAttention(_Attention):
    """Linear attention (Shen et al. 2021, "Efficient Attention"; the kernel view of
    Katharopoulos et al. 2020), as lucidrains' LinearAttention: softmax over features on q
    and over positions on k, then x + proj(q (kᵀ v)) with a d×d context per head, O(N)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)  # (B, h, N, d)
        q = q.softmax(dim=-1) * q.shape[-1] ** -0.5  # over features
        k = k.softmax(dim=-2)  # over positions
        context = k.transpose(-1, -2) @ v  # (B, h, d, d): Σ_n k_n v_nᵀ
        return self.residual(x, q @ context)


class Downsample(nn.Module):
    """Halve H and W with a strided 3×3 conv (DDPM U-Net)."""

    def __init__(self, channels: int):  # channels of x, kept
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# How nearest ×2 then a 3×3 conv reads each input row (or column), as one transposed-conv tap:
# output 2i sees rows i-1 (w0) and i (w1 + w2); output 2i+1 sees rows i (w0 + w1) and i+1 (w2).
# A stride-2 transposed conv with padding 1 puts tap k of input i at output 2i - 1 + k, so its
# 4 taps are [w2, w1 + w2, w0 + w1, w0]: _NEAREST_TAPS[k] @ (w0, w1, w2).
_NEAREST_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))
_UP_STRIDE, _UP_PADDING = 2, 1  # of that transposed conv: 2i - 1 + k


class _TransposedConvFn(torch.autograd.Function):
    """conv_transpose2d(x, kernel, bias, stride 2, padding 1) on the CPU, with a backward that
    asks oneDNN for dx, dkernel and dbias one at a time: its combined channels-last backward
    of a transposed conv is slower than the three apart (about 39 ms against 24 at batch 32,
    64 channels, 16 -> 32 px, 1 thread). dx and dkernel are the same calls ATen makes
    (equal bit for bit); dbias = Σ dy over batch and positions."""

    @staticmethod
    def forward(ctx, x, kernel, bias):
        ctx.save_for_backward(x, kernel)
        return F.conv_transpose2d(x, kernel, bias, stride=_UP_STRIDE, padding=_UP_PADDING)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, kernel = ctx.saved_tensors
        need_x, need_kernel, need_bias = ctx.needs_input_grad

        def grad(mask):  # one of (dx, dkernel) of the transposed conv
            return torch.ops.aten.convolution_backward(dy, x, kernel, None, [_UP_STRIDE] * 2, [_UP_PADDING] * 2, [1, 1], True,
                                                       [0, 0], 1, mask)

        dx = grad([True, False, False])[0] if need_x else None
        dkernel = grad([False, True, False])[1] if need_kernel else None
        dbias = dy.sum((0, 2, 3)) if need_bias else None
        return dx, dkernel, dbias


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour ×2, then a 3×3 conv (DDPM U-Net).

    Computed as one stride-2 transposed convolution of the small map with a 4×4 kernel whose
    taps are sums of the 3×3 taps (_NEAREST_TAPS along rows and columns), without the 4×
    larger upsampled tensor: each output pixel still sees 2×2 input pixels, so the same
    function and parameters with 4/9 of the multiply-adds, in one oneDNN call (faster in
    training than the four 2×2 phase convs of a sub-pixel form, whose sliced inputs are copied).
    """

    def __init__(self, channels: int):  # channels of x, kept
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def transposed_kernel(self) -> torch.Tensor:
        """[C_in, C_out, 4, 4]: the 3×3 conv's weight folded for conv_transpose2d (stride 2, padding 1)."""
        w = self.conv.weight  # [C_out, C_in, 3, 3]
        taps = torch.tensor(_NEAREST_TAPS, dtype=w.dtype, device=w.device)  # [4, 3]
        return torch.einsum("yr,oirc,xc->ioyx", taps, w, taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, bias = self.transposed_kernel().to(x.dtype), self.conv.bias
        if x.device.type == "cpu" and torch.is_grad_enabled() and bias is not None and bias.dtype == x.dtype:
            return _TransposedConvFn.apply(x, kernel, bias)
        return F.conv_transpose2d(x, kernel, bias, stride=_UP_STRIDE, padding=_UP_PADDING)
