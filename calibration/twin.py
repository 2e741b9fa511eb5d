"""Twin experiments: calibrate against synthetic observations made from a known truth.

    y   = M_truth(x_t) + eps,   eps_i ~ N(0, (noise * std_t(y_s))^2)   (per series s = (variable, site))
    x_a = calibrate(Problem(M, y, obs_std = noise * std_t(y_s), prior = space))

and check that the truth is recovered: ``|x_a - x_t| <= 2 sigma_a`` per parameter and the
observation RMSE falls from its prior-mean value to about the noise level.

``M_truth`` is the physics (:class:`ailand.ToyEcLand`); the inference model ``M`` is the
physics again (an *identical* twin) or an :class:`ailand.emulator.Emulator` (a *fraternal*
twin, which measures what the emulator's error does to the posterior). Both start from the
same ``state0``.

    twin = TwinExperiment(model, forcing, model.space.subset(["RSMIN", "ALB_VEG"]),
                          truth={"RSMIN": 180.0, "ALB_VEG": 0.25}, observe=Observe(["Qle", "Qh"]))
    res = twin.run(methods=("variational", "mcmc"))
    res.to_xarray(); res.report("runs/twin")   # twin.nc, report.md, twin.png
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ailand import ParameterSpace

from .bayesopt import bayesian_optimisation
from .discrepancy import ModelError, local_draws, model_error
from .ensemble_kalman.inversion import eki, esmda
from .forward import Forward
from .mcmc import mcmc
from .observe import Observe
from .problem import Problem
from .progress import as_progress
from .variational import start_design, variational

METHODS = ("variational", "mcmc", "bayesopt", "eki", "esmda")


@dataclass
class TwinResult:
    """Output of :meth:`TwinExperiment.run`. Physical units, ``(method, parameter)`` arrays.

    truth, prior_mean, prior_std ``(d,)`` (prior std linearised at the prior mean for log
    parameters); posterior_mean, posterior_std ``(k, d)`` (variational: Gauss-Newton mode
    and std; mcmc: sample mean and std; eki/esmda: final ensemble mean and std); inside_2sigma ``(k, d)`` bool
    ``|posterior_mean - truth| <= 2 posterior_std``. rmse_before: observation RMSE of the
    prior mean [units of y]; rmse_after ``(k,)``: of each posterior mean; noise_rms: the RMS
    of the noise std (the RMSE a perfect fit reaches); n_forward_runs, wall_time ``(k,)``.
    y ``(m,)`` the twin observations, y_truth ``(m,)`` the noise-free ones, obs_std ``(m,)``.
    results: method -> its :class:`VariationalResult` / :class:`MCMCResult` / :class:`EnsembleResult`.
    """

    names: list
    methods: list
    truth: np.ndarray
    prior_mean: np.ndarray
    prior_std: np.ndarray
    posterior_mean: np.ndarray
    posterior_std: np.ndarray
    rmse_before: float
    rmse_after: np.ndarray
    noise: float
    noise_rms: float
    n_forward_runs: np.ndarray
    wall_time: np.ndarray
    y: np.ndarray
    y_truth: np.ndarray
    obs_std: np.ndarray
    units: list = field(default_factory=list)
    log: np.ndarray | None = None  # (d,) bool: log-scale parameters (plotted as exp(ln x +- 2 sd/x))
    results: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    model_error: pd.DataFrame | None = None  # per variable: the inference model's error near the posterior
    rmse_after_truth_model: np.ndarray | None = None  # (k,) fraternal twins: the truth model's obs RMSE at each posterior mean

    @property
    def inside_2sigma(self) -> np.ndarray:
        return np.abs(self.posterior_mean - self.truth[None]) <= 2.0 * self.posterior_std

    def to_xarray(self) -> xr.Dataset:
        """Dataset over ``(method, parameter)``; RMSEs, noise, runs and wall times also as attrs."""
        P, MP = ("parameter",), ("method", "parameter")
        ds = xr.Dataset(
            {
                "truth": (P, self.truth, {"long_name": "true parameter value x_t"}),
                "prior_mean": (P, self.prior_mean, {"long_name": "prior mean x_b"}),
                "prior_std": (P, self.prior_std, {"long_name": "prior std (linearised at x_b for log parameters)"}),
                "posterior_mean": (MP, self.posterior_mean, {"long_name": "posterior mean (variational: mode x_a)"}),
                "posterior_std": (MP, self.posterior_std, {"long_name": "posterior std"}),
                "inside_2sigma": (MP, self.inside_2sigma.astype(np.int8),
                                  {"long_name": "|posterior_mean - truth| <= 2 posterior_std", "units": "1"}),
                "obs_rmse_after": (("method",), self.rmse_after, {"long_name": "observation RMSE of the posterior mean"}),
                **({} if self.rmse_after_truth_model is None else {"obs_rmse_after_truth_model": (
                    ("method",), self.rmse_after_truth_model,
                    {"long_name": "observation RMSE of the truth model at the posterior mean"})}),
                "n_forward_runs": (("method",), self.n_forward_runs.astype(np.int64), {"long_name": "forward model runs"}),
                "wall_time": (("method",), self.wall_time, {"long_name": "wall time", "units": "s"}),
            },
            coords={"method": list(self.methods), "parameter": list(self.names)},
            attrs={
                "title": "twin experiment",
                "noise": float(self.noise),
                "noise_definition": "eps ~ N(0, (noise * std_t(y_s))^2) per observed (variable, site) series",
                "noise_rms": float(self.noise_rms),
                "obs_rmse_before": float(self.rmse_before),
                **{f"obs_rmse_after_{m}": float(v) for m, v in zip(self.methods, self.rmse_after)},
                **{f"n_forward_runs_{m}": int(v) for m, v in zip(self.methods, self.n_forward_runs)},
                **{f"wall_time_s_{m}": float(v) for m, v in zip(self.methods, self.wall_time)},
                **self.attrs,
            },
        )
        if self.units:
            ds = ds.assign_coords(unit=("parameter", list(self.units)))
        return ds

    def table(self) -> str:
        """Markdown table: truth, prior and posterior mean +- sigma per parameter and method."""
        head = "| parameter | truth | prior | " + " | ".join(self.methods) + " |"
        rule = "|" + "---|" * (3 + len(self.methods))
        rows = []
        for j, n in enumerate(self.names):
            u = f" {self.units[j]}" if self.units and self.units[j] not in ("", "-") else ""
            cells = [f"{n}{(' [' + u.strip() + ']') if u else ''}", f"{self.truth[j]:.4g}",
                     f"{self.prior_mean[j]:.4g} +- {self.prior_std[j]:.3g}"]
            for k in range(len(self.methods)):
                if not np.isfinite(self.posterior_std[k, j]):  # bayesopt: best point, no posterior
                    cells.append(f"{self.posterior_mean[k, j]:.4g} (BO gives a point estimate)")
                    continue
                mark = "" if self.inside_2sigma[k, j] else " (truth outside 2 sigma)"
                cells.append(f"{self.posterior_mean[k, j]:.4g} +- {self.posterior_std[k, j]:.3g}{mark}")
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join([head, rule, *rows])

    def report(self, directory) -> Path:
        """Write ``twin.nc``, ``report.md`` and ``twin.png`` into ``directory``; returns it."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.to_xarray().to_netcdf(d / "twin.nc")
        self.plot(d / "twin.png")
        lines = [
            "# Twin experiment", "",
            f"Observations: {self.y.size} data ({self.attrs.get('observe', '')}), noise = {self.noise:g} x each "
            f"(variable, site) series' std (noise std RMS {self.noise_rms:.4g}); truth model "
            f"{self.attrs.get('truth_model', '')}, inference model {self.attrs.get('forward_model', '')}.", "",
            "## Parameters (mean +- 1 sigma)", "", self.table(), "",
            "## Fit and cost", "",
            "| method | obs RMSE before | obs RMSE after | noise std RMS | forward runs | wall time [s] |",
            "|---|---|---|---|---|---|",
        ]
        for k, m in enumerate(self.methods):
            lines.append(f"| {m} | {self.rmse_before:.4g} | {self.rmse_after[k]:.4g} | {self.noise_rms:.4g} | "
                         f"{int(self.n_forward_runs[k])} | {self.wall_time[k]:.1f} |")
        if self.rmse_after_truth_model is not None:
            lines += ["", f"Check with the truth model ({self.attrs.get('truth_model', '')}): observation RMSE at the "
                      "posterior mean " + ", ".join(f"{m} {v:.4g}" for m, v in zip(self.methods, self.rmse_after_truth_model))
                      + f" (noise std RMS {self.noise_rms:.4g}; the inference model's RMSE above includes its own error)."]
        if self.model_error is not None:
            a = self.attrs
            lines += ["", "## Inference-model error in R", "",
                      f"{a.get('model_error', '')}; cost {a.get('model_error_truth_model_runs', '')} truth-model runs and "
                      f"{a.get('model_error_inference_runs', '')} inference-model runs, "
                      f"{a.get('model_error_wall_time_s', float('nan')):.1f} s. Near the posterior, per variable:", "",
                      "| variable | mean abs bias | RMS std | RMS difference |", "|---|---|---|---|"]
            for v, row in self.model_error.iterrows():
                lines.append(f"| {v} | {row['mean_abs_bias']:.3g} | {row['rms_std']:.3g} | {row['rms_difference']:.3g} |")
        lines += self.mcmc_summary()
        lines += ["", "![prior, posterior and truth](twin.png)", ""]
        (d / "report.md").write_text("\n".join(lines))
        return d

    def mcmc_summary(self) -> list[str]:
        """Report lines on the MCMC chain: autocorrelation time and effective sample size per
        parameter, and whether the chain is long enough (what to do when it is not)."""
        mc = self.results.get("mcmc")
        if mc is None or getattr(mc, "ess", None) is None:
            return []
        lines = ["", "## MCMC sampling", "",
                 f"{mc.attrs.get('n_walkers', '')} walkers x {mc.n_steps} steps, burn-in {mc.burn}, thin {mc.thin}, "
                 f"mean acceptance {float(np.mean(mc.acceptance)):.2f}.", "",
                 "| parameter | autocorrelation time [steps] | effective sample size |", "|---|---|---|"]
        for n, t, e, ok in zip(mc.names, mc.tau, mc.ess, mc.tau_reliable):
            lines.append(f"| {n} | {t:.1f}{'' if ok else ' (rough: chain < 50 tau)'} | {e:.0f} |")
        if mc.convergence:
            lines += ["", mc.convergence.replace("(n_steps)", "(`ailand twin --mcmc-steps`, `TwinExperiment.run(mcmc_steps=...)`)")]
        else:
            lines += ["", "The chain is longer than 50 autocorrelation times for every parameter: tau and ESS are reliable."]
        return lines

    def plot(self, path=None):
        """Per parameter: prior (+- 2 sd), each method's posterior (+- 2 sd) and the truth
        (vertical line); log-scale parameters on a log axis with ``exp(ln x +- 2 sd / x)``. Returns the figure (saved when ``path``)."""
        import matplotlib.pyplot as plt

        d, k = len(self.names), len(self.methods)
        fig, axes = plt.subplots(d, 1, figsize=(6.5, 1.1 + 1.0 * (k + 1) * d / 2 + 0.6 * d), squeeze=False,
                                 constrained_layout=True)
        for j, (ax, n) in enumerate(zip(axes[:, 0], self.names)):
            rows = ["prior", *self.methods]
            means = [self.prior_mean[j], *self.posterior_mean[:, j]]
            sds = [self.prior_std[j], *self.posterior_std[:, j]]
            log = self.log is not None and bool(self.log[j])
            for i, (mu, sd) in enumerate(zip(means, sds)):
                lo, hi = (mu * np.exp(-2 * sd / mu), mu * np.exp(2 * sd / mu)) if log else (mu - 2 * sd, mu + 2 * sd)
                ax.errorbar(mu, i, xerr=[[mu - lo], [hi - mu]] if np.isfinite(sd) else None, fmt="o", capsize=3, color="0.5" if i == 0 else f"C{i - 1}")
            if log:
                ax.set_xscale("log")
            ax.axvline(self.truth[j], color="k", ls="--", lw=1, label="truth")
            ax.set_yticks(range(len(rows)), rows)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            u = self.units[j] if self.units else ""
            ax.set_title(f"{n} [{u}]" if u and u != "-" else n, fontsize=9)
            if j == 0:
                ax.legend(fontsize=7, loc="best")
        fig.suptitle(f"twin: prior vs posterior (+- 2 sd) vs truth, noise {self.noise:g}", fontsize=9)
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


