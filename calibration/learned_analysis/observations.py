"""Observations encoded on the analysis grid, and the checks every analysis method shares.

An analysis problem on an ``ny x nx`` grid is

* ``background`` ``(B, ny, nx)`` (or ``(ny, nx)``): the prior field, physical units;
* ``obs`` ``(B, ny, nx)``: observed values at the observed cells (anything elsewhere),
  physical units; NaN where a value is missing;
* ``mask`` ``(B, ny, nx)`` bool: which cells hold an observation.

Point observations become this encoding with :func:`points_to_grid` (cell indices) or
:func:`stations_to_grid` (latitude/longitude on a :class:`ailand.dust.grid.LatLonGrid`); both
raise a ValueError naming the points that lie outside the grid. :func:`check_analysis_inputs`
validates a triplet: a mask of the wrong shape or a background on another grid is a
ValueError; a NaN observation is removed from the mask (it is missing, not zero).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["points_to_grid", "stations_to_grid", "check_analysis_inputs", "random_mask"]


def _as_tensor(a, name) -> torch.Tensor:
    if torch.is_tensor(a):
        return a.to(torch.float64)
    try:
        return torch.as_tensor(np.asarray(a, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array, got {type(a).__name__}") from e


def points_to_grid(j, i, values, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Point observations at cells ``(j, i)`` (row, column indices, ``(m,)`` ints) with
    ``values (m,)`` -> ``obs (ny, nx)`` (NaN where unobserved) and ``mask (ny, nx)`` bool.

    Two observations of one cell are averaged. ValueError for indices outside ``[0, ny) x [0, nx)``
    or not whole numbers (names them), and for lengths that differ. NaN values stay unmasked.
    """
    ny, nx = int(shape[0]), int(shape[1])
    j, i, v = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (j, i, values))
    if not (j.shape == i.shape == v.shape) or j.ndim != 1:
        raise ValueError(f"j, i and values must be 1-d of one length, got {j.shape}, {i.shape}, {v.shape}")
    bad = ~np.isfinite(j) | ~np.isfinite(i) | (j != np.round(j)) | (i != np.round(i)) \
        | (j < 0) | (j >= ny) | (i < 0) | (i >= nx)
    if bad.any():
        k = np.flatnonzero(bad)
        shown = ", ".join(f"#{n} (j={j[n]:g}, i={i[n]:g})" for n in k[:5])
        raise ValueError(f"{k.size} observation(s) lie outside the {ny} x {nx} grid (valid rows 0..{ny - 1}, "
                         f"columns 0..{nx - 1}, whole numbers): {shown}{' ...' if k.size > 5 else ''}; drop them")
    j, i = j.astype(np.int64), i.astype(np.int64)
    ok = np.isfinite(v)
    total = np.zeros((ny, nx))
    count = np.zeros((ny, nx))
    np.add.at(total, (j[ok], i[ok]), v[ok])
    np.add.at(count, (j[ok], i[ok]), 1.0)
    mask = count > 0
    obs = np.full((ny, nx), np.nan)
    obs[mask] = total[mask] / count[mask]
    return obs, mask


def stations_to_grid(grid, lat, lon, values) -> tuple[np.ndarray, np.ndarray]:
    """Station observations at ``(lat, lon)`` [degrees] on a :class:`ailand.dust.grid.LatLonGrid`
    -> ``(obs, mask)`` ``(ny, nx)`` in the holding cells (averaged when several share one).
    ValueError (from the grid, naming them) for stations outside the grid or with NaN positions."""
    j, i = grid.index(lat, lon)
    return points_to_grid(j, i, values, grid.shape)


def random_mask(shape, density: float, rng: np.random.Generator, allowed: np.ndarray | None = None) -> np.ndarray:
    """A random station layout: ``round(density * n_allowed)`` distinct cells (at least 1 when
    ``density > 0``) among the ``allowed`` ones (default all), as a bool ``shape`` array."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    allowed = np.ones(shape, bool) if allowed is None else np.asarray(allowed, bool)
    cells = np.flatnonzero(allowed)
    n = 0 if density == 0 else max(1, int(round(density * cells.size)))
    m = np.zeros(int(np.prod(shape)), bool)
    m[rng.choice(cells, size=n, replace=False)] = True
    return m.reshape(shape)


def check_analysis_inputs(background, obs, mask, grid_shape: tuple[int, int] | None = None):
    """Validate and normalise an analysis problem.

    Parameters
    ----------
    background : ``(B, ny, nx)`` or ``(ny, nx)`` prior field [physical units].
    obs : same shape as ``background``; NaN = missing.
    mask : bool (or 0/1) of the same shape: the observed cells.
    grid_shape : the method's grid ``(ny, nx)``; the background must be on it.

    Returns ``(background, obs, mask, squeezed)`` as float64 / bool tensors ``(B, ny, nx)``,
    with NaN observations removed from the mask and unobserved values set to 0; ``squeezed``
    says whether the input had no batch dim.

    Raises ValueError: background not 2-d/3-d or on another grid, obs or mask of another shape,
    mask not boolean, NaN/inf in the background.
    """
    xb = _as_tensor(background, "background")
    if xb.ndim not in (2, 3):
        raise ValueError(f"background must be (ny, nx) or (B, ny, nx), got shape {tuple(xb.shape)}")
    squeezed = xb.ndim == 2
    if squeezed:
        xb = xb[None]
    if grid_shape is not None and tuple(xb.shape[-2:]) != tuple(grid_shape):
        raise ValueError(f"background is on a {xb.shape[-2]} x {xb.shape[-1]} grid but this analysis is set up on "
                         f"{grid_shape[0]} x {grid_shape[1]}: regrid it or set the method up on its grid")
    if not torch.isfinite(xb).all():
        raise ValueError("background has NaN/inf values (fill them first)")
    y = _as_tensor(obs, "obs")
    if squeezed and y.ndim == 2:
        y = y[None]
    if tuple(y.shape) != tuple(xb.shape):
        raise ValueError(f"obs must have the background's shape {tuple(xb.shape)} (observations encoded on the "
                         f"grid: use points_to_grid / stations_to_grid), got {tuple(y.shape)}")
    m = mask if torch.is_tensor(mask) else torch.as_tensor(np.asarray(mask))
    if squeezed and m.ndim == 2:
        m = m[None]
    if tuple(m.shape) != tuple(xb.shape):
        raise ValueError(f"mask must have the background's shape {tuple(xb.shape)}, got {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must be boolean (or 0/1): True where a cell is observed")
        m = m.to(torch.bool)
    m = m & torch.isfinite(y)  # NaN observations are missing
    y = torch.where(m, y, torch.zeros_like(y))
    return xb, y, m, squeezed
