"""Variational calibration: multi-start L-BFGS-B on J(x), Gauss-Newton posterior.

    x_a = argmin J(x) within the bounds
    A   = (H^T R^-1 H + B^-1)^-1,   H = dM/dz at x_a      (posterior covariance, control space)
    H A H^T                                                 (posterior covariance of the outputs)

Two minimisers, run from ``n_starts`` points (the prior mean and a scrambled Sobol'
design inside the bounds, or, for unbounded parameters, prior draws), both in the
standardised control ``u`` (:meth:`calibration.Problem.to_u`); results are in physical units.

* ``method="lm"`` (the default): Levenberg-Marquardt on the least-squares form
  ``J = 1/2 |r(u)|^2`` (:meth:`calibration.Problem._whitened`), all starts in lock-step so
  that each iteration is two *batched* forward calls: the residual Jacobian ``dr/du`` for
  every start at once (central finite differences, ``2 d`` perturbed members per start,
  by default; or autograd, ``jacobian="auto"``), then three trial steps per start with
  damping ``lambda * (0.1, 1, 10)`` (Marquardt's diagonal scaling), the best one accepted
  when it lowers J. A batched run of ``k`` members costs little more than one member for
  the emulator and the vectorised physics (1.2 s for 18 members against 0.8 s for one on
  a one-year window), so an iteration costs about two runs, where an L-BFGS-B iteration
  costs a run with its gradient (4 runs' worth) and rarely fewer than 20 iterations per
  start. Finite-difference directions are enough for the search: only the *direction*
  comes from them; every accepted step lowers the true J, and the posterior (below)
  uses the autograd Jacobian. Bounds: steps are projected onto the box; a trial point
  outside the model's constraints counts as no decrease.
* ``method="lbfgsb"``: scipy's L-BFGS-B with autograd gradients, one start after the
  other (a general cost; the starts run sequentially).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.stats
import torch
import xarray as xr

from .progress import as_progress
from .result import SavesNetCDF


@dataclass
class VariationalResult(SavesNetCDF):
    """Output of :func:`variational`. Physical units unless named ``*_control``.

    x : best optimum ``(d,)``; J : its cost. starts, optima ``(n_starts, d)``, J_optima
    ``(n_starts,)``, J_history: one array per start (J at each iteration), success,
    nit, message per start. A_control ``(d, d)``: Gauss-Newton posterior covariance of
    the control ``z``; cov ``(d, d)``: of ``x`` (linearised ``dx/dz A dx/dz`` for log
    parameters); std, corr, prior_std, prior_std_control, error_reduction
    ``1 - sigma_post / sigma_prior`` (control space). H ``(m, d)`` = dM/dz at ``x``;
    y_a = M(x) ``(m,)``; output_cov = H A H^T ``(m, m)``, output_std its diagonal's root.
    """

    names: list
    x: np.ndarray
    J: float
    starts: np.ndarray
    optima: np.ndarray
    J_optima: np.ndarray
    J_history: list
    success: np.ndarray
    nit: np.ndarray
    message: list
    A_control: np.ndarray
    cov: np.ndarray
    std: np.ndarray
    corr: np.ndarray
    prior_mean: np.ndarray | None
    prior_std: np.ndarray | None
    prior_std_control: np.ndarray | None
    error_reduction: np.ndarray
    H: np.ndarray
    y: np.ndarray
    y_a: np.ndarray
    output_cov: np.ndarray
    output_std: np.ndarray
    n_forward_runs: int
    wall_time: float
    u: np.ndarray | None = None  # x, std and prior in the standardised control u (for plots)
    u_std: np.ndarray | None = None
    u_prior: tuple | None = None
    labels: object = None
    attrs: dict = field(default_factory=dict)

    def to_xarray(self) -> xr.Dataset:
        """Dataset over ``parameter`` (``parameter_`` for covariances), ``start``,
        ``iteration`` and ``obs`` (with ``obs_variable/obs_site/obs_time`` labels when known)."""
        p, p_ = {"parameter": self.names}, {"parameter_": self.names}
        nan = np.full(len(self.names), np.nan)
        hist = np.full((len(self.J_history), max(len(h) for h in self.J_history)), np.nan)
        for i, h in enumerate(self.J_history):
            hist[i, : len(h)] = h
        P, PP = ("parameter",), ("parameter", "parameter_")
        ds = xr.Dataset(
            {
                "posterior_mean": (P, self.x, {"long_name": "posterior mode x_a (minimum of J)"}),
                "posterior_std": (P, self.std, {"long_name": "Gauss-Newton posterior std (linearised for log parameters)"}),
                "posterior_cov": (PP, self.cov, {"long_name": "Gauss-Newton posterior covariance A"}),
                "posterior_corr": (PP, self.corr, {"long_name": "posterior correlation", "units": "1"}),
                "posterior_cov_control": (PP, self.A_control, {"long_name": "A = (H^T R^-1 H + B^-1)^-1 in the control space z (ln x for log parameters)"}),
                "prior_mean": (P, nan if self.prior_mean is None else self.prior_mean, {"long_name": "prior mean x_b"}),
                "prior_std": (P, nan if self.prior_std is None else self.prior_std, {"long_name": "prior std (linearised at x_b for log parameters)"}),
                "error_reduction": (P, self.error_reduction, {"long_name": "1 - sigma_post / sigma_prior (control space)", "units": "1"}),
                "J": (("start",), self.J_optima, {"long_name": "cost J at each start's optimum", "units": "1"}),
                "x": (("start", "parameter"), self.optima, {"long_name": "optimum of each start"}),
                "x_start": (("start", "parameter"), self.starts, {"long_name": "starting point"}),
                "J_history": (("start", "iteration"), hist, {"long_name": "J at each L-BFGS-B iteration (NaN-padded)", "units": "1"}),
                "success": (("start",), self.success.astype(np.int8), {"long_name": "scipy reported convergence"}),
                "y": (("obs",), self.y, {"long_name": "observations (NaN: masked)"}),
                "y_posterior": (("obs",), self.y_a, {"long_name": "M(x_a)"}),
                "output_std": (("obs",), self.output_std, {"long_name": "posterior output std, sqrt diag(H A H^T)"}),
            },
            coords={**p, **p_, "start": np.arange(len(self.J_optima))},
            attrs={
                "method": "variational (multi-start L-BFGS-B, Gauss-Newton posterior)",
                "n_forward_runs": int(self.n_forward_runs),
                "wall_time_s": float(self.wall_time),
                "J_min": float(self.J),
                **self.attrs,
            },
        )
        if self.labels is not None and hasattr(self.labels, "get_level_values"):
            for lev in self.labels.names:
                v = self.labels.get_level_values(lev)
                ds = ds.assign_coords({f"obs_{lev}": ("obs", v.to_numpy() if lev == "time" else v.astype(str).to_numpy())})
        return ds

    def plot(self, path=None):
        """Prior vs posterior (mode +- 2 sd) per parameter in the standardised control
        ``u`` (prior N(0, 1) when the prior is diagonal; labels give x_a in physical
        units), and J history per start. Returns the figure (saved when ``path``)."""
        import matplotlib.pyplot as plt

        d = len(self.names)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.35 * d + 3), constrained_layout=True)
        yy = np.arange(d)
        if self.u_prior is not None:
            a1.errorbar(self.u_prior[0], yy + 0.15, xerr=2 * self.u_prior[1], fmt="o", color="0.5", label="prior (+- 2 sd)")
        a1.errorbar(self.u, yy - 0.15, xerr=2 * self.u_std, fmt="o", color="C3", label="posterior (+- 2 sd)")
        a1.set_yticks(yy, [f"{n} = {v:.3g}" for n, v in zip(self.names, self.x)])
        a1.invert_yaxis()
        a1.legend(fontsize=8)
        a1.set_xlabel("standardised control u = (z - z_b) / sigma_b")
        a1.set_title("prior and posterior")
        for i, h in enumerate(self.J_history):
            a2.plot(np.arange(len(h)), h, lw=1.5 if i == int(np.argmin(self.J_optima)) else 0.8,
                    color="C3" if i == int(np.argmin(self.J_optima)) else "0.6")
        a2.set_yscale("log")
        a2.set_xlabel("L-BFGS-B iteration")
        a2.set_ylabel("J")
        a2.set_title(f"J history of {len(self.J_history)} starts (best in red)")
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def start_design(problem, n_starts: int, seed: int = 0) -> np.ndarray:
    """``n_starts`` starting points ``(n_starts, d)`` in physical units: the prior mean (or
    the centre of the bounds) first, then a scrambled Sobol' design in ``u`` within the
    bounds; unbounded directions are mapped through the normal quantile (prior draws)."""
    d = problem.d
    ub = problem.u_bounds
    first = np.zeros(d) if problem.B is not None else np.where(np.isfinite(ub).all(1), ub.mean(1), 0.0)
    n_rest = max(n_starts - 1, 0)
    if n_rest == 0:
        return problem.from_u(first[None])
    q = scipy.stats.qmc.Sobol(d, scramble=True, seed=seed).random(max(2, 1 << int(np.ceil(np.log2(n_rest)))))[:n_rest]
    finite = np.isfinite(ub)
    lo = np.where(finite[:, 0], ub[:, 0], -np.inf)
    hi = np.where(finite[:, 1], ub[:, 1], np.inf)
    # uniform between finite bounds; else prior-normal truncated to the bounds
    box = finite.all(1)
    u = np.empty_like(q)
    u[:, box] = lo[box] + q[:, box] * (hi[box] - lo[box])
    if (~box).any():
        a, b = scipy.stats.norm.cdf(lo[~box]), scipy.stats.norm.cdf(hi[~box])
        u[:, ~box] = scipy.stats.norm.ppf(a + q[:, ~box] * (b - a))
    u = np.vstack([first, u])
    x = problem.from_u(u)
    ok = problem.inside(x)  # constraints: replace infeasible points by the first
    x[~ok] = x[0]
    return x


def gauss_newton(problem, x) -> dict:
    """Gauss-Newton posterior at ``x`` (physical, ``(d,)``):
    ``A = (H^T R^-1 H + B^-1)^-1`` with ``H = dM/dz`` over the observed data, and the
    output covariance ``H A H^T`` over all ``m`` outputs. Returns a dict of arrays."""
    H = problem.jacobian(x, control=True)  # (m, d)
    Ho = H[problem.mask]
    Ro = problem.R[np.ix_(problem.mask, problem.mask)]
    precision = Ho.T @ np.linalg.solve(Ro, Ho)  # H^T R^-1 H
    if problem.B is not None:
        precision = precision + np.linalg.inv(problem.B)  # + B^-1
    A = np.linalg.pinv(precision, hermitian=True)  # pinv: tolerate unidentified directions without a prior
    A = 0.5 * (A + A.T)
    D = np.where(problem.log, x, 1.0)  # dx/dz
    cov = D[:, None] * A * D[None, :]
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    sd_c = np.sqrt(np.clip(np.diag(A), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = A / np.outer(sd_c, sd_c)
    out_cov = H @ A @ H.T
    return {"H": H, "A": A, "cov": cov, "std": std, "corr": corr, "output_cov": out_cov,
            "output_std": np.sqrt(np.clip(np.diag(out_cov), 0, None))}


VARIATIONAL_METHODS = ("lm", "lbfgsb")


def variational(problem, n_starts: int = 16, seed: int = 0, maxiter: int = 200, starts=None, options: dict | None = None,
                progress=False, method: str = "lm", jacobian: str = "fd") -> VariationalResult:
    """Minimise ``J`` from several starts (Levenberg-Marquardt or L-BFGS-B); Gauss-Newton
    posterior at the best.

    Parameters
    ----------
    problem : :class:`calibration.Problem`.
    n_starts : number of starts (the prior mean + a Sobol' design, :func:`start_design`).
    seed : seed of the design.
    maxiter : iterations per start.
    starts : optional ``(k, d)`` physical starting points instead of the design.
    options : tolerances. L-BFGS-B: extra ``scipy.optimize.minimize`` options (e.g.
        ``ftol``, ``gtol``; defaults ``ftol=1e-12, gtol=1e-8`` in ``u`` units for a float64
        forward model; ``ftol=1e-8, gtol=1e-5`` when it computes in float32, as the emulator
        does: a float32 J is not resolved better than ~1e-7 relative, and a tighter ``ftol``
        only makes L-BFGS-B end in failing line searches, each costing up to 20 runs).
        LM: ``ftol`` (stop when an accepted step lowers J by less than ``ftol * max(J, 1)``;
        default 1e-10 float64, 1e-6 float32), ``xtol`` (stop when the step is below it in
        ``u``, the prior-std units; default 1e-8 / 1e-4), ``gtol`` (stop when the projected
        gradient's largest entry is below it; default 1e-8 / 1e-5).
    progress : a bar over the starts (L-BFGS-B) or the iterations (LM) with the best J and
        the forward runs, on stderr (``True`` or a :class:`calibration.progress.Progress`).
    method : ``"lm"`` (default) or ``"lbfgsb"`` (see the module doc).
    jacobian : LM only: ``"fd"`` (default; central differences in one batched run, step
        ``eps^(1/3)`` in ``u`` for the forward's precision ``eps``, one-sided at a bound) or a
        :func:`calibration.batched_jacobian` mode (``"auto"``, ``"forward"``, ``"reverse"``).

    L-BFGS-B: every start costs about ``nit + a few`` runs with their gradient. LM: every
    iteration costs one batched call of ``2 d`` members per active start and one of 3.
    Returns a :class:`VariationalResult`.
    """
    if method not in VARIATIONAL_METHODS:
        raise ValueError(f"method must be one of {VARIATIONAL_METHODS}, got {method!r}")
    if jacobian not in ("fd", "auto", "forward", "reverse"):
        raise ValueError(f"jacobian must be 'fd', 'auto', 'forward' or 'reverse', got {jacobian!r}")
    t0 = time.perf_counter()
    runs0 = problem.n_forward_runs
    x0s = start_design(problem, n_starts, seed) if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    problem.check(x0s, what="starting points")
    ub = problem.u_bounds
    bounds = [(lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None) for lo, hi in ub]

    def tolerances():  # the forward model's precision (seen at the first evaluation) sets the defaults
        single = getattr(problem, "forward_dtype", torch.float64) not in (torch.float64, torch.complex128)
        tol = {"ftol": 1e-8, "gtol": 1e-5} if single else {"ftol": 1e-12, "gtol": 1e-8}
        return {"maxiter": int(maxiter), **tol, **(options or {})}

    def J_and_grad(u):  # J(u) and dJ/du by autograd
        u = np.clip(u, ub[:, 0], ub[:, 1])
        if not problem.inside(problem.from_u(u[None]))[0]:  # violates a constraint: the line search backs off
            return np.inf, np.zeros_like(u)
        ut = torch.as_tensor(u)[None].requires_grad_(True)
        with torch.enable_grad():
            J = problem._cost(problem.from_u(ut))[0]
            (g,) = torch.autograd.grad(J, ut)
        return float(J.detach()), g[0].numpy().copy()

    if method == "lm":
        optima, J_opt, hists, success, nit, msgs = _levenberg_marquardt(problem, x0s, maxiter, options, jacobian,
                                                                          progress)
    else:
        optima, J_opt, hists, success, nit, msgs = _lbfgsb(problem, x0s, J_and_grad, bounds, tolerances(), progress)
    return _result(problem, x0s, optima, J_opt, hists, success, nit, msgs, seed, maxiter, method, t0, runs0)


def _lbfgsb(problem, x0s, J_and_grad, bounds, options, progress):
    """L-BFGS-B from each start in turn. Returns optima, J, histories, success, nit, messages."""
    ub = problem.u_bounds
    runs0 = problem.n_forward_runs
    optima, J_opt, hists, success, nit, msgs = [], [], [], [], [], []
    bar = as_progress(progress).bar(len(x0s), desc="variational starts", unit="start")
    for x0 in x0s:
        hist = [J_and_grad(problem.to_u(x0))[0]]

        def record(intermediate_result):  # scipy passes the OptimizeResult to this argument name
            hist.append(float(intermediate_result.fun))

        res = scipy.optimize.minimize(J_and_grad, problem.to_u(x0), jac=True, method="L-BFGS-B", bounds=bounds,
                                      options=options, callback=record)
        optima.append(problem.from_u(np.clip(res.x, ub[:, 0], ub[:, 1])))
        J_opt.append(float(res.fun))
        hists.append(np.asarray(hist))
        success.append(bool(res.success))
        nit.append(int(res.nit))
        msgs.append(str(res.message))
        bar.set_postfix_str(f"best J {min(J_opt):.4g}, {problem.n_forward_runs - runs0} runs", refresh=False)
        bar.update(1)
    bar.close()
    return optima, J_opt, hists, success, nit, msgs


def _result(problem, x0s, optima, J_opt, hists, success, nit, msgs, seed, maxiter, method, t0, runs0):
    """The Gauss-Newton posterior at the best optimum, as a :class:`VariationalResult`."""
    optima, J_opt = np.asarray(optima), np.asarray(J_opt)
    best = int(np.argmin(J_opt))
    x_a = optima[best]
    gn = gauss_newton(problem, x_a)
    with torch.no_grad():
        y_a = problem.model(torch.as_tensor(x_a)[None])[0].numpy()
    if problem.B is not None:
        sd_prior_c = np.sqrt(np.diag(problem.B))
        sd_prior = np.where(problem.log, problem.x_b, 1.0) * sd_prior_c
        reduction = 1.0 - np.sqrt(np.diag(gn["A"])) / sd_prior_c
    else:
        sd_prior_c = sd_prior = None
        reduction = np.full(problem.d, np.nan)
    return VariationalResult(
        names=list(problem.names), x=x_a, J=float(J_opt[best]), starts=x0s, optima=optima, J_optima=J_opt,
        J_history=hists, success=np.asarray(success), nit=np.asarray(nit), message=msgs,
        A_control=gn["A"], cov=gn["cov"], std=gn["std"], corr=gn["corr"],
        prior_mean=None if problem.x_b is None else np.asarray(problem.x_b, dtype=float),
        prior_std=sd_prior, prior_std_control=sd_prior_c, error_reduction=reduction,
        H=gn["H"], y=problem.y.copy(), y_a=y_a, output_cov=gn["output_cov"], output_std=gn["output_std"],
        u=problem.to_u(x_a), u_std=np.sqrt(np.diag(gn["A"])) / problem._centre_scale()[1],
        u_prior=None if problem.B is None else (np.zeros(problem.d), sd_prior_c / problem._centre_scale()[1]),
        n_forward_runs=problem.n_forward_runs - runs0, wall_time=time.perf_counter() - t0, labels=problem.labels,
        attrs={"n_starts": len(x0s), "best_start": best, "seed": int(seed), "maxiter": int(maxiter), "method": method,
               "control_space": "z = x (linear), ln x (log-scale parameters)",
               "log_parameters": ",".join(n for n, lg in zip(problem.names, problem.log) if lg)},
    )


# ------------------------------------------------------------------ Levenberg-Marquardt
_LM_DAMPING = np.array([0.1, 1.0, 10.0])  # trial dampings per iteration, times the current lambda


def _residuals_u(problem, U: np.ndarray) -> np.ndarray:
    """Whitened residuals ``r (n, M)`` at standardised controls ``U (n, d)``, one batched
    forward call over the feasible rows; infeasible or non-finite rows are NaN."""
    r = None
    ok = problem.inside(problem.from_u(U))
    if ok.any():
        with torch.no_grad():
            rr = problem._whitened(torch.as_tensor(problem.from_u(U[ok]))).numpy()
        r = np.full((len(U), rr.shape[1]), np.nan)
        r[ok] = rr
    else:
        r = np.full((len(U), 1), np.nan)
    return r


def _residual_jacobian_u(problem, U: np.ndarray, r: np.ndarray, mode: str) -> np.ndarray:
    """``dr/du`` ``(n, M, d)`` at ``U (n, d)`` (``r`` the residuals there): central
    differences of all ``n x 2 d`` perturbed points in one batched call (``mode="fd"``), or
    autograd (:meth:`calibration.Problem.jacobian`, ``mode`` of :func:`calibration.batched_jacobian`)."""
    n, d = U.shape
    s = problem._centre_scale()[1]
    if mode != "fd":
        H = np.atleast_3d(problem.jacobian(problem.from_u(U), control=True, mode=mode))  # (n, m, d) dM/dz
        Ho = torch.as_tensor(H[:, problem.mask] * s)  # dM/du on the observed data
        L = problem._L
        LH = Ho / torch.diagonal(L)[:, None] if problem._diag else torch.linalg.solve_triangular(L, Ho, upper=False)
        Jr = -LH.numpy()
        if problem.B is not None:  # r_b = dz Lb: dr_b/du = Lb^T diag(s)
            Jr = np.concatenate([Jr, np.broadcast_to(problem._Binv_chol.T * s[None, :], (n, d, d))], axis=1)
        return Jr
    eps = torch.finfo(getattr(problem, "forward_dtype", torch.float64)).eps
    h = float(eps ** (1.0 / 3.0))
    ub = problem.u_bounds
    P = np.repeat(U[:, None, :], 2 * d, axis=1)  # (n, 2d, d): +h e_j then -h e_j
    j = np.arange(d)
    P[:, j, j] += h
    P[:, d + j, j] -= h
    inside = (P >= ub[:, 0]) & (P <= ub[:, 1])
    ok = inside.all(-1) & problem.inside(problem.from_u(P.reshape(-1, d))).reshape(n, 2 * d)
    rp = np.repeat(r[:, None, :], 2 * d, axis=1)  # a point we cannot evaluate falls back to the centre
    if ok.any():
        rp[ok] = _residuals_u(problem, P[ok])
    up = np.where(ok[:, :d], U + h, U)  # (n, d): u_j of the + and - points actually used
    um = np.where(ok[:, d:], U - h, U)
    width = np.where(up > um, up - um, np.inf)  # no valid side: zero derivative
    return np.transpose((rp[:, :d] - rp[:, d:]) / width[:, :, None], (0, 2, 1))  # (n, M, d)


def _levenberg_marquardt(problem, x0s, maxiter, options, jacobian, progress):
    """Projected Levenberg-Marquardt from every start at once (see the module doc).
    Returns optima, J, histories, success, nit, messages (per start)."""
    ub = problem.u_bounds
    U = np.clip(problem.to_u(x0s), ub[:, 0], ub[:, 1])
    k, d = U.shape
    runs0 = problem.n_forward_runs
    r = _residuals_u(problem, U)
    if not np.isfinite(r).all():
        raise ValueError("variational: the cost is not finite at a starting point")
    single = getattr(problem, "forward_dtype", torch.float64) not in (torch.float64, torch.complex128)
    tol = ({"ftol": 1e-6, "xtol": 1e-4, "gtol": 1e-5} if single else {"ftol": 1e-10, "xtol": 1e-8, "gtol": 1e-8})
    tol.update(options or {})
    unknown = set(tol) - {"ftol", "xtol", "gtol"}
    if unknown:
        raise ValueError(f"options for method='lm' are ftol, xtol, gtol; got {sorted(unknown)}")
    J = 0.5 * (r**2).sum(-1)
    hists = [[float(j)] for j in J]
    lam = np.full(k, 1e-3)
    Jr = np.zeros((k, r.shape[1], d))
    stale = np.ones(k, dtype=bool)  # the Jacobian must be (re)computed at U
    active = np.ones(k, dtype=bool)
    nit = np.zeros(k, dtype=int)
    msgs = ["maximum number of iterations reached"] * k
    success = np.zeros(k, dtype=bool)
    bar = as_progress(progress).bar(maxiter, desc=f"variational (LM, {k} start{'s' * (k != 1)})", unit="it")
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        need = idx[stale[idx]]
        if need.size:
            Jr[need] = _residual_jacobian_u(problem, U[need], r[need], jacobian)
            stale[need] = False
        Ja, ra = Jr[idx], r[idx]
        A = np.einsum("kmi,kmj->kij", Ja, Ja)
        g = np.einsum("kmi,km->ki", Ja, ra)  # dJ/du
        at_lo, at_hi = U[idx] <= ub[:, 0], U[idx] >= ub[:, 1]
        held = (at_lo & (g > 0)) | (at_hi & (g < 0))  # at a bound, the descent direction points out
        pg = np.where(held, 0.0, g)  # projected gradient
        small_g = np.abs(pg).max(-1) <= tol["gtol"]
        diag = np.maximum(np.einsum("kii->ki", A), 1e-12 * np.einsum("kii->ki", A).max(-1, keepdims=True) + 1e-300)
        lams = lam[idx, None] * _LM_DAMPING[None, :]  # (a, 3)
        # parameters held at a bound by the gradient stay there: the step solves the reduced system
        free = (~held).astype(float)  # (a, d)
        A_free = A * free[:, :, None] * free[:, None, :] + np.eye(d) * (1.0 - free)[:, None, :]
        M = A_free[:, None] + lams[..., None, None] * (np.eye(d) * (diag * free)[:, None, None, :])  # (a, 3, d, d)
        step = -np.linalg.solve(M, np.broadcast_to(pg[:, None, :, None], (*lams.shape, d, 1)))[..., 0]
        Ut = np.clip(U[idx, None, :] + step, ub[:, 0], ub[:, 1])  # (a, 3, d)
        rt = _residuals_u(problem, Ut.reshape(-1, d)).reshape(idx.size, len(_LM_DAMPING), -1)
        Jt = np.where(np.isfinite(rt).all(-1), 0.5 * np.nansum(rt**2, -1), np.inf)
        b = np.argmin(Jt, axis=1)
        Jb = Jt[np.arange(idx.size), b]
        for a, i in enumerate(idx):
            nit[i] += 1
            if small_g[a]:
                active[i], success[i], msgs[i] = False, True, "projected gradient below gtol"
                continue
            if Jb[a] < J[i]:
                dJ, du = J[i] - Jb[a], np.abs(Ut[a, b[a]] - U[i]).max()
                U[i], r[i], J[i] = Ut[a, b[a]], rt[a, b[a]], Jb[a]
                lam[i] = max(lams[a, b[a]] / 3.0, 1e-12)
                stale[i] = True
                hists[i].append(float(J[i]))
                if dJ <= tol["ftol"] * max(J[i], 1.0):
                    active[i], success[i], msgs[i] = False, True, "relative reduction of J below ftol"
                elif du <= tol["xtol"]:
                    active[i], success[i], msgs[i] = False, True, "step below xtol"
            else:
                lam[i] = lams[a, -1] * 10.0
                if lam[i] > 1e12:  # no damping lowers J: a minimum to the forward's precision
                    active[i], success[i], msgs[i] = False, True, "no step lowers J (minimum to the model's precision)"
        bar.set_postfix_str(f"best J {J.min():.6g}, {active.sum()} active, {problem.n_forward_runs - runs0} runs",
                            refresh=False)
        bar.update(1)
    bar.close()
    optima = problem.from_u(U)
    return list(optima), list(J), [np.asarray(h) for h in hists], list(success), list(nit), msgs
