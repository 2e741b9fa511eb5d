"""Toy ecLand throughput: column-years per minute for 1, 100, 1,000 and 10,000 columns.

Each configuration runs one simulated year at an hourly step (8,760 steps) through the
public API (``ToyEcLand.run`` with daily output of every variable), in its own process so
that peak memory (max RSS) belongs to that configuration alone. Columns are the 10 default
sites times LHS parameter members (1 column = FR-Fon with default parameters).
Both the eager and the compiled (torch.compile, inductor C++ wrapper) step are timed; the
compiled timing excludes the one-off compilation, which is reported separately.

    python benchmarks/physics_throughput.py [--columns 1 100 1000 10000] [--modes eager compiled]

Goal (issue 2): >= 10,000 column-years per minute at 10,000 columns on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def child(n_columns: int, mode: str, days: int) -> dict:
    import resource

    import torch

    import ailand

    torch.manual_seed(0)
    sites = ["FR-Fon"] if n_columns == 1 else None
    n_sites = 1 if n_columns == 1 else 10
    members = max(n_columns // n_sites, 1)
    space = ailand.ParameterSpace.default()
    params = None if n_columns == 1 else space.sample(members, method="lhs", seed=0)
    year = ailand.synthetic_forcing(sites, "2021-01-01", "2021-12-31", seed=0)
    year = year.isel(time=slice(0, days * 24))
    model = ailand.ToyEcLand(compile=(mode == "compiled"))
    t0 = time.perf_counter()
    model.run(year.isel(time=slice(0, 48)), params=params, output_freq="1D")  # warm-up (+ compilation)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = model.run(year, params=params, output_freq="1D")
    wall = time.perf_counter() - t0
    cols = ds.sizes["site"] * ds.sizes.get("member", 1)
    years = year.sizes["time"] / 8760.0
    return {
        "columns": cols,
        "mode": mode,
        "simulated_years": round(years, 4),
        "steps": int(year.sizes["time"]),
        "wall_s": round(wall, 3),
        "ms_per_step": round(1e3 * wall / year.sizes["time"], 4),
        "column_years_per_minute": round(cols * years / wall * 60.0, 1),
        "warmup_incl_compile_s": round(warm, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--columns", type=int, nargs="+", default=[1, 100, 1000, 10000])
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    ap.add_argument("--days", type=int, default=365, help="simulated days (365 = one year)")
    ap.add_argument("--out", default="benchmarks/results/physics_throughput.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.days)))
        return
    rows = []
    print(f"{'columns':>8} {'mode':>9} {'ms/step':>9} {'col-yr/min':>11} {'warm-up s':>10} {'peak RSS MiB':>13}")
    for n in args.columns:
        for mode in args.modes:
            res = subprocess.run(
                [sys.executable, __file__, "--child", str(n), mode, "--days", str(args.days)],
                capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"benchmark child failed for {n} columns, {mode}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{r['columns']:>8} {mode:>9} {r['ms_per_step']:>9.3f} {r['column_years_per_minute']:>11.0f} "
                  f"{r['warmup_incl_compile_s']:>10.1f} {r['peak_rss_mib']:>13.0f}")
    out = {
        "benchmark": "physics_throughput",
        "goal": ">= 10000 column-years per minute at 10000 columns",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
