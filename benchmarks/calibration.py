"""Calibration benchmark: what a variational calibration costs with the physics and with the
emulator, and what an adjoint buys over finite differences.

The problem is a twin experiment (:class:`calibration.TwinExperiment`): daily Qle and Qh at
``--sites`` over ``--start .. --end``, 10 % noise, truth RSMIN=180, LAI_SCALE=1.3,
ALB_VEG=0.16 (defaults 100, 1.0, 0.20), the float64 eager physics with its hourly step as the
truth model, both models from the same spun-up start state. Sections:

gradient     one J(x) and one dJ/dx at the prior mean: autograd (one forward + backward) vs
             central finite differences (2d forwards, sent as 2d members of one batched run,
             and as 2d separate runs), for the physics and the emulator; cost in units of one
             J evaluation and the largest relative difference between the gradients.
variational  L-BFGS-B from the prior mean (one start) to convergence: (a) physics with the
             autograd gradient, (b) physics with scipy's own 2-point finite differences
             (``jac=None``, what a tool without an adjoint does), (c) emulator with autograd,
             R = noise only, (d) emulator with its error in R (two-pass estimate, as
             ``TwinExperiment`` does for a fraternal twin; the estimate's runs are counted).
             Forward runs (members evaluated), wall time, final J, distance to the truth in
             posterior sigmas.
mcmc         emcee on the emulator Problem of (d): wall time per 1000 walker-steps, and the
             same per physics J evaluation as a projection (not run: it would take hours).
model_error  ways to put the emulator's error into the calibration, each a one-start
             variational on the emulator: R = noise only; + diag(S) only; mean bias subtracted
             from y with R = noise + cov(D); R = noise + S from prior draws (one pass); the
             two-pass estimate of ``TwinExperiment``. Distance of each optimum to the truth
             and to the physics optimum (the variational section's, else an FD L-BFGS-B run),
             in the emulator posterior's sigmas.
ensemble     EKI and ES-MDA (:mod:`calibration.ensemble_kalman`, EKP's defaults, N = 10 d = 30 and 100
             members, seed 0) against the variational and MCMC posteriors, on two Problems:
             (i) the physics identical twin, reference = one-start variational (Gauss-Newton
             mode and std; MCMC on the physics would take hours); (ii) the emulator with its
             error in R (two-pass estimate), reference = MCMC (emcee, 16 walkers x
             ``--ens-mcmc-steps``), with the variational posterior and ES-MDA with 16 alphas of 16
             (N = 100, 300) also compared to it. Per
             method: forward runs (members evaluated), wall time, |mean - reference mean| /
             reference sd and sd / reference sd per parameter.
long_window  its own set-up (issue 11): one year (2017) of daily Qle, swvl1 and sd at FR-Fon and
             FI-Hyy (m = 2,190), 4 parameters (RSMIN, LAI_SCALE, ALB_VEG, KSAT), the emulator as
             forward. One Forward call; Forward.jacobian (2190 x 4) in reverse mode (m adjoint
             passes), forward mode (d tangent passes by double backward, the default for d < m)
             and with torch's forward-AD dual numbers (for comparison); then the whole
             ``ailand twin`` command of the issue (``--n-starts 2``, emulator error in R) as a
             subprocess with ``--threads 1`` (its default optimiser: Levenberg-Marquardt with
             batched finite-difference directions). ``before`` holds the same measurements made
             on the code before the forward mode (reverse-mode H everywhere) and before the
             Levenberg-Marquardt default (forward-mode H, L-BFGS-B).

    .venv/bin/python benchmarks/calibration.py --threads 1           # ~10-20 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py --threads 1 --only ensemble   # ~15 min
    .venv/bin/python benchmarks/calibration.py --quick               # smoke run, ~2 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py --threads 1 --only long_window   # ~10 min

Prints a table per section and writes JSON (``--out``, default
``benchmarks/results/calibration.json``; ``--quick``: ``/tmp/bench/calibration_quick.json``).
Timings on the shared 2-core machine are noisy: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from common import best_time  # benchmarks/common.py, found before the folder leaves the path

ROOT = Path(__file__).resolve().parent.parent
# this file is named like the package it measures (as benchmarks/sensitivity.py): drop its own
# folder from the path so that `import calibration` finds the package, not this script
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != Path(__file__).resolve().parent]
TRUTH = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16}
SECTIONS = ("gradient", "variational", "mcmc", "model_error", "ensemble", "long_window")
LONG_WINDOW = ["--sites", "FR-Fon,FI-Hyy", "--params", "RSMIN,LAI_SCALE,ALB_VEG,KSAT", "--start", "2017-01-01",
               "--end", "2017-12-31", "--observe", "Qle,swvl1,sd", "--forward", "emulator", "--methods", "variational",
               "--n-starts", "2", "--threads", "1"]
LONG_WINDOW_BEFORE = {  # measured on the code before forward mode (reverse-mode H), one thread, 2-core machine
    "issue_11": {"forward_call_s": 0.54, "jacobian_reverse_s": 343.0, "twin_total_s": 1380.0,
                 "twin_model_error_s": 748.0, "twin_variational_s": 551.0},
    "rerun_70947ae": {"twin_total_s": 1535.2, "twin_model_error_s": 842.7, "twin_variational_s": 609.8,
                      "load_average": "0.2 at the start, 2.0-2.9 during (other jobs)",
                      "command": "ailand twin " + " ".join(LONG_WINDOW)},
    "forward_mode_lbfgsb_63f4a18": {  # forward-mode H, L-BFGS-B (before the Levenberg-Marquardt default)
        "twin_total_s": 619.0, "twin_total_s_loaded": 1011.6, "twin_model_error_s_loaded": 471.3,
        "twin_variational_s_loaded": 496.3, "variational_forward_runs": 118,
        "load_average": "1 (619 s); 2.0-2.9, other jobs (1011.6 s)",
        "command": "ailand twin " + " ".join(LONG_WINDOW) + " --optimizer lbfgsb"},
}


def gradient_section(problem, x0, label: str, repeat: int) -> dict:
    """J, autograd dJ/dx and central-FD dJ/dx at ``x0`` for one Problem."""
    d = x0.size
    t_J, J0 = best_time(lambda: problem.cost(x0), repeat)
    t_g, g = best_time(lambda: problem.gradient(x0), repeat)
    h = 1e-4 * np.maximum(np.abs(x0), 1e-8)  # relative step in physical units
    X = np.vstack([x0 + np.eye(d)[j] * h[j] * s for j in range(d) for s in (1.0, -1.0)])  # (2d, d)

    def fd_batched():
        J = np.asarray(problem.cost(X), dtype=float)
        return (J[0::2] - J[1::2]) / (2 * h)

    def fd_loop():
        J = np.array([float(problem.cost(row)) for row in X])
        return (J[0::2] - J[1::2]) / (2 * h)

    t_fdb, g_fd = best_time(fd_batched, repeat)
    t_fdl, _ = best_time(fd_loop, 1)
    rel = float(np.max(np.abs(np.asarray(g) - g_fd) / np.maximum(np.abs(g_fd), 1e-12)))
    return {
        "model": label, "J": float(J0), "t_J_s": t_J, "t_grad_autograd_s": t_g,
        "grad_cost_in_J": t_g / t_J, "t_grad_fd_batched_s": t_fdb, "fd_batched_cost_in_J": t_fdb / t_J,
        "t_grad_fd_loop_s": t_fdl, "fd_loop_cost_in_J": t_fdl / t_J, "fd_evaluations": 2 * d,
        "max_rel_diff_autograd_vs_fd": rel,
    }


def lbfgs_fd(problem, x0, maxiter: int = 200):
    """L-BFGS-B in the standardised control u with scipy's 2-point FD gradient (no adjoint)."""
    import scipy.optimize

    ub = problem.u_bounds
    bounds = [(lo, hi) for lo, hi in ub]
    res = scipy.optimize.minimize(lambda u: float(problem.cost(problem.from_u(np.clip(u, ub[:, 0], ub[:, 1])))),
                                  problem.to_u(x0), method="L-BFGS-B", bounds=bounds,
                                  options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8})
    return problem.from_u(np.clip(res.x, ub[:, 0], ub[:, 1])), float(res.fun), int(res.nit), bool(res.success)


