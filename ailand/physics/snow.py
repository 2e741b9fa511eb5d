"""One-layer snow: the ecLand formulas for fresh-snow density, liquid-water capacity and albedo.

Units: SWE and liquid water [kg m-2], density [kg m-3], temperatures [K], rates per day [d-1].
"""

from __future__ import annotations

import torch

from . import constants as c


def fresh_snow_density(Tair, wind_speed, A, B, C) -> torch.Tensor:
    """ecLand fresh-snow density [kg m-3]:
    rho = RHOMINSNA + RHOMINSNB (T - Tt) + RHOMINSNC (u^2 + v^2)^0.25, floored at 50 kg m-3.

    ``wind_speed`` is sqrt(u^2 + v^2) [m s-1], so (u^2 + v^2)^0.25 = sqrt(wind_speed).
    """
    rho = A + B * (Tair - c.TT) + C * torch.sqrt(wind_speed)
    return rho.clamp(min=c.RHO_SNOW_FLOOR)


def liquid_water_capacity(swe, rsn, A, B, C) -> torch.Tensor:
    """ecLand snow liquid-water holding capacity [kg m-2]:
    LWC = SWE * (B + (C - B) * max(0, (A - rsn) / A)) with RLWCSWEA/B/C = A/B/C.
    """
    return swe * (B + (C - B) * ((A - rsn) / A).clamp(min=0.0))


def snow_cover_fraction(swe) -> torch.Tensor:
    """Snow cover fraction [-]: min(1, SWE / 15 kg m-2)."""
    return (swe / c.SNOW_COVER_SWE).clamp(max=1.0)


def snow_conductivity(rsn) -> torch.Tensor:
    """Thermal conductivity of snow [W m-1 K-1], 2.22 (rho / 1000)^1.88 (Douville et al. 1995)."""
    return 2.22 * (rsn / 1000.0) ** 1.88


def albedo_update(asn, melting, snowfall, amin, amax, tau_a, tau_f, dt) -> torch.Tensor:
    """ecLand snow albedo after one step.

    Cold snow decays linearly, ``a - RTAUA dt / 1 day`` (not below RALFMINSN); melting snow
    decays exponentially towards RALFMINSN at RTAUF per day; ``melting`` in [0, 1] blends the
    two. Fresh snowfall [kg m-2 this step] pulls it back to RALFMAXSN, fully after 10 kg m-2.
    """
    day = dt / c.SECONDS_PER_DAY
    cold = torch.maximum(asn - tau_a * day, amin)
    warm = amin + (asn - amin) * torch.exp(-tau_f * day)
    a = melting * warm + (1.0 - melting) * cold
    fresh = (snowfall / c.SNOW_FRESH_RESET).clamp(0.0, 1.0)
    return a + (amax - a) * fresh
