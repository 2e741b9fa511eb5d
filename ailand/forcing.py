"""Meteorological forcing: a seeded weather generator, a reader for real forcing, validation.

Every forcing Dataset has dims ``(time, site)`` and ecLand's offline variable names
(:data:`FORCING_VARIABLES`, SI units, float64)::

    Tair [K]  Qair [kg kg-1]  Wind_E, Wind_N [m s-1]  SWdown, LWdown [W m-2]
    Rainf, Snowf [kg m-2 s-1]  PSurf [Pa]

Conventions
-----------
* ``time`` is UTC and regular. State-like variables (``Tair``, ``Qair``, wind, ``PSurf``)
  are instantaneous at ``t``; fluxes (``SWdown``, ``LWdown``, ``Rainf``, ``Snowf``) are
  means over the step ``[t, t + dt)``, the step a model integrates when it starts at ``t``.
* ``Rainf`` is liquid, ``Snowf`` solid precipitation; ``Rainf + Snowf`` is the total. The
  phase rule is one function, :func:`snow_fraction` (all snow at or below 0 C, all rain at
  or above 2 C, a smooth cosine split between), used by the generator and the reader.
* **Static site fields travel with the forcing.** :func:`synthetic_forcing` copies every
  variable of :func:`ailand.sites.load_sites` (``lat``, ``sand``, ``clay``, ``cveg``,
  ``lai_min`` ...) into the result as site-only variables, so the model reads them from
  the forcing. If your own forcing lacks them, pass ``sites=`` to :func:`open_forcing`
  (or to the model), or call :func:`attach_sites`.

Main entry points
-----------------
:func:`synthetic_forcing` (weather generator), :func:`open_forcing` (NetCDF/zarr/Dataset
reader with alias mapping and unit conversion), :func:`validate_forcing` (checks that fail
with a message naming the variable, the problem, the time and the fix).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr
from scipy.signal import lfilter
from scipy.special import i0e, ndtr, ndtri

from .sites import load_sites

__all__ = [
    "FORCING_VARIABLES",
    "synthetic_forcing",
    "validate_forcing",
    "open_forcing",
    "attach_sites",
    "snow_fraction",
    "split_precipitation",
    "saturation_vapour_pressure",
    "specific_humidity",
    "cos_solar_zenith",
]

#: ecLand offline forcing names -> (units, long_name)
FORCING_VARIABLES: dict[str, tuple[str, str]] = {
    "Tair": ("K", "near-surface air temperature"),
    "Qair": ("kg kg-1", "near-surface specific humidity"),
    "Wind_E": ("m s-1", "eastward wind component"),
    "Wind_N": ("m s-1", "northward wind component"),
    "SWdown": ("W m-2", "downward shortwave radiation at the surface (mean over [t, t+dt))"),
    "LWdown": ("W m-2", "downward longwave radiation at the surface (mean over [t, t+dt))"),
    "Rainf": ("kg m-2 s-1", "rainfall rate, liquid (mean over [t, t+dt))"),
    "Snowf": ("kg m-2 s-1", "snowfall rate, solid (mean over [t, t+dt))"),
    "PSurf": ("Pa", "surface air pressure"),
}

SOLAR_CONSTANT = 1361.0  # W m-2
STEFAN_BOLTZMANN = 5.670374419e-8  # W m-2 K-4
T_MELT = 273.15  # K
T_ALL_SNOW = 273.15  # K, at or below: all precipitation is snow
T_ALL_RAIN = 275.15  # K, at or above: all precipitation is rain
EPSILON = 0.621981  # Rd / Rv
SECONDS_PER_DAY = 86400.0
MAX_RH = 0.99  # hourly relative humidity cap (w.r.t. ice below 0 C) of the generator


# ---------------------------------------------------------------------------------------
# thermodynamics and solar geometry (shared helpers, numpy)
# ---------------------------------------------------------------------------------------


def snow_fraction(tair):
    """Solid fraction of precipitation at air temperature ``tair`` [K].

    1 at or below 273.15 K, 0 at or above 275.15 K, and a smooth cosine ramp between:
    f = (1 + cos(pi (T - 273.15) / 2)) / 2. The single phase rule of the package.
    """
    t = np.asarray(tair, dtype=np.float64)
    x = np.clip((t - T_ALL_SNOW) / (T_ALL_RAIN - T_ALL_SNOW), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def split_precipitation(total, tair):
    """Split a total precipitation rate into ``(rain, snow)`` with :func:`snow_fraction`.

    ``rain + snow == total`` (to rounding); rain is exactly 0 at or below 273.15 K and snow
    exactly 0 at or above 275.15 K.
    """
    total = np.asarray(total, dtype=np.float64)
    f = snow_fraction(tair)
    snow = total * f
    rain = total * (1.0 - f)
    return rain, snow


def saturation_vapour_pressure(t, over: str = "auto"):
    """Saturation vapour pressure [Pa] at temperature ``t`` [K] (IFS Tetens formula).

    ``over="water"``, ``"ice"``, or ``"auto"`` (ice below 273.16 K, water above; the lower
    of the two, so humidity capped by it is unsaturated by any common definition).
    """
    t = np.asarray(t, dtype=np.float64)
    water = 611.21 * np.exp(17.502 * (t - 273.16) / (t - 32.19))
    if over == "water":
        return water
    ice = 611.21 * np.exp(22.587 * (t - 273.16) / (t + 0.7))
    if over == "ice":
        return ice
    if over != "auto":
        raise ValueError(f"over must be 'auto', 'water' or 'ice', not {over!r}")
    return np.where(t < 273.16, ice, water)


def specific_humidity(e, p):
    """Specific humidity [kg kg-1] from vapour pressure ``e`` [Pa] and pressure ``p`` [Pa]."""
    e = np.asarray(e, dtype=np.float64)
    return EPSILON * e / (np.asarray(p, dtype=np.float64) - (1.0 - EPSILON) * e)


def _orbit(times):
    """Solar declination [rad], equation of time [min], eccentricity factor, UTC hour.

    Spencer (1971) series in the fractional year. ``times``: datetime64 array.
    """
    t = np.asarray(times, dtype="datetime64[ns]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[ns]")
    next_year = (t.astype("datetime64[Y]") + 1).astype("datetime64[ns]")
    days_in_year = (next_year - year_start) / np.timedelta64(1, "D")
    day_frac = (t - year_start) / np.timedelta64(1, "D")  # 0 at 1 Jan 00 UTC
    hour = (t - t.astype("datetime64[D]").astype("datetime64[ns]")) / np.timedelta64(1, "h")
    g = 2.0 * np.pi * day_frac / days_in_year
    decl = (
        0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g)
    )
    eot = 229.18 * (
        0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g) - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )
    ecc = 1.000110 + 0.034221 * np.cos(g) + 0.001280 * np.sin(g) + 0.000719 * np.cos(2 * g) + 0.000077 * np.sin(2 * g)
    return decl, eot, ecc, hour


def _cos_zenith(orbit, lat: float, lon: float):
    decl, eot, _, hour = orbit
    hour_angle = np.deg2rad(15.0 * (hour + lon / 15.0 + eot / 60.0 - 12.0))
    phi = np.deg2rad(lat)
    return np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(hour_angle)


def cos_solar_zenith(times, lat: float, lon: float):
    """Instantaneous cosine of the solar zenith angle (negative at night).

    times : datetime64 array (T,) in UTC; lat, lon in degrees (east positive). Returns (T,).
    """
    return _cos_zenith(_orbit(times), lat, lon)


def _substep_orbit(times, dt: float):
    """Orbit terms at ``nsub`` mid-points of each step (every 10 min at most), shape (T * nsub,)."""
    nsub = max(1, int(np.ceil(dt / 600.0)))
    offsets = ((np.arange(nsub) + 0.5) * dt / nsub * 1e9).astype("timedelta64[ns]")
    sub = (np.asarray(times, dtype="datetime64[ns]")[:, None] + offsets[None, :]).ravel()
    return _orbit(sub), nsub


def _solar(orbit, nsub: int, lat: float, lon: float, elevation: float):
    """Top-of-atmosphere and clear-sky surface shortwave [W m-2], means over [t, t+dt).

    ``orbit, nsub`` from :func:`_substep_orbit` (shared by all sites). Clear sky follows
    Meinel: 1.1 S0 E0 cosZ 0.7 ** (AM ** 0.678), with the Kasten-Young air mass scaled by
    pressure. Returns two arrays (T,), exactly 0 when the sun is down for the whole step.
    """
    cz = _cos_zenith(orbit, lat, lon)
    up = cz > 0.0
    czp = np.where(up, cz, 0.0)
    toa = SOLAR_CONSTANT * orbit[2] * czp
    zen_deg = np.rad2deg(np.arccos(np.clip(cz, 0.0, 1.0)))
    airmass = 1.0 / (czp + 0.50572 * np.maximum(96.07995 - zen_deg, 1e-3) ** -1.6364)
    airmass = airmass * (1.0 - 2.25577e-5 * elevation) ** 5.25588
    clear = np.where(up, 1.1 * toa * 0.7 ** (airmass**0.678), 0.0)
    return toa.reshape(-1, nsub).mean(axis=1), clear.reshape(-1, nsub).mean(axis=1)


def _daily_toa(doy, lat: float):
    """Daily-mean top-of-atmosphere insolation [W m-2] at fractional day of year ``doy``."""
    g = 2.0 * np.pi * (np.asarray(doy, dtype=np.float64) - 1.0) / 365.25
    decl = 0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g) + 0.000907 * np.sin(2 * g)
    ecc = 1.000110 + 0.034221 * np.cos(g) + 0.001280 * np.sin(g)
    phi = np.deg2rad(lat)
    h0 = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1.0, 1.0))
    return SOLAR_CONSTANT / np.pi * ecc * (h0 * np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.sin(h0))


# ---------------------------------------------------------------------------------------
# weather generator
# ---------------------------------------------------------------------------------------

_STREAMS = ("weather", "rain", "temperature", "humidity", "wind", "direction", "gust", "pressure")
CLIMATE_FIELDS = (
    "lat", "lon", "elevation", "t_mean", "t_amp_seasonal", "t_peak_doy", "t_range_diurnal", "t_noise",
    "precip_annual", "wet_day_fraction", "wet_peak_doy", "wet_concentration", "rh_mean", "wind_mean",
    "wind_dir", "gust_rate", "gust_factor", "cloud_mean",
)


def _site_rngs(seed: int, name: str) -> dict[str, np.random.Generator]:
    """One independent generator per process, seeded from (seed, crc32(site name))."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    root = np.random.SeedSequence([int(seed), zlib.crc32(str(name).encode("utf-8"))])
    return {k: np.random.default_rng(s) for k, s in zip(_STREAMS, root.spawn(len(_STREAMS)))}


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) series with unit variance: x_k = phi x_{k-1} + sqrt(1 - phi^2) e_k."""
    e = rng.standard_normal(n + 1)
    return lfilter([np.sqrt(1.0 - phi**2)], [1.0, -phi], e[1:], zi=[phi * e[0]])[0]


def _event_steps(i0: np.ndarray, n: np.ndarray):
    """Flatten events (start step ``i0``, length ``n``) into (event id, step index, phase).

    phase is the mid-step position within the event, in (0, 1).
    """
    n = np.asarray(n, dtype=np.int64)
    event = np.repeat(np.arange(len(n)), n)
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return event, np.asarray(i0, dtype=np.int64)[event] + k, (k + 0.5) / n[event]


def _doy(times) -> np.ndarray:
    """1-based fractional day of year (1.0 = 1 Jan 00 UTC)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    return 1.0 + (t - t.astype("datetime64[Y]").astype("datetime64[ns]")) / np.timedelta64(1, "D")


