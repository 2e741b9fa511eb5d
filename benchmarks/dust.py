"""Dust benchmark (issue 14): throughput of land + dust + aerosol, and the emission inversion.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dust.py                # 6-day throughput + 30-day inversion, default region
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dust.py --year         # + one simulated year (2020), measured end to end
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dust.py --quick        # small region, 9 days (smoke run)

Throughput (default region 5-65N, 24W-66E at 1.5 degrees: 40 x 60 cells, ~1600 land columns;
hourly; one torch thread): world generation, the toy ecLand on the land columns
(:func:`ailand.dust.run_land`, eager for short runs), the Kok et al. 2014 emission, the
aerosol model with 1 and 21 members; reported as (land) columns x simulated days per second.

Inversion: the twin (:class:`calibration.dust_inversion.DustTwin`) over ``--days`` days with
21 members (1 control + 20), 3-day cycles: set-up (world, land, truth, satellite, stations),
wall time per cycle (ensemble forecast + LETKF analysis), evaluation and writing the product,
peak resident memory; extrapolated to one year (366 days, 122 cycles) linearly per day and
per cycle; ``--year`` measures the year instead of extrapolating (the land run of a year is
long enough for :class:`ailand.ToyEcLand` to compile its step).

Goal (issue 14): one simulated year of the default region with 21 members in under 30 minutes
on the 2-core machine. Prints tables and writes JSON (``benchmarks/results/dust.json``;
``--quick``: ``/tmp/bench/dust_quick.json``).
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
sys.path.insert(0, str(ROOT))  # the calibration package before benchmarks/calibration.py
from common import peak_rss_mib  # noqa: E402  (benchmarks/common.py)
SMALL = {"lat_range": (12.0, 42.0), "lon_range": (-6.0, 30.0), "resolution": 3.0}


def _t(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def throughput(region: dict, days: int, start: str = "2020-07-01") -> dict:
    import numpy as np
    import pandas as pd

    from ailand.dust import DustChain, DustEmission, make_world, run_land

    end = str((pd.Timestamp(start) + pd.Timedelta(days=days - 1)).date())
    t_world, world = _t(lambda: make_world(start, end, seed=0, **region))
    n_cells = world.sizes["lat"] * world.sizes["lon"]
    n_land = int((world["lsm"].values >= 0.5).sum())
    t_land, land = _t(lambda: run_land(world))
    t_emis, _ = _t(lambda: DustEmission().run(world, land))
    chain = DustChain(world, land)
    ny, nx = chain.grid.shape
    t_aero1, _ = _t(lambda: chain.run(np.ones((1, 1, ny, nx))))
    t_aero21, _ = _t(lambda: chain.run(np.ones((21, 1, ny, nx))))
    r = {"days": days, "steps": world.sizes["time"], "cells": n_cells, "land_columns": n_land,
         "world_s": t_world, "land_s": t_land, "emission_s": t_emis, "aerosol_1_member_s": t_aero1,
         "aerosol_21_members_s": t_aero21,
         "land_ms_per_step": 1e3 * t_land / world.sizes["time"]}
    r["land_columns_days_per_s"] = n_land * days / t_land
    r["aerosol_cells_days_per_s"] = n_cells * days / t_aero1
    r["aerosol_member_cells_days_per_s_21"] = 21 * n_cells * days / t_aero21
    r["land_dust_aerosol_columns_days_per_s"] = n_land * days / (t_land + t_emis + t_aero1)
    r["land_dust_aerosol21_columns_days_per_s"] = n_land * days / (t_land + t_emis + t_aero21)
    return r


def inversion(region: dict, start: str, end: str, members: int = 21, out: str | None = None) -> dict:
    import numpy as np

    from ailand.dust import make_world, run_land
    from calibration.dust_inversion import DustTwin, InversionConfig
    from calibration.progress import Progress

    p = Progress(True)
    t_world, world = _t(lambda: make_world(start, end, seed=0, **region))
    p.say(f"world {dict(world.sizes)} in {t_world:.1f} s")
    t_land, land = _t(lambda: run_land(world))
    p.say(f"land in {t_land:.1f} s")
    t_twin, twin = _t(lambda: DustTwin(start, end, world=world, land=land, seed=0, progress=p))
    t_inv, res = _t(lambda: twin.invert(InversionConfig(members=members), progress=p))
    t_eval, ev = _t(lambda: twin.evaluate(res))
    t_write = 0.0
    if out:
        t_write, _ = _t(lambda: ev.save(out, figures=False))
    cyc = res.cycles
    days = len(world["time"]) * 3600.0 / 86400.0
    a = ev.aod.sel(season="all", group="all")
    f = ev.factors
    return {
        "period": f"{start}..{end}", "days": days, "cycles": res.n_periods, "members": members,
        "observations": int(twin.observations.sizes["obs"]), "control_cells": int(res.control_j.size),
        "world_s": t_world, "land_s": t_land, "truth_obs_stations_s": t_twin, "inversion_s": t_inv,
        "evaluation_s": t_eval, "write_product_s": t_write,
        "per_cycle_s": t_inv / res.n_periods, "per_cycle_forecast_s": float(cyc["wall_forecast_s"].mean()),
        "per_cycle_analysis_s": float(cyc["wall_analysis_s"].mean()),
        "total_s": t_world + t_land + t_twin + t_inv + t_eval + t_write, "peak_rss_mib": peak_rss_mib(),
        "aod_rmse_all_stations": {str(r): float(a["rmse"].sel(run=r)) for r in a["run"].values},
        "aod_corr_all_stations": {str(r): float(a["corr"].sel(run=r)) for r in a["run"].values},
        "log_factor_rmse": {str(e): float(f["rmse_log"].sel(estimate=e)) for e in f["estimate"].values},
        "log_factor_wrmse": {str(e): float(f["wrmse_log"].sel(estimate=e)) for e in f["estimate"].values},
        "n_dropped": len(res.dropped), "land_ms_per_step": 1e3 * t_land / len(world["time"]),
    }


def extrapolate(inv: dict, days_year: float = 366.0) -> dict:
    """Linear in days (world, land, truth/observations, evaluation) and cycles (inversion)."""
    k = days_year / inv["days"]
    cycles = int(np.ceil(days_year / 3.0))
    est = {"world_s": inv["world_s"] * k, "land_s": inv["land_s"] * k, "truth_obs_stations_s": inv["truth_obs_stations_s"] * k,
           "inversion_s": inv["per_cycle_s"] * cycles, "evaluation_s": inv["evaluation_s"] * k,
           "write_product_s": inv["write_product_s"] * k}
    est["total_s"] = sum(est.values())
    est["cycles"] = cycles
    return est


import numpy as np  # noqa: E402  (used by extrapolate)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30, help="inversion period [days] from 2020-07-01; default 30")
    ap.add_argument("--throughput-days", type=int, default=6)
    ap.add_argument("--year", action="store_true", help="also run 2020-01-01..2020-12-31 end to end")
    ap.add_argument("--quick", action="store_true", help="small region (10 x 12 cells), 9 days")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    region = SMALL if args.quick else {}
    if args.quick:
        args.days, args.throughput_days = 9, 3
    out = Path(args.out or ("/tmp/bench/dust_quick.json" if args.quick else ROOT / "benchmarks/results/dust.json"))
    tp = throughput(region, args.throughput_days)
    print(f"\nthroughput ({tp['cells']} cells, {tp['land_columns']} land columns, {tp['days']} days, hourly, 1 thread)")
    rows = [("world generation", tp["world_s"], tp["cells"] * tp["days"] / tp["world_s"], "cells"),
            ("land (toy ecLand)", tp["land_s"], tp["land_columns_days_per_s"], "columns"),
            ("emission (Kok 2014)", tp["emission_s"], tp["land_columns"] * tp["days"] / tp["emission_s"], "columns"),
            ("aerosol, 1 member", tp["aerosol_1_member_s"], tp["aerosol_cells_days_per_s"], "cells"),
            ("aerosol, 21 members", tp["aerosol_21_members_s"], tp["aerosol_member_cells_days_per_s_21"], "member-cells"),
            ("land + dust + aerosol (1 member)", tp["land_s"] + tp["emission_s"] + tp["aerosol_1_member_s"],
             tp["land_dust_aerosol_columns_days_per_s"], "columns"),
            ("land + dust + aerosol (21 members)", tp["land_s"] + tp["emission_s"] + tp["aerosol_21_members_s"],
             tp["land_dust_aerosol21_columns_days_per_s"], "columns")]
    print(f"{'stage':<36}{'wall [s]':>10}{'x days / s':>14}  unit")
    for name, w, rate, unit in rows:
        print(f"{name:<36}{w:>10.2f}{rate:>14.0f}  {unit}")
    start = "2020-07-01"
    import pandas as pd

    end = str((pd.Timestamp(start) + pd.Timedelta(days=args.days - 1)).date())
    inv = inversion(region, start, end, out="/tmp/bench/dust_inversion_run")
    est = extrapolate(inv)
    print(f"\ninversion twin {inv['period']} ({inv['cycles']} cycles, {inv['members']} members, "
          f"{inv['control_cells']} control cells, {inv['observations']} satellite obs)")
    print(f"{'stage':<34}{'measured [s]':>14}{'one year (extrapolated) [s]':>30}")
    for k in ("world_s", "land_s", "truth_obs_stations_s", "inversion_s", "evaluation_s", "write_product_s", "total_s"):
        print(f"{k:<34}{inv[k]:>14.1f}{est[k]:>30.1f}")
    print(f"per 3-day cycle: {inv['per_cycle_s']:.2f} s (forecast {inv['per_cycle_forecast_s']:.2f} s, analysis "
          f"{inv['per_cycle_analysis_s']:.2f} s); peak RSS {inv['peak_rss_mib']:.0f} MiB")
    print("AOD RMSE at all stations:", {k: round(v, 4) for k, v in inv["aod_rmse_all_stations"].items()})
    print("log-factor RMSE vs truth:", {k: round(v, 3) for k, v in inv["log_factor_rmse"].items()})
    result = {"benchmark": "dust", "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                          "torch_threads": 1},
              "region": region or "default (5-65N, 24W-66E, 1.5 deg)", "throughput": tp, "inversion": inv,
              "year_extrapolated": est}
    if args.year:
        yr = inversion(region, "2020-01-01", "2020-12-31", out="/tmp/bench/dust_year_run")
        print(f"\none year, measured: total {yr['total_s']:.0f} s = {yr['total_s'] / 60:.1f} min "
              f"(world {yr['world_s']:.0f}, land {yr['land_s']:.0f}, truth/obs {yr['truth_obs_stations_s']:.0f}, "
              f"inversion {yr['inversion_s']:.0f} ({yr['per_cycle_s']:.2f} s/cycle), evaluation {yr['evaluation_s']:.0f}, "
              f"write {yr['write_product_s']:.0f}); peak RSS {yr['peak_rss_mib']:.0f} MiB")
        print("AOD RMSE at all stations:", {k: round(v, 4) for k, v in yr["aod_rmse_all_stations"].items()})
        print("log-factor RMSE vs truth:", {k: round(v, 3) for k, v in yr["log_factor_rmse"].items()})
        result["year_measured"] = yr
    goal = result.get("year_measured", est)["total_s"]
    result["goal"] = {"target_s": 1800.0, "year_s": goal, "measured": bool(args.year), "met": bool(goal < 1800.0)}
    print(f"\ngoal: one year, 21 members, default region < 30 min: {goal / 60:.1f} min "
          f"({'measured' if args.year else 'extrapolated'}) -> {'met' if goal < 1800 else 'not met'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
