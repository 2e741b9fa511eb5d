"""Samplers of the not-ruled-out-yet (NROY) space, in the unit cube ``[0, 1]^d``.

The NROY space is ``{u : feasible(u) and score(u) <= cutoff}`` where ``score(u) (k,)`` is
an implausibility summary (e.g. :meth:`calibration.HistoryMatching.implausibility` in the
unit cube) and ``feasible(u) (k,)`` the parameter space's constraints. The samplers,
after hmer's ``generate_new_design``:

- :func:`rejection`      Latin-hypercube batches, keep what passes (while acceptance is high)
- :func:`cloud`          importance ("cloud") sampling: Gaussian or uniform-ball proposals
                         around known NROY points, scaled to their spread, adapted to the
                         acceptance rate, kept inside the cube by rejection
- :func:`slice_sample`   hit-and-run slice sampling on the NROY indicator (uniform target;
                         random direction, Neal's shrinkage on the chord through the cube)
- :func:`cutoff_ladder`  for a NROY space no pilot point hits: raise the cutoff until some
                         points pass, then tighten it rung by rung, re-growing the sample by
                         cloud sampling at each rung, down to the target cutoff
- :func:`maximin_thin`   greedy farthest-point thinning of a pool to a space-filling design
- :func:`maximin_lhs`    the best (largest minimum distance) of several Latin hypercubes

:func:`sample_nroy` chains them (``method="auto"``: LHS rejection, then cloud sampling from
the points it found or the ``known`` ones, then the ladder when nothing is found) and
thins the pool. Every function takes a numpy ``Generator`` (or a seed), so the same seed
gives the same design.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

Score = Callable[[np.ndarray], np.ndarray]
Feasible = Callable[[np.ndarray], np.ndarray]
METHODS = ("auto", "lhs", "cloud", "slice")


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _feasible(feasible: Feasible | None, U: np.ndarray) -> np.ndarray:
    inside = np.all((U >= 0.0) & (U <= 1.0), axis=1)
    if feasible is not None and inside.any():
        inside[inside] = np.asarray(feasible(U[inside]), dtype=bool)
    return inside


class _Counted:
    """``score`` that counts evaluations and returns ``inf`` for infeasible points."""

    def __init__(self, score: Score, feasible: Feasible | None):
        self.score, self.feasible, self.n = score, feasible, 0

    def __call__(self, U: np.ndarray) -> np.ndarray:
        out = np.full(len(U), np.inf)
        ok = _feasible(self.feasible, U)
        if ok.any():
            out[ok] = np.asarray(self.score(U[ok]), dtype=float).reshape(-1)
            self.n += int(ok.sum())
        return np.where(np.isnan(out), np.inf, out)


# ------------------------------------------------------------------ designs
def lhs(n: int, d: int, seed=None) -> np.ndarray:
    """A Latin hypercube ``(n, d)`` in the unit cube."""
    from scipy.stats import qmc

    return qmc.LatinHypercube(d, seed=_rng(seed)).random(n)


def min_distance(U: np.ndarray) -> float:
    """Smallest pairwise Euclidean distance of the rows of ``U`` (inf for < 2 rows)."""
    if len(U) < 2:
        return np.inf
    from scipy.spatial.distance import pdist

    return float(pdist(U).min())


def maximin_lhs(n: int, d: int, seed=None, feasible: Feasible | None = None, n_tries: int = 10) -> np.ndarray:
    """The Latin hypercube ``(n, d)`` with the largest minimum distance out of ``n_tries``.

    With ``feasible``, infeasible rows are dropped and replaced by feasible rows of
    further hypercubes (the design is then only approximately Latin in the feasible region).
    """
    rng = _rng(seed)
    best, best_dist = None, -1.0
    for _ in range(max(1, int(n_tries))):
        U = lhs(n, d, rng)
        if feasible is not None:
            kept = [U[_feasible(feasible, U)]]
            total = len(kept[0])
            for _ in range(200):
                if total >= n:
                    break
                V = lhs(n, d, rng)
                kept.append(V[_feasible(feasible, V)])
                total += len(kept[-1])
            else:
                raise RuntimeError("maximin_lhs: could not find enough points that satisfy the constraints")
            U = np.concatenate(kept)[:n]
        dist = min_distance(U)
        if dist > best_dist:
            best, best_dist = U, dist
    return best


def maximin_thin(U: np.ndarray, n: int, seed=None, existing: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``n`` rows of the pool ``U (N, d)`` chosen greedily to be far apart.

    Farthest-point (maximin) selection: start from a seeded random row (or, with
    ``existing`` points, from the row farthest from them), then repeatedly add the row
    whose distance to the chosen rows (and to ``existing``) is largest. ``O(N n d)``.
    """
    U = np.asarray(U, dtype=float)
    N = len(U)
    if n >= N:
        return np.arange(N)
    rng = _rng(seed)
    dmin = np.full(N, np.inf)
    if existing is not None and len(existing):
        E = np.asarray(existing, dtype=float)
        for a in range(0, len(E), 256):
            dd = ((U[:, None, :] - E[None, a:a + 256, :]) ** 2).sum(-1).min(1)
            dmin = np.minimum(dmin, dd)
        first = int(np.argmax(dmin))
    else:
        first = int(rng.integers(N))
    chosen = [first]
    dmin = np.minimum(dmin, ((U - U[first]) ** 2).sum(1))
    dmin[first] = -1.0
    for _ in range(n - 1):
        j = int(np.argmax(dmin))
        chosen.append(j)
        dmin = np.minimum(dmin, ((U - U[j]) ** 2).sum(1))
        dmin[j] = -1.0
    return np.asarray(chosen)


