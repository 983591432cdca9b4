"""The U-Net noise predictor and its blocks: shapes, parameter counts, gradients,
conditioning, configuration errors."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from ddpmkit.errors import UserError
from ddpmkit.nets.blocks import GroupNorm, LinearAttention, ResBlock, SelfAttention, Upsample, norm_groups, pointwise
from ddpmkit.nets.unet import UNet, UNetConfig, count_parameters

TINY = dict(base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=8, image_size=16)


def tiny(**overrides) -> UNetConfig:
    return UNetConfig(**{**TINY, **overrides})


def perturb_final_conv(net: UNet, seed: int = 0) -> None:
    """Give the zero-initialised output conv random weights so the output depends on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = net.out_conv.weight
        w.copy_(0.1 * torch.randn(w.shape, generator=g))
        net.out_conv.bias.copy_(0.1 * torch.randn(net.out_conv.bias.shape, generator=g))


def timesteps(batch: int) -> torch.Tensor:
    return torch.linspace(0, 999, batch).long()


# --- shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, size",
    [
        (tiny(in_channels=1, out_channels=1, image_size=8), (8, 8)),
        (tiny(in_channels=3, out_channels=3, attention_resolutions=(8,)), (16, 16)),
        (tiny(in_channels=4, out_channels=4, linear_attention_resolutions=(16,)), (16, 16)),
        (tiny(in_channels=3, out_channels=3, channel_mults=(1, 2, 2), image_size=32,
              attention_resolutions=(8,), linear_attention_resolutions=(32, 16)), (32, 32)),
        (tiny(in_channels=3, out_channels=3, attention_resolutions=(8,)), (16, 24)),  # non-square
        (tiny(in_channels=3, out_channels=3, channel_mults=(1, 2, 2), image_size=32), (24, 40)),
        (tiny(in_channels=1, out_channels=1, block="convnext", attention_resolutions=(8,)), (16, 16)),
        (tiny(in_channels=3, out_channels=6), (16, 16)),  # learned variance: 2·in_channels
        (tiny(in_channels=2, out_channels=2, num_classes=10, dropout=0.1, blocks_per_level=2), (16, 8)),
        (tiny(in_channels=1, out_channels=1, channel_mults=(1,), image_size=5), (5, 7)),  # one level: any size
    ],
)
def test_output_shape(config: UNetConfig, size: tuple[int, int]):
    net = UNet(config)
    x = torch.randn(3, config.in_channels, *size)
    out = net(x, timesteps(3))
    assert out.shape == (3, config.out_channels, *size)
    assert out.dtype == x.dtype and out.is_contiguous()


# --- parameter counts -------------------------------------------------------------------


def resblock_params(cin: int, cout: int, emb: int) -> int:
    norms = 2 * cin + 2 * cout  # two GroupNorms, weight and bias
    convs = (9 * cin * cout + cout) + (9 * cout * cout + cout)  # two 3×3 convs with bias
    film = emb * 2 * cout + 2 * cout  # Linear(emb -> scale, shift)
    skip = cin * cout + cout if cin != cout else 0  # 1×1 when the width changes
    return norms + convs + film + skip


def attention_params(c: int) -> int:
    return 2 * c + 3 * c * c + (c * c + c)  # GN, qkv without bias, proj with bias


def test_count_parameters_counts_each_weight_once_trainable_or_not_and_no_buffers():
    lin = torch.nn.Linear(3, 5)
    assert count_parameters(lin) == 3 * 5 + 5
    assert count_parameters(torch.nn.Sequential(lin, torch.nn.ReLU(), lin)) == 20  # a shared layer counts once
    assert count_parameters(torch.nn.Linear(3, 5).requires_grad_(False)) == 20  # frozen weights too
    assert count_parameters(torch.nn.BatchNorm1d(4)) == 2 * 4  # weight and bias; its running statistics are buffers
    net = UNet(tiny(num_classes=3))
    assert count_parameters(net) == count_parameters(UNet(tiny())) + 4 * net.config.emb_dim  # 3 classes and the null label


