"""``ailand assimilate``: the soil-moisture assimilation twin from the command line (a plugin
of the ``ailand`` CLI, entry point ``assimilate = "calibration.land_da.cli:register"``).

    ailand assimilate --sites FR-Fon,US-Kon --start 2020-06-01 --end 2020-08-31 \\
        --methods open_loop,sekf-fd,sekf-emulator,letkf --out runs/land_da

Builds the twin (truth, perturbed-forcing open loop, synthetic T2m/RH2m/satellite swvl1),
runs each method over every 12-hour window with a progress bar, and writes
``land_da.nc`` (truth / background / analysis of swvl1..3 per method), ``scores.csv`` and
``report.md`` (the RMSE table with the cost per cycle) and ``land_da.png`` to ``--out``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

METHODS = ("open_loop", "sekf-fd", "sekf-ensemble", "sekf-autograd", "sekf-emulator", "letkf", "enkf",
           "4dvar-physics", "4dvar-emulator")


def register(subparsers) -> None:
    """Add ``assimilate`` to the ``ailand`` subcommands."""
    s = subparsers.add_parser(
        "assimilate", help="soil-moisture data assimilation twin (SEKF with four Jacobians, EnKF/LETKF, 4D-Var)",
        description="A truth run of the toy ecLand, an open loop on perturbed forcing, synthetic screen-level "
                    "(T2m, RH2m) and satellite surface soil moisture observations, and cycled analyses of swvl1..3 "
                    "in 12-hour windows, scored against the truth.")
    s.add_argument("--sites", default="FR-Fon,US-Kon,IT-Noe,BE-Lon", help="comma-separated sites (data/sites.csv)")
    s.add_argument("--start", default="2020-04-01")
    s.add_argument("--end", default="2020-09-30")
    s.add_argument("--methods", default="open_loop,sekf-fd,sekf-emulator,letkf",
                   help=f"comma-separated subset of {','.join(METHODS)}")
    s.add_argument("--hours", type=float, default=12.0, help="window length [h]; default 12 (ECMWF)")
    s.add_argument("--members", type=int, default=16, help="letkf/enkf ensemble size; default 16")
    s.add_argument("--params", default="", help="letkf/enkf: parameters estimated by state augmentation, e.g. THETA_CAP")
    s.add_argument("--truth-params", default="",
                   help="the truth's parameters where they differ from the defaults, e.g. THETA_CAP=0.36,RSMIN=150")
    s.add_argument("--spinup-years", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--emulator", default=None, help="emulator file for sekf-emulator / 4dvar-emulator (default: shipped)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", default="runs/land_da")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_assimilate)


def _pairs(text: str) -> dict:
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--truth-params: expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = float(v)
    return out


def cmd_assimilate(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        print(f"ailand assimilate: --methods must be a subset of {','.join(METHODS)}, got {args.methods!r}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    import torch

    import ailand
    from calibration.progress import Progress

    from . import SoilMoistureTwin, run_4dvar, run_enkf, scores
    from .plots import plot_land_da

    torch.set_num_threads(args.threads)
    pg = Progress(enabled=not args.no_progress)
    emulator = ailand.Emulator.load(args.emulator) if args.emulator else None
    twin = SoilMoistureTwin(sites=[s.strip() for s in args.sites.split(",")], start=args.start, end=args.end,
                            hours=args.hours, truth_params=_pairs(args.truth_params), seed=args.seed,
                            spinup_years=args.spinup_years, progress=pg)
    params = tuple(p.strip() for p in args.params.split(",") if p.strip())
    results = {}
    for m in methods:
        with pg.stage(f"{m}: {twin.K} windows"):
            if m == "open_loop":
                results[m] = twin.run("open_loop", progress=pg)
            elif m.startswith("sekf-"):
                results[m] = twin.run("sekf", jacobian=m.split("-", 1)[1], emulator=emulator, progress=pg)
            elif m in ("letkf", "enkf"):
                results[m] = run_enkf(twin, n_members=args.members, method=m, params=params, seed=args.seed, progress=pg)
            else:
                results[m] = run_4dvar(twin, model=m.split("-", 1)[1], emulator=emulator, progress=pg)
    table = scores(results, reference="open_loop")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np
    import xarray as xr

    ds = xr.concat([r[["analysis", "background", "n_used"]].expand_dims(method=[k]) for k, r in results.items()],
                   dim="method", coords="minimal", compat="override", combine_attrs="override")
    ds["truth"] = next(iter(results.values()))["truth"]
    ds.attrs = ({"sites": args.sites, "period": f"{args.start}..{args.end}", "window_hours": args.hours,
                     "observations": ", ".join(twin.obs_names), "forcing_error": twin.forcing.attrs.get("perturbation", "")})
    for name, r in results.items():  # each method's cost per cycle
        for key in ("physics_runs_per_cycle", "emulator_runs_per_cycle", "wall_per_cycle_s"):
            ds.attrs[f"{name}_{key}"] = float(r.attrs.get(key, np.nan))
    ds.to_netcdf(out / "land_da.nc")
    table.to_csv(out / "scores.csv")
    plot_land_da(results, out / "land_da.png")
    text = ["# Soil-moisture assimilation twin", "",
            f"Sites {args.sites}, {args.start} .. {args.end}, {twin.K} windows of {args.hours:g} h; observations "
            f"{', '.join(twin.obs_names)} (errors {', '.join(f'{k} {v:g}' for k, v in twin.obs_std.items())}); "
            f"forcing error: {twin.forcing.attrs.get('perturbation', '')}.", "",
            "RMSE against the truth at each window's end [m3 m-3]; reduction of the root-zone (layers 1-3) RMSE "
            "against the open loop; model runs and wall time per cycle.", "", _markdown(table), ""]
    (out / "report.md").write_text("\n".join(text))
    print(_markdown(table))
    print(f"wrote {out}/{{land_da.nc, scores.csv, report.md, land_da.png}}; total {time.perf_counter() - t_start:.1f} s")
    return 0


def _markdown(df) -> str:
    cols = list(df.columns)
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in df.iterrows():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in row.values) + " |")
    return "\n".join(lines)
