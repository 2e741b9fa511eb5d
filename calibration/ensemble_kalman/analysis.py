"""Ensemble Kalman analysis steps: one function per equation.

Conventions (as DAPPER): an ensemble is ``E (..., N, n)``, members first, optional
leading batch dims for independent problems; its observed image ``HE (..., N, m)``;
observations ``y (..., m)``; observation error covariance ``R (m, m)`` (or ``(..., m, m)``).
Anomalies ``X = E - mean(E)``, ``Y = HE - mean(HE)`` (members axis ``-2``). Everything
is computed in float64 torch; numpy in gives numpy out, torch in gives torch out.

- :func:`enkf_pertobs` - stochastic EnKF (Burgers et al. 1998; Evensen 2009): perturbed
  observations. Also the update of EKI (R/dt) and ES-MDA (alpha R).
- :func:`etkf` - square-root ETKF, symmetric square root (Bishop et al. 2001; Hunt et al. 2007).
- :func:`letkf` - local ETKF with R-localisation, every point in one batch (Hunt et al. 2007).
- :func:`inflate` (multiplicative), :func:`rtpp`, :func:`rtps` - inflation;
  :func:`random_rotation` / :func:`post_process` - DAPPER's mean-preserving random rotation.

Every update is ``E_a = E + M X`` with ensemble weights ``M (N, N)`` (per point for the LETKF);
``return_weights=True`` returns them, so that a smoother applies the same ``M`` to earlier times.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ailand.arrays import to_numpy


def _t(a) -> torch.Tensor:
    """numpy / torch / DataArray -> float64 tensor (detached from nothing: grads flow)."""
    if torch.is_tensor(a):
        return a.to(torch.float64)
    return torch.as_tensor(to_numpy(a))


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


def enkf_pertobs(E, HE, y, R, rng: np.random.Generator | None = None, D=None, center: bool = False,
                 return_weights: bool = False):
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
    return_weights : also return the ensemble weights ``M (..., N, N)`` of the update
        ``E_a = E + M X`` (what a smoother applies to earlier times).

    Returns the analysis ensemble ``(..., N, n)``, same type as ``E`` (and ``M``).
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
    if return_weights:
        M = W.transpose(-1, -2) @ Y.transpose(-1, -2) / (N - 1)  # (..., N, N): E_a = E + M X
        return _like(Ea, E), _like(M, E)
    return _like(Ea, E)


# ---------------------------------------------------------------- square-root filters (Hunt et al. 2007)
def whiten(R) -> torch.Tensor:
    """Symmetric inverse square root ``R^-1/2 (m, m)`` of an SPD ``R`` (DAPPER's ``R.sym_sqrt_inv``):
    ``Y R^-1/2`` are observation anomalies in units of observation error."""
    Rt = _t(R)
    if torch.count_nonzero(Rt - torch.diag_embed(torch.diagonal(Rt, dim1=-2, dim2=-1))) == 0:
        return torch.diag_embed(torch.diagonal(Rt, dim1=-2, dim2=-1).rsqrt())
    lam, V = torch.linalg.eigh(Rt)
    return (V * lam.rsqrt().unsqueeze(-2)) @ V.transpose(-1, -2)


def _etkf_weights(Yw: torch.Tensor, dyw: torch.Tensor) -> torch.Tensor:
    """Ensemble-space ETKF in whitened observations (Hunt et al. 2007, eqs. 21-24, rho = 1).

        C      = Yw Yw^T + (N-1) I                    (N, N); Pa~ = C^-1        (eq. 21)
        W      = [(N-1) Pa~]^1/2   (symmetric)                                   (eq. 22)
        w      = Pa~ Yw dyw                                                     (eq. 23)
        E_a    = mean + (1 w^T + W) X  =  E + M X,  M = 1 w^T + W - I           (eqs. 24-25)

    ``Yw (..., N, m)`` whitened observation anomalies (already tapered for the LETKF),
    ``dyw (..., m)`` whitened mean innovation. Returns ``M (..., N, N)``.
    """
    N = Yw.shape[-2]
    eye = torch.eye(N, dtype=Yw.dtype, device=Yw.device)
    C = Yw @ Yw.transpose(-1, -2) + (N - 1) * eye
    d, V = torch.linalg.eigh(C)
    W = (V * (d.rsqrt() * (N - 1) ** 0.5).unsqueeze(-2)) @ V.transpose(-1, -2)
    Pw = (V / d.unsqueeze(-2)) @ V.transpose(-1, -2)
    w = ((dyw.unsqueeze(-2) @ Yw.transpose(-1, -2)) @ Pw)  # (..., 1, N)
    return w + W - eye  # the row w broadcasts: 1 w^T


def etkf(E, HE, y, R, return_weights: bool = False, rot: bool = False, rng: np.random.Generator | None = None):
    """Ensemble transform Kalman filter with the symmetric square root (Bishop et al. 2001;
    Hunt et al. 2007, eqs. 21-25; DAPPER's ``EnKF('Sqrt')``). Deterministic: the analysis
    ensemble has exactly the Kalman mean and covariance of the ensemble's (``P = X^T X / (N-1)``).

    Parameters
    ----------
    E : ``(..., N, n)`` forecast ensemble.
    HE : ``(..., N, m)`` its observed image.
    y : ``(..., m)`` observations.
    R : ``(m, m)`` observation error covariance (SPD).
    return_weights : also return ``M (..., N, N)`` with ``E_a = E + M X``.
    rot : rotate the analysis anomalies by a random mean-preserving orthogonal matrix ``Q``
        (:func:`random_rotation`, DAPPER's ``rot``): ``E_a = mean_a + Q W X``, the same mean and
        covariance; ``M`` becomes ``Q (M + I) - I`` (as ``Q 1 = 1``).
    rng : numpy Generator for ``rot``.

    Returns ``E_a (..., N, n)`` (numpy in, numpy out). Inflation is a separate step
    (:func:`inflate`; DAPPER's ``post_process`` inflates, then rotates: :func:`post_process`).
    """
    Et, HEt, yt, Rt = _t(E), _t(HE), _t(y), _t(R)
    check_ensemble(Et, HEt, yt, Rt)
    Rm12 = whiten(Rt)
    X = Et - Et.mean(-2, keepdim=True)
    ybar = HEt.mean(-2, keepdim=True)
    Yw = (HEt - ybar) @ Rm12
    dyw = ((yt.unsqueeze(-2) - ybar) @ Rm12).squeeze(-2)
    M = _etkf_weights(Yw, dyw)
    if rot:
        N = Et.shape[-2]
        Q = random_rotation(N, np.random.default_rng() if rng is None else rng)
        M = Q @ (M + torch.eye(N, dtype=M.dtype)) - torch.eye(N, dtype=M.dtype)
    Ea = Et + M @ X
    return (_like(Ea, E), _like(M, E)) if return_weights else _like(Ea, E)


def letkf(E, HE, y, R, coeffs, return_weights: bool = False):
    """Local ETKF (Hunt et al. 2007, section 2.3 and eqs. 21-25 per point) with R-localisation.

    For every state variable ``i``, the ETKF of :func:`etkf` on the observations weighted by
    ``coeffs[i]``: the whitened anomalies and innovation of observation ``j`` are multiplied by
    ``sqrt(coeffs[i, j])`` (i.e. ``R^-1`` by ``coeffs[i, j]``; a zero coefficient removes the
    observation, all zeros leave the point unchanged), then ``E_a[:, i] = E[:, i] + M_i X[:, i]``.
    All local analyses run as one batched eigen-decomposition (points with identical
    coefficient rows share one analysis). As DAPPER's ``LETKF``, ``R`` is whitened globally by
    its symmetric square root before tapering (the same as tapering ``R^-1`` for diagonal ``R``).

    Parameters
    ----------
    E, HE, y, R : as :func:`etkf` (``R`` ``(m, m)``).
    coeffs : ``(n, m)`` localisation coefficients in [0, 1] of each observation for each state
        variable, e.g. :func:`calibration.ensemble_kalman.localisation.taper` of the
        state-to-observation distances. All ones: the ETKF.
    return_weights : also return the per-point weights ``M (..., n, N, N)``.

    Returns ``E_a (..., N, n)`` (numpy in, numpy out).
    """
    Et, HEt, yt, Rt = _t(E), _t(HE), _t(y), _t(R)
    check_ensemble(Et, HEt, yt, Rt)
    ct = _t(coeffs)
    n, m = Et.shape[-1], HEt.shape[-1]
    if ct.shape != (n, m):
        raise ValueError(f"coeffs must be (n, m) = ({n}, {m}) (state variables x observations), got {tuple(ct.shape)}")
    if not bool(((ct >= 0) & (ct <= 1)).all()):
        raise ValueError("coeffs must lie in [0, 1]")
    Rm12 = whiten(Rt)
    X = Et - Et.mean(-2, keepdim=True)
    ybar = HEt.mean(-2, keepdim=True)
    Yw = (HEt - ybar) @ Rm12  # (..., N, m)
    dyw = ((yt.unsqueeze(-2) - ybar) @ Rm12).squeeze(-2)  # (..., m)
    cu, inv = torch.unique(ct, dim=0, return_inverse=True)  # (p, m), (n,)
    s = cu.sqrt()
    Ml = _etkf_weights(Yw.unsqueeze(-3) * s.unsqueeze(-2), dyw.unsqueeze(-2) * s)  # (..., p, N, N)
    M = Ml[..., inv, :, :]  # (..., n, N, N)
    Ea = Et + torch.einsum("...ijk,...ki->...ji", M, X)
    return (_like(Ea, E), _like(M, E)) if return_weights else _like(Ea, E)


# ---------------------------------------------------------------- inflation and rotation
def check_inflation(infl, name: str = "infl") -> float:
    """Multiplicative inflation must be a number >= 1."""
    f = float(infl)
    if not f >= 1.0:
        raise ValueError(f"{name} must be >= 1 (a multiplicative inflation of the anomalies), got {infl!r}")
    return f


def inflate(E, infl):
    """Multiplicative inflation of the anomalies: ``E <- mean + infl (E - mean)``, ``infl >= 1``.

    A factor on the anomalies (standard deviations), as DAPPER's ``infl``; its filters apply it
    to the *posterior* (analysis) ensemble after each analysis, and so does
    :class:`calibration.ensemble_kalman.filter.CyclingFilter` by default (``infl_on="posterior"``).
    ``E (..., N, n)``; same type out.
    """
    f = check_inflation(infl)
    Et = _t(E)
    mu = Et.mean(-2, keepdim=True)
    return _like(mu + f * (Et - mu), E)


def _check_fraction(alpha, name):
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {alpha!r}")
    return a


def rtpp(Ea, Ef, alpha):
    """Relaxation to prior perturbations (Zhang et al. 2004):
    ``X_a <- (1 - alpha) X_a + alpha X_f``, ``alpha`` in [0, 1]. ``Ea, Ef (..., N, n)``."""
    a = _check_fraction(alpha, "rtpp")
    Ea_t, Ef_t = _t(Ea), _t(Ef)
    mu = Ea_t.mean(-2, keepdim=True)
    Xa, Xf = Ea_t - mu, Ef_t - Ef_t.mean(-2, keepdim=True)
    return _like(mu + (1 - a) * Xa + a * Xf, Ea)


def rtps(Ea, Ef, alpha):
    """Relaxation to prior spread (Whitaker and Hamill 2012, eq. 3):
    ``X_a <- X_a (1 + alpha (s_f - s_a) / s_a)`` per variable, ``s`` the ensemble std,
    ``alpha`` in [0, 1]. ``Ea, Ef (..., N, n)``."""
    a = _check_fraction(alpha, "rtps")
    Ea_t, Ef_t = _t(Ea), _t(Ef)
    mu = Ea_t.mean(-2, keepdim=True)
    Xa = Ea_t - mu
    sa, sf = Ea_t.std(-2, keepdim=True), Ef_t.std(-2, keepdim=True)
    fac = torch.where(sa > 0, 1 + a * (sf - sa) / torch.where(sa > 0, sa, torch.ones_like(sa)), torch.ones_like(sa))
    return _like(mu + Xa * fac, Ea)


@functools.lru_cache(maxsize=8)
def _ones_basis(N: int) -> np.ndarray:
    """Orthonormal basis ``(N, N)`` whose first vector is ``ones(N) / sqrt(N)`` (DAPPER's
    ``basis_beginning_with_ones``)."""
    return np.linalg.svd(np.ones((N, 1)))[0]


def random_rotation(N: int, rng: np.random.Generator) -> torch.Tensor:
    """Random orthogonal ``Q (N, N)`` with ``Q 1 = 1`` (mean-preserving; DAPPER's ``genOG_1``):
    ``V diag(1, O) V^T``, ``V`` a basis starting with ``1/sqrt(N)``, ``O`` Haar-random (QR of a
    Gaussian matrix with the signs of ``R``'s diagonal). ``E <- mean + Q X`` keeps mean and covariance."""
    if N < 2:
        raise ValueError(f"N must be >= 2, got {N}")
    Q, Rq = np.linalg.qr(rng.standard_normal((N - 1, N - 1)))
    Q = Q * np.sign(np.diag(Rq))
    V = _ones_basis(N)
    B = np.eye(N)
    B[1:, 1:] = Q
    return torch.as_tensor(V @ B @ V.T)


def post_process(E, infl: float = 1.0, rot: bool = False, rng: np.random.Generator | None = None):
    """DAPPER's ``post_process`` after an analysis: ``E <- mean + Q (infl X)`` with ``Q`` a
    :func:`random_rotation` when ``rot`` (else identity). ``E (N, n)`` (one ensemble)."""
    f = check_inflation(infl)
    if f == 1.0 and not rot:
        return E
    Et = _t(E)
    mu = Et.mean(-2, keepdim=True)
    X = f * (Et - mu)
    if rot:
        X = random_rotation(Et.shape[-2], np.random.default_rng() if rng is None else rng) @ X
    return _like(mu + X, E)