# ----------------------------------------------------------------- samplers
def rejection(n: int, d: int, score: Score, cutoff: float, seed=None, feasible: Feasible | None = None,
              batch: int = 10000, max_draws: int = 100000):
    """Latin-hypercube batches of ``batch`` points until ``n`` pass or ``max_draws`` are drawn.

    Returns ``(U_pass, score_pass, U_all, score_all)``: the points that passed (``score <=
    cutoff``, feasible) and every point drawn with its score (``inf`` when infeasible).
    """
    rng = _rng(seed)
    sc = score if isinstance(score, _Counted) else _Counted(score, feasible)
    allU, allS, n_pass = [], [], 0
    drawn = 0
    while drawn < max_draws and n_pass < n:
        k = int(min(batch, max_draws - drawn))
        U = lhs(k, d, rng)
        S = sc(U)
        allU.append(U)
        allS.append(S)
        n_pass += int((S <= cutoff).sum())
        drawn += k
    U, S = np.concatenate(allU), np.concatenate(allS)
    ok = S <= cutoff
    return U[ok], S[ok], U, S


def _spread(P: np.ndarray, floor: float = 0.01, single: float = 0.05) -> np.ndarray:
    """Per-dimension standard deviation of the points ``P``, floored (``single`` for one point)."""
    if len(P) < 2:
        return np.full(P.shape[1], single)
    return np.maximum(P.std(axis=0), floor)


def _propose(centres: np.ndarray, k: int, sd: np.ndarray, proposal: str, rng) -> np.ndarray:
    """``k`` proposals inside the unit cube around random ``centres`` (redrawing those outside)."""
    d = centres.shape[1]
    out = np.empty((0, d))
    for _ in range(100):
        need = k - len(out)
        if need <= 0:
            break
        c = centres[rng.integers(len(centres), size=2 * need)]
        if proposal == "gaussian":
            step = rng.standard_normal((2 * need, d))
        elif proposal == "ball":  # uniform in the unit ball, then scaled per dimension
            g = rng.standard_normal((2 * need, d))
            g /= np.linalg.norm(g, axis=1, keepdims=True)
            step = g * rng.random((2 * need, 1)) ** (1.0 / d) * np.sqrt(d + 2.0)  # unit variance per dimension
        else:
            raise ValueError(f"proposal must be 'gaussian' or 'ball', got {proposal!r}")
        V = c + step * sd
        V = V[np.all((V >= 0.0) & (V <= 1.0), axis=1)]
        out = np.concatenate([out, V[:need]])
    return out


