"""``ailand dust``: the dust emission inversion twin from the command line (a plugin of the
``ailand`` CLI, entry point ``dust = "calibration.dust_inversion.cli:register"``).

    ailand dust --start 2020-06-01 --end 2020-07-31 --out runs/dust
    ailand dust --start 2020-01-01 --end 2020-12-31 --out runs/dust_2020      # one year, default region

Builds the world (default region: 5-65N, 24W-66E at 1.5 degrees), runs the toy ecLand on its
land cells, makes the prior emission, the hidden true scaling field, the synthetic satellite
AOD and the held-out AERONET stations, runs the LETKF smoother with a progress bar, and writes
to ``--out``: ``dust_emission_analysis.nc`` (the emission analysis: daily scaling factors and
emissions on (time, lat, lon), per-period factors, monthly emission-weighted factors),
``evaluation/*.nc`` (station AOD of every run, seasonal maps, cycle diagnostics, the
observations), ``scores.csv``, ``report.md`` and ``figures/*.png``. Importing this module is
cheap: torch and xarray load only when the command runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _floats(text: str, n: int, name: str):
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != n:
        raise ValueError(f"{name}: expected {n} comma-separated numbers, got {text!r}")
    return tuple(float(p) for p in parts)


def _corr_length(text: str):
    """``"250"`` -> 250.0; ``"300-3000"`` -> (300.0, 3000.0)."""
    if "-" in text.strip()[1:]:
        lo, hi = text.split("-", 1)
        return (float(lo), float(hi))
    return float(text)


def register(subparsers) -> None:
    """Add ``dust`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "dust", help="dust emission inversion twin: LETKF smoother of emission scaling factors from satellite AOD",
        description="World -> toy ecLand -> Kok et al. 2014 emission -> aerosol transport -> AOD; a hidden true "
                    "scaling field makes synthetic satellite AOD (swaths, gaps, clouds) and held-out AERONET AOD; "
                    "an ensemble Kalman smoother (1 control + 20 members, 3-day periods) analyses the log scaling "
                    "factors; the analysis, scores and figures go to --out.")
    s.add_argument("--start", default="2020-06-01", help="first day (default 2020-06-01)")
    s.add_argument("--end", default="2020-07-31", help="last day, included (default 2020-07-31)")
    s.add_argument("--lat-range", default="5,65", help="outer cell faces 'min,max' [deg N]; default 5,65")
    s.add_argument("--lon-range", default="-24,66",
                   help="outer cell faces 'min,max' [deg E]; default -24,66 (a negative first value needs '=': "
                        "--lon-range=-24,66)")
    s.add_argument("--resolution", type=float, default=1.5, help="cell size [deg]; default 1.5")
    s.add_argument("--members", type=int, default=21, help="ensemble size including the control; default 21")
    s.add_argument("--period-days", type=float, default=3.0, help="scaling-factor period and cycle [days]; default 3")
    s.add_argument("--lag", type=int, default=4, help="earlier periods updated by each analysis; default 4 (15-day window)")
    s.add_argument("--lag-decay", default="1.5", help="temporal localisation of lagged factors [days] or 'none'; default 1.5")
    s.add_argument("--corr-length", default="250",
                   help="perturbation correlation length [km], or a range 'min-max' (e.g. 300-3000); default 250")
    s.add_argument("--log-std", type=float, default=0.3, help="std of the log-factor perturbations; default 0.3")
    s.add_argument("--loc-rad", type=float, default=350.0, help="localisation radius [km] (Gaspari-Cohn); default 350")
    s.add_argument("--persistence", type=float, default=0.8, help="background mean = persistence x last analysis; default 0.8")
    s.add_argument("--infl", type=float, default=1.0, help="multiplicative inflation (>= 1); default 1")
    s.add_argument("--superob", type=int, default=2, choices=(1, 2), help="satellite super-observation box [cells]; default 2")
    s.add_argument("--spinup-days", type=float, default=0.0, help="land spin-up [days]; default 0 (climatological start)")
    s.add_argument("--seed", type=int, default=0, help="seed of the world, truth, observations and perturbations; default 0")
    s.add_argument("--threads", type=int, default=1, help="torch threads; default 1")
    s.add_argument("--out", default="runs/dust", help="output folder; default runs/dust")
    s.add_argument("--no-figures", action="store_true", help="do not write the PNG figures")
    s.add_argument("--no-progress", action="store_true", help="no progress lines and bar")
    s.set_defaults(func=cmd_dust)


def cmd_dust(args) -> int:
    try:
        lat_range = _floats(args.lat_range, 2, "--lat-range")
        lon_range = _floats(args.lon_range, 2, "--lon-range")
        corr = _corr_length(args.corr_length)
        decay = None if args.lag_decay.strip().lower() == "none" else float(args.lag_decay)
    except ValueError as e:
        print(f"ailand dust: {e}", file=sys.stderr)
        return 2
    import torch

    from calibration.progress import Progress

    from .observations import SatelliteConfig
    from .smoother import InversionConfig
    from .twin import DustTwin

    try:
        cfg = InversionConfig(members=args.members, period_days=args.period_days, lag=args.lag, log_std=args.log_std,
                              corr_length_km=corr, loc_rad_km=args.loc_rad, persistence=args.persistence,
                              infl=args.infl, lag_decay_days=decay, seed=args.seed)
        sat = SatelliteConfig(superob=args.superob)
    except ValueError as e:
        print(f"ailand dust: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    p = Progress(enabled=not args.no_progress)
    t0 = time.perf_counter()
    twin = DustTwin(args.start, args.end, lat_range=lat_range, lon_range=lon_range, resolution=args.resolution,
                    seed=args.seed, period_days=args.period_days, spinup_days=args.spinup_days, satellite=sat, progress=p)
    t_setup = time.perf_counter() - t0
    result = twin.invert(cfg)
    ev = twin.evaluate(result)
    with p.stage(f"writing {args.out}"):
        paths = ev.save(args.out, figures=not args.no_figures)
    wall = time.perf_counter() - t0
    print(f"ailand dust: {twin!r}")
    print(f"set-up (world, land, truth, observations) {t_setup:.1f} s; inversion {result.wall_s:.1f} s "
          f"({result.wall_s / max(result.n_periods, 1):.2f} s per {cfg.period_days:g}-day cycle); total {wall:.1f} s")
    print(ev.report().split("\n", 2)[2])
    for q in paths:
        print(f"wrote {q}")
    Path(args.out, "timing.txt").write_text(f"setup_s {t_setup:.2f}\ninversion_s {result.wall_s:.2f}\ntotal_s {wall:.2f}\n")
    return 0
