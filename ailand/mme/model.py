"""The deep-learning ensemble: a UNet / HalfUNet that turns member forecasts into an analysis.

:class:`DLEnsemble` wraps :class:`~ailand.mme.networks.EnsembleNet` with what it needs to be
used: normalisation and the weighted-ensemble baseline learnt on the training period,
training with a train / validation / test split by time, early stopping, seeded and
checkpointed (resumable) runs, member dropout, prediction on labelled data, save / load,
ONNX export.

One sample is one (valid time, lead day): inputs are the member fields of every variable
``(V, M, H, W)``, the predictors at that valid time and lead ``(P, H, W)``, the calendar
(hour of day, day of year, weekend, lead day); the target is the analysis ``(V, H, W)``.
A single-variable model is ``DLEnsemble(variables=["O3"])``; the default is one model for
all variables and all lead days.

Training loss: mean squared error of the standardised forecast (per variable, by the
training analysis' standard deviation) over all points where the analysis is not NaN.

Member dropout (operational robustness): during training each sample, with probability
``member_dropout``, loses 1 to ``max_dropped`` members at random (all their variables: a
late model), so the network learns to work with what is present. At prediction a missing
member is an all-NaN field (or a member absent from the data): the network sees its mask
and the median in its place. See ``tests/test_mme.py`` for the measured loss of skill.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from .baselines import WeightedEnsemble
from .dataset import MMEData, TimeSplit, split_by_time
from .features import _Batcher, calendar_features  # noqa: F401 (calendar_features: re-exported)
from .networks import ARCHITECTURES, EnsembleNet
from .progress import as_progress

__all__ = ["DLEnsemble", "calendar_features", "default_device"]

FORMAT_VERSION = 1


def default_device() -> str:
    """``"cuda"`` when a GPU is visible to torch, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class DLEnsemble:
    """Deep-learning multi-model ensemble (UNet or HalfUNet).

    Parameters
    ----------
    variables : the variables to predict (default: all of the training data's); each is
        predicted from the members of ALL of these variables.
    arch : ``"halfunet"`` (default, lighter) or ``"unet"``.
    width, depth : channels and down-sampling steps of the network.
    base : what the network corrects: ``"weighted"`` (the weighted ensemble, default),
        ``"median"`` or ``"none"`` (see :class:`~ailand.mme.networks.EnsembleNet`).
    weighting : the weighted ensemble's method (:class:`~ailand.mme.WeightedEnsemble`).
    predictors : ``True`` (all of the data's), ``False`` / ``[]`` (none) or a list of names.
    member_dropout, max_dropped : probability that a training sample loses members, and at
        most how many.
    """

    def __init__(self, variables=None, arch: str = "halfunet", width: int = 32, depth: int = 3, base: str = "weighted",
                 weighting: str = "nnls", predictors=True, member_dropout: float = 0.5, max_dropped: int = 2):
        if not 0.0 <= member_dropout <= 1.0:
            raise ValueError(f"member_dropout must be in [0, 1], got {member_dropout}")
        self.config = {"variables": None if variables is None else [str(v) for v in variables], "arch": arch,
                       "width": int(width), "depth": int(depth), "base": base, "weighting": weighting,
                       "predictors": predictors if isinstance(predictors, bool) else [str(p) for p in predictors],
                       "member_dropout": float(member_dropout), "max_dropped": int(max_dropped)}
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {list(ARCHITECTURES)}, not {arch!r}")
        if base not in ("weighted", "median", "none"):
            raise ValueError(f"base must be 'weighted', 'median' or 'none', not {base!r}")
        WeightedEnsemble(weighting)  # validates the method
        self.net: EnsembleNet | None = None
        self.meta: dict = {}

    # ------------------------------------------------------------------ labels
    @property
    def variables(self) -> list[str]:
        return list(self.meta["variables"])

    @property
    def members(self) -> list[str]:
        return list(self.meta["members"])

    @property
    def lead_times(self) -> list[int]:
        return list(self.meta["lead_times"])

    @property
    def predictors(self) -> list[str]:
        return list(self.meta["predictors"])

    @property
    def n_parameters(self) -> int:
        """Trainable parameters of the network."""
        return sum(p.numel() for p in self.net.parameters()) if self.net is not None else 0

    def __repr__(self):
        c = self.config
        if self.net is None:
            return f"DLEnsemble({c['arch']}, width {c['width']}, depth {c['depth']}, base {c['base']}, untrained)"
        return (f"DLEnsemble({c['arch']}, width {c['width']}, depth {c['depth']}, base {c['base']}: "
                f"{self.variables} from {len(self.members)} members, lead days {self.lead_times}, "
                f"{len(self.predictors)} predictors, {self.n_parameters:,} parameters)")

    # ------------------------------------------------------------------ setup
    def _setup(self, data: MMEData, split: TimeSplit, seed: int) -> None:
        c = self.config
        variables = c["variables"] or data.variables
        bad = [v for v in variables if v not in data.variables]
        if bad:
            raise ValueError(f"variables {bad} are not in the data ({data.variables})")
        if c["predictors"] is True:
            preds = list(data.predictors)
        elif c["predictors"] is False:
            preds = []
        else:
            preds = list(c["predictors"])
            missing = [p for p in preds if p not in data.predictors]
            if missing:
                raise ValueError(f"predictors {missing} are not in the data ({data.predictors})")
        tr = split.train
        mean, std = [], []
        nonneg = True
        for v in variables:
            y = data.analysis_array(v)[tr]
            mean.append(float(np.nanmean(y)))
            std.append(float(max(np.nanstd(y), 1e-6 * abs(np.nanmean(y)), 1e-12)))
            nonneg &= bool(np.nanmin(y) >= 0)
        pm, ps = [], []
        for p in preds:
            a = data.predictor_array(p)[:, tr]
            pm.append(float(a.mean()))
            ps.append(float(max(a.std(), 1e-12)))
        we = WeightedEnsemble(c["weighting"]).fit(data, times=tr, variables=variables)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's torch RNG is left as it was
            torch.manual_seed(int(seed))
            net = EnsembleNet(len(variables), len(data.members), len(data.lead_times), len(preds),
                              (data.shape["lat"], data.shape["lon"]), arch=c["arch"], width=c["width"], depth=c["depth"],
                              base=c["base"], nonnegative=nonneg)
        with torch.no_grad():
            net.mean.copy_(torch.tensor(mean))
            net.std.copy_(torch.tensor(std))
            net.pred_mean.copy_(torch.tensor(pm))
            net.pred_std.copy_(torch.tensor(ps))
            net.weights.copy_(torch.tensor(we.weights_.transpose("variable", "lead_time", "member").values))
        self.net = net
        self.meta = {
            "variables": list(variables), "members": list(data.members), "lead_times": [int(x) for x in data.lead_times],
            "predictors": preds, "units": {v: data.units[v] for v in variables},
            "predictor_units": {p: data.ds[p].attrs.get("units", "") for p in preds},
            "lat": data.lat.tolist(), "lon": data.lon.tolist(), "nonnegative": nonneg,
            "split": {**split.to_dict(data.time), "description": split.description},
            "source": {k: str(v) for k, v in data.ds.attrs.items() if k in ("title", "source", "synthetic", "seed")},
        }

    # ------------------------------------------------------------------ training
    def fit(self, data: MMEData, split: TimeSplit | None = None, epochs: int = 30, batch_size: int = 16,
            lr: float = 2e-3, weight_decay: float = 0.0, patience: int = 6, samples_per_epoch: int | None = None,
            seed: int = 0, device: str | None = None, checkpoint_dir=None, resume: bool = True,
            time_limit: float | None = None, progress=False) -> xr.Dataset:
        """Train on ``split.train`` (default :func:`~ailand.mme.split_by_time`), stop early on
        ``split.val``; the best validation state is kept.

        Seeded: the weights' initialisation, the sample order and the member dropout of each
        epoch follow from ``(seed, epoch)``, so a run resumed from a checkpoint ends with the
        same weights as an uninterrupted one. ``checkpoint_dir``: ``last.pt`` written after
        every epoch; with ``resume`` an existing one from the same configuration is continued
        (one from another configuration is an error). ``samples_per_epoch`` caps the samples
        per epoch (a random subset each epoch); ``time_limit`` [s] stops after the epoch that
        passes it. Returns the history ``(epoch)``: ``train_loss``, ``val_loss``
        (standardised MSE), ``val_rmse`` ``(epoch, variable)`` [units], ``lr``, ``elapsed`` [s];
        attrs ``base_val_loss``: the validation loss of the untrained network, i.e. of the
        baseline it corrects (the weighted ensemble by default).
        """
        if not isinstance(data, MMEData):
            raise ValueError(f"data must be an MMEData (ailand.mme.open_mme or MMEData(ds)), got {type(data).__name__}")
        split = split if split is not None else split_by_time(data.time)
        prog = as_progress(progress)
        device = torch.device(device or default_device())
        self._setup(data, split, seed)
        net = self.net.to(device)
        L = len(self.lead_times)
        batcher = _Batcher(data, self.variables, self.members, np.arange(L), self.predictors)
        train = self._samples(data, split.train)
        val = self._samples(data, split.val)
        if len(train) == 0 or len(val) == 0:
            raise ValueError("no training or validation samples with members and analysis present")
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, patience // 3))
        fingerprint = self._fingerprint(data, split, dict(batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                                            samples_per_epoch=samples_per_epoch, seed=seed))
        hist = {"epoch": [], "train_loss": [], "val_loss": [], "val_rmse": [], "lr": [], "elapsed": []}
        start, best, bad, best_state, elapsed0 = 0, np.inf, 0, None, 0.0
        ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
        if ckpt is not None and ckpt.exists() and resume:
            blob = torch.load(ckpt, map_location=device, weights_only=True)
            h = json.loads(blob["header"])
            if h["fingerprint"] != fingerprint:
                raise ValueError(f"{ckpt} is from another configuration or data; pass resume=False "
                                 "(--restart) to start afresh, or another checkpoint_dir")
            net.load_state_dict(blob["net"])
            opt.load_state_dict(blob["opt"])
            sched.load_state_dict(h["sched"])
            best_state = blob["best"]
            start, best, bad, hist, elapsed0 = h["epoch"] + 1, h["best"], h["bad"], h["history"], h["elapsed"]
            prog.say(f"resumed from {ckpt} after epoch {h['epoch'] + 1}")
        if "base_val_loss" not in hist:  # the untrained network is the baseline: its skill is the bar to pass
            hist["base_val_loss"] = self._evaluate(net, batcher, val, device, batch_size=max(batch_size, 32))[0]
        t0 = time.perf_counter() - elapsed0
        stopped = "epochs"
        if start > 0 and (bad >= patience or start >= epochs):
            stopped = "early stopping" if bad >= patience else "epochs"
            start = epochs  # nothing left to do
        n_per = len(train) if samples_per_epoch is None else min(int(samples_per_epoch), len(train))
        bar = prog.bar(epochs - start, f"train {self.config['arch']}", unit="epoch")
        for epoch in range(start, epochs):
            rng = np.random.default_rng([int(seed), epoch])
            order = rng.permutation(len(train))[:n_per]
            net.train()
            tot, cnt = 0.0, 0
            for k in range(0, n_per, batch_size):
                tb, lb = train[order[k:k + batch_size], 0], train[order[k:k + batch_size], 1]
                if len(tb) < 2:  # BatchNorm needs two samples
                    continue
                members = self._dropout(batcher.members(tb, lb), rng)
                loss = self._loss(net, batcher, tb, lb, members, device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += loss.detach().item() * len(tb)
                cnt += len(tb)
            vloss, vrmse = self._evaluate(net, batcher, val, device, batch_size=max(batch_size, 32))
            sched.step(vloss)
            if vloss < best - 1e-7:
                best, bad = vloss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
            el = time.perf_counter() - t0
            for key, val_ in (("epoch", epoch + 1), ("train_loss", tot / max(cnt, 1)), ("val_loss", vloss),
                              ("val_rmse", vrmse), ("lr", opt.param_groups[0]["lr"]), ("elapsed", el)):
                hist[key].append(val_)
            if ckpt is not None:
                self._checkpoint(ckpt, net, opt, sched, best_state, dict(
                    fingerprint=fingerprint, epoch=epoch, best=best, bad=bad, history=hist, elapsed=el))
            bar.update(1)
            bar.set_postfix(train=f"{tot / max(cnt, 1):.3f}", val=f"{vloss:.3f}", refresh=False)
            if bad >= patience:
                stopped = "early stopping"
                break
            if time_limit is not None and el > time_limit:
                stopped = "time limit"
                break
        bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.meta["training"] = {
            "epochs_run": len(hist["epoch"]), "stopped": stopped, "best_val_loss": float(best),
            "seconds": float(hist["elapsed"][-1]) if hist["elapsed"] else 0.0, "device": str(device),
            "batch_size": batch_size, "lr": lr, "seed": int(seed), "samples_train": int(len(train)),
            "samples_val": int(len(val)), "samples_per_epoch": int(n_per), "torch": torch.__version__,
            "base_val_loss": float(hist["base_val_loss"]),
        }
        self.meta["history"] = hist
        prog.say(f"trained {self.config['arch']}: {len(hist['epoch'])} epochs ({stopped}), best val loss {best:.4f}")
        return self.history()

    def history(self) -> xr.Dataset:
        """The training history as a Dataset ``(epoch)`` (``val_rmse`` ``(epoch, variable)``)."""
        h = self.meta.get("history")
        if not h:
            raise ValueError("no training history: fit the model first")
        return xr.Dataset(
            {"train_loss": ("epoch", h["train_loss"], {"long_name": "training loss (standardised MSE)", "units": "1"}),
             "val_loss": ("epoch", h["val_loss"], {"long_name": "validation loss (standardised MSE)", "units": "1"}),
             "val_rmse": (("epoch", "variable"), np.asarray(h["val_rmse"]).reshape(-1, len(self.variables)),
                          {"long_name": "validation RMSE"}),
             "lr": ("epoch", h["lr"], {"long_name": "learning rate"}),
             "elapsed": ("epoch", h["elapsed"], {"long_name": "wall time since the start of training", "units": "s"})},
            coords={"epoch": h["epoch"], "variable": self.variables},
            attrs={"units_val_rmse": json.dumps(self.meta["units"]), "base_val_loss": float(h["base_val_loss"]),
                   "base": self.config["base"]})

    def _samples(self, data: MMEData, t_idx) -> np.ndarray:
        """``(n, 2)`` (time index, lead index) pairs with a member present and some analysis."""
        av = data.available()  # (M, L, T)
        ana_ok = np.ones(data.shape["time"], bool)
        for v in self.variables:
            ana_ok &= ~np.isnan(data.analysis_array(v)).all(axis=(1, 2))
        t_idx = np.asarray(t_idx)
        pairs = [(t, li) for t in t_idx for li in range(data.shape["lead_time"]) if ana_ok[t] and av[:, li, t].any()]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def _dropout(self, members: np.ndarray, rng) -> np.ndarray:
        p, kmax = self.config["member_dropout"], self.config["max_dropped"]
        if p <= 0 or kmax <= 0:
            return members
        B = members.shape[0]
        for b in range(B):
            if rng.random() < p:
                present = np.flatnonzero(~np.isnan(members[b, :, :, 0, 0]).any(0))
                k = min(int(rng.integers(1, kmax + 1)), len(present) - 1)
                if k > 0:
                    members[b, :, rng.choice(present, size=k, replace=False)] = np.nan
        return members

    def _forward(self, net, batcher, t, li, members, device):
        m = torch.from_numpy(members).to(device)
        cal = torch.from_numpy(batcher.calendar(t, li, len(self.lead_times))).to(device)
        p = batcher.predictors(t, li)
        return net(m, cal, None if p is None else torch.from_numpy(p).to(device))

    def _loss(self, net, batcher, t, li, members, device):
        out = self._forward(net, batcher, t, li, members, device)
        y = torch.from_numpy(batcher.target(t)).to(device)
        ok = ~torch.isnan(y)
        err = torch.where(ok, (out - torch.nan_to_num(y)) / net.std.view(1, -1, 1, 1), torch.zeros_like(out))
        return (err**2).sum() / ok.sum().clamp(min=1)

    @torch.no_grad()
    def _evaluate(self, net, batcher, samples, device, batch_size=32):
        """(standardised MSE, RMSE per variable [units]) over ``samples``."""
        net.eval()
        V = len(self.variables)
        se = np.zeros(V)
        n = np.zeros(V)
        for k in range(0, len(samples), batch_size):
            t, li = samples[k:k + batch_size, 0], samples[k:k + batch_size, 1]
            out = self._forward(net, batcher, t, li, batcher.members(t, li), device).cpu().numpy()
            y = batcher.target(t)
            ok = ~np.isnan(y)
            d = np.where(ok, out - np.nan_to_num(y), 0.0)
            se += (d**2).sum(axis=(0, 2, 3))
            n += ok.sum(axis=(0, 2, 3))
        mse = se / np.maximum(n, 1)
        std = net.std.cpu().numpy()
        return float(np.mean(mse / std**2)), np.sqrt(mse).tolist()

    def _fingerprint(self, data, split, train_args) -> str:
        key = json.dumps({"config": self.config, "meta": {k: self.meta[k] for k in ("variables", "members", "lead_times", "predictors")},
                          "shape": data.shape, "train": [int(split.train.size), int(split.train[0]), int(split.train[-1])],
                          "val": [int(split.val.size)], "t0": str(data.time[0]), "args": train_args}, sort_keys=True, default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @staticmethod
    def _checkpoint(path: Path, net, opt, sched, best_state, header) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {**header, "sched": {k: v for k, v in sched.state_dict().items()}}
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"header": json.dumps(header, default=float), "net": net.state_dict(), "opt": opt.state_dict(),
                    "best": best_state or net.state_dict()}, tmp)
        tmp.replace(path)

    # ------------------------------------------------------------------ prediction
    def _check(self, data: MMEData) -> np.ndarray:
        if self.net is None:
            raise ValueError("the DLEnsemble is not trained: call fit() or DLEnsemble.load()")
        if not isinstance(data, MMEData):
            raise ValueError(f"data must be an MMEData, got {type(data).__name__}")
        missing = [v for v in self.variables if v not in data.variables]
        if missing:
            raise ValueError(f"the data lacks variables {missing} the model needs ({self.variables})")
        for v in self.variables:
            if data.units[v] != self.meta["units"][v]:
                raise ValueError(f"{v}: data in {data.units[v]!r}, the model was trained in {self.meta['units'][v]!r}")
        extra = [m for m in data.members if m not in self.members]
        if extra:
            raise ValueError(f"members {extra} are unknown to the model (trained on {self.members}); drop them "
                             "(data.sel(member=[...])) or retrain")
        pm = [p for p in self.predictors if p not in data.predictors]
        if pm:
            raise ValueError(f"the data lacks predictors {pm} the model needs")
        lat, lon = np.asarray(self.meta["lat"]), np.asarray(self.meta["lon"])
        if data.lat.shape != lat.shape or data.lon.shape != lon.shape or not (
                np.allclose(data.lat, lat, atol=1e-6) and np.allclose(data.lon, lon, atol=1e-6)):
            raise ValueError(f"the data's grid ({data.lat.size} x {data.lon.size}) differs from the model's "
                             f"({lat.size} x {lon.size}); regrid the data to the model grid")
        lead = []
        for lt in data.lead_times:
            if int(lt) not in self.lead_times:
                raise ValueError(f"lead day {int(lt)} was not trained (model lead days {self.lead_times})")
            lead.append(self.lead_times.index(int(lt)))
        return np.asarray(lead)

    @torch.no_grad()
    def predict(self, data: MMEData, times=None, batch_size: int = 32, device: str | None = None, progress=False) -> xr.Dataset:
        """Forecast ``(lead_time, time, lat, lon)`` per variable [the model's units] for every
        (valid time, lead day) of ``data`` (or the time indices ``times``).

        Members of the model that the data lacks, or whose fields are NaN, are missing: the
        network uses the others. NaN where no member is present.
        """
        lead_index = self._check(data)
        device = torch.device(device or next(self.net.parameters()).device)
        net = self.net.to(device).eval()
        t_idx = np.arange(data.shape["time"]) if times is None else np.asarray(times)
        L = data.shape["lead_time"]
        batcher = _Batcher(data, self.variables, self.members, lead_index, self.predictors)
        out = np.full((len(self.variables), L, t_idx.size, data.shape["lat"], data.shape["lon"]), np.nan, np.float32)
        pairs = np.array([(k, li) for k in range(t_idx.size) for li in range(L)], dtype=np.int64).reshape(-1, 2)
        prog = as_progress(progress)
        bar = prog.bar(len(pairs), "DL ensemble forecasts", unit="fc")
        for s in range(0, len(pairs), batch_size):
            k, li = pairs[s:s + batch_size, 0], pairs[s:s + batch_size, 1]
            t = t_idx[k]
            members = batcher.members(t, li)
            m = torch.from_numpy(members).to(device)
            cal = torch.from_numpy(batcher.calendar(t, li, len(self.lead_times))).to(device)
            p = batcher.predictors(t, li)
            y = net(m, cal, None if p is None else torch.from_numpy(p).to(device)).cpu().numpy()
            none = np.isnan(members).all(axis=(2, 3, 4))  # (B, V): no member at all
            y[none] = np.nan
            out[:, li, k] = y.transpose(1, 0, 2, 3)
            bar.update(len(t))
        bar.close()
        ds = xr.Dataset(coords={"lead_time": data.ds["lead_time"], "time": data.ds["time"].isel(time=t_idx),
                                "lat": data.ds["lat"], "lon": data.ds["lon"]})
        for i, v in enumerate(self.variables):
            ds[v] = xr.DataArray(out[i], dims=("lead_time", "time", "lat", "lon"),
                                 attrs={"units": self.meta["units"][v], "long_name": f"{v}, DL ensemble ({self.config['arch']})"})
        ds.attrs["method"] = f"dl_{self.config['arch']}"
        return ds

    # ------------------------------------------------------------------ files
    def _header(self) -> dict:
        return {"class": "ailand.mme.DLEnsemble", "format_version": FORMAT_VERSION, "config": self.config,
                "meta": self.meta, "n_parameters": self.n_parameters}

    def save(self, path) -> Path:
        """One file: a JSON header (configuration, labels, normalisation, split, history) and
        the network weights (buffers included: normalisation, baseline weights)."""
        if self.net is None:
            raise ValueError("nothing to save: the DLEnsemble is not trained")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"header": json.dumps(self._header(), default=float), "weights": state}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, device: str | None = None) -> "DLEnsemble":
        """Rebuild a model written by :meth:`save` (the same weights, bit for bit)."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path} does not exist (train one with 'ailand mme train')")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        h = json.loads(blob["header"])
        if h.get("class") != "ailand.mme.DLEnsemble":
            raise ValueError(f"{path} is not a DL ensemble file")
        if h.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer ailand (format {h['format_version']})")
        c = h["config"]
        self = cls(**c)
        m = h["meta"]
        self.meta = m
        self.net = EnsembleNet(len(m["variables"]), len(m["members"]), len(m["lead_times"]), len(m["predictors"]),
                               (len(m["lat"]), len(m["lon"])), arch=c["arch"], width=c["width"], depth=c["depth"],
                               base=c["base"], nonnegative=m["nonnegative"])
        self.net.load_state_dict(blob["weights"])
        self.net.eval()
        return self.to(device or "cpu")

    def to(self, device) -> "DLEnsemble":
        self.net.to(torch.device(device))
        return self

    def split(self, data: MMEData) -> TimeSplit:
        """The training split, as indices into ``data.time``."""
        return TimeSplit.from_dict(self.meta["split"], data.time)

    def weighted_ensemble(self) -> WeightedEnsemble:
        """The weighted ensemble the model was built on (weights learnt on its training period)."""
        we = WeightedEnsemble(self.config["weighting"])
        w = self.net.weights.detach().cpu().numpy()
        we.weights_ = xr.DataArray(w, dims=("variable", "lead_time", "member"),
                                   coords={"variable": self.variables, "lead_time": self.lead_times, "member": self.members},
                                   attrs={"long_name": f"weighted-ensemble weights ({we.method})", "units": "1"})
        return we

    def to_onnx(self, path, opset: int | None = None) -> Path:
        """Export to ONNX (see :func:`ailand.mme.onnx_export.to_onnx`)."""
        from .onnx_export import to_onnx

        return to_onnx(self, path, opset=opset)

    @property
    def size_bytes(self) -> int:
        """float32 size of the weights and buffers [bytes]."""
        return sum(v.numel() * v.element_size() for v in self.net.state_dict().values())
