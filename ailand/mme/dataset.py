"""Multi-model ensemble datasets: labelled, validated, generic over what the members are.

One ``xarray.Dataset`` holds everything (NetCDF or zarr on disk):

* member forecasts, one variable per quantity (``O3``, ``NO2`` ... or ``swvl1`` for a land
  multi-model ensemble): dims ``(member, lead_time, time, lat, lon)``, attrs ``units``,
  ``mme_role = "members"``;
* the target analysis of each: ``<var>_analysis`` ``(time, lat, lon)``, the same units,
  ``mme_role = "analysis"``;
* optional predictors (forecast meteorology, static fields): ``(time, lat, lon)``,
  ``(lead_time, time, lat, lon)`` or ``(lat, lon)``, ``mme_role = "predictor"``.

``time`` is the VALID time (UTC), ``lead_time`` the lead day (integer, units ``day``;
0 = the first day of the run), ``member`` names the member models.

Validation (:func:`validate_mme`, run by :class:`MMEData` and :func:`open_mme`) fails with a
message naming the variable, the problem and the fix. What is masked instead, and how:

* **a missing member** (a late model): its field for a (lead_time, time) is all NaN. It is
  allowed and handled everywhere: the median and mean skip it, the weighted ensemble
  renormalises the weights of the members present, the DL ensemble sees it as missing (it
  was trained with members dropped at random). All members missing -> NaN forecast.
* **partial NaN inside a member field** (some grid points): an error with
  ``nan_policy="raise"`` (default); with ``nan_policy="mask"`` the whole field counts as a
  missing member.
* **NaN in the analysis**: those points are left out of training losses, weight fits and
  scores (a point analysis gap); an analysis that is all NaN is an error.
* NaN in a predictor, or an infinite value anywhere: an error.

Units: concentrations in ``ug m-3`` (aliases ``µg m-3``, ``ug/m3``, ``ug m**-3`` ...);
other mass-concentration units (``kg m-3``, ``mg m-3``, ``ng m-3``) are converted when
building a dataset (:func:`mme_dataset`); anything else (e.g. ``ppb``, which needs
temperature and pressure) is an error. Members and analysis of one variable must agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "MMEData", "open_mme", "mme_dataset", "validate_mme", "TimeSplit", "split_by_time",
    "ANALYSIS_SUFFIX", "CONC_UNITS", "DIMS",
]

ANALYSIS_SUFFIX = "_analysis"
CONC_UNITS = "ug m-3"
DIMS = ("member", "lead_time", "time", "lat", "lon")
STANDARD_NAMES = {
    "O3": "mass_concentration_of_ozone_in_air",
    "NO2": "mass_concentration_of_nitrogen_dioxide_in_air",
    "SO2": "mass_concentration_of_sulfur_dioxide_in_air",
    "PM10": "mass_concentration_of_pm10_ambient_aerosol_particles_in_air",
}

_UG_ALIASES = {"ug m-3", "ug m**-3", "ug/m3", "ug m^-3", "ug.m-3", "ugm-3", "ug/m^3", "microgram m-3",
               "micrograms m-3", "microgram/m3"}
#: mass-concentration units -> factor to ug m-3
_MASS_UNITS = {"kg m-3": 1e9, "g m-3": 1e6, "mg m-3": 1e3, "ng m-3": 1e-3}


def canonical_units(units: str | None) -> tuple[str | None, float]:
    """``units`` -> (canonical string, factor to it). Mass concentrations map to ``ug m-3``
    with their factor; other units come back unchanged with factor 1."""
    if units is None:
        return None, 1.0
    u = " ".join(str(units).replace("μ", "u").replace("µ", "u").split())
    if u in _UG_ALIASES:
        return CONC_UNITS, 1.0
    for k, f in _MASS_UNITS.items():
        if u in (k, k.replace(" m-3", "/m3"), k.replace("-3", "**-3")):
            return CONC_UNITS, f
    return u, 1.0


def _grid_of(da: xr.DataArray, what: str):
    for c in ("lat", "lon"):
        if c not in da.dims:
            raise ValueError(f"{what}: no '{c}' dimension (dims {tuple(da.dims)}); rename the grid dims to lat, lon")
    return np.asarray(da["lat"].values, float), np.asarray(da["lon"].values, float)


def _same_grid(ref, grid, what: str, ref_what: str, atol: float = 1e-6) -> None:
    for k, (a, b) in enumerate(zip(ref, grid)):
        name = ("lat", "lon")[k]
        if a.shape != b.shape:
            raise ValueError(
                f"{what}: grid differs from {ref_what} ({name} has {b.size} points, not {a.size}); "
                f"regrid it to the common grid first (e.g. da.interp(lat=..., lon=...))")
        if not np.allclose(a, b, atol=atol, rtol=0):
            raise ValueError(
                f"{what}: grid differs from {ref_what} (max |d{name}| = {np.abs(a - b).max():.4g} deg); "
                f"regrid it to the common grid first (e.g. da.interp(lat=..., lon=...))")


def _lead_days(values, what: str) -> np.ndarray:
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.timedelta64):
        days = v / np.timedelta64(1, "D")
        if not np.allclose(days, np.round(days)):
            raise ValueError(f"{what}: lead_time must be whole days, got {[f'{h:g} h' for h in v / np.timedelta64(1, 'h')]}")
        return np.round(days).astype(np.int64)
    if not np.issubdtype(v.dtype, np.number) or not np.allclose(v, np.round(v)):
        raise ValueError(f"{what}: lead_time must be integer lead days (or timedelta), got {list(v)}")
    return np.round(v).astype(np.int64)


def _as_members_da(var: str, value, convert_units: bool) -> xr.DataArray:
    """One variable's members: a DataArray with a member dim, or ``{member: DataArray}``."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{var}: no members given")
        parts, ref, ref_name, units = [], None, None, None
        for name, da in value.items():
            what = f"{var} member {name!r}"
            if not isinstance(da, xr.DataArray):
                raise ValueError(f"{what}: expected an xarray.DataArray, got {type(da).__name__}")
            grid = _grid_of(da, what)
            if ref is None:
                ref, ref_name = grid, f"{var} member {name!r}"
            else:
                _same_grid(ref, grid, what, ref_name)
            u, f = _units_of(da, what, convert_units)
            if units is None:
                units = u
            parts.append((da * f if f != 1.0 else da).assign_attrs(units=u).expand_dims(member=[str(name)]))
        for da in parts[1:]:
            if not np.array_equal(da["time"].values, parts[0]["time"].values):
                raise ValueError(
                    f"{var} member {str(da['member'].values[0])!r}: time axis differs from member "
                    f"{str(parts[0]['member'].values[0])!r}; select common valid times first")
        da = xr.concat([p.drop_vars([c for c in ("lat", "lon") if c in p.coords]) for p in parts], dim="member",
                       join="exact", coords="minimal", compat="override")
        da = da.assign_coords(lat=("lat", ref[0]), lon=("lon", ref[1])).assign_attrs(units=units)
        return da
    if not isinstance(value, xr.DataArray):
        raise ValueError(f"{var}: expected a DataArray with a 'member' dim or a dict member -> DataArray, got {type(value).__name__}")
    u, f = _units_of(value, var, convert_units)
    return (value * f if f != 1.0 else value).assign_attrs(units=u)


