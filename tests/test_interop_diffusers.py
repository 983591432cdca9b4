"""Export to diffusers: the exported UNet2DModel is ddpmkit's U-Net as a function, diffusers'
pipelines sample the same images from the same noise, the round trip is exact, and what
cannot map is refused in one line. Nothing is downloaded: every network is built here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import diffusers  # in the test extra: never skipped
import numpy as np
import pytest
import torch

from ddpmkit import build
from ddpmkit.cli import main
from ddpmkit.config import DataConfig, DiffusionConfig, RunConfig
from ddpmkit.errors import UserError
from ddpmkit.interop import diffusers as dx
from ddpmkit.nets.unet import UNetConfig
from ddpmkit.sampling import SamplingRequest, draw

ROOT = Path(__file__).resolve().parents[1]

# (name, U-Net, (H, W), diffusion): 1 and 3 channels, 8 and 16 px and a non-square size, attention
# on and off, two and three levels, class-conditional, learned variance, each prediction type.
CONFIGS = [
    ("grey-8px-2-levels", UNetConfig(in_channels=1, out_channels=1, base_width=16, channel_mults=(1, 2), blocks_per_level=1,
                                     image_size=8, groups=8), (8, 8), DiffusionConfig(schedule="cosine", num_steps=40)),
    ("rgb-16px-3-levels-attention-classes-learned", UNetConfig(
        in_channels=3, out_channels=6, base_width=16, channel_mults=(1, 2, 2), blocks_per_level=2, image_size=16,
        attention_resolutions=(8,), attention_heads=2, groups=8, num_classes=3, dropout=0.1), (16, 16),
     DiffusionConfig(schedule="linear", num_steps=40, variance="learned_range")),
    ("rgb-8x12-attention-v", UNetConfig(in_channels=3, out_channels=3, base_width=8, channel_mults=(1, 1), blocks_per_level=1,
                                        image_size=8, attention_resolutions=(8, 4), attention_heads=2, groups=4), (8, 12),
     DiffusionConfig(schedule="sigmoid", num_steps=30, prediction="v", variance="fixed_large")),
    ("grey-16x8-3-levels-x0", UNetConfig(in_channels=1, out_channels=1, base_width=8, channel_mults=(1, 2, 4), blocks_per_level=1,
                                         image_size=8, groups=8), (16, 8),
     DiffusionConfig(schedule="quadratic", num_steps=30, prediction="x0")),
]


def make_run(tmp_path: Path, net: UNetConfig, size, diffusion: DiffusionConfig, seed: int = 0):
    """A ddpmkit run of random weights (the zero-initialised output layer too), no training."""
    config = RunConfig(data=DataConfig(name="digits", image_size=size, channels=net.in_channels, num_classes=net.num_classes),
                       net=net, diffusion=diffusion, conditional=net.num_classes > 0, seed=seed)
    model = build.build_net(config)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return build.make_run(tmp_path, config, model)


@pytest.mark.parametrize("name,net,size,diffusion", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_exported_unet_computes_the_same_function(tmp_path, name, net, size, diffusion):
    run = make_run(tmp_path, net, size, diffusion)
    out = tmp_path / "export"
    dx.write_pipeline(out, run.config, run.net.state_dict())
    unet = diffusers.UNet2DModel.from_pretrained(str(out / "unet")).eval()
    # Every weight has its place: the saved names and shapes are exactly the model's.
    from safetensors.torch import load_file
    saved = load_file(str(out / dx.UNET_WEIGHTS))
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in unet.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, net.in_channels, *size, generator=g)
    t = torch.tensor([0, 7, diffusion.num_steps // 2, diffusion.num_steps - 1])
    labels = torch.tensor([0, 1, 2, net.num_classes]) if net.num_classes else None  # the null label too
    with torch.no_grad():
        ours = run.net(x, t, labels)
        theirs = unet(x, t, class_labels=labels).sample
    assert ours.abs().max() > 0.1  # a real function, not the zero-initialised output
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()


def _pipeline_images(pipeline, n, seed, steps, **kwargs) -> np.ndarray:
    return pipeline(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                    output_type="np", **kwargs).images  # [N, H, W, C] in [0, 1]


def _as_unit(samples) -> np.ndarray:
    return (samples.model / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


UNCONDITIONAL = [c for c in CONFIGS if c[1].num_classes == 0]


@pytest.mark.parametrize("name,net,size,diffusion", UNCONDITIONAL, ids=[c[0] for c in UNCONDITIONAL])
def test_ddpm_pipeline_draws_the_same_images_from_the_same_noise(tmp_path, name, net, size, diffusion):
    """DDPMPipeline draws x_T and then one noise per step (none at t = 0) from its generator in the
    same order as ddpmkit's ancestral sampler, clips x̂_0 to [-1, 1] as ddpmkit does for images,
    and uses the same posterior (fixed_small β̃, fixed_large β, or the learned interpolation)."""
    run = make_run(tmp_path, net, size, diffusion)
    dx.write_pipeline(tmp_path / "export", run.config, run.net.state_dict())
    pipeline = diffusers.DDPMPipeline.from_pretrained(str(tmp_path / "export"))
    T = diffusion.num_steps
    ours = _as_unit(draw(run, 3, SamplingRequest(seed=5, sampler="ddpm")))
    theirs = _pipeline_images(pipeline, 3, 5, T)
    assert np.abs(ours - theirs).max() < 1e-4


def test_learned_variance_pipeline_matches(tmp_path):
    """Learned variance (variance_type learned_range): the interpolation of log β and log β̃."""
    _, net, size, diffusion = CONFIGS[1]
    net = dataclasses.replace(net, num_classes=0)
    run = make_run(tmp_path, net, size, diffusion)
    dx.write_pipeline(tmp_path / "export", run.config, run.net.state_dict())
    pipeline = diffusers.DDPMPipeline.from_pretrained(str(tmp_path / "export"))
    assert pipeline.scheduler.config.variance_type == "learned_range"
    ours = _as_unit(draw(run, 2, SamplingRequest(seed=3, sampler="ddpm")))
    assert np.abs(ours - _pipeline_images(pipeline, 2, 3, diffusion.num_steps)).max() < 1e-4


def test_ddim_pipeline_at_20_steps_matches(tmp_path):
    """DDIMPipeline at 20 steps against ddpmkit's DDIM (η = 0) on the same 'leading' grid
    (diffusers' default spacing, and the one where its DDIM steps to t − T/steps exactly). ddpmkit's
    clipping recomputes ε̂ from the clipped x̂_0, which diffusers does with use_clipped_model_output."""
    net = UNetConfig(in_channels=1, out_channels=1, base_width=16, channel_mults=(1, 2), blocks_per_level=1, image_size=8, groups=8)
    run = make_run(tmp_path, net, (8, 8), DiffusionConfig(schedule="cosine", num_steps=100))
    dx.write_pipeline(tmp_path / "export", run.config, run.net.state_dict())
    pipeline = diffusers.DDIMPipeline.from_pretrained(str(tmp_path / "export"))
    ours = _as_unit(draw(run, 3, SamplingRequest(seed=2, sampler="ddim", steps=20, spacing="leading")))
    theirs = _pipeline_images(pipeline, 3, 2, 20, eta=0.0, use_clipped_model_output=True)
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("schedule,T,named", [("cosine", 40, True), ("linear", 1000, True), ("sigmoid", 30, True),
                                               ("cosine", 10, True), ("linear", 10, False)])
def test_schedule_is_carried_exactly(tmp_path, schedule, T, named):
    """A named diffusers schedule where its float32 β equal ddpmkit's, else trained_betas; either
    way the scheduler's β are ddpmkit's to float32 precision (linear at T = 10: ddpmkit clamps β
    at 0.999, diffusers' named linear does not)."""
    config = RunConfig(data=DataConfig(name="digits", image_size=(8, 8), channels=1),
                       net=UNetConfig(base_width=8, channel_mults=(1,), image_size=8, groups=8),
                       diffusion=DiffusionConfig(schedule=schedule, num_steps=T))
    args = dx.scheduler_config(config)
    assert (args["trained_betas"] is None) == named
    betas = diffusers.DDPMScheduler(**args).betas
    expected = build.build_schedule(config).betas.float()
    assert torch.allclose(betas, expected, rtol=1e-6, atol=0)
    assert dx.diffusion_config(args).schedule == schedule  # and back


def test_export_import_export_gives_identical_files(tmp_path):
    _, net, size, diffusion = CONFIGS[1]
    run = make_run(tmp_path, net, size, diffusion)
    first, second = tmp_path / "first", tmp_path / "second"
    dx.write_pipeline(first, run.config, run.net.state_dict())
    assert main(["import", "--from", "diffusers", str(first), "--out", str(tmp_path / "imported")]) == 0
    imported = build.load_run(tmp_path / "imported")
    assert imported.config.net == net and imported.config.diffusion.variance == "learned_range"
    dx.write_pipeline(second, imported.config, imported.net.state_dict())
    for name in dx.FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # The imported run samples like the original.
    a = draw(run, 2, SamplingRequest(seed=0, sampler="ddim", steps=5, classes=(0, 2)))
    b = draw(imported, 2, SamplingRequest(seed=0, sampler="ddim", steps=5, classes=(0, 2)))
    assert torch.equal(a.model, b.model)


def test_import_folds_attention_biases_and_refuses_what_does_not_fit(tmp_path):
    """A diffusers model with k and v biases (as diffusers trains them) imports exactly: the k
    bias cancels in the softmax, the v bias moves into the output bias. A q bias, the default
    ResNet block or a linear beta table ddpmkit has no name for are each refused in one line."""
    _, net, size, diffusion = CONFIGS[2]
    run = make_run(tmp_path, net, size, diffusion)
    out = tmp_path / "export"
    dx.write_pipeline(out, run.config, run.net.state_dict())
    unet = diffusers.UNet2DModel.from_pretrained(str(out / "unet")).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(("to_k.bias", "to_v.bias")):
                p.normal_(0, 0.3)
    weights = dx.from_diffusers(unet.state_dict(), net)
    mine = build.build_net(run.config).eval()
    mine.load_state_dict(weights)
    x, t = torch.randn(2, 3, *size), torch.tensor([3, 20])
    with torch.no_grad():
        assert torch.allclose(mine(x, t), unet(x, t).sample, atol=1e-5, rtol=0)
        next(p for n, p in unet.named_parameters() if n.endswith("to_q.bias")).fill_(0.1)
    with pytest.raises(UserError, match="to_q has a non-zero bias"):
        dx.from_diffusers(unet.state_dict(), net)
    cfg = dict(unet.config)
    with pytest.raises(UserError, match="resnet_time_scale_shift"):
        dx.fit_unet({**cfg, "resnet_time_scale_shift": "default"})
    own = dx.diffusion_config({"num_train_timesteps": 30, "beta_schedule": "linear", "beta_start": 0.001, "beta_end": 0.05})
    assert (own.schedule, own.beta_start, own.beta_end) == ("linear", 0.001, 0.05)  # a linear schedule with its own ends
    with pytest.raises(UserError, match="none of ddpmkit's schedules"):
        dx.diffusion_config({"num_train_timesteps": 3, "trained_betas": [0.1, 0.05, 0.2]})


@pytest.mark.parametrize("change,message", [
    (dict(block="convnext"), "unet.block 'convnext'"),
    (dict(linear_attention_resolutions=(4,)), "linear_attention_resolutions"),
    (dict(channel_mults=(2, 2)), "channel_mults starts with 2"),
    (dict(groups=32), "unet.groups 32"),
    (dict(attention_resolutions=(8,), attention_heads=1), "attention_head_dim"),
])
def test_what_cannot_map_is_one_clear_line(tmp_path, change, message):
    net = dataclasses.replace(UNetConfig(in_channels=1, out_channels=1, base_width=16, channel_mults=(1, 2),
                                         blocks_per_level=1, image_size=8, groups=8), **change)
    config = RunConfig(data=DataConfig(name="digits", image_size=(8, 8), channels=1), net=net)
    with pytest.raises(UserError, match=re.escape(message)):
        dx.unet_config(config)


def test_a_2d_run_is_refused_in_one_line():
    from ddpmkit import api

    with pytest.raises(UserError, match="only U-Net runs export"):
        dx.unet_config(api.default_config("moons"))


@pytest.mark.parametrize("data", ["digits", "my-images"])
def test_the_presets_export(data):
    """The digits default and the images default (base 64, four levels, attention at 16 px) map."""
    from ddpmkit import api

    config = api.default_config(data)
    net = dataclasses.replace(config.net, in_channels=3, out_channels=3, image_size=32)
    args = dx.unet_config(dataclasses.replace(config, net=net, data=DataConfig(name=data, image_size=(32, 32), channels=3)))
    assert args["norm_num_groups"] == 32 and args["resnet_time_scale_shift"] == "scale_shift"


def readme_snippet() -> str:
    """The Python block of the sharing page's 'Load it in diffusers' part."""
    text = (ROOT / "docs" / "sharing.md").read_text()
    section = text[text.index("## Load it in diffusers"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_loads_an_export_in_diffusers(tmp_path, monkeypatch):
    snippet = readme_snippet()
    assert len(snippet.strip().splitlines()) == 5
    net, size, diffusion = CONFIGS[0][1:]
    run = make_run(tmp_path, net, size, diffusion)
    dx.write_pipeline(tmp_path / "exported", run.config, run.net.state_dict())
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/sharing.md", "exec"), {})
    from PIL import Image
    assert Image.open(tmp_path / "sample.png").size == (8, 8)


def test_the_cards_conditional_loop_draws_ddpmkits_images(tmp_path):
    """A class-conditional export (DDPMPipeline passes no labels): the loop the model card gives,
    with class_labels, draws what ddpmkit's ancestral sampler draws for the same labels and seed."""
    from ddpmkit.modelcard import diffusers_snippet

    name, net, size, diffusion = CONFIGS[1]
    run = make_run(tmp_path, dataclasses.replace(net, num_classes=5), size, diffusion)  # the card's labels are 0..3
    out = tmp_path / "export"
    dx.write_pipeline(out, run.config, run.net.state_dict())
    scope = {}
    exec(compile(diffusers_snippet(run, str(out)), "card", "exec"), scope)
    ours = _as_unit(draw(run, 4, SamplingRequest(seed=0, sampler="ddpm", classes=(0, 1, 2, 3))))
    theirs = scope["images"].permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("schedule", ["linear", "quadratic", "sigmoid"])
def test_beta_ends_travel_to_diffusers_and_back(schedule):
    """A ranged schedule with its own β ends is diffusers' named schedule with those ends, and
    reads back as the same ddpmkit schedule (no trained_betas needed)."""
    from ddpmkit.config import DiffusionConfig, RunConfig

    config = RunConfig(diffusion=DiffusionConfig(schedule=schedule, num_steps=200, beta_start=1e-4, beta_end=0.02))
    scheduler = dx.scheduler_config(config)
    assert scheduler["trained_betas"] is None and (scheduler["beta_start"], scheduler["beta_end"]) == (1e-4, 0.02)
    back = dx.diffusion_config(scheduler)
    assert (back.schedule, back.num_steps, back.beta_start, back.beta_end) == (schedule, 200, 1e-4, 0.02)
