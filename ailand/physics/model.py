"""ToyEcLand: the column model behind the shared Model interface.

``run`` takes and returns xarray; ``simulate`` is the same model on torch tensors
(differentiable with respect to parameters and initial state) for inference code.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ..interface import ColumnModel, freq_seconds
from ..params import ParameterSpace
from . import column
from . import constants as c

LAYER_LABELS = ("0-7 cm", "7-28 cm", "28-100 cm", "100-289 cm")

STATE_META = {
    **{f"swvl{k + 1}": ("m3 m-3", f"volumetric soil water, layer {k + 1} ({LAYER_LABELS[k]})") for k in range(4)},
    **{f"stl{k + 1}": ("K", f"soil temperature, layer {k + 1} ({LAYER_LABELS[k]})") for k in range(4)},
    "skt": ("K", "skin temperature"),
    "sd": ("m", "snow water equivalent (ice + liquid)"),
    "rsn": ("kg m-3", "snow density"),
    "asn": ("-", "snow albedo"),
    "tsn": ("K", "snow temperature"),
    "wl": ("m", "interception store (water equivalent)"),
    "wsn": ("m", "liquid water held in the snow pack (part of sd)"),
}
VARIABLES = {**STATE_META, **column.DIAGNOSTICS}

# share of a site's vegetation cover that stands above snow (ecLand's "high vegetation")
HIGH_VEGETATION = {
    "evergreen_needleleaf": 1.0, "deciduous_needleleaf": 1.0, "deciduous_broadleaf": 1.0,
    "evergreen_broadleaf": 1.0, "mixed_forest": 1.0, "shrubland": 0.3, "savanna": 0.2,
}
STATE_NAMES = tuple(STATE_META)
DIAGNOSTIC_NAMES = tuple(column.DIAGNOSTICS)





def split_layers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model state (``swvl``/``stl`` with a layer dim) -> output names (``swvl1..4``, ``stl1..4``)."""
    out = {}
    for k, v in state.items():
        if k in ("swvl", "stl"):
            for i in range(4):
                out[f"{k}{i + 1}"] = v[..., i]
        else:
            out[k] = v
    return out


