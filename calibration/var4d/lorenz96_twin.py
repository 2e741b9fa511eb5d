"""Cycled 4D-Var on Lorenz-96: DAPPER's ``sakov2008`` twin, with exact or emulated TL/AD.

Setting (DAPPER 1.2.2 ``dapper/mods/Lorenz96/sakov2008.py``): F = 8, Nx = 40, RK4 ``dt = 0.05``,
all 40 variables observed with R = I every ``obs_every`` steps (sakov2008: every step,
``dt_obs = 0.05``; Bocquet and Sakov 2013 Fig. 4: ``obs_every = 4``, ``dt_obs = 0.2``), truth from
``N(e_0, 0.001 I)``, 1000 observation times (DAPPER's ``KObs = 1000`` gives 1001), averages over
the analyses at ``t > 20``. 4D-Var as DAPPER's ``Var4D(Lag=1)``: windows of one observation
interval (the control at its start, the observation at its end), the first background ``e_0``,
``B = xB * cov(truth)`` (DAPPER's ``B='clim'``: the sample covariance of the true trajectory
itself, a twin-experiment convenience), static; the analysis is reported at the window end.

- :func:`simulate` - truth at every step and observations every ``obs_every`` steps;
- :func:`var4d_twin` - cycled 4D-Var with the exact model's TL/AD (``tl="exact"``), an
  emulator's (``tl="emulator"``, incremental: outer loops with the exact model), or with the
  emulator also as the forecast model (``model="emulator"``);
- :func:`letkf_twin` - our LETKF (:mod:`calibration.ensemble_kalman`) on the same data;
- :func:`free_run_rmse` - no assimilation.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ailand.lorenz96 import Lorenz96, initial_state

from .core import Var4D, cycle

SETTING = {"Nx": 40, "F": 8.0, "dt": 0.05, "x0_var": 0.001, "obs_var": 1.0, "burn_in": 20.0}


def simulate(cycles: int = 1001, seed: int = 3000, obs_every: int = 1, Nx: int = 40, F: float = 8.0,
             dt: float = 0.05, obs_var: float = 1.0, x0_var: float = 0.001) -> dict:
    """Truth ``xx (cycles * obs_every + 1, Nx)`` at every step from ``N(e_0, x0_var I)`` and
    observations ``yy (cycles, Nx)`` of every variable, ``yy[k] = xx[(k + 1) obs_every] + N(0,
    obs_var I)``. For ``obs_every = 1`` the same draws as
    :func:`calibration.ensemble_kalman.lorenz96_twin.simulate` (same seed, same arrays).
    Returns ``{"xx", "yy", "obs", "dt", "F", "obs_every", "seed"}`` (numpy)."""
    if obs_every < 1 or cycles < 1:
        raise ValueError(f"obs_every and cycles must be >= 1, got {obs_every}, {cycles}")
    rng = np.random.default_rng(seed)
    start = initial_state(Nx) + np.sqrt(x0_var) * rng.standard_normal(Nx)
    xx = Lorenz96(Nx, F, dt).simulate(start, cycles * obs_every).numpy()
    obs = np.arange(Nx)
    yy = xx[obs_every::obs_every][:, obs] + np.sqrt(obs_var) * rng.standard_normal((cycles, obs.size))
    return {"xx": xx, "yy": yy, "obs": obs, "dt": dt, "F": F, "obs_every": obs_every, "seed": seed}


def _emulator(emulator):
    if emulator is None:
        from ailand.lorenz96_emulator import default

        return default()
    return emulator


def var4d_twin(data: dict, xB: float = 0.01, tl: str = "exact", model: str = "exact", method: str | None = None,
               B="truth", n_outer: int = 2, gtol: float = 1e-5, max_iter: int = 200, burn_in: float = 20.0,
               emulator=None, progress: bool = False) -> xr.Dataset:
    """Cycled 4D-Var (DAPPER's ``Var4D(Lag=1)`` windows) on ``data`` from :func:`simulate`.

    Parameters
    ----------
    xB : ``B = xB * C`` with ``C`` from ``B``.
    B : ``"truth"`` (default, DAPPER's ``B='clim'``: ``C`` the sample covariance of the whole true
        trajectory ``data["xx"]``), ``"climatology"`` (``C`` from a free run of 5000 steps after
        spin-up, independent of the truth: for short twins whose truth is still in its transient
        from ``e_0``), or an ``(Nx, Nx)`` matrix used as ``B`` itself (``xB`` ignored).
    tl : whose tangent-linear and adjoint models give the gradient: ``"exact"`` (autograd
        through the RK4 step) or ``"emulator"`` (autograd through the MLP emulator of the step).
    model : ``"exact"`` or ``"emulator"``: the nonlinear model of the window and the forecast
        to the next window (the truth is always the exact model).
    method : ``"nonlinear"`` (L-BFGS on the full cost; the default when ``tl`` matches
        ``model``) or ``"incremental"`` (``n_outer`` outer loops with ``model``, inner L-BFGS with
        the ``tl`` derivatives; the only option when they differ).
    emulator : an :class:`ailand.lorenz96_emulator.L96Emulator` (default: the shipped one).

    Returns the :func:`calibration.var4d.cycle` Dataset (attrs ``rmse_a`` at the window ends
    after ``burn_in``, ``rmse_f``, ``wall_s_per_cycle``, ...) with ``tl``, ``model``, ``xB``.
    """
    for name, v in (("tl", tl), ("model", model)):
        if v not in ("exact", "emulator"):
            raise ValueError(f"{name} must be 'exact' or 'emulator', got {v!r}")
    xx, yy, dt, k = data["xx"], data["yy"], data["dt"], int(data.get("obs_every", 1))
    Nx = xx.shape[1]
    exact = Lorenz96(Nx, data.get("F", 8.0), dt)
    if method is None:
        method = "nonlinear" if tl == model else "incremental"
    if method == "nonlinear" and tl != model:
        raise ValueError("method='nonlinear' differentiates the window's own model: tl must equal model "
                         "(use method='incremental' for another model's TL/AD)")
    em = _emulator(emulator) if "emulator" in (tl, model) else None
    step = exact.step if model == "exact" else em.step
    lin = exact.step if tl == "exact" else em.step
    if isinstance(B, str):
        if B == "truth":
            Bm = xB * np.cov(xx.T)
        elif B == "climatology":
            from calibration.ensemble_kalman.lorenz96_twin import climatology

            Bm = xB * climatology(Nx, n_steps=5000, F=data.get("F", 8.0), dt=dt)[1]
        else:
            raise ValueError(f"B must be 'truth', 'climatology' or an (Nx, Nx) matrix, got {B!r}")
    else:
        Bm = B
    var = Var4D(step, np.asarray(data["obs"]), Bm, SETTING["obs_var"], n_steps=k, dt=dt, method=method,
                linear_step=lin if method == "incremental" else None, n_outer=n_outer, gtol=gtol, max_iter=max_iter)
    ds = cycle(var, initial_state(Nx), yy[:, None, :], truth=xx, burn_in=burn_in, progress=progress)
    ds.attrs.update({"tl": tl, "model": model, "xB": float(xB) if isinstance(B, str) else float("nan"),
                     "B": B if isinstance(B, str) else "matrix",
                     "obs_every": k, "setting": "sakov2008" if k == 1 else f"sakov2008 with dt_obs={k * dt:g}"})
    return ds


def letkf_twin(data: dict, N: int = 20, infl: float = 1.02, loc_rad: float = 4.0, rot: bool = True,
               burn_in: float = 20.0, seed: int | None = None) -> xr.Dataset:
    """Our LETKF (Gaspari-Cohn, state batches of 2 as DAPPER's sakov2008) on ``data``, with
    ``obs_every`` model steps per cycle; ensemble ``N(e_0, 0.001 I)`` drawn with ``seed`` (default
    ``data["seed"] + 1``). Returns the filter Dataset (``attrs["rmse_a"]``)."""
    from calibration.ensemble_kalman import CyclingFilter, Layout, gaussian_ensemble
    from calibration.ensemble_kalman.localisation import l96_coefficients

    xx, yy, obs, dt, k = data["xx"], data["yy"], data["obs"], data["dt"], int(data.get("obs_every", 1))
    Nx = xx.shape[1]
    seed = int(data.get("seed", 3000)) + 1 if seed is None else seed
    model = Lorenz96(Nx, data.get("F", 8.0), dt)
    flt = CyclingFilter(model.step, obs, np.ones(obs.size) * SETTING["obs_var"], Layout(Nx), "letkf", infl=infl,
                        rot=rot, coeffs=l96_coefficients(Nx, obs, loc_rad, "GC", batch=2), seed=seed)
    E0 = gaussian_ensemble(initial_state(Nx), np.sqrt(SETTING["x0_var"]), N, np.random.default_rng(seed))
    return flt.run(E0, yy, obs_every=k, dt=dt, truth=xx[k::k], burn_in=burn_in)


def free_run_rmse(data: dict, burn_in: float = 20.0, seed: int = 987654) -> float:
    """Time-mean RMSE (at the observation times after ``burn_in``) of a model run from another
    draw of ``N(e_0, 0.001 I)`` (``seed``), without assimilation."""
    xx, dt, k = data["xx"], data["dt"], int(data.get("obs_every", 1))
    Nx = xx.shape[1]
    x0 = initial_state(Nx) + np.sqrt(SETTING["x0_var"]) * np.random.default_rng(seed).standard_normal(Nx)
    free = Lorenz96(Nx, data.get("F", 8.0), dt).simulate(x0, len(xx) - 1).numpy()
    e = np.sqrt(((free[k::k] - xx[k::k]) ** 2).mean(1))
    t = (np.arange(len(e)) + 1) * k * dt
    return float(e[t > burn_in].mean())


def emulator_window_tests(emulator=None, obs_every: int = 4, seed: int = 0) -> dict:
    """TL (Taylor) and adjoint tests of one window of ``obs_every`` steps through the exact model
    and through the emulator, at an attractor state (for reports)."""
    from ailand.lorenz96_emulator import attractor_states

    from .core import adjoint_test, tangent_linear_test

    em = _emulator(emulator)
    x = attractor_states(1, seed)[0]
    exact = Lorenz96()

    def window(step):
        def f(z):
            for _ in range(obs_every):
                z = step(z)
            return z
        return f

    out = {}
    for name, st in (("exact", exact.step), ("emulator", em.step)):
        tt = tangent_linear_test(window(st), x, seed=seed)
        at = adjoint_test(window(st), x, seed=seed)
        out[name] = {"taylor": tt.to_dict(), "adjoint": at.to_dict()}
    with torch.no_grad():
        dx = torch.as_tensor(np.random.default_rng(seed).standard_normal(x.shape[0]))
    from .core import tangent_linear

    a = tangent_linear(window(exact.step), x, dx)[1]
    b = tangent_linear(window(em.step), x, dx)[1]
    out["tl_rel_diff"] = float((a - b).norm() / a.norm())
    return out
