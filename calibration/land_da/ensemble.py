"""Ensemble land DA on the soil-moisture twin, with the ensemble Kalman core.

``N`` members of the toy ecLand, each with its own forcing perturbations (precipitation
times a daily log-normal factor, shortwave times ``1 + e``, per member and site) and a
perturbed start state, run window after window in one vectorised call. At the end of each
window the members' soil moisture (layers 1-3, optionally augmented with model parameters
per site) is updated with the window's observations (the same data, errors and screening
as the SEKF) by

* ``"letkf"``: the ETKF of :func:`calibration.ensemble_kalman.etkf` with every site its own
  local domain (the sites are independent columns, so the LETKF with a localisation radius
  below the site spacing), all sites in one batch;
* ``"enkf"``: the stochastic EnKF with perturbed observations
  (:func:`calibration.ensemble_kalman.enkf_pertobs`), per site likewise.

Data that fail the screening, or are missing, get a zero innovation and zero anomalies
(they leave the analysis unchanged). Relaxation to prior spread (``rtps``) keeps the
spread alive. Augmented parameters are analysed in the model's control space (``ln x`` for
log-scale parameters) and kept in their bounds.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from ..ensemble_kalman.analysis import enkf_pertobs, etkf, rtps as relax_to_prior_spread
from ..progress import as_progress
from .sekf import screen
from .twin import SoilMoistureTwin, result_dataset


def run_enkf(twin: SoilMoistureTwin, n_members: int = 16, method: str = "letkf", params: Sequence[str] = (),
             rain_noise: float = 0.5, sw_noise: float = 0.1, state_std: float = 0.01, rtps: float = 0.5,
             windows: int | None = None, seed: int = 0, progress=False):
    """Cycle an ensemble filter over ``twin``'s windows (module doc). ``params``: 0-3 model
    parameters estimated per site by state augmentation (prior: the model's default with a
    quarter of the range as std, in control space). Returns the Dataset of
    :func:`calibration.land_da.result_dataset` (the ensemble mean as ``analysis``) with
    ``param_mean``/``param_std`` ``(time, site, parameter)`` when parameters are estimated."""
    if method not in ("letkf", "enkf"):
        raise ValueError(f"method must be 'letkf' or 'enkf', got {method!r}")
    if int(n_members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {n_members}")
    space = twin.physics.space
    unknown = [p for p in params if p not in space]
    if unknown:
        raise ValueError(f"params: {unknown} are not parameters of the model; it has {space.names}")
    N, S, K = int(n_members), len(twin.sites), twin.K if windows is None else int(windows)
    runner, rng = twin.runner, np.random.default_rng(seed)
    L, m, rows = runner.n_layers, runner.m, runner.rows
    # per-member forcing factors over the whole period (T, N, S): daily log-normal rain, daily SW
    T = runner.forcing["Tair"].shape[0]
    day = (np.arange(T) * runner.model.dt * runner.repeat // 86400).astype(int)
    nd = int(day.max()) + 1
    rain = np.exp(rain_noise * rng.standard_normal((nd, N, S)) - 0.5 * rain_noise**2)[day]
    sw = np.clip(1.0 + sw_noise * rng.standard_normal((nd, N, S)), 0.0, None)[day]
    scale_all = {"Rainf": torch.as_tensor(rain), "Snowf": torch.as_tensor(rain), "SWdown": torch.as_tensor(sw)}
    sat = runner.theta_sat().numpy()
    state = {k: v.expand(N, S).clone() for k, v in twin.state0.items()}
    x0 = runner.x_of(state) + state_std * torch.as_tensor(rng.standard_normal((N, S, L)))
    state = runner.with_x(state, x0.clamp(min=0.0))
    sub = space.subset(list(params)) if params else None
    log = np.asarray(sub.is_log, bool) if sub else np.zeros(0, bool)
    if sub:
        lo, hi = sub.bounds[:, 0], sub.bounds[:, 1]
        zlo, zhi = np.where(log, np.log(lo), lo), np.where(log, np.log(hi), hi)
        z = np.where(log, np.log(sub.default_vector), sub.default_vector) + (zhi - zlo) / 4 * rng.standard_normal((N, S, len(params)))
        z = np.clip(z, zlo, zhi)
    R = np.diag(twin.r_std**2)
    xb_all, xa_all, used, pm, ps = [], [], [], [], []
    runs0, t0 = runner.n_runs, time.perf_counter()
    with as_progress(progress).bar(K, desc=f"{method.upper()} ({N} members{', +' + ','.join(params) if params else ''})",
                                   unit="window") as bar:
        for k in range(K):
            scale = {nm: f[k * rows:(k + 1) * rows] for nm, f in scale_all.items() if nm in runner.forcing}
            pvals = None
            if sub:
                x_phys = np.where(log, np.exp(z), z)
                pvals = {nm: torch.as_tensor(x_phys[..., j]) for j, nm in enumerate(params)}
            with torch.no_grad():
                h, final = runner.run(k, state, params=pvals, scale=scale)  # (N, S, m)
            HE = h.numpy().transpose(1, 0, 2)  # (S, N, m)
            Xe = runner.x_of(final).numpy().transpose(1, 0, 2)  # (S, N, L)
            hb = HE.mean(1)
            use = screen(runner, twin.y[k], hb, np.zeros((S, m, L)), {n: v.mean(0, keepdim=True) for n, v in state.items()},
                         twin.obs_vars)
            y = np.where(use, twin.y[k], hb)
            HE = np.where(use[:, None, :], HE, hb[:, None, :])  # unused data: no innovation, no anomaly
            E = np.concatenate([Xe, z.transpose(1, 0, 2)], -1) if sub else Xe
            if use.any():
                if method == "letkf":
                    Ea = etkf(E, HE, y, R)
                else:
                    Ea = enkf_pertobs(E, HE, y, R, rng=rng)
                if rtps:
                    Ea = relax_to_prior_spread(Ea, E, rtps)
            else:
                Ea = E
            xa = np.clip(Ea[..., :L], 0.0, sat[:, None, None])  # (S, N, L)
            if sub:
                z = np.clip(Ea[..., L:], zlo, zhi).transpose(1, 0, 2)  # (N, S, P)
                xp = np.where(log, np.exp(z), z)
                pm.append(xp.mean(0))
                ps.append(xp.std(0, ddof=1))
            xb_all.append(Xe.mean(1))
            xa_all.append(xa.mean(1))
            used.append(use)
            state = runner.with_x(final, torch.as_tensor(xa.transpose(1, 0, 2)))
            bar.update(1)
    wall = time.perf_counter() - t0
    info = {"method": method, "jacobian": "", "n_members": N, "params": ",".join(params), "rtps": rtps,
            "windows": K, "wall_s": wall, "wall_per_cycle_s": wall / K, "jacobian_wall_per_cycle_s": 0.0,
            "physics_runs_per_cycle": (runner.n_runs - runs0) / K, "emulator_runs_per_cycle": 0.0}
    ds = result_dataset(twin, np.stack(xb_all), np.stack(xa_all), np.stack(used), info)
    if sub:
        units = [space.units[p] for p in params]
        ds = ds.assign_coords(parameter=list(params))
        ds["param_mean"] = (("time", "site", "parameter"), np.stack(pm), {"long_name": "ensemble-mean parameter"})
        ds["param_std"] = (("time", "site", "parameter"), np.stack(ps), {"long_name": "ensemble std of the parameter"})
        ds["param_units"] = ("parameter", units)
    return ds
