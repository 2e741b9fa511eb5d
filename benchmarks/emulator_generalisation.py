"""How the emulator generalises (issue 18): water balance, held-out sites, extremes, an unseen domain.

For each emulator variant (``--emulator LABEL=PATH ...``; ``default`` is the shipped file;
``+closure`` appended to a label runs that file with ``water_closure`` on):

water      the column water-balance residual of a free 1-year rollout and of one-step
           predictions on the held-out members and sites of the training ensemble
           (``ailand.emulator.evaluate.water_balance``), against the physics' own;
skill      2-year rollout ACC / RMSE of daily means on held-out members and sites
           (``Emulator.evaluate``, as ``ailand evaluate``);
extremes   physics and emulator side by side for one year at the held-out sites under
           the scenarios of ``ailand.emulator.stress`` (control, +4 K, -30 % precipitation,
           a drought summer, a heat wave) and with every parameter at its lower / upper
           bound: ACC and bias of daily means, the emulator's water residual [kg m-2 yr-1],
           share of inputs extrapolated and of states clamped;
spatial    one year over every land cell of a 3-degree gridded world (``ailand.dust.world``,
           North Africa - Middle East - Europe), a domain the emulator never saw: maps of
           ACC / RMSE / bias (docs/emulator_spatial.png) and their distribution.

Run (one thread; ~25 min for two variants at load 1):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_generalisation.py \\
        --emulator default=data/emulator/default.pt default+closure=data/emulator/default.pt

Writes benchmarks/results/emulator_generalisation.json (``--out``; variants of an earlier
run in that file are kept unless measured again) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("water", "skill", "extremes", "spatial")


def load(spec: str):
    from ailand.emulator import Emulator

    label, _, path = spec.partition("=")
    em = Emulator.load(path or ROOT / "data/emulator/default.pt")
    em.water_closure = label.endswith("+closure")
    return label, em


def section_water(em, data, days):
    from ailand.emulator.evaluate import water_balance

    wb = water_balance(em, data, days=days)
    out = {}
    for src in ("physics", "emulator"):
        s = wb.sel(source=src)
        out[src] = {"mean_abs_step": float(s["mean_abs_step"].mean()), "mean_abs_one_step": float(s["mean_abs_one_step"].mean()),
                    "accumulated_mean_abs": float(np.abs(s["accumulated"]).mean()),
                    "accumulated_by_site": {str(k): float(v) for k, v in s["accumulated"].mean("member").to_series().items()}}
    out["precipitation"] = float(wb["precipitation"].mean())
    out["days"] = float(wb.attrs["days"])
    return out


def section_skill(em, data):
    sc = em.evaluate(data, variables=("swvl1", "swvl2", "swvl3", "stl1", "Qle", "Qh", "T2m", "RH2m"))
    out = {}
    for s in sc["set"].values:
        out[str(s)] = {str(v): {"acc": float(sc["acc"].sel(set=s, mode="rollout", variable=v)),
                                "rmse": float(sc["rmse"].sel(set=s, mode="rollout", variable=v))} for v in sc["variable"].values}
    return out


def section_extremes(em, sites, year, seed, cache):
    import ailand
    from ailand.emulator.stress import SCENARIOS, corner_params, scenario, side_by_side

    base = ailand.synthetic_forcing(sites, f"{year}-01-01", f"{year}-12-31", seed=seed)
    out = {}
    cases = [(s, s, None) for s in SCENARIOS] + [("params_lower", "control", "lower"), ("params_upper", "control", "upper")]
    for name, sc, corner in cases:
        t = time.perf_counter()
        f = scenario(base, sc)
        params = corner_params(em.space, corner) if corner else None
        key = (name,)
        if key not in cache:  # the physics' spun-up state, shared by all variants
            cache[key] = ailand.ToyEcLand().initial_conditions(f, params=params, spinup_years=1)
        _, s = side_by_side(em, f, params=params, state0=cache[key])
        s["seconds"] = time.perf_counter() - t
        out[name] = s
        print(f"  {name:14s} swvl1 ACC {s['swvl1']['acc']:.3f}  swvl3 {s['swvl3']['acc']:.3f}  Qle {s['Qle']['acc']:.3f}  "
              f"water {s.get('water_residual', float('nan')):.2f} kg m-2/yr  ({s['seconds']:.0f} s)", flush=True)
    return out


def section_spatial(em, world, label, figdir):
    from ailand.emulator.stress import spatial_check

    ds = spatial_check(em, world, variables=("swvl1", "stl1", "Qle"))
    out = {}
    for v in ds.data_vars:
        a = ds[v].values[np.isfinite(ds[v].values)]
        out[v] = {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
                  "units": ds[v].attrs.get("units", ""), "cells": int(a.size)}
    europe = (ds["lat"] >= 40) & (ds["lon"] >= -10) & (ds["lon"] <= 30)
    desert = (ds["lat"] >= 15) & (ds["lat"] <= 32)
    for reg, m in (("europe", europe), ("desert_belt", desert)):
        out[reg] = {v: float(ds[v].where(m).median()) for v in ds.data_vars}
    if figdir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(14, 6.5), constrained_layout=True)
        for j, v in enumerate(("swvl1", "stl1", "Qle")):
            for i, (kind, cmap, lim) in enumerate((("acc", "viridis", (0, 1)), ("bias", "RdBu_r", None))):
                da = ds[f"{kind}_{v}"]
                if lim is None:
                    m = float(np.nanpercentile(np.abs(da.values), 95)) or 1.0
                    lim = (-m, m)
                im = axes[i, j].pcolormesh(ds["lon"], ds["lat"], da, cmap=cmap, vmin=lim[0], vmax=lim[1], shading="auto")
                axes[i, j].set_title(f"{kind.upper()} daily {v} [{da.attrs.get('units', '')}]")
                fig.colorbar(im, ax=axes[i, j], shrink=0.85)
        fig.suptitle(f"emulator '{label}' vs physics over a domain it never saw (1 year, daily means)")
        figdir.mkdir(parents=True, exist_ok=True)
        fig.savefig(figdir / f"emulator_spatial_{label.replace('+', '_')}.png", dpi=80)
        plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emulator", nargs="+", default=["default=", "default+closure="], help="LABEL=PATH (empty PATH: the shipped default)")
    p.add_argument("--ensemble", default=str(ROOT / "runs/ensemble/default.zarr"),
                   help="the emulator's training ensemble, for its held-out members/sites (default: what `make ensemble` builds)")
    p.add_argument("--only", default=",".join(SECTIONS))
    p.add_argument("--sites", default="BE-Lon,US-Kon", help="sites for the extremes (default: the held-out sites)")
    p.add_argument("--year", type=int, default=2021)
    p.add_argument("--resolution", type=float, default=3.0, help="grid of the spatial check [degrees]")
    p.add_argument("--figdir", default=str(ROOT / "runs/generalisation"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/emulator_generalisation.json"))
    args = p.parse_args(argv)
    if {"water", "skill"} & set(args.only.split(",")) and not Path(args.ensemble).exists():
        p.error(f"{args.ensemble} is missing: run 'make ensemble' (or pass --ensemble, or --only extremes,spatial)")
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    only = args.only.split(",")
    out = {"command": " ".join(sys.argv), "ensemble": args.ensemble, "variants": {}}
    if Path(args.out).exists():  # add to (or replace) the variants of an earlier run
        old = json.loads(Path(args.out).read_text())
        out["variants"] = old.get("variants", {})
        out["command"] = old.get("command", "") + " ; " + out["command"]
    world, cache = None, {}
    for spec in args.emulator:
        label, em = load(spec)
        print(f"== {label}: {em!r}, water_closure={em.water_closure}", flush=True)
        r = {}
        if "water" in only:
            r["water"] = section_water(em, args.ensemble, 365)
            print(f"  water: rollout {r['water']['emulator']['accumulated_mean_abs']:.2f} kg m-2/yr "
                  f"(physics {r['water']['physics']['accumulated_mean_abs']:.3f}), one-step "
                  f"{r['water']['emulator']['mean_abs_one_step']:.4f} kg m-2 per step", flush=True)
        if "skill" in only:
            r["skill"] = section_skill(em, args.ensemble)
            for s, d in r["skill"].items():
                print(f"  {s}: " + "  ".join(f"{v} {x['acc']:.3f}" for v, x in d.items()), flush=True)
        if "extremes" in only:
            r["extremes"] = section_extremes(em, args.sites.split(","), args.year, 7, cache)
        if "spatial" in only:
            if world is None:
                from ailand.dust.world import make_world

                world = make_world(f"{args.year}-01-01", f"{args.year}-12-31", resolution=args.resolution, seed=3)
            t = time.perf_counter()
            r["spatial"] = section_spatial(em, world, label, Path(args.figdir))
            print(f"  spatial ({r['spatial']['acc_swvl1']['cells']} land cells, {time.perf_counter() - t:.0f} s): "
                  f"median ACC swvl1 {r['spatial']['acc_swvl1']['median']:.3f}, stl1 {r['spatial']['acc_stl1']['median']:.3f}, "
                  f"Qle {r['spatial']['acc_Qle']['median']:.3f}", flush=True)
        out["variants"][label] = r
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))  # after each variant: nothing lost if interrupted
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
