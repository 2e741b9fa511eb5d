"""The toy ecLand column model (torch, vectorised over columns, differentiable)."""

from .model import DIAGNOSTIC_NAMES, STATE_NAMES, VARIABLES, ToyEcLand

__all__ = ["ToyEcLand", "VARIABLES", "STATE_NAMES", "DIAGNOSTIC_NAMES"]
