"""One assimilation window of a column model at ``S`` sites: the observation operator.

:class:`WindowRunner` runs a :class:`ailand.ToyEcLand` or an :class:`ailand.Emulator` over
window ``k`` (``hours`` long, 12 h by default as ECMWF's land analysis) from a named state,
for ``N`` members at once (members ``(N, 1)`` x sites ``(S,)``), and returns

* ``h (N, S, m)``: the model equivalents of the window's observations, ordered as
  :attr:`WindowRunner.obs_names` - for each observed *diagnostic* (``T2m``, ``RH2m``,
  ``Qle``...) its means over the window's sub-intervals of ``obs_hours`` (T+0..6 and
  T+6..12 h by default: screen-level analyses at synoptic times), then each observed
  *state* variable (``swvl1``: satellite surface soil moisture) at the end of the window;
* the full model state at the end of the window (every prognostic variable, ``(N, S)`` each).

The analysed control is the soil moisture of the top ``n_layers`` layers at the *start*
of the window, ``x (N, S, n_layers)`` [m3 m-3] (``swvl1..swvl3``, 0-100 cm, as ECMWF's
SEKF). :meth:`WindowRunner.h` is differentiable with respect to it, so its Jacobian comes
from autograd for the physics and the emulator alike.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from ailand.physics.model import STATE_META, STATE_NAMES, VARIABLES, join_layers, split_layers

SWVL = ("swvl1", "swvl2", "swvl3", "swvl4")


class WindowRunner:
    """``h(x)``: window-start soil moisture -> observation equivalents over the window.

    Parameters
    ----------
    model : :class:`ailand.ToyEcLand` (its ``dt`` divides the window and ``obs_hours``) or
        :class:`ailand.Emulator` (6-hourly: ``obs_hours`` a multiple of 6).
    forcing : hourly forcing Dataset ``(time, site)`` with the static site fields, starting
        at the first window's start.
    observe : observed variables: diagnostics (interval means) and/or prognostic states
        (end of window); all must be outputs of ``model``.
    hours : window length [h]; ``obs_hours`` : averaging interval of the diagnostics [h].
    n_layers : analysed soil layers (1-3 or 4), from the top.
    params : ``{name: value}`` parameters (scalars, or ``(S,)`` / ``(N, S)`` arrays); others
        at the model's defaults.
    """

    def __init__(self, model, forcing: xr.Dataset, observe: Sequence[str] = ("T2m", "RH2m", "swvl1"),
                 hours: float = 12.0, obs_hours: float = 6.0, n_layers: int = 3, params: Mapping | None = None):
        produced = list(getattr(model, "output_names", VARIABLES))
        missing = [v for v in observe if v not in produced]
        if missing:
            raise ValueError(f"observe: {type(model).__name__} does not produce {missing}; it gives {produced}")
        if not 1 <= int(n_layers) <= 4:
            raise ValueError(f"n_layers must be 1-4 (analysed top layers), got {n_layers}")
        self.model, self.n_layers = model, int(n_layers)
        self.observe = list(observe)
        self.diag_vars = [v for v in self.observe if v not in STATE_META]
        self.state_vars = [v for v in self.observe if v in STATE_META]
        f, self.static, self.repeat = model.prepare(forcing, None)
        step_h = model.dt / 3600.0
        steps, per_obs = hours / step_h, obs_hours / step_h
        if abs(steps - round(steps)) > 1e-9 or abs(per_obs - round(per_obs)) > 1e-9 or round(steps) % round(per_obs):
            raise ValueError(f"window {hours:g} h and obs interval {obs_hours:g} h must be whole multiples of the "
                             f"model step {step_h:g} h, the window a multiple of the interval")
        self.steps, self.per_obs = int(round(steps)), int(round(per_obs))
        if self.steps % self.repeat:
            raise ValueError(f"the window ({self.steps} steps) must hold whole forcing rows ({self.repeat} steps each)")
        self.rows = self.steps // self.repeat
        self.forcing = f
        self.n_windows = f["Tair"].shape[0] // self.rows
        if self.n_windows < 1:
            raise ValueError(f"the forcing covers fewer than one {hours:g} h window")
        self.hours, self.obs_hours = float(hours), float(obs_hours)
        self.n_sub = self.steps // self.per_obs
        self.sites = [str(s) for s in forcing["site"].values]
        self.times = np.asarray(forcing["time"].values[:: int(round(hours))][: self.n_windows])  # window starts (hourly forcing)
        self.obs_names = ([f"{v}@T+{(i + 1) * obs_hours:g}h" for v in self.diag_vars for i in range(self.n_sub)]
                          + [f"{v}@T+{hours:g}h" for v in self.state_vars])
        self.obs_vars = [v for v in self.diag_vars for _ in range(self.n_sub)] + self.state_vars
        self.units = [VARIABLES[v][0] for v in self.obs_vars]
        self.params = dict(params or {})
        self.n_runs = 0  # members run (one member over one window = one run)

    @property
    def m(self) -> int:
        """Observations per site and window."""
        return len(self.obs_names)

    def __repr__(self):
        return (f"WindowRunner({type(self.model).__name__}, {len(self.sites)} sites, {self.n_windows} windows of "
                f"{self.hours:g} h, observes {self.obs_names})")

    def _window_forcing(self, k: int) -> dict:
        if not 0 <= k < self.n_windows:
            raise ValueError(f"window {k} is outside the forcing ({self.n_windows} windows)")
        return {name: v[k * self.rows:(k + 1) * self.rows] for name, v in self.forcing.items()}

    def run(self, k: int, state: Mapping[str, torch.Tensor], x: torch.Tensor | None = None, params=None,
            scale: Mapping[str, torch.Tensor] | None = None):
        """Run window ``k`` for ``N`` members from ``state`` (named ``(N, S)`` tensors, every
        prognostic variable) with the top layers' soil moisture replaced by ``x (N, S, n_layers)``
        when given (keeps its graph). ``params``: ``{name: (N, S) or (N, 1) tensor}`` over the
        runner's; ``scale``: ``{input: (rows, N, S)}`` multiplicative factors of forcing inputs
        over the window (per-member forcing perturbations; the physics only).
        Returns ``(h (N, S, m), final named state (N, S))``."""
        S = len(self.sites)
        N = max(int(x.shape[0]) if x is not None else 1, *(int(v.shape[0]) for v in state.values()))
        named = {k_: v.to(self.model.dtype).expand(N, S) for k_, v in state.items()}
        if x is not None:
            for j in range(self.n_layers):
                named[SWVL[j]] = x[..., j].to(self.model.dtype)
        values = {**self.params, **(params or {})}
        p = self.model.param_tensors({k_: (v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v, dtype=float)))
                                      for k_, v in values.items()})
        kw = {"forcing_repeat": self.repeat} if self.repeat != 1 else {}
        forcing = self._window_forcing(k)
        for name, fac in (scale or {}).items():
            forcing[name] = forcing[name][:, None, :] * fac.to(forcing[name].dtype)  # (rows, N, S)
        out, final = self.model.simulate(forcing, p, self.static, join_layers(named),
                                         steps_per_output=self.per_obs, outputs=self.observe, **kw)
        parts = [out[v].permute(1, 2, 0) for v in self.diag_vars]  # (n_sub, N, S) -> (N, S, n_sub)
        parts += [out[v][-1][..., None] for v in self.state_vars]
        self.n_runs += N
        h = torch.cat(parts, dim=-1).to(torch.float64)
        return h, {k_: v.expand(N, S) for k_, v in split_layers(final).items()}

    def theta_sat(self) -> torch.Tensor:
        """Porosity THETA_SAT [m3 m-3] per site ``(S,)`` (the upper bound of the analysis)."""
        v = self.params.get("THETA_SAT", self.model.space.defaults["THETA_SAT"])
        return torch.as_tensor(np.broadcast_to(np.asarray(v, dtype=float), (len(self.sites),)).copy())

    def x_of(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The analysed soil moisture ``(N, S, n_layers)`` float64 of a named state."""
        return torch.stack([state[SWVL[j]].to(torch.float64) for j in range(self.n_layers)], dim=-1)

    def with_x(self, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> dict:
        """A copy of ``state`` with the top layers' soil moisture set to ``x (N, S, n_layers)``."""
        out = dict(state)
        for j in range(self.n_layers):
            out[SWVL[j]] = x[..., j].to(state[SWVL[j]].dtype)
        return out


def start_state(model, forcing: xr.Dataset, spinup_years: int = 1, params: Mapping | None = None) -> dict:
    """Named start state ``(1, S)`` per prognostic variable: ``model``'s spun-up initial
    conditions on ``forcing`` (at ``params`` over the defaults)."""
    ds = model.initial_conditions(forcing, params=params or None, spinup_years=spinup_years)
    S = forcing.sizes["site"]
    named = model._named_state_from(ds, STATE_NAMES, (S,))
    return {k: v.detach()[None].to(torch.float64) for k, v in named.items()}
