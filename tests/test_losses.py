"""The training objective: targets, min-SNR weights, the hybrid loss, and that it trains."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from ddpmkit import api, process
from ddpmkit.build import build_net, load_run, make_run
from ddpmkit.denoiser import PREDICTIONS, Denoiser
from ddpmkit.losses import min_snr_weight, training_losses
from ddpmkit.schedules import NoiseSchedule
from ddpmkit.sampling import SamplingRequest

T = 1000


class Fixed(nn.Module):
    """A "network" whose output is a given tensor, whatever (x_t, t) it is shown; as a
    parameter, so the gradient of a loss with respect to the network's output can be read."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = nn.Parameter(out.clone())

    def forward(self, x_t, t, label=None):
        return self.out


def draws(shape, seed=0):
    """x_0, ε and t ∈ {1..T−1} ∪ {0} (every batch also holds t = 0)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    noise = torch.randn(shape, generator=g)
    t = torch.randint(0, T, (shape[0],), generator=g)
    t[0] = 0
    return x0, noise, t


def closed_form_target(schedule, prediction, x0, noise, t):
    """ε, x_0, or v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022), written out in float64."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    abar = schedule.alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))
    return (abar.sqrt() * noise.double() - (1 - abar).sqrt() * x0.double()).float()


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("shape", [(64, 2), (16, 3, 4, 4)])
def test_target_then_from_raw_returns_x0_and_eps(prediction, shape):
    """A network that outputs exactly its target is mapped back to the x_0 and ε that made x_t."""
    sched = NoiseSchedule.from_name("linear", T)
    den = Denoiser(nn.Linear(1, 1), sched, prediction)
    x0, noise, t = draws(shape)
    x_t = process.q_sample(den.schedule, x0, t, noise)
    target = den.target(x0, noise, t)
    assert torch.allclose(target, closed_form_target(sched, prediction, x0, noise, t), atol=1e-6)
    out = den.from_raw(x_t, t, target)
    # float32 tables: x̂_0 from ε divides by √ᾱ (≥ 0.006 here), ε̂ from x̂_0 by √(1−ᾱ) (≥ 0.01)
    assert torch.allclose(out.x0, x0, atol=1e-4) and torch.allclose(out.eps, noise, atol=1e-4)
    assert out.var_frac is None


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weights_are_the_closed_forms_of_hang_et_al(prediction):
    """Hang et al. 2023: weight min(SNR, γ)/SNR on the ε loss, min(SNR, γ) on the x_0 loss,
    min(SNR, γ)/(SNR + 1) on the v loss, with SNR_t = ᾱ_t/(1 − ᾱ_t)."""
    sched = NoiseSchedule.from_name("cosine", T)
    gamma = 5.0
    ts = [0, 50, 200, 400, 500, 700, 999]
    abar = [sched.alphas_cumprod[t].item() for t in ts]
    snr = [a / (1 - a) for a in abar]
    assert min(snr) < gamma < max(snr)  # both branches of the min are exercised
    expect = {
        "eps": [min(s, gamma) / s for s in snr],
        "x0": [min(s, gamma) for s in snr],
        "v": [min(s, gamma) / (s + 1) for s in snr],
    }[prediction]
    got = min_snr_weight(sched, torch.tensor(ts), torch.zeros(len(ts), 2, dtype=torch.float64), gamma, prediction)
    assert got.tolist() == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weighted_loss_is_min_snr_times_the_x0_error(prediction):
    """What min-SNR-γ means: whatever the target, the weighted L2 loss equals
    min(SNR_t, γ)·‖x̂_0 − x_0‖² (mean over dims), since ‖ε̂ − ε‖² = SNR·‖x̂_0 − x_0‖² and
    ‖v̂ − v‖² = (SNR + 1)·‖x̂_0 − x_0‖²."""
    sched = NoiseSchedule.from_name("cosine", T)
    x0, noise, t = draws((256, 2), seed=1)
    t = torch.randint(0, 900, (256,), generator=torch.Generator().manual_seed(2))  # SNR ≥ 0.03: float32 is enough
    probe = Denoiser(nn.Linear(1, 1), sched, prediction)
    off = probe.target(x0, noise, t) + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    den = Denoiser(Fixed(off), sched, prediction)
    with torch.no_grad():
        loss = training_losses(den, x0, t, noise, min_snr_gamma=5.0)
        x0_hat = den.from_raw(process.q_sample(den.schedule, x0, t, noise), t, off).x0
    abar = sched.alphas_cumprod[t]
    expect = (abar / (1 - abar)).clamp(max=5.0) * (x0_hat - x0).double().pow(2).mean(1)
    assert torch.allclose(loss.double(), expect, rtol=1e-3)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("loss", ["l2", "l1", "huber"])
