"""Benchmark: vectorised Morris/Sobol analysis vs looping SALib's analyze over the outputs.

Same design, same outputs, same bootstrap seed; checks that the numbers agree and times
the analysis step only (not the sampling or the model). Peak memory is measured with
tracemalloc (numpy reports its buffers to it) in separate runs, so it does not slow the
timed runs.

    .venv/bin/python benchmarks/sensitivity.py                   # 1,000 outputs, d = 20, N = 1024
    .venv/bin/python benchmarks/sensitivity.py --salib-outputs 100   # time SALib on 100 outputs, extrapolate

Writes JSON (``--out``, default ``benchmarks/results/sensitivity.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from common import best_time  # benchmarks/common.py, found before the folder leaves the path

# This file is named like the package it measures: drop its own folder from the path so
# that `import sensitivity` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]

from ailand import ParameterSpace  # noqa: E402
import sensitivity as sa  # noqa: E402

ROOT = _HERE.parent


def synthetic_outputs(x_unit: np.ndarray, n_outputs: int, seed: int = 0) -> np.ndarray:
    """``(n, d)`` unit-cube inputs -> ``(n, n_outputs)``: mixed linear, non-linear and interacting outputs."""
    rng = np.random.default_rng(seed)
    d = x_unit.shape[1]
    w = rng.normal(size=(d, n_outputs)) * (rng.random((d, n_outputs)) < 0.4)  # sparse: some inert inputs
    v = rng.normal(size=(d, n_outputs)) * 0.5
    lin = x_unit @ w
    return np.sin(2 * lin) + 0.3 * lin**2 + (x_unit @ v) * x_unit[:, :1]


def peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def compare(ours: dict, ref: dict) -> dict:
    """Max absolute and relative difference per index between our arrays and SALib's."""
    res = {}
    for k in ours:
        a, b = ours[k], ref[k]
        mask = np.isfinite(b)
        diff = np.abs(a[mask] - b[mask])
        rel = diff / np.maximum(np.abs(b[mask]), 1e-12)
        res[k] = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max())}
    return res


def run_morris(space, n, n_outputs, resamples, repeat, salib_outputs, seed):
    from SALib.analyze import morris as salib

    design = sa.morris_design(space, n, seed=seed)
    x = design.values
    y = synthetic_outputs(space.to_unit(x), n_outputs)
    kw = dict(num_resamples=resamples, seed=seed)
    t_ours, res = best_time(lambda: sa.morris_analyze(space, design, y, **kw), repeat)
    problem = space.to_salib()
    keys = ("mu", "mu_star", "sigma", "mu_star_conf")
    ref = {k: np.empty((len(space), salib_outputs)) for k in keys}
    t0 = time.perf_counter()
    for m in range(salib_outputs):
        s = salib.analyze(problem, x, y[:, m], num_resamples=resamples, num_levels=4, seed=seed)
        for k in keys:
            ref[k][:, m] = s[k]
    t_salib = (time.perf_counter() - t0) * n_outputs / salib_outputs
    ours = {k: res[k].values[:, :salib_outputs] for k in keys}
    mem_ours = peak_mib(lambda: sa.morris_analyze(space, design, y, **kw))
    mem_salib = peak_mib(
        lambda: [salib.analyze(problem, x, y[:, m], num_resamples=resamples, seed=seed) for m in range(3)]
    )
    return {
        "n_trajectories": n,
        "model_runs": int(x.shape[0]),
        "num_resamples": resamples,
        "ours_s": t_ours,
        "salib_loop_s": t_salib,
        "salib_outputs_timed": salib_outputs,
        "salib_extrapolated": salib_outputs < n_outputs,
        "speedup": t_salib / t_ours,
        "agreement": compare(ours, ref),
        "peak_mem_ours_MiB": mem_ours,
        "peak_mem_salib_per_call_MiB": mem_salib,
        "outputs_array_MiB": y.nbytes / 2**20,
    }