def _units_of(da: xr.DataArray, what: str, convert: bool) -> tuple[str, float]:
    raw = da.attrs.get("units")
    if raw is None:
        raise ValueError(f"{what}: no 'units' attribute; set it, e.g. da.attrs['units'] = '{CONC_UNITS}'")
    u, f = canonical_units(raw)
    if f != 1.0 and not convert:
        raise ValueError(f"{what}: units {raw!r}, expected {CONC_UNITS!r}; pass convert_units=True or convert first")
    return u, f


def mme_dataset(
    members: Mapping[str, object],
    analysis: Mapping[str, xr.DataArray],
    predictors: Mapping[str, xr.DataArray] | None = None,
    convert_units: bool = True,
    align: str = "exact",
    nan_policy: str = "raise",
    attrs: dict | None = None,
) -> xr.Dataset:
    """Build a validated ensemble Dataset from parts (member files read one by one).

    Parameters
    ----------
    members : ``{var: DataArray (member, lead_time, time, lat, lon)}`` or
        ``{var: {member_name: DataArray (lead_time, time, lat, lon)}}``, with ``units``.
    analysis : ``{var: DataArray (time, lat, lon)}`` in units convertible to the members'.
    predictors : ``{name: DataArray}`` with dims ``(time, lat, lon)``,
        ``(lead_time, time, lat, lon)`` or ``(lat, lon)`` and ``units``.
    convert_units : convert ``kg m-3``, ``mg m-3``, ``ng m-3`` to ``ug m-3``.
    align : ``"exact"`` (every time axis must equal the members'; else an error that says
        which times differ) or ``"inner"`` (keep the valid times all parts share).
    nan_policy : see :func:`validate_mme`.

    Every part must be on the same ``lat, lon`` grid (an error names the part and the
    difference; regrid first). The same members must be given for every variable.
    """
    if align not in ("exact", "inner"):
        raise ValueError(f"align must be 'exact' or 'inner', not {align!r}")
    if not members:
        raise ValueError("members is empty: give {variable: DataArray or {member: DataArray}}")
    mems = {str(v): _as_members_da(str(v), val, convert_units) for v, val in members.items()}
    first = next(iter(mems))
    ref = _grid_of(mems[first], f"{first} members")
    ref_members = list(map(str, mems[first]["member"].values)) if "member" in mems[first].dims else None
    for v, da in mems.items():
        _same_grid(ref, _grid_of(da, f"{v} members"), f"{v} members", f"{first} members")
        if "member" not in da.dims:
            raise ValueError(f"{v}: members have no 'member' dim (dims {tuple(da.dims)})")
        names = list(map(str, da["member"].values))
        if names != ref_members:
            missing = sorted(set(ref_members) - set(names))
            extra = sorted(set(names) - set(ref_members))
            if sorted(names) == sorted(ref_members):
                mems[v] = da.sel(member=ref_members)
            else:
                raise ValueError(
                    f"{v}: members {names} differ from {first}'s {ref_members} (missing {missing}, extra {extra}); "
                    "give every variable the same members (a member absent for one variable can be given as an "
                    "all-NaN field: it then counts as a missing member)")
    if set(analysis) != set(mems):
        raise ValueError(f"analysis variables {sorted(analysis)} must match member variables {sorted(mems)}")
    ana = {}
    for v, da in analysis.items():
        what = f"{v} analysis"
        if not isinstance(da, xr.DataArray):
            raise ValueError(f"{what}: expected an xarray.DataArray, got {type(da).__name__}")
        _same_grid(ref, _grid_of(da, what), what, f"{first} members")
        u, f = _units_of(da, what, convert_units)
        ana[v] = (da * f if f != 1.0 else da).assign_attrs(units=u)
    preds = {}
    for p, da in (predictors or {}).items():
        what = f"predictor {p}"
        if not isinstance(da, xr.DataArray):
            raise ValueError(f"{what}: expected an xarray.DataArray, got {type(da).__name__}")
        _same_grid(ref, _grid_of(da, what), what, f"{first} members")
        if "units" not in da.attrs:
            raise ValueError(f"{what}: no 'units' attribute; set it (e.g. 'K', 'm s-1')")
        preds[p] = da
    # time axes
    t_ref = mems[first]["time"].values
    parts = [(f"{v} members", da) for v, da in mems.items()] + [(f"{v} analysis", da) for v, da in ana.items()]
    parts += [(f"predictor {p}", da) for p, da in preds.items() if "time" in da.dims]
    if align == "inner":
        common = t_ref
        for _, da in parts:
            common = np.intersect1d(common, da["time"].values)
        if common.size == 0:
            raise ValueError("align='inner': the parts share no valid time")
        mems = {v: da.sel(time=common) for v, da in mems.items()}
        ana = {v: da.sel(time=common) for v, da in ana.items()}
        preds = {p: (da.sel(time=common) if "time" in da.dims else da) for p, da in preds.items()}
    else:
        for what, da in parts:
            t = da["time"].values
            if not np.array_equal(t, t_ref):
                lacking = np.setdiff1d(t_ref, t)
                extra = np.setdiff1d(t, t_ref)
                raise ValueError(
                    f"{what}: time axis differs from the {first} members' ({t.size} times vs {t_ref.size}; "
                    f"{lacking.size} member times missing{' from ' + str(lacking[0])[:16] if lacking.size else ''}, "
                    f"{extra.size} extra{' from ' + str(extra[0])[:16] if extra.size else ''}); select the same "
                    "valid times first, or pass align='inner' to keep the common ones")
    ds = xr.Dataset()
    for v, da in mems.items():
        ds[v] = da.assign_attrs(mme_role="members")
        ds[v + ANALYSIS_SUFFIX] = ana[v].assign_attrs(mme_role="analysis", variable=v)
    for p, da in preds.items():
        ds[p] = da.assign_attrs(mme_role="predictor")
    ds = ds.assign_coords(lat=("lat", ref[0], {"units": "degrees_north", "standard_name": "latitude"}),
                          lon=("lon", ref[1], {"units": "degrees_east", "standard_name": "longitude"}))
    ds.attrs.update(attrs or {})
    return validate_mme(ds, nan_policy=nan_policy)