def test_parameter_count_matches_the_architecture_by_hand():
    # base 8, levels (8 ch @ 8 px, 16 ch @ 4 px), one block per level, 1 -> 1 channel.
    net = UNet(UNetConfig(in_channels=1, out_channels=1, base_width=8, channel_mults=(1, 2),
                          blocks_per_level=1, groups=4, image_size=8))
    E = 32  # 4 · base_width
    time_mlp = (8 * E + E) + (E * E + E)
    stem = 9 * 1 * 8 + 8
    # Encoder keeps [stem 8, block 8, down 8, block 16] for the decoder.
    encoder = resblock_params(8, 8, E) + (9 * 8 * 8 + 8) + resblock_params(8, 16, E)
    middle = 2 * resblock_params(16, 16, E)
    decoder = (resblock_params(16 + 16, 16, E) + resblock_params(16 + 8, 16, E) + (9 * 16 * 16 + 16)
               + resblock_params(16 + 8, 8, E) + resblock_params(8 + 8, 8, E))
    head = 2 * 8 + (9 * 8 * 1 + 1)
    assert count_parameters(net) == time_mlp + stem + encoder + middle + decoder + head


def test_parameter_count_moves_the_expected_way():
    base = count_parameters(UNet(tiny(image_size=8)))  # levels: 16 ch @ 8 px, 32 ch @ 4 px
    # Attention at 4 px: one encoder block, two decoder blocks, plus the middle one, all 32 ch.
    with_attention = count_parameters(UNet(tiny(image_size=8, attention_resolutions=(4,))))
    assert with_attention - base == 4 * attention_params(32)
    # Linear attention has the same weights; at 8 px it is 3 × 16 ch, plus full attention in the middle.
    with_linear = count_parameters(UNet(tiny(image_size=8, linear_attention_resolutions=(8,))))
    assert with_linear - base == 3 * attention_params(16) + attention_params(32)
    # Widths enter squared in the convs: doubling them gives a little under 4× the weights.
    doubled = count_parameters(UNet(tiny(image_size=8, base_width=32)))
    assert 3.5 * base < doubled < 4 * base
    assert count_parameters(UNet(tiny(image_size=8, blocks_per_level=2))) > base
    assert count_parameters(UNet(tiny(image_size=8, num_classes=10))) == base + 11 * 64


# --- initialisation and gradients --------------------------------------------------------


def test_untrained_output_is_exactly_zero():
    net = UNet(tiny(in_channels=3, out_channels=6, attention_resolutions=(8,)))
    out = net(torch.randn(2, 3, 16, 16), timesteps(2))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize(
    "config",
    [
        tiny(in_channels=3, out_channels=3, attention_resolutions=(8,), linear_attention_resolutions=(16,),
             num_classes=4),
        tiny(block="convnext", linear_attention_resolutions=(8,), num_classes=4),
    ],
)
def test_gradients_reach_every_parameter_after_one_step(config: UNetConfig):
    torch.manual_seed(0)
    net = UNet(config)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(4, config.in_channels, 16, 16)
    t, label = timesteps(4), torch.tensor([0, 1, 2, 3])

    target = torch.randn(4, config.out_channels, 16, 16)

    def step():
        opt.zero_grad(set_to_none=False)
        F.mse_loss(net(x, t, label), target).backward()

    # First step: the output conv is zero, so only it receives gradient.
    step()
    names = {n for n, p in net.named_parameters() if p.grad.abs().sum() > 0}
    assert names == {"out_conv.weight", "out_conv.bias"}
    opt.step()
    # Second step: the output conv is no longer zero and every parameter learns.
    step()
    silent = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert silent == []


def count_forward_calls(stages) -> list[int]:
    """Count calls of each module's forward (the recomputation inside checkpoint calls it
    too, but does not run forward hooks)."""
    counts = [0] * len(stages)
    for i, stage in enumerate(stages):
        def counted(*args, _forward=stage.forward, _i=i, **kwargs):
            counts[_i] += 1
            return _forward(*args, **kwargs)
        stage.forward = counted
    return counts


