"""A gridded dust world: static fields and spatially coherent hourly weather on lat-lon cells.

:func:`make_world` builds a seeded toy of a North Africa - Middle East - Europe region
(default 5-65N, 24W-66E at 1.5 degrees: 40 x 60 = 2400 cells, ~1600 of them land) as one
labelled :class:`xarray.Dataset`:

* **forcing** ``(time, lat, lon)``, float64, with the project's ecLand offline names and SI
  units (:data:`ailand.forcing.FORCING_VARIABLES`: ``Tair, Qair, Wind_E, Wind_N, SWdown,
  LWdown, Rainf, Snowf, PSurf``) over land *and* sea (the aerosol model needs winds and
  rain everywhere); same time conventions as :mod:`ailand.forcing`;
* **statics** ``(lat, lon)`` with the site-field names of :mod:`ailand.sites` (``elevation,
  sand, clay, cveg, lai_min, lai_max, lai_peak_doy`` and the string coordinate
  ``veg_type``; climate statistics ``t_mean ... cloud_mean``) plus the dust fields ``lsm``
  (land fraction), ``cell_area``, ``orog_std``, ``z0m``, ``z0a`` (aeolian roughness of
  the bare surface), ``dust_source`` (preferential source map), ``urban``.

:func:`world_columns` turns the land cells into the ``(time, site)`` forcing that
:class:`ailand.ToyEcLand` runs unchanged (each land cell is a site; columns are
independent); :func:`to_grid` puts any ``site`` result back on the grid.

Weather (all vectorised over the grid, per time chunk)
------------------------------------------------------
* **pressure**: climatological centres (Azores high, Icelandic low, Saharan and Arabian
  heat lows, Libyan winter high, Siberian high) plus moving synoptic systems drawn as a
  seasonal Poisson process: Atlantic-European cyclones and migratory anticyclones,
  Mediterranean and Saharan (Sharav) cyclones, Harmattan-surge highs, African easterly
  waves. Each is a Gaussian anomaly with a genesis time, lifetime (sin^2 envelope),
  radius, amplitude and a constant drift.
* **wind**: surface wind from the pressure gradient (geostrophic, turned towards low
  pressure and slowed by friction, faded out in the deep tropics), plus NE trades /
  Harmattan north of the Inter-Tropical Discontinuity and the SW monsoon south of it
  (ITD from ~6N in January to ~21N in August), the Somali jet, a mesoscale noise field
  (~250 km, AR(1) ~6 h), convective outflows (haboobs: radial gust fronts in the Sahel
  summer and the Middle East spring, with a rain core) and Shamal pulses; a diurnal cycle
  over land (afternoon mixing, morning low-level-jet breakdown in the deserts) and
  orographic slowing.
* **precipitation**: a climatological mean rate (tropical monsoon belt with a strong
  August peak, extratropical rain with a Mediterranean winter peak, orographic
  enhancement) modulated by a latent field that combines the synoptic lows and a
  spatio-temporal noise field; rain falls where that field exceeds the quantile matching
  the wet-hour fraction, so rain areas are coherent and the mean is about the climatology.
  Phase split by :func:`ailand.forcing.split_precipitation`.
* **cloud, temperature, humidity, radiation**: cloud from the same latent field;
  seasonal + diurnal temperature with warm advection in southerly flow and synoptic
  noise; relative humidity tied to cloud; SWdown from solar geometry and cloud
  (Kasten & Czeplak), LWdown by Prata (1996) and cloud.

Reproducibility: everything is drawn from ``numpy.random.SeedSequence(seed)``; the same
arguments give the same world bit for bit. Statics depend only on the grid and the seed.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import gaussian_filter, maximum_filter, minimum_filter
from scipy.special import ndtr, ndtri

from ..forcing import (
    FORCING_VARIABLES,
    STEFAN_BOLTZMANN,
    _doy,
    _orbit,
    _seasonality,
    _time_axis,
    saturation_vapour_pressure,
    specific_humidity,
    split_precipitation,
)
from ..sites import SITE_FIELDS, VEG_TYPES
from . import geography as geo
from .grid import EARTH_RADIUS, LatLonGrid

__all__ = [
    "DEFAULT_REGION", "STATIC_FIELDS", "make_world", "make_statics", "world_columns", "to_grid",
    "validate_world", "world_grid",
]

#: default region: (lat_min, lat_max), (lon_min, lon_max) of the outer cell faces, cell size [deg]
DEFAULT_REGION = {"lat_range": (5.0, 65.0), "lon_range": (-24.0, 66.0), "resolution": 1.5}

#: static field -> (units, long_name); the site-table names come from ailand.sites
STATIC_FIELDS: dict[str, tuple[str, str]] = {
    "lsm": ("-", "land fraction of the cell"),
    "cell_area": ("m2", "grid-cell area"),
    **{k: SITE_FIELDS[k] for k in (
        "elevation", "sand", "clay", "cveg", "lai_min", "lai_max", "lai_peak_doy", "t_mean", "t_amp_seasonal",
        "t_peak_doy", "t_range_diurnal", "t_noise", "precip_annual", "rh_mean", "cloud_mean",
    )},
    "orog_std": ("m", "standard deviation of the sub-grid orography"),
    "z0m": ("m", "momentum roughness length of the cell (vegetation, urban, orography)"),
    "z0a": ("m", "aeolian roughness length of the bare surface (non-erodible elements); 1e-2 where none is open"),
    "dust_source": ("-", "preferential dust source function S in [0, 1] (Ginoux 2001 topographic lows + hotspots)"),
    "urban": ("-", "urban fraction of the cell"),
    "continentality": ("-", "large-scale land fraction around the cell (0 open sea .. 1 deep continent)"),
    "precip_tropical": ("mm", "annual precipitation of the tropical monsoon component"),
    "precip_extratropical": ("mm", "annual precipitation of the extratropical component"),
}

ARID_TYPES = ("desert", "shrubland", "savanna", "grassland")
_Z0M_BY_TYPE = {
    "desert": 0.005, "shrubland": 0.05, "savanna": 0.08, "grassland": 0.03, "crops": 0.08, "tundra": 0.02,
    "deciduous_broadleaf": 1.5, "evergreen_needleleaf": 1.2, "deciduous_needleleaf": 1.0, "evergreen_broadleaf": 2.0,
    "water": 2e-4,
}
_N_SUB = 5  # sub-grid points per cell side for land fraction and orography statistics


def _streams(seed, tag: int, names):
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    ss = np.random.SeedSequence([int(seed), tag])
    return {k: np.random.default_rng(s) for k, s in zip(names, ss.spawn(len(names)))}


def _filtered_noise(rng, shape, sigma) -> np.ndarray:
    """White noise of ``shape`` filtered by a Gaussian of ``sigma`` cells over its last two
    axes, drawn on a domain padded by 3 sigma so that the variance is the same everywhere
    (edge handling of the filter would inflate it at the borders), then cropped."""
    pad = int(np.ceil(3.0 * sigma)) + 1
    big = rng.standard_normal(tuple(shape[:-2]) + (shape[-2] + 2 * pad, shape[-1] + 2 * pad))
    sig = (0,) * (len(shape) - 2) + (sigma, sigma)
    return gaussian_filter(big, sig, mode="wrap")[..., pad:-pad, pad:-pad]


def _smooth(rng, shape, sigma) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation (Gaussian-filtered white noise)."""
    f = _filtered_noise(rng, shape, sigma)
    return (f - f.mean()) / max(f.std(), 1e-12)


