"""Hyperparameter search of the dust emission network: Bayesian optimisation (BoTorch, via
:func:`calibration.bayesopt.bayesian_optimisation`) against random search at the same budget.

The seed's hyperparameter families, as a box of 9 continuous coordinates (categorical ones
rounded):

================  =================  ==========================================
family            coordinate         range
================  =================  ==========================================
architecture      ``n_layers``       1 .. 4 (floor)
architecture      ``log2_width``     5 .. 9 (round: 32 .. 512 units)
training          ``dropout``        0 .. 0.5
training          ``log2_batch``     7 .. 10 (round: 128 .. 1024)
optimiser         ``log10_lr``       -4.5 .. -2 (AdamW)
optimiser         ``log10_wd``       -6 .. -1 (AdamW weight decay)
scheduler         ``cosine``         < 0.5 none, >= 0.5 cosine annealing
normalisation     ``zscore``         < 0.5 min-max, >= 0.5 z-score
loss              ``loss``           0 .. 3 (floor: r2, mse, huber)
================  =================  ==========================================

Objective J: the validation log-space RMSE ln(E / E_scale + 1e-5) of the seed network with
the log target (v2) after ``epochs`` epochs on at most ``max_rows`` training rows (a short,
seeded training: the search ranks settings; the final model is trained in full).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ailand.dust.nn import TrainConfig, fit_seed_network, log_space, predict, table_arrays
from ailand.dust.nn.train import LOSSES
from calibration.bayesopt import BayesOptResult, bayesian_optimisation, random_search

__all__ = ["SEARCH_SPACE", "config_from_vector", "SearchObjective", "run_search", "search_table", "plot_search"]

#: coordinate -> (min, max)
SEARCH_SPACE: dict[str, tuple[float, float]] = {
    "n_layers": (1.0, 4.999), "log2_width": (5.0, 9.0), "dropout": (0.0, 0.5), "log2_batch": (7.0, 10.0),
    "log10_lr": (-4.5, -2.0), "log10_wd": (-6.0, -1.0), "cosine": (0.0, 1.0), "zscore": (0.0, 1.0), "loss": (0.0, 2.999),
}


def config_from_vector(x, epochs: int, max_rows: int | None, seed: int = 0) -> TrainConfig:
    """A :class:`~ailand.dust.nn.TrainConfig` of one point of :data:`SEARCH_SPACE` (order of its keys)."""
    v = dict(zip(SEARCH_SPACE, np.asarray(x, dtype=float)))
    width = int(2 ** round(v["log2_width"]))
    return TrainConfig(hidden=(width,) * int(np.floor(v["n_layers"])), dropout=float(v["dropout"]),
                       batch_size=int(2 ** round(v["log2_batch"])), lr=float(10 ** v["log10_lr"]),
                       weight_decay=float(10 ** v["log10_wd"]), scheduler="cosine" if v["cosine"] >= 0.5 else "none",
                       normalisation="zscore" if v["zscore"] >= 0.5 else "minmax", loss=LOSSES[int(np.floor(v["loss"]))],
                       epochs=int(epochs), patience=int(epochs), seed=int(seed), max_rows=max_rows)


class SearchObjective:
    """``J(x (n, 9)) -> (n,)``: validation log-space RMSE of a short training at each point."""

    def __init__(self, train: xr.Dataset, val: xr.Dataset, epochs: int = 3, max_rows: int | None = 40_000,
                 max_val_rows: int | None = 20_000, seed: int = 0):
        self.train, self.epochs, self.max_rows, self.seed = train, int(epochs), max_rows, int(seed)
        if max_val_rows is not None and val.sizes["sample"] > max_val_rows:
            idx = np.sort(np.random.default_rng(seed).choice(val.sizes["sample"], max_val_rows, replace=False))
            val = val.isel(sample=idx)
        self.val = val
        self.bounds = np.array(list(SEARCH_SPACE.values()))
        self.names = list(SEARCH_SPACE)
        self.trials: list[dict] = []

    def __call__(self, X) -> np.ndarray:
        out = []
        for x in np.atleast_2d(X):
            cfg = config_from_vector(x, self.epochs, self.max_rows, self.seed)
            fit = fit_seed_network(self.train, self.val, "log", cfg)
            Xv, yv = table_arrays(self.val, fit.model.names, check=False)
            s = fit.model.target.scale
            J = float(np.sqrt(np.mean((log_space(predict(fit.model, Xv), s) - log_space(yv, s)) ** 2)))
            self.trials.append({"J": J, "wall_s": fit.wall_s, **{k: getattr(cfg, k) for k in (
                "hidden", "dropout", "batch_size", "lr", "weight_decay", "scheduler", "normalisation", "loss")}})
            out.append(J)
        return np.asarray(out)


def run_search(train: xr.Dataset, val: xr.Dataset, budget: int = 12, n_init: int = 6, epochs: int = 3,
               max_rows: int | None = 40_000, seed: int = 0, progress=False) -> dict[str, tuple[BayesOptResult, list]]:
    """Bayesian optimisation and random search, ``budget`` short trainings each.

    Returns ``{"bayesian_optimisation": (result, trials), "random_search": (result, trials)}``
    (results of :mod:`calibration.bayesopt`; ``trials`` the configurations and their J)."""
    out = {}
    obj = SearchObjective(train, val, epochs, max_rows, seed=seed)
    out["bayesian_optimisation"] = (bayesian_optimisation(obj, budget=budget, n_init=min(n_init, budget), seed=seed,
                                                          bounds=obj.bounds, names=obj.names, progress=progress),
                                    obj.trials)
    obj2 = SearchObjective(train, val, epochs, max_rows, seed=seed)
    out["random_search"] = (random_search(obj2, budget=budget, seed=seed, bounds=obj2.bounds, names=obj2.names,
                                          progress=progress), obj2.trials)
    return out


def search_table(results) -> pd.DataFrame:
    """Every trial of every method: method, evaluation, J, best so far, the configuration."""
    rows = []
    for method, (res, trials) in results.items():
        for k, t in enumerate(trials):
            rows.append({"method": method, "evaluation": k + 1, "best_so_far": float(res.best_so_far[k]), **t})
    return pd.DataFrame(rows)


def plot_search(results, path=None):
    """Lowest validation log-RMSE vs trainings for both methods (and every BO evaluation)."""
    bo = results["bayesian_optimisation"][0]
    fig = bo.plot(path=None, compare=[results["random_search"][0]])
    fig.axes[0].set_ylabel("lowest validation RMSE (log space)")
    fig.axes[1].set_ylabel("validation RMSE (log space)")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
