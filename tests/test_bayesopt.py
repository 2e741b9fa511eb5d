"""Bayesian optimisation (calibration.bayesopt): Branin and Hartmann6 optima, better than
random search on average, the result contract, seeding, infeasible points, a Problem, errors.

Budgets (stated in README "Bayesian optimisation"): within 1 % of the optimum in 40
evaluations on Branin (seed 0) and 100 on Hartmann6 (seed 0, the first seed, not one picked
because it passes); better than random search of the same budget, 20 evaluations, on
average over 3 seeds for both. A BO run is prefix-consistent (its first k points do not
depend on the budget; tested below), so the budget-20 comparison reads the longer runs'
traces. On Hartmann6, LogEI first settles in the local minimum -3.2032 (3.6 % above) on
most seeds; the stagnation-triggered exploration (``n_explore``) then searches outside that
basin, which is what brings seed 0 to the global one. ``benchmarks/bayesopt.py`` reports
the success rates over 10 seeds (not all succeed). Test time is the limit here: the whole
file must stay under a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

import calibration as cal
from calibration.bayesopt import Objective
from calibration.test_functions import BRANIN_BOUNDS, BRANIN_MIN, HARTMANN6_ARGMIN, HARTMANN6_MIN, branin, hartmann6


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_test_functions_have_the_stated_minima():
    np.testing.assert_allclose(branin(np.array([[-np.pi, 12.275], [np.pi, 2.275], [9.42478, 2.475]])), BRANIN_MIN, atol=1e-6)
    xh = HARTMANN6_ARGMIN[None]
    np.testing.assert_allclose(hartmann6(xh), HARTMANN6_MIN, atol=1e-5)


COMPARE_BUDGET = 20
HARTMANN6_BUDGET = 100


def _runs(f, bounds, first_seed, first_budget, other_seeds):
    """BO: ``first_seed`` with ``first_budget``, the others with COMPARE_BUDGET; random
    search with COMPARE_BUDGET on the same seeds."""
    bo = [cal.bayesian_optimisation(f, budget=first_budget, bounds=bounds, seed=first_seed)]
    bo += [cal.bayesian_optimisation(f, budget=COMPARE_BUDGET, bounds=bounds, seed=s) for s in other_seeds]
    rs = [cal.random_search(f, budget=COMPARE_BUDGET, bounds=bounds, seed=s) for s in (first_seed, *other_seeds)]
    return bo, rs


@pytest.fixture(scope="module")
def branin_runs():
    return _runs(branin, BRANIN_BOUNDS, 0, 40, (1, 2))


@pytest.fixture(scope="module")
def hartmann_runs():
    return _runs(hartmann6, [[0.0, 1.0]] * 6, 0, HARTMANN6_BUDGET, (1, 2))


def _better_on_average(bo, rs):
    bo_J = [r.best_so_far[COMPARE_BUDGET - 1] for r in bo]  # the best after COMPARE_BUDGET evaluations
    rs_J = [r.best_J for r in rs]
    assert len(bo_J) == len(rs_J) >= 3 and all(r.n_evaluations == COMPARE_BUDGET for r in rs)
    assert np.mean(bo_J) < np.mean(rs_J), (bo_J, rs_J)


def test_branin_within_one_percent_and_better_than_random_search(branin_runs):
    bo, rs = branin_runs
    r = bo[0]
    assert r.n_evaluations == r.n_forward_runs == 40
    assert r.best_J <= BRANIN_MIN * 1.01, r.best_J
    np.testing.assert_allclose(branin(r.best_x[None])[0], r.best_J)
    _better_on_average(bo, rs)


def test_hartmann6_within_one_percent_and_better_than_random_search(hartmann_runs):
    bo, rs = hartmann_runs
    r = bo[0]
    assert r.n_evaluations == HARTMANN6_BUDGET
    assert r.best_J <= HARTMANN6_MIN + 0.01 * abs(HARTMANN6_MIN), (r.best_J, r.attrs["n_explore"])
    _better_on_average(bo, rs)
    assert np.all(np.diff(r.best_so_far) <= 0) and r.best_so_far[-1] == r.best_J
    assert (r.batch[:13] == 0).all() and (r.batch[13:] == np.arange(1, HARTMANN6_BUDGET - 12)).all()  # n_init = 2 d + 1
    assert r.attrs["explore"] and r.attrs["n_explore"] >= 1  # it left the local basin by exploring
    assert r.to_xarray().attrs["n_explore"] == r.attrs["n_explore"]


def test_result_contract_netcdf_round_trip_and_plot(branin_runs, tmp_path):
    r = branin_runs[0][0]
    ds = r.to_xarray()
    assert ds["posterior_mean"].dims == ds["posterior_std"].dims == ("parameter",)
    assert list(ds["parameter"].values) == ["x0", "x1"]
    np.testing.assert_array_equal(ds["posterior_mean"].values, r.best_x)
    assert np.isnan(ds["posterior_std"].values).all() and "point estimate" in ds.attrs["posterior"]
    assert ds.attrs["method"] == "bayesian_optimisation" and ds.attrs["n_forward_runs"] == 40
    assert ds["x"].dims == ("evaluation", "parameter") and ds["J"].shape == ds["best_J"].shape == (40,)
    assert r.best_params == {"x0": r.best_x[0], "x1": r.best_x[1]}
    path = r.to_netcdf(tmp_path / "bo" / "bo.nc")
    # read back in a child process (netCDF4 reads in this process upset later zarr writers, see test_calibration)
    code = ("import json, sys, xarray as xr; ds = xr.load_dataset(sys.argv[1]); "
            "print(json.dumps({'mean': ds.posterior_mean.values.tolist(), 'J': ds.J.values.tolist(), "
            "'names': [str(p) for p in ds.parameter.values], 'method': ds.attrs['method'], "
            "'runs': int(ds.attrs['n_forward_runs']), 'std_nan': bool(ds.posterior_std.isnull().all())}))")
    back = json.loads(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout)
    assert back["names"] == ["x0", "x1"] and back["method"] == "bayesian_optimisation" and back["runs"] == 40
    np.testing.assert_array_equal(back["mean"], r.best_x)
    np.testing.assert_array_equal(back["J"], r.J)
    assert back["std_nan"]
    lhs = cal.lhs_search(branin, 40, seed=0, bounds=BRANIN_BOUNDS)
    assert lhs.to_xarray().attrs["method"] == "lhs_search" and branin_runs[1][0].method == "random_search"
    fig = r.plot(tmp_path / "bo.png", compare=[branin_runs[1], lhs], optimum=BRANIN_MIN)
    assert (tmp_path / "bo.png").stat().st_size > 0 and fig.axes[0].get_yscale() == "log"
    # the GP of all evaluations predicts J at the evaluated points
    mean, std = r.predict(r.X[:5])
    np.testing.assert_allclose(mean, r.J[:5], rtol=0.05, atol=0.05 * np.ptp(r.J))
    assert np.all(std >= 0)


def test_seeded_runs_repeat_and_seeds_differ():
    kw = dict(budget=9, bounds=BRANIN_BOUNDS, n_init=5)
    a, b = (cal.bayesian_optimisation(branin, seed=7, **kw) for _ in range(2))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.J, b.J)
    short = cal.bayesian_optimisation(branin, seed=7, **{**kw, "budget": 7})  # prefix-consistent
    np.testing.assert_array_equal(short.X, a.X[:7])
    c = cal.bayesian_optimisation(branin, seed=8, **{**kw, "budget": 5})  # the design alone
    assert not np.allclose(a.X[:5], c.X)
    for search in (cal.random_search, cal.lhs_search):
        np.testing.assert_array_equal(search(branin, 20, seed=3, bounds=BRANIN_BOUNDS).X,
                                      search(branin, 20, seed=3, bounds=BRANIN_BOUNDS).X)


def test_batches_use_qlogei_and_fit_the_budget():
    r = cal.bayesian_optimisation(branin, budget=14, batch_size=4, n_init=5, bounds=BRANIN_BOUNDS, seed=0)
    assert r.n_evaluations == 14
    np.testing.assert_array_equal(r.batch, [0] * 5 + [1] * 4 + [2] * 4 + [3])  # the last batch is cut to the budget
    assert "qLogExpectedImprovement" in r.attrs["acquisition"]
    assert r.best_J < r.J[:5].min()  # the batches improved on the design


def test_nan_and_inf_costs_are_handled(caplog):
    def holey(x):
        J = branin(x)
        J[x[:, 0] > 6.0] = np.nan  # a failed run
        J[x[:, 1] > 12.0] = np.inf  # an infeasible point
        return J

    with caplog.at_level(logging.WARNING, logger="calibration.bayesopt"):
        r = cal.bayesian_optimisation(holey, budget=16, bounds=BRANIN_BOUNDS, seed=0)
    assert r.n_infeasible > 0 and (~np.isfinite(r.J)).sum() == r.n_infeasible
    assert "non-finite J" in caplog.text
    assert np.isfinite(r.best_J) and r.best_J == np.nanmin(np.where(np.isfinite(r.J), r.J, np.nan))
    b = r.best_so_far[np.isfinite(r.best_so_far)]  # NaN until the first finite J
    assert np.all(np.diff(b) <= 0) and b.size >= r.n_evaluations - np.argmax(np.isfinite(r.J))
    assert r.to_xarray().attrs["n_infeasible"] == r.n_infeasible
    assert r.best_J < 5.0  # it still found the good region
    with pytest.raises(RuntimeError, match="NaN/inf"):
        cal.bayesian_optimisation(lambda x: np.full(len(x), np.nan), budget=6, n_init=3, bounds=BRANIN_BOUNDS)


def test_bo_finds_the_minimum_of_a_linear_gaussian_problem():
    rng = np.random.default_rng(1)
    G = torch.as_tensor(rng.normal(size=(6, 2)))
    x_true = np.array([0.8, -0.4])
    y = G.numpy() @ x_true + 0.05 * rng.normal(size=6)
    x_b, B = np.array([0.5, 0.0]), np.diag([1.0, 0.5])
    problem = cal.Problem(lambda x: x @ G.T, y, obs_std=0.05, prior=(x_b, B), bounds=[[-2.0, 2.0], [-2.0, 2.0]])
    Ri, Bi = np.eye(6) / 0.05**2, np.linalg.inv(B)
    Gn = G.numpy()
    x_a = np.linalg.solve(Gn.T @ Ri @ Gn + Bi, Gn.T @ Ri @ y + Bi @ x_b)  # the analytic minimum of J
    J_a = float(problem.cost(x_a))
    runs0 = problem.n_forward_runs
    r = cal.bayesian_optimisation(problem, budget=25, seed=0)
    assert r.names == ["x0", "x1"] and r.n_forward_runs == problem.n_forward_runs - runs0 == 25
    np.testing.assert_allclose(r.best_x, x_a, atol=0.02 * 4)  # 2 % of the box width
    assert r.best_J - J_a <= 0.01 * (np.median(r.J) - J_a), (r.best_J, J_a)
    rs = cal.random_search(problem, 25, seed=0)
    assert rs.best_J > r.best_J


def test_log_scale_parameters_are_searched_in_log_space():
    import ailand

    space = ailand.ParameterSpace.default().subset(["RSMIN", "ALB_VEG"])
    problem = cal.Problem(lambda x: torch.stack([torch.log(x[:, 0]), x[:, 1]], 1), np.array([np.log(150.0), 0.22]),
                          obs_std=[0.1, 0.01], prior=space)
    assert problem.log.tolist() == [True, False]
    obj = Objective.make(problem)
    lo, hi = space.bounds[0]
    np.testing.assert_allclose(obj.from_unit(np.array([[0.5, 0.5]]))[0], [np.sqrt(lo * hi), space.bounds[1].mean()])
    np.testing.assert_allclose(obj.to_unit(obj.from_unit(np.array([[0.25, 0.75]]))), [[0.25, 0.75]])
    r = cal.random_search(problem, 8, seed=0)
    assert r.names == ["RSMIN", "ALB_VEG"] and r.log.tolist() == [True, False] and problem.inside(r.X).all()


def test_bad_input_gives_clear_errors():
    f, b = branin, BRANIN_BOUNDS
    with pytest.raises(ValueError, match="budget = 4 is smaller than the initial design n_init = 5"):
        cal.bayesian_optimisation(f, budget=4, bounds=b)
    with pytest.raises(ValueError, match="budget = 6 is smaller than the initial design n_init = 8"):
        cal.bayesian_optimisation(f, budget=6, n_init=8, bounds=b)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        cal.bayesian_optimisation(f, budget=10, batch_size=0, bounds=b)
    with pytest.raises(ValueError, match="budget must be an integer"):
        cal.random_search(f, budget=2.5, bounds=b)
    with pytest.raises(ValueError, match="needs bounds"):
        cal.bayesian_optimisation(f, budget=10)
    with pytest.raises(ValueError, match=r"bounds must be \(d, 2\)"):
        cal.bayesian_optimisation(f, budget=10, bounds=[-5, 10])
    with pytest.raises(ValueError, match="finite min < max"):
        cal.bayesian_optimisation(f, budget=10, bounds=[[10, -5], [0, 15]])
    with pytest.raises(ValueError, match="finite min < max"):
        cal.lhs_search(f, 10, bounds=[[-5, np.inf], [0, 15]])
    with pytest.raises(ValueError, match="acquisition must be one of"):
        cal.bayesian_optimisation(f, budget=10, bounds=b, acquisition="ucb")
    with pytest.raises(ValueError, match=r"returned 1 values for 5 points"):
        cal.bayesian_optimisation(lambda x: np.zeros(1), budget=10, bounds=b)
    with pytest.raises(TypeError, match="Problem or a callable"):
        cal.bayesian_optimisation("branin", budget=10, bounds=b)
    problem = cal.Problem(lambda x: x, np.zeros(2), obs_std=1.0, bounds=b)
    with pytest.raises(ValueError, match="brings its own bounds"):
        cal.bayesian_optimisation(problem, budget=10, bounds=b)
    unbounded = cal.Problem(lambda x: x, np.zeros(2), obs_std=1.0, prior=(np.zeros(2), np.eye(2)))
    with pytest.raises(ValueError, match=r"leaves \['x0', 'x1'\] unbounded"):
        cal.bayesian_optimisation(unbounded, budget=10)


def test_twin_table_marks_bo_as_a_point_estimate():
    k = np.array([[1.0, 2.0], [1.1, 2.1]])
    res = cal.TwinResult(names=["a", "b"], methods=["variational", "bayesopt"], truth=np.array([1.0, 2.0]),
                         prior_mean=np.zeros(2), prior_std=np.ones(2), posterior_mean=k,
                         posterior_std=np.array([[0.1, 0.1], [np.nan, np.nan]]), rmse_before=1.0,
                         rmse_after=np.array([0.1, 0.1]), noise=0.1, noise_rms=0.1, n_forward_runs=np.array([10, 30]),
                         wall_time=np.array([1.0, 2.0]), y=np.zeros(3), y_truth=np.zeros(3), obs_std=np.ones(3))
    table = res.table()
    assert "BO gives a point estimate" in table and "outside 2 sigma" not in table
    assert "bayesopt" in cal.twin.METHODS
