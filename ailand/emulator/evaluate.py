"""Skill of an emulator against the physics it emulates.

Scores, per variable, on two held-out sets (members not trained on, at training sites;
and sites not trained on, all members):

- ``one_step``: each step from the true state (teacher forcing), against the next true
  state and the step's diagnostics; with persistence (``x(t+dt) = x(t)``) as baseline.
- ``rollout``: the emulator fed its own state from the first date for the whole
  ensemble period (>= 1 year for the default ensemble), no reinitialisation.

Metrics, over all columns and times of a set: one-step and persistence scores at the
emulator step (what one step must get right); rollout scores on **daily means** (so that
the diurnal cycle does not inflate them):

    RMSE = sqrt(mean((p - o)^2)),  bias = mean(p - o),
    ACC  = sum(p' o') / sqrt(sum(p'^2) sum(o'^2)),  p' = p - c, o' = o - c,

with ``c`` the climatology of each column, i.e. the truth's time mean over the period.
Error growth: RMSE of the rollout as a function of lead time (days).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..physics.model import STATE_NAMES, VARIABLES
from .features import as_ensemble_data
from .train import ensemble_tensors, split

SCORE_VARIABLES = ("swvl1", "swvl2", "swvl3", "swvl4", "stl1", "stl4", "skt", "sd", "snowc", "Qle", "Qh", "Qg", "Evap", "Qs", "Qsb", "albedo", "T2m", "RH2m")


def _rollout(em, tt, t0: int = 0, n: int | None = None, batch: int = 4096):
    """Free rollout from the true state at ``t0`` for ``n`` steps: returns (states (n, E, G, 15),
    diagnostics (n, E, G, nd)); row j holds the state at t0+j+1 and the diagnostics of step t0+j."""
    T, E, G = tt.shape
    n = (T - 1 - t0) if n is None else n
    s = tt.S[t0]  # (E, G, 15)
    th = tt.theta_sat[:, None].expand(E, G)
    P = tt.P[:, None, :].expand(E, G, tt.P.shape[-1])
    Pp = tt.Pphys[:, None, :]
    out_s, out_d = [], []
    with torch.no_grad():
        for j in range(n):
            fct = tt.FCT[t0 + j][None].expand(E, G, tt.FCT.shape[-1])
            s, d = em.physical(s, em.raw(s, torch.cat([fct, P], -1), Pp), th, tt.precip[t0 + j][None])
            out_s.append(s)
            out_d.append(d)
    return torch.stack(out_s), torch.stack(out_d)


def _one_step(em, tt):
    T = tt.shape[0]
    E, G = tt.shape[1:]
    with torch.no_grad():
        s = tt.S[: T - 1]
        fct = tt.FCT[: T - 1, None].expand(T - 1, E, G, tt.FCT.shape[-1])
        P = tt.P[None, :, None, :].expand(T - 1, E, G, tt.P.shape[-1])
        Pp = tt.Pphys[None, :, None, :]
        th = tt.theta_sat[None, :, None].expand(T - 1, E, G)
        new, d = em.physical(s, em.raw(s, torch.cat([fct, P], -1), Pp), th, tt.precip[: T - 1, None])
    return new, d


def _daily(x: np.ndarray, steps_per_day: int) -> np.ndarray:
    n = (x.shape[0] // steps_per_day) * steps_per_day
    return x[:n].reshape(n // steps_per_day, steps_per_day, *x.shape[1:]).mean(1)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """RMSE, bias and ACC of ``pred`` vs ``truth`` ``(time, ...)`` (climatology = truth's time
    mean per column)."""
    clim = truth.mean(0, keepdims=True)
    a, b = pred - clim, truth - clim
    den = np.sqrt((a**2).sum() * (b**2).sum())
    return {
        "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
        "bias": float(np.mean(pred - truth)),
        "acc": float((a * b).sum() / den) if den > 0 else float("nan"),
    }


def evaluate(em, data, *, val_members=None, val_sites=None, variables=SCORE_VARIABLES, sets=None, rollout_days: int | None = None) -> xr.Dataset:
    """Score ``em`` against the ensemble's physics on held-out members and sites.

    ``val_members`` / ``val_sites`` as in :func:`ailand.emulator.train.split` (default: the
    emulator's own training split when recorded). Returns a Dataset with ``rmse``, ``bias``,
    ``acc`` over ``(set, mode, variable)`` (mode: one_step, persistence, rollout),
    ``rollout_rmse`` over ``(set, variable, lead_day)`` and the rollout length in attrs.
    """
    data = as_ensemble_data(data)
    tr = em.meta.get("training", {})
    if val_members is None and tr.get("val_members") is not None:
        labels = list(np.asarray(data.design["member"].values))
        val_members = [labels[i] for i in tr["val_members"] if i < len(labels)]
    if val_sites is None and tr.get("val_sites") is not None:
        val_sites = [s for s in tr["val_sites"] if s in list(data.sites)]
    tm, vm, ts, vs = split(data, val_members, val_sites)
    groups = {"held_out_members": (vm, ts), "held_out_sites": (None, vs)}
    groups = {k: v for k, v in groups.items() if (v[0] is None or len(v[0])) and len(v[1])}
    if sets is not None:
        groups = {k: groups[k] for k in sets}
    spd = int(round(86400 / em.dt))
    variables = [v for v in variables if v in em.output_names]
    modes = ("one_step", "persistence", "rollout")
    res = {m: np.full((len(groups), len(modes), len(variables)), np.nan) for m in ("rmse", "bias", "acc")}
    growth, n_roll = [], 0
    for gi, (name, (mem, sit)) in enumerate(groups.items()):
        tt = ensemble_tensors(em, data, mem, sit)
        T = tt.shape[0]
        n = T - 1 if rollout_days is None else min(T - 1, rollout_days * spd)
        n_roll = n
        s1, d1 = _one_step(em, tt)
        sr, dr = _rollout(em, tt, 0, n)
        S, D = tt.S.cpu().numpy(), tt.D.cpu().numpy()
        curves = []
        for vi, v in enumerate(variables):
            if v in STATE_NAMES:
                k = STATE_NAMES.index(v)
                truth1, pred1, pers = S[1:, ..., k], s1[..., k].cpu().numpy(), S[:-1, ..., k]
                truthr, predr = S[1 : n + 1, ..., k], sr[..., k].cpu().numpy()
            else:
                k = em.diagnostics.index(v)
                truth1, pred1 = D[:-1, ..., k], d1[..., k].cpu().numpy()
                pers = np.concatenate([D[:1, ..., k], D[:-2, ..., k]])  # the previous step's value
                truthr, predr = D[:n, ..., k], dr[..., k].cpu().numpy()
            for mi, (p, o) in enumerate([(pred1, truth1), (pers, truth1), (predr, truthr)]):
                sc = scores(p, o) if mi < 2 else scores(_daily(p, spd), _daily(o, spd))
                for m in ("rmse", "bias", "acc"):
                    res[m][gi, mi, vi] = sc[m]
            err = (_daily(predr, spd) - _daily(truthr, spd)) ** 2
            curves.append(np.sqrt(err.reshape(err.shape[0], -1).mean(1)))
        growth.append(np.stack(curves))
    n_days = min(g.shape[1] for g in growth)
    ds = xr.Dataset(
        {m: (("set", "mode", "variable"), res[m]) for m in res},
        coords={"set": list(groups), "mode": list(modes), "variable": variables},
    )
    ds["rollout_rmse"] = (("set", "variable", "lead_day"), np.stack([g[:, :n_days] for g in growth]))
    ds = ds.assign_coords(lead_day=np.arange(1, n_days + 1), units=("variable", [VARIABLES[v][0] for v in variables]))
    note = " (one_step, persistence: at the emulator step; rollout: of daily means)"
    ds["rmse"].attrs = {"long_name": "root-mean-square error" + note, "units": "variable's units (see coord 'units')"}
    ds["bias"].attrs = {"long_name": "mean error (emulator - physics)" + note}
    ds["acc"].attrs = {"long_name": "anomaly correlation, climatology = truth's time mean per column" + note, "units": "-"}
    ds["rollout_rmse"].attrs = {"long_name": "RMSE of daily means vs lead time in a free rollout"}
    ds.attrs = {"rollout_days": n_roll / spd, "emulator_dt_seconds": em.dt, "n_dates": int(data.data.shape[0])}
    return ds


def compare_rollout(em, data, member=None, sites=None, variables=("swvl1", "stl1", "snowc", "Qle"), days: int | None = None) -> xr.Dataset:
    """Daily means of a free emulator rollout and of the physics for one member at some sites.

    member : a member label (default: the first held-out member, else member 0); sites :
    names (default: all). Returns a Dataset with dims ``(source, time, site)``, source =
    ``physics`` / ``emulator``, for :func:`ailand.emulator.plots.plot_rollout`.
    """
    data = as_ensemble_data(data)
    labels = list(np.asarray(data.design["member"].values))
    if member is None:
        vm = em.meta.get("training", {}).get("val_members") or [0]
        mi = vm[0] if vm[0] < len(labels) else 0
    else:
        if member not in labels:
            raise ValueError(f"member {member} is not in the ensemble (members {labels[0]}..{labels[-1]})")
        mi = labels.index(member)
    names = [str(s) for s in data.sites]
    sites = names if sites is None else list(sites)
    unknown = [s for s in sites if s not in names]
    if unknown:
        raise ValueError(f"sites {unknown} are not in the ensemble ({names})")
    gi = [names.index(s) for s in sites]
    tt = ensemble_tensors(em, data, [mi], gi)
    spd = int(round(86400 / em.dt))
    n = tt.shape[0] - 1 if days is None else min(tt.shape[0] - 1, days * spd)
    sr, dr = _rollout(em, tt, 0, n)
    S, D = tt.S.cpu().numpy(), tt.D.cpu().numpy()
    out = {}
    for v in variables:
        if v in STATE_NAMES:
            k = STATE_NAMES.index(v)
            phys, emu = S[1 : n + 1, 0, :, k], sr[:, 0, :, k].cpu().numpy()
        else:
            k = em.diagnostics.index(v)
            phys, emu = D[:n, 0, :, k], dr[:, 0, :, k].cpu().numpy()
        out[v] = (("source", "time", "site"), np.stack([_daily(phys, spd), _daily(emu, spd)]), {"units": VARIABLES[v][0], "long_name": VARIABLES[v][1]})
    days_ = np.asarray(data.dates[: (n // spd) * spd : spd], dtype="datetime64[ns]")
    return xr.Dataset(out, coords={"source": ["physics", "emulator"], "time": days_, "site": sites},
                      attrs={"member": int(labels[mi]), "note": "daily means of a free rollout from the first date"})


def drift_check(em, sites=None, years: int = 10, start: str = "2020-01-01", seed: int = 1, spinup_years: int = 2, params=None, progress=False) -> xr.Dataset:
    """A long free rollout of the emulator next to the physics, both from the physics'
    spun-up state, on synthetic weather (``seed``) at ``sites`` (names from the site table,
    or a Dataset of site statics such as :func:`ailand.sites.space_filling_sites`): annual means of the main variables
    over ``(source, year, site)`` plus ``finite`` (no NaN/inf anywhere in the emulator run)."""
    from ..forcing import synthetic_forcing
    from ..physics import ToyEcLand

    if not isinstance(sites, xr.Dataset):  # names from data/sites.csv, or a Dataset of site statics
        sites = list(sites) if sites is not None else list(em.meta.get("training", {}).get("val_sites") or ["FR-Fon"])
    end = str(pd.Timestamp(start) + pd.DateOffset(years=years) - pd.Timedelta(days=1))[:10]
    f = synthetic_forcing(sites, start, end, seed=seed)
    phys = ToyEcLand()
    s0 = phys.initial_conditions(f, params=params, spinup_years=spinup_years, progress=progress)
    out_p = phys.run(f, params=params, state0=s0, output_freq=f"{em.dt:g}s", progress=progress)
    out_e = em.run(f, params=params, state0=s0, progress=progress)
    names = ["swvl1", "swvl3", "stl1", "stl4", "sd", "Qle", "Qh"]
    # label each interval by its start, so that a year holds the steps inside it
    shift = pd.Timedelta(seconds=em.dt)
    out_p = out_p.assign_coords(time=out_p["time"] - shift)
    out_e = out_e.assign_coords(time=out_e["time"] - shift)
    finite = bool(all(np.isfinite(out_e[v].values).all() for v in out_e.data_vars))
    ds = xr.concat([out_p[names].groupby("time.year").mean(), out_e[names].groupby("time.year").mean()], dim="source")
    ds = ds.drop_vars([c for c in ("lat", "lon") if c in ds.coords or c in ds.data_vars])
    ds = ds.assign_coords(source=["physics", "emulator"])
    for v in names:
        ds[v].attrs = dict(out_p[v].attrs)
    ds.attrs = {"finite": int(finite), "years": years, "weather_seed": seed, "note": "annual means; both runs start from the physics' spun-up state"}
    return ds


def water_balance(em, data, *, members=None, sites=None, days: int = 365) -> xr.Dataset:
    """The column water-balance residual of a free emulator rollout of ``days`` days (from the
    true state at the first date) and of the ensemble's physics over the same steps.

    members : member indices into the ensemble axis (default: the emulator's held-out
    members); sites : names (default: its held-out sites). Returns over ``source``
    (physics, emulator): ``mean_abs_step`` (mean |residual| of a step) and ``accumulated``
    (the sum of the residuals over the period: water created (+) or destroyed (-) in the
    column), ``mean_abs_one_step`` (mean |residual| of one-step predictions from the true
    states over the same steps), all [kg m-2], and ``precipitation`` over the period
    [kg m-2] for scale; attrs:
    steps and the emulator's ``water_closure``. See :mod:`ailand.emulator.budget`.
    """
    from .budget import water_residual

    data = as_ensemble_data(data)
    tr = em.meta.get("training", {})
    names = [str(s) for s in data.sites]
    sites = list(sites) if sites is not None else [s for s in (tr.get("val_sites") or names) if s in names]
    unknown = [s for s in sites if s not in names]
    if unknown:
        raise ValueError(f"sites {unknown} are not in the ensemble ({names})")
    if members is None:
        E = data.data.shape[2]
        members = [m for m in (tr.get("val_members") or range(E)) if m < E] or list(range(E))
    tt = ensemble_tensors(em, data, members, [names.index(s) for s in sites])
    spd = int(round(86400 / em.dt))
    n = min(tt.shape[0] - 1, days * spd)
    sr, dr = _rollout(em, tt, 0, n)
    with torch.no_grad():
        s_prev = torch.cat([tt.S[:1], sr[:-1]])
        pr = tt.precip[:n, None]
        r_emu = water_residual(s_prev, sr, pr, dr, em.diagnostics, em.dt)
        r_phys = water_residual(tt.S[:n], tt.S[1 : n + 1], pr, tt.D[:n], em.diagnostics, em.dt)
        s1, d1 = _one_step(em, tt)
        r_one = water_residual(tt.S[:n], s1[:n], pr, d1[:n], em.diagnostics, em.dt)
        precip = (pr * em.dt).sum(0).expand_as(r_emu[0])
    r = torch.stack([r_phys, r_emu]).double().cpu().numpy()  # (source, n, E, G)
    r1 = torch.stack([r_phys, r_one]).double().cpu().numpy()
    dims = ("source", "member", "site")
    return xr.Dataset(
        {
            "mean_abs_step": (dims, np.abs(r).mean(1), {"units": "kg m-2", "long_name": "mean |water-balance residual| per step"}),
            "mean_abs_one_step": (dims, np.abs(r1).mean(1), {"units": "kg m-2", "long_name": "mean |water-balance residual| of one-step predictions"}),
            "accumulated": (dims, r.sum(1), {"units": "kg m-2", "long_name": "water-balance residual summed over the period"}),
            "precipitation": (dims[1:], precip.double().cpu().numpy(), {"units": "kg m-2", "long_name": "precipitation over the period"}),
        },
        coords={"source": ["physics", "emulator"], "member": [int(m) for m in members], "site": sites},
        attrs={"steps": n, "days": n / spd, "water_closure": int(em.water_closure)},
    )
