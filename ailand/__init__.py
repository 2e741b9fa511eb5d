"""ailand: a differentiable toy ecLand, its MLP emulator, and the tools that calibrate it.

Top-level names:

- :class:`ParameterSpace` - the ecLand-like parameter table, designs, unit-cube maps
- :func:`load_sites` - static fields of the default sites (``data/sites.csv``)
- :func:`synthetic_forcing`, :func:`open_forcing` - hourly meteorological forcing
- :class:`ToyEcLand` - the column model (``run`` on xarray, ``simulate`` on torch tensors)
- :class:`Emulator` - its MLP emulator, the same ``run`` interface (``Emulator.default()``
  loads the shipped one; :mod:`ailand.emulator` trains, evaluates and exports)
- :func:`run_ensemble`, :func:`load_ensemble` - perturbed-parameter ensembles as anemoi datasets
"""

from .params import ParameterSpace, DATA_DIR

__all__ = [
    "ParameterSpace", "DATA_DIR", "load_sites", "synthetic_forcing", "open_forcing", "ToyEcLand",
    "Emulator", "run_ensemble", "load_ensemble",
]


def __getattr__(name):  # lazy: keep `import ailand` light and let modules land one by one
    if name == "load_sites":
        from .sites import load_sites

        return load_sites
    if name in ("synthetic_forcing", "open_forcing", "validate_forcing"):
        from . import forcing

        return getattr(forcing, name)
    if name == "ToyEcLand":
        from .physics import ToyEcLand

        return ToyEcLand
    if name == "Emulator":
        from .emulator import Emulator

        return Emulator
    if name in ("run_ensemble", "load_ensemble", "EnsembleData"):
        from . import ensemble

        return getattr(ensemble, name)
    raise AttributeError(f"module 'ailand' has no attribute {name!r}")
