"""The emission inversion: an LETKF smoother of log emission scaling factors from AOD.

Control: the log scaling factor ``x = log f`` of the prior emission for every control cell
(land cell with a preferential dust source, ``dust_source > 0``, that emits at some time of
the run) and every ``period_days`` period (3 days, as CAMS). The factor multiplies the
prior emission of :class:`ailand.dust.DustChain`; analysing ``log f`` keeps ``f > 0`` and makes
the multiplicative perturbations Gaussian.

One cycle per period ``k`` (CAMS: 1 control + 20 members, perturbations of the first three
days, cycling every 3 days)::

    background   x_k^(i) = mu_k + sigma g^(i),  mu_k = persistence x mean(x_(k-1)^a),
                 g^(i) unit-variance Gaussian-correlated fields on the sphere (length L),
                 centred over the 20 perturbed members; member 0 (the control) g = 0
    forecast     every member's aerosol run over period k from its own load, with f = exp(x^(i))
    observe      HE = AOD of each member at the satellite super-observations of period k
    analyse      z = [load at the end of k | x_(k-lag) .. x_k | AOD at held-out sites during k]
                 z_a = z + M X  per variable (LETKF, Hunt et al. 2007), R-localised by the
                 Gaspari-Cohn taper of the great-circle distance from the variable's cell to
                 each observation (:func:`calibration.ensemble_kalman.letkf`)
    smooth       the same weights update the factors of the previous ``lag`` periods, whose
                 dust is still in the air: a fixed-lag smoother (``lag = 4``: each period is
                 seen through 15 days of observations, the CAMS 15-day window), with their
                 coefficients tapered by exp(-age x period_days / lag_decay_days) (temporal
                 localisation, age in periods)
    restart      loads (clipped at 0) and factors carry on to the next cycle

The forecast of each member over the whole window is *not* rerun after the analysis: the
analysed load is the LETKF update of the members' loads (the load is linear in the
emission), which makes the cost one ensemble run of the aerosol model for the whole period
(plus the analyses), instead of ``lag + 1`` reruns (the CAMS 15-day forecast every 3 days).

In the twin (default region, July 2020) the lagged updates neither help nor hurt: the
smoothed factors score within 0.01 in log-factor RMSE of the filter's (``lag = 0``); without the
temporal taper they were worse. Dust lives ~4 days and each period's perturbations are
independent, so little of a new period's AOD is explained by old emission.

Factors of a period whose prior emission is zero at a cell are not analysed (their
coefficients are 0: nothing constrains them). A member whose run raises or gives non-finite
values is dropped (logged as a warning, counted in ``n_dropped``); fewer than 2 left is an error.

Shapes: ``N`` members, ``n_c`` control cells, ``P`` periods, ``T`` forcing steps, ``m``
observations of a period, ``S`` held-out sites. Log factors are dimensionless; AOD is
dimensionless; loads in kg m-2.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import xarray as xr

from ailand.dust import PointSampler
from calibration.ensemble_kalman import inflate, letkf, rtps
from calibration.ensemble_kalman.localisation import EARTH_RADIUS_KM, GC_SCALE, TAPERS, taper
from calibration.progress import as_progress

from .observations import ObsOperator
from .perturbations import CorrelatedField, _lengths, member_perturbations

log = logging.getLogger(__name__)

__all__ = ["InversionConfig", "InversionResult", "EmissionSmoother", "control_cells"]


@dataclass(frozen=True)
class InversionConfig:
    """Settings of :class:`EmissionSmoother`.

    members : ensemble size N including the control member (>= 2; CAMS: 21 = 1 + 20).
    period_days : length of a scaling-factor period and of a cycle [days] (CAMS: 3).
    lag : earlier periods updated by each analysis (fixed-lag smoother; 0 = filter). Each period
        is seen by ``(lag + 1) x period_days`` days of observations (4: 15 days).
    log_std : standard deviation of the log-factor perturbations (0.3: factor 1.35 at 1 sigma;
        in the twin 0.3 beat 0.5 and matched 0.2: the prior spread should match the real errors).
    corr_length_km : correlation length of the perturbations [km] (CAMS v1: 250), or a range
        ``(min, max)`` (CAMS v2: 300-3000): each member draws its length log-uniformly among 6
        lengths spanning it.
    loc_rad_km : localisation radius [km] (coefficient exp(-1/2) there; the Gaspari-Cohn taper
        vanishes beyond 3.64 x loc_rad).
    taper : ``"GC"``, ``"Gauss"`` or ``"Step"``.
    persistence : background mean of a new period = persistence x the previous period's analysis
        mean (0: the prior, f = 1, every period; 1: a random walk).
    infl : multiplicative inflation of the analysed anomalies (>= 1).
    rtps : relaxation to prior spread (Whitaker & Hamill 2012) in [0, 1].
    lag_decay_days : temporal localisation of the smoother: the coefficients of a factor ``a``
        periods older than the observations are multiplied by ``exp(-a x period_days /
        lag_decay_days)`` (default 1.5 days); None: no decay. Old emission is mostly deposited
        or blown away, so most of its ensemble correlation with new AOD is sampling noise (in
        the twin, no decay made the smoothed factors worse than the filter's).
    tile : the local analyses run in tiles of ``tile x tile`` cells (each tile takes only the
        observations its coefficients reach; the result is identical for any tile size).
    seed : seed of the perturbations.
    """

    members: int = 21
    period_days: float = 3.0
    lag: int = 4
    log_std: float = 0.3
    corr_length_km: float | tuple = 250.0
    loc_rad_km: float = 350.0
    taper: str = "GC"
    persistence: float = 0.8
    infl: float = 1.0
    rtps: float = 0.0
    lag_decay_days: float | None = 1.5
    tile: int = 8
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.members, bool) or int(self.members) != self.members or self.members < 2:
            raise ValueError(f"members: an ensemble needs at least 2 members (1 control + >= 1 perturbed), got {self.members!r}")
        if not self.period_days > 0:
            raise ValueError(f"period_days must be > 0, got {self.period_days!r}")
        if int(self.lag) != self.lag or self.lag < 0:
            raise ValueError(f"lag must be a non-negative integer (earlier periods updated), got {self.lag!r}")
        if not self.log_std > 0:
            raise ValueError(f"log_std must be > 0, got {self.log_std!r}")
        _lengths(self.corr_length_km)
        if not self.loc_rad_km > 0:
            raise ValueError(f"loc_rad_km must be > 0, got {self.loc_rad_km!r}")
        if self.taper not in TAPERS:
            raise ValueError(f"taper must be one of {sorted(TAPERS)}, got {self.taper!r}")
        if not 0.0 <= self.persistence <= 1.0:
            raise ValueError(f"persistence must be in [0, 1], got {self.persistence!r}")
        if not self.infl >= 1.0:
            raise ValueError(f"infl must be >= 1, got {self.infl!r}")
        if not 0.0 <= self.rtps <= 1.0:
            raise ValueError(f"rtps must be in [0, 1], got {self.rtps!r}")
        if self.lag_decay_days is not None and not self.lag_decay_days > 0:
            raise ValueError(f"lag_decay_days must be > 0 or None, got {self.lag_decay_days!r}")
        if int(self.tile) != self.tile or self.tile < 1:
            raise ValueError(f"tile must be a positive integer, got {self.tile!r}")

    def as_attrs(self) -> dict:
        """Settings as NetCDF attributes (``inv_`` prefix; a length range as a string)."""
        return {f"inv_{k}": (str(v) if isinstance(v, (tuple, list)) or v is None else v) for k, v in asdict(self).items()}


def control_cells(chain) -> tuple[np.ndarray, np.ndarray]:
    """``(j, i)`` of the control cells of a :class:`ailand.dust.DustChain`: land (``lsm >= 0.5``),
    ``dust_source > 0`` and a prior emission > 0 at some step. Raises when there are none."""
    w = chain.world
    emits = (chain.emission > 0).any(0).numpy()
    mask = (w["lsm"].values >= 0.5) & (w["dust_source"].values > 0) & emits
    j, i = np.nonzero(mask)
    if j.size == 0:
        raise ValueError("no cell emits dust in this world and period (nothing to invert); choose a region with "
                         "deserts or a longer/drier period")
    return j, i


@dataclass
class InversionResult:
    """What :meth:`EmissionSmoother.run` returns (arrays; :mod:`.product` labels them).

    config; times ``(T,)`` datetime64 forcing-step starts; period ``(T,)`` period of each step;
    period_starts ``(P,)``; control_j, control_i ``(n_c,)``; prior_emission ``(P, n_c)`` mean
    prior emission of each period [kg m-2 s-1]; ``background``, ``filter``, ``smoothed``: dicts
    with ``mean`` and ``std`` ``(P, n_c)`` of the log factors (ensemble mean and standard
    deviation; ``smoothed`` after ``lag`` later analyses); ``analysed`` ``(P, n_c)`` bool (prior
    emission > 0 in the period); sites (Dataset or None) and ``site_aod`` dict with
    ``background`` and ``analysis`` ``(T, S)`` ensemble-mean AOD (output rows: end of step);
    cycles: Dataset of per-cycle diagnostics over ``period``; dropped: list of
    ``(period, member, reason)``.
    """

    config: InversionConfig
    grid_shape: tuple
    lat: np.ndarray
    lon: np.ndarray
    times: np.ndarray
    period: np.ndarray
    period_starts: np.ndarray
    control_j: np.ndarray
    control_i: np.ndarray
    prior_emission: np.ndarray
    background: dict
    filter: dict
    smoothed: dict
    analysed: np.ndarray
    cycles: xr.Dataset
    sites: xr.Dataset | None = None
    site_aod: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def n_periods(self) -> int:
        return len(self.period_starts)

    def log_factors(self, kind: str = "smoothed", what: str = "mean") -> np.ndarray:
        """``(P, ny, nx)`` log factors of ``kind`` (``background``, ``filter`` or ``smoothed``),
        ``what`` = ``mean`` or ``std``; 0 outside the control cells."""
        src = {"background": self.background, "filter": self.filter, "smoothed": self.smoothed}.get(kind)
        if src is None:
            raise ValueError(f"kind must be 'background', 'filter' or 'smoothed', got {kind!r}")
        out = np.zeros((self.n_periods,) + tuple(self.grid_shape))
        out[:, self.control_j, self.control_i] = src[what]
        return out

    def scaling_factors(self, kind: str = "smoothed") -> np.ndarray:
        """``(P, ny, nx)`` analysed scaling factors ``exp(mean log f)`` (the median of the
        log-normal ensemble); 1 outside the control cells."""
        return np.exp(self.log_factors(kind, "mean"))


class EmissionSmoother:
    """LETKF smoother of emission scaling factors (see the module docstring).

    Parameters
    ----------
    chain : :class:`ailand.dust.DustChain` (the world, land run and prior emission).
    observations : Dataset over ``obs`` with ``step`` (AOD output row), ``lat``, ``lon`` [deg],
        ``aod`` and ``aod_error`` (> 0) e.g. from :func:`.synthetic_satellite`. Observations
        outside the grid or the time window raise ValueError.
    config : :class:`InversionConfig` (default: CAMS-like, 21 members, 3-day periods, lag 4).
    sites : optional held-out sites (``lat``, ``lon`` over ``site``): their AOD is carried in the
        analysed vector (never observed) to give the analysis AOD there.
    progress : bool or :class:`calibration.progress.Progress` (a bar over the cycles).
    """

    def __init__(self, chain, observations: xr.Dataset, config: InversionConfig | None = None, *,
                 sites: xr.Dataset | None = None, progress=False):
        self.chain = chain
        self.config = cfg = config or InversionConfig()
        self.progress = as_progress(progress)
        need = [k for k in ("step", "lat", "lon", "aod", "aod_error") if k not in observations]
        if need:
            raise ValueError(f"observations lack {need}; build them with synthetic_satellite or give these variables over 'obs'")
        y, sig = observations["aod"].values.astype(float), observations["aod_error"].values.astype(float)
        if not (np.isfinite(y).all() and np.isfinite(sig).all()):
            raise ValueError("observations: aod and aod_error must be finite (drop missing data first)")
        if (sig <= 0).any():
            raise ValueError(f"observations: aod_error must be > 0, got min {sig.min():.3g}")
        n_t = len(chain.times)
        self.op = ObsOperator(chain.grid, observations["step"].values, observations["lat"].values,
                              observations["lon"].values, n_t)
        order = np.argsort(self.op.step, kind="stable")
        if not (order == np.arange(order.size)).all():
            raise ValueError("observations must be sorted by step (satellite_geometry sorts them)")
        self.y, self.sig = torch.as_tensor(y), torch.as_tensor(sig)
        self.sites = sites
        self.site_sampler = PointSampler(chain.grid, sites["lat"].values, sites["lon"].values) if sites is not None else None
        self.period = chain.period_index(cfg.period_days)
        self.n_periods = int(self.period.max()) + 1
        self.cj, self.ci = control_cells(chain)
        ny, nx = chain.grid.shape
        self.ctrl_flat = self.cj * nx + self.ci
        self.fields = [CorrelatedField(chain.grid.lat[self.cj], chain.grid.lon[self.ci], L)
                       for L in _lengths(cfg.corr_length_km)]
        # localisation geometry: one location per cell, then per site
        lat2, lon2 = np.meshgrid(chain.grid.lat, chain.grid.lon, indexing="ij")
        self.loc_lat, self.loc_lon = lat2.ravel(), lon2.ravel()
        tiles = (np.arange(ny)[:, None] // cfg.tile) * (-(-nx // cfg.tile)) + np.arange(nx)[None, :] // cfg.tile
        self.tile_of_loc = tiles.ravel()
        if sites is not None:
            sj, si = chain.grid.index(sites["lat"].values, sites["lon"].values)
            self.loc_lat = np.concatenate([self.loc_lat, sites["lat"].values])
            self.loc_lon = np.concatenate([self.loc_lon, sites["lon"].values])
            self.tile_of_loc = np.concatenate([self.tile_of_loc, tiles[sj, si]])
        la, lo = np.radians(self.loc_lat), np.radians(self.loc_lon)
        self._loc_xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], 1)  # (n_loc, 3)

    # ------------------------------------------------------------------ pieces
    def _steps(self, p: int) -> tuple[int, int]:
        k = np.flatnonzero(self.period == p)
        return int(k[0]), int(k[-1]) + 1

    def _age_weight(self, age: int) -> float:
        """Temporal localisation of a factor ``age`` periods older than the observations:
        ``exp(-age x period_days / lag_decay_days)`` (1 for the current period)."""
        tau = self.config.lag_decay_days
        return 1.0 if age == 0 or tau is None or not np.isfinite(tau) else float(np.exp(-age * self.config.period_days / tau))

    def _forecast(self, scale: torch.Tensor, a: int, b: int, load: torch.Tensor):
        """All members over steps ``[a, b)``: ``(aod (b-a, N, ny, nx), final load (N, ny, nx), ok (N,), reasons)``."""
        try:
            res = self.chain.run(scale, start=a, stop=b, load0=load, outputs=("aod",))
            aod, fl = res.fields["aod"], res.final_load
            reasons = {}
        except (ValueError, RuntimeError, FloatingPointError) as err:  # find the culprit(s) one by one
            log.debug("batched forecast failed (%s); running the members one by one", err)
            N = scale.shape[0]
            ny, nx = self.chain.grid.shape
            aod = torch.full((b - a, N, ny, nx), float("nan"), dtype=torch.float64)
            fl = torch.full((N, ny, nx), float("nan"), dtype=torch.float64)
            reasons = {}
            for i in range(N):
                try:
                    r = self.chain.run(scale[i:i + 1], start=a, stop=b, load0=load[i:i + 1], outputs=("aod",))
                    aod[:, i], fl[i] = r.fields["aod"][:, 0], r.final_load[0]
                except (ValueError, RuntimeError, FloatingPointError) as e:
                    reasons[i] = f"run failed: {e}"
        ok = torch.isfinite(aod).all(0).flatten(1).all(1) & torch.isfinite(fl).flatten(1).all(1)
        for i in np.flatnonzero(~ok.numpy()):
            reasons.setdefault(int(i), "non-finite AOD or load")
        return aod, fl, ok, reasons

    def _coefficients(self, rows: np.ndarray) -> np.ndarray:
        """Localisation coefficients ``(n_loc, m)`` of the observations ``rows`` for every cell and
        site: ``taper(great-circle distance, loc_rad_km)``; the taper is evaluated only within
        its support (Gaspari-Cohn: 3.64 loc_rad; others: 6 loc_rad, beyond which it is < cutoff)."""
        cfg = self.config
        la, lo = np.radians(self.op.lat[rows]), np.radians(self.op.lon[rows])
        ob = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], 0)  # (3, m)
        cosang = np.clip(self._loc_xyz @ ob, -1.0, 1.0)
        reach = (2 * GC_SCALE if cfg.taper == "GC" else 6.0) * cfg.loc_rad_km
        near = cosang > np.cos(min(reach / EARTH_RADIUS_KM, np.pi))
        c = np.zeros(cosang.shape)
        if near.any():
            d = EARTH_RADIUS_KM * np.arccos(cosang[near])
            c[near] = taper(d, cfg.loc_rad_km, cfg.taper)
        return c

    def _analyse(self, Z: torch.Tensor, HE: torch.Tensor, rows: np.ndarray, var_loc: np.ndarray,
                 active: torch.Tensor) -> torch.Tensor:
        """Tile-by-tile LETKF of ``Z (N, n)`` with the observations ``rows`` (``HE (N, m)``)."""
        cfg = self.config
        y, sig = self.y[rows], self.sig[rows]
        c_loc = self._coefficients(rows)  # (n_loc, m)
        tile_of_var = self.tile_of_loc[var_loc]
        order = np.argsort(tile_of_var, kind="stable")
        bounds = np.flatnonzero(np.diff(tile_of_var[order])) + 1
        Za = Z.clone()
        act = active.numpy()
        for vars_t in np.split(order, bounds):
            locs = np.unique(var_loc[vars_t])
            obs_t = np.flatnonzero(c_loc[locs].max(0) > 0)
            if obs_t.size == 0:
                continue
            C = c_loc[np.ix_(var_loc[vars_t], obs_t)] * act[vars_t, None]
            R = torch.diag(sig[obs_t] ** 2)
            Za[:, vars_t] = letkf(Z[:, vars_t], HE[:, obs_t], y[obs_t], R, torch.as_tensor(C))
        return Za

    # ------------------------------------------------------------------ the loop
    def run(self) -> InversionResult:
        cfg, chain = self.config, self.chain
        t_start = time.perf_counter()
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 1405]))
        ny, nx = chain.grid.shape
        n_cell, n_c, P = ny * nx, self.cj.size, self.n_periods
        n_s = 0 if self.sites is None else self.sites.sizes["site"]
        T = len(chain.times)
        emis = chain.emission.numpy().reshape(T, n_cell)[:, self.ctrl_flat]
        prior_em = np.stack([emis[self.period == p].mean(0) for p in range(P)])  # (P, n_c)
        analysed = prior_em > 0
        res = {k: {"mean": np.zeros((P, n_c)), "std": np.zeros((P, n_c))} for k in ("background", "filter", "smoothed")}
        site_bg = np.full((T, n_s), np.nan)
        site_an = np.full((T, n_s), np.nan)
        diag = {k: np.full(P, np.nan) for k in ("n_obs", "n_members", "innovation_mean", "innovation_rms", "spread_obs",
                                                "obs_error_rms", "chi2", "spread_log_factor_b", "spread_log_factor_a",
                                                "wall_forecast_s", "wall_analysis_s")}
        diag["n_dropped"] = np.zeros(P)
        dropped = []
        ids = np.arange(cfg.members)
        load = torch.zeros((cfg.members, ny, nx), dtype=torch.float64)
        window: list[list] = []  # [period, F (N, n_c) tensor]
        step_of_obs = self.op.step

        def settle(q, F):
            res["smoothed"]["mean"][q], res["smoothed"]["std"][q] = F.mean(0).numpy(), F.std(0).numpy()

        bar = self.progress.bar(total=P, desc=f"dust LETKF smoother N={cfg.members}", unit="cycle")
        with bar:
            for p in range(P):
                a, b = self._steps(p)
                N = ids.size
                t0 = time.perf_counter()
                mu = cfg.persistence * res["filter"]["mean"][p - 1] if p > 0 else np.zeros(n_c)
                pert = np.zeros((N, n_c))
                perturbed = ids != 0
                if perturbed.any():
                    pert[perturbed] = member_perturbations(self.fields, int(perturbed.sum()), rng, center=perturbed.sum() > 1)
                F = torch.as_tensor(mu[None, :] + cfg.log_std * pert)
                res["background"]["mean"][p], res["background"]["std"][p] = F.mean(0).numpy(), F.std(0).numpy()
                window.append([p, F])
                scale = torch.ones((N, n_cell), dtype=torch.float64)
                scale[:, self.ctrl_flat] = torch.exp(F)
                aod, fl, ok, reasons = self._forecast(scale.reshape(N, 1, ny, nx), a, b, load)
                if not bool(ok.all()):
                    bad = np.flatnonzero(~ok.numpy())
                    for i in bad:
                        dropped.append((p, int(ids[i]), reasons[int(i)]))
                    log.warning("cycle %d: member(s) %s failed (%s); dropped, %d left", p, [int(ids[i]) for i in bad],
                                "; ".join(sorted({reasons[int(i)] for i in bad})), int(ok.sum()))
                    keep = ok.numpy()
                    if keep.sum() < 2:
                        raise RuntimeError(f"cycle {p}: only {int(keep.sum())} member(s) ran; an ensemble needs at least 2")
                    ids, aod, fl = ids[keep], aod[:, ok], fl[ok]
                    window = [[q, Fq[ok]] for q, Fq in window]
                    diag["n_dropped"][p] = bad.size
                    N = ids.size
                t1 = time.perf_counter()
                rows = np.arange(np.searchsorted(step_of_obs, a), np.searchsorted(step_of_obs, b))
                HE = self.op(aod, rows, a) if rows.size else torch.zeros((N, 0), dtype=torch.float64)
                S = self.site_sampler(aod).permute(1, 0, 2).reshape(N, -1) if n_s else torch.zeros((N, 0), dtype=torch.float64)
                Fs = [Fq for _, Fq in window]
                Z = torch.cat([fl.reshape(N, n_cell)] + Fs + [S], 1)
                var_loc = np.concatenate([np.arange(n_cell)] + [self.ctrl_flat] * len(Fs)
                                         + [n_cell + np.tile(np.arange(n_s), b - a)])
                active = torch.cat([torch.ones(n_cell, dtype=torch.float64)]
                                   + [torch.as_tensor(analysed[q] * self._age_weight(p - q), dtype=torch.float64)
                                      for q, _ in window]
                                   + [torch.ones(S.shape[1], dtype=torch.float64)])
                if rows.size:
                    Za = self._analyse(Z, HE, rows, var_loc, active)
                    if cfg.rtps:
                        Za = rtps(Za, Z, cfg.rtps)
                    if cfg.infl != 1.0:
                        Za = inflate(Za, cfg.infl)
                else:
                    Za = Z
                # unpack
                load = Za[:, :n_cell].clamp(min=0.0).reshape(N, ny, nx)
                off = n_cell
                for w in window:
                    w[1] = Za[:, off:off + n_c]
                    off += n_c
                Sa = Za[:, off:]
                if n_s:
                    site_bg[a:b] = S.mean(0).reshape(b - a, n_s).numpy()
                    site_an[a:b] = Sa.mean(0).reshape(b - a, n_s).numpy()
                Fa = window[-1][1]
                res["filter"]["mean"][p], res["filter"]["std"][p] = Fa.mean(0).numpy(), Fa.std(0).numpy()
                if len(window) > cfg.lag:
                    settle(*window.pop(0))
                t2 = time.perf_counter()
                # diagnostics
                m = rows.size
                diag["n_obs"][p], diag["n_members"][p] = m, N
                act = analysed[p]
                if act.any():
                    diag["spread_log_factor_b"][p] = float(np.sqrt(np.mean(res["background"]["std"][p][act] ** 2)))
                    diag["spread_log_factor_a"][p] = float(np.sqrt(np.mean(res["filter"]["std"][p][act] ** 2)))
                if m:
                    d = (self.y[rows] - HE.mean(0)).numpy()
                    var_he = HE.var(0).numpy()
                    s2 = self.sig[rows].numpy() ** 2
                    diag["innovation_mean"][p], diag["innovation_rms"][p] = d.mean(), np.sqrt((d**2).mean())
                    diag["spread_obs"][p], diag["obs_error_rms"][p] = np.sqrt(var_he.mean()), np.sqrt(s2.mean())
                    diag["chi2"][p] = float(np.mean(d**2 / (s2 + var_he)))
                diag["wall_forecast_s"][p], diag["wall_analysis_s"][p] = t1 - t0, t2 - t1
                bar.update(1)
        for q, Fq in window:
            settle(q, Fq)
        starts = chain.times[[self._steps(p)[0] for p in range(P)]]
        cycles = xr.Dataset(
            {k: ("period", v, {"units": _DIAG_META[k][0], "long_name": _DIAG_META[k][1]}) for k, v in diag.items()},
            coords={"period": np.arange(P), "period_start": ("period", starts)},
        )
        return InversionResult(
            config=cfg, grid_shape=(ny, nx), lat=chain.grid.lat, lon=chain.grid.lon, times=chain.times, period=self.period,
            period_starts=starts, control_j=self.cj, control_i=self.ci, prior_emission=prior_em,
            background=res["background"], filter=res["filter"], smoothed=res["smoothed"], analysed=analysed, cycles=cycles,
            sites=self.sites, site_aod={"background": site_bg, "analysis": site_an}, dropped=dropped,
            wall_s=time.perf_counter() - t_start,
        )


_DIAG_META = {
    "n_obs": ("1", "observations assimilated in the cycle"),
    "n_members": ("1", "members in the analysis"),
    "n_dropped": ("1", "members dropped in the cycle (failed run)"),
    "innovation_mean": ("1", "mean of y - mean H(x_b) (AOD)"),
    "innovation_rms": ("1", "RMS of y - mean H(x_b) (AOD)"),
    "spread_obs": ("1", "RMS ensemble spread of H(x_b) (AOD)"),
    "obs_error_rms": ("1", "RMS observation error (AOD)"),
    "chi2": ("1", "mean of d^2 / (sigma_o^2 + var H(x_b)): about 1 for a consistent ensemble"),
    "spread_log_factor_b": ("1", "RMS background spread of the period's log factors (emitting cells)"),
    "spread_log_factor_a": ("1", "RMS analysis spread of the period's log factors (emitting cells)"),
    "wall_forecast_s": ("s", "wall time of the ensemble forecast"),
    "wall_analysis_s": ("s", "wall time of the analysis"),
}
