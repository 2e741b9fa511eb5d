"""``ailand analyse``: learned analyses trained on classical ones (issue 19; a plugin of the
``ailand`` CLI, entry point ``analyse = "calibration.learned_analysis.cli:register"``).

    ailand analyse make-data --case ex1 --n 1024 --out runs/analyse/ex1_train.nc
    ailand analyse make-data --case ex1 --n 96 --density 0.05 --seed 1 --fit-from runs/analyse/ex1_train.nc \
        --out runs/analyse/ex1_test.nc
    ailand analyse train --data runs/analyse/ex1_train.nc --target oi --out runs/analyse/unet_oi.pt
    ailand analyse apply --model runs/analyse/unet_oi.pt --data runs/analyse/ex1_test.nc --out runs/analyse/ex1_unet.nc
    ailand analyse evaluate --experiment ex1 --out runs/analyse      # train + score everything, JSON + table

``make-data`` writes cases with their classical analyses (OI / 3D-Var with the fitted length
scale, and the LETKF) as labelled NetCDF training targets; ``train`` fits a U-Net on the truth
or on those analyses; ``apply`` analyses new cases; ``evaluate`` runs one experiment of
:mod:`calibration.learned_analysis.experiments` end to end (the benchmark's numbers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CASES = ("ex1", "land")
EXPERIMENTS = ("ex1", "ex2", "physics", "land")


def register(subparsers) -> None:
    """Add ``analyse`` to the ``ailand`` subcommands."""
    s = subparsers.add_parser(
        "analyse", help="learned analyses (U-Net, diffusion) trained on classical ones (OI/3D-Var, LETKF)",
        description="Machine-learnt data assimilation: shallow-water toy exercises and 2 m temperature of the "
                    "gridded world; classical analyses as training targets; learned analyses and their scores.")
    sub = s.add_subparsers(dest="analyse_cmd", required=True)

    m = sub.add_parser("make-data", help="cases + classical analyses as a labelled NetCDF training set")
    m.add_argument("--case", choices=CASES, default="ex1", help="ex1: shallow-water depth; land: T2m of the gridded world")
    m.add_argument("--n", type=int, default=512, help="ex1: number of cases (default 512)")
    m.add_argument("--grid", type=int, default=32, help="ex1: grid size n x n (default 32)")
    m.add_argument("--density", default="0.02,0.2",
                   help="fraction of cells observed: one value, or lo,hi drawn log-uniformly per case")
    m.add_argument("--layout", choices=("random", "half"), default="random", help="ex1 station layout")
    m.add_argument("--days", default="2020-05-01,2020-07-29", help="land: start,end")
    m.add_argument("--members", type=int, default=10, help="land: forecast ensemble size; ex1: LETKF members drawn from B")
    m.add_argument("--layouts", type=int, default=4, help="land: station layouts per day")
    m.add_argument("--no-letkf", action="store_true", help="skip the LETKF analyses")
    m.add_argument("--fit-from", default=None,
                   help="a training file made by make-data: reuse its fitted length and variances (for held-out sets)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True, help="output NetCDF")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=cmd_make_data)

    t = sub.add_parser("train", help="train a U-Net analysis on a make-data file")
    t.add_argument("--data", required=True)
    t.add_argument("--target", choices=("truth", "oi", "letkf"), default="truth",
                   help="train on the truth (toy) or on the classical analyses (operational)")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--depth", type=int, default=2)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="model file (.pt)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("apply", help="analyse the cases of a make-data file with a trained U-Net; scores if truth is there")
    a.add_argument("--model", required=True)
    a.add_argument("--data", required=True)
    a.add_argument("--out", default=None, help="NetCDF with the learned analysis added (optional)")
    a.add_argument("--threads", type=int, default=1)
    a.set_defaults(func=cmd_apply)

    e = sub.add_parser("evaluate", help="one experiment end to end: train, score by density/layout, cost")
    e.add_argument("--experiment", choices=EXPERIMENTS, default="ex1")
    e.add_argument("--quick", action="store_true", help="tiny configuration (smoke run)")
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--out", default="runs/analyse")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_evaluate)


def _density(text: str):
    try:
        v = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--density: expected a number or lo,hi, got {text!r}") from None
    if len(v) == 1:
        return v[0]
    if len(v) == 2:
        return tuple(v)
    raise ValueError(f"--density: expected a number or lo,hi, got {text!r}")


def _threads(n):
    import torch

    torch.set_num_threads(max(1, int(n)))


def _static_of(ds):
    import numpy as np

    if "lsm" not in ds:
        return None, None
    land = ds["lsm"].values >= 0.5
    return np.stack([land.astype(float)]), land.astype(float)


def cmd_make_data(args) -> int:
    from ailand.progress import Progress

    from .classical import LETKFAnalysis, OptimalInterpolation, latlon_grid_distance, periodic_grid_distance
    from .experiments import classical_targets

    _threads(args.threads)
    p = Progress(not args.no_progress)
    try:
        dens = _density(args.density)
    except ValueError as err:
        print(f"ailand analyse make-data: {err}", file=sys.stderr)
        return 2
    ref = {}
    if args.fit_from:
        import xarray as xr

        if not Path(args.fit_from).exists():
            print(f"ailand analyse make-data: no such file {args.fit_from}", file=sys.stderr)
            return 2
        with xr.open_dataset(args.fit_from) as r:
            ref = dict(r.attrs)
        if ref.get("case_kind") != args.case:
            print(f"ailand analyse make-data: --fit-from {args.fit_from} is a {ref.get('case_kind')!r} file, "
                  f"not {args.case!r}", file=sys.stderr)
            return 2
    if args.case == "ex1":
        from .cases import exercise1_cases

        with p.stage(f"exercise-1 cases ({args.n} on {args.grid} x {args.grid})"):
            ds = exercise1_cases(args.n, args.grid, args.grid, density=dens, layout=args.layout, seed=args.seed,
                                 climate_std=ref.get("climate_std"), progress=p)
        dist = periodic_grid_distance(args.grid, args.grid)
        shape = (args.grid, args.grid)
    else:
        from ailand.dust.grid import LatLonGrid

        from .land import land_analysis_cases, land_case

        start, end = (s.strip() for s in args.days.split(","))
        case = land_case(start, end, n_members=args.members, seed=args.seed, progress=p)
        ds = land_analysis_cases(case, layouts_per_day=args.layouts, density=dens, seed=args.seed)
        grid = LatLonGrid(ds["lat"].values, ds["lon"].values)
        dist, shape = latlon_grid_distance(grid), grid.shape
    with p.stage("OI / 3D-Var: length scale and variances from the innovations, analyses"):
        if ref:
            oi = OptimalInterpolation(dist, shape, float(ref["oi_sigma_b"]), float(ref["oi_length"]),
                                      float(ref["oi_sigma_o"]))
        else:
            oi = OptimalInterpolation.fit(ds.background.values, ds.obs.values, ds.mask.values, dist, "gaussian")
        lk = None
        if not args.no_letkf:
            lk = LETKFAnalysis(dist, shape, oi.sigma_o, loc_rad=oi.length, sigma_b=oi.sigma_b, length=oi.length,
                               n_members=args.members, seed=args.seed)
        out = classical_targets(ds, oi, lk, use_members=args.case == "land")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.attrs.update({"oi_length": oi.length, "oi_sigma_b": oi.sigma_b, "oi_sigma_o": oi.sigma_o,
                      "case_kind": args.case})
    out.to_netcdf(args.out)
    unit = "cells" if args.case == "ex1" else "km"
    print(f"{out.sizes['case']} cases written to {args.out}: fitted correlation length {oi.length:.2f} {unit}, "
          f"sigma_b {oi.sigma_b:.4g}, sigma_o {oi.sigma_o:.4g} [{ds.background.attrs['units']}]")
    return 0


def cmd_train(args) -> int:
    import numpy as np
    import xarray as xr

    from ailand.progress import Progress

    from .train import save_model, train_exercise1

    _threads(args.threads)
    if not Path(args.data).exists():
        print(f"ailand analyse train: no such file {args.data} (make it with `ailand analyse make-data`)", file=sys.stderr)
        return 2
    ds = xr.open_dataset(args.data).load()
    key = {"truth": "truth", "oi": "analysis_oi", "letkf": "analysis_letkf"}[args.target]
    if key not in ds:
        print(f"ailand analyse train: {args.data} has no {key!r} (made with --no-letkf?)", file=sys.stderr)
        return 2
    static, weight = _static_of(ds)
    ds["mask"] = ds["mask"].astype(bool)
    model = train_exercise1(ds, "truth" if key == "truth" else ds[key].values, scale=float(ds.attrs["oi_sigma_b"]),
                            static=static, weight=weight, epochs=args.epochs, width=args.width, depth=args.depth,
                            lr=args.lr, periodic=static is None, seed=args.seed,
                            progress=Progress(not args.no_progress))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out, meta={"target": args.target, "data": str(args.data)})
    print(f"U-Net trained on {args.target} ({ds.sizes['case']} cases, {args.epochs} epochs, final loss "
          f"{model.history[-1]:.4g}) -> {args.out}")
    return 0


def cmd_apply(args) -> int:
    import numpy as np
    import xarray as xr

    from .experiments import rmse
    from .train import load_model, predict_exercise1

    _threads(args.threads)
    for f in (args.model, args.data):
        if not Path(f).exists():
            print(f"ailand analyse apply: no such file {f}", file=sys.stderr)
            return 2
    model = load_model(args.model)
    ds = xr.open_dataset(args.data).load()
    static, weight = _static_of(ds)
    try:
        xa = predict_exercise1(model, ds.background.values, ds.obs.values, ds.mask.values.astype(bool), static=static)
    except ValueError as err:
        print(f"ailand analyse apply: {err}", file=sys.stderr)
        return 2
    units = ds.background.attrs.get("units", "")
    if "truth" in ds:
        where = None if weight is None else weight > 0
        print(f"RMSE vs truth [{units}]" + (" (land cells)" if where is not None else ""))
        for name in ("background", "analysis_oi", "analysis_letkf"):
            if name in ds:
                print(f"  {name:<16} {rmse(ds[name].values, ds.truth.values, where):.4f}")
        print(f"  {'unet':<16} {rmse(xa, ds.truth.values, where):.4f}")
    if args.out:
        ds["analysis_unet"] = (ds.background.dims, xa, {"units": units, "long_name": "U-Net analysis",
                                                        "model": str(args.model)})
        ds.to_netcdf(args.out)
        print(f"written: {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from ailand.progress import Progress

    from . import experiments as X

    _threads(args.threads)
    cfg = X.config(args.experiment, args.quick, epochs=args.epochs, seed=args.seed)
    fn = {"ex1": X.exercise1_experiment, "ex2": X.exercise2_experiment, "physics": X.physics_experiment,
          "land": X.land_experiment}[args.experiment]
    scores, _ = fn(cfg, progress=Progress(not args.no_progress))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.experiment}_scores.json").write_text(json.dumps(scores, indent=1, default=float))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from learned_analysis import report  # the benchmark's table
        print(report({args.experiment: scores}))
    except ImportError:
        print(json.dumps(scores, indent=1, default=float))
    print(f"\nwritten: {out / f'{args.experiment}_scores.json'}")
    return 0