def test_a_perfect_network_has_zero_loss_and_an_offset_one_does_not(prediction, loss):
    sched = NoiseSchedule.from_name("linear", T)
    x0, noise, t = draws((128, 2), seed=4)
    perfect = closed_form_target(sched, prediction, x0, noise, t)
    for gamma in (0.0, 5.0):
        den = Denoiser(Fixed(perfect), sched, prediction)
        # not exactly 0: the closed-form v above is float64 rounded, the Denoiser's float32
        assert training_losses(den, x0, t, noise, loss, min_snr_gamma=gamma).abs().max().item() < 1e-6
    off = Denoiser(Fixed(perfect + 0.5), sched, prediction)  # off by 0.5 everywhere
    expect = {"l2": 0.25, "l1": 0.5, "huber": 0.125}[loss]  # Huber (δ = 1): ½·0.5²
    assert training_losses(off, x0, t, noise, loss).tolist() == pytest.approx([expect] * 128, rel=1e-5)


# ---- the hybrid loss of a learned variance (Nichol & Dhariwal 2021) ---------------------------
def learned(prediction, x0, noise, t, v, schedule_name="linear"):
    """A learned-variance Denoiser over a network that outputs the exact target as its mean
    half and the constant `v` as its variance half."""
    sched = NoiseSchedule.from_name(schedule_name, T)
    target = closed_form_target(sched, prediction, x0, noise, t)
    return Denoiser(Fixed(torch.cat([target, torch.full_like(target, v)], dim=1)), sched, prediction, "learned_range"), sched


@pytest.mark.parametrize("v", [-3.0, -1.0, 0.0, 0.4, 1.0, 3.0])
def test_learned_variance_interpolates_log_beta_and_log_beta_tilde_unclamped(v):
    """log σ² = f·log β_t + (1 − f)·log β̃_t with f = (v + 1)/2 (Eq. 15 of Nichol & Dhariwal
    2021), extrapolated for v ∉ [-1, 1] as improved-diffusion does (no clamp)."""
    x0, noise, t = draws((64, 2), seed=5)
    den, sched = learned("eps", x0, noise, t, v)
    out = den(process.q_sample(den.schedule, x0, t, noise), t)
    f = (v + 1) / 2
    assert torch.allclose(out.var_frac, torch.full_like(x0, f))
    _, log_var = process.p_mean_variance(den.schedule, "learned_range", x0, t, out.x0, out.var_frac)
    expect = f * sched.betas[t].log() + (1 - f) * sched.posterior_log_variance_clipped[t]  # float64
    assert torch.allclose(log_var[:, 0].double(), expect, rtol=1e-5)
    if v > 1:
        assert bool((log_var[:, 0].double() > sched.betas[t].log()).all())  # beyond β
    if v < -1:
        assert bool((log_var[:, 0].double() < sched.posterior_log_variance_clipped[t]).all())  # below β̃


