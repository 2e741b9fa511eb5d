"""Model outputs for the estimators: any batch output -> ``DataArray (sample, *output_dims)``.

The estimators (:mod:`sensitivity.morris_screening`, :mod:`sensitivity.sobol_indices`)
take a *model* ``f(x) -> y`` from an ``(n, d)`` numpy batch of parameter vectors
(physical units, columns in ``space.names`` order) to one of

- a numpy array or torch tensor ``(n,)`` or ``(n, k1, k2, ...)``;
- an ``xarray.DataArray`` whose sample dimension is called ``sample`` or ``member``
  (or, failing both, is its first dimension); the other dims (``time``,
  ``variable``, ``site``, ``month`` ...) become the output dims of the result;
- an ``xarray.Dataset`` of such DataArrays (stacked along a new ``variable`` dim).

:func:`as_outputs` does that conversion, :func:`evaluate` calls a model on a design,
and :func:`model_outputs` turns an ailand Model (``run(forcing, params=...)``) plus a
reduction such as :func:`monthly_means` into such a callable.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import xarray as xr

from ailand import ParameterSpace
from ailand.arrays import to_numpy

SAMPLE_DIM = "sample"
_SAMPLE_ALIASES = ("sample", "member")


def as_outputs(y, n_rows: int | None = None, name: str = "outputs") -> xr.DataArray:
    """Convert a model's batch output to a float64 ``DataArray (sample, *output_dims)``.

    Parameters
    ----------
    y : numpy array / torch tensor ``(n,)`` or ``(n, k1, ...)``; DataArray with a
        ``sample`` or ``member`` dim (else its first dim is the sample dim); or a Dataset
        of such variables (stacked along ``variable``, with a ``units`` coordinate).
    n_rows : expected number of samples ``n`` (rows of the design); checked if given.
    name : what to call ``y`` in error messages.

    Returns
    -------
    DataArray ``(sample, *output_dims)``, float64, ``sample = 0..n-1``. numpy outputs of
    shape ``(n, k)`` get the output dim ``output``; ``(n, k1, k2, ...)`` get
    ``output_0, output_1, ...``.
    """
    if isinstance(y, xr.Dataset):
        y = _dataset_to_dataarray(y)
    if isinstance(y, xr.DataArray):
        if y.ndim == 0:
            raise ValueError(f"{name} is a scalar; the model must return one value (or array) per sample row")
        sdim = next((d for d in _SAMPLE_ALIASES if d in y.dims), y.dims[0])
        if sdim != SAMPLE_DIM:
            if SAMPLE_DIM in y.coords:
                y = y.drop_vars(SAMPLE_DIM)
            y = y.rename({sdim: SAMPLE_DIM})
        y = y.transpose(SAMPLE_DIM, ...)
        # Drop coordinates that vary along the sample (e.g. parameter values); keep output labels.
        drop = [c for c in y.coords if SAMPLE_DIM in y[c].dims and c != SAMPLE_DIM]
        y = y.drop_vars(drop)
        values = y.values
        da = xr.DataArray(
            np.asarray(values, dtype=np.float64),
            dims=y.dims,
            coords={**{k: v for k, v in y.coords.items() if k != SAMPLE_DIM}, SAMPLE_DIM: np.arange(y.shape[0])},
            name=y.name or name,
            attrs=dict(y.attrs),
        )
    else:
        arr = to_numpy(y, dtype=None, name=name)
        if arr.dtype == object:
            raise ValueError(f"{name} has dtype object; return a numeric array, tensor or DataArray")
        arr = arr.astype(np.float64, copy=False)
        if arr.ndim == 0:
            raise ValueError(f"{name} is a scalar; the model must return one value (or array) per sample row")
        if arr.ndim == 1:
            dims = (SAMPLE_DIM,)
        elif arr.ndim == 2:
            dims = (SAMPLE_DIM, "output")
        else:
            dims = (SAMPLE_DIM, *[f"output_{i}" for i in range(arr.ndim - 1)])
        coords = {dim: np.arange(s) for dim, s in zip(dims, arr.shape)}
        da = xr.DataArray(arr, dims=dims, coords=coords, name=name)
    if n_rows is not None and da.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {da.shape[0]} rows along '{SAMPLE_DIM}' but the design has {n_rows} rows; "
            "the model must return exactly one row (first dimension, or the 'sample'/'member' dim) "
            "per row of the (n, d) batch it is given, in the same order"
        )
    if da.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return da


def _dataset_to_dataarray(ds: xr.Dataset) -> xr.DataArray:
    names = list(ds.data_vars)
    if not names:
        raise ValueError("outputs Dataset has no data variables")
    units = [str(ds[v].attrs.get("units", "")) for v in names]
    da = ds.to_dataarray(dim="variable")
    da = da.assign_coords(units=("variable", units))
    return da


def flatten(outputs: xr.DataArray) -> np.ndarray:
    """``DataArray (sample, *output_dims)`` -> C-contiguous ``(n, M)`` float64, ``M = prod(output shape)``."""
    n = outputs.shape[0]
    return np.ascontiguousarray(outputs.values.reshape(n, -1), dtype=np.float64)


def evaluate(model: Callable, design, batch_size: int | None = None, progress: bool = False) -> xr.DataArray:
    """Run ``model`` on every row of ``design`` and return ``DataArray (sample, *output_dims)``.

    Parameters
    ----------
    model : callable ``(n, d) numpy -> (n, ...)`` array/tensor/DataArray/Dataset.
    design : ``DataArray (sample, parameter)`` (from :func:`~sensitivity.morris_design` or
        :func:`~sensitivity.sobol_design`) or an ``(n, d)`` array, physical units.
    batch_size : call the model on at most this many rows at a time (None: all at once).
    progress : show a tqdm bar over the batches.
    """
    x = np.asarray(design.transpose(..., "parameter").values if isinstance(design, xr.DataArray) else design, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"design must be 2-D (n, d), got shape {x.shape}")
    n = x.shape[0]
    if not batch_size or batch_size >= n:
        return as_outputs(model(x), n_rows=n, name="model output")
    from tqdm.auto import tqdm

    pieces = []
    with tqdm(total=n, disable=not progress, desc="model runs", unit="sample") as bar:
        for start in range(0, n, int(batch_size)):
            stop = min(n, start + int(batch_size))
            pieces.append(as_outputs(model(x[start:stop]), n_rows=stop - start, name="model output"))
            bar.update(stop - start)
    out = xr.concat(pieces, dim=SAMPLE_DIM, coords="minimal", compat="override", join="override")
    return out.assign_coords({SAMPLE_DIM: np.arange(n)})


# ---------------------------------------------------------------- ailand models
def _time_variables(ds: xr.Dataset, variables) -> xr.Dataset:
    """``variables`` of ``ds`` (default: every variable with a time dim); unknown names -> ValueError."""
    names = list(variables) if variables is not None else [v for v in ds.data_vars if "time" in ds[v].dims]
    missing = [v for v in names if v not in ds]
    if missing:
        raise ValueError(f"model output lacks variables {missing}; it has {list(ds.data_vars)}")
    return ds[names]


def monthly_means(variables: Sequence[str] | str | None = None) -> Callable[[xr.Dataset], xr.DataArray]:
    """A reduction for :func:`model_outputs`: monthly means of ``variables``.

    The returned callable maps a model Dataset ``(time, site, member)`` (time labels at the
    end of each output interval, as ``run`` gives them) to
    ``DataArray (variable, month, site, member)`` (months 1..12 present in the run;
    for multi-year runs this is the mean annual cycle), with a ``units`` coordinate
    along ``variable``.
    """
    if isinstance(variables, str):
        variables = [variables]

    def reduce(ds: xr.Dataset) -> xr.DataArray:
        sub = _time_variables(ds, variables)
        # model output is labelled at the END of each interval: the interval that ends at
        # midnight on the 1st belongs to the month before (else a run that ends on 31 July
        # gets a one-hour "August")
        month = (sub["time"] - np.timedelta64(1, "s")).dt.month.rename("month")
        means = sub.groupby(month).mean("time", keep_attrs=True)
        return _dataset_to_dataarray(means)

    reduce.__name__ = f"monthly_means({', '.join(variables) if variables else 'all'})"
    return reduce


def time_means(variables: Sequence[str] | str | None = None) -> Callable[[xr.Dataset], xr.DataArray]:
    """A reduction for :func:`model_outputs`: time means -> ``DataArray (variable, site, member)``."""
    if isinstance(variables, str):
        variables = [variables]

    def reduce(ds: xr.Dataset) -> xr.DataArray:
        return _dataset_to_dataarray(_time_variables(ds, variables).mean("time", keep_attrs=True))

    reduce.__name__ = f"time_means({', '.join(variables) if variables else 'all'})"
    return reduce


def project_to_constraints(space: ParameterSpace, x, rel_margin: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Move rows of ``x (n, d)`` that break the space's ``lower < upper`` constraints just inside them.

    For each broken pair the lower parameter is set to ``upper - margin`` (``margin =
    rel_margin`` x the upper parameter's range), kept within its bounds; if that is not
    enough the upper one is raised to ``lower + margin``. Chains (``a < b < c``) are
    swept until every row is feasible.

    Returns ``(x_projected (n, d), moved (n,) bool)``; raises ValueError if some row
    cannot be made feasible within the bounds.
    """
    x = np.array(x, dtype=float, copy=True)
    moved = np.zeros(x.shape[0], dtype=bool)
    if not space.constraints:
        return x, moved
    idx = {n: i for i, n in enumerate(space.names)}
    bounds = space.bounds
    for _ in range(len(space.constraints) + 1):
        changed = False
        for lo, hi in space.constraints:
            i, k = idx[lo], idx[hi]
            bad = x[:, i] >= x[:, k]
            if not bad.any():
                continue
            changed = True
            moved |= bad
            margin = rel_margin * (bounds[k, 1] - bounds[k, 0])
            x[bad, i] = np.clip(x[bad, k] - margin, bounds[i, 0], bounds[i, 1])
            still = x[:, i] >= x[:, k]
            x[still, k] = np.clip(x[still, i] + margin, bounds[k, 0], bounds[k, 1])
        if not changed:
            break
    ok = space.feasible(x)
    if not ok.all():
        raise ValueError(
            f"{int((~ok).sum())} rows cannot be moved inside the constraints within the bounds "
            f"(first: row {int(np.flatnonzero(~ok)[0])}); check the bounds of {space.constraints}"
        )
    return x, moved


