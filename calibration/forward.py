"""Forward: control vectors ``(n, d)`` -> observation vectors ``(n, m)`` through a model.

``M(x) = Observe(model.simulate(forcing, params(x), state0))``. The ``n`` control vectors
run as ``n`` members of one vectorised ``simulate`` (parameters shaped ``(n, 1)`` against
sites ``(S,)``), on the torch path, so ``dM/dx`` comes from autograd for the physics
(:class:`ailand.ToyEcLand`) and the emulator (:class:`ailand.emulator.Emulator`) alike.
"""

from __future__ import annotations

import warnings

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

    def jacobian(self, x, mode: str = "auto") -> torch.Tensor:
        """``dM/dx`` ``(n, m, d)`` [output units per parameter unit] by autograd, the ``n``
        members in one run (they are independent, so each pass serves all rows): forward
        mode (``d`` tangent passes) when ``d < m``, else reverse mode (``m`` adjoint
        passes); ``mode="forward"``/``"reverse"`` forces one (see :func:`batched_jacobian`)."""
        return batched_jacobian(self, x, mode=mode, m=self.n_obs)


JACOBIAN_MODES = ("auto", "forward", "reverse")


def jacobian_mode(d: int, m: int, mode: str = "auto") -> str:
    """The differentiation mode for an ``(m, d)`` Jacobian: ``"forward"`` (``d`` tangent
    passes) when ``d < m``, else ``"reverse"`` (``m`` adjoint passes); ``mode`` other than
    ``"auto"`` is returned as is. The one place where the choice is made."""
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"mode must be one of {JACOBIAN_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "forward" if d < m else "reverse"


def batched_jacobian(fn, x, mode: str = "auto", m: int | None = None) -> torch.Tensor:
    """Jacobian ``(n, m, d)`` of a row-wise function ``fn: (n, d) -> (n, m)`` at ``x``.

    Rows must be independent (row ``i`` of the output depends only on row ``i`` of the
    input), as for :class:`Forward` members: one pass then serves all ``n`` rows.

    mode : ``"auto"`` (default: :func:`jacobian_mode`, forward when ``d < m``),
        ``"forward"`` or ``"reverse"``. Both give the same matrix (to rounding).

        * reverse: one forward run with its graph, then one adjoint (backward) pass per
          output, ``m`` of them vmapped (``is_grads_batched``; a loop where vmap fails).
          Costs grow with ``m``: a one-year window of 2,190 daily data took 343 s with the
          emulator (631 forward runs' worth).
        * forward: the ``d`` tangent-linear products ``J u_j`` (``u_j`` the unit vectors), by
          the double-backward trick: ``g(v) = J^T v`` from one backward pass with its graph,
          then ``J u = d/dv (g(v) . u)``, one pass per tangent, the ``d`` of them vmapped.
          The cost does not grow with ``m``. Only reverse-mode rules are used, so every op
          with a backward works (torch's forward-AD dual numbers give the same numbers but,
          in this torch build, run 30-40x slower than a plain run on these small eager
          models: every op mixing a dual and a plain tensor or a Python scalar takes a slow
          path; measured in ``benchmarks/calibration.py --only long_window``). The products
          are checked by the dot-product test ``v . (J u) = (J^T v) . u`` at a random ``v``
          (seeded): a backward that is not differentiable in ``v`` (a custom autograd
          function that leaves torch) would otherwise drop paths silently; on a failure,
          or an op that cannot be differentiated twice, it warns and uses reverse mode.
    m : the number of outputs when known (default ``fn.n_obs`` if ``fn`` has it, else one
        row is evaluated without gradient to find it); only ``"auto"`` needs it.
    """
    x = torch.as_tensor(x.detach() if torch.is_tensor(x) else np.asarray(x, dtype=float)).clone()
    x = x[None] if x.ndim == 1 else x
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"mode must be one of {JACOBIAN_MODES}, got {mode!r}")
    if mode == "auto":
        if m is None:
            m = getattr(fn, "n_obs", None)
        if m is None:
            with torch.no_grad():
                m = int(fn(x[:1]).shape[-1])
    mode = jacobian_mode(x.shape[-1], m if m is not None else 0, mode)
    x.requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        n, m = y.shape
        if not y.requires_grad:  # y does not depend on x
            return torch.zeros(n, m, x.shape[-1], dtype=x.dtype, device=x.device)
        if mode == "forward":
            try:
                return _forward_jacobian(y, x)
            except _ForwardModeError as err:
                warnings.warn(f"batched_jacobian: forward mode failed ({err}); using reverse mode", stacklevel=2)
        g = _reverse_jacobian(y, x)
    return g.permute(1, 0, 2).detach()  # (m, n, d) -> (n, m, d)


class _ForwardModeError(RuntimeError):
    pass


def _reverse_jacobian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(m, n, d)``: one adjoint pass per output of ``y (n, m)``, vmapped over the outputs."""
    n, m = y.shape
    eye = torch.eye(m, dtype=y.dtype, device=y.device)[:, None, :].expand(m, n, m)
    try:
        (g,) = torch.autograd.grad(y, x, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True)
    except RuntimeError:  # an op without a batching rule: one backward pass per output
        rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True, allow_unused=True)[0] for i in range(m)]
        g = torch.stack([torch.zeros_like(x) if r is None else r for r in rows])
    if g is None:  # y does not depend on x
        g = torch.zeros(m, n, x.shape[-1], dtype=x.dtype, device=x.device)
    return g


def _forward_jacobian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(n, m, d)``: ``J u_j`` for the ``d`` unit tangents by double backward, dot-product tested."""
    n, d = x.shape
    gen = torch.Generator(device=y.device).manual_seed(0)
    v = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device).requires_grad_(True)
    try:
        (g,) = torch.autograd.grad(y, x, grad_outputs=v, create_graph=True, retain_graph=True)  # J^T v (n, d)
        if not g.requires_grad:
            raise _ForwardModeError("the backward pass is not differentiable (no graph from create_graph=True)")
        U = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :].expand(d, n, d)
        try:
            (Ju,) = torch.autograd.grad(g, v, grad_outputs=U, is_grads_batched=True, retain_graph=True)  # (d, n, m)
        except RuntimeError:  # an op without a batching rule: one pass per tangent
            Ju = torch.stack([torch.autograd.grad(g, v, grad_outputs=U[j], retain_graph=True)[0] for j in range(d)])
    except _ForwardModeError:
        raise
    except RuntimeError as err:  # e.g. a custom function marked once_differentiable
        raise _ForwardModeError(f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    # dot-product test, per row and tangent: v . (J u_j) == (J^T v) . u_j = g[:, j]
    lhs = torch.einsum("jnm,nm->nj", Ju.to(torch.float64), v.detach().to(torch.float64))
    rhs = g.detach().to(torch.float64)
    scale = torch.einsum("jnm,nm->nj", Ju.abs().to(torch.float64), v.detach().abs().to(torch.float64))
    tol = 10 * torch.finfo(y.dtype).eps ** 0.5  # 1.5e-7 in float64, 3.5e-3 in float32, of sum |v| |J u|
    bad = (lhs - rhs).abs() > tol * (scale + rhs.abs()) + torch.finfo(torch.float64).tiny
    if bad.any():
        worst = float(((lhs - rhs).abs() / (scale + rhs.abs()).clamp_min(1e-300)).max())
        raise _ForwardModeError(f"dot-product test v.(J u) = (J^T v).u failed (relative difference {worst:.2e}): "
                                "part of the model's backward pass is not differentiable")
    return Ju.permute(1, 2, 0).detach().to(x.dtype)
