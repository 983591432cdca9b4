import dataclasses
import re

import numpy as np
import pytest
import torch

from ddpmkit import api, evaluation
from ddpmkit.build import load_run
from ddpmkit.cli import main
from ddpmkit.denoiser import Denoiser, GuidedDenoiser
from ddpmkit.nets.unet import UNet, UNetConfig
from ddpmkit.schedules import NoiseSchedule


def test_batched_guidance_equals_two_separate_passes():
    torch.manual_seed(0)
    net = UNet(UNetConfig(base_width=8, channel_mults=(1, 2), blocks_per_level=1, image_size=8, groups=4, num_classes=3)).eval()
    for p in net.parameters():  # leave the zero initialisation so the output depends on the label
        torch.nn.init.normal_(p, std=0.1)
    den = Denoiser(net, NoiseSchedule.from_name("cosine", 100))
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


class RowCounter(torch.nn.Module):
    """Wraps a network and counts the rows it is run on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x, t, label=None):
        self.rows += len(x)
        return self.net(x, t, label)


@pytest.mark.parametrize("sampler, steps", [("dpm++", 5), ("heun", 4)])
def test_recorded_network_passes_are_the_rows_the_network_runs(sampler, steps, tmp_path):
    from ddpmkit.build import Run, build_denoiser, build_net, load_data

    c = api.default_config("moons")
    config = dataclasses.replace(c, conditional=True, diffusion=dataclasses.replace(c.diffusion, num_steps=50))
    config = api._fit_net_to_data(dataclasses.replace(config, data=load_data(config.data, 0)[1]))
    net = RowCounter(build_net(config).eval())
    run = Run(tmp_path, config, net, build_denoiser(config, net))
    n = 12
    for w, passes in ((0.0, 1), (2.0, 2)):
        net.rows = 0
        _, record = evaluation._draw(run, evaluation.SampleSettings(num=n, sampler=sampler, steps=steps, guidance=w))
        assert record["nfe"] == api.network_evaluations(sampler, steps)
        assert record["network_passes"] == passes * record["nfe"] == api.network_passes(sampler, steps, w)
        assert net.rows == n * record["network_passes"], w
    line = evaluation.format_report({"kind": "points", "samples": record, "reference": {"what": "-"}, "space": "-",
                                     "mmd": 0.0, "sliced_wasserstein": 0.0, "precision": 1.0, "recall": 1.0, "k": 3,
                                     "note": "-"})[0]
    assert f"= {record['nfe']} network evaluations each ({2 * record['nfe']} network passes: guidance" in line


@pytest.fixture(scope="module")
def conditional_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond")
    c = api.default_config("digits")
    config = dataclasses.replace(
        c,
        conditional=True,
        diffusion=dataclasses.replace(c.diffusion, num_steps=200),
        train=dataclasses.replace(c.train, steps=500, batch_size=64, checkpoint_every=0),
    )
    api.train(config, out, progress=False)
    return load_run(out)


@pytest.mark.slow
def test_conditional_digits_draw_the_asked_class_more_so_with_guidance(conditional_digits):
    run = conditional_digits
    clf = evaluation.image_reference(run).extractor  # the run's own digits classifier
    labels = torch.arange(10).repeat_interleave(20)
    agree, p_asked = {}, {}
    for w in (0.0, 2.0):
        images = api.draw(run, len(labels), seed=2, steps=100, labels=labels, guidance=w).data
        probs = clf.predict_proba(torch.from_numpy(images).permute(0, 3, 1, 2))
        agree[w] = float((probs.argmax(1) == labels.numpy()).mean())
        p_asked[w] = float(probs[np.arange(len(labels)), labels.numpy()].mean())
    assert agree[0.0] > 0.5, agree  # most samples are the asked digit (chance is 0.1)
    # Guidance trades diversity for adherence: at least as often the asked class (this short
    # run is already near 1.0 without it), and a strictly higher classifier probability for it.
    assert agree[2.0] >= agree[0.0] and p_asked[2.0] > p_asked[0.0], (agree, p_asked)


@pytest.mark.slow
def test_a_conditional_model_still_samples_unconditionally(conditional_digits):
    images = api.draw(conditional_digits, 300, seed=3, steps=100).data  # null label throughout
    quality = api.quality_measure(conditional_digits)[1](images)
    assert quality["class_entropy"] > 1.8  # many digits, not one
    assert quality["frechet_distance"] < 5.0


def test_class_grid_and_labels_file(conditional_digits, tmp_path):
    run_dir = str(conditional_digits.directory)
    assert main(["sample", "--run", run_dir, "--class", "all", "-n", "2", "--guidance", "1", "--out", str(tmp_path)]) == 0
    assert np.load(tmp_path / "samples.npy").shape == (20, 8, 8, 1)
    assert np.load(tmp_path / "labels.npy").tolist() == [k for k in range(10) for _ in range(2)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--class", "10"], r"class 10 is outside the trained labels 0\.\.9"),
        (["--class", "seven"], "--class takes a class index or 'all'"),
    ],
)
def test_bad_class(conditional_digits, argv, message, capsys):
    assert main(["sample", "--run", str(conditional_digits.directory), "-n", "2", *argv]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_guidance_needs_a_conditional_model_and_labels_needed(tmp_path, capsys):
    out = tmp_path / "u"
    tiny = ["--steps", "2", "--timesteps", "10", "--batch-size", "8", "--width", "8", "--no-progress"]
    assert main(["train", "--out", str(out), *tiny]) == 0
    for extra, what in ((["--guidance", "2"], "--guidance"), (["--class", "3"], "--class")):
        assert main(["sample", "--run", str(out), "-n", "2", *extra]) == 2
        assert f"{what} needs a conditional model" in capsys.readouterr().err
    assert main(["train", "--data", "swiss-roll", "--conditional", "--out", str(tmp_path / "s"), *tiny]) == 2
    assert "--conditional needs class labels, and swiss-roll has none" in capsys.readouterr().err


def test_conditional_toy_data_and_npz_labels(tmp_path, capsys):
    tiny = ["--steps", "3", "--timesteps", "10", "--batch-size", "8", "--no-progress"]
    assert main(["train", "--data", "moons", "--conditional", "--num-points", "100", "--out", str(tmp_path / "m"), *tiny]) == 0
    assert main(["sample", "--run", str(tmp_path / "m"), "-n", "4", "--class", "1", "--guidance", "1"]) == 0
    assert np.load(tmp_path / "m" / "samples" / "labels.npy").tolist() == [1] * 4
    images = np.random.default_rng(0).integers(0, 255, (12, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=np.arange(12) % 3)
    assert main(["train", "--data", str(tmp_path / "a.npz"), "--conditional", "--width", "8", "--out", str(tmp_path / "a"), *tiny]) == 0
    assert '"num_classes": 3' in (tmp_path / "a" / "config.json").read_text()
