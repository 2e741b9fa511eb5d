"""MCMC on a Problem with emcee's affine-invariant ensemble sampler.

    p(z | y) ∝ exp(-J(x(z))),   -inf outside the bounds

The walkers move in the standardised control ``u`` (:meth:`calibration.Problem.to_u`);
all walkers are evaluated in one vectorised forward call per step (``vectorize=True``),
so a step costs ``n_walkers`` member runs in one ``simulate``. Samples are reported in
physical units.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import emcee
import numpy as np
import xarray as xr

from .progress import as_progress
from .result import SavesNetCDF

TAU_FACTOR = 50  # a chain of >= 50 integrated autocorrelation times gives a reliable tau (emcee's rule)


@dataclass
class MCMCResult(SavesNetCDF):
    """Output of :func:`mcmc`.

    samples ``(N, d)`` physical, after burn-in and thinning; log_prob ``(N,)``; chain
    ``(n_steps, n_walkers, d)`` physical, the whole chain; tau ``(d,)`` integrated
    autocorrelation time [steps]; acceptance ``(n_walkers,)``; burn, thin; n_eff
    ``= n_walkers (n_steps - burn) / max tau``; ess ``(d,)`` effective sample size per
    parameter ``n_walkers (n_steps - burn) / tau``; tau_reliable ``(d,)``: the chain is at
    least 50 tau long, so tau (and the ESS) can be trusted. :attr:`convergence` says in
    words what to do when it is not.
    """

    names: list
    samples: np.ndarray
    log_prob: np.ndarray
    chain: np.ndarray
    tau: np.ndarray
    acceptance: np.ndarray
    burn: int
    thin: int
    n_eff: float
    prior_mean: np.ndarray | None
    n_forward_runs: int
    wall_time: float
    attrs: dict = field(default_factory=dict)
    ess: np.ndarray | None = None
    tau_reliable: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.chain.shape[0])

    @property
    def convergence(self) -> str:
        """Empty when the chain is long enough for its autocorrelation time, else what it
        means and what to do (the steps needed), in words."""
        if self.tau_reliable is None or np.all(self.tau_reliable):
            return ""
        short = [n for n, ok in zip(self.names, self.tau_reliable) if not ok]
        ess = self.ess if self.ess is not None else np.full(len(self.names), np.nan)
        need = int(math.ceil(TAU_FACTOR * float(np.nanmax(self.tau)))) if np.isfinite(self.tau).any() else 10 * self.n_steps
        per = ", ".join(f"{n} tau {t:.0f}, ESS {e:.0f}" for n, t, e in zip(self.names, self.tau, ess))
        return (f"The chain ({self.n_steps} steps per walker) is shorter than {TAU_FACTOR} integrated autocorrelation "
                f"times for {', '.join(short)}, so tau and the effective sample sizes are rough estimates ({per}); "
                f"the posterior mean carries a sampling error of about std / sqrt(ESS). For reliable numbers, run "
                f"at least {need} steps per walker (n_steps).")

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(0)

    @property
    def cov(self) -> np.ndarray:
        return np.atleast_2d(np.cov(self.samples, rowvar=False))

    @property
    def std(self) -> np.ndarray:
        return self.samples.std(0, ddof=1)

    def to_xarray(self) -> xr.Dataset:
        """Dataset: ``samples (sample, parameter)``, ``posterior_mean``, ``posterior_std``,
        ``posterior_cov (parameter, parameter_)``, ``log_prob``, ``tau``, ``acceptance``."""
        P, PP = ("parameter",), ("parameter", "parameter_")
        ds = xr.Dataset(
            {
                "samples": (("sample", "parameter"), self.samples, {"long_name": "posterior samples (after burn-in and thinning)"}),
                "log_prob": (("sample",), self.log_prob, {"long_name": "log posterior (-J) of each sample", "units": "1"}),
                "posterior_mean": (P, self.mean, {"long_name": "sample mean"}),
                "posterior_std": (P, self.std, {"long_name": "sample std"}),
                "posterior_cov": (PP, self.cov, {"long_name": "sample covariance"}),
                "prior_mean": (P, np.full(len(self.names), np.nan) if self.prior_mean is None else self.prior_mean, {"long_name": "prior mean x_b"}),
                "tau": (P, self.tau, {"long_name": "integrated autocorrelation time (emcee, in the control space)", "units": "steps"}),
                "acceptance": (("walker",), self.acceptance, {"long_name": "acceptance fraction per walker", "units": "1"}),
                **({} if self.ess is None else {"ess": (P, self.ess, {
                    "long_name": "effective sample size n_walkers (n_steps - burn) / tau", "units": "1"})}),
                **({} if self.tau_reliable is None else {"tau_reliable": (P, self.tau_reliable.astype(np.int8), {
                    "long_name": f"chain at least {TAU_FACTOR} tau long (tau and ESS reliable)", "units": "1"})}),
            },
            coords={"parameter": self.names, "parameter_": self.names, "sample": np.arange(len(self.samples)),
                    "walker": np.arange(len(self.acceptance))},
            attrs={
                "method": "mcmc (emcee EnsembleSampler, stretch move)",
                "n_forward_runs": int(self.n_forward_runs),
                "wall_time_s": float(self.wall_time),
                "tau_max": float(np.nanmax(self.tau)),
                "acceptance_mean": float(np.mean(self.acceptance)),
                "burn": int(self.burn),
                "thin": int(self.thin),
                "n_eff": float(self.n_eff),
                "convergence": self.convergence or f"chain longer than {TAU_FACTOR} tau for every parameter",
                **self.attrs,
            },
        )
        return ds

    def plot(self, path=None, max_points: int = 2000):
        """Corner plot: histograms on the diagonal, pairwise scatter below it (physical
        units; prior mean dashed). Returns the figure (saved when ``path``)."""
        import matplotlib.pyplot as plt

        d = len(self.names)
        s = self.samples
        pick = np.random.default_rng(0).choice(len(s), size=min(max_points, len(s)), replace=False)
        fig, axes = plt.subplots(d, d, figsize=(2.2 * d + 1, 2.2 * d + 1), squeeze=False, constrained_layout=True)
        for i in range(d):
            for j in range(d):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    ax.hist(s[:, i], bins=40, color="C0", histtype="stepfilled", alpha=0.7)
                    ax.axvline(self.mean[i], color="C3")
                    if self.prior_mean is not None:
                        ax.axvline(self.prior_mean[i], color="0.4", ls="--")
                    ax.set_yticks([])
                else:
                    ax.scatter(s[pick, j], s[pick, i], s=2, alpha=0.3, color="C0")
                    if self.prior_mean is not None:
                        ax.plot(self.prior_mean[j], self.prior_mean[i], "x", color="0.4")
                if i == d - 1:
                    ax.set_xlabel(self.names[j])
                if j == 0 and i > 0:
                    ax.set_ylabel(self.names[i])
        fig.suptitle(f"MCMC posterior: {len(s)} samples, tau max {np.nanmax(self.tau):.0f}, "
                     f"acceptance {np.mean(self.acceptance):.2f}", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _initial_walkers(problem, n_walkers: int, start, rng) -> np.ndarray:
    """Walkers ``(n_walkers, d)`` in ``u``: given rows, a ball around a point or a
    :class:`VariationalResult` optimum (scale 1e-2 of its posterior sd), or prior draws."""
    d = problem.d
    ub = problem.u_bounds
    if start is None:  # prior draws inside the bounds (rejection), or uniform in the box without a prior
        if problem.B is None:
            if not np.isfinite(ub).all():
                raise ValueError("without a prior and with unbounded parameters, give mcmc a start")
            u = rng.uniform(ub[:, 0], ub[:, 1], (n_walkers, d))
        else:
            s = problem._centre_scale()[1]
            Lc = np.linalg.cholesky(problem.B / np.outer(s, s))  # prior covariance of u
            u = rng.standard_normal((n_walkers, d)) @ Lc.T
            for _ in range(100):
                out = ((u < ub[:, 0]) | (u > ub[:, 1])).any(1)
                if not out.any():
                    break
                u[out] = rng.standard_normal((int(out.sum()), d)) @ Lc.T
    else:
        if hasattr(start, "x") and hasattr(start, "A_control"):
            centre = problem.to_u(start.x)
            spread = 1e-2 * np.sqrt(np.diag(start.A_control)) / problem._centre_scale()[1]
            u = centre + spread * rng.standard_normal((n_walkers, d))
        else:
            start = np.asarray(start, dtype=float)
            if start.ndim == 2:
                if start.shape != (n_walkers, d):
                    raise ValueError(f"start rows must be ({n_walkers}, {d}), got {start.shape}")
                problem.check(start, what="start")
                return problem.to_u(start)
            problem.check(start, what="start")
            u = problem.to_u(start) + 1e-3 * rng.standard_normal((n_walkers, d))
    margin = np.where(np.isfinite(ub), 1e-9 * np.abs(np.where(np.isfinite(ub), ub, 0.0)) + 1e-12, 0.0)  # inf bounds: none
    u = np.clip(u, ub[:, 0] + margin[:, 0], ub[:, 1] - margin[:, 1])
    bad = ~problem.inside(problem.from_u(u))
    if bad.any():  # constraint violations: restart those walkers at the prior mean / box centre, jittered
        u[bad] = np.where(np.isfinite(ub).all(1), 0.5 * (ub[:, 0] + ub[:, 1]), 0.0) if problem.B is None else 0.0
        u[bad] += 1e-3 * rng.standard_normal((int(bad.sum()), d))
    return u


def mcmc(problem, n_walkers: int | None = None, n_steps: int = 2000, seed: int = 0, start=None,
         burn: int | None = None, thin: int | None = None, progress=False) -> MCMCResult:
    """Sample ``exp(-J)`` with emcee; returns an :class:`MCMCResult`.

    Parameters
    ----------
    problem : :class:`calibration.Problem`.
    n_walkers : default ``max(16, 4 d)`` (even).
    n_steps : steps per walker; forward runs = ``n_walkers * n_steps`` (fewer when
        walkers propose points outside the bounds, which cost nothing).
    seed : seeds the initial walkers and emcee's random state.
    start : None (draws from the prior), a physical point ``(d,)``, rows
        ``(n_walkers, d)``, or a :class:`~calibration.variational.VariationalResult`
        (a small ball around its optimum: the fastest burn-in).
    burn, thin : default ``burn = 2 max(tau)`` (at most half the chain) and
        ``thin = max(1, min(tau) / 2)``, from emcee's integrated autocorrelation time.
        A chain shorter than 50 tau still gives an estimate; the result says so in words
        (:attr:`MCMCResult.convergence`, with the effective sample size per parameter and the
        steps needed) instead of emcee's warning.
    progress : a bar over the steps on stderr (``True`` or a :class:`calibration.progress.Progress`).
    """
    t0 = time.perf_counter()
    runs0 = problem.n_forward_runs
    d = problem.d
    n_walkers = int(n_walkers or max(16, 4 * d))
    n_walkers += n_walkers % 2
    if n_walkers < 2 * d:
        raise ValueError(f"n_walkers must be at least 2 d = {2 * d}, got {n_walkers}")
    rng = np.random.default_rng(seed)
    u0 = _initial_walkers(problem, n_walkers, start, rng)

    def log_prob(u):  # (W, d) -> (W,): one forward call for all walkers
        return problem.log_posterior(problem.from_u(np.atleast_2d(u)))

    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    pg = as_progress(progress)
    pg.say(f"MCMC: {n_walkers} walkers x {n_steps} steps (up to {n_walkers * n_steps} forward runs)")
    sampler.run_mcmc(u0, n_steps, progress=pg.enabled, progress_kwargs=pg.tqdm_kwargs("MCMC steps", "step"))
    # tol=0: the estimate without emcee's own check (a logged warning); the check is ours, in words
    tau = np.atleast_1d(sampler.get_autocorr_time(tol=0)).astype(float)
    reliable = np.isfinite(tau) & (TAU_FACTOR * tau <= n_steps)
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(n_steps) / 10
    burn = int(min(2 * tau_max, n_steps // 2)) if burn is None else int(burn)
    thin = int(max(1, np.nanmin(tau) / 2)) if thin is None else int(thin)
    if not 0 <= burn < n_steps:
        raise ValueError(f"burn must be in [0, n_steps={n_steps}), got {burn}")
    u = sampler.get_chain(discard=burn, thin=thin, flat=True)
    lp = sampler.get_log_prob(discard=burn, thin=thin, flat=True)
    chain = problem.from_u(sampler.get_chain())
    return MCMCResult(
        names=list(problem.names), samples=problem.from_u(u), log_prob=lp, chain=chain, tau=tau,
        acceptance=sampler.acceptance_fraction.copy(), burn=burn, thin=thin,
        n_eff=n_walkers * (n_steps - burn) / tau_max,
        ess=n_walkers * (n_steps - burn) / np.where(np.isfinite(tau), tau, tau_max), tau_reliable=reliable,
        prior_mean=None if problem.x_b is None else np.asarray(problem.x_b, dtype=float),
        n_forward_runs=problem.n_forward_runs - runs0, wall_time=time.perf_counter() - t0,
        attrs={"n_walkers": n_walkers, "n_steps": int(n_steps), "seed": int(seed),
               "control_space": "z = x (linear), ln x (log-scale parameters)"},
    )
