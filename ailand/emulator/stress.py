"""The emulator outside its training climate: perturbed forcing, corner parameters, unseen domains.

Each check runs the physics and the emulator side by side from the same physics-spun-up
state on the same forcing and scores the emulator's daily means against the physics'
(:func:`side_by_side`). The scenarios (:func:`scenario`) change the forcing the way a
climate or an extreme event would:

* ``control``: the synthetic weather as drawn;
* ``warm4K``: air temperature + 4 K, specific humidity raised to keep the relative humidity,
  LWdown + 4 eps sigma T^3 dT (eps = 0.8, the clear-to-cloudy mean of an atmosphere that
  warms with the surface);
* ``dry30``: rain and snow x 0.7;
* ``drought``: no rain or snow from June to August of the first year;
* ``heatwave``: 21 days from 10 July of the first year at + 8 K (humidity as in warm4K),
  SWdown x 1.1, no rain;
* parameter corners are passed as ``params`` (every parameter at its lower / upper bound).

:func:`spatial_check` does the same over the land cells of a gridded world
(:mod:`ailand.dust.world`) and returns error maps, the "trained on other regions,
evaluated over Europe" figure.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
import xarray as xr

SCENARIOS = ("control", "warm4K", "dry30", "drought", "heatwave")
SIGMA = 5.670374419e-8  # Stefan-Boltzmann [W m-2 K-4]


def _esat(t):
    """Saturation vapour pressure over water [Pa] at ``t`` [K] (Tetens)."""
    return 610.78 * np.exp(17.27 * (t - 273.16) / (t - 35.86))


def _warm(f: xr.Dataset, dT, mask=None) -> xr.Dataset:
    dT = dT if mask is None else dT * mask
    t0 = f["Tair"]
    t1 = t0 + dT
    out = f.copy()
    out["Tair"] = t1
    out["Qair"] = f["Qair"] * _esat(t1) / _esat(t0)
    out["LWdown"] = f["LWdown"] + 0.8 * 4 * SIGMA * t0**3 * dT
    return out


def scenario(forcing: xr.Dataset, name: str) -> xr.Dataset:
    """``forcing`` (hourly, ``(time, site)``) changed as scenario ``name`` (module docstring)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}")
    f = forcing.copy()
    times = pd.DatetimeIndex(f["time"].values)
    y0 = times[0].year
    if name == "warm4K":
        f = _warm(f, 4.0)
    elif name == "dry30":
        f["Rainf"], f["Snowf"] = f["Rainf"] * 0.7, f["Snowf"] * 0.7
    elif name == "drought":
        dry = xr.DataArray(((times.year == y0) & (times.month >= 6) & (times.month <= 8)).astype(float), dims="time")
        f["Rainf"], f["Snowf"] = f["Rainf"] * (1 - dry), f["Snowf"] * (1 - dry)
    elif name == "heatwave":
        t0 = pd.Timestamp(f"{y0}-07-10")
        hot = xr.DataArray(((times >= t0) & (times < t0 + pd.Timedelta(days=21))).astype(float), dims="time")
        f = _warm(f, 8.0, hot)
        f["SWdown"] = f["SWdown"] * (1 + 0.1 * hot)
        f["Rainf"], f["Snowf"] = f["Rainf"] * (1 - hot), f["Snowf"] * (1 - hot)
    f.attrs = dict(forcing.attrs, scenario=name)
    return f


def corner_params(space, which: str) -> dict:
    """Every parameter of ``space`` at its ``"lower"`` or ``"upper"`` bound (a dict of floats)."""
    if which not in ("lower", "upper"):
        raise ValueError("which must be 'lower' or 'upper'")
    col = 0 if which == "lower" else 1
    return {n: float(b[col]) for n, b in zip(space.names, space.bounds)}


