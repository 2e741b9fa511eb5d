"""Wall time of the operational-parameter study (issue 17), emulator as forward, on the
2-core machine: the whole ``run_study`` and each stage. Prints a table and writes
``benchmarks/results/operational.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/operational.py [--sites 100 --held-out 25] [--threads 1]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/operational.py --small        # the tests' twin

Never run as a test. The stages: network (sites, Koppen classes, one year of hourly weather),
physics_truth (1 spin-up year + the truth and prior runs at every site), groupings (clusters,
silhouette, importance), model_error (prior draws x calibration sites, physics and emulator),
calibration (every group of every strategy, lock-step LM, emulator), check (the physics at
each strategy's parameters at every site), emulator_error, equifinality, propagation.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# benchmarks/calibration.py would shadow the calibration package: drop this folder from the path
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _HERE]

import resource  # noqa: E402

import torch  # noqa: E402


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far [MiB] (as benchmarks/common.py)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--held-out", type=int, default=25)
    p.add_argument("--small", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "operational.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from calibration.network import StudyConfig, run_study
    from calibration.progress import Progress

    cfg = StudyConfig.small() if args.small else StudyConfig(n_sites=args.sites, n_held_out=args.held_out)
    t0 = time.perf_counter()
    res = run_study(cfg, progress=Progress(True))
    wall = time.perf_counter() - t0
    load = os.getloadavg()
    cal = res.calibration
    out = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "wall_time_s": wall, "stages_s": res.timings, "load_average_1_5_15": load, "threads": args.threads,
        "peak_rss_mib": peak_rss_mib(),
        "calibration": {"groups": len(cal.groups), "columns": int(cal.n_column_runs // max(cal.n_member_runs, 1)),
                        "batched_calls": cal.n_calls, "member_runs": cal.n_member_runs, "column_runs": cal.n_column_runs},
        "table": res.table.astype(float).round(4).to_dict(orient="index"),
        "notes": res.notes,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "small" if args.small else f"sites_{cfg.n_sites}"
    old = json.loads(path.read_text()) if path.exists() else {}
    old[key] = out
    path.write_text(json.dumps(old, indent=1, default=float))
    print(f"| stage | wall time [s] |\n|---|---|")
    for k, v in res.timings.items():
        print(f"| {k} | {v:.1f} |")
    print(f"\nwhole study {wall:.0f} s ({cfg.n_sites} sites, {cfg.start} .. {cfg.end}), load average {load[0]:.1f}; "
          f"{len(cal.groups)} groups calibrated in {cal.n_calls} batched emulator calls; wrote {path}")
    print()
    print(res.markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
