"""Figures for the multi-model ensemble: score card, error maps, training history (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["plot_scorecard", "plot_error_maps", "plot_history"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scorecard(sc: xr.Dataset, path, reference: str = "median") -> Path:
    """Score card in the style of ensemble verification: for every system but ``reference``,
    the RMSE change against ``reference`` [%] and the correlation difference, per variable
    (rows) and lead day (columns); green = better, red = worse, the values printed."""
    plt = _plt()
    systems = [str(s) for s in sc["system"].values if str(s) != reference]
    variables = [str(v) for v in sc["variable"].values]
    leads = [int(x) for x in sc["lead_time"].values]
    ref = sc.sel(system=reference)
    fig, axes = plt.subplots(2, len(systems), figsize=(2.2 + 1.1 * len(leads) * len(systems), 1.2 + 0.55 * len(variables) * 2),
                             squeeze=False)
    for j, s in enumerate(systems):
        cur = sc.sel(system=s)
        rel = (100 * (cur["rmse"] / ref["rmse"] - 1)).transpose("variable", "lead_time").values
        dcor = (cur["corr"] - ref["corr"]).transpose("variable", "lead_time").values
        for i, (vals, title, lim, fmt) in enumerate(((rel, "RMSE vs " + reference + " [%]", 60.0, "{:+.0f}"),
                                                      (-dcor, "corr. vs " + reference, 0.1, "{:+.3f}"))):
            ax = axes[i, j]
            ax.imshow(vals, cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto")
            for (r, c), v in np.ndenumerate(vals):
                shown = v if i == 0 else -v
                ax.text(c, r, fmt.format(shown), ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(leads)), [f"day {x}" for x in leads], fontsize=8)
            ax.set_yticks(range(len(variables)), variables, fontsize=8)
            ax.set_title(f"{s}: {title}", fontsize=9)
    fig.suptitle(f"score card, {sc.attrs.get('period', '')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_maps(maps: xr.Dataset, path) -> Path:
    """RMSE per grid cell (rows: variables, columns: systems; one colour scale per variable)."""
    plt = _plt()
    systems = [str(s) for s in maps["system"].values]
    variables = [str(v) for v in maps["variable"].values]
    fig, axes = plt.subplots(len(variables), len(systems), figsize=(2.3 * len(systems) + 0.8, 2.1 * len(variables)),
                             squeeze=False)
    lon, lat = maps["lon"].values, maps["lat"].values
    for i, v in enumerate(variables):
        vmax = float(np.nanpercentile(maps["rmse"].sel(variable=v).values, 99))
        for j, s in enumerate(systems):
            ax = axes[i, j]
            im = ax.pcolormesh(lon, lat, maps["rmse"].sel(variable=v, system=s).values, vmin=0, vmax=vmax,
                               cmap="magma_r", shading="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(s, fontsize=9)
            if j == 0:
                ax.set_ylabel(v, fontsize=9)
        fig.colorbar(im, ax=axes[i, :].tolist(), shrink=0.85, label="RMSE")
    fig.suptitle(f"RMSE per grid cell (lead days: {maps.attrs.get('lead_time', 'all')})", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(hist: xr.Dataset, path) -> Path:
    """Training and validation loss per epoch, and the baseline's validation loss."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(hist["epoch"], hist["train_loss"], label="train")
    ax.plot(hist["epoch"], hist["val_loss"], label="validation")
    if "base_val_loss" in hist.attrs:
        ax.axhline(hist.attrs["base_val_loss"], color="k", ls="--", lw=1, label=f"baseline ({hist.attrs.get('base', '')})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("standardised MSE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
