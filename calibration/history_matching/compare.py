"""History matching against Bayesian posteriors: is the posterior inside NROY?

History matching and Bayesian calibration answer different questions (which parameters the
data cannot rule out, vs how probable each parameter is), but in a twin both must keep the
truth, and the posterior mass should lie inside the final NROY space: a posterior that
sits outside NROY means either the posterior or the history match is over-confident.

- :func:`nroy_vs_posteriors` -> ``xr.Dataset`` over ``parameter``: the NROY range (min/max
  of NROY points), each posterior's mean, std and 2-sigma interval, the truth, and scalars:
  the fraction of MCMC samples that are NROY, whether the variational mean and the truth
  are NROY (and their implausibility).
- :func:`plot_nroy_vs_posteriors`: for every parameter pair the NROY points (grey), the
  MCMC samples (with 1- and 2-sigma-mass contours), the variational 2-sigma ellipse and the
  truth; on the diagonal the 1-D view: NROY range vs posterior mean +- 2 sigma.

``results`` is a :class:`calibration.TwinResult` (its ``.results``) or a dict
``{"variational": VariationalResult, "mcmc": MCMCResult}`` (either may be missing); only
``.x`` and ``.A_control`` (or ``.cov``) of the variational result and ``.samples`` of
the MCMC result are read. The variational posterior is Gaussian in the control
``z = ln x`` for log-scale parameters (``x`` otherwise), so the ellipse and the interval
are drawn in that space and mapped back (on log axes they are exact Gauss-Newton ellipses).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

_MAX_MCMC = 4000  # MCMC samples classified / plotted (a seeded subsample of a longer chain)


def noise_nth(m: int, cutoff: float = 3.0, alpha: float = 0.01) -> int:
    """Smallest ``nth`` such that the truth is ruled out by observation noise alone with
    probability ``<= alpha``: ``P(Binomial(m, p) >= nth) <= alpha`` with
    ``p = P(|N(0, 1)| > cutoff)`` (independent Gaussian noise, a perfect emulator).

    With ``m = 244`` data and cutoff 3 (``p = 0.0027``) the maximum (``nth=1``) rules the
    truth out with probability 48 %; ``alpha = 0.01`` gives ``nth = 4`` (0.4 %).
    """
    from scipy.stats import binom, norm

    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = 2.0 * norm.sf(cutoff)
    for k in range(1, m + 1):
        if binom.sf(k - 1, m, p) <= alpha:  # P(N >= k)
            return k
    return m


def _parts(results):
    res = getattr(results, "results", results)
    if not isinstance(res, dict):
        raise ValueError("results must be a TwinResult or a dict {'variational': ..., 'mcmc': ...}")
    return res.get("variational"), res.get("mcmc")


def _log_mask(hm) -> np.ndarray:
    return np.asarray(hm.space.is_log, dtype=bool)


def _to_s(x, log):
    x = np.asarray(x, dtype=float)
    return np.where(log, np.log(np.where(log, x, 1.0)), x)


def _from_s(s, log):
    s = np.asarray(s, dtype=float)
    return np.where(log, np.exp(np.where(log, s, 0.0)), s)


def _var_gaussian(var, log):
    """Variational mean ``(d,)`` and covariance ``(d, d)`` in the control space ``s``."""
    mu = np.asarray(var.x, dtype=float)
    A = getattr(var, "A_control", None)
    if A is None:  # linearised physical covariance: back to the control
        cov = np.asarray(var.cov, dtype=float)
        J = np.diag(np.where(log, 1.0 / mu, 1.0))
        A = J @ cov @ J
    return _to_s(mu, log), np.atleast_2d(np.asarray(A, dtype=float))


def _mcmc_samples(mc, seed=0) -> np.ndarray:
    s = np.asarray(mc.samples, dtype=float)
    if len(s) > _MAX_MCMC:
        s = s[np.sort(np.random.default_rng(seed).choice(len(s), _MAX_MCMC, replace=False))]
    return s


def nroy_points(hm, n: int = 1000, seed: int = 12345) -> np.ndarray:
    """``(k, d)`` physical NROY points: ``hm.sample_nroy(n, seed)`` plus the NROY points of the
    seeded uniform sample (the union spans NROY better than either; the range is a lower bound)."""
    x = np.asarray(hm.sample_nroy(n, seed=seed).values, dtype=float)
    u = hm._mc_u[hm._mc_score <= hm.cutoff]
    if len(u):
        x = np.concatenate([x, np.asarray(hm.space.from_unit(u), dtype=float)])
    return x[hm.is_nroy(x)]


def nroy_vs_posteriors(hm, results, truth=None, n_nroy: int = 1000, seed: int = 12345, points=None) -> xr.Dataset:
    """Per parameter: NROY range vs the variational and MCMC posteriors and the truth.

    Variables over ``parameter``: ``nroy_min``, ``nroy_max`` (of :func:`nroy_points`, or
    ``points``); ``truth``, ``truth_in_nroy_range``; ``variational_mean``, ``variational_std``
    (physical, linearised), ``variational_lo``/``_hi`` (mean +- 2 sigma in the control, mapped
    back), ``variational_in_nroy_range`` (the 2-sigma interval inside the NROY range);
    ``mcmc_mean``, ``mcmc_std``, ``mcmc_q025``, ``mcmc_q975``. Scalars: ``mcmc_nroy_fraction``
    (fraction of the MCMC samples that are NROY; at most 4000, a seeded subsample),
    ``variational_mean_nroy`` / ``_implausibility``, ``truth_nroy`` / ``truth_implausibility``,
    ``nroy_fraction`` (of the space), ``n_waves``.
    """
    if not hm.records:
        raise ValueError("no wave has been run yet: run the waves first")
    var, mc = _parts(results)
    names, d, log = hm.names, hm.d, _log_mask(hm)
    x = np.asarray(points, dtype=float) if points is not None else nroy_points(hm, n_nroy, seed)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"points must be (n, {d}), got {x.shape}")
    nan = np.full(d, np.nan)
    lo, hi = (x.min(0), x.max(0)) if len(x) else (nan, nan)
    P = ("parameter",)
    data = {
        "nroy_min": (P, lo, {"long_name": "minimum over NROY points"}),
        "nroy_max": (P, hi, {"long_name": "maximum over NROY points"}),
        "nroy_fraction": ((), hm.nroy_fraction, {"long_name": "NROY fraction of the space", "units": "1"}),
        "n_nroy_points": ((), len(x), {"long_name": "NROY points behind nroy_min / nroy_max"}),
    }
    if truth is not None:
        t = np.asarray(truth, dtype=float).reshape(d)
        it = float(hm.implausibility(t[None])[0])
        data.update({
            "truth": (P, t, {"long_name": "true parameter value"}),
            "truth_in_nroy_range": (P, ((t >= lo) & (t <= hi)).astype(np.int8), {"units": "1"}),
            "truth_nroy": ((), np.int8(it <= hm.cutoff), {"long_name": "truth is NROY after the last wave", "units": "1"}),
            "truth_implausibility": ((), it, {"long_name": "implausibility of the truth (nth rule, max over waves)"}),
        })
    if var is not None:
        mu_s, A = _var_gaussian(var, log)
        sd_s = np.sqrt(np.diag(A))
        vlo, vhi = _from_s(mu_s - 2 * sd_s, log), _from_s(mu_s + 2 * sd_s, log)
        mu = _from_s(mu_s, log)
        iv = float(hm.implausibility(mu[None])[0])
        data.update({
            "variational_mean": (P, mu, {"long_name": "variational posterior mean (mode)"}),
            "variational_std": (P, np.where(log, mu, 1.0) * sd_s, {"long_name": "variational std (linearised for log parameters)"}),
            "variational_lo": (P, vlo, {"long_name": "variational mean - 2 sigma (in ln x for log parameters)"}),
            "variational_hi": (P, vhi, {"long_name": "variational mean + 2 sigma (in ln x for log parameters)"}),
            "variational_in_nroy_range": (P, ((vlo >= lo) & (vhi <= hi)).astype(np.int8),
                                          {"long_name": "the 2-sigma interval lies inside the NROY range", "units": "1"}),
            "variational_mean_nroy": ((), np.int8(iv <= hm.cutoff), {"long_name": "variational mean is NROY", "units": "1"}),
            "variational_mean_implausibility": ((), iv, {"long_name": "implausibility of the variational mean"}),
        })
    if mc is not None:
        s = _mcmc_samples(mc)
        inside = hm.is_nroy(s)
        data.update({
            "mcmc_mean": (P, s.mean(0), {"long_name": "MCMC posterior mean"}),
            "mcmc_std": (P, s.std(0, ddof=1), {"long_name": "MCMC posterior std"}),
            "mcmc_q025": (P, np.quantile(s, 0.025, axis=0), {"long_name": "MCMC 2.5 % quantile"}),
            "mcmc_q975": (P, np.quantile(s, 0.975, axis=0), {"long_name": "MCMC 97.5 % quantile"}),
            "mcmc_nroy_fraction": ((), float(inside.mean()), {"long_name": "fraction of the MCMC samples that are NROY",
                                                               "units": "1"}),
            "mcmc_n_classified": ((), len(s), {"long_name": "MCMC samples classified"}),
        })
    return xr.Dataset(data, coords={"parameter": names, "unit": ("parameter", [hm.space.units[n] for n in names])},
                      attrs={"title": "final NROY vs variational and MCMC posteriors", "n_waves": hm.n_waves,
                             "cutoff": hm.cutoff, "nth": hm.nth})


def format_table(ds: xr.Dataset) -> str:
    """Markdown table of :func:`nroy_vs_posteriors` (one row per parameter) plus its scalars."""
    has = lambda k: k in ds  # noqa: E731
    head = ["parameter", "NROY range"]
    if has("truth"):
        head.append("truth")
    if has("variational_mean"):
        head.append("variational mean (+- 2 sigma)")
    if has("mcmc_mean"):
        head.append("MCMC mean (95 %)")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in ds["parameter"].values:
        r = ds.sel(parameter=p)
        u = str(r["unit"].values)
        cells = [f"{p}" + (f" [{u}]" if u and u != "-" else ""), f"{float(r['nroy_min']):.4g} .. {float(r['nroy_max']):.4g}"]
        if has("truth"):
            cells.append(f"{float(r['truth']):.4g}" + ("" if int(r["truth_in_nroy_range"]) else " (outside)"))
        if has("variational_mean"):
            cells.append(f"{float(r['variational_mean']):.4g} ({float(r['variational_lo']):.4g} .. {float(r['variational_hi']):.4g})")
        if has("mcmc_mean"):
            cells.append(f"{float(r['mcmc_mean']):.4g} ({float(r['mcmc_q025']):.4g} .. {float(r['mcmc_q975']):.4g})")
        rows.append("| " + " | ".join(cells) + " |")
    notes = [f"NROY fraction {float(ds['nroy_fraction']):.4g} after {ds.attrs['n_waves']} waves"]
    if has("truth_nroy"):
        notes.append(f"truth {'NROY' if int(ds['truth_nroy']) else 'RULED OUT'} (I = {float(ds['truth_implausibility']):.3g})")
    if has("variational_mean_nroy"):
        notes.append(f"variational mean {'NROY' if int(ds['variational_mean_nroy']) else 'RULED OUT'} "
                     f"(I = {float(ds['variational_mean_implausibility']):.3g})")
    if has("mcmc_nroy_fraction"):
        notes.append(f"{100 * float(ds['mcmc_nroy_fraction']):.1f} % of {int(ds['mcmc_n_classified'])} MCMC samples NROY")
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + f" (cutoff {ds.attrs['cutoff']:g}, nth {ds.attrs['nth']})."


def _ellipse(mu_s, A2, log2, k=2.0, n=200):
    """Physical points of the ``k``-sigma ellipse of ``N(mu_s, A2)`` in the control space."""
    t = np.linspace(0, 2 * np.pi, n)
    w, V = np.linalg.eigh(A2)
    circ = np.stack([np.cos(t), np.sin(t)])
    pts = mu_s[:, None] + k * V @ (np.sqrt(np.maximum(w, 0))[:, None] * circ)
    return _from_s(pts.T, log2)


def _zoom(hm, arrays, pad: float = 0.15) -> np.ndarray:
    """``(d, 2)`` axis limits: the span of ``arrays`` (rows of physical points) in the control
    space (``ln x`` for log parameters), padded by ``pad`` of it each side, within the bounds."""
    log = _log_mask(hm)
    b = np.asarray(hm.space.bounds, dtype=float)
    pts = [np.atleast_2d(np.asarray(a, dtype=float)) for a in arrays if a is not None and np.size(a)]
    if not pts:
        return b
    sp = _to_s(np.concatenate(pts), log)
    lo, hi = np.nanmin(sp, 0), np.nanmax(sp, 0)
    bs = _to_s(b.T, log)
    w = np.maximum(hi - lo, 1e-3 * (bs[1] - bs[0]))
    lo, hi = np.maximum(lo - pad * w, bs[0]), np.minimum(hi + pad * w, bs[1])
    return np.stack([_from_s(lo, log), _from_s(hi, log)], axis=1)


def _log_ticks(axis, lim):
    """Nice linear tick values on a (zoomed) log axis: a zoomed axis may hold no power of 10."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter, NullLocator

    v = MaxNLocator(4).tick_values(*lim)
    v = v[(v >= lim[0]) & (v <= lim[1]) & (v > 0)]
    if lim[1] / lim[0] > 30 or len(v) < 2:  # wide: the default decades
        return
    axis.set_major_locator(FixedLocator(v))
    axis.set_major_formatter(FormatStrFormatter("%.3g"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _mass_levels(H, fracs=(0.68, 0.95)):
    """Density levels of a 2-D histogram enclosing the given mass fractions (highest first)."""
    h = np.sort(H.ravel())[::-1]
    c = np.cumsum(h) / max(h.sum(), 1e-300)
    lev = [h[min(np.searchsorted(c, f), len(h) - 1)] for f in fracs]
    return sorted(set(float(v) for v in lev if v > 0))


def plot_nroy_vs_posteriors(hm, results, truth=None, path=None, n_nroy: int = 1000, seed: int = 12345, points=None,
                            table: xr.Dataset | None = None):
    """Pairs plot: final-wave NROY points vs the variational and MCMC posteriors and the truth.

    Lower triangle: NROY points (grey), MCMC samples (blue dots, with contours enclosing
    68 % and 95 % of them), the variational 2-sigma ellipse (orange; Gaussian in ``ln x`` for
    log parameters), the truth (red star). Diagonal: NROY range (grey band) and NROY
    histogram, MCMC 95 % interval and mean, variational mean +- 2 sigma, truth (red line).
    The axes are zoomed onto NROY, the posteriors and the truth (the title gives the share of
    the space NROY is). Returns the figure (saved when ``path``).
    """
    import matplotlib.pyplot as plt

    var, mc = _parts(results)
    names, d, log = hm.names, hm.d, _log_mask(hm)
    x = np.asarray(points, dtype=float) if points is not None else nroy_points(hm, n_nroy, seed)
    ds = table if table is not None else nroy_vs_posteriors(hm, results, truth, points=x)
    s = _mcmc_samples(mc) if mc is not None else None
    if var is not None:
        mu_s, A = _var_gaussian(var, log)
    t = None if truth is None else np.asarray(truth, dtype=float).reshape(d)
    bounds = _zoom(hm, [x, s, t[None] if t is not None else None,
                        np.stack([ds["variational_lo"].values, ds["variational_hi"].values]) if var is not None else None])
    edges = [_from_s(np.linspace(*_to_s(bounds[j], log[j]), 31), log[j]) for j in range(d)]
    size = max(2.3 * d, 4.5)
    fig, axes = plt.subplots(d, d, figsize=(size + 0.5, size), squeeze=False, constrained_layout=True)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if i < j:
                ax.axis("off")
                continue
            if i == j:
                if len(x):
                    ax.axvspan(x[:, j].min(), x[:, j].max(), color="0.85", label="NROY range")
                    h, _ = np.histogram(x[:, j], edges[j])
                    ax.stairs(h / max(h.max(), 1), edges[j], color="0.4", lw=1)
                yl = 1.25
                if s is not None:
                    hs, _ = np.histogram(s[:, j], edges[j])
                    ax.stairs(hs / max(hs.max(), 1), edges[j], color="C0", lw=1)
                    q = np.quantile(s[:, j], [0.025, 0.975])
                    ax.errorbar(s[:, j].mean(), 1.08, xerr=[[s[:, j].mean() - q[0]], [q[1] - s[:, j].mean()]],
                                fmt="o", color="C0", ms=3, capsize=2, label="MCMC (95 %)")
                if var is not None:
                    m0 = float(ds["variational_mean"][j])
                    ax.errorbar(m0, 1.17, xerr=[[m0 - float(ds["variational_lo"][j])], [float(ds["variational_hi"][j]) - m0]],
                                fmt="s", color="C1", ms=3, capsize=2, label="variational +- 2 sigma")
                if t is not None:
                    ax.axvline(t[j], color="r", lw=1.2, label="truth")
                ax.set_ylim(0, yl)
                ax.set_yticks([])
                if i == 0:
                    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
            else:
                if len(x):
                    ax.plot(x[:, j], x[:, i], ".", color="0.6", ms=2, alpha=0.5, rasterized=True)
                if s is not None:
                    ax.plot(s[:, j], s[:, i], ".", color="C0", ms=1.5, alpha=0.3, rasterized=True)
                    H, ex, ey = np.histogram2d(s[:, j], s[:, i], bins=[edges[j], edges[i]])
                    lev = _mass_levels(H)
                    if len(lev) and H.max() > 0:
                        cx = np.sqrt(ex[1:] * ex[:-1]) if log[j] else 0.5 * (ex[1:] + ex[:-1])
                        cy = np.sqrt(ey[1:] * ey[:-1]) if log[i] else 0.5 * (ey[1:] + ey[:-1])
                        ax.contour(cx, cy, H.T, levels=lev + [H.max() + 1], colors="C0", linewidths=0.8)
                if var is not None:
                    idx = [j, i]
                    e = _ellipse(mu_s[idx], A[np.ix_(idx, idx)], log[idx])
                    ax.plot(e[:, 0], e[:, 1], color="C1", lw=1.2)
                if t is not None:
                    ax.plot(t[j], t[i], "*", color="r", ms=10, mec="w", mew=0.6)
                ax.set_ylim(*bounds[i])
                if log[i]:
                    ax.set_yscale("log")
                    _log_ticks(ax.yaxis, bounds[i])
            ax.set_xlim(*bounds[j])
            if log[j]:
                ax.set_xscale("log")
                _log_ticks(ax.xaxis, bounds[j])
            ax.tick_params(labelsize=6)
            u = hm.space.units[names[j]]
            if i == d - 1:
                ax.set_xlabel(f"{names[j]} [{u}]" if u and u != "-" else names[j], fontsize=8)
            if j == 0 and i != 0:
                u = hm.space.units[names[i]]
                ax.set_ylabel(f"{names[i]} [{u}]" if u and u != "-" else names[i], fontsize=8)
    notes = [f"NROY after {hm.n_waves} waves: {100 * hm.nroy_fraction:.3g} % of the space (grey: {len(x)} NROY points; "
             "axes zoomed)"]
    if "truth_nroy" in ds:
        notes.append(f"truth (red) {'NROY' if int(ds['truth_nroy']) else 'RULED OUT'}")
    if "mcmc_nroy_fraction" in ds:
        notes.append(f"MCMC (blue; 68/95 % contours) {100 * float(ds['mcmc_nroy_fraction']):.0f} % NROY")
    if "variational_mean_nroy" in ds:
        notes.append(f"variational 2-sigma ellipse (orange), mean {'NROY' if int(ds['variational_mean_nroy']) else 'not NROY'}")
    fig.suptitle("; ".join(notes[:2]) + "\n" + "; ".join(notes[2:]), fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