def test_grad_checkpoint_recomputes_each_block_and_gives_the_same_gradients():
    config = tiny(attention_resolutions=(8,), dropout=0.0)
    torch.manual_seed(0)
    plain = UNet(config)
    perturb_final_conv(plain)
    checkpointed = UNet(dataclasses.replace(config, grad_checkpoint=True))
    checkpointed.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 1, 16, 16), timesteps(2)
    calls = {}
    for net in (plain, checkpointed):
        counts = count_forward_calls([m for m in net.modules() if isinstance(m, ResBlock)])  # one per stage
        net(x, t).square().mean().backward()
        calls[net is checkpointed] = counts
    assert len(calls[True]) == len(calls[False]) == 8 and set(calls[False]) == {1}  # each block once per training step
    assert set(calls[True]) == {2}  # and once more in the backward pass, recomputing its activations
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    counts = count_forward_calls([checkpointed.middle[0]])
    with torch.no_grad():
        checkpointed(x, t)
    checkpointed.eval()(x, t).sum().backward()
    assert counts == [2]  # no recomputation without gradients or in eval mode


# --- conditioning and inputs ----------------------------------------------------------------


def test_class_label_changes_the_output_and_none_is_the_null_label():
    torch.manual_seed(0)
    net = UNet(tiny(num_classes=5)).eval()
    perturb_final_conv(net)
    x, t = torch.randn(2, 1, 16, 16), timesteps(2)
    with torch.no_grad():
        out0 = net(x, t, torch.tensor([0, 0]))
        out1 = net(x, t, torch.tensor([1, 1]))
        out_none = net(x, t)
        out_null = net(x, t, torch.tensor([5, 5]))
    assert not torch.allclose(out0, out1)
    assert torch.equal(out_none, out_null)
    assert not torch.allclose(out_none, out0)


def test_unconditional_net_rejects_a_label():
    net = UNet(tiny())
    with pytest.raises(UserError, match="num_classes"):
        net(torch.randn(1, 1, 16, 16), timesteps(1), torch.tensor([0]))


def test_integer_float_and_scalar_timesteps():
    torch.manual_seed(0)
    net = UNet(tiny()).eval()
    perturb_final_conv(net)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        as_int = net(x, torch.tensor([0, 10, 999]))
        as_float = net(x, torch.tensor([0.0, 10.0, 999.0]))
        fractional = net(x, torch.tensor([0.5, 10.5, 998.5]))
        scalar = net(x, torch.tensor(10))
        per_sample = net(x, torch.full((3,), 10))
    torch.testing.assert_close(as_int, as_float)
    assert torch.isfinite(fractional).all() and not torch.allclose(fractional, as_int)
    torch.testing.assert_close(scalar, per_sample)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    torch.manual_seed(0)
    net = UNet(tiny(dropout=0.5, attention_resolutions=(8,)))
    perturb_final_conv(net)
    x, t = torch.randn(2, 1, 16, 16), timesteps(2)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, t), net(x, t))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x, t), net(x, t))


def test_memory_layout_does_not_change_the_result():
    torch.manual_seed(0)
    net = UNet(tiny(attention_resolutions=(8,), linear_attention_resolutions=(16,))).eval()
    perturb_final_conv(net)
    x, t = torch.randn(2, 1, 16, 16), timesteps(2)
    with torch.no_grad():
        a = net(x, t)
        b = net(x.contiguous(memory_format=torch.channels_last), t)
        net.to(memory_format=torch.channels_last)  # channels-last weights too
        c = net(x, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


# --- blocks -------------------------------------------------------------------------------------


def test_self_attention_matches_the_textbook_formula():
    torch.manual_seed(0)
    attn = SelfAttention(16, heads=4, groups=4)
    x = torch.randn(2, 16, 4, 6)
    B, C, N, h, d = 2, 16, 24, 4, 4
    y = attn.norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v = (y @ attn.qkv.weight.T).split(C, dim=-1)
    q, k, v = (z.reshape(B, N, h, d).transpose(1, 2) for z in (q, k, v))  # (B, h, N, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(B, N, C) @ attn.proj.weight.T + attn.proj.bias
    expected = x + out.transpose(1, 2).reshape(B, C, 4, 6)
    torch.testing.assert_close(attn(x), expected)


def test_linear_attention_matches_its_formula_and_is_a_weighted_average():
    torch.manual_seed(0)
    attn = LinearAttention(8, heads=2, groups=4)
    x = torch.randn(2, 8, 5, 3)
    B, C, N, h, d = 2, 8, 15, 2, 4
    y = attn.norm(x).flatten(2).transpose(1, 2)
    q, k, v = ((y @ w.T).reshape(B, N, h, d).transpose(1, 2) for w in attn.qkv.weight.split(C))
    q, k = q.softmax(-1), k.softmax(-2)
    # Each position reads Σ_j q_j Σ_n k_{n,j} v_n: for fixed j, the k weights sum to 1 over n.
    assert torch.allclose(k.sum(dim=-2), torch.ones(B, h, d))
    out = torch.einsum("bhnj,bhmj,bhme->bhne", q, k, v) / math.sqrt(d)
    out = out.transpose(1, 2).reshape(B, N, C) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), x + out.transpose(1, 2).reshape(B, C, 5, 3))


