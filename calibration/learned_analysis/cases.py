"""Analysis cases of the two shallow-water exercises, as labelled xarray Datasets.

Exercise 1 (:func:`exercise1_cases`): a 2-D field (the depth ``h`` [m] of
:class:`ailand.shallow_water.ShallowWater2D` snapshots), a perturbed background
``x_b = truth + e_b`` with ``e_b`` a Gaussian random field (periodic distances, correlation
``bg_kind`` of length ``bg_length`` cells, std ``bg_frac`` x the climatological std of ``h``),
and observations of the truth at random cells (``density``: fraction of the cells; a new layout
per case) with white errors of std ``obs_frac`` x that std. ``layout="half"`` puts every
station in the western half of the domain (a layout never seen in training).

Exercise 2 (:func:`exercise2_cases`): no background; the full state ``(h, u, v)`` from sparse
observations of the three variables and of two derived quantities, the wind speed
``sqrt(u^2 + v^2)`` [m s-1] and the relative vorticity ``dv/dx - du/dy`` [s-1] (centred
differences), each observation type at its own random cells, with white errors of ``obs_frac``
x the variable's std.

Datasets: dims ``case, y, x`` (and ``variable`` / ``obs_type``); ``truth``, ``background``,
``obs`` (NaN where unobserved), ``mask``; every variable has ``units`` and ``long_name``; the
generating parameters are attributes. Seeded: the same arguments give the same cases.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ailand.progress import as_progress
from ailand.shallow_water import ShallowWater2D

from .classical import gaussian_random_field, periodic_grid_distance
from .observations import random_mask

__all__ = ["shallow_water_snapshots", "exercise1_cases", "exercise2_cases", "OBS_TYPES", "STATE_VARS",
           "vorticity", "wind_speed"]

STATE_VARS = {"h": ("m", "fluid depth"), "u": ("m s-1", "eastward velocity"), "v": ("m s-1", "northward velocity")}
OBS_TYPES = {**STATE_VARS, "speed": ("m s-1", "wind speed sqrt(u^2 + v^2)"),
             "vorticity": ("s-1", "relative vorticity dv/dx - du/dy")}


def shallow_water_snapshots(n: int, ny: int = 32, nx: int = 32, seed: int = 0, per_run: int = 8,
                            every: int = 20, progress=False) -> tuple[np.ndarray, ShallowWater2D]:
    """``n`` states ``(n, 3, ny, nx)`` = ``(h [m], u, v [m s-1])`` of seeded 2-D shallow-water runs
    (``per_run`` snapshots ``every`` model steps apart from each run, after the spin-up of
    :meth:`ShallowWater2D.random_state`), and the model."""
    sw = ShallowWater2D(ny, nx)
    n_runs = int(np.ceil(n / per_run))
    out = []
    p = as_progress(progress)
    with p.bar(n_runs, "shallow-water runs", "run") as bar:
        for r in range(0, n_runs, 16):
            b = min(16, n_runs - r)
            s0 = sw.random_state(b, seed=seed * 100_003 + r)
            traj = sw.run(s0, per_run * every, every=every)[1:]  # (per_run, b, 3, ny, nx)
            out.append(traj.transpose(0, 1).reshape(-1, 3, ny, nx))
            bar.update(b)
    return torch.cat(out)[:n].numpy(), sw


def _coords(ny, nx, dx):
    return {"y": ("y", np.arange(ny) * dx, {"units": "m", "long_name": "y (northward) cell centre"}),
            "x": ("x", np.arange(nx) * dx, {"units": "m", "long_name": "x (eastward) cell centre"})}


def _layout_mask(shape, density, rng, layout):
    allowed = np.ones(shape, bool)
    if layout == "half":
        allowed[:, shape[1] // 2:] = False
    elif layout != "random":
        raise ValueError(f"layout must be 'random' or 'half', got {layout!r}")
    return random_mask(shape, density, rng, allowed)


def _densities(density, n, rng):
    if np.isscalar(density):
        return np.full(n, float(density))
    lo, hi = (float(d) for d in density)
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"density range must satisfy 0 <= lo <= hi <= 1, got {density}")
    return np.exp(rng.uniform(np.log(max(lo, 1e-4)), np.log(hi), n)) if lo > 0 else rng.uniform(lo, hi, n)


def exercise1_cases(n_cases: int, ny: int = 32, nx: int = 32, density=(0.02, 0.2), layout: str = "random",
                    bg_frac: float = 0.6, bg_length: float = 3.0, bg_kind: str = "gaussian", obs_frac: float = 0.2,
                    climate_std: float | None = None, seed: int = 0, progress=False) -> xr.Dataset:
    """Exercise-1 cases (module docstring). ``density``: a fraction, or ``(lo, hi)`` drawn
    log-uniformly per case. ``climate_std`` [m]: the std that scales the errors (default: that of
    these truths; pass the training set's to make held-out sets comparable).

    Returns a Dataset ``truth, background, obs, mask`` ``(case, y, x)`` [m], ``density (case)``.
    """
    truth, sw = shallow_water_snapshots(n_cases, ny, nx, seed=seed, progress=progress)
    h = truth[:, 0]
    sd = float(h.std()) if climate_std is None else float(climate_std)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19_11]))
    dist = periodic_grid_distance(ny, nx)
    sigma_b, sigma_o = bg_frac * sd, obs_frac * sd
    eb = gaussian_random_field(n_cases, dist, sigma_b, bg_length, bg_kind, rng).reshape(n_cases, ny, nx)
    dens = _densities(density, n_cases, rng)
    mask = np.stack([_layout_mask((ny, nx), d, rng, layout) for d in dens])
    obs = np.where(mask, h + sigma_o * rng.standard_normal(h.shape), np.nan)
    c = _coords(ny, nx, sw.dx)
    ds = xr.Dataset(
        {"truth": (("case", "y", "x"), h, {"units": "m", "long_name": "true fluid depth"}),
         "background": (("case", "y", "x"), h + eb, {"units": "m", "long_name": "background (truth + correlated error)"}),
         "obs": (("case", "y", "x"), obs, {"units": "m", "long_name": "observed depth (NaN: no station)"}),
         "mask": (("case", "y", "x"), mask, {"units": "1", "long_name": "station present"}),
         "density": ("case", mask.reshape(n_cases, -1).mean(1), {"units": "1", "long_name": "fraction of cells observed"})},
        coords={"case": np.arange(n_cases), **c},
        attrs={"title": "learned analysis exercise 1: shallow-water depth, perturbed background, random stations",
               "seed": seed, "layout": layout, "bg_sigma": sigma_b, "bg_length_cells": bg_length, "bg_kind": bg_kind,
               "obs_sigma": sigma_o, "climate_std": sd, "cell_size_m": sw.dx, "source": "calibration.learned_analysis.cases"},
    )
    return ds


def vorticity(u: np.ndarray, v: np.ndarray, dx: float, dy: float | None = None) -> np.ndarray:
    """Relative vorticity ``dv/dx - du/dy`` [s-1] of ``(..., ny, nx)`` fields, centred periodic differences."""
    dy = dx if dy is None else dy
    return ((np.roll(v, -1, -1) - np.roll(v, 1, -1)) / (2 * dx)
            - (np.roll(u, -1, -2) - np.roll(u, 1, -2)) / (2 * dy))


def wind_speed(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sqrt(u^2 + v^2)`` [m s-1]."""
    return np.hypot(u, v)


def exercise2_cases(n_cases: int, ny: int = 32, nx: int = 32, density=(0.05, 0.2), obs_frac: float = 0.1,
                    climate_std: dict | None = None, seed: int = 0, progress=False) -> xr.Dataset:
    """Exercise-2 cases (module docstring): ``truth (case, variable, y, x)`` for ``h, u, v``;
    ``obs, mask (case, obs_type, y, x)`` for ``h, u, v, speed, vorticity`` (a new random layout per
    type and case; ``density`` a fraction or a ``(lo, hi)`` range drawn per case).
    ``climate_std``: per-observation-type stds scaling the errors (default: from these truths)."""
    truth, sw = shallow_water_snapshots(n_cases, ny, nx, seed=seed + 7_919, progress=progress)
    h, u, v = truth[:, 0], truth[:, 1], truth[:, 2]
    fields = {"h": h, "u": u, "v": v, "speed": wind_speed(u, v), "vorticity": vorticity(u, v, sw.dx)}
    sd = {k: float(f.std()) for k, f in fields.items()} if climate_std is None else dict(climate_std)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19_22]))
    dens = _densities(density, n_cases, rng)
    masks = np.stack([np.stack([random_mask((ny, nx), d, rng) for _ in fields]) for d in dens])  # (case, 5, ny, nx)
    obs = np.stack([fields[k] + obs_frac * sd[k] * rng.standard_normal(h.shape) for k in fields], axis=1)
    obs = np.where(masks, obs, np.nan)
    ds = xr.Dataset(
        {"truth": (("case", "variable", "y", "x"), truth, {"units": "m | m s-1 | m s-1", "long_name": "true state (h, u, v)"}),
         "obs": (("case", "obs_type", "y", "x"), obs,
                 {"units": " | ".join(OBS_TYPES[k][0] for k in fields), "long_name": "observations (NaN: none)"}),
         "mask": (("case", "obs_type", "y", "x"), masks, {"units": "1", "long_name": "observation present"}),
         "density": ("case", dens, {"units": "1", "long_name": "fraction of cells observed per type"})},
        coords={"case": np.arange(n_cases), "variable": list(STATE_VARS), "obs_type": list(OBS_TYPES),
                **_coords(ny, nx, sw.dx),
                "obs_sigma": ("obs_type", [obs_frac * sd[k] for k in fields],
                              {"long_name": "observation error std (units of the type)"}),
                "climate_std": ("obs_type", [sd[k] for k in fields], {"long_name": "climatological std"})},
        attrs={"title": "learned analysis exercise 2: shallow-water state from observations only", "seed": seed,
               "obs_frac": obs_frac, "cell_size_m": sw.dx, "f_coriolis": sw.f, "g": sw.g,
               "source": "calibration.learned_analysis.cases"},
    )
    return ds
