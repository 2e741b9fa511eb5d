"""The dust emission inversion (issue 14, deliverables 4-6) on a small twin.

One module fixture: a 3-degree, 10 x 12-cell world over the Sahara and the Mediterranean, 12
days of July (4 three-day cycles), the default hidden truth (too-high summer Sahel emissions,
a largely missed Libya-Egypt source, a smooth background), satellite super-observations at the
cells (``superob=1``), 11 held-out AERONET stations; the LETKF smoother with 21 members
(~10 s in all: the land run dominates).
"""

from __future__ import annotations

import importlib.metadata
import logging

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr

from calibration.dust_inversion import (
    CorrelatedField,
    DustTwin,
    EmissionSmoother,
    InversionConfig,
    SatelliteConfig,
    cos_solar_zenith,
    free_runs,
    member_perturbations,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = dict(lat_range=(12.0, 42.0), lon_range=(-6.0, 30.0), resolution=3.0)


@pytest.fixture(scope="module")
def twin():
    return DustTwin("2020-07-01", "2020-07-12", seed=3, satellite=SatelliteConfig(superob=1), **SMALL)


@pytest.fixture(scope="module")
def result(twin):
    return twin.invert(InversionConfig(seed=0))


@pytest.fixture(scope="module")
def evaluation(twin, result):
    return twin.evaluate(result)


# ------------------------------------------------------------------------------ the twin


def test_analysed_factors_are_closer_to_the_truth_where_sources_emit(evaluation):
    f = evaluation.factors  # over (period, cell) pairs where the prior emits
    assert f.attrs["n_pairs"] > 100
    prior, smooth, filt = (f.sel(estimate=e) for e in ("prior", "smoothed", "filter"))
    # stated margins: the log-factor RMSE falls by >= 25 %, the emission-weighted one by >= 40 %
    assert float(smooth["rmse_log"]) < 0.75 * float(prior["rmse_log"])
    assert float(smooth["wrmse_log"]) < 0.6 * float(prior["wrmse_log"])
    assert float(filt["rmse_log"]) < 0.75 * float(prior["rmse_log"])
    assert float(smooth["corr_log"]) > 0.6


def test_aod_rmse_at_held_out_stations_falls(evaluation):
    a = evaluation.aod.sel(season="all")
    rmse = {r: float(a["rmse"].sel(run=r, group="all")) for r in a["run"].values}
    assert rmse["forecast"] < 0.8 * rmse["prior"]  # a free run with the analysed factors
    assert rmse["analysis"] < 0.8 * rmse["prior"]  # the cycled analysis
    desert = {r: float(a["rmse"].sel(run=r, group="desert")) for r in a["run"].values}
    assert desert["forecast"] < desert["prior"] and desert["analysis"] < desert["prior"]
    assert int(a["n"].sel(run="prior", group="desert")) > 100 and int(a["n"].sel(run="prior", group="non_desert")) > 500
    # the stations are never assimilated: they are not among the satellite observations
    obs = evaluation.twin.observations
    st = evaluation.sites
    near = np.min(np.hypot(obs["lat"].values[:, None] - st["lat"].values[None], obs["lon"].values[:, None]
                           - st["lon"].values[None]), axis=0)
    assert (near > 1e-6).all()


def test_cycles_are_consistent_and_nothing_is_dropped(result):
    c = result.cycles
    assert c.sizes["period"] == 4 and (c["n_obs"] > 50).all() and (c["n_members"] == 21).all()
    assert (c["n_dropped"] == 0).all() and result.dropped == []
    # the analysis reduces the spread of the period's log factors; chi2 is of order 1
    assert (c["spread_log_factor_a"] < c["spread_log_factor_b"]).all()
    assert (0.2 < c["chi2"]).all() and (c["chi2"] < 5).all()
    # the control member keeps the background mean: mean of the centred perturbations is exactly 0
    np.testing.assert_allclose(result.background["mean"][0], 0.0, atol=1e-12)
    np.testing.assert_allclose(result.background["std"][0].mean(), 0.3, rtol=0.25)


def test_the_emission_analysis_is_a_labelled_product(evaluation, tmp_path):
    ds = evaluation.analysis
    for k in ("scaling_factor", "log_scaling_factor_std", "emission_prior", "emission_analysis", "scaling_factor_truth"):
        assert ds[k].dims == ("time", "lat", "lon") and "units" in ds[k].attrs and "long_name" in ds[k].attrs
    assert ds["emission_analysis"].attrs["units"] == "kg m-2 s-1" and ds["scaling_factor"].attrs["units"] == "1"
    assert ds.sizes["time"] == 12 and ds.sizes["period"] == 4 and ds.sizes["month"] == 1
    # 3-day periods start at 00 UTC: the daily emission analysis is the factor times the prior
    xr.testing.assert_allclose(ds["emission_analysis"], ds["scaling_factor"] * ds["emission_prior"])
    assert (ds["scaling_factor"].values > 0).all()
    off = ds["control_mask"].values == 0
    assert (ds["scaling_factor"].values[:, off] == 1.0).all()
    # monthly emission-weighted factor = sum(f E) / sum(E)
    w = ds["emission_prior"] * ds["scaling_factor"]
    expect = (w.sum("time") / ds["emission_prior"].sum("time")).where(ds["emission_prior"].sum("time") > 0, 1.0)
    np.testing.assert_allclose(ds["monthly_scaling_factor"].isel(month=0).values, expect.values, rtol=1e-10)
    paths = evaluation.save(tmp_path / "run", figures=True)
    back = xr.open_dataset(tmp_path / "run" / "dust_emission_analysis.nc")
    xr.testing.assert_allclose(back["scaling_factor"], ds["scaling_factor"])
    assert back["emission_analysis"].attrs["units"] == "kg m-2 s-1"
    assert back.attrs["inv_members"] == 21 and back.attrs["Conventions"] == "CF-1.8"
    back.close()
    assert {p.name for p in paths} >= {"scores.csv", "report.md", "seasonal_maps.png", "truth_vs_analysis.png",
                                       "aeronet_timeseries.png", "sites.nc", "seasonal.nc"}
    assert "RMSE" in (tmp_path / "run" / "report.md").read_text()
    s = evaluation.seasonal
    assert list(s["season"].values) == ["JJA"] and s["emission_change"].attrs["units"] == "kg m-2 s-1"


def test_satellite_swaths_gaps_daytime_and_error_growing_with_aod(twin):
    obs = twin.observations
    y, err, true = obs["aod"].values, obs["aod_error"].values, obs["aod_true"].values
    np.testing.assert_allclose(err, 0.03 + 0.15 * np.maximum(y, 0.0))
    z = (y - true) / (0.03 + 0.15 * true)
    assert abs(z.mean()) < 0.15 and 0.85 < z.std() < 1.15
    # daytime overpasses near 13:30 local solar time
    t = obs["time"].values
    csz = cos_solar_zenith(obs["lat"].values, t, obs["lon"].values)
    assert (csz >= 0.15).all()
    hours = (t - t.astype("datetime64[D]")) / np.timedelta64(1, "h")
    local = (hours + obs["lon"].values / 15.0) % 24
    assert np.all(np.abs(local - 13.5) <= 0.51 + 1e-9)
    # gaps and clouds: far from every cell is seen every day, yet most cells are seen sometimes
    n_cells, n_days = 120, 12
    assert 0.2 * n_cells * n_days < obs.sizes["obs"] < 0.9 * n_cells * n_days
    seen = np.zeros((10, 12), bool)
    j = np.rint((obs["lat"].values - 13.5) / 3).astype(int)
    i = np.rint((obs["lon"].values + 4.5) / 3).astype(int)
    seen[j, i] = True
    assert seen.mean() > 0.8


def test_perturbations_have_unit_variance_and_the_given_correlation_length():
    lat = np.full(30, 20.0)
    lon = np.linspace(0.0, 29.0, 30)  # ~105 km apart at 20N
    f = CorrelatedField(lat, lon, corr_length_km=500.0)
    g = f.sample(4000, np.random.default_rng(0))
    np.testing.assert_allclose(g.var(0), 1.0, rtol=0.1)
    d = 104.5 * 5  # cells 5 apart: about 500 km
    c = np.mean([np.corrcoef(g[:, k], g[:, k + 5])[0, 1] for k in range(25)])
    assert abs(c - np.exp(-0.5 * (d / 500.0) ** 2)) < 0.05
    p = member_perturbations([f], 20, np.random.default_rng(1))
    np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="corr_length_km"):
        CorrelatedField(lat, lon, corr_length_km=-1.0)


