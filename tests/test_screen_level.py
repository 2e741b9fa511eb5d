"""Screen-level diagnostics T2m, q2m, RH2m of the toy ecLand (issue 13, deliverable 0).

Limits of the surface-layer interpolation (forcing values at the forcing height ZREF, skin
values at z0h, monotone in between, RH in [0, 100] %), the stability dependence of the
profile, the model outputs with units, and the sign of their soil-moisture sensitivity
(the physical basis of a screen-level soil-moisture analysis).
"""

import math

import numpy as np
import pytest
import torch

import ailand
from ailand.physics import column
from ailand.physics import constants as c
from ailand.physics.model import join_layers, split_layers
from ailand.physics.surface import aerodynamic_resistance, profile_weight, qsat, screen_level, stability_factor

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def surface_layer_cases():
    """(z0m [m], f [-]) over the toy's whole range: snow to forest, f from 1/11 (Ri = 1) to sqrt(11)."""
    z0m = torch.tensor([c.Z0_SNOW, c.Z0_BARE, 0.01, 0.1, 1.0], dtype=F64)
    f = torch.tensor([1 / 11, 0.3, 0.9, 1.0, 1.1, 2.0, math.sqrt(11)], dtype=F64)
    return torch.meshgrid(z0m, f, indexing="ij")


def test_profile_weight_limits_and_monotone():
    z0m, f = surface_layer_cases()
    z0h = c.Z0H_RATIO * z0m
    assert torch.allclose(profile_weight(torch.full_like(z0m, c.ZREF), z0m, f), torch.ones_like(z0m), rtol=0, atol=1e-12)
    assert torch.allclose(profile_weight(z0h, z0m, f), torch.zeros_like(z0m), rtol=0, atol=1e-12)
    # monotone between z0h and ZREF, on a log grid of heights
    frac = torch.linspace(0, 1, 200, dtype=F64)[:, None, None]
    z = z0h * (c.ZREF / z0h) ** frac
    w = profile_weight(z, z0m, f)
    assert (w.diff(dim=0) > 0).all() and w.min() >= 0 and w.max() <= 1 + 1e-12
    # outside [z0h, ZREF]: the surface value below, the forcing value above
    assert torch.equal(profile_weight(z0h / 10, z0m, f), profile_weight(z0h, z0m, f))
    assert torch.equal(profile_weight(torch.full_like(z0m, 50.0), z0m, f), profile_weight(torch.full_like(z0m, c.ZREF), z0m, f))


def test_profile_weight_neutral_log_profile_and_stability_order():
    z0m = torch.tensor([0.001, 0.1, 1.0], dtype=F64)
    z0h = c.Z0H_RATIO * z0m
    one = torch.ones_like(z0m)
    w_neutral = profile_weight(2.0, z0m, one)
    torch.testing.assert_close(w_neutral, torch.log(2.0 / z0h) / torch.log(c.ZREF / z0h), rtol=1e-14, atol=0)
    # stable: 2 m stays closer to the skin; unstable: closer to the forcing level
    assert (profile_weight(2.0, z0m, 0.5 * one) < w_neutral).all()
    assert (profile_weight(2.0, z0m, 2.0 * one) > w_neutral).all()
    # continuous through neutral from both sides
    for eps in (1e-9, -1e-9):
        torch.testing.assert_close(profile_weight(2.0, z0m, (1 + eps) * one), w_neutral, rtol=1e-7, atol=0)


def _random_surface(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64)  # noqa: E731
    tair = u(240.0, 315.0)
    skin = tair + u(-15.0, 20.0)
    psurf = u(70000.0, 104000.0)
    qa = qsat(tair, psurf)[0] * u(0.05, 1.0)
    wind = torch.sqrt(u(0.0, 15.0) ** 2 + c.WIND_MIN**2)
    z0m = torch.exp(u(math.log(1e-3), 0.0))
    f = stability_factor(wind, tair, skin + u(-3.0, 3.0))
    ra = aerodynamic_resistance(wind, z0m, tair, skin)
    rho = psurf / (c.RD * tair)
    # evaporation between strong dew and a wet surface at the skin temperature
    evap = rho * (qsat(skin, psurf)[0] * u(-0.2, 1.0) - qa).clamp(min=-1e-3) / ra
    return dict(skin=skin, evap=evap, tair=tair, qair=qa, psurf=psurf, ra=ra, z0m=z0m, f_stab=f)


def test_screen_level_equals_forcing_at_zref_and_skin_at_z0h():
    a = _random_surface()
    t, q, rh = screen_level(**a, z=c.ZREF)
    torch.testing.assert_close(t, a["tair"], rtol=1e-14, atol=0)
    torch.testing.assert_close(q, a["qair"], rtol=1e-12, atol=0)  # forcing below saturation: no clipping
    e = a["qair"] * a["psurf"] / (0.622 + 0.378 * a["qair"])
    from ailand.physics.surface import saturation_vapour_pressure

    torch.testing.assert_close(rh, 100 * e / saturation_vapour_pressure(a["tair"])[0], rtol=1e-12, atol=0)
    # at the surface (z -> z0h): the skin temperature and the flux-implied surface humidity
    t0, q0, _ = screen_level(**a, z=c.Z0H_RATIO * a["z0m"])
    torch.testing.assert_close(t0, a["skin"], rtol=1e-14, atol=0)
    q_s = a["qair"] + a["evap"] * a["ra"] * c.RD * a["tair"] / a["psurf"]
    unclipped = (q_s > 0) & (q_s < qsat(a["skin"], a["psurf"])[0])
    assert unclipped.float().mean() > 0.5
    torch.testing.assert_close(q0[unclipped], q_s[unclipped], rtol=1e-12, atol=0)
    # the model's own flux: Evap = rho (q_s - Qair) / r_a
    rho = a["psurf"] / (c.RD * a["tair"])
    torch.testing.assert_close((rho * (q0 - a["qair"]) / a["ra"])[unclipped], a["evap"][unclipped], rtol=1e-10, atol=1e-16)


