"""The hidden "true" spatial parameter field of a network twin.

Each site's true parameters follow a rule that no grouping strategy is told about: they
depend on its vegetation, its soil texture and its climate (through standardised climate
predictors), plus independent site noise. Every parameter is built in the unit cube of its
range (:meth:`ailand.ParameterSpace.to_unit`; log-uniform for log-scale parameters):

    u_p(site) = clip(base_p[veg_type] + sum_k c_pk q_k(site) + sigma_p e_p(site), 0.03, 0.97)

with ``q`` = (aridity, warmth, clay, sand) standardised over the network and
``e ~ N(0, 1)`` seeded. Parameters not listed in :data:`RULES` get their default's unit position plus a
site noise of 0.05.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ailand import ParameterSpace

__all__ = ["true_parameter_field", "RULES"]

# unit-cube position by vegetation type (drier/woodier types close their stomata more, ...)
_VEG_BASE = {
    "RSMIN": {"deciduous_broadleaf": 0.55, "evergreen_needleleaf": 0.75, "deciduous_needleleaf": 0.70,
              "evergreen_broadleaf": 0.62, "tundra": 0.40, "grassland": 0.25, "shrubland": 0.55,
              "savanna": 0.45, "desert": 0.80, "crops": 0.20},
    "LAI_SCALE": {"deciduous_broadleaf": 0.60, "evergreen_needleleaf": 0.45, "deciduous_needleleaf": 0.45,
                  "evergreen_broadleaf": 0.65, "tundra": 0.35, "grassland": 0.55, "shrubland": 0.40,
                  "savanna": 0.40, "desert": 0.30, "crops": 0.70},
    "ALB_VEG": {"deciduous_broadleaf": 0.40, "evergreen_needleleaf": 0.12, "deciduous_needleleaf": 0.25,
                "evergreen_broadleaf": 0.30, "tundra": 0.55, "grassland": 0.60, "shrubland": 0.65,
                "savanna": 0.70, "desert": 0.85, "crops": 0.55},
    "THETA_PWP": {},
}
#: per parameter: (coefficients on (aridity, warmth, clay, sand), site-noise sigma), unit-cube units
RULES = {
    "RSMIN": ((0.08, 0.03, 0.0, 0.0), 0.06),
    "LAI_SCALE": ((-0.08, 0.04, 0.0, 0.0), 0.06),
    "ALB_VEG": ((0.05, 0.0, 0.0, 0.0), 0.05),
    "THETA_PWP": ((0.0, 0.0, 0.16, -0.06), 0.05),
}
_FLAT_BASE = {"THETA_PWP": 0.45}  # parameters without a vegetation table: one base everywhere


def _predictors(network: xr.Dataset) -> np.ndarray:
    """``(S, 4)`` standardised (aridity, warmth, clay, sand) of each site."""
    p = np.asarray(network["precip_annual"].values, dtype=float)
    t = np.asarray(network["t_mean"].values, dtype=float)
    pet = 400.0 + 30.0 * np.clip(t, -10.0, 35.0)  # a rough potential ET [mm yr-1], >= 100
    q = np.column_stack([np.log(pet / np.maximum(p, 1.0)), t, network["clay"].values, network["sand"].values])
    return (q - q.mean(0)) / np.where(q.std(0) > 0, q.std(0), 1.0)


def true_parameter_field(network: xr.Dataset, space: ParameterSpace, seed: int = 0,
                         noise_scale: float = 1.0) -> xr.DataArray:
    """The hidden true parameters of every site of ``network``.

    network : Dataset over ``site`` with ``veg_type`` (coordinate), ``precip_annual`` [mm],
        ``t_mean`` [degC], ``sand``, ``clay`` [-] (e.g. :func:`ailand.network.site_network`).
    space : the calibrated parameters (a :class:`ailand.ParameterSpace`).
    seed : seeds the site noise; noise_scale multiplies every site-noise sigma (0: none).

    Returns a DataArray ``(site, parameter)`` in physical units (coordinate ``unit``),
    feasible for ``space``'s constraints (a site that breaks one is redrawn).
    """
    q = _predictors(network)
    S = network.sizes["site"]
    rng = np.random.default_rng([int(seed), 29])
    veg = [str(v) for v in network["veg_type"].values]
    U = np.empty((S, len(space)))
    for j, name in enumerate(space.names):
        coef, sigma = RULES.get(name, ((0.0, 0.0, 0.0, 0.0), 0.05))
        default_u = float(np.asarray(space.to_unit(space.default_vector))[j])
        table = _VEG_BASE.get(name, {})
        base = np.array([table.get(v, _FLAT_BASE.get(name, default_u)) for v in veg])
        U[:, j] = base + q @ np.asarray(coef) + noise_scale * sigma * rng.standard_normal(S)
    U = np.clip(U, 0.03, 0.97)
    X = np.asarray(space.from_unit(U), dtype=float)
    ok = space.feasible(X)
    for _ in range(100):
        if ok.all():
            break
        X[~ok] = np.asarray(space.from_unit(np.clip(U[~ok] + 0.02 * rng.standard_normal(U[~ok].shape), 0.03, 0.97)))
        ok = space.feasible(X)
    if not ok.all():
        raise ValueError("true_parameter_field: could not make every site satisfy the space's constraints")
    return xr.DataArray(X, dims=("site", "parameter"),
                        coords={"site": network["site"].values, "parameter": space.names,
                                "unit": ("parameter", [space.units[n] for n in space.names])},
                        name="true_parameters",
                        attrs={"long_name": "hidden true parameters of each site (twin)", "seed": int(seed)})
