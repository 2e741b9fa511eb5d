"""ONNX export of the DL ensemble and inference with onnxruntime.

``to_onnx(model, path)`` writes the whole :class:`~ailand.mme.networks.EnsembleNet` (the
normalisation, the missing-member handling, the median and weighted baselines, the CNN and
the clamp are all inside the graph) with inputs

* ``members``   ``(batch, V, M, H, W)`` float32, physical units, NaN = missing member,
* ``calendar``  ``(batch, 5 + L)`` float32: sin/cos UTC hour, sin/cos day of year,
  weekend (0/1), one-hot lead day (order ``lead_times``),
* ``predictors`` ``(batch, P, H, W)`` float32, physical units (only when P > 0),

and one output ``forecast`` ``(batch, V, H, W)``. Names, units, member order, lead days,
predictors and the grid travel in ``metadata_props`` (JSON). :class:`OnnxDLEnsemble` runs the
file with onnxruntime, on arrays or on an :class:`~ailand.mme.MMEData` like
:meth:`~ailand.mme.DLEnsemble.predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..onnx_io import export_onnx
from .dataset import MMEData
from .features import _Batcher

__all__ = ["to_onnx", "OnnxDLEnsemble"]

DEFAULT_OPSET = 18


class _Graph(torch.nn.Module):
    """members, calendar -> forecast (a model without predictors)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, members, calendar):
        return self.net(members, calendar, None)


class _GraphP(_Graph):
    """members, calendar, predictors -> forecast."""

    def forward(self, members, calendar, predictors):
        return self.net(members, calendar, predictors)


def _metadata(model) -> dict[str, str]:
    m = model.meta
    return {k: json.dumps(v) for k, v in {
        "variables": m["variables"], "members": m["members"], "lead_times": m["lead_times"],
        "predictors": m["predictors"], "units": m["units"], "predictor_units": m["predictor_units"],
        "lat": m["lat"], "lon": m["lon"], "config": model.config,
        "calendar": ["sin_hour_utc", "cos_hour_utc", "sin_day_of_year", "cos_day_of_year", "weekend"]
                    + [f"lead_day_{x}" for x in m["lead_times"]],
        "description": ("ailand DL multi-model ensemble: members (batch, V, M, H, W) [physical, NaN = missing], "
                        "calendar (batch, 5 + L), predictors (batch, P, H, W) [physical] -> forecast (batch, V, H, W)"),
    }.items()}


def to_onnx(model, path, opset: int | None = None, check: bool = True) -> Path:
    """Export a trained :class:`~ailand.mme.DLEnsemble` to ``path`` (see the module docstring)."""
    import onnx

    if model.net is None:
        raise ValueError("the DLEnsemble is not trained")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.net.to("cpu").eval()
    V, M, L, P, H, W = net.V, net.M, net.L, net.P, net.H, net.W
    members = torch.zeros(2, V, M, H, W)
    members[:] = net.mean.view(1, V, 1, 1, 1)
    members[1, :, 0] = float("nan")  # trace with a missing member
    cal = torch.zeros(2, 5 + L)
    cal[:, 5] = 1.0
    args = [members, cal]
    names = ["members", "calendar"]
    batch = torch.export.Dim("batch", min=1)
    dyn = {"members": {0: batch}, "calendar": {0: batch}}
    if P:
        args.append(net.pred_mean.view(1, P, 1, 1).expand(2, P, H, W).clone())
        names.append("predictors")
        dyn["predictors"] = {0: batch}
    module = (_GraphP(net) if P else _Graph(net)).eval()
    proto = export_onnx(module, tuple(args), input_names=names, output_names=["forecast"], dynamic_shapes=dyn,
                        opset=DEFAULT_OPSET if opset is None else int(opset), metadata=_metadata(model))
    got = [i.name for i in proto.graph.input]
    if got != names:
        raise RuntimeError(f"export produced inputs {got}; expected {names}")
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


