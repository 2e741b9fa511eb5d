"""The dust NN emission model's experiment (issue 15): data from the emission analysis,
hyperparameter search (BoTorch vs random), evaluation, the ``ailand dust-nn`` CLI.

The models themselves live in :mod:`ailand.dust.nn`; this package is the driver.
"""

from .data import NN_REGION, QUICK_REGION, DataConfig, DustNNData, make_data

__all__ = ["DataConfig", "DustNNData", "make_data", "NN_REGION", "QUICK_REGION"]
