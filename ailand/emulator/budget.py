"""The column water balance of an emulator step, and closing it.

One equation lives here, for the emulator's training loss, its optional closure and its
evaluation::

    residual = dS - (P - E - Qs - Qsb) * dt            [kg m-2 per step]
    S = RHO_W * (sum_k swvl_k * DZ_k + sd + wl)         [kg m-2]

with ``P = Rainf + Snowf`` the forcing mean over the step, ``E = Evap`` (positive upwards),
``Qs`` surface runoff and ``Qsb`` drainage, all means over the step [kg m-2 s-1] (the
diagnostics of the emulator step), and ``dS`` the change of the column's water from the
state at ``t`` to the state at ``t + dt``. The toy ecLand closes it to rounding (the
training ensemble to ~1e-4 kg m-2 per 6-hour step in float32); an emulator does not,
unless trained with a conservation term (``fit(water_weight=...)``) or built to close it
(``Emulator(water_closure=True)``).
"""

from __future__ import annotations

import torch

from ..physics import constants as c
from ..physics.model import STATE_NAMES

# indices into STATE_NAMES
I_SWVL = [STATE_NAMES.index(f"swvl{k}") for k in range(1, 5)]
I_SD, I_WL = STATE_NAMES.index("sd"), STATE_NAMES.index("wl")
FLUX_NAMES = ("Evap", "Qs", "Qsb")


def water_storage(state: torch.Tensor) -> torch.Tensor:
    """Column water ``(...)`` [kg m-2] of physical states ``(..., 15)`` ordered as ``STATE_NAMES``:
    soil water of the four layers + snow (``sd``, m of water) + interception (``wl``, m)."""
    dz = torch.as_tensor(c.DZ, dtype=state.dtype, device=state.device)
    return c.RHO_W * ((state[..., I_SWVL] * dz).sum(-1) + state[..., I_SD] + state[..., I_WL])


def net_inflow(precip: torch.Tensor, diag: torch.Tensor, diagnostics, dt: float) -> torch.Tensor:
    """``(P - E - Qs - Qsb) * dt`` ``(...)`` [kg m-2] from the precipitation ``(...)``
    [kg m-2 s-1] and the step's diagnostics ``(..., n_diag)`` named ``diagnostics``."""
    missing = [k for k in FLUX_NAMES if k not in diagnostics]
    if missing:
        raise ValueError(f"the water balance needs the diagnostics {missing}; the emulator predicts {list(diagnostics)}")
    i = [list(diagnostics).index(k) for k in FLUX_NAMES]
    return (precip - diag[..., i].sum(-1)) * dt


def water_residual(s0: torch.Tensor, s1: torch.Tensor, precip: torch.Tensor, diag: torch.Tensor, diagnostics, dt: float) -> torch.Tensor:
    """Water-balance residual ``(...)`` [kg m-2] of one step from state ``s0`` to ``s1``
    ``(..., 15)``: storage change minus net inflow (zero for a conserving model)."""
    return water_storage(s1) - water_storage(s0) - net_inflow(precip, diag, diagnostics, dt)


def close_water(s0: torch.Tensor, s1: torch.Tensor, precip: torch.Tensor, diag: torch.Tensor, diagnostics, dt: float,
                theta_sat: torch.Tensor) -> torch.Tensor:
    """``s1`` with its soil water corrected so that the step closes the water balance.

    The residual is removed from the soil as one volumetric change over the whole 2.89 m
    column (the same ``d theta`` in the four layers, so it moves no water between layers),
    then each layer is kept in ``[0, theta_sat]`` ``(...)``; what the bounds refuse (rare:
    a saturated or bone-dry column) is left as residual. The fluxes (diagnostics) are not
    touched: they are what the emulator was trained to predict against the physics.
    """
    r = water_residual(s0, s1, precip, diag, diagnostics, dt)
    dtheta = r / (c.RHO_W * sum(c.DZ))
    soil = s1[..., I_SWVL] - dtheta[..., None]
    soil = torch.minimum(soil.clamp(min=0.0), theta_sat[..., None])
    return torch.cat([soil, s1[..., I_SWVL[-1] + 1:]], dim=-1)
