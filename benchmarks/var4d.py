"""4D-Var benchmark on Lorenz-96: exact vs machine-learnt TL/AD, against DAPPER's Var4D and our LETKF.

Setting: DAPPER's ``Lorenz96.sakov2008`` (F = 8, Nx = 40, RK4 dt = 0.05, all 40 variables
observed with R = I, truth from N(e_0, 0.001 I), 1001 observation times = DAPPER's KObs=1000,
averages over the analyses at t > 20). ``--obs-every 1`` (default) is sakov2008 itself
(dt_obs = 0.05); ``--obs-every 4`` is Bocquet and Sakov 2013's dt_obs = 0.2. For each seed
the truth and observations are simulated once
(:func:`calibration.var4d.lorenz96_twin.simulate`), saved to ``.npz``, and every method
assimilates *the same* ``xx``/``yy``; DAPPER runs in its own virtual environment (a
subprocess; never a dependency of the package).

4D-Var as DAPPER's ``Var4D(Lag=1, xB=0.01)``: a window of one observation interval, the
control at its start, ``B = 0.01 cov(truth)`` (DAPPER's ``B='clim'``), static; the first
background ``e_0``; analysis RMSE at the window ends (the observation times). Rows:

- ours, exact TL/AD: L-BFGS on the full nonlinear cost, gradient by autograd through RK4;
- ours, incremental (2 outer loops with the exact model), exact TL/AD;
- ours, incremental (2 outer loops with the exact model), the *emulator's* TL/AD
  (:mod:`ailand.lorenz96_emulator`, the shipped ``data/emulator/lorenz96.pt``);
- ours, the emulator as the model (window, forecast) and its TL/AD: model error included;
- DAPPER 1.2.2 ``Var4D(Lag=1, xB=0.01)`` (Gauss-Newton, nIter=10, explicit TL matrices);
- our LETKF (sakov2008's tuned N=7, infl=1.04, rot, loc_rad=4 at dt_obs=0.05; N=20,
  infl=1.05 at dt_obs=0.2, tuned over infl 1.02-1.2: 0.367 at 501 cycles) and a free run.

Wall time per cycle (one analysis + the forecast to the next window), single-threaded (torch
1 thread; ``OPENBLAS_NUM_THREADS=1`` for DAPPER); for DAPPER ``xp.assimilate`` incl. its stats.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/var4d.py                  # 1 seed x 1001 cycles, ~6 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/var4d.py --obs-every 4    # dt_obs = 0.2
    .venv/bin/python benchmarks/var4d.py --quick                            # smoke: 201 cycles, burn-in 5

DAPPER's environment: see ``benchmarks/assimilation.py`` (``--setup-dapper`` creates it when
missing). Prints the table and writes JSON (``--out``, default
``benchmarks/results/var4d.json``, or ``var4d_dtobs0.2.json`` with ``--obs-every 4``;
``--quick``: ``/tmp/bench/var4d_quick.json``). :func:`lorenz96_rows` is the function a land
benchmark calls to put these rows next to its own.
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

ROOT = Path(__file__).resolve().parent.parent
# the repository root first: benchmarks/calibration.py would otherwise shadow the calibration package
sys.path.insert(0, str(ROOT))

# name: keyword arguments of calibration.var4d.lorenz96_twin.var4d_twin
OURS = {
    "4D-Var, exact TL/AD (L-BFGS, nonlinear cost)": dict(tl="exact", model="exact"),
    "4D-Var incremental (2 outer), exact TL/AD": dict(tl="exact", model="exact", method="incremental", n_outer=2),
    "4D-Var incremental (2 outer), emulator TL/AD": dict(tl="emulator", model="exact", n_outer=2),
    "4D-Var, emulator as model + TL/AD": dict(tl="emulator", model="emulator"),
}
LETKF = {1: dict(N=7, infl=1.04, loc_rad=4.0), 4: dict(N=20, infl=1.05, loc_rad=4.0)}
DAPPER_DOCS = {1: None, 4: "0.46 for Var4D(Lag=1, xB=0.2) (sakov2008.py comments)"}
MEASURED_IN_ISSUE = {1: 0.369, 4: None}

DAPPER_RUNNER = r'''
import json, sys, time
import numpy as np
import dapper as dpr
import dapper.da_methods as da
from dapper.mods.Lorenz96.sakov2008 import HMM
cfg = json.load(open(sys.argv[1]))
HMM.t.dkObs = cfg["obs_every"]
out = []
for f in cfg["files"]:
    d = np.load(f)
    xx, yy, seed = d["xx"], d["yy"], int(d["seed"])
    HMM.t.BurnIn = cfg["burn_in"]
    HMM.t.KObs = len(yy) - 1
    assert HMM.t.K + 1 == len(xx), (HMM.t.K, xx.shape)
    dpr.set_seed(seed + 1)
    xp = da.Var4D(Lag=1, xB=cfg["xB"])
    t0 = time.perf_counter()
    xp.assimilate(HMM, xx, yy, liveplots=False)
    wall = time.perf_counter() - t0
    xp.stats.average_in_time()
    a = xp.avrgs
    out.append({"seed": seed, "cycles": len(yy), "rmse_a": float(a.err.rms.a.val), "rmse_f": float(a.err.rms.f.val),
                "wall_s": wall})
    print("Var4D", seed, out[-1]["rmse_a"], round(wall, 2), file=sys.stderr, flush=True)
json.dump({"dapper": dpr.__version__, "numpy": np.__version__, "runs": out}, open(cfg["out"], "w"))
'''


def run_dapper(python: Path, files: list[Path], obs_every: int, xB: float, burn_in: float, work: Path) -> dict:
    cfg = {"files": [str(f) for f in files], "obs_every": obs_every, "xB": xB, "burn_in": burn_in,
           "out": str(work / "dapper_var4d.json")}
    (work / "cfg_var4d.json").write_text(json.dumps(cfg))
    (work / "runner_var4d.py").write_text(DAPPER_RUNNER)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    r = subprocess.run([str(python), str(work / "runner_var4d.py"), str(work / "cfg_var4d.json")], cwd=work, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"DAPPER run failed:\n{r.stderr[-3000:]}")
    return json.loads((work / "dapper_var4d.json").read_text())


def _row(name, runs, **extra):
    cyc = sum(r["cycles"] for r in runs)
    row = {"case": name, "rmse_a": float(np.mean([r["rmse_a"] for r in runs])),
           "rmse_f": float(np.mean([r["rmse_f"] for r in runs])) if all("rmse_f" in r for r in runs) else None,
           "rmse_a_seeds": [round(r["rmse_a"], 4) for r in runs],
           "s_per_cycle": float(sum(r["wall_s"] for r in runs) / cyc) if all("wall_s" in r for r in runs) else None}
    for k in ("model_steps_per_cycle", "tl_per_cycle", "ad_per_cycle", "iter_per_cycle"):
        vals = [r[k] for r in runs if k in r]
        row[k] = float(np.mean(vals)) if vals else None
    row.update(extra)
    return row


def lorenz96_rows(seeds=(3000,), cycles: int = 1001, obs_every: int = 1, burn_in: float = 20.0, xB: float = 0.01,
                  dapper_python: str | None = "/tmp/dapper-venv/bin/python", setup_dapper: bool = False,
                  cases: dict | None = None, letkf: bool = True, verbose: bool = True) -> dict:
    """Run the Lorenz-96 4D-Var comparison; returns ``{"setting", "rows", "emulator", "table"}``.

    ``rows``: one dict per method with ``rmse_a`` (mean over seeds of the time-mean analysis
    RMSE after ``burn_in``), ``rmse_f``, ``s_per_cycle`` [s], model / TL / AD step applications
    and L-BFGS iterations per cycle (ours). ``dapper_python=None`` (or missing) skips DAPPER.
    """
    import torch

    from ailand.lorenz96_emulator import default
    from calibration.var4d import lorenz96_twin as lt

    torch.set_num_threads(1)
    say = print if verbose else (lambda *a, **k: None)
    em = default()
    datas = {s: lt.simulate(cycles, s, obs_every=obs_every) for s in seeds}
    rows = []

    dapper = None
    if dapper_python:
        py = Path(dapper_python)
        if not py.exists() and setup_dapper:  # as benchmarks/assimilation.py --setup-dapper
            print(f"creating {py.parent.parent} with da-dapper==1.2.2 (numpy<2) ...", flush=True)
            subprocess.run(["python3.11", "-m", "venv", str(py.parent.parent)], check=True)
            subprocess.run([str(py.parent / "pip"), "install", "-q", "da-dapper==1.2.2", "numpy<2"], check=True)
        if py.exists():
            work = Path(tempfile.mkdtemp(prefix="var4d_bench_"))
            files = []
            for s, d in datas.items():
                f = work / f"l96_{s}_{cycles}_{obs_every}.npz"
                np.savez(f, xx=d["xx"], yy=d["yy"], seed=s)
                files.append(f)
            t0 = time.perf_counter()
            dapper = run_dapper(py, files, obs_every, xB, burn_in, work)
            say(f"DAPPER {dapper['dapper']} Var4D done in {time.perf_counter() - t0:.0f} s", flush=True)
        else:
            say(f"no DAPPER at {py} (see benchmarks/assimilation.py, or --setup-dapper); ours only", flush=True)

    for name, kw in (cases or OURS).items():
        runs = []
        for s, d in datas.items():
            t0 = time.perf_counter()
            ds = lt.var4d_twin(d, xB=xB, burn_in=burn_in, emulator=em, **kw)
            wall = time.perf_counter() - t0
            a = ds.attrs
            runs.append({"seed": s, "cycles": cycles, "rmse_a": a["rmse_a"], "rmse_f": a["rmse_f"], "wall_s": wall,
                         "model_steps_per_cycle": a["n_model_per_cycle"], "tl_per_cycle": a["n_tl_per_cycle"],
                         "ad_per_cycle": a["n_ad_per_cycle"], "iter_per_cycle": a["n_iter_per_cycle"],
                         "frac_converged": a["frac_converged"]})
        rows.append(_row(name, runs, kind="ours", settings={k: v for k, v in kw.items()},
                         frac_converged=float(np.mean([r["frac_converged"] for r in runs]))))
        say(f"{name}: rmse_a {rows[-1]['rmse_a']:.4f}  {rows[-1]['s_per_cycle'] * 1e3:.1f} ms/cycle", flush=True)
    if dapper is not None:
        rows.append(_row(f"DAPPER {dapper['dapper']} Var4D(Lag=1, xB={xB:g})", dapper["runs"], kind="dapper"))
    if letkf:
        cfg = LETKF.get(obs_every, LETKF[4])
        runs = []
        for s, d in datas.items():
            t0 = time.perf_counter()
            ds = lt.letkf_twin(d, burn_in=burn_in, **cfg)
            runs.append({"seed": s, "cycles": cycles, "rmse_a": ds.attrs["rmse_a"], "rmse_f": ds.attrs["rmse_f"],
                         "wall_s": time.perf_counter() - t0})
        rows.append(_row(f"LETKF N={cfg['N']} infl={cfg['infl']} rot loc_rad={cfg['loc_rad']:g} (ours)", runs,
                         kind="ours-letkf", settings=cfg))
    rows.append(_row("free run (no assimilation)", [{"seed": s, "cycles": cycles,
                                                     "rmse_a": lt.free_run_rmse(d, burn_in)} for s, d in datas.items()],
                     kind="reference"))
    checks = lt.emulator_window_tests(em, obs_every=max(obs_every, 1))
    emu = {k: em.meta.get(k) for k in ("one_step_rmse", "one_step_rel", "valid_time", "n_weights", "hidden", "stencil",
                                       "n_states", "max_iter", "train_wall_s", "command")}
    emu["window_tests"] = {"steps": max(obs_every, 1),
                           "taylor_eps_range": {k: checks[k]["taylor"]["eps_range"] for k in ("exact", "emulator")},
                           "adjoint_rel_error": {k: checks[k]["adjoint"]["rel_error"] for k in ("exact", "emulator")},
                           "tl_rel_diff_emulator_vs_exact": checks["tl_rel_diff"]}
    setting = {"model": "Lorenz-96 F=8 Nx=40 RK4 dt=0.05", "obs": "all 40 variables, R=I",
               "obs_every": obs_every, "dt_obs": obs_every * 0.05, "cycles": cycles, "seeds": list(seeds),
               "burn_in": burn_in, "xB": xB, "B": "xB * cov(truth) (DAPPER's B='clim')", "window": "one obs interval (Lag=1)",
               "issue_dapper_measured": MEASURED_IN_ISSUE.get(obs_every), "dapper_docs": DAPPER_DOCS.get(obs_every)}
    return {"setting": setting, "rows": rows, "emulator": emu, "table": table(setting, rows, emu),
            "dapper": None if dapper is None else dapper["dapper"]}


def table(setting: dict, rows: list[dict], emu: dict | None = None) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"\nLorenz-96 4D-Var, sakov2008 with dt_obs={setting['dt_obs']:g} ({setting['obs_every']} step(s) per window), "
             f"{len(setting['seeds'])} seed(s) x {setting['cycles']} cycles, averages over t > {setting['burn_in']:g}, "
             f"B = {setting['xB']:g} cov(truth)"]
    head = f"{'method':<52}{'rmse_a':>8}{'rmse_f':>8}{'ms/cycle':>10}{'steps':>7}{'TL':>6}{'AD':>6}{'iters':>7}"
    lines += [head, "-" * len(head)]

    def f(v, fmt):
        return f"{v:{fmt}}" if v is not None else "-"

    for r in rows:
        ms = None if r["s_per_cycle"] is None else r["s_per_cycle"] * 1e3
        lines.append(f"{r['case']:<52}{f(r['rmse_a'], '.4f'):>8}{f(r['rmse_f'], '.4f'):>8}{f(ms, '.1f'):>10}"
                     f"{f(r.get('model_steps_per_cycle'), '.1f'):>7}{f(r.get('tl_per_cycle'), '.1f'):>6}"
                     f"{f(r.get('ad_per_cycle'), '.1f'):>6}{f(r.get('iter_per_cycle'), '.1f'):>7}")
    if emu:
        vt = emu.get("valid_time") or {}
        wt = emu.get("window_tests", {})
        lines.append(f"emulator: {emu.get('n_weights')} weights, stencil {emu.get('stencil')}, hidden {emu.get('hidden')}; "
                     f"one-step RMSE {emu.get('one_step_rmse', float('nan')):.2e} ({100 * emu.get('one_step_rel', float('nan')):.2f} % "
                     f"of the step's change); forecast RMSE vs exact reaches 0.1 / 1 / 1.8 at t = "
                     f"{vt.get('0.1')} / {vt.get('1.0')} / {vt.get('1.8')}")
        if wt:
            lines.append(f"TL of a {wt['steps']}-step window, emulator vs exact: relative difference "
                         f"{wt['tl_rel_diff_emulator_vs_exact']:.3f}; adjoint tests "
                         f"{wt['adjoint_rel_error']['exact']:.1e} (exact), {wt['adjoint_rel_error']['emulator']:.1e} (emulator)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="3000")
    ap.add_argument("--cycles", type=int, default=1001)
    ap.add_argument("--obs-every", type=int, default=1, help="model steps per observation (1: sakov2008; 4: dt_obs=0.2)")
    ap.add_argument("--burn-in", type=float, default=20.0)
    ap.add_argument("--xB", type=float, default=0.01)
    ap.add_argument("--dapper-python", default="/tmp/dapper-venv/bin/python")
    ap.add_argument("--setup-dapper", action="store_true", help="create the DAPPER venv when missing")
    ap.add_argument("--no-dapper", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.cycles, a.burn_in = 201, 5.0
    default_out = ROOT / "benchmarks/results" / ("var4d.json" if a.obs_every == 1 else f"var4d_dtobs{a.obs_every * 0.05:g}.json")
    out = Path(a.out or ("/tmp/bench/var4d_quick.json" if a.quick else default_out))
    import torch

    t0 = time.perf_counter()
    res = lorenz96_rows(tuple(int(s) for s in a.seeds.split(",")), a.cycles, a.obs_every, a.burn_in, a.xB,
                        None if a.no_dapper else a.dapper_python, a.setup_dapper)
    print(res["table"])
    res.update({"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
                "python": platform.python_version(), "torch": torch.__version__, "torch_threads": 1,
                "load_average_1min": os.getloadavg()[0], "wall_s_total": time.perf_counter() - t0,
                "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/var4d.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