def ensemble_section(phys, emu, mcmc_steps: int) -> dict:
    """EKI / ES-MDA vs variational (physics) and vs MCMC (emulator with its error in R)."""
    import calibration as cal

    names = list(TRUTH)
    truth = np.array(list(TRUTH.values()))
    out = {"note": "z_mean = |mean - reference mean| / reference sd; sd_ratio = sd / reference sd (per parameter)"}

    def timed(fn, problem):
        r0, t0 = problem.n_forward_runs, time.perf_counter()
        res = fn()
        return res, int(problem.n_forward_runs - r0), time.perf_counter() - t0

    def compare(label, problem, ref_mean, ref_sd, rows, fn):
        res, runs, wall = timed(fn, problem)
        mean, sd = np.asarray(res["mean"]), np.asarray(res["std"])
        row = {"method": label, "forward_runs": runs, "wall_s": wall, "mean": dict(zip(names, map(float, mean))),
               "std": dict(zip(names, map(float, sd))),
               "z_mean": dict(zip(names, map(float, np.abs(mean - ref_mean) / ref_sd))),
               "sd_ratio": dict(zip(names, map(float, sd / ref_sd))),
               "z_truth": dict(zip(names, map(float, np.abs(mean - truth) / sd))), **res.get("info", {})}
        rows.append(row)
        print(f"{label:28s} runs {runs:6d} {wall:8.1f} s  |mean - ref|/sd {np.array2string(np.abs(mean - ref_mean) / ref_sd, precision=2)}"
              f"  sd/ref sd {np.array2string(sd / ref_sd, precision=2)}")
        return row

    def ens(fn, problem, n, **kw):
        def go():
            r = fn(problem, n_ensemble=n, seed=0, **kw)
            return {"mean": r.mean, "std": r.std, "info": {"iterations": int(len(r.step) - 1),
                                                              "final_misfit": float(r.misfit[-1])}}
        return go

    # (i) physics identical twin: reference = variational Gauss-Newton
    p = phys.problem
    print("\nensemble methods on the physics twin (reference: one-start variational, Gauss-Newton sd)")
    ref, runs, wall = timed(lambda: cal.variational(p, n_starts=1, seed=0), p)
    ref_mean, ref_sd = ref.x, ref.std
    rows = [{"method": "variational (reference)", "forward_runs": runs, "wall_s": wall,
             "mean": dict(zip(names, map(float, ref_mean))), "std": dict(zip(names, map(float, ref_sd))),
             "z_truth": dict(zip(names, map(float, np.abs(ref_mean - truth) / ref_sd)))}]
    print(f"{'variational (reference)':28s} runs {runs:6d} {wall:8.1f} s  mean {np.array2string(ref_mean, precision=4)}  "
          f"sd {np.array2string(ref_sd, precision=3)}")
    for n in (30, 100):
        compare(f"eki N={n}", p, ref_mean, ref_sd, rows, ens(cal.eki, p, n))
        compare(f"esmda N={n}", p, ref_mean, ref_sd, rows, ens(cal.esmda, p, n))
    out["physics"] = {"reference": "variational (one start, Gauss-Newton)", "rows": rows}

    # (ii) emulator with its error in R: reference = MCMC
    if emu.model_error is None:
        emu.estimate_model_error(n_starts=1)
    p = emu.problem
    print(f"\nensemble methods on the emulator twin with its error in R (reference: MCMC, 16 walkers x {mcmc_steps} steps)")
    ref, runs, wall = timed(lambda: cal.mcmc(p, n_walkers=16, n_steps=mcmc_steps, seed=0, progress=False), p)
    ref_mean, ref_sd = ref.mean, ref.std
    rows = [{"method": "mcmc (reference)", "forward_runs": runs, "wall_s": wall, "mean": dict(zip(names, map(float, ref_mean))),
             "std": dict(zip(names, map(float, ref_sd))), "tau_max": float(np.max(ref.tau)), "n_eff": float(ref.n_eff),
             "z_truth": dict(zip(names, map(float, np.abs(ref_mean - truth) / ref_sd)))}]
    print(f"{'mcmc (reference)':28s} runs {runs:6d} {wall:8.1f} s  mean {np.array2string(ref_mean, precision=4)}  "
          f"sd {np.array2string(ref_sd, precision=3)}  n_eff {ref.n_eff:.0f}")

    def var():
        r = cal.variational(p, n_starts=1, seed=0)
        return {"mean": r.x, "std": r.std}

    compare("variational (1 start)", p, ref_mean, ref_sd, rows, var)
    for n in (30, 100):
        compare(f"eki N={n}", p, ref_mean, ref_sd, rows, ens(cal.eki, p, n))
        compare(f"esmda N={n}", p, ref_mean, ref_sd, rows, ens(cal.esmda, p, n))
    for n in (100, 300):  # smaller steps: 16 alphas of 16 (the nonlinearity of the response)
        compare(f"esmda N={n} alphas 16 x 16", p, ref_mean, ref_sd, rows, ens(cal.esmda, p, n, alphas=(16.0,) * 16))
    out["emulator"] = {"reference": f"mcmc (16 walkers x {mcmc_steps} steps)", "rows": rows,
                       "model_error_estimate": "two passes, not counted in the rows"}
    return out


