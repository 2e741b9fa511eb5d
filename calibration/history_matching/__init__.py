"""History matching in waves with Gaussian-process emulators.

- ``gp.py``              batched gpytorch exact GPs for many outputs (optional PCA basis), diagnostics
- ``implausibility.py``  I(x) = |E[f(x)] - z| / sqrt(Var_em(x) + var_obs + var_mod), max / nth-max / tolerance
- ``nroy.py``            samplers of the not-ruled-out-yet space, maximin thinning
- ``waves.py``           :class:`HistoryMatching`: persisted, resumable waves
- ``compare.py``         final NROY vs variational / MCMC posteriors (table, plot), ``noise_nth``
"""

from .compare import format_table, noise_nth, nroy_vs_posteriors, plot_nroy_vs_posteriors
from .implausibility import Implausibility, effective_nth, implausibility, is_nroy, n_exceeding, nth_max
from .nroy import NROYDesign, cloud, cutoff_ladder, maximin_lhs, maximin_thin, rejection, sample_nroy, slice_sample
from .waves import HistoryMatching