def world_grid(lat_range=DEFAULT_REGION["lat_range"], lon_range=DEFAULT_REGION["lon_range"],
               resolution: float = DEFAULT_REGION["resolution"]) -> LatLonGrid:
    """The :class:`LatLonGrid` of a region: outer faces ``lat_range``/``lon_range`` [deg],
    cells of ``resolution`` degrees (the ranges must hold a whole number of cells)."""
    res = float(resolution)
    if not 0.1 <= res <= 10:
        raise ValueError(f"resolution must be between 0.1 and 10 degrees, got {resolution}")
    out = []
    for name, (a, b), lim in (("lat_range", lat_range, 90), ("lon_range", lon_range, 360)):
        a, b = float(a), float(b)
        if not (b > a and abs(a) <= lim and abs(b) <= lim):
            raise ValueError(f"{name} must be (min, max) with min < max inside +-{lim} degrees, got {(a, b)}")
        n = (b - a) / res
        if abs(n - round(n)) > 1e-6 or round(n) < 2:
            raise ValueError(f"{name} {(a, b)} must hold a whole number (>= 2) of {res:g}-degree cells")
        out.append(a + res * (np.arange(int(round(n))) + 0.5))
    return LatLonGrid(out[0], out[1])


# ---------------------------------------------------------------------------------------
# static fields
# ---------------------------------------------------------------------------------------


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _precip_components(lat, lon, elevation, cont, noise):
    """Annual precipitation [mm] of the tropical and extratropical components, and their
    seasonality (peak day of year, von Mises concentration)."""
    phi_c = 6.0 - 1.5 * _sigmoid((lon - 10.0) / 5.0)  # the rain belt sits further south east of Lake Chad
    east_taper = np.where(lon > 42.0, np.exp(-(((lon - 42.0) / 6.0) ** 2)), 1.0)
    p_trop = 1700.0 * np.exp(-(((lat - phi_c) / 7.0) ** 2)) * east_taper
    central_asia = np.exp(-(((lat - 40.0) / 5.0) ** 2) - ((lon - 60.0) / 9.0) ** 2)
    p_mid = 900.0 * _sigmoid((lat - 35.0) / 2.3) * (1.0 - 0.55 * cont) * (1.0 - 0.75 * central_asia)
    oro = 1.0 + 0.4 * np.clip(elevation, 0.0, None) / 1000.0
    wet = np.exp(0.25 * noise - 0.03)
    p_trop, p_mid = p_trop * oro * wet + 2.0, p_mid * oro * wet + 3.0
    peak_trop = np.clip(225.0 - 2.0 * (17.0 - lat), 195.0, 230.0)
    kappa_trop = np.clip(0.5 + 0.3 * (lat - 5.0), 0.3, 4.0)
    peak_mid = np.where(lat < 45.0, 15.0, 195.0)
    kappa_mid = np.where(lat < 45.0, np.clip((45.0 - lat) / 7.0, 0.0, 1.3), 0.5 * cont)
    return p_trop, p_mid, (peak_trop, kappa_trop), (peak_mid, kappa_mid)


