"""ailand.ensemble: perturbed-parameter ensembles written as anemoi datasets.

Small on purpose (2 sites, 3 members, 10 days, a 1-"year" spin-up that repeats the 10 days).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import ailand
from ailand.ensemble import FORCING_NAMES, STATE_VARIABLES, load_ensemble, run_ensemble
from ailand.physics.column import DIAGNOSTICS
from ailand.sites import lai_climatology

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # anemoi.utils load_config

SITES = ["FR-Fon", "SN-Dhr"]
CHUNK = 2  # 3 members -> chunks of 2 and 1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    forcing = ailand.synthetic_forcing(SITES, "2020-01-01", "2020-01-10", seed=0)
    model = ailand.ToyEcLand(compile=False)
    design = model.space.sample(3, method="lhs", seed=1)
    path = tmp_path_factory.mktemp("ens") / "ens.zarr"
    run_ensemble(model, forcing, design, path, output_freq="6h", spinup_years=1, chunk_members=CHUNK, progress=False)
    return forcing, model, design, path


@pytest.fixture(scope="module")
def opened(setup):
    from anemoi.datasets import open_dataset

    return open_dataset(str(setup[3]))


def _field(ds, name):
    """(dates, members, sites) of one variable, found by name."""
    return ds[:, ds.name_to_index[name]]


def test_opens_with_anemoi(setup, opened):
    forcing, model, design, path = setup
    ds = opened
    n_vars = len(STATE_VARIABLES) + len(FORCING_NAMES) + 6 + len(model.space) + len(DIAGNOSTICS)
    assert ds.shape == (40, n_vars, 3, 2)  # 10 days of 6h rows
    assert set(ds.variables) == {
        *STATE_VARIABLES, *FORCING_NAMES, *DIAGNOSTICS, *model.space.names,
        "clim_lai", "clim_sand", "clim_clay", "clim_cveg", "clim_cvh", "clim_elevation",
    }
    assert ds.dates[0] == np.datetime64("2020-01-01T00:00") and ds.dates[-1] == np.datetime64("2020-01-10T18:00")
    assert np.allclose(ds.latitudes, forcing["lat"].values) and np.allclose(ds.longitudes, forcing["lon"].values)
    for k in ("mean", "stdev", "minimum", "maximum"):
        assert np.all(np.isfinite(ds.statistics[k])) and ds.statistics[k].shape == (n_vars,)
    assert not np.isnan(ds[:]).any()
    assert not path.with_name("ens.zarr.tmp").exists()


def test_row_convention_matches_direct_run(setup, opened):
    """Row t: state at t, forcing/LAI/diagnostic means over [t, t+6h), constant parameters and statics."""
    forcing, model, design, _ = setup
    ds = opened
    for a in range(0, 3, CHUNK):  # a direct run of the same chunk of members
        d = design.isel(member=slice(a, a + CHUNK))
        m = slice(a, a + d.sizes["member"])
        ic = model.initial_conditions(forcing, d, spinup_years=1)
        out = model.run(forcing, d, spinup_years=1, output_freq="6h")
        assert out.time.values[0] == np.datetime64("2020-01-01T06:00")  # run labels the end of each interval
        for v in STATE_VARIABLES:
            got = _field(ds, v)[:, m]
            assert np.array_equal(got[0], ic[v].transpose("member", "site").values.astype(np.float32)), v
            assert np.array_equal(got[1:], out[v].transpose("time", "member", "site").values[:-1].astype(np.float32)), v
        for v in DIAGNOSTICS:
            assert np.array_equal(_field(ds, v)[:, m], out[v].transpose("time", "member", "site").values.astype(np.float32)), v
    for v in FORCING_NAMES:
        hourly = forcing[v].transpose("time", "site").values
        want = hourly.reshape(40, 6, 2).mean(1).astype(np.float32)
        assert np.array_equal(_field(ds, v), np.broadcast_to(want[:, None], (40, 3, 2))), v
    doy = pd.DatetimeIndex(forcing.time.values).day_of_year.values
    lai = lai_climatology(forcing, doy).reshape(40, 6, 2).mean(1).astype(np.float32)
    assert np.array_equal(_field(ds, "clim_lai")[:, 0], lai)
    for p in model.space.names:
        want = design.sel(parameter=p).values.astype(np.float32)
        assert np.array_equal(_field(ds, p), np.broadcast_to(want[None, :, None], (40, 3, 2))), p
    for clim, src in (("clim_sand", "sand"), ("clim_clay", "clay"), ("clim_cveg", "cveg"), ("clim_elevation", "elevation")):
        assert np.array_equal(_field(ds, clim), np.broadcast_to(forcing[src].values.astype(np.float32), (40, 3, 2))), clim
    # FR-Fon is deciduous broadleaf (all of its cover is high vegetation); SN-Dhr is savanna (20 %)
    assert np.allclose(_field(ds, "clim_cvh")[0, 0], forcing["cveg"].values * np.array([1.0, 0.2]))


def test_load_ensemble(setup, opened):
    forcing, model, design, path = setup
    ens = ailand.load_ensemble(path)
    assert ens.data.dtype == np.float32 and ens.data.shape == opened.shape
    assert np.array_equal(ens.data, opened[:])
    assert ens.variables == list(opened.variables) and ens.index["swvl1"] == opened.name_to_index["swvl1"]
    assert ens.sites == SITES and np.allclose(ens.lat, forcing["lat"].values)
    assert np.array_equal(ens.dates, opened.dates)
    assert np.allclose(ens.design.values, design.values) and list(ens.design.parameter.values) == model.space.names
    assert ens.space.names == model.space.names and ens.space.constraints == model.space.constraints
    assert np.allclose(ens.space.bounds, model.space.bounds)
    assert ens.attrs["output_freq"] == "6h" and ens.attrs["spinup_years"] == 1
    assert ens.attrs["variables"]["Qle"]["units"] == "W m-2"
    assert set(ens.tendency_statistics) == set(STATE_VARIABLES)
    # tendency statistics = statistics of x(t+6h) - x(t) over all dates, members and sites
    for v in ("swvl1", "skt", "sd"):
        x = ens[v].astype(np.float64)
        dx = x[1:] - x[:-1]
        assert np.isclose(ens.tendency_statistics[v]["mean"], dx.mean(), rtol=1e-4, atol=1e-9), v
        assert np.isclose(ens.tendency_statistics[v]["stdev"], dx.std(), rtol=1e-4, atol=1e-9), v
        assert np.isclose(ens.statistics[v]["mean"], x.mean(), rtol=1e-5), v
    sub = ens.select(members=[2, 0], sites=["SN-Dhr"])
    assert sub.data.shape == (40, len(ens.variables), 2, 1)
    assert np.array_equal(sub["Tair"][:, 1, 0], ens["Tair"][:, 0, 1])
    assert list(sub.design.member.values) == [2, 0] and sub.sites == ["SN-Dhr"]
    xds = ens.to_xarray()
    assert xds["swvl1"].dims == ("time", "member", "site") and xds["swvl1"].attrs["units"] == "m3 m-3"
    assert "long_name" in xds["Tair"].attrs and list(xds.site.values) == SITES
    with pytest.raises(ValueError, match="unknown site"):
        ens.select(sites=["XX-Nop"])


def test_dask_equals_local(setup, opened, tmp_path):
    from dask.distributed import Client, LocalCluster

    forcing, model, design, _ = setup
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            path = run_ensemble(
                model, forcing, design, tmp_path / "dask.zarr", output_freq="6h", spinup_years=1,
                chunk_members=CHUNK, client=client, progress=False,
            )
    from anemoi.datasets import open_dataset

    other = open_dataset(str(path))
    assert list(other.variables) == list(opened.variables)
    assert np.array_equal(other[:], opened[:])


def test_anemoi_load_equals_bulk_and_overwrite(setup, tmp_path):
    """The bulk copy writes what anemoi's own field-by-field load writes; an existing path is kept unless overwrite."""
    from anemoi.datasets import open_dataset

    forcing, model, design, _ = setup
    path = tmp_path / "daily.zarr"
    d = design.isel(member=slice(0, 2))
    run_ensemble(model, forcing, d, path, output_freq="1D", spinup_years=0, progress=False)
    bulk = open_dataset(str(path))[:]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        run_ensemble(model, forcing, d, path, output_freq="1D", spinup_years=0, progress=False)
    run_ensemble(model, forcing, d, path, output_freq="1D", spinup_years=0, progress=False, overwrite=True, load="anemoi")
    slow = open_dataset(str(path))
    assert slow.shape == (10, bulk.shape[1], 2, 2)
    assert np.array_equal(slow[:], bulk)


