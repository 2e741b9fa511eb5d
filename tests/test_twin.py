"""Twin experiments: the truth is recovered from noisy synthetic observations.

Identical twin with the float64 eager physics at one site over 20 days (3-hourly step, so
the test stays well under a minute): calibrate RSMIN and ALB_VEG from daily Qle and Qh
with 10 % noise; the truth must lie inside 2 posterior sigma and the observation RMSE must
fall to the noise level. Plus the report files and input validation.

Fraternal twin on the same observations with the shipped emulator as the forward model:
with the emulator's error in R (two-pass estimate, :mod:`calibration.discrepancy`) its
variational posterior must agree with the physics one (means within one posterior sigma)
and contain the truth; without it, it must not (the check would otherwise be vacuous).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

import ailand
import calibration as cal

TRUTH = {"RSMIN": 180.0, "ALB_VEG": 0.26}  # defaults 100 and 0.20


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False, dt=10800.0)
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-20", freq="3h")
    space = model.space.subset(["RSMIN", "ALB_VEG"])
    observe = cal.Observe(["Qle", "Qh"], freq="1D")
    return {"model": model, "forcing": forcing, "space": space, "observe": observe}


@pytest.fixture(scope="module")
def twin(setup):
    tw = cal.TwinExperiment(setup["model"], setup["forcing"], setup["space"], TRUTH, setup["observe"],
                            noise=0.1, seed=0, spinup_years=0)
    return tw, tw.run(methods=("variational",), n_starts=1)


def test_observations_carry_the_requested_noise(twin):
    tw, _ = twin
    assert tw.y.shape == tw.y_truth.shape == tw.obs_std.shape == (2 * 20,)
    lab = tw.labels
    for var in ("Qle", "Qh"):
        sel = np.asarray(lab.get_level_values("variable") == var)
        np.testing.assert_allclose(tw.obs_std[sel], 0.1 * np.std(tw.y_truth[sel]), rtol=1e-12)
    assert not np.allclose(tw.y, tw.y_truth)
    # seeded: the same experiment makes the same observations
    again = cal.TwinExperiment(tw.model, tw.forcing, tw.space, TRUTH, tw.observe, seed=0, state0=tw.state0)
    np.testing.assert_array_equal(again.y, tw.y)
    other = cal.TwinExperiment(tw.model, tw.forcing, tw.space, TRUTH, tw.observe, seed=1, state0=tw.state0)
    np.testing.assert_array_equal(other.y_truth, tw.y_truth)
    assert not np.allclose(other.y, tw.y)


def test_identical_twin_recovers_the_truth(twin):
    tw, res = twin
    assert res.methods == ["variational"] and res.names == ["RSMIN", "ALB_VEG"]
    np.testing.assert_allclose(res.truth, [180.0, 0.26])
    np.testing.assert_allclose(res.prior_mean, [100.0, 0.20])
    assert res.inside_2sigma.all(), res.table()
    # the posterior is much narrower than the prior and the truth is far outside the prior's 1 sigma
    assert np.all(res.posterior_std < 0.2 * res.prior_std), res.table()
    # the fit: from far above the noise down to the noise level
    assert res.rmse_before > 3 * res.noise_rms
    assert res.rmse_after[0] <= 1.5 * res.noise_rms, (res.rmse_after, res.noise_rms)
    assert res.n_forward_runs[0] > 0 and res.wall_time[0] > 0


@pytest.fixture(scope="module")
def emulator_twin(setup, twin):
    from ailand.emulator import Emulator

    tw, _ = twin  # same forcing, start state, truth, noise and seed -> the same observations
    te = cal.TwinExperiment(setup["model"], setup["forcing"], setup["space"], TRUTH, setup["observe"], noise=0.1,
                            seed=0, state0=tw.state0, forward_model=Emulator.default(), model_error_draws=24)
    return te, te.run(methods=("variational",), n_starts=1)


def test_emulator_and_physics_posteriors_agree(twin, emulator_twin):
    tw, phys = twin
    te, emu = emulator_twin
    np.testing.assert_array_equal(te.y, tw.y)
    assert te.use_model_error and te.model_error is not None
    # with the emulator's error in R: means within one posterior sigma of the physics' (each sigma), truth inside 2 sigma
    diff = np.abs(emu.posterior_mean[0] - phys.posterior_mean[0])
    assert np.all(diff <= emu.posterior_std[0]), (emu.table(), phys.table())
    assert np.all(diff <= phys.posterior_std[0]), (emu.table(), phys.table())
    assert emu.inside_2sigma.all(), emu.table()
    # the physics at the emulator's posterior mean fits to the noise level
    assert emu.rmse_after_truth_model[0] <= 1.5 * emu.noise_rms, (emu.rmse_after_truth_model, emu.noise_rms)
    assert set(emu.model_error.index) == {"Qle", "Qh"} and emu.attrs["model_error_truth_model_runs"] == 2 * 24
    # the same emulator without its error in R is over-confident: the check above is not vacuous
    p0 = cal.Problem(te.forward, te.y, obs_std=te.obs_std, prior=te.space)
    r0 = cal.variational(p0, n_starts=1, seed=0)
    for label, mean, std in [("physics, noise only", phys.posterior_mean[0], phys.posterior_std[0]),
                             ("emulator, noise only", r0.x, r0.std),
                             ("emulator, noise + emulator error", emu.posterior_mean[0], emu.posterior_std[0])]:
        print(f"{label:34s}" + "  ".join(f"{n} {m:.4g} +- {s:.2g}" for n, m, s in zip(emu.names, mean, std)))  # README table
    assert np.any(np.abs(r0.x - phys.posterior_mean[0]) > 2 * r0.std), (r0.x, r0.std)


def test_report_and_xarray(twin, tmp_path):
    _, res = twin
    ds = res.to_xarray()
    assert ds["posterior_mean"].dims == ("method", "parameter")
    for v in ("truth", "prior_mean", "prior_std", "posterior_mean", "posterior_std", "inside_2sigma"):
        assert v in ds, v
    assert ds["inside_2sigma"].values.all()
    for a in ("obs_rmse_before", "obs_rmse_after_variational", "noise", "noise_rms",
              "n_forward_runs_variational", "wall_time_s_variational"):
        assert a in ds.attrs, a
    assert ds.attrs["noise"] == 0.1
    # written, not read back (see test_calibration: netCDF4 reads abort this interpreter at exit)
    out = res.report(tmp_path / "twin")
    for f in ("twin.nc", "report.md", "twin.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "| parameter | truth | prior | variational |" in md
    assert "| RSMIN [s m-1] | 180 | 100 +- " in md and "| ALB_VEG | 0.26 |" in md
    assert "obs RMSE before" in md and "forward runs" in md


@pytest.mark.parametrize(
    "truth, match",
    [
        ({"RSMIN": 1000.0, "ALB_VEG": 0.26}, "RSMIN = 1000 is outside its bounds"),
        ({"RSMIN": 180.0, "ALB_VEG": 0.05}, "ALB_VEG = 0.05 is outside its bounds"),
        ({"RSMIN": 180.0, "ALB_VEG": 0.26, "NOPE": 1.0}, r"unknown parameter\(s\) \['NOPE'\]"),
        ({"RSMIN": 180.0}, r"missing \['ALB_VEG'\]"),
    ],
)
def test_bad_truth_is_refused(setup, truth, match):
    with pytest.raises(ValueError, match=match):
        cal.TwinExperiment(setup["model"], setup["forcing"], setup["space"], truth, setup["observe"], spinup_years=0)


def test_bad_space_noise_and_methods_are_refused(setup, twin):
    with pytest.raises(ValueError, match="noise must be a positive"):
        cal.TwinExperiment(setup["model"], setup["forcing"], setup["space"], TRUTH, setup["observe"], noise=0.0)
    tw, _ = twin
    with pytest.raises(ValueError, match="methods must be"):
        tw.run(methods=("gradient_descent",))