def make_statics(
    lat_range=DEFAULT_REGION["lat_range"],
    lon_range=DEFAULT_REGION["lon_range"],
    resolution: float = DEFAULT_REGION["resolution"],
    seed: int = 0,
    geography: Mapping | None = None,
) -> xr.Dataset:
    """Static fields of a gridded world (no weather).

    Parameters
    ----------
    lat_range, lon_range : outer cell faces [degrees]; resolution : cell size [degrees].
    seed : non-negative int (noise in relief, rainfall climate, soils, vegetation, roughness).
    geography : optional overrides of the shapes in :mod:`ailand.dust.geography`, a dict
        with any of ``seas``, ``islands``, ``relief``, ``cities``, ``hotspots``.

    Returns
    -------
    Dataset with dims ``(lat, lon)``: every field of :data:`STATIC_FIELDS` (float64, with
    ``units``/``long_name``) and ``veg_type`` (object) as a coordinate. Sea cells have
    ``lsm < 0.5`` and ``veg_type = "water"``; their land fields are placeholders.
    """
    grid = world_grid(lat_range, lon_range, resolution)
    g = {"seas": geo.SEAS, "islands": geo.ISLANDS, "relief": geo.RELIEF, "cities": geo.CITIES, "hotspots": geo.HOTSPOTS}
    unknown = set(geography or {}) - set(g)
    if unknown:
        raise ValueError(f"unknown geography keys {sorted(unknown)}; valid: {sorted(g)}")
    g.update(geography or {})
    rng = _streams(seed, 0, ("relief", "precip", "soil", "veg", "z0"))
    ny, nx = grid.shape
    res = grid.dlat
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")

    # ---- land fraction and orography on a sub-grid ----------------------------------
    sub_lat = grid.lat_edges[0] + res * (np.arange(ny * _N_SUB) + 0.5) / _N_SUB
    sub_lon = grid.lon_edges[0] + grid.dlon * (np.arange(nx * _N_SUB) + 0.5) / _N_SUB
    slat, slon = np.meshgrid(sub_lat, sub_lon, indexing="ij")
    sea = np.zeros(slat.shape, dtype=bool)
    for poly in g["seas"].values():
        sea |= geo.points_in_polygon(slon, slat, poly)
    for poly in g["islands"].values():
        sea &= ~geo.points_in_polygon(slon, slat, poly)
    land_sub = ~sea
    big = geo.relief(slat, slon, g["relief"])
    africa = (slat < 36.0) & (slon < 34.0)
    arabia = (slat < 33.0) & (slon >= 34.0) & (slon < 56.0)
    base = np.where(africa, 380.0, np.where(arabia, np.clip(700.0 - 30.0 * (slon - 38.0), 50.0, 700.0), 160.0))
    hills = _smooth(rng["relief"], slat.shape, 1.5)
    h_sub = np.where(land_sub, np.maximum(base + big + (50.0 + 0.25 * np.abs(big)) * hills, -120.0), 0.0)

    def block(a):
        return a.reshape(ny, _N_SUB, nx, _N_SUB)

    nland = block(land_sub).sum(axis=(1, 3))
    lsm = nland / _N_SUB**2
    hsum = block(h_sub).sum(axis=(1, 3))
    elevation = np.where(nland > 0, hsum / np.maximum(nland, 1), 0.0)
    dev = block(np.where(land_sub, h_sub, 0.0)) - elevation[:, None, :, None]
    orog_std = np.sqrt((block(land_sub) * dev**2).sum(axis=(1, 3)) / np.maximum(nland, 1))
    land = lsm >= 0.5
    elevation = np.where(land, elevation, 0.0)
    orog_std = np.where(land, orog_std, 0.0)

    # ---- climate ------------------------------------------------------------------------
    cont = np.clip(gaussian_filter(lsm, 6.0 / res, mode="nearest"), 0.0, 1.0)
    p_noise = _smooth(rng["precip"], (ny, nx), 2.0)
    p_trop, p_mid, _, _ = _precip_components(lat2, lon2, elevation, cont, p_noise)
    precip = p_trop + p_mid
    t_lat = np.interp(lat2, [0, 10, 20, 30, 40, 50, 60, 70], [27.0, 27.5, 26.0, 21.0, 15.0, 9.0, 3.0, -3.0])
    t_mean = t_lat - 6.5e-3 * elevation
    amp_lat = np.interp(lat2, [0, 10, 20, 30, 40, 50, 60, 70], [1.0, 2.5, 6.0, 8.5, 9.0, 9.0, 10.0, 12.0])
    t_amp = amp_lat * (0.35 + 0.85 * cont)
    t_peak = 200.0 + 20.0 * (1.0 - cont) - 65.0 * np.clip((20.0 - lat2) / 6.0, 0.0, 1.0)
    aridity = np.exp(-precip / 400.0)
    t_dtr = 3.0 + 7.0 * cont + 6.0 * cont * aridity
    t_noise = 0.8 + 3.2 * np.clip((lat2 - 10.0) / 50.0, 0.0, 1.0)
    rh_mean = np.where(land, np.clip(0.15 + 0.65 * (1.0 - np.exp(-precip / 500.0)), 0.12, 0.85), 0.75)
    cloud_mean = np.clip(0.06 + 0.6 * (1.0 - np.exp(-precip / 600.0)), 0.05, 0.8)

    # ---- cities, vegetation --------------------------------------------------------------
    urban = np.zeros((ny, nx))
    for la, lo, frac in g["cities"].values():
        if grid.contains(la, lo):
            j, i = grid.index(la, lo)
            urban[j[0], i[0]] = max(urban[j[0], i[0]], frac)
    urban = np.where(land, urban, 0.0)
    forest_noise = _smooth(rng["veg"], (ny, nx), 1.0)
    veg = np.full((ny, nx), "crops", dtype=object)
    temperate = (lat2 >= 20.0) & (precip >= 350.0)
    veg[temperate & (forest_noise > 0.35)] = "deciduous_broadleaf"
    veg[temperate & ((lat2 > 57.0) | (elevation > 1600.0)) & (forest_noise > -0.3)] = "evergreen_needleleaf"
    veg[temperate & (lat2 < 44.0) & (t_mean > 12.0) & (precip < 550.0)] = "shrubland"
    veg[(lat2 >= 20.0) & (precip < 350.0)] = np.where(lat2[(lat2 >= 20.0) & (precip < 350.0)] > 44.0, "grassland", "shrubland")
    veg[(lat2 < 20.0) & (lon2 < 52.0)] = np.where(precip[(lat2 < 20.0) & (lon2 < 52.0)] < 1500.0, "savanna", "evergreen_broadleaf")
    veg[(lat2 < 20.0) & (lon2 >= 52.0)] = "shrubland"
    veg[(lat2 > 60.0) & (t_mean < -3.0)] = "tundra"
    veg[precip < 150.0] = "desert"
    veg[~land] = "water"
    odd = set(veg[land]) - set(VEG_TYPES)
    if odd:  # the land model knows only the site table's vegetation types
        raise RuntimeError(f"internal: vegetation types {sorted(odd)} are not in ailand.sites.VEG_TYPES")
    cveg = 0.95 * (1.0 - np.exp(-((precip / 450.0) ** 1.3)))
    cveg = np.where(veg == "crops", np.maximum(cveg, 0.6), cveg) * (1.0 - urban)
    cveg = np.where(land, np.clip(cveg, 0.01, 0.98), 0.0)
    lai_max = 0.08 + 5.2 * cveg**1.6
    evergreen = np.isin(veg, ("evergreen_needleleaf", "evergreen_broadleaf"))
    seasonal_min = np.where(np.isin(veg, ("crops", "deciduous_broadleaf", "deciduous_needleleaf")), 0.12, 0.25)
    lai_min = np.where(evergreen, 0.75, seasonal_min) * lai_max
    lai_peak = np.where(
        lat2 < 20.0, 245.0, np.where((lat2 < 44.0) & (t_mean > 12.0), 110.0, np.where(veg == "desert", 100.0, 195.0))
    )

    # ---- soils ---------------------------------------------------------------------------
    arid = np.isin(veg, ARID_TYPES)
    sand_base = np.select(
        [veg == "desert", veg == "savanna", veg == "shrubland", veg == "grassland"], [0.78, 0.68, 0.58, 0.42], 0.35
    )
    clay_base = np.select(
        [veg == "desert", veg == "savanna", veg == "shrubland", veg == "grassland"], [0.07, 0.09, 0.13, 0.2], 0.22
    )
    hot = np.zeros((ny, nx))
    for la, lo, radius, strength in g["hotspots"].values():
        d2 = ((lat2 - la) ** 2 + ((lon2 - lo) * np.cos(np.deg2rad(la))) ** 2) / radius**2
        hot = np.maximum(hot, strength * np.exp(-0.5 * d2))
    sand = sand_base + 0.10 * _smooth(rng["soil"], (ny, nx), 1.5) + 0.08 * hot
    clay = clay_base + 0.04 * _smooth(rng["soil"], (ny, nx), 1.5)
    sand = np.clip(sand, 0.05, 0.92)
    clay = np.clip(np.minimum(clay, 0.95 - sand), 0.02, 0.5)

    # ---- roughness ----------------------------------------------------------------------
    z0_type = np.vectorize(_Z0M_BY_TYPE.get)(veg).astype(np.float64)
    z0m = np.exp((1.0 - urban) * np.log(z0_type) + urban * np.log(1.0)) * (1.0 + orog_std / 150.0)
    z0a_arid = 1.2e-4 * np.exp(0.6 * _smooth(rng["z0"], (ny, nx), 1.0)) * (1.0 + orog_std / 200.0) * (1.0 - 0.5 * hot)
    open_bare = arid & (precip < 500.0)
    z0a = np.where(open_bare, np.clip(z0a_arid, 2e-5, 2e-2), 1e-2)

    # ---- dust source function (Ginoux et al. 2001): topographic lows in arid land + hotspots
    win = int(round(10.0 / res)) | 1
    h_land = np.where(land, elevation, np.nan)
    zmax = maximum_filter(np.where(land, elevation, -np.inf), size=win, mode="nearest")
    zmin = minimum_filter(np.where(land, elevation, np.inf), size=win, mode="nearest")
    s_topo = np.where(land, ((zmax - np.nan_to_num(h_land)) / np.maximum(zmax - zmin, 1.0)) ** 5, 0.0)
    arid_weight = np.clip((450.0 - precip) / 300.0, 0.0, 1.0) * arid * open_bare
    source = np.clip(np.maximum(s_topo, hot), 0.0, 1.0) * arid_weight * (1.0 - urban)
    source = np.where(land, source, 0.0)

    fields = {
        "lsm": lsm, "cell_area": grid.area, "elevation": elevation, "sand": np.where(land, sand, 0.0),
        "clay": np.where(land, clay, 0.0), "cveg": cveg, "lai_min": np.where(land, lai_min, 0.0),
        "lai_max": np.where(land, lai_max, 0.0), "lai_peak_doy": lai_peak, "t_mean": t_mean,
        "t_amp_seasonal": t_amp, "t_peak_doy": t_peak, "t_range_diurnal": t_dtr, "t_noise": t_noise,
        "precip_annual": precip, "rh_mean": rh_mean, "cloud_mean": cloud_mean, "orog_std": orog_std, "z0m": z0m,
        "z0a": np.where(land, z0a, 1e-2), "dust_source": source, "urban": urban, "continentality": cont,
        "precip_tropical": p_trop, "precip_extratropical": p_mid,
    }
    ds = xr.Dataset(
        {k: (("lat", "lon"), np.asarray(v, dtype=np.float64), _attrs(k)) for k, v in fields.items()},
        coords={"lat": ("lat", grid.lat, {"units": "degrees_north", "long_name": "latitude of the cell centre"}),
                "lon": ("lon", grid.lon, {"units": "degrees_east", "long_name": "longitude of the cell centre"})},
    )
    ds = ds.assign_coords(veg_type=(("lat", "lon"), veg, {"units": "-", "long_name": "dominant vegetation type ('water' at sea)"}))
    ds.attrs = {
        "title": "ailand dust world (static fields)",
        "seed": int(seed),
        "resolution_deg": float(res),
        "lat_range": f"{grid.lat_edges[0]:g} {grid.lat_edges[-1]:g}",
        "lon_range": f"{grid.lon_edges[0]:g} {grid.lon_edges[-1]:g}",
        "land_threshold": 0.5,
        "source": "ailand.dust.world.make_statics",
    }
    return ds


