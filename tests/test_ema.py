import pytest
import torch
from torch import nn

from ddpmkit.ema import EMA


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
