"""Emulator step Jacobians, rollout parameter sensitivities (emulator and physics), ONNX export
and the `ailand jacobian` / `ailand export-onnx` commands, on a tiny trained emulator."""

from __future__ import annotations

import json
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import xarray as xr

import ailand
from ailand import cli
from ailand.emulator import Emulator, train_emulator
from ailand.emulator.jacobian import (
    compare_sensitivities,
    input_scales,
    output_scales,
    rollout_sensitivity,
    step_inputs,
    step_jacobian,
)
from ailand.emulator.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxEmulatorStep, to_onnx

SITES = ["FR-Fon", "FI-Hyy", "BE-Lon"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny emulator (2x64 MLP, 3 epochs) trained on a 4-member, 3-site, Jan-Mar ensemble (~20 s)."""
    torch.manual_seed(0)
    np.random.seed(0)
    root = tmp_path_factory.mktemp("jac")
    space = ailand.ParameterSpace.default()
    ailand.run_ensemble(
        ailand.ToyEcLand(compile=False), ailand.synthetic_forcing(SITES, "2020-01-01", "2020-03-31"),
        space.sample(4, seed=0), root / "tiny.zarr", spinup_years=0, progress=False,
    )
    em, _ = train_emulator(
        root / "tiny.zarr", width=64, depth=2, epochs=3, steps_per_epoch=20, batch_size=256,
        rollout_steps=4, rollout_batch=32, progress=False,
    )
    path = em.save(root / "tiny.pt")
    forcing = ailand.synthetic_forcing(SITES[:2], "2020-03-01", "2020-03-10")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # extrapolation warnings of the barely-trained emulator
        rows = step_inputs(em, forcing, spinup_years=0)
    return {"em": em, "path": path, "root": root, "forcing": forcing, "rows": rows}


# --------------------------------------------------------------- step Jacobian
def test_step_inputs_pick_the_step_and_reproduce_the_rollout(tiny):
    em, forcing = tiny["em"], tiny["forcing"]
    x = step_inputs(em, forcing, sites="FI-Hyy", times=["2020-03-05T06:00", "2020-03-05T11:59"], spinup_years=0)
    assert x.dims == ("sample", "input") and x.shape == (2, len(em.input_names))
    assert list(x["site"].values) == ["FI-Hyy", "FI-Hyy"]
    assert (x["time"].values == np.datetime64("2020-03-05T06:00")).all()  # both fall in the 06-12 step
    ic = em.initial_conditions(forcing, spinup_years=0)
    run = em.run(forcing, state0=ic).sel(site="FI-Hyy", time="2020-03-05T12:00")
    y = em.step_flat(em.tensor(x.values[:1]))[0].detach().numpy()
    for name in ("swvl1", "stl1", "skt", "Qle", "Qh"):
        np.testing.assert_allclose(y[em.output_names.index(name)], float(run[name]), rtol=1e-5)
    with pytest.raises(ValueError, match="outside the forcing"):
        step_inputs(em, forcing, times="2021-01-01", spinup_years=0)
    with pytest.raises(ValueError, match="XX-Nope"):
        step_inputs(em, forcing, sites="XX-Nope", spinup_years=0)


def test_step_jacobian_shapes_labels_and_units(tiny):
    em, rows = tiny["em"], tiny["rows"].isel(sample=slice(0, 40, 8))
    J = step_jacobian(em, rows)
    assert J.dims == ("sample", "output", "input")
    assert J.shape == (5, len(em.output_names), len(em.input_names))
    assert list(J["output"].values) == list(em.output_names) and list(J["input"].values) == list(em.input_names)
    units_in = dict(zip(J["input"].values, J["input_units"].values))
    units_out = dict(zip(J["output"].values, J["output_units"].values))
    assert units_in["SWdown"] == "W m-2" and units_in["RSMIN"] == "s m-1" and units_in["KSAT"] == "m s-1"
    assert units_out["Qle"] == "W m-2" and units_out["skt"] == "K"
    assert "per" in J.attrs["description"] and J.attrs["units"] == "output_units / input_units"
    assert list(J["site"].values) == list(rows["site"].values)  # sample coords carried over
    assert np.isfinite(J.values).all()
    Jf = step_jacobian(em, rows.values, method="jacfwd")  # plain array: same numbers
    scale = input_scales(em, rows) [:, None, :] / output_scales(em)[None, :, None]
    np.testing.assert_allclose(Jf.values * scale, J.values * scale, atol=1e-4)
    with pytest.raises(ValueError, match="56|ordered as emulator.input_names"):
        step_jacobian(em, np.zeros((3, len(em.input_names) - 1)))
    with pytest.raises(ValueError, match="method"):
        step_jacobian(em, rows, method="adjoint")


def test_step_jacobian_equals_finite_differences_in_float64(tiny):
    em64 = Emulator.load(tiny["path"]).to(dtype=torch.float64)
    x = tiny["rows"].isel(sample=slice(3, 80, 11)).values.copy()
    for name in ("Rainf", "Snowf"):  # keep away from the kink of clamp(precip, min=0)
        i = em64.input_names.index(name)
        x[:, i] = np.maximum(x[:, i], 2e-6)
    J = step_jacobian(em64, x).values
    h = 1e-6 * input_scales(em64, x)  # (B, n_in)
    X = torch.as_tensor(x, dtype=torch.float64)
    fd = np.empty_like(J)
    with torch.no_grad():
        y0 = em64.step_flat(X).numpy()
        for j in range(x.shape[1]):
            e = torch.zeros_like(X)
            e[:, j] = torch.as_tensor(h[:, j])
            fd[:, :, j] = (em64.step_flat(X + e) - em64.step_flat(X - e)).numpy() / (2 * h[:, j])[:, None]
    # away from the hard bounds only (a clamped output has a one-sided derivative)
    lo = em64._lo.numpy().tolist() + em64._dlo.numpy().tolist()
    hi = em64._hi.numpy().tolist() + em64._dhi.numpy().tolist()
    sc = output_scales(em64)
    free = (y0 > np.array(lo) + 1e-3 * sc) & (y0 < np.array(hi) - 1e-3 * sc)
    i_sd, i_wsn = em64.output_names.index("sd"), em64.output_names.index("wsn")
    free[:, i_wsn] &= y0[:, i_wsn] < y0[:, i_sd] - 1e-3 * sc[i_wsn]
    sw = [i for i, n in enumerate(em64.output_names) if n.startswith("swvl")]
    free[:, sw] &= y0[:, sw] < x[:, [em64.input_names.index("THETA_SAT")]] - 1e-3 * sc[sw]
    assert free.mean() > 0.5
    scaled = lambda a: a * h[:, None, :] / 1e-6 / sc[None, :, None]  # noqa: E731  dimensionless
    err = np.abs(scaled(J) - scaled(fd))[free]
    assert err.max() < 1e-6, err.max()


# --------------------------------------------------------- rollout sensitivity
def test_physics_rollout_sensitivity_equals_finite_differences():
    ph = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    forcing = ailand.synthetic_forcing(["FR-Fon", "FI-Hyy"], "2020-05-01", "2020-05-03")
    period = slice("2020-05-02", "2020-05-03")
    ic = ph.initial_conditions(forcing, spinup_years=0)
    names = ["RSMIN", "THETA_CAP", "Z0M", "RLAMSK"]
    base = {"RSMIN": 120.0}
    s = rollout_sensitivity(ph, forcing, params=base, names=names, output="Qle", period=period, state0=ic)
    assert s.dims == ("site", "parameter") and list(s["parameter"].values) == names
    assert s.attrs["units"] == "W m-2 per param_units"
    defaults = ph.space.complete(base)

    def mean_qle(p):
        out = ph.run(forcing, params=p, state0=ic, outputs=["Qle"])  # hourly, labelled at interval ends
        start = out["time"].values - np.timedelta64(3600, "s")
        keep = (start >= np.datetime64("2020-05-02")) & (start < np.datetime64("2020-05-04"))
        return out["Qle"].isel(time=keep).mean("time").values

    for n in names:
        h = 1e-5 * defaults[n]
        fd = (mean_qle({**base, n: defaults[n] + h}) - mean_qle({**base, n: defaults[n] - h})) / (2 * h)
        np.testing.assert_allclose(s.sel(parameter=n).values, fd, rtol=1e-4, atol=1e-8 * np.abs(s.values).max())
    scaled = rollout_sensitivity(ph, forcing, params=base, names=names, period=period, state0=ic, scaled=True)
    np.testing.assert_allclose(scaled.values, s.values * s["param_range_factor"].values)
    np.testing.assert_allclose(s["param_range_factor"].sel(parameter="RSMIN"), 120.0 * np.log(400 / 40))  # log parameter
    with pytest.raises(ValueError, match="unknown parameter"):
        rollout_sensitivity(ph, forcing, names=["NOPE"], state0=ic)
    with pytest.raises(ValueError, match="unknown output"):
        rollout_sensitivity(ph, forcing, output="Qnope", state0=ic)
    with pytest.raises(ValueError, match="selects no model interval"):
        rollout_sensitivity(ph, forcing, period=slice("2021-01-01", "2021-01-02"), state0=ic)


def test_emulator_sensitivities_compare_with_the_physics(tiny):
    em = tiny["em"]
    ph = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    forcing = tiny["forcing"]
    names = ["RSMIN", "LAI_SCALE", "THETA_CAP", "Z0M", "ALB_VEG"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = rollout_sensitivity(em, forcing, names=names, period=slice("2020-03-05", "2020-03-06"), sites="FI-Hyy", spinup_years=0)
        ds = compare_sensitivities(em, ph, forcing, names=names, outputs=["Qle", "skt"], period=slice("2020-03-05", "2020-03-06"), spinup_years=0)
    assert s.dims == ("site", "parameter") and s.shape == (1, 5) and np.isfinite(s.values).all()
    assert set(ds.data_vars) == {"emulator", "physics", "rel_error", "sign_agree", "significant"}
    assert ds["emulator"].dims == ("output", "site", "parameter") and ds.sizes == {"output": 2, "site": 2, "parameter": 5}
    big = np.abs(ds["physics"]).max("parameter")
    assert (ds["significant"] == (np.abs(ds["physics"]) >= 0.05 * big)).all()
    for k in ("sign_agreement", "median_rel_error", "n_significant"):
        assert k in ds.attrs
    assert 0 <= ds.attrs["sign_agreement"] <= 1 and ds.attrs["n_significant"] >= 4
    with pytest.raises(ValueError, match="unknown output 'Qnope'"):
        rollout_sensitivity(em, forcing, output="Qnope")


# ------------------------------------------------------------------------ ONNX
def test_onnx_export_matches_torch_and_carries_metadata(tiny):
    import onnx

    em, rows = tiny["em"], tiny["rows"]
    path = to_onnx(em, tiny["root"] / "step.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [INPUT_NAME] and [o.name for o in model.graph.output] == [OUTPUT_NAME]
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["input_names"] == list(em.input_names) and meta["output_names"] == list(em.output_names)
    assert meta["dt_seconds"] == em.dt and meta["input_units"][em.input_names.index("RSMIN")] == "s m-1"
    assert {"output_units", "ailand_version", "description"} <= set(meta)

    step = OnnxEmulatorStep(path)
    assert step.input_names == list(em.input_names) and step.output_units == list(em.output_units()) and step.dt == em.dt
    x = rows.values.astype(np.float32)
    # also rows that hit the hard bounds: dry soil, negative precipitation, no snow
    x2 = x[:50].copy()
    x2[:, :4] = 0.0
    x2[:, em.input_names.index("Rainf")] = -1e-5
    x2[:, em.input_names.index("sd")] = 0.0
    for xx, f in ((x, 1e-3), (x[:1], 1e-3), (x2, 1e-2)):
        with torch.no_grad():
            ref = em.step_flat(torch.as_tensor(xx)).numpy()
        got = step(xx)
        assert got.shape == ref.shape
        floor = f * output_scales(em)  # values near zero (float32 cancellation) against a small floor
        rel = np.abs(got - ref) / (np.abs(ref) + floor)
        assert rel.max() < 1e-5, (rel.max(), em.output_names[int(rel.max(0).argmax())])
    assert step(x[0]).shape == (len(em.output_names),)
    with pytest.raises(ValueError, match="batch, 56"):
        step(x[:, :10])


# ------------------------------------------------------------------------- CLI
def test_cli_jacobian_writes_netcdf_and_png(tiny, tmp_path, capsys):
    out, png = tmp_path / "jac.nc", tmp_path / "jac.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main([
            "jacobian", "--emulator", str(tiny["path"]), "--sites", "FI-Hyy", "--time", "2020-03-15T06:00",
            "--start", "2020-03-10", "--spinup-years", "0", "--out", str(out), "--plot", str(png),
        ])
    assert rc == 0 and out.exists() and png.stat().st_size > 10_000
    ds = xr.open_dataset(out)
    assert ds["jacobian"].dims == ("sample", "output", "input") and ds.sizes["sample"] == 1
    assert str(ds["site"].values[0]) == "FI-Hyy" and "output_units" in ds.coords and "jacobian_scaled" in ds
    assert "wrote" in capsys.readouterr().out


def test_cli_export_onnx(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert cli.main(["export-onnx", "--emulator", str(tiny["path"]), "--out", str(out)]) == 0
    step = OnnxEmulatorStep(out)
    x = tiny["rows"].values[:8].astype(np.float32)
    with torch.no_grad():
        ref = tiny["em"].step_flat(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(step(x), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
