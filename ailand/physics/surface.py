"""Surface exchange: saturation humidity, aerodynamic and canopy resistances, roots.

All functions act elementwise on torch tensors that broadcast to the column batch
shape ``(...)``; soil-layer quantities carry a trailing dimension of 4.
"""

from __future__ import annotations

import math

import torch

from . import constants as c


def saturation_vapour_pressure(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tetens saturation vapour pressure [Pa] and its derivative [Pa K-1] for ``T`` [K].

    Over water above the melting point and over ice below it (ECMWF IFS constants); the two
    branches meet at Tt, so the function is continuous.
    """
    ice = T < c.TT
    a = torch.where(ice, 22.587, 17.502)
    b = torch.where(ice, -0.7, 32.19)
    es = 611.21 * torch.exp(a * (T - c.TT) / (T - b))
    return es, es * a * (c.TT - b) / (T - b) ** 2


def qsat(T: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Saturation specific humidity [kg kg-1] and its temperature derivative [kg kg-1 K-1].

    T [K], p surface pressure [Pa]; over ice below 273.16 K (see :func:`saturation_vapour_pressure`).
    """
    es, des = saturation_vapour_pressure(T)
    denom = p - 0.378 * es
    q = 0.622 * es / denom
    dq = 0.622 * p * des / denom**2
    return q, dq


def roughness(cveg, cvh, snowc, z0m_veg) -> torch.Tensor:
    """Column momentum roughness [m]: log-average over high vegetation, low vegetation and bare soil.

    High vegetation (cover ``cvh``) keeps its roughness through snow; snow (cover ``snowc``)
    buries low vegetation and bare soil under a smooth surface.
    """
    log_snow = math.log(c.Z0_SNOW)
    log_veg = torch.log(z0m_veg)
    low = (cveg - cvh) * (snowc * log_snow + (1 - snowc) * log_veg)
    bare = (1 - cveg) * (snowc * log_snow + (1 - snowc) * math.log(c.Z0_BARE))
    return torch.exp(cvh * log_veg + low + bare)


def aerodynamic_resistance(wind, z0m, Tair, skin_prev) -> torch.Tensor:
    """Aerodynamic resistance for heat and moisture r_a [s m-1].

    Neutral log profile with z0h = 0.1 z0m at the forcing height ZREF, corrected for
    stability with the bulk Richardson number from the previous skin temperature:
    stable ``1 / (1 + 10 Ri)``, unstable ``sqrt(1 - 10 Ri)``, with |Ri| <= RI_LIMIT.
    ``wind`` [m s-1] is already floored.
    """
    ln_m = torch.log(c.ZREF / z0m)
    ln_h = ln_m - math.log(c.Z0H_RATIO)
    ri = c.GRAV * c.ZREF * (Tair - skin_prev) / (Tair * wind**2)
    ri = ri.clamp(-c.RI_LIMIT, c.RI_LIMIT)
    f_stab = torch.where(ri >= 0, 1.0 / (1.0 + 10.0 * ri), torch.sqrt(1.0 - 10.0 * ri.clamp(max=0.0)))
    return ln_m * ln_h / (c.KARMAN**2 * wind * f_stab)


def root_fractions(root_beta: torch.Tensor) -> torch.Tensor:
    """Root fraction per layer ``(..., 4)`` from cumulative 1 - beta^z (z in cm); sums to 1."""
    cum = [1.0 - root_beta**z for z in c.Z_BOTTOM_CM[:-1]]
    r1 = cum[0]
    r2 = cum[1] - cum[0]
    r3 = cum[2] - cum[1]
    r4 = 1.0 - cum[2]  # the deepest layer takes the remainder
    return torch.stack(torch.broadcast_tensors(r1, r2, r3, r4), dim=-1)


def water_stress(theta, theta_pwp, theta_cap) -> torch.Tensor:
    """Layer stress factor in [0, 1]: 0 at the wilting point, 1 at field capacity (``(..., 4)``)."""
    return ((theta - theta_pwp[..., None]) / (theta_cap - theta_pwp)[..., None]).clamp(0.0, 1.0)


def canopy_resistance(rsmin, lai, swdown, vpd_hpa, stress_root) -> torch.Tensor:
    """Jarvis-type canopy resistance r_s [s m-1] (ecLand form).

    r_s = RSMIN / LAI * f1(SWdown) * f2(soil water) * f3(VPD), with
    1/f1 = min(1, (b Rs + c) / (a (b Rs + 1))), 1/f2 = sum_k R_k stress_k (floored),
    f3 = exp(gD * VPD[hPa]). ``stress_root`` is sum_k R_k stress_k.
    """
    br = c.JARVIS_B * swdown
    inv_f1 = torch.clamp((br + c.JARVIS_C) / (c.JARVIS_A * (br + 1.0)), max=1.0)
    f3 = torch.exp(c.JARVIS_GD * vpd_hpa.clamp(min=0.0))
    return rsmin / lai.clamp(min=c.LAI_MIN) / inv_f1 / stress_root.clamp(min=1e-3) * f3
