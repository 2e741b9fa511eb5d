"""Shared plumbing of the estimators: design checks, bootstrap weights, memory blocks, result Datasets."""

from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from ailand import ParameterSpace
from ailand.arrays import to_numpy

from .outputs import SAMPLE_DIM

EPS = np.finfo(float).eps
DEFAULT_MAX_MEMORY = 512 * 2**20
"""Default bound (bytes) on the bootstrap temporaries of one analysis call."""

NAN_POLICIES = ("raise", "propagate")


def salib_version() -> str:
    try:
        return version("SALib")
    except Exception:  # pragma: no cover
        return "unknown"


def check_space(space) -> ParameterSpace:
    if not isinstance(space, ParameterSpace):
        raise TypeError(f"space must be an ailand.ParameterSpace, got {type(space).__name__}")
    return space


def design_matrix(space: ParameterSpace, design) -> np.ndarray:
    """``DataArray (sample, parameter)`` or ``(n, d)`` array -> ``(n, d)`` float64 in ``space.names`` order."""
    d = len(space)
    if isinstance(design, xr.DataArray):
        if "parameter" not in design.dims or design.ndim != 2:
            raise ValueError(f"design must be a DataArray (sample, parameter), got dims {design.dims}")
        if "parameter" in design.coords:
            names = [str(v) for v in design["parameter"].values]
            if sorted(names) != sorted(space.names):
                raise ValueError(
                    f"design parameters {names} do not match the space {space.names}; "
                    "analyse with the space the design was drawn from"
                )
            design = design.sel(parameter=space.names)
        x = design.transpose(..., "parameter").values
    else:
        x = to_numpy(design, name="design")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"design must have shape (n, {d}) for the {d} parameters {space.names}, got {x.shape}")
    return x


def z_value(conf_level: float) -> float:
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must be between 0 and 1 (exclusive), got {conf_level}")
    return float(norm.ppf(0.5 + conf_level / 2))


def check_resamples(num_resamples) -> int:
    if int(num_resamples) != num_resamples or num_resamples < 2:
        raise ValueError(f"num_resamples must be an integer >= 2, got {num_resamples}")
    return int(num_resamples)


def bootstrap_weights(index: np.ndarray, n: int) -> np.ndarray:
    """Resample indices ``(R, n)`` -> multiplicity weights ``W (R, n)`` (float64).

    ``W[b, i]`` counts how often row ``i`` appears in resample ``b``, so the mean of
    ``f`` over resample ``b`` is ``(W @ f)[b] / n``: one BLAS product replaces the
    gather-then-average of every resample, for all outputs at once.
    """
    R = index.shape[0]
    flat = (index + n * np.arange(R)[:, None]).ravel()
    return np.bincount(flat, minlength=R * n).reshape(R, n).astype(np.float64)


