"""Figures of Morris and Sobol results (matplotlib, no pyplot state: safe under Agg and in scripts).

Every function takes a result Dataset from :func:`~sensitivity.morris_analyze` or
:func:`~sensitivity.sobol_analyze`, returns a ``matplotlib.figure.Figure`` and, with
``path=``, also saves it. Outputs are chosen with ``sel=`` (``Dataset.sel`` keywords,
e.g. ``{"variable": "Qle", "site": 0}``).

- :func:`mu_star_sigma` - Morris ``mu*`` vs ``sigma`` scatter, one panel per output
- :func:`index_bars` - ``S1``/``ST`` bars with CIs (Morris: ``mu*`` with CI), one panel per output
- :func:`heatmap` - parameter x output heatmap of one index
- :func:`time_heatmap` - parameter x time heatmap of one index for one variable
- :func:`screening_figures` - the standard set of the above for a screening run, saved as PNGs
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .outputs import _stack_labels

__all__ = ["mu_star_sigma", "index_bars", "heatmap", "time_heatmap", "screening_figures"]

_TIME_DIMS = ("month", "time", "season", "dayofyear", "day", "hour", "step")


def _save(fig: Figure, path) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def _select(result: xr.Dataset, sel: dict | None) -> xr.Dataset:
    if not sel:
        return result
    return result.sel({k: v for k, v in sel.items()})


def _sel_text(sel: dict | None) -> str:
    if not sel:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sel.items())


def _units(one: xr.Dataset, var: str) -> str:
    """Units of the panel's output: the ``units`` coordinate (per variable) if scalar, else the attrs."""
    if "units" in one.coords and one["units"].ndim == 0:
        return str(one["units"].values)
    u = str(one[var].attrs.get("units", ""))
    return u.replace(" per unit-cube range", "").replace("output units (see coordinate 'units')", "output units")


def _suptitle(fig: Figure, panels, sel) -> None:
    parts = []
    if _sel_text(sel):
        parts.append(_sel_text(sel))
    if panels and panels[0][2] > len(panels):
        parts.append(f"first {len(panels)} of {panels[0][2]} outputs (choose with sel=)")
    if parts:
        fig.suptitle("; ".join(parts), fontsize=9)


def _out_dims(ds: xr.Dataset, var: str) -> list[str]:
    return [d for d in ds[var].dims if d not in ("parameter", "parameter_")]


def _panels(ds: xr.Dataset, var: str, max_panels: int):
    """Yield ``(label, Dataset over parameter only)`` for each output, at most ``max_panels``."""
    dims = _out_dims(ds, var)
    shape = [ds.sizes[d] for d in dims]
    labels = _stack_labels(ds.coords, dims, shape)
    total = len(labels)
    for i, label in enumerate(labels[:max_panels]):
        idx = dict(zip(dims, np.unravel_index(i, shape))) if dims else {}
        yield label, ds.isel({k: int(v) for k, v in idx.items()}), total


def _grid(n: int, width: float = 4.0, height: float = 3.2):
    ncols = min(n, 4)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _method(result: xr.Dataset) -> str:
    if result.attrs.get("method") in ("morris", "sobol"):
        return result.attrs["method"]
    return "morris" if "mu_star" in result else "sobol"


def mu_star_sigma(
    result: xr.Dataset,
    sel: dict | None = None,
    max_panels: int = 12,
    annotate: bool | int = True,
    path: str | Path | None = None,
) -> Figure:
    """Morris ``mu*`` (x, with CI bars) against ``sigma`` (y), one panel per output.

    ``annotate``: name every point (True), none (False), or only the ``k`` largest ``mu*``
    of each panel (an int ``k``, which keeps crowded panels readable).

    Dashed lines mark ``sigma / mu* = 0.1, 0.5, 1`` (nearly linear, monotonic,
    non-linear/interacting; Garcia Sanchez et al. 2014). At most ``max_panels`` outputs
    are drawn (select with ``sel``).
    """
    ds = _select(result, sel)
    if "mu_star" not in ds:
        raise ValueError("mu_star_sigma needs a Morris result (mu_star, sigma)")
    panels = list(_panels(ds, "mu_star", max_panels))
    fig, axes = _grid(len(panels))
    names = [str(p) for p in ds["parameter"].values]
    for ax, (label, one, total) in zip(axes, panels):
        units = _units(one, "mu_star")
        ms, sg = one["mu_star"].values, one["sigma"].values
        conf = one["mu_star_conf"].values if "mu_star_conf" in one else None
        ax.errorbar(ms, sg, xerr=conf, fmt="o", ms=4, capsize=2, lw=0.8)
        top = np.nanmax(np.r_[ms, sg, 1e-300])
        for ratio, style in ((0.1, ":"), (0.5, "--"), (1.0, "-")):
            ax.plot([0, top * 1.05], [0, ratio * top * 1.05], color="0.6", ls=style, lw=0.7, label=f"sigma/mu* = {ratio:g}")
        if ax is axes[0]:
            ax.legend(fontsize=6, loc="upper left")
        if annotate is not False:
            top_k = len(names) if annotate is True else int(annotate)
            labelled = set(np.argsort(-np.nan_to_num(ms, nan=-np.inf))[:top_k].tolist())
            for i, (nm, a, b) in enumerate(zip(names, ms, sg)):
                if i in labelled and np.isfinite(a) and np.isfinite(b):
                    ax.annotate(nm, (a, b), fontsize=7, xytext=(2, 2), textcoords="offset points")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(f"mu* [{units}]", fontsize=8)
        ax.set_ylabel(f"sigma [{units}]", fontsize=8)
    _suptitle(fig, panels, sel)
    return _save(fig, path)


