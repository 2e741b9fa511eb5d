"""Forward: control vectors ``(n, d)`` -> observation vectors ``(n, m)`` through a model.

``M(x) = Observe(model.simulate(forcing, params(x), state0))``. The ``n`` control vectors
run as ``n`` members of one vectorised ``simulate`` (parameters shaped ``(n, 1)`` against
sites ``(S,)``), on the torch path, so ``dM/dx`` comes from autograd for the physics
(:class:`ailand.ToyEcLand`) and the emulator (:class:`ailand.emulator.Emulator`) alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ailand import ParameterSpace
from ailand.physics.model import STATE_NAMES, VARIABLES, join_layers

from .observe import Observe


class Forward:
    """The forward operator ``M``: parameters -> observation-space vector.

    Parameters
    ----------
    model : ``ToyEcLand`` or ``Emulator`` (``float64`` physics for accurate gradients).
    forcing : hourly forcing Dataset ``(time, site)`` (with the static site fields, as
        from :func:`ailand.synthetic_forcing`, or give ``site_fields``).
    space : the control parameters, a :class:`ailand.ParameterSpace` whose names are a
        subset of ``model.space`` (e.g. ``model.space.subset(["RSMIN", "KSAT"])``);
        control vectors are in its order and in physical units. Parameters not in it
        stay at the model's defaults.
    observe : an :class:`Observe`; bound here to the model's output intervals.
    state0 : start state (Dataset over ``site`` or dict), not differentiated. Default:
        ``model.initial_conditions(forcing, spinup_years=spinup_years)`` at the default
        parameters, computed once.
    spinup_years : spin-up for the default ``state0`` (None: the model's own setting).
    site_fields : static site Dataset for ``model.prepare`` when the forcing lacks them.

    Calling ``forward(x)`` with ``x`` a tensor ``(n, d)`` returns a tensor ``(n, m)`` in
    the model's dtype, differentiable with respect to ``x``; numpy in gives numpy out
    (no graph). A ``(d,)`` vector gives ``(m,)``. :attr:`n_runs` counts the control
    vectors evaluated (model runs), :attr:`n_calls` the calls.
    """

    def __init__(
        self,
        model,
        forcing: xr.Dataset,
        space: ParameterSpace,
        observe: Observe,
        state0=None,
        spinup_years: int | None = None,
        site_fields: xr.Dataset | None = None,
    ):
        unknown = [n for n in space.names if n not in model.space]
        if unknown:
            raise ValueError(f"Forward: parameter(s) {unknown} are not parameters of the model; it has {model.space.names}")
        produced = list(getattr(model, "output_names", VARIABLES))
        missing = [v for v in observe.variables if v not in produced]
        if missing:
            raise ValueError(f"Forward: the model ({type(model).__name__}) does not produce {missing}; it gives {produced}")
        self.model, self.space = model, space
        self.names = list(space.names)
        f, self.static, self.repeat = model.prepare(forcing, site_fields)
        T, S = f["Tair"].shape
        t0 = pd.Timestamp(forcing["time"].values[0])
        starts = t0 + pd.to_timedelta(model.dt * np.arange(T * self.repeat), unit="s")
        self.observe = observe.bind(starts, forcing["site"].values)
        rows = int(np.ceil(self.observe.n_steps / self.repeat))  # stop at the window's end
        self.forcing = {k: v[:rows] for k, v in f.items()}
        if state0 is None:
            state0 = model.initial_conditions(forcing, sites=site_fields, spinup_years=spinup_years)
        if isinstance(state0, xr.Dataset) and "site" in state0.dims:
            state0 = state0.sel(site=forcing["site"].values)
        named = model._named_state_from(state0, STATE_NAMES, (S,))
        self.state0 = {k: v.detach() for k, v in join_layers(named).items()}  # (S,), (S, 4)
        self.n_runs = 0
        self.n_calls = 0

    def __repr__(self):
        return (f"Forward({type(self.model).__name__}, d={len(self.names)} {self.names}, m={self.n_obs}: "
                f"{', '.join(self.observe.variables)} at {self.observe.freq} over {len(self.observe._site_index)} site(s))")

    @property
    def n_obs(self) -> int:
        return self.observe.n_obs

    @property
    def labels(self) -> pd.MultiIndex:
        """``(variable, site, time)`` of each of the ``m`` outputs."""
        return self.observe.labels

    def feasible(self, x) -> np.ndarray:
        """Boolean ``(n,)``: rows inside the bounds and, with the other parameters at their
        defaults, satisfying the model space's constraints (e.g. THETA_PWP < THETA_CAP)."""
        x = np.atleast_2d(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=float))
        full = np.tile(self.model.space.default_vector, (len(x), 1))
        full[:, [self.model.space.names.index(n) for n in self.names]] = x
        return self.model.space.feasible(full)

    def __call__(self, x):
        """``x`` ``(n, d)`` or ``(d,)`` physical parameters -> ``M(x)`` ``(n, m)`` or ``(m,)``."""
        is_torch = torch.is_tensor(x)
        xt = x if is_torch else torch.as_tensor(np.asarray(x, dtype=float))
        single = xt.ndim == 1
        xt = xt[None] if single else xt
        if xt.ndim != 2 or xt.shape[-1] != len(self.names):
            raise ValueError(f"Forward expects control vectors (n, {len(self.names)}) in the order {self.names}, got shape {tuple(xt.shape)}")
        ok = self.feasible(xt)
        if not ok.all():
            bad = xt[int(np.argmin(ok))].detach().cpu().numpy()
            self.model.space.check(dict(zip(self.names, bad)), what="Forward control vector")  # raises with the reason
        with torch.set_grad_enabled(is_torch and torch.is_grad_enabled()):
            y = self._simulate(xt)
        self.n_runs += xt.shape[0]
        self.n_calls += 1
        y = y[0] if single else y
        return y if is_torch else y.detach().cpu().numpy()

    def _simulate(self, x: torch.Tensor) -> torch.Tensor:
        """One vectorised run: ``n`` members ``(n, 1)`` x sites ``(S,)`` -> ``(n, m)``."""
        n = x.shape[0]
        params = self.model.param_tensors({name: x[:, j : j + 1] for j, name in enumerate(self.names)})
        state = {k: v.expand(n, *v.shape) for k, v in self.state0.items()}
        kw = {"forcing_repeat": self.repeat} if self.repeat != 1 else {}
        out, _ = self.model.simulate(self.forcing, params, self.static, state, outputs=list(self.observe.variables), **kw)
        return self.observe(out)

    def jacobian(self, x) -> torch.Tensor:
        """``dM/dx`` ``(n, m, d)`` [output units per parameter unit] by autograd: one
        forward run of the ``n`` members and one batched backward pass over the ``m``
        outputs (members are independent, so each output's backward serves all rows)."""
        return batched_jacobian(self, x)


