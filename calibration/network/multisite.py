"""Multi-site runs and the calibration of many groups at once.

**Columns.** A network calibration runs the same site several times with different
parameters (one copy per strategy that calibrates on it). :class:`SiteRunner` runs a model
over *columns* (copies of network sites) with one parameter vector per column and member:
``P (n, C, d) -> y (n, m)``, one vectorised ``simulate`` of ``n x C`` columns. ``y`` is
ordered variable, column, time (:class:`calibration.Observe`).

**The cost of one group** ``g`` (its calibration columns ``c in g`` share one parameter
vector ``x_g``) is the DESIGN.md cost over its data,

    J_g(x_g) = 1/2 |W_g (y_g - M_g(x_g))|^2 + 1/2 |u_g|^2,   W_g^T W_g = R_g^-1,

with ``u`` the standardised control of :class:`calibration.Problem` (``z = ln x`` for
log-scale parameters, prior ``N(z_b, B)``, ``B = diag((range/4)^2)``) and
``R_g = diag(obs_std^2) + S_g``, ``S_g = D_g^T D_g / k`` the emulator's error from ``k``
parameter draws (:func:`calibration.model_error`, restricted to the group's data). ``S_g`` has
rank ``<= k``, so :class:`Whitener` applies ``W_g`` in ``O(m k)`` without forming the
``m x m`` matrix: with ``V = Lambda^-1/2 U = P Sigma Q^T`` (``U = D^T / sqrt(k)``),
``W = (I + P ((1 + Sigma^2)^-1/2 - I) P^T) Lambda^-1/2``.

**All groups at once.** The groups are independent (``J = sum_g J_g``, no column depends on
another group's parameters), so :func:`calibrate_groups` runs one Levenberg-Marquardt per
(start, group) in lock-step, exactly the algorithm of ``calibration.variational(method="lm")``,
with one change: the finite-difference Jacobian perturbs parameter ``j`` of *every* group in
the same member (the groups' Jacobians are block-diagonal, so one perturbed run serves all
of them; Curtis-Powell-Reid colouring). An iteration then costs two batched calls, of
``2 d`` and ``3`` members per start, whatever the number of groups: 100 per-site
calibrations cost about as much as one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ailand import ParameterSpace

from ..forward import Forward
from ..observe import Observe
from ..progress import as_progress

__all__ = ["SiteRunner", "Whitener", "WhitenedForward", "GroupCalibration", "calibrate_groups", "series_std"]


class SiteRunner:
    """A model over columns (copies of sites), each column with its own parameters.

    model : ``ToyEcLand`` or ``Emulator``. forcing : forcing Dataset over the network's sites
    (with their statics). space : calibrated parameters (the rest at the model's defaults).
    observe : the :class:`calibration.Observe` of the outputs (its ``sites`` must be None).
    columns : ``(C,)`` site names (repeats allowed: each copy is its own column).
    state0 : start state Dataset over the forcing's sites (e.g. the physics' spun-up state).
    column_names : ``(C,)`` unique labels (default ``"<site>#<i>"``).

    ``runner(P)`` with ``P`` ``(n, C, d)`` physical parameters (or ``(n, d)``: the same at
    every column) returns ``(n, m)`` numpy (torch in, torch out, differentiable). ``labels``
    is the ``(variable, site, time)`` MultiIndex with site = column name; :attr:`column_of`
    ``(m,)`` the column index of each datum. :attr:`n_column_runs` counts member x column runs.
    """

    def __init__(self, model, forcing: xr.Dataset, space: ParameterSpace, observe: Observe, columns, state0=None,
                 column_names=None, spinup_years: int | None = None):
        if observe.sites is not None:
            raise ValueError("SiteRunner: give the sites through columns, not Observe(sites=...)")
        names = [str(s) for s in np.asarray(columns, dtype=object).ravel()]
        known = set(map(str, forcing["site"].values))
        unknown = [s for s in names if s not in known]
        if unknown:
            raise ValueError(f"SiteRunner: column site(s) {unknown[:5]} are not in the forcing")
        if not names:
            raise ValueError("SiteRunner: no columns")
        cols = np.array([f"{s}#{i}" for i, s in enumerate(names)] if column_names is None else list(column_names), dtype=object)
        if len(cols) != len(names) or len(set(cols)) != len(cols):
            raise ValueError("SiteRunner: column_names must be unique, one per column")
        pos = pd.Index(forcing["site"].values.astype(str)).get_indexer(names)
        fc = forcing.isel(site=pos).assign_coords(site=cols)
        s0 = None
        if state0 is not None:
            s0 = state0.isel(site=pd.Index(state0["site"].values.astype(str)).get_indexer(names)).assign_coords(site=cols)
        self.forward = Forward(model, fc, space, observe, state0=s0, spinup_years=spinup_years)
        self.model, self.space, self.names = model, space, list(space.names)
        self.sites = np.asarray(names, dtype=object)
        self.columns = cols
        lab = self.forward.labels
        self.column_of = pd.Index(cols).get_indexer(lab.get_level_values("site"))
        self.n_column_runs = 0

    @property
    def labels(self) -> pd.MultiIndex:
        return self.forward.labels

    @property
    def n_obs(self) -> int:
        return self.forward.n_obs

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    def __call__(self, P):
        is_torch = torch.is_tensor(P)
        Pt = P if is_torch else torch.as_tensor(np.asarray(P, dtype=float))
        C, d = len(self.columns), len(self.names)
        if Pt.ndim == 2 and Pt.shape[-1] == d:
            Pt = Pt[:, None, :].expand(Pt.shape[0], C, d)
        if Pt.ndim != 3 or Pt.shape[1:] != (C, d):
            raise ValueError(f"SiteRunner expects parameters (n, {C}, {d}) or (n, {d}) in {self.names}, got {tuple(Pt.shape)}")
        flat = Pt.reshape(-1, d).detach().cpu().numpy()
        ok = self.forward.feasible(flat)
        if not ok.all():
            bad = flat[int(np.argmin(ok))]
            self.model.space.check(dict(zip(self.names, bad)), what="SiteRunner parameters")
        fw = self.forward
        n = Pt.shape[0]
        with torch.set_grad_enabled(is_torch and torch.is_grad_enabled()):
            params = self.model.param_tensors({name: Pt[..., j] for j, name in enumerate(self.names)})
            state = {k: v.expand(n, *v.shape) for k, v in fw.state0.items()}
            kw = {"forcing_repeat": fw.repeat} if fw.repeat != 1 else {}
            out, _ = self.model.simulate(fw.forcing, params, fw.static, state, outputs=list(fw.observe.variables), **kw)
            y = fw.observe(out)
        self.n_column_runs += n * C
        return y if is_torch else y.detach().cpu().numpy().astype(float)


def series_std(y: np.ndarray, labels: pd.MultiIndex) -> np.ndarray:
    """``(m,)``: the time std (ddof=0, NaN ignored) of each datum's (variable, site) series,
    floored at 1e-6 of max |y| (the noise scale of :class:`calibration.TwinExperiment`)."""
    key = pd.Series(y).groupby([labels.get_level_values("variable"), labels.get_level_values("site")])
    s = key.transform(lambda v: float(np.nanstd(v))).to_numpy(dtype=float)
    return np.maximum(s, 1e-6 * max(float(np.nanmax(np.abs(y))), 1e-12))


class Whitener:
    """``W`` with ``W^T W = R^-1`` for ``R = diag(obs_std^2) + D^T D / k`` (low rank), applied
    in ``O(m k)`` (see the module doc).

    obs_std : ``(m,)`` > 0 [units of y]. D : ``(k, m)`` model-error differences, or None
    (``R`` diagonal). ``W(r)`` takes ``(..., m)`` numpy or torch (differentiable) and returns
    the same shape; :meth:`covariance` forms the dense ``R`` (tests).
    """

    def __init__(self, obs_std, D=None):
        self.obs_std = np.asarray(obs_std, dtype=float).ravel()
        if not (np.isfinite(self.obs_std).all() and (self.obs_std > 0).all()):
            raise ValueError("Whitener: obs_std must be finite and > 0")
        self.D = None if D is None else np.asarray(D, dtype=float)
        self.P = self.c = None
        if self.D is not None and self.D.size:
            if self.D.shape[1] != self.obs_std.size:
                raise ValueError(f"Whitener: D has {self.D.shape[1]} columns for {self.obs_std.size} data")
            V = (self.D / np.sqrt(self.D.shape[0])).T / self.obs_std[:, None]  # (m, k)
            P, sig, _ = np.linalg.svd(V, full_matrices=False)
            keep = sig > 1e-12 * max(sig.max(), 1e-300)
            self.P, self.c = P[:, keep], (1.0 + sig[keep] ** 2) ** -0.5 - 1.0

    def __call__(self, r):
        if torch.is_tensor(r):
            w = r / torch.as_tensor(self.obs_std, dtype=r.dtype, device=r.device)
            if self.P is not None:
                P = torch.as_tensor(self.P, dtype=r.dtype, device=r.device)
                w = w + ((w @ P) * torch.as_tensor(self.c, dtype=r.dtype, device=r.device)) @ P.T
            return w
        w = np.asarray(r, dtype=float) / self.obs_std
        if self.P is not None:
            w = w + ((w @ self.P) * self.c) @ self.P.T
        return w

    def covariance(self) -> np.ndarray:
        R = np.diag(self.obs_std**2)
        if self.D is not None and self.D.size:
            R = R + self.D.T @ self.D / self.D.shape[0]
        return R


class WhitenedForward:
    """A forward in whitened observation space, so a :class:`calibration.Problem` with
    ``obs_std=1`` has the cost of ``R = diag(obs_std^2) + D^T D / k`` on the observed data:

        problem = Problem(wf, wf.y, obs_std=1.0, prior=space)

    forward : ``(n, d) -> (n, m)`` (e.g. a :class:`calibration.Forward` over a cluster's
    calibration sites). y ``(m,)``, NaN = missing (left out). obs_std ``(m,)``; D ``(k, m)`` or
    None. ``wf(x)`` is ``(n, m_o)``, ``wf.y`` ``(m_o,)``; torch in gives torch out
    (differentiable), so variational, MCMC, EKI and ES-MDA work on it unchanged.
    """

    def __init__(self, forward, y, obs_std, D=None):
        y = np.asarray(y, dtype=float).ravel()
        self.mask = np.isfinite(y)
        if not self.mask.any():
            raise ValueError("WhitenedForward: y has no finite value")
        obs_std = np.broadcast_to(np.asarray(obs_std, dtype=float), y.shape)
        self.forward = forward
        self.whiten = Whitener(obs_std[self.mask], None if D is None else np.asarray(D, dtype=float)[:, self.mask])
        self.y = self.whiten(y[self.mask])
        self.space = getattr(forward, "space", None)
        self._idx = torch.as_tensor(np.flatnonzero(self.mask))
        lab = getattr(forward, "labels", None)
        self.labels = None if lab is None else lab[self.mask]

    @property
    def n_obs(self) -> int:
        return int(self.mask.sum())

    def feasible(self, x):
        f = getattr(self.forward, "feasible", None)
        return np.ones(np.atleast_2d(x).shape[0], dtype=bool) if f is None else f(x)

    def __call__(self, x):
        y = self.forward(x)
        if torch.is_tensor(y):
            return self.whiten(y.index_select(-1, self._idx.to(y.device)))
        return self.whiten(np.asarray(y, dtype=float)[..., self.mask])


# ------------------------------------------------------------------ many groups at once
@dataclass
class GroupCalibration:
    """Result of :func:`calibrate_groups`: one parameter set per group.

    names : parameters; groups : ``(G,)`` group labels. x ``(G, d)`` best optimum per group
    [physical]; std ``(G, d)`` Gauss-Newton posterior std (linearised for log parameters);
    A_control ``(G, d, d)`` posterior covariance of ``z``; corr ``(G, d, d)``; J ``(G,)`` cost
    at the optimum, J_prior ``(G,)`` at the prior mean; m ``(G,)`` observed data per group;
    optima ``(n_starts, G, d)``, J_optima ``(n_starts, G)``; nit ``(n_starts, G)``;
    message per (start, group); n_calls (batched model calls), n_member_runs (members over all
    calls), n_column_runs (member x column runs: the cost), wall_time [s].
    """

    names: list
    groups: list
    x: np.ndarray
    std: np.ndarray
    A_control: np.ndarray
    corr: np.ndarray
    J: np.ndarray
    J_prior: np.ndarray
    m: np.ndarray
    optima: np.ndarray
    J_optima: np.ndarray
    nit: np.ndarray
    message: list
    n_calls: int
    n_member_runs: int
    n_column_runs: int
    wall_time: float
    attrs: dict = field(default_factory=dict)

    def parameters(self) -> dict:
        """``{group: x (d,)}``."""
        return {g: self.x[i] for i, g in enumerate(self.groups)}

    def to_xarray(self) -> xr.Dataset:
        G, P, PP = ("group",), ("group", "parameter"), ("group", "parameter", "parameter_")
        return xr.Dataset(
            {"posterior_mean": (P, self.x, {"long_name": "posterior mode of each group's parameter set"}),
             "posterior_std": (P, self.std, {"long_name": "Gauss-Newton posterior std (linearised for log parameters)"}),
             "posterior_corr": (PP, self.corr, {"long_name": "posterior correlation", "units": "1"}),
             "J": (G, self.J, {"long_name": "cost J at the optimum", "units": "1"}),
             "J_prior": (G, self.J_prior, {"long_name": "cost J at the prior mean", "units": "1"}),
             "n_data": (G, self.m, {"long_name": "observed data of the group"})},
            coords={"group": list(map(str, self.groups)), "parameter": self.names, "parameter_": self.names},
            attrs={"method": "Levenberg-Marquardt per group in lock-step, coloured finite differences",
                   "n_calls": int(self.n_calls), "n_member_runs": int(self.n_member_runs),
                   "n_column_runs": int(self.n_column_runs), "wall_time_s": float(self.wall_time), **self.attrs},
        )


class _Controls:
    """``x <-> u`` of :class:`calibration.Problem` with a ParameterSpace prior (vectorised)."""

    def __init__(self, space: ParameterSpace):
        self.log = np.asarray(space.is_log, dtype=bool)
        self.zb = self.z(space.default_vector)
        zlo, zhi = self.z(space.bounds[:, 0]), self.z(space.bounds[:, 1])
        self.s = (zhi - zlo) / 4.0
        self.lo, self.hi = (zlo - self.zb) / self.s, (zhi - self.zb) / self.s

    def z(self, x):
        x = np.asarray(x, dtype=float)
        return np.where(self.log, np.log(np.where(self.log, np.maximum(x, 1e-300), 1.0)), x)

    def to_u(self, x):
        return (self.z(x) - self.zb) / self.s

    def from_u(self, u):
        z = self.zb + self.s * np.asarray(u, dtype=float)
        return np.where(self.log, np.exp(np.where(self.log, z, 0.0)), z)


_DAMPING = np.array([0.1, 1.0, 10.0])


def calibrate_groups(runner: SiteRunner, y, obs_std, groups, D=None, n_starts: int = 1, seed: int = 0,
                     maxiter: int = 30, fd: str = "central", starts=None, options: dict | None = None,
                     progress=False, group_names=None) -> GroupCalibration:
    """Calibrate one parameter set per group of columns, all groups and starts in lock-step.

    runner : a :class:`SiteRunner` over the calibration columns (the inference model, e.g. the emulator).
    y : ``(m,)`` observations in the runner's order (NaN = missing, masked).
    obs_std : ``(m,)`` observation error std [units of y].
    groups : ``(C,)`` integer group of each column, ``0..G-1`` (every group needs a column
        with an observed datum, else ``ValueError``).
    D : ``(k, m)`` model-error differences (``ModelError.differences``) for ``R = diag(obs_std^2)
        + D^T D / k`` per group, or None (``R`` diagonal).
    n_starts : starts per group: the prior mean, then a scrambled Sobol' design in ``u``
        (the same design for every group); ``starts`` ``(n_starts, G, d)`` overrides it.
    maxiter, options (``ftol``, ``xtol``, ``gtol``: as ``calibration.variational``'s LM; defaults
    1e-6, 1e-4, 1e-5 for a float32 model, 1e-10, 1e-8, 1e-8 for float64).
    fd : ``"central"`` (``2 d`` perturbed members per start) or ``"forward"`` (``d``).
    progress : a bar over the iterations on stderr.

    Returns a :class:`GroupCalibration` (Gauss-Newton posterior per group from the
    finite-difference Jacobian at its optimum).
    """
    t0 = time.perf_counter()
    if fd not in ("central", "forward"):
        raise ValueError(f"fd must be 'central' or 'forward', got {fd!r}")
    y = np.asarray(y, dtype=float).ravel()
    m = runner.n_obs
    if y.size != m:
        raise ValueError(f"y has {y.size} values but the runner observes {m}")
    obs_std = np.broadcast_to(np.asarray(obs_std, dtype=float), (m,))
    groups = np.asarray(groups).ravel()
    if groups.size != runner.n_columns or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be ({runner.n_columns},) integers (the group of each column)")
    G = int(groups.max()) + 1
    names = list(range(G)) if group_names is None else list(group_names)
    if len(names) != G:
        raise ValueError(f"group_names has {len(names)} names for {G} groups")
    space = runner.space
    d = len(space)
    ctl = _Controls(space)
    datum_group = groups[runner.column_of]  # (m,)
    idx, wh = [], []
    for g in range(G):
        ii = np.flatnonzero((datum_group == g) & np.isfinite(y))
        if ii.size == 0:
            raise ValueError(f"calibrate_groups: group {names[g]!r} has no calibration column with an observed datum")
        idx.append(ii)
        wh.append(Whitener(obs_std[ii], None if D is None else np.asarray(D, dtype=float)[:, ii]))
    single = getattr(runner.model, "dtype", torch.float64) != torch.float64
    tol = {"ftol": 1e-6, "xtol": 1e-4, "gtol": 1e-5} if single else {"ftol": 1e-10, "xtol": 1e-8, "gtol": 1e-8}
    tol.update(options or {})
    eps = float(torch.finfo(torch.float32 if single else torch.float64).eps)
    h = eps ** (1.0 / 3.0) if fd == "central" else eps ** 0.5
    h = max(h, 1e-3) if single else h  # float32 emulator: steps below ~1e-3 prior sd drown in rounding
    counters = {"calls": 0, "members": 0}
    cols_of_group = [np.flatnonzero(groups == g) for g in range(G)]

    def run(U):  # U (n, G, d) -> whitened residual lists [(n, m_g + d) per group]
        X = ctl.from_u(U)
        P = X[:, groups, :]  # (n, C, d)
        ok = runner.model.space.feasible(_complete(runner, P.reshape(-1, d))).reshape(P.shape[:2])
        if not ok.all():  # a trial that breaks a constraint: run the prior mean there, count it as failed
            P = np.where(ok[..., None], P, ctl.from_u(np.zeros(d)))
        out = runner(P)
        counters["calls"] += 1
        counters["members"] += len(U)
        res = []
        for g in range(G):
            r = wh[g](y[idx[g]][None, :] - out[:, idx[g]])
            r = np.concatenate([r, U[:, g, :]], axis=1)
            bad = ~ok[:, cols_of_group[g]].all(1) | ~np.isfinite(r).all(1)
            r[bad] = np.nan
            res.append(r)
        return res

    def jacobian(U, r0):  # U (s, G, d) -> list per group of (s, M_g, d)
        s = U.shape[0]
        steps = [+1.0, -1.0] if fd == "central" else [+1.0]
        pts, widths = [], []
        for sign in steps:
            for j in range(d):
                Up = U.copy()
                Up[:, :, j] = np.clip(U[:, :, j] + sign * h, ctl.lo[j], ctl.hi[j])
                pts.append(Up)
        Pts = np.concatenate(pts, axis=0)  # (len(steps) d s, G, d), ordered (sign, j, start)
        rr = run(Pts)
        Jr = []
        for g in range(G):
            rg = rr[g].reshape(len(steps), d, s, -1)
            up = Pts.reshape(len(steps), d, s, G, d)[0, np.arange(d), :, g, np.arange(d)]  # (d, s)
            if fd == "central":
                um = Pts.reshape(2, d, s, G, d)[1, np.arange(d), :, g, np.arange(d)]
                num = rg[0] - rg[1]
            else:
                um = U[:, g, :].T
                num = rg[0] - r0[g][None]
            width = (up - um)[:, :, None]  # (d, s, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                Jg = np.where(np.abs(width) > 0, num / np.where(width == 0, 1.0, width), 0.0)  # (d, s, M)
            Jg = np.nan_to_num(np.transpose(Jg, (1, 2, 0)))  # (s, M, d)
            Jg[:, -d:, :] = np.eye(d)[None]  # the prior rows: exact
            Jr.append(Jg)
        return Jr

    if starts is None:
        U0 = np.zeros((n_starts, G, d))
        if n_starts > 1:
            import scipy.stats

            q = scipy.stats.qmc.Sobol(d, scramble=True, seed=seed).random(max(2, 1 << int(np.ceil(np.log2(n_starts - 1)))))
            U0[1:] = (ctl.lo + q[: n_starts - 1] * (ctl.hi - ctl.lo))[:, None, :]
    else:
        U0 = np.clip(ctl.to_u(np.asarray(starts, dtype=float)), ctl.lo, ctl.hi)
        if U0.shape != (U0.shape[0], G, d):
            raise ValueError(f"starts must be (n_starts, {G}, {d}), got {U0.shape}")
    U = U0.copy()
    ns = U.shape[0]
    r = run(U)
    Jv = np.stack([0.5 * np.sum(rg**2, axis=1) for rg in r], axis=1)  # (s, G)
    if not np.isfinite(Jv).all():
        raise ValueError("calibrate_groups: the cost is not finite at a starting point")
    J_prior = Jv[0].copy() if starts is None else np.full(G, np.nan)
    lam = np.full((ns, G), 1e-3)
    active = np.ones((ns, G), dtype=bool)
    nit = np.zeros((ns, G), dtype=int)
    msgs = np.full((ns, G), "maximum number of iterations reached", dtype=object)
    bar = as_progress(progress).bar(maxiter, desc=f"LM, {G} group(s) x {ns} start(s)", unit="it")
    Jr = None
    for _ in range(maxiter):
        if not active.any():
            break
        Jr = jacobian(U, r)
        steps = np.zeros((ns, 3, G, d))
        g_small = np.zeros((ns, G), dtype=bool)
        for g in range(G):
            Ja = Jr[g]  # (s, M, d)
            A = np.einsum("smi,smj->sij", Ja, Ja)
            grad = np.einsum("smi,sm->si", Ja, r[g])
            at_lo, at_hi = U[:, g] <= ctl.lo, U[:, g] >= ctl.hi
            held = (at_lo & (grad > 0)) | (at_hi & (grad < 0))
            pg = np.where(held, 0.0, grad)
            g_small[:, g] = np.abs(pg).max(-1) <= tol["gtol"]
            diag = np.maximum(np.einsum("sii->si", A), 1e-12 * np.einsum("sii->si", A).max(-1, keepdims=True) + 1e-300)
            free = (~held).astype(float)
            Af = A * free[:, :, None] * free[:, None, :] + np.eye(d) * (1.0 - free)[:, None, :]
            lams = lam[:, g, None] * _DAMPING[None]  # (s, 3)
            M = Af[:, None] + lams[..., None, None] * (np.eye(d) * (diag * free)[:, None, None, :])
            steps[:, :, g] = -np.linalg.solve(M, np.broadcast_to(pg[:, None, :, None], (ns, 3, d, 1)))[..., 0]
        Ut = np.clip(U[:, None] + steps, ctl.lo, ctl.hi)  # (s, 3, G, d)
        Ut = np.where(active[:, None, :, None], Ut, U[:, None])  # converged instances stay put
        rt = run(Ut.reshape(ns * 3, G, d))
        for g in range(G):
            rg = rt[g].reshape(ns, 3, -1)
            Jt = np.where(np.isfinite(rg).all(-1), 0.5 * np.nansum(rg**2, -1), np.inf)  # (s, 3)
            b = np.argmin(Jt, axis=1)
            for s in range(ns):
                if not active[s, g]:
                    continue
                nit[s, g] += 1
                if g_small[s, g]:
                    active[s, g], msgs[s, g] = False, "projected gradient below gtol"
                    continue
                Jb = Jt[s, b[s]]
                if Jb < Jv[s, g]:
                    dJ, du = Jv[s, g] - Jb, np.abs(Ut[s, b[s], g] - U[s, g]).max()
                    U[s, g], Jv[s, g] = Ut[s, b[s], g], Jb
                    r[g][s] = rg[s, b[s]]
                    lam[s, g] = max(lam[s, g] * _DAMPING[b[s]] / 3.0, 1e-12)
                    if dJ <= tol["ftol"] * max(Jb, 1.0):
                        active[s, g], msgs[s, g] = False, "relative reduction of J below ftol"
                    elif du <= tol["xtol"]:
                        active[s, g], msgs[s, g] = False, "step below xtol"
                else:
                    lam[s, g] = lam[s, g] * _DAMPING[-1] * 10.0
                    if lam[s, g] > 1e12:
                        active[s, g], msgs[s, g] = False, "no step lowers J (minimum to the model's precision)"
        bar.set_postfix_str(f"J {Jv.min(0).sum():.6g}, {int(active.sum())} active", refresh=False)
        bar.update(1)
    bar.close()
    best = np.argmin(Jv, axis=0)  # (G,)
    Ub = U[best, np.arange(G)]  # (G, d)
    rb = run(Ub[None])
    Jfin = jacobian(Ub[None], rb)
    A_ctl = np.empty((G, d, d))
    for g in range(G):
        Ja = Jfin[g][0]
        Au = np.linalg.pinv(Ja.T @ Ja, hermitian=True)
        A_ctl[g] = ctl.s[:, None] * Au * ctl.s[None, :]
    X = ctl.from_u(Ub)
    dxdz = np.where(ctl.log[None], X, 1.0)
    cov = dxdz[:, :, None] * A_ctl * dxdz[:, None, :]
    std = np.sqrt(np.clip(np.einsum("gii->gi", cov), 0, None))
    sd = np.sqrt(np.clip(np.einsum("gii->gi", A_ctl), 1e-300, None))
    corr = A_ctl / (sd[:, :, None] * sd[:, None, :])
    return GroupCalibration(
        names=list(space.names), groups=names, x=X, std=std, A_control=A_ctl, corr=corr,
        J=Jv[best, np.arange(G)], J_prior=J_prior, m=np.array([len(i) for i in idx]), optima=ctl.from_u(U),
        J_optima=Jv, nit=nit, message=msgs.tolist(), n_calls=counters["calls"], n_member_runs=counters["members"],
        n_column_runs=counters["members"] * runner.n_columns, wall_time=time.perf_counter() - t0,
        attrs={"fd": fd, "fd_step_u": h, "n_starts": ns, "maxiter": int(maxiter),
               "model_error_draws": 0 if D is None else int(np.shape(D)[0])},
    )


def _complete(runner: SiteRunner, X: np.ndarray) -> np.ndarray:
    """``(n, d)`` calibrated parameters -> ``(n, D)`` full vectors (defaults elsewhere)."""
    full = np.tile(runner.model.space.default_vector, (len(X), 1))
    full[:, [runner.model.space.names.index(n) for n in runner.names]] = X
    return full