def _seasonality(doy, peak: float, kappa: float) -> np.ndarray:
    """von Mises seasonal factor with annual mean 1: exp(kappa cos(2 pi (doy - peak) / 365.25)) / I0(kappa)."""
    c = np.cos(2.0 * np.pi * (np.asarray(doy) - peak) / 365.25)
    return np.exp(kappa * (c - 1.0)) / i0e(kappa)


def _time_axis(start, end, freq) -> tuple[pd.DatetimeIndex, float]:
    """Regular UTC times from ``start``; a date-only ``end`` includes that whole day."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    try:
        dt = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds()
    except (ValueError, TypeError) as err:
        raise ValueError(f"freq {freq!r} is not a fixed time step such as '1h' or '30min'") from err
    if not 0 < dt <= SECONDS_PER_DAY:
        raise ValueError(f"freq {freq!r} must be a positive step of at most one day")
    if end == end.normalize():
        times = pd.date_range(start, end + pd.Timedelta(days=1), freq=freq, inclusive="left")
    else:
        times = pd.date_range(start, end, freq=freq)
    if len(times) == 0:
        raise ValueError(f"no time steps between start={start} and end={end}")
    return times, dt


def _precipitation(rngs, c, days, doy_days, t_sec, dt, n_steps):
    """Total precipitation rate (n_steps,) [kg m-2 s-1] and the latent daily weather state.

    A daily latent Gaussian AR(1) ``z`` (wet-day persistence); day d is wet when
    z_d > Phi^-1(1 - p_wet(d)), p_wet = wet_day_fraction x seasonality (so P(wet) = p_wet).
    Wet-day totals are gamma(0.75) with mean A s(d)^0.3, A set so the expected annual total
    equals ``precip_annual``. Each wet day's total falls as one storm of lognormal duration
    starting at a uniform local time.
    """
    z = _ar1(rngs["weather"], len(days), 0.5)
    s = _seasonality(doy_days, c["wet_peak_doy"], c["wet_concentration"])
    p_wet = np.clip(c["wet_day_fraction"] * s, 0.0, 0.95)
    wet = z > -ndtri(np.maximum(p_wet, 1e-300))
    clim = (np.arange(3652) + 0.5) / 10.0  # climatological day-of-year grid
    s_clim = _seasonality(clim, c["wet_peak_doy"], c["wet_concentration"])
    expected = np.mean(np.clip(c["wet_day_fraction"] * s_clim, 0.0, 0.95) * s_clim**0.3) * 365.25
    scale = c["precip_annual"] / expected if expected > 0 else 0.0
    shape = 0.75
    rr = rngs["rain"]
    amount = rr.gamma(shape, 1.0 / shape, len(days)) * scale * s**0.3  # mm = kg m-2 per wet day
    dur_med = np.clip(9.0 - 0.25 * c["t_mean"], 2.5, 9.0)  # h: long fronts cold, short showers hot
    duration = np.clip(dur_med * np.exp(0.6 * rr.standard_normal(len(days))), dt / 3600.0, 36.0)
    start_local = rr.uniform(0.0, 24.0, len(days))
    start_sec = days * SECONDS_PER_DAY + (start_local - c["lon"] / 15.0) * 3600.0
    i0 = np.floor((start_sec[wet] - t_sec[0]) / dt).astype(np.int64)
    n = np.maximum(1, np.round(duration[wet] * 3600.0 / dt)).astype(np.int64)
    rate = amount[wet] / (n * dt)
    event, idx, _ = _event_steps(i0, n)
    keep = (idx >= 0) & (idx < n_steps)
    total = np.zeros(n_steps)
    np.add.at(total, idx[keep], rate[event[keep]])
    return total, z, s


def _cloud(z, s, c):
    """Daily cloud fraction Phi(1.2 z + b + 0.3 log s): high on wet days and in the wet season.

    b is solved so the climatological mean cloud fraction equals ``cloud_mean``.
    """
    a, g = 1.2, 0.3
    clim = (np.arange(365) + 0.5)
    log_s = np.log(_seasonality(clim, c["wet_peak_doy"], c["wet_concentration"]))
    target = np.clip(c["cloud_mean"], 0.01, 0.99)
    lo, hi = -10.0, 10.0
    for _ in range(60):  # bisection: mean over the year of Phi((b + g log s) / sqrt(1 + a^2))
        b = 0.5 * (lo + hi)
        m = ndtr((b + g * log_s) / np.hypot(1.0, a)).mean()
        lo, hi = (b, hi) if m < target else (lo, b)
    return ndtr(a * z + 0.5 * (lo + hi) + g * np.log(s))


def _generate_site(c: dict, times: pd.DatetimeIndex, dt: float, rngs, sub_orbit) -> dict[str, np.ndarray]:
    """Hourly (any step) forcing for one site from its climate statistics ``c``.

    ``rngs`` from :func:`_site_rngs`; ``sub_orbit`` = :func:`_substep_orbit` (times, dt).
    """
    t = times.values
    n_steps = len(t)
    day0 = t[0].astype("datetime64[D]")
    t_sec = (t - day0.astype("datetime64[ns]")) / np.timedelta64(1, "s")
    n_days = int(np.floor((t_sec[-1] + dt) / SECONDS_PER_DAY)) + 2
    days = np.arange(n_days)
    day_centres = (days + 0.5) * SECONDS_PER_DAY
    doy_days = _doy((day0 + days).astype("datetime64[ns]")) + 0.5
    doy = _doy(t)
    to_steps = lambda daily: np.interp(t_sec, day_centres, daily)  # noqa: E731
    local_hour = (t_sec / 3600.0 + c["lon"] / 15.0) % 24.0

    # pressure: hypsometric mean + synoptic AR(1) (3 days)
    p_mean = 101325.0 * (1.0 - 2.25577e-5 * c["elevation"]) ** 5.25588
    p_std = 150.0 + 12.0 * abs(c["lat"])
    psurf = p_mean + p_std * _ar1(rngs["pressure"], n_steps, np.exp(-dt / (3 * SECONDS_PER_DAY)))

    # precipitation and cloud (latent daily weather state)
    precip, z, s = _precipitation(rngs, c, days, doy_days, t_sec, dt, n_steps)
    cloud_d = _cloud(z, s, c)
    cloud = np.where(precip > 0, np.maximum(to_steps(cloud_d), 0.9), to_steps(cloud_d))

    # temperature: seasonal + synoptic AR(1) (3 days) + cloud effect + diurnal cycle
    sun_rel = _daily_toa(doy_days, c["lat"]) / _daily_toa(np.arange(365) + 1.0, c["lat"]).mean()
    dtr_d = c["t_range_diurnal"] * (1.25 - 0.8 * cloud_d) / (1.25 - 0.8 * c["cloud_mean"])
    dtr_d = dtr_d * np.clip(np.sqrt(sun_rel), 0.15, 1.4)
    cloud_dt_d = 3.0 * (cloud_d - c["cloud_mean"]) * (0.5 - sun_rel)  # cloudy: cooler by day, milder in polar night
    seasonal = lambda d: c["t_amp_seasonal"] * np.cos(2 * np.pi * (d - c["t_peak_doy"]) / 365.25)  # noqa: E731
    synoptic = c["t_noise"] * _ar1(rngs["temperature"], n_steps, np.exp(-dt / (3 * SECONDS_PER_DAY)))
    t_daily_mean = T_MELT + c["t_mean"] + seasonal(doy) + synoptic + to_steps(cloud_dt_d)
    tair = t_daily_mean + 0.5 * to_steps(dtr_d) * np.cos(2 * np.pi * (local_hour - 15.0) / 24.0)

    # humidity: daily vapour pressure from daily RH at the daily mean temperature, capped hourly
    rh_d = c["rh_mean"] + 0.4 * (cloud_d - c["cloud_mean"]) + 0.06 * _ar1(rngs["humidity"], n_days, 0.6)
    rh_d = np.clip(rh_d, 0.05, 0.97)
    t_mean_d = np.interp(day_centres, t_sec, t_daily_mean)
    e = np.minimum(to_steps(rh_d * saturation_vapour_pressure(t_mean_d)), MAX_RH * saturation_vapour_pressure(tair))
    qair = specific_humidity(e, psurf)

    # wind: lognormal AR(1) speed (1.5 days) x diurnal mixing, plus gusty episodes; wandering direction
    sigma = 0.4
    speed = np.exp(sigma * _ar1(rngs["wind"], n_steps, np.exp(-dt / (1.5 * SECONDS_PER_DAY))) - 0.5 * sigma**2)
    speed *= 1.0 + 0.25 * np.cos(2 * np.pi * (local_hour - 14.0) / 24.0)
    gust, gust_mean = _gusts(rngs["gust"], c, t_sec, dt, n_steps)
    speed = np.maximum(c["wind_mean"] * (speed + gust) / (1.0 + gust_mean), 0.1)
    wdir = np.deg2rad(c["wind_dir"] + 50.0 * _ar1(rngs["direction"], n_steps, np.exp(-dt / SECONDS_PER_DAY)))

    # radiation
    _, clear = _solar(*sub_orbit, c["lat"], c["lon"], c["elevation"])
    swdown = clear * (1.0 - 0.75 * cloud**3.4)  # Kasten & Czeplak (1980)
    w = 46.5 * (e / 100.0) / tair  # precipitable water [cm], Prata (1996)
    emis_clear = 1.0 - (1.0 + w) * np.exp(-np.sqrt(1.2 + 3.0 * w))  # Prata (1996); Brutsaert-like, better when cold
    emis = np.minimum((1.0 - 0.84 * cloud) * emis_clear + 0.84 * cloud, 1.0)  # Unsworth & Monteith (1975)
    lwdown = emis * STEFAN_BOLTZMANN * tair**4

    rain, snow = split_precipitation(precip, tair)
    return {
        "Tair": tair, "Qair": qair, "Wind_E": -speed * np.sin(wdir), "Wind_N": -speed * np.cos(wdir),
        "SWdown": swdown, "LWdown": lwdown, "Rainf": rain, "Snowf": snow, "PSurf": psurf,
    }


def _gusts(rng, c, t_sec, dt, n_steps):
    """Additive gust term (n_steps,), in units of the mean wind, and its expected mean.

    Episodes start as a Poisson process (``gust_rate`` per day), last a lognormal 12 h
    (3-72 h) and add a (gust_factor - 1) x mean wind at their peak, a ~ U(0.6, 1), with a
    sin^2 shape.
    """
    span_days = (t_sec[-1] + dt - t_sec[0]) / SECONDS_PER_DAY
    n_ep = rng.poisson(c["gust_rate"] * span_days)
    starts = t_sec[0] + rng.uniform(0.0, span_days * SECONDS_PER_DAY, n_ep)
    hours = np.clip(12.0 * np.exp(0.5 * rng.standard_normal(n_ep)), 3.0, 72.0)
    peak = rng.uniform(0.6, 1.0, n_ep) * (c["gust_factor"] - 1.0)
    i0 = np.floor((starts - t_sec[0]) / dt).astype(np.int64)
    n = np.maximum(1, np.round(hours * 3600.0 / dt)).astype(np.int64)
    event, idx, phase = _event_steps(i0, n)
    keep = idx < n_steps
    gust = np.zeros(n_steps)
    np.add.at(gust, idx[keep], peak[event[keep]] * np.sin(np.pi * phase[keep]) ** 2)
    mean_hours = 12.0 * np.exp(0.5 * 0.5**2)
    return gust, c["gust_rate"] * 0.8 * (c["gust_factor"] - 1.0) * 0.5 * mean_hours / 24.0


def _as_sites(sites) -> xr.Dataset:
    """A site Dataset from None/"all"/names/comma string, or a Dataset passed through."""
    if isinstance(sites, xr.Dataset):
        if "site" not in sites.dims:
            raise ValueError("sites Dataset must have a 'site' dim (use ailand.sites.load_sites)")
        return sites
    return load_sites(sites)


def synthetic_forcing(
    sites: str | Iterable[str] | xr.Dataset | None = None,
    start: str = "2020-01-01",
    end: str = "2020-12-31",
    freq: str = "1h",
    seed: int = 0,
) -> xr.Dataset:
    """Seeded synthetic forcing for each site, from the climate statistics of ``sites``.

    Parameters
    ----------
    sites : None or "all", list of names, "A,B" string, or a Dataset from ``load_sites``
        (which must carry the climate columns ``t_mean`` ... ``cloud_mean``).
    start, end : dates (UTC). A date-only ``end`` includes that whole day, so
        2020-01-01..2020-12-31 at 1h gives 8784 steps.
    freq : fixed step (``"1h"``, ``"30min"``, ``"3h"``, ... at most one day).
    seed : non-negative int. A site's forcing depends only on (seed, site name, period,
        freq), never on which other sites are requested.

    Returns
    -------
    xarray.Dataset with the 9 variables of :data:`FORCING_VARIABLES` as float64
    ``(time, site)`` arrays, plus every static site variable as ``(site,)`` arrays.

    The generator per site (all vectorised over time):

    * precipitation: daily latent AR(1) state -> wet days with seasonal probability,
      gamma amounts scaled to ``precip_annual``, one storm per wet day; phase by
      :func:`snow_fraction`;
    * cloud fraction: function of the same latent state (wet days cloudy), >= 0.9 while it rains;
    * Tair: seasonal cosine + AR(1) synoptic noise (3-day correlation) + diurnal cosine
      peaking at 15 local solar time, its range reduced by cloud and by short days;
    * Qair: daily vapour pressure from a daily RH (wetter when cloudy), capped at 99 % of
      saturation (over ice below 0 C) at every step;
    * wind: lognormal AR(1) speed with a diurnal cycle and Poisson gusty episodes,
      direction wandering about ``wind_dir``;
    * SWdown: step-mean clear-sky irradiance from solar geometry x (1 - 0.75 cloud^3.4);
    * LWdown: Prata (1996) clear-sky emissivity (Brutsaert-like when warm, sane in polar
      winter), raised towards 1 by cloud (Unsworth & Monteith);
    * PSurf: hypsometric pressure at ``elevation`` + AR(1) synoptic noise.
    """
    statics = _as_sites(sites)
    missing = [f for f in CLIMATE_FIELDS if f not in statics]
    if missing:
        raise ValueError(f"sites Dataset lacks climate fields {missing} needed by the weather generator")
    times, dt = _time_axis(start, end, freq)
    names = [str(n) for n in statics["site"].values]
    out = {v: np.empty((len(times), len(names))) for v in FORCING_VARIABLES}
    sub_orbit = _substep_orbit(times.values, dt)
    for j, name in enumerate(names):
        clim = {f: float(statics[f].values[j]) for f in CLIMATE_FIELDS}
        for v, values in _generate_site(clim, times, dt, _site_rngs(seed, name), sub_orbit).items():
            out[v][:, j] = values
    ds = xr.Dataset(
        {v: (("time", "site"), out[v], {"units": u, "long_name": ln}) for v, (u, ln) in FORCING_VARIABLES.items()},
        coords={"time": times.values.astype("datetime64[ns]"), "site": statics["site"].values},
    )
    ds["time"].attrs = {"long_name": "time (UTC); fluxes are means over [t, t+dt)"}
    ds = attach_sites(ds, statics)
    ds.attrs = {
        "title": "ailand synthetic forcing",
        "source": "ailand.forcing.synthetic_forcing weather generator",
        "seed": int(seed),
        "freq": str(freq),
        "conventions": "ecLand offline forcing names, SI units; fluxes are means over [t, t+dt)",
    }
    return ds


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------

_REQUIRED_LIST = ", ".join(f"{v} [{u}]" for v, (u, _) in FORCING_VARIABLES.items())


def _first_bad(ds: xr.Dataset, name: str, bad: np.ndarray) -> str:
    """'at time <t> (site <s>)' for the first True of a (time, site) mask."""
    i, j = np.argwhere(bad)[0]
    t = pd.Timestamp(ds["time"].values[i]).isoformat() if "time" in ds.coords else str(i)
    s = ds["site"].values[j] if "site" in ds.coords else j
    return f"at time {t} (site {s})"


def _check_time(ds: xr.Dataset) -> None:
    time = ds["time"].values
    if not np.issubdtype(time.dtype, np.datetime64):
        raise ValueError(f"time coordinate must be datetime64 (UTC), got dtype {time.dtype}; decode times when opening")
    if len(time) < 2:
        return
    step = np.diff(time)
    if (step <= np.timedelta64(0, "ns")).any():
        k = int(np.argmax(step <= np.timedelta64(0, "ns")))
        raise ValueError(f"time must increase strictly; it does not after {pd.Timestamp(time[k]).isoformat()}")
    if (step != step[0]).any():
        k = int(np.argmax(step != step[0]))
        raise ValueError(
            f"time step is irregular: {pd.Timedelta(step[0])} then {pd.Timedelta(step[k])} "
            f"after {pd.Timestamp(time[k]).isoformat()}; resample to a regular step"
        )


def _check_range(ds, name, lo, hi, hint):
    a = ds[name].values
    bad = (a < lo) | (a > hi)
    if bad.any():
        raise ValueError(
            f"{name} has values outside [{lo:g}, {hi:g}] {FORCING_VARIABLES[name][0]} "
            f"(min {a.min():.4g}, max {a.max():.4g}), first {_first_bad(ds, name, bad)}{hint}"
        )


def validate_forcing(ds: xr.Dataset) -> xr.Dataset:
    """Check a forcing Dataset at the door; return it with forcing variables as (time, site).

    Raises ValueError naming the variable, the problem, the first bad time and the fix, for:
    missing variables; missing ``time``/``site`` dims or extra dims; a non-datetime,
    non-increasing or irregular time axis; NaN/inf; negative ``Rainf``, ``Snowf``,
    ``SWdown``; and values that betray wrong units (Tair in Celsius, Qair in g/kg, PSurf in
    hPa, precipitation per hour or day) or are impossible (LWdown outside [0, 1000] W m-2,
    SWdown above 1500 W m-2, wind above 100 m s-1).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"forcing must be an xarray.Dataset, not {type(ds).__name__}")
    missing = [v for v in FORCING_VARIABLES if v not in ds.data_vars]
    if missing:
        raise ValueError(f"forcing lacks variable(s) {missing}; required: {_REQUIRED_LIST}")
    for dim in ("time", "site"):
        if dim not in ds.dims:
            raise ValueError(f"forcing has no '{dim}' dim (dims: {dict(ds.sizes)}); expected dims (time, site)")
    for v in FORCING_VARIABLES:
        if set(ds[v].dims) != {"time", "site"}:
            raise ValueError(f"forcing variable {v} has dims {ds[v].dims}; expected ('time', 'site')")
    ds = ds.assign({v: ds[v].transpose("time", "site") for v in FORCING_VARIABLES})
    _check_time(ds)
    for v in FORCING_VARIABLES:
        a = np.asarray(ds[v].values, dtype=np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(
                f"forcing variable {v} has NaN/inf values ({int(bad.sum())} of {a.size}), "
                f"first {_first_bad(ds, v, bad)}; fill or drop them"
            )
    for v in ("Rainf", "Snowf", "SWdown"):
        bad = ds[v].values < 0
        if bad.any():
            raise ValueError(
                f"forcing variable {v} is negative (min {ds[v].values.min():.4g} {FORCING_VARIABLES[v][0]}), "
                f"first {_first_bad(ds, v, bad)}; fluxes must be >= 0"
            )
    if (ds["Tair"].values < 150).any():
        raise ValueError(
            f"Tair has values below 150 K (min {ds['Tair'].values.min():.4g}): it looks like degrees Celsius; "
            f"convert with Tair + 273.15 (Tair must be in K), first {_first_bad(ds, 'Tair', ds['Tair'].values < 150)}"
        )
    _check_range(ds, "Tair", 150.0, 350.0, "; Tair must be in K")
    _check_range(ds, "Qair", 0.0, 0.1, "; Qair must be in kg kg-1 (values above 0.1 look like g/kg: divide by 1000)")
    _check_range(ds, "PSurf", 3e4, 1.1e5, "; PSurf must be in Pa (values near 1000 look like hPa: multiply by 100)")
    _check_range(ds, "LWdown", 0.0, 1000.0, "; LWdown must be a mean flux in W m-2 (not accumulated J m-2)")
    _check_range(ds, "SWdown", 0.0, 1500.0, "; SWdown must be a mean flux in W m-2 (not accumulated J m-2)")
    for v in ("Rainf", "Snowf"):
        _check_range(ds, v, 0.0, 0.1, f"; {v} must be a rate in kg m-2 s-1 (= mm s-1), not mm per hour or day")
    for v in ("Wind_E", "Wind_N"):
        _check_range(ds, v, -100.0, 100.0, f"; {v} must be in m s-1")
    return ds


# ---------------------------------------------------------------------------------------
# reader
# ---------------------------------------------------------------------------------------

#: alias (case-sensitive first, then case-insensitive) -> canonical name. "_precip",
#: "_wind" and "_dewpoint" are intermediate quantities turned into forcing variables.
ALIASES: dict[str, str] = {
    **{a: "Tair" for a in ("tas", "t2m", "2t", "air_temperature", "Tair_f_inst", "temp", "T2")},
    **{a: "Qair" for a in ("huss", "q2m", "specific_humidity", "Qair_f_inst", "qair")},
    **{a: "Wind_E" for a in ("uas", "u10", "10u", "eastward_wind", "wind_u", "Wind_U")},
    **{a: "Wind_N" for a in ("vas", "v10", "10v", "northward_wind", "wind_v", "Wind_V")},
    **{a: "SWdown" for a in ("rsds", "ssrd", "swdown", "SWdown_f_tavg", "surface_downwelling_shortwave_flux_in_air")},
    **{a: "LWdown" for a in ("rlds", "strd", "lwdown", "LWdown_f_tavg", "surface_downwelling_longwave_flux_in_air")},
    **{a: "PSurf" for a in ("ps", "sp", "psurf", "Psurf", "Psurf_f_inst", "surface_air_pressure", "pres")},
    **{a: "Snowf" for a in ("prsn", "sf", "snowf", "Snowf_tavg", "snowfall_flux")},
    **{a: "Rainf" for a in ("rainf", "prra", "Rainf_tavg", "rainfall_flux")},
    **{a: "_precip" for a in ("pr", "Precip", "precip", "tp", "precipitation", "precipitation_flux", "Prec")},
    **{a: "_precip" for a in ("PRECTOT", "Rainf_f_tavg")},  # MERRA-2, GLDAS totals
    **{a: "_wind" for a in ("Wind", "wind", "sfcWind", "ws", "wind_speed", "Wind_f_inst", "WS")},
    **{a: "_dewpoint" for a in ("d2m", "2d", "tdps", "dewpoint", "dew_point_temperature")},
}
SITE_DIM_ALIASES = (
    "gridpoint", "gridpoints", "point", "points", "x", "values", "station", "stations", "sites", "cell", "ncells",
    "location",
)
TIME_DIM_ALIASES = ("valid_time", "date", "dates", "times", "Time")

# Declared units, normalised (lower case; spaces, '**' and '^' removed) -> (factor, offset)
# to SI, per kind of quantity. Accumulated units are amounts per step: divided by the step [s].
_KIND = {
    "Tair": "temperature", "_dewpoint": "temperature", "PSurf": "pressure", "Qair": "humidity",
    "Rainf": "precipitation", "Snowf": "precipitation", "_precip": "precipitation",
    "SWdown": "radiation", "LWdown": "radiation",
}
_CELSIUS = (1.0, 273.15)
_UNIT_CONVERSIONS = {
    "temperature": dict.fromkeys(("degc", "c", "celsius", "deg_c", "°c", "degreesc", "degree_celsius"), _CELSIUS),
    "pressure": {"hpa": (100.0, 0.0), "mbar": (100.0, 0.0), "mb": (100.0, 0.0), "kpa": (1000.0, 0.0)},
    "humidity": {"g/kg": (1e-3, 0.0), "gkg-1": (1e-3, 0.0)},
    "precipitation": {
        **dict.fromkeys(("mm/h", "mmh-1", "mm/hr", "mm/hour"), (1 / 3600.0, 0.0)),
        **dict.fromkeys(("mm/d", "mmd-1", "mm/day", "mmday-1"), (1 / 86400.0, 0.0)),
    },
}
_ACCUMULATED_UNITS = {
    "precipitation": {"m": 1000.0, "mofwaterequivalent": 1000.0, "mm": 1.0, "kgm-2": 1.0, "kg/m2": 1.0},
    "radiation": {"jm-2": 1.0, "j/m2": 1.0},
}


def _open(source) -> xr.Dataset:
    """Dataset from a Dataset, a NetCDF file, or a zarr store (``*.zarr`` or a directory)."""
    if isinstance(source, xr.Dataset):
        return source.copy()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"forcing file {path} does not exist")
    if path.suffix == ".zarr" or path.is_dir():
        with xr.open_zarr(path) as f:
            return f.load()
    with xr.open_dataset(path) as f:
        return f.load()


