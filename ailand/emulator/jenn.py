"""Jacobian-enhanced training (JENN, Tian 2024): teach the emulator the physics' tangent linear.

An emulator trained on values alone can learn a weak response wrongly: the shipped one's
d T2m / d soil moisture over a 6-hour step is 12-22 times the physics' and has the wrong sign
for most deep-layer entries (README, land DA), so a soil-moisture analysis with its Jacobian
keeps only half of the benefit. This second training stage adds the error of the emulator's
step sensitivities to the loss:

    loss = one-step + rollout (as in :mod:`ailand.emulator.train`) + jac_weight * L_jac
    L_jac = mean over samples, outputs o, inputs l of ((J_emu - J_phys)[o, l] / s_o)^2

with ``J[o, l] = d output_o(t + dt) / d input_l(t)`` by central differences of size ``delta``
for both models (the same finite step, so the two are compared like for like and the
emulator's is differentiable in its weights by plain autograd), ``s_o`` the standard
deviation of the physics' ``J[o, :]`` over the samples. The physics' sensitivities come from
:func:`physics_sensitivities` (float64, hourly steps over each 6-hour emulator step, at
states of a physics run on new weather, for the default and sampled parameters).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..physics.model import STATE_NAMES
from .features import CLIM_NAMES, FORCING_NAMES, TIME_NAMES

DEFAULT_INPUTS = ("swvl1", "swvl2", "swvl3")
DEFAULT_OUTPUTS = ("T2m", "RH2m", "Qle", "Qh", "swvl1", "swvl2", "swvl3")


@dataclass
class JacobianSet:
    """Physics step sensitivities and the emulator inputs they belong to (float32 tensors).

    state : (N, 15) physical states at the step start (``STATE_NAMES``); drivers : (N, n_drv)
    normalised drivers of the step; params : (N, d) physical parameters; J : (N, n_out,
    n_in) d outputs / d inputs of the physics over the step (units of the output per unit
    of the input); outputs, inputs : their names; delta : the central-difference step.
    """

    state: torch.Tensor
    drivers: torch.Tensor
    params: torch.Tensor
    J: torch.Tensor
    outputs: tuple
    inputs: tuple
    delta: float

    def __len__(self):
        return self.state.shape[0]


def physics_sensitivities(em, forcing, params=None, *, every: int = 2, delta: float = 0.002, outputs=DEFAULT_OUTPUTS,
                          inputs=DEFAULT_INPUTS, spinup_years: int = 1, chunk: int = 128, progress: bool = False) -> JacobianSet:
    """The physics' sensitivities over emulator steps of ``forcing`` (hourly, ``(time, site)``).

    params : None (defaults) or a dict of arrays of length M (M parameter sets as members).
    Every ``every``-th emulator step after the first, all sites and members: the physics
    (float64) from its own state (a run spun up ``spinup_years`` on ``forcing``) over the
    step's hours, with each of ``inputs`` moved by +-``delta``: the perturbations as members
    and ``chunk`` steps side by side as columns of one batched call. Returns a :class:`JacobianSet` for :func:`fit_jacobian`.
    """
    from ..physics import ToyEcLand

    bad = [v for v in (*outputs, *inputs) if v not in em.output_names]
    if bad:
        raise ValueError(f"the emulator has no {bad}")
    if any(v not in STATE_NAMES for v in inputs):
        raise ValueError(f"inputs must be states, got {inputs}")
    phys = ToyEcLand(dtype=torch.float64, compile=False)
    if params is None:  # the defaults as one member
        params = {n: np.array([v]) for n, v in zip(phys.space.names, phys.space.default_vector)}
    f, st, _ = phys.prepare(forcing)
    p = phys.param_tensors(params) if params is not None else phys.param_tensors()
    p = {k: (v[:, None] if v.ndim == 1 else v) for k, v in p.items()}  # (M, 1) members
    s0 = phys.initial_conditions(forcing, params=params, spinup_years=spinup_years)
    k = int(round(em.dt / phys.dt))
    T = (f["Tair"].shape[0] // k) * k
    f = {n: v[:T] for n, v in f.items()}
    state0 = {n: torch.as_tensor(np.asarray(s0[n].values), dtype=torch.float64) for n in s0.data_vars if n in STATE_NAMES}
    layered = {"swvl": torch.stack([state0[f"swvl{i}"] for i in range(1, 5)], -1),
               "stl": torch.stack([state0[f"stl{i}"] for i in range(1, 5)], -1)}
    state = {**{n: v for n, v in state0.items() if not n[:-1] in ("swvl", "stl")}, **layered}
    with torch.no_grad():
        traj, _ = phys.simulate(f, p, st, state, steps_per_output=k, outputs=list(STATE_NAMES))
    # emulator drivers for the same steps
    fe, ste, _ = em.prepare(forcing)
    F = torch.stack([fe[n] for n in FORCING_NAMES], -1)[: T // k]
    C = torch.stack([fe["clim_lai"], *[ste[n].expand_as(fe["clim_lai"]) for n in CLIM_NAMES[1:]]], -1)[: T // k]
    TM = torch.stack([fe[n] for n in TIME_NAMES], -1)[: T // k]
    pe = torch.stack([torch.as_tensor(p[n], dtype=em.dtype).reshape(-1) for n in em.space.names], -1)  # (M, d)
    with torch.no_grad():
        fct = em.normalise_fct(F, C, TM)  # (K, S, 19)
        pn = em.normalise_params(pe)  # (M, d)
    i_in = [STATE_NAMES.index(v) for v in inputs]
    n_in = len(inputs)
    rows_s, rows_d, rows_p, rows_J = [], [], [], []
    K = T // k
    steps = np.arange(1, K, every)
    chunks = np.array_split(steps, max(1, int(np.ceil(len(steps) / chunk))))
    from ..progress import as_progress

    # the steps of a chunk side by side as extra columns: forcing (k, W*S), states (2 n_in, M, W*S)
    with as_progress(progress).bar(len(steps), desc="physics sensitivities", unit="step") as bar:
        for js_ in chunks:
            W = len(js_)
            S_ = f["Tair"].shape[1]
            s_start = torch.stack([traj[n][js_ - 1] for n in STATE_NAMES], -1)  # (W, M, S, 15)
            s_start = s_start.permute(1, 0, 2, 3).reshape(-1, W * S_, len(STATE_NAMES))  # (M, W*S, 15)
            pert = s_start[None].repeat(2 * n_in, 1, 1, 1)  # (2 n_in, M, W*S, 15)
            for a, i in enumerate(i_in):
                pert[2 * a, ..., i] += delta
                pert[2 * a + 1, ..., i] -= delta
            named = {n: pert[..., q] for q, n in enumerate(STATE_NAMES)}
            st0 = {"swvl": torch.stack([named[f"swvl{i}"] for i in range(1, 5)], -1),
                   "stl": torch.stack([named[f"stl{i}"] for i in range(1, 5)], -1),
                   **{n: v for n, v in named.items() if n[:-1] not in ("swvl", "stl")}}
            rows = torch.as_tensor(js_[:, None] * k + np.arange(k)[None])  # (W, k) hour indices
            fj = {n: v[rows].permute(1, 0, 2).reshape(k, W * S_) for n, v in f.items()}
            stj = {n: v.repeat(W) for n, v in st.items()}
            with torch.no_grad():
                out, fin = phys.simulate(fj, {n: v[None] for n, v in p.items()}, stj, st0, steps_per_output=k,
                                         outputs=[o for o in outputs if o not in STATE_NAMES])
            vals = []
            for o in outputs:
                v = fin[o[:-1]][..., int(o[-1]) - 1] if o[:-1] in ("swvl", "stl") and o[-1].isdigit() else (
                    fin[o] if o in fin else out[o][0])
                vals.append(v)
            Y = torch.stack(vals, -1)  # (2 n_in, M, W*S, n_out)
            J = (Y[0::2] - Y[1::2]) / (2 * delta)  # (n_in, M, W*S, n_out)
            M_ = s_start.shape[0]
            drv = torch.cat([fct[js_].reshape(1, W * S_, -1).expand(M_, W * S_, fct.shape[-1]),
                             pn[:, None].expand(M_, W * S_, pn.shape[-1])], -1)
            rows_s.append(s_start.reshape(-1, len(STATE_NAMES)))
            rows_d.append(drv.reshape(M_ * W * S_, -1))
            rows_p.append(pe[:, None].expand(M_, W * S_, pe.shape[-1]).reshape(M_ * W * S_, -1))
            rows_J.append(J.permute(1, 2, 3, 0).reshape(M_ * W * S_, len(outputs), n_in))
            bar.update(W)
    t = lambda x: torch.cat(x).to(em.dtype)  # noqa: E731
    return JacobianSet(t(rows_s), t(rows_d), t(rows_p), t(rows_J), tuple(outputs), tuple(inputs), float(delta))


def emulator_sensitivities(em, js: JacobianSet, idx=None) -> torch.Tensor:
    """The emulator's ``(n, n_out, n_in)`` step sensitivities at the rows ``idx`` of ``js``
    by the same central differences (differentiable in the emulator's weights)."""
    idx = slice(None) if idx is None else idx
    s, d, p = js.state[idx], js.drivers[idx], js.params[idx]
    n_in = len(js.inputs)
    i_in = [STATE_NAMES.index(v) for v in js.inputs]
    pert = s[None].repeat(2 * n_in, 1, 1)
    for a, i in enumerate(i_in):
        pert[2 * a, :, i] += js.delta
        pert[2 * a + 1, :, i] -= js.delta
    th = p[:, em._i_theta_sat]
    new, diag = em.physical(pert, em.raw(pert, d[None].expand(2 * n_in, *d.shape), p[None]), th[None])
    cols = []
    for o in js.outputs:
        cols.append(new[..., STATE_NAMES.index(o)] if o in STATE_NAMES else diag[..., em.diagnostics.index(o)])
    Y = torch.stack(cols, -1)  # (2 n_in, n, n_out)
    return ((Y[0::2] - Y[1::2]) / (2 * js.delta)).permute(1, 2, 0)


def sensitivity_scores(em, js: JacobianSet, rel: float = 0.01) -> dict:
    """Sign agreement and median |J_emu| / |J_phys| per output over entries above ``rel`` of
    that output's largest physics sensitivity."""
    with torch.no_grad():
        Je = emulator_sensitivities(em, js).double().numpy()
    Jp = js.J.double().numpy()
    out = {}
    for o, name in enumerate(js.outputs):
        a, b = Jp[:, o], Je[:, o]
        big = np.abs(a) > rel * np.abs(a).max()
        out[name] = {"sign_agreement": float((np.sign(a) == np.sign(b))[big].mean()),
                     "magnitude_ratio": float(np.median(np.abs(b[big])) / np.median(np.abs(a[big]))), "n": int(big.sum())}
    return out


def fit_jacobian(em, data, js: JacobianSet, *, jac_weight: float = 1.0, steps: int = 1500, lr: float = 3e-4,
                 batch_size: int = 1024, jac_batch: int = 512, rollout_steps: int = 16, rollout_batch: int = 128,
                 seed: int = 0, progress: bool = True) -> dict:
    """The JENN stage: fine-tune ``em`` in place on the ensemble ``data`` (the values, as in
    :func:`ailand.emulator.train.fit`, on the emulator's own training split) plus
    ``jac_weight`` x the sensitivity error against ``js``. AdamW with cosine decay from
    ``lr``; the training sites and members only. Returns a record (losses, time)."""
    from ..progress import as_progress
    from .train import _draw, _one_step_loss, _rollout_loss, as_ensemble_data, ensemble_tensors, split

    data = as_ensemble_data(data)
    tr = em.meta.get("training", {})
    labels = list(np.asarray(data.design["member"].values))
    vm = [labels[i] for i in tr.get("val_members", []) if i < len(labels)] or None
    vs = [s for s in tr.get("val_sites", []) if s in list(data.sites)] or None
    tm, _, ts, _ = split(data, vm, vs)
    train = ensemble_tensors(em, data, tm, ts)
    scale = js.J.std(0).mean(-1).clamp(min=1e-12)  # (n_out,): spread of each output's sensitivities
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(em.net.parameters(), lr=lr, weight_decay=1e-4)
    hist = {"loss": [], "jac": []}
    t0 = time.time()
    em.net.train()
    with as_progress(progress).bar(steps, desc="JENN stage", unit="step") as bar:
        for i in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * i / steps))
            t, e, g_ = _draw(gen, train, batch_size, 0, em.device)
            loss = _one_step_loss(em, train, t, e, g_)
            t, e, g_ = _draw(gen, train, rollout_batch, rollout_steps, em.device)
            loss = loss + _rollout_loss(em, train, t, e, g_, rollout_steps)
            idx = torch.randint(0, len(js), (jac_batch,), generator=gen)
            Je = emulator_sensitivities(em, js, idx)
            lj = torch.mean(((Je - js.J[idx]) / scale[None, :, None]) ** 2)
            loss = loss + jac_weight * lj
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(em.net.parameters(), 1.0)
            opt.step()
            hist["loss"].append(float(loss.detach()))
            hist["jac"].append(float(lj.detach()))
            bar.update(1)
    em.net.eval()
    w = max(1, min(100, steps // 4))  # mean of the first / last w steps' sensitivity loss
    rec = {"steps": steps, "jac_weight": jac_weight, "lr": lr, "seconds": time.time() - t0, "loss_window": w,
           "jac_loss_first": float(np.mean(hist["jac"][:w])), "jac_loss_last": float(np.mean(hist["jac"][-w:])),
           "outputs": list(js.outputs), "inputs": list(js.inputs), "delta": js.delta, "samples": len(js)}
    em.meta["jenn"] = rec
    return rec
