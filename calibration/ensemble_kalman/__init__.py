"""Ensemble Kalman methods: analysis steps, EKI and ES-MDA on a Problem, and the
cycling filter/smoother over a model."""

from .analysis import enkf_pertobs
from .inversion import EnsembleResult, eki, esmda

__all__ = ["eki", "esmda", "EnsembleResult", "enkf_pertobs"]