def _rename_dims(ds: xr.Dataset, default_site: str) -> xr.Dataset:
    """Map time/site dim aliases, squeeze other length-1 dims, add a site dim if missing."""
    for canon, aliases in (("time", TIME_DIM_ALIASES), ("site", SITE_DIM_ALIASES)):
        if canon in ds.dims:
            continue
        found = [a for a in aliases if a in ds.dims]
        if len(found) > 1:
            raise ValueError(f"forcing has several candidate '{canon}' dims {found}; rename one to '{canon}'")
        if found:
            ds = ds.rename({found[0]: canon})
    extra = [d for d in ds.dims if d not in ("time", "site") and ds.sizes[d] == 1]
    ds = ds.isel({d: 0 for d in extra}, drop=True) if extra else ds
    foreign = [v for v in ds.data_vars if not set(ds[v].dims) <= {"time", "site"}]
    recognised = _canonical_names(ds)
    for v in foreign:
        if v in recognised:
            raise ValueError(
                f"forcing variable {v} has dims {ds[v].dims}; expected (time, site): rename the point dim "
                f"to 'site' (or one of {SITE_DIM_ALIASES}), or select/stack grid dims into one 'site' dim"
            )
    ds = ds.drop_vars(foreign)
    return ds if "site" in ds.dims else ds.expand_dims(site=[default_site])


