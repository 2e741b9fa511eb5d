"""Implausibility: how far an emulator's prediction is from the observations, in standard deviations.

For candidate ``x`` and output ``i`` (Craig et al. 1997; Vernon et al. 2010)::

    I_i(x) = |E[f_i(x)] - z_i| / sqrt(Var_em,i(x) + var_obs,i + var_mod,i)

``E[f_i(x)]`` and ``Var_em,i(x)`` are the emulator's mean and (latent) variance,
``z_i`` the observation, ``var_obs,i`` its error variance and ``var_mod,i`` the model
discrepancy variance, all per output and in the output's units (``I`` itself is
dimensionless). A candidate is *not ruled out yet* (NROY) when a summary of its
``m`` implausibilities is at most the cutoff ``c`` (3 by Pukelsheim's three-sigma rule).

Conventions (tools disagree, so they are spelled out and tested):

``nth`` (1-based, as hmer and autoemulate)
    The summary is the ``nth``-largest implausibility over the outputs: ``nth=1`` is
    the maximum, ``nth=2`` the second-largest (mogp_emulator's ``rank`` is 0-based, so
    its ``rank=1`` is our ``nth=2``).
``tolerance`` (a fraction, as ESEm)
    A point is NROY when at most ``floor(tolerance * m_obs)`` of its ``m_obs``
    observed outputs exceed the cutoff. Because "at most ``k`` outputs exceed ``c``"
    is the same as "the ``(k+1)``-th largest is ``<= c``", a tolerance is an ``nth``
    of ``floor(tolerance * m_obs) + 1`` (:func:`effective_nth`); give one or the other.
Unobserved outputs
    Outputs with a NaN observation have ``I = NaN`` in the matrix and are left out of
    every summary (they are neither violations nor counted in ``m_obs``).
Equality
    ``I <= c`` is NROY (the boundary is not ruled out); "exceeding" is ``I > c``.

Everything is numpy, vectorised over candidates and outputs; :meth:`Implausibility.classify`
runs a predictor over ``n`` candidates in chunks, so ``n = 1e6`` needs memory for one
chunk only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _per_output(value, m: int, name: str, positive: bool) -> np.ndarray:
    """A scalar or ``(m,)`` -> ``(m,)`` float array, checked finite and > 0 (or >= 0)."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        a = np.full(m, float(a))
    a = a.reshape(-1)
    if a.size != m:
        raise ValueError(f"{name} must be a scalar or have one value per output ({m}), got {a.size} values")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a}")
    if positive and np.any(a <= 0):
        raise ValueError(f"{name} must be > 0 for every output, got min {a.min():g}")
    if not positive and np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 for every output, got min {a.min():g}")
    return a


def implausibility(mean, var, z, obs_var, discrepancy_var=0.0) -> np.ndarray:
    """The full implausibility matrix ``I (n, m)``.

    Parameters
    ----------
    mean : ``(n, m)`` emulator means ``E[f(x)]`` [output units].
    var : ``(n, m)`` emulator variances ``Var_em(x)`` [output units^2], >= 0.
    z : ``(m,)`` observations; NaN marks an unobserved output (its column of ``I`` is NaN).
    obs_var : scalar or ``(m,)`` observation error variances [output units^2].
    discrepancy_var : scalar or ``(m,)`` model discrepancy variances [output units^2].

    ``obs_var + discrepancy_var + var`` must be > 0 wherever ``z`` is observed.

    >>> implausibility([[1.0, 5.0]], [[0.0, 3.0]], [0.0, 2.0], [1.0, 1.0])
    array([[1. , 1.5]])
    """
    mean = np.atleast_2d(np.asarray(mean, dtype=float))
    var = np.atleast_2d(np.asarray(var, dtype=float))
    z = np.asarray(z, dtype=float).reshape(-1)
    m = z.size
    if mean.shape[-1] != m or var.shape != mean.shape:
        raise ValueError(f"mean {mean.shape} and var {var.shape} must both be (n, {m}) for {m} observations")
    ov = np.broadcast_to(np.asarray(obs_var, dtype=float), (m,))
    dv = np.broadcast_to(np.asarray(discrepancy_var, dtype=float), (m,))
    total = var + (ov + dv)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(mean - z) / np.sqrt(total)


def effective_nth(m_obs: int, nth: int = 1, tolerance: float = 0.0) -> int:
    """The ``nth`` that a ``tolerance`` stands for: ``floor(tolerance * m_obs) + 1`` (else ``nth``).

    Raises when both are given or either is out of range (``1 <= nth <= m_obs``, ``0 <= tolerance < 1``).
    """
    if int(nth) != nth or nth < 1:
        raise ValueError(f"nth must be an integer >= 1 (1 = maximum, 2 = second-largest), got {nth}")
    if not (0.0 <= float(tolerance) < 1.0):
        raise ValueError(f"tolerance must be a fraction of the outputs in [0, 1), got {tolerance}")
    if tolerance > 0 and nth != 1:
        raise ValueError("give nth or tolerance, not both (a tolerance is nth = floor(tolerance * m) + 1)")
    k = int(np.floor(float(tolerance) * m_obs + 1e-9)) + 1 if tolerance > 0 else int(nth)
    if k > m_obs:
        raise ValueError(f"nth = {k} but there are only {m_obs} observed outputs")
    return k