def test_bad_input_raises(setup, tmp_path):
    forcing, model, design, _ = setup
    path = tmp_path / "bad.zarr"
    unknown = xr.concat([design, design.isel(parameter=[0]).assign_coords(parameter=["NOT_A_PARAM"])], "parameter")
    with pytest.raises(ValueError, match="unknown parameter"):
        run_ensemble(model, forcing, unknown, path, progress=False)
    lo, hi = model.space.bounds[model.space.names.index("RSMIN")]
    bad = design.copy()
    bad.loc[dict(parameter="RSMIN", member=1)] = hi * 10
    with pytest.raises(ValueError, match="RSMIN.*outside its bounds"):
        run_ensemble(model, forcing, bad, path, progress=False)
    with pytest.raises(ValueError, match="whole number of output intervals"):
        run_ensemble(model, forcing, design, path, output_freq="7h", progress=False)
    with pytest.raises(ValueError, match=r"\.zarr"):
        run_ensemble(model, forcing, design, tmp_path / "bad.nc", progress=False)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_cli_ensemble(tmp_path, capsys):
    from ailand.cli import main

    out = tmp_path / "cli.zarr"
    argv = ["ensemble", "--members", "2", "--include-default", "--sites", "FR-Fon", "--start", "2020-01-01",
            "--end", "2020-01-04", "--spinup-years", "0", "--output-freq", "12h", "--synthetic-sites", "1",
            "--space-filling-sites", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    ens = load_ensemble(out)
    # the site, one synthetic copy and two space-filling sites
    assert ens.data.shape[0] == 8 and ens.sites == ["FR-Fon", "FR-Fon~1", "SF001", "SF002"]
    assert ens.statistics["clim_sand"]["stdev"] > 0  # the copy has its own soil
    assert np.allclose(ens.design.isel(member=0).values, ens.space.default_vector)
    assert main(argv) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
