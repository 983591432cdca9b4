import pytest
import torch

from ddpmkit.errors import UserError
from ddpmkit.nets.mlp import MLP, GatedMLP, GatedMLPConfig, MLPConfig


@pytest.mark.parametrize("make", [lambda k: MLP(MLPConfig(dim=3, num_classes=k)), lambda k: GatedMLP(GatedMLPConfig(dim=3, num_steps=50, num_classes=k))])
def test_toy_networks_shapes_labels_and_gradients(make):
    torch.manual_seed(0)
    net = make(4)
    x, t = torch.randn(16, 3), torch.randint(0, 50, (16,))
    out = net(x, t)
    assert out.shape == (16, 3) and out.dtype == torch.float32
    label = torch.randint(0, 4, (16,))
    for p in net.parameters():  # leave the zero initialisation so labels can show
        torch.nn.init.normal_(p, std=0.2)
    a, b = net(x, t, label), net(x, t)
    assert not torch.allclose(a, b), "the label changes the output"
    assert torch.equal(b, net(x, t, torch.full((16,), 4)))  # None is the null label
    a.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_gated_mlp_has_one_gate_per_integer_step():
    net = GatedMLP(GatedMLPConfig(num_steps=10))
    assert net.layers[0].gate.weight.shape == (10, 128)
    with pytest.raises(ValueError, match="fractional t"):
        net(torch.randn(2, 2), torch.tensor([0.5, 1.0]))


def test_bad_toy_config():
    with pytest.raises(UserError, match="MLPConfig.hidden must be a positive integer"):
        MLPConfig(hidden=0)
