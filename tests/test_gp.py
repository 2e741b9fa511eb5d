"""GPEmulator: batched exact GPs for many outputs (calibration/history_matching/gp.py)."""

import math

import numpy as np
import pytest
import torch
import xarray as xr

import gpytorch
from calibration.history_matching.gp import GPEmulator, _neg_log_posterior


def _sin_data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = np.sort(rng.random(n))[:, None]
    return X, np.sin(6 * X[:, 0])


@pytest.fixture(scope="module")
def sin_gp():
    X, y = _sin_data()
    return GPEmulator.fit(X, y, output_names=["sin"]), X, y


@pytest.fixture(scope="module")
def multi():
    """20 runs in 2 inputs, 3 outputs of different character."""
    rng = np.random.default_rng(1)
    X = rng.random((20, 2))
    Y = np.stack([np.sin(3 * X[:, 0]) + X[:, 1], np.exp(X @ [1.0, -0.5]), 5.0 * np.cos(4 * X[:, 1]) * X[:, 0]], 1)
    return X, Y


def test_1d_interpolates_and_covers(sin_gp):
    gp, X, y = sin_gp
    assert (gp.n_outputs, gp.d, gp.n_train, gp.output_names) == (1, 1, 12, ["sin"])
    mu, var = gp.predict(X)
    assert mu.shape == var.shape == (12, 1) and mu.dtype == np.float64
    np.testing.assert_allclose(mu[:, 0], y, atol=1e-3)  # interpolates (tiny learnt nugget)
    grid = np.linspace(0, 1, 201)[:, None]
    mu, var = gp.predict(grid)
    truth = np.sin(6 * grid[:, 0])
    lo, hi = X.min(), X.max()
    inside = (grid[:, 0] >= lo) & (grid[:, 0] <= hi)
    assert np.abs(mu[inside, 0] - truth[inside]).max() < 0.05
    assert (var >= 0).all()
    assert (np.abs(mu[:, 0] - truth) <= 3 * np.sqrt(var[:, 0]) + 1e-9).all()
    # with noise: the variance grows by exactly the fitted (destandardised) noise
    _, var_n = gp.predict(grid, include_noise=True)
    noise = gp.hyperparameters().noise.values[0] * gp._t_std.numpy()[0] ** 2
    np.testing.assert_allclose(var_n - var, noise, rtol=1e-9)


def test_predict_matches_gpytorch_posterior(sin_gp):
    """The cached-solve prediction equals gpytorch's own exact posterior (same model)."""
    gp, X, _ = sin_gp
    g = np.linspace(0, 1, 37)[:, None]
    mu, var = gp.predict(g)
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        post = gp.model(torch.as_tensor(g).expand(1, *g.shape))
    s, c = gp._t_std.numpy()[0], gp._t_mean.numpy()[0]
    np.testing.assert_allclose(mu[:, 0], post.mean.numpy()[0] * s + c, atol=1e-10)
    np.testing.assert_allclose(var[:, 0], post.variance.numpy()[0] * s**2, atol=1e-10)


def test_loss_equals_gpytorch_mll(multi):
    X, Y = multi
    gp = GPEmulator.fit(X, Y, n_iter=10, lbfgs_iter=0)
    gp.model.train()
    try:
        Xb = gp.model.train_inputs[0]
        Z = gp.model.train_targets
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(gp.model.likelihood, gp.model)
        ours = _neg_log_posterior(gp.model, Xb, Z)
        ref = -mll(gp.model(Xb), Z)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    finally:
        gp.model.eval()


