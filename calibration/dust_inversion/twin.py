"""The dust inversion twin: world -> land -> prior emission -> hidden truth -> observations
-> LETKF smoother -> evaluation, each step a method of :class:`DustTwin`.

    twin = DustTwin("2020-06-01", "2020-06-30", seed=0, progress=True)  # world, truth, satellite, AERONET
    result = twin.invert(InversionConfig(members=21))                   # the emission analysis
    ev = twin.evaluate(result)                                          # scores, maps, product
    ev.save("runs/dust")                                                # NetCDF, CSV, report, figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ailand.dust import DEFAULT_REGION, DustChain, make_world, run_land
from calibration.progress import as_progress

from .evaluation import aod_scores, factor_scores, scores_table, seasonal_maps
from .observations import SatelliteConfig, aeronet_observations, aeronet_sites, free_runs, synthetic_satellite
from .product import emission_analysis, write_netcdf
from .smoother import EmissionSmoother, InversionConfig, InversionResult
from .truth import DEFAULT_FEATURES, true_scaling

__all__ = ["DustTwin", "TwinEvaluation", "check_factors"]


def check_factors(values, shape: tuple, name: str = "scaling factors") -> np.ndarray:
    """``values`` as a float array of ``shape`` with finite, non-negative entries, else ValueError."""
    a = np.asarray(getattr(values, "values", values), dtype=float)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape (period, lat, lon) = {tuple(shape)}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} have NaN/inf values; they must be finite and >= 0")
    if (a < 0).any():
        idx = tuple(int(i) for i in np.argwhere(a < 0)[0])
        raise ValueError(f"{name} must be >= 0 (they multiply the emission); got {a.min():.4g} at (period, lat, lon) "
                         f"index {idx}")
    return a


class DustTwin:
    """A twin experiment of the emission inversion.

    Parameters
    ----------
    start, end : dates of the world (``end`` day included).
    lat_range, lon_range, resolution : the region (default :data:`ailand.dust.DEFAULT_REGION`).
    seed : seeds the world, the truth's background, the satellite and the AERONET noise.
    period_days : scaling-factor period [days] of the truth and the inversion (3).
    spinup_days : land spin-up before ``start`` (:func:`ailand.dust.run_land`).
    satellite : :class:`.SatelliteConfig`.
    features : the truth's structured errors (:data:`.DEFAULT_FEATURES`), or give ``truth``
        ``(period, lat, lon)`` factors directly (finite, >= 0).
    sites : AERONET stations (names or ``{name: (lat, lon)}``; default those in the region).
    world, land : reuse a world (:func:`ailand.dust.make_world`) and its land run.
    progress : bool or :class:`calibration.progress.Progress`.

    Attributes: ``world``, ``chain`` (:class:`ailand.dust.DustChain`), ``period`` ``(T,)``,
    ``period_starts`` ``(P,)``, ``truth`` DataArray ``(period, lat, lon)``, ``observations``
    (satellite, over ``obs``), ``sites``, ``aeronet`` (held-out AOD ``(time, site)``),
    ``site_aod`` (truth and prior free-run AOD at the stations ``(time, site)``).
    """

    def __init__(self, start: str = "2020-06-01", end: str = "2020-06-30", *, lat_range=DEFAULT_REGION["lat_range"],
                 lon_range=DEFAULT_REGION["lon_range"], resolution: float = DEFAULT_REGION["resolution"], seed: int = 0,
                 period_days: float = 3.0, spinup_days: float = 0.0, satellite: SatelliteConfig | None = None,
                 features=DEFAULT_FEATURES, truth=None, sites=None, world: xr.Dataset | None = None,
                 land: xr.Dataset | None = None, progress=False):
        p = as_progress(progress)
        self.progress, self.seed, self.period_days = p, int(seed), float(period_days)
        self.satellite = satellite or SatelliteConfig()
        if world is None:
            with p.stage(f"world {start}..{end}"):
                world = make_world(start, end, lat_range=lat_range, lon_range=lon_range, resolution=resolution, seed=seed)
        self.world = world
        if land is None:
            n_land = int((world["lsm"].values >= 0.5).sum())
            with p.stage(f"land model: {n_land} columns x {world.sizes['time']} steps"):
                land = run_land(world, spinup_days=spinup_days)
        with p.stage("prior emission"):
            self.chain = DustChain(world, land)
        self.period = self.chain.period_index(self.period_days)
        P = int(self.period.max()) + 1
        self.period_starts = self.chain.times[[int(np.flatnonzero(self.period == q)[0]) for q in range(P)]]
        shape = (P,) + self.chain.grid.shape
        if truth is None:
            self.truth = true_scaling(world, self.period_starts, seed=seed, features=features)
        else:
            tv = check_factors(truth, shape, "truth scaling factors")
            self.truth = xr.DataArray(tv, dims=("period", "lat", "lon"),
                                      coords={"period": np.arange(P), "time": ("period", self.period_starts),
                                              "lat": world["lat"], "lon": world["lon"]},
                                      name="scaling_factor_truth", attrs={"units": "1", "long_name": "true scaling factor"})
        with p.stage("truth run and synthetic satellite AOD"):
            self.observations = synthetic_satellite(self.chain, self.truth, self.period, config=self.satellite, seed=seed)
        self.sites = aeronet_sites(world, sites)
        with p.stage(f"truth and prior at {self.sites.sizes['site']} AERONET stations"):
            runs = free_runs(self.chain, {"truth": self.truth.values, "prior": np.ones(shape)}, self.period, sites=self.sites)
        self.site_aod = {"truth": runs["sites"][:, 0], "prior": runs["sites"][:, 1]}
        self.budget = runs["budget"]
        self.aeronet = aeronet_observations(world, self.sites, self.site_aod["truth"], seed=seed)

    def __repr__(self):
        return (f"DustTwin({self.chain.grid!r}, {len(self.chain.times)} steps, {len(self.period_starts)} periods of "
                f"{self.period_days:g} d, {self.observations.sizes['obs']} satellite obs, {self.sites.sizes['site']} stations)")

    def invert(self, config: InversionConfig | None = None, progress=None) -> InversionResult:
        """Run :class:`.EmissionSmoother` on the twin's satellite AOD (stations carried as held-out points)."""
        cfg = config or InversionConfig(period_days=self.period_days)
        if cfg.period_days != self.period_days:
            raise ValueError(f"config.period_days = {cfg.period_days} differs from the twin's {self.period_days}; "
                             "make the twin with the same period_days")
        return EmissionSmoother(self.chain, self.observations, cfg, sites=self.sites,
                                progress=self.progress if progress is None else progress).run()

    def evaluate(self, result: InversionResult, kind: str = "smoothed") -> "TwinEvaluation":
        """The product, free runs with the analysed factors, and every score (see :mod:`.evaluation`)."""
        p = self.progress
        with p.stage("emission analysis product"):
            analysis = emission_analysis(result, self.chain, self.truth, kind)
        with p.stage("forecast-only runs with the daily and the monthly scaling factors"):
            fc = free_runs(self.chain, {"forecast": result.scaling_factors(kind)}, self.period, sites=self.sites)
            months = pd.DatetimeIndex(self.chain.times).to_period("M")
            month_idx = (months.year * 12 + months.month).to_numpy()
            month_idx = (month_idx - month_idx[0]).astype(np.int64)
            mf = analysis["monthly_scaling_factor"].values
            mo = free_runs(self.chain, {"monthly": mf}, month_idx, sites=self.sites)
        t = self.aeronet["time"].values
        dims = ("time", "site")
        meta = lambda ln: {"units": "1", "long_name": ln}  # noqa: E731
        sites = xr.Dataset({
            "aod_aeronet": self.aeronet["aod_aeronet"],
            "aod_truth": (dims, self.site_aod["truth"], meta("true dust AOD (twin)")),
            "aod_prior": (dims, self.site_aod["prior"], meta("free run with the prior emission")),
            "aod_background": (dims, result.site_aod["background"], meta("ensemble-mean AOD before each analysis")),
            "aod_analysis": (dims, result.site_aod["analysis"], meta("ensemble-mean AOD after each cycle's analysis")),
            "aod_forecast": (dims, fc["sites"][:, 0], meta(f"free run with the analysed ({kind}) daily scaling factors")),
            "aod_monthly": (dims, mo["sites"][:, 0], meta("free run with the monthly emission-weighted scaling factors")),
            "lat": ("site", self.sites["lat"].values, {"units": "degrees_north"}),
            "lon": ("site", self.sites["lon"].values, {"units": "degrees_east"}),
            "desert": ("site", self.sites["desert"].values.astype(bool), {"long_name": "station in a desert cell"}),
        }, coords={"time": t, "site": self.sites["site"].values})
        monthly_per_period = mf[month_idx[[int(np.flatnonzero(self.period == q)[0]) for q in range(len(self.period_starts))]]]
        return TwinEvaluation(
            analysis=analysis, sites=sites, aod=aod_scores(sites, ("prior", "background", "analysis", "forecast", "monthly")),
            factors=factor_scores(result, self.truth, monthly_per_period), seasonal=seasonal_maps(analysis),
            cycles=result.cycles, result=result, twin=self,
        )


