"""History matching in waves, persisted so that a killed run resumes where it stopped.

Wave ``k`` (Vernon et al. 2010; hmer's ``full_wave``):

1. design: a maximin Latin hypercube over the space (``k = 1``) or ``n`` space-filling
   points of the current NROY space (:func:`calibration.history_matching.nroy.sample_nroy`);
2. simulator runs ``y = f(x)``, in chunks (optionally on a dask client), each chunk
   written to disk as it finishes; runs with a non-finite output are dropped and logged;
3. a :class:`GPEmulator` for the observed outputs, fitted in the unit cube on this wave's
   runs plus earlier runs inside the NROY space of the waves before it;
4. ``I_k(x)`` with that emulator; a point is NROY when it passes *every* wave so far:
   ``max_k summary_k(x) <= cutoff`` (``summary`` = the ``nth``-largest output, see
   :mod:`calibration.history_matching.implausibility`);
5. summaries on a fixed seeded uniform sample of the space: NROY fraction (with its
   Monte-Carlo standard error ``sqrt(p (1 - p) / N)``) and the emulator variance relative
   to the observation variance inside NROY; the stop rules read them.

Files in ``path``::

    history_matching.json         space, observations, errors, cutoff, nth, seed (checked on reopen)
    wave_01/design.nc             the design (written before any run)
    wave_01/runs_0000.nc ...      simulator outputs, one file per chunk, written as each finishes
    wave_01/gp.pt                 the fitted GPEmulator (GPEmulator.save)
    wave_01/wave.nc               design, outputs, summaries: the wave is complete
    waves.nc                      all completed waves (HistoryMatching.waves)

Every file is written to a temporary name and renamed, so a kill leaves either the old
or the new file. Resuming re-reads the design and finished chunks (no simulation is
repeated) and continues; since the design is read back, the GP is always the one read
back from ``gp.pt``, and every random draw comes from ``(seed, wave)``, the result is
the same as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from ailand import ParameterSpace
from ailand.arrays import to_numpy

from .implausibility import Implausibility, _per_output
from .nroy import maximin_lhs, sample_nroy

log = logging.getLogger(__name__)

_VERSION = 1
_TIMING = ("run_time", "gp_fit_time")


def _labels(forward, m: int) -> list[str]:
    lab = getattr(forward, "labels", None)
    if lab is None:
        return [f"y{i}" for i in range(m)]
    try:
        return ["|".join(str(v)[:10] if k == 2 else str(v) for k, v in enumerate(t)) if isinstance(t, tuple) else str(t)
                for t in lab]
    except TypeError:
        return [f"y{i}" for i in range(m)]


def _write_atomic(ds: xr.Dataset, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    ds.to_netcdf(tmp)
    os.replace(tmp, path)


class HistoryMatching:
    """History matching of ``forward`` against ``observations`` over ``space``, in waves.

    Parameters
    ----------
    forward : a :class:`calibration.Forward` or any callable ``x (n, d) -> y (n, m)``
        taking physical parameters in ``space.names`` order (numpy in, array out).
    observations : ``(m,)`` observations ``z`` (NaN: unobserved, not emulated or matched).
    space : the :class:`ailand.ParameterSpace` searched (constraints respected; with a
        Forward its ``feasible`` also applies, e.g. THETA_PWP < THETA_CAP).
    obs_std : observation error std, scalar or ``(m,)``, > 0 [output units].
    discrepancy_std : model discrepancy std, scalar or ``(m,)``, >= 0 [output units].
    cutoff : implausibility cutoff, > 0 (3: the three-sigma rule).
    nth, tolerance : the implausibility summary (``nth``-largest output, or a fraction of
        outputs allowed above the cutoff); see :mod:`.implausibility`.
    path : folder for the waves; an existing one is reopened (and must match the space,
        observations and settings). None keeps everything in memory (no resume).
    seed : seeds every design and GP fit.
    client : optional dask ``Client``: design chunks are mapped onto it.
    batch_size : simulator runs per forward call and per saved chunk (default: a quarter
        of the wave, at least 1). A vectorised Forward costs about the same per call for
        1 or 40 members, so larger chunks run faster; smaller ones lose less to a kill.
    emulator : keyword arguments for :meth:`GPEmulator.fit` (mean, kernel, n_iter, ...);
        ``pca`` defaults to 0.999 of the variance when more than 50 outputs are observed.
    n_mc : size of the seeded uniform sample for the NROY fraction and stop rules.
    sampler : NROY sampler for waves > 1 (``"auto"``, ``"lhs"``, ``"cloud"``, ``"slice"``).
    stop_fraction_change : stop when the NROY fraction shrinks by less than this relative
        amount between two waves.
    progress : tqdm progress bar over the simulator runs.
    """

    def __init__(self, forward: Callable, observations, space: ParameterSpace, *, obs_std, discrepancy_std=0.0,
                 cutoff: float = 3.0, nth: int = 1, tolerance: float = 0.0, path=None, seed: int = 0, client=None,
                 batch_size: int | None = None, emulator: dict | None = None, n_mc: int = 20000,
                 sampler: str = "auto", stop_fraction_change: float = 0.1, progress: bool = False):
        if not isinstance(space, ParameterSpace):
            raise ValueError(f"space must be an ailand.ParameterSpace, got {type(space).__name__}")
        if not callable(forward):
            raise ValueError(f"forward must be callable (n, d) -> (n, m), got {type(forward).__name__}")
        z = to_numpy(observations, name="observations")
        if z.ndim != 1:
            raise ValueError(f"observations must be a vector (m,), got shape {z.shape}")
        m = z.size
        n_obs = getattr(forward, "n_obs", None)
        if n_obs is not None and int(n_obs) != m:
            raise ValueError(f"observations have {m} values but the forward model gives {n_obs} outputs: "
                             "build them with the same observation operator")
        fnames = getattr(forward, "names", None)
        if fnames is not None and list(fnames) != list(space.names):
            raise ValueError(f"space {space.names} and the forward model's parameters {list(fnames)} differ")
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be > 0 (e.g. 3.0, the three-sigma rule), got {cutoff}")
        obs_std = _per_output(obs_std, m, "obs_std", positive=True)
        disc_std = _per_output(discrepancy_std, m, "discrepancy_std", positive=False)
        self.forward, self.space = forward, space
        self.names, self.d, self.m = list(space.names), len(space), m
        self.z, self.obs_std, self.discrepancy_std = z, obs_std, disc_std
        self.observed = np.isfinite(z)
        self.rule = Implausibility(z[self.observed], obs_std[self.observed] ** 2, disc_std[self.observed] ** 2,
                                   cutoff=cutoff, nth=nth, tolerance=tolerance)
        self.cutoff, self.nth, self.tolerance = float(cutoff), self.rule.nth, float(tolerance)
        self.seed, self.client, self.batch_size = int(seed), client, batch_size
        self.emulator_options = dict(emulator or {})
        if "pca" not in self.emulator_options:
            self.emulator_options["pca"] = 0.999 if self.rule.m > 50 else None
        if sampler not in ("auto", "lhs", "cloud", "slice"):
            raise ValueError(f"sampler must be 'auto', 'lhs', 'cloud' or 'slice', got {sampler!r}")
        self.sampler, self.stop_fraction_change, self.progress = sampler, float(stop_fraction_change), progress
        self.n_mc = int(n_mc)
        self.output_labels = _labels(forward, m)
        self.records: list[dict] = []
        # the seeded uniform sample for the NROY fraction (feasible part of the cube)
        U = np.random.default_rng([self.seed, 0]).random((self.n_mc, self.d))
        self._mc_u = U[self._feasible_u(U)]
        self._mc_score = np.zeros(len(self._mc_u))
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self._open()

    # -------------------------------------------------------------- config and files
    def _config(self) -> dict:
        return {
            "version": _VERSION,
            "space": json.loads(self.space.to_json()),
            "names": self.names,
            "observations": [None if not np.isfinite(v) else float(v) for v in self.z],
            "obs_std": self.obs_std.tolist(), "discrepancy_std": self.discrepancy_std.tolist(),
            "cutoff": self.cutoff, "nth": self.nth, "seed": self.seed, "n_mc": self.n_mc,
            "emulator": {k: v for k, v in self.emulator_options.items()}, "sampler": self.sampler,
        }

    def _open(self):
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_file = self.path / "history_matching.json"
        mine = self._config()
        if cfg_file.exists():
            saved = json.loads(cfg_file.read_text())
            old = ParameterSpace.from_json(json.dumps(saved["space"]))
            if old.names != self.space.names or not np.array_equal(old.bounds, self.space.bounds) \
                    or list(old.is_log) != list(self.space.is_log) or old.constraints != self.space.constraints:
                raise ValueError(
                    f"space mismatch: the waves in {self.path} were run over {old.names} with bounds "
                    f"{old.bounds.tolist()} (log: {list(map(bool, old.is_log))}); this space has {self.space.names} "
                    f"with bounds {self.space.bounds.tolist()} (log: {list(map(bool, self.space.is_log))}). "
                    "Use the saved space or a new path.")
            for key in ("observations", "obs_std", "discrepancy_std", "cutoff", "nth", "seed", "n_mc", "emulator", "sampler"):
                if saved.get(key) != mine[key]:
                    raise ValueError(f"{key} differ(s) from the one saved in {cfg_file} ({saved.get(key)!r:.200} "
                                     f"vs {mine[key]!r:.200}): resuming needs the same settings; use a new path")
        else:
            tmp = cfg_file.with_name(cfg_file.name + ".tmp")
            tmp.write_text(json.dumps(mine, indent=1))
            os.replace(tmp, cfg_file)
        k = 1
        while (self.path / f"wave_{k:02d}" / "wave.nc").exists():
            self._load_wave(k)
            k += 1
        if self.records:
            log.info("reopened %d wave(s) from %s", len(self.records), self.path)

    def _wave_dir(self, k: int) -> Path:
        return self.path / f"wave_{k:02d}"

    def _load_wave(self, k: int):
        from .gp import GPEmulator

        with xr.open_dataset(self._wave_dir(k) / "wave.nc") as ds:
            ds = ds.load()
        gp = GPEmulator.load(self._wave_dir(k) / "gp.pt")
        rec = {
            "wave": k, "x": ds["design"].values, "y": ds["outputs"].values, "ok": ds["run_ok"].values.astype(bool),
            "gp": gp, "method": str(ds.attrs["sampler"]), "acceptance": float(ds["acceptance"]),
            "n_train": int(ds["n_train"]), "run_time": float(ds["run_time"]), "gp_fit_time": float(ds["gp_fit_time"]),
        }
        self._finish(rec)

    # ---------------------------------------------------------------- unit cube
    def _feasible_u(self, U: np.ndarray) -> np.ndarray:
        x = np.asarray(self.space.from_unit(U), dtype=float)
        ok = self.space.feasible(x)
        f = getattr(self.forward, "feasible", None)
        if f is not None and ok.any():
            ok[ok] = to_numpy(f(x[ok]), dtype=bool, name="forward.feasible")
        return ok

    def _to_u(self, x) -> np.ndarray:
        x = np.atleast_2d(to_numpy(x, name="x"))
        if x.shape[-1] != self.d:
            raise ValueError(f"x must have {self.d} columns ({self.names}), got shape {x.shape}")
        return np.asarray(self.space.to_unit(x), dtype=float)

    def _wave_I(self, rec: dict, U: np.ndarray) -> np.ndarray:
        """``I (n, m_obs)`` of one wave's emulator at ``U``."""
        mean, var = rec["gp"].predict(U)
        return self.rule.matrix(mean, var)

    def _score(self, U: np.ndarray, waves=None) -> np.ndarray:
        """``max_k summary_k(U)`` over ``waves`` (default all): NROY is ``<= cutoff``."""
        s = np.zeros(len(U))
        for rec in (self.records if waves is None else waves):
            s = np.maximum(s, self.rule.summary(self._wave_I(rec, U)))
        return s

    # ------------------------------------------------------------------ public
    @property
    def n_waves(self) -> int:
        return len(self.records)

    def implausibility(self, x, wave: int | None = None, summary: str = "nth"):
        """Implausibility of physical ``x (n, d)`` under the waves so far (or one ``wave``, 1-based).

        ``summary``: ``"nth"`` (default) the configured summary (``nth``-largest output;
        the maximum for ``nth=1``), maximised over the waves: ``x`` is NROY when it is
        ``<= cutoff``; ``"max"`` the largest output, maximised over waves; ``"matrix"`` a
        DataArray ``(wave, sample, output)`` of ``I`` (NaN for unobserved outputs).
        """
        if not self.records:
            raise ValueError("no wave has been run yet: call run_wave(n_runs) first")
        if wave is not None and not 1 <= int(wave) <= self.n_waves:
            raise ValueError(f"wave must be in 1..{self.n_waves}, got {wave}")
        recs = self.records if wave is None else [self.records[int(wave) - 1]]
        U = self._to_u(x)
        if summary == "nth":
            return self._score(U, recs)
        mats = [self._wave_I(r, U) for r in recs]
        if summary == "max":
            return np.max([np.max(I, axis=1) for I in mats], axis=0)
        if summary == "matrix":
            full = np.full((len(recs), len(U), self.m), np.nan)
            full[:, :, self.observed] = np.stack(mats)
            return xr.DataArray(full, dims=("wave", "sample", "output"),
                                coords={"wave": [r["wave"] for r in recs], "output": np.arange(self.m),
                                        "output_label": ("output", self.output_labels)},
                                name="implausibility",
                                attrs={"long_name": "implausibility |E[f(x)] - z| / sqrt(Var_em + var_obs + var_mod)",
                                       "units": "1"})
        raise ValueError(f"summary must be 'nth', 'max' or 'matrix', got {summary!r}")

    def is_nroy(self, x) -> np.ndarray:
        """``(n,)`` bool: physical ``x`` passes every wave so far (everything is NROY before wave 1)."""
        U = self._to_u(x)
        ok = self._feasible_u(U)
        if self.records:
            ok &= self._score(U) <= self.cutoff
        return ok

    @property
    def nroy_fraction(self) -> float:
        """Fraction of the (feasible) space that is NROY, from the seeded uniform sample of ``n_mc`` points."""
        return float(np.mean(self._mc_score <= self.cutoff)) if self.records else 1.0

    @property
    def nroy_fraction_se(self) -> float:
        """Monte-Carlo standard error of :attr:`nroy_fraction`: ``sqrt(p (1 - p) / N)``."""
        p = self.nroy_fraction
        return float(np.sqrt(p * (1 - p) / max(len(self._mc_u), 1)))

    def sample_nroy(self, n: int, seed=None, method: str | None = None) -> xr.DataArray:
        """``n`` space-filling NROY points ``(sample, parameter)`` in physical units (seeded:
        default ``(seed, n_waves + 1)``, the draw the next wave would make)."""
        rng = np.random.default_rng([self.seed, self.n_waves + 1] if seed is None else seed)
        des = self._sample_u(int(n), rng, method or self.sampler)
        return self._physical(des.u, {"sampler": des.method, "acceptance": des.acceptance})

    def _physical(self, U, attrs=None) -> xr.DataArray:
        x = np.asarray(self.space.from_unit(U), dtype=float)
        return xr.DataArray(x, dims=("sample", "parameter"),
                            coords={"parameter": self.names, "unit": ("parameter", [self.space.units[n] for n in self.names])},
                            name="x", attrs={"long_name": "parameter values (physical units)", **(attrs or {})})

    def _sample_u(self, n: int, rng, method: str):
        if not self.records:
            from .nroy import NROYDesign

            U = maximin_lhs(n, self.d, rng, feasible=self._feasible_u)
            return NROYDesign(u=U, score=np.zeros(n), method="maximin-lhs", acceptance=1.0, n_evaluated=0, cutoff=self.cutoff)
        known = [self._mc_u[self._mc_score <= self.cutoff]]
        prev = [self._to_u(r["x"]) for r in self.records]
        known += prev
        known = np.concatenate(known)
        return sample_nroy(n, self.d, self._score, self.cutoff, rng, feasible=self._feasible_u, known=known,
                           method=method, existing=np.concatenate(prev))

    # ------------------------------------------------------------------ a wave
    def run_wave(self, n_runs: int) -> xr.Dataset:
        """Design, run, emulate and summarise one wave; returns its record (a Dataset).

        With a ``path``, an unfinished wave found there is resumed (its saved design is
        used even if ``n_runs`` differs; finished chunks are not re-run).
        """
        if int(n_runs) != n_runs or n_runs < 1:
            raise ValueError(f"n_runs must be a positive integer, got {n_runs}")
        k = self.n_waves + 1
        t0 = time.perf_counter()
        wdir = None if self.path is None else self._wave_dir(k)
        if wdir is not None and (wdir / "design.nc").exists():
            with xr.open_dataset(wdir / "design.nc") as ds:
                x = ds["design"].values
                method, acceptance = str(ds.attrs["sampler"]), float(ds.attrs["acceptance"])
            if len(x) != n_runs:
                log.warning("wave %d: resuming the saved design of %d runs (n_runs=%d ignored)", k, len(x), n_runs)
            log.info("wave %d: resuming from %s", k, wdir)
        else:
            des = self._sample_u(int(n_runs), np.random.default_rng([self.seed, k]), self.sampler)
            x = np.asarray(self.space.from_unit(des.u), dtype=float)
            method, acceptance = des.method, float(des.acceptance)
            if wdir is not None:
                wdir.mkdir(parents=True, exist_ok=True)
                dsd = xr.Dataset({"design": (("sample", "parameter"), x, {"long_name": "design (physical units)"})},
                                 coords={"parameter": self.names},
                                 attrs={"sampler": method, "acceptance": acceptance, "wave": k})
                _write_atomic(dsd, wdir / "design.nc")
        y = self._run(x, k, wdir)
        ok = np.all(np.isfinite(y[:, self.observed]), axis=1)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            log.warning("wave %d: %d of %d simulator runs failed (non-finite outputs) and are dropped: samples %s",
                        k, bad.size, len(ok), bad[:20].tolist())
        run_time = time.perf_counter() - t0
        rec = {"wave": k, "x": x, "y": y, "ok": ok, "method": method, "acceptance": acceptance, "run_time": run_time}
        self._fit(rec, wdir)
        self._finish(rec)
        if wdir is not None:
            _write_atomic(self._wave_dataset(rec), wdir / "wave.nc")
            _write_atomic(self.waves, self.path / "waves.nc")
        log.info("wave %d: %d runs (%d failed), NROY fraction %.4g +- %.2g", k, len(ok), int((~ok).sum()),
                 self.nroy_fraction, self.nroy_fraction_se)
        return self._wave_dataset(rec)

    def run(self, n_waves: int, n_runs: int, stop: bool = True) -> xr.Dataset:
        """Run waves until ``n_waves`` exist (or a stop rule fires when ``stop``); returns :attr:`waves`."""
        while self.n_waves < n_waves:
            if stop and self.should_stop():
                log.info("stopping: %s", self.stop_reason)
                break
            self.run_wave(n_runs)
        return self.waves

    def _run(self, x: np.ndarray, k: int, wdir: Path | None) -> np.ndarray:
        """Simulator outputs ``(n, m)``, chunk by chunk, each chunk saved as it finishes."""
        from tqdm.auto import tqdm

        n = len(x)
        bs = int(self.batch_size or max(1, -(-n // 4)))
        chunks = [(i, a, min(a + bs, n)) for i, a in enumerate(range(0, n, bs))]
        y = np.full((n, self.m), np.nan)
        todo = []
        for i, a, b in chunks:
            f = None if wdir is None else wdir / f"runs_{i:04d}.nc"
            if f is not None and f.exists():
                with xr.open_dataset(f) as ds:
                    y[a:b] = ds["outputs"].values
            else:
                todo.append((i, a, b))
        bar = tqdm(total=n, initial=n - sum(b - a for _, a, b in todo), desc=f"wave {k} runs", unit="run",
                   disable=not self.progress)

        def save(i, a, b, out):
            out = to_numpy(out, name="forward output")
            if out.ndim == 1 and self.m == 1:
                out = out[:, None]
            if out.shape != (b - a, self.m):
                raise ValueError(f"forward returned shape {out.shape} for {b - a} runs; expected ({b - a}, {self.m}) "
                                 "to match the observations")
            y[a:b] = out
            if wdir is not None:
                ds = xr.Dataset({"outputs": (("sample", "output"), out, {"long_name": "simulator outputs"})},
                                coords={"sample": np.arange(a, b)}, attrs={"chunk": i})
                _write_atomic(ds, wdir / f"runs_{i:04d}.nc")
            bar.update(b - a)

        try:
            if self.client is None:
                for i, a, b in todo:
                    save(i, a, b, self.forward(x[a:b]))
            elif todo:
                from dask.distributed import as_completed

                futs = {self.client.submit(self.forward, x[a:b], pure=False): (i, a, b) for i, a, b in todo}
                for fut in as_completed(list(futs)):
                    save(*futs[fut], fut.result())
        finally:
            bar.close()
        return y

    def _fit(self, rec: dict, wdir: Path | None):
        """Fit (or, resuming, reload) the wave's GP on its runs plus earlier runs in the NROY space before it."""
        from .gp import GPEmulator

        k = rec["wave"]
        U = self._to_u(rec["x"])[rec["ok"]]
        Y = rec["y"][rec["ok"]][:, self.observed]
        for prev in self.records:
            Up = self._to_u(prev["x"])[prev["ok"]]
            inside = self._score(Up) <= self.cutoff
            U = np.concatenate([U, Up[inside]])
            Y = np.concatenate([Y, prev["y"][prev["ok"]][inside][:, self.observed]])
        rec["n_train"] = len(U)
        gp_file = None if wdir is None else wdir / "gp.pt"
        if gp_file is not None and gp_file.exists():
            rec["gp"] = GPEmulator.load(gp_file)
            rec["gp_fit_time"] = float(rec["gp"].fit_time_s)
            return
        names = [lab for lab, o in zip(self.output_labels, self.observed) if o]
        gp = GPEmulator.fit(U, Y, output_names=names, input_names=self.names, seed=self.seed * 1000 + k,
                            **self.emulator_options)
        rec["gp_fit_time"] = float(gp.fit_time_s)
        if gp_file is not None:
            tmp = gp_file.with_name("gp.pt.tmp")
            gp.save(tmp)
            os.replace(tmp, gp_file)
            gp = GPEmulator.load(gp_file)  # the same object an interrupted run would read back
        rec["gp"] = gp

    def _finish(self, rec: dict):
        """Add a wave: update the uniform-sample scores and the NROY summaries."""
        if self.records:
            prev_frac = self.nroy_fraction
        else:
            prev_frac = 1.0
        I = self._wave_I(rec, self._mc_u) if len(self._mc_u) else np.zeros((0, self.rule.m))
        self._mc_score = np.maximum(self._mc_score, self.rule.summary(I) if len(I) else self._mc_score)
        self.records.append(rec)
        inside = self._mc_score <= self.cutoff
        rec["nroy_fraction"], rec["nroy_fraction_se"] = self.nroy_fraction, self.nroy_fraction_se
        rec["previous_fraction"] = prev_frac
        ratio = np.full(self.m, np.nan)
        mean_var = np.full(self.m, np.nan)
        if inside.any():
            _, var = rec["gp"].predict(self._mc_u[inside])
            ratio[self.observed] = (var / self.obs_std[self.observed] ** 2).max(axis=0)
            mean_var[self.observed] = var.mean(axis=0)
        rec["var_ratio"], rec["var_mean"] = ratio, mean_var
        # implausibility of the simulator runs themselves (no emulator): |y - z| / sqrt(var_obs + var_mod)
        sd = np.sqrt(self.obs_std**2 + self.discrepancy_std**2)
        Isim = (np.abs(rec["y"] - self.z) / sd)[:, self.observed]
        Isim = np.where(np.isfinite(Isim), Isim, np.inf)
        rec["run_implausibility"] = np.where(rec["ok"], self.rule.summary(Isim), np.nan)

    # ------------------------------------------------------------ stop rules
    @property
    def stop_reason(self) -> str:
        """Why the waves should stop ('' when they should go on).

        - the NROY fraction is 0 on the uniform sample (NROY empty or below 1/n_mc);
        - the emulator variance is below the observation variance for every observed output
          at every NROY point of the uniform sample (more waves cannot sharpen the emulator);
        - the NROY fraction shrank by less than ``stop_fraction_change`` (relative) in the last wave.
        """
        if not self.records:
            return ""
        rec = self.records[-1]
        if rec["nroy_fraction"] == 0:
            return (f"no NROY point among the {len(self._mc_u)} uniform samples after wave {rec['wave']} "
                    f"(NROY fraction < {1 / max(len(self._mc_u), 1):.2g})")
        r = np.nanmax(rec["var_ratio"]) if np.isfinite(rec["var_ratio"]).any() else np.inf
        if r < 1:
            return (f"emulator variance below the observation variance everywhere in NROY after wave {rec['wave']} "
                    f"(max Var_em / var_obs = {r:.3g})")
        if self.n_waves >= 2:
            p0, p1 = rec["previous_fraction"], rec["nroy_fraction"]
            if p0 > 0 and (p0 - p1) / p0 < self.stop_fraction_change:
                return (f"NROY fraction barely changed in wave {rec['wave']}: {p0:.4g} -> {p1:.4g} "
                        f"(relative change {(p0 - p1) / p0:.3g} < {self.stop_fraction_change:g})")
        return ""

    def should_stop(self) -> bool:
        """True when a stop rule fires; :attr:`stop_reason` says which."""
        return bool(self.stop_reason)

    # ------------------------------------------------------------- xarray
    def _wave_dataset(self, rec: dict) -> xr.Dataset:
        S, SP, SO = ("sample",), ("sample", "parameter"), ("sample", "output")
        k = rec["wave"]
        ds = xr.Dataset(
            {
                "design": (SP, rec["x"], {"long_name": "design: parameter values of the runs (physical units)"}),
                "outputs": (SO, rec["y"], {"long_name": "simulator outputs (NaN: failed run)", "units": "output units"}),
                "run_ok": (S, rec["ok"].astype(np.int8), {"long_name": "run succeeded (finite outputs)", "units": "1"}),
                "run_implausibility": (S, rec["run_implausibility"],
                                       {"long_name": "nth-largest over observed outputs of |f(x) - z| / sqrt(var_obs + var_mod) "
                                                     "at the runs (simulator, no emulator)", "units": "1"}),
                "n_runs": ((), len(rec["ok"]), {"long_name": "simulator runs"}),
                "n_failed": ((), int((~rec["ok"]).sum()), {"long_name": "failed simulator runs (dropped)"}),
                "n_train": ((), rec["n_train"], {"long_name": "GP training runs (this wave + earlier runs in NROY)"}),
                "nroy_fraction": ((), rec["nroy_fraction"],
                                  {"long_name": "NROY fraction of the feasible space after this wave", "units": "1"}),
                "nroy_fraction_se": ((), rec["nroy_fraction_se"],
                                     {"long_name": "Monte-Carlo standard error of nroy_fraction", "units": "1"}),
                "emulator_var_ratio": (("output",), rec["var_ratio"],
                                       {"long_name": "max over NROY of Var_em / var_obs (this wave's emulator)", "units": "1"}),
                "emulator_var_mean": (("output",), rec["var_mean"],
                                      {"long_name": "mean over NROY of Var_em (this wave's emulator)",
                                       "units": "output units squared"}),
                "cutoff": ((), self.cutoff, {"long_name": "implausibility cutoff", "units": "1"}),
                "acceptance": ((), rec["acceptance"], {"long_name": "LHS pilot acceptance of the design sampler", "units": "1"}),
                "run_time": ((), rec["run_time"], {"long_name": "design + simulator wall time", "units": "s"}),
                "gp_fit_time": ((), rec["gp_fit_time"], {"long_name": "GP fit wall time", "units": "s"}),
            },
            coords={"sample": np.arange(len(rec["ok"])), "parameter": self.names,
                    "unit": ("parameter", [self.space.units[n] for n in self.names]),
                    "output": np.arange(self.m), "output_label": ("output", self.output_labels)},
            attrs={"wave": k, "sampler": rec["method"], "nth": self.nth},
        )
        return ds

    @property
    def waves(self) -> xr.Dataset:
        """All waves: ``(wave, sample, parameter, output)`` Dataset (samples padded with NaN / -1)."""
        if not self.records:
            raise ValueError("no wave has been run yet")
        parts = []
        for rec in self.records:
            ds = self._wave_dataset(rec)
            ds.attrs = {}
            ds = ds.assign(sampler=((), rec["method"]))
            parts.append(ds.expand_dims(wave=[rec["wave"]]))
        ds = xr.concat(parts, dim="wave", join="outer", fill_value={"run_ok": -1}, coords="minimal",
                       data_vars="all")
        ds["run_ok"] = ds["run_ok"].fillna(-1).astype(np.int8)
        ds["run_ok"].attrs.update(long_name="1 run succeeded, 0 failed (dropped), -1 no run (padding)", units="1")
        for name, value, long in (("observations", self.z, "observations z"),
                                  ("obs_std", self.obs_std, "observation error std"),
                                  ("discrepancy_std", self.discrepancy_std, "model discrepancy std")):
            ds[name] = (("output",), value, {"long_name": long, "units": "output units"})
        ds.attrs = {
            "title": "history matching waves",
            "implausibility": "I = |E[f(x)] - z| / sqrt(Var_em(x) + obs_std^2 + discrepancy_std^2); NROY: the "
                              f"{self.nth}-th largest output <= cutoff in every wave",
            "nth": self.nth, "cutoff": self.cutoff, "seed": self.seed, "n_mc": len(self._mc_u),
            "space": self.space.to_json(), "stop_reason": self.stop_reason,
        }
        return ds

    def plot_pairs(self, path=None, truth=None, bins: int = 20):
        """NROY pairs plot (optical depth / minimum implausibility); see :func:`.plots.nroy_pairs`."""
        from .plots import nroy_pairs

        return nroy_pairs(self, path, truth=truth, bins=bins)

    def plot_waves(self, path=None, truth=None):
        """NROY fraction and implausibility by wave; see :func:`.plots.waves_plot`."""
        from .plots import waves_plot

        return waves_plot(self, path, truth=truth)

    def __repr__(self):
        return (f"HistoryMatching(d={self.d} {self.names}, m={self.m} ({self.rule.m} observed), cutoff={self.cutoff:g}, "
                f"nth={self.nth}, {self.n_waves} wave(s), NROY fraction {self.nroy_fraction:.4g}, path={self.path})")
