"""Grouping strategies: which sites share one operational parameter set.

A :class:`Grouping` assigns every site of a network to one group (``labels (S,)``); a
strategy makes one from the network's static fields and, for the learnt clusters, from
the seed's predictors (Raoult, ML4LM 2025): vegetation type and high and low vegetation cover, soil texture,
the Koppen-Geiger main group and the prior model's RMSE of daily latent and sensible heat.

Strategies (:data:`STRATEGIES`):

* ``global``: one group;
* ``vegetation``: by ``veg_type`` (types with fewer than ``min_group_size`` sites merge into
  ``other_high`` / ``other_low`` vegetation);
* ``soil``: by ``soil_type`` (ecLand texture classes; small ones merge into ``other``);
* ``koppen``: by Koppen-Geiger class; classes with fewer than ``min_group_size`` sites fall
  back to their main group (first letter), and still-small main groups to ``"other"``;
* ``kmeans`` / ``hierarchical``: k-means (scikit-learn, 10 seeded inits) or Ward
  agglomerative clustering of the standardised predictors; the number of clusters ``k`` is
  the one with the highest mean silhouette score over ``k_range`` (ties: the smaller k);
* ``per_site``: every site its own group (the upper bound).

:func:`cluster_importance` explains learnt clusters: a random forest predicts the cluster
from the predictors, and the importance of a predictor for cluster ``c`` is the drop in the
forest's recall of ``c`` when that predictor's columns are permuted together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["STRATEGIES", "Grouping", "group_sites", "cluster_predictors", "choose_k", "cluster_importance",
           "split_sites", "calibration_sites"]

STRATEGIES = ("global", "vegetation", "soil", "koppen", "kmeans", "hierarchical", "per_site")
PREDICTOR_GROUPS = ("veg_high", "veg_low", "soil_sand", "soil_clay", "veg_type", "koppen", "rmse_qle", "rmse_qh")


@dataclass
class Grouping:
    """Sites -> groups for one strategy.

    strategy : its name; labels : ``(S,)`` group name of each site (str); sites : ``(S,)``
    site names; info : how it was made (e.g. ``k``, the silhouette score per k).
    """

    strategy: str
    labels: np.ndarray
    sites: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        """Group names, in first-appearance order."""
        return list(pd.unique(pd.Series(self.labels)))

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def codes(self) -> np.ndarray:
        """``(S,)`` integer group index into :attr:`groups`."""
        return np.array([self.groups.index(g) for g in self.labels])

    def sizes(self) -> pd.Series:
        return pd.Series(self.labels).value_counts().reindex(self.groups)

    def to_dataarray(self) -> xr.DataArray:
        return xr.DataArray(np.asarray(self.labels, dtype=str), dims="site", coords={"site": self.sites},
                            name=f"group_{self.strategy}", attrs={"long_name": f"group of each site ({self.strategy})"})


def cluster_predictors(network: xr.Dataset, rmse: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The seed's cluster predictors, standardised.

    network : a site network (:func:`ailand.network.site_network`): ``cveg``, ``veg_class``,
        ``sand``, ``clay``, ``koppen_group``.
    rmse : optional DataFrame indexed by site with columns ``Qle`` and ``Qh`` [W m-2], the
        prior model's RMSE of daily means against the observations (left out when None).

    Returns ``(X, groups)``: X a DataFrame ``(site, column)`` of standardised columns
    (``veg_high``, ``veg_low`` cover fractions; ``soil_sand``, ``soil_clay``; one 0/1 column per
    vegetation type and per Koppen main group, scaled by ``1/sqrt(2)`` so a change of class
    counts like one standard deviation; ``rmse_qle``, ``rmse_qh``), and ``groups``: predictor
    name -> its columns (the one-hot columns of the vegetation type, and of the Koppen group,
    form one predictor each).
    """
    S = network.sizes["site"]
    high = np.asarray(network["veg_class"].values) == "high"
    cveg = np.asarray(network["cveg"].values, dtype=float)
    cols = {"veg_high": np.where(high, cveg, 0.0), "veg_low": np.where(high, 0.0, cveg),
            "soil_sand": network["sand"].values.astype(float), "soil_clay": network["clay"].values.astype(float)}
    groups = {k: [k] for k in cols}
    vt = np.asarray(network["veg_type"].values, dtype=str)
    present_v = list(pd.unique(pd.Series(vt)))
    for v in present_v:
        cols[f"vegtype_{v}"] = (vt == v).astype(float)
    groups["veg_type"] = [f"vegtype_{v}" for v in present_v]
    kg = np.asarray(network["koppen_group"].values, dtype=str)
    present = [g for g in ("A", "B", "C", "D", "E") if (kg == g).any()]
    for g in present:
        cols[f"koppen_{g}"] = (kg == g).astype(float)
    groups["koppen"] = [f"koppen_{g}" for g in present]
    if rmse is not None:
        r = rmse.reindex(network["site"].values)
        if r[["Qle", "Qh"]].isna().any().any():
            raise ValueError("cluster_predictors: rmse lacks Qle/Qh values for some sites")
        cols["rmse_qle"], cols["rmse_qh"] = r["Qle"].to_numpy(float), r["Qh"].to_numpy(float)
        groups["rmse_qle"], groups["rmse_qh"] = ["rmse_qle"], ["rmse_qh"]
    X = pd.DataFrame(cols, index=pd.Index(network["site"].values, name="site"))
    for c in X.columns:
        if c.startswith(("koppen_", "vegtype_")):
            X[c] = X[c] / np.sqrt(2.0)
        else:
            sd = X[c].std(ddof=0)
            X[c] = (X[c] - X[c].mean()) / (sd if sd > 0 else 1.0)
    if not np.isfinite(X.to_numpy()).all() or len(X) != S:
        raise ValueError("cluster_predictors: a predictor is NaN/inf; check the network (ailand.network.check_network)")
    return X, groups


