"""Twin experiment with the shipped emulator as the forward model, checked with the physics.

A land-surface modeller's recipe for "can these observations constrain these parameters,
and can I trust the emulator to do the calibration?":

1. Make synthetic observations: the toy ecLand physics at known "true" parameters, daily
   means of latent (Qle) and sensible (Qh) heat flux at two sites over two summer months,
   plus 10 % Gaussian noise (std = 0.1 x each (variable, site) series' std).
2. Calibrate RSMIN, LAI_SCALE and ALB_VEG against them with the shipped 6-hourly emulator
   (``Emulator.default()``) as the forward model: variational (Gauss-Newton posterior)
   and then MCMC started at the variational optimum. A fraternal twin: the observations come
   from the physics, the inference uses the emulator, so any bias is the emulator's error.
3. Check the emulator posterior with the physics: run the physics at the posterior mean
   and compare its observation RMSE with the noise level (a good calibration reaches about
   the noise std RMS; the physics at the truth itself does, by construction).

Writes ``runs/twin_example/``: ``report.md``, ``twin.nc``, ``twin.png`` (from
:meth:`calibration.TwinResult.report`) and ``physics_check.md``.

Run (from the repository root)::

    .venv/bin/python examples/twin_experiment.py

Runtime, measured on the 2-core development machine while a full test suite and other
jobs ran on it (load ~4, ``torch.set_num_threads(1)``): 6.6 min wall (3.3 min CPU): spin-up
and truth run 14 s, variational 4 starts 173 s (220 emulator runs; the final Jacobian of
the 244 data alone is ~11 s), MCMC 16 walkers x 500 steps 179 s, physics check ~10 s. On an
idle 2-core machine expect about half. Measured results (seed 0):

    parameter   truth  prior          variational       mcmc
    RSMIN       180    100 +- 58      206.4 +- 6.1      206.5 +- 6.8
    LAI_SCALE   1.3    1.0 +- 0.25    1.223 +- 0.021    1.223 +- 0.025
    ALB_VEG     0.16   0.20 +- 0.045  0.1443 +- 0.0015  0.1444 +- 0.0016

The emulator moves every parameter off the prior in the truth's direction (RSMIN overshoots),
but its posterior is over-confident: the truth is outside 2 sigma for all three, because the emulator's own error
(emulator obs RMSE 14.05 -> 6.78 W m-2 against a noise std RMS of 2.71) is not in R. The
physics check shows the same: physics obs RMSE 8.96 W m-2 at the prior mean, 2.69 (0.99 x
noise) at the truth, 5.47 (2.0 x noise) at the emulator posterior mean. To calibrate with
this emulator, add its error to ``obs_std`` (or correct it); an identical twin with the
physics recovers the truth within 2 sigma (tests/test_twin.py, 1 site, 20 days; not run here:
the physics adjoint over 2 sites x 61 days costs many minutes). The same command line without
the physics check::

    ailand twin --sites FR-Fon,FI-Hyy --start 2020-06-01 --end 2020-07-31 \\
        --params RSMIN,LAI_SCALE,ALB_VEG --truth RSMIN=180,LAI_SCALE=1.3,ALB_VEG=0.16 \\
        --observe Qle,Qh --freq 1D --noise 0.1 --forward emulator --methods variational,mcmc \\
        --mcmc-steps 500 --out runs/twin
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

import numpy as np
import torch

import ailand
import calibration as cal
from ailand.emulator import Emulator

torch.set_num_threads(1)  # on a shared 2-core machine, two intra-op threads only wait on each other

OUT = Path("runs/twin_example")
SITES = ["FR-Fon", "FI-Hyy"]  # a temperate broadleaf and a boreal needleleaf forest
START, END = "2020-06-01", "2020-07-31"  # two summer months: evaporation is energy- and stomata-limited
TRUTH = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16}  # defaults 100, 1.0, 0.20 (all inside the bounds)

t_all = time.perf_counter()

# --- the models ------------------------------------------------------------------------
# Truth: the float64 physics with its hourly step (the emulator was trained on it).
physics = ailand.ToyEcLand(dtype=torch.float64, compile=False)
emulator = Emulator.default()  # 6-hourly MLP shipped with ailand; same ParameterSpace as the physics
forcing = ailand.synthetic_forcing(SITES, START, END, seed=0)  # hourly, seeded synthetic weather
space = physics.space.subset(list(TRUTH))  # the calibrated parameters; also the prior (defaults +- range/4)

# Daily means of Qle and Qh. A model interval counts for the day its start lies in, so the
# hourly physics and the 6-hourly emulator give the same 2 x 2 x 61 = 244 labelled data.
observe = cal.Observe(["Qle", "Qh"], freq="1D")

# --- 1. synthetic observations ----------------------------------------------------------
# Both models start from the same state: the physics spun up for a year at the default
# parameters (the truth is unknown to the spin-up, as it would be in practice).
t0 = time.perf_counter()
twin = cal.TwinExperiment(physics, forcing, space, TRUTH, observe, noise=0.1, seed=0,
                          forward_model=emulator, spinup_years=1)
print(f"{twin}  [{time.perf_counter() - t0:.0f} s: spin-up and truth run]")

# --- 2. calibrate with the emulator -------------------------------------------------------
# variational: L-BFGS-B from the prior mean + 3 Sobol' starts, Gauss-Newton posterior;
# mcmc: emcee walkers in a ball around the variational optimum (one emulator call per step).
res = twin.run(methods=("variational", "mcmc"), n_starts=4, mcmc_steps=500)
res.report(OUT)  # report.md, twin.nc, twin.png
print()
print(res.table())
for k, m in enumerate(res.methods):
    print(f"{m:12s} emulator obs RMSE {res.rmse_before:.2f} -> {res.rmse_after[k]:.2f} W m-2 "
          f"(noise std RMS {res.noise_rms:.2f}); {int(res.n_forward_runs[k])} emulator runs, {res.wall_time[k]:.1f} s")

# --- 3. check the emulator posterior with the physics -------------------------------------
# twin.truth_forward is the physics forward operator (same forcing, start state, observe);
# run it at the prior mean, the truth and each posterior mean and score against the data y.
def physics_rmse(x) -> float:
    r = twin.y - twin.truth_forward(np.asarray(x, dtype=float))
    return float(np.sqrt(np.mean(r**2)))

rows = [("prior mean", res.prior_mean), ("truth", res.truth)]
rows += [(f"{m} posterior mean", res.posterior_mean[k]) for k, m in enumerate(res.methods)]
lines = [
    "# Physics check of the emulator posterior", "",
    f"Observation RMSE of the physics against the {twin.y.size} twin observations; noise std RMS "
    f"{res.noise_rms:.3f} W m-2 (a perfect fit reaches about this).", "",
    "| physics at | " + " | ".join(res.names) + " | physics obs RMSE [W m-2] | / noise |",
    "|---|" + "---|" * (len(res.names) + 2),
]
print("\nphysics check (obs RMSE of the physics at ...):")
for label, x in rows:
    e = physics_rmse(x)
    lines.append(f"| {label} | " + " | ".join(f"{v:.4g}" for v in x) + f" | {e:.3f} | {e / res.noise_rms:.2f} |")
    print(f"  {label:28s} {e:7.3f} W m-2  = {e / res.noise_rms:.2f} x noise")
(OUT / "physics_check.md").write_text("\n".join(lines) + "\n")
print(f"\nwrote {OUT}/{{report.md, twin.nc, twin.png, physics_check.md}}; total {time.perf_counter() - t_all:.0f} s")
