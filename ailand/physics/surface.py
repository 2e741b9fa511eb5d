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


def stability_factor(wind, Tair, skin_prev) -> torch.Tensor:
    """Stability factor f [-] of the bulk exchange coefficient (Louis-type, one function for
    momentum and heat), ``(...)``.

    Bulk Richardson number between the surface (previous skin temperature ``skin_prev``
    [K]) and the forcing height ZREF, Ri = g ZREF (Tair - skin_prev) / (Tair wind^2), capped
    at |Ri| <= RI_LIMIT; stable (Ri >= 0) ``f = 1 / (1 + 10 Ri)``, unstable
    ``f = sqrt(1 - 10 Ri)``. ``wind`` [m s-1] is already floored, ``Tair`` [K].
    """
    ri = c.GRAV * c.ZREF * (Tair - skin_prev) / (Tair * wind**2)
    ri = ri.clamp(-c.RI_LIMIT, c.RI_LIMIT)
    return torch.where(ri >= 0, 1.0 / (1.0 + 10.0 * ri), torch.sqrt(1.0 - 10.0 * ri.clamp(max=0.0)))


def aerodynamic_resistance(wind, z0m, Tair, skin_prev) -> torch.Tensor:
    """Aerodynamic resistance for heat and moisture r_a [s m-1].

    Neutral log profile with z0h = 0.1 z0m at the forcing height ZREF, corrected for
    stability with the bulk Richardson number from the previous skin temperature
    (:func:`stability_factor` f): r_a = ln(ZREF/z0m) ln(ZREF/z0h) / (k^2 wind f).
    ``wind`` [m s-1] is already floored.
    """
    ln_m = torch.log(c.ZREF / z0m)
    ln_h = ln_m - math.log(c.Z0H_RATIO)
    f_stab = stability_factor(wind, Tair, skin_prev)
    return ln_m * ln_h / (c.KARMAN**2 * wind * f_stab)


def profile_weight(z, z0m, f_stab) -> torch.Tensor:
    """Share w(z) in [0, 1] of the surface-to-ZREF contrast of temperature and humidity
    reached at height ``z`` [m] above the surface, ``(...)``:  s(z) = s_s + w(z) (s_a - s_s).

    Constant-flux surface layer: s(z) - s_s is proportional to the heat (moisture)
    profile integral Phi_h(z) = int_{z0h}^{z} phi_h(z') / z' dz', so w(z) = Phi_h(z) / Phi_h(ZREF),
    with z0h = Z0H_RATIO z0m (z0m [m], as in :func:`aerodynamic_resistance`).

    Phi_h(ZREF) is the toy's own: its exchange coefficient k^2 f / (ln(ZREF/z0m) ln(ZREF/z0h))
    read as Louis (1979) with one stability function for momentum and heat, k^2 / (Phi_m
    Phi_h) with Phi_m = ln(ZREF/z0m) / sqrt(f) and Phi_h(ZREF) = ln(ZREF/z0h) / sqrt(f) = L_h.
    The shape between z0h and ZREF comes from a gradient function phi_h > 0, so the profile is
    monotone and s(z0h) = s_s, s(ZREF) = s_a exactly:

    * neutral (f = 1): phi_h = 1, Phi_h(z) = ln(z / z0h) (the log profile);
    * stable (f < 1): log-linear, phi_h = 1 + a z, Phi_h(z) = ln(z/z0h) + a (z - z0h) with
      a = (L_h - ln(ZREF/z0h)) / (ZREF - z0h) >= 0: the air near the ground stays closer to
      the skin (the screen level decouples from the forcing level at night);
    * unstable (f > 1): phi_h = 1 / (1 + b z) (mixing flattens the upper profile),
      Phi_h(z) = ln(z/z0h) - ln((1 + b z) / (1 + b z0h)) with b >= 0 solving
      Phi_h(ZREF) = L_h in closed form, b = (ZREF - E z0h) / (ZREF z0h (E - 1)), E = exp(L_h).

    ``z`` is clamped to [z0h, ZREF] (below z0h the surface value, above ZREF the forcing).
    """
    z0h = c.Z0H_RATIO * z0m
    z = torch.maximum(torch.as_tensor(z, dtype=z0h.dtype, device=z0h.device).clamp(max=c.ZREF), z0h)
    ln_ref = torch.log(c.ZREF / z0h)
    ln_z = torch.log(z / z0h)
    # both branches finite everywhere (torch.where differentiates both)
    f_s = f_stab.clamp(max=1.0)
    f_u = f_stab.clamp(min=1.0)
    a = ln_ref * (1.0 / torch.sqrt(f_s) - 1.0) / (c.ZREF - z0h)
    phi_stable, ref_stable = ln_z + a * (z - z0h), ln_ref / torch.sqrt(f_s)
    big_e = torch.exp(ln_ref / torch.sqrt(f_u))
    b = ((c.ZREF - big_e * z0h) / (c.ZREF * z0h * (big_e - 1.0))).clamp(min=0.0)
    phi_unstable = ln_z - torch.log((1.0 + b * z) / (1.0 + b * z0h))
    ref_unstable = ln_ref - torch.log((1.0 + b * c.ZREF) / (1.0 + b * z0h))
    stable = f_stab <= 1.0
    return torch.where(stable, phi_stable, phi_unstable) / torch.where(stable, ref_stable, ref_unstable)


