"""``ailand twin``: a twin experiment from the command line, as a plugin of the ``ailand`` CLI.

``ailand`` never imports this package; it finds :func:`register` through the entry point
``twin = "calibration.cli:register"`` (group ``ailand.cli`` in pyproject.toml). Importing
this module is cheap: torch, xarray and matplotlib load only when the command runs.

The command chains the public API::

    forcing = synthetic_forcing(sites, start, end)
    twin    = TwinExperiment(ToyEcLand(float64, dt), forcing, space.subset(params), truth,
                             Observe(observe, freq), noise, seed,
                             forward_model = physics | Emulator.default() | Emulator.load(path))
    res     = twin.run(methods, n_starts, mcmc_steps)
    res.report(out)                     # report.md, twin.nc, twin.png

The truth defaults to a seeded draw inside the middle half of each parameter's range (in
the unit cube, so log-scale parameters are drawn log-uniformly) that satisfies the model's
constraints with the other parameters at their defaults.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

FORWARDS = ("physics", "emulator")
METHODS = ("variational", "mcmc", "bayesopt", "eki", "esmda")


def register(subparsers) -> None:
    """Add ``twin`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "twin",
        help="twin experiment: calibrate parameters against synthetic observations from a known truth",
        description=(
            "Run the toy ecLand at 'true' parameters, add Gaussian noise (--noise x each (variable, site) "
            "series' std) to block means of the observed variables, calibrate the chosen parameters with "
            "the physics or the emulator as forward model, and compare the posterior with the truth. "
            "Prints the table and writes report.md, twin.nc and twin.png to --out."
        ),
    )
    add_twin_arguments(s, verb="calibrate", freq="1D")
    s.add_argument("--methods", default="variational",
                   help="comma-separated subset of variational,mcmc,bayesopt,eki,esmda (mcmc starts from the "
                        "variational optimum when both run; bayesopt gives a point estimate; eki/esmda: ensemble "
                        "Kalman inversion and ES-MDA); default variational")
    s.add_argument("--bo-budget", type=int, default=40, help="bayesopt: forward runs (J evaluations); default 40")
    s.add_argument("--n-starts", type=int, default=4, help="variational starts; default 4")
    s.add_argument("--optimizer", default="lm", choices=("lm", "lbfgsb"),
                   help="variational minimiser: lm (Levenberg-Marquardt, all starts in lock-step, batched "
                        "finite-difference directions; the default) or lbfgsb (L-BFGS-B with autograd gradients)")
    s.add_argument("--mcmc-steps", type=int, default=1000, help="MCMC steps per walker; default 1000")
    s.add_argument("--mcmc-walkers", type=int, default=None, help="MCMC walkers (default: the sampler's)")
    s.add_argument("--n-ensemble", type=int, default=None, help="eki/esmda: ensemble members; default 10 x parameters")
    s.add_argument("--n-iterations", type=int, default=None,
                   help="eki: most updates (it stops at algorithm time 1, default cap 50); esmda: number of equal "
                        "alphas (alpha = n); default 4")
    s.add_argument("--model-error-draws", type=int, default=32,
                   help="--forward emulator: parameter sets per pass used to estimate the emulator's error against "
                        "the physics, which is added to R (two passes: prior, then around a first posterior); default 32")
    s.add_argument("--no-model-error", action="store_true",
                   help="--forward emulator: leave the emulator's error out of R (over-confident; for comparison)")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (by default: each stage with its runs and elapsed time, bars for the "
                        "model-error draws, variational starts and MCMC steps)")
    s.add_argument("--out", default="runs/twin", help="output directory; default runs/twin")
    s.set_defaults(func=cmd_twin)


def add_twin_arguments(s, verb: str, freq: str) -> None:
    """The twin set-up options shared by ``ailand twin`` and ``ailand waves`` (sites, period,
    parameters, truth, observations, noise, models, spin-up, step, seeds)."""
    s.add_argument("--sites", default="FR-Fon", help="comma-separated site names; default FR-Fon")
    s.add_argument("--start", default="2020-06-01", help="first day (YYYY-MM-DD); default 2020-06-01")
    s.add_argument("--end", default="2020-06-30", help="last day, inclusive (YYYY-MM-DD); default 2020-06-30")
    s.add_argument("--params", default="RSMIN,ALB_VEG",
                   help=f"comma-separated parameters to {verb} (the rest keep defaults); default RSMIN,ALB_VEG")
    s.add_argument("--params-from", default=None, metavar="CSV",
                   help="take the parameters from the 'name' column of a CSV instead of --params, e.g. "
                        "the screened_space.csv written by 'ailand screen'")
    s.add_argument("--truth", default=None,
                   help="true values, e.g. RSMIN=180,ALB_VEG=0.26; parameters not given are drawn (seeded) "
                        "inside the middle half of their range")
    s.add_argument("--observe", default="Qle,Qh", help="comma-separated observed variables; default Qle,Qh")
    s.add_argument("--freq", default=freq, help=f"observation averaging block (pandas frequency); default {freq}")
    s.add_argument("--noise", type=float, default=0.1,
                   help="observation noise std as a fraction of each (variable, site) series' std; default 0.1")
    s.add_argument("--forward", choices=FORWARDS, default="physics",
                   help="model used for inference: physics (identical twin, default) or emulator (fraternal twin; "
                        "the observations always come from the physics)")
    s.add_argument("--emulator", default=None,
                   help="emulator file for --forward emulator (default: the shipped Emulator.default())")
    s.add_argument("--spinup-years", type=int, default=1,
                   help="spin-up years of the shared start state (physics, default parameters); default 1")
    s.add_argument("--dt", type=float, default=3600.0,
                   help="physics time step [s]; the synthetic forcing uses it as its step when >= 1 h; default 3600")
    s.add_argument("--seed", type=int, default=0, help="seed of the truth draw, the noise and the methods; default 0")
    s.add_argument("--weather-seed", type=int, default=0, help="seed of the synthetic weather; default 0")
    s.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads; default 1: the twin's tensors are small, and on a busy machine "
                        "two threads that wait on each other made a calibration many times slower")


def check_twin_args(args) -> None:
    """Cheap checks of the :func:`add_twin_arguments` options (before anything slow)."""
    if args.spinup_years < 0:
        raise ValueError(f"--spinup-years must be >= 0, got {args.spinup_years}")
    if not args.dt > 0:
        raise ValueError(f"--dt must be > 0 seconds, got {args.dt}")
    if not (args.noise > 0):
        raise ValueError(f"--noise must be a positive fraction of each series' std (e.g. 0.1), got {args.noise}")
    if args.emulator is not None and args.forward != "emulator":
        raise ValueError("--emulator is only used with --forward emulator")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def twin_from_args(args, progress=False, **kwargs):
    """Validate the twin options, then build the :class:`calibration.TwinExperiment` they
    describe (``kwargs`` go to it; ``progress``: a stage line for the set-up, which runs the
    spin-up and the truth). Returns ``(twin, forcing)``."""
    import ailand
    from ailand.physics.model import VARIABLES

    check_twin_args(args)
    full = ailand.ParameterSpace.default()
    names = check_params(full, params_from_csv(args.params_from) if args.params_from else args.params)
    given = parse_truth(args.truth, names)
    variables = check_variables(args.observe, VARIABLES)

    import torch

    from . import Observe, TwinExperiment

    torch.set_num_threads(args.threads)
    truth = draw_truth(full, names, given, seed=args.seed)
    # compile='auto': runs without gradient (spin-up, truth, model-error draws) compile when their eager
    # cost would pass ~10 s (windows of months: a one-year run is ~40 s eager); short windows stay eager
    model = ailand.ToyEcLand(dtype=torch.float64, compile="auto", dt=args.dt)
    forward_model = None
    if args.forward == "emulator":
        from ailand.emulator import Emulator

        forward_model = Emulator.default() if args.emulator is None else Emulator.load(args.emulator)
        check_variables(",".join(variables), list(forward_model.output_names))
    from .progress import as_progress

    with as_progress(progress).stage(f"set-up: {args.spinup_years} spin-up year(s), the truth run and its observations"):
        forcing = ailand.synthetic_forcing(_split(args.sites), args.start, args.end, freq=forcing_freq(args.dt),
                                           seed=args.weather_seed)
        twin = TwinExperiment(model, forcing, model.space.subset(names), truth, Observe(variables, freq=args.freq),
                              noise=args.noise, seed=args.seed, forward_model=forward_model,
                              spinup_years=args.spinup_years, **kwargs)
    return twin, forcing


def _split(text) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def check_names(text, allowed, option: str, example: str, what: str, owner: str) -> list[str]:
    """Comma-separated ``text`` -> names, each in ``allowed`` and given once; a ValueError that
    names ``option`` and the offending names otherwise."""
    names = _split(text)
    if not names:
        raise ValueError(f"{option} is empty; give comma-separated {what}, e.g. {example}")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"{option}: unknown {what[:-1]}(s) {', '.join(repr(b) for b in bad)}; "
                         f"{owner} {', '.join(allowed)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{option}: {dup} given more than once")
    return names


def check_params(space, text) -> list[str]:
    """``--params`` -> names, validated against ``space``."""
    return check_names(text, space.names, "--params", "RSMIN,ALB_VEG", "parameters", "the toy ecLand has")


def params_from_csv(path) -> str:
    """The ``name`` column of a CSV (e.g. ``screened_space.csv``) as a ``--params`` string."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--params-from: no file {p}; run 'ailand screen --out DIR' first (it writes DIR/screened_space.csv)")
    df = pd.read_csv(p)
    if "name" not in df.columns or df.empty:
        raise ValueError(f"--params-from: {p} has no 'name' column with parameter names")
    return ",".join(str(n) for n in df["name"])


def parse_truth(text, names) -> dict[str, float]:
    """``"RSMIN=180,ALB_VEG=0.26"`` -> ``{name: value}`` (only calibrated parameters)."""
    out = {}
    for item in _split(text or ""):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--truth: expected NAME=value items, e.g. RSMIN=180,ALB_VEG=0.26; got {item!r}")
        if key not in names:
            raise ValueError(f"--truth: {key!r} is not a calibrated parameter (--params {','.join(names)})")
        try:
            out[key] = float(val)
        except ValueError:
            raise ValueError(f"--truth: {key}={val!r} is not a number") from None
    return out


def draw_truth(full_space, names, given=None, seed=0, tries=1000) -> dict[str, float]:
    """Seeded truth: ``given`` values, the others uniform in the middle half ``[0.25, 0.75]``
    of the unit cube (log-uniform for log parameters), redrawn until the full space's
    constraints hold with the remaining parameters at their defaults."""
    import numpy as np

    given = dict(given or {})
    full_space.check(given, what="--truth")  # given values: bounds and constraints, with a clear message
    space = full_space.subset(names)
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        x = np.asarray(space.from_unit(rng.uniform(0.25, 0.75, len(names))), dtype=float)
        truth = {n: given.get(n, float(v)) for n, v in zip(names, x)}
        full = {**full_space.defaults, **truth}
        if full_space.feasible(np.array([[full[n] for n in full_space.names]]))[0]:
            return truth
    full_space.check(truth, what="truth")  # raises with the reason
    return truth


def check_variables(text, produced) -> list[str]:
    """``--observe`` -> names, validated against the model's outputs ``produced``."""
    return check_names(text, list(produced), "--observe", "Qle,Qh", "variables", "the model outputs")


def _check_args(args) -> list[str]:
    methods = _split(args.methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"--methods: expected a comma-separated subset of {','.join(METHODS)}, got {args.methods!r}")
    if args.n_starts < 1:
        raise ValueError(f"--n-starts must be >= 1, got {args.n_starts}")
    if args.bo_budget < 2:
        raise ValueError(f"--bo-budget must be >= 2, got {args.bo_budget}")
    if args.mcmc_steps < 1:
        raise ValueError(f"--mcmc-steps must be >= 1, got {args.mcmc_steps}")
    if args.n_ensemble is not None and args.n_ensemble < 2:
        raise ValueError(f"--n-ensemble must be >= 2 (an ensemble needs at least 2 members), got {args.n_ensemble}")
    if args.n_iterations is not None and args.n_iterations < 1:
        raise ValueError(f"--n-iterations must be >= 1, got {args.n_iterations}")
    check_twin_args(args)
    if args.model_error_draws < 2:
        raise ValueError(f"--model-error-draws must be >= 2, got {args.model_error_draws}")
    return methods


def forcing_freq(dt: float) -> str:
    """The synthetic forcing step for a physics step ``dt``: ``dt`` itself for whole hours, else 1 h."""
    return f"{dt / 3600:g}h" if dt >= 3600 and dt % 3600 == 0 else "1h"


def cmd_twin(args) -> int:
    methods = _check_args(args)  # cheap validation first: a typo fails before anything slow
    t_start = time.perf_counter()
    from .progress import Progress

    progress = Progress(enabled=not args.no_progress)  # stderr only: stdout and the report are the same without it
    twin, forcing = twin_from_args(args, model_error=False if args.no_model_error else None,
                                   model_error_draws=args.model_error_draws, progress=progress)
    print(f"ailand twin: {', '.join(twin.names)} from {args.freq} {', '.join(twin.observe.variables)} at "
          f"{', '.join(str(s) for s in forcing['site'].values)}, {args.start} .. {args.end} "
          f"(noise {args.noise:g}, {args.spinup_years} spin-up year(s)); inference model {args.forward}; "
          f"truth {', '.join(f'{k}={v:.4g}' for k, v in twin.truth.items())}")
    res = twin.run(methods=methods, n_starts=args.n_starts, mcmc_steps=args.mcmc_steps,
                   mcmc_walkers=args.mcmc_walkers, bo_budget=args.bo_budget, progress=progress,
                   n_ensemble=args.n_ensemble, n_iterations=args.n_iterations, optimizer=args.optimizer)
    res.attrs.update({
        "command": "ailand " + " ".join(sys.argv[1:]) if sys.argv and "ailand" in Path(sys.argv[0]).name else "",
        "sites": ",".join(str(s) for s in forcing["site"].values),
        "period": f"{args.start}..{args.end}",
        "spinup_years": int(args.spinup_years),
        "physics_dt_seconds": float(args.dt),
        "weather_seed": int(args.weather_seed),
        "inference": args.forward if args.emulator is None else f"emulator {args.emulator}",
    })
    out = res.report(args.out)

    print()
    print(res.table())
    print()
    for k, m in enumerate(res.methods):
        check = ("" if res.rmse_after_truth_model is None
                 else f"; physics at the posterior mean {res.rmse_after_truth_model[k]:.4g}")
        print(f"{m}: obs RMSE {res.rmse_before:.4g} -> {res.rmse_after[k]:.4g} (noise std RMS {res.noise_rms:.4g}{check}), "
              f"{int(res.n_forward_runs[k])} forward runs, {res.wall_time[k]:.1f} s")
    if "mcmc" in res.results and res.results["mcmc"].convergence:
        print("mcmc: " + res.results["mcmc"].convergence.replace("(n_steps)", "(--mcmc-steps)"))
    if res.model_error is not None:
        print(f"emulator error in R: {res.attrs['model_error_truth_model_runs']} physics + "
              f"{res.attrs['model_error_inference_runs']} emulator runs, {res.attrs['model_error_wall_time_s']:.1f} s")
    print(f"wrote {out}/{{report.md, twin.nc, twin.png}}; total {time.perf_counter() - t_start:.1f} s")
    return 0
