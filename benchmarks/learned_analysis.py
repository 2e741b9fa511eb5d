"""Learned-analysis benchmark (issue 19): skill by observation density and layout, cost per analysis.

Sections (``--only`` picks some; configs in :data:`calibration.learned_analysis.experiments.DEFAULTS`):

ex1       exercise 1 on 32 x 32 shallow-water depth fields: background, OI / 3D-Var (Gaussian B,
          length scale and variances fitted to the training innovations), LETKF (20 members drawn
          from the fitted B, Gaspari-Cohn radius = the fitted length), U-Net trained on the truth,
          U-Net trained on the OI analyses, diffusion ensemble mean (8 members, first 16 cases);
          training densities 2-20 %; held out at 1 % and 50 % (unseen), 5 %, 20 %, and a layout with
          every station in the western half (unseen). Diffusion spread-skill.
ex2       exercise 2 (observations of h, u, v, wind speed, vorticity -> h, u, v): climatology,
          univariate OI of each field from its own observations, U-Net (truth / OI-trained).
physics   1-D shallow water, a net stepping 10 model steps, lambda = 0, 1, 10: held-out RMSE,
          5-step rollout RMSE, PDE residual (relative to the truth's tendency).
land      T2m of the gridded world (16 x 32 cells of 1.5 deg over Europe, 90 days, 10-member
          forecast ensemble), 60 training days x 8 station layouts, held out on the last 30 days:
          background, OI (great-circle distances, fitted length), LETKF on the forecast ensemble,
          U-Nets (land-sea mask and elevation as static inputs).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learned_analysis.py        # ~15 min on the 2 shared cores
    .venv/bin/python benchmarks/learned_analysis.py --quick                   # smoke run (< 1 min)

Writes ``benchmarks/results/learned_analysis.json`` (``--quick``: ``/tmp/bench/learned_analysis_quick.json``)
and prints the tables. No GPU is used (timings are CPU, one torch thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ailand.progress import Progress  # noqa: E402
from calibration.learned_analysis import experiments as X  # noqa: E402

SECTIONS = ("ex1", "ex2", "physics", "land")


def table(rows: dict, fmt="{:.4f}") -> str:
    cols = list(next(iter(rows.values())))
    w = max(len(k) for k in rows) + 2
    lines = [" " * w + " ".join(f"{c[:22]:>22}" for c in cols)]
    for k, r in rows.items():
        lines.append(f"{k:<{w}}" + " ".join(f"{fmt.format(r[c]) if isinstance(r.get(c), float) else str(r.get(c)):>22}"
                                             for c in cols))
    return "\n".join(lines)


def report(res: dict) -> str:
    out = []
    if "ex1" in res:
        e = res["ex1"]
        f = e["fit"]
        out.append(f"## exercise 1 (h [m], 32 x 32): fitted L = {f['length_cells']:.2f} cells (true {f['true_length_cells']}), "
                   f"sigma_b = {f['sigma_b_m']:.4f} m (true {f['true_sigma_b_m']:.4f}), sigma_o = {f['sigma_o_m']:.4f} m "
                   f"(true {f['true_sigma_o_m']:.4f})\nRMSE vs truth [m]:")
        out.append(table(e["rmse_m"]))
        out.append("ms per analysis (CPU, 1 thread):")
        out.append(table(e["ms_per_analysis"], "{:.2f}"))
        out.append("diffusion ensemble:")
        out.append(table(e["diffusion"], "{:.3f}"))
    if "ex2" in res:
        e = res["ex2"]
        out.append("## exercise 2 (obs only -> h [m], u, v [m s-1]) RMSE vs truth:")
        rows = {f"{s} | {m}": {v: e["rmse"][s][m][v] for v in "huv"} for s in e["rmse"] for m in e["rmse"][s]}
        out.append(table(rows))
        out.append(table(e["ms_per_analysis"], "{:.2f}"))
    if "physics" in res:
        e = res["physics"]
        out.append(f"## physics-constrained 1-D shallow water (truth residual {e['truth_residual_rel']:.3f}):")
        out.append(table(e["lambda"]))
    if "land" in res:
        e = res["land"]
        f = e["fit"]
        out.append(f"## land T2m [K] (land cells): fitted L = {f['length_km']:.0f} km, sigma_b = {f['sigma_b_K']:.2f} K, "
                   f"sigma_o = {f['sigma_o_K']:.3f} K (true {f['true_sigma_o_K']})")
        out.append(table(e["rmse_K_land"], "{:.3f}"))
        out.append(table(e["ms_per_analysis"], "{:.2f}"))
        out.append("LETKF analysis spread [K]: " + ", ".join(f"{k}: {v:.3f}" for k, v in e["letkf_spread_K_land"].items()))
    return "\n\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or ("/tmp/bench/learned_analysis_quick.json" if args.quick
                            else ROOT / "benchmarks/results/learned_analysis.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    res = json.loads(out.read_text()) if out.exists() else {}
    p = Progress(not args.no_progress)
    fns = {"ex1": X.exercise1_experiment, "ex2": X.exercise2_experiment, "physics": X.physics_experiment,
           "land": X.land_experiment}
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        if name not in fns:
            raise SystemExit(f"unknown section {name!r}; choose from {SECTIONS}")
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        with p.stage(f"section {name}"):
            scores, _ = fns[name](progress=p, quick=args.quick)
        scores["wall_s"] = time.perf_counter() - t0
        scores["loadavg_start_end"] = [load0, os.getloadavg()[0]]
        scores["torch_threads"] = args.threads
        scores["device"] = "cpu (no GPU lent to this run)"
        res[name] = scores
        out.write_text(json.dumps(res, indent=1, default=float))
    print(report(res))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
