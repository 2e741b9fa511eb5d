"""``ailand mme ...``: multi-model ensembles from the command line.

    ailand mme prepare  --out runs/mme/data.zarr                 # the SYNTHETIC CAMS-like ensemble
    ailand mme prepare  --from my_ensemble.nc --out data.zarr    # validate / convert your own
    ailand mme train    --data runs/mme/data.zarr --out runs/mme/model.pt
    ailand mme evaluate --data runs/mme/data.zarr --model runs/mme/model.pt --out runs/mme/eval
    ailand mme predict  --data runs/mme/data.zarr --model runs/mme/model.pt --out runs/mme/forecast.nc
    ailand mme export-onnx --model runs/mme/model.pt --out runs/mme/model.onnx --check-data runs/mme/data.zarr

Progress (stages, bars) goes to stderr; ``--no-progress`` silences it. Bad input fails with
``ailand mme: error: ...`` and exit status 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _progress(args):
    from .progress import Progress

    return Progress(enabled=not getattr(args, "no_progress", False))


def _threads(args):
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(int(args.threads))


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip() != ""]
    except ValueError as err:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from err


def cmd_prepare(args) -> int:
    from .dataset import MMEData, open_mme

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} already exists; add --overwrite to replace it")
    prog = _progress(args)
    t0 = time.perf_counter()
    if args.source:
        with prog.stage(f"reading and validating {args.source}"):
            data = open_mme(args.source, nan_policy=args.nan_policy)
    else:
        from .synthetic import synthetic_cams

        with prog.stage(f"synthetic CAMS-like ensemble (seed {args.seed}, {args.grid} x {args.grid}, {args.days} days)"):
            ds = synthetic_cams(n_lat=args.grid, n_lon=args.grid, start=args.start, days=args.days,
                                step_hours=args.step_hours, first_hour=args.first_hour, lead_days=_ints(args.lead_days),
                                seed=args.seed, progress=prog)
            data = MMEData(ds, _validated=False)
    if out.exists():
        import shutil

        shutil.rmtree(out) if out.is_dir() else out.unlink()
    with prog.stage(f"writing {out}"):
        data.save(out)
    print(data.summary())
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_train(args) -> int:
    from .dataset import open_mme, split_by_time
    from .model import DLEnsemble
    from .plots import plot_history

    _threads(args)
    prog = _progress(args)
    with prog.stage(f"reading {args.data}"):
        data = open_mme(args.data)
    split = split_by_time(data.time, cycle_days=args.cycle_days, val_days=args.val_days, test_days=args.test_days,
                          gap_days=args.gap_days, scheme=args.split)
    variables = None if args.variables == "all" else [v for v in args.variables.split(",") if v]
    model = DLEnsemble(variables=variables, arch=args.arch, width=args.width, depth=args.depth, base=args.base,
                       weighting=args.weighting, predictors=not args.no_predictors, member_dropout=args.member_dropout,
                       max_dropped=args.max_dropped)
    out = Path(args.out)
    ckdir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.stem + "_checkpoints")
    print(f"ailand mme train: {data}")
    print(f"  split: {split.description}: {split.train.size} train, {split.val.size} validation, {split.test.size} test times")
    t0 = time.perf_counter()
    hist = model.fit(data, split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                     samples_per_epoch=args.samples_per_epoch, seed=args.seed, device=args.device, checkpoint_dir=ckdir,
                     resume=not args.restart, time_limit=args.time_limit, progress=prog)
    model.save(out)
    hist.to_netcdf(out.with_suffix(".history.nc"))
    plot_history(hist, out.with_suffix(".history.png"))
    tr = model.meta["training"]
    print(f"  {model}")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) after {tr['epochs_run']} epochs ({tr['stopped']}) in "
          f"{time.perf_counter() - t0:.0f} s on {tr['device']}; validation loss {tr['best_val_loss']:.4f} "
          f"(the {model.config['base']} baseline: {tr['base_val_loss']:.4f})")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from .dataset import open_mme
    from .evaluate import evaluate
    from .model import DLEnsemble
    from .plots import plot_error_maps, plot_scorecard
    from .verify import scorecard_table

    _threads(args)
    prog = _progress(args)
    with prog.stage(f"reading {args.data} and {args.model}"):
        data = open_mme(args.data)
        model = DLEnsemble.load(args.model, device=args.device)
    times = None if args.period == "test" else np.arange(data.shape["time"])
    drop = [m for m in (args.drop_members or "").split(",") if m]
    res = evaluate(data, model, times=times, drop_members=drop, progress=prog)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res["scores"].to_netcdf(out / "scores.nc")
    res["maps"].to_netcdf(out / "error_maps.nc")
    table = scorecard_table(res["scores"], reference="median")
    (out / "scorecard.md").write_text(table + "\n")
    plot_scorecard(res["scores"], out / "scorecard.png")
    plot_error_maps(res["maps"], out / "error_maps.png")
    timing = {k: round(v * 1e3, 3) for k, v in res["seconds_per_forecast"].items()}
    (out / "timing.json").write_text(json.dumps({"ms_per_forecast": timing, "n_parameters": model.n_parameters}, indent=1))
    print(f"ailand mme evaluate: {args.model} on {res['scores'].attrs['period']} "
          f"({'test period' if args.period == 'test' else 'all times'}{', missing ' + ','.join(drop) if drop else ''})\n")
    print(table)
    print(f"\ninference per forecast (one valid time, one lead day, all variables) [ms]: {timing}")
    print(f"wrote {out}/scores.nc, error_maps.nc, scorecard.md, scorecard.png, error_maps.png, timing.json")
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from .dataset import open_mme
    from .model import DLEnsemble

    _threads(args)
    prog = _progress(args)
    with prog.stage(f"reading {args.data} and {args.model}"):
        data = open_mme(args.data)
        model = DLEnsemble.load(args.model, device=args.device)
    if args.period == "test":
        times = model.split(data).test
    elif args.period == "all":
        times = np.arange(data.shape["time"])
    else:
        start, _, end = args.period.partition("..")
        times = np.flatnonzero((data.time >= start) & (data.time <= (end or start) + " 23:59"))
        if times.size == 0:
            raise ValueError(f"--period {args.period!r} selects no valid time")
    drop = [m for m in (args.drop_members or "").split(",") if m]
    sub = data.isel_time(times)
    if drop:
        sub = sub.with_missing(drop)
    t0 = time.perf_counter()
    fc = model.predict(sub, progress=prog)
    dt = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fc.attrs.update({"model": str(args.model), "missing_members": ",".join(drop)})
    fc.to_netcdf(out)
    n = fc.sizes["time"] * fc.sizes["lead_time"]
    print(f"wrote {out}: {len(fc.data_vars)} variables x {fc.sizes['lead_time']} lead days x {fc.sizes['time']} times "
          f"in {dt:.2f} s ({1e3 * dt / max(n, 1):.2f} ms per forecast){'; missing members ' + ','.join(drop) if drop else ''}")
    return 0


def cmd_export_onnx(args) -> int:
    import numpy as np

    from .model import DLEnsemble
    from .onnx_export import OnnxDLEnsemble, to_onnx

    model = DLEnsemble.load(args.model)
    prog = _progress(args)
    with prog.stage("ONNX export"):
        path = to_onnx(model, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): inputs {OnnxDLEnsemble(path).input_names} -> forecast")
    if args.check_data:
        from .dataset import open_mme

        data = open_mme(args.check_data)
        idx = model.split(data).test[: args.check_times]
        sub = data.isel_time(idx)
        a = model.predict(sub)
        b = OnnxDLEnsemble(path).predict(sub)
        diff = max(float(np.nanmax(np.abs(a[v].values - b[v].values))) for v in model.variables)
        scale = max(float(np.nanmax(np.abs(a[v].values))) for v in model.variables)
        print(f"onnxruntime vs torch on {idx.size} test times: max |difference| {diff:.3g} (max |forecast| {scale:.3g})")
        if not diff <= 1e-4 * max(scale, 1.0):
            raise ValueError(f"onnxruntime and torch differ by {diff:.3g}")
    return 0


def register(subparsers) -> None:
    """Add ``ailand mme`` and its verbs to the ``ailand`` parser."""
    p = subparsers.add_parser("mme", help="multi-model ensembles: median, weighted and deep-learning (UNet/HalfUNet) combinations")
    sub = p.add_subparsers(dest="mme_command", required=True)

    def common(q, data=True, model=False):
        if data:
            q.add_argument("--data", default="runs/mme/data.zarr", help="ensemble dataset (NetCDF or zarr)")
        if model:
            q.add_argument("--model", default="runs/mme/model.pt", help="DL ensemble file written by 'ailand mme train'")
        q.add_argument("--no-progress", action="store_true", help="no progress on stderr")

    q = sub.add_parser("prepare", help="make the synthetic CAMS-like ensemble, or validate and convert your own")
    q.add_argument("--from", dest="source", default=None, help="your NetCDF/zarr ensemble (default: synthetic)")
    q.add_argument("--nan-policy", default="raise", choices=["raise", "mask"],
                   help="partly-NaN member fields: error, or treat the field as a missing member")
    q.add_argument("--grid", type=int, default=32, help="synthetic grid: cells per side")
    q.add_argument("--days", type=int, default=364, help="synthetic: days")
    q.add_argument("--start", default="2021-01-01", help="synthetic: first valid day")
    q.add_argument("--step-hours", type=int, default=6, help="synthetic: hours between valid times")
    q.add_argument("--first-hour", type=int, default=3, help="synthetic: first valid hour (UTC)")
    q.add_argument("--lead-days", default="0,1,2", help="synthetic: lead days, comma-separated")
    q.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    q.add_argument("--out", default="runs/mme/data.zarr", help="output .zarr or .nc")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    q.set_defaults(func=cmd_prepare)

    q = sub.add_parser("train", help="train the DL ensemble (split by time, early stopping, checkpoints)")
    common(q)
    q.add_argument("--out", default="runs/mme/model.pt", help="model file")
    q.add_argument("--variables", default="all", help="'all' or comma-separated (e.g. O3 for a single-variable model)")
    q.add_argument("--arch", default="halfunet", choices=["halfunet", "unet"])
    q.add_argument("--width", type=int, default=32, help="network channels")
    q.add_argument("--depth", type=int, default=3, help="down-sampling steps")
    q.add_argument("--base", default="weighted", choices=["weighted", "median", "none"], help="what the network corrects")
    q.add_argument("--weighting", default="nnls", choices=["nnls", "inverse_mse", "equal"], help="weighted-ensemble method")
    q.add_argument("--no-predictors", action="store_true", help="members and calendar only (no meteorology)")
    q.add_argument("--member-dropout", type=float, default=0.5, help="probability that a training sample loses members")
    q.add_argument("--max-dropped", type=int, default=2, help="at most this many members dropped per sample")
    q.add_argument("--epochs", type=int, default=30)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--lr", type=float, default=2e-3)
    q.add_argument("--patience", type=int, default=6, help="early stopping after this many epochs without improvement")
    q.add_argument("--samples-per-epoch", type=int, default=None, help="random subset of training samples per epoch")
    q.add_argument("--split", default="blocks", choices=["blocks", "chronological"], help="how to split by time")
    q.add_argument("--cycle-days", type=int, default=30)
    q.add_argument("--val-days", type=int, default=3)
    q.add_argument("--test-days", type=int, default=3)
    q.add_argument("--gap-days", type=int, default=1)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    q.add_argument("--checkpoint-dir", default=None, help="default: next to --out")
    q.add_argument("--restart", action="store_true", help="ignore an existing checkpoint instead of resuming")
    q.add_argument("--time-limit", type=float, default=None, help="stop after the epoch that passes this many seconds")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("evaluate", help="score median, mean, weighted and DL ensembles (score card, error maps)")
    common(q, model=True)
    q.add_argument("--out", default="runs/mme/evaluation", help="output folder")
    q.add_argument("--period", default="test", choices=["test", "all"], help="the model's test period, or all times")
    q.add_argument("--drop-members", default="", help="comma-separated members to treat as missing (late)")
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("predict", help="DL ensemble forecasts -> NetCDF")
    common(q, model=True)
    q.add_argument("--out", default="runs/mme/forecast.nc", help="output NetCDF")
    q.add_argument("--period", default="test", help="'test', 'all' or 'YYYY-MM-DD..YYYY-MM-DD' (valid days)")
    q.add_argument("--drop-members", default="", help="comma-separated members to treat as missing (late)")
    q.add_argument("--device", default=None)
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    q.set_defaults(func=cmd_predict)

    q = sub.add_parser("export-onnx", help="export the DL ensemble to ONNX (checked against torch with --check-data)")
    common(q, data=False, model=True)
    q.add_argument("--out", default="runs/mme/model.onnx", help="output .onnx")
    q.add_argument("--check-data", default=None, help="dataset to compare onnxruntime with torch on (its test period)")
    q.add_argument("--check-times", type=int, default=8, help="test times compared")
    q.set_defaults(func=cmd_export_onnx)
