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


def _dir_size(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def cmd_ensemble(args) -> int:
    """``ailand ensemble``: perturbed-parameter ensemble -> anemoi dataset (see ailand.ensemble)."""
    import ailand
    from ailand.ensemble import run_ensemble

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} already exists; add --overwrite to replace it")
    if args.members < 1:
        raise ValueError(f"--members must be >= 1, got {args.members}")
    t0 = time.time()
    model = ailand.ToyEcLand(dt=args.dt)
    design = model.space.sample(args.members, method=args.design, seed=args.seed)
    if args.include_default:
        design[0] = model.space.default_vector  # member 0 = the default parameters
    forcing = ailand.synthetic_forcing(args.sites, args.start, args.end, seed=args.forcing_seed)
    print(
        f"ailand ensemble: {args.members} members ({args.design}, seed {args.seed}"
        f"{', member 0 = defaults' if args.include_default else ''}), {forcing.sizes['site']} site(s), "
        f"{str(forcing.time.values[0])[:10]} .. {str(forcing.time.values[-1])[:10]}, spin-up {args.spinup_years} y, "
        f"output every {args.output_freq}, {'dask ' + str(args.dask) + ' workers' if args.dask else 'local'}"
    )
    client = cluster = None
    if args.dask:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.dask, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        path = run_ensemble(
            model, forcing, design, out, output_freq=args.output_freq, client=client,
            spinup_years=args.spinup_years, chunk_members=args.chunk_members, progress=True, overwrite=args.overwrite,
        )
    finally:
        if client is not None:
            client.close()
            cluster.close()
    from anemoi.datasets import open_dataset

    ds = open_dataset(str(path))
    n, v, m, s = ds.shape
    raw = n * v * m * s * 4
    print(
        f"wrote {path}: {n} dates x {v} variables x {m} members x {s} sites "
        f"({raw / 2**20:.1f} MiB as float32, {_dir_size(path) / 2**20:.1f} MiB on disk) in {time.time() - t0:.1f} s"
    )
    return 0


PLUGIN_GROUP = "ailand.cli"


def _load_plugins(subparsers) -> None:
    """Add the subcommands of installed plugins: entry points in group ``ailand.cli``.

    Each entry point names a function ``register(subparsers)`` that adds its subparser
    and sets ``func=`` with ``set_defaults`` (e.g. ``screen = "sensitivity.cli:register"``
    in pyproject.toml). This keeps the arrows one-way: ``ailand`` never imports the
    packages that add commands. A plugin that fails to load or register is skipped with
    a warning, so the other commands keep working.
    """
    import warnings
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()(subparsers)
        except Exception as err:  # a broken plugin must not break the other commands
            warnings.warn(
                f"ailand: command plugin {ep.name!r} ({ep.value}) failed to load and is unavailable: "
                f"{type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )


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
    e = sub.add_parser("ensemble", help="perturbed-parameter ensemble of the toy ecLand -> anemoi dataset (zarr)")
    e.add_argument("--members", type=int, default=32, help="ensemble members")
    e.add_argument("--design", default="lhs", choices=["lhs", "sobol", "uniform"], help="parameter design")
    e.add_argument("--seed", type=int, default=0, help="design seed")
    e.add_argument("--include-default", action="store_true", help="member 0 = default parameters")
    e.add_argument("--sites", default="all", help="'all' or comma-separated site names (see data/sites.csv)")
    e.add_argument("--start", default="2020-01-01", help="first day (YYYY-MM-DD)")
    e.add_argument("--end", default="2022-12-31", help="last day, inclusive (YYYY-MM-DD)")
    e.add_argument("--spinup-years", type=int, default=2, help="years of spin-up (first forcing year repeated)")
    e.add_argument("--output-freq", default="6h", help="dataset step, e.g. 6h, 1D")
    e.add_argument("--forcing-seed", type=int, default=0, help="weather generator seed")
    e.add_argument("--dt", type=float, default=3600.0, help="model time step [s]")
    e.add_argument("--chunk-members", type=int, default=8, help="members per model run (chunk)")
    e.add_argument("--dask", type=int, default=0, metavar="N", help="run the chunks on a dask LocalCluster of N workers")
    e.add_argument("--out", default="runs/ensemble/default.zarr", help="output anemoi dataset (*.zarr)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.set_defaults(func=cmd_ensemble)
    _load_plugins(sub)  # after the built-in commands: `ailand screen` ... (entry points, group ailand.cli)
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