def _attrs(name):
    units, long_name = STATIC_FIELDS.get(name) or FORCING_VARIABLES[name]
    return {"units": units, "long_name": long_name}


# ---------------------------------------------------------------------------------------
# weather
# ---------------------------------------------------------------------------------------

OMEGA = 7.2921e-5  # s-1
RHO_AIR = 1.2  # kg m-3, for the pressure-gradient wind
DRAG_LAND, DRAG_SEA = 8e-5, 4e-5  # s-1, linear boundary-layer drag (turns the wind ~40 / ~20 deg towards low pressure at 45N)


def _annual(doy, peak):
    return np.cos(2.0 * np.pi * (np.asarray(doy) - peak) / 365.25)


def _winter(doy):
    """1 in mid-January, 0 in mid-July."""
    return 0.5 * (1.0 + _annual(doy, 15.0))


# Climatological pressure centres: (lat, lon, amplitude [hPa], radius [km], seasonal
# amplitude [hPa] (added x cos(doy - peak)), peak day, latitude shift [deg] x cos(doy - 200))
_CLIMATE_CENTRES = {
    "Azores high": (34.0, -30.0, 10.0, 1800.0, 3.0, 200.0, 4.0),
    "Icelandic low": (62.0, -28.0, -10.0, 1500.0, -6.0, 15.0, 0.0),
    "Saharan heat low": (22.0, 2.0, -3.0, 1200.0, -3.0, 200.0, 0.0),
    "Arabian heat low": (28.0, 58.0, -4.0, 1300.0, -5.0, 200.0, 0.0),
    "Libyan winter high": (28.0, 15.0, 2.0, 1500.0, 3.0, 15.0, 0.0),
    "Siberian high": (50.0, 80.0, 8.0, 2500.0, 10.0, 15.0, 0.0),
}


def _climate_pressure(doy, lat2, lon2):
    """(T, ny, nx) climatological pressure anomaly [Pa] on days of year ``doy`` (T,)."""
    out = np.zeros((len(doy),) + lat2.shape)
    for la, lo, amp, radius, samp, peak, shift in _CLIMATE_CENTRES.values():
        a = 100.0 * (amp + samp * _annual(doy, peak))  # (T,)
        c_lat = la + shift * _annual(doy, 200.0)
        dy = (lat2[None] - c_lat[:, None, None]) * np.pi / 180.0 * EARTH_RADIUS
        dx = (lon2[None] - lo) * np.pi / 180.0 * EARTH_RADIUS * np.cos(np.deg2rad(0.5 * (lat2[None] + c_lat[:, None, None])))
        out += a[:, None, None] * np.exp(-0.5 * (dx**2 + dy**2) / (radius * 1e3) ** 2)
    return out


# Moving systems: rate [per day] at the seasonal peak, (peak day, concentration) of the
# seasonal rate, genesis lat/lon ranges, drift lat/lon [deg/day] ranges, amplitude [hPa]
# range (sign = low/high), radius [km] range, lifetime [days] range
_SYSTEMS = {
    "atlantic cyclone": (0.45, (15.0, 0.8), (None, None), (-28.0, -8.0), (-0.5, 1.5), (6.0, 11.0), (-22.0, -6.0), (900.0, 1500.0), (3.0, 7.0)),
    "migratory anticyclone": (0.35, (15.0, 0.0), (35.0, 55.0), (-25.0, 15.0), (-1.2, 0.2), (3.0, 8.0), (5.0, 14.0), (1000.0, 1800.0), (3.0, 8.0)),
    "mediterranean cyclone": (0.25, (15.0, 1.5), (34.0, 44.0), (-5.0, 15.0), (-0.6, 0.6), (4.0, 9.0), (-12.0, -4.0), (500.0, 900.0), (2.0, 5.0)),
    "saharan cyclone": (0.3, (100.0, 2.5), (27.0, 33.0), (-8.0, 10.0), (0.3, 1.2), (6.0, 12.0), (-14.0, -6.0), (500.0, 900.0), (2.0, 4.0)),
    "harmattan surge": (0.2, (15.0, 2.0), (28.0, 36.0), (0.0, 25.0), (-2.0, -1.0), (1.0, 4.0), (4.0, 9.0), (800.0, 1200.0), (3.0, 5.0)),
    "easterly wave": (0.6, (225.0, 3.0), (11.0, 18.0), (15.0, 40.0), (-0.2, 0.2), (-8.0, -6.0), (-3.0, 3.0), (600.0, 800.0), (4.0, 8.0)),
    "shamal high": (0.25, (170.0, 3.0), (30.0, 36.0), (30.0, 40.0), (-0.5, 0.0), (1.0, 3.0), (3.0, 7.0), (700.0, 1000.0), (2.0, 5.0)),
}

# Gust events: convective outflows (radial, with a rain core) and Shamal pulses
# (uniform direction): rate [per day], (peak doy, kappa), lat range (None: follows the ITD),
# lon range, peak wind [m s-1] range, radius [km] range, duration [h] range, drift
# [deg/day] (lat, lon), start local hour range, kind
_GUSTS = {
    "sahel haboob": (5.0, (215.0, 3.0), None, (-16.0, 38.0), (8.0, 18.0), (120.0, 250.0), (3.0, 8.0), (0.0, -10.0), (15.0, 22.0), "radial"),
    "middle east haboob": (0.6, (100.0, 2.0), (27.0, 36.0), (36.0, 52.0), (8.0, 15.0), (100.0, 200.0), (3.0, 6.0), (0.0, 5.0), (13.0, 19.0), "radial"),
    "european storm": (1.0, (200.0, 2.0), (42.0, 58.0), (-5.0, 40.0), (6.0, 12.0), (80.0, 160.0), (2.0, 5.0), (0.5, 8.0), (13.0, 19.0), "radial"),
    "shamal": (0.3, (170.0, 3.0), (27.0, 34.0), (43.0, 50.0), (5.0, 9.0), (350.0, 600.0), (24.0, 96.0), (0.0, 0.0), (0.0, 24.0), "northwesterly"),
}


