"""Training: the seed's recipe (seeded, checkpointed, resumable) and the zero-aware hurdle model.

Seed recipe (:class:`TrainConfig` defaults): FF [256, 256, 256], GeLU, dropout 0.2, min-max
normalised inputs and target, loss "r2" = sum (y - yhat)^2 / sum (y - mean y)^2 over the
batch (1 - R^2; the denominator floored at 1e-2 x batch size x the variance of the training
target: most batches of a zero-inflated target have almost no variance, and the plain ratio
then explodes - measured: train loss jumping between 1.3 and 2.8 on the linear target), AdamW
with learning rate 1e-4 (weight decay 0.01, torch's default), batch 256,
early stopping on the validation loss (the best epoch's weights are kept).

Reproducibility: the weights are drawn from ``torch.Generator(seed)``, each epoch's shuffle
from ``seed`` and the epoch number, dropout from ``torch.manual_seed(seed, epoch)`` inside a
forked RNG; so a run stopped after epoch k and resumed from its checkpoint ends bit-for-bit
where an uninterrupted run ends.

Checkpoint (``checkpoint=path``): after every epoch, ``torch.save`` of the weights, the
optimiser and scheduler states, the best weights so far, the history and the config;
``resume=True`` continues from it (a config that differs is refused).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import xarray as xr

from ...progress import as_progress
from .model import LOG_EPS, EmissionNet, HurdleEmissionNet, Normalisation, TargetTransform, log_space
from .predictors import PREDICTORS, table_arrays

__all__ = ["TrainConfig", "FitResult", "fit_seed_network", "fit_zero_aware", "predict", "LOSSES"]

LOSSES = ("r2", "mse", "huber")


@dataclass
class TrainConfig:
    """Hyperparameters (defaults: the seed's recipe). ``epochs`` is the maximum; training stops
    after ``patience`` epochs without a better validation loss. ``max_rows`` caps the training
    rows (a seeded subsample; None = all)."""

    hidden: tuple = (256, 256, 256)
    activation: str = "gelu"
    dropout: float = 0.2
    normalisation: str = "minmax"
    loss: str = "r2"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 256
    epochs: int = 20
    patience: int = 5
    scheduler: str = "none"
    seed: int = 0
    max_rows: int | None = None

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.scheduler not in ("none", "cosine"):
            raise ValueError(f"scheduler must be 'none' or 'cosine', got {self.scheduler!r}")
        if not 0 <= self.dropout < 1 or self.lr <= 0 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"bad hyperparameters: dropout {self.dropout}, lr {self.lr}, batch {self.batch_size}, "
                             f"epochs {self.epochs}")


@dataclass
class FitResult:
    """A trained model, its training history (per epoch: ``train_loss``, ``val_loss``, ``seconds``)
    and the wall time [s]."""

    model: torch.nn.Module
    history: dict = field(default_factory=dict)
    wall_s: float = 0.0
    config: TrainConfig | None = None
    info: dict = field(default_factory=dict)


def _loss(kind: str, pred, y, var_floor: float = 0.0):
    if kind == "r2":
        sst = ((y - y.mean()) ** 2).sum().clamp(min=var_floor * len(y))
        return ((y - pred) ** 2).sum() / sst
    if kind == "mse":
        return ((y - pred) ** 2).mean()
    return torch.nn.functional.huber_loss(pred, y, delta=0.1)


def _subsample(X, y, max_rows, seed):
    if max_rows is None or len(X) <= max_rows:
        return X, y
    idx = np.sort(np.random.default_rng(np.random.SeedSequence([int(seed), 1501])).choice(len(X), max_rows, replace=False))
    return X[idx], y[idx]


def _fit(module, forward, loss_fn, X, y, Xv, yv, cfg: TrainConfig, checkpoint=None, resume=False, progress=False,
         desc="training"):
    """The epoch loop shared by every network. ``forward(module, xb) -> prediction``;
    ``loss_fn(pred, y)``. X, Xv physical float32 tensors; y, yv targets. Returns the history."""
    p = as_progress(progress)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.scheduler == "cosine" else None
    hist = {"train_loss": [], "val_loss": [], "seconds": []}
    best = (float("inf"), None, -1)
    start = 0
    ck = Path(checkpoint) if checkpoint else None
    if ck is not None and resume and ck.exists():
        blob = torch.load(ck, map_location="cpu", weights_only=False)
        if blob["config"] != asdict(cfg) or blob["desc"] != desc:
            raise ValueError(f"checkpoint {ck} was written with another configuration ({blob['desc']}, {blob['config']}); "
                             "remove it or resume with the same settings")
        module.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optim"])
        if sched is not None:
            sched.load_state_dict(blob["sched"])
        hist, best, start = blob["history"], (blob["best_loss"], blob["best_state"], blob["best_epoch"]), blob["epoch"] + 1
    n = len(X)
    bs = int(cfg.batch_size)
    with p.bar(total=cfg.epochs, desc=desc, unit="epoch") as bar:
        bar.update(start)
        for ep in range(start, cfg.epochs):
            if ep - best[2] > cfg.patience and best[2] >= 0:
                break
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(int(cfg.seed) * 100003 + ep)
            perm = torch.randperm(n, generator=g)
            module.train()
            tot, cnt = 0.0, 0
            with torch.random.fork_rng():
                torch.manual_seed(int(cfg.seed) * 7919 + ep)
                for k in range(0, n, bs):
                    idx = perm[k:k + bs]
                    if len(idx) < 2:
                        continue
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(forward(module, X[idx]), y[idx])
                    loss.backward()
                    loss = loss.detach()
                    opt.step()
                    tot += loss.item() * len(idx)
                    cnt += len(idx)
            if sched is not None:
                sched.step()
            module.eval()
            with torch.no_grad():
                vl = float(np.mean([float(loss_fn(forward(module, Xv[k:k + 65536]), yv[k:k + 65536]))
                                    for k in range(0, len(Xv), 65536)])) if len(Xv) else float("nan")
            hist["train_loss"].append(tot / max(cnt, 1))
            hist["val_loss"].append(vl)
            hist["seconds"].append(time.perf_counter() - t0)
            if vl < best[0] or best[1] is None:
                best = (vl, {k: v.detach().clone() for k, v in module.state_dict().items()}, ep)
            if ck is not None:
                ck.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"model": module.state_dict(), "optim": opt.state_dict(),
                            "sched": sched.state_dict() if sched is not None else None, "history": hist,
                            "best_loss": best[0], "best_state": best[1], "best_epoch": best[2], "epoch": ep,
                            "config": asdict(cfg), "desc": desc}, ck)
            bar.update(1)
            bar.set_postfix(train=f"{hist['train_loss'][-1]:.4f}", val=f"{vl:.4f}")
    if best[1] is not None:
        module.load_state_dict(best[1])
    module.eval()
    hist["best_epoch"] = best[2]
    return hist


def _prepare(train: xr.Dataset, val: xr.Dataset, names, cfg: TrainConfig):
    X, y = table_arrays(train, names)
    Xv, yv = table_arrays(val, names)
    X, y = _subsample(X, y, cfg.max_rows, cfg.seed)
    if not (y > 0).any():
        raise ValueError("the training target is zero everywhere: nothing to learn")
    return X, y, Xv, yv


def fit_seed_network(train: xr.Dataset, val: xr.Dataset, target: str = "log", config: TrainConfig | None = None,
                     names: Sequence[str] | None = None, checkpoint=None, resume: bool = False,
                     progress=False) -> FitResult:
    """The seed's network on the table's ``names`` predictors (default the 15 of :data:`PREDICTORS`).

    target : ``"linear"`` (v1) or ``"log"`` (v2). train, val : tables from
    :func:`~ailand.dust.nn.predictors.split_by_year`. Returns a :class:`FitResult` whose model
    is an :class:`EmissionNet` (float32, eval mode).
    """
    cfg = config or TrainConfig()
    names = list(names or PREDICTORS)
    X, y, Xv, yv = _prepare(train, val, names, cfg)
    t0 = time.perf_counter()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(cfg.seed))
    norm = Normalisation.fit(X, cfg.normalisation)
    tt = TargetTransform(target, float(y.max()), LOG_EPS)
    model = EmissionNet(names, norm, tt, cfg.hidden, cfg.activation, cfg.dropout).float()
    torch.random.set_rng_state(gen_state)
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        Y, Yv = tt(torch.as_tensor(y)).float(), tt(torch.as_tensor(yv)).float()
    vf = 1e-2 * float(Y.var())
    hist = _fit(model, lambda m, xb: m.raw(xb), lambda pr, yy: _loss(cfg.loss, pr, yy, vf), f32(X), Y, f32(Xv), Yv, cfg,
                checkpoint, resume, progress, desc=f"seed network ({target})")
    return FitResult(model, hist, time.perf_counter() - t0, cfg, {"target": target})


def predict(model: torch.nn.Module, X: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Emission [kg m-2 s-1] ``(n,)`` float64 of physical predictors ``X (n, d)`` (float32 model)."""
    out = []
    model.eval()
    with torch.no_grad():
        for k in range(0, len(X), batch):
            out.append(model(torch.as_tensor(X[k:k + batch], dtype=torch.float32)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def fit_zero_aware(train: xr.Dataset, val: xr.Dataset, config: TrainConfig | None = None,
                   names: Sequence[str] | None = None, gate: bool = True, taus=None, mass_correction: bool = False,
                   checkpoint=None, resume: bool = False, progress=False) -> FitResult:
    """The zero-aware hurdle model (:class:`HurdleEmissionNet`) on ``names`` (default the 15
    predictors and ``dust_source`` last: the gate then also closes where S = 0).

    1. classifier of "emits at all" (target > 0), binary cross-entropy on the rows the gate
       lets through (the others are 0 by physics);
    2. regressor of the log target on the emitting rows (``config.loss``);
    3. the probability threshold tau: of ``taus`` (default 0.05, 0.10, ..., 0.95), the one with
       the smallest validation RMSE in log space ln(E / E_scale + eps) over all rows;
    4. with ``mass_correction``, the amount's constant factor (``model.mass_factor``) that makes
       the validation rows' emitted total right: sum(E_val) / sum(E_model,val).

    Checkpoints go to ``checkpoint`` with ``.clf`` / ``.reg`` suffixes.
    """
    cfg = config or TrainConfig()
    names = list(names or [*PREDICTORS, "dust_source"])
    X, y, Xv, yv = _prepare(train, val, names, cfg)
    t0 = time.perf_counter()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(cfg.seed))
    norm = Normalisation.fit(X, cfg.normalisation)
    tt = TargetTransform("log", float(y.max()), LOG_EPS)
    model = HurdleEmissionNet(names, norm, tt, cfg.hidden, cfg.activation, cfg.dropout, gate=gate).float()
    torch.random.set_rng_state(gen_state)
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    Xt, Xvt = f32(X), f32(Xv)
    with torch.no_grad():
        g, gv = (model.gate(Xt), model.gate(Xvt)) if gate else (torch.ones(len(X), dtype=torch.bool),
                                                                torch.ones(len(Xv), dtype=torch.bool))
    lab, labv = f32(y > 0), f32(yv > 0)
    ck = str(checkpoint) if checkpoint else None
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    h1 = _fit(model, lambda m, xb: m.logit(xb), bce, Xt[g], lab[g], Xvt[gv], labv[gv], cfg,
              ck and ck + ".clf", resume, progress, desc="zero-aware: classifier")
    pos, posv = y > 0, yv > 0
    with torch.no_grad():
        Y, Yv = tt(torch.as_tensor(y[pos])).float(), tt(torch.as_tensor(yv[posv])).float()
    vf = 1e-2 * float(Y.var())
    h2 = _fit(model, lambda m, xb: m.raw(xb), lambda pr, yy: _loss(cfg.loss, pr, yy, vf), Xt[pos], Y, Xvt[posv], Yv, cfg,
              ck and ck + ".reg", resume, progress, desc="zero-aware: regressor")
    taus = np.round(np.arange(0.05, 0.951, 0.05), 2) if taus is None else np.asarray(taus, dtype=float)
    with torch.no_grad():
        logit = torch.cat([model.logit(Xvt[k:k + 65536]) for k in range(0, len(Xvt), 65536)]).double().numpy()
        amount = predict_amount(model, Xv)
        gv_np = gv.numpy()
    lv = log_space(yv, tt.scale)
    scores = []
    for tau in taus:
        e = np.where((logit >= np.log(tau / (1 - tau))) & gv_np, amount, 0.0)
        scores.append(float(np.sqrt(np.mean((log_space(e, tt.scale) - lv) ** 2))))
    best = float(taus[int(np.argmin(scores))])
    model.set_tau(best)
    factor = 1.0
    if mass_correction:
        e = np.where((logit >= np.log(best / (1 - best))) & gv_np, amount, 0.0)
        factor = float(yv.sum() / e.sum()) if e.sum() > 0 else 1.0
        model.mass_factor.fill_(factor)
    hist = {"classifier": h1, "regressor": h2, "tau_grid": taus.tolist(), "tau_val_log_rmse": scores, "tau": best,
            "mass_factor": factor}
    return FitResult(model, hist, time.perf_counter() - t0, cfg, {"tau": best, "gate": gate, "mass_factor": factor})


def predict_amount(model: HurdleEmissionNet, X: np.ndarray, batch: int = 65536) -> np.ndarray:
    """The hurdle regressor's emission (before classifier and gate) [kg m-2 s-1] ``(n,)``."""
    with torch.no_grad():
        return np.concatenate([model.amount(torch.as_tensor(X[k:k + batch], dtype=torch.float32)).double().numpy()
                               for k in range(0, len(X), batch)])
