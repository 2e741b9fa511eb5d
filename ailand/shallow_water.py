"""Periodic shallow-water testbed (1-D and 2-D) in torch, flux-form finite volume.

Equations (rotating shallow water, flat bottom, conservative variables ``q = (h, hu, hv)``)::

    d/dt h  + d/dx (hu)             + d/dy (hv)             = 0
    d/dt hu + d/dx (hu^2 + g h^2/2) + d/dy (huv)            = + f hv
    d/dt hv + d/dx (huv)            + d/dy (hv^2 + g h^2/2) = - f hu

(1-D: no ``y`` terms, ``v`` carried as a passive momentum with Coriolis coupling; ``f = 0``
by default in 1-D.)

Scheme (documented so the numbers can be checked)
--------------------------------------------------
* **space**: finite volume on a uniform periodic grid of cells ``dx`` [m] (``dy``); cell
  averages of ``q``; face values by MUSCL reconstruction of ``(h, u, v)`` with the minmod
  limiter (second order where smooth, no new extrema); the Rusanov (local Lax-Friedrichs)
  flux ``F* = (F(q_L) + F(q_R))/2 - a/2 (q_R - q_L)``, ``a = max(|u| + sqrt(g h))`` of the two
  face states.
* **time**: Heun's method (SSP-RK2), a fixed step ``dt`` [s] that must satisfy the CFL
  condition ``dt * max(|u| + sqrt(g h)) / dx <= 0.5`` (:meth:`ShallowWater2D.check_cfl` raises
  otherwise).
* **conservation**: the mass update of every cell is a difference of face fluxes and the
  grid is periodic, so total mass ``sum(h) dx dy`` changes only by rounding (each flux is
  added to one cell and subtracted from its neighbour); the Coriolis source changes momentum
  but not mass. Tested to float64 rounding.

:func:`residual` is the continuous PDE residual between two states a time ``dt`` apart
(centred differences in space, trapezoid in time), used as a physics constraint on a
learned model (it is not identically zero for the scheme's own states: it measures the
truncation and the numerical diffusion, a few percent of the tendency).

Units: ``h`` [m], ``u, v`` [m s-1], ``x, y`` [m], ``t`` [s], ``g`` [m s-2], ``f`` [s-1].
States are tensors ``(..., 3, ny, nx)`` (2-D) or ``(..., 2, nx)`` (1-D: ``h, u``), primitive
variables; leading dims are a batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ShallowWater1D", "ShallowWater2D", "residual", "residual_1d", "total_mass", "G"]

G = 9.81  # gravitational acceleration [m s-2]


def _minmod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(a * b > 0, torch.sign(a) * torch.minimum(a.abs(), b.abs()), torch.zeros_like(a))


def _muscl(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right states at the face ``i+1/2`` (between cell i and i+1) along ``dim``, periodic."""
    wm, wp = torch.roll(w, 1, dim), torch.roll(w, -1, dim)
    s = _minmod(w - wm, wp - w)  # limited slope per cell
    left = w + 0.5 * s  # face i+1/2 seen from cell i
    right = torch.roll(w - 0.5 * s, -1, dim)  # face i+1/2 seen from cell i+1
    return left, right


def _flux_x(h, u, v, g):
    hu = h * u
    return torch.stack([hu, hu * u + 0.5 * g * h * h, hu * v], dim=-3)


def _rusanov(hL, uL, vL, hR, uR, vR, g, flux):
    """Rusanov flux ``(..., 3, ny, nx)`` at each face from its left/right primitive states."""
    qL = torch.stack([hL, hL * uL, hL * vL], dim=-3)
    qR = torch.stack([hR, hR * uR, hR * vR], dim=-3)
    a = torch.maximum(uL.abs() + torch.sqrt(g * hL.clamp(min=0)), uR.abs() + torch.sqrt(g * hR.clamp(min=0)))
    return 0.5 * (flux(hL, uL, vL, g) + flux(hR, uR, vR, g)) - 0.5 * a.unsqueeze(-3) * (qR - qL)


