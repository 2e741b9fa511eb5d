"""Soil-moisture data assimilation with the emulator's Jacobians: a recipe to copy.

    .venv/bin/python examples/land_da.py            # ~6 min on 2 cores; writes runs/land_da_example/

1. The twin: the toy ecLand at US-Kon and IT-Noe, June-July 2020, 12-hour windows; the DA
   system runs on biased, noisy precipitation and radiation; observations of T2m, RH2m
   (6-hour means, 1 K and 4 %) and daily satellite surface soil moisture (0.05 m3 m-3).
2. The open loop, the SEKF with the finite-difference Jacobian (ECMWF's original) and with
   the emulator's autograd Jacobian (one pass for all sites), and a 16-member LETKF.
3. Figures: truth / open loop / analyses of swvl1..3 over time (``land_da.png``) and the
   Jacobian heatmaps, physics against emulator, for one midday window (``jacobians.png``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from calibration.land_da import SoilMoistureTwin, jacobian_autograd, jacobian_fd, run_enkf, scores, WindowRunner
from calibration.land_da.plots import plot_jacobians, plot_land_da

import ailand


def main(out="runs/land_da_example"):
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    twin = SoilMoistureTwin(sites=("US-Kon", "IT-Noe"), start="2020-06-01", end="2020-07-31", progress=True)
    results = {"open_loop": twin.run("open_loop", progress=True),
               "sekf-fd": twin.run("sekf", jacobian="fd", progress=True),
               "sekf-emulator": twin.run("sekf", jacobian="emulator", progress=True),
               "letkf": run_enkf(twin, n_members=16, progress=True)}
    table = scores(results)
    print(table.round(4).to_string())
    plot_land_da(results, out / "land_da.png", site="US-Kon")
    # the Jacobians of one window (12-24 UTC on 1 July: daytime at both sites), physics vs emulator
    k = 2 * 30 + 1
    state = twin.state0
    with torch.no_grad():
        for i in range(k):
            _, state = twin.runner.run(i, state)
    emu = WindowRunner(ailand.Emulator.default(), twin.forcing, twin.runner.observe, twin.hours)
    H = {"physics FD": jacobian_fd(twin.runner, k, state)[0], "physics autograd": jacobian_autograd(twin.runner, k, state)[0],
         "emulator autograd": jacobian_autograd(emu, k, state)[0]}
    plot_jacobians(H, twin.obs_names, twin.sites, out / "jacobians.png")
    table.to_csv(out / "scores.csv")
    print(f"wrote {out}/{{land_da.png, jacobians.png, scores.csv}}")
    return table


if __name__ == "__main__":
    main()
