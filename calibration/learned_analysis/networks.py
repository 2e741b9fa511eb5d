"""Learned analyses as torch modules (the U-Net is :class:`ailand.mme.networks.UNet`, shared with
the multi-model ensemble).

- :class:`AnalysisUNet` (exercise 1, land case): ``(background, obs, mask[, static]) -> analysis``,
  all ``(B, ny, nx)`` in physical units. Inputs seen by the U-Net: the standardised background,
  the standardised innovation ``mask * (y - x_b) / scale`` (0 where unobserved), the mask, and
  optional static maps; the U-Net's output (initialised to exactly zero) times ``scale`` is the
  analysis increment, so the untrained network *is* the background. A case with no observation
  returns its background unchanged (nothing to analyse).
- :class:`ObsToStateUNet` (exercise 2): ``(obs (B, 5, ny, nx), mask (B, 5, ny, nx)) -> state (B, 3,
  ny, nx)``; 5 standardised observation channels (0 where unobserved) and their 5 masks in,
  ``h, u, v`` out (standardised by their climatology).
- :class:`ShallowWater1DNet`: a periodic 1-D residual CNN ``(B, 2, nx) -> (B, 2, nx)``, the state
  ``K`` model steps later (the seed's autoregressive physics-constrained example).

Periodic domains are wrapped (circular padding) before the U-Net and cropped after; others are
padded by replication to a multiple of ``2**depth``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ailand.mme.networks import UNet

__all__ = ["AnalysisUNet", "ObsToStateUNet", "ShallowWater1DNet"]


class _Padded(nn.Module):
    """A U-Net body with periodic (circular) or replicate padding to a multiple of ``2**depth``."""

    def __init__(self, cin, cout, width, depth, periodic):
        super().__init__()
        self.body = UNet(cin, cout, width=width, depth=depth)
        self.periodic, self.k = bool(periodic), 2**depth
        nn.init.zeros_(self.body.out.weight)
        nn.init.zeros_(self.body.out.bias)

    def forward(self, x):
        H, W = x.shape[-2:]
        if self.periodic:
            p = self.k
            ph, pw = p + (-(H + 2 * p)) % self.k, p + (-(W + 2 * p)) % self.k
            x = F.pad(x, (p, pw, p, ph), mode="circular")
            return self.body(x)[..., p:p + H, p:p + W]
        ph, pw = (-H) % self.k, (-W) % self.k
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.body(x)[..., :H, :W]


class AnalysisUNet(nn.Module):
    """Background + observations + mask -> analysis (module docstring).

    Parameters
    ----------
    mean, std : climatological mean and std of the field [field units] (standardise the background).
    scale : innovation scale [field units], e.g. the fitted ``sigma_b``.
    n_static : number of static maps (e.g. a land-sea mask) passed to :meth:`forward`.
    width, depth : U-Net size; periodic : wrap the domain.

    forward(background ``(B, ny, nx)``, obs ``(B, ny, nx)`` (0 where unobserved, no NaN), mask
    ``(B, ny, nx)`` bool, static ``(B or 1, n_static, ny, nx)`` or None) -> analysis ``(B, ny, nx)``.
    ``grid_shape``: the training grid; :func:`calibration.learned_analysis.train.predict_exercise1`
    refuses a background on another grid.
    """

    def __init__(self, mean: float, std: float, scale: float, n_static: int = 0, width: int = 16, depth: int = 2,
                 periodic: bool = True, grid_shape: tuple[int, int] | None = None):
        super().__init__()
        self.grid_shape = None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.n_static = int(n_static)
        self.config = dict(mean=float(mean), std=float(std), scale=float(scale), n_static=int(n_static),
                           width=int(width), depth=int(depth), periodic=bool(periodic), grid_shape=self.grid_shape)
        self.net = _Padded(3 + self.n_static, 1, width, depth, periodic)

    def forward(self, background, obs, mask, static=None):
        m = mask.to(background.dtype)
        feats = [(background - self.mean) / self.std, m * (obs - background) / self.scale, m]
        x = torch.stack(feats, dim=1)
        if self.n_static:
            x = torch.cat([x, static.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        inc = self.net(x)[:, 0] * self.scale
        has_obs = (mask.flatten(1).any(1)).to(background.dtype)[:, None, None]
        return background + has_obs * inc


class ObsToStateUNet(nn.Module):
    """Observations only -> state (exercise 2). ``obs_mean, obs_std (5,)`` standardise the five
    observation types; ``out_mean, out_std (3,)`` de-standardise ``h, u, v``.

    forward(obs ``(B, 5, ny, nx)`` physical (0 where unobserved), mask ``(B, 5, ny, nx)``) -> ``(B, 3, ny, nx)``.
    The untrained network returns the climatological mean state.
    """

    def __init__(self, obs_mean, obs_std, out_mean, out_std, width: int = 16, depth: int = 2, periodic: bool = True,
                 grid_shape: tuple[int, int] | None = None):
        super().__init__()
        self.grid_shape = None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]))
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("obs_std", torch.as_tensor(obs_std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("out_mean", torch.as_tensor(out_mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("out_std", torch.as_tensor(out_std, dtype=torch.float32).reshape(1, -1, 1, 1))
        n_obs, n_out = self.obs_mean.shape[1], self.out_mean.shape[1]
        self.config = dict(obs_mean=list(map(float, obs_mean)), obs_std=list(map(float, obs_std)),
                           out_mean=list(map(float, out_mean)), out_std=list(map(float, out_std)),
                           width=int(width), depth=int(depth), periodic=bool(periodic), grid_shape=self.grid_shape)
        self.net = _Padded(2 * n_obs, n_out, width, depth, periodic)

    def forward(self, obs, mask):
        m = mask.to(obs.dtype)
        z = m * (obs - self.obs_mean) / self.obs_std
        return self.out_mean + self.out_std * self.net(torch.cat([z, m], dim=1))


class ShallowWater1DNet(nn.Module):
    """Periodic 1-D residual CNN: ``(B, 2, nx)`` = ``(h [m], u [m s-1])`` -> the state a fixed time later.

    ``state + scale * net(standardised state)``; ``mean, std, scale`` are ``(2,)`` per-variable
    constants; ``width`` channels, ``n_layers`` circular 5-point convolutions with GELU.
    The output layer starts at zero (the untrained net is persistence).
    """

    def __init__(self, mean, std, scale, width: int = 32, n_layers: int = 4):
        super().__init__()
        for name, v in (("mean", mean), ("std", std), ("scale", scale)):
            self.register_buffer(name, torch.as_tensor(v, dtype=torch.float32).reshape(1, 2, 1))
        self.config = dict(mean=list(map(float, mean)), std=list(map(float, std)), scale=list(map(float, scale)),
                           width=int(width), n_layers=int(n_layers))
        layers, c = [], 2
        for _ in range(n_layers):
            layers += [nn.Conv1d(c, width, 5, padding=2, padding_mode="circular"), nn.GELU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv1d(width, 2, 5, padding=2, padding_mode="circular")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, state):
        return state + self.scale * self.out(self.body((state - self.mean) / self.std))
