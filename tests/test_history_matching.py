"""HistoryMatching waves: toy problems with a known NROY region, resume, failed runs, bad input, CLI.

1-D: f(x) = x on [0, 1], z = 0.5, obs std 0.05, cutoff 3 -> NROY = [0.35, 0.65] (30 % of the space).
2-D: f(a, b) = (a - 0.3)^2 + (b - 0.6)^2, z = 0.04, obs std 0.005 -> NROY is the ring
     0.015 <= r^2 ... i.e. sqrt(0.025) <= r <= sqrt(0.055) around (0.3, 0.6): area
     pi (0.055 - 0.025) = 0.0942 of the unit square.
GPs are fitted with 100 Adam iterations and one start to keep the tests short.
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr

from ailand import ParameterSpace
from calibration import HistoryMatching

FAST = dict(n_iter=100, n_restarts=1)
TIMING = ["run_time", "gp_fit_time"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def line(x):
    return np.asarray(x, dtype=float)[:, :1]


def ring(x):
    x = np.asarray(x, dtype=float)
    return ((x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.6) ** 2)[:, None]


SPACE1 = ParameterSpace.from_dict({"x": (0.0, 1.0)})
SPACE2 = ParameterSpace.from_dict({"a": (0.0, 1.0), "b": (0.0, 1.0)})


def test_1d_linear_nroy_is_the_known_interval(tmp_path):
    hm = HistoryMatching(line, [0.5], SPACE1, obs_std=0.05, cutoff=3.0, path=tmp_path / "hm", seed=0, n_mc=4000,
                         emulator=FAST)
    hm.run_wave(10)
    hm.run_wave(10)
    x = hm.sample_nroy(60).values[:, 0]
    # inside the true NROY [0.35, 0.65] up to the (tiny) emulator variance, and covering it
    assert x.min() >= 0.345 and x.max() <= 0.655, (x.min(), x.max())
    assert x.min() < 0.37 and x.max() > 0.63
    assert np.histogram(x, bins=6, range=(0.35, 0.65))[0].min() >= 3  # spread over the interval
    assert abs(hm.nroy_fraction - 0.30) < 3 * hm.nroy_fraction_se + 0.01
    # the implausibility is the formula with the last wave's emulator
    gp = hm.records[-1]["gp"]
    xs = np.array([[0.2], [0.5], [0.66]])
    mean, var = gp.predict(xs)
    np.testing.assert_allclose(hm.implausibility(xs, wave=2), np.abs(mean[:, 0] - 0.5) / np.sqrt(var[:, 0] + 0.0025))
    I = hm.implausibility(xs)
    assert I[1] < 0.5 and I[0] > 3 and I[2] > 3
    np.testing.assert_array_equal(hm.is_nroy(xs), [False, True, False])
    M = hm.implausibility(xs, summary="matrix")
    assert M.dims == ("wave", "sample", "output") and M.sizes["wave"] == 2
    np.testing.assert_array_equal(M.max(("wave", "output")).values, hm.implausibility(xs, summary="max"))


def test_2d_ring_nroy_is_inside_and_covers_the_known_region():
    hm = HistoryMatching(ring, [0.04], SPACE2, obs_std=0.005, seed=1, n_mc=4000, emulator=FAST)
    hm.run(3, 20, stop=False)
    assert hm.n_waves == 3
    x = hm.sample_nroy(200).values
    r2 = ((x - [0.3, 0.6]) ** 2).sum(1)
    # inside, up to emulator uncertainty: |f(x) - z| <= 3 sqrt(var_obs + Var_em(x)) + 3 sd_em(x) (the emulator
    # mean within 3 of its sds of f), and 95 % of the points inside the true region widened by 3 %
    _, var = hm.records[-1]["gp"].predict(x)
    sd_em = np.sqrt(var[:, 0])
    assert np.all(np.abs(r2 - 0.04) <= 3 * np.sqrt(0.005**2 + sd_em**2) + 3 * sd_em)
    true_I = np.abs(r2 - 0.04) / 0.005
    assert np.mean(true_I <= 3.1) >= 0.95, np.sort(true_I)[-10:]
    # covers: every point of the true ring (away from its edge) has a sampled point within 0.05
    g = np.stack(np.meshgrid(np.linspace(0, 1, 81), np.linspace(0, 1, 81)), -1).reshape(-1, 2)
    gI = np.abs(((g - [0.3, 0.6]) ** 2).sum(1) - 0.04) / 0.005
    core = g[gI <= 2.7]
    dist = np.sqrt(((core[:, None, :] - x[None]) ** 2).sum(-1)).min(1)
    assert dist.max() < 0.05, dist.max()
    assert abs(hm.nroy_fraction - np.pi * 0.03) < 3 * hm.nroy_fraction_se + 0.01
    ds = hm.waves
    assert ds["nroy_fraction"].dims == ("wave",) and np.all(np.diff(ds["nroy_fraction"].values) <= 0)
    assert ds["design"].dims == ("wave", "sample", "parameter") and ds["outputs"].dims == ("wave", "sample", "output")
    assert ds["emulator_var_ratio"].dims == ("wave", "output") and ds["cutoff"].values.tolist() == [3.0] * 3
    assert "emulator variance below the observation variance" in hm.stop_reason and hm.should_stop()
    # the designs of waves 2, 3 lie in the NROY space of the waves before them
    for k in (2, 3):
        xk = ds["design"].sel(wave=k).values
        assert np.all(hm.implausibility(xk, wave=k - 1) <= 3.0)


class Counting:
    """A deterministic 2-output forward that counts its runs and can be told to die after ``die_after`` runs."""

    def __init__(self, die_after=None):
        self.n, self.die_after = 0, die_after

    def __call__(self, x):
        x = np.asarray(x, dtype=float)
        if self.die_after is not None and self.n + len(x) > self.die_after:
            raise RuntimeError("simulated crash")
        self.n += len(x)
        return np.stack([x[:, 0] + x[:, 1], np.sin(3 * x[:, 0]) * x[:, 1]], axis=1)


def _hm(fwd, path):
    return HistoryMatching(fwd, [0.9, 0.3], SPACE2, obs_std=[0.05, 0.03], discrepancy_std=0.01, path=path, seed=3,
                           n_mc=3000, batch_size=4, emulator=FAST)


def test_resume_after_a_kill_gives_identical_waves(tmp_path):
    full = _hm(Counting(), tmp_path / "full")
    full.run(2, 12, stop=False)

    dying = Counting(die_after=20)  # wave 1: 12 runs; wave 2 dies after 2 of its 3 chunks
    hm = _hm(dying, tmp_path / "killed")
    hm.run_wave(12)
    with pytest.raises(RuntimeError, match="simulated crash"):
        hm.run_wave(12)
    assert dying.n == 20
    assert sorted(p.name for p in (tmp_path / "killed" / "wave_02").iterdir()) == \
        ["design.nc", "runs_0000.nc", "runs_0001.nc"]

    again = Counting()
    resumed = _hm(again, tmp_path / "killed")  # reopens wave 1, finds wave 2 half done
    assert resumed.n_waves == 1
    resumed.run(2, 12, stop=False)
    assert again.n == 4  # only the missing chunk ran
    a, b = full.waves.drop_vars(TIMING), resumed.waves.drop_vars(TIMING)
    a.attrs.pop("space"), b.attrs.pop("space")
    xr.testing.assert_identical(a, b)
    x = np.random.default_rng(0).random((500, 2))
    np.testing.assert_array_equal(full.implausibility(x), resumed.implausibility(x))
    np.testing.assert_array_equal(full.sample_nroy(10).values, resumed.sample_nroy(10).values)
    # and the saved waves.nc is the same record
    on_disk = xr.open_dataset(tmp_path / "killed" / "waves.nc").load()
    np.testing.assert_array_equal(on_disk["design"].values, b["design"].values)
    np.testing.assert_array_equal(on_disk["nroy_fraction"].values, b["nroy_fraction"].values)


def test_reopen_keeps_the_waves_and_a_space_mismatch_is_an_error(tmp_path):
    hm = _hm(Counting(), tmp_path / "hm")
    hm.run_wave(12)
    again = _hm(Counting(), tmp_path / "hm")
    assert again.n_waves == 1 and again.nroy_fraction == hm.nroy_fraction
    other = ParameterSpace.from_dict({"a": (0.0, 1.0), "b": (0.0, 2.0)})
    with pytest.raises(ValueError, match="space mismatch"):
        HistoryMatching(Counting(), [0.9, 0.3], other, obs_std=[0.05, 0.03], discrepancy_std=0.01,
                        path=tmp_path / "hm", seed=3, n_mc=3000, batch_size=4, emulator=FAST)
    with pytest.raises(ValueError, match="observations differ"):
        HistoryMatching(Counting(), [0.8, 0.3], SPACE2, obs_std=[0.05, 0.03], discrepancy_std=0.01,
                        path=tmp_path / "hm", seed=3, n_mc=3000, batch_size=4, emulator=FAST)


def test_failed_runs_are_dropped_and_logged(caplog):
    def flaky(x):
        y = Counting()(x)
        y[np.asarray(x)[:, 0] > 0.8, 1] = np.nan  # the simulator "crashes" in a corner
        return y

    hm = HistoryMatching(flaky, [0.9, 0.3], SPACE2, obs_std=[0.05, 0.03], seed=0, n_mc=2000, emulator=FAST)
    with caplog.at_level(logging.WARNING, logger="calibration.history_matching.waves"):
        rec = hm.run_wave(15)
    n_bad = int((rec["design"].values[:, 0] > 0.8).sum())
    assert n_bad >= 2
    assert int(rec["n_failed"]) == n_bad and int(rec["run_ok"].sum()) == 15 - n_bad
    assert int(rec["n_train"]) == 15 - n_bad
    assert any("failed (non-finite outputs) and are dropped" in r.message for r in caplog.records)
    assert 0 < hm.nroy_fraction < 1


def test_bad_input_is_a_clear_error():
    class WithNobs(Counting):
        n_obs = 2

    with pytest.raises(ValueError, match="observations have 3 values but the forward model gives 2"):
        HistoryMatching(WithNobs(), [1.0, 2.0, 3.0], SPACE2, obs_std=0.1)
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=0.1, cutoff=0.0)
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=0.1, cutoff=-3.0)
    with pytest.raises(ValueError, match="obs_std must be > 0"):
        HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=[0.1, 0.0])
    with pytest.raises(ValueError, match="obs_std must be a scalar or have one value per output"):
        HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="discrepancy_std must be >= 0"):
        HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=0.1, discrepancy_std=-1.0)
    # a plain callable whose outputs do not match the observations: caught at the first chunk
    hm = HistoryMatching(Counting(), [0.9, 0.3, 0.1], SPACE2, obs_std=0.1, n_mc=100)
    with pytest.raises(ValueError, match=r"forward returned shape \(\d+, 2\).*expected \(\d+, 3\)"):
        hm.run_wave(5)
    with pytest.raises(ValueError, match="no wave has been run yet"):
        hm.implausibility([[0.5, 0.5]])


def test_dask_client_gives_the_same_wave():
    distributed = pytest.importorskip("dask.distributed")
    plain = _hm(Counting(), None)
    plain.run_wave(12)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        hm = HistoryMatching(Counting(), [0.9, 0.3], SPACE2, obs_std=[0.05, 0.03], discrepancy_std=0.01, seed=3,
                             n_mc=3000, batch_size=4, emulator=FAST, client=client)
        hm.run_wave(12)
    xr.testing.assert_identical(plain.waves.drop_vars(TIMING), hm.waves.drop_vars(TIMING))


def test_plots_write_files(tmp_path):
    hm = _hm(Counting(), None)
    hm.run_wave(12)
    hm.plot_pairs(tmp_path / "pairs.png", truth=[0.6, 0.3])
    hm.plot_waves(tmp_path / "waves.png", truth=[0.6, 0.3])
    assert (tmp_path / "pairs.png").stat().st_size > 10000 and (tmp_path / "waves.png").stat().st_size > 10000


# --------------------------------------------------------------------- CLI
TINY = ["--sites", "FR-Fon", "--start", "2020-06-01", "--end", "2020-06-10", "--dt", "10800", "--spinup-years", "0",
        "--freq", "5D", "--params", "RSMIN,ALB_VEG", "--truth", "RSMIN=180,ALB_VEG=0.2", "--runs-per-wave", "10",
        "--mc-samples", "1000", "--gp-iter", "60"]


def test_waves_cli_tiny_physics_and_resume(tmp_path, capsys):
    from ailand import cli

    out = tmp_path / "waves"
    assert cli.main(["waves", *TINY, "--waves", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NROY fraction" in printed and "truth is NROY after 2 wave(s)" in printed, printed
    for f in ("waves.nc", "nroy_pairs.png", "waves.png", "history_matching.json", "wave_02/gp.pt"):
        assert (out / f).stat().st_size > 0, f
    ds = xr.open_dataset(out / "waves.nc")
    assert ds.sizes["wave"] == 2 and list(ds["parameter"].values) == ["RSMIN", "ALB_VEG"]
    assert ds["design"].sizes["sample"] == 10 and "Qle|FR-Fon|2020-06-01" in ds["output_label"].values
    ds.close()
    # rerunning the same command reopens the saved waves and runs nothing new
    assert cli.main(["waves", *TINY, "--waves", "2", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--cutoff", "0"], ["--cutoff must be > 0"]),
    (["--waves", "0"], ["--waves must be >= 1"]),
    (["--params", "RSMIN,NOPE"], ["--params", "'NOPE'"]),
])
def test_waves_cli_bad_input_exits_2(tmp_path, capsys, argv, words):
    from ailand import cli

    rc = cli.main(["waves", *TINY, *argv, "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("ailand waves: error:"), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "x").exists()
