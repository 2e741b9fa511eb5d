"""Training: one-step plus multi-step rollout loss, held-out members and sites, checkpoints.

Loss per optimiser step (all terms are mean squared errors of normalised quantities):

    one-step  : predicted vs true normalised increments (x(t+dt) - x(t) - m_tend) / s_tend
                and normalised diagnostics, on a batch of random (time, member, site) rows;
    rollout   : the emulator is fed its own state for L steps from a true start; at lead j
                the state error is scaled by s_tend * sqrt(j) (a random walk of one-step
                errors) and the diagnostics by their standard deviation.

    loss = one-step + rollout_weight * rollout + water_weight * water

    water     : the column water-balance residual of every predicted step (one-step and
                rollout), :func:`ailand.emulator.budget.water_residual` [kg m-2], divided by
                the standard deviation of the true net inflow (P - E - Qs - Qsb) dt over the
                training rows, squared and averaged (off by default).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..physics.model import STATE_NAMES
from .features import CLIM_NAMES, FORCING_NAMES, as_ensemble_data, time_features  # noqa: F401 (as_ensemble_data: re-exported)

DEFAULT_VAL_SITES = ("BE-Lon", "US-Kon")


@dataclass
class Tensors:
    """The ensemble as tensors for training, for a selection of members and sites.

    S : (T, E, G, 15) states [physical]; D : (T, E, G, n_diag) diagnostics [physical];
    FCT : (T, G, 19) normalised forcing, clim and time features; P : (E, d) normalised
    parameters; Pphys : (E, d) physical parameters; theta_sat : (E,) [m3 m-3];
    precip : (T, G) Rainf + Snowf [kg m-2 s-1], means over each step.
    """

    S: torch.Tensor
    D: torch.Tensor
    FCT: torch.Tensor
    P: torch.Tensor
    Pphys: torch.Tensor
    theta_sat: torch.Tensor
    members: np.ndarray
    sites: list
    precip: torch.Tensor | None = None

    @property
    def shape(self):
        return tuple(self.S.shape[:3])


def ensemble_tensors(em, data, members=None, sites=None, device=None) -> Tensors:
    """Select ``members`` (indices into the ensemble axis) and ``sites`` (indices into the
    gridpoints) of ``data`` and convert them for :func:`fit` / evaluation."""
    dev = device or em.device
    idx = data.index
    missing = [k for k in (*STATE_NAMES, *em.diagnostics, *FORCING_NAMES, *CLIM_NAMES, *em.space.names) if k not in idx]
    if missing:
        raise ValueError(f"the ensemble lacks variables {missing} that the emulator needs")
    E, G = data.data.shape[2], data.data.shape[3]
    mi = np.arange(E) if members is None else np.asarray(members)
    gi = np.arange(G) if sites is None else np.asarray(sites)
    arr = data.data[:, :, mi][:, :, :, gi]  # (T, V, e, g)

    def take(names, member_axis=True):
        a = np.stack([arr[:, idx[n]] for n in names], -1)  # (T, e, g, k)
        return a if member_axis else a[:, 0]

    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=em.dtype, device=dev)  # noqa: E731
    S = t(take(STATE_NAMES))
    D = t(take(em.diagnostics))
    F, C = t(take(FORCING_NAMES, False)), t(take(CLIM_NAMES, False))
    tf = t(time_features(data.dates, np.asarray(data.lon)[gi], em.dt))
    P = t(np.stack([arr[0, idx[n], :, 0] for n in em.space.names], -1))  # (e, d)
    with torch.no_grad():
        FCT = em.normalise_fct(F, C, tf)
        Pn = em.normalise_params(P)
    return Tensors(S, D, FCT, Pn, P, P[:, em._i_theta_sat], mi, [data.sites[i] for i in gi], em.precip(F))


def _water_term(em, tt: Tensors, s0, s1, diag, t, g, scale: float):
    """Mean squared water-balance residual of predicted steps, in units of ``scale`` [kg m-2]."""
    from .budget import water_residual

    r = water_residual(s0, s1, tt.precip[t, g], diag, em.diagnostics, em.dt)
    return torch.mean((r / scale) ** 2)


def water_scale(em, tt: Tensors) -> float:
    """Standard deviation [kg m-2] of the true net inflow (P - E - Qs - Qsb) dt per step."""
    from .budget import net_inflow

    return float(net_inflow(tt.precip[:-1, None], tt.D[:-1], em.diagnostics, em.dt).std().clamp(min=1e-6))


def _one_step_loss(em, tt: Tensors, t, e, g, noise: float = 0.0, gen=None, water: float = 0.0, scale: float = 1.0):
    s = tt.S[t, e, g]
    if noise > 0:  # perturbed start states teach the network to pull back towards the truth
        s = s + noise * em._k["tend_std"] * torch.randn(s.shape, generator=gen).to(s)
    x_d = torch.cat([tt.FCT[t, g], tt.P[e]], -1)
    out = em.raw(s, x_d, tt.Pphys[e])
    k = em._k
    ns = len(STATE_NAMES)
    inc = (tt.S[t + 1, e, g] - s - k["tend_mean"]) / k["tend_std"]
    dia = (tt.D[t, e, g] - k["diag_mean"]) / k["diag_std"]
    loss = torch.mean((out[:, :ns] - inc) ** 2) + torch.mean((out[:, ns:] - dia) ** 2)
    if water > 0:
        s1, diag = em.physical(s, out, tt.theta_sat[e])
        loss = loss + water * _water_term(em, tt, s, s1, diag, t, g, scale)
    return loss


def _rollout_loss(em, tt: Tensors, t0, e, g, L: int, water: float = 0.0, scale: float = 1.0):
    s = tt.S[t0, e, g]
    k = em._k
    th = tt.theta_sat[e]
    loss = 0.0
    for j in range(L):
        t = t0 + j
        out = em.raw(s, torch.cat([tt.FCT[t, g], tt.P[e]], -1), tt.Pphys[e])
        s_prev = s
        s, diag = em.physical(s, out, th, tt.precip[t, g])
        es = (s - tt.S[t + 1, e, g]) / (k["tend_std"] * math.sqrt(j + 1))
        ed = (diag - tt.D[t, e, g]) / k["diag_std"]
        loss = loss + torch.mean(es**2) + torch.mean(ed**2)
        if water > 0:
            loss = loss + water * _water_term(em, tt, s_prev, s, diag, t, g, scale)
    return loss / L


def _draw(gen, tt: Tensors, n: int, L: int, device):
    T, E, G = tt.shape
    t = torch.randint(0, T - 1 - L, (n,), generator=gen)
    e = torch.randint(0, E, (n,), generator=gen)
    g = torch.randint(0, G, (n,), generator=gen)
    return t.to(device), e.to(device), g.to(device)


def split(data, val_members=None, val_sites=None):
    """(train member indices, val member indices, train site indices, val site indices).

    val_members : int (the last n members), a list of member labels, or None (1/8 of them).
    val_sites : names, or None for ``DEFAULT_VAL_SITES`` present in the data (else the last
        site when there are at least 3 sites), or () for none.
    """
    E = data.data.shape[2]
    labels = list(np.asarray(data.design["member"].values)) if getattr(data, "design", None) is not None else list(range(E))
    if val_members is None:
        val_members = max(1, E // 8) if E > 1 else 0
    if isinstance(val_members, (int, np.integer)):
        vm = list(range(E - int(val_members), E))
    else:
        unknown = [m for m in val_members if m not in labels]
        if unknown:
            raise ValueError(f"val_members {unknown} are not members of the ensemble ({labels[:5]}...)")
        vm = [labels.index(m) for m in val_members]
    sites = [str(s) for s in data.sites]
    if val_sites is None:
        val_sites = [s for s in DEFAULT_VAL_SITES if s in sites] or (sites[-1:] if len(sites) >= 3 else [])
    unknown = [s for s in val_sites if s not in sites]
    if unknown:
        raise ValueError(f"val_sites {unknown} are not in the ensemble's sites {sites}")
    vs = [sites.index(s) for s in val_sites]
    tm = [i for i in range(E) if i not in vm]
    ts = [i for i in range(len(sites)) if i not in vs]
    if not tm or not ts:
        raise ValueError("nothing left to train on: hold out fewer members or sites")
    return tm, vm, ts, vs


def fit(
    em,
    data,
    *,
    val_members=None,
    val_sites=None,
    epochs: int = 40,
    steps_per_epoch: int = 200,
    batch_size: int = 1024,
    rollout_steps: int = 8,
    rollout_batch: int = 128,
    rollout_weight: float = 1.0,
    water_weight: float = 0.0,
    input_noise: float = 0.0,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup_steps: int = 100,
    patience: int = 8,
    checkpoint_dir=None,
    resume: bool = True,
    device=None,
    seed: int = 0,
    time_limit: float | None = None,
    val_size: int = 4096,
    progress: bool = True,
) -> xr.Dataset:
    """Train ``em`` in place on an ensemble; returns the history as a Dataset over ``epoch``.

    AdamW with a linear warm-up and cosine decay of the learning rate over all steps; each
    step uses ``batch_size`` one-step samples and ``rollout_batch`` rollouts of
    ``rollout_steps`` steps (0 turns the rollout loss off); ``input_noise`` perturbs the
    one-step start states by that many tendency standard deviations; ``water_weight``
    weighs the column water-balance term (module docstring; needs the Evap, Qs and Qsb
    diagnostics). Validation after every epoch on
    held-out members (at training sites) and on held-out sites (all members), each a fixed
    seeded sample of ``val_size`` one-step rows and ``val_size // 8`` rollouts. Early stopping
    after ``patience`` epochs without improvement of the mean validation loss; the best
    weights are kept. With ``checkpoint_dir``, ``last.pt`` is written after every epoch
    (weights, optimiser, history) and an interrupted run resumes from it (``resume=True``)
    and ends with the same weights as an uninterrupted one. ``time_limit`` [s] stops after
    the epoch that passes it. ``device``: default CUDA when available, else CPU.
    """
    data = as_ensemble_data(data)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    em.to(device)
    tm, vm, ts, vs = split(data, val_members, val_sites)
    L = int(rollout_steps)
    train = ensemble_tensors(em, data, tm, ts, device)
    vals = {}
    if vm:
        vals["members"] = ensemble_tensors(em, data, vm, ts, device)
    if vs:
        vals["sites"] = ensemble_tensors(em, data, None, vs, device)
    scale = water_scale(em, train) if water_weight > 0 else 1.0
    T = train.shape[0]
    if T < L + 2:
        raise ValueError(f"the ensemble has {T} dates; rollout_steps={L} needs at least {L + 2}")
    fixed = {}
    for name, tt in vals.items():
        g = torch.Generator().manual_seed(10_000 + seed)
        fixed[name] = (_draw(g, tt, val_size, 0, device), _draw(g, tt, max(1, val_size // 8), L, device))

    opt = torch.optim.AdamW(em.net.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * steps_per_epoch
    history, start_epoch, best, best_state, bad = [], 0, math.inf, None, 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists() and resume:
        blob = torch.load(ckpt, map_location=device, weights_only=False)
        if blob["input_names"] != list(em.input_names) or blob["output_names"] != list(em.output_names):
            raise ValueError(f"checkpoint {ckpt} belongs to an emulator with other inputs/outputs; use resume=False or another checkpoint_dir")
        em.net.load_state_dict(blob["weights"])
        opt.load_state_dict(blob["optimizer"])
        history, start_epoch, best, bad = blob["history"], blob["epoch"] + 1, blob["best"], blob["bad"]
        best_state = blob["best_weights"]
        if progress:
            print(f"resuming from {ckpt} after epoch {blob['epoch'] + 1}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, unit="epoch", desc="train emulator")
    t_start = time.time()
    stopped = "epochs"
    for epoch in range(start_epoch, epochs):
        if bad >= patience:
            stopped = "early stopping"
            break
        em.net.train()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        run_loss = 0.0
        t_epoch = time.time()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            f = min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr * max(f, 1e-3)
            t, e, g = _draw(gen, train, batch_size, 0, device)
            loss = _one_step_loss(em, train, t, e, g, input_noise, gen, water_weight, scale)
            if L > 0 and rollout_weight > 0:
                t, e, g = _draw(gen, train, rollout_batch, L, device)
                loss = loss + rollout_weight * _rollout_loss(em, train, t, e, g, L, water_weight, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(em.net.parameters(), 1.0)
            opt.step()
            run_loss += float(loss.detach())
        em.net.eval()
        rec = {"epoch": epoch, "train_loss": run_loss / steps_per_epoch, "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t_epoch}
        with torch.no_grad():
            for name, tt in vals.items():
                (a, b) = fixed[name]
                rec[f"val_{name}_one_step"] = float(_one_step_loss(em, tt, *a))
                rec[f"val_{name}_rollout"] = float(_rollout_loss(em, tt, *b, L)) if L > 0 else 0.0
        vl = [rec[f"val_{n}_one_step"] + rollout_weight * rec[f"val_{n}_rollout"] for n in vals]
        rec["val_loss"] = float(np.mean(vl)) if vl else rec["train_loss"]
        history.append(rec)
        if rec["val_loss"] < best:
            best, bad = rec["val_loss"], 0
            best_state = {k: v.detach().clone() for k, v in em.net.state_dict().items()}
        else:
            bad += 1
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_name("last.pt.tmp")
            torch.save(
                {
                    "epoch": epoch, "weights": em.net.state_dict(), "optimizer": opt.state_dict(), "history": history,
                    "best": best, "bad": bad, "best_weights": best_state,
                    "input_names": list(em.input_names), "output_names": list(em.output_names),
                },
                tmp,
            )
            tmp.replace(ckpt)
        if bar is not None:
            bar.set_postfix(train=f"{rec['train_loss']:.4f}", val=f"{rec['val_loss']:.4f}", refresh=False)
            bar.update(1)
        if time_limit is not None and time.time() - t_start > time_limit:
            stopped = "time limit"
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        em.net.load_state_dict(best_state)
    em.net.eval()
    hist = xr.Dataset(
        {k: ("epoch", np.array([h[k] for h in history], dtype=float)) for k in history[0] if k != "epoch"} if history else {},
        coords={"epoch": [h["epoch"] for h in history]},
        attrs={"stopped": stopped, "best_val_loss": best, "val_members": [int(i) for i in vm], "val_sites": [data.sites[i] for i in vs]},
    )
    em.meta["training"] = {
        "epochs_run": len(history), "stopped": stopped, "best_val_loss": best,
        "val_members": [int(i) for i in vm], "val_sites": [str(data.sites[i]) for i in vs],
        "train_sites": [str(data.sites[i]) for i in ts], "seconds": time.time() - t_start,
        "rollout_steps": L, "batch_size": batch_size, "lr": lr, "water_weight": float(water_weight),
    }
    return hist

