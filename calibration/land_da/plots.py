"""Figures of the land DA twin: soil moisture over time per layer, Jacobian heatmaps."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr


def plot_land_da(results: Mapping[str, xr.Dataset], path=None, site=None):
    """swvl1..3 at ``site`` (default the first) over time: the truth, then each method's
    analysis (the open loop as a dashed line). One panel per layer. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    site = str(first["site"].values[0]) if site is None else str(site)
    layers = list(first["layer"].values)
    fig, axes = plt.subplots(len(layers), 1, figsize=(10, 2.4 * len(layers)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, lay in zip(axes, layers):
        first["truth"].sel(site=site, layer=lay).plot(ax=ax, color="k", lw=2, label="truth")
        for name, ds in results.items():
            style = {"ls": "--", "color": "0.5"} if name == "open_loop" else {"lw": 1}
            ds["analysis"].sel(site=site, layer=lay).plot(ax=ax, label=name, **style)
        ax.set_title(f"{lay} at {site}")
        ax.set_ylabel("m3 m-3")
        ax.set_xlabel("")
    axes[0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_jacobians(jacobians: Mapping[str, np.ndarray], obs_names, sites, path=None):
    """Heatmaps of ``H (S, m, L)`` per source (columns) and site (rows): d observation /
    d window-start soil moisture of layers 1-3, a shared colour scale per observation row
    (normalised by its largest |entry| over the sources). Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(jacobians)
    S = len(sites)
    fig, axes = plt.subplots(S, len(names), figsize=(2.6 * len(names), 2.4 * S), squeeze=False)
    for s in range(S):
        scale = np.max([np.abs(jacobians[n][s]).max(axis=1) for n in names], axis=0)[:, None]  # (m, 1)
        scale = np.where(scale > 0, scale, 1.0)
        for j, n in enumerate(names):
            ax = axes[s, j]
            im = ax.imshow(jacobians[n][s] / scale, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
            ax.set_xticks(range(jacobians[n].shape[-1]), [f"swvl{i + 1}" for i in range(jacobians[n].shape[-1])], fontsize=7)
            ax.set_yticks(range(len(obs_names)), obs_names if j == 0 else [""] * len(obs_names), fontsize=7)
            ax.set_title(f"{n}, {sites[s]}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label="H / max |H| per observation")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