def join_layers(named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Output names -> model state (inverse of :func:`split_layers`)."""
    out = {k: v for k, v in named.items() if not k[:-1] in ("swvl", "stl") or not k[-1].isdigit()}
    for k in ("swvl", "stl"):
        out[k] = torch.stack(torch.broadcast_tensors(*[named[f"{k}{i + 1}"] for i in range(4)]), dim=-1)
    return out


def cold_start(tair: torch.Tensor, params: Mapping[str, torch.Tensor], dt: float) -> dict[str, torch.Tensor]:
    """A cold start: soil at field capacity and at the mean air temperature of the first
    year, skin at the first air temperature, no snow, empty interception store.

    tair : ``(T, *B)`` air temperature [K] at steps of ``dt`` seconds; params : tensors
    broadcasting to ``B``. Returns the model state (``swvl``/``stl`` ``(*B, 4)``).
    """
    n_year = min(tair.shape[0], int(round(365 * 86400 / dt)))
    shape = torch.broadcast_shapes(tair.shape[1:], *[v.shape for v in params.values()])
    zeros = torch.zeros(shape, dtype=tair.dtype, device=tair.device)
    t_mean = tair[:n_year].mean(0) + zeros
    theta = (params["THETA_CAP"] + zeros)[..., None].expand(*shape, 4)
    return {
        "swvl": theta.clone(),
        "stl": t_mean[..., None].expand(*shape, 4).clone(),
        "skt": tair[0] + zeros,
        "sd": zeros.clone(),
        "wsn": zeros.clone(),
        "rsn": zeros + 100.0,
        "asn": params["RALFMAXSN"] + zeros,
        "tsn": torch.clamp(tair[0], max=c.TT) + zeros,
        "wl": zeros.clone(),
    }


class ToyEcLand(ColumnModel):
    """Differentiable toy of ECMWF's ecLand land-surface column scheme.

    Parameters
    ----------
    dt : model time step [s] (forcing must come at ``dt`` or a multiple of it).
    dtype : torch dtype; ``torch.float64`` for budget checks and gradients.
    space : the :class:`ParameterSpace` (default: ``data/parameters.csv``).
    spinup_years : years of spin-up used by :meth:`run` when no ``state0`` is given: the
        first year of the forcing is repeated this many times (without gradient) and the
        final state starts the run, so slow soil layers begin near equilibrium.
    compile : ``"auto"`` (default), True or False. The step compiles with ``torch.compile``
        (inductor, C++ wrapper) to one fused kernel set: ~25x faster per step for small
        batches and ~5x for 10,000 columns, after a one-off compilation of ~20-30 s (cached
        on disk for later processes). ``"auto"`` compiles runs without gradient whose eager
        cost would exceed ~10 s; runs that need gradients stay eager unless checkpointed
        (below). If compilation fails
        (e.g. no C++ compiler) the model warns and runs eagerly. A checkpointed gradient
        (see ``checkpoint``) is a pass without gradient plus a recomputation with it, chunk
        by chunk: ``"auto"`` compiles both by the same rule (forward and backward kernels;
        the first compilation with gradients takes ~2 min on 2 cores, ~25 s from the disk
        cache), which makes a one-year gradient at 10 sites ~10x faster than eager (14 s
        against 130-180 s; ``benchmarks/emulator.py --only gradient``). A double backward
        always recomputes eagerly.
    soil_evaporation : ``"beta"`` (default) or ``"resistance"``. How bare soil evaporates:
        ecLand's beta factor on the potential rate (layer-1 water stress between wilting point
        and field capacity), or a soil surface resistance in series with the aerodynamic one,
        r_soil = exp(8.206 - 4.255 theta1/THETA_SAT) (Sellers et al. 1992; see
        :func:`ailand.physics.surface.soil_surface_resistance`). The second is a structurally
        different physics for twin experiments of model error; the default is unchanged.
    checkpoint : ``"auto"`` (default), True, False or a chunk length in steps. Gradient
        checkpointing of the time loop for runs that need gradients: the run goes through
        once without recording (storing only the state at the start of each chunk of
        steps), and the backward pass recomputes one chunk at a time with its graph, from
        the last chunk to the first, so memory is bounded by one chunk's graph plus one
        state per chunk instead of the graph of every step (a one-year gradient at 10 sites
        held ~6 GiB of graph). Costs one extra pass without gradient, which the smaller
        working set about pays back (eager, a one-year gradient took as long checkpointed
        as not). True (or ``"auto"`` for runs of at least ``CHECKPOINT_AUTO_STEPS`` steps)
        uses chunks of ``ceil(sqrt(n_steps))`` steps; an integer sets the chunk length. Gradients equal the
        unchecked ones (same operations; to rounding when the first pass is compiled),
        including second derivatives (a double backward recomputes each chunk with its graph).
    """

    def __init__(
        self,
        dt: float = 3600.0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        space: ParameterSpace | None = None,
        spinup_years: int = 0,
        compile: bool | str = "auto",
        checkpoint: bool | int | str = "auto",
        soil_evaporation: str = "beta",
    ):
        if soil_evaporation not in column.SOIL_EVAPORATION:
            raise ValueError(f"soil_evaporation must be one of {column.SOIL_EVAPORATION}, got {soil_evaporation!r}")
        self.soil_evaporation = soil_evaporation
        self.dt = float(dt)
        self.dtype = dtype
        self.device = torch.device(device)
        self.space = space or ParameterSpace.default()
        self.spinup_years = int(spinup_years)
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.compile = compile
        self.checkpoint = _check_checkpoint(checkpoint)
        self._compiled = None
        self._compile_failed = False
        self._compile_grad_failed = False

    def _step_fn(self, n_steps: int, batch_numel: int, needs_grad: bool, recompute: bool = False):
        """The step function to use: compiled or eager (see ``compile``). ``recompute``: the
        step of a checkpointed gradient's backward pass, which ``"auto"`` compiles by the same
        rule as a run without gradient."""
        use = self.compile is True or (
            self.compile == "auto" and (not needs_grad or recompute) and n_steps * (1.5e-3 + 5e-7 * batch_numel) > 10.0
        )
        if not use or self._compile_failed or (needs_grad and self._compile_grad_failed):
            return column.step
        if self._compiled is None:
            import warnings

            with warnings.catch_warnings():  # torch's own inductor import uses the deprecated torch.jit.script_method
                warnings.filterwarnings("ignore", message=".*torch.jit.script", category=DeprecationWarning)
                self._compiled = torch.compile(column.step, dynamic=False, options={"cpp_wrapper": True})
        return self._compiled

    def __repr__(self):
        variant = "" if self.soil_evaporation == "beta" else f", soil_evaporation={self.soil_evaporation!r}"
        return f"ToyEcLand(dt={self.dt:g} s, dtype={self.dtype}, {len(self.space)} parameters{variant})"

    # ================================================================ torch API
    def initial_state(self, forcing: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> dict:
        """A cold start (see :func:`cold_start`); ``forcing`` tensors are ``(T, *B)``."""
        return cold_start(forcing["Tair"], params, self.dt)

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
        checkpoint: bool | int | str | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Integrate on tensors; differentiable with respect to ``params`` and ``state0``.

        Shapes broadcast to a column batch ``B``: e.g. forcing ``(T, S)``, static ``(S,)``
        and parameters ``(M, 1)`` give ``B = (M, S)``.

        forcing : ``FORCING_INPUTS`` tensors ``(T, ...)`` in SI units (``lai`` is the LAI
            climatology [m2 m-2]); each row is held for ``forcing_repeat`` model steps.
        params : every parameter of the space, ``(...)`` tensors (see :meth:`param_tensors`).
        static : ``cveg`` [-], ``sand`` [-] and optionally ``cvh`` (high-vegetation cover,
            masks snow albedo) [-], ``(...)`` tensors.
        state0 : model state (``swvl``/``stl`` with a trailing layer dim of 4), or None for
            :meth:`initial_state`.
        steps_per_output : diagnostics are averaged and states sampled every this many steps.
        outputs : names to keep (see ``VARIABLES``); default all.
        checkpoint : gradient checkpointing of the time loop for this call (None: the
            model's ``checkpoint`` setting; see :class:`ToyEcLand`). Only acts when a
            gradient is being recorded.

        Returns ``(out, final_state)``: ``out[name]`` is ``(T_out, *B)``.
        """
        params = dict(params)
        s = column.derived_static(static, params, self.soil_evaporation)
        state = dict(state0) if state0 is not None else self.initial_state(forcing, params)
        missing = [k for k in column.STATE_VARIABLES if k not in state]
        if missing:
            raise ValueError(f"state0 lacks {missing}; a state needs {list(column.STATE_VARIABLES)}")
        wanted = list(outputs) if outputs is not None else list(VARIABLES)
        bad = [k for k in wanted if k not in VARIABLES]
        if bad:
            raise ValueError(f"unknown output(s) {bad}; available: {', '.join(VARIABLES)}")
        want_diag = [k for k in wanted if k in column.DIAGNOSTICS]
        want_state = [k for k in wanted if k in STATE_META]
        n_steps = forcing["Tair"].shape[0] * forcing_repeat
        if n_steps % steps_per_output:
            raise ValueError(f"{n_steps} steps is not a multiple of steps_per_output={steps_per_output}")
        needs_grad = torch.is_grad_enabled() and any(
            v.requires_grad for v in [*params.values(), *state.values(), *forcing.values(), *s.values()]
        )
        batch = torch.broadcast_shapes(state["skt"].shape, forcing["Tair"].shape[1:], *[v.shape for v in params.values()])
        run = _Run(self, n_steps, int(np.prod(batch)), steps_per_output, forcing_repeat, want_diag, want_state)
        chunk = self._chunk_length(n_steps, needs_grad, self.checkpoint if checkpoint is None else _check_checkpoint(checkpoint))
        bar = _progress(n_steps, progress)
        if chunk:
            state, out = _simulate_checkpointed(run, state, params, s, forcing, chunk, bar)
        else:
            step_fn = self._stepper(n_steps, run.batch_numel, needs_grad)
            rows = {k: forcing[k].unbind(0) for k in column.FORCING_INPUTS}
            state, _, rec = run.advance(step_fn, state, None, rows, params, s, 0, n_steps, bar=bar)
            out = {k: torch.stack(v) for k, v in rec.items()}
        if bar is not None:
            bar.close()
        return {k: out[k] for k in wanted}, state

    def _chunk_length(self, n_steps: int, needs_grad: bool, setting) -> int:
        """Steps per checkpointed chunk for a run of ``n_steps``, or 0 for no checkpointing."""
        if not needs_grad or setting is False:
            return 0
        if setting == "auto" and n_steps < CHECKPOINT_AUTO_STEPS:
            return 0
        if setting is True or setting == "auto":
            return int(math.ceil(math.sqrt(n_steps)))
        return min(int(setting), n_steps)

    def _stepper(self, n_steps: int, batch_numel: int, needs_grad: bool, recompute: bool = False):
        """The step function (see :meth:`_step_fn`); a compiled one falls back to the eager
        step, with a warning, when its first call fails (no compiler, unsupported platform)."""
        fn = self._step_fn(n_steps, batch_numel, needs_grad, recompute)
        if fn is column.step:
            return fn
        first = True

        def call(*args):
            nonlocal fn, first
            if not first:
                return fn(*args)
            first = False
            try:
                return fn(*args)
            except Exception as err:  # no compiler, unsupported platform...
                import warnings

                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly")
                if needs_grad:
                    self._compile_grad_failed = True
                else:
                    self._compile_failed = True
                fn = column.step
                return fn(*args)

        return call

    # =============================================================== xarray API
    def prepare(self, forcing: xr.Dataset, sites: xr.Dataset | None = None):
        """Validated forcing Dataset -> (forcing tensors ``(T, S)``, static tensors ``(S,)``, steps per row).

        Static site fields are read from the forcing's site-only variables, or from
        ``sites`` (a Dataset from :func:`ailand.load_sites`) when given.
        """
        from ..forcing import validate_forcing
        from ..sites import lai_climatology

        forcing = validate_forcing(forcing)
        statics = sites if sites is not None else forcing
        need = ["cveg", "sand", "lai_min", "lai_max", "lai_peak_doy"]
        missing = [k for k in need if k not in statics]
        if missing:
            raise ValueError(
                f"static site fields {missing} are missing: use ailand.synthetic_forcing (which carries them), "
                "or pass sites=ailand.load_sites([...]) with the forcing's sites"
            )
        if sites is not None:
            statics = sites.sel(site=forcing["site"].values)
        times = pd.DatetimeIndex(forcing["time"].values)
        step = (times[1] - times[0]).total_seconds() if len(times) > 1 else self.dt
        repeat = step / self.dt
        if abs(repeat - round(repeat)) > 1e-9 or round(repeat) < 1:
            raise ValueError(f"forcing time step {step:g} s must be a whole multiple of the model step dt={self.dt:g} s")
        f = {k: self.tensor(forcing[k].transpose("time", "site").values) for k in column.FORCING_INPUTS if k != "lai"}
        f["lai"] = self.tensor(lai_climatology(statics, times.day_of_year.values))
        st = {k: self.tensor(statics[k].values) for k in ("cveg", "sand")}
        if "veg_type" in statics.coords or "veg_type" in statics:
            high = [HIGH_VEGETATION.get(str(v), 0.0) for v in np.atleast_1d(statics["veg_type"].values)]
            st["cvh"] = st["cveg"] * self.tensor(high)
        return f, st, int(round(repeat))

    def _state_from(self, state0, batch_shape) -> dict[str, torch.Tensor]:
        return join_layers(self._named_state_from(state0, STATE_NAMES, batch_shape))

    def run(
        self,
        forcing: xr.Dataset,
        params=None,
        state0: xr.Dataset | Mapping | None = None,
        output_freq: str = "1h",
        sites: xr.Dataset | None = None,
        spinup_years: int | None = None,
        outputs: list[str] | None = None,
        progress: bool = False,
    ) -> xr.Dataset:
        """Run the model on a forcing Dataset and return labelled output.

        forcing : Dataset with dims ``(time, site)`` and ecLand forcing names (e.g. from
            :func:`ailand.synthetic_forcing` or :func:`ailand.open_forcing`).
        params : None (defaults), a dict of some parameters (the rest default; arrays of
            length M give M members), or a DataArray ``(member, parameter)``.
        state0 : Dataset (or dict) with the state variables (``swvl1..4, stl1..4, skt, sd,
            rsn, asn, tsn, wl`` and optionally ``wsn``) over ``site`` (and ``member``), e.g.
            ``previous_run.isel(time=-1)``; None for a cold start after ``spinup_years``.
        output_freq : output interval (a multiple of ``dt``): states are instantaneous at
            the end of each interval, fluxes are means over it; the time label is the end
            of the interval.
        Returns a Dataset with dims ``(time, site)``, plus ``member`` for several parameter sets.
        """
        f, st, repeat = self.prepare(forcing, sites)
        p, members = self._params_from(params)
        state, years = self._start_state(f, p, st, state0, spinup_years, progress)
        step_out = freq_seconds(output_freq)
        k = step_out / self.dt
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ValueError(f"output_freq {output_freq!r} must be a whole multiple of dt={self.dt:g} s")
        k = int(round(k))
        with torch.no_grad():
            out, _ = self.simulate(f, p, st, state, steps_per_output=k, outputs=outputs, progress=progress, forcing_repeat=repeat)
        t0 = pd.Timestamp(forcing["time"].values[0])
        n_out = next(iter(out.values())).shape[0] if out else 0
        times = t0 + pd.to_timedelta(self.dt * k * np.arange(1, n_out + 1), unit="s")
        return self._to_dataset(out, forcing, times, members, output_freq, years if state0 is None else 0)

    def _start_state(self, f, p, st, state0, spinup_years, progress):
        """(state at the first forcing time, spin-up years used) for :meth:`run`."""
        batch = torch.broadcast_shapes(f["Tair"].shape[1:], *[v.shape for v in p.values()])
        years = self.spinup_years if spinup_years is None else int(spinup_years)
        if state0 is not None:
            return self._state_from(state0, batch), 0
        state = self.initial_state(f, p)
        if years > 0:
            state = self.spinup(f, p, st, years, state, progress=progress)
        return state, years

    def initial_conditions(
        self,
        forcing: xr.Dataset,
        params=None,
        state0: xr.Dataset | Mapping | None = None,
        sites: xr.Dataset | None = None,
        spinup_years: int | None = None,
        progress: bool = False,
    ) -> xr.Dataset:
        """The state :meth:`run` starts from, labelled at the first forcing time.

        Same arguments as :meth:`run`. Returns a Dataset of the state variables with dims
        ``(site,)`` or ``(member, site)`` and a scalar ``time`` coordinate; pass it back
        as ``state0`` to reproduce the same run without repeating the spin-up.
        """
        f, st, _ = self.prepare(forcing, sites)
        p, members = self._params_from(params)
        state, years = self._start_state(f, p, st, state0, spinup_years, progress)
        named = split_layers(state)
        t0 = pd.Timestamp(forcing["time"].values[0])
        out = {k: v[None] for k, v in named.items() if k in STATE_META}
        ds = self._to_dataset(out, forcing, pd.DatetimeIndex([t0]), members, "instant", years)
        ds = ds.isel(time=0)
        ds.attrs["time_convention"] = "instantaneous state at 'time', the start of the forcing"
        return ds

    def _to_dataset(self, out, forcing, times, members, output_freq, spinup) -> xr.Dataset:
        return labelled_output(
            out, forcing, times, members,
            attrs={
                "model": "ailand.ToyEcLand",
                "dt_seconds": self.dt,
                "output_freq": str(output_freq),
                "time_convention": "states at the end of each output interval; fluxes are means over the interval ending at 'time'",
                "spinup_years": spinup,
                "sign_convention": "turbulent fluxes positive upward; Qg, Rnet positive downward",
            },
        )


