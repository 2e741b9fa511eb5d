"""aiLand: an MLP emulator of the toy ecLand column (train, roll out, Jacobians, ONNX)."""

from .model import Emulator, train_emulator
from .train import fit

__all__ = ["Emulator", "train_emulator", "fit"]
