"""Sobol' variance-based indices (Saltelli's scheme), vectorised over every model output at once.

The design (``SALib.sample.sobol.sample``) stacks, for each of ``N`` base points, the
rows ``A, AB^1..AB^d, [BA^1..BA^d,] B``: ``A`` and ``B`` are two independent Sobol'
points, ``AB^j`` is ``A`` with column ``j`` from ``B`` and ``BA^j`` the reverse. With
``f`` the model output normalised to zero mean and unit variance over all rows, and
``V = var([f(A); f(B)])``, the estimators are

    S_j   = mean( f(B) (f(AB^j) - f(A)) ) / V                       Saltelli et al. (2010)
    ST_j  = 1/2 mean( (f(A) - f(AB^j))^2 ) / V                      Jansen (1999)
    S_jk  = mean( f(BA^j) f(AB^k) - f(A) f(B) ) / V - S_j - S_k     Saltelli (2002)

one function each below (:func:`first_order`, :func:`total_order`,
:func:`second_order`, built on their integrands), every mean over axis 0 and every array carrying the ``M``
outputs on its last axis. These are SALib's estimators, with SALib's normalisation and
guards (zero for outputs that are constant over ``A`` and ``B``), so the numbers equal
``SALib.analyze.sobol.analyze`` output by output.

Bootstrap confidence intervals resample the ``N`` base points with replacement. A
resample's mean of any ``g (N, M)`` is ``(W @ g) / N`` with ``W (R, N)`` the
multiplicity of each base point in each resample, so all ``R`` resamples of all ``M``
outputs come from a few matrix products instead of gathering ``R`` copies of the data.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import xarray as xr
from SALib.sample import sobol as _salib_sobol_sample

from ailand import ParameterSpace

from ._common import (
    DEFAULT_MAX_MEMORY,
    EPS,
    bootstrap_weights,
    build_result,
    check_resamples,
    check_space,
    column_blocks,
    design_matrix,
    finite_columns,
    scatter_columns,
    seed_attr,
    warn_infeasible,
    z_value,
)
from .outputs import SAMPLE_DIM, as_outputs, flatten, run_design

__all__ = [
    "sobol_design",
    "sobol_analyze",
    "sobol",
    "first_order",
    "total_order",
    "second_order",
    "first_order_integrand",
    "total_order_integrand",
    "second_order_integrand",
]


def sobol_design(
    space: ParameterSpace,
    n: int,
    second_order: bool = False,
    scramble: bool = True,
    skip_values: int = 0,
    seed: int | np.random.Generator | None = 0,
) -> xr.DataArray:
    """Saltelli's cross-sampled Sobol' design from ``SALib.sample.sobol.sample``.

    Parameters
    ----------
    space : the parameters (log-scale parameters get SALib's ``logunif``).
    n : base sample size ``N``; should be a power of two (otherwise SALib, through
        scipy's ``qmc.Sobol``, warns that the balance properties are lost, and so do we).
    second_order : also build the ``BA^j`` rows needed for ``S2`` (SALib's
        ``calc_second_order``); ``N (2d + 2)`` rows instead of ``N (d + 2)``.
    scramble : Owen-type LMS + digital-shift scrambling of the ``2d``-dim Sobol' sequence
        (SALib's default, recommended: unscrambled Sobol' points repeat early values).
    skip_values : points of the sequence to skip (SALib's option; leave at 0).
    seed : seed of the scrambling (int, Generator or None).

    Returns
    -------
    DataArray ``(sample, parameter)`` of physical values with coordinates ``base``
    (base-point index) and ``matrix`` (``"A"``, ``"AB[name]"``, ``"BA[name]"``, ``"B"``)
    along ``sample``, attrs ``method="sobol"``, ``N``, ``second_order`` and the seed.
    """
    space = check_space(space)
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2 (ideally a power of two), got {n}")
    n = int(n)
    x = _salib_sobol_sample.sample(
        space.to_salib(),
        n,
        calc_second_order=bool(second_order),
        scramble=scramble,
        skip_values=skip_values,
        seed=seed,
    )
    d = len(space)
    labels = ["A", *[f"AB[{p}]" for p in space.names]]
    if second_order:
        labels += [f"BA[{p}]" for p in space.names]
    labels.append("B")
    step = len(labels)
    n_bad = warn_infeasible(space, x, "Sobol")
    return xr.DataArray(
        x,
        dims=(SAMPLE_DIM, "parameter"),
        coords={
            SAMPLE_DIM: np.arange(x.shape[0]),
            "parameter": space.names,
            "base": (SAMPLE_DIM, np.repeat(np.arange(n), step)),
            "matrix": (SAMPLE_DIM, np.tile(np.array(labels), n)),
        },
        name="design",
        attrs={
            "long_name": "Saltelli/Sobol' design (physical parameter values)",
            "units": "see parameter units",
            "method": "sobol",
            "N": n,
            "second_order": int(bool(second_order)),
            "scramble": int(bool(scramble)),
            "skip_values": int(skip_values),
            "seed": seed_attr(seed),
            "n_infeasible": n_bad,
            "n_parameters": d,
        },
    )


# ------------------------------------------------------------------ estimators
# Each index is (mean over the N base points of an integrand) / V. The integrands are
# written once, with optional ``out=`` buffers, and shared by the point estimates (their
# mean) and the bootstrap (their resample means ``W @ g / N``).
def first_order_integrand(A, ABj, B, out=None) -> np.ndarray:
    """``f(B) (f(AB^j) - f(A))``, ``(N, M)``: integrand of ``S_j`` (Saltelli et al. 2010)."""
    out = np.subtract(ABj, A, out=out)
    return np.multiply(B, out, out=out)


def total_order_integrand(A, ABj, out=None) -> np.ndarray:
    """``1/2 (f(A) - f(AB^j))^2``, ``(N, M)``: integrand of ``ST_j`` (Jansen 1999)."""
    out = np.subtract(A, ABj, out=out)
    np.square(out, out=out)
    return np.multiply(out, 0.5, out=out)  # exact: scaling by 1/2 commutes with the mean


def second_order_integrand(BAj, ABk, AtimesB, out=None) -> np.ndarray:
    """``f(BA^j) f(AB^k) - f(A) f(B)``, ``(N, M)``: integrand of ``V_jk`` (Saltelli 2002)."""
    out = np.multiply(BAj, ABk, out=out)
    return np.subtract(out, AtimesB, out=out)


def _ratio(num: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``num / var`` where ``var > eps``, else 0 (SALib's guard)."""
    return np.divide(num, var, out=np.zeros(np.broadcast_shapes(num.shape, var.shape)), where=var > EPS)


def first_order(A: np.ndarray, ABj: np.ndarray, B: np.ndarray, var: np.ndarray) -> np.ndarray:
    """First-order index ``S_j = mean(f(B) (f(AB^j) - f(A))) / V`` (Saltelli et al. 2010).

    ``A, ABj, B``: ``(N, M)`` normalised outputs; ``var``: ``(M,)`` = ``V = var([A; B])``.
    Returns ``(M,)``.
    """
    return _ratio(first_order_integrand(A, ABj, B).mean(axis=0), var)


def total_order(A: np.ndarray, ABj: np.ndarray, B: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Total index ``ST_j = 1/2 mean((f(A) - f(AB^j))^2) / V`` (Jansen 1999). Shapes as :func:`first_order`."""
    return _ratio(total_order_integrand(A, ABj).mean(axis=0), var)


def second_order(
    A: np.ndarray, ABj: np.ndarray, ABk: np.ndarray, BAj: np.ndarray, B: np.ndarray, var: np.ndarray
) -> np.ndarray:
    """Second-order index ``S_jk = mean(f(BA^j) f(AB^k) - f(A) f(B)) / V - S_j - S_k`` (Saltelli 2002)."""
    vjk = _ratio(second_order_integrand(BAj, ABk, A * B).mean(axis=0), var)
    return vjk - first_order(A, ABj, B, var) - first_order(A, ABk, B, var)


# -------------------------------------------------------------------- analysis
def sobol_analyze(
    space: ParameterSpace,
    design,
    outputs,
    second_order: bool | None = None,
    num_resamples: int = 100,
    conf_level: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    nan_policy: str = "raise",
    max_memory: float = DEFAULT_MAX_MEMORY,
) -> xr.Dataset:
    """Sobol' indices ``S1, ST`` (and ``S2``) with bootstrap CIs, for every output at once.

    Parameters
    ----------
    space : the ParameterSpace the design was drawn from.
    design : ``DataArray (sample, parameter)`` from :func:`sobol_design`, or an ``(n, d)``
        array in SALib's row order (``n = N (d + 2)``, or ``N (2d + 2)`` with second order).
    outputs : model outputs for the design rows: ``(n,)``, ``(n, k, ...)`` array/tensor,
        or ``DataArray (sample, *output_dims)`` (see :func:`sensitivity.as_outputs`).
    second_order : compute ``S2``; None takes ``design.attrs["second_order"]`` (else
        False). Contradicting the design's attrs, or a row count that does not fit, is an
        error.
    num_resamples : bootstrap resamples ``R`` (SALib's default 100).
    conf_level : level of the confidence intervals.
    seed : bootstrap seed. The resample indices are ``np.random.default_rng(seed)
        .integers(N, size=(N, R))``, column ``b`` being resample ``b``, shared by all
        parameters and outputs: exactly SALib's draw whenever SALib uses its seed, i.e.
        any seed that is truthy (non-zero int, Generator). SALib ignores ``seed=0`` and
        ``seed=None`` (it then draws from numpy's global ``np.random.randint``); here 0
        seeds ``default_rng(0)`` and None draws fresh OS entropy, and the global numpy
        state is never touched. With the same draw the CIs equal SALib's to rounding
        (~1e-12 relative: weighted sums instead of gathers, one-pass resample variance).
    nan_policy : ``"raise"`` (default; the error names the sample rows) or
        ``"propagate"`` (NaN indices for outputs with any NaN/inf).
    max_memory : bytes allowed for bootstrap temporaries (outputs go in column blocks).

    Returns
    -------
    Dataset with ``S1, S1_conf, ST, ST_conf`` of dims ``(parameter, *output_dims)``, and
    with second order ``S2, S2_conf`` of dims ``(parameter, parameter_, *output_dims)``
    (filled for ``parameter < parameter_`` in space order, NaN elsewhere, as SALib).
    ``*_conf`` are half-widths ``z * std`` of the bootstrap distributions.
    """
    space = check_space(space)
    x = design_matrix(space, design)
    n, d = x.shape
    so = _resolve_second_order(design, second_order)
    step = 2 * d + 2 if so else d + 2
    if n % step:
        raise ValueError(
            f"design has {n} rows, not a multiple of {step} = {'2d + 2' if so else 'd + 2'} for d = {d}; "
            "check that second_order matches the design (SALib's calc_second_order)"
        )
    N = n // step
    if N < 2:
        raise ValueError(f"Sobol analysis needs N >= 2 base points, the design has {N}")
    z = z_value(conf_level)
    R = check_resamples(num_resamples)
    out = as_outputs(outputs, n_rows=n)
    y_all = flatten(out)
    good = finite_columns(y_all, x, space, nan_policy)
    y = y_all if good.all() else np.ascontiguousarray(y_all[:, good])
    M = y.shape[1]

    # SALib normalises each output by its mean and std over all n rows: f = (y - mean) / std.
    # Constant outputs (std = 0) make NaN in SALib and end as 0 indices; dividing by 1 instead
    # gives the same 0s through the same guards.
    mean, std = _column_mean_std(y)
    std[std == 0] = 1.0
    yr = y.reshape(N, step, M)  # row i of base point t: A (i = 0), AB^j (1 + j), BA^j (1 + d + j), B (step - 1)

    # Bootstrap draw as SALib: column b of r holds the base points of resample b.
    rng = np.random.default_rng(seed)
    r = rng.integers(N, size=(N, R))
    Wt = bootstrap_weights(r.T, N).T  # (N, R): multiplicity of base point i in resample b
    # Resample means are taken as g.T @ Wt -> (m, R): the same sums as W @ g, but BLAS runs this
    # shape (few resamples, many outputs) about twice as fast.
    used = np.unique(r)

    S1, ST, S1_conf, ST_conf = (np.empty((d, M)) for _ in range(4))
    S2 = np.full((d, d, M), np.nan) if so else None
    S2_conf = np.full((d, d, M), np.nan) if so else None
    flat = np.zeros(M, dtype=bool)  # constant over A and B: SALib returns 0 indices
    flat_boot = np.zeros(M, dtype=bool)  # constant over the resampled rows: SALib returns 0 CIs
    per_column = 8.0 * (R * (8 + (d if so else 0)) + N * (8 + (2 * d if so else 0)))
    for blk in column_blocks(M, per_column, max_memory):
        mu_blk, sd_blk = mean[blk], std[blk]
        m = sd_blk.shape[0]

        def f(i: int, out: np.ndarray | None = None) -> np.ndarray:
            """Normalised outputs of row ``i`` of every base point, ``(N, m)``."""
            out = np.subtract(yr[:, i, blk], mu_blk, out=out)
            return np.divide(out, sd_blk, out=out)

        a, b = f(0), f(step - 1)
        a_and_b = np.concatenate([a, b])
        var = a_and_b.var(axis=0)  # V, (m,)
        flat[blk] = np.ptp(a_and_b, axis=0) <= EPS
        del a_and_b
        flat_boot[blk] = (
            np.maximum(a[used].max(axis=0), b[used].max(axis=0)) - np.minimum(a[used].min(axis=0), b[used].min(axis=0))
        ) <= EPS
        # the variance of each resample, from weighted sums: (m, R)
        mean_b = (a.T @ Wt + b.T @ Wt) / (2 * N)
        var_b = ((a * a).T @ Wt + (b * b).T @ Wt) / (2 * N) - mean_b**2
        # buffers reused for every parameter (no fresh (N, m) arrays inside the loops)
        g = np.empty((N, m))
        ab_rows = np.empty((d, N, m)) if so else np.empty((1, N, m))
        s1_all = np.empty((d, m, R)) if so else None
        for j in range(d):
            abj = f(1 + j, out=ab_rows[j if so else 0])
            # point estimate: mean of the integrand; resample b: (integrand.T @ Wt)[:, b] / N
            first_order_integrand(a, abj, b, out=g)
            S1[j, blk] = _ratio(g.mean(axis=0), var)
            s1_b = _ratio((g.T @ Wt) / N, var_b)  # (m, R)
            total_order_integrand(a, abj, out=g)
            ST[j, blk] = _ratio(g.mean(axis=0), var)
            st_b = _ratio((g.T @ Wt) / N, var_b)
            S1_conf[j, blk] = z * s1_b.std(axis=1, ddof=1)
            ST_conf[j, blk] = z * st_b.std(axis=1, ddof=1)
            if so:
                s1_all[j] = s1_b
        if so:
            a_times_b = a * b
            baj = np.empty((N, m))
            for j in range(d):
                f(1 + d + j, out=baj)
                for k in range(j + 1, d):
                    second_order_integrand(baj, ab_rows[k], a_times_b, out=g)
                    S2[j, k, blk] = _ratio(g.mean(axis=0), var) - S1[j, blk] - S1[k, blk]
                    vjk_b = _ratio((g.T @ Wt) / N, var_b)
                    S2_conf[j, k, blk] = z * (vjk_b - s1_all[j] - s1_all[k]).std(axis=1, ddof=1)
    if flat.any():
        warnings.warn(
            f"{int(flat.sum())} of {M} outputs are constant over the A and B samples; their indices are 0 "
            "(as SALib)",
            RuntimeWarning,
            stacklevel=2,
        )
    for arr in (S1, ST):
        arr[:, flat] = 0.0
    for arr in (S1_conf, ST_conf):
        arr[:, flat_boot] = 0.0
    if so:
        upper = np.triu(np.ones((d, d), dtype=bool), k=1)
        S2[upper[:, :, None] & flat[None, None, :]] = 0.0
        S2_conf[upper[:, :, None] & flat_boot[None, None, :]] = 0.0

    ci = f"half-width of the {conf_level:.0%} bootstrap confidence interval of"
    fields = {
        "S1": (scatter_columns(S1, good), "first-order Sobol' index", "1"),
        "S1_conf": (scatter_columns(S1_conf, good), f"{ci} S1", "1"),
        "ST": (scatter_columns(ST, good), "total-order Sobol' index", "1"),
        "ST_conf": (scatter_columns(ST_conf, good), f"{ci} ST", "1"),
    }
    if so:
        fields["S2"] = (scatter_columns(S2, good), "second-order Sobol' index (parameter < parameter_)", "1")
        fields["S2_conf"] = (scatter_columns(S2_conf, good), f"{ci} S2", "1")
    attrs = {
        "method": "sobol",
        "N": int(N),
        "n_samples": int(n),
        "second_order": int(so),
        "conf_level": float(conf_level),
        "num_resamples": R,
        "seed": seed_attr(seed),
        "nan_policy": nan_policy,
    }
    return build_result(space, out, fields, attrs)


def _column_mean_std(y: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each column of ``(n, M)``, in row chunks (no full-size temporaries)."""
    n = y.shape[0]
    mean = y.sum(axis=0) / n
    ss = np.zeros(y.shape[1])
    for start in range(0, n, rows):
        dev = y[start : start + rows] - mean
        np.square(dev, out=dev)
        ss += dev.sum(axis=0)
    return mean, np.sqrt(ss / n)


def _resolve_second_order(design, second_order):
    from_design = design.attrs.get("second_order") if isinstance(design, xr.DataArray) else None
    if second_order is None:
        return bool(from_design) if from_design is not None else False
    if from_design is not None and bool(from_design) != bool(second_order):
        raise ValueError(
            f"second_order={second_order} but the design was drawn with second_order={bool(from_design)}; "
            "leave second_order=None to use the design's"
        )
    return bool(second_order)


def sobol(
    model: Callable,
    space: ParameterSpace,
    n: int = 1024,
    second_order: bool = False,
    seed: int | np.random.Generator | None = 0,
    *,
    forcing=None,
    reduce: Callable | None = None,
    infeasible: str = "project",
    scramble: bool = True,
    num_resamples: int = 100,
    conf_level: float = 0.95,
    batch_size: int | None = None,
    progress: bool = False,
    nan_policy: str = "raise",
    max_memory: float = DEFAULT_MAX_MEMORY,
) -> xr.Dataset:
    """Sobol' indices in one call: :func:`sobol_design` -> run ``model`` -> :func:`sobol_analyze`.

    Parameters
    ----------
    model : callable ``(n, d) numpy -> (n, ...)`` (array, tensor, DataArray or Dataset), or
        with ``forcing`` an ailand Model wrapped by :func:`sensitivity.model_outputs` with
        the reduction ``reduce``.
    n : base sample size ``N`` (power of two); the model runs ``N (d + 2)`` times
        (``N (2d + 2)`` with ``second_order``).
    seed : used for the design's scrambling *and* the bootstrap (same value to both, as
        a user of SALib would pass it to ``sample`` and ``analyze``).
    infeasible : with ``forcing``, rows breaking the space's constraints are
        ``"project"``-ed just inside (default, with a warning) or ``"raise"`` an error; see
        :func:`sensitivity.model_outputs`.
    batch_size : model rows per call (None: all at once; with ``forcing`` the member chunk).
    Other arguments: see :func:`sobol_design` and :func:`sobol_analyze`.

    Returns
    -------
    Dataset ``S1, S1_conf, ST, ST_conf`` (``S2, S2_conf``) with dims ``(parameter, *output_dims)``.
    """
    design = sobol_design(space, n, second_order=second_order, scramble=scramble, seed=seed)
    y = run_design(model, space, design, forcing, reduce, batch_size, progress, infeasible)
    return sobol_analyze(
        space,
        design,
        y,
        second_order=second_order,
        num_resamples=num_resamples,
        conf_level=conf_level,
        seed=seed,
        nan_policy=nan_policy,
        max_memory=max_memory,
    )
