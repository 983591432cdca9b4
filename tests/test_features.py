import numpy as np
import pytest
import torch

from ddpmkit import features
from ddpmkit.data.images import load_image_data
from ddpmkit.errors import UserError
from ddpmkit.features import InceptionFeatures, OwnFeatures, OwnTraining, resize_bilinear_tf1, to_rgb, train_own_features
from ddpmkit.nets.convfeatures import ConvFeaturesConfig
from ddpmkit.nets.inception import FIDInceptionV3


# ---- the TF1 resize -----------------------------------------------------------------------
def test_tf1_resize_up_2x2_to_4x4_by_hand():
    """TF1 resize_bilinear without half-pixel centres samples output i at input i·(2/4):
    0, 0.5, 1, 1.5 → the last two both take the last pixel (1.5 clamps its upper neighbour)."""
    a, b, c, d = 0.0, 40.0, 100.0, 200.0
    x = torch.tensor([[a, b], [c, d]]).view(1, 1, 2, 2)
    row = lambda p, q: [p, (p + q) / 2, q, q]  # noqa: E731
    top, bottom = row(a, b), row(c, d)
    middle = [(t + u) / 2 for t, u in zip(top, bottom)]
    expected = torch.tensor([top, middle, bottom, bottom])
    assert torch.equal(resize_bilinear_tf1(x, (4, 4))[0, 0], expected)
    # not the half-pixel (align_corners=False) interpolation of PyTorch: its first step is a quarter
    assert not torch.allclose(torch.nn.functional.interpolate(x, (4, 4), mode="bilinear", align_corners=False), expected)


def test_tf1_resize_down_and_non_square():
    """3 → 2 samples at 0 and 1.5; 2 → 3 at 0, 2/3, 4/3 (the last clamps)."""
    x = torch.tensor([[1.0, 2.0, 4.0], [10.0, 20.0, 40.0]]).view(1, 1, 2, 3)
    out = resize_bilinear_tf1(x, (3, 2))[0, 0]
    cols = lambda r: [r[0], (r[1] + r[2]) / 2]  # noqa: E731
    r0, r1 = cols([1.0, 2.0, 4.0]), cols([10.0, 20.0, 40.0])
    expected = torch.tensor([r0, [p + (q - p) * (2 / 3) for p, q in zip(r0, r1)], r1])
    assert torch.allclose(out, expected, atol=1e-5)
    assert resize_bilinear_tf1(torch.ones(2, 3, 8, 8), (299, 299)).shape == (2, 3, 299, 299)


def test_channels_for_inception():
    grey = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
    assert torch.equal(to_rgb(grey), grey.repeat(1, 3, 1, 1))
    rgba = torch.randint(0, 255, (2, 4, 3, 3), dtype=torch.uint8)
    assert torch.equal(to_rgb(rgba), rgba[:, :3])
    assert torch.equal(to_rgb(rgba[:, :2]), rgba[:, :1].repeat(1, 3, 1, 1))  # grey + alpha: alpha dropped


# ---- the Inception network ------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_inception_with_random_weights_gives_2048_features(random_inception):
    extractor = InceptionFeatures(net=random_inception, batch_size=2)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)  # grey, tiny: repeated, resized to 299
    f = extractor.features(images)
    assert f.shape == (3, 2048) and np.isfinite(f).all() and (f >= 0).all()  # pooled ReLU activations
    assert not np.allclose(f[0], f[1])
    assert "TF1 resize_bilinear" in extractor.preprocessing


def test_inception_state_dict_has_the_ported_weight_layout(random_inception):
    """The names and shapes of torchvision's Inception3, which pytorch-fid's and torch-fidelity's
    files use: 1008 classes, no auxiliary head."""
    sd = random_inception.state_dict()
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3) and "Conv2d_1a_3x3.conv.bias" not in sd
    assert sd["Mixed_5b.branch5x5_2.conv.weight"].shape == (64, 48, 5, 5)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_inception_weights_load_from_a_pth_file_and_the_hub_cache(random_inception, tmp_path, monkeypatch):
    state = {k: v for k, v in random_inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(UserError, match="never downloads them.*--inception-weights PATH.*pt_inception-2015-12-05-6726825d.pth"):
        features.find_inception_weights()
    path = hub / "checkpoints" / features.INCEPTION_FILES[0]
    torch.save(state, path)
    assert features.find_inception_weights() == path
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    loaded = InceptionFeatures(batch_size=2)  # found in the cache
    assert np.allclose(loaded.features(images), InceptionFeatures(net=random_inception).features(images))
    assert loaded.sha256 == features.file_sha256(path) and str(path) in loaded.description
    with pytest.raises(UserError, match="no such file"):
        features.find_inception_weights(tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not hold the FID Inception weights"):
        InceptionFeatures(tmp_path / "other.pth")


def test_a_weights_file_that_carries_code_is_refused(tmp_path):
    torch.save({"fc.weight": torch.zeros(2), "extra": np.float64(1.0).__class__}, tmp_path / "code.pth")
    with pytest.raises(UserError, match="weights-only"):
        InceptionFeatures(tmp_path / "code.pth")


# ---- ddpmkit's own features -------------------------------------------------------------------
QUICK = OwnTraining(epochs=3)


def test_own_classifier_is_deterministic_accurate_and_round_trips(tmp_path):
    digits = load_image_data("digits")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = train_own_features(digits, {"name": "digits"}, QUICK)
        assert torch.get_num_threads() == 2  # the caller's thread count is restored
        torch.set_num_threads(1)
        b = train_own_features(digits, {"name": "digits"}, QUICK)
    finally:
        torch.set_num_threads(threads)
    assert a.sha256 == b.sha256 and a.name == "own-classifier"  # one CPU thread: independent of the caller's
    assert a.record["heldout_accuracy"] > 0.85 and a.record["heldout_images"] == 270
    images = digits.batch(range(50))[0]
    f = a.features(images)
    assert f.shape == (50, 128) and 0.3 < np.mean(f**2) < 3  # scaled so E‖f‖²/F ≈ 1 on the data
    a.save(tmp_path)
    back = OwnFeatures.load(tmp_path)
    assert back.sha256 == a.sha256 and np.array_equal(back.features(images), f)
    assert (back.predict_proba(images).argmax(1) == digits.labels[:50].numpy()).mean() > 0.85
    weights = (tmp_path / "own.safetensors").read_bytes()
    (tmp_path / "own.safetensors").write_bytes(weights.replace(weights[-8:], bytes(8)))  # tamper with the last weights
    with pytest.raises(UserError, match="does not match the sha256"):
        OwnFeatures.load(tmp_path)


def test_unlabelled_data_get_a_fixed_random_network(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    data = load_image_data(tmp_path)
    a = train_own_features(data, {"name": str(tmp_path)})
    b = train_own_features(data, {"name": str(tmp_path)})
    assert a.name == "random-conv-seed0" and a.sha256 == b.sha256 and not a.is_classifier
    assert "randomly initialised" in a.description and "no labels" in a.description
    assert a.features(data.batch(range(6))[0]).shape == (6, a.dim)
    config = ConvFeaturesConfig(in_channels=3, image_size=(40, 48))
    assert config.input_size == (20, 24) and max(config.input_size) <= config.max_side
