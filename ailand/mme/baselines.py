"""Baseline combinations of the members: median, mean, and a weighted ensemble learnt from past skill.

All take an :class:`~ailand.mme.MMEData` and return an ``xr.Dataset`` with one variable per
quantity, dims ``(lead_time, time, lat, lon)``, in the members' units. A member missing at a
(lead_time, time) (an all-NaN field) is skipped: the median and mean are over the members
present; the weighted ensemble renormalises its weights over them (if every member with a
non-zero weight is missing it falls back to the mean of those present). No member present
-> NaN.

Weighted ensemble (:class:`WeightedEnsemble`), per variable and lead day, fitted on past
(training) times:

* ``method="nnls"`` (default): the weights ``w`` minimise ``sum (sum_m w_m x_m - y)^2`` over
  all training points subject to ``w_m >= 0`` and ``sum_m w_m = 1`` (a convex combination:
  it keeps the ensemble's units and cannot extrapolate). Solved exactly as a non-negative
  least-squares problem on the ``M x M`` Gram matrix with the sum-to-one row appended with a
  large weight (:func:`simplex_least_squares`).
* ``method="inverse_mse"``: ``w_m ~ 1 / MSE_m`` (the classic skill weighting).
* ``method="equal"``: ``w_m = 1 / M`` (the mean, for reference).

``window_days`` restricts the fit to the last ``window_days`` days of the fitting times
("recent skill"). Why NNLS is the default: on the synthetic ensemble it gives the lowest
RMSE for every pollutant and lead day (see the README table made by
``examples/dl_ensemble.py``); inverse-MSE weights never drop a poor member entirely.
"""

from __future__ import annotations


import numpy as np
import xarray as xr
from scipy.optimize import nnls

from .dataset import MMEData

__all__ = ["ensemble_median", "ensemble_mean", "WeightedEnsemble", "simplex_least_squares", "nanmedian_members"]


