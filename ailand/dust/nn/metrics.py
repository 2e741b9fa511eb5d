"""Skill scores of an emission model, in linear and log space.

Log space: ln(E / E_scale + eps) (:func:`ailand.dust.nn.model.log_space`), with E_scale the
largest training emission and eps = 1e-5: emissions below ~1e-5 E_scale count as zero.
"""

from __future__ import annotations

import numpy as np

from .model import LOG_EPS, log_space

__all__ = ["skill", "SKILL_NAMES"]

SKILL_NAMES = ("r2", "rmse", "corr", "r2_log", "rmse_log", "corr_log")


def _r2(t, p):
    sst = np.sum((t - t.mean()) ** 2)
    return float(1.0 - np.sum((t - p) ** 2) / sst) if sst > 0 else float("nan")


def _corr(t, p):
    return float(np.corrcoef(t, p)[0, 1]) if t.std() > 0 and p.std() > 0 else float("nan")


def skill(truth, pred, scale: float, eps: float = LOG_EPS) -> dict:
    """R2, RMSE [kg m-2 s-1], Pearson correlation of ``pred`` against ``truth`` (any equal
    shapes, [kg m-2 s-1]) and the same in log space (RMSE_log dimensionless)."""
    t, p = np.asarray(truth, dtype=float).ravel(), np.asarray(pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in size: {t.size} vs {p.size}")
    lt, lp = log_space(t, scale, eps), log_space(p, scale, eps)
    return {"r2": _r2(t, p), "rmse": float(np.sqrt(np.mean((t - p) ** 2))), "corr": _corr(t, p),
            "r2_log": _r2(lt, lp), "rmse_log": float(np.sqrt(np.mean((lt - lp) ** 2))), "corr_log": _corr(lt, lp),
            "n": int(t.size)}
