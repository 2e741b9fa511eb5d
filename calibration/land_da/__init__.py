"""Land data assimilation: the soil-moisture twin, ECMWF's SEKF with four Jacobians
(finite differences, ensemble, autograd through the physics, autograd through the emulator),
ensemble Kalman land DA and 4D-Var through the physics or the emulator.

    twin = SoilMoistureTwin(sites=("FR-Fon", "US-Kon"), start="2020-06-01", end="2020-07-31")
    ol = twin.run("open_loop"); fd = twin.run("sekf", jacobian="fd")
    scores({"open_loop": ol, "sekf_fd": fd})
"""

from .sekf import JACOBIANS, jacobian_autograd, jacobian_ensemble, jacobian_fd, screen, sekf_update
from .ensemble import run_enkf
from .var import run_4dvar
from .twin import OBS_STD, SoilMoistureTwin, compare_jacobians, jacobian_breakdown, perturb_forcing, result_dataset, scores
from .window import WindowRunner, start_state

__all__ = ["JACOBIANS", "OBS_STD", "SoilMoistureTwin", "compare_jacobians", "jacobian_breakdown", "WindowRunner", "jacobian_autograd", "jacobian_ensemble",
           "jacobian_fd", "perturb_forcing", "run_4dvar", "run_enkf", "result_dataset", "scores", "screen", "sekf_update", "start_state"]
