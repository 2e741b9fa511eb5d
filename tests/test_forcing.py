"""Weather generator, forcing validation and the forcing reader."""

import numpy as np
import pytest
import xarray as xr

from ailand.forcing import (
    FORCING_VARIABLES,
    attach_sites,
    cos_solar_zenith,
    open_forcing,
    saturation_vapour_pressure,
    snow_fraction,
    specific_humidity,
    split_precipitation,
    synthetic_forcing,
    validate_forcing,
)
from ailand.sites import load_sites

SOLAR_MAX = 1361.0 * 1.035


@pytest.fixture(scope="module")
def year():
    """All sites, 2020 (leap year), hourly."""
    return synthetic_forcing("all", "2020-01-01", "2020-12-31", seed=0)


@pytest.fixture(scope="module")
def five_years():
    return synthetic_forcing("all", "2010-01-01", "2014-12-31", freq="1h", seed=1)


@pytest.fixture
def small():
    return synthetic_forcing(["FR-Fon", "FI-Hyy"], "2020-01-01", "2020-01-10", seed=0)


# --------------------------------------------------------------------------- structure


def test_dims_units_shapes(year):
    sites = load_sites()
    assert dict(year.sizes) == {"time": 8784, "site": sites.sizes["site"]}
    assert list(year.site.values) == list(sites.site.values)
    for v, (units, long_name) in FORCING_VARIABLES.items():
        assert year[v].dims == ("time", "site")
        assert year[v].dtype == np.float64
        assert year[v].attrs == {"units": units, "long_name": long_name}
    assert year.time.values[0] == np.datetime64("2020-01-01T00:00")
    assert year.time.values[-1] == np.datetime64("2020-12-31T23:00")
    validate_forcing(year)


def test_statics_travel_with_the_forcing(year):
    sites = load_sites()
    for v in sites.variables:
        if v == "site":
            continue
        assert year[v].dims == ("site",)
        assert year[v].attrs["units"] == sites[v].attrs["units"]
        np.testing.assert_array_equal(year[v].values, sites[v].values)


def test_freq_and_end(small):
    assert synthetic_forcing("FR-Fon", "2020-01-01", "2020-12-31", freq="3h").sizes["time"] == 2928
    assert small.sizes["time"] == 240
    assert synthetic_forcing("FR-Fon", "2020-01-01", "2020-01-01 05:00").sizes["time"] == 6
    with pytest.raises(ValueError, match="freq"):
        synthetic_forcing("FR-Fon", freq="1MS")


# --------------------------------------------------------------------------- physics


def test_shortwave_geometry(year):
    sw = year.SWdown.values
    assert (sw >= 0).all() and sw.max() < SOLAR_MAX
    times = year.time.values
    for j, s in enumerate(year.site.values):
        lat, lon = float(year.lat[j]), float(year.lon[j])
        czs = [cos_solar_zenith(times + np.timedelta64(m, "m"), lat, lon) for m in (0, 30, 60)]
        night = np.all(np.stack(czs) < -0.01, axis=0)
        assert night.sum() > 1000, s
        assert (sw[night, j] == 0).all(), s
        assert sw[:, j].max() > 500, s  # some clear middays
        # step-mean SW below top-of-atmosphere (10-min samples), daily means
        fine = times[:, None] + (np.arange(6) * 10 + 5).astype("timedelta64[m]")
        toa = 1361.0 * 1.035 * np.maximum(cos_solar_zenith(fine.ravel(), lat, lon), 0).reshape(-1, 6).mean(1)
        daily = lambda a: a.reshape(-1, 24).mean(1)  # noqa: E731
        assert (daily(sw[:, j]) <= daily(toa) * 0.85 + 1e-9).all(), s


def test_humidity_never_supersaturated(year):
    qsat = specific_humidity(saturation_vapour_pressure(year.Tair.values), year.PSurf.values)
    qsat_water = specific_humidity(saturation_vapour_pressure(year.Tair.values, over="water"), year.PSurf.values)
    q = year.Qair.values
    assert (q > 0).all()
    assert (q <= qsat).all() and (q <= qsat_water).all()
    rh = q / qsat
    assert 0.15 < rh[:, list(year.site.values).index("TD-Bod")].mean() < 0.35
    assert rh[:, list(year.site.values).index("GF-Guy")].mean() > 0.75


def test_precipitation_phase(year):
    rain, snow, tair = year.Rainf.values, year.Snowf.values, year.Tair.values
    assert (rain >= 0).all() and (snow >= 0).all()
    assert (tair[snow > 0] < 275.15).all()
    assert (tair[rain > 0] > 273.15).all()
    assert (rain > 0).any() and (snow > 0).any()


