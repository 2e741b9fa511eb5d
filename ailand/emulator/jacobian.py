"""Jacobians of the emulator step and parameter sensitivities of whole rollouts.

Two kinds of derivative, both by automatic differentiation:

* :func:`step_jacobian` - the one-step Jacobian ``J[b] = d outputs / d inputs`` of the
  emulator's flat step (``Emulator.step_flat``) at a batch of input rows, with
  ``torch.func`` (``vmap`` over rows of ``jacrev``/``jacfwd``). In physical units:
  ``J[b, i, j]`` is in ``output_units[i]`` per ``input_units[j]``.
  :func:`step_inputs` builds those rows from a forcing Dataset ("the Jacobian at
  FI-Hyy on 2020-04-15 06:00").
* :func:`rollout_sensitivity` - ``d <output over a period> / d parameter`` through a
  whole ``prepare`` + ``simulate`` rollout, for the emulator *or* the physics
  (:class:`ailand.ToyEcLand`), with per-site parameter copies so that one backward
  pass gives every site's gradient. :func:`compare_sensitivities` sets the two side
  by side (does the emulator get the physics' sensitivities right?).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..physics.model import STATE_NAMES, VARIABLES, join_layers
from .features import CLIM_NAMES, FORCING_NAMES, LOG_INPUTS, PRECIP_SCALE, TIME_NAMES

__all__ = [
    "step_jacobian", "step_inputs", "input_units", "input_scales", "output_scales",
    "rollout_sensitivity", "compare_sensitivities",
]

JACOBIAN_UNITS_NOTE = (
    "J[sample, output, input] = d output / d input in physical units: output_units[output] per "
    "input_units[input] (e.g. K per (W m-2) for d skt / d SWdown); outputs are the state at t+dt "
    "and the diagnostics averaged over [t, t+dt)"
)


# ------------------------------------------------------------------ helpers
def input_units(em) -> list[str]:
    """Units of ``em.input_names`` (parameters take their units from ``em.space``)."""
    units = list(em.input_units())
    space_units = em.space.units
    return [space_units.get(n, u) for n, u in zip(em.input_names, units)]


def _sites_list(sites) -> list[str] | None:
    if sites is None:
        return None
    if isinstance(sites, str):
        return [s.strip() for s in sites.split(",") if s.strip()]
    return [str(s) for s in sites]


def _select_sites(forcing: xr.Dataset, sites) -> xr.Dataset:
    names = _sites_list(sites)
    if names is None:
        return forcing
    have = [str(s) for s in forcing["site"].values]
    missing = [s for s in names if s not in have]
    if missing:
        raise ValueError(f"site(s) {missing} are not in the forcing; it has {have}")
    return forcing.sel(site=names)


def _as_rows(em, x) -> tuple[torch.Tensor, dict]:
    """x (tensor, array or DataArray (sample, input)) -> ((B, n_in) tensor, sample coords)."""
    coords = {}
    n_in = len(em.input_names)
    if isinstance(x, xr.DataArray):
        if "input" not in x.dims:
            raise ValueError(f"x DataArray needs an 'input' dimension, got dims {x.dims}")
        names = [str(n) for n in x["input"].values]
        if names != list(em.input_names):
            missing = [n for n in em.input_names if n not in names]
            if missing:
                raise ValueError(f"x lacks inputs {missing}; the emulator reads {list(em.input_names)}")
            x = x.sel(input=list(em.input_names))
        if x.ndim == 1:
            x = x.expand_dims(sample=[0])
        other = [d for d in x.dims if d != "input"]
        if len(other) != 1:
            raise ValueError(f"x DataArray must be (sample, input), got dims {x.dims}")
        x = x.transpose(other[0], "input").rename({other[0]: "sample"})
        coords = {k: v for k, v in x.coords.items() if "sample" in v.dims}
        x = x.values
    t = em.tensor(x).detach()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[-1] != n_in:
        raise ValueError(
            f"x must be (batch, {n_in}) physical inputs ordered as emulator.input_names; got shape {tuple(t.shape)}"
        )
    return t, coords


def input_scales(em, x) -> np.ndarray:
    """Size of one normalised network-input unit in physical units, per row: ``(B, n_in)``.

    State, forcing and clim inputs: their normalisation std (precipitation, seen as
    ``log1p(x / PRECIP_SCALE)``, gets the local ``std * (PRECIP_SCALE + x)``); time
    features: 1; parameters: half their range in the parameter's own scale (log
    parameters: ``p * (ln hi - ln lo) / 2``). Multiply a Jacobian's input axis by these
    (and divide the output axis by :func:`output_scales`) for a dimensionless view.
    """
    x, _ = _as_rows(em, x)
    x = x.detach().cpu().double().numpy()
    n = em.norm
    ns, nf, nc, nt = len(STATE_NAMES), len(FORCING_NAMES), len(CLIM_NAMES), len(TIME_NAMES)
    s = np.empty_like(x)
    s[:, :ns] = n.state_std
    fs = np.asarray(n.forcing_std, dtype=float)
    for i, name in enumerate(FORCING_NAMES):
        col = ns + i
        s[:, col] = fs[i] * (PRECIP_SCALE + np.maximum(x[:, col], 0.0)) if name in LOG_INPUTS else fs[i]
    s[:, ns + nf : ns + nf + nc] = n.clim_std
    s[:, ns + nf + nc : ns + nf + nc + nt] = 1.0
    b = em.space.bounds
    log = np.asarray(em.space.is_log, dtype=bool)
    p = x[:, ns + nf + nc + nt :]
    half = np.where(log, p * (np.log(b[:, 1]) - np.log(b[:, 0])) / 2.0, (b[:, 1] - b[:, 0]) / 2.0)
    s[:, ns + nf + nc + nt :] = half
    return s


def output_scales(em) -> np.ndarray:
    """Typical size of each output ``(n_out,)``: the state std for states, the diagnostic std
    for diagnostics (from the emulator's normaliser), in the outputs' physical units."""
    return np.concatenate([np.asarray(em.norm.state_std, dtype=float), np.asarray(em.norm.diag_std, dtype=float)])


# ------------------------------------------------------------ step Jacobian
def step_jacobian(em, x, method: str = "jacrev", chunk_size: int | None = 1024) -> xr.DataArray:
    """Batched one-step Jacobians ``d outputs / d inputs`` of the emulator, in physical units.

    Parameters
    ----------
    em : :class:`ailand.emulator.Emulator`.
    x : ``(B, n_in)`` (or ``(n_in,)``) physical inputs ordered as ``em.input_names``: a
        tensor, a numpy array, or a DataArray ``(sample, input)`` such as
        :func:`step_inputs` returns (its sample coordinates, e.g. ``site``/``time``, are kept).
    method : ``"jacrev"`` (reverse mode, one pass per output; default) or ``"jacfwd"``
        (forward mode, one pass per input). Both give the same matrix.
    chunk_size : rows per vectorised chunk (bounds memory for large B).

    Returns
    -------
    DataArray ``(sample, output, input)``: ``J[b, i, j] = d output_i / d input_j`` at row
    ``b``, in ``output_units[i]`` per ``input_units[j]`` (coordinates). The derivatives
    include the hard bounds: an output pinned at a bound has zero derivative.
    """
    from torch.func import jacfwd, jacrev, vmap

    if method not in ("jacrev", "jacfwd"):
        raise ValueError(f"method must be 'jacrev' or 'jacfwd', got {method!r}")
    rows, coords = _as_rows(em, x)
    jac = jacrev if method == "jacrev" else jacfwd

    def one(row):  # (n_in,) -> (n_out,)
        return em.step_flat(row[None])[0]

    with torch.enable_grad():
        J = vmap(jac(one), chunk_size=chunk_size)(rows)  # (B, n_out, n_in)
    B = rows.shape[0]
    da = xr.DataArray(
        J.detach().cpu().numpy(),
        dims=("sample", "output", "input"),
        coords={
            "sample": np.arange(B),
            "output": list(em.output_names),
            "input": list(em.input_names),
            "output_units": ("output", list(em.output_units())),
            "input_units": ("input", input_units(em)),
            **coords,
        },
        name="jacobian",
        attrs={
            "long_name": "emulator step Jacobian d output / d input",
            "units": "output_units / input_units",
            "description": JACOBIAN_UNITS_NOTE,
            "method": f"torch.func.vmap({method})",
            "dt_seconds": em.dt,
        },
    )
    if "sample" in coords:
        da = da.assign_coords(sample=coords["sample"])
    return da


def _instant_states(em, f, st, p, state0, spinup_years, starts, site_names) -> xr.Dataset:
    """States at the start of every emulator step ``(time, site)``, from an emulator rollout
    on the already prepared tensors ``f``, ``st`` and parameters ``p``."""
    state, _ = em._start_state(f, p, st, state0, spinup_years, False)
    with torch.no_grad():
        out, _ = em.simulate(f, p, st, state, outputs=list(STATE_NAMES))
    data = {
        k: (("time", "site"), torch.cat([state[k][None], out[k][:-1]]).detach().cpu().numpy())
        for k in STATE_NAMES
    }
    return xr.Dataset(data, coords={"time": starts, "site": site_names})


def step_inputs(
    em,
    forcing: xr.Dataset,
    params=None,
    state0=None,
    sites=None,
    times=None,
    states: xr.Dataset | None = None,
    site_fields: xr.Dataset | None = None,
    spinup_years: int | None = None,
) -> xr.DataArray:
    """Physical input rows of the emulator step for given sites and times.

    The drivers (forcing means over each step, clim fields, time features) come from
    ``em.prepare(forcing)`` exactly as in a rollout; the state at the start of each step
    comes from ``states`` when given, else from an emulator run (``em.run``) started
    from ``state0`` (default: ``em.initial_conditions``, i.e. a cold start plus the
    emulator's spin-up).

    Parameters
    ----------
    forcing : hourly forcing Dataset ``(time, site)`` (as for ``em.run``); it must start
        at or before the wanted times, since the state is rolled out from its start.
    params : None (defaults) or a dict ``{name: scalar}`` (one parameter set).
    state0 : state at the forcing's first time (Dataset over ``site``, e.g.
        ``ToyEcLand.initial_conditions``), or None.
    sites : site name(s) to keep (``"FI-Hyy"``, ``"A,B"`` or a list); default all.
    times : time(s) to keep; each picks the emulator step whose interval
        ``[start, start + dt)`` contains it. Default: every step.
    states : instantaneous states ``(time, site)`` to use instead of an emulator run
        (e.g. a physics run at ``output_freq`` equal to the emulator step: a run's value
        at label ``t`` is the state at instant ``t``); must cover the step start times.
    site_fields : static site Dataset for ``em.prepare`` when the forcing lacks them.
    spinup_years : emulator spin-up when ``state0`` is None (default: the emulator's).

    Returns
    -------
    DataArray ``(sample, input)`` with coordinates ``input`` (= ``em.input_names``),
    ``input_units``, and ``site``/``time`` (start of the step) along ``sample``
    (site-major order). Feed it to :func:`step_jacobian` or ``em.step_flat``.
    """
    forcing = _select_sites(forcing, sites)
    p, members = em._params_from(params)
    if members is not None:
        raise ValueError("step_inputs takes one parameter set: params must map names to scalars")
    f, st, _ = em.prepare(forcing, site_fields)
    T, S = f["Tair"].shape
    t0 = pd.Timestamp(forcing["time"].values[0])
    starts = t0 + pd.to_timedelta(em.dt * np.arange(T), unit="s")
    if times is None:
        idx = np.arange(T)
    else:
        want = pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(times)))
        idx = np.floor((want - t0).total_seconds().values / em.dt).astype(int)
        bad = [str(w) for w, i in zip(want, idx) if i < 0 or i >= T]
        if bad:
            raise ValueError(
                f"time(s) {bad} lie outside the forcing's emulator steps {starts[0]} .. {starts[-1] + pd.Timedelta(seconds=em.dt)}"
            )
    if states is None:
        states = _instant_states(em, f, st, p, state0, spinup_years, starts, forcing["site"].values)
    else:
        states = _select_sites(states, sites)
    missing = [k for k in STATE_NAMES if k != "wsn" and k not in states]
    if missing:
        raise ValueError(f"states lack {missing}; they need {list(STATE_NAMES)}")
    try:
        sel = states.sel(time=starts[idx])
    except KeyError as err:
        raise ValueError(f"states do not cover the step start times {list(starts[idx])[:3]}...: {err}") from None
    sel = sel.transpose("time", "site")
    n = len(idx)
    cols = []
    for k in STATE_NAMES:
        cols.append(sel[k].values if k in sel else np.zeros((n, S)))
    for k in (*FORCING_NAMES, "clim_lai"):
        cols.append(f[k][idx].detach().cpu().double().numpy())
    for k in CLIM_NAMES[1:]:
        cols.append(np.broadcast_to(st[k].detach().cpu().double().numpy(), (n, S)))
    for k in TIME_NAMES:
        cols.append(f[k][idx].detach().cpu().double().numpy())
    for k in em.space.names:
        cols.append(np.broadcast_to(p[k].detach().cpu().double().numpy(), (n, S)))
    X = np.stack(cols, axis=-1)  # (n, S, n_in)
    X = np.transpose(X, (1, 0, 2)).reshape(S * n, -1)  # site-major
    site_names = np.repeat(np.asarray(forcing["site"].values), n)
    step_times = np.tile(starts[idx].values, S)
    return xr.DataArray(
        X,
        dims=("sample", "input"),
        coords={
            "sample": np.arange(S * n),
            "input": list(em.input_names),
            "input_units": ("input", input_units(em)),
            "site": ("sample", site_names),
            "time": ("sample", step_times),
        },
        name="inputs",
        attrs={"long_name": "emulator step inputs (physical units)", "time_convention": "time = start of the step"},
    )


# -------------------------------------------------------- rollout sensitivity
def _is_emulator(model) -> bool:
    return hasattr(model, "step_flat")


def _start_state(model, forcing, params, state0, site_fields, spinup_years, S) -> dict[str, torch.Tensor]:
    """A model state dict (``swvl``/``stl`` stacked) ``(S,)`` at the forcing start, without gradient."""
    if state0 is None:
        state0 = model.initial_conditions(forcing, params, sites=site_fields, spinup_years=spinup_years)
    if isinstance(state0, xr.Dataset):
        if "member" in state0.dims:
            raise ValueError("state0 has a 'member' dimension: give one state per site")
        if "site" in state0.dims:
            state0 = state0.sel(site=forcing["site"].values)
    named = model._named_state_from(state0, STATE_NAMES, (S,))
    return {k: v.detach() for k, v in join_layers(named).items()}


REDUCERS = ("mean", "final")


def rollout_sensitivity(
    model,
    forcing: xr.Dataset,
    params=None,
    names: Sequence[str] | None = None,
    output: str = "Qle",
    reduce: str | Callable = "mean",
    period: slice | None = None,
    state0=None,
    sites=None,
    scaled: bool = False,
    site_fields: xr.Dataset | None = None,
    spinup_years: int | None = None,
) -> xr.DataArray:
    """Gradient of an output statistic of a rollout with respect to each parameter, per site.

    ``y_s = reduce(output over period)`` at site ``s``; returns ``d y_s / d p`` for each
    parameter ``p`` in ``names``, by autograd through ``model.prepare`` +
    ``model.simulate``. Works for :class:`ailand.emulator.Emulator` and
    :class:`ailand.ToyEcLand` alike. Each parameter is a per-site copy (a ``(S,)`` leaf
    tensor), so one backward pass gives all sites' gradients (columns are independent).

    Parameters
    ----------
    model : Emulator or ToyEcLand (``float64`` physics for accurate gradients).
    forcing : hourly forcing Dataset ``(time, site)``.
    params : None (defaults) or ``{name: scalar}``: the point where the gradient is taken.
    names : parameters to differentiate (default: all of ``model.space``).
    output : one model output (state or diagnostic, e.g. ``"Qle"``, ``"swvl1"``).
    reduce : ``"mean"`` over the period (default), ``"final"`` (the last interval of the
        period), or a callable ``(T_sel, S) tensor -> (S,) tensor``.
    period : time slice; a model interval ``[t, t + dt)`` belongs to it when its start
        ``t`` lies in the slice (states are those at the interval ends, fluxes the interval
        means), so the hourly physics and the 6-hourly emulator average over the same
        hours. Default: the whole forcing. The rollout stops at the period's end.
    state0 : start state (Dataset over ``site`` / dict), not differentiated. Default:
        ``model.initial_conditions(forcing, params, spinup_years=spinup_years)`` without
        gradient. Pass the physics' one to the emulator so both start alike.
    sites : site name(s) to keep (default all).
    scaled : False: ``d y / d p`` in output units per parameter unit. True: range-scaled,
        ``d y / d z * (z_hi - z_lo)`` with ``z`` the parameter in its own scale (``ln p``
        for log parameters), i.e. the linearised change of ``y`` over the full range.
    site_fields : static site Dataset for ``prepare`` when the forcing lacks them.

    Returns
    -------
    DataArray ``(site, parameter)`` with coordinates ``param_value``, ``param_range_factor``
    (multiply by it to get the range-scaled value; ``(hi - lo)`` or ``p ln(hi/lo)``) and
    ``output_value`` (``y_s``); ``attrs["units"]``.
    """
    forcing = _select_sites(forcing, sites)
    space = model.space
    names = list(space.names) if names is None else list(names)
    unknown = [n for n in names if n not in space]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid names are: {', '.join(space.names)}")
    if output not in VARIABLES:
        raise ValueError(f"unknown output {output!r}; available: {', '.join(VARIABLES)}")
    if _is_emulator(model) and output not in model.output_names:
        raise ValueError(f"the emulator does not predict {output!r}; it gives {list(model.output_names)}")
    if not (callable(reduce) or reduce in REDUCERS):
        raise ValueError(f"reduce must be one of {REDUCERS} or a callable, got {reduce!r}")
    if params is not None and not isinstance(params, dict):
        raise ValueError("params must be None or a dict {name: scalar}")
    base = {k: float(np.asarray(v)) for k, v in (params or {}).items()}
    if base:
        space.check(base)

    f, st, repeat = model.prepare(forcing, site_fields)
    T, S = f["Tair"].shape
    n_steps = T * repeat
    t0 = pd.Timestamp(forcing["time"].values[0])
    starts = t0 + pd.to_timedelta(model.dt * np.arange(n_steps), unit="s")
    if period is None:
        sel = np.arange(n_steps)
    else:
        if not isinstance(period, slice):
            raise ValueError(f"period must be a time slice, e.g. slice('2020-04-01', '2020-04-30'), got {period!r}")
        sel = pd.Series(np.arange(n_steps), index=starts).loc[period].to_numpy()
    if len(sel) == 0:
        raise ValueError(f"period {period} selects no model interval of the forcing ({starts[0]} .. {starts[-1]})")
    rows = int(np.ceil((sel[-1] + 1) / repeat))
    f = {k: v[:rows] for k, v in f.items()}

    state = _start_state(model, forcing, base or None, state0, site_fields, spinup_years, S)
    leaves = {n: torch.full((S,), float(model.param_tensors(base)[n]), dtype=model.dtype, device=model.device, requires_grad=True) for n in names}
    p = model.param_tensors({**base, **leaves})
    with torch.enable_grad():
        out, _ = model.simulate(f, p, st, state, steps_per_output=1, outputs=[output], forcing_repeat=repeat)
        y_t = out[output][torch.as_tensor(sel, device=model.device)]  # (T_sel, S)
        if callable(reduce):
            y = reduce(y_t)
        elif reduce == "mean":
            y = y_t.mean(0)
        else:
            y = y_t[-1]
        if tuple(y.shape) != (S,):
            raise ValueError(f"reduce must return one value per site, shape ({S},); got {tuple(y.shape)}")
        grads = torch.autograd.grad(y.sum(), [leaves[n] for n in names], allow_unused=True)
    g = np.stack([np.zeros(S) if gi is None else gi.detach().cpu().double().numpy() for gi in grads], axis=-1)
    values = np.array([base.get(n, space.defaults[n]) for n in names], dtype=float)
    b = space.bounds[[list(space.names).index(n) for n in names]]
    log = np.asarray(space.is_log, dtype=bool)[[list(space.names).index(n) for n in names]]
    factor = np.where(log, values * np.log(b[:, 1] / b[:, 0]), b[:, 1] - b[:, 0])
    out_units = VARIABLES[output][0]
    pu = space.units
    da = xr.DataArray(
        g * factor if scaled else g,
        dims=("site", "parameter"),
        coords={
            "site": forcing["site"].values,
            "parameter": names,
            "param_value": ("parameter", values),
            "param_units": ("parameter", [pu[n] for n in names]),
            "param_range_factor": ("parameter", factor),
            "output_value": ("site", y.detach().cpu().double().numpy()),
        },
        name=f"d{output}_dparam" + ("_scaled" if scaled else ""),
        attrs={
            "long_name": f"sensitivity of the {reduce if isinstance(reduce, str) else 'reduced'} {output} to each parameter"
            + (" (range-scaled)" if scaled else ""),
            "units": out_units if scaled else f"{out_units} per param_units",
            "output": output,
            "reduce": reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "callable"),
            "period": "" if period is None else f"{period.start} .. {period.stop}",
            "model": type(model).__name__,
            "scaling": "dy/dz * (z_hi - z_lo), z = p (linear) or ln p (log parameters)" if scaled else "none",
        },
    )
    return da


def compare_sensitivities(
    emulator,
    physics,
    forcing: xr.Dataset,
    params=None,
    names: Sequence[str] | None = None,
    outputs: str | Iterable[str] = "Qle",
    reduce: str | Callable = "mean",
    period: slice | None = None,
    state0=None,
    sites=None,
    spinup_years: int | None = None,
    negligible: float = 0.05,
    site_fields: xr.Dataset | None = None,
) -> xr.Dataset:
    """Range-scaled rollout sensitivities of the emulator against the physics.

    Both models start from the same state (``state0``, default the physics'
    ``initial_conditions(forcing, params, spinup_years=spinup_years)``) and are
    differentiated over the same ``period`` with :func:`rollout_sensitivity`
    (``scaled=True``).

    Returns a Dataset over ``(site, parameter)`` (plus ``output`` when ``outputs`` is a
    list) with ``emulator``, ``physics`` (output units, change over each parameter's full
    range), ``rel_error = |emulator - physics| / |physics|``, ``sign_agree``, and
    ``significant``: ``|physics| >= negligible * max |physics|`` over the parameters at
    that site and output. Attrs: ``sign_agreement`` (fraction of significant entries with
    the same sign), ``median_rel_error`` (over significant entries), ``n_significant``.
    """
    single = isinstance(outputs, str)
    outs = [outputs] if single else list(outputs)
    forcing = _select_sites(forcing, sites)
    if state0 is None:
        state0 = physics.initial_conditions(forcing, params, sites=site_fields, spinup_years=spinup_years)
    common = dict(params=params, names=names, reduce=reduce, period=period, state0=state0, scaled=True, site_fields=site_fields)
    em, ph = [], []
    for o in outs:
        em.append(rollout_sensitivity(emulator, forcing, output=o, **common).drop_vars("output_value"))
        ph.append(rollout_sensitivity(physics, forcing, output=o, **common).drop_vars("output_value"))
    e = xr.concat(em, dim=xr.DataArray(outs, dims="output", name="output"))
    p = xr.concat(ph, dim=xr.DataArray(outs, dims="output", name="output"))
    e, p = e.drop_vars("param_value"), p.drop_vars("param_value")
    units = [VARIABLES[o][0] for o in outs]
    big = np.abs(p).max("parameter")
    significant = np.abs(p) >= negligible * big
    significant = significant & (big > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (np.abs(e - p) / np.abs(p)).where(p != 0)
    agree = np.sign(e) == np.sign(p)
    ds = xr.Dataset(
        {
            "emulator": e.rename(None).assign_attrs(long_name="emulator range-scaled sensitivity"),
            "physics": p.rename(None).assign_attrs(long_name="physics range-scaled sensitivity"),
            "rel_error": rel.assign_attrs(long_name="|emulator - physics| / |physics|", units="1"),
            "sign_agree": agree.assign_attrs(long_name="emulator and physics sensitivities have the same sign"),
            "significant": significant.assign_attrs(
                long_name=f"physics sensitivity not negligible (>= {negligible:g} x the largest at this site and output)"
            ),
        }
    ).assign_coords(output_units=("output", units))
    for v in ("emulator", "physics"):
        ds[v].attrs["units"] = "output_units (change over the parameter's full range)"
    m = ds["significant"].values
    n_sig = int(m.sum())
    ds.attrs.update(
        {
            "sign_agreement": float(ds["sign_agree"].values[m].mean()) if n_sig else float("nan"),
            "median_rel_error": float(np.median(ds["rel_error"].values[m])) if n_sig else float("nan"),
            "n_significant": n_sig,
            "negligible_fraction": negligible,
            "reduce": reduce if isinstance(reduce, str) else "callable",
            "period": "" if period is None else f"{period.start} .. {period.stop}",
            "scaling": "dy/dz * (z_hi - z_lo), z = p (linear) or ln p (log parameters)",
        }
    )
    return ds.isel(output=0) if single else ds


# ------------------------------------------------------------------ plotting
def scaled_jacobian(em, J: xr.DataArray, x) -> xr.DataArray:
    """Dimensionless view of a step Jacobian: ``J * input_scale / output_scale``
    (:func:`input_scales`, :func:`output_scales`): the change of each output, in its
    typical sizes, per typical change of each input. ``x`` are the rows J was taken at."""
    s_in = input_scales(em, x)  # (B, n_in)
    s_out = output_scales(em)  # (n_out,)
    out = J * xr.DataArray(s_in, dims=("sample", "input")) / xr.DataArray(s_out, dims="output")
    return out.rename("jacobian_scaled").assign_attrs(
        long_name="step Jacobian scaled by input scale / output scale", units="1",
        description="d output / d input * input_scale / output_scale; scales: normaliser std of states, forcing "
        "and clim, 1 for time features, half the range (own scale) for parameters; output: state/diagnostic std",
    )


def plot_jacobian(J: xr.DataArray, path=None, sample: int = 0, title: str | None = None, linthresh: float = 1e-3):
    """Heatmap (outputs x inputs) of one sample of a (scaled) Jacobian on a symmetric-log
    colour scale, ticks labelled ``name [units]``. Returns the figure (saved when ``path``)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    m = J.isel(sample=sample) if "sample" in J.dims else J
    a = np.asarray(m.transpose("output", "input").values, dtype=float)
    vmax = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
    vmax = max(vmax, 10 * linthresh)
    fig, ax = plt.subplots(figsize=(0.24 * a.shape[1] + 3, 0.26 * a.shape[0] + 2.2), constrained_layout=True)
    im = ax.imshow(a, cmap="RdBu_r", norm=SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10), aspect="auto")
    ou = m["output_units"].values if "output_units" in m.coords else [""] * a.shape[0]
    iu = m["input_units"].values if "input_units" in m.coords else [""] * a.shape[1]
    ax.set_yticks(range(a.shape[0]), [f"{n} [{u}]" for n, u in zip(m["output"].values, ou)], fontsize=7)
    ax.set_xticks(range(a.shape[1]), [f"{n} [{u}]" for n, u in zip(m["input"].values, iu)], fontsize=7, rotation=90)
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    if title is None:
        where = [f"site={m['site'].values}"] if "site" in m.coords else []
        if "time" in m.coords:
            where.append(f"time={pd.Timestamp(m['time'].values):%Y-%m-%d %H:%M}")
        title = f"{J.attrs.get('long_name', J.name)}  " + ", ".join(where)
    ax.set_title(title, fontsize=9)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label(J.attrs.get("units", ""), fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
