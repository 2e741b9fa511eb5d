"""ParameterSpace: the ordered, bounded, unit-carrying set of model parameters.

A control vector is always a vector of physical values in ``space.names`` order.
The unit cube maps linearly (``scale="linear"``) or log-linearly (``scale="log"``)
onto ``[min, max]`` of each parameter, so designs drawn in the cube are uniform in
the physical or the log space respectively.

Constraints are strict orderings between two parameters (``THETA_PWP < THETA_CAP``);
they are read from the ``must_be_below`` column of ``data/parameters.csv`` or given to
the constructor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .arrays import to_numpy

DATA_DIR = Path(__file__).resolve().parent / "data"  # a link to the repository's data/ (copied into wheels)
PARAMETER_TABLE = DATA_DIR / "parameters.csv"

_COLUMNS = ["name", "default", "min", "max", "unit", "group", "scale", "definition"]


@dataclass(frozen=True)
class ParameterSpace:
    """Ordered parameters with defaults, bounds, units, scales and constraints.

    Build it from the ecLand-like table with :meth:`default`, from a dict with
    :meth:`from_dict`, or from a DataFrame with the columns of ``data/parameters.csv``.

    Attributes
    ----------
    table : pandas.DataFrame indexed by parameter name, columns
        ``default, min, max, unit, group, scale, definition``.
    constraints : tuple of ``(lower, upper)`` name pairs meaning ``lower < upper``.
    """

    table: pd.DataFrame
    constraints: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        t = self.table
        missing = [c for c in ("default", "min", "max") if c not in t.columns]
        if missing:
            raise ValueError(f"parameter table lacks columns {missing}")
        t = t.copy()
        for col, fill in (("unit", "-"), ("group", ""), ("scale", "linear"), ("definition", "")):
            if col not in t.columns:
                t[col] = fill
            t[col] = t[col].fillna(fill)
        t["default"] = t["default"].astype(float)
        t["min"] = t["min"].astype(float)
        t["max"] = t["max"].astype(float)
        for name, row in t.iterrows():
            if not row["min"] < row["max"]:
                raise ValueError(f"parameter {name}: min {row['min']} must be < max {row['max']}")
            if not row["min"] <= row["default"] <= row["max"]:
                raise ValueError(
                    f"parameter {name}: default {row['default']} outside [{row['min']}, {row['max']}]"
                )
            if row["scale"] not in ("linear", "log"):
                raise ValueError(f"parameter {name}: scale must be 'linear' or 'log', got {row['scale']!r}")
            if row["scale"] == "log" and row["min"] <= 0:
                raise ValueError(f"parameter {name}: log scale needs min > 0, got {row['min']}")
        names = list(t.index)
        cons = []
        for lo, hi in self.constraints:
            if lo in names and hi in names:
                cons.append((lo, hi))
        object.__setattr__(self, "table", t[["default", "min", "max", "unit", "group", "scale", "definition"]])
        object.__setattr__(self, "constraints", tuple(cons))
        self.check(self.defaults, what="defaults")

    # ------------------------------------------------------------------ builders
    @classmethod
    def default(cls, path: str | Path | None = None) -> "ParameterSpace":
        """The toy ecLand parameter table (``data/parameters.csv``) or another CSV of that shape."""
        df = pd.read_csv(path or PARAMETER_TABLE)
        df = df.set_index("name")
        cons = []
        if "must_be_below" in df.columns:
            for name, other in df["must_be_below"].items():
                if isinstance(other, str) and other.strip():
                    cons.append((name, other.strip()))
        return cls(df.drop(columns=[c for c in df.columns if c == "must_be_below"]), tuple(cons))

    @classmethod
    def from_dict(
        cls,
        spec: Mapping[str, Sequence[float] | Mapping],
        constraints: Iterable[tuple[str, str]] = (),
    ) -> "ParameterSpace":
        """User-defined space: ``{name: (min, max)}`` or ``(min, max, default)`` or a dict of columns.

        >>> ParameterSpace.from_dict({"x1": (-3.14, 3.14), "x2": (1e-3, 1.0, 0.1)}).names
        ['x1', 'x2']
        """
        rows = {}
        for name, v in spec.items():
            if isinstance(v, Mapping):
                row = dict(v)
                row.setdefault("default", 0.5 * (row["min"] + row["max"]))
            else:
                v = tuple(v)
                if len(v) not in (2, 3):
                    raise ValueError(f"parameter {name}: give (min, max) or (min, max, default), got {v}")
                row = {"min": v[0], "max": v[1], "default": v[2] if len(v) == 3 else 0.5 * (v[0] + v[1])}
            rows[name] = row
        return cls(pd.DataFrame.from_dict(rows, orient="index"), tuple(constraints))

    def to_json(self) -> str:
        """The whole space (table and constraints) as a JSON string; see :meth:`from_json`."""
        import json

        return json.dumps({"table": json.loads(self.table.to_json(orient="index")), "constraints": [list(c) for c in self.constraints]})

    @classmethod
    def from_json(cls, text: str) -> "ParameterSpace":
        """Rebuild a space written by :meth:`to_json` (same names, order, bounds, constraints)."""
        import json

        d = json.loads(text) if isinstance(text, str) else dict(text)
        table = pd.DataFrame.from_dict(d["table"], orient="index")
        return cls(table.loc[list(d["table"])], tuple(tuple(c) for c in d["constraints"]))

    def subset(self, names: Iterable[str]) -> "ParameterSpace":
        """A space with only ``names`` (in the order given); constraints between kept names stay."""
        names = list(names)
        self._check_names(names)
        return ParameterSpace(self.table.loc[names], self.constraints)

    # ---------------------------------------------------------------- properties
    @property
    def names(self) -> list[str]:
        return list(self.table.index)

    @property
    def defaults(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.table["default"].items()}

    @property
    def default_vector(self) -> np.ndarray:
        """Defaults as a ``(d,)`` array in ``names`` order."""
        return self.table["default"].to_numpy(dtype=float)

    @property
    def bounds(self) -> np.ndarray:
        """``(d, 2)`` array of ``[min, max]`` in ``names`` order."""
        return self.table[["min", "max"]].to_numpy(dtype=float)

    @property
    def units(self) -> dict[str, str]:
        return dict(self.table["unit"])

    @property
    def scales(self) -> dict[str, str]:
        return dict(self.table["scale"])

    @property
    def is_log(self) -> np.ndarray:
        return (self.table["scale"] == "log").to_numpy()

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name) -> bool:
        return name in self.table.index

    def __repr__(self) -> str:
        body = self.table[["default", "min", "max", "unit", "scale"]].to_string()
        cons = ", ".join(f"{a} < {b}" for a, b in self.constraints) or "none"
        return f"ParameterSpace({len(self)} parameters; constraints: {cons})\n{body}"

    # ------------------------------------------------------------ unit-cube maps
    def _lo_hi(self, like):
        lo, hi = self.bounds[:, 0].copy(), self.bounds[:, 1].copy()
        log = self.is_log
        lo[log], hi[log] = np.log(lo[log]), np.log(hi[log])
        return _as_like(lo, like), _as_like(hi, like), _as_like(log, like)

    def to_unit(self, x):
        """Physical values ``(..., d)`` -> unit cube ``(..., d)`` (log-scale aware).

        Works on numpy arrays, torch tensors (differentiably) and DataArrays whose
        last dimension is ``parameter``.
        """
        if isinstance(x, xr.DataArray):
            return x.copy(data=self.to_unit(x.transpose(..., "parameter").values)).transpose(*x.dims)
        lo, hi, log = self._lo_hi(x)
        z = _where(log, _log(_clip_pos(x)), x)
        return (z - lo) / (hi - lo)

    def from_unit(self, u):
        """Unit cube ``(..., d)`` -> physical values ``(..., d)`` (log-scale aware, differentiable)."""
        if isinstance(u, xr.DataArray):
            return u.copy(data=self.from_unit(u.transpose(..., "parameter").values)).transpose(*u.dims)
        lo, hi, log = self._lo_hi(u)
        z = lo + u * (hi - lo)
        return _where(log, _exp(z), z)

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, method: str = "lhs", seed: int | None = 0) -> xr.DataArray:
        """``n`` parameter sets as a DataArray ``(member, parameter)`` in physical units.

        ``method``: ``"lhs"`` (Latin hypercube), ``"sobol"`` (scrambled Sobol'), or
        ``"uniform"`` (independent uniform), all in the unit cube (so log-scale
        parameters are log-uniform). Constraints are enforced by rejection: points
        that violate a constraint are dropped and more points of the same generator
        are drawn until ``n`` are valid (the design then is only approximately a Latin
        hypercube / low-discrepancy within the feasible region).
        """
        from scipy.stats import qmc
        import warnings

        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        n = int(n)
        d = len(self)
        rng = np.random.default_rng(seed)
        if method == "lhs":
            gen = lambda m: qmc.LatinHypercube(d, seed=rng).random(m)  # noqa: E731
        elif method == "sobol":
            sob = qmc.Sobol(d, scramble=True, seed=rng)

            def gen(m):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # balance-property warning for non-powers of two
                    return sob.random(m)
        elif method == "uniform":
            gen = lambda m: rng.random((m, d))  # noqa: E731
        else:
            raise ValueError(f"method must be 'lhs', 'sobol' or 'uniform', got {method!r}")

        accepted = []
        total = 0
        for _ in range(200):
            m = n if not accepted else max(n - total, 1) * 4
            u = gen(m if method != "lhs" else max(m, n))
            ok = self.feasible(self.from_unit(u))
            accepted.append(u[ok])
            total += int(ok.sum())
            if total >= n:
                break
        else:
            raise RuntimeError("could not draw enough points that satisfy the constraints")
        u = np.concatenate(accepted)[:n]
        return self.to_dataarray(self.from_unit(u), attrs={"method": method, "seed": str(seed)})

    def feasible(self, x) -> np.ndarray:
        """Boolean ``(n,)``: rows of ``(n, d)`` inside the bounds and satisfying every constraint."""
        x = np.atleast_2d(np.asarray(x, dtype=float))
        b = self.bounds
        tol = 1e-12 * np.maximum(1.0, np.abs(b))
        ok = np.all((x >= b[:, 0] - tol[:, 0]) & (x <= b[:, 1] + tol[:, 1]), axis=-1)
        idx = {n: i for i, n in enumerate(self.names)}
        for lo, hi in self.constraints:
            ok &= x[:, idx[lo]] < x[:, idx[hi]]
        return ok

    # -------------------------------------------------------------- validation
    def _check_names(self, names: Iterable[str]):
        unknown = [n for n in names if n not in self.table.index]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid names are: {', '.join(self.names)}")

    def check(self, values: Mapping[str, float], what: str = "parameters") -> None:
        """Raise ``ValueError`` for unknown names, values outside bounds or violated constraints.

        ``values`` maps names to scalars or arrays (all members are checked).
        """
        self._check_names(values.keys())
        for name, v in values.items():
            v = np.asarray(_to_numpy(v), dtype=float)
            lo, hi = self.table.loc[name, ["min", "max"]]
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{what}: {name} is not finite")
            tol = 1e-9 * max(abs(lo), abs(hi))
            if np.any(v < lo - tol) or np.any(v > hi + tol):
                bad = v[(v < lo - tol) | (v > hi + tol)].ravel()[0]
                raise ValueError(
                    f"{what}: {name} = {bad:g} is outside its bounds [{lo:g}, {hi:g}] {self.table.loc[name, 'unit']}"
                )
        full = {**self.defaults, **{k: _to_numpy(v) for k, v in values.items()}}
        for lo, hi in self.constraints:
            a, b = np.asarray(full[lo], dtype=float), np.asarray(full[hi], dtype=float)
            if np.any(a >= b):
                raise ValueError(
                    f"{what}: {lo} must stay below {hi}, got {lo} = {np.ravel(a)[np.argmax(np.ravel(a >= b))]:g} "
                    f">= {hi} = {np.ravel(b)[np.argmax(np.ravel(a >= b))]:g}"
                )

    # --------------------------------------------------------------- conversion
    def to_dataarray(self, x, attrs: Mapping | None = None) -> xr.DataArray:
        """Wrap an ``(n, d)`` array of physical values as DataArray ``(member, parameter)``."""
        x = np.atleast_2d(np.asarray(_to_numpy(x), dtype=float))
        if x.shape[-1] != len(self):
            raise ValueError(f"expected {len(self)} columns ({self.names}), got shape {x.shape}")
        da = xr.DataArray(
            x,
            dims=("member", "parameter"),
            coords={
                "member": np.arange(x.shape[0]),
                "parameter": self.names,
                "unit": ("parameter", [self.units[n] for n in self.names]),
            },
            name="parameters",
            attrs={"long_name": "parameter values (physical units, see coordinate 'unit')", **(attrs or {})},
        )
        return da

    def to_salib(self) -> dict:
        """SALib problem dict; log-scale parameters use SALib's ``logunif`` distribution."""
        return {
            "num_vars": len(self),
            "names": self.names,
            "bounds": self.bounds.tolist(),
            "dists": ["logunif" if s == "log" else "unif" for s in self.table["scale"]],
        }

    def complete(self, values: Mapping[str, float] | None = None) -> dict[str, float]:
        """Defaults overridden by ``values`` (checked)."""
        values = dict(values or {})
        self.check(values)
        return {**self.defaults, **values}


# ---------------------------------------------------------------- array helpers
def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x):
    if _is_torch(x) or isinstance(x, xr.DataArray):
        return to_numpy(x, dtype=None)
    return x


def _as_like(a: np.ndarray, like):
    if _is_torch(like):
        import torch

        if a.dtype == bool:
            return torch.as_tensor(a, device=like.device)
        return torch.as_tensor(a, dtype=like.dtype, device=like.device)
    return a


def _where(c, a, b):
    if _is_torch(a):
        import torch

        return torch.where(c, a, b)
    return np.where(c, a, b)


def _log(x):
    if _is_torch(x):
        return x.log()
    return np.log(x)


def _exp(x):
    if _is_torch(x):
        return x.exp()
    return np.exp(x)


def _clip_pos(x):
    if _is_torch(x):
        return x.clamp_min(1e-300)
    return np.maximum(np.asarray(x, dtype=float), 1e-300)
