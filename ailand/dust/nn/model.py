"""Neural-network dust emission models: the seed's network, the source mask, a zero-aware hurdle.

Every model is a :class:`torch.nn.Module` from **physical predictors** ``x (B, d)`` (the
columns of :data:`~ailand.dust.nn.predictors.PREDICTORS`, in the model's ``names`` order and
units) to the **emission** ``(B,)`` [kg m-2 s-1]; normalisation, back-transform, mask and gate
are inside, so the exported ONNX graph takes and gives physical values.

Target transforms (``E_scale`` = the largest training emission, ``eps`` = :data:`LOG_EPS`):

* ``"linear"`` (seed v1): y = E / E_scale (in [0, 1], min-max normalised);
* ``"log"`` (seed v2): y = (ln(E / E_scale + eps) - ln eps) / (ln(1 + eps) - ln eps), in [0, 1]
  ("log of the normalised emission": fewer weight on the many small values).

The inverse is clipped to [0, E_scale] (an emission is never negative; y is min-max
normalised, so y > 1 is outside the training range). The **log space** of the scores
is the same ln(E / E_scale + eps): emissions below ~eps E_scale count as zero.

Models
------
* :class:`EmissionNet` - the seed's network: feed-forward [256, 256, 256], GeLU, dropout 0.2,
  min-max normalised inputs, one continuous output. It knows nothing about null emissions.
* :class:`SourceMasked` - any model times the seed's mask 1[S > 0] (dust source function):
  takes one more column, ``dust_source`` [-], last.
* :class:`HurdleEmissionNet` - **our zero-aware model**: a *physical gate* (exactly 0 where the
  dust scheme's physics forbids emission, from the predictors alone, see :class:`PhysicalGate`;
  with the dust source function S as a 16th column - the static map the seed's mask uses - also
  where S = 0)
  x a *classifier* ("emits at all", logit >= ``logit_threshold``) x a *regressor* of how much
  (log target, trained on emitting rows only). The classifier threshold is chosen on the
  validation set (minimum log-space RMSE, :func:`ailand.dust.nn.train.fit_zero_aware`).
  Its output is exactly 0 wherever the gate or the classifier says no.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .predictors import predictor_units

__all__ = ["LOG_EPS", "FeedForward", "Normalisation", "TargetTransform", "EmissionNet", "SourceMasked",
           "PhysicalGate", "HurdleEmissionNet", "GATE_RULES", "save_model", "load_model"]

LOG_EPS = 1e-5
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class FeedForward(nn.Sequential):
    """``(B, n_in) -> (B, n_out)``: [Linear, activation, Dropout] per hidden layer, then Linear."""

    def __init__(self, n_in: int, hidden: Sequence[int] = (256, 256, 256), n_out: int = 1, activation: str = "gelu",
                 dropout: float = 0.2):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        layers, k = [], n_in
        for h in hidden:
            layers += [nn.Linear(k, int(h)), ACTIVATIONS[activation](), nn.Dropout(float(dropout))]
            k = int(h)
        layers.append(nn.Linear(k, n_out))
        super().__init__(*layers)


class Normalisation(nn.Module):
    """z = (x - a) / b: ``"minmax"`` (a = min, b = max - min; the seed's choice, the predictors
    are not Gaussian) or ``"zscore"`` (a = mean, b = std), from the training rows."""

    def __init__(self, a, b, kind: str = "minmax"):
        super().__init__()
        self.kind = kind
        self.register_buffer("a", torch.as_tensor(np.asarray(a, dtype=np.float32)))
        self.register_buffer("b", torch.as_tensor(np.asarray(b, dtype=np.float32)))

    @classmethod
    def fit(cls, X: np.ndarray, kind: str = "minmax") -> "Normalisation":
        if kind == "minmax":
            a, b = X.min(0), X.max(0) - X.min(0)
        elif kind == "zscore":
            a, b = X.mean(0), X.std(0)
        else:
            raise ValueError(f"normalisation must be 'minmax' or 'zscore', got {kind!r}")
        return cls(a, np.where(b > 0, b, 1.0), kind)

    def forward(self, x):
        return (x - self.a) / self.b


class TargetTransform(nn.Module):
    """Emission [kg m-2 s-1] <-> network target y (see the module docstring)."""

    def __init__(self, kind: str, scale: float, eps: float = LOG_EPS):
        super().__init__()
        if kind not in ("linear", "log"):
            raise ValueError(f"target must be 'linear' (v1) or 'log' (v2), got {kind!r}")
        if not scale > 0:
            raise ValueError(f"the emission scale must be > 0 (the training target is all zero?), got {scale}")
        self.kind, self.scale, self.eps = kind, float(scale), float(eps)
        self.lo, self.span = float(np.log(eps)), float(np.log1p(eps) - np.log(eps))

    def forward(self, E):
        if self.kind == "linear":
            return E / self.scale
        return (torch.log(E / self.scale + self.eps) - self.lo) / self.span

    def inverse(self, y):
        """Emission [kg m-2 s-1] of a target ``y``, clipped to the training range [0, E_scale]
        (y <= 1; the min-max target's range), so an output never exceeds the largest training emission."""
        y = torch.clamp(y, max=1.0)
        if self.kind == "linear":
            return torch.relu(y * self.scale)
        return torch.relu(self.scale * (torch.exp(y * self.span + self.lo) - self.eps))


def log_space(E, scale: float, eps: float = LOG_EPS):
    """ln(E / scale + eps): the log space of the scores (numpy or torch)."""
    if torch.is_tensor(E):
        return torch.log(E / scale + eps)
    return np.log(np.asarray(E, dtype=float) / scale + eps)


class EmissionNet(nn.Module):
    """The seed's network: physical predictors ``(B, d)`` -> emission ``(B,)`` [kg m-2 s-1]."""

    kind = "seed"

    def __init__(self, names: Sequence[str], norm: Normalisation, target: TargetTransform,
                 hidden=(256, 256, 256), activation="gelu", dropout=0.2):
        super().__init__()
        self.names, self.units = list(names), predictor_units(names)
        self.norm, self.target = norm, target
        self.hidden, self.activation, self.dropout = [int(h) for h in hidden], activation, float(dropout)
        self.net = FeedForward(len(names), hidden, 1, activation, dropout)

    def raw(self, x):
        """The network's output in target space ``(B,)``."""
        return self.net(self.norm(x))[:, 0]

    def forward(self, x):
        return self.target.inverse(self.raw(x))

    def spec(self) -> dict:
        return {"names": self.names, "hidden": self.hidden, "activation": self.activation, "dropout": self.dropout,
                "norm_kind": self.norm.kind, "target_kind": self.target.kind, "scale": self.target.scale,
                "eps": self.target.eps, "d": len(self.names)}


class SourceMasked(nn.Module):
    """``base`` x 1[S > 0]: input ``(B, d + 1)`` = the base model's predictors, then ``dust_source`` [-]."""

    kind = "masked"

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.names, self.units = list(base.names) + ["dust_source"], list(base.units) + ["-"]

    def forward(self, x):
        e = self.base(x[:, :-1])
        return torch.where(x[:, -1] > 0, e, torch.zeros_like(e))


#: the gate's rules: (predictor(s), condition for "no emission", dust parameter) - see PhysicalGate
GATE_RULES = (
    ("friction_velocity <= threshold_velocity", "wind below threshold", None),
    ("soil_moisture >= SM_MAX", "wet soil", "SM_MAX"),
    ("snow_depth >= SNOW_COVER_SWE", "full snow cover (snowc = min(1, sd / 15 kg m-2) = 1)", None),
    ("(1 - bare_soil_fraction) min(1, lai / LAI_FULL) >= VEG_MAX", "full vegetation", "VEG_MAX"),
    ("roughness_length >= Z0A_MAX", "surface too rough", "Z0A_MAX"),
    ("dust_source <= 0 (when the model has the column)", "not a source (f_erod is proportional to S)", None),
)


class PhysicalGate(nn.Module):
    """1 where the dust scheme's physics allows emission, 0 where it forbids it (bool ``(B,)``).

    Forbidden (each exactly as in :func:`ailand.dust.dust_emission`): soil friction velocity
    at or below the threshold; top-layer soil water >= SM_MAX; snow water equivalent >= 15 kg
    m-2 (= 0.015 m, full snow cover); vegetation cover cveg min(1, LAI / LAI_FULL) >= VEG_MAX
    (cveg = 1 - bare_soil_fraction); aeolian roughness >= Z0A_MAX; and, when the model has a
    ``dust_source`` column, S = 0 (the scheme's erodible fraction is proportional to S).
    Thresholds are the dust parameter table's defaults (or ``params``). The gate needs the
    predictors ``friction_velocity, threshold_velocity, soil_moisture, snow_depth,
    bare_soil_fraction, lai, roughness_length``.
    """

    NEEDS = ("friction_velocity", "threshold_velocity", "soil_moisture", "snow_depth", "bare_soil_fraction", "lai",
             "roughness_length")

    def __init__(self, names: Sequence[str], params: Mapping | None = None):
        super().__init__()
        from ...physics import constants as c
        from ..emission import dust_parameter_space

        missing = [n for n in self.NEEDS if n not in names]
        if missing:
            raise ValueError(f"the physical gate needs predictor(s) {missing}")
        p = dict(dust_parameter_space().defaults)
        p.update(params or {})
        self.idx = {n: list(names).index(n) for n in self.NEEDS}
        self.source_idx = list(names).index("dust_source") if "dust_source" in names else None
        self.thresholds = {"SM_MAX": float(p["SM_MAX"]), "VEG_MAX": float(p["VEG_MAX"]), "LAI_FULL": float(p["LAI_FULL"]),
                           "Z0A_MAX": float(p["Z0A_MAX"]), "SNOW_FULL_M": float(c.SNOW_COVER_SWE) / 1000.0}

    def forward(self, x):
        col = lambda n: x[:, self.idx[n]]  # noqa: E731
        t = self.thresholds
        f_veg = (1.0 - col("bare_soil_fraction")) * torch.clamp(col("lai") / t["LAI_FULL"], max=1.0)
        on = ((col("friction_velocity") > col("threshold_velocity")) & (col("soil_moisture") < t["SM_MAX"])
              & (col("snow_depth") < t["SNOW_FULL_M"]) & (f_veg < t["VEG_MAX"])
              & (col("roughness_length") < t["Z0A_MAX"]))
        if self.source_idx is not None:
            on = on & (x[:, self.source_idx] > 0)
        return on


class HurdleEmissionNet(nn.Module):
    """Zero-aware emission: gate(x) x 1[classifier logit >= logit_threshold] x regressor amount.

    classifier, regressor : :class:`FeedForward` on the normalised predictors (logit of
    "emits at all"; log target y of the amount). ``gate`` : :class:`PhysicalGate` or None.
    ``logit_threshold`` (buffer): ln(tau / (1 - tau)) of the probability threshold tau.
    ``mass_factor`` (buffer, default 1): a constant factor on the amount; a regression in log
    space predicts a median, not a mean, and so under-predicts the emitted mass (Duan's
    smearing problem); :func:`~ailand.dust.nn.train.fit_zero_aware` with ``mass_correction``
    sets it to sum(E_val) / sum(E_model,val) on the validation rows.
    """

    kind = "hurdle"

    def __init__(self, names: Sequence[str], norm: Normalisation, target: TargetTransform, hidden=(256, 256, 256),
                 activation="gelu", dropout=0.2, gate: bool = True, tau: float = 0.5, gate_params: Mapping | None = None):
        super().__init__()
        if target.kind != "log":
            raise ValueError("the hurdle regressor uses the log target")
        self.names, self.units = list(names), predictor_units(names)
        self.norm, self.target = norm, target
        self.hidden, self.activation, self.dropout = [int(h) for h in hidden], activation, float(dropout)
        self.classifier = FeedForward(len(names), hidden, 1, activation, dropout)
        self.regressor = FeedForward(len(names), hidden, 1, activation, dropout)
        self.gate = PhysicalGate(names, gate_params) if gate else None
        self.gate_params = dict(gate_params or {})
        self.register_buffer("logit_threshold", torch.tensor(0.0))
        self.register_buffer("mass_factor", torch.tensor(1.0))
        self.set_tau(tau)

    @property
    def tau(self) -> float:
        return float(torch.sigmoid(self.logit_threshold))

    def set_tau(self, tau: float):
        if not 0 < tau < 1:
            raise ValueError(f"tau must be in (0, 1), got {tau}")
        self.logit_threshold.fill_(float(np.log(tau / (1 - tau))))

    def logit(self, x):
        return self.classifier(self.norm(x))[:, 0]

    def raw(self, x):
        return self.regressor(self.norm(x))[:, 0]

    def amount(self, x):
        """The regressor's emission where it emits [kg m-2 s-1] ``(B,)`` (times ``mass_factor``)."""
        return self.target.inverse(self.raw(x)) * self.mass_factor

    def forward(self, x):
        z = self.norm(x)
        on = self.classifier(z)[:, 0] >= self.logit_threshold
        if self.gate is not None:
            on = on & self.gate(x)
        e = self.target.inverse(self.regressor(z)[:, 0]) * self.mass_factor
        return torch.where(on, e, torch.zeros_like(e))

    def spec(self) -> dict:
        return {"names": self.names, "hidden": self.hidden, "activation": self.activation, "dropout": self.dropout,
                "norm_kind": self.norm.kind, "target_kind": "log", "scale": self.target.scale, "eps": self.target.eps,
                "gate": self.gate is not None, "gate_params": self.gate_params, "d": len(self.names)}


def _build(kind: str, spec: dict) -> nn.Module:
    d = spec["d"]
    norm = Normalisation(np.zeros(d), np.ones(d), spec["norm_kind"])
    tgt = TargetTransform(spec["target_kind"], spec["scale"], spec["eps"])
    if kind == "seed":
        return EmissionNet(spec["names"], norm, tgt, spec["hidden"], spec["activation"], spec["dropout"])
    if kind == "hurdle":
        return HurdleEmissionNet(spec["names"], norm, tgt, spec["hidden"], spec["activation"], spec["dropout"],
                                 spec["gate"], 0.5, spec["gate_params"])
    raise ValueError(f"unknown model kind {kind!r}")


def save_model(model: nn.Module, path, info: Mapping | None = None):
    """Save a model (its kind, spec, weights and buffers, optional ``info``) to ``path`` (.pt)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masked = isinstance(model, SourceMasked)
    base = model.base if masked else model
    torch.save({"kind": base.kind, "masked": masked, "spec": base.spec(), "state": base.state_dict(),
                "info": dict(info or {})}, path)
    return path


def load_model(path) -> nn.Module:
    """A model saved by :func:`save_model`, in eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    m = _build(blob["kind"], blob["spec"])
    m.load_state_dict(blob["state"])
    m.info = blob.get("info", {})
    m = SourceMasked(m) if blob["masked"] else m
    return m.eval()
