"""Bayesian optimisation of a cost J(x) with BoTorch, and the baselines it must beat.

    x* = argmin J(x)   over the box of the bounds

:func:`bayesian_optimisation` minimises the cost of a :class:`calibration.Problem` (or a
plain function ``f(x (n, d)) -> (n,)`` with explicit ``bounds``) with a Gaussian process
trained as it goes. It works in the unit cube ``t`` of the bounds::

    z = ln x (log-scale parameters of a Problem, ``problem.log``), z = x otherwise
    t = (z - z_lo) / (z_hi - z_lo)  in [0, 1]^d

so a log-scale parameter is searched uniformly in ``ln x``. Results are in physical units.

The loop (BoTorch; everything float64):

1. initial design: ``n_init`` scrambled Sobol' (or LHS) points in ``t``; default
   ``n_init = 2 d + 1``;
2. GP: ``SingleTaskGP`` (ARD RBF kernel with BoTorch's dimension-scaled lengthscale prior,
   constant mean, inferred noise) on ``(t, -J)`` with ``Standardize`` outcome transform,
   fitted by marginal likelihood (``fit_gpytorch_mll``). BoTorch maximises, so the GP
   models ``-J``;
3. acquisition: ``LogExpectedImprovement`` with ``best_f = max(-J)`` for ``batch_size=1``,
   ``qLogExpectedImprovement`` (Sobol' QMC sampler) for ``batch_size > 1``;
4. ``optimize_acqf`` (multi-start L-BFGS-B on ``[0, 1]^d``, seeded raw samples);
5. evaluate J at the ``batch_size`` new points; repeat until ``budget`` evaluations.

**Stagnation-triggered exploration** (``explore=True``, ``batch_size=1``). LogEI settles in
the first good basin it finds: on Hartmann6 it proposed near-repeats of points in the local
minimum -3.2032 while the GP, with no data near the global one, gave EI ~ 0 there. When the
proposal lies within ``EXPLORE_REPEAT`` (unit cube) of an evaluated point, the basin of the
point being refined is marked exhausted: every point within ``EXPLORE_RADIUS`` GP
lengthscales of its centre. The step instead evaluates the exploration point: of
``EXPLORE_CANDIDATES`` scrambled Sobol' points outside the exhausted basins, the one with the
largest LogEI over the best J outside them. While the overall best lies in an exhausted basin,
later steps maximise LogEI (over the best J outside the exhausted basins) in a box of
half-width ``EXPLORE_BOX`` around the best point outside them: a local search of the next
region; when it finds a J better than the overall best, the loop is plain LogEI again.
Each exploration step is logged (INFO) and counted (``attrs["n_explore"]``).

**Infeasible points.** A point where J is NaN or +-inf (a failed run, or a point that
violates the forward model's constraints, which is not run at all) stays in the trace as
it came, but the GP sees the *worst finite J seen so far* there; each is logged
(``logging``, logger ``calibration.bayesopt``) and counted (``n_infeasible``).

**No posterior.** BO gives a point estimate: ``to_xarray()`` follows the result contract
with ``posterior_mean = best_x`` and ``posterior_std = NaN`` (and says so in its attrs).

Baselines for the comparison plot: :func:`random_search` (uniform in ``t``) and
:func:`lhs_search` (a Latin hypercube in ``t``) evaluate the same objective with the same
budget and return the same result class.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.stats
import torch
import xarray as xr

from ailand.arrays import to_numpy

from .result import SavesNetCDF

log = logging.getLogger(__name__)

ACQUISITIONS = ("logei",)
INIT_DESIGNS = ("sobol", "lhs")


# ------------------------------------------------------------------ the objective
class Objective:
    """What the searches see: ``J`` of physical ``x (n, d)`` and the unit-cube map.

    Built by :meth:`make` from either a :class:`calibration.Problem` (its ``bounds``,
    ``names`` and ``log``; J = ``problem.cost``, constraint violations are J = +inf and
    are not run) or a callable ``f(x (n, d) numpy) -> (n,)`` with ``bounds (d, 2)``
    (linear scale; ``names`` default ``x0..``). ``n_forward_runs`` counts rows sent to
    the model (a Problem's counter, or rows sent to ``f``).
    """

    def __init__(self, f: Callable, bounds: np.ndarray, names: list, log_scale: np.ndarray, problem=None):
        self.f, self.bounds, self.names, self.log, self.problem = f, bounds, names, log_scale, problem
        zb = np.where(log_scale[:, None], np.log(np.where(log_scale[:, None], bounds, 1.0)), bounds)
        self._z_lo, self._z_span = zb[:, 0], zb[:, 1] - zb[:, 0]
        self._calls = 0

    @property
    def d(self) -> int:
        return len(self.names)

    @classmethod
    def make(cls, objective, bounds=None, names=None) -> "Objective":
        if isinstance(objective, Objective):
            return objective
        if hasattr(objective, "cost") and hasattr(objective, "bounds") and hasattr(objective, "names"):
            if bounds is not None:
                raise ValueError("bounds: a Problem brings its own bounds; build the Problem with the bounds "
                                 "you want instead of passing bounds here")
            b = np.asarray(objective.bounds, dtype=float)
            if not np.isfinite(b).all():
                bad = [n for n, row in zip(objective.names, b) if not np.isfinite(row).all()]
                raise ValueError(f"bounds: Bayesian optimisation searches a box, but the Problem leaves {bad} "
                                 "unbounded; give the Problem finite bounds")
            return cls(None, b, list(objective.names), np.asarray(objective.log, dtype=bool), problem=objective)
        if not callable(objective):
            raise TypeError(f"objective must be a calibration.Problem or a callable f(x (n, d)) -> (n,), "
                            f"got {type(objective).__name__}")
        if bounds is None:
            raise ValueError("bounds: a plain callable needs bounds=[[min, max], ...] (d, 2) in its units")
        b = np.asarray(bounds, dtype=float)
        if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
            raise ValueError(f"bounds must be (d, 2) [min, max] rows, one per parameter; got shape {b.shape}")
        if not np.isfinite(b).all() or np.any(~(b[:, 0] < b[:, 1])):
            raise ValueError(f"bounds need finite min < max for every parameter, got {b.tolist()}")
        names = [f"x{i}" for i in range(len(b))] if names is None else [str(n) for n in names]
        if len(names) != len(b):
            raise ValueError(f"names: {len(names)} names for {len(b)} rows of bounds")
        return cls(objective, b, names, np.zeros(len(b), dtype=bool))

    # unit cube <-> physical
    def from_unit(self, t: np.ndarray) -> np.ndarray:
        """``t (n, d)`` in ``[0, 1]`` -> physical ``x`` (exactly inside the bounds)."""
        z = self._z_lo + np.clip(t, 0.0, 1.0) * self._z_span
        x = np.where(self.log, np.exp(z), z)
        return np.clip(x, self.bounds[:, 0], self.bounds[:, 1])

    def to_unit(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.log, np.log(np.where(self.log, x, 1.0)), x)
        return (z - self._z_lo) / self._z_span

    @property
    def n_forward_runs(self) -> int:
        return self.problem.n_forward_runs if self.problem is not None else self._calls

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """J ``(n,)`` at physical ``x (n, d)``; NaN/inf kept as they come."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if self.problem is not None:
            J = np.full(len(x), np.inf)
            ok = self.problem.inside(x)  # constraint violations cost nothing: J = +inf
            if ok.any():
                with torch.no_grad():
                    J[ok] = np.asarray(self.problem.cost(x[ok]), dtype=float).reshape(-1)
            return J
        self._calls += len(x)
        J = self.f(x)
        J = to_numpy(J, name="the objective's output").reshape(-1)
        if J.shape != (len(x),):
            raise ValueError(f"the objective returned {J.size} values for {len(x)} points; it must map (n, d) -> (n,)")
        return J


# ------------------------------------------------------------------ the result
@dataclass
class BayesOptResult(SavesNetCDF):
    """Output of :func:`bayesian_optimisation`, :func:`random_search` and :func:`lhs_search`.

    method : ``"bayesian_optimisation"``, ``"random_search"`` or ``"lhs_search"``.
    best_x ``(d,)`` physical (``best_params``: the same as ``{name: value}``); best_J.
    X ``(n, d)`` every evaluated point in order, J ``(n,)`` its cost as returned (NaN/inf
    kept), batch ``(n,)`` the iteration that proposed it (0: initial design / the
    baseline's design), best_so_far ``(n,)`` the lowest finite J after each evaluation.
    model : the BoTorch GP fitted to all evaluations (``-J`` on the unit cube; None for the
    baselines). bounds ``(d, 2)``, log ``(d,)``: the search box and which axes are in
    ``ln x``. n_forward_runs, wall_time [s], objective_time [s] (inside the objective).
    """

    method: str
    names: list
    best_x: np.ndarray
    best_J: float
    X: np.ndarray
    J: np.ndarray
    batch: np.ndarray
    best_so_far: np.ndarray
    bounds: np.ndarray
    log: np.ndarray
    n_forward_runs: int
    wall_time: float
    objective_time: float
    model: object = None
    attrs: dict = field(default_factory=dict)

    @property
    def best_params(self) -> dict:
        """``{name: value}`` of ``best_x`` (physical units)."""
        return {n: float(v) for n, v in zip(self.names, self.best_x)}

    @property
    def n_evaluations(self) -> int:
        return len(self.J)

    @property
    def n_infeasible(self) -> int:
        return int((~np.isfinite(self.J)).sum())

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """GP mean and std of ``J`` at physical ``x (n, d)`` -> ``(n,), (n,)`` (BO only)."""
        if self.model is None:
            raise ValueError(f"{self.method} has no GP; predict is for bayesian_optimisation results")
        x = np.atleast_2d(np.asarray(x, dtype=float))
        z = np.where(self.log, np.log(np.where(self.log, x, 1.0)), x)
        zb = np.where(self.log[:, None], np.log(np.where(self.log[:, None], self.bounds, 1.0)), self.bounds)
        t = torch.as_tensor((z - zb[:, 0]) / (zb[:, 1] - zb[:, 0]), dtype=torch.float64)
        with torch.no_grad():
            post = self.model.posterior(t)
            return -post.mean[..., 0].numpy(), post.variance[..., 0].clamp_min(0).sqrt().numpy()

    def to_xarray(self) -> xr.Dataset:
        """Dataset: ``posterior_mean`` (= best_x) and ``posterior_std`` (NaN: no posterior)
        over ``parameter``; the trace ``x (evaluation, parameter)``, ``J``, ``best_J``,
        ``batch`` over ``evaluation``; ``lower``/``upper`` bounds; attrs ``method``,
        ``n_forward_runs``, ``wall_time_s``, ``J_min`` and the settings."""
        P, E = ("parameter",), ("evaluation",)
        ds = xr.Dataset(
            {
                "posterior_mean": (P, self.best_x, {"long_name": "best point found (lowest J): a point estimate"}),
                "posterior_std": (P, np.full(len(self.names), np.nan),
                                  {"long_name": "not available (NaN): Bayesian optimisation and the searches give a point estimate, no posterior"}),
                "lower": (P, self.bounds[:, 0], {"long_name": "lower bound of the search box"}),
                "upper": (P, self.bounds[:, 1], {"long_name": "upper bound of the search box"}),
                "log_scale": (P, self.log.astype(np.int8), {"long_name": "searched uniformly in ln x", "units": "1"}),
                "x": (("evaluation", "parameter"), self.X, {"long_name": "evaluated point"}),
                "J": (E, self.J, {"long_name": "cost J at the evaluated point (NaN/inf: failed or infeasible)", "units": "1"}),
                "best_J": (E, self.best_so_far, {"long_name": "lowest finite J after each evaluation", "units": "1"}),
                "batch": (E, self.batch.astype(np.int64), {"long_name": "iteration that proposed the point (0: initial design)"}),
            },
            coords={"parameter": list(self.names), "evaluation": np.arange(len(self.J))},
            attrs={
                "method": self.method,
                "n_forward_runs": int(self.n_forward_runs),
                "n_evaluations": int(len(self.J)),
                "n_infeasible": self.n_infeasible,
                "wall_time_s": float(self.wall_time),
                "objective_time_s": float(self.objective_time),
                "J_min": float(self.best_J),
                "posterior": "none: a point estimate (posterior_mean = best point, posterior_std = NaN)",
                "search_space": "unit cube of the bounds in z = ln x for log-scale parameters, z = x otherwise",
                **{k: (int(v) if isinstance(v, bool) else v) for k, v in self.attrs.items() if v is not None},
            },
        )
        return ds

    def plot(self, path=None, compare: Sequence = (), optimum: float | None = None):
        """Left: lowest J vs evaluations for this result and ``compare`` (other results, or
        lists of results over seeds: median and min-max band), log y (``J - optimum`` when
        ``optimum`` is given). Right: J of every evaluation of this result. Returns the
        figure (saved when ``path``)."""
        import matplotlib.pyplot as plt

        groups: dict = {}
        for r in [self, *compare]:
            for rr in (r if isinstance(r, (list, tuple)) else [r]):
                groups.setdefault(rr.method, []).append(rr)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        plot_best_J(groups, ax=a1, optimum=optimum)
        init = self.batch == 0
        Jp = self.J - (optimum or 0.0)
        ev = np.arange(1, len(self.J) + 1)
        a2.plot(ev[init], Jp[init], "o", ms=3, color="0.6", label="initial design" if self.model is not None else self.method)
        if (~init).any():
            a2.plot(ev[~init], Jp[~init], "o", ms=3, color="C3", label="acquired")
        bad = ~np.isfinite(self.J)
        if bad.any():
            a2.plot(ev[bad], np.full(bad.sum(), np.nanmax(np.where(bad, np.nan, Jp)) if (~bad).any() else 1.0), "x",
                    color="k", label="infeasible / failed")
        if np.all(Jp[np.isfinite(Jp)] > 0):
            a2.set_yscale("log")
        a2.set_xlabel("evaluation")
        a2.set_ylabel("J" if optimum is None else "J - optimum")
        a2.set_title(f"{self.method}: every evaluation")
        a2.legend(fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def plot_best_J(groups: Mapping[str, Sequence[BayesOptResult]], ax=None, optimum: float | None = None):
    """Lowest J vs evaluations for ``{label: [results over seeds]}``: the median over the
    results and their min-max band; log y when every value is positive (plot
    ``J - optimum`` with ``optimum``). Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.figure(figsize=(6, 4), constrained_layout=True).add_subplot()
    all_pos = True
    for i, (label, rs) in enumerate(groups.items()):
        n = max(len(r.best_so_far) for r in rs)
        T = np.full((len(rs), n), np.nan)
        for k, r in enumerate(rs):
            b = r.best_so_far - (optimum or 0.0)
            T[k, : len(b)] = b
            T[k, len(b):] = b[-1]
        T[~np.isfinite(T)] = np.nan
        ev = np.arange(1, n + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first finite J
            med, lo, hi = np.nanmedian(T, 0), np.nanmin(T, 0), np.nanmax(T, 0)
        ax.plot(ev, med, color=f"C{i}", label=f"{label} ({len(rs)} run{'s' if len(rs) > 1 else ''})")
        if len(rs) > 1:
            ax.fill_between(ev, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
        all_pos &= bool(np.all(T[np.isfinite(T)] > 0))
    if all_pos:
        ax.set_yscale("log")
    ax.set_xlabel("evaluations (forward runs)")
    ax.set_ylabel("lowest J so far" if optimum is None else "lowest J so far - optimum")
    ax.set_title("best J vs evaluations" + (" (median, min-max band)" if any(len(r) > 1 for r in groups.values()) else ""))
    ax.legend(fontsize=8)
    return ax


# ------------------------------------------------------------------ the searches
def _check_budget(budget, n_min: int = 1, what: str = "budget") -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < n_min:
        raise ValueError(f"{what} must be an integer >= {n_min} (objective evaluations), got {budget!r}")
    return int(budget)


class _Trace:
    """Evaluations so far (unit-cube ``T``, physical ``X``, ``J``, batch), timing, progress."""

    def __init__(self, obj: Objective, budget: int, progress: bool, desc: str):
        self.obj, self.T, self.X, self.J, self.batch = obj, [], [], [], []
        self.objective_time = 0.0
        self.runs0 = obj.n_forward_runs
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=budget, desc=desc, unit="eval")

    def evaluate(self, t: np.ndarray, batch: int) -> np.ndarray:
        x = self.obj.from_unit(t)
        t0 = time.perf_counter()
        J = self.obj(x)
        self.objective_time += time.perf_counter() - t0
        bad = ~np.isfinite(J)
        if bad.any():
            log.warning("%d of %d points gave a non-finite J (failed run or infeasible point), e.g. %s; "
                        "the GP sees the worst finite J there", int(bad.sum()), len(J),
                        dict(zip(self.obj.names, np.round(x[bad][0], 6).tolist())))
        self.T.extend(t)
        self.X.extend(x)
        self.J.extend(J)
        self.batch.extend([batch] * len(J))
        if self.bar is not None:
            self.bar.update(len(J))
            if np.isfinite(self.J).any():
                self.bar.set_postfix(best_J=f"{np.nanmin(np.where(np.isfinite(self.J), self.J, np.nan)):.5g}")
        return J

    @property
    def n(self) -> int:
        return len(self.J)

    def result(self, method: str, t_start: float, model=None, attrs=None) -> BayesOptResult:
        if self.bar is not None:
            self.bar.close()
        J = np.asarray(self.J, dtype=float)
        X = np.asarray(self.X, dtype=float).reshape(len(J), self.obj.d)
        Jf = np.where(np.isfinite(J), J, np.inf)
        best_so_far = np.minimum.accumulate(Jf)
        best_so_far[~np.isfinite(best_so_far)] = np.nan  # nothing finite yet
        if not np.isfinite(Jf).any():
            raise RuntimeError(f"{method}: all {len(J)} evaluations gave NaN/inf J (failed runs or infeasible "
                               "points); check the objective and its bounds")
        k = int(np.argmin(Jf))
        return BayesOptResult(
            method=method, names=list(self.obj.names), best_x=X[k].copy(), best_J=float(J[k]), X=X, J=J,
            batch=np.asarray(self.batch, dtype=np.int64), best_so_far=best_so_far, bounds=self.obj.bounds.copy(),
            log=self.obj.log.copy(), n_forward_runs=int(self.obj.n_forward_runs - self.runs0),
            wall_time=time.perf_counter() - t_start, objective_time=self.objective_time, model=model,
            attrs={"best_evaluation": k, **(attrs or {})},
        )


def _design(kind: str, d: int, n: int, seed: int) -> np.ndarray:
    """``n`` points in ``[0, 1]^d``: scrambled Sobol' (first ``n`` of a power-of-2 run) or LHS."""
    if kind == "sobol":
        m = max(1, int(np.ceil(np.log2(max(n, 2)))))
        return scipy.stats.qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)[:n]
    return scipy.stats.qmc.LatinHypercube(d, seed=seed).random(n)


def random_search(objective, budget: int, seed: int = 0, bounds=None, names=None, batch_size: int | None = None,
                  progress: bool = False) -> BayesOptResult:
    """Uniform random points in the unit cube of the bounds (log-uniform for a Problem's
    log-scale parameters); ``budget`` evaluations in batches of ``batch_size`` (default:
    all at once: one vectorised forward call). Same arguments and result as
    :func:`bayesian_optimisation` (``method="random_search"``)."""
    return _baseline("random_search", objective, budget, seed, bounds, names, batch_size, progress)


def lhs_search(objective, budget: int, seed: int = 0, bounds=None, names=None, batch_size: int | None = None,
               progress: bool = False) -> BayesOptResult:
    """A Latin hypercube of ``budget`` points in the unit cube of the bounds (scipy,
    seeded). Same arguments and result as :func:`random_search` (``method="lhs_search"``)."""
    return _baseline("lhs_search", objective, budget, seed, bounds, names, batch_size, progress)


def _baseline(method, objective, budget, seed, bounds, names, batch_size, progress) -> BayesOptResult:
    t_start = time.perf_counter()
    budget = _check_budget(budget)
    obj = Objective.make(objective, bounds, names)
    batch_size = budget if batch_size is None else _check_budget(batch_size, what="batch_size")
    if method == "random_search":
        T = np.random.default_rng(seed).random((budget, obj.d))
    else:
        T = scipy.stats.qmc.LatinHypercube(obj.d, seed=seed).random(budget)
    tr = _Trace(obj, budget, progress, method)
    for i in range(0, budget, batch_size):
        tr.evaluate(T[i: i + batch_size], 0)
    return tr.result(method, t_start, attrs={"seed": int(seed), "budget": budget})



# stagnation-triggered exploration (batch_size=1; see bayesian_optimisation)
EXPLORE_REPEAT = 3e-3  # a proposal closer than this (unit cube) to an evaluated point: the basin is exhausted
# (1e-2, or also "max EI < 1e-6 of the J spread", fired while LogEI was still refining Branin's minimum: 0.4038, 1.5 % above)
EXPLORE_RADIUS = 2.5  # an exhausted basin: within this many GP lengthscales (scaled distance) of its centre
EXPLORE_BOX = 0.15  # half-width (unit cube) of the box searched around the best point outside exhausted basins
EXPLORE_CANDIDATES = 4096  # Sobol' candidates for the exploration point


def _outside(P: np.ndarray, centres: list, ls: np.ndarray) -> np.ndarray:
    """Points ``P (n, d)`` farther than EXPLORE_RADIUS lengthscales from every centre."""
    if not centres:
        return np.ones(len(P), dtype=bool)
    sd = np.sqrt((((P[:, None, :] - np.asarray(centres)[None]) / ls) ** 2).sum(-1))
    return (sd > EXPLORE_RADIUS).all(1)


def _explore_point(gp, T_seen, Jw, excluded, ls, d, seed) -> np.ndarray:
    """The exploration point: of EXPLORE_CANDIDATES scrambled Sobol' points outside the
    exhausted basins (and not near-repeats), the one with the largest LogEI over the best
    J outside those basins. Returns ``(1, d)``."""
    from botorch.acquisition import LogExpectedImprovement

    C = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(EXPLORE_CANDIDATES).to(torch.float64)
    out = _outside(T_seen, excluded, ls) & np.isfinite(Jw)
    best_out = -Jw[out].min() if out.any() else -Jw.min()
    with torch.no_grad():
        v = LogExpectedImprovement(gp, best_f=torch.tensor(best_out, dtype=torch.float64))(C[:, None, :])
        ok = torch.as_tensor(_outside(C.numpy(), excluded, ls))
        ok &= torch.cdist(C, torch.as_tensor(T_seen)).min(1).values >= EXPLORE_REPEAT
        v = torch.where(ok, v, torch.tensor(-np.inf, dtype=v.dtype)) if ok.any() else v
    return C[int(v.argmax())].numpy()[None]


def bayesian_optimisation(objective, budget: int = 50, batch_size: int = 1, n_init: int | None = None,
                          seed: int = 0, acquisition: str = "logei", bounds=None, names=None,
                          init: str = "sobol", noise_free: bool = True, num_restarts: int = 4,
                          raw_samples: int = 64, acq_options: dict | None = None, mc_samples: int = 128,
                          explore: bool = True, progress: bool = False) -> BayesOptResult:
    """Minimise ``J`` by Bayesian optimisation (BoTorch); see the module doc for the loop.

    Parameters
    ----------
    objective : a :class:`calibration.Problem` (minimises ``problem.cost`` in its bounds;
        log-scale parameters are searched in ``ln x``), or a callable
        ``f(x (n, d) numpy) -> (n,)`` together with ``bounds``.
    budget : total evaluations of J (forward runs of one member), initial design included.
    batch_size : points proposed per iteration (``q``): 1 uses LogEI, more uses qLogEI and
        evaluates them in one (vectorised) call. The last batch is cut to fit the budget.
    n_init : initial design size, default ``2 d + 1``; ``2 <= n_init <= budget``.
    seed : seeds the design, the GP fits and the acquisition optimiser: the same seed
        gives the same points.
    acquisition : ``"logei"`` (LogEI / qLogEI), the only one for now.
    bounds : ``(d, 2)`` [min, max] for a callable (refused with a Problem: it has its own).
    names : parameter names for a callable (default ``x0, x1, ...``).
    init : ``"sobol"`` (scrambled Sobol') or ``"lhs"`` (Latin hypercube).
    noise_free : True (a deterministic model run): the GP nearly interpolates, with a
        fixed noise variance of ``2e-6 Var(J seen)``; False: the noise is inferred
        (Gamma(1.1, 0.05) prior), for noisy objectives.
    num_restarts, raw_samples : ``optimize_acqf``'s L-BFGS-B restarts and the raw
        (Sobol') samples that pick them; ``acq_options`` extra options for it (default
        ``maxiter=50``).
    mc_samples : QMC samples of qLogEI (``batch_size > 1``).
    explore : stagnation-triggered exploration (module doc; ``batch_size=1`` only). On
        Hartmann6 (seeds 0-9, budget 100) it raised the seeds within 1 % of the optimum from
        4/10 (plain LogEI, all others in the local minimum) to 7/10; at budget 60 both give
        4/10 (``benchmarks/bayesopt.py``). Branin (budget 40): 10/10 with it.
    progress : a tqdm bar over evaluations.

    The GP is BoTorch's classic ``SingleTaskGP`` configuration: ARD Matern-5/2 with a
    Gamma(3, 6) lengthscale prior in a ScaleKernel (Gamma(2, 0.15)), constant mean,
    ``Standardize`` outcomes, refitted every iteration from the previous hyperparameters
    (L-BFGS-B, at most 50 iterations). Settings chosen on Branin and Hartmann6
    (``benchmarks/bayesopt.py``): BoTorch's newer default (RBF with a dimension-scaled
    prior and inferred noise) stalled 4-6 % above the Hartmann6 optimum in 100 evaluations.

    Returns a :class:`BayesOptResult` (``method="bayesian_optimisation"``) whose ``model``
    is the GP refitted to all evaluations.
    """
    from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.models.utils.gpytorch_modules import (get_gaussian_likelihood_with_gamma_prior,
                                                       get_matern_kernel_with_gamma_prior)
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.mlls import ExactMarginalLogLikelihood

    t_start = time.perf_counter()
    budget = _check_budget(budget, 2)
    batch_size = _check_budget(batch_size, 1, "batch_size")
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
    if init not in INIT_DESIGNS:
        raise ValueError(f"init must be one of {INIT_DESIGNS}, got {init!r}")
    obj = Objective.make(objective, bounds, names)
    d = obj.d
    n_init = 2 * d + 1 if n_init is None else _check_budget(n_init, 2, "n_init")
    if budget < n_init:
        raise ValueError(f"budget = {budget} is smaller than the initial design n_init = {n_init}"
                         f"{' (default 2 d + 1)' if n_init == 2 * d + 1 else ''}; raise budget or lower n_init")
    for nm, v in (("num_restarts", num_restarts), ("raw_samples", raw_samples), ("mc_samples", mc_samples)):
        _check_budget(v, 1, nm)
    acq_opts = {"maxiter": 50, **(acq_options or {})}

    tr = _Trace(obj, budget, progress, "bayesian_optimisation")
    unit = torch.stack([torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)])
    prev = [None]  # the last GP: its hyperparameters start the next fit
    excluded, n_explore = [], 0  # centres of exhausted basins (unit cube); exploration steps
    timing = [0.0, 0.0]  # GP fits, acquisition optimisation [s]

    def fit(it: int):
        T = torch.as_tensor(np.asarray(tr.T), dtype=torch.float64)
        J = np.asarray(tr.J, dtype=float)
        ok = np.isfinite(J)
        Jf = np.where(ok, J, J[ok].max())  # infeasible / failed: the worst finite J seen
        Y = torch.as_tensor(-Jf, dtype=torch.float64)[:, None]  # BoTorch maximises -J
        torch.manual_seed(seed * 7919 + it)  # fit retries draw from torch's RNG
        Yvar = torch.full_like(Y, 2e-6 * max(float(Y.var()), 1e-300)) if noise_free else None
        gp = SingleTaskGP(T, Y, Yvar, outcome_transform=Standardize(m=1),
                          covar_module=get_matern_kernel_with_gamma_prior(ard_num_dims=d),
                          likelihood=None if noise_free else get_gaussian_likelihood_with_gamma_prior())
        if prev[0] is not None:  # warm start
            for mod in ("covar_module", "mean_module") + (() if noise_free else ("likelihood",)):
                getattr(gp, mod).load_state_dict(getattr(prev[0], mod).state_dict())
        prev[0] = gp
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(not standardized|not contained to the unit cube|Very small noise).*")
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp), optimizer_kwargs={"options": {"maxiter": 50}})
        return gp, Y.max()

    with torch.random.fork_rng():
        tr.evaluate(_design(init, d, n_init, seed), 0)
        it, gp = 0, None
        while tr.n < budget:
            it += 1
            q = min(batch_size, budget - tr.n)
            if not np.isfinite(tr.J).any():  # nothing to model yet: keep filling space
                log.warning("no finite J in %d evaluations: next %d points from a Sobol' design", tr.n, q)
                tr.evaluate(_design("sobol", d, tr.n + q, seed + 1)[tr.n:], it)
                continue
            t0 = time.perf_counter()
            gp, best_f = fit(it)
            t1 = time.perf_counter()
            T_seen = np.asarray(tr.T)
            Jw = np.asarray(tr.J, dtype=float)
            Jw = np.where(np.isfinite(Jw), Jw, np.inf)
            ls = gp.covar_module.base_kernel.lengthscale.detach()[0].numpy()
            box, bf, centre = unit, best_f, None
            if q == 1 and excluded:
                out = _outside(T_seen, excluded, ls) & np.isfinite(Jw)
                if out.any() and Jw[out].min() > Jw.min():  # the best is in an exhausted basin: search the best region outside
                    ka = int(np.argmin(np.where(out, Jw, np.inf)))
                    centre = T_seen[ka]
                    bf = torch.tensor(-Jw[ka], dtype=torch.float64)
                    box = torch.as_tensor(np.stack([np.clip(centre - EXPLORE_BOX, 0, 1), np.clip(centre + EXPLORE_BOX, 0, 1)]))
            if q == 1:
                acq = LogExpectedImprovement(gp, best_f=bf)
            else:
                sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed * 7919 + it)
                acq = qLogExpectedImprovement(gp, best_f=best_f, sampler=sampler)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # restarts that stop at maxiter
                cand, acq_max = optimize_acqf(acq, bounds=box, q=q, num_restarts=num_restarts, raw_samples=raw_samples,
                                              options={"seed": seed * 7919 + it, **acq_opts},
                                              retry_on_optimization_warning=False)
            t_new = cand.detach().numpy().reshape(q, d)
            if explore and q == 1:
                gap = float(np.sqrt(((t_new - T_seen) ** 2).sum(-1)).min())
                Jf = Jw[np.isfinite(Jw)]
                rel_logei = float(acq_max) - np.log(max(Jf.max() - Jf.min(), 1e-300))
                if gap < EXPLORE_REPEAT:  # stagnation: a near-repeat, this basin is exhausted
                    excluded.append(centre if centre is not None else T_seen[int(np.argmin(Jw))])
                    t_new = _explore_point(gp, T_seen, Jw, excluded, ls, d, seed * 7919 + it)
                    n_explore += 1
                    log.info("iteration %d: stagnation (proposal %.2g from an evaluated point, LogEI %.1f relative to the "
                             "J spread); basin %d excluded, exploring at %s", it, gap, rel_logei, len(excluded),
                             np.round(t_new[0], 4).tolist())
            t2 = time.perf_counter()
            timing[0] += t1 - t0
            timing[1] += t2 - t1
            tr.evaluate(t_new, it)
        if np.isfinite(tr.J).any():
            gp, _ = fit(it + 1)  # the GP of all evaluations
    attrs = {"seed": int(seed), "budget": budget, "batch_size": batch_size, "n_init": n_init, "init": init,
             "acquisition": "LogExpectedImprovement" if batch_size == 1
             else f"qLogExpectedImprovement (q={batch_size}, {mc_samples} QMC samples)",
             "model": "botorch SingleTaskGP: ARD Matern-5/2 (Gamma(3, 6) lengthscales), Standardize, on -J over the unit cube",
             "noise_free": bool(noise_free), "num_restarts": num_restarts, "raw_samples": raw_samples,
             "explore": bool(explore), "n_explore": n_explore,
             "iterations": it, "gp_fit_time_s": round(timing[0], 3), "acquisition_time_s": round(timing[1], 3)}
    return tr.result("bayesian_optimisation", t_start, model=gp, attrs=attrs)
