"""``ailand dust-nn``: the neural-network dust emission model from the command line (a plugin of
the ``ailand`` CLI, entry point ``dust-nn = "calibration.dust_nn.cli:register"``).

    ailand dust-nn train --out runs/dust_nn --stride 6 --epochs 12   # 4 years x 4 ten-day windows, 7 models, ~6 min
    ailand dust-nn train --out runs/dust_nn_quick --quick    # small region, 2 short windows: ~1 min
    ailand dust-nn train --out runs/dust_nn --search-budget 12   # + BoTorch vs random search
    ailand dust-nn evaluate --run runs/dust_nn               # skill, zeros, maps, sites, coupled AOD, importance
    ailand dust-nn export-onnx --run runs/dust_nn --out dust_nn.onnx    # the chosen model

Importing this module is cheap: torch and xarray load only when a command runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

MODELS = ("seed_v1", "seed_v2", "seed_v2_mask", "zero_aware", "zero_aware_mass", "seed_v2_ucubed", "zero_aware_ucubed")


def _years(text: str):
    try:
        if "-" in text and "," not in text:
            a, b = (int(v) for v in text.split("-"))
            ys = tuple(range(a, b + 1))
        else:
            ys = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--years: give 'YYYY-YYYY' or 'YYYY,YYYY,...', got {text!r}") from None
    if len(set(ys)) < 2:
        raise ValueError(f"--years: at least two years are needed (the last one is the test year), got {text!r}")
    return ys


def register(subparsers) -> None:
    """Add ``dust-nn`` with ``train``, ``evaluate``, ``export-onnx`` to the ``ailand`` subcommands."""
    s = subparsers.add_parser("dust-nn", help="neural-network dust emission model: train, evaluate, export to ONNX",
                              description="A feed-forward dust emission network trained on the emission analysis of "
                                          "'ailand dust' (the seed's recipe v1/v2, its source mask, and a zero-aware "
                                          "hurdle model with a physical gate), evaluated on a held-out year and "
                                          "exported to ONNX (one input, one output).")
    sub = s.add_subparsers(dest="dust_nn_command", metavar="{train,evaluate,export-onnx}")
    t = sub.add_parser("train", help="build the data (worlds, land, emission analysis) and train the models")
    t.add_argument("--out", default="runs/dust_nn", help="run folder (default runs/dust_nn)")
    t.add_argument("--years", default="2017-2020", help="years; the last is the test year (default 2017-2020)")
    t.add_argument("--window-days", type=int, default=10, help="days per seasonal window (4 windows a year; default 10)")
    t.add_argument("--stride", type=int, default=3, help="keep every n-th hour in the training years (default 3)")
    t.add_argument("--epochs", type=int, default=20, help="maximum epochs (early stopping, patience 5; default 20)")
    t.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    t.add_argument("--search-budget", type=int, default=0,
                   help="trainings per method for the hyperparameter search (BoTorch vs random); 0 = no search")
    t.add_argument("--search-epochs", type=int, default=3, help="epochs of each search training (default 3)")
    t.add_argument("--quick", action="store_true", help="small region (5-degree cells), two 4-day windows, 5 epochs")
    t.add_argument("--resume", action="store_true", help="continue interrupted trainings from their checkpoints")
    t.add_argument("--seed", type=int, default=0, help="seed of worlds, splits and networks (default 0)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--no-progress", action="store_true", help="no progress lines and bars")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="evaluate a trained run folder (tables, maps, sites, coupled runs, figures)")
    e.add_argument("--run", default="runs/dust_nn", help="run folder written by 'ailand dust-nn train'")
    e.add_argument("--no-figures", action="store_true", help="do not write PNG figures")
    e.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    e.add_argument("--no-progress", action="store_true", help="no progress lines and bars")
    e.set_defaults(func=cmd_evaluate)
    x = sub.add_parser("export-onnx", help="export one model to ONNX and check onnxruntime against torch")
    x.add_argument("--run", default="runs/dust_nn", help="run folder")
    x.add_argument("--model", default=None,
                   help="model name (default: the chosen one, zero_aware_tuned, or zero_aware_mass without a search)")
    x.add_argument("--out", default=None, help="ONNX file (default RUN/onnx/MODEL.onnx)")
    x.set_defaults(func=cmd_export)
    s.set_defaults(func=lambda args: (s.print_help(), 2)[1])


def _err(msg: str) -> int:
    print(f"ailand dust-nn: {msg}", file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    try:
        years = _years(args.years)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        bad = [m for m in models if m not in MODELS]
        if bad:
            raise ValueError(f"--models: unknown {bad}; choose from {','.join(MODELS)}")
        for name in ("window_days", "stride", "epochs", "threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if args.search_budget < 0 or (0 < args.search_budget < 3):
            raise ValueError(f"--search-budget must be 0 (no search) or >= 3, got {args.search_budget}")
    except ValueError as e:
        return _err(str(e))
    import torch

    from ailand.dust.nn import TrainConfig
    from calibration.progress import Progress

    from .data import QUICK_REGION, DataConfig
    from .experiment import train_all

    torch.set_num_threads(args.threads)
    p = Progress(enabled=not args.no_progress)
    if args.quick:
        dcfg = DataConfig(years=years, windows=(("01-01", 4), ("07-01", 4)), stride=args.stride, region=dict(QUICK_REGION),
                          seed=args.seed)
        tcfg = TrainConfig(epochs=min(args.epochs, 5), seed=args.seed)
    else:
        w = args.window_days
        dcfg = DataConfig(years=years, windows=(("01-01", w), ("04-01", w), ("07-01", w), ("10-01", w)),
                          stride=args.stride, seed=args.seed)
        tcfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    t0 = time.perf_counter()
    res = train_all(args.out, dcfg, tcfg, models=models, resume=args.resume, progress=p)
    out = Path(args.out)
    if args.search_budget:
        from .search import plot_search, run_search, search_table

        with p.stage(f"hyperparameter search: BoTorch vs random, {args.search_budget} trainings each"):
            sr = run_search(res["data"].train, res["data"].val, budget=args.search_budget, epochs=args.search_epochs,
                            seed=args.seed, progress=not args.no_progress)
        (out / "search").mkdir(parents=True, exist_ok=True)
        search_table(sr).to_csv(out / "search" / "trials.csv", index=False, float_format="%.5g")
        for m, (r, _) in sr.items():
            r.to_netcdf(out / "search" / f"{m}.nc")
        import matplotlib

        matplotlib.use("Agg")
        plot_search(sr, out / "search" / "search.png")
        for m, (r, _) in sr.items():
            print(f"{m}: best validation RMSE (log space) {r.best_J:.4f} after {r.n_evaluations} trainings "
                  f"({r.wall_time:.0f} s)")
        from .experiment import train_tuned

        with p.stage("the chosen model: zero-aware with the best searched configuration"):
            tuned = train_tuned(out, epochs=tcfg.epochs, seed=args.seed, progress=p)
        res["skill"], res["zero"] = tuned["skill"], tuned["zero"]
        res["models"]["zero_aware_tuned"] = tuned["model"]
    print(f"ailand dust-nn train: {len(res['models'])} models in {time.perf_counter() - t0:.0f} s; rows "
          f"train {res['data'].train.sizes['sample']}, validation {res['data'].val.sizes['sample']}, test "
          f"{res['data'].test.sizes['sample']} (year {years[-1]})")
    cols = ["model", "split", "r2", "rmse", "corr", "r2_log", "rmse_log", "corr_log"]
    print("\nskill against the emission analysis (rmse in kg m-2 s-1; log space ln(E/E_max + 1e-5)):")
    print(res["skill"][cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\ntest year: spurious emission outside sources [kg], log RMSE over sources, share of physics-forbidden "
          "rows with E > 0:")
    print(res["zero"].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {out}/ (tables/, models/, checkpoints/, skill.csv, zero.csv, training.json)")
    return 0


def cmd_evaluate(args) -> int:
    if not Path(args.run, "config.json").exists():
        return _err(f"{args.run} is not a dust-nn run folder (no config.json); run 'ailand dust-nn train --out "
                    f"{args.run}' first")
    import torch

    from calibration.progress import Progress

    from .experiment import evaluate_all

    torch.set_num_threads(args.threads)
    p = Progress(enabled=not args.no_progress)
    try:
        res = evaluate_all(args.run, progress=p, figures=not args.no_figures)
    except ValueError as e:
        return _err(str(e))
    print((Path(args.run) / "report.md").read_text())
    for q in res.get("figures", []):
        print(f"wrote {q}")
    return 0


def cmd_export(args) -> int:
    from .experiment import export_onnx

    try:
        path, rel = export_onnx(args.run, args.model, args.out)
    except ValueError as e:
        return _err(str(e))
    from ailand.dust.nn import OnnxEmission

    o = OnnxEmission(path)
    print(f"wrote {path}: input 'predictors' [batch, {len(o.names)}], output 'emission' [batch, 1] (kg m-2 s-1)")
    print("predictors: " + ", ".join(f"{n} [{u}]" for n, u in zip(o.names, o.units)))
    print(f"onnxruntime vs torch on 4096 random valid inputs: max relative difference {rel:.2e}")
    return 0
