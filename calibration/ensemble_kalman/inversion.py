"""Ensemble Kalman inversion (EKI) and ES-MDA on a :class:`calibration.Problem`.

Both iterate the perturbed-observation Kalman update of
:func:`calibration.ensemble_kalman.analysis.enkf_pertobs` (the one place of the equation)
on an ensemble of control vectors, with the observation error inflated:

    w_j <- w_j + C_wg (C_gg + R / dt)^-1 (y + eta_j - G(w_j)),   eta_j ~ N(0, R / dt)

- **EKI** (Iglesias, Law & Stuart 2013), with EnsembleKalmanProcesses.jl's defaults for
  ``Inversion()`` as the model: the step ``dt`` is chosen by EKP's ``DataMisfitController``
  (Iglesias & Yang 2021, :func:`data_misfit_step`), which stops when the algorithm time
  ``t = sum dt`` reaches ``terminate_at = 1`` (for a linear-Gaussian problem started from
  the prior, ``t = 1`` is the Bayesian posterior); members whose run fails are redrawn
  from a Gaussian fitted to the updated successful members (EKP's ``SampleSuccGauss``,
  nothing re-run). Not copied from EKP: its ``SECNice`` localisation and Nesterov
  accelerator (which also switches off the perturbations); covariances use ``N - 1``
  (EKP's update divides by ``N``).
- **ES-MDA** (Emerick & Reynolds 2013): ``dt = 1 / alpha_i`` for a fixed list of
  ``alphas`` whose inverses sum to one; members whose run fails are dropped.

**How the prior enters.** The initial ensemble is drawn from the Problem's prior
``N(z_b, B)`` (truncated to the bounds), or uniformly inside the bounds when the Problem has
no prior. EKP's plain ``Inversion()`` (our ``prior="ensemble"``, the default) adds no prior
term to the update: the prior is only in the initial ensemble, which at ``t = 1`` is exactly
Bayes for a linear-Gaussian problem (the ensemble mean then minimises ``J`` with its prior
term, in the large-ensemble limit); continued past ``t = 1`` EKI tends to the data-only
least-squares fit. ``prior="tikhonov"`` is EKP's ``Inversion(prior)`` (``impose_prior``,
Tikhonov EKI, Chada, Stuart & Tong 2020): the data are augmented with the prior mean,
``[y; w_b]``, ``G -> [G(w); w]``, ``R -> blockdiag(R, B_w)`` (the prior part unperturbed),
with EKP's default multiplicative inflation ``s = 1e-3 min(1, 1/dt)``; run to convergence
(``on_terminate="continue"``) its ensemble mean tends to the minimiser of the full ``J``.

**Space, bounds and constraints.** The ensemble lives in an unbounded transform ``w`` of
the standardised control ``u`` (:meth:`calibration.Problem.to_u`; ``u = (z - z_b) /
sqrt(diag B)``, ``z = ln x`` for log-scale parameters): with finite bounds ``[lo, hi]`` in
``u``, ``w = logit((u - lo) / (hi - lo))``; with one finite bound ``w = ln(u - lo)`` or
``-ln(hi - u)``; unbounded ``w = u``. Every member is therefore inside the bounds (no
clipping); the Kalman update is linear in ``w``, so for bounded parameters it is a
Gaussian approximation in ``w``, not in ``x``. Members that violate the forward model's
constraints (``Problem.inside`` / ``forward.feasible``, e.g. THETA_PWP < THETA_CAP) are not
run and count as failed, like members whose outputs contain NaN or inf. Failures are logged
(python ``logging``, logger ``calibration.ensemble_kalman.inversion``).

    res = eki(problem)                      # 10 d members, adaptive steps to t = 1
    res = esmda(problem, alphas=(4, 4, 4, 4))
    res.to_xarray(); res.plot("ens.png"); res.to_netcdf("ens.nc")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..result import SavesNetCDF
from .analysis import enkf_pertobs

log = logging.getLogger(__name__)

__all__ = ["eki", "esmda", "EnsembleResult", "data_misfit_step", "BoundsTransform"]


# ------------------------------------------------------------------ result
@dataclass
class EnsembleResult(SavesNetCDF):
    """Output of :func:`eki` and :func:`esmda`. Physical units.

    ensembles ``(K + 1, N, d)``: the ensemble before each of the ``K`` updates and after the
    last (iteration 0 = the prior draw); NaN for members ES-MDA dropped. misfit_member
    ``(K + 1, N)``: data misfit ``Phi_j = 1/2 (y - G_j)^T R^-1 (y - G_j)`` of each member
    (NaN: failed, dropped or not evaluated). failed ``(K + 1, N)`` bool. step ``(K + 1,)``:
    the step ``dt`` of the update that produced iteration ``k`` (EKI: DataMisfitController;
    ES-MDA: ``1 / alpha``; NaN at 0); algorithm_time ``(K + 1,)``: ``sum dt`` so far.
    The posterior is the final ensemble's successful members: ``mean``, ``std`` (ddof 1),
    ``cov``.
    """

    names: list
    method: str
    ensembles: np.ndarray
    misfit_member: np.ndarray
    failed: np.ndarray
    step: np.ndarray
    algorithm_time: np.ndarray
    prior_mean: np.ndarray | None
    n_forward_runs: int
    wall_time: float
    n_obs: int
    attrs: dict = field(default_factory=dict)

    @property
    def posterior_ensemble(self) -> np.ndarray:
        """``(n, d)``: the final ensemble's members that did not fail or get dropped."""
        E = self.ensembles[-1]
        keep = np.isfinite(E).all(1) & ~self.failed[-1]
        return E[keep]

    @property
    def mean(self) -> np.ndarray:
        return self.posterior_ensemble.mean(0)

    @property
    def std(self) -> np.ndarray:
        return self.posterior_ensemble.std(0, ddof=1)

    @property
    def cov(self) -> np.ndarray:
        return np.atleast_2d(np.cov(self.posterior_ensemble, rowvar=False))

    @property
    def misfit(self) -> np.ndarray:
        """``(K + 1,)`` mean data misfit over the members evaluated at each iteration."""
        with np.errstate(invalid="ignore"):
            m = self.misfit_member
            n = np.isfinite(m).sum(1)
            return np.where(n > 0, np.nansum(m, 1) / np.maximum(n, 1), np.nan)

    def to_xarray(self) -> xr.Dataset:
        """Dataset: ``posterior_mean``, ``posterior_std`` ``(parameter)``, ``posterior_cov``
        ``(parameter, parameter_)``, ``ensemble (iteration, member, parameter)``, ``misfit
        (iteration)``, ``misfit_member``, ``failed (iteration, member)``, ``step``,
        ``algorithm_time (iteration)``; attrs ``method``, ``n_forward_runs``, ``wall_time_s``."""
        K1, N, d = self.ensembles.shape
        P, PP = ("parameter",), ("parameter", "parameter_")
        IM = ("iteration", "member")
        return xr.Dataset(
            {
                "posterior_mean": (P, self.mean, {"long_name": "mean of the final ensemble"}),
                "posterior_std": (P, self.std, {"long_name": "std of the final ensemble (ddof 1)"}),
                "posterior_cov": (PP, self.cov, {"long_name": "covariance of the final ensemble"}),
                "prior_mean": (P, np.full(d, np.nan) if self.prior_mean is None else self.prior_mean,
                               {"long_name": "prior mean x_b"}),
                "ensemble": (("iteration", "member", "parameter"), self.ensembles,
                             {"long_name": "ensemble before each update (0: prior draw; last: posterior); NaN: dropped"}),
                "misfit": (("iteration",), self.misfit,
                           {"long_name": "mean data misfit 1/2 (y - G)^T R^-1 (y - G) over evaluated members", "units": "1"}),
                "misfit_member": (IM, self.misfit_member, {"long_name": "data misfit of each member (NaN: not evaluated or failed)", "units": "1"}),
                "failed": (IM, self.failed.astype(np.int8), {"long_name": "member's run failed (NaN/inf output or constraint violated)", "units": "1"}),
                "step": (("iteration",), self.step, {"long_name": "step dt of the update that led to this iteration (R scaled by 1/dt)", "units": "1"}),
                "algorithm_time": (("iteration",), self.algorithm_time, {"long_name": "algorithm time sum(dt)", "units": "1"}),
            },
            coords={"parameter": list(self.names), "parameter_": list(self.names), "iteration": np.arange(K1),
                    "member": np.arange(N)},
            attrs={"method": self.method, "n_forward_runs": int(self.n_forward_runs),
                   "wall_time_s": float(self.wall_time), "n_obs": int(self.n_obs),
                   "n_members_final": int(len(self.posterior_ensemble)), **self.attrs},
        )

    def plot(self, path=None):
        """Ensemble per parameter against iteration (members thin, mean thick; prior mean
        dashed) and the data misfit per iteration (members and mean, log scale). Returns
        the figure (saved when ``path``)."""
        import matplotlib.pyplot as plt

        K1, N, d = self.ensembles.shape
        ncol = min(d + 1, 4)
        nrow = int(np.ceil((d + 1) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, constrained_layout=True)
        it = np.arange(K1)
        for j in range(d):
            ax = axes.flat[j]
            ax.plot(it, self.ensembles[:, :, j], color="C0", lw=0.5, alpha=0.4)
            ax.plot(it, np.nanmean(self.ensembles[:, :, j], 1), color="C3", lw=2, label="mean")
            if self.prior_mean is not None:
                ax.axhline(self.prior_mean[j], color="0.4", ls="--", lw=1, label="prior mean")
            ax.set_title(self.names[j], fontsize=9)
            ax.set_xlabel("iteration")
            if j == 0:
                ax.legend(fontsize=7)
        ax = axes.flat[d]
        ax.plot(it, self.misfit_member, color="C0", lw=0.5, alpha=0.4)
        ax.plot(it, self.misfit, color="C3", lw=2)
        ax.axhline(0.5 * self.n_obs, color="k", ls=":", lw=1, label="m / 2 (fit at the noise level)")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title("data misfit Phi", fontsize=9)
        ax.legend(fontsize=7)
        for a in axes.flat[d + 1:]:
            a.set_visible(False)
        fig.suptitle(f"{self.method}: {N} members, {K1 - 1} updates, {self.n_forward_runs} forward runs", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


# ------------------------------------------------------------------ transform
class BoundsTransform:
    """Unbounded ``w`` <-> standardised control ``u`` within ``u_bounds (d, 2)``.

    Both bounds finite: ``w = logit((u - lo) / (hi - lo))``; only ``lo``: ``w = ln(u - lo)``;
    only ``hi``: ``w = -ln(hi - u)``; none: ``w = u``. ``to_w`` keeps points on a bound
    finite (the unit-cube position is clipped to ``[1e-12, 1 - 1e-12]``).
    """

    EPS = 1e-12

    def __init__(self, u_bounds: np.ndarray):
        ub = np.asarray(u_bounds, dtype=float)
        self.lo, self.hi = ub[:, 0], ub[:, 1]
        fl, fh = np.isfinite(self.lo), np.isfinite(self.hi)
        self.both, self.lower, self.upper = fl & fh, fl & ~fh, ~fl & fh

    def to_w(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        w = u.copy()
        b = self.both
        if b.any():
            p = np.clip((u[..., b] - self.lo[b]) / (self.hi[b] - self.lo[b]), self.EPS, 1 - self.EPS)
            w[..., b] = np.log(p) - np.log1p(-p)
        if self.lower.any():
            w[..., self.lower] = np.log(np.maximum(u[..., self.lower] - self.lo[self.lower], self.EPS))
        if self.upper.any():
            w[..., self.upper] = -np.log(np.maximum(self.hi[self.upper] - u[..., self.upper], self.EPS))
        return w

    def from_w(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=float)
        u = w.copy()
        b = self.both
        if b.any():
            u[..., b] = self.lo[b] + (self.hi[b] - self.lo[b]) / (1.0 + np.exp(-w[..., b]))
        if self.lower.any():
            u[..., self.lower] = self.lo[self.lower] + np.exp(w[..., self.lower])
        if self.upper.any():
            u[..., self.upper] = self.hi[self.upper] - np.exp(-w[..., self.upper])
        return u

    def dw_du(self, u: np.ndarray) -> np.ndarray:
        """Diagonal Jacobian ``dw/du`` ``(d,)`` at ``u (d,)``."""
        u = np.asarray(u, dtype=float)
        g = np.ones_like(u)
        b = self.both
        if b.any():
            p = np.clip((u[b] - self.lo[b]) / (self.hi[b] - self.lo[b]), self.EPS, 1 - self.EPS)
            g[b] = 1.0 / (p * (1 - p) * (self.hi[b] - self.lo[b]))
        if self.lower.any():
            g[self.lower] = 1.0 / (u[self.lower] - self.lo[self.lower])
        if self.upper.any():
            g[self.upper] = 1.0 / (self.hi[self.upper] - u[self.upper])
        return g


# ------------------------------------------------------------------ equations
def data_misfit_step(phi: np.ndarray, m: int, t: float, terminate_at: float = 1.0) -> float:
    """DataMisfitController step (Iglesias & Yang 2021, as EKP's ``calculate_timestep!``).

        Phi_j = 1/2 ||R^-1/2 (G_j - y)||^2  over the successful members j
        q     = max( m / (2 mean(Phi)),  sqrt( m / (2 var(Phi)) ) )      (var with ddof 1)
        dt    = min(q, terminate_at - t)  while t < terminate_at, else q

    ``m`` is the number of (observed) data, ``t`` the algorithm time so far.
    """
    phi = np.asarray(phi, dtype=float)
    with np.errstate(divide="ignore"):
        q = max(m / (2.0 * phi.mean()), np.sqrt(m / (2.0 * phi.var(ddof=1))))
    return float(min(q, terminate_at - t)) if t < terminate_at else float(q)


def _sample_succ_gauss(W_ok: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws from the Gaussian fitted to ``W_ok (k, d)`` (EKP's ``sample_empirical_gaussian``:
    covariance inflated by ``max eig * sqrt(eps)`` when singular; symmetric square root)."""
    mu = W_ok.mean(0)
    C = np.atleast_2d(np.cov(W_ok, rowvar=False))
    lam, V = np.linalg.eigh(C)
    if lam.min() <= 0:
        C = C + max(lam.max(), 1e-300) * np.sqrt(np.finfo(float).eps) * np.eye(len(mu))
        lam, V = np.linalg.eigh(C)
    S = (V * np.sqrt(np.clip(lam, 0, None))) @ V.T
    return mu + rng.standard_normal((n, len(mu))) @ S.T


# ------------------------------------------------------------------ shared machinery
class _Runner:
    """Evaluates ensembles in ``w`` through a Problem; one forward call per ensemble."""

    def __init__(self, problem, method: str):
        self.p, self.method = problem, method
        self.tf = BoundsTransform(problem.u_bounds)
        self.mask = np.asarray(problem.mask, dtype=bool)
        self.y = problem.y[self.mask]
        self.R = problem.R[np.ix_(self.mask, self.mask)]
        self.L = np.linalg.cholesky(self.R)
        self.m = int(self.mask.sum())

    def x(self, W: np.ndarray) -> np.ndarray:
        return self.p.from_u(self.tf.from_w(W))

    def evaluate(self, W: np.ndarray, it: int):
        """``W (n, d)`` -> ``G (n, m_o)`` (NaN rows where failed), ``ok (n,)``, ``phi (n,)``."""
        X = self.x(W)
        n = len(X)
        G = np.full((n, self.m), np.nan)
        feasible = self.p.inside(X)
        if feasible.any():
            with torch.no_grad():
                out = self.p.model(torch.as_tensor(X[feasible]))
            G[feasible] = out.numpy()[:, self.mask]
        finite = np.isfinite(G).all(1)
        ok = feasible & finite
        if not ok.all():
            log.warning("%s iteration %d: %d of %d members failed (%d violate the bounds/constraints and were not run, "
                        "%d gave NaN/inf outputs)", self.method, it, int((~ok).sum()), n, int((~feasible).sum()),
                        int((feasible & ~finite).sum()))
        r = np.linalg.solve(self.L, (self.y[None] - np.where(ok[:, None], G, 0.0)).T).T
        phi = np.where(ok, 0.5 * (r**2).sum(1), np.nan)
        return G, ok, phi

    def initial(self, n_ensemble: int, ensemble, rng: np.random.Generator) -> np.ndarray:
        """Initial ``W (N, d)``: the given physical ensemble, or prior draws truncated to the
        bounds (uniform in the bounds without a prior); infeasible draws are redrawn (20 tries)."""
        p, d = self.p, self.p.d
        if ensemble is not None:
            X = np.asarray(ensemble, dtype=float)
            if X.ndim != 2 or X.shape[1] != d:
                raise ValueError(f"ensemble must be (N, {d}) physical parameter rows ({p.names}), got shape {X.shape}")
            if len(X) < 2:
                raise ValueError(f"ensemble: an ensemble needs at least 2 members, got {len(X)}")
            p.check(X, what="ensemble")
            return self.tf.to_w(p.to_u(X))
        ub = p.u_bounds

        def draw(k):
            if p.B is None:
                if not np.isfinite(ub).all():
                    raise ValueError("without a prior the initial ensemble is uniform in the bounds: give finite bounds "
                                     "for every parameter, or a prior, or an ensemble")
                return rng.uniform(ub[:, 0], ub[:, 1], (k, d))
            s = p._centre_scale()[1]
            Lc = np.linalg.cholesky(p.B / np.outer(s, s))
            return rng.standard_normal((k, d)) @ Lc.T

        U = draw(n_ensemble)
        for _ in range(200):
            bad = ((U < ub[:, 0]) | (U > ub[:, 1])).any(1)
            if not bad.any():
                break
            U[bad] = draw(int(bad.sum()))
        else:
            raise ValueError("could not draw an initial ensemble inside the bounds from the prior (200 tries)")
        for _ in range(20):
            bad = ~p.inside(p.from_u(U))
            if not bad.any():
                break
            U[bad] = draw(int(bad.sum()))
            U[bad] = np.clip(U[bad], ub[:, 0], ub[:, 1])
        return self.tf.to_w(U)


def _check_n_ensemble(n_ensemble, d: int) -> int:
    n = 10 * d if n_ensemble is None else n_ensemble
    if int(n) != n or n < 2:
        raise ValueError(f"n_ensemble must be an integer >= 2 (an ensemble needs at least 2 members), got {n_ensemble}")
    return int(n)


def _progress(total: int, on: bool, desc: str):
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it")


# ------------------------------------------------------------------ EKI
def eki(problem, n_ensemble: int | None = None, n_iterations: int | None = None, seed: int = 0, *,
        prior: str = "ensemble", terminate_at: float = 1.0, on_terminate: str = "stop", ensemble=None,
        evaluate_final: bool = True, progress: bool = False) -> EnsembleResult:
    """Ensemble Kalman inversion with EKP's defaults (see the module doc).

    Parameters
    ----------
    problem : :class:`calibration.Problem`.
    n_ensemble : members ``N``; default ``10 d`` (EKP's advice for ``d <= 10``).
    n_iterations : most updates; default 50 with ``on_terminate="stop"`` (EKI normally stops
        at ``t = terminate_at`` in a handful); required with ``"continue"``.
    seed : seeds the initial ensemble, the perturbations and the redraws.
    prior : ``"ensemble"`` (EKP's ``Inversion()``: the prior only in the initial ensemble) or
        ``"tikhonov"`` (EKP's ``Inversion(prior)``: data augmented with the prior mean; needs a
        Problem with a prior).
    terminate_at : algorithm time at which the DataMisfitController stops (EKP: 1).
    on_terminate : ``"stop"`` (EKP's default) or ``"continue"`` past ``terminate_at`` with
        the controller's uncapped step (to the least-squares / Tikhonov minimiser).
    ensemble : optional initial ensemble ``(N, d)`` in physical units (overrides the draw).
    evaluate_final : run the final ensemble once more to report its misfit and leave out
        members that fail there (``N`` runs; EKP's loop also evaluates it before it stops).
    progress : tqdm bar over iterations.

    Each update costs ``N`` forward runs (one vectorised call). Returns an
    :class:`EnsembleResult` (method ``"eki"``).
    """
    t0 = time.perf_counter()
    runs0 = problem.n_forward_runs
    d = problem.d
    N = _check_n_ensemble(n_ensemble if ensemble is None else len(np.asarray(ensemble)), d)
    if prior not in ("ensemble", "tikhonov"):
        raise ValueError(f"prior must be 'ensemble' (prior only in the initial ensemble) or 'tikhonov', got {prior!r}")
    if prior == "tikhonov" and problem.B is None:
        raise ValueError("prior='tikhonov' needs a Problem with a prior (x_b, B)")
    if on_terminate not in ("stop", "continue"):
        raise ValueError(f"on_terminate must be 'stop' or 'continue', got {on_terminate!r}")
    if not (np.isfinite(terminate_at) and terminate_at > 0):
        raise ValueError(f"terminate_at must be a positive algorithm time, got {terminate_at}")
    if n_iterations is None:
        if on_terminate == "continue":
            raise ValueError("n_iterations is required with on_terminate='continue' (nothing else stops EKI)")
        n_iterations = 50
    if int(n_iterations) != n_iterations or n_iterations < 1:
        raise ValueError(f"n_iterations must be an integer >= 1, got {n_iterations}")
    n_iterations = int(n_iterations)

    rng = np.random.default_rng(seed)
    run = _Runner(problem, "eki")
    W = run.initial(N, ensemble, rng)
    if prior == "tikhonov":  # prior in w: N(w_b, J B_u J), linearised at the prior mean (u = 0)
        s = problem._centre_scale()[1]
        Bu = problem.B / np.outer(s, s)
        u_b = np.zeros(d)
        w_b = run.tf.to_w(u_b)
        Jw = run.tf.dw_du(u_b)
        B_w = Jw[:, None] * Bu * Jw[None, :]

    hist_W, hist_phi, hist_fail, steps, times = [W.copy()], [], [], [np.nan], [0.0]
    t, k = 0.0, 0
    bar = _progress(n_iterations, progress, "eki")
    while True:
        G, ok, phi = run.evaluate(W, k)
        hist_phi.append(phi)
        hist_fail.append(~ok)
        if ok.sum() < 2:
            raise RuntimeError(f"eki iteration {k}: only {int(ok.sum())} of {N} members ran successfully; at least 2 must "
                               "(check the forward model, or the prior / bounds the ensemble is drawn from)")
        if ok.sum() < N / 2:
            log.warning("eki iteration %d: more than half of the members failed (%d of %d); the update uses the rest",
                        k, int((~ok).sum()), N)
        done = k >= n_iterations or (on_terminate == "stop" and t >= terminate_at * (1 - 1e-12))
        if done:
            break
        dt = data_misfit_step(phi[ok], run.m, t, terminate_at)
        noise = rng.standard_normal((N, run.m)) @ run.L.T / np.sqrt(dt)  # drawn for all N (as EKP): seeds stay aligned
        if prior == "tikhonov":
            HE = np.hstack([G[ok], W[ok]])
            y = np.concatenate([run.y, w_b])
            R = np.zeros((run.m + d, run.m + d))
            R[: run.m, : run.m] = run.R / dt
            R[run.m:, run.m:] = B_w / dt
            D = np.hstack([noise[ok], np.zeros((int(ok.sum()), d))])
            W_ok = enkf_pertobs(W[ok], HE, y, R, D=D)
        else:
            W_ok = enkf_pertobs(W[ok], G[ok], run.y, run.R / dt, D=noise[ok])
        W = W.copy()
        W[ok] = W_ok
        if (~ok).any():  # SampleSuccGauss: redraw the failed from the updated successful members
            W[~ok] = _sample_succ_gauss(W_ok, int((~ok).sum()), rng)
            log.info("eki iteration %d: %d failed member(s) redrawn from a Gaussian fitted to the %d updated successful ones",
                     k, int((~ok).sum()), int(ok.sum()))
        if prior == "tikhonov":  # EKP's default multiplicative inflation when the prior is imposed
            ss = 1e-3 * min(1.0, 1.0 / dt)
            W = W.mean(0) + np.sqrt(1.0 / (1.0 - ss * dt)) * (W - W.mean(0))
        t += dt
        k += 1
        hist_W.append(W.copy())
        steps.append(dt)
        times.append(t)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(t=f"{t:.3g}", misfit=f"{np.nanmean(phi):.4g}")
        if not evaluate_final and (k >= n_iterations or (on_terminate == "stop" and t >= terminate_at * (1 - 1e-12))):
            hist_phi.append(np.full(N, np.nan))
            hist_fail.append(np.zeros(N, dtype=bool))
            break
    if bar is not None:
        bar.close()
    if on_terminate == "stop" and t < terminate_at * (1 - 1e-12):
        log.warning("eki: stopped after n_iterations=%d updates at algorithm time %.3g < terminate_at=%g",
                    n_iterations, t, terminate_at)
    return EnsembleResult(
        names=list(problem.names), method="eki", ensembles=np.stack([run.x(w) for w in hist_W]),
        misfit_member=np.stack(hist_phi), failed=np.stack(hist_fail), step=np.asarray(steps),
        algorithm_time=np.asarray(times), prior_mean=None if problem.x_b is None else np.asarray(problem.x_b, dtype=float),
        n_forward_runs=problem.n_forward_runs - runs0, wall_time=time.perf_counter() - t0, n_obs=run.m,
        attrs={"n_ensemble": N, "seed": int(seed), "prior": prior, "terminate_at": float(terminate_at),
               "on_terminate": on_terminate, "scheduler": "DataMisfitController (Iglesias & Yang 2021)",
               "failure_handler": "SampleSuccGauss (failed members redrawn, not re-run)",
               "space": "w: logit of the unit-cube position of u within its bounds (ln for one-sided, u if unbounded)"},
    )


# ------------------------------------------------------------------ ES-MDA
def check_alphas(alphas) -> np.ndarray:
    """``alphas`` -> float array; ValueError unless finite, > 0 and ``sum 1/alpha = 1``."""
    a = np.atleast_1d(np.asarray(alphas, dtype=float))
    if a.ndim != 1 or a.size < 1 or not np.isfinite(a).all() or np.any(a <= 0):
        raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas!r}")
    s = float(np.sum(1.0 / a))
    if abs(s - 1.0) > 1e-8:
        raise ValueError(f"alphas: the inverses must sum to one (Emerick & Reynolds 2013), got sum(1/alpha) = {s:.6g} "
                         f"for {a.tolist()}; e.g. ({a.size},) * {a.size} or (9.333, 7, 4, 2)")
    return a


def esmda(problem, n_ensemble: int | None = None, alphas=(4.0, 4.0, 4.0, 4.0), seed: int = 0, *, ensemble=None,
          perturbations=None, evaluate_final: bool = True, progress: bool = False) -> EnsembleResult:
    """ES-MDA (Emerick & Reynolds 2013) on a Problem (see the module doc).

        for alpha in alphas:   w_j <- w_j + C_wg (C_gg + alpha R)^-1 (y + sqrt(alpha) e_j - G(w_j)),  e_j ~ N(0, R)

    Parameters
    ----------
    problem : :class:`calibration.Problem`.
    n_ensemble : members ``N``; default ``10 d``.
    alphas : inflation coefficients, ``sum(1 / alphas) == 1`` (validated, not normalised).
    seed : seeds the initial ensemble and the perturbations.
    ensemble : optional initial ensemble ``(N, d)`` in physical units.
    perturbations : optional ``(len(alphas), N, m_o)`` draws of ``N(0, R)`` over the observed
        data, scaled by ``sqrt(alpha)`` inside (iterative_ensemble_smoother's
        ``observation_perturbations`` convention), to reproduce another run exactly.
    evaluate_final : run the posterior ensemble once more (``N`` runs) for its misfit; members
        failing there are left out of the posterior.
    progress : tqdm bar over iterations.

    Members whose run fails are dropped (and logged); the ensemble goes on while at least 2
    remain. Costs ``N`` runs per alpha. Returns an :class:`EnsembleResult` (method ``"esmda"``).
    """
    t0 = time.perf_counter()
    runs0 = problem.n_forward_runs
    a = check_alphas(alphas)
    N = _check_n_ensemble(n_ensemble if ensemble is None else len(np.asarray(ensemble)), problem.d)
    rng = np.random.default_rng(seed)
    run = _Runner(problem, "esmda")
    W = run.initial(N, ensemble, rng)
    if perturbations is not None:
        perturbations = np.asarray(perturbations, dtype=float)
        if perturbations.shape != (a.size, N, run.m):
            raise ValueError(f"perturbations must be (len(alphas), N, m_observed) = {(a.size, N, run.m)}, got {perturbations.shape}")
    active = np.ones(N, dtype=bool)
    hist_W, hist_phi, hist_fail = [W.copy()], [], []
    bar = _progress(a.size, progress, "esmda")
    for i, alpha in enumerate(a):
        G, ok, phi = run.evaluate(W[active], i)
        full_phi = np.full(N, np.nan)
        full_phi[active] = phi
        fail = np.zeros(N, dtype=bool)
        fail[np.flatnonzero(active)[~ok]] = True
        hist_phi.append(full_phi)
        hist_fail.append(fail)
        if fail.any():
            log.warning("esmda iteration %d: %d member(s) dropped; %d remain", i, int(fail.sum()), int((active & ~fail).sum()))
        e = rng.standard_normal((N, run.m)) @ run.L.T if perturbations is None else perturbations[i]
        active_new = active & ~fail
        if active_new.sum() < 2:
            raise RuntimeError(f"esmda iteration {i}: only {int(active_new.sum())} member(s) left after dropping failed runs; "
                               "at least 2 are needed")
        D = np.sqrt(alpha) * e[active_new]
        W = W.copy()
        W[active_new] = enkf_pertobs(W[active_new], G[ok], run.y, alpha * run.R, D=D)
        W[~active_new] = np.nan
        active = active_new
        hist_W.append(W.copy())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(alpha=f"{alpha:.3g}", misfit=f"{np.nanmean(phi):.4g}")
    if bar is not None:
        bar.close()
    if evaluate_final:
        _, ok, phi = run.evaluate(W[active], a.size)
        full_phi = np.full(N, np.nan)
        full_phi[active] = phi
        fail = np.zeros(N, dtype=bool)
        fail[np.flatnonzero(active)[~ok]] = True
        if fail.any():
            log.warning("esmda: %d member(s) of the posterior ensemble failed and are left out of it", int(fail.sum()))
        if (active & ~fail).sum() < 2:
            raise RuntimeError("esmda: fewer than 2 members of the posterior ensemble ran successfully")
    else:
        full_phi, fail = np.full(N, np.nan), np.zeros(N, dtype=bool)
    hist_phi.append(full_phi)
    hist_fail.append(fail)
    steps = np.concatenate([[np.nan], 1.0 / a])
    X = np.stack([np.where(np.isfinite(w), run.x(np.nan_to_num(w)), np.nan) for w in hist_W])
    return EnsembleResult(
        names=list(problem.names), method="esmda", ensembles=X, misfit_member=np.stack(hist_phi),
        failed=np.stack(hist_fail), step=steps, algorithm_time=np.concatenate([[0.0], np.cumsum(1.0 / a)]),
        prior_mean=None if problem.x_b is None else np.asarray(problem.x_b, dtype=float),
        n_forward_runs=problem.n_forward_runs - runs0, wall_time=time.perf_counter() - t0, n_obs=run.m,
        attrs={"n_ensemble": N, "seed": int(seed), "alphas": a.tolist(), "failure_handler": "failed members dropped",
               "space": "w: logit of the unit-cube position of u within its bounds (ln for one-sided, u if unbounded)"},
    )
