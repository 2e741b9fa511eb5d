"""Plots of history-matching waves (matplotlib; imported only when called).

- :func:`nroy_pairs`: for every parameter pair, the optical depth (lower triangle: the
  fraction of points in each 2-D cell that are NROY, i.e. how much of the hidden
  dimensions stays plausible there) and the minimum implausibility per cell (upper
  triangle), after Vernon et al. (2010) and ExeterUQ's ``imp.layoutm11``; the diagonal
  is the 1-D optical depth. Computed on the seeded uniform sample of the
  :class:`HistoryMatching` (``n_mc`` points, all waves so far). The truth, when given,
  is a red star.
- :func:`waves_plot`: NROY fraction by wave (with its Monte-Carlo error) and, per wave,
  boxplots of the runs' own implausibility (the ``nth``-largest of ``|f_i(x) - z_i| / sqrt(var_obs + var_mod)``)
  with the cutoff; the truth's emulator implausibility after each wave as red stars.
"""

from __future__ import annotations

import numpy as np


def _edges(space, j: int, bins: int) -> np.ndarray:
    """Physical cell edges ``(bins + 1,)`` of parameter ``j`` (log-spaced for log parameters)."""
    g = np.tile(np.linspace(0.0, 1.0, bins + 1)[:, None], (1, len(space)))
    return np.asarray(space.from_unit(g), dtype=float)[:, j]


def _label(space, name: str) -> str:
    u = space.units[name]
    return f"{name} [{u}]" if u and u != "-" else name


