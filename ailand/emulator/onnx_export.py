"""ONNX export of the emulator step, for inference outside Python/torch.

``to_onnx(em, path)`` writes one step of the emulator (``Emulator.step_flat``) as an
ONNX graph with ONE input ``features`` ``[batch, n_features]`` and ONE output
``outputs`` ``[batch, n_outputs]``, both in physical units (normalisation, the network
and the hard bounds are all inside the graph). One input and one output node is what
ECMWF's infero ONNX backend expects. The variable names, units, the step length and
the ailand version travel in the model's ``metadata_props`` (JSON strings), so the
file is self-describing; :class:`OnnxEmulatorStep` reads them back and runs the model
with onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..arrays import to_numpy
from ..onnx_io import export_onnx

__all__ = ["to_onnx", "OnnxEmulatorStep", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "features"
OUTPUT_NAME = "outputs"
DEFAULT_OPSET = 18


class _Step(torch.nn.Module):
    """``features (B, n_in) -> outputs (B, n_out)``: the emulator step as a Module."""

    def __init__(self, em):
        super().__init__()
        self.em = em
        self.net = em.net  # registers the weights as parameters of this module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.em.step_flat(features)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ailand")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def metadata(em) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file (values are JSON strings)."""
    from .jacobian import input_units

    return {
        "input_names": json.dumps(list(em.input_names)),
        "input_units": json.dumps(input_units(em)),
        "output_names": json.dumps(list(em.output_names)),
        "output_units": json.dumps(list(em.output_units())),
        "dt_seconds": json.dumps(em.dt),
        "ailand_version": json.dumps(_version()),
        "description": json.dumps(
            f"aiLand emulator: one {em.dt:g} s step of the toy ecLand column. Input '{INPUT_NAME}' "
            f"[batch, {len(em.input_names)}] = state at t, forcing means over [t, t+dt), clim fields, "
            f"time features, parameters (physical units, order input_names); output '{OUTPUT_NAME}' "
            f"[batch, {len(em.output_names)}] = state at t+dt and diagnostics averaged over the step "
            "(physical units, order output_names)."
        ),
    }


def to_onnx(em, path, opset: int | None = None, check: bool = True) -> Path:
    """Export one emulator step to ONNX.

    Parameters
    ----------
    em : :class:`ailand.emulator.Emulator` (exported in its current dtype, normally float32).
    path : output ``.onnx`` file.
    opset : ONNX opset (default 18).
    check : run ``onnx.checker`` on the result.

    Returns the path. The graph has one input ``features`` ``[batch, n_in]`` and one
    output ``outputs`` ``[batch, n_out]`` with a dynamic batch axis; metadata as in
    :func:`metadata`.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    was_training = em.net.training
    module = _Step(em).eval()
    n_in = len(em.input_names)
    example = torch.zeros(4, n_in, dtype=em.dtype, device=em.device)
    example[:] = em.tensor(_typical_row(em))
    batch = torch.export.Dim("batch", min=1)
    try:
        model = export_onnx(module, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                            dynamic_shapes={"features": {0: batch}}, opset=opset, metadata=metadata(em))
    finally:
        em.net.train(was_training)
    if [i.name for i in model.graph.input] != [INPUT_NAME] or [o.name for o in model.graph.output] != [OUTPUT_NAME]:
        raise RuntimeError(
            f"export produced inputs {[i.name for i in model.graph.input]} and outputs "
            f"{[o.name for o in model.graph.output]}; expected one '{INPUT_NAME}' and one '{OUTPUT_NAME}'"
        )
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _typical_row(em) -> np.ndarray:
    """A plausible physical input row (normalisation means, default parameters) to trace with."""
    from .features import FORCING_NAMES, TIME_NAMES

    n = em.norm
    f = np.asarray(n.forcing_mean, dtype=float).copy()
    for i, name in enumerate(FORCING_NAMES):
        if name in ("Rainf", "Snowf"):
            f[i] = 1e-5
    return np.concatenate(
        [n.state_mean, f, n.clim_mean, np.full(len(TIME_NAMES), 0.5), em.space.default_vector]
    ).astype(float)


class OnnxEmulatorStep:
    """Run an exported emulator step with onnxruntime.

    ``step = OnnxEmulatorStep("emulator.onnx"); y = step(x)`` with ``x`` ``(B, n_in)``
    physical inputs ordered as ``step.input_names`` -> ``y`` ``(B, n_out)`` ordered as
    ``step.output_names``. Names, units and ``dt_seconds`` come from the file's metadata.
    """

    def __init__(self, path, providers=None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("input_names", "output_names") if k not in meta]
        if missing:
            raise ValueError(f"{self.path} lacks ailand metadata {missing}: export it with ailand.emulator.onnx_export.to_onnx")
        self.metadata = {k: json.loads(v) for k, v in meta.items()}
        self.input_names = list(self.metadata["input_names"])
        self.output_names = list(self.metadata["output_names"])
        self.input_units = list(self.metadata.get("input_units", []))
        self.output_units = list(self.metadata.get("output_units", []))
        self.dt = float(self.metadata.get("dt_seconds", float("nan")))
        inp = self.session.get_inputs()[0]
        self._in = inp.name
        self._dtype = np.float64 if "double" in inp.type else np.float32

    def __repr__(self):
        return f"OnnxEmulatorStep({str(self.path)!r}, {len(self.input_names)} inputs -> {len(self.output_names)} outputs, dt={self.dt:g} s)"

    def __call__(self, x) -> np.ndarray:
        """``(B, n_in)`` (or ``(n_in,)``) physical inputs -> ``(B, n_out)`` (or ``(n_out,)``) outputs."""
        x = to_numpy(x, dtype=self._dtype, name="x")
        single = x.ndim == 1
        x = x[None] if single else x
        if x.ndim != 2 or x.shape[1] != len(self.input_names):
            raise ValueError(
                f"x must be (batch, {len(self.input_names)}) inputs ordered as input_names; got shape {x.shape}"
            )
        y = self.session.run(None, {self._in: np.ascontiguousarray(x)})[0]
        return y[0] if single else y
