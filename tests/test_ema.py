import pytest
import torch
from torch import nn

from ddpmkit.config import TrainConfig
from ddpmkit.ema import EMA
from ddpmkit.posthoc_ema import power_beta, sigma_rel_to_gamma


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(()))


def set_live(net, weight: torch.Tensor, count: float) -> None:
    with torch.no_grad():
        net.weight.copy_(weight)
        net.count.fill_(count)


def test_constant_decay_converges_in_closed_form():
    """Live weights held at v: after n updates the average is d^n·θ_0 + (1 − d^n)·v."""
    torch.manual_seed(0)
    net = WithBuffer()
    start = net.weight.detach().clone()
    ema = EMA(net, decay=0.9, warmup=False)
    v = torch.randn(5, dtype=torch.float64)
    for n in range(1, 31):
        set_live(net, v, float(n))
        ema.update(net)
        assert torch.allclose(ema.model.weight, 0.9**n * start + (1 - 0.9**n) * v, rtol=1e-12, atol=1e-12)
        assert float(ema.model.count) == n  # buffers are copied, not averaged
    assert not ema.model.weight.requires_grad and ema.num_updates == 30


def test_warmup_ramps_the_decay_as_one_plus_n_over_ten_plus_n():
    torch.manual_seed(0)
    net = WithBuffer()
    ema = EMA(net, decay=0.999, warmup=True)
    expected = [min(0.999, (1 + n) / (10 + n)) for n in range(3)]
    assert expected[:2] == [0.1, 2 / 11]
    average = net.weight.detach().clone()
    for n, d in enumerate(expected):
        assert ema.current_decay() == pytest.approx(d)
        v = torch.randn(5, dtype=torch.float64)
        set_live(net, v, 0.0)
        ema.update(net)
        average = d * average + (1 - d) * v
        assert torch.allclose(ema.model.weight, average, rtol=1e-12, atol=1e-12)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999  # the ramp ends at the target decay
    assert EMA(net, decay=0.5, warmup=True).current_decay() == pytest.approx(0.1)  # min(0.5, 1/10)


def test_state_round_trip_and_decay_range():
    net = WithBuffer()
    ema = EMA(net, decay=0.99)
    ema.num_updates = 7
    other = EMA(net, decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert (other.decay, other.warmup, other.num_updates, other.current_decay()) == (0.99, True, 7, ema.current_decay())
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            EMA(net, decay=bad)


def test_sigma_rel_gives_the_power_profile_average_and_its_width():
    """With sigma_rel the EMA after t updates is Σ_k w_k θ_k, w_k = (k^(γ+1) − (k−1)^(γ+1)) / t^(γ+1)
    (Karras et al. 2024, Eq. 127: the power profile's mass on (k−1, k]), and the weights' standard
    deviation over k is about σ_rel·t; decay and warm-up are not used."""
    from ddpmkit.posthoc_ema import sigma_rel_to_gamma

    net = WithBuffer()
    ema = EMA(net, decay=0.5, warmup=True, sigma_rel=0.2)
    t = 400
    thetas = torch.randn(t, 5, dtype=torch.float64)
    for n in range(t):
        set_live(net, thetas[n], float(n))
        ema.update(net)
    gamma = sigma_rel_to_gamma(0.2)
    k = torch.arange(1, t + 1, dtype=torch.float64)
    w = (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / t ** (gamma + 1)
    assert torch.allclose(ema.model.weight, (w[:, None] * thetas).sum(0), rtol=1e-10, atol=1e-12)
    mean = (w * (k - 0.5)).sum()
    assert float(((w * (k - 0.5 - mean) ** 2).sum()).sqrt() / t) == pytest.approx(0.2, rel=0.01)
    assert EMA(net, sigma_rel=0.2).current_decay() == 0.0  # β_1 = 0: the first update copies the live weights


def test_sigma_rel_survives_the_state_round_trip_and_old_states_mean_the_classic_ema():
    net = WithBuffer()
    ema = EMA(net, sigma_rel=0.2)
    ema.num_updates = 99
    other = EMA(net)
    other.load_state_dict(ema.state_dict())
    assert (other.sigma_rel, other.current_decay()) == (0.2, ema.current_decay())
    old = {"decay": 0.99, "warmup": False, "num_updates": 5}  # a checkpoint written before sigma_rel existed
    other.load_state_dict(old)
    assert (other.sigma_rel, other.current_decay()) == (0.0, 0.99)


def test_of_builds_the_ema_a_training_config_asks_for():
    net = nn.Linear(2, 1)
    classic = EMA.of(net, TrainConfig(ema_decay=0.99, ema_warmup=False))
    assert (classic.decay, classic.warmup, classic.gamma) == (0.99, False, None)
    assert classic.current_decay() == 0.99
    power = EMA.of(net, TrainConfig(ema_sigma_rel=0.2))
    assert power.sigma_rel == 0.2
    assert power.current_decay() == pytest.approx(power_beta(1, sigma_rel_to_gamma(0.2)))
