"""`ailand twin` (the calibration plugin of the ailand CLI) on tiny configurations.

Physics forward: FR-Fon, 10 days, 3-hourly float64 physics, no spin-up, RSMIN, variational
with 1 start (~10 s). Emulator forward: the shipped emulator, 1 parameter (~5 s).
Bad input stops with exit 2 before anything runs.
"""

from __future__ import annotations

import importlib.metadata
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from ailand import cli

TINY = ["--sites", "FR-Fon", "--start", "2020-06-01", "--end", "2020-06-10", "--dt", "10800",
        "--spinup-years", "0", "--methods", "variational", "--n-starts", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_twin_is_registered_through_the_entry_point():
    eps = importlib.metadata.entry_points(group=cli.PLUGIN_GROUP)
    assert "twin" in [ep.name for ep in eps], "re-install: .venv/bin/pip install --no-deps -e ."
    args = cli.build_parser().parse_args(["twin"])
    assert args.command == "twin" and args.params == "RSMIN,ALB_VEG" and args.forward == "physics"
    assert args.observe == "Qle,Qh" and args.freq == "1D" and args.noise == 0.1


def test_twin_tiny_physics_writes_the_report(tmp_path, capsys):
    out = tmp_path / "twin"
    rc = cli.main(["twin", *TINY, "--params", "RSMIN", "--truth", "RSMIN=180", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| parameter | truth | prior | variational |" in printed
    assert "| RSMIN [s m-1] | 180 | 100 +- " in printed
    assert "obs RMSE" in printed
    for f in ("report.md", "twin.nc", "twin.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "| parameter | truth | prior | variational |" in md and "inference model ToyEcLand" in md
    # identical twin, 10 % noise: the truth is recovered (the twin's own science test is test_twin.py)
    row = next(line for line in md.splitlines() if line.startswith("| RSMIN"))
    assert "truth outside" not in row, md


def test_twin_default_truth_is_a_seeded_draw_in_the_middle_half():
    import ailand
    from calibration.cli import draw_truth

    full = ailand.ParameterSpace.default()
    names = ["RSMIN", "ALB_VEG", "THETA_CAP", "THETA_PWP"]
    a = draw_truth(full, names, seed=3)
    assert a == draw_truth(full, names, seed=3) and a != draw_truth(full, names, seed=4)
    u = np.asarray(full.subset(names).to_unit(np.array([a[n] for n in names])))
    assert np.all((u >= 0.25) & (u <= 0.75)), u
    assert a["THETA_PWP"] < a["THETA_CAP"]
    assert draw_truth(full, names, {"RSMIN": 180.0}, seed=3)["RSMIN"] == 180.0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--params", "RSMIN,NOPE_PARAM"], ["--params", "'NOPE_PARAM'"]),
        (["--observe", "Qle,NotAVar"], ["--observe", "'NotAVar'"]),
        (["--truth", "RSMIN=5000"], ["--truth", "RSMIN = 5000 is outside its bounds"]),
        (["--truth", "KSAT=1e-6"], ["--truth", "'KSAT' is not a calibrated parameter"]),
        (["--methods", "variational,gd"], ["--methods"]),
        (["--params-from", "no/such/screened_space.csv"], ["--params-from", "no/such/screened_space.csv", "ailand screen"]),
        (["--forward", "emulator", "--model-error-draws", "1"], ["--model-error-draws must be >= 2"]),
    ],
)
def test_twin_bad_input_exits_2_with_the_name(tmp_path, capsys, argv, words):
    rc = cli.main(["twin", *TINY, *argv, "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("ailand twin: error:"), err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x").exists()  # refused before running anything


def test_twin_with_the_shipped_emulator_gives_finite_posteriors(tmp_path, capsys):
    out = tmp_path / "emu"
    screened = tmp_path / "screened_space.csv"  # what `ailand screen` writes: the kept parameters in 'name'
    screened.write_text("name,default,min,max,rank\nRSMIN,100.0,40.0,400.0,1\n")
    rc = cli.main(["twin", *TINY, "--params-from", str(screened), "--truth", "RSMIN=180", "--forward", "emulator",
                   "--model-error-draws", "8", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "emulator error in R: 16 physics" in printed and "physics at the posterior mean" in printed
    for f in ("report.md", "twin.nc", "twin.png"):  # twin.nc not read back (see test_calibration)
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "inference model Emulator" in md
    assert "## Inference-model error in R" in md and "| Qle |" in md and "Check with the truth model" in md
    row = next(line for line in md.splitlines() if line.startswith("| RSMIN"))
    m = re.search(r"\| 180 \| 100 \+- \S+ \| (\S+) \+- (\S+)", row)
    assert m, row
    mean, std = float(m.group(1)), float(m.group(2))
    assert np.isfinite(mean) and np.isfinite(std) and std > 0, row
    assert 40 <= mean <= 400, row  # inside RSMIN's bounds


def test_twin_bayesopt_method_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "bo"
    argv = [a if a != "variational" else "bayesopt" for a in TINY]
    rc = cli.main(["twin", *argv, "--params", "RSMIN", "--truth", "RSMIN=180", "--bo-budget", "8", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| parameter | truth | prior | bayesopt |" in printed
    assert "bayesopt: obs RMSE" in printed and " 8 forward runs" in printed
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| RSMIN"))
    assert "point estimate" in row, row