def index_bars(
    result: xr.Dataset,
    sel: dict | None = None,
    max_panels: int = 12,
    path: str | Path | None = None,
) -> Figure:
    """Bars of ``S1`` and ``ST`` with their CIs (Morris: ``mu*`` with CI), one panel per output."""
    ds = _select(result, sel)
    method = _method(ds)
    key = "mu_star" if method == "morris" else "ST"
    panels = list(_panels(ds, key, max_panels))
    fig, axes = _grid(len(panels), width=max(4.0, 0.35 * ds.sizes["parameter"] + 1.5))
    names = [str(p) for p in ds["parameter"].values]
    x = np.arange(len(names))
    for ax, (label, one, total) in zip(axes, panels):
        if method == "morris":
            ax.bar(x, one["mu_star"].values, yerr=one["mu_star_conf"].values, capsize=2, color="C0", label="mu*")
            ax.set_ylabel(f"mu* [{_units(one, 'mu_star')}]", fontsize=8)
        else:
            w = 0.4
            ax.bar(x - w / 2, one["S1"].values, w, yerr=one["S1_conf"].values, capsize=2, color="C0", label="S1")
            ax.bar(x + w / 2, one["ST"].values, w, yerr=one["ST_conf"].values, capsize=2, color="C1", label="ST")
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_ylabel("index", fontsize=8)
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    _suptitle(fig, panels, sel)
    return _save(fig, path)


def _default_index(result: xr.Dataset, index: str | None) -> str:
    if index is None:
        index = "mu_star" if _method(result) == "morris" else "ST"
    if index not in result:
        raise ValueError(f"result has no {index!r}; it has {list(result.data_vars)}")
    return index


