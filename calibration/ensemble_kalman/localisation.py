"""Localisation: distances between state points and observations, and tapers of distance.

Radius convention (DAPPER's ``dapper.tools.localization.dist2coeff``): every taper is scaled
so that its coefficient is ``exp(-1/2) ~ 0.607`` at ``distance == loc_rad``:

- ``"GC"`` Gaspari-Cohn (1999, eq. 4.10): compact support ``2 c`` with ``c = 1.82 loc_rad``
  (``1.82 ~ sqrt(10/3)``), so the taper vanishes beyond ``3.64 loc_rad``;
- ``"Gauss"``: ``exp(-d^2 / (2 loc_rad^2))`` (global support);
- ``"Step"``: 1 for ``d <= loc_rad``, else 0.

As in DAPPER, coefficients at or below ``cutoff = 1e-3`` are set to 0 (those observations
leave the local analysis). ``loc_rad = inf`` gives coefficient 1 everywhere (no localisation).

Distances (units are those of the coordinates; the LETKF only sees ``d / loc_rad``):

- :func:`periodic_distance` - 1-D periodic domain (Lorenz-96: grid-index units, period ``Nx``);
- :func:`great_circle_distance` - sites or grid points given by latitude/longitude [km];
- any user matrix ``(n_state, m)`` of non-negative distances.

:func:`batch_mean_distance` reproduces DAPPER's state batches (its ``nd_Id_localization``
groups consecutive state points and uses the batch-mean distance to each observation).
"""

from __future__ import annotations

import numpy as np
import torch

from .analysis import _like, _t

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius [km] (IUGG)
GC_SCALE = 1.82  # DAPPER: Gaspari-Cohn half-support c = 1.82 loc_rad, coefficient exp(-1/2) at loc_rad
CUTOFF = 1e-3  # DAPPER's inds_and_coeffs cutoff


def check_radius(loc_rad, name: str = "loc_rad") -> float:
    """``loc_rad`` must be a positive number (``inf`` allowed: no localisation)."""
    r = float(loc_rad)
    if not r > 0:  # also catches NaN
        raise ValueError(f"{name} must be > 0 (a localisation radius, or inf for none), got {loc_rad!r}")
    return r


def gaspari_cohn(d, loc_rad):
    """Gaspari-Cohn fifth-order piecewise rational taper (Gaspari and Cohn 1999, eq. 4.10).

    ``r = d / c`` with ``c = 1.82 loc_rad`` (DAPPER's convention: coefficient ``exp(-1/2)`` at
    ``d = loc_rad``)::

        r <= 1:      1 - 5/3 r^2 + 5/8 r^3 + 1/2 r^4 - 1/4 r^5
        1 < r <= 2:  4 - 5 r + 5/3 r^2 + 5/8 r^3 - 1/2 r^4 + 1/12 r^5 - 2/(3 r)
        r > 2:       0

    ``d``: distances, any shape (numpy or torch, non-negative); returns coefficients in [0, 1],
    same shape and type.
    """
    r_ = check_radius(loc_rad)
    dt = _t(d)
    if np.isinf(r_):
        return _like(torch.ones_like(dt), d)
    r = dt / (GC_SCALE * r_)
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + 0.5 * r**4 - 0.25 * r**5
    rs = torch.where(r > 0, r, torch.ones_like(r))  # avoid 1/0 in the unused branch
    outer = 4 - 5 * rs + 5 / 3 * rs**2 + 5 / 8 * rs**3 - 0.5 * rs**4 + rs**5 / 12 - 2 / (3 * rs)
    c = torch.where(r <= 1, inner, torch.where(r < 2, outer, torch.zeros_like(r)))  # exactly 0 from r = 2
    return _like(c.clamp(0.0, 1.0), d)


def gaussian_taper(d, loc_rad):
    """Gaussian taper ``exp(-d^2 / (2 loc_rad^2))`` (global support); shape and type of ``d``."""
    r_ = check_radius(loc_rad)
    dt = _t(d)
    return _like(torch.exp(-0.5 * (dt / r_) ** 2), d)