def long_window_section(skip_reverse: bool = False) -> dict:
    """Forward call and Jacobian modes on the one-year window, then the whole twin command."""
    import subprocess
    import tempfile

    import torch
    import torch.autograd.forward_ad as fwAD

    import ailand
    import calibration as cal
    from ailand.emulator import Emulator

    opt = dict(zip(LONG_WINDOW[::2], LONG_WINDOW[1::2]))
    forcing = ailand.synthetic_forcing(opt["--sites"].split(","), opt["--start"], opt["--end"], seed=0)
    physics = ailand.ToyEcLand(dtype=torch.float64)  # as the CLI: only its spun-up state is used here
    space = physics.space.subset(opt["--params"].split(","))
    state0 = physics.initial_conditions(forcing, spinup_years=1)
    F = cal.Forward(Emulator.default(), forcing, space, cal.Observe(opt["--observe"].split(","), freq="1D"), state0=state0)
    x = torch.as_tensor(space.default_vector)[None]
    n, d = x.shape
    row = {"m": F.n_obs, "d": d, "before": LONG_WINDOW_BEFORE}
    row["forward_call_s"], _ = best_time(lambda: F(x.numpy()), 3)
    row["jacobian_forward_s"], Jf = best_time(lambda: F.jacobian(x, mode="forward"))
    row["jacobian_auto_mode"] = cal.forward.jacobian_mode(d, F.n_obs)

    def dual():  # d members, member j with tangent e_j: one run of dual numbers
        with fwAD.dual_level():
            y = F(fwAD.make_dual(x.repeat_interleave(d, 0), torch.eye(d, dtype=x.dtype).repeat(n, 1)))
            return fwAD.unpack_dual(y).tangent.detach().reshape(n, d, -1).permute(0, 2, 1).to(torch.float64)

    row["jacobian_dual_numbers_s"], Jd = best_time(dual)
    scale = Jf.abs().amax(dim=1, keepdim=True)
    row["max_rel_diff_dual_vs_forward"] = float(((Jd - Jf).abs() / scale).max())
    if not skip_reverse:
        row["jacobian_reverse_s"], Jr = best_time(lambda: F.jacobian(x, mode="reverse"))
        row["max_rel_diff_forward_vs_reverse"] = float(((Jf - Jr).abs() / scale).max())
    print(f"\nlong window: m = {F.n_obs}, d = {d} (emulator); one Forward call {row['forward_call_s']:.2f} s; "
          f"Forward.jacobian: forward mode {row['jacobian_forward_s']:.1f} s, dual numbers "
          f"{row['jacobian_dual_numbers_s']:.1f} s, reverse mode {row.get('jacobian_reverse_s', float('nan')):.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ailand.cli", "twin", *LONG_WINDOW, "--out", tmp]
        t0, load0 = time.perf_counter(), os.getloadavg()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        row["twin_wall_s"] = time.perf_counter() - t0
    row["twin_load_average"] = [load0, os.getloadavg()]
    row["twin_command"] = "OMP_NUM_THREADS=1 ailand twin " + " ".join(LONG_WINDOW)
    row["twin_returncode"] = proc.returncode
    row["twin_stdout_tail"] = proc.stdout.splitlines()[-14:]
    print(f"twin ({row['twin_command']}): {row['twin_wall_s']:.1f} s (before: "
          f"{LONG_WINDOW_BEFORE['rerun_70947ae']['twin_total_s']:.0f} s; issue: {LONG_WINDOW_BEFORE['issue_11']['twin_total_s']:.0f} s; "
          f"forward-mode H with L-BFGS-B: {LONG_WINDOW_BEFORE['forward_mode_lbfgsb_63f4a18']['twin_total_s']:.0f} s)")
    print("\n".join(row["twin_stdout_tail"][-4:]))
    if proc.returncode:
        print(proc.stderr[-2000:])
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", default="FR-Fon,FI-Hyy")
    p.add_argument("--start", default="2020-06-01")
    p.add_argument("--end", default="2020-07-31")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 on a loaded machine)")
    p.add_argument("--repeat", type=int, default=3, help="repeats of each gradient timing (best of)")
    p.add_argument("--mcmc-steps", type=int, default=300)
    p.add_argument("--ens-mcmc-steps", type=int, default=1000, help="ensemble section: steps of the reference MCMC")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="one site, 10 days, fewer repeats (smoke run)")
    p.add_argument("--skip-reverse", action="store_true", help="long_window: leave out the reverse-mode Jacobian (~6 min)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.sites, args.start, args.end, args.repeat, args.mcmc_steps = "FR-Fon", "2020-06-01", "2020-06-10", 1, 50
    out = Path(args.out or (ROOT / "benchmarks" / "results" / "calibration.json" if not args.quick
                            else "/tmp/bench/calibration_quick.json"))
    only = set(args.only.split(","))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*outside the training range.*")
    import ailand
    import calibration as cal
    from ailand.emulator import Emulator

    result = {
        "benchmark": "calibration", "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_start": os.getloadavg()},
        "setup": {"sites": args.sites, "period": f"{args.start}..{args.end}", "truth": TRUTH, "noise": 0.1,
                  "observe": "daily Qle, Qh", "truth_model": "ToyEcLand float64 eager, dt 3600 s",
                  "emulator": "Emulator.default() (data/emulator/default.pt, 6-hourly)"},
    }
    if "long_window" in only:
        result["long_window"] = long_window_section(args.skip_reverse)
    if only == {"long_window"}:  # it has its own set-up: skip the twins of the other sections
        return _write(result, only, out)
    physics = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    emulator = Emulator.default()
    forcing = ailand.synthetic_forcing(args.sites.split(","), args.start, args.end, seed=0)
    space = physics.space.subset(list(TRUTH))
    observe = cal.Observe(["Qle", "Qh"], freq="1D")
    t0 = time.perf_counter()
    phys = cal.TwinExperiment(physics, forcing, space, TRUTH, observe, noise=0.1, seed=0, spinup_years=1)
    emu = cal.TwinExperiment(physics, forcing, space, TRUTH, observe, noise=0.1, seed=0, state0=phys.state0,
                             forward_model=emulator)
    result["setup"]["n_obs"] = int(phys.y.size)
    result["setup"]["setup_s"] = time.perf_counter() - t0
    x0 = np.asarray(phys.problem.x_b, dtype=float)
    print(f"twin: {phys.y.size} observations, {len(TRUTH)} parameters; set-up {result['setup']['setup_s']:.1f} s")

    if "gradient" in only:
        rows = [gradient_section(phys.problem, x0, "physics", args.repeat),
                gradient_section(emu.problem, x0, "emulator", args.repeat)]
        result["gradient"] = rows
        print("\ngradient of J at the prior mean (cost in units of one J evaluation)")
        print(f"{'model':10s} {'J [s]':>8s} {'autograd':>9s} {'FD batched':>11s} {'FD loop':>9s} {'max rel diff':>13s}")
        for r in rows:
            print(f"{r['model']:10s} {r['t_J_s']:8.3f} {r['grad_cost_in_J']:9.2f} {r['fd_batched_cost_in_J']:11.2f} "
                  f"{r['fd_loop_cost_in_J']:9.2f} {r['max_rel_diff_autograd_vs_fd']:13.2e}")

    if "variational" in only or "mcmc" in only:
        rows = []

        def var_row(label, problem, run, truth=np.array(list(TRUTH.values()))):
            r0 = problem.n_forward_runs
            t, res = best_time(run)
            x, J, std = res["x"], res["J"], res.get("std")
            row = {"case": label, "forward_runs": int(problem.n_forward_runs - r0) + res.get("extra_runs", 0),
                   "wall_s": t + res.get("extra_s", 0.0), "J": J, "x": dict(zip(TRUTH, map(float, x))),
                   "truth_rmse_obs": phys.rmse(x, model="truth"), **res.get("info", {})}
            if std is not None:
                row["std"] = dict(zip(TRUTH, map(float, std)))
                row["z_truth"] = dict(zip(TRUTH, map(float, (x - truth) / std)))
            rows.append(row)
            print(f"{label:34s} runs {row['forward_runs']:5d}  {row['wall_s']:7.1f} s  J {J:10.3f}  "
                  f"physics obs RMSE {row['truth_rmse_obs']:.3f}")
            return res

        print(f"\nvariational, one start from the prior mean (noise std RMS "
              f"{float(np.sqrt(np.mean(phys.obs_std**2))):.3f} W m-2)")

        def run_var(problem):
            def go():
                r = cal.variational(problem, n_starts=1, seed=0)
                return {"x": r.x, "J": r.J, "std": r.std, "info": {"nit": int(r.nit[0])}}
            return go

        if "variational" in only:
            var_row("physics, autograd gradient", phys.problem, run_var(phys.problem))

            def go_fd():
                x, J, nit, ok = lbfgs_fd(phys.problem, x0)
                return {"x": x, "J": J, "info": {"nit": nit, "success": ok}}
            var_row("physics, finite-difference gradient", phys.problem, go_fd)
            p_noerr = cal.Problem(emu.forward, emu.y, obs_std=emu.obs_std, prior=space)
            var_row("emulator, R = noise only", p_noerr, run_var(p_noerr))

        def go_err():
            t1 = time.perf_counter()
            emu.estimate_model_error(n_starts=1)
            est_s = time.perf_counter() - t1
            r = cal.variational(emu.problem, n_starts=1, seed=0, starts=emu.model_error_info["pass1_x"][None])
            i = emu.model_error_info
            return {"x": r.x, "J": r.J, "std": r.std, "extra_runs": i["inference_runs"], "extra_s": est_s,
                    "info": {"nit": int(r.nit[0]), "model_error_physics_runs": i["reference_runs"],
                             "model_error_estimate_s": est_s}}
        var_row("emulator, emulator error in R", emu.problem, go_err)
        result["variational"] = rows

    if "mcmc" in only:
        from calibration import mcmc

        walkers = 16
        t, res = best_time(lambda: mcmc(emu.problem, n_walkers=walkers, n_steps=args.mcmc_steps, seed=0,
                                    start=None, progress=False))
        per_1000 = t / (walkers * args.mcmc_steps) * 1000
        t_phys_J = next((r["t_J_s"] for r in result.get("gradient", []) if r["model"] == "physics"), None)
        if t_phys_J is None:
            t_phys_J, _ = best_time(lambda: phys.problem.cost(x0))
        t_emu_batch, _ = best_time(lambda: emu.problem.cost(np.tile(x0, (walkers, 1))), args.repeat)
        result["mcmc"] = {"walkers": walkers, "steps": args.mcmc_steps, "wall_s": t, "s_per_1000_walker_steps": per_1000,
                          "acceptance": float(np.mean(res.acceptance)), "tau_max": float(np.max(res.tau)),
                          "physics_projection_s_per_1000_walker_steps": t_phys_J * 1000,
                          "emulator_J_batch_of_walkers_s": t_emu_batch,
                          "note": "physics projection = 1000 x one physics J evaluation (not run)"}
        print(f"\nmcmc on the emulator: {walkers} walkers x {args.mcmc_steps} steps in {t:.1f} s = {per_1000:.2f} s per "
              f"1000 walker-steps; physics (projected, one J per walker-step): {t_phys_J * 1000:.0f} s")

    if "model_error" in only:
        truth = np.array(list(TRUTH.values()))
        x_phys = next((np.array(list(r["x"].values())) for r in result.get("variational", [])
                       if r["case"] == "physics, autograd gradient"), None)
        if x_phys is None:
            x_phys = lbfgs_fd(phys.problem, x0)[0]
        t0 = time.perf_counter()
        me = cal.model_error(emu.forward, emu.truth_forward, space, n=32, seed=0)
        D, obs_var = me.differences, emu.obs_std**2
        variants = {
            "R = noise only": (emu.y, np.diag(obs_var)),
            "R = noise + diag(S), prior draws": (emu.y, np.diag(obs_var + np.diag(me.covariance))),
            "y - mean bias, R = noise + cov(D)": (emu.y - me.bias, np.diag(obs_var) + np.cov(D.T)),
            "R = noise + S, prior draws (1 pass)": (emu.y, me.total_covariance(emu.obs_std)),
        }
        rows = []
        print("\nthe emulator's error in the calibration (one start each; sigmas are the emulator posterior's)")
        for label, (y, R) in variants.items():
            r = cal.variational(cal.Problem(emu.forward, y, R=R, prior=space), n_starts=1, seed=0)
            rows.append((label, r.x, r.std))
        twin2 = cal.TwinExperiment(physics, forcing, space, TRUTH, observe, noise=0.1, seed=0, state0=phys.state0,
                                   forward_model=emulator)
        twin2.estimate_model_error(n_starts=1)
        r = cal.variational(twin2.problem, n_starts=1, seed=0, starts=twin2.model_error_info["pass1_x"][None])
        rows.append(("R = noise + S around a first posterior (2 passes)", r.x, r.std))
        out_rows = []
        for label, x, sd in rows:
            z_t, z_p = (x - truth) / sd, (x - x_phys) / sd
            out_rows.append({"case": label, "x": dict(zip(TRUTH, map(float, x))), "std": dict(zip(TRUTH, map(float, sd))),
                             "z_truth": dict(zip(TRUTH, map(float, z_t))), "z_physics_optimum": dict(zip(TRUTH, map(float, z_p)))})
            print(f"{label:52s} |x - truth|/sd {np.array2string(np.abs(z_t), precision=2)}  "
                  f"|x - physics optimum|/sd {np.array2string(np.abs(z_p), precision=2)}")
        result["model_error"] = {"physics_optimum": dict(zip(TRUTH, map(float, x_phys))), "draws": 32,
                                 "wall_s": time.perf_counter() - t0, "cases": out_rows}

    if "ensemble" in only:
        result["ensemble"] = ensemble_section(phys, emu, args.ens_mcmc_steps)
    return _write(result, only, out)


def _write(result: dict, only: set, out: Path) -> int:
    """Write the JSON (merging into the last results when only some sections ran)."""
    result["machine"]["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and only != set(SECTIONS):  # --only some sections: keep the others' last results
        previous = json.loads(out.read_text())
        previous.update({k: v for k, v in result.items() if k in only})
        previous.setdefault("partial_runs", []).append({"sections": sorted(only), "date": result["date"],
                                                        "machine": result["machine"]})
        result = previous
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