def _to_si(da: xr.DataArray, canon: str, dt: float | None) -> xr.DataArray:
    """Convert by the declared ``units`` attribute when it is a known non-SI unit."""
    units = str(da.attrs.get("units", "")).strip()
    key = units.lower().replace(" ", "").replace("**", "").replace("^", "")
    kind = _KIND.get(canon)
    if key in _UNIT_CONVERSIONS.get(kind, {}):
        factor, offset = _UNIT_CONVERSIONS[kind][key]
        da = da * factor + offset
    elif key in _ACCUMULATED_UNITS.get(kind, {}):
        if dt is None:
            raise ValueError(f"{da.name} is accumulated per step ({units}) but the time step is unknown")
        da = da * (_ACCUMULATED_UNITS[kind][key] / dt)
    return da.astype(np.float64)


def _canonical_names(ds: xr.Dataset) -> dict[str, str]:
    """{variable in ds: canonical or intermediate name}; exact names win over aliases."""
    lower = {k.lower(): k for k in FORCING_VARIABLES}
    exact = {v: v for v in ds.data_vars if v in FORCING_VARIABLES}
    out = dict(exact)
    for v in ds.data_vars:
        if v in exact:
            continue
        name = lower.get(str(v).lower()) or ALIASES.get(v) or ALIASES.get(str(v).lower())
        if name and name not in out.values():
            out[v] = name
    return out


