"""Gaussian-process emulators for many outputs at once (one exact GP per output, batched).

Each output ``j`` (or, with a PCA basis, each principal-component score) gets its own
independent GP on the unit cube ``x in [0, 1]^d``:

    y_j(x) = h(x)^T beta_j + f_j(x) + eps,   f_j ~ GP(0, s_j^2 k(x, x'; l_j)),   eps ~ N(0, sigma_j^2)

with ``h`` the regression features of the mean (constant, linear or quadratic in
``u = 2x - 1``), ``k`` an ARD Matern-5/2, Matern-3/2 or squared-exponential
correlation, and the hyperparameters ``theta_j = (beta_j, s_j, l_j, sigma_j)``
maximising the exact log marginal likelihood plus log priors (type-II MAP),

    log p(y | theta) = -1/2 r^T K^-1 r - 1/2 log|K| - n/2 log 2 pi,
    r = y - H beta,   K = s^2 C(X, X; l) + sigma^2 I.

All ``m`` GPs live in one gpytorch ``ExactGP`` with ``batch_shape = (m,)``: fitting and
prediction are batched over outputs (and over random restarts), never a Python loop.
Outputs are standardised per output (``(y - mean) / std``) before fitting; everything
a user passes or reads is in the original output units.

**Prediction** (Rasmussen & Williams 2006, eqs. 2.25-2.26, with a fixed mean function)

    E[f(x*)]   = h(x*)^T beta + k*^T K^-1 r = h(x*)^T beta + k*^T alpha
    Var[f(x*)] = s^2 - || L^-1 k* ||^2,       K = L L^T

uses ``alpha`` and ``L^-1`` computed once after fitting (the cached "training solve"),
so candidate points go through in cache-sized blocks of fixed shape: only a ``(m, block, n)``
cross-covariance is ever built, never a test-by-test covariance, and the two matrix products
per block (squared distances, then ``[s^2 L^-T | s^2 alpha]`` for variance and mean at once)
are batched over the outputs (see :class:`_Predictor`). This is the exact variance, not
gpytorch's ``fast_pred_var`` (LOVE) approximation; a test checks it against gpytorch's own
posterior.

**Leave-one-out** (Dubrule 1983; Rasmussen & Williams eq. 5.12, hyperparameters fixed)

    mu_{-i} = y_i - [K^-1 r]_i / [K^-1]_ii,     sigma^2_{-i} = 1 / [K^-1]_ii   (includes the noise)

**PCA basis** (``pca=k`` or ``pca=0.99``): ``Y ~ mu + Z W^T`` with ``W (m, k)`` the leading
right singular vectors of the centred training outputs (columns are centred, not
scaled: the outputs of a time series share one unit). The GPs emulate the scores
``Z (n, k)``; in output space

    mean = mu + W E[z],      var = (W * W) Var[z] + v_res,

``v_res (m,)`` being the training variance of the discarded components,
``sum_{j>k} S_j^2 / (n-1) W_j^2`` (added by default, ``include_pca_residual=False`` drops it;
it keeps the emulator honest about truncation error, which history matching would
otherwise mistake for a misfit). Cross-component covariances are zero (independent GPs).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import gpytorch
from gpytorch.constraints import GreaterThan
from gpytorch.priors import GammaPrior, NormalPrior

from ailand.arrays import to_numpy

__all__ = ["GPEmulator"]

_MEANS = ("constant", "linear", "quadratic")
_KERNELS = ("matern52", "matern32", "rbf")
_FULL_QUADRATIC_MAX_D = 4  # cross terms u_i u_j only up to this many inputs
_UNIT_TOL = 1e-6
_SMALL_FIT = 250_000  # restarts * GPs * n^2 up to which fitting runs on one thread
_BLOCK_ENTRIES = 2**17  # prediction blocks hold about this many (n_gp, rows, n_train) covariance entries (cache-sized)
_BLOCK_MIN, _BLOCK_MAX = 32, 256  # rows per block: a power of two in this range, fixed per emulator
_CHUNK_BLOCKS = 64  # default chunk (the unit handed to a worker thread): at most this many blocks
_PREDICT_THREADS = 1  # default worker threads of GPEmulator.predict (see its docstring)
_DTYPE = torch.float64
_STATE_VERSION = 1


# ---------------------------------------------------------------- kernel and mean


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., p, d), (..., q, d) -> (..., p, q)``, clamped >= 0.

    Inputs should be centred (we use ``(x - 0.5) / l``) to keep the cancellation error of
    ``|a|^2 + |b|^2 - 2 a.b`` small. Each row depends only on its own ``a`` row, so
    results do not change with the chunking of ``a``.
    """
    an = a.pow(2).sum(-1, keepdim=True)
    bn = b.pow(2).sum(-1).unsqueeze(-2)
    return (an + bn - 2.0 * (a @ b.transpose(-1, -2))).clamp_min(0.0)


def _correlation(d2: torch.Tensor, kind: str) -> torch.Tensor:
    """Correlation as a function of the scaled squared distance ``d2 = sum_i ((x_i - x'_i) / l_i)^2``.

    rbf: exp(-d2/2);  matern32: (1 + sqrt3 r) exp(-sqrt3 r);  matern52: (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r).
    """
    if kind == "rbf":
        return torch.exp(-0.5 * d2)
    r = d2.clamp_min(1e-36).sqrt()
    if kind == "matern32":
        s = math.sqrt(3.0) * r
        return (1.0 + s) * torch.exp(-s)
    s = math.sqrt(5.0) * r
    return (1.0 + s + (5.0 / 3.0) * d2) * torch.exp(-s)


