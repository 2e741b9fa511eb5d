"""The whole experiment, as the ``ailand dust-nn`` verbs run it: train, evaluate, export.

:func:`train_all` builds the data (:func:`.make_data`), trains

* ``seed_v1`` - the seed's network and recipe, linear target;
* ``seed_v2`` - the same, log target; ``seed_v2_mask`` = ``seed_v2`` x 1[dust source > 0];
* ``zero_aware`` - our hurdle model: physical gate x classifier x regressor (log target);
  ``zero_aware_mass`` - the same with the validation mass correction of the amount;
* ``seed_v2_ucubed``, ``zero_aware_ucubed`` - retrained with (u* - u*_t)^3 as a 16th predictor;
* after a hyperparameter search (:func:`train_tuned`): ``zero_aware_tuned``, the zero-aware
  model with the search's best configuration and the mass correction - the chosen model;

and writes to ``out``: ``tables/{train,val,test}.nc``, ``models/*.pt``, ``checkpoints/``,
``config.json``, ``training.json`` (history, wall times), ``skill.csv``, ``zero.csv``.
:func:`evaluate_all` reads a run folder back and writes the evaluation (see
:mod:`.evaluate`), :func:`export_onnx` one model as ONNX.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ailand.dust.nn import (PREDICTORS, OnnxEmission, SourceMasked, TrainConfig, fit_seed_network,
                            fit_zero_aware, load_model, predict, save_model, table_arrays, to_onnx)
from calibration.progress import as_progress

from .data import DataConfig, make_data, test_year_runs
from .evaluate import (coupled_runs, emission_maps, permutation_importance, site_series, skill_table, zero_table)

__all__ = ["MODEL_NAMES", "CHOSEN", "FALLBACK", "chosen", "best_search_config", "train_tuned", "train_all",
           "evaluate_all", "export_onnx", "load_run", "mass_corrected", "report"]

MODEL_NAMES = ("seed_v1", "seed_v2", "seed_v2_mask", "zero_aware", "zero_aware_mass", "seed_v2_ucubed",
               "zero_aware_ucubed")
#: the model this experiment puts forward: the zero-aware hurdle model with the hyperparameters of
#: the search and the mass correction (:func:`train_tuned`); without a search, ``zero_aware_mass``
CHOSEN = "zero_aware_tuned"
FALLBACK = "zero_aware_mass"


def chosen(models) -> str:
    """The chosen model's name among ``models``: :data:`CHOSEN` when trained, else :data:`FALLBACK`."""
    return CHOSEN if CHOSEN in models else FALLBACK


def mass_corrected(model, val: xr.Dataset):
    """A copy of a hurdle model whose ``mass_factor`` makes the validation total right."""
    m = copy.deepcopy(model)
    m.mass_factor.fill_(1.0)
    X, y = table_arrays(val, m.names)
    e = predict(m, X)
    m.mass_factor.fill_(float(y.sum() / e.sum()) if e.sum() > 0 else 1.0)
    return m


