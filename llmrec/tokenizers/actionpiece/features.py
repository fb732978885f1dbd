"""Initial item features for ActionPiece: an unordered set of ``m`` features per item, one per position.

* :func:`opq_codes`: OPQ/PQ codes of the item's text embedding (faiss; 4 codes x 256 as in the paper);
* :func:`disambiguation_digit`: one extra position so that no two items share a feature set;
* :func:`categorical_features`: item metadata columns (brand, category, ...) as features instead;
* :func:`load_features_json` / :func:`load_sequences_json`: precomputed inputs, to compare implementations on
  identical data (``{"item_id": ["feature", ...]}`` and ``[[item_id, ...], ...]``).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from llmrec.artifacts import read_json
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)


def opq_codes(embeddings: np.ndarray, n_codebooks: int = 4, codebook_size: int = 256,
              train_rows: np.ndarray | None = None, seed: int = 0, opq: bool = True) -> np.ndarray:
    """``[n, n_codebooks]`` codes of OPQ (rotation + product quantisation) trained on ``train_rows``.

    As in the paper the quantiser is trained on the items seen in training sequences (``train_rows``) and then
    applied to every row.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise LlmrecError(f"embeddings must be a finite [n, d] float array, got shape {x.shape}")
    d = x.shape[1]
    nbits = int(np.log2(codebook_size))
    if 2 ** nbits != codebook_size or not 1 <= nbits <= 16:
        raise LlmrecError(f"codebook size must be a power of two between 2 and 65536, got {codebook_size}")
    if d % n_codebooks:
        raise LlmrecError(f"embedding dimension {d} is not divisible by {n_codebooks} codebooks")
    xt = x if train_rows is None else x[np.asarray(train_rows)]
    if len(xt) < codebook_size:
        raise LlmrecError(f"{len(xt)} training vectors for {codebook_size} centroids per codebook; use a "
                          "smaller --codebook-size")
    faiss.omp_set_num_threads(1)  # bit-for-bit reproducible k-means
    index = faiss.index_factory(d, f"{'OPQ%d,' % n_codebooks if opq else ''}PQ{n_codebooks}x{nbits}")
    keep = _seed_faiss(index, seed, d, n_codebooks, nbits)
    index.train(xt)
    del keep
    codes = index.sa_encode(x)
    if nbits == 8:
        return codes.astype(np.int64)
    # unpack little-endian bit fields
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, : n_codebooks * nbits]
    return (bits.reshape(len(x), n_codebooks, nbits) << np.arange(nbits)).sum(-1).astype(np.int64)


def _seed_faiss(index, seed: int, d: int, m: int, nbits: int):
    """Seed the final PQ's k-means and give OPQ's inner quantiser the final code size (faiss defaults to 8 bits)."""
    import faiss

    keep = []
    idx = index
    if isinstance(idx, faiss.IndexPreTransform):  # the OPQ rotation itself starts from faiss' fixed seed
        for i in range(idx.chain.size()):
            vt = faiss.downcast_VectorTransform(idx.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                inner = faiss.ProductQuantizer(d, m, nbits)
                inner.cp.seed = int(seed) + 4321
                vt.pq = inner
                keep.append(inner)  # owned by Python: must outlive training
        idx = faiss.downcast_index(idx.index)
    pq = getattr(idx, "pq", None)
    if pq is not None:
        pq.cp.seed = int(seed) + 1234
    return keep


def disambiguation_digit(codes: np.ndarray, buckets: int = 128, seed: int = 0) -> np.ndarray:
    """``[n]`` extra feature making each row's feature set unique.

    Items sharing the same codes get distinct digits taken, in row order, from a permutation of
    ``range(buckets)`` seeded by the codes themselves (so a digit does not depend on unrelated items).
    """
    codes = np.asarray(codes)
    out = np.zeros(len(codes), dtype=np.int64)
    used: dict[tuple, int] = {}
    for r, row in enumerate(codes.tolist()):
        key = tuple(row)
        k = used.get(key, 0)
        if k >= buckets:
            raise LlmrecError(f"{k + 1} items share the features {list(key)}; more than {buckets} hash buckets "
                              "are needed (raise --hash-buckets)")
        perm = np.random.default_rng([seed, *[v if isinstance(v, int) and v >= 0 else zlib.crc32(str(v).encode())
                                              for v in key]]).permutation(buckets)
        out[r] = perm[k]
        used[key] = k + 1
    return out


def categorical_features(dataset, fields: Sequence[str], missing: str = "<none>") -> tuple[list, np.ndarray]:
    """``(item ids, [n_items, len(fields)] string features)`` from item metadata columns of a dataset.

    List-valued fields (e.g. category paths) use their last (most specific) element.
    """
    from llmrec.data_builders import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    items = ds.items
    for f in fields:
        if f not in items.columns:
            raise LlmrecError(f"{ds.path}/items.parquet has no column {f!r}; available: {sorted(items.columns)}")
    ids = items["item"].to_numpy()
    cols = []
    for f in fields:
        vals = []
        for v in items[f].tolist():
            if isinstance(v, (list, tuple, np.ndarray)):
                v = v[-1] if len(v) else None
            vals.append(missing if v is None or (isinstance(v, float) and np.isnan(v)) or str(v) == "" else str(v))
        cols.append(vals)
    return [int(i) for i in ids], np.array(cols, dtype=object).T.reshape(len(ids), len(fields))


def load_features_json(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """``(item ids, features)`` from ``{"item_id": ["feature", ...], ...}``; all items need as many features."""
    path = Path(path)
    obj = read_json(path)
    if not isinstance(obj, dict) or not obj:
        raise LlmrecError(f"{path}: expected a non-empty JSON object {{\"item_id\": [\"feature\", ...]}}")
    ids, feats = [], []
    m = None
    for key, vals in obj.items():
        if not isinstance(vals, list) or not vals or not all(isinstance(v, (str, int)) for v in vals):
            raise LlmrecError(f"{path}, item {key!r}: expected a non-empty list of feature strings, got {vals!r:.80}")
        if m is None:
            m = len(vals)
        elif len(vals) != m:
            raise LlmrecError(f"{path}, item {key!r}: {len(vals)} features, but the first item has {m}; every item "
                              "needs one feature per position")
        ids.append(str(key))
        feats.append([str(v) for v in vals])
    return ids, feats


def load_sequences_json(path: str | Path) -> list[list[str]]:
    """Item sequences from ``[[item_id, ...], ...]`` (ids as strings, to match FEATURES.json keys)."""
    path = Path(path)
    obj = read_json(path)
    if not isinstance(obj, list):
        raise LlmrecError(f"{path}: expected a JSON list of item-id lists")
    out = []
    for s, seq in enumerate(obj):
        if not isinstance(seq, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in seq):
            raise LlmrecError(f"{path}, sequence {s}: expected a list of item ids, got {seq!r:.80}")
        out.append([str(v) for v in seq])
    return out

