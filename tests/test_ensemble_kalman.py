"""Ensemble Kalman analysis steps, localisation, the cycling filter/smoother and the Lorenz-96
testbed (small configurations; DAPPER's long-run numbers live in benchmarks/assimilation.py)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from ailand import cli
from ailand.lorenz96 import Lorenz96, dxdt
from calibration.ensemble_kalman import (CyclingFilter, Layout, enkf_pertobs, etkf, gaussian_ensemble, inflate,
                                         letkf, post_process, rtpp, rtps, taper)
from calibration.ensemble_kalman import lorenz96_twin as lt
from calibration.ensemble_kalman.localisation import (gaspari_cohn, gaussian_taper, great_circle_distance,
                                                      l96_coefficients, periodic_distance, step_taper)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def linear_gaussian(n=4, m=3, N=9, seed=0):
    """A random ensemble that spans R^n (N - 1 >= n), a linear H, a full SPD R, observations."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((N, n)) @ rng.standard_normal((n, n)) + rng.standard_normal(n)
    H = rng.standard_normal((m, n))
    A = rng.standard_normal((m, m))
    R = A @ A.T + m * np.eye(m)
    y = rng.standard_normal(m) * 3
    return E, H, R, y


def kalman(E, H, R, y):
    """Kalman update of the ensemble's mean and covariance."""
    xb, P = E.mean(0), np.cov(E.T)
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    return xb + K @ (y - H @ xb), (np.eye(len(xb)) - K @ H) @ P


# ---------------------------------------------------------------- analysis steps
def test_etkf_equals_the_kalman_filter_when_the_ensemble_spans_the_space():
    E, H, R, y = linear_gaussian()
    Ea = etkf(E, E @ H.T, y, R)
    xa, Pa = kalman(E, H, R, y)
    assert isinstance(Ea, np.ndarray) and Ea.shape == E.shape
    np.testing.assert_allclose(Ea.mean(0), xa, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.cov(Ea.T), Pa, rtol=0, atol=1e-10)
    Erot = etkf(E, E @ H.T, y, R, rot=True, rng=np.random.default_rng(0))  # DAPPER's rot: same moments
    np.testing.assert_allclose(Erot.mean(0), xa, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.cov(Erot.T), Pa, rtol=0, atol=1e-10)
    assert not np.allclose(Erot, Ea)
    # rotation and inflation keep / scale the moments exactly
    rng = np.random.default_rng(1)
    Er = post_process(Ea, infl=1.1, rot=True, rng=rng)
    np.testing.assert_allclose(Er.mean(0), xa, atol=1e-10)
    np.testing.assert_allclose(np.cov(Er.T), 1.21 * Pa, atol=1e-10)
    assert not np.allclose(Er - Er.mean(0), 1.1 * (Ea - Ea.mean(0)))  # it did rotate
    # batched over independent problems; torch in, torch out; the weights reproduce the update
    Eb = np.stack([E, 2 * E])
    Ab, Mb = etkf(torch.as_tensor(Eb), torch.as_tensor(Eb @ H.T), torch.as_tensor(np.stack([y, y])), torch.as_tensor(R),
                  return_weights=True)
    assert torch.is_tensor(Ab) and Ab.shape == (2, 9, 4) and Mb.shape == (2, 9, 9)
    np.testing.assert_allclose(Ab[0].numpy(), Ea, atol=1e-12)
    np.testing.assert_allclose(Ab[1].mean(0).numpy(), kalman(2 * E, H, R, y)[0], atol=1e-10)


