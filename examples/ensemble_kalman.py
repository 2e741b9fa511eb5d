"""Ensemble Kalman methods: recipes.

Section "Lorenz-96 LETKF twin" (:func:`l96_twin`)
-------------------------------------------------
DAPPER's ``sakov2008`` twin (F = 8, 40 variables all observed every RK4 step of 0.05, R = I):
the LETKF (N = 7, inflation 1.04 on the analysis anomalies, rotation, Gaspari-Cohn loc_rad = 4)
with a fixed-lag smoother, the same with every other variable observed, 3D-Var and the free
run as baselines, and the forcing F estimated by state augmentation (prior 7, truth 8).
Writes ``runs/ensemble_kalman/l96/``: ``l96.png``, ``letkf.nc``, ``summary.json``.
The same filter from the command line: ``ailand l96 --method letkf --members 7 --infl 1.04 --loc-rad 4``.
Measured results and runtime: see the ``l96_twin`` docstring.

Section "Land filter" (:func:`land_filter`)
------------------------------------------
The ETKF cycling the toy ecLand at two sites: soil water corrected and per-site rainfall
factors recovered from daily top-layer soil moisture. Writes ``runs/ensemble_kalman/land/``.

Section "EKI and ES-MDA on the toy ecLand twin" (:func:`ecland_twin`)
--------------------------------------------------------------------
Gradient-free calibration of RSMIN, LAI_SCALE and ALB_VEG from daily latent (Qle) and
sensible (Qh) heat flux at FR-Fon and FI-Hyy over June-July 2020 with 10 % noise, the toy
ecLand physics as both truth and inference model (an identical twin; the same case as
``benchmarks/calibration.py``):

1. ensemble Kalman inversion (:func:`calibration.eki`, EnsembleKalmanProcesses.jl's
   defaults: 10 d = 30 members drawn from the prior, adaptive steps to algorithm time 1,
   failed members redrawn) and ES-MDA (:func:`calibration.esmda`, alphas 4, 4, 4, 4), each
   member a column of one vectorised physics run, no gradient;
2. the twin report (truth, prior and both posteriors, :meth:`calibration.TwinResult.report`)
   and each method's ensemble against iteration (:meth:`calibration.EnsembleResult.plot`).

Writes ``runs/ensemble_kalman/ecland/``: ``report.md``, ``twin.nc``, ``twin.png``,
``eki.nc``, ``eki.png``, ``esmda.nc``, ``esmda.png``.

Run (from the repository root)::

    .venv/bin/python examples/ensemble_kalman.py            # every section
    .venv/bin/python examples/ensemble_kalman.py ecland     # this section only
    .venv/bin/python examples/ensemble_kalman.py l96        # the Lorenz-96 section only
    .venv/bin/python examples/ensemble_kalman.py land       # the land filter section only

The same twin from the command line (without the per-iteration figures)::

    ailand twin --sites FR-Fon,FI-Hyy --start 2020-06-01 --end 2020-07-31 \\
        --params RSMIN,LAI_SCALE,ALB_VEG --truth RSMIN=180,LAI_SCALE=1.3,ALB_VEG=0.16 \\
        --observe Qle,Qh --freq 1D --noise 0.1 --methods eki,esmda --out runs/twin_ensemble

Measured results (seed 0) and runtime: see the ``ecland_twin`` docstring.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

OUT = Path("runs/ensemble_kalman")


# ---------------------------------------------------------------- EKI and ES-MDA on the toy ecLand twin
def ecland_twin(out: Path = OUT / "ecland") -> Path:
    """EKI and ES-MDA on the physics twin; writes the report and figures into ``out``.

    Measured on the loaded 2-core development machine (``torch.set_num_threads(1)``), seed 0:
    69 s wall in all (set-up with a 1-year spin-up 10 s). EKI took 3 updates (steps 0.033, 0.501,
    0.466) and 120 physics runs in 15.6 s. ES-MDA took 4 updates and 150 runs in 21.7 s. The data
    misfit fell from 3707 to 124 (m/2 = 122).

        parameter   truth  prior          eki                esmda
        RSMIN       180    100 +- 58      183.5 +- 5.3       181.8 +- 5.1
        LAI_SCALE   1.3    1.0 +- 0.25    1.315 +- 0.031     1.313 +- 0.031
        ALB_VEG     0.16   0.20 +- 0.045  0.1620 +- 0.0015   0.1621 +- 0.0016

    Both contain the truth within 2 sigma. Observation RMSE: 8.958 at the prior mean, 2.675 (eki)
    and 2.673 (esmda) after, against a noise std RMS of 2.708 W m-2. One-start variational on the
    same case (``benchmarks/calibration.py --only ensemble``) took 550 s and 690 s (two runs) for 184.97 +- 5.3,
    1.334 +- 0.035, 0.1623 +- 0.0016. The README's "EKI and ES-MDA" tables compare this case with
    variational and MCMC.
    """
    import numpy as np
    import torch

    import ailand
    import calibration as cal

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    truth = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16}  # defaults 100, 1.0, 0.20
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    forcing = ailand.synthetic_forcing(["FR-Fon", "FI-Hyy"], "2020-06-01", "2020-07-31", seed=0)
    twin = cal.TwinExperiment(model, forcing, model.space.subset(list(truth)), truth,
                              cal.Observe(["Qle", "Qh"], freq="1D"), noise=0.1, seed=0, spinup_years=1)
    print(f"twin: {twin.y.size} observations of {', '.join(truth)}; set-up {time.perf_counter() - t0:.1f} s")

    res = twin.run(methods=("eki", "esmda"))  # 30 members each; see TwinExperiment.run for n_ensemble
    res.report(out)
    for m in res.methods:
        r = res.results[m]
        r.to_netcdf(out / f"{m}.nc")
        r.plot(out / f"{m}.png")
        steps = ", ".join(f"{s:.3g}" for s in r.step[1:])
        print(f"{m}: {len(r.step) - 1} updates (steps {steps}), {r.n_forward_runs} physics runs in "
              f"{res.wall_time[res.methods.index(m)]:.1f} s; data misfit {r.misfit[0]:.0f} -> {r.misfit[-1]:.0f} "
              f"(m/2 = {r.n_obs / 2:.0f})")
    print()
    print(res.table())
    inside = np.asarray(res.inside_2sigma).all(1)
    print("\n" + "; ".join(f"{m}: truth {'inside' if ok else 'NOT inside'} 2 sigma" for m, ok in zip(res.methods, inside)))
    print(f"obs RMSE {res.rmse_before:.3f} (prior mean) -> " + ", ".join(
        f"{m} {v:.3f}" for m, v in zip(res.methods, res.rmse_after)) + f" (noise std RMS {res.noise_rms:.3f}) [W m-2]")
    print(f"wrote {out}/; {time.perf_counter() - t0:.0f} s")
    return out


# ---------------------------------------------------------------- Lorenz-96 LETKF twin
def l96_twin(out: Path = OUT / "l96") -> Path:
    """LETKF on DAPPER's Lorenz-96 ``sakov2008`` twin, a fixed-lag smoother, and F by augmentation.

    1. truth and observations (40 variables every step, R = I, 1001 cycles, seed 3000);
    2. the LETKF with DAPPER's tuned case (N = 7, posterior inflation 1.04, random rotation,
       Gaspari-Cohn R-localisation loc_rad = 4 on batches of 2 points) with a fixed-lag smoother
       (lag 4 cycles), against 3D-Var with a scaled climatological B and the free run;
    3. half the variables observed (``obs_stride=2``), the same LETKF;
    4. F unknown (prior 7 +- 0.1, truth 8) estimated with the state by the ETKF (N = 20).

    Writes ``runs/ensemble_kalman/l96/``: ``letkf.nc`` (the filter Dataset), ``l96.png``
    (truth / observations / forecast / analysis with spread for x0; RMSE and spread over time;
    the F estimate), ``summary.json``.

    Measured (seed 3000, 1001 cycles, averages over the 601 analyses at t > 20; 15 s on the
    loaded 2-core machine): LETKF rmse_a 0.215, spread 0.241, fixed-lag smoother (lag 4) 0.165;
    half observed rmse_a 0.301; 3D-Var (B = 0.02 x climatology) 0.403; free run 5.21; F estimate
    after t > 5: 7.987 +- 0.039 (truth 8, prior 7).
    """
    import json

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from calibration.ensemble_kalman import plot_filter
    from calibration.ensemble_kalman import lorenz96_twin as lt

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = lt.simulate(1001, seed=3000)
    ds = lt.twin("letkf", N=7, infl=1.04, loc_rad=4.0, data=data, lag=4)
    half = lt.twin("letkf", N=7, infl=1.04, loc_rad=4.0, obs_stride=2, seed=3000)
    v3 = lt.var3d(data, xB=0.02)
    free = lt.free_run_rmse(data)
    p = lt.param_twin(N=20, infl=1.04, cycles=1000)
    a = ds.attrs
    summary = {"letkf": {k: a[k] for k in ("rmse_a", "spread_a", "rmse_f", "rmse_s", "n_averaged")},
               "letkf_half_observed": {k: half.attrs[k] for k in ("rmse_a", "spread_a")},
               "var3d_rmse_a": v3, "free_run_rmse": free, "F_a": p.attrs["F_a"], "F_spread_a": p.attrs["F_spread_a"],
               "wall_s": time.perf_counter() - t0}
    print(f"LETKF N=7: rmse_a {a['rmse_a']:.3f}, spread_a {a['spread_a']:.3f}, smoother (lag 4) {a['rmse_s']:.3f} "
          f"over {a['n_averaged']} analyses (t > 20); half observed: rmse_a {half.attrs['rmse_a']:.3f}; "
          f"3D-Var {v3:.3f}; free run {free:.3f}")
    print(f"F by augmentation: {p.attrs['F_a']:.3f} +- {p.attrs['F_spread_a']:.3f} (truth 8, prior 7)")

    fig, axes = plt.subplots(3, 1, figsize=(10, 9))
    plot_filter(ds, "x0", ax=axes[0], t_range=(0, 15))
    ax = axes[1]
    ax.semilogy(ds.time, ds.rmse_a, lw=0.8, label="LETKF analysis RMSE")
    ax.semilogy(ds.time, ds.rmv_a, lw=0.8, label="LETKF analysis spread")
    ax.semilogy(half.time, half.rmse_a, lw=0.8, label="half observed: RMSE")
    ax.axhline(v3, color="k", ls="--", lw=0.8, label=f"3D-Var mean RMSE {v3:.2f}")
    ax.axvline(20, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("time")
    ax.set_ylabel("RMS over 40 variables")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    F, Fs = p["mean_a"].sel(variable="F"), p["spread_a"].sel(variable="F")
    ax.plot(p.time, F, label="F analysis mean")
    ax.fill_between(p.time, F - Fs, F + Fs, alpha=0.3, label="+-1 spread")
    ax.axhline(8, color="k", lw=1, label="truth")
    ax.set_xlabel("time")
    ax.set_ylabel("F")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "l96.png", dpi=110)
    plt.close(fig)
    ds.drop_vars([v for v in ("ensemble_a",) if v in ds]).to_netcdf(out / "letkf.nc")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}/; {time.perf_counter() - t0:.0f} s")
    return out


# ---------------------------------------------------------------- land DA: soil water and rain factors
def land_filter(out: Path = OUT / "land") -> Path:
    """The ETKF cycling the toy ecLand (:class:`calibration.ensemble_kalman.LandStep`).

    Truth: the physics (float64, 3-hourly step) at FR-Fon and FI-Hyy from 1 May 2020 for 60
    days with the rainfall scaled by 0.6 and 1.4; daily observations of the top-layer soil
    moisture ``swvl1`` at the end of each day (error 0.01 m3 m-3). The 30-member ensemble starts
    0.05 m3 m-3 too dry in the top two layers (spread 0.03) with rain factors N(1, 0.3^2) per
    site; the state (soil water and temperature, skin temperature, snow, interception) and the
    two factors are analysed together (posterior inflation 1.02). The free run is the same
    ensemble without analyses.

    Writes ``runs/ensemble_kalman/land/``: ``land.nc`` (the filter Dataset), ``land.png``
    (swvl1 and swvl2 at FR-Fon: truth, observations, free run, analysis with spread; the factors
    against time), ``summary.json``.

    Measured (seed 0/1; 13 s on the loaded 2-core machine): swvl1-2 RMSE over the last 30
    days 0.0015 m3 m-3 (analysis) against 0.0137 (free run); rain factors 0.609 +- 0.057 and
    1.456 +- 0.079 (truth 0.6 and 1.4, prior 1 +- 0.3).
    """
    import json

    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    import ailand
    from calibration.ensemble_kalman import CyclingFilter, LandStep

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sites, K, sig, true_f = ["FR-Fon", "FI-Hyy"], 60, 0.01, np.array([0.6, 1.4])
    model = ailand.ToyEcLand(dtype=torch.float64, compile=False, dt=10800.0)
    forcing = ailand.synthetic_forcing(sites, "2020-05-01", "2020-07-01", freq="3h")
    step = LandStep(model, forcing, scale_input="Rainf", spinup_years=0)
    truth = step.truth_run(K, factors=true_f)
    idx = step.obs_index(["swvl1"])
    y = truth[:, idx] + sig * np.random.default_rng(0).standard_normal((K, len(idx)))
    E0 = step.initial_ensemble(30, np.random.default_rng(1), state_std={"swvl1": 0.03, "swvl2": 0.03}, factor_std=0.3)
    E0[:, : 2 * len(sites)] -= 0.05
    flt = CyclingFilter(step, idx, np.full(len(idx), sig**2), step.layout, method="etkf", infl=1.02,
                        names=step.names, units=step.units, input_fn=step.input_fn,
                        factor_index=step.factor_index, seed=0, progress=True)
    ds = flt.run(E0.clone(), y, truth=truth)
    step.reset(30)
    x, f = E0[:, : step.layout.n_state].clone(), E0[:, step.layout.n_state:]
    free = []
    for k in range(K):
        x = step(x, k, None, step.input_fn(k)[None] * f[:, step.factor_index])
        free.append(x.mean(0))
    free = torch.stack(free).numpy()
    soil = [i for i, n in enumerate(step.names) if n.startswith(("swvl1", "swvl2"))]
    rmse = lambda m: float(np.sqrt(((m[K // 2:, soil] - truth[K // 2:, soil]) ** 2).mean()))
    fac = [f"Rainf_factor@{s}" for s in sites]
    summary = {"swvl12_rmse_analysis": rmse(ds.mean_a.values), "swvl12_rmse_free": rmse(free),
               "factor_truth": true_f.tolist(), "factor_mean": ds.mean_a.sel(variable=fac).values[-1].tolist(),
               "factor_spread": ds.spread_a.sel(variable=fac).values[-1].tolist(), "wall_s": time.perf_counter() - t0}
    print(f"swvl1-2 RMSE over the last 30 days: analysis {summary['swvl12_rmse_analysis']:.4f}, free run "
          f"{summary['swvl12_rmse_free']:.4f} m3 m-3; rain factors {np.round(summary['factor_mean'], 3)} "
          f"+- {np.round(summary['factor_spread'], 3)} (truth {true_f})")

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    days = ds.time.values
    for ax, var in zip(axes[:2], ("swvl1@FR-Fon", "swvl2@FR-Fon")):
        j = step.names.index(var)
        m, s_ = ds.mean_a.sel(variable=var), ds.spread_a.sel(variable=var)
        ax.plot(days, truth[:, j], "k", lw=1.2, label="truth")
        if var.startswith("swvl1"):
            ax.plot(days, y[:, 0], "r.", ms=4, label="observations")
        ax.plot(days, free[:, j], color="grey", ls="--", label="free run (ensemble mean)")
        ax.plot(days, m, "C0", label="analysis mean")
        ax.fill_between(days, m - s_, m + s_, color="C0", alpha=0.3, label="+-1 spread")
        ax.set_ylabel(f"{var} [m3 m-3]")
        ax.legend(fontsize=7)
    for i, name in enumerate(fac):
        m, s_ = ds.mean_a.sel(variable=name), ds.spread_a.sel(variable=name)
        axes[2].plot(days, m, f"C{i}", label=name)
        axes[2].fill_between(days, m - s_, m + s_, color=f"C{i}", alpha=0.3)
        axes[2].axhline(true_f[i], color=f"C{i}", ls=":", lw=1)
    axes[2].set_ylabel("rain factor [-]")
    axes[2].set_xlabel("day (analysis at the end of the day)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "land.png", dpi=110)
    plt.close(fig)
    ds.to_netcdf(out / "land.nc")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}/; {time.perf_counter() - t0:.0f} s")
    return out


SECTIONS = {"l96": l96_twin, "ecland": ecland_twin, "land": land_filter}


def main(argv=None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    bad = [n for n in names if n not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    for n in names:
        SECTIONS[n]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
