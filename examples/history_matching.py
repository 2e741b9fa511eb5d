"""History matching in waves: which parameter values can the observations not rule out?

A land-surface modeller's recipe for "which RSMIN, LAI_SCALE, ALB_VEG, THETA_CAP and
THETA_PWP are consistent with these flux and soil-moisture observations, within their errors?":

1. Synthetic observations: the toy ecLand physics at known "true" parameters, weekly means
   of latent (Qle) and sensible (Qh) heat flux and top-layer soil moisture (swvl1) at two
   sites over two summer months (3 x 2 x 9 = 54 data), plus 10 % Gaussian noise (std =
   0.1 x each (variable, site) series' std). The same std is the observation error; no
   model discrepancy (an identical twin: the simulator is the physics that made the data).
2. History matching in waves (:class:`calibration.HistoryMatching`): a maximin Latin
   hypercube of 30 physics runs (THETA_PWP < THETA_CAP respected), a GP emulator of the
   54 outputs (on a PCA basis, as there are more than 50), the implausibility
   ``I = |E[f(x)] - z| / sqrt(Var_em + var_obs)``, and 30 new runs sampled from the
   not-ruled-out-yet (NROY) space for each further wave; 4 waves, the stop rules reported
   as they fire (the NROY fraction shrinks by less than 10 %, or the emulator variance is
   below the observation variance everywhere in NROY).
   ``nth=2`` (the second-largest of the 54 implausibilities must be <= 3): with the
   maximum, 54 noisy data would rule out the truth itself with probability
   1 - 0.9973^54 = 14 % (hmer uses the second maximum above 10 outputs for this reason).
3. Report the NROY fraction per wave (from 20 000 uniform points, with its Monte-Carlo
   error) and whether the truth is still NROY; plot the NROY pairs (optical depth /
   minimum implausibility) and the waves.

Everything is saved in ``runs/history_matching_example/`` as it finishes; running the
script again resumes (nothing finished is re-run) and gives the same numbers.

Run (from the repository root)::

    .venv/bin/python examples/history_matching.py

The same from the command line (physics, resumable)::

    ailand waves --sites FR-Fon,FI-Hyy --start 2020-06-01 --end 2020-07-31 \\
        --params RSMIN,LAI_SCALE,ALB_VEG,THETA_CAP,THETA_PWP \\
        --truth RSMIN=180,LAI_SCALE=1.3,ALB_VEG=0.16,THETA_CAP=0.35,THETA_PWP=0.12 \\
        --observe Qle,Qh,swvl1 --freq 7D --nth 2 --waves 4 --runs-per-wave 30 --out runs/waves
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

import numpy as np
import torch

import ailand
from calibration import HistoryMatching, Observe, TwinExperiment

OUT = Path("runs/history_matching_example")
TRUTH = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16, "THETA_CAP": 0.35, "THETA_PWP": 0.12}
N_WAVES, RUNS = 4, 30


def main():
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    forcing = ailand.synthetic_forcing(["FR-Fon", "FI-Hyy"], "2020-06-01", "2020-07-31", seed=0)
    space = model.space.subset(list(TRUTH))
    twin = TwinExperiment(model, forcing, space, TRUTH, Observe(["Qle", "Qh", "swvl1"], freq="7D"), noise=0.1, seed=0)
    print(f"{twin.y.size} observations; truth {TRUTH}; set-up {time.perf_counter() - t0:.1f} s")

    hm = HistoryMatching(twin.forward, twin.y, space, obs_std=twin.obs_std, cutoff=3.0, nth=2,
                         path=OUT, seed=0, batch_size=RUNS // 2, progress=False)
    truth = twin.truth_vector[None]
    print(f"{'wave':>4} {'NROY fraction':>22} {'I_2(truth)':>10} {'truth NROY':>10} {'sampler':>14} {'time [s]':>8}")
    while hm.n_waves < N_WAVES:  # all N_WAVES waves, reporting the stop rules as they fire
        if hm.should_stop():
            print(f"      (a stop rule fires: {hm.stop_reason})")
        t = time.perf_counter()
        rec = hm.run_wave(RUNS)
        k = hm.n_waves
        it = max(float(hm.implausibility(truth, wave=j)[0]) for j in range(1, k + 1))
        print(f"{k:>4} {float(rec['nroy_fraction']):>12.4g} +- {float(rec['nroy_fraction_se']):<7.2g} {it:>10.3g} "
              f"{'yes' if it <= hm.cutoff else 'NO':>10} {rec.attrs['sampler']:>14} {time.perf_counter() - t:>8.1f}")
    ok = bool(hm.is_nroy(truth)[0])
    print(f"truth {'retained in' if ok else 'RULED OUT of'} NROY after {hm.n_waves} waves; "
          f"NROY fraction {hm.nroy_fraction:.4g} +- {hm.nroy_fraction_se:.2g}")
    x = hm.sample_nroy(500).values
    for j, n in enumerate(hm.names):
        print(f"  {n:>10}: NROY range {x[:, j].min():.4g} .. {x[:, j].max():.4g} {space.units[n]} "
              f"(prior {space.bounds[j, 0]:g} .. {space.bounds[j, 1]:g}; truth {TRUTH[n]:g})")
    hm.plot_pairs(OUT / "nroy_pairs.png", truth=twin.truth_vector)
    hm.plot_waves(OUT / "waves.png", truth=twin.truth_vector)
    print(f"wrote {OUT}/{{waves.nc, nroy_pairs.png, waves.png}}; total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