# ===================================================================== time loop
CHECKPOINT_AUTO_STEPS = 2000  # checkpoint="auto" checkpoints gradient runs of at least this many steps


def _check_checkpoint(value):
    """Validate a ``checkpoint`` setting: True, False, "auto" or a positive chunk length."""
    if value is True or value is False or value == "auto":
        return value
    if isinstance(value, (int, np.integer)) and value >= 1:
        return int(value)
    raise ValueError(f"checkpoint must be True, False, 'auto' or a chunk length >= 1 (steps), got {value!r}")


class _Run:
    """What one :meth:`ToyEcLand.simulate` call steps and records (shared by the plain and
    the checkpointed time loops, so both do exactly the same operations)."""

    def __init__(self, model, n_steps, batch_numel, steps_per_output, repeat, want_diag, want_state):
        self.model, self.n_steps, self.batch_numel = model, n_steps, batch_numel
        self.spo, self.repeat, self.dt = steps_per_output, repeat, model.dt
        self.want_diag, self.want_state = list(want_diag), list(want_state)
        self.screen = any(k in column.SCREEN_DIAGNOSTICS for k in want_diag)

    def advance(self, step_fn, state, acc, rows, p, s, t0, t1, row0=0, bar=None):
        """Steps ``t0 .. t1 - 1`` from ``state`` with diagnostic sums ``acc`` (None at the start
        of an output interval); ``rows[name][i - row0]`` is forcing row ``i``.
        Returns ``(state, acc, records)``, records ``{name: [(*B) tensor per output time]}``."""
        want_diag, spo = self.want_diag, self.spo
        rec = {k: [] for k in (*want_diag, *self.want_state)}
        for t in range(t0, t1):
            ft = {k: v[t // self.repeat - row0] for k, v in rows.items()}
            state, diag = step_fn(state, ft, p, s, self.dt, self.screen)
            if want_diag:
                acc = {k: diag[k] for k in want_diag} if acc is None else {k: acc[k] + diag[k] for k in want_diag}
            if (t + 1) % spo == 0:
                for k in want_diag:
                    rec[k].append(acc[k] / spo)
                acc = None
                if self.want_state:
                    named = split_layers(state)
                    for k in self.want_state:
                        rec[k].append(named[k])
            if bar is not None and (t + 1) % 24 == 0:
                bar.update(24)
        return state, acc, rec


class _Chunk:
    """Steps ``a .. b - 1`` of a run as a function of flat tensors, for :class:`_Recompute`.

    Inputs: state (``column.STATE_VARIABLES``), diagnostic sums (when an output interval is
    open at ``a``), parameters, derived statics, the forcing rows the chunk reads. Outputs:
    state, diagnostic sums (when open at ``b``), then the records of each output name
    ``(r, *B)`` (when the chunk ends ``r >= 1`` output intervals).
    """

    def __init__(self, run, a, b, p_keys, s_keys, steppers):
        self.run, self.a, self.b = run, a, b
        self.p_keys, self.s_keys = p_keys, s_keys
        self.acc_in = bool(run.want_diag) and a % run.spo != 0
        self.acc_out = bool(run.want_diag) and b % run.spo != 0
        self.n_rec = sum(1 for t in range(a, b) if (t + 1) % run.spo == 0)
        self.row0 = a // run.repeat
        self.steppers = steppers  # {"forward": fn, "recompute": fn} (one per simulate call)

    def __call__(self, tensors, stepper):
        run = self.run
        it = iter(tensors)
        state = {k: next(it) for k in column.STATE_VARIABLES}
        acc = {k: next(it) for k in run.want_diag} if self.acc_in else None
        p = {k: next(it) for k in self.p_keys}
        s = {k: next(it) for k in self.s_keys}
        rows = {k: next(it) for k in column.FORCING_INPUTS}
        state, acc, rec = run.advance(stepper, state, acc, rows, p, s, self.a, self.b, row0=self.row0)
        outs = [state[k] for k in column.STATE_VARIABLES]
        if self.acc_out:
            outs += [acc[k] for k in run.want_diag]
        if self.n_rec:
            outs += [torch.stack(rec[k]) for k in (*run.want_diag, *run.want_state)]
        return outs

    def recompute_stepper(self):
        """The step for recomputing with a graph (compiled by the model's ``compile`` rule;
        a double backward always recomputes eagerly: a compiled backward cannot be
        differentiated again)."""
        if "recompute" not in self.steppers:
            self.steppers["recompute"] = self.run.model._stepper(self.run.n_steps, self.run.batch_numel, True, recompute=True)
        return self.steppers["recompute"]

    def eager_fallback(self, err):
        """After a failed compiled recomputation: warn once, recompute eagerly from now on."""
        import warnings

        model = self.run.model
        if not model._compile_grad_failed:
            warnings.warn(f"torch.compile of the gradient recomputation failed ({type(err).__name__}: {err}); "
                          "recomputing eagerly")
        model._compile_grad_failed = True
        self.steppers["recompute"] = column.step


def _chunk_vjp(chunk: _Chunk, ins, grads, need, stepper, create_graph=False):
    """Recompute ``chunk`` from ``ins`` with its graph and return the vector-Jacobian
    products ``grads^T d outs / d ins`` for the inputs flagged in ``need`` (None where an
    input does not influence the outputs)."""
    with torch.enable_grad():
        outs = chunk(ins, stepper)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wrt = [x for x, n in zip(ins, need) if n]
        if not (pairs and wrt):
            return [None] * len(wrt)
        return list(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True, create_graph=create_graph))


def _leaf(x, requires_grad):
    return x.detach().requires_grad_(bool(requires_grad) and x.is_floating_point())


class _Recompute(torch.autograd.Function):
    """One checkpointed chunk: forward without a graph, backward by recomputing the chunk
    with its graph from the saved inputs (the chunk's start state, parameters, forcing)."""

    @staticmethod
    def forward(ctx, chunk: _Chunk, *tensors):
        ctx.chunk = chunk
        ctx.save_for_backward(*tensors)
        ctx.set_materialize_grads(False)
        plain = [x.detach() for x in tensors]  # a compiled step then shares the graph of plain runs
        with torch.no_grad():
            outs = chunk(plain, chunk.steppers["forward"])
        ids = {id(x) for x in plain}
        return tuple(o.clone() if id(o) in ids else o for o in outs)

    @staticmethod
    def backward(ctx, *grads):
        chunk, need, saved = ctx.chunk, ctx.needs_input_grad[1:], ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward (see _ChunkVJP)
            idx = tuple(i for i, g in enumerate(grads) if g is not None)
            got = _ChunkVJP.apply(chunk, need, idx, *saved, *[grads[i] for i in idx])
        else:
            stepper = chunk.recompute_stepper()
            try:
                got = _chunk_vjp(chunk, [_leaf(x, n) for x, n in zip(saved, need)], grads, need, stepper)
            except Exception as err:  # a compiled backward that fails (the eager one raises as usual)
                if stepper is column.step:
                    raise
                chunk.eager_fallback(err)
                got = _chunk_vjp(chunk, [_leaf(x, n) for x, n in zip(saved, need)], grads, need, column.step)
        it = iter(got)
        return (None, *[next(it) if n else None for n in need])


class _ChunkVJP(torch.autograd.Function):
    """The backward of a checkpointed chunk as a differentiable function of its inputs and
    output gradients, so that a double backward (``create_graph=True``, e.g. tangent-linear
    products by the double-backward trick) is exact: its own backward recomputes the chunk
    again (memory stays bounded) and differentiates the vector-Jacobian product once more.
    Third derivatives are not supported."""

    @staticmethod
    def forward(ctx, chunk: _Chunk, need, idx, *xs):
        n_in = len(need)
        ctx.chunk, ctx.need, ctx.idx, ctx.n_in = chunk, need, idx, n_in
        ctx.save_for_backward(*xs)
        ins, g = [_leaf(x, n) for x, n in zip(xs[:n_in], need)], xs[n_in:]
        grads = [None] * (max(idx) + 1 if idx else 0)
        for i, gi in zip(idx, g):
            grads[i] = gi.detach()
        got = _chunk_vjp(chunk, ins, grads, need, column.step)
        wrt = [x for x, n in zip(xs[:n_in], need) if n]
        return tuple(torch.zeros_like(x) if v is None else v.detach() for v, x in zip(got, wrt))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *w):
        chunk, need, idx, n_in = ctx.chunk, ctx.need, ctx.idx, ctx.n_in
        xs = ctx.saved_tensors
        need2 = ctx.needs_input_grad[3:]
        ins = [_leaf(x, n or n2) for x, n, n2 in zip(xs[:n_in], need, need2[:n_in])]
        g = [_leaf(x, n2) for x, n2 in zip(xs[n_in:], need2[n_in:])]
        grads = [None] * (max(idx) + 1 if idx else 0)
        for i, gi in zip(idx, g):
            grads[i] = gi
        with torch.enable_grad():
            got = _chunk_vjp(chunk, ins, grads, need, column.step, create_graph=True)
            pairs = [(v, wi) for v, wi in zip(got, w) if v is not None and wi is not None and v.requires_grad]
            wrt = [x for x, n2 in zip([*ins, *g], need2) if n2]
            second = [None] * len(wrt)
            if pairs and wrt:
                second = torch.autograd.grad([v for v, _ in pairs], wrt, [wi for _, wi in pairs], allow_unused=True)
        it = iter(second)
        return (None, None, None, *[next(it) if n2 else None for n2 in need2])


