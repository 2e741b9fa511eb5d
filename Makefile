# ailand: `make demo` and `make test` create .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo simulate test venv clean bench ensemble emulator

$(STAMP): pyproject.toml requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone: the CPU build provided to pip on these machines
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the rest, with torch pinned so no dependency can pull another torch / CUDA wheels
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The main job: the default twin experiment end to end on the embedded data (runs/demo/).
# 1. Morris screening of the 22 parameters for daily Qle and Qh at the twin sites (physics) -> keep 3
# 2. twin experiment on the kept parameters: observations from the physics at a seeded truth,
#    calibration with the emulator (its error against the physics in R), variational + MCMC,
#    the physics at the posterior means as the check -> report.md, twin.nc, twin.png
# Both show their progress on stderr (stages, runs, elapsed time, bars); --no-progress silences them.
# The emulator is runs/emulator/emulator.pt when `make emulator` has trained one, else the
# shipped data/emulator/default.pt (the same recipe; ensemble + training take ~22 min).
DEMO := runs/demo
DEMO_CASE := --sites FR-Fon,FI-Hyy --start 2020-06-01 --end 2020-07-31
demo: $(STAMP)
	@start=$$(date +%s); set -e; \
	if [ -f $(EMULATOR) ]; then em="--emulator $(EMULATOR)"; echo "emulator: $(EMULATOR) (trained here)"; \
	else em=""; echo "emulator: the shipped data/emulator/default.pt (make emulator trains one on runs/ensemble)"; fi; \
	$(BIN)/ailand screen $(DEMO_CASE) --outputs Qle,Qh --keep 3 --out $(DEMO)/screening; \
	$(BIN)/ailand twin $(DEMO_CASE) --params-from $(DEMO)/screening/screened_space.csv --observe Qle,Qh \
	    --freq 1D --noise 0.1 --forward emulator $$em --methods variational,mcmc --n-starts 4 \
	    --mcmc-steps 500 --seed 0 --out $(DEMO)/twin; \
	echo "make demo: done in $$(( $$(date +%s) - start )) s; see $(DEMO)/twin/report.md"

# the toy ecLand at the 10 default sites for 2 years (the first demo)
simulate: $(STAMP)
	$(BIN)/ailand simulate --sites all --start 2020-01-01 --end 2021-12-31 \
	    --spinup-years 3 --out runs/simulate/simulate.nc --plot runs/simulate/simulate.png

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

ENSEMBLE := runs/ensemble/default.zarr
# held out of training: the two real sites and 8 of the 96 space-filling ones
VAL_SITES := BE-Lon,US-Kon,SF089,SF090,SF091,SF092,SF093,SF094,SF095,SF096
EMULATOR := runs/emulator/emulator.pt

# the default perturbed-parameter ensemble (anemoi dataset), built once: 64 members x 130 sites
# (10 real, 24 jittered copies, 96 space-filling) x 2 years; ~5 min on 2 dask workers
ensemble: $(STAMP)
	test -d $(ENSEMBLE) || $(BIN)/ailand ensemble --include-default --space-filling-sites 96 --dask 2 --out $(ENSEMBLE)

# train the emulator on it (resumes from its checkpoint if interrupted), then score it
emulator: ensemble
	$(BIN)/ailand train --data $(ENSEMBLE) --out $(EMULATOR) --epochs 60 --threads 1 --val-sites $(VAL_SITES)
	$(BIN)/ailand evaluate --emulator $(EMULATOR) --data $(ENSEMBLE) --out runs/emulator/evaluation --drift-years 10

bench: $(STAMP)
	$(BIN)/python benchmarks/physics_throughput.py --out benchmarks/results/physics_throughput.json
	$(BIN)/python benchmarks/emulator.py --threads 1

clean:
	rm -rf $(VENV) runs
