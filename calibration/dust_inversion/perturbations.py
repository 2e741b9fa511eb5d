"""Spatially correlated random fields on the sphere: the members' emission perturbations.

The log scaling factors of the ensemble are ``log f = mu + sigma g`` with ``g`` a Gaussian
random field on the control cells whose correlation is Gaussian in distance,

    corr(g_i, g_j) = exp(-d_ij^2 / (2 L^2)),   d_ij = chord between cells i and j [km],

``L`` the correlation length (CAMS version 1: 250 km; version 2: lengths varying between
300 and 3000 km). The chordal distance ``2 R sin(theta / 2)`` (``theta`` the great-circle
angle) keeps the kernel positive definite on the sphere (a Gaussian of the great-circle
distance is not, strictly); for ``L`` of a few thousand km the two differ by < 2 %.
Fields are drawn from the leading eigenvectors of the correlation matrix
(:class:`CorrelatedField`), so ``g`` has unit variance at every cell up to the truncation
``1 - rank_tol``.
"""

from __future__ import annotations

import numpy as np

from calibration.ensemble_kalman.localisation import EARTH_RADIUS_KM

__all__ = ["CorrelatedField", "chord_distance", "member_perturbations"]


def chord_distance(lat_a, lon_a, lat_b, lon_b, radius_km: float = EARTH_RADIUS_KM) -> np.ndarray:
    """Chord length [km] between points ``a (n,)`` and ``b (m,)`` (degrees) -> ``(n, m)``."""
    def xyz(lat, lon):
        la, lo = np.radians(np.asarray(lat, float)).ravel(), np.radians(np.asarray(lon, float)).ravel()
        return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)

    a, b = xyz(lat_a, lon_a), xyz(lat_b, lon_b)
    d2 = np.clip(2.0 - 2.0 * a @ b.T, 0.0, 4.0)
    return radius_km * np.sqrt(d2)


class CorrelatedField:
    """Unit-variance Gaussian random fields on points of the sphere (Gaussian correlation).

    Parameters
    ----------
    lat, lon : (n,) point coordinates [degrees] (e.g. the control cells).
    corr_length_km : correlation length ``L`` [km] (> 0).
    rank_tol : keep the leading eigenvectors that explain ``1 - rank_tol`` of the variance;
        the kept modes are rescaled so that every point has variance 1.

    ``sample(n_fields, rng)`` returns ``(n_fields, n)`` draws; :attr:`basis` is the
    ``(n, k)`` square-root factor (``g = z @ basis.T``, ``z ~ N(0, I_k)``).
    """

    def __init__(self, lat, lon, corr_length_km: float = 250.0, rank_tol: float = 1e-4):
        lat, lon = np.asarray(lat, float).ravel(), np.asarray(lon, float).ravel()
        if lat.shape != lon.shape or lat.size == 0:
            raise ValueError(f"lat and lon must be 1-d arrays of the same, non-zero length, got {lat.shape}, {lon.shape}")
        L = float(corr_length_km)
        if not (np.isfinite(L) and L > 0):
            raise ValueError(f"corr_length_km must be a positive number of km, got {corr_length_km!r}")
        self.lat, self.lon, self.corr_length_km = lat, lon, L
        d = chord_distance(lat, lon, lat, lon)
        C = np.exp(-0.5 * (d / L) ** 2)
        lam, V = np.linalg.eigh(C)
        lam, V = lam[::-1].clip(min=0.0), V[:, ::-1]
        k = int(np.searchsorted(np.cumsum(lam) / lam.sum(), 1.0 - rank_tol) + 1)
        k = min(max(k, 1), lam.size)
        B = V[:, :k] * np.sqrt(lam[:k])
        B /= np.sqrt((B**2).sum(1, keepdims=True)).clip(min=1e-12)  # unit variance at every point
        self.basis = B

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    def sample(self, n_fields: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_fields, n_points)`` unit-variance fields."""
        return rng.standard_normal((int(n_fields), self.rank)) @ self.basis.T

    def __repr__(self):
        return f"CorrelatedField({self.lat.size} points, L={self.corr_length_km:g} km, rank {self.rank})"


def _lengths(corr_length) -> list[float]:
    """``L`` or ``(L_min, L_max)`` -> the list of lengths to build fields for."""
    if np.ndim(corr_length) == 0:
        return [float(corr_length)]
    lo, hi = (float(v) for v in corr_length)
    if not (0 < lo <= hi):
        raise ValueError(f"corr_length (min, max) must satisfy 0 < min <= max, got {corr_length!r}")
    return list(np.geomspace(lo, hi, 6)) if hi > lo else [lo]


def member_perturbations(fields: list[CorrelatedField], n_perturbed: int, rng: np.random.Generator,
                         center: bool = True) -> np.ndarray:
    """``(n_perturbed, n_points)`` unit-variance perturbations; member ``i`` uses a field of a length
    drawn at random among ``fields`` (one length: all the same). ``center``: remove the mean over
    the members and rescale by ``sqrt(n / (n - 1))`` so that the members' sample mean is exactly 0
    and the expected variance stays 1 (the control member is then the ensemble mean)."""
    n = int(n_perturbed)
    which = rng.integers(0, len(fields), size=n) if len(fields) > 1 else np.zeros(n, dtype=int)
    out = np.empty((n, fields[0].basis.shape[0]))
    for k, f in enumerate(fields):
        sel = np.flatnonzero(which == k)
        if sel.size:
            out[sel] = f.sample(sel.size, rng)
    if center and n > 1:
        out = (out - out.mean(0)) * np.sqrt(n / (n - 1))
    return out
