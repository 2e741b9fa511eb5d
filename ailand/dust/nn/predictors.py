"""Predictors of the neural-network dust emission model and the labelled training table.

The 15 predictors (:data:`PREDICTORS`) are local pixel values only (no neighbours: in the
host model each column is computed alone), in four groups:

* **wind**: ``wind_speed`` |U10| [m s-1]; ``wind_gust`` [m s-1] = U10 + 7.71 u*_m (the
  turbulent part of the IFS 10 m gust, u*_m = kappa U10 / ln(10 m / z0m) over the cell's
  momentum roughness); ``friction_velocity`` [m s-1] (the scheme's drag-partitioned soil
  friction velocity R u*); ``threshold_velocity`` [m s-1] (the scheme's threshold u*_t with
  the Fecan moisture factor); ``air_density`` [kg m-3];
* **static soil**: ``clay``, ``sand`` [-]; ``bare_soil_fraction`` = 1 - cveg [-] (the part of
  the cell without a vegetation canopy); ``orography_std`` [m];
* **seasonal soil**: ``roughness_length`` [m] (aeolian roughness z0a of the bare surface);
  ``albedo`` [-] (the land model's surface albedo, snow included); ``lai`` [m2 m-2];
* **state**: ``soil_moisture`` [m3 m-3] (top layer swvl1), ``snow_depth`` [m] (snow water
  equivalent sd), ``precipitation`` [kg m-2 s-1] (rain + snow).

The issue names 13 of them (wind 4, static 4, seasonal 3, state 2) and asks for 15: air
density (it enters the threshold and the flux) and precipitation (wet surface) are the two
added. Optional extra: ``u_excess_cubed`` = max(u* - u*_t, 0)^3 [m3 s-3]
(:data:`EXTRA_PREDICTORS`), the issue's "(u - u_t)^3".

:func:`build_table` puts the predictors of the land cells of a world, the target emission
and the dust source function into one labelled table over ``sample`` (one row per land cell
and time); :func:`check_table` refuses a table with missing predictors, wrong units,
values outside the physical ranges (the usual sign of wrong units) or NaN rows;
:func:`split_by_year` splits train / validation / test by year.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

__all__ = [
    "physics_forbids", "PREDICTORS", "PREDICTOR_GROUPS", "EXTRA_PREDICTORS", "PREDICTOR_RANGES", "TARGET_UNITS", "GUST_FACTOR",
    "predictor_units", "extract_predictors", "build_table", "concat_tables", "check_table", "split_by_year",
    "table_arrays",
]

#: name -> (units, long_name, group)
PREDICTORS: dict[str, tuple[str, str, str]] = {
    "wind_speed": ("m s-1", "10 m wind speed", "wind"),
    "wind_gust": ("m s-1", "10 m wind gust U10 + 7.71 u*_m (turbulent part of the IFS gust)", "wind"),
    "friction_velocity": ("m s-1", "soil friction velocity R u* (drag-partitioned, dust scheme)", "wind"),
    "threshold_velocity": ("m s-1", "threshold friction velocity u*_t with the Fecan moisture factor (dust scheme)", "wind"),
    "air_density": ("kg m-3", "near-surface air density PSurf / (R_d Tair)", "wind"),
    "clay": ("-", "soil clay fraction", "static soil"),
    "sand": ("-", "soil sand fraction", "static soil"),
    "bare_soil_fraction": ("-", "fraction of the cell without vegetation canopy, 1 - cveg", "static soil"),
    "orography_std": ("m", "standard deviation of the sub-grid orography", "static soil"),
    "roughness_length": ("m", "aeolian roughness length z0a of the bare surface", "seasonal soil"),
    "albedo": ("-", "surface albedo (land model, snow included)", "seasonal soil"),
    "lai": ("m2 m-2", "leaf area index (climatology)", "seasonal soil"),
    "soil_moisture": ("m3 m-3", "top-layer (0-7 cm) volumetric soil water swvl1 (land model)", "state"),
    "snow_depth": ("m", "snow water equivalent sd at the start of the step (land model; what the scheme's snow cover sees)", "state"),
    "precipitation": ("kg m-2 s-1", "precipitation rate Rainf + Snowf, mean over the step", "state"),
}
PREDICTOR_GROUPS = tuple(dict.fromkeys(v[2] for v in PREDICTORS.values()))

#: optional extra predictors
EXTRA_PREDICTORS: dict[str, tuple[str, str, str]] = {
    "u_excess_cubed": ("m3 s-3", "max(u* - u*_t, 0)^3, the (u - u_t)^3 of the seed's next steps", "wind"),
}

#: physically possible ranges [min, max] in the units above; values outside mean wrong units or broken data
PREDICTOR_RANGES: dict[str, tuple[float, float]] = {
    "wind_speed": (0.0, 80.0), "wind_gust": (0.0, 150.0), "friction_velocity": (0.0, 10.0),
    "threshold_velocity": (0.0, 10.0), "air_density": (0.5, 1.6), "clay": (0.0, 1.0), "sand": (0.0, 1.0),
    "bare_soil_fraction": (0.0, 1.0), "orography_std": (0.0, 3000.0), "roughness_length": (0.0, 10.0),
    "albedo": (0.0, 1.0), "lai": (0.0, 15.0), "soil_moisture": (0.0, 1.0), "snow_depth": (0.0, 50.0),
    "precipitation": (0.0, 0.1), "u_excess_cubed": (0.0, 1000.0),
}
TARGET_UNITS = "kg m-2 s-1"
GUST_FACTOR = 7.71  # C_ugn of the IFS 10 m gust (ECMWF IFS documentation, Part IV)


def _meta(name):
    if name in PREDICTORS:
        return PREDICTORS[name]
    if name in EXTRA_PREDICTORS:
        return EXTRA_PREDICTORS[name]
    raise ValueError(f"unknown predictor {name!r}; known: {list(PREDICTORS) + list(EXTRA_PREDICTORS)}")


def predictor_units(names: Sequence[str]) -> list[str]:
    """Units of ``names`` (predictors, extras, or ``dust_source`` = "-")."""
    return ["-" if n == "dust_source" else _meta(n)[0] for n in names]


def _snow_at_start(land: xr.Dataset) -> np.ndarray:
    """``(time, site)`` snow water equivalent [m] at the start of each step: the previous row's
    ``sd`` (the land output's ``snowc`` of a step is computed from it); the first row from its
    ``snowc`` (sd = 0.015 m x snowc below full cover, else max(sd, 0.015 m))."""
    from ...physics.constants import SNOW_COVER_SWE

    full = SNOW_COVER_SWE / 1000.0
    sd = land["sd"].transpose("time", "site").values
    sc0 = land["snowc"].transpose("time", "site").values[0]
    first = np.where(sc0 < 1.0, sc0 * full, np.maximum(sd[0], full))
    return np.concatenate([first[None], sd[:-1]], axis=0)


def extract_predictors(world: xr.Dataset, land: xr.Dataset, scheme=None, extra: Sequence[str] = (),
                       lai_scale: float = 1.0) -> xr.Dataset:
    """The predictors of every land cell and step, and the scheme's emission.

    world : :func:`ailand.dust.make_world`; land : :func:`ailand.dust.run_land` output with
    ``swvl1``, ``snowc``, ``sd`` and ``albedo`` (``run_land(world, outputs=("swvl1", "snowc",
    "sd", "albedo"))``); scheme : :class:`ailand.dust.DustEmission` (default parameters);
    extra : names of :data:`EXTRA_PREDICTORS` to add.

    Returns a Dataset over ``(time, site)`` (time = the land output's, end of each forcing
    step) with every predictor (float64, units and long names), ``emission_scheme`` [kg m-2
    s-1] (the physical scheme), the scheme's diagnostics ``scheme_snow_cover`` and
    ``scheme_bare_fraction`` [-] (not predictors: they say independently of the gate where
    the physics forbids emission), ``dust_source`` [-] and ``cell_area`` [m2] ``(site,)``,
    ``ilat``/``ilon`` coordinates.
    """
    from ..emission import DustEmission, air_density, friction_velocity
    from ..world import world_columns

    missing = [k for k in ("swvl1", "snowc", "sd", "albedo") if k not in land]
    if missing:
        raise ValueError(f"land output lacks {missing}; run the land model with "
                         "outputs=('swvl1', 'snowc', 'sd', 'albedo')")
    for k in extra:
        if k not in EXTRA_PREDICTORS:
            raise ValueError(f"unknown extra predictor {k!r}; known: {list(EXTRA_PREDICTORS)}")
    scheme = scheme or DustEmission()
    x = scheme.inputs(world, land, lai_scale)
    with torch.no_grad():
        flux, diag = scheme.flux(x, diagnostics=True)
    cols = world_columns(world)
    wind = torch.sqrt(x["Wind_E"] ** 2 + x["Wind_N"] ** 2)
    z0m = torch.as_tensor(cols["z0m"].values, dtype=wind.dtype)
    ustar_m = friction_velocity(wind, z0m.clamp(max=1.0))
    shape = flux.shape

    def full(t):
        return t.expand(shape).cpu().numpy()

    vals = {
        "wind_speed": full(wind), "wind_gust": full(wind + GUST_FACTOR * ustar_m),
        "friction_velocity": full(diag["ustar"]), "threshold_velocity": full(diag["ustar_t"]),
        "air_density": full(air_density(x["PSurf"], x["Tair"])),
        "clay": full(x["clay"]), "sand": full(x["sand"]), "bare_soil_fraction": full(1.0 - x["cveg"]),
        "orography_std": full(torch.as_tensor(cols["orog_std"].values, dtype=wind.dtype)),
        "roughness_length": full(x["z0a"]), "albedo": land["albedo"].transpose("time", "site").values,
        "lai": full(x["lai"]), "soil_moisture": full(x["swvl1"]), "snow_depth": _snow_at_start(land),
        "precipitation": (cols["Rainf"] + cols["Snowf"]).transpose("time", "site").values,
    }
    if "u_excess_cubed" in extra:
        vals["u_excess_cubed"] = full(torch.relu(diag["ustar"] - diag["ustar_t"]) ** 3)
    data = {}
    for k, v in vals.items():
        units, long_name, group = _meta(k)
        data[k] = xr.Variable(("time", "site"), np.asarray(v, dtype=np.float64), {"units": units, "long_name": long_name,
                                                                                   "group": group})
    data["emission_scheme"] = xr.Variable(("time", "site"), flux.cpu().numpy(), {
        "units": TARGET_UNITS, "long_name": "dust emission of the physical scheme (Kok et al. 2014)"})
    data["scheme_snow_cover"] = xr.Variable(("time", "site"), land["snowc"].transpose("time", "site").values, {
        "units": "-", "long_name": "snow cover fraction the scheme saw (land model snowc; diagnostic, not a predictor)"})
    data["scheme_bare_fraction"] = xr.Variable(("time", "site"), full(diag["bare"]), {
        "units": "-", "long_name": "the scheme's fraction open to the wind (diagnostic, not a predictor)"})
    data["dust_source"] = xr.Variable("site", cols["dust_source"].values, {"units": "-", "long_name": "dust source function S"})
    data["cell_area"] = xr.Variable("site", cols["cell_area"].values, {"units": "m2", "long_name": "grid-cell area"})
    return xr.Dataset(data, coords={"time": land["time"].values, "site": cols["site"].values,
                                    "ilat": ("site", cols["ilat"].values), "ilon": ("site", cols["ilon"].values),
                                    "lat": ("site", cols["lat"].values), "lon": ("site", cols["lon"].values)})


def build_table(world: xr.Dataset, land: xr.Dataset, target: xr.DataArray | np.ndarray, scheme=None,
                extra: Sequence[str] = (), stride: int = 1, lai_scale: float = 1.0) -> xr.Dataset:
    """The labelled training table of one world: one row per land cell and (every ``stride``-th) step.

    target : the emission to learn [kg m-2 s-1] on the world grid ``(time, lat, lon)`` at the
        land output's times (e.g. the emission analysis: analysed factor x prior emission);
        a DataArray with a ``units`` attribute must say ``kg m-2 s-1``.
    stride : keep every ``stride``-th step (1 = hourly).

    Returns a Dataset over ``sample`` with every predictor, ``target`` and
    ``emission_scheme`` [kg m-2 s-1], ``scheme_snow_cover``, ``scheme_bare_fraction``,
    ``dust_source`` [-], ``cell_area`` [m2], and coordinates ``time``,
    ``year``, ``lat``, ``lon``, ``ilat``, ``ilon`` (grid indices) of each row.
    """
    if int(stride) < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    pred = extract_predictors(world, land, scheme, extra, lai_scale)
    T = pred.sizes["time"]
    ny, nx = world.sizes["lat"], world.sizes["lon"]
    if isinstance(target, xr.DataArray):
        u = target.attrs.get("units")
        if u is not None and u != TARGET_UNITS:
            raise ValueError(f"target has units {u!r}; the emission must be in {TARGET_UNITS}")
        if "time" in target.dims:
            tt = target["time"].values
            if len(tt) != T or not np.array_equal(tt.astype("datetime64[ns]"), pred["time"].values.astype("datetime64[ns]")):
                raise ValueError(f"target times ({len(tt)}: {tt[0]} .. {tt[-1]}) differ from the land output times "
                                 f"({T}: {pred['time'].values[0]} .. {pred['time'].values[-1]}); give the target at the "
                                 "land model's (end of step) times")
            target = target.transpose("time", "lat", "lon")
        target = target.values
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (T, ny, nx):
        raise ValueError(f"target must be (time, lat, lon) = {(T, ny, nx)}, got {target.shape}")
    keep = np.arange(0, T, int(stride))
    j, i = pred["ilat"].values, pred["ilon"].values
    y = target[keep][:, j, i]  # (t, site)
    sub = pred.isel(time=keep)
    nt, ns = len(keep), pred.sizes["site"]
    t = np.repeat(sub["time"].values, ns)
    data = {}
    for k in sub.data_vars:
        v = sub[k]
        arr = v.values.reshape(-1) if v.dims == ("time", "site") else np.tile(v.values, nt)
        data[k] = xr.Variable("sample", arr, dict(v.attrs))
    data["target"] = xr.Variable("sample", y.reshape(-1), {"units": TARGET_UNITS, "long_name": "target dust emission"})
    coords = {
        "time": ("sample", t), "year": ("sample", pd.DatetimeIndex(t).year.to_numpy()),
        "lat": ("sample", np.tile(pred["lat"].values, nt), {"units": "degrees_north"}),
        "lon": ("sample", np.tile(pred["lon"].values, nt), {"units": "degrees_east"}),
        "ilat": ("sample", np.tile(j, nt)), "ilon": ("sample", np.tile(i, nt)),
    }
    ds = xr.Dataset(data, coords=coords)
    dt = float((world["time"].values[1] - world["time"].values[0]) / np.timedelta64(1, "s")) if world.sizes["time"] > 1 else 3600.0
    ds["step_seconds"] = xr.Variable("sample", np.full(ds.sizes["sample"], dt), {"units": "s", "long_name": "forcing step"})
    ds.attrs = {"title": "ailand dust NN training table (one row per land cell and step)",
                "world_seed": world.attrs.get("seed", ""), "stride": int(stride), "extra_predictors": ",".join(extra)}
    return ds


def concat_tables(tables: Sequence[xr.Dataset]) -> xr.Dataset:
    """Rows of several tables (e.g. one per year or season) in one table."""
    if not tables:
        raise ValueError("no tables to concatenate")
    out = xr.concat(list(tables), dim="sample", data_vars="all", coords="different", compat="equals", join="exact")
    out.attrs = dict(tables[0].attrs)
    return out


def check_table(table: xr.Dataset, names: Sequence[str], target: bool = True) -> None:
    """Refuse a table that cannot be used: ValueError naming the problem.

    * a predictor of ``names`` missing;
    * a predictor with a ``units`` attribute other than :data:`PREDICTORS`' (or none at all);
    * values outside :data:`PREDICTOR_RANGES` (e.g. soil moisture in percent, wind in km/h);
    * NaN/inf in any predictor (or the target), with the count and the first row's time and place.
    """
    if not isinstance(table, xr.Dataset) or "sample" not in table.dims:
        raise ValueError("the table must be an xarray.Dataset over 'sample' (ailand.dust.nn.build_table)")
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"the table lacks predictor(s) {missing}; the model needs {list(names)}")
    for n, u in zip(names, predictor_units(names)):
        got = table[n].attrs.get("units")
        if got != u:
            raise ValueError(f"predictor {n!r} has units {got!r}, expected {u!r}; convert it to {u}")
    cols = list(names) + (["target"] if target else [])
    if target and "target" not in table:
        raise ValueError("the table has no 'target' column (the emission to learn)")
    bad = np.zeros(table.sizes["sample"], dtype=bool)
    for n in cols:
        bad |= ~np.isfinite(np.asarray(table[n].values, dtype=float))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        which = [n for n in cols if not np.isfinite(float(table[n].values[k]))]
        where = ", ".join(f"{c}={table[c].values[k]}" for c in ("time", "lat", "lon") if c in table.coords)
        raise ValueError(f"the table has {int(bad.sum())} row(s) with NaN/inf values (first: row {k}, {where}, in {which}); "
                         "drop or fill them before training")
    for n in names:
        if n == "dust_source":
            lo, hi = 0.0, 1.0
        else:
            lo, hi = PREDICTOR_RANGES[n]
        a = np.asarray(table[n].values, dtype=float)
        if a.min() < lo or a.max() > hi:
            raise ValueError(f"predictor {n!r} ranges {a.min():.4g} .. {a.max():.4g} {predictor_units([n])[0]}, outside "
                             f"its physical range [{lo:g}, {hi:g}]: wrong units?")
    if target:
        y = np.asarray(table["target"].values, dtype=float)
        if y.min() < 0:
            raise ValueError(f"the target emission has negative values (min {y.min():.3g} {TARGET_UNITS})")


def split_by_year(table: xr.Dataset, test_year: int | None = None, val_fraction: float = 0.1, seed: int = 0):
    """Train / validation / test tables: the test year (default the last) alone; the other
    years' rows shuffled (seeded) into ``1 - val_fraction`` train and ``val_fraction``
    validation. Raises ValueError for a table of one year only."""
    if "year" not in table.coords:
        raise ValueError("the table has no 'year' coordinate (ailand.dust.nn.build_table)")
    years = np.unique(table["year"].values)
    if len(years) < 2:
        raise ValueError(f"the training table covers one year only ({years.tolist()}); the recipe trains on some years "
                         "and tests on another: build it from worlds of at least two (four in the seed) years")
    test_year = int(years[-1]) if test_year is None else int(test_year)
    if test_year not in years:
        raise ValueError(f"test_year {test_year} is not in the table's years {years.tolist()}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    is_test = table["year"].values == test_year
    rest = np.flatnonzero(~is_test)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1500]))
    perm = rng.permutation(rest)
    n_val = int(round(val_fraction * len(perm)))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return table.isel(sample=train), table.isel(sample=val), table.isel(sample=np.flatnonzero(is_test))


def table_arrays(table: xr.Dataset, names: Sequence[str], target: bool = True, check: bool = True):
    """``X (n, d)`` float64 predictors in the order of ``names`` (and ``y (n,)`` target [kg m-2 s-1])."""
    if check:
        check_table(table, names, target)
    X = np.stack([np.asarray(table[n].values, dtype=np.float64) for n in names], axis=1)
    if not target:
        return X
    return X, np.asarray(table["target"].values, dtype=np.float64)


def physics_forbids(table: xr.Dataset, params=None) -> np.ndarray:
    """``(n,)`` bool: rows where the dust scheme's physics forbids emission, from the scheme's
    own diagnostics (not from the gate's formulas): soil friction velocity <= threshold, top-layer
    soil water >= SM_MAX, snow cover fraction = 1, no bare soil open to the wind (full vegetation)."""
    from ..emission import dust_parameter_space

    p = dict(dust_parameter_space().defaults)
    p.update(params or {})
    return ((table["friction_velocity"].values <= table["threshold_velocity"].values)
            | (table["soil_moisture"].values >= p["SM_MAX"]) | (table["scheme_snow_cover"].values >= 1.0)
            | (table["scheme_bare_fraction"].values <= 0.0))
