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
    sites = ailand.load_sites(args.sites)
    if args.synthetic_sites:
        import xarray as xr

        from .sites import perturbed_sites

        exclude = [s for s in (args.synthetic_exclude or "").split(",") if s]
        parents = sites.sel(site=[s for s in sites["site"].values if s not in exclude])
        extra = perturbed_sites(parents, args.synthetic_sites, seed=args.seed).drop_vars("parent")
        sites = xr.concat([sites, extra], dim="site")
    if args.space_filling_sites:
        import xarray as xr

        from .sites import space_filling_sites

        sites = xr.concat([sites, space_filling_sites(args.space_filling_sites, seed=args.seed)], dim="site")
    forcing = ailand.synthetic_forcing(sites, args.start, args.end, seed=args.forcing_seed)
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


def cmd_jacobian(args) -> int:
    """``ailand jacobian``: one-step emulator Jacobians at given sites and times -> NetCDF (+ heatmap)."""
    import pandas as pd
    import xarray as xr

    import ailand
    from ailand.emulator import Emulator
    from ailand.emulator.jacobian import plot_jacobian, scaled_jacobian, step_inputs, step_jacobian

    em = Emulator.load(args.emulator)
    times = [pd.Timestamp(t) for t in args.time.split(",")]
    start = args.start or str((min(times) - pd.Timedelta(days=30)).date())
    end = args.end or str(max(times).date())
    if args.forcing:
        forcing = ailand.open_forcing(args.forcing, sites=args.sites).sel(time=slice(start, end))
    else:
        forcing = ailand.synthetic_forcing(args.sites, start, end, seed=args.seed)
    params = _parse_params(args.params) or None
    t0 = time.time()
    x = step_inputs(em, forcing, params=params, times=times, spinup_years=args.spinup_years)
    J = step_jacobian(em, x, method=args.method)
    Js = scaled_jacobian(em, J, x)
    y = em.step_flat(em.tensor(x.values)).detach().cpu().numpy()
    ds = xr.Dataset({"jacobian": J, "jacobian_scaled": Js, "inputs": x.drop_vars("input_units")})
    ds["outputs"] = xr.DataArray(y, dims=("sample", "output"), attrs={"long_name": "emulator step outputs (physical units)"})
    ds.attrs.update({"emulator": str(args.emulator), "forcing": args.forcing or f"synthetic seed {args.seed}", "start": start, "end": end})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out)
    print(f"wrote {out}: Jacobian {J.sizes['sample']} sample(s) x {J.sizes['output']} outputs x {J.sizes['input']} inputs in {time.time() - t0:.1f} s")
    if args.plot:
        plot_jacobian(Js, args.plot)
        print(f"wrote {args.plot} (first sample, scaled by input/output scales)")
    return 0


def cmd_export_onnx(args) -> int:
    """``ailand export-onnx``: the emulator step as ONNX (one input, one output, metadata)."""
    from ailand.emulator import Emulator
    from ailand.emulator.onnx_export import to_onnx

    em = Emulator.load(args.emulator)
    path = to_onnx(em, args.out, opset=args.opset)
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): features [batch, {len(em.input_names)}] -> "
        f"outputs [batch, {len(em.output_names)}], dt {em.dt:g} s"
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


def cmd_train(args) -> int:
    from .emulator import Emulator
    from .emulator.plots import plot_history
    from .emulator.train import as_ensemble_data

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = as_ensemble_data(args.data)
    em = Emulator.from_ensemble(data, width=args.width, depth=args.depth, activation=args.activation, layer_norm=args.layer_norm)
    print(f"ailand train: {em}")
    print(f"  data {args.data}: {data.data.shape[0]} dates x {data.data.shape[2]} members x {data.data.shape[3]} sites")
    ckdir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_suffix("").with_name(out.stem + "_checkpoints")
    val_sites = None if args.val_sites is None else [s for s in args.val_sites.split(",") if s]
    t0 = time.time()
    hist = em.fit(
        data, val_members=args.val_members, val_sites=val_sites, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, rollout_steps=args.rollout_steps, rollout_batch=args.rollout_batch,
        rollout_weight=args.rollout_weight, water_weight=args.water_weight, input_noise=args.input_noise, lr=args.lr, patience=args.patience,
        checkpoint_dir=ckdir, resume=not args.restart, device=args.device, seed=args.seed, time_limit=args.time_limit,
    )
    em.save(out)
    hist.attrs = {k: str(v) for k, v in hist.attrs.items()}
    hist.to_netcdf(out.with_suffix(".history.nc"))
    plot_history(hist, out.with_suffix(".history.png"))
    tr = em.meta["training"]
    print(
        f"wrote {out} after {tr['epochs_run']} epochs ({tr['stopped']}) in {time.time() - t0:.0f} s; "
        f"best validation loss {tr['best_val_loss']:.4f}; held-out sites {tr['val_sites']}"
    )
    return 0


