"""Classical analyses: OI / 3D-Var with a fitted background-error correlation, and the LETKF.

Background-error model: ``B = sigma_b^2 rho(D / L)`` with ``D`` the distance between grid
cells and one of the correlation functions of :data:`CORRELATIONS` (``r = d / L``):

- ``"gaussian"``: ``rho = exp(-r^2 / 2)``;
- ``"matern32"``: ``rho = (1 + sqrt(3) r) exp(-sqrt(3) r)``;
- ``"matern52"``: ``rho = (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``.

The length scale ``L`` and the variances ``sigma_b^2, sigma_o^2`` are estimated from the data
with the Hollingsworth-Loennberg (1986) method (:func:`fit_innovation_statistics`): with
uncorrelated observation errors, the covariance of innovations ``d = y - H x_b`` at two stations
a distance ``r > 0`` apart is ``sigma_b^2 rho(r / L)``, and their variance is
``sigma_b^2 + sigma_o^2``; so binned innovation products, fitted for ``r > 0``, give ``L`` and
``sigma_b^2`` (the fit extrapolated to ``r = 0``), and the rest of the variance is ``sigma_o^2``;
:meth:`OptimalInterpolation.fit` then refines ``sigma_b, sigma_o`` with the Desroziers et al. (2005)
diagnostics. No truth is needed (what an operational centre can do).

OI (:class:`OptimalInterpolation`), Gandin (1963); Daley (1991) ch. 4::

    x_a = x_b + B H^T (H B H^T + R)^-1 (y - H x_b),   R = sigma_o^2 I,  H: selection of the observed cells

which, with a linear ``H``, is also the minimiser of the 3D-Var cost
``J(x) = 1/2 (x - x_b)^T B^-1 (x - x_b) + 1/2 (y - H x)^T R^-1 (y - H x)`` (solved here in
observation space, PSAS form: one ``m x m`` Cholesky solve per case, all grid points).

LETKF (:class:`LETKFAnalysis`): :func:`calibration.ensemble_kalman.letkf` with R-localisation by the
Gaspari-Cohn taper of the same distances, on an ensemble given by the caller (the land case:
ensemble forecasts) or drawn from ``N(x_b, B)`` with the fitted ``B`` (the shallow-water case).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from calibration.ensemble_kalman.analysis import letkf
from calibration.ensemble_kalman.localisation import great_circle_distance, taper

from .observations import check_analysis_inputs

__all__ = ["CORRELATIONS", "periodic_grid_distance", "latlon_grid_distance", "fit_innovation_statistics",
           "OptimalInterpolation", "LETKFAnalysis", "gaussian_random_field"]


def _gaussian(r):
    return torch.exp(-0.5 * r * r)


def _matern32(r):
    s = math.sqrt(3.0) * r
    return (1 + s) * torch.exp(-s)


def _matern52(r):
    s = math.sqrt(5.0) * r
    return (1 + s + s * s / 3.0) * torch.exp(-s)


CORRELATIONS = {"gaussian": _gaussian, "matern32": _matern32, "matern52": _matern52}


def _corr(kind: str):
    if kind not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {sorted(CORRELATIONS)}, got {kind!r}")
    return CORRELATIONS[kind]


def periodic_grid_distance(ny: int, nx: int, spacing: float = 1.0) -> np.ndarray:
    """Chordal distances ``(ny*nx, ny*nx)`` between the cells of a doubly periodic grid (flat index
    ``j * nx + i``), in units of ``spacing`` (one cell = ``spacing``, e.g. metres).

    Each periodic axis of ``N`` cells is a circle of circumference ``N``; the distance is the
    Euclidean one of that embedding of the torus in R^4, ``sqrt(c_y^2 + c_x^2)`` with
    ``c = (N / pi) sin(pi |delta| / N)``: equal to the grid distance for ``|delta| << N``, and it keeps
    every correlation of :data:`CORRELATIONS` positive definite (the Gaussian of the shortest
    wrapped distance is not, once ``L`` is a fair fraction of the domain)."""
    jj, ii = np.divmod(np.arange(ny * nx), nx)
    cj = ny / np.pi * np.sin(np.pi * np.abs(jj[:, None] - jj[None, :]) / ny)
    ci = nx / np.pi * np.sin(np.pi * np.abs(ii[:, None] - ii[None, :]) / nx)
    return np.hypot(cj, ci) * float(spacing)


def latlon_grid_distance(grid) -> np.ndarray:
    """Great-circle distances ``(ny*nx, ny*nx)`` [km] between the cell centres of a
    :class:`ailand.dust.grid.LatLonGrid` (flat index ``j * nx + i``)."""
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    return great_circle_distance(lat2.ravel(), lon2.ravel(), lat2.ravel(), lon2.ravel())


def _check_distance(dist, shape):
    d = torch.as_tensor(np.asarray(dist, dtype=np.float64))
    n = int(shape[0]) * int(shape[1])
    if d.shape != (n, n):
        raise ValueError(f"dist must be ({n}, {n}) for a {shape[0]} x {shape[1]} grid, got {tuple(d.shape)}")
    return d


def fit_innovation_statistics(background, obs, mask, dist, kind: str = "gaussian", n_bins: int = 20,
                              max_distance: float | None = None, max_obs_per_case: int = 400,
                              seed: int = 0) -> dict:
    """Hollingsworth-Loennberg estimate of ``(L, sigma_b, sigma_o)`` from innovations.

    Parameters
    ----------
    background, obs, mask : ``(B, ny, nx)`` cases (see :mod:`.observations`); innovations
        ``d = y - x_b`` at the observed cells, their overall mean removed.
    dist : ``(ny*nx, ny*nx)`` distances between cells (units of ``L``).
    kind : correlation function (:data:`CORRELATIONS`).
    n_bins : distance bins of the empirical covariance over ``(0, max_distance]``
        (default: half the largest distance).
    max_obs_per_case : stations per case used for the pairs (a seeded random subset beyond).

    Returns a dict: ``length`` [units of dist], ``sigma_b``, ``sigma_o`` [units of the field],
    ``kind``, and the binned empirical covariance ``bin_centre``, ``covariance``, ``pairs``.
    Raises ValueError when fewer than 3 bins hold pairs (too few stations).
    """
    xb, y, m, _ = check_analysis_inputs(background, obs, mask)
    D = torch.as_tensor(np.asarray(dist, dtype=np.float64))
    rho = _corr(kind)
    n = xb.shape[-1] * xb.shape[-2]
    if D.shape != (n, n):
        raise ValueError(f"dist must be ({n}, {n}), got {tuple(D.shape)}")
    dmax = float(D.max()) / 2 if max_distance is None else float(max_distance)
    edges = np.linspace(0.0, dmax, n_bins + 1)
    edges[0] = 1e-9 * max(dmax, 1.0)  # r > 0 only: the diagonal carries sigma_o^2
    rng = np.random.default_rng(seed)
    d_all = (y - xb)[m]
    mean_d = float(d_all.mean()) if d_all.numel() else 0.0
    var_d = float(((d_all - mean_d) ** 2).mean()) if d_all.numel() else float("nan")
    sums, counts = np.zeros(n_bins), np.zeros(n_bins)
    for b in range(xb.shape[0]):
        idx = torch.nonzero(m[b].reshape(-1)).squeeze(1).numpy()
        if idx.size < 2:
            continue
        if idx.size > max_obs_per_case:
            idx = np.sort(rng.choice(idx, max_obs_per_case, replace=False))
        d = ((y[b] - xb[b]).reshape(-1)[idx] - mean_d).numpy()
        r = D[idx][:, idx].numpy()
        iu = np.triu_indices(idx.size, 1)
        rr, pp = r[iu], (d[:, None] * d[None, :])[iu]
        k = np.digitize(rr, edges) - 1
        ok = (k >= 0) & (k < n_bins)
        np.add.at(sums, k[ok], pp[ok])
        np.add.at(counts, k[ok], 1.0)
    has = counts > 0
    if has.sum() < 3:
        raise ValueError("too few station pairs to fit a correlation length (need pairs in >= 3 distance bins): "
                         "use more cases or denser observations")
    centre = 0.5 * (edges[:-1] + edges[1:])
    cov = np.where(has, sums / np.maximum(counts, 1), np.nan)
    rc, cc, wc = centre[has], cov[has], counts[has]
    best = None
    for L in np.geomspace(max(dmax, 1e-12) * 1e-3, dmax * 2, 400):
        f = rho(torch.as_tensor(rc / L)).numpy()
        a = max(float((wc * f * cc).sum() / max((wc * f * f).sum(), 1e-300)), 0.0)
        sse = float((wc * (cc - a * f) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, L, a)
    _, L, a = best
    sb2 = min(a, var_d)
    so2 = max(var_d - sb2, 1e-6 * var_d)
    return {"length": float(L), "sigma_b": math.sqrt(sb2), "sigma_o": math.sqrt(so2), "kind": kind,
            "bin_centre": centre, "covariance": cov, "pairs": counts, "innovation_variance": var_d}


class OptimalInterpolation:
    """OI / 3D-Var analysis with ``B = sigma_b^2 rho(D / L)`` and ``R = sigma_o^2 I`` (module docstring).

    Parameters
    ----------
    dist : ``(ny*nx, ny*nx)`` cell distances (:func:`periodic_grid_distance`, :func:`latlon_grid_distance`).
    shape : ``(ny, nx)`` the grid.
    sigma_b, sigma_o : background and observation error std [field units], > 0.
    length : correlation length ``L`` [units of dist], > 0.
    kind : correlation function.

    :meth:`analyse` ``(background, obs, mask)`` ``(B, ny, nx)`` -> analysis ``(B, ny, nx)`` (numpy).
    With no observation in a case it returns that case's background exactly.
    """

    def __init__(self, dist, shape, sigma_b: float, length: float, sigma_o: float, kind: str = "gaussian"):
        for name, v in (("sigma_b", sigma_b), ("length", length), ("sigma_o", sigma_o)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.D = _check_distance(dist, self.shape)
        self.sigma_b, self.length, self.sigma_o, self.kind = float(sigma_b), float(length), float(sigma_o), kind
        self.rho = _corr(kind)

    @classmethod
    def fit(cls, background, obs, mask, dist, kind: str = "gaussian", desroziers: int = 4, max_cases: int = 200,
            **kw) -> "OptimalInterpolation":
        """Set up with ``L, sigma_b, sigma_o`` fitted to the cases' innovations
        (:func:`fit_innovation_statistics`), then ``desroziers`` iterations of the Desroziers et al.
        (2005) consistency diagnostics on (up to ``max_cases`` of) the same cases with the fitted ``L``,
        started from an even split ``sigma_b^2 = sigma_o^2 = var(d) / 2``:
        ``sigma_o^2 = E[(y - H x_a)(y - H x_b)]``, ``sigma_b^2 = E[(H x_a - H x_b)(y - H x_b)]`` (the
        Hollingsworth-Loennberg split of the variance at zero distance is the least certain part of
        the fit). The fits are kept in :attr:`stats`."""
        st = fit_innovation_statistics(background, obs, mask, dist, kind=kind, **kw)
        xb = np.asarray(background)
        oi = cls(dist, xb.shape[-2:], st["sigma_b"], st["length"], st["sigma_o"], kind)
        st["hollingsworth_loennberg"] = {"sigma_b": st["sigma_b"], "sigma_o": st["sigma_o"]}
        if desroziers:
            # start from an even split of the innovation variance: a fixed point at sigma_o -> 0
            # (HL's extrapolation to r = 0 can take all the variance) would otherwise never move
            oi.sigma_b = oi.sigma_o = float(np.sqrt(st["innovation_variance"] / 2))
            xb_t, y_t, m_t, _ = check_analysis_inputs(background, obs, mask)
            k = min(max_cases, xb_t.shape[0])
            xbk, yk, mk = xb_t[:k].numpy(), y_t[:k].numpy(), m_t[:k].numpy()
            d_ob = (yk - xbk)[mk]
            for _ in range(int(desroziers)):
                xa = oi.analyse(xbk, yk, mk)
                d_oa, d_ab = (yk - xa)[mk], (xa - xbk)[mk]
                so2, sb2 = float(np.mean(d_oa * d_ob)), float(np.mean(d_ab * d_ob))
                if not (so2 > 0 and sb2 > 0):
                    break
                oi.sigma_o, oi.sigma_b = float(np.sqrt(so2)), float(np.sqrt(sb2))
            st["sigma_b"], st["sigma_o"] = oi.sigma_b, oi.sigma_o
        oi.stats = st
        return oi

    def covariance(self, rows, cols) -> torch.Tensor:
        """``B[rows][:, cols]`` from flat cell indices."""
        return self.sigma_b**2 * self.rho(self.D[rows][:, cols] / self.length)

    def analyse(self, background, obs, mask) -> np.ndarray:
        xb, y, m, squeezed = check_analysis_inputs(background, obs, mask, self.shape)
        out = xb.clone().reshape(xb.shape[0], -1)
        allc = torch.arange(out.shape[1])
        for b in range(xb.shape[0]):
            o = torch.nonzero(m[b].reshape(-1)).squeeze(1)
            if o.numel() == 0:
                continue
            d = (y[b].reshape(-1) - xb[b].reshape(-1))[o]
            S = self.covariance(o, o) + self.sigma_o**2 * torch.eye(o.numel(), dtype=torch.float64)
            w = torch.cholesky_solve(d[:, None], torch.linalg.cholesky(S))[:, 0]
            out[b] += self.covariance(allc, o) @ w
        out = out.reshape(xb.shape).numpy()
        return out[0] if squeezed else out


def gaussian_random_field(n_samples: int, dist, sigma: float, length: float, kind: str = "gaussian",
                          rng: np.random.Generator | None = None, jitter: float = 1e-8) -> np.ndarray:
    """Samples ``(n_samples, n)`` of ``N(0, sigma^2 rho(D / L))`` (eigen-decomposition of the
    ``(n, n)`` correlation, negative round-off eigenvalues clipped)."""
    D = torch.as_tensor(np.asarray(dist, dtype=np.float64))
    C = _corr(kind)(D / float(length))
    lam, V = torch.linalg.eigh(C)
    S = V * lam.clamp(min=jitter).sqrt()
    rng = np.random.default_rng() if rng is None else rng
    z = torch.as_tensor(rng.standard_normal((n_samples, D.shape[0])))
    return (float(sigma) * z @ S.T).numpy()


class LETKFAnalysis:
    """LETKF analysis (Hunt et al. 2007) of gridded fields with point observations.

    Parameters
    ----------
    dist, shape : as :class:`OptimalInterpolation`.
    sigma_o : observation error std [field units].
    loc_rad : localisation radius [units of dist] of the Gaspari-Cohn taper (DAPPER convention:
        coefficient exp(-1/2) at ``loc_rad``, zero beyond 3.64 ``loc_rad``).
    sigma_b, length, kind, n_members, seed : when :meth:`analyse` gets no ensemble, one is drawn
        around the background from ``N(x_b, sigma_b^2 rho(D/L))`` (seeded).
    infl : multiplicative inflation of the prior anomalies.

    :meth:`analyse` ``(background, obs, mask, ensemble=None)`` -> ``(mean (B, ny, nx), ensemble
    (B, N, ny, nx))``; ``ensemble`` given as ``(B, N, ny, nx)`` replaces the drawn one (the
    background is then ignored except for checks: the prior mean is the ensemble mean).
    """

    def __init__(self, dist, shape, sigma_o: float, loc_rad: float, sigma_b: float | None = None,
                 length: float | None = None, kind: str = "gaussian", n_members: int = 20, seed: int = 0,
                 infl: float = 1.0):
        if not (np.isfinite(sigma_o) and sigma_o > 0):
            raise ValueError(f"sigma_o must be a positive number, got {sigma_o!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.D = _check_distance(dist, self.shape)
        self.sigma_o, self.loc_rad, self.kind = float(sigma_o), float(loc_rad), kind
        self.sigma_b, self.length, self.n_members, self.seed, self.infl = sigma_b, length, int(n_members), seed, infl
        self._sqrtB = None

    def _draw(self, xb: torch.Tensor, rng) -> torch.Tensor:
        if self.sigma_b is None or self.length is None:
            raise ValueError("LETKFAnalysis needs sigma_b and length to draw an ensemble, or pass ensemble=")
        if self._sqrtB is None:
            C = _corr(self.kind)(self.D / self.length)
            lam, V = torch.linalg.eigh(C)
            self._sqrtB = self.sigma_b * V * lam.clamp(min=1e-8).sqrt()
        z = torch.as_tensor(rng.standard_normal((self.n_members, self._sqrtB.shape[0])))
        pert = z @ self._sqrtB.T
        pert = pert - pert.mean(0, keepdim=True)  # centred on the background
        return xb.reshape(1, -1) + pert

    def analyse(self, background, obs, mask, ensemble=None):
        xb, y, m, squeezed = check_analysis_inputs(background, obs, mask, self.shape)
        B, n = xb.shape[0], xb.shape[-1] * xb.shape[-2]
        if ensemble is not None:
            Ein = torch.as_tensor(np.asarray(ensemble, dtype=np.float64))
            if squeezed and Ein.ndim == 3:
                Ein = Ein[None]
            if Ein.ndim != 4 or Ein.shape[0] != B or tuple(Ein.shape[-2:]) != self.shape:
                raise ValueError(f"ensemble must be (B, N, ny, nx) = ({B}, N, {self.shape[0]}, {self.shape[1]}), "
                                 f"got {tuple(Ein.shape)}")
        rng = np.random.default_rng(self.seed)
        means, ens = [], []
        for b in range(B):
            E = Ein[b].reshape(Ein.shape[1], n) if ensemble is not None else self._draw(xb[b], rng)
            if self.infl != 1.0:
                mu = E.mean(0, keepdim=True)
                E = mu + self.infl * (E - mu)
            o = torch.nonzero(m[b].reshape(-1)).squeeze(1)
            if o.numel():
                coeffs = taper(self.D[:, o], self.loc_rad, "GC")
                R = self.sigma_o**2 * torch.eye(o.numel(), dtype=torch.float64)
                E = letkf(E, E[:, o], y[b].reshape(-1)[o], R, coeffs)
            ens.append(E.reshape(-1, *self.shape))
            means.append(E.mean(0).reshape(self.shape))
        mean, ensa = torch.stack(means).numpy(), torch.stack(ens).numpy()
        return (mean[0], ensa[0]) if squeezed else (mean, ensa)
