"""EKI and ES-MDA on a Problem (:mod:`calibration.ensemble_kalman.inversion`).

Linear-Gaussian problem (d = 3, m = 8, full prior covariance, no bounds), where the posterior
is known: ``A = (H^T R^-1 H + B^-1)^-1``, ``x_a = x_b + A H^T R^-1 (y - H x_b)`` (= argmin J).

Monte-Carlo tolerance of the ES-MDA check (N = 5000 members): the i.i.d. standard error of a
mean is ``sigma_a / sqrt(N)`` (0.014 sigma_a) and of a covariance entry
``sqrt((A_ii A_jj + A_ij^2) / N)``. ES-MDA's ensemble is not i.i.d. (the gain is estimated from
the same ensemble, four times), so its mean error is larger than the i.i.d. one: over seeds
0-7 the largest mean error was 3.6 and the largest covariance error 2.1 standard errors. We
allow 5 and 4 (and the std within 4 / sqrt(2 N) relative).

Toy ecLand twin: FR-Fon, 20 days of 3-hourly float64 physics without spin-up, RSMIN, LAI_SCALE
and ALB_VEG from daily Qle and Qh with 10 % noise (as benchmarks/calibration.py's truth).
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import xarray as xr

import ailand
import calibration as cal
from calibration.ensemble_kalman.inversion import BoundsTransform, data_misfit_step, eki, esmda

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------ linear-Gaussian problem
def _linear(seed=1, bounds=None, nan_above=None, infeasible_below=None):
    rng = np.random.default_rng(seed)
    d, m = 3, 8
    H = rng.normal(size=(m, d))
    Ht = torch.as_tensor(H)

    class Linear:
        n_calls = 0

        def __call__(self, x):
            self.n_calls += 1
            y = torch.as_tensor(x) @ Ht.T
            if nan_above is not None:  # the "model" fails in part of the space
                y = torch.where(torch.as_tensor(x)[:, :1] > nan_above, torch.nan, y)
            return y

    fwd = Linear()
    if infeasible_below is not None:
        fwd.feasible = lambda x: np.asarray(x)[:, 1] >= infeasible_below
    xb = np.array([1.0, -0.5, 2.0])
    B = np.diag([0.5, 1.0, 0.3]) ** 2 + 0.02
    R = np.diag(rng.uniform(0.2, 0.5, m) ** 2)
    xt = xb + rng.multivariate_normal(np.zeros(d), B)
    y = H @ xt + rng.multivariate_normal(np.zeros(m), R)
    p = cal.Problem(fwd, y, R=R, prior=(xb, B), bounds=bounds, names=["a", "b", "c"])
    A = np.linalg.inv(H.T @ np.linalg.solve(R, H) + np.linalg.inv(B))
    xa = xb + A @ H.T @ np.linalg.solve(R, y - H @ xb)
    return p, xa, A, H, R, y


def test_esmda_linear_gaussian_gives_the_analytic_posterior():
    p, xa, A, *_ = _linear()
    N = 5000
    res = esmda(p, n_ensemble=N, seed=0)
    sa = np.sqrt(np.diag(A))
    se_mean = sa / np.sqrt(N)
    se_cov = np.sqrt((np.outer(np.diag(A), np.diag(A)) + A**2) / N)
    assert np.all(np.abs(res.mean - xa) <= 5 * se_mean), (res.mean - xa) / se_mean
    assert np.all(np.abs(res.cov - A) <= 4 * se_cov), (res.cov - A) / se_cov
    np.testing.assert_allclose(res.std, sa, rtol=4 / np.sqrt(2 * N))
    assert res.n_forward_runs == 5 * N  # 4 alphas + the final evaluation
    np.testing.assert_allclose(res.algorithm_time, [0, 0.25, 0.5, 0.75, 1.0])


def test_eki_linear_reaches_the_posterior_at_algorithm_time_one():
    """EKP's Inversion(): prior only in the initial ensemble; at t = 1 the ensemble mean is the
    minimiser of J (with its prior term) within Monte-Carlo error, the spread the posterior's."""
    p, xa, A, *_ = _linear()
    N = 5000
    res = eki(p, n_ensemble=N, seed=0)
    assert res.algorithm_time[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(res.algorithm_time) > 0) and len(res.step) <= 10
    sa = np.sqrt(np.diag(A))
    assert np.all(np.abs(res.mean - xa) <= 5 * sa / np.sqrt(N)), (res.mean - xa) / (sa / np.sqrt(N))
    np.testing.assert_allclose(res.std, sa, rtol=4 / np.sqrt(2 * N) + 0.01)
    # the misfit falls from the prior ensemble's to about m / 2
    assert res.misfit[-1] < 0.5 * res.misfit[0]


