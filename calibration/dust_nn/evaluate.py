"""Evaluation of the dust emission networks, as the seed does it and beyond.

Reference: the emission analysis (the training target). On the rows of a table (train /
validation / test year):

* :func:`skill_table` - R2, RMSE [kg m-2 s-1], correlation, linear and in log space
  ln(E / E_scale + 1e-5), per model and split;
* :func:`zero_table` - on the test year: total emitted mass outside source regions
  (``dust_source == 0``) [kg] (the spurious emission; the analysis has none there), log-space
  RMSE over the source cells, the share of rows where the physics forbids emission but the
  model emits, total mass [kg];
* :func:`emission_maps` - test-year mean emission ``(model, lat, lon)``;
* :func:`site_series` - emission time series at the dusty site (Mezaira) and a non-source
  site (Berlin), and their diurnal cycle by local solar hour;
* :func:`coupled_runs` - the toy aerosol model of :mod:`ailand.dust` run with each model's
  emission (the networks through onnxruntime, as IFS-COMPO would through infero): AOD at the
  AERONET desert stations and surface dust concentration (load / 2 km) at the non-desert
  (background) stations, against the run with the emission analysis;
* :func:`permutation_importance` - increase of the log-space RMSE when one predictor column
  is shuffled (seeded).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ailand.dust import PointSampler
from ailand.dust.nn import LOG_EPS, log_space, physics_forbids, predict, skill, table_arrays

__all__ = ["SITES", "DUST_LAYER_M", "predict_table", "skill_table", "zero_table", "emission_maps", "site_series",
           "coupled_runs", "permutation_importance", "grid_emission"]

#: the seed's two sites: a dusty one and a non-source European background one
SITES = {"Mezaira": (23.15, 53.78), "Berlin": (52.46, 13.31)}
#: depth of the dust layer that turns a column load [kg m-2] into a surface concentration
DUST_LAYER_M = 2000.0


def predict_table(model, table: xr.Dataset) -> np.ndarray:
    """Emission [kg m-2 s-1] ``(n,)`` of ``model`` on the rows of ``table``: a torch model of
    :mod:`ailand.dust.nn`, an :class:`ailand.dust.nn.OnnxEmission`, or ``"scheme"`` (the
    physical scheme's emission) / ``"target"``."""
    if isinstance(model, str):
        return np.asarray(table["emission_scheme" if model == "scheme" else "target"].values, dtype=float)
    X = table_arrays(table, model.names, target=False)
    if isinstance(model, torch.nn.Module):
        return predict(model, X)
    return model(X)


def _scale(models):
    for m in models.values():
        base = getattr(m, "base", m)
        if hasattr(base, "target"):
            return base.target.scale
    raise ValueError("no torch model to read the emission scale from")


def skill_table(models: Mapping, splits: Mapping[str, xr.Dataset], scale: float | None = None) -> pd.DataFrame:
    """Rows (model, split) with :func:`ailand.dust.nn.skill` scores against the target."""
    scale = scale or _scale(models)
    rows = []
    for name, m in models.items():
        for split, tab in splits.items():
            rows.append({"model": name, "split": split, **skill(tab["target"].values, predict_table(m, tab), scale)})
    return pd.DataFrame(rows)


def zero_table(models: Mapping, table: xr.Dataset, scale: float | None = None) -> pd.DataFrame:
    """Per model on ``table`` (the test year): ``spurious_kg`` (mass emitted where
    ``dust_source == 0``), ``rmse_log_sources`` (log space, rows with ``dust_source > 0``),
    ``forbidden_nonzero`` (share of the rows where the physics forbids emission that get
    E > 0), ``nonsource_nonzero`` (share of non-source rows with E > 0), ``total_kg``."""
    scale = scale or _scale(models)
    y = table["target"].values
    w = table["cell_area"].values * table["step_seconds"].values  # m2 s per row
    src = table["dust_source"].values > 0
    forb = physics_forbids(table)
    rows = []
    for name, m in {"target": "target", **models}.items():
        e = predict_table(m, table)
        rows.append({
            "model": name, "spurious_kg": float((e * w)[~src].sum()), "total_kg": float((e * w).sum()),
            "rmse_log_sources": float(np.sqrt(np.mean((log_space(e[src], scale) - log_space(y[src], scale)) ** 2))),
            "forbidden_nonzero": float((e[forb] > 0).mean()) if forb.any() else float("nan"),
            "nonsource_nonzero": float((e[~src] > 0).mean()) if (~src).any() else float("nan"),
            "n_forbidden": int(forb.sum()),
        })
    return pd.DataFrame(rows)


def emission_maps(models: Mapping, table: xr.Dataset, lat, lon) -> xr.Dataset:
    """Mean emission over the table's rows ``(model, lat, lon)`` [kg m-2 s-1] (NaN at sea)."""
    ny, nx = len(lat), len(lon)
    j, i = table["ilat"].values, table["ilon"].values
    out = []
    names = ["target", *models]
    for name in names:
        e = predict_table("target" if name == "target" else models[name], table)
        s, n = np.zeros((ny, nx)), np.zeros((ny, nx))
        np.add.at(s, (j, i), e)
        np.add.at(n, (j, i), 1)
        out.append(np.where(n > 0, s / np.maximum(n, 1), np.nan))
    return xr.Dataset({"emission": (("model", "lat", "lon"), np.stack(out), {
        "units": "kg m-2 s-1", "long_name": "mean dust emission over the table's rows (test year)"})},
        coords={"model": names, "lat": ("lat", np.asarray(lat), {"units": "degrees_north"}),
                "lon": ("lon", np.asarray(lon), {"units": "degrees_east"})})


def site_series(models: Mapping, table: xr.Dataset, lat, lon, sites: Mapping = SITES) -> xr.Dataset:
    """Emission at the cells of ``sites`` ``(model, site, time)`` and its mean diurnal cycle
    ``(model, site, hour)`` by local solar hour (UTC + lon / 15) [kg m-2 s-1]."""
    lat, lon = np.asarray(lat), np.asarray(lon)
    names = ["target", *models]
    preds = {n: predict_table("target" if n == "target" else models[n], table) for n in names}
    times = np.unique(table["time"].values)
    series = np.full((len(names), len(sites), len(times)), np.nan)
    diurnal = np.full((len(names), len(sites), 24), np.nan)
    info = {}
    for s, (site, (la, lo)) in enumerate(sites.items()):
        j, i = int(np.abs(lat - la).argmin()), int(np.abs(lon - lo).argmin())
        rows = np.flatnonzero((table["ilat"].values == j) & (table["ilon"].values == i))
        info[site] = (j, i, len(rows), float(table["dust_source"].values[rows[0]]) if len(rows) else np.nan)
        if not len(rows):
            continue
        t = table["time"].values[rows]
        k = np.searchsorted(times, t)
        hour = ((pd.DatetimeIndex(t).hour.to_numpy() + pd.DatetimeIndex(t).minute.to_numpy() / 60.0 - 0.5
                 + lon[i] / 15.0) % 24).astype(int)  # the step's middle, local solar time
        for m, n in enumerate(names):
            series[m, s, k] = preds[n][rows]
            diurnal[m, s] = [preds[n][rows][hour == h].mean() if (hour == h).any() else np.nan for h in range(24)]
    return xr.Dataset({
        "emission": (("model", "site", "time"), series, {"units": "kg m-2 s-1", "long_name": "dust emission at the site's cell"}),
        "diurnal": (("model", "site", "hour"), diurnal, {"units": "kg m-2 s-1",
                                                         "long_name": "mean dust emission by local solar hour"}),
        "dust_source": ("site", [info[s][3] for s in sites], {"units": "-"}),
    }, coords={"model": names, "site": list(sites), "time": times, "hour": np.arange(24)})


def grid_emission(e: np.ndarray, table: xr.Dataset, times, shape) -> np.ndarray:
    """Rows' emission ``e`` -> ``(T, ny, nx)`` on the grid at the land ``times`` (0 where no row)."""
    t = table["time"].values
    k = np.searchsorted(times, t)
    ok = (k < len(times)) & (times[np.minimum(k, len(times) - 1)] == t)
    out = np.zeros((len(times),) + tuple(shape))
    out[k[ok], table["ilat"].values[ok], table["ilon"].values[ok]] = e[ok]
    return out


def coupled_runs(models: Mapping, data, progress=False) -> tuple[xr.Dataset, pd.DataFrame]:
    """The aerosol model with each model's emission over the test year's windows.

    models : name -> a torch model, an :class:`~ailand.dust.nn.OnnxEmission`, or ``"scheme"``;
    the reference run uses the emission analysis (``"analysis"``). Returns the station AOD and
    surface concentration ``(run, time, site)`` and a score table per run: AOD RMSE and
    correlation at the desert stations, surface concentration bias [ug m-3] and RMSE at the
    background stations, all against the analysis run, and the emitted mass [kg].
    """
    from ailand.progress import as_progress

    p = as_progress(progress)
    runs = {"analysis": "target", **models}
    aod_all, conc_all, times_all, sites0 = [], [], [], None
    emitted = {n: 0.0 for n in runs}
    with p.bar(total=len(data.chains) * len(runs), desc="coupled aerosol runs", unit="run") as bar:
        for w, (chain, sites) in enumerate(zip(data.chains, data.sites)):
            lt = data.lands[w]["time"].values
            rows = np.flatnonzero(np.isin(data.test["time"].values, lt))
            tab = data.test.isel(sample=rows)
            sampler = PointSampler(chain.grid, sites["lat"].values, sites["lon"].values)
            sites0 = sites if sites0 is None else sites0
            aod_w, conc_w = [], []
            for name, m in runs.items():
                E = grid_emission(predict_table(m, tab), tab, lt, chain.grid.shape)
                res = chain.aerosol.run(torch.as_tensor(E, dtype=chain.emission.dtype), chain.meteo,
                                        outputs=("aod", "dust_load"))
                aod_w.append(sampler(res.fields["aod"][:, 0]).numpy())
                conc_w.append(sampler(res.fields["dust_load"][:, 0]).numpy() / DUST_LAYER_M * 1e9)  # ug m-3
                emitted[name] += float(res.budget["emitted"][0])
                bar.update(1)
            aod_all.append(np.stack(aod_w))
            conc_all.append(np.stack(conc_w))
            times_all.append(lt)
    aod, conc = np.concatenate(aod_all, 1), np.concatenate(conc_all, 1)
    desert = sites0["desert"].values.astype(bool)
    ds = xr.Dataset({
        "aod": (("run", "time", "site"), aod, {"units": "1", "long_name": "dust AOD 550 nm at the station"}),
        "surface_concentration": (("run", "time", "site"), conc, {
            "units": "ug m-3", "long_name": f"surface dust concentration = column load / {DUST_LAYER_M:g} m"}),
        "desert": ("site", desert),
    }, coords={"run": list(runs), "time": np.concatenate(times_all), "site": sites0["site"].values})
    rows = []
    ref_a, ref_c = aod[0][:, desert], conc[0][:, ~desert]
    for r, name in enumerate(runs):
        a, c = aod[r][:, desert], conc[r][:, ~desert]
        rows.append({"run": name, "aod_rmse_desert": float(np.sqrt(np.mean((a - ref_a) ** 2))),
                     "aod_corr_desert": float(np.corrcoef(a.ravel(), ref_a.ravel())[0, 1]) if a.std() > 0 else float("nan"),
                     "conc_bias_background_ugm3": float(np.mean(c - ref_c)),
                     "conc_rmse_background_ugm3": float(np.sqrt(np.mean((c - ref_c) ** 2))),
                     "conc_mean_background_ugm3": float(np.mean(c)), "emitted_kg": emitted[name]})
    return ds, pd.DataFrame(rows)


def permutation_importance(model, table: xr.Dataset, scale: float, seed: int = 0, max_rows: int | None = 100_000) -> pd.DataFrame:
    """Per predictor of ``model``: the log-space RMSE after shuffling its column (seeded) minus
    the RMSE with the data as they are (larger = more important), and the same in linear R2 loss."""
    X, y = table_arrays(table, model.names)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1502]))
    if max_rows is not None and len(X) > max_rows:
        idx = np.sort(rng.choice(len(X), max_rows, replace=False))
        X, y = X[idx], y[idx]
    ly = log_space(y, scale, LOG_EPS)
    base_e = predict(model, X)
    base = float(np.sqrt(np.mean((log_space(base_e, scale) - ly) ** 2)))
    base_r2 = skill(y, base_e, scale)["r2"]
    rows = []
    for k, n in enumerate(model.names):
        Xp = X.copy()
        Xp[:, k] = rng.permutation(Xp[:, k])
        e = predict(model, Xp)
        rows.append({"predictor": n, "d_rmse_log": float(np.sqrt(np.mean((log_space(e, scale) - ly) ** 2))) - base,
                     "d_r2": base_r2 - skill(y, e, scale)["r2"]})
    return pd.DataFrame(rows).sort_values("d_rmse_log", ascending=False).reset_index(drop=True)
