"""Operational parameter sets: group and cluster sites, calibrate per group, measure
equifinality, propagate the uncertainty (issue 17).

- :func:`run_study` / :class:`StudyConfig` / :class:`StudyResult` - the whole network twin
- :func:`true_parameter_field` - the hidden truth of the twin (a rule the methods do not see)
- :data:`STRATEGIES`, :func:`group_sites`, :class:`Grouping`, :func:`cluster_predictors`,
  :func:`choose_k` (silhouette), :func:`cluster_importance`, :func:`split_sites`,
  :func:`calibration_sites` - grouping strategies
- :class:`SiteRunner` (per-column parameters), :func:`calibrate_groups` (one Levenberg-Marquardt
  per group, all in lock-step), :class:`Whitener` / :class:`WhitenedForward` (low-rank R)

The site network itself (sites, Koppen-Geiger classes, soil classes) is :mod:`ailand.network`.
"""

from .grouping import (STRATEGIES, Grouping, calibration_sites, choose_k, cluster_importance, cluster_predictors,
                       group_sites, split_sites)
from .multisite import GroupCalibration, SiteRunner, Whitener, WhitenedForward, calibrate_groups, series_std
from .study import StudyConfig, StudyResult, mask_records, run_study, site_rmse
from .truth import true_parameter_field

__all__ = [
    "run_study", "StudyConfig", "StudyResult", "true_parameter_field", "STRATEGIES", "Grouping", "group_sites",
    "cluster_predictors", "choose_k", "cluster_importance", "split_sites", "calibration_sites", "SiteRunner",
    "calibrate_groups", "GroupCalibration", "Whitener", "WhitenedForward", "series_std", "site_rmse", "mask_records",
]