def test_eki_tikhonov_converges_to_the_minimiser_of_J():
    """prior='tikhonov' (EKP's impose_prior) run on past t = 1: the ensemble collapses onto
    argmin J including the prior term (observed 0.007 sigma_a with this seed; allowed 0.03)."""
    p, xa, A, *_ = _linear()
    res = eki(p, n_ensemble=30, n_iterations=30, prior="tikhonov", on_terminate="continue", seed=0)
    sa = np.sqrt(np.diag(A))
    assert np.all(np.abs(res.mean - xa) <= 0.03 * sa), (res.mean - xa) / sa
    assert np.all(res.std < 0.05 * sa)
    assert res.algorithm_time[-1] > 100  # the controller's steps grow once the ensemble has collapsed


def test_eki_without_prior_term_continued_converges_to_least_squares():
    p, xa, A, H, R, y = _linear()
    res = eki(p, n_ensemble=30, n_iterations=30, on_terminate="continue", seed=0)
    Li = np.linalg.inv(np.linalg.cholesky(R))
    x_ls = np.linalg.lstsq(Li @ H, Li @ y, rcond=None)[0]
    np.testing.assert_allclose(res.mean, x_ls, atol=1e-4 * np.sqrt(np.diag(A)).min())


def test_data_misfit_controller_formula():
    phi = np.array([3.0, 5.0, 10.0, 2.0])
    m = 8
    q = max(m / (2 * phi.mean()), np.sqrt(m / (2 * phi.var(ddof=1))))
    assert data_misfit_step(phi, m, 0.0) == pytest.approx(min(q, 1.0))
    assert data_misfit_step(phi, m, 0.9) == pytest.approx(0.1)  # capped to reach t = 1 exactly
    assert data_misfit_step(phi, m, 1.0) == pytest.approx(q)  # past termination ("continue")
    assert data_misfit_step(1000 * phi, m, 0.0) < 0.05  # large misfit: small step


def test_bounds_are_respected_by_the_transform_not_clipping():
    # the data pull b 2 units below its lower bound (5 prior sd of the data's precision): every
    # member stays strictly inside, none piled up on the bound (as clipping would do)
    p, *_ = _linear(bounds=[[-5.0, 5.0], [-0.6, 3.0], [-5.0, 5.0]])
    p.y = p.y - 2 * p.forward(np.array([[0.0, 1.0, 0.0]]))[0].numpy()
    for res in (eki(p, n_ensemble=30, seed=0), esmda(p, n_ensemble=30, seed=0)):
        E = res.ensembles.reshape(-1, 3)
        E = E[np.isfinite(E).all(1)]
        assert np.all(E > p.bounds[:, 0]) and np.all(E < p.bounds[:, 1])
        assert len(np.unique(E[:, 1])) == len(E[:, 1])
        assert res.mean[1] < -0.5  # pushed towards the bound
    tf = BoundsTransform(np.array([[-1.0, 2.0], [0.0, np.inf], [-np.inf, 1.0], [-np.inf, np.inf]]))
    u = np.array([[0.3, 2.0, -4.0, 7.0]])
    np.testing.assert_allclose(tf.from_w(tf.to_w(u)), u, rtol=1e-12)