def test_snow_fraction_rule():
    t = np.array([250.0, 273.15, 274.15, 275.15, 300.0])
    np.testing.assert_allclose(snow_fraction(t), [1, 1, 0.5, 0, 0], atol=1e-12)
    ramp = snow_fraction(np.linspace(272, 277, 501))
    assert (np.diff(ramp) <= 0).all()
    total = np.full(5, 2e-4)
    rain, snow = split_precipitation(total, t)
    np.testing.assert_allclose(rain + snow, total)
    assert rain[0] == 0 and snow[-1] == 0


def test_annual_precipitation_matches_climate(five_years):
    years = 5
    total = (five_years.Rainf + five_years.Snowf).sum("time").values * 3600.0 / years
    target = five_years.precip_annual.values
    humid = target >= 100
    np.testing.assert_allclose(total[humid], target[humid], rtol=0.3)
    assert (total[~humid] > 0.3 * target[~humid]).all() and (total[~humid] < 3 * target[~humid]).all()


def test_annual_mean_temperature_and_wind(year):
    tmean = year.Tair.mean("time").values - 273.15
    np.testing.assert_allclose(tmean, year.t_mean.values, atol=1.5)
    speed = np.hypot(year.Wind_E, year.Wind_N)
    np.testing.assert_allclose(speed.mean("time").values, year.wind_mean.values, rtol=0.15)
    bod = speed.sel(site="TD-Bod").values
    assert np.quantile(bod, 0.995) > 2.0 * float(year.wind_mean.sel(site="TD-Bod"))  # gusty episodes
    psurf = year.PSurf.mean("time").values
    hyps = 101325.0 * (1 - 2.25577e-5 * year.elevation.values) ** 5.25588
    np.testing.assert_allclose(psurf, hyps, rtol=0.02)


def test_longwave_and_cloud(year):
    lw, t = year.LWdown.values, year.Tair.values
    sigma_t4 = 5.670374419e-8 * t**4
    assert (lw > 0.5 * sigma_t4).all() and (lw <= sigma_t4 * (1 + 1e-12)).all()
    # rainy hours are cloudy: more LW (relative to sigma T^4), less SW
    wet = (year.Rainf + year.Snowf).values > 0
    j = list(year.site.values).index("FR-Fon")
    ratio = lw[:, j] / sigma_t4[:, j]
    assert ratio[wet[:, j]].mean() > ratio[~wet[:, j]].mean() + 0.05


def test_cold_sites_have_snowy_winters(year):
    for s in ("FI-Hyy", "RU-Cok"):
        d = year.sel(site=s)
        winter = d.sel(time=d.time.dt.month.isin([12, 1, 2]))
        assert float(winter.Tair.mean()) < 273.15 - 5, s
        snow_total = float(d.Snowf.sum()) * 3600
        assert snow_total > 0.2 * float(d.precip_annual), s
    for s in ("GF-Guy", "SN-Dhr", "TD-Bod"):
        assert float(year.Snowf.sel(site=s).sum()) == 0.0, s
    assert float(year.Tair.sel(site="RU-Cok").min()) < 273.15 - 30


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_identical_different_seed_differs():
    a = synthetic_forcing(["FR-Fon", "TD-Bod"], "2020-03-01", "2020-03-20", seed=7)
    b = synthetic_forcing(["FR-Fon", "TD-Bod"], "2020-03-01", "2020-03-20", seed=7)
    c = synthetic_forcing(["FR-Fon", "TD-Bod"], "2020-03-01", "2020-03-20", seed=8)
    for v in FORCING_VARIABLES:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not np.array_equal(a.Tair.values, c.Tair.values)
    assert not np.array_equal(a.Wind_E.values, c.Wind_E.values)


def test_site_forcing_independent_of_selection(year):
    alone = synthetic_forcing("GF-Guy", "2020-01-01", "2020-12-31", seed=0)
    reordered = synthetic_forcing(["GF-Guy", "FI-Hyy"], "2020-01-01", "2020-12-31", seed=0)
    for v in FORCING_VARIABLES:
        np.testing.assert_array_equal(alone[v].sel(site="GF-Guy").values, year[v].sel(site="GF-Guy").values)
        np.testing.assert_array_equal(reordered[v].sel(site="FI-Hyy").values, year[v].sel(site="FI-Hyy").values)