def test_letkf_with_infinite_radius_equals_the_etkf_and_local_analyses_are_per_point_etkfs():
    rng = np.random.default_rng(2)
    n, N = 12, 6
    E = rng.standard_normal((N, n)) + 3
    obs = np.arange(0, n, 2)
    HE, R, y = E[:, obs], np.diag(rng.uniform(0.5, 2, obs.size)), rng.standard_normal(obs.size) + 3
    d = periodic_distance(np.arange(n), obs, n)
    ones = taper(d, np.inf)
    np.testing.assert_array_equal(ones, 1.0)
    np.testing.assert_allclose(letkf(E, HE, y, R, ones), etkf(E, HE, y, R), rtol=0, atol=1e-12)
    # with a finite radius, point i = the ETKF of column i on the observations with R / c_ij (c > 0)
    c = taper(d, 2.0)
    Ea = letkf(E, HE, y, R, c)
    for i in range(n):
        keep = c[i] > 0
        Ri = np.diag(np.diag(R)[keep] / c[i, keep])
        np.testing.assert_allclose(Ea[:, i], etkf(E[:, [i]], HE[:, keep], y[keep], Ri)[:, 0], atol=1e-12)


def test_enkf_pertobs_with_a_large_ensemble_matches_kalman_within_monte_carlo_error():
    E0, H, R, y = linear_gaussian(n=3, m=2, N=4, seed=3)
    xb, P = np.array([1.0, -2.0, 0.5]), np.cov(E0.T) + np.eye(3)
    N = 20000
    rng = np.random.default_rng(4)
    E = rng.multivariate_normal(xb, P, size=N)
    Ea = enkf_pertobs(E, E @ H.T, y, R, rng=rng, center=True)
    xa, Pa = kalman(E, H, R, y)  # Kalman update of this ensemble's own moments
    # MC error: the mean has sd sqrt(Pa_ii / N); a variance has relative sd ~ sqrt(2 / N) = 0.01
    np.testing.assert_array_less(np.abs(Ea.mean(0) - xa), 5 * np.sqrt(np.diag(Pa) / N))
    sd = np.sqrt(np.outer(np.diag(Pa), np.diag(Pa)))
    np.testing.assert_array_less(np.abs(np.cov(Ea.T) - Pa) / sd, 5 * np.sqrt(2 / N))


def test_inflation_rtpp_rtps():
    rng = np.random.default_rng(5)
    Ef = rng.standard_normal((10, 3)) * 2
    Ea = Ef.mean(0) + 0.5 * (Ef - Ef.mean(0)) + 1
    np.testing.assert_allclose(inflate(Ea, 1.2).std(0), 1.2 * Ea.std(0))
    np.testing.assert_allclose(rtpp(Ea, Ef, 1.0) - Ea.mean(0), Ef - Ef.mean(0), atol=1e-12)
    np.testing.assert_allclose(rtps(Ea, Ef, 1.0).std(0, ddof=1), Ef.std(0, ddof=1))
    np.testing.assert_allclose(rtps(Ea, Ef, 0.5).mean(0), Ea.mean(0))


# ---------------------------------------------------------------- localisation
def test_tapers_follow_dapper_radius_convention_and_distances():
    d = np.linspace(0, 20, 2001)
    gc = gaspari_cohn(d, 4.0)
    assert gc[0] == 1.0 and np.all(np.diff(gc) <= 1e-15)
    assert np.all(gc[d >= 2 * 1.82 * 4.0] == 0) and np.all(gc[d < 2 * 1.82 * 4.0 - 1e-9] > 0)
    # DAPPER: coefficient ~ exp(-1/2) at the radius (exact for Gauss; GC with c = 1.82 r gives 0.633)
    assert abs(float(gaspari_cohn(np.array([4.0]), 4.0)[0]) - np.exp(-0.5)) < 0.03
    assert float(gaussian_taper(np.array([4.0]), 4.0)[0]) == pytest.approx(np.exp(-0.5))
    np.testing.assert_array_equal(step_taper(np.array([3.9, 4.0, 4.1]), 4.0), [1, 1, 0])
    assert torch.is_tensor(gaspari_cohn(torch.tensor([1.0]), 1.0))
    np.testing.assert_allclose(periodic_distance([0, 1, 39], [0, 20], 40), [[0, 20], [1, 19], [1, 19]])
    g = great_circle_distance([0, 0], [0, 0], [0, 90], [90, 0])
    np.testing.assert_allclose(g, [[np.pi / 2 * 6371.0088, np.pi / 2 * 6371.0088]] * 2, rtol=1e-12)
    c = l96_coefficients(40, np.arange(40), 4.0, batch=2)
    assert c.shape == (40, 40) and np.array_equal(c[0], c[1]) and not np.array_equal(c[1], c[2])


