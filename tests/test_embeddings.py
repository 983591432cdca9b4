"""nets.embeddings: the sinusoidal time embedding and the class-label embedding with its learned
null label, which every network shares."""

import math

import torch

from ddpmkit.nets.embeddings import LabelEmbedding, sinusoidal_embedding
from ddpmkit.nets.mlp import MLP, GatedMLP, GatedMLPConfig, MLPConfig
from ddpmkit.nets.unet import UNet, UNetConfig


def test_no_label_is_the_null_label_row():
    torch.manual_seed(0)
    emb = LabelEmbedding(num_classes=3, dim=5)
    assert emb.weight.shape == (4, 5) and set(emb.state_dict()) == {"weight"}
    labels = torch.tensor([2, 0, 3])
    assert torch.equal(emb(labels, 3, torch.device("cpu")), emb.weight[labels])
    assert torch.equal(emb(None, 2, torch.device("cpu")), emb.weight[[3, 3]])  # row num_classes: "no class"


def test_every_conditional_network_embeds_labels_with_it():
    nets = {
        "mlp": MLP(MLPConfig(num_classes=4)),
        "gated-mlp": GatedMLP(GatedMLPConfig(num_steps=10, num_classes=4)),
        "unet": UNet(UNetConfig(base_width=8, channel_mults=(1,), image_size=8, groups=4, num_classes=4)),
    }
    for name, net in nets.items():
        found = [(n, m) for n, m in net.named_modules() if isinstance(m, LabelEmbedding)]
        assert len(found) == 1 and found[0][1].num_embeddings == 5, name
        assert f"{found[0][0]}.weight" in net.state_dict(), name  # saved as <name>.weight
    for config in (MLPConfig(), GatedMLPConfig(num_steps=10), UNetConfig(base_width=8, channel_mults=(1,), image_size=8, groups=4)):
        net = {MLPConfig: MLP, GatedMLPConfig: GatedMLP, UNetConfig: UNet}[type(config)](config)
        assert not any(isinstance(m, LabelEmbedding) for m in net.modules())  # unconditional: none


def test_sinusoidal_features_of_timesteps():
    t = torch.tensor([0.0, 1.0, 2.5])
    emb = sinusoidal_embedding(t, 6)
    assert emb.shape == (3, 6) and emb.dtype == torch.float32
    freqs = [math.exp(-math.log(10_000) * k / 3) for k in range(3)]
    expected = [[math.cos(v * f) for f in freqs] + [math.sin(v * f) for f in freqs] for v in t.tolist()]
    assert torch.allclose(emb, torch.tensor(expected), atol=1e-6)
    assert torch.equal(sinusoidal_embedding(t, 7)[:, -1], torch.zeros(3))  # an odd width is padded