def column_blocks(n_columns: int, bytes_per_column: float, max_memory: float):
    """Slices over the flattened outputs so that each block's temporaries fit in ``max_memory``."""
    if max_memory is None or max_memory <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
    width = max(1, int(max_memory // max(bytes_per_column, 1.0)))
    for start in range(0, n_columns, width):
        yield slice(start, min(n_columns, start + width))


def finite_columns(Y: np.ndarray, X: np.ndarray, space: ParameterSpace, nan_policy: str) -> np.ndarray:
    """Boolean ``(M,)`` of outputs without NaN/inf; raise (``nan_policy='raise'``) naming the bad rows."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    finite = np.isfinite(Y)
    good_cols = finite.all(axis=0)
    if good_cols.all():
        return good_cols
    if nan_policy == "raise":
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        r0 = int(bad_rows[0])
        shown = ", ".join(str(int(r)) for r in bad_rows[:20]) + (", ..." if len(bad_rows) > 20 else "")
        params = ", ".join(f"{n}={v:.4g}" for n, v in zip(space.names, X[r0]))
        raise ValueError(
            f"outputs contain NaN or inf in {len(bad_rows)} of {Y.shape[0]} sample rows "
            f"(rows {shown}; {int((~good_cols).sum())} of {Y.shape[1]} outputs affected). "
            f"First bad row {r0} has parameters {params}. Fix the model for these parameter sets, "
            "narrow the bounds, or pass nan_policy='propagate' to get NaN indices for the affected "
            "outputs only."
        )
    warnings.warn(
        f"{int((~good_cols).sum())} of {Y.shape[1]} outputs contain NaN/inf; their indices are NaN "
        "(nan_policy='propagate')",
        RuntimeWarning,
        stacklevel=3,
    )
    return good_cols


def scatter_columns(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Put ``(..., M_good)`` results back into ``(..., M)`` with NaN for the non-finite outputs."""
    if good.all():
        return values
    out = np.full(values.shape[:-1] + good.shape, np.nan)
    out[..., good] = values
    return out


def parameter_coords(space: ParameterSpace) -> dict:
    t = space.table
    return {
        "parameter": space.names,
        "parameter_unit": ("parameter", [str(u) for u in t["unit"]]),
        "parameter_min": ("parameter", t["min"].to_numpy(float)),
        "parameter_max": ("parameter", t["max"].to_numpy(float)),
        "parameter_default": ("parameter", t["default"].to_numpy(float)),
        "parameter_scale": ("parameter", [str(s) for s in t["scale"]]),
    }


def constraints_attr(space: ParameterSpace) -> str:
    return ";".join(f"{a}<{b}" for a, b in space.constraints)


def space_from_result(result: xr.Dataset | xr.DataArray) -> ParameterSpace:
    """Rebuild the analysed ParameterSpace from a result's ``parameter_*`` coordinates."""
    need = ["parameter_min", "parameter_max", "parameter_default"]
    if any(c not in result.coords for c in need):
        raise ValueError(
            "result lacks the parameter_min/max/default coordinates; pass the ParameterSpace explicitly (space=...)"
        )
    names = [str(v) for v in result["parameter"].values]
    table = pd.DataFrame(
        {
            "default": result["parameter_default"].values,
            "min": result["parameter_min"].values,
            "max": result["parameter_max"].values,
            "unit": result["parameter_unit"].values if "parameter_unit" in result.coords else "-",
            "scale": result["parameter_scale"].values if "parameter_scale" in result.coords else "linear",
        },
        index=pd.Index(names, name="name"),
    )
    cons = []
    for pair in str(result.attrs.get("constraints", "")).split(";"):
        if "<" in pair:
            a, b = pair.split("<", 1)
            cons.append((a.strip(), b.strip()))
    return ParameterSpace(table, tuple(cons))


def output_template(outputs: xr.DataArray):
    """Output dims, shape and sample-free coords of ``DataArray (sample, *output_dims)``."""
    dims = outputs.dims[1:]
    clash = [d for d in dims if d in ("parameter", "parameter_")]
    if clash:
        raise ValueError(f"output dims may not be called {clash}: the results use them for the parameters; rename")
    shape = outputs.shape[1:]
    coords = {k: v for k, v in outputs.coords.items() if SAMPLE_DIM not in v.dims}
    return dims, shape, coords


def build_result(
    space: ParameterSpace,
    outputs: xr.DataArray,
    fields: dict,
    attrs: dict,
) -> xr.Dataset:
    """Assemble ``Dataset`` from ``{name: (values (d, M) or (d, d, M), long_name, units)}``."""
    dims, shape, coords = output_template(outputs)
    data_vars = {}
    for name, (values, long_name, units) in fields.items():
        if values.ndim == 2:
            vdims = ("parameter", *dims)
            arr = values.reshape(values.shape[0], *shape)
        else:
            vdims = ("parameter", "parameter_", *dims)
            arr = values.reshape(values.shape[0], values.shape[1], *shape)
        data_vars[name] = xr.Variable(vdims, arr, attrs={"long_name": long_name, "units": units})
    all_coords = {**coords, **parameter_coords(space)}
    if any("parameter_" in v.dims for v in data_vars.values()):
        all_coords["parameter_"] = space.names
    ds = xr.Dataset(data_vars, coords=all_coords)
    ds.attrs = {
        **attrs,
        "constraints": constraints_attr(space),
        "n_outputs": int(np.prod(shape, dtype=int)),
        "output_dims": ",".join(dims),
        "salib_version": salib_version(),
    }
    return ds


def output_units(outputs: xr.DataArray) -> str:
    if "units" in outputs.attrs:
        return str(outputs.attrs["units"])
    if "units" in outputs.coords:
        return "output units (see coordinate 'units')"
    return "output units"


def warn_infeasible(space: ParameterSpace, x: np.ndarray, what: str) -> int:
    """Warn if design rows break the space's constraints (SALib's samplers ignore them)."""
    if not space.constraints:
        return 0
    ok = space.feasible(x)
    bad = int((~ok).sum())
    if bad:
        cons = ", ".join(f"{a} < {b}" for a, b in space.constraints)
        warnings.warn(
            f"{bad} of {len(ok)} rows of the {what} design break the constraints ({cons}): SALib's "
            "samplers draw each parameter independently. Every row must be run for the estimators, so "
            "the model must accept them, or screen a space without one of the constrained parameters.",
            UserWarning,
            stacklevel=3,
        )
    return bad


def seed_attr(seed) -> int | str:
    if seed is None:
        return "None"
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return type(seed).__name__
