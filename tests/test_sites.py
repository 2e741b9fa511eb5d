"""Site table: complete, physical, and loaded as a labelled Dataset."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ailand.sites import SITE_FIELDS, SITE_TABLE, VEG_TYPES, lai_climatology, load_sites, site_names

MODEL_COLUMNS = [
    "name", "long_name", "climate", "lat", "lon", "elevation", "sand", "clay", "veg_type", "cveg",
    "lai_min", "lai_max", "lai_peak_doy",
]
EXPECTED_SITES = ["FR-Fon", "FI-Hyy", "RU-Cok", "US-Kon", "IT-Noe", "SN-Dhr", "TD-Bod", "CN-Tak", "GF-Guy", "BE-Lon"]


@pytest.fixture(scope="module")
def sites():
    return load_sites()


def test_table_has_required_columns_and_sites():
    table = pd.read_csv(SITE_TABLE)
    assert set(MODEL_COLUMNS) <= set(table.columns)
    assert len(table) >= 10
    assert set(EXPECTED_SITES) <= set(table["name"])
    assert not table.isna().any().any()


def test_every_variable_has_units_and_long_name(sites):
    assert sites.sizes["site"] == len(site_names())
    for col in SITE_FIELDS:
        if col == "name":
            continue
        assert col in sites.variables
        assert sites[col].dims == ("site",)
        assert sites[col].attrs["units"] and sites[col].attrs["long_name"]
    assert sites["lat"].dtype == np.float64
    assert sites["veg_type"].values[0] == "deciduous_broadleaf"


def test_sites_are_physical(sites):
    s = sites
    assert ((s.sand >= 0) & (s.clay >= 0) & (s.sand + s.clay <= 1)).all()
    assert ((s.cveg >= 0) & (s.cveg <= 1)).all()
    assert ((s.lai_min >= 0) & (s.lai_min <= s.lai_max)).all()
    assert ((s.lai_peak_doy >= 1) & (s.lai_peak_doy <= 366)).all()
    assert ((abs(s.lat) <= 90) & (abs(s.lon) <= 180)).all()
    assert set(s.veg_type.values) <= set(VEG_TYPES)
    assert (s.cveg.where(s.veg_type == "desert", drop=True) <= 0.05).all()
    assert ((s.wet_day_fraction > 0) & (s.wet_day_fraction <= 1)).all()
    assert ((s.rh_mean > 0) & (s.rh_mean < 1) & (s.cloud_mean > 0) & (s.cloud_mean < 1)).all()
    assert ((s.precip_annual > 0) & (s.wind_mean > 0) & (s.gust_factor >= 1)).all()


def test_real_coordinates_and_climates(sites):
    s = sites
    assert float(s.lat.sel(site="FR-Fon")) == 48.48 and float(s.lon.sel(site="FR-Fon")) == 2.78
    assert float(s.lon.sel(site="US-Kon")) == -96.56 and float(s.lon.sel(site="GF-Guy")) == -52.92
    assert abs(float(s.t_mean.sel(site="FI-Hyy")) - 3.5) < 1
    assert float(s.t_mean.sel(site="RU-Cok")) < -8
    assert float(s.precip_annual.sel(site="TD-Bod")) < 30 and float(s.wind_mean.sel(site="TD-Bod")) >= 5
    assert float(s.precip_annual.sel(site="GF-Guy")) > 2500
    assert 180 < float(s.wet_peak_doy.sel(site="SN-Dhr")) < 270  # Jul-Sep monsoon
    assert s.veg_type.sel(site="FI-Hyy").item() == "evergreen_needleleaf"


@pytest.mark.parametrize("names", [["GF-Guy", "FR-Fon"], "GF-Guy,FR-Fon", "GF-Guy, FR-Fon"])
def test_load_subset_keeps_order(names):
    ds = load_sites(names)
    assert list(ds.site.values) == ["GF-Guy", "FR-Fon"]
    assert float(ds.lat.sel(site="GF-Guy")) == 5.28


@pytest.mark.parametrize("names", [None, "all", "ALL"])
def test_load_all(names):
    assert list(load_sites(names).site.values) == site_names()


def test_unknown_site_lists_valid_names():
    with pytest.raises(ValueError, match="unknown site") as err:
        load_sites(["FR-Fon", "XX-Nope"])
    assert "XX-Nope" in str(err.value) and "FI-Hyy" in str(err.value)
    with pytest.raises(ValueError, match="repeats"):
        load_sites("FR-Fon,FR-Fon")


def test_lai_climatology_formula(sites):
    doy = np.arange(1, 367)
    lai = lai_climatology(sites, doy)
    assert lai.shape == (366, sites.sizes["site"])
    w = ((1 + np.cos(2 * np.pi * (doy[:, None] - sites.lai_peak_doy.values) / 365.25)) / 2) ** 1.5
    np.testing.assert_allclose(lai, sites.lai_min.values + (sites.lai_max.values - sites.lai_min.values) * w)
    j = list(sites.site.values).index("FR-Fon")
    peak = int(sites.lai_peak_doy.values[j])
    assert lai[peak - 1, j] == pytest.approx(float(sites.lai_max.values[j]))
    assert lai[:, j].min() >= float(sites.lai_min.values[j]) - 1e-12


def test_lai_climatology_accepts_datetimes(sites):
    times = pd.date_range("2020-01-01", periods=48, freq="1D").values
    np.testing.assert_allclose(lai_climatology(sites, times), lai_climatology(sites, np.arange(1, 49)))
    assert isinstance(sites, xr.Dataset)


def test_perturbed_sites_are_named_seeded_and_physical():
    from ailand.sites import perturbed_sites

    a = perturbed_sites(["FR-Fon", "TD-Bod"], copies=3, seed=1)
    b = perturbed_sites(["FR-Fon", "TD-Bod"], copies=3, seed=1)
    assert list(a["site"].values) == ["FR-Fon~1", "TD-Bod~1", "FR-Fon~2", "TD-Bod~2", "FR-Fon~3", "TD-Bod~3"]
    assert list(a["parent"].values) == ["FR-Fon", "TD-Bod"] * 3
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not np.allclose(a["sand"].values[:2], a["sand"].values[2:4])  # copies differ
    assert (a["sand"] + a["clay"] <= 0.95 + 1e-12).all()
    assert ((a["cveg"] > 0) & (a["cveg"] < 1)).all()
    assert (a["lai_max"] > a["lai_min"]).all() and (a["precip_annual"] > 0).all()
    np.testing.assert_array_equal(a["lat"].values, np.tile(load_sites(["FR-Fon", "TD-Bod"])["lat"].values, 3))
    assert list(a["veg_type"].values[:2]) == ["deciduous_broadleaf", "desert"]
    with pytest.raises(ValueError, match="copies"):
        perturbed_sites(["FR-Fon"], copies=0)


def test_space_filling_sites_cover_the_soil_and_climate_space():
    """A Latin hypercube over the site generator: seeded, physical, and spread over the whole
    range of soils and climates (every fifth of the sand range and of log precipitation is
    hit), unlike jittered copies of the real sites."""
    import ailand
    from ailand.sites import VEG_TYPES, space_filling_sites

    a, b = space_filling_sites(40, seed=3), space_filling_sites(40, seed=3)
    assert list(a["site"].values[:2]) == ["SF001", "SF002"] and a.sizes["site"] == 40
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not np.allclose(a["sand"].values, space_filling_sites(40, seed=4)["sand"].values)
    assert set(load_sites().data_vars) == set(a.data_vars)
    assert (a["sand"] + a["clay"] <= 0.95 + 1e-12).all() and (a["clay"] > 0).all()
    assert ((a["cveg"] > 0) & (a["cveg"] < 1)).all() and (a["lai_max"] > a["lai_min"]).all()
    assert ((a["wet_day_fraction"] > 0) & (a["wet_day_fraction"] <= 0.8)).all()
    for v, lo, hi in (("sand", 0.03, 0.92), ("precip_annual", np.log(50.0), np.log(3000.0))):
        x = np.log(a[v].values) if v == "precip_annual" else a[v].values
        hits = np.histogram(x, bins=5, range=(lo, hi))[0]
        assert (hits >= 6).all(), (v, hits)  # stratified: 8 per fifth, no empty corner
    assert set(a["veg_type"].values) <= set(VEG_TYPES) and len(set(a["veg_type"].values)) >= 6
    assert (a["veg_type"].values[a["precip_annual"].values < 120.0] == "desert").all()
    f = ailand.synthetic_forcing(a.isel(site=slice(0, 3)), "2020-01-01", "2020-01-10")
    assert list(f["site"].values) == ["SF001", "SF002", "SF003"] and np.isfinite(f["Tair"].values).all()
    with pytest.raises(ValueError, match="n must be"):
        space_filling_sites(0)