def _derive(fields: dict[str, xr.DataArray]) -> dict[str, xr.DataArray]:
    """Wind speed -> (Wind_E=speed, Wind_N=0); total precipitation -> Rainf/Snowf; dewpoint -> Qair."""
    if "_wind" in fields and "Wind_E" not in fields and "Wind_N" not in fields:
        fields["Wind_E"] = fields["_wind"]
        fields["Wind_N"] = xr.zeros_like(fields["_wind"])
    total = fields.get("_precip")
    if total is not None and "Snowf" in fields and "Rainf" not in fields:  # e.g. ERA5 tp + sf
        fields["Rainf"] = (total - fields["Snowf"]).clip(min=0.0)
    elif total is not None and "Rainf" in fields and "Snowf" not in fields:
        fields["Snowf"] = (total - fields["Rainf"]).clip(min=0.0)
    elif total is not None and "Rainf" not in fields and "Tair" in fields:
        rain, snow = split_precipitation(total.values, fields["Tair"].transpose(*total.dims).values)
        fields["Rainf"], fields["Snowf"] = total.copy(data=rain), total.copy(data=snow)
    if "_dewpoint" in fields and "Qair" not in fields and "PSurf" in fields:
        e = saturation_vapour_pressure(fields["_dewpoint"], over="water")
        p = fields["PSurf"].transpose(*fields["_dewpoint"].dims).values
        fields["Qair"] = fields["_dewpoint"].copy(data=specific_humidity(e, p))
    return {k: v for k, v in fields.items() if not k.startswith("_")}