def _thinned_times(rng, rate, season, t0, t1, start_doy):
    """Event times [days from start] of a Poisson process with rate ``rate * s(doy)``, s the
    von Mises seasonal factor scaled to peak 1, on [t0, t1)."""
    peak, kappa = season
    n = rng.poisson(rate * (t1 - t0))
    t = np.sort(rng.uniform(t0, t1, n))
    s = np.exp(kappa * (_annual(start_doy + t, peak) - 1.0))
    return t[rng.uniform(0.0, 1.0, n) < s]


def _itd(doy):
    """Latitude [deg] of the Inter-Tropical Discontinuity over Africa on day of year ``doy``."""
    return 13.5 + 7.5 * _annual(doy, 222.0)


def _draw_systems(rng, t_end, start_doy):
    """Moving pressure systems as a dict of arrays (one entry per system)."""
    rows = []
    for kind, (rate, season, lat_r, lon_r, dlat_r, dlon_r, amp_r, rad_r, life_r) in _SYSTEMS.items():
        t = _thinned_times(rng, rate, season, -8.0, t_end, start_doy)
        n = t.size
        if kind == "atlantic cyclone":  # the storm track moves north in summer
            lat0 = 56.0 - 6.0 * _winter(start_doy + t) + 4.0 * rng.standard_normal(n)
        else:
            lat0 = rng.uniform(*lat_r, n)
        strength = 1.0 + (0.25 * _winter(start_doy + t) if kind in ("atlantic cyclone", "migratory anticyclone") else 0.0)
        rows.append({
            "t0": t, "life": rng.uniform(*life_r, n), "lat0": lat0, "lon0": rng.uniform(*lon_r, n),
            "dlat": rng.uniform(*dlat_r, n), "dlon": rng.uniform(*dlon_r, n) * (1.0 + 0.2 * _winter(start_doy + t)),
            "amp": 100.0 * rng.uniform(*amp_r, n) * strength, "radius": 1e3 * rng.uniform(*rad_r, n),
        })
        if kind == "easterly wave":  # troughs and ridges alternate
            rows[-1]["amp"] *= np.where(np.arange(n) % 2 == 0, 1.0, -0.6)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _draw_gusts(rng, t_end, start_doy):
    rows = []
    for kind, (rate, season, lat_r, lon_r, peak_r, rad_r, dur_r, drift, hour_r, shape) in _GUSTS.items():
        t_day = _thinned_times(rng, rate, season, -4.0, t_end, start_doy)
        n = t_day.size
        lat0 = _itd(start_doy + t_day) + rng.uniform(-3.0, 2.0, n) if lat_r is None else rng.uniform(*lat_r, n)
        lon0 = rng.uniform(*lon_r, n)
        hour_local = rng.uniform(*hour_r, n)
        t0 = np.floor(t_day) + (hour_local - lon0 / 15.0) / 24.0  # local start hour -> UTC days
        rows.append({
            "t0": t0, "life": rng.uniform(*dur_r, n) / 24.0, "lat0": lat0, "lon0": lon0,
            "dlat": np.full(n, drift[0]), "dlon": np.full(n, drift[1]), "peak": rng.uniform(*peak_r, n),
            "radius": 1e3 * rng.uniform(*rad_r, n), "radial": np.full(n, shape == "radial"),
        })
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _track(ev, k, tc, lat2, lon2):
    """Active steps of event ``k`` in chunk times ``tc`` [days], their envelope, and the
    (dx, dy) [m] of every cell from the moving centre, shapes (n_active, ny, nx)."""
    age = tc - ev["t0"][k]
    on = np.flatnonzero((age > 0.0) & (age < ev["life"][k]))
    if on.size == 0:
        return on, None, None, None
    a = age[on]
    env = np.sin(np.pi * a / ev["life"][k]) ** 2
    c_lat = ev["lat0"][k] + ev["dlat"][k] * a
    c_lon = ev["lon0"][k] + ev["dlon"][k] * a
    rad = np.pi / 180.0 * EARTH_RADIUS
    dy = (lat2[None] - c_lat[:, None, None]) * rad
    dx = (lon2[None] - c_lon[:, None, None]) * rad * np.cos(np.deg2rad(0.5 * (lat2[None] + c_lat[:, None, None])))
    return on, env, dx, dy


def _knots(rng, n_knots, shape, sigma, phi):
    """(n_knots, ny, nx) AR(1)-in-time, spatially smooth standard normal fields."""
    z = _filtered_noise(rng, (n_knots,) + tuple(shape), sigma)
    z /= max(z.std(), 1e-12)
    out = np.empty_like(z)
    out[0] = z[0]
    a = np.sqrt(1.0 - phi**2)
    for k in range(1, n_knots):
        out[k] = phi * out[k - 1] + a * z[k]
    return out


def _at_hours(knots, hours, step_h):
    """Linear interpolation of knot fields (every ``step_h`` hours from hour 0) to ``hours``."""
    x = hours / step_h
    k = np.floor(x).astype(np.int64)
    w = (x - k)[:, None, None]
    return (1.0 - w) * knots[k] + w * knots[k + 1]


def _solar_chunk(times, dt, lat2, lon2, elevation):
    """Clear-sky surface shortwave [W m-2], mean over [t, t+dt), shape (T, ny, nx)."""
    nsub = max(1, int(np.ceil(dt / 1200.0)))
    offsets = ((np.arange(nsub) + 0.5) * dt / nsub * 1e9).astype("timedelta64[ns]")
    sub = (np.asarray(times, dtype="datetime64[ns]")[:, None] + offsets[None, :]).ravel()
    decl, eot, ecc, hour = _orbit(sub)
    phi = np.deg2rad(lat2)[None]
    h = np.deg2rad(15.0 * (hour[:, None, None] + lon2[None] / 15.0 + eot[:, None, None] / 60.0 - 12.0))
    cz = np.sin(phi) * np.sin(decl)[:, None, None] + np.cos(phi) * np.cos(decl)[:, None, None] * np.cos(h)
    up = cz > 0.0
    czu = np.minimum(cz[up], 1.0)  # the expensive part only where the sun is up
    zen = np.rad2deg(np.arccos(czu))
    pressure = np.broadcast_to(((1.0 - 2.25577e-5 * np.clip(elevation, 0.0, None)) ** 5.25588)[None], cz.shape)[up]
    airmass = pressure / (czu + 0.50572 * np.maximum(96.07995 - zen, 1e-3) ** -1.6364)
    e0 = np.broadcast_to(ecc[:, None, None], cz.shape)[up]
    clear = np.zeros(cz.shape)
    clear[up] = 1.1 * 1361.0 * e0 * czu * np.exp(np.log(0.7) * airmass**0.678)
    return clear.reshape(len(times), nsub, *lat2.shape).mean(axis=1)


