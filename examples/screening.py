"""Which toy ecLand parameters matter? Morris screening before a calibration.

Screens all 22 parameters of the toy ecLand for the monthly means of latent and
sensible heat flux (Qle, Qh), top-layer soil moisture (swvl1), snow water equivalent
(sd) and skin temperature (skt) at the 10 default sites, and keeps the 8 that matter
most: the parameters worth calibrating. Writes to runs/screening/:

    screening.nc         mu, mu_star, sigma, mu_star_conf (parameter, variable, month, site)
                         + the ranking (rank, score, kept, reason) over parameter
    screened_space.csv   the kept parameters as a parameter table (ParameterSpace.default reads it)
    ranking.csv          all parameters, best first, with the reason for each
    *.png                mu*-sigma scatter, parameter x output heatmaps, monthly Qle heatmap

Run:  .venv/bin/python examples/screening.py     (about 4-5 minutes on a busy 2-core machine)
The same from the shell:  ailand screen --out runs/screening
"""

from pathlib import Path

import xarray as xr

import ailand
import sensitivity as sa
from sensitivity import plots

OUT = Path("runs/screening")
OUTPUTS = ["Qle", "Qh", "swvl1", "sd", "skt"]  # any of ailand's output variables
SEED = 0  # seeds the design and the bootstrap; the weather has its own seed below

# 1. What to vary, where, and when. ParameterSpace.default() is data/parameters.csv:
#    names, bounds, log/linear scale, and THETA_PWP < THETA_CAP < THETA_SAT.
space = ailand.ParameterSpace.default()
forcing = ailand.synthetic_forcing("all", "2020-01-01", "2020-12-31", seed=0)  # 10 sites, hourly
model = ailand.ToyEcLand()  # compiles the step with torch.compile when the run is long enough

# 2. The design: r Morris trajectories of d + 1 points each (r (d + 1) = 230 parameter sets).
#    Saving it lets you run the model elsewhere and analyse later.
design = sa.morris_design(space, n_trajectories=10, num_levels=4, seed=SEED)  # more: tighter CIs

# 3. Run every parameter set at every site in one vectorised call (230 x 10 columns), after
#    a 1-year spin-up, keeping only the variables we screen, and reduce each run to monthly
#    means -> DataArray (sample, variable, month, site). Rows that break the soil-water
#    constraints are moved just inside them (with a warning).
outputs = sa.run_design(
    model, space, design, forcing=forcing, reduce=sa.monthly_means(OUTPUTS),
    progress=True, spinup_years=1, outputs=OUTPUTS,
)

# 4. Elementary effects for all 5 x 12 x 10 = 600 outputs at once.
result = sa.morris_analyze(space, design, outputs, seed=SEED)

# 5. One score per parameter: mu* divided by the largest mu* of each output (so W m-2 and
#    m3 m-3 count alike), then the mean over outputs. (reduce="max", "important somewhere",
#    ties most parameters at 1 here: each one tops some near-constant output such as summer snow.)
kept = sa.screen(result, keep=8, reduce="mean", space=space)
print(kept)  # ranking table
for reason in kept.reasons.values():
    print(" ", reason)

# 6. Save: indices and ranking in one NetCDF (every variable has units and long_name),
#    the kept parameters as a table you can calibrate next, and the figures.
OUT.mkdir(parents=True, exist_ok=True)
ranking = kept.to_xarray().reindex(parameter=result["parameter"].values)
xr.merge([result, ranking], join="exact", combine_attrs="override").to_netcdf(OUT / "screening.nc")
kept.to_csv(OUT / "screened_space.csv")  # ailand.ParameterSpace.default(that path) -> the 8 kept
kept.ranking.to_csv(OUT / "ranking.csv")
figures = plots.screening_figures(result, OUT, time_variable="Qle")
# single figures: plots.mu_star_sigma(result, sel={"variable": "Qle", "site": "FR-Fon", "month": 7}),
# plots.heatmap(result.sel(site="FI-Hyy")), plots.time_heatmap(result, sel={"variable": "sd"})

print(f"kept: {', '.join(kept.kept)}")
print(f"wrote {OUT}/screening.nc, screened_space.csv, ranking.csv, " + ", ".join(p.name for p in figures.values()))