def cloud(n: int, centres: np.ndarray, score: Score, cutoff: float, seed=None, feasible: Feasible | None = None,
          proposal: str = "gaussian", scale: float = 1.0, batch: int | None = None, max_rounds: int = 50,
          max_evaluations: int = 200000):
    """Importance ("cloud") sampling: grow a pool of NROY points from ``centres``.

    Each round proposes ``batch`` points, each around a random member of the current
    pool, with a Gaussian (or uniform-ball) step whose per-dimension std is ``scale``
    times the pool's spread; points outside the cube are redrawn, infeasible or
    implausible ones rejected. ``scale`` shrinks (x0.7) when fewer than 10 % pass and
    grows (x1.3, at most 2) when more than 50 % pass. Stops when the pool has ``n``
    points (the centres included) or after ``max_rounds`` rounds / ``max_evaluations``.

    Returns ``(U, S)``: the pool ``(N, d)`` (``N`` may exceed ``n``) and its scores.
    """
    rng = _rng(seed)
    sc = score if isinstance(score, _Counted) else _Counted(score, feasible)
    P = np.asarray(centres, dtype=float).reshape(-1, np.shape(centres)[-1])
    S0 = sc(P)
    keep = S0 <= cutoff
    P, S = P[keep], S0[keep]
    if len(P) == 0:
        raise ValueError("cloud: none of the centres is NROY (feasible and score <= cutoff)")
    batch = int(batch or max(500, 2 * n))
    start = sc.n
    for _ in range(max_rounds):
        if len(P) >= n or sc.n - start >= max_evaluations:
            break
        V = _propose(P, batch, scale * _spread(P), proposal, rng)
        SV = sc(V)
        ok = SV <= cutoff
        P, S = np.concatenate([P, V[ok]]), np.concatenate([S, SV[ok]])
        rate = ok.mean() if len(V) else 0.0
        if rate < 0.1:
            scale *= 0.7
        elif rate > 0.5:
            scale = min(2.0, scale * 1.3)
    return P, S


def slice_sample(n: int, starts: np.ndarray, score: Score, cutoff: float, seed=None,
                 feasible: Feasible | None = None, n_chains: int = 64, thin: int = 1, max_shrink: int = 40):
    """Hit-and-run slice sampling of the uniform distribution on the NROY indicator.

    ``n_chains`` chains start at NROY rows of ``starts`` (reused round-robin when there are
    fewer). A step draws a random direction, takes the chord of the unit cube through
    the current point along it, and samples the chord uniformly, shrinking it towards the
    current point after each rejection (Neal 2003, the shrinkage procedure); the chains
    move together, one vectorised score call per shrink. Every ``thin``-th state of every
    chain is kept until ``n`` samples are collected. Returns ``(U, S)``.
    """
    rng = _rng(seed)
    sc = score if isinstance(score, _Counted) else _Counted(score, feasible)
    P = np.asarray(starts, dtype=float)
    S0 = sc(P)
    P, S0 = P[S0 <= cutoff], S0[S0 <= cutoff]
    if len(P) == 0:
        raise ValueError("slice_sample: none of the starts is NROY (feasible and score <= cutoff)")
    K = int(n_chains)
    idx = rng.permutation(len(P))[:K] if len(P) >= K else np.resize(rng.permutation(len(P)), K)
    X, SX = P[idx].copy(), S0[idx].copy()
    d = X.shape[1]
    samples, scores = [], []
    step = 0
    while sum(len(s) for s in samples) < n:
        v = rng.standard_normal((K, d))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = -X / v, (1.0 - X) / v
        lo = np.nanmax(np.where(v != 0, np.minimum(t0, t1), -np.inf), axis=1)
        hi = np.nanmin(np.where(v != 0, np.maximum(t0, t1), np.inf), axis=1)
        active = np.ones(K, dtype=bool)
        for _ in range(max_shrink):
            a = np.flatnonzero(active)
            if len(a) == 0:
                break
            t = lo[a] + (hi[a] - lo[a]) * rng.random(len(a))
            Y = np.clip(X[a] + t[:, None] * v[a], 0.0, 1.0)
            SY = sc(Y)
            ok = SY <= cutoff
            X[a[ok]], SX[a[ok]] = Y[ok], SY[ok]
            active[a[ok]] = False
            bad = a[~ok]
            tb = t[~ok]
            lo[bad] = np.where(tb < 0, tb, lo[bad])
            hi[bad] = np.where(tb >= 0, tb, hi[bad])
        step += 1
        if step % max(1, int(thin)) == 0:
            samples.append(X.copy())
            scores.append(SX.copy())
    return np.concatenate(samples), np.concatenate(scores)