def _acc(p: np.ndarray, o: np.ndarray) -> float:
    clim = o.mean(0, keepdims=True)
    a, b = p - clim, o - clim
    den = np.sqrt((a**2).sum() * (b**2).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def side_by_side(em, forcing: xr.Dataset, params=None, state0=None, spinup_years: int = 1,
                 variables=("swvl1", "swvl2", "swvl3", "stl1", "Qle", "Qh"), progress: bool = False):
    """Physics and emulator from the physics' spun-up state (spun up on ``forcing`` unless
    ``state0`` is given) over ``forcing``; returns ``(daily, scores)``.

    daily : Dataset ``(source, time, site)`` of daily means (source = physics, emulator);
    scores : dict with per variable ``rmse``, ``bias``, ``acc`` (daily means, all sites
    together; ACC about each site's own time mean), the emulator's accumulated water-balance
    residual ``water_residual`` [kg m-2 per year, mean |.| over sites] (from its own
    storage and fluxes, :mod:`ailand.emulator.budget`), and how far the inputs left the
    training data (``extrapolated``: share of driver values outside the training range;
    ``clamped``: share of state values held at the training-range clamp).
    """
    from ..physics import ToyEcLand
    from .budget import FLUX_NAMES, water_storage

    phys = ToyEcLand()
    if state0 is None:
        state0 = phys.initial_conditions(forcing, params=params, spinup_years=spinup_years, progress=progress)
    out_p = phys.run(forcing, params=params, state0=state0, output_freq=f"{em.dt:g}s", progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # counted below instead
        out_e = em.run(forcing, params=params, state0=state0, progress=progress)
    ext = em.last_extrapolation
    n_drv = max((n for _, n in ext.values()), default=1)
    extrapolated = sum(k for k, _ in ext.values()) / (n_drv * 9)
    clamped = sum(em.last_clamps.get("counts", {}).values()) / max(1, em.last_clamps.get("of", 1) * 15)
    shift = pd.Timedelta(seconds=em.dt)
    daily = {}
    for src, o in (("physics", out_p), ("emulator", out_e)):
        o = o.assign_coords(time=o["time"] - shift)  # label each step by its start
        daily[src] = o[list(variables)].resample(time="1D").mean()
    ds = xr.concat([daily["physics"], daily["emulator"]], dim="source").assign_coords(source=["physics", "emulator"])
    ds = ds.drop_vars([c for c in ("lat", "lon") if c in ds.coords])
    scores = {}
    for v in variables:
        p, o = ds[v].sel(source="emulator").values, ds[v].sel(source="physics").values
        ok = np.isfinite(p) & np.isfinite(o)
        scores[v] = {"rmse": float(np.sqrt(np.mean((p - o)[ok] ** 2))), "bias": float(np.mean((p - o)[ok])),
                     "acc": _acc(np.where(ok, p, 0), np.where(ok, o, 0)), "units": out_p[v].attrs.get("units", "")}
    # the emulator's own water balance over the run, from its outputs (steps 2..n)
    st_names = ["swvl1", "swvl2", "swvl3", "swvl4", "sd", "wl"]
    if all(k in out_e for k in (*st_names, *FLUX_NAMES)):
        from ..physics.model import STATE_NAMES

        z = torch.zeros(*out_e["swvl1"].transpose("time", ...).shape, len(STATE_NAMES), dtype=torch.float64)
        for k in st_names:
            z[..., STATE_NAMES.index(k)] = torch.as_tensor(out_e[k].transpose("time", ...).values, dtype=torch.float64)
        stor = water_storage(z).numpy()  # (n, ...) at the end of each step
        n = stor.shape[0]
        hourly = (forcing["Rainf"] + forcing["Snowf"]).transpose("time", ...).values
        k = hourly.shape[0] // n
        precip = hourly[: n * k].reshape(n, k, *hourly.shape[1:]).mean(1)  # (n, site) means over each step
        flux = sum(out_e[v].transpose("time", ...).values for v in FLUX_NAMES)
        net = ((precip[1:] - flux[1:]) * em.dt).sum(0)
        resid = stor[-1] - stor[0] - net
        years = (n - 1) * em.dt / (365.25 * 86400)
        scores["water_residual"] = float(np.mean(np.abs(resid)) / years)
    scores["extrapolated"] = float(extrapolated)
    scores["clamped"] = float(clamped)
    return ds, scores


def spatial_check(em, world: xr.Dataset, variables=("swvl1", "stl1", "Qle"), spinup_years: int = 1, progress: bool = False):
    """The emulator against the physics on every land cell of a gridded world it never saw.

    world : from :func:`ailand.dust.world.make_world` (hourly forcing over whole years is
    best). Both models start from the physics' state spun up on the world's forcing.
    Returns a Dataset over ``(lat, lon)``: per variable ``rmse_<v>``, ``bias_<v>`` and
    ``acc_<v>`` of daily means (ACC about each cell's own mean), with units.
    """
    from ..dust.world import to_grid, world_columns

    cols = world_columns(world)
    daily, _ = side_by_side(em, cols, spinup_years=spinup_years, variables=variables, progress=progress)
    out = {}
    for v in variables:
        p, o = daily[v].sel(source="emulator"), daily[v].sel(source="physics")
        err = p - o
        an_p, an_o = p - o.mean("time"), o - o.mean("time")
        acc = (an_p * an_o).sum("time") / np.sqrt((an_p**2).sum("time") * (an_o**2).sum("time"))
        units = daily[v].attrs.get("units", "")
        for name, da, u in (("rmse", np.sqrt((err**2).mean("time")), units), ("bias", err.mean("time"), units), ("acc", acc, "-")):
            da = da.assign_coords(ilat=cols["ilat"], ilon=cols["ilon"])
            da.attrs = {"units": u, "long_name": f"{name} of daily {v}, emulator vs physics"}
            out[f"{name}_{v}"] = to_grid(da, world)
    return xr.Dataset(out, attrs={"note": "daily means; the emulator never saw this domain"})