# ---------------------------------------------------------------- Lorenz-96 and the cycling filter
def test_lorenz96_step_batched_and_with_tensor_forcing():
    m = Lorenz96()
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((5, 40)))
    ref = np.stack([(np.roll(r, -1) - np.roll(r, 2)) * np.roll(r, 1) - r + 8 for r in x.numpy()])
    np.testing.assert_allclose(dxdt(x).numpy(), ref, atol=1e-12)
    F = torch.full((5, 1), 8.0)
    np.testing.assert_array_equal(m.step(x, 0.0, params=F).numpy(), m.step(x).numpy())
    np.testing.assert_array_equal(m.step(x, 0.0, inputs=F.expand(5, 40)).numpy(), m.step(x).numpy())
    assert m.step(x).shape == (5, 40)


@pytest.fixture(scope="module")
def short():
    return lt.simulate(300, seed=11)


def test_letkf_beats_free_run_and_3dvar_climatology_and_smoother_beats_filter(short):
    ds = lt.twin("letkf", 10, 1.04, 4.0, data=short, burn_in=5.0, lag=3)
    free = lt.free_run_rmse(short, 5.0)
    v3 = lt.var3d(short, xB=0.02, burn_in=5.0, clim=lt.climatology(n_steps=3000))
    print(f"L96 300 cycles: LETKF rmse_a {ds.attrs['rmse_a']:.3f} (smoother lag 3: {ds.attrs['rmse_s']:.3f}), "
          f"spread {ds.attrs['spread_a']:.3f}; 3D-Var {v3:.3f}; free run {free:.3f}; "
          f"climatology {lt.climatology_rmse(short, 5.0):.3f}")
    assert ds.attrs["n_averaged"] == 200
    assert ds.attrs["rmse_a"] < 0.3 and ds.attrs["rmse_a"] < 0.7 * v3 and ds.attrs["rmse_a"] < 0.1 * free
    assert 0.5 < ds.attrs["spread_a"] / ds.attrs["rmse_a"] < 2.0
    assert ds.attrs["rmse_s"] < 0.95 * ds.attrs["rmse_a"]  # the lag-3 smoother (rotations carried through the lag)
    for v in ("mean_a", "spread_a", "rmse_a", "innovation", "mean_s"):
        assert "units" in ds[v].attrs and "long_name" in ds[v].attrs
    ax = lt_plot(ds)
    assert len(ax.lines) >= 4


def lt_plot(ds):
    from calibration.ensemble_kalman import plot_filter

    return plot_filter(ds, "x0", t_range=(0, 5))


def test_augmented_forcing_converges_towards_8():
    ds = lt.param_twin(cycles=300, burn_in=5.0)
    F = ds["mean_a"].sel(variable="F").values
    print(f"F: prior 7, after 50 cycles {F[49]:.3f}, 300 cycles {F[-1]:.3f}, mean after burn-in {ds.attrs['F_a']:.3f}")
    assert abs(F[-1] - 8.0) < 0.1 and abs(F[-1] - 8.0) < 0.2 * abs(F[0] - 8.0)
    assert abs(ds.attrs["F_a"] - 8.0) < 0.15


