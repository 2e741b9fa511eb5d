"""Four-layer soil: Clapp-Hornberger hydraulics and heat conduction, both implicit in time.

Layer arrays have shape ``(..., 4)`` (top to bottom); fluxes are positive downward.
"""

from __future__ import annotations

import torch

from . import constants as c


def layer_thickness(like: torch.Tensor) -> torch.Tensor:
    """``(4,)`` layer thicknesses [m] on ``like``'s dtype/device."""
    return torch.tensor(c.DZ, dtype=like.dtype, device=like.device)


def tridiagonal_solve(a, b, cc, r):
    """Solve a tridiagonal system along the last dim (size n) by the Thomas algorithm.

    ``a`` sub-diagonal (a[..., 0] unused), ``b`` diagonal, ``cc`` super-diagonal
    (cc[..., -1] unused), ``r`` right-hand side; all ``(..., n)``. Differentiable.
    """
    n = b.shape[-1]
    cp = [cc[..., 0] / b[..., 0]]
    dp = [r[..., 0] / b[..., 0]]
    for i in range(1, n):
        m = b[..., i] - a[..., i] * cp[i - 1]
        cp.append(cc[..., i] / m)
        dp.append((r[..., i] - a[..., i] * dp[i - 1]) / m)
    x = [dp[-1]]
    for i in range(n - 2, -1, -1):
        x.insert(0, dp[i] - cp[i] * x[0])
    return torch.stack(x, dim=-1)


# ------------------------------------------------------------------ hydraulics
def conductivity(theta, theta_sat, ksat, bch):
    """Clapp-Hornberger hydraulic conductivity K = KSAT (theta/theta_sat)^(2b+3) [m s-1] and dK/dtheta."""
    s = (theta / theta_sat[..., None]).clamp(min=0.0)
    expo = (2 * bch + 3)[..., None]
    k = ksat[..., None] * s**expo
    dk = expo * k / theta.clamp(min=c.THETA_FLOOR)
    return k, dk


def diffusivity(theta, theta_sat, ksat, bch, psi_sat):
    """Clapp-Hornberger diffusivity D = b KSAT |psi_sat| / theta_sat (theta/theta_sat)^(b+2) [m2 s-1]."""
    s = (theta / theta_sat[..., None]).clamp(min=0.0)
    return (bch * ksat * psi_sat / theta_sat)[..., None] * s ** (bch + 2)[..., None]


def frozen_fraction(stl):
    """Frozen fraction of soil water [-], linear over ecLand's freezing range 272.16-274.16 K."""
    return ((c.RTF1 - stl) / (c.RTF1 - c.RTF2)).clamp(0.0, 1.0)