def nanmedian_members(x: np.ndarray) -> np.ndarray:
    """Median over axis 0 (members) ignoring NaN members; NaN where none is present.

    ``x`` ``(M, ...)`` -> ``(...)``. Fast path (``np.median``) when nothing is missing.
    """
    nan = np.isnan(x)
    if not nan.any():
        return np.median(x, axis=0)
    s = np.sort(x, axis=0)  # NaN sorts last
    n = (~nan).sum(0)
    lo = np.clip((n - 1) // 2, 0, x.shape[0] - 1)
    hi = np.clip(n // 2, 0, x.shape[0] - 1)
    med = 0.5 * (np.take_along_axis(s, lo[None], 0)[0] + np.take_along_axis(s, hi[None], 0)[0])
    return np.where(n > 0, med, np.nan).astype(x.dtype)


def _out(data: MMEData, arrays: dict, method: str, long: str) -> xr.Dataset:
    ds = xr.Dataset(coords={c: data.ds[c] for c in ("lead_time", "time", "lat", "lon")})
    for v, a in arrays.items():
        ds[v] = xr.DataArray(a.astype(np.float32), dims=("lead_time", "time", "lat", "lon"),
                             attrs={"units": data.units[v], "long_name": f"{v}, {long}"})
    ds.attrs["method"] = method
    return ds


def ensemble_median(data: MMEData, variables=None) -> xr.Dataset:
    """The median ENSEMBLE: per point, lead day and time, the median of the members present.

    Returns ``(lead_time, time, lat, lon)`` per variable [members' units].
    """
    vs = data.variables if variables is None else list(variables)
    return _out(data, {v: nanmedian_members(data.members_array(v)) for v in vs}, "median", "ensemble median")


def ensemble_mean(data: MMEData, variables=None) -> xr.Dataset:
    """The mean of the members present, per point, lead day and time ``(lead_time, time, lat, lon)``."""
    vs = data.variables if variables is None else list(variables)
    out = {}
    for v in vs:
        x = data.members_array(v)
        n = (~np.isnan(x[..., :1, :1])).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[v] = np.where(n > 0, np.nansum(x, axis=0) / np.maximum(n, 1), np.nan)
    return _out(data, out, "mean", "ensemble mean")


def simplex_least_squares(G: np.ndarray, b: np.ndarray, penalty: float = 1e4) -> np.ndarray:
    """``argmin_w  w^T G w - 2 b^T w`` subject to ``w >= 0``, ``sum(w) = 1``.

    ``G`` ``(M, M)`` = ``X^T X / N`` and ``b`` ``(M,)`` = ``X^T y / N`` (the normal equations of
    ``X w ~ y``). With ``G = R^T R`` (symmetric square root) the objective is
    ``|R w - d|^2`` + const, ``d = R^+ b``; the equality is appended as a row
    ``penalty * scale * (1^T w - 1)`` and the result is solved by Lawson-Hanson NNLS
    (scipy), then renormalised to sum exactly to one. Returns ``w`` ``(M,)``.
    """
    G = 0.5 * (G + G.T)
    lam, V = np.linalg.eigh(G)
    tol = max(lam.max(), 1e-300) * 1e-12
    keep = lam > tol
    R = (V[:, keep] * np.sqrt(lam[keep])).T  # (r, M): R^T R = G on its range
    d = (V[:, keep].T @ b) / np.sqrt(lam[keep])
    scale = np.sqrt(max(np.trace(G) / G.shape[0], 1e-300))
    A = np.vstack([R, penalty * scale * np.ones((1, G.shape[0]))])
    y = np.concatenate([d, [penalty * scale]])
    w, _ = nnls(A, y, maxiter=50 * G.shape[0])
    s = w.sum()
    return w / s if s > 0 else np.full(G.shape[0], 1.0 / G.shape[0])


class WeightedEnsemble:
    """Weighted ENSEMBLE with weights learnt from past skill, per variable and lead day.

    ``WeightedEnsemble(method="nnls").fit(data, times)`` -> ``weights_`` ``(variable,
    lead_time, member)`` (non-negative, summing to one); ``predict(data)`` -> Dataset
    ``(lead_time, time, lat, lon)`` per variable. See the module docstring for the methods.
    """

    METHODS = ("nnls", "inverse_mse", "equal")

    def __init__(self, method: str = "nnls", window_days: float | None = None):
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, not {method!r}")
        if window_days is not None and window_days <= 0:
            raise ValueError(f"window_days must be positive, got {window_days}")
        self.method = method
        self.window_days = window_days
        self.weights_: xr.DataArray | None = None

    def __repr__(self):
        return f"WeightedEnsemble(method={self.method!r}, window_days={self.window_days}, fitted={self.weights_ is not None})"

    def fit(self, data: MMEData, times=None, variables=None) -> "WeightedEnsemble":
        """Learn the weights on ``data`` at time indices ``times`` (default all; pass the
        training indices of a :class:`~ailand.mme.TimeSplit`). Only (lead, time) fields
        where every member is present, and analysis points that are not NaN, enter the fit."""
        vs = data.variables if variables is None else list(variables)
        t_idx = np.arange(data.shape["time"]) if times is None else np.asarray(times)
        if self.window_days is not None:
            tt = data.time[t_idx]
            t_idx = t_idx[tt >= tt.max() - np.timedelta64(int(self.window_days * 86400), "s")]
        if t_idx.size == 0:
            raise ValueError("WeightedEnsemble.fit: no fitting times")
        M, L = data.shape["member"], data.shape["lead_time"]
        W = np.zeros((len(vs), L, M))
        for i, v in enumerate(vs):
            x = data.members_array(v)
            y_all = data.analysis_array(v)
            for li in range(L):
                G, b, n = self._normal_equations(x[:, li], y_all, t_idx, data.available(v)[:, li])
                if n == 0:
                    raise ValueError(f"WeightedEnsemble.fit: {v} lead {int(data.lead_times[li])}: no time with all "
                                     "members present and analysis available to fit on")
                W[i, li] = self._solve(G, b)
        self.weights_ = xr.DataArray(
            W, dims=("variable", "lead_time", "member"),
            coords={"variable": vs, "lead_time": data.ds["lead_time"], "member": data.ds["member"]},
            attrs={"long_name": f"weighted-ensemble weights ({self.method})", "units": "1"})
        return self

    @staticmethod
    def _normal_equations(x, y_all, t_idx, avail, chunk: int = 64):
        """Means over valid points of ``x x^T`` (M, M) and of ``[x y, y y]`` (M + 1,), and the
        number N of points, with ``x`` ``(M, T, H, W)``, ``y`` ``(T, H, W)``."""
        M = x.shape[0]
        ok_t = t_idx[avail[:, t_idx].all(0)]
        G = np.zeros((M, M))
        b = np.zeros(M)
        yy = 0.0
        n = 0
        for k in range(0, ok_t.size, chunk):
            tt = ok_t[k:k + chunk]
            X = x[:, tt].reshape(M, -1).astype(np.float64)
            y = y_all[tt].reshape(-1).astype(np.float64)
            good = ~np.isnan(y)
            X, y = X[:, good], y[good]
            G += X @ X.T
            b += X @ y
            yy += y @ y
            n += y.size
        n_ = max(n, 1)
        return G / n_, np.append(b / n_, yy / n_), n

    def _solve(self, G, b_yy):
        b, yy = b_yy[:-1], b_yy[-1]
        M = G.shape[0]
        if self.method == "equal":
            return np.full(M, 1.0 / M)
        if self.method == "inverse_mse":
            mse = np.clip(np.diag(G) - 2 * b + yy, 0.0, None)
            inv = 1.0 / (mse + 1e-12 * max(yy, 1e-300))
            return inv / inv.sum()
        return simplex_least_squares(G, b)

    def predict(self, data: MMEData) -> xr.Dataset:
        """The weighted ensemble ``(lead_time, time, lat, lon)`` per fitted variable."""
        if self.weights_ is None:
            raise ValueError("WeightedEnsemble is not fitted: call fit(data, times) first")
        self._check_compatible(data)
        out = {}
        fitted = [str(m) for m in self.weights_["member"].values]
        here = [fitted.index(m) for m in data.members]  # members absent from the data are missing
        for v in self.weights_["variable"].values:
            v = str(v)
            x = data.members_array(v)
            av = data.available(v)  # (M_data, L, T)
            w = self.weights_.sel(variable=v).sel(lead_time=data.ds["lead_time"]).transpose("member", "lead_time").values[here]
            wa = w[:, :, None] * av  # (M_data, L, T)
            den = wa.sum(0)
            fallback = (den <= 0) & av.any(0)  # every weighted member missing: mean of those present
            wa = np.where(fallback[None], av.astype(float), wa)
            den = wa.sum(0)
            num = np.zeros(x.shape[1:], dtype=np.float64)
            for m in range(x.shape[0]):
                num += wa[m][..., None, None] * np.nan_to_num(x[m])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[v] = np.where((den > 0)[..., None, None], num / den[..., None, None], np.nan)
        return _out(data, out, f"weighted_{self.method}", f"weighted ensemble ({self.method})")

    def _check_compatible(self, data: MMEData):
        mem = [str(m) for m in self.weights_["member"].values]
        extra = [m for m in data.members if m not in mem]
        if extra:
            raise ValueError(f"members {extra} were not in the fit ({mem}); drop them or refit")
        missing = [int(lt) for lt in data.lead_times if lt not in self.weights_["lead_time"].values]
        if missing:
            raise ValueError(f"no weights for lead days {missing}; fitted for {list(self.weights_['lead_time'].values)}")
        vs = [v for v in map(str, self.weights_["variable"].values) if v not in data.variables]
        if vs:
            raise ValueError(f"variables {vs} are not in the data ({data.variables})")