def test_accepts_sites_dataset_and_rejects_bad_seed():
    sites = load_sites("CN-Tak")
    a = synthetic_forcing(sites, "2020-01-01", "2020-01-02")
    b = synthetic_forcing("CN-Tak", "2020-01-01", "2020-01-02")
    np.testing.assert_array_equal(a.Tair.values, b.Tair.values)
    with pytest.raises(ValueError, match="seed"):
        synthetic_forcing("CN-Tak", seed=-1)


# --------------------------------------------------------------------------- validation


def _broken(ds, name, i, value):
    ds = ds.copy(deep=True)
    ds[name][i, 1] = value
    return ds


def test_validate_missing_variable(small):
    with pytest.raises(ValueError, match="Snowf") as err:
        validate_forcing(small.drop_vars("Snowf"))
    assert "required" in str(err.value) and "PSurf" in str(err.value)


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("Tair", np.nan, ["Tair", "NaN", "2020-01-02T03:00"]),
        ("LWdown", np.inf, ["LWdown", "2020-01-02T03:00"]),
        ("Rainf", -1e-5, ["Rainf", "negative", "2020-01-02T03:00"]),
        ("Snowf", -1e-6, ["Snowf", "negative", "2020-01-02T03:00"]),
        ("SWdown", -3.0, ["SWdown", "negative", "2020-01-02T03:00"]),
        ("Qair", 8.0, ["Qair", "g/kg"]),
        ("PSurf", 1013.0, ["PSurf", "hPa"]),
        ("LWdown", 1500.0, ["LWdown", "1000"]),
        ("Rainf", 2.0, ["Rainf", "kg m-2 s-1"]),
    ],
)
def test_validate_bad_values(small, name, value, words):
    with pytest.raises(ValueError) as err:
        validate_forcing(_broken(small, name, 27, value))
    for w in words:
        assert w in str(err.value)


def test_validate_celsius(small):
    ds = small.copy(deep=True)
    ds["Tair"] = ds.Tair - 273.15
    with pytest.raises(ValueError, match=r"Tair.*Celsius.*273.15"):
        validate_forcing(ds)


def test_validate_dims_and_time(small):
    with pytest.raises(ValueError, match="site"):
        validate_forcing(small.isel(site=0, drop=True))
    irregular = small.isel(time=[0, 1, 2, 4, 5])
    with pytest.raises(ValueError, match="irregular"):
        validate_forcing(irregular)
    transposed = small.transpose("site", "time")
    assert validate_forcing(transposed).Tair.dims == ("time", "site")


# --------------------------------------------------------------------------- reader


def test_open_forcing_netcdf_roundtrip(small, tmp_path):
    path = tmp_path / "forcing.nc"
    small.to_netcdf(path)
    back = open_forcing(path)
    for v in FORCING_VARIABLES:
        np.testing.assert_array_equal(back[v].values, small[v].values)
        assert back[v].attrs["units"] == FORCING_VARIABLES[v][0]
    assert list(back.site.values) == ["FR-Fon", "FI-Hyy"]
    assert back.veg_type.sel(site="FI-Hyy").item() == "evergreen_needleleaf"
    assert float(back.sand.sel(site="FR-Fon")) == float(small.sand.sel(site="FR-Fon"))


def test_open_forcing_zarr_and_dataset(small, tmp_path):
    path = tmp_path / "forcing.zarr"
    small[list(FORCING_VARIABLES)].to_zarr(path)
    back = open_forcing(path, sites=["FR-Fon", "FI-Hyy"])
    np.testing.assert_array_equal(back.Tair.values, small.Tair.values)
    assert float(back.lat.sel(site="FI-Hyy")) == 61.85
    assert open_forcing(small).sizes == small.sizes


def _cmip_like(small):
    """The forcing of ``small`` under CMIP/other names and units, dims (gridpoint, time)."""
    total = small.Rainf + small.Snowf
    speed = np.hypot(small.Wind_E, small.Wind_N)
    ds = xr.Dataset(
        {
            "tas": (small.Tair - 273.15).assign_attrs(units="degC"),
            "huss": small.Qair.assign_attrs(units="kg kg-1"),
            "Wind": speed.assign_attrs(units="m s-1"),
            "rsds": small.SWdown.assign_attrs(units="W m-2"),
            "rlds": small.LWdown.assign_attrs(units="W m-2"),
            "pr": total.assign_attrs(units="kg m-2 s-1"),
            "ps": (small.PSurf / 100).assign_attrs(units="hPa"),
        }
    )
    ds = ds.drop_vars(["long_name", "climate", "veg_type"]).rename({"site": "gridpoint"})
    return ds.assign_coords(gridpoint=np.arange(2)).transpose("gridpoint", "time")


