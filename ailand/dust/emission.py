"""Dust emission: the Kok et al. (2014) vertical flux with GOCART2G's K14 ingredients, in torch.

Choice of scheme
----------------
The vertical flux is **Kok et al. (2014)** as coded in GOCART2G (``DustEmissionK14`` /
``VerticalDustFluxK14``), not Ginoux et al. (2001): K14 is physically based (its
threshold sensitivity, C_d = C_d0 exp(-C_e (u*st - u*st0)/u*st0), makes emission fall
on hard-to-erode soils instead of relying on a tuned source map alone) and uses the
friction velocity, so roughness and drag partition enter where they belong. A Ginoux-like
preferential-source map ``dust_source`` still multiplies the erodible fraction, as
GOCART2G does with ``f_src``. One bulk dust tracer (no size bins).

Equations (one function each, elementwise on tensors that broadcast, e.g. ``(time, site)``)
---------------------------------------------------------------------------------------
* :func:`air_density`                rho_a = PSurf / (R_d Tair)
* :func:`friction_velocity`          u* = kappa U10 / ln(10 m / z0a) (neutral log law over the bare surface)
* :func:`drag_partition`             R = 1 - ln(z0a / z0s) / ln(0.7 (122.55 / z0s)^0.8)   (MacKinnon et al. 2004)
* :func:`smooth_threshold`           u*ts = sqrt(A_N (rho_p g D / rho_a + gamma / (rho_a D)))   (Shao & Lu 2000)
* :func:`gravimetric_moisture`       w = 100 f_w rho_w / rho_s / (1 - (0.489 - 0.126 sand)) theta   [%] (Zender)
* :func:`fecan_correction`           w' = 14 c^2 + 17 c [%] (c = f_c clay); H = sqrt(1 + 1.21 (w - w')^0.68) for w > w', else 1
* :func:`erodibility`                f = 0.7304 - 0.0804 log10(100 z0a)   (Laurent et al. 2008)
* :func:`bare_soil_fraction`         f_veg = cveg min(1, LAI / LAI_FULL); bare = max(0, 1 - f_veg / VEG_MAX)
* :func:`clay_term`                  k_gamma = clip(c, 0.05, 0.2)   (Ito & Kok 2017)
* :func:`kok14_vertical_flux`        F = C_d f_erod k_gamma rho_a (u*^2 - u*t^2) / u*st (u* / u*t)^(C_a (u*st - u*st0) / u*st0)
                                     for u* > u*t, with u*st = max(u*t sqrt(rho_a / 1.225), u*st0)

:func:`dust_emission` chains them: the soil friction velocity is R u*, the threshold
u*t = u*ts H, and the erodible fraction is

    f_erod = f_Laurent(z0a) x S x bare x (1 - snowc) x lsm x [swvl1 < SM_MAX] x [z0a < Z0A_MAX]

with the top-layer soil water seen by Fecan taken above the toy's air-dry residual,
theta = max(0, swvl1 - THETA_DRY) (the toy's bare soil stops drying at its wilting point).
The result, times the tuning factor ``C_TUNE``, is the mass flux per unit grid-cell area
[kg m-2 s-1]. It is **exactly zero** with full snow cover, with swvl1 >= SM_MAX, with
vegetation cover >= VEG_MAX, where the soil friction velocity is at or below the
threshold, on non-source cells (S = 0) and at sea (lsm = 0).

Parameters live in ``data/dust_parameters.csv`` (group ``emission``; the ``aerosol``
group is read by :mod:`ailand.dust.aerosol`), loaded by :func:`dust_parameter_space`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..params import DATA_DIR, ParameterSpace

__all__ = [
    "DUST_PARAMETER_TABLE", "dust_parameter_space", "DustEmission", "dust_emission", "air_density",
    "friction_velocity", "drag_partition", "smooth_threshold", "gravimetric_moisture", "fecan_correction",
    "erodibility", "bare_soil_fraction", "clay_term", "kok14_vertical_flux", "EMISSION_INPUTS", "total_emission",
]

DUST_PARAMETER_TABLE = DATA_DIR / "dust_parameters.csv"

KARMAN = 0.4
GRAV = 9.80665  # m s-2
RD = 287.06  # J kg-1 K-1
RHO_W = 1000.0  # kg m-3
RHO_SOIL = 2500.0  # soil particle density in the gravimetric conversion [kg m-3] (GOCART2G)
RHO_A0 = 1.225  # standard air density [kg m-3] (Kok et al. 2014)
Z_WIND = 10.0  # height of the forcing wind [m]

#: inputs of :func:`dust_emission` -> (units, meaning)
EMISSION_INPUTS: dict[str, tuple[str, str]] = {
    "Wind_E": ("m s-1", "eastward 10 m wind (or give 'wind', the speed)"),
    "Wind_N": ("m s-1", "northward 10 m wind"),
    "Tair": ("K", "near-surface air temperature"),
    "PSurf": ("Pa", "surface pressure"),
    "swvl1": ("m3 m-3", "top-layer (0-7 cm) volumetric soil water from the land model"),
    "snowc": ("-", "snow cover fraction from the land model"),
    "lai": ("m2 m-2", "leaf area index (climatology x LAI_SCALE)"),
    "cveg": ("-", "vegetation cover fraction"),
    "sand": ("-", "soil sand fraction"),
    "clay": ("-", "soil clay fraction"),
    "z0a": ("m", "aeolian roughness length of the bare surface"),
    "dust_source": ("-", "preferential source function S in [0, 1]"),
    "lsm": ("-", "land fraction of the cell"),
}

_cache: dict = {}


def dust_parameter_space(path=None) -> ParameterSpace:
    """The dust parameter table (``data/dust_parameters.csv``) as a :class:`ParameterSpace`.

    Columns as ``data/parameters.csv``: name, default, min, max, unit, group (``emission``
    or ``aerosol``), scale, must_be_below, definition.
    """
    key = str(path or DUST_PARAMETER_TABLE)
    if key not in _cache:
        _cache[key] = ParameterSpace.default(path or DUST_PARAMETER_TABLE)
    return _cache[key]


# ---------------------------------------------------------------------------------------
# the equations
# ---------------------------------------------------------------------------------------


def air_density(psurf: torch.Tensor, tair: torch.Tensor) -> torch.Tensor:
    """Air density [kg m-3] from surface pressure [Pa] and air temperature [K] (dry ideal gas)."""
    return psurf / (RD * tair)


def friction_velocity(wind: torch.Tensor, z0: torch.Tensor, height: float = Z_WIND) -> torch.Tensor:
    """Neutral friction velocity [m s-1]: u* = kappa U / ln(height / z0), U [m s-1] at ``height`` [m], z0 [m]."""
    return KARMAN * wind / torch.log(height / z0)


def drag_partition(z0: torch.Tensor, z0s) -> torch.Tensor:
    """Fraction of the surface stress on the erodible surface, R in [0, 1] (MacKinnon et al. 2004):

    R = 1 - ln(z0 / z0s) / ln(0.7 (122.55 / z0s)^0.8) for z0 > z0s, else 1.
    z0 : aeolian roughness [m]; z0s : smooth-surface roughness [m].
    """
    z0s = torch.as_tensor(z0s, dtype=z0.dtype, device=z0.device)
    r = 1.0 - torch.log(z0 / z0s) / torch.log(0.7 * (122.55 / z0s) ** 0.8)
    return torch.where(z0 > z0s, r.clamp(min=0.0), torch.ones_like(r))


def smooth_threshold(rho_air: torch.Tensor, d, rho_p, gamma, a_n) -> torch.Tensor:
    """Threshold friction velocity of a smooth, dry surface [m s-1] (Shao & Lu 2000):

    u*ts = sqrt(A_N (rho_p g D / rho_a + gamma / (rho_a D))); D [m], rho_p, rho_a [kg m-3],
    gamma [kg s-2], A_N [-].
    """
    return torch.sqrt(a_n * (rho_p * GRAV * d / rho_air + gamma / (rho_air * d)))


def gravimetric_moisture(theta: torch.Tensor, sand: torch.Tensor, f_w) -> torch.Tensor:
    """Gravimetric soil moisture of the top ~1 cm [%] from volumetric water ``theta`` [m3 m-3]:

    w = 100 f_w (rho_w / rho_s) theta / (1 - (0.489 - 0.126 sand))   (Zender et al. 2003 bulk density).
    """
    return 100.0 * f_w * (RHO_W / RHO_SOIL) * theta / (1.0 - (0.489 - 0.126 * sand))


def fecan_correction(w: torch.Tensor, clay: torch.Tensor) -> torch.Tensor:
    """Fecan et al. (1999) soil-moisture factor H >= 1 on the threshold friction velocity.

    w : gravimetric moisture [%]; clay : clay fraction [-]. Dry limit w' = 14 clay^2 + 17 clay
    [%]; H = sqrt(1 + 1.21 (w - w')^0.68) for w > w', else 1.
    """
    dw = w - (14.0 * clay**2 + 17.0 * clay)
    wet = dw > 0
    safe = torch.where(wet, dw, torch.ones_like(dw))
    return torch.where(wet, torch.sqrt(1.0 + 1.21 * safe**0.68), torch.ones_like(dw))


def erodibility(z0: torch.Tensor) -> torch.Tensor:
    """Erodibility of a surface of aeolian roughness ``z0`` [m] (Laurent et al. 2008), in [0, 1]:

    0.7304 - 0.0804 log10(100 z0) for z0 > 3e-5 m, else 1.
    """
    f = 0.7304 - 0.0804 * torch.log10(100.0 * z0)
    return torch.where(z0 > 3e-5, f.clamp(0.0, 1.0), torch.ones_like(f))


def bare_soil_fraction(cveg: torch.Tensor, lai: torch.Tensor, lai_full, veg_max) -> torch.Tensor:
    """Fraction of the land open to the wind, in [0, 1].

    f_veg = cveg min(1, LAI / LAI_FULL) (seasonal vegetation cover); vegetation shelters
    more soil than it covers, and all of it at cover VEG_MAX (FENGSHA's 0.4 cut-off):
    bare = max(0, 1 - f_veg / VEG_MAX). Exactly 0 for f_veg >= VEG_MAX.
    """
    f_veg = cveg * torch.clamp(lai / lai_full, max=1.0)
    return torch.clamp(1.0 - f_veg / veg_max, min=0.0)


def clay_term(clay: torch.Tensor) -> torch.Tensor:
    """k_gamma of Ito & Kok (2017): the clay fraction clipped to [0.05, 0.2]."""
    return clay.clamp(0.05, 0.2)


def kok14_vertical_flux(u, u_t, rho_air, f_erod, k_gamma, c_d0, c_e, c_a, u_st0) -> torch.Tensor:
    """Kok et al. (2014) vertical dust mass flux [kg m-2 s-1] (GOCART2G ``VerticalDustFluxK14``).

    F = C_d f_erod k_gamma rho_a (u*^2 - u*t^2) / u*st (u* / u*t)^(C_a (u*st - u*st0) / u*st0)
    for u* > u*t and f_erod > 0, else exactly 0; u*st = max(u*t sqrt(rho_a / 1.225), u*st0),
    C_d = C_d0 exp(-C_e (u*st - u*st0) / u*st0).

    u, u_t : soil friction velocity and its threshold [m s-1]; rho_air [kg m-3];
    f_erod, k_gamma [-]; C_d0, C_e, C_a [-]; u*st0 [m s-1].
    """
    u_st = torch.maximum(u_t * torch.sqrt(rho_air / RHO_A0), torch.as_tensor(u_st0, dtype=u_t.dtype, device=u_t.device))
    f_ust = (u_st - u_st0) / u_st0
    c_d = c_d0 * torch.exp(-c_e * f_ust)
    on = (u > u_t) & (f_erod > 0)
    u_safe = torch.where(on, u, 2.0 * u_t)  # finite gradients where the flux is off
    flux = c_d * f_erod * k_gamma * rho_air * (u_safe**2 - u_t**2) / u_st * (u_safe / u_t) ** (c_a * f_ust)
    return torch.where(on, flux, torch.zeros_like(flux))


# ---------------------------------------------------------------------------------------
# the scheme
# ---------------------------------------------------------------------------------------


def dust_emission(inputs: Mapping[str, torch.Tensor], params: Mapping[str, object], diagnostics: bool = False):
    """Dust emission flux [kg m-2 s-1] per unit grid-cell area, elementwise.

    inputs : tensors that broadcast to one shape (e.g. ``(time, site)`` forcing and land
        output with ``(site,)`` statics): see :data:`EMISSION_INPUTS` (``wind`` [m s-1] may
        replace ``Wind_E``/``Wind_N``).
    params : every emission parameter of ``data/dust_parameters.csv`` (floats or tensors;
        :meth:`DustEmission.param_tensors` fills the defaults).
    diagnostics : also return a dict with ``ustar`` (soil friction velocity R u*),
        ``ustar_t`` (threshold), ``H`` (Fecan factor), ``R`` (drag partition), ``bare``,
        ``f_erod`` (all broadcast to the flux shape).

    Returns the flux tensor (and the diagnostics). Differentiable with respect to the
    inputs and parameters wherever the flux is on.
    """
    p = params
    missing = [k for k in EMISSION_INPUTS if k not in inputs and not (k in ("Wind_E", "Wind_N") and "wind" in inputs)]
    if missing:
        raise ValueError(f"dust_emission inputs lack {missing}; needed: {list(EMISSION_INPUTS)}")
    x = inputs
    wind = x["wind"] if "wind" in x else torch.sqrt(x["Wind_E"] ** 2 + x["Wind_N"] ** 2)
    rho = air_density(x["PSurf"], x["Tair"])
    z0a = x["z0a"]
    u_star = friction_velocity(wind, z0a)
    r = drag_partition(z0a, p["Z0S"])
    u_soil = r * u_star
    u_ts = smooth_threshold(rho, p["D_SALT"], p["RHO_P"], p["GAMMA_SL"], p["A_SL"])
    clay = p["F_C"] * x["clay"]
    theta = torch.relu(x["swvl1"] - p["THETA_DRY"])
    h = fecan_correction(gravimetric_moisture(theta, x["sand"], p["F_W"]), clay)
    u_t = u_ts * h
    bare = bare_soil_fraction(x["cveg"], x["lai"], p["LAI_FULL"], p["VEG_MAX"])
    dry_enough = (x["swvl1"] < p["SM_MAX"]).to(wind.dtype)
    smooth_enough = (z0a < p["Z0A_MAX"]).to(wind.dtype)
    f_erod = erodibility(z0a) * x["dust_source"] * bare * (1.0 - x["snowc"]).clamp(min=0.0) * x["lsm"]
    f_erod = f_erod * dry_enough * smooth_enough
    flux = p["C_TUNE"] * kok14_vertical_flux(
        u_soil, u_t, rho, f_erod, clay_term(clay), p["C_D0"], p["C_E"], p["C_A"], p["U_ST0"]
    )
    if not diagnostics:
        return flux
    shape = flux.shape
    diag = {"ustar": u_soil, "ustar_t": u_t, "H": h, "R": r, "bare": bare, "f_erod": f_erod}
    return flux, {k: v.expand(shape) if v.shape != shape else v for k, v in diag.items()}


DIAGNOSTIC_META = {
    "emission": ("kg m-2 s-1", "dust emission flux per unit cell area (Kok et al. 2014), mean over the interval ending at time"),
    "ustar": ("m s-1", "soil friction velocity R u* (drag-partitioned)"),
    "ustar_t": ("m s-1", "threshold friction velocity with the Fecan moisture factor"),
    "H": ("-", "Fecan soil-moisture factor on the threshold"),
    "R": ("-", "drag partition factor (MacKinnon et al. 2004)"),
    "bare": ("-", "fraction of the land open to the wind"),
    "f_erod": ("-", "erodible fraction: erodibility x source x bare x snow-free x land x moisture/roughness masks"),
}


class DustEmission:
    """The dust emission scheme with its parameter table.

    Parameters
    ----------
    params : optional values for some parameters (the rest default), floats or tensors.
    space : :class:`ParameterSpace` of the dust table (default :func:`dust_parameter_space`).
    dtype, device : torch dtype/device of the tensors built from xarray inputs.

    Verbs: :meth:`flux` (tensors -> tensor), :meth:`inputs` (world + land output ->
    tensors), :meth:`run` (world + land output -> labelled ``(time, lat, lon)`` Dataset).
    """

    def __init__(self, params: Mapping | None = None, space: ParameterSpace | None = None,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        self.space = space or dust_parameter_space()
        self.dtype, self.device = dtype, torch.device(device)
        self.params = self.param_tensors(params)

    def __repr__(self):
        return f"DustEmission(Kok et al. 2014, {len(self.emission_names)} emission parameters, dtype={self.dtype})"

    @property
    def emission_names(self) -> list[str]:
        return [n for n in self.space.names if self.space.table.loc[n, "group"] == "emission"]

    def param_tensors(self, values: Mapping | None = None) -> dict[str, torch.Tensor]:
        """All dust parameters as tensors: ``values`` (tensors keep their graph) over the
        defaults (or over the values given at construction). Checks names and bounds of
        non-tensor values."""
        values = dict(values or {})
        unknown = [k for k in values if k not in self.space]
        if unknown:
            raise ValueError(f"unknown dust parameter(s) {unknown}; valid names are: {', '.join(self.space.names)}")
        plain = {k: float(v) for k, v in values.items() if not torch.is_tensor(v) and np.ndim(v) == 0}
        if plain:
            self.space.check(plain, what="dust parameters")
        base = getattr(self, "params", None) or {k: torch.tensor(v, dtype=self.dtype, device=self.device)
                                                  for k, v in self.space.defaults.items()}
        out = dict(base)
        for k, v in values.items():
            out[k] = v.to(self.dtype) if torch.is_tensor(v) else torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=self.dtype, device=self.device)
        return out

    def flux(self, inputs: Mapping[str, torch.Tensor], params: Mapping | None = None, diagnostics: bool = False):
        """:func:`dust_emission` with this scheme's parameters (``params`` overrides some)."""
        return dust_emission(inputs, self.param_tensors(params) if params else self.params, diagnostics)

    def inputs(self, world: xr.Dataset, land: xr.Dataset, lai_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Emission inputs ``(T, S)`` / ``(S,)`` tensors for the land columns of ``world``.

        world : from :func:`ailand.dust.make_world` (forcing rows ``[t, t+dt)``).
        land : ToyEcLand output on :func:`ailand.dust.world_columns` (e.g. from
            :func:`ailand.dust.run_land`) with ``swvl1`` and ``snowc`` over ``(time, site)``
            at the forcing step: row k is the state at the end of forcing row k.
        lai_scale : the land model's LAI_SCALE (LAI = climatology x lai_scale).
        """
        from ..sites import lai_climatology
        from .world import validate_world, world_columns

        validate_world(world)
        cols = world_columns(world)
        for k in ("swvl1", "snowc"):
            if k not in land:
                raise ValueError(f"land output lacks {k}; run the land model with outputs including {k}")
        if "member" in land.dims:
            raise ValueError("land output has a 'member' dim; give one land run (select a member first)")
        if land.sizes["time"] != cols.sizes["time"]:
            raise ValueError(
                f"land output has {land.sizes['time']} times but the world {cols.sizes['time']}: run the land "
                "model at the forcing step (output_freq = the world's freq) over the same period"
            )
        sites = [str(s) for s in land["site"].values]
        if sites != [str(s) for s in cols["site"].values]:
            raise ValueError("land output sites differ from world_columns(world) sites; run the land model on world_columns(world)")
        for k in ("swvl1", "snowc"):
            a = land[k].values
            if not np.all(np.isfinite(a)):
                raise ValueError(f"land output {k} has NaN/inf values; the land run failed or was cut")

        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype, device=self.device)

        times = pd.DatetimeIndex(cols["time"].values)
        out = {k: t(cols[k].transpose("time", "site").values) for k in ("Wind_E", "Wind_N", "Tair", "PSurf")}
        out.update({k: t(land[k].transpose("time", "site").values) for k in ("swvl1", "snowc")})
        out["lai"] = t(lai_scale * lai_climatology(cols, times.day_of_year.values))
        out.update({k: t(cols[k].values) for k in ("cveg", "sand", "clay", "z0a", "dust_source", "lsm")})
        return out

    def run(self, world: xr.Dataset, land: xr.Dataset, params: Mapping | None = None, diagnostics: bool = False,
            lai_scale: float = 1.0) -> xr.Dataset:
        """Emission on the world grid as a labelled Dataset.

        Returns ``emission`` [kg m-2 s-1] ``(time, lat, lon)`` (exactly 0 at sea and on
        non-source cells), with ``time`` = the land output's times (end of each forcing
        interval; the flux is the mean over the interval), plus the diagnostics of
        :func:`dust_emission` when asked (NaN at sea), and ``cell_area``.
        """
        from .world import land_index

        x = self.inputs(world, land, lai_scale)
        with torch.no_grad():
            res = self.flux(x, params, diagnostics)
        flux, diag = (res if diagnostics else (res, {}))
        j, i = land_index(world)
        ny, nx = world.sizes["lat"], world.sizes["lon"]
        times = land["time"].values
        coords = {"time": times, "lat": world["lat"], "lon": world["lon"]}
        data = {}
        for name, v, fill in [("emission", flux, 0.0)] + [(k, d, np.nan) for k, d in diag.items()]:
            arr = np.full((len(times), ny, nx), fill)
            arr[:, j, i] = v.detach().cpu().numpy()
            units, long_name = DIAGNOSTIC_META[name]
            data[name] = xr.Variable(("time", "lat", "lon"), arr, {"units": units, "long_name": long_name})
        ds = xr.Dataset(data, coords=coords)
        ds["cell_area"] = world["cell_area"]
        ds.attrs = {
            "title": "ailand dust emission (Kok et al. 2014 vertical flux, GOCART2G K14 ingredients)",
            "scheme": "Kok et al. 2014; Shao & Lu 2000 threshold; Fecan 1999 moisture; MacKinnon 2004 drag partition; "
                      "Laurent 2008 erodibility; Ito & Kok 2017 clay term",
            "time_convention": "fluxes are means over the interval ending at 'time'",
            **{f"param_{k}": float(self.params[k]) if params is None or k not in params else float(np.asarray(params[k]))
               for k in self.emission_names},
        }
        return ds


def total_emission(emission: xr.DataArray, cell_area: xr.DataArray) -> float:
    """Total emitted mass [kg] of an emission field ``(time, lat, lon)`` [kg m-2 s-1] with
    regular time steps (the step is read from ``time``)."""
    dt = float((emission["time"].values[1] - emission["time"].values[0]) / np.timedelta64(1, "s"))
    return float((emission * cell_area).sum() * dt)

