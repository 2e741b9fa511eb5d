"""The operational-parameter study: a network twin, grouping strategies, equifinality, propagation.

    network   = site_network(n_sites)                         (ailand.network)
    truth     = true_parameter_field(network)                 hidden from every method
    y         = physics(truth) + noise                        daily Qle, Qh at every site
    for each strategy: groups -> calibration sub-sample per group -> one parameter set per
        group, calibrated with the emulator (its error against the physics in R)
    check     = physics at each strategy's parameters, RMSE on held-out sites

:func:`run_study` runs it all; :class:`StudyConfig` holds the knobs (defaults: the study of
the README, 100 sites over one year, about 40 min on the loaded 2-core machine;
``StudyConfig(n_sites=300, n_held_out=60)`` for the few-hundred-site network;
:meth:`StudyConfig.small`: the tests' network twin, about a minute). Every random choice is
seeded from ``config.seed``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

import ailand
from ailand.network import check_network, site_network

from ..discrepancy import model_error
from ..ensemble_kalman.inversion import eki, esmda
from ..forward import Forward
from ..observe import Observe
from ..problem import Problem
from ..progress import as_progress
from ..variational import variational
from .grouping import STRATEGIES, calibration_sites, cluster_importance, cluster_predictors, group_sites, split_sites
from .multisite import SiteRunner, WhitenedForward, calibrate_groups, series_std
from .truth import true_parameter_field

__all__ = ["StudyConfig", "StudyResult", "run_study", "site_rmse", "mask_records"]

FLUXES = ("Qle", "Qh")
PROPAGATED = ("Evap", "swvl1", "swvl2", "swvl3")
_LAYER = np.array([0.07, 0.21, 0.72])  # m: the top metre


@dataclass
class StudyConfig:
    """Knobs of :func:`run_study` (every count is per study unless said otherwise).

    n_sites : network size; seed : seeds the network, truth, noise, split, sub-samples, methods.
    start, end : the one window (daily Qle and Qh are observed over all of it).
    params : calibrated parameters. noise : obs noise std as a fraction of each (variable,
    site) series' std. n_held_out : sites never calibrated on (the test set).
    per_group : calibration sites per group (a random sub-sample of its non-held-out sites).
    strategies : subset of :data:`calibration.network.STRATEGIES`. k_range : cluster counts
    tried by the silhouette criterion. min_group_size : Koppen classes smaller than this
    fall back to their main group. per_site_columns : ``"held_out+clusters"`` (per-site
    calibration at the held-out sites and at the learnt clusters' calibration sites) or
    ``"all"``. model_error_draws : prior draws for the emulator's error in R (0: none).
    maxiter, fd, ftol : the lock-step Levenberg-Marquardt (:func:`calibrate_groups`); a group stops
    when an accepted step lowers its J by less than ``ftol`` relative (or moves less than 1e-3
    prior sd).
    spinup_years, dt, weather_seed : physics spin-up, physics step [s], weather seed.
    equifinality : run it for the largest k-means cluster (``n_guesses`` variational first
    guesses, EKI and ES-MDA from ``n_seeds`` seeds with ``n_ensemble`` members).
    propagation : push the cluster's posterior (``n_samples`` draws) and the prior through
    the emulator at its held-out sites. importance : the predictor importance of learnt clusters.
    truth_noise : scales the site noise of the hidden truth (:func:`true_parameter_field`).
    parents : parent climates of the network (default: the ten sites of ``data/sites.csv``).
    """

    n_sites: int = 100
    seed: int = 0
    start: str = "2019-01-01"
    end: str = "2019-12-31"
    params: tuple = ("RSMIN", "LAI_SCALE", "ALB_VEG", "THETA_PWP")
    noise: float = 0.1
    n_held_out: int = 25
    per_group: int = 3
    strategies: tuple = STRATEGIES
    k_range: tuple = (2, 3, 4, 5, 6, 7, 8)
    min_group_size: int = 3
    per_site_columns: str = "held_out+clusters"
    model_error_draws: int = 16
    maxiter: int = 12
    fd: str = "forward"
    ftol: float = 1e-4
    spinup_years: int = 1
    dt: float = 3600.0
    weather_seed: int = 0
    equifinality: bool = True
    n_guesses: int = 16
    n_seeds: int = 16
    n_ensemble: int = 16
    propagation: bool = True
    n_samples: int = 64
    importance: bool = True
    truth_noise: float = 1.0
    parents: tuple | None = None

    @classmethod
    def small(cls, **kw) -> "StudyConfig":
        """The tests' network twin: 30 sites, July 2019, a 3-h physics step, no spin-up, 3
        parameters, 4 strategies, no equifinality or propagation (about 20 s)."""
        base = dict(n_sites=30, start="2019-07-01", end="2019-07-31", params=("RSMIN", "LAI_SCALE", "ALB_VEG"),
                    n_held_out=10, per_group=3, strategies=("global", "vegetation", "kmeans", "per_site"),
                    k_range=(2, 3, 4), model_error_draws=8, maxiter=10, spinup_years=0, dt=10800.0,
                    equifinality=False, propagation=False)
        base.update(kw)
        return cls(**base)

    def check(self) -> "StudyConfig":
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"unknown grouping strategy {bad}; choose from {', '.join(STRATEGIES)}")
        if self.n_held_out >= self.n_sites or self.n_held_out < 1:
            raise ValueError(f"n_held_out must be in [1, n_sites - 1], got {self.n_held_out} for {self.n_sites} sites")
        if self.per_site_columns not in ("held_out+clusters", "all"):
            raise ValueError("per_site_columns must be 'held_out+clusters' or 'all'")
        if not self.noise > 0:
            raise ValueError(f"noise must be > 0, got {self.noise}")
        if self.model_error_draws == 1 or self.model_error_draws < 0:
            raise ValueError(f"model_error_draws must be 0 (none) or >= 2, got {self.model_error_draws}")
        return self


@dataclass
class StudyResult:
    """Output of :func:`run_study`.

    config; network (Dataset over ``site``: statics, labels, ``held_out``, ``true_parameters``
    ``(site, parameter)``, one ``group_<strategy>`` per strategy); table (DataFrame, one row per
    strategy: groups, held-out and calibration-site RMSE of daily Qle and Qh [W m-2] with the
    physics, distance to the truth); rmse ``(strategy, site, variable)`` [W m-2]; parameters
    ``(strategy, site, parameter)`` physical; importance ``{strategy: (cluster, predictor)}``;
    emulator_error (DataFrame); equifinality, propagation (Datasets or None); timings [s].
    """

    config: StudyConfig
    network: xr.Dataset
    table: pd.DataFrame
    rmse: xr.DataArray
    parameters: xr.DataArray
    importance: dict
    emulator_error: pd.DataFrame
    equifinality: xr.Dataset | None
    propagation: xr.Dataset | None
    timings: dict
    calibration: object = None
    notes: list = field(default_factory=list)

    def to_xarray(self) -> xr.Dataset:
        ds = xr.Dataset({"rmse": self.rmse, "parameters": self.parameters})
        ds["true_parameters"] = self.network["true_parameters"]
        ds["held_out"] = self.network["held_out"]
        for s in self.config.strategies:
            ds[f"group_{s}"] = self.network[f"group_{s}"]
        for s, imp in self.importance.items():
            ds[f"importance_{s}"] = imp.rename({"cluster": f"cluster_{s}"})
        ds.attrs = {"title": "ailand operational parameter sets study",
                    **{k: str(v) for k, v in asdict(self.config).items()},
                    **{f"time_{k}_s": float(v) for k, v in self.timings.items()}}
        return ds

    def markdown_table(self) -> str:
        t = self.table
        head = ("| strategy | groups | held-out RMSE Qle | held-out RMSE Qh | cal-site RMSE Qle | cal-site RMSE Qh "
                "| distance to truth (held-out) |")
        rows = [head, "|" + "---|" * 7]
        f = lambda v, n=2: "-" if not np.isfinite(v) else f"{v:.{n}f}"  # noqa: E731
        for s, r in t.iterrows():
            rows.append(f"| {s} | {r['groups']} | {f(r['heldout_Qle'])} | {f(r['heldout_Qh'])} | {f(r['cal_Qle'])} | "
                        f"{f(r['cal_Qh'])} | {f(r['distance_heldout'], 3)} |")
        return "\n".join(rows)

    def report(self, directory) -> Path:
        """Write ``study.nc``, ``network.nc``, ``report.md`` and the figures into ``directory``."""
        from . import plots

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        net = self.network.copy()
        for c in list(net.coords):
            if net[c].dtype == object:
                net[c] = net[c].astype(str)
        net.to_netcdf(d / "network.nc")
        ds = self.to_xarray()
        for c in list(ds.coords):
            if ds[c].dtype == object:
                ds[c] = ds[c].astype(str)
        for v in list(ds.data_vars):
            if ds[v].dtype == object:
                ds[v] = ds[v].astype(str)
        ds.to_netcdf(d / "study.nc")
        figs = {"map": plots.plot_map(self, d / "map.png")}
        if self.importance:
            figs["importance"] = plots.plot_importance(self, d / "importance.png")
        if self.equifinality is not None:
            self.equifinality.to_netcdf(d / "equifinality.nc")
            figs["equifinality"] = plots.plot_equifinality(self, d / "equifinality.png")
        if self.propagation is not None:
            self.propagation.to_netcdf(d / "propagation.nc")
            figs["propagation"] = plots.plot_propagation(self, d / "propagation.png")
        import matplotlib.pyplot as plt

        for f in figs.values():
            plt.close(f)
        (d / "report.md").write_text(self.markdown())
        return d

    def markdown(self) -> str:
        c = self.config
        net = self.network
        lines = ["# Operational parameter sets", "",
                 f"Network: {net.sizes['site']} synthetic sites (seed {c.seed}), {int(net['held_out'].sum())} held out; "
                 f"daily Qle and Qh {c.start} .. {c.end} from the physics at the hidden truth + {c.noise:g} x series std noise; "
                 f"calibrated {', '.join(c.params)} with the emulator ({c.model_error_draws} model-error draws in R), "
                 f"at most {c.per_group} calibration sites per group; the physics at each strategy's parameters is the check.", "",
                 "## Held-out sites (RMSE of daily means against the observations, W m-2; distance: RMS unit-cube "
                 "distance of the sites' parameters to their hidden truth)", "", self.markdown_table(), ""]
        lines += [f"- {n}" for n in self.notes]
        lines += ["", "## Emulator error on the network (emulator - physics at the true parameters, daily means)", "",
                  _markdown(self.emulator_error), ""]
        if self.equifinality is not None:
            e = self.equifinality
            lines += ["## Equifinality", "", e.attrs.get("summary", ""), ""]
        if self.propagation is not None:
            lines += ["## Uncertainty propagation", "", self.propagation.attrs.get("summary", ""), ""]
        lines += ["## Wall time", "", "| stage | s |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in self.timings.items()]
        lines += ["", "![map](map.png)", "", "![importance](importance.png)", "", "![equifinality](equifinality.png)", "",
                  "![propagation](propagation.png)", ""]
        return "\n".join(lines)


def mask_records(y: np.ndarray, labels: pd.MultiIndex, records: dict) -> np.ndarray:
    """``y`` with NaN outside each site's record: ``records = {site: (first, last)}`` (dates or
    None for open ends); sites not named keep all their data. For multi-site Problems whose
    sites have records of different lengths (NaN data are masked in the cost)."""
    y = np.array(y, dtype=float, copy=True)
    site = labels.get_level_values("site").astype(str)
    t = pd.DatetimeIndex(labels.get_level_values("time"))
    for s, (a, b) in records.items():
        sel = np.asarray(site == str(s))
        if not sel.any():
            raise ValueError(f"mask_records: no datum of site {s!r}")
        out = np.zeros(len(y), dtype=bool)
        if a is not None:
            out |= np.asarray(t < pd.Timestamp(a))
        if b is not None:
            out |= np.asarray(t > pd.Timestamp(b))
        y[sel & out] = np.nan
    return y


def site_rmse(y_model: np.ndarray, y_obs: np.ndarray, labels: pd.MultiIndex, sites=None) -> xr.DataArray:
    """RMSE per (member, site, variable) of ``y_model`` ``(n, m)`` (or ``(m,)``: n = 1) against
    ``y_obs`` ``(m,)`` with the ``(variable, site, time)`` ``labels``; NaN data ignored.
    Returns a DataArray ``(member, site, variable)`` [units of y], sites in ``sites`` order
    (default: as they come)."""
    ym = np.atleast_2d(np.asarray(y_model, dtype=float))
    var = np.asarray(labels.get_level_values("variable")).astype(str)
    st = np.asarray(labels.get_level_values("site")).astype(str)
    sites = list(pd.unique(pd.Series(st))) if sites is None else [str(x) for x in sites]
    variables = list(pd.unique(pd.Series(var)))
    out = np.full((ym.shape[0], len(sites), len(variables)), np.nan)
    sq = (ym - np.asarray(y_obs, dtype=float)[None]) ** 2
    codes = pd.Index(sites).get_indexer(st)
    for k, v in enumerate(variables):
        sel = (var == v) & (codes >= 0) & np.isfinite(sq).all(0)
        sums = np.zeros((ym.shape[0], len(sites)))
        cnt = np.bincount(codes[sel], minlength=len(sites)).astype(float)
        for i in range(ym.shape[0]):
            sums[i] = np.bincount(codes[sel], weights=sq[i, sel], minlength=len(sites))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, :, k] = np.sqrt(sums / cnt)
    return xr.DataArray(out, dims=("member", "site", "variable"),
                        coords={"member": np.arange(ym.shape[0]), "site": sites, "variable": variables}, name="rmse")


def _markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (no ``tabulate`` needed)."""
    rows = [f"| {df.index.name or ''} | " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * (len(df.columns) + 1)]
    rows += [f"| {i} | " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |"
             for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join(rows)


def _nanmean(a, axis=None):
    """``np.nanmean`` that returns NaN for an all-NaN slice without a warning."""
    a = np.asarray(a, dtype=float)
    n = np.isfinite(a).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(np.isfinite(a), a, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


def _warnings_to_notes(caught, notes: list, what: str) -> None:
    msgs = sorted({str(w.message).split(":")[0] for w in caught})
    if msgs:
        notes.append(f"{what}: {len(msgs)} driver(s) outside the emulator's training range ({'; '.join(msgs)[:300]})")


def run_study(config: StudyConfig | None = None, emulator=None, network: xr.Dataset | None = None,
              progress=False) -> StudyResult:
    """Run the operational-parameter study (see the module doc and :class:`StudyConfig`).

    emulator : the inference model (default ``ailand.Emulator.default()``).
    network : a site network (default ``site_network(config.n_sites, config.seed)``); checked
        by :func:`ailand.network.check_network` (a NaN static field raises ``ValueError``).
    progress : stage lines and bars on stderr (``True`` or a :class:`calibration.progress.Progress`).
    """
    cfg = (config or StudyConfig()).check()
    pg = as_progress(progress)
    T: dict = {}
    notes: list = []
    t_all = time.perf_counter()
    em = ailand.Emulator.default() if emulator is None else emulator
    phys = ailand.ToyEcLand(dt=cfg.dt, dtype=torch.float64, compile="auto")
    space = phys.space.subset(list(cfg.params))

    # ---------------------------------------------------------------- network and truth
    t = time.perf_counter()
    with pg.stage(f"network: {cfg.n_sites} sites, weather {cfg.start} .. {cfg.end}"):
        net = site_network(cfg.n_sites, seed=cfg.seed, parents=None if cfg.parents is None else list(cfg.parents)) if network is None else check_network(network.copy())
        freq = f"{cfg.dt / 3600:g}h" if cfg.dt >= 3600 and cfg.dt % 3600 == 0 else "1h"
        forcing = ailand.synthetic_forcing(net, cfg.start, cfg.end, freq=freq, seed=cfg.weather_seed)
    S = net.sizes["site"]
    sites = np.asarray(net["site"].values).astype(str)
    truth = true_parameter_field(net, space, seed=cfg.seed, noise_scale=cfg.truth_noise)
    net["true_parameters"] = truth
    T["network"] = time.perf_counter() - t

    t = time.perf_counter()
    with pg.stage(f"physics: {cfg.spinup_years} spin-up year(s) at {S} sites, then the truth and the prior"):
        state0 = phys.initial_conditions(forcing, spinup_years=cfg.spinup_years)
        obs_all = Observe([*FLUXES, *PROPAGATED], freq="1D")
        truth_run = SiteRunner(phys, forcing, space, obs_all, sites, state0=state0, column_names=sites)
        P = np.stack([truth.values, np.tile(space.default_vector, (S, 1))])  # (2, S, d)
        y_both = truth_run(P)
    lab_all = truth_run.labels
    is_flux = np.asarray(lab_all.get_level_values("variable").isin(FLUXES))
    flux_labels = lab_all[is_flux]
    y_true = y_both[0, is_flux]
    y_prior = y_both[1, is_flux]
    obs_std = cfg.noise * series_std(y_true, flux_labels)
    rng = np.random.default_rng([cfg.seed, 61])
    y_obs = y_true + obs_std * rng.standard_normal(y_true.size)
    truth_extra = xr.DataArray(y_both[0, ~is_flux])  # Evap, swvl at the truth (propagation check)
    T["physics_truth"] = time.perf_counter() - t

    # -------------------------------------------------------------------- groupings
    t = time.perf_counter()
    prior_rmse = site_rmse(y_prior, y_obs, flux_labels, sites).isel(member=0).to_pandas()
    X, pgroups = cluster_predictors(net, prior_rmse)
    held = split_sites(net, cfg.n_held_out, seed=cfg.seed)
    net["held_out"] = ("site", held, {"long_name": "held out from every calibration (test site)"})
    groupings, importance = {}, {}
    with pg.stage(f"groupings: {', '.join(cfg.strategies)}"):
        for s in cfg.strategies:
            gr = group_sites(net, s, predictors=X, k_range=cfg.k_range, min_group_size=cfg.min_group_size, seed=cfg.seed)
            groupings[s] = gr
            net[f"group_{s}"] = ("site", np.asarray(gr.labels, dtype=str), {"long_name": f"group of each site ({s})"})
            if s in ("kmeans", "hierarchical") and cfg.importance:
                importance[s] = cluster_importance(X, gr.labels, pgroups, seed=cfg.seed)
    T["groupings"] = time.perf_counter() - t

    # ------------------------------------------------ calibration columns of every strategy
    col_sites, col_group, group_names, group_strategy, cal_sets = [], [], [], [], {}
    for s in cfg.strategies:
        gr = groupings[s]
        if s == "per_site":
            if cfg.per_site_columns == "all":
                chosen = np.arange(S)
            else:
                chosen = set(np.flatnonzero(held))
                for c in ("kmeans", "hierarchical"):
                    for idx in cal_sets.get(c, {}).values():
                        chosen.update(idx.tolist())
                if not chosen.difference(np.flatnonzero(held)):  # no learnt clusters: every non-held-out site used by a group
                    for cs in cal_sets.values():
                        for idx in cs.values():
                            chosen.update(idx.tolist())
                chosen = np.array(sorted(chosen))
            cal = {sites[i]: np.array([i]) for i in chosen}
        else:
            cal = calibration_sites(gr, ~held, cfg.per_group, seed=cfg.seed, empty="skip")
            missing = [g for g in gr.groups if g not in cal]
            if missing:
                n_miss = int(np.isin(gr.labels, missing).sum())
                notes.append(f"{s}: group(s) {missing} ({n_miss} site(s), all held out) have no calibration site; "
                             f"their sites get {'the global set' if 'global' in cfg.strategies else 'the prior (default) parameters'}")
        cal_sets[s] = cal
        for g, idx in cal.items():
            gid = len(group_names)
            group_names.append(f"{s}:{g}")
            group_strategy.append(s)
            col_sites += [sites[i] for i in idx]
            col_group += [gid] * len(idx)
    col_sites = np.asarray(col_sites)
    col_group = np.asarray(col_group)
    distinct = np.array(sorted(set(col_sites)))
    pg.say(f"calibration: {len(group_names)} groups over {len(col_sites)} columns ({len(distinct)} distinct sites)")

    # ------------------------------------------------------- the emulator's error in R
    obs_flux = Observe(list(FLUXES), freq="1D")
    site_lab = pd.MultiIndex.from_arrays([flux_labels.get_level_values("variable"),
                                          flux_labels.get_level_values("site").astype(str),
                                          flux_labels.get_level_values("time")])
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em_distinct = SiteRunner(em, forcing, space, obs_flux, distinct, state0=state0, column_names=distinct)
    _warnings_to_notes(caught, notes, "calibration sites")
    D_cols = None
    if cfg.model_error_draws:
        ph_distinct = SiteRunner(phys, forcing, space, obs_flux, distinct, state0=state0, column_names=distinct)
        with pg.stage(f"emulator error against the physics: {cfg.model_error_draws} prior draws x {len(distinct)} sites x 2 models"):
            me = model_error(em_distinct, ph_distinct, space, n=cfg.model_error_draws, seed=cfg.seed, progress=pg)
        # map each column's data to its site's data
        dl = em_distinct.labels
        pos = pd.Series(np.arange(len(dl)), index=pd.MultiIndex.from_arrays(
            [dl.get_level_values("variable"), dl.get_level_values("site").astype(str), dl.get_level_values("time")]))
    T["model_error"] = time.perf_counter() - t

    # ------------------------------------------------------------------- calibration
    t = time.perf_counter()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        em_cols = SiteRunner(em, forcing, space, obs_flux, col_sites, state0=state0)
    cl = em_cols.labels
    col_site_of = dict(zip(em_cols.columns, em_cols.sites))
    key = pd.MultiIndex.from_arrays([cl.get_level_values("variable"), [col_site_of[c] for c in cl.get_level_values("site")],
                                     cl.get_level_values("time")])
    obs_pos = pd.Series(np.arange(len(site_lab)), index=site_lab).reindex(key).to_numpy()
    y_cols, std_cols = y_obs[obs_pos], obs_std[obs_pos]
    if cfg.model_error_draws:
        D_cols = me.differences[:, pos.reindex(key).to_numpy()]
    with pg.stage(f"calibration: {len(group_names)} groups of {len(cfg.strategies)} strategies in lock-step (emulator)"):
        cal_res = calibrate_groups(em_cols, y_cols, std_cols, col_group, D=D_cols, maxiter=cfg.maxiter, fd=cfg.fd,
                                   progress=pg, group_names=group_names, options={"ftol": cfg.ftol, "xtol": 1e-3})
    T["calibration"] = time.perf_counter() - t

    # --------------------------------------------------------- parameters of every site
    strategies = list(cfg.strategies)
    Pall = np.full((len(strategies), S, len(space)), np.nan)
    xg = cal_res.parameters()
    for k, s in enumerate(strategies):
        gr = groupings[s]
        for j in range(S):
            name = f"{s}:{gr.labels[j]}"
            if name in xg:
                Pall[k, j] = xg[name]
            elif s != "per_site":  # a group without calibration site (see the notes)
                Pall[k, j] = xg.get("global:all", space.default_vector)
    params = xr.DataArray(Pall, dims=("strategy", "site", "parameter"),
                          coords={"strategy": strategies, "site": sites, "parameter": space.names},
                          name="parameters", attrs={"long_name": "operational parameters of each site (NaN: none)"})

    # ---------------------------------------------------------- the check: the physics
    t = time.perf_counter()
    with pg.stage(f"check: the physics at every strategy's parameters ({len(strategies)} members x {S} sites)"):
        eval_run = SiteRunner(phys, forcing, space, obs_flux, sites, state0=state0, column_names=sites)
        Pe = np.where(np.isnan(Pall), space.default_vector, Pall)
        y_eval = eval_run(Pe)
    ev_lab = eval_run.labels
    order = pd.Series(np.arange(len(site_lab)), index=site_lab).reindex(pd.MultiIndex.from_arrays(
        [ev_lab.get_level_values("variable"), ev_lab.get_level_values("site").astype(str), ev_lab.get_level_values("time")])).to_numpy()
    yo = y_obs[order]
    R = site_rmse(y_eval, yo, ev_lab, sites).sel(variable=list(FLUXES)).values  # (strategy, S, 2)
    R = np.where(np.isnan(Pall[..., :1]), np.nan, R)
    prior_rm = prior_rmse[list(FLUXES)].to_numpy(float)
    rmse = xr.DataArray(np.concatenate([prior_rm[None], R]), dims=("strategy", "site", "variable"),
                        coords={"strategy": ["prior", *strategies], "site": sites, "variable": list(FLUXES)},
                        name="rmse", attrs={"units": "W m-2", "long_name": "RMSE of daily means (physics) against the observations"})
    T["check"] = time.perf_counter() - t

    # ---------------------------------------------------------------------- the table
    Ut = np.asarray(space.to_unit(truth.values))
    cal_mask = {s: np.isin(sites, [sites[i] for idx in cal_sets[s].values() for i in idx]) for s in strategies}
    noise_rms = float(np.sqrt(np.mean(obs_std**2)))
    rows = {}
    for k, s in enumerate(["prior", *strategies]):
        Pk = np.tile(space.default_vector, (S, 1)) if s == "prior" else Pall[k - 1]
        dist = np.sqrt(_nanmean((np.asarray(space.to_unit(Pk)) - Ut) ** 2, axis=1))  # (S,)
        cm = cal_mask.get(s, np.zeros(S, bool))
        rk = rmse.sel(strategy=s).values
        rows[s] = {"groups": 1 if s == "prior" else len(cal_sets[s]),
                   "heldout_Qle": _nanmean(rk[held, 0]), "heldout_Qh": _nanmean(rk[held, 1]),
                   "cal_Qle": _nanmean(rk[cm, 0]), "cal_Qh": _nanmean(rk[cm, 1]),
                   "distance_heldout": float(_nanmean(dist[held])), "distance_all": float(_nanmean(dist)),
                   "n_cal_sites": int(cm.sum())}
    table = pd.DataFrame(rows).T
    table.index.name = "strategy"
    for c in ("groups", "n_cal_sites"):
        table[c] = table[c].astype(int)
    notes.append(f"noise std RMS {noise_rms:.2f} W m-2 (the RMSE of a perfect model); held-out RMSEs of per_site are "
                 "an upper bound (those sites calibrated on their own data)")
    if "kmeans" in groupings:
        notes.append(f"k-means: k = {groupings['kmeans'].info.get('k')} by the silhouette criterion "
                     f"({ {k: round(v, 3) for k, v in groupings['kmeans'].info.get('silhouette', {}).items()} })")
    if "hierarchical" in groupings:
        notes.append(f"hierarchical (Ward): k = {groupings['hierarchical'].info.get('k')} by the silhouette criterion")

    # ------------------------------------------------ the emulator's error on the network
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        em_all = SiteRunner(em, forcing, space, obs_flux, sites, state0=state0, column_names=sites)
        y_em_truth = em_all(truth.values[None])[0]
    _warnings_to_notes(caught, notes, "network sites")
    err = site_rmse(y_em_truth, y_true[order], ev_lab, sites).isel(member=0).to_pandas()
    err["parent"] = np.asarray(net["parent"].values).astype(str)
    emulator_error = err.groupby("parent")[list(FLUXES)].mean()
    emulator_error.loc["all sites"] = err[list(FLUXES)].mean()
    emulator_error.columns = [f"emulator RMSE {v} [W m-2]" for v in FLUXES]
    if cfg.model_error_draws:
        emulator_error.attrs["prior_draw_rms"] = {v: float(np.sqrt(np.mean(me.differences[:, np.asarray(
            em_distinct.labels.get_level_values("variable") == v)] ** 2))) for v in FLUXES}
        notes.append("emulator - physics RMS over the prior draws at the calibration sites: " + ", ".join(
            f"{v} {r:.1f} W m-2" for v, r in emulator_error.attrs["prior_draw_rms"].items()))
    T["emulator_error"] = time.perf_counter() - t

    result = StudyResult(config=cfg, network=net, table=table, rmse=rmse, parameters=params, importance=importance,
                         emulator_error=emulator_error, equifinality=None, propagation=None, timings=T,
                         calibration=cal_res, notes=notes)

    # ------------------------------------------------- equifinality and propagation
    if (cfg.equifinality or cfg.propagation) and "kmeans" in groupings:
        cluster = str(groupings["kmeans"].sizes().idxmax())  # the largest
        cal_idx = cal_sets["kmeans"][cluster]
        ho_idx = np.flatnonzero(held & (groupings["kmeans"].labels == cluster))
        t = time.perf_counter()
        problem, fw = _cluster_problem(em, forcing, space, state0, sites[cal_idx], site_lab, y_obs, obs_std,
                                       me if cfg.model_error_draws else None, em_distinct.labels if cfg.model_error_draws else None)
        eq = None
        if cfg.equifinality:
            with pg.stage(f"equifinality, cluster kmeans:{cluster} ({len(cal_idx)} calibration sites): "
                          f"{cfg.n_guesses} first guesses, EKI and ES-MDA x {cfg.n_seeds} seeds"):
                eq = _equifinality(cfg, problem, phys, forcing, space, state0, sites[np.concatenate([cal_idx, ho_idx])],
                                   len(cal_idx), site_lab, y_obs, truth, pg)
            eq.attrs["cluster"] = f"kmeans:{cluster}"
            result.equifinality = eq
        T["equifinality"] = time.perf_counter() - t
        if cfg.propagation and len(ho_idx):
            t = time.perf_counter()
            with pg.stage(f"propagation: posterior and prior ({cfg.n_samples} draws each) through the emulator at "
                          f"{len(ho_idx)} held-out sites"):
                result.propagation = _propagate(cfg, problem, em, forcing, space, state0, sites[ho_idx], net, lab_all,
                                                is_flux, truth_extra.values, eq)
            result.propagation.attrs["cluster"] = f"kmeans:{cluster}"
            T["propagation"] = time.perf_counter() - t
    T["total"] = time.perf_counter() - t_all
    return result


def _cluster_problem(em, forcing, space, state0, cal_sites, site_lab, y_obs, obs_std, me, me_labels):
    """A multi-site :class:`Problem` for one cluster: one parameter set, its calibration
    sites, the emulator as forward, R = diag(obs_std^2) + S (whitened, see WhitenedForward)."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fw = Forward(em, forcing.sel(site=list(cal_sites)), space, Observe(list(FLUXES), freq="1D"),
                     state0=state0.sel(site=list(cal_sites)))
    lab = fw.labels
    key = pd.MultiIndex.from_arrays([lab.get_level_values("variable"), lab.get_level_values("site").astype(str),
                                     lab.get_level_values("time")])
    pos = pd.Series(np.arange(len(site_lab)), index=site_lab).reindex(key).to_numpy()
    D = None
    if me is not None:
        mpos = pd.Series(np.arange(len(me_labels)), index=pd.MultiIndex.from_arrays(
            [me_labels.get_level_values("variable"), me_labels.get_level_values("site").astype(str),
             me_labels.get_level_values("time")])).reindex(key).to_numpy()
        D = me.differences[:, mpos]
    wf = WhitenedForward(fw, y_obs[pos], obs_std[pos], D)
    return Problem(wf, wf.y, obs_std=1.0, prior=space), fw


def _equifinality(cfg, problem, phys, forcing, space, state0, check_sites, n_cal, site_lab, y_obs, truth, pg):
    """16 first guesses (variational), EKI and ES-MDA from ``n_seeds`` seeds; the physics at every
    answer on the cluster's calibration and held-out sites."""
    var = variational(problem, n_starts=cfg.n_guesses, seed=cfg.seed, maxiter=50, progress=pg)
    ek, es = [], []
    with pg.bar(2 * cfg.n_seeds, desc="EKI / ES-MDA seeds", unit="run") as bar:
        for k in range(cfg.n_seeds):
            ek.append(eki(problem, n_ensemble=cfg.n_ensemble, seed=cfg.seed + k))
            bar.update(1)
            es.append(esmda(problem, n_ensemble=cfg.n_ensemble, seed=cfg.seed + k))
            bar.update(1)
    X = np.concatenate([space.default_vector[None], var.optima, np.array([r.mean for r in ek]), np.array([r.mean for r in es])])
    method = ["prior"] + ["variational"] * len(var.optima) + ["eki"] * len(ek) + ["esmda"] * len(es)
    run = SiteRunner(phys, forcing, space, Observe(list(FLUXES), freq="1D"), check_sites, state0=state0,
                     column_names=check_sites)
    y = run(X)
    lab = run.labels
    pos = pd.Series(np.arange(len(site_lab)), index=site_lab).reindex(pd.MultiIndex.from_arrays(
        [lab.get_level_values("variable"), lab.get_level_values("site").astype(str), lab.get_level_values("time")])).to_numpy()
    rm = site_rmse(y, y_obs[pos], lab, check_sites).sel(variable=list(FLUXES))  # (answer, site, variable)
    cal, ho = list(check_sites[:n_cal]), list(check_sites[n_cal:])

    def mean_rmse(subset):
        if not subset:
            return np.full(len(X), np.nan)
        return rm.sel(site=subset).mean(("site", "variable")).values

    r_cal, r_ho = mean_rmse(cal), mean_rmse(ho)
    red_cal, red_ho = 1.0 - r_cal / r_cal[0], 1.0 - r_ho / r_ho[0]
    U = np.asarray(space.to_unit(X))
    ens_corr = np.array([np.corrcoef(problem.to_u(r.posterior_ensemble).T) for r in [*ek, *es]])
    t_cal = np.asarray(space.to_unit(truth.sel(site=cal).values)).mean(0)
    ds = xr.Dataset(
        {"x": (("answer", "parameter"), X, {"long_name": "parameters found (answer 0: the prior mean)"}),
         "u": (("answer", "parameter"), U, {"long_name": "parameters found, unit cube", "units": "1"}),
         "rmse_cal": (("answer",), r_cal, {"units": "W m-2", "long_name": "physics RMSE, daily Qle and Qh, calibration sites"}),
         "rmse_heldout": (("answer",), r_ho, {"units": "W m-2", "long_name": "physics RMSE, daily Qle and Qh, held-out sites"}),
         "reduction_cal": (("answer",), red_cal, {"units": "1", "long_name": "1 - RMSE / prior RMSE, calibration sites"}),
         "reduction_heldout": (("answer",), red_ho, {"units": "1", "long_name": "1 - RMSE / prior RMSE, held-out sites"}),
         "J": (("answer",), np.concatenate([[np.nan], var.J_optima, [np.nan] * (len(ek) + len(es))]), {"units": "1"}),
         "gn_corr": (("parameter", "parameter_"), var.corr, {"long_name": "Gauss-Newton posterior correlation at the best guess"}),
         "ensemble_corr": (("run", "parameter", "parameter_"), ens_corr,
                           {"long_name": "correlation of the final EKI (runs 0..n-1) and ES-MDA ensembles (control u)"}),
         "ensemble_u": (("run", "member", "parameter"), _padded([np.asarray(space.to_unit(r.posterior_ensemble))
                                                                 for r in [*ek, *es]], cfg.n_ensemble),
                        {"long_name": "final ensembles, unit cube"}),
         "truth_u_mean": (("parameter",), t_cal, {"long_name": "mean true parameters of the calibration sites, unit cube"}),
         "gn_std": (("parameter",), var.std, {"long_name": "Gauss-Newton posterior std at the best guess"})},
        coords={"answer": np.arange(len(X)), "method": ("answer", method), "parameter": space.names,
                "parameter_": space.names, "run": np.arange(len(ek) + len(es)),
                "run_method": ("run", ["eki"] * len(ek) + ["esmda"] * len(es)), "member": np.arange(cfg.n_ensemble)},
    )
    lines = ["| method | answers | RMSE reduction, cal. sites: median [min, max] | held-out sites: median [min, max] |",
             "|---|---|---|---|"]
    for mth in ("variational", "eki", "esmda"):
        sel = np.asarray(method) == mth
        a, b = red_cal[sel], red_ho[sel]
        lines.append(f"| {mth} | {int(sel.sum())} | {np.median(a):.3f} [{a.min():.3f}, {a.max():.3f}] | "
                     f"{np.nanmedian(b) if np.isfinite(b).any() else np.nan:.3f} "
                     f"[{np.nanmin(b) if np.isfinite(b).any() else np.nan:.3f}, {np.nanmax(b) if np.isfinite(b).any() else np.nan:.3f}] |")
    lines += ["", "| parameter | truth (mean of cal. sites) | variational median [IQR] | EKI median [IQR] | ES-MDA median [IQR] |",
              "|---|---|---|---|---|"]
    for j, n in enumerate(space.names):
        cells = []
        for mth in ("variational", "eki", "esmda"):
            v = X[np.asarray(method) == mth, j]
            q1, q2, q3 = np.percentile(v, [25, 50, 75])
            cells.append(f"{q2:.4g} [{q1:.4g}, {q3:.4g}]")
        tv = float(np.asarray(space.from_unit(t_cal))[j])
        lines.append(f"| {n} | {tv:.4g} | " + " | ".join(cells) + " |")
    iu = np.triu_indices(len(space), 1)
    pairs = sorted(zip(np.abs(var.corr[iu]), var.corr[iu], iu[0], iu[1]), reverse=True)
    mcorr = np.median(ens_corr, axis=0)
    lines += ["", "Trade-off pairs (Gauss-Newton posterior correlation at the best guess; median over the ensemble runs): "
              + "; ".join(f"{space.names[i]}-{space.names[j]} {c:+.2f} ({mcorr[i, j]:+.2f})" for _, c, i, j in pairs[:3])]
    ds.attrs = {"summary": "\n".join(lines), "n_ensemble": int(cfg.n_ensemble),
                "variational_best_J": float(var.J), "n_forward_runs_variational": int(var.n_forward_runs)}
    ds.attrs["_gn_A_control"] = var.A_control.ravel().tolist()
    ds.attrs["_gn_x"] = var.x.tolist()
    return ds


def _padded(arrays, n):
    """List of ``(n_i, d)`` arrays -> ``(len, n, d)``, NaN-padded (failed members dropped)."""
    out = np.full((len(arrays), n, arrays[0].shape[1]), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a[:n]
    return out


def _sample_control(problem, mean_x, A, n, rng):
    """``n`` physical draws of ``z ~ N(z(mean_x), A)`` clipped to the bounds."""
    z = problem.to_control(np.asarray(mean_x, dtype=float))
    L = np.linalg.cholesky(np.asarray(A) + 1e-12 * np.eye(len(z)))
    X = np.asarray(problem.from_control(z + rng.standard_normal((n, len(z))) @ L.T))
    return np.clip(X, problem.bounds[:, 0], problem.bounds[:, 1])


def _propagate(cfg, problem, em, forcing, space, state0, ho_sites, net, lab_all, is_flux, y_truth_extra, eq):
    """Posterior and prior predictive of annual ET [mm yr-1] and summer top-metre soil moisture
    [m3 m-3] at held-out sites, through the emulator; the physics at the truth for comparison."""
    rng = np.random.default_rng([cfg.seed, 71])
    if eq is not None:
        x_post, A = np.array(eq.attrs["_gn_x"]), np.array(eq.attrs["_gn_A_control"]).reshape(len(space), len(space))
    else:
        v = variational(problem, n_starts=4, seed=cfg.seed)
        x_post, A = v.x, v.A_control
    post = _sample_control(problem, x_post, A, cfg.n_samples, rng)
    prior = _sample_control(problem, problem.x_b, problem.B, cfg.n_samples, rng)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        run = SiteRunner(em, forcing, space, Observe(list(PROPAGATED), freq="1D"), ho_sites, state0=state0,
                         column_names=ho_sites)
        y = run(np.concatenate([post, prior]))  # (2n, m)
    summer = _summer_months(net, ho_sites)
    et, sm = _diagnose(y, run.labels, ho_sites, summer)  # (2n, H)
    lab_x = lab_all[~is_flux]
    keep = np.isin(np.asarray(lab_x.get_level_values("site")).astype(str), ho_sites)
    et_t, sm_t = _diagnose(y_truth_extra[keep][None], lab_x[keep], ho_sites, summer)
    n = cfg.n_samples
    q = [5, 50, 95]
    out = xr.Dataset(
        {"annual_et_posterior": (("sample", "site"), et[:n]), "annual_et_prior": (("sample", "site"), et[n:]),
         "annual_et_truth": (("site",), et_t[0]),
         "summer_sm_posterior": (("sample", "site"), sm[:n]), "summer_sm_prior": (("sample", "site"), sm[n:]),
         "summer_sm_truth": (("site",), sm_t[0])},
        coords={"site": ho_sites, "sample": np.arange(n)},
    )
    for v in ("annual_et", "summer_sm"):
        u = "mm yr-1" if v == "annual_et" else "m3 m-3"
        for k in ("posterior", "prior", "truth"):
            out[f"{v}_{k}"].attrs = {"units": u, "long_name": {"annual_et": "annual evapotranspiration",
                                                             "summer_sm": "top-metre soil moisture, 3 warmest months"}[v]
                                     + {"posterior": " (emulator, posterior draws)", "prior": " (emulator, prior draws)",
                                        "truth": " (physics at the true parameters)"}[k]}
    lines = ["| quantity | truth mean | prior predictive: mean, 90% width, coverage | posterior predictive: mean, 90% width, coverage |",
             "|---|---|---|---|"]
    for v, fmt in (("annual_et", "{:.0f}"), ("summer_sm", "{:.3f}")):
        tr = out[f"{v}_truth"].values
        cells = []
        for k in ("prior", "posterior"):
            a = out[f"{v}_{k}"].values
            lo, hi = np.percentile(a, [5, 95], axis=0)
            cov = float(np.mean((tr >= lo) & (tr <= hi)))
            cells.append(f"{fmt.format(a.mean())}, {fmt.format(np.mean(hi - lo))}, {cov:.2f}")
        lines.append(f"| {v} [{out[f'{v}_truth'].attrs['units']}] | {fmt.format(tr.mean())} | {cells[0]} | {cells[1]} |")
    err = {k: float(np.sqrt(np.mean((np.median(out[f'annual_et_{k}'].values, 0) - out['annual_et_truth'].values) ** 2)))
           for k in ("prior", "posterior")}
    lines += ["", f"RMSE of the predictive median of annual ET against the physics truth over {len(ho_sites)} held-out sites: "
              f"prior {err['prior']:.0f}, posterior {err['posterior']:.0f} mm yr-1 (the emulator's own error included)."]
    out.attrs = {"summary": "\n".join(lines), "percentiles": str(q)}
    return out


def _summer_months(net, sites) -> dict:
    """site -> its calendar months, warmest first (from the network's monthly climatology)."""
    t = net["clim_temperature"].sel(site=list(sites)).values
    return {s: np.argsort(-t[i]) + 1 for i, s in enumerate(sites)}


def _diagnose(y, labels, sites, summer):
    """(n, m) daily Evap, swvl1..3 -> annual ET [mm yr-1] (window-mean rate x 365.25 d) and summer
    top-metre soil moisture (the site's three warmest months within the window), (n, H)."""
    var = np.asarray(labels.get_level_values("variable"))
    st = np.asarray(labels.get_level_values("site")).astype(str)
    mon = pd.DatetimeIndex(labels.get_level_values("time")).month.to_numpy()
    n = y.shape[0]
    et, sm = np.empty((n, len(sites))), np.empty((n, len(sites)))
    for i, s in enumerate(sites):
        e = y[:, (var == "Evap") & (st == s)]
        et[:, i] = e.mean(1) * 86400.0 * 365.25
        present = [m for m in summer[s] if (mon[st == s] == m).any()][:3]  # the 3 warmest months in the window
        sel = np.isin(mon, present) & (st == s)
        layers = [y[:, sel & (var == f"swvl{k}")].mean(1) for k in (1, 2, 3)]
        sm[:, i] = sum(w * l for w, l in zip(_LAYER, layers)) / _LAYER.sum()
    return et, sm
