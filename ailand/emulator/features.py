"""What the emulator reads and writes, and how it is normalised.

One emulator step maps the state at ``t`` plus everything that drives the step
``t -> t + dt`` to the state at ``t + dt`` and the step's mean diagnostics:

    inputs  = state(t) | forcing means over [t, t+dt) | clim fields | parameters | time
    outputs = state(t+dt) | diagnostics (means over [t, t+dt))

The network sees normalised inputs and predicts normalised *increments* of the
state, ``(x(t+dt) - x(t) - mean_tend) / std_tend``, and normalised diagnostics;
:class:`Normaliser` holds the constants (from the training dataset's statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..physics.model import DIAGNOSTIC_NAMES, STATE_NAMES

FORCING_NAMES = ("Tair", "Qair", "Wind_E", "Wind_N", "SWdown", "LWdown", "Rainf", "Snowf", "PSurf")
CLIM_NAMES = ("clim_lai", "clim_sand", "clim_clay", "clim_cveg", "clim_cvh", "clim_elevation")
TIME_NAMES = ("sin_doy", "cos_doy", "sin_lst", "cos_lst")
TIME_UNITS = {n: "-" for n in TIME_NAMES}
CLIM_UNITS = {
    "clim_lai": "m2 m-2", "clim_sand": "-", "clim_clay": "-", "clim_cveg": "-", "clim_cvh": "-", "clim_elevation": "m",
}
# precipitation is heavy-tailed: the network sees log1p(x / PRECIP_SCALE) before standardising
PRECIP_SCALE = 1e-5  # kg m-2 s-1 (0.036 mm h-1)
LOG_INPUTS = ("Rainf", "Snowf")


def as_ensemble_data(data):
    """A path to an anemoi ensemble (opened with :func:`ailand.ensemble.load_ensemble`) or an
    already loaded :class:`~ailand.ensemble.EnsembleData`-like object."""
    if isinstance(data, (str, Path)):
        from ..ensemble import load_ensemble

        return load_ensemble(data)
    need = ("data", "variables", "index", "dates", "sites", "lon", "statistics", "tendency_statistics", "space")
    missing = [k for k in need if not hasattr(data, k)]
    if missing:
        raise ValueError(f"expected an ensemble path or EnsembleData, got {type(data).__name__} without {missing}")
    return data


def time_features(dates, lon, dt: float) -> np.ndarray:
    """Seasonal and diurnal phase of each step: ``(T, S, 4)`` = sin/cos of the day of
    year and of the local solar time, both at the middle of ``[t, t + dt)``.

    dates : ``(T,)`` datetime64 (UTC) starts of the steps; lon : ``(S,)`` degrees east.
    """
    mid = pd.DatetimeIndex(dates) + pd.to_timedelta(dt / 2, unit="s")
    doy = (mid.dayofyear.values - 1 + (mid.hour.values + mid.minute.values / 60) / 24)[:, None]
    lst = (mid.hour.values + mid.minute.values / 60)[:, None] + np.asarray(lon, dtype=float)[None, :] / 15.0
    a, b = 2 * math.pi * doy / 365.25, 2 * math.pi * lst / 24.0
    a = np.broadcast_to(a, b.shape)
    return np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=-1)


@dataclass
class Normaliser:
    """Standardisation constants, all as float64 numpy arrays ordered like the name lists.

    ``state_mean/std`` standardise the state input; ``tend_mean/std`` scale the predicted
    increments; ``forcing_*``, ``clim_*`` the other inputs; ``diag_*`` the diagnostics.
    Parameters are mapped to [-1, 1] through the ParameterSpace unit cube instead.
    """

    state_mean: np.ndarray
    state_std: np.ndarray
    tend_mean: np.ndarray
    tend_std: np.ndarray
    forcing_mean: np.ndarray
    forcing_std: np.ndarray
    clim_mean: np.ndarray
    clim_std: np.ndarray
    diag_mean: np.ndarray
    diag_std: np.ndarray
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items() if k != "extra"} | {"extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "Normaliser":
        return cls(**{k: (np.asarray(v, dtype=float) if k != "extra" else v) for k, v in d.items()})


def _floor(std, mean):
    """Standard deviations with a floor, so constant fields do not divide by zero."""
    std = np.asarray(std, dtype=float)
    return np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)


def forcing_transform(name: str, x):
    """The variable-wise transform applied before standardising (log for precipitation)."""
    if name in LOG_INPUTS:
        return torch.log1p(torch.clamp(x, min=0.0) / PRECIP_SCALE) if torch.is_tensor(x) else np.log1p(np.maximum(x, 0) / PRECIP_SCALE)
    return x


def normaliser_from(data, diagnostics=DIAGNOSTIC_NAMES) -> Normaliser:
    """Constants from an ensemble (:class:`ailand.ensemble.EnsembleData`-like object).

    State, clim and diagnostic constants come from the dataset's statistics; tendency
    constants from its tendency statistics. Forcing constants are computed after the
    log transform of precipitation (from the data themselves).
    """
    st, tend = data.statistics, data.tendency_statistics

    def pick(names, table, key):
        return np.array([table[n][key] for n in names], dtype=float)

    fm, fs = [], []
    for n in FORCING_NAMES:
        if n in LOG_INPUTS:
            x = forcing_transform(n, data.data[:, data.index[n], 0, :].astype(np.float64))
            fm.append(float(x.mean()))
            fs.append(float(x.std()))
        else:
            fm.append(st[n]["mean"])
            fs.append(st[n]["stdev"])
    sm, ss = pick(STATE_NAMES, st, "mean"), pick(STATE_NAMES, st, "stdev")
    tm, ts = pick(STATE_NAMES, tend, "mean"), pick(STATE_NAMES, tend, "stdev")
    cm, cs = pick(CLIM_NAMES, st, "mean"), pick(CLIM_NAMES, st, "stdev")
    dm, ds = pick(diagnostics, st, "mean"), pick(diagnostics, st, "stdev")
    fm, fs = np.array(fm), np.array(fs)
    # the states and diagnostics the training data spanned (the emulator's hard range)
    extra = {
        "state_min": pick(STATE_NAMES, st, "minimum").tolist(), "state_max": pick(STATE_NAMES, st, "maximum").tolist(),
        "diag_min": pick(diagnostics, st, "minimum").tolist(), "diag_max": pick(diagnostics, st, "maximum").tolist(),
    }
    return Normaliser(
        state_mean=sm, state_std=_floor(ss, sm), tend_mean=tm, tend_std=_floor(ts, tm),
        forcing_mean=fm, forcing_std=_floor(fs, fm), clim_mean=cm, clim_std=_floor(cs, cm),
        diag_mean=dm, diag_std=_floor(ds, dm), extra=extra,
    )