def _correlation_(d2: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`_correlation` computed in place on ``d2`` (no autograd; prediction path)."""
    if kind == "rbf":
        return d2.mul_(-0.5).exp_()
    s = d2.mul_(5.0 if kind == "matern52" else 3.0).sqrt_()  # sqrt(5) r or sqrt(3) r
    e = torch.exp(-s)
    if kind == "matern32":
        return s.add_(1.0).mul_(e)
    return torch.addcmul(s, s, s, value=1.0 / 3.0).add_(1.0).mul_(e)  # (1 + s + s^2/3) e^-s


class _ARDKernel(gpytorch.kernels.Kernel):
    """Stationary ARD correlation (Matern 5/2, 3/2 or RBF) on the unit cube, batch-aware.

    Same formula as gpytorch's MaternKernel/RBFKernel but without their data-dependent
    centring, so a prediction does not depend on how candidates are chunked.
    """

    has_lengthscale = True

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def forward(self, x1, x2, diag=False, last_dim_is_batch=False, **params):
        ls = self.lengthscale  # (*batch, 1, d)
        a = (x1 - 0.5) / ls
        b = (x2 - 0.5) / ls
        if diag:
            return _correlation((a - b).pow(2).sum(-1), self.kind)
        return _correlation(_sqdist(a, b), self.kind)


def _n_features(kind: str, d: int) -> int:
    if kind == "constant":
        return 0
    if kind == "linear":
        return d
    return 2 * d + (d * (d - 1) // 2 if d <= _FULL_QUADRATIC_MAX_D else 0)


def _features(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Regression features ``h(x)`` without the intercept: ``(..., n, d) -> (..., n, p)``.

    In ``u = 2x - 1`` (in [-1, 1]): linear ``u``; quadratic ``u, u^2`` and, for
    ``d <= 4``, the cross terms ``u_i u_j (i < j)``.
    """
    u = 2.0 * x - 1.0
    if kind == "constant":
        return u[..., :0]
    if kind == "linear":
        return u
    d = u.shape[-1]
    parts = [u, u * u]
    if d <= _FULL_QUADRATIC_MAX_D and d > 1:
        i, j = torch.triu_indices(d, d, offset=1)
        parts.append(u[..., i] * u[..., j])
    return torch.cat(parts, -1)


class _RegressionMean(gpytorch.means.Mean):
    """``h(x)^T beta + beta_0`` per batch member: weights ``(*batch, p)``, bias ``(*batch, 1)``."""

    def __init__(self, kind: str, d: int, batch_shape: torch.Size, weight_std: float = 2.0):
        super().__init__()
        self.kind = kind
        p = _n_features(kind, d)
        self.register_parameter("weights", torch.nn.Parameter(torch.zeros(*batch_shape, p, dtype=_DTYPE)))
        self.register_parameter("bias", torch.nn.Parameter(torch.zeros(*batch_shape, 1, dtype=_DTYPE)))
        if p:
            self.register_prior("weights_prior", NormalPrior(0.0, weight_std), "weights")

    def forward(self, x):
        h = _features(x, self.kind)
        return (h * self.weights.unsqueeze(-2)).sum(-1) + self.bias


def _log_bound(lower: float) -> GreaterThan:
    """``value = lower + exp(raw)``: Adam then steps in log space (scale parameters move by
    factors, not increments, so long lengthscales are reached in a few dozen steps)."""
    return GreaterThan(lower, transform=torch.exp, inv_transform=torch.log)


class _BatchExactGP(gpytorch.models.ExactGP):
    """Independent exact GPs, ``batch_shape`` = (restarts, outputs) while fitting, (outputs,) after."""

    def __init__(self, X, Y, likelihood, mean: str, kernel: str):
        super().__init__(X, Y, likelihood)
        batch_shape = Y.shape[:-1]
        d = X.shape[-1]
        self.mean_module = _RegressionMean(mean, d, batch_shape)
        base = _ARDKernel(
            kernel,
            ard_num_dims=d,
            batch_shape=batch_shape,
            lengthscale_prior=GammaPrior(3.0, 6.0),
            lengthscale_constraint=_log_bound(1e-2),
        )
        self.covar_module = gpytorch.kernels.ScaleKernel(
            base, batch_shape=batch_shape, outputscale_prior=GammaPrior(2.0, 0.15),
            outputscale_constraint=_log_bound(1e-6),
        )

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _make_model(X, Y, mean, kernel, noise_lower):
    lik = gpytorch.likelihoods.GaussianLikelihood(
        batch_shape=Y.shape[:-1], noise_prior=GammaPrior(1.1, 0.05), noise_constraint=_log_bound(noise_lower)
    )
    return _BatchExactGP(X, Y, lik, mean, kernel).to(_DTYPE)


# ---------------------------------------------------------------- prediction engine


_KERNEL_SCALE = {"matern52": math.sqrt(5.0), "matern32": math.sqrt(3.0), "rbf": math.sqrt(0.5)}


def _block_rows(n_gp: int, n_train: int) -> int:
    """Rows per prediction block: the power of two (32..256) nearest below ``_BLOCK_ENTRIES /
    (n_gp n_train)``. It depends on the emulator only, never on the candidates."""
    rows = max(1, _BLOCK_ENTRIES // (n_gp * n_train))
    return int(min(_BLOCK_MAX, max(_BLOCK_MIN, 1 << (rows.bit_length() - 1))))


class _Scratch:
    """One worker's preallocated block arrays (torch-allocated, so 64-byte aligned; numpy views
    of the same memory for the elementwise steps)."""

    def __init__(self, P: "_Predictor"):
        k, B, d, p1 = P.k, P.rows, P.d, P.beta.shape[-1]
        new = lambda *shape: torch.empty(*shape, dtype=_DTYPE)  # noqa: E731
        self.X, self.A = new(B, d), new(k, B, d + 2)
        self.D, self.S, self.V = new(k, B, P.n_pad), new(k, B, P.n_pad), new(k, B, P.n_cols)
        self.A[:, :, d + 1] = 1.0  # pairs with |b|^2 in P.Bt
        self.x, self.a = self.X.numpy(), self.A.numpy()
        self.d2, self.s, self.v = self.D.numpy(), self.S.numpy(), self.V.numpy()
        self.u, self.aa, self.q = np.empty((B, d)), np.empty((k, B, d)), np.empty((k, B))
        self.h, self.hb, self.mean = np.ones((B, p1)), np.empty((k, B, p1)), np.empty((k, B))
        if P.pca is not None:
            m = P.pca["WT"].shape[1]
            self.Z, self.Zv, self.O, self.Ov = new(B, k), new(B, k), new(B, m), new(B, m)


class _Predictor:
    """Everything about :meth:`GPEmulator.predict` that does not depend on the candidates, precomputed.

    Candidates go through in blocks of exactly ``rows`` rows (the last one padded with copies
    of its first row), so that every BLAS call has one fixed shape and a row's result depends
    on that row alone, bit for bit. Per block, with ``c = sqrt5, sqrt3, sqrt(1/2)`` for
    Matern 5/2, Matern 3/2, RBF and ``a = c (x - 1/2) / l``, ``b = c (X_train - 1/2) / l``::

        D2 = [a, |a|^2, 1] @ [-2 b^T; 1; |b|^2]      (k, B, n)     squared scaled distances, one GEMM
        C  = rho(D2)                                  in place      (1 + s + s^2/3) e^-s, (1 + s) e^-s or e^-D2, s = sqrt(D2)
        V  = C @ [s^2 L^-T | s^2 alpha]              (k, B, n+1)   variance rows and the mean, one GEMM
        mean = h(x)^T beta + beta_0 + V[..., n],      var = s^2 - rowsum(V[..., :n]^2)

    The GEMMs are torch's (MKL), batched over the ``k`` GPs; the elementwise steps are numpy's
    (its SIMD ``sqrt``/``exp`` are 2-3x faster than torch's in float64), all in place on the
    block's preallocated arrays (about 1 MiB each: they stay in cache). MKL's DGEMM gives a row
    a result that depends on the row's position in the block when the number of columns of
    the product is odd (>= 3, seen with MKL 2024.2): every product here therefore has an even
    number of columns (a zero column appended where needed), and the regression mean is an
    elementwise product and row sum, not a GEMM.
    """

    def __init__(self, gp: "GPEmulator"):
        k, n, d = gp.n_gp, gp.n_train, gp.d
        base = gp.model.covar_module.base_kernel
        self.kind, self.mean_kind = base.kind, gp.settings["mean"]
        self.k, self.n, self.d = k, n, d
        self.rows = _block_rows(k, n)
        self.n_pad = n + n % 2  # columns of D2 (even; a padding column of zeros in Bt, zero row in W)
        self.n_cols = n + 1 + (n + 1) % 2  # columns of V: n variance rows, the mean, an even count
        with torch.no_grad():
            scale = _KERNEL_SCALE[self.kind] / base.lengthscale.detach().reshape(k, 1, d)
            b = (gp._X - 0.5) * scale  # (k, n, d)
            self.Bt = torch.zeros(k, d + 2, self.n_pad, dtype=_DTYPE)
            self.Bt[:, :d, :n] = -2.0 * b.transpose(-1, -2)
            self.Bt[:, d, :n] = 1.0
            self.Bt[:, d + 1, :n] = b.pow(2).sum(-1)
            s2 = gp._outputscale().detach()
            self.W = torch.zeros(k, self.n_pad, self.n_cols, dtype=_DTYPE)
            self.W[:, :n, :n] = gp._LinvT * s2[:, None, None]
            self.W[:, :n, n] = gp._alpha * s2[:, None]
            mm = gp.model.mean_module
            beta = torch.cat([mm.weights.detach().reshape(k, -1), mm.bias.detach().reshape(k, 1)], 1)
            self.beta = beta.numpy()[:, None, :]  # (k, 1, p + 1), the intercept last
            self.scale = scale.numpy()
            self.s2 = s2.numpy()[:, None]
            self.noise = gp._noise().detach().numpy()[:, None]
            self.t_mean = gp._t_mean.numpy()
            self.t_std = gp._t_std.numpy()
            self.t_var = self.t_std**2
            self.pca = None
            if gp._pca is not None:
                W = gp._pca["W"]  # (m, k)
                m = W.shape[0]
                WT, W2T = torch.zeros(k, m + m % 2, dtype=_DTYPE), torch.zeros(k, m + m % 2, dtype=_DTYPE)
                WT[:, :m], W2T[:, :m] = W.T, (W * W).T
                self.pca = {"WT": WT, "W2T": W2T, "m": m,
                            "mean": gp._pca["mean"].numpy(), "resid_var": gp._pca["resid_var"].numpy()}

    def block(self, w: _Scratch, x: np.ndarray, mean_out: np.ndarray, var_out: np.ndarray,
              include_noise: bool, include_pca_residual: bool) -> None:
        """Mean and variance of the ``c = len(x) <= rows`` candidates ``x (c, d)`` into ``mean_out, var_out (c, m)``."""
        c, d, n = x.shape[0], self.d, self.n
        w.x[:c] = x
        if c < self.rows:
            w.x[c:] = x[:1]
        # scaled squared distances, one GEMM
        np.subtract(w.x, 0.5, out=w.u)
        a = w.a[:, :, :d]
        np.multiply(w.u, self.scale, out=a)
        np.multiply(a, a, out=w.aa)
        np.sum(w.aa, axis=-1, out=w.a[:, :, d])
        torch.matmul(w.A, self.Bt, out=w.D)
        # correlation, in place
        D2, S = w.d2, w.s
        np.maximum(D2, 0.0, out=D2)
        if self.kind == "rbf":
            np.negative(D2, out=D2)
            np.exp(D2, out=D2)
        else:
            np.sqrt(D2, out=S)
            if self.kind == "matern52":
                np.multiply(D2, 1.0 / 3.0, out=D2)
                np.add(D2, S, out=D2)
                np.add(D2, 1.0, out=D2)
            else:
                np.add(S, 1.0, out=D2)
            np.negative(S, out=S)
            np.exp(S, out=S)
            np.multiply(D2, S, out=D2)
        # [L^-1 k* | k*^T alpha] (times s^2), one GEMM; the regression mean, rowwise
        torch.matmul(w.D, self.W, out=w.V)
        w.h[:, :-1] = _features(w.X, self.mean_kind).numpy()
        np.multiply(w.h, self.beta, out=w.hb)
        np.sum(w.hb, axis=-1, out=w.mean)
        mean = np.add(w.mean, w.v[:, :, n], out=w.mean).T  # (B, k) standardised
        Q = w.v[:, :, :n]
        np.multiply(Q, Q, out=Q)
        np.sum(Q, axis=-1, out=w.q)
        var = np.subtract(self.s2, w.q, out=w.q)
        np.maximum(var, 0.0, out=var)
        if include_noise:
            np.add(var, self.noise, out=var)
        # to output units
        if self.pca is None:
            np.multiply(mean[:c], self.t_std, out=mean_out)
            np.add(mean_out, self.t_mean, out=mean_out)
            np.multiply(var.T[:c], self.t_var, out=var_out)
            return
        np.multiply(mean, self.t_std, out=w.Z.numpy())
        np.add(w.Z.numpy(), self.t_mean, out=w.Z.numpy())
        np.multiply(var.T, self.t_var, out=w.Zv.numpy())
        torch.matmul(w.Z, self.pca["WT"], out=w.O)
        torch.matmul(w.Zv, self.pca["W2T"], out=w.Ov)
        m = self.pca["m"]
        np.add(w.O.numpy()[:c, :m], self.pca["mean"], out=mean_out)
        if include_pca_residual:
            np.add(w.Ov.numpy()[:c, :m], self.pca["resid_var"], out=var_out)
        else:
            var_out[...] = w.Ov.numpy()[:c, :m]


# ---------------------------------------------------------------- input checks


def _as_2d(a, name: str) -> np.ndarray:
    a = to_numpy(a, dtype=np.float64, name=name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows = runs), got shape {a.shape}")
    return a


def _rows(mask: np.ndarray, limit: int = 10) -> str:
    idx = np.flatnonzero(mask)
    s = ", ".join(str(i) for i in idx[:limit])
    return f"[{s}{', ...' if idx.size > limit else ''}] ({idx.size} row{'s' if idx.size != 1 else ''})"


def _check_X(X, name: str, d: int | None = None) -> np.ndarray:
    """Finite, ``(n, d)``, inside ``[0, 1]^d`` up to ``1e-6``. A 1-D array is ``n`` points when
    ``d == 1`` and one point when ``d > 1``."""
    X = to_numpy(X, dtype=np.float64, name=name)
    if d is not None and d > 1 and X.ndim == 1:
        X = X[None, :]
    X = _as_2d(X, name)
    if d is not None and X.shape[1] != d:
        raise ValueError(f"{name} must have {d} columns (the emulator's inputs), got shape {X.shape}")
    bad = ~np.isfinite(X).all(1)
    if bad.any():
        raise ValueError(f"{name} has NaN/inf in rows {_rows(bad)}: drop or repair those rows")
    out = ((X < -_UNIT_TOL) | (X > 1 + _UNIT_TOL)).any(1)
    if out.any():
        raise ValueError(
            f"{name} must lie in the unit cube [0, 1]^d, rows {_rows(out)} do not (min {X.min():.4g}, "
            f"max {X.max():.4g}): map physical parameters with ParameterSpace.to_unit(x) first"
        )
    return np.clip(X, 0.0, 1.0)


def _check_Y(Y, name: str, n: int, m: int | None = None) -> np.ndarray:
    Y = _as_2d(Y, name)
    if Y.shape[0] != n:
        raise ValueError(f"{name} has {Y.shape[0]} rows but X has {n}: one row of outputs per run")
    if m is not None and Y.shape[1] != m:
        raise ValueError(f"{name} must have {m} columns (the emulator's outputs), got shape {Y.shape}")
    bad = ~np.isfinite(Y).all(1)
    if bad.any():
        cols = np.flatnonzero(~np.isfinite(Y).all(0))[:10].tolist()
        raise ValueError(
            f"{name} has NaN/inf in rows {_rows(bad)} (output columns {cols}): drop failed runs "
            f"before fitting, e.g. keep = np.isfinite(Y).all(1); X, Y = X[keep], Y[keep]"
        )
    return Y


# ---------------------------------------------------------------- the emulator


class GPEmulator:
    """Independent exact GPs for ``m`` outputs on the unit cube, batched (gpytorch, float64).

    Build with :meth:`fit`; use :meth:`predict`, :meth:`loo`, :meth:`validate`,
    :meth:`plot_diagnostics`, :meth:`save` / :meth:`load`.

    Attributes
    ----------
    n_outputs : m, outputs in the original (output) space.
    output_names : list of m names.
    input_names : list of d names (default ``x0, x1, ...``).
    d : number of inputs; n_train : number of training runs.
    n_gp : number of GPs (= m, or the number of PCA components).
    settings : dict (mean, kernel, pca, n_iter, n_restarts, lr, noise_lower, seed).
    fit_time_s : wall time of the fit [s].
    model : the fitted gpytorch model (``batch_shape = (n_gp,)``, standardised units).
    """

    # ------------------------------------------------------------ construction

    def __init__(self):  # use GPEmulator.fit or GPEmulator.load
        self.model = None
        self._pred = None  # the prediction's precomputed constants, built on first use

    @classmethod
    def fit(
        cls,
        X,
        Y,
        *,
        mean: str = "linear",
        kernel: str = "matern52",
        pca: int | float | None = None,
        output_names=None,
        input_names=None,
        n_iter: int = 100,
        lbfgs_iter: int = 100,
        n_restarts: int = 1,
        lr: float = 0.1,
        noise_lower: float = 1e-6,
        seed: int = 0,
    ) -> "GPEmulator":
        """Fit one GP per output (or per PCA component) by type-II MAP.

        Parameters
        ----------
        X : ``(n, d)`` training inputs in the unit cube ``[0, 1]^d``
            (``ParameterSpace.to_unit(x)``); a 1-D array is ``n`` points of one input.
        Y : ``(n, m)`` training outputs in their own units (1-D: one output). A
            DataArray ``(sample, output)`` gives ``output_names`` from its second coordinate.
        mean : ``"constant"``, ``"linear"`` (default) or ``"quadratic"`` regression on
            ``u = 2x - 1``; quadratic has ``u, u^2`` and, for ``d <= 4``, the cross terms
            ``u_i u_j``. Coefficients get a N(0, 2^2) prior (outputs standardised).
        kernel : ``"matern52"`` (default), ``"matern32"`` or ``"rbf"``, ARD, times an output scale.
        pca : None (one GP per output), an int (number of principal components) or a
            float in (0, 1] (smallest number explaining that fraction of the variance).
        output_names, input_names : labels (default ``y0, ...`` / ``x0, ...``).
        n_iter : Adam iterations (100), learning rate ``lr`` (0.1) with cosine decay to ``lr/10``;
        lbfgs_iter : then at most this many L-BFGS iterations (100; 0 = Adam only) on the
            summed loss. Each output keeps the better of the two.
        n_restarts : starts per output, batched (1, the default: the fixed start only; 3
            is more robust for multimodal likelihoods at ~3x the cost);
            the one with the best penalised likelihood is kept per output.
        noise_lower : lower bound on the noise variance in standardised units
            (1e-6: a nugget of 0.1% of the output's std).
        seed : seeds the restarts; the same seed gives the same emulator.

        Priors (standardised outputs, unit-cube inputs): lengthscale Gamma(3, 6) (mode 1/3,
        >= 0.01), output scale Gamma(2, 0.15), noise Gamma(1.1, 0.05). Adam treats each
        (restart, output) independently, so with ``lbfgs_iter=0`` the batched fit equals
        fitting each output alone; the L-BFGS polish couples them only through its line
        search (same optimum, agreement to optimiser tolerance). Problems with
        ``n_restarts * n_gp * n^2 <= 250000`` are fitted on one torch thread (faster: the
        batched ops are too small to share), larger ones on torch's current threads.
        """
        if mean not in _MEANS:
            raise ValueError(f"mean must be one of {_MEANS}, got {mean!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        if int(n_iter) < 0 or int(lbfgs_iter) < 0 or int(n_restarts) < 1:
            raise ValueError(f"need n_iter >= 0, lbfgs_iter >= 0 and n_restarts >= 1, got {n_iter}, {lbfgs_iter}, {n_restarts}")
        if output_names is None and isinstance(Y, xr.DataArray) and Y.ndim == 2:
            output_names = [str(v) for v in Y[Y.dims[1]].values]
        Xn = _check_X(X, "X")
        n, d = Xn.shape
        Yn = _check_Y(Y, "Y", n)
        m = Yn.shape[1]
        p = _n_features(mean, d)
        if n < 3 or p + 1 >= n:
            raise ValueError(
                f"{n} training runs are too few for mean={mean!r} in {d} inputs ({p + 1} coefficients): "
                f"use more runs or a simpler mean ('linear' or 'constant')"
            )

        self = cls()
        self.d, self.n_train, self.n_outputs = d, n, m
        self.output_names = _names(output_names, m, "y", "output_names")
        self.input_names = _names(input_names, d, "x", "input_names")
        self.settings = dict(mean=mean, kernel=kernel, pca=pca, n_iter=int(n_iter), lbfgs_iter=int(lbfgs_iter), n_restarts=int(n_restarts),
                             lr=float(lr), noise_lower=float(noise_lower), seed=int(seed))
        self._X = torch.as_tensor(Xn, dtype=_DTYPE)
        self._Y = Yn

        # targets of the GPs: the outputs, or their PCA scores
        if pca is None:
            self._pca = None
            T = torch.as_tensor(Yn, dtype=_DTYPE)
        else:
            self._pca = _pca_basis(Yn, pca)
            T = (torch.as_tensor(Yn, dtype=_DTYPE) - self._pca["mean"]) @ self._pca["W"]
        self.n_gp = T.shape[1]
        self._t_mean = T.mean(0)
        std = T.std(0)
        self._t_std = torch.where(std > 0, std, torch.ones_like(std))
        Z = ((T - self._t_mean) / self._t_std).T.contiguous()  # (k, n)

        t0 = time.perf_counter()
        # small batched problems are dominated by per-op threading overhead: one thread
        small = self.settings["n_restarts"] * self.n_gp * n * n <= _SMALL_FIT
        with _threads(1 if small else torch.get_num_threads()):
            state, self.loss = _fit_batched(self._X, Z, self.settings)
        self.model = _make_model(self._X.expand(self.n_gp, n, d), Z, mean, kernel, noise_lower)
        self.model.load_state_dict(state)
        self.model.eval()
        self._cache()
        self.fit_time_s = time.perf_counter() - t0
        return self

    def _cache(self):
        """The training solve, done once: ``alpha = K^-1 r`` ``(k, n)``, ``L^-1`` ``(k, n, n)``."""
        with torch.no_grad():
            X = self._X
            Z = self.model.train_targets
            K = self._cross(X) + self._noise()[:, None, None] * torch.eye(self.n_train, dtype=_DTYPE)
            L, info = torch.linalg.cholesky_ex(K)
            if (info > 0).any():  # should not happen with the noise floor; add jitter as a last resort
                K = K + 1e-8 * K.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(self.n_train, dtype=_DTYPE)
                L = torch.linalg.cholesky(K)
            eye = torch.eye(self.n_train, dtype=_DTYPE).expand_as(L)
            self._Linv = torch.linalg.solve_triangular(L, eye, upper=False)
            r = Z - self.model.mean_module(X.expand(self.n_gp, *X.shape))
            self._alpha = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
            self._LinvT = self._Linv.transpose(-1, -2).contiguous()
            self._Kinv = self._LinvT @ self._Linv
        self._pred = None

    # ------------------------------------------------------------ pieces in standardised units

    def _noise(self) -> torch.Tensor:
        return self.model.likelihood.noise.reshape(self.n_gp)

    def _outputscale(self) -> torch.Tensor:
        return self.model.covar_module.outputscale.reshape(self.n_gp)

    def _cross(self, Xc: torch.Tensor) -> torch.Tensor:
        """Prior covariance ``s^2 C(Xc, X_train)``: ``(..., c, d) -> (k, ..., c, n)`` (no autograd, in place).

        Leading dims of ``Xc`` are blocks; every BLAS call then has the same shape per block."""
        base = self.model.covar_module.base_kernel
        k = self.n_gp
        extra = Xc.dim() - 2
        ls = base.lengthscale.reshape(k, *([1] * (extra + 1)), self.d)  # (k, ..., 1, d)
        a = (Xc - 0.5) / ls  # (k, ..., c, d)
        b = ((self._X - 0.5) / base.lengthscale).reshape(k, *([1] * extra), self.n_train, self.d)
        an = a.pow(2).sum(-1, keepdim=True)
        bn = b.pow(2).sum(-1).unsqueeze(-2)
        d2 = (an + bn).sub_(2.0 * torch.matmul(a, b.transpose(-1, -2))).clamp_min_(0.0)
        return _correlation_(d2, base.kind).mul_(self._outputscale().reshape(k, *([1] * (extra + 2))))

    def _to_output(self, mean: torch.Tensor, var: torch.Tensor, include_pca_residual: bool = True):
        """Standardised GP moments ``(k, c)`` -> output space ``(c, m)`` numpy."""
        mean = mean.T * self._t_std + self._t_mean  # (c, k)
        var = var.T * self._t_std**2
        if self._pca is not None:
            W = self._pca["W"]
            mean = self._pca["mean"] + mean @ W.T
            var = var @ (W * W).T
            if include_pca_residual:
                var = var + self._pca["resid_var"]
        return mean.numpy(), var.numpy()

    # ------------------------------------------------------------ prediction

    def _predictor(self) -> _Predictor:
        if getattr(self, "_pred", None) is None:
            self._pred = _Predictor(self)
        return self._pred

    @property
    def block_rows(self) -> int:
        """Rows per prediction block (fixed per emulator: about 2^17 entries of ``(n_gp, rows, n_train)``)."""
        return _block_rows(self.n_gp, self.n_train)

    def chunk_size_for(self, memory_bytes: float = 256 * 2**20) -> int:
        """Rows per chunk: a multiple of :attr:`block_rows`, at most 64 blocks, and at most what
        keeps a chunk's rows of input and of the two outputs (``8 (d + 2 m)`` bytes a row), plus
        the per-thread block arrays, within ``memory_bytes``; at least one block."""
        B = self.block_rows
        scratch = 8 * self.n_gp * B * (3 * self.n_train + self.d + 4)  # one worker's block arrays
        rows = (memory_bytes - scratch) // (8 * (self.d + 2 * self.n_outputs))
        return int(max(B, min(_CHUNK_BLOCKS * B, rows // B * B)))

    def predict(
        self,
        X,
        *,
        chunk_size: int | None = None,
        include_noise: bool = False,
        include_pca_residual: bool = True,
        memory_bytes: float = 256 * 2**20,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and variance at ``X (n, d)`` in the unit cube.

        Returns ``mean (n, m)``, ``var (n, m)``: numpy float64 in the original output
        units (squared for ``var``). ``var`` is the latent (emulator) variance; with
        ``include_noise=True`` the fitted noise (nugget) variance is added. With a PCA
        basis, ``var`` is ``diag(W diag(var_z) W^T)`` plus (``include_pca_residual``) the
        discarded components' variance.

        Rows go through in blocks of :attr:`block_rows` rows (fixed per emulator, the last
        block of a chunk padded), each written straight into the returned arrays, so working
        memory is a few MiB per thread whatever ``n`` is: only the returned arrays scale with
        ``n``. The result does not depend on the chunking, bit for bit (every matrix product
        has the block's fixed shape). ``chunk_size`` (default :meth:`chunk_size_for`
        ``(memory_bytes)``) is the number of rows a thread takes at a time.

        ``threads``: worker threads, each taking chunks of blocks with one torch/MKL thread
        (results do not depend on it). Default 1: on the shared 2-core machine (load 5-6) the
        1e6 x 20 prediction took 45-50 s on 1 thread and 40-55 s on 2; blocks are independent,
        so more threads should help on an idle multi-core machine (not measured here).
        """
        Xn = _check_X(X, "X", self.d)
        n = Xn.shape[0]
        if chunk_size is None:
            chunk_size = self.chunk_size_for(memory_bytes)
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        threads = _PREDICT_THREADS if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        P = self._predictor()
        B = P.rows
        mean = np.empty((n, self.n_outputs))
        var = np.empty((n, self.n_outputs))
        chunks = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]

        def work(it, lock):
            torch.set_num_threads(1)  # torch's and MKL's thread settings are per thread: set them in each
            w = _Scratch(P)
            while True:
                with lock:
                    chunk = next(it, None)
                if chunk is None:
                    return
                for a in range(chunk[0], chunk[1], B):
                    e = min(a + B, chunk[1])
                    P.block(w, Xn[a:e], mean[a:e], var[a:e], include_noise, include_pca_residual)

        threads = min(threads, len(chunks))
        it, lock = iter(chunks), threading.Lock()
        with torch.no_grad(), _threads(1):
            if threads == 1:
                work(it, lock)
            else:
                with ThreadPoolExecutor(threads) as ex:
                    for f in [ex.submit(work, it, lock) for _ in range(threads)]:
                        f.result()
        return mean, var

    # ------------------------------------------------------------ diagnostics

    def loo(self, *, include_noise: bool = True) -> xr.Dataset:
        """Closed-form leave-one-out diagnostics at the training runs (hyperparameters fixed).

        ``mu_{-i} = y_i - [K^-1 r]_i / [K^-1]_ii``, ``sigma^2_{-i} = 1 / [K^-1]_ii``
        (Rasmussen & Williams eq. 5.12), batched over outputs; the latent variance
        (``include_noise=False``) subtracts the noise. With a PCA basis the basis is
        kept fixed and the moments are mapped to output space as in :meth:`predict`.
        Returns the Dataset described in :meth:`validate`.
        """
        with torch.no_grad():
            kd = self._Kinv.diagonal(dim1=-2, dim2=-1)  # (k, n)
            Z = self.model.train_targets
            mean = Z - self._alpha / kd
            var = 1.0 / kd
            if not include_noise:
                var = (var - self._noise()[:, None]).clamp_min(0.0)
            mu, v = self._to_output(mean, var)
        return self._diagnostics(self._X.numpy(), self._Y, mu, v, "leave-one-out (closed form, fixed hyperparameters)", include_noise)

    def validate(self, X, Y, *, include_noise: bool = True) -> xr.Dataset:
        """Diagnostics on held-out runs ``X (n, d)`` (unit cube), ``Y (n, m)``.

        Returns an ``xr.Dataset`` with dims ``(sample, output)``: ``observed``,
        ``predicted_mean``, ``predicted_std``, ``standardised_error = (y - mean) / std``
        (std with the noise when ``include_noise``, the default: the runs are new data),
        and per output ``coverage_95`` (fraction with ``|z| < 1.96``), ``rmse``,
        ``mean_abs_standardised_error``; ``x (sample, input)``.
        """
        Xn = _check_X(X, "X", self.d)
        Yn = _check_Y(Y, "Y", Xn.shape[0], self.n_outputs)
        mu, v = self.predict(Xn, include_noise=include_noise)
        return self._diagnostics(Xn, Yn, mu, v, "held-out validation", include_noise)

    def _diagnostics(self, X, Y, mu, var, method, include_noise) -> xr.Dataset:
        sd = np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (Y - mu) / sd
        so, o = ("sample", "output"), ("output",)
        return xr.Dataset(
            {
                "observed": (so, Y, {"long_name": "simulator output"}),
                "predicted_mean": (so, mu, {"long_name": "emulator mean"}),
                "predicted_std": (so, sd, {"long_name": "emulator std" + (" (with noise)" if include_noise else " (latent)")}),
                "standardised_error": (so, z, {"long_name": "(observed - mean) / std", "units": "1"}),
                "coverage_95": (o, (np.abs(z) < 1.96).mean(0), {"long_name": "fraction with |standardised error| < 1.96", "units": "1"}),
                "rmse": (o, np.sqrt(((Y - mu) ** 2).mean(0)), {"long_name": "root mean square error of the mean"}),
                "mean_abs_standardised_error": (o, np.abs(z).mean(0), {"long_name": "mean |standardised error|", "units": "1"}),
                "x": (("sample", "input"), X, {"long_name": "inputs in the unit cube", "units": "1"}),
            },
            coords={"sample": np.arange(len(Y)), "output": self.output_names, "input": self.input_names},
            attrs={"method": method, "include_noise": int(include_noise), "mean_function": self.settings["mean"],
                   "kernel": self.settings["kernel"], "n_train": self.n_train},
        )

    def hyperparameters(self) -> xr.Dataset:
        """Fitted hyperparameters per GP (standardised outputs, unit-cube inputs):
        ``lengthscale (gp, input)``, ``outputscale``, ``noise``, ``neg_log_marginal_likelihood``
        (per datum, with priors) and the output mean/std used for standardising."""
        with torch.no_grad():
            ls = self.model.covar_module.base_kernel.lengthscale.reshape(self.n_gp, self.d).numpy()
            g = self.output_names if self._pca is None else [f"pc{i}" for i in range(self.n_gp)]
            return xr.Dataset(
                {
                    "lengthscale": (("gp", "input"), ls, {"long_name": "ARD lengthscale (unit cube)", "units": "1"}),
                    "outputscale": (("gp",), self._outputscale().numpy(), {"long_name": "signal variance (standardised)", "units": "1"}),
                    "noise": (("gp",), self._noise().numpy(), {"long_name": "noise variance (standardised)", "units": "1"}),
                    "neg_log_marginal_likelihood": (("gp",), self.loss, {"long_name": "-(log marginal likelihood + log priors) / n", "units": "1"}),
                    "target_mean": (("gp",), self._t_mean.numpy()),
                    "target_std": (("gp",), self._t_std.numpy()),
                },
                coords={"gp": g, "input": self.input_names},
                attrs={"mean_function": self.settings["mean"], "kernel": self.settings["kernel"]},
            )

    def plot_diagnostics(self, path=None, data=None, outputs=None, max_outputs: int = 4):
        """Predicted vs observed (+- 2 std bars) and standardised errors for a few outputs.

        data : None (leave-one-out), ``(X, Y)`` held-out runs, or a Dataset from
            :meth:`loo` / :meth:`validate`.
        outputs : names or indices to show (default: up to ``max_outputs`` spread over the outputs).
        Returns the figure (saved to ``path`` when given).
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if data is None:
            ds = self.loo()
        elif isinstance(data, xr.Dataset):
            ds = data
        else:
            ds = self.validate(*data)
        if outputs is None:
            idx = np.unique(np.linspace(0, self.n_outputs - 1, min(max_outputs, self.n_outputs)).round().astype(int))
            outputs = [self.output_names[i] for i in idx]
        outputs = [self.output_names[o] if isinstance(o, (int, np.integer)) else o for o in outputs]
        k = len(outputs)
        fig, axes = plt.subplots(2, k, figsize=(3.3 * k, 6.2), squeeze=False, constrained_layout=True)
        for j, name in enumerate(outputs):
            s = ds.sel(output=name)
            y, mu, sd, z = (s[v].values for v in ("observed", "predicted_mean", "predicted_std", "standardised_error"))
            a = axes[0, j]
            a.errorbar(y, mu, yerr=2 * sd, fmt="o", ms=3, lw=0.8, color="C0", ecolor="0.6")
            lo, hi = np.nanmin([y.min(), (mu - 2 * sd).min()]), np.nanmax([y.max(), (mu + 2 * sd).max()])
            a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            a.set_title(f"{name}\ncoverage95 {float(s.coverage_95):.2f}, rmse {float(s.rmse):.3g}", fontsize=9)
            a.set_xlabel("observed")
            a.set_ylabel("predicted (+- 2 sd)")
            b = axes[1, j]
            b.scatter(mu, z, s=9, color="C3")
            for c in (-2, 2):
                b.axhline(c, color="0.5", ls="--", lw=0.8)
            b.axhline(0, color="0.3", lw=0.6)
            b.set_xlabel("predicted mean")
            b.set_ylabel("standardised error")
        fig.suptitle(f"GP emulator diagnostics: {ds.attrs.get('method', '')}", fontsize=10)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
        return fig

    # ------------------------------------------------------------ persistence

    def state(self) -> dict:
        """Everything needed to rebuild the emulator (torch tensors, str, numbers): training
        data, settings, names, fitted hyperparameters and the cached training solve."""
        pca = None if self._pca is None else {k: v.clone() for k, v in self._pca.items()}
        return {
            "version": _STATE_VERSION,
            "settings": dict(self.settings),
            "output_names": list(self.output_names),
            "input_names": list(self.input_names),
            "X": self._X.clone(),
            "Y": torch.from_numpy(self._Y.copy()),
            "targets": self.model.train_targets.clone(),
            "t_mean": self._t_mean.clone(),
            "t_std": self._t_std.clone(),
            "pca": pca,
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "cache": {"alpha": self._alpha.clone(), "Linv": self._Linv.clone(), "Kinv": self._Kinv.clone()},
            "loss": torch.from_numpy(np.asarray(self.loss, dtype=np.float64).copy()),
            "fit_time_s": float(self.fit_time_s),
        }

    @classmethod
    def from_state(cls, state: dict) -> "GPEmulator":
        """Inverse of :meth:`state`: predictions are bit-identical to the saved emulator's."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"GPEmulator state version {state.get('version')!r} not understood (expected {_STATE_VERSION})")
        self = cls()
        self.settings = dict(state["settings"])
        self.output_names = list(state["output_names"])
        self.input_names = list(state["input_names"])
        self._X = state["X"].to(_DTYPE)
        self._Y = state["Y"].numpy().astype(np.float64)
        self.n_train, self.d = self._X.shape
        self.n_outputs = self._Y.shape[1]
        self._t_mean, self._t_std = state["t_mean"], state["t_std"]
        self._pca = state["pca"]
        Z = state["targets"]
        self.n_gp = Z.shape[0]
        s = self.settings
        self.model = _make_model(self._X.expand(self.n_gp, *self._X.shape), Z, s["mean"], s["kernel"], s["noise_lower"])
        self.model.load_state_dict(state["model"])
        self.model.eval()
        c = state["cache"]
        self._alpha, self._Linv, self._Kinv = c["alpha"], c["Linv"], c["Kinv"]
        self._LinvT = self._Linv.transpose(-1, -2).contiguous()
        self.loss = state["loss"].numpy()
        self.fit_time_s = state["fit_time_s"]
        return self

    def save(self, path) -> Path:
        """``torch.save`` of :meth:`state` (creates the folder)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)
        return path

    @classmethod
    def load(cls, path) -> "GPEmulator":
        """Read a file written by :meth:`save` (``weights_only`` loading: no code runs)."""
        return cls.from_state(torch.load(Path(path), weights_only=True))

    def __repr__(self):
        pca = "" if self._pca is None else f", pca={self.n_gp} components"
        return (f"GPEmulator({self.n_outputs} outputs, d={self.d}, n_train={self.n_train}, "
                f"mean={self.settings['mean']!r}, kernel={self.settings['kernel']!r}{pca})")


# ---------------------------------------------------------------- fitting


def _names(names, k: int, prefix: str, what: str) -> list:
    if names is None:
        return [f"{prefix}{i}" for i in range(k)]
    names = [str(v) for v in names]
    if len(names) != k:
        raise ValueError(f"{what} has {len(names)} names for {k} columns")
    if len(set(names)) != k:
        raise ValueError(f"{what} must be unique")
    return names


def _pca_basis(Y: np.ndarray, pca) -> dict:
    """Centred PCA of ``Y (n, m)``: mean ``(m,)``, ``W (m, k)``, discarded variance ``(m,)``."""
    n, m = Y.shape
    Yt = torch.as_tensor(Y, dtype=_DTYPE)
    mu = Yt.mean(0)
    _, S, Vh = torch.linalg.svd(Yt - mu, full_matrices=False)
    ev = S**2 / max(n - 1, 1)
    rank = int((S > S[0] * 1e-12).sum()) if S[0] > 0 else 0
    if rank == 0:
        raise ValueError("Y is constant over the runs: nothing for a PCA basis to capture")
    if isinstance(pca, (bool, np.bool_)) or not isinstance(pca, (int, float, np.integer, np.floating)):
        raise ValueError(f"pca must be None, an int (components) or a float in (0, 1] (variance fraction), got {pca!r}")
    if isinstance(pca, (int, np.integer)):
        if not 1 <= pca <= rank:
            raise ValueError(f"pca={pca} components, but the centred outputs have rank {rank}: use 1..{rank}")
        k = int(pca)
    else:
        if not 0 < pca <= 1:
            raise ValueError(f"pca as a float is an explained-variance fraction in (0, 1], got {pca}")
        frac = torch.cumsum(ev, 0) / ev.sum()
        k = min(int((frac < pca - 1e-12).sum()) + 1, rank)
    W = Vh[:k].T.contiguous()  # (m, k)
    resid = (Vh[k:].T.pow(2) * ev[k:]).sum(1) if k < Vh.shape[0] else torch.zeros(m, dtype=_DTYPE)
    return {"mean": mu, "W": W, "resid_var": resid, "explained": (ev[:k].sum() / ev.sum()).reshape(1)}


class _GaussianNLL(torch.autograd.Function):
    """``1/2 r^T K^-1 r + 1/2 log|K|`` per batch member, ``K (..., n, n)``, ``r (..., n)``.

    Backward is the closed form ``dNLL/dK = 1/2 (K^-1 - alpha alpha^T)``, ``dNLL/dr = alpha``
    (``alpha = K^-1 r``; Rasmussen & Williams eq. 5.9), cheaper than differentiating
    through the Cholesky factorisation.
    """

    @staticmethod
    def forward(ctx, K, r):
        L, info = torch.linalg.cholesky_ex(K)
        if (info > 0).any():
            raise torch.linalg.LinAlgError("covariance not positive definite while fitting the GP")
        alpha = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
        ctx.save_for_backward(L, alpha)
        return 0.5 * (r * alpha).sum(-1) + L.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @staticmethod
    def backward(ctx, g):
        L, alpha = ctx.saved_tensors
        Kinv = torch.cholesky_inverse(L)
        gK = 0.5 * g[..., None, None] * (Kinv - alpha.unsqueeze(-1) * alpha.unsqueeze(-2))
        return gK, g[..., None] * alpha


def _neg_log_posterior(model: _BatchExactGP, X: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """``-(log p(z | theta) + log p(theta)) / n`` per batch member: X ``(*b, n, d)``, Z ``(*b, n)``.

    Equals gpytorch's ``ExactMarginalLogLikelihood`` (a test checks it) with an analytic gradient.
    """
    n = Z.shape[-1]
    K = model.covar_module(X).to_dense()
    K = K + model.likelihood.noise.unsqueeze(-1) * torch.eye(n, dtype=K.dtype)
    r = Z - model.mean_module(X)
    ll = -_GaussianNLL.apply(K, r) - 0.5 * n * math.log(2 * math.pi)
    for _, module, prior, closure, _ in model.named_priors():
        lp = prior.log_prob(closure(module))
        ll = ll + lp.reshape(*Z.shape[:-1], -1).sum(-1)
    return -ll / n


def _fit_batched(X: torch.Tensor, Z: torch.Tensor, s: dict):
    """Type-II MAP of ``k`` independent GPs with ``R`` restarts in one ``(R, k)`` batch.

    X ``(n, d)``, Z ``(k, n)`` standardised targets. Returns the state dict of a
    ``(k,)``-batch model holding the best restart per output, and its loss ``(k,)``.
    """
    R, k, (n, d) = s["n_restarts"], Z.shape[0], X.shape
    gen = torch.Generator().manual_seed(s["seed"])
    Xb = X.expand(R, k, n, d)
    Zb = Z.expand(R, k, n)
    model = _make_model(Xb, Zb, s["mean"], s["kernel"], s["noise_lower"])

    with torch.no_grad():
        # start: ridge fit of the mean; restart 0 at lengthscale 1/3, noise 1e-3; others random
        H = torch.cat([torch.ones(n, 1, dtype=_DTYPE), _features(X, s["mean"])], -1)  # (n, p+1)
        A = H.T @ H + 1e-3 * torch.eye(H.shape[1], dtype=_DTYPE)
        coef = torch.linalg.solve(A, H.T @ Z.T).T  # (k, p+1)
        model.mean_module.bias.copy_(coef[:, :1].expand(R, k, 1))
        model.mean_module.weights.copy_(coef[:, 1:].expand(R, k, -1))
        ls = torch.full((R, k, 1, d), 1.0 / 3.0, dtype=_DTYPE)
        noise = torch.full((R, k, 1), 1e-3, dtype=_DTYPE)
        res_var = (Z - coef @ H.T).var(-1).clamp(0.05, 1.0)
        osc = res_var.expand(R, k).clone()
        if R > 1:  # the same random starts for every output, so outputs stay independent
            ls[1:] = _gamma(gen, 3.0, 6.0, (R - 1, 1, 1, d)).clamp_min(0.02)
            noise[1:] = 10.0 ** (-5.0 + 4.0 * torch.rand((R - 1, 1, 1), generator=gen, dtype=_DTYPE))
            osc[1:] = osc[1:] * 10.0 ** (-0.5 + torch.rand((R - 1, 1), generator=gen, dtype=_DTYPE))
        model.covar_module.base_kernel.lengthscale = ls
        model.likelihood.noise = noise.clamp_min(s["noise_lower"] * 1.01)
        model.covar_module.outputscale = osc

    model.train()
    # 1) Adam, cosine decay lr -> lr/10: elementwise, so every (restart, output) is on its own
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(s["n_iter"], 1), eta_min=s["lr"] / 10)
    for _ in range(s["n_iter"]):
        opt.zero_grad(set_to_none=True)
        loss = _neg_log_posterior(model, Xb, Zb)  # (R, k)
        loss.sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        loss = _finite(_neg_log_posterior(model, Xb, Zb))

    # 2) L-BFGS on the sum (the Hessian is block diagonal, so this converges for every
    #    member; the shared line search couples them only through step lengths). Members
    #    that end worse than after Adam, or a failed run, keep Adam's values.
    if s["lbfgs_iter"] > 0:
        adam = {kk: v.clone() for kk, v in model.state_dict().items()}
        lb = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=s["lbfgs_iter"], history_size=20,
                               line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure():
            lb.zero_grad(set_to_none=True)
            val = _neg_log_posterior(model, Xb, Zb).sum()
            val.backward()
            return val

        try:
            lb.step(closure)
            with torch.no_grad():
                loss_lb = _finite(_neg_log_posterior(model, Xb, Zb))
        except (RuntimeError, ValueError):  # torch.linalg.LinAlgError is a RuntimeError
            loss_lb = torch.full_like(loss, float("inf"))
        keep = loss_lb <= loss  # (R, k)
        with torch.no_grad():
            new = model.state_dict()
            for kk, v in adam.items():
                if v.dim() >= 2 and v.shape[:2] == (R, k):
                    kb = keep.reshape(R, k, *([1] * (v.dim() - 2)))
                    new[kk].copy_(torch.where(kb, new[kk], v))
        loss = torch.where(keep, loss_lb, loss)

    best = loss.argmin(0)  # (k,)
    cols = torch.arange(k)
    state = {}
    for name, v in model.state_dict().items():
        if v.dim() >= 2 and v.shape[:2] == (R, k):
            state[name] = v[best, cols].clone()
        else:
            state[name] = v.clone()
    # train inputs/targets are not in the state dict; priors' buffers are scalars
    return state, loss[best, cols].detach().numpy()


class _threads:
    """Context manager: run torch on ``n`` threads, restore the previous number after."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        if self.n != self.prev:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.prev:
            torch.set_num_threads(self.prev)


def _finite(loss: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(loss), loss, torch.full_like(loss, float("inf"))).detach()


def _gamma(gen: torch.Generator, concentration: float, rate: float, shape) -> torch.Tensor:
    """Gamma draws from a seeded generator (torch.distributions.Gamma takes no generator):
    Marsaglia-Tsang for concentration >= 1."""
    dd = concentration - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * dd)
    out = torch.empty(shape, dtype=_DTYPE)
    flat = out.view(-1)
    filled = 0
    while filled < flat.numel():
        need = flat.numel() - filled
        z = torch.randn(2 * need + 8, generator=gen, dtype=_DTYPE)
        u = torch.rand(2 * need + 8, generator=gen, dtype=_DTYPE)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z**2 + dd - dd * v + dd * torch.log(v.clamp_min(1e-300)))
        acc = (dd * v[ok])[:need]
        flat[filled : filled + acc.numel()] = acc
        filled += acc.numel()
    return out / rate
