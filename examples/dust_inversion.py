"""Dust emission inversion: the CAMAERA-style reference analysis on the toy dust world.

What it does (issue 14, deliverables 4-6)
-----------------------------------------
1. Builds the twin (:class:`calibration.dust_inversion.DustTwin`): the gridded dust world
   (default region 5-65N, 24W-66E at 1.5 degrees), the toy ecLand on its land cells, the prior
   Kok et al. 2014 emission, a hidden "true" scaling field (Sahel/southern Sahara emissions
   too high in summer, a Libya-Egypt source the prior largely misses, a smooth background),
   the synthetic satellite AOD (13:30 overpass, 2330 km swaths with gaps, clouds, error
   0.03 + 0.15 AOD) and the held-out AERONET stations.
2. Runs the LETKF smoother twice on the same observations: CAMS version 1 (perturbation
   correlation length 250 km) and version 2 (lengths drawn between 300 and 3000 km); 1 control +
   20 members, 3-day periods, a 15-day smoothing window.
3. Evaluates both as the seed does (AOD RMSE/bias/correlation at desert and non-desert stations
   for the prior, the analysis and a forecast-only run with the analysed factors; the recovered
   against the true scaling field over the sources) and prints the comparison.
4. Saves version 1 as the emission analysis product (``dust_emission_analysis.nc``: daily
   scaling factors and emissions on (time, lat, lon), per-period factors, monthly
   emission-weighted factors) with the evaluation files and figures, then reads the product
   back and applies its monthly factors to the prior scheme (the "debiased" emission).

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python examples/dust_inversion.py            # default region, June-July 2020 (~4 min)
    OMP_NUM_THREADS=1 .venv/bin/python examples/dust_inversion.py --quick    # 10 x 12 cells, 12 days (~20 s)

Writes ``runs/dust_inversion/`` (``--out``). The same from the command line:
``ailand dust --start 2020-06-01 --end 2020-07-31 --out runs/dust``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ailand.dust import run_chain
from calibration.dust_inversion import DustTwin, InversionConfig, SatelliteConfig
from calibration.progress import Progress


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small region (3-degree cells over the Sahara and the Med), 12 days")
    ap.add_argument("--out", default="runs/dust_inversion")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = Progress(True)
    if args.quick:
        region = dict(lat_range=(12.0, 42.0), lon_range=(-6.0, 30.0), resolution=3.0)
        start, end, sat = "2020-07-01", "2020-07-12", SatelliteConfig(superob=1)
    else:
        region, start, end, sat = {}, "2020-06-01", "2020-07-31", SatelliteConfig()

    # 1. the twin: world, land, prior emission, hidden truth, satellite AOD, AERONET stations
    twin = DustTwin(start, end, seed=0, satellite=sat, progress=p, **region)
    print(twin)

    # 2. two inversions on the same observations (CAMS v1 and v2 perturbation correlation lengths)
    configs = {"v1 (250 km)": InversionConfig(corr_length_km=250.0, seed=0),
               "v2 (300-3000 km)": InversionConfig(corr_length_km=(300.0, 3000.0), seed=0)}
    evals = {name: twin.evaluate(twin.invert(cfg)) for name, cfg in configs.items()}

    # 3. the seed's evaluation, side by side
    rows = []
    for name, ev in evals.items():
        a = ev.aod.sel(season="all")
        f = ev.factors
        for run in ("prior", "analysis", "forecast", "monthly"):
            for g in ("desert", "non_desert"):
                d = a.sel(run=run, group=g)
                rows.append({"config": name, "run": run, "stations": g, "rmse": float(d["rmse"]),
                             "bias": float(d["bias"]), "corr": float(d["corr"])})
        rows.append({"config": name, "run": "log factor vs truth", "stations": "sources",
                     "rmse": float(f["rmse_log"].sel(estimate="smoothed")), "bias": np.nan,
                     "corr": float(f["corr_log"].sel(estimate="smoothed"))})
        rows.append({"config": name, "run": "log factor, prior (f = 1)", "stations": "sources",
                     "rmse": float(f["rmse_log"].sel(estimate="prior")), "bias": np.nan, "corr": np.nan})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print("\nAOD at held-out AERONET stations and the recovered scaling field (all seasons)")
    print(table.round(4).to_string(index=False))

    # 4. the product: save version 1, read it back, debias the prior scheme with the monthly factors
    out = Path(args.out)
    ev = evals["v1 (250 km)"]
    with p.stage(f"writing {out}"):
        paths = ev.save(out)
    print("\n" + ev.report())
    product = xr.open_dataset(out / "dust_emission_analysis.nc")
    print(product[["scaling_factor", "emission_analysis", "monthly_scaling_factor"]])
    months = pd.DatetimeIndex(twin.world["time"].values).to_period("M")
    month_idx = (months.year * 12 + months.month).to_numpy()
    month_idx = month_idx - month_idx[0]
    debiased = run_chain(twin.world, product["monthly_scaling_factor"].values, period=month_idx,
                         land=twin.chain.land, outputs=("emission",))
    prior_total = float((twin.chain.prior["emission"] * twin.world["cell_area"]).sum()) * 3600.0 / 1e9
    debiased_total = float((debiased["emission"] * twin.world["cell_area"]).sum()) * 3600.0 / 1e9
    truth_total = float((product["emission_truth"] * product["cell_area"]).sum()) * 86400.0 / 1e9
    print(f"\nemitted dust over the run: prior {prior_total:.1f} Tg, debiased with the monthly factors "
          f"{debiased_total:.1f} Tg, truth {truth_total:.1f} Tg")
    product.close()
    for q in paths:
        print(f"wrote {q}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
