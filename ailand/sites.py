"""Static per-site fields: soil texture, vegetation, LAI climatology and climate statistics.

The table lives in ``data/sites.csv`` (one row per site). :func:`load_sites` turns it into
an :class:`xarray.Dataset` with one dimension, ``site`` (coordinate = site names), and one
variable per column, each with ``units`` and ``long_name`` attributes.

Columns fall into two groups:

* **model statics** read by the physics: ``lat, lon, elevation, sand, clay, veg_type, cveg,
  lai_min, lai_max, lai_peak_doy`` (plus ``long_name`` and ``climate`` as labels);
* **climate statistics** read by the weather generator in :mod:`ailand.forcing`
  (``t_mean`` ... ``cloud_mean``).

The LAI climatology is one equation, :func:`lai_climatology`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from .params import DATA_DIR

SITE_TABLE = DATA_DIR / "sites.csv"

#: column -> (units, long_name). Every column of the table must be described here.
SITE_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("-", "site code (FLUXNET style)"),
    "long_name": ("-", "site description"),
    "climate": ("-", "climate class (Koppen)"),
    "lat": ("degrees_north", "latitude"),
    "lon": ("degrees_east", "longitude"),
    "elevation": ("m", "surface elevation above sea level"),
    "sand": ("-", "soil sand fraction"),
    "clay": ("-", "soil clay fraction"),
    "veg_type": ("-", "dominant vegetation type"),
    "cveg": ("-", "vegetation cover fraction"),
    "lai_min": ("m2 m-2", "minimum (dormant-season) leaf area index"),
    "lai_max": ("m2 m-2", "maximum (peak-season) leaf area index"),
    "lai_peak_doy": ("day", "day of year of peak leaf area index"),
    "t_mean": ("degC", "annual mean 2 m air temperature"),
    "t_amp_seasonal": ("K", "seasonal temperature amplitude (half warmest minus coldest month)"),
    "t_peak_doy": ("day", "day of year of the seasonal temperature maximum"),
    "t_range_diurnal": ("K", "mean diurnal temperature range (daily max minus min)"),
    "t_noise": ("K", "standard deviation of synoptic temperature anomalies"),
    "precip_annual": ("mm", "annual total precipitation"),
    "wet_day_fraction": ("-", "annual mean fraction of days with precipitation"),
    "wet_peak_doy": ("day", "day of year of the wet-season peak"),
    "wet_concentration": ("-", "von Mises concentration of precipitation seasonality (0 = uniform)"),
    "rh_mean": ("-", "annual mean relative humidity (fraction)"),
    "wind_mean": ("m s-1", "annual mean wind speed"),
    "wind_dir": ("degree", "prevailing wind direction (direction the wind blows from, clockwise from north)"),
    "gust_rate": ("d-1", "mean rate of gusty (high-wind) episodes"),
    "gust_factor": ("-", "wind-speed multiplier at the peak of a gusty episode"),
    "cloud_mean": ("-", "annual mean cloud fraction"),
}

STRING_COLUMNS = ("name", "long_name", "climate", "veg_type")

VEG_TYPES = (
    "deciduous_broadleaf",
    "evergreen_needleleaf",
    "deciduous_needleleaf",
    "evergreen_broadleaf",
    "tundra",
    "grassland",
    "shrubland",
    "savanna",
    "desert",
    "crops",
)


def _read_table(path: str | Path | None = None) -> pd.DataFrame:
    path = Path(path) if path is not None else SITE_TABLE
    table = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, skipinitialspace=True)
    missing = [c for c in SITE_FIELDS if c not in table.columns]
    if missing:
        raise ValueError(f"site table {path} lacks columns {missing}")
    unknown = [c for c in table.columns if c not in SITE_FIELDS]
    if unknown:
        raise ValueError(f"site table {path} has undocumented columns {unknown}; describe them in SITE_FIELDS")
    if table["name"].duplicated().any():
        raise ValueError(f"site table {path} repeats site names {sorted(table['name'][table['name'].duplicated()])}")
    return table.set_index("name")


def _parse_names(names, valid: list[str]) -> list[str]:
    """None/"all" -> all sites; "A,B" or ["A", "B"] -> those, in that order."""
    if names is None or (isinstance(names, str) and names.strip().lower() == "all"):
        return list(valid)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; valid sites are {valid} (or 'all')")
    if len(set(names)) != len(names):
        raise ValueError(f"site list {names} repeats a site")
    if not names:
        raise ValueError(f"no sites selected; valid sites are {valid} (or 'all')")
    return names


def site_names(path: str | Path | None = None) -> list[str]:
    """Names of all sites in the table, in table order."""
    return list(_read_table(path).index)


def load_sites(names: str | Iterable[str] | None = None, path: str | Path | None = None) -> xr.Dataset:
    """Static fields of the chosen sites.

    Parameters
    ----------
    names : None or "all" (every site), a list of names, or a comma-separated string
        such as ``"FR-Fon,FI-Hyy"``. Sites come back in the order asked for.
    path : optional alternative site table with the same columns as ``data/sites.csv``.

    Returns
    -------
    xarray.Dataset with dim ``site`` (coordinate = names, shape ``(n_site,)``) and one
    variable per table column (``lat``, ``sand``, ``veg_type``, ...), each with ``units``
    and ``long_name``. Numeric columns are float64 data variables; the string labels
    ``long_name``, ``climate`` and ``veg_type`` are object-dtype non-index coordinates along
    ``site`` (``ds["veg_type"]`` works as usual, and ``ds.mean()`` or ``resample`` never trip
    over strings).

    Raises
    ------
    ValueError if a name is unknown (the message lists the valid names).
    """
    table = _read_table(path)
    chosen = _parse_names(names, list(table.index))
    table = table.loc[chosen]
    ds = xr.Dataset(coords={"site": ("site", np.array(chosen, dtype=object))})
    ds["site"].attrs = {"long_name": SITE_FIELDS["name"][1], "units": "-"}
    for col in table.columns:
        units, long_name = SITE_FIELDS[col]
        values = table[col].to_numpy()
        values = values.astype(object) if col in STRING_COLUMNS else values.astype(np.float64)
        ds[col] = xr.DataArray(values, dims="site", attrs={"units": units, "long_name": long_name})
    ds.attrs = {"title": "ailand site statics", "source": str(path or SITE_TABLE)}
    return ds.set_coords([c for c in STRING_COLUMNS if c in ds])  # labels: kept out of reductions


def lai_climatology(sites: xr.Dataset, dayofyear) -> np.ndarray:
    """Seasonal leaf area index of each site.

    w = ((1 + cos(2 pi (doy - lai_peak_doy) / 365.25)) / 2) ** 1.5
    lai = lai_min + (lai_max - lai_min) * w

    Parameters
    ----------
    sites : Dataset with ``lai_min``, ``lai_max``, ``lai_peak_doy`` along ``site``
        (from :func:`load_sites`, or a forcing Dataset that carries the statics).
    dayofyear : array (T,) of day of year (1..366, may be fractional), or datetime64
        values (converted to their integer day of year).

    Returns
    -------
    numpy array (T, n_site) of LAI [m2 m-2].
    """
    doy = np.asarray(dayofyear)
    if np.issubdtype(doy.dtype, np.datetime64):
        doy = pd.DatetimeIndex(doy.ravel()).day_of_year.to_numpy()
    doy = np.asarray(doy, dtype=np.float64).reshape(-1, 1)
    lai_min = np.asarray(sites["lai_min"].values, dtype=np.float64)[None, :]
    lai_max = np.asarray(sites["lai_max"].values, dtype=np.float64)[None, :]
    peak = np.asarray(sites["lai_peak_doy"].values, dtype=np.float64)[None, :]
    w = ((1.0 + np.cos(2.0 * np.pi * (doy - peak) / 365.25)) / 2.0) ** 1.5
    return lai_min + (lai_max - lai_min) * w


# relative (multiplicative, lognormal sigma) and absolute (additive, normal sigma) jitter
# of the site fields for synthetic training sites; the rest (lat, lon, vegetation type,
# seasonal timing) stay those of the parent site
_JITTER_REL = {"lai_min": 0.3, "lai_max": 0.25, "precip_annual": 0.35, "wind_mean": 0.2, "elevation": 0.3}
_JITTER_ABS = {
    "sand": 0.12, "clay": 0.06, "cveg": 0.1, "t_mean": 2.0, "t_amp_seasonal": 1.5, "t_range_diurnal": 1.5,
    "wet_day_fraction": 0.05, "rh_mean": 0.05, "cloud_mean": 0.07,
}
_LIMITS = {
    "sand": (0.03, 0.92), "clay": (0.02, 0.6), "cveg": (0.01, 0.99), "wet_day_fraction": (0.005, 0.8),
    "rh_mean": (0.1, 0.95), "cloud_mean": (0.02, 0.95), "t_range_diurnal": (2.0, 20.0), "t_amp_seasonal": (0.5, 30.0),
}


def perturbed_sites(parents, copies: int = 3, seed: int = 0, scale: float = 1.0) -> xr.Dataset:
    """Synthetic sites: ``copies`` jittered versions of each parent site, named ``"FR-Fon~1"``...

    Used to widen the range of climates and soils an emulator is trained on (so that it
    interpolates between the real sites instead of memorising them). Soil texture, vegetation
    cover, LAI, temperature, precipitation, humidity, wind and cloud are perturbed (lognormal
    for positive amounts, normal for fractions and temperatures; ``scale`` multiplies all
    spreads); position, vegetation type and seasonal timing are the parent's. Each copy has
    its own name, so :func:`ailand.synthetic_forcing` draws its own weather for it.

    parents : names (or a Dataset from :func:`load_sites`). Returns a Dataset like
    :func:`load_sites` with ``copies * n_parent`` sites and a ``parent`` coordinate.
    """
    base = parents if isinstance(parents, xr.Dataset) else load_sites(parents)
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, copies + 1):
        ds = base.copy(deep=True)
        n = ds.sizes["site"]
        for v, s in _JITTER_REL.items():
            if v in ds:
                ds[v] = ds[v] * np.exp(scale * s * rng.standard_normal(n))
        for v, s in _JITTER_ABS.items():
            if v in ds:
                x = ds[v] + scale * s * rng.standard_normal(n)
                lo, hi = _LIMITS.get(v, (-np.inf, np.inf))
                ds[v] = x.clip(lo, hi)
        if "clay" in ds and "sand" in ds:
            ds["clay"] = np.minimum(ds["clay"], 0.95 - ds["sand"])
        if "lai_max" in ds and "lai_min" in ds:
            ds["lai_max"] = np.maximum(ds["lai_max"], ds["lai_min"] + 0.05)
        names = [f"{s}~{k}" for s in base["site"].values]
        ds = ds.assign_coords(site=np.array(names, dtype=object), parent=("site", base["site"].values))
        for v in base.data_vars:
            ds[v].attrs = dict(base[v].attrs)
        out.append(ds)
    res = xr.concat(out, dim="site")
    res.attrs = dict(base.attrs, note=f"synthetic sites: {copies} jittered copies per parent (seed {seed}, scale {scale})")
    return res


def space_filling_sites(n: int, seed: int = 0, prefix: str = "SF") -> xr.Dataset:
    """``n`` synthetic sites that fill the climate and soil space of the site generator.

    Where :func:`perturbed_sites` jitters copies of the real sites (so an emulator trained on
    them still sees only the soils and climates near those eight or ten), this draws a
    Latin hypercube (:class:`scipy.stats.qmc.LatinHypercube`, any ``n``) over the site generator's own
    parameters and maps each unit coordinate onto a range, so that the training sites cover
    sandy to clayey soils, bare to closed canopies, arctic to tropical temperatures and 50 to
    3000 mm of annual precipitation evenly, not only around the real sites:

    * soil: ``sand`` U(0.03, 0.92), ``clay`` U(0.02, min(0.6, 0.95 - sand));
    * place: ``lat`` U(-45, 72) degrees (radiation and day length), ``lon`` U(-180, 180),
      ``elevation`` U(0, 1500) m;
    * temperature: ``t_mean`` = 27 - 0.6 max(|lat| - 15, 0) + U(-7, 7) degC (the real sites'
      latitude gradient with a wide band around it), ``t_amp_seasonal`` 0.5 + U(0, 1) x
      (0.45 |lat| + 2) K, ``t_peak_doy`` 200 (north) or 20 (south) + U(-15, 15),
      ``t_range_diurnal`` U(5, 15) K, ``t_noise`` U(0.5, 4.5) K;
    * water: ``precip_annual`` log-uniform 50..3000 mm; with the wetness w = log(P/10) /
      log(300) in [0, 1]: ``wet_day_fraction`` 0.7 w x U(0.6, 1.4), ``rh_mean`` 0.2 + 0.65 w
      +- 0.1, ``cloud_mean`` 0.12 + 0.6 w +- 0.1 (clipped to the jitter limits),
      ``wet_peak_doy`` U(0, 365), ``wet_concentration`` U(0, 4);
    * vegetation: ``veg_type`` uniform over the vegetated :data:`VEG_TYPES` (desert below 120 mm); ``cveg``
      and ``lai_max`` scale with w (desert: sparse), ``lai_min`` U(0.05, 0.6) x ``lai_max``,
      ``lai_peak_doy`` = ``t_peak_doy`` + U(-30, 40);
    * wind: ``wind_mean`` U(2, 6.5) m/s, ``wind_dir`` U(0, 360), ``gust_rate`` U(0.01, 0.15)
      d-1, ``gust_factor`` U(1.6, 2.8).

    Sites are named ``SF001``... (``prefix``); each draws its own weather in
    :func:`ailand.synthetic_forcing`. Same ``seed`` -> same sites. Returns a Dataset like
    :func:`load_sites` (``climate`` = "space-filling").
    """
    from scipy.stats import qmc

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dims = 27
    u = qmc.LatinHypercube(dims, seed=seed).random(n)  # (n, dims), each column stratified
    col = iter(range(dims))

    def U(lo, hi):
        return lo + (hi - lo) * u[:, next(col)]

    sand = U(0.03, 0.92)
    clay = 0.02 + u[:, next(col)] * (np.minimum(0.6, 0.95 - sand) - 0.02)
    lat = U(-45.0, 72.0)
    lon = U(-180.0, 180.0)
    elevation = U(0.0, 1500.0)
    t_mean = 27.0 - 0.6 * np.maximum(np.abs(lat) - 15.0, 0.0) + U(-7.0, 7.0)
    t_amp = 0.5 + u[:, next(col)] * (0.45 * np.abs(lat) + 2.0)
    t_peak = np.where(lat >= 0, 200.0, 20.0) + U(-15.0, 15.0)
    precip = 50.0 * np.exp(u[:, next(col)] * np.log(3000.0 / 50.0))
    w = np.clip(np.log(precip / 10.0) / np.log(300.0), 0.0, 1.0)
    wet = np.clip(0.7 * w * U(0.6, 1.4), *_LIMITS["wet_day_fraction"])
    rh = np.clip(0.2 + 0.65 * w + U(-0.1, 0.1), *_LIMITS["rh_mean"])
    cloud = np.clip(0.12 + 0.6 * w + U(-0.1, 0.1), *_LIMITS["cloud_mean"])
    plants = [v for v in VEG_TYPES if v != "desert"]
    kind = np.floor(u[:, next(col)] * len(plants)).astype(int).clip(0, len(plants) - 1)
    veg = np.array([plants[k] for k in kind], dtype=object)
    veg[precip < 120.0] = "desert"
    desert = veg == "desert"
    cveg = np.where(desert, U(0.01, 0.1), np.clip(0.3 + 0.69 * w * U(0.7, 1.3), 0.3, 0.99))
    lai_max = np.where(desert, U(0.05, 0.4), 0.5 + 6.5 * w * U(0.5, 1.2))
    lai_min = U(0.05, 0.6) * lai_max
    lai_peak = np.mod(t_peak + U(-30.0, 40.0), 365.0)
    fields = {
        "lat": lat, "lon": lon, "elevation": elevation, "sand": sand, "clay": clay, "cveg": cveg,
        "lai_min": lai_min, "lai_max": lai_max, "lai_peak_doy": lai_peak, "t_mean": t_mean,
        "t_amp_seasonal": np.clip(t_amp, *_LIMITS["t_amp_seasonal"]), "t_peak_doy": t_peak,
        "t_range_diurnal": U(5.0, 15.0), "t_noise": U(0.5, 4.5), "precip_annual": precip,
        "wet_day_fraction": wet, "wet_peak_doy": U(0.0, 365.0), "wet_concentration": U(0.0, 4.0),
        "rh_mean": rh, "wind_mean": U(2.0, 6.5), "wind_dir": U(0.0, 360.0), "gust_rate": U(0.01, 0.15),
        "gust_factor": U(1.6, 2.8), "cloud_mean": cloud,
    }
    names = [f"{prefix}{i + 1:03d}" for i in range(n)]
    ds = xr.Dataset(coords={"site": ("site", np.array(names, dtype=object))})
    ds["site"].attrs = {"long_name": SITE_FIELDS["name"][1], "units": "-"}
    for c in SITE_FIELDS:
        if c in ("name",):
            continue
        if c == "long_name":
            vals = np.array([f"space-filling synthetic site {i + 1}" for i in range(n)], dtype=object)
        elif c == "climate":
            vals = np.array(["space-filling"] * n, dtype=object)
        elif c == "veg_type":
            vals = veg
        else:
            vals = np.asarray(fields[c], dtype=np.float64)
        ds[c] = xr.DataArray(vals, dims="site", attrs={"units": SITE_FIELDS[c][0], "long_name": SITE_FIELDS[c][1]})
    ds.attrs = {"title": "ailand site statics", "source": f"space_filling_sites(n={n}, seed={seed})"}
    return ds.set_coords([c for c in STRING_COLUMNS if c in ds])
