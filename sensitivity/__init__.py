"""Sensitivity screening (Morris, Sobol) on labelled, vector-valued outputs.

Designs come from SALib's samplers; the estimators are SALib's, vectorised over every
output (time, variable, site, ...) at once, and return ``xarray.Dataset`` with dims
``(parameter, *output_dims)``.

- :func:`morris_design`, :func:`morris_analyze`, :func:`morris` - elementary effects
  ``mu, mu_star, sigma, mu_star_conf``
- :func:`sobol_design`, :func:`sobol_analyze`, :func:`sobol` - Sobol' indices
  ``S1, ST (, S2)`` with bootstrap CIs
- :func:`screen` -> :class:`Screening` - keep the important parameters as a
  ``ParameterSpace`` subset, with the ranking and a reason per parameter
- :func:`model_outputs`, :func:`monthly_means`, :func:`time_means` - turn an ailand Model
  (``run(forcing, params=...)``) into the ``(n, d) -> DataArray (sample, ...)`` callable
  the estimators take (:func:`project_to_constraints` for rows that break the space's
  constraints); :func:`evaluate`, :func:`as_outputs` for the split workflow
- :mod:`sensitivity.plots` - mu*-sigma scatter, index bars, heatmaps
"""

# Lazy: `import sensitivity` (and the `ailand screen` plugin that `ailand --help` loads) stays
# cheap; SALib, scipy and xarray load with the first name used.
_HOME = {
    **dict.fromkeys(["elementary_effects", "morris", "morris_analyze", "morris_delta", "morris_design"], "morris_screening"),
    **dict.fromkeys(
        ["as_outputs", "evaluate", "model_outputs", "monthly_means", "project_to_constraints", "run_design", "time_means"],
        "outputs",
    ),
    **dict.fromkeys(["Screening", "screen"], "screening"),
    **dict.fromkeys(["first_order", "second_order", "sobol", "sobol_analyze", "sobol_design", "total_order"], "sobol_indices"),
}


def __getattr__(name):  # PEP 562: `sensitivity.morris`, `from sensitivity import plots`, ...
    import importlib

    if name in ("plots", "cli"):  # matplotlib only when figures are asked for
        return importlib.import_module(f".{name}", __name__)
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sensitivity' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_HOME, "plots", "cli"])


__all__ = [
    "morris_design",
    "morris_analyze",
    "morris",
    "elementary_effects",
    "morris_delta",
    "sobol_design",
    "sobol_analyze",
    "sobol",
    "first_order",
    "total_order",
    "second_order",
    "screen",
    "Screening",
    "model_outputs",
    "monthly_means",
    "time_means",
    "project_to_constraints",
    "evaluate",
    "as_outputs",
    "run_design",
]
