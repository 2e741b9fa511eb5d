"""``ailand`` command line: ``ailand simulate ...`` (more subcommands arrive with the emulator and calibration)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parse_params(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: expected a mapping 'NAME: value' per line, got {type(values).__name__}")
    return {str(k): float(v) for k, v in values.items()}


def cmd_simulate(args) -> int:
    import ailand
    from .plots import plot_simulation

    params = _parse_params(args.params)
    if args.forcing:
        forcing = ailand.open_forcing(args.forcing, sites=None if args.sites == "all" else args.sites)
        forcing = forcing.sel(time=slice(args.start, args.end)) if args.start or args.end else forcing
    else:
        forcing = ailand.synthetic_forcing(args.sites, args.start, args.end, seed=args.seed)
    model = ailand.ToyEcLand(dt=args.dt)
    model.space.check(params)
    print(
        f"ailand simulate: {forcing.sizes['site']} site(s), {str(forcing.time.values[0])[:16]} .. "
        f"{str(forcing.time.values[-1])[:16]}, spin-up {args.spinup_years} y, output every {args.output_freq}"
    )
    t0 = time.time()
    ds = model.run(forcing, params=params or None, output_freq=args.output_freq, spinup_years=args.spinup_years, progress=True)
    for k, v in params.items():
        ds.attrs[f"param_{k}"] = v
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out)
    print(f"wrote {out} ({len(ds.data_vars)} variables, {ds.sizes['time']} times) in {time.time() - t0:.1f} s")
    if args.plot:
        plot_simulation(ds, args.plot)
        print(f"wrote {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ailand", description="Toy ecLand land-surface model, emulator and calibration tools")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="run the toy ecLand on synthetic or user forcing and write NetCDF")
    s.add_argument("--sites", default="all", help="'all' or comma-separated site names (see data/sites.csv)")
    s.add_argument("--start", default="2020-01-01", help="first day (YYYY-MM-DD)")
    s.add_argument("--end", default="2020-12-31", help="last day, inclusive (YYYY-MM-DD)")
    s.add_argument("--forcing", help="NetCDF/zarr forcing instead of the synthetic weather generator")
    s.add_argument("--params", help="YAML file 'NAME: value' overriding parameter defaults")
    s.add_argument("--seed", type=int, default=0, help="weather generator seed")
    s.add_argument("--dt", type=float, default=3600.0, help="model time step [s]")
    s.add_argument("--spinup-years", type=int, default=3, help="years of spin-up (first forcing year repeated)")
    s.add_argument("--output-freq", default="1h", help="output interval, e.g. 1h, 6h, 1D")
    s.add_argument("--out", required=True, help="output NetCDF path")
    s.add_argument("--plot", help="PNG of the main variables per site")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input: say what is wrong, no traceback
        print(f"ailand {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
