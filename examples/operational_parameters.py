"""Operational parameter sets: which sites can share one parameter set? (issue 17)

A seeded network of synthetic flux-tower sites (ailand.network.site_network: Koppen-Geiger
class from each site's own monthly climatology, vegetation and soil classes) with a hidden
true parameter field; daily latent and sensible heat from the physics at the truth + noise.
For each grouping strategy (one global set; by vegetation, soil, Koppen class; k-means and
Ward clusters of the seed's predictors, k by silhouette; per site) one parameter set per group
is calibrated on a sub-sample of its sites with the emulator (its error against the physics
in R), all groups in one lock-step Levenberg-Marquardt, and checked with the physics on
held-out sites. Then, for the largest k-means cluster: equifinality (16 first guesses of the
variational minimiser, EKI and ES-MDA from 16 seeds) and the posterior pushed through the
emulator to annual ET and summer soil moisture at its held-out sites.

    .venv/bin/python examples/operational_parameters.py            # 100 sites, one year (the README run)
    .venv/bin/python examples/operational_parameters.py --small    # 30 sites, one month (about a minute)
    .venv/bin/python examples/operational_parameters.py --sites 300 --held-out 60   # the few-hundred-site network

Writes runs/operational_parameters/ (report.md, study.nc, network.nc, map.png, importance.png,
equifinality.png, propagation.png). Progress on stderr. The same as ``ailand network``.
"""

import argparse
import sys

import torch

from calibration.network import StudyConfig, run_study
from calibration.progress import Progress


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--held-out", type=int, default=25)
    p.add_argument("--small", action="store_true", help="30 sites, July only, 3-h physics step, no spin-up")
    p.add_argument("--out", default="runs/operational_parameters")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.small:
        cfg = StudyConfig.small(equifinality=True, propagation=True, n_guesses=8, n_seeds=4, n_samples=32,
                                strategies=("global", "vegetation", "soil", "koppen", "kmeans", "hierarchical", "per_site"))
    else:
        cfg = StudyConfig(n_sites=args.sites, n_held_out=args.held_out)
    res = run_study(cfg, progress=Progress(True))
    res.report(args.out)
    print(res.markdown_table())
    print()
    print("\n".join(f"- {n}" for n in res.notes))
    print()
    print(res.emulator_error.round(1).to_string())
    for part in (res.equifinality, res.propagation):
        if part is not None:
            print()
            print(part.attrs["summary"])
    print(f"\nwall time {res.timings['total']:.0f} s; wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