def test_screen_level_monotone_in_height_and_rh_bounded():
    a = _random_surface(n=500, seed=1)
    z0h = c.Z0H_RATIO * a["z0m"]
    heights = [z0h * (c.ZREF / z0h) ** k for k in np.linspace(0, 1, 25)]
    T = torch.stack([screen_level(**a, z=z)[0] for z in heights])
    rh = torch.stack([screen_level(**a, z=z)[2] for z in heights])
    rising = a["tair"] > a["skin"]
    dT = T.diff(dim=0)
    assert (dT[:, rising] >= 0).all() and (dT[:, ~rising] <= 0).all()
    assert rh.min() >= 0 and rh.max() <= 100
    # RH hits exactly 100 % where mixing a saturated surface with near-saturated air supersaturates
    wet = _random_surface(n=2000, seed=2)
    wet["qair"] = qsat(wet["tair"], wet["psurf"])[0]
    wet["evap"] = -wet["evap"].abs()
    _, q, rh2 = screen_level(**wet)
    assert rh2.max() <= 100 and (rh2 == 100).any() and (q <= qsat(screen_level(**wet)[0], wet["psurf"])[0] * (1 + 1e-12)).all()


def test_model_outputs_t2m_rh2m_with_units_and_bounds():
    forcing = ailand.synthetic_forcing(["FR-Fon", "SN-Dhr", "FI-Hyy"], "2020-01-01", "2020-01-04", seed=0)
    model = ailand.ToyEcLand(compile=False)
    ds = model.run(forcing, spinup_years=0, outputs=["T2m", "q2m", "RH2m", "skt"])
    assert ds["T2m"].attrs["units"] == "K" and ds["RH2m"].attrs["units"] == "%" and ds["q2m"].attrs["units"] == "kg kg-1"
    assert set(column.SCREEN_DIAGNOSTICS) <= set(ailand.physics.VARIABLES)
    assert float(ds["RH2m"].min()) >= 0 and float(ds["RH2m"].max()) <= 100
    # hourly: T2m lies between the skin at the end of the step and the forcing air temperature
    tair = forcing["Tair"].transpose("time", "site").values
    skt, t2m = ds["skt"].values, ds["T2m"].values
    assert (t2m >= np.minimum(skt, tair) - 1e-3).all() and (t2m <= np.maximum(skt, tair) + 1e-3).all()
    assert np.abs(t2m - tair).max() > 0.5  # not a copy of the forcing


def test_screen_level_soil_moisture_sensitivity_signs():
    """A wetter top layer evaporates more: at midday the 2 m air is cooler and more humid
    (d mean T2m / d swvl1 < 0, d mean RH2m / d swvl1 > 0), by autograd through one day."""
    forcing = ailand.synthetic_forcing(["IT-Noe", "US-Kon", "FR-Fon"], "2020-06-10", "2020-06-10", seed=2)
    model = ailand.ToyEcLand(dtype=F64, compile=False)
    f, st, _ = model.prepare(forcing)
    named = {k: v.clone() for k, v in split_layers(model.initial_state(f, model.param_tensors())).items()}
    named["swvl1"] = torch.full_like(named["swvl1"], 0.2).requires_grad_(True)
    out, _ = model.simulate(f, model.param_tensors(), st, join_layers(named), outputs=["T2m", "RH2m"])
    day = slice(8, 18)
    (d_t,) = torch.autograd.grad(out["T2m"][day].mean(0).sum(), named["swvl1"], retain_graph=True)
    (d_rh,) = torch.autograd.grad(out["RH2m"][day].mean(0).sum(), named["swvl1"])
    assert (d_t < 0).all() and (d_rh > 0).all(), (d_t, d_rh)


def test_the_shipped_emulator_loads_with_or_without_them():
    """The shipped default loads whatever diagnostics it was trained with. Trained before the
    screen-level diagnostics existed, asking it for T2m is a clear error that says how to get
    an emulator with it; retrained on an ensemble that holds them, it predicts them."""
    from ailand.emulator import Emulator

    em = Emulator.default()
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-02", seed=0)
    f, st, _ = em.prepare(forcing)
    if "T2m" in em.output_names:
        out, _ = em.simulate(f, em.param_tensors(), st, outputs=["T2m", "RH2m"])
        assert torch.isfinite(out["T2m"]).all() and ((out["RH2m"] >= 0) & (out["RH2m"] <= 100)).all()
    else:
        with pytest.raises(ValueError, match="does not predict.*T2m.*trained without"):
            em.simulate(f, em.param_tensors(), st, outputs=["T2m", "Qle"])
