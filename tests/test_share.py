"""Sharing a trained run: `ddpmkit export` (pipeline folder, model card), `sample --png-dir`,
`evaluate --save-ref` / `--ref`. One tiny digits run, trained for a few steps here."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from PIL import Image

from ddpmkit import api
from ddpmkit.cli import main
from ddpmkit.errors import UserError
from ddpmkit.evaluation import read_metrics
from ddpmkit.nets.unet import UNetConfig
from ddpmkit.pictures import SampleFiles, png_folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A class-conditional digits U-Net trained 30 steps (T = 50), measured once."""
    run = tmp_path_factory.mktemp("share") / "run"
    config = api.default_config("digits")
    config = dataclasses.replace(
        config, conditional=True, net=UNetConfig(base_width=16, channel_mults=(1, 2), blocks_per_level=1, groups=8),
        diffusion=dataclasses.replace(config.diffusion, num_steps=50),
        train=dataclasses.replace(config.train, steps=30, batch_size=32, warmup_steps=0, checkpoint_every=0, log_every=10))
    api.train(config, run, progress=False)
    assert main(["evaluate", "--run", str(run), "-n", "40", "--steps", "5", "--sampler", "ddim"]) == 0
    return run


def test_export_writes_a_pipeline_and_a_card_with_every_record(digits_run, tmp_path):
    out = tmp_path / "out"
    assert main(["evaluate", "--run", str(digits_run), "--nll", "vlb", "--num-images", "8"]) == 0
    assert main(["export", "--run", str(digits_run), "--format", "diffusers", "--out", str(out), "--license", "mit"]) == 0
    for name in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                 "unet/diffusion_pytorch_model.safetensors", "README.md", "samples.png"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: diffusers" in front and "license: mit" in front and "- ddpmkit" in front
    metrics = read_metrics(digits_run)
    for record in metrics["sample_quality"]:
        assert f"{record['frechet_distance']:.4f}" in card
        assert f"{100 * record['memorisation']['near_copy_fraction']:.1f}%" in card
        assert record["samples"]["sampler"] in card and record["reference"]["what"] in card
        assert record["features"]["sha256"][:12] in card
    for key, value in metrics.items():
        if key != "sample_quality":
            assert f"| {key} |" in card
    assert "1,617 training images of 8x8 px" in card  # digits without the 10% held out
    assert json.loads((digits_run / "config.json").read_text())["train"]["steps"] == 30 and "30 steps of batch 32" in card
    assert Image.open(out / "samples.png").size[0] > 8
    # The card's diffusers code for this class-conditional model runs (DDPMPipeline passes no labels).
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("THIS_FOLDER", str(out))
    scope = {}
    exec(compile(code, "card", "exec"), scope)
    assert scope["images"].shape == (4, 1, 8, 8) and 0 <= float(scope["images"].min()) <= float(scope["images"].max()) <= 1
    # The EMA weights by default; --weights model exports the live ones, to a folder refused if it holds other files.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", "--run", str(digits_run), "--out", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert main(["export", "--run", str(digits_run), "--out", str(out), "--weights", "model"]) == 0
    assert main(["export", "--run", str(digits_run), "--out", str(out), "--weights", "nope"]) == 2
    # An imported run's card invents no recipe and says its data were not readable.
    assert main(["import", "--from", "diffusers", str(out), "--out", str(tmp_path / "imported")]) == 0
    assert main(["export", "--run", str(tmp_path / "imported"), "--out", str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "README.md").read_text()
    assert "optimisation: not recorded" in again and "not readable at export" in again and "no measurements yet" in again


def test_png_folder_reads_back_to_the_same_arrays(digits_run, tmp_path):
    out, pngs = tmp_path / "s", tmp_path / "pngs"
    assert main(["sample", "--run", str(digits_run), "-n", "3", "--class", "all", "--steps", "5", "--sampler", "ddim",
                 "--out", str(out), "--png-dir", str(pngs)]) == 0
    samples, labels = np.load(out / "samples.npy"), np.load(out / "labels.npy")
    files = sorted(pngs.glob("*.png"))
    assert len(files) == len(samples) == 30
    back = np.stack([np.asarray(Image.open(f)) for f in files])[..., None]
    assert np.array_equal(back, samples)
    rows = (pngs / "labels.csv").read_text().splitlines()
    assert rows[0] == "file,label" and [int(r.split(",")[1]) for r in rows[1:]] == labels.tolist()


def test_png_folder_keeps_16_bit_and_colour(tmp_path):
    grey16 = np.random.default_rng(0).integers(0, 65536, (2, 5, 7, 1), dtype=np.uint16)
    png_folder(grey16, tmp_path / "g")
    back = np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "g").glob("*.png"))])
    assert all(Image.open(f).mode == "I;16" for f in (tmp_path / "g").glob("*.png"))  # written as 16-bit PNG
    assert np.array_equal(back.astype(np.uint16), grey16[..., 0])
    rgba = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 4), dtype=np.uint8)
    png_folder(rgba, tmp_path / "c")
    assert np.array_equal(np.stack([np.asarray(Image.open(f)) for f in sorted((tmp_path / "c").glob("*.png"))]), rgba)


def test_png_dir_and_save_ref_refuse_2d_runs(toy_run, tmp_path):
    with pytest.raises(UserError, match="^--png-dir needs an image run: moons is 2-D data; its samples are in samples.npy$"):
        api.sample(toy_run, 4, tmp_path / "s", files=SampleFiles(png_dir=tmp_path / "png"))
    assert not (tmp_path / "s").exists() and not (tmp_path / "png").exists()  # refused before anything is drawn
    with pytest.raises(UserError, match="^--save-ref needs an image run: moons is 2-D data"):
        api.save_reference(toy_run, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_save_ref_then_ref_reproduces_the_frechet_distance(digits_run, tmp_path):
    ref = tmp_path / "digits.npz"
    assert main(["evaluate", "--run", str(digits_run), "--save-ref", str(ref)]) == 0
    with np.load(ref) as f:  # the layout pytorch-fid and EDM read: float64 mu [F], sigma [F, F]
        assert f["mu"].dtype == np.float64 and f["sigma"].shape == (f["mu"].shape[0],) * 2
        meta = json.loads(str(f["ddpmkit"]))
    own = read_metrics(digits_run)["sample_quality"][0]
    assert meta["features"]["sha256"] == own["features"]["sha256"]
    assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--steps", "5", "--sampler", "ddim", "--ref", str(ref)]) == 0
    records = read_metrics(digits_run)["sample_quality"]
    with_file = next(r for r in records if r["reference"].get("file") == str(ref))
    assert with_file is not own and len(records) >= 2
    assert with_file["frechet_distance"] == pytest.approx(own["frechet_distance"], rel=1e-9, abs=1e-9)
    # A file of another feature dimension, or naming another extractor, is refused in one line.
    np.savez(tmp_path / "bad.npz", mu=np.zeros(5), sigma=np.eye(5))
    assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--ref", str(tmp_path / "bad.npz")]) == 2
    with np.load(ref) as f:
        np.savez(tmp_path / "other.npz", mu=f["mu"], sigma=f["sigma"],
                 ddpmkit=np.array(json.dumps({**meta, "features": {**meta["features"], "sha256": "0" * 64}})))
    assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--ref", str(tmp_path / "other.npz")]) == 2
