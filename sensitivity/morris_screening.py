"""Morris' method of elementary effects, vectorised over every model output at once.

Equations (Morris 1991; Campolongo et al. 2007), for ``r`` trajectories of ``d + 1``
points each, where consecutive points differ in one parameter ``j`` by ``+-Delta`` on
the unit-cube grid of ``p`` levels, ``Delta = p / (2 (p - 1))``:

    EE_j^(t) = (y(x + e_j Delta) - y(x)) / Delta            (elementary effect)
    mu_j      = 1/r sum_t EE_j^(t)
    mu*_j     = 1/r sum_t |EE_j^(t)|
    sigma_j   = sqrt(1/(r-1) sum_t (EE_j^(t) - mu_j)^2)

``mu*`` ranks the parameters (importance), ``sigma`` flags non-linearity or
interactions. Every quantity here is an array over all ``M`` outputs at once; the only
Python loop runs over the ``d`` parameters. The bootstrap CI of ``mu*`` resamples the
``r`` trajectories: with ``W (R, r)`` counting how often each trajectory appears in each
resample, the ``R`` resampled ``mu*`` of every output are one product ``W @ |EE_j| / r``.

The numbers equal SALib's ``SALib.analyze.morris.analyze`` on the same design and
outputs (point estimates to rounding, ~1e-15 relative), output by output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import xarray as xr
from SALib.sample import morris as _salib_morris_sample
from SALib.util import handle_seed

from ailand import ParameterSpace

from ._common import (
    DEFAULT_MAX_MEMORY,
    build_result,
    check_resamples,
    check_space,
    bootstrap_weights,
    column_blocks,
    design_matrix,
    finite_columns,
    output_units,
    scatter_columns,
    seed_attr,
    warn_infeasible,
    z_value,
)
from .outputs import SAMPLE_DIM, as_outputs, flatten, run_design

__all__ = ["morris_design", "morris_analyze", "morris", "elementary_effects", "morris_delta"]


def morris_delta(num_levels: int) -> float:
    """Grid step ``Delta = p / (2 (p - 1))`` in the unit cube for ``p = num_levels`` levels."""
    return num_levels / (2.0 * (num_levels - 1))


def morris_design(
    space: ParameterSpace,
    n_trajectories: int,
    num_levels: int = 4,
    optimal_trajectories: int | None = None,
    local_optimization: bool = True,
    seed: int | np.random.Generator | None = 0,
) -> xr.DataArray:
    """Morris trajectories from ``SALib.sample.morris.sample`` on ``space.to_salib()``.

    Parameters
    ----------
    space : the parameters to screen (log-scale parameters get SALib's ``logunif``).
    n_trajectories : trajectories ``r`` to draw (the candidate pool when
        ``optimal_trajectories`` is set).
    num_levels : grid levels ``p`` (even); the analysis must use the same value.
    optimal_trajectories : keep this many most-spread trajectories out of the pool
        (Campolongo et al. 2007; Ruano et al. 2012 with ``local_optimization``).
    seed : passed to SALib's sampler (int, Generator or None).

    Returns
    -------
    DataArray ``(sample, parameter)`` of physical values, ``sample = r (d + 1)`` rows, with
    coordinates ``trajectory`` and ``step`` along ``sample`` and attrs recording the
    method, ``num_levels``, ``n_trajectories`` and the seed; save it with
    ``design.to_netcdf(...)`` and analyse later with :func:`morris_analyze`.
    """
    space = check_space(space)
    if int(n_trajectories) != n_trajectories or n_trajectories < 2:
        raise ValueError(f"n_trajectories must be an integer >= 2, got {n_trajectories}")
    if int(num_levels) != num_levels or num_levels < 2 or num_levels % 2:
        raise ValueError(f"num_levels must be an even integer >= 2, got {num_levels}")
    n_trajectories, num_levels = int(n_trajectories), int(num_levels)
    x = _salib_morris_sample.sample(
        space.to_salib(),
        n_trajectories,
        num_levels=num_levels,
        optimal_trajectories=optimal_trajectories,
        local_optimization=local_optimization,
        seed=seed,
    )
    d = len(space)
    r = x.shape[0] // (d + 1)
    n_bad = warn_infeasible(space, x, "Morris")
    return xr.DataArray(
        x,
        dims=(SAMPLE_DIM, "parameter"),
        coords={
            SAMPLE_DIM: np.arange(x.shape[0]),
            "parameter": space.names,
            "trajectory": (SAMPLE_DIM, np.repeat(np.arange(r), d + 1)),
            "step": (SAMPLE_DIM, np.tile(np.arange(d + 1), r)),
        },
        name="design",
        attrs={
            "long_name": "Morris trajectories (physical parameter values)",
            "units": "see parameter units",
            "method": "morris",
            "num_levels": num_levels,
            "n_trajectories": int(r),
            "n_candidates": n_trajectories,
            "optimal_trajectories": int(optimal_trajectories or 0),
            "local_optimization": int(bool(local_optimization)),
            "seed": seed_attr(seed),
            "n_infeasible": n_bad,
        },
    )


def elementary_effects(
    x: np.ndarray,
    y: np.ndarray,
    num_levels: int = 4,
    scaled: bool = False,
) -> np.ndarray:
    """Elementary effects of every parameter on every output.

    Parameters
    ----------
    x : ``(r (d + 1), d)`` Morris design (physical values; only the sign and, with
        ``scaled``, the size of each step is used).
    y : ``(r (d + 1), M)`` outputs.
    num_levels : grid levels ``p`` of the design.
    scaled : Sin and Gernaey (2009) scaling ``EE * sigma_x / sigma_y`` per trajectory
        (with ``Delta`` replaced by the actual step in ``x``), as SALib's ``scaled=True``.

    Returns
    -------
    ``EE (d, r, M)``: ``EE[j, t, m] = (y_after - y_before) / Delta`` signed by the
    direction of parameter ``j``'s step in trajectory ``t`` (SALib's convention).
    """
    effects = _effects_of(x, y, num_levels, scaled)
    return np.stack([effects(j) for j in range(x.shape[1])])


def _effects_of(x: np.ndarray, y: np.ndarray, num_levels: int, scaled: bool):
    """Prepare the design once; return ``effects(j) -> EE_j (r, M)`` for one parameter at a time."""
    n, d = x.shape
    if n % (d + 1):
        raise ValueError(f"a Morris design has r (d + 1) rows; got {n} rows for d = {d}")
    r = n // (d + 1)
    M = y.shape[1]
    xt = x.reshape(r, d + 1, d)
    yt = y.reshape(r, d + 1, M)
    step = np.sign(xt[:, 1:, :] - xt[:, :-1, :])  # (r, k = step, j = parameter)
    changes = step != 0
    moves = changes.sum(axis=1)  # (r, d): how often parameter j moves in trajectory t
    per_step = changes.sum(axis=2)  # (r, k): how many parameters move in step k
    if not (np.all(moves == 1) and np.all(per_step == 1)):
        t, k = np.argwhere(per_step != 1)[0] if np.any(per_step != 1) else (np.argwhere(moves != 1)[0][0], None)
        where = f"step {k} of trajectory {t} moves {per_step[t, k]} parameters" if k is not None else (
            f"trajectory {t} moves some parameter more than once"
        )
        raise ValueError(
            f"not a Morris design: {where}; each step of a trajectory must move exactly one parameter "
            "and each parameter exactly once (rows in SALib's trajectory order, r (d + 1) rows). "
            "Use sensitivity.morris_design(...)"
        )
    k_of = np.argmax(changes, axis=1)  # (r, d): the step in which parameter j moves
    sign = np.take_along_axis(step, k_of[:, None, :], axis=1)[:, 0, :]  # (r, d): +1 up, -1 down
    rows = np.arange(r)
    delta = morris_delta(num_levels)
    if scaled:
        dx = xt.max(axis=1) - xt.min(axis=1)  # (r, d)
        sigma_x = xt.std(axis=1)  # (r, d)
        sigma_y = yt.std(axis=1)  # (r, M)

    def effects(j: int) -> np.ndarray:
        k = k_of[:, j]
        diff = sign[:, j, None] * (yt[rows, k + 1] - yt[rows, k])  # (r, M): signed y_after - y_before
        if not scaled:
            return diff / delta
        adjust = np.divide(
            sigma_x[:, j, None], sigma_y, out=np.zeros((r, M)), where=sigma_y != 0
        )
        return diff / dx[:, j, None] * adjust

    return effects


def morris_analyze(
    space: ParameterSpace,
    design,
    outputs,
    num_levels: int | None = None,
    conf_level: float = 0.95,
    num_resamples: int = 1000,
    scaled: bool = False,
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
    max_memory: float = DEFAULT_MAX_MEMORY,
) -> xr.Dataset:
    """Morris statistics ``mu, mu_star, sigma, mu_star_conf`` for every output at once.

    Parameters
    ----------
    space : the ParameterSpace the design was drawn from.
    design : ``DataArray (sample, parameter)`` from :func:`morris_design`, or an
        ``(n, d)`` array with ``n = r (d + 1)`` rows in SALib's trajectory order; every
        step must move exactly one parameter (anything else is a ValueError: SALib
        silently returns ill-defined effects for such designs).
    outputs : the model outputs for the design rows, ``(n,)``, ``(n, k, ...)`` array or
        tensor, or ``DataArray (sample, *output_dims)`` (see :func:`sensitivity.as_outputs`).
    num_levels : grid levels of the design; None takes ``design.attrs["num_levels"]``
        (else 4). A value that contradicts the design's attrs is an error.
    conf_level : level of the bootstrap confidence interval of ``mu_star``.
    num_resamples : bootstrap resamples ``R``.
    scaled : scaled elementary effects (SALib's ``scaled=True``).
    seed : bootstrap seed. Handled exactly as SALib (``SALib.util.handle_seed``: an int
        or None seeds ``np.random.default_rng``; a Generator is ``spawn``-ed), and the
        resample indices are drawn in SALib's order (for each parameter,
        ``rng.integers(r, size=(R, r))``), so ``mu_star_conf`` equals SALib's for the same
        seed (to rounding, ~1e-13 relative; SALib reseeds per output, so every output
        sees the same resamples here too).
    nan_policy : ``"raise"`` (default): NaN/inf outputs raise a ValueError naming the
        sample rows. ``"propagate"``: outputs with any NaN/inf get NaN statistics, the
        others are analysed normally.
    max_memory : bytes allowed for the bootstrap temporaries (outputs are processed
        in blocks of columns that fit).

    Returns
    -------
    Dataset with ``mu, mu_star, sigma, mu_star_conf`` of dims ``(parameter, *output_dims)``.
    ``mu_star_conf`` is the half-width ``z * std`` of the bootstrap distribution of
    ``mu_star`` (SALib's convention). Parameter bounds/defaults/units are stored as
    ``parameter_*`` coordinates, the settings as attrs.
    """
    space = check_space(space)
    x = design_matrix(space, design)
    n, d = x.shape
    if n % (d + 1):
        raise ValueError(
            f"design has {n} rows, not a multiple of d + 1 = {d + 1}; is it a Morris design for these {d} parameters?"
        )
    r = n // (d + 1)
    if r < 2:
        raise ValueError(f"Morris analysis needs at least 2 trajectories, the design has {r}")
    num_levels = _resolve_levels(design, num_levels)
    z = z_value(conf_level)
    R = check_resamples(num_resamples)
    out = as_outputs(outputs, n_rows=n)
    y_all = flatten(out)
    good = finite_columns(y_all, x, space, nan_policy)
    y = y_all if good.all() else np.ascontiguousarray(y_all[:, good])
    M = y.shape[1]

    effects = _effects_of(x, y, num_levels, scaled)
    mu, mu_star, sigma, conf = (np.empty((d, M)) for _ in range(4))
    rng = handle_seed(seed)
    for j in range(d):
        ee = effects(j)  # (r, M)
        mu[j] = ee.mean(axis=0)
        sigma[j] = ee.std(axis=0, ddof=1)
        abs_ee = np.abs(ee)
        mu_star[j] = abs_ee.mean(axis=0)
        # Bootstrap mu*: resample the r trajectories with replacement (SALib's draw order).
        w = bootstrap_weights(rng.integers(r, size=(R, r)), r)  # (R, r)
        for blk in column_blocks(M, 8.0 * 3 * R, max_memory):
            mu_star_b = (w @ abs_ee[:, blk]) / r  # (R, m)
            conf[j, blk] = z * mu_star_b.std(axis=0, ddof=1)

    units = output_units(out) + (" (scaled)" if scaled else " per unit-cube range")
    fields = {
        "mu": (scatter_columns(mu, good), "mean elementary effect", units),
        "mu_star": (scatter_columns(mu_star, good), "mean absolute elementary effect (importance)", units),
        "sigma": (scatter_columns(sigma, good), "standard deviation of elementary effects", units),
        "mu_star_conf": (
            scatter_columns(conf, good),
            f"half-width of the {conf_level:.0%} bootstrap confidence interval of mu_star",
            units,
        ),
    }
    attrs = {
        "method": "morris",
        "num_levels": int(num_levels),
        "delta": morris_delta(num_levels),
        "n_trajectories": int(r),
        "n_samples": int(n),
        "conf_level": float(conf_level),
        "num_resamples": R,
        "scaled": int(bool(scaled)),
        "seed": seed_attr(seed),
        "nan_policy": nan_policy,
    }
    return build_result(space, out, fields, attrs)


def _resolve_levels(design, num_levels):
    from_design = design.attrs.get("num_levels") if isinstance(design, xr.DataArray) else None
    if num_levels is None:
        return int(from_design) if from_design is not None else 4
    if from_design is not None and int(from_design) != int(num_levels):
        raise ValueError(
            f"num_levels={num_levels} but the design was drawn with num_levels={from_design}; "
            "leave num_levels=None to use the design's"
        )
    return int(num_levels)


def morris(
    model: Callable,
    space: ParameterSpace,
    n_trajectories: int = 20,
    num_levels: int = 4,
    optimal_trajectories: int | None = None,
    seed: int | np.random.Generator | None = 0,
    *,
    forcing=None,
    reduce: Callable | None = None,
    infeasible: str = "project",
    conf_level: float = 0.95,
    num_resamples: int = 1000,
    scaled: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    nan_policy: str = "raise",
    max_memory: float = DEFAULT_MAX_MEMORY,
) -> xr.Dataset:
    """Morris screening in one call: :func:`morris_design` -> run ``model`` -> :func:`morris_analyze`.

    Parameters
    ----------
    model : callable ``(n, d) numpy -> (n, ...)`` (array, tensor, DataArray or Dataset with
        the sample first or named ``sample``/``member``); or, with ``forcing``, an ailand
        Model with ``run(forcing, params=...)`` wrapped by :func:`sensitivity.model_outputs`
        with the reduction ``reduce`` (e.g. :func:`sensitivity.monthly_means`).
    space, n_trajectories, num_levels, optimal_trajectories : see :func:`morris_design`.
    seed : used for the design *and* the bootstrap (same value to both, so that
        ``SALib.sample.morris.sample(..., seed=seed)`` + ``SALib.analyze.morris.analyze(...,
        seed=seed)`` reproduce every number).
    batch_size : model rows per call (None: the whole design at once; with ``forcing``
        it is the member chunk of ``model.run``).
    infeasible : with ``forcing``, rows breaking the space's constraints are
        ``"project"``-ed just inside (default, with a warning) or ``"raise"`` an error; see
        :func:`sensitivity.model_outputs`.
    Other arguments: see :func:`morris_analyze`.

    Returns
    -------
    Dataset ``mu, mu_star, sigma, mu_star_conf`` with dims ``(parameter, *output_dims)``.
    """
    design = morris_design(space, n_trajectories, num_levels, optimal_trajectories, seed=seed)
    y = run_design(model, space, design, forcing, reduce, batch_size, progress, infeasible)
    return morris_analyze(
        space,
        design,
        y,
        num_levels=num_levels,
        conf_level=conf_level,
        num_resamples=num_resamples,
        scaled=scaled,
        seed=seed,
        nan_policy=nan_policy,
        max_memory=max_memory,
    )
