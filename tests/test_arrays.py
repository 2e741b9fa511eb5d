"""Forwards may return numpy arrays, torch tensors (with or without grad) or DataArrays:
every inference entry point reads them through ``ailand.arrays.to_numpy`` (issue 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from ailand import ParameterSpace
from ailand.arrays import to_numpy

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SPACE = ParameterSpace.from_dict({"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, 1.0)})
X_TRUE = np.array([0.3, 0.6, 0.5])
_W = torch.ones((), dtype=torch.float64, requires_grad=True)  # gives the torch outputs a grad_fn


def _analytic(x: torch.Tensor) -> torch.Tensor:
    """(n, 3) -> (n, 2): a smooth 3-parameter model."""
    return torch.stack([x[:, 0] + 0.5 * x[:, 1] ** 2, x[:, 1] * x[:, 2] + 0.2 * x[:, 0]], dim=1)


def make_forward(kind: str):
    def forward(x):
        xt = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=float))
        y = _analytic(xt.to(torch.float64))
        if kind == "torch":
            return y * _W  # a tensor with grad (the numpy path must detach it)
        if kind == "torch32":
            return y.detach().float()
        y = y.detach().numpy()
        if kind == "numpy":
            return y
        if kind == "dataarray":
            return xr.DataArray(y, dims=("sample", "output"), coords={"output": ["y0", "y1"]})
        raise AssertionError(kind)

    return forward


Y_OBS = _analytic(torch.as_tensor(X_TRUE[None])).numpy()[0]
KINDS = ["torch", "torch32", "numpy", "dataarray"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_entry_point_accepts_the_forward(kind, tmp_path):
    from calibration import HistoryMatching, Problem, bayesian_optimisation, model_error
    from sensitivity import evaluate, morris

    fwd = make_forward(kind)
    ref = make_forward("numpy")

    # history matching: one wave on 8 runs
    hm = HistoryMatching(fwd, Y_OBS, SPACE, obs_std=0.05, seed=0, n_mc=500, emulator=dict(n_iter=30, n_restarts=1))
    hm.run_wave(8)
    assert hm.n_waves == 1 and 0.0 < hm.nroy_fraction <= 1.0

    # Problem: cost and residuals equal the numpy forward's
    p, p_ref = (Problem(f, Y_OBS, obs_std=0.1, prior=SPACE) for f in (fwd, ref))
    x = np.array([[0.2, 0.4, 0.7], [0.5, 0.5, 0.5]])
    tol = 1e-6 if kind == "torch32" else 1e-12
    np.testing.assert_allclose(p.cost(x), p_ref.cost(x), rtol=tol)
    np.testing.assert_allclose(p.residuals(x), p_ref.residuals(x), rtol=tol, atol=tol)

    # Bayesian optimisation of the Problem (design + one acquisition step)
    bo = bayesian_optimisation(p, budget=6, n_init=5, seed=0)
    assert np.isfinite(bo.to_xarray()["J"].values).all()

    # model_error against the numpy reference: zero up to the forward's precision
    me = model_error(fwd, ref, SPACE, n=4, seed=0)
    assert np.abs(me.bias).max() <= (1e-6 if kind == "torch32" else 0.0)

    # sensitivity adapters: evaluate (one batch and in batches) and Morris
    y = evaluate(fwd, SPACE.sample(6, seed=0).values)
    assert y.shape == (6, 2) and y.dtype == np.float64
    y2 = evaluate(fwd, SPACE.sample(6, seed=0).values, batch_size=4)
    np.testing.assert_allclose(y2.values, y.values)
    res = morris(fwd, SPACE, n_trajectories=4, seed=0, num_resamples=10)
    assert np.isfinite(res["mu_star"].values).all()


def test_to_numpy_reads_every_array_kind():
    ref = np.arange(6.0).reshape(3, 2)
    t = torch.as_tensor(ref, dtype=torch.float32).requires_grad_(True) * 1.0
    for a in [ref, ref.tolist(), t, torch.as_tensor(ref).to(torch.bfloat16), xr.DataArray(ref, dims=("s", "o")),
              pd.DataFrame(ref), [torch.as_tensor(r) for r in ref]]:
        out = to_numpy(a)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64, type(a)
        np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(to_numpy(pd.Series([1.0, 2.0])), [1.0, 2.0])
    assert to_numpy(torch.arange(3), dtype=None).dtype == np.int64
    assert to_numpy(torch.zeros(2, dtype=torch.complex64).conj(), dtype=None).dtype == np.complex64
    with pytest.raises(ValueError, match="forward output"):
        to_numpy([[1.0, 2.0], [3.0]], name="forward output")
    with pytest.raises(ValueError, match="forward output"):
        to_numpy(lambda: 0, name="forward output")
