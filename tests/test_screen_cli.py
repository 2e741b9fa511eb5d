"""`ailand screen` (the sensitivity plugin of the ailand CLI) on a tiny configuration, and the plugin mechanism."""

from __future__ import annotations

import importlib.metadata
import warnings

import matplotlib

matplotlib.use("Agg")

import pytest
import xarray as xr

import ailand
from ailand import cli

TINY = ["--sites", "FR-Fon,FI-Hyy", "--start", "2020-01-01", "--end", "2020-01-21", "--spinup-years", "0",
        "--compile", "off", "--no-progress", "--num-resamples", "50"]


def test_screen_is_registered_through_the_entry_point():
    eps = importlib.metadata.entry_points(group=cli.PLUGIN_GROUP)
    assert "screen" in [ep.name for ep in eps], "re-install: .venv/bin/pip install --no-deps -e ."
    args = cli.build_parser().parse_args(["screen", "--out", "x"])
    assert args.command == "screen" and args.method == "morris" and args.outputs == "Qle,Qh,swvl1,sd,skt"


def test_a_broken_plugin_warns_and_the_others_still_work(monkeypatch):
    good = list(importlib.metadata.entry_points(group=cli.PLUGIN_GROUP))
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz:register", group=cli.PLUGIN_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [broken, *good])
    with pytest.warns(RuntimeWarning, match="'broken'.*no_such_module_xyz"):
        parser = cli.build_parser()
    assert parser.parse_args(["simulate", "--out", "x.nc"]).command == "simulate"
    assert parser.parse_args(["screen"]).command == "screen"


@pytest.mark.parametrize("method, size", [("morris", ["--trajectories", "2"]), ("sobol", ["--n", "2"])])
def test_screen_tiny_writes_netcdf_csv_and_pngs(tmp_path, capsys, method, size):
    out = tmp_path / method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol with n=2 warns about balance; fine for a smoke test
        rc = cli.main(["screen", "--method", method, *size, *TINY, "--keep", "3", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Screening: kept 3 of 22" in printed and "rank" in printed  # the ranking table

    ds = xr.open_dataset(out / "screening.nc")
    index = "mu_star" if method == "morris" else "ST"
    assert ds[index].dims == ("parameter", "variable", "month", "site")
    assert ds.sizes["parameter"] == 22 and list(ds["variable"].values) == ["Qle", "Qh", "swvl1", "sd", "skt"]
    assert list(ds["site"].values) == ["FR-Fon", "FI-Hyy"] and list(ds["month"].values) == [1]
    for name in ds.data_vars:  # DESIGN.md: every variable carries units and long_name
        assert "units" in ds[name].attrs and "long_name" in ds[name].attrs, name
    assert list(ds["units"].values) == ["W m-2", "W m-2", "m3 m-3", "m", "K"]
    assert int(ds["kept"].sum()) == 3 and ds["rank"].min() == 1
    assert ds.attrs["method"] == method and ds.attrs["outputs"] == "Qle,Qh,swvl1,sd,skt"

    kept = ailand.ParameterSpace.default(out / "screened_space.csv")  # the screened space reads back
    assert len(kept) == 3 and set(kept.names) == {str(p) for p in ds["parameter"].values[ds["kept"].values == 1]}
    samples = xr.open_dataset(out / "samples.nc")
    assert samples["design"].dims == ("sample", "parameter") and samples["outputs"].sizes["sample"] == samples.sizes["sample"]
    pngs = {p.name for p in out.glob("*.png")}
    first = "mu_star_sigma.png" if method == "morris" else "index_bars.png"
    assert {first, "heatmap_month.png", "heatmap_site.png", "time_Qle.png"} <= pngs
    assert all((out / p).stat().st_size > 1000 for p in pngs)


def test_screen_bad_output_name_exits_2_naming_the_variable(tmp_path, capsys):
    rc = cli.main(["screen", "--outputs", "Qle,Qhh", "--out", str(tmp_path / "bad")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'Qhh'" in err and "--outputs" in err and "Qle" in err  # names the variable and lists valid ones
    assert not (tmp_path / "bad").exists()  # refused before running anything


def test_screen_bad_arguments_exit_2(tmp_path, capsys):
    assert cli.main(["screen", "--params", "RSMIN,NOPE", "--out", str(tmp_path)]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert cli.main(["screen", "--keep", "30", "--out", str(tmp_path)]) == 2
    assert "--keep" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own checks
        cli.main(["screen", "--method", "fast"])
    assert exc.value.code == 2
