"""Figures of the operational-parameter study (each returns a matplotlib Figure, saved when ``path``)."""

from __future__ import annotations

import numpy as np


def plot_map(result, path=None):
    """Map-like panels (longitude, latitude), one per strategy: each site coloured by the
    physics RMSE of daily Qle + Qh (mean of the two) with that strategy's parameters;
    held-out sites as filled circles, the others as small dots."""
    import matplotlib.pyplot as plt

    net = result.network
    lon, lat = net["lon"].values, net["lat"].values
    held = net["held_out"].values.astype(bool)
    strategies = list(result.rmse["strategy"].values)
    r = result.rmse.mean("variable").values  # (strategy, site)
    vmax = float(np.nanpercentile(r, 95))
    n = len(strategies)
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.6 * nrow + 0.6), squeeze=False, constrained_layout=True)
    sc = None
    for k, s in enumerate(strategies):
        ax = axes.flat[k]
        ax.scatter(lon[~held], lat[~held], c=r[k, ~held], s=6, cmap="viridis", vmin=0, vmax=vmax)
        sc = ax.scatter(lon[held], lat[held], c=r[k, held], s=26, cmap="viridis", vmin=0, vmax=vmax, edgecolor="k", lw=0.4)
        ax.set_title(f"{s}: held-out {np.nanmean(r[k, held]):.1f} W m-2", fontsize=9)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 80)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.colorbar(sc, ax=axes, shrink=0.8, label="RMSE of daily Qle and Qh [W m-2] (physics)")
    fig.suptitle("operational parameter sets: site RMSE per strategy (big circles: held-out sites)", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_importance(result, path=None):
    """Heat maps ``(cluster, predictor)`` of the permutation importance of each learnt clustering."""
    import matplotlib.pyplot as plt

    imps = result.importance
    fig, axes = plt.subplots(1, len(imps), figsize=(5.2 * len(imps), 3.4), squeeze=False, constrained_layout=True)
    for ax, (s, imp) in zip(axes[0], imps.items()):
        v = imp.values
        im = ax.imshow(v, cmap="magma_r", vmin=0, vmax=max(float(np.nanmax(v)), 1e-3), aspect="auto")
        ax.set_xticks(range(v.shape[1]), list(imp["predictor"].values), rotation=40, ha="right", fontsize=8)
        sizes = (result.network[f"group_{s}"].values[:, None] == imp["cluster"].values[None]).sum(0)
        ax.set_yticks(range(v.shape[0]), [f"{c} ({n} sites)" for c, n in zip(imp["cluster"].values, sizes)], fontsize=8)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if v[i, j] > 0.5 * np.nanmax(v) else "k")
        ax.set_title(f"{s}: importance of each predictor for each cluster", fontsize=9)
        fig.colorbar(im, ax=ax, label="drop in recall when permuted")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_equifinality(result, path=None):
    """Equifinality for one cluster: RMSE reductions per method (16 answers each), the
    parameters found (unit cube), and the two most correlated parameter pairs with the
    variational answers, the final EKI/ES-MDA ensembles and the truth."""
    import matplotlib.pyplot as plt

    e = result.equifinality
    method = np.asarray(e["method"].values)
    names = list(e["parameter"].values)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
    ax = axes[0]
    colours = {"variational": "C3", "eki": "C0", "esmda": "C2"}
    for i, m in enumerate(("variational", "eki", "esmda")):
        sel = method == m
        for j, (v, mk) in enumerate((("reduction_cal", "o"), ("reduction_heldout", "^"))):
            a = e[v].values[sel]
            ax.scatter(np.full(a.size, i + 0.18 * (2 * j - 1)), a, s=14, marker=mk, color=colours[m], alpha=0.7,
                       label=("calibration sites" if j == 0 else "held-out sites") if i == 0 else None)
            ax.hlines(np.nanmedian(a) if np.isfinite(a).any() else np.nan, i + 0.18 * (2 * j - 1) - 0.12,
                      i + 0.18 * (2 * j - 1) + 0.12, color="k")
    counts = [int((method == m).sum()) for m in ("variational", "eki", "esmda")]
    ax.set_xticks(range(3), [f"variational\n{counts[0]} first guesses", f"EKI\n{counts[1]} seeds",
                             f"ES-MDA\n{counts[2]} seeds"], fontsize=8)
    ax.set_ylabel("RMSE reduction vs prior (physics)")
    ax.legend(fontsize=7)
    ax.set_title(f"{e.attrs.get('cluster', '')}: RMSE reduction (bars: medians)", fontsize=9)
    ax = axes[1]
    U = e["u"].values
    for i, m in enumerate(("variational", "eki", "esmda")):
        sel = method == m
        for j in range(len(names)):
            ax.scatter(np.full(sel.sum(), j + 0.22 * (i - 1)), U[sel, j], s=10, color=colours[m], alpha=0.7,
                       label=m if j == 0 else None)
    ax.scatter(range(len(names)), e["truth_u_mean"].values, marker="*", s=90, color="k", label="truth (site mean)", zorder=5)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("parameter (unit cube of its range)")
    ax.legend(fontsize=7)
    ax.set_title("parameters found", fontsize=9)
    corr = e["gn_corr"].values
    iu = np.triu_indices(len(names), 1)
    order = np.argsort(-np.abs(corr[iu]))[:2]
    E = e["ensemble_u"].values  # (run, member, parameter)
    runm = np.asarray(e["run_method"].values)
    for ax, o in zip(axes[2:], order):
        a, b = iu[0][o], iu[1][o]
        for m in ("eki", "esmda"):
            pts = E[runm == m].reshape(-1, len(names))
            ax.scatter(pts[:, a], pts[:, b], s=3, alpha=0.25, color=colours[m], label=f"{m} final ensembles")
        sel = method == "variational"
        ax.scatter(U[sel, a], U[sel, b], s=22, color=colours["variational"], edgecolor="k", lw=0.4, label="variational answers")
        ax.scatter(e["truth_u_mean"].values[a], e["truth_u_mean"].values[b], marker="*", s=120, color="k", label="truth (site mean)")
        ax.set_xlabel(f"{names[a]} (unit cube)")
        ax.set_ylabel(f"{names[b]} (unit cube)")
        ax.set_title(f"trade-off {names[a]}-{names[b]}: Gauss-Newton corr {corr[a, b]:+.2f}", fontsize=9)
        ax.legend(fontsize=6)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_propagation(result, path=None):
    """Per held-out site of the cluster: prior and posterior predictive (median, 5-95 %) of
    annual ET and summer soil moisture through the emulator, and the physics at the truth."""
    import matplotlib.pyplot as plt

    p = result.propagation
    sites = list(p["site"].values)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * len(sites) + 2.2), constrained_layout=True)
    for ax, v, lab in ((axes[0], "annual_et", "annual ET [mm yr-1]"), (axes[1], "summer_sm", "summer top-metre soil moisture [m3 m-3]")):
        y = np.arange(len(sites))
        for k, (name, col, off) in enumerate((("prior", "0.55", 0.18), ("posterior", "C3", -0.18))):
            a = p[f"{v}_{name}"].values
            lo, med, hi = np.percentile(a, [5, 50, 95], axis=0)
            ax.errorbar(med, y + off, xerr=[med - lo, hi - med], fmt="o", ms=3, color=col, capsize=2,
                        label=f"{name} predictive (emulator, 5-95 %)")
        ax.scatter(p[f"{v}_truth"].values, y, marker="x", color="k", zorder=5, label="physics at the truth")
        ax.set_yticks(y, sites, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(lab)
        ax.legend(fontsize=7)
    fig.suptitle(f"uncertainty propagation, cluster {p.attrs.get('cluster', '')}, held-out sites", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