def cutoff_ladder(n: int, U: np.ndarray, S: np.ndarray, score: Score, cutoff: float, seed=None,
                  feasible: Feasible | None = None, n_start: int = 10, keep: float = 0.25, max_rungs: int = 40,
                  proposal: str = "gaussian", max_evaluations: int = 500000):
    """hmer's cutoff ladder: when too few points pass ``cutoff``, start higher and tighten.

    From scored points ``(U, S)`` (e.g. a rejection pilot), the first rung is the cutoff
    that ``n_start`` of them pass; at each rung the pool is re-grown to ``n`` points by
    :func:`cloud` sampling at that rung, and the next rung is the ``keep``-quantile of the
    pool's scores (never below ``cutoff``). Returns ``(U, S, rungs)``; the last rung is
    ``cutoff`` unless ``max_rungs`` ran out (then the pool is at ``rungs[-1] > cutoff``).
    """
    rng = _rng(seed)
    sc = score if isinstance(score, _Counted) else _Counted(score, feasible)
    finite = np.isfinite(S)
    if not finite.any():
        raise ValueError("cutoff_ladder: no feasible scored point to start from")
    U, S = U[finite], S[finite]
    k = min(int(n_start), len(S))
    level = max(float(cutoff), float(np.partition(S, k - 1)[k - 1]))
    rungs = [level]
    start = sc.n
    while True:
        keep_mask = S <= level
        U, S = cloud(n, U[keep_mask], sc, level, rng, proposal=proposal,
                     max_evaluations=max(1, max_evaluations - (sc.n - start)))
        if level <= cutoff or len(rungs) >= max_rungs or sc.n - start >= max_evaluations:
            break
        nxt = max(float(cutoff), float(np.quantile(S, keep)))
        if nxt >= level:  # the pool is flat in score: jump to the cutoff if any pass, else stay
            nxt = float(cutoff) if np.any(S <= cutoff) else float(np.min(S[S > np.min(S)], initial=level))
            if nxt >= level:
                break
        level = nxt
        rungs.append(level)
    log.info("cutoff ladder: rungs %s", ", ".join(f"{r:.3g}" for r in rungs))
    return U, S, rungs


# ------------------------------------------------------------------ driver
@dataclass
class NROYDesign:
    """A design in the NROY space: ``u (n, d)`` in the unit cube and how it was found.

    ``method``: the samplers used, e.g. ``"lhs"``, ``"lhs+cloud"``, ``"ladder+cloud"``,
    ``"lhs+slice"``, ``"lhs+known"`` (the pilot plus the ``known`` NROY points sufficed); ``acceptance``: fraction of the LHS pilot that was NROY (a rough
    NROY fraction); ``n_evaluated``: score evaluations; ``cutoff``: the cutoff the design
    satisfies (the target, unless the ladder stopped above it); ``rungs``: ladder cutoffs.
    """

    u: np.ndarray
    score: np.ndarray
    method: str
    acceptance: float
    n_evaluated: int
    cutoff: float
    rungs: list = field(default_factory=list)


