"""Inference: turn observations into parameters or states.

- :class:`Observe` - observation operator: model output -> labelled block means
- :class:`Forward` - control vectors ``(n, d)`` -> observation vectors ``(n, m)`` through
  a ToyEcLand or an Emulator (torch, differentiable, members vectorised)
- :class:`Problem` - forward + observations + errors + prior: ``cost`` (J), ``gradient``,
  ``log_posterior``, ``residuals``
- :func:`variational` - multi-start L-BFGS-B on J, Gauss-Newton posterior
- :func:`mcmc` - emcee on exp(-J)
- :func:`eki`, :func:`esmda` - ensemble Kalman inversion (EKP defaults) and ES-MDA (:class:`EnsembleResult`)
- :func:`bayesian_optimisation` - BoTorch GP + LogEI minimising J; :func:`random_search`,
  :func:`lhs_search` baselines (:class:`BayesOptResult`)
- :func:`model_error` - an emulator's error against the physics, added to R in fraternal twins
- :class:`TwinExperiment` - synthetic observations from a known truth, calibration, report
- :class:`HistoryMatching` - history matching in persisted, resumable waves with GP emulators
"""

from .bayesopt import BayesOptResult, bayesian_optimisation, lhs_search, random_search
from .discrepancy import ModelError, local_draws, model_error
from .ensemble_kalman import EnsembleResult, eki, esmda
from .forward import Forward, batched_jacobian
from .history_matching.waves import HistoryMatching
from .mcmc import MCMCResult, mcmc
from .observe import Observe
from .problem import Problem
from .twin import TwinExperiment, TwinResult
from .variational import VariationalResult, gauss_newton, start_design, variational

__all__ = [
    "Observe", "Forward", "Problem", "variational", "mcmc", "VariationalResult", "MCMCResult",
    "gauss_newton", "start_design", "batched_jacobian", "TwinExperiment", "TwinResult",
    "bayesian_optimisation", "BayesOptResult", "random_search", "lhs_search",
    "model_error", "ModelError", "local_draws", "HistoryMatching",
    "eki", "esmda", "EnsembleResult",
]