def test_batched_equals_single_output(multi):
    X, Y = multi
    grid = np.random.default_rng(5).random((30, 2))
    # Adam only: each output's optimisation is exactly its own
    kw = dict(n_iter=40, lbfgs_iter=0, n_restarts=2, seed=3)
    both = GPEmulator.fit(X, Y, **kw)
    mu, var = both.predict(grid)
    for j in range(Y.shape[1]):
        one = GPEmulator.fit(X, Y[:, j], **kw)
        m1, v1 = one.predict(grid)
        np.testing.assert_allclose(mu[:, j], m1[:, 0], rtol=1e-8, atol=1e-10 * np.abs(Y[:, j]).max())
        np.testing.assert_allclose(var[:, j], v1[:, 0], rtol=1e-6, atol=1e-12)
    # default fit (Adam + L-BFGS polish on the summed loss): same optimum to tolerance
    both = GPEmulator.fit(X, Y)
    mu, var = both.predict(grid)
    for j in (2,):
        m1, v1 = GPEmulator.fit(X, Y[:, [j]]).predict(grid)
        sd = Y[:, j].std()
        np.testing.assert_allclose(mu[:, j], m1[:, 0], atol=1e-3 * sd)
        np.testing.assert_allclose(np.sqrt(var[:, j]), np.sqrt(v1[:, 0]), atol=1e-3 * sd)


def test_same_seed_same_numbers(multi):
    X, Y = multi
    kw = dict(n_iter=30, lbfgs_iter=10, n_restarts=3, seed=7)
    a, b = GPEmulator.fit(X, Y, **kw), GPEmulator.fit(X, Y, **kw)
    g = np.random.default_rng(0).random((11, 2))
    for u, v in zip(a.predict(g), b.predict(g)):
        np.testing.assert_array_equal(u, v)
    xr.testing.assert_identical(a.hyperparameters(), b.hyperparameters())


def test_chunked_equals_unchunked(multi):
    X, Y = multi
    gp = GPEmulator.fit(X, Y, n_iter=40, lbfgs_iter=0)
    g = np.random.default_rng(2).random((203, 2))
    m_all, v_all = gp.predict(g, chunk_size=len(g))
    for cs in (1, 7, 64):
        m, v = gp.predict(g, chunk_size=cs)
        np.testing.assert_array_equal(m, m_all)
        np.testing.assert_array_equal(v, v_all)
    assert gp.chunk_size_for(memory_bytes=1e6) < gp.chunk_size_for(memory_bytes=1e9)



@pytest.mark.parametrize("kernel, mean, pca, n", [("matern52", "linear", None, 20), ("matern32", "quadratic", None, 23),
                                                  ("rbf", "constant", None, 21), ("matern52", "linear", 2, 25)])
def test_prediction_rowwise_exact_and_bit_identical(kernel, mean, pca, n):
    """Each kernel, mean and PCA path equals gpytorch's exact posterior, and every row's result
    depends on that row alone, bit for bit: any chunk size, 1 or 2 worker threads, a row alone.
    Odd training sizes and output counts too (MKL's DGEMM is position dependent for an odd
    number of columns: the products are padded to even shapes)."""
    rng = np.random.default_rng(11)
    X = rng.random((n, 3))
    Y = np.stack([np.sin(3 * X[:, 0]) + X[:, 1], np.exp(X @ [1.0, -0.5, 0.2]), np.cos(4 * X[:, 2]) * X[:, 0]], 1)
    Y = np.concatenate([Y, Y[:, :2] ** 2], 1)  # 5 outputs
    gp = GPEmulator.fit(X, Y, kernel=kernel, mean=mean, pca=pca, n_iter=30, lbfgs_iter=0)
    g = rng.random((301, 3))
    ref = gp.predict(g, chunk_size=len(g), include_noise=True)
    for kw in ({"chunk_size": 1}, {"chunk_size": 7}, {"chunk_size": 64, "threads": 2}, {"threads": 2}, {}):
        for a, b in zip(gp.predict(g, include_noise=True, **kw), ref):
            np.testing.assert_array_equal(a, b)
    for i in (0, 150, 300):
        for a, b in zip(gp.predict(g[i], include_noise=True), ref):
            np.testing.assert_array_equal(a[0], b[i])
    mu, var = gp.predict(g)
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        post = gp.model(torch.as_tensor(g).expand(gp.n_gp, *g.shape))
    s, c = gp._t_std.numpy(), gp._t_mean.numpy()
    pm, pv = post.mean.numpy().T * s + c, post.variance.numpy().T * s**2
    if pca is not None:
        W = gp._pca["W"].numpy()
        pm, pv = gp._pca["mean"].numpy() + pm @ W.T, pv @ (W * W).T + gp._pca["resid_var"].numpy()
    np.testing.assert_allclose(mu, pm, atol=1e-10)
    np.testing.assert_allclose(var, pv, atol=1e-10)
    assert (var >= 0).all()
    with pytest.raises(ValueError, match="threads"):
        gp.predict(g, threads=0)

