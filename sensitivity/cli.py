"""``ailand screen``: Morris or Sobol screening of the toy ecLand, as a plugin of the ``ailand`` CLI.

``ailand`` never imports this package; it finds :func:`register` through the entry point
``screen = "sensitivity.cli:register"`` (group ``ailand.cli`` in pyproject.toml). Importing
this module is cheap: numpy, torch, SALib and matplotlib load only when the command runs.

The command chains the public API, nothing more::

    design  = morris_design(space, r) | sobol_design(space, n)           # SALib designs
    outputs = run_design(ToyEcLand(), space, design, forcing,             # all members at once
                         reduce=monthly_means(outputs), spinup_years=.., outputs=..)
    result  = morris_analyze | sobol_analyze (space, design, outputs)    # (parameter, variable, month, site)
    kept    = screen(result, keep=K)                                      # ranking + reasons
    plots.screening_figures(result, out)                                  # PNGs

and writes to ``--out``: ``screening.nc`` (the indices merged with the ranking),
``screened_space.csv`` (the kept parameters; ``ParameterSpace.default(path)`` reads it),
``ranking.csv`` (every parameter with its reason), ``samples.nc`` (design and model
outputs, to re-analyse without re-running) and the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_OUTPUTS = ("Qle", "Qh", "swvl1", "sd", "skt")
METHODS = ("morris", "sobol")


def register(subparsers) -> None:
    """Add ``screen`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "screen",
        help="Morris/Sobol screening of every toy ecLand parameter for monthly means of chosen outputs",
        description=(
            "Screen the parameters of the toy ecLand: draw a Morris (or Sobol) design over the "
            "parameter space, run every member at once at the chosen sites, analyse monthly means "
            "of the chosen outputs and keep the K most important parameters. Writes screening.nc, "
            "screened_space.csv, ranking.csv, samples.nc and PNG figures to --out."
        ),
    )
    s.add_argument("--method", choices=METHODS, default="morris", help="morris (default) or sobol")
    s.add_argument("--trajectories", type=int, default=10,
                   help="Morris trajectories r (model runs: r (d + 1)); default 10")
    s.add_argument("--levels", type=int, default=4, help="Morris grid levels (even); default 4")
    s.add_argument("--n", type=int, default=64,
                   help="Sobol base sample N, a power of two (model runs: N (d + 2)); default 64")
    s.add_argument("--params", default="all",
                   help="'all' (default) or comma-separated parameter names to screen (the rest keep defaults)")
    s.add_argument("--sites", default="all", help="'all' (default: the 10 sites) or comma-separated site names")
    s.add_argument("--start", default="2020-01-01", help="first day of the analysed period (YYYY-MM-DD)")
    s.add_argument("--end", default="2020-12-31", help="last day, inclusive (YYYY-MM-DD)")
    s.add_argument("--spinup-years", type=int, default=1,
                   help="years of spin-up per member (first forcing year repeated); default 1")
    s.add_argument("--outputs", default=",".join(DEFAULT_OUTPUTS),
                   help=f"comma-separated model variables whose monthly means are screened; default {','.join(DEFAULT_OUTPUTS)}")
    s.add_argument("--keep", type=int, default=8, help="keep the K highest-ranked parameters; default 8")
    s.add_argument("--threshold", type=float, default=None,
                   help="also require a score >= this (Morris: fraction of each output's top mu*; Sobol: ST)")
    s.add_argument("--reduce", choices=("mean", "max"), default="mean",
                   help="score = mean (default) or max over outputs of the normalised index. With monthly means "
                        "at many sites, 'max' ties most parameters at 1 (each tops some near-constant output, "
                        "e.g. summer snow), so 'mean' ranks better here")
    s.add_argument("--seed", type=int, default=0, help="seed of the design and the bootstrap; default 0")
    s.add_argument("--num-resamples", type=int, default=1000, help="bootstrap resamples of the CIs; default 1000")
    s.add_argument("--weather-seed", type=int, default=0, help="seed of the synthetic weather; default 0")
    s.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the model step: auto (default), on, off")
    s.add_argument("--chunk-size", type=int, default=None,
                   help="members per model call (bounds memory); default: all members at once")
    s.add_argument("--time-variable", default="Qle",
                   help="variable of the parameter x month figure; default Qle")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--out", default="runs/screening", help="output directory; default runs/screening")
    s.set_defaults(func=cmd_screen)


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def check_outputs(names) -> list[str]:
    """Validate output variable names against the toy ecLand's ``VARIABLES``; returns the list."""
    from ailand.physics.model import VARIABLES

    names = _split(names) if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("--outputs is empty; give comma-separated variables, e.g. Qle,Qh,swvl1,sd,skt")
    bad = [n for n in names if n not in VARIABLES]
    if bad:
        raise ValueError(
            f"--outputs: unknown variable(s) {', '.join(repr(b) for b in bad)}; the toy ecLand outputs "
            f"{', '.join(VARIABLES)}"
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--outputs: {dup} given more than once")
    return names


class _WithStepProgress:
    """``model.run`` with the model's own time-step progress bar.

    The adapter's bar counts finished members, which says nothing while all members run
    in one call; the model's bar shows the spin-up years and the run step by step.
    """

    def __init__(self, model):
        self.model = model

    def run(self, forcing, params=None, **kwargs):
        return self.model.run(forcing, params=params, progress=True, **kwargs)


def _check_args(args) -> None:
    if args.method == "morris" and args.trajectories < 2:
        raise ValueError(f"--trajectories must be >= 2, got {args.trajectories}")
    if args.method == "sobol" and args.n < 2:
        raise ValueError(f"--n must be >= 2 (a power of two), got {args.n}")
    if args.spinup_years < 0:
        raise ValueError(f"--spinup-years must be >= 0, got {args.spinup_years}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")


def cmd_screen(args) -> int:
    outputs = check_outputs(args.outputs)  # before anything slow: a typo fails at once
    _check_args(args)
    t_start = time.perf_counter()
    import warnings

    import xarray as xr

    import ailand
    import sensitivity as sa
    from sensitivity import plots

    full = ailand.ParameterSpace.default()
    space = full if args.params == "all" else full.subset(_check_params(full, args.params))
    if args.keep < 1 or args.keep > len(space):
        raise ValueError(f"--keep must be in 1..{len(space)} (the number of screened parameters), got {args.keep}")
    if args.time_variable not in outputs:
        raise ValueError(f"--time-variable {args.time_variable!r} is not among --outputs {outputs}")
    forcing = ailand.synthetic_forcing(args.sites, args.start, args.end, seed=args.weather_seed)
    compile_ = {"auto": "auto", "on": True, "off": False}[args.compile]
    model = ailand.ToyEcLand(compile=compile_)

    with warnings.catch_warnings():
        # SALib designs ignore THETA_PWP < THETA_CAP < THETA_SAT; the adapter projects those rows (said below)
        warnings.filterwarnings("ignore", message=r".*break the constraints.*", category=UserWarning)
        if args.method == "morris":
            design = sa.morris_design(space, args.trajectories, num_levels=args.levels, seed=args.seed)
        else:
            design = sa.sobol_design(space, args.n, seed=args.seed)
        x = design.transpose("sample", "parameter").values
        n_bad = int((~space.feasible(x)).sum())
        n_members = design.sizes["sample"]
        print(
            f"ailand screen: {args.method}, {len(space)} parameters, {n_members} members x "
            f"{forcing.sizes['site']} sites = {n_members * forcing.sizes['site']} columns; "
            f"{str(forcing.time.values[0])[:10]} .. {str(forcing.time.values[-1])[:10]} after "
            f"{args.spinup_years} spin-up year(s); monthly means of {', '.join(outputs)}"
        )
        if n_bad:
            print(f"  {n_bad} design rows break {space.constraints}: moved just inside before running")
        y = sa.run_design(
            model if args.no_progress else _WithStepProgress(model),
            space,
            design,
            forcing=forcing,
            reduce=sa.monthly_means(outputs),
            batch_size=args.chunk_size,
            progress=False,
            spinup_years=args.spinup_years,
            outputs=outputs,
        )
    t_run = time.perf_counter() - t_start
    if args.method == "morris":
        result = sa.morris_analyze(space, design, y, num_resamples=args.num_resamples, seed=args.seed)
    else:
        result = sa.sobol_analyze(space, design, y, num_resamples=args.num_resamples, seed=args.seed)
    result.attrs.update(_run_attrs(args, outputs, forcing))
    sc = sa.screen(result, keep=args.keep, threshold=args.threshold, reduce=args.reduce, space=space)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # indices (parameter, variable, month, site) + ranking (parameter) in one self-describing file
    ranking = sc.to_xarray().reindex(parameter=result["parameter"].values)  # the result's order; `rank` says best
    xr.merge([result, ranking], join="exact", combine_attrs="override").to_netcdf(out / "screening.nc")
    sc.to_csv(out / "screened_space.csv")
    sc.ranking.to_csv(out / "ranking.csv")
    samples = xr.Dataset({"design": design, "outputs": y.rename("outputs")})
    samples.attrs = {k: v for k, v in result.attrs.items() if isinstance(v, (str, int, float))}
    samples.to_netcdf(out / "samples.nc")
    figures = plots.screening_figures(result, out, time_variable=args.time_variable)

    print()
    print(sc)
    print(f"\nkept ({len(sc.kept)}): {', '.join(sc.kept)}")
    written = ["screening.nc", "screened_space.csv", "ranking.csv", "samples.nc", *[p.name for p in figures.values()]]
    print(f"wrote {out}/{{{', '.join(written)}}}")
    print(f"model runs {t_run:.1f} s, total {time.perf_counter() - t_start:.1f} s")
    return 0


def _check_params(space, text: str) -> list[str]:
    names = _split(text)
    bad = [n for n in names if n not in space.names]
    if bad:
        raise ValueError(f"--params: unknown parameter(s) {bad}; the space has {', '.join(space.names)}")
    if len(names) < 2:
        raise ValueError(f"--params: screen at least 2 parameters, got {names}")
    return names


def _run_attrs(args, outputs, forcing) -> dict:
    return {
        "title": f"{args.method} screening of the toy ecLand",
        "command": "ailand " + " ".join(sys.argv[1:]) if sys.argv and "ailand" in Path(sys.argv[0]).name else "",
        "model": "ailand.ToyEcLand",
        "outputs": ",".join(outputs),
        "reduction": "monthly means",
        "sites": ",".join(str(s) for s in forcing["site"].values),
        "period": f"{args.start}..{args.end}",
        "spinup_years": int(args.spinup_years),
        "weather_seed": int(args.weather_seed),
    }