def test_resblock_uses_the_embedding_as_scale_and_shift():
    torch.manual_seed(0)
    block = ResBlock(8, 16, emb_dim=12, groups=4)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    with torch.no_grad():
        block.emb_proj.weight.zero_()
        block.emb_proj.bias[:16] = 1.0  # s = 1
        block.emb_proj.bias[16:] = 0.5  # b = 0.5
        out = block(x, emb)
        h = block.norm2(block.conv1(F.silu(block.norm1(x)))) * 2.0 + 0.5  # GN(h)·(1 + s) + b
        expected = pointwise(block.skip, x) + block.conv2(F.silu(h))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape, groups", [((3, 12, 5, 7), 4), ((2, 8, 4, 4), 8), ((2, 6, 3, 5), 1)])
def test_group_norm_values_and_gradients_match_torch_in_any_layout(shape, groups, dtype, tol):
    """The channels-last CPU backward of GroupNorm is ours: it must agree with nn.GroupNorm."""
    torch.manual_seed(0)
    ref = torch.nn.GroupNorm(groups, shape[1])
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = GroupNorm(groups, shape[1])
    ours.load_state_dict(ref.state_dict())
    x = 3 * torch.randn(shape) + 2  # a mean far from 0 tests the x̂ terms
    dy = torch.randn(shape)
    for layout in (torch.contiguous_format, torch.channels_last):
        xs = [x.to(dtype).contiguous(memory_format=layout).requires_grad_() for _ in range(2)]
        outs = [m(v) for m, v in zip((ref, ours), xs)]
        grads = [torch.autograd.grad(o, (v, *m.parameters()), dy.to(o.dtype)) for o, v, m in zip(outs, xs, (ref, ours))]
        torch.testing.assert_close(outs[1], outs[0], rtol=tol, atol=tol)
        for a, b in zip(grads[1], grads[0]):
            torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * float(b.abs().max()))
        assert grads[1][0].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape, groups", [((3, 12, 5, 7), 4), ((2, 6, 3, 5), 1), ((2, 8, 4, 4), 8)])
def test_scale_shift_group_norm_matches_group_norm_then_scale_shift(shape, groups, dtype, tol):
    """GroupNorm(x, scale, shift) is GN(x)·(1 + scale) + shift (Nichol & Dhariwal 2021) with
    the gradients of x, scale, shift, γ and β of that plain formula, in either layout."""
    torch.manual_seed(0)
    norm = GroupNorm(groups, shape[1]).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 3 * torch.randn(shape, dtype=dtype) + 2  # a mean far from 0 tests the x̂ terms
    scale_shift = torch.randn(shape[0], 2 * shape[1], 1, 1, dtype=dtype)  # as ResBlock's chunk of emb_proj
    dy = torch.randn(shape, dtype=dtype)
    for layout in (torch.contiguous_format, torch.channels_last):
        results = []
        for plain in (True, False):
            v = x.contiguous(memory_format=layout).requires_grad_()
            ss = scale_shift.clone().requires_grad_()
            scale, shift = ss.chunk(2, dim=1)
            if plain:
                out = F.group_norm(v, groups, norm.weight, norm.bias, norm.eps) * (1 + scale) + shift
            else:
                out = norm(v, scale, shift)
            results.append((out, *torch.autograd.grad(out, (v, ss, norm.weight, norm.bias), dy)))
        for ours, ref in zip(results[1], results[0]):
            torch.testing.assert_close(ours, ref, rtol=tol, atol=tol * float(ref.detach().abs().max()))
        assert results[1][1].is_contiguous(memory_format=layout)


