"""Benchmark: Bayesian optimisation vs random search and LHS of the same budget.

Best J after the budget, over several seeds, on
- Branin (2-D, minimum 0.397887), budget 40;
- Hartmann6 (6-D, minimum -3.32237), budget 100 (BO also read at 60 evaluations: a BO run is
  prefix-consistent, its first k points do not depend on the budget);
- a twin-experiment Problem: RSMIN, LAI_SCALE, ALB_VEG calibrated with the shipped emulator
  (``Emulator.default()``) against daily Qle and Qh made by the physics (FR-Fon, June 2020,
  10 % noise), budget 40; the reference is the variational minimum (2 starts).

    .venv/bin/python benchmarks/bayesopt.py --threads 1 [--seeds 5] [--only branin,hartmann6,twin]

Writes JSON (``--out``, default ``benchmarks/results/bayesopt.json``), prints a table and
draws best J vs evaluations to ``docs/bayesopt.png`` (median and min-max band over seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import calibration as cal  # noqa: E402
from calibration.bayesopt import plot_best_J  # noqa: E402
from calibration.test_functions import BRANIN_MIN, HARTMANN6_MIN, branin, hartmann6  # noqa: E402


def twin_problem():
    import ailand
    from ailand.emulator import Emulator

    physics = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-30", seed=0)
    truth = {"RSMIN": 180.0, "LAI_SCALE": 1.3, "ALB_VEG": 0.16}
    space = physics.space.subset(list(truth))
    twin = cal.TwinExperiment(physics, forcing, space, truth, cal.Observe(["Qle", "Qh"], freq="1D"), noise=0.1,
                              seed=0, forward_model=Emulator.default(), spinup_years=0)
    return twin


def summarise(results, optimum=None, at=None):
    """best J per seed (after ``at`` evaluations when given) and the summary statistics."""
    J = np.array([r.best_so_far[at - 1] if at else r.best_J for r in results])
    out = {"best_J": J.tolist(), "mean": float(J.mean()), "median": float(np.median(J)), "min": float(J.min()),
           "max": float(J.max()), "wall_time_s": [round(r.wall_time, 2) for r in results],
           "n_forward_runs": [int(at or r.n_forward_runs) for r in results]}
    if optimum is not None:
        ok = J <= optimum + 0.01 * abs(optimum)
        out["within_1pct"] = f"{int(ok.sum())}/{len(J)}"
    if results[0].model is not None and at is None:
        out["gp_fit_time_s"] = [r.attrs["gp_fit_time_s"] for r in results]
        out["acquisition_time_s"] = [r.attrs["acquisition_time_s"] for r in results]
        out["n_explore"] = [r.attrs["n_explore"] for r in results]
    return out


def run_case(name, objective, budget, seeds, bounds=None, optimum=None, extra_at=None):
    res = {"bayesian_optimisation": [], "random_search": [], "lhs_search": []}
    for s in seeds:
        t0 = time.perf_counter()
        res["bayesian_optimisation"].append(cal.bayesian_optimisation(objective, budget=budget, bounds=bounds, seed=s))
        res["random_search"].append(cal.random_search(objective, budget, seed=s, bounds=bounds))
        res["lhs_search"].append(cal.lhs_search(objective, budget, seed=s, bounds=bounds))
        print(f"  {name} seed {s}: BO {res['bayesian_optimisation'][-1].best_J:.5g}  random "
              f"{res['random_search'][-1].best_J:.5g}  LHS {res['lhs_search'][-1].best_J:.5g}  "
              f"[{time.perf_counter() - t0:.1f} s]", flush=True)
    summary = {"budget": budget, "seeds": list(seeds), "optimum": optimum,
               **{m: summarise(r, optimum) for m, r in res.items()}}
    if extra_at:
        summary[f"bayesian_optimisation_at_{extra_at}"] = summarise(res["bayesian_optimisation"], optimum, at=extra_at)
    return summary, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 on a shared machine)")
    ap.add_argument("--only", default="branin,hartmann6,twin")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/bayesopt.json"))
    ap.add_argument("--png", default=str(ROOT / "docs/bayesopt.png"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    seeds = list(range(args.seeds))
    only = args.only.split(",")
    t_all = time.perf_counter()
    out = {"machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
           "command": "benchmarks/bayesopt.py " + " ".join(sys.argv[1:]), "cases": {}}
    panels = []
    if "branin" in only:
        s, r = run_case("branin", branin, 40, seeds, bounds=[[-5.0, 10.0], [0.0, 15.0]], optimum=BRANIN_MIN)
        out["cases"]["branin"] = s
        panels.append(("Branin, budget 40", r, BRANIN_MIN))
    if "hartmann6" in only:
        s, r = run_case("hartmann6", hartmann6, 100, seeds, bounds=[[0.0, 1.0]] * 6, optimum=HARTMANN6_MIN, extra_at=60)
        out["cases"]["hartmann6"] = s
        panels.append(("Hartmann6, budget 100", r, HARTMANN6_MIN))
    if "twin" in only:
        t0 = time.perf_counter()
        twin = twin_problem()
        p = twin.problem
        ref = cal.variational(p, n_starts=2, seed=0)
        print(f"  twin: {p}; variational reference J = {ref.J:.5g} ({ref.n_forward_runs} runs, "
              f"{ref.wall_time:.1f} s; setup {time.perf_counter() - t0 - ref.wall_time:.1f} s)", flush=True)
        s, r = run_case("twin", p, 40, seeds)
        s["reference"] = {"method": "variational, 2 starts", "J": float(ref.J), "x": ref.x.tolist(),
                          "n_forward_runs": int(ref.n_forward_runs), "wall_time_s": round(ref.wall_time, 2)}
        s["truth"] = twin.truth
        s["parameters"] = list(p.names)
        s["bo_best_x"] = [r_.best_x.tolist() for r_ in r["bayesian_optimisation"]]
        out["cases"]["twin"] = s
        panels.append((f"twin (emulator, {', '.join(p.names)}), budget 40", r, None))
    out["total_time_s"] = round(time.perf_counter() - t_all, 1)

    print(f"\n{'case':10s} {'method':22s} {'mean best J':>12s} {'median':>10s} {'within 1%':>9s} {'wall s/run':>10s}")
    for case, s in out["cases"].items():
        for m in [k for k in s if k.startswith(("bayesian", "random", "lhs"))]:
            v = s[m]
            print(f"{case:10s} {m:22s} {v['mean']:12.5g} {v['median']:10.5g} {v.get('within_1pct', '-'):>9s} "
                  f"{np.mean(v['wall_time_s']):10.1f}")
        if "reference" in s:
            print(f"{case:10s} {'variational reference':22s} {s['reference']['J']:12.5g}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}; total {out['total_time_s']} s")

    if args.png and panels:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False, constrained_layout=True)
        for ax, (title, r, opt) in zip(axes[0], panels):
            plot_best_J({"BO (LogEI + exploration)": r["bayesian_optimisation"], "random": r["random_search"], "LHS": r["lhs_search"]},
                        ax=ax, optimum=opt)
            ax.set_title(title + f" ({len(seeds)} seeds)", fontsize=9)
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
