"""`ddpmkit train-classifier`: the noise-aware classifier learns, its folder is whole and reads
back, and runs it cannot serve are refused in one line."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpmkit import api, build, classifier, process
from ddpmkit.config import lr_factor
from ddpmkit.data import batches
from ddpmkit.errors import UserError
from ddpmkit.cli import main
from ddpmkit.nets.classifier import ClassifierConfig, NoisyClassifier
from ddpmkit.schedules import NoiseSchedule
from ddpmkit.training import classifier as noise_aware

from helpers import one_line_error


def test_the_classifier_learns_and_its_folder_reads_back(guided_digits):
    folder = guided_digits.run / "classifier"
    assert sorted(p.name for p in folder.iterdir()) == ["accuracy.json", "classifier.safetensors", "config.json"]
    record = json.loads((folder / "accuracy.json").read_text())
    rows = record["accuracy"]
    assert [r["t"] for r in rows] == [0, 25, 50, 75]  # 0, T/4, T/2, 3T/4 of T = 100
    assert "held-out" in record["measured_on"] and record["num_images"] == 180  # the run's own held-out digits
    assert rows[0]["accuracy"] > max(0.6, 4 * record["chance"]), record  # far above chance at small t
    assert rows[0]["accuracy"] > rows[-1]["accuracy"]  # noise takes the class away
    for r in rows:  # the printed table is the stored one
        assert f"{r['t']:>5}  {r['alpha_bar']:>7.4f}  {r['accuracy']:.3f}" in guided_digits.output
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["schedule"], saved["num_steps"]) == ("cosine", 100)
    config = ClassifierConfig.from_dict(saved["net"])
    assert (config.num_classes, config.base_width, config.in_channels) == (10, 16, 1)
    run = build.with_classifier(build.load_run(guided_digits.run))
    assert run.classifier.config == config and not any(p.requires_grad for p in run.classifier.parameters())


def test_runs_without_labels_and_2d_runs_are_refused(toy_run, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)  # no labels
    np.save(tmp_path / "unlabelled.npy", images)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "unlabelled.npy"), "--out", str(run), "--steps", "2", "--timesteps", "20",
                 "--batch-size", "8", "--width", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train-classifier", "--run", str(run)]) == 2
    one_line_error(capsys.readouterr().err, "train-classifier needs class labels and .*unlabelled.npy has none")
    assert not (run / "classifier").exists()
    assert main(["train-classifier", "--run", str(toy_run)]) == 2
    one_line_error(capsys.readouterr().err, "train-classifier needs an image run: moons is 2-D data; 2-D runs take classifier-free guidance")
    assert main(["train-classifier", "--run", str(run), "--steps", "0"]) == 2
    one_line_error(capsys.readouterr().err, "--steps must be a positive integer, got 0")
    assert not (toy_run / "classifier").exists()



def test_a_classifier_is_refused_for_a_schedule_with_other_beta_ends(guided_digits, tmp_path):
    """The classifier is trained on the run's own schedule, β ends included (its config.json
    records them); a linear schedule with other ends than the classifier's is refused."""
    run = tmp_path / "run"
    shutil.copytree(guided_digits.run, run)
    saved = json.loads((run / "classifier" / "config.json").read_text())
    config = build.run_config(run)
    d = config.diffusion
    assert (saved["schedule"], saved["num_steps"], saved["beta_start"], saved["beta_end"]) == (
        d.schedule, d.num_steps, d.beta_start, d.beta_end)
    assert classifier.load(run, config) is not None  # its own schedule: accepted
    (run / "classifier" / "config.json").write_text(json.dumps({**saved, "schedule": "linear"}))
    other_ends = dataclasses.replace(config, diffusion=dataclasses.replace(d, schedule="linear", beta_start=1e-4, beta_end=0.02))
    with pytest.raises(UserError, match=r"β ends default; the run has linear .* β ends 0.0001..0.02"):
        classifier.load(run, other_ends)


def _steps_by_hand(net, schedule, dataset, kind, settings):
    """guided-diffusion's classifier_train.py step, written out (the loop the classifier had
    before it ran on the Trainer): per image t ~ U{0..T−1} then ε from one seeded generator,
    the mean cross-entropy of p(y | x_t, t), torch's AdamW with config.lr_factor's schedule."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    stream = batches(dataset, settings.batch_size, settings.seed)
    net.train()
    for step in range(settings.steps):
        for group in optimiser.param_groups:
            group["lr"] = settings.lr * lr_factor(step, settings)
        images, labels = next(stream)
        x0 = kind.to_model_space(images)
        t = torch.randint(0, schedule.num_steps, (len(x0),), generator=generator)
        x_t = process.q_sample(schedule, x0, t, torch.randn(x0.shape, generator=generator))
        loss = F.cross_entropy(net(x_t, t), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def test_the_trainer_takes_the_classifier_step_and_leaves_only_the_classifier_folder(guided_digits, tmp_path):
    """On the one training loop the classifier's weights are those of its step written out by
    hand, bit for bit; the Trainer's own files (log, checkpoints) stay in a temporary folder
    that is gone afterwards, also when training fails, and the run directory is not touched."""
    config = build.run_config(guided_digits.run)
    kind = build.modality(config)
    settings = classifier.ClassifierTraining(steps=4, batch_size=8, warmup_steps=2)
    schedule = NoiseSchedule.from_config(config.diffusion)
    dataset, _ = kind.load(0)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(NoisyClassifier(kind.fit_classifier(config, {"base_width": 8, "channel_mults": (1, 2)})))
    _steps_by_hand(nets[0], schedule, dataset, kind, settings)
    before = sorted(p.name for p in guided_digits.run.iterdir())
    lines = []
    loss = noise_aware.fit(nets[1], schedule, dataset, kind, config, settings, torch.device("cpu"), guided_digits.run,
                           lines.append)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert np.isfinite(loss) and lines[-1] == f"step 4/4: cross-entropy {loss:.3f}"
    assert sorted(p.name for p in guided_digits.run.iterdir()) == before  # nothing left beside RUN/classifier/

    run = tmp_path / "run"
    shutil.copytree(guided_digits.run, run)
    shutil.rmtree(run / "classifier")
    before = sorted(p.name for p in run.iterdir())

    def fail(message):
        if message.startswith("step"):
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        api.train_classifier(run, dataclasses.replace(settings, steps=2), net_options={"base_width": 8}, report=fail)
    assert sorted(p.name for p in run.iterdir()) == before  # no classifier/, no training folder
