"""The land surface analysis case: 2 m temperature and soil moisture of the gridded world.

Built from :func:`ailand.dust.world.make_world` (seeded weather on lat-lon cells) and the toy
ecLand (:class:`ailand.ToyEcLand`, every land cell a column; its screen-level diagnostic ``T2m``
and top-layer soil moisture ``swvl1``):

* **truth**: the model run on the world's forcing.
* **forecast background**: the same model on *forecast* forcing, the world's with a forecast
  error: 2 m air temperature + a smooth random field (Gaussian correlation of ``pert_length``
  cells, std ``pert_t`` [K], a new draw each day) and rainfall x a lognormal field (std of the
  log ``pert_rain``). The forecast ensemble (``n_members``, for the LETKF) adds further
  independent perturbations of the same statistics on top of the forecast forcing, so the
  ensemble spread matches the background error; the background is the ensemble mean.
* **fields**: daily at ``hour`` UTC on the grid; over land ``T2m`` of the model, over sea the
  forcing's air temperature (``Tair``, the same perturbations for the background), so that
  the field is defined everywhere; ``swvl1`` over land, NaN at sea.
* **stations**: each day a new random set of land cells (``density`` of them) observing T2m
  with white errors of ``obs_sigma`` [K].

Cost: one model run of ``(n_members + 2) x n_land`` columns (about 2 minutes for 90 days,
10 members and the default 16 x 32 European grid on one core).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ailand.progress import as_progress

from .classical import gaussian_random_field
from .observations import random_mask

__all__ = ["land_case", "land_analysis_cases"]


def _smooth_fields(rng, n, shape, length, sigma):
    """``(n, ny, nx)`` Gaussian random fields (non-periodic grid distance in cells)."""
    ny, nx = shape
    jj, ii = np.divmod(np.arange(ny * nx), nx)
    d = np.hypot(jj[:, None] - jj[None, :], ii[:, None] - ii[None, :])
    return gaussian_random_field(n, d, sigma, length, "gaussian", rng).reshape(n, ny, nx)


def land_case(start: str = "2020-05-01", end: str = "2020-07-29", lat_range=(35.0, 59.0), lon_range=(-6.0, 42.0),
              resolution: float = 1.5, n_members: int = 10, hour: int = 12, pert_t: float = 1.5,
              pert_length: float = 3.0, pert_rain: float = 0.5, seed: int = 0, progress=False) -> xr.Dataset:
    """Daily truth, forecast ensemble and background of T2m [K] and swvl1 [m3 m-3] (module docstring).

    Returns a Dataset on ``(day, lat, lon)`` (ensemble: ``(day, member, lat, lon)``) with ``T2m_truth,
    T2m_background, T2m_members, swvl1_truth, swvl1_background, swvl1_members``, static ``lsm,
    elevation`` and the generating parameters as attributes.
    """
    from ailand import ToyEcLand
    from ailand.dust.world import make_world, world_columns

    p = as_progress(progress)
    with p.stage("land case: gridded world"):
        world = make_world(start, end, lat_range=lat_range, lon_range=lon_range, resolution=resolution, seed=seed)
    shape = world["lsm"].shape
    times = world["time"].to_index()
    days = times.normalize().unique()
    nd = len(days)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19_33]))
    n_runs = n_members + 2  # truth, forecast, members
    # perturbation fields per run and day: run 0 none, run 1 forecast error, runs 2.. forecast + member error
    dT = np.zeros((n_runs, nd) + shape)
    dR = np.zeros((n_runs, nd) + shape)
    for r in range(1, n_runs):
        dT[r] = _smooth_fields(rng, nd, shape, pert_length, pert_t)
        dR[r] = _smooth_fields(rng, nd, shape, pert_length, pert_rain)
    dT[2:] += dT[1]
    dR[2:] += dR[1]
    day_of = np.searchsorted(days.values, times.normalize().values)
    cols = world_columns(world)
    j, i = cols["ilat"].values, cols["ilon"].values
    parts = []
    for r in range(n_runs):
        c = cols.copy()
        c["Tair"] = c["Tair"] + xr.DataArray(dT[r][day_of][:, j, i], dims=("time", "site"))
        fac = xr.DataArray(np.exp(dR[r][day_of][:, j, i] - 0.5 * pert_rain**2 * (r > 0)), dims=("time", "site"))
        c["Rainf"] = c["Rainf"] * fac
        c["Snowf"] = c["Snowf"] * fac
        c = c.assign_coords(site=[f"r{r:02d}{s}" for s in cols["site"].values])
        parts.append(c)
    allc = xr.concat(parts, dim="site")
    with p.stage(f"land case: toy ecLand, {n_runs} runs x {cols.sizes['site']} land cells x {nd} days"):
        out = ToyEcLand().run(allc, outputs=["T2m", "swvl1"])
    sel = out["time"].to_index()
    pick = np.array([np.argmin(np.abs(sel - (d + np.timedelta64(hour, "h")))) for d in days])
    ns = cols.sizes["site"]
    t2m = np.empty((n_runs, nd) + shape)
    sm = np.full((n_runs, nd) + shape, np.nan)
    tair = world["Tair"].values[pick]  # (day, ny, nx) at the analysis hour
    dpick = day_of[pick]
    for r in range(n_runs):
        t2m[r] = tair + dT[r][dpick]
        t2m[r][:, j, i] = out["T2m"].values[pick, r * ns:(r + 1) * ns]
        sm[r][:, j, i] = out["swvl1"].values[pick, r * ns:(r + 1) * ns]
    dims, edims = ("day", "lat", "lon"), ("day", "member", "lat", "lon")
    T = {"units": "K"}
    S = {"units": "m3 m-3"}
    ds = xr.Dataset(
        {"T2m_truth": (dims, t2m[0], {**T, "long_name": "true 2 m temperature (land: toy ecLand; sea: forcing Tair)"}),
         "T2m_background": (dims, t2m[2:].mean(0), {**T, "long_name": "forecast 2 m temperature (ensemble mean)"}),
         "T2m_members": (edims, t2m[2:].transpose(1, 0, 2, 3), {**T, "long_name": "forecast ensemble 2 m temperature"}),
         "swvl1_truth": (dims, sm[0], {**S, "long_name": "true top-layer soil moisture (NaN at sea)"}),
         "swvl1_background": (dims, sm[2:].mean(0), {**S, "long_name": "forecast top-layer soil moisture (ensemble mean)"}),
         "swvl1_members": (edims, sm[2:].transpose(1, 0, 2, 3), {**S, "long_name": "forecast ensemble soil moisture"}),
         "lsm": (("lat", "lon"), world["lsm"].values, dict(world["lsm"].attrs)),
         "elevation": (("lat", "lon"), world["elevation"].values, dict(world["elevation"].attrs))},
        coords={"day": days.values + np.timedelta64(hour, "h"), "member": np.arange(n_members),
                "lat": world["lat"], "lon": world["lon"]},
        attrs={"title": "learned analysis land case: T2m and swvl1 of the gridded world, forecast ensemble",
               "seed": seed, "n_members": n_members, "pert_t_K": pert_t, "pert_length_cells": pert_length,
               "pert_rain_log": pert_rain, "hour_utc": hour, "resolution_deg": resolution,
               "source": "calibration.learned_analysis.land"},
    )
    return ds


def land_analysis_cases(case: xr.Dataset, days=None, layouts_per_day: int = 1, density=(0.03, 0.3),
                        obs_sigma: float = 0.5, seed: int = 0) -> xr.Dataset:
    """T2m analysis cases from :func:`land_case`: per day ``layouts_per_day`` random station
    sets among the land cells (``density`` a fraction of them, or a ``(lo, hi)`` range drawn
    log-uniformly), observing the truth with white errors of ``obs_sigma`` [K].

    Returns ``truth, background, obs, mask`` ``(case, lat, lon)`` [K], ``members (case, member, lat,
    lon)``, ``density``, ``day`` per case, and ``lsm`` — the layout of
    :func:`calibration.learned_analysis.cases.exercise1_cases`.
    """
    sub = case if days is None else case.isel(day=days)
    land = case["lsm"].values >= 0.5
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19_44]))
    nd = sub.sizes["day"]
    k = np.repeat(np.arange(nd), layouts_per_day)
    n = k.size
    if np.isscalar(density):
        dens = np.full(n, float(density))
    else:
        lo, hi = density
        dens = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    mask = np.stack([random_mask(land.shape, d, rng, land) for d in dens])
    truth = sub["T2m_truth"].values[k]
    obs = np.where(mask, truth + obs_sigma * rng.standard_normal(truth.shape), np.nan)
    dims = ("case", "lat", "lon")
    return xr.Dataset(
        {"truth": (dims, truth, {"units": "K", "long_name": "true 2 m temperature"}),
         "background": (dims, sub["T2m_background"].values[k], {"units": "K", "long_name": "forecast 2 m temperature"}),
         "members": (("case", "member", "lat", "lon"), sub["T2m_members"].values[k],
                     {"units": "K", "long_name": "forecast ensemble 2 m temperature"}),
         "obs": (dims, obs, {"units": "K", "long_name": "station 2 m temperature (NaN: no station)"}),
         "mask": (dims, mask, {"units": "1", "long_name": "station present"}),
         "density": ("case", mask.reshape(n, -1).sum(1) / land.sum(), {"units": "1", "long_name": "fraction of land cells observed"}),
         "day": ("case", sub["day"].values[k]),
         "lsm": (("lat", "lon"), case["lsm"].values, {"units": "1", "long_name": "land fraction"})},
        coords={"case": np.arange(n), "member": case["member"].values, "lat": case["lat"], "lon": case["lon"]},
        attrs={**case.attrs, "obs_sigma": obs_sigma, "layouts_per_day": layouts_per_day},
    )
