"""The emission analysis as a labelled product (what part 2 trains its network on).

:func:`emission_analysis` turns an :class:`~.smoother.InversionResult` into one CF-style
Dataset:

* daily ``(time, lat, lon)``, ``time`` = start of the UTC day (``time_bnds`` gives the day):
  ``scaling_factor`` (the analysed factor of the day's period; the mean over the day's steps
  when a period boundary falls inside a day), ``log_scaling_factor_std`` (posterior spread of
  the log factor), ``emission_prior`` and ``emission_analysis`` = factor x prior
  [kg m-2 s-1] (daily means), with ``scaling_factor_truth`` / ``emission_truth`` in a twin;
* per period ``(period, lat, lon)``: ``scaling_factor_period`` (smoothed), its filter value
  ``scaling_factor_filter_period``, ``log_scaling_factor_std_period`` and the prior spread;
* monthly ``(month, lat, lon)``: ``monthly_scaling_factor`` = sum_t f_t E_t / sum_t E_t over the
  month's steps (prior-emission-weighted, the factor that debiases the scheme month by month;
  1 where the prior does not emit that month), ``monthly_emission_prior``,
  ``monthly_emission_analysis`` [kg m-2 s-1];
* statics ``lsm``, ``dust_source``, ``cell_area`` and ``control_mask`` (the analysed cells).

Outside the control cells the factor is 1 and its spread 0 (the prior emission there is 0
or not analysed). :func:`write_netcdf` writes it with zlib compression and CF time encoding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["emission_analysis", "monthly_weighted_factors", "write_netcdf", "hourly_factors"]


def _groups(times: np.ndarray, freq: str):
    """Contiguous groups of the steps by UTC day (``"D"``) or month (``"MS"``): (labels, starts)."""
    t = pd.DatetimeIndex(times)
    key = t.normalize() if freq == "D" else t.to_period("M").to_timestamp()
    key = key.values
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    return key[starts], starts


def hourly_factors(result, kind: str = "smoothed", start: int = 0, stop: int | None = None) -> np.ndarray:
    """``(stop - start, ny, nx)`` factor of every forcing step (the factor of its period)."""
    F = result.scaling_factors(kind)
    per = result.period[start:stop]
    return F[per]


def _reduce(values_fn, times, starts_labels, chunk_steps: int = 24 * 31):
    """Sums over the groups of ``values_fn(a, b) -> (b - a, ...)`` in chunks of steps (memory)."""
    labels, starts = starts_labels
    T = len(times)
    ends = np.r_[starts[1:], T]
    out = None
    g0 = 0
    while g0 < len(starts):
        g1 = g0
        while g1 < len(starts) and ends[g1] - starts[g0] <= chunk_steps:
            g1 += 1
        g1 = max(g1, g0 + 1)
        a, b = starts[g0], ends[g1 - 1]
        v = values_fn(a, b)
        s = np.add.reduceat(v, starts[g0:g1] - a, axis=0)
        out = s if out is None else np.concatenate([out, s])
        g0 = g1
    return out, ends - starts


def monthly_weighted_factors(result, emission: np.ndarray, kind: str = "smoothed") -> xr.Dataset:
    """Monthly prior-emission-weighted scaling factors ``(month, lat, lon)``.

    ``emission`` : ``(T, ny, nx)`` prior emission [kg m-2 s-1] of every step (the chain's).
    Returns ``monthly_scaling_factor`` (1 where the month's prior emission is 0),
    ``monthly_emission_prior`` and ``monthly_emission_analysis`` (means over the month's steps).
    """
    times = result.times
    grp = _groups(times, "MS")
    num, n = _reduce(lambda a, b: emission[a:b] * hourly_factors(result, kind, a, b), times, grp)
    den, _ = _reduce(lambda a, b: emission[a:b], times, grp)
    fac = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    coords = {"month": ("month", grp[0], {"long_name": "first day of the month"}),
              "lat": ("lat", result.lat, {"units": "degrees_north"}), "lon": ("lon", result.lon, {"units": "degrees_east"})}
    return xr.Dataset({
        "monthly_scaling_factor": (("month", "lat", "lon"), fac, {
            "units": "1", "long_name": "monthly prior-emission-weighted analysed scaling factor sum(f E) / sum(E) "
                                       "(1 where the prior does not emit in the month)"}),
        "monthly_emission_prior": (("month", "lat", "lon"), den / n[:, None, None], {
            "units": "kg m-2 s-1", "long_name": "prior dust emission, mean over the month"}),
        "monthly_emission_analysis": (("month", "lat", "lon"), num / n[:, None, None], {
            "units": "kg m-2 s-1", "long_name": "analysed dust emission, mean over the month"}),
        "monthly_steps": ("month", n, {"units": "1", "long_name": "forcing steps of the month inside the run"}),
    }, coords=coords)


def emission_analysis(result, chain, truth: xr.DataArray | None = None, kind: str = "smoothed") -> xr.Dataset:
    """The emission analysis product (see the module docstring).

    Parameters
    ----------
    result : :class:`~.smoother.InversionResult`.
    chain : the :class:`ailand.dust.DustChain` it was made with (prior emission, statics).
    truth : the twin's true factors ``(period, lat, lon)`` (adds ``*_truth`` variables).
    kind : ``"smoothed"`` (default) or ``"filter"`` factors as the analysis.
    """
    E = chain.emission.numpy()
    times = result.times
    ny, nx = result.grid_shape
    day = _groups(times, "D")
    f_sum, n_day = _reduce(lambda a, b: hourly_factors(result, kind, a, b), times, day)
    e_sum, _ = _reduce(lambda a, b: E[a:b], times, day)
    ea_sum, _ = _reduce(lambda a, b: E[a:b] * hourly_factors(result, kind, a, b), times, day)
    spread = result.log_factors(kind, "std")
    s_sum, _ = _reduce(lambda a, b: spread[result.period[a:b]], times, day)
    nd = n_day[:, None, None]
    days = day[0]
    bnds = np.stack([days, days + np.timedelta64(1, "D")], 1)
    lat_c = ("lat", result.lat, {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"})
    lon_c = ("lon", result.lon, {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"})
    per_of_day = result.period[day[1]]
    ds = xr.Dataset(coords={
        "time": ("time", days, {"long_name": "start of the UTC day", "bounds": "time_bnds", "standard_name": "time"}),
        "lat": lat_c, "lon": lon_c,
        "period": ("period", np.arange(result.n_periods), {"long_name": "scaling-factor period index"}),
        "period_start": ("period", result.period_starts, {"long_name": "start of the period"}),
        "period_of_day": ("time", per_of_day, {"long_name": "period of the day's first step"}),
    })
    ds["time_bnds"] = (("time", "nv"), bnds)
    ds["scaling_factor"] = (("time", "lat", "lon"), f_sum / nd, {
        "units": "1", "long_name": f"analysed ({kind}) dust emission scaling factor exp(mean log f), daily "
                                   "(1 outside the control cells)"})
    ds["log_scaling_factor_std"] = (("time", "lat", "lon"), s_sum / nd, {
        "units": "1", "long_name": "posterior ensemble standard deviation of the log scaling factor, daily"})
    ds["emission_prior"] = (("time", "lat", "lon"), e_sum / nd, {
        "units": "kg m-2 s-1", "long_name": "prior dust emission (Kok et al. 2014 scheme), daily mean"})
    ds["emission_analysis"] = (("time", "lat", "lon"), ea_sum / nd, {
        "units": "kg m-2 s-1", "long_name": "analysed dust emission = scaling factor x prior emission, daily mean"})
    # per period
    ds["scaling_factor_period"] = (("period", "lat", "lon"), result.scaling_factors(kind), {
        "units": "1", "long_name": f"analysed ({kind}) scaling factor of each period"})
    ds["scaling_factor_filter_period"] = (("period", "lat", "lon"), result.scaling_factors("filter"), {
        "units": "1", "long_name": "filter (no smoothing) scaling factor of each period"})
    ds["log_scaling_factor_std_period"] = (("period", "lat", "lon"), spread, {
        "units": "1", "long_name": f"posterior ({kind}) standard deviation of the log scaling factor"})
    ds["log_scaling_factor_std_prior"] = (("period", "lat", "lon"), result.log_factors("background", "std"), {
        "units": "1", "long_name": "background (prior ensemble) standard deviation of the log scaling factor"})
    mask = np.zeros((ny, nx), dtype=np.int8)
    mask[result.control_j, result.control_i] = 1
    ds["control_mask"] = (("lat", "lon"), mask, {"units": "1", "long_name": "1 where the scaling factor is analysed "
                                                                            "(land, dust source, emitting in the run)"})
    for k in ("lsm", "dust_source", "cell_area"):
        v = chain.world[k]
        ds[k] = (("lat", "lon"), v.values, dict(v.attrs))
    ds = ds.merge(monthly_weighted_factors(result, E, kind))
    if truth is not None:
        tv = np.asarray(getattr(truth, "values", truth), dtype=float)
        if tv.shape != (result.n_periods, ny, nx):
            raise ValueError(f"truth must be (period, lat, lon) = {(result.n_periods, ny, nx)}, got {tv.shape}")
        t_sum, _ = _reduce(lambda a, b: tv[result.period[a:b]], times, day)
        et_sum, _ = _reduce(lambda a, b: E[a:b] * tv[result.period[a:b]], times, day)
        ds["scaling_factor_truth"] = (("time", "lat", "lon"), t_sum / nd, {
            "units": "1", "long_name": "hidden true scaling factor of the twin experiment, daily"})
        ds["emission_truth"] = (("time", "lat", "lon"), et_sum / nd, {
            "units": "kg m-2 s-1", "long_name": "true dust emission of the twin experiment, daily mean"})
        ds["scaling_factor_truth_period"] = (("period", "lat", "lon"), tv, {
            "units": "1", "long_name": "hidden true scaling factor of each period"})
    cfg = result.config
    ds.attrs = {
        "title": "ailand dust emission analysis: LETKF-smoother scaling factors of the prior dust emission",
        "Conventions": "CF-1.8",
        "source": "calibration.dust_inversion (ensemble Kalman smoother of log emission scaling factors from AOD 550 nm)",
        "analysis_kind": kind,
        "scaling_factor_definition": "analysed emission = scaling_factor x prior emission; factor = exp(ensemble mean of "
                                     "log f), the median of the log-normal analysis ensemble",
        "world_seed": chain.world.attrs.get("seed", ""),
        "period_days": cfg.period_days,
        **cfg.as_attrs(),
        "n_dropped_members": len(result.dropped),
        "wall_time_s": round(float(result.wall_s), 2),
    }
    return ds


def write_netcdf(ds: xr.Dataset, path) -> None:
    """Write a product Dataset with zlib-compressed float variables and CF time encoding."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = {}
    for k, v in ds.data_vars.items():
        if np.issubdtype(v.dtype, np.floating) and v.ndim >= 2:
            enc[k] = {"zlib": True, "complevel": 4}
        if np.issubdtype(v.dtype, np.datetime64):
            enc[k] = {"units": "hours since 1970-01-01", "calendar": "proleptic_gregorian"}
    for c in ("time", "month", "period_start"):
        if c in ds.coords and np.issubdtype(ds[c].dtype, np.datetime64):
            enc[c] = {"units": "hours since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "float64"}
    ds.to_netcdf(path, encoding=enc)