def _write_table(ds: xr.Dataset, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = {k: {"zlib": True, "complevel": 1} for k, v in ds.data_vars.items() if np.issubdtype(v.dtype, np.floating)}
    ds.to_netcdf(path, encoding=enc)


def train_all(out, data_config: DataConfig | None = None, train_config: TrainConfig | None = None,
              models=MODEL_NAMES, data=None, resume: bool = False, progress=False) -> dict:
    """Data + every model of :data:`MODEL_NAMES` (or the subset ``models``); returns
    ``{"data", "models", "fits", "skill", "zero"}`` and writes the run folder ``out``."""
    out = Path(out)
    p = as_progress(progress)
    dcfg = data_config or DataConfig()
    tcfg = train_config or TrainConfig()
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)}")
    t0 = time.perf_counter()
    if data is None:
        with p.stage(f"data: {len(dcfg.years)} years x {len(dcfg.windows)} windows, emission analysis"):
            data = make_data(dcfg, progress=p)
    for name in ("train", "val", "test"):
        _write_table(getattr(data, name), out / "tables" / f"{name}.nc")
    base = list(PREDICTORS)
    ucubed = base + ["u_excess_cubed"]
    fits, mods = {}, {}
    ck = out / "checkpoints"

    def want(*names):
        return any(n in models for n in names)

    if want("seed_v1"):
        fits["seed_v1"] = fit_seed_network(data.train, data.val, "linear", tcfg, base, ck / "seed_v1.pt", resume, p)
    if want("seed_v2", "seed_v2_mask"):
        fits["seed_v2"] = fit_seed_network(data.train, data.val, "log", tcfg, base, ck / "seed_v2.pt", resume, p)
    if want("zero_aware", "zero_aware_mass"):
        fits["zero_aware"] = fit_zero_aware(data.train, data.val, tcfg, base + ["dust_source"],
                                            checkpoint=ck / "zero_aware.pt", resume=resume, progress=p)
    if want("seed_v2_ucubed") and "u_excess_cubed" in data.train:
        fits["seed_v2_ucubed"] = fit_seed_network(data.train, data.val, "log", tcfg, ucubed, ck / "seed_v2_ucubed.pt",
                                                  resume, p)
    if want("zero_aware_ucubed") and "u_excess_cubed" in data.train:
        fits["zero_aware_ucubed"] = fit_zero_aware(data.train, data.val, tcfg, ucubed + ["dust_source"],
                                                   checkpoint=ck / "zero_aware_ucubed.pt", resume=resume, progress=p)
    for k, f in fits.items():
        if k in models:
            mods[k] = f.model
    if "seed_v2_mask" in models:
        mods["seed_v2_mask"] = SourceMasked(fits["seed_v2"].model)
    if "zero_aware_mass" in models:
        mods["zero_aware_mass"] = mass_corrected(fits["zero_aware"].model, data.val)
    mods = {k: mods[k] for k in MODEL_NAMES if k in mods}
    for k, m in mods.items():
        save_model(m, out / "models" / f"{k}.pt", info={"train_s": fits.get(k.replace("_mask", "").replace("_mass", ""),
                                                                                   None).wall_s})
    splits = {"train": data.train, "val": data.val, "test": data.test}
    sk = skill_table(mods, splits)
    zt = zero_table(mods, data.test)
    sk.to_csv(out / "skill.csv", index=False, float_format="%.5g")
    zt.to_csv(out / "zero.csv", index=False, float_format="%.5g")
    (out / "config.json").write_text(json.dumps({"data": asdict(dcfg), "train": asdict(tcfg), "models": list(mods)},
                                                indent=1, default=str))
    (out / "training.json").write_text(json.dumps({
        "wall_s_total": time.perf_counter() - t0, "wall_s_data": data.wall_s,
        "rows": {k: int(v.sizes["sample"]) for k, v in splits.items()},
        "fits": {k: {"wall_s": f.wall_s, "info": f.info, "history": f.history} for k, f in fits.items()}},
        indent=1, default=float))
    return {"data": data, "models": mods, "fits": fits, "skill": sk, "zero": zt}


def best_search_config(run, epochs: int, seed: int = 0) -> TrainConfig:
    """The configuration of the lowest J over both searches of ``run/search/trials.csv``,
    with ``epochs`` (the search trains only a few) and ``seed``."""
    import ast

    path = Path(run) / "search" / "trials.csv"
    if not path.exists():
        raise ValueError(f"{path} does not exist: run the search first (ailand dust-nn train --search-budget N)")
    t = pd.read_csv(path)
    b = t.loc[t["J"].idxmin()]
    return TrainConfig(hidden=tuple(ast.literal_eval(b["hidden"])), dropout=float(b["dropout"]),
                       batch_size=int(b["batch_size"]), lr=float(b["lr"]), weight_decay=float(b["weight_decay"]),
                       scheduler=str(b["scheduler"]), normalisation=str(b["normalisation"]), loss=str(b["loss"]),
                       epochs=int(epochs), seed=int(seed))


