"""modality: the one place that decides whether a run is 2-D points or images, and what each
kind answers (data, model space, sample shape, clipping, options, presets, likelihood examples)."""

import numpy as np
import pytest
import torch

from ddpmkit.config import DataConfig
from ddpmkit.data import holdout_split
from ddpmkit.data.toy import TOY_DATASETS, toy_points
from ddpmkit.errors import UserError
from ddpmkit import api
from ddpmkit.evaluation import measures
from ddpmkit.modality import UNET_OPTIONS, Images, Points, images_only, modality_for
from ddpmkit.nets.mlp import GatedMLPConfig, MLPConfig
from ddpmkit.nets.unet import UNetConfig


@pytest.mark.parametrize("name", [*TOY_DATASETS, "swiss_roll", "S_CURVE", "8Gaussians"])
def test_toy_names_and_their_underscore_spellings_are_points(name):
    assert isinstance(modality_for(name), Points) and isinstance(modality_for(DataConfig(name=name)), Points)


@pytest.mark.parametrize("name", ["digits", "hf:cifar10", "runs/images", "faces.npy", "faces.npz", "spirals"])
def test_every_other_name_is_images(name, tmp_path):
    """Images: the digits, hf: data sets, folders and array files (whether or not they exist:
    the name decides, before anything is read)."""
    assert isinstance(modality_for(name), Images)
    assert isinstance(modality_for(DataConfig(name=str(tmp_path / name))), Images)


def test_the_kinds_declare_their_data():
    points, images = modality_for("moons"), modality_for("digits")
    assert (points.kind, points.discrete, points.default_clip) == ("points", False, "none")
    assert (images.kind, images.discrete, images.default_clip) == ("images", True, "static")


# ---- 2-D points ----------------------------------------------------------------------------------
def test_points_load_normalised_and_record_their_normalisation():
    kind = modality_for(DataConfig(name="Swiss_Roll", num_points=3000))
    dataset, data = kind.load(seed=4)
    assert data.name == "swiss-roll" and data.num_classes == 0 and len(data.mean) == 2
    assert len(dataset) == 3000 and dataset.points.shape == (3000, 2)
    x = dataset.points.numpy()
    assert np.allclose(x.mean(0), 0, atol=1e-5) and np.sqrt((x**2).mean()) == pytest.approx(1.0, rel=1e-5)
    moons, data = modality_for("moons").load(seed=4)
    assert data.num_classes == 2 and sorted(set(moons.labels.tolist())) == [0, 1]


def test_points_round_trip_between_data_and_model_space():
    kind = modality_for(DataConfig(name="moons", num_points=1000))
    dataset, data = kind.load(seed=0)
    resolved = modality_for(data)  # the resolved config carries the normalisation
    raw, _ = toy_points("moons", 1000, seed=0)
    assert torch.equal(resolved.to_model_space(dataset.points), dataset.points)  # drawn normalised already
    back = resolved.to_data_space(dataset.points)
    assert isinstance(back, np.ndarray) and back.shape == (1000, 2)
    np.testing.assert_allclose(back, raw, rtol=1e-5, atol=1e-5)
    assert resolved.sample_shape(7) == (7, 2)


def test_points_refuse_the_options_of_image_runs():
    kind = modality_for("moons")
    kind.refuse_options({"steps", "batch_size", "net", "width"})  # what 2-D runs take
    with pytest.raises(UserError, match="--grad-checkpoint applies to the U-Net of image data, not to the 2-D networks"):
        kind.refuse_options({"grad_checkpoint"})
    with pytest.raises(UserError, match="--holdout applies to image data; 2-D runs are scored on fresh points, so drop it"):
        kind.refuse_options({"holdout"})
    with pytest.raises(UserError, match="^--channel-mults, --heads shape the U-Net of image data; 2-D data uses --net and --width$"):
        kind.refuse_options({"channel_mults", "heads"})
    for option in UNET_OPTIONS:
        with pytest.raises(UserError, match=f"--{option.replace('_', '-')} shape the U-Net"):
            kind.refuse_options({option})
    modality_for("digits").refuse_options({"grad_checkpoint", "holdout", *UNET_OPTIONS})  # image runs take them all


