"""DL multi-model ensemble benchmark (issue 16): training time to a stated skill, inference throughput.

Sections (``--only`` picks some):

data       ``synthetic_cams`` at the default size (32 x 32, 364 days every 6 h, lead days 0-2,
           11 members): generation and validation time, size in memory; the file
           ``--data`` (default ``runs/mme/data.zarr``) is written when missing and reused.
train      the HalfUNet for all pollutants and lead days with the example's settings
           (width 16, depth 3, batch 16, 768 samples per epoch, <= 20 epochs, patience 4)
           on the blocks split; per epoch the wall time and the validation loss. Stated
           skill: the validation MSE (standardised, all pollutants and lead days) at or below
           ``--target`` (default 0.5) times that of the weighted (NNLS) ensemble the network
           corrects, i.e. at least half the weighted ensemble's squared error removed. Also
           the time to beat the weighted ensemble at all (target 1) and the test RMSE per
           pollutant of median, weighted and DL at the end.
infer      forecasts per second (one forecast = one valid time and lead day, 4 pollutants,
           whole grid) with torch (``DLEnsemble.predict``, batch 1 and 32, 1 and 2 threads)
           and onnxruntime (same), and on "cuda" when ``torch.cuda.is_available()``; the
           model's parameters and file sizes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dl_ensemble.py            # ~5-6 min on the 2 shared cores
    .venv/bin/python benchmarks/dl_ensemble.py --quick                       # smoke run (< 2 min), tiny data in /tmp/bench

Prints a table per section and writes JSON (``--out``, default
``benchmarks/results/dl_ensemble.json``; ``--quick``: ``/tmp/bench/dl_ensemble_quick.json``).
The load average at start and end is recorded: on the shared 2-core machine timings vary
with the other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mib  # noqa: E402

from ailand.mme import MMEData, open_mme, split_by_time, synthetic_cams  # noqa: E402
from ailand.mme.baselines import ensemble_median  # noqa: E402
from ailand.mme.model import DLEnsemble, default_device  # noqa: E402
from ailand.mme.onnx_export import OnnxDLEnsemble  # noqa: E402


def _rmse(fc, data, v):
    return float(np.sqrt(np.nanmean((fc[v].values - data.analysis_array(v)[None]) ** 2)))


def bench_data(args, res):
    size = args.size
    t0 = time.perf_counter()
    ds = synthetic_cams(seed=0, **size)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = MMEData(ds)
    t_val = time.perf_counter() - t0
    nbytes = sum(ds[v].nbytes for v in ds.data_vars)
    if not Path(args.data).exists():
        data.save(args.data)
    res["data"] = {"size": size, "generate_s": t_gen, "validate_s": t_val, "mib": nbytes / 2**20, "shape": data.shape}
    print(f"\n[data] synthetic_cams{size}: generated in {t_gen:.1f} s, validated in {t_val:.1f} s, {nbytes / 2**20:.0f} MiB")


def _load(args):
    if not Path(args.data).exists():
        data = MMEData(synthetic_cams(seed=0, **args.size))
        data.save(args.data)
        return data
    return open_mme(args.data)


def bench_train(args, res):
    data = _load(args)
    split = split_by_time(data.time)
    model = DLEnsemble(arch="halfunet", **args.net)
    hist = model.fit(data, split, seed=0, progress=not args.no_progress, **args.train)
    base = hist.attrs["base_val_loss"]
    ratio = hist["val_loss"].values / base
    el = hist["elapsed"].values

    def first(target):
        hit = np.flatnonzero(ratio <= target)
        return (float(el[hit[0]]), int(hist["epoch"].values[hit[0]])) if hit.size else (None, None)

    t_target, e_target = first(args.target)
    t_beat, e_beat = first(1.0)
    test = data.isel_time(split.test)
    dl, wtd, med = model.predict(test), model.weighted_ensemble().predict(test), ensemble_median(test)
    rm = {v: {"median": _rmse(med, test, v), "weighted": _rmse(wtd, test, v), "dl": _rmse(dl, test, v)} for v in model.variables}
    tr = model.meta["training"]
    res["train"] = {
        "config": {**args.net, **args.train}, "n_parameters": model.n_parameters, "epochs_run": tr["epochs_run"],
        "stopped": tr["stopped"], "seconds": tr["seconds"], "seconds_per_epoch": tr["seconds"] / max(tr["epochs_run"], 1),
        "base_val_loss": base, "best_val_loss": tr["best_val_loss"], "val_loss_ratio": ratio.tolist(), "elapsed": el.tolist(),
        "target": args.target, "seconds_to_target": t_target, "epochs_to_target": e_target,
        "seconds_to_beat_weighted": t_beat, "epochs_to_beat_weighted": e_beat, "test_rmse": rm,
        "seconds_to_ratio": {str(r): first(r)[0] for r in (1.0, 0.5, 0.3, 0.25)},
        "samples_train": tr["samples_train"], "samples_per_epoch": tr["samples_per_epoch"],
    }
    model.save(args.model)
    print(f"\n[train] HalfUNet {model.n_parameters:,} parameters, {tr['epochs_run']} epochs ({tr['stopped']}) in "
          f"{tr['seconds']:.0f} s ({tr['seconds'] / max(tr['epochs_run'], 1):.1f} s per epoch of {tr['samples_per_epoch']} samples)")
    print(f"  validation MSE / weighted-ensemble validation MSE per epoch: {np.round(ratio, 3).tolist()}")
    print(f"  stated skill (ratio <= {args.target}): " + (f"{t_target:.0f} s, epoch {e_target}" if t_target is not None else "not reached"))
    print("  beats the weighted ensemble (ratio < 1): " + (f"{t_beat:.0f} s, epoch {e_beat}" if t_beat is not None else "not reached"))
    for r in (0.3, 0.25):
        t_r, e_r = first(r)
        print(f"  ratio <= {r}: " + (f"{t_r:.0f} s, epoch {e_r}" if t_r is not None else "not reached"))
    print(f"  {'test RMSE [ug m-3]':<20}{'median':>9}{'weighted':>10}{'DL':>8}")
    for v, r in rm.items():
        print(f"  {v:<20}{r['median']:>9.3f}{r['weighted']:>10.3f}{r['dl']:>8.3f}")


def bench_infer(args, res):
    data = _load(args)
    if Path(args.model).exists():
        model = DLEnsemble.load(args.model)
    else:  # an untrained network costs the same
        model = DLEnsemble(arch="halfunet", **args.net)
        model.fit(data, split_by_time(data.time), epochs=0)
    sub = data.isel_time(split_by_time(data.time).test[: args.infer_times])
    n_fc = sub.shape["time"] * sub.shape["lead_time"]
    onnx_path = Path(args.model).with_suffix(".onnx")  # next to the model, not in benchmarks/results
    t0 = time.perf_counter()
    model.to_onnx(onnx_path)
    t_export = time.perf_counter() - t0
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for bs in (1, 32):
            model.predict(sub, batch_size=bs)
            t0 = time.perf_counter()
            model.predict(sub, batch_size=bs)
            rows.append(("torch cpu", threads, bs, n_fc / (time.perf_counter() - t0)))
        ort = OnnxDLEnsemble(onnx_path, threads=threads)
        for bs in (1, 32):
            ort.predict(sub, batch_size=bs)
            t0 = time.perf_counter()
            ort.predict(sub, batch_size=bs)
            rows.append(("onnxruntime cpu", threads, bs, n_fc / (time.perf_counter() - t0)))
    torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        model.to("cuda")
        for bs in (1, 32, 256):
            model.predict(sub, batch_size=bs)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.predict(sub, batch_size=bs)
            torch.cuda.synchronize()
            rows.append(("torch cuda", 0, bs, n_fc / (time.perf_counter() - t0)))
        model.to("cpu")
    a = model.predict(sub)
    b = OnnxDLEnsemble(onnx_path).predict(sub)
    diff = max(float(np.nanmax(np.abs(a[v].values - b[v].values))) for v in model.variables)
    res["infer"] = {
        "n_parameters": model.n_parameters, "weights_kib": model.size_bytes / 1024,
        "file_kib": Path(args.model).stat().st_size / 1024 if Path(args.model).exists() else None,
        "onnx_kib": onnx_path.stat().st_size / 1024, "onnx_export_s": t_export, "onnx_max_abs_diff": diff,
        "forecasts": n_fc, "throughput": [{"backend": r[0], "threads": r[1], "batch": r[2], "forecasts_per_s": r[3],
                                           "ms_per_forecast": 1e3 / r[3]} for r in rows],
    }
    print(f"\n[infer] {model.n_parameters:,} parameters, weights {model.size_bytes / 1024:.0f} KiB, ONNX "
          f"{onnx_path.stat().st_size / 1024:.0f} KiB (export {t_export:.1f} s), onnxruntime vs torch max |diff| {diff:.2g}")
    print(f"  {'backend':<16}{'threads':>8}{'batch':>7}{'forecasts/s':>13}{'ms/forecast':>13}")
    for b_, th, bs, fps in rows:
        print(f"  {b_:<16}{th if th else '-':>8}{bs:>7}{fps:>13.1f}{1e3 / fps:>13.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="data,train,infer", help="comma-separated sections")
    ap.add_argument("--quick", action="store_true", help="tiny data, short training (smoke run)")
    ap.add_argument("--data", default=None, help="ensemble dataset (default runs/mme/data.zarr)")
    ap.add_argument("--target", type=float, default=0.5, help="stated skill: val MSE <= target x weighted-ensemble val MSE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--infer-times", type=int, default=32, help="test valid times in the inference runs")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size = dict(n_lat=16, n_lon=16, days=60, lead_days=(0, 1))
        args.net = dict(width=8, depth=2)
        args.train = dict(epochs=4, samples_per_epoch=256, batch_size=16, patience=4)
        args.data = args.data or "/tmp/bench/mme_quick.zarr"
        args.out = args.out or "/tmp/bench/dl_ensemble_quick.json"
    else:
        args.size = dict(n_lat=32, n_lon=32, days=364, lead_days=(0, 1, 2))
        args.net = dict(width=16, depth=3)
        args.train = dict(epochs=20, samples_per_epoch=768, batch_size=16, patience=4)
        args.data = args.data or "runs/mme/data.zarr"
        args.out = args.out or "benchmarks/results/dl_ensemble.json"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.data).parent.mkdir(parents=True, exist_ok=True)
    args.model = str(Path(args.out).with_suffix(".pt")) if args.quick else "/tmp/bench/dl_ensemble_halfunet.pt"
    Path(args.model).parent.mkdir(parents=True, exist_ok=True)
    res = {"load_start": os.getloadavg(), "threads": args.threads, "torch": torch.__version__, "device": default_device(),
           "quick": args.quick}
    t0 = time.perf_counter()
    for sec in [s for s in args.only.split(",") if s]:
        load0, t_sec = os.getloadavg(), time.perf_counter()
        {"data": bench_data, "train": bench_train, "infer": bench_infer}[sec](args, res)
        res[sec].update({"load_start": load0, "load_end": os.getloadavg(), "threads": args.threads,
                         "section_seconds": time.perf_counter() - t_sec})
    res.update({"load_end": os.getloadavg(), "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()})
    out = Path(args.out)
    if out.exists() and not args.quick:  # keep the sections measured by earlier runs (each has its own load and time)
        old = json.loads(out.read_text())
        res = {**old, **res}
    out.write_text(json.dumps(res, indent=1, default=float))
    print(f"\nwrote {out} ({res['seconds']:.0f} s, load {res['load_start'][0]:.1f} -> {res['load_end'][0]:.1f})")


if __name__ == "__main__":
    main()
