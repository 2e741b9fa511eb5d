"""What every column model (physics or emulator) shares: parameter and state handling.

:class:`ColumnModel` holds the argument parsing behind the shared Model interface
``run(forcing, params=None, state0=None)``, so that :class:`ailand.ToyEcLand` and
:class:`ailand.Emulator` accept exactly the same ``params`` and ``state0`` forms.
Subclasses set ``space`` (a :class:`ParameterSpace`), ``dtype`` and ``device``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from .arrays import to_numpy
from .params import ParameterSpace


def freq_seconds(freq) -> float:
    """'1h', '6h', '1D', a Timedelta or seconds -> seconds."""
    if isinstance(freq, (int, float)):
        return float(freq)
    try:
        return pd.Timedelta(freq).total_seconds()
    except ValueError:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds()


class ColumnModel:
    """Mixin: tensors, parameters and initial states in the forms ``run`` accepts."""

    space: ParameterSpace
    dtype: torch.dtype
    device: torch.device
    dt: float

    def tensor(self, x) -> torch.Tensor:
        """Array-like -> tensor of the model's dtype and device (tensors keep their graph)."""
        if not torch.is_tensor(x):
            x = np.asarray(x)
            x = x if x.flags.writeable else x.copy()
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def param_tensors(self, values: Mapping[str, object] | None = None) -> dict[str, torch.Tensor]:
        """All parameters as tensors: ``values`` (tensors keep their graph) over the defaults."""
        values = dict(values or {})
        unknown = [k for k in values if k not in self.space]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid names are: {', '.join(self.space.names)}")
        out = {}
        for name, default in self.space.defaults.items():
            v = values.get(name, default)
            out[name] = v.to(self.dtype) if torch.is_tensor(v) else self.tensor(v)
        return out

    def _params_from(self, params) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
        """User params -> (tensors shaped (M, 1) or scalars, member coordinate or None).

        ``params``: None (defaults), a dict ``{name: value or length-M array}``, or a
        DataArray ``(member, parameter)`` / ``(parameter,)``.
        """
        if params is None:
            return self.param_tensors(), None
        if isinstance(params, xr.DataArray):
            if "parameter" not in params.dims:
                raise ValueError("params DataArray needs a 'parameter' dimension (and optionally 'member')")
            da = params if "member" in params.dims else params.expand_dims(member=[0])
            da = da.transpose("member", "parameter")
            values = {str(n): da.sel(parameter=n).values.astype(float) for n in da["parameter"].values}
            self.space.check(values)
            members = da["member"].values
            return self.param_tensors({k: v[:, None] for k, v in values.items()}), members
        if isinstance(params, Mapping):
            values = {k: to_numpy(v, name=f"params[{k!r}]") for k, v in params.items()}
            self.space.check(values)
            lens = {v.size for v in values.values() if v.ndim > 0}
            if not lens:
                return self.param_tensors({k: float(v) for k, v in values.items()}), None
            if len(lens) > 1:
                raise ValueError(f"params arrays must share one length (members), got lengths {sorted(lens)}")
            m = lens.pop()
            full = {k: (np.broadcast_to(v.reshape(-1), (m,)) if v.ndim else np.full(m, float(v)))[:, None] for k, v in values.items()}
            return self.param_tensors(full), np.arange(m)
        raise ValueError("params must be None, a dict {name: value(s)}, or a DataArray (member, parameter)")

    def _named_state_from(self, state0, names, batch_shape, optional=("wsn",)) -> dict[str, torch.Tensor]:
        """``state0`` (Dataset over ``site``/``member``, or dict of arrays/tensors, with layer
        names ``swvl1..4``/``stl1..4`` or stacked ``swvl``/``stl`` ``(..., 4)``) -> named tensors
        broadcast to ``batch_shape``; ``optional`` names default to zero."""
        if isinstance(state0, xr.Dataset):
            dims = [d for d in ("member", "site") if d in state0.dims]
            named = {k: self.tensor(state0[k].transpose(*dims).values) for k in names if k in state0}
        elif isinstance(state0, Mapping):
            named = {}
            for k, v in state0.items():
                if k in ("swvl", "stl"):
                    t = self.tensor(v)
                    named.update({f"{k}{i + 1}": t[..., i] for i in range(4)})
                else:
                    named[k] = self.tensor(v)
        else:
            raise ValueError("state0 must be None, an xarray Dataset or a dict of state variables")
        missing = [k for k in names if k not in named and k not in optional]
        if missing:
            raise ValueError(f"state0 lacks {missing}; it needs {list(names)}")
        zeros = torch.zeros(batch_shape, dtype=self.dtype, device=self.device)
        return {k: (named[k] + zeros) if k in named else zeros.clone() for k in names}

    def spinup(self, forcing, params, static, years: int, state0=None, progress=False) -> dict:
        """Repeat the first year of ``forcing`` (tensors from ``prepare``) ``years`` times
        without gradient, starting from ``state0``; returns the state. Uses the subclass's
        ``simulate`` and step ``dt`` [s]."""
        n_year = min(forcing["Tair"].shape[0], int(round(365 * 86400 / self.dt)))
        first = {k: v[:n_year] for k, v in forcing.items()}
        with torch.no_grad():
            p = {k: v.detach() for k, v in params.items()}
            state = state0
            for _ in range(years):
                _, state = self.simulate(first, p, static, state, outputs=[], progress=progress)
        return {k: v.detach() for k, v in state.items()}