def run_sobol(space, n, n_outputs, resamples, repeat, salib_outputs, seed):
    from SALib.analyze import sobol as salib

    design = sa.sobol_design(space, n, seed=seed)
    x = design.values
    y = synthetic_outputs(space.to_unit(x), n_outputs)
    kw = dict(num_resamples=resamples, seed=seed)
    t_ours, res = best_time(lambda: sa.sobol_analyze(space, design, y, **kw), repeat)
    problem = space.to_salib()
    keys = ("S1", "S1_conf", "ST", "ST_conf")
    ref = {k: np.empty((len(space), salib_outputs)) for k in keys}
    t0 = time.perf_counter()
    for m in range(salib_outputs):
        s = salib.analyze(problem, y[:, m], calc_second_order=False, num_resamples=resamples, seed=seed)
        for k in keys:
            ref[k][:, m] = s[k]
    t_salib = (time.perf_counter() - t0) * n_outputs / salib_outputs
    ours = {k: res[k].values[:, :salib_outputs] for k in keys}
    mem_ours = peak_mib(lambda: sa.sobol_analyze(space, design, y, **kw))
    mem_salib = peak_mib(
        lambda: [
            salib.analyze(problem, y[:, m], calc_second_order=False, num_resamples=resamples, seed=seed)
            for m in range(3)
        ]
    )
    return {
        "N": n,
        "model_runs": int(x.shape[0]),
        "num_resamples": resamples,
        "ours_s": t_ours,
        "salib_loop_s": t_salib,
        "salib_outputs_timed": salib_outputs,
        "salib_extrapolated": salib_outputs < n_outputs,
        "speedup": t_salib / t_ours,
        "agreement": compare(ours, ref),
        "peak_mem_ours_MiB": mem_ours,
        "peak_mem_salib_per_call_MiB": mem_salib,
        "outputs_array_MiB": y.nbytes / 2**20,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-outputs", type=int, default=1000)
    p.add_argument("--d", type=int, default=20, help="number of parameters")
    p.add_argument("--n", type=int, default=1024, help="Morris trajectories and Sobol base sample size N")
    p.add_argument("--morris-resamples", type=int, default=1000, help="bootstrap resamples (our default)")
    p.add_argument("--sobol-resamples", type=int, default=100, help="bootstrap resamples (SALib's default)")
    p.add_argument("--salib-outputs", type=int, default=None, help="outputs to time SALib on (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats of our analysis (best is kept)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", choices=("morris", "sobol"), default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sensitivity.json"))
    args = p.parse_args(argv)

    space = ParameterSpace.from_dict({f"p{i:02d}": (0.0, 1.0) for i in range(args.d)})
    salib_outputs = min(args.salib_outputs or args.n_outputs, args.n_outputs)
    warnings.simplefilter("ignore", UserWarning)
    result = {
        "benchmark": "sensitivity analysis step: ailand vectorised vs SALib 1.6 looped over outputs",
        "config": {
            "n_outputs": args.n_outputs,
            "d": args.d,
            "N": args.n,
            "seed": args.seed,
            "repeat": args.repeat,
        },
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    if args.only in (None, "morris"):
        result["morris"] = run_morris(
            space, args.n, args.n_outputs, args.morris_resamples, args.repeat, salib_outputs, args.seed
        )
    if args.only in (None, "sobol"):
        result["sobol"] = run_sobol(
            space, args.n, args.n_outputs, args.sobol_resamples, args.repeat, salib_outputs, args.seed
        )

    print(f"{args.n_outputs} outputs, d = {args.d}, N = {args.n}  (SALib timed on {salib_outputs} outputs)")
    hdr = f"{'method':8} {'runs':>7} {'R':>5} {'ours [s]':>9} {'SALib [s]':>10} {'speedup':>8} " \
          f"{'max |diff| point':>17} {'max rel diff CI':>16} {'peak MiB ours':>14} {'SALib/call':>11}"
    print(hdr)
    print("-" * len(hdr))
    for name, conf_key in (("morris", "mu_star_conf"), ("sobol", "ST_conf")):
        if name not in result:
            continue
        r = result[name]
        point = max(v["max_abs_diff"] for k, v in r["agreement"].items() if not k.endswith("conf"))
        ci = max(v["max_rel_diff"] for k, v in r["agreement"].items() if k.endswith("conf"))
        print(
            f"{name:8} {r['model_runs']:>7} {r['num_resamples']:>5} {r['ours_s']:>9.2f} {r['salib_loop_s']:>10.1f} "
            f"{r['speedup']:>7.0f}x {point:>17.1e} {ci:>16.1e} {r['peak_mem_ours_MiB']:>14.0f} "
            f"{r['peak_mem_salib_per_call_MiB']:>11.0f}"
        )
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
