"""The default twin experiment, history-matched in 10 waves and compared with the posteriors.

The twin is the one of ``make demo``: FR-Fon and FI-Hyy, 2020-06-01 .. 2020-07-31, daily
means of latent (Qle) and sensible (Qh) heat flux (2 x 2 x 61 = 244 data), 10 % noise
(std = 0.1 x each (variable, site) series' std, seed 0), the three parameters Morris
screening keeps (``ailand screen --sites FR-Fon,FI-Hyy --start 2020-06-01 --end 2020-07-31
--outputs Qle,Qh --keep 3``: RSMIN, THETA_PWP, ROOT_BETA), truth = the seeded draw
``calibration.cli.draw_truth(space, names, seed=0)``.

1. **Variational + MCMC** as in ``make demo``: the shipped emulator (or
   ``runs/emulator/emulator.pt`` when ``make emulator`` trained one) as the inference model,
   its error against the physics in R (two passes of 32 draws); modest settings: 2
   variational starts (make demo: 4) and MCMC 300 steps x 16 walkers from the variational
   optimum (make demo: 500). Always run here, never read from an earlier demo.
2. **History matching** on the same observations, 10 waves of 40 runs, with the *physics*
   (``twin.truth_forward``) as the simulator. Why the physics and not the emulator: a wave
   of 40 runs is one vectorised simulation of 40 members (about 4 s here, no gradients
   needed), so the physics costs little more than the emulator and leaves no emulator
   error to account for: the only discrepancy is zero (the simulator made the data), and
   the GP's own variance is in the implausibility. The observation variance is the
   twin's ``obs_std**2``.
   ``nth``: with 244 data and the 3-sigma cutoff, noise alone puts each datum of the truth
   above 3 with probability 0.27 %, so the maximum (``nth=1``) would rule the truth out with
   probability 48 %. ``nth = noise_nth(244, 3, alpha=0.01) = 4`` (at most 3 data above the
   cutoff) keeps that probability <= 1 % (0.4 %). The script prints how many data the seeded
   noise actually puts above 3 at the truth.
3. The NROY fraction by wave (50 000 uniform points, with its Monte-Carlo error), the
   truth's implausibility and NROY status after every wave, the final NROY against the
   variational and MCMC posteriors (table + plot), the NROY pairs and by-wave plots.

Everything goes to ``runs/hm_twin/``: ``waves/`` (the persisted waves: rerunning reuses
them, nothing finished is re-simulated), ``twin/`` (report.md, twin.nc, twin.png),
``nroy_by_wave.csv`` / ``.md``, ``comparison.nc`` / ``.md``, ``hm_twin.png`` (NROY vs
posteriors), ``nroy_pairs.png``, ``waves.png``.

Run (from the repository root)::

    .venv/bin/python examples/history_matching_twin.py

See the README ("Twin: history matching vs variational and MCMC") for the measured numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

import numpy as np
import pandas as pd
import torch

import ailand
from calibration import HistoryMatching, Observe, TwinExperiment
from calibration.cli import draw_truth
from calibration.history_matching.compare import format_table, noise_nth, nroy_vs_posteriors, plot_nroy_vs_posteriors

OUT = Path("runs/hm_twin")
SITES, START, END = ["FR-Fon", "FI-Hyy"], "2020-06-01", "2020-07-31"
PARAMS = ["RSMIN", "THETA_PWP", "ROOT_BETA"]  # what `ailand screen ... --keep 3` keeps for this case (make demo)
N_WAVES, RUNS, CUTOFF, N_MC = 10, 40, 3.0, 50_000
N_STARTS, MCMC_STEPS = 2, 300  # make demo: 4 and 500; modest here (the posterior is unimodal and Gaussian-like)
TRAINED = Path("runs/emulator/emulator.pt")  # as make demo: a trained emulator if there is one


def main():
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    from ailand.emulator import Emulator

    full = ailand.ParameterSpace.default()
    truth = draw_truth(full, PARAMS, seed=0)
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    emulator = Emulator.load(TRAINED) if TRAINED.exists() else Emulator.default()
    forcing = ailand.synthetic_forcing(SITES, START, END, freq="1h", seed=0)
    space = model.space.subset(PARAMS)
    twin = TwinExperiment(model, forcing, space, truth, Observe(["Qle", "Qh"], freq="1D"), noise=0.1, seed=0,
                          forward_model=emulator)
    m = twin.y.size
    nth = noise_nth(m, CUTOFF, alpha=0.01)
    over = int((np.abs(twin.y - twin.y_truth) / twin.obs_std > CUTOFF).sum())
    print(f"default twin: {m} daily Qle/Qh means at {', '.join(SITES)}, {START} .. {END}; truth "
          f"{', '.join(f'{k}={v:.4g}' for k, v in truth.items())}; emulator "
          f"{TRAINED if TRAINED.exists() else 'Emulator.default()'}; set-up {time.perf_counter() - t0:.1f} s")
    print(f"noise alone puts {over} of {m} data of the truth above the cutoff {CUTOFF:g}; nth = {nth} "
          f"(P(truth ruled out by noise) <= 1 %)")

    # ---- 1. variational + MCMC (the make demo settings)
    t = time.perf_counter()
    res = twin.run(methods=("variational", "mcmc"), n_starts=N_STARTS, mcmc_steps=MCMC_STEPS, progress=True)
    res.report(OUT / "twin")
    t_twin = time.perf_counter() - t
    print(f"\nvariational + MCMC with the emulator (its error in R): {t_twin:.1f} s\n{res.table()}")

    # ---- 2. history matching with the physics, 10 waves (resumes from OUT/waves)
    t = time.perf_counter()
    hm = HistoryMatching(twin.truth_forward, twin.y, space, obs_std=twin.obs_std, discrepancy_std=0.0,
                         cutoff=CUTOFF, nth=nth, path=OUT / "waves", seed=0, batch_size=RUNS // 2, n_mc=N_MC)
    if hm.n_waves:
        print(f"\nresuming {OUT / 'waves'}: {hm.n_waves} wave(s) already done")
    tv = twin.truth_vector[None]
    while hm.n_waves < N_WAVES:  # all waves; a stop rule that fires is reported, not obeyed
        if hm.should_stop():
            print(f"  (after wave {hm.n_waves} a stop rule fires: {hm.stop_reason})")
        hm.run_wave(RUNS)
    t_hm = time.perf_counter() - t
    rows = []
    for k in range(1, hm.n_waves + 1):
        ds = hm.waves.sel(wave=k)
        per_wave = [float(hm.implausibility(tv, wave=j)[0]) for j in range(1, k + 1)]
        rows.append({"wave": k, "runs": int(ds["n_runs"]), "failed": int(ds["n_failed"]),
                     "nroy_fraction": float(ds["nroy_fraction"]), "nroy_fraction_se": float(ds["nroy_fraction_se"]),
                     "truth_I_this_wave": per_wave[-1], "truth_I_all_waves": max(per_wave),
                     "truth_nroy": max(per_wave) <= hm.cutoff, "sampler": str(ds["sampler"].values),
                     "max_var_em_over_var_obs": float(np.nanmax(ds["emulator_var_ratio"].values)),
                     "time_s": float(ds["run_time"] + ds["gp_fit_time"])})
    table = pd.DataFrame(rows).set_index("wave")
    table.to_csv(OUT / "nroy_by_wave.csv")
    md = ["| wave | NROY fraction (+- MC s.e.) | I(truth), this wave | truth NROY | design sampler | max Var_em/var_obs |",
          "|---|---|---|---|---|---|"]
    for k, r in table.iterrows():
        md.append(f"| {k} | {r.nroy_fraction:.4g} +- {r.nroy_fraction_se:.2g} | {r.truth_I_this_wave:.3g} | "
                  f"{'yes' if r.truth_nroy else 'NO'} | {r.sampler} | {r.max_var_em_over_var_obs:.3g} |")
    (OUT / "nroy_by_wave.md").write_text("\n".join(md) + "\n")
    print(f"\nhistory matching, physics simulator, {N_WAVES} waves x {RUNS} runs, cutoff {CUTOFF:g}, nth {nth} "
          f"({t_hm:.1f} s this call)")
    print(table.drop(columns=["runs", "failed"]).to_string(float_format=lambda v: f"{v:.4g}"))
    never = bool(table["truth_nroy"].all())
    print(f"CHECK truth NROY at every wave: {'PASS' if never else 'FAIL'} "
          f"(max implausibility of the truth over waves {table['truth_I_all_waves'].max():.3g} <= {CUTOFF:g})")
    if hm.stop_reason:
        print(f"stop rule after wave {hm.n_waves}: {hm.stop_reason}")

    # ---- 3. final NROY vs the posteriors
    cmp = nroy_vs_posteriors(hm, res, truth=twin.truth_vector)
    cmp.to_netcdf(OUT / "comparison.nc")
    text = format_table(cmp)
    (OUT / "comparison.md").write_text(text + "\n")
    print(f"\nfinal NROY vs posteriors\n{text}")
    plot_nroy_vs_posteriors(hm, res, truth=twin.truth_vector, path=OUT / "hm_twin.png", table=cmp)
    hm.plot_pairs(OUT / "nroy_pairs.png", truth=twin.truth_vector)
    hm.plot_waves(OUT / "waves.png", truth=twin.truth_vector)
    print(f"\nwrote {OUT}/{{waves/, twin/, nroy_by_wave.csv, nroy_by_wave.md, comparison.nc, comparison.md, "
          f"hm_twin.png, nroy_pairs.png, waves.png}}; total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
