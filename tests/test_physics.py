"""Science checks of the toy ecLand: budgets, bounds, gradients, snow, parameter relevance, inputs."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import ailand
from ailand.physics import column
from ailand.physics import constants as c
from ailand.physics.snow import fresh_snow_density, liquid_water_capacity

F64 = torch.float64


@pytest.fixture(scope="module")
def space():
    return ailand.ParameterSpace.default()


@pytest.fixture(scope="module")
def forcing2y():
    return ailand.synthetic_forcing(None, "2020-01-01", "2021-12-31", seed=0)


def corner_params(model, space):
    """Parameters (3, 1): defaults, all minima, all maxima (both corners satisfy the constraints)."""
    b = space.bounds
    rows = np.stack([space.default_vector, b[:, 0], b[:, 1]])
    assert space.feasible(rows).all()
    return model.param_tensors({n: torch.tensor(rows[:, i:i + 1]) for i, n in enumerate(space.names)})


def storage(state):
    """Column water [kg m-2]: soil + snow + interception."""
    dz = torch.tensor(c.DZ, dtype=state["swvl"].dtype)
    return (state["swvl"] * dz).sum(-1) * c.RHO_W + (state["sd"] + state["wl"]) * c.RHO_W


def test_water_and_energy_budgets_close_float64(space, forcing2y):
    model = ailand.ToyEcLand(dtype=F64)
    f, st, _ = model.prepare(forcing2y)
    p = corner_params(model, space)
    s0 = model.initial_state(f, p)
    want = ["Evap", "Qs", "Qsb", "Rnet", "Qh", "Qle", "Qg"]
    out, s1 = model.simulate(f, p, st, s0, outputs=want)
    dt = model.dt
    precip = ((f["Rainf"] + f["Snowf"]).sum(0) * dt).expand(3, -1)
    loss = (out["Evap"] + out["Qs"] + out["Qsb"]).sum(0) * dt
    residual = precip - loss - (storage(s1) - storage(s0))
    rel = (residual.abs() / precip).max().item()
    assert rel < 1e-6, f"water balance residual {rel:.2e} of total precipitation"
    energy = out["Rnet"] - out["Qh"] - out["Qle"] - out["Qg"]
    assert energy.abs().max().item() < 1e-8  # W m-2, every step: exact by construction
    assert out["Qle"].abs().max() > 100  # the check is not vacuous


def test_bounds_over_30_years_with_corner_parameters(space):
    """30 years of hourly steps at every default site for defaults, min and max corners (float32)."""
    model = ailand.ToyEcLand(compile=True)  # the compiled step: ~25x faster than eager at this size
    forcing = ailand.synthetic_forcing(None, "1990-01-01", "2019-12-31", seed=3)
    f, st, _ = model.prepare(forcing)
    p = corner_params(model, space)
    theta_sat = p["THETA_SAT"]
    state = model.initial_state(f, p)
    want = ["swvl1", "swvl2", "swvl3", "swvl4", "sd", "wl", "albedo", "skt", "stl4", "Qle", "Qh", "tsn", "rsn"]
    years = pd.DatetimeIndex(forcing.time.values).year
    seen_snow = torch.zeros(3, forcing.sizes["site"], dtype=torch.bool)
    for y in np.unique(years):
        idx = np.flatnonzero(years == y)
        fy = {k: v[idx[0]:idx[-1] + 1] for k, v in f.items()}
        out, state = model.simulate(fy, p, st, state, outputs=want)
        for k, v in out.items():
            assert torch.isfinite(v).all(), f"{k} not finite in {y}"
        for k in ("swvl1", "swvl2", "swvl3", "swvl4"):
            assert (out[k] >= 0).all() and (out[k] <= theta_sat * (1 + 1e-5)).all(), f"{k} out of [0, THETA_SAT] in {y}"
        assert (out["sd"] >= 0).all() and (out["wl"] >= 0).all()
        assert ((out["albedo"] >= 0) & (out["albedo"] <= 1)).all()
        assert (out["skt"] > 180).all() and (out["skt"] < 360).all(), f"skin temperature unphysical in {y}"
        assert (out["tsn"] <= c.TT + 1e-3).all()
        seen_snow |= out["sd"].amax(0) > 0.01
    # no drift to a degenerate state: the deep soil still has a seasonal cycle in the last year
    assert (out["stl4"].amax(0) - out["stl4"].amin(0) > 0.1).all()
    assert seen_snow[:, [0, 1, 2]].all()  # FR-Fon, FI-Hyy, RU-Cok see snow with every parameter set


GRAD_OUTPUTS = ("Qle", "swvl1", "sd", "albedo")


def _period_means(model, f, st, names, X):
    """Parameter rows X (members, d) -> period means (variable, member, site)."""
    out, _ = model.simulate(f, model.param_tensors({n: X[:, i:i + 1] for i, n in enumerate(names)}), st,
                            outputs=list(GRAD_OUTPUTS))
    return torch.stack([out[k].mean(0) for k in GRAD_OUTPUTS])


def test_gradients_match_central_finite_differences(space):
    """d(mean Qle, swvl1, sd, albedo over Mar-May)/d(every parameter) at a boreal and a temperate site.

    Columns are independent, so the whole Jacobian comes from one backward pass: member m
    carries its own copy of the parameters and contributes only output m to the sum.
    """
    model = ailand.ToyEcLand(dtype=F64)
    forcing = ailand.synthetic_forcing(["FI-Hyy", "FR-Fon"], "2020-03-01", "2020-05-31", seed=1)
    f, st, _ = model.prepare(forcing)
    names, d = space.names, len(space)
    x0 = torch.tensor(space.default_vector, dtype=F64)
    pairs = [(v, s) for v in range(len(GRAD_OUTPUTS)) for s in range(2)]
    X = x0.repeat(len(pairs), 1).requires_grad_(True)
    y = _period_means(model, f, st, names, X)
    jac = torch.autograd.grad(sum(y[v, m, s] for m, (v, s) in enumerate(pairs)), X)[0]  # (8, d)
    # central differences, every perturbed set a member of one batch
    rng = torch.tensor(space.bounds[:, 1] - space.bounds[:, 0])
    h = 1e-6 * rng
    rows = x0.repeat(2 * d, 1)
    rows[0::2] += torch.diag(h)
    rows[1::2] -= torch.diag(h)
    with torch.no_grad():
        yb = _period_means(model, f, st, names, rows)
    yb = torch.stack([yb[v, :, s] for v, s in pairs], 1)  # (2d, 8)
    fd = ((yb[0::2] - yb[1::2]) / (2 * h[:, None])).T  # (8, d)
    # compare the output change over each parameter's range; "tiny" is judged against the
    # variable's magnitude over both sites (a snow-free site's d(sd) is round-off)
    a, b = jac * rng, fd * rng
    y0 = y.detach()[:, 0, :]  # (variable, site)
    scale = torch.stack([y0[v].abs().max() for v, _ in pairs])[:, None]
    # (finite differences carry ~1e-8 x scale of round-off after ~2000 float64 steps)
    big = b.abs() > 1e-5 * scale
    rel = torch.where(big, (a - b).abs() / b.abs().clamp(min=1e-300), torch.zeros_like(a))
    assert big.sum() > 100, "too few non-negligible sensitivities for a meaningful check"
    o, k = divmod(int(rel.argmax()), d)
    assert rel.max().item() < 1e-4, (
        f"max relative autograd/FD mismatch {rel.max().item():.2e} for {GRAD_OUTPUTS[pairs[o][0]]} "
        f"site {pairs[o][1]} / {names[k]}: autograd {a[o, k]:.6e}, FD {b[o, k]:.6e}"
    )


def test_gradient_signs_summer(space):
    """Physically expected signs in a temperate summer (FR-Fon, June-July)."""
    model = ailand.ToyEcLand(dtype=F64)
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-07-31", seed=2)
    f, st, _ = model.prepare(forcing)
    x = {n: torch.tensor(v, dtype=F64, requires_grad=True) for n, v in space.defaults.items()}
    out, _ = model.simulate(f, model.param_tensors(x), st, outputs=["Qle", "Qh"])
    qle, qh = out["Qle"].mean(), out["Qh"].mean()
    g_le = torch.autograd.grad(qle, [x["RSMIN"], x["LAI_SCALE"], x["ALB_VEG"]], retain_graph=True)
    g_h = torch.autograd.grad(qh, [x["RSMIN"], x["ALB_VEG"]])
    assert g_le[0] < 0  # more stomatal resistance, less transpiration
    assert g_le[1] > 0  # more leaves, more transpiration
    assert g_le[2] < 0  # brighter canopy, less available energy
    assert g_h[0] > 0  # energy not used for transpiration heats the air
    assert g_h[1] < 0


def test_gradient_with_respect_to_initial_state():
    model = ailand.ToyEcLand(dtype=F64)
    forcing = ailand.synthetic_forcing(["US-Kon"], "2020-06-01", "2020-06-20", seed=0)
    f, st, _ = model.prepare(forcing)
    p = model.param_tensors()
    s0 = model.initial_state(f, p)

    def mean_qle(theta0):
        s = dict(s0, swvl=theta0)
        out, _ = model.simulate(f, p, st, s, outputs=["Qle"])
        return out["Qle"].mean()

    theta = (s0["swvl"] * 0 + 0.22).requires_grad_(True)
    g = torch.autograd.grad(mean_qle(theta), theta)[0]
    h = 1e-6
    e = torch.zeros_like(theta)
    e[..., 1] = h
    with torch.no_grad():
        fd = (mean_qle(theta + e) - mean_qle(theta - e)) / (2 * h)
    assert g[..., 1].item() > 0  # wetter root zone, more evaporation
    assert abs(g[..., 1].item() - fd.item()) < 1e-4 * abs(fd.item())


def test_every_parameter_matters_somewhere(space):
    """Each parameter moved from its min to its max changes some daily output at some site."""
    model = ailand.ToyEcLand()
    forcing = ailand.synthetic_forcing(None, "2020-01-01", "2020-12-31", seed=0)
    names = space.names
    b = space.bounds
    rows = [space.default_vector]
    for i in range(len(names)):
        for j in (0, 1):
            x = space.default_vector.copy()
            x[i] = b[i, j]
            rows.append(x)
    rows = np.array(rows)
    # keep one-at-a-time corners feasible: THETA_PWP max (0.25) < THETA_CAP default (0.32), etc.
    assert space.feasible(rows).all()
    da = space.to_dataarray(rows)
    ds = model.run(forcing, params=da, output_freq="1D")
    keys = ["Qle", "Qh", "swvl1", "swvl2", "swvl3", "swvl4", "sd", "rsn", "asn", "skt", "Qs", "Qsb", "wl", "wsn", "albedo"]
    base = ds[keys].isel(member=0)
    spread = base.std("time") + 1e-12
    effect = {}
    for i, n in enumerate(names):
        lo, hi = ds[keys].isel(member=1 + 2 * i), ds[keys].isel(member=2 + 2 * i)
        rel = (abs(hi - lo).max("time") / spread).to_array().max().item()
        effect[n] = rel
    weak = {n: round(v, 4) for n, v in effect.items() if v < 0.05}
    assert not weak, f"parameters with no measurable effect (max change / daily std): {weak}"


def test_snow_accumulates_and_melts_at_cold_sites(forcing2y):
    model = ailand.ToyEcLand()
    ds = model.run(forcing2y.sel(site=["FI-Hyy", "RU-Cok"]), output_freq="1D", spinup_years=1)
    for site in ("FI-Hyy", "RU-Cok"):
        sd = ds.sd.sel(site=site)
        late_winter = sd.sel(time=slice("2021-02-15", "2021-03-31")).mean().item()
        summer = sd.sel(time=slice("2021-07-15", "2021-08-15")).max().item()
        assert late_winter > 0.03, f"{site}: too little winter snow ({late_winter:.3f} m)"
        assert summer < 1e-3, f"{site}: snow survives the summer ({summer:.3f} m)"
        melt = ds.Qsm.sel(site=site).sel(time=slice("2021-04-01", "2021-06-30")).sum().item() * 86400
        assert melt > 20, f"{site}: no spring melt ({melt:.1f} kg m-2)"
        # snow darkens while it ages and melts; fresh snow brightens it again (ecLand resets fully
        # only after 10 kg m-2 of snowfall in a step, so daily means at the dry tundra stay < 0.8)
        asn = ds.asn.sel(site=site)
        assert asn.max() > 0.75 and asn.min() < 0.65


def test_fresh_snow_density_and_liquid_capacity_formulas():
    T = torch.tensor([253.16, 268.16, 272.0])
    u = torch.tensor([0.0, 4.0, 9.0])
    rho = fresh_snow_density(T, u, 109.0, 6.0, 26.0)
    expected = np.maximum(50.0, 109 + 6 * (T.numpy() - 273.16) + 26 * np.sqrt(u.numpy()))
    np.testing.assert_allclose(rho.numpy(), expected, rtol=1e-6)
    assert rho[0] == 50.0  # floor
    swe = torch.tensor([100.0, 100.0])
    rsn = torch.tensor([150.0, 300.0])
    lwc = liquid_water_capacity(swe, rsn, 200.0, 0.03, 0.1)
    np.testing.assert_allclose(lwc.numpy(), [100 * (0.03 + 0.07 * 0.25), 100 * 0.03], rtol=1e-6)


def _one_step(state, forcing, params=None):
    model = ailand.ToyEcLand(dtype=F64)
    p = model.param_tensors(params)
    s = column.derived_static({"cveg": torch.tensor([0.5], dtype=F64), "sand": torch.tensor([0.4], dtype=F64)}, p)
    base = {"Tair": 268.16, "Qair": 0.002, "Wind_E": 4.0, "Wind_N": 3.0, "SWdown": 0.0, "LWdown": 250.0,
            "Rainf": 0.0, "Snowf": 0.0, "PSurf": 1e5, "lai": 1.0}
    f = {k: torch.tensor([forcing.get(k, v)], dtype=F64) for k, v in base.items()}
    st = {"swvl": torch.full((1, 4), 0.3, dtype=F64), "stl": torch.full((1, 4), 270.0, dtype=F64),
          "skt": torch.tensor([268.0], dtype=F64), "sd": torch.zeros(1, dtype=F64), "wsn": torch.zeros(1, dtype=F64),
          "rsn": torch.tensor([100.0], dtype=F64), "asn": torch.tensor([0.6], dtype=F64),
          "tsn": torch.tensor([265.0], dtype=F64), "wl": torch.zeros(1, dtype=F64)}
    st.update({k: torch.as_tensor(v, dtype=F64).reshape(st[k].shape) for k, v in state.items()})
    return column.step(st, f, p, s, 3600.0), p


def test_model_uses_the_snow_formulas():
    # snowfall onto bare ground: the new pack has the fresh density, then one step of compaction
    sf = 20.0 / 3600  # 20 kg m-2 in one hour
    (new, _), p = _one_step({}, {"Snowf": sf})
    rho_f = fresh_snow_density(torch.tensor(268.16), torch.tensor(5.0), p["RHOMINSNA"], p["RHOMINSNB"], p["RHOMINSNC"])
    k = np.exp(-c.TAU_COMPACT / 24)
    expected = c.RHO_SNOW_MAX_COLD - (c.RHO_SNOW_MAX_COLD - rho_f.item()) * k
    assert abs(new["rsn"].item() - expected) < 0.05
    assert abs(new["asn"].item() - p["RALFMAXSN"].item()) < 1e-9  # fresh snow resets the albedo
    # a warm, sunny hour on a wet ripe pack: liquid water is held up to the capacity, the rest drains
    (new, diag), p = _one_step(
        {"sd": 0.05, "wsn": 0.004, "rsn": 250.0, "tsn": 273.16, "skt": 275.0},
        {"Tair": 280.0, "SWdown": 700.0, "LWdown": 330.0, "Rainf": 5.0 / 3600},
    )
    cap = liquid_water_capacity(new["sd"] * 1000, new["rsn"], p["RLWCSWEA"], p["RLWCSWEB"], p["RLWCSWEC"])
    assert diag["Qsm"].item() > 0
    assert abs(new["wsn"].item() * 1000 - cap.item()) < 1e-9  # full to capacity, excess released


def test_same_seed_same_numbers():
    model = ailand.ToyEcLand()
    f1 = ailand.synthetic_forcing(["FR-Fon", "SN-Dhr"], "2020-03-01", "2020-03-10", seed=5)
    f2 = ailand.synthetic_forcing(["FR-Fon", "SN-Dhr"], "2020-03-01", "2020-03-10", seed=5)
    xr.testing.assert_identical(f1, f2)
    a = model.run(f1, params={"RSMIN": 150.0})
    b = model.run(f2, params={"RSMIN": 150.0})
    xr.testing.assert_identical(a, b)
    c3 = model.run(ailand.synthetic_forcing(["FR-Fon", "SN-Dhr"], "2020-03-01", "2020-03-10", seed=6))
    assert not np.allclose(a.Qle.values, c3.Qle.values)


def test_run_dims_members_and_output_averaging(space):
    model = ailand.ToyEcLand()
    forcing = ailand.synthetic_forcing(["FR-Fon", "TD-Bod", "GF-Guy"], "2020-05-01", "2020-05-04", seed=0)
    design = space.sample(4, method="lhs", seed=1)
    hourly = model.run(forcing, params=design)
    assert dict(hourly.sizes) == {"time": 96, "member": 4, "site": 3}
    assert hourly.Qle.attrs["units"] == "W m-2" and hourly.swvl1.attrs["units"] == "m3 m-3"
    six = model.run(forcing, params=design, output_freq="6h")
    np.testing.assert_allclose(
        six.Qle.values, hourly.Qle.coarsen(time=6).mean().values, rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(six.swvl1.values, hourly.swvl1.isel(time=slice(5, None, 6)).values)
    # dict of some parameters: the rest default, no member dim
    one = model.run(forcing, params={"RSMIN": 300.0})
    assert "member" not in one.dims
    # restart from the last state gives the same continuation as one long run
    init = model.run(forcing.isel(time=slice(0, 1))).isel(time=-1)
    first = model.run(forcing.isel(time=slice(1, 48)), state0=init)
    second = model.run(forcing.isel(time=slice(48, None)), state0=first.isel(time=-1))
    whole = model.run(forcing.isel(time=slice(1, None)), state0=init)
    for k in ("swvl1", "stl1", "Qle", "sd"):
        np.testing.assert_allclose(second[k].values, whole[k].isel(time=slice(47, None)).values, rtol=1e-6, atol=1e-6)


def test_spinup_brings_soil_moisture_near_equilibrium():
    model = ailand.ToyEcLand()
    forcing = ailand.synthetic_forcing(["IT-Noe", "SN-Dhr"], "2020-01-01", "2020-12-31", seed=0)
    drift = {}
    for years in (0, 4):
        ds = model.run(forcing, spinup_years=years, output_freq="1D", outputs=["swvl3", "swvl4"])
        drift[years] = float(abs(ds.swvl4.isel(time=-1) - ds.swvl4.isel(time=0)).max())
    assert drift[4] < 0.5 * drift[0]


# ------------------------------------------------------------------ bad input
def test_bad_forcing_is_rejected_with_a_clear_message():
    model = ailand.ToyEcLand()
    f = ailand.synthetic_forcing(["FR-Fon"], "2020-01-01", "2020-01-03", seed=0)
    bad = f.copy(deep=True)
    bad["Tair"][5, 0] = np.nan
    with pytest.raises(ValueError, match=r"Tair.*2020-01-01T05"):
        model.run(bad)
    with pytest.raises(ValueError, match="Qair"):
        model.run(f.drop_vars("Qair"))
    neg = f.copy(deep=True)
    neg["Rainf"][3, 0] = -1e-4
    with pytest.raises(ValueError, match="Rainf"):
        model.run(neg)
    neg = f.copy(deep=True)
    neg["SWdown"][12, 0] = -5.0
    with pytest.raises(ValueError, match="SWdown"):
        model.run(neg)
    celsius = f.copy(deep=True)
    celsius["Tair"] = celsius["Tair"] - 273.15
    with pytest.raises(ValueError, match="Celsius"):
        model.run(celsius)
    with pytest.raises(ValueError, match="static site fields"):
        model.run(f[list(ailand.forcing.FORCING_VARIABLES)].drop_vars(["cveg", "sand"], errors="ignore"))


def test_bad_parameters_are_rejected():
    model = ailand.ToyEcLand()
    f = ailand.synthetic_forcing(["FR-Fon"], "2020-01-01", "2020-01-02", seed=0)
    with pytest.raises(ValueError, match=r"KSAT.*\[1e-07, 5e-05\]"):
        model.run(f, params={"KSAT": 1e-3})
    with pytest.raises(ValueError, match="valid names are: RSMIN"):
        model.run(f, params={"RSMINN": 100.0})
    with pytest.raises(ValueError, match="THETA_PWP must stay below THETA_CAP"):
        model.run(f, params={"THETA_PWP": 0.24, "THETA_CAP": 0.22})