def test_the_network_option_of_each_kind():
    assert modality_for("moons").network("mlp") is MLPConfig and modality_for("moons").network("gated-mlp") is GatedMLPConfig
    with pytest.raises(UserError, match="--net 'unet' is not available for moons; 2-D data takes: mlp, gated-mlp"):
        modality_for("moons").network("unet")
    with pytest.raises(UserError, match="--net 'mlp' is not available for digits; 2-D data takes: mlp, gated-mlp"):
        modality_for("digits").network("mlp")


def test_presets_of_each_kind():
    moons = modality_for("moons").preset()
    assert isinstance(moons.net, MLPConfig) and moons.data.name == "moons" and moons.train.steps == 3000
    digits = modality_for("digits").preset()
    assert isinstance(digits.net, UNetConfig) and digits.data.holdout == 0.1 and digits.net.attention_resolutions == ()
    folder = modality_for("my/photos").preset()
    assert folder.data.name == "my/photos" and folder.data.hflip and folder.net.attention_resolutions == (16,)
    assert folder.data.holdout == 0 and not digits.data.hflip


def test_points_likelihood_examples_are_fresh_normalised_points():
    _, data = modality_for("moons").load(seed=0)
    kind = modality_for(data)
    examples = kind.likelihood_examples(64, seed=0)
    assert examples.model_space.shape == (64, 2) and examples.reference == "64 fresh moons points (held out)"
    x, offset = examples.continuous(torch.Generator())
    assert torch.equal(x, examples.model_space) and offset == 0.0
    assert not torch.equal(examples.model_space, kind.likelihood_examples(64, seed=1).model_space)
    assert measures(kind).summary(None, np.zeros((1, 2))) is None  # one point: no distance


def test_what_only_images_do_is_refused_for_points_in_one_line(tmp_path):
    with pytest.raises(UserError, match="^show-forward needs an image run: moons is 2-D data; for 2-D data see forward.png"):
        api.show_forward("moons", tmp_path / "f.png")
    with pytest.raises(UserError, match="^edit needs an image run: moons is 2-D data$"):
        images_only(modality_for("moons"), "edit")
    assert images_only(modality_for("digits"), "edit") is not None


# ---- images --------------------------------------------------------------------------------------
def test_images_load_the_training_part_and_hold_out_a_fixed_share():
    """--holdout keeps a fixed seeded share out of training: the two parts partition the data,
    and the split does not depend on the run's seed."""
    full, data = modality_for("digits").load(seed=0)
    assert len(full) == 1797 and (data.image_size, data.channels, data.num_classes) == ((8, 8), 1, 10)
    config = DataConfig(name="digits", holdout=0.1)
    kind = modality_for(config)
    trained, _ = kind.load(seed=0)
    other_seed, _ = kind.load(seed=7)
    heldout = kind.load_heldout()
    train, held = holdout_split(1797, 0.1)
    assert len(trained) == 1617 and len(heldout) == 180
    assert torch.equal(trained.images_uint8, full.images_uint8[train]) and torch.equal(trained.labels, full.labels[train])
    assert torch.equal(heldout.images_uint8, full.images_uint8[held]) and torch.equal(heldout.labels, full.labels[held])
    assert torch.equal(other_seed.images_uint8, trained.images_uint8)
    assert modality_for("digits").load_heldout() is None
    assert modality_for("no/such/folder").load_heldout() is None  # decided from the config: nothing is read


def test_unknown_image_data_is_refused_naming_every_choice():
    with pytest.raises(UserError, match="unknown dataset 'spirals' .*no such file or folder.*moons, swiss-roll.*digits.*a folder of images"):
        modality_for("spirals").load(seed=0)


