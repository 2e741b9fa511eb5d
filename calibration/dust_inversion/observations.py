"""Synthetic observations of the dust twin: satellite AOD swaths and held-out "AERONET" points.

Satellite (:func:`satellite_geometry`, :func:`synthetic_satellite`): a sun-synchronous polar
orbiter with a 13:30 local-solar-time overpass (Aqua-MODIS-like), ``orbits_per_day``
orbits (14.5625: a 16-day repeat), a ``swath_km`` wide swath (2330 km): cells more than
``swath_km / 2`` across-track from the day's nearest ground track (tracks taken as
meridians, ``360 / orbits_per_day`` degrees apart, shifted each day) are in a gap, which opens
in the tropics (about 400 km at the equator) and closes poleward of ~30 degrees. Over each
``superob x superob`` box of cells (1 or 2; 2: the box centre is a corner shared by four cells,
where the bilinear :class:`ailand.dust.PointSampler` is exactly the box mean) one
super-observation is made at the overpass hour when it is daytime (cosine of the solar zenith
angle >= ``min_cos_sza``) and clear: a smooth random cloud field per day (Gaussian-filtered
noise of ``cloud_length`` boxes) is cloudy where its quantile is below the climatological cloud
fraction (``cloud_mean`` of the world, times ``cloud_scale``), and any precipitation in the box
at that hour is cloud. The error grows with AOD: ``sigma = error_abs + error_rel x AOD``
(MODIS-like), ``y = AOD_true + sigma eps``, and the error reported with each datum (what the
assimilation uses) is ``error_abs + error_rel x max(y, 0)``.

AERONET (:data:`AERONET_SITES`, :func:`aeronet_sites`, :func:`aeronet_observations`): real
station names and coordinates in the default region; ``desert`` sites are those whose cell is
``veg_type == "desert"`` in the world. Hourly daytime (cos SZA >= 0.1), rain-free values of the
true AOD interpolated to the station (bilinear), with a 0.01 + 0.02 AOD error. They are never
assimilated: only the evaluation reads them.

Times: AOD is instantaneous at the *end* of each forcing step (as :class:`ailand.dust.DustChain`);
an observation at output row ``k`` is valid at ``time[0] + (k + 1) dt``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from ailand.dust import LatLonGrid, PointSampler

__all__ = ["SatelliteConfig", "AERONET_SITES", "satellite_geometry", "synthetic_satellite", "aeronet_sites",
           "aeronet_observations", "ObsOperator", "cos_solar_zenith", "free_runs"]

#: AERONET stations (name: (lat, lon) degrees) inside or near the default region
AERONET_SITES: dict[str, tuple[float, float]] = {
    "Tamanrasset_INM": (22.79, 5.53), "Banizoumbera": (13.54, 2.66), "Agoufou": (15.35, -1.48),
    "Zinder_Airport": (13.78, 8.99), "IER_Cinzana": (13.28, -5.93), "DMN_Maine_Soroa": (13.22, 12.02),
    "Dakar": (14.39, -16.96), "Capo_Verde": (16.73, -22.94), "Ilorin": (8.32, 4.34),
    "Ouarzazate": (30.93, -6.91), "Izana": (28.31, -16.50), "Blida": (36.51, 2.88),
    "Cairo_EMA_2": (30.08, 31.29), "SEDE_BOKER": (30.86, 34.78), "Solar_Village": (24.91, 46.40),
    "KAUST_Campus": (22.30, 39.10), "Kuwait_University": (29.33, 47.97), "Mezaira": (23.15, 53.78),
    "Lampedusa": (35.52, 12.63), "Granada": (37.16, -3.61), "Rome_Tor_Vergata": (41.84, 12.65),
    "Athens-NOA": (37.99, 23.78), "Paris": (48.87, 2.33), "Berlin_FUB": (52.46, 13.31),
}


@dataclass(frozen=True)
class SatelliteConfig:
    """The synthetic satellite (see the module docstring). Lengths [km], times [h], AOD [-]."""

    equator_crossing_h: float = 13.5
    swath_km: float = 2330.0
    orbits_per_day: float = 14.5625
    superob: int = 2
    cloud_length: float = 1.5
    cloud_scale: float = 1.0
    min_cos_sza: float = 0.15
    error_abs: float = 0.03
    error_rel: float = 0.15

    def __post_init__(self):
        if self.superob not in (1, 2):
            raise ValueError(f"superob must be 1 (one datum per cell) or 2 (2 x 2 cell boxes), got {self.superob!r}")
        for k in ("swath_km", "orbits_per_day", "error_abs"):
            if not getattr(self, k) > 0:
                raise ValueError(f"SatelliteConfig.{k} must be > 0, got {getattr(self, k)!r}")
        if self.error_rel < 0 or self.cloud_scale < 0:
            raise ValueError("SatelliteConfig.error_rel and cloud_scale must be >= 0")


def cos_solar_zenith(lat, times_utc, lon) -> np.ndarray:
    """Cosine of the solar zenith angle at ``lat``, ``lon`` [deg] (broadcasting) and datetime64 UTC
    ``times_utc`` (same broadcast shape), with declination 23.44 sin(2 pi (doy - 81) / 365) and
    local solar time = UTC + lon / 15 h (no equation of time)."""
    t = pd.DatetimeIndex(np.asarray(times_utc).ravel())
    doy = t.dayofyear.to_numpy(float).reshape(np.shape(times_utc))
    hour = (t.hour.to_numpy(float) + t.minute.to_numpy(float) / 60.0).reshape(np.shape(times_utc))
    dec = np.radians(23.44) * np.sin(2 * np.pi * (doy - 81.0) / 365.0)
    h = np.radians(15.0 * (hour + np.asarray(lon, float) / 15.0 - 12.0))
    la = np.radians(np.asarray(lat, float))
    return np.sin(la) * np.sin(dec) + np.cos(la) * np.cos(dec) * np.cos(h)


def _output_times(world: xr.Dataset) -> tuple[np.ndarray, float]:
    t = world["time"].values
    dt = float((t[1] - t[0]) / np.timedelta64(1, "s")) if len(t) > 1 else 3600.0
    return t + np.timedelta64(int(dt), "s"), dt


def _boxes(grid: LatLonGrid, s: int):
    """Box centres (lat (by,), lon (bx,)) and the cell rows/cols of each box."""
    ny, nx = grid.shape
    by, bx = ny // s, nx // s
    if by < 1 or bx < 1:
        raise ValueError(f"the grid {grid.shape} is smaller than one {s} x {s} superobservation box")
    blat = grid.lat[: by * s].reshape(by, s).mean(1)
    blon = grid.lon[: bx * s].reshape(bx, s).mean(1)
    return blat, blon, by, bx


def satellite_geometry(world: xr.Dataset, config: SatelliteConfig | None = None, seed: int = 0) -> xr.Dataset:
    """Where and when the satellite sees the ground clear, over the whole world period.

    Returns a Dataset over ``obs`` with ``time`` (datetime64, the AOD output time), ``step``
    (output row index), ``lat``, ``lon`` [deg] of the super-observation centres, sorted by
    ``step``. Seeded; independent of the dust (clouds come from the world's climatology and
    precipitation).
    """
    cfg = config or SatelliteConfig()
    grid = LatLonGrid.from_dataset(world)
    s = cfg.superob
    blat, blon, by, bx = _boxes(grid, s)
    out_t, dt = _output_times(world)
    t0 = pd.Timestamp(out_t[0]) - pd.Timedelta(seconds=dt)  # start of the first step
    n_out = len(out_t)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1402]))
    lat2, lon2 = np.meshgrid(blat, blon, indexing="ij")
    cloud_clim = world["cloud_mean"].values[: by * s, : bx * s].reshape(by, s, bx, s).mean((1, 3))
    cloud_frac = np.clip(cfg.cloud_scale * cloud_clim, 0.0, 0.95)
    spacing = 360.0 / cfg.orbits_per_day
    shift = (cfg.orbits_per_day % 1.0) * spacing
    lam0 = rng.uniform(0.0, spacing)
    precip = (world["Rainf"] + world["Snowf"]).transpose("time", "lat", "lon").values
    precip_box = precip[:, : by * s, : bx * s].reshape(len(precip), by, s, bx, s).max((2, 4))  # (T, by, bx)
    days = pd.date_range(t0.normalize() - pd.Timedelta(days=1), pd.Timestamp(out_t[-1]).normalize() + pd.Timedelta(days=1),
                         freq="1D")
    rows = []
    for d, day in enumerate(days):
        # overpass time of each box: local solar time equator_crossing_h
        hours = (day - t0) / pd.Timedelta(hours=1) + cfg.equator_crossing_h - lon2 / 15.0
        k = np.rint(hours * 3600.0 / dt).astype(np.int64) - 1  # output row valid nearest the overpass
        ok = (k >= 0) & (k < n_out)
        # the day's clouds are drawn whether or not the day is inside the window (fixed stream)
        noise = gaussian_filter(rng.standard_normal((by, bx)), cfg.cloud_length, mode="wrap") if cfg.cloud_length > 0 \
            else rng.standard_normal((by, bx))
        noise = (noise - noise.mean()) / max(noise.std(), 1e-12)
        if not ok.any():
            continue
        lam = lam0 + d * shift
        off = np.abs((lon2 - lam + spacing / 2) % spacing - spacing / 2)
        in_swath = off * 111.195 * np.cos(np.radians(lat2)) <= cfg.swath_km / 2
        kk = np.clip(k, 0, n_out - 1)
        csz = cos_solar_zenith(lat2, out_t[kk], lon2)
        clear = ndtr(noise) >= cloud_frac
        dry = precip_box[kk, np.arange(by)[:, None], np.arange(bx)[None, :]] <= 0  # no rain in the box then
        seen = ok & in_swath & (csz >= cfg.min_cos_sza) & clear & dry
        jj, ii = np.nonzero(seen)
        rows.append(np.stack([k[jj, ii], jj, ii], 1))
    idx = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
    idx = idx[np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0]))]
    ds = xr.Dataset(
        {"step": ("obs", idx[:, 0], {"units": "1", "long_name": "AOD output row (valid at the end of forcing step 'step')"}),
         "lat": ("obs", blat[idx[:, 1]], {"units": "degrees_north", "long_name": "super-observation centre latitude"}),
         "lon": ("obs", blon[idx[:, 2]], {"units": "degrees_east", "long_name": "super-observation centre longitude"}),
         "time": ("obs", out_t[idx[:, 0]], {"long_name": "valid time (UTC)"})},
        coords={"obs": np.arange(idx.shape[0])},
    )
    ds.attrs.update({f"satellite_{k}": v for k, v in asdict(cfg).items()})
    ds.attrs["satellite_seed"] = int(seed)
    return ds


class ObsOperator:
    """Point observations of gridded AOD at given output rows: ``H(aod) -> (M, m)``.

    Parameters
    ----------
    grid : the :class:`ailand.dust.LatLonGrid`.
    step : ``(m,)`` output-row index of each observation; lat, lon : ``(m,)`` [deg].
    n_steps : number of output rows of the window (checks ``0 <= step < n_steps``).

    Raises ValueError for observations outside the grid (naming them) or outside the window.
    ``op(aod, rows)``: ``aod (T_w, M, ny, nx)`` for output rows ``[a, a + T_w)`` and ``rows`` the
    selected observations (indices) whose steps lie in that range, given ``a`` -> ``(M, len(rows))``.
    """

    def __init__(self, grid: LatLonGrid, step, lat, lon, n_steps: int):
        step = np.asarray(step, dtype=np.int64).ravel()
        lat, lon = np.asarray(lat, float).ravel(), np.asarray(lon, float).ravel()
        if not (step.shape == lat.shape == lon.shape):
            raise ValueError(f"observations: step, lat and lon must have the same length, got {step.shape}, {lat.shape}, "
                             f"{lon.shape}")
        if step.size and (step.min() < 0 or step.max() >= n_steps):
            raise ValueError(f"observations: output rows must lie in [0, {n_steps}) (inside the world's time window), "
                             f"got {step.min()}..{step.max()}")
        try:
            self.sampler = PointSampler(grid, lat, lon, method="bilinear")
        except ValueError as e:
            raise ValueError(f"observations: {e}") from None
        self.step, self.lat, self.lon = step, lat, lon

    def __len__(self):
        return self.step.size

    def __call__(self, aod: torch.Tensor, rows: np.ndarray, first_step: int) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        T_w, M = aod.shape[:2]
        flat = aod.reshape(T_w, M, -1)
        k = torch.as_tensor(self.step[rows] - first_step)
        idx = torch.as_tensor(self.sampler.index[rows])  # (m, q)
        w = torch.as_tensor(self.sampler.weight[rows], dtype=aod.dtype)
        vals = flat[k[:, None], :, idx]  # (m, q, M)
        return (vals * w[..., None]).sum(1).T  # (M, m)


def free_runs(chain, scales: dict, period: np.ndarray, *, sites: xr.Dataset | None = None,
              obs: ObsOperator | None = None, chunk_steps: int = 24 * 30, progress=None) -> dict:
    """Deterministic aerosol runs (no assimilation) for several scaling-factor fields at once.

    Parameters
    ----------
    chain : :class:`ailand.dust.DustChain`.
    scales : name -> ``(P, ny, nx)`` factors (>= 0; numpy or DataArray) with ``period`` (T,)
        mapping forcing steps to ``[0, P)``.
    sites : Dataset with ``lat``/``lon`` over ``site``: AOD there every output row.
    obs : an :class:`ObsOperator`: AOD at its observations.
    chunk_steps : steps per aerosol call (memory: chunk x runs x cells x 8 bytes).

    Returns dict with ``sites`` ``(T, run, site)`` array (if asked), ``obs`` ``(m, run)``,
    ``budget`` name -> ``(run,)`` [kg] over the whole run, ``final_load`` ``(run, ny, nx)``.
    All runs start from zero load at the first step.
    """
    names = list(scales)
    S = np.stack([np.asarray(getattr(scales[n], "values", scales[n]), dtype=np.float64) for n in names])
    n_t = len(chain.times)
    site_s = PointSampler(chain.grid, sites["lat"].values, sites["lon"].values) if sites is not None else None
    out_sites = np.full((n_t, len(names), sites.sizes["site"]), np.nan) if sites is not None else None
    out_obs = np.full((len(obs), len(names)), np.nan) if obs is not None else None
    load, budget = None, {}
    for a in range(0, n_t, int(chunk_steps)):
        b = min(n_t, a + int(chunk_steps))
        res = chain.run(S, period=period, start=a, stop=b, load0=load, outputs=("aod",))
        aod = res.fields["aod"]
        load = res.final_load
        for k, v in res.budget.items():
            if k in ("load_initial", "load_final", "residual"):
                continue
            budget[k] = budget.get(k, 0.0) + v.numpy()
        if site_s is not None:
            out_sites[a:b] = site_s(aod).numpy()
        if obs is not None:
            rows = np.flatnonzero((obs.step >= a) & (obs.step < b))
            if rows.size:
                out_obs[rows] = obs(aod, rows, a).T.numpy()
        if progress is not None:
            progress.update(b - a)
    return {"names": names, "sites": out_sites, "obs": out_obs, "budget": budget, "final_load": load.numpy()}


def synthetic_satellite(chain, truth: xr.DataArray, period: np.ndarray, *, config: SatelliteConfig | None = None,
                        seed: int = 0, geometry: xr.Dataset | None = None) -> xr.Dataset:
    """Satellite AOD of the twin: the truth run (``truth`` factors ``(P, lat, lon)``) seen by the
    synthetic satellite. Returns the geometry Dataset (see :func:`satellite_geometry`) plus
    ``aod`` (observed), ``aod_error`` (1-sigma, from the observed value) and ``aod_true`` over ``obs``."""
    cfg = config or SatelliteConfig()
    geo = geometry if geometry is not None else satellite_geometry(chain.world, cfg, seed)
    op = ObsOperator(chain.grid, geo["step"].values, geo["lat"].values, geo["lon"].values, len(chain.times))
    true = free_runs(chain, {"truth": truth}, period, obs=op)["obs"][:, 0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1403]))
    sig_true = cfg.error_abs + cfg.error_rel * true
    y = true + sig_true * rng.standard_normal(true.shape)
    ds = geo.copy()
    ds["aod"] = ("obs", y, {"units": "1", "long_name": "observed dust AOD at 550 nm (synthetic satellite super-observation)"})
    ds["aod_error"] = ("obs", cfg.error_abs + cfg.error_rel * np.maximum(y, 0.0),
                       {"units": "1", "long_name": "observation error standard deviation (error_abs + error_rel x max(aod, 0))"})
    ds["aod_true"] = ("obs", true, {"units": "1", "long_name": "true dust AOD at the observation (twin only)"})
    ds.attrs["title"] = "synthetic satellite dust AOD (ailand dust twin)"
    return ds


def aeronet_sites(world: xr.Dataset, names=None) -> xr.Dataset:
    """AERONET stations as a Dataset over ``site`` (``lat``, ``lon`` [deg], ``desert`` bool, ``veg_type``).

    ``names``: a list of keys of :data:`AERONET_SITES`, or a mapping ``name -> (lat, lon)``;
    default: every station of :data:`AERONET_SITES` inside the world's grid. Given stations
    outside the grid raise ValueError.
    """
    grid = LatLonGrid.from_dataset(world)
    if names is None:
        table = {k: v for k, v in AERONET_SITES.items() if grid.contains(v[0], v[1])}
        if not table:
            raise ValueError("no AERONET station of AERONET_SITES lies inside the world's grid; pass names={name: (lat, lon)}")
    elif isinstance(names, dict):
        table = {str(k): tuple(map(float, v)) for k, v in names.items()}
    else:
        unknown = [n for n in names if n not in AERONET_SITES]
        if unknown:
            raise ValueError(f"unknown AERONET station(s) {unknown}; known: {sorted(AERONET_SITES)}")
        table = {n: AERONET_SITES[n] for n in names}
    lat = np.array([v[0] for v in table.values()])
    lon = np.array([v[1] for v in table.values()])
    try:
        j, i = grid.index(lat, lon)
    except ValueError as e:
        raise ValueError(f"AERONET stations: {e}") from None
    veg = np.asarray(world["veg_type"].values[j, i]).astype(str)
    return xr.Dataset(
        {"lat": ("site", lat, {"units": "degrees_north"}), "lon": ("site", lon, {"units": "degrees_east"}),
         "desert": ("site", veg == "desert", {"long_name": "station in a desert cell (veg_type == desert)"}),
         "veg_type": ("site", veg, {"long_name": "vegetation type of the station's cell"})},
        coords={"site": np.array(list(table), dtype=str)},
    )


def aeronet_observations(world: xr.Dataset, sites: xr.Dataset, truth_aod: np.ndarray, seed: int = 0,
                         min_cos_sza: float = 0.1, error_abs: float = 0.01, error_rel: float = 0.02) -> xr.Dataset:
    """Held-out AERONET AOD ``(time, site)``: the true AOD ``truth_aod (T, site)`` (every output
    row) where it is daytime and not raining at the station's cell, plus noise
    ``(error_abs + error_rel AOD) eps``; NaN otherwise. Never assimilated."""
    out_t, _ = _output_times(world)
    grid = LatLonGrid.from_dataset(world)
    j, i = grid.index(sites["lat"].values, sites["lon"].values)
    csz = cos_solar_zenith(sites["lat"].values[None, :], np.repeat(out_t[:, None], len(j), 1), sites["lon"].values[None, :])
    rain = ((world["Rainf"] + world["Snowf"]).transpose("time", "lat", "lon").values[:, j, i] > 0)
    ok = (csz >= min_cos_sza) & ~rain
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1404]))
    y = truth_aod + (error_abs + error_rel * truth_aod) * rng.standard_normal(truth_aod.shape)
    y = np.where(ok, y, np.nan)
    return xr.Dataset(
        {"aod_aeronet": (("time", "site"), y, {"units": "1", "long_name": "held-out AERONET dust AOD at 550 nm "
                                                                          "(synthetic; daytime, rain-free; never assimilated)"})},
        coords={"time": out_t, "site": sites["site"].values},
    )
