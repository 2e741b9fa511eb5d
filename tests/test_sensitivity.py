"""Morris / Sobol screening: known indices, equality with SALib, labelled outputs, bad input."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from SALib.analyze import morris as salib_morris
from SALib.analyze import sobol as salib_sobol
from SALib.sample import morris as salib_morris_sample
from SALib.sample import sobol as salib_sobol_sample

import sensitivity as sa
from ailand import ParameterSpace
from sensitivity import plots

PI = np.pi


# ------------------------------------------------------------------ test functions
def ishigami(x, a=7.0, b=0.1):
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


ISHIGAMI_S1 = np.array([0.3139, 0.4424, 0.0])
ISHIGAMI_ST = np.array([0.5576, 0.4424, 0.2437])
G_A = np.array([0.0, 1.0, 4.5, 9.0, 99.0, 99.0])


def g_function(x, a=G_A):
    return np.prod((np.abs(4 * x - 2) + a) / (1 + a), axis=1)


def g_indices(a=G_A):
    v = 1.0 / (3 * (1 + a) ** 2)
    total = np.prod(1 + v) - 1
    s1 = v / total
    st = v * np.prod(1 + v) / (1 + v) / total
    return s1, st


def screening_function(x):
    """x1, x2 strongly linear, x3*x4 interacting, x5 weak, x6 inert."""
    return 20 * x[:, 0] + 10 * x[:, 1] + 5 * x[:, 2] * x[:, 3] + 0.1 * x[:, 4] + 0 * x[:, 5]


def vector_model(x):
    """(n, d=3) -> (n, 4): several outputs of different character."""
    f = ishigami(x)
    return np.stack([f, f**2 / 10, x[:, 0] * x[:, 1], np.cos(x[:, 2]) + 0.3 * x[:, 1]], axis=1)


def series_model(x):
    """(n, 3) -> DataArray (sample, time, variable): a time series of two variables."""
    t = np.linspace(0, 2 * PI, 12)
    a = np.sin(x[:, :1] + t) + 0.5 * x[:, 1:2] * np.cos(t) + 0.1 * x[:, 2:3] ** 2
    b = np.exp(0.2 * x[:, 1:2]) * (1 + 0.3 * np.sin(t)) + x[:, 0:1] * x[:, 2:3] * t / 10
    data = np.stack([a, b], axis=-1)
    return xr.DataArray(
        data,
        dims=("sample", "time", "variable"),
        coords={"time": np.arange(1, 13), "variable": ["Qle", "Qh"]},
        attrs={"units": "W m-2"},
    )


@pytest.fixture(scope="module")
def ish_space():
    return ParameterSpace.from_dict({"x1": (-PI, PI), "x2": (-PI, PI), "x3": (-PI, PI)})


def _flat(y: xr.DataArray) -> np.ndarray:
    return y.values.reshape(y.shape[0], -1)


def _compare(ours: np.ndarray, ref, point: bool):
    ref = np.asarray(ref, dtype=float)
    if point:
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10, equal_nan=True)
    else:  # bootstrap CI: the same resamples, summed in another order
        np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-12, equal_nan=True)


# ------------------------------------------------------------------ known indices
def test_ishigami_indices_within_ci(ish_space):
    design = sa.sobol_design(ish_space, 2**13, seed=1)
    res = sa.sobol_analyze(ish_space, design, ishigami(design.values), num_resamples=200, seed=2)
    assert res["S1"].dims == ("parameter",)
    for key, truth in (("S1", ISHIGAMI_S1), ("ST", ISHIGAMI_ST)):
        est, conf = res[key].values, res[f"{key}_conf"].values
        assert np.all(conf > 0) and np.all(conf < 0.1), conf
        assert np.all(np.abs(est - truth) <= conf), (key, est, truth, conf)


def test_sobol_g_function():
    space = ParameterSpace.from_dict({f"x{i + 1}": (0.0, 1.0) for i in range(len(G_A))})
    res = sa.sobol(g_function, space, n=2**12, seed=4, num_resamples=200)
    s1, st = g_indices()
    np.testing.assert_array_less(np.abs(res["S1"].values - s1), np.maximum(res["S1_conf"].values, 0.01))
    np.testing.assert_array_less(np.abs(res["ST"].values - st), np.maximum(res["ST_conf"].values, 0.01))
    # ranking follows a: smaller a, more important
    assert list(np.argsort(-res["ST"].values)[:4]) == [0, 1, 2, 3]


def test_morris_ranks_known_important_inputs():
    space = ParameterSpace.from_dict({f"x{i + 1}": (0.0, 1.0) for i in range(6)})
    res = sa.morris(screening_function, space, n_trajectories=40, seed=5)
    ms = res["mu_star"].to_series()
    np.testing.assert_allclose(ms[["x1", "x2", "x5", "x6"]], [20, 10, 0.1, 0], atol=1e-9)
    assert ms["x1"] > ms["x2"] > max(ms["x3"], ms["x4"]) > ms["x5"] > ms["x6"]
    assert res["sigma"].sel(parameter="x1") < 1e-9 < res["sigma"].sel(parameter="x3")  # interaction shows in sigma

    sc = sa.screen(res, keep=4)
    assert sc.kept == ["x1", "x2", "x3", "x4"]
    assert isinstance(sc.space, ParameterSpace) and sc.space.names == sc.kept
    assert list(sc.ranking.index[:2]) == ["x1", "x2"]
    assert sc.dropped == ["x5", "x6"]
    assert "kept" in sc.reasons["x1"] and "dropped" in sc.reasons["x6"]
    by_threshold = sa.screen(res, threshold=0.05)  # mu* relative to the top parameter
    assert by_threshold.kept == ["x1", "x2", "x3", "x4"]
    assert "below threshold" in by_threshold.reasons["x5"]
    assert sa.screen(res, threshold=0.05, keep=2).kept == ["x1", "x2"]


# ------------------------------------------------------------ equality with SALib
OUTPUT_CASES = {
    "1-D": lambda x: ishigami(x),
    "2-D": vector_model,
    "DataArray(time, variable)": series_model,
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_morris_equals_salib(ish_space, case):
    model = OUTPUT_CASES[case]
    problem = ish_space.to_salib()
    design = sa.morris_design(ish_space, 25, num_levels=6, seed=11)
    np.testing.assert_array_equal(design.values, salib_morris_sample.sample(problem, 25, num_levels=6, seed=11))
    out = model(design.values)
    res = sa.morris_analyze(ish_space, design, out, num_resamples=300, seed=3)
    y = _flat(sa.as_outputs(out))
    assert res["mu_star"].shape == (3, *sa.as_outputs(out).shape[1:])
    flat = {k: res[k].values.reshape(3, -1) for k in ("mu", "mu_star", "sigma", "mu_star_conf")}
    for m in range(y.shape[1]):
        ref = salib_morris.analyze(problem, design.values, y[:, m], num_resamples=300, num_levels=6, seed=3)
        for k in ("mu", "mu_star", "sigma"):
            _compare(flat[k][:, m], ref[k], point=True)
        _compare(flat["mu_star_conf"][:, m], ref["mu_star_conf"], point=False)


def test_morris_scaled_and_optimal_equal_salib(ish_space):
    problem = ish_space.to_salib()
    design = sa.morris_design(ish_space, 30, optimal_trajectories=8, seed=2)
    assert design.attrs["n_trajectories"] == 8 and design.sizes["sample"] == 8 * 4
    y = vector_model(design.values)
    res = sa.morris_analyze(ish_space, design, y, scaled=True, num_resamples=100, seed=9)
    for m in range(y.shape[1]):
        ref = salib_morris.analyze(problem, design.values, y[:, m], num_resamples=100, scaled=True, seed=9)
        for k in ("mu", "mu_star", "sigma"):
            _compare(res[k].values[:, m], ref[k], point=True)
        _compare(res["mu_star_conf"].values[:, m], ref["mu_star_conf"], point=False)


def test_elementary_effects_and_non_morris_design(ish_space):
    design = sa.morris_design(ish_space, 6, seed=0)
    y = vector_model(design.values)
    ee = sa.elementary_effects(design.values, y)
    assert ee.shape == (3, 6, 4)
    res = sa.morris_analyze(ish_space, design, y)
    np.testing.assert_allclose(np.abs(ee).mean(axis=1), res["mu_star"].values)
    rng = np.random.default_rng(0)  # steps that move several parameters at once
    with pytest.raises(ValueError, match="not a Morris design: step 0 of trajectory 0 moves 3 parameters"):
        sa.morris_analyze(ish_space, ish_space.from_unit(rng.random((6 * 4, 3))), y)


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
@pytest.mark.parametrize("second_order", [False, True])
def test_sobol_equals_salib(ish_space, case, second_order):
    model = OUTPUT_CASES[case]
    problem = ish_space.to_salib()
    design = sa.sobol_design(ish_space, 128, second_order=second_order, seed=5)
    ref_x = salib_sobol_sample.sample(problem, 128, calc_second_order=second_order, seed=5)
    np.testing.assert_array_equal(design.values, ref_x)
    out = model(design.values)
    res = sa.sobol_analyze(ish_space, design, out, num_resamples=50, seed=7)
    y = _flat(sa.as_outputs(out))
    keys = ["S1", "ST"] + (["S2"] if second_order else [])
    flat = {k: res[k].values.reshape(*res[k].shape[: 2 if k.startswith("S2") else 1], -1) for k in res.data_vars}
    for m in range(y.shape[1]):
        ref = salib_sobol.analyze(problem, y[:, m], calc_second_order=second_order, num_resamples=50, seed=7)
        for k in keys:
            _compare(flat[k][..., m], ref[k], point=True)
            _compare(flat[f"{k}_conf"][..., m], ref[f"{k}_conf"], point=False)


def test_torch_and_dataset_outputs(ish_space):
    torch = pytest.importorskip("torch")
    design = sa.sobol_design(ish_space, 64, seed=1)
    x = design.values
    y_np = vector_model(x)
    ref = sa.sobol_analyze(ish_space, design, y_np, seed=3)
    res_t = sa.sobol_analyze(ish_space, design, torch.tensor(y_np, dtype=torch.float64, requires_grad=True), seed=3)
    xr.testing.assert_allclose(ref, res_t)
    ds = xr.Dataset(
        {
            "Qle": (("member", "site"), y_np[:, :2], {"units": "W m-2"}),
            "Qh": (("member", "site"), y_np[:, 2:], {"units": "W m-2"}),
        },
        coords={"site": ["a", "b"]},
    )
    res_ds = sa.sobol_analyze(ish_space, design, ds, seed=3)
    assert res_ds["ST"].dims == ("parameter", "variable", "site")
    assert list(res_ds["units"].values) == ["W m-2", "W m-2"]
    np.testing.assert_allclose(res_ds["ST"].sel(variable="Qh", site="b"), ref["ST"].isel(output=3), rtol=1e-12)


def test_labelled_result_layout(ish_space):
    res = sa.sobol(series_model, ish_space, n=64, seed=1)
    assert res["ST"].dims == ("parameter", "time", "variable")
    assert list(res["variable"].values) == ["Qle", "Qh"]
    assert list(res["parameter"].values) == ish_space.names
    assert res["S1"].attrs["units"] == "1" and "long_name" in res["ST_conf"].attrs
    assert res.attrs["method"] == "sobol" and res.attrs["N"] == 64
    m = sa.morris(series_model, ish_space, n_trajectories=10, seed=1)
    assert m["mu_star"].attrs["units"].startswith("W m-2")


def test_bootstrap_blocks_match_unblocked(ish_space):
    design = sa.sobol_design(ish_space, 64, second_order=True, seed=1)
    y = series_model(design.values)
    full = sa.sobol_analyze(ish_space, design, y, seed=2)
    small = sa.sobol_analyze(ish_space, design, y, seed=2, max_memory=1)  # one output per block
    xr.testing.assert_allclose(full, small, rtol=1e-13)
    md = sa.morris_design(ish_space, 12, seed=1)
    ym = series_model(md.values)
    xr.testing.assert_allclose(
        sa.morris_analyze(ish_space, md, ym, seed=2), sa.morris_analyze(ish_space, md, ym, seed=2, max_memory=1)
    )


def test_constant_output_gives_zero_like_salib(ish_space):
    design = sa.sobol_design(ish_space, 32, seed=1)
    y = np.stack([ishigami(design.values), np.full(design.sizes["sample"], 3.0)], axis=1)
    with pytest.warns(RuntimeWarning, match="constant"):
        res = sa.sobol_analyze(ish_space, design, y, seed=3)
    assert np.all(res["S1"].values[:, 1] == 0) and np.all(res["ST_conf"].values[:, 1] == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = salib_sobol.analyze(ish_space.to_salib(), y[:, 1], calc_second_order=False, seed=3)
    np.testing.assert_array_equal(res["ST"].values[:, 1], ref["ST"])


# ------------------------------------------------------------------ bad input
def test_wrong_number_of_rows(ish_space):
    with pytest.raises(ValueError, match="rows"):
        sa.sobol(lambda x: ishigami(x)[:-1], ish_space, n=16)
    design = sa.morris_design(ish_space, 4, seed=0)
    with pytest.raises(ValueError, match="16 rows.*design has 15 rows|design has"):
        sa.morris_analyze(ish_space, design.isel(sample=slice(0, 15)), np.zeros(16))
    with pytest.raises(ValueError, match="multiple of d \\+ 1"):
        sa.morris_analyze(ish_space, design.values[:15], np.zeros(15))


def test_nan_outputs_raise_naming_rows_or_propagate(ish_space):
    design = sa.sobol_design(ish_space, 32, seed=0)
    y = vector_model(design.values)
    y[[3, 40], 1] = np.nan
    with pytest.raises(ValueError, match=r"rows 3, 40"):
        sa.sobol_analyze(ish_space, design, y)
    with pytest.warns(RuntimeWarning, match="NaN"):
        res = sa.sobol_analyze(ish_space, design, y, nan_policy="propagate", seed=1)
    assert np.all(np.isnan(res["ST"].values[:, 1]))
    clean = sa.sobol_analyze(ish_space, design, np.delete(y, 1, axis=1), seed=1)
    np.testing.assert_allclose(np.delete(res["ST"].values, 1, axis=1), clean["ST"].values)
    md = sa.morris_design(ish_space, 5, seed=0)
    ym = ishigami(md.values)
    ym[7] = np.inf
    with pytest.raises(ValueError, match="rows 7"):
        sa.morris_analyze(ish_space, md, ym)


def test_sobol_n_not_power_of_two_warns_like_salib(ish_space):
    with pytest.warns(UserWarning, match="power of 2"):
        design = sa.sobol_design(ish_space, 100, seed=0)
    assert design.sizes["sample"] == 100 * 5


def test_second_order_mismatch_is_an_error(ish_space):
    design = sa.sobol_design(ish_space, 4, seed=0)  # 4 (d + 2) = 20 rows, not a multiple of 2d + 2 = 8
    y = ishigami(design.values)
    with pytest.raises(ValueError, match="second_order"):
        sa.sobol_analyze(ish_space, design, y, second_order=True)
    with pytest.raises(ValueError, match="multiple of"):
        sa.sobol_analyze(ish_space, design.values, y, second_order=True)


def test_design_parameters_must_match_space(ish_space):
    other = ParameterSpace.from_dict({"a": (0, 1), "b": (0, 1), "c": (0, 1)})
    design = sa.sobol_design(ish_space, 16, seed=0)
    with pytest.raises(ValueError, match="do not match"):
        sa.sobol_analyze(other, design, ishigami(design.values))


def test_constraints_are_warned_about():
    space = ParameterSpace.from_dict({"lo": (0.0, 1.0, 0.2), "hi": (0.0, 1.0, 0.8)}, constraints=[("lo", "hi")])
    with pytest.warns(UserWarning, match="break the constraints"):
        design = sa.sobol_design(space, 16, seed=0)
    assert design.attrs["n_infeasible"] > 0


# ------------------------------------------------------------------ seeds, saving
def test_same_seed_same_numbers(ish_space):
    a = sa.sobol(vector_model, ish_space, n=64, seed=3)
    b = sa.sobol(vector_model, ish_space, n=64, seed=3)
    xr.testing.assert_identical(a, b)
    c = sa.sobol(vector_model, ish_space, n=64, seed=4)
    assert not np.allclose(a["S1"], c["S1"])
    m1 = sa.morris(vector_model, ish_space, n_trajectories=10, seed=3)
    m2 = sa.morris(vector_model, ish_space, n_trajectories=10, seed=3)
    xr.testing.assert_identical(m1, m2)


def test_design_and_result_roundtrip_netcdf(tmp_path):
    space = ParameterSpace.from_dict({"k": {"min": 1e-3, "max": 1.0, "default": 0.1, "scale": "log", "unit": "m"},
                                      "b": (0.0, 2.0)})
    design = sa.morris_design(space, 8, seed=1)
    assert np.all(design.sel(parameter="k") > 0)
    design.to_netcdf(tmp_path / "design.nc")
    loaded = xr.open_dataarray(tmp_path / "design.nc")
    y = np.log(loaded.sel(parameter="k").values) + loaded.sel(parameter="b").values ** 2
    res = sa.morris_analyze(space, loaded, y)
    res.to_netcdf(tmp_path / "result.nc")
    back = xr.open_dataset(tmp_path / "result.nc")
    sc = sa.screen(back, keep=1)  # space rebuilt from the parameter_* coordinates
    assert sc.full_space.scales["k"] == "log" and sc.full_space.units["k"] == "m"
    sc.to_xarray().to_netcdf(tmp_path / "screen.nc")


# ------------------------------------------------------------------ ailand Model adapter
class FakeLand:
    """Stands in for ToyEcLand: run(forcing, params=DataArray(member, parameter)) -> Dataset(time, site, member)."""

    def __init__(self):
        self.calls = []

    def run(self, forcing, params=None, state0=None):
        self.calls.append(params.sizes["member"])
        p = params.transpose("member", "parameter")
        x1, x2, x3 = (p.sel(parameter=n).values for n in ("x1", "x2", "x3"))
        t = forcing["time"]
        doy = np.asarray(forcing.indexes["time"].day_of_year)[:, None, None] / 365.0
        site = np.arange(forcing.sizes["site"])[None, :, None]
        qle = 100 * np.sin(2 * PI * doy) * x1 + 20 * site * x2 + 0 * x3
        qh = 50 + 10 * x2**2 + 10 * x1 * x3 * doy + 0 * site
        dims = ("time", "site", "member")
        return xr.Dataset(
            {"Qle": (dims, qle, {"units": "W m-2"}), "Qh": (dims, np.broadcast_to(qh, qle.shape), {"units": "W m-2"})},
            coords={"time": t, "site": forcing["site"], "member": p["member"].values},
        )


@pytest.fixture
def forcing():
    time = pd.date_range("2020-01-01", "2020-12-31", freq="D")
    return xr.Dataset({"Tair": (("time", "site"), np.full((len(time), 2), 280.0))},
                      coords={"time": time, "site": [0, 1]})


def test_model_outputs_adapter(ish_space, forcing):
    model = FakeLand()
    f = sa.model_outputs(model, forcing, ish_space, reduce=sa.monthly_means(["Qle", "Qh"]), chunk_size=7,
                         progress=False)
    x = ish_space.sample(20, seed=0).values
    y = f(x)
    assert y.dims == ("sample", "variable", "month", "site") and y.shape == (20, 2, 12, 2)
    assert model.calls == [7, 7, 6]
    whole = sa.model_outputs(FakeLand(), forcing, ish_space, reduce=sa.monthly_means(["Qle", "Qh"]),
                             chunk_size=None, progress=False)(x)
    xr.testing.assert_allclose(y, whole)

    res = sa.sobol(model, ish_space, n=64, seed=2, forcing=forcing, reduce=sa.monthly_means(["Qle", "Qh"]),
                   batch_size=100)
    assert res["ST"].dims == ("parameter", "variable", "month", "site")
    np.testing.assert_allclose(res["ST"].sel(parameter="x3", variable="Qle"), 0.0, atol=1e-12)
    sc = sa.screen(res, threshold=0.01)
    assert sc.kept == ["x1", "x2", "x3"]  # x3 matters for Qh through x1 * x3
    with pytest.raises(TypeError, match="forcing"):
        sa.sobol(model, ish_space, n=16)


class StrictLand(FakeLand):
    """Like ToyEcLand, refuses parameter sets that break the constraints."""

    def __init__(self, space):
        super().__init__()
        self.space = space

    def run(self, forcing, params=None, state0=None):
        if not self.space.feasible(params.transpose("member", "parameter").values).all():
            raise ValueError("parameters break a constraint")
        return super().run(forcing, params=params)


def test_infeasible_rows_are_projected_or_refused(forcing):
    space = ParameterSpace.from_dict(
        {"x1": (-1.0, 1.0, -0.5), "x2": (-0.5, 2.0, 0.5), "x3": (0.0, 3.0, 1.0)},
        constraints=[("x1", "x2"), ("x2", "x3")],
    )
    x = np.array([[0.9, -0.4, 2.0], [0.5, 1.8, 0.2], [-0.9, 0.0, 1.0]])  # row 0: x1 >= x2; row 1: x2 >= x3
    xp, moved = sa.project_to_constraints(space, x)
    assert list(moved) == [True, True, False] and space.feasible(xp).all()
    np.testing.assert_array_equal(xp[2], x[2])
    reduce = sa.monthly_means("Qh")
    strict = sa.model_outputs(StrictLand(space), forcing, space, reduce=reduce, infeasible="raise", progress=False)
    with pytest.raises(ValueError, match="rows 0, 1"):
        strict(x)
    with pytest.warns(UserWarning, match="moved just inside"):
        y = sa.model_outputs(StrictLand(space), forcing, space, reduce=reduce, progress=False)(x)
    assert y.sizes["sample"] == 3
    with pytest.warns(UserWarning):  # the design warns about the constraints, the adapter about projecting
        res = sa.morris(StrictLand(space), space, n_trajectories=6, seed=0, forcing=forcing, reduce=reduce)
    assert np.isfinite(res["mu_star"]).all()


# ------------------------------------------------------------------ plots
def test_plots_return_figures_and_save(ish_space, forcing, tmp_path):
    from matplotlib.figure import Figure

    reduce = sa.monthly_means(["Qle", "Qh"])
    mres = sa.morris(FakeLand(), ish_space, n_trajectories=6, seed=1, forcing=forcing, reduce=reduce,
                     num_resamples=50)
    sres = sa.sobol(FakeLand(), ish_space, n=32, seed=1, forcing=forcing, reduce=reduce)
    figs = {
        "scatter.png": plots.mu_star_sigma(mres, sel={"variable": "Qle", "site": 1}, max_panels=4),
        "bars_sobol.png": plots.index_bars(sres, sel={"variable": "Qh", "month": [1, 7]}),
        "bars_morris.png": plots.index_bars(mres, sel={"variable": "Qh", "month": 1}),
        "heat.png": plots.heatmap(mres),
        "time.png": plots.time_heatmap(sres, sel={"variable": "Qle"}),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
    plots.heatmap(sres, index="S1", path=tmp_path / "sub" / "saved.png")
    assert (tmp_path / "sub" / "saved.png").exists()
    with pytest.raises(ValueError, match="pick one"):
        plots.time_heatmap(sres)