def screen_level(skin, evap, tair, qair, psurf, ra, z0m, f_stab, z=c.Z_SCREEN):
    """Screen-level temperature [K], specific humidity [kg kg-1] and relative humidity [%]
    at height ``z`` [m] (2 m by default), ``(...)`` each.

    ECMWF-like post-processing: interpolate between the surface and the forcing level ZREF
    along the surface-layer profile of the model's own exchange coefficients
    (:func:`profile_weight`, the same z0m [m], z0h and stability factor ``f_stab`` as
    :func:`aerodynamic_resistance`):

        T(z) = T_s + w(z) (Tair - T_s),   q(z) = q_s + w(z) (Qair - q_s)

    T_s is the skin temperature ``skin`` [K]. The toy has no prognostic surface humidity, so
    q_s is the one its moisture flux implies through the same resistance,
    Evap = rho (q_s - Qair) / r_a, i.e. q_s = Qair + Evap r_a / rho (``evap`` the total
    evapotranspiration [kg m-2 s-1], upward positive; rho = psurf / (R_d Tair)); q_s = Qair
    when nothing evaporates. Like the model's fluxes, the interpolation uses temperature, not
    dry static energy (the 0.1 K of a dry adiabat over 10 m is left out). q(z) is kept within
    [0, qsat(T(z))] (mixing two saturated airs along a line gives supersaturation), so
    RH = 100 e / e_sat(T(z)) lies in [0, 100]. ``tair`` [K], ``qair`` [kg kg-1],
    ``psurf`` [Pa] (used at z too), ``ra`` the model's aerodynamic resistance [s m-1]
    (:func:`aerodynamic_resistance` with the same z0m and f).
    """
    w = profile_weight(z, z0m, f_stab)
    rho = psurf / (c.RD * tair)
    q_s = qair + evap * ra / rho
    t_z = skin + w * (tair - skin)
    q_z = q_s + w * (qair - q_s)
    qs_z, _ = qsat(t_z, psurf)
    q_z = torch.minimum(q_z.clamp(min=0.0), qs_z)
    e_z = q_z * psurf / (0.622 + 0.378 * q_z)
    es_z, _ = saturation_vapour_pressure(t_z)
    return t_z, q_z, (100.0 * e_z / es_z).clamp(0.0, 100.0)


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


SELLERS_A, SELLERS_B = 8.206, 4.255  # Sellers et al. (1992) fit of the soil surface resistance


def soil_surface_resistance(theta1, theta_sat) -> torch.Tensor:
    """Soil surface resistance to evaporation r_soil [s m-1] of the top layer, ``(...)``: the
    ``soil_evaporation="resistance"`` option of :class:`ailand.ToyEcLand` (not the default).

    Sellers et al. (1992, SiB2/FIFE):  r_soil = exp(A - B theta1 / THETA_SAT), A = 8.206,
    B = 4.255 (``theta1`` [m3 m-3] the 0-7 cm soil water, ``theta_sat`` porosity). Bare soil
    then evaporates E = rho (q_sat(T_s) - q_a) / (r_a + r_soil) instead of ecLand's default
    E = rho beta (q_sat(T_s) - q_a) / r_a with beta = :func:`water_stress` of layer 1: a drying
    surface crust resists diffusion even at field capacity (r_soil ~ 200 s m-1 at
    theta1 / THETA_SAT = 0.68, ~3700 s m-1 when dry), so bare soil evaporates less and the
    energy goes to sensible heat. A structurally different process formulation, kept for
    twin experiments of model error (issue 18: "observations" from a different physics).
    """
    return torch.exp(SELLERS_A - SELLERS_B * (theta1 / theta_sat).clamp(0.0, 1.0))


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
