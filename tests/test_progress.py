"""Long jobs say what they do (issue 11): ``ailand twin`` shows each stage on stderr by
default and the same report with ``--no-progress``; a short MCMC chain gives the effective
sample sizes and advice in words, never emcee's raw warning."""

from __future__ import annotations

import logging
import re
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from ailand import cli

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# the shipped emulator as forward (model-error stage), variational + a short MCMC chain: ~15 s per run
TINY = ["--sites", "FR-Fon", "--start", "2020-06-01", "--end", "2020-06-10", "--dt", "10800", "--spinup-years", "0",
        "--params", "RSMIN", "--truth", "RSMIN=180", "--forward", "emulator", "--model-error-draws", "4",
        "--methods", "variational,mcmc", "--n-starts", "1", "--mcmc-steps", "40", "--mcmc-walkers", "8"]
TIMES = re.compile(r"\d+(\.\d+)? s\b|\| \d+\.\d \|$|total \d+\.\d s")


def _untimed(text: str) -> str:
    return "\n".join(TIMES.sub("<t>", line) for line in text.splitlines())


def test_twin_cli_progress_on_by_default_same_report_as_off(tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning on the default path
        assert cli.main(["twin", *TINY, "--out", str(tmp_path / "on")]) == 0
        on = capsys.readouterr()
        assert cli.main(["twin", *TINY, "--no-progress", "--out", str(tmp_path / "off")]) == 0
        off = capsys.readouterr()
    assert not [r for r in caplog.records if r.name.startswith("emcee")], caplog.text
    # progress: on stderr only, each stage with its elapsed time, and bars
    assert off.err == ""
    err = on.err
    for words in ("set-up:", "Emulator error against ToyEcLand, pass 1/2: 4 prior draws x 2 models ...",
                  "pass 2/2", "first posterior: variational, 1 start ...", "variational: Levenberg-Marquardt, 1 start,",
                  "MCMC: 8 walkers x 40 steps", "mcmc: done in", "forward runs", "model-error draws", "MCMC steps",
                  "variational (LM, 1 start)"):
        assert words in err, (words, err)
    assert re.search(r"^\[\s*\d+\.\d s\] .*: done in \d+\.\d s", err, re.M), err
    assert "Use this estimate with caution" not in err + on.out
    # the same report and the same printed table, up to wall times
    assert _untimed(on.out.replace("/on/", "/DIR/")) == _untimed(off.out.replace("/off/", "/DIR/"))
    md_on, md_off = ((tmp_path / d / "report.md").read_text() for d in ("on", "off"))
    assert _untimed(md_on) == _untimed(md_off)
    assert "## MCMC sampling" in md_on and "effective sample size" in md_on


def test_short_mcmc_chain_reports_ess_in_words_and_warns_nothing(caplog):
    import torch

    from calibration import Problem, mcmc

    A = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.3, 0.2]], dtype=torch.float64)
    p = Problem(lambda x: x @ A.T, np.array([0.2, 0.1, 0.05]), obs_std=0.1, prior=(np.zeros(2), np.eye(2)),
                names=["a", "b"])
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        res = mcmc(p, n_walkers=8, n_steps=60, seed=0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert res.ess.shape == (2,) and np.all(res.ess > 0)
    np.testing.assert_allclose(res.ess, 8 * (60 - res.burn) / res.tau)
    assert res.n_eff == pytest.approx(res.ess.min())
    assert not res.tau_reliable.all()  # 60 steps < 50 tau
    msg = res.convergence
    assert "shorter than 50 integrated autocorrelation times" in msg and "ESS" in msg
    need = int(np.ceil(50 * res.tau.max()))
    assert f"run at least {need} steps per walker" in msg
    ds = res.to_xarray()
    assert "ess" in ds and "tau_reliable" in ds and ds.attrs["convergence"] == msg
    # a long enough chain says nothing
    long = mcmc(p, n_walkers=8, n_steps=1500, seed=0)
    assert long.tau_reliable.all() and long.convergence == ""
