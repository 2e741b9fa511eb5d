"""Calibration core: Observe, Forward (physics and emulator), Problem, variational, mcmc.

Analytic checks on a linear-Gaussian problem, multi-start on a multi-modal cost, the
toy ecLand Forward against finite differences and ``run``, and input validation.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import ailand
import ailand.emulator
import calibration as cal

SITES = ["FR-Fon", "FI-Hyy"]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def linear():
    """M(x) = G x, Gaussian prior with correlated B, correlated R; analytic posterior."""
    rng = np.random.default_rng(1)
    d, m = 3, 8
    G = rng.normal(size=(m, d))
    x_b = np.array([0.5, -0.2, 1.0])
    B = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]])
    R = 0.09 * (0.7 * np.eye(m) + 0.3 * np.exp(-np.abs(np.subtract.outer(np.arange(m), np.arange(m)))))
    y = G @ np.array([1.0, -0.5, 2.0]) + np.linalg.cholesky(R) @ rng.normal(size=m)
    Ri = np.linalg.inv(R)
    A = np.linalg.inv(G.T @ Ri @ G + np.linalg.inv(B))  # A = (G^T R^-1 G + B^-1)^-1
    x_a = x_b + A @ G.T @ Ri @ (y - G @ x_b)  # x_a = x_b + A G^T R^-1 (y - G x_b)
    Gt = torch.as_tensor(G)
    problem = cal.Problem(lambda x: x @ Gt.T, y, R=R, prior=(x_b, B), bounds=np.tile([-100.0, 100.0], (d, 1)))
    return {"G": G, "A": A, "x_a": x_a, "problem": problem, "y": y}


@pytest.fixture(scope="module")
def physics():
    torch.manual_seed(0)
    model = ailand.ToyEcLand(compile=False, dtype=torch.float64)
    forcing = ailand.synthetic_forcing(SITES, "2020-06-01", "2020-06-10")
    space = model.space.subset(["RSMIN", "KSAT", "LAI_SCALE"])
    observe = cal.Observe(["Qle", "swvl1"], freq="1D", window=slice("2020-06-03", None))
    forward = cal.Forward(model, forcing, space, observe, spinup_years=0)
    return {"model": model, "forcing": forcing, "space": space, "observe": observe, "forward": forward}


# ------------------------------------------------------- linear-Gaussian
def test_variational_equals_the_analytic_linear_gaussian_posterior(linear, tmp_path):
    res = cal.variational(linear["problem"], n_starts=4, seed=0)
    np.testing.assert_allclose(res.x, linear["x_a"], atol=1e-6)
    np.testing.assert_allclose(res.cov, linear["A"], atol=1e-6)
    np.testing.assert_allclose(res.A_control, linear["A"], atol=1e-6)
    G = linear["G"]
    np.testing.assert_allclose(res.output_cov, G @ linear["A"] @ G.T, atol=1e-6)
    np.testing.assert_allclose(res.error_reduction, 1 - np.sqrt(np.diag(linear["A"])) / np.sqrt([1.0, 2.0, 0.5]), atol=1e-6)
    assert np.allclose(res.J_optima, res.J, atol=1e-8)  # convex: every start finds it
    np.testing.assert_allclose(res.starts[0], [0.5, -0.2, 1.0])  # the prior mean is a start
    # J at the optimum is the analytic cost there
    np.testing.assert_allclose(res.J, linear["problem"].cost(linear["x_a"]), rtol=1e-10)
    np.testing.assert_allclose(linear["problem"].gradient(linear["x_a"]), 0.0, atol=1e-6)

    ds = res.to_xarray()
    for v in ("posterior_mean", "posterior_std", "posterior_cov", "prior_mean", "prior_std", "error_reduction", "J", "x", "J_history"):
        assert v in ds, v
    assert ds["posterior_cov"].dims == ("parameter", "parameter_")
    assert list(ds["parameter"].values) == ["x0", "x1", "x2"]
    assert ds.attrs["n_forward_runs"] == res.n_forward_runs > 0 and ds.attrs["wall_time_s"] > 0
    # written, not read back: reading NetCDF (netCDF4) and then writing an ensemble (the
    # emulator test) in one process aborts the interpreter at exit in this environment
    assert res.to_netcdf(tmp_path / "var.nc").stat().st_size > 0
    res.plot(tmp_path / "var.png")
    assert (tmp_path / "var.png").stat().st_size > 0


def test_mcmc_agrees_with_the_analytic_posterior_within_monte_carlo_error(linear, tmp_path):
    res = cal.mcmc(linear["problem"], n_walkers=16, n_steps=3000, seed=0, progress=False)
    sd = np.sqrt(np.diag(linear["A"]))
    assert res.n_eff > 300
    assert np.all(np.abs(res.mean - linear["x_a"]) < 4 * sd / np.sqrt(res.n_eff))
    # sample covariance: standard error ~ sqrt((A_ii A_jj + A_ij^2) / N_eff)
    se = np.sqrt((np.outer(sd**2, sd**2) + linear["A"] ** 2) / res.n_eff)
    assert np.all(np.abs(res.cov - linear["A"]) < 4 * se)
    assert 0.2 < res.acceptance.mean() < 0.9
    assert res.burn > 0 and res.thin >= 1 and np.all(res.tau > 1)
    assert res.n_forward_runs <= 16 * (3000 + 1)  # + the initial walkers

    ds = res.to_xarray()
    assert ds["samples"].dims == ("sample", "parameter")
    assert ds["posterior_cov"].dims == ("parameter", "parameter_")
    for a in ("method", "n_forward_runs", "tau_max", "acceptance_mean"):
        assert a in ds.attrs
    res.to_netcdf(tmp_path / "mcmc.nc")
    res.plot(tmp_path / "corner.png")
    # reproducible with the same seed
    again = cal.mcmc(linear["problem"], n_walkers=16, n_steps=50, seed=3, progress=False, burn=10, thin=1)
    same = cal.mcmc(linear["problem"], n_walkers=16, n_steps=50, seed=3, progress=False, burn=10, thin=1)
    np.testing.assert_array_equal(again.samples, same.samples)


@pytest.mark.parametrize("method", ["lbfgsb", "lm"])
def test_multi_start_finds_the_global_minimum_a_single_start_misses(method):
    M = lambda x: x + 2 * torch.sin(3 * x)  # noqa: E731  non-monotonic: J has several local minima
    y = M(torch.tensor([[3.0]], dtype=torch.float64))[0].numpy()
    problem = cal.Problem(M, y, obs_std=0.1, prior=(np.zeros(1), np.eye(1) * 100.0), bounds=[[-5.0, 5.0]])
    # from 0, L-BFGS-B descends into the local minimum near x = -0.5 (J > 10); a start there
    # traps LM too (its first Gauss-Newton step from 0 happens to jump over that basin)
    one = cal.variational(problem, n_starts=1, method=method, starts=[[0.0 if method == "lbfgsb" else -0.6]])
    many = cal.variational(problem, n_starts=16, seed=0, method=method)
    assert one.J > 10.0
    assert many.J < 0.1
    assert abs(float(M(torch.as_tensor(many.x)[None])[0, 0]) - y[0]) < 0.01
    assert len(many.J_history) == 16 and many.to_xarray().sizes["start"] == 16


# ----------------------------------------------------------- the toy ecLand
def test_forward_on_the_physics_shapes_labels_and_autograd_equals_finite_differences(physics):
    fwd, space = physics["forward"], physics["space"]
    x0 = space.default_vector
    runs0 = fwd.n_runs
    X = np.stack([x0, x0 * np.array([1.5, 0.5, 1.2])])
    Y = fwd(X)
    assert Y.shape == (2, fwd.n_obs) and fwd.n_obs == 2 * 2 * 8  # variables x sites x days (Jun 3..10)
    lab = fwd.labels
    assert list(lab.names) == ["variable", "site", "time"]
    assert lab[0] == ("Qle", "FR-Fon", pd.Timestamp("2020-06-03")) and lab[-1] == ("swvl1", "FI-Hyy", pd.Timestamp("2020-06-10"))
    assert fwd.forcing["Tair"].shape[0] == 240

    # the same numbers as model.run + Observe on the Dataset
    ds = physics["model"].run(physics["forcing"], params=dict(zip(space.names, X[1])), spinup_years=0)
    yd = physics["observe"](ds)
    assert yd.dims == ("obs",) and list(yd["obs_variable"].values[:1]) == ["Qle"]
    np.testing.assert_allclose(yd.values, Y[1], rtol=1e-10)

    # autograd Jacobian vs central differences (all 2 d perturbed runs as members of one call)
    H = fwd.jacobian(x0)[0].numpy()
    assert H.shape == (fwd.n_obs, 3)
    h = 1e-6 * x0
    P = np.vstack([x0 + s * h[j] * np.eye(3)[j] for j in range(3) for s in (1, -1)])
    Yp = fwd(P)
    fd = np.stack([(Yp[2 * j] - Yp[2 * j + 1]) / (2 * h[j]) for j in range(3)], -1)
    scale = np.abs(H).max(0)
    assert np.all(scale > 0)
    assert np.all(np.abs(fd - H) <= 1e-5 * scale)
    assert fwd.n_runs - runs0 == 2 + 1 + 6

    # torch in: differentiable through a Problem
    problem = cal.Problem(fwd, Y[1], obs_std=np.r_[np.full(16, 5.0), np.full(16, 0.01)], prior=space)
    g = problem.gradient(x0)
    Ro = problem.R
    r = Y[1] - Y[0]
    dz = np.zeros(3)  # at x_b the background gradient is zero
    np.testing.assert_allclose(g, -H.T @ np.linalg.solve(Ro, r) + dz, rtol=1e-6, atol=1e-12 * np.abs(g).max())


def test_log_parameters_use_a_log_control_space(physics):
    space = physics["space"]  # RSMIN and KSAT are log-scale, LAI_SCALE linear
    problem = cal.Problem(lambda x: x[:, :1] * 0.0, np.zeros(1), obs_std=1.0, prior=space)
    assert problem.log.tolist() == [True, True, False]
    lo, hi = space.bounds[1]
    np.testing.assert_allclose(np.sqrt(problem.B[1, 1]), np.log(hi / lo) / 4)
    np.testing.assert_allclose(np.sqrt(problem.B[2, 2]), (space.bounds[2, 1] - space.bounds[2, 0]) / 4)
    x = space.sample(5, seed=1).values
    np.testing.assert_allclose(problem.from_u(problem.to_u(x)), x, rtol=1e-12)
    assert problem.cost(space.default_vector) == 0.0
    # J's background term is Gaussian in ln KSAT
    x1 = space.default_vector * np.array([1.0, np.e, 1.0])
    np.testing.assert_allclose(problem.cost(x1), 0.5 / problem.B[1, 1])


def test_forward_on_an_emulator_is_differentiable(tmp_path):
    space = ailand.ParameterSpace.default()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = ailand.run_ensemble(
            ailand.ToyEcLand(compile=False), ailand.synthetic_forcing(["FR-Fon", "BE-Lon", "FI-Hyy"], "2020-01-01", "2020-02-29"),
            space.sample(4, seed=0), tmp_path / "e.zarr", spinup_years=0, progress=False,
        )
        torch.manual_seed(0)
        em, _ = ailand.emulator.train_emulator(path, width=32, depth=2, epochs=1, steps_per_epoch=5, progress=False)
        forcing = ailand.synthetic_forcing(["FR-Fon", "BE-Lon"], "2020-01-01", "2020-01-10")
        sub = space.subset(["RSMIN", "KSAT"])
        fwd = cal.Forward(em, forcing, sub, cal.Observe(["Qle", "swvl1"], freq="2D"), spinup_years=0)
        x = torch.as_tensor(np.stack([sub.default_vector, 1.2 * sub.default_vector])).requires_grad_(True)
        y = fwd(x)
        assert y.shape == (2, 2 * 2 * 5) and fwd.labels[1] == ("Qle", "FR-Fon", pd.Timestamp("2020-01-03"))
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(g).all() and (g != 0).any()
        H = fwd.jacobian(x)
        assert H.shape == (2, 20, 2) and torch.isfinite(H).all()
        with pytest.raises(ValueError, match="does not produce"):
            cal.Forward(em, forcing, sub, cal.Observe(["Qle", "not_a_variable"]), spinup_years=0)


# ------------------------------------------------------------- bad input
def test_nan_observations_are_masked(linear):
    p = linear["problem"]
    y = linear["y"].copy()
    y[[2, 5]] = np.nan
    G = torch.as_tensor(linear["G"])
    keep = [i for i in range(8) if i not in (2, 5)]
    masked = cal.Problem(lambda x: x @ G.T, y, R=p.R, prior=(p.x_b, p.B), bounds=p.bounds)
    dropped = cal.Problem(lambda x: x @ G[keep].T, y[keep], R=p.R[np.ix_(keep, keep)], prior=(p.x_b, p.B), bounds=p.bounds)
    x = np.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]])
    np.testing.assert_allclose(masked.cost(x), dropped.cost(x), rtol=1e-12)
    np.testing.assert_allclose(masked.gradient(x), dropped.gradient(x), rtol=1e-10)
    r = masked.residuals(x)
    assert r.shape == (2, 8) and np.isnan(r[:, [2, 5]]).all() and np.isfinite(r[:, keep]).all()
    res = cal.variational(masked, n_starts=2)
    assert np.isfinite(res.output_std).all() and res.output_std.shape == (8,)


def test_bad_inputs_raise_clear_errors(linear, physics):
    p = linear["problem"]
    G = torch.as_tensor(linear["G"])
    M = lambda x: x @ G.T  # noqa: E731
    prior = (p.x_b, p.B)
    with pytest.raises(ValueError, match="forward returned shape"):
        cal.Problem(M, np.zeros(7), obs_std=1.0, prior=prior).cost(p.x_b)
    with pytest.raises(ValueError, match="y has 5 values but the forward model gives 32"):
        cal.Problem(physics["forward"], np.zeros(5), obs_std=1.0)
    with pytest.raises(ValueError, match="obs_std has 3 values but y has 8"):
        cal.Problem(M, linear["y"], obs_std=np.ones(3), prior=prior)
    for bad in (0.0, -1.0, np.r_[np.ones(7), 0.0]):
        with pytest.raises(ValueError, match="obs_std must be finite and > 0"):
            cal.Problem(M, linear["y"], obs_std=bad, prior=prior)
    with pytest.raises(ValueError, match="exactly one of obs_std"):
        cal.Problem(M, linear["y"], prior=prior)
    with pytest.raises(ValueError, match="positive definite"):
        cal.Problem(M, linear["y"], R=-np.eye(8), prior=prior)
    with pytest.raises(ValueError, match="no finite value"):
        cal.Problem(M, np.full(8, np.nan), obs_std=1.0, prior=prior)
    # x outside the bounds
    with pytest.raises(ValueError, match=r"x1 = 200 is outside its bounds \[-100, 100\]"):
        p.cost(np.array([0.0, 200.0, 0.0]))
    with pytest.raises(ValueError, match="outside its bounds"):
        p.gradient(np.array([[0.0, 0.0, -101.0]]))
    with pytest.raises(ValueError, match="3 columns"):
        p.cost(np.zeros(2))
    lp = p.log_posterior(np.array([[0.0, 0.0, 0.0], [0.0, 200.0, 0.0], [np.nan, 0.0, 0.0]]))
    assert np.isfinite(lp[0]) and lp[1] == -np.inf and lp[2] == -np.inf
    with pytest.raises(ValueError, match="Forward control vector: KSAT"):
        physics["forward"](np.array([100.0, 1.0, 1.0]))
    # Observe: a variable the model does not produce, a missing site, an empty window
    fc, model, space = physics["forcing"], physics["model"], physics["space"]
    with pytest.raises(ValueError, match=r"does not produce \['GPP'\]"):
        cal.Forward(model, fc, space, cal.Observe(["Qle", "GPP"]), spinup_years=0)
    with pytest.raises(ValueError, match=r"site\(s\) \['XX-Nope'\]"):
        cal.Forward(model, fc, space, cal.Observe("Qle", sites=["XX-Nope"]), spinup_years=0)
    with pytest.raises(ValueError, match="selects no model interval"):
        cal.Forward(model, fc, space, cal.Observe("Qle", window=slice("2021-01-01", "2021-02-01")), spinup_years=0)
    with pytest.raises(ValueError, match="not bound"):
        cal.Observe("Qle").labels
    with pytest.raises(ValueError, match="lacks"):
        cal.Observe("GPP")(xr.Dataset({"Qle": (("time", "site"), np.zeros((2, 1)))}, coords={"time": pd.date_range("2020", periods=2, freq="h"), "site": ["a"]}))


def test_levenberg_marquardt_matches_lbfgsb_with_log_parameter_correlated_R_and_an_active_bound():
    """LM (finite-difference and autograd directions) and L-BFGS-B reach the same optimum on
    a nonlinear problem with a log-scale parameter, a full R and one parameter pushed onto
    its bound; bad options are refused."""
    t = torch.linspace(0.0, 1.0, 40, dtype=torch.float64)

    def M(x):  # (n, 3): amplitude (log-scale), rate, offset -> (n, 40)
        return x[:, :1] * torch.exp(-x[:, 1:2] * t) + x[:, 2:3]

    truth = torch.tensor([[2.0, 1.5, 0.9]], dtype=torch.float64)
    y = M(truth)[0].numpy() + 0.02 * np.random.default_rng(0).standard_normal(40)
    R = 0.02**2 * (0.5 * np.eye(40) + 0.5 * np.exp(-np.abs(np.subtract.outer(np.arange(40), np.arange(40))) / 3.0))
    space = ailand.ParameterSpace.from_dict({"a": {"min": 0.1, "max": 10.0, "default": 1.0, "scale": "log"},
                                             "k": (0.1, 5.0, 1.0), "c": (-1.0, 0.5, 0.0)})
    problem = cal.Problem(M, y, R=R, prior=space)
    ref = cal.variational(problem, n_starts=2, seed=0, method="lbfgsb")
    assert ref.x[2] == pytest.approx(0.5)  # the offset's bound is active (truth 0.9 lies outside)
    for jac in ("fd", "auto"):
        lm = cal.variational(problem, n_starts=2, seed=0, method="lm", jacobian=jac)
        assert lm.J == pytest.approx(ref.J, rel=1e-8)
        np.testing.assert_allclose(lm.x, ref.x, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(lm.std, ref.std, rtol=1e-4)
        assert lm.success.all() and lm.attrs["method"] == "lm"
        assert all(np.all(np.diff(h) < 0) for h in lm.J_history)  # every accepted step lowers J
    with pytest.raises(ValueError, match="options for method='lm'"):
        cal.variational(problem, n_starts=1, options={"maxfun": 3})
    with pytest.raises(ValueError, match="method must be one of"):
        cal.variational(problem, n_starts=1, method="newton")
