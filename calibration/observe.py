"""Observation operator: model output -> a labelled observation vector.

``Observe(["Qle", "swvl1"], freq="1D")`` turns model output into block means over
``freq`` (e.g. daily means) of the chosen variables at the chosen sites, inside a
time ``window``. Every datum carries a label ``(variable, site, time)``, ``time`` being
the start of its averaging block, so that each entry of ``y``, of a residual or of a
posterior output spread can be traced back.

Time convention (the same as :func:`ailand.emulator.jacobian.rollout_sensitivity`): a
model output interval ``[t, t + dt)`` belongs to a block (and to the window) when its
*start* ``t`` does. Fluxes are interval means and states the values at the interval
ends, so the hourly physics and the 6-hourly emulator average over the same hours.
The observation vector is ordered variable-major, then site, then time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ailand.arrays import to_numpy
from ailand.interface import freq_seconds


@dataclass(frozen=True)
class Observe:
    """Block means of model output variables at sites, within a time window.

    Parameters
    ----------
    variables : output names (e.g. ``"Qle"``, ``["Qle", "swvl1"]``), in vector order.
    freq : averaging block (a pandas frequency: ``"1D"``, ``"6h"``, ``"7D"``...); None for
        one mean over the whole window.
    sites : site names to observe (default: every site of the forcing / output).
    window : time slice of interval starts, e.g. ``slice("2020-06-01", "2020-06-30")``;
        None for everything.

    An Observe is a specification; :meth:`bind` fixes it to a time axis and site list
    (a :class:`Forward` does this) and gives :attr:`labels`, :attr:`n_obs` and the
    tensor path ``observe(out)``. Called on an xarray Dataset from ``model.run`` it binds
    itself to that Dataset and returns a labelled DataArray.
    """

    variables: Sequence[str] | str
    freq: str | None = "1D"
    sites: Sequence[str] | str | None = None
    window: slice | None = None
    # filled by bind():
    _starts: pd.DatetimeIndex | None = field(default=None, repr=False, compare=False)
    _site_names: tuple | None = field(default=None, repr=False, compare=False)
    _site_index: np.ndarray | None = field(default=None, repr=False, compare=False)
    _weights: np.ndarray | None = field(default=None, repr=False, compare=False)  # (K, T)
    _blocks: pd.DatetimeIndex | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        v = [self.variables] if isinstance(self.variables, str) else list(self.variables)
        if not v:
            raise ValueError("Observe needs at least one variable, e.g. Observe(['Qle'])")
        object.__setattr__(self, "variables", tuple(v))
        if isinstance(self.sites, str):
            object.__setattr__(self, "sites", (self.sites,))
        elif self.sites is not None:
            object.__setattr__(self, "sites", tuple(self.sites))
        if self.window is not None and not isinstance(self.window, slice):
            raise ValueError(f"window must be a time slice, e.g. slice('2020-06-01', '2020-06-30'), got {self.window!r}")
        if self.freq is not None:
            freq_seconds(self.freq)  # raises for an unreadable frequency

    # ------------------------------------------------------------------ binding
    @property
    def bound(self) -> bool:
        return self._weights is not None

    def bind(self, starts, site_names) -> "Observe":
        """A copy fixed to model output intervals starting at ``starts`` (``T`` times) and
        to the output's ``site_names`` (``S``); computes the block-mean weights ``(K, T)``."""
        starts = pd.DatetimeIndex(starts)
        site_names = tuple(str(s) for s in np.atleast_1d(site_names))
        wanted = site_names if self.sites is None else self.sites
        unknown = [s for s in wanted if s not in site_names]
        if unknown:
            raise ValueError(f"Observe: site(s) {unknown} are not in the model output; it has {list(site_names)}")
        site_index = np.array([site_names.index(s) for s in wanted])
        pos = pd.Series(np.arange(len(starts)), index=starts)
        if self.window is not None:
            pos = pos.loc[self.window]
        if len(pos) == 0:
            raise ValueError(f"Observe: window {self.window} selects no model interval ({starts[0]} .. {starts[-1]})")
        groups = [(pos.index[0], pos)] if self.freq is None else [(k, g) for k, g in pos.resample(self.freq) if len(g)]
        W = np.zeros((len(groups), len(starts)))
        for k, (_, g) in enumerate(groups):
            W[k, g.to_numpy()] = 1.0 / len(g)
        blocks = pd.DatetimeIndex([k for k, _ in groups])
        return replace(self, _starts=starts, _site_names=site_names, _site_index=site_index, _weights=W, _blocks=blocks)

    def _need_bound(self):
        if not self.bound:
            raise ValueError(
                "this Observe is not bound to a time axis yet: use forward.observe (bound by Forward), "
                "observe.bind(interval_starts, site_names), or call it on a model output Dataset"
            )

    @property
    def n_steps(self) -> int:
        """Model intervals needed: the last one inside the window, plus one."""
        self._need_bound()
        return int(np.nonzero(self._weights.any(0))[0].max()) + 1

    @property
    def n_obs(self) -> int:
        """m = variables x sites x blocks."""
        self._need_bound()
        return len(self.variables) * len(self._site_index) * len(self._blocks)

    @property
    def labels(self) -> pd.MultiIndex:
        """``(variable, site, time)`` of each datum, in vector order (time = block start)."""
        self._need_bound()
        sites = [self._site_names[i] for i in self._site_index]
        return pd.MultiIndex.from_product([list(self.variables), sites, self._blocks], names=["variable", "site", "time"])

    def coords(self) -> dict:
        """Labels as plain coordinates on a dim ``obs`` (NetCDF-friendly, no MultiIndex)."""
        lab = self.labels
        return {
            "obs_variable": ("obs", lab.get_level_values("variable").astype(str).to_numpy()),
            "obs_site": ("obs", lab.get_level_values("site").astype(str).to_numpy()),
            "obs_time": ("obs", lab.get_level_values("time").to_numpy()),
        }

    def to_dataarray(self, y, name: str = "y") -> xr.DataArray:
        """An observation vector ``(m,)`` or batch ``(n, m)`` -> DataArray with dim ``obs`` (+ ``member``)."""
        y = to_numpy(y, name=name)
        if y.shape[-1] != self.n_obs:
            raise ValueError(f"expected {self.n_obs} observations (last axis), got shape {y.shape}")
        dims = ("obs",) if y.ndim == 1 else ("member", "obs")
        return xr.DataArray(y, dims=dims, coords=self.coords(), name=name,
                            attrs={"long_name": "observation vector: block means of " + ", ".join(self.variables),
                                   "freq": str(self.freq)})

    # -------------------------------------------------------------- operator
    def __call__(self, output):
        """Apply the operator.

        output : dict ``{variable: tensor (T, *B)}`` (``T`` >= :attr:`n_steps` model intervals,
            last batch dim = sites, e.g. ``B = (n, S)``) as from ``model.simulate`` -> tensor
            ``(*B[:-1], m)`` (differentiable); or an xarray Dataset from ``model.run`` ->
            DataArray ``([member,] obs)`` with the labels as coordinates.
        """
        if isinstance(output, xr.Dataset):
            return self._on_dataset(output)
        if not isinstance(output, Mapping):
            raise ValueError("Observe expects model output: a dict of tensors (T, *B) or an xarray Dataset")
        self._need_bound()
        missing = [v for v in self.variables if v not in output]
        if missing:
            raise ValueError(f"Observe: the model output lacks {missing}; it has {list(output)}")
        first = output[self.variables[0]]
        T = self.n_steps
        if first.shape[0] < T:
            raise ValueError(f"Observe needs {T} model intervals, got {first.shape[0]}")
        W = torch.as_tensor(self._weights[:, :T], dtype=first.dtype, device=first.device)  # (K, T)
        idx = torch.as_tensor(self._site_index, device=first.device)
        parts = []
        for v in self.variables:
            x = output[v][:T].index_select(-1, idx)  # (T, ..., S')
            ym = torch.einsum("kt,t...s->...sk", W, x)  # (..., S', K)
            parts.append(ym.reshape(*ym.shape[:-2], -1))
        return torch.cat(parts, dim=-1)

    def _on_dataset(self, ds: xr.Dataset) -> xr.DataArray:
        missing = [v for v in self.variables if v not in ds]
        if missing:
            raise ValueError(f"Observe: the Dataset lacks {missing}; it has {list(ds.data_vars)}")
        times = pd.DatetimeIndex(ds["time"].values)
        # `time` labels interval ends: step back one output interval to get the starts
        step = ds.attrs.get("output_freq")
        try:
            step = pd.Timedelta(seconds=freq_seconds(step))
        except (TypeError, ValueError):
            step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(seconds=float(ds.attrs.get("dt_seconds", 3600)))
        bound = self if self.bound else self.bind(times - step, ds["site"].values)
        dims = ("time", "member", "site") if "member" in ds.dims else ("time", "site")
        out = {v: torch.as_tensor(ds[v].transpose(*dims).values, dtype=torch.float64) for v in self.variables}
        return bound.to_dataarray(bound(out))
