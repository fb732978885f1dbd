"""Residual k-means (RQ-kmeans) and its balanced variant (OneRec-style) as an item tokenizer.

Level 1 clusters the embeddings, level 2 clusters what level 1 left over (``x - c1[code1]``), and so on: an item's
SID is the tuple of its cluster ids and ``sum_l C_l[code_l]`` reconstructs its embedding. With
``balanced=True`` every level's clusters hold ``n // K`` or ``n // K + 1`` items (a flat first level spreads the
generation problem evenly over the first token). ``normalize_residuals=True`` clusters L2-normalised residuals at
each level, as GRID's RK-means does (reconstruction then uses each level's mean residual norm).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.tokenizers.kmeans import balanced_kmeans, kmeans, nearest, sq_distances

log = logging.getLogger(__name__)


def _as_list(codes, levels: int) -> list[int]:
    ks = [int(codes)] * levels if np.isscalar(codes) else [int(c) for c in codes]
    if len(ks) != levels or min(ks) < 1:
        raise LlmrecError(f"--codes must be one positive K or one per level ({levels}), got {codes!r}")
    return ks


def _normalize(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.sqrt(np.einsum("ij,ij->i", r, r))
    return r / np.maximum(norms, 1e-12)[:, None], norms


class RQKMeans:
    """``RQKMeans(levels=3, codes=256, seed=0).fit(x)`` -> codes ``[n, 3]``."""

    def __init__(self, method: str = "rq-kmeans", levels: int = 3, codes=256, seed: int = 0,
                 balanced: bool = False, normalize_residuals: bool = False, max_iter: int = 100,
                 tol: float = 1e-3, init_size: int | None = None, sample_size: int | None = None,
                 balanced_iter: int = 30, refine_rounds: int = 4):
        if levels < 1:
            raise LlmrecError(f"--levels must be >= 1, got {levels}")
        self.method = method
        self.levels = int(levels)
        self.codebook_sizes = _as_list(codes, self.levels)
        self.codes = self.codebook_sizes[0]
        self.seed = int(seed)
        self.balanced = bool(balanced)
        self.normalize_residuals = bool(normalize_residuals)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.init_size, self.sample_size = init_size, sample_size
        self.balanced_iter = int(balanced_iter)
        self.refine_rounds = int(refine_rounds)
        self.codebooks: list[np.ndarray] = []
        self.scales = np.ones(self.levels, np.float32)   # mean residual norm per level (normalize_residuals)
        self.fit_stats: list[dict] = []

    # --- interface ------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"levels": self.levels, "codes": self.codebook_sizes, "seed": self.seed, "balanced": self.balanced,
                "normalize_residuals": self.normalize_residuals, "max_iter": self.max_iter, "tol": self.tol,
                "init_size": self.init_size, "sample_size": self.sample_size, "balanced_iter": self.balanced_iter,
                "refine_rounds": self.refine_rounds,
                "dim": int(self.codebooks[0].shape[1]) if self.codebooks else None}

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"codebook.{l}": c for l, c in enumerate(self.codebooks)}
        out["scales"] = self.scales
        return out

    @classmethod
    def from_tensors(cls, method: str, config: dict, tensors: dict) -> "RQKMeans":
        cfg = {k: v for k, v in config.items() if k != "dim"}
        tok = cls(method=method, **cfg)
        tok.codebooks = [np.asarray(tensors[f"codebook.{l}"], np.float32) for l in range(tok.levels)]
        tok.scales = np.asarray(tensors.get("scales", np.ones(tok.levels)), np.float32)
        return tok

    def fit(self, x: np.ndarray) -> np.ndarray:
        x = _check(x)
        n = len(x)
        r = x.copy()
        codes = np.empty((n, self.levels), np.int64)
        self.codebooks, self.fit_stats = [], []
        for l, k in enumerate(self.codebook_sizes):
            t0 = time.perf_counter()
            if self.normalize_residuals:
                r, norms = _normalize(r)
                self.scales[l] = float(norms.mean())
            seed = self.seed + 1000 * l
            kw = dict(max_iter=self.max_iter, tol=self.tol, init_size=self.init_size, sample_size=self.sample_size)
            if self.balanced:
                res = balanced_kmeans(r, k, seed=seed, max_iter=self.balanced_iter, kmeans_kw=kw)
                lab = res.labels
            else:
                res = kmeans(r, k, seed=seed, **kw)
                lab = res.labels
                if not self.refine_rounds or self.normalize_residuals:
                    # the codes `encode` gives: the nearest centroid of the final codebook (refinement
                    # re-encodes anyway)
                    lab, _ = nearest(r, res.centroids)
            c = res.centroids.astype(np.float32)
            codes[:, l] = lab
            r -= c[lab]
            self.codebooks.append(c)
            self.fit_stats.append({"level": l, "iterations": res.n_iter, "seconds": round(time.perf_counter() - t0, 3),
                                   "inertia": res.inertia})
            log.info("level %d: K=%d, %d iterations, %.2f s", l, k, res.n_iter, time.perf_counter() - t0)
        if self.refine_rounds and not self.normalize_residuals:
            codes = self._refine(x, codes)
        return codes

    def _refine(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Joint codebook refinement. Greedy level-by-level k-means fixes level ``l`` before it sees what the
        later levels do; here each codebook is re-fitted to what the *other* levels leave over (the exact
        least-squares step for fixed codes), then the items are re-encoded greedily, a few rounds. Balanced
        codes are kept as they are (only the codebooks move), so the balance survives."""
        from llmrec.tokenizers.kmeans import cluster_sums

        t0 = time.perf_counter()
        recon = self.decode(codes)
        for rnd in range(self.refine_rounds):
            for l in range(self.levels):
                own = self.codebooks[l][codes[:, l]]
                target = x - recon + own
                sums, cnt = cluster_sums(target, codes[:, l], self.codebook_sizes[l])
                nz = cnt > 0
                cb = self.codebooks[l].copy()
                cb[nz] = (sums[nz] / cnt[nz, None]).astype(np.float32)
                recon += cb[codes[:, l]] - own
                self.codebooks[l] = cb
            if not self.balanced:
                r, codes = self._residual(x, self.levels)
                recon = x - r
        self.fit_stats.append({"refine_rounds": self.refine_rounds,
                               "seconds": round(time.perf_counter() - t0, 3)})
        return codes

    def _residual(self, x: np.ndarray, upto: int, codes: np.ndarray | None = None):
        """Residual before level ``upto`` (and the codes of levels < upto, computed greedily if not given)."""
        r = _check(x).copy()
        out = np.empty((len(r), upto), np.int64)
        for l in range(upto):
            if self.normalize_residuals:
                r, _ = _normalize(r)
            lab = nearest(r, self.codebooks[l])[0] if codes is None else codes[:, l]
            out[:, l] = lab
            r -= self.codebooks[l][lab]
        if self.normalize_residuals and upto < self.levels:
            r, _ = _normalize(r)
        return r, out

    def encode(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self._residual(x, self.levels)[1]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_prefix(codes, self.levels - 1)

    def decode_prefix(self, codes: np.ndarray, upto: int) -> np.ndarray:
        """Reconstruction from levels ``0..upto``."""
        self._check_fitted()
        codes = np.asarray(codes)
        out = np.zeros((len(codes), self.codebooks[0].shape[1]), np.float32)
        for l in reversed(range(upto + 1)):
            if self.normalize_residuals:
                # x = s0 (c0 + s1 (c1 + ...)), the level's mean residual norm standing in for the item's own
                out = self.scales[l] * (self.codebooks[l][codes[:, l]] + out)
            else:
                out += self.codebooks[l][codes[:, l]]
        return out

    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        r, _ = self._residual(x, self.levels - 1, codes)
        return sq_distances(r, self.codebooks[-1])

    def _check_fitted(self):
        if not self.codebooks:
            raise LlmrecError("the tokenizer is not fitted: call fit(x) or load a SID folder")


def _check(x) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise LlmrecError(f"embeddings must be a non-empty [n, dim] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise LlmrecError(f"embeddings contain NaN/inf (row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])})")
    return x