def heatmap(
    result: xr.Dataset,
    index: str | None = None,
    sel: dict | None = None,
    normalize: bool | None = None,
    max_outputs: int = 400,
    path: str | Path | None = None,
) -> Figure:
    """Parameter (rows) x output (columns, all output dims stacked) heatmap of one index.

    ``index`` defaults to ``mu_star`` (Morris) or ``ST`` (Sobol). ``normalize`` (default
    True for Morris) divides each output's column by its largest value so outputs of
    different units share one colour scale.
    """
    ds = _select(result, sel)
    index = _default_index(ds, index)
    da = ds[index]
    dims = _out_dims(ds, index)
    da = da.transpose("parameter", *dims)
    d = da.sizes["parameter"]
    v = da.values.reshape(d, -1)
    labels = _value_labels(ds, dims)
    if v.shape[1] > max_outputs:
        raise ValueError(f"{v.shape[1]} outputs is too many for one heatmap (max_outputs={max_outputs}); use sel=")
    if normalize is None:
        normalize = _method(ds) == "morris"
    if normalize:
        top = np.nanmax(np.abs(v), axis=0)
        v = v / np.where(top > 0, top, 1.0)
    names = [str(p) for p in ds["parameter"].values]
    fig = Figure(figsize=(min(max(6.0, 2.5 + 0.16 * v.shape[1]), 24), max(3.0, 1.8 + 0.3 * d)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(v, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(np.arange(d), names, fontsize=7)
    step = max(1, v.shape[1] // 80)
    ax.set_xticks(np.arange(0, v.shape[1], step), labels[::step], rotation=90, fontsize=6)
    ax.set_xlabel(" | ".join(dims) if dims else "output", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{index}{' / max over parameters' if normalize else ''}")
    title = f"{index} by parameter and output"
    if _sel_text(sel):
        title += f" ({_sel_text(sel)})"
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _value_labels(ds: xr.Dataset, dims: list[str]) -> list[str]:
    """Tick labels of stacked outputs: coordinate values joined by ``|`` (dims named on the axis)."""
    if not dims:
        return [""]
    axes = [[_short(v) for v in (ds[d].values if d in ds.coords else np.arange(ds.sizes[d]))] for d in dims]
    idx = np.indices([len(a) for a in axes]).reshape(len(dims), -1).T
    return ["|".join(axes[k][i] for k, i in enumerate(row)) for row in idx]


def time_heatmap(
    result: xr.Dataset,
    index: str | None = None,
    time_dim: str | None = None,
    sel: dict | None = None,
    reduce: str = "mean",
    path: str | Path | None = None,
) -> Figure:
    """Parameter x time heatmap of one index for one variable (e.g. ST of monthly Qle).

    ``sel`` picks the variable (``{"variable": "Qle"}``; required when the result has
    several), ``time_dim`` defaults to the first of ``month, time, season, dayofyear,
    day, hour, step`` present; any remaining output dims (``site``...) are reduced
    with ``reduce`` (``"mean"`` or ``"max"``) and named in the title.
    """
    ds = _select(result, sel)
    index = _default_index(ds, index)
    da = ds[index]
    dims = _out_dims(ds, index)
    if time_dim is None:
        time_dim = next((d for d in _TIME_DIMS if d in dims), None)
        if time_dim is None:
            raise ValueError(f"no time-like dim among the output dims {dims}; pass time_dim=")
    if time_dim not in dims:
        raise ValueError(f"time_dim {time_dim!r} is not an output dim of {index}: {dims}")
    if "variable" in dims and ds.sizes["variable"] > 1:
        raise ValueError(
            f"{index} has {ds.sizes['variable']} variables; pick one with sel={{'variable': ...}} "
            f"(one of {[str(v) for v in ds['variable'].values]})"
        )
    other = [d for d in dims if d != time_dim]
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    if other:
        da = getattr(da, reduce)(other, skipna=True)
    da = da.transpose("parameter", time_dim)
    names = [str(p) for p in ds["parameter"].values]
    times = da[time_dim].values if time_dim in da.coords else np.arange(da.sizes[time_dim])
    fig = Figure(figsize=(min(3 + 0.45 * len(times), 20), 1.2 + 0.3 * len(names)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(da.values, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_yticks(np.arange(len(names)), names, fontsize=7)
    step = max(1, len(times) // 24)
    ax.set_xticks(np.arange(0, len(times), step), [_short(t) for t in times[::step]], rotation=45, fontsize=7)
    ax.set_xlabel(time_dim)
    fig.colorbar(im, ax=ax, label=index)
    what = _sel_text(sel)
    title = f"{index} over {time_dim}" + (f" ({what})" if what else "")
    if other:
        title += f"; {reduce} over {', '.join(other)}"
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _short(t) -> str:
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t, unit="D"))
    if isinstance(t, (float, np.floating)):
        return f"{t:g}"
    return str(t)


def screening_figures(
    result: xr.Dataset,
    out_dir: str | Path,
    time_variable: str | None = "Qle",
) -> dict[str, Path]:
    """Save the standard screening figures of a result with a ``variable`` output dim.

    For a result over ``(parameter, variable, *dims)`` (e.g. ``dims = (month, site)``
    from :func:`~sensitivity.monthly_means`), writes to ``out_dir``:

    - ``mu_star_sigma.png`` (Morris) or ``index_bars.png`` (Sobol): one panel per variable,
      the indices averaged over ``dims``;
    - ``heatmap_<dim>.png`` for each of ``dims``: parameter x (variable | dim) heatmap of
      ``mu_star`` (normalised per column) or ``ST``, averaged over the other dims;
    - ``time_<time_variable>.png``: parameter x time heatmap for ``time_variable`` (mean
      over the other dims), when the result has that variable and a time-like dim.

    Returns ``{figure name: path}``.
    """
    if "variable" not in result.dims:
        raise ValueError(f"screening_figures needs a 'variable' output dim; the result has dims {dict(result.sizes)}")
    out_dir = Path(out_dir)
    method = _method(result)
    index = "mu_star" if method == "morris" else "ST"
    dims = [d for d in _out_dims(result, index) if d != "variable"]
    paths: dict[str, Path] = {}

    def mean_over(ds: xr.Dataset, over: list[str]) -> xr.Dataset:
        return ds.mean(over, keep_attrs=True) if over else ds

    summary = mean_over(result, dims)
    note = f"indices averaged over {', '.join(dims)}" if dims else ""
    if method == "morris":
        name, fig = "mu_star_sigma", mu_star_sigma(summary, max_panels=summary.sizes["variable"], annotate=6)
    else:
        name, fig = "index_bars", index_bars(summary, max_panels=summary.sizes["variable"])
    if note:
        fig.suptitle(note + (" (CI bars: mean of the per-output CIs)" if method == "morris" else ""), fontsize=9)
    paths[name] = out_dir / f"{name}.png"
    _save(fig, paths[name])

    for dim in dims:
        other = [d for d in dims if d != dim]
        fig = heatmap(mean_over(result, other), index=index)
        if other:
            fig.axes[0].set_title(f"{index} by parameter and output (mean over {', '.join(other)})", fontsize=10)
        paths[f"heatmap_{dim}"] = out_dir / f"heatmap_{dim}.png"
        _save(fig, paths[f"heatmap_{dim}"])

    if time_variable is not None and time_variable in [str(v) for v in result["variable"].values]:
        if any(d in _TIME_DIMS for d in dims):
            key = f"time_{time_variable}"
            paths[key] = out_dir / f"{key}.png"
            time_heatmap(result, index=index, sel={"variable": time_variable}, path=paths[key])
    return paths
