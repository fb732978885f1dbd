"""The ActionPiece tokenizer: a learned vocabulary over item feature sets, and how items are written with it.

Every item is a set of ``m`` initial features, one per *position* (e.g. 4 OPQ codes + a disambiguation digit).
Token ``i < n_init`` is one initial feature ``(position, value)``; token ``n_init + k`` is merge ``k`` of two
earlier tokens, so it stands for the union of their features. Tokens are written ``<ap_{id}>``.

* **Target** (:meth:`ActionPiece.item_tokens`): the item alone, merged inside its set in priority order (the
  merge's weight when it was learned; ties: the earlier merge), the newest token first. Deterministic, so a
  decoding trie can be built from it; no item's target is a prefix of another's (each covers all positions).
* **History** (:meth:`ActionPiece.history_tokens`): set-permutation regularisation. Each item's features are
  put in a random order, the items are concatenated, and merges are applied by rank (BPE) over adjacent
  tokens, so tokens may span two adjacent items. ``rng=None`` keeps the position order (deterministic).
* **Decoding** (:meth:`ActionPiece.decode`): tokens -> features; valid only if every position is covered
  exactly once and the features are an item's.
* **Ensembling** (:func:`fuse_ranked_lists`): rank lists from ``q`` history segmentations are fused by the sum
  of ``1 / log2(rank + 2)``.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Iterable, Sequence

import numpy as np

from llmrec.artifacts import read_json, write_json
from llmrec.errors import LlmrecError

TOKEN_FORMAT = "<ap_{}>"
_TOKEN_RE = re.compile(r"<ap_(\d+)>")
FORMAT_NAME = "llmrec-actionpiece"
FORMAT_VERSION = 1


@dataclass
class ActionPiece:
    """A trained ActionPiece vocabulary plus the items it writes.

    ``features[i] = (position, value)`` of initial token ``i``; ``merges[k] = (left, right)`` makes token
    ``n_init + k``; ``counts[k] / scale`` is its weight when learned. ``item_ids[r]`` is the id of item row
    ``r`` and ``item_features[r]`` its ``m`` initial token ids in position order.
    """

    features: list[tuple[int, str]]
    merges: np.ndarray
    counts: np.ndarray
    scale: int
    item_ids: list
    item_features: np.ndarray
    position_names: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        self.merges = np.asarray(self.merges, dtype=np.int64).reshape(-1, 2)
        self.counts = np.asarray(self.counts, dtype=np.int64).reshape(-1)
        self.item_features = np.asarray(self.item_features, dtype=np.int64)
        if len(self.counts) != len(self.merges):
            raise LlmrecError(f"{len(self.merges)} merges but {len(self.counts)} weights")
        if self.item_features.ndim != 2 or len(self.item_features) != len(self.item_ids):
            raise LlmrecError("item_features must be [n_items, positions] with one row per item id")
        if not self.position_names:
            self.position_names = [f"f{p}" for p in range(self.n_positions)]
        self._rank = {(int(a), int(b)): k for k, (a, b) in enumerate(self.merges.tolist())}
        self._row = {}
        for r, it in enumerate(self.item_ids):
            if it in self._row:
                raise LlmrecError(f"item id {it!r} appears twice")
            self._row[it] = r
        self._item_of = {}
        for r, row in enumerate(self.item_features.tolist()):
            key = tuple(row)
            if key in self._item_of:
                raise LlmrecError(f"items {self.item_ids[self._item_of[key]]!r} and {self.item_ids[r]!r} have the "
                                  "same features; add a disambiguation digit (--hash-buckets)")
            self._item_of[key] = r
        self._expand: list[tuple[int, ...]] = [(i,) for i in range(self.n_init)]
        for a, b in self.merges.tolist():
            self._expand.append(self._expand[a] + self._expand[b])
        self._pos = np.array([p for p, _ in self.features], dtype=np.int64)
        self._target_cache: dict[int, list[int]] = {}

    # --- sizes and names ---------------------------------------------------------------------------------
    @property
    def n_init(self) -> int:
        return len(self.features)

    @property
    def vocab_size(self) -> int:
        return self.n_init + len(self.merges)

    @property
    def n_positions(self) -> int:
        return int(self.item_features.shape[1])

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def weights(self) -> np.ndarray:
        return self.counts / self.scale

    @staticmethod
    def token(i: int) -> str:
        return TOKEN_FORMAT.format(int(i))

    def vocabulary(self) -> list[str]:
        """Every token string, in id order: what a language model's vocabulary must be extended with."""
        return [self.token(i) for i in range(self.vocab_size)]

    def token_id(self, token: str | int) -> int:
        if isinstance(token, (int, np.integer)):
            i = int(token)
        else:
            m = _TOKEN_RE.fullmatch(token)
            if m is None:
                raise LlmrecError(f"{token!r} is not an ActionPiece token (expected {TOKEN_FORMAT.format('N')})")
            i = int(m.group(1))
        if not 0 <= i < self.vocab_size:
            raise LlmrecError(f"token id {i} outside the vocabulary (0..{self.vocab_size - 1})")
        return i

    def token_features(self, token: str | int) -> list[tuple[int, str]]:
        """The initial ``(position, value)`` features a token stands for."""
        return [self.features[i] for i in self._expand[self.token_id(token)]]

    def row_of(self, item: Hashable) -> int:
        try:
            return self._row[item]
        except KeyError:
            raise LlmrecError(f"unknown item {item!r}") from None

    # --- target: one item, deterministic -------------------------------------------------------------------
    def segment_item(self, item: Hashable) -> list[int]:
        """Token ids of ``item`` alone (merges inside its set by priority; newest token first)."""
        r = self.row_of(item)
        hit = self._target_cache.get(r)
        if hit is None:
            hit = self._segment_set(self.item_features[r].tolist())
            self._target_cache[r] = hit
        return list(hit)

    def _segment_set(self, toks: list[int]) -> list[int]:
        toks = list(toks)
        while True:
            best = None
            for p in range(len(toks)):
                for q in range(p + 1, len(toks)):
                    x, y = toks[p], toks[q]
                    k = self._rank.get((x, y) if x <= y else (y, x))
                    if k is not None and (best is None or (self.counts[k], -k) > (self.counts[best[0]], -best[0])):
                        best = (k, x, y)
            if best is None:
                return toks
            k, x, y = best
            toks = [self.n_init + k] + [t for t in toks if t != x and t != y]

    def item_tokens(self, item: Hashable) -> list[str]:
        """The target token strings of ``item``."""
        return [self.token(i) for i in self.segment_item(item)]

    def item_text(self, item: Hashable) -> str:
        return "".join(self.item_tokens(item))

    # SidTable-compatible names, so code written for RQ SIDs can take an ActionPiece tokenizer
    def item_sid(self, item: Hashable) -> str:
        """``item``'s target as one string (``<ap_31877><ap_5120>``), like :meth:`SidTable.item_sid`."""
        return self.item_text(item)

    def decode_item(self, text: str) -> Hashable | None:
        """The item of the first complete ActionPiece target in ``text`` (like :meth:`SidTable.decode_item`)."""
        ids = self.parse(text)
        for s in range(len(ids)):
            covered = 0
            for e in range(s, len(ids)):
                covered += len(self._expand[ids[e]]) if ids[e] < self.vocab_size else self.n_positions + 1
                if covered >= self.n_positions:
                    if covered == self.n_positions:
                        it = self.decode(ids[s:e + 1])
                        if it is not None:
                            return it
                    break
        return None

    def target_sequences(self) -> dict:
        """``{item id: [token, ...]}`` for every item: what a constrained-decoding trie is built from."""
        return {it: self.item_tokens(it) for it in self.item_ids}

    # --- history: set permutation + BPE by rank --------------------------------------------------------------
    def segment_history(self, items: Sequence[Hashable], rng: np.random.Generator | int | None = None) -> list[int]:
        """Token ids of a history. ``rng`` (a Generator or a seed) shuffles each item's features first."""
        if rng is not None and not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        seq: list[int] = []
        for it in items:
            f = self.item_features[self.row_of(it)]
            seq.extend((rng.permutation(f) if rng is not None else f).tolist())
        return self._bpe(seq)

    def history_tokens(self, items: Sequence[Hashable], rng: np.random.Generator | int | None = None) -> list[str]:
        return [self.token(i) for i in self.segment_history(items, rng)]

    def history_variants(self, items: Sequence[Hashable], q: int, seed: int = 0) -> list[list[str]]:
        """``q`` segmentations of one history for inference-time ensembling (seeded, reproducible)."""
        rng = np.random.default_rng(seed)
        return [self.history_tokens(items, rng) for _ in range(q)]

    def _bpe(self, seq: list[int]) -> list[int]:
        """Apply merges by rank (lowest first; ties: leftmost) to adjacent tokens of ``seq``."""
        n = len(seq)
        if n < 2 or not self._rank:
            return list(seq)
        tok = list(seq)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        alive = [True] * n
        rank = self._rank
        heap = []
        for i in range(n - 1):
            x, y = tok[i], tok[i + 1]
            k = rank.get((x, y) if x <= y else (y, x))
            if k is not None:
                heap.append((k, i, x, tok[i + 1]))
        heapq.heapify(heap)
        while heap:
            k, i, x, y = heapq.heappop(heap)
            j = nxt[i] if alive[i] else -1
            if j < 0 or tok[i] != x or tok[j] != y:
                continue  # stale
            tok[i] = self.n_init + k
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            for l, r in ((prv[i], i), (i, nxt[i])):
                if l >= 0 and r >= 0:
                    a, b = tok[l], tok[r]
                    kk = rank.get((a, b) if a <= b else (b, a))
                    if kk is not None:
                        heapq.heappush(heap, (kk, l, a, b))
        return [tok[i] for i in range(n) if alive[i]]

    # --- decoding ----------------------------------------------------------------------------------------------
    @staticmethod
    def parse(text: str) -> list[int]:
        """Token ids of every ``<ap_N>`` in ``text``, in order."""
        return [int(x) for x in _TOKEN_RE.findall(text)]

    def decode(self, tokens: Iterable[str | int], canonical: bool = False) -> Hashable | None:
        """The item written by ``tokens``, or ``None``.

        Rejected: unknown tokens, a position covered twice or not at all, features that are no item's, and
        (with ``canonical=True``) any segmentation other than the item's target one.
        """
        ids = []
        for t in tokens:
            try:
                ids.append(self.token_id(t))
            except LlmrecError:
                return None
        m = self.n_positions
        slot = [-1] * m
        for i in ids:
            for f in self._expand[i]:
                p = self._pos[f]
                if slot[p] >= 0:
                    return None
                slot[p] = f
        if min(slot, default=-1) < 0:
            return None
        r = self._item_of.get(tuple(slot))
        if r is None:
            return None
        item = self.item_ids[r]
        if canonical and ids != self.segment_item(item):
            return None
        return item

    def decode_text(self, text: str, canonical: bool = False) -> Hashable | None:
        return self.decode(self.parse(text), canonical=canonical)

    # --- persistence -----------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``vocab.json``, ``merges.json``, ``item_features.json`` and ``targets.json`` (no pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tokens = []
        for i in range(self.vocab_size):
            entry = {"token": self.token(i), "features": [[p, v] for p, v in self.token_features(i)]}
            if i >= self.n_init:
                a, b = self.merges[i - self.n_init]
                entry["merge"] = [self.token(a), self.token(b)]
                entry["weight"] = float(self.counts[i - self.n_init] / self.scale)
            tokens.append(entry)
        int_ids = all(isinstance(x, (int, np.integer)) for x in self.item_ids)
        write_json(folder / "vocab.json", {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "token_format": TOKEN_FORMAT,
            "n_positions": self.n_positions, "position_names": self.position_names, "n_initial": self.n_init,
            "vocab_size": self.vocab_size, "weight_scale": self.scale, "item_id_type": "int" if int_ids else "str",
            "tokens": tokens,
        })
        write_json(folder / "merges.json", [
            [self.token(a), self.token(b), self.token(self.n_init + k), float(c / self.scale)]
            for k, ((a, b), c) in enumerate(zip(self.merges.tolist(), self.counts.tolist()))
        ])
        write_json(folder / "item_features.json", {
            str(it): [self.features[t][1] for t in row] for it, row in zip(self.item_ids, self.item_features.tolist())
        })
        write_json(folder / "targets.json", {str(it): self.item_tokens(it) for it in self.item_ids})

    @classmethod
    def load(cls, folder: str | Path) -> "ActionPiece":
        folder = Path(folder)
        meta = read_json(folder / "vocab.json")
        if meta.get("format") != FORMAT_NAME:
            raise LlmrecError(f"{folder / 'vocab.json'}: not an ActionPiece vocabulary (format {meta.get('format')!r})")
        n_init = int(meta["n_initial"])
        scale = int(meta["weight_scale"])
        toks = meta["tokens"]
        features = [(int(t["features"][0][0]), str(t["features"][0][1])) for t in toks[:n_init]]
        merges, counts = [], []
        for k, t in enumerate(toks[n_init:]):
            if "merge" not in t:
                raise LlmrecError(f"{folder / 'vocab.json'}: token {t.get('token')} has no 'merge'")
            merges.append([int(_TOKEN_RE.fullmatch(x).group(1)) for x in t["merge"]])
            counts.append(int(round(float(t["weight"]) * scale)))
        index = {f: i for i, f in enumerate(features)}
        raw = read_json(folder / "item_features.json")
        as_int = meta.get("item_id_type") == "int"
        ids, rows = [], []
        for key, vals in raw.items():
            if len(vals) != meta["n_positions"]:
                raise LlmrecError(f"{folder / 'item_features.json'}, item {key!r}: {len(vals)} features, "
                                  f"expected {meta['n_positions']}")
            try:
                rows.append([index[(p, str(v))] for p, v in enumerate(vals)])
            except KeyError as e:
                raise LlmrecError(f"{folder / 'item_features.json'}, item {key!r}: feature {e} not in the "
                                  "vocabulary") from None
            ids.append(int(key) if as_int else key)
        return cls(features, np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(counts, dtype=np.int64),
                   scale, ids, np.array(rows, dtype=np.int64).reshape(len(ids), -1),
                   position_names=list(meta.get("position_names") or []))


def fuse_ranked_lists(ranked_lists: Sequence[Sequence[Hashable]], k: int | None = None,
                      with_scores: bool = False) -> list:
    """Fuse ranked lists (e.g. from ``q`` history segmentations): score = sum of ``1 / log2(rank + 2)``.

    ``rank`` is 0-based; an item missing from a list gets nothing from it; an item repeated in one list counts
    at its best rank there. Ties go to the item with the better best rank, then to the first seen.
    ``with_scores=True`` returns ``(items, scores)``.
    """
    score: dict = {}
    best: dict = {}
    order: dict = {}
    for lst in ranked_lists:
        seen = set()
        for r, it in enumerate(lst):
            if it in seen:
                continue
            seen.add(it)
            score[it] = score.get(it, 0.0) + 1.0 / np.log2(r + 2)
            best[it] = min(best.get(it, r), r)
            order.setdefault(it, len(order))
    out = sorted(score, key=lambda it: (-score[it], best[it], order[it]))
    out = out if k is None else out[:k]
    return (out, [score[it] for it in out]) if with_scores else out
