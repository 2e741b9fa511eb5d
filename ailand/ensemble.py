"""Perturbed-parameter ensembles of the toy ecLand, written as anemoi datasets.

:func:`run_ensemble` runs :class:`ailand.ToyEcLand` for every member of a parameter design
at every site of a forcing, in chunks of members (one after another here, or on the
workers of a ``dask.distributed.Client``), and builds an anemoi-datasets zarr
(``data[dates, variables, ensembles, gridpoints]``) with anemoi-datasets' own ``create``
tasks from the recipe template ``data/anemoi/ensemble.yaml``. :func:`load_ensemble` reads
it back (through ``anemoi.datasets.open_dataset``) for the emulator.

Row convention (what the emulator relies on)
--------------------------------------------
Dates are ``t_0, t_0 + D, ..., t_{N-1}`` with ``D = output_freq`` and ``N = forcing length / D``.
At row ``t``:

* state variables (``swvl1..4, stl1..4, skt, sd, wsn, rsn, asn, tsn, wl``) are the
  instantaneous state at ``t`` (row ``t_0``: the spun-up initial conditions);
* forcing variables (``Tair`` ... ``PSurf``) and ``clim_lai`` are means over ``[t, t + D)``
  of the hourly values (an hourly row applies over the hour starting at its timestamp);
* diagnostics (``Qle``, ``Qh``, ... ``albedo``, ``T2m``, ``q2m``, ``RH2m``) are means over ``[t, t + D)``;
* the 22 parameters (table names) and the site statics ``clim_sand, clim_clay, clim_cveg,
  clim_cvh, clim_elevation`` are constant in time.

So row ``t`` holds everything needed to step the state from ``t`` to ``t + D``, and the state
in row ``t + 1`` is the result. The state after the last interval (``t_N``) is not stored.

Why not anemoi's field-by-field ``load``: its xarray source turns every (date, variable,
member) into one earthkit field (~3 ms each), i.e. hours for a few years of a 32-member
ensemble. ``run_ensemble`` therefore runs anemoi's ``init`` (which reads the source's first
date to set variables, grid, ensembles and metadata), writes the source into anemoi's
``data`` array in blocks of dates in anemoi's own variable order (``load="bulk"``, the
default), marks the load groups done, and runs anemoi's ``finalise`` (statistics,
tendency statistics, size, cleanup, validation). ``load="anemoi"`` runs anemoi's own
``load`` task instead; the tests check that both give the same array.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import string
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .interface import freq_seconds
from .params import DATA_DIR, ParameterSpace

RECIPE_TEMPLATE = DATA_DIR / "anemoi" / "ensemble.yaml"

STATE_VARIABLES = (
    "swvl1", "swvl2", "swvl3", "swvl4", "stl1", "stl2", "stl3", "stl4",
    "skt", "sd", "wsn", "rsn", "asn", "tsn", "wl",
)
FORCING_NAMES = ("Tair", "Qair", "Wind_E", "Wind_N", "SWdown", "LWdown", "Rainf", "Snowf", "PSurf")
#: clim_* field -> site variable it comes from (clim_lai and clim_cvh are derived)
STATIC_FIELDS = {"clim_sand": "sand", "clim_clay": "clay", "clim_cveg": "cveg", "clim_cvh": None, "clim_elevation": "elevation"}

TIME_CONVENTION = (
    "Row t (dates t_0, t_0+D, ..., t_{N-1}; D = output_freq): state variables are the instantaneous "
    "state at t (t_0: the spun-up initial conditions); forcing variables, clim_lai and diagnostics are "
    "means over [t, t+D) (an hourly forcing row applies over the hour starting at its timestamp); "
    "parameters and the other clim_* fields are constant in time. Row t holds everything needed to "
    "step the state from t to t+D; the state in row t+1 is the result. Tendency statistics are of "
    "x(t+D) - x(t)."
)

LOG = logging.getLogger(__name__)


# ======================================================================================
# running the ensemble
# ======================================================================================
def _validate_design(space: ParameterSpace, design) -> xr.DataArray:
    """Design DataArray (member, parameter) -> full design (every parameter, space order)."""
    if not isinstance(design, xr.DataArray):
        raise ValueError(
            f"design must be an xarray.DataArray (member, parameter), e.g. ParameterSpace.sample(n), "
            f"not {type(design).__name__}"
        )
    if set(design.dims) != {"member", "parameter"}:
        raise ValueError(f"design has dims {design.dims}; expected ('member', 'parameter')")
    design = design.transpose("member", "parameter")
    if design.sizes["member"] < 1:
        raise ValueError("design has no members")
    names = [str(n) for n in design["parameter"].values]
    if len(set(names)) != len(names):
        raise ValueError(f"design repeats a parameter: {names}")
    values = {n: np.asarray(design.sel(parameter=n).values, dtype=float) for n in names}
    space.check(values, what="design")  # unknown names, bounds, constraints -> ValueError
    x = np.tile(space.default_vector, (design.sizes["member"], 1))
    for j, n in enumerate(space.names):
        if n in values:
            x[:, j] = values[n]
    full = space.to_dataarray(x, attrs=dict(design.attrs))
    return full.assign_coords(member=np.arange(design.sizes["member"]))


def _check_forcing(model, forcing: xr.Dataset, output_freq) -> tuple[xr.Dataset, int, float]:
    """Validate the forcing; return (forcing, forcing rows per output interval, interval [s])."""
    from .forcing import validate_forcing

    forcing = validate_forcing(forcing)
    need = ["sand", "clay", "cveg", "elevation", "lai_min", "lai_max", "lai_peak_doy", "lat", "lon"]
    missing = [k for k in need if k not in forcing]
    if missing:
        raise ValueError(
            f"forcing lacks static site field(s) {missing}: use ailand.synthetic_forcing (which carries them) "
            "or ailand.open_forcing(path, sites=...) / ailand.forcing.attach_sites(forcing, sites)"
        )
    times = pd.DatetimeIndex(forcing["time"].values)
    if len(times) < 2:
        raise ValueError("forcing needs at least two time steps")
    step = (times[1] - times[0]).total_seconds()
    try:
        delta = freq_seconds(output_freq)
    except (ValueError, TypeError) as err:
        raise ValueError(f"output_freq {output_freq!r} is not a frequency such as '6h' or '1D'") from err
    k = delta / step
    if delta <= 0 or abs(k - round(k)) > 1e-9:
        raise ValueError(f"output_freq {output_freq!r} ({delta:g} s) must be a whole multiple of the forcing step ({step:g} s)")
    k = int(round(k))
    if len(times) % k:
        raise ValueError(
            f"forcing length {len(times)} steps is not a whole number of output intervals of {k} steps "
            f"({output_freq}); trim the forcing to {len(times) // k * k} steps"
        )
    if abs(delta / model.dt - round(delta / model.dt)) > 1e-9:
        raise ValueError(f"output_freq {output_freq!r} must be a whole multiple of the model step dt={model.dt:g} s")
    return forcing, k, delta


def _interval_mean(a: np.ndarray, k: int) -> np.ndarray:
    """(T, ...) hourly values -> (T // k, ...) means over consecutive blocks of k rows (float64)."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0] // k, k, *a.shape[1:]).mean(axis=1)


def _static_fields(forcing: xr.Dataset, k: int) -> dict[str, np.ndarray]:
    """Forcing means and climate fields: name -> float64 (N, S) (time-varying) or (S,) (constant)."""
    from .physics.model import HIGH_VEGETATION
    from .sites import lai_climatology

    out = {v: _interval_mean(forcing[v].transpose("time", "site").values, k) for v in FORCING_NAMES}
    doy = pd.DatetimeIndex(forcing["time"].values).day_of_year.values
    out["clim_lai"] = _interval_mean(lai_climatology(forcing, doy), k)  # as ToyEcLand.prepare
    for name, src in STATIC_FIELDS.items():
        if src is not None:
            out[name] = np.asarray(forcing[src].values, dtype=np.float64)
    cveg = np.asarray(forcing["cveg"].values, dtype=np.float64)
    if "veg_type" in forcing.variables:
        high = np.array([HIGH_VEGETATION.get(str(v), 0.0) for v in np.atleast_1d(forcing["veg_type"].values)])
    else:
        high = np.zeros_like(cveg)
    out["clim_cvh"] = cveg * high
    return out


def _run_chunk(model, forcing: xr.Dataset, design: xr.DataArray, output_freq, spinup_years) -> dict[str, np.ndarray]:
    """Run one chunk of members. Returns name -> float32 ``(N, m, S)`` for the 15 state
    variables (instantaneous at the row's date) and the 19 diagnostics (means over the
    interval starting at the row's date). Runs on dask workers too: keep it top-level."""
    from .physics.column import DIAGNOSTICS

    ic = model.initial_conditions(forcing, design, spinup_years=spinup_years)
    out = model.run(forcing, design, state0=ic, output_freq=output_freq)
    dims = ("time", "member", "site")
    res = {}
    for v in STATE_VARIABLES:
        first = ic[v].transpose("member", "site").values[None]
        later = out[v].transpose(*dims).values[:-1]
        res[v] = np.concatenate([first, later]).astype(np.float32)
    for v in DIAGNOSTICS:
        res[v] = out[v].transpose(*dims).values.astype(np.float32)
    return res


def _variable_meta(space: ParameterSpace) -> dict[str, dict[str, str]]:
    """name -> {units, long_name, kind} for every variable of the dataset."""
    from .forcing import FORCING_VARIABLES
    from .physics.column import DIAGNOSTICS
    from .physics.model import STATE_META
    from .sites import SITE_FIELDS

    meta = {}
    for v in STATE_VARIABLES:
        u, ln = STATE_META[v]
        meta[v] = {"units": u, "long_name": f"{ln} (instantaneous at the row's date)", "kind": "state"}
    for v in FORCING_NAMES:
        u, ln = FORCING_VARIABLES[v]
        meta[v] = {"units": u, "long_name": f"{ln} (mean over [t, t+D))", "kind": "forcing"}
    meta["clim_lai"] = {
        "units": "m2 m-2", "long_name": "leaf area index climatology (mean over [t, t+D))", "kind": "climate",
    }
    meta["clim_cvh"] = {
        "units": "-", "long_name": "high-vegetation cover fraction (cveg x high share of veg_type)", "kind": "climate",
    }
    for name, src in STATIC_FIELDS.items():
        if src is not None:
            u, ln = SITE_FIELDS[src]
            meta[name] = {"units": u, "long_name": ln, "kind": "climate"}
    for p in space.names:
        row = space.table.loc[p]
        meta[p] = {"units": str(row["unit"]), "long_name": str(row["definition"]) or p, "kind": "parameter"}
    for v, (u, ln) in DIAGNOSTICS.items():
        meta[v] = {"units": u, "long_name": f"{ln} (mean over [t, t+D))", "kind": "diagnostic"}
    return meta


def _write_source_template(src: Path, dates, members: int, chunk_members: int, lat, lon, meta) -> None:
    """Create the (empty) source zarr: (time, number, values) float32 variables + CF coordinates."""
    import dask.array as da

    n, s = len(dates), len(lat)
    tchunk = min(n, 512)
    data = {
        v: (("time", "number", "values"), da.zeros((n, members, s), dtype=np.float32, chunks=(tchunk, chunk_members, s)),
            {"units": m["units"], "long_name": m["long_name"]})
        for v, m in meta.items()
    }
    coords = {
        "time": ("time", np.asarray(dates, dtype="datetime64[ns]"), {"standard_name": "time", "axis": "T"}),
        "number": ("number", np.arange(members), {"standard_name": "realization", "long_name": "ensemble member"}),
        "latitude": ("values", np.asarray(lat, dtype=np.float64), {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("values", np.asarray(lon, dtype=np.float64), {"standard_name": "longitude", "units": "degrees_east"}),
    }
    ds = xr.Dataset(data, coords=coords, attrs={"title": "ailand ensemble source (intermediate)"})
    encoding = {v: {"chunks": (tchunk, chunk_members, s)} for v in meta}
    ds.to_zarr(src, mode="w", compute=False, encoding=encoding, consolidated=True)


@contextlib.contextmanager
def _anemoi_quiet(progress: bool):
    """Contain anemoi's global side effects while it builds the dataset: its Creator sets
    ``np.seterr(all='raise')``, one of its modules calls ``logging.basicConfig`` on import,
    its xarray source prints to stdout, and it logs every step at INFO. All restored after."""
    import sys

    err = np.geterr()
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    logger = logging.getLogger("anemoi")
    level = logger.level
    if level == logging.NOTSET and not handlers:
        logger.setLevel(logging.ERROR)  # nobody configured logging: no dataset-name warnings etc.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        stderr = contextlib.redirect_stderr(devnull) if not progress else contextlib.nullcontext()
        try:
            with stderr:
                yield
        finally:
            np.seterr(**err)
            logger.setLevel(level)
            for h in list(root.handlers):
                if h not in handlers:
                    root.removeHandler(h)
            root.setLevel(root_level)
            sys.stdout.flush()


def _fill_recipe(path: Path, **fields) -> Path:
    text = string.Template(RECIPE_TEMPLATE.read_text()).substitute(**fields)
    path.write_text(text)
    return path


def _bulk_load(target: Path, src: Path, progress: bool) -> None:
    """Copy the source zarr into anemoi's ``data`` array, in anemoi's variable order, and mark
    the load groups done (what anemoi's ``load`` task does field by field)."""
    import zarr
    from anemoi.datasets.create.dataset import Dataset

    ds = Dataset(str(target), update=True)
    variables = list(ds.store.attrs["variables"])
    src_group = zarr.open_group(str(src), mode="r")
    data = ds.data
    n = data.shape[0]
    block = max(1, min(n, 512))
    bar = _bar(range(0, n, block), progress, "anemoi data", unit="block")
    for i in bar:
        j = min(n, i + block)
        data[i:j] = np.stack([src_group[v][i:j] for v in variables], axis=1)
    for g in range(ds.total_todo()):
        ds.mark_done(g)
    ds.add_provenance(name="provenance_load")
    ds.touch()


def _bar(iterable, enabled: bool, desc: str, total=None, unit="it"):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)


def run_ensemble(
    model,
    forcing: xr.Dataset,
    design: xr.DataArray,
    path: str | os.PathLike,
    output_freq: str = "6h",
    client=None,
    spinup_years: int | None = None,
    chunk_members: int = 8,
    progress: bool = True,
    overwrite: bool = False,
    load: str = "bulk",
) -> Path:
    """Run a perturbed-parameter ensemble and write it as an anemoi dataset.

    Parameters
    ----------
    model : :class:`ailand.ToyEcLand`.
    forcing : hourly forcing Dataset ``(time, site)`` with the static site variables (as from
        :func:`ailand.synthetic_forcing`); its length must be a whole number of ``output_freq``.
    design : DataArray ``(member, parameter)`` of physical parameter values (e.g.
        ``ParameterSpace.sample``); parameters it leaves out take their defaults. Checked with
        ``model.space.check`` (unknown name, out of bounds, violated constraint -> ValueError).
    path : output ``*.zarr`` directory. Built in ``<path>.tmp/`` and renamed when complete.
    output_freq : the dataset step D (``"6h"``, ``"1D"`` ...), a multiple of the forcing step.
    client : optional ``dask.distributed.Client``: the chunks run on its workers. Same chunks,
        same arrays (bit-identical to the local run).
    spinup_years : years of spin-up (first forcing year repeated) before t_0; None = the
        model's ``spinup_years``. Done once per chunk (``initial_conditions``), then passed
        as ``state0`` to ``run``.
    chunk_members : members per chunk (one ``run`` call; larger chunks are faster per member
        but use more memory).
    progress : tqdm bars over chunks (completed futures with dask) and the anemoi stages.
    overwrite : replace an existing ``path``; otherwise an existing path is an error.
    load : ``"bulk"`` (default: block copy into anemoi's ``data`` after ``init``) or
        ``"anemoi"`` (anemoi's own field-by-field ``load`` task; ~3 ms per field, only for
        small datasets and tests).

    Returns
    -------
    pathlib.Path of the dataset. ``anemoi.datasets.open_dataset(path)`` gives
    ``data[dates, variables, ensembles, gridpoints]`` (float32): N dates, 71 variables
    (15 states, 9 forcing means, 6 clim_*, 22 parameters, 19 diagnostics incl. the
    screen-level T2m, q2m, RH2m; alphabetical,
    index them by name), M members, S sites. See the module docstring for the row
    convention; metadata (convention, units, design, parameter table) is under the zarr
    attribute ``ailand``. Read it with :func:`load_ensemble`.
    """
    t_start = time.time()
    path = Path(path).absolute()
    if path.suffix != ".zarr":
        raise ValueError(f"path must end in .zarr (anemoi datasets are zarr directories), got {str(path)!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if int(chunk_members) != chunk_members or chunk_members < 1:
        raise ValueError(f"chunk_members must be a positive integer, got {chunk_members!r}")
    if load not in ("bulk", "anemoi"):
        raise ValueError(f"load must be 'bulk' or 'anemoi', got {load!r}")
    chunk_members = int(chunk_members)
    space = model.space
    design = _validate_design(space, design)
    forcing, k, delta = _check_forcing(model, forcing, output_freq)
    spinup = model.spinup_years if spinup_years is None else int(spinup_years)
    if spinup < 0:
        raise ValueError(f"spinup_years must be >= 0, got {spinup_years}")

    n_members = design.sizes["member"]
    sites = [str(s) for s in forcing["site"].values]
    times = pd.DatetimeIndex(forcing["time"].values)
    n_dates = len(times) // k
    dates = times[0] + pd.to_timedelta(np.arange(n_dates) * delta, unit="s")
    lat = np.asarray(forcing["lat"].values, dtype=np.float64)
    lon = np.asarray(forcing["lon"].values, dtype=np.float64)
    meta = _variable_meta(space)

    work = Path(str(path) + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        # 1. source zarr: forcing means, climate fields and parameters now; model output per chunk
        src = work / "source.zarr"
        chunk_members = min(chunk_members, n_members)
        _write_source_template(src, dates, n_members, chunk_members, lat, lon, meta)
        import zarr

        group = zarr.open_group(str(src), mode="r+")
        fields = _static_fields(forcing, k)
        for name, arr in fields.items():
            arr = arr[:, None, :] if arr.ndim == 2 else arr[None, None, :]
            group[name][:] = np.broadcast_to(arr.astype(np.float32), (n_dates, n_members, len(sites)))
        xp = design.values
        for j, p in enumerate(space.names):
            group[p][:] = np.broadcast_to(xp[None, :, j, None].astype(np.float32), (n_dates, n_members, len(sites)))

        starts = list(range(0, n_members, chunk_members))
        chunks = [design.isel(member=slice(a, a + chunk_members)) for a in starts]
        model_forcing = forcing.drop_vars([v for v in forcing.data_vars if v not in FORCING_NAMES and "time" in forcing[v].dims])

        def write(a, res):
            b = a + next(iter(res.values())).shape[1]
            for name, arr in res.items():
                group[name][:, a:b, :] = arr

        t_run = time.time()
        if client is None:
            for a, d in _bar(list(zip(starts, chunks)), progress, "ensemble chunks", unit="chunk"):
                write(a, _run_chunk(model, model_forcing, d, output_freq, spinup))
        else:
            from dask.distributed import as_completed

            remote = copy.copy(model)
            if getattr(remote, "_compiled", None) is not None:
                remote._compiled = None  # compiled graphs do not pickle: workers compile their own
            f_forcing = client.scatter(model_forcing, broadcast=True)
            futures = [client.submit(_run_chunk, remote, f_forcing, d, output_freq, spinup, pure=False) for d in chunks]
            where = {fut.key: a for fut, a in zip(futures, starts)}
            for fut in _bar(as_completed(futures), progress, "ensemble chunks (dask)", total=len(futures), unit="chunk"):
                write(where[fut.key], fut.result())
                fut.release()
        run_seconds = time.time() - t_run

        # 2. anemoi: init (reads the source's first date), load, finalise (statistics, tendencies)
        from anemoi.utils.dates import frequency_to_string

        freq = frequency_to_string(pd.Timedelta(seconds=delta).to_pytimedelta())
        recipe = _fill_recipe(
            work / "recipe.yaml",
            description=json.dumps(f"ailand toy ecLand perturbed-parameter ensemble: {n_members} members, {len(sites)} sites"),
            start=dates[0].isoformat(),
            end=dates[-1].isoformat(),
            frequency=freq,
            source=str(src),
            members=n_members,
        )
        target = work / path.name
        with _anemoi_quiet(progress):
            from anemoi.datasets.create.tasks import run_task

            run_task("init", recipe=str(recipe), path=str(target))
            if load == "bulk":
                _bulk_load(target, src, progress)
            else:
                run_task("load", recipe=str(recipe), path=str(target))
            run_task("finalise", recipe=str(recipe), path=str(target))

        # 3. ailand metadata
        attrs = {
            "title": "ailand perturbed-parameter ensemble",
            "time_convention": TIME_CONVENTION,
            "output_freq": str(output_freq),
            "output_freq_seconds": float(delta),
            "dt_seconds": float(model.dt),
            "model": type(model).__name__,
            "model_dtype": str(getattr(model, "dtype", "")),
            "spinup_years": spinup,
            "sites": sites,
            "site_lat": lat.tolist(),
            "site_lon": lon.tolist(),
            "members": n_members,
            "chunk_members": chunk_members,
            "state_variables": list(STATE_VARIABLES),
            "forcing_variables": list(FORCING_NAMES),
            "climate_variables": ["clim_lai", *STATIC_FIELDS],
            "parameter_variables": list(space.names),
            "diagnostic_variables": [v for v, m in meta.items() if m["kind"] == "diagnostic"],
            "variables": meta,
            "design": {
                "parameters": list(space.names),
                "member": [int(m) for m in design["member"].values],
                "values": design.values.tolist(),
                "attrs": {str(a): str(b) for a, b in design.attrs.items()},
            },
            "parameter_space": json.loads(space.to_json()),
            "forcing": {
                "start": str(times[0]),
                "end": str(times[-1]),
                "step_seconds": float((times[1] - times[0]).total_seconds()),
                "attrs": {str(a): str(b) for a, b in forcing.attrs.items()},
            },
            "run_seconds": round(run_seconds, 2),
            "dask": client is not None,
        }
        zarr.open_group(str(target), mode="r+").attrs["ailand"] = attrs
        shutil.rmtree(src)

        # 4. atomic publish
        if path.exists():
            shutil.rmtree(path)  # overwrite=True (checked above)
        os.replace(target, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    LOG.info("wrote %s in %.1f s", path, time.time() - t_start)
    return path


# ======================================================================================
# reading it back
# ======================================================================================
@dataclass
class EnsembleData:
    """An ensemble dataset in memory, as the emulator reads it.

    Attributes
    ----------
    data : float32 ndarray ``(dates, variables, ensembles, gridpoints)`` = (N, V, M, S).
    variables : V names in anemoi order (alphabetical); ``index[name]`` gives the position.
    dates : datetime64 ``(N,)``: the row dates t_0 .. t_{N-1} (see the row convention).
    sites, lat, lon : ``(S,)`` site names, latitudes and longitudes [degrees].
    statistics : name -> {mean, stdev, minimum, maximum} over all dates, members and sites
        (of the whole dataset, also after :meth:`select`).
    tendency_statistics : state name -> {mean, stdev, minimum, maximum} of x(t+D) - x(t).
    design : DataArray ``(member, parameter)`` of the members' parameter values.
    space : the :class:`ParameterSpace` the design was drawn from.
    attrs : the ``ailand`` metadata (time convention, output_freq, units, groups ...).
    """

    data: np.ndarray
    variables: list[str]
    index: dict[str, int]
    dates: np.ndarray
    sites: list[str]
    lat: np.ndarray
    lon: np.ndarray
    statistics: dict[str, dict[str, float]]
    tendency_statistics: dict[str, dict[str, float]]
    design: xr.DataArray
    space: ParameterSpace
    attrs: dict = field(default_factory=dict)

    def __repr__(self):
        n, v, m, s = self.data.shape
        return (
            f"EnsembleData({n} dates {str(self.dates[0])[:16]} .. {str(self.dates[-1])[:16]} every "
            f"{self.attrs.get('output_freq')}, {v} variables, {m} members, {s} sites)"
        )

    @property
    def groups(self) -> dict[str, list[str]]:
        """Variables by kind: state, forcing, climate, parameter, diagnostic."""
        kinds = {}
        for name, m in self.attrs["variables"].items():
            kinds.setdefault(m["kind"], []).append(name)
        return kinds

    def units(self, name: str) -> str:
        return self.attrs["variables"][name]["units"]

    def __getitem__(self, name: str) -> np.ndarray:
        """``ens["swvl1"]`` -> float32 (dates, members, sites)."""
        return self.data[:, self.index[name]]

    def select(self, members: Sequence[int] | slice | None = None, sites: Sequence | slice | None = None) -> "EnsembleData":
        """A subset: ``members`` as positions (ints) or a slice; ``sites`` as names, positions or a slice."""
        m_idx = _positions(members, self.data.shape[2], None, "members")
        s_idx = _positions(sites, self.data.shape[3], self.sites, "sites")
        data = self.data[:, :, m_idx][..., s_idx]
        return replace(
            self,
            data=data,
            sites=[self.sites[i] for i in s_idx],
            lat=self.lat[s_idx],
            lon=self.lon[s_idx],
            design=self.design.isel(member=m_idx),
        )

    def to_xarray(self) -> xr.Dataset:
        """Dataset with one ``(time, member, site)`` variable per dataset variable (units,
        long_name, kind attrs), coordinates time, member, site, lat, lon, and the design."""
        dims = ("time", "member", "site")
        meta = self.attrs.get("variables", {})
        data = {
            v: xr.Variable(dims, self.data[:, i], {k: meta[v][k] for k in ("units", "long_name", "kind")} if v in meta else {})
            for v, i in self.index.items()
        }
        coords = {
            "time": ("time", self.dates),
            "member": ("member", self.design["member"].values),
            "site": ("site", np.array(self.sites, dtype=object)),
            "lat": ("site", self.lat, {"units": "degrees_north", "long_name": "latitude"}),
            "lon": ("site", self.lon, {"units": "degrees_east", "long_name": "longitude"}),
        }
        ds = xr.Dataset(data, coords=coords)
        ds["design"] = self.design.drop_vars("unit", errors="ignore")
        ds.attrs = {
            k: self.attrs[k] for k in ("title", "time_convention", "output_freq", "dt_seconds", "spinup_years") if k in self.attrs
        }
        return ds


def _positions(sel, n: int, names: list[str] | None, what: str) -> np.ndarray:
    if sel is None:
        return np.arange(n)
    if isinstance(sel, slice):
        return np.arange(n)[sel]
    if isinstance(sel, (str, int, np.integer)):
        sel = [sel]
    out = []
    for s in sel:
        if isinstance(s, str):
            if names is None or s not in names:
                raise ValueError(f"unknown {what[:-1]} {s!r}; valid: {names if names is not None else 'positions 0..' + str(n - 1)}")
            out.append(names.index(s))
        else:
            i = int(s)
            if not -n <= i < n:
                raise ValueError(f"{what} position {i} is out of range for {n} {what}")
            out.append(i % n)
    return np.array(out, dtype=int)


def load_ensemble(path: str | os.PathLike) -> EnsembleData:
    """Read an ensemble written by :func:`run_ensemble` (through ``anemoi.datasets.open_dataset``).

    Returns :class:`EnsembleData` with ``data`` float32 ``(dates, variables, ensembles,
    gridpoints)``, the variable index, dates, sites, statistics, tendency statistics of the
    state variables, the design and its :class:`ParameterSpace`.
    """
    from anemoi.datasets import open_dataset

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ensemble dataset {path} does not exist (write one with ailand.run_ensemble)")
    ds = open_dataset(str(path))
    import zarr

    attrs = dict(zarr.open_group(str(path), mode="r").attrs.get("ailand", {}))
    if not attrs:
        raise ValueError(f"{path} is an anemoi dataset but not an ailand ensemble (no 'ailand' metadata)")
    variables = list(ds.variables)
    index = dict(ds.name_to_index)
    data = np.asarray(ds[:], dtype=np.float32)
    st = ds.statistics
    statistics = {v: {k: float(st[k][i]) for k in ("mean", "stdev", "minimum", "maximum")} for v, i in index.items()}
    tst = ds.statistics_tendencies()
    tendency = {
        v: {k: float(tst[k][index[v]]) for k in ("mean", "stdev", "minimum", "maximum")}
        for v in attrs.get("state_variables", STATE_VARIABLES)
    }
    d = attrs["design"]
    space = ParameterSpace.from_json(attrs["parameter_space"]).subset(d["parameters"])
    design = space.to_dataarray(np.asarray(d["values"], dtype=float), attrs=d.get("attrs"))
    design = design.assign_coords(member=np.asarray(d["member"]))
    return EnsembleData(
        data=data,
        variables=variables,
        index=index,
        dates=np.asarray(ds.dates),
        sites=list(attrs["sites"]),
        lat=np.asarray(ds.latitudes, dtype=np.float64),
        lon=np.asarray(ds.longitudes, dtype=np.float64),
        statistics=statistics,
        tendency_statistics=tendency,
        design=design,
        space=space,
        attrs=attrs,
    )