def _step_seconds(ds: xr.Dataset) -> float | None:
    if "time" not in ds.coords or ds.sizes.get("time", 0) < 2 or not np.issubdtype(ds["time"].dtype, np.datetime64):
        return None
    return float((ds["time"].values[1] - ds["time"].values[0]) / np.timedelta64(1, "s"))


def attach_sites(forcing: xr.Dataset, sites) -> xr.Dataset:
    """Copy the static fields of ``sites`` into ``forcing`` as ``(site,)`` variables.

    ``sites``: names (list, "A,B", "all") or a Dataset from ``load_sites``. Sites are matched
    by name when every forcing site name is in ``sites``; when none is (unnamed or numbered
    grid points, or labels such as station ids) and the counts agree, by position, and the
    forcing's site coordinate is relabelled with the site names. A partial match is an error.
    Static variables already in the forcing are replaced; string labels (``veg_type`` ...)
    stay non-index coordinates as in ``load_sites``.
    """
    statics = _as_sites(sites)
    names = np.asarray(statics["site"].values)
    n = forcing.sizes["site"]
    fnames = [str(f) for f in forcing["site"].values] if "site" in forcing.coords else []
    known = [f in set(map(str, names)) for f in fnames]
    if known and all(known):
        statics = statics.sel(site=fnames)
    elif not any(known) and statics.sizes["site"] == n:
        forcing = forcing.assign_coords(site=names)
    else:
        raise ValueError(
            f"cannot match forcing sites {fnames or n} with static sites {list(names)}: give statics for "
            f"exactly the forcing's site names, or as many unnamed sites in the forcing's order"
        )
    fields = [v for v in statics.variables if v != "site" and statics[v].dims == ("site",)]
    forcing = forcing.drop_vars([v for v in fields if v in forcing.variables])
    forcing = forcing.assign_coords(site=statics["site"].values)
    forcing["site"].attrs = dict(statics["site"].attrs)
    as_site = lambda v: ("site", statics[v].values, dict(statics[v].attrs))  # noqa: E731
    forcing = forcing.assign({v: as_site(v) for v in fields if v in statics.data_vars})
    return forcing.assign_coords({v: as_site(v) for v in fields if v in statics.coords})


