"""The hidden "true" emission scaling field of the twin experiment.

The truth multiplies the prior emission of :class:`ailand.dust.DustChain` by ``f_true(period,
lat, lon) = exp(log f_true)`` with

    log f_true = b(lat, lon) + sum_k a_k s_k(t) exp(-d_k^2 / (2 r_k^2))

* ``b``: a smooth, static random field (Gaussian correlation of length ``background_length_km``,
  standard deviation ``background_std``): the scheme's regional errors;
* features ``k`` (:data:`DEFAULT_FEATURES`): a Gaussian blob of radius ``r_k`` [km] around
  ``(lat_k, lon_k)`` with amplitude ``a_k`` (in log factor) and a seasonal envelope ``s_k``
  (``"all"``: 1; ``"summer"``: exp(-((doy - 196) / 40)^2), peaking mid-July):

  - ``summer_too_high``: the prior's summer emissions from the Sahel / southern Sahara
    (haboobs) are too high, true factor exp(-0.9) = 0.41 at the centre in July;
  - ``missing_source``: the Libya-Egypt Great Sand Sea emits three times what the prior gives
    (exp(1.1) = 3.0): a source that the prior largely misses. (A source the prior lacks
    entirely cannot be recovered by *multiplicative* factors: the prior emission must be > 0
    for a factor to act; the inversion only corrects where the prior emits.)

Outside the emitting cells the factors have no effect (they multiply zero emission).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from calibration.ensemble_kalman.localisation import great_circle_distance

from .perturbations import CorrelatedField

__all__ = ["DEFAULT_FEATURES", "true_scaling", "seasonal_envelope"]

#: the structured errors of the prior (see the module docstring)
DEFAULT_FEATURES: tuple[dict, ...] = (
    {"name": "summer_too_high", "lat": 17.0, "lon": 8.0, "radius_km": 900.0, "log_factor": -0.9, "season": "summer"},
    {"name": "missing_source", "lat": 26.0, "lon": 25.0, "radius_km": 450.0, "log_factor": 1.1, "season": "all"},
)


def seasonal_envelope(times, season: str) -> np.ndarray:
    """``(T,)`` weights in [0, 1] of a feature's season at datetime64 ``times``: ``"all"`` 1,
    ``"summer"`` exp(-((doy - 196) / 40)^2), ``"winter"`` the same around 15 January."""
    doy = pd.DatetimeIndex(np.asarray(times)).dayofyear.to_numpy(dtype=float)
    if season == "all":
        return np.ones_like(doy)
    centre = {"summer": 196.0, "winter": 15.0}.get(season)
    if centre is None:
        raise ValueError(f"season must be 'all', 'summer' or 'winter', got {season!r}")
    d = (doy - centre + 182.5) % 365.25 - 182.5
    return np.exp(-((d / 40.0) ** 2))


def _smooth_field(lat: np.ndarray, lon: np.ndarray, length_km: float, seed: int) -> np.ndarray:
    """A unit-variance Gaussian-correlated field ``(ny, nx)`` (:class:`CorrelatedField`), drawn on
    every ``stride``-th cell (spacing <= length / 2) and interpolated bilinearly to the grid."""
    from scipy.interpolate import RegularGridInterpolator

    spacing = 111.2 * max(abs(lat[1] - lat[0]) if lat.size > 1 else 1.0, abs(lon[1] - lon[0]) if lon.size > 1 else 1.0)
    stride = max(1, int(length_km / 2.0 // spacing))
    cl = np.r_[lat[::stride], lat[-1]] if (lat.size - 1) % stride else lat[::stride]
    co = np.r_[lon[::stride], lon[-1]] if (lon.size - 1) % stride else lon[::stride]
    la2, lo2 = np.meshgrid(cl, co, indexing="ij")
    field = CorrelatedField(la2.ravel(), lo2.ravel(), length_km, rank_tol=1e-3)
    g = field.sample(1, np.random.default_rng(np.random.SeedSequence([int(seed), 1400])))[0].reshape(la2.shape)
    if stride == 1:
        return g
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    return RegularGridInterpolator((cl, co), g)(np.stack([lat2, lon2], -1))


def true_scaling(world: xr.Dataset, period_starts, *, seed: int = 0, features=DEFAULT_FEATURES,
                 background_std: float = 0.2, background_length_km: float = 800.0) -> xr.DataArray:
    """The hidden true scaling factors ``(period, lat, lon)`` (dimensionless, > 0).

    Parameters
    ----------
    world : a dust world (:func:`ailand.dust.make_world`; only its grid and ``lsm`` are read).
    period_starts : ``(P,)`` datetime64 start of each scaling period; the envelope is taken at the
        middle of the period when ``period_starts`` has a regular spacing, else at its start.
    seed : seed of the static background field.
    features : dicts with ``lat``, ``lon`` [deg], ``radius_km``, ``log_factor``, ``season``
        (and an optional ``name``); default :data:`DEFAULT_FEATURES`.
    background_std, background_length_km : the smooth static background in log factor.

    Returns a DataArray ``scaling_factor_truth (period, lat, lon)`` with coordinate ``time``
    (period starts) and ``units = "1"``.
    """
    starts = pd.DatetimeIndex(np.asarray(period_starts))
    mid = starts + (starts[1] - starts[0]) / 2 if len(starts) > 1 else starts
    lat, lon = world["lat"].values, world["lon"].values
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    logf = np.zeros((len(starts),) + lat2.shape)
    if background_std > 0:
        logf += background_std * _smooth_field(lat, lon, background_length_km, seed)[None]
    for ft in features:
        d = great_circle_distance(lat2.ravel(), lon2.ravel(), [ft["lat"]], [ft["lon"]])[:, 0].reshape(lat2.shape)
        blob = np.exp(-0.5 * (d / float(ft["radius_km"])) ** 2)
        env = seasonal_envelope(mid.values, ft.get("season", "all"))
        logf += float(ft["log_factor"]) * env[:, None, None] * blob[None]
    return xr.DataArray(
        np.exp(logf), dims=("period", "lat", "lon"),
        coords={"period": np.arange(len(starts)), "time": ("period", starts.values.astype("datetime64[ns]")),
                "lat": world["lat"], "lon": world["lon"]},
        name="scaling_factor_truth",
        attrs={"units": "1", "long_name": "hidden true emission scaling factor (twin experiment)",
               "features": "; ".join(f"{f.get('name', 'feature')}: {f['log_factor']:+g} in log at ({f['lat']}N, {f['lon']}E), "
                                     f"r={f['radius_km']} km, {f.get('season', 'all')}" for f in features),
               "background": f"static Gaussian random field, std {background_std} in log, length "
                             f"{background_length_km} km, seed {seed}"},
    )
