"""``ailand network``: the operational-parameter study from the command line (a plugin of the
``ailand`` CLI through the entry point ``network = "calibration.network.cli:register"``).

    ailand network [--sites 100] [--held-out 25] [--per-group 3] [--strategies ...] \\
        [--start 2019-01-01 --end 2019-12-31] [--params RSMIN,LAI_SCALE,ALB_VEG,THETA_PWP] \\
        [--no-equifinality] [--no-propagation] [--small] --out runs/network

Importing this module is cheap; torch and the study load when the command runs.
"""

from __future__ import annotations

import time


def register(subparsers) -> None:
    """Add ``network`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "network",
        help="operational parameter sets: a synthetic site network, grouping strategies, calibration per group",
        description=(
            "Make a seeded network of synthetic flux-tower sites (Koppen-Geiger, vegetation and soil classes), a "
            "hidden true parameter field, observations of daily Qle and Qh from the physics; calibrate one parameter "
            "set per group for each grouping strategy with the emulator (its error in R), check with the physics on "
            "held-out sites; equifinality (16 first guesses, EKI and ES-MDA from 16 seeds) and uncertainty "
            "propagation for the largest k-means cluster. Prints the table; writes report.md, study.nc, "
            "network.nc and figures to --out."
        ),
    )
    s.add_argument("--sites", type=int, default=None, help="network size; default 100 (30 with --small); 300 for the few-hundred-site network")
    s.add_argument("--held-out", type=int, default=None, help="held-out (test) sites; default 25 (10 with --small)")
    s.add_argument("--per-group", type=int, default=None, help="calibration sites per group; default 3")
    s.add_argument("--strategies", default=None,
                   help="comma-separated subset of global,vegetation,soil,koppen,kmeans,hierarchical,per_site; default all")
    s.add_argument("--params", default=None, help="calibrated parameters; default RSMIN,LAI_SCALE,ALB_VEG,THETA_PWP")
    s.add_argument("--start", default=None, help="first day of the window; default 2019-01-01")
    s.add_argument("--end", default=None, help="last day of the window (inclusive); default 2019-12-31")
    s.add_argument("--model-error-draws", type=int, default=None, help="prior draws for the emulator's error in R; default 16")
    s.add_argument("--maxiter", type=int, default=None, help="Levenberg-Marquardt iterations; default 12")
    s.add_argument("--no-equifinality", action="store_true", help="skip the equifinality experiment")
    s.add_argument("--no-propagation", action="store_true", help="skip the uncertainty propagation")
    s.add_argument("--small", action="store_true",
                   help="the tests' small network twin (30 sites, one month, 3-h physics step; about a minute)")
    s.add_argument("--emulator", default=None, help="emulator file (default: the shipped Emulator.default())")
    s.add_argument("--seed", type=int, default=None, help="seed of everything; default 0")
    s.add_argument("--threads", type=int, default=1, help="torch intra-op threads; default 1")
    s.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    s.add_argument("--out", default="runs/network", help="output directory; default runs/network")
    s.set_defaults(func=cmd_network)


def config_from_args(args):
    """The :class:`calibration.network.StudyConfig` the options describe (validated)."""
    from .grouping import STRATEGIES
    from .study import StudyConfig

    kw = {}
    if args.strategies is not None:
        names = [t.strip() for t in args.strategies.split(",") if t.strip()]
        bad = [n for n in names if n not in STRATEGIES]
        if bad or not names:
            raise ValueError(f"--strategies: unknown strategy {bad or names}; choose from {','.join(STRATEGIES)}")
        kw["strategies"] = tuple(names)
    if args.params is not None:
        import ailand

        names = [t.strip() for t in args.params.split(",") if t.strip()]
        full = ailand.ParameterSpace.default().names
        bad = [n for n in names if n not in full]
        if bad or not names:
            raise ValueError(f"--params: unknown parameter(s) {bad or names}; the toy ecLand has {', '.join(full)}")
        kw["params"] = tuple(names)
    for opt, key in (("sites", "n_sites"), ("held_out", "n_held_out"), ("per_group", "per_group"), ("start", "start"),
                     ("end", "end"), ("model_error_draws", "model_error_draws"), ("maxiter", "maxiter"), ("seed", "seed")):
        v = getattr(args, opt)
        if v is not None:
            kw[key] = v
    if args.no_equifinality:
        kw["equifinality"] = False
    if args.no_propagation:
        kw["propagation"] = False
    for key in ("n_sites", "n_held_out", "per_group", "maxiter"):
        if key in kw and kw[key] < 1:
            raise ValueError(f"--{key.replace('n_', '').replace('_', '-')} must be >= 1, got {kw[key]}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    cfg = StudyConfig.small(**kw) if args.small else StudyConfig(**kw)
    return cfg.check()


def cmd_network(args) -> int:
    cfg = config_from_args(args)  # cheap validation first
    t0 = time.perf_counter()
    import torch

    from ..progress import Progress
    from .study import run_study

    torch.set_num_threads(args.threads)
    em = None
    if args.emulator is not None:
        from ailand.emulator import Emulator

        em = Emulator.load(args.emulator)
    res = run_study(cfg, emulator=em, progress=Progress(enabled=not args.no_progress))
    out = res.report(args.out)
    print(f"ailand network: {cfg.n_sites} sites ({cfg.n_held_out} held out), {cfg.start} .. {cfg.end}, "
          f"parameters {', '.join(cfg.params)}")
    print()
    print(res.markdown_table())
    print()
    for n in res.notes:
        print(f"- {n}")
    if res.equifinality is not None:
        print()
        print(res.equifinality.attrs["summary"])
    if res.propagation is not None:
        print()
        print(res.propagation.attrs["summary"])
    print(f"\nwrote {out}/report.md, study.nc, network.nc and figures in {time.perf_counter() - t0:.0f} s")
    return 0
