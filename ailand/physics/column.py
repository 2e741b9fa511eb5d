"""One time step of the toy ecLand column, on torch tensors.

Every quantity broadcasts to the column batch shape ``B`` (e.g. ``(member, site)``);
soil quantities have a trailing layer dimension of 4.

State (SI units, as in the xarray output):
    swvl (B, 4) [m3 m-3]; stl (B, 4) [K]; skt [K]; sd total snow water equivalent [m];
    wsn liquid water held in the snow pack [m] (part of sd); rsn [kg m-3]; asn [-];
    tsn [K]; wl interception store [m].

Order of a step:
    1. tiles (snow, wet skin, transpiring vegetation, bare soil), albedo, resistances;
    2. skin temperature and snow temperature solved together from the linearised surface
       energy balance  Rn(T) = H(T) + LE(T) + G(T)  (exact closure by construction);
    3. evaporation capped by the water available in each store (the latent energy not
       used goes to the sensible heat flux, so the balance stays closed);
    3b. screen-level T2m, q2m, RH2m: the skin (T) and flux-implied surface humidity
       interpolated to 2 m along the surface-layer profile of the same exchange
       coefficient (:func:`ailand.physics.surface.screen_level`);
    4. interception, snow (melt/refreeze, liquid water, density, albedo), soil water
       (implicit Richards), soil heat (implicit diffusion).
"""

from __future__ import annotations

import math

import torch

from . import constants as c
from .snow import albedo_update, fresh_snow_density, liquid_water_capacity, snow_conductivity, snow_cover_fraction
from .soil import frozen_fraction, heat_capacity, heat_step, layer_thickness, thermal_conductivity, water_step
from .surface import (
    aerodynamic_resistance, canopy_resistance, qsat, root_fractions, roughness, screen_level, soil_surface_resistance,
    stability_factor, water_stress,
)

STATE_VARIABLES = ("swvl", "stl", "skt", "sd", "wsn", "rsn", "asn", "tsn", "wl")
FORCING_INPUTS = ("Tair", "Qair", "Wind_E", "Wind_N", "SWdown", "LWdown", "Rainf", "Snowf", "PSurf", "lai")

# name: (units, long_name) for the step diagnostics returned by `step`
DIAGNOSTICS = {
    "Qle": ("W m-2", "latent heat flux (upward)"),
    "Qh": ("W m-2", "sensible heat flux (upward)"),
    "Qg": ("W m-2", "ground heat flux into snow and soil (downward)"),
    "Rnet": ("W m-2", "net radiation at the surface (downward)"),
    "SWnet": ("W m-2", "net shortwave radiation (downward)"),
    "LWnet": ("W m-2", "net longwave radiation (downward)"),
    "Evap": ("kg m-2 s-1", "total evapotranspiration (upward)"),
    "TVeg": ("kg m-2 s-1", "transpiration"),
    "ESoil": ("kg m-2 s-1", "bare soil evaporation"),
    "ECanop": ("kg m-2 s-1", "evaporation of intercepted water"),
    "SubSnow": ("kg m-2 s-1", "snow sublimation"),
    "Qs": ("kg m-2 s-1", "surface runoff"),
    "Qsb": ("kg m-2 s-1", "drainage at the bottom of the soil column"),
    "Qsm": ("kg m-2 s-1", "snow melt"),
    "snowc": ("-", "snow cover fraction"),
    "albedo": ("-", "surface albedo"),
    "T2m": ("K", "2 m (screen-level) air temperature"),
    "q2m": ("kg kg-1", "2 m (screen-level) specific humidity"),
    "RH2m": ("%", "2 m (screen-level) relative humidity (over water above 273.16 K, over ice below)"),
}
# the screen-level diagnostics (surface.screen_level): interpolated between the skin and the forcing level
SCREEN_DIAGNOSTICS = ("T2m", "q2m", "RH2m")


SOIL_EVAPORATION = ("beta", "resistance")  # ToyEcLand(soil_evaporation=...); "beta" is the default


def derived_static(static: dict, params: dict, soil_evaporation: str = "beta") -> dict:
    """Static quantities computed once per run: root fractions, soil albedo, matric potential.

    ``soil_evaporation="resistance"`` adds the key ``soil_resistance`` (a flag tensor), which
    switches :func:`step` to :func:`~ailand.physics.surface.soil_surface_resistance` for bare
    soil; the default ``"beta"`` adds nothing, so the default step is unchanged.
    """
    if soil_evaporation not in SOIL_EVAPORATION:
        raise ValueError(f"soil_evaporation must be one of {SOIL_EVAPORATION}, got {soil_evaporation!r}")
    sand = static["sand"]
    out = {
        "cveg": static["cveg"],
        "cvh": static.get("cvh", torch.zeros_like(static["cveg"])),
        "sand": sand,
        "alb_soil": 0.10 + 0.25 * sand,  # bright sandy deserts (~0.33), dark loams (~0.15)
        "psi_sat": 0.01 * 10.0 ** (1.88 - 1.3 * sand),  # |psi_sat| [m] (Cosby-like)
        "roots": root_fractions(params["ROOT_BETA"]),
    }
    if soil_evaporation == "resistance":
        out["soil_resistance"] = torch.ones_like(sand)
    return out


