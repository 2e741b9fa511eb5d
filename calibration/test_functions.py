"""Standard optimisation test functions with known minima (for Bayesian optimisation tests and
benchmarks). Vectorised: ``x (n, d)`` -> ``(n,)``.

- :func:`branin` on ``BRANIN_BOUNDS`` = [-5, 10] x [0, 15]; minimum ``BRANIN_MIN`` = 0.397887 at
  (-pi, 12.275), (pi, 2.275), (9.42478, 2.475).
- :func:`hartmann6` on [0, 1]^6; minimum ``HARTMANN6_MIN`` = -3.32237 at ``HARTMANN6_ARGMIN``;
  a local minimum -3.2032 traps greedy searches.
"""

from __future__ import annotations

import numpy as np

BRANIN_BOUNDS = [[-5.0, 10.0], [0.0, 15.0]]
BRANIN_MIN = 0.397887
HARTMANN6_BOUNDS = [[0.0, 1.0]] * 6
HARTMANN6_MIN = -3.32237
HARTMANN6_ARGMIN = np.array([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573])


def branin(x) -> np.ndarray:
    """Branin-Hoo function, ``x (n, 2)`` -> ``(n,)``."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    x1, x2 = x[:, 0], x[:, 1]
    return (x2 - 5.1 / (4 * np.pi**2) * x1**2 + 5 / np.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * np.pi)) * np.cos(x1) + 10


_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                      [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x) -> np.ndarray:
    """Hartmann 6-D function, ``x (n, 6)`` in the unit cube -> ``(n,)``."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    r = np.einsum("kj,nkj->nk", _A, (x[:, None, :] - _P[None]) ** 2)
    return -(np.exp(-r) @ _ALPHA)
