"""History-matching benchmark: GP fit time; implausibility + NROY classification of 1e6 candidates.

Writes ``benchmarks/results/history_matching.json``. Sections (each in its own child process, so
each reports its own peak RSS):

- ``gp_fit``: :meth:`GPEmulator.fit` on ``n_train`` runs of a smooth 5-input, 20-output
  test function (default settings: linear mean, Matern-5/2, 300 Adam iterations, 2 starts).
- ``predict``: ``gp.predict`` of ``n`` (1e6) candidates (cache-sized blocks, a few MiB of
  working memory per thread; the means and variances, 2 x n x 20 float64 = 320 MB, are kept
  and saved for the next sections), on ``--threads`` worker threads; first timed with each
  other thread count of ``--compare-threads`` (results dropped), so both are on record.
- ``classify``: :class:`Implausibility` matrix + nth-max summary + NROY mask on those
  saved predictions, chunked (the classification alone).
- ``together``: ``Implausibility.classify(gp.predict, X)``: prediction and classification
  streamed chunk by chunk; memory is one chunk, whatever ``n`` is.
- ``mogp``: mogp_emulator's ``HistoryMatching`` (``expectations=`` the same predictions,
  ``rank=0`` = our ``nth=1``; its ``ncoords`` is set by hand, as mogp 0.7.2 reads it from
  ``expectations[0].shape[0]``, the number of outputs for multi-output expectations) in a throwaway venv (``--mogp-python``, default
  ``/tmp/hm/mogpvenv/bin/python``); skipped with the reason when it does not import.
  Both give the same NROY mask (checked).
- ``bayesopt``: hook for ``calibration/bayesopt.py``'s benchmark: keys already in the JSON
  that this script does not write (e.g. a ``bayesopt`` section) are kept.

Run (from the repository root)::

    .venv/bin/python benchmarks/history_matching.py            # n = 1e6, 1 thread (and 2, for comparison)
    .venv/bin/python benchmarks/history_matching.py --n 100000 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import peak_rss_mib  # benchmarks/common.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "history_matching.json"
D, M = 5, 20
SECTIONS = ("gp_fit", "predict", "classify", "together", "mogp")


def test_function(U: np.ndarray) -> np.ndarray:
    """A smooth ``(n, 5) -> (n, 20)`` function: sums of sines and quadratics with fixed seeded weights."""
    rng = np.random.default_rng(12345)
    A, B = rng.normal(size=(D, M)), rng.normal(size=(D, M))
    return np.sin(2.0 * U @ A) + 0.5 * ((U - 0.5) ** 2) @ B


def observations():
    """``z``: the function at ``u = 0.4`` in every input; obs std 0.25 x each output's std over the cube
    (NROY then is a few per cent of the cube, as in a mid-way wave)."""
    u_true = np.full(D, 0.4)
    z = test_function(u_true[None])[0]
    std = test_function(np.random.default_rng(7).random((20000, D))).std(axis=0)
    return z, (0.25 * std) ** 2


def section(name: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from calibration.history_matching.gp import GPEmulator
    from calibration.history_matching.implausibility import Implausibility

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    z, obs_var = observations()
    imp = Implausibility(z, obs_var, cutoff=3.0, nth=1)
    out = {}
    if name == "gp_fit":
        rng = np.random.default_rng(0)
        X = rng.random((args.n_train, D))
        Y = test_function(X)
        t = time.perf_counter()
        gp = GPEmulator.fit(X, Y, seed=0, **({"n_iter": 100, "n_restarts": 1} if args.quick else {}))
        out["wall_s"] = time.perf_counter() - t
        out.update(n_train=args.n_train, d=D, m=M, settings=gp.settings)
        Xv = rng.random((500, D))
        mu, var = gp.predict(Xv, include_noise=True)
        Yv = test_function(Xv)
        out["heldout_rmse_over_output_std"] = float(np.sqrt(np.mean((mu - Yv) ** 2)) / Yv.std())
        out["heldout_coverage_2sd"] = float(np.mean(np.abs(mu - Yv) <= 2 * np.sqrt(var)))
        gp.save(work / "gp.pt")
    elif name == "predict":
        gp = GPEmulator.load(work / "gp.pt")
        X = np.random.default_rng(1).random((args.n, D))
        out["by_threads"] = {}
        for th in sorted(set(args.compare_threads) - {args.threads}):
            load = os.getloadavg()[0]
            t = time.perf_counter()
            gp.predict(X, chunk_size=args.chunk_size, threads=th)  # result dropped
            out["by_threads"][str(th)] = {"wall_s": time.perf_counter() - t, "load_1min_before": load}
        load = os.getloadavg()[0]
        t = time.perf_counter()
        mean, var = gp.predict(X, chunk_size=args.chunk_size, threads=args.threads)
        out["wall_s"] = time.perf_counter() - t
        out["by_threads"][str(args.threads)] = {"wall_s": out["wall_s"], "load_1min_before": load}
        out["threads"] = args.threads
        out["chunk_size"] = args.chunk_size or gp.chunk_size_for()
        out["block_rows"] = gp.block_rows
        np.save(work / "mean.npy", mean)
        np.save(work / "var.npy", var)
    elif name == "classify":
        mean, var = np.load(work / "mean.npy"), np.load(work / "var.npy")
        t = time.perf_counter()
        s, ok = imp.classify(lambda idx: (mean[idx], var[idx]), np.arange(len(mean)), chunk_size=args.classify_chunk)
        out["wall_s"] = time.perf_counter() - t
        out["nroy_fraction"] = float(ok.mean())
        np.save(work / "nroy_ours.npy", ok)
    elif name == "together":
        gp = GPEmulator.load(work / "gp.pt")
        X = np.random.default_rng(1).random((args.n, D))
        t = time.perf_counter()
        s, ok = imp.classify(lambda x: gp.predict(x, chunk_size=args.chunk_size, threads=args.threads), X,
                             chunk_size=args.classify_chunk)
        out["wall_s"] = time.perf_counter() - t
        out["nroy_fraction"] = float(ok.mean())
        out["same_mask_as_predict_then_classify"] = bool(np.array_equal(ok, np.load(work / "nroy_ours.npy")))
    out["peak_rss_mib"] = peak_rss_mib()
    return out


MOGP_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
import mogp_emulator
from mogp_emulator import HistoryMatching
work = sys.argv[1]
z, obs_var = np.array(json.loads(sys.argv[2])), np.array(json.loads(sys.argv[3]))
mean, var = np.load(work + "/mean.npy"), np.load(work + "/var.npy")
t = time.perf_counter()
mT, vT = np.ascontiguousarray(mean.T), np.ascontiguousarray(var.T)   # mogp wants (m, n)
t_transpose = time.perf_counter() - t
t = time.perf_counter()
from mogp_emulator.GaussianProcess import PredictResult
hm = HistoryMatching(obs=[z, obs_var], expectations=PredictResult(mean=mT, unc=vT, deriv=None), threshold=3.0)
hm.ncoords = mean.shape[0]  # mogp 0.7.2 takes ncoords from expectations[0].shape[0] (= m for (m, n) arrays): set it
I = hm.get_implausibility(rank=0)
nroy = np.zeros(mean.shape[0], dtype=bool)
nroy[np.asarray(hm.get_NROY(rank=0), dtype=int)] = True
wall = time.perf_counter() - t
ours = np.load(work + "/nroy_ours.npy")
print(json.dumps({"version": mogp_emulator.__version__, "numpy": np.__version__, "wall_s": wall,
                  "transpose_to_m_by_n_s": t_transpose, "nroy_fraction": float(nroy.mean()),
                  "same_mask_as_ours": bool(np.array_equal(nroy, ours)),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def run_mogp(args) -> dict:
    py = Path(args.mogp_python)
    if not py.exists():
        return {"status": f"not run: {py} does not exist (pip install mogp_emulator into a throwaway venv there)"}
    z, obs_var = observations()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    r = subprocess.run([str(py), "-c", MOGP_SCRIPT, args.work, json.dumps(z.tolist()), json.dumps(obs_var.tolist())],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"status": f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["status"] = "ok"
    out["python"] = str(py)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="candidates to classify; default 1e6")
    p.add_argument("--n-train", type=int, default=100, help="GP training runs; default 100 (20 per input)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads and GPEmulator.predict worker threads; default 1 (predict's default)")
    p.add_argument("--compare-threads", type=lambda v: [int(t) for t in v.split(",") if t], default=[1, 2],
                   help="thread counts the predict section also times (comma separated; default 1,2)")
    p.add_argument("--chunk-size", type=int, default=None, help="GP prediction chunk (default: gp.chunk_size_for())")
    p.add_argument("--classify-chunk", type=int, default=65536, help="rows per classification chunk; default 65536")
    p.add_argument("--quick", action="store_true", help="GP fit with 100 iterations and one start")
    p.add_argument("--mogp-python", default="/tmp/hm/mogpvenv/bin/python",
                   help="python of a throwaway venv with mogp_emulator (never installed into .venv)")
    p.add_argument("--work", default="/tmp/hm/bench", help="scratch folder for the GP and the predictions")
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    if args.section:
        print(json.dumps(section(args.section, args)))
        return 0

    results = {}
    for name in SECTIONS:
        t = time.perf_counter()
        if name == "mogp":
            results[name] = run_mogp(args)
        else:
            cmd = [sys.executable, __file__, "--section", name] + [a for a in (argv or sys.argv[1:])]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"section {name} failed:\n{r.stderr}")
            results[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{name:>9}: {json.dumps(results[name])}  ({time.perf_counter() - t:.1f} s)", flush=True)

    summary = {
        "candidates": args.n, "outputs": M, "inputs": D, "n_train": args.n_train, "threads": args.threads,
        "gp_fit_s": results["gp_fit"]["wall_s"],
        "predict_s": results["predict"]["wall_s"],
        "predict_s_by_threads": {k: v["wall_s"] for k, v in results["predict"]["by_threads"].items()},
        "peak_rss_predict_mib": results["predict"]["peak_rss_mib"],
        "classify_s": results["classify"]["wall_s"],
        "predict_and_classify_streamed_s": results["together"]["wall_s"],
        "peak_rss_streamed_mib": results["together"]["peak_rss_mib"],
        "goal_classify_1e6_le_10s": bool(results["classify"]["wall_s"] <= 10.0),
    }
    if results["mogp"].get("status") == "ok":
        summary["mogp_classify_s"] = results["mogp"]["wall_s"]
        summary["mogp_over_ours"] = results["mogp"]["wall_s"] / results["classify"]["wall_s"]
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    data = {k: v for k, v in old.items() if k not in ("history_matching", "machine", "command")}  # keep e.g. "bayesopt"
    data.setdefault("bayesopt", {"status": "not measured by this script: calibration/bayesopt.py's benchmark adds "
                                           "its section under this key (kept across reruns)"})
    data.update({
        "command": "python benchmarks/history_matching.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "history_matching": {"summary": summary, **results},
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out}")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
