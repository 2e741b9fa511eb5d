"""The toy ecLand (or its emulator) as a :class:`CyclingFilter` step: land data assimilation.

:class:`LandStep` packs a column model's prognostic state at ``S`` sites into the filter's
state vector and advances all ``N`` members over one assimilation window in one vectorised
``model.simulate`` call (members ``(N, 1)`` x sites ``(S,)``)::

    x (N, n_state)   n_state = len(state_vars) * S, ordered variable-major:
                     x[:, v * S + s] = state_vars[v] at site s   (SI units, see STATE_META)
    p (N, n_params)  model parameters (physical units), one value per member for all sites
    f (N, S)         multiplicative factors of one forcing input per site (e.g. Rainf)

The filter's time ``t`` counts windows (``dt = 1``): window ``k`` covers forcing rows
``[k * rows, (k + 1) * rows)``. Observations are of the state at the end of each window,
picked by :meth:`LandStep.obs_index` (e.g. top-layer soil moisture ``swvl1`` as from
SMOS/ASCAT retrievals, or snow water equivalent ``sd``).

    step = LandStep(ToyEcLand(dtype=torch.float64), forcing, params=["RSMIN"], scale_input="Rainf")
    flt = CyclingFilter(step, step.obs_index(["swvl1"]), R, step.layout, method="etkf",
                        names=step.names, units=step.units, input_fn=step.input_fn,
                        factor_index=step.factor_index)
    ds = flt.run(E0, y, truth=...)

Parameters that leave their bounds after an analysis, or a state that becomes unphysical,
make the member's run non-finite; the filter then redraws that member (see
:mod:`calibration.ensemble_kalman.filter`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import xarray as xr

from ailand.physics.model import STATE_META, STATE_NAMES, join_layers, split_layers

from .filter import Layout

DEFAULT_STATE = ("swvl1", "swvl2", "swvl3", "swvl4", "stl1", "stl2", "stl3", "stl4", "skt", "sd", "wl")


class LandStep:
    """``step(x, t, params, inputs) -> x`` over one window of a ToyEcLand / Emulator.

    Parameters
    ----------
    model : :class:`ailand.ToyEcLand` or :class:`ailand.Emulator`.
    forcing : forcing Dataset ``(time, site)`` (with the static site fields, or give
        ``site_fields``), covering every window to be run.
    window : model steps per assimilation window (default: one day of steps).
    state_vars : prognostic variables analysed (the others are carried along per member
        unchanged by the analysis). Default: soil water and temperature, skin temperature,
        snow water and the interception store.
    params : names of model parameters to estimate by state augmentation (persistent).
    scale_input : name of a forcing input (e.g. ``"Rainf"``) multiplied by one factor per
        site (the factors are estimated; ``input_fn``/``factor_index`` feed the filter).
    state0 : start state (Dataset over ``site`` or dict); default the model's
        ``initial_conditions`` at the default parameters (with ``spinup_years``).
    """

    def __init__(self, model, forcing: xr.Dataset, window: int | None = None,
                 state_vars: Sequence[str] = DEFAULT_STATE, params: Sequence[str] = (),
                 scale_input: str | None = None, state0=None, spinup_years: int | None = None,
                 site_fields: xr.Dataset | None = None):
        bad = [v for v in state_vars if v not in STATE_NAMES]
        if bad:
            raise ValueError(f"state_vars: {bad} are not prognostic variables; choose from {list(STATE_NAMES)}")
        unknown = [p for p in params if p not in model.space]
        if unknown:
            raise ValueError(f"params: {unknown} are not parameters of the model; it has {model.space.names}")
        self.model, self.state_vars, self.param_names = model, list(state_vars), list(params)
        f, self.static, self.repeat = model.prepare(forcing, site_fields)
        self.forcing = f
        if scale_input is not None and scale_input not in f:
            raise ValueError(f"scale_input: {scale_input!r} is not a forcing input of the model; it has {sorted(f)}")
        self.scale_input = scale_input
        self.sites = [str(s) for s in forcing["site"].values]
        S = len(self.sites)
        window = int(round(86400 / model.dt)) if window is None else int(window)
        if window < 1 or window % self.repeat:
            raise ValueError(f"window must be a positive multiple of {self.repeat} model steps, got {window}")
        self.window, self.rows = window, window // self.repeat
        self.n_windows = f["Tair"].shape[0] // self.rows
        if self.n_windows < 1:
            raise ValueError(f"the forcing has {f['Tair'].shape[0]} rows, fewer than one window ({self.rows})")
        if state0 is None:
            state0 = model.initial_conditions(forcing, sites=site_fields, spinup_years=spinup_years)
        if isinstance(state0, xr.Dataset) and "site" in state0.dims:
            state0 = state0.sel(site=forcing["site"].values)
        named = model._named_state_from(state0, STATE_NAMES, (S,))
        self.state0 = {k: v.detach() for k, v in named.items()}  # (S,) per named variable
        self.carried = None  # (N, S) per variable not analysed, set by :meth:`initial_ensemble`
        self.layout = Layout(len(self.state_vars) * S, len(self.param_names), S if scale_input else 0)
        self.names = ([f"{v}@{s}" for v in self.state_vars for s in self.sites] + self.param_names
                      + ([f"{scale_input}_factor@{s}" for s in self.sites] if scale_input else []))
        units = {k: v[0] for k, v in STATE_META.items()}
        self.units = ([units[v] for v in self.state_vars for _ in self.sites]
                      + [model.space.units[p] for p in self.param_names] + (["1"] * S if scale_input else []))
        # scaling factors: element j of the window's input (row-major (rows, S)) uses factor j % S
        self.factor_index = np.tile(np.arange(S), self.rows) if scale_input else None

    def __repr__(self):
        return (f"LandStep({type(self.model).__name__}, {len(self.sites)} site(s), window {self.window} steps, "
                f"state {self.state_vars}, params {self.param_names}, scale {self.scale_input})")

    # --------------------------------------------------------------- packing
    def pack_state(self, named: dict) -> torch.Tensor:
        """Named state tensors ``(N, S)`` -> ``x (N, n_state)`` float64."""
        return torch.cat([named[v].to(torch.float64) for v in self.state_vars], dim=-1)

    def unpack_state(self, x: torch.Tensor) -> dict:
        """``x (N, n_state)`` -> named state ``(N, S)`` in the model's dtype (analysed variables)."""
        S = len(self.sites)
        xm = x.to(self.model.dtype)
        return {v: xm[:, i * S:(i + 1) * S] for i, v in enumerate(self.state_vars)}

    def initial_ensemble(self, N: int, rng: np.random.Generator, state_std: dict | None = None,
                         param_mean=None, param_std=None, factor_mean: float = 1.0, factor_std: float = 0.0):
        """``E0 (N, layout.size)``: the start state with Gaussian perturbations ``state_std``
        (``{var: std}``, per variable, SI units; others unperturbed), parameters
        ``N(param_mean, param_std^2)`` (default the model's defaults and a quarter of the
        range) and factors ``N(factor_mean, factor_std^2)``. Also resets the variables
        carried along (not analysed) to the start state for ``N`` members."""
        S = len(self.sites)
        state_std = dict(state_std or {})
        bad = [k for k in state_std if k not in self.state_vars]
        if bad:
            raise ValueError(f"state_std: {bad} are not analysed state variables {self.state_vars}")
        base = {v: self.state0[v].to(torch.float64).expand(N, S) for v in self.state_vars}
        x = self.pack_state(base).clone()
        for i, v in enumerate(self.state_vars):
            if v in state_std:
                x[:, i * S:(i + 1) * S] += float(state_std[v]) * torch.as_tensor(rng.standard_normal((N, S)))
        parts = [x]
        if self.param_names:
            sub = self.model.space.subset(self.param_names)
            mean = sub.default_vector if param_mean is None else np.asarray(param_mean, dtype=float)
            std = (sub.bounds[:, 1] - sub.bounds[:, 0]) / 4 if param_std is None else np.asarray(param_std, dtype=float)
            parts.append(torch.as_tensor(mean + std * rng.standard_normal((N, len(self.param_names)))))
        if self.scale_input:
            parts.append(torch.as_tensor(factor_mean + factor_std * rng.standard_normal((N, S))))
        self.reset(N)
        return torch.cat(parts, dim=-1)

    def reset(self, N: int):
        """Start the variables that are not analysed from ``state0`` for ``N`` members."""
        S = len(self.sites)
        self.carried = {k: v.expand(N, S).clone() for k, v in self.state0.items() if k not in self.state_vars}

    # ----------------------------------------------------------------- step
    def _window(self, t: float) -> slice:
        k = int(round(t))
        if not 0 <= k < self.n_windows:
            raise ValueError(f"window {k} is outside the forcing ({self.n_windows} windows)")
        return slice(k * self.rows, (k + 1) * self.rows)

    def input_fn(self, t: float) -> torch.Tensor:
        """The forcing input the factors multiply over window ``t``, flattened ``(rows * S,)``."""
        return self.forcing[self.scale_input][self._window(t)].reshape(-1).to(torch.float64)

    def __call__(self, x: torch.Tensor, t: float, params=None, inputs=None) -> torch.Tensor:
        """Advance every member one window: ``x (N, n_state)`` -> ``(N, n_state)`` float64."""
        N, S = x.shape[0], len(self.sites)
        if self.carried is None or next(iter(self.carried.values())).shape[0] != N:
            self.reset(N)
        rows = self._window(t)
        forcing = {k: v[rows] for k, v in self.forcing.items()}
        if inputs is not None:  # (N, rows * S) -> (rows, N, S)
            forcing[self.scale_input] = inputs.reshape(N, self.rows, S).transpose(0, 1).to(self.model.dtype)
        values = {}
        if params is not None:
            values = {nm: params[:, j:j + 1].to(self.model.dtype) for j, nm in enumerate(self.param_names)}
        p = self.model.param_tensors(values)
        state = join_layers({**self.carried, **self.unpack_state(x)})
        kw = {"forcing_repeat": self.repeat} if self.repeat != 1 else {}
        with torch.no_grad():
            _, final = self.model.simulate(forcing, p, self.static, state, outputs=[], **kw)
        named = split_layers(final)
        named = {k: v.expand(N, S) for k, v in named.items()}
        self.carried = {k: _heal(v) for k, v in named.items() if k not in self.state_vars}
        return self.pack_state(named)

    # ------------------------------------------------------------ helpers
    def obs_index(self, variables: Sequence[str], sites: Sequence[str] | None = None) -> np.ndarray:
        """Indices into ``x`` of ``variables`` (analysed state) at ``sites`` (default all):
        point observations for :class:`CyclingFilter`'s ``observe``."""
        sites = self.sites if sites is None else [str(s) for s in sites]
        bad = [v for v in variables if v not in self.state_vars]
        if bad:
            raise ValueError(f"variables: {bad} are not analysed state variables {self.state_vars}")
        bad = [s for s in sites if s not in self.sites]
        if bad:
            raise ValueError(f"sites: {bad} are not in the forcing's sites {self.sites}")
        S = len(self.sites)
        return np.array([self.state_vars.index(v) * S + self.sites.index(s) for v in variables for s in sites])

    def truth_run(self, n_windows: int, params: dict | None = None, factors=None) -> np.ndarray:
        """One member from ``state0`` at ``params`` (``{name: value}``, others default) with the
        input scaled by ``factors`` ``(S,)``: the state at the end of each window ``(K, n_state)``."""
        if n_windows > self.n_windows:
            raise ValueError(f"n_windows={n_windows} exceeds the forcing's {self.n_windows} windows")
        S = len(self.sites)
        x = self.pack_state({v: self.state0[v].expand(1, S) for v in self.state_vars})
        p = None
        if self.param_names:
            full = {**dict(zip(self.param_names, self.model.space.subset(self.param_names).default_vector)), **(params or {})}
            p = torch.as_tensor([[full[nm] for nm in self.param_names]], dtype=torch.float64)
        f = torch.as_tensor(np.ones(S) if factors is None else np.asarray(factors, dtype=float)).reshape(1, S)
        self.reset(1)
        out = []
        for k in range(n_windows):
            u = None
            if self.scale_input:
                u = self.input_fn(k)[None] * f[:, self.factor_index]
            x = self(x, k, p, u)
            out.append(x[0])
        self.carried = None
        return torch.stack(out).numpy()


def _heal(v: torch.Tensor) -> torch.Tensor:
    """A carried (not analysed) variable ``(N, S)``: members whose value is not finite (a
    failed run, which the filter redraws) restart from the finite members' mean."""
    bad = ~torch.isfinite(v)
    if not bool(bad.any()):
        return v
    ok = (~bad).to(v.dtype)
    mean = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).mul(ok).sum(0) / ok.sum(0).clamp(min=1)
    return torch.where(bad, mean.expand_as(v), v)
