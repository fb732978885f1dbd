"""Fast exact k-means (and balanced k-means) on CPU with numpy BLAS: the engine under RQ-kmeans.

Why not scikit-learn or faiss? scikit-learn reaches good optima (greedy k-means++ and Lloyd to convergence) but
is slow; faiss is fast but starts from random centroids and stops after a fixed number of iterations, which
costs reconstruction quality. This module keeps scikit-learn's quality at faiss's speed:

* greedy k-means++ seeding (scikit-learn's algorithm) on a sample of ``init_size`` points;
* for large ``n``, Lloyd on a sample of ``sample_size`` points first, then full-data passes;
* full-data Lloyd iterations with Hamerly bounds: after the first pass only points whose upper bound (the exact
  distance to their centroid) exceeds the lower bound (second-best distance minus the largest centroid move)
  are re-scored, by one BLAS GEMM over that subset. The result is exactly Lloyd's, at a fraction of the cost
  once most points stop moving;
* early stopping when the relative change of the inertia falls below ``tol`` or no point moves.

Empty clusters are re-seeded with the points farthest from their centroids (as scikit-learn does).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

_CHUNK = 1 << 15  # rows per distance block: 32k x K float32 stays small


@dataclass
class KMeansResult:
    centroids: np.ndarray          # [K, d] float32
    labels: np.ndarray             # [n] int64
    inertia: float                 # sum of squared distances to the assigned centroid
    n_iter: int                    # full-data Lloyd iterations
    history: list = field(default_factory=list)  # inertia after each full-data iteration
    seconds: float = 0.0
    n_rescored: int = 0            # point-centroid rows scored in full-data passes (work measure)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def nearest(x: np.ndarray, c: np.ndarray, k2: bool = False, xn: np.ndarray | None = None,
            cn: np.ndarray | None = None):
    """Nearest centroid of every row: ``labels, d2`` (and the second-best ``d2`` with ``k2=True``)."""
    n = len(x)
    xn = _sq_norms(x) if xn is None else xn
    cn = _sq_norms(c) if cn is None else cn
    c2 = np.ascontiguousarray(-2.0 * c, dtype=np.float32)
    labels = np.empty(n, np.int64)
    best = np.empty(n, np.float32)
    second = np.empty(n, np.float32) if k2 else None
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        d = x[s:e] @ c2.T
        d += cn
        a = d.argmin(1)
        r = np.arange(e - s)
        labels[s:e] = a
        best[s:e] = d[r, a]
        if k2:
            if d.shape[1] > 1:
                d[r, a] = np.inf
                second[s:e] = d.min(1)
            else:
                second[s:e] = np.inf
    best += xn
    np.maximum(best, 0, out=best)
    if k2:
        second += xn
        np.maximum(second, 0, out=second)
        return labels, best, second
    return labels, best


def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums ``[K, d]`` (float64 for exact means) and counts ``[K]``."""
    import scipy.sparse as sp

    n = len(x)
    m = sp.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(m @ x, dtype=np.float64)
    counts = np.bincount(labels, minlength=k)
    return sums, counts


def _has_fast_bf16() -> bool:
    """Native bf16 dot products on this CPU (AVX512-BF16 / AMX)? Then torch bf16 GEMMs run ~3x faster than
    fp32 ones; elsewhere they are emulated and slower, so we stay in fp32."""
    global _BF16
    if _BF16 is None:
        _BF16 = False
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read(1 << 16)
            _BF16 = ("avx512_bf16" in flags or "amx_bf16" in flags)
            import torch  # noqa: F401
        except Exception:
            _BF16 = False
    return _BF16


