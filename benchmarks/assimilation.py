"""Assimilation benchmark: our ensemble Kalman filters against DAPPER 1.2.2 on Lorenz-96.

Setting: DAPPER's ``Lorenz96.sakov2008`` (F = 8, Nx = 40, RK4 dt = 0.05, all 40 variables
observed every step with R = I, truth and ensemble from N(e_0, 0.001 I), 1001 analyses =
DAPPER's KObs=1000, averages over the analyses at t > 20: 601). For each seed the truth and
observations are simulated once (:func:`calibration.ensemble_kalman.lorenz96_twin.simulate`),
saved to ``.npz``, and both libraries assimilate *the same* ``xx``/``yy``: ours in this
process, DAPPER in its own virtual environment (a subprocess; DAPPER is never a dependency of
the package). The filters' own random draws (initial ensemble, rotations, perturbations)
differ, so the per-seed numbers differ by sampling noise; the comparison is the mean over seeds.

Cases (DAPPER's tuned settings listed in ``sakov2008.py``):
EnKF-Sqrt (our ``etkf``) N=20 infl=1.04 rot; LETKF N=7 infl=1.04 rot loc_rad=4 (GC, state
batches of 2 as DAPPER; also ours per point); LETKF N=20 infl=1.02 rot loc_rad=4; PertObs
(our ``enkf-pertobs``) N=40 infl=1.06. Wall time of one whole run (ours: ``twin`` from the
arrays to the Dataset; DAPPER: ``xp.assimilate`` with its statistics), given per 1000
cycles. Both single-threaded (torch 1 thread; ``OPENBLAS_NUM_THREADS=1`` for DAPPER).

DAPPER's environment (once, ~3 min; its matplotlib pin builds from source)::

    python3.11 -m venv /tmp/dapper-venv
    /tmp/dapper-venv/bin/pip install "da-dapper==1.2.2" "numpy<2"

(``--setup-dapper`` runs these two commands when ``--dapper-python`` does not exist.)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/assimilation.py               # 3 seeds x 1001 cycles, ~3 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/assimilation.py --long 10001  # + one 10001-cycle run per case
    .venv/bin/python benchmarks/assimilation.py --quick                         # smoke: 1 seed, 301 cycles, burn-in 5

Prints the table and writes JSON (``--out``, default ``benchmarks/results/assimilation.json``;
``--quick``: ``/tmp/bench/assimilation_quick.json``). The F-estimation twin (state
augmentation, DAPPER's ``param_estim`` setting) is run for ours only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import best_time  # benchmarks/common.py

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

# name: (our method, DAPPER constructor source, keyword arguments)
CASES = {
    "EnKF-Sqrt N=20 infl=1.04 rot": ("etkf", "da.EnKF('Sqrt', N=20, infl=1.04, rot=True)",
                                      dict(N=20, infl=1.04, rot=True)),
    "LETKF N=7 infl=1.04 rot loc_rad=4": ("letkf", "da.LETKF(N=7, infl=1.04, rot=True, loc_rad=4)",
                                          dict(N=7, infl=1.04, rot=True, loc_rad=4.0, loc_batch=2)),
    "LETKF N=20 infl=1.02 rot loc_rad=4": ("letkf", "da.LETKF(N=20, infl=1.02, rot=True, loc_rad=4)",
                                           dict(N=20, infl=1.02, rot=True, loc_rad=4.0, loc_batch=2)),
    "PertObs N=40 infl=1.06": ("enkf-pertobs", "da.EnKF('PertObs', N=40, infl=1.06)", dict(N=40, infl=1.06, rot=False)),
}
OURS_ONLY = {
    "LETKF N=7 infl=1.04 rot loc_rad=4 (per point)": ("letkf", None,
                                                      dict(N=7, infl=1.04, rot=True, loc_rad=4.0, loc_batch=1)),
}
EXPECTED = {"EnKF-Sqrt N=20 infl=1.04 rot": 0.20, "LETKF N=7 infl=1.04 rot loc_rad=4": 0.22,
            "PertObs N=40 infl=1.06": 0.22}

DAPPER_RUNNER = r'''
import json, sys, time
import numpy as np
import dapper as dpr
import dapper.da_methods as da
from dapper.mods.Lorenz96.sakov2008 import HMM
cfg = json.load(open(sys.argv[1]))
out = []
for f in cfg["files"]:
    d = np.load(f)
    xx, yy, seed = d["xx"], d["yy"], int(d["seed"])
    HMM.t.BurnIn = cfg["burn_in"]
    if HMM.t.KObs != len(yy) - 1:
        HMM.t.KObs = len(yy) - 1
    assert HMM.t.K + 1 == len(xx), (HMM.t.K, xx.shape)
    for name, src in cfg["cases"].items():
        dpr.set_seed(seed + 1)
        xp = eval(src)
        t0 = time.perf_counter()
        xp.assimilate(HMM, xx, yy, liveplots=False)
        wall = time.perf_counter() - t0
        xp.stats.average_in_time()
        a = xp.avrgs
        out.append({"case": name, "seed": seed, "cycles": len(yy), "rmse_a": float(a.err.rms.a.val),
                    "spread_a": float(a.std.rms.a.val), "rmse_f": float(a.err.rms.f.val), "wall_s": wall})
        print(name, seed, out[-1]["rmse_a"], round(wall, 2), file=sys.stderr, flush=True)
json.dump({"dapper": dpr.__version__, "numpy": np.__version__, "runs": out}, open(cfg["out"], "w"))
'''


def setup_dapper(python: Path) -> None:
    venv = python.parent.parent
    print(f"creating {venv} with da-dapper==1.2.2 (numpy<2) ...", flush=True)
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "da-dapper==1.2.2", "numpy<2"], check=True)


def run_dapper(python: Path, files: list[Path], cases: dict, burn_in: float, work: Path) -> dict:
    cfg = {"files": [str(f) for f in files], "cases": {k: v[1] for k, v in cases.items()},
           "burn_in": burn_in, "out": str(work / "dapper_out.json")}
    (work / "cfg.json").write_text(json.dumps(cfg))
    (work / "runner.py").write_text(DAPPER_RUNNER)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    r = subprocess.run([str(python), str(work / "runner.py"), str(work / "cfg.json")], cwd=work, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"DAPPER run failed:\n{r.stderr[-3000:]}")
    return json.loads((work / "dapper_out.json").read_text())


def run_ours(data: dict, seed: int, method: str, kw: dict, burn_in: float) -> dict:
    from calibration.ensemble_kalman.lorenz96_twin import twin

    kw = dict(kw)
    N, infl = kw.pop("N"), kw.pop("infl")
    loc_rad = kw.pop("loc_rad", None)
    wall, ds = best_time(lambda: twin(method, N, infl, loc_rad, data=data, seed=seed, burn_in=burn_in,
                                      cycles=len(data["yy"]), **kw))
    a = ds.attrs
    return {"seed": seed, "cycles": len(data["yy"]), "rmse_a": a["rmse_a"], "spread_a": a["spread_a"],
            "rmse_f": a["rmse_f"], "wall_s": wall, "n_averaged": a["n_averaged"]}


def summarise(runs: list[dict]) -> dict:
    if not runs:
        return {}
    cyc = sum(r["cycles"] for r in runs)
    return {"rmse_a": float(np.mean([r["rmse_a"] for r in runs])), "spread_a": float(np.mean([r["spread_a"] for r in runs])),
            "rmse_a_seeds": [round(r["rmse_a"], 4) for r in runs],
            "s_per_1000_cycles": float(sum(r["wall_s"] for r in runs) / cyc * 1000), "runs": runs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="3000,4000,5000")
    ap.add_argument("--cycles", type=int, default=1001)
    ap.add_argument("--burn-in", type=float, default=20.0)
    ap.add_argument("--long", type=int, default=0, help="also one run of this many cycles per case (first seed)")
    ap.add_argument("--dapper-python", default="/tmp/dapper-venv/bin/python")
    ap.add_argument("--setup-dapper", action="store_true", help="create the DAPPER venv when missing")
    ap.add_argument("--no-dapper", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.cycles, args.burn_in = "3000", 301, 5.0
    out = Path(args.out or ("/tmp/bench/assimilation_quick.json" if args.quick else ROOT / "benchmarks/results/assimilation.json"))

    import torch

    from calibration.ensemble_kalman.lorenz96_twin import param_twin, simulate

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="assim_bench_"))
    sets = {"short": [(s, args.cycles) for s in seeds]}
    if args.long:
        sets["long"] = [(seeds[0], args.long)]
    datas, files = {}, {}
    for key, lst in sets.items():
        for s, K in lst:
            d = simulate(K, s)
            datas[(s, K)] = d
            f = work / f"l96_{s}_{K}.npz"
            np.savez(f, xx=d["xx"], yy=d["yy"], seed=s)
            files[(s, K)] = f

    dapper_py = Path(args.dapper_python)
    dapper = None
    if not args.no_dapper:
        if not dapper_py.exists() and args.setup_dapper:
            setup_dapper(dapper_py)
        if dapper_py.exists():
            t0 = time.perf_counter()
            dapper = run_dapper(dapper_py, list(files.values()), CASES, args.burn_in, work)
            print(f"DAPPER {dapper['dapper']} runs done in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            print(f"no DAPPER at {dapper_py} (see the docstring, or --setup-dapper); ours only", flush=True)

    results = {}
    for key, lst in sets.items():
        for name, (method, _src, kw) in {**CASES, **OURS_ONLY}.items():
            ours = [run_ours(datas[(s, K)], s, method, kw, args.burn_in) for s, K in lst]
            theirs = [] if dapper is None else [r for r in dapper["runs"] if r["case"] == name
                                                and (r["seed"], r["cycles"]) in [(s, K) for s, K in lst]]
            results.setdefault(key, {})[name] = {"ours": summarise(ours), "dapper": summarise(theirs),
                                                 "expected_dapper_docs": EXPECTED.get(name)}
            print(f"{key} {name}: ours {results[key][name]['ours']['rmse_a']:.4f}", flush=True)

    t0 = time.perf_counter()
    p = param_twin(cycles=1000, burn_in=5.0)
    param = {"setting": "ETKF N=20 infl=1.04 on [x, F], F prior N(7, 0.1^2), truth 8, 1000 cycles, burn-in 5",
             "F_a": p.attrs["F_a"], "F_spread_a": p.attrs["F_spread_a"], "F_final": float(p["mean_a"].sel(variable="F")[-1]),
             "rmse_a": p.attrs["rmse_a"], "wall_s": time.perf_counter() - t0}

    lines = []
    for key, lst in sets.items():
        K = lst[0][1]
        lines.append(f"\nLorenz-96 sakov2008, {len(lst)} seed(s) x {K} cycles, averages over t > {args.burn_in} "
                     f"({'mean over seeds' if len(lst) > 1 else 'one run'})")
        head = (f"{'case':<48}{'rmse_a ours':>12}{'DAPPER':>9}{'diff':>8}{'spread ours':>12}{'DAPPER':>9}"
                f"{'s/1000 ours':>12}{'DAPPER':>9}{'speed-up':>9}")
        lines += [head, "-" * len(head)]
        for name, r in results[key].items():
            o, d = r["ours"], r["dapper"]
            if d:
                lines.append(f"{name:<48}{o['rmse_a']:>12.4f}{d['rmse_a']:>9.4f}{o['rmse_a'] - d['rmse_a']:>+8.4f}"
                             f"{o['spread_a']:>12.4f}{d['spread_a']:>9.4f}{o['s_per_1000_cycles']:>12.2f}"
                             f"{d['s_per_1000_cycles']:>9.2f}{d['s_per_1000_cycles'] / o['s_per_1000_cycles']:>8.1f}x")
            else:
                lines.append(f"{name:<48}{o['rmse_a']:>12.4f}{'-':>9}{'':>8}{o['spread_a']:>12.4f}{'-':>9}"
                             f"{o['s_per_1000_cycles']:>12.2f}{'-':>9}")
    lines.append(f"\nF by state augmentation (ours): {param['setting']}: mean F after burn-in {param['F_a']:.3f} "
                 f"(spread {param['F_spread_a']:.3f}), final {param['F_final']:.3f}, state rmse_a {param['rmse_a']:.3f}")
    print("\n".join(lines))

    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
           "python": platform.python_version(), "torch": torch.__version__, "torch_threads": 1,
           "dapper": None if dapper is None else dapper["dapper"], "dapper_numpy": None if dapper is None else dapper["numpy"],
           "seeds": seeds, "cycles": args.cycles, "long_cycles": args.long, "burn_in": args.burn_in,
           "timing": "ours: twin() from arrays to Dataset; DAPPER: xp.assimilate() incl. its stats; one run each",
           "results": results, "param_estimation": param, "table": "\n".join(lines)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