def model_outputs(
    model,
    forcing,
    space: ParameterSpace,
    reduce: Callable[[xr.Dataset], xr.DataArray | xr.Dataset] | None = None,
    chunk_size: int | None = 256,
    progress: bool = True,
    infeasible: str = "project",
    **run_kwargs,
) -> Callable[[np.ndarray], xr.DataArray]:
    """Wrap an ailand Model into the ``(n, d) -> DataArray (sample, ...)`` callable the estimators take.

    Parameters
    ----------
    model : object with ``run(forcing, params=DataArray (member, parameter), **run_kwargs)
        -> xarray.Dataset`` with dims ``(time, site, member)`` (``ToyEcLand``, ``Emulator``).
    forcing : what ``model.run`` takes as forcing.
    space : the ParameterSpace whose names label the columns of the batch.
    reduce : ``Dataset (time, site, member) -> DataArray/Dataset`` with a ``member`` dim,
        e.g. :func:`monthly_means` ``(["Qle", "Qh"])``. None keeps every output variable
        at every time step (large).
    chunk_size : members per ``model.run`` call (bounds memory); None runs all at once.
    progress : tqdm progress bar over members.
    infeasible : what to do with rows that break the space's constraints (SALib's
        samplers ignore them, ailand models reject them): ``"project"`` (default) moves
        them just inside with :func:`project_to_constraints` and warns, so the indices
        describe the model composed with that projection (flat across the boundary);
        ``"raise"`` refuses them with a ValueError naming the rows.

    Returns
    -------
    ``f(x)``: ``(n, d)`` physical parameter values -> ``DataArray (sample, *output_dims)``,
    e.g. ``(sample, variable, month, site)`` with :func:`monthly_means`.
    """
    if not hasattr(model, "run"):
        raise TypeError(f"model must have a run(forcing, params=...) method, got {type(model).__name__}")
    if infeasible not in ("project", "raise"):
        raise ValueError(f"infeasible must be 'project' or 'raise', got {infeasible!r}")

    def f(x) -> xr.DataArray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if x.shape[1] != len(space):
            raise ValueError(f"batch has {x.shape[1]} columns but the space has {len(space)}: {space.names}")
        n = x.shape[0]
        ok = space.feasible(x)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            cons = ", ".join(f"{a} < {b}" for a, b in space.constraints)
            rows = ", ".join(str(int(r)) for r in bad[:20]) + (", ..." if len(bad) > 20 else "")
            if infeasible == "raise":
                raise ValueError(
                    f"{len(bad)} of {n} rows break the constraints ({cons}) or the bounds: rows {rows}. "
                    "Pass infeasible='project' to move them just inside"
                )
            x, _ = project_to_constraints(space, x)
            warnings.warn(
                f"{len(bad)} of {n} rows break the constraints ({cons}); they were moved just inside before "
                "running the model (infeasible='project'), so the indices describe the model composed with "
                "that projection",
                UserWarning,
                stacklevel=2,
            )
        step = int(chunk_size) if chunk_size else n
        from tqdm.auto import tqdm

        pieces = []
        with tqdm(total=n, disable=not progress, desc=f"{type(model).__name__}.run", unit="member") as bar:
            for start in range(0, n, step):
                stop = min(n, start + step)
                params = space.to_dataarray(x[start:stop])
                ds = model.run(forcing, params=params, **run_kwargs)
                out = reduce(ds) if reduce is not None else ds
                pieces.append(as_outputs(out, n_rows=stop - start, name="reduced model output"))
                bar.update(stop - start)
        if len(pieces) == 1:
            return pieces[0]
        out = xr.concat(pieces, dim=SAMPLE_DIM, coords="minimal", compat="override", join="override")
        return out.assign_coords({SAMPLE_DIM: np.arange(n)})

    f.space = space  # type: ignore[attr-defined]
    return f