def water_step(theta, sources, infiltration, theta_sat, ksat, bch, psi_sat, frozen, dt):
    """Implicit linearised Richards step for four layers.

    theta ``(..., 4)`` [m3 m-3]; sources ``(..., 4)`` [m s-1] (negative = extraction);
    infiltration ``(...)`` [m s-1] into layer 1. Gravity drainage uses the upstream (upper)
    layer's K linearised in theta (positivity preserving for the power law); diffusion uses
    theta-lagged D at the thickness-weighted interface mean. Free drainage at the bottom.
    Returns (theta_new, drainage [m s-1], overflow [m s-1]) where overflow is water pushed
    out of the top by layers above saturation (becomes surface runoff). Conserves water:
    sum(dz dtheta)/dt = infiltration + sum(sources) - drainage - overflow.
    """
    dz = layer_thickness(theta)
    fk = 1.0 - c.FROZEN_K_FACTOR * frozen
    k, dk = conductivity(theta, theta_sat, ksat, bch)
    k, dk = k * fk, dk * fk
    # interface diffusivity (between k and k+1) over the centre distance
    dzc = 0.5 * (dz[:-1] + dz[1:])
    th_if = (theta[..., :-1] * dz[:-1] + theta[..., 1:] * dz[1:]) / (dz[:-1] + dz[1:])
    d_if = diffusivity(th_if, theta_sat, ksat, bch, psi_sat) * torch.minimum(fk[..., :-1], fk[..., 1:]) / dzc
    zero = torch.zeros_like(theta[..., :1])
    d_up = torch.cat([zero, d_if], dim=-1)  # coupling to the layer above
    d_dn = torch.cat([d_if, zero], dim=-1)  # coupling to the layer below
    k_up = torch.cat([zero, k[..., :-1]], dim=-1)  # gravity inflow from above (upstream K)
    dk_up = torch.cat([zero, dk[..., :-1]], dim=-1)
    th_up = torch.cat([theta[..., :1], theta[..., :-1]], dim=-1)
    th_dn = torch.cat([theta[..., 1:], theta[..., -1:]], dim=-1)
    top = torch.cat([infiltration[..., None], torch.zeros_like(theta[..., 1:])], dim=-1)
    a = -(dk_up + d_up)
    b = dz / dt + d_up + dk + d_dn
    cc = -d_dn
    r = top + k_up + d_up * (th_up - theta) - k - d_dn * (theta - th_dn) + sources
    dtheta = tridiagonal_solve(a, b, cc, r)
    new = theta + dtheta
    drainage = k[..., -1] + dk[..., -1] * dtheta[..., -1]
    # conservative bound enforcement: excess above saturation moves up, deficit below the floor is
    # taken from the layer beneath (and from drainage for the last layer)
    excess = torch.zeros_like(drainage)
    layers = list(new.unbind(-1))
    for i in range(3, -1, -1):
        w = layers[i] * dz[i] + excess
        excess = torch.relu(w - theta_sat * dz[i])
        layers[i] = (w - excess) / dz[i]
    overflow = excess / dt
    need = torch.zeros_like(drainage)
    for i in range(4):
        w = layers[i] * dz[i] - need
        need = torch.relu(c.THETA_FLOOR * dz[i] - w)
        layers[i] = (w + need) / dz[i]
    drainage = drainage - need / dt
    return torch.stack(layers, dim=-1), drainage, overflow


# ------------------------------------------------------------------- heat
def heat_capacity(theta, theta_sat):
    """Layer heat capacity [J m-2 K-1]: dz ((1 - theta_sat) C_solid + theta C_water)."""
    dz = layer_thickness(theta)
    return dz * ((1 - theta_sat)[..., None] * c.C_SOLID + theta * c.C_W_VOL)


def thermal_conductivity(theta, theta_sat, sand):
    """Johansen-type conductivity [W m-1 K-1] between dry and saturated values.

    dry: (0.135 rho_d + 64.7) / (2700 - 0.947 rho_d), rho_d = 2700 (1 - theta_sat);
    saturated: lambda_s^(1 - theta_sat) 0.57^theta_sat with lambda_s = 7.7^q 2^(1 - q), q = sand;
    Kersten number = relative saturation.
    """
    rho_d = 2700.0 * (1 - theta_sat)
    lam_dry = (0.135 * rho_d + 64.7) / (2700.0 - 0.947 * rho_d)
    lam_s = 7.7**sand * 2.0 ** (1 - sand)
    lam_sat = lam_s ** (1 - theta_sat) * 0.57**theta_sat
    sr = (theta / theta_sat[..., None]).clamp(0.0, 1.0)
    return lam_dry[..., None] + (lam_sat - lam_dry)[..., None] * sr


def heat_step(T, heat_cap, lam, top_flux, dt):
    """Backward-Euler heat diffusion; ``top_flux`` [W m-2] into layer 1, zero flux at the bottom.

    Conserves energy: sum(C dT) = dt * top_flux.
    """
    dz = layer_thickness(T)
    k_if = 1.0 / (dz[:-1] / (2 * lam[..., :-1]) + dz[1:] / (2 * lam[..., 1:]))
    zero = torch.zeros_like(T[..., :1])
    k_up = torch.cat([zero, k_if], dim=-1)
    k_dn = torch.cat([k_if, zero], dim=-1)
    a = -k_up
    b = heat_cap / dt + k_up + k_dn
    cc = -k_dn
    r = heat_cap / dt * T + torch.cat([top_flux[..., None], torch.zeros_like(T[..., 1:])], dim=-1)
    return tridiagonal_solve(a, b, cc, r)
