"""Soil-moisture assimilation twin: a truth run, an open loop with realistic errors, and
synthetic screen-level and satellite observations; cycled analyses scored against the truth.

The truth is the toy ecLand (float64, hourly) driven by the synthetic forcing. The data
assimilation system runs the same model on a *perturbed* forcing, where its errors come
from in practice: precipitation scaled by a bias and multiplicative day-to-day log-normal
noise (per site), shortwave radiation with a bias; and it starts from the soil state
spun up under that forcing. Observations (:meth:`SoilMoistureTwin.observations`):

* screen-level ``T2m`` [K] and ``RH2m`` [%] means over T+0..6 and T+6..12 h of each window
  (screen-level analyses at synoptic times), errors 1 K and 4 % (ECMWF's values);
* satellite surface soil moisture ``swvl1`` [m3 m-3] once a day (at the end of the window
  that starts at 00 UTC) with random gaps, error 0.05 m3 m-3 (ECMWF's for ASCAT).

:meth:`SoilMoistureTwin.run` cycles a method over every window and returns a labelled
Dataset (``truth``, ``background``, ``analysis`` of swvl1..3 at each window's end);
:func:`scores` turns it into the per-layer RMSE table.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

import ailand
from ailand.physics.model import STATE_META

from ..progress import as_progress
from .sekf import JACOBIANS, jacobian_autograd, jacobian_ensemble, jacobian_fd, screen, sekf_update
from .window import SWVL, WindowRunner, start_state

OBS_STD = {"T2m": 1.0, "RH2m": 4.0, "swvl1": 0.05}  # ECMWF's SEKF: 1 K, 4 %, 0.05 m3 m-3 (ASCAT)
DEFAULT_SITES = ("FR-Fon", "US-Kon", "IT-Noe", "BE-Lon")


def perturb_forcing(forcing: xr.Dataset, rain_bias: float = 0.7, rain_noise: float = 0.5, sw_bias: float = 0.1,
                    seed: int = 0) -> xr.Dataset:
    """The DA system's forcing: ``Rainf`` (and ``Snowf``) times ``rain_bias`` times a daily
    log-normal factor ``exp(rain_noise * e - rain_noise^2 / 2)`` per site (mean 1), ``SWdown``
    times ``1 + sw_bias``. Seeded; the same dims, names and units."""
    rng = np.random.default_rng(seed)
    out = forcing.copy()
    day = pd.DatetimeIndex(forcing["time"].values).normalize()
    days, inv = np.unique(day, return_inverse=True)
    S = forcing.sizes["site"]
    fac = rain_bias * np.exp(rain_noise * rng.standard_normal((len(days), S)) - 0.5 * rain_noise**2)[inv]  # (T, S)
    for v in ("Rainf", "Snowf"):
        if v in out:
            out[v] = out[v].transpose("time", "site") * xr.DataArray(fac, dims=("time", "site"))
    if "SWdown" in out:
        out["SWdown"] = out["SWdown"] * (1.0 + sw_bias)
    out.attrs["perturbation"] = (f"Rainf/Snowf x {rain_bias:g} x daily lognormal(sigma={rain_noise:g}), "
                                 f"SWdown x {1 + sw_bias:g}, seed {seed}")
    return out


class SoilMoistureTwin:
    """The twin (module doc). Parameters: ``sites``, ``start``/``end`` (the season),
    ``hours`` (window, 12), ``observe`` and ``obs_std`` (per variable), ``ssm_gap`` (fraction
    of satellite days missing), the forcing errors (:func:`perturb_forcing`), ``seed``,
    ``spinup_years``; ``truth_params`` (``{name: value}``: the truth's parameters where they
    differ from the defaults the DA system uses: a model error besides the forcing's);
    ``physics`` (default ``ToyEcLand(float64)``, eager for the short window runs; the
    spin-ups use a compiled copy)."""

    def __init__(self, sites: Sequence[str] = DEFAULT_SITES, start: str = "2020-04-01", end: str = "2020-09-30",
                 hours: float = 12.0, observe: Sequence[str] = ("T2m", "RH2m", "swvl1"),
                 obs_std: Mapping[str, float] | None = None, ssm_gap: float = 0.3, rain_bias: float = 0.7,
                 rain_noise: float = 0.5, sw_bias: float = 0.1, truth_params: Mapping[str, float] | None = None,
                 seed: int = 0, spinup_years: int = 1, physics=None, progress=False):
        pg = as_progress(progress)
        self.physics = physics if physics is not None else ailand.ToyEcLand(dtype=torch.float64, compile=False)
        self.obs_std = {**OBS_STD, **(obs_std or {})}
        missing = [v for v in observe if v not in self.obs_std]
        if missing:
            raise ValueError(f"obs_std: give an observation error for {missing}")
        if not all(s > 0 for s in self.obs_std.values()):
            raise ValueError(f"observation error std must be positive (variances > 0), got {self.obs_std}")
        if not 0.0 <= ssm_gap < 1.0:
            raise ValueError(f"ssm_gap must be in [0, 1), got {ssm_gap}")
        self.seed, self.hours = int(seed), float(hours)
        with pg.stage(f"land DA twin: truth and open-loop spin-up ({spinup_years} year(s)) at {len(sites)} sites"):
            self.forcing_true = ailand.synthetic_forcing(list(sites), start, end, seed=seed)
            self.forcing = perturb_forcing(self.forcing_true, rain_bias, rain_noise, sw_bias, seed=seed + 1)
            self.truth_params = dict(truth_params or {})
            self.physics.space.check({**self.physics.space.defaults, **self.truth_params}, what="truth_params")
            self.truth_runner = WindowRunner(self.physics, self.forcing_true, observe, hours, params=self.truth_params)
            self.runner = WindowRunner(self.physics, self.forcing, observe, hours)
            spin = ailand.ToyEcLand(dt=self.physics.dt, dtype=self.physics.dtype, space=self.physics.space)  # compiled
            self.state0_true = start_state(spin, self.forcing_true, spinup_years, self.truth_params)
            self.state0 = start_state(spin, self.forcing, spinup_years)
        self.sites, self.K = self.runner.sites, self.runner.n_windows
        self.obs_names, self.obs_vars = self.runner.obs_names, np.asarray(self.runner.obs_vars)
        self.r_std = np.array([self.obs_std[v] for v in self.obs_vars])
        with pg.stage(f"land DA twin: truth run, {self.K} windows of {hours:g} h"):
            self._truth(ssm_gap)

    # ------------------------------------------------------------------ set-up
    def _truth(self, ssm_gap: float):
        rng = np.random.default_rng(self.seed + 2)
        state, hs, xs = self.state0_true, [], []
        with torch.no_grad():
            for k in range(self.K):
                h, state = self.truth_runner.run(k, state)
                hs.append(h[0].numpy())
                xs.append(self.truth_runner.x_of(state)[0].numpy())
        self.h_true = np.stack(hs)  # (K, S, m)
        self.x_true = np.stack(xs)  # (K, S, L) at each window's end
        y = self.h_true + self.r_std * rng.standard_normal(self.h_true.shape)
        if "RH2m" in self.obs_vars:
            y[..., self.obs_vars == "RH2m"] = np.clip(y[..., self.obs_vars == "RH2m"], 0.0, 100.0)
        if "swvl1" in self.obs_vars:
            col = self.obs_vars == "swvl1"
            hour = pd.DatetimeIndex(self.runner.times).hour
            daily = (hour == 0)[:, None] & (rng.random((self.K, len(self.sites))) >= ssm_gap)  # one pass a day, gaps
            y[..., col] = np.where(daily[..., None], np.clip(y[..., col], 0.0, None), np.nan)
        self.y = y

    def observations(self) -> xr.Dataset:
        """The synthetic observations ``y (time, site, obs)`` and their truth, labelled."""
        coords = {"time": self.window_ends, "site": self.sites, "obs": self.obs_names,
                  "variable": ("obs", list(self.obs_vars)), "units": ("obs", self.runner.units)}
        return xr.Dataset({"y": (("time", "site", "obs"), self.y, {"long_name": "synthetic observation"}),
                           "h_true": (("time", "site", "obs"), self.h_true, {"long_name": "truth equivalent"}),
                           "obs_std": ("obs", self.r_std, {"long_name": "observation error std"})}, coords=coords)

    def use_observations(self, obs: xr.Dataset | xr.DataArray) -> None:
        """Assimilate ``obs`` instead of the synthetic data: ``y (time, site, obs)`` as from
        :meth:`observations` (``time`` = window ends, ``obs`` = :attr:`obs_names`; NaN =
        missing). Times outside the run, or between window ends, and unknown sites or
        observation names are errors; windows without data keep no observation (their
        analysis is the forecast)."""
        y = obs["y"] if isinstance(obs, xr.Dataset) else obs
        missing = [d for d in ("time", "site", "obs") if d not in y.dims]
        if missing:
            raise ValueError(f"observations need dims (time, site, obs); missing {missing}")
        bad = sorted(set(map(str, y["site"].values)) - set(self.sites))
        if bad:
            raise ValueError(f"observations at unknown site(s) {bad}; the twin has {self.sites}")
        bad = sorted(set(map(str, y["obs"].values)) - set(self.obs_names))
        if bad:
            raise ValueError(f"unknown observation(s) {bad}; this twin observes {self.obs_names}")
        ends = pd.DatetimeIndex(self.window_ends)
        t = pd.DatetimeIndex(y["time"].values)
        outside = t[(t < ends[0]) | (t > ends[-1])]
        if len(outside):
            raise ValueError(f"observation time(s) {list(outside[:3].astype(str))} are outside the run "
                             f"({ends[0]} .. {ends[-1]}, window ends)")
        off = t[~t.isin(ends)]
        if len(off):
            raise ValueError(f"observation time(s) {list(off[:3].astype(str))} are not window ends ({self.hours:g} h windows)")
        full = y.reindex(time=ends, site=self.sites, obs=self.obs_names).transpose("time", "site", "obs")
        self.y = np.asarray(full.values, dtype=float)

    @property
    def window_ends(self) -> np.ndarray:
        return (pd.DatetimeIndex(self.runner.times) + pd.Timedelta(hours=self.hours)).values

    # ------------------------------------------------------------------- cycle
    def run(self, method: str = "sekf", jacobian: str = "fd", emulator=None, b_std: float = 0.01,
            n_ens: int = 10, taper: float | None = None, delta: float = 0.01, windows: int | None = None,
            progress=False) -> xr.Dataset:
        """Cycle ``method`` over the windows: ``"open_loop"`` or ``"sekf"`` with ``jacobian``
        in ``"fd"``, ``"ensemble"``, ``"autograd"`` (through the physics) or ``"emulator"``
        (autograd through ``emulator``, default the shipped one). ``b_std``: background error
        [m3 m-3]; ``n_ens``/``taper``: the ensemble Jacobian; ``delta``: the FD perturbation.
        Returns the Dataset of :func:`result_dataset` (``truth``, ``background``, ``analysis``)."""
        if method not in ("open_loop", "sekf"):
            raise ValueError(f"method must be 'open_loop' or 'sekf' (ensembles: calibration.land_da.run_enkf), got {method!r}")
        if method == "sekf" and jacobian not in (*JACOBIANS, "emulator"):
            raise ValueError(f"jacobian must be one of {(*JACOBIANS, 'emulator')}, got {jacobian!r}")
        K = self.K if windows is None else int(windows)
        if not 1 <= K <= self.K:
            raise ValueError(f"windows must be in 1..{self.K}, got {windows}")
        emu_runner = None
        if method == "sekf" and jacobian == "emulator":
            emulator = emulator if emulator is not None else ailand.Emulator.default()
            emu_runner = WindowRunner(emulator, self.forcing, self.runner.observe, self.hours)
        rng = np.random.default_rng(self.seed + 3)
        sat = self.runner.theta_sat().numpy()
        state = self.state0
        xb_all, xa_all, used, t_jac, runs0 = [], [], [], 0.0, self.runner.n_runs
        emu_runs0 = emu_runner.n_runs if emu_runner else 0
        t0 = time.perf_counter()
        label = method if method == "open_loop" else f"SEKF ({jacobian} H)"
        with as_progress(progress).bar(K, desc=label, unit="window") as bar:
            for k in range(K):
                if method == "open_loop":
                    with torch.no_grad():
                        _, final = self.runner.run(k, state)
                    xb = xa = self.runner.x_of(final)[0].numpy()
                    used.append(np.zeros((len(self.sites), self.runner.m), bool))
                else:
                    tj = time.perf_counter()
                    if jacobian == "fd":
                        H, hb, final = jacobian_fd(self.runner, k, state, delta)
                    elif jacobian == "autograd":
                        H, hb, final = jacobian_autograd(self.runner, k, state)
                    else:
                        with torch.no_grad():
                            h, final = self.runner.run(k, state)
                        hb = h[0].numpy()
                        if jacobian == "ensemble":
                            H = jacobian_ensemble(self.runner, k, state, rng, n=n_ens, std=b_std, taper=taper)
                        else:
                            H = jacobian_autograd(emu_runner, k, state)[0]
                    t_jac += time.perf_counter() - tj
                    use = screen(self.runner, self.y[k], hb, H, state, self.obs_vars)
                    x0 = self.runner.x_of(state)[0].numpy()
                    xa0, _ = sekf_update(x0, H, self.y[k] - hb, b_std, self.r_std, use)
                    xb = self.runner.x_of(final)[0].numpy()
                    xa = np.clip(xb + (xa0 - x0), 0.0, sat[:, None])  # the increment at the end of the window
                    final = self.runner.with_x(final, torch.as_tensor(xa)[None])
                    used.append(use)
                xb_all.append(xb)
                xa_all.append(xa)
                state = final
                bar.update(1)
        wall = time.perf_counter() - t0
        info = {"method": method if method == "open_loop" else "sekf", "jacobian": jacobian if method == "sekf" else "",
                "b_std": b_std, "windows": K, "wall_s": wall, "wall_per_cycle_s": wall / K,
                "jacobian_wall_per_cycle_s": t_jac / K,
                "physics_runs_per_cycle": (self.runner.n_runs - runs0) / K,
                "emulator_runs_per_cycle": ((emu_runner.n_runs - emu_runs0) / K) if emu_runner else 0.0}
        return result_dataset(self, np.stack(xb_all), np.stack(xa_all), np.stack(used), info)


def result_dataset(twin: SoilMoistureTwin, xb, xa, used, info: dict) -> xr.Dataset:
    """``(time, site, layer)`` Dataset: ``truth``, ``background`` (before the increment) and
    ``analysis`` soil moisture at each window's end [m3 m-3], ``n_used`` data per window and
    site; ``info`` as attrs."""
    K = xb.shape[0]
    L = xb.shape[-1]
    layers = list(SWVL[:L])
    units, _ = STATE_META["swvl1"]
    coords = {"time": twin.window_ends[:K], "site": twin.sites, "layer": layers}
    ds = xr.Dataset({
        "truth": (("time", "site", "layer"), twin.x_true[:K], {"units": units, "long_name": "true soil moisture"}),
        "background": (("time", "site", "layer"), xb, {"units": units, "long_name": "background (forecast) soil moisture"}),
        "analysis": (("time", "site", "layer"), xa, {"units": units, "long_name": "analysed soil moisture"}),
        "n_used": (("time", "site"), used.sum(-1), {"long_name": "observations assimilated after screening"}),
    }, coords=coords, attrs={k: (v if not isinstance(v, bool) else int(v)) for k, v in info.items()})
    return ds


def scores(results: Mapping[str, xr.Dataset], reference: str = "open_loop") -> pd.DataFrame:
    """One row per method: the analysis RMSE of each layer against the truth (over windows
    and sites) [m3 m-3], the reduction against ``reference`` (``1 - RMSE / RMSE_ref``, root
    zone = layers 1-3 together), and the cost per cycle."""
    rows = {}
    for name, ds in results.items():
        err = ds["analysis"] - ds["truth"]
        row = {f"rmse_{lay}": float(np.sqrt((err.sel(layer=lay) ** 2).mean())) for lay in ds["layer"].values}
        row["rmse_root_zone"] = float(np.sqrt((err**2).mean()))
        for key in ("physics_runs_per_cycle", "emulator_runs_per_cycle", "wall_per_cycle_s", "jacobian_wall_per_cycle_s"):
            row[key] = float(ds.attrs.get(key, np.nan))
        rows[name] = row
    df = pd.DataFrame(rows).T
    if reference in df.index:
        df["reduction_root_zone"] = 1.0 - df["rmse_root_zone"] / df.loc[reference, "rmse_root_zone"]
    return df


def compare_jacobians(twin: SoilMoistureTwin, emulator=None, every: int = 4, n_ens: int = 10, delta: float = 0.01,
                      progress=False):
    """The four Jacobians at the same states: every ``every``-th window along the open loop,
    ``H`` from finite differences, the ensemble, autograd through the physics and through
    ``emulator`` (default the shipped one). Returns ``(table, H)``: per source, the wall time
    and model runs per Jacobian, and against the physics' autograd H the sign agreement (over
    entries with ``|H| > 1 %`` of their observation's largest) and the median relative error
    per entry (``|H - H_phys| / max |H_phys|`` per observation and site); ``H[source]`` is
    ``(n_windows, S, m, L)``. An emulator without some observed variable (one trained before
    T2m/RH2m existed) gives NaN rows for it, left out of its scores."""
    emulator = emulator if emulator is not None else ailand.Emulator.default()
    have = [v for v in twin.runner.observe if v in emulator.output_names]  # an emulator trained without T2m/RH2m
    if not have:
        raise ValueError(f"the emulator predicts none of the observed {twin.runner.observe}")
    emu = WindowRunner(emulator, twin.forcing, have, twin.hours)
    rows = np.isin(twin.obs_vars, have)  # the emulator's rows of H; the others are NaN
    r = twin.runner
    rng = np.random.default_rng(twin.seed + 4)
    H = {"fd": [], "ensemble": [], "autograd": [], "emulator": []}
    cost = {k: [0.0, 0] for k in H}
    state = twin.state0
    with as_progress(progress).bar(twin.K, desc="Jacobians along the open loop", unit="window") as bar:
        for k in range(twin.K):
            if k % every == 0:
                for name, fn, runner in (("fd", lambda: jacobian_fd(r, k, state, delta)[0], r),
                                         ("ensemble", lambda: jacobian_ensemble(r, k, state, rng, n=n_ens), r),
                                         ("autograd", lambda: jacobian_autograd(r, k, state)[0], r),
                                         ("emulator", lambda: _rows_of(jacobian_autograd(emu, k, state)[0], rows), emu)):
                    n0, t0 = runner.n_runs, time.perf_counter()
                    H[name].append(fn())
                    cost[name][0] += time.perf_counter() - t0
                    cost[name][1] += runner.n_runs - n0
            with torch.no_grad():
                _, state = r.run(k, state)
            bar.update(1)
    H = {k: np.stack(v) for k, v in H.items()}
    ref = H["autograd"]
    scale = np.abs(ref).max(axis=-1, keepdims=True)  # per window, site, observation
    big = np.abs(ref) > 0.01 * np.where(scale > 0, scale, np.inf)
    out = {}
    n = len(ref)
    for name, h in H.items():
        rel = np.abs(h - ref) / np.where(scale > 0, scale, np.nan)
        ok = big & np.isfinite(h)
        out[name] = {"wall_per_jacobian_s": cost[name][0] / n, "runs_per_jacobian": cost[name][1] / n,
                      "sign_agreement": float((np.sign(h) == np.sign(ref))[ok].mean()),
                      "median_rel_error": float(np.nanmedian(rel)),
                      "median_rel_error_swvl1_obs": float(np.nanmedian(rel[:, :, twin.obs_vars == "swvl1"]))
                      if "swvl1" in twin.obs_vars else np.nan}
    return pd.DataFrame(out).T, H


def jacobian_breakdown(H: dict, obs_vars, source: str = "emulator", reference: str = "autograd") -> pd.DataFrame:
    """How far ``H[source]`` is from ``H[reference]`` per observed variable and analysed layer.

    H : the second return of :func:`compare_jacobians`, ``{name: (n_windows, S, m, L)}``;
    obs_vars : ``(m,)`` the observed variable of each row (``twin.obs_vars``). Over the
    entries where the reference is above 1 % of its row's largest (as in
    :func:`compare_jacobians`): ``n`` entries, ``sign_agreement``, and the median ``|H|`` of
    both (``median_abs_reference``, ``median_abs_source``; units of the observation per
    m3 m-3) with their ratio. Rows ``(variable, layer)``, layer 1..L.
    """
    ref, h = H[reference], H[source]
    scale = np.abs(ref).max(axis=-1, keepdims=True)
    big = (np.abs(ref) > 0.01 * np.where(scale > 0, scale, np.inf)) & np.isfinite(h)
    obs_vars = np.asarray(obs_vars)
    rows = []
    for v in dict.fromkeys(obs_vars):
        j = obs_vars == v
        for layer in range(ref.shape[-1]):
            b = big[:, :, j, layer]
            if not b.any():
                continue
            r, e = ref[:, :, j, layer][b], h[:, :, j, layer][b]
            rows.append({"variable": v, "layer": layer + 1, "n": int(b.sum()),
                         "sign_agreement": float((np.sign(e) == np.sign(r)).mean()),
                         "median_abs_reference": float(np.median(np.abs(r))), "median_abs_source": float(np.median(np.abs(e))),
                         "magnitude_ratio": float(np.median(np.abs(e)) / np.median(np.abs(r)))})
    return pd.DataFrame(rows).set_index(["variable", "layer"])


def _rows_of(H_part: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``(S, m_part, L)`` -> ``(S, m, L)`` with NaN where ``rows`` is False."""
    full = np.full((H_part.shape[0], rows.size, H_part.shape[2]), np.nan)
    full[:, rows] = H_part
    return full
