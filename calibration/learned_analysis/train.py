"""Training and prediction of the learned analyses (seeded, CPU-friendly, progress bars).

Training targets are either the truth (``target="truth"``, as the seed's toy exercises) or a
classical analysis (an array of the truth's shape, e.g. the OI analyses of the training cases:
what an operational system can do, having no truth). The loss is the mean squared error in
standardised units (exercise 2: per variable, then averaged); the physics-constrained 1-D
model adds ``lam`` times the mean squared :func:`ailand.shallow_water.residual_1d` scaled by the
truth's typical tendency.

Every ``train_*`` returns the model in eval mode with ``model.history`` (loss per epoch).
:func:`save_model` / :func:`load_model` keep the config next to the weights.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr

from ailand.progress import as_progress
from ailand.shallow_water import residual_1d

from .networks import AnalysisUNet, ObsToStateUNet, ShallowWater1DNet
from .observations import check_analysis_inputs

__all__ = ["train_exercise1", "predict_exercise1", "train_exercise2", "predict_exercise2",
           "train_shallow_water_1d", "save_model", "load_model"]

KINDS = {"AnalysisUNet": AnalysisUNet, "ObsToStateUNet": ObsToStateUNet, "ShallowWater1DNet": ShallowWater1DNet}


def _kinds():
    from .diffusion import DiffusionAnalysis

    return {**KINDS, "DiffusionAnalysis": DiffusionAnalysis}


def _fit(model, n: int, loss_of, epochs: int, batch_size: int, lr: float, seed: int, progress, desc: str):
    """Adam with a cosine learning-rate decay over ``epochs`` passes of ``n`` samples in shuffled batches."""
    if n < 1:
        raise ValueError("no training cases")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = int(np.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * n_batches))
    p = as_progress(progress)
    model.train()
    history = []
    with p.bar(epochs, desc, "epoch") as bar:
        for _ in range(int(epochs)):
            perm = torch.randperm(n, generator=gen)
            tot = 0.0
            for k in range(n_batches):
                idx = perm[k * batch_size:(k + 1) * batch_size]
                loss = loss_of(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * idx.numel()
            history.append(tot / n)
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    model.eval()
    model.history = history
    return model


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def train_exercise1(ds: xr.Dataset, target="truth", scale: float | None = None, static=None, epochs: int = 20,
                    batch_size: int = 32, lr: float = 2e-3, width: int = 16, depth: int = 2, periodic: bool = True,
                    weight=None, seed: int = 0, progress=False) -> AnalysisUNet:
    """Train an :class:`AnalysisUNet` on cases ``ds`` (``background, obs, mask`` ``(case, y, x)``).

    target : ``"truth"`` (``ds.truth``) or an array/DataArray ``(case, y, x)`` (a classical analysis).
    scale : innovation scale [field units] (default: the background's error std estimated as the
        std of ``target - background``).
    static : ``(n_static, ny, nx)`` static maps (e.g. land-sea mask) or None.
    weight : ``(ny, nx)`` loss weights (e.g. 1 on land, 0 at sea) or None.
    """
    xb_t, y_t, m_t, _ = check_analysis_inputs(ds["background"].values, ds["obs"].values, ds["mask"].values)
    tgt = ds["truth"].values if isinstance(target, str) and target == "truth" else np.asarray(target)
    if tgt.shape != tuple(xb_t.shape):
        raise ValueError(f"target must have the cases' shape {tuple(xb_t.shape)}, got {tgt.shape}")
    xb, y, m, tg = xb_t.float(), y_t.float(), m_t, _f32(tgt)
    w = torch.ones(xb.shape[-2:]) if weight is None else _f32(weight)
    st = None if static is None else _f32(static)[None]
    sc = float(scale) if scale is not None else float((tg - xb)[:, w > 0].std())
    mean, std = float(xb[:, w > 0].mean()), float(xb[:, w > 0].std())
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # seeded initial weights, whatever ran before
        model = AnalysisUNet(mean, std, sc, n_static=0 if st is None else st.shape[1], width=width, depth=depth,
                             periodic=periodic, grid_shape=tuple(xb.shape[-2:]))

    def loss_of(idx):
        out = model(xb[idx], y[idx], m[idx], st)
        return (((out - tg[idx]) / sc) ** 2 * w).sum() / (w.sum() * idx.numel())

    return _fit(model, xb.shape[0], loss_of, epochs, batch_size, lr, seed, progress, "train U-Net (exercise 1)")


@torch.no_grad()
def predict_exercise1(model: AnalysisUNet, background, obs, mask, static=None) -> np.ndarray:
    """Analyses ``(B, ny, nx)`` (or ``(ny, nx)``) from a trained :class:`AnalysisUNet`; inputs
    validated as every analysis method (:func:`check_analysis_inputs`)."""
    xb, y, m, squeezed = check_analysis_inputs(background, obs, mask, model.grid_shape)
    st = None if static is None else _f32(static)[None]
    out = model(xb.float(), y.float(), m, st).double().numpy()
    return out[0] if squeezed else out


def _ex2_tensors(ds):
    obs = ds["obs"].values
    mask = ds["mask"].values.astype(bool) & np.isfinite(obs)
    return _f32(np.where(mask, obs, 0.0)), torch.as_tensor(mask)


def train_exercise2(ds: xr.Dataset, target="truth", epochs: int = 20, batch_size: int = 32, lr: float = 2e-3,
                    width: int = 16, depth: int = 2, seed: int = 0, progress=False) -> ObsToStateUNet:
    """Train an :class:`ObsToStateUNet` on exercise-2 cases; ``target`` ``"truth"`` or an array
    ``(case, 3, y, x)`` (a classical analysis of ``h, u, v``)."""
    obs, mask = _ex2_tensors(ds)
    tgt = _f32(ds["truth"].values if isinstance(target, str) and target == "truth" else np.asarray(target))
    if tgt.shape != (obs.shape[0], 3, *obs.shape[-2:]):
        raise ValueError(f"target must be (case, 3, ny, nx) = {(obs.shape[0], 3, *obs.shape[-2:])}, got {tuple(tgt.shape)}")
    o_mean = [float(obs[:, k][mask[:, k]].mean()) for k in range(obs.shape[1])]
    o_std = [float(obs[:, k][mask[:, k]].std()) for k in range(obs.shape[1])]
    t_mean = [float(tgt[:, k].mean()) for k in range(3)]
    t_std = [float(tgt[:, k].std()) for k in range(3)]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ObsToStateUNet(o_mean, o_std, t_mean, t_std, width=width, depth=depth, grid_shape=tuple(obs.shape[-2:]))

    def loss_of(idx):
        out = model(obs[idx], mask[idx])
        return (((out - tgt[idx]) / model.out_std) ** 2).mean()

    return _fit(model, obs.shape[0], loss_of, epochs, batch_size, lr, seed, progress, "train U-Net (exercise 2)")


@torch.no_grad()
def predict_exercise2(model: ObsToStateUNet, obs, mask) -> np.ndarray:
    """State ``(B, 3, ny, nx)`` from observations ``(B, 5, ny, nx)`` (NaN = missing) and masks."""
    obs = np.asarray(obs, dtype=np.float64)
    mask = np.asarray(mask)
    if obs.ndim != 4 or obs.shape[1] != model.obs_mean.shape[1]:
        raise ValueError(f"obs must be (B, {model.obs_mean.shape[1]}, ny, nx), got {obs.shape}")
    if model.grid_shape is not None and obs.shape[-2:] != model.grid_shape:
        raise ValueError(f"obs are on a {obs.shape[-2]} x {obs.shape[-1]} grid but the network was trained on "
                         f"{model.grid_shape[0]} x {model.grid_shape[1]}")
    if mask.shape != obs.shape:
        raise ValueError(f"mask must have the obs' shape {obs.shape}, got {mask.shape}")
    m = mask.astype(bool) & np.isfinite(obs)
    return model(_f32(np.where(m, obs, 0.0)), torch.as_tensor(m)).double().numpy()


def train_shallow_water_1d(s0, s1, dt: float, dx: float, lam: float = 0.0, epochs: int = 30, batch_size: int = 32,
                           lr: float = 2e-3, width: int = 32, n_layers: int = 4, seed: int = 0,
                           progress=False) -> ShallowWater1DNet:
    """Train a :class:`ShallowWater1DNet` mapping states ``s0 (n, 2, nx)`` to ``s1`` a time ``dt``
    [s] later, with the loss ``L = L_data + lam * L_phys``:

        L_data = mean(((net(s0) - s1) / std)^2)
        L_phys = mean((residual_1d(s0, net(s0), dt, dx) / r_scale)^2)

    ``std`` the per-variable std of ``s1 - s0``, ``r_scale`` the per-equation rms of the truth's
    tendency ``(q1 - q0) / dt``: both terms are dimensionless. ``lam = 0``: unconstrained.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    a, b = _f32(s0), _f32(s1)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] != 2:
        raise ValueError(f"s0 and s1 must both be (n, 2, nx), got {tuple(a.shape)} and {tuple(b.shape)}")
    d = b - a
    std = d.std((0, 2)).clamp(min=1e-12)
    mean, sd = a.mean((0, 2)), a.std((0, 2))
    q0 = torch.stack([a[:, 0], a[:, 0] * a[:, 1]], 1)
    q1 = torch.stack([b[:, 0], b[:, 0] * b[:, 1]], 1)
    r_scale = ((q1 - q0) / dt).pow(2).mean((0, 2)).sqrt().clamp(min=1e-30).reshape(1, 2, 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ShallowWater1DNet(mean.tolist(), sd.tolist(), std.tolist(), width=width, n_layers=n_layers)
    model.r_scale = r_scale
    stdv = std.reshape(1, 2, 1)

    def loss_of(idx):
        out = model(a[idx])
        loss = (((out - b[idx]) / stdv) ** 2).mean()
        if lam:
            loss = loss + lam * ((residual_1d(a[idx], out, dt, dx) / r_scale) ** 2).mean()
        return loss

    return _fit(model, a.shape[0], loss_of, epochs, batch_size, lr, seed, progress,
                f"train 1-D shallow-water net (lambda={lam:g})")


def save_model(model, path, meta: dict | None = None) -> None:
    """Weights, class name, config and ``meta`` (e.g. the training target) in one torch file."""
    torch.save({"kind": type(model).__name__, "config": model.config, "state": model.state_dict(), "meta": meta or {},
                "history": getattr(model, "history", []), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
               path)


def load_model(path):
    """The model saved by :func:`save_model`, in eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("kind") not in _kinds():
        raise ValueError(f"{path} is not a learned-analysis model file (expected one written by save_model)")
    model = _kinds()[blob["kind"]](**blob["config"])
    model.load_state_dict(blob["state"])
    model.history = blob.get("history", [])
    model.meta = blob.get("meta", {})
    return model.eval()
