"""``ailand waves``: history matching of the toy ecLand against twin observations, as a CLI plugin.

``ailand`` never imports this package; it finds :func:`register` through the entry point
``waves = "calibration.history_matching.cli:register"`` (group ``ailand.cli``). Importing
this module is cheap: torch, gpytorch, xarray and matplotlib load only when the command runs.

The command chains the public API::

    twin = TwinExperiment(ToyEcLand(float64, dt), synthetic_forcing(sites, start, end),
                          space.subset(params), truth, Observe(observe, freq), noise, seed,
                          forward_model = physics | Emulator.default() | Emulator.load(path))
    hm   = HistoryMatching(twin.forward, twin.y, space, obs_std=twin.obs_std,
                           discrepancy_std=discrepancy x series std, cutoff, nth, path=out, seed)
    hm.run_wave(runs_per_wave)  x  waves        # rerunning on the same --out resumes
    hm.plot_pairs(out/nroy_pairs.png, truth); hm.plot_waves(out/waves.png, truth)

The truth is drawn as in ``ailand twin`` (seeded, middle half of each range) unless given.
"""

from __future__ import annotations

import time

from ..cli import add_twin_arguments, check_twin_args, twin_from_args


def register(subparsers) -> None:
    """Add ``waves`` to the ``ailand`` subcommands (entry point group ``ailand.cli``)."""
    s = subparsers.add_parser(
        "waves",
        help="history matching in waves (GP emulators, implausibility, NROY) against twin observations",
        description=(
            "Make twin observations from the toy ecLand at 'true' parameters (Gaussian noise of --noise x each "
            "(variable, site) series' std), then history-match the chosen parameters in waves: a design, "
            "simulator runs (physics or emulator), a GP emulator per wave, and the implausibility "
            "I = |E[f(x)] - z| / sqrt(Var_em + var_obs + var_mod) with a cutoff. Prints the NROY fraction per wave "
            "and whether the truth is NROY; writes waves.nc, nroy_pairs.png and waves.png to --out. Everything is "
            "saved as it finishes, so rerunning the same command resumes (and --waves N adds waves)."
        ),
    )
    add_twin_arguments(s, verb="history-match", freq="7D")
    s.add_argument("--discrepancy", type=float, default=0.0,
                   help="model discrepancy std as a fraction of each series' std (use > 0 with --forward "
                        "emulator); default 0")
    s.add_argument("--waves", type=int, default=3, help="number of waves in total (a rerun adds the missing ones); default 3")
    s.add_argument("--runs-per-wave", type=int, default=30, help="simulator runs per wave; default 30")
    s.add_argument("--cutoff", type=float, default=3.0, help="implausibility cutoff; default 3")
    s.add_argument("--nth", type=int, default=1,
                   help="NROY summary: the nth-largest output implausibility (1 = maximum); default 1")
    s.add_argument("--mc-samples", type=int, default=20000,
                   help="uniform samples for the NROY fraction and the pairs plot; default 20000")
    s.add_argument("--gp-iter", type=int, default=300, help="Adam iterations of each GP fit; default 300")
    s.add_argument("--batch-size", type=int, default=None,
                   help="simulator runs per call and per saved chunk (default: a quarter of the wave)")
    s.add_argument("--stop", action="store_true",
                   help="stop early when a stop rule fires (NROY fraction barely changes, emulator variance "
                        "below observation variance in NROY)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar over the simulator runs (on stderr)")
    s.add_argument("--out", default="runs/waves", help="output directory (the waves are saved there); default runs/waves")
    s.set_defaults(func=cmd_waves)


