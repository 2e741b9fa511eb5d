"""Cycling ensemble Kalman filter / fixed-lag smoother over any step function on tensors.

One cycle (DAPPER's ``EnKF.assimilate`` / ``LETKF.assimilate`` loop)::

    forecast   x <- step(x, t, params, inputs)   obs_every times, all N members in one call
    observe    HE = observe(x)                   (N, m)
    analyse    E_a = E + M X                     "enkf-pertobs" | "etkf" | "letkf"
    inflate    E_a <- mean + Q (infl X_a)        posterior (DAPPER) or prior; then RTPP / RTPS
    smooth     E_(k-l) <- E_(k-l) + M X_(k-l)    fixed lag: the same weights on earlier times
    restart    the members start the next forecast from E_a

The augmented vector (what is analysed) is packed as ``z = [x | p | f]`` (:class:`Layout`):

- ``x (N, n_state)`` the model state, stepped by ``step``;
- ``p (N, n_params)`` time-invariant parameters (no dynamics: persistence; they change only
  at analyses, through their ensemble covariance with the observed state), passed to
  ``step`` as ``params``;
- ``f (N, n_factors)`` multiplicative scaling factors of an input (also persistent): at each
  step the driver builds ``inputs = input_fn(t) * f[:, factor_index]`` ``(N, n_input)``,
  i.e. input element ``j`` scaled by factor ``factor_index[j]`` (several elements may share
  one factor, e.g. all grid cells of a source region), and passes it to ``step`` as ``inputs``.

The step signature is ``step(x, t, params, inputs) -> x``: ``x (N, n_state)`` float64 tensor
of all members, ``t`` the time at the start of the step [units of ``dt``], ``params`` ``(N,
n_params)`` or None, ``inputs`` ``(N, n_input)`` or None; it returns the state at ``t + dt``.
A member whose returned state is not finite is a failed member: it is replaced by a draw from
the Gaussian of the surviving members (in their ensemble subspace; earlier times of a smoother
get the same combination), counted in ``n_failed``; fewer than 2 survivors is an error.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr

from .analysis import _t, check_ensemble, check_inflation, enkf_pertobs, etkf, letkf, random_rotation, rtpp, rtps

log = logging.getLogger(__name__)

METHODS = ("enkf-pertobs", "etkf", "letkf")
Step = Callable[[torch.Tensor, float, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """Packing of the augmented vector ``z = [x (n_state) | p (n_params) | f (n_factors)]``."""

    n_state: int
    n_params: int = 0
    n_factors: int = 0

    @property
    def size(self) -> int:
        return self.n_state + self.n_params + self.n_factors

    def split(self, z: torch.Tensor):
        """``z (..., size)`` -> ``(x, p, f)`` views (``p``/``f`` None when empty)."""
        a, b = self.n_state, self.n_state + self.n_params
        return z[..., :a], (z[..., a:b] if self.n_params else None), (z[..., b:] if self.n_factors else None)

    def pack(self, x, p=None, f=None) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        return torch.cat([t for t in (x, p, f) if t is not None], dim=-1)


def gaussian_ensemble(mean, std, N: int, rng: np.random.Generator) -> np.ndarray:
    """``N`` members ``mean + std * z``, ``z ~ N(0, I)``: ``(N, n)`` (``std`` scalar or ``(n,)``)."""
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    return mean + np.asarray(std, dtype=float) * rng.standard_normal((int(N), mean.size))


def _observer(observe, n_state: int):
    """``observe``: callable ``x (N, n_state) -> (N, m)``, index array (point observations) or
    matrix ``(m, n_state)`` -> (callable, observed state index per observation or None)."""
    if callable(observe):
        return observe, None
    a = np.asarray(observe)
    if a.ndim == 1 and np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() >= n_state):
            raise ValueError(f"observe: indices must lie in [0, {n_state}), got {a.min()}..{a.max()}")
        idx = torch.as_tensor(a, dtype=torch.long)
        return (lambda x: x[..., idx]), a
    if a.ndim == 2 and a.shape[1] == n_state:
        H = torch.as_tensor(a, dtype=torch.float64)
        return (lambda x: x @ H.T), None
    raise ValueError("observe must be a callable x -> HE, an integer index array, or an (m, n_state) matrix")


class CyclingFilter:
    """Ensemble Kalman filter (and fixed-lag smoother) cycling a model through observations.

    Parameters
    ----------
    step : ``step(x, t, params, inputs) -> x`` on float64 tensors ``(N, n_state)`` (see the
        module docstring), members vectorised in one call.
    observe : observation operator on the state part: a callable ``x (N, n_state) -> (N, m)``
        tensor, an integer index array (point observations ``x[:, idx]``), or an ``(m, n_state)``
        matrix. With ``obs_time=True`` a callable is called as ``observe(x, t)`` (``t`` the analysis
        time), for operators that change with time; the number ``m`` stays fixed (NaN in ``y`` for
        observations absent at a time).
    obs_time : pass the analysis time to ``observe``.
    R : ``(m, m)`` observation error covariance (SPD), or ``(m,)`` variances.
    layout : :class:`Layout` (``n_state``, ``n_params``, ``n_factors``) of the analysed vector.
    method : ``"enkf-pertobs"`` (perturbed observations, centred like DAPPER's ``mean0``),
        ``"etkf"`` (symmetric square root) or ``"letkf"`` (needs ``coeffs``).
    infl : multiplicative inflation of the anomalies, >= 1.
    infl_on : ``"posterior"`` (DAPPER: after the analysis) or ``"prior"`` (before it).
    rot : random mean-preserving rotation of the analysis anomalies (DAPPER's ``rot``).
    rtpp, rtps : relaxation to prior perturbations / spread, in [0, 1] (0: off).
    coeffs : ``(n_state, m)`` localisation coefficients (LETKF; see
        :mod:`calibration.ensemble_kalman.localisation`); rows for parameters and factors are
        ``param_coeffs`` (default 1: every observation, a global update of a global parameter).
    param_coeffs : ``(n_params + n_factors, m)`` coefficients of the augmented rows, or None.
    lag : fixed-lag smoother: each analysis also updates the previous ``lag`` analysis times
        with its weights (0: filter only).
    input_fn : ``t -> (n_input,)`` tensor, the input the factors multiply (needed when
        ``n_factors > 0``).
    factor_index : ``(n_input,)`` integers in ``[0, n_factors)``: which factor scales each
        input element (default: ``arange(n_input)``, one factor per element).
    names : names of the ``layout.size`` analysed variables (default ``x0..``, ``p0..``, ``f0..``).
    units : units of the analysed variables (one string, or one per variable); default "1".
    seed : seed of the numpy Generator for rotations, perturbed observations and redraws.
    progress : tqdm progress bar over the cycles (off by default).
    """

    def __init__(self, step: Step, observe, R, layout: Layout, method: str = "letkf", *, infl: float = 1.0,
                 infl_on: str = "posterior", rot: bool = False, rtpp: float = 0.0, rtps: float = 0.0,
                 coeffs=None, param_coeffs=None, lag: int = 0, input_fn: Callable | None = None,
                 factor_index: Sequence[int] | None = None, names: Sequence[str] | None = None,
                 units: str | Sequence[str] = "1", seed: int | None = None, progress: bool = False,
                 obs_time: bool = False):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if infl_on not in ("posterior", "prior"):
            raise ValueError(f"infl_on must be 'posterior' or 'prior', got {infl_on!r}")
        self.step, self.layout, self.method = step, layout, method
        self.observe, self.obs_index = _observer(observe, layout.n_state)
        if obs_time and not callable(observe):
            raise ValueError("obs_time=True needs a callable observe(x, t)")
        self.obs_time = bool(obs_time)
        Rt = _t(R)
        self.R = torch.diag(Rt) if Rt.ndim == 1 else Rt
        self.infl, self.infl_on, self.rot = check_inflation(infl), infl_on, bool(rot)
        self.rtpp, self.rtps = float(rtpp), float(rtps)
        for nm, v in (("rtpp", self.rtpp), ("rtps", self.rtps)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{nm} must be in [0, 1], got {v}")
        if int(lag) < 0:
            raise ValueError(f"lag must be >= 0, got {lag}")
        self.lag = int(lag)
        m = self.R.shape[-1]
        n_aug = layout.n_params + layout.n_factors
        self.coeffs = None
        if method == "letkf":
            if coeffs is None:
                raise ValueError("coeffs: the LETKF needs localisation coefficients (n_state, m); "
                                 "see calibration.ensemble_kalman.localisation")
            c = _t(coeffs)
            if c.shape != (layout.n_state, m):
                raise ValueError(f"coeffs must be (n_state, m) = ({layout.n_state}, {m}), got {tuple(c.shape)}")
            pc = torch.ones(n_aug, m, dtype=torch.float64) if param_coeffs is None else _t(param_coeffs)
            if pc.shape != (n_aug, m):
                raise ValueError(f"param_coeffs must be ({n_aug}, {m}), got {tuple(pc.shape)}")
            self.coeffs = torch.cat([c, pc], 0)
        if layout.n_factors:
            if input_fn is None:
                raise ValueError("input_fn: scaling factors need the input they multiply (input_fn(t) -> (n_input,))")
            self.factor_index = None if factor_index is None else torch.as_tensor(np.asarray(factor_index), dtype=torch.long)
            if self.factor_index is not None and (self.factor_index.min() < 0 or self.factor_index.max() >= layout.n_factors):
                raise ValueError(f"factor_index must lie in [0, {layout.n_factors})")
        self.input_fn = input_fn
        n = layout.size
        if names is None:
            names = ([f"x{i}" for i in range(layout.n_state)] + [f"p{i}" for i in range(layout.n_params)]
                     + [f"f{i}" for i in range(layout.n_factors)])
        if len(names) != n:
            raise ValueError(f"names must have {n} entries (state, parameters, factors), got {len(names)}")
        self.names = list(names)
        self.units = [units] * n if isinstance(units, str) else list(units)
        self.seed, self.progress = seed, progress

    # ------------------------------------------------------------------ one cycle's pieces
    def inputs(self, f: torch.Tensor | None, t: float) -> torch.Tensor | None:
        """The scaled input ``input_fn(t) * f[:, factor_index]`` ``(N, n_input)``, or None."""
        if f is None:
            return None
        u = _t(self.input_fn(t))
        fi = f if self.factor_index is None else f[..., self.factor_index]
        return u * fi

    def forecast(self, E: torch.Tensor, t: float, dt: float, n_steps: int) -> torch.Tensor:
        """Step every member ``n_steps`` times from ``t``; parameters and factors persist."""
        x, p, f = self.layout.split(E)
        for _ in range(n_steps):
            x = self.step(x, t, p, self.inputs(f, t))
            t += dt
        return self.layout.pack(x, p, f)

    def _observe(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return _t(self.observe(x, t) if self.obs_time else self.observe(x))

    def analyse(self, E: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, t: float = 0.0):
        """Analysis of ``E (N, n)`` with ``y (m,)``: ``(E_a, M, HE)``, ``E_a = E + M X`` (``M`` per point
        for the LETKF). Missing observations (NaN in ``y``) leave the analysis; none left: no update."""
        x, _, _ = self.layout.split(E)
        HE = self._observe(x, t)
        if HE.shape != (E.shape[0], y.shape[-1]):
            raise ValueError(f"observe returned {tuple(HE.shape)}, expected (N, m) = ({E.shape[0]}, {y.shape[-1]})")
        ok = torch.isfinite(y)
        HEo, yo, R, coeffs = HE, y, self.R, self.coeffs
        if not bool(ok.all()):
            if not bool(ok.any()):
                N = E.shape[0]
                zeros = torch.zeros((E.shape[1], N, N) if self.method == "letkf" else (N, N), dtype=E.dtype)
                return E.clone(), zeros, HE
            HEo, yo, R = HE[:, ok], y[ok], self.R[ok][:, ok]
            coeffs = None if coeffs is None else coeffs[:, ok]
        if self.method == "etkf":
            Ea, M = etkf(E, HEo, yo, R, return_weights=True)
        elif self.method == "letkf":
            Ea, M = letkf(E, HEo, yo, R, coeffs, return_weights=True)
        else:
            Ea, M = enkf_pertobs(E, HEo, yo, R, rng=rng, center=True, return_weights=True)
        return Ea, M, HE

    @staticmethod
    def _apply_weights(E, M):
        X = E - E.mean(-2, keepdim=True)
        if M.ndim == 3:  # per point
            return E + torch.einsum("ijk,ki->ji", M, X)
        return E + M @ X

    @staticmethod
    def _redraw(E, bad, rng, past=()):
        """Replace members ``bad`` by ``mean + z X_good / sqrt(N_good - 1)``; the same ``z`` on ``past``."""
        good = ~bad
        ng = int(good.sum())
        if ng < 2:
            raise RuntimeError(f"only {ng} member(s) gave a finite forecast; an ensemble needs at least 2")
        z = torch.as_tensor(rng.standard_normal((int(bad.sum()), ng))) / (ng - 1) ** 0.5

        def fix(A):
            Ag = A[good]
            A = A.clone()
            A[bad] = Ag.mean(0) + z @ (Ag - Ag.mean(0))
            return A

        return fix(E), [fix(P) for P in past]

    # ------------------------------------------------------------------ the loop
    def run(self, E0, y, *, obs_every: int = 1, dt: float = 1.0, t0: float = 0.0, truth=None,
            burn_in: float = 0.0, keep_ensemble: bool = False) -> xr.Dataset:
        """Cycle through the observations.

        Parameters
        ----------
        E0 : ``(N, layout.size)`` initial ensemble (state, then parameters, then factors).
        y : ``(K, m)`` observations; ``y[k]`` is valid at ``t0 + (k + 1) obs_every dt``; NaN marks a
            missing observation (left out of that analysis).
        obs_every : model steps per cycle (DAPPER's ``dko``).
        dt : model time step [time units of the results].
        t0 : time of ``E0``.
        truth : ``(K, n_state)`` or ``(K, layout.size)`` true values at the analysis times
            (optional): adds ``truth``, ``rmse_f``, ``rmse_a`` (and ``rmse_s``).
        burn_in : analyses at ``t <= burn_in`` are left out of the time averages in the attrs.
        keep_ensemble : also return the analysed ensemble ``ensemble_a (time, member, variable)``.

        Returns an :class:`xarray.Dataset` (see :func:`filter_dataset`).
        """
        rng = np.random.default_rng(self.seed)
        E = _t(E0).clone()
        lay = self.layout
        if E.ndim != 2 or E.shape[-1] != lay.size:
            raise ValueError(f"E0 must be (N, {lay.size}) = (members, state + parameters + factors), got {tuple(E.shape)}")
        N = E.shape[0]
        if N < 2:
            raise ValueError(f"E0: an ensemble needs at least 2 members, got N={N}")
        yt = _t(y)
        m = self.R.shape[-1]
        if yt.ndim != 2 or yt.shape[1] != m:
            raise ValueError(f"y must be (K, m) with m = {m} observations per cycle (the size of R), got {tuple(yt.shape)}")
        # the whole-size checks once (N, shapes, R symmetric positive definite)
        HE0 = self._observe(lay.split(E)[0], t0 + obs_every * dt)
        check_ensemble(E, HE0, yt[0], self.R)
        K, n = yt.shape[0], lay.size
        tr = None if truth is None else _t(truth)
        if tr is not None and (tr.shape[0] != K or tr.shape[1] not in (lay.n_state, n)):
            raise ValueError(f"truth must be (K, n_state) or (K, {n}) with K = {K}, got {tuple(tr.shape)}")
        obs_every = int(obs_every)
        if obs_every < 1:
            raise ValueError(f"obs_every must be >= 1, got {obs_every}")

        out = {k: torch.empty(K, n, dtype=torch.float64) for k in ("mean_f", "spread_f", "mean_a", "spread_a")}
        innov = torch.empty(K, m, dtype=torch.float64)
        n_failed = torch.zeros(K, dtype=torch.int64)
        ens = torch.empty(K, N, n, dtype=torch.float64) if keep_ensemble else None
        smooth = {k: torch.empty(K, n, dtype=torch.float64) for k in ("mean_s", "spread_s")} if self.lag else None
        buffer: deque = deque()  # (k, ensemble) of the last `lag` analyses

        def settle(k, Ek):
            smooth["mean_s"][k] = Ek.mean(0)
            smooth["spread_s"][k] = Ek.std(0)

        from tqdm.auto import tqdm

        t = float(t0)
        for k in tqdm(range(K), disable=not self.progress, desc=f"{self.method} N={N}", mininterval=0.5):
            E = self.forecast(E, t, dt, obs_every)
            t = t0 + (k + 1) * obs_every * dt
            bad = ~torch.isfinite(E).all(-1)
            if bool(bad.any()):
                n_failed[k] = int(bad.sum())
                log.warning("cycle %d: %d member(s) failed (non-finite forecast); redrawn from the others", k, int(bad.sum()))
                E, past = self._redraw(E, bad, rng, [b[1] for b in buffer])
                buffer = deque((b[0], P) for b, P in zip(buffer, past))
            if self.infl_on == "prior" and self.infl != 1.0:
                E = E.mean(0) + self.infl * (E - E.mean(0))
            out["mean_f"][k], out["spread_f"][k] = E.mean(0), E.std(0)
            Ea, M, HE = self.analyse(E, yt[k], rng, t)
            innov[k] = yt[k] - HE.mean(0)
            if self.lag:
                for i, (kb, Eb) in enumerate(buffer):
                    buffer[i] = (kb, self._apply_weights(Eb, M))
            if self.rtpp:
                Ea = rtpp(Ea, E, self.rtpp)
            if self.rtps:
                Ea = rtps(Ea, E, self.rtps)
            # DAPPER's post_process: E <- mean + Q (infl X); a smoother rotates its earlier times by the
            # same Q (without inflation), so that member j stays one trajectory through the lag
            f = self.infl if self.infl_on == "posterior" else 1.0
            mu = Ea.mean(0)
            Xa = f * (Ea - mu)
            if self.rot:
                Q = random_rotation(N, rng)
                Xa = Q @ Xa
                for i, (kb, Eb) in enumerate(buffer):
                    mb = Eb.mean(0)
                    buffer[i] = (kb, mb + Q @ (Eb - mb))
            E = mu + Xa
            out["mean_a"][k], out["spread_a"][k] = E.mean(0), E.std(0)
            if keep_ensemble:
                ens[k] = E
            if self.lag:
                buffer.append((k, E))
                if len(buffer) > self.lag:
                    settle(*buffer.popleft())
        for kb, Eb in buffer:
            settle(kb, Eb)

        return filter_dataset(self, out, innov, n_failed, yt, tr, ens, smooth, t0, obs_every, dt, burn_in, N)


def _rms_error(mean: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over variables of ``mean - truth`` per time (DAPPER's ``err.rms``)."""
    return ((mean - truth) ** 2).mean(-1).sqrt()


def time_average(da: xr.DataArray, burn_in: float) -> float:
    """Mean over the times ``t > burn_in`` (DAPPER's strict ``mask_BI``)."""
    return float(da.where(da["time"] > burn_in, drop=True).mean())


def filter_dataset(flt: CyclingFilter, out, innov, n_failed, y, truth, ens, smooth, t0, obs_every, dt, burn_in, N) -> xr.Dataset:
    """The results of :meth:`CyclingFilter.run` as a Dataset.

    Dims ``time`` (analysis times), ``variable`` (state, parameters, factors), ``obs``, and
    ``member`` (with ``keep_ensemble``). Variables: ``mean_f``/``mean_a`` and ``spread_f``/
    ``spread_a`` (ensemble std, ddof 1) per variable; ``rmse_f``/``rmse_a``/``rmse_s`` (state
    RMS error per time) and ``rmv_f``/``rmv_a`` (state RMS spread per time, DAPPER's ``rmv``);
    ``innovation`` (``y - mean(H(x_f))``), ``y``, ``truth``, ``n_failed``; ``mean_s``/``spread_s``
    (fixed-lag smoother); ``ensemble_a``. Attrs: the configuration and the time averages after
    ``burn_in`` (``rmse_a``, ``spread_a``, ...; spread = mean over time of the RMS spread).
    """
    lay = flt.layout
    K, n = out["mean_a"].shape
    time = t0 + (np.arange(K) + 1) * obs_every * dt
    ns = lay.n_state
    kind = ["state"] * ns + ["parameter"] * lay.n_params + ["factor"] * lay.n_factors
    coords = {"time": ("time", time, {"units": "model time", "long_name": "analysis time"}),
              "variable": ("variable", flt.names, {"long_name": "analysed variable"}),
              "kind": ("variable", kind, {"long_name": "state, parameter or scaling factor"}),
              "obs": ("obs", np.arange(y.shape[1]), {"long_name": "observation index"})}
    if flt.obs_index is not None:
        coords["obs_variable"] = ("obs", np.asarray(flt.obs_index), {"long_name": "observed state variable index"})
    units = xr.DataArray(flt.units, dims="variable")
    ds = xr.Dataset(coords=coords)

    def var(name, data, dims, long_name, units_="1"):
        ds[name] = (dims, data.numpy() if torch.is_tensor(data) else data, {"long_name": long_name, "units": units_})

    u_state = flt.units[0] if len(set(flt.units[:ns])) == 1 else "1"
    for s, label in (("f", "forecast (prior)"), ("a", "analysis (posterior)")):
        var(f"mean_{s}", out[f"mean_{s}"], ("time", "variable"), f"{label} ensemble mean", "see units_of")
        var(f"spread_{s}", out[f"spread_{s}"], ("time", "variable"), f"{label} ensemble standard deviation", "see units_of")
        var(f"rmv_{s}", (out[f"spread_{s}"][:, :ns] ** 2).mean(-1).sqrt(), ("time",),
            f"{label} RMS spread of the state", u_state)
    ds["units_of"] = units
    ds["units_of"].attrs = {"long_name": "units of each analysed variable"}
    var("innovation", innov, ("time", "obs"), "innovation y - mean H(x_f)", "obs units")
    var("y", y, ("time", "obs"), "observations", "obs units")
    var("n_failed", n_failed, ("time",), "members with a non-finite forecast (redrawn)")
    if smooth is not None:
        var("mean_s", smooth["mean_s"], ("time", "variable"), f"fixed-lag ({flt.lag}) smoother mean", "see units_of")
        var("spread_s", smooth["spread_s"], ("time", "variable"), f"fixed-lag ({flt.lag}) smoother standard deviation", "see units_of")
    if ens is not None:
        ds = ds.assign_coords(member=np.arange(N))
        var("ensemble_a", ens, ("time", "member", "variable"), "analysis ensemble", "see units_of")
    attrs = {"method": flt.method, "N": N, "infl": flt.infl, "infl_on": flt.infl_on, "rot": int(flt.rot),
             "rtpp": flt.rtpp, "rtps": flt.rtps, "lag": flt.lag, "obs_every": obs_every, "dt": dt,
             "burn_in": burn_in, "seed": -1 if flt.seed is None else int(flt.seed),
             "n_state": ns, "n_params": lay.n_params, "n_factors": lay.n_factors}
    if truth is not None:
        var("truth", truth if truth.shape[1] == n else torch.cat([truth, torch.full((K, n - ns), float("nan"),
                                                                                       dtype=torch.float64)], 1),
            ("time", "variable"), "truth", "see units_of")
        for s in ("f", "a") + (("s",) if smooth is not None else ()):
            var(f"rmse_{s}", _rms_error(_t(ds[f"mean_{s}"].values[:, :ns]), truth[:, :ns]), ("time",),
                {"f": "forecast", "a": "analysis", "s": "smoother"}[s] + " RMS error of the state", u_state)
            attrs[f"rmse_{s}"] = time_average(ds[f"rmse_{s}"], burn_in)
    attrs["spread_a"] = time_average(ds["rmv_a"], burn_in)
    attrs["spread_f"] = time_average(ds["rmv_f"], burn_in)
    attrs["n_averaged"] = int((time > burn_in).sum())
    ds.attrs.update(attrs)
    return ds


def plot(ds: xr.Dataset, variable: str | int = 0, ax=None, smoother: bool = True, t_range=None):
    """Truth, observations, forecast and analysis mean with +-1 spread of one variable over time.

    ``variable``: a name or index along ``variable``; ``t_range`` ``(t_start, t_end)`` to zoom.
    Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    v = ds["variable"].values[variable] if isinstance(variable, (int, np.integer)) else variable
    d = ds.sel(variable=v)
    if t_range is not None:
        d = d.sel(time=slice(*t_range))
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    t = d["time"].values
    if "truth" in d:
        ax.plot(t, d["truth"], "k-", lw=1.5, label="truth")
    if "obs_variable" in d.coords:
        idx = list(ds["variable"].values).index(v)
        hit = np.flatnonzero(d["obs_variable"].values == idx)
        if hit.size:
            ax.plot(t, d["y"].isel(obs=hit[0]), "r.", ms=3, label="observations")
    ax.plot(t, d["mean_f"], color="C1", lw=0.8, label="forecast mean")
    ax.plot(t, d["mean_a"], color="C0", lw=1.2, label="analysis mean")
    ax.fill_between(t, d["mean_a"] - d["spread_a"], d["mean_a"] + d["spread_a"], color="C0", alpha=0.25,
                    label="analysis +-1 spread")
    if smoother and "mean_s" in d:
        ax.plot(t, d["mean_s"], color="C2", lw=1.0, ls="--", label=f"smoother (lag {ds.attrs.get('lag')})")
    ax.set_xlabel("time")
    ax.set_ylabel(f"{v} [{str(ds['units_of'].sel(variable=v).values)}]")
    ax.set_title(f"{ds.attrs.get('method')} N={ds.attrs.get('N')}: {v}")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    return ax
