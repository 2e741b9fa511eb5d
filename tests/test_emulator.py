"""The aiLand emulator: training, skill vs persistence, the shared Model interface,
persistence of weights, resume, bounds and bad input (small configurations)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ailand
from ailand.emulator import Emulator, train_emulator
from ailand.physics.model import STATE_NAMES

SITES = ["FR-Fon", "FI-Hyy", "BE-Lon"]
ARCH = dict(width=64, depth=2)
SMALL = dict(epochs=4, steps_per_epoch=25, batch_size=256, rollout_steps=4, rollout_batch=32, progress=False)


def typical_rows(em, n, seed=0):
    """``n`` physical input rows near the training means (defaults for the parameters)."""
    g = torch.Generator().manual_seed(seed)
    nrm = em.norm
    forcing = [2e-5 if k in ("Rainf", "Snowf") else m for k, m in zip(("Tair", "Qair", "Wind_E", "Wind_N", "SWdown", "LWdown", "Rainf", "Snowf", "PSurf"), nrm.forcing_mean)]
    mean = np.concatenate([nrm.state_mean, forcing, nrm.clim_mean, [0.0, 1.0, 0.0, 1.0], em.space.default_vector])
    scale = np.concatenate([nrm.state_std, nrm.forcing_std * 0, nrm.clim_std * 0, [0.0] * 4, 0 * em.space.default_vector])
    x = torch.tensor(mean) + 0.2 * torch.tensor(scale) * torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return x.to(torch.float32)


@pytest.fixture(scope="module")
def ensemble_path(tmp_path_factory):
    """8 members x 3 sites x 120 days at 6 h, written as an anemoi dataset."""
    warnings.simplefilter("ignore", DeprecationWarning)
    path = tmp_path_factory.mktemp("ens") / "tiny.zarr"
    forcing = ailand.synthetic_forcing(SITES, "2020-01-01", "2020-04-29", seed=0)
    model = ailand.ToyEcLand(compile=False)
    design = model.space.sample(8, seed=0)
    ailand.run_ensemble(model, forcing, design, path, spinup_years=1, chunk_members=8, progress=False)
    return path


@pytest.fixture(scope="module")
def ensemble(ensemble_path):
    return ailand.load_ensemble(ensemble_path)


def test_cli_train_and_evaluate(ensemble_path, tmp_path, capsys):
    from ailand.cli import main

    out = tmp_path / "em.pt"
    argv = ["train", "--data", str(ensemble_path), "--out", str(out), "--width", "16", "--depth", "1", "--epochs", "2",
            "--steps-per-epoch", "3", "--batch-size", "64", "--rollout-steps", "2", "--rollout-batch", "8", "--val-sites", "BE-Lon", "--threads", "1"]
    assert main(argv) == 0
    assert out.exists() and out.with_suffix(".history.nc").exists() and out.with_suffix(".history.png").exists()
    assert "held-out sites ['BE-Lon']" in capsys.readouterr().out
    assert Emulator.load(out).meta["training"]["epochs_run"] == 2
    ev = tmp_path / "evaluation"
    assert main(["evaluate", "--emulator", str(out), "--data", str(ensemble_path), "--out", str(ev)]) == 0
    for name in ("scores.nc", "error_growth.png", "rollout_held_out_sites.png", "rollout_held_out_member.png"):
        assert (ev / name).exists(), name
    assert "ACC, rollout" in capsys.readouterr().out
    assert main(["evaluate", "--emulator", str(out), "--data", str(ensemble_path), "--out", str(ev), "--water-closure"]) == 0
    assert "water closure on" in capsys.readouterr().out
    assert main(["train", "--data", str(ensemble_path), "--out", str(out), "--val-sites", "XX-Nope"]) == 2


@pytest.fixture(scope="module")
def trained(ensemble, tmp_path_factory):
    torch.manual_seed(0)
    ck = tmp_path_factory.mktemp("ck")
    em, hist = train_emulator(ensemble, val_members=2, val_sites=["BE-Lon"], checkpoint_dir=ck, **ARCH, **SMALL)
    return em, hist


def test_beats_persistence_on_held_out_members(trained, ensemble):
    em, hist = trained
    assert hist.sizes["epoch"] == SMALL["epochs"]
    assert hist["val_loss"].values[-1] < hist["val_loss"].values[0]
    sc = em.evaluate(ensemble, sets=["held_out_members"])
    assert sc["acc"].dims == ("set", "mode", "variable") and "rollout_rmse" in sc
    for v in ("swvl1", "stl1", "skt", "sd"):
        r = sc["rmse"].sel(set="held_out_members", variable=v)
        assert float(r.sel(mode="one_step")) < float(r.sel(mode="persistence")), v
    assert np.isfinite(sc["rmse"].sel(mode="rollout")).all()


def test_save_load_round_trip_bit_for_bit(trained, tmp_path):
    em, _ = trained
    path = em.save(tmp_path / "em.pt")
    em2 = Emulator.load(path)
    for (k, a), (_, b) in zip(em.net.state_dict().items(), em2.net.state_dict().items()):
        assert torch.equal(a, b), k
    assert em2.input_names == em.input_names and em2.output_names == em.output_names
    assert em2.space.names == em.space.names and np.array_equal(em2.space.bounds, em.space.bounds)
    x = typical_rows(em, 16)
    y = em.step_flat(x)
    assert torch.isfinite(y).all()
    assert torch.equal(y, em2.step_flat(x))


def test_resume_continues_the_same_run(ensemble, tmp_path):
    cfg = dict(SMALL, epochs=2, steps_per_epoch=5)
    torch.manual_seed(1)
    a, _ = train_emulator(ensemble, val_members=2, val_sites=["BE-Lon"], checkpoint_dir=tmp_path / "a", **ARCH, **cfg)
    torch.manual_seed(1)
    b = Emulator.from_ensemble(ensemble, width=64, depth=2)
    # the same run, interrupted after its first epoch (time_limit=0 stops after one epoch)
    first = b.fit(ensemble, val_members=2, val_sites=["BE-Lon"], checkpoint_dir=tmp_path / "b", time_limit=0, **cfg)
    assert first.sizes["epoch"] == 1 and first.attrs["stopped"] == "time limit"
    # a fresh process would rebuild the emulator and find the checkpoint
    torch.manual_seed(99)
    c = Emulator.from_ensemble(ensemble, width=64, depth=2)
    hist = c.fit(ensemble, val_members=2, val_sites=["BE-Lon"], checkpoint_dir=tmp_path / "b", **cfg)
    assert hist.sizes["epoch"] == 2
    for (k, x), (_, y) in zip(a.net.state_dict().items(), c.net.state_dict().items()):
        assert torch.equal(x, y), k


def test_run_has_the_physics_interface(trained):
    em, _ = trained
    forcing = ailand.synthetic_forcing(["FR-Fon", "BE-Lon"], "2020-02-01", "2020-02-10", seed=3)
    params = {"RSMIN": [80.0, 150.0]}
    phys = ailand.ToyEcLand(compile=False)
    s0 = phys.initial_conditions(forcing, params, spinup_years=0)
    ref = phys.run(forcing, params, state0=s0, output_freq="6h")
    out = em.run(forcing, params, state0=s0)
    assert set(out.data_vars) == set(ref.data_vars)
    for v in ref.data_vars:
        assert out[v].dims == ref[v].dims, v
        assert out[v].attrs["units"] == ref[v].attrs["units"], v
    np.testing.assert_array_equal(out["time"].values, ref["time"].values)
    daily = em.run(forcing, params, state0=s0, output_freq="1D")
    assert daily.sizes["time"] == 10
    np.testing.assert_allclose(daily["Qle"].values, out["Qle"].coarsen(time=4).mean().values, rtol=1e-5, atol=1e-4)
    # a cold start followed by the emulator's own spin-up also runs
    assert np.isfinite(em.run(forcing, spinup_years=1)["swvl1"].values).all()


def test_simulate_is_differentiable_in_params_and_state(trained):
    em, _ = trained
    em64 = Emulator.load(em.save("/tmp/_ailand_test_em.pt")).to(dtype=torch.float64)
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-04-01", "2020-04-05", seed=1)
    f, st, _ = em64.prepare(forcing)
    s0 = ailand.ToyEcLand(compile=False, dtype=torch.float64).initial_conditions(forcing, spinup_years=0)
    state = {k: torch.tensor(s0[k].values, dtype=torch.float64) for k in STATE_NAMES}

    def mean_qle(rsmin, swvl1):
        p = em64.param_tensors({"RSMIN": rsmin})
        out, _ = em64.simulate(f, p, st, dict(state, swvl1=swvl1))
        return out["Qle"].mean()

    r = torch.tensor(120.0, dtype=torch.float64, requires_grad=True)
    w = state["swvl1"].clone().requires_grad_(True)
    g_r, g_w = torch.autograd.grad(mean_qle(r, w), (r, w))
    h = 1e-3
    with torch.no_grad():
        fd_r = (mean_qle(r + h, w) - mean_qle(r - h, w)) / (2 * h)
        fd_w = (mean_qle(r, w + 1e-6) - mean_qle(r, w - 1e-6)) / 2e-6
    assert g_r != 0 and g_w.abs().sum() > 0
    np.testing.assert_allclose(float(g_r), float(fd_r), rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(g_w.numpy(), fd_w.numpy(), rtol=1e-4, atol=1e-8)


def test_hard_bounds_hold_under_extreme_forcing(trained):
    em, _ = trained
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-01-01", "2020-01-20", seed=0)
    forcing["Rainf"] = forcing["Rainf"] * 0 + 2e-3  # 7 mm/h for 20 days
    forcing["Snowf"] = forcing["Snowf"] * 0 + 1e-3
    p = {"THETA_SAT": 0.45}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = em.run(forcing, p, spinup_years=0)
    # out-of-range inputs are counted and reported, not silently extrapolated
    n, of = em.last_extrapolation["Rainf"]
    assert n == of == 80 and "Snowf" in em.last_extrapolation
    assert any("Rainf" in str(w.message) and "80 of 80" in str(w.message) for w in caught)
    if em.last_clamps["counts"]:  # the rollout ran into the training-range clamp: said so
        assert any("edge of their training range" in str(w.message) for w in caught)
    i = STATE_NAMES.index("stl1")
    keep = em._rhi.clone()
    em._rhi[i] = 200.0  # pretend stl1 never exceeded ~200 K in training: every step hits the clamp
    try:
        with pytest.warns(UserWarning, match="stl1 80 .* edge of their training range|edge of their training range.*stl1 80"):
            em.run(forcing.isel(time=slice(0, 480)), p, spinup_years=0)
    finally:
        em._rhi = keep
    assert em.last_clamps["counts"]["stl1"] == 80 and em.last_clamps["of"] == 80
    for k in range(1, 5):
        assert float(out[f"swvl{k}"].max()) <= 0.45 + 1e-6
        assert float(out[f"swvl{k}"].min()) >= 0.0
    assert float(out["sd"].min()) >= 0.0 and float(out["wl"].min()) >= 0.0
    assert 0.0 <= float(out["snowc"].min()) and float(out["snowc"].max()) <= 1.0
    assert 0.0 <= float(out["albedo"].min()) and float(out["albedo"].max()) <= 1.0
    assert float((out["wsn"] - out["sd"]).max()) <= 1e-7
    # the screen-level diagnostics are emulator outputs too (the ensemble holds them)
    assert 0.0 <= float(out["RH2m"].min()) and float(out["RH2m"].max()) <= 100.0 and float(out["q2m"].min()) >= 0.0


def test_bad_input_is_explicit(trained):
    em, _ = trained
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-01-01", "2020-01-03", seed=0)
    with pytest.raises(ValueError, match="Tair"):
        em.run(forcing.drop_vars("Tair"), spinup_years=0)
    with pytest.raises(ValueError, match="NOT_A_PARAM"):
        em.run(forcing, {"NOT_A_PARAM": 1.0}, spinup_years=0)
    with pytest.raises(ValueError, match="whole number"):
        em.run(forcing.isel(time=slice(0, 5)), spinup_years=0)  # 5 h is not a whole 6-h step
    wet = forcing.copy()
    wet["Tair"] = wet["Tair"] + 60.0
    with pytest.warns(UserWarning, match="Tair .* extrapolated"):
        em.run(wet, spinup_years=0)
    em.meta["param_range"]["RSMIN"] = [100.0, 200.0]  # pretend a narrower training range
    try:
        with pytest.warns(UserWarning, match="RSMIN .* outside the training range"):
            em.run(forcing, {"RSMIN": 250.0}, spinup_years=0)
    finally:
        em.meta["param_range"]["RSMIN"] = [float(v) for v in em.space.bounds[em.space.names.index("RSMIN")]]


def test_water_balance_closes_for_the_physics_and_by_construction(trained, ensemble):
    """The ensemble's physics closes the column water balance to float32 rounding; an
    emulator does not, unless water_closure corrects its soil water at every step."""
    from ailand.emulator.evaluate import water_balance

    em, _ = trained
    wb = water_balance(em, ensemble, sites=["BE-Lon"], days=60)
    phys, emu = (wb.sel(source=s) for s in ("physics", "emulator"))
    assert float(np.abs(phys["accumulated"]).max()) < 0.05  # kg m-2 over 60 days
    assert float(emu["mean_abs_step"].mean()) > 100 * float(phys["mean_abs_step"].mean())  # the check is not vacuous
    em.water_closure = True
    try:
        closed = water_balance(em, ensemble, sites=["BE-Lon"], days=60).sel(source="emulator")
        y = em.step_flat(typical_rows(em, 8))
    finally:
        em.water_closure = False
    assert float(closed["mean_abs_step"].max()) < 1e-3  # kg m-2 per step: float32 rounding of ~1e3 kg m-2 storage
    assert float(np.abs(closed["accumulated"]).max()) < 0.05
    assert torch.isfinite(y).all()


def test_conservation_term_reduces_the_water_balance_residual_on_held_out_data(ensemble):
    """fit(water_weight=...) adds the water-balance residual of the predicted steps to the loss:
    on the held-out site and members the residual of one-step predictions falls (same seed,
    same data, same steps). (Free rollouts of models this small and this briefly trained are
    too far from the truth for their residual to say anything; the full-size comparison is
    in benchmarks/emulator.py.)"""
    from ailand.emulator.evaluate import water_balance

    res = {}
    for w in (0.0, 10.0):
        torch.manual_seed(0)
        em, _ = train_emulator(ensemble, val_members=2, val_sites=["BE-Lon"], water_weight=w, **ARCH, **SMALL)
        assert em.meta["training"]["water_weight"] == w
        wb = water_balance(em, ensemble, days=60).sel(source="emulator")
        res[w] = float(wb["mean_abs_one_step"].mean())
    assert res[10.0] < 0.85 * res[0.0], res  # measured: 0.72 -> 0.50 kg m-2 per step


def test_jenn_stage_brings_the_emulator_sensitivities_towards_the_physics(trained, ensemble):
    """The JENN stage (ailand.emulator.jenn): the physics' step sensitivities by central
    differences are sane (a layer's water persists), and fine-tuning with them in the loss
    lowers the sensitivity error of the emulator (same data, same seed)."""
    import copy

    from ailand.emulator.jenn import emulator_sensitivities, fit_jacobian, physics_sensitivities

    em, _ = trained
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-03-01", "2020-03-20", seed=4)
    js = physics_sensitivities(em, forcing, every=2, outputs=("T2m", "Qle", "swvl3"), spinup_years=0)
    assert js.J.shape == (len(js), 3, 3) and torch.isfinite(js.J).all()
    assert float(js.J[:, 2, 2].median()) > 0.5  # d swvl3(t + 6 h) / d swvl3(t): deep water persists
    scale = js.J.std(0).mean(-1)[None, :, None]  # per output, as in the JENN loss
    err = lambda m: float((((emulator_sensitivities(m, js) - js.J) / scale) ** 2).mean())  # noqa: E731
    tuned = copy.deepcopy(em)
    rec = fit_jacobian(tuned, ensemble, js, jac_weight=10.0, steps=40, lr=1e-3, batch_size=128, jac_batch=64,
                       rollout_steps=2, rollout_batch=8, progress=False)
    with torch.no_grad():
        assert err(tuned) < 0.7 * err(em), (err(tuned), err(em))
    assert rec["jac_loss_last"] < rec["jac_loss_first"] and tuned.meta["jenn"]["samples"] == len(js)
    with pytest.raises(ValueError, match="no"):
        physics_sensitivities(em, forcing, outputs=("NOPE",))
