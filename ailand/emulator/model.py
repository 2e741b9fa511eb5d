"""aiLand: the column MLP emulator of the toy ecLand behind the shared Model interface.

``Emulator.run(forcing, params=None, state0=None)`` takes the same hourly forcing
Dataset as :meth:`ailand.ToyEcLand.run` and returns the same variables, dims and
units, at the emulator step (6 h by default). ``simulate`` is the torch path,
differentiable with respect to parameters and initial state.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..interface import ColumnModel, freq_seconds
from ..params import ParameterSpace
from ..physics import constants as c
from ..physics.model import DIAGNOSTIC_NAMES, HIGH_VEGETATION, STATE_NAMES, VARIABLES, cold_start, labelled_output, split_layers
from .features import (
    CLIM_NAMES,
    CLIM_UNITS,
    FORCING_NAMES,
    TIME_NAMES,
    TIME_UNITS,
    Normaliser,
    as_ensemble_data,
    forcing_transform,
    normaliser_from,
    time_features,
)
from .budget import FLUX_NAMES, close_water
from .evaluate import evaluate as _evaluate
from .head import DiagnosticHead
from .network import MLP
from .train import fit as _fit

# Arrows run one way: features, network -> train, evaluate (functions of an Emulator, which
# they never import) -> model (Emulator, whose fit / evaluate delegate to them).

FORMAT_VERSION = 2  # 2: may carry a fine-tuning head ("diag_head"); files without one are still written as 1
# diagnostics that cannot be negative, those bounded by [0, 1] and those in percent [0, 100]
NONNEGATIVE_DIAGNOSTICS = ("Qs", "Qsb", "Qsm", "q2m")
FRACTION_DIAGNOSTICS = ("snowc", "albedo")
PERCENT_DIAGNOSTICS = ("RH2m",)
# outputs are also kept within the training data's range widened by this fraction of it
RANGE_MARGIN = 0.1
N_SOIL_FEATURES = 12  # see Emulator.soil_features


class Emulator(ColumnModel):
    """MLP emulator of one toy-ecLand step of ``dt`` seconds for independent columns.

    Inputs (physical units, in this order, see :attr:`input_names`): the state at ``t``
    (``STATE_NAMES``), forcing means over ``[t, t+dt)`` (``FORCING_NAMES``), clim fields
    (``CLIM_NAMES``: LAI climatology, soil texture, vegetation cover, elevation), the
    phase of the year and of the local day (``TIME_NAMES``) and the model parameters
    (``space.names``).
    Outputs (:attr:`output_names`): the state at ``t+dt`` and the mean diagnostics over
    the step. The network predicts normalised increments; hard bounds are applied after
    (``0 <= swvl <= THETA_SAT``, ``sd, wl, wsn >= 0``, ``wsn <= sd``, ``tsn <= 273.16 K``,
    ``asn, snowc, albedo`` in [0, 1], runoff, melt and ``q2m`` >= 0, ``RH2m`` in [0, 100] %),
    and every output stays within
    the range of the training data widened by 10% of that range on each side, so that a
    long rollout cannot run away to values the network never saw.

    Build one from an ensemble with :func:`ailand.emulator.train_emulator` (or
    :meth:`from_ensemble` then :meth:`fit`); keep it with :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        space: ParameterSpace,
        normaliser: Normaliser,
        dt: float = 21600.0,
        width: int = 256,
        depth: int = 4,
        activation: str = "silu",
        layer_norm: bool = False,
        diagnostics=DIAGNOSTIC_NAMES,
        spinup_years: int = 1,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        meta: dict | None = None,
    ):
        self.space = space
        self.norm = normaliser
        self.dt = float(dt)
        self.config = dict(width=int(width), depth=int(depth), activation=str(activation), layer_norm=bool(layer_norm))
        self.diagnostics = tuple(diagnostics)
        bad = [d for d in self.diagnostics if d not in DIAGNOSTIC_NAMES]
        if bad:
            raise ValueError(f"unknown diagnostics {bad}; choose from {list(DIAGNOSTIC_NAMES)}")
        self.spinup_years = int(spinup_years)
        self.dtype = dtype
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        self.last_clamps: dict = {}  # filled by simulate: states held at the training-range clamp
        self.last_extrapolation: dict = {}  # filled by prepare: drivers outside the training range
        self.input_names = (*STATE_NAMES, *FORCING_NAMES, *CLIM_NAMES, *TIME_NAMES, *space.names)
        self.output_names = (*STATE_NAMES, *self.diagnostics)
        self.n_features = len(self.input_names) + N_SOIL_FEATURES
        self.net = MLP(self.n_features, len(self.output_names), **self.config).to(self.device, self.dtype)
        # fine-tuning to observations (ailand.emulator.finetune): a residual head on named diagnostics
        self.diag_head: DiagnosticHead | None = None
        self._constants()

    # ----------------------------------------------------------------- set-up
    def _constants(self):
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=self.dtype, device=self.device)  # noqa: E731
        n = self.norm
        self._k = {
            "state_mean": t(n.state_mean), "state_std": t(n.state_std),
            "tend_mean": t(n.tend_mean), "tend_std": t(n.tend_std),
            "forcing_mean": t(n.forcing_mean), "forcing_std": t(n.forcing_std),
            "clim_mean": t(n.clim_mean), "clim_std": t(n.clim_std),
            "diag_mean": t(n.diag_mean), "diag_std": t(n.diag_std),
        }
        ns = len(STATE_NAMES)
        lo = np.full(ns, -np.inf)
        hi = np.full(ns, np.inf)
        for i, k in enumerate(STATE_NAMES):
            if k.startswith("swvl") or k in ("sd", "wl", "wsn", "asn"):
                lo[i] = 0.0
            if k == "asn":
                hi[i] = 1.0
            if k == "tsn":
                hi[i] = c.TT
        # and never further than RANGE_MARGIN x the training range outside the training range
        rlo, rhi = np.full(ns, -np.inf), np.full(ns, np.inf)
        if "state_min" in n.extra:
            smin, smax = np.asarray(n.extra["state_min"]), np.asarray(n.extra["state_max"])
            pad = RANGE_MARGIN * (smax - smin)
            rlo, rhi = smin - pad, smax + pad
            lo, hi = np.maximum(lo, rlo), np.minimum(hi, rhi)
        self._rlo, self._rhi = t(rlo), t(rhi)  # the training-range clamps alone (counted in simulate)
        self._swvl = t([k.startswith("swvl") for k in STATE_NAMES]).bool()
        self._lo, self._hi = t(lo), t(hi)
        dlo = np.array([0.0 if d in NONNEGATIVE_DIAGNOSTICS + FRACTION_DIAGNOSTICS + PERCENT_DIAGNOSTICS else -np.inf for d in self.diagnostics])
        dhi = np.array([1.0 if d in FRACTION_DIAGNOSTICS else 100.0 if d in PERCENT_DIAGNOSTICS else np.inf for d in self.diagnostics])
        if "diag_min" in n.extra:
            dmin, dmax = np.asarray(n.extra["diag_min"]), np.asarray(n.extra["diag_max"])
            pad = RANGE_MARGIN * (dmax - dmin)
            dlo, dhi = np.maximum(dlo, dmin - pad), np.minimum(dhi, dmax + pad)
        self._dlo, self._dhi = t(dlo), t(dhi)
        self._i_sd, self._i_wsn = STATE_NAMES.index("sd"), STATE_NAMES.index("wsn")
        self._i_theta_sat = list(self.space.names).index("THETA_SAT")
        self._i_rain, self._i_snow = FORCING_NAMES.index("Rainf"), FORCING_NAMES.index("Snowf")
        missing = [n for n in ("THETA_SAT", "THETA_CAP", "THETA_PWP", "KSAT", "BCH") if n not in self.space]
        if missing:
            raise ValueError(f"the emulator needs the soil parameters {missing} in its ParameterSpace")
        self._i_soil = {n: list(self.space.names).index(n) for n in ("THETA_SAT", "THETA_CAP", "THETA_PWP", "KSAT", "BCH")}
        self._p_lo, self._p_hi = [t(v) for v in self._param_cube()]

    def _param_cube(self):
        """Affine map of parameters to [-1, 1] in the space's own (log/linear) scale."""
        b = self.space.bounds
        log = np.asarray(self.space.is_log, dtype=bool)
        lo = np.where(log, np.log(b[:, 0]), b[:, 0])
        hi = np.where(log, np.log(b[:, 1]), b[:, 1])
        return lo, hi

    def __repr__(self):
        n = sum(p.numel() for p in self.net.parameters())
        return (
            f"Emulator(dt={self.dt:g} s, {len(self.input_names)} inputs -> {len(self.output_names)} outputs, "
            f"MLP {self.config['depth']}x{self.config['width']} {self.config['activation']}, {n:,} weights)"
        )

    @property
    def state_names(self):
        return STATE_NAMES

    def to(self, device=None, dtype=None) -> "Emulator":
        """Move the network and constants (e.g. ``emulator.to("cuda")``)."""
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        self.net.to(self.device, self.dtype)
        if self.diag_head is not None:
            self.diag_head.to(self.device, self.dtype)
        self._constants()
        return self

    # ------------------------------------------------------------ the one step
    def normalise_fct(self, forcing: torch.Tensor, clim: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Physical forcing ``(..., 9)``, clim ``(..., 6)`` and time features ``(..., 4)``
        -> their normalised block of the network input ``(..., 19)``."""
        k = self._k
        f = torch.stack([forcing_transform(n, forcing[..., i]) for i, n in enumerate(FORCING_NAMES)], dim=-1)
        fn = (f - k["forcing_mean"]) / k["forcing_std"]
        cn = (clim - k["clim_mean"]) / k["clim_std"]
        shape = torch.broadcast_shapes(fn.shape[:-1], cn.shape[:-1], time.shape[:-1])
        return torch.cat([x.expand(*shape, x.shape[-1]) for x in (fn, cn, time.to(fn.dtype))], dim=-1)

    def normalise_params(self, params: torch.Tensor) -> torch.Tensor:
        """Physical parameters ``(..., d)`` -> [-1, 1] over the space's bounds (log scale
        for log parameters) ``(..., d)``."""
        log = torch.as_tensor(np.asarray(self.space.is_log, dtype=bool), device=params.device)
        z = torch.where(log, torch.log(torch.clamp(params, min=1e-30)), params)
        return 2.0 * (z - self._p_lo) / (self._p_hi - self._p_lo) - 1.0

    def normalise_drivers(self, forcing, clim, time, params) -> torch.Tensor:
        """All drivers -> the normalised driver block ``(..., 19 + d)`` (broadcast together)."""
        a, b = self.normalise_fct(forcing, clim, time), self.normalise_params(params)
        shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], dim=-1)

    def soil_features(self, state: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Physics-aware inputs ``(..., 12)`` from the physical state ``(..., 15)`` and physical
        parameters ``(..., d)``: per soil layer the relative saturation ``theta/THETA_SAT``,
        the log Clapp-Hornberger conductivity ``ln KSAT + (2 BCH + 3) ln(theta/THETA_SAT)``
        and the water-stress fraction ``(theta - THETA_PWP) / (THETA_CAP - THETA_PWP)``, each
        roughly standardised. Drainage depends on these through powers of up to ~27 that an
        MLP learns poorly from raw inputs."""
        theta = state[..., :4]
        i = self._i_soil
        sat_ = params[..., i["THETA_SAT"], None]
        sat = theta / sat_
        logk = torch.log(params[..., i["KSAT"], None]) + (2 * params[..., i["BCH"], None] + 3) * torch.log(torch.clamp(sat, min=0.05))
        pwp, cap = params[..., i["THETA_PWP"], None], params[..., i["THETA_CAP"], None]
        stress = torch.clamp((theta - pwp) / (cap - pwp), -1.0, 2.0)
        feats = [(sat - 0.6) / 0.25, (logk + 16.0) / 5.0, stress - 0.5]
        shape = torch.broadcast_shapes(*[f.shape for f in feats])
        return torch.cat([f.expand(shape) for f in feats], dim=-1)

    def raw(self, state: torch.Tensor, drivers_n: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Network output (normalised increments | normalised diagnostics) ``(..., n_out)``
        for a physical state ``(..., 15)``, normalised drivers ``(..., n_drv)`` and the
        physical parameters ``(..., d)`` (for :meth:`soil_features`)."""
        k = self._k
        sn = (state - k["state_mean"]) / k["state_std"]
        sf = self.soil_features(state, params)
        shape = sn.shape[:-1]
        x = torch.cat([sn, sf.expand(*shape, sf.shape[-1]), drivers_n.expand(*shape, drivers_n.shape[-1])], dim=-1)
        if self.diag_head is None:
            return self.net(x)
        h = self.net.hidden(x)  # fine-tuned: the head corrects named diagnostic columns only (see head.py)
        return self.net.head(h) + self.diag_head(x, h)

    def physical(self, state: torch.Tensor, out_n: torch.Tensor, theta_sat: torch.Tensor, precip: torch.Tensor | None = None):
        """Normalised network output -> (next state ``(..., 15)``, diagnostics ``(..., n_diag)``)
        in physical units, with the hard bounds applied. ``theta_sat`` ``(...)`` [m3 m-3].
        With :attr:`water_closure` on and ``precip`` ``(...)`` [kg m-2 s-1] (Rainf + Snowf,
        mean over the step) given, the soil water of the next state is corrected so that the
        step closes the column water balance (:func:`ailand.emulator.budget.close_water`)."""
        k = self._k
        ns = len(STATE_NAMES)
        new = state + out_n[..., :ns] * k["tend_std"] + k["tend_mean"]
        hi = torch.where(self._swvl, theta_sat[..., None], self._hi)
        new = torch.minimum(torch.maximum(new, self._lo), hi)
        wsn = torch.minimum(new[..., self._i_wsn], new[..., self._i_sd])
        new = torch.cat([new[..., : self._i_wsn], wsn[..., None], new[..., self._i_wsn + 1 :]], dim=-1)
        diag = out_n[..., ns:] * k["diag_std"] + k["diag_mean"]
        diag = torch.minimum(torch.maximum(diag, self._dlo), self._dhi)
        if self.water_closure and precip is not None:
            new = close_water(state, new, precip, diag, self.diagnostics, self.dt, theta_sat)
        return new, diag

    @property
    def water_closure(self) -> bool:
        """Close the column water balance by construction at every step (kept in ``meta``,
        so it travels with the saved file; off by default)."""
        return bool(self.meta.get("water_closure", False))

    @water_closure.setter
    def water_closure(self, on: bool) -> None:
        if on:
            missing = [k for k in FLUX_NAMES if k not in self.diagnostics]
            if missing:
                raise ValueError(f"water_closure needs the diagnostics {missing}")
        self.meta["water_closure"] = bool(on)

    def precip(self, forcing: torch.Tensor) -> torch.Tensor:
        """Rainf + Snowf ``(...)`` [kg m-2 s-1] from physical forcing ``(..., 9)`` ordered as ``FORCING_NAMES``."""
        return forcing[..., self._i_rain] + forcing[..., self._i_snow]

    def step_flat(self, x: torch.Tensor) -> torch.Tensor:
        """One step on a flat physical input ``(B, n_in)`` ordered as :attr:`input_names`
        -> physical outputs ``(B, n_out)`` ordered as :attr:`output_names` (used by
        :meth:`jacobian` and :meth:`to_onnx`)."""
        ns, nf, nc, ntm = len(STATE_NAMES), len(FORCING_NAMES), len(CLIM_NAMES), len(TIME_NAMES)
        i = np.cumsum([0, ns, nf, nc, ntm])
        state, forcing, clim, tm, params = x[..., : i[1]], x[..., i[1] : i[2]], x[..., i[2] : i[3]], x[..., i[3] : i[4]], x[..., i[4] :]
        drivers = self.normalise_drivers(forcing, clim, tm, params)
        new, diag = self.physical(state, self.raw(state, drivers, params), params[..., self._i_theta_sat], self.precip(forcing))
        return torch.cat([new, diag], dim=-1)

    def input_units(self) -> list[str]:
        units = {**{k: VARIABLES[k][0] for k in STATE_NAMES}, **CLIM_UNITS, **TIME_UNITS}
        from ..forcing import FORCING_VARIABLES

        units.update({k: FORCING_VARIABLES[k][0] for k in FORCING_NAMES})
        units.update(self.space.units)
        return [units[k] for k in self.input_names]

    def output_units(self) -> list[str]:
        return [VARIABLES[k][0] for k in self.output_names]

    # ---------------------------------------------------------------- torch API
    def simulate(
        self,
        forcing: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor],
        static: Mapping[str, torch.Tensor],
        state0: Mapping[str, torch.Tensor] | None = None,
        steps_per_output: int = 1,
        outputs: list[str] | None = None,
        progress: bool = False,
        forcing_repeat: int = 1,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Roll the emulator out on tensors; differentiable with respect to ``params`` and ``state0``.

        Same signature as :meth:`ailand.ToyEcLand.simulate`, at the emulator step:

        forcing : from :meth:`prepare`: ``FORCING_NAMES``, ``clim_lai`` and ``TIME_NAMES``
            tensors ``(T, S)`` (means over each step of ``dt``).
        params : every parameter, tensors broadcasting to the batch, e.g. ``(M, 1)``.
        static : ``clim_sand, clim_clay, clim_cveg, clim_cvh, clim_elevation`` ``(S,)``.
        state0 : named state tensors (``swvl1..4`` or stacked ``swvl``), or None for a cold
            start (no spin-up here; :meth:`run` spins up).
        Returns ``(out, final_state)``; ``out[name]`` is ``(T // steps_per_output, *B)``
        (states at the end of each output interval, diagnostics averaged over it).
        """
        if forcing_repeat != 1:
            raise ValueError("the emulator steps once per forcing row: prepare the forcing at the emulator step")
        wanted = list(outputs) if outputs is not None else list(self.output_names)
        bad = [k for k in wanted if k not in self.output_names]
        if bad:
            hint = ""
            if any(k in DIAGNOSTIC_NAMES for k in bad):
                hint = (" (it was trained without these diagnostics: train one on an ensemble that holds them, "
                        "e.g. 'make emulator' after rebuilding runs/ensemble/default.zarr)")
            raise ValueError(f"the emulator does not predict {bad}; it gives {list(self.output_names)}{hint}")
        names = list(self.space.names)
        missing = [k for k in names if k not in params]
        if missing:
            raise ValueError(f"params lacks {missing}; use emulator.param_tensors(...) for defaults")
        p = torch.stack(torch.broadcast_tensors(*[torch.as_tensor(params[k], dtype=self.dtype, device=self.device) for k in names]), -1)
        f = torch.stack([forcing[k] for k in FORCING_NAMES], -1)  # (T, S, 9)
        T = f.shape[0]
        clim_static = [static[k] for k in CLIM_NAMES[1:]]
        clim = torch.stack([forcing["clim_lai"], *[s.expand_as(forcing["clim_lai"]) for s in clim_static]], -1)
        tm = torch.stack([forcing[k] for k in TIME_NAMES], -1)
        batch = torch.broadcast_shapes(f.shape[1:-1], p.shape[:-1])
        if state0 is None:
            named = split_layers(cold_start(forcing["Tair"], {k: params[k] for k in names}, self.dt))
        else:
            named = self._named_state_from(state0, STATE_NAMES, batch)
        state = torch.stack([named[k] + torch.zeros(batch, dtype=self.dtype, device=self.device) for k in STATE_NAMES], -1)
        theta_sat = p[..., self._i_theta_sat].expand(batch)
        if T % steps_per_output:
            raise ValueError(f"{T} steps is not a multiple of steps_per_output={steps_per_output}")
        i_state = [STATE_NAMES.index(k) for k in wanted if k in STATE_NAMES]
        i_diag = [self.diagnostics.index(k) for k in wanted if k in self.diagnostics]
        fct, pn = self.normalise_fct(f, clim, tm), self.normalise_params(p)  # (T, S, 19), (..., d)
        rec_s, rec_d, acc = [], [], None
        hits = torch.zeros(len(STATE_NAMES), dtype=torch.long, device=self.device)
        bar = _progress(T, progress)
        for t in range(T):
            drivers = torch.cat([fct[t].expand(*batch, fct.shape[-1]), pn.expand(*batch, pn.shape[-1])], -1)
            state, diag = self.physical(state, self.raw(state, drivers, p), theta_sat, self.precip(f[t]))
            with torch.no_grad():  # states held at the training-range clamp: the network left its training data
                hits += ((state <= self._rlo) | (state >= self._rhi)).reshape(-1, len(STATE_NAMES)).sum(0)
            d = diag[..., i_diag]
            acc = d if acc is None else acc + d
            if (t + 1) % steps_per_output == 0:
                rec_s.append(state[..., i_state])
                rec_d.append(acc / steps_per_output)
                acc = None
            if bar is not None and (t + 1) % 40 == 0:
                bar.update(40)
        if bar is not None:
            bar.close()
        self._report_clamps(hits, T * int(np.prod(batch)))
        S, D = torch.stack(rec_s), torch.stack(rec_d)
        out = {}
        for j, i in enumerate(i_state):
            out[STATE_NAMES[i]] = S[..., j]
        for j, i in enumerate(i_diag):
            out[self.diagnostics[i]] = D[..., j]
        out = {k: out[k] for k in wanted}
        final = {k: state[..., i] for i, k in enumerate(STATE_NAMES)}
        return out, final

    # ---------------------------------------------------------------- xarray API
    def prepare(self, forcing: xr.Dataset, sites: xr.Dataset | None = None):
        """Hourly (or finer) forcing Dataset -> (forcing tensors ``(T, S)`` at the emulator
        step, static tensors ``(S,)``, 1). The forcing is averaged over each step of ``dt``
        exactly as the training ensemble was (see :func:`ailand.run_ensemble`)."""
        from ..forcing import validate_forcing
        from ..sites import lai_climatology

        forcing = validate_forcing(forcing)
        statics = sites.sel(site=forcing["site"].values) if sites is not None else forcing
        need = ["cveg", "sand", "clay", "elevation", "lai_min", "lai_max", "lai_peak_doy", "lon"]
        missing = [k for k in need if k not in statics and k not in statics.coords]
        if missing:
            raise ValueError(
                f"static site fields {missing} are missing: use ailand.synthetic_forcing (which carries them), "
                "or pass sites=ailand.load_sites([...]) with the forcing's sites"
            )
        times = pd.DatetimeIndex(forcing["time"].values)
        step = (times[1] - times[0]).total_seconds() if len(times) > 1 else self.dt
        k = self.dt / step
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError(f"the emulator step dt={self.dt:g} s must be a whole multiple of the forcing step {step:g} s")
        k = int(round(k))
        n = len(times) // k
        if n == 0 or len(times) % k:
            raise ValueError(f"forcing has {len(times)} rows of {step:g} s: not a whole number of emulator steps of {self.dt:g} s")
        S = forcing.sizes["site"]

        def block(a):  # (n*k, S) -> (n, S) means over each emulator step
            return a[: n * k].reshape(n, k, S).mean(1)

        out = {v: self.tensor(block(forcing[v].transpose("time", "site").values)) for v in FORCING_NAMES}
        out["clim_lai"] = self.tensor(block(lai_climatology(statics, times.day_of_year.values)))
        starts = times[::k][:n]
        tf = time_features(starts.values, np.asarray(statics["lon"].values, dtype=float), self.dt)
        for i, name in enumerate(TIME_NAMES):
            out[name] = self.tensor(tf[..., i])
        high = [HIGH_VEGETATION.get(str(v), 0.0) for v in np.atleast_1d(statics["veg_type"].values)] if "veg_type" in statics.coords or "veg_type" in statics else [0.0] * S
        st = {
            "clim_sand": statics["sand"].values, "clim_clay": statics["clay"].values, "clim_cveg": statics["cveg"].values,
            "clim_cvh": statics["cveg"].values * np.asarray(high), "clim_elevation": statics["elevation"].values,
        }
        self._check_range(out, st)
        return out, {k: self.tensor(np.asarray(v, dtype=float)) for k, v in st.items()}, 1

    def _report_clamps(self, hits: torch.Tensor, n: int) -> None:
        """Record in :attr:`last_clamps` how many (step, column) values of each state reached
        the training-range clamp in the last :meth:`simulate` (``n`` of each), and warn."""
        counts = {k: int(h) for k, h in zip(STATE_NAMES, hits.tolist()) if h}
        self.last_clamps = {"counts": counts, "of": int(n)}
        if counts:
            text = ", ".join(f"{k} {c} ({100 * c / n:.2g} %)" for k, c in counts.items())
            warnings.warn(f"emulator states held at the edge of their training range (10 % margin): {text} "
                          f"of {n} step-columns; the rollout left the data it was trained on", stacklevel=3)

    def _check_range(self, forcing, static):
        """Warn when drivers leave the range seen in training (extrapolation), with how many
        values do; the counts are kept in :attr:`last_extrapolation` ``{name: (n_out, n)}``."""
        self.last_extrapolation = {}
        rng = self.meta.get("input_range")
        if not rng:
            return
        for name, v in [*forcing.items(), *static.items()]:
            if name in rng:
                lo, hi = rng[name]
                pad = 0.05 * (hi - lo) + 1e-12
                a = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v, dtype=float)
                out = int(((a < lo - pad) | (a > hi + pad)).sum())
                if out:
                    self.last_extrapolation[name] = (out, int(a.size))
                    warnings.warn(
                        f"{name} spans [{a.min():.4g}, {a.max():.4g}] but the emulator was trained on "
                        f"[{lo:.4g}, {hi:.4g}]: {out} of {a.size} values ({100 * out / a.size:.2g} %) are "
                        "extrapolated", stacklevel=3
                    )

    def _params_checked(self, params):
        p, members = self._params_from(params)
        rng = self.meta.get("param_range")
        if rng:
            for name, v in p.items():
                lo, hi = rng[name]
                a = v.detach().cpu().numpy()
                if a.min() < lo - 1e-9 * abs(lo) or a.max() > hi + 1e-9 * abs(hi):
                    warnings.warn(
                        f"parameter {name} = {a.min():.4g}..{a.max():.4g} lies outside the training range "
                        f"[{lo:.4g}, {hi:.4g}]: the emulator extrapolates", stacklevel=3
                    )
        return p, members

    def run(
        self,
        forcing: xr.Dataset,
        params=None,
        state0: xr.Dataset | Mapping | None = None,
        output_freq: str | None = None,
        sites: xr.Dataset | None = None,
        spinup_years: int | None = None,
        outputs: list[str] | None = None,
        progress: bool = False,
    ) -> xr.Dataset:
        """Same call and output as :meth:`ailand.ToyEcLand.run`, at the emulator step.

        forcing : hourly forcing Dataset ``(time, site)`` with static site fields.
        params : None, dict (arrays of length M give M members) or DataArray ``(member, parameter)``.
        state0 : state Dataset/dict over ``site`` (and ``member``), e.g. the physics'
            :meth:`~ailand.ToyEcLand.initial_conditions`; None for a cold start followed by
            ``spinup_years`` of emulator spin-up on the first forcing year.
        output_freq : a multiple of the emulator step (default: the step, e.g. ``"6h"``).
        """
        f, st, _ = self.prepare(forcing, sites)
        p, members = self._params_checked(params)
        state, years = self._start_state(f, p, st, state0, spinup_years, progress)
        step_out = freq_seconds(output_freq) if output_freq is not None else self.dt
        k = step_out / self.dt
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError(f"output_freq {output_freq!r} must be a whole multiple of the emulator step {self.dt:g} s")
        k = int(round(k))
        with torch.no_grad():
            out, _ = self.simulate(f, p, st, state, steps_per_output=k, outputs=outputs, progress=progress)
        t0 = pd.Timestamp(forcing["time"].values[0])
        n_out = next(iter(out.values())).shape[0] if out else 0
        times = t0 + pd.to_timedelta(self.dt * k * np.arange(1, n_out + 1), unit="s")
        return labelled_output(
            out, forcing, times, members,
            attrs={
                "model": "ailand.Emulator",
                "dt_seconds": self.dt,
                "output_freq": str(output_freq or f"{self.dt / 3600:g}h"),
                "time_convention": "states at the end of each output interval; fluxes are means over the interval ending at 'time'",
                "spinup_years": years,
                "sign_convention": "turbulent fluxes positive upward; Qg, Rnet positive downward",
            },
        )

    def _start_state(self, f, p, st, state0, spinup_years, progress):
        """(named state at the first forcing time, emulator spin-up years used)."""
        if state0 is not None:
            batch = torch.broadcast_shapes(f["Tair"].shape[1:], *[v.shape for v in p.values()])
            return self._named_state_from(state0, STATE_NAMES, batch), 0
        years = self.spinup_years if spinup_years is None else int(spinup_years)
        state = split_layers(cold_start(f["Tair"], p, self.dt))
        return (self.spinup(f, p, st, years, state, progress=progress) if years > 0 else state), years

    def initial_conditions(self, forcing, params=None, state0=None, sites=None, spinup_years=None, progress=False) -> xr.Dataset:
        """The (emulator-spun-up) state :meth:`run` starts from, as in :meth:`ToyEcLand.initial_conditions`."""
        f, st, _ = self.prepare(forcing, sites)
        p, members = self._params_checked(params)
        state, _ = self._start_state(f, p, st, state0, spinup_years, progress)
        t0 = pd.Timestamp(forcing["time"].values[0])
        ds = labelled_output({k: state[k][None] for k in STATE_NAMES}, forcing, pd.DatetimeIndex([t0]), members, {"model": "ailand.Emulator"})
        return ds.isel(time=0)

    # ------------------------------------------------------------- persistence
    @classmethod
    def from_ensemble(cls, data, dt: float | None = None, **config) -> "Emulator":
        """A new (untrained) emulator with normalisation and ranges from an ensemble
        (a path or :class:`ailand.ensemble.EnsembleData`)."""
        data = as_ensemble_data(data)
        if dt is None:
            dt = freq_seconds(data.attrs.get("output_freq", "6h"))
        # default: every physics diagnostic the ensemble holds (older ensembles lack T2m, q2m, RH2m)
        diagnostics = config.pop("diagnostics", [d for d in DIAGNOSTIC_NAMES if d in data.index])
        em = cls(data.space, normaliser_from(data, diagnostics), dt=dt, diagnostics=diagnostics, **config)
        em.meta["param_range"] = {n: [float(lo), float(hi)] for n, (lo, hi) in zip(data.space.names, data.space.bounds)}
        rng = {}
        for name in (*FORCING_NAMES, *CLIM_NAMES):
            s = data.statistics[name]
            rng[name] = [float(s["minimum"]), float(s["maximum"])]
        em.meta["input_range"] = rng
        em.meta["training_sites"] = [str(s) for s in data.sites]
        em.meta["spinup_years"] = int(data.attrs.get("spinup_years", 1) or 1)
        em.spinup_years = em.meta["spinup_years"]
        return em

    def _header(self) -> dict:
        return {
            "format_version": FORMAT_VERSION if self.diag_head is not None else 1,
            "class": "ailand.Emulator",
            "dt": self.dt,
            "config": self.config,
            "diagnostics": list(self.diagnostics),
            "spinup_years": self.spinup_years,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "normaliser": self.norm.to_dict(),
            "space": self.space.to_json(),
            "meta": self.meta,
        }

    def save(self, path) -> Path:
        """Write weights, normalisation, variable lists, parameter space and metadata to one file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        blob = {"header": json.dumps(self._header()), "weights": state}
        if self.diag_head is not None:
            blob["diag_head"] = self.diag_head.to_blob()
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def default(cls, device: str | torch.device = "cpu") -> "Emulator":
        """The pretrained emulator shipped with ailand (``data/emulator/default.pt``, trained
        by ``make emulator`` on the default ensemble; see the README for its skill)."""
        from ..params import DATA_DIR

        path = Path(DATA_DIR) / "emulator" / "default.pt"
        if not path.exists():
            raise ValueError(f"{path} is missing: run 'make emulator' and copy runs/emulator/emulator.pt there")
        return cls.load(path, device=device)

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "Emulator":
        """Rebuild an emulator written by :meth:`save` (bit-for-bit the same weights)."""
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        h = json.loads(blob["header"])
        if h.get("class") != "ailand.Emulator":
            raise ValueError(f"{path} is not an ailand emulator file")
        if h.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer ailand (format {h['format_version']})")
        space = ParameterSpace.from_json(h["space"])
        em = cls(
            space, Normaliser.from_dict(h["normaliser"]), dt=h["dt"], diagnostics=h["diagnostics"],
            spinup_years=h["spinup_years"], meta=h["meta"], **h["config"],
        )
        em.net.load_state_dict(blob["weights"])
        if "diag_head" in blob:
            em.diag_head = DiagnosticHead.from_blob(blob["diag_head"])
        return em.to(device)

    # ----------------------------------------------------- Jacobians and ONNX
    def jacobian(self, x, method: str = "jacrev") -> xr.DataArray:
        """One-step Jacobians d outputs / d inputs ``(sample, output, input)`` in physical
        units, for input rows ``x`` ``(B, n_in)`` (e.g. from
        :func:`ailand.emulator.jacobian.step_inputs`); see
        :func:`ailand.emulator.jacobian.step_jacobian`."""
        from .jacobian import step_jacobian

        return step_jacobian(self, x, method=method)

    def to_onnx(self, path, opset: int | None = None):
        """Export one step to ONNX: one input ``features [batch, n_in]``, one output
        ``outputs [batch, n_out]``, names/units in the metadata; see
        :func:`ailand.emulator.onnx_export.to_onnx`."""
        from .onnx_export import to_onnx

        return to_onnx(self, path, opset=opset)

    # ----------------------------------------------------------- training etc.
    def evaluate(self, data, **kwargs) -> xr.Dataset:
        """Scores against the physics on held-out members and sites (RMSE, bias, ACC, error
        growth); see :func:`ailand.emulator.evaluate.evaluate` for the options."""
        return _evaluate(self, data, **kwargs)

    def fit(self, data, **kwargs):
        """Train on an ensemble (see :func:`ailand.emulator.train.fit` for the options)."""
        return _fit(self, data, **kwargs)


def train_emulator(data, *, width: int = 256, depth: int = 4, activation: str = "silu", layer_norm: bool = False, **fit_kwargs):
    """Build an emulator from an ensemble (path or EnsembleData) and train it; returns
    ``(emulator, history)``. See :func:`ailand.emulator.train.fit` for the training options."""
    data = as_ensemble_data(data)
    em = Emulator.from_ensemble(data, width=width, depth=depth, activation=activation, layer_norm=layer_norm)
    hist = em.fit(data, **fit_kwargs)
    return em, hist


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="Emulator", mininterval=0.5)
