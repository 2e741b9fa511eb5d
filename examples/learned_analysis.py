"""Learned analyses trained on classical ones (issue 19): the shallow-water exercise 1 and,
with ``--land``, 2 m temperature of the gridded world.

    .venv/bin/python examples/learned_analysis.py            # ~5 min on the shared 2 cores (smaller than the benchmark)
    .venv/bin/python examples/learned_analysis.py --land     # + the land T2m case (~2 min more; measured 6.5 min in all)

1. Cases: shallow-water depth fields (truth), a background with correlated errors, stations at
   random cells (2-20 % of them in training; held out at 5 %).
2. Classical teachers: OI / 3D-Var with a Gaussian background-error correlation whose length scale
   is fitted to the innovations (Hollingsworth-Loennberg, then Desroziers for the variances), and
   the LETKF with an ensemble drawn from that B.
3. Learned analyses: a U-Net trained on the truth, one trained on the OI analyses, and a
   conditional diffusion model sampling an ensemble by inpainting the observations.
4. Figures (``--out``, default ``runs/learned_analysis``): truth, background, observations, each
   analysis and its error for one held-out case; the land case the same on its map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ailand.progress import Progress  # noqa: E402
from calibration.learned_analysis import experiments as X  # noqa: E402


def panels(fields: dict, errors: dict, obs, mask, title: str, path: Path, units: str, extent=None):
    """Top row: truth, background, observations, analyses; bottom row: their errors."""
    names = list(fields)
    n = len(names) + 1
    fig, ax = plt.subplots(2, n, figsize=(2.6 * n, 5.4), constrained_layout=True)
    vals = np.concatenate([np.ravel(v) for v in fields.values()])
    lo, hi = np.nanpercentile(vals, [1, 99])
    emax = max(np.nanmax(np.abs(e)) for e in errors.values())
    kw = dict(origin="lower", extent=extent, aspect="auto")
    for k, name in enumerate(names):
        col = k if k < 2 else k + 1
        im = ax[0, col].imshow(fields[name], vmin=lo, vmax=hi, cmap="viridis", **kw)
        ax[0, col].set_title(name, fontsize=9)
        if name in errors:
            e = errors[name]
            ie = ax[1, col].imshow(e, vmin=-emax, vmax=emax, cmap="RdBu_r", **kw)
            ax[1, col].set_title(f"error, rmse {np.sqrt(np.nanmean(e ** 2)):.3g}", fontsize=8)
        else:
            ax[1, col].axis("off")
    o = np.where(mask, obs, np.nan)
    ax[0, 2].imshow(o, vmin=lo, vmax=hi, cmap="viridis", **kw)
    ax[0, 2].set_title(f"observations ({int(mask.sum())})", fontsize=9)
    ax[1, 2].axis("off")
    fig.colorbar(im, ax=ax[0, :], shrink=0.8, label=units)
    fig.colorbar(ie, ax=ax[1, :], shrink=0.8, label=f"analysis - truth [{units}]")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--land", action="store_true", help="also the land T2m case")
    ap.add_argument("--out", default="runs/learned_analysis")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (figures of untrained networks)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = Progress(True)

    cfg = X.config("ex1", quick=args.quick) if args.quick else X.config("ex1", n_train=512, n_test=32, epochs=8, diffusion_epochs=10, diffusion_cases=4,
                   test_density=(0.05,), seed=args.seed)
    cfg["test_density"] = (0.05,)
    scores, art = X.exercise1_experiment(cfg, progress=p)
    name = "density 0.05"
    te, an = art["tests"][name], art["analyses"][name]
    k = 0
    t = te.truth.values[k]
    fields = {"truth": t, "background": te.background.values[k], "OI / 3D-Var": an["oi_3dvar"][k],
              "LETKF": an["letkf"][k], "U-Net (truth)": an["unet_truth"][k], "U-Net (OI)": an["unet_oi"][k],
              "diffusion mean": an["diffusion"][k].mean(0)}
    errors = {kk: v - t for kk, v in fields.items() if kk != "truth"}
    panels(fields, errors, te.obs.values[k], te.mask.values[k],
           f"exercise 1: shallow-water depth, 5 % of cells observed (held-out case); fitted L = "
           f"{scores['fit']['length_cells']:.2f} cells", out / "exercise1.png", "m")
    print("\nexercise 1, RMSE vs truth [m] over the held-out set (density 5 %):")
    for m, v in scores["rmse_m"][name].items():
        print(f"  {m:<28} {v:.4f}")

    if args.land:
        lcfg = X.config("land", quick=True) if args.quick else X.config("land", epochs=8, layouts=4, seed=args.seed)
        ls, la = X.land_experiment(lcfg, progress=p)
        name = next(iter(la["tests"]))
        te, an = la["tests"][name], la["analyses"][name]
        land = te.lsm.values >= 0.5
        t = np.where(land, te.truth.values[0], np.nan)
        fields = {"truth": t, "background": np.where(land, te.background.values[0], np.nan)}
        for m, lab in (("oi_3dvar", "OI / 3D-Var"), ("letkf", "LETKF"), ("unet_truth", "U-Net (truth)"),
                       ("unet_oi", "U-Net (OI)")):
            fields[lab] = np.where(land, an[m][0], np.nan)
        errors = {kk: v - t for kk, v in fields.items() if kk != "truth"}
        lat, lon = te.lat.values, te.lon.values
        extent = (lon[0] - 0.75, lon[-1] + 0.75, lat[0] - 0.75, lat[-1] + 0.75)
        panels(fields, errors, te.obs.values[0], te.mask.values[0],
               f"land: 2 m temperature at {str(te.day.values[0])[:13]} UTC, {name} of land cells observed",
               out / "land_t2m.png", "K", extent)
        print(f"\nland T2m, RMSE vs truth over land [K] ({name}):")
        for m, v in ls["rmse_K_land"][name].items():
            print(f"  {m:<28} {v:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
