"""A machine-learnt Lorenz-96 step: a small MLP on a periodic stencil (a 1-D convolution).

The exact step (:func:`ailand.lorenz96.rk4_step`, one RK4 step of ``dt = 0.05``) changes
``x_i`` by an amount that depends only on nearby variables (the tendency on ``x_{i-2}..x_{i+1}``,
four RK4 stages widen that to ``x_{i-8}..x_{i+4}`` with quickly fading weights) and is the same
for every ``i``. The emulator has the same two properties::

    z        = (x - mu) / sd                                   (..., Nx)      normalised state
    s_i      = [z_{i-left}, ..., z_i, ..., z_{i+right}]        (..., Nx, K)   periodic stencil, K = left + right + 1
    x_i'     = x_i + scale * MLP(s_i)                          (..., Nx)      the same MLP at every i

so it is translation-invariant (a periodic 1-D convolution with an MLP kernel), works for any
``Nx >= K``, and has a few thousand weights. Its activations are ``tanh`` (smooth), so its
tangent-linear model by autograd is well defined everywhere and passes the Taylor test
(:func:`calibration.var4d.tangent_linear_test`) down to round-off.

- :class:`L96Emulator` - the network; ``step(x, t=0.0, params=None, inputs=None)`` has the
  signature of :meth:`ailand.lorenz96.Lorenz96.step` (``params``/``inputs`` must be None: the
  forcing is baked in), so it drops into the cycling filter or 4D-Var.
- :func:`training_pairs` - ``(x_k, x_{k+1})`` pairs from trajectories of the exact model.
- :func:`train` - fit an emulator (seeded; Adam, full batch or minibatches).
- :func:`evaluate` - one-step RMSE and how long its forecasts stay close to the exact model's.
- :func:`default` - the shipped emulator, ``data/emulator/lorenz96.pt`` (27 kB; trained by
  ``python -m ailand.lorenz96_emulator --out data/emulator/lorenz96.pt --n-states 800
  --hidden 64,64 --max-iter 2000``, 19 min on one loaded core; nothing is downloaded).

Accuracy of the shipped emulator (stencil ``x_{i-4}..x_{i+2}``, two hidden layers of 64,
4,737 weights; :func:`evaluate` on 64 fresh attractor states, ``.meta`` of the loaded object):

- one step (``dt = 0.05``): RMSE 9.6e-3, 1.0 % of the RMS change of the exact step;
- free forecasts from the same state as the exact model stay within RMSE 0.1 until
  ``t = 0.7``, within 1.0 (the observation error of the twin) until ``t = 1.85`` and within 1.8
  (half the climatological standard deviation) until ``t = 2.3`` (the leading Lyapunov time
  of Lorenz-96 is about 0.6, so an exact model started 1e-2 away separates on the same scale);
- tangent-linear model: 0.7 % (1 step) and 1.4 % (4 steps) relative difference from the exact
  RK4 TL on a random perturbation; its own Taylor test is O(eps^2) over eps in [1e-7, 1e-1]
  (float64; below that round-off, as for the exact model) and its adjoint passes the
  dot-product test to 5e-16.

Units: the Lorenz-96 variables and time are non-dimensional ("model units"; ``dt = 0.05`` is
about 6 hours of atmosphere).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .lorenz96 import DT, FORCE, NX, Lorenz96

FORMAT = "ailand.L96Emulator"
FORMAT_VERSION = 1


class L96Emulator(nn.Module):
    """MLP on a periodic stencil that maps ``x_k (..., Nx)`` to ``x_{k+1} (..., Nx)``.

    Parameters
    ----------
    left, right : stencil half-widths: point ``i`` sees ``x_{i-left} .. x_{i+right}``.
    hidden : widths of the hidden layers (``activation`` after each).
    dt, F : the step length [model time units] and forcing of the exact model it imitates
        (metadata: the network does not take them as inputs).
    mu, sd : normalisation of the inputs (climatological mean and standard deviation of ``x``).
    scale : output scale: ``x_{k+1} - x_k = scale * MLP(...)`` (the RMS one-step increment).
    activation : ``"tanh"``, ``"silu"`` or ``"gelu"`` (smooth, so that the tangent-linear model
        exists everywhere).
    """

    def __init__(self, left: int = 4, right: int = 2, hidden=(64, 64), dt: float = DT, F: float = FORCE,
                 mu: float = 2.3, sd: float = 3.6, scale: float = 0.5, activation: str = "tanh"):
        super().__init__()
        if left < 0 or right < 0:
            raise ValueError(f"left and right must be >= 0, got left={left}, right={right}")
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be one or more positive widths, got {hidden}")
        self.left, self.right, self.hidden = int(left), int(right), hidden
        self.meta: dict = {}  # the training record (train / load)
        self.dt, self.F = float(dt), float(F)
        acts = {"tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)} (smooth, for the tangent-linear model), got {activation!r}")
        self.activation = activation
        self.register_buffer("mu", torch.tensor(float(mu)))
        self.register_buffer("sd", torch.tensor(float(sd)))
        self.register_buffer("scale", torch.tensor(float(scale)))
        layers, k = [], self.width
        for h in hidden:
            layers += [nn.Linear(k, h), acts[activation]()]
            k = h
        layers.append(nn.Linear(k, 1))
        self.mlp = nn.Sequential(*layers)

    @property
    def width(self) -> int:
        """Stencil size ``K = left + right + 1``."""
        return self.left + self.right + 1

    def config(self) -> dict:
        return {"left": self.left, "right": self.right, "hidden": list(self.hidden), "dt": self.dt, "F": self.F,
                "mu": float(self.mu), "sd": float(self.sd), "scale": float(self.scale), "activation": self.activation}

    def __repr__(self):
        n = sum(p.numel() for p in self.parameters())
        return (f"L96Emulator(stencil=[i-{self.left}, i+{self.right}], hidden={self.hidden}, dt={self.dt}, "
                f"F={self.F}, weights={n})")

    def stencil(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., Nx)`` -> ``(..., Nx, K)``: ``out[..., i, j] = x[..., (i - left + j) mod Nx]``."""
        if x.shape[-1] < self.width:
            raise ValueError(f"x must have at least {self.width} variables (the stencil), got {x.shape[-1]}")
        return torch.stack([torch.roll(x, s, dims=-1) for s in range(self.left, -self.right - 1, -1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x_k (..., Nx)`` -> ``x_{k+1} (..., Nx)`` (in the module's dtype)."""
        z = (x - self.mu) / self.sd
        return x + self.scale * self.mlp(self.stencil(z)).squeeze(-1)

    def step(self, x: torch.Tensor, t: float = 0.0, params=None, inputs=None) -> torch.Tensor:
        """One emulated step, with the signature of :meth:`ailand.lorenz96.Lorenz96.step`
        (``t`` unused: autonomous; ``params`` and ``inputs`` must be None: F is fixed)."""
        if params is not None or inputs is not None:
            raise ValueError("L96Emulator.step: the emulator has F baked in; params and inputs must be None")
        p = next(self.parameters())
        return self(torch.as_tensor(x, dtype=p.dtype, device=p.device))

    def simulate(self, x0, n_steps: int) -> torch.Tensor:
        """Trajectory ``(n_steps + 1, ..., Nx)`` from ``x0 (..., Nx)`` (no gradient)."""
        p = next(self.parameters())
        x = torch.as_tensor(np.asarray(x0) if not torch.is_tensor(x0) else x0, dtype=p.dtype)
        out = torch.empty((n_steps + 1,) + tuple(x.shape), dtype=p.dtype)
        out[0] = x
        with torch.no_grad():
            for k in range(n_steps):
                x = self(x)
                out[k + 1] = x
        return out

    # ------------------------------------------------------------------ files
    def save(self, path, meta: dict | None = None) -> Path:
        """Write the weights (float32, a few tens of kB), configuration and ``meta`` to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"class": FORMAT, "format_version": FORMAT_VERSION, "config": self.config(), "meta": meta or {}}
        weights = {k: v.detach().to(torch.float32).cpu() for k, v in self.state_dict().items()}
        torch.save({"header": json.dumps(header), "weights": weights}, path)
        return path

    @classmethod
    def load(cls, path, dtype: torch.dtype = torch.float64) -> "L96Emulator":
        """Rebuild an emulator written by :meth:`save`, in ``dtype`` (default float64, for
        tangent-linear and adjoint tests and 4D-Var). ``.meta`` holds the training record."""
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        h = json.loads(blob["header"])
        if h.get("class") != FORMAT:
            raise ValueError(f"{path} is not a Lorenz-96 emulator file (class {h.get('class')!r})")
        if h.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer ailand (format {h['format_version']})")
        em = cls(**h["config"])
        em.load_state_dict(blob["weights"])
        em.meta = h.get("meta", {})
        return em.to(dtype).eval()


DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "emulator" / "lorenz96.pt"


def default(dtype: torch.dtype = torch.float64) -> L96Emulator:
    """The shipped emulator (``data/emulator/lorenz96.pt``; its accuracy is in ``.meta``)."""
    if not DEFAULT_PATH.exists():
        raise ValueError(f"{DEFAULT_PATH} is missing: train it with "
                         "'python -m ailand.lorenz96_emulator --out data/emulator/lorenz96.pt'")
    return L96Emulator.load(DEFAULT_PATH, dtype)


# ---------------------------------------------------------------------- data and training
def attractor_states(n: int, seed: int = 0, Nx: int = NX, F: float = FORCE, dt: float = DT, spinup: int = 500,
                     every: int = 5) -> torch.Tensor:
    """``n`` states on the attractor ``(n, Nx)`` float64: independent random starts spun up for
    ``spinup`` steps, then ``every``-th states of their trajectories (64 runs side by side)."""
    rng = np.random.default_rng(seed)
    runs = min(64, n)
    per = math.ceil(n / runs)
    model = Lorenz96(Nx, F, dt)
    x = model.simulate(rng.standard_normal((runs, Nx)) + F * 0.25, spinup + per * every)
    return x[spinup + every::every][:per].reshape(-1, Nx)[:n]


def training_pairs(n: int, seed: int = 0, Nx: int = NX, F: float = FORCE, dt: float = DT,
                   n_ahead: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` attractor states ``x (n, Nx)`` and their next ``n_ahead`` exact states
    ``(n, n_ahead, Nx)`` (float64), for training (``n_ahead > 1``: a rollout loss)."""
    x = attractor_states(n, seed, Nx, F, dt)
    ys = Lorenz96(Nx, F, dt).simulate(x, n_ahead)[1:]  # (n_ahead, n, Nx)
    return x, ys.transpose(0, 1).contiguous()


def train(n_states: int = 1000, hidden=(64, 64), left: int = 4, right: int = 2, max_iter: int = 1000,
          n_ahead: int = 1, seed: int = 0, activation: str = "tanh", Nx: int = NX, F: float = FORCE, dt: float = DT,
          verbose: bool = False):
    """Fit an :class:`L96Emulator` to exact RK4 steps on the attractor (seeded, float64).

    Loss: the mean squared error of the next ``n_ahead`` states (the emulator rolled out from
    each of the ``n_states`` training states, ``n_states * Nx`` stencil samples), in units of
    ``scale``. Full-batch L-BFGS (strong-Wolfe line search, ``max_iter`` iterations): on this
    small, smooth regression it reaches errors 10-100 times lower than Adam in the same time.
    Weights are initialised with ``torch.manual_seed(seed)``; training states come from ``seed``,
    the validation states of the returned record from ``seed + 1``.

    Returns ``(emulator, record)``: the emulator (float64, eval mode) and a dict with the
    settings, the final training loss, the wall time [s] and :func:`evaluate` on fresh states.
    """
    torch.manual_seed(seed)
    x, ys = training_pairs(n_states, seed, Nx, F, dt, n_ahead)
    inc = ys[:, 0] - x
    em = L96Emulator(left, right, hidden, dt, F, mu=float(x.mean()), sd=float(x.std()),
                     scale=float(inc.pow(2).mean().sqrt()), activation=activation).to(torch.float64)
    s2 = float(em.scale) ** 2
    opt = torch.optim.LBFGS(em.parameters(), lr=1.0, max_iter=int(max_iter), max_eval=int(max_iter * 1.25),
                            history_size=50, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-16)
    n_eval = [0]

    def closure():
        opt.zero_grad()
        z, loss = x, 0.0
        for j in range(n_ahead):
            z = em(z)
            loss = loss + (z - ys[:, j]).pow(2).mean() / s2
        loss = loss / n_ahead
        loss.backward()
        n_eval[0] += 1
        if verbose and n_eval[0] % 100 == 0:
            print(f"evaluation {n_eval[0]:5d}  loss {loss.item():.3e}", flush=True)
        return loss

    t0 = time.perf_counter()
    opt.step(closure)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        z, loss_v = x, 0.0
        for j in range(n_ahead):
            z = em(z)
            loss_v += float((z - ys[:, j]).pow(2).mean() / s2) / n_ahead
    em.eval()
    record = {"n_states": n_states, "hidden": list(em.hidden), "stencil": [em.left, em.right],
              "activation": activation, "max_iter": max_iter, "n_eval": n_eval[0], "n_ahead": n_ahead, "seed": seed,
              "dt": dt, "F": F, "Nx": Nx, "train_loss": loss_v, "train_wall_s": wall,
              "n_weights": sum(p.numel() for p in em.parameters())}
    record.update(evaluate(em, seed=seed + 1, n_starts=64))
    em.meta = record
    return em, record


def evaluate(em: L96Emulator, seed: int = 1, n_starts: int = 64, n_steps: int = 200,
             thresholds=(0.1, 1.0, 1.8)) -> dict:
    """Accuracy of ``em`` against the exact RK4 step, on ``n_starts`` fresh attractor states.

    - ``one_step_rmse``: RMS over states and variables of ``em(x) - rk4(x)``;
      ``one_step_rel``: that over the RMS exact increment ``rk4(x) - x``.
    - ``forecast_rmse``: ``(n_steps + 1,)`` RMSE (over variables, mean over starts) of the
      emulator's free forecast against the exact one from the same start;
    - ``valid_time``: for each threshold (default 0.1, 1 = the observation error of the
      twin, 1.8 = half the climatological standard deviation), the first time [model time units]
      at which ``forecast_rmse`` exceeds it (NaN: never within ``n_steps``).
    """
    Nx = NX
    x0 = attractor_states(n_starts, seed, Nx, em.F, em.dt)
    model = Lorenz96(Nx, em.F, em.dt)
    ex = model.simulate(x0, n_steps)
    with torch.no_grad():
        dtype = next(em.parameters()).dtype
        one = em(x0.to(dtype)).to(torch.float64)
        emu = em.simulate(x0, n_steps).to(torch.float64)
    e1 = one - ex[1]
    rmse = ((emu - ex) ** 2).mean(-1).sqrt().mean(-1).numpy()
    valid = {}
    for th in thresholds:
        above = np.nonzero(rmse > th)[0]
        valid[str(th)] = round(float(above[0] * em.dt), 10) if above.size else float("nan")
    return {"one_step_rmse": float(e1.pow(2).mean().sqrt()),
            "one_step_rel": float(e1.pow(2).mean().sqrt() / (ex[1] - ex[0]).pow(2).mean().sqrt()),
            "forecast_rmse": [float(v) for v in rmse], "valid_time": valid, "eval_seed": seed,
            "eval_starts": n_starts}


def main(argv=None) -> int:
    """Train the shipped default: ``python -m ailand.lorenz96_emulator --out data/emulator/lorenz96.pt``."""
    import argparse

    ap = argparse.ArgumentParser(description="Train the Lorenz-96 step emulator on exact RK4 trajectories.")
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--n-states", type=int, default=1000)
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--left", type=int, default=4)
    ap.add_argument("--right", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--n-ahead", type=int, default=1)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    em, rec = train(a.n_states, tuple(int(h) for h in a.hidden.split(",")), a.left, a.right, a.max_iter, a.n_ahead,
                    a.seed, a.activation, verbose=True)
    rec["command"] = "python -m ailand.lorenz96_emulator " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    em.save(a.out, meta=rec)
    short = {k: v for k, v in rec.items() if k != "forecast_rmse"}
    print(json.dumps(short, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
