"""Figures of the dust NN evaluation (matplotlib, Agg-safe): emission maps, site time series
and diurnal cycles, coupled AOD at one desert station, permutation importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_figures", "plot_maps", "plot_sites", "plot_importance", "plot_coupled"]


def plot_maps(maps, path=None):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    names = list(maps["model"].values)
    n = len(names)
    nc = min(4, n)
    nr = int(np.ceil(n / nc))
    fig, axes = plt.subplots(nr, nc, figsize=(3.6 * nc, 2.6 * nr), constrained_layout=True, squeeze=False)
    e = maps["emission"].values
    pos = e[np.isfinite(e) & (e > 0)]
    vmax = float(pos.max()) if pos.size else 1.0
    norm = LogNorm(vmin=vmax * 1e-5, vmax=vmax)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        f = np.where(e[k] > 0, e[k], np.nan)
        im = ax.pcolormesh(maps["lon"], maps["lat"], f, norm=norm, cmap="YlOrBr", shading="nearest")
        zero = np.where(np.isfinite(e[k]) & (e[k] == 0), 1.0, np.nan)
        ax.pcolormesh(maps["lon"], maps["lat"], zero, cmap="Greys", vmin=0, vmax=4, shading="nearest")
        ax.set_title(names[k], fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="mean emission [kg m-2 s-1] (grey: exactly 0)")
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_sites(sites, path=None):
    import matplotlib.pyplot as plt

    ns = sites.sizes["site"]
    fig, axes = plt.subplots(ns, 2, figsize=(12, 3 * ns), constrained_layout=True, squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for s, site in enumerate(sites["site"].values):
        for m, name in enumerate(sites["model"].values):
            kw = dict(color="k", lw=1.5) if name == "target" else dict(lw=0.8)
            y = sites["emission"].values[m, s]
            axes[s, 0].plot(np.arange(len(y)), y, label=name, **kw)
            axes[s, 1].plot(sites["hour"], sites["diurnal"].values[m, s], marker=".", **kw)
        top = np.nanmax(sites["emission"].values[:, s])
        if np.isfinite(top) and top > 0:
            for ax in axes[s]:
                ax.set_yscale("log")
                ax.set_ylim(top * 1e-6, top * 2)
        axes[s, 0].set_title(f"{site} (dust source {float(sites['dust_source'].values[s]):.2f}): emission, test year "
                             "(windows back to back; log axis, exact zeros not drawn)", fontsize=9)
        axes[s, 0].set_ylabel("kg m-2 s-1")
        axes[s, 0].set_xlabel("hour of the test windows")
        axes[s, 1].set_title(f"{site}: diurnal cycle", fontsize=9)
        axes[s, 1].set_xlabel("local solar hour")
    axes[0, 0].legend(fontsize=7, ncol=3)
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_importance(imp, path=None):
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(imp["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), constrained_layout=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        d = imp[imp["model"] == m].sort_values("d_rmse_log")
        ax.barh(d["predictor"], d["d_rmse_log"], color="C1")
        ax.set_title(f"{m}: permutation importance", fontsize=9)
        ax.set_xlabel("increase of the log-space RMSE")
    if path:
        fig.savefig(path, dpi=110)
    return fig


def plot_coupled(ds, path=None, site: str | None = None):
    import matplotlib.pyplot as plt

    desert = [s for s, d in zip(ds["site"].values, ds["desert"].values) if d]
    site = site or ("Mezaira" if "Mezaira" in desert else (desert[0] if desert else str(ds["site"].values[0])))
    fig, ax = plt.subplots(figsize=(11, 3.5), constrained_layout=True)
    for r, name in enumerate(ds["run"].values):
        kw = dict(color="k", lw=1.5) if name == "analysis" else dict(lw=0.8)
        ax.plot(ds["aod"].sel(site=site).values[r], label=name, **kw)
    ax.set_title(f"coupled aerosol runs: dust AOD at {site} (test-year windows back to back)", fontsize=9)
    ax.set_xlabel("hour")
    ax.set_ylabel("AOD 550 nm")
    ax.legend(fontsize=7, ncol=3)
    if path:
        fig.savefig(path, dpi=110)
    return fig


def save_figures(res: dict, folder) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fn, key in (("emission_maps.png", plot_maps, "maps"), ("sites.png", plot_sites, "sites"),
                          ("importance.png", plot_importance, "importance"), ("coupled_aod.png", plot_coupled, "coupled_ds")):
        if key in res:
            fig = fn(res[key], folder / name)
            plt.close(fig)
            out.append(folder / name)
    return out