def train_tuned(run, epochs: int = 12, seed: int = 0, progress=False) -> dict:
    """The chosen model: the zero-aware hurdle model trained with the best configuration of the
    hyperparameter search (:func:`best_search_config`), mass-corrected on the validation rows;
    saved as ``models/zero_aware_tuned.pt`` and added to ``skill.csv``, ``zero.csv``,
    ``config.json`` and ``training.json`` of the run folder."""
    run = Path(run)
    r = load_run(run)
    tabs = r["tables"]
    cfg = best_search_config(run, epochs, seed)
    fit = fit_zero_aware(tabs["train"], tabs["val"], cfg, [*PREDICTORS, "dust_source"],
                         checkpoint=run / "checkpoints" / "zero_aware_tuned.pt", progress=progress)
    model = mass_corrected(fit.model, tabs["val"])
    save_model(model, run / "models" / f"{CHOSEN}.pt", info={"train_s": fit.wall_s, "config": asdict(cfg)})
    mods = {CHOSEN: model}
    sk = pd.concat([pd.read_csv(run / "skill.csv").query("model != @CHOSEN"), skill_table(mods, tabs)])
    zt = pd.concat([pd.read_csv(run / "zero.csv").query("model != @CHOSEN"),
                    zero_table(mods, tabs["test"]).query("model != 'target'")])
    sk.to_csv(run / "skill.csv", index=False, float_format="%.5g")
    zt.to_csv(run / "zero.csv", index=False, float_format="%.5g")
    c = json.loads((run / "config.json").read_text())
    c["models"] = [m for m in c["models"] if m != CHOSEN] + [CHOSEN]
    c["tuned_config"] = asdict(cfg)
    (run / "config.json").write_text(json.dumps(c, indent=1, default=str))
    tj = json.loads((run / "training.json").read_text())
    tj["fits"][CHOSEN] = {"wall_s": fit.wall_s, "info": {**fit.info, "mass_factor": float(model.mass_factor)},
                          "history": fit.history}
    (run / "training.json").write_text(json.dumps(tj, indent=1, default=float))
    return {"model": model, "fit": fit, "config": cfg, "skill": sk, "zero": zt}


