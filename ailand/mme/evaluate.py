"""Run every system on a period and verify them: median, mean, weighted ensembles, DL ensemble.

:func:`forecast_systems` returns ``{system: Dataset (lead_time, time, lat, lon)}`` for the
test period of a trained :class:`~ailand.mme.DLEnsemble` (or any time indices), with the
weighted ensembles fitted on the model's training period only; :func:`evaluate` adds the
scores, error maps and inference timings.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from .baselines import WeightedEnsemble, ensemble_mean, ensemble_median
from .dataset import MMEData
from .progress import as_progress
from .verify import error_maps, scores

__all__ = ["forecast_systems", "evaluate"]


def forecast_systems(data: MMEData, model, times=None, alternatives=("inverse_mse",), drop_members=(),
                     progress=False) -> tuple[dict[str, xr.Dataset], dict[str, float]]:
    """All systems at time indices ``times`` (default: the model's test period).

    Systems: ``median``, ``mean``, ``weighted`` (the model's weighting, NNLS by default, the
    weights it was built on), ``weighted_<alt>`` for each of ``alternatives`` (fitted on the
    model's training period) and ``dl``. ``drop_members``: these members are missing in
    the verified period (a late model). Returns (forecasts, seconds per system).
    """
    prog = as_progress(progress)
    split = model.split(data)
    t_idx = split.test if times is None else np.asarray(times)
    sub = data.isel_time(t_idx)
    if drop_members:
        sub = sub.with_missing(list(drop_members))
    vs = model.variables
    out, secs = {}, {}
    with prog.stage(f"baselines on {t_idx.size} times"):
        for name, fn in (("median", lambda: ensemble_median(sub, vs)), ("mean", lambda: ensemble_mean(sub, vs)),
                         ("weighted", lambda: model.weighted_ensemble().predict(sub))):
            t0 = time.perf_counter()
            out[name] = fn()
            secs[name] = time.perf_counter() - t0
        for alt in alternatives:
            if alt == model.config["weighting"]:
                continue
            t0 = time.perf_counter()
            we = WeightedEnsemble(alt).fit(data, times=split.train, variables=vs)
            out[f"weighted_{alt}"] = we.predict(sub)
            secs[f"weighted_{alt}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["dl"] = model.predict(sub, progress=prog)
    secs["dl"] = time.perf_counter() - t0
    return out, secs


def evaluate(data: MMEData, model, times=None, thresholds=None, alternatives=("inverse_mse",), drop_members=(),
             progress=False) -> dict:
    """Forecasts, scores ``(system, variable, lead_time)``, error maps ``(system, variable,
    lat, lon)`` and timings for the period (default: the model's test period).

    Returns ``{"forecasts", "scores", "maps", "seconds", "seconds_per_forecast"}``; one
    forecast is one valid time and lead day (all variables, the whole grid).
    """
    fc, secs = forecast_systems(data, model, times, alternatives=alternatives, drop_members=drop_members, progress=progress)
    any_fc = next(iter(fc.values()))
    n_fc = any_fc.sizes["time"] * any_fc.sizes["lead_time"]
    sc = scores(fc, data, thresholds=thresholds)
    maps = error_maps(fc, data)
    return {"forecasts": fc, "scores": sc, "maps": maps, "seconds": secs,
            "seconds_per_forecast": {k: v / max(n_fc, 1) for k, v in secs.items()}}
