"""The training data of the dust NN: worlds of four years, the emission analysis as the target.

For each year and each window (default: four 10-day windows starting 1 January, 1 April,
1 July and 1 October: winter snow, spring, the summer haboob season, autumn), the driver

1. makes the world (:func:`ailand.dust.make_world`: one set of static fields from ``seed`` for
   every window, the weather seeded by ``seed``, year and window) and runs the toy ecLand on
   it (``swvl1, snowc, sd, albedo``);
2. runs the emission inversion of :mod:`calibration.dust_inversion` on it
   (:class:`~calibration.dust_inversion.DustTwin`: hidden truth, synthetic satellite AOD,
   the LETKF smoother with 21 members) and takes the **emission analysis** at every step:
   analysed scaling factor of the step's period x the prior (scheme) emission [kg m-2 s-1],
   the hourly form of ``emission_analysis`` in the product;
3. builds the labelled table (:func:`ailand.dust.nn.build_table`): every ``stride``-th step
   in the training years, every step in the test year (for the diurnal cycle).

The last year is the test year; the others are split 90/10 into train / validation rows
(:func:`ailand.dust.nn.split_by_year`). The test year's worlds, land runs and chains are
kept for the maps, the time series and the coupled aerosol runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd
import xarray as xr

from ailand.dust import make_statics, make_world, run_land
from ailand.dust.nn import build_table, concat_tables, split_by_year
from calibration.dust_inversion import DustTwin, InversionConfig, SatelliteConfig
from calibration.dust_inversion.product import hourly_factors
from calibration.progress import as_progress

__all__ = ["DataConfig", "DustNNData", "make_data", "test_year_runs", "NN_REGION", "QUICK_REGION"]

#: the default region of the NN experiment: 12-57N, 6W-57E at 3 degrees (15 x 21 cells, 258 land),
#: Sahara, Arabia (Mezaira), the Mediterranean and central Europe (Berlin)
NN_REGION = {"lat_range": (12.0, 57.0), "lon_range": (-6.0, 57.0), "resolution": 3.0}
#: a small region for tests and --quick runs (9 x 10 cells at 5 degrees; still holds Mezaira and Berlin)
QUICK_REGION = {"lat_range": (10.0, 55.0), "lon_range": (5.0, 55.0), "resolution": 5.0}


@dataclass
class DataConfig:
    """years : the first ones train, the last one tests; windows : ``(MM-DD, days)`` per year;
    stride : keep every ``stride``-th hour in the training years; region : grid;
    extra : extra predictors (``u_excess_cubed``); seed; members : inversion ensemble size."""

    years: tuple = (2017, 2018, 2019, 2020)
    windows: tuple = (("01-01", 10), ("04-01", 10), ("07-01", 10), ("10-01", 10))
    stride: int = 3
    region: dict = field(default_factory=lambda: dict(NN_REGION))
    extra: tuple = ("u_excess_cubed",)
    seed: int = 0
    members: int = 21
    val_fraction: float = 0.1

    def __post_init__(self):
        self.years = tuple(int(y) for y in self.years)
        self.windows = tuple((str(a), int(b)) for a, b in self.windows)
        if len(set(self.years)) < 2:
            raise ValueError(f"years must hold at least two distinct years (train and test), got {self.years}")
        for a, b in self.windows:
            pd.Timestamp(f"2001-{a}")  # raises on a bad MM-DD
            if b < 2:
                raise ValueError(f"a window needs at least 2 days, got {b} at {a}")


@dataclass
class DustNNData:
    """Tables (``train``, ``val``, ``test``) and the test year's ``worlds``, ``lands``,
    ``chains``, ``targets`` ``(time, lat, lon)`` [kg m-2 s-1] and ``sites`` (AERONET) per window."""

    config: DataConfig
    train: xr.Dataset
    val: xr.Dataset
    test: xr.Dataset
    worlds: list
    lands: list
    chains: list
    targets: list
    sites: list
    wall_s: float = 0.0

    @property
    def test_year(self) -> int:
        return self.config.years[-1]


_STATICS: dict = {}


def _statics(cfg: DataConfig):
    """The static fields of every window: one map of soils, vegetation and sources (``seed``)."""
    key = (str(sorted(cfg.region.items())), int(cfg.seed))
    if key not in _STATICS:
        _STATICS.clear()
        _STATICS[key] = make_statics(seed=int(cfg.seed), **cfg.region)
    return _STATICS[key]


def _window(cfg: DataConfig, y: int, k: int):
    """World, land run, twin and the hourly emission analysis of window ``k`` of year ``y``
    (the same static fields for every window; the weather seeded by ``seed``, year and window)."""
    mmdd, days = cfg.windows[k]
    start = pd.Timestamp(f"{y}-{mmdd}")
    end = start + pd.Timedelta(days=days - 1)
    wseed = int(cfg.seed) * 100000 + int(y) * 10 + k
    world = make_world(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}", seed=wseed, statics=_statics(cfg))
    land = run_land(world, outputs=("swvl1", "snowc", "sd", "albedo"))
    twin = DustTwin(world=world, land=land, seed=wseed, satellite=SatelliteConfig(superob=1))
    res = twin.invert(InversionConfig(members=cfg.members, seed=wseed), progress=False)
    target = hourly_factors(res) * twin.chain.emission.numpy()
    da = xr.DataArray(target, dims=("time", "lat", "lon"),
                      coords={"time": twin.chain.prior["time"].values, "lat": world["lat"], "lon": world["lon"]},
                      attrs={"units": "kg m-2 s-1", "long_name": "emission analysis (LETKF smoother), hourly"})
    return world, land, twin, da


def test_year_runs(config: DataConfig, progress=False) -> dict:
    """The test year's worlds, land runs, chains, targets and stations again (deterministic:
    the same as :func:`make_data` made), for an evaluation that reads saved tables."""
    cfg = config
    p = as_progress(progress)
    keep = {"worlds": [], "lands": [], "chains": [], "targets": [], "sites": []}
    with p.bar(total=len(cfg.windows), desc="test-year worlds", unit="window") as bar:
        for k in range(len(cfg.windows)):
            world, land, twin, da = _window(cfg, cfg.years[-1], k)
            for key, v in (("worlds", world), ("lands", land), ("chains", twin.chain), ("targets", da),
                           ("sites", twin.sites)):
                keep[key].append(v)
            bar.update(1)
    return keep


def make_data(config: DataConfig | None = None, progress=False) -> DustNNData:
    """Build the worlds, the emission analysis and the tables (see the module docstring)."""
    import time

    cfg = config or DataConfig()
    p = as_progress(progress)
    t0 = time.perf_counter()
    tables, keep = [], {"worlds": [], "lands": [], "chains": [], "targets": [], "sites": []}
    n = len(cfg.years) * len(cfg.windows)
    with p.bar(total=n, desc="worlds + land + emission analysis", unit="window") as bar:
        for y in cfg.years:
            for k in range(len(cfg.windows)):
                world, land, twin, da = _window(cfg, y, k)
                test = y == cfg.years[-1]
                tables.append(build_table(world, land, da, extra=cfg.extra, stride=1 if test else cfg.stride))
                if test:
                    for key, v in (("worlds", world), ("lands", land), ("chains", twin.chain), ("targets", da),
                                   ("sites", twin.sites)):
                        keep[key].append(v)
                bar.update(1)
    table = concat_tables(tables)
    table.attrs["data_config"] = str(asdict(cfg))
    train, val, test = split_by_year(table, cfg.years[-1], cfg.val_fraction, cfg.seed)
    return DustNNData(cfg, train, val, test, wall_s=time.perf_counter() - t0, **keep)
