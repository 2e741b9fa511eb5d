"""Verification of ensemble combinations against the analysis: scores per variable and lead day.

:func:`scores` compares forecasts ``(lead_time, time, lat, lon)`` (one Dataset per system: median, weighted, DL ...)
with the analysis over all valid points of the period (points where the analysis is NaN
are left out) and returns a Dataset ``(system, variable, lead_time)``:

* ``rmse``, ``bias`` (forecast - analysis), ``mae`` [variable units], ``corr`` (Pearson,
  over all points and times) [1];
* exceedances of a threshold (:data:`DEFAULT_THRESHOLDS`): ``hit_rate`` = hits / observed
  events (probability of detection), ``false_alarm_ratio`` = false alarms / forecast
  events, ``n_events`` (observed), ``n_forecast_events``. NaN when there is nothing to
  divide by.

Thresholds [ug m-3] are EU air-quality values, applied here to every time step of the
gridded fields (not to the 8-hour or daily means the regulations use): O3 120 (target
value for the daily maximum 8-h mean), NO2 200 (hourly limit value), SO2 350 (hourly limit
value), PM10 50 (daily limit value).

:func:`error_maps` gives the RMSE per grid cell ``(system, variable, lat, lon)``;
:func:`scorecard_table` a markdown score card.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .dataset import MMEData

__all__ = ["scores", "error_maps", "scorecard_table", "scorecard_frame", "DEFAULT_THRESHOLDS", "stack_systems"]

#: exceedance thresholds [ug m-3] (see the module docstring)
DEFAULT_THRESHOLDS = {"O3": 120.0, "NO2": 200.0, "SO2": 350.0, "PM10": 50.0}


def stack_systems(forecasts: dict[str, xr.Dataset]) -> xr.Dataset:
    """``{system: Dataset (lead_time, time, lat, lon)}`` -> one Dataset with a ``system`` dim."""
    if not forecasts:
        raise ValueError("no forecasts given")
    names = list(forecasts)
    return xr.concat([forecasts[n] for n in names], dim=pd.Index(names, name="system"), join="exact",
                     coords="minimal", compat="override", combine_attrs="drop")


def _analysis_for(analysis, var: str, times) -> np.ndarray:
    """The analysis of ``var`` at ``times`` ``(T, H, W)`` from an MMEData or a Dataset."""
    if isinstance(analysis, MMEData):
        idx = analysis.time.get_indexer(pd.DatetimeIndex(times))
        if (idx < 0).any():
            raise ValueError(f"{int((idx < 0).sum())} forecast times are not in the analysis' time axis")
        return analysis.analysis_array(var)[idx]
    name = var + "_analysis" if var + "_analysis" in analysis else var
    if name not in analysis:
        raise ValueError(f"the analysis has no {var!r} (or {var}_analysis)")
    return analysis[name].sel(time=times).transpose("time", "lat", "lon").values


def scores(forecasts, analysis, thresholds: dict | None = None) -> xr.Dataset:
    """Scores per system, variable and lead day (see the module docstring).

    Parameters
    ----------
    forecasts : ``{system: Dataset}`` or a Dataset with a ``system`` dim; variables
        ``(lead_time, time, lat, lon)``.
    analysis : :class:`~ailand.mme.MMEData` or a Dataset with ``<var>_analysis`` (or
        ``<var>``) ``(time, lat, lon)`` covering the forecast times.
    thresholds : ``{variable: threshold}`` in the variables' units (default
        :data:`DEFAULT_THRESHOLDS`; variables without one get NaN exceedance scores).

    Returns ``xr.Dataset`` ``(system, variable, lead_time)``.
    """
    fc = stack_systems(forecasts) if isinstance(forecasts, dict) else forecasts
    thr = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    methods = [str(m) for m in fc["system"].values]
    variables = [str(v) for v in fc.data_vars]
    leads = fc["lead_time"].values
    shape = (len(methods), len(variables), len(leads))
    out = {k: np.full(shape, np.nan) for k in ("rmse", "bias", "mae", "corr", "hit_rate", "false_alarm_ratio",
                                               "n_events", "n_forecast_events", "n_points")}
    for j, v in enumerate(variables):
        a_all = _analysis_for(analysis, v, fc["time"].values).astype(np.float64)
        th = thr.get(v)
        for i, m in enumerate(methods):
            f_all = fc[v].sel(system=m).transpose("lead_time", "time", "lat", "lon").values.astype(np.float64)
            for k in range(len(leads)):
                f = f_all[k]
                ok = ~np.isnan(a_all) & ~np.isnan(f)
                if not ok.any():
                    continue
                fv, av = f[ok], a_all[ok]
                d = fv - av
                out["rmse"][i, j, k] = np.sqrt(np.mean(d * d))
                out["bias"][i, j, k] = d.mean()
                out["mae"][i, j, k] = np.abs(d).mean()
                sf, sa = fv.std(), av.std()
                out["corr"][i, j, k] = np.mean((fv - fv.mean()) * (av - av.mean())) / (sf * sa) if sf > 0 and sa > 0 else np.nan
                out["n_points"][i, j, k] = fv.size
                if th is not None:
                    obs, fce = av > th, fv > th
                    hits = np.sum(obs & fce)
                    out["n_events"][i, j, k] = obs.sum()
                    out["n_forecast_events"][i, j, k] = fce.sum()
                    out["hit_rate"][i, j, k] = hits / obs.sum() if obs.sum() else np.nan
                    out["false_alarm_ratio"][i, j, k] = (fce.sum() - hits) / fce.sum() if fce.sum() else np.nan
    units = {v: fc[v].attrs.get("units", "") for v in variables}
    dims = ("system", "variable", "lead_time")
    meta = {
        "rmse": ("root-mean-square error", "variable units"), "bias": ("mean error (forecast - analysis)", "variable units"),
        "mae": ("mean absolute error", "variable units"), "corr": ("Pearson correlation over points and times", "1"),
        "hit_rate": ("hit rate (probability of detection) of threshold exceedances", "1"),
        "false_alarm_ratio": ("false-alarm ratio of threshold exceedances", "1"),
        "n_events": ("observed exceedances (analysis > threshold)", "1"),
        "n_forecast_events": ("forecast exceedances", "1"), "n_points": ("verified points", "1"),
    }
    ds = xr.Dataset({k: (dims, out[k], {"long_name": meta[k][0], "units": meta[k][1]}) for k in out},
                    coords={"system": methods, "variable": variables, "lead_time": leads})
    ds["threshold"] = ("variable", [float(thr.get(v, np.nan)) for v in variables], {"long_name": "exceedance threshold"})
    ds.attrs = {"units": str(units), "period": f"{str(fc['time'].values[0])[:16]} .. {str(fc['time'].values[-1])[:16]}",
                "n_times": int(fc.sizes["time"])}
    return ds


def error_maps(forecasts, analysis, lead_time=None) -> xr.Dataset:
    """RMSE per grid cell over the times (and lead days, or only ``lead_time``):
    ``(system, variable, lat, lon)`` Dataset with variable ``rmse`` [variable units]."""
    fc = stack_systems(forecasts) if isinstance(forecasts, dict) else forecasts
    if lead_time is not None:
        fc = fc.sel(lead_time=[lead_time])
    methods = [str(m) for m in fc["system"].values]
    variables = [str(v) for v in fc.data_vars]
    H, W = fc.sizes["lat"], fc.sizes["lon"]
    rm = np.full((len(methods), len(variables), H, W), np.nan)
    for j, v in enumerate(variables):
        a = _analysis_for(analysis, v, fc["time"].values)[None]
        for i, m in enumerate(methods):
            f = fc[v].sel(system=m).transpose("lead_time", "time", "lat", "lon").values
            d2 = (f - a) ** 2
            n = (~np.isnan(d2)).sum(axis=(0, 1))
            with np.errstate(invalid="ignore", divide="ignore"):
                rm[i, j] = np.sqrt(np.where(n > 0, np.nansum(d2, axis=(0, 1)) / np.maximum(n, 1), np.nan))
    return xr.Dataset({"rmse": (("system", "variable", "lat", "lon"), rm, {"long_name": "RMSE per grid cell"})},
                      coords={"system": methods, "variable": variables, "lat": fc["lat"], "lon": fc["lon"]},
                      attrs={"lead_time": "all" if lead_time is None else int(lead_time)})


def scorecard_frame(sc: xr.Dataset, score: str = "rmse") -> pd.DataFrame:
    """One score as a table: rows (variable, lead day), columns methods."""
    df = sc[score].transpose("variable", "lead_time", "system").to_dataframe()[score].unstack("system")
    return df[[str(m) for m in sc["system"].values]]


def scorecard_table(sc: xr.Dataset, reference: str = "median", digits: int = 2) -> str:
    """A markdown score card: RMSE per method with the change against ``reference`` [%],
    then bias, correlation, hit rate and false-alarm ratio per method (rows: variable and
    lead day)."""
    methods = [str(m) for m in sc["system"].values]
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not among the methods {methods}")
    lines = []
    head = "| variable | lead day | " + " | ".join(f"RMSE {m}" for m in methods) + " | " + " | ".join(
        f"{m} vs {reference}" for m in methods if m != reference) + " |"
    lines += [head, "|" + "---|" * (2 + 2 * len(methods) - 1)]
    for v in sc["variable"].values:
        for lt in sc["lead_time"].values:
            r = sc["rmse"].sel(variable=v, lead_time=lt)
            ref = float(r.sel(system=reference))
            vals = [f"{float(r.sel(system=m)):.{digits}f}" for m in methods]
            rel = [f"{100 * (float(r.sel(system=m)) / ref - 1):+.1f} %" for m in methods if m != reference]
            lines.append(f"| {v} | {int(lt)} | " + " | ".join(vals) + " | " + " | ".join(rel) + " |")
    lines.append("")
    head = "| variable | lead day | " + " | ".join(f"bias / r {m}" for m in methods) + " |"
    lines += [head, "|" + "---|" * (2 + len(methods))]
    for v in sc["variable"].values:
        for lt in sc["lead_time"].values:
            s = sc.sel(variable=v, lead_time=lt)
            cells = [f"{float(s['bias'].sel(system=m)):+.{digits}f} / {float(s['corr'].sel(system=m)):.3f}" for m in methods]
            lines.append(f"| {v} | {int(lt)} | " + " | ".join(cells) + " |")
    lines.append("")
    head = "| variable (threshold) | lead day | events | " + " | ".join(f"hit rate / FAR {m}" for m in methods) + " |"
    lines += [head, "|" + "---|" * (3 + len(methods))]
    for v in sc["variable"].values:
        for lt in sc["lead_time"].values:
            s = sc.sel(variable=v, lead_time=lt)
            n = float(s["n_events"].isel(system=0))
            cells = []
            for m in methods:
                h, f = float(s["hit_rate"].sel(system=m)), float(s["false_alarm_ratio"].sel(system=m))
                cells.append(("-" if np.isnan(h) else f"{h:.2f}") + " / " + ("-" if np.isnan(f) else f"{f:.2f}"))
            thr = float(sc["threshold"].sel(variable=v))
            lines.append(f"| {v} (> {thr:g}) | {int(lt)} | {'-' if np.isnan(n) else int(n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
