"""Fixtures every test module may take: ddpmkit's cache in a temporary folder, tiny trained runs
(2-D moons, 8x8 digits, conditional digits) shared by the whole session, the first evaluation of
the digits run with its own cache, and the trainer factory."""

import contextlib
import dataclasses
import io
import json
from types import SimpleNamespace

import pytest

from ddpmkit import api, build, rundir
from ddpmkit.training import diffusion
from ddpmkit.build import load_run
from ddpmkit.cli import main

from helpers import TINY_IMAGES, TINY_TOY


@pytest.fixture(scope="session", autouse=True)
def ddpmkit_cache(tmp_path_factory):
    """Every test writes ddpmkit's cache (real-data feature statistics, own feature networks)
    to a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ddpmkit-cache")
        mp.setenv("DDPMKIT_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """`ddpmkit train --data moons` for 30 steps (T = 50, linear schedule, Huber loss): the run
    directory. Tests may add to its metrics.json; anything else they change, they copy first."""
    out = tmp_path_factory.mktemp("toy") / "moons"
    assert main(["train", "--data", "moons", "--out", str(out), "--schedule", "linear", "--loss", "huber", *TINY_TOY]) == 0
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """`ddpmkit train` on the digits (the default data) for 3 steps with T = 20 and base width 8:
    the run directory. Tests may add measurements (metrics.json, eval/, features/) to it."""
    out = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", "--out", str(out), *TINY_IMAGES]) == 0
    return out


@pytest.fixture(scope="session")
def evaluated(digits_run, tmp_path_factory):
    """The first `ddpmkit evaluate` of the digits run (40 samples, 3 steps), with a cache of its
    own: it trains the run's own feature classifier and computes the real statistics, whatever
    other tests left in the session's cache. Gives the run, the printed output, the record it
    stored, the own features' own.json and the cache folder."""
    cache = tmp_path_factory.mktemp("eval-cache")
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        mp.setenv("DDPMKIT_CACHE", str(cache))
        assert main(["evaluate", "--run", str(digits_run), "-n", "40", "--steps", "3"]) == 0
    record = json.loads((digits_run / "metrics.json").read_text())["sample_quality"][-1]
    own = json.loads((digits_run / "features" / "own.json").read_text())
    return SimpleNamespace(run=digits_run, output=buffer.getvalue(), record=record, own=own, cache=cache)


@pytest.fixture
def eval_cache(evaluated, monkeypatch):
    """The cache of the digits run's first evaluation, made ddpmkit's cache for this test."""
    monkeypatch.setenv("DDPMKIT_CACHE", str(evaluated.cache))
    return evaluated.cache


@pytest.fixture(scope="session")
def conditional_digits(tmp_path_factory):
    """A class-conditional digits run of 500 steps (T = 200, base width 16), loaded: long enough
    to draw the asked digit (about 93% of its samples are, by the own classifier), in half the
    time of the default width."""
    out = tmp_path_factory.mktemp("cond")
    c = api.default_config("digits")
    config = dataclasses.replace(
        c,
        conditional=True,
        net=dataclasses.replace(c.net, base_width=16, groups=8),
        diffusion=dataclasses.replace(c.diffusion, num_steps=200),
        train=dataclasses.replace(c.train, steps=500, batch_size=64, checkpoint_every=0),
    )
    api.train(config, out, progress=False)
    return load_run(out)


@pytest.fixture
def make_trainer():
    """training.diffusion.trainer as a factory: make_trainer(config, run_dir) -> the Trainer of `config`
    writing into `run_dir` (config.json written, no progress bar)."""

    def make(config, run_dir):
        built, resolved, _ = diffusion.trainer(config, run_dir, progress=False)
        rundir.write_config(run_dir, resolved)  # as api.train writes it; this also creates run_dir
        return built

    return make


@pytest.fixture(scope="session")
def guided_digits(tmp_path_factory):
    """An unconditional digits run of 150 steps (T = 100, base width 16) with its classifier,
    trained by `ddpmkit train-classifier` (200 steps of 64, base width 16): the run directory
    and what the command printed. Tests that write into the run copy it first."""
    out = tmp_path_factory.mktemp("guided") / "run"
    c = api.default_config("digits")
    config = dataclasses.replace(
        c,
        net=dataclasses.replace(c.net, base_width=16, groups=8),
        diffusion=dataclasses.replace(c.diffusion, num_steps=100),
        train=dataclasses.replace(c.train, steps=150, batch_size=64, warmup_steps=20, checkpoint_every=0),
    )
    api.train(config, out, progress=False, pictures=False)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["train-classifier", "--run", str(out), "--steps", "200", "--batch-size", "64", "--width", "16"]) == 0
    return SimpleNamespace(run=out, output=buffer.getvalue())
