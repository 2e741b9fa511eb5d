"""The cycling ensemble Kalman filter over the toy ecLand and its emulator (LandStep).

Twins on hourly-forced columns stepped 3-hourly, one analysis per day of the window's end
state: (a) states - a wrong start of the soil water is corrected by swvl1 observations
(the analysis beats the free run of the same ensemble); (b) states + a parameter; (c) a
multiplicative factor of the precipitation per site is recovered from swvl1 alone; and the
shipped emulator runs as the step with its members vectorised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ailand
from calibration.ensemble_kalman import CyclingFilter
from calibration.ensemble_kalman.land import LandStep

SITES = ["FR-Fon", "FI-Hyy"]
K = 50  # daily analyses
SIG = 0.01  # swvl1 observation error [m3 m-3]


@pytest.fixture(scope="module")
def physics():
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False, dt=10800.0)
    forcing = ailand.synthetic_forcing(SITES, "2020-05-01", "2020-06-25", freq="3h")
    return model, forcing


def _filter(step, idx, method="etkf", infl=1.02, seed=0):
    return CyclingFilter(step, idx, np.full(len(idx), SIG**2), step.layout, method=method, infl=infl,
                         names=step.names, units=step.units, input_fn=step.input_fn if step.scale_input else None,
                         factor_index=step.factor_index, seed=seed)


def _obs(truth, idx, seed=0):
    return truth[:, idx] + SIG * np.random.default_rng(seed).standard_normal((len(truth), len(idx)))


def test_soil_moisture_analysis_beats_the_free_run(physics):
    model, forcing = physics
    step = LandStep(model, forcing, spinup_years=0)
    truth = step.truth_run(K)
    idx = step.obs_index(["swvl1"])
    y = _obs(truth, idx)
    rng = np.random.default_rng(1)
    E0 = step.initial_ensemble(20, rng, state_std={"swvl1": 0.04, "swvl2": 0.04})
    E0[:, : 2 * len(SITES)] -= 0.05  # a start 0.05 m3 m-3 too dry in the top two layers
    ds = _filter(step, idx).run(E0.clone(), y, truth=truth)
    # the free run of the same ensemble
    step.reset(20)
    x = E0.clone()
    free = []
    for k in range(K):
        x = step(x, k)
        free.append(x.mean(0))
    free = torch.stack(free).numpy()
    layers = [i for i, n in enumerate(step.names) if n.startswith(("swvl1", "swvl2"))]
    err_a = np.sqrt(((ds.mean_a.values[:, layers] - truth[:, layers]) ** 2).mean(1))
    err_free = np.sqrt(((free[:, layers] - truth[:, layers]) ** 2).mean(1))
    late = slice(K // 2, None)
    assert err_a[late].mean() < 0.3 * err_free[late].mean(), (err_a[late].mean(), err_free[late].mean())
    assert err_a[late].mean() < 2 * SIG
    assert ds["mean_a"].attrs["units"] and ds.units_of.sel(variable="swvl1@FR-Fon").item() == "m3 m-3"
    assert int(ds.n_failed.sum()) == 0


def test_precipitation_factors_are_recovered_from_soil_moisture(physics):
    model, forcing = physics
    step = LandStep(model, forcing, scale_input="Rainf", spinup_years=0)
    true_f = np.array([0.6, 1.4])
    truth = step.truth_run(K, factors=true_f)
    idx = step.obs_index(["swvl1"])
    E0 = step.initial_ensemble(30, np.random.default_rng(1), state_std={"swvl1": 0.02}, factor_std=0.3)
    ds = _filter(step, idx).run(E0, y=_obs(truth, idx), truth=truth)
    names = [f"Rainf_factor@{s}" for s in SITES]
    mean = ds.mean_a.sel(variable=names).isel(time=-1).values
    sd = ds.spread_a.sel(variable=names).isel(time=-1).values
    assert np.all(np.abs(mean - true_f) <= 2 * sd + 0.05), (mean, sd)
    assert np.all(sd < 0.5 * 0.3), sd  # the prior spread shrinks by more than half
    assert list(ds.kind.sel(variable=names).values) == ["factor", "factor"]


def test_state_augmented_with_a_parameter_moves_towards_the_truth(physics):
    model, forcing = physics
    step = LandStep(model, forcing, params=["RSMIN"], spinup_years=0)
    truth = step.truth_run(K, params={"RSMIN": 250.0})
    idx = step.obs_index(["swvl1", "skt"])
    sig = np.concatenate([np.full(len(SITES), SIG), np.full(len(SITES), 0.5)])
    y = truth[:, idx] + sig * np.random.default_rng(0).standard_normal((K, len(idx)))
    E0 = step.initial_ensemble(30, np.random.default_rng(2), state_std={"swvl1": 0.02}, param_mean=[120.0], param_std=[50.0])
    flt = CyclingFilter(step, idx, sig**2, step.layout, method="etkf", infl=1.02, names=step.names,
                        units=step.units, seed=0)
    ds = flt.run(E0, y, truth=truth)
    r = ds.mean_a.sel(variable="RSMIN").values
    s = ds.spread_a.sel(variable="RSMIN").values
    assert ds.units_of.sel(variable="RSMIN").item() == model.space.units["RSMIN"]
    assert abs(r[-1] - 250.0) < abs(120.0 - 250.0) / 2, r[-1]  # more than half way from the prior mean
    assert s[-1] < 50.0


def test_emulator_as_the_step_and_input_errors():
    em = ailand.Emulator.default()
    forcing = ailand.synthetic_forcing(SITES, "2020-04-01", "2020-04-21", freq="1h")
    step = LandStep(em, forcing, spinup_years=0)
    truth = step.truth_run(10)
    idx = step.obs_index(["swvl1"])
    E0 = step.initial_ensemble(10, np.random.default_rng(0), state_std={"swvl1": 0.03})
    ds = _filter(step, idx).run(E0, _obs(truth, idx)[:10], truth=truth)
    assert np.isfinite(ds.mean_a.values).all() and ds.sizes["time"] == 10
    with pytest.raises(ValueError, match="state_vars"):
        LandStep(em, forcing, state_vars=["Qle"])
    with pytest.raises(ValueError, match="params"):
        LandStep(em, forcing, params=["NOPE"])
    with pytest.raises(ValueError, match="scale_input"):
        LandStep(em, forcing, scale_input="Snowfall")
    with pytest.raises(ValueError, match="window"):
        step._window(10_000)
