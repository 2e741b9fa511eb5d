"""History matching on a twin, compared with the variational and MCMC posteriors (a tiny
version of ``examples/history_matching_twin.py``).

Identical twin: FR-Fon, 7 days, daily Qle and Qh (14 data), 10 % noise, a 3-h physics
step, RSMIN and ALB_VEG; the physics is both the truth and the simulator of 3 waves of 15
runs, ``nth = noise_nth(14) = 2``; variational (1 start) and a short MCMC (20 steps x 16
walkers from the optimum) on the physics too. Checks: the truth is NROY after every wave, the NROY
fraction does not grow (beyond its Monte-Carlo error), the variational mean is NROY, and
the comparison table and plot are produced.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

import ailand
import calibration as cal
from calibration.history_matching.compare import format_table, noise_nth, nroy_vs_posteriors, plot_nroy_vs_posteriors

TRUTH = {"RSMIN": 180.0, "ALB_VEG": 0.26}
N_WAVES, RUNS = 3, 15


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = ailand.ToyEcLand(dtype=torch.float64, compile=False, dt=10800.0)
        forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-07", freq="3h")
        space = model.space.subset(list(TRUTH))
        twin = cal.TwinExperiment(model, forcing, space, TRUTH, cal.Observe(["Qle", "Qh"], freq="1D"),
                                  noise=0.1, seed=0, spinup_years=0)
        res = twin.run(methods=("variational", "mcmc"), n_starts=1, mcmc_steps=20, mcmc_walkers=16)  # 2 vectorised calls a step
        path = tmp_path_factory.mktemp("hm_twin")
        hm = cal.HistoryMatching(twin.truth_forward, twin.y, space, obs_std=twin.obs_std, cutoff=3.0,
                                 nth=noise_nth(twin.y.size), path=path / "waves", seed=0, n_mc=5000,
                                 emulator=dict(n_iter=100, n_restarts=1))
        truth_I = []
        for _ in range(N_WAVES):
            hm.run_wave(RUNS)
            truth_I.append(float(hm.implausibility(twin.truth_vector[None])[0]))
        yield {"twin": twin, "res": res, "hm": hm, "truth_I": truth_I, "path": path}
    finally:
        torch.set_num_threads(n)


def test_noise_nth():
    assert noise_nth(1) == 1
    assert noise_nth(20) == 2          # P(max of 20 |N(0,1)| > 3) = 5.3 % > 1 %
    assert noise_nth(244) == 4         # the default twin's 244 data
    assert noise_nth(244, alpha=0.05) == 3
    with pytest.raises(ValueError):
        noise_nth(10, alpha=0)


def test_truth_never_ruled_out_and_nroy_shrinks(case):
    hm = case["hm"]
    assert hm.n_waves == N_WAVES
    assert max(case["truth_I"]) <= hm.cutoff, case["truth_I"]
    ds = hm.waves
    frac, se = ds["nroy_fraction"].values, ds["nroy_fraction_se"].values
    assert frac[0] < 1.0
    for k in range(1, N_WAVES):  # NROY needs every wave: non-increasing up to its MC error
        assert frac[k] <= frac[k - 1] + 2 * max(se[k], se[k - 1]) + 1e-12, frac
    assert frac[-1] < frac[0]


def test_posteriors_against_nroy(case):
    hm, res, twin = case["hm"], case["res"], case["twin"]
    ds = nroy_vs_posteriors(hm, res, truth=twin.truth_vector, n_nroy=200)
    assert list(ds["parameter"].values) == list(TRUTH)
    assert int(ds["variational_mean_nroy"]) == 1, float(ds["variational_mean_implausibility"])
    assert int(ds["truth_nroy"]) == 1
    assert np.all(ds["truth_in_nroy_range"].values == 1)
    assert np.all(ds["nroy_min"].values <= ds["nroy_max"].values)
    assert np.all(ds["variational_lo"].values < ds["variational_mean"].values)
    assert np.all(ds["variational_mean"].values < ds["variational_hi"].values)
    assert 0.5 <= float(ds["mcmc_nroy_fraction"]) <= 1.0  # the posterior mass lies in NROY
    text = format_table(ds)
    assert "RSMIN" in text and "MCMC" in text and "variational mean NROY" in text
    png = case["path"] / "cmp.png"
    fig = plot_nroy_vs_posteriors(hm, res, truth=twin.truth_vector, path=png, n_nroy=200, table=ds)
    assert png.stat().st_size > 10_000
    assert len(fig.axes) >= 4
    import matplotlib.pyplot as plt

    plt.close("all")
    with pytest.raises(ValueError):
        nroy_vs_posteriors(cal.HistoryMatching(twin.truth_forward, twin.y, twin.space, obs_std=twin.obs_std),
                           res)


def test_resume_reuses_the_waves(case):
    hm, twin = case["hm"], case["twin"]
    again = cal.HistoryMatching(twin.truth_forward, twin.y, twin.space, obs_std=twin.obs_std, cutoff=3.0,
                                nth=noise_nth(twin.y.size), path=case["path"] / "waves", seed=0, n_mc=5000,
                                emulator=dict(n_iter=100, n_restarts=1))
    assert again.n_waves == N_WAVES
    assert again.nroy_fraction == hm.nroy_fraction
