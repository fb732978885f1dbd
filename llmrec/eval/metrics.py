"""Ranking metrics, one definition for every model.

For one example with target set T (usually one item) and a ranked list r (best first, duplicates removed):
  HR@K     = 1 if any target is in r[:K]
  Recall@K = |T ∩ r[:K]| / |T|                 (equals HR@K for a single target)
  NDCG@K   = DCG@K / IDCG@K, DCG@K = Σ_{p<K, r[p]∈T} 1/log2(p+2), IDCG@K = Σ_{p<min(K,|T|)} 1/log2(p+2)
  MRR@K    = 1/(p+1) for the first target position p < K, else 0
Averages are over examples. Positions are 0-based.

Full-ranking ties (score-based models): with g items scoring strictly higher than the target and e others
scoring the same, ``ties="expected"`` (default) averages the metric over the e+1 equally likely positions
g..g+e (exact, no sampling); ``"optimistic"`` uses g, ``"pessimistic"`` uses g+e.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (5, 10, 20, 50, 100)
METRICS = ("hr", "recall", "ndcg", "mrr")


def _disc(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n) + 2.0)


def metrics_from_hits(hits: np.ndarray, n_targets: np.ndarray | None, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-example metrics from a boolean hit matrix ``hits[i, p]`` (target at position p of example i)."""
    hits = np.asarray(hits, dtype=bool)
    n, L = hits.shape
    n_t = np.ones(n) if n_targets is None else np.asarray(n_targets, dtype=np.float64)
    disc = _disc(max(L, 1))
    first = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    cum_hits = np.cumsum(hits, axis=1) if L else np.zeros((n, 0))
    cum_dcg = np.cumsum(hits * disc[:L], axis=1) if L else np.zeros((n, 0))
    out = {}
    for k in ks:
        kk = min(k, L)
        nh = cum_hits[:, kk - 1] if kk else np.zeros(n)
        dcg = cum_dcg[:, kk - 1] if kk else np.zeros(n)
        idisc = _disc(max(k, 1))
        idcg = np.cumsum(idisc)[np.clip(np.minimum(n_t, k).astype(int) - 1, 0, None)]
        out[f"hr@{k}"] = (nh > 0).astype(np.float64)
        out[f"recall@{k}"] = np.where(n_t > 0, nh / np.maximum(n_t, 1), 0.0)
        out[f"ndcg@{k}"] = np.where(n_t > 0, dcg / idcg, 0.0)
        out[f"mrr@{k}"] = np.where(first < k, 1.0 / (np.minimum(first, k) + 1.0), 0.0)
    return out


def metrics_from_rank_counts(greater: np.ndarray, equal: np.ndarray | None = None, ks=DEFAULT_KS,
                             ties: str = "expected") -> dict[str, np.ndarray]:
    """Per-example metrics for a single target from full-ranking counts (see module docstring for ``ties``)."""
    g = np.asarray(greater, dtype=np.int64)
    e = np.zeros_like(g) if equal is None else np.asarray(equal, dtype=np.int64)
    if ties == "optimistic":
        e = np.zeros_like(g)
    elif ties == "pessimistic":
        g, e = g + e, np.zeros_like(g)
    elif ties != "expected":
        raise ValueError(f"ties must be 'expected', 'optimistic' or 'pessimistic', got {ties!r}")
    kmax = max(ks)
    # cumulative sums over positions 0..kmax: C[n] = Σ_{p<n} f(p)
    cdcg = np.r_[0.0, np.cumsum(_disc(kmax))]
    crr = np.r_[0.0, np.cumsum(1.0 / (np.arange(kmax) + 1.0))]
    out = {}
    for k in ks:
        lo = np.minimum(g, k)
        hi = np.minimum(g + e + 1, k)
        width = (e + 1).astype(np.float64)
        hr = (hi - lo) / width
        out[f"hr@{k}"] = hr
        out[f"recall@{k}"] = hr
        out[f"ndcg@{k}"] = (cdcg[hi] - cdcg[lo]) / width
        out[f"mrr@{k}"] = (crr[hi] - crr[lo]) / width
    return out


def mean_metrics(per_example: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) if len(v) else 0.0 for k, v in per_example.items()}


def format_table(metrics: dict, ks=None, title: str | None = None) -> str:
    """A fixed-width table: one row per metric, one column per K."""
    ks = ks or sorted({int(k.split("@")[1]) for k in metrics if "@" in k and k.split("@")[0] in METRICS})
    head = f"{'':8}" + "".join(f"{'@' + str(k):>9}" for k in ks)
    lines = [title] if title else []
    lines.append(head)
    for m in METRICS:
        if not any(f"{m}@{k}" in metrics for k in ks):
            continue
        lines.append(f"{m.upper() if m != 'recall' else 'Recall':8}" +
                     "".join(f"{metrics.get(f'{m}@{k}', float('nan')):9.4f}" for k in ks))
    tail = []
    if "n_users" in metrics:
        tail.append(f"examples: {metrics['n_users']:,}")
    if "invalid_rate" in metrics:
        tail.append(f"invalid rate: {100 * metrics['invalid_rate']:.2f}%")
    if "duplicate_rate" in metrics and metrics["duplicate_rate"]:
        tail.append(f"duplicates dropped: {100 * metrics['duplicate_rate']:.2f}%")
    if tail:
        lines.append("  ".join(tail))
    return "\n".join(lines)