def _simulate_checkpointed(run: _Run, state, params, s, forcing, chunk_len: int, bar):
    """The time loop in checkpointed chunks of ``chunk_len`` steps (see ``checkpoint`` in
    :class:`ToyEcLand`). Returns ``(final state, {name: (T_out, *B)})``."""
    p_keys, s_keys = list(params), list(s)
    steppers = {"forward": run.model._stepper(run.n_steps, run.batch_numel, False)}
    acc = None
    pieces = {k: [] for k in (*run.want_diag, *run.want_state)}
    for a in range(0, run.n_steps, chunk_len):
        b = min(run.n_steps, a + chunk_len)
        ch = _Chunk(run, a, b, p_keys, s_keys, steppers)
        i0, i1 = a // run.repeat, (b - 1) // run.repeat + 1
        tensors = [state[k] for k in column.STATE_VARIABLES]
        tensors += [acc[k] for k in run.want_diag] if ch.acc_in else []
        tensors += [params[k] for k in p_keys] + [s[k] for k in s_keys]
        tensors += [forcing[k][i0:i1] for k in column.FORCING_INPUTS]
        outs = list(_Recompute.apply(ch, *tensors))
        n_state = len(column.STATE_VARIABLES)
        state = dict(zip(column.STATE_VARIABLES, outs[:n_state]))
        rest = outs[n_state:]
        if ch.acc_out:
            acc, rest = dict(zip(run.want_diag, rest[: len(run.want_diag)])), rest[len(run.want_diag):]
        else:
            acc = None
        for k, v in zip(pieces, rest):
            pieces[k].append(v)
        if bar is not None:
            bar.update(b - a)
    return state, {k: torch.cat(v) if v else torch.empty(0) for k, v in pieces.items()}


def labelled_output(out: Mapping[str, torch.Tensor], forcing: xr.Dataset, times, members, attrs: dict) -> xr.Dataset:
    """Model output tensors ``(T_out, *B)`` -> Dataset ``(time, [member,] site)`` with the
    units and long names of :data:`VARIABLES` (shared by the physics and the emulator)."""
    dims = ("time", "member", "site") if members is not None else ("time", "site")
    coords = {"time": times, "site": forcing["site"].values}
    if members is not None:
        coords["member"] = members
    for k in ("lat", "lon"):
        if k in forcing and forcing[k].dims == ("site",):
            coords[k] = ("site", forcing[k].values)
    data = {}
    for name, v in out.items():
        arr = v.detach().cpu().numpy()
        if members is None:
            arr = arr.reshape(arr.shape[0], -1)
        units, long_name = VARIABLES[name]
        data[name] = xr.Variable(dims, arr, {"units": units, "long_name": long_name})
    return xr.Dataset(data, coords=coords, attrs=dict(attrs))


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="ToyEcLand", mininterval=0.5)
