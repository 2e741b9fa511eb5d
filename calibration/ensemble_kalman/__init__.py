"""Ensemble Kalman methods: analysis steps, EKI and ES-MDA on a Problem, and the
cycling filter/smoother over a model."""

from .analysis import enkf_pertobs

__all__ = ["enkf_pertobs"]