class TwinExperiment:
    """A twin experiment: synthetic observations from ``truth``, then calibration.

    Parameters
    ----------
    model : the physics (:class:`ailand.ToyEcLand`) that makes the observations.
    forcing : hourly forcing Dataset ``(time, site)`` (e.g. :func:`ailand.synthetic_forcing`).
    space : the calibrated parameters, a subset of ``model.space``; it is also the prior
        (defaults as mean, range/4 as std; see :class:`calibration.Problem`).
    truth : ``{name: value}`` for every parameter of ``space``, inside its bounds.
    observe : the :class:`calibration.Observe` that makes the observation vector.
    noise : relative noise: each (variable, site) series gets Gaussian noise of std
        ``noise * std_t(series)``; the same std is the observation error of the Problem.
    seed : seeds the noise (and the methods).
    forward_model : the inference model (default ``model``; or an Emulator).
    state0 : shared start state; default ``model.initial_conditions(forcing,
        spinup_years=spinup_years)`` at the default parameters.
    model_error : add the inference model's error against ``model`` to the observation
        error (see :mod:`calibration.discrepancy`); default: only when ``forward_model`` is
        not ``model`` (a fraternal twin). Done in two passes by :meth:`estimate_model_error`
        (first called by :meth:`run`): ``S`` from ``model_error_draws`` prior draws, a
        variational posterior with ``R = diag(obs_std^2) + S``, then ``S`` again from draws
        around that posterior; the Problem of the methods uses the second ``R``.
    model_error_draws : parameter sets per pass (each costs one run of both models).

    Attributes: ``forcing``, ``state0``, ``y`` ``(m,)`` observations, ``y_truth`` ``(m,)`` noise-free, ``obs_std``
    ``(m,)``, ``labels`` (variable, site, time), ``truth_vector`` ``(d,)``, ``problem``.
    """

    def __init__(self, model, forcing: xr.Dataset, space: ParameterSpace, truth: Mapping[str, float],
                 observe: Observe, noise: float = 0.1, seed: int = 0, forward_model=None, state0=None,
                 spinup_years: int | None = 1, model_error: bool | None = None, model_error_draws: int = 32):
        if not isinstance(space, ParameterSpace):
            raise ValueError(f"space must be an ailand.ParameterSpace (e.g. model.space.subset([...])), got {type(space).__name__}")
        unknown = [n for n in space.names if n not in model.space]
        if unknown:
            raise ValueError(f"space: unknown parameter(s) {unknown}; the model's are {model.space.names}")
        truth = dict(truth)
        extra = [n for n in truth if n not in space.names]
        if extra:
            raise ValueError(f"truth: unknown parameter(s) {extra}; the calibrated ones are {space.names}")
        missing = [n for n in space.names if n not in truth]
        if missing:
            raise ValueError(f"truth: give a value for every calibrated parameter; missing {missing}")
        space.check(truth, what="truth")
        model.space.check(truth, what="truth")  # constraints against the other defaults
        if not (np.isfinite(noise) and noise > 0):
            raise ValueError(f"noise must be a positive fraction of each series' std (e.g. 0.1), got {noise}")
        self.model, self.space, self.observe, self.forcing = model, space, observe, forcing
        self.forward_model = model if forward_model is None else forward_model
        self.noise, self.seed = float(noise), int(seed)
        self.names = list(space.names)
        self.truth = {n: float(truth[n]) for n in self.names}
        self.truth_vector = np.array([self.truth[n] for n in self.names])
        if state0 is None:
            state0 = model.initial_conditions(forcing, spinup_years=spinup_years)
        self.state0 = state0

        self.truth_forward = Forward(model, forcing, space, observe, state0=state0)
        self.y_truth = np.asarray(self.truth_forward(self.truth_vector), dtype=float)
        self.labels = self.truth_forward.labels
        self.obs_std = self._noise_scale(self.y_truth, self.labels) * self.noise
        rng = np.random.default_rng(self.seed)
        self.y = self.y_truth + self.obs_std * rng.standard_normal(self.y_truth.size)
        if self.forward_model is model:
            self.forward = self.truth_forward
        else:
            self.forward = Forward(self.forward_model, forcing, space, observe, state0=state0)
            if self.forward.n_obs != self.y.size or not self.forward.labels.equals(self.labels):
                raise ValueError("forward_model observes different data than the truth model "
                                 f"({self.forward.n_obs} vs {self.y.size}); use a window both cover")
        self.problem = Problem(self.forward, self.y, obs_std=self.obs_std, prior=space)
        self.use_model_error = (self.forward_model is not model) if model_error is None else bool(model_error)
        if self.use_model_error and (int(model_error_draws) != model_error_draws or model_error_draws < 2):
            raise ValueError(f"model_error_draws must be an integer >= 2, got {model_error_draws}")
        self.model_error_draws = int(model_error_draws)
        self.model_error: ModelError | None = None  # the estimate in use (second pass), set by estimate_model_error
        self.model_error_info: dict = {}

    def estimate_model_error(self, n_starts: int = 4, maxiter: int = 200, progress=False,
                             optimizer: str = "lm") -> ModelError:
        """Two-pass estimate of the inference model's error; sets :attr:`problem` to use it.

        1. ``S1`` from ``model_error_draws`` LHS draws of the prior space; variational
           calibration (``n_starts``) with ``R1 = diag(obs_std^2) + S1`` -> ``x1``, ``A1``.
        2. ``S2`` from as many draws around ``x1`` (:func:`calibration.discrepancy.local_draws`,
           2 x the posterior std); :attr:`problem` gets ``R = diag(obs_std^2) + S2``.

        Costs ``2 * model_error_draws`` runs of each model plus the pass-1 calibration;
        counted in :attr:`model_error_info` (and the report), not in the methods' runs.
        ``progress``: stage lines and bars on stderr (``True`` or a :class:`calibration.progress.Progress`).
        """
        t0 = time.perf_counter()
        pg = as_progress(progress)
        n = self.model_error_draws
        inf, ref = type(self.forward_model).__name__, type(self.model).__name__
        with pg.stage(f"{inf} error against {ref}, pass 1/2: {n} prior draws x 2 models"):
            me1 = model_error(self.forward, self.truth_forward, self.space, n=n, seed=self.seed, progress=pg)
        p1 = Problem(self.forward, self.y, R=me1.total_covariance(self.obs_std), prior=self.space)
        with pg.stage(f"{inf} error, first posterior: variational, {n_starts} start{'s' * (n_starts != 1)}"):
            r1 = variational(p1, n_starts=n_starts, seed=self.seed, maxiter=maxiter, progress=pg, method=optimizer)
        xs = local_draws(p1, r1.x, r1.A_control, n=n, seed=self.seed + 1)
        with pg.stage(f"{inf} error against {ref}, pass 2/2: {n} draws around the first posterior x 2 models"):
            me2 = model_error(self.forward, self.truth_forward, self.space, x=xs, progress=pg)
        self.problem = Problem(self.forward, self.y, R=me2.total_covariance(self.obs_std), prior=self.space)
        self.model_error = me2
        self.model_error_info = {
            "draws_per_pass": n, "pass1_x": r1.x, "reference_runs": 2 * n,
            "inference_runs": 2 * n + int(r1.n_forward_runs), "wall_time": time.perf_counter() - t0,
        }
        return me2

    @staticmethod
    def _noise_scale(y: np.ndarray, labels) -> np.ndarray:
        """``(m,)``: the time std of each datum's (variable, site) series (floored so R > 0)."""
        key = [f"{v}|{s}" for v, s in zip(labels.get_level_values("variable"), labels.get_level_values("site"))]
        s = _series_std(y, key)
        floor = 1e-6 * max(float(np.nanmax(np.abs(y))), 1e-12)
        return np.maximum(s, floor)

    def __repr__(self):
        return (f"TwinExperiment(truth={self.truth}, noise={self.noise:g}, m={self.y.size}, "
                f"truth model {type(self.model).__name__}, inference model {type(self.forward_model).__name__})")

    def rmse(self, x, model: str = "inference") -> float:
        """Observation RMSE ``sqrt(mean((y - M(x))^2))`` at physical ``x (d,)``, with the
        inference model (``model="inference"``) or the truth model (``"truth"``)."""
        x = np.asarray(x, dtype=float)
        if model == "truth":
            r = self.y - np.asarray(self.truth_forward(x), dtype=float)
        elif model == "inference":
            r = self.problem.residuals(x)
        else:
            raise ValueError(f"model must be 'inference' or 'truth', got {model!r}")
        return float(np.sqrt(np.nanmean(r**2)))

    def run(self, methods: Sequence[str] | str = ("variational",), n_starts: int = 4, mcmc_steps: int = 1000,
            mcmc_walkers: int | None = None, maxiter: int = 200, progress: bool = False,
            bo_budget: int = 40, n_ensemble: int | None = None, n_iterations: int | None = None,
            optimizer: str = "lm") -> TwinResult:
        """Calibrate with each method and compare to the truth; returns a :class:`TwinResult`.

        ``"mcmc"`` starts from the variational optimum when ``"variational"`` ran before it
        (its runs are not counted in mcmc's), else from prior draws. ``"bayesopt"`` runs
        :func:`calibration.bayesian_optimisation` with ``bo_budget`` forward runs: BO gives a
        point estimate (its best point), so its posterior std is NaN. ``"eki"`` and ``"esmda"``
        run :func:`calibration.ensemble_kalman.eki` / :func:`~calibration.ensemble_kalman.esmda`
        with ``n_ensemble`` members (default 10 d); ``n_iterations`` caps EKI's updates (it
        stops at algorithm time 1) and sets ES-MDA's ``alphas = (n,) * n`` (default 4). They
        report the final ensemble's mean and std. ``optimizer``: the variational minimiser,
        ``"lm"`` (Levenberg-Marquardt, the default) or ``"lbfgsb"`` (:func:`calibration.variational`),
        also used by the model-error pass. ``progress``: stage lines (what runs, how
        many runs, elapsed time) and bars on stderr (``True`` or a :class:`calibration.progress.Progress`).
        """
        pg = as_progress(progress)
        methods = [methods] if isinstance(methods, str) else list(methods)
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods}")
        if self.use_model_error and self.model_error is None:
            self.estimate_model_error(n_starts=n_starts, maxiter=maxiter, progress=pg, optimizer=optimizer)
        p = self.problem
        prior_mean = np.asarray(p.x_b, dtype=float)
        prior_std = np.where(p.log, p.x_b, 1.0) * np.sqrt(np.diag(p.B))
        rmse_before = self.rmse(prior_mean)
        means, stds, rmse_after, runs, walls, results = [], [], [], [], [], {}
        mcmc_after_var = "mcmc" in methods and "variational" in methods[:methods.index("mcmc")]
        opt_name = {"lm": "Levenberg-Marquardt", "lbfgsb": "L-BFGS-B"}.get(optimizer, optimizer)
        what = {"variational": f"{opt_name}, {n_starts} start{'s' * (n_starts != 1)}, then the Gauss-Newton posterior",
                "mcmc": f"emcee, started {'at the variational optimum' if mcmc_after_var else 'from prior draws'}", "bayesopt": f"{bo_budget} forward runs",
                "eki": "ensemble Kalman inversion", "esmda": "ensemble smoother with multiple data assimilation"}
        for m in methods:
            t0, r0 = time.perf_counter(), p.n_forward_runs
            pg.say(f"{m}: {what.get(m, '')} ...")
            if m == "variational":
                starts = None
                if self.model_error_info:  # the pass-1 optimum replaces the last start of the design
                    starts = start_design(p, n_starts, self.seed)
                    starts[-1] = self.model_error_info["pass1_x"]
                res = variational(p, n_starts=n_starts, seed=self.seed, maxiter=maxiter, starts=starts, progress=pg,
                                  method=optimizer)
                mean, std = res.x, res.std
            elif m == "bayesopt":
                res = bayesian_optimisation(p, budget=bo_budget, seed=self.seed, progress=bool(pg))
                mean, std = res.best_x, np.full(len(self.names), np.nan)
            elif m == "eki":
                res = eki(p, n_ensemble=n_ensemble, n_iterations=n_iterations, seed=self.seed, progress=bool(pg))
                mean, std = res.mean, res.std
            elif m == "esmda":
                k = 4 if n_iterations is None else int(n_iterations)
                res = esmda(p, n_ensemble=n_ensemble, alphas=(float(k),) * k, seed=self.seed, progress=bool(pg))
                mean, std = res.mean, res.std
            else:
                start = results.get("variational")
                res = mcmc(p, n_walkers=mcmc_walkers, n_steps=mcmc_steps, seed=self.seed, start=start, progress=pg)
                mean, std = res.mean, res.std
            walls.append(time.perf_counter() - t0)
            runs.append(p.n_forward_runs - r0)
            pg.say(f"{m}: done in {walls[-1]:.1f} s, {runs[-1]} forward runs")
            results[m] = res
            means.append(np.asarray(mean, dtype=float))
            stds.append(np.asarray(std, dtype=float))
            rmse_after.append(self.rmse(mean))
        rmse_truth_model = None
        if self.forward is not self.truth_forward:  # check each posterior mean with the truth model
            rmse_truth_model = np.array([self.rmse(mu, model="truth") for mu in means])
        return TwinResult(
            names=self.names, methods=methods, truth=self.truth_vector.copy(), prior_mean=prior_mean,
            prior_std=prior_std, posterior_mean=np.array(means), posterior_std=np.array(stds),
            rmse_before=rmse_before, rmse_after=np.array(rmse_after), noise=self.noise,
            noise_rms=float(np.sqrt(np.mean(self.obs_std[p.mask] ** 2))), n_forward_runs=np.array(runs),
            wall_time=np.array(walls), y=self.y.copy(), y_truth=self.y_truth.copy(), obs_std=self.obs_std.copy(),
            units=[self.space.units[n] for n in self.names], log=np.asarray(p.log, dtype=bool), results=results,
            attrs={"truth_model": type(self.model).__name__, "forward_model": type(self.forward_model).__name__,
                   "observe": f"{', '.join(self.observe.variables)} at {self.observe.freq}", "seed": self.seed,
                   "n_obs": int(self.y.size), **self._model_error_attrs()},
            model_error=None if self.model_error is None else self.model_error.summary(),
            rmse_after_truth_model=rmse_truth_model,
        )

    def _model_error_attrs(self) -> dict:
        if not self.model_error_info:
            return {"model_error": "none: R = diag(obs_std^2)"}
        i = self.model_error_info
        return {"model_error": (f"R = diag(obs_std^2) + S, S = second moment of (inference - truth model) over "
                                f"{i['draws_per_pass']} draws around a first posterior (2 passes)"),
                "model_error_truth_model_runs": int(i["reference_runs"]),
                "model_error_inference_runs": int(i["inference_runs"]),
                "model_error_wall_time_s": float(i["wall_time"])}


def _series_std(y: np.ndarray, key: Sequence[str]) -> np.ndarray:
    """Per-datum std (ddof=0) of the group it belongs to; ``key`` labels the groups."""
    s = pd.Series(y).groupby(np.asarray(key)).transform(lambda v: float(np.std(v)))
    return s.to_numpy(dtype=float)
