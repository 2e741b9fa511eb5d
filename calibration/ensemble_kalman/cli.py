"""``ailand l96``: the Lorenz-96 twin (DAPPER's ``sakov2008``) from the command line, as a
plugin of the ``ailand`` CLI (entry point ``l96 = "calibration.ensemble_kalman.cli:register"``).

    ailand l96 --method letkf --members 7 --infl 1.04 --loc-rad 4 --cycles 1001 --out l96.json

Simulates the truth and observations (seed ``--seed``), runs the chosen filter, prints a
table (analysis/forecast RMSE and spread after burn-in, wall time) and writes JSON with
``rmse_a``, ``spread_a``, ``rmse_f``, ``spread_f`` and the configuration to ``--out``.
Importing this module is cheap: torch and xarray load only when the command runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

METHODS = ("enkf-pertobs", "etkf", "letkf")


def register(subparsers) -> None:
    """Add ``l96`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "l96",
        help="Lorenz-96 twin experiment with an ensemble Kalman filter (DAPPER's sakov2008 setting)",
        description=(
            "Lorenz-96 (F=8, 40 variables, RK4 dt=0.05) truth from N(e_0, 0.001 I), observations of every "
            "--obs-every-th variable after every step with R=I, and an ensemble Kalman filter started from "
            "the same prior. Prints the time-averaged analysis RMSE and spread after --burn-in and writes them "
            "as JSON (rmse_a, spread_a) to --out. Inflation multiplies the analysis anomalies (as DAPPER)."
        ),
    )
    s.add_argument("--method", default="letkf", choices=METHODS, help="analysis: enkf-pertobs, etkf or letkf; default letkf")
    s.add_argument("--members", type=int, default=None,
                   help="ensemble size N; default DAPPER's tuned case: letkf 7, etkf 20, enkf-pertobs 40")
    s.add_argument("--infl", type=float, default=None,
                   help="multiplicative inflation of the analysis anomalies (>= 1); default 1.04 (1.06 for enkf-pertobs)")
    s.add_argument("--loc-rad", type=float, default=4.0,
                   help="letkf: localisation radius in grid points (Gaspari-Cohn, coefficient exp(-1/2) there, "
                        "support 3.64 x radius); default 4")
    s.add_argument("--taper", default="GC", choices=("GC", "Gauss", "Step"), help="letkf taper; default GC")
    s.add_argument("--loc-batch", type=int, default=2,
                   help="letkf: state points per localisation batch (DAPPER's sakov2008: 2; 1 = one per point); default 2")
    s.add_argument("--no-rot", action="store_true", help="no random rotation after the square-root analyses")
    s.add_argument("--lag", type=int, default=0, help="fixed-lag smoother over this many earlier analyses; default 0")
    s.add_argument("--cycles", type=int, default=1001, help="analysis cycles (one model step each); default 1001 (DAPPER's KObs=1000)")
    s.add_argument("--burn-in", type=float, default=20.0, help="time units left out of the averages (t > burn-in); default 20")
    s.add_argument("--obs-every", type=int, default=1, help="observe every k-th variable (0, k, 2k, ...); default 1 (all)")
    s.add_argument("--seed", type=int, default=3000, help="truth/observations seed (the filter uses seed + 1); default 3000")
    s.add_argument("--threads", type=int, default=1, help="torch threads; default 1")
    s.add_argument("--out", default=None, help="JSON file for the results (rmse_a, spread_a, ...)")
    s.add_argument("--plot", default=None, help="PNG of truth / observations / forecast / analysis for x0")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_l96)


def cmd_l96(args) -> int:
    if args.members is not None and args.members < 2:
        print(f"ailand l96: --members must be >= 2, got {args.members}", file=sys.stderr)
        return 2
    if args.infl is not None and args.infl < 1:
        print(f"ailand l96: --infl must be >= 1, got {args.infl}", file=sys.stderr)
        return 2
    if args.method == "letkf" and not args.loc_rad > 0:
        print(f"ailand l96: --loc-rad must be > 0, got {args.loc_rad}", file=sys.stderr)
        return 2
    if args.obs_every < 1 or args.cycles < 1:
        print("ailand l96: --obs-every and --cycles must be >= 1", file=sys.stderr)
        return 2
    import torch

    from .lorenz96_twin import DAPPER_CASES, twin

    torch.set_num_threads(args.threads)
    case = DAPPER_CASES[args.method]
    N = args.members or case["N"]
    infl = args.infl if args.infl is not None else case["infl"]
    rot = False if args.no_rot else case["rot"]
    t0 = time.perf_counter()
    ds = twin(args.method, N, infl, args.loc_rad, rot=rot, cycles=args.cycles, burn_in=args.burn_in,
              obs_stride=args.obs_every, seed=args.seed, loc_batch=args.loc_batch, taper=args.taper,
              lag=args.lag, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    a = ds.attrs
    res = {"method": args.method, "members": N, "infl": infl, "rot": bool(rot),
           "loc_rad": args.loc_rad if args.method == "letkf" else None, "taper": args.taper if args.method == "letkf" else None,
           "loc_batch": args.loc_batch if args.method == "letkf" else None, "lag": args.lag,
           "cycles": args.cycles, "burn_in": args.burn_in, "n_averaged": a["n_averaged"], "obs_every": args.obs_every,
           "seed": args.seed, "rmse_a": a["rmse_a"], "spread_a": a["spread_a"], "rmse_f": a["rmse_f"],
           "spread_f": a["spread_f"], "wall_s": wall, "s_per_1000_cycles": wall / args.cycles * 1000}
    if args.lag:
        res["rmse_s"] = a["rmse_s"]
    print(f"ailand l96: Lorenz-96 sakov2008, {args.cycles} cycles, averages over {a['n_averaged']} analyses "
          f"(t > {args.burn_in}), observed every {args.obs_every} variable(s)")
    head = f"{'method':<14}{'N':>4}{'infl':>7}{'rmse_a':>9}{'spread_a':>10}{'rmse_f':>9}{'spread_f':>10}{'time [s]':>10}"
    print(head)
    print("-" * len(head))
    print(f"{args.method:<14}{N:>4}{infl:>7.3f}{a['rmse_a']:>9.4f}{a['spread_a']:>10.4f}{a['rmse_f']:>9.4f}"
          f"{a['spread_f']:>10.4f}{wall:>10.2f}")
    if args.lag:
        print(f"fixed-lag smoother (lag {args.lag}): rmse_s = {a['rmse_s']:.4f}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .filter import plot

        fig, ax = plt.subplots(figsize=(10, 3.5))
        plot(ds, 0, ax=ax, t_range=(0, min(float(ds.time[-1]), 30.0)))
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0
