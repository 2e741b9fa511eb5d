"""Problem: forward model + observations + observation errors + prior.

    J(x) = 1/2 (y - M(x))^T R^-1 (y - M(x)) + 1/2 (z(x) - z_b)^T B^-1 (z(x) - z_b)

**Control space.** Parameters enter the prior through the control variable
``z = z(x)``: ``z = x`` for linear parameters and ``z = ln x`` for the log-scale
parameters of a :class:`ailand.ParameterSpace` given as ``prior``. With an explicit
``(mean, cov)`` prior, or no prior, ``z = x`` throughout, and ``J`` is exactly the
DESIGN.md cost. The Gaussian prior ``N(z_b, B)``, the Gauss-Newton posterior and MCMC
all live in ``z``; everything a user passes or reads (``x``, ``x_b``, ``bounds``,
results) is in physical units, ``space`` order.

``log_posterior(x) = -J(x)`` is the log density of ``z`` (up to a constant), which is
what the samplers of :mod:`calibration.mcmc` draw from (they report physical ``x``).

Optimisers and samplers work in the standardised control ``u = (z - c) / s``
(:meth:`Problem.to_u`): with a prior ``c = z_b`` and ``s = sqrt(diag B)`` (so the prior
is ``N(0, I)`` for a diagonal B); without a prior, the unit cube of finite bounds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ailand import ParameterSpace
from ailand.arrays import to_numpy



class Problem:
    """A calibration problem in the DESIGN.md sense.

    Parameters
    ----------
    forward : any torch-differentiable callable ``(n, d) -> (n, m)`` whose rows are
        independent (e.g. a :class:`calibration.Forward`), taking physical ``x``.
    y : observations ``(m,)`` (numpy, torch or DataArray). NaN entries are *masked*:
        they are left out of the cost (and their rows/columns of ``R`` ignored), but
        :meth:`residuals` and output-space results still cover all ``m`` data.
    obs_std : observation error std, scalar or ``(m,)`` [units of y], > 0; or
    R : observation error covariance ``(m, m)`` (symmetric positive definite on the
        observed entries). Give exactly one of ``obs_std`` and ``R``.
    prior : None (no background term), a :class:`ailand.ParameterSpace` (``x_b`` = its
        defaults, ``B`` diagonal in the control space ``z`` with std = range/4, i.e.
        ``(hi - lo)/4`` or ``ln(hi/lo)/4`` for log parameters, unless ``prior_std``
        gives it), or ``(mean, cov)``: ``x_b = mean (d,)``, ``B = cov (d, d)`` with ``z = x``.
    bounds : ``(d, 2)`` physical ``[min, max]``; default the prior space's (or the
        forward's ``space``) bounds, else unbounded.
    prior_std : ``(d,)`` prior std in control units (ParameterSpace prior only).
    names : parameter names (default: from the prior space or ``forward.space``).

    Attributes: ``y``, ``mask`` (observed data), ``R`` ``(m, m)``, ``x_b``, ``z_b``, ``B``
    (control space), ``bounds`` ``(d, 2)``, ``names``, ``log`` (``(d,)`` bool: ``z = ln x``),
    ``n_forward_runs`` (control vectors sent to ``forward``).
    """

    def __init__(
        self,
        forward: Callable,
        y,
        obs_std=None,
        R=None,
        prior: ParameterSpace | tuple | None = None,
        bounds=None,
        prior_std=None,
        names=None,
    ):
        self.forward = forward
        self.y = to_numpy(y, name="y").reshape(-1)
        m = self.y.size
        self.mask = np.isfinite(self.y)
        if not self.mask.any():
            raise ValueError("y has no finite value: nothing to calibrate against")
        n_obs = getattr(forward, "n_obs", None)
        if n_obs is not None and n_obs != m:
            raise ValueError(f"y has {m} values but the forward model gives {n_obs} outputs: build y with the same Observe")
        self.R = _obs_covariance(obs_std, R, m, self.mask)
        Ro = self.R[np.ix_(self.mask, self.mask)]
        self._L = torch.linalg.cholesky(torch.as_tensor(Ro))  # R_o = L L^T (observed data)
        self._diag = np.allclose(Ro, np.diag(np.diag(Ro)))

        space = prior if isinstance(prior, ParameterSpace) else getattr(forward, "space", None)
        if isinstance(prior, ParameterSpace):
            self.names = list(prior.names)
            self.log = np.asarray(prior.is_log, dtype=bool)
            self.x_b = prior.default_vector.copy()
            self.z_b = self.to_control(self.x_b)
            lo_hi = self.to_control(prior.bounds.T).T
            std = (lo_hi[:, 1] - lo_hi[:, 0]) / 4.0 if prior_std is None else to_numpy(prior_std, name="prior_std").reshape(-1)
            if std.shape != (len(self.names),) or np.any(~(std > 0)):
                raise ValueError(f"prior_std must be {len(self.names)} positive values (control units), got {std}")
            self.B = np.diag(std**2)
        elif isinstance(prior, tuple) and len(prior) == 2:
            if prior_std is not None:
                raise ValueError("prior_std is for a ParameterSpace prior; with (mean, cov) put it in cov")
            self.x_b = to_numpy(prior[0], name="prior mean").reshape(-1)
            d = self.x_b.size
            self.B = to_numpy(prior[1], name="prior cov")
            if self.B.shape != (d, d):
                raise ValueError(f"prior cov must be ({d}, {d}) for a mean of {d} values, got {self.B.shape}")
            if not np.allclose(self.B, self.B.T) or np.any(np.linalg.eigvalsh(self.B) <= 0):
                raise ValueError("prior cov must be symmetric positive definite")
            self.names = list(names) if names is not None else (list(space.names) if space is not None else [f"x{i}" for i in range(d)])
            self.log = np.zeros(d, dtype=bool)
            self.z_b = self.x_b.copy()
        elif prior is None:
            self.x_b = self.z_b = self.B = None
            if names is not None:
                self.names = list(names)
            elif space is not None:
                self.names = list(space.names)
            elif bounds is not None:
                self.names = [f"x{i}" for i in range(np.shape(bounds)[0])]
            else:
                raise ValueError("without a prior, give bounds (d, 2) or names so the number of parameters is known")
            self.log = np.zeros(len(self.names), dtype=bool)
        else:
            raise ValueError("prior must be None, a ParameterSpace or a (mean, cov) tuple")
        if names is not None:
            self.names = list(names)
        d = len(self.names)
        if self.log.size != d:
            raise ValueError(f"{d} names for {self.log.size} parameters")

        if bounds is None:
            bounds = space.bounds if space is not None and len(space) == d else np.tile([-np.inf, np.inf], (d, 1))
        self.bounds = to_numpy(bounds, name="bounds").reshape(d, 2) if np.size(bounds) == 2 * d else None
        if self.bounds is None:
            raise ValueError(f"bounds must be ({d}, 2) [min, max] per parameter, got shape {np.shape(bounds)}")
        if np.any(~(self.bounds[:, 0] < self.bounds[:, 1])):
            raise ValueError(f"bounds need min < max for every parameter, got {self.bounds.tolist()}")
        if np.any(self.log & (self.bounds[:, 0] <= 0)):
            raise ValueError("log-scale parameters need bounds > 0")
        if self.x_b is not None:
            self.check(self.x_b, what="prior mean x_b")
        self._Binv = None if self.B is None else np.linalg.inv(self.B)
        self._Binv_chol = None if self.B is None else np.linalg.cholesky(self._Binv)  # B^-1 = Lb Lb^T
        self.n_forward_runs = 0

    def __repr__(self):
        return (f"Problem(d={self.d} {self.names}, m={self.y.size} ({int(self.mask.sum())} observed), "
                f"prior={'none' if self.B is None else 'Gaussian'}, forward={self.forward!r})")

    @property
    def d(self) -> int:
        return len(self.names)

    @property
    def m(self) -> int:
        return self.y.size

    @property
    def labels(self):
        """Labels of the ``m`` data when the forward has them (a :class:`Forward`), else None."""
        return getattr(self.forward, "labels", None)

    # --------------------------------------------------------- control space
    def to_control(self, x):
        """Physical ``x (..., d)`` -> control ``z`` (``ln x`` for log parameters)."""
        log = _like(self.log, x)
        return _where(log, _log(x), x)

    def from_control(self, z):
        """Control ``z (..., d)`` -> physical ``x``."""
        log = _like(self.log, z)
        return _where(log, _exp(z), z)

    def _centre_scale(self):
        if self.B is not None:
            return self.z_b, np.sqrt(np.diag(self.B))
        zb = self.to_control(self.bounds.T).T
        finite = np.isfinite(zb).all(1)
        c = np.where(finite, zb[:, 0], 0.0)
        s = np.where(finite, zb[:, 1] - zb[:, 0], 1.0)
        return c, s

    def to_u(self, x):
        """Physical ``x`` -> standardised control ``u = (z - c) / s`` (see the module doc)."""
        c, s = self._centre_scale()
        return (self.to_control(x) - _like(c, x)) / _like(s, x)

    def from_u(self, u):
        """Standardised control ``u`` -> physical ``x``."""
        c, s = self._centre_scale()
        return self.from_control(_like(c, u) + _like(s, u) * u)

    @property
    def u_bounds(self) -> np.ndarray:
        """``bounds`` in ``u`` coordinates ``(d, 2)`` (may be infinite)."""
        with np.errstate(divide="ignore"):
            zb = np.where(self.log[:, None], np.log(np.where(self.log[:, None], self.bounds, 1.0)), self.bounds)
        c, s = self._centre_scale()
        return (zb - c[:, None]) / s[:, None]

    # ------------------------------------------------------------- checks
    def inside(self, x) -> np.ndarray:
        """Boolean ``(n,)``: rows of ``x`` within the bounds (and the forward's
        constraints, when it has a ``feasible`` method)."""
        x = np.atleast_2d(to_numpy(x, name="x"))
        lo, hi = self._tolerant_bounds()
        ok = np.all(np.isfinite(x) & (x >= lo) & (x <= hi), axis=-1)
        feasible = getattr(self.forward, "feasible", None)
        if feasible is not None and ok.any():
            ok[ok] = feasible(x[ok])
        return ok

    def _tolerant_bounds(self):
        """Bounds widened by 1e-9 of their size, so a round trip through ``u`` stays inside."""
        b = self.bounds
        tol = 1e-9 * np.where(np.isfinite(b), np.abs(b), 0.0).max(1)
        return b[:, 0] - tol, b[:, 1] + tol

    def check(self, x, what: str = "x"):
        """Raise ``ValueError`` naming the parameter when a row of ``x`` is outside the bounds."""
        xa = np.atleast_2d(to_numpy(x, name=what))
        if xa.shape[-1] != self.d:
            raise ValueError(f"{what} must have {self.d} columns ({self.names}), got shape {np.shape(x)}")
        lo_t, hi_t = self._tolerant_bounds()
        for j, name in enumerate(self.names):
            lo, hi = self.bounds[j]
            bad = ~np.isfinite(xa[:, j]) | (xa[:, j] < lo_t[j]) | (xa[:, j] > hi_t[j])
            if bad.any():
                raise ValueError(f"{what}: {name} = {xa[bad, j][0]:g} is outside its bounds [{lo:g}, {hi:g}]")
        if not self.inside(xa).all():
            raise ValueError(f"{what}: a row violates the forward model's constraints (e.g. THETA_PWP < THETA_CAP)")

    # ------------------------------------------------------------ equations
    def model(self, x: torch.Tensor, native_dtype: bool = False) -> torch.Tensor:
        """``M(x)`` ``(n, m)`` float64 (in the forward's own floating dtype with
        ``native_dtype=True``, e.g. float32 for the emulator), differentiable; counts forward runs."""
        y = self.forward(x)
        if not torch.is_tensor(y):  # numpy / DataArray / list: not differentiable, but J and residuals work
            y = torch.as_tensor(to_numpy(y, name="forward output"))
        if y.ndim != 2 or y.shape != (x.shape[0], self.m):
            raise ValueError(f"forward returned shape {tuple(y.shape)}; expected ({x.shape[0]}, {self.m}) to match y")
        self.n_forward_runs += x.shape[0]
        self.forward_dtype = y.dtype  # the forward model's own precision (variational's tolerances use it)
        dtype = y.dtype if native_dtype and y.is_floating_point() else torch.float64
        return y.to(device="cpu", dtype=dtype)  # a forward on an accelerator comes back (differentiably)

    def _whitened(self, x: torch.Tensor) -> torch.Tensor:
        """The residual vector ``r (n, m_o [+ d])`` with ``J = 1/2 |r|^2`` for physical
        ``x (n, d)`` float64, no bounds check: ``L^-1 (y - M(x))`` on the observed data
        (``R_o = L L^T``), then ``C (z - z_b)`` with ``C^T C = B^-1`` when there is a prior.
        The least-squares form of J that Gauss-Newton / Levenberg-Marquardt works on."""
        r = torch.as_tensor(self.y[self.mask]) - self.model(x)[:, torch.as_tensor(self.mask)]  # (n, m_o)
        w = r / torch.diagonal(self._L) if self._diag else torch.linalg.solve_triangular(self._L, r.T, upper=False).T
        if self.B is None:
            return w
        dz = self.to_control(x) - torch.as_tensor(self.z_b)
        return torch.cat([w, dz @ torch.as_tensor(self._Binv_chol)], dim=-1)  # |dz Lb|^2 = dz^T B^-1 dz

    def _cost(self, x: torch.Tensor) -> torch.Tensor:
        """J ``(n,)`` for physical ``x (n, d)`` float64, no bounds check:
        ``1/2 (y - M)^T R^-1 (y - M) + 1/2 dz^T B^-1 dz``."""
        return 0.5 * (self._whitened(x) ** 2).sum(-1)

    def cost(self, x):
        """``J(x)``: ``x (n, d)`` -> ``(n,)``, ``(d,)`` -> scalar; ValueError outside the bounds.
        Torch in (differentiable) gives torch out, numpy in gives numpy."""
        self.check(x)
        xt, single, is_torch = _rows(x)
        with torch.set_grad_enabled(is_torch and torch.is_grad_enabled()):
            J = self._cost(xt)
        return _out(J[0] if single else J, is_torch)

    def gradient(self, x):
        """``dJ/dx`` (physical units) ``(n, d)`` or ``(d,)`` by autograd."""
        self.check(x)
        xt, single, is_torch = _rows(x)
        xt = xt.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self._cost(xt).sum(), xt)  # rows are independent
        return _out(g[0] if single else g, is_torch)

    def log_posterior(self, x):
        """``-J(x)``, the log density of the control ``z`` up to a constant; ``-inf``
        outside the bounds (no forward run there). ``(n, d) -> (n,)``, numpy."""
        xt, single, _ = _rows(x)
        lp = np.full(xt.shape[0], -np.inf)
        ok = self.inside(xt)
        if ok.any():
            with torch.no_grad():
                lp[ok] = -self._cost(xt[torch.as_tensor(ok)]).numpy()
        lp[~np.isfinite(lp)] = -np.inf
        return lp[0] if single else lp

    def residuals(self, x):
        """``y - M(x)`` ``(n, m)`` or ``(m,)``, NaN where y is masked. Numpy."""
        self.check(x)
        xt, single, _ = _rows(x)
        with torch.no_grad():
            r = self.y - self.model(xt).numpy()
        return r[0] if single else r

    def jacobian(self, x, control: bool = False, mode: str = "auto") -> np.ndarray:
        """``dM/dx`` ``(n, m, d)`` at physical ``x`` (or ``dM/dz`` with ``control=True``)
        by autograd; rows of the forward must be independent. ``mode``: ``"auto"`` (forward
        mode when ``d < m``, else reverse), ``"forward"`` or ``"reverse"``
        (:func:`calibration.batched_jacobian`)."""
        from .forward import batched_jacobian

        xt, single, _ = _rows(x)
        if control:
            H = batched_jacobian(lambda z: self.model(self.from_control(z), native_dtype=True), self.to_control(xt),
                                 mode=mode, m=self.m)
        else:
            H = batched_jacobian(lambda x_: self.model(x_, native_dtype=True), xt, mode=mode, m=self.m)
        H = H.to(torch.float64).numpy()  # native dtype in: forward mode's check knows the model's precision
        return H[0] if single else H


# ------------------------------------------------------------------ helpers
def _obs_covariance(obs_std, R, m: int, mask: np.ndarray) -> np.ndarray:
    """``obs_std`` (scalar or (m,)) or ``R`` (m, m) -> R (m, m), validated on the observed entries."""
    if (obs_std is None) == (R is None):
        raise ValueError("give exactly one of obs_std (scalar or per datum) and R (m, m)")
    if obs_std is not None:
        std = to_numpy(obs_std, name="obs_std")
        std = np.broadcast_to(std, (m,)) if std.ndim == 0 else std.reshape(-1)
        if std.size != m:
            raise ValueError(f"obs_std has {std.size} values but y has {m}")
        if np.any(~(std[mask] > 0)) or np.any(~np.isfinite(std[mask])):
            raise ValueError(f"obs_std must be finite and > 0 for every observed datum, got min {np.nanmin(std[mask]):g}")
        return np.diag(np.where(mask, std, 1.0) ** 2)
    R = to_numpy(R, name="R")
    if R.shape != (m, m):
        raise ValueError(f"R must be ({m}, {m}) for {m} observations, got {R.shape}")
    Ro = R[np.ix_(mask, mask)]
    if not np.allclose(Ro, Ro.T) or not np.isfinite(Ro).all():
        raise ValueError("R must be finite and symmetric")
    if np.linalg.eigvalsh(Ro).min() <= 0:
        raise ValueError("R must be positive definite (on the observed data)")
    return R


def _rows(x):
    """-> (float64 tensor (n, d), was 1-D, was torch)."""
    is_torch = torch.is_tensor(x)
    xt = x.to(torch.float64) if is_torch else torch.as_tensor(np.asarray(x, dtype=float))
    single = xt.ndim == 1
    return (xt[None] if single else xt), single, is_torch


def _out(t: torch.Tensor, is_torch: bool):
    return t if is_torch else t.detach().numpy()


def _like(a: np.ndarray, ref):
    if torch.is_tensor(ref):
        return torch.as_tensor(a, device=ref.device, dtype=torch.bool if a.dtype == bool else ref.dtype)
    return a


def _where(c, a, b):
    return torch.where(c, a, b) if torch.is_tensor(a) else np.where(c, a, b)


def _log(x):
    if torch.is_tensor(x):
        return torch.log(torch.clamp(x, min=1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=float))


def _exp(z):
    return torch.exp(z) if torch.is_tensor(z) else np.exp(z)
