"""Deep-learning multi-model ensemble on the SYNTHETIC CAMS-like ensemble (issue 16).

The data are synthetic (``ailand.mme.synthetic_cams``: a toy chemistry-transport model and 11
member "models" with designed errors), NOT CAMS data; the numbers below say how the methods
rank on it, not what they would gain on the real CAMS ensemble.

    OMP_NUM_THREADS=1 .venv/bin/python examples/dl_ensemble.py          # ~12-15 min on the 2 shared cores at load 5-7
    OMP_NUM_THREADS=1 .venv/bin/python examples/dl_ensemble.py --quick  # ~1.5 min smoke run (16 x 16, 90 days)

Steps
1. the ensemble: 32 x 32 cells, 364 days every 6 h, lead days 0-2, 11 members, met predictors
   (``runs/mme/data.zarr``, made once and reused; ``ailand mme prepare`` makes the same file);
2. a split by time: blocks of 30 days (21 train, 3 validation, 3 test, 1-day gaps);
3. baselines: median, mean, weighted ensembles (NNLS on the simplex, inverse MSE, NNLS on
   the last 60 training days), weights learnt on the training period;
4. the DL ensemble: first a single-variable HalfUNet for O3, then one HalfUNet for all four
   pollutants and all lead days, and a UNet for comparison (early stopping on validation);
5. scores on the test period (score card, plot, error maps);
6. robustness: every member missing in turn (a late model);
7. operations: parameters, file size, inference time per forecast on the CPU, ONNX export
   and onnxruntime parity.

Writes ``runs/mme_example/`` (``--out``): the models, ``scores.nc``, ``scorecard.md``,
``scorecard.png``, ``error_maps.png``, ``missing_member.csv``, ``results.json``, ``halfunet.onnx``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ailand.mme import MMEData, open_mme, split_by_time, synthetic_cams
from ailand.mme.baselines import WeightedEnsemble, ensemble_mean, ensemble_median
from ailand.mme.model import DLEnsemble, default_device
from ailand.mme.onnx_export import OnnxDLEnsemble
from ailand.mme.plots import plot_error_maps, plot_history, plot_scorecard
from ailand.mme.progress import Progress
from ailand.mme.verify import error_maps, scorecard_frame, scorecard_table, scores


def rmse_table(fc: dict, test: MMEData) -> pd.DataFrame:
    """RMSE over all lead days: rows systems, columns variables."""
    sc = scores(fc, test)
    return (sc["rmse"] ** 2 * sc["n_points"]).sum("lead_time").__truediv__(sc["n_points"].sum("lead_time")) \
        .pipe(np.sqrt).to_pandas()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small grid and period, short training (a smoke run)")
    ap.add_argument("--out", default=None, help="output folder (default runs/mme_example, --quick: runs/mme_example_quick)")
    ap.add_argument("--data", default=None, help="ensemble dataset (default runs/mme/data.zarr; made when missing)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--skip-unet", action="store_true", help="train only the HalfUNets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    prog = Progress(True)
    out = Path(args.out or ("runs/mme_example_quick" if args.quick else "runs/mme_example"))
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        size = dict(n_lat=16, n_lon=16, days=90, lead_days=(0, 1, 2))
        train_kw = dict(epochs=6, samples_per_epoch=384, patience=3)
        net_kw = dict(width=12, depth=2)
        data_path = Path(args.data or out / "data.zarr")
    else:
        size = dict(n_lat=32, n_lon=32, days=364, lead_days=(0, 1, 2))
        train_kw = dict(epochs=20, samples_per_epoch=768, patience=4)
        net_kw = dict(width=16, depth=3)
        data_path = Path(args.data or "runs/mme/data.zarr")
    results: dict = {"quick": args.quick, "threads": args.threads, "device": default_device(), "torch": torch.__version__}

    # 1. data
    if data_path.exists():
        with prog.stage(f"reading {data_path}"):
            data = open_mme(data_path)
    else:
        with prog.stage("synthetic CAMS-like ensemble"):
            data = MMEData(synthetic_cams(seed=args.seed, progress=prog, **size))
            data.save(data_path)
    print(data.summary())
    # 2. split
    split = split_by_time(data.time)
    test = data.isel_time(split.test)
    print(f"split: {split.description}: {split.train.size} train, {split.val.size} validation, {split.test.size} test times")
    results["data"] = {"path": str(data_path), "shape": data.shape, "split": split.description,
                       "n_train_times": int(split.train.size), "n_test_times": int(split.test.size)}

    # 3. baselines, and the weighting alternatives
    fc = {}
    with prog.stage("baselines"):
        t0 = time.perf_counter()
        fc["median"] = ensemble_median(test)
        fc["mean"] = ensemble_mean(test)
        weighting = {}
        for name, we in (("weighted", WeightedEnsemble("nnls")), ("weighted_inverse_mse", WeightedEnsemble("inverse_mse")),
                         ("weighted_nnls_60d", WeightedEnsemble("nnls", window_days=60))):
            fc[name] = we.fit(data, split.train).predict(test)
            weighting[name] = we.weights_
        results["baseline_seconds"] = time.perf_counter() - t0
    w = weighting["weighted"].mean(("variable", "lead_time")).to_pandas().round(3)
    print("\nNNLS weights (mean over variables and lead days):\n" + w.to_string())
    print("\nweighting alternatives, test RMSE over all lead days [ug m-3]:")
    alt = rmse_table({k: fc[k] for k in ("median", "mean", "weighted", "weighted_inverse_mse", "weighted_nnls_60d")}, test)
    print(alt.round(3).to_string())
    results["weighting_alternatives_rmse"] = alt.round(4).to_dict()

    # 4. DL ensembles
    models = {}
    for name, kw in (("o3_only", dict(variables=["O3"], arch="halfunet")), ("halfunet", dict(arch="halfunet")),
                     ("unet", dict(arch="unet"))):
        if name == "unet" and args.skip_unet:
            continue
        model = DLEnsemble(**kw, **net_kw)
        hist = model.fit(data, split, seed=args.seed, checkpoint_dir=out / f"{name}_checkpoints", progress=prog, **train_kw)
        model.save(out / f"{name}.pt")
        plot_history(hist, out / f"{name}.history.png")
        models[name] = model
        tr = model.meta["training"]
        print(f"{name}: {model}\n  {tr['epochs_run']} epochs ({tr['stopped']}) in {tr['seconds']:.0f} s, validation loss "
              f"{tr['best_val_loss']:.4f} vs {tr['base_val_loss']:.4f} for its weighted baseline")
        results.setdefault("training", {})[name] = {**tr, "n_parameters": model.n_parameters, "repr": repr(model)}
    for name, model in models.items():
        with prog.stage(f"{name} forecasts on the test period"):
            t0 = time.perf_counter()
            fc[f"dl_{name}"] = model.predict(test)
            results.setdefault("predict_seconds", {})[name] = time.perf_counter() - t0

    # 5. scores
    o3 = rmse_table({k: fc[k] for k in ("median", "weighted", "dl_o3_only", "dl_halfunet")}, test)["O3"]
    print("\nO3 test RMSE: single-variable model vs one model for all pollutants:\n" + o3.round(3).to_string())
    results["o3_single_vs_multi_rmse"] = o3.round(4).to_dict()
    main_systems = ["median", "weighted", "weighted_inverse_mse"] + [f"dl_{k}" for k in ("halfunet", "unet") if k in models]
    card = {k: fc[k] for k in main_systems}
    sc = scores(card, test)
    sc.to_netcdf(out / "scores.nc")
    table = scorecard_table(sc, reference="median")
    (out / "scorecard.md").write_text(table + "\n")
    print(f"\nscore card, test period {sc.attrs['period']} ({split.test.size} valid times x {data.shape['lead_time']} lead days):\n")
    print(table)
    plot_scorecard(sc, out / "scorecard.png")
    plot_error_maps(error_maps(card, test), out / "error_maps.png")
    results["rmse"] = {f"{v}/{lt}": row for (v, lt), row in scorecard_frame(sc).round(4).to_dict("index").items()}
    results["rmse_all_leads"] = rmse_table(card, test).round(4).to_dict()
    for s in ("hit_rate", "false_alarm_ratio", "bias", "corr"):
        results[s] = {f"{v}/{lt}": row for (v, lt), row in scorecard_frame(sc, s).round(4).to_dict("index").items()}
    results["n_events"] = {f"{v}/{int(lt)}": int(sc["n_events"].sel(system="median", variable=v, lead_time=lt))
                           for v in sc.variable.values for lt in sc.lead_time.values}

    # 6. a member missing
    model = models["halfunet"]
    full = rmse_table({"dl": fc["dl_halfunet"]}, test).loc["dl"]
    wfull = rmse_table({"w": fc["weighted"]}, test).loc["w"]
    rows = {}
    with prog.stage("each member missing in turn"):
        for m in data.members:
            late = test.with_missing(m)
            r = rmse_table({"dl": model.predict(late), "w": model.weighted_ensemble().predict(late)}, test)
            rows[m] = {**{f"dl {v}": r.loc["dl", v] / full[v] for v in data.variables},
                       **{f"weighted {v}": r.loc["w", v] / wfull[v] for v in data.variables}}
    miss = pd.DataFrame(rows).T
    miss.to_csv(out / "missing_member.csv")
    print("\nRMSE with one member missing / RMSE with all members (test period):\n" + miss.round(3).to_string())
    results["missing_member_rmse_ratio"] = miss.round(4).to_dict("index")
    results["missing_member_worst"] = {"dl": float(miss.filter(like="dl").values.max()),
                                       "weighted": float(miss.filter(like="weighted").values.max())}

    # 7. operations
    ops = {"n_parameters": model.n_parameters, "file_kib": (out / "halfunet.pt").stat().st_size / 1024}
    sub = test.isel_time(np.arange(min(16, split.test.size)))
    n_fc = sub.shape["time"] * sub.shape["lead_time"]
    for bs in (1, 32):
        model.predict(sub, batch_size=bs)  # warm-up
        t0 = time.perf_counter()
        model.predict(sub, batch_size=bs)
        ops[f"torch_ms_per_forecast_batch{bs}"] = 1e3 * (time.perf_counter() - t0) / n_fc
    t0 = time.perf_counter()
    path = model.to_onnx(out / "halfunet.onnx")
    ops["onnx_export_s"] = time.perf_counter() - t0
    ops["onnx_kib"] = path.stat().st_size / 1024
    ort = OnnxDLEnsemble(path, threads=args.threads)
    ort.predict(sub)
    t0 = time.perf_counter()
    b = ort.predict(sub)
    ops["onnxruntime_ms_per_forecast_batch32"] = 1e3 * (time.perf_counter() - t0) / n_fc
    a = model.predict(sub.with_missing("SYN-C"))
    b = ort.predict(sub.with_missing("SYN-C"))
    ops["onnx_max_abs_diff"] = max(float(np.nanmax(np.abs(a[v].values - b[v].values))) for v in model.variables)
    print("\noperations (one forecast = one valid time and lead day, 4 pollutants on the whole grid):")
    for k, v in ops.items():
        print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    results["operations"] = ops
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {out}/ (scorecard.md, scorecard.png, error_maps.png, missing_member.csv, results.json, models)")
    return results


if __name__ == "__main__":
    main()