@dataclass
class TwinEvaluation:
    """Everything :meth:`DustTwin.evaluate` computes.

    analysis : the emission analysis product (:func:`.emission_analysis`);
    sites : AOD at the stations ``(time, site)`` for every run and the held-out observations;
    aod : :func:`.aod_scores` ``(run, group, season)``; factors : :func:`.factor_scores`;
    seasonal : :func:`.seasonal_maps`; cycles : per-cycle diagnostics; result; twin.
    """

    analysis: xr.Dataset
    sites: xr.Dataset
    aod: xr.Dataset
    factors: xr.Dataset
    seasonal: xr.Dataset
    cycles: xr.Dataset
    result: InversionResult
    twin: DustTwin

    def table(self) -> pd.DataFrame:
        """Headline scores (:func:`.scores_table`)."""
        return scores_table(self.aod, self.factors)

    def report(self) -> str:
        """A short Markdown report: configuration, AOD scores at the stations, recovery of the truth."""
        r, tw = self.result, self.twin
        cfg = r.config
        a = self.aod.sel(season="all")
        lines = [
            "# Dust emission inversion (twin)", "",
            f"- world: {tw.chain.grid!r}, {pd.Timestamp(tw.chain.times[0]):%Y-%m-%d} .. "
            f"{pd.Timestamp(tw.chain.times[-1]):%Y-%m-%d %H:%M}, seed {tw.seed}",
            f"- ensemble: {cfg.members} members (1 control + {cfg.members - 1} perturbed), log-factor std {cfg.log_std}, "
            f"correlation length {cfg.corr_length_km} km, period {cfg.period_days:g} d, lag {cfg.lag} "
            f"(window {(cfg.lag + 1) * cfg.period_days:g} d), localisation {cfg.loc_rad_km:g} km ({cfg.taper}), "
            f"persistence {cfg.persistence}",
            f"- observations: {tw.observations.sizes['obs']} satellite super-observations, "
            f"{int(np.isfinite(tw.aeronet['aod_aeronet'].values).sum())} held-out station-hours at "
            f"{tw.sites.sizes['site']} stations ({int(tw.sites['desert'].sum())} desert)",
            f"- cycles: {r.n_periods}, wall time {r.wall_s:.1f} s ({r.wall_s / max(r.n_periods, 1):.2f} s per cycle), "
            f"members dropped: {len(r.dropped)}", "",
            "## AOD at the held-out AERONET stations (all seasons)", "",
            "| run | group | RMSE | bias | corr (pooled) | corr (per station) | n |", "|---|---|---|---|---|---|---|",
        ]
        for run in a["run"].values:
            for g in a["group"].values:
                d = a.sel(run=run, group=g)
                lines.append(f"| {run} | {g} | {float(d['rmse']):.4f} | {float(d['bias']):+.4f} | {float(d['corr']):.3f} | "
                             f"{float(d['corr_station']):.3f} | {int(d['n'])} |")
        js = self.aod.sel(season="JJA", group="desert") if "JJA" in self.aod["season"].values else None
        if js is not None and np.isfinite(js["rmse"]).all():
            lines += ["", "Desert stations in summer (JJA): RMSE " + ", ".join(
                f"{r} {float(js['rmse'].sel(run=r)):.4f}" for r in js["run"].values)]
        f = self.factors
        lines += ["", f"## Recovered vs true scaling factors ({f.attrs['n_pairs']} emitting (period, cell) pairs)", "",
                  "| estimate | RMSE log f | corr log f | emission-weighted RMSE log f | RMSE f | corr f |",
                  "|---|---|---|---|---|---|"]
        for e in f["estimate"].values:
            d = f.sel(estimate=e)
            lines.append(f"| {e} | {float(d['rmse_log']):.3f} | {float(d['corr_log']):.3f} | {float(d['wrmse_log']):.3f} | "
                         f"{float(d['rmse']):.3f} | {float(d['corr']):.3f} |")
        return "\n".join(lines) + "\n"

    def save(self, out, figures: bool = True) -> list[Path]:
        """Write ``dust_emission_analysis.nc`` (the product), ``evaluation/sites.nc``,
        ``evaluation/seasonal.nc``, ``evaluation/cycles.nc``, ``evaluation/observations.nc``,
        ``scores.csv``, ``report.md`` and (``figures``) PNGs under ``figures/``. Returns the paths."""
        out = Path(out)
        (out / "evaluation").mkdir(parents=True, exist_ok=True)
        paths = []
        p = out / "dust_emission_analysis.nc"
        write_netcdf(self.analysis, p)
        paths.append(p)
        for name, ds in (("sites", self.sites), ("seasonal", self.seasonal), ("cycles", self.cycles),
                         ("observations", self.twin.observations)):
            q = out / "evaluation" / f"{name}.nc"
            write_netcdf(ds, q)
            paths.append(q)
        q = out / "scores.csv"
        self.table().to_csv(q, index=False, float_format="%.5g")
        paths.append(q)
        q = out / "report.md"
        q.write_text(self.report())
        paths.append(q)
        if figures:
            from .plots import save_figures

            paths += save_figures(self, out / "figures")
        return paths
