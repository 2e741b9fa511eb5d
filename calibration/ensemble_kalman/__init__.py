"""Ensemble Kalman methods: analysis steps, EKI and ES-MDA on a Problem, and the
cycling filter/smoother over a model."""

from .analysis import enkf_pertobs, etkf, inflate, letkf, post_process, random_rotation, rtpp, rtps
from .filter import CyclingFilter, Layout, gaussian_ensemble
from .filter import plot as plot_filter
from .localisation import gaspari_cohn, gaussian_taper, great_circle_distance, periodic_distance, step_taper, taper
from .inversion import EnsembleResult, eki, esmda
from .land import LandStep

__all__ = ["eki", "esmda", "EnsembleResult", "enkf_pertobs",
           "etkf", "letkf", "inflate", "rtpp", "rtps", "random_rotation", "post_process",
           "CyclingFilter", "LandStep", "Layout", "gaussian_ensemble", "plot_filter",
           "taper", "gaspari_cohn", "gaussian_taper", "step_taper", "periodic_distance", "great_circle_distance"]