class OnnxDLEnsemble:
    """An exported DL ensemble run by onnxruntime.

    ``OnnxDLEnsemble(path)(members, calendar, predictors)`` on arrays (shapes in the module
    docstring) -> ``(batch, V, H, W)``; :meth:`predict` on an :class:`~ailand.mme.MMEData`
    -> Dataset ``(lead_time, time, lat, lon)`` per variable, as ``DLEnsemble.predict``.
    """

    def __init__(self, path, threads: int | None = None, providers=None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"{self.path} does not exist")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "members" not in meta:
            raise ValueError(f"{self.path} lacks ailand metadata: export it with ailand.mme.to_onnx")
        self.meta = {k: json.loads(v) for k, v in meta.items()}
        self.variables = list(self.meta["variables"])
        self.members = list(self.meta["members"])
        self.lead_times = [int(x) for x in self.meta["lead_times"]]
        self.predictors = list(self.meta["predictors"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __repr__(self):
        return f"OnnxDLEnsemble({str(self.path)!r}: {self.variables} from {len(self.members)} members, lead days {self.lead_times})"

    def __call__(self, members, calendar, predictors=None) -> np.ndarray:
        feeds = {"members": np.ascontiguousarray(members, dtype=np.float32),
                 "calendar": np.ascontiguousarray(calendar, dtype=np.float32)}
        if "predictors" in self.input_names:
            if predictors is None:
                raise ValueError(f"this model needs predictors {self.predictors}")
            feeds["predictors"] = np.ascontiguousarray(predictors, dtype=np.float32)
        return self.session.run(None, feeds)[0]

    def predict(self, data: MMEData, times=None, batch_size: int = 32) -> xr.Dataset:
        """Forecast ``(lead_time, time, lat, lon)`` per variable for ``data`` (as ``DLEnsemble.predict``)."""
        if not isinstance(data, MMEData):
            raise ValueError(f"data must be an MMEData, got {type(data).__name__}")
        lat, lon = np.asarray(self.meta["lat"]), np.asarray(self.meta["lon"])
        if data.lat.shape != lat.shape or data.lon.shape != lon.shape or not (
                np.allclose(data.lat, lat, atol=1e-6) and np.allclose(data.lon, lon, atol=1e-6)):
            raise ValueError("the data's grid differs from the model's; regrid the data to the model grid")
        extra = [m for m in data.members if m not in self.members]
        if extra:
            raise ValueError(f"members {extra} are unknown to the model")
        lead = []
        for lt in data.lead_times:
            if int(lt) not in self.lead_times:
                raise ValueError(f"lead day {int(lt)} was not trained (model lead days {self.lead_times})")
            lead.append(self.lead_times.index(int(lt)))
        batcher = _Batcher(data, self.variables, self.members, np.asarray(lead), self.predictors)
        t_idx = np.arange(data.shape["time"]) if times is None else np.asarray(times)
        L = data.shape["lead_time"]
        out = np.full((len(self.variables), L, t_idx.size, data.shape["lat"], data.shape["lon"]), np.nan, np.float32)
        pairs = np.array([(k, li) for k in range(t_idx.size) for li in range(L)], dtype=np.int64).reshape(-1, 2)
        for s in range(0, len(pairs), batch_size):
            k, li = pairs[s:s + batch_size, 0], pairs[s:s + batch_size, 1]
            t = t_idx[k]
            members = batcher.members(t, li)
            y = self(members, batcher.calendar(t, li, len(self.lead_times)), batcher.predictors(t, li))
            y[np.isnan(members).all(axis=(2, 3, 4))] = np.nan
            out[:, li, k] = y.transpose(1, 0, 2, 3)
        ds = xr.Dataset(coords={"lead_time": data.ds["lead_time"], "time": data.ds["time"].isel(time=t_idx),
                                "lat": data.ds["lat"], "lon": data.ds["lon"]})
        for i, v in enumerate(self.variables):
            ds[v] = xr.DataArray(out[i], dims=("lead_time", "time", "lat", "lon"),
                                 attrs={"units": self.meta["units"][v], "long_name": f"{v}, DL ensemble (ONNX)"})
        ds.attrs["method"] = "dl_onnx"
        return ds
