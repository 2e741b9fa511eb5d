"""4D-Var (calibration.var4d) and the Lorenz-96 step emulator (ailand.lorenz96_emulator): TL and
adjoint checks, the linear-Gaussian window against BLUE, a short cycled twin, bad input.
Small configurations; the long sakov2008 comparison with DAPPER lives in benchmarks/var4d.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ailand.lorenz96 import Lorenz96
from ailand.lorenz96_emulator import L96Emulator, attractor_states, default, train
from calibration.var4d import Covariance, Var4D, adjoint_test, cycle, tangent_linear, tangent_linear_test
from calibration.var4d import lorenz96_twin as lt

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def window(step, n):
    def f(z):
        for k in range(n):
            z = step(z, 0.05 * k)
        return z
    return f


@pytest.fixture(scope="module")
def x_attr():
    return attractor_states(2, seed=5)


@pytest.fixture(scope="module")
def small_emulator():
    """A small emulator trained here in a few seconds (200 states x 40 points, 32 tanh units)."""
    em, rec = train(n_states=200, hidden=(32,), max_iter=150, seed=0)
    return em, rec


# ---------------------------------------------------------------- TL / AD of the exact model
def test_exact_lorenz96_tangent_linear_taylor_test(x_attr):
    m = Lorenz96()
    for n in (1, 4):
        t = tangent_linear_test(window(m.step, n), x_attr[0])
        assert t.passed, str(t)
        # O(eps^2) from eps = 1 down to round-off: at least 6 decades in float64
        assert t.decades >= 6 and t.eps_range[0] <= 1e-6, str(t)
        np.testing.assert_allclose(t.slope[:5], 2.0, atol=0.02)
    # a wrong TL fails: the identity is not the derivative of a step
    wrong = tangent_linear_test(lambda z: m.step(z).detach() + z - z.detach(), x_attr[0])
    assert not wrong.passed and np.all(np.abs(wrong.slope[1:5] - 1.0) < 0.05)


def test_exact_lorenz96_adjoint_to_machine_precision(x_attr):
    m = Lorenz96()
    for n in (1, 4):
        a = adjoint_test(window(m.step, n), x_attr[1], seed=n)
        assert a.passed and a.rel_error < 1e-12, str(a)
    # batched states (members, Nx) and a step with tensor forcing are any-shape functions too
    X = x_attr.clone()
    a = adjoint_test(lambda z: m.step(z, inputs=torch.full((2, 1), 8.0)), X)
    assert a.rel_error < 1e-12
    # the TL of the sum of two steps is the sum of their TLs (linearity, through the double backward)
    dx = torch.ones(40, dtype=torch.float64)
    _, t1 = tangent_linear(m.step, x_attr[0], dx)
    _, t2 = tangent_linear(lambda z: 2 * m.step(z), x_attr[0], dx)
    torch.testing.assert_close(t2, 2 * t1, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------- the emulator
def test_small_emulator_trains_fast_and_its_tl_passes_the_taylor_test(small_emulator, x_attr):
    em, rec = small_emulator
    assert rec["train_wall_s"] < 30
    # better than persistence by a factor 10 in one step, and tracks the exact model for a while
    assert rec["one_step_rel"] < 0.1, rec["one_step_rel"]
    assert rec["valid_time"]["1.0"] >= 0.4
    # smooth (tanh) network in float64: O(eps^2) over eps in [1e-7, 1e-1] at least
    t = tangent_linear_test(em.step, x_attr[0])
    assert t.passed and t.eps_range[0] <= 1e-7 and t.eps_range[1] >= 1e-1, str(t)
    assert adjoint_test(window(em.step, 4), x_attr[0]).rel_error < 1e-12
    # translation invariance: shifting the input shifts the output
    x = x_attr[0]
    torch.testing.assert_close(em(torch.roll(x, 3)), torch.roll(em(x), 3))
    # and it runs on another size and on a batch
    assert em(torch.randn(3, 17, dtype=torch.float64)).shape == (3, 17)


def test_shipped_emulator_loads_and_matches_its_record(tmp_path, x_attr):
    em = default()
    meta = em.meta
    assert meta["one_step_rel"] < 0.05 and meta["valid_time"]["1.0"] >= 1.0
    with torch.no_grad():
        ex = Lorenz96().step(x_attr)
        err = (em.step(x_attr) - ex).pow(2).mean().sqrt()
    assert float(err) < 5 * meta["one_step_rmse"]
    t = tangent_linear_test(window(em.step, 4), x_attr[0])
    assert t.passed and t.eps_range[0] <= 1e-6, str(t)
    assert adjoint_test(window(em.step, 4), x_attr[0]).rel_error < 1e-12
    # save / load round trip (weights stored in float32)
    p = em.save(tmp_path / "e.pt", meta={"note": "copy"})
    em2 = L96Emulator.load(p)
    torch.testing.assert_close(em2(x_attr), em(x_attr))
    with pytest.raises(ValueError, match="params and inputs must be None"):
        em.step(x_attr, params=torch.ones(2, 1))


# ---------------------------------------------------------------- the linear-Gaussian window
def linear_problem(n=5, m=3, seed=0):
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.3 * rng.standard_normal((n, n))
    H = rng.standard_normal((m, n))
    G = rng.standard_normal((n, n))
    B = G @ G.T + n * np.eye(n)
    Q = rng.standard_normal((m, m))
    R = 0.5 * (Q @ Q.T) + np.eye(m)
    xb = rng.standard_normal(n)
    return A, H, B, R, xb, rng


def blue(xb, B, Gs, R_blocks, ys):
    """x_a = x_b + B G^T (G B G^T + R)^-1 (y - G x_b), G = stacked H A^s."""
    G = np.vstack(Gs)
    Rf = np.zeros((G.shape[0],) * 2)
    i = 0
    for Rk in R_blocks:
        Rf[i:i + len(Rk), i:i + len(Rk)] = Rk
        i += len(Rk)
    y = np.concatenate(ys)
    return xb + B @ G.T @ np.linalg.solve(G @ B @ G.T + Rf, y - G @ xb)


@pytest.mark.parametrize("method", ["nonlinear", "incremental"])
def test_linear_gaussian_window_equals_blue(method):
    A, H, B, R, xb, rng = linear_problem()
    At, Ht = torch.as_tensor(A), torch.as_tensor(H)
    steps = [0, 2, 3]
    y = rng.standard_normal((3, 3)) * 2
    var = Var4D(lambda x, t: At @ x, lambda x: Ht @ x, B, R, n_steps=3, obs_steps=steps, method=method,
                n_outer=1, gtol=1e-10)
    r = var.analyse(xb, y)
    Gs = [H @ np.linalg.matrix_power(A, s) for s in steps]
    xa = blue(xb, B, Gs, [R] * 3, list(y))
    np.testing.assert_allclose(r.x0.numpy(), xa, rtol=0, atol=1e-7)
    assert r.n_obs == 9 and r.cost_a < r.cost_b and r.converged
    np.testing.assert_allclose(r.x_end.numpy(), np.linalg.matrix_power(A, 3) @ xa, atol=1e-6)
    # a missing observation (NaN) drops its row and column of R
    y2 = y.copy()
    y2[1, 0] = np.nan
    r2 = var.analyse(xb, y2)
    Gs2 = [Gs[0], Gs[1][1:], Gs[2]]
    xa2 = blue(xb, B, Gs2, [R, R[1:, 1:], R], [y2[0], y2[1, 1:], y2[2]])
    np.testing.assert_allclose(r2.x0.numpy(), xa2, rtol=0, atol=1e-7)
    assert r2.n_obs == 8


def test_incremental_converges_to_the_nonlinear_analysis_on_lorenz96(x_attr):
    m = Lorenz96()
    rng = np.random.default_rng(1)
    truth = x_attr[0]
    traj = window(m.step, 4)(truth)
    y = (traj + torch.as_tensor(rng.standard_normal(40)))[None].numpy()
    xb = truth + 0.3 * torch.as_tensor(rng.standard_normal(40))
    kw = dict(n_steps=4, dt=0.05, gtol=1e-9)
    a = Var4D(m.step, np.arange(40), 0.1, 1.0, **kw).analyse(xb, y)
    b = Var4D(m.step, np.arange(40), 0.1, 1.0, method="incremental", n_outer=8, **kw).analyse(xb, y)
    torch.testing.assert_close(a.x0, b.x0, rtol=0, atol=1e-6)
    assert a.cost_a < a.cost_b
    assert b.n_tl > 0 and b.n_ad > 0 and len(b.history) == 8  # Gauss-Newton: linear convergence


# ---------------------------------------------------------------- a short cycled twin
def test_cycled_lorenz96_4dvar_beats_the_free_run(small_emulator):
    from calibration.ensemble_kalman.lorenz96_twin import climatology

    data = lt.simulate(cycles=50, seed=3000, obs_every=2)  # dt_obs = 0.1, t up to 5
    free = lt.free_run_rmse(data, burn_in=2.0)
    # B = 0.01 x climatological covariance of a free run (the short truth is still in its transient)
    B = 0.01 * climatology(40, n_steps=3000)[1]
    ds = lt.var4d_twin(data, B=B, burn_in=2.0)
    # measured: rmse_a 0.43, free run 4.5; observation error 1
    assert ds.attrs["rmse_a"] < 0.6 and free > 3.0, (ds.attrs["rmse_a"], free)
    assert ds.attrs["rmse_a"] < 0.2 * free
    assert ds.attrs["rmse_a"] < ds.attrs["rmse_f"]
    assert set(ds.data_vars) >= {"xa", "xf", "xb", "xs", "rmse_a", "rmse_f", "n_iter", "wall_s", "truth"}
    assert ds["xa"].dims == ("time", "variable") and ds["wall_s"].attrs["units"] == "s"
    np.testing.assert_allclose(ds["time"].values[:2], [0.1, 0.2])
    # the small emulator's TL/AD in the incremental 4D-Var (innovations from the exact model)
    em, _ = small_emulator
    de = lt.var4d_twin(data, B=B, tl="emulator", emulator=em, burn_in=2.0, n_outer=2)
    assert de.attrs["rmse_a"] < 0.2 * free and de.attrs["rmse_a"] < 1.25 * ds.attrs["rmse_a"] + 0.05, \
        (de.attrs["rmse_a"], ds.attrs["rmse_a"])


def test_window_without_observations_returns_the_background(caplog):
    m = Lorenz96()
    xb = attractor_states(1, seed=3)[0]
    var = Var4D(m.step, np.arange(0, 40, 2), 0.1, 1.0, n_steps=2, dt=0.05)
    with caplog.at_level(logging.INFO, logger="calibration.var4d.core"):
        r = var.analyse(xb, np.full((1, 20), np.nan), t0=1.0)
    assert r.n_obs == 0 and torch.equal(r.x0, xb) and "no observations" in r.message
    torch.testing.assert_close(r.x_end, window(m.step, 2)(xb))
    assert any("no observations" in rec.getMessage() for rec in caplog.records)
    # an empty obs_steps list is the same; in a cycle, that window's analysis is its background
    r0 = Var4D(m.step, np.arange(40), 0.1, 1.0, n_steps=1, obs_steps=[]).analyse(xb, np.empty((0, 40)))
    assert r0.n_obs == 0 and torch.equal(r0.x0, xb)
    data = lt.simulate(cycles=4, seed=1)
    y = data["yy"][:, None, :].copy()
    y[2] = np.nan
    ds = cycle(Var4D(m.step, np.arange(40), 0.1, 1.0, n_steps=1, dt=0.05), data["xx"][0], y, truth=data["xx"])
    np.testing.assert_array_equal(ds["xs"][2], ds["xb"][2])
    assert list(ds["n_obs"].values) == [40, 40, 0, 40]


def test_bad_input_gives_clear_errors():
    m = Lorenz96()
    idx = np.arange(40)
    xb = np.ones(40)
    with pytest.raises(ValueError, match="R: variances must be > 0"):
        Var4D(m.step, idx, 0.1, -np.ones(40), n_steps=1)
    with pytest.raises(ValueError, match="R: the variance must be > 0"):
        Var4D(m.step, idx, 0.1, -1.0, n_steps=1)
    with pytest.raises(ValueError, match="B: variances must be > 0"):
        Var4D(m.step, idx, np.r_[np.ones(39), -1.0], 1.0, n_steps=1)
    with pytest.raises(ValueError, match="positive definite"):
        Var4D(m.step, idx, 2 * np.ones((40, 40)) - np.eye(40), 1.0, n_steps=1)  # eigenvalues 79 and -1
    with pytest.raises(ValueError, match="symmetric"):
        Var4D(m.step, idx, np.triu(np.ones((40, 40))), 1.0, n_steps=1)
    with pytest.raises(ValueError, match="B must have 40 variances"):
        Var4D(m.step, idx, np.ones(39), 1.0, n_steps=1).analyse(xb, np.zeros((1, 40)))
    with pytest.raises(ValueError, match=r"y must be \(n_obs_times, m\) = \(1, 40\)"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=1).analyse(xb, np.zeros((2, 40)))
    with pytest.raises(ValueError, match="R must have 40 variances"):
        Var4D(m.step, idx, 0.1, np.ones(20), n_steps=1).analyse(xb, np.zeros((1, 40)))
    with pytest.raises(ValueError, match="step\\(x, t\\) must return a tensor of the state's shape"):
        Var4D(lambda x, t: x[:-1], idx[:5], 0.1, 1.0, n_steps=1).analyse(xb, np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"obs_op: observation indices must lie in \[0, 40\)"):
        Var4D(m.step, np.arange(38, 42), 0.1, 1.0, n_steps=1).analyse(xb, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="obs_op does not fit a state of 40"):
        Var4D(m.step, np.ones((3, 39)), 0.1, 1.0, n_steps=1).analyse(xb, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="obs_steps must be increasing integers in \\[0, n_steps=2\\]"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=2, obs_steps=[1, 3])
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=0)
    with pytest.raises(ValueError, match="method must be one of"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=1, method="3dvar")
    with pytest.raises(ValueError, match="linear_step is used by method='incremental' only"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=1, linear_step=m.step)
    with pytest.raises(ValueError, match="infinite"):
        Var4D(m.step, idx, 0.1, 1.0, n_steps=1).analyse(xb, np.full((1, 40), np.inf))
    with pytest.raises(ValueError, match="tl must equal model"):
        lt.var4d_twin(lt.simulate(3), tl="emulator", method="nonlinear")
    with pytest.raises(ValueError, match="decreasing"):
        tangent_linear_test(m.step, xb, eps=[1e-3, 1e-2])
    with pytest.raises(ValueError, match="dx must have the shape of x"):
        tangent_linear(m.step, torch.ones(40, dtype=torch.float64), torch.ones(39, dtype=torch.float64))
    with pytest.raises(ValueError, match="activation"):
        L96Emulator(activation="relu")
    c = Covariance(np.diag([1.0, 4.0]), 2)
    torch.testing.assert_close(c.dense(), torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64)))
