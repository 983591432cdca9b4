"""Classifier guidance's parts: the noise-aware classifier network and its config, the guided
denoiser against a closed form, its place among the wrappers, and every sampler taking it."""

import pytest
import torch
from torch import nn

from ddpmkit.denoiser import (
    ClassifierGuidedDenoiser,
    ClippedDenoiser,
    Denoiser,
    GuidedDenoiser,
    for_sampling,
    log_prob_gradient,
)
from ddpmkit.errors import UserError
from ddpmkit.nets.classifier import ClassifierConfig, NoisyClassifier
from ddpmkit.nets.unet import UNet, UNetConfig
from ddpmkit.samplers import SAMPLERS
from ddpmkit.schedules import NoiseSchedule, timestep_grid

from analytic import GaussianEps


class HalfX(nn.Module):
    """A stand-in ε-network: ε̂(x_t, t) = x_t / 2."""

    def forward(self, x, t, label=None):
        return x / 2


def sum_classifier(a: float):
    """Two classes with logits [a·Σx, 0]: log p(0 | x) = −softplus(−a·Σx), whose gradient is
    a·sigmoid(−a·Σx)·1, and log p(1 | x) = −softplus(a·Σx), gradient −a·sigmoid(a·Σx)·1."""

    def logits(x, t):
        s = a * x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)

    return logits


def test_guided_eps_is_the_closed_form_inside_no_grad():
    schedule = NoiseSchedule.from_name("cosine", 50)
    inner = Denoiser(HalfX(), schedule)
    a, scale = 0.3, 2.5
    guided = ClassifierGuidedDenoiser(inner, sum_classifier(a), scale, conditional=False)
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0, 10, 25, 49])
    label = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():  # as every sampler runs
        out = guided(x, t, label)
    s = a * x.flatten(1).sum(1)
    grad = torch.where(label == 0, a * torch.sigmoid(-s), -a * torch.sigmoid(s))[:, None, None, None] * torch.ones_like(x)
    abar = schedule.alphas_cumprod[t].double()[:, None, None, None]
    eps = x / 2 - scale * (1 - abar).sqrt() * grad  # Eq. 14 of Dhariwal & Nichol 2021
    torch.testing.assert_close(out.eps, eps, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.x0, (x - (1 - abar).sqrt() * eps) / abar.sqrt(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_prob_gradient(sum_classifier(a), x, t, label), grad)


def test_scale_zero_or_no_label_is_the_inner_denoiser():
    inner = Denoiser(HalfX(), NoiseSchedule.from_name("linear", 20))
    calls = []

    def classifier(x, t):
        calls.append(1)
        return sum_classifier(1.0)(x, t)

    x, t, label = torch.randn(3, 2), torch.tensor([1, 5, 19]), torch.tensor([0, 1, 1])
    plain = inner(x, t)
    for guided, y in [(ClassifierGuidedDenoiser(inner, classifier, 0.0, False), label),
                      (ClassifierGuidedDenoiser(inner, classifier, 3.0, False), None)]:
        out = guided(x, t, y)
        assert torch.equal(out.eps, plain.eps) and torch.equal(out.x0, plain.x0)
    assert not calls  # no classifier pass at s = 0 or without a class


def test_for_sampling_puts_cfg_then_classifier_guidance_then_clipping():
    schedule = NoiseSchedule.from_name("linear", 20)
    conditional = Denoiser(UNet(UNetConfig(base_width=8, channel_mults=(1,), image_size=4, num_classes=3, groups=4)), schedule)
    d = for_sampling(conditional, 3, 2.0, "static", classifier=sum_classifier(1.0), classifier_scale=1.5)
    assert isinstance(d, ClippedDenoiser) and isinstance(d.inner, ClassifierGuidedDenoiser)
    assert isinstance(d.inner.inner, GuidedDenoiser) and d.inner.conditional
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([3, 7])
    out = d(x, t, torch.tensor([0, 1]))
    assert out.x0.abs().max() <= 1  # clipped after both guidances
    # An unconditional network never sees the label the classifier is guided by (a U-Net would refuse it).
    unconditional = Denoiser(UNet(UNetConfig(base_width=8, channel_mults=(1,), image_size=4, groups=4)), schedule)
    d = for_sampling(unconditional, 0, 0.0, "none", classifier=sum_classifier(1.0), classifier_scale=1.5)
    assert not d.conditional and d(x, t, torch.tensor([0, 1])).eps.shape == x.shape


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_follows_the_classifier(sampler):
    """On N(0, I) data with the exact ε̂, guidance towards class 0 of the [a·Σx, 0] classifier
    moves the samples towards a larger Σx, towards class 1 a smaller one, for every sampler."""
    schedule = NoiseSchedule.from_name("linear", 100)
    inner = Denoiser(GaussianEps(schedule, 0.0, 1.0), schedule)
    guided = ClassifierGuidedDenoiser(inner, sum_classifier(1.0), 2.0, conditional=False)
    grid = timestep_grid(100, 10, "linspace")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))

    def run(denoiser, label):
        return SAMPLERS[sampler](denoiser, x_T, grid, label=label, generator=torch.Generator().manual_seed(1)).sum(1).mean()

    plain = run(inner, None)
    towards_0, towards_1 = run(guided, torch.zeros(256, dtype=torch.long)), run(guided, torch.ones(256, dtype=torch.long))
    assert towards_0 > plain + 0.5 and towards_1 < plain - 0.5, (float(towards_0), float(plain), float(towards_1))


def test_classifier_network_and_its_config():
    config = ClassifierConfig(in_channels=1, num_classes=4, image_size=8, base_width=8, channel_mults=(1, 2), groups=4)
    assert ClassifierConfig.from_dict(config.to_dict()) == config  # JSON-ready round trip
    net = NoisyClassifier(config)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    logits = net(x, torch.tensor([0, 5, 9]))
    assert logits.shape == (3, 4)
    # Rows are independent, so the gradient of a summed log p is each row's own (log_prob_gradient relies on it).
    row = torch.autograd.grad(torch.log_softmax(logits, 1)[0, 2], x)[0]
    assert row[1:].abs().max() == 0 and row[0].abs().max() > 0
    with pytest.raises(UserError, match="at least 2 classes"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(UserError, match="does not fit a U-Net"):
        ClassifierConfig(image_size=6, channel_mults=(1, 2, 2))
