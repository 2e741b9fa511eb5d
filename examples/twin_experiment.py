"""Twin experiment with the shipped emulator as the forward model, checked with the physics.

A land-surface modeller's recipe for "can these observations constrain these parameters,
and can I trust the emulator to do the calibration?":

1. Make synthetic observations: the toy ecLand physics at known "true" parameters, daily
   means of latent (Qle) and sensible (Qh) heat flux at two sites over two summer months,
   plus 10 % Gaussian noise (std = 0.1 x each (variable, site) series' std).
2. Calibrate RSMIN, LAI_SCALE and ALB_VEG against them with the shipped 6-hourly emulator
   (``Emulator.default()``) as the forward model: variational (Gauss-Newton posterior)
   and then MCMC started at the variational optimum. A fraternal twin: the observations come
   from the physics, the inference uses the emulator, so the emulator's error would bias an
   over-confident posterior. ``TwinExperiment`` therefore estimates that error against the
   physics (64 physics and about 270 emulator runs, two passes; :mod:`calibration.discrepancy`)
   and adds it to R.
3. Check the emulator posterior with the physics: run the physics at the posterior mean
   and compare its observation RMSE with the noise level (a good calibration reaches about
   the noise std RMS; the physics at the truth itself does, by construction).

Writes ``runs/twin_example/``: ``report.md``, ``twin.nc``, ``twin.png`` (from
:meth:`calibration.TwinResult.report`) and ``physics_check.md``.

Run (from the repository root)::

    .venv/bin/python examples/twin_experiment.py

Runtime on the 2-core development machine (load about 1, ``torch.set_num_threads(1)``):
237 s wall: spin-up and truth run 5 s, emulator-error estimate 62 s, variational 4 starts 64 s
(231 emulator runs), MCMC 16 walkers x 500 steps 90 s, physics check ~10 s. Measured results
(seed 0):

    parameter   truth  prior          variational        mcmc
    RSMIN       180    100 +- 58      184.5 +- 6.3       184.2 +- 6.6
    LAI_SCALE   1.3    1.0 +- 0.25    1.326 +- 0.032     1.324 +- 0.033
    ALB_VEG     0.16   0.20 +- 0.045  0.1635 +- 0.0017   0.1636 +- 0.0016

The physics at the posterior mean fits the data to 2.673 W m-2 = 0.99 x the noise (the
truth: 2.691; the prior mean: 8.96). ALB_VEG's truth lies 2.1 sigma from the posterior mean;
the physics' own optimum of the same data is 0.1623 (``benchmarks/calibration.py``), 1.4 of
its sigmas from the truth, so most of that is the noise draw, and the emulator mean is 0.7
sigma from the physics one. Without the emulator's error in R (``model_error=False``; the
"emulator, R = noise only" row of ``benchmarks/calibration.py``, one start) the optimum is
RSMIN 206.4, LAI_SCALE 1.223, ALB_VEG 0.1443: the truth 4-10 sigma away and the physics at
that point 2.0 x the noise. The same command line without
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
res = twin.run(methods=("variational", "mcmc"), n_starts=4, mcmc_steps=500, progress=True)  # stages + bars on stderr
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
