"""Convolutional networks for the DL ensemble: UNet, HalfUNet, and the ensemble wrapper.

Why not Meteo-France's ``mfai`` (which has both): tried in a throwaway venv under the
project's torch pin (torch 2.13.0 CPU). ``pip install mfai`` (9.0.1) keeps torch but pulls
lightning, torchmetrics, torchvision 0.28, bitsandbytes (a 125 MB CUDA quantisation
library), hydra-core, tensorboardX, jsonargparse, jsonnet ... (54 packages) and upgrades
onnxruntime past the project's 1.31.1; and ``from mfai.pytorch.models.unet import UNet``
then fails (``RuntimeError: operator torchvision::nms does not exist``: the torchvision
wheel does not match the CPU torch build). So the two small networks are written here,
following mfai's published architectures (UNet: Ronneberger et al. 2015 with padded
convolutions; HalfUNet: constant width at every level, all levels upsampled and SUMMED,
one decoder block, a 1x1 output convolution).

Shapes: images ``(B, C, H, W)``; the ensemble wrapper :class:`EnsembleNet` takes member
fields ``(B, V, M, H, W)`` in physical units (NaN = a missing member), calendar features
``(B, 5 + L)`` and optional predictors ``(B, P, H, W)`` in physical units, and returns the
forecast ``(B, V, H, W)`` in physical units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "HalfUNet", "EnsembleNet", "ARCHITECTURES", "N_CALENDAR"]

#: calendar features before the one-hot lead day: sin/cos hour of day, sin/cos day of year, weekend
N_CALENDAR = 5


def _block(cin: int, cout: int) -> nn.Sequential:
    """(conv 3x3 -> BatchNorm -> ReLU) x 2, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class HalfUNet(nn.Module):
    """HalfUNet (Meteo-France's lighter UNet): ``depth + 1`` encoder levels, all ``width``
    channels; each level is upsampled (bilinear) to full resolution and the levels are summed;
    one decoder block and a 1x1 convolution give ``out_channels``.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``; H and W must be divisible by
    ``2**depth`` (the :class:`EnsembleNet` wrapper pads).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 3):
        super().__init__()
        self.depth = int(depth)
        self.encoders = nn.ModuleList([_block(in_channels if k == 0 else width, width) for k in range(self.depth + 1)])
        self.decoder = _block(width, width)
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        h = x
        for k, enc in enumerate(self.encoders):
            h = enc(h if k == 0 else F.max_pool2d(h, 2))
            feats.append(h)
        total = feats[0]
        for k in range(1, len(feats)):
            total = total + F.interpolate(feats[k], scale_factor=float(2**k), mode="bilinear", align_corners=False)
        return self.out(self.decoder(total))


class UNet(nn.Module):
    """UNet (Ronneberger et al. 2015, padded convolutions): ``depth`` down-sampling steps,
    channels ``width * 2**k``, transposed-convolution up-sampling, skip connections by
    concatenation, a 1x1 output convolution.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``; H and W divisible by ``2**depth``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 3):
        super().__init__()
        self.depth = int(depth)
        ch = [width * 2**k for k in range(self.depth + 1)]
        self.down = nn.ModuleList([_block(in_channels if k == 0 else ch[k - 1], ch[k]) for k in range(self.depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2) for k in range(self.depth)])
        self.dec = nn.ModuleList([_block(2 * ch[k], ch[k]) for k in range(self.depth)])
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for k, blk in enumerate(self.down):
            h = blk(h if k == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for k in reversed(range(self.depth)):
            h = self.dec[k](torch.cat([self.up[k](h), skips[k]], dim=1))
        return self.out(h)


ARCHITECTURES = {"halfunet": HalfUNet, "unet": UNet}


def masked_median(z: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Median over dim 2 (members) of ``z`` ``(B, V, M, H, W)`` where ``avail``; 0 where no
    member is available. Sort-based (exports to ONNX as TopK + GatherElements)."""
    M = z.shape[2]
    big = torch.full_like(z, 3.0e38)
    s = torch.sort(torch.where(avail, z, big), dim=2).values
    n = avail.to(torch.int64).sum(2, keepdim=True)
    lo = torch.clamp(torch.div(n - 1, 2, rounding_mode="floor"), 0, M - 1)
    hi = torch.clamp(torch.div(n, 2, rounding_mode="floor"), 0, M - 1)
    med = 0.5 * (torch.gather(s, 2, lo) + torch.gather(s, 2, hi))
    return torch.where(n > 0, med, torch.zeros_like(med)).squeeze(2)


class EnsembleNet(nn.Module):
    """The DL ensemble as one module: normalisation, missing members, a baseline, a CNN residual.

    forward(members ``(B, V, M, H, W)`` [physical, NaN = missing member], calendar
    ``(B, 5 + L)`` [sin/cos hour, sin/cos day of year, weekend, one-hot lead day],
    predictors ``(B, P, H, W)`` [physical] or None) -> forecast ``(B, V, H, W)`` [physical].

    Inside: members are standardised per variable (``mean``, ``std`` of the training
    analysis); the baseline is the member median (``base="median"``), the weighted ensemble
    with the per-lead weights ``weights`` ``(V, L, M)`` renormalised over the members present
    (``base="weighted"``; the median when every member with weight is missing), or zero
    (``base="none"``). The CNN (``arch``) sees the members
    (missing ones replaced by the median), the availability masks, the median, the baseline,
    the standardised predictors, the calendar as constant maps and the grid coordinates; a
    1x1 stem maps them to ``width`` channels. Its output, initialised to exactly zero, is
    added to the baseline: an untrained network IS the baseline, and training learns the
    correction. ``nonnegative`` clamps the physical output at 0.
    """

    def __init__(self, n_vars: int, n_members: int, n_leads: int, n_predictors: int, grid: tuple[int, int],
                 arch: str = "halfunet", width: int = 32, depth: int = 3, base: str = "weighted",
                 nonnegative: bool = True):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, not {arch!r}")
        if base not in ("weighted", "median", "none"):
            raise ValueError(f"base must be 'weighted', 'median' or 'none', not {base!r}")
        V, M, L, P = int(n_vars), int(n_members), int(n_leads), int(n_predictors)
        H, W = int(grid[0]), int(grid[1])
        self.V, self.M, self.L, self.P, self.H, self.W = V, M, L, P, H, W
        self.base, self.nonnegative, self.depth = base, bool(nonnegative), int(depth)
        self.register_buffer("mean", torch.zeros(V))
        self.register_buffer("std", torch.ones(V))
        self.register_buffer("pred_mean", torch.zeros(P))
        self.register_buffer("pred_std", torch.ones(P))
        self.register_buffer("weights", torch.full((V, L, M), 1.0 / M))
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        self.register_buffer("coords", torch.stack([yy, xx])[None])
        c_in = 2 * V * M + 2 * V + P + N_CALENDAR + L + 2
        self.stem = nn.Sequential(nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.body = ARCHITECTURES[arch](width, V, width=width, depth=depth)
        nn.init.zeros_(self.body.out.weight)
        nn.init.zeros_(self.body.out.bias)

    def forward(self, members: torch.Tensor, calendar: torch.Tensor, predictors: torch.Tensor | None = None) -> torch.Tensor:
        B = members.shape[0]
        H, W = self.H, self.W
        mean = self.mean.view(1, -1, 1, 1, 1)
        std = self.std.view(1, -1, 1, 1, 1)
        avail = ~torch.isnan(members)
        z = torch.where(avail, (members - mean) / std, torch.zeros_like(members))
        med = masked_median(z, avail)  # (B, V, H, W)
        filled = torch.where(avail, z, med.unsqueeze(2))
        a = avail.to(z.dtype)
        if self.base == "weighted":
            lead = calendar[:, N_CALENDAR:]  # (B, L) one-hot
            w = torch.einsum("bl,vlm->bvm", lead, self.weights)[..., None, None] * a  # (B, V, M, H, W)
            den = w.sum(2)
            base = torch.where(den > 0, (w * z).sum(2) / torch.clamp(den, min=1e-12), med)
        elif self.base == "median":
            base = med
        else:
            base = torch.zeros_like(med)
        feats = [filled.reshape(B, self.V * self.M, H, W), a.reshape(B, self.V * self.M, H, W), med, base]
        if self.P:
            feats.append((predictors - self.pred_mean.view(1, -1, 1, 1)) / self.pred_std.view(1, -1, 1, 1))
        feats.append(calendar[:, :, None, None].expand(B, calendar.shape[1], H, W))
        feats.append(self.coords.expand(B, 2, H, W))
        x = self.stem(torch.cat(feats, dim=1))
        k = 2**self.depth
        ph, pw = (-H) % k, (-W) % k
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        r = self.body(x)[:, :, :H, :W]
        out = (base + r) * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)
        return torch.clamp(out, min=0.0) if self.nonnegative else out
