"""The JENN stage (issue 18): teach the shipped emulator the physics' soil-moisture sensitivities.

Builds the physics' step sensitivities d(T2m, RH2m, Qle, Qh, swvl1..3)/d(swvl1..3) on new
weather (2019, seed 21) at the 8 real training sites for the default and 3 sampled parameter
sets (every 3rd 6-hour step), fine-tunes a copy of the shipped emulator with
``ailand.emulator.jenn.fit_jacobian`` (jac_weight, steps from the command line), and scores
the sensitivities before and after at the held-out sites (BE-Lon, US-Kon, April-September
2019). Writes runs/jenn/emulator.pt and runs/jenn/scores.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_jenn.py 1.0 1500 [ENSEMBLE] \\
        [--emulator PATH] [--lr 3e-4] [--out runs/jenn]   # ~8 min

ENSEMBLE: the emulator's training ensemble (default runs/ensemble/default.zarr, ``make
ensemble``), whose values the stage keeps fitting.

Then ``ailand evaluate --emulator runs/jenn/emulator.pt --data ENSEMBLE`` for its value
skill and ``benchmarks/land_da.py --emulator runs/jenn/emulator.pt --methods
open_loop,sekf-fd,sekf-emulator,4dvar-emulator --out benchmarks/results/land_da_jenn.json``.
"""
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import ailand
from ailand.emulator import Emulator
from ailand.emulator.jenn import fit_jacobian, physics_sensitivities, sensitivity_scores

TRAIN_SITES = ["FR-Fon", "FI-Hyy", "RU-Cok", "IT-Noe", "SN-Dhr", "TD-Bod", "CN-Tak", "GF-Guy"]  # the real training sites
HELD_OUT_SITES = ["BE-Lon", "US-Kon"]


def main(argv) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jac_weight", type=float)
    p.add_argument("steps", type=int)
    p.add_argument("ensemble", nargs="?", default="runs/ensemble/default.zarr")
    p.add_argument("--emulator", default=None, help="emulator to fine-tune (default: the shipped one)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the stage")
    p.add_argument("--out", default="runs/jenn", help="output folder (emulator.pt, scores.json)")
    args = p.parse_args(argv)
    jac_weight, steps, ensemble = args.jac_weight, args.steps, args.ensemble
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    em = Emulator.load(args.emulator) if args.emulator else Emulator.default()
    draw = em.space.sample(3, seed=5)  # (3, parameter)
    params = {n: np.concatenate([[d], np.asarray(draw.sel(parameter=n).values)]) for n, d in zip(em.space.names, em.space.default_vector)}
    t = time.time()
    js = physics_sensitivities(em, ailand.synthetic_forcing(TRAIN_SITES, "2019-01-01", "2019-12-31", seed=21),
                               params=params, every=3, spinup_years=1, progress=True)
    print(f"training set: {len(js)} samples in {time.time() - t:.0f} s", flush=True)
    jh = physics_sensitivities(em, ailand.synthetic_forcing(HELD_OUT_SITES, "2019-04-01", "2019-09-30", seed=22), every=3, spinup_years=1)
    before = {"train": sensitivity_scores(em, js), "held_out_sites": sensitivity_scores(em, jh)}
    rec = fit_jacobian(em, ensemble, js, jac_weight=jac_weight, steps=steps, lr=args.lr, progress=True)
    after = {"train": sensitivity_scores(em, js), "held_out_sites": sensitivity_scores(em, jh)}
    print("held-out sites: sign agreement (magnitude ratio), before -> after")
    for o in js.outputs:
        b, a = before["held_out_sites"][o], after["held_out_sites"][o]
        print(f"  {o:6s} {b['sign_agreement']:.2f} ({b['magnitude_ratio']:.2f}) -> {a['sign_agreement']:.2f} ({a['magnitude_ratio']:.2f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    em.save(out / "emulator.pt")
    json.dump({"before": before, "after": after, "fit": rec}, open(out / "scores.json", "w"), indent=1)
    print(f"wrote {out}/emulator.pt and {out}/scores.json ({rec['seconds']:.0f} s of fine-tuning)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