def test_scale_shift_group_norm_passes_gradcheck_in_channels_last():
    torch.manual_seed(0)
    norm = GroupNorm(2, 4).double()
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.randn(2, 4, 1, 1, dtype=torch.float64), torch.randn(2, 4, 1, 1, dtype=torch.float64)
    weight, bias = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def f(v, s, b, w, beta):
        return torch.func.functional_call(norm, {"weight": w, "bias": beta}, (v, s, b))

    inputs = tuple(v.requires_grad_() for v in (x, scale, shift, weight, bias))
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_upsample_passes_gradcheck(layout):
    """Upsample's own backward (the x, kernel and bias gradients asked for apart) is the gradient."""
    torch.manual_seed(0)
    up = Upsample(3).double()
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64).contiguous(memory_format=layout)
    weight, bias = torch.randn(3, 3, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)

    def f(v, w, b):
        return torch.func.functional_call(up, {"conv.weight": w, "conv.bias": b}, (v,))

    assert torch.autograd.gradcheck(f, tuple(v.requires_grad_() for v in (x, weight, bias)))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_upsample_is_a_3x3_conv_of_the_nearest_upsampled_input(layout):
    """The folded transposed conv computes conv3x3(nearest×2(x)) exactly, borders included,
    keeps the input's layout, and passes the same gradients to x and to the 3×3 weights."""
    torch.manual_seed(0)
    up = Upsample(6)
    x = torch.randn(2, 6, 5, 3).contiguous(memory_format=layout).requires_grad_()
    expected = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    out = up(x)
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 6, 10, 6) and out.is_contiguous(memory_format=layout)
    dy = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(out, (x, *up.parameters()), dy), torch.autograd.grad(expected, (x, *up.parameters()), dy)):
        torch.testing.assert_close(a, b)


def test_norm_groups_is_a_divisor_at_most_the_request():
    assert norm_groups(64, 32) == 32
    assert norm_groups(48, 32) == 24
    assert norm_groups(16, 32) == 16
    assert norm_groups(20, 8) == 5
    assert norm_groups(7, 4) == 1
    UNet(tiny(base_width=12, groups=32))(torch.randn(1, 1, 16, 16), timesteps(1))  # 12 and 24 wide


# --- configuration ------------------------------------------------------------------------------


def test_check_image_size():
    config = UNetConfig(channel_mults=(1, 2, 2))  # downsamples by 4
    with pytest.raises(UserError, match=r"10x10.*multiples of 4.*8 or 12"):
        config.check_image_size(10, 10)
    config.check_image_size(16, 24)
    config.check_image_size(4, 8)
    with pytest.raises(UserError):
        UNet(config)(torch.randn(1, 1, 10, 10), timesteps(1))


@pytest.mark.parametrize(
    "overrides, option",
    [
        (dict(base_width=0), "base_width"),
        (dict(in_channels=-1), "in_channels"),
        (dict(blocks_per_level=1.5), "blocks_per_level"),
        (dict(attention_heads=True), "attention_heads"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(channel_mults=(1, 0)), "channel_mults"),
        (dict(block="vit"), "block"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(num_classes=-1), "num_classes"),
        (dict(groups=0), "groups"),
        (dict(image_size=30, channel_mults=(1, 2, 2)), "--image-size"),
        (dict(image_size=32, attention_resolutions=(12,)), "attention_resolutions"),
        (dict(image_size=32, linear_attention_resolutions=16), "linear_attention_resolutions"),
        (dict(image_size=32, attention_resolutions=(16,), linear_attention_resolutions=(16,)), "both"),
        (dict(base_width=18, attention_resolutions=(32,)), "attention_heads"),
    ],
)
def test_bad_config_raises_user_error_naming_the_option(overrides: dict, option: str):
    with pytest.raises(UserError, match=option) as info:
        UNetConfig(**overrides)
    assert "\n" not in str(info.value)


