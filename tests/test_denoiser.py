"""The Denoiser's wrappers: classifier-free guidance, clipping of x̂_0, and for_sampling, which
puts them around a Denoiser as a sampler needs them."""

import pytest
import torch

from ddpmkit.denoiser import ClippedDenoiser, Denoiser, DenoiserOutput, GuidedDenoiser, for_sampling
from ddpmkit.errors import UserError
from ddpmkit.nets.unet import UNet, UNetConfig
from ddpmkit.schedules import NoiseSchedule


def labelled_unet_denoiser() -> Denoiser:
    """A conditional U-Net (3 classes) with random weights everywhere, so its output depends on the label."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=8, channel_mults=(1, 2), blocks_per_level=1, image_size=8, groups=4, num_classes=3)).eval()
    for p in net.parameters():  # leave the zero initialisation so the output depends on the label
        torch.nn.init.normal_(p, std=0.1)
    return Denoiser(net, NoiseSchedule.from_name("cosine", 100))


def test_batched_guidance_equals_two_separate_passes():
    den = labelled_unet_denoiser()
    x, t, label = torch.randn(5, 1, 8, 8), torch.randint(0, 100, (5,)), torch.tensor([0, 1, 2, 1, 0])
    w = 2.0
    with torch.no_grad():
        guided = GuidedDenoiser(den, w, null_label=3)(x, t, label)
        cond, uncond = den(x, t, label), den(x, t, torch.full_like(label, 3))
    expect = (1 + w) * cond.eps - w * uncond.eps
    assert torch.allclose(guided.eps, expect, atol=1e-5)
    assert not torch.allclose(cond.eps, uncond.eps, atol=1e-3)  # the label matters
    # without a label it is the unconditional (null-label) model; at w = 0 the conditional one
    with torch.no_grad():
        assert torch.allclose(GuidedDenoiser(den, w, 3)(x, t).eps, uncond.eps, atol=1e-6)
        assert torch.equal(GuidedDenoiser(den, 0.0, 3)(x, t, label).eps, cond.eps)


def test_clipping_and_dynamic_thresholding_of_x0():
    class Fixed:
        """Predicts a given x̂_0 whatever x_t is."""

        schedule = NoiseSchedule.from_name("linear", 10)
        variance = "fixed_small"

        def __init__(self, x0):
            self.x0 = x0

        def __call__(self, x_t, t, label=None):
            return DenoiserOutput(x0=self.x0, eps=torch.zeros_like(self.x0))

    x0 = torch.stack([torch.linspace(-0.5, 0.5, 100), torch.linspace(-4, 4, 100)])  # in range; saturated
    x_t, t = torch.zeros_like(x0), torch.full((2,), 5)
    static = ClippedDenoiser(Fixed(x0), "static")(x_t, t)
    dynamic = ClippedDenoiser(Fixed(x0), "dynamic", percentile=0.995)(x_t, t)
    assert torch.equal(static.x0[0], x0[0]) and torch.equal(dynamic.x0[0], x0[0])  # in range: untouched
    assert static.x0[1].abs().max() == 1 and (static.x0[1].abs() == 1).sum() > 50  # flattened at ±1
    s = x0[1].abs().quantile(0.995)
    assert torch.allclose(dynamic.x0[1], x0[1].clamp(-s, s) / s)  # rescaled: order kept, few saturate
    assert (dynamic.x0[1].abs() == 1).sum() <= 2
    # ε̂ is recomputed from the clipped x̂_0, so x_t = √ᾱ·x̂_0 + √(1 − ᾱ)·ε̂ still holds
    abar = Fixed.schedule.alphas_cumprod[5].float()
    assert torch.allclose(abar.sqrt() * dynamic.x0 + (1 - abar).sqrt() * dynamic.eps, x_t, atol=1e-5)


def test_for_sampling_guides_conditional_networks_and_clips_as_asked():
    """for_sampling: the plain Denoiser for an unconditional network without clipping; guidance
    around a conditional one; clipping outermost, so the guided x̂_0 is what gets clipped."""
    den = labelled_unet_denoiser()
    assert for_sampling(den, 0, 0.0, "none") is den
    x, t, label = 4 * torch.randn(5, 1, 8, 8), torch.full((5,), 99), torch.tensor([0, 1, 2, 1, 0])
    guided = for_sampling(den, 3, 2.0, "none")
    clipped = for_sampling(den, 3, 2.0, "static")
    with torch.no_grad():
        expect = GuidedDenoiser(den, 2.0, null_label=3)(x, t, label)
        assert torch.equal(guided(x, t, label).eps, expect.eps)
        out = clipped(x, t, label)
    assert torch.equal(out.x0, expect.x0.clamp(-1, 1)) and expect.x0.abs().max() > 1  # the clip did something
    assert clipped.schedule is den.schedule and clipped.variance == den.variance
    with pytest.raises(UserError, match="unknown clipping 'soft'; choose one of: static, dynamic, none"):
        for_sampling(den, 0, 0.0, "soft")