def _roles(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """(member variables, predictors) by ``mme_role``, or by dims when roles are absent; in
    the order recorded in the ``mme_order`` attribute when there is one (zarr sorts names)."""
    members, predictors = [], []
    order = [str(n) for n in ds.data_vars]
    try:
        saved = [n for n in json.loads(ds.attrs.get("mme_order", "[]")) if n in ds.data_vars]
        order = saved + [n for n in order if n not in saved]
    except (TypeError, ValueError):
        pass
    for name in order:
        da = ds[name]
        role = da.attrs.get("mme_role")
        if role == "members" or (role is None and "member" in da.dims):
            members.append(str(name))
        elif role == "predictor" or (role is None and not str(name).endswith(ANALYSIS_SUFFIX)):
            predictors.append(str(name))
    return members, predictors


def validate_mme(ds: xr.Dataset, nan_policy: str = "raise") -> xr.Dataset:
    """Check an ensemble Dataset and return it in canonical form (dims ordered as
    :data:`DIMS`, float32 data, integer ``lead_time`` days, ``ug m-3`` for mass
    concentrations, loaded into memory).

    Errors name the variable, the problem and the fix. ``nan_policy``: ``"raise"`` -> a
    member field with some (not all) NaN points is an error; ``"mask"`` -> such a field is
    set all-NaN (a missing member). See the module docstring for what is masked.
    """
    if nan_policy not in ("raise", "mask"):
        raise ValueError(f"nan_policy must be 'raise' or 'mask', not {nan_policy!r}")
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"expected an xarray.Dataset, got {type(ds).__name__}")
    members, predictors = _roles(ds)
    if not members:
        raise ValueError(
            f"no member variables (dims {DIMS}) among {list(ds.data_vars)}; a member variable needs a 'member' dim")
    for c in ("member", "lead_time", "time", "lat", "lon"):
        if c not in ds.dims:
            raise ValueError(f"missing dimension '{c}' (dims {dict(ds.sizes)}); members need dims {DIMS}")
    ds = ds.copy()
    names = [str(m) for m in ds["member"].values]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique, got {names}")
    ds = ds.assign_coords(member=("member", np.array(names, dtype=object), ds["member"].attrs))
    lead_attrs = dict(ds["lead_time"].attrs)
    lead_attrs.setdefault("long_name", "forecast lead day")
    lead_attrs["units"] = "day"
    ds = ds.assign_coords(lead_time=("lead_time", _lead_days(ds["lead_time"].values, "lead_time"), lead_attrs))
    if len(np.unique(ds["lead_time"].values)) != ds.sizes["lead_time"]:
        raise ValueError(f"lead_time values must be unique, got {list(ds['lead_time'].values)}")
    t = ds["time"].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise ValueError(f"time must be datetime64 valid times (UTC), got dtype {t.dtype}; decode times when opening")
    if t.size > 1 and not (np.diff(t) > np.timedelta64(0, "ns")).all():
        raise ValueError("time must be strictly increasing (sort it and drop duplicates: ds.sortby('time').drop_duplicates('time'))")
    for c in ("lat", "lon"):
        v = ds[c].values
        if v.size > 1 and not ((np.diff(v) > 0).all() or (np.diff(v) < 0).all()):
            raise ValueError(f"{c} must be monotonic")
    for v in members:
        da = ds[v]
        if set(da.dims) != set(DIMS):
            raise ValueError(f"{v}: member forecasts need dims {DIMS}, got {tuple(da.dims)}")
        a = f"{v}{ANALYSIS_SUFFIX}"
        if a not in ds:
            raise ValueError(f"{v}: no analysis '{a}' (time, lat, lon) in the dataset; add the target analysis")
        ana = ds[a]
        if set(ana.dims) != {"time", "lat", "lon"}:
            raise ValueError(f"{a}: the analysis needs dims (time, lat, lon), got {tuple(ana.dims)}")
        um, fm = canonical_units(da.attrs.get("units"))
        ua, fa = canonical_units(ana.attrs.get("units"))
        if um is None or ua is None:
            raise ValueError(f"{v}: no 'units' attribute on the {'members' if um is None else 'analysis'}; set it")
        if um != ua:
            raise ValueError(
                f"{v}: members in {da.attrs['units']!r} but analysis in {ana.attrs['units']!r}; convert one of "
                f"them (concentrations in {CONC_UNITS!r}; ppb needs temperature and pressure)")
        mdata = np.asarray(da.transpose(*DIMS).values, dtype=np.float32)
        adata = np.asarray(ana.transpose("time", "lat", "lon").values, dtype=np.float32)
        if fm != 1.0:
            mdata = mdata * np.float32(fm)
        if fa != 1.0:
            adata = adata * np.float32(fa)
        if np.isinf(mdata).any():
            raise ValueError(f"{v}: member forecasts contain infinite values")
        if np.isinf(adata).any():
            raise ValueError(f"{a}: the analysis contains infinite values")
        nan = np.isnan(mdata).reshape(*mdata.shape[:3], -1)
        partial = nan.any(-1) & ~nan.all(-1)
        if partial.any():
            mi, li, ti = np.argwhere(partial)[0]
            msg = (f"{v}: {int(partial.sum())} member field(s) are partly NaN (first: member "
                   f"{names[mi]!r}, lead day {int(ds['lead_time'].values[li])}, time {str(t[ti])[:16]}, "
                   f"{int(nan[mi, li, ti].sum())} of {nan.shape[-1]} points)")
            if nan_policy == "raise":
                raise ValueError(msg + "; fill them, or pass nan_policy='mask' to treat such fields as a missing member")
            mdata = mdata.copy()  # never write into the caller's arrays
            mdata[partial] = np.nan
        if np.isnan(adata).all():
            raise ValueError(f"{a}: the analysis is all NaN")
        ds[v] = xr.DataArray(mdata, dims=DIMS, attrs={**da.attrs, "units": um, "mme_role": "members"})
        ds[a] = xr.DataArray(adata, dims=("time", "lat", "lon"), attrs={**ana.attrs, "units": ua, "mme_role": "analysis", "variable": v})
    for p in predictors:
        da = ds[p]
        if not set(da.dims) <= {"lead_time", "time", "lat", "lon"} or not {"lat", "lon"} <= set(da.dims):
            raise ValueError(f"predictor {p}: dims must be (time, lat, lon), (lead_time, time, lat, lon) or (lat, lon), got {tuple(da.dims)}")
        if "units" not in da.attrs:
            raise ValueError(f"predictor {p}: no 'units' attribute; set it")
        vals = da.values
        if not np.isfinite(vals).all():
            raise ValueError(f"predictor {p}: {int((~np.isfinite(vals)).sum())} NaN or infinite values; fill them (predictors are not masked)")
        order = [d for d in ("lead_time", "time", "lat", "lon") if d in da.dims]
        ds[p] = da.transpose(*order).astype(np.float32).assign_attrs(mme_role="predictor")
    return ds


