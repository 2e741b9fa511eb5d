"""Land 4D-Var on the soil-moisture twin: the window-start soil moisture as the control,
tangent-linear and adjoint by autograd through the physics or through the emulator.

Per window, all sites at once (their costs are independent and add up)::

    J(x) = 1/2 sum_s |x_s - x_b,s|^2 / sigma_b^2 + 1/2 sum_s,i use_si (y_si - h_si(x_s))^2 / sigma_i^2

minimised by L-BFGS-B within ``[0, THETA_SAT]`` (scipy, gradients by autograd), then the
physics runs the window from ``x_a`` (the analysed trajectory) to the next background.

* ``model="physics"``: ``h`` is the toy ecLand's window, its adjoint by reverse-mode
  autograd (the machine-exact TL/AD of the model);
* ``model="emulator"``: ``h(x) = h_phys(x_b) + h_emu(x) - h_emu(x_b)``: the physics'
  background equivalents, the emulator's nonlinear increments (its tangent-linear and
  adjoint are the ML TL/AD; its bias against the physics cancels in the increment).

Screening as the SEKF (:func:`calibration.land_da.screen`, without the Jacobian limits).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
import torch

import ailand

from ..progress import as_progress
from .sekf import screen
from .twin import SoilMoistureTwin, result_dataset
from .window import WindowRunner


def run_4dvar(twin: SoilMoistureTwin, model: str = "physics", emulator=None, b_std: float = 0.01,
              maxiter: int = 15, windows: int | None = None, progress=False):
    """Cycle strong-constraint 4D-Var over ``twin``'s windows (module doc). Returns the
    Dataset of :func:`calibration.land_da.result_dataset` with the cost per cycle in attrs
    (``physics_runs_per_cycle``, ``emulator_runs_per_cycle``: runs with their adjoint count
    as one run each)."""
    if model not in ("physics", "emulator"):
        raise ValueError(f"model must be 'physics' or 'emulator', got {model!r}")
    if not b_std > 0:
        raise ValueError(f"b_std must be positive, got {b_std}")
    runner = twin.runner
    inner = runner
    if model == "emulator":
        emulator = emulator if emulator is not None else ailand.Emulator.default()
        inner = WindowRunner(emulator, twin.forcing, runner.observe, twin.hours)
    K = twin.K if windows is None else int(windows)
    S, L, m = len(twin.sites), runner.n_layers, runner.m
    sat = runner.theta_sat().numpy()
    # the control is the standardised increment u = (x - x_b) / b_std (the Hessian of the
    # background term is then the identity); bounds [0, THETA_SAT] follow x_b per window
    w_all = 1.0 / twin.r_std**2
    state = twin.state0
    xb_all, xa_all, used, nits, msgs = [], [], [], [], []
    runs0, emu0, t0 = runner.n_runs, inner.n_runs, time.perf_counter()
    with as_progress(progress).bar(K, desc=f"4D-Var ({model} TL/AD)", unit="window") as bar:
        for k in range(K):
            x_b = runner.x_of(state)  # (1, S, L)
            with torch.no_grad():
                hb, final_b = runner.run(k, state, x_b)  # the background trajectory
                hb_inner = inner.run(k, state, x_b)[0] if model == "emulator" else None
            hb_np = hb[0].numpy()
            use = screen(runner, twin.y[k], hb_np, np.zeros((S, m, L)), state, twin.obs_vars)
            w = torch.as_tensor(np.where(use, w_all, 0.0))
            y = torch.as_tensor(np.where(use, twin.y[k], hb_np))

            def cost(v):
                u = torch.as_tensor(v).reshape(1, S, L).requires_grad_(True)
                with torch.enable_grad():
                    h, _ = inner.run(k, state, x_b + b_std * u)
                    if model == "emulator":
                        h = hb + (h - hb_inner)
                    J = 0.5 * (u**2).sum() + 0.5 * (w * (y - h[0]) ** 2).sum()
                    (g,) = torch.autograd.grad(J, u)
                return float(J.detach()), g.detach().reshape(-1).numpy().astype(float)

            if use.any():
                xb_np = x_b.reshape(-1).numpy()
                ub = [(-xb_np[i] / b_std, (sat[i // L] - xb_np[i]) / b_std) for i in range(S * L)]
                res = scipy.optimize.minimize(cost, np.zeros(S * L), jac=True, method="L-BFGS-B", bounds=ub,
                                              options={"maxiter": int(maxiter), "ftol": 1e-12, "gtol": 1e-6})
                xa0, nit = x_b + b_std * torch.as_tensor(res.x).reshape(1, S, L), int(res.nit)
                msgs.append(str(res.message))
            else:
                xa0, nit = x_b, 0  # nothing to assimilate: the analysis is the background
            with torch.no_grad():
                _, final = runner.run(k, state, xa0)  # the analysed trajectory
            xb_all.append(runner.x_of(final_b)[0].numpy())
            xa_all.append(runner.x_of(final)[0].numpy())
            used.append(use)
            nits.append(nit)
            state = final
            bar.update(1)
    wall = time.perf_counter() - t0
    info = {"method": "4dvar", "jacobian": f"{model} TL/AD", "b_std": b_std, "windows": K, "wall_s": wall,
            "wall_per_cycle_s": wall / K, "jacobian_wall_per_cycle_s": float("nan"),
            "mean_iterations": float(np.mean(nits)),
            "physics_runs_per_cycle": (runner.n_runs - runs0) / K,
            "emulator_runs_per_cycle": (inner.n_runs - emu0) / K if model == "emulator" else 0.0}
    return result_dataset(twin, np.stack(xb_all), np.stack(xa_all), np.stack(used), info)
