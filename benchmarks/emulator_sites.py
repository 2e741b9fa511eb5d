"""The emulator at sites it never saw (issue 18, item 2): the held-out-site targets, side by side.

For each emulator variant (``--emulator LABEL=PATH ...``; empty PATH: the shipped default),
on one common ensemble that holds every site scored (``--ensemble``, default the
space-filling one of ``make ensemble``):

skill        2-year rollout ACC of daily means (``ailand.emulator.evaluate.evaluate``) at
             the real held-out sites (BE-Lon, US-Kon) and at the held-out space-filling
             sites (``--synthetic``), over all the ensemble's members, per group and per site;
drift        a 10-year free rollout next to the physics at every held-out site
             (``drift_check``, weather seed 1): the largest |annual-mean swvl1 emulator -
             physics| per site [m3 m-3];
members      the same at the 8 real training sites for the ensemble's last 4 members
             (parameter sets no variant trained on);
sensitivity  d mean(June Qle, swvl1) / d parameter by autograd through a 2-month rollout at
             the 10 sites of data/sites.csv, against the physics' exact ones
             (``compare_sensitivities``, as tests/test_emulator_default.py): sign agreement
             over the significant entries, per output.

Targets (issue 18): held-out sites swvl1 >= 0.95, swvl2 >= 0.9, swvl3 >= 0.8, stl1 and Qle
>= 0.95; 10-year drift within +-0.01 m3 m-3 at every held-out site; sign agreement >= 95 %
for Qle and swvl1.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_sites.py \\
        --emulator old=runs/retrain/emulator.pt new=runs/emulator/emulator.pt

Writes benchmarks/results/emulator_sites.json (``--out``; variants of an earlier run are kept
unless measured again) and prints the tables.
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
REAL = ["BE-Lon", "US-Kon"]
SYNTHETIC = [f"SF{i:03d}" for i in range(89, 97)]
VARIABLES = ("swvl1", "swvl2", "swvl3", "stl1", "Qle", "T2m")
TARGETS = {"swvl1": 0.95, "swvl2": 0.9, "swvl3": 0.8, "stl1": 0.95, "Qle": 0.95}


def site_statics(names, n_sf: int, sf_seed: int):
    import xarray as xr

    import ailand
    from ailand.sites import space_filling_sites

    real = [s for s in names if not s.startswith("SF")]
    parts = [ailand.load_sites(real)] if real else []
    sf = [s for s in names if s.startswith("SF")]
    if sf:
        parts.append(space_filling_sites(n_sf, seed=sf_seed).sel(site=sf))
    return xr.concat(parts, dim="site") if len(parts) > 1 else parts[0]


def skill(em, data, groups):
    from ailand.emulator.evaluate import evaluate

    out = {}
    for g, sites in groups.items():
        sc = evaluate(em, data, val_sites=sites, variables=VARIABLES, sets=["held_out_sites"])
        out[g] = {v: float(sc["acc"].sel(set="held_out_sites", mode="rollout", variable=v)) for v in VARIABLES}
        per = {}
        for s in sites:
            sc = evaluate(em, data, val_sites=[s], variables=VARIABLES, sets=["held_out_sites"])
            per[s] = {v: float(sc["acc"].sel(set="held_out_sites", mode="rollout", variable=v)) for v in VARIABLES}
        out[g]["per_site"] = per
    return out


def members(em, data, last: int):
    """Held-out members at the 8 real training sites: the ensemble's last ``last`` members
    (parameter sets no variant trained on), 2-year rollout ACC."""
    from ailand.emulator.evaluate import evaluate
    from ailand.emulator.train import as_ensemble_data

    data = as_ensemble_data(data)
    labels = list(np.asarray(data.design["member"].values))
    real_train = [s for s in ("FR-Fon", "FI-Hyy", "RU-Cok", "IT-Noe", "SN-Dhr", "TD-Bod", "CN-Tak", "GF-Guy") if s in data.sites]
    others = [s for s in data.sites if s not in real_train]
    sc = evaluate(em, data, val_members=labels[-last:], val_sites=others, variables=VARIABLES, sets=["held_out_members"])
    return {v: float(sc["acc"].sel(set="held_out_members", mode="rollout", variable=v)) for v in VARIABLES}


def drift(em, statics, years):
    from ailand.emulator.evaluate import drift_check

    dr = drift_check(em, sites=statics, years=years)
    d = (dr["swvl1"].sel(source="emulator") - dr["swvl1"].sel(source="physics"))  # (year, site)
    return {"finite": bool(dr.attrs["finite"]), "years": years,
            "max_abs_swvl1": {str(s): float(np.abs(d.sel(site=s)).max()) for s in d["site"].values},
            "last_year_swvl1": {str(s): float(d.sel(site=s).isel(year=-1)) for s in d["site"].values}}


def sensitivity(em):
    import torch

    import ailand
    from ailand.emulator.jacobian import compare_sensitivities

    torch.manual_seed(0)
    forcing = ailand.synthetic_forcing("all", "2020-05-01", "2020-06-30", seed=11)
    state0 = ailand.ToyEcLand().initial_conditions(forcing, spinup_years=1)
    cmp = compare_sensitivities(em, ailand.ToyEcLand(compile=False), forcing, outputs=["Qle", "swvl1"],
                                period=slice("2020-06-01", "2020-06-30"), state0=state0)
    out = {"all": float(cmp.attrs["sign_agreement"]), "n_significant": int(cmp.attrs["n_significant"])}
    for o in ("Qle", "swvl1"):
        sig = cmp["significant"].sel(output=o).values
        agree = cmp["sign_agree"].sel(output=o).values
        out[o] = float(agree[sig].mean())
        out[f"n_{o}"] = int(sig.sum())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emulator", nargs="+", default=["default="], help="LABEL=PATH (empty PATH: the shipped default)")
    p.add_argument("--ensemble", default=str(ROOT / "runs/ensemble/default.zarr"), help="ensemble holding every scored site")
    p.add_argument("--synthetic", default=",".join(SYNTHETIC), help="held-out space-filling sites")
    p.add_argument("--space-filling", default="96:0", help="N:SEED of the ensemble's space_filling_sites (for the drift's weather)")
    p.add_argument("--drift-years", type=int, default=10)
    p.add_argument("--only", default="skill,members,drift,sensitivity")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/emulator_sites.json"))
    args = p.parse_args(argv)
    import torch

    from ailand.emulator import Emulator

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    only = args.only.split(",")
    if "skill" in only and not Path(args.ensemble).exists():
        p.error(f"{args.ensemble} is missing: run 'make ensemble' (or pass --ensemble)")
    synthetic = [s for s in args.synthetic.split(",") if s]
    groups = {"real_held_out": REAL, "synthetic_held_out": synthetic}
    n_sf, sf_seed = (int(x) for x in args.space_filling.split(":"))
    out = {"command": " ".join(sys.argv), "ensemble": args.ensemble, "targets": TARGETS, "variants": {}}
    if Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        out["variants"] = old.get("variants", {})
    for spec in args.emulator:
        label, _, path = spec.partition("=")
        em = Emulator.load(path) if path else Emulator.default()
        print(f"== {label}: {path or 'shipped default'}", flush=True)
        r, t = dict(out["variants"].get(label, {})), time.perf_counter()  # sections not measured again are kept
        if "skill" in only:
            r["skill"] = skill(em, args.ensemble, groups)
            for g in groups:
                print(f"  {g:20s} " + "  ".join(f"{v} {r['skill'][g][v]:.3f}" for v in VARIABLES), flush=True)
        if "members" in only:
            r["members"] = members(em, args.ensemble, 4)
            print(f"  {'held-out members':20s} " + "  ".join(f"{v} {r['members'][v]:.3f}" for v in VARIABLES), flush=True)
        if "drift" in only:
            r["drift"] = drift(em, site_statics(REAL + synthetic, n_sf, sf_seed), args.drift_years)
            m = r["drift"]["max_abs_swvl1"]
            print(f"  drift: largest |annual swvl1 bias| {max(m.values()):.4f} m3 m-3 ({max(m, key=m.get)}); "
                  f"sites within 0.01: {sum(v <= 0.01 for v in m.values())}/{len(m)}", flush=True)
        if "sensitivity" in only:
            r["sensitivity"] = sensitivity(em)
            s = r["sensitivity"]
            print(f"  parameter-sensitivity signs: all {s['all']:.3f}, Qle {s['Qle']:.3f} ({s['n_Qle']}), "
                  f"swvl1 {s['swvl1']:.3f} ({s['n_swvl1']})", flush=True)
        r["seconds"] = time.perf_counter() - t
        out["variants"][label] = r
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))  # after each variant: nothing lost if interrupted
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
