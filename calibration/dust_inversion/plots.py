"""Figures of the dust inversion (matplotlib, Agg): seasonal maps of the scaling factors and
emission changes, the recovered against the true scaling field, AOD at AERONET stations,
scores and cycle diagnostics. :func:`save_figures` writes them all for a
:class:`~.twin.TwinEvaluation`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_seasonal_maps", "plot_truth_vs_analysis", "plot_aeronet", "plot_scores", "plot_cycles", "save_figures"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _map(ax, da, title, cmap, norm=None, vmin=None, vmax=None, land=None):
    lon, lat = da["lon"].values, da["lat"].values
    im = ax.pcolormesh(lon, lat, np.ma.masked_invalid(da.values), cmap=cmap, norm=norm, vmin=vmin, vmax=vmax, shading="nearest")
    if land is not None:
        ax.contour(lon, lat, land, levels=[0.5], colors="0.4", linewidths=0.5)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    return im


def plot_seasonal_maps(seasonal, lsm=None):
    """Rows: emission-weighted scaling factor (log colour scale), emission change
    [ug m-2 s-1]; columns: the seasons of the run. Returns the Figure."""
    from matplotlib.colors import LogNorm, TwoSlopeNorm

    plt = _plt()
    seasons = list(seasonal["season"].values)
    fig, axes = plt.subplots(2, len(seasons), figsize=(3.6 * len(seasons) + 1, 5.6), squeeze=False, layout="constrained")
    chg = seasonal["emission_change"] * 1e9
    lim = float(np.nanmax(np.abs(chg.values))) or 1.0
    for k, s in enumerate(seasons):
        im1 = _map(axes[0, k], seasonal["scaling_factor"].sel(season=s), f"{s}: scaling factor", "RdBu_r",
                   norm=LogNorm(0.25, 4.0), land=lsm)
        im2 = _map(axes[1, k], chg.sel(season=s), f"{s}: analysis - prior emission", "PuOr_r",
                   norm=TwoSlopeNorm(0.0, -lim, lim), land=lsm)
    fig.colorbar(im1, ax=axes[0, :], shrink=0.8, label="emission-weighted factor")
    fig.colorbar(im2, ax=axes[1, :], shrink=0.8, label="emission change [ug m-2 s-1]")
    return fig


def plot_truth_vs_analysis(analysis, lsm=None):
    """Emission-weighted true and analysed factors over the run (maps) and a scatter of the
    log factors of every emitting (period, cell) pair. Returns the Figure."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    ep = analysis["emission_prior"].sum("time")
    ok = ep > 0
    fa = (analysis["emission_analysis"].sum("time") / ep).where(ok)
    ims = []
    if "emission_truth" in analysis:
        ft = (analysis["emission_truth"].sum("time") / ep).where(ok)
        ims.append(_map(axes[0], ft, "true factor (emission-weighted, whole run)", "RdBu_r", norm=LogNorm(0.25, 4.0), land=lsm))
    ims.append(_map(axes[1], fa, "analysed factor (emission-weighted, whole run)", "RdBu_r", norm=LogNorm(0.25, 4.0), land=lsm))
    fig.colorbar(ims[-1], ax=axes[:2], shrink=0.8, label="scaling factor")
    ax = axes[2]
    if "scaling_factor_truth_period" in analysis:
        mask = analysis["control_mask"].values.astype(bool)
        t = np.log(analysis["scaling_factor_truth_period"].values[:, mask])
        a = np.log(analysis["scaling_factor_period"].values[:, mask])
        ax.plot(t.ravel(), a.ravel(), ".", ms=2, alpha=0.4, color="C0")
        lim = [min(t.min(), a.min()), max(t.max(), a.max())]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xlabel("true log factor")
        ax.set_ylabel("analysed log factor")
        ax.set_title("every control (period, cell)", fontsize=9)
    return fig


def plot_aeronet(sites, names=None, max_sites: int = 4):
    """AOD time series at a few stations (two desert, two others by default): held-out
    observations, truth, prior, analysis and forecast-only runs. Returns the Figure."""
    plt = _plt()
    if names is None:
        d = sites["site"].values[sites["desert"].values.astype(bool)]
        o = sites["site"].values[~sites["desert"].values.astype(bool)]
        names = list(d[:2]) + list(o[: max_sites - min(2, len(d))])
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.3 * len(names)), sharex=True, squeeze=False, layout="constrained")
    for ax, n in zip(axes[:, 0], names):
        s = sites.sel(site=n)
        t = s["time"].values
        ax.plot(t, s["aod_aeronet"], ".", ms=2, color="k", label="AERONET (held out)")
        for v, c, lab in (("aod_prior", "C1", "prior"), ("aod_analysis", "C0", "analysis"),
                          ("aod_forecast", "C2", "forecast (analysed factors)")):
            ax.plot(t, s[v], color=c, lw=0.9, label=lab)
        ax.set_ylabel("AOD")
        ax.set_title(f"{n} ({'desert' if bool(s['desert']) else 'non-desert'})", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    return fig


def plot_scores(aod):
    """Bar chart of RMSE and correlation by run and station group (all seasons). Returns the Figure."""
    plt = _plt()
    a = aod.sel(season="all")
    runs, groups = list(a["run"].values), list(a["group"].values)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    x = np.arange(len(groups))
    w = 0.8 / len(runs)
    for k, r in enumerate(runs):
        axes[0].bar(x + k * w, a["rmse"].sel(run=r), w, label=r)
        axes[1].bar(x + k * w, a["corr"].sel(run=r), w, label=r)
    for ax, lab in zip(axes, ("AOD RMSE", "AOD correlation")):
        ax.set_xticks(x + 0.4 - w / 2, groups)
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    return fig


def plot_cycles(cycles):
    """Innovation RMS, background spread and observation error in AOD, and chi2 per cycle."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
    t = cycles["period_start"].values
    axes[0].plot(t, cycles["innovation_rms"], label="innovation RMS")
    axes[0].plot(t, cycles["spread_obs"], label="ensemble spread H(x_b)")
    axes[0].plot(t, cycles["obs_error_rms"], label="observation error")
    axes[0].set_ylabel("AOD")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, cycles["chi2"], color="C3")
    axes[1].axhline(1.0, color="0.5", lw=0.8)
    axes[1].set_ylabel("d^2 / (sigma_o^2 + var HX)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, rotation=30)
    return fig


def save_figures(ev, folder) -> list[Path]:
    """Write every figure of a :class:`~.twin.TwinEvaluation` to ``folder``; returns the paths."""
    plt = _plt()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lsm = ev.analysis["lsm"].values
    figs = {
        "seasonal_maps.png": plot_seasonal_maps(ev.seasonal, lsm),
        "truth_vs_analysis.png": plot_truth_vs_analysis(ev.analysis, lsm),
        "aeronet_timeseries.png": plot_aeronet(ev.sites),
        "aod_scores.png": plot_scores(ev.aod),
        "cycles.png": plot_cycles(ev.cycles),
    }
    paths = []
    for name, fig in figs.items():
        p = folder / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
