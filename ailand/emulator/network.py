"""The column MLP: normalised inputs ``(B, n_in)`` -> normalised outputs ``(B, n_out)``."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, each Linear -> (LayerNorm) -> activation.

    The last layer starts at zero so that an untrained emulator predicts the mean
    increment (persistence plus the mean tendency) and mean diagnostics.
    """

    def __init__(self, n_in: int, n_out: int, width: int = 256, depth: int = 4, activation: str = "silu", layer_norm: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        layers, n = [], n_in
        for _ in range(depth):
            layers.append(nn.Linear(n, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(ACTIVATIONS[activation]())
            n = width
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(n, n_out)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x))