class ShallowWater2D:
    """2-D periodic rotating shallow water on ``ny x nx`` cells of ``dx x dy`` [m].

    ``step(state)`` advances primitive states ``(..., 3, ny, nx)`` = ``(h, u, v)`` by ``dt`` [s];
    ``run(state, n_steps)`` returns the trajectory ``(n_steps + 1, ..., 3, ny, nx)``;
    ``random_state(batch, seed)`` draws seeded initial states. Depth ``h0`` [m] at rest.
    """

    def __init__(self, ny: int = 32, nx: int = 32, dx: float = 1.0e4, dy: float | None = None, h0: float = 10.0,
                 g: float = G, f: float = 1.0e-4, dt: float | None = None, cfl: float = 0.3,
                 dtype: torch.dtype = torch.float64):
        if int(ny) < 4 or int(nx) < 4:
            raise ValueError(f"the grid needs at least 4 x 4 cells, got {ny} x {nx}")
        if not (dx > 0 and h0 > 0 and g > 0):
            raise ValueError(f"dx, h0 and g must be > 0, got dx={dx}, h0={h0}, g={g}")
        self.ny, self.nx = int(ny), int(nx)
        self.dx, self.dy = float(dx), float(dy if dy is not None else dx)
        self.h0, self.g, self.f, self.dtype = float(h0), float(g), float(f), dtype
        c = math.sqrt(self.g * self.h0)
        self.dt = float(dt) if dt is not None else cfl * min(self.dx, self.dy) / (1.5 * c)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ny, self.nx)

    def check_state(self, state: torch.Tensor, name: str = "state") -> torch.Tensor:
        if not torch.is_tensor(state):
            state = torch.as_tensor(np.asarray(state), dtype=self.dtype)
        if state.ndim < 3 or tuple(state.shape[-3:]) != (3, self.ny, self.nx):
            raise ValueError(f"{name} must be (..., 3, {self.ny}, {self.nx}) = (h, u, v) on this grid, "
                             f"got {tuple(state.shape)}")
        if not torch.isfinite(state).all():
            raise ValueError(f"{name} has NaN/inf values")
        if (state[..., 0, :, :] <= 0).any():
            raise ValueError(f"{name}: the depth h must be > 0 everywhere")
        return state

    def check_cfl(self, state: torch.Tensor) -> float:
        """Courant number ``dt max(|u| + sqrt(g h)) / min(dx, dy)``; ValueError above 0.5."""
        h, u, v = state.unbind(-3)
        c = torch.sqrt(self.g * h)
        cour = float(self.dt * torch.maximum((u.abs() + c).max() / self.dx, (v.abs() + c).max() / self.dy))
        if cour > 0.5:
            raise ValueError(f"CFL number {cour:.2f} > 0.5: reduce dt (now {self.dt:g} s) or the flow speed")
        return cour

    def tendency(self, q: torch.Tensor) -> torch.Tensor:
        """``dq/dt`` of conservative ``q = (h, hu, hv)`` ``(..., 3, ny, nx)`` [m s-1, m2 s-2]."""
        h = q[..., 0, :, :]
        u, v = q[..., 1, :, :] / h, q[..., 2, :, :] / h
        # x faces: flux F(h, u, v)
        hL, hR = _muscl(h, -1)
        uL, uR = _muscl(u, -1)
        vL, vR = _muscl(v, -1)
        Fx = _rusanov(hL, uL, vL, hR, uR, vR, self.g, _flux_x)  # at i+1/2
        # y faces: the same flux with u and v exchanged (normal velocity first), then swap back
        hL, hR = _muscl(h, -2)
        uL, uR = _muscl(u, -2)
        vL, vR = _muscl(v, -2)
        Fy = _rusanov(hL, vL, uL, hR, vR, uR, self.g, _flux_x)[..., [0, 2, 1], :, :]
        div = (Fx - torch.roll(Fx, 1, -1)) / self.dx + (Fy - torch.roll(Fy, 1, -2)) / self.dy
        src = torch.zeros_like(q)
        if self.f:
            src[..., 1, :, :] = self.f * q[..., 2, :, :]
            src[..., 2, :, :] = -self.f * q[..., 1, :, :]
        return -div + src

    def step_conservative(self, q: torch.Tensor) -> torch.Tensor:
        """One Heun (SSP-RK2) step of conservative ``q``."""
        q1 = q + self.dt * self.tendency(q)
        return 0.5 * (q + q1 + self.dt * self.tendency(q1))

    def step(self, state: torch.Tensor) -> torch.Tensor:
        """Primitive ``(h, u, v)`` ``(..., 3, ny, nx)`` -> the same after ``dt``."""
        return to_primitive(self.step_conservative(to_conservative(state)))

    def run(self, state: torch.Tensor, n_steps: int, every: int = 1) -> torch.Tensor:
        """Trajectory ``(n_out, ..., 3, ny, nx)`` of states every ``every`` steps (the initial one first)."""
        state = self.check_state(state)
        self.check_cfl(state)
        q = to_conservative(state)
        out = [state]
        for k in range(1, int(n_steps) + 1):
            q = self.step_conservative(q)
            if k % every == 0:
                out.append(to_primitive(q))
        return torch.stack(out)

    def random_state(self, batch: int = 1, seed: int = 0, n_bumps: int = 6, amplitude: float = 1.0,
                     spinup_steps: int = 60) -> torch.Tensor:
        """Seeded initial states ``(batch, 3, ny, nx)``: the rest depth ``h0`` plus ``n_bumps``
        Gaussian bumps/dips (periodic distance, radius 1.5-5 cells, amplitude up to
        ``amplitude`` [m]) at rest, then ``spinup_steps`` model steps of geostrophic adjustment and
        gravity waves, so that ``u, v`` are the model's own."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 19_2]))
        yy, xx = np.meshgrid(np.arange(self.ny), np.arange(self.nx), indexing="ij")
        h = np.full((batch, self.ny, self.nx), self.h0)
        for b in range(batch):
            for _ in range(n_bumps):
                cy, cx = rng.uniform(0, self.ny), rng.uniform(0, self.nx)
                r = rng.uniform(1.5, 5.0)
                a = rng.uniform(-1, 1) * amplitude
                dy = np.abs(yy - cy) % self.ny
                dx = np.abs(xx - cx) % self.nx
                d2 = np.minimum(dy, self.ny - dy) ** 2 + np.minimum(dx, self.nx - dx) ** 2
                h[b] += a * np.exp(-0.5 * d2 / r**2)
        h = np.maximum(h, 0.2 * self.h0)
        st = torch.zeros((batch, 3, self.ny, self.nx), dtype=self.dtype)
        st[:, 0] = torch.as_tensor(h, dtype=self.dtype)
        if spinup_steps:
            st = self.run(st, spinup_steps, every=spinup_steps)[-1]
        return st


class ShallowWater1D:
    """1-D periodic shallow water on ``nx`` cells of ``dx`` [m]; primitive states ``(..., 2, nx)`` = ``(h, u)``.

    The 2-D scheme on a one-row grid with no rotation (``v = 0``): the same MUSCL-Rusanov fluxes
    and Heun step, so the same conservation. ``dt`` [s] defaults to a CFL of 0.3.
    """

    def __init__(self, nx: int = 64, dx: float = 1.0e4, h0: float = 10.0, g: float = G, dt: float | None = None,
                 cfl: float = 0.3, dtype: torch.dtype = torch.float64):
        self._sw = ShallowWater2D(4, nx, dx=dx, h0=h0, g=g, f=0.0, dt=dt, cfl=cfl, dtype=dtype)
        self.nx, self.dx, self.h0, self.g, self.dt, self.dtype = int(nx), float(dx), float(h0), float(g), self._sw.dt, dtype

    def _to2d(self, state):
        z = torch.zeros_like(state[..., :1, :])
        s = torch.cat([state, z], dim=-2)  # (..., 3, nx)
        return s.unsqueeze(-2).expand(*s.shape[:-1], 4, self.nx).contiguous()

    def check_state(self, state, name: str = "state") -> torch.Tensor:
        if not torch.is_tensor(state):
            state = torch.as_tensor(np.asarray(state), dtype=self.dtype)
        if state.ndim < 2 or tuple(state.shape[-2:]) != (2, self.nx):
            raise ValueError(f"{name} must be (..., 2, {self.nx}) = (h, u) on this grid, got {tuple(state.shape)}")
        if not torch.isfinite(state).all() or (state[..., 0, :] <= 0).any():
            raise ValueError(f"{name} must be finite with h > 0")
        return state

    def step(self, state: torch.Tensor) -> torch.Tensor:
        """``(..., 2, nx)`` -> the same after ``dt``."""
        return self._sw.step(self._to2d(state))[..., :2, 0, :]

    def run(self, state: torch.Tensor, n_steps: int, every: int = 1) -> torch.Tensor:
        """Trajectory ``(n_out, ..., 2, nx)`` every ``every`` steps (initial state first)."""
        state = self.check_state(state)
        return self._sw.run(self._to2d(state), n_steps, every)[..., :2, 0, :]

    def random_state(self, batch: int = 1, seed: int = 0, n_bumps: int = 4, amplitude: float = 1.0) -> torch.Tensor:
        """Seeded initial states ``(batch, 2, nx)``: ``h0`` plus Gaussian bumps (radius 2-8 cells), at rest."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 19_1]))
        x = np.arange(self.nx)
        h = np.full((batch, self.nx), self.h0)
        for b in range(batch):
            for _ in range(n_bumps):
                c, r, a = rng.uniform(0, self.nx), rng.uniform(2.0, 8.0), rng.uniform(-1, 1) * amplitude
                d = np.abs(x - c) % self.nx
                h[b] += a * np.exp(-0.5 * np.minimum(d, self.nx - d) ** 2 / r**2)
        st = torch.zeros((batch, 2, self.nx), dtype=self.dtype)
        st[:, 0] = torch.as_tensor(np.maximum(h, 0.2 * self.h0), dtype=self.dtype)
        return st