def test_scaling_factor_of_an_input_is_estimated():
    """(c) one factor multiplies the forcing input F_i = 8 of all 40 variables; truth 1, prior 0.85."""
    m = Lorenz96()
    data = lt.simulate(200, seed=2, x0=np.zeros(40), x0_var=0.01)
    flt = CyclingFilter(m.step, np.arange(40), np.ones(40), Layout(40, n_factors=1), "etkf", infl=1.04,
                        input_fn=lambda t: torch.full((40,), 8.0), factor_index=np.zeros(40, int), seed=5)
    rng = np.random.default_rng(5)
    E0 = np.hstack([gaussian_ensemble(np.zeros(40), 0.1, 20, rng), gaussian_ensemble([0.85], 0.02, 20, rng)])
    ds = flt.run(E0, data["yy"], dt=0.05, truth=data["xx"][1:], burn_in=5.0)
    f = ds["mean_a"].sel(variable="f0").values
    assert list(ds["kind"].values[-1:]) == ["factor"]
    assert abs(f[-1] - 1.0) < 0.02 and abs(f[0] - 1.0) > 0.1


def test_failed_members_are_redrawn_and_the_run_completes(short, caplog):
    m = Lorenz96()
    calls = {"n": 0}

    def flaky(x, t, params, inputs):
        calls["n"] += 1
        out = m.step(x, t, params, inputs)
        if calls["n"] in (5, 6):
            out = out.clone()
            out[[0, 3]] = float("nan")
        return out

    flt = CyclingFilter(flaky, np.arange(40), np.ones(40), Layout(40), "letkf", infl=1.04, rot=True,
                        coeffs=l96_coefficients(40, np.arange(40), 4.0), lag=2, seed=0)
    E0 = gaussian_ensemble(lt.initial_state(40), 0.03, 8, np.random.default_rng(0))
    ds = flt.run(E0, short["yy"][:30], dt=0.05, truth=short["xx"][1:31], keep_ensemble=True)
    assert ds["n_failed"].values[4] == 2 and ds["n_failed"].values[5] == 2 and ds["n_failed"].sum() == 4
    assert np.isfinite(ds["ensemble_a"].values).all() and np.isfinite(ds["mean_s"].values).all()
    assert "failed" in caplog.text

    def dead(x, t, params, inputs):
        out = m.step(x).clone()
        out[1:] = float("nan")
        return out

    with pytest.raises(RuntimeError, match="at least 2"):
        CyclingFilter(dead, np.arange(40), np.ones(40), Layout(40), "etkf").run(E0, short["yy"][:3])


def test_missing_observations_leave_the_analysis(short):
    y = short["yy"][:40].copy()
    y[10, ::2] = np.nan  # half missing
    y[20] = np.nan  # all missing: no update
    for method, kw in (("etkf", {}), ("letkf", {"coeffs": l96_coefficients(40, np.arange(40), 4.0)}), ("enkf-pertobs", {})):
        flt = CyclingFilter(Lorenz96().step, np.arange(40), np.ones(40), Layout(40), method, infl=1.04, seed=0, **kw)
        E0 = gaussian_ensemble(lt.initial_state(40), 0.03, 10, np.random.default_rng(0))
        ds = flt.run(E0, y, dt=0.05, truth=short["xx"][1:41])
        assert np.isfinite(ds["mean_a"].values).all()
        np.testing.assert_allclose(ds["mean_a"].values[20], ds["mean_f"].values[20], atol=1e-12)
        assert not np.allclose(ds["mean_a"].values[10], ds["mean_f"].values[10])


def test_time_dependent_observation_operator(short):
    """observe(x, t): even cycles see x[0::2], odd cycles x[1::2] (m = 20 throughout)."""
    dt = 0.05
    which = lambda t: int(round(t / dt)) % 2  # noqa: E731  (cycle k + 1 at t = (k + 1) dt)
    xx = short["xx"][1:101]
    rng = np.random.default_rng(1)
    y = np.stack([xx[k, (k + 1) % 2::2] for k in range(100)]) + rng.standard_normal((100, 20))
    flt = CyclingFilter(Lorenz96().step, lambda x, t: x[:, which(t)::2], np.ones(20), Layout(40), "etkf",
                        infl=1.04, rot=True, seed=0, obs_time=True)
    E0 = gaussian_ensemble(lt.initial_state(40), 0.03, 20, np.random.default_rng(0))
    ds = flt.run(E0, y, dt=dt, truth=xx, burn_in=2.0)
    assert ds.attrs["rmse_a"] < 0.5