_BF16: bool | None = None


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's ``2 + log k`` local trials).

    Each step scores ``n_trials`` D^2-sampled candidates against every point: a skinny GEMM that one BLAS
    thread does faster than two, and that runs in bf16 where the CPU has native bf16 (seeding only needs
    approximate distances; Lloyd then works in fp32)."""
    from threadpoolctl import threadpool_limits

    n = len(x)
    if k >= n:
        raise ValueError("k-means++ needs more points than clusters")
    n_trials = n_trials or 2 + int(math.log(k))
    xn = _sq_norms(x)
    centers = np.empty((k, x.shape[1]), np.float32)
    first = int(rng.integers(n))
    centers[0] = x[first]
    closest = np.maximum(xn + xn[first] - 2.0 * (x @ x[first]), 0)
    pot = float(closest.sum())
    use_bf16 = _has_fast_bf16() and n * x.shape[1] >= 1 << 18
    if use_bf16:
        import torch
        xb = torch.from_numpy(x).bfloat16()
        xbT = xb.T
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    else:
        xT = np.ascontiguousarray(x.T)
    try:
        with threadpool_limits(1):
            for i in range(1, k):
                if pot <= 0:  # fewer distinct points than k: duplicate the rest (Lloyd leaves them empty)
                    centers[i:] = x[rng.integers(n, size=k - i)]
                    break
                cum = np.cumsum(closest, dtype=np.float64)
                cand = np.searchsorted(cum, rng.random(n_trials) * cum[-1])
                np.minimum(cand, n - 1, out=cand)
                if use_bf16:
                    d = torch.mm(xb[torch.from_numpy(cand)], xbT).float().numpy()
                else:
                    d = x[cand] @ xT
                d *= -2.0
                d += xn[cand, None]
                d += xn[None, :]
                np.maximum(d, 0, out=d)
                np.minimum(d, closest[None, :], out=d)
                pots = d.sum(1)
                b = int(pots.argmin())
                closest, pot = d[b], float(pots[b])
                centers[i] = x[cand[b]]
    finally:
        if use_bf16:
            torch.set_num_threads(prev_threads)
    return centers


def _lloyd_plain(x, c, max_iter, tol, rng):
    """Plain Lloyd on a (small) sample; returns centroids."""
    k = len(c)
    xn = _sq_norms(x)
    prev = None
    for _ in range(max_iter):
        labels, d2 = nearest(x, c, xn=xn)
        inertia = float(d2.sum(dtype=np.float64))
        sums, counts = cluster_sums(x, labels, k)
        c = _new_centroids(x, c, sums, counts, d2, rng)
        if prev is not None and prev - inertia <= tol * prev:
            break
        prev = inertia
    return c


def _new_centroids(x, c, sums, counts, d2, rng) -> np.ndarray:
    """Means of the clusters; empty clusters take the points farthest from their centroids."""
    nz = counts > 0
    out = c.astype(np.float32, copy=True)
    out[nz] = (sums[nz] / counts[nz, None]).astype(np.float32)
    empty = np.flatnonzero(~nz)
    if len(empty):
        far = np.argsort(-d2, kind="stable")[: len(empty)]
        out[empty[: len(far)]] = x[far]
    return out


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 100, tol: float = 1e-3,
           init: np.ndarray | str = "k-means++", init_size: int | None = None, sample_size: int | None = None,
           sample_iter: int = 30) -> KMeansResult:
    """Exact Lloyd k-means of ``x [n, d]`` into ``k`` clusters (see the module docstring).

    ``init_size``: points used for k-means++ seeding (default ``min(n, 65536)``: seeding on a small sample
    costs quality at the deeper RQ levels, where the residuals have little structure).
    ``sample_size``: when ``n`` is larger, Lloyd first runs on this many sampled points (default ``256 k``),
    then ``max_iter`` full-data iterations refine (Hamerly-accelerated). ``tol``: stop when the inertia
    improves by less than this fraction in one iteration.
    """
    t0 = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise ValueError("k-means of an empty set")
    rng = np.random.default_rng(seed)
    k_eff = min(k, n)
    if isinstance(init, np.ndarray):
        c = np.ascontiguousarray(init, dtype=np.float32).copy()
    else:
        m = min(n, init_size or 65536)
        xs = x if m == n else x[np.sort(rng.choice(n, m, replace=False))]
        if k_eff >= len(xs):
            c = xs[rng.permutation(len(xs))[:k_eff]].copy()
        else:
            c = kmeans_plusplus(xs, k_eff, rng)
        sample = sample_size if sample_size is not None else 256 * k_eff
        if n > sample and sample_iter > 0:
            xs = x[np.sort(rng.choice(n, sample, replace=False))] if sample > m else xs
            c = _lloyd_plain(xs, c, sample_iter, tol, rng)
    if len(c) < k:  # fewer points than clusters: the extra centroids are copies nobody is assigned to
        c = np.concatenate([c, np.repeat(c[:1], k - len(c), 0)])
    res = _lloyd_hamerly(x, c, max_iter, tol, rng)
    res.seconds = time.perf_counter() - t0
    return res


def _lloyd_hamerly(x: np.ndarray, c: np.ndarray, max_iter: int, tol: float, rng) -> KMeansResult:
    n, k = len(x), len(c)
    xn = _sq_norms(x)
    labels, d2, s2 = nearest(x, c, k2=True, xn=xn)
    upper = np.sqrt(d2)
    lower = np.sqrt(s2)
    n_scored = n
    history = []
    it = 0
    inertia = float(d2.sum(dtype=np.float64))
    for it in range(1, max_iter + 1):
        sums, counts = cluster_sums(x, labels, k)
        new_c = _new_centroids(x, c, sums, counts, upper ** 2, rng)
        reseeded = bool((counts == 0).any()) and n >= k
        shift = np.sqrt(_sq_norms(new_c - c))
        c = new_c
        # exact distance of every point to its (moved) centroid: O(n d), no GEMM
        cn = _sq_norms(c)
        d2 = xn - 2.0 * np.einsum("ij,ij->i", x, c[labels]) + cn[labels]
        np.maximum(d2, 0, out=d2)
        upper = np.sqrt(d2)
        if reseeded:
            lower[:] = 0.0
        else:
            # the largest move among the *other* centroids bounds how much the second-best can come closer
            order = np.argsort(-shift)
            top, second_top = shift[order[0]], (shift[order[1]] if k > 1 else 0.0)
            lower -= np.where(labels == order[0], second_top, top).astype(np.float32)
        todo = np.flatnonzero(upper > lower * (1 - 1e-5))
        changed = 0
        if len(todo):
            lab, b, s = nearest(x[todo], c, k2=True, xn=xn[todo], cn=cn)
            changed = int((lab != labels[todo]).sum())
            labels[todo] = lab
            d2[todo] = b
            upper[todo] = np.sqrt(b)
            lower[todo] = np.sqrt(s)
            n_scored += len(todo)
        new_inertia = float(d2.sum(dtype=np.float64))
        history.append(new_inertia)
        if inertia - new_inertia <= tol * inertia or changed == 0:
            inertia = new_inertia
            break
        inertia = new_inertia
    return KMeansResult(c, labels, inertia, it, history, n_rescored=n_scored)


# --- balanced k-means (OneRec-style: every cluster holds n/K items, give or take one) ---------------------------
def quotas(n: int, k: int) -> np.ndarray:
    """Cluster capacities summing to ``n``: ``n // k`` each, one more for the first ``n % k``."""
    q = np.full(k, n // k, np.int64)
    q[: n % k] += 1
    return q


def sq_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``[n, K]`` squared distances (float32)."""
    d = x @ (-2.0 * c).T.astype(np.float32)
    d += _sq_norms(c)[None, :]
    d += _sq_norms(x)[:, None]
    np.maximum(d, 0, out=d)
    return d


def balanced_assign(d: np.ndarray, prices: np.ndarray | None = None, n_price_steps: int = 200,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Assign ``n`` points to ``K`` clusters with exactly balanced sizes (``quotas``) at low total cost.

    Two steps. (1) Prices: ``argmin_k d[i, k] - p[k]`` with ``p`` raised on under-full and lowered on over-full
    clusters (a dual ascent; the step shrinks geometrically) makes the unconstrained choice nearly balanced.
    (2) Exact rounding: rounds of proposals in order of each point's price-adjusted preference; a cluster keeps
    the cheapest proposals up to its remaining capacity. Returns ``labels, prices``.
    """
    n, k = d.shape
    p = np.zeros(k, np.float64) if prices is None else prices.astype(np.float64).copy()
    scale = float(np.median(d.min(1))) + 1e-12 if n else 1.0
    q = quotas(n, k)
    step = 0.5 * scale
    target = n / k
    for t in range(n_price_steps):
        lab = (d - p.astype(np.float32)).argmin(1)
        cnt = np.bincount(lab, minlength=k)
        if cnt.max() <= q.max() and cnt.min() >= q.min():
            break
        p += step * (target - cnt) / target
        step *= 0.98
    a = d - p.astype(np.float32)[None, :]
    # the clusters the prices favour most take the larger quotas
    cnt = np.bincount(a.argmin(1), minlength=k)
    q = q[np.argsort(np.argsort(-cnt, kind="stable"), kind="stable")]
    remaining = q.copy()
    labels = np.full(n, -1, np.int64)
    order = np.argsort(a, axis=1)
    todo = np.arange(n)
    for r in range(k):
        if not len(todo):
            break
        prop = order[todo, r]
        cost = a[todo, prop]
        srt = np.lexsort((cost, prop))
        prop_s = prop[srt]
        # rank of each proposal within its cluster (0 = cheapest)
        first = np.searchsorted(prop_s, prop_s, side="left")
        rank = np.arange(len(prop_s)) - first
        ok = rank < remaining[prop_s]
        acc = todo[srt[ok]]
        labels[acc] = prop_s[ok]
        remaining -= np.bincount(prop_s[ok], minlength=k)
        todo = np.sort(todo[srt[~ok]])
    assert (labels >= 0).all() and (np.bincount(labels, minlength=k) == q).all()
    return labels, p


def balanced_kmeans(x: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 30, init: np.ndarray | None = None,
                    kmeans_kw: dict | None = None) -> KMeansResult:
    """k-means whose clusters all hold ``n // k`` or ``n // k + 1`` points: Lloyd with :func:`balanced_assign`
    as the assignment step, started from plain k-means centroids."""
    t0 = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    rng = np.random.default_rng(seed)
    if init is None:
        init = kmeans(x, k, seed=seed, **(kmeans_kw or {})).centroids
    c = np.ascontiguousarray(init, dtype=np.float32)
    if n <= k:  # one point per cluster at most: plain nearest-free assignment
        d = sq_distances(x, c)
        labels, _ = balanced_assign(d, rng=rng)
        return KMeansResult(c, labels, float(d[np.arange(n), labels].sum()), 0, seconds=time.perf_counter() - t0)
    prices = None
    labels = None
    history = []
    it = 0
    for it in range(1, max_iter + 1):
        d = sq_distances(x, c)
        new, prices = balanced_assign(d, prices, rng=rng)
        inertia = float(d[np.arange(n), new].sum(dtype=np.float64))
        history.append(inertia)
        if labels is not None and (new == labels).all():
            break
        labels = new
        sums, counts = cluster_sums(x, labels, k)
        c = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    d = sq_distances(x, c)
    labels, _ = balanced_assign(d, prices, rng=rng)
    inertia = float(d[np.arange(n), labels].sum(dtype=np.float64))
    return KMeansResult(c, labels, inertia, it, history, seconds=time.perf_counter() - t0)