def to_conservative(state: torch.Tensor) -> torch.Tensor:
    """``(h, u, v)`` -> ``(h, hu, hv)`` on axis -3."""
    h = state[..., 0, :, :]
    return torch.stack([h, h * state[..., 1, :, :], h * state[..., 2, :, :]], dim=-3)


def to_primitive(q: torch.Tensor) -> torch.Tensor:
    """``(h, hu, hv)`` -> ``(h, u, v)`` on axis -3."""
    h = q[..., 0, :, :]
    return torch.stack([h, q[..., 1, :, :] / h, q[..., 2, :, :] / h], dim=-3)


def total_mass(state: torch.Tensor, dx: float, dy: float = 1.0) -> torch.Tensor:
    """``sum(h) dx dy`` over the last two (2-D: ``(..., 3, ny, nx)``) or last (1-D: ``(..., 2, nx)``,
    pass ``dy=1``: mass per unit width) grid axes [m3 or m2]."""
    if state.shape[-3:-2] == (3,) and state.ndim >= 3:
        return state[..., 0, :, :].sum((-1, -2)) * dx * dy
    return state[..., 0, :].sum(-1) * dx * dy


def _ddx(a: torch.Tensor, d: float, dim: int) -> torch.Tensor:
    return (torch.roll(a, -1, dim) - torch.roll(a, 1, dim)) / (2 * d)