def test_failed_members_are_redrawn_by_eki_and_dropped_by_esmda(caplog):
    # NaN outputs where a > 1.3 (about a third of the prior) and b < -1.8 infeasible (a constraint)
    p, xa, A, *_ = _linear(nan_above=1.3, infeasible_below=-1.8)
    with caplog.at_level(logging.WARNING, logger="calibration.ensemble_kalman.inversion"):
        r = eki(p, n_ensemble=40, seed=0)
    assert r.failed[0].sum() >= 5 and "members failed" in caplog.text
    assert np.isfinite(r.ensembles).all()  # redrawn: the ensemble keeps its 40 members
    assert r.algorithm_time[-1] == pytest.approx(1.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calibration.ensemble_kalman.inversion"):
        r = esmda(p, n_ensemble=40, seed=0)
    n_dropped = int(r.failed[:-1].sum())
    assert n_dropped >= 5 and "dropped" in caplog.text
    assert np.isnan(r.ensembles[-1]).any(1).sum() == n_dropped
    assert len(r.posterior_ensemble) == 40 - r.failed.sum()
    assert np.isfinite(r.mean).all() and np.isfinite(r.to_xarray()["posterior_cov"]).all()
    # all but one member failing: a clear error
    p1, *_ = _linear(nan_above=-100.0)
    with pytest.raises(RuntimeError, match="at least 2"):
        eki(p1, n_ensemble=10, seed=0)
    with pytest.raises(RuntimeError, match="at least 2"):
        esmda(p1, n_ensemble=10, seed=0)


@pytest.mark.parametrize("call, word", [
    (lambda p: eki(p, n_ensemble=1), "n_ensemble"),
    (lambda p: esmda(p, n_ensemble=1), "n_ensemble"),
    (lambda p: esmda(p, alphas=(4, 4, 4)), "alphas"),
    (lambda p: esmda(p, alphas=(2, -2)), "alphas"),
    (lambda p: esmda(p, ensemble=np.ones((1, 3))), "ensemble"),
    (lambda p: eki(p, prior="bayes"), "prior"),
    (lambda p: eki(p, on_terminate="continue"), "n_iterations"),
    (lambda p: esmda(p, n_ensemble=10, perturbations=np.zeros((4, 10, 3))), "perturbations"),
])
def test_bad_arguments_raise_a_value_error_naming_them(call, word):
    p, *_ = _linear()
    with pytest.raises(ValueError, match=word):
        call(p)


def test_same_seed_same_numbers():
    p, *_ = _linear()
    for f in (eki, esmda):
        a, b, c = f(p, n_ensemble=20, seed=3), f(p, n_ensemble=20, seed=3), f(p, n_ensemble=20, seed=4)
        np.testing.assert_array_equal(a.ensembles, b.ensembles)
        np.testing.assert_array_equal(a.misfit_member, b.misfit_member)
        assert not np.allclose(a.mean, c.mean)


def test_esmda_equals_iterative_ensemble_smoother_on_the_same_draws():
    """Equinor's iterative_ensemble_smoother (requirements.txt, test-only reference), exact
    inversion (``truncation=1``), on our initial ensemble and perturbations."""
    import iterative_ensemble_smoother as ies

    p, *_ = _linear()
    N, alphas = 25, np.array([9.333333333333334, 7.0, 4.0, 2.0])
    alphas = alphas / np.sum(1 / alphas)  # make the inverses sum to one exactly (as ies normalises)
    rng = np.random.default_rng(7)
    X0 = p.x_b + rng.standard_normal((N, 3)) @ np.linalg.cholesky(p.B).T
    L = np.linalg.cholesky(p.R)
    pert = rng.standard_normal((len(alphas), N, p.m)) @ L.T  # N(0, R) draws
    ours = esmda(p, alphas=alphas, ensemble=X0, perturbations=pert, evaluate_final=False)

    smoother = ies.ESMDA(p.R.copy(), p.y.copy(), alpha=alphas, seed=0)
    U = p.to_u(X0).T  # (d, N); unbounded: our w is the standardised control u
    for i in range(len(alphas)):
        G = p.forward(p.from_u(U.T)).numpy().T  # (m, N)
        smoother.prepare_assimilation(Y=G, truncation=1.0, observation_perturbations=pert[i].T.copy())
        U = smoother.assimilate_batch(X=U)
    np.testing.assert_allclose(ours.ensembles[-1], p.from_u(U.T), rtol=1e-10, atol=1e-12)
    for k in range(1, len(alphas)):  # the same path, not just the same end
        assert not np.allclose(ours.ensembles[k], ours.ensembles[k - 1])


def test_result_contract_netcdf_and_plot(tmp_path):
    p, *_ = _linear()
    res = eki(p, n_ensemble=12, seed=0)
    ds = res.to_xarray()
    for v in ("posterior_mean", "posterior_std", "posterior_cov", "ensemble", "misfit", "step", "algorithm_time"):
        assert v in ds, v
    assert ds["posterior_cov"].dims == ("parameter", "parameter_")
    assert ds["ensemble"].dims == ("iteration", "member", "parameter")
    assert ds.attrs["method"] == "eki" and ds.attrs["n_forward_runs"] == res.n_forward_runs == 12 * len(ds["iteration"])
    np.testing.assert_allclose(ds["posterior_std"], np.sqrt(np.diag(ds["posterior_cov"])))
    path = res.to_netcdf(tmp_path / "eki.nc")
    back = xr.open_dataset(path)
    np.testing.assert_allclose(back["ensemble"], ds["ensemble"])
    back.close()
    fig = res.plot(tmp_path / "eki.png")
    assert (tmp_path / "eki.png").stat().st_size > 0 and len(fig.axes) >= 4


def test_progress_bar(capsys):
    p, *_ = _linear()
    esmda(p, n_ensemble=10, progress=True)
    assert "esmda" in capsys.readouterr().err


# ------------------------------------------------------------------ toy ecLand twin
TRUTH = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16}  # defaults 100, 1.0, 0.20