def load_run(run) -> dict:
    """Tables, models and configuration of a run folder written by :func:`train_all`."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ValueError(f"{run} is not a dust-nn run folder (no config.json); make one with 'ailand dust-nn train --out {run}'")
    cfg = json.loads((run / "config.json").read_text())
    d = cfg["data"]
    dcfg = DataConfig(years=tuple(d["years"]), windows=tuple(tuple(w) for w in d["windows"]), stride=d["stride"],
                      region=d["region"], extra=tuple(d["extra"]), seed=d["seed"], members=d["members"],
                      val_fraction=d["val_fraction"])
    tables = {k: xr.load_dataset(run / "tables" / f"{k}.nc") for k in ("train", "val", "test")}
    models = {k: load_model(run / "models" / f"{k}.pt") for k in cfg["models"]}
    return {"config": dcfg, "tables": tables, "models": models, "train_config": cfg["train"]}


def export_onnx(run, model: str | None = None, path=None, check_rows: int = 4096) -> tuple[Path, float]:
    """Export model ``model`` of run folder ``run`` to ONNX (default ``run/onnx/<model>.onnx``)
    and check onnxruntime against torch on ``check_rows`` random valid inputs. Returns the path and
    the largest relative difference max|ort - torch| / max|torch|."""
    from ailand.dust.nn import typical_rows

    run = Path(run)
    if model is None:
        model = CHOSEN if (run / "models" / f"{CHOSEN}.pt").exists() else FALLBACK
    mpath = run / "models" / f"{model}.pt"
    if not mpath.exists():
        have = sorted(q.stem for q in (run / "models").glob("*.pt")) if (run / "models").exists() else []
        raise ValueError(f"no model {model!r} in {run} (have {have})")
    m = load_model(mpath)
    path = Path(path) if path else run / "onnx" / f"{model}.onnx"
    to_onnx(m, path)
    X = typical_rows(m.names, check_rows, seed=1)
    a, b = predict(m, X), OnnxEmission(path)(X)
    return path, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300))


def evaluate_all(run, progress=False, figures: bool = True, importance_for=("seed_v2", "chosen")) -> dict:
    """The evaluation of a run folder (every table and figure of :mod:`.evaluate`); writes
    ``evaluation/*.csv``, ``evaluation/*.nc``, ``onnx/*.onnx``, ``report.md`` and ``figures/``."""
    run = Path(run)
    p = as_progress(progress)
    r = load_run(run)
    tabs, mods = r["tables"], r["models"]
    importance_for = [chosen(mods) if k == "chosen" else k for k in importance_for]
    ev = run / "evaluation"
    ev.mkdir(parents=True, exist_ok=True)
    res = {}
    with p.stage("skill (train / validation / test) and zero-emission scores"):
        res["skill"] = skill_table(mods, tabs)
        res["zero"] = zero_table(mods, tabs["test"])
    with p.stage("test-year worlds for maps, sites and coupled runs"):
        keep = test_year_runs(r["config"], progress=p)
    lat, lon = keep["worlds"][0]["lat"].values, keep["worlds"][0]["lon"].values
    res["maps"] = emission_maps(mods, tabs["test"], lat, lon)
    res["sites"] = site_series(mods, tabs["test"], lat, lon)
    onnx = {}
    with p.stage("ONNX export and parity"):
        parity = {}
        for k in mods:
            path, rel = export_onnx(run, k)
            onnx[k], parity[k] = OnnxEmission(path), rel
        res["parity"] = pd.DataFrame({"model": list(parity), "max_rel_diff": list(parity.values())})

    class _D:
        pass

    d = _D()
    d.chains, d.sites, d.lands, d.test = keep["chains"], keep["sites"], keep["lands"], tabs["test"]
    coupled = {"scheme": "scheme", **{k: onnx[k] for k in mods if k in ("seed_v1", "seed_v2", "seed_v2_mask",
                                                                         "zero_aware", "zero_aware_mass",
                                                                         CHOSEN)}}
    res["coupled_ds"], res["coupled"] = coupled_runs(coupled, d, progress=p)
    with p.stage("permutation importance"):
        scale = next(getattr(m, "base", m).target.scale for m in mods.values())
        res["importance"] = pd.concat([permutation_importance(mods[k], tabs["test"], scale).assign(model=k)
                                       for k in importance_for if k in mods])
    for k in ("skill", "zero", "coupled", "importance", "parity"):
        res[k].to_csv(ev / f"{k}.csv", index=False, float_format="%.5g")
    for k in ("maps", "sites", "coupled_ds"):
        res[k].to_netcdf(ev / f"{k}.nc")
    (run / "report.md").write_text(report(res))
    if figures:
        from .plots import save_figures

        res["figures"] = save_figures(res, run / "figures")
    return res


def _md(df: pd.DataFrame, fmt="{:.4g}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt.format(v) if isinstance(v, (float, np.floating)) else str(v) for v in row) + " |")
    return "\n".join(lines)


def report(res: dict) -> str:
    """Markdown tables of an evaluation."""
    out = ["# Dust NN emission model: evaluation", "",
           "Reference: the emission analysis (LETKF smoother). Log space: ln(E / E_max,train + 1e-5). "
           "RMSE [kg m-2 s-1] in linear space, dimensionless in log space.", "",
           "## Skill", "", _md(res["skill"]), "",
           "## Null emissions on the test year", "",
           "spurious_kg: mass emitted outside source regions (dust_source = 0) [kg]; forbidden_nonzero: share of the "
           "rows where the scheme's physics forbids emission (wind below threshold, wet soil, full snow, full "
           "vegetation) that get E > 0.", "", _md(res["zero"]), ""]
    if "coupled" in res:
        out += ["## Coupled aerosol runs (test year; networks through onnxruntime)", "",
                "Against the run with the emission analysis: AOD at the AERONET desert stations, surface dust "
                "concentration (load / 2 km) [ug m-3] at the non-desert stations.", "", _md(res["coupled"]), ""]
    if "importance" in res:
        out += ["## Permutation importance (test year)", "", _md(res["importance"]), ""]
    if "parity" in res:
        out += ["## ONNX parity (4096 random valid inputs)", "", _md(res["parity"]), ""]
    return "\n".join(out)
