"""Evaluation of the emission analysis as the seed does it.

* :func:`aod_scores`: AOD at held-out "AERONET" stations (never assimilated) for each run,
  against the stations' observations: RMSE, bias (model - observation) and Pearson
  correlation (pooled over stations and hours, and the mean of the stations' own correlations
  in time), for ``desert``, ``non_desert`` and ``all``
  stations, per season and over the whole run. Runs: ``prior`` (a free run with the prior
  emission), ``analysis`` (the smoother's ensemble-mean AOD after each cycle's analysis: loads
  and emissions corrected by the satellite AOD), ``forecast`` (a free run, no state updates,
  with the analysed scaling factors of each day: what the emission analysis alone gives) and
  ``monthly`` (a free run with the monthly emission-weighted factors).
* :func:`factor_scores`: the recovered scaling field against the hidden truth, over the
  (period, cell) pairs where the prior emits (sources only): RMSE and correlation of the log
  factors, of the factors, and the prior-emission-weighted RMSE of the log factors.
* :func:`seasonal_maps`: emission-weighted scaling factors and emission changes (analysis -
  prior) by meteorological season (DJF, MAM, JJA, SON).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["SEASONS", "season_of", "aod_scores", "factor_scores", "seasonal_maps", "scores_table"]

SEASONS = ("DJF", "MAM", "JJA", "SON")


def season_of(times) -> np.ndarray:
    """Meteorological season label of datetime64 ``times`` -> ``(T,)`` strings."""
    m = pd.DatetimeIndex(np.asarray(times)).month.to_numpy()
    return np.array(SEASONS)[(m % 12) // 3]


def _metrics(model: np.ndarray, obs: np.ndarray) -> dict:
    ok = np.isfinite(model) & np.isfinite(obs)
    n = int(ok.sum())
    if n < 2:
        return {"rmse": np.nan, "bias": np.nan, "corr": np.nan, "n": n}
    d = model[ok] - obs[ok]
    a, b = model[ok], obs[ok]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else np.nan
    return {"rmse": float(np.sqrt(np.mean(d**2))), "bias": float(d.mean()), "corr": corr, "n": n}


def aod_scores(sites: xr.Dataset, runs=("prior", "analysis", "forecast", "monthly"), obs: str = "aod_aeronet") -> xr.Dataset:
    """RMSE, bias, correlations and count of ``aod_<run>`` against ``obs`` at the stations.

    ``sites``: Dataset ``(time, site)`` with ``obs``, ``aod_<run>`` and a boolean ``desert`` over
    ``site`` (e.g. :meth:`DustTwin.evaluate` ``.sites``). Returns a Dataset with ``rmse``,
    ``bias``, ``corr`` (pooled), ``corr_station`` (mean of the stations' own correlations in
    time: the pooled one is dominated by the contrast between dusty and clean stations), ``n``
    over ``(run, group, season)``; ``group`` in (desert, non_desert,
    all), ``season`` in (all, DJF, MAM, JJA, SON) (NaN where a season has no data).
    """
    runs = [r for r in runs if f"aod_{r}" in sites]
    desert = sites["desert"].values.astype(bool)
    groups = {"desert": desert, "non_desert": ~desert, "all": np.ones_like(desert)}
    seas = season_of(sites["time"].values)
    season_sel = {"all": np.ones(len(seas), bool), **{s: seas == s for s in SEASONS}}
    y = sites[obs].transpose("time", "site").values
    out = {k: np.full((len(runs), 3, 5), np.nan) for k in ("rmse", "bias", "corr", "corr_station", "n")}
    for r, run in enumerate(runs):
        x = sites[f"aod_{run}"].transpose("time", "site").values
        for g, gsel in enumerate(groups.values()):
            for s, ssel in enumerate(season_sel.values()):
                res = _metrics(x[np.ix_(ssel, gsel)].ravel(), y[np.ix_(ssel, gsel)].ravel())
                for k in ("rmse", "bias", "corr", "n"):
                    out[k][r, g, s] = res[k]
                per = [_metrics(x[ssel, k], y[ssel, k])["corr"] for k in np.flatnonzero(gsel)]
                per = [c for c in per if np.isfinite(c)]
                out["corr_station"][r, g, s] = float(np.mean(per)) if per else np.nan
    meta = {"rmse": ("1", "root-mean-square error of AOD against the held-out stations"),
            "bias": ("1", "mean AOD error (model - station)"),
            "corr": ("1", "Pearson correlation of model and station AOD (pooled over stations and hours)"),
            "corr_station": ("1", "mean over stations of each station's Pearson correlation in time"),
            "n": ("1", "station-hours compared")}
    return xr.Dataset({k: (("run", "group", "season"), v, dict(zip(("units", "long_name"), meta[k]))) for k, v in out.items()},
                      coords={"run": runs, "group": list(groups), "season": list(season_sel)})


def factor_scores(result, truth, monthly: np.ndarray | None = None) -> xr.Dataset:
    """The recovered scaling field against the truth, over the sources that emit.

    ``result``: :class:`~.smoother.InversionResult`; ``truth``: ``(P, lat, lon)`` true factors;
    ``monthly``: optional ``(P, lat, lon)`` monthly weighted factors mapped to the periods.
    Estimates: ``prior`` (f = 1), ``background`` (the cycles' background means), ``filter``,
    ``smoothed`` (and ``monthly``). Pairs: control cells x periods with prior emission > 0.
    Returns ``rmse_log``, ``corr_log``, ``rmse``, ``corr``, ``wrmse_log`` (prior-emission
    weighted) over ``estimate``, with ``n_pairs``.
    """
    tv = np.asarray(getattr(truth, "values", truth), float)[:, result.control_j, result.control_i]
    lt = np.log(tv)
    act = result.analysed
    w = result.prior_emission[act]
    est = {"prior": np.zeros_like(lt), "background": result.background["mean"], "filter": result.filter["mean"],
           "smoothed": result.smoothed["mean"]}
    if monthly is not None:
        est["monthly"] = np.log(np.asarray(monthly, float)[:, result.control_j, result.control_i])
    rows = {k: [] for k in ("rmse_log", "corr_log", "rmse", "corr", "wrmse_log")}
    for x in est.values():
        a, b = x[act], lt[act]
        rows["rmse_log"].append(float(np.sqrt(np.mean((a - b) ** 2))))
        rows["corr_log"].append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 else np.nan)
        rows["rmse"].append(float(np.sqrt(np.mean((np.exp(a) - np.exp(b)) ** 2))))
        rows["corr"].append(float(np.corrcoef(np.exp(a), np.exp(b))[0, 1]) if a.std() > 0 else np.nan)
        rows["wrmse_log"].append(float(np.sqrt(np.sum(w * (a - b) ** 2) / np.sum(w))))
    meta = {"rmse_log": "RMSE of log scaling factors against the truth (emitting sources)",
            "corr_log": "correlation of log scaling factors with the truth (emitting sources)",
            "rmse": "RMSE of scaling factors against the truth (emitting sources)",
            "corr": "correlation of scaling factors with the truth (emitting sources)",
            "wrmse_log": "prior-emission-weighted RMSE of log scaling factors"}
    ds = xr.Dataset({k: ("estimate", v, {"units": "1", "long_name": meta[k]}) for k, v in rows.items()},
                    coords={"estimate": list(est)})
    ds.attrs["n_pairs"] = int(act.sum())
    return ds


def seasonal_maps(analysis: xr.Dataset) -> xr.Dataset:
    """Seasonal maps from an :func:`~.product.emission_analysis` Dataset (daily variables).

    Returns over ``(season, lat, lon)`` (seasons present in the run): ``scaling_factor``
    (prior-emission weighted mean), ``emission_prior``, ``emission_analysis`` and
    ``emission_change`` = analysis - prior [kg m-2 s-1] (means), and ``scaling_factor_truth``
    when the analysis has it.
    """
    seas = season_of(analysis["time"].values)
    present = [s for s in SEASONS if (seas == s).any()]
    ep, ea = analysis["emission_prior"].values, analysis["emission_analysis"].values
    out = {k: [] for k in ("scaling_factor", "emission_prior", "emission_analysis", "emission_change")}
    truth = "emission_truth" in analysis
    if truth:
        out["scaling_factor_truth"] = []
    for s in present:
        sel = seas == s
        p, a = ep[sel].mean(0), ea[sel].mean(0)
        out["scaling_factor"].append(np.where(p > 0, a / np.where(p > 0, p, 1.0), np.nan))
        out["emission_prior"].append(p)
        out["emission_analysis"].append(a)
        out["emission_change"].append(a - p)
        if truth:
            t = analysis["emission_truth"].values[sel].mean(0)
            out["scaling_factor_truth"].append(np.where(p > 0, t / np.where(p > 0, p, 1.0), np.nan))
    meta = {"scaling_factor": ("1", "prior-emission-weighted analysed scaling factor of the season (NaN: no prior emission)"),
            "emission_prior": ("kg m-2 s-1", "prior dust emission, seasonal mean"),
            "emission_analysis": ("kg m-2 s-1", "analysed dust emission, seasonal mean"),
            "emission_change": ("kg m-2 s-1", "analysed - prior dust emission, seasonal mean"),
            "scaling_factor_truth": ("1", "prior-emission-weighted true scaling factor of the season")}
    return xr.Dataset({k: (("season", "lat", "lon"), np.stack(v), dict(zip(("units", "long_name"), meta[k])))
                       for k, v in out.items()},
                      coords={"season": present, "lat": analysis["lat"], "lon": analysis["lon"]})


def scores_table(aod: xr.Dataset, factors: xr.Dataset | None = None) -> pd.DataFrame:
    """The headline numbers as one flat table (season ``all``): rows ``(kind, run, group)``."""
    rows = []
    for run in aod["run"].values:
        for g in aod["group"].values:
            d = aod.sel(run=run, group=g, season="all")
            rows.append({"kind": "aod_at_aeronet", "run": str(run), "group": str(g), "rmse": float(d["rmse"]),
                         "bias": float(d["bias"]), "corr": float(d["corr"]), "corr_station": float(d["corr_station"]),
                         "n": int(d["n"])})
    if factors is not None:
        for e in factors["estimate"].values:
            d = factors.sel(estimate=e)
            rows.append({"kind": "log_factor_vs_truth", "run": str(e), "group": "sources", "rmse": float(d["rmse_log"]),
                         "bias": np.nan, "corr": float(d["corr_log"]), "n": int(factors.attrs.get("n_pairs", 0)),
                         "wrmse": float(d["wrmse_log"])})
    return pd.DataFrame(rows)
