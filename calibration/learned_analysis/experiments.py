"""The issue-19 experiments end to end: make cases, classical analyses (saved as labelled
training targets), train the learned analyses, score them on held-out cases.

Each ``*_experiment`` takes a small config dict (defaults in :data:`DEFAULTS`; ``quick=True``
shrinks everything for a smoke run) and returns ``(scores, artefacts)``: ``scores`` a JSON-able
dict (RMSE against the truth [field units] per method and held-out set, cost per analysis [ms]
on this CPU), ``artefacts`` the datasets and models (for figures and saving).

Scores: ``rmse`` over all cells (land case: land cells only) and cases of a held-out set.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr

from ailand.progress import as_progress

from .cases import exercise1_cases, exercise2_cases
from .classical import LETKFAnalysis, OptimalInterpolation, latlon_grid_distance, periodic_grid_distance
from .diffusion import DiffusionAnalysis
from .train import (predict_exercise1, predict_exercise2, train_exercise1, train_exercise2,
                    train_shallow_water_1d)

__all__ = ["DEFAULTS", "classical_targets", "exercise1_experiment", "exercise2_experiment",
           "physics_experiment", "land_experiment", "rmse"]

DEFAULTS = {
    "ex1": dict(n=32, n_train=1024, n_test=96, train_density=(0.02, 0.2), epochs=12, width=16, depth=2, lr=5e-3,
                test_density=(0.01, 0.05, 0.2, 0.5), diffusion_epochs=15, diffusion_cases=16, members=8,
                letkf_members=20, seed=0),
    "ex2": dict(n=32, n_train=1024, n_test=96, train_density=(0.05, 0.2), epochs=12, width=16, depth=2, lr=5e-3,
                test_density=(0.03, 0.1, 0.4), seed=0),
    "physics": dict(nx=64, runs=16, test_runs=8, K=10, steps=300, epochs=40, lams=(0.0, 1.0, 10.0), seed=0),
    "land": dict(start="2020-05-01", end="2020-07-29", resolution=1.5, members=10, train_days=60, layouts=8,
                 train_density=(0.03, 0.3), test_density=(0.02, 0.1, 0.3), epochs=15, seed=0),
}
QUICK = {
    "ex1": dict(n=16, n_train=128, n_test=16, epochs=2, diffusion_epochs=1, diffusion_cases=4, members=3,
                letkf_members=8),
    "ex2": dict(n=16, n_train=128, n_test=16, epochs=2),
    "physics": dict(nx=32, runs=4, test_runs=2, steps=60, epochs=3),
    "land": dict(start="2020-05-01", end="2020-05-10", resolution=3.0, members=4, train_days=6, layouts=2, epochs=2),
}


def config(name: str, quick: bool = False, **overrides) -> dict:
    cfg = dict(DEFAULTS[name])
    if quick:
        cfg.update(QUICK[name])
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def rmse(a, b, where=None) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if where is not None:
        d = d[..., where]
    return float(np.sqrt(np.nanmean(d**2)))


def _timed(fn, n_cases):
    t0 = time.perf_counter()
    out = fn()
    return out, 1000.0 * (time.perf_counter() - t0) / max(n_cases, 1)


def classical_targets(ds: xr.Dataset, oi: OptimalInterpolation, letkf: LETKFAnalysis | None = None,
                      use_members: bool = False) -> xr.Dataset:
    """``ds`` (cases with ``background, obs, mask``) plus ``analysis_oi`` and (with ``letkf``)
    ``analysis_letkf`` ``(case, y, x)``, labelled with the method and the fitted background-error
    model: the training targets of a learned analysis trained on the classical one (NetCDF-ready)."""
    xb, y, m = ds["background"].values, ds["obs"].values, ds["mask"].values
    dims = ds["background"].dims
    units = ds["background"].attrs.get("units", "")
    out = ds.copy()
    out["analysis_oi"] = (dims, oi.analyse(xb, y, m), {
        "units": units, "long_name": "OI / 3D-Var analysis", "correlation": oi.kind, "length": oi.length,
        "sigma_b": oi.sigma_b, "sigma_o": oi.sigma_o,
        "length_scale_from": "Hollingsworth-Loennberg fit to innovation covariances" if hasattr(oi, "stats") else "given"})
    if letkf is not None:
        ens = ds["members"].values if use_members else None
        mean, _ = letkf.analyse(xb, y, m, ensemble=ens)
        out["analysis_letkf"] = (dims, mean, {
            "units": units, "long_name": "LETKF analysis (ensemble mean)", "loc_rad": letkf.loc_rad,
            "ensemble": "forecast ensemble" if use_members else f"{letkf.n_members} members drawn from the fitted B"})
    out["mask"] = out["mask"].astype("int8")  # NetCDF has no bool
    return out


# ------------------------------------------------------------------------------------- exercise 1
def exercise1_experiment(cfg: dict | None = None, progress=False, quick: bool = False) -> tuple[dict, dict]:
    """Exercise 1: U-Net (truth- and OI-trained), OI / 3D-Var, LETKF, diffusion ensemble."""
    c = cfg or config("ex1", quick)
    p = as_progress(progress)
    n = c["n"]
    with p.stage("exercise 1: cases"):
        tr = exercise1_cases(c["n_train"], n, n, density=tuple(c["train_density"]), seed=c["seed"], progress=p)
        sd = tr.attrs["climate_std"]
        tests = {f"density {d:g}": exercise1_cases(c["n_test"], n, n, density=d, seed=c["seed"] + 1 + k, climate_std=sd)
                 for k, d in enumerate(c["test_density"])}
        tests["half-domain layout 0.1"] = exercise1_cases(c["n_test"], n, n, density=0.1, layout="half",
                                                          seed=c["seed"] + 50, climate_std=sd)
    dist = periodic_grid_distance(n, n)
    with p.stage("exercise 1: OI length-scale fit and training targets"):
        oi = OptimalInterpolation.fit(tr.background.values, tr.obs.values, tr.mask.values, dist, "gaussian")
        lk = LETKFAnalysis(dist, (n, n), oi.sigma_o, loc_rad=oi.length, sigma_b=oi.sigma_b, length=oi.length,
                           n_members=c["letkf_members"], seed=c["seed"])
        targets = classical_targets(tr, oi)
    kw = dict(epochs=c["epochs"], width=c["width"], depth=c["depth"], lr=c["lr"], seed=c["seed"], progress=p)
    t0 = time.perf_counter()
    u_truth = train_exercise1(tr, "truth", scale=oi.sigma_b, **kw)
    t_train = time.perf_counter() - t0
    u_oi = train_exercise1(tr, targets["analysis_oi"].values, scale=oi.sigma_b, **kw)
    dm = DiffusionAnalysis(float(tr.background.mean()), float(tr.background.std()), oi.sigma_b, n_steps=50,
                           width=c["width"], depth=c["depth"], grid_shape=(n, n))
    t0 = time.perf_counter()
    dm.fit(tr.background.values, tr.truth.values, epochs=c["diffusion_epochs"], lr=2e-3, seed=c["seed"], progress=p)
    t_diff = time.perf_counter() - t0
    scores = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
              "fit": {"length_cells": oi.length, "sigma_b_m": oi.sigma_b, "sigma_o_m": oi.sigma_o,
                      "true_length_cells": tr.attrs["bg_length_cells"], "true_sigma_b_m": tr.attrs["bg_sigma"],
                      "true_sigma_o_m": tr.attrs["obs_sigma"]},
              "train_s": {"unet": t_train, "diffusion": t_diff}, "rmse_m": {}, "ms_per_analysis": {}, "diffusion": {}}
    arte = {"train": tr, "targets": targets, "tests": tests, "oi": oi, "letkf": lk, "unet_truth": u_truth,
            "unet_oi": u_oi, "diffusion": dm, "analyses": {}}
    with p.bar(len(tests), "exercise 1: held-out sets", "set") as bar:
        for name, te in tests.items():
            xb, y, m, t = (te[k].values for k in ("background", "obs", "mask", "truth"))
            nb = xb.shape[0]
            a_oi, ms_oi = _timed(lambda: oi.analyse(xb, y, m), nb)
            (a_lk, _), ms_lk = _timed(lambda: lk.analyse(xb, y, m), nb)
            a_ut, ms_u = _timed(lambda: predict_exercise1(u_truth, xb, y, m), nb)
            a_uo = predict_exercise1(u_oi, xb, y, m)
            k = min(c["diffusion_cases"], nb)
            ens, ms_d = _timed(lambda: dm.sample(xb[:k], y[:k], m[:k], n_members=c["members"], seed=c["seed"]), k)
            r = {"background": rmse(xb, t), "oi_3dvar": rmse(a_oi, t), "letkf": rmse(a_lk, t),
                 "unet_truth": rmse(a_ut, t), "unet_oi": rmse(a_uo, t),
                 f"diffusion_mean (first {k})": rmse(ens.mean(1), t[:k]),
                 f"oi_3dvar (first {k})": rmse(a_oi[:k], t[:k])}
            scores["rmse_m"][name] = r
            scores["ms_per_analysis"][name] = {"oi_3dvar": ms_oi, "letkf": ms_lk, "unet": ms_u,
                                               f"diffusion ({c['members']} members)": ms_d}
            err = ens.mean(1) - t[:k]
            spread = np.sqrt(ens.var(1, ddof=1).mean())
            scores["diffusion"][name] = {"rmse_of_mean": rmse(ens.mean(1), t[:k]), "spread": float(spread),
                                         "spread_skill": float(spread / np.sqrt((err**2).mean())),
                                         "spread_skill_unobserved": float(
                                             np.sqrt(ens.var(1, ddof=1)[~m[:k]].mean()) / np.sqrt((err[~m[:k]] ** 2).mean()))}
            arte["analyses"][name] = {"oi_3dvar": a_oi, "letkf": a_lk, "unet_truth": a_ut, "unet_oi": a_uo,
                                      "diffusion": ens}
            bar.update(1)
    return scores, arte


# ------------------------------------------------------------------------------------- exercise 2
def _ex2_oi(tr, te, dist):
    """Univariate OI of h, u, v from their own observations, climatological (training-mean) background."""
    out, fits = [], {}
    for k, v in enumerate(("h", "u", "v")):
        clim = float(tr.truth.values[:, k].mean())
        bg_tr = np.full((tr.sizes["case"],) + tr.truth.shape[2:], clim)
        oi = OptimalInterpolation.fit(bg_tr, tr.obs.values[:, k], tr.mask.values[:, k], dist)
        fits[v] = {"length_cells": oi.length, "sigma_b": oi.sigma_b, "sigma_o": oi.sigma_o}
        out.append((oi, clim))
    def analyse(ds):
        res = []
        for k, (oi, clim) in enumerate(out):
            bg = np.full((ds.sizes["case"],) + ds.truth.shape[2:], clim)
            res.append(oi.analyse(bg, ds.obs.values[:, k], ds.mask.values[:, k]))
        return np.stack(res, 1)
    return analyse, fits


def exercise2_experiment(cfg: dict | None = None, progress=False, quick: bool = False) -> tuple[dict, dict]:
    """Exercise 2: observations of h, u, v, wind speed and vorticity -> (h, u, v), no background."""
    c = cfg or config("ex2", quick)
    p = as_progress(progress)
    n = c["n"]
    with p.stage("exercise 2: cases"):
        tr = exercise2_cases(c["n_train"], n, n, density=tuple(c["train_density"]), seed=c["seed"], progress=p)
        sd = dict(zip(tr.obs_type.values, tr.climate_std.values))
        tests = {f"density {d:g}": exercise2_cases(c["n_test"], n, n, density=d, seed=c["seed"] + 1 + k, climate_std=sd)
                 for k, d in enumerate(c["test_density"])}
    dist = periodic_grid_distance(n, n)
    oi_an, fits = _ex2_oi(tr, tr, dist)
    target = oi_an(tr)
    kw = dict(epochs=c["epochs"], width=c["width"], depth=c["depth"], lr=c["lr"], seed=c["seed"], progress=p)
    u_truth = train_exercise2(tr, "truth", **kw)
    u_oi = train_exercise2(tr, target, **kw)
    clim = tr.truth.values.mean((0, 2, 3))[None, :, None, None]
    scores = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()}, "oi_fit": fits,
              "rmse": {}, "ms_per_analysis": {}, "units": {"h": "m", "u": "m s-1", "v": "m s-1"}}
    arte = {"train": tr, "tests": tests, "unet_truth": u_truth, "unet_oi": u_oi, "analyses": {}}
    for name, te in tests.items():
        t = te.truth.values
        a_oi, ms_oi = _timed(lambda: oi_an(te), te.sizes["case"])
        a_ut, ms_u = _timed(lambda: predict_exercise2(u_truth, te.obs.values, te.mask.values), te.sizes["case"])
        a_uo = predict_exercise2(u_oi, te.obs.values, te.mask.values)
        scores["rmse"][name] = {m: {v: rmse(a[:, k], t[:, k]) for k, v in enumerate("huv")}
                                for m, a in (("climatology", np.broadcast_to(clim, t.shape)), ("oi_univariate", a_oi),
                                             ("unet_truth", a_ut), ("unet_oi", a_uo))}
        scores["ms_per_analysis"][name] = {"oi_univariate (3 fields)": ms_oi, "unet": ms_u}
        arte["analyses"][name] = {"oi_univariate": a_oi, "unet_truth": a_ut, "unet_oi": a_uo}
    return scores, arte


# ------------------------------------------------------------------------------------- physics
def physics_experiment(cfg: dict | None = None, progress=False, quick: bool = False) -> tuple[dict, dict]:
    """1-D shallow water, a net stepping ``K`` model steps, trained with ``L_data + lambda L_phys``
    for each lambda; held-out one-step and 5-step autoregressive RMSE and PDE residual."""
    from ailand.shallow_water import ShallowWater1D, residual_1d

    c = cfg or config("physics", quick)
    sw = ShallowWater1D(c["nx"])
    K = c["K"]
    dt = K * sw.dt

    def trajectories(runs, seed):
        return sw.run(sw.random_state(runs, seed=seed), c["steps"], every=K)  # (T, runs, 2, nx)

    tr, te = trajectories(c["runs"], c["seed"]), trajectories(c["test_runs"], c["seed"] + 1)
    a, b = tr[:-1].reshape(-1, 2, c["nx"]), tr[1:].reshape(-1, 2, c["nx"])
    at, bt = te[:-1].reshape(-1, 2, c["nx"]), te[1:].reshape(-1, 2, c["nx"])
    out = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()}, "lambda": {}}
    nets = {}
    for lam in c["lams"]:
        net = train_shallow_water_1d(a.numpy(), b.numpy(), dt, sw.dx, lam=lam, epochs=c["epochs"], batch_size=16,
                                     lr=5e-3, width=16, n_layers=3, seed=c["seed"], progress=progress)
        nets[lam] = net
        with torch.no_grad():
            pred = net(at.float()).double()
            # 5-step autoregressive rollout from the first state of each test run
            s = te[0].float()
            roll = []
            for _ in range(min(5, te.shape[0] - 1)):
                s = net(s)
                roll.append(s.double())
            roll = torch.stack(roll)
        res = residual_1d(at, pred, dt, sw.dx) / net.r_scale
        out["lambda"][f"{lam:g}"] = {
            "rmse_h_m": float((pred - bt)[:, 0].pow(2).mean().sqrt()),
            "rmse_u_ms": float((pred - bt)[:, 1].pow(2).mean().sqrt()),
            "residual_rel": float(res.pow(2).mean().sqrt()),
            "rollout5_rmse_h_m": float((roll - te[1:1 + roll.shape[0]])[:, :, 0].pow(2).mean().sqrt()),
        }
    r_truth = residual_1d(at, bt, dt, sw.dx) / nets[c["lams"][0]].r_scale
    out["truth_residual_rel"] = float(r_truth.pow(2).mean().sqrt())
    out["note"] = ("residual_rel: rms PDE residual (trapezoid in time, centred in space) over the rms tendency of "
                   "the truth, per equation then pooled")
    return out, {"nets": nets}


# ------------------------------------------------------------------------------------- land
def land_experiment(cfg: dict | None = None, progress=False, quick: bool = False, case=None) -> tuple[dict, dict]:
    """Land T2m: OI (great-circle distances, fitted length), LETKF on the forecast ensemble, U-Nets
    (truth- and OI-trained; static land-sea mask and elevation), held out on later days."""
    from .land import land_analysis_cases, land_case

    c = cfg or config("land", quick)
    p = as_progress(progress)
    if case is None:
        case = land_case(c["start"], c["end"], resolution=c["resolution"], n_members=c["members"], seed=c["seed"],
                         progress=p)
    nd = case.sizes["day"]
    ntr = min(c["train_days"], nd - 1)
    tr = land_analysis_cases(case, days=np.arange(ntr), layouts_per_day=c["layouts"],
                             density=tuple(c["train_density"]), seed=c["seed"])
    tests = {f"density {d:g}": land_analysis_cases(case, days=np.arange(ntr, nd), layouts_per_day=2, density=d,
                                                   seed=c["seed"] + 1 + k) for k, d in enumerate(c["test_density"])}
    from ailand.dust.grid import LatLonGrid

    grid = LatLonGrid(case["lat"].values, case["lon"].values)
    dist = latlon_grid_distance(grid)
    land = case["lsm"].values >= 0.5
    oi = OptimalInterpolation.fit(tr.background.values, tr.obs.values, tr.mask.values, dist, "gaussian")
    lk = LETKFAnalysis(dist, grid.shape, oi.sigma_o, loc_rad=oi.length, seed=c["seed"])
    targets = classical_targets(tr, oi)
    elev = case["elevation"].values
    static = np.stack([land.astype(float), (elev - elev.mean()) / elev.std()])
    kw = dict(epochs=c["epochs"], width=16, depth=2, lr=5e-3, periodic=False, static=static, weight=land.astype(float),
              seed=c["seed"], progress=p)
    u_truth = train_exercise1(tr, "truth", scale=oi.sigma_b, **kw)
    u_oi = train_exercise1(tr, targets["analysis_oi"].values, scale=oi.sigma_b, **kw)
    scores = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
              "fit": {"length_km": oi.length, "sigma_b_K": oi.sigma_b, "sigma_o_K": oi.sigma_o,
                      "true_sigma_o_K": tr.attrs["obs_sigma"]},
              "rmse_K_land": {}, "ms_per_analysis": {}, "letkf_spread_K_land": {}}
    arte = {"case": case, "train": tr, "targets": targets, "tests": tests, "oi": oi, "letkf": lk,
            "unet_truth": u_truth, "unet_oi": u_oi, "analyses": {}}
    for name, te in tests.items():
        xb, y, m, t, E = (te[k].values for k in ("background", "obs", "mask", "truth", "members"))
        nb = xb.shape[0]
        a_oi, ms_oi = _timed(lambda: oi.analyse(xb, y, m), nb)
        (a_lk, ens), ms_lk = _timed(lambda: lk.analyse(xb, y, m, ensemble=E), nb)
        a_ut, ms_u = _timed(lambda: predict_exercise1(u_truth, xb, y, m, static=static), nb)
        a_uo = predict_exercise1(u_oi, xb, y, m, static=static)
        scores["rmse_K_land"][name] = {k: rmse(a, t, land) for k, a in (
            ("background", xb), ("oi_3dvar", a_oi), ("letkf", a_lk), ("unet_truth", a_ut), ("unet_oi", a_uo))}
        scores["ms_per_analysis"][name] = {"oi_3dvar": ms_oi, "letkf": ms_lk, "unet": ms_u}
        scores["letkf_spread_K_land"][name] = float(np.sqrt(ens.var(1, ddof=1)[..., land].mean()))
        arte["analyses"][name] = {"oi_3dvar": a_oi, "letkf": a_lk, "unet_truth": a_ut, "unet_oi": a_uo}
    return scores, arte
