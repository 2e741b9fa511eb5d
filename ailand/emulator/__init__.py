"""aiLand: an MLP emulator of the toy ecLand column (train, roll out, Jacobians, ONNX)."""

from .model import Emulator
from .train import fit, train_emulator

__all__ = ["Emulator", "train_emulator", "fit"]
