"""Toy dust aerosol model: column load advected on a lat-lon grid, deposited, seen as AOD.

State: the dust column load L [kg m-2] of each cell, for a batch of ensemble members
``(M, ny, nx)``. One forcing step ``dt`` is split into ``n`` equal sub-steps (``n`` from the
winds, so that no cell can lose more than ``courant_max`` of its mass by advection in a
sub-step); each sub-step applies, in this order:

1. **emission**: m += s(period) E A h, with E [kg m-2 s-1] the prior emission, s >= 0
   the multiplicative scaling factor of the member for the step's period, A the cell
   area [m2] and h the sub-step [s];
2. **advection** (flux form, first-order upwind, unsplit, exactly mass conserving):
   face fluxes F = h l_face (max(u, 0) L_upwind-left + min(u, 0) L_upwind-right) with the
   transport wind u = WIND_FACTOR x the forcing's 10 m wind averaged to the face
   + STEERING x a climatological free-tropospheric zonal flow (:func:`steering_wind`:
   mid-latitude westerlies, the summer African Easterly Jet that carries Saharan dust
   to the Atlantic), and
   face lengths l_face from the sphere (meridian arcs R dphi; parallel arcs
   R cos(phi_face) dlambda); open boundaries: outflow leaves with the boundary cell's load,
   inflow is clean air (L = 0 outside);
3. **deposition**: m *= exp(-(k_dry + k_wet) h) with k_dry = 1 / TAU_DRY and
   k_wet = WET_SCAV x (Rainf + Snowf); the removed mass is split dry : wet as k_dry : k_wet.

AOD at 550 nm = MEE x L. Budget per member, in kg, accumulated in the model's dtype
(float64 by default): emitted, dry and wet deposited, outflow through the open boundary,
initial and final load; ``residual = emitted - deposited - outflow - (final - initial)``
is zero to rounding.

Everything is torch, vectorised over ``(member, lat, lon)``, and differentiable with
respect to the emission, the scaling factors and the initial load (no in-place updates
of tensors in the graph). Parameters: group ``aerosol`` of ``data/dust_parameters.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..params import ParameterSpace
from .emission import dust_parameter_space
from .grid import LatLonGrid

__all__ = ["AerosolModel", "AerosolResult", "Meteo", "period_index", "as_scale", "steering_wind"]

SECONDS_PER_DAY = 86400.0
OUTPUT_META = {
    "aod": ("-", "dust aerosol optical depth at 550 nm (instantaneous at time)"),
    "dust_load": ("kg m-2", "dust column load (instantaneous at time)"),
    "emission": ("kg m-2 s-1", "scaled dust emission, mean over the interval ending at time"),
    "dry_deposition": ("kg m-2 s-1", "dry deposition flux, mean over the interval ending at time"),
    "wet_deposition": ("kg m-2 s-1", "wet deposition flux, mean over the interval ending at time"),
}
BUDGET_META = {
    "emitted": ("kg", "dust mass emitted over the run"),
    "dry_deposited": ("kg", "dust mass removed by dry deposition"),
    "wet_deposited": ("kg", "dust mass removed by wet deposition"),
    "outflow": ("kg", "dust mass that left through the open boundaries"),
    "load_initial": ("kg", "dust mass in the domain at the start"),
    "load_final": ("kg", "dust mass in the domain at the end"),
    "residual": ("kg", "emitted - deposited - outflow - (final - initial): zero to rounding"),
}


def steering_wind(lat, times) -> np.ndarray:
    """Climatological free-tropospheric zonal wind [m s-1] that steers dust plumes, (T, ny).

    u = 8 sigmoid((lat - lat_j) / 4) - 12 s exp(-((lat - 16) / 6)^2), with the edge of the
    westerlies lat_j = 32 + 6 (1 - w) moving north in summer (w = (1 + cos(2 pi (doy - 15)
    / 365.25)) / 2, 1 in mid-January) and s = ((1 + cos(2 pi (doy - 220) / 365.25)) / 2)^2
    the season of the African Easterly Jet (peak early August). lat [degrees] (ny,);
    times datetime64 (T,).
    """
    lat = np.asarray(lat, dtype=np.float64)[None, :]
    t = pd.DatetimeIndex(np.asarray(times))
    doy = (t.dayofyear.to_numpy(dtype=np.float64) + t.hour.to_numpy() / 24.0)[:, None]
    winter = 0.5 * (1.0 + np.cos(2 * np.pi * (doy - 15.0) / 365.25))
    aej = (0.5 * (1.0 + np.cos(2 * np.pi * (doy - 220.0) / 365.25))) ** 2
    lat_j = 32.0 + 6.0 * (1.0 - winter)
    return 8.0 * 0.5 * (1.0 + np.tanh(0.5 * (lat - lat_j) / 4.0)) - 12.0 * aej * np.exp(-(((lat - 16.0) / 6.0) ** 2))


@dataclass
class Meteo:
    """Meteorology the aerosol model reads, on the grid.

    wind_e, wind_n : (T, ny, nx) 10 m wind components [m s-1] (the forcing's Wind_E/Wind_N);
    precip : (T, ny, nx) total precipitation Rainf + Snowf [kg m-2 s-1]; dt : step [s];
    times : (T,) datetime64 starts of the steps (forcing convention: row k covers [t_k, t_k + dt));
    steering : (T, ny, 1) zonal steering wind [m s-1] (:func:`steering_wind`), or None.
    """

    wind_e: torch.Tensor
    wind_n: torch.Tensor
    precip: torch.Tensor
    dt: float
    times: np.ndarray | None = None
    steering: torch.Tensor | None = None

    def slice(self, start: int, stop: int) -> "Meteo":
        """The steps ``[start, stop)``."""
        cut = lambda a: None if a is None else a[start:stop]  # noqa: E731
        return Meteo(self.wind_e[start:stop], self.wind_n[start:stop], self.precip[start:stop], self.dt,
                     cut(self.times), cut(self.steering))

    def __len__(self):
        return self.wind_e.shape[0]


@dataclass
class AerosolResult:
    """Output of :meth:`AerosolModel.run`.

    fields : name -> tensor ``(T_out, M, ny, nx)`` (see :data:`OUTPUT_META`);
    budget : name -> tensor ``(M,)`` in kg (see :data:`BUDGET_META`);
    final_load : ``(M, ny, nx)`` [kg m-2] (pass it as ``load0`` to continue);
    times : (T_out,) datetime64 end of the output intervals, or None; grid; members: bool
    (the scaling factors had a member dim).
    """

    fields: dict
    budget: dict
    final_load: torch.Tensor
    grid: LatLonGrid
    times: np.ndarray | None = None
    members: bool = True
    attrs: dict = field(default_factory=dict)

    def to_xarray(self) -> xr.Dataset:
        """Labelled Dataset: fields ``(time, [member,] lat, lon)``, budget ``([member])``,
        ``final_load``; units and long names on every variable."""
        g = self.grid
        n_out = next(iter(self.fields.values())).shape[0] if self.fields else 0
        times = self.times if self.times is not None else np.arange(n_out)
        coords = {"time": times, "lat": ("lat", g.lat, {"units": "degrees_north"}), "lon": ("lon", g.lon, {"units": "degrees_east"})}
        m = self.final_load.shape[0]
        if self.members:
            coords["member"] = np.arange(m)
        data = {}
        for k, v in self.fields.items():
            a = v.detach().cpu().numpy()
            dims = ("time", "member", "lat", "lon")
            if not self.members:
                a, dims = a[:, 0], ("time", "lat", "lon")
            data[k] = xr.Variable(dims, a, dict(zip(("units", "long_name"), OUTPUT_META[k])))
        for k, v in self.budget.items():
            a = v.detach().cpu().numpy()
            data[k] = xr.Variable(("member",), a, dict(zip(("units", "long_name"), BUDGET_META[k]))) if self.members else \
                xr.Variable((), a[0], dict(zip(("units", "long_name"), BUDGET_META[k])))
        fl = self.final_load.detach().cpu().numpy()
        data["final_load"] = xr.Variable(("member", "lat", "lon") if self.members else ("lat", "lon"),
                                         fl if self.members else fl[0],
                                         {"units": "kg m-2", "long_name": "dust column load at the end of the run"})
        ds = xr.Dataset(data, coords=coords)
        ds.attrs = dict(self.attrs)
        return ds


def period_index(times, period_days: float = 3.0, start=None) -> np.ndarray:
    """Period number of each time: floor((t - start) / period_days), start = first time.

    times : datetime64 array (T,) (e.g. the world's forcing times). Returns int64 (T,).
    """
    t = pd.DatetimeIndex(np.asarray(times))
    if period_days <= 0:
        raise ValueError(f"period_days must be > 0, got {period_days}")
    t0 = pd.Timestamp(start) if start is not None else t[0]
    k = np.floor(((t - t0) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64) / period_days).astype(np.int64)
    if (k < 0).any():
        raise ValueError(f"times before the start {t0} give negative periods")
    return k


def as_scale(scale, grid: LatLonGrid, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, bool]:
    """Scaling factors in any accepted form -> ``((M, P, ny, nx) tensor, has_member_dim)``.

    Accepted: None (all ones); a number; an array/tensor ``(ny, nx)``, ``(P, ny, nx)`` or
    ``(M, P, ny, nx)``; a DataArray whose dims are a subset of ``(member, period, lat,
    lon)`` (any order). Raises ValueError for NaN/inf, negative factors or a wrong shape.
    """
    ny, nx = grid.shape
    if scale is None:
        return torch.ones((1, 1, 1, 1), dtype=dtype, device=device), False
    has_member = False
    if isinstance(scale, xr.DataArray):
        extra = [d for d in scale.dims if d not in ("member", "period", "lat", "lon")]
        if extra:
            raise ValueError(f"scale DataArray has unknown dims {extra}; allowed: member, period, lat, lon")
        has_member = "member" in scale.dims
        for d in ("member", "period", "lat", "lon"):
            if d not in scale.dims:
                scale = scale.expand_dims({d: 1})
        scale = scale.transpose("member", "period", "lat", "lon")
        if scale.sizes["lat"] not in (1, ny) or scale.sizes["lon"] not in (1, nx):
            raise ValueError(f"scale has lat x lon = {scale.sizes['lat']} x {scale.sizes['lon']}, the grid {ny} x {nx}")
        s = torch.as_tensor(np.asarray(scale.values, dtype=np.float64), dtype=dtype, device=device)
    else:
        s = scale if torch.is_tensor(scale) else torch.as_tensor(np.asarray(scale, dtype=np.float64))
        s = s.to(dtype=dtype, device=device)
        if s.ndim == 0:
            s = s.reshape(1, 1, 1, 1)
        elif s.ndim == 2:
            s = s[None, None]
        elif s.ndim == 3:
            s = s[None]
        elif s.ndim == 4:
            has_member = True
        else:
            raise ValueError(f"scale must be a number or have shape (ny, nx), (P, ny, nx) or (M, P, ny, nx), got {tuple(s.shape)}")
        if s.ndim == 4 and tuple(s.shape[-2:]) not in ((ny, nx), (1, 1)):
            raise ValueError(f"scale ends with {tuple(s.shape[-2:])}, expected the grid shape {(ny, nx)}")
    with torch.no_grad():
        if not torch.isfinite(s).all():
            raise ValueError("scaling factors have NaN/inf values; they must be finite and >= 0")
        if (s < 0).any():
            idx = tuple(int(i) for i in torch.nonzero(s < 0)[0])
            raise ValueError(
                f"scaling factors must be >= 0 (they multiply the emission); got {float(s.min()):.4g} "
                f"at (member, period, lat, lon) index {idx}; clip them or use a log-transform"
            )
    return s, has_member


class AerosolModel:
    """Column dust transport, deposition and AOD on a :class:`LatLonGrid` (see the module docstring).

    Parameters
    ----------
    grid : the grid (``AerosolModel.from_world(world)`` reads it from a world).
    params : values for some ``aerosol`` parameters (``TAU_DRY`` [d], ``WET_SCAV``
        [m2 kg-1], ``MEE`` [m2 kg-1], ``WIND_FACTOR`` [-], ``STEERING`` [-]); the rest default.
    dtype : torch dtype (float64 default: the budget closes to ~1e-15 relative).
    courant_max : largest fraction of a cell's mass advection may remove in one sub-step (<= 1).
    """

    def __init__(self, grid: LatLonGrid, params: Mapping | None = None, space: ParameterSpace | None = None,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu", courant_max: float = 0.9):
        if not 0 < courant_max <= 1:
            raise ValueError(f"courant_max must be in (0, 1], got {courant_max}")
        self.grid = grid
        self.space = space or dust_parameter_space()
        self.dtype, self.device = dtype, torch.device(device)
        self.courant_max = float(courant_max)
        names = [n for n in self.space.names if self.space.table.loc[n, "group"] == "aerosol"]
        self.names = names
        values = dict(params or {})
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(f"unknown aerosol parameter(s) {unknown}; valid: {names}")
        self.space.check({k: float(v) for k, v in values.items()}, what="aerosol parameters")
        self.params = {k: float(values.get(k, self.space.defaults[k])) for k in names}
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self._area = t(grid.area)
        self._dy = float(grid.dy)
        self._dxf = t(grid.dx_faces)[:, None]  # (ny + 1, 1)

    @classmethod
    def from_world(cls, world: xr.Dataset, **kwargs) -> "AerosolModel":
        """An aerosol model on the grid of ``world`` (see :func:`ailand.dust.make_world`)."""
        return cls(LatLonGrid.from_dataset(world), **kwargs)

    def __repr__(self):
        p = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"AerosolModel({self.grid!r}, {p})"

    # ------------------------------------------------------------------ inputs
    def meteo(self, world: xr.Dataset) -> Meteo:
        """The winds and precipitation of a world as tensors (validated)."""
        from .world import validate_world

        validate_world(world)
        g = LatLonGrid.from_dataset(world)
        if g.shape != self.grid.shape or not (np.allclose(g.lat, self.grid.lat) and np.allclose(g.lon, self.grid.lon)):
            raise ValueError(f"world grid {g} differs from the model grid {self.grid}")
        times = world["time"].values
        dt = float((times[1] - times[0]) / np.timedelta64(1, "s")) if len(times) > 1 else 3600.0
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype, device=self.device)  # noqa: E731
        order = ("time", "lat", "lon")
        return Meteo(
            wind_e=t(world["Wind_E"].transpose(*order).values), wind_n=t(world["Wind_N"].transpose(*order).values),
            precip=t((world["Rainf"] + world["Snowf"]).transpose(*order).values), dt=dt, times=times,
            steering=t(steering_wind(world["lat"].values, times + np.timedelta64(int(dt / 2), "s"))[..., None]),
        )

    def face_winds(self, meteo: Meteo) -> tuple[torch.Tensor, torch.Tensor]:
        """Transport winds on the faces: ``u`` (T, ny, nx + 1) on west/east faces and ``v``
        (T, ny + 1, nx) on south/north faces [m s-1]: WIND_FACTOR x the mean of the two
        neighbouring cells (boundary faces take the boundary cell's wind), plus STEERING x
        the zonal steering wind on west/east faces."""
        f = self.params["WIND_FACTOR"]
        ue, vn = meteo.wind_e, meteo.wind_n
        if meteo.steering is not None:
            ue = ue + (self.params["STEERING"] / f) * meteo.steering
        u = torch.cat([ue[..., :1], 0.5 * (ue[..., 1:] + ue[..., :-1]), ue[..., -1:]], dim=-1)
        v = torch.cat([vn[..., :1, :], 0.5 * (vn[..., 1:, :] + vn[..., :-1, :]), vn[..., -1:, :]], dim=-2)
        return f * u, f * v

    def substeps(self, u: torch.Tensor, v: torch.Tensor, dt: float) -> np.ndarray:
        """Sub-steps per step (T,) so that the outgoing advective fraction of every cell stays
        below ``courant_max``: n = ceil(max over cells of dt (dy (u_e+ + u_w-) + l_n v_n+ + l_s v_s-) / A / courant_max)."""
        with torch.no_grad():
            out = self._dy * (u[..., 1:].clamp(min=0) - u[..., :-1].clamp(max=0))
            out = out + self._dxf[1:] * v[..., 1:, :].clamp(min=0) - self._dxf[:-1] * v[..., :-1, :].clamp(max=0)
            c = (out * dt / self._area).amax(dim=(-2, -1))
        return np.maximum(1, np.ceil(c.cpu().numpy() / self.courant_max - 1e-12)).astype(np.int64)

    # -------------------------------------------------------------------- run
    def run(
        self,
        emission: torch.Tensor,
        meteo: Meteo,
        scale=None,
        period: Sequence[int] | np.ndarray | None = None,
        load0: torch.Tensor | None = None,
        outputs: Sequence[str] = ("aod",),
        output_every: int = 1,
        progress: bool = False,
    ) -> AerosolResult:
        """Integrate the load over the steps of ``meteo``.

        Parameters
        ----------
        emission : ``(T, ny, nx)`` prior emission [kg m-2 s-1] per unit cell area (mean over
            each step; e.g. :meth:`ailand.dust.DustEmission.run` ``emission`` values).
        meteo : from :meth:`meteo` (T steps of ``dt`` seconds).
        scale : multiplicative emission scaling factors >= 0: None, a number, ``(ny, nx)``,
            ``(P, ny, nx)``, ``(M, P, ny, nx)`` or a DataArray (see :func:`as_scale`). M
            members run at once; step k uses period ``period[k]``.
        period : ``(T,)`` ints in ``[0, P)`` (e.g. :func:`period_index`); default all 0.
        load0 : initial load [kg m-2] ``(ny, nx)`` or ``(M, ny, nx)``; default 0.
        outputs : any of ``aod``, ``dust_load`` (instantaneous at the end of the step),
            ``emission``, ``dry_deposition``, ``wet_deposition`` (means over the step).
        output_every : record every this many steps (fluxes averaged over them).

        Returns an :class:`AerosolResult` (``.to_xarray()`` labels it).
        """
        bad = [o for o in outputs if o not in OUTPUT_META]
        if bad:
            raise ValueError(f"unknown output(s) {bad}; available: {list(OUTPUT_META)}")
        n_t = len(meteo)
        ny, nx = self.grid.shape
        e = emission if torch.is_tensor(emission) else torch.as_tensor(np.asarray(emission, dtype=np.float64))
        e = e.to(dtype=self.dtype, device=self.device)
        if tuple(e.shape) != (n_t, ny, nx):
            raise ValueError(f"emission must have shape (T, ny, nx) = {(n_t, ny, nx)}, got {tuple(e.shape)}")
        with torch.no_grad():
            if not torch.isfinite(e).all():
                raise ValueError("emission has NaN/inf values")
            if (e < 0).any():
                raise ValueError(f"emission must be >= 0, got min {float(e.min()):.4g} kg m-2 s-1")
        s, has_member = as_scale(scale, self.grid, self.dtype, self.device)
        n_p = s.shape[1]
        if period is None:
            if n_p != 1:
                raise ValueError(f"scale has {n_p} periods: give period (T,) mapping steps to periods (see period_index)")
            per = np.zeros(n_t, dtype=np.int64)
        else:
            per = np.asarray(period)
            if per.shape != (n_t,) or not np.issubdtype(per.dtype, np.integer):
                raise ValueError(f"period must be {n_t} integers (one per step), got shape {per.shape} dtype {per.dtype}")
            if per.min() < 0 or per.max() >= n_p:
                raise ValueError(f"period values must lie in [0, {n_p}) (scale has {n_p} periods), got {per.min()}..{per.max()}")
        if not (isinstance(output_every, (int, np.integer)) and output_every >= 1):
            raise ValueError(f"output_every must be a positive integer, got {output_every!r}")
        m = s.shape[0]
        area = self._area
        if load0 is None:
            load = torch.zeros((m, ny, nx), dtype=self.dtype, device=self.device)
        else:
            load = load0 if torch.is_tensor(load0) else torch.as_tensor(np.asarray(load0, dtype=np.float64))
            load = load.to(dtype=self.dtype, device=self.device)
            with torch.no_grad():
                if not torch.isfinite(load).all() or (load < 0).any():
                    raise ValueError("load0 must be finite and >= 0 [kg m-2]")
            load = load.expand(m, ny, nx) if load.ndim < 3 or load.shape[0] == 1 else load
            if tuple(load.shape) != (m, ny, nx):
                raise ValueError(f"load0 must be (ny, nx) or (M, ny, nx) = {(m, ny, nx)}, got {tuple(load.shape)}")

        u_all, v_all = self.face_winds(meteo)
        n_sub = self.substeps(u_all, v_all, meteo.dt)
        k_dry = 1.0 / (self.params["TAU_DRY"] * SECONDS_PER_DAY)
        wet_scav = self.params["WET_SCAV"]
        mee = self.params["MEE"]
        zero = torch.zeros(m, dtype=self.dtype, device=self.device)
        budget = {k: zero.clone() for k in ("emitted", "dry_deposited", "wet_deposited", "outflow")}
        budget["load_initial"] = (load * area).sum(dim=(-2, -1))
        rec = {k: [] for k in outputs}
        acc = {k: None for k in outputs if k in ("emission", "dry_deposition", "wet_deposition")}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_t, unit="step", desc="aerosol", mininterval=0.5)
        pad_x = torch.nn.functional.pad
        for k in range(n_t):
            ns = int(n_sub[k])
            h = meteo.dt / ns
            e_k = e[k] * s[:, int(per[k])]  # (M, ny, nx), or broadcastable
            e_k = e_k.expand(m, ny, nx)
            src = e_k * area * h  # kg per sub-step
            u, v = u_all[k], v_all[k]
            u_pos, u_neg = u.clamp(min=0.0) * (h * self._dy), u.clamp(max=0.0) * (h * self._dy)
            v_pos, v_neg = v.clamp(min=0.0) * (h * self._dxf), v.clamp(max=0.0) * (h * self._dxf)
            loss = k_dry + wet_scav * meteo.precip[k]
            keep = torch.exp(-loss * h)
            dry_share = k_dry / loss
            dep_dry_step = torch.zeros_like(load) if "dry_deposition" in acc else None
            dep_wet_step = torch.zeros_like(load) if "wet_deposition" in acc else None
            for _ in range(ns):
                mass = load * area + src
                conc = mass / area
                cx = pad_x(conc, (1, 1))  # clean air outside
                fx = u_pos * cx[..., :-1] + u_neg * cx[..., 1:]  # (M, ny, nx + 1), kg eastward
                cy = pad_x(conc, (0, 0, 1, 1))
                fy = v_pos * cy[..., :-1, :] + v_neg * cy[..., 1:, :]  # (M, ny + 1, nx), kg northward
                mass = mass + fx[..., :-1] - fx[..., 1:] + fy[..., :-1, :] - fy[..., 1:, :]
                out = fx[..., -1].sum(-1) - fx[..., 0].sum(-1) + fy[..., -1, :].sum(-1) - fy[..., 0, :].sum(-1)
                kept = mass * keep
                dep = mass - kept
                dep_dry = dep * dry_share
                budget["emitted"] = budget["emitted"] + src.sum(dim=(-2, -1))
                budget["outflow"] = budget["outflow"] + out
                budget["dry_deposited"] = budget["dry_deposited"] + dep_dry.sum(dim=(-2, -1))
                budget["wet_deposited"] = budget["wet_deposited"] + (dep - dep_dry).sum(dim=(-2, -1))
                if dep_dry_step is not None:
                    dep_dry_step = dep_dry_step + dep_dry
                if dep_wet_step is not None:
                    dep_wet_step = dep_wet_step + (dep - dep_dry)
                load = kept / area
            step_fluxes = {"emission": e_k, "dry_deposition": dep_dry_step, "wet_deposition": dep_wet_step}
            for name in acc:
                val = step_fluxes[name] if name == "emission" else step_fluxes[name] / (area * meteo.dt)
                acc[name] = val if acc[name] is None else acc[name] + val
            if (k + 1) % output_every == 0:
                for name in outputs:
                    if name == "aod":
                        rec[name].append(mee * load)
                    elif name == "dust_load":
                        rec[name].append(load)
                    else:
                        rec[name].append(acc[name] / output_every)
                        acc[name] = None
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        budget["load_final"] = (load * area).sum(dim=(-2, -1))
        budget["residual"] = (
            budget["emitted"] - budget["dry_deposited"] - budget["wet_deposited"] - budget["outflow"]
            - (budget["load_final"] - budget["load_initial"])
        )
        fields = {k: torch.stack(v) if v else torch.zeros((0, m, ny, nx), dtype=self.dtype) for k, v in rec.items()}
        times = None
        if meteo.times is not None:
            ends = pd.DatetimeIndex(meteo.times) + pd.Timedelta(seconds=meteo.dt)
            times = ends.values[output_every - 1::output_every]
        attrs = {
            "model": "ailand.dust.AerosolModel (flux-form upwind advection, dry + wet deposition, AOD = MEE x load)",
            "time_convention": "loads and AOD instantaneous at 'time'; fluxes are means over the interval ending at 'time'",
            "substeps_total": int(n_sub.sum()),
            **{f"param_{k}": v for k, v in self.params.items()},
        }
        return AerosolResult(fields, budget, load, self.grid, times, has_member, attrs)