def step_taper(d, loc_rad):
    """Step (box-car) taper: 1 for ``d <= loc_rad``, else 0; shape and type of ``d``."""
    r_ = check_radius(loc_rad)
    dt = _t(d)
    return _like((dt <= r_).to(torch.float64), d)


TAPERS = {"GC": gaspari_cohn, "Gauss": gaussian_taper, "Step": step_taper}


def taper(d, loc_rad, kind: str = "GC", cutoff: float = CUTOFF):
    """Localisation coefficients of distances ``d`` (any shape): ``TAPERS[kind](d, loc_rad)``,
    with coefficients ``<= cutoff`` set to 0 (DAPPER drops those observations).

    ``kind``: ``"GC"`` (Gaspari-Cohn), ``"Gauss"`` or ``"Step"``; ``loc_rad > 0`` in the units
    of ``d`` (``inf``: no localisation). Returns coefficients in [0, 1], type of ``d``.
    """
    if kind not in TAPERS:
        raise ValueError(f"taper must be one of {sorted(TAPERS)}, got {kind!r}")
    c = _t(TAPERS[kind](_t(d), loc_rad))
    c = torch.where(c > cutoff, c, torch.zeros_like(c))
    return _like(c, d)


def periodic_distance(a, b, period: float):
    """Distance on a 1-D periodic domain of length ``period``: ``min(|a-b|, period-|a-b|)``.

    ``a (n,)``, ``b (m,)`` coordinates in ``[0, period)`` -> ``(n, m)`` distances (numpy).
    Lorenz-96: ``periodic_distance(arange(Nx), obs_inds, Nx)`` in grid-index units.
    """
    if not period > 0:
        raise ValueError(f"period must be > 0, got {period!r}")
    a = np.asarray(a, dtype=float).reshape(-1, 1)
    b = np.asarray(b, dtype=float).reshape(1, -1)
    d = np.abs(a - b) % period
    return np.minimum(d, period - d)


def great_circle_distance(lat_a, lon_a, lat_b, lon_b, radius_km: float = EARTH_RADIUS_KM):
    """Great-circle (haversine) distance [km] between points ``a (n,)`` and ``b (m,)``.

    Latitudes and longitudes in degrees north / east. Returns ``(n, m)`` (numpy).
    """
    la, oa = np.radians(np.asarray(lat_a, float)).reshape(-1, 1), np.radians(np.asarray(lon_a, float)).reshape(-1, 1)
    lb, ob = np.radians(np.asarray(lat_b, float)).reshape(1, -1), np.radians(np.asarray(lon_b, float)).reshape(1, -1)
    if la.size != oa.size or lb.size != ob.size:
        raise ValueError("lat and lon must have the same length for each set of points")
    h = np.sin((lb - la) / 2) ** 2 + np.cos(la) * np.cos(lb) * np.sin((ob - oa) / 2) ** 2
    return 2 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def batch_mean_distance(dist, batch: int):
    """DAPPER's state batches: consecutive groups of ``batch`` state points share the mean of
    their distances to each observation (``nd_Id_localization((Nx,), (batch,))``; its
    ``sakov2008`` LETKF uses ``batch = 2``). ``dist (n, m)`` -> ``(n, m)`` (numpy)."""
    dist = np.asarray(dist, dtype=float)
    n = dist.shape[0]
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = np.empty_like(dist)
    for ii in np.array_split(np.arange(n), int(round(n / batch))):
        out[ii] = dist[ii].mean(0)
    return out


def l96_coefficients(Nx: int, obs_inds, loc_rad: float, kind: str = "GC", batch: int = 1) -> np.ndarray:
    """Localisation coefficients ``(Nx, m)`` for Lorenz-96 point observations ``x[obs_inds]``:
    periodic grid-index distance, ``batch`` as :func:`batch_mean_distance` (DAPPER: 2)."""
    check_radius(loc_rad)
    d = periodic_distance(np.arange(Nx), obs_inds, Nx)
    if batch > 1:
        d = batch_mean_distance(d, batch)
    return taper(d, loc_rad, kind)