# ----------------------------------------------------------------------------- bad input


def test_negative_scaling_factors_are_refused(twin):
    shape = twin.truth.shape
    bad = np.ones(shape)
    bad[1, 2, 3] = -0.2
    with pytest.raises(ValueError, match=r"truth scaling factors must be >= 0 .*\(1, 2, 3\)"):
        DustTwin("2020-07-01", "2020-07-12", world=twin.world, land=twin.chain.land, truth=bad)
    with pytest.raises(ValueError, match="NaN"):
        DustTwin("2020-07-01", "2020-07-12", world=twin.world, land=twin.chain.land, truth=np.full(shape, np.nan))
    with pytest.raises(ValueError, match="scaling factors must be >= 0"):
        free_runs(twin.chain, {"bad": bad}, twin.period)


def test_an_ensemble_needs_two_members(twin):
    with pytest.raises(ValueError, match="at least 2 members"):
        InversionConfig(members=1)
    with pytest.raises(ValueError, match="at least 2 members"):
        twin.invert(InversionConfig(members=0))
    for bad in (dict(log_std=0.0), dict(lag=-1), dict(persistence=1.5), dict(infl=0.9), dict(corr_length_km=(3000, 300)),
                dict(taper="box"), dict(loc_rad_km=0.0)):
        with pytest.raises(ValueError):
            InversionConfig(**bad)


