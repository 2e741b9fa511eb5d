"""A conditional denoising-diffusion analysis (DiffDA-style; Huang et al. 2024) returning an ensemble.

What is modelled: the standardised background error ``z = (x - x_b) / s`` (``s``: the innovation
scale, e.g. the fitted ``sigma_b``), conditioned on the standardised background (and optional
static maps). A DDPM (Ho et al. 2020) with the cosine noise schedule (Nichol and Dhariwal 2021)
of ``n_steps`` steps::

    z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,      eps ~ N(0, I)
    loss = || eps - eps_theta(z_t, t, background) ||^2

The denoiser ``eps_theta`` is the shared :class:`ailand.mme.networks.UNet`, fed ``z_t``, the
standardised background, ``t / n_steps`` as a constant map, and the static maps.

Observations enter at sampling only, by inpainting (the "replacement" method, as DiffDA and
RePaint): after every ancestral step ``t -> t-1`` the observed cells of ``z_{t-1}`` are replaced by
the observed innovation ``z_obs = (y - x_b) / s`` noised to level ``t-1``,
``sqrt(abar_{t-1}) z_obs + sqrt(1 - abar_{t-1}) eps``; at ``t = 0`` they equal ``z_obs``. The
ancestral step uses the posterior ``q(z_{t-1} | z_t, z_0)`` with the predicted
``z_0 = (z_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)`` clipped to ``+-6`` (Ho et al. 2020, eqs. 6-7;
without the clip the last steps of the cosine schedule amplify the denoiser's error). So the
model needs no retraining for a new station layout or density, every member matches the
observations at the stations (observation errors are not smoothed: the analysis draws fit
noisy observations exactly), and ``x_a = x_b + s z_0``. The ensemble is ``n_members`` draws,
seeded by ``seed`` (same seed, same ensemble).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ailand.mme.networks import UNet
from ailand.progress import as_progress

from .observations import check_analysis_inputs
from .train import _f32, _fit

__all__ = ["DiffusionAnalysis", "cosine_schedule"]


def cosine_schedule(n_steps: int, s: float = 0.008) -> torch.Tensor:
    """``abar_t`` for ``t = 0..n_steps`` (``abar_0 = 1``), Nichol and Dhariwal (2021) eq. 17, betas clipped at 0.999."""
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    beta = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - beta, 0)])


class DiffusionAnalysis(nn.Module):
    """Conditional DDPM of the background error with inpainted observations (module docstring).

    Parameters
    ----------
    mean, std : climatological mean/std of the field (standardise the background) [field units].
    scale : the background-error scale ``s`` [field units].
    n_static : static maps given to :meth:`sample` / :meth:`fit`.
    n_steps : diffusion steps (default 50). width, depth : U-Net size. periodic : wrap the domain.
    grid_shape : the grid (set by :meth:`fit` when None). seed : initial weights.
    """

    def __init__(self, mean: float, std: float, scale: float, n_static: int = 0, n_steps: int = 50,
                 width: int = 16, depth: int = 2, periodic: bool = True, grid_shape: tuple[int, int] | None = None,
                 seed: int = 0):
        super().__init__()
        self.grid_shape = None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
        self.config = dict(mean=float(mean), std=float(std), scale=float(scale), n_static=int(n_static),
                           n_steps=int(n_steps), width=int(width), depth=int(depth), periodic=bool(periodic),
                           grid_shape=self.grid_shape)
        self.mean, self.std, self.scale = float(mean), float(std), float(scale)
        self.n_static, self.n_steps, self.periodic, self.k = int(n_static), int(n_steps), bool(periodic), 2**depth
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # seeded initial weights
            self.net = UNet(3 + self.n_static, 1, width=width, depth=depth)
        self.register_buffer("abar", cosine_schedule(self.n_steps).float())
        self.clip = 6.0  # |z_0| bound of the predicted clean state (standardised units) in sampling

    def _eps(self, z, t, cond):
        B, H, W = z.shape
        tt = (t.float() / self.n_steps).reshape(B, 1, 1, 1).expand(B, 1, H, W)
        x = torch.cat([z[:, None], cond, tt], dim=1)
        if self.periodic:
            p = self.k
            ph, pw = p + (-(H + 2 * p)) % self.k, p + (-(W + 2 * p)) % self.k
            x = torch.nn.functional.pad(x, (p, pw, p, ph), mode="circular")
            return self.net(x)[:, 0, p:p + H, p:p + W]
        ph, pw = (-H) % self.k, (-W) % self.k
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.net(x)[:, 0, :H, :W]

    def _cond(self, xb, static):
        c = ((xb - self.mean) / self.std)[:, None]
        if self.n_static:
            c = torch.cat([c, static.expand(xb.shape[0], -1, -1, -1)], dim=1)
        return c

    def fit(self, background, truth, static=None, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
            seed: int = 0, progress=False) -> "DiffusionAnalysis":
        """Train on pairs ``background, truth`` ``(n, ny, nx)`` [field units] (truth, or a classical analysis)."""
        xb, xt = _f32(background), _f32(truth)
        if xb.shape != xt.shape or xb.ndim != 3:
            raise ValueError(f"background and truth must both be (n, ny, nx), got {tuple(xb.shape)}, {tuple(xt.shape)}")
        if self.grid_shape is None:
            self.grid_shape = tuple(xb.shape[-2:])
            self.config["grid_shape"] = self.grid_shape
        z0 = (xt - xb) / self.scale
        st = None if static is None else _f32(static)[None]
        cond = self._cond(xb, st)
        gen = torch.Generator().manual_seed(seed + 1)

        def loss_of(idx):
            t = torch.randint(1, self.n_steps + 1, (idx.numel(),), generator=gen)
            eps = torch.randn(z0[idx].shape, generator=gen)
            ab = self.abar[t].reshape(-1, 1, 1)
            zt = ab.sqrt() * z0[idx] + (1 - ab).sqrt() * eps
            return ((self._eps(zt, t, cond[idx]) - eps) ** 2).mean()

        _fit(self, xb.shape[0], loss_of, epochs, batch_size, lr, seed, progress, "train diffusion analysis")
        return self

    @torch.no_grad()
    def sample(self, background, obs, mask, n_members: int = 8, seed: int = 0, static=None, progress=False):
        """Ensemble of analyses ``(B, N, ny, nx)`` [field units] (``(N, ny, nx)`` for one case).

        ``background, obs, mask`` as every analysis method (validated the same way; NaN
        observations are missing). ``seed`` fixes the ensemble.
        """
        xb64, y64, m, squeezed = check_analysis_inputs(background, obs, mask, self.grid_shape)
        B, H, W = xb64.shape
        N = int(n_members)
        if N < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        xb = xb64.float().repeat_interleave(N, 0)
        zobs = ((y64 - xb64) / self.scale).float().repeat_interleave(N, 0)
        mm = m.repeat_interleave(N, 0)
        st = None if static is None else _f32(static)[None]
        cond = self._cond(xb, st)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn((B * N, H, W), generator=gen)
        ab = self.abar
        p = as_progress(progress)
        with p.bar(self.n_steps, "diffusion sampling", "step") as bar:
            for t in range(self.n_steps, 0, -1):
                tt = torch.full((B * N,), t, dtype=torch.long)
                eps = self._eps(z, tt, cond)
                a_t, a_prev = ab[t], ab[t - 1]
                beta = 1 - a_t / a_prev
                z0 = ((z - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-self.clip, self.clip)
                mean = (a_prev.sqrt() * beta * z0 + (1 - beta).sqrt() * (1 - a_prev) * z) / (1 - a_t)
                if t > 1:
                    var = beta * (1 - a_prev) / (1 - a_t)
                    z = mean + var.sqrt() * torch.randn(z.shape, generator=gen)
                    known = a_prev.sqrt() * zobs + (1 - a_prev).sqrt() * torch.randn(z.shape, generator=gen)
                else:
                    z, known = mean, zobs
                z = torch.where(mm, known, z)
                bar.update(1)
        xa = (xb + self.scale * z).double().reshape(B, N, H, W).numpy()
        return xa[0] if squeezed else xa