@pytest.fixture(scope="module")
def twin():
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False, dt=10800.0)
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-20", freq="3h")
    space = model.space.subset(list(TRUTH))
    return cal.TwinExperiment(model, forcing, space, TRUTH, cal.Observe(["Qle", "Qh"], freq="1D"),
                              noise=0.1, seed=0, spinup_years=0)


def test_twin_esmda_and_eki_contain_the_truth(twin):
    res = twin.run(methods=("esmda", "eki"))
    assert res.methods == ["esmda", "eki"]
    k = res.methods.index("esmda")
    assert res.inside_2sigma[k].all(), res.table()
    assert np.all(res.posterior_std[k] < res.prior_std), res.table()
    assert res.rmse_after[k] < 0.5 * res.rmse_before
    assert res.n_forward_runs[k] == 30 * 5  # 10 d members, 4 alphas + the final evaluation
    e = res.results["eki"]
    assert e.algorithm_time[-1] == pytest.approx(1.0) and res.n_forward_runs[1] == e.n_forward_runs
    assert np.isfinite(res.posterior_std[1]).all() and res.rmse_after[1] < 0.5 * res.rmse_before


def test_twin_cli_eki_esmda(tmp_path, capsys):
    from ailand import cli

    out = tmp_path / "twin"
    rc = cli.main(["twin", "--sites", "FR-Fon", "--start", "2020-06-01", "--end", "2020-06-10", "--dt", "10800",
                   "--spinup-years", "0", "--params", "RSMIN", "--truth", "RSMIN=180", "--methods", "eki,esmda",
                   "--n-ensemble", "8", "--n-iterations", "2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| parameter | truth | prior | eki | esmda |" in printed
    assert "eki: obs RMSE" in printed and "esmda: obs RMSE" in printed
    ds = xr.open_dataset(out / "twin.nc")
    assert list(ds["method"].values) == ["eki", "esmda"] and ds.attrs["n_forward_runs_esmda"] == 8 * 3
    ds.close()
    rc = cli.main(["twin", "--methods", "eki", "--n-ensemble", "1", "--out", str(tmp_path / "x")])
    assert rc != 0 and "--n-ensemble" in capsys.readouterr().err
