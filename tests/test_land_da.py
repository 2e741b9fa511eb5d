"""Land data assimilation (issue 13): the SEKF against the hand-computed Kalman update, the
four Jacobians of one window against each other, a short soil-moisture twin where the SEKF
beats the open loop, and bad input.

The twin: US-Kon and IT-Noe, 1-16 July 2020 (30 windows of 12 h), no spin-up (the truth and
the DA system start from the same cold start; the open loop's error comes from its biased,
noisy precipitation and radiation), observations of T2m, RH2m (6-hourly means) and
satellite swvl1 (daily, gaps). About 15 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import ailand
from calibration import land_da as lda


@pytest.fixture(scope="module")
def twin():
    torch.set_num_threads(1)
    return lda.SoilMoistureTwin(sites=("US-Kon", "IT-Noe"), start="2020-07-01", end="2020-07-15", spinup_years=0,
                                seed=0)


def test_sekf_update_equals_the_kalman_update_by_hand():
    rng = np.random.default_rng(0)
    S, m, L = 3, 5, 3
    H = rng.standard_normal((S, m, L))
    xb, d = rng.random((S, L)) * 0.3, rng.standard_normal((S, m))
    r = rng.random(m) + 0.5
    use = rng.random((S, m)) > 0.3
    use[0] = False  # a site with no data: the analysis is the background
    xa, A = lda.sekf_update(xb, H, d, 0.01, r, use)
    B = 0.01**2 * np.eye(L)
    for s in range(S):
        Hs, ds, Rs = H[s][use[s]], d[s][use[s]], np.diag(r[use[s]] ** 2)
        K = B @ Hs.T @ np.linalg.inv(Hs @ B @ Hs.T + Rs) if use[s].any() else np.zeros((L, 0))
        np.testing.assert_allclose(xa[s], xb[s] + K @ ds, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(A[s], (np.eye(L) - K @ Hs) @ B, rtol=1e-8, atol=1e-16)
    np.testing.assert_array_equal(xa[0], xb[0])


def test_jacobians_of_one_window_agree(twin):
    # window 9 (12-24 UTC on day 5: daytime at both sites), from the open loop: the cold start
    # sits exactly at field capacity, where the water-stress function has a kink (the one-sided
    # derivatives differ and autograd takes one of them)
    r, k = twin.runner, 9
    state = twin.state0
    with torch.no_grad():
        for i in range(k):
            _, state = r.run(i, state)
    H_ad, hb, _ = lda.jacobian_autograd(r, k, state)
    H_fd, hb_fd, _ = lda.jacobian_fd(r, k, state, delta=1e-6)
    H_fd2, _, _ = lda.jacobian_fd(r, k, state, delta=0.01)
    # the emulator's H of the satellite datum (the diagonal): d swvl1(T+12) / d swvl1..3(T+0)
    emu = lda.WindowRunner(ailand.Emulator.default(), twin.forcing, ["swvl1"], twin.hours)
    H_em = lda.jacobian_autograd(emu, k, state)[0]
    H_en = lda.jacobian_ensemble(r, k, state, np.random.default_rng(0), n=40, std=0.01)
    np.testing.assert_allclose(hb_fd, hb, rtol=1e-12)
    scale = np.abs(H_ad).max(axis=(1, 2), keepdims=True)
    # the physics' autograd and its finite differences: equal to the FD truncation error
    assert np.abs(H_fd - H_ad).max() <= 1e-4 * scale.max()
    assert np.abs(H_fd2 - H_ad).max() <= 0.3 * scale.max()  # delta = 0.01: the nonlinearity shows
    i = r.obs_names.index("swvl1@T+12h")
    diag = {"autograd": H_ad[:, i, 0], "fd": H_fd2[:, i, 0], "emulator": H_em[:, 0, 0], "ensemble": H_en[:, i, 0]}
    for name, v in diag.items():  # d swvl1(T+12) / d swvl1(T+0) > 0 everywhere
        assert np.all(v > 0), (name, v)


def test_sekf_beats_the_open_loop_and_stays_physical(twin):
    ol = twin.run("open_loop")
    runs = {"open_loop": ol, "sekf_fd": twin.run("sekf", jacobian="fd"), "sekf_autograd": twin.run("sekf", jacobian="autograd")}
    sc = lda.scores(runs)
    assert sc.loc["sekf_autograd", "rmse_root_zone"] < 0.95 * sc.loc["open_loop", "rmse_root_zone"], sc
    assert sc.loc["sekf_fd", "rmse_root_zone"] < 0.95 * sc.loc["open_loop", "rmse_root_zone"], sc
    sat = twin.runner.theta_sat().numpy()
    for ds in runs.values():
        a = ds["analysis"].values
        assert np.all(a >= 0) and np.all(a <= sat[None, :, None] + 1e-12)
    assert int(runs["sekf_fd"]["n_used"].sum()) > 0 and runs["sekf_fd"].attrs["physics_runs_per_cycle"] == 4.0
    assert ol["analysis"].attrs["units"] == "m3 m-3"


def test_a_window_without_data_keeps_the_forecast_and_bad_input_is_refused(twin):
    obs = twin.observations()
    y = obs["y"].copy()
    y[3] = np.nan  # window 3 has no data
    twin.use_observations(y)
    try:
        ds = twin.run("sekf", jacobian="fd", windows=5)
        np.testing.assert_array_equal(ds["analysis"].isel(time=3).values, ds["background"].isel(time=3).values)
        assert int(ds["n_used"].isel(time=3).sum()) == 0
    finally:
        twin.use_observations(obs)
    late = y.assign_coords(time=y["time"].values + np.timedelta64(30, "D"))
    with pytest.raises(ValueError, match="outside the run"):
        twin.use_observations(late)
    with pytest.raises(ValueError, match="not window ends"):
        twin.use_observations(y.isel(time=slice(0, 3)).assign_coords(time=y["time"].values[:3] + np.timedelta64(1, "h")))
    with pytest.raises(ValueError, match="does not produce"):
        lda.WindowRunner(twin.physics, twin.forcing, ["swvl9"])
    with pytest.raises(ValueError, match="positive"):
        lda.SoilMoistureTwin(sites=("US-Kon",), start="2020-07-01", end="2020-07-02", obs_std={"T2m": -1.0})
    with pytest.raises(ValueError, match="positive"):
        lda.sekf_update(np.zeros((1, 3)), np.ones((1, 2, 3)), np.zeros((1, 2)), 0.01, [1.0, -1.0])
    with pytest.raises(ValueError, match="outside the forcing"):
        twin.runner.run(twin.K, twin.state0)
    with pytest.raises(ValueError, match="jacobian must be"):
        twin.run("sekf", jacobian="adjoint")


def test_assimilate_cli_writes_the_analyses_and_the_report(tmp_path, capsys):
    from ailand import cli

    out = tmp_path / "lda"
    rc = cli.main(["assimilate", "--sites", "IT-Noe", "--start", "2020-07-01", "--end", "2020-07-03",
                   "--spinup-years", "0", "--methods", "open_loop,sekf-fd,letkf", "--members", "4",
                   "--no-progress", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| sekf-fd |" in printed and "| letkf |" in printed
    ds = xr.open_dataset(out / "land_da.nc")
    assert list(ds["method"].values) == ["open_loop", "sekf-fd", "letkf"]
    assert ds["analysis"].attrs["units"] == "m3 m-3" and ds.sizes["layer"] == 3
    assert (out / "report.md").read_text().count("|") > 10 and (out / "land_da.png").stat().st_size > 0
    ds.close()
    assert cli.main(["assimilate", "--methods", "kalman", "--out", str(out)]) == 2


def test_jacobian_breakdown_counts_signs_and_magnitudes_per_variable_and_layer():
    from calibration.land_da import jacobian_breakdown

    ref = np.ones((2, 3, 2, 3))  # (windows, sites, observations, layers)
    ref[..., 2] = 1e-4  # below 1 % of the row's largest: left out
    emu = 10.0 * ref
    emu[:, 0, 1, 1] = -5.0  # two wrong signs of six in (RH2m, layer 2)
    bd = jacobian_breakdown({"autograd": ref, "emulator": emu}, np.array(["T2m", "RH2m"]))
    assert list(bd.index) == [("T2m", 1), ("T2m", 2), ("RH2m", 1), ("RH2m", 2)]
    assert bd.loc[("T2m", 1), "n"] == 6 and bd.loc[("T2m", 1), "sign_agreement"] == 1.0
    assert bd.loc[("RH2m", 2), "sign_agreement"] == pytest.approx(4 / 6)
    assert bd.loc[("T2m", 2), "magnitude_ratio"] == pytest.approx(10.0)
