"""ONNX export of an emission model for the host model (ECMWF's infero: one input, one output).

``to_onnx(model, path)`` writes ``predictors [batch, n_predictors] -> emission [batch, 1]``,
both physical (normalisation, back-transform and any mask or gate inside the graph), float32,
with the predictor names and units, the output units and the model kind in the
``metadata_props`` (JSON strings). :class:`OnnxEmission` reads them back and runs the file
with onnxruntime, checking the predictor names it is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...onnx_io import export_onnx
from .predictors import PREDICTOR_RANGES, TARGET_UNITS

__all__ = ["to_onnx", "OnnxEmission", "INPUT_NAME", "OUTPUT_NAME", "typical_rows"]

INPUT_NAME = "predictors"
OUTPUT_NAME = "emission"


class _Wrap(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, predictors):
        return self.model(predictors)[:, None]


def typical_rows(names: Sequence[str], n: int = 8, seed: int = 0) -> np.ndarray:
    """``(n, d)`` random valid inputs, uniform in :data:`PREDICTOR_RANGES` (wind up to 25 m s-1,
    friction velocities up to 1.5 m s-1, snow up to 0.05 m, precipitation up to 1e-3)."""
    cap = {"wind_speed": 25.0, "wind_gust": 40.0, "friction_velocity": 1.5, "threshold_velocity": 1.5, "orography_std": 800.0,
           "roughness_length": 0.01, "lai": 6.0, "soil_moisture": 0.45, "snow_depth": 0.05, "precipitation": 1e-3,
           "u_excess_cubed": 2.0, "air_density": 1.3}
    rng = np.random.default_rng(seed)
    cols = []
    for nm in names:
        lo, hi = (0.0, 1.0) if nm == "dust_source" else PREDICTOR_RANGES[nm]
        lo = 1.0 if nm == "air_density" else lo
        cols.append(rng.uniform(lo, cap.get(nm, hi), n))
    return np.stack(cols, 1)


def metadata(model) -> dict[str, str]:
    kind = getattr(model, "kind", "model")
    desc = (f"aiLand dust emission ({kind}): input '{INPUT_NAME}' [batch, {len(model.names)}] physical predictors in "
            f"the order and units of predictor_names / predictor_units; output '{OUTPUT_NAME}' [batch, 1] dust emission "
            f"flux per unit cell area [{TARGET_UNITS}]. Normalisation, back-transform, mask and physical gate inside.")
    meta = {"predictor_names": json.dumps(list(model.names)), "predictor_units": json.dumps(list(model.units)),
            "output_name": json.dumps(OUTPUT_NAME), "output_units": json.dumps(TARGET_UNITS),
            "model_kind": json.dumps(kind), "description": json.dumps(desc)}
    base = getattr(model, "base", model)
    if getattr(base, "gate", None) is not None:
        meta["gate_thresholds"] = json.dumps(base.gate.thresholds)
    if hasattr(base, "tau"):
        meta["classifier_tau"] = json.dumps(base.tau)
    return meta


def to_onnx(model: torch.nn.Module, path, opset: int = 18, check: bool = True) -> Path:
    """Export ``model`` (:class:`~ailand.dust.nn.model.EmissionNet`, ``SourceMasked``,
    ``HurdleEmissionNet``) to ``path``; one input ``predictors`` ``[batch, d]`` and one output
    ``emission`` ``[batch, 1]`` with a dynamic batch axis. Returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Wrap(model).eval().float()
    example = torch.as_tensor(typical_rows(model.names, 4), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1)
    proto = export_onnx(module, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                        dynamic_shapes={"predictors": {0: batch}}, opset=opset, metadata=metadata(model))
    if [i.name for i in proto.graph.input] != [INPUT_NAME] or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        raise RuntimeError(f"export produced inputs {[i.name for i in proto.graph.input]} and outputs "
                           f"{[o.name for o in proto.graph.output]}; expected one {INPUT_NAME!r} and one {OUTPUT_NAME!r}")
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


class OnnxEmission:
    """An exported emission model run with onnxruntime (one thread by default).

    ``names`` / ``units``: from the file's metadata. ``__call__(X (n, d))`` -> ``(n,)``
    [kg m-2 s-1] float64; ``X`` must be physical, in the order of ``names``.
    """

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k: json.loads(v) for k, v in meta.items()}
        self.names, self.units = self.meta["predictor_names"], self.meta["predictor_units"]

    def __repr__(self):
        return f"OnnxEmission({self.path.name}, {self.meta.get('model_kind')}, {len(self.names)} predictors)"

    def __call__(self, X, names: Sequence[str] | None = None) -> np.ndarray:
        if names is not None and list(names) != list(self.names):
            raise ValueError(f"predictor columns {list(names)} differ from the model's {self.names}")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.names):
            raise ValueError(f"input must be (n, {len(self.names)}) predictors {self.names}, got shape {X.shape}")
        return self.session.run(None, {INPUT_NAME: X})[0][:, 0].astype(np.float64)
