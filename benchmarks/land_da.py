"""Land data assimilation benchmark (issue 13): the soil-moisture twin with every method.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/land_da.py                  # ~25 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/land_da.py --quick          # 2 sites, 10 days, ~2 min

The twin (:class:`calibration.land_da.SoilMoistureTwin`): FR-Fon, US-Kon, IT-Noe and BE-Lon,
June-August 2020 (184 windows of 12 h), one spin-up year; the DA system's forcing has 0.7 x
precipitation with daily log-normal noise and +10 % shortwave; observations T2m (1 K),
RH2m (4 %) as 6-hour means and daily satellite swvl1 (0.05 m3 m-3, 30 % gaps).

Per method (open loop; SEKF with the FD, ensemble, physics-autograd and emulator-autograd
Jacobians; LETKF and EnKF, 16 members, states alone and with THETA_CAP; 4D-Var with the
physics' and the emulator's TL/AD): analysis RMSE of swvl1..3 against the truth, the
root-zone reduction against the open loop, model runs and wall time per cycle. Then the
four Jacobians at the same states along the open loop (every 4th window): cost, sign
agreement and relative error against the physics' autograd H. Goals (issue 13): the emulator
Jacobian costs less than one physics run per cycle, and the SEKF with it keeps >= 90 % of
the FD SEKF's root-zone RMSE reduction. Prints tables and writes JSON
(``benchmarks/results/land_da.json``; ``--quick``: ``/tmp/bench/land_da_quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/calibration.py is named like the package: drop this folder from the path so that
# `import calibration` finds the package
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != Path(__file__).resolve().parent]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", default="FR-Fon,US-Kon,IT-Noe,BE-Lon")
    p.add_argument("--start", default="2020-06-01")
    p.add_argument("--end", default="2020-08-31")
    p.add_argument("--methods", default="open_loop,sekf-fd,sekf-ensemble,sekf-autograd,sekf-emulator,letkf,enkf,"
                                        "letkf+THETA_CAP,4dvar-physics,4dvar-emulator")
    p.add_argument("--quick", action="store_true", help="2 sites, 10 days, no spin-up (smoke run)")
    p.add_argument("--emulator", default=None, help="emulator file for the emulator methods (default: the shipped one)")
    p.add_argument("--jacobians-only", action="store_true",
                   help="only the Jacobian comparison and its breakdown by observation and layer -> land_da_jacobians.json")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.sites, args.start, args.end = "US-Kon,IT-Noe", "2020-07-01", "2020-07-10"
    out = Path(args.out or (ROOT / "benchmarks/results/land_da.json" if not args.quick else "/tmp/bench/land_da_quick.json"))
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from calibration.land_da import SoilMoistureTwin, compare_jacobians, jacobian_breakdown, run_4dvar, run_enkf, scores

    import ailand

    emulator = ailand.Emulator.load(args.emulator) if args.emulator else ailand.Emulator.default()
    t0 = time.perf_counter()
    twin = SoilMoistureTwin(sites=args.sites.split(","), start=args.start, end=args.end,
                            spinup_years=0 if args.quick else 1, progress=True)
    setup_s = time.perf_counter() - t0
    if args.jacobians_only:
        jt, H = compare_jacobians(twin, emulator=emulator, every=4, progress=True)
        bd = jacobian_breakdown(H, twin.obs_vars)
        print("\nJacobians at the same states (every 4th open-loop window) against the physics' autograd H")
        print(jt.round(4).to_string())
        print("\nthe emulator's H by observed variable and analysed layer")
        print(bd.round(4).to_string())
        jout = out.with_name(out.stem + "_jacobians.json")
        jout.parent.mkdir(parents=True, exist_ok=True)
        jout.write_text(json.dumps({"jacobians": jt.to_dict(orient="index"),
                                    "emulator_by_variable_and_layer": {f"{v} layer {k}": row for (v, k), row in
                                                                       bd.to_dict(orient="index").items()},
                                    "setup": {"sites": args.sites, "period": f"{args.start}..{args.end}", "windows": twin.K}},
                                   indent=1, default=float))
        print(f"wrote {jout}")
        return 0
    results, walls = {}, {}
    for m in args.methods.split(","):
        t = time.perf_counter()
        if m == "open_loop":
            results[m] = twin.run("open_loop", progress=True)
        elif m.startswith("sekf-"):
            results[m] = twin.run("sekf", jacobian=m.split("-", 1)[1], emulator=emulator, progress=True)
        elif m.split("+")[0] in ("letkf", "enkf"):
            name, *par = m.split("+")
            results[m] = run_enkf(twin, n_members=16, method=name, params=tuple(par), progress=True)
        elif m.startswith("4dvar-"):
            results[m] = run_4dvar(twin, model=m.split("-", 1)[1], emulator=emulator, progress=True)
        walls[m] = time.perf_counter() - t
    table = scores(results)
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 20)
    print(f"\nland DA twin: {args.sites}, {args.start}..{args.end}, {twin.K} windows; set-up {setup_s:.0f} s")
    print(table.round(4).to_string())
    jt, H = compare_jacobians(twin, emulator=emulator, every=4, progress=True)
    print("\nJacobians at the same states (every 4th open-loop window) against the physics' autograd H")
    print(jt.round(4).to_string())
    bd = jacobian_breakdown(H, twin.obs_vars)
    print("\nthe emulator's H by observed variable and analysed layer")
    print(bd.round(4).to_string())
    goals = {}
    if {"sekf-fd", "sekf-emulator"} <= set(table.index):
        phys_run = table.loc["open_loop", "wall_per_cycle_s"] if "open_loop" in table.index else float("nan")
        goals = {"emulator_jacobian_wall_s": float(jt.loc["emulator", "wall_per_jacobian_s"]),
                 "one_physics_run_wall_s": float(phys_run),
                 "emulator_jacobian_cheaper_than_one_physics_run": bool(jt.loc["emulator", "wall_per_jacobian_s"] < phys_run),
                 "emulator_sekf_share_of_fd_reduction": float(table.loc["sekf-emulator", "reduction_root_zone"]
                                                               / table.loc["sekf-fd", "reduction_root_zone"])}
        print(f"\ngoals: emulator H {goals['emulator_jacobian_wall_s']:.3f} s vs one physics window run "
              f"{phys_run:.3f} s; SEKF-emulator keeps {100 * goals['emulator_sekf_share_of_fd_reduction']:.0f} % of "
              "the FD SEKF's root-zone RMSE reduction")
    result = {"benchmark": "land_da", "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "emulator": args.emulator or "data/emulator/default.pt",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
              "setup": {"sites": args.sites, "period": f"{args.start}..{args.end}", "windows": twin.K,
                        "observations": twin.obs_names, "obs_std": twin.obs_std,
                        "forcing_error": twin.forcing.attrs.get("perturbation", ""), "setup_s": setup_s},
              "methods": {k: {**v, "total_wall_s": walls[k]} for k, v in table.to_dict(orient="index").items()},
              "jacobians": jt.to_dict(orient="index"), "goals": goals,
              "emulator_jacobian_by_variable_and_layer": {f"{v} layer {k}": row for (v, k), row in bd.to_dict(orient="index").items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
