"""The JENN stage (issue 18): teach the shipped emulator the physics' soil-moisture sensitivities.

Builds the physics' step sensitivities d(T2m, RH2m, Qle, Qh, swvl1..3)/d(swvl1..3) on new
weather (2019, seed 21) at the 8 real training sites for the default and 3 sampled parameter
sets (every 3rd 6-hour step), fine-tunes a copy of the shipped emulator with
``ailand.emulator.jenn.fit_jacobian`` (jac_weight, steps from the command line), and scores
the sensitivities before and after at the held-out sites (BE-Lon, US-Kon, April-September
2019). Writes runs/jenn/emulator.pt and runs/jenn/scores.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_jenn.py 1.0 1500     # ~8 min

Then: ``benchmarks/land_da.py --emulator runs/jenn/emulator.pt --methods
open_loop,sekf-fd,sekf-emulator,4dvar-emulator --out benchmarks/results/land_da_jenn.json``.
"""
import time, torch, warnings, json, sys, ailand, numpy as np
warnings.simplefilter("ignore"); torch.set_num_threads(1)
from ailand.emulator import Emulator
from ailand.emulator.jenn import physics_sensitivities, sensitivity_scores, fit_jacobian
em=Emulator.default()
train_sites=["FR-Fon","FI-Hyy","RU-Cok","IT-Noe","SN-Dhr","TD-Bod","CN-Tak","GF-Guy"]
sites=[s for s in train_sites if s in list(ailand.load_sites().site.values)]
print(sites, flush=True)
space=em.space
draw=space.sample(3, seed=5)
params={n: np.concatenate([[d], np.asarray(draw.sel(parameter=n).values) if hasattr(draw,'sel') else draw[:,i]]) for i,(n,d) in enumerate(zip(space.names, space.default_vector))}
t=time.time()
f=ailand.synthetic_forcing(sites,"2019-01-01","2019-12-31",seed=21)
js=physics_sensitivities(em, f, params=params, every=3, spinup_years=1, progress=True)
print("train set", len(js), time.time()-t, flush=True)
fh=ailand.synthetic_forcing(["BE-Lon","US-Kon"],"2019-04-01","2019-09-30",seed=22)
jh=physics_sensitivities(em, fh, every=3, spinup_years=1)
before={"train": sensitivity_scores(em, js), "held_out_sites": sensitivity_scores(em, jh)}
print("before", json.dumps(before["held_out_sites"]), flush=True)
rec=fit_jacobian(em, "runs/retrain/ensemble.zarr", js, jac_weight=float(sys.argv[1]), steps=int(sys.argv[2]), progress=True)
after={"train": sensitivity_scores(em, js), "held_out_sites": sensitivity_scores(em, jh)}
print("after", json.dumps(after["held_out_sites"]), rec, flush=True)
from pathlib import Path
Path("runs/jenn").mkdir(parents=True, exist_ok=True)
em.save("runs/jenn/emulator.pt")
json.dump({"before": before, "after": after, "fit": rec}, open("runs/jenn/scores.json","w"), indent=1)