def test_images_round_trip_exactly_between_uint8_and_model_space():
    kind = modality_for(DataConfig(name="x.npy", image_size=(4, 6), channels=3))
    u = torch.arange(256, dtype=torch.uint8).repeat(4)[: 2 * 3 * 4 * 6].reshape(2, 3, 4, 6)  # [B, C, H, W]
    x = kind.to_model_space(u)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    back = kind.to_data_space(x)
    assert back.dtype == np.uint8 and back.shape == (2, 4, 6, 3)  # [N, H, W, C]
    assert np.array_equal(back, u.permute(0, 2, 3, 1).numpy())
    assert kind.sample_shape(5) == (5, 3, 4, 6)
    assert np.array_equal(kind.to_data_space(torch.tensor([-3.0, 3.0]).reshape(1, 1, 1, 2)), [[[[0], [255]]]])  # clamped


def test_image_likelihood_examples_are_the_held_out_images_else_the_training_ones():
    kind = modality_for(DataConfig(name="digits", holdout=0.1, image_size=(8, 8), channels=1))
    examples = kind.likelihood_examples(500, seed=0)
    heldout = kind.load_heldout()
    assert examples.reference == "the first 180 held-out images of digits (never trained on)"
    assert torch.equal(examples.model_space, kind.to_model_space(heldout.images_uint8))
    x, offset = examples.continuous(torch.Generator().manual_seed(0))
    assert offset == pytest.approx(np.log2(127.5))
    assert (x - examples.model_space).abs().max() <= 1 / 127.5 + 1e-6  # dequantised within the 8-bit bins
    assert not torch.equal(x, examples.model_space)
    unheld = modality_for(DataConfig(name="digits", image_size=(8, 8), channels=1)).likelihood_examples(20, seed=0)
    assert unheld.reference.startswith("the first 20 training images of digits (the run held none out")
    assert examples.units["vlb"].startswith("bits/dim (discretised") and examples.units["ode"].startswith("bits/dim (uniformly")


def test_the_preset_levels_are_trimmed_to_the_image_size():
    from ddpmkit.modality import plan_levels

    preset = (1, 2, 2, 2)
    assert plan_levels(preset, 28, 28) == (1, 2, 2)  # 28 -> 14 -> 7
    assert plan_levels(preset, 32, 32) == plan_levels(preset, 64, 64) == plan_levels(preset, 128, 128) == preset
    assert plan_levels(preset, 12, 12) == (1, 2)  # 12 -> 6 (a 3 px level is too small)
    assert plan_levels(preset, 27, 27) == (1,) and plan_levels(preset, 32, 20) == (1, 2, 2)  # both sides count


def test_attention_the_levels_lack_moves_to_the_nearest_free_level_and_says_so():
    from ddpmkit.modality import fit_attention

    said = []
    assert fit_attention((16,), (), [28, 14, 7], said.append) == ((14,), ())
    assert said == ["attention at 16 px moved to 14 px: the U-Net's levels are 28, 14, 7 px"]
    said.clear()
    assert fit_attention((16,), (32,), [16, 8], said.append) == ((16,), (8,))  # 32 is nearest 16, which is taken
    assert fit_attention((16, 8), (), [16, 8], said.append) == ((16, 8), ()) and len(said) == 1
    said.clear()
    assert fit_attention((32, 16), (), [8], said.append) == ((8,), ())
    assert said[-1] == "attention at 16 px dropped: every level of the U-Net has attention already"


@pytest.mark.parametrize("name", ["moons", "swiss-roll", "s-curve", "8gaussians"])
def test_toy_noise_is_gaussian_noise_of_that_sigma_on_the_same_points(name):
    """--toy-noise σ: the generators draw the same shape and the same standard normal draws for
    every σ, so two σ differ by (σ₁ − σ₀)·z per axis, z ~ N(0, 1)."""
    n = 20_000
    quiet, noisy = (toy_points(name, n, seed=0, noise=s)[0].astype(np.float64) for s in (0.0, 0.3))
    z = (noisy - quiet) / 0.3
    assert np.abs(z.mean(0)).max() < 0.05 and np.abs(z.std(0) - 1).max() < 0.03
    assert np.array_equal(toy_points(name, 50, seed=0)[0], toy_points(name, 50, seed=0, noise=None)[0])
    with pytest.raises(UserError, match="--toy-noise must be a finite number ≥ 0"):
        toy_points(name, 10, seed=0, noise=-1.0)