@pytest.mark.parametrize("v", [-0.5, 0.0, 0.7])
def test_hybrid_loss_with_a_perfect_mean_is_lambda_times_the_closed_form_bound(v):
    """L_simple + λ·L_vlb with λ = 0.001 and L_vlb = T·L_t in bits/dim. With the exact mean
    L_simple = 0 and, per dim, L_t = KL(N(μ̃, β̃) ‖ N(μ̃, σ²)) = ½(f·r − 1 + e^{−f·r}), r = log(β/β̃),
    for t > 0, and −log N(x_0; x_0, σ²) = ½·log(2πσ²) at t = 0 (continuous decoder)."""
    x0, noise, t = draws((256, 2), seed=6)
    den, sched = learned("eps", x0, noise, t, v)
    with torch.no_grad():
        loss = training_losses(den, x0, t, noise, discrete=False).double()
    f = (v + 1) / 2
    log_beta, log_beta_tilde = sched.betas[t].log(), sched.posterior_log_variance_clipped[t]
    r = log_beta - log_beta_tilde
    kl = 0.5 * (f * r - 1 + torch.exp(-f * r))
    decoder = 0.5 * (math.log(2 * math.pi) + f * log_beta + (1 - f) * log_beta_tilde)
    expect = T / 1000 * torch.where(t == 0, decoder, kl) / math.log(2)
    assert torch.allclose(loss, expect, rtol=1e-3, atol=1e-6)  # atol: float32 KL where β̃ ≈ β (late t)
    assert loss.max().item() > 1e-2  # ... and the variance matters where β̃ and β differ


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("discrete", [False, True])
def test_l_vlb_trains_only_the_variance_half(prediction, discrete):
    """The mean half's gradient is that of L_simple alone (2·(pred − target)/D for L2), and
    the variance half gets a gradient from L_vlb at every example, also where |v| > 1 (a
    clamp on v would zero it there)."""
    x0, noise, t = draws((64, 2), seed=7)
    if discrete:
        x0 = torch.round((x0 + 1) * 127.5) / 127.5 - 1  # 8-bit levels, for the discretised decoder
    sched = NoiseSchedule.from_name("cosine", T)
    g = torch.Generator().manual_seed(8)
    target = closed_form_target(sched, prediction, x0, noise, t)
    pred = target + 0.3 * torch.randn(x0.shape, generator=g)
    var = torch.linspace(-2.5, 2.5, 64)[:, None].expand_as(x0)  # from far below -1 to far above 1
    net = Fixed(torch.cat([pred, var], dim=1))
    den = Denoiser(net, sched, prediction, "learned_range")
    training_losses(den, x0, t, noise, discrete=discrete).sum().backward()
    grad_mean, grad_var = net.out.grad.chunk(2, dim=1)
    assert torch.allclose(grad_mean, 2 * (pred - target) / x0.shape[1], rtol=1e-5, atol=1e-7)
    # every example, except with the discretised decoder at t = 0: an x̂_0 off by ~0.3 lies
    # ~60σ from its bin, where the decoder's probability sits at its floor 1e-12 (flat)
    checked = t > 0 if discrete else torch.ones_like(t, dtype=torch.bool)
    assert bool((grad_var[checked].abs() > 0).all()), grad_var[grad_var == 0]


# ---- training with each target -----------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_a_short_run_with_v_or_x0_prediction_learns_moons(prediction, tmp_path):
    """300 steps of the 2-D MLP (2-4 s with one CPU thread). Measured (seed 0, 600 samples):
    v: MMD² −1e-4 trained vs 0.017 untrained; x0: 3e-5 vs 0.43 (an untrained x_0 network
    collapses every sample near the mean, hence the larger baseline)."""
    c = api.default_config("moons")
    config = dataclasses.replace(
        c,
        data=dataclasses.replace(c.data, num_points=2000),
        diffusion=dataclasses.replace(c.diffusion, num_steps=100, prediction=prediction),
        train=dataclasses.replace(c.train, steps=300, batch_size=128, log_every=300, ema_decay=0.99),
    )
    api.train(config, tmp_path, progress=False, pictures=False)
    run = load_run(tmp_path)
    assert run.config.diffusion.prediction == prediction
    trained = api.toy_distances(run.config, api.draw(run, 600, SamplingRequest(seed=1, sampler="ddpm")).data)
    untrained = make_run(tmp_path, run.config, build_net(run.config))
    baseline = api.toy_distances(run.config, api.draw(untrained, 600, SamplingRequest(seed=1, sampler="ddpm")).data)
    assert trained["mmd"] < 0.1 * baseline["mmd"] and trained["mmd"] < 2e-3, (trained, baseline)
    assert trained["sliced_wasserstein"] < 0.5 * baseline["sliced_wasserstein"], (trained, baseline)
