"""Strong-constraint 4D-Var over any step function ``x_{k+1} = M(x_k, t_k)`` on torch tensors.

One window of ``n_steps`` model steps from ``t0``; the control is the state at its start
``x_0``; observations ``y_j`` are valid at steps ``s_j`` of the window (``0 <= s_j <= n_steps``)::

    J(x_0) = 1/2 (x_0 - x_b)^T B^-1 (x_0 - x_b)
           + 1/2 sum_j (y_j - h(x_{s_j}))^T R^-1 (y_j - h(x_{s_j})),     x_{k+1} = M(x_k, t0 + k dt)

(the DESIGN's ``J(x)`` with the model integrated over the window). It is minimised in the
preconditioned control ``v`` with ``x_0 = x_b + L v``, ``B = L L^T`` (Cholesky), where the
background term is ``1/2 v^T v`` and the Hessian ``I + L^T G^T R^-1 G L`` is well conditioned.
Two ways (:class:`Var4D` ``method``):

- ``"nonlinear"``: L-BFGS (scipy's L-BFGS-B) on the full nonlinear ``J(v)``; the gradient is
  reverse-mode autograd through the whole window, i.e. the adjoint of the model's own
  tangent-linear model.
- ``"incremental"`` (Courtier et al. 1994): outer loops run the nonlinear model from the
  current guess ``x_g`` and form innovations ``d_j = y_j - h(x^g_{s_j})``; each inner loop
  minimises (L-BFGS) the quadratic cost of an increment ``dx_0 = L w``::

      J(w) = 1/2 |v_g + w|^2 + 1/2 sum_j |R^-1/2 (d_j - H_j dx_{s_j})|^2,   dx_{k+1} = M'_k dx_k,

  ``v_g = L^-1 (x_g - x_b)``, with gradient ``v_g + w - L^T lambda_0`` from the adjoint sweep
  ``lambda_k = M'_k^T lambda_{k+1} + H_k^T R^-1 (d_k - H_k dx_k)``. ``M'_k`` (TL) and
  ``M'_k^T`` (AD) are autograd's derivatives of ``linear_step`` at the outer-loop trajectory:
  the model's own (default) or, e.g., those of a machine-learnt emulator of the model
  (:class:`ailand.lorenz96_emulator.L96Emulator`), with the innovations still from the model.

:func:`tangent_linear` / :func:`adjoint` apply the derivatives of any ``f(x)``; the standard
checks :func:`tangent_linear_test` (Taylor remainder ``O(eps^2)``) and :func:`adjoint_test`
(``<M' dx, dy> = <dx, M'^T dy>``) take any ``f`` (a step, a window, an observation operator).
:func:`cycle` runs windows back to back: the analysis at a window's end (``x_0`` analysed,
propagated by the model) is the next window's background; ``B`` is static.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.optimize
import torch
import xarray as xr

log = logging.getLogger(__name__)

METHODS = ("nonlinear", "incremental")
Step = Callable[[torch.Tensor, float], torch.Tensor]


# ====================================================================== TL / AD and their tests
def _f64(a, like: torch.Tensor | None = None) -> torch.Tensor:
    dtype = like.dtype if like is not None else torch.float64
    if torch.is_tensor(a):
        return a.detach().to(dtype)
    return torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype)


def tangent_linear(f: Callable, x: torch.Tensor, dx: torch.Tensor, mode: str = "double-backward"):
    """``(f(x), M' dx)``: the tangent-linear model of ``f`` at ``x`` applied to ``dx`` (same shape
    as ``x``), by autograd.

    ``mode``: ``"double-backward"`` (default: the reverse pass ``g(u) = M'^T u`` is linear in
    ``u``, and its own reverse pass gives ``M' dx``; works for any code autograd differentiates
    twice), ``"jvp"`` (forward mode, :func:`torch.func.jvp`; its first use in a process loads
    torch's forward-mode decompositions, a few seconds), ``"auto"`` (jvp, and the double
    backward where forward mode raises). Shapes are those of ``f``: any ``x``, any ``f(x)``.
    """
    if mode not in ("auto", "jvp", "double-backward"):
        raise ValueError(f"mode must be 'auto', 'jvp' or 'double-backward', got {mode!r}")
    x = x.detach()
    dx = dx.detach().to(x.dtype)
    if dx.shape != x.shape:
        raise ValueError(f"dx must have the shape of x {tuple(x.shape)}, got {tuple(dx.shape)}")
    if mode in ("auto", "jvp"):
        try:
            with warnings.catch_warnings():  # torch scripts its jvp decompositions with a deprecated API
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
                y, tl = torch.func.jvp(f, (x,), (dx,))
            return y.detach(), tl.detach()
        except (RuntimeError, NotImplementedError) as e:
            if mode == "jvp":
                raise
            log.debug("forward-mode jvp failed (%s); tangent-linear by double backward", e)
    with torch.enable_grad():
        xr_ = x.clone().requires_grad_(True)
        y = f(xr_)
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, xr_, u, create_graph=True)
        (tl,) = torch.autograd.grad(g, u, dx, allow_unused=True)
    if tl is None:
        tl = torch.zeros_like(y)
    return y.detach(), tl.detach()


def adjoint(f: Callable, x: torch.Tensor, dy: torch.Tensor):
    """``(f(x), M'^T dy)``: the adjoint of the tangent-linear model of ``f`` at ``x`` applied to
    ``dy`` (shape of ``f(x)``), by reverse-mode autograd; the result has the shape of ``x``."""
    with torch.enable_grad():
        xr_ = x.detach().clone().requires_grad_(True)
        y = f(xr_)
        if dy.shape != y.shape:
            raise ValueError(f"dy must have the shape of f(x) {tuple(y.shape)}, got {tuple(dy.shape)}")
        (g,) = torch.autograd.grad(y, xr_, dy.detach().to(y.dtype), allow_unused=True)
    if g is None:
        g = torch.zeros_like(xr_)
    return y.detach(), g.detach()


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(torch.float64) * b.to(torch.float64)).sum())


def _randn_like(x: torch.Tensor, rng: np.random.Generator, scale: float = 1.0) -> torch.Tensor:
    return torch.as_tensor(scale * rng.standard_normal(tuple(x.shape)), dtype=x.dtype)


@dataclass
class TaylorTest:
    """Result of :func:`tangent_linear_test`.

    ``eps (k,)``, ``remainder (k,)`` = ``||f(x + eps dx) - f(x) - eps M' dx||``, ``slope (k-1,)``
    the local log-log slope between consecutive ``eps`` (2 where the remainder is ``O(eps^2)``),
    ``eps_range`` the widest range of consecutive ``eps`` over which every slope lies within
    ``2 +- slope_tol``, ``decades`` its width in powers of ten, ``passed`` = ``decades >=
    min_decades``. ``tl_norm`` = ``||M' dx||``.
    """

    eps: np.ndarray
    remainder: np.ndarray
    slope: np.ndarray
    eps_range: tuple
    decades: float
    passed: bool
    tl_norm: float
    min_decades: float

    def to_dict(self) -> dict:
        return {"eps": self.eps.tolist(), "remainder": self.remainder.tolist(), "slope": self.slope.tolist(),
                "eps_range": list(self.eps_range), "decades": self.decades, "passed": self.passed,
                "tl_norm": self.tl_norm}

    def __str__(self):
        rows = [f"{'eps':>10}{'remainder':>13}{'slope':>8}"]
        for i, (e, r) in enumerate(zip(self.eps, self.remainder)):
            s = f"{self.slope[i - 1]:8.2f}" if i else f"{'':8}"
            rows.append(f"{e:10.1e}{r:13.3e}{s}")
        lo, hi = self.eps_range
        rows.append(f"O(eps^2) over eps in [{lo:.0e}, {hi:.0e}] ({self.decades:.0f} decades): "
                    f"{'passed' if self.passed else 'FAILED'}")
        return "\n".join(rows)


def tangent_linear_test(f: Callable, x, dx=None, eps=None, seed: int = 0, slope_tol: float = 0.1,
                        min_decades: float = 3.0, mode: str = "double-backward") -> TaylorTest:
    """Taylor test of the tangent-linear model of ``f`` at ``x``.

    The remainder ``r(eps) = ||f(x + eps dx) - f(x) - eps M' dx||`` of a correct TL falls as
    ``eps^2`` (slope 2 on log-log axes) until round-off (about ``machine eps * ||f(x)||``) takes
    over at small ``eps``; a wrong TL gives slope 1. ``x`` any shape (float64 recommended);
    ``dx`` default: normal with the RMS of ``x`` (seeded); ``eps`` default ``10^0 .. 10^-8``
    (decreasing). Passes when the slope is ``2 +- slope_tol`` over at least ``min_decades``
    consecutive decades. Any ``f``: a model step, a window, an observation operator.
    """
    x = _f64(x) if not torch.is_tensor(x) else x.detach()
    rng = np.random.default_rng(seed)
    if dx is None:
        s = float(x.pow(2).mean().sqrt()) or 1.0
        dx = _randn_like(x, rng, s)
    dx = _f64(dx, x)
    eps = np.asarray(10.0 ** -np.arange(0, 9) if eps is None else eps, dtype=float)
    if eps.ndim != 1 or eps.size < 2 or np.any(eps <= 0) or np.any(np.diff(eps) >= 0):
        raise ValueError("eps must be a decreasing sequence of at least 2 positive numbers")
    y, tl = tangent_linear(f, x, dx, mode)
    with torch.no_grad():
        rem = np.array([float((f(x + e * dx).detach() - y - e * tl).to(torch.float64).norm()) for e in eps])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.log10(rem[:-1] / rem[1:]) / np.log10(eps[:-1] / eps[1:])
    good = np.abs(slope - 2.0) <= slope_tol
    best, lo_hi = 0.0, (float("nan"), float("nan"))
    i = 0
    while i < good.size:
        if good[i]:
            j = i
            while j + 1 < good.size and good[j + 1]:
                j += 1
            width = float(np.log10(eps[i] / eps[j + 1]))
            if width > best:
                best, lo_hi = width, (float(eps[j + 1]), float(eps[i]))
            i = j + 1
        else:
            i += 1
    return TaylorTest(eps, rem, slope, lo_hi, best, bool(best >= min_decades - 1e-9), float(tl.norm()), min_decades)


@dataclass
class AdjointTest:
    """Result of :func:`adjoint_test`: ``lhs = <M' dx, dy>``, ``rhs = <dx, M'^T dy>``,
    ``rel_error = |lhs - rhs| / max(|lhs|, |rhs|)``, ``passed = rel_error <= tol``."""

    lhs: float
    rhs: float
    rel_error: float
    tol: float
    passed: bool

    def to_dict(self) -> dict:
        return {"lhs": self.lhs, "rhs": self.rhs, "rel_error": self.rel_error, "tol": self.tol, "passed": self.passed}

    def __str__(self):
        return (f"<M' dx, dy> = {self.lhs:.16e}\n<dx, M'^T dy> = {self.rhs:.16e}\n"
                f"relative difference {self.rel_error:.2e} (tol {self.tol:.0e}): {'passed' if self.passed else 'FAILED'}")


def adjoint_test(f: Callable, x, dx=None, dy=None, seed: int = 0, tol: float | None = None,
                 mode: str = "double-backward") -> AdjointTest:
    """Dot-product test of the adjoint of ``f`` at ``x``: ``<M' dx, dy> = <dx, M'^T dy>``.

    ``M' dx`` by :func:`tangent_linear` (``mode``: the double backward, or forward mode with
    ``"jvp"``), ``M'^T dy`` by :func:`adjoint` (one reverse pass): two different autograd
    computations, so the test checks that they are one linear map and its transpose. ``dx`` (shape of ``x``) and ``dy`` (shape of ``f(x)``) default to seeded
    standard normals. ``tol`` default ``1e4 * machine eps`` of ``x``'s dtype (2.2e-12 in float64).
    """
    x = _f64(x) if not torch.is_tensor(x) else x.detach()
    rng = np.random.default_rng(seed)
    dx = _randn_like(x, rng) if dx is None else _f64(dx, x)
    y, tl = tangent_linear(f, x, dx, mode)
    dy = _randn_like(y, rng) if dy is None else _f64(dy, y)
    _, ad = adjoint(f, x, dy)
    lhs, rhs = _dot(tl, dy), _dot(dx, ad)
    tol = 1e4 * float(torch.finfo(x.dtype).eps) if tol is None else float(tol)
    den = max(abs(lhs), abs(rhs))
    rel = abs(lhs - rhs) / den if den > 0 else 0.0
    return AdjointTest(lhs, rhs, rel, tol, bool(rel <= tol))


# ====================================================================== error covariances
class Covariance:
    """An error covariance for 4D-Var: a number (``variance * I``), ``(n,)`` variances or an
    ``(n, n)`` symmetric positive-definite matrix, kept as its factor ``L`` (``C = L L^T``:
    standard deviations or the lower Cholesky factor). ``name`` and ``units`` name it in errors."""

    def __init__(self, C, n: int | None, name: str = "B", units: str = ""):
        a = np.asarray(C.detach().cpu().numpy() if torch.is_tensor(C) else C, dtype=float)
        u = f" [{units}^2]" if units else ""
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} has non-finite entries")
        if a.ndim == 0:
            if a <= 0:
                raise ValueError(f"{name}: the variance must be > 0, got {float(a)}; give an error variance{u}")
            if n is None:
                raise ValueError(f"{name}: a scalar variance needs the size n")
            self.diag, self.n = np.full(n, math.sqrt(float(a))), n
        elif a.ndim == 1:
            if n is not None and a.size != n:
                raise ValueError(f"{name} must have {n} variances (one per {'state variable' if name == 'B' else 'observation'}), "
                                 f"got {a.size}")
            if np.any(a <= 0):
                i = int(np.argmin(a))
                raise ValueError(f"{name}: variances must be > 0, got {a[i]} at index {i}; give error variances{u}, "
                                 "not standard deviations of either sign")
            self.diag, self.n = np.sqrt(a), a.size
        elif a.ndim == 2:
            if a.shape[0] != a.shape[1] or (n is not None and a.shape[0] != n):
                raise ValueError(f"{name} must be ({n}, {n}), got {a.shape}")
            if not np.allclose(a, a.T, rtol=1e-10, atol=1e-12 * np.abs(a).max()):
                raise ValueError(f"{name} must be symmetric")
            if np.any(np.diag(a) <= 0):
                i = int(np.argmin(np.diag(a)))
                raise ValueError(f"{name}: variances (the diagonal) must be > 0, got {a[i, i]} at index {i}")
            try:
                L = np.linalg.cholesky(a)
            except np.linalg.LinAlgError:
                raise ValueError(f"{name} must be positive definite (its Cholesky factorisation failed; a sample "
                                 "covariance of fewer independent states than variables is singular)") from None
            self.diag, self.L, self.n = None, torch.as_tensor(L), a.shape[0]
            self.matrix = torch.as_tensor(a)
            return
        else:
            raise ValueError(f"{name} must be a variance, (n,) variances or an (n, n) matrix, got shape {a.shape}")
        self.diag = torch.as_tensor(self.diag)
        self.L = None
        self.matrix = None

    def dense(self) -> torch.Tensor:
        """``(n, n)`` matrix."""
        return torch.diag(self.diag ** 2) if self.L is None else self.matrix

    def sqrt_mul(self, v: torch.Tensor) -> torch.Tensor:
        """``L v`` for ``v (n,)``."""
        return self.diag * v if self.L is None else self.L @ v

    def sqrt_t_mul(self, v: torch.Tensor) -> torch.Tensor:
        """``L^T v``."""
        return self.diag * v if self.L is None else self.L.T @ v

    def whiten(self, r: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``L_s^-1 r_s``: the residual ``r`` of the entries ``mask`` (all when None) whitened
        by the factor of the covariance's sub-block."""
        if self.L is None:
            return r / (self.diag if mask is None else self.diag[mask])
        if mask is None:
            return torch.linalg.solve_triangular(self.L, r[:, None], upper=False)[:, 0]
        Ls = self._sub_factor(mask)
        return torch.linalg.solve_triangular(Ls, r[:, None], upper=False)[:, 0]

    def whiten_t(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``L_s^-T z`` (the adjoint of :meth:`whiten`)."""
        if self.L is None:
            return z / (self.diag if mask is None else self.diag[mask])
        Ls = self.L if mask is None else self._sub_factor(mask)
        return torch.linalg.solve_triangular(Ls.T, z[:, None], upper=True)[:, 0]

    def _sub_factor(self, mask: torch.Tensor) -> torch.Tensor:
        key = tuple(mask.tolist())
        cache = self.__dict__.setdefault("_subs", {})
        if key not in cache:
            cache[key] = torch.linalg.cholesky(self.matrix[mask][:, mask])
        return cache[key]

    def inv_sqrt_mul(self, v: torch.Tensor) -> torch.Tensor:
        """``L^-1 v`` for ``v (n,)``."""
        return self.whiten(v)


# ====================================================================== observation operators
def _observer(obs_op, obs_time: bool):
    """``obs_op`` -> callable ``h(x, t) -> (m,)``: a callable ``h(x)`` (or ``h(x, t)`` with
    ``obs_time``), an integer index array into the flattened state, or an ``(m, n)`` matrix."""
    if callable(obs_op):
        return obs_op if obs_time else (lambda x, t: obs_op(x))
    a = np.asarray(obs_op)
    if a.ndim == 1 and np.issubdtype(a.dtype, np.integer):
        idx = torch.as_tensor(a, dtype=torch.long)
        return lambda x, t: x.reshape(-1)[idx]
    if a.ndim == 2:
        H = torch.as_tensor(a, dtype=torch.float64)
        return lambda x, t: H.to(x.dtype) @ x.reshape(-1)
    raise ValueError("obs_op must be a callable x -> (m,), an integer index array (observed entries of the "
                     "flattened state) or an (m, n) matrix")


class Linearisation:
    """The tangent-linear and adjoint models of ``f`` at ``x``, built once and applied many times.

    ``tl(dx) = f'(x) dx`` and ``ad(dy) = f'(x)^T dy`` (shapes of ``x`` / ``f(x)``); ``y = f(x)``.

    - matrix-free (``dense=False``): both are reverse passes through graphs built once:
      ``ad`` through ``f``'s own graph, ``tl`` through ``g(u) = f'(x)^T u`` (one reverse pass with
      ``create_graph``), which is linear in ``u``, so its reverse pass gives ``f'(x) dx`` (the
      "double backward" tangent-linear), for any ``f`` autograd can differentiate twice;
    - dense (``dense=True``): the Jacobian ``J (f(x).numel(), x.numel())`` by autograd (one
      batched reverse pass, or one pass per output where batching is not supported), then
      ``tl = J dx``, ``ad = J^T dy``: two small matrix products, for small states (the cost of
      building ``J`` is repaid after a few inner iterations).

    Either way the derivatives are autograd's; an incremental 4D-Var applies them in every
    inner iteration.
    """

    def __init__(self, f: Callable, x: torch.Tensor, dense: bool = False):
        self.x = x.detach().clone().requires_grad_(True)
        self.dense = bool(dense)
        with torch.enable_grad():
            self._y = f(self.x)
            self.y = self._y.detach()
            if self.dense:
                self.J = self._jacobian()
                return
            self.u = torch.zeros_like(self._y, requires_grad=True)
            (g,) = torch.autograd.grad(self._y, self.x, self.u, create_graph=True, allow_unused=True)
        self.g = g

    def _jacobian(self) -> torch.Tensor:
        m, n = self._y.numel(), self.x.numel()
        if not self._y.requires_grad:
            return torch.zeros(m, n, dtype=self.y.dtype)
        eye = torch.eye(m, dtype=self._y.dtype).reshape((m,) + tuple(self._y.shape))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a vmap fallback warning: use the loop instead
                (J,) = torch.autograd.grad(self._y, self.x, eye, retain_graph=True, is_grads_batched=True,
                                           allow_unused=True)
        except (RuntimeError, NotImplementedError, UserWarning) as e:
            log.debug("batched Jacobian failed (%s); one reverse pass per output", e)
            rows = []
            for i in range(m):
                (r,) = torch.autograd.grad(self._y, self.x, eye[i], retain_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(self.x) if r is None else r)
            J = torch.stack(rows)
        if J is None:
            return torch.zeros(m, n, dtype=self.y.dtype)
        return J.detach().reshape(m, n)

    def tl(self, dx: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return (self.J @ dx.reshape(-1)).reshape(self.y.shape)
        if self.g is None or not self.g.requires_grad:
            return torch.zeros_like(self.y)
        (t,) = torch.autograd.grad(self.g, self.u, dx, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.y) if t is None else t

    def ad(self, dy: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return (self.J.T @ dy.reshape(-1)).reshape(self.x.shape)
        if self.g is None:
            return torch.zeros_like(self.x)
        (a,) = torch.autograd.grad(self._y, self.x, dy, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.x) if a is None else a.detach()


# ====================================================================== one window
@dataclass
class Var4DResult:
    """One window's analysis.

    ``x0 (*state)`` the analysis at the window start (the control), ``xb (*state)`` the
    background there, ``x_end`` / ``xb_end (*state)`` the analysis / background propagated by
    the nonlinear model to the window end, ``cost_b`` / ``cost_a`` the nonlinear ``J`` at the
    background and the analysis, ``n_obs`` observations used, ``n_iter`` L-BFGS iterations
    (all inner loops), ``n_fun`` cost evaluations, ``n_model`` / ``n_tl`` / ``n_ad`` nonlinear /
    tangent-linear / adjoint step applications, ``n_outer`` outer loops (incremental),
    ``converged``, ``message``, ``wall_s`` [s]."""

    x0: torch.Tensor
    xb: torch.Tensor
    x_end: torch.Tensor
    xb_end: torch.Tensor
    cost_b: float
    cost_a: float
    n_obs: int
    n_iter: int = 0
    n_fun: int = 0
    n_model: int = 0
    n_tl: int = 0
    n_ad: int = 0
    n_outer: int = 0
    converged: bool = True
    message: str = ""
    wall_s: float = 0.0
    history: list = field(default_factory=list)


class Var4D:
    """Strong-constraint 4D-Var over windows of ``n_steps`` steps of ``step`` (module docstring).

    Parameters
    ----------
    step : ``step(x, t) -> x``: one model step from time ``t`` [units of ``dt``], on a float64
        tensor ``x (*state)`` (any shape; the control is ``x`` flattened, C order); differentiable
        by autograd (``method="nonlinear"``) or at least runnable (``"incremental"``, whose
        derivatives come from ``linear_step``). Extra leading batch dims are not used.
    obs_op : observation operator ``h(x) -> (m,)`` (``h(x, t)`` with ``obs_time=True``, ``t`` the
        observation time), an integer index array into the flattened state, or an ``(m, n)``
        matrix; differentiable.
    B : background error covariance of the control [state units^2]: a number, ``(n,)``
        variances or ``(n, n)`` SPD, ``n = x.numel()``.
    R : observation error covariance [obs units^2]: a number, ``(m,)`` or ``(m, m)``; the same
        at every observation time (NaN in ``y`` drops an observation: its row and column).
    n_steps : model steps per window (>= 1).
    obs_steps : steps of the window (``0 .. n_steps``, increasing) at which observations are
        valid; default ``[n_steps]`` (the window end: DAPPER's ``Var4D(Lag=1)``).
    dt : step length [time units]; step ``k`` of a window from ``t0`` starts at ``t0 + k dt``.
    method : ``"nonlinear"`` (L-BFGS on the full cost) or ``"incremental"`` (outer loops with the
        nonlinear model, inner L-BFGS with the TL/AD of ``linear_step``).
    linear_step : the step whose autograd TL/AD are used by ``"incremental"`` (default ``step``),
        e.g. an emulator's ``step``.
    n_outer : outer loops (incremental).
    max_iter : L-BFGS iterations (per inner loop for incremental).
    gtol : L-BFGS stops when the largest gradient component of ``J(v)`` (dimensionless: the
        control is in units of the background standard deviation) is below it.
    obs_time : call ``obs_op(x, t)``.
    jacobian : how ``"incremental"`` applies TL/AD (:class:`Linearisation`): ``"matrix-free"``
        (reverse passes through autograd graphs in every inner iteration), ``"dense"`` (the step's
        and ``obs_op``'s Jacobians by autograd once per outer loop, then matrix products), or
        ``"auto"`` (dense while the state has at most 400 entries).
    """

    def __init__(self, step: Step, obs_op, B, R, n_steps: int, obs_steps=None, dt: float = 1.0, *,
                 method: str = "nonlinear", linear_step: Step | None = None, n_outer: int = 3,
                 max_iter: int = 200, gtol: float = 1e-5, obs_time: bool = False, jacobian: str = "auto"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if linear_step is not None and method != "incremental":
            raise ValueError("linear_step is used by method='incremental' only (the nonlinear method's gradient "
                             "is the adjoint of step itself)")
        if int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        s = np.asarray([self.n_steps] if obs_steps is None else obs_steps)
        if s.ndim != 1 or (s.size and (not np.issubdtype(s.dtype, np.integer) or s.min() < 0 or s.max() > self.n_steps
                                       or np.any(np.diff(s) <= 0))):
            raise ValueError(f"obs_steps must be increasing integers in [0, n_steps={self.n_steps}], got {s.tolist()}")
        self.obs_steps = [int(v) for v in s]
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if int(n_outer) < 1 or int(max_iter) < 1 or not gtol > 0:
            raise ValueError(f"n_outer and max_iter must be >= 1 and gtol > 0, got {n_outer}, {max_iter}, {gtol}")
        if jacobian not in ("auto", "dense", "matrix-free"):
            raise ValueError(f"jacobian must be 'auto', 'dense' or 'matrix-free', got {jacobian!r}")
        self.jacobian = jacobian
        self.step, self.linear_step = step, (linear_step or step)
        self.h = _observer(obs_op, obs_time)
        self.dt, self.method, self.n_outer, self.max_iter, self.gtol = float(dt), method, int(n_outer), int(max_iter), float(gtol)
        self._B_in, self._R_in = B, R
        self.B: Covariance | None = None
        self.R: Covariance | None = None
        self._n = self._m = None
        # validate what can be validated without a state
        Covariance(B, None if np.ndim(B) else 1, "B")
        Covariance(R, None if np.ndim(R) else 1, "R")

    def __repr__(self):
        return (f"Var4D(method={self.method!r}, n_steps={self.n_steps}, obs_steps={self.obs_steps}, dt={self.dt}, "
                f"n_outer={self.n_outer}, gtol={self.gtol})")

    # ---------------------------------------------------------------- set-up on the first state
    def _setup(self, xb: torch.Tensor, t0: float):
        n = xb.numel()
        if self._n == n:
            return
        self.B = Covariance(self._B_in, n, "B")
        with torch.no_grad():
            x1 = self.step(xb, t0)
            if not torch.is_tensor(x1) or x1.shape != xb.shape:
                raise ValueError(f"step(x, t) must return a tensor of the state's shape {tuple(xb.shape)}, "
                                 f"got {tuple(x1.shape) if torch.is_tensor(x1) else type(x1).__name__}")
            try:
                hx = self.h(xb, t0)
            except IndexError as e:
                raise ValueError(f"obs_op: observation indices must lie in [0, {n}) (the flattened state): {e}") from None
            except RuntimeError as e:
                if "shape" in str(e) or "size" in str(e):
                    raise ValueError(f"obs_op does not fit a state of {n} entries: {e}") from None
                raise
        if not torch.is_tensor(hx) or hx.ndim != 1:
            raise ValueError(f"obs_op must return a vector (m,), got {tuple(hx.shape) if torch.is_tensor(hx) else type(hx).__name__}")
        m = hx.shape[0]
        self.R = Covariance(self._R_in, m, "R")
        self._n, self._m = n, m

    def _check_y(self, y) -> torch.Tensor:
        yt = _f64(y)
        no = len(self.obs_steps)
        if yt.ndim == 1 and no == 1:
            yt = yt[None]
        if yt.ndim != 2 or yt.shape[0] != no or yt.shape[1] != self._m:
            raise ValueError(f"y must be (n_obs_times, m) = ({no}, {self._m}): one row per obs_steps entry "
                             f"{self.obs_steps}, one column per observation of obs_op; got {tuple(yt.shape)}")
        if torch.isinf(yt).any():
            raise ValueError("y has infinite values (use NaN for a missing observation)")
        return yt

    def _trajectory(self, x0: torch.Tensor, t0: float) -> list[torch.Tensor]:
        xs = [x0]
        for k in range(self.n_steps):
            xs.append(self.step(xs[-1], t0 + k * self.dt))
        return xs

    def _obs_term(self, xs, y, masks, t0) -> torch.Tensor:
        J = xs[0].new_zeros(())
        for j, s in enumerate(self.obs_steps):
            mk = masks[j]
            if not bool(mk.any()):
                continue
            r = (y[j] - self.h(xs[s], t0 + s * self.dt))[mk]
            z = self.R.whiten(r, None if bool(mk.all()) else mk)
            J = J + 0.5 * (z * z).sum()
        return J

    def cost(self, x0, xb, y, t0: float = 0.0) -> tuple[float, float]:
        """``(J_b, J_o)`` at ``x0`` for background ``xb`` and observations ``y (n_obs_times, m)``."""
        xb = _f64(xb)
        self._setup(xb, t0)
        y = self._check_y(y)
        x0 = _f64(x0)
        with torch.no_grad():
            vb = self.B.inv_sqrt_mul((x0 - xb).reshape(-1))
            Jo = self._obs_term(self._trajectory(x0, t0), y, torch.isfinite(y), t0)
        return 0.5 * float((vb * vb).sum()), float(Jo)

    # ---------------------------------------------------------------- the analysis
    def analyse(self, xb, y, t0: float = 0.0) -> Var4DResult:
        """Analyse one window: background ``xb (*state)`` at ``t0``, observations ``y
        (n_obs_times, m)`` at ``t0 + obs_steps * dt`` (NaN: missing). Returns :class:`Var4DResult`.

        A window without any (finite) observation has the background as its analysis (logged
        at INFO on logger ``calibration.var4d.core``, ``n_obs = 0``)."""
        tic = time.perf_counter()
        xb = _f64(xb)
        if not torch.isfinite(xb).all():
            raise ValueError("xb has non-finite values")
        self._setup(xb, t0)
        y = self._check_y(y)
        masks = torch.isfinite(y)
        n_obs = int(masks.sum())
        with torch.no_grad():
            traj_b = self._trajectory(xb, t0)
            Jb = float(self._obs_term(traj_b, y, masks, t0))
        if n_obs == 0:
            log.info("window at t0=%g has no observations: the analysis is the background", t0)
            return Var4DResult(xb, xb, traj_b[-1], traj_b[-1], Jb, Jb, 0, n_model=self.n_steps,
                               message="no observations: analysis = background", wall_s=time.perf_counter() - tic)
        if self.method == "nonlinear":
            res = self._nonlinear(xb, y, masks, t0)
        else:
            res = self._incremental(xb, y, masks, t0)
        with torch.no_grad():
            traj_a = self._trajectory(res.x0, t0)
            res.cost_a = float(0.5 * (self.B.inv_sqrt_mul((res.x0 - xb).reshape(-1)) ** 2).sum()
                               + self._obs_term(traj_a, y, masks, t0))
        res.xb, res.x_end, res.xb_end, res.cost_b, res.n_obs = xb, traj_a[-1], traj_b[-1], Jb, n_obs
        res.n_model += 2 * self.n_steps
        res.wall_s = time.perf_counter() - tic
        return res

    def _nonlinear(self, xb, y, masks, t0) -> Var4DResult:
        shape = xb.shape
        count = {"f": 0}

        def fun(v_np):
            count["f"] += 1
            v = torch.as_tensor(v_np, dtype=torch.float64).requires_grad_(True)
            with torch.enable_grad():
                x0 = xb + self.B.sqrt_mul(v).reshape(shape)
                J = 0.5 * (v * v).sum() + self._obs_term(self._trajectory(x0, t0), y, masks, t0)
                (g,) = torch.autograd.grad(J, v)
            return float(J.detach()), g.numpy().astype(float)

        r = scipy.optimize.minimize(fun, np.zeros(xb.numel()), jac=True, method="L-BFGS-B",
                                    options={"maxiter": self.max_iter, "gtol": self.gtol, "ftol": 1e-14})
        x0 = xb + self.B.sqrt_mul(torch.as_tensor(r.x)).reshape(shape)
        nf = count["f"]
        return Var4DResult(x0, xb, x0, x0, 0.0, float(r.fun), 0, n_iter=int(r.nit), n_fun=nf,
                           n_model=nf * self.n_steps, n_ad=nf * self.n_steps, n_outer=1,
                           converged=bool(r.success), message=str(r.message))

    def _incremental(self, xb, y, masks, t0) -> Var4DResult:
        shape, n = xb.shape, xb.numel()
        xg = xb.clone()
        tot = {"iter": 0, "fun": 0, "model": 0, "tl": 0, "ad": 0}
        ok, msg, hist = True, "", []
        for outer in range(self.n_outer):
            with torch.no_grad():
                traj = self._trajectory(xg, t0)
            tot["model"] += self.n_steps
            # linearisations along the outer trajectory: M'_k and H_j (TL and AD from one autograd
            # graph each, built once per outer loop and reused by every inner iteration)
            dense = self.jacobian == "dense" or (self.jacobian == "auto" and n <= 400)
            M = [Linearisation(lambda z, k=k: self.linear_step(z, t0 + k * self.dt), traj[k], dense)
                 for k in range(self.n_steps)]
            Hl, d = {}, {}
            for j, s in enumerate(self.obs_steps):
                if bool(masks[j].any()):
                    Hl[s] = (j, Linearisation(lambda z, s=s: self.h(z, t0 + s * self.dt), traj[s], dense))
                    d[s] = y[j] - Hl[s][1].y
            vg = self.B.inv_sqrt_mul((xg - xb).reshape(-1))

            def fun(w_np):
                w = torch.as_tensor(w_np, dtype=torch.float64)
                dx = self.B.sqrt_mul(w).reshape(shape)           # dx_0 = L w
                J = 0.5 * float(((vg + w) ** 2).sum())
                forcing = {}
                for k in range(self.n_steps + 1):
                    if k in Hl:                                   # H_k^T R^-1 (d_k - H_k dx_k)
                        j, Hk = Hl[k]
                        mk = masks[j]
                        sub = None if bool(mk.all()) else mk
                        z = self.R.whiten((d[k] - Hk.tl(dx))[mk], sub)
                        J += 0.5 * float((z * z).sum())
                        lam_y = torch.zeros(self._m, dtype=torch.float64)
                        lam_y[mk] = self.R.whiten_t(z, sub)
                        forcing[k] = Hk.ad(lam_y)
                    if k < self.n_steps:
                        dx = M[k].tl(dx)                          # dx_{k+1} = M'_k dx_k
                lam = forcing.get(self.n_steps, torch.zeros(shape, dtype=torch.float64))
                for k in range(self.n_steps - 1, -1, -1):         # lambda_k = M'_k^T lambda_{k+1} + forcing_k
                    lam = M[k].ad(lam) + forcing.get(k, 0.0)
                tot["tl"] += self.n_steps
                tot["ad"] += self.n_steps
                grad = vg + w - self.B.sqrt_t_mul(lam.reshape(-1))
                return J, grad.numpy().astype(float)

            r = scipy.optimize.minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B",
                                        options={"maxiter": self.max_iter, "gtol": self.gtol, "ftol": 1e-14})
            tot["iter"] += int(r.nit)
            tot["fun"] += int(r.nfev)
            ok = ok and bool(r.success)
            msg = str(r.message)
            dxa = self.B.sqrt_mul(torch.as_tensor(r.x)).reshape(shape)
            xg = xg + dxa
            hist.append({"outer": outer, "inner_iter": int(r.nit), "J_inner": float(r.fun),
                         "increment_norm": float(dxa.norm())})
        return Var4DResult(xg, xb, xg, xg, 0.0, 0.0, 0, n_iter=tot["iter"], n_fun=tot["fun"], n_model=tot["model"],
                           n_tl=tot["tl"], n_ad=tot["ad"], n_outer=self.n_outer, converged=ok, message=msg,
                           history=hist)


# ====================================================================== cycling
def cycle(var: Var4D, xb0, y, t0: float = 0.0, truth=None, burn_in: float = 0.0, names=None,
          units: str = "1", progress: bool = False) -> xr.Dataset:
    """Cycled 4D-Var: windows back to back, each one's analysis propagated by the model to its
    end is the next one's background (``B`` static).

    Parameters
    ----------
    var : the :class:`Var4D` (window length ``n_steps``, ``obs_steps``, ``dt``).
    xb0 : ``(*state)`` background at ``t0``, the start of the first window.
    y : ``(n_windows, n_obs_times, m)`` observations: ``y[w, j]`` valid at ``t0 + (w n_steps +
        obs_steps[j]) dt``; NaN: missing.
    truth : optional ``(n_windows n_steps + 1, *state)`` true state at every model step from
        ``t0``: adds RMS errors.
    burn_in : windows ending at ``t <= burn_in`` are left out of the time averages.
    names, units : names of the (flattened) state variables and their units.

    Returns an :class:`xarray.Dataset` with dims ``time`` (window ends: the analysis times) and
    ``variable`` (flattened state): ``xb`` / ``xs`` (background / analysis at the window start),
    ``xf`` / ``xa`` (background forecast / analysis at the window end), ``rmse_b``, ``rmse_s``,
    ``rmse_f``, ``rmse_a`` against the truth, ``cost_b``, ``cost_a``, ``n_obs``, ``n_iter``,
    ``n_fun``, ``n_model``, ``n_tl``, ``n_ad``, ``wall_s``; attrs: the time averages after
    ``burn_in`` (``rmse_a``, ``rmse_f``, ``rmse_s``, ``wall_s_per_cycle``), the settings.
    """
    yt = _f64(y)
    if yt.ndim != 3 or yt.shape[1] != len(var.obs_steps):
        raise ValueError(f"y must be (n_windows, n_obs_times={len(var.obs_steps)}, m), got {tuple(yt.shape)}")
    xb = _f64(xb0)
    W, L = yt.shape[0], var.n_steps
    n = xb.numel()
    tr = None
    if truth is not None:
        tr = _f64(truth).reshape(-1, n)
        if tr.shape[0] != W * L + 1:
            raise ValueError(f"truth must have n_windows * n_steps + 1 = {W * L + 1} states (every model step from t0), "
                             f"got {tr.shape[0]}")
    keys = ("xb", "xs", "xf", "xa")
    out = {k: torch.empty(W, n, dtype=torch.float64) for k in keys}
    scal = {k: np.zeros(W) for k in ("cost_b", "cost_a", "n_obs", "n_iter", "n_fun", "n_model", "n_tl", "n_ad", "wall_s")}
    conv = np.zeros(W, dtype=bool)
    from tqdm.auto import tqdm

    for w in tqdm(range(W), disable=not progress, desc=f"4D-Var {var.method}", mininterval=0.5):
        tw = t0 + w * L * var.dt
        r = var.analyse(xb, yt[w], tw)
        out["xb"][w], out["xs"][w] = r.xb.reshape(-1), r.x0.reshape(-1)
        out["xf"][w], out["xa"][w] = r.xb_end.reshape(-1), r.x_end.reshape(-1)
        for k in scal:
            scal[k][w] = getattr(r, k)
        conv[w] = r.converged
        if not torch.isfinite(r.x_end).all():
            raise FloatingPointError(f"window {w} (t0={tw}): the analysis forecast is not finite")
        xb = r.x_end.detach()

    time_end = t0 + (np.arange(W) + 1) * L * var.dt
    names = [f"x{i}" for i in range(n)] if names is None else list(names)
    ds = xr.Dataset(coords={"time": ("time", time_end, {"units": "model time", "long_name": "window end (analysis time)"}),
                            "variable": ("variable", names, {"long_name": "state variable (flattened)"})})
    ds["time_start"] = ("time", time_end - L * var.dt, {"units": "model time", "long_name": "window start"})
    lab = {"xb": "background at the window start", "xs": "analysis at the window start (the control)",
           "xf": "background forecast at the window end", "xa": "analysis at the window end (propagated)"}
    for k in keys:
        ds[k] = (("time", "variable"), out[k].numpy(), {"long_name": lab[k], "units": units})
    meta = {"cost_b": ("J at the background", "1"), "cost_a": ("J at the analysis", "1"),
            "n_obs": ("observations used", "1"), "n_iter": ("L-BFGS iterations", "1"),
            "n_fun": ("cost evaluations", "1"), "n_model": ("nonlinear model steps", "1"),
            "n_tl": ("tangent-linear step applications", "1"), "n_ad": ("adjoint step applications", "1"),
            "wall_s": ("wall time of the window's analysis", "s")}
    for k, (ln, u) in meta.items():
        ds[k] = ("time", scal[k], {"long_name": ln, "units": u})
    ds["converged"] = ("time", conv.astype(np.int8), {"long_name": "L-BFGS converged (1) or stopped (0)", "units": "1"})
    after = time_end > burn_in
    attrs = {"method": var.method, "n_steps": L, "obs_steps": list(var.obs_steps), "dt": var.dt, "n_outer": var.n_outer,
             "gtol": var.gtol, "burn_in": burn_in, "n_averaged": int(after.sum()),
             "wall_s_per_cycle": float(scal["wall_s"][after].mean()) if after.any() else float("nan"),
             "n_iter_per_cycle": float(scal["n_iter"][after].mean()) if after.any() else float("nan"),
             "n_model_per_cycle": float(scal["n_model"][after].mean()) if after.any() else float("nan"),
             "n_tl_per_cycle": float(scal["n_tl"][after].mean()) if after.any() else float("nan"),
             "n_ad_per_cycle": float(scal["n_ad"][after].mean()) if after.any() else float("nan"),
             "frac_converged": float(conv[after].mean()) if after.any() else float("nan")}
    if tr is not None:
        ends, starts = tr[L::L], tr[0:-1:L]
        ds["truth"] = (("time", "variable"), ends.numpy(), {"long_name": "truth at the window end", "units": units})
        for k, ref in (("b", starts), ("s", starts), ("f", ends), ("a", ends)):
            src = {"b": "xb", "s": "xs", "f": "xf", "a": "xa"}[k]
            e = ((out[src] - ref) ** 2).mean(-1).sqrt().numpy()
            ds[f"rmse_{k}"] = ("time", e, {"long_name": f"RMS error of {lab[src]}", "units": units})
            attrs[f"rmse_{k}"] = float(e[after].mean()) if after.any() else float("nan")
    ds.attrs.update(attrs)
    return ds


def plot(ds: xr.Dataset, variable: int | str = 0, axes=None, t_range=None):
    """Two panels: truth, background forecast and analysis of one variable at the window ends;
    RMS errors of the background forecast and the analysis over time. Returns the axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    d = ds if t_range is None else ds.sel(time=slice(*t_range))
    v = d["variable"].values[variable] if isinstance(variable, int) else variable
    ax = axes[0]
    if "truth" in d:
        ax.plot(d["time"], d["truth"].sel(variable=v), "k-", lw=1.5, label="truth")
    ax.plot(d["time"], d["xf"].sel(variable=v), "C1.", ms=3, label="background forecast")
    ax.plot(d["time"], d["xa"].sel(variable=v), "C0-", lw=1, label="analysis")
    ax.set_ylabel(f"{v}")
    ax.legend(loc="upper right", fontsize=8)
    if "rmse_a" in d:
        axes[1].plot(d["time"], d["rmse_f"], "C1-", lw=0.8, label=f"background forecast ({ds.attrs['rmse_f']:.3f})")
        axes[1].plot(d["time"], d["rmse_a"], "C0-", lw=0.8, label=f"analysis ({ds.attrs['rmse_a']:.3f})")
        axes[1].set_ylabel("RMSE")
        axes[1].legend(loc="upper right", fontsize=8, title="mean after burn-in")
    axes[-1].set_xlabel("time [model units]")
    return axes
