"""Fine-tuning an emulator's diagnostic outputs to observations (learning a model bias).

The emulator learnt one physics; observations (e.g. FLUXNET latent and sensible heat) come
from the real world, whose processes differ. :func:`finetune` learns the difference for a
few named diagnostics without touching anything else:

* the trained network is frozen; a small residual head
  (:class:`ailand.emulator.head.DiagnosticHead`) reads the network's input ``x`` and last
  hidden layer ``h`` at each step and adds a correction to the named diagnostic columns of
  its (normalised) output only::

      d_v = clamp( (out_v(x) + c_v(x, h)) * std_v + mean_v ),   v in variables

* the state columns are not corrected, so a rollout's states are **bit-for-bit those of the
  original emulator** (tolerance 0, by construction; the tests check it on held-out data).
  With ``water_closure`` on, the closure reads Evap, Qs and Qsb: fine-tuning those is
  refused, since it would feed back into the soil water.

Because the states do not depend on the head, the base rollout is run once (no gradient)
from ``state0`` on the forcing, the network inputs of every step are recorded, and the head
is fitted by full-batch Adam to the observations' interval means of the corrected
diagnostics: the loss is the mean squared error in units of each diagnostic's training std,
over the observed (non-NaN) intervals (plus the energy penalty below); a seeded share ``val_fraction`` of 10-interval
blocks is held out and the head of the lowest validation loss is kept (early stopping).

Observations: an xarray Dataset ``(time, site)`` of interval means (e.g. daily or 6-hourly)
with a ``units`` attribute per variable (W m-2 for Qle, Qh), labelled like every
:class:`~ailand.interface.ColumnModel` output: ``time`` is the **end** of each interval
(``ToyEcLand.run(output_freq="1D")`` gives exactly this), the interval a whole number of
emulator steps, every interval inside the forcing, every site in the forcing. Missing
values (NaN) are skipped.

What the head does not do: it corrects the named outputs only, so related diagnostics keep
the original network's values (fine-tuning Qle leaves Evap, and the water the soil loses,
as they were). Rn and G are not corrected either, so Rn = H + LE + G holds only as far as
the corrections of Qle and Qh cancel: with both fine-tuned, ``energy_weight`` (default 1)
adds a penalty on their sum at every step (``benchmarks/emulator_finetune.py`` measures the
daily residual with and without). To learn a bias that should also change the states, the
network itself would have to be retrained.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..physics.model import STATE_NAMES, VARIABLES
from ..progress import as_progress
from .budget import FLUX_NAMES
from .head import DiagnosticHead

__all__ = ["finetune"]

BLOCK = 10  # intervals per validation block


def _check_variables(em, observations, variables) -> list[str]:
    if not isinstance(observations, xr.Dataset):
        raise TypeError(f"observations must be an xarray.Dataset (time, site), got {type(observations).__name__}")
    if variables is None:
        variables = list(observations.data_vars)
    variables = [variables] if isinstance(variables, str) else [str(v) for v in variables]
    if not variables:
        raise ValueError("no variables to fine-tune: name diagnostics of the emulator, e.g. variables=['Qle', 'Qh']")
    for v in variables:
        if v in STATE_NAMES:
            raise ValueError(f"{v!r} is a state: finetune changes diagnostic outputs only; choose from {list(em.diagnostics)}")
        if v not in em.diagnostics:
            raise ValueError(f"unknown variable {v!r}: the emulator's diagnostics are {list(em.diagnostics)}")
        if v not in observations:
            raise ValueError(f"observations lack {v!r}; they hold {list(observations.data_vars)}")
        da = observations[v]
        if set(da.dims) != {"time", "site"}:
            raise ValueError(f"observations[{v!r}] must have dims (time, site), got {da.dims}")
        want, got = VARIABLES[v][0], da.attrs.get("units")
        if got is None:
            raise ValueError(f"observations[{v!r}] has no 'units' attribute; it must be in {want!r}")
        if str(got).strip() != want:
            raise ValueError(f"observations[{v!r}] is in {got!r}, the emulator's {v} in {want!r}: convert it first")
    if em.water_closure and any(v in FLUX_NAMES for v in variables):
        raise ValueError(
            f"the emulator closes its water balance from {list(FLUX_NAMES)}: fine-tuning "
            f"{[v for v in variables if v in FLUX_NAMES]} would change its soil water; set water_closure=False first"
        )
    return variables


def _obs_steps(em, observations, forcing) -> tuple[np.ndarray, int]:
    """Emulator step indices ``(n_obs, m)`` of each observation interval, and m (steps per interval).

    Raises when the intervals are irregular, not whole emulator steps, or outside the forcing."""
    t_obs = pd.DatetimeIndex(observations["time"].values)
    t_f = pd.DatetimeIndex(forcing["time"].values)
    if len(t_obs) == 0:
        raise ValueError("observations hold no times")
    if len(t_f) < 2:
        raise ValueError("the forcing needs at least two time steps")
    f_step = (t_f[1] - t_f[0]).total_seconds()
    f_end = t_f[-1] + pd.Timedelta(seconds=f_step)
    if len(t_obs) > 1:
        d = np.diff(t_obs.values).astype("timedelta64[s]").astype(float)
        if not np.all(d == d[0]) or d[0] <= 0:
            raise ValueError("observation times must be regular and increasing (one interval length)")
        interval = float(d[0])
    else:
        interval = str(observations.attrs.get("interval", ""))
        if not interval:
            raise ValueError("one observation time: give its interval as observations.attrs['interval'] (e.g. '1D')")
        interval = pd.Timedelta(interval).total_seconds()
    m = interval / em.dt
    if abs(m - round(m)) > 1e-9 or round(m) < 1:
        raise ValueError(f"observation interval {interval:g} s is not a whole number of emulator steps of {em.dt:g} s")
    m = int(round(m))
    start = t_obs[0] - pd.Timedelta(seconds=interval)
    if start < t_f[0] or t_obs[-1] > f_end:
        raise ValueError(
            f"observations ({start} .. {t_obs[-1]}, intervals ending at 'time') are not covered by the forcing "
            f"({t_f[0]} .. {f_end}): run over a forcing that spans every observed interval"
        )
    end_steps = (t_obs - t_f[0]).total_seconds().values / em.dt  # step count at each interval's end
    if np.any(np.abs(end_steps - np.round(end_steps)) > 1e-9):
        raise ValueError(f"observation times do not fall on emulator step boundaries ({em.dt:g} s from {t_f[0]})")
    end_steps = np.round(end_steps).astype(int)
    return end_steps[:, None] - m + np.arange(m)[None, :], m


def finetune(
    em,
    observations: xr.Dataset,
    forcing: xr.Dataset,
    variables=None,
    *,
    state0=None,
    params=None,
    sites: xr.Dataset | None = None,
    spinup_years: int | None = None,
    width: int = 64,
    depth: int = 2,
    epochs: int = 600,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    energy_weight: float = 1.0,
    seed: int = 0,
    progress=False,
):
    """Fine-tune the diagnostics ``variables`` of emulator ``em`` to ``observations``.

    Parameters
    ----------
    em : a trained :class:`ailand.Emulator` (left untouched).
    observations : Dataset ``(time, site)`` of interval means of the named diagnostics,
        with units (see the module docstring); NaN marks missing values.
    forcing : hourly forcing Dataset ``(time, site)`` (as for :meth:`Emulator.run`) that
        spans every observed interval and holds every observed site.
    variables : diagnostic names to fine-tune (default: the observations' variables).
    state0, params, sites, spinup_years : as for :meth:`Emulator.run` (one parameter set):
        the rollout starts from ``state0`` (e.g. ``ToyEcLand.initial_conditions``), or from
        the emulator's own spin-up.
    width, depth : of the head's MLP. epochs, lr, weight_decay : full-batch Adam.
    val_fraction : share of 10-interval blocks held out for early stopping (0: none).
    energy_weight : when both Qle and Qh are fine-tuned, weight of a penalty on their
        corrections' sum at every step, mean(((dQle + dQh) / s)^2) with s the mean of their
        training stds: Rn = H + LE + G holds for the original outputs and Rn, G are not
        corrected, so a correction that moves energy between LE and H keeps it (0: off; in
        ``benchmarks/emulator_finetune.py`` the default 1 cut the daily energy residual at
        held-out sites from 6.4 to 1.3 W m-2 RMSE, for ~1 W m-2 more Qle and Qh RMSE there).
    seed : seeds the head's initialisation and the validation blocks.
    progress : bool or :class:`ailand.progress.Progress` (a bar over the epochs on stderr).

    Returns
    -------
    A new :class:`ailand.Emulator` (a deep copy of ``em``) with a trained ``diag_head``;
    ``meta["finetune"]`` records the variables, sites, period, seed, epochs and the RMSE
    against the observations before and after (training and validation intervals). It
    saves and loads with the head (:meth:`Emulator.save`).
    """
    if getattr(em, "diag_head", None) is not None:
        raise ValueError("this emulator is already fine-tuned (it has a diag_head): fine-tune the original instead")
    variables = _check_variables(em, observations, variables)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    obs_sites = [str(s) for s in observations["site"].values]
    f_sites = [str(s) for s in forcing["site"].values]
    missing = [s for s in obs_sites if s not in f_sites]
    if missing:
        raise ValueError(f"observed site(s) {missing} are not in the forcing; it has {f_sites}")
    forcing = forcing.sel(site=obs_sites)
    if isinstance(state0, xr.Dataset) and "site" in state0.dims:
        state0 = state0.sel(site=obs_sites)
    steps, m = _obs_steps(em, observations, forcing)
    prog = as_progress(progress)

    # ---- the base rollout, once: record the network input of every step
    f, st, _ = em.prepare(forcing, sites)
    p, members = em._params_checked(params)
    if members is not None:
        raise ValueError("finetune takes one parameter set (params without members)")
    state, _ = em._start_state(f, p, st, state0, spinup_years, prog)
    n_steps = f["Tair"].shape[0]
    if steps.max() >= n_steps:
        raise ValueError("observations are not covered by the forcing's whole emulator steps")
    xs = []
    hook = em.net.register_forward_pre_hook(lambda mod, args: xs.append(args[0].detach()))
    try:
        with prog.stage(f"finetune: base rollout ({n_steps} steps x {len(obs_sites)} sites)"), torch.no_grad():
            em.simulate(f, p, st, state, outputs=[])
    finally:
        hook.remove()
    x = torch.stack(xs)  # (T, S, n_in)
    cols = [em.output_names.index(v) for v in variables]
    icol = [em.diagnostics.index(v) for v in variables]
    with torch.no_grad():
        h = em.net.hidden(x)
        base = em.net.head(h)[..., cols]  # (T, S, k) normalised
    std, mean = em._k["diag_std"][icol], em._k["diag_mean"][icol]
    lo, hi = em._dlo[icol], em._dhi[icol]
    pair = [variables.index(v) for v in ("Qle", "Qh")] if {"Qle", "Qh"} <= set(variables) else None
    if energy_weight < 0:
        raise ValueError(f"energy_weight must be >= 0, got {energy_weight}")

    def interval_means(z):  # (T, S, k) normalised -> physical interval means (n_obs, S, k)
        d = torch.minimum(torch.maximum(z * std + mean, lo), hi)
        return d[torch.as_tensor(steps)].mean(1)

    y = em.tensor(np.stack([observations[v].transpose("time", "site").values for v in variables], -1))
    ok = torch.isfinite(y)
    if not bool(ok.any()):
        raise ValueError("observations hold no finite values")
    y = torch.where(ok, y, torch.zeros_like(y))
    n_obs = y.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    n_blocks = -(-n_obs // BLOCK)
    n_val = int(round(val_fraction * n_blocks)) if n_blocks > 1 else 0
    val_blocks = torch.randperm(n_blocks, generator=gen)[:n_val]
    is_val = torch.zeros(n_obs, dtype=torch.bool)
    for b in val_blocks.tolist():
        is_val[b * BLOCK:(b + 1) * BLOCK] = True
    w_tr = ok & ~is_val[:, None, None]
    w_va = ok & is_val[:, None, None]

    def loss_of(pred, w):
        return (((pred - y) / std) ** 2 * w).sum() / w.sum().clamp(min=1)

    def rmse(pred, w):  # per variable, physical units
        return [float(torch.sqrt((((pred - y) ** 2) * w)[..., j].sum() / w[..., j].sum().clamp(min=1))) for j in range(len(variables))]

    torch.manual_seed(int(seed))
    head = DiagnosticHead(x.shape[-1], h.shape[-1], len(em.output_names), variables, cols, width=width, depth=depth,
                          activation=em.config["activation"]).to(em.device, em.dtype)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.no_grad():
        before = interval_means(base)
    best = (float("inf"), -1, copy.deepcopy(head.state_dict()))
    with prog.bar(total=epochs, desc="finetune", unit="epoch") as bar:
        for epoch in range(int(epochs)):
            opt.zero_grad()
            corr = head.correction(x, h)
            pred = interval_means(base + corr)
            loss = loss_of(pred, w_tr)
            if energy_weight and pair is not None:  # keep LE + H (so Rn = H + LE + G) where the head acts
                d = corr[..., pair] * std[pair]
                loss = loss + energy_weight * ((d.sum(-1) / std[pair].mean()) ** 2).mean()
            loss.backward()
            opt.step()
            with torch.no_grad():
                score = float(loss_of(pred, w_va)) if n_val else float(loss)
            if score < best[0]:
                best = (score, epoch, copy.deepcopy(head.state_dict()))
            bar.update(1)
    head.load_state_dict(best[2])
    head.eval()
    for q in head.parameters():
        q.requires_grad_(False)
    with torch.no_grad():
        after = interval_means(base + head.correction(x, h))

    new = copy.deepcopy(em)
    new.diag_head = head
    t_obs = pd.DatetimeIndex(observations["time"].values)
    new.meta["finetune"] = {
        "variables": variables,
        "sites": obs_sites,
        "period": [str(t_obs[0] - pd.Timedelta(seconds=m * em.dt)), str(t_obs[-1])],
        "interval_steps": m,
        "seed": int(seed),
        "epochs": int(epochs),
        "best_epoch": int(best[1]),
        "head": {"width": int(width), "depth": int(depth), "lr": lr, "weight_decay": weight_decay,
                 "val_fraction": val_fraction, "energy_weight": energy_weight},
        "rmse_train_before": dict(zip(variables, rmse(before, w_tr))),
        "rmse_train_after": dict(zip(variables, rmse(after, w_tr))),
        "rmse_val_before": dict(zip(variables, rmse(before, w_va))) if n_val else None,
        "rmse_val_after": dict(zip(variables, rmse(after, w_va))) if n_val else None,
    }
    prog.say(f"finetune: best epoch {best[1]}; RMSE before -> after (train) "
             + ", ".join(f"{v} {new.meta['finetune']['rmse_train_before'][v]:.2f} -> {new.meta['finetune']['rmse_train_after'][v]:.2f}"
                         for v in variables))
    return new