def test_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    config = tiny(num_classes=3, attention_resolutions=(8,), block="convnext")
    torch.manual_seed(0)
    net = UNet(config).eval()
    perturb_final_conv(net)
    save_file(net.state_dict(), tmp_path / "model.safetensors")  # needs contiguous weights
    again = UNet(config).eval()
    again.load_state_dict(load_file(tmp_path / "model.safetensors"))
    x, t = torch.randn(2, 1, 16, 16), timesteps(2)
    with torch.no_grad():
        assert torch.equal(net(x, t), again(x, t))


def test_config_is_frozen_and_survives_json():
    config = UNetConfig(channel_mults=[1, 2], attention_resolutions=[16], num_classes=10)
    assert config.channel_mults == (1, 2) and config.attention_resolutions == (16,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.base_width = 8
    again = UNetConfig(**json.loads(json.dumps(dataclasses.asdict(config))))
    assert again == config and hash(again) == hash(config)


# --- the function the optimised network computes -------------------------------------------


def _reference_unet(net: UNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The DDPM U-Net written plainly in the default layout (F.group_norm, 1×1 maps as
    convs, nearest ×2 upsampling then a 3×3 conv, softmax attention): the function that
    every speed-up in blocks.py (channels-last, the GroupNorm backward, the folded
    upsampling, SDPA) must leave unchanged."""
    from ddpmkit._tensor import append_dims

    def gn(norm, h):
        return F.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps)

    def conv1x1(linear, h):
        return F.conv2d(h, append_dims(linear.weight, 4), linear.bias)

    def resblock(b, h, emb):
        out = b.conv1(F.silu(gn(b.norm1, h)))
        scale, shift = append_dims(b.emb_proj(emb), 4).chunk(2, dim=1)
        out = b.conv2(F.silu(gn(b.norm2, out) * (1 + scale) + shift))
        return (h if b.skip is None else conv1x1(b.skip, h)) + out

    def attention(a, h):
        B, C, H, W = h.shape
        d = C // a.heads
        q, k, v = conv1x1(a.qkv, gn(a.norm, h)).reshape(B, 3, a.heads, d, H * W).unbind(1)  # (B, h, d, N)
        weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(d), dim=-1)  # (B, h, N, N)
        out = (v @ weights.transpose(-1, -2)).reshape(B, C, H, W)
        return h + conv1x1(a.proj, out)

    def stage(s, h, emb):
        h = resblock(s.block, h, emb)
        return h if s.attention is None else attention(s.attention, h)

    from ddpmkit.nets.embeddings import sinusoidal_embedding

    emb = F.silu(net.time_embed.mlp(sinusoidal_embedding(t, net.time_embed.freq_dim).to(x.dtype)))
    h = net.stem(x)
    skips = [h]
    for i, level in enumerate(net.encoder):
        for s in level:
            h = stage(s, h, emb)
            skips.append(h)
        if i < len(net.downsamples):
            h = net.downsamples[i].conv(h)
            skips.append(h)
    for s in net.middle:
        h = stage(s, h, emb)
    for i, level in enumerate(net.decoder):
        for s in level:
            h = stage(s, torch.cat([h, skips.pop()], dim=1), emb)
        if i < len(net.upsamples):
            h = net.upsamples[i].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return net.out_conv(F.silu(gn(net.out_norm, h)))


def test_optimised_unet_computes_the_plain_ddpm_unet_with_the_same_gradients():
    """Fixed weights: the network's output and the gradients of every weight and of the input
    equal those of the plain float64 formulation, so speed-ups never change what is learned."""
    torch.manual_seed(0)
    net = UNet(tiny(in_channels=3, out_channels=3, channel_mults=(1, 2, 2), image_size=16, attention_resolutions=(8,)))
    perturb_final_conv(net)
    reference = UNet(net.config).double()
    reference.load_state_dict(net.state_dict())
    x, t = torch.randn(3, 3, 16, 16), timesteps(3)
    dy = torch.randn(3, 3, 16, 16)
    x32, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    out = net(x32, t)
    expected = _reference_unet(reference, x64, t)
    torch.testing.assert_close(out, expected.float(), rtol=1e-4, atol=1e-5)
    out.backward(dy)
    expected.backward(dy.double())
    torch.testing.assert_close(x32.grad, x64.grad.float(), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad.float(), rtol=1e-4, atol=1e-5 * float(q.grad.abs().max()), msg=name)
