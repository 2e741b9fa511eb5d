"""aiLand emulator benchmark: training time and skill, rollout throughput vs the physics,
cost of a parameter gradient (autograd vs finite differences), onnxruntime vs torch.

Sections (each runs in its own process, so that timings, torch.compile caches and peak
memory belong to that section alone; ``--only`` picks some):

train     trains a fresh emulator on ``--ensemble`` with the defaults of ``ailand train``
          (MLP 4x256, rollout loss 16 steps x 64, input noise 0.5, 40 epochs x 200 steps,
          patience 10) under a 600 s time limit; wall time, epochs, training throughput, then
          ``evaluate`` ACC (free rollout, daily means) of swvl1, stl1, snowc, Qle on held-out
          members and held-out sites against the skill targets (swvl1, stl1 >= 0.95;
          snowc, Qle >= 0.9). Goal: <= 10 minutes on the 2-core machine.
rollout   the same columns (default sites x M LHS members, one year of synthetic forcing)
          run by the physics (``ToyEcLand().run``, compile "auto", 6-hourly output) and by
          the emulator (``Emulator.run`` from the physics' initial conditions); spin-up is
          done first (``initial_conditions``) and excluded. Each model runs twice: the second
          run is the one reported, the first (torch.compile for the physics) is noted.
gradient  d(mean Qle over the year)/d(all parameters) at the default sites: physics by
          autograd (``rollout_sensitivity``, eager) vs one physics forward (eager, no grad)
          = "adjoint cost in forward runs" (goal <= 5); finite differences measured on 2
          parameters (central) and extrapolated to all (2d forwards central, d+1 one-sided),
          also with the compiled physics as the forward (what FD would really use); the
          emulator's autograd gradient for the same quantity. The physics autograd uses
          ``--physics-checkpoint`` (default "auto": the time loop checkpointed in chunks of
          sqrt(steps); "false" is the unchecked graph, the "before" of issue 13), and
          ``--grad-variants`` adds the same gradient with compile="auto" (the model's default:
          long checkpointed gradients compile both the first pass and the recomputation) and
          compile=True; the RSS increase of each autograd call is sampled while it runs.
onnx      ``to_onnx`` export, then ``OnnxEmulatorStep`` (onnxruntime, same thread count as
          torch) vs ``Emulator.step_flat`` under ``torch.no_grad()`` on realistic input rows
          (``step_inputs``) in batches of 1, 100, 10,000; median time per call, max error.
gpu       only when ``torch.cuda.is_available()``: training throughput (row-steps/s) and
          emulator rollout throughput on "cuda".

    .venv/bin/python benchmarks/emulator.py                          # everything (~15-25 min on 2 cores)
    .venv/bin/python benchmarks/emulator.py --only rollout,onnx      # some sections
    .venv/bin/python benchmarks/emulator.py --quick                  # smoke run (< 2 min), tiny data in /tmp/bench

On a loaded machine (another job on the same cores) torch's default intra-op threads can make
small operations hundreds of times slower (threads wait on each other); ``--threads 1`` avoids
that, and the JSON records the thread count and the load average at start and end.

Prints a table per section and writes JSON (``--out``, default
``benchmarks/results/emulator.json``; ``--quick``: ``/tmp/bench/emulator_quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import peak_rss_mib  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("train", "rollout", "gradient", "onnx", "gpu")
TARGETS = {"swvl1": 0.95, "stl1": 0.95, "snowc": 0.9, "Qle": 0.9}
# `ailand train` defaults (ailand/cli.py), the benchmark's time limit on top
TRAIN_DEFAULTS = dict(
    width=256, depth=4, epochs=40, steps_per_epoch=200, batch_size=1024, rollout_steps=16, rollout_batch=64,
    rollout_weight=1.0, input_noise=0.5, lr=2e-3, patience=10, seed=0,
)
QUICK_DIR = Path("/tmp/bench")
QUICK_SITES = ["FR-Fon", "FI-Hyy", "US-Kon"]
QUICK_TRAIN = dict(
    width=64, depth=2, epochs=2, steps_per_epoch=10, batch_size=256, rollout_steps=4, rollout_batch=16,
    rollout_weight=1.0, input_noise=0.5, lr=2e-3, patience=10, seed=0,
)


# ---------------------------------------------------------------- helpers
def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def timed_with_peak_rss(fn, *a, interval: float = 0.02, **kw):
    """(seconds, result, peak RSS increase [MiB] over the RSS at the call) of ``fn(*a, **kw)``;
    RSS sampled every ``interval`` s by a thread (/proc/self/statm)."""
    import threading

    base = rss_mib()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(interval):
            peak[0] = max(peak[0], rss_mib())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        t, out = timed(fn, *a, **kw)
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], rss_mib())
    return t, out, peak[0] - base


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def median_call_time(fn, repeats: int = 7, min_time: float = 0.05) -> float:
    """Median seconds per call of ``fn()``: 2 warm-up calls, then ``repeats`` measurements of
    ``n`` back-to-back calls each, ``n`` chosen so that a measurement lasts >= ``min_time``."""
    import numpy as np

    fn()
    t1, _ = timed(fn)
    n = max(1, int(min_time / max(t1, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times))


def unique_warnings(caught) -> list[str]:
    seen = []
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in seen:
            seen.append(msg)
    return seen[:20]


def forcing_for(sites, days: int, seed: int = 0):
    import pandas as pd

    import ailand

    end = (pd.Timestamp("2021-01-01") + pd.Timedelta(days=days - 1)).strftime("%Y-%m-%d")
    return ailand.synthetic_forcing(sites, "2021-01-01", end, seed=seed)


def sample_params(space, members: int):
    return None if members == 1 else space.sample(members, method="lhs", seed=0)


def column_forward(model, forcing, state0, output="Qle"):
    """``values -> (S,)`` mean ``output`` over the forcing period, without gradient, with the
    same per-site parameter tensors and start state as ``rollout_sensitivity`` (prepare +
    simulate; works for the physics and the emulator)."""
    import torch

    from ailand.emulator.jacobian import _start_state

    S = forcing.sizes["site"]
    names = list(model.space.names)

    def fwd(values=None):
        base = model.param_tensors(values or {})
        p = model.param_tensors({n: torch.full((S,), float(base[n]), dtype=model.dtype, device=model.device) for n in names})
        f, st, rep = model.prepare(forcing)
        state = _start_state(model, forcing, None, state0, None, None, S)
        with torch.no_grad():
            out, _ = model.simulate(f, p, st, state, steps_per_output=1, outputs=[output], forcing_repeat=rep)
        return out[output].mean(0)

    return fwd


# ---------------------------------------------------------------- sections
def section_train(args) -> dict:
    import numpy as np
    import torch

    from ailand.emulator import Emulator
    from ailand.emulator.evaluate import evaluate
    from ailand.emulator.train import as_ensemble_data

    cfg = dict(QUICK_TRAIN if args.quick else TRAIN_DEFAULTS)
    width, depth = cfg.pop("width"), cfg.pop("depth")
    t_all = time.perf_counter()
    t_load, data = timed(as_ensemble_data, args.ensemble)
    T, _, E, G = data.data.shape
    em = Emulator.from_ensemble(data, width=width, depth=depth)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t_fit, hist = timed(em.fit, data, time_limit=args.time_limit, device="cpu", progress=not args.quick, **cfg)
    wall = time.perf_counter() - t_all
    tr = em.meta["training"]
    if args.save_emulator:
        em.save(args.save_emulator)
    t_eval, sc = timed(evaluate, em, data)
    acc = sc["acc"].sel(mode="rollout")
    rows_per_step = cfg["batch_size"] + cfg["rollout_batch"] * cfg["rollout_steps"]
    sec = np.asarray(hist["seconds"].values, dtype=float) if "seconds" in hist else np.array([np.nan])
    skill = {}
    for v, target in TARGETS.items():
        per_set = {str(s): float(acc.sel(set=s, variable=v)) for s in acc["set"].values} if v in acc["variable"] else {}
        worst = min(per_set.values()) if per_set else float("nan")
        skill[v] = {"acc_rollout_daily_means": per_set, "target_acc": target, "worst_acc": worst, "met": bool(worst >= target)}
    n_weights = sum(p.numel() for p in em.net.parameters())
    return {
        "ensemble": str(args.ensemble),
        "ensemble_shape": {"dates": int(T), "members": int(E), "sites": int(G)},
        "emulator_dt_s": em.dt,
        "network": {"width": width, "depth": depth, "weights": int(n_weights)},
        "fit_options": {**cfg, "time_limit_s": args.time_limit, "device": "cpu", "checkpoint_dir": None},
        "wall_s_total": round(wall, 1),
        "wall_s_load_ensemble": round(t_load, 1),
        "wall_s_fit": round(t_fit, 1),
        "wall_s_training_loop": round(float(tr["seconds"]), 1),
        "wall_s_evaluate": round(t_eval, 1),
        "wall_min_total": round(wall / 60, 2),
        "goal_min": 10,
        "goal_met": bool(wall <= 600),
        "epochs_run": int(tr["epochs_run"]),
        "stopped": tr["stopped"],
        "best_val_loss": float(tr["best_val_loss"]),
        "s_per_epoch_median": float(np.median(sec)),
        "row_steps_per_epoch": int(cfg["steps_per_epoch"] * rows_per_step),
        "training_row_steps_per_s": float(cfg["steps_per_epoch"] * rows_per_step / np.median(sec)),
        "val_sites": list(tr["val_sites"]),
        "val_members": list(tr["val_members"]),
        "rollout_days_evaluated": float(sc.attrs["rollout_days"]),
        "skill": skill,
        "all_targets_met": bool(all(s["met"] for s in skill.values())),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "warnings": unique_warnings(caught),
        "notes": [
            "wall_s_total = load ensemble + build + fit (training loop incl. per-epoch validation); "
            "evaluate() is timed separately and not included",
            "the time at which the skill targets were first met is not tracked (evaluating the rollout "
            "skill every epoch would cost more than the training); the skill is that of the final (best "
            "validation loss) weights",
            "one training row-step = one one-step sample or one step of a rollout-loss sequence: "
            "batch_size + rollout_batch * rollout_steps per optimiser step",
            "no checkpoint files are written (ailand train writes last.pt after every epoch)",
        ],
    }


def section_rollout(args) -> dict:
    import numpy as np
    import torch

    import ailand
    from ailand.emulator import Emulator

    em = Emulator.load(args.emulator)
    forcing = forcing_for(args.sites, args.days)
    S = forcing.sizes["site"]
    years = forcing.sizes["time"] / 8760.0
    rows = []
    for M in args.members:
        space = ailand.ParameterSpace.default()
        params = sample_params(space, M)
        phys = ailand.ToyEcLand()  # compile="auto": a year-long run compiles
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t_spin, s0 = timed(phys.initial_conditions, forcing, params, spinup_years=args.spinup_years)
            t_p1, _ = timed(phys.run, forcing, params, state0=s0, output_freq="6h")
            t_p2, out_p = timed(phys.run, forcing, params, state0=s0, output_freq="6h")
            compiled = phys._compiled is not None and not phys._compile_failed
            t_e1, _ = timed(em.run, forcing, params, state0=s0)
            t_e2, out_e = timed(em.run, forcing, params, state0=s0)
        cols = S * M
        finite = bool(all(np.isfinite(out_e[v].values).all() for v in out_e.data_vars))
        rows.append({
            "sites": S,
            "members": M,
            "columns": cols,
            "simulated_years": round(years, 4),
            "physics_steps": int(forcing.sizes["time"]),
            "emulator_steps": int(out_e.sizes["time"]),
            "spinup_years": args.spinup_years,
            "physics_spinup_s": round(t_spin, 2),
            "physics_compiled": compiled,
            "physics_first_run_s": round(t_p1, 3),
            "physics_run_s": round(t_p2, 3),
            "physics_compile_overhead_s": round(t_p1 - t_p2, 2) if args.spinup_years == 0 else None,
            "emulator_first_run_s": round(t_e1, 3),
            "emulator_run_s": round(t_e2, 3),
            "physics_column_years_per_minute": round(cols * years / t_p2 * 60, 1),
            "emulator_column_years_per_minute": round(cols * years / t_e2 * 60, 1),
            "speedup_emulator_over_physics": round(t_p2 / t_e2, 2),
            "emulator_output_finite": finite,
            "warnings": unique_warnings(caught),
        })
        print(f"  rollout M={M}: physics {t_p2:.2f} s, emulator {t_e2:.2f} s", flush=True)
    return {
        "emulator": str(args.emulator),
        "emulator_dt_s": em.dt,
        "sites": [str(s) for s in forcing["site"].values],
        "forcing": f"synthetic, seed 0, {forcing.sizes['time']} hourly steps from 2021-01-01",
        "results": rows,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "notes": [
            "physics: ToyEcLand(compile='auto').run(output_freq='6h'), hourly step, all variables; emulator: "
            "Emulator.run at its 6 h step, all its variables; both from the physics' initial_conditions "
            "(spin-up excluded), through the public xarray API (prepare + simulate + labelled output)",
            "the reported run is the second of two identical runs; physics_first_run_s includes torch.compile "
            "when the spin-up did not already compile the step (with spinup_years > 0 the compilation happens "
            "in physics_spinup_s)",
            "members are an LHS sample of the default ParameterSpace (seed 0); M = 1 is the default parameters",
        ],
    }


def section_gradient(args) -> dict:
    import numpy as np
    import torch

    import ailand
    from ailand.emulator import Emulator
    from ailand.emulator.jacobian import rollout_sensitivity

    dtype = getattr(torch, args.grad_dtype)
    forcing = forcing_for(args.sites, args.days)
    ck = args.physics_checkpoint
    phys = ailand.ToyEcLand(compile=False, dtype=dtype, checkpoint=ck)
    space = phys.space
    names = list(space.names)
    d = len(names)
    res = {"sites": [str(s) for s in forcing["site"].values], "hourly_steps": int(forcing.sizes["time"]),
           "output": "mean Qle over the period, per site", "n_parameters": d, "physics_dtype": args.grad_dtype}
    # physics initial state (spin-up excluded from every timing; compiled when long enough)
    t_ic, s0 = timed(ailand.ToyEcLand(dtype=dtype).initial_conditions, forcing, spinup_years=args.spinup_years)
    res["physics_spinup_s"] = round(t_ic, 2)
    rss0 = rss_mib()

    # (d) emulator autograd first: its peak memory is then its own
    if args.emulator:
        em = Emulator.load(args.emulator)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fwd_e = column_forward(em, forcing, s0)
            fwd_e()
            t_ef, _ = timed(fwd_e)
            rss_e = rss_mib()
            t_eg, g_e = timed(rollout_sensitivity, em, forcing, output="Qle", state0=s0)
        res["emulator"] = {
            "file": str(args.emulator),
            "forward_s": round(t_ef, 3),
            "autograd_s": round(t_eg, 3),
            "adjoint_cost_in_forward_runs": round(t_eg / t_ef, 2),
            "rss_before_mib": round(rss_e, 1),
            "peak_rss_after_autograd_mib": round(peak_rss_mib(), 1),
            "warnings": unique_warnings(caught),
        }
        print(f"  emulator: forward {t_ef:.2f} s, autograd {t_eg:.2f} s", flush=True)

    # (b) one physics forward, eager, no grad, same tensors as the autograd run
    fwd = column_forward(phys, forcing, s0)
    t_f, y0 = timed(fwd)
    rss_b = rss_mib()
    peak_b = peak_rss_mib()
    print(f"  physics forward (eager): {t_f:.2f} s", flush=True)
    # (a) physics autograd through the whole year
    t_g, g, inc_g = timed_with_peak_rss(rollout_sensitivity, phys, forcing, output="Qle", state0=s0)
    peak_a = peak_rss_mib()
    print(f"  physics autograd (eager, checkpoint={ck}): {t_g:.2f} s (RSS +{inc_g:.0f} MiB while it ran, process peak {peak_a:.0f} MiB)", flush=True)
    scaled = g.values * g["param_range_factor"].values  # (S, d)
    # (c) finite differences: 2 parameters (the most sensitive ones), central, then extrapolate
    order = np.argsort(-np.abs(scaled).mean(0))
    fd_names = [names[i] for i in order[: args.fd_params]]
    b = space.bounds
    defaults = space.defaults
    fd_times, fd_check = [], {}
    for n in fd_names:
        i = names.index(n)
        lo, hi = b[i]
        p = float(defaults[n])
        h = args.fd_rel_step * (hi - lo)
        h = min(h, 0.5 * (hi - p), 0.5 * (p - lo)) if lo < p < hi else h
        t_plus, y_plus = timed(fwd, {n: p + h})
        t_minus, y_minus = timed(fwd, {n: p - h})
        fd_times += [t_plus, t_minus]
        g_fd = ((y_plus - y_minus) / (2 * h)).double().cpu().numpy()
        g_ad = g.values[:, i]
        rel = np.abs(g_fd - g_ad) / max(float(np.abs(g_ad).max()), 1e-30)
        fd_check[n] = {
            "step": h,
            "autograd": [float(v) for v in g_ad],
            "finite_difference": [float(v) for v in g_fd],
            "max_rel_diff": float(rel.max()),
            "median_rel_diff": float(np.median(rel)),
            "rel_diff_definition": "|FD - autograd| per site / max over sites of |autograd|",
        }
    t_fwd_fd = float(np.mean(fd_times + [t_f]))
    res["physics"] = {
        "forward_eager_s": round(t_f, 3),
        "autograd_s": round(t_g, 3),
        "adjoint_cost_in_forward_runs": round(t_g / t_f, 2),
        "goal_adjoint_cost_in_forward_runs": 5,
        "goal_met": bool(t_g / t_f <= 5),
        "rss_before_forward_mib": round(rss0, 1),
        "rss_after_forward_mib": round(rss_b, 1),
        "peak_rss_after_forward_mib": round(peak_b, 1),
        "peak_rss_after_autograd_mib": round(peak_a, 1),
        "autograd_extra_peak_mib": round(peak_a - max(peak_b, rss_b), 1),
        "autograd_rss_increase_mib": round(inc_g, 1),
        "checkpoint": ck,
        "n_nan_gradients": int(np.isnan(g.values).sum()),
    }
    fd = {
        "parameters_measured": fd_names,
        "forward_runs_measured": len(fd_times),
        "mean_forward_eager_s": round(t_fwd_fd, 3),
        "central_forward_runs_needed": 2 * d,
        "one_sided_forward_runs_needed": d + 1,
        "central_fd_eager_s_extrapolated": round(2 * d * t_fwd_fd, 1),
        "one_sided_fd_eager_s_extrapolated": round((d + 1) * t_fwd_fd, 1),
        "ratio_central_fd_eager_over_autograd": round(2 * d * t_fwd_fd / t_g, 2),
        "ratio_one_sided_fd_eager_over_autograd": round((d + 1) * t_fwd_fd / t_g, 2),
        "relative_step_of_range": args.fd_rel_step,
        "check_vs_autograd": fd_check,
        "extrapolated": True,
        "note": f"FD time = mean measured forward time (the eager forward plus {len(fd_times)} perturbed "
        f"forwards of {len(fd_names)} parameters) x the number of forwards FD needs for all {d} parameters",
    }
    if args.compiled_fd:
        phys_c = ailand.ToyEcLand(compile=True, dtype=dtype)
        fwd_c = column_forward(phys_c, forcing, s0)
        t_c1, _ = timed(fwd_c)
        t_c2, _ = timed(fwd_c)
        fd.update({
            "forward_compiled_first_s": round(t_c1, 2),
            "forward_compiled_s": round(t_c2, 3),
            "central_fd_compiled_s_extrapolated": round(2 * d * t_c2 + (t_c1 - t_c2), 1),
            "one_sided_fd_compiled_s_extrapolated": round((d + 1) * t_c2 + (t_c1 - t_c2), 1),
            "ratio_central_fd_compiled_over_autograd": round((2 * d * t_c2 + t_c1 - t_c2) / t_g, 2),
            "ratio_one_sided_fd_compiled_over_autograd": round(((d + 1) * t_c2 + t_c1 - t_c2) / t_g, 2),
            "compiled_note": "FD needs no gradient, so it can use the compiled physics; its extrapolation "
            "includes the one-off compilation (first minus second run) once",
        })
        print(f"  physics forward (compiled): {t_c2:.2f} s (first {t_c1:.1f} s)", flush=True)
    res["finite_differences"] = fd
    # the same gradient with the compiled step where the model allows it (after FD, so the
    # compiled forward above has filled the compile cache)
    variants = []
    for v in args.grad_variants:
        comp = {"auto": "auto", "compiled": True}[v]
        m = ailand.ToyEcLand(compile=comp, dtype=dtype, checkpoint=ck)
        t1, _ = timed(rollout_sensitivity, m, forcing, output="Qle", state0=s0)  # compiles (or loads the cache)
        t2, g2, inc2 = timed_with_peak_rss(rollout_sensitivity, m, forcing, output="Qle", state0=s0)
        ok = (np.isfinite(g.values) & np.isfinite(g2.values)).all(axis=1)  # sites with finite gradients in both
        diff = np.abs(g2.values - g.values)[ok] / np.maximum(np.abs(g.values[ok]).max(axis=1, keepdims=True), 1e-30)
        row = {
            "compile": comp, "checkpoint": ck, "first_call_s": round(t1, 2), "autograd_s": round(t2, 3),
            "adjoint_cost_in_eager_forward_runs": round(t2 / t_f, 2),
            "autograd_rss_increase_mib": round(inc2, 1),
            "n_nan_gradients": int(np.isnan(g2.values).sum()),
            "max_rel_diff_to_eager_autograd": float(diff.max()) if diff.size else float("nan"),
            "median_rel_diff_to_eager_autograd": float(np.median(diff)) if diff.size else float("nan"),
            "rel_diff_definition": "|compiled - eager| / max over parameters of |eager| per site, over sites where both are finite",
            "sites_compared": [str(x) for x in g.site.values[ok]],
        }
        if "forward_compiled_s" in fd:
            row["adjoint_cost_in_compiled_forward_runs"] = round(t2 / fd["forward_compiled_s"], 2)
        variants.append(row)
        print(f"  physics autograd (compile={comp}, checkpoint={ck}): {t2:.2f} s (first call {t1:.1f} s, RSS +{inc2:.0f} MiB)", flush=True)
    res["physics_variants"] = variants
    if "emulator" in res:
        e = res["emulator"]
        e["ratio_emulator_autograd_over_physics_autograd"] = round(e["autograd_s"] / t_g, 4)
        es = g_e.values * g_e["param_range_factor"].values
        big = np.abs(scaled) > 0.05 * np.abs(scaled).max(axis=1, keepdims=True)
        e["sign_agreement_with_physics"] = float((np.sign(es[big]) == np.sign(scaled[big])).mean()) if big.any() else float("nan")
        e["sign_agreement_note"] = "fraction of (site, parameter) whose range-scaled physics gradient exceeds 5% of the site's largest, where the emulator's has the same sign"
    res["torch_threads"] = torch.get_num_threads()
    res["notes"] = [
        "autograd = rollout_sensitivity (prepare + simulate with per-site parameter leaves + one backward); "
        "forward = the same prepare + simulate without grad; both eager (compile=False), same dtype",
        "checkpoint: ToyEcLand(checkpoint=...) for the physics autograd; 'auto' checkpoints the time loop of "
        "gradient runs of >= 2000 steps in chunks of ceil(sqrt(steps)) (a first pass without graph, then each chunk "
        "recomputed with its graph in the backward pass); 'false' records the graph of every step",
        "autograd_rss_increase_mib: the RSS sampled every 20 ms while the autograd call ran, minus the RSS at its start",
        "peak RSS is the process maximum (getrusage): the emulator gradient runs first, then the physics forward, "
        "then the physics autograd, so each peak after a step bounds that step's memory",
    ]
    return res


def section_onnx(args) -> dict:
    import numpy as np
    import torch

    from ailand.emulator import Emulator
    from ailand.emulator.jacobian import output_scales, step_inputs
    from ailand.emulator.onnx_export import OnnxEmulatorStep, to_onnx

    em = Emulator.load(args.emulator)
    forcing = forcing_for(args.sites, args.days)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t_rows, X = timed(step_inputs, em, forcing)
    X = np.asarray(X.values, dtype=np.float32)
    n_real = X.shape[0]
    need = max(args.onnx_batches)
    X = np.tile(X, (int(np.ceil(need / n_real)), 1))[:need]
    tmp = Path(tempfile.mkdtemp(prefix="ailand_onnx_"))
    t_export, path = timed(to_onnx, em, tmp / "emulator.onnx")
    threads = torch.get_num_threads()
    t_load, sess = timed(OnnxEmulatorStep, path, threads=threads)
    scale = output_scales(em)
    rows = []
    for B in args.onnx_batches:
        xn = np.ascontiguousarray(X[:B])
        xt = torch.from_numpy(xn.copy())

        def run_torch():
            with torch.no_grad():
                return em.step_flat(xt)

        t_torch = median_call_time(run_torch, repeats=args.repeats)
        t_ort = median_call_time(lambda: sess(xn), repeats=args.repeats)
        yt = run_torch().numpy().astype(np.float64)
        yo = sess(xn).astype(np.float64)
        diff = np.abs(yo - yt)
        col_max = np.abs(yt).max(axis=0, keepdims=True)
        rel = diff / np.maximum(np.abs(yt), 1e-6 * col_max + 1e-30)
        rows.append({
            "batch_rows": B,
            "torch_ms_per_call": round(1e3 * t_torch, 4),
            "onnxruntime_ms_per_call": round(1e3 * t_ort, 4),
            "speedup_onnxruntime_over_torch": round(t_torch / t_ort, 2),
            "torch_rows_per_s": round(B / t_torch, 1),
            "onnxruntime_rows_per_s": round(B / t_ort, 1),
            "max_abs_diff_over_output_std": float((diff / scale).max()),
            "max_rel_error": float(rel.max()),
        })
        print(f"  onnx batch {B}: torch {1e3 * t_torch:.3f} ms, ort {1e3 * t_ort:.3f} ms", flush=True)
    import onnxruntime as ort

    return {
        "emulator": str(args.emulator),
        "rows": f"{n_real} realistic step_inputs rows (sites x emulator steps of the forcing), tiled to {need}",
        "export_s": round(t_export, 2),
        "onnx_file_kib": round(path.stat().st_size / 1024, 1),
        "session_load_s": round(t_load, 3),
        "step_inputs_s": round(t_rows, 2),
        "threads": threads,
        "onnxruntime_version": ort.__version__,
        "results": rows,
        "warnings": unique_warnings(caught),
        "notes": [
            "median over repeats of the time per call; torch: em.step_flat on a pre-built float32 tensor under "
            "no_grad; onnxruntime: OnnxEmulatorStep on a pre-built float32 array (intra_op threads = torch threads)",
            "max_rel_error = max |ort - torch| / max(|torch|, 1e-6 x the output's largest |value|); "
            "max_abs_diff_over_output_std in units of the emulator's output scales",
        ],
    }


def section_gpu(args) -> dict:
    import numpy as np
    import torch

    import ailand
    from ailand.emulator import Emulator
    from ailand.emulator.train import as_ensemble_data

    if not torch.cuda.is_available():
        return {"available": False, "reason": "torch.cuda.is_available() is False"}
    dev = "cuda"
    res = {"available": True, "device_name": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda}
    # training throughput: a warm-up epoch, then an epoch of gpu_steps optimiser steps (time of the steps only)
    cfg = dict(QUICK_TRAIN if args.quick else TRAIN_DEFAULTS)
    width, depth = cfg.pop("width"), cfg.pop("depth")
    cfg.update(epochs=2, steps_per_epoch=args.gpu_steps, patience=100)
    data = as_ensemble_data(args.ensemble)
    em = Emulator.from_ensemble(data, width=width, depth=depth)
    hist = em.fit(data, device=dev, progress=False, **cfg)
    sec = float(hist["seconds"].values[-1])
    rows_per_step = cfg["batch_size"] + cfg["rollout_batch"] * cfg["rollout_steps"]
    res["train"] = {
        "optimiser_steps_timed": args.gpu_steps,
        "s": round(sec, 3),
        "steps_per_s": round(args.gpu_steps / sec, 2),
        "training_row_steps_per_s": round(args.gpu_steps * rows_per_step / sec, 1),
        "note": "second of two epochs (the first warms CUDA up); epoch time excludes validation",
    }
    # emulator rollout on the GPU, same columns as the rollout section (cold-start physics state:
    # the emulator's cost does not depend on the state values)
    em = Emulator.load(args.emulator, device=dev)
    forcing = forcing_for(args.sites, args.days)
    S = forcing.sizes["site"]
    years = forcing.sizes["time"] / 8760.0
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for M in args.members:
            params = sample_params(ailand.ParameterSpace.default(), M)
            s0 = ailand.ToyEcLand(compile=False).initial_conditions(forcing, params, spinup_years=0)
            t1, _ = timed(em.run, forcing, params, state0=s0)
            torch.cuda.synchronize()
            t2, out = timed(em.run, forcing, params, state0=s0)
            torch.cuda.synchronize()
            rows.append({
                "columns": S * M, "members": M, "emulator_first_run_s": round(t1, 3), "emulator_run_s": round(t2, 3),
                "emulator_column_years_per_minute": round(S * M * years / t2 * 60, 1),
                "emulator_output_finite": bool(all(np.isfinite(out[v].values).all() for v in out.data_vars)),
            })
    res["rollout"] = rows
    return res


RUNNERS = {"train": section_train, "rollout": section_rollout, "gradient": section_gradient, "onnx": section_onnx, "gpu": section_gpu}


# ---------------------------------------------------------------- tables
def print_table(name: str, r: dict):
    print(f"\n== {name} ==")
    if "error" in r:
        print(f"  FAILED: {r['error']}")
        return
    if name == "train":
        e = r["ensemble_shape"]
        print(f"  ensemble {e['dates']} dates x {e['members']} members x {e['sites']} sites; MLP {r['network']['depth']}x"
              f"{r['network']['width']} ({r['network']['weights']:,} weights)")
        print(f"  {r['epochs_run']} epochs ({r['stopped']}), {r['s_per_epoch_median']:.1f} s/epoch, "
              f"{r['training_row_steps_per_s']:,.0f} row-steps/s")
        print(f"  wall {r['wall_s_total']:.0f} s = {r['wall_min_total']:.1f} min (goal <= 10 min: "
              f"{'met' if r['goal_met'] else 'NOT met'}); evaluate {r['wall_s_evaluate']:.0f} s")
        sets = sorted({s for v in r["skill"].values() for s in v["acc_rollout_daily_means"]})
        print(f"  {'variable':9} {'target':>7} " + " ".join(f"{s:>17}" for s in sets) + f" {'met':>5}")
        for v, s in r["skill"].items():
            accs = " ".join(f"{s['acc_rollout_daily_means'].get(k, float('nan')):>17.3f}" for k in sets)
            print(f"  {v:9} {s['target_acc']:>7.2f} {accs} {'yes' if s['met'] else 'NO':>5}")
    elif name == "rollout":
        print(f"  {'columns':>8} {'members':>8} {'compiled':>9} {'phys s':>8} {'emu s':>8} "
              f"{'phys col-yr/min':>16} {'emu col-yr/min':>15} {'speedup':>8} {'phys 1st s':>11}")
        for x in r["results"]:
            print(f"  {x['columns']:>8} {x['members']:>8} {str(x['physics_compiled']):>9} {x['physics_run_s']:>8.2f} "
                  f"{x['emulator_run_s']:>8.2f} {x['physics_column_years_per_minute']:>16,.0f} "
                  f"{x['emulator_column_years_per_minute']:>15,.0f} {x['speedup_emulator_over_physics']:>7.1f}x "
                  f"{x['physics_first_run_s']:>11.1f}")
    elif name == "gradient":
        p, fd = r["physics"], r["finite_differences"]
        print(f"  d(mean Qle)/d({r['n_parameters']} parameters) at {len(r['sites'])} sites, {r['hourly_steps']} hourly steps, {r['physics_dtype']}")
        print(f"  {'what':44} {'seconds':>9} {'x forward':>10}")
        print(f"  {'physics forward (eager, no grad)':44} {p['forward_eager_s']:>9.2f} {1.0:>10.2f}")
        print(f"  {'physics autograd (eager, checkpoint=' + str(p.get('checkpoint', False)) + ')':44} {p['autograd_s']:>9.2f} "
              f"{p['adjoint_cost_in_forward_runs']:>10.2f}   goal <= 5: {'met' if p['goal_met'] else 'NOT met'}; "
              f"RSS +{p.get('autograd_rss_increase_mib', float('nan')):.0f} MiB")
        for v in r.get("physics_variants", []):
            extra = f", {v['adjoint_cost_in_compiled_forward_runs']:.1f} x compiled forward" if "adjoint_cost_in_compiled_forward_runs" in v else ""
            print(f"  {'physics autograd (compile=' + str(v['compile']) + ')':44} {v['autograd_s']:>9.2f} "
                  f"{v['adjoint_cost_in_eager_forward_runs']:>10.2f}   RSS +{v['autograd_rss_increase_mib']:.0f} MiB{extra}")
        print(f"  {'FD central, eager (extrapolated)':44} {fd['central_fd_eager_s_extrapolated']:>9.1f} "
              f"{fd['central_forward_runs_needed']:>10}   = {fd['ratio_central_fd_eager_over_autograd']:.1f} x autograd")
        print(f"  {'FD one-sided, eager (extrapolated)':44} {fd['one_sided_fd_eager_s_extrapolated']:>9.1f} "
              f"{fd['one_sided_forward_runs_needed']:>10}   = {fd['ratio_one_sided_fd_eager_over_autograd']:.1f} x autograd")
        if "forward_compiled_s" in fd:
            print(f"  {'physics forward (compiled)':44} {fd['forward_compiled_s']:>9.2f}")
            print(f"  {'FD central, compiled (extrapolated)':44} {fd['central_fd_compiled_s_extrapolated']:>9.1f} "
                  f"{'':>10}   = {fd['ratio_central_fd_compiled_over_autograd']:.1f} x autograd")
            print(f"  {'FD one-sided, compiled (extrapolated)':44} {fd['one_sided_fd_compiled_s_extrapolated']:>9.1f} "
                  f"{'':>10}   = {fd['ratio_one_sided_fd_compiled_over_autograd']:.1f} x autograd")
        if "emulator" in r:
            e = r["emulator"]
            print(f"  {'emulator forward':44} {e['forward_s']:>9.2f}")
            print(f"  {'emulator autograd':44} {e['autograd_s']:>9.2f} {e['adjoint_cost_in_forward_runs']:>10.2f}"
                  f"   = {e['ratio_emulator_autograd_over_physics_autograd']:.3f} x physics autograd")
        print(f"  peak RSS: after forward {p['peak_rss_after_forward_mib']:.0f} MiB, after autograd "
              f"{p['peak_rss_after_autograd_mib']:.0f} MiB")
        for n, c in fd["check_vs_autograd"].items():
            print(f"  FD check {n}: max rel diff to autograd {c['max_rel_diff']:.2e} (median {c['median_rel_diff']:.2e})")
    elif name == "onnx":
        print(f"  export {r['export_s']:.1f} s, {r['onnx_file_kib']:.0f} KiB, onnxruntime {r['onnxruntime_version']}, {r['threads']} threads")
        print(f"  {'rows':>7} {'torch ms':>10} {'ort ms':>10} {'ort speedup':>12} {'max rel err':>12} {'max |d|/std':>12}")
        for x in r["results"]:
            print(f"  {x['batch_rows']:>7} {x['torch_ms_per_call']:>10.3f} {x['onnxruntime_ms_per_call']:>10.3f} "
                  f"{x['speedup_onnxruntime_over_torch']:>11.2f}x {x['max_rel_error']:>12.1e} {x['max_abs_diff_over_output_std']:>12.1e}")
    elif name == "gpu":
        if not r.get("available"):
            print(f"  skipped: {r.get('reason')}")
            return
        t = r["train"]
        print(f"  {r['device_name']}: training {t['training_row_steps_per_s']:,.0f} row-steps/s ({t['steps_per_s']:.1f} optimiser steps/s)")
        for x in r["rollout"]:
            print(f"  rollout {x['columns']:>6} columns: {x['emulator_run_s']:.2f} s, {x['emulator_column_years_per_minute']:,.0f} col-yr/min")


# ---------------------------------------------------------------- driver
def build_quick_inputs(args):
    """The tiny ensemble and emulator of --quick (built once, reused)."""
    import ailand
    from ailand.emulator import train_emulator

    QUICK_DIR.mkdir(parents=True, exist_ok=True)
    ens = QUICK_DIR / "quick_ensemble.zarr"
    if not ens.exists():
        print(f"building {ens} ...", flush=True)
        space = ailand.ParameterSpace.default()
        f = ailand.synthetic_forcing(QUICK_SITES, "2020-01-01", "2020-03-31")
        ailand.run_ensemble(ailand.ToyEcLand(compile=False), f, space.sample(4, seed=0), ens, spinup_years=0, progress=False)
    emf = QUICK_DIR / "quick_emulator.pt"
    if not emf.exists():
        print(f"building {emf} ...", flush=True)
        em, _ = train_emulator(ens, width=64, depth=2, epochs=2, steps_per_epoch=10, progress=False)
        em.save(emf)
    return ens, emf


def machine_info() -> dict:
    import numpy as np
    import torch

    try:
        import onnxruntime as ort

        ort_v = ort.__version__
    except ImportError:
        ort_v = None
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": ort_v,
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)} (default all)")
    p.add_argument("--ensemble", default=None, help="training ensemble (default runs/ensemble/default.zarr)")
    p.add_argument("--emulator", default=None, help="trained emulator for rollout/gradient/onnx/gpu (default runs/emulator/emulator.pt)")
    p.add_argument("--save-emulator", default=None, help="also save the emulator the train section trains here")
    p.add_argument("--quick", action="store_true", help="tiny sizes (tiny ensemble and emulator built in /tmp/bench): smoke run")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/emulator.json; --quick: /tmp/bench/emulator_quick.json)")
    p.add_argument("--time-limit", type=float, default=600.0, help="training time limit [s] (stops after the epoch that passes it)")
    p.add_argument("--sites", default=None, help="comma-separated sites for rollout/gradient/onnx (default: the 10 default sites)")
    p.add_argument("--days", type=int, default=None, help="simulated days for rollout/gradient/onnx (default 365)")
    p.add_argument("--members", type=int, nargs="+", default=None, help="members M per rollout (default 1 10 100)")
    p.add_argument("--spinup-years", type=int, default=None, help="physics spin-up before the timed runs (default 1; excluded from timings)")
    p.add_argument("--grad-dtype", default="float32", choices=["float32", "float64"], help="physics dtype for the gradient section")
    p.add_argument("--fd-params", type=int, default=2, help="parameters whose finite differences are measured")
    p.add_argument("--fd-rel-step", type=float, default=None, help="FD step as a fraction of the parameter range (default 1e-2 float32, 1e-4 float64)")
    p.add_argument("--no-compiled-fd", dest="compiled_fd", action="store_false", help="skip the compiled-physics forward for FD")
    p.add_argument("--physics-checkpoint", default="auto",
                   help="ToyEcLand checkpoint setting for the physics autograd: auto (default), true, false or a chunk length in steps")
    p.add_argument("--grad-variants", default="",
                   help="comma-separated extra physics autograd runs: auto (compile='auto'), compiled (compile=True); default none")
    p.add_argument("--onnx-batches", type=int, nargs="+", default=None, help="rows per call (default 1 100 10000)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per ONNX/torch measurement (default 9)")
    p.add_argument("--gpu-steps", type=int, default=None, help="optimiser steps timed for GPU training throughput (default 300)")
    p.add_argument("--threads", type=int, default=None, help="torch (and onnxruntime) threads in every section (default: torch's default)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.sites = [s for s in args.sites.split(",") if s] if args.sites else (QUICK_SITES if q else None)
    args.days = args.days or (10 if q else 365)
    args.members = args.members or ([1, 4] if q else [1, 10, 100])
    args.spinup_years = args.spinup_years if args.spinup_years is not None else (0 if q else 1)
    args.fd_rel_step = args.fd_rel_step or (1e-2 if args.grad_dtype == "float32" else 1e-4)
    ck = str(args.physics_checkpoint).lower()
    args.physics_checkpoint = {"auto": "auto", "true": True, "false": False}.get(ck) if not ck.isdigit() else int(ck)
    if args.physics_checkpoint is None:
        p.error(f"--physics-checkpoint must be auto, true, false or a positive integer, got {ck!r}")
    args.grad_variants = [v for v in str(args.grad_variants).split(",") if v]
    if any(v not in ("auto", "compiled") for v in args.grad_variants):
        p.error(f"--grad-variants takes auto and/or compiled, got {args.grad_variants}")
    args.onnx_batches = args.onnx_batches or ([1, 100, 1000] if q else [1, 100, 10000])
    args.repeats = args.repeats or (3 if q else 9)
    args.gpu_steps = args.gpu_steps or (20 if q else 300)
    if q and args.time_limit == 600.0:
        args.time_limit = 60.0
    args.out = args.out or str(QUICK_DIR / "emulator_quick.json" if q else ROOT / "benchmarks" / "results" / "emulator.json")
    return p, args


def main(argv=None):
    parser, args = parse(argv)
    if args.child:  # one section in this process; result as JSON to --child-out
        warnings.filterwarnings("ignore", message=".*torchvision.*")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        try:
            res = RUNNERS[args.child](args)
        except Exception as err:  # report, do not lose the other sections
            import traceback

            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
        Path(args.child_out).write_text(json.dumps(res, indent=2, default=str))
        return
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        parser.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])])
    t_start = time.perf_counter()
    if args.quick:
        ens, emf = build_quick_inputs(args)
        args.ensemble = args.ensemble or str(ens)
        args.emulator = args.emulator or str(emf)
    args.ensemble = args.ensemble or "runs/ensemble/default.zarr"
    args.emulator = args.emulator or "runs/emulator/emulator.pt"
    import torch

    gpu = torch.cuda.is_available()
    needs_ens = [s for s in sections if s == "train" or (s == "gpu" and gpu)]
    if needs_ens and not Path(args.ensemble).exists():
        parser.error(f"--ensemble {args.ensemble} does not exist (needed by {needs_ens}): build it with 'ailand ensemble'")
    emulator_source = "file"
    needs_em = [s for s in sections if s in ("rollout", "gradient", "onnx") or (s == "gpu" and gpu)]
    if needs_em and not Path(args.emulator).exists():
        if "train" not in sections:
            parser.error(f"--emulator {args.emulator} does not exist (needed by {needs_em}): train one with 'ailand train' or add the train section")
        args.save_emulator = args.save_emulator or str(Path(tempfile.mkdtemp(prefix="ailand_bench_")) / "trained.pt")
        args.emulator = args.save_emulator
        emulator_source = "trained by the train section of this run"

    if args.threads:
        torch.set_num_threads(args.threads)
    out = {
        "benchmark": "emulator: training time and skill, rollout throughput vs physics, gradient cost, onnxruntime vs torch",
        "command": command,
        "cwd": os.getcwd(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "config": {
            "ensemble": args.ensemble, "emulator": args.emulator, "emulator_source": emulator_source,
            "sites": args.sites or "default (10)", "days": args.days, "members": args.members,
            "spinup_years": args.spinup_years, "grad_dtype": args.grad_dtype, "onnx_batches": args.onnx_batches,
            "threads": args.threads or "torch default", "physics_checkpoint": args.physics_checkpoint,
            "grad_variants": args.grad_variants,
        },
        "goals": {
            "train_wall_min": "<= 10 for the default ensemble, reaching ACC swvl1, stl1 >= 0.95 and snowc, Qle >= 0.9",
            "adjoint_cost_in_forward_runs": "<= 5 whatever the number of parameters",
        },
    }
    for sec in sections:
        if sec == "gpu" and not torch.cuda.is_available():
            out["gpu"] = {"available": False, "reason": "torch.cuda.is_available() is False (CPU-only torch or no GPU)"}
            print_table(sec, out[sec])
            continue
        print(f"\n[{sec}] running ...", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
            child_out = tf.name
        child_args = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv),
                      "--child", sec, "--child-out", child_out, "--ensemble", str(args.ensemble), "--emulator", str(args.emulator)]
        if args.save_emulator:
            child_args += ["--save-emulator", str(args.save_emulator)]
        t0 = time.perf_counter()
        rc = subprocess.run(child_args, env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode
        try:
            res = json.loads(Path(child_out).read_text())
        except (OSError, ValueError):
            res = {"error": f"section process exited with code {rc} and wrote no result"}
        finally:
            Path(child_out).unlink(missing_ok=True)
        res["section_wall_s"] = round(time.perf_counter() - t0, 1)
        out[sec] = res
        print_table(sec, res)
    out["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {path} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