def cmd_evaluate(args) -> int:
    from .emulator import Emulator
    from .emulator.evaluate import compare_rollout, drift_check, evaluate
    from .emulator.plots import plot_error_growth, plot_rollout
    from .emulator.train import as_ensemble_data

    em = Emulator.load(args.emulator)
    if args.water_closure:
        em.water_closure = True
        print("water closure on: each step's water-balance residual is removed from the soil (ailand.emulator.budget)")
    data = as_ensemble_data(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sc = evaluate(em, data)
    sc.to_netcdf(out / "scores.nc")
    print(f"ailand evaluate: {args.emulator} on {args.data} ({sc.attrs['rollout_days']:.0f}-day rollouts, daily means)")
    for mode in ("one_step", "rollout"):
        print(f"\nACC, {mode.replace('_', '-')}:")
        print(sc["acc"].sel(mode=mode).to_pandas().round(3).to_string())
    print("\nRMSE, rollout:")
    print(sc["rmse"].sel(mode="rollout").to_pandas().to_string(float_format=lambda x: f"{x:.3g}"))
    plot_error_growth(sc, out / "error_growth.png")
    sites = em.meta.get("training", {}).get("val_sites") or None
    plot_rollout(compare_rollout(em, data, sites=sites), out / "rollout_held_out_sites.png")
    plot_rollout(compare_rollout(em, data, sites=[s for s in data.sites if s not in (sites or [])][:4]), out / "rollout_held_out_member.png")
    if args.drift_years:
        dr = drift_check(em, sites=sites, years=args.drift_years, progress=True)
        dr.to_netcdf(out / "drift.nc")
        print(f"\n{args.drift_years}-year rollout: finite={bool(dr.attrs['finite'])}; annual means (physics vs emulator):")
        print(dr[["swvl1", "stl1", "Qle"]].to_dataframe().unstack("source").round(3).to_string())
    print(f"\nwrote {out}/scores.nc and PNGs in {time.time() - t0:.0f} s")
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
    e = sub.add_parser("ensemble", help="perturbed-parameter ensemble of the toy ecLand -> anemoi dataset (zarr)")
    e.add_argument("--members", type=int, default=64, help="ensemble members")
    e.add_argument("--design", default="lhs", choices=["lhs", "sobol", "uniform"], help="parameter design")
    e.add_argument("--seed", type=int, default=0, help="design seed")
    e.add_argument("--include-default", action="store_true", help="member 0 = default parameters")
    e.add_argument("--sites", default="all", help="'all' or comma-separated site names (see data/sites.csv)")
    e.add_argument("--start", default="2020-01-01", help="first day (YYYY-MM-DD)")
    e.add_argument("--end", default="2021-12-31", help="last day, inclusive (YYYY-MM-DD)")
    e.add_argument("--spinup-years", type=int, default=2, help="years of spin-up (first forcing year repeated)")
    e.add_argument("--output-freq", default="6h", help="dataset step, e.g. 6h, 1D")
    e.add_argument("--forcing-seed", type=int, default=0, help="weather generator seed")
    e.add_argument("--dt", type=float, default=3600.0, help="model time step [s]")
    e.add_argument("--chunk-members", type=int, default=32, help="members per model run (chunk)")
    e.add_argument("--dask", type=int, default=0, metavar="N", help="run the chunks on a dask LocalCluster of N workers")
    e.add_argument("--synthetic-sites", type=int, default=3, metavar="N",
                   help="add N jittered copies of every site (named SITE~k) to widen the training climates")
    e.add_argument("--synthetic-exclude", default="BE-Lon,US-Kon",
                   help="comma-separated sites not to copy (default: the emulator's held-out sites); '' copies all")
    e.add_argument("--space-filling-sites", type=int, default=0, metavar="N",
                   help="add N synthetic sites from a Latin hypercube over the site generator's soil, vegetation and "
                        "climate parameters (named SF001..., ailand.sites.space_filling_sites, seeded by --seed)")
    e.add_argument("--out", default="runs/ensemble/default.zarr", help="output anemoi dataset (*.zarr)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.set_defaults(func=cmd_ensemble)
    j = sub.add_parser("jacobian", help="one-step emulator Jacobians d outputs / d inputs at given sites and times -> NetCDF")
    j.add_argument("--emulator", required=True, help="emulator file written by Emulator.save")
    j.add_argument("--sites", default="FI-Hyy", help="comma-separated site names (see data/sites.csv)")
    j.add_argument("--time", required=True, help="time(s), comma-separated, e.g. 2020-04-15T06:00 (the step containing it)")
    j.add_argument("--start", help="forcing start (default: 30 days before --time); the state is rolled out from here")
    j.add_argument("--end", help="forcing end, inclusive (default: the day of --time)")
    j.add_argument("--forcing", help="NetCDF/zarr forcing instead of the synthetic weather generator")
    j.add_argument("--seed", type=int, default=0, help="weather generator seed")
    j.add_argument("--params", help="YAML file 'NAME: value' overriding parameter defaults")
    j.add_argument("--spinup-years", type=int, default=None, help="emulator spin-up years (default: the emulator's)")
    j.add_argument("--method", default="jacrev", choices=["jacrev", "jacfwd"], help="torch.func differentiation mode")
    j.add_argument("--out", required=True, help="output NetCDF path")
    j.add_argument("--plot", help="PNG heatmap of the first sample (outputs x inputs)")
    j.set_defaults(func=cmd_jacobian)
    o = sub.add_parser("export-onnx", help="export the emulator step to ONNX (input 'features', output 'outputs')")
    o.add_argument("--emulator", required=True, help="emulator file written by Emulator.save")
    o.add_argument("--out", required=True, help="output .onnx path")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    o.set_defaults(func=cmd_export_onnx)
    t = sub.add_parser("train", help="train the MLP emulator on an ensemble (anemoi dataset)")
    t.add_argument("--data", default="runs/ensemble/default.zarr", help="ensemble written by 'ailand ensemble'")
    t.add_argument("--out", default="runs/emulator/emulator.pt", help="emulator file")
    t.add_argument("--width", type=int, default=256, help="hidden units per layer")
    t.add_argument("--depth", type=int, default=4, help="hidden layers")
    t.add_argument("--activation", default="silu", help="silu, gelu, relu, tanh or elu")
    t.add_argument("--layer-norm", action="store_true", help="LayerNorm after each hidden layer")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--steps-per-epoch", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=1024, help="one-step samples per optimiser step")
    t.add_argument("--rollout-steps", type=int, default=16, help="length of the rollout loss (emulator steps)")
    t.add_argument("--rollout-batch", type=int, default=64, help="rollouts per optimiser step")
    t.add_argument("--rollout-weight", type=float, default=1.0)
    t.add_argument("--input-noise", type=float, default=0.5, help="start-state noise in tendency standard deviations")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own). On a machine shared with other jobs use 1: "
                        "two threads waiting on each other made an epoch 15x slower here")
    t.add_argument("--water-weight", type=float, default=0.0,
                   help="weight of the column water-balance term in the loss (0: off; see ailand.emulator.train)")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--patience", type=int, default=10, help="early stopping after this many epochs without improvement")
    t.add_argument("--val-sites", default=None, help="comma-separated held-out sites (default BE-Lon,US-Kon)")
    t.add_argument("--val-members", type=int, default=None, help="number of held-out members (default 1/8)")
    t.add_argument("--checkpoint-dir", default=None, help="default: next to --out")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint instead of resuming")
    t.add_argument("--time-limit", type=float, default=None, help="stop after the epoch that passes this many seconds")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    v = sub.add_parser("evaluate", help="score an emulator against the physics on held-out members and sites")
    v.add_argument("--emulator", default="runs/emulator/emulator.pt", help="emulator file")
    v.add_argument("--data", default="runs/ensemble/default.zarr", help="ensemble written by 'ailand ensemble'")
    v.add_argument("--out", default="runs/emulator/evaluation", help="output folder")
    v.add_argument("--water-closure", action="store_true",
                   help="close the column water balance at every step (Emulator.water_closure) for this evaluation")
    v.add_argument("--drift-years", type=int, default=0, help="also run a free rollout of this many years at the held-out sites")
    v.set_defaults(func=cmd_evaluate)
    from .mme.cli import register as register_mme  # `ailand mme ...`: multi-model ensembles

    register_mme(sub)
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