def test_loo_closed_form_equals_brute_force(multi):
    X, Y = multi
    gp = GPEmulator.fit(X, Y, mean="quadratic", n_iter=40, lbfgs_iter=0)
    ds = gp.loo()
    assert ds.standardised_error.dims == ("sample", "output")
    assert list(ds.output.values) == gp.output_names and ds.coverage_95.dims == ("output",)
    # brute force: drop run i, condition on the others with the same hyperparameters
    with torch.no_grad():
        Xt = gp._X
        Z = gp.model.train_targets  # (k, n) standardised
        K = gp._cross(Xt) + gp._noise()[:, None, None] * torch.eye(len(Xt), dtype=torch.float64)
        r = Z - gp.model.mean_module(Xt.expand(gp.n_gp, *Xt.shape))
        for i in (0, 7, 19):
            keep = torch.arange(len(Xt)) != i
            Kr = K[:, keep][:, :, keep]
            ks = K[:, i, keep]
            w = torch.linalg.solve(Kr, ks.unsqueeze(-1)).squeeze(-1)
            mu = Z[:, i] - r[:, i] + (w * r[:, keep]).sum(-1)
            var = K[:, i, i] - (w * ks).sum(-1)  # includes the noise
            mu_o = (mu * gp._t_std + gp._t_mean).numpy()
            var_o = (var * gp._t_std**2).numpy()
            np.testing.assert_allclose(ds.predicted_mean.values[i], mu_o, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(ds.predicted_std.values[i] ** 2, var_o, rtol=1e-6)
            np.testing.assert_allclose(ds.standardised_error.values[i], (Y[i] - mu_o) / np.sqrt(var_o), rtol=1e-5, atol=1e-8)
    cov = ((np.abs(ds.standardised_error) < 1.96).mean("sample")).values
    np.testing.assert_array_equal(ds.coverage_95.values, cov)


def test_validate_and_plot(multi, tmp_path):
    X, Y = multi
    gp = GPEmulator.fit(X, Y, output_names=["a", "b", "c"], input_names=["p", "q"], n_iter=60, lbfgs_iter=40)
    rng = np.random.default_rng(9)
    Xv = rng.random((25, 2))
    Yv = np.stack([np.sin(3 * Xv[:, 0]) + Xv[:, 1], np.exp(Xv @ [1.0, -0.5]), 5.0 * np.cos(4 * Xv[:, 1]) * Xv[:, 0]], 1)
    ds = gp.validate(Xv, Yv)
    assert set(ds.output.values) == {"a", "b", "c"} and list(ds.input.values) == ["p", "q"]
    assert (ds.coverage_95 >= 0.6).all(), ds.coverage_95.values  # a sane emulator on smooth functions
    assert (ds.rmse < 0.2 * Yv.std(0)).all(), ds.rmse.values
    ds.to_netcdf(tmp_path / "val.nc")
    fig = gp.plot_diagnostics(tmp_path / "diag.png", data=(Xv, Yv))
    assert (tmp_path / "diag.png").stat().st_size > 0 and len(fig.axes) == 6
    fig = gp.plot_diagnostics(outputs=["b"])  # leave-one-out, one output, not saved
    assert len(fig.axes) == 2 and "leave-one-out" in fig._suptitle.get_text()


def test_pca_time_series():
    rng = np.random.default_rng(4)
    t = np.linspace(0, 1, 100)
    X = rng.random((30, 3))

    def sim(X):
        a, b, c = X[:, :1], X[:, 1:2], X[:, 2:3]
        return (1 + a) * np.sin(2 * np.pi * (t + 0.3 * b)) + c * t**2

    Y = sim(X)
    gp = GPEmulator.fit(X, Y, pca=0.999)
    assert gp.n_outputs == 100 and 1 <= gp.n_gp < 10
    assert gp.hyperparameters().sizes["gp"] == gp.n_gp
    Xt = rng.random((40, 3))
    mu, var = gp.predict(Xt)
    assert mu.shape == var.shape == (40, 100)
    assert (var > 0).all()
    err = np.sqrt(((mu - sim(Xt)) ** 2).mean())
    assert err < 0.03 * Y.std(), (err, Y.std())
    # the residual (discarded components) variance is what include_pca_residual adds
    _, var0 = gp.predict(Xt, include_pca_residual=False)
    np.testing.assert_allclose(var - var0, np.broadcast_to(gp._pca["resid_var"].numpy(), var.shape), rtol=1e-9, atol=1e-15)
    # integer number of components, and LOO in output space
    gp2 = GPEmulator.fit(X, Y, pca=3, n_iter=30, lbfgs_iter=0)
    assert gp2.n_gp == 3
    assert gp2.loo().standardised_error.shape == (30, 100)


def test_save_load_identical(multi, tmp_path):
    X, Y = multi
    gp = GPEmulator.fit(X, Y, mean="constant", kernel="matern32", output_names=["a", "b", "c"])
    g = np.random.default_rng(3).random((50, 2))
    m, v = gp.predict(g)
    path = gp.save(tmp_path / "wave1" / "gp.pt")
    back = GPEmulator.load(path)
    assert back.output_names == ["a", "b", "c"] and back.settings == gp.settings
    m2, v2 = back.predict(g)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(v, v2)
    xr.testing.assert_identical(gp.loo(), back.loo())
    # pca and rbf through the state dict as well
    gp = GPEmulator.fit(X, np.concatenate([Y, Y**2], 1), kernel="rbf", pca=2, n_iter=20, lbfgs_iter=5)
    back = GPEmulator.from_state(gp.state())
    np.testing.assert_array_equal(gp.predict(g)[1], back.predict(g)[1])


def test_bad_inputs(multi):
    X, Y = multi
    Xn = X.copy()
    Xn[[3, 5], 1] = np.nan
    with pytest.raises(ValueError, match=r"X has NaN/inf in rows \[3, 5\]"):
        GPEmulator.fit(Xn, Y)
    Yn = Y.copy()
    Yn[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"Y has NaN/inf in rows \[4\].*columns \[2\]"):
        GPEmulator.fit(X, Yn)
    with pytest.raises(ValueError, match="unit cube.*ParameterSpace.to_unit"):
        GPEmulator.fit(X * 10, Y)
    with pytest.raises(ValueError, match="Y has 19 rows but X has 20"):
        GPEmulator.fit(X, Y[:-1])
    with pytest.raises(ValueError, match="mean must be one of"):
        GPEmulator.fit(X, Y, mean="cubic")
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPEmulator.fit(X, Y, kernel="periodic")
    with pytest.raises(ValueError, match="output_names has 2 names for 3"):
        GPEmulator.fit(X, Y, output_names=["a", "b"])
    with pytest.raises(ValueError, match="too few"):
        GPEmulator.fit(X[:4], Y[:4], mean="quadratic")
    with pytest.raises(ValueError, match="pca"):
        GPEmulator.fit(X, Y, pca=1.5)
    with pytest.raises(ValueError, match="rank"):
        GPEmulator.fit(X, Y, pca=10)
    gp = GPEmulator.fit(X, Y, n_iter=5, lbfgs_iter=0)
    with pytest.raises(ValueError, match="must have 2 columns"):
        gp.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unit cube"):
        gp.predict(np.full((2, 2), -0.1))
    with pytest.raises(ValueError, match="must have 3 columns"):
        gp.validate(X, Y[:, :2])
    assert gp.predict(np.full(2, 0.5))[0].shape == (1, 3)  # one point as a 1-D array