def _stack_labels(coords: xr.Coordinates, dims: Iterable[str], shape) -> list[str]:
    """Readable labels ``"variable=Qle, month=7"`` for each flattened output."""
    dims = list(dims)
    if not dims:
        return ["output"]
    axes = []
    for d, s in zip(dims, shape):
        vals = coords[d].values if d in coords else np.arange(s)
        axes.append([f"{d}={_fmt(v)}" for v in vals])
    idx = np.indices(shape).reshape(len(dims), -1).T
    return [", ".join(axes[k][i] for k, i in enumerate(row)) for row in idx]


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:g}"
    if isinstance(v, np.datetime64):
        return str(np.datetime_as_string(v, unit="D"))
    return str(v)


def run_design(
    model, space, design, forcing=None, reduce=None, batch_size=None, progress=False, infeasible="project",
    **run_kwargs,
) -> xr.DataArray:
    """Outputs of ``model`` on ``design``: a callable directly, or an ailand Model via :func:`model_outputs`.

    ``run_kwargs`` (only with ``forcing``) go to ``model.run``, e.g. ``spinup_years=2,
    outputs=["Qle", "Qh"]`` (computing only the reduced variables saves memory).
    Returns ``DataArray (sample, *output_dims)``.
    """
    if forcing is None and hasattr(model, "run"):
        raise TypeError(
            f"{type(model).__name__} has a run(forcing, params=...) method: pass forcing= (and a reduce=, "
            "e.g. sensitivity.monthly_means([...])) so it is wrapped by sensitivity.model_outputs"
        )
    if forcing is not None:
        f = model_outputs(
            model, forcing, space, reduce=reduce, chunk_size=batch_size, progress=progress, infeasible=infeasible,
            **run_kwargs,
        )
        return evaluate(f, design)
    if run_kwargs:
        raise TypeError(f"{sorted(run_kwargs)} go to model.run, which needs an ailand Model with forcing=")
    if reduce is not None:
        raise ValueError("reduce= applies to an ailand Model run with forcing=; pass forcing too")
    if not callable(model):
        raise TypeError(
            f"model must be a callable (n, d) -> outputs, or an ailand Model together with forcing=; "
            f"got {type(model).__name__}"
        )
    return evaluate(model, design, batch_size=batch_size, progress=progress)
