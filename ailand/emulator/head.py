"""A residual head on named diagnostics of the emulator (fine-tuning to observations).

The emulator's network maps its normalised input ``x`` ``(..., n_in)`` through hidden
layers ``h = hidden(x)`` ``(..., width)`` to the normalised outputs ``out = head(h)``
``(..., n_out)`` (state increments, then diagnostics). A :class:`DiagnosticHead` adds a
learnt correction to the columns of a few diagnostics only::

    out' = out + c(x, h) P,   c = MLP([x, h]) (..., k),  P (k, n_out) one-hot placement

so the state columns of ``out'`` equal those of ``out`` exactly: a rollout's states do not
depend on the head (unless the emulator closes its water balance from a corrected flux,
which :func:`ailand.emulator.finetune.finetune` refuses). The last layer starts at zero (an
untrained head changes nothing). Built by :func:`ailand.emulator.finetune.finetune`; it
travels in the emulator's saved file (:meth:`ailand.Emulator.save`).
"""

from __future__ import annotations

import torch
from torch import nn

from .network import MLP


class DiagnosticHead(nn.Module):
    """Correction ``(..., n_out)`` (zero outside the named diagnostic columns) from the
    network input ``x`` ``(..., n_in)`` and its last hidden layer ``h`` ``(..., width)``.

    variables : the diagnostic names it corrects; columns : their indices in the
    emulator's ``output_names``; n_out : the number of outputs; width, depth : of the MLP.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, variables, columns, width: int = 64, depth: int = 2,
                 activation: str = "silu"):
        super().__init__()
        self.variables = tuple(str(v) for v in variables)
        self.columns = tuple(int(i) for i in columns)
        if len(self.variables) != len(self.columns) or not self.variables:
            raise ValueError("a DiagnosticHead needs one output column per named variable")
        self.config = dict(n_in=int(n_in), n_hidden=int(n_hidden), n_out=int(n_out), width=int(width),
                           depth=int(depth), activation=str(activation))
        self.mlp = MLP(n_in + n_hidden, len(self.variables), width=width, depth=depth, activation=activation)
        place = torch.zeros(len(self.columns), n_out)
        place[torch.arange(len(self.columns)), torch.as_tensor(self.columns)] = 1.0
        self.register_buffer("place", place)

    def correction(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Normalised correction of the named diagnostics ``(..., k)``."""
        shape = torch.broadcast_shapes(x.shape[:-1], h.shape[:-1])
        return self.mlp(torch.cat([x.expand(*shape, x.shape[-1]), h.expand(*shape, h.shape[-1])], dim=-1))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.correction(x, h) @ self.place

    # --------------------------------------------------------------- persistence
    def to_blob(self) -> dict:
        """JSON-able description plus CPU weights (what :meth:`ailand.Emulator.save` stores)."""
        return {
            "config": dict(self.config, variables=list(self.variables), columns=list(self.columns)),
            "weights": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_blob(cls, blob: dict) -> "DiagnosticHead":
        cfg = dict(blob["config"])
        head = cls(cfg.pop("n_in"), cfg.pop("n_hidden"), cfg.pop("n_out"), cfg.pop("variables"), cfg.pop("columns"), **cfg)
        head.load_state_dict(blob["weights"])
        return head