class MMEData:
    """A validated multi-model ensemble (see the module docstring for the layout).

    ``MMEData(ds)`` validates ``ds`` (:func:`validate_mme`) and gives array access:

    - :meth:`members_array` ``(member, lead_time, time, lat, lon)`` float32,
    - :meth:`analysis_array` ``(time, lat, lon)``,
    - :meth:`predictor_array` ``(lead_time, time, lat, lon)`` (broadcast over missing dims),
    - :meth:`available` ``(member, lead_time, time)`` bool (False = missing member).
    """

    def __init__(self, ds: xr.Dataset, nan_policy: str = "raise", _validated: bool = False):
        self.ds = ds if _validated else validate_mme(ds, nan_policy=nan_policy)
        self.variables, self.predictors = _roles(self.ds)
        self._cache: dict = {}

    # ---- labels
    @property
    def members(self) -> list[str]:
        return [str(m) for m in self.ds["member"].values]

    @property
    def lead_times(self) -> np.ndarray:
        return np.asarray(self.ds["lead_time"].values, dtype=np.int64)

    @property
    def time(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.ds["time"].values)

    @property
    def lat(self) -> np.ndarray:
        return np.asarray(self.ds["lat"].values, float)

    @property
    def lon(self) -> np.ndarray:
        return np.asarray(self.ds["lon"].values, float)

    @property
    def units(self) -> dict[str, str]:
        return {v: self.ds[v].attrs["units"] for v in self.variables}

    @property
    def shape(self) -> dict[str, int]:
        return dict(self.ds[self.variables[0]].sizes)

    def __repr__(self):
        s = self.shape
        return (f"MMEData({len(self.variables)} variables {self.variables}, {s['member']} members, lead days "
                f"{[int(x) for x in self.lead_times]}, {s['time']} times {str(self.time[0])[:16]} .. {str(self.time[-1])[:16]}, "
                f"grid {s['lat']} x {s['lon']}, predictors {self.predictors})")

    # ---- arrays
    def members_array(self, var: str) -> np.ndarray:
        """``(member, lead_time, time, lat, lon)`` float32 [units of ``var``]; NaN = missing."""
        self._check_var(var)
        return self.ds[var].values

    def analysis_array(self, var: str) -> np.ndarray:
        """``(time, lat, lon)`` float32 target analysis; NaN points are masked out."""
        self._check_var(var)
        return self.ds[var + ANALYSIS_SUFFIX].values

    def predictor_array(self, name: str) -> np.ndarray:
        """``(lead_time, time, lat, lon)`` float32 (broadcast when the predictor lacks a dim)."""
        if name not in self.predictors:
            raise ValueError(f"no predictor {name!r}; this dataset has {self.predictors}")
        key = ("pred", name)
        if key not in self._cache:
            da = self.ds[name]
            s = self.shape
            self._cache[key] = np.ascontiguousarray(np.broadcast_to(
                da.expand_dims([d for d in ("lead_time", "time") if d not in da.dims]).transpose("lead_time", "time", "lat", "lon").values,
                (s["lead_time"], s["time"], s["lat"], s["lon"])))
        return self._cache[key]

    def available(self, var: str | None = None) -> np.ndarray:
        """``(member, lead_time, time)`` True where the member field is present (for ``var``,
        or for every variable when ``None``)."""
        key = ("avail", var)
        if key not in self._cache:
            vs = self.variables if var is None else [var]
            ok = None
            for v in vs:
                a = ~np.isnan(self.members_array(v)[..., 0, 0])  # validated: a field is all-NaN or not at all
                ok = a if ok is None else ok & a
            self._cache[key] = ok
        return self._cache[key]

    def _check_var(self, var):
        if var not in self.variables:
            raise ValueError(f"no variable {var!r}; this dataset has {self.variables}")

    # ---- selections
    def isel_time(self, idx) -> "MMEData":
        """The ensemble at time indices ``idx``."""
        return MMEData(self.ds.isel(time=np.asarray(idx)), _validated=True)

    def sel(self, **indexers) -> "MMEData":
        """``xarray``-style label selection (``time=slice(...)``, ``lead_time=[0, 1]``, ``member=[...]``)."""
        ds = self.ds.sel(**indexers)
        for k in indexers:
            if k in ds.dims and ds.sizes[k] == 0:
                raise ValueError(f"selection {k}={indexers[k]!r} is empty")
        return MMEData(ds, _validated=True)

    def with_missing(self, members, times=None) -> "MMEData":
        """A copy in which ``members`` (names) are missing (all-NaN fields) at ``times``
        (all times when ``None``): a late member, as operations would see it."""
        members = [members] if isinstance(members, str) else list(members)
        unknown = [m for m in members if m not in self.members]
        if unknown:
            raise ValueError(f"unknown members {unknown}; this dataset has {self.members}")
        ds = self.ds.copy(deep=True)
        tsel = slice(None) if times is None else np.isin(ds["time"].values, np.asarray(times, dtype="datetime64[ns]"))
        for v in self.variables:
            arr = ds[v].values
            for m in members:
                arr[self.members.index(m), :, tsel] = np.nan
        return MMEData(ds, _validated=True)

    def summary(self) -> str:
        """Sizes, missing members, analysis gaps (text)."""
        lines = [repr(self)]
        av = self.available()
        for m, name in enumerate(self.members):
            n = int((~av[m]).sum())
            if n:
                lines.append(f"  member {name}: missing in {n} of {av[m].size} (lead, time) fields")
        for v in self.variables:
            frac = float(np.isnan(self.analysis_array(v)).mean())
            if frac:
                lines.append(f"  {v} analysis: {100 * frac:.2f} % of points NaN (masked)")
        return "\n".join(lines)

    # ---- I/O
    def save(self, path) -> Path:
        """Write NetCDF (``.nc``) or zarr (``.zarr``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = self.ds.copy()
        ds = ds.assign_coords(member=ds["member"].astype(str))
        ds.attrs["mme_order"] = json.dumps(list(ds.data_vars))
        if path.suffix == ".zarr":
            enc = {v: {"chunks": _zarr_chunks(ds[v])} for v in ds.data_vars}
            ds.to_zarr(path, mode="w", encoding=enc, consolidated=True)
        else:
            enc = {v: {"zlib": True, "complevel": 1} for v in ds.data_vars}
            ds.to_netcdf(path, encoding=enc)
        return path


def _zarr_chunks(da):
    return tuple(min(s, 256) if d == "time" else s for d, s in zip(da.dims, da.shape))


def open_mme(path, nan_policy: str = "raise") -> MMEData:
    """Read and validate an ensemble written by :meth:`MMEData.save` (or any NetCDF/zarr in
    the layout of the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist (make one with 'ailand mme prepare')")
    if path.suffix == ".zarr" or path.is_dir():
        ds = xr.open_zarr(path, consolidated=None)
    else:
        ds = xr.open_dataset(path)
    with ds:
        ds = ds.load()
    return MMEData(ds, nan_policy=nan_policy)


@dataclass(frozen=True)
class TimeSplit:
    """Train / validation / test time indices (int arrays into ``time``), disjoint, with
    ``gap_days`` unused days between blocks so that no day-to-day persistence of the
    analysis leaks across the split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    description: str = ""

    def to_dict(self, times) -> dict:
        t = pd.DatetimeIndex(times)
        return {k: [str(x) for x in t[getattr(self, k)].strftime("%Y-%m-%dT%H:%M")] for k in ("train", "val", "test")}

    @classmethod
    def from_dict(cls, d: dict, times) -> "TimeSplit":
        t = pd.DatetimeIndex(times)
        out = {}
        for k in ("train", "val", "test"):
            want = pd.DatetimeIndex(d[k])
            out[k] = np.flatnonzero(t.isin(want))
        return cls(**out, description=d.get("description", ""))


def split_by_time(times, cycle_days: int = 30, val_days: int = 3, test_days: int = 3, gap_days: int = 1,
                  scheme: str = "blocks") -> TimeSplit:
    """Split valid ``times`` into train / validation / test by whole days, without leakage.

    ``scheme="blocks"`` (default): repeating cycles of ``cycle_days`` days (30 by default,
    so the test days rotate through the week and every season is in every set):
    ``[train | gap | val | gap | test | gap]``. ``scheme="chronological"``: the last
    ``test_days`` days are the test set, the ``val_days`` before them validation, the rest
    training, with gaps between. A forecast (valid time, lead day) belongs to the set of
    its valid day. Returns a :class:`TimeSplit`.
    """
    t = pd.DatetimeIndex(times)
    day = ((t.normalize() - t.normalize()[0]) / pd.Timedelta(days=1)).astype(int).values
    if scheme == "blocks":
        n_train = cycle_days - val_days - test_days - 3 * gap_days
        if n_train < 1 or val_days < 1 or test_days < 1:
            raise ValueError(f"cycle_days={cycle_days} leaves no training days with val_days={val_days}, "
                             f"test_days={test_days}, gap_days={gap_days}")
        pos = day % cycle_days
        v0 = n_train + gap_days
        s0 = v0 + val_days + gap_days
        train = np.flatnonzero(pos < n_train)
        val = np.flatnonzero((pos >= v0) & (pos < v0 + val_days))
        test = np.flatnonzero((pos >= s0) & (pos < s0 + test_days))
        desc = (f"blocks of {cycle_days} days: {n_train} train, {gap_days} gap, {val_days} val, {gap_days} gap, "
                f"{test_days} test, {gap_days} gap")
    elif scheme == "chronological":
        last = day.max()
        s0 = last - test_days + 1
        v0 = s0 - gap_days - val_days
        train = np.flatnonzero(day < v0 - gap_days)
        val = np.flatnonzero((day >= v0) & (day < v0 + val_days))
        test = np.flatnonzero(day >= s0)
        desc = f"chronological: test = last {test_days} days, val = {val_days} days before (gaps {gap_days} d)"
    else:
        raise ValueError(f"scheme must be 'blocks' or 'chronological', not {scheme!r}")
    for name, idx in (("train", train), ("val", val), ("test", test)):
        if idx.size == 0:
            raise ValueError(f"split_by_time: the {name} set is empty ({len(np.unique(day))} days; {desc}); "
                             "use a longer period or smaller blocks")
    return TimeSplit(train, val, test, desc)
