"""A neural-network dust emission model (issue 15): predictors, training table, the seed's
network (v1 linear / v2 log target), the dust-source mask, a zero-aware hurdle model with a
physical gate, ONNX export.

    from ailand.dust.nn import build_table, split_by_year, fit_seed_network, fit_zero_aware, to_onnx
    table = concat_tables([build_table(world_y, land_y, target_y) for each year])   # (sample,) rows
    train, val, test = split_by_year(table)                 # 3 years 90/10 train/val, the 4th year test
    seed_v2 = fit_seed_network(train, val, target="log")    # the seed recipe
    za = fit_zero_aware(train, val)                         # gate x classifier x regressor
    to_onnx(za.model, "dust_nn.onnx")                      # one input [batch, 15], one output [batch, 1]

Modules: :mod:`.predictors` (the 15 predictors, the table, its checks, the split),
:mod:`.model` (networks, gate, mask, save/load), :mod:`.train` (recipes), :mod:`.metrics`,
:mod:`.onnx_export`. The driver that builds the target from the emission analysis, the
hyperparameter search and the evaluation live in :mod:`calibration.dust_nn`.
"""

from .metrics import SKILL_NAMES, skill
from .model import (GATE_RULES, LOG_EPS, EmissionNet, FeedForward, HurdleEmissionNet, Normalisation, PhysicalGate,
                    SourceMasked, TargetTransform, load_model, log_space, save_model)
from .onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxEmission, to_onnx, typical_rows
from .predictors import (EXTRA_PREDICTORS, PREDICTOR_GROUPS, PREDICTOR_RANGES, PREDICTORS, build_table, check_table,
                         concat_tables, extract_predictors, physics_forbids, predictor_units, split_by_year, table_arrays)
from .train import FitResult, TrainConfig, fit_seed_network, fit_zero_aware, predict, predict_amount

__all__ = [
    "PREDICTORS", "PREDICTOR_GROUPS", "EXTRA_PREDICTORS", "PREDICTOR_RANGES", "predictor_units", "extract_predictors",
    "build_table", "concat_tables", "physics_forbids", "check_table", "split_by_year", "table_arrays", "LOG_EPS", "log_space",
    "FeedForward", "Normalisation", "TargetTransform", "EmissionNet", "SourceMasked", "PhysicalGate",
    "HurdleEmissionNet", "GATE_RULES", "save_model", "load_model", "TrainConfig", "FitResult", "fit_seed_network",
    "fit_zero_aware", "predict", "predict_amount", "skill", "SKILL_NAMES", "to_onnx", "OnnxEmission", "INPUT_NAME",
    "OUTPUT_NAME", "typical_rows",
]
