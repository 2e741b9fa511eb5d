"""Model error of an inference model (e.g. the emulator) against a reference model.

When a cheap model ``M_e`` (the emulator) stands in for the reference model ``M`` (the
physics) inside a calibration, ``y = M(x_true) + eps`` becomes

    y = M_e(x_true) + (M(x_true) - M_e(x_true)) + eps = M_e(x_true) + delta(x_true) + eps,

and a posterior that ignores ``delta`` is over-confident and biased. :func:`model_error`
estimates ``delta`` in observation space from ``n`` parameter sets drawn from the prior
space (fresh draws, so held out from the emulator's training members): its mean over the
draws (``bias``, shape ``(m,)``) and its spread (``std``, ``(m,)``), and the second-moment matrix

    S = 1/n sum_k delta_k delta_k^T        (m, m), rank <= n,

which a calibration adds to the observation error covariance: ``R = diag(obs_std^2) + S``
(:meth:`ModelError.covariance`). ``delta`` is a systematic, time-correlated error: its
full matrix brings the emulator's optimum closest to the physics' own, its diagonal alone
less close, and subtracting the mean bias over the prior makes the fit worse, because the
bias depends on the parameters (``benchmarks/calibration.py --only model_error``; see the
README).

``S`` from prior draws describes the emulator everywhere in the prior; near the posterior
the error is smaller and different. :func:`local_draws` draws around a first posterior so
a second estimate of ``S`` describes the emulator where it matters (what
:class:`calibration.TwinExperiment` does with ``model_error=True``: two passes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ailand import ParameterSpace
from ailand.arrays import to_numpy

from .progress import as_progress


@dataclass
class ModelError:
    """Observation-space error of a model against a reference, from ``n`` parameter sets.

    Attributes: ``bias`` ``(m,)`` mean of ``model - reference``; ``std`` ``(m,)`` its std
    over the draws (ddof=1); ``x`` ``(n, d)`` the draws [physical units, ``space`` order];
    ``differences`` ``(n, m)``; ``labels`` (the observation MultiIndex, or None);
    ``names`` parameter names; ``units`` of the observations (for the report).
    """

    bias: np.ndarray
    std: np.ndarray
    x: np.ndarray
    differences: np.ndarray
    names: list[str]
    labels: pd.MultiIndex | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def rms(self) -> np.ndarray:
        """``(m,)`` root-mean-square difference (bias and spread together)."""
        return np.sqrt(np.mean(self.differences**2, axis=0))

    @property
    def covariance(self) -> np.ndarray:
        """``(m, m)`` second moment ``S = D^T D / n`` of the differences (bias and spread)."""
        return self.differences.T @ self.differences / self.differences.shape[0]

    def total_covariance(self, obs_std) -> np.ndarray:
        """``(m, m)`` observation error covariance with the model error: ``diag(obs_std^2) + S``."""
        obs_std = np.broadcast_to(np.asarray(obs_std, dtype=float), self.bias.shape)
        return np.diag(obs_std**2) + self.covariance

    def summary(self) -> pd.DataFrame:
        """Per observed variable: mean |bias|, RMS std, RMS difference (one row each)."""
        if self.labels is None:
            key = np.array(["all"] * self.bias.size)
        else:
            key = np.asarray(self.labels.get_level_values("variable"))
        df = pd.DataFrame({"variable": key, "abs_bias": np.abs(self.bias), "std2": self.std**2, "rms2": self.rms**2})
        g = df.groupby("variable", sort=False)
        return pd.DataFrame({"mean_abs_bias": g["abs_bias"].mean(), "rms_std": np.sqrt(g["std2"].mean()),
                             "rms_difference": np.sqrt(g["rms2"].mean())})

    def to_xarray(self) -> xr.Dataset:
        """Dataset with ``bias``, ``std`` over ``obs`` and ``x`` over ``(sample, parameter)``."""
        obs = np.arange(self.bias.size)
        ds = xr.Dataset(
            {"bias": ("obs", self.bias, {"long_name": "mean model - reference over the draws"}),
             "std": ("obs", self.std, {"long_name": "std of model - reference over the draws"}),
             "x": (("sample", "parameter"), self.x, {"long_name": "parameter draws (physical units)"})},
            coords={"obs": obs, "parameter": self.names, "sample": np.arange(self.n)},
            attrs={"n_draws": self.n, **self.attrs},
        )
        if self.labels is not None:
            for level in self.labels.names:
                ds = ds.assign_coords({f"obs_{level}": ("obs", np.asarray(self.labels.get_level_values(level)).astype(str))})
        return ds


def model_error(model, reference, space: ParameterSpace, n: int = 32, seed: int = 0, method: str = "lhs",
                labels=None, x=None, progress=False) -> ModelError:
    """Estimate the error of ``model`` against ``reference`` over ``n`` draws from ``space``.

    Parameters
    ----------
    model, reference : callables ``(n, d)`` physical -> ``(n, m)`` (e.g. two
        :class:`calibration.Forward` on the same forcing, start state and Observe: the
        emulator and the physics). numpy in, numpy out.
    space : where to draw the parameter sets (:meth:`ailand.ParameterSpace.sample`;
        log-scale parameters log-uniformly).
    n : number of draws (>= 2); each costs one run of each model (the draws go as one
        batch, so the reference runs them as members of one vectorised simulation).
    seed, method : of the design (``"lhs"``, ``"sobol"``, ``"uniform"``).
    labels : observation labels for the summary (default ``reference.labels`` if present).
    x : ``(n, d)`` physical parameter sets to use instead of drawing them (e.g.
        :func:`local_draws`); ``n``, ``seed`` and ``method`` are then ignored.
    progress : a bar over the ``2 n`` runs (the draws through ``model``, then through
        ``reference``) on stderr (``True`` or a :class:`calibration.progress.Progress`).

    Rows where either model is not finite are dropped (with their count in ``attrs``).
    """
    if x is None:
        if int(n) != n or n < 2:
            raise ValueError(f"n must be an integer >= 2 (draws to estimate a spread), got {n}")
        x = np.asarray(space.sample(int(n), method=method, seed=seed).values, dtype=float)
    else:
        x = np.atleast_2d(to_numpy(x, name="x"))
        if x.shape[1] != len(space) or x.shape[0] < 2:
            raise ValueError(f"x must be (n >= 2, {len(space)}) parameter sets in {space.names} order, got {x.shape}")
        method = "given"
    n = x.shape[0]
    with as_progress(progress).bar(2 * n, desc="model-error draws", unit="run") as bar:
        a = to_numpy(model(x), name="model output")
        bar.update(n)
        b = to_numpy(reference(x), name="reference output")
        bar.update(n)
    if a.shape != b.shape:
        raise ValueError(f"model gives {a.shape} outputs but reference gives {b.shape}: they must observe the same data")
    d = a - b
    ok = np.isfinite(d).all(axis=1)
    if ok.sum() < 2:
        raise ValueError(f"only {int(ok.sum())} of {n} draws gave finite outputs for both models")
    d, x = d[ok], x[ok]
    if labels is None:
        labels = getattr(reference, "labels", None)
    return ModelError(bias=d.mean(axis=0), std=d.std(axis=0, ddof=1), x=x, differences=d, names=list(space.names),
                      labels=labels, attrs={"n_dropped": int((~ok).sum()), "design": method, "seed": int(seed)})


def local_draws(problem, x, A_control, n: int = 32, seed: int = 0, inflate: float = 2.0) -> np.ndarray:
    """``(n, d)`` physical parameter sets around a posterior: ``z = z(x) + inflate * L e``
    with ``L L^T = A_control`` (the Gauss-Newton posterior covariance in the control space
    of ``problem``, e.g. ``VariationalResult.A_control``) and ``e ~ N(0, I)``, clipped to the
    bounds; draws that break a constraint are redrawn (seeded)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    z = np.asarray(problem.to_control(x), dtype=float)
    L = np.linalg.cholesky(np.asarray(A_control, dtype=float))
    lo, hi = problem.bounds[:, 0], problem.bounds[:, 1]
    out = np.empty((0, len(z)))
    for _ in range(100):
        zs = z + inflate * rng.standard_normal((n, len(z))) @ L.T
        xs = np.clip(np.asarray(problem.from_control(zs), dtype=float), lo, hi)
        out = np.vstack([out, xs[problem.inside(xs)]])
        if len(out) >= n:
            return out[:n]
    raise ValueError(f"could not draw {n} feasible parameter sets around x = {x}")
