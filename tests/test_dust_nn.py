"""The neural-network dust emission model (issue 15) on a small world.

One module fixture: the 5-degree quick region (9 x 10 cells, 73 land, Mezaira and Berlin in
it), four years (2017-2020) of two 3-day windows (1 January: snow in the north; 1 July: the
haboob season), the emission analysis of :mod:`calibration.dust_inversion` as the target, the
last year held out; the seed network (v2, log target) and the zero-aware model (gate x
classifier x regressor, mass-corrected, with the seed's hyperparameters; the benchmark's chosen
model adds the searched ones) trained for 10 epochs. The whole file: ~30 s on the loaded 2-core
machine (24 s CPU), most of it the fixture's worlds, land runs and inversions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ailand.dust.nn import (PREDICTOR_GROUPS, PREDICTORS, OnnxEmission, PhysicalGate, SourceMasked, TrainConfig,
                            check_table, fit_seed_network, fit_zero_aware, physics_forbids, predict, split_by_year,
                            table_arrays, to_onnx, typical_rows)
from calibration.dust_nn import QUICK_REGION, DataConfig, make_data
from calibration.dust_nn.evaluate import zero_table

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NAMES = list(PREDICTORS)


@pytest.fixture(scope="module")
def data():
    return make_data(DataConfig(windows=(("01-01", 3), ("07-01", 3)), region=dict(QUICK_REGION), stride=2, members=11))


@pytest.fixture(scope="module")
def fits(data):
    cfg = TrainConfig(epochs=10, seed=0)
    return {"seed_v2": fit_seed_network(data.train, data.val, "log", cfg),
            "zero_aware": fit_zero_aware(data.train, data.val, cfg, mass_correction=True)}


def test_fifteen_labelled_predictors_in_four_groups(data):
    assert len(PREDICTORS) == 15
    assert PREDICTOR_GROUPS == ("wind", "static soil", "seasonal soil", "state")
    for n, (units, _, _) in PREDICTORS.items():
        assert data.train[n].attrs["units"] == units
    check_table(data.test, NAMES)  # ranges, units, no NaN
    # the test year is held out whole, at every hour; train and validation are the other years
    assert set(np.unique(data.test["year"])) == {2020}
    assert set(np.unique(data.train["year"])) == set(np.unique(data.val["year"])) == {2017, 2018, 2019}
    n_tr, n_va = data.train.sizes["sample"], data.val.sizes["sample"]
    assert abs(n_va / (n_tr + n_va) - 0.1) < 0.01
    # the target is the emission analysis: zero where the scheme is zero, the scheme times a factor elsewhere
    y, e = data.train["target"].values, data.train["emission_scheme"].values
    assert np.all(y[e == 0] == 0) and (y > 0).mean() > 0.02
    assert not np.allclose(y[e > 0], e[e > 0])


def test_the_gate_is_the_schemes_physics(data):
    """The gate, computed from the predictors alone, is closed exactly where the scheme's own
    diagnostics forbid emission (and where the roughness is too high) and never where it emits."""
    tab = data.test
    X = torch.as_tensor(table_arrays(tab, NAMES, target=False))
    gate = PhysicalGate(NAMES)(X).numpy()
    forb = physics_forbids(tab)
    assert forb.mean() > 0.3 and (~forb).sum() > 100
    assert not gate[forb].any()
    assert np.all(tab["emission_scheme"].values[~gate] == 0)
    # every kind of prohibition occurs on the held-out year
    kinds = {"wind": tab["friction_velocity"].values <= tab["threshold_velocity"].values,
             "snow": tab["scheme_snow_cover"].values >= 1, "vegetation": tab["scheme_bare_fraction"].values <= 0,
             "wet": tab["soil_moisture"].values >= 0.30}
    for k, m in kinds.items():
        assert m.sum() > 10, k


def test_zero_aware_model_is_exactly_zero_where_physics_forbids_and_the_seed_network_is_not(data, fits):
    tab = data.test  # held-out year
    X = table_arrays(tab, NAMES, target=False)
    forb = physics_forbids(tab)
    za_model = fits["zero_aware"].model
    assert za_model.names == NAMES + ["dust_source"]  # the static source map is its 16th column, as for the mask
    za = predict(za_model, table_arrays(tab, za_model.names, target=False))
    seed = predict(fits["seed_v2"].model, X)
    assert np.all(za[forb] == 0.0)  # exactly zero: snow, wet soil, full vegetation, wind below threshold
    assert (seed[forb] > 0).mean() > 0.2  # the seed's problem: "the NN doesn't know about null emissions"
    # the seed's fix, the source mask, removes the emission outside sources but not where physics forbids it on them
    src = tab["dust_source"].values > 0
    masked = predict(SourceMasked(fits["seed_v2"].model), np.c_[X, tab["dust_source"].values])
    assert np.all(masked[~src] == 0) and (masked[forb & src] > 0).mean() > 0.1
    # the zero-aware model still emits where the analysis does
    y = tab["target"].values
    assert (za[y > 0] > 0).mean() > 0.5


def test_chosen_model_beats_the_seed_on_spurious_emission_and_not_in_log_rmse_over_sources(data, fits):
    z = zero_table({"seed_v2": fits["seed_v2"].model, "zero_aware": fits["zero_aware"].model}, data.test).set_index("model")
    assert z.loc["target", "spurious_kg"] == 0.0  # the analysis only scales the scheme: nothing outside sources
    assert z.loc["seed_v2", "spurious_kg"] > 0.0 and z.loc["seed_v2", "nonsource_nonzero"] > 0.1
    assert z.loc["zero_aware", "spurious_kg"] == 0.0
    # stated figure: no worse in log-space RMSE over the source cells (small world, 10 epochs: ~0.6 vs ~1.3)
    assert z.loc["zero_aware", "rmse_log_sources"] <= z.loc["seed_v2", "rmse_log_sources"]


def test_onnx_graph_has_one_input_one_output_and_matches_torch(tmp_path, fits):
    import onnx

    for name, model in (("zero_aware", fits["zero_aware"].model), ("seed_v2_mask", SourceMasked(fits["seed_v2"].model))):
        path = to_onnx(model, tmp_path / f"{name}.onnx")
        proto = onnx.load(str(path))
        assert [i.name for i in proto.graph.input] == ["predictors"] and [o.name for o in proto.graph.output] == ["emission"]
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert dims[1].dim_value == len(model.names)
        ort = OnnxEmission(path)
        assert ort.names == model.names and ort.units == model.units and ort.meta["output_units"] == "kg m-2 s-1"
        X = typical_rows(model.names, 5000, seed=3)
        a, b = predict(model, X), ort(X)
        assert a.max() > 0
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
        assert np.array_equal(a == 0, b == 0)  # the gate and the mask are in the graph


def test_training_is_seeded_and_resumes_from_its_checkpoint(tmp_path, data):
    cfg = dict(hidden=(32, 32), seed=5, max_rows=3000, patience=10)
    straight = fit_seed_network(data.train, data.val, "log", TrainConfig(epochs=4, **cfg)).model
    again = fit_seed_network(data.train, data.val, "log", TrainConfig(epochs=4, **cfg)).model
    ck = tmp_path / "ck.pt"
    fit_seed_network(data.train, data.val, "log", TrainConfig(epochs=2, **cfg), checkpoint=ck)
    blob = torch.load(ck, weights_only=False)
    blob["config"]["epochs"] = 4  # as if the 4-epoch run had stopped after epoch 2
    torch.save(blob, ck)
    resumed = fit_seed_network(data.train, data.val, "log", TrainConfig(epochs=4, **cfg), checkpoint=ck, resume=True)
    other = fit_seed_network(data.train, data.val, "log", TrainConfig(epochs=4, **{**cfg, "seed": 6})).model
    for (k, a), b, c, d in zip(straight.state_dict().items(), again.state_dict().values(),
                               resumed.model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c), k
    assert not all(torch.equal(a, d) for a, d in zip(straight.state_dict().values(), other.state_dict().values()))
    assert len(resumed.history["val_loss"]) == 4


def test_bad_input_gives_clear_errors(data):
    tab = data.val
    with pytest.raises(ValueError, match=r"lacks predictor\(s\) \['snow_depth'\]"):
        check_table(tab.drop_vars("snow_depth"), NAMES)
    bad = tab.copy()
    bad["wind_speed"] = bad["wind_speed"] * 3.6
    bad["wind_speed"].attrs["units"] = "km h-1"
    with pytest.raises(ValueError, match=r"'wind_speed' has units 'km h-1', expected 'm s-1'"):
        check_table(bad, NAMES)
    pct = tab.copy()
    pct["soil_moisture"] = pct["soil_moisture"] * 100.0  # percent, labelled as m3 m-3
    pct["soil_moisture"].attrs = dict(tab["soil_moisture"].attrs)
    with pytest.raises(ValueError, match=r"soil_moisture.*outside its physical range.*wrong units"):
        check_table(pct, NAMES)
    nan = tab.copy(deep=True)
    nan["lai"].values[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN/inf.*'lai'"):
        fit_seed_network(data.train, nan, "log", TrainConfig(epochs=1))
    one_year = data.train.isel(sample=np.flatnonzero(data.train["year"].values == 2018))
    with pytest.raises(ValueError, match="one year only"):
        split_by_year(one_year)
    with pytest.raises(ValueError, match="at least two distinct years"):
        DataConfig(years=(2019,))


def test_cli_refuses_bad_arguments(capsys):
    import argparse

    from calibration.dust_nn.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for argv, msg in ((["dust-nn", "train", "--years", "2019"], "at least two years"),
                      (["dust-nn", "train", "--models", "seed_v3"], "unknown ['seed_v3']"),
                      (["dust-nn", "evaluate", "--run", "/nonexistent/run"], "not a dust-nn run folder")):
        args = parser.parse_args(argv)
        assert args.func(args) == 2
        assert msg in capsys.readouterr().err