def nroy_pairs(hm, path=None, truth=None, bins: int = 20):
    """Optical depth (lower) and minimum implausibility (upper) per parameter pair; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FormatStrFormatter, NullFormatter
    from scipy.stats import binned_statistic_2d

    if not hm.records:
        raise ValueError("no wave has been run yet: nothing to plot")
    space, names, d = hm.space, hm.names, hm.d
    U, S = hm._mc_u, hm._mc_score
    nroy = (S <= hm.cutoff).astype(float)
    tu = None if truth is None else np.asarray(space.to_unit(np.asarray(truth, dtype=float).reshape(1, -1)))[0]
    size = max(2.2 * d, 4.0)
    fig, axes = plt.subplots(d, d, figsize=(size + 1.2, size), squeeze=False, constrained_layout=True)
    ib = np.linspace(0.0, 1.0, bins + 1)
    # optical depths are compared across panels on one scale, 0 .. the largest (a small NROY
    # space has small depths everywhere; the pattern, not the level, is what the plot shows)
    max_depth = 0.0
    for i in range(d):
        for j in range(i):
            tot = binned_statistic_2d(U[:, j], U[:, i], None, "count", bins=[ib, ib]).statistic
            hit = binned_statistic_2d(U[:, j], U[:, i], nroy, "sum", bins=[ib, ib]).statistic
            max_depth = max(max_depth, float(np.nanmax(np.divide(hit, tot, out=np.zeros_like(hit), where=tot > 0))))
    depth_norm = Normalize(0.0, max(max_depth, 1e-12))
    imp_norm = Normalize(0.0, 2.0 * hm.cutoff)
    log = dict(zip(names, space.is_log))
    m_depth = m_imp = None
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            ex, ey = _edges(space, j, bins), _edges(space, i, bins)
            if i == j:
                cnt, _ = np.histogram(U[:, j], ib)
                hit, _ = np.histogram(U[:, j], ib, weights=nroy)
                ax.stairs(np.divide(hit, cnt, out=np.zeros(bins), where=cnt > 0), ex, fill=True, color="C0", alpha=0.6)
                ax.set_ylim(0, 1.05 * max(max_depth, 1e-12))
                ax.set_ylabel("optical depth", fontsize=7)
                if tu is not None:
                    ax.axvline(truth[j], color="r", lw=1.5)
            elif i > j:  # optical depth
                tot = binned_statistic_2d(U[:, j], U[:, i], None, "count", bins=[ib, ib]).statistic
                hit = binned_statistic_2d(U[:, j], U[:, i], nroy, "sum", bins=[ib, ib]).statistic
                depth = np.divide(hit, tot, out=np.full_like(hit, np.nan), where=tot > 0)
                m_depth = ax.pcolormesh(ex, ey, depth.T, cmap="viridis", norm=depth_norm)
            else:  # minimum implausibility
                mn = binned_statistic_2d(U[:, j], U[:, i], S, "min", bins=[ib, ib]).statistic
                m_imp = ax.pcolormesh(ex, ey, mn.T, cmap="magma_r", norm=imp_norm)
                ax.contour(0.5 * (ex[1:] + ex[:-1]), 0.5 * (ey[1:] + ey[:-1]), np.nan_to_num(mn.T, nan=1e9),
                           levels=[hm.cutoff], colors="w", linewidths=0.8)
            if i != j and tu is not None:
                ax.plot(truth[j], truth[i], "*", color="r", ms=10, mec="w", mew=0.6)
            if log[names[j]]:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if i != j and log[names[i]]:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(ex[0], ex[-1])
            if i != j:
                ax.set_ylim(ey[0], ey[-1])
            ax.tick_params(labelsize=6)
            if i == d - 1:
                ax.set_xlabel(_label(space, names[j]), fontsize=8)
            if j == 0 and i != 0:
                ax.set_ylabel(_label(space, names[i]), fontsize=8)
    if m_depth is not None:
        fig.colorbar(m_depth, ax=axes[:, 0].tolist(), location="left", shrink=0.6,
                     label=f"optical depth (NROY fraction of the cell; max {max_depth:.2g}), lower")
    if m_imp is not None:
        fig.colorbar(m_imp, ax=axes[:, -1].tolist(), shrink=0.6,
                     label=f"minimum implausibility, upper (white: cutoff {hm.cutoff:g})")
    fig.suptitle(f"NROY after {hm.n_waves} wave(s): {100 * hm.nroy_fraction:.3g} % +- {100 * hm.nroy_fraction_se:.2g} % "
                 f"of the space ({int(nroy.sum())} NROY of {len(U)} uniform points{'; red star: truth' if tu is not None else ''})",
                 fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def waves_plot(hm, path=None, truth=None):
    """NROY fraction by wave and the runs' implausibility by wave (boxplots); returns the figure."""
    import matplotlib.pyplot as plt

    if not hm.records:
        raise ValueError("no wave has been run yet: nothing to plot")
    ds = hm.waves
    k = ds["wave"].values
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    frac, se = ds["nroy_fraction"].values, ds["nroy_fraction_se"].values
    a1.errorbar(np.concatenate([[0], k]), np.concatenate([[1.0], frac]), yerr=np.concatenate([[0.0], 2 * se]),
                fmt="o-", capsize=3)
    a1.set_yscale("log")
    a1.set_xlabel("wave (0: the whole space)")
    a1.set_ylabel("NROY fraction of the space [-] (+- 2 MC s.e.)")
    a1.set_xticks(np.concatenate([[0], k]))
    a1.grid(alpha=0.3)
    data = [v[np.isfinite(v)] for v in ds["run_implausibility"].values]
    a2.boxplot(data, positions=k, widths=0.6)
    a2.set_yscale("log")
    a2.axhline(hm.cutoff, color="k", ls="--", lw=1, label=f"cutoff {hm.cutoff:g}")
    if truth is not None:
        t = np.asarray(truth, dtype=float).reshape(1, -1)
        it = [float(hm.implausibility(t, wave=w)[0]) for w in k]
        a2.plot(k, it, "*", color="r", ms=10, label="truth (emulator, that wave)")
    a2.set_xlabel("wave")
    a2.set_ylabel(f"implausibility of the runs (nth={hm.nth}) [-]")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    fig.suptitle("history matching by wave", fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