def sample_nroy(n: int, d: int, score: Score, cutoff: float, seed=None, feasible: Feasible | None = None,
                known: np.ndarray | None = None, method: str = "auto", oversample: int = 4,
                n_pilot: int | None = None, min_acceptance: float = 0.2, proposal: str = "gaussian",
                existing: np.ndarray | None = None, max_evaluations: int = 1_000_000) -> NROYDesign:
    """``n`` space-filling NROY points in the unit cube.

    Parameters
    ----------
    n, d : design size and dimension.
    score : ``U (k, d) -> (k,)`` implausibility summary; NROY is ``score <= cutoff``.
    feasible : ``U (k, d) -> (k,)`` bool (the parameter space's constraints), optional.
    known : NROY points already known (e.g. earlier runs), used as cloud/slice seeds.
    method : ``"auto"`` (LHS rejection while the pilot acceptance is >= ``min_acceptance``,
        else cloud sampling from the pilot's NROY points and ``known``, else the cutoff
        ladder), ``"lhs"`` (rejection only), ``"cloud"``, ``"slice"``.
    oversample : the pool has ``oversample * n`` NROY points before maximin thinning.
    n_pilot : LHS pilot size (default ``max(2000, 5 * oversample * n)``).
    existing : points already run; thinning keeps away from them.

    Raises ``RuntimeError`` when fewer than ``n`` NROY points are found within
    ``max_evaluations`` score evaluations (the NROY space may be empty).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    rng = _rng(seed)
    sc = _Counted(score, feasible)
    N = max(int(n), int(oversample) * int(n))
    n_pilot = int(n_pilot or max(2000, 5 * N))
    Up, Sp, Ua, Sa = rejection(N, d, sc, cutoff, rng, batch=n_pilot, max_draws=n_pilot)
    acceptance = len(Up) / len(Ua)
    used, rungs = ["lhs"], []
    if (method == "auto" and acceptance >= min_acceptance) or method == "lhs":
        more = int(min(max_evaluations, np.ceil(1.5 * (N - len(Up)) / max(acceptance, 1e-3))))
        if more > 0 and len(Up) < N:
            U2, S2, _, _ = rejection(N - len(Up), d, sc, cutoff, rng, batch=max(1000, more // 4), max_draws=more)
            Up, Sp = np.concatenate([Up, U2]), np.concatenate([Sp, S2])
    pool, pool_s = Up, Sp
    if method in ("cloud", "slice") or (method == "auto" and len(pool) < N):
        seeds = pool
        if known is not None and len(known):
            K = np.asarray(known, dtype=float)
            SK = sc(K)
            seeds = np.concatenate([seeds, K[SK <= cutoff]])
        if len(seeds) == 0:  # nothing found: start the cutoff ladder from the pilot's best points
            pool, pool_s, rungs = cutoff_ladder(N, Ua, Sa, sc, cutoff, rng, proposal=proposal,
                                                max_evaluations=max(1, max_evaluations - sc.n))
            used = ["ladder"]
            if rungs[-1] > cutoff:
                pool, pool_s = pool[pool_s <= cutoff], pool_s[pool_s <= cutoff]
            seeds = pool
        if len(seeds) and method == "slice":
            pool, pool_s = slice_sample(N, seeds, sc, cutoff, rng)
            used.append("slice")
        elif len(seeds) and (method == "cloud" or len(seeds) < N):
            if method == "cloud" and len(seeds) > N // 4:  # grow from a few seeds, so the cloud does the work
                seeds = seeds[rng.choice(len(seeds), max(1, N // 4), replace=False)]
            pool, pool_s = cloud(N, seeds, sc, cutoff, rng, proposal=proposal,
                                 max_evaluations=max(1, max_evaluations - sc.n))
            used.append("cloud")
        elif len(seeds):  # enough NROY points known already (e.g. uniform Monte-Carlo points)
            pool, pool_s = seeds, sc(seeds)
            used.append("known")
    ok = pool_s <= cutoff
    pool, pool_s = pool[ok], pool_s[ok]
    if len(pool) < n:
        raise RuntimeError(
            f"sample_nroy: found only {len(pool)} NROY point(s) for a design of {n} after {sc.n} evaluations "
            f"(LHS acceptance {acceptance:.3g}); the NROY space may be empty or tiny at cutoff {cutoff:g}: "
            "raise the cutoff, add model discrepancy, or check the observations")
    idx = maximin_thin(pool, n, rng, existing=existing)
    return NROYDesign(u=pool[idx], score=pool_s[idx], method="+".join(used), acceptance=acceptance,
                      n_evaluated=sc.n, cutoff=float(cutoff), rungs=rungs)
