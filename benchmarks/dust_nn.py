"""Dust NN emission model benchmark (issue 15): training time, inference rows/s in torch and
onnxruntime, the evaluation tables, the hyperparameter search and the feature importance.

    OMP_NUM_THREADS=1 .venv/bin/ailand dust-nn train --out runs/dust_nn --stride 6 --epochs 12 --search-budget 10
    OMP_NUM_THREADS=1 .venv/bin/ailand dust-nn evaluate --run runs/dust_nn
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dust_nn.py --run runs/dust_nn     # reads the run, measures, writes JSON
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dust_nn.py --quick                # trains a quick run first (~1 min)

Reads a run folder written by ``ailand dust-nn train`` (and ``evaluate``, for the coupled
runs and the ONNX files), and measures here:

* inference throughput [rows/s] of every network, torch (eager, float32, one thread, batches
  of 65,536 rows) vs onnxruntime (one intra-op thread), best of 3;
* Morris (``sensitivity.morris``, 40 trajectories, 4 levels) and Sobol' first/total-order
  indices (``sensitivity.sobol``, N = 1024) of the log-space emission ln(E / E_max + 1e-5) of
  the seed network v2 and the chosen zero-aware model over the training predictor ranges
  (min..max of each predictor, independent uniform: combinations the world never makes are
  included, so read them as sensitivities of the network, not of the data);

and collects the training times, the skill / null-emission / coupled tables, the search and
the permutation importance from the run folder into ``benchmarks/results/dust_nn.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def throughput(fn, X, reps=3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn(X)
        best = min(best, time.perf_counter() - t)
    return len(X) / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/dust_nn", help="run folder (ailand dust-nn train/evaluate)")
    ap.add_argument("--quick", action="store_true", help="train a quick run into /tmp/bench/dust_nn_quick first")
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/dust_nn.json; --quick: /tmp/bench)")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from ailand.dust.nn import OnnxEmission, log_space, predict, table_arrays, typical_rows
    from ailand.params import ParameterSpace
    from calibration.dust_nn.experiment import CHOSEN, export_onnx, load_run

    run = Path(args.run)
    if args.quick:
        import subprocess

        run = Path("/tmp/bench/dust_nn_quick")
        for verb in (["train", "--out", str(run), "--quick"], ["evaluate", "--run", str(run), "--no-figures"]):
            subprocess.run([str(Path(sys.executable).parent / "ailand"), "dust-nn", *verb, "--no-progress"], check=True,
                           stdout=subprocess.DEVNULL)
    out = Path(args.out) if args.out else (Path("/tmp/bench/dust_nn_quick.json") if args.quick
                                           else ROOT / "benchmarks" / "results" / "dust_nn.json")
    r = load_run(run)
    mods, tabs = r["models"], r["tables"]
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "run": str(run), "torch_threads": 1, "rows": {k: int(v.sizes["sample"]) for k, v in tabs.items()},
           "data_config": r["config"].__dict__ | {"region": dict(r["config"].region)}, "train_config": r["train_config"]}
    tj = json.loads((run / "training.json").read_text())
    res["training_s"] = {k: round(v["wall_s"], 1) for k, v in tj["fits"].items()}
    res["data_s"] = round(tj["wall_s_data"], 1)
    res["fit_info"] = {k: v["info"] for k, v in tj["fits"].items()}
    res["best_epoch"] = {k: (v["history"].get("best_epoch") if "best_epoch" in v["history"] else
                             {p: v["history"][p]["best_epoch"] for p in ("classifier", "regressor")})
                         for k, v in tj["fits"].items()}

    # inference throughput
    inf = {}
    Xt = tabs["test"]
    for k, m in mods.items():
        X = table_arrays(Xt, m.names, target=False)
        X = np.tile(X, (max(1, 200_000 // len(X) + 1), 1))[:200_000]
        path, rel = export_onnx(run, k)
        ort = OnnxEmission(path)
        inf[k] = {"torch_rows_per_s": round(throughput(lambda a: predict(m, a), X)),
                  "onnxruntime_rows_per_s": round(throughput(ort, X)), "onnx_max_rel_diff": rel}
        print(f"{k:18s} torch {inf[k]['torch_rows_per_s']:>10,d} rows/s   onnxruntime "
              f"{inf[k]['onnxruntime_rows_per_s']:>10,d} rows/s   parity {rel:.1e}")
    res["inference"] = inf

    # feature importance with the project's sensitivity package
    import sensitivity

    imp = {}
    for k in ("seed_v2", CHOSEN):
        m = mods[k]
        X, _ = table_arrays(tabs["train"], m.names)
        lo, hi = X.min(0), X.max(0)
        space = ParameterSpace.from_dict({n: (float(a), float(b) if b > a else float(a) + 1e-9)
                                          for n, a, b in zip(m.names, lo, hi)})
        scale = getattr(m, "base", m).target.scale
        f = lambda x, m=m, scale=scale: log_space(predict(m, np.asarray(x, dtype=float)), scale)  # noqa: E731
        t0 = time.perf_counter()
        mo = sensitivity.morris(f, space, n_trajectories=40, num_levels=4, seed=0)
        so = sensitivity.sobol(f, space, n=1024, seed=0)
        imp[k] = {"morris_mu_star": {str(p): float(v) for p, v in zip(mo["parameter"].values, mo["mu_star"].values)},
                  "morris_sigma": {str(p): float(v) for p, v in zip(mo["parameter"].values, mo["sigma"].values)},
                  "sobol_S1": {str(p): float(v) for p, v in zip(so["parameter"].values, so["S1"].values)},
                  "sobol_ST": {str(p): float(v) for p, v in zip(so["parameter"].values, so["ST"].values)},
                  "wall_s": round(time.perf_counter() - t0, 1)}
        top = sorted(imp[k]["sobol_ST"].items(), key=lambda kv: -kv[1])[:6]
        print(f"{k}: Sobol total-order (log-space emission), top 6: " + ", ".join(f"{n} {v:.2f}" for n, v in top))
    res["sensitivity"] = imp

    # tables from the run folder
    def csv(p):
        return pd.read_csv(p).to_dict(orient="records") if p.exists() else None

    ev = run / "evaluation"
    res["skill"] = csv(ev / "skill.csv") or csv(run / "skill.csv")
    res["zero"] = csv(ev / "zero.csv") or csv(run / "zero.csv")
    res["coupled"] = csv(ev / "coupled.csv")
    res["permutation_importance"] = csv(ev / "importance.csv")
    if (run / "search" / "trials.csv").exists():
        tr = pd.read_csv(run / "search" / "trials.csv")
        res["search"] = {m: {"best_J": float(g["J"].min()), "best_so_far": g["best_so_far"].round(4).tolist(),
                             "wall_s": round(float(g["wall_s"].sum()), 1),
                             "best_config": g.loc[g["J"].idxmin()].drop(["method", "evaluation", "best_so_far"]).to_dict()}
                         for m, g in tr.groupby("method")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
