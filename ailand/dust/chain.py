"""The whole dust chain: world -> toy ecLand -> emission -> aerosol transport -> AOD.

* :func:`run_land` runs :class:`ailand.ToyEcLand` on the land cells of a world (each cell a
  site) from a climatological warm start and returns what the dust scheme reads
  (``swvl1``, ``snowc``, ``sd`` by default) over ``(time, site)``;
* :class:`DustChain` holds one land run and its prior emission (the expensive, member-
  independent part) and runs the aerosol model for any scaling factors, members and
  time window: the forward model an emission inversion calls once per cycle;
* :func:`run_chain` does it all once and returns a labelled ``(time, [member,] lat, lon)``
  Dataset.

Time convention (as :class:`ailand.ToyEcLand`): outputs are labelled with the *end* of
each forcing interval; loads and AOD are instantaneous there, fluxes are means over the
interval.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .aerosol import AerosolModel, AerosolResult, period_index
from .emission import DustEmission
from .world import validate_world, world_columns

__all__ = ["LAND_OUTPUTS", "climatological_state", "run_land", "DustChain", "run_chain"]

#: land-model outputs the dust scheme needs (swvl1, snowc) plus snow depth for maps
LAND_OUTPUTS = ("swvl1", "snowc", "sd")


def _land_model(model):
    if model is not None:
        return model
    from ..physics import ToyEcLand

    return ToyEcLand(dtype=torch.float64)


def climatological_state(world: xr.Dataset, model=None, params: Mapping | None = None) -> xr.Dataset:
    """A warm start for the land columns of ``world`` (Dataset over ``site``).

    Soil water in all layers between the wilting point and field capacity by the cell's
    annual precipitation (THETA_PWP below 100 mm, THETA_CAP above 800 mm): deserts start
    dry, as they are, instead of at field capacity; soil temperatures from the seasonal
    climatology at the first time (damped with depth); skin at the first air temperature;
    no snow, empty interception store.
    """
    model = _land_model(model)
    cols = world_columns(world)
    p = model.space.complete({k: float(v) for k, v in (params or {}).items()})
    pwp, cap = p["THETA_PWP"], p["THETA_CAP"]
    wet = np.clip((cols["precip_annual"].values - 100.0) / 700.0, 0.0, 1.0)
    theta = pwp + (cap - pwp) * wet
    doy = float(pd.Timestamp(cols["time"].values[0]).dayofyear)
    seasonal = cols["t_amp_seasonal"].values * np.cos(2 * np.pi * (doy - cols["t_peak_doy"].values) / 365.25)
    t_ann = 273.15 + cols["t_mean"].values
    tair0 = cols["Tair"].isel(time=0).values
    data = {f"swvl{k}": theta for k in range(1, 5)}
    data.update({f"stl{k + 1}": t_ann + damp * seasonal for k, damp in enumerate((0.9, 0.7, 0.4, 0.15))})
    zeros = np.zeros_like(theta)
    data.update(skt=tair0, sd=zeros, wsn=zeros, rsn=zeros + 100.0, asn=zeros + p["RALFMAXSN"],
                tsn=np.minimum(tair0, 273.16), wl=zeros)
    from ..physics.model import STATE_META

    ds = xr.Dataset({k: ("site", np.asarray(v, dtype=np.float64), dict(zip(("units", "long_name"), STATE_META[k])))
                     for k, v in data.items()}, coords={"site": cols["site"].values})
    ds.attrs["note"] = "climatological warm start (ailand.dust.climatological_state)"
    return ds


def run_land(
    world: xr.Dataset,
    model=None,
    params: Mapping | None = None,
    state0: str | xr.Dataset | None = "climatological",
    spinup_days: float = 0.0,
    outputs: Sequence[str] = LAND_OUTPUTS,
    progress: bool = False,
) -> xr.Dataset:
    """Run the toy ecLand on every land cell of ``world`` (one site per cell).

    Parameters
    ----------
    world : from :func:`ailand.dust.make_world`.
    model : a :class:`ailand.ToyEcLand` (default: float64, compiled automatically for long runs).
    params : one land parameter set ``{name: value}`` (defaults for the rest); no members.
    state0 : ``"climatological"`` (:func:`climatological_state`), a state Dataset over
        ``site`` (e.g. a previous run's ``isel(time=-1)`` with all state outputs), or
        None for the model's cold start at field capacity.
    spinup_days : run the first ``spinup_days`` of the forcing (repeated when the world is
        shorter) from ``state0`` first, and start from where it ends.
    outputs : land output names (default ``swvl1, snowc, sd``).

    Returns
    -------
    ToyEcLand output Dataset ``(time, site)`` at the forcing step, labelled with the end
    of each step, with ``lat``, ``lon``, ``ilat``, ``ilon`` along ``site``;
    :func:`ailand.dust.to_grid` maps it.
    """
    validate_world(world)
    model = _land_model(model)
    if params:
        arr = [k for k, v in params.items() if np.ndim(v) > 0 and np.size(v) > 1]
        if arr:
            raise ValueError(f"run_land takes one parameter set; {arr} have several values")
    params = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in (params or {}).items()} or None
    cols = world_columns(world)
    freq = pd.Timedelta(cols["time"].values[1] - cols["time"].values[0]) if cols.sizes["time"] > 1 else pd.Timedelta(hours=1)
    if isinstance(state0, str):
        if state0 != "climatological":
            raise ValueError(f"state0 must be 'climatological', a Dataset or None, not {state0!r}")
        state0 = climatological_state(world, model, params)
    if spinup_days and spinup_days > 0:
        n_spin = int(round(spinup_days * 86400.0 / freq.total_seconds()))
        n_t = cols.sizes["time"]
        from ..physics.model import STATE_NAMES

        done = 0
        while done < n_spin:
            n = min(n_t, n_spin - done)
            part = cols.isel(time=slice(0, n))
            run = model.run(part, params, state0=state0, output_freq=freq, outputs=list(STATE_NAMES),
                            spinup_years=0, progress=progress)
            state0 = run.isel(time=-1).drop_vars("time")
            done += n
    out = model.run(cols, params, state0=state0, output_freq=freq, outputs=list(outputs), spinup_years=0, progress=progress)
    out = out.assign_coords(ilat=("site", cols["ilat"].values), ilon=("site", cols["ilon"].values))
    out.attrs.update({"spinup_days": float(spinup_days), "world_seed": world.attrs.get("seed", "")})
    return out


class DustChain:
    """One land run and its prior emission, ready to run the aerosol model many times.

    Parameters
    ----------
    world : from :func:`ailand.dust.make_world`.
    land : a land run from :func:`run_land` (default: run it here with ``land_model``,
        ``land_params``, ``spinup_days``).
    dust_params, aerosol_params : values for some parameters of ``data/dust_parameters.csv``.
    dtype : torch dtype of the aerosol model (float64: the mass budget closes to rounding).

    Attributes
    ----------
    land : the land run (Dataset ``(time, site)``); prior : the prior emission Dataset
    ``(time, lat, lon)`` (:meth:`DustEmission.run`); emission : its tensor ``(T, ny, nx)``;
    aerosol : the :class:`AerosolModel`; meteo : its :class:`Meteo`; times : (T,) datetime64
    starts of the forcing steps; grid.
    """

    def __init__(self, world: xr.Dataset, land: xr.Dataset | None = None, *, land_model=None,
                 land_params: Mapping | None = None, spinup_days: float = 0.0, dust_params: Mapping | None = None,
                 aerosol_params: Mapping | None = None, dtype: torch.dtype = torch.float64, progress: bool = False):
        validate_world(world)
        self.world = world
        self.land = land if land is not None else run_land(world, land_model, land_params, spinup_days=spinup_days,
                                                           progress=progress)
        lai_scale = float((land_params or {}).get("LAI_SCALE", 1.0))
        self.emission_model = DustEmission(dust_params, dtype=dtype)
        self.prior = self.emission_model.run(world, self.land, lai_scale=lai_scale)
        self.aerosol = AerosolModel.from_world(world, params=aerosol_params, dtype=dtype)
        self.meteo = self.aerosol.meteo(world)
        self.emission = torch.as_tensor(self.prior["emission"].values, dtype=dtype)
        self.times = world["time"].values
        self.grid = self.aerosol.grid

    def __repr__(self):
        return f"DustChain({len(self.times)} steps, {self.grid!r})"

    def period_index(self, period_days: float = 3.0, start=None) -> np.ndarray:
        """Period of each forcing step (see :func:`ailand.dust.period_index`)."""
        return period_index(self.times, period_days, start)

    def run(self, scale=None, period=None, start: int = 0, stop: int | None = None, load0=None,
            outputs: Sequence[str] = ("aod",), output_every: int = 1, progress: bool = False) -> AerosolResult:
        """Aerosol run over forcing steps ``[start, stop)`` with scaling factors ``scale``.

        scale, period, load0, outputs, output_every : as :meth:`AerosolModel.run`; ``period``
        covers the whole world (T,) or just the window (stop - start,).
        """
        n_t = len(self.times)
        stop = n_t if stop is None else int(stop)
        if not 0 <= start < stop <= n_t:
            raise ValueError(f"need 0 <= start < stop <= {n_t}, got start={start}, stop={stop}")
        met = self.meteo.slice(start, stop)
        if period is not None:
            period = np.asarray(period)
            if period.shape == (n_t,):
                period = period[start:stop]
        return self.aerosol.run(self.emission[start:stop], met, scale, period, load0, outputs, output_every, progress)

    def to_dataset(self, result: AerosolResult, start: int = 0, output_every: int = 1) -> xr.Dataset:
        """``result.to_xarray()`` plus the prior emission (averaged like the outputs),
        ``lsm``, ``dust_source`` and ``cell_area``."""
        ds = result.to_xarray()
        n_out = ds.sizes["time"]
        prior = self.prior["emission"].values[start:start + n_out * output_every]
        prior = prior.reshape(n_out, output_every, *prior.shape[1:]).mean(axis=1)
        ds["emission_prior"] = xr.Variable(("time", "lat", "lon"), prior, {
            "units": "kg m-2 s-1", "long_name": "prior (unscaled) dust emission, mean over the interval ending at time"})
        for k in ("lsm", "dust_source", "cell_area"):
            ds[k] = self.world[k]
        ds.attrs.update({
            "title": "ailand dust chain: toy ecLand -> Kok et al. 2014 emission -> aerosol transport -> AOD 550 nm",
            "world_seed": self.world.attrs.get("seed", ""),
            **{k: v for k, v in self.prior.attrs.items() if k.startswith("param_")},
        })
        return ds


def run_chain(
    world: xr.Dataset,
    scale=None,
    *,
    period_days: float | None = None,
    period=None,
    land: xr.Dataset | None = None,
    land_model=None,
    land_params: Mapping | None = None,
    spinup_days: float = 0.0,
    dust_params: Mapping | None = None,
    aerosol_params: Mapping | None = None,
    load0=None,
    outputs: Sequence[str] = ("aod", "dust_load", "emission"),
    output_every: int = 1,
    progress: bool = False,
) -> xr.Dataset:
    """World -> land -> emission -> aerosol -> AOD for given emission scaling factors.

    Parameters
    ----------
    world : from :func:`ailand.dust.make_world`.
    scale : multiplicative emission scaling factors >= 0 (None = 1): a number, ``(ny, nx)``,
        ``(P, ny, nx)``, ``(M, P, ny, nx)`` or a DataArray over (member, period, lat, lon).
    period_days : length of a scaling period [days] (periods counted from the first time);
        or ``period`` (T,) ints directly.
    land : reuse a land run (:func:`run_land`); else run with ``land_model``,
        ``land_params``, ``spinup_days``.
    dust_params, aerosol_params : parameter values (``data/dust_parameters.csv``).
    load0 : initial dust load [kg m-2], default 0.
    outputs, output_every : as :meth:`AerosolModel.run`.

    Returns
    -------
    Dataset with ``aod`` [-], ``dust_load`` [kg m-2], ``emission`` [kg m-2 s-1] (scaled) over
    ``(time, [member,] lat, lon)`` (``member`` when ``scale`` has one), ``emission_prior``
    ``(time, lat, lon)``, the mass budget (``emitted``, ``dry_deposited``,
    ``wet_deposited``, ``outflow``, ``load_initial``, ``load_final``, ``residual`` [kg]),
    ``final_load``, and ``lsm``, ``dust_source``, ``cell_area``.
    """
    chain = DustChain(world, land, land_model=land_model, land_params=land_params, spinup_days=spinup_days,
                      dust_params=dust_params, aerosol_params=aerosol_params, progress=progress)
    if period is None and period_days is not None:
        period = chain.period_index(period_days)
    res = chain.run(scale, period, load0=load0, outputs=outputs, output_every=output_every, progress=progress)
    return chain.to_dataset(res, output_every=output_every)
