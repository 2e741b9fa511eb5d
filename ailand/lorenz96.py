"""Lorenz-96: the 40-variable chaotic testbed of data assimilation (Lorenz 1996).

    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F,   i = 0 .. Nx-1 (periodic)

stepped by one classical Runge-Kutta-4 step of length ``dt`` (DAPPER's ``Lorenz96.step``:
``F = 8``, ``dt = 0.05`` ~ 6 h of atmosphere). Everything is a torch function of tensors
batched over leading dims (members, independent runs): ``x (..., Nx)``. ``F`` is a number
or a tensor broadcasting against ``x`` (``(..., 1)`` for one forcing per member: state
augmentation; ``(..., Nx)`` for a forcing per variable). Differentiable.

:class:`Lorenz96` bundles the settings with the step signature the ensemble filter drives,
``step(x, t, params=None, inputs=None)``: ``params (..., 1)`` is F per member (parameter
estimation), ``inputs (..., Nx)`` a forcing field that replaces F (scaling factors of an input).
"""

from __future__ import annotations

import numpy as np
import torch

FORCE = 8.0
NX = 40
DT = 0.05


def dxdt(x: torch.Tensor, F=FORCE) -> torch.Tensor:
    """Lorenz-96 tendency ``(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F``; ``x (..., Nx)`` -> ``(..., Nx)``."""
    xp = torch.cat([x[..., -2:], x, x[..., :1]], dim=-1)  # [x_{-2}, x_{-1}, x_0 .. x_{Nx-1}, x_{Nx}]
    return (xp[..., 3:] - xp[..., :-3]) * xp[..., 1:-2] - x + F


def rk4_step(x: torch.Tensor, dt: float = DT, F=FORCE) -> torch.Tensor:
    """One RK4 step of :func:`dxdt` of length ``dt`` [model time units]; ``x (..., Nx)``."""
    k1 = dxdt(x, F)
    k2 = dxdt(x + 0.5 * dt * k1, F)
    k3 = dxdt(x + 0.5 * dt * k2, F)
    k4 = dxdt(x + dt * k3, F)
    return x + dt / 6 * (k1 + 2 * (k2 + k3) + k4)


def initial_state(Nx: int = NX) -> np.ndarray:
    """DAPPER's ``x0``: zeros with ``x0[0] = 1`` (the rest state F plus nothing would not move)."""
    x0 = np.zeros(Nx)
    x0[0] = 1.0
    return x0


class Lorenz96:
    """Lorenz-96 with RK4 as a step function for ensemble filters.

    Parameters
    ----------
    Nx : number of variables (default 40).
    F : forcing (default 8).
    dt : time step [model time units] (default 0.05).
    dtype : torch dtype (default float64).

    ``step(x, t, params=None, inputs=None)``: ``x (..., Nx)``; ``t`` the time at the start of
    the step (unused: autonomous); ``params (..., 1)`` the forcing F per member when it is
    estimated; ``inputs`` a forcing that broadcasts against ``x`` (e.g. ``F * factors``).
    Returns ``x`` at ``t + dt``.
    """

    def __init__(self, Nx: int = NX, F: float = FORCE, dt: float = DT, dtype: torch.dtype = torch.float64):
        if Nx < 4:
            raise ValueError(f"Nx must be >= 4, got {Nx}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        self.Nx, self.F, self.dt, self.dtype = int(Nx), float(F), float(dt), dtype

    def __repr__(self):
        return f"Lorenz96(Nx={self.Nx}, F={self.F}, dt={self.dt})"

    def step(self, x: torch.Tensor, t: float = 0.0, params: torch.Tensor | None = None,
             inputs: torch.Tensor | None = None) -> torch.Tensor:
        """One RK4 step: ``x (..., Nx)`` -> ``(..., Nx)``; F from ``inputs``, else ``params``, else ``self.F``."""
        F = inputs if inputs is not None else (params if params is not None else self.F)
        return rk4_step(x, self.dt, F)

    def simulate(self, x0, n_steps: int, F=None) -> torch.Tensor:
        """Trajectory from ``x0 (..., Nx)``: ``(n_steps + 1, ..., Nx)`` (float64 tensor), no noise."""
        x = torch.as_tensor(np.asarray(x0) if not torch.is_tensor(x0) else x0, dtype=self.dtype)
        F = self.F if F is None else F
        out = torch.empty((n_steps + 1,) + tuple(x.shape), dtype=self.dtype)
        out[0] = x
        for k in range(n_steps):
            x = rk4_step(x, self.dt, F)
            out[k + 1] = x
        return out
