"""A seeded, SYNTHETIC CAMS-like multi-model ensemble (NOT real CAMS data).

:func:`synthetic_cams` makes a labelled multi-model ensemble on a small regional grid:

* an "analysis" (here: the synthetic truth) of O3, NO2, SO2 and PM10 [ug m-3] from a toy
  chemistry-transport model (CTM) run hourly, sampled every ``step_hours``;
* 11 member "models" whose errors differ in kind (see :data:`MEMBER_ERRORS`), for several
  lead days;
* forecast meteorology (``Tair``, ``Wind_E``, ``Wind_N``, ``SWdown``, ``Rainf``, ``blh``) as
  predictors, with errors growing with lead time.

Every variable says SYNTHETIC in its ``long_name``; the Dataset carries ``synthetic = 1``,
a ``title`` that says so, the seed, the member error table and the chemistry in its attrs.
Member names (``SYN-A`` ... ``SYN-K``) are deliberately not the names of real CTMs.

The toy CTM (hourly, per grid cell; concentrations are boundary-layer means)
------------------------------------------------------------------------------
Tracers ``c`` [ug m-3]: NOx (as NO2 mass), SO2, primary PM from traffic, from residential
heating and natural (sea salt), secondary PM (sulphate, nitrate), O3. Each hour:

1. advection by the forcing winds (semi-Lagrangian, bilinear; inflow at the boundary is a
   seasonal background; the wind is non-divergent: ``u(y)``, ``v(x)``);
2. boundary-layer height ``h``: when ``h`` grows the layer entrains free-troposphere air,
   ``c <- (c h_old + c_ft (h - h_old)) / h``; when it shrinks, ``c`` is unchanged;
3. emissions ``E`` [ug m-2 s-1]: ``c += E dt / h``. Traffic NOx and PM (cities, rush-hour
   double peak, weekends at 60 %), residential PM (cities, when ``Tair`` < 288 K, evening
   peak), industrial SO2 (point sources, weekends at 80 %), sea salt over the western sea
   strip (``~ |wind|^2``), a weak rural NOx source;
4. chemistry and removal (``rad = SWdown / 1000``):

   * NOx loss ``k = 1/14 h + rad/4 h``; a fraction ``0.35 clip((293 - T)/15, 0, 1)`` of it
     becomes nitrate PM (semi-volatile: forms in the cold);
   * SO2 loss ``k = 1/60 h + rad/30 h + 0.15 rain[mm h-1]/h``, the gas-phase part to sulphate PM;
   * O3 production ``P = 18 rad exp((T - 293)/7) NOx/(NOx + 4)`` [ug m-3 h-1] (capped at 30),
     titration of freshly emitted NO (``-0.9 E_NOx dt / h``), deposition ``0.4 cm s-1 / h``,
     relaxation to the background with a 48 h time scale;
   * PM dry deposition (4 days; sea salt 1 day) and wet scavenging ``0.25 rain[mm h-1]/h``.

Outputs: ``O3``; ``NO2 = NOx / (1 + J/(k O3))`` (photostationary NO2/NOx, ``J = 0.009 rad``
s-1, ``k O3 = 0.02 O3/80`` s-1); ``SO2``; ``PM10`` = the sum of the PM tracers.

Members
-------
All members share four deficiencies (no convex combination of members can remove them; a
model that sees the calendar and the meteorology can): nitrate PM at 30 % (missing
semi-volatile chemistry), NO2 without the weekly cycle and with weak rush-hour peaks (a flat
emission profile), too little night-time O3 loss in shallow boundary layers (+12 ug m-3 when
``blh`` < 100 m, fading by 400 m), SO2 plumes spread too wide (40 % of SO2 smoothed by
1.5 cells, emissions 15 % low). They also share the error of the weather forecast that
drives them (multiplicative noise, sd 8 % x (1 + lead/2)), which nothing can remove. On top, each member has its own errors (:data:`MEMBER_ERRORS`):
bias, displacement, over-smoothing, diurnal phase error, damped diurnal cycle, missing
sources, missing titration, and spatially and temporally correlated multiplicative noise
whose size grows with lead day; ``SYN-K`` is much worse than the rest.

Dims and units
--------------
``O3, NO2, SO2, PM10``: ``(member, lead_time, time, lat, lon)`` [ug m-3], ``time`` = valid
time (UTC), ``lead_time`` = lead day (0 = the first day of the run); ``<var>_analysis``:
``(time, lat, lon)`` [ug m-3]; predictors ``(lead_time, time, lat, lon)`` in SI units.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import gaussian_filter, uniform_filter1d

from .dataset import ANALYSIS_SUFFIX, CONC_UNITS, STANDARD_NAMES
from .progress import as_progress

__all__ = ["synthetic_cams", "MEMBER_ERRORS", "COMMON_ERRORS", "POLLUTANTS", "PREDICTORS"]

POLLUTANTS = ("O3", "NO2", "SO2", "PM10")

#: forecast meteorology given as predictors: name -> (units, long_name)
PREDICTORS: dict[str, tuple[str, str]] = {
    "Tair": ("K", "near-surface air temperature"),
    "Wind_E": ("m s-1", "eastward near-surface wind"),
    "Wind_N": ("m s-1", "northward near-surface wind"),
    "SWdown": ("W m-2", "downward shortwave radiation at the surface"),
    "Rainf": ("kg m-2 s-1", "rainfall rate"),
    "blh": ("m", "boundary-layer height"),
}

#: per-member errors. Keys: ``mult`` multiplicative bias per pollutant; ``add`` additive bias
#: [ug m-3]; ``shift`` (dy, dx) displacement [cells] (``grow``: extra dx per lead day);
#: ``smooth`` Gaussian sigma [cells]; ``phase`` diurnal phase error [h] (the field of ``phase``
#: hours earlier); ``damp`` diurnal amplitude factor; ``missing`` PM sources left out;
#: ``no_titration`` O3 + 0.6 NO2; ``noise`` multiplicative noise sd at lead 0, ``growth``
#: its growth per lead day (sd = noise (1 + growth * lead)).
MEMBER_ERRORS: dict[str, dict] = {
    "SYN-A": {"kind": "multiplicative bias", "mult": {"O3": 1.12, "NO2": 0.8, "SO2": 1.2, "PM10": 1.2}, "noise": 0.12},
    "SYN-B": {"kind": "spatial displacement", "shift": (1, 2), "grow": 1, "noise": 0.1},
    "SYN-C": {"kind": "over-smoothing", "smooth": 2.0, "noise": 0.1},
    "SYN-D": {"kind": "diurnal phase error", "phase": 3, "noise": 0.1},
    "SYN-E": {"kind": "missing sources", "missing": ("res",), "mult": {"SO2": 0.7}, "noise": 0.12},
    "SYN-F": {"kind": "noise growing fast with lead", "noise": 0.12, "growth": 1.5},
    "SYN-G": {"kind": "additive bias", "add": {"O3": -10.0, "NO2": 4.0, "SO2": 1.0, "PM10": 3.0}, "noise": 0.12},
    "SYN-H": {"kind": "damped diurnal cycle", "damp": 0.5, "noise": 0.12},
    "SYN-I": {"kind": "smoothing and bias", "smooth": 1.0, "mult": {"O3": 0.92, "NO2": 1.2, "SO2": 0.85, "PM10": 0.9}, "noise": 0.1},
    "SYN-J": {"kind": "missing titration and sea salt", "no_titration": True, "missing": ("nat",), "noise": 0.12},
    "SYN-K": {"kind": "much worse member", "shift": (-3, -2), "phase": -4, "mult": {"O3": 1.4, "NO2": 1.6, "SO2": 1.8, "PM10": 1.5},
              "noise": 0.35, "growth": 0.5},
}

COMMON_ERRORS = (
    "nitrate PM at 30 % (missing semi-volatile chemistry)",
    "NO2 without weekly cycle and with weak rush-hour peaks",
    "+12 ug m-3 night-time O3 in shallow boundary layers",
    "SO2 plumes 40 % smoothed by 1.5 cells, emissions 15 % low",
    "the driving weather forecast's error: multiplicative noise shared by all members, sd 8 % x (1 + lead/2)",
)

# tracer order in the CTM
_TRACERS = ("NOx", "SO2", "pm_traffic", "pm_res", "pm_nat", "pm_sulf", "pm_nitr", "O3")
_T = {k: i for i, k in enumerate(_TRACERS)}
_H = 3600.0


def _ar1(rng, n: int, tau: float, size=()) -> np.ndarray:
    """Unit-variance AR(1) series ``(n, *size)`` with e-folding time ``tau`` steps."""
    a = np.exp(-1.0 / tau)
    w = rng.standard_normal((n, *size))
    out = np.empty_like(w)
    out[0] = w[0]
    s = np.sqrt(1 - a * a)
    for i in range(1, n):
        out[i] = a * out[i - 1] + s * w[i]
    return out


def _kernel(n: int, sigma: float) -> np.ndarray:
    """``(n, n)`` row-normalised Gaussian smoothing matrix (sigma in cells), float32."""
    i = np.arange(n)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / max(sigma, 1e-3)) ** 2)
    return (k / k.sum(1, keepdims=True)).astype(np.float32)


def _smooth_noise(rng, shape, corr_cells: float, ar: float) -> np.ndarray:
    """Unit-sd noise ``shape = (T, H, W)``: Gaussian-correlated over ``corr_cells`` in space,
    AR(1) with lag-one correlation ``ar`` in time. float32."""
    T, H, W = shape
    w = rng.standard_normal(shape, dtype=np.float32)
    w = _kernel(H, corr_cells) @ w @ _kernel(W, corr_cells).T
    w /= w.std() + 1e-12
    out = np.empty_like(w)
    out[0] = w[0]
    s = np.float32(np.sqrt(1 - ar * ar))
    for t in range(1, T):
        out[t] = ar * out[t - 1] + s * w[t]
    return out


def _cos_zenith(times: pd.DatetimeIndex, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """cos(solar zenith) ``(T, H, W)`` for UTC ``times`` on the grid (simple declination formula)."""
    doy = times.dayofyear.values[:, None, None]
    hour = (times.hour.values + times.minute.values / 60.0)[:, None, None]
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (doy - 81) / 365.0)
    ha = np.deg2rad(15.0 * (hour + lon[None, None, :] / 15.0 - 12.0))
    la = np.deg2rad(lat)[None, :, None]
    return np.sin(la) * np.sin(decl) + np.cos(la) * np.cos(decl) * np.cos(ha)


def _gauss_blob(lat_i, lon_i, ci, cj, sigma):
    return np.exp(-0.5 * (((lat_i[:, None] - ci) ** 2 + (lon_i[None, :] - cj) ** 2) / sigma**2))


def _traffic_profile(local_hour, weekday):
    """Traffic emission factor: rush hours at 8 and 18 h local, weekends at 60 %, mean ~1."""
    h = local_hour
    f = 0.35 + 1.1 * np.exp(-0.5 * ((h - 8) / 1.5) ** 2) + 1.0 * np.exp(-0.5 * ((h - 18) / 2.0) ** 2) + 0.5 * ((h > 6) & (h < 21))
    return f * np.where(weekday >= 5, 0.6, 1.0)


def _rush(local_hour):
    return np.exp(-0.5 * ((local_hour - 8) / 1.5) ** 2) + np.exp(-0.5 * ((local_hour - 18) / 2.0) ** 2)


def _met(times, lat, lon, rng):
    """Hourly meteorology on the grid: dict of ``(T, H, W)`` float32 arrays (SI units)."""
    T = len(times)
    H, W = len(lat), len(lon)
    doy = times.dayofyear.values
    season = -np.cos(2 * np.pi * (doy - 20) / 365.0)  # -1 mid-January .. +1 mid-July
    syn = _ar1(rng, T, 72.0, (5,))  # synoptic: u, v, T anomaly, shear, cloud
    ubar = 3.0 + 4.0 * syn[:, 0]
    vbar = 0.5 + 3.0 * syn[:, 1]
    shear = 2.0 * syn[:, 3]
    cloud_z = 0.6 * syn[:, 4] + 0.8 * _ar1(rng, T, 18.0)
    rain_z = 0.5 * syn[:, 4] + 0.87 * _ar1(rng, T, 8.0)
    yi = np.linspace(-1, 1, H)
    xi = np.linspace(-1, 1, W)
    u = ubar[:, None, None] + shear[:, None, None] * yi[None, :, None] + 0 * xi[None, None, :]
    v = vbar[:, None, None] + 0.8 * shear[:, None, None] * xi[None, None, :] + 0 * yi[None, :, None]
    cz = _cos_zenith(times, lat, lon)
    cloud = 1.0 / (1.0 + np.exp(-2.0 * cloud_z))  # 0 clear .. 1 overcast
    sw = 1000.0 * np.clip(cz, 0, None) ** 1.15 * (1.0 - 0.7 * cloud)[:, None, None]
    local_hour = (times.hour.values[:, None, None] + lon[None, None, :] / 15.0) % 24
    diurnal = np.cos(2 * np.pi * (local_hour - 15) / 24.0)
    tanom = _ar1(rng, T, 96.0)
    tair = (284.0 + 10.0 * season[:, None, None] + 3.5 * tanom[:, None, None] - 3.0 * yi[None, :, None]
            + (4.5 + 1.5 * season[:, None, None]) * diurnal * (1.0 - 0.5 * cloud[:, None, None]))
    rain_mmh = np.clip(rain_z - 1.1, 0, None) * 1.5
    rain = rain_mmh[:, None, None] * (1.2 - 0.4 * (xi[None, None, :] + 1) / 2) * np.ones((1, H, 1))
    speed = np.hypot(u, v)
    target = 120.0 + 40.0 * speed + 1400.0 * sw / 1000.0 * (0.75 + 0.25 * season[:, None, None])
    target = np.clip(target, 80.0, 2500.0)
    blh = np.empty_like(target)
    blh[0] = target[0]
    for t in range(1, T):  # the layer grows and collapses over ~1-2 h, not instantly
        blh[t] = blh[t - 1] + 0.6 * (target[t] - blh[t - 1])
    f4 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"Tair": f4(tair), "Wind_E": f4(u), "Wind_N": f4(v), "SWdown": f4(sw), "Rainf": f4(rain / 3600.0),
            "blh": f4(blh), "local_hour": f4(local_hour), "season": season}


class _Advector:
    """Semi-Lagrangian bilinear advection of tracers ``(K, H, W)`` by winds ``u, v``
    ``(H, W)`` [m s-1] over one step; outside the domain the inflow values ``bnd`` (K,)."""

    def __init__(self, K, H, W, dt, dx, dy):
        self.pad = np.empty((K, H + 2, W + 2))
        self.ii, self.jj = np.meshgrid(np.arange(H, dtype=float) + 1.0, np.arange(W, dtype=float) + 1.0, indexing="ij")
        self.H, self.W, self.sy, self.sx = H, W, dt / dy, dt / dx

    def __call__(self, c, u, v, bnd):
        pad, H, W = self.pad, self.H, self.W
        pad[:] = bnd[:, None, None]
        pad[:, 1:-1, 1:-1] = c
        yd = np.clip(self.ii - v * self.sy, 0.0, H + 1.0 - 1e-9)
        xd = np.clip(self.jj - u * self.sx, 0.0, W + 1.0 - 1e-9)
        i0 = yd.astype(int)
        j0 = xd.astype(int)
        fy = yd - i0
        fx = xd - j0
        top = pad[:, i0, j0] * (1 - fx) + pad[:, i0, j0 + 1] * fx
        bot = pad[:, i0 + 1, j0] * (1 - fx) + pad[:, i0 + 1, j0 + 1] * fx
        return top * (1 - fy) + bot * fy


def _ctm(times, lat, lon, met, rng, keep, progress=None):
    """Run the toy CTM hourly over ``times``; returns the tracers at the hour indices
    ``keep`` (sorted), ``(len(keep), K, H, W)`` float32 [ug m-3]."""
    T = len(times)
    H, W = len(lat), len(lon)
    dt = _H
    dy = (lat[1] - lat[0]) * 111e3
    dx = (lon[1] - lon[0]) * 111e3 * np.cos(np.deg2rad(lat.mean()))
    lat_i = np.arange(H) / H
    lon_i = np.arange(W) / W
    # cities and stacks at seeded places (grid fractions, so any grid size has the same layout)
    n_city = 4
    ci = rng.uniform(0.2, 0.8, n_city)
    cj = rng.uniform(0.3, 0.85, n_city)
    strength = np.array([1.0, 0.7, 0.5, 0.4])
    sig = np.array([0.045, 0.035, 0.03, 0.03])
    city = sum(s * _gauss_blob(lat_i, lon_i, a, b, g) for s, a, b, g in zip(strength, ci, cj, sig))
    stacks = np.zeros((H, W))
    for a, b, q in zip(rng.uniform(0.15, 0.85, 3), rng.uniform(0.3, 0.9, 3), (1.0, 0.6, 0.4)):
        stacks[int(a * H), int(b * W)] += q
    stacks *= (H * W) / (32 * 32)  # the same kg/h per stack whatever the cell area (flux = rate / area)
    sea = (lon_i[None, :] < 0.12) * np.ones((H, 1))
    weekday = np.asarray(times.dayofweek)
    doy = np.asarray(times.dayofyear)
    season = met["season"]
    o3_bg = 55.0 + 20.0 * np.sin(2 * np.pi * (doy - 80) / 365.0)
    keep = np.asarray(keep)
    slot = np.full(T, -1)
    slot[keep] = np.arange(keep.size)
    out = np.empty((keep.size, len(_TRACERS), H, W), dtype=np.float32)
    c = np.zeros((len(_TRACERS), H, W))
    bnd0 = np.array([4.0, 1.5, 0.0, 0.0, 3.0, 5.0, 3.0, 0.0])
    ft0 = np.array([1.0, 0.5, 0.0, 0.0, 1.0, 2.0, 1.0, 0.0])
    c[:] = bnd0[:, None, None]
    c[_T["O3"]] = o3_bg[0]
    h_old = met["blh"][0].astype(float)
    adv = _Advector(len(_TRACERS), H, W, dt, dx, dy)
    iN, iS, iT, iR, iNat, iSu, iNi, iO = (_T[k] for k in _TRACERS)
    pm_keep = np.exp(-dt / (4 * 86400.0))
    nat_keep = np.exp(-dt / 86400.0)
    bar = progress.bar(T, "synthetic CTM", unit="h") if progress else None
    for t in range(T):
        tair, u, v = met["Tair"][t], met["Wind_E"][t], met["Wind_N"][t]
        h = met["blh"][t].astype(float)
        rad = met["SWdown"][t] / 1000.0
        rain = met["Rainf"][t] * 3600.0  # mm h-1
        lh = met["local_hour"][t]
        winter = max(0.0, -season[t])
        we = weekday[t] >= 5
        bnd = bnd0.copy()
        bnd[iSu] += 2.0 * winter
        bnd[iNi] += 4.0 * winter
        bnd[iO] = o3_bg[t]
        ft = ft0.copy()
        ft[iO] = o3_bg[t] + 15.0
        # 1. advection
        c = adv(c, u, v, bnd)
        # 2. entrainment when the boundary layer grows
        grow = np.maximum(h - h_old, 0.0)
        c = (c * h_old + ft[:, None, None] * grow) / (h_old + grow)
        h_old = h
        # 3. emissions [ug m-2 s-1], injected into the boundary layer
        inj = dt / h
        e_nox = (6.0 * city * _traffic_profile(lh, weekday[t]) + 0.08 + 0.5 * stacks * (0.8 if we else 1.0)) * inj
        heat = np.clip((288.0 - tair) / 12.0, 0.0, 1.5)
        c[iN] += e_nox
        c[iS] += (5.0 * stacks * (0.8 if we else 1.0) + 0.03 * city) * inj
        c[iT] += 0.07 * e_nox
        c[iR] += 0.45 * city * heat * (0.6 + 1.2 * np.exp(-0.5 * ((lh - 20) / 2.5) ** 2)) * inj
        c[iNat] += 0.012 * (u * u + v * v) * sea * inj
        # 4. chemistry and removal
        lost = c[iN] * (1 - np.exp(-(1 / (14 * _H) + rad / (4 * _H)) * dt))
        c[iN] -= lost
        c[iNi] += 0.35 * np.clip((293.0 - tair) / 15.0, 0.0, 1.0) * lost
        k_ox = 1 / (60 * _H) + rad / (30 * _H)
        k_wet = 0.15 * rain / _H
        lost_so2 = c[iS] * (1 - np.exp(-(k_ox + k_wet) * dt))
        c[iS] -= lost_so2
        c[iSu] += 0.75 * lost_so2 * k_ox / (k_ox + k_wet)
        nox = c[iN]
        prod = np.minimum(18.0 * rad * np.exp((tair - 293.0) / 7.0) * nox / (nox + 4.0), 30.0)
        o3 = c[iO] + prod - 0.9 * e_nox
        o3 = o3 * np.exp(-0.004 / h * dt) + (o3_bg[t] - o3) * dt / (48 * _H)
        c[iO] = np.maximum(o3, 0.0)
        wet = np.exp(-0.25 * rain)
        c[[iR, iSu, iNi]] *= pm_keep * wet
        c[iT] *= pm_keep
        c[iNat] *= nat_keep * wet
        np.maximum(c, 0.0, out=c)
        if slot[t] >= 0:
            out[slot[t]] = c
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _no2(nox, o3, rad):
    """Photostationary NO2 = NOx / (1 + J / (k O3)) [ug m-3]."""
    j = 0.009 * rad
    ko3 = 0.02 * np.maximum(o3, 0.0) / 80.0
    return nox * ko3 / (ko3 + j + 1e-9)


def _shift(a, dy: int, dx: int):
    """Displace fields ``(..., H, W)`` by ``(dy, dx)`` cells (edge values fill the gap)."""
    H, W = a.shape[-2:]
    iy = np.clip(np.arange(H) - dy, 0, H - 1)
    ix = np.clip(np.arange(W) - dx, 0, W - 1)
    return a[..., iy, :][..., ix]


def synthetic_cams(
    n_lat: int = 32,
    n_lon: int = 32,
    start: str = "2021-01-01",
    days: int = 364,
    step_hours: int = 6,
    first_hour: int = 3,
    lead_days=(0, 1, 2),
    members=None,
    seed: int = 0,
    spinup_days: int = 5,
    progress=False,
) -> xr.Dataset:
    """A SYNTHETIC CAMS-like multi-model ensemble (see the module docstring for the CTM).

    Parameters
    ----------
    n_lat, n_lon : grid size (cells of ~28 km x 28 km at 32 x 32; the domain is fixed at
        44-52 N, 0-12 E, so a smaller grid has larger cells).
    start, days : first valid day (UTC) and number of days.
    step_hours, first_hour : valid times every ``step_hours`` from ``first_hour`` UTC
        (default 03, 09, 15, 21 UTC: night, morning rush, afternoon O3 peak, evening).
    lead_days : forecast lead days (0 = hours 0-23 of the run).
    members : member names from :data:`MEMBER_ERRORS` (default all 11).
    seed : everything (weather, source places, member noise) follows from it.

    Returns
    -------
    ``xr.Dataset`` readable by :class:`ailand.mme.MMEData`: ``O3, NO2, SO2, PM10``
    ``(member, lead_time, time, lat, lon)`` float32 [ug m-3], ``<var>_analysis``
    ``(time, lat, lon)`` [ug m-3], predictors :data:`PREDICTORS`
    ``(lead_time, time, lat, lon)``. Default size: 11 x 3 x 1456 x 32 x 32 per pollutant
    (~790 MB float32 in all); the CTM takes ~10 s.
    """
    if n_lat < 4 or n_lon < 4:
        raise ValueError(f"grid must be at least 4 x 4 cells, got {n_lat} x {n_lon}")
    if step_hours < 1 or 24 % step_hours:
        raise ValueError(f"step_hours must divide 24 (1, 2, 3, 4, 6, 8, 12, 24), got {step_hours}")
    if not 0 <= first_hour < step_hours:
        raise ValueError(f"first_hour must be in [0, step_hours), got {first_hour}")
    lead_days = [int(x) for x in lead_days]
    if not lead_days or min(lead_days) < 0 or len(set(lead_days)) != len(lead_days):
        raise ValueError(f"lead_days must be distinct non-negative integers, got {lead_days}")
    progress = as_progress(progress)
    names = list(MEMBER_ERRORS) if members is None else list(members)
    unknown = [m for m in names if m not in MEMBER_ERRORS]
    if unknown:
        raise ValueError(f"unknown members {unknown}; choose from {list(MEMBER_ERRORS)}")
    root = np.random.SeedSequence(int(seed))
    s_met, s_ctm, s_fc, s_mem = root.spawn(4)
    lat = 44.0 + (np.arange(n_lat) + 0.5) * 8.0 / n_lat
    lon = 0.0 + (np.arange(n_lon) + 0.5) * 12.0 / n_lon
    t0 = pd.Timestamp(start) - pd.Timedelta(days=spinup_days)
    hourly = pd.date_range(t0, periods=(days + spinup_days) * 24, freq="h")
    met = _met(hourly, lat, lon, np.random.default_rng(s_met))
    hour0 = spinup_days * 24
    valid = np.arange(hour0 + first_hour, len(hourly), step_hours)
    times = hourly[valid]
    Tn = len(valid)
    phases = sorted({0} | {int(MEMBER_ERRORS[m].get("phase", 0)) for m in names})
    keep = np.unique(np.clip(np.concatenate([valid - p for p in phases]), 0, len(hourly) - 1))
    conc = _ctm(hourly, lat, lon, met, np.random.default_rng(s_ctm), keep, progress=progress)

    # ---- truth components at the kept hours (the analysis at the valid ones) ----
    at = np.searchsorted(keep, valid)
    rad = met["SWdown"][keep] / 1000.0
    nox = conc[:, _T["NOx"]]
    o3 = conc[:, _T["O3"]]
    no2 = _no2(nox, o3, rad).astype(np.float32)
    pm = {k: conc[:, _T[f"pm_{k}"]] for k in ("traffic", "res", "nat", "sulf", "nitr")}
    so2 = conc[:, _T["SO2"]]
    analysis = {"O3": o3[at], "NO2": no2[at], "SO2": so2[at], "PM10": sum(pm.values())[at]}

    # ---- what every member gets wrong (the "model world") ----
    lh = met["local_hour"][keep]
    wk = np.asarray(hourly.dayofweek)[keep][:, None, None]
    flat_week = np.where(wk >= 5, 1.0 / 0.6, 1.0) * 0.9  # a flat weekly emission profile
    no2_model = (no2 * flat_week * (1.0 - 0.3 * _rush(lh) / (1.0 + _rush(lh)))).astype(np.float32)
    night_o3 = 12.0 * np.clip((400.0 - met["blh"][keep]) / 300.0, 0.0, 1.0)
    o3_model = (o3 + night_o3).astype(np.float32)
    so2_model = (0.85 * (0.6 * so2 + 0.4 * gaussian_filter(so2, sigma=(0, 1.5, 1.5), mode="nearest"))).astype(np.float32)
    pm_model = dict(pm)
    pm_model["nitr"] = 0.3 * pm["nitr"]
    per_day = 24 // step_hours

    def member_field(var, spec):
        """The member's field at the kept hours before noise, displacement and smoothing."""
        if var == "O3":
            return o3_model + (0.6 * no2 if spec.get("no_titration") else 0.0)
        if var == "NO2":
            return no2_model
        if var == "SO2":
            return so2_model
        return sum(v for k, v in pm_model.items() if k not in spec.get("missing", ()))

    fc_rng = np.random.default_rng(s_fc)
    # the error of the weather forecast that drives every member: shared, unpredictable
    common = [0.08 * (1.0 + 0.5 * lead) * _smooth_noise(fc_rng, (Tn, n_lat, n_lon), corr_cells=max(1.0, n_lat / 8), ar=0.85)
              for lead in lead_days]
    data = {v: np.empty((len(names), len(lead_days), Tn, n_lat, n_lon), dtype=np.float32) for v in POLLUTANTS}
    mem_seeds = s_mem.spawn(len(MEMBER_ERRORS))
    seed_of = dict(zip(MEMBER_ERRORS, mem_seeds))
    bar = progress.bar(len(names), "synthetic members", unit="member") if progress else None
    for m, name in enumerate(names):
        spec = MEMBER_ERRORS[name]
        rng = np.random.default_rng(seed_of[name])
        idx = np.searchsorted(keep, np.clip(valid - int(spec.get("phase", 0)), 0, len(hourly) - 1))
        fields = {}
        for var in POLLUTANTS:
            f = member_field(var, spec)[idx]
            if "damp" in spec:  # damp the departures from the running daily mean of the samples
                d = uniform_filter1d(f, size=per_day, axis=0, mode="nearest")
                f = d + spec["damp"] * (f - d)
            fields[var] = f
        for li, lead in enumerate(lead_days):
            sd = spec.get("noise", 0.05) * (1.0 + spec.get("growth", 0.35) * lead)
            eps = _smooth_noise(rng, (Tn, n_lat, n_lon), corr_cells=max(1.0, n_lat / 10), ar=0.8)
            for var in POLLUTANTS:
                f = fields[var]
                if "shift" in spec:
                    dy, dx = spec["shift"]
                    f = _shift(f, int(round(dy * n_lat / 32)), int(round((dx + spec.get("grow", 0) * lead) * n_lon / 32)))
                if "smooth" in spec:
                    s = spec["smooth"] * n_lat / 32
                    f = gaussian_filter(f, sigma=(0, s, s), mode="nearest")
                f = f * spec.get("mult", {}).get(var, 1.0) + spec.get("add", {}).get(var, 0.0)
                f = f * np.exp(sd * eps + common[li] - 0.5 * sd * sd)
                data[var][m, li] = np.clip(f, 0.0, None)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # ---- forecast meteorology: the truth plus errors growing with lead ----
    pred = {}
    err_sd = {"Tair": 0.6, "Wind_E": 0.8, "Wind_N": 0.8, "SWdown": 0.12, "Rainf": 0.4, "blh": 0.12}
    for name in PREDICTORS:
        arr = np.empty((len(lead_days), Tn, n_lat, n_lon), dtype=np.float32)
        truth = met[name][valid]
        for li, lead in enumerate(lead_days):
            eps = _smooth_noise(fc_rng, (Tn, n_lat, n_lon), corr_cells=max(1.0, n_lat / 6), ar=0.9)
            sd = err_sd[name] * (1.0 + lead)
            if name in ("SWdown", "Rainf", "blh"):
                arr[li] = truth * np.exp(sd * eps - 0.5 * sd * sd)
            else:
                arr[li] = truth + sd * eps
        pred[name] = arr

    coords = {
        "member": ("member", np.array(names, dtype=object), {"long_name": "member model (SYNTHETIC)"}),
        "lead_time": ("lead_time", np.array(lead_days, dtype=np.int64),
                      {"units": "day", "long_name": "forecast lead day (0 = hours 0-23 of the run started at 00 UTC)"}),
        "time": ("time", times.values, {"long_name": "valid time (UTC)"}),
        "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
        "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"}),
    }
    dims5 = ("member", "lead_time", "time", "lat", "lon")
    ds = xr.Dataset(coords=coords)
    for var in POLLUTANTS:
        ds[var] = xr.DataArray(data[var], dims=dims5, attrs={
            "units": CONC_UNITS, "standard_name": STANDARD_NAMES[var], "mme_role": "members",
            "long_name": f"{var} mass concentration, member forecasts (SYNTHETIC, not CAMS)"})
        ds[var + ANALYSIS_SUFFIX] = xr.DataArray(analysis[var].astype(np.float32), dims=("time", "lat", "lon"), attrs={
            "units": CONC_UNITS, "standard_name": STANDARD_NAMES[var], "mme_role": "analysis", "variable": var,
            "long_name": f"{var} mass concentration, analysis (SYNTHETIC truth of the toy CTM)"})
    for name, (units, long_name) in PREDICTORS.items():
        ds[name] = xr.DataArray(pred[name], dims=("lead_time", "time", "lat", "lon"), attrs={
            "units": units, "mme_role": "predictor", "long_name": f"{long_name}, forecast (SYNTHETIC)"})
    ds.attrs = {
        "title": "SYNTHETIC CAMS-like multi-model ensemble (toy CTM; NOT real CAMS data)",
        "synthetic": 1,
        "source": f"ailand.mme.synthetic_cams(seed={seed})",
        "seed": int(seed),
        "Conventions": "CF-1.8",
        "member_errors": json.dumps({k: MEMBER_ERRORS[k] for k in names}),
        "common_member_errors": json.dumps(list(COMMON_ERRORS)),
        "chemistry": "see ailand.mme.synthetic module docstring",
    }
    return ds
