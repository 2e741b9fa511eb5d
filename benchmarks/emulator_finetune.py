"""Fine-tuning the emulator's Qle and Qh to observations of a different physics (issue 18, item 5).

The twin:

* "truth": the toy ecLand with another bare-soil evaporation formulation,
  ``ToyEcLand(soil_evaporation="resistance")`` (Sellers et al. 1992 soil surface resistance
  instead of ecLand's beta factor), spun up one year on 2020 and run 2020-2021; its daily
  Qle and Qh are the "observations";
* the model: the shipped default emulator (``Emulator.default()``), which learnt the
  default physics, started from the default physics' spun-up state on 2020-01-01;
* fine-tuning (``ailand.emulator.finetune.finetune``): Qle and Qh only, on the daily
  observations of 2020 at the six fine-tuning sites (US-Kon, IT-Noe, SN-Dhr, BE-Lon, FR-Fon,
  FI-Hyy), and again with four jittered copies of the first four added (``...~x``, ten
  sites: does site diversity carry the correction to new sites?); the head's validation
  blocks come from 2020 too;
* evaluation on daily means: 2021 at the fine-tuning sites (held-out year) and 2020-2021 at
  held-out sites (jittered copies of sparse-vegetation sites, named ``...~ft``, and GF-Guy).

Reported per set: the structural bias (variant physics - default physics: RMSE and mean
bias of daily Qle / Qh); the emulator's error against the observations before and after
fine-tuning (RMSE, bias); the share of the structural difference learnt,
``1 - MSE((ft - base) - (variant - default)) / MSE(variant - default)``, and of its mean;
the states swvl1, stl1 of the emulator before and after (max |difference|, and RMSE against
the default physics); the Qle parameter sensitivities (range-scaled, July 2021 mean, by
autograd through the rollout: :func:`ailand.emulator.jacobian.rollout_sensitivity`) of
both emulators against both physics (sign agreement, median relative error), and the
one-step Jacobian of Qle before and after (mean over July 2021 steps at the fine-tuning sites).

Run (one thread, ~5-8 min on a shared 2-core machine):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_finetune.py

Writes benchmarks/results/emulator_finetune.json (``--out``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SITES = ["US-Kon", "IT-Noe", "SN-Dhr", "BE-Lon", "FR-Fon", "FI-Hyy"]
HELD_PARENTS = ["US-Kon", "IT-Noe", "SN-Dhr", "BE-Lon"]
EXTRA_HELD = ["GF-Guy"]
FLUXES = ("Qle", "Qh")
STATES = ("swvl1", "stl1")


def sites_table():
    import xarray as xr

    from ailand.sites import load_sites, perturbed_sites

    held = perturbed_sites(HELD_PARENTS, copies=1, seed=18)
    held = held.drop_vars("parent", errors="ignore").assign_coords(site=[f"{p}~ft" for p in HELD_PARENTS])
    extra = perturbed_sites(TRAIN_SITES[:4], copies=1, seed=5).drop_vars("parent", errors="ignore")
    extra = extra.assign_coords(site=[f"{p}~x" for p in TRAIN_SITES[:4]])
    base = load_sites(TRAIN_SITES + EXTRA_HELD)
    keep = [v for v in base.data_vars if v in held.data_vars]
    table = xr.concat([base[keep], held[keep], extra[keep]], dim="site")
    return table, [f"{p}~ft" for p in HELD_PARENTS] + EXTRA_HELD, [str(s) for s in extra["site"].values]


def stats(a, b):
    d = (a - b).values
    return {"rmse": float(np.sqrt(np.nanmean(d**2))), "bias": float(np.nanmean(d))}


def share_learnt(ft, base, var, dflt):
    """1 - MSE(correction - structural difference) / MSE(structural difference), and the mean ratio."""
    corr, truth = (ft - base).values, (var - dflt).values
    return {
        "explained": float(1.0 - np.nanmean((corr - truth) ** 2) / np.nanmean(truth**2)),
        "mean_ratio": float(np.nanmean(corr) / np.nanmean(truth)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/emulator_finetune.json"))
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-jacobian", action="store_true", help="skip the sensitivity section")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*(training range|trained on|extrapolat).*")
    import ailand
    from ailand.emulator import Emulator
    from ailand.emulator.finetune import finetune
    from ailand.emulator.jacobian import rollout_sensitivity, scaled_jacobian, step_inputs
    from ailand.progress import Progress

    prog = Progress(True)
    t_all = time.perf_counter()
    sites, held, extra = sites_table()
    forcing = ailand.synthetic_forcing(sites, start="2020-01-01", end="2021-12-31", seed=0)
    default = ailand.ToyEcLand()
    variant = ailand.ToyEcLand(soil_evaporation="resistance")
    outs = [*FLUXES, *STATES]
    with prog.stage("default physics: spin-up (1 year) and 2020-2021"):
        ic = default.initial_conditions(forcing, spinup_years=1)
        ph_def = default.run(forcing, state0=ic, output_freq="1D")
    with prog.stage("variant physics (soil_evaporation='resistance'): spin-up and 2020-2021"):
        ph_var = variant.run(forcing, spinup_years=1, output_freq="1D", outputs=outs)
    em = Emulator.default()
    with prog.stage("default emulator from the default physics' state"):
        em_base = em.run(forcing, state0=ic, output_freq="1D", outputs=outs + ["Rnet", "Qg"])
    sets = {
        "fine-tuning sites, 2020 (training year)": (TRAIN_SITES, slice("2020-01-02", "2021-01-01")),
        "fine-tuning sites, 2021 (held-out year)": (TRAIN_SITES, slice("2021-01-02", "2022-01-01")),
        "held-out sites, 2021": (held, slice("2021-01-02", "2022-01-01")),
        "held-out sites, 2020-2021": (held, slice("2020-01-02", "2022-01-01")),
    }
    n6, n10 = len(TRAIN_SITES), len(TRAIN_SITES) + len(extra)
    fits = {  # label: (sites, finetune options); energy_weight=1 is finetune's default
        f"{n6} sites": (TRAIN_SITES, {}),
        f"{n10} sites": (TRAIN_SITES + extra, {}),
        f"{n10} sites, energy_weight=0": (TRAIN_SITES + extra, {"energy_weight": 0.0}),
    }
    result = {"train_sites": TRAIN_SITES, "extra_train_sites": extra, "held_out_sites": held, "fits": {}}
    tuned = {}
    for label, (fit_sites, kw) in fits.items():
        obs = ph_var[list(FLUXES)].sel(site=fit_sites, time=slice("2020-01-02", "2021-01-01"))
        t0 = time.perf_counter()
        ft = finetune(em, obs, forcing, list(FLUXES), state0=ic, epochs=args.epochs, seed=args.seed, progress=prog, **kw)
        t_ft = time.perf_counter() - t0
        path = ROOT / "runs/finetune" / f"emulator_finetuned_{label.replace(' ', '_').replace(',', '').replace('=', '')}.pt"
        ft.save(path)
        ft = Emulator.load(path)  # what is measured is what was saved
        tuned[label] = ft
        with prog.stage(f"fine-tuned emulator ({label})"):
            em_ft = ft.run(forcing, state0=ic, output_freq="1D", outputs=outs + ["Rnet", "Qg"])
        fit = {"sites": fit_sites, "options": kw, "finetune_meta": ft.meta["finetune"], "finetune_seconds": round(t_ft, 1),
               "saved_file_bytes": path.stat().st_size, "sets": {}}
        for name, (s, per) in sets.items():
            sel = lambda ds: ds.sel(site=s, time=per)  # noqa: E731
            d, v, b, f = sel(ph_def), sel(ph_var), sel(em_base), sel(em_ft)
            r = {}
            for q in FLUXES:
                r[q] = {
                    "structural_bias": stats(v[q], d[q]),
                    "emulator_before": stats(b[q], v[q]),
                    "emulator_after": stats(f[q], v[q]),
                    "emulator_before_vs_default_physics": stats(b[q], d[q]),
                    "learnt": share_learnt(f[q], b[q], v[q], d[q]),
                }
            for q in STATES:
                r[q] = {
                    "max_abs_change": float(np.abs((f[q] - b[q]).values).max()),
                    "rmse_vs_default_physics_before": stats(b[q], d[q])["rmse"],
                    "rmse_vs_default_physics_after": stats(f[q], d[q])["rmse"],
                }
            # the surface energy balance Rn = H + LE + G of the emulator's daily means (the head moves
            # Qle and Qh but not Rnet, Qg: does it keep their sum?)
            resid = {k: x["Rnet"] - x["Qh"] - x["Qle"] - x["Qg"] for k, x in (("before", b), ("after", f))}
            r["energy_residual"] = {k: {"rmse": float(np.sqrt((v**2).mean())), "mean": float(v.mean())} for k, v in resid.items()}
            fit["sets"][name] = r
        result["fits"][label] = fit

    if not args.no_jacobian:
        result["sensitivity"] = jacobian_section(em, tuned, forcing, ph_def, prog, rollout_sensitivity, step_inputs, scaled_jacobian)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    result["command"] = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulator_finetune.py"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    report(result)
    return result


def jacobian_section(em, tuned, forcing, ph_def, prog, rollout_sensitivity, step_inputs, scaled_jacobian):
    """Qle parameter sensitivities (July 2021 mean, fine-tuning sites) of the emulator before and
    after fine-tuning and of both physics; the one-step Jacobians of Qle, Qh, swvl1 before and after."""
    import pandas as pd
    import torch

    import ailand
    from ailand.physics.model import STATE_NAMES

    f = forcing.sel(site=TRAIN_SITES, time=slice("2021-07-01", "2021-07-31"))
    st = ph_def.sel(site=TRAIN_SITES, time=pd.Timestamp("2021-07-01"))
    state0 = st[list(STATE_NAMES)].drop_vars("time")  # the default physics' state on 2021-07-01 00:00
    emulators = {"emulator before": em, **{f"emulator after ({k})": v for k, v in tuned.items()}}
    physics = {
        "physics default": ailand.ToyEcLand(dtype=torch.float64, compile=False),
        "physics variant": ailand.ToyEcLand(dtype=torch.float64, compile=False, soil_evaporation="resistance"),
    }
    sens = {}
    for name, m in {**emulators, **physics}.items():
        with prog.stage(f"Qle sensitivities, July 2021: {name}"):
            sens[name] = rollout_sensitivity(m, f, output="Qle", state0=state0, scaled=True).transpose("site", "parameter")
    out = {"period": "2021-07", "output": "Qle", "sites": TRAIN_SITES,
           "scaling": "change of the July-mean Qle [W m-2] over each parameter's range", "compare": {}}

    def compare(e, p):
        e, p = e.values, p.values
        big = np.abs(p).max(-1, keepdims=True)
        sig = (np.abs(p) >= 0.05 * big) & (big > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(e - p) / np.abs(p)
        return {"sign_agreement": float((np.sign(e) == np.sign(p))[sig].mean()),
                "median_rel_error": float(np.median(rel[sig])), "n_significant": int(sig.sum())}

    for e in emulators:
        for p in physics:
            out["compare"][f"{e} vs {p}"] = compare(sens[e], sens[p])
    out["compare"]["physics variant vs physics default"] = compare(sens["physics variant"], sens["physics default"])
    out["site_mean"] = {k: {str(n): float(v) for n, v in zip(s["parameter"].values, s.mean("site").values)} for k, s in sens.items()}
    # one-step Jacobians of Qle, Qh (and swvl1, which must not change) at every July step, in
    # physical units and dimensionless (scaled_jacobian: per typical input change, in typical output sizes)
    x = step_inputs(em, f, state0=state0)
    inputs = ["swvl1", "stl1", "skt", "Tair", "Qair", "SWdown", "LWdown", "RSMIN", "THETA_CAP", "THETA_SAT"]
    J0 = em.jacobian(x)
    J0s = scaled_jacobian(em, J0, x)
    out["step_jacobian"] = {"samples": int(x.sizes["sample"]), "units": "output units per input unit"}
    for label, ft in tuned.items():
        J1 = ft.jacobian(x)
        J1s = scaled_jacobian(ft, J1, x)
        jac = {}
        for o in ("Qle", "Qh", "swvl1"):
            b, a, bs, as_ = J0.sel(output=o), J1.sel(output=o), J0s.sel(output=o), J1s.sel(output=o)
            sig = np.abs(bs) >= 0.05 * np.abs(bs).max("input")
            jac[o] = {
                "mean_before": {i: float(b.sel(input=i).mean()) for i in inputs},
                "mean_after": {i: float(a.sel(input=i).mean()) for i in inputs},
                "scaled_relative_change": float(np.linalg.norm((as_ - bs).values) / max(np.linalg.norm(bs.values), 1e-30)),
                "scaled_sign_kept": float((np.sign(as_) == np.sign(bs)).values[sig.values].mean()),
                "max_abs_change": float(np.abs(a - b).max()),
            }
        out["step_jacobian"][label] = jac
    return out


def report(r):
    print(f"\nFine-tuning Qle, Qh of the default emulator on one year (2020) of daily fluxes from the variant physics "
          f"(Sellers soil resistance); evaluation at the {len(r['train_sites'])} real fine-tuning sites and "
          f"{len(r['held_out_sites'])} held-out sites")
    for label, fit in r["fits"].items():
        print(f"\n== fine-tuned on {label}: {', '.join(fit['sites'])} {fit['options'] or ''} (head fitted in {fit['finetune_seconds']} s, "
              f"best epoch {fit['finetune_meta']['best_epoch']})")
        print(f"{'set':42s} {'var':4s} {'struct. bias RMSE/mean':>23s} {'emulator before':>17s} {'after':>15s} "
              f"{'learnt':>7s} {'mean':>6s}")
        for name, s in fit["sets"].items():
            for q in FLUXES:
                x = s[q]
                print(f"{name:42s} {q:4s} {x['structural_bias']['rmse']:10.2f} /{x['structural_bias']['bias']:+7.2f} W m-2 "
                      f"{x['emulator_before']['rmse']:7.2f} /{x['emulator_before']['bias']:+6.2f} "
                      f"{x['emulator_after']['rmse']:6.2f} /{x['emulator_after']['bias']:+6.2f} "
                      f"{100 * x['learnt']['explained']:6.0f}% {100 * x['learnt']['mean_ratio']:5.0f}%")
        print("energy balance Rn - H - LE - G of the emulator's daily means, RMSE (mean) before -> after [W m-2]")
        for name, s in fit["sets"].items():
            e = s["energy_residual"]
            print(f"  {name:40s} {e['before']['rmse']:.2f} ({e['before']['mean']:+.2f}) -> {e['after']['rmse']:.2f} ({e['after']['mean']:+.2f})")
        print("states: max |after - before| over all days and sites (RMSE against the default physics before / after)")
        for name, s in fit["sets"].items():
            print(f"  {name:40s} " + "  ".join(
                f"{q} {s[q]['max_abs_change']:.1e} ({s[q]['rmse_vs_default_physics_before']:.4f} / "
                f"{s[q]['rmse_vs_default_physics_after']:.4f})" for q in STATES))
    if "sensitivity" in r:
        j = r["sensitivity"]
        print("\nQle parameter sensitivities, July 2021 at the fine-tuning sites (sign agreement, median relative error, "
              "over the entries that matter)")
        for k, v in j["compare"].items():
            print(f"  {k:62s} {100 * v['sign_agreement']:5.1f} %  {v['median_rel_error']:.2f}  (n={v['n_significant']})")
        for label, sj in j["step_jacobian"].items():
            if not isinstance(sj, dict):
                continue
            print(f"one-step Jacobians after fine-tuning on {label} ({j['step_jacobian']['samples']} July steps):")
            for o in ("Qle", "Qh", "swvl1"):
                print(f"  d{o}/d inputs (scaled): relative change {sj[o]['scaled_relative_change']:.3f}, sign kept "
                      f"{100 * sj[o]['scaled_sign_kept']:.1f} % of the entries that matter, max |change| {sj[o]['max_abs_change']:.3g}")
            print("  dQle/d input, mean over the steps, before -> after: " + ", ".join(
                f"{i} {sj['Qle']['mean_before'][i]:+.3g} -> {sj['Qle']['mean_after'][i]:+.3g}" for i in sj["Qle"]["mean_before"]))
    print(f"\ntotal {r['seconds']} s; {r['command']}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