def open_forcing(path_or_dataset, sites=None) -> xr.Dataset:
    """Read and validate forcing from a NetCDF file, a zarr store or a Dataset.

    Steps: open (NetCDF by ``xr.open_dataset``, zarr for ``*.zarr`` or directories; loaded
    into memory); rename dims (``gridpoint``/``point``/``x``/``values``/``station`` -> ``site``,
    ``valid_time``/``date`` -> ``time``; other length-1 dims are squeezed; no site dim ->
    length-1 ``site``); map variable aliases (``tas``->Tair, ``huss``->Qair, ``rsds``->SWdown,
    ``rlds``->LWdown, ``ps``->PSurf, ``uas``/``vas``->Wind_E/Wind_N, ``prsn``->Snowf, ERA5
    ``t2m``/``sp``/``ssrd``..., see :data:`ALIASES`); convert declared non-SI units (degC, hPa,
    g/kg, mm/h, mm/day; per-step accumulations such as ERA5 ``m`` or ``J m**-2`` are divided
    by the step); derive ``Wind_E = Wind, Wind_N = 0`` from a speed-only ``Wind``, split a
    total ``pr``/``Precip`` into Rainf/Snowf with :func:`split_precipitation`, and ``Qair`` from
    a dewpoint; attach units; :func:`validate_forcing`; and with ``sites`` (names or a
    Dataset) attach the static site fields (:func:`attach_sites`).

    Accumulations are divided by the step but not shifted in time: ERA5 values valid at t
    cover (t - dt, t], whereas this package reads fluxes at t as means over [t, t + dt);
    shift them by one step first if that matters to you.

    Returns a Dataset with the 9 forcing variables as float64 ``(time, site)`` plus any
    other ``(time, site)``/``(site,)`` variables of the source.
    """
    ds = _open(path_or_dataset)
    default_site = "site0"
    if sites is not None and not isinstance(sites, xr.Dataset):
        chosen = load_sites(sites)
        default_site = str(chosen["site"].values[0]) if chosen.sizes["site"] == 1 else default_site
    ds = _rename_dims(ds, default_site)
    dt = _step_seconds(ds)
    names = _canonical_names(ds)
    fields = _derive({canon: _to_si(ds[v], canon, dt) for v, canon in names.items()})
    ds = ds.drop_vars(list(names)).assign(fields)
    for v, (units, long_name) in FORCING_VARIABLES.items():
        if v in ds:
            ds[v].attrs = {"units": units, "long_name": long_name}
    ds = validate_forcing(ds)
    return attach_sites(ds, sites) if sites is not None else ds