def _cluster(X: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    if method == "hierarchical":
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)
    raise ValueError(f"unknown clustering method {method!r}; use 'kmeans' or 'hierarchical'")


def choose_k(X, method: str = "kmeans", k_range=range(2, 11), seed: int = 0) -> tuple[int, dict]:
    """Number of clusters by the silhouette criterion: the ``k`` in ``k_range`` with the highest
    mean silhouette score (Rousseeuw 1987; ties go to the smaller k). Returns ``(k, {k: score})``."""
    from sklearn.metrics import silhouette_score

    X = np.asarray(X, dtype=float)
    ks = [int(k) for k in k_range if 2 <= int(k) < len(X)]
    if not ks:
        raise ValueError(f"choose_k: no k in {list(k_range)} fits {len(X)} sites (need 2 <= k < n_sites)")
    scores = {}
    for k in ks:
        lab = _cluster(X, method, k, seed)
        scores[k] = float(silhouette_score(X, lab)) if len(set(lab)) > 1 else -1.0
    best = max(scores.values())
    return min(k for k, s in scores.items() if s >= best - 1e-12), scores


def group_sites(network: xr.Dataset, strategy: str, predictors: pd.DataFrame | None = None, k: int | None = None,
                k_range=range(2, 11), min_group_size: int = 3, seed: int = 0) -> Grouping:
    """Assign every site of ``network`` to a group by ``strategy`` (one of :data:`STRATEGIES`).

    predictors : for ``kmeans``/``hierarchical``, the standardised predictor table from
        :func:`cluster_predictors` (default: without the RMSE columns).
    k : number of clusters (default: :func:`choose_k` by silhouette over ``k_range``).
    min_group_size : classes with fewer sites are merged: Koppen classes into their main
        group (then ``other``), vegetation types into ``other_high`` / ``other_low`` (then
        ``other``), soil types into ``other``.
    Cluster labels are renumbered by size (``c1`` the largest).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown grouping strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    sites = np.asarray(network["site"].values)
    S = len(sites)
    info: dict = {}
    if strategy == "global":
        labels = np.full(S, "all", dtype=object)
    elif strategy == "per_site":
        labels = sites.astype(object)
    elif strategy in ("vegetation", "soil"):
        key = "veg_type" if strategy == "vegetation" else "soil_type"
        if key not in network.coords and key not in network:
            raise ValueError(f"grouping {strategy!r} needs the network's {key!r} (ailand.network.site_network has it)")
        labels = np.asarray(network[key].values, dtype=object)
        counts = pd.Series(labels).value_counts()
        if strategy == "vegetation" and "veg_class" in network.coords:  # rare types: other high / other low vegetation
            vc = np.asarray(network["veg_class"].values, dtype=object)
            labels = np.array([c if counts[c] >= min_group_size else f"other_{v}" for c, v in zip(labels, vc)], dtype=object)
            counts = pd.Series(labels).value_counts()
        labels = np.array([c if counts[c] >= min_group_size else "other" for c in labels], dtype=object)
        info["min_group_size"] = int(min_group_size)
    elif strategy == "koppen":
        kg = np.asarray(network["koppen"].values, dtype=object)
        counts = pd.Series(kg).value_counts()
        labels = np.array([c if counts[c] >= min_group_size else c[0] for c in kg], dtype=object)
        counts = pd.Series(labels).value_counts()
        labels = np.array([c if counts[c] >= min_group_size else "other" for c in labels], dtype=object)
        info["min_group_size"] = int(min_group_size)
    else:
        X = cluster_predictors(network)[0] if predictors is None else predictors
        X = X.reindex(sites)
        if X.isna().any().any():
            raise ValueError("group_sites: the predictors lack some of the network's sites")
        if k is None:
            k, scores = choose_k(X.to_numpy(), strategy, k_range, seed)
            info["silhouette"] = scores
            info["criterion"] = "highest mean silhouette score"
        lab = _cluster(X.to_numpy(), strategy, int(k), seed)
        order = pd.Series(lab).value_counts().index  # largest cluster first
        rename = {c: f"c{i + 1}" for i, c in enumerate(order)}
        labels = np.array([rename[c] for c in lab], dtype=object)
        info["k"] = int(k)
        info["predictors"] = list(X.columns)
    return Grouping(strategy, labels, sites, info)


def cluster_importance(X: pd.DataFrame, labels, groups: dict | None = None, n_repeats: int = 10,
                       seed: int = 0) -> xr.DataArray:
    """Importance of each predictor for each cluster.

    A random forest (200 trees, seeded) learns ``labels`` from ``X``; for predictor ``p``
    (the columns ``groups[p]``, permuted together, ``n_repeats`` times) and cluster ``c`` the
    importance is the mean drop in the forest's recall of ``c`` (fraction of the sites of
    ``c`` it assigns to ``c``). Returns a DataArray ``(cluster, predictor)`` in [-1, 1].
    """
    from sklearn.ensemble import RandomForestClassifier

    groups = groups or {c: [c] for c in X.columns}
    y = np.asarray(labels, dtype=str)
    clusters = list(pd.unique(pd.Series(y)))
    rf = RandomForestClassifier(n_estimators=200, random_state=seed, min_samples_leaf=2).fit(X.to_numpy(), y)
    rng = np.random.default_rng(seed)

    def recall(pred):
        return np.array([(pred[y == c] == c).mean() for c in clusters])

    base = recall(rf.predict(X.to_numpy()))
    out = np.zeros((len(clusters), len(groups)))
    for j, (name, cols) in enumerate(groups.items()):
        idx = [X.columns.get_loc(c) for c in cols]
        drops = []
        for _ in range(n_repeats):
            Xp = X.to_numpy().copy()
            Xp[:, idx] = Xp[rng.permutation(len(Xp))][:, idx]
            drops.append(base - recall(rf.predict(Xp)))
        out[:, j] = np.mean(drops, axis=0)
    return xr.DataArray(out, dims=("cluster", "predictor"), coords={"cluster": clusters, "predictor": list(groups)},
                        name="importance", attrs={"long_name": "drop in the recall of each cluster when the predictor is permuted",
                                                  "units": "1", "model": "RandomForestClassifier(200 trees)"})


def split_sites(network: xr.Dataset, n_held_out: int, seed: int = 0) -> np.ndarray:
    """Held-out mask ``(S,)`` bool: ``n_held_out`` sites drawn at random (seeded), stratified
    by parent climate so every climate keeps sites on both sides."""
    S = network.sizes["site"]
    if int(n_held_out) != n_held_out or not 1 <= n_held_out < S:
        raise ValueError(f"n_held_out must be an integer in [1, {S - 1}] for {S} sites, got {n_held_out}")
    rng = np.random.default_rng([int(seed), 41])
    strata = np.asarray(network["parent"].values) if "parent" in network.coords else np.zeros(S)
    order = np.concatenate([rng.permutation(np.flatnonzero(strata == s)) for s in pd.unique(pd.Series(strata))])
    # interleave the strata so the first n_held_out sites spread over them
    rank = np.empty(S)
    for s in pd.unique(pd.Series(strata)):
        idx = order[strata[order] == s]
        rank[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    held = np.zeros(S, dtype=bool)
    held[np.argsort(rank, kind="stable")[: int(n_held_out)]] = True
    return held


def calibration_sites(grouping: Grouping, pool, per_group: int, seed: int = 0, empty: str = "error") -> dict:
    """Per group, a random sub-sample (seeded) of at most ``per_group`` of its sites from the
    calibration ``pool`` (``(S,)`` bool: sites whose observations may be used).

    Returns ``{group: array of site indices}``. A group with no pool site raises
    ``ValueError`` naming it (``empty="error"``), or is left out of the dict
    (``empty="skip"``; its sites then need another group's parameters).
    """
    if empty not in ("error", "skip"):
        raise ValueError(f"empty must be 'error' or 'skip', got {empty!r}")
    if int(per_group) != per_group or per_group < 1:
        raise ValueError(f"per_group must be an integer >= 1, got {per_group}")
    pool = np.asarray(pool, dtype=bool)
    if pool.shape != grouping.labels.shape:
        raise ValueError(f"pool must be ({len(grouping.labels)},) bool, got shape {pool.shape}")
    rng = np.random.default_rng([int(seed), 53])
    out = {}
    for g in grouping.groups:
        idx = np.flatnonzero((grouping.labels == g) & pool)
        if idx.size == 0:
            if empty == "error":
                n = int((grouping.labels == g).sum())
                raise ValueError(f"grouping {grouping.strategy!r}: group {g!r} ({n} site(s)) has no calibration site "
                                 "(all its sites are held out); merge small groups (min_group_size), hold out fewer "
                                 "sites, or pass empty='skip' to give it no parameter set")
            continue
        out[g] = np.sort(rng.permutation(idx)[: int(per_group)])
    return out
