"""Dust emission inversion: an LETKF smoother of emission scaling factors from satellite AOD
on the :mod:`ailand.dust` world (issue 14, deliverables 4-6; CAMAERA's reference analysis).

    from calibration.dust_inversion import DustTwin, InversionConfig
    twin = DustTwin("2020-06-01", "2020-06-30", seed=0, progress=True)  # world, hidden truth, satellite, AERONET
    result = twin.invert(InversionConfig())       # 1 control + 20 members, 3-day periods, lag 4, 250 km perturbations
    ev = twin.evaluate(result)                    # the emission analysis product and the scores
    ev.save("runs/dust")                          # dust_emission_analysis.nc, scores.csv, report.md, figures/

Modules (each usable alone): :mod:`.perturbations` (Gaussian-correlated fields on the sphere),
:mod:`.truth` (the hidden true scaling field), :mod:`.observations` (satellite swaths, clouds,
AERONET stations, the observation operator, free runs), :mod:`.smoother` (the LETKF smoother,
:func:`calibration.ensemble_kalman.letkf` with great-circle localisation), :mod:`.product`
(the labelled emission analysis, monthly emission-weighted factors), :mod:`.evaluation`
(scores, seasonal maps), :mod:`.plots`, :mod:`.twin` (the whole experiment), :mod:`.cli`
(``ailand dust``).
"""

from .evaluation import SEASONS, aod_scores, factor_scores, scores_table, season_of, seasonal_maps
from .observations import (
    AERONET_SITES,
    ObsOperator,
    SatelliteConfig,
    aeronet_observations,
    aeronet_sites,
    cos_solar_zenith,
    free_runs,
    satellite_geometry,
    synthetic_satellite,
)
from .perturbations import CorrelatedField, chord_distance, member_perturbations
from .product import emission_analysis, monthly_weighted_factors, write_netcdf
from .smoother import EmissionSmoother, InversionConfig, InversionResult, control_cells
from .truth import DEFAULT_FEATURES, true_scaling
from .twin import DustTwin, TwinEvaluation, check_factors

__all__ = [
    "DustTwin", "TwinEvaluation", "InversionConfig", "InversionResult", "EmissionSmoother", "control_cells",
    "CorrelatedField", "chord_distance", "member_perturbations", "DEFAULT_FEATURES", "true_scaling",
    "SatelliteConfig", "AERONET_SITES", "satellite_geometry", "synthetic_satellite", "aeronet_sites",
    "aeronet_observations", "ObsOperator", "cos_solar_zenith", "free_runs", "emission_analysis",
    "monthly_weighted_factors", "write_netcdf", "SEASONS", "season_of", "aod_scores", "factor_scores",
    "seasonal_maps", "scores_table", "check_factors",
]