def test_open_forcing_aliases(small, tmp_path):
    path = tmp_path / "cmip.nc"
    _cmip_like(small).to_netcdf(path)
    ds = open_forcing(path, sites="FR-Fon,FI-Hyy")
    assert ds.Tair.dims == ("time", "site") and list(ds.site.values) == ["FR-Fon", "FI-Hyy"]
    np.testing.assert_allclose(ds.Tair.values, small.Tair.values, atol=1e-9)
    np.testing.assert_allclose(ds.PSurf.values, small.PSurf.values, rtol=1e-12)
    np.testing.assert_allclose(ds.Wind_E.values, np.hypot(small.Wind_E, small.Wind_N).values)
    assert (ds.Wind_N.values == 0).all()
    total = (small.Rainf + small.Snowf).values
    np.testing.assert_allclose(ds.Rainf.values + ds.Snowf.values, total, atol=1e-15)
    rain, snow = split_precipitation(total, ds.Tair.values)
    np.testing.assert_array_equal(ds.Snowf.values, snow)
    assert float(ds.sand.sel(site="FI-Hyy")) == 0.6  # statics attached by position


def test_open_single_point_without_site_dim(small):
    point = small[list(FORCING_VARIABLES)].isel(site=1, drop=True)
    ds = open_forcing(point)
    assert ds.sizes["site"] == 1 and ds.Tair.dims == ("time", "site")
    named = open_forcing(point, sites="FI-Hyy")
    assert list(named.site.values) == ["FI-Hyy"] and float(named.lat[0]) == 61.85


def test_open_forcing_reports_problems(small, tmp_path):
    with pytest.raises(ValueError, match="lacks variable"):
        open_forcing(small.drop_vars("Qair"))
    with pytest.raises(FileNotFoundError):
        open_forcing(tmp_path / "nope.nc")
    with pytest.raises(ValueError, match="cannot match"):
        attach_sites(small, ["GF-Guy", "TD-Bod", "CN-Tak"])
    with pytest.raises(ValueError, match="cannot match"):  # partial name match is not positional
        attach_sites(small, ["FR-Fon", "GF-Guy"])
    relabelled = attach_sites(small.assign_coords(site=["a", "b"]), ["GF-Guy", "TD-Bod"])
    assert list(relabelled.site.values) == ["GF-Guy", "TD-Bod"] and float(relabelled.lat[0]) == 5.28


def test_open_forcing_rain_plus_total(small):
    src = small[list(FORCING_VARIABLES)].drop_vars("Snowf")
    src["pr"] = small.Rainf + small.Snowf
    ds = open_forcing(src)
    np.testing.assert_allclose(ds.Snowf.values, small.Snowf.values, atol=1e-15)


def test_open_forcing_era5_like_point(small):
    """ERA5 names, per-step accumulations, dewpoint, and a (valid_time, latitude, longitude) point."""
    d = small.isel(site=[1])
    dt = 3600.0
    e = d.Qair.values * d.PSurf.values / (0.621981 + (1 - 0.621981) * d.Qair.values)
    lg = np.log(e / 611.21)
    dewpoint = (32.19 * lg - 17.502 * 273.16) / (lg - 17.502)  # Tetens over water, inverted

    def point(values, units):
        return (("valid_time", "latitude", "longitude"), np.asarray(values)[:, :, None], {"units": units})

    era = xr.Dataset(
        {
            "t2m": point(d.Tair.values, "K"),
            "d2m": point(dewpoint, "K"),
            "sp": point(d.PSurf.values, "Pa"),
            "u10": point(d.Wind_E.values, "m s**-1"),
            "v10": point(d.Wind_N.values, "m s**-1"),
            "ssrd": point(d.SWdown.values * dt, "J m**-2"),
            "strd": point(d.LWdown.values * dt, "J m**-2"),
            "tp": point((d.Rainf + d.Snowf).values * dt / 1000, "m"),
            "sf": point(d.Snowf.values * dt / 1000, "m of water equivalent"),
        },
        coords={"valid_time": d.time.values, "latitude": [61.85], "longitude": [24.29]},
    )
    ds = open_forcing(era, sites="FI-Hyy")
    assert list(ds.site.values) == ["FI-Hyy"] and ds.Tair.dims == ("time", "site")
    for v in FORCING_VARIABLES:
        np.testing.assert_allclose(ds[v].values, d[v].values, rtol=1e-9, atol=1e-12, err_msg=v)
