"""The Simplified Extended Kalman Filter (SEKF) of ECMWF's soil-moisture analysis.

Point-wise (every site its own 3-variable problem, all sites in one batch), 12-hour windows,
static diagonal background error, the analysed control the soil moisture of layers 1-3 at
the start of the window (de Rosnay et al. 2013; the offline code described in
``shared/anchors/land-da-ensembles.md``)::

    x_a = x_b + K (y - h(x_b)),   K = (B^-1 + H^T R^-1 H)^-1 H^T R^-1,   B = diag(sigma_b^2)

``H (S, m, L)`` = d h / d x over the window, from one of four sources (:data:`JACOBIANS`):

* ``"fd"`` - finite differences of the model: one perturbed run per analysed layer
  (``delta = 0.01`` m3 m-3, the size usually quoted for ECMWF's original SEKF - not
  re-checked against TM 662, see the anchors; ``-delta`` where ``+delta`` would pass
  saturation), all layers' runs and the background run as 4 members of one call;
* ``"ensemble"`` - ``cov(y, x_j) / var(x_j)`` per layer over ``n`` members drawn around the
  background with the background error (ECMWF's EDA-based Jacobian; the members here are
  drawn afresh each window from ``B``, not a cycled EDA), optionally tapered with depth;
* ``"autograd"`` - reverse-mode autograd through the model's window (``m`` adjoint passes,
  batched), for the physics or the emulator: one run with its graph.

As in ECMWF's offline code the increment is added to the state at the *end* of the window.
Screening (:func:`screen`): no screen-level data where the observed T2m is at or below
274 K or there is snow (SWE >= 0.01 m); no data at all on frozen soil (stl1 < 273.15 K);
Jacobian entries beyond ``|H_T2m| < 50``, ``|H_RH2m| < 500``, ``|H_swvl1| < 2`` (per unit
m3 m-3) reject the datum; innovations beyond 5 K, 20 % or 0.1 m3 m-3 are rejected (ECMWF
zeroes them). The analysed soil moisture is kept within [0, THETA_SAT].
"""

from __future__ import annotations

import numpy as np
import torch

from .window import WindowRunner

JACOBIANS = ("fd", "ensemble", "autograd")
# ECMWF's screening thresholds (offline SEKF code, see the module doc), per observed variable
H_LIMIT = {"T2m": 50.0, "RH2m": 500.0, "swvl1": 2.0}
INNOVATION_LIMIT = {"T2m": 5.0, "RH2m": 20.0, "swvl1": 0.1}


def sekf_update(xb, H, d, b_std, r_std, use=None):
    """One SEKF analysis per site, in a batch.

    xb : ``(S, L)`` background [m3 m-3]; H : ``(S, m, L)``; d : ``(S, m)`` innovations
    ``y - h(x_b)``; b_std : scalar or ``(L,)`` background error std; r_std : ``(m,)`` or
    ``(S, m)`` observation error std; use : ``(S, m)`` bool, the data to assimilate (others
    get zero weight). Returns ``(x_a (S, L), A (S, L, L))`` with ``A`` the analysis error
    covariance ``(B^-1 + H^T R^-1 H)^-1``. numpy in, numpy out.
    """
    xb, H, d = (np.asarray(a, dtype=float) for a in (xb, H, d))
    S, m, L = H.shape
    if xb.shape != (S, L) or d.shape != (S, m):
        raise ValueError(f"xb must be (S, L) = ({S}, {L}) and d (S, m) = ({S}, {m}); got {xb.shape} and {d.shape}")
    b = np.broadcast_to(np.asarray(b_std, dtype=float), (L,))
    r = np.broadcast_to(np.asarray(r_std, dtype=float), (S, m))
    if np.any(~(b > 0)) or np.any(~(r > 0)):
        raise ValueError("error standard deviations must be positive (variances > 0)")
    w = np.where(np.ones((S, m), bool) if use is None else np.asarray(use, bool), 1.0 / r**2, 0.0)  # R^-1 diag
    d = np.where(w > 0, d, 0.0)
    Hs = np.where(np.isfinite(H), H, 0.0)
    P = np.einsum("smi,sm,smj->sij", Hs, w, Hs) + np.diag(1.0 / b**2)  # B^-1 + H^T R^-1 H
    A = np.linalg.inv(P)
    dx = np.einsum("sij,smj,sm,sm->si", A, Hs, w, d)
    return xb + dx, A