def residual(s0: torch.Tensor, s1: torch.Tensor, dt: float, dx: float, dy: float | None = None, g: float = G,
             f: float = 0.0) -> torch.Tensor:
    """PDE residual of the 2-D equations between states ``s0 -> s1`` a time ``dt`` [s] apart.

    ``r = (q1 - q0)/dt + 1/2 [div F(q0) + div F(q1)] - 1/2 [S(q0) + S(q1)]`` with centred periodic
    differences; ``s0, s1`` primitive ``(..., 3, ny, nx)``; returns ``(..., 3, ny, nx)`` in
    [m s-1] (mass) and [m2 s-2] (momentum). Differentiable (used in a loss).
    """
    dy = dx if dy is None else dy

    def div_minus_src(s):
        h, u, v = s.unbind(-3)
        hu, hv = h * u, h * v
        p = 0.5 * g * h * h
        d = torch.stack([
            _ddx(hu, dx, -1) + _ddx(hv, dy, -2),
            _ddx(hu * u + p, dx, -1) + _ddx(hu * v, dy, -2) - f * hv,
            _ddx(hu * v, dx, -1) + _ddx(hv * v + p, dy, -2) + f * hu,
        ], dim=-3)
        return d

    return (to_conservative(s1) - to_conservative(s0)) / dt + 0.5 * (div_minus_src(s0) + div_minus_src(s1))


def residual_1d(s0: torch.Tensor, s1: torch.Tensor, dt: float, dx: float, g: float = G) -> torch.Tensor:
    """1-D version of :func:`residual`: ``s0, s1`` ``(..., 2, nx)`` = ``(h, u)`` -> ``(..., 2, nx)``
    residuals of the mass [m s-1] and momentum [m2 s-2] equations. Differentiable."""
    def flux_div(s):
        h, u = s.unbind(-2)
        return torch.stack([_ddx(h * u, dx, -1), _ddx(h * u * u + 0.5 * g * h * h, dx, -1)], dim=-2)

    q0 = torch.stack([s0[..., 0, :], s0[..., 0, :] * s0[..., 1, :]], dim=-2)
    q1 = torch.stack([s1[..., 0, :], s1[..., 0, :] * s1[..., 1, :]], dim=-2)
    return (q1 - q0) / dt + 0.5 * (flux_div(s0) + flux_div(s1))