def batched_jacobian(fn, x) -> torch.Tensor:
    """Jacobian ``(n, m, d)`` of a row-wise function ``fn: (n, d) -> (n, m)`` at ``x``.

    Rows must be independent (row ``i`` of the output depends only on row ``i`` of the
    input), as for :class:`Forward` members. Uses one reverse pass batched over the
    ``m`` outputs (``is_grads_batched``), or a loop over outputs where vmap fails.
    """
    x = torch.as_tensor(x.detach() if torch.is_tensor(x) else np.asarray(x, dtype=float)).clone()
    x = x[None] if x.ndim == 1 else x
    x.requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        n, m = y.shape
        if not y.requires_grad:  # y does not depend on x
            return torch.zeros(n, m, x.shape[-1], dtype=x.dtype, device=x.device)
        eye = torch.eye(m, dtype=y.dtype, device=y.device)[:, None, :].expand(m, n, m)
        try:
            (g,) = torch.autograd.grad(y, x, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True)
        except RuntimeError:  # an op without a batching rule: one backward pass per output
            rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True, allow_unused=True)[0] for i in range(m)]
            g = torch.stack([torch.zeros_like(x) if r is None else r for r in rows])
    if g is None:  # y does not depend on x
        g = torch.zeros(m, n, x.shape[-1], dtype=x.dtype, device=x.device)
    return g.permute(1, 0, 2).detach()  # (m, n, d) -> (n, m, d)
