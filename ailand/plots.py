"""Plots of model output (matplotlib, Agg-safe)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

MAIN_VARIABLES = [
    ("swvl1", 1.0, "m3 m-3"),
    ("swvl3", 1.0, "m3 m-3"),
    ("stl1", 1.0, "K"),
    ("sd", 1000.0, "kg m-2"),
    ("Qle", 1.0, "W m-2"),
    ("Qh", 1.0, "W m-2"),
    ("Qs", 86400.0, "mm d-1"),
    ("albedo", 1.0, "-"),
]


def finish(fig, path=None):
    """Tight layout; save to ``path`` (PNG, 110 dpi) and close when given. Returns ``fig``."""
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_simulation(ds: xr.Dataset, path=None, variables=MAIN_VARIABLES):
    """Daily means of the main variables, one panel per variable and site (sites as columns)."""
    if "member" in ds.dims:
        ds = ds.isel(member=0)
    daily = ds.resample(time="1D").mean() if ds.sizes["time"] > 1 else ds
    sites = list(ds["site"].values)
    variables = [v for v in variables if v[0] in ds]
    fig, axes = plt.subplots(
        len(variables), len(sites), figsize=(2.2 * len(sites) + 1, 1.6 * len(variables) + 0.8),
        sharex=True, sharey="row", squeeze=False,
    )
    for j, site in enumerate(sites):
        for i, (name, scale, unit) in enumerate(variables):
            ax = axes[i, j]
            y = daily[name].sel(site=site) * scale
            ax.plot(daily["time"].values, y.values, lw=0.7, color=f"C{i}")
            if i == 0:
                ax.set_title(str(site), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name}\n[{unit}]", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        for lab in ax.get_xticklabels():
            lab.set_rotation(45)
    fig.suptitle(f"ToyEcLand daily means ({str(ds.time.values[0])[:10]} to {str(ds.time.values[-1])[:10]})", fontsize=10)
    return finish(fig, path)
