"""The neural-network dust emission model (issue 15), end to end, with figures.

    OMP_NUM_THREADS=1 .venv/bin/python examples/dust_nn.py --quick          # small world, ~1.5 min
    OMP_NUM_THREADS=1 .venv/bin/python examples/dust_nn.py --run runs/dust_nn   # figures of a full run (train it first:
                                                                               # ailand dust-nn train --out runs/dust_nn)

1. data: worlds of four years, the toy ecLand, the emission analysis of the LETKF smoother as
   the target (:func:`calibration.dust_nn.make_data`); 2. the seed's network v1 / v2, its
   dust-source mask and the zero-aware hurdle model (:mod:`ailand.dust.nn`); 3. evaluation on
   the held-out year (skill, null emissions, maps, Mezaira and Berlin with their diurnal
   cycle, coupled aerosol runs through onnxruntime, permutation importance); 4. figures in
   ``<run>/figures/`` and, here, a log-log scatter of each model against the analysis and the
   search curve (when the run has one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ailand.dust.nn import log_space  # noqa: E402
from calibration.dust_nn.evaluate import predict_table  # noqa: E402
from calibration.dust_nn.experiment import evaluate_all, load_run, train_all  # noqa: E402
from calibration.progress import Progress  # noqa: E402


def scatter(run: Path, path: Path):
    r = load_run(run)
    test = r["tables"]["test"]
    mods = {k: r["models"][k] for k in ("seed_v1", "seed_v2", "seed_v2_mask", "zero_aware", "zero_aware_tuned")
            if k in r["models"]}
    scale = next(getattr(m, "base", m).target.scale for m in mods.values())
    y = log_space(test["target"].values, scale)
    fig, axes = plt.subplots(1, len(mods), figsize=(3.6 * len(mods), 3.6), constrained_layout=True, squeeze=False)
    for ax, (k, m) in zip(axes[0], mods.items()):
        p = log_space(predict_table(m, test), scale)
        ax.hexbin(y, p, gridsize=60, bins="log", cmap="viridis", mincnt=1)
        ax.plot([y.min(), 0], [y.min(), 0], "r--", lw=0.8)
        ax.set_title(f"{k}: test year", fontsize=9)
        ax.set_xlabel("analysis ln(E/E_max + 1e-5)")
    axes[0, 0].set_ylabel("model ln(E/E_max + 1e-5)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="an existing run folder (else train a quick one in /tmp/dust_nn_example)")
    ap.add_argument("--quick", action="store_true", help="train a quick run (small region, two 4-day windows a year)")
    ap.add_argument("--reevaluate", action="store_true", help="evaluate the run again even if it has an evaluation")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = Progress(True)
    if args.run is None or args.quick:
        from ailand.dust.nn import TrainConfig
        from calibration.dust_nn import QUICK_REGION, DataConfig

        run = Path(args.run or "/tmp/dust_nn_example")
        train_all(run, DataConfig(windows=(("01-01", 4), ("07-01", 4)), region=dict(QUICK_REGION)),
                  TrainConfig(epochs=10), progress=p)
    else:
        run = Path(args.run)
    ev = run / "evaluation"
    if (ev / "maps.nc").exists() and not args.reevaluate:  # an evaluated run: plot what it saved
        import pandas as pd
        import xarray as xr

        from calibration.dust_nn.plots import save_figures

        res = {k: xr.load_dataset(ev / f"{k}.nc") for k in ("maps", "sites", "coupled_ds")}
        res["importance"] = pd.read_csv(ev / "importance.csv")
        figs = save_figures(res, run / "figures")
    else:
        figs = evaluate_all(run, progress=p).get("figures", [])
    figs = list(figs) + [scatter(run, run / "figures" / "scatter_log.png")]
    if (run / "search" / "bayesian_optimisation.nc").exists():
        figs.append(run / "search" / "search.png")
    print((run / "report.md").read_text())
    for f in figs:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
