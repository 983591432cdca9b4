"""Post-hoc EMA (Karras et al. 2024): the power-function profiles, their closed-form inner
products, the least-squares reconstruction, snapshots through training and --resume, and
`ddpmkit ema`."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from ddpmkit import api, build, checkpoint, rundir
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.errors import UserError
from ddpmkit.posthoc_ema import (
    PowerEMA,
    gamma_to_sigma_rel,
    profile_inner_products,
    reconstruct,
    sigma_rel_to_gamma,
    solve_coefficients,
)
from ddpmkit.sampling import SamplingRequest, draw

STEPS, EVERY = 60, 10


def toy_config(steps: int = STEPS, sigma_rels=(0.05, 0.10), **train) -> RunConfig:
    config = api.default_config("moons")
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, num_points=2000),
        train=dataclasses.replace(config.train, steps=steps, batch_size=64, log_every=20, posthoc_ema=sigma_rels,
                                  posthoc_every=EVERY, **train))


@pytest.fixture(scope="module")
def three_profiles(tmp_path_factory):
    """A tiny 2-D run tracking σ_rel 0.05, 0.075 and 0.10 (0.075: the direct EMA the others are compared with)."""
    run_dir = tmp_path_factory.mktemp("posthoc") / "run"
    api.train(toy_config(sigma_rels=(0.05, 0.075, 0.10)), run_dir, progress=False, pictures=False)
    return run_dir


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a) ** 0.5)


# ---- the math ------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_rel", [0.01, 0.05, 0.10, 0.2, 0.28])
def test_gamma_inverts_sigma_rel(sigma_rel):
    gamma = sigma_rel_to_gamma(sigma_rel)
    assert gamma > 0
    assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-10)


def test_sigma_rel_is_the_relative_std_of_the_profile():
    """σ_rel of Eq. 123 is the standard deviation of p(τ) ∝ τ^γ on [0, t] divided by t."""
    gamma, t = sigma_rel_to_gamma(0.10), 1.0
    tau = np.linspace(0, t, 200_001)
    p = (gamma + 1) * tau**gamma
    mean = np.trapezoid(tau * p, tau)
    assert np.sqrt(np.trapezoid((tau - mean) ** 2 * p, tau)) / t == pytest.approx(0.10, rel=1e-4)


def test_sigma_rel_out_of_range_is_refused():
    with pytest.raises(UserError, match="must lie in"):
        sigma_rel_to_gamma(0.3)
    with pytest.raises(UserError, match="must lie in"):
        RunConfig(train=dataclasses.replace(RunConfig().train, posthoc_ema=(0.0,)))


def test_inner_products_match_numerical_integration():
    for t_a, g_a, t_b, g_b in [(300.0, 6.9, 200.0, 16.97), (50.0, 2.0, 50.0, 9.0), (10.0, 16.97, 1000.0, 6.9)]:
        tau = np.linspace(0, max(t_a, t_b), 2_000_001)
        p_a = np.where(tau <= t_a, (g_a + 1) * tau**g_a / t_a ** (g_a + 1), 0)
        p_b = np.where(tau <= t_b, (g_b + 1) * tau**g_b / t_b ** (g_b + 1), 0)
        assert profile_inner_products(t_a, g_a, t_b, g_b) == pytest.approx(np.trapezoid(p_a * p_b, tau), rel=1e-4)


def test_update_gives_the_power_profile_weights():
    """After t updates θ̂ = Σ_k w_k θ_k with w_k = (k^(γ+1) − (k−1)^(γ+1)) / t^(γ+1) (the profile's mass on (k−1, k])."""
    net = nn.Linear(1, 1, bias=False).double()
    ema = PowerEMA(net, (0.05, 0.15))
    thetas = torch.randn(40, dtype=torch.float64)
    for theta in thetas:
        with torch.no_grad():
            net.weight.fill_(theta)
        ema.update(net)
    k = torch.arange(1, 41, dtype=torch.float64)
    for gamma, model in zip(ema.gammas, ema.models):
        w = (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / 40 ** (gamma + 1)
        assert float(model.weight) == pytest.approx(float((w * thetas).sum()), rel=1e-12)
    assert ema.num_updates == 40


def test_solver_recovers_a_stored_profile_and_fits_between():
    t = [100, 200, 100, 200]
    g = [sigma_rel_to_gamma(0.10)] * 2 + [sigma_rel_to_gamma(0.05)] * 2
    X, error = solve_coefficients(t, g, [200, 200], [g[1], sigma_rel_to_gamma(0.075)])
    np.testing.assert_allclose(X[:, 0], [0, 1, 0, 0], atol=1e-9)
    assert error[0] < 1e-6
    assert 0 < error[1] < 0.1  # between the stored widths: close, not exact
    np.testing.assert_allclose(X.sum(0), 1.0)


# ---- through training --------------------------------------------------------------------------
def test_snapshots_every_n_steps_and_at_the_end(three_profiles):
    found = checkpoint.snapshots(three_profiles)
    assert sorted({s.step for s in found}) == list(range(EVERY, STEPS + 1, EVERY))
    assert {s.sigma_rel for s in found} == {0.05, 0.075, 0.10}
    assert all(s.t == s.step for s in found)  # no step was skipped
    assert RunConfig.load(three_profiles / "config.json").train.posthoc_ema == (0.05, 0.075, 0.10)  # JSON round trip


def test_reconstructing_a_tracked_profile_returns_its_weights(three_profiles):
    found = [s for s in checkpoint.snapshots(three_profiles) if s.sigma_rel != 0.075]
    built = reconstruct(found, [0.05, 0.10], checkpoint.load_weights)
    for r in built:
        tracked = checkpoint.load_weights(checkpoint.snapshot_path(three_profiles, STEPS, r.sigma_rel))
        assert r.fit_error < 1e-6 and r.step == STEPS
        for name, value in tracked.items():
            torch.testing.assert_close(r.weights[name], value, rtol=1e-5, atol=1e-6)


def test_an_intermediate_width_is_closer_to_its_direct_ema_than_either_stored_profile(three_profiles):
    found = checkpoint.snapshots(three_profiles)
    stored = [s for s in found if s.sigma_rel != 0.075]  # reconstruct from 0.05 and 0.10 only
    (r,) = reconstruct(stored, [0.075], checkpoint.load_weights)
    direct, low, high = (checkpoint.load_weights(checkpoint.snapshot_path(three_profiles, STEPS, s)) for s in (0.075, 0.05, 0.10))
    off = distance(r.weights, direct)
    assert off < 0.5 * min(distance(low, direct), distance(high, direct))


def test_ema_sigma_rel_makes_the_runs_ema_the_tracked_power_profile(three_profiles, tmp_path):
    """--ema-sigma-rel 0.075: the run's ema.safetensors is the power-function EMA the fixture's
    run tracks for σ_rel 0.075 (same seed, so the same live weights), bit for bit."""
    run = tmp_path / "power"
    api.train(toy_config(sigma_rels=(), ema_sigma_rel=0.075), run, progress=False, pictures=False)
    direct = checkpoint.load_weights(checkpoint.snapshot_path(three_profiles, STEPS, 0.075))
    assert distance(checkpoint.load_weights(run / "ema.safetensors"), direct) == 0
    classic = checkpoint.load_weights(three_profiles / "ema.safetensors")
    assert distance(classic, direct) > 0


def test_resume_continues_the_profiles_exactly(three_profiles, tmp_path):
    """Drop the last checkpoint (a crash after the snapshots of steps 40-60 were written): the
    resumed run removes those, takes them again, and they equal the uninterrupted run's."""
    config = toy_config(checkpoint_every=30, sigma_rels=(0.05, 0.10))
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    api.train(config, straight, progress=False, pictures=False)
    shutil.copytree(straight, crashed)
    shutil.rmtree(checkpoint.step_dir(crashed, STEPS))
    checkpoint.save_snapshot(crashed, 70, 70, 0.05, checkpoint.load_weights(checkpoint.snapshot_path(crashed, 60, 0.05)))
    api.train(config, crashed, resume=True, progress=False, pictures=False)
    a, b = checkpoint.snapshots(straight), checkpoint.snapshots(crashed)
    assert [(s.step, s.t, s.sigma_rel) for s in a] == [(s.step, s.t, s.sigma_rel) for s in b]  # step 70 is gone
    for sa, sb in zip(a, b):
        assert checkpoint.weights_sha256(checkpoint.load_weights(sa.path)) == checkpoint.weights_sha256(checkpoint.load_weights(sb.path))
    name = checkpoint.POSTHOC_WEIGHTS
    assert (checkpoint.weights_sha256(checkpoint.load_weights(checkpoint.step_dir(straight, STEPS) / name))
            == checkpoint.weights_sha256(checkpoint.load_weights(checkpoint.step_dir(crashed, STEPS) / name)))


def test_a_snapshot_is_never_overwritten(three_profiles):
    path = checkpoint.snapshot_path(three_profiles, STEPS, 0.05)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        checkpoint.save_snapshot(three_profiles, STEPS, STEPS, 0.05, {"w": torch.zeros(1)})
    assert path.read_bytes() == before


# ---- ddpmkit ema -----------------------------------------------------------------------------
def test_ema_command_writes_weights_that_sample(three_profiles, capsys):
    assert main(["ema", "--run", str(three_profiles), "--sigma-rel", "0.05,0.08"]) == 0
    out = capsys.readouterr().out
    path = rundir.posthoc_weights_path(three_profiles, 0.08)
    assert str(path) in out and "--weights" in out
    config = RunConfig.load(three_profiles / "config.json")
    net = build.build_net(config)
    checkpoint.load_matching(net, checkpoint.load_weights(path), path)
    samples = draw(build.make_run(three_profiles, config, net), 64, SamplingRequest(seed=0, sampler="dpm++sde", steps=20)).data
    assert samples.shape == (64, 2) and np.isfinite(samples).all()
    # the 0.05 file is the tracked profile itself: the same samples
    tracked = build.build_net(config)
    checkpoint.load_matching(tracked, checkpoint.load_weights(checkpoint.snapshot_path(three_profiles, STEPS, 0.05)), path)
    rebuilt = build.build_net(config)
    checkpoint.load_matching(rebuilt, checkpoint.load_weights(rundir.posthoc_weights_path(three_profiles, 0.05)), path)
    a = draw(build.make_run(three_profiles, config, tracked), 32, SamplingRequest(seed=1, sampler="dpm++sde", steps=10)).data
    b = draw(build.make_run(three_profiles, config, rebuilt), 32, SamplingRequest(seed=1, sampler="dpm++sde", steps=10)).data
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_ema_sweep_measures_each_width_beside_the_classic_ema(three_profiles, capsys):
    assert main(["ema", "--run", str(three_profiles), "--sweep", "--sigma-rel", "0.05,0.08", "-n", "300"]) == 0
    out = capsys.readouterr().out
    assert "classic EMA" in out and "best: σ_rel" in out
    record = api.evaluation.read_metrics(three_profiles)["posthoc_ema_sweep"]
    assert [row["sigma_rel"] for row in record["results"]] == [None, 0.05, 0.08]
    assert record["samples"]["sampler"] == "dpm++sde" and record["samples"]["steps"] == 20 and record["num_samples"] == 300
    best = min(record["results"][1:], key=lambda row: row["mmd"])
    assert record["best_sigma_rel"] == best["sigma_rel"]
    assert record["written"] == str(rundir.posthoc_weights_path(three_profiles, best["sigma_rel"]))
    assert record["best_beats_classic_ema"] == (best["mmd"] < record["results"][0]["mmd"])


def test_ema_errors_are_one_line(three_profiles, tmp_path, capsys):
    plain = tmp_path / "plain"
    api.train(toy_config(steps=20, sigma_rels=()), plain, progress=False, pictures=False)
    for argv, message in [
        (["ema", "--run", str(plain), "--sigma-rel", "0.08"], "no post-hoc EMA snapshots"),
        (["ema", "--run", str(three_profiles)], "give --sigma-rel"),
        (["ema", "--run", str(three_profiles), "--sigma-rel", "0.4"], "must lie in"),
        (["ema", "--run", str(three_profiles), "--sigma-rel", "abc"], "comma-separated numbers"),
        (["train", "--data", "moons", "--posthoc-ema", "0.05,0.05", "--out", str(tmp_path / "x")], "distinct"),
        (["train", "--resume", str(three_profiles), "--posthoc-ema"], "drop --posthoc-ema"),
        (["train", "--data", "moons", "--ema-sigma-rel", "0.3", "--out", str(tmp_path / "y")], "--ema-sigma-rel must lie in"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
