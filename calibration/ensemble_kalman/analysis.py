"""Ensemble Kalman analysis steps: one function per equation.

Conventions (as DAPPER): an ensemble is ``E (..., N, n)``, members first, optional
leading batch dims for independent problems; its observed image ``HE (..., N, m)``;
observations ``y (..., m)``; observation error covariance ``R (m, m)`` (or ``(..., m, m)``).
Anomalies ``X = E - mean(E)``, ``Y = HE - mean(HE)`` (members axis ``-2``). Everything
is computed in float64 torch; numpy in gives numpy out, torch in gives torch out.

- :func:`enkf_pertobs` - stochastic EnKF (Burgers et al. 1998; Evensen 2009): perturbed
  observations. Also the update of EKI (R/dt) and ES-MDA (alpha R).
"""

from __future__ import annotations

import numpy as np
import torch


def _t(a) -> torch.Tensor:
    """numpy / torch / DataArray -> float64 tensor (detached from nothing: grads flow)."""
    if torch.is_tensor(a):
        return a.to(torch.float64)
    return torch.as_tensor(np.asarray(getattr(a, "values", a) if not isinstance(a, np.ndarray) else a, dtype=float))


def _like(t: torch.Tensor, ref):
    """Return ``t`` as numpy when ``ref`` was not a torch tensor."""
    return t if torch.is_tensor(ref) else t.detach().cpu().numpy()


def check_ensemble(E: torch.Tensor, HE: torch.Tensor, y: torch.Tensor, R: torch.Tensor, name: str = "E"):
    """Validate shapes: N >= 2, HE members match E, y length matches HE, R (m, m) SPD."""
    if E.ndim < 2:
        raise ValueError(f"{name} must be (..., N, n) with members on axis -2, got shape {tuple(E.shape)}")
    N = E.shape[-2]
    if N < 2:
        raise ValueError(f"{name}: an ensemble needs at least 2 members, got N={N}")
    if HE.shape[-2] != N:
        raise ValueError(f"HE must have the ensemble's N={N} members on axis -2, got shape {tuple(HE.shape)}")
    m = HE.shape[-1]
    if y.shape[-1] != m:
        raise ValueError(f"y has {y.shape[-1]} observations but HE gives {m} (observations of the wrong length)")
    if R.shape[-2:] != (m, m):
        raise ValueError(f"R must be ({m}, {m}) for {m} observations, got {tuple(R.shape)}")
    if not torch.allclose(R, R.transpose(-1, -2)):
        raise ValueError("R must be symmetric")
    if torch.linalg.eigvalsh(R).min() <= 0:
        raise ValueError("R must be positive definite")


def enkf_pertobs(E, HE, y, R, rng: np.random.Generator | None = None, D=None, center: bool = False):
    """Stochastic EnKF analysis with perturbed observations.

        K   = C_xy (C_yy + R)^-1,   C_xy = X^T Y / (N-1),  C_yy = Y^T Y / (N-1)
        E_a = E + (y + D - HE) K^T,  D_i ~ N(0, R)

    Parameters
    ----------
    E : ``(..., N, n)`` forecast ensemble (states, parameters, or both).
    HE : ``(..., N, m)`` its observed image (``H(E_i)``, any nonlinear operator).
    y : ``(..., m)`` observations.
    R : ``(m, m)`` or ``(..., m, m)`` observation error covariance (SPD). EKI passes
        ``R / dt``, ES-MDA ``alpha R``.
    rng : numpy Generator for the perturbations (ignored when ``D`` is given).
    D : ``(..., N, m)`` observation perturbations to use as they are (e.g. to compare
        with another implementation on the same draws).
    center : remove the ensemble mean from the drawn ``D`` (DAPPER's ``mean0``).

    Returns the analysis ensemble ``(..., N, n)``, same type as ``E``.
    """
    Et, HEt, yt, Rt = _t(E), _t(HE), _t(y), _t(R)
    check_ensemble(Et, HEt, yt, Rt)
    N = Et.shape[-2]
    if D is None:
        rng = np.random.default_rng() if rng is None else rng
        L = torch.linalg.cholesky(Rt)
        z = torch.as_tensor(rng.standard_normal(HEt.shape))
        Dt = z @ L.transpose(-1, -2)
        if center:
            Dt = Dt - Dt.mean(-2, keepdim=True)
    else:
        Dt = _t(D)
        if Dt.shape != HEt.shape:
            raise ValueError(f"D must have the shape of HE {tuple(HEt.shape)}, got {tuple(Dt.shape)}")
    X = Et - Et.mean(-2, keepdim=True)
    Y = HEt - HEt.mean(-2, keepdim=True)
    Cyy = Y.transpose(-1, -2) @ Y / (N - 1) + Rt  # (..., m, m)
    innov = yt.unsqueeze(-2) + Dt - HEt  # (..., N, m)
    # E_a = E + innov Cyy^-1 C_yx ;  C_yx = Y^T X / (N - 1)
    W = torch.linalg.solve(Cyy, innov.transpose(-1, -2))  # (..., m, N)
    Ea = Et + W.transpose(-1, -2) @ (Y.transpose(-1, -2) @ X) / (N - 1)
    return _like(Ea, E)
