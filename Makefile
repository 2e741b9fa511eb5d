# ailand: `make demo` and `make test` create .venv when it is missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench ensemble emulator

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

demo: $(STAMP)
	$(BIN)/ailand simulate --sites all --start 2020-01-01 --end 2021-12-31 \
	    --spinup-years 3 --out runs/demo/simulate.nc --plot runs/demo/simulate.png

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

ENSEMBLE := runs/ensemble/default.zarr
EMULATOR := runs/emulator/emulator.pt

# the default perturbed-parameter ensemble (anemoi dataset), built once
ensemble: $(STAMP)
	test -d $(ENSEMBLE) || $(BIN)/ailand ensemble --include-default --out $(ENSEMBLE)

# train the emulator on it (resumes from its checkpoint if interrupted), then score it
emulator: ensemble
	$(BIN)/ailand train --data $(ENSEMBLE) --out $(EMULATOR)
	$(BIN)/ailand evaluate --emulator $(EMULATOR) --data $(ENSEMBLE) --out runs/emulator/evaluation --drift-years 10

bench: $(STAMP)
	$(BIN)/python benchmarks/physics_throughput.py --out benchmarks/results/physics_throughput.json
	$(BIN)/python benchmarks/emulator.py --threads 1

clean:
	rm -rf $(VENV) runs
