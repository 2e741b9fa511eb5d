"""Multi-model ensembles (issue 16): combine member forecasts into one forecast of an analysis.

Generic over what the members are (chemistry-transport models of the CAMS regional
ensemble, land models, emulator variants): everything works on labelled xarray data with
dims ``(member, lead_time, time, lat, lon)`` per variable and a target analysis
``(time, lat, lon)``.

- :class:`MMEData`, :func:`open_mme`, :func:`mme_dataset`, :func:`split_by_time` - data, validation, split
- :func:`synthetic_cams` - a seeded SYNTHETIC CAMS-like ensemble (O3, NO2, SO2, PM10; 11 members)
- :func:`ensemble_median`, :func:`ensemble_mean`, :class:`WeightedEnsemble` - baselines
- :class:`DLEnsemble` - the deep-learning ensemble (UNet / HalfUNet, torch)
- :func:`scores`, :func:`scorecard_table`, :func:`error_maps` - verification
- :func:`to_onnx`, :class:`OnnxDLEnsemble` - ONNX export and onnxruntime inference

``ailand mme prepare | train | evaluate | predict | export-onnx`` is the command line.
"""

from .dataset import MMEData, TimeSplit, mme_dataset, open_mme, split_by_time, validate_mme

__all__ = [
    "MMEData", "TimeSplit", "mme_dataset", "open_mme", "split_by_time", "validate_mme",
    "synthetic_cams", "ensemble_median", "ensemble_mean", "WeightedEnsemble", "DLEnsemble",
    "scores", "scorecard_table", "error_maps", "DEFAULT_THRESHOLDS", "to_onnx", "OnnxDLEnsemble",
]


def __getattr__(name):  # lazy: torch and scipy only when asked for
    if name == "synthetic_cams":
        from .synthetic import synthetic_cams

        return synthetic_cams
    if name in ("ensemble_median", "ensemble_mean", "WeightedEnsemble"):
        from . import baselines

        return getattr(baselines, name)
    if name == "DLEnsemble":
        from .model import DLEnsemble

        return DLEnsemble
    if name in ("scores", "scorecard_table", "error_maps", "DEFAULT_THRESHOLDS"):
        from . import verify

        return getattr(verify, name)
    if name in ("to_onnx", "OnnxDLEnsemble"):
        from . import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'ailand.mme' has no attribute {name!r}")