def _check_args(args) -> None:
    if args.waves < 1:
        raise ValueError(f"--waves must be >= 1, got {args.waves}")
    if args.runs_per_wave < 5:
        raise ValueError(f"--runs-per-wave must be >= 5 (a GP needs a few runs per parameter), got {args.runs_per_wave}")
    if not args.cutoff > 0:
        raise ValueError(f"--cutoff must be > 0 (e.g. 3, the three-sigma rule), got {args.cutoff}")
    if args.nth < 1:
        raise ValueError(f"--nth must be >= 1 (1 = maximum, 2 = second-largest), got {args.nth}")
    if not args.discrepancy >= 0:
        raise ValueError(f"--discrepancy must be >= 0 (a fraction of each series' std), got {args.discrepancy}")
    if args.mc_samples < 100:
        raise ValueError(f"--mc-samples must be >= 100, got {args.mc_samples}")
    if args.gp_iter < 1:
        raise ValueError(f"--gp-iter must be >= 1, got {args.gp_iter}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def cmd_waves(args) -> int:
    _check_args(args)  # cheap validation first: a typo fails before anything slow
    check_twin_args(args)
    t_start = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")

    from .waves import HistoryMatching

    twin, forcing = twin_from_args(args, model_error=False)  # the emulator's error: --discrepancy
    names, variables, truth, space = twin.names, twin.observe.variables, twin.truth, twin.space
    if args.nth > twin.y.size:
        raise ValueError(f"--nth {args.nth} exceeds the {twin.y.size} observations")
    series_std = twin.obs_std / args.noise
    print(f"ailand waves: {', '.join(names)} from {twin.y.size} {args.freq} means of {', '.join(variables)} at "
          f"{', '.join(str(s) for s in forcing['site'].values)}, {args.start} .. {args.end} (noise {args.noise:g}, "
          f"discrepancy {args.discrepancy:g}); simulator {args.forward}; truth "
          f"{', '.join(f'{k}={v:.4g}' for k, v in truth.items())}; cutoff {args.cutoff:g}, nth {args.nth}")
    hm = HistoryMatching(twin.forward, twin.y, space, obs_std=twin.obs_std,
                         discrepancy_std=args.discrepancy * series_std, cutoff=args.cutoff, nth=args.nth,
                         path=args.out, seed=args.seed, batch_size=args.batch_size, n_mc=args.mc_samples,
                         emulator={"n_iter": args.gp_iter}, progress=not args.no_progress)
    tv = twin.truth_vector[None]
    if hm.n_waves:
        print(f"resuming {args.out}: {hm.n_waves} wave(s) done")
    print(f"{'wave':>4} {'runs':>5} {'failed':>6} {'NROY fraction':>20} {'I(truth)':>9} {'truth NROY':>10} {'time [s]':>8}")

    def row(k):
        ds = hm.waves.sel(wave=k)
        per_wave = [float(hm.implausibility(tv, wave=j)[0]) for j in range(1, k + 1)]
        it, ok = per_wave[-1], max(per_wave) <= hm.cutoff  # NROY after wave k: passes waves 1..k
        print(f"{k:>4} {int(ds['n_runs']):>5} {int(ds['n_failed']):>6} "
              f"{float(ds['nroy_fraction']):>11.4g} +- {float(ds['nroy_fraction_se']):<6.2g} {it:>9.3g} "
              f"{'yes' if ok else 'NO':>10} {float(ds['run_time'] + ds['gp_fit_time']):>8.1f}")

    for k in range(1, hm.n_waves + 1):
        row(k)
    while hm.n_waves < args.waves:
        if args.stop and hm.should_stop():
            break
        hm.run_wave(args.runs_per_wave)
        row(hm.n_waves)
    out = hm.path
    hm.plot_pairs(out / "nroy_pairs.png", truth=twin.truth_vector)
    hm.plot_waves(out / "waves.png", truth=twin.truth_vector)
    truth_ok = bool(hm.is_nroy(tv)[0])
    print(f"truth {'is NROY' if truth_ok else 'is RULED OUT'} after {hm.n_waves} wave(s) "
          f"(implausibility {float(hm.implausibility(tv)[0]):.3g}, cutoff {hm.cutoff:g})")
    if hm.stop_reason:
        print(f"stop rule: {hm.stop_reason}")
    print(f"wrote {out}/{{waves.nc, nroy_pairs.png, waves.png}}; total {time.perf_counter() - t_start:.1f} s")
    return 0