def _cap(flux, available):
    """Limit a positive flux [kg m-2 s-1] to ``available`` [kg m-2 s-1]; negative fluxes pass."""
    capped = torch.minimum(flux, available.clamp(min=0.0))
    return capped, flux - capped


def step(state: dict, f: dict, p: dict, s: dict, dt: float, screen: bool = True) -> tuple[dict, dict]:
    """Advance the column state by ``dt`` seconds.

    state: see module docstring; f: forcing at this step (ecLand names, SI units, plus
    ``lai`` climatology [m2 m-2]); p: parameters by name; s: from :func:`derived_static`.
    screen: also compute the screen-level ``SCREEN_DIAGNOSTICS`` (a post-processing that
    feeds nothing back; ~8 % of a step, skipped when no one asks for them).
    Returns (new_state, diagnostics) with diagnostics named as in ``DIAGNOSTICS`` (without
    ``SCREEN_DIAGNOSTICS`` when ``screen`` is False).
    """
    dz = layer_thickness(state["swvl"])
    Ta, qa, ps = f["Tair"], f["Qair"], f["PSurf"]
    speed = torch.sqrt(f["Wind_E"] ** 2 + f["Wind_N"] ** 2)
    wind = torch.sqrt(speed**2 + c.WIND_MIN**2)
    rain, snowf, sw, lw = f["Rainf"], f["Snowf"], f["SWdown"], f["LWdown"]
    rho_air = ps / (c.RD * Ta)
    cveg = s["cveg"]
    theta, stl, T0 = state["swvl"], state["stl"], state["skt"]

    # ---- 1. tiles -----------------------------------------------------------------
    lai = p["LAI_SCALE"] * f["lai"]
    swe = state["sd"] * c.RHO_W  # kg m-2
    liq = state["wsn"] * c.RHO_W
    ice = swe - liq
    snowc = snow_cover_fraction(swe)
    wlmax = p["WLMAX"] * ((1 - cveg) + cveg * lai)  # kg m-2
    wl = state["wl"] * c.RHO_W
    c_wet = (wl / wlmax).clamp(max=1.0)
    f_sn = snowc
    f_wet = (1 - snowc) * c_wet
    f_veg = (1 - snowc) * (1 - c_wet) * cveg
    f_bare = (1 - snowc) * (1 - c_wet) * (1 - cveg)

    alb_free = cveg * p["ALB_VEG"] + (1 - cveg) * s["alb_soil"]
    # trees stand above the snow: over the high-vegetation cover the canopy is what the sun sees
    alb_snowy = s["cvh"] * p["ALB_VEG"] + (1 - s["cvh"]) * state["asn"]
    albedo = snowc * alb_snowy + (1 - snowc) * alb_free

    z0m = roughness(cveg, s["cvh"], snowc, p["Z0M"])
    ra = aerodynamic_resistance(wind, z0m, Ta, T0)
    qs_air, _ = qsat(Ta, ps)
    vpd_hpa = (qs_air - qa) * ps / 0.622 / 100.0
    stress = water_stress(theta, p["THETA_PWP"], p["THETA_CAP"])
    root_stress = (s["roots"] * stress).sum(-1)
    rs = canopy_resistance(p["RSMIN"], lai, sw, vpd_hpa, root_stress)
    beta_soil = stress[..., 0]

    # moisture conductances per tile [m s-1] (times rho_air gives kg m-2 s-1 per kg kg-1)
    w_sn = f_sn / ra
    w_wet = f_wet / ra
    w_veg = f_veg / (ra + rs)
    if "soil_resistance" in s:  # the soil_evaporation="resistance" option (Sellers 1992), not the default
        w_bare = f_bare / (ra + soil_surface_resistance(theta[..., 0], p["THETA_SAT"]))
    else:  # ecLand's default: a beta factor on the potential rate
        w_bare = f_bare * beta_soil / ra
    lw_coef = rho_air * (c.LS * w_sn + c.LV * (w_wet + w_veg + w_bare))  # W m-2 per kg kg-1

    # ---- 2. skin + snow temperatures from the linearised energy balance -----------
    qs0, dqs = qsat(T0, ps)
    gh = rho_air * c.CP_AIR / ra
    rad4 = 4 * c.EMISSIVITY * c.SIGMA * T0**3
    lw_up0 = c.EMISSIVITY * c.SIGMA * T0**4
    k_soil = (1 - snowc) * p["RLAMSK"]
    k_snow = snowc * p["RLAMSK"]
    # snow pack: C (tsn' - tsn)/dt = k_snow (T - tsn') - k_sg (tsn' - stl1)  ->  tsn' = a + b T
    depth = swe / state["rsn"]
    lam1 = thermal_conductivity(theta, p["THETA_SAT"], s["sand"])[..., 0]
    k_sg = snowc / (depth / (2 * snow_conductivity(state["rsn"])) + dz[0] / (2 * lam1))
    c_snow = c.C_ICE * ice + c.C_W * liq + c.SNOW_C_MIN
    dd = c_snow / dt + k_snow + k_sg
    a_sn = (c_snow / dt * state["tsn"] + k_sg * stl[..., 0]) / dd
    b_sn = k_snow / dd
    swnet = (1 - albedo) * sw
    rn0 = swnet + c.EMISSIVITY * lw - lw_up0
    lhs = rad4 + gh + lw_coef * dqs + k_soil + k_snow * (1 - b_sn)
    rhs = rn0 + rad4 * T0 + gh * Ta - lw_coef * (qs0 - qa) + lw_coef * dqs * T0 + k_soil * stl[..., 0] + k_snow * a_sn
    T1 = rhs / lhs
    tsn1 = a_sn + b_sn * T1

    # ---- 3. fluxes at the new skin temperature ------------------------------------
    lwnet = c.EMISSIVITY * lw - lw_up0 - rad4 * (T1 - T0)
    dq = qs0 + dqs * (T1 - T0) - qa
    e_sn = rho_air * w_sn * dq
    e_wet = rho_air * w_wet * dq
    e_veg = rho_air * w_veg * dq
    e_bare = rho_air * w_bare * dq
    qh = gh * (T1 - Ta)
    g_soil = k_soil * (T1 - stl[..., 0])
    g_snow = k_snow * (T1 - tsn1)

    # interception of rain on the snow-free part (dew on leaves also goes to the store)
    rain_free = (1 - snowc) * rain
    p_int = rain_free * cveg * (1 - torch.exp(-0.5 * lai))
    trans = torch.relu(e_veg)
    dew_veg = e_veg - trans  # <= 0
    e_wet, x_wet = _cap(e_wet, wl / dt + p_int)
    e_sn, x_sn = _cap(e_sn, ice / dt)
    avail1 = (theta[..., 0] - c.THETA_FLOOR) * dz[0] * c.RHO_W / dt
    e_bare, x_bare = _cap(e_bare, avail1)
    # transpiration shared over layers by roots x stress, capped by each layer's water
    wts = s["roots"] * stress
    wts = wts / wts.sum(-1, keepdim=True).clamp(min=1e-12)
    demand = trans[..., None] * wts
    avail = (theta - c.THETA_FLOOR) * dz * c.RHO_W / dt
    avail = avail - torch.cat([e_bare[..., None], torch.zeros_like(theta[..., 1:])], dim=-1)
    extract = torch.minimum(demand, avail.clamp(min=0.0))
    x_tr = (demand - extract).sum(-1)
    trans = extract.sum(-1)
    # latent energy that found no water warms the air instead (keeps Rn = H + LE + G exact)
    qh = qh + c.LV * (x_wet + x_bare + x_tr) + c.LS * x_sn
    tveg = trans + dew_veg
    evap = e_sn + e_wet + tveg + e_bare
    qle = c.LS * e_sn + c.LV * (e_wet + tveg + e_bare)

    # ---- 4a. interception store ---------------------------------------------------
    wl_mid = wl + dt * (p_int - e_wet - dew_veg)
    overflow = torch.relu(wl_mid - wlmax)
    wl_new = (wl_mid - overflow).clamp(min=0.0)  # clamp: round-off only (evaporation is capped)
    throughfall = rain_free - p_int + overflow / dt

    # ---- 4b. snow pack ------------------------------------------------------------
    sf = snowf * dt
    ice = (ice - e_sn * dt).clamp(min=0.0)  # clamp: round-off only (sublimation is capped)
    liq = liq + snowc * rain * dt
    q_excess = c_snow * torch.relu(tsn1 - c.TT)
    melt = torch.minimum(q_excess / c.LF, ice.clamp(min=0.0))
    heat_left = q_excess - melt * c.LF  # pack melted away: the rest of the energy goes to the soil
    tsn2 = torch.clamp(tsn1, max=c.TT)
    refreeze = torch.minimum(liq, c_snow * torch.relu(c.TT - tsn2) / c.LF)
    tsn2 = tsn2 + refreeze * c.LF / c_snow
    ice = (ice - melt + refreeze).clamp(min=0.0)
    liq = (liq + melt - refreeze).clamp(min=0.0)
    t_fall = torch.clamp(Ta, max=c.TT)
    tsn3 = (c_snow * tsn2 + c.C_ICE * sf * t_fall) / (c_snow + c.C_ICE * sf)
    rho_new = fresh_snow_density(Ta, speed, p["RHOMINSNA"], p["RHOMINSNB"], p["RHOMINSNC"])
    swe_old = ice + liq
    eps = 1e-6
    rsn = (swe_old + sf + eps) / (swe_old / state["rsn"] + sf / rho_new + eps / state["rsn"])
    ice = ice + sf
    melting = ((tsn3 - (c.TT - 1.0)) / 1.0).clamp(0.0, 1.0)
    rho_max = c.RHO_SNOW_MAX_COLD + (c.RHO_SNOW_MAX_MELT - c.RHO_SNOW_MAX_COLD) * melting
    rsn = rho_max - (rho_max - rsn) * math.exp(-c.TAU_COMPACT * dt / c.SECONDS_PER_DAY)
    # the pack keeps at most LWC(SWE after release): liq <= f (ice + liq)  <=>  liq <= f ice / (1 - f)
    frac = liquid_water_capacity(torch.ones_like(rsn), rsn, p["RLWCSWEA"], p["RLWCSWEB"], p["RLWCSWEC"])
    release = torch.relu(liq - frac * ice / (1 - frac))
    liq = liq - release
    asn = albedo_update(
        state["asn"], melting, sf, p["RALFMINSN"], p["RALFMAXSN"], p["RTAUA"], p["RTAUF"], dt
    )

    # ---- 4c. soil water -----------------------------------------------------------
    frozen = frozen_fraction(stl)
    w_in = throughfall + release / dt  # kg m-2 s-1 reaching the soil surface
    top28 = (theta[..., 0] * dz[0] + theta[..., 1] * dz[1]) / ((dz[0] + dz[1]) * p["THETA_SAT"])
    f_sat = 1 - (1 - top28.clamp(0.0, 1.0)) ** (c.ARNO_B / (1 + c.ARNO_B))
    i_max = c.RHO_W * p["KSAT"] * (1 - c.FROZEN_K_FACTOR * frozen[..., 0])
    infil = torch.minimum((1 - f_sat) * w_in, i_max)
    sources = -(extract + torch.cat([e_bare[..., None], torch.zeros_like(theta[..., 1:])], dim=-1))
    theta_new, drain, over = water_step(
        theta, sources / c.RHO_W, infil / c.RHO_W, p["THETA_SAT"], p["KSAT"], p["BCH"],
        s["psi_sat"], frozen, dt,
    )
    qs = w_in - infil + over * c.RHO_W
    qsb = drain * c.RHO_W

    # ---- 4d. soil heat -------------------------------------------------------------
    top_flux = g_soil + k_sg * (tsn1 - stl[..., 0]) + heat_left / dt
    hc = heat_capacity(theta_new, p["THETA_SAT"])
    lam = thermal_conductivity(theta_new, p["THETA_SAT"], s["sand"])
    stl_new = heat_step(stl, hc, lam, top_flux, dt)

    new_state = {
        "swvl": theta_new,
        "stl": stl_new,
        "skt": T1,
        "sd": (ice + liq) / c.RHO_W,
        "wsn": liq / c.RHO_W,
        "rsn": rsn,
        "asn": asn,
        "tsn": tsn3,
        "wl": wl_new / c.RHO_W,
    }
    diag = {
        "Qle": qle,
        "Qh": qh,
        "Qg": g_soil + g_snow,
        "Rnet": swnet + lwnet,
        "SWnet": swnet,
        "LWnet": lwnet,
        "Evap": evap,
        "TVeg": tveg,
        "ESoil": e_bare,
        "ECanop": e_wet,
        "SubSnow": e_sn,
        "Qs": qs,
        "Qsb": qsb,
        "Qsm": melt / dt,
        "snowc": snowc,
        "albedo": albedo,
    }
    if screen:  # the skin-to-ZREF profile of the same exchange coefficient, at 2 m
        diag["T2m"], diag["q2m"], diag["RH2m"] = screen_level(T1, evap, Ta, qa, ps, ra, z0m, stability_factor(wind, Ta, T0))
    return new_state, diag