def _weather(st: xr.Dataset, times: pd.DatetimeIndex, dt: float, seed: int, chunk_days: float = 15.0):
    """Hourly (any step) forcing arrays (T, ny, nx) for the statics ``st``."""
    rng = _streams(seed, 1, ("systems", "gusts", "wind", "rain", "temp"))
    lat2, lon2 = np.meshgrid(st["lat"].values, st["lon"].values, indexing="ij")
    shape = lat2.shape
    v = {k: st[k].values for k in st.data_vars}
    land = v["lsm"] >= 0.5
    res = float(st["lat"].values[1] - st["lat"].values[0])
    n_t = len(times)
    hours = (times - times[0]) / pd.Timedelta(hours=1)
    hours = np.asarray(hours, dtype=np.float64)
    t_days = hours / 24.0
    start_doy = float(_doy(times.values[:1])[0])
    t_end = float(t_days[-1] + dt / 86400.0)

    systems = _draw_systems(rng["systems"], t_end, start_doy)
    gusts = _draw_gusts(rng["gusts"], t_end, start_doy)
    knot_h = 3.0
    n_knots = int(np.ceil(hours[-1] / knot_h)) + 2
    sig = 250e3 / (res * 111e3)  # ~250 km in cells
    wind_u = _knots(rng["wind"], n_knots, shape, sig, np.exp(-knot_h / 6.0))
    wind_v = _knots(rng["wind"], n_knots, shape, sig, np.exp(-knot_h / 6.0))
    rain_z = _knots(rng["rain"], n_knots, shape, 200e3 / (res * 111e3), np.exp(-knot_h / 8.0))
    temp_z = _knots(rng["temp"], n_knots, shape, 600e3 / (res * 111e3), np.exp(-knot_h / 72.0))

    # static helpers
    seas_t = _precip_components(lat2, lon2, v["elevation"], v["continentality"], np.zeros(shape))[2:]
    (pk_t, ka_t), (pk_m, ka_m) = seas_t
    aridity = np.exp(-v["precip_annual"] / 400.0)
    f_cor = 2.0 * OMEGA * np.sin(np.deg2rad(lat2))
    drag = np.where(land, DRAG_LAND, DRAG_SEA)
    to_10m = np.where(land, 0.7 / (1.0 + v["orog_std"] / 1000.0), 0.85)
    a_diurnal = np.where(land, 0.1 + 0.2 * aridity, 0.03)
    b_llj = np.where(land & (lat2 < 32.0), 0.35 * aridity, 0.0)
    dy_m = res * np.pi / 180.0 * EARTH_RADIUS
    dx_m = float(st["lon"].values[1] - st["lon"].values[0]) * np.pi / 180.0 * EARTH_RADIUS * np.cos(np.deg2rad(lat2))
    p_hyps = 101325.0 * (1.0 - 2.25577e-5 * v["elevation"]) ** 5.25588
    sahel_ok = land | (lon2 > -20.0)

    out = {k: np.empty((n_t,) + shape) for k in FORCING_VARIABLES}
    chunk = max(1, int(round(chunk_days * 86400.0 / dt)))
    for c0 in range(0, n_t, chunk):
        sl = slice(c0, min(n_t, c0 + chunk))
        tc, hc = t_days[sl], hours[sl]
        nt = tc.size
        doy = start_doy + tc
        doy3 = doy[:, None, None]
        local = (hc[:, None, None] % 24.0 + lon2[None] / 15.0) % 24.0

        # ---- pressure and wind ---------------------------------------------------------
        p_syn = np.zeros((nt,) + shape)
        for k in range(systems["t0"].size):
            on, env, dx, dy = _track(systems, k, tc, lat2, lon2)
            if on.size:
                p_syn[on] += systems["amp"][k] * env[:, None, None] * np.exp(-0.5 * (dx**2 + dy**2) / systems["radius"][k] ** 2)
        p_tot = _climate_pressure(doy, lat2, lon2) + p_syn
        dpdy = np.gradient(p_tot, axis=1) / dy_m
        dpdx = np.gradient(p_tot, axis=2) / dx_m[None]
        # boundary-layer balance f k x V + r V = -grad(p) / rho: V = -(r - i f) G / (r^2 + f^2)
        # (geostrophic when r -> 0, down-gradient in the deep tropics), then scaled to 10 m
        denom = RHO_AIR * (drag**2 + f_cor**2)
        u = -to_10m * (drag * dpdx + f_cor * dpdy) / denom
        w = -to_10m * (drag * dpdy - f_cor * dpdx) / denom
        itd = _itd(doy)[:, None, None]
        north = _sigmoid((lat2[None] - itd) / 1.5)
        trade = (2.5 + 2.0 * _winter(doy3)) * north * np.exp(-(((lat2[None] - itd - 7.0) / 9.0) ** 2))
        monsoon = 3.0 * (1.0 - north) * np.exp(-(((lat2[None] - itd + 5.0) / 6.0) ** 2)) * (lon2 < 45.0)[None] * sahel_ok
        jet = 9.0 * (1.0 - _winter(doy3)) ** 2 * np.exp(-(((lat2 - 13.0) / 4.0) ** 2) - ((lon2 - 58.0) / 8.0) ** 2)[None]
        u = u - 0.77 * trade + 0.71 * (monsoon + jet)
        w = w - 0.64 * trade + 0.71 * (monsoon + jet)
        noise_amp = np.where(land, 1.5 + 1.0 * aridity, 1.0)  # dry convective gustiness over deserts
        u = u + noise_amp * _at_hours(wind_u, hc, knot_h)
        w = w + noise_amp * _at_hours(wind_v, hc, knot_h)
        extra_rain = np.zeros((nt,) + shape)
        for k in range(gusts["t0"].size):
            on, env, dx, dy = _track(gusts, k, tc, lat2, lon2)
            if not on.size:
                continue
            r2 = (dx**2 + dy**2) / gusts["radius"][k] ** 2
            if gusts["radial"][k]:
                r = np.sqrt(r2)
                speed = gusts["peak"][k] * env[:, None, None] * r * np.exp(0.5 * (1.0 - r2))
                u[on] += speed * dx / np.maximum(r * gusts["radius"][k], 1.0)
                w[on] += speed * dy / np.maximum(r * gusts["radius"][k], 1.0)
                core = np.where(r2 < 0.5, np.exp(-0.5 * r2 / 0.16) - np.exp(-0.5 * 0.5 / 0.16), 0.0)
                extra_rain[on] += 4e-3 * env[:, None, None] * core  # rain core, up to ~14 mm/h
            else:
                speed = gusts["peak"][k] * env[:, None, None] * np.exp(-0.5 * r2)
                u[on] += 0.707 * speed
                w[on] -= 0.707 * speed
        diurnal = 1.0 + a_diurnal[None] * np.cos(2 * np.pi * (local - 13.0) / 24.0) + b_llj[None] * np.exp(
            -0.5 * ((local - 9.0) / 1.5) ** 2
        )
        u, w = u * diurnal, w * diurnal
        speed = np.hypot(u, w)
        cap = np.minimum(1.0, 40.0 / np.maximum(speed, 1e-9))
        u, w = u * cap, w * cap

        # ---- precipitation and cloud ---------------------------------------------------------
        s_t = _seasonality(doy3, pk_t[None], ka_t[None])
        s_m = _seasonality(doy3, pk_m[None], ka_m[None])
        p_mean = (v["precip_tropical"][None] * s_t + v["precip_extratropical"][None] * s_m) / (365.25 * 86400.0)
        p_mm_day = p_mean * 86400.0
        f_wet = np.clip(0.03 + 0.045 * np.sqrt(p_mm_day), 0.01, 0.25)
        thr = ndtri(1.0 - f_wet)
        e_plus = np.exp(-0.5 * thr**2) / np.sqrt(2 * np.pi) - thr * (1.0 - ndtr(thr))
        z = 0.5 * np.clip(-p_syn / 800.0, -3.0, 3.0) + 0.87 * _at_hours(rain_z, hc, knot_h)
        precip = np.minimum(p_mean * np.clip(z - thr, 0.0, None) / e_plus + extra_rain * sahel_ok, 0.01)
        season_all = (v["precip_tropical"][None] * s_t + v["precip_extratropical"][None] * s_m) / v["precip_annual"][None]
        c_mean = np.clip(v["cloud_mean"][None] * season_all**0.3, 0.02, 0.95)
        cloud = ndtr(1.2 * z + ndtri(c_mean) * np.sqrt(1.0 + 1.44))
        cloud = np.where(precip > 0.0, np.maximum(cloud, 0.9), cloud)

        # ---- temperature, humidity, pressure, radiation --------------------------------------
        t_clim = 273.15 + v["t_mean"][None] + v["t_amp_seasonal"][None] * _annual(doy3, v["t_peak_doy"][None])
        t_syn = v["t_noise"][None] * (0.7 * _at_hours(temp_z, hc, knot_h) + 0.35 * np.clip(w / 6.0, -2.0, 2.0))
        t_dm = t_clim + t_syn
        dtr = v["t_range_diurnal"][None] * (1.25 - 0.8 * cloud) / (1.25 - 0.8 * v["cloud_mean"][None])
        tair = t_dm + 0.5 * dtr * np.cos(2 * np.pi * (local - 15.0) / 24.0)
        rh = np.clip(v["rh_mean"][None] + 0.35 * (cloud - v["cloud_mean"][None]), 0.05, 0.97)
        e = np.minimum(rh * saturation_vapour_pressure(t_dm), 0.99 * saturation_vapour_pressure(tair))
        psurf = p_hyps[None] + p_tot
        clear = _solar_chunk(times.values[sl], dt, lat2, lon2, v["elevation"])
        swdown = clear * (1.0 - 0.75 * cloud**3.4)
        pw = 46.5 * (e / 100.0) / tair
        emis_clear = 1.0 - (1.0 + pw) * np.exp(-np.sqrt(1.2 + 3.0 * pw))
        emis = np.minimum((1.0 - 0.84 * cloud) * emis_clear + 0.84 * cloud, 1.0)
        rain, snow = split_precipitation(precip, tair)
        vals = {
            "Tair": tair, "Qair": specific_humidity(e, psurf), "Wind_E": u, "Wind_N": w, "SWdown": swdown,
            "LWdown": emis * STEFAN_BOLTZMANN * tair**4, "Rainf": rain, "Snowf": snow, "PSurf": psurf,
        }
        for k2, arr in vals.items():
            out[k2][sl] = arr
    return out, {"n_systems": int(systems["t0"].size), "n_gust_events": int(gusts["t0"].size)}


