"""Figures of emulator skill: rollout time series, error growth, training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

from ..plots import finish  # noqa: E402


def plot_rollout(cmp: xr.Dataset, path=None):
    """Physics vs emulator daily means (from :func:`~ailand.emulator.evaluate.compare_rollout`):
    one row per variable, one column per site."""
    sites, variables = list(cmp["site"].values), list(cmp.data_vars)
    fig, axes = plt.subplots(len(variables), len(sites), figsize=(2.3 * len(sites) + 1, 1.7 * len(variables) + 0.8),
                             sharex=True, sharey="row", squeeze=False)
    for j, site in enumerate(sites):
        for i, v in enumerate(variables):
            ax = axes[i, j]
            for src, col, lw in (("physics", "k", 1.0), ("emulator", "C3", 0.8)):
                ax.plot(cmp["time"].values, cmp[v].sel(source=src, site=site).values, color=col, lw=lw, label=src)
            if i == 0:
                ax.set_title(str(site), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{v} [{cmp[v].attrs.get('units', '')}]", fontsize=8)
            ax.tick_params(labelsize=7)
            for lab in ax.get_xticklabels():
                lab.set_rotation(45)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"free emulator rollout vs physics (member {cmp.attrs.get('member', '?')}, daily means)", fontsize=10)
    return finish(fig, path)


def plot_error_growth(scores: xr.Dataset, path=None, variables=("swvl1", "stl1", "snowc", "Qle")):
    """Rollout RMSE of daily means vs lead time (from :func:`~ailand.emulator.evaluate.evaluate`)."""
    variables = [v for v in variables if v in scores["variable"].values]
    fig, axes = plt.subplots(1, len(variables), figsize=(3.2 * len(variables), 2.8), squeeze=False)
    for i, v in enumerate(variables):
        ax = axes[0, i]
        for s in scores["set"].values:
            y = scores["rollout_rmse"].sel(set=s, variable=v)
            ax.plot(scores["lead_day"].values, y.values, label=str(s).replace("_", " "))
        ax.set_title(f"{v} [{scores['units'].sel(variable=v).item()}]", fontsize=9)
        ax.set_xlabel("lead time [days]", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("RMSE (daily means)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    return finish(fig, path)


def plot_history(history: xr.Dataset, path=None):
    """Training and validation losses per epoch."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for v in history.data_vars:
        if v.endswith("loss") or v.endswith("one_step") or v.endswith("rollout"):
            ax.plot(history["epoch"].values, history[v].values, label=v, lw=1.5 if v in ("train_loss", "val_loss") else 0.8)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised MSE)")
    ax.legend(fontsize=6)
    return finish(fig, path)
