"""Site networks: a few hundred synthetic flux-tower sites over climates, vegetation and soils.

Built on the existing generators: every network site starts from one of the ten sites of
``data/sites.csv`` (its *parent climate*), takes a vegetation type that grows in that climate
and a soil drawn from one of the HTESSEL/FAO texture classes, and is then jittered by
:func:`ailand.sites.perturbed_sites` (climate, LAI, cover). Its weather comes from
:func:`ailand.synthetic_forcing` like any site.

Each site is labelled with

* ``veg_type`` (one of :data:`ailand.sites.VEG_TYPES`), ``veg_class`` (``"high"`` or
  ``"low"``: ecLand's high- and low-vegetation split),
* ``soil_type`` (:func:`soil_type`: ecLand's texture classes ``coarse``, ``medium``,
  ``medium_fine``, ``fine``, ``very_fine`` from sand and clay fractions),
* ``koppen`` (Koppen-Geiger class, :func:`koppen_class`, Peel et al. 2007 rules) computed from
  the site's *own* monthly temperature and precipitation climatology
  (:func:`monthly_climatology`: the expected values of the weather generator for that site).

The Koppen-Geiger rules are those of the registry package ``climaclass`` (pure Python, no
dependencies; Peel, Finlayson & McMahon 2007 thresholds, Beck et al. 2018 legend); the
tests check it on textbook climates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .sites import VEG_TYPES, load_sites, perturbed_sites

__all__ = [
    "SOIL_TYPES", "KOPPEN_GROUPS", "soil_type", "koppen_class", "koppen_classes", "monthly_climatology",
    "climatology_from_forcing", "site_network", "check_network", "PARENT_VEGETATION", "VEGETATION",
]

#: ecLand / HTESSEL soil texture classes (FAO), from fine-earth sand and clay fractions
SOIL_TYPES = ("coarse", "medium", "medium_fine", "fine", "very_fine")

#: Koppen-Geiger main groups (first letter)
KOPPEN_GROUPS = ("A", "B", "C", "D", "E")

#: vegetation types that grow in each parent site's climate (the parent's own first)
PARENT_VEGETATION = {
    "FR-Fon": ("deciduous_broadleaf", "crops", "grassland", "evergreen_needleleaf"),
    "FI-Hyy": ("evergreen_needleleaf", "deciduous_needleleaf", "grassland"),
    "RU-Cok": ("tundra", "shrubland", "deciduous_needleleaf"),
    "US-Kon": ("grassland", "crops", "deciduous_broadleaf"),
    "IT-Noe": ("shrubland", "evergreen_broadleaf", "grassland", "crops"),
    "SN-Dhr": ("savanna", "grassland", "shrubland"),
    "TD-Bod": ("desert", "shrubland"),
    "CN-Tak": ("desert", "shrubland"),
    "GF-Guy": ("evergreen_broadleaf", "savanna", "crops"),
    "BE-Lon": ("crops", "grassland", "deciduous_broadleaf"),
}

#: typical (lai_min, lai_max [m2 m-2], cveg [-]) of each vegetation type in a humid climate
VEGETATION = {
    "deciduous_broadleaf": (0.5, 5.5, 0.95), "evergreen_needleleaf": (2.5, 3.5, 0.90),
    "deciduous_needleleaf": (0.3, 3.0, 0.85), "evergreen_broadleaf": (5.0, 6.5, 0.97),
    "tundra": (0.1, 1.2, 0.80), "grassland": (0.3, 3.0, 0.85), "shrubland": (0.6, 1.8, 0.60),
    "savanna": (0.2, 1.8, 0.45), "desert": (0.02, 0.15, 0.03), "crops": (0.2, 4.5, 0.80),
}

#: ecLand's high vegetation (trees) vs low vegetation (the rest)
HIGH_VEG_TYPES = ("deciduous_broadleaf", "evergreen_needleleaf", "deciduous_needleleaf", "evergreen_broadleaf")

# soil texture box the network draws from (the shipped emulator saw sand 0.10-0.92, clay 0.02-0.40)
_SAND_RANGE = (0.10, 0.92)
_CLAY_RANGE = (0.02, 0.40)
_ELEVATION_RANGE = (25.0, 1390.0)

_MONTH_MID_DOY = np.array([16.5, 46.0, 75.5, 106.0, 136.5, 167.0, 197.5, 228.5, 259.0, 289.5, 320.0, 350.5])
_DAYS_IN_MONTH = np.array([31, 28.25, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


# ----------------------------------------------------------------------------- soils
def soil_type(sand, clay) -> np.ndarray:
    """ecLand (HTESSEL, FAO) soil texture class of each site.

    sand, clay : arrays ``(S,)`` of fractions [-] (0-1). Returns a string array ``(S,)``:

    * ``coarse``: clay < 0.18 and sand > 0.65
    * ``medium``: 0.18 <= clay < 0.35 and sand >= 0.15, or clay < 0.18 and 0.15 <= sand <= 0.65
    * ``medium_fine``: clay < 0.35 and sand < 0.15
    * ``fine``: 0.35 <= clay < 0.60
    * ``very_fine``: clay >= 0.60
    """
    sand = np.asarray(sand, dtype=float)
    clay = np.asarray(clay, dtype=float)
    bad = ~np.isfinite(sand) | ~np.isfinite(clay) | (sand < 0) | (clay < 0) | (sand + clay > 1.0 + 1e-9)
    if bad.any():
        i = int(np.argmax(bad.ravel()))
        raise ValueError(f"soil_type: sand = {sand.ravel()[i]:g}, clay = {clay.ravel()[i]:g} is not a texture "
                         "(fractions must be finite, >= 0 and sum to <= 1)")
    out = np.full(sand.shape, "medium", dtype=object)
    out[(clay < 0.18) & (sand > 0.65)] = "coarse"
    out[(clay < 0.35) & (sand < 0.15)] = "medium_fine"
    out[(clay >= 0.35) & (clay < 0.60)] = "fine"
    out[clay >= 0.60] = "very_fine"
    return out


# ------------------------------------------------------------------------ climatology
def monthly_climatology(sites: xr.Dataset) -> xr.Dataset:
    """Expected monthly climatology of each site under the weather generator.

    The generator (:func:`ailand.synthetic_forcing`) makes daily-mean temperature
    ``t_mean + t_amp_seasonal cos(2 pi (doy - t_peak_doy) / 365.25)`` plus zero-mean noise, and
    precipitation whose expected daily amount is ``p_wet(d) A s(d)^0.3`` (``p_wet`` the
    seasonal wet-day probability, ``s`` the von Mises seasonality, ``A`` scaled to
    ``precip_annual``). This function returns those expectations per calendar month, so a
    site's Koppen class does not depend on one sampled year.

    sites : Dataset over ``site`` with the climate columns of ``data/sites.csv``.
    Returns a Dataset with ``temperature`` [degC] and ``precipitation`` [mm] over
    ``(site, month)``, month = 1..12.
    """
    from .forcing import _seasonality  # the generator's own seasonal shape

    need = ("t_mean", "t_amp_seasonal", "t_peak_doy", "precip_annual", "wet_day_fraction", "wet_peak_doy",
            "wet_concentration")
    missing = [k for k in need if k not in sites]
    if missing:
        raise ValueError(f"monthly_climatology: the sites lack climate fields {missing}")
    S = sites.sizes["site"]
    days = np.arange(3653) / 10.0 + 0.05  # day-of-year grid, 0.1 d
    month = np.clip(np.searchsorted(np.cumsum(_DAYS_IN_MONTH), days, side="right"), 0, 11)
    temp = np.empty((S, 12))
    prec = np.empty((S, 12))
    for j in range(S):
        g = {k: float(sites[k].values[j]) for k in need}
        t = g["t_mean"] + g["t_amp_seasonal"] * np.cos(2 * np.pi * (days + 1.0 - g["t_peak_doy"]) / 365.25)
        s = _seasonality(days + 1.0, g["wet_peak_doy"], g["wet_concentration"])
        daily = np.clip(g["wet_day_fraction"] * s, 0.0, 0.95) * s**0.3
        daily = daily * g["precip_annual"] / (daily.mean() * 365.25) if daily.mean() > 0 else daily * 0.0
        for k in range(12):
            sel = month == k
            temp[j, k] = t[sel].mean()
            prec[j, k] = daily[sel].mean() * _DAYS_IN_MONTH[k]
    return xr.Dataset(
        {"temperature": (("site", "month"), temp, {"units": "degC", "long_name": "monthly mean air temperature"}),
         "precipitation": (("site", "month"), prec, {"units": "mm", "long_name": "monthly total precipitation"})},
        coords={"site": sites["site"].values, "month": np.arange(1, 13)},
        attrs={"source": "expected values of ailand.synthetic_forcing"},
    )


def climatology_from_forcing(forcing: xr.Dataset) -> xr.Dataset:
    """Monthly climatology of a forcing Dataset (``Tair`` [K], ``Rainf + Snowf`` [kg m-2 s-1]
    over ``(time, site)``): mean temperature [degC] and mean monthly total precipitation [mm]
    per calendar month, averaged over the years present. Same layout as
    :func:`monthly_climatology`. Months absent from the record are NaN."""
    for v in ("Tair", "Rainf", "Snowf"):
        if v not in forcing:
            raise ValueError(f"climatology_from_forcing: forcing lacks {v}")
    t = forcing["Tair"].transpose("time", "site") - 273.15
    p = (forcing["Rainf"] + forcing["Snowf"]).transpose("time", "site") * 86400.0  # mm d-1
    month = forcing["time"].dt.month
    temp = t.groupby(month).mean("time")
    daily = p.groupby(month).mean("time")
    prec = daily * xr.DataArray(_DAYS_IN_MONTH[daily["month"].values - 1], dims="month")
    full = {"month": np.arange(1, 13)}
    return xr.Dataset(
        {"temperature": temp.reindex(full).transpose("site", "month").assign_attrs(units="degC", long_name="monthly mean air temperature"),
         "precipitation": prec.reindex(full).transpose("site", "month").assign_attrs(units="mm", long_name="monthly total precipitation")},
        attrs={"source": "climatology of a forcing record"},
    )


# --------------------------------------------------------------------------- Koppen
def koppen_class(temperature, precipitation, lat: float | None = None) -> str:
    """Koppen-Geiger class (e.g. ``"Cfb"``) of one 12-month climatology.

    temperature : 12 monthly means [degC], January..December; precipitation : 12 monthly
    totals [mm]; lat : latitude [degrees north] (decides which half-year is summer; without
    it the warmer half-year is summer). Rules of Peel et al. (2007) as implemented by the
    ``climaclass`` package: B (arid) first when MAP < 10 P_th, then A (coldest month >= 18 C),
    C (warmest > 10 C, coldest > 0 C), D (warmest > 10 C, coldest <= 0 C), E (warmest <= 10 C).
    """
    from climaclass import MonthlyClimate
    from climaclass.koppen import classify

    t = np.asarray(temperature, dtype=float).ravel()
    p = np.asarray(precipitation, dtype=float).ravel()
    if t.size != 12 or p.size != 12:
        raise ValueError(f"koppen_class needs 12 monthly values each, got {t.size} temperatures and {p.size} precipitation totals")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("koppen_class: the climatology has NaN/inf values (a month without data?)")
    if (p < 0).any():
        raise ValueError(f"koppen_class: precipitation must be >= 0 mm, got {p.min():g}")
    lat = None if lat is None else float(lat)
    return classify(MonthlyClimate(temp=t.tolist(), precip=p.tolist(), latitude=lat)).code


def koppen_classes(climatology: xr.Dataset, lat=None) -> np.ndarray:
    """Koppen-Geiger class of every site of a :func:`monthly_climatology` Dataset; ``lat``
    ``(S,)`` [degrees north] or None. Returns a string array ``(S,)``."""
    T = climatology["temperature"].transpose("site", "month").values
    P = climatology["precipitation"].transpose("site", "month").values
    lat = np.full(T.shape[0], None) if lat is None else np.asarray(lat, dtype=float)
    return np.array([koppen_class(T[j], P[j], lat[j]) for j in range(T.shape[0])], dtype=object)


# --------------------------------------------------------------------------- network
def site_network(n_sites: int = 300, seed: int = 0, parents=None, spread: float = 0.7,
                 position_jitter: float = 3.0) -> xr.Dataset:
    """A seeded network of ``n_sites`` synthetic flux-tower sites.

    For each site (all seeded by ``seed``):

    1. a parent climate: one of ``parents`` (default the ten sites of ``data/sites.csv``),
       evenly in turn then shuffled;
    2. a vegetation type that grows there (:data:`PARENT_VEGETATION`; the parent's own with
       probability 1/2), with the parent's LAI and cover when it is the parent's own type,
       else :data:`VEGETATION`'s, scaled down in dry climates by ``clip(P / 600 mm, 0.15, 1)``;
    3. a soil: a texture class drawn evenly among ``coarse, medium, medium_fine, fine``, then
       sand and clay uniformly inside it (within sand 0.10-0.92, clay 0.02-0.40);
    4. climate, LAI and cover jittered by :func:`ailand.sites.perturbed_sites` with ``spread``
       (1 = the spread of the emulator's synthetic training sites); position jittered by
       ``position_jitter`` degrees (so a map shows the sites apart);
    5. labels: ``koppen`` from the site's own :func:`monthly_climatology`, ``soil_type``,
       ``veg_class`` (high/low), ``parent``.

    Returns a Dataset like :func:`ailand.load_sites` (dim ``site``, names ``NET-0001``...),
    plus coordinates ``parent``, ``koppen``, ``koppen_group`` (first letter), ``soil_type``,
    ``veg_class`` and the monthly climatology (``clim_temperature`` [degC],
    ``clim_precipitation`` [mm], dims ``(site, month)``). :func:`ailand.synthetic_forcing` takes it.
    """
    if int(n_sites) != n_sites or n_sites < 2:
        raise ValueError(f"n_sites must be an integer >= 2, got {n_sites}")
    if not spread >= 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    n_sites = int(n_sites)
    base = load_sites(parents)
    unknown = [p for p in base["site"].values if p not in PARENT_VEGETATION]
    if unknown:
        raise ValueError(f"site_network: no vegetation list for parent(s) {unknown}; parents must be among {list(PARENT_VEGETATION)}")
    rng = np.random.default_rng([int(seed), 17])
    names = list(base["site"].values)
    order = np.resize(np.arange(len(names)), n_sites)
    rng.shuffle(order)
    rows = base.isel(site=order).copy(deep=True)
    vt = np.empty(n_sites, dtype=object)
    lai_min = rows["lai_min"].values.copy()
    lai_max = rows["lai_max"].values.copy()
    cveg = rows["cveg"].values.copy()
    for i, k in enumerate(order):
        options = PARENT_VEGETATION[names[k]]
        own = rng.random() < 0.5 or len(options) == 1
        v = options[0] if own else options[1 + rng.integers(len(options) - 1)]
        vt[i] = v
        if v != str(base["veg_type"].values[k]):
            lo, hi, cv = VEGETATION[v]
            f = float(np.clip(base["precip_annual"].values[k] / 600.0, 0.15, 1.0))
            lai_min[i], lai_max[i], cveg[i] = lo * f, max(hi * f, lo * f + 0.1), min(cv * np.sqrt(f), 0.97)
    rows["lai_min"].values[:] = lai_min
    rows["lai_max"].values[:] = lai_max
    rows["cveg"].values[:] = cveg
    rows = rows.assign_coords(veg_type=("site", vt), site=np.array([f"P{i}" for i in range(n_sites)], dtype=object))
    jit = perturbed_sites(rows, copies=1, seed=int(seed), scale=spread).drop_vars("parent")
    sand, clay = _draw_soils(rng, n_sites)
    jit["sand"].values[:] = sand
    jit["clay"].values[:] = clay
    jit["elevation"].values[:] = np.clip(jit["elevation"].values, *_ELEVATION_RANGE)
    jit["lat"].values[:] = np.clip(jit["lat"].values + position_jitter * rng.standard_normal(n_sites), -60.0, 75.0)
    jit["lon"].values[:] = (jit["lon"].values + 2 * position_jitter * rng.standard_normal(n_sites) + 180.0) % 360.0 - 180.0
    jit["lai_max"].values[:] = np.maximum(jit["lai_max"].values, jit["lai_min"].values + 0.05)
    site_names = np.array([f"NET-{i + 1:04d}" for i in range(n_sites)], dtype=object)
    jit = jit.assign_coords(site=site_names)
    jit["site"].attrs = {"long_name": "site code (synthetic network)", "units": "-"}
    clim = monthly_climatology(jit)
    kg = koppen_classes(clim, jit["lat"].values)
    jit = jit.assign_coords(
        parent=("site", np.array([names[k] for k in order], dtype=object)),
        koppen=("site", kg),
        koppen_group=("site", np.array([c[0] for c in kg], dtype=object)),
        soil_type=("site", soil_type(sand, clay)),
        veg_class=("site", np.array(["high" if v in HIGH_VEG_TYPES else "low" for v in vt], dtype=object)),
        climate=("site", np.array([f"Koppen {c}" for c in kg], dtype=object)),
        long_name=("site", np.array([f"synthetic {v} site ({names[k]} climate)" for v, k in zip(vt, order)], dtype=object)),
    )
    jit["parent"].attrs = {"long_name": "parent site whose climate the site jitters", "units": "-"}
    jit["koppen"].attrs = {"long_name": "Koppen-Geiger class (Peel et al. 2007) of the site's monthly climatology", "units": "-"}
    jit["koppen_group"].attrs = {"long_name": "Koppen-Geiger main group (first letter)", "units": "-"}
    jit["soil_type"].attrs = {"long_name": "ecLand/HTESSEL (FAO) soil texture class", "units": "-"}
    jit["veg_class"].attrs = {"long_name": "ecLand vegetation class: high (trees) or low", "units": "-"}
    jit["clim_temperature"] = clim["temperature"]
    jit["clim_precipitation"] = clim["precipitation"]
    jit.attrs = {"title": "ailand synthetic site network", "seed": int(seed), "spread": float(spread),
                 "parents": ",".join(names), "n_sites": n_sites}
    check_network(jit)
    return jit


def _draw_soils(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sand, clay)`` ``(n,)``: a class among coarse/medium/medium_fine/fine evenly, then a
    uniform texture inside it and inside the network's texture box (rejection)."""
    classes = np.resize(np.arange(4), n)
    rng.shuffle(classes)
    sand, clay = np.empty(n), np.empty(n)
    for i, c in enumerate(classes):
        for _ in range(10000):
            s, k = rng.uniform(*_SAND_RANGE), rng.uniform(*_CLAY_RANGE)
            if s + k <= 0.95 and soil_type([s], [k])[0] == SOIL_TYPES[c]:
                break
        sand[i], clay[i] = s, k
    return sand, clay


def check_network(sites: xr.Dataset) -> xr.Dataset:
    """Check a site network at the door: a ``site`` dim with unique names and no NaN/inf in
    any numeric static field. Raises ``ValueError`` naming the field and the first bad
    site; returns ``sites``."""
    if not isinstance(sites, xr.Dataset) or "site" not in sites.dims:
        raise ValueError("a site network must be an xarray Dataset with a 'site' dim (e.g. ailand.network.site_network())")
    names = pd.Index(sites["site"].values)
    if names.has_duplicates:
        raise ValueError(f"the network repeats site names {sorted(set(names[names.duplicated()]))}")
    for v in sites.data_vars:
        a = sites[v]
        if "site" not in a.dims or not np.issubdtype(a.dtype, np.number):
            continue
        bad = ~np.isfinite(a.values)
        if bad.any():
            per_site = np.moveaxis(bad, a.dims.index("site"), 0).reshape(bad.shape[a.dims.index("site")], -1).any(1)
            j = int(np.argmax(per_site))
            raise ValueError(f"the network's static field {v!r} is NaN/inf at site {names[j]} ({int(per_site.sum())} "
                             "site(s)); fill or drop those sites")
    return sites