def make_world(
    start: str = "2020-07-01",
    end: str = "2020-07-10",
    *,
    lat_range=DEFAULT_REGION["lat_range"],
    lon_range=DEFAULT_REGION["lon_range"],
    resolution: float = DEFAULT_REGION["resolution"],
    freq: str = "1h",
    seed: int = 0,
    statics: xr.Dataset | None = None,
) -> xr.Dataset:
    """A seeded gridded dust world: static fields and hourly forcing.

    Parameters
    ----------
    start, end : dates (UTC); a date-only ``end`` includes that whole day (as in
        :func:`ailand.synthetic_forcing`).
    lat_range, lon_range : outer cell faces [degrees]; resolution : cell size [degrees].
        Default: 5-65N, 24W-66E at 1.5 degrees (40 x 60 cells).
    freq : forcing step (``"1h"`` default).
    seed : non-negative int; the same arguments give the same world.
    statics : reuse static fields from :func:`make_statics` (then the grid arguments are
        ignored); the weather still depends on ``seed``.

    Returns
    -------
    xarray.Dataset with

    * the 9 forcing variables of :data:`ailand.forcing.FORCING_VARIABLES` as float64
      ``(time, lat, lon)`` arrays (SI units, fluxes are means over ``[t, t+dt)``);
    * the static fields of :data:`STATIC_FIELDS` as ``(lat, lon)`` and ``veg_type`` as a
      coordinate.

    Memory: 9 x 8 bytes per cell and step (about 1.5 GB per year for the default grid).
    """
    st = statics if statics is not None else make_statics(lat_range, lon_range, resolution, seed)
    times, dt = _time_axis(start, end, freq)
    arrays, info = _weather(st, times, dt, seed)
    ds = st.copy()
    ds = ds.assign_coords(time=("time", times.values.astype("datetime64[ns]"), {"long_name": "time (UTC); fluxes are means over [t, t+dt)"}))
    for k, (units, long_name) in FORCING_VARIABLES.items():
        ds[k] = xr.Variable(("time", "lat", "lon"), arrays[k], {"units": units, "long_name": long_name})
    ds = ds[[*FORCING_VARIABLES, *st.data_vars]]
    ds.attrs = dict(st.attrs)
    ds.attrs.update({
        "title": "ailand dust world: static fields and synthetic hourly forcing",
        "seed": int(seed),
        "freq": str(freq),
        "source": "ailand.dust.world.make_world",
        "conventions": "ecLand offline forcing names, SI units; fluxes are means over [t, t+dt)",
        **info,
    })
    return ds


# ---------------------------------------------------------------------------------------
# validation, columns <-> grid
# ---------------------------------------------------------------------------------------