def screen(runner: WindowRunner, y, hb, H, state, obs_var) -> np.ndarray:
    """``(S, m)`` bool: the data of window ``y (S, m)`` that pass ECMWF's screening (module
    doc) given the background equivalents ``hb (S, m)``, Jacobian ``H (S, m, L)`` and the
    window-start ``state`` (named ``(1, S)``); ``obs_var`` the variable of each datum."""
    y = np.asarray(y, dtype=float)
    use = np.isfinite(y)
    var = np.asarray(obs_var)
    sd = state["sd"][0].detach().cpu().numpy()
    frozen = state["stl1"][0].detach().cpu().numpy() < 273.15
    use &= ~frozen[:, None]
    screen_level = np.isin(var, ["T2m", "RH2m", "q2m"])
    if screen_level.any():
        t2m = np.where(var == "T2m", y, np.nan)
        cold = np.nanmin(np.where(np.isfinite(t2m), t2m, np.inf), axis=1) <= 274.0 if (var == "T2m").any() else np.zeros(len(sd), bool)
        bad = cold | (sd >= 0.01)
        use &= ~(screen_level[None, :] & bad[:, None])
    for v, lim in H_LIMIT.items():
        cols = var == v
        if cols.any():
            big = ~(np.abs(np.nan_to_num(H[:, cols], nan=np.inf)) < lim).all(-1)
            use[:, cols] &= ~big
    for v, lim in INNOVATION_LIMIT.items():
        cols = var == v
        if cols.any():
            use[:, cols] &= np.abs(y[:, cols] - hb[:, cols]) < lim
    return use


# --------------------------------------------------------------------- Jacobians
def jacobian_fd(runner: WindowRunner, k: int, state, delta: float = 0.01):
    """``(H (S, m, L), h_b (S, m), final background state)`` by one-sided differences: the
    background and the ``L`` perturbed runs as ``L + 1`` members of one call."""
    x = runner.x_of(state)  # (1, S, L)
    L = runner.n_layers
    sign = torch.where(x[0] + delta <= runner.theta_sat()[:, None], 1.0, -1.0)  # (S, L)
    X = x.repeat(L + 1, 1, 1)
    for j in range(L):
        X[j + 1, :, j] += sign[:, j] * delta
    with torch.no_grad():
        h, final = runner.run(k, state, X)
    H = ((h[1:] - h[:1]) / (sign.T[:, :, None] * delta)).permute(1, 2, 0)  # (L, S, m) -> (S, m, L)
    return H.numpy(), h[0].numpy(), {n: v[:1] for n, v in final.items()}


def jacobian_ensemble(runner: WindowRunner, k: int, state, rng: np.random.Generator, n: int = 10,
                      std: float = 0.01, taper: float | None = None):
    """``H (S, m, L)`` = ``cov(y, x_j) / var(x_j)`` over ``n`` members drawn around the
    background, ``x_j ~ x_b + N(0, std^2)`` per layer independently (one call), times
    ``1 / (1 + taper * j)`` for layer ``j = 0, 1, 2`` when ``taper`` is given (ECMWF: 0.6)."""
    if n < 3:
        raise ValueError(f"an ensemble Jacobian needs n >= 3 members, got {n}")
    x = runner.x_of(state)
    S, L = x.shape[1:]
    X = (x + std * torch.as_tensor(rng.standard_normal((n, S, L)))).clamp(min=0.0)
    with torch.no_grad():
        h, _ = runner.run(k, state, X)
    Xa = (X - X.mean(0)).numpy()  # (n, S, L)
    Ya = (h - h.mean(0)).numpy()  # (n, S, m)
    cov = np.einsum("nsm,nsl->sml", Ya, Xa) / (n - 1)
    var = (Xa**2).sum(0) / (n - 1)  # (S, L)
    H = cov / var[:, None, :]
    if taper is not None:
        H = H / (1.0 + taper * np.arange(L))[None, None, :]
    return H


def jacobian_autograd(runner: WindowRunner, k: int, state):
    """``(H (S, m, L), h (S, m), final state)`` by reverse-mode autograd through the window:
    one run with its graph, then the ``m`` adjoint passes batched (each serves every site,
    since the sites are independent)."""
    x = runner.x_of(state).detach().clone().requires_grad_(True)  # (1, S, L)
    with torch.enable_grad():
        h, final = runner.run(k, state, x)  # (1, S, m)
        m = h.shape[-1]
        eye = torch.eye(m, dtype=h.dtype)[:, None, None, :].expand(m, *h.shape)
        try:
            (g,) = torch.autograd.grad(h, x, grad_outputs=eye, is_grads_batched=True)  # (m, 1, S, L)
        except RuntimeError:  # an op without a batching rule: one adjoint pass per datum
            g = torch.stack([torch.autograd.grad(h[..., i].sum(), x, retain_graph=i < m - 1)[0] for i in range(m)])
    H = g[:, 0].permute(1, 0, 2)  # (S, m, L)
    return H.detach().numpy(), h[0].detach().numpy(), {n: v[:1].detach() for n, v in final.items()}
