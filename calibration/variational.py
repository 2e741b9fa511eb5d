"""Variational calibration: multi-start L-BFGS-B on J(x), Gauss-Newton posterior.

    x_a = argmin J(x) within the bounds
    A   = (H^T R^-1 H + B^-1)^-1,   H = dM/dz at x_a      (posterior covariance, control space)
    H A H^T                                                 (posterior covariance of the outputs)

The minimiser is scipy's L-BFGS-B with autograd gradients, run from ``n_starts``
points: the prior mean and a scrambled Sobol' design inside the bounds (or, for
unbounded parameters, drawn from the prior). It works in the standardised control
``u`` (:meth:`calibration.Problem.to_u`), results are reported in physical units.
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


def variational(problem, n_starts: int = 16, seed: int = 0, maxiter: int = 200, starts=None, options: dict | None = None,
                progress=False) -> VariationalResult:
    """Minimise ``J`` with L-BFGS-B from several starts; Gauss-Newton posterior at the best.

    Parameters
    ----------
    problem : :class:`calibration.Problem`.
    n_starts : number of starts (the prior mean + a Sobol' design, :func:`start_design`).
    seed : seed of the design.
    maxiter : L-BFGS-B iterations per start.
    starts : optional ``(k, d)`` physical starting points instead of the design.
    options : extra ``scipy.optimize.minimize`` options for L-BFGS-B (e.g. ``ftol``,
        ``gtol``; defaults ``ftol=1e-12, gtol=1e-8`` in ``u`` units for a float64 forward
        model; ``ftol=1e-8, gtol=1e-5`` when it computes in float32, as the emulator does:
        a float32 J is not resolved better than ~1e-7 relative, and a tighter ``ftol`` only
        makes L-BFGS-B end in failing line searches, each costing up to 20 runs).
    progress : a bar over the starts (best J, forward runs) on stderr (``True`` or a
        :class:`calibration.progress.Progress`).

    Every start costs about ``nit + a few`` forward runs of one member (cost and
    gradient together by autograd). Returns a :class:`VariationalResult`.
    """
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

    optima, J_opt, hists, success, nit, msgs = [], [], [], [], [], []
    bar = as_progress(progress).bar(len(x0s), desc="variational starts", unit="start")
    for x0 in x0s:
        hist = [J_and_grad(problem.to_u(x0))[0]]

        def record(intermediate_result):  # scipy passes the OptimizeResult to this argument name
            hist.append(float(intermediate_result.fun))

        res = scipy.optimize.minimize(J_and_grad, problem.to_u(x0), jac=True, method="L-BFGS-B", bounds=bounds,
                                      options=tolerances(), callback=record)
        optima.append(problem.from_u(np.clip(res.x, ub[:, 0], ub[:, 1])))
        J_opt.append(float(res.fun))
        hists.append(np.asarray(hist))
        success.append(bool(res.success))
        nit.append(int(res.nit))
        msgs.append(str(res.message))
        bar.set_postfix_str(f"best J {min(J_opt):.4g}, {problem.n_forward_runs - runs0} runs", refresh=False)
        bar.update(1)
    bar.close()
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
        attrs={"n_starts": len(x0s), "best_start": best, "seed": int(seed), "maxiter": int(maxiter),
               "control_space": "z = x (linear), ln x (log-scale parameters)",
               "log_parameters": ",".join(n for n, lg in zip(problem.names, problem.log) if lg)},
    )