def validate_world(world: xr.Dataset, require_forcing: bool = True) -> xr.Dataset:
    """Check a world Dataset at the door; returns it unchanged.

    Raises ValueError naming the variable, the problem and the first bad place for: missing
    ``lat``/``lon`` dims or static fields, missing forcing variables (when
    ``require_forcing``), forcing not on ``(time, lat, lon)``, NaN/inf in any variable,
    negative precipitation or shortwave, land fraction outside [0, 1], sand + clay > 1.
    """
    if not isinstance(world, xr.Dataset):
        raise TypeError(f"world must be an xarray.Dataset, not {type(world).__name__}")
    for d in ("lat", "lon"):
        if d not in world.dims:
            raise ValueError(f"world has no '{d}' dimension (dims: {dict(world.sizes)}); build it with ailand.dust.make_world")
    LatLonGrid.from_dataset(world)
    need = ["lsm", "cell_area", "sand", "clay", "cveg", "lai_min", "lai_max", "lai_peak_doy", "z0a", "dust_source"]
    missing = [k for k in need if k not in world]
    if missing:
        raise ValueError(f"world lacks static field(s) {missing}; build it with ailand.dust.make_world")
    if require_forcing:
        missing = [k for k in FORCING_VARIABLES if k not in world]
        if missing:
            raise ValueError(f"world lacks forcing variable(s) {missing}")
        for k in FORCING_VARIABLES:
            if set(world[k].dims) != {"time", "lat", "lon"}:
                raise ValueError(f"world forcing {k} has dims {world[k].dims}; expected (time, lat, lon)")
    for k in world.data_vars:
        a = world[k].values
        if not np.issubdtype(a.dtype, np.number):
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            idx = np.argwhere(bad)[0]
            where = ", ".join(f"{d}={_label(world, d, i)}" for d, i in zip(world[k].dims, idx))
            raise ValueError(
                f"world variable {k} has NaN/inf values ({int(bad.sum())} of {a.size}), first at {where}; fill or drop them"
            )
    for k in ("Rainf", "Snowf", "SWdown"):
        if k in world and (world[k].values < 0).any():
            raise ValueError(f"world forcing {k} is negative (min {float(world[k].min()):.4g}); fluxes must be >= 0")
    lsm = world["lsm"].values
    if (lsm < 0).any() or (lsm > 1).any():
        raise ValueError(f"world lsm (land fraction) must lie in [0, 1], got {lsm.min():.3g}..{lsm.max():.3g}")
    if ((world["sand"] + world["clay"]).values > 1.0 + 1e-9).any():
        raise ValueError("world sand + clay exceeds 1 somewhere; fractions of the soil must sum to at most 1")
    return world


def _label(ds, dim, i):
    if dim in ds.coords:
        val = ds[dim].values[i]
        return pd.Timestamp(val).isoformat() if np.issubdtype(np.asarray(val).dtype, np.datetime64) else f"{val:g}"
    return str(i)


def land_index(world: xr.Dataset, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(j, i)`` grid indices of the land cells (``lsm >= threshold``, default the world's
    ``land_threshold`` attribute, 0.5), in row-major (lat, then lon) order."""
    thr = float(world.attrs.get("land_threshold", 0.5) if threshold is None else threshold)
    j, i = np.nonzero(world["lsm"].values >= thr)
    return j, i


def world_columns(world: xr.Dataset, threshold: float | None = None) -> xr.Dataset:
    """The land cells of ``world`` as a ``(time, site)`` forcing Dataset for :class:`ailand.ToyEcLand`.

    Each land cell (``lsm >= 0.5``) becomes a site named ``"j{row}i{col}"``; the result has
    the 9 forcing variables ``(time, site)`` and every static field as ``(site,)`` variables
    (``lat``, ``lon`` [degrees] of the cell centre, ``elevation``, ``sand``, ``clay``,
    ``cveg``, ``lai_*``, ``dust_source`` ...) and ``veg_type``, ``ilat``, ``ilon`` (grid
    indices) as coordinates, exactly like :func:`ailand.synthetic_forcing` output, so
    ``ToyEcLand().run(world_columns(world))`` works unchanged.
    """
    validate_world(world, require_forcing=False)
    j, i = land_index(world, threshold)
    if j.size == 0:
        raise ValueError("world has no land cell (lsm >= threshold); nothing for the land model to run on")
    names = np.array([f"j{a:03d}i{b:03d}" for a, b in zip(j, i)], dtype=object)
    data = {}
    for k in world.data_vars:
        da = world[k]
        if da.dims[-2:] != ("lat", "lon"):
            continue
        vals = np.ascontiguousarray(da.values[..., j, i])  # fancy indexing returns (site, time) memory order
        dims = da.dims[:-2] + ("site",)
        data[k] = xr.Variable(dims, vals, dict(da.attrs))
    coords = {
        "site": ("site", names, {"long_name": "land cell (grid row j, column i)", "units": "-"}),
        "ilat": ("site", j, {"long_name": "grid row index (lat)", "units": "-"}),
        "ilon": ("site", i, {"long_name": "grid column index (lon)", "units": "-"}),
        "veg_type": ("site", world["veg_type"].values[j, i].astype(object), dict(world["veg_type"].attrs)),
    }
    if "time" in world.dims:
        coords["time"] = world["time"]
    ds = xr.Dataset(data, coords=coords)
    ds["lat"] = xr.Variable("site", world["lat"].values[j], {"units": "degrees_north", "long_name": "latitude"})
    ds["lon"] = xr.Variable("site", world["lon"].values[i], {"units": "degrees_east", "long_name": "longitude"})
    ds.attrs = dict(world.attrs, title="ailand dust world: land cells as sites (columns)")
    return ds


def to_grid(columns: xr.Dataset | xr.DataArray, world: xr.Dataset | LatLonGrid, fill: float = np.nan):
    """Scatter a result over ``site`` (e.g. ToyEcLand output on :func:`world_columns`) back
    onto the world's ``(lat, lon)`` grid; cells without a column get ``fill`` (NaN).

    Sites are placed by their ``ilat``/``ilon`` coordinates when present, else by their
    ``lat``/``lon`` (which must be cell centres of the grid). Other dims are kept in front:
    ``(time, site)`` -> ``(time, lat, lon)``; units and attributes are kept.
    """
    grid = world if isinstance(world, LatLonGrid) else LatLonGrid.from_dataset(world)
    if "site" not in columns.dims:
        raise ValueError(f"to_grid needs a 'site' dimension, got dims {tuple(columns.dims)}")
    if "ilat" in columns.coords and "ilon" in columns.coords:
        j, i = columns["ilat"].values.astype(np.int64), columns["ilon"].values.astype(np.int64)
    elif "lat" in columns.coords or "lat" in getattr(columns, "data_vars", {}):
        lat, lon = np.asarray(columns["lat"].values, float), np.asarray(columns["lon"].values, float)
        j, i = grid.index(lat, lon)
        if not (np.allclose(grid.lat[j], lat, atol=1e-6 * grid.dlat + 1e-9) and np.allclose(grid.lon[i], lon, atol=1e-6 * grid.dlon + 1e-9)):
            raise ValueError("site lat/lon are not cell centres of the grid; give ilat/ilon coordinates")
    else:
        raise ValueError("to_grid needs ilat/ilon or lat/lon coordinates along 'site'")
    ny, nx = grid.shape

    def one(da: xr.DataArray) -> xr.DataArray:
        da = da.transpose(*[d for d in da.dims if d != "site"], "site")
        arr = da.values
        if not np.issubdtype(arr.dtype, np.number):
            out = np.full(arr.shape[:-1] + (ny, nx), None, dtype=object)
        else:
            out = np.full(arr.shape[:-1] + (ny, nx), fill, dtype=np.result_type(arr.dtype, np.float64))
        out[..., j, i] = arr
        coords = {d: da[d] for d in da.dims[:-1] if d in da.coords}
        coords.update(lat=("lat", grid.lat, {"units": "degrees_north"}), lon=("lon", grid.lon, {"units": "degrees_east"}))
        return xr.DataArray(out, dims=da.dims[:-1] + ("lat", "lon"), coords=coords, attrs=dict(da.attrs), name=da.name)

    if isinstance(columns, xr.DataArray):
        return one(columns)
    skip = {"lat", "lon", "ilat", "ilon"}
    out = xr.Dataset({k: one(columns[k]) for k in columns.data_vars if "site" in columns[k].dims and k not in skip})
    out.attrs = dict(columns.attrs)
    return out