def nth_max(I, nth: int = 1) -> np.ndarray:
    """The ``nth``-largest implausibility per row ``(n,)``, NaN (unobserved) columns left out.

    ``nth=1`` is the row maximum, ``nth=2`` the second-largest. Rows whose observed
    outputs are fewer than ``nth`` raise.
    """
    I = np.atleast_2d(np.asarray(I, dtype=float))
    obs = ~np.all(np.isnan(I), axis=0)
    m_obs = int(obs.sum())
    if int(nth) != nth or not 1 <= nth <= max(m_obs, 1) or m_obs == 0:
        raise ValueError(f"nth must be an integer in [1, {m_obs}] (the observed outputs), got {nth}")
    J = I[:, obs]
    if nth == 1:
        return J.max(axis=1)
    J = np.where(np.isnan(J), -np.inf, J)
    k = J.shape[1] - nth
    return np.partition(J, k, axis=1)[:, k]


def n_exceeding(I, cutoff: float) -> np.ndarray:
    """Number of outputs per row with ``I > cutoff`` ``(n,)`` (NaN columns never count)."""
    I = np.atleast_2d(np.asarray(I, dtype=float))
    return np.sum(I > cutoff, axis=1)


def is_nroy(I, cutoff: float = 3.0, nth: int = 1, tolerance: float = 0.0) -> np.ndarray:
    """Boolean ``(n,)``: at most ``nth - 1`` (or ``floor(tolerance * m_obs)``) observed outputs have ``I > cutoff``."""
    I = np.atleast_2d(np.asarray(I, dtype=float))
    m_obs = int((~np.all(np.isnan(I), axis=0)).sum())
    k = effective_nth(m_obs, nth, tolerance)
    return n_exceeding(I, cutoff) <= k - 1


@dataclass(frozen=True)
class Implausibility:
    """Observations, their error and discrepancy variances and the NROY rule, bundled.

    Parameters
    ----------
    z : ``(m,)`` observations (NaN: unobserved output, ignored).
    obs_var : scalar or ``(m,)`` observation error variances, > 0 [output units^2].
    discrepancy_var : scalar or ``(m,)`` model discrepancy variances, >= 0 [output units^2].
    cutoff : NROY when the summary is ``<= cutoff``; > 0.
    nth, tolerance : the summary (see the module doc): ``nth``-largest, or the
        ``floor(tolerance * m_obs) + 1``-th largest.

    ``matrix(mean, var)`` gives ``I (n, m)``, ``summary(I)`` the ``(n,)`` summary, ``nroy(I)``
    the mask, and ``classify(predict, X)`` all of it for ``n`` candidates in chunks.
    """

    z: np.ndarray
    obs_var: np.ndarray | float
    discrepancy_var: np.ndarray | float = 0.0
    cutoff: float = 3.0
    nth: int = 1
    tolerance: float = 0.0

    def __post_init__(self):
        z = np.asarray(self.z, dtype=float).reshape(-1)
        if z.size == 0 or not np.any(np.isfinite(z)):
            raise ValueError("observations z have no finite value: nothing to history-match against")
        m = z.size
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "obs_var", _per_output(self.obs_var, m, "obs_var", positive=True))
        object.__setattr__(self, "discrepancy_var", _per_output(self.discrepancy_var, m, "discrepancy_var", positive=False))
        if not (np.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be > 0 (e.g. 3.0, the three-sigma rule), got {self.cutoff}")
        object.__setattr__(self, "cutoff", float(self.cutoff))
        object.__setattr__(self, "nth", effective_nth(self.m_obs, self.nth, self.tolerance))
        object.__setattr__(self, "tolerance", 0.0)  # folded into nth

    @property
    def m(self) -> int:
        return self.z.size

    @property
    def observed(self) -> np.ndarray:
        """``(m,)`` bool: outputs with a finite observation."""
        return np.isfinite(self.z)

    @property
    def m_obs(self) -> int:
        return int(self.observed.sum())

    def matrix(self, mean, var) -> np.ndarray:
        """``I (n, m)`` for emulator means and variances ``(n, m)`` (NaN for unobserved outputs)."""
        return implausibility(mean, var, self.z, self.obs_var, self.discrepancy_var)

    def summary(self, I) -> np.ndarray:
        """``(n,)``: the ``nth``-largest of each row's observed implausibilities."""
        I = np.atleast_2d(np.asarray(I, dtype=float))
        return nth_max(I[:, self.observed] if I.shape[1] == self.m else I, self.nth)

    def nroy(self, I) -> np.ndarray:
        """``(n,)`` bool: ``summary(I) <= cutoff``."""
        return self.summary(I) <= self.cutoff

    def classify(self, predict: Callable, X, chunk_size: int = 65536):
        """Summary ``(n,)`` and NROY mask ``(n,)`` of ``n`` candidates, ``chunk_size`` at a time.

        ``predict(X_chunk) -> (mean, var)``, each ``(k, m)`` (e.g. ``gp.predict``). Memory:
        one chunk's ``(k, m)`` arrays, whatever ``n`` is.
        """
        X = np.asarray(X)
        n = X.shape[0]
        out = np.empty(n)
        for a in range(0, n, int(chunk_size)):
            mean, var = predict(X[a:a + chunk_size])
            out[a:a + chunk_size] = self.summary(self.matrix(mean, var))
        return out, out <= self.cutoff