def test_clear_errors_naming_the_argument(short):
    E, H, R, y = linear_gaussian()
    with pytest.raises(ValueError, match="at least 2 members"):
        etkf(E[:1], E[:1] @ H.T, y, R)
    with pytest.raises(ValueError, match="wrong length"):
        etkf(E, E @ H.T, np.r_[y, 0.0], R)
    with pytest.raises(ValueError, match="R must be positive definite"):
        letkf(E, E @ H.T, y, -R, np.ones((4, 3)))
    with pytest.raises(ValueError, match="loc_rad must be > 0"):
        taper(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="loc_rad must be > 0"):
        lt.twin("letkf", 7, 1.04, -1.0, data=short)
    with pytest.raises(ValueError, match="infl must be >= 1"):
        inflate(E, 0.9)
    with pytest.raises(ValueError, match="infl must be >= 1"):
        CyclingFilter(Lorenz96().step, np.arange(40), np.ones(40), Layout(40), "etkf", infl=0.99)
    flt = CyclingFilter(Lorenz96().step, np.arange(40), np.ones(40), Layout(40), "etkf")
    E0 = gaussian_ensemble(np.zeros(40), 1.0, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="E0: an ensemble needs at least 2 members"):
        flt.run(E0[:1], short["yy"][:3])
    with pytest.raises(ValueError, match="y must be"):
        flt.run(E0, short["yy"][:3, :39])
    with pytest.raises(ValueError, match="R must be positive definite"):
        CyclingFilter(Lorenz96().step, np.arange(40), -np.ones(40), Layout(40), "etkf").run(E0, short["yy"][:3])
    with pytest.raises(ValueError, match="coeffs"):
        CyclingFilter(Lorenz96().step, np.arange(40), np.ones(40), Layout(40), "letkf")
    with pytest.raises(ValueError, match="method must be"):
        CyclingFilter(Lorenz96().step, np.arange(40), np.ones(40), Layout(40), "enkf")
    with pytest.raises(ValueError, match="rtps must be in"):
        rtps(E, E, 1.5)


def test_same_seed_same_numbers(short):
    kw = dict(data={k: (v[:60] if k in ("yy",) else v[:61] if k == "xx" else v) for k, v in short.items()}, burn_in=1.0)
    a = lt.twin("enkf-pertobs", 10, 1.06, **kw, seed=7)
    b = lt.twin("enkf-pertobs", 10, 1.06, **kw, seed=7)
    c = lt.twin("enkf-pertobs", 10, 1.06, **kw, seed=8)
    np.testing.assert_array_equal(a["mean_a"].values, b["mean_a"].values)
    assert not np.array_equal(a["mean_a"].values, c["mean_a"].values)
    d1, d2 = lt.simulate(20, seed=3), lt.simulate(20, seed=3)
    np.testing.assert_array_equal(d1["yy"], d2["yy"])


def test_cli_l96_writes_json(tmp_path, capsys):
    out = tmp_path / "l96.json"
    rc = cli.main(["l96", "--method", "etkf", "--members", "12", "--cycles", "120", "--burn-in", "2",
                   "--obs-every", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["method"] == "etkf" and res["members"] == 12 and res["obs_every"] == 2
    assert 0 < res["rmse_a"] < 2 and 0 < res["spread_a"] < 2 and res["n_averaged"] == 80
    assert "rmse_a" in capsys.readouterr().out
    assert cli.main(["l96", "--members", "1", "--no-progress"]) == 2