def test_observations_outside_the_grid_or_window_are_refused(twin):
    obs = twin.observations.copy(deep=True)
    obs["lat"].values[5] = 55.0  # north of the grid (12..42N)
    with pytest.raises(ValueError, match=r"observations: 1 point\(s\) lie outside the grid"):
        EmissionSmoother(twin.chain, obs)
    obs = twin.observations.copy(deep=True)
    obs["step"].values[-1] = len(twin.chain.times) + 5
    with pytest.raises(ValueError, match="time window"):
        EmissionSmoother(twin.chain, obs)
    obs = twin.observations.copy(deep=True)
    obs["aod_error"].values[0] = 0.0
    with pytest.raises(ValueError, match="aod_error must be > 0"):
        EmissionSmoother(twin.chain, obs)
    with pytest.raises(ValueError, match="outside the grid"):
        from calibration.dust_inversion import aeronet_sites

        aeronet_sites(twin.world, {"Oslo": (59.9, 10.7)})


def test_members_whose_run_fails_are_dropped_and_logged(twin, monkeypatch, caplog):
    chain = twin.chain
    run = chain.run
    second = int(np.flatnonzero(twin.period == 1)[0])
    calls = {"single": 0}

    def flaky(scale=None, period=None, start=0, stop=None, load0=None, **kw):
        res = run(scale, period, start, stop, load0, **kw)
        if start == second and scale is not None and scale.shape[0] > 1:
            res.fields["aod"][:, 3] = float("nan")  # member 3's run blows up in cycle 1
        return res

    monkeypatch.setattr(chain, "run", flaky)
    with caplog.at_level(logging.WARNING, logger="calibration.dust_inversion.smoother"):
        res = EmissionSmoother(chain, twin.observations, InversionConfig(members=8, lag=1)).run()
    assert res.dropped == [(1, 3, "non-finite AOD or load")]
    assert list(res.cycles["n_members"].values) == [8, 7, 7, 7] and res.cycles["n_dropped"].values[1] == 1
    assert "member(s) [3] failed" in caplog.text and "dropped, 7 left" in caplog.text
    assert np.isfinite(res.smoothed["mean"]).all()

    def raising(scale=None, period=None, start=0, stop=None, load0=None, **kw):
        if start == second:
            if scale.shape[0] > 1:
                raise RuntimeError("boom")  # the batch fails: the members are run one by one
            calls["single"] += 1
            if calls["single"] in (2, 5):
                raise ValueError("member blew up")
        return run(scale, period, start, stop, load0, **kw)

    monkeypatch.setattr(chain, "run", raising)
    res = EmissionSmoother(chain, twin.observations, InversionConfig(members=8, lag=1)).run()
    assert [(p, m) for p, m, _ in res.dropped] == [(1, 1), (1, 4)]
    assert "member blew up" in res.dropped[0][2]

    def all_fail(scale=None, period=None, start=0, stop=None, load0=None, **kw):
        if start == second:
            raise RuntimeError("boom")
        return run(scale, period, start, stop, load0, **kw)

    monkeypatch.setattr(chain, "run", all_fail)
    with pytest.raises(RuntimeError, match="at least 2"):
        EmissionSmoother(chain, twin.observations, InversionConfig(members=4, lag=1)).run()


# ----------------------------------------------------------------------------------- CLI


def test_dust_cli_is_registered_and_refuses_bad_input(capsys):
    from ailand import cli

    eps = importlib.metadata.entry_points(group=cli.PLUGIN_GROUP)
    assert "dust" in [ep.name for ep in eps], "re-install: .venv/bin/pip install --no-deps -e ."
    args = cli.build_parser().parse_args(["dust"])
    assert args.members == 21 and args.period_days == 3.0 and args.corr_length == "250" and args.lag == 4
    assert cli.main(["dust", "--members", "1"]) == 2
    assert "at least 2 members" in capsys.readouterr().err
    assert cli.main(["dust", "--lat-range", "10"]) == 2
