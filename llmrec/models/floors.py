"""The floors every model must beat: most-popular and item-kNN over co-occurrence.

Both are fitted on ``train.parquet`` of a split only and scored through the same full-ranking protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


def popularity_scorer(train: pd.DataFrame, n_items: int):
    """Score = number of training interactions of the item (ties resolved by the protocol's tie rule)."""
    counts = np.bincount(train["item"].to_numpy(np.int64), minlength=n_items + 1).astype(np.float32)

    def score(batch: pd.DataFrame) -> np.ndarray:
        return np.broadcast_to(counts, (len(batch), n_items + 1))

    return score


@dataclass
class ItemKNNConfig:
    # Defaults chosen on Beauty LOO *validation* NDCG@10 (grid in docs/benchmarks.md).
    neighbors: int = 200       # keep the top-N most similar items per item
    shrink: float = 100.0      # cosine shrinkage: C_ij / (sqrt(n_i n_j) + shrink)
    window: int = 2            # 0: co-occurrence anywhere in a user's training sequence; w > 0: within w steps
    recency_decay: float = 0.5  # history item at age a (0 = last) weighs decay**a
    history: int = 50          # use the last N history items


def itemknn_scorer(train: pd.DataFrame, n_items: int, cfg: ItemKNNConfig | None = None):
    """Item-to-item cosine similarity from training co-occurrence; a user's score is the recency-weighted sum of
    the similarities of their history items. Popularity (scaled far below any similarity) breaks ties."""
    cfg = cfg or ItemKNNConfig()
    users = train["user"].to_numpy(np.int64)
    items = train["item"].to_numpy(np.int64)
    n = n_items + 1
    if cfg.window <= 0:
        X = sp.csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(users.max() + 1, n))
        X.data[:] = 1.0  # repeated (user, item) pairs count once
        C = (X.T @ X).tocsr()
    else:
        rows, cols = [], []
        for d in range(1, cfg.window + 1):
            ok = users[:-d] == users[d:]  # rows are grouped by user, so equal ends mean the same user
            rows.append(items[:-d][ok])
            cols.append(items[d:][ok])
        r = np.concatenate(rows)
        c = np.concatenate(cols)
        C = sp.csr_matrix((np.ones(2 * len(r), np.float32), (np.r_[r, c], np.r_[c, r])), shape=(n, n))
    C.setdiag(0)
    C.eliminate_zeros()
    deg = np.bincount(items, minlength=n).astype(np.float32)
    C = C.tocoo()
    sim = C.data / (np.sqrt(deg[C.row] * deg[C.col]) + cfg.shrink)
    S = sp.csr_matrix((sim.astype(np.float32), (C.row, C.col)), shape=(n, n))
    S = _top_n_per_row(S, cfg.neighbors)
    pop = deg / max(deg.max(), 1.0) * 1e-6

    def score(batch: pd.DataFrame) -> np.ndarray:
        rr, cc, ww = [], [], []
        for i, h in enumerate(batch["history"]):
            h = np.asarray(h, np.int64)[-cfg.history:]
            if len(h) == 0:
                continue
            w = cfg.recency_decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
            rr.append(np.full(len(h), i))
            cc.append(h)
            ww.append(w)
        H = sp.csr_matrix((np.concatenate(ww) if ww else [], (np.concatenate(rr) if rr else [],
                                                             np.concatenate(cc) if cc else [])),
                          shape=(len(batch), n), dtype=np.float32)
        return np.asarray((H @ S).todense()) + pop

    return score


def _top_n_per_row(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    S = S.tocsr()
    S.sort_indices()
    indptr, data, idx = S.indptr, S.data, S.indices
    keep = np.zeros(len(data), bool)
    for r in range(S.shape[0]):
        a, b = indptr[r], indptr[r + 1]
        if b - a <= k:
            keep[a:b] = True
        else:
            keep[a + np.argpartition(-data[a:b], k)[:k]] = True
    rows = np.repeat(np.arange(S.shape[0]), np.diff(indptr))
    return sp.csr_matrix((data[keep], (rows[keep], idx[keep])), shape=S.shape)


def config_dict(cfg) -> dict:
    return asdict(cfg)


def fit_pop(split, config: dict, out, seed: int):
    """Registry entry for ``llmrec baseline train --model pop``."""
    return popularity_scorer(split.train, split.n_items)


def fit_itemknn(split, config: dict, out, seed: int):
    """Registry entry for ``llmrec baseline train --model itemknn`` (config keys: ItemKNNConfig fields)."""
    known = set(ItemKNNConfig.__dataclass_fields__)
    bad = set(config) - known - {"resume"}
    if bad:
        from llmrec.errors import LlmrecError
        raise LlmrecError(f"itemknn: unknown config key(s) {sorted(bad)}; expected {sorted(known)}")
    cfg = ItemKNNConfig(**{k: v for k, v in config.items() if k in known})
    return itemknn_scorer(split.train, split.n_items, cfg)
