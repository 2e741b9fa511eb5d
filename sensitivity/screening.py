"""Screening: from a Morris or Sobol result to the subset of parameters worth calibrating.

A result holds an index per parameter *and per output* (time, variable, site ...).
:func:`screen` turns it into one score per parameter in two steps, then applies a rule:

1. **normalise** (Morris only, on by default): divide ``mu_star`` by its largest value
   over the parameters for each output, so every output counts equally whatever its
   units (W m-2 for ``Qle``, m3 m-3 for ``swvl1``); the score of a parameter is "its
   importance relative to the most important parameter of that output". Sobol indices
   are already fractions of variance and are left as they are.
2. **reduce** over the outputs: ``"max"`` (important for *some* output; the default,
   what screening wants) or ``"mean"`` (important on average).
3. **rule**: ``keep=k`` keeps the ``k`` highest scores; ``threshold=t`` keeps every
   score ``>= t``; both: the scores ``>= t``, at most ``k`` of them.

The :class:`Screening` it returns carries the kept ``ParameterSpace`` (``.space``, in
the original parameter order), the full ranking (``.ranking``, a DataFrame best first)
and one sentence per parameter saying why it was kept or dropped (``.reasons``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ailand import ParameterSpace

from ._common import space_from_result
from .outputs import _fmt

MORRIS_INDICES = ("mu_star", "mu", "sigma")
SOBOL_INDICES = ("ST", "S1")


@dataclass(frozen=True)
class Screening:
    """Outcome of :func:`screen`.

    Attributes
    ----------
    space : ParameterSpace of the kept parameters, in the order of the analysed space.
    ranking : DataFrame indexed by ``parameter``, best first, with columns ``rank``,
        ``score`` (what the rule was applied to), ``mean_score`` (or ``max_score`` when
        ``reduce="mean"``: the other reduction, which breaks ties), ``peak`` / ``peak_conf`` / ``peak_at``
        (largest index, its CI half-width and the output where it occurs), ``kept``
        (bool) and ``reason`` (one sentence).
    by, reduce, normalize : how the scores were made; ``rule``: the rule in words.
    full_space : the analysed ParameterSpace.
    """

    space: ParameterSpace
    ranking: pd.DataFrame
    by: str
    reduce: str
    normalize: bool
    rule: str
    full_space: ParameterSpace

    @property
    def kept(self) -> list[str]:
        """Kept parameter names, in the analysed space's order."""
        return self.space.names

    @property
    def dropped(self) -> list[str]:
        return [n for n in self.full_space.names if n not in self.space.names]

    @property
    def reasons(self) -> dict[str, str]:
        """``{parameter: sentence}`` for every analysed parameter, best first."""
        return dict(self.ranking["reason"])

    def to_xarray(self) -> xr.Dataset:
        """The ranking as a Dataset over ``parameter``, best first (saves to NetCDF; merges with the result)."""
        df = self.ranking.copy()
        df["kept"] = df["kept"].astype(int)
        ds = xr.Dataset.from_dataframe(df)
        ds.attrs = {"by": self.by, "reduce": self.reduce, "normalize": int(self.normalize), "rule": self.rule}
        what = f"{'normalised ' if self.normalize else ''}{self.by}"
        other = "mean" if self.reduce == "max" else "max"
        meta = {
            "rank": ("screening rank (1 = most important)", "1"),
            "score": (f"screening score ({self.reduce} of {what} over outputs)", "1"),
            f"{other}_score": (f"{other} of {what} over outputs", "1"),
            "peak": (f"largest {what} over outputs", "1" if self.normalize else "see the analysed index"),
            "peak_conf": (f"confidence half-width of the largest {what}", "1" if self.normalize else "see the analysed index"),
            "peak_at": ("output where the largest index occurs", "1"),
            "kept": (f"kept by the screening rule ({self.rule}): 1 kept, 0 dropped", "1"),
            "reason": ("why the parameter was kept or dropped", "1"),
        }
        for name, (long_name, units) in meta.items():
            if name in ds:
                ds[name].attrs = {"long_name": long_name, "units": units}
        return ds

    def to_csv(self, path) -> pd.DataFrame:
        """Write the kept parameters as a parameter table with their ``rank, score, reason``.

        The columns are those of ``data/parameters.csv`` (``name, default, min, max, unit,
        group, scale, must_be_below, definition``) plus the ranking, so
        ``ailand.ParameterSpace.default(path)`` reads the screened space back (constraints
        included; the extra columns are ignored) with ``.names == self.kept`` (the analysed
        space's order). Returns the table written.
        """
        kept = self.kept
        table = self.space.table.loc[kept].copy()
        below = dict(self.space.constraints)
        table.insert(table.columns.get_loc("scale") + 1, "must_be_below", [below.get(n, "") for n in kept])
        for col in ("rank", "score", "reason"):
            table[col] = self.ranking.loc[kept, col].values
        table.index.name = "name"
        table.to_csv(path)
        return table

    def __repr__(self) -> str:
        head = (
            f"Screening: kept {len(self.kept)} of {len(self.full_space)} parameters by {self.rule} "
            f"({self.reduce} of {'normalised ' if self.normalize else ''}{self.by} over outputs)"
        )
        other = "mean_score" if "mean_score" in self.ranking else "max_score"
        body = self.ranking[["rank", "score", other, "peak", "peak_at", "kept"]].to_string()
        return f"{head}\n{body}"


def screen(
    result: xr.Dataset,
    keep: int | None = None,
    threshold: float | None = None,
    by: str | None = None,
    reduce: str = "max",
    normalize: bool | None = None,
    sel: dict | None = None,
    space: ParameterSpace | None = None,
) -> Screening:
    """Rank the parameters of a Morris or Sobol result and keep the important ones.

    Parameters
    ----------
    result : Dataset from :func:`~sensitivity.morris_analyze` / :func:`~sensitivity.sobol_analyze`,
        indices of dims ``(parameter, *output_dims)``.
    keep : keep the ``keep`` highest-scoring parameters.
    threshold : keep parameters whose score is ``>= threshold`` (for normalised Morris
        scores a fraction of each output's top ``mu_star``, e.g. 0.1; for Sobol a fraction
        of variance, e.g. 0.01 on ``ST``). At least one of ``keep``/``threshold``.
    by : index to rank on: ``"mu_star"`` (Morris default), ``"mu"`` (absolute value
        used), ``"sigma"``, ``"ST"`` (Sobol default) or ``"S1"``.
    reduce : ``"max"`` or ``"mean"`` over all output dims.
    normalize : divide by the largest value over parameters per output before reducing;
        default True for Morris indices, False for Sobol.
    sel : restrict to some outputs first, e.g. ``{"variable": ["Qle", "Qh"]}`` (``.sel``).
    space : the analysed ParameterSpace; default: rebuilt from the result's
        ``parameter_*`` coordinates (bounds, defaults, units, scales, constraints).

    Returns
    -------
    :class:`Screening` with ``.space`` (the kept subset), ``.ranking`` and ``.reasons``.
    """
    if not isinstance(result, xr.Dataset) or "parameter" not in result.dims:
        raise TypeError("result must be a Dataset from morris_analyze/sobol_analyze with a 'parameter' dim")
    if keep is None and threshold is None:
        raise ValueError("give keep=k (the k most important) and/or threshold=t (score >= t)")
    by = by or _default_index(result)
    if by not in result:
        raise ValueError(f"result has no index {by!r}; it has {list(result.data_vars)}")
    if by not in MORRIS_INDICES + SOBOL_INDICES:
        raise ValueError(f"by must be one of {MORRIS_INDICES + SOBOL_INDICES}, got {by!r}")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    full = space if space is not None else space_from_result(result)
    names = [str(v) for v in result["parameter"].values]
    if sorted(names) != sorted(full.names):
        raise ValueError(f"result parameters {names} do not match the space {full.names}")
    d = len(names)
    if keep is not None and (int(keep) != keep or not 1 <= keep <= d):
        raise ValueError(f"keep must be an integer in 1..{d}, got {keep}")
    if normalize is None:
        normalize = by in MORRIS_INDICES

    values = result[by]
    conf = result.get(f"{by}_conf")
    if sel:
        values = values.sel(sel)
        conf = conf.sel(sel) if conf is not None else None
    if by == "mu":
        values = abs(values)
    out_dims = [dm for dm in values.dims if dm != "parameter"]
    values = values.transpose("parameter", *out_dims)
    v = values.values.reshape(d, -1)
    c = conf.transpose("parameter", *out_dims).values.reshape(d, -1) if conf is not None else np.full_like(v, np.nan)
    n_out = v.shape[1]
    if normalize:
        top = np.nanmax(np.where(np.isnan(v), -np.inf, v), axis=0)
        scale = np.where(top > 0, top, np.inf)
        v, c = v / scale, c / scale
    finite = np.isfinite(v)
    with np.errstate(all="ignore"):
        if reduce == "max":
            score = np.where(finite.any(axis=1), np.nanmax(np.where(finite, v, -np.inf), axis=1), np.nan)
        else:
            score = np.where(finite.any(axis=1), np.nanmean(np.where(finite, v, np.nan), axis=1), np.nan)
    peak_idx = np.argmax(np.where(finite, v, -np.inf), axis=1)
    peak = v[np.arange(d), peak_idx]
    peak_conf = c[np.arange(d), peak_idx]
    label_of = _labels(values, out_dims)
    peak_at = [label_of(i) for i in peak_idx]

    with np.errstate(all="ignore"):
        other = np.nanmean(np.where(finite, v, np.nan), axis=1) if reduce == "max" else np.nanmax(
            np.where(finite, v, -np.inf), axis=1
        )
    # best first; ties on the score are broken by the other reduction, then by space order
    order = np.lexsort((np.arange(d), -np.nan_to_num(other, nan=-np.inf), -np.where(np.isnan(score), -np.inf, score)))
    rank = np.empty(d, dtype=int)
    rank[order] = np.arange(1, d + 1)
    ok = ~np.isnan(score)
    passes = ok & (score >= threshold) if threshold is not None else ok.copy()
    kept = passes.copy()
    if keep is not None:
        kept &= rank <= _kth_rank(rank, passes, int(keep))
    if not kept.any():
        best = names[order[0]]
        raise ValueError(
            f"no parameter has a {by} score >= {threshold}; the highest is {best} with {score[order[0]]:.3g}. "
            "Lower the threshold or use keep=k"
        )
    if threshold is not None and keep is not None:
        rule = f"score >= {threshold:g}, at most {int(keep)}"
    elif threshold is not None:
        rule = f"score >= {threshold:g}"
    else:
        rule = f"the {int(keep)} highest scores"

    what = f"{'normalised ' if normalize else ''}{by}"
    over = f"{reduce} over {n_out} output{'s' if n_out != 1 else ''}" + (f" ({', '.join(out_dims)})" if out_dims else "")
    kth_score = score[order[int(keep) - 1]] if keep is not None else None
    reasons = []
    for i, name in enumerate(names):
        if not ok[i]:
            reasons.append(f"{name}: no finite {by} for any output; dropped")
            continue
        pk = f"peak {peak[i]:.3g}" + (f" +- {peak_conf[i]:.2g}" if np.isfinite(peak_conf[i]) else "")
        alt = f"{'mean' if reduce == 'max' else 'max'} {other[i]:.3g}"
        head = f"{name}: rank {rank[i]}/{d}, {what} {over} = {score[i]:.3g} ({alt}; {pk} at {peak_at[i]})"
        if kept[i]:
            why = []
            if threshold is not None:
                why.append(f">= threshold {threshold:g}")
            if keep is not None:
                why.append(f"within the top {int(keep)}")
            reasons.append(f"{head}; kept: {' and '.join(why)}")
        elif threshold is not None and not passes[i]:
            reasons.append(f"{head}; dropped: below threshold {threshold:g}")
        else:
            reasons.append(f"{head}; dropped: not in the top {int(keep)} (score of rank {int(keep)}: {kth_score:.3g})")

    ranking = pd.DataFrame(
        {
            "rank": rank,
            "score": score,
            "max_score" if reduce == "mean" else "mean_score": other,
            "peak": peak,
            "peak_conf": peak_conf,
            "peak_at": peak_at,
            "kept": kept,
            "reason": reasons,
        },
        index=pd.Index(names, name="parameter"),
    ).iloc[order]
    kept_names = [nm for nm in full.names if bool(ranking.loc[nm, "kept"])]
    return Screening(
        space=full.subset(kept_names),
        ranking=ranking,
        by=by,
        reduce=reduce,
        normalize=bool(normalize),
        rule=rule,
        full_space=full,
    )


def _kth_rank(rank: np.ndarray, passes: np.ndarray, k: int) -> int:
    """Largest rank allowed so that at most ``k`` passing parameters are kept."""
    passing_ranks = np.sort(rank[passes])
    return int(passing_ranks[k - 1]) if len(passing_ranks) >= k else int(rank.max())


def _default_index(result: xr.Dataset) -> str:
    method = result.attrs.get("method")
    if method == "morris" or ("mu_star" in result and method != "sobol"):
        return "mu_star"
    if "ST" in result:
        return "ST"
    raise ValueError("cannot tell the index to rank by; pass by=")


def _labels(values: xr.DataArray, out_dims):
    shape = [values.sizes[dm] for dm in out_dims]

    def label(i: int) -> str:
        if not out_dims:
            return "the output"
        idx = np.unravel_index(int(i), shape)
        parts = []
        for dm, k in zip(out_dims, idx):
            val = values[dm].values[k] if dm in values.coords else k
            parts.append(f"{dm}={_fmt(val)}")
        return ", ".join(parts)

    return label
