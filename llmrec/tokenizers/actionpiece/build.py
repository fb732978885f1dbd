"""Learn ActionPiece merges from item-feature sequences (incremental, exact counts).

:func:`learn_merges` lays the corpus out in flat arrays and drives the compiled kernels in chunks (progress
bar, growth of the hash table and heap, optional verification against a full recount).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.tokenizers.actionpiece.naive import weight_scale

log = logging.getLogger(__name__)

MAX_FEATURES = 12  # weights are exact int64: lcm(1..m)^2 * corpus weight must stay far below 2^63


@dataclass
class MergeResult:
    """What :func:`learn_merges` learned. Merge ``i`` creates token ``n_init + i``."""

    pairs: np.ndarray          # [n, 2] int64 (left <= right)
    counts: np.ndarray         # [n] int64, weight * scale at the time of the merge
    apps: np.ndarray           # [n, 3] applications: same item, item-context slot, adjacent items
    scale: int
    n_init: int
    stats: dict = field(default_factory=dict)

    @property
    def weights(self) -> np.ndarray:
        return self.counts / self.scale


def _kernels():
    try:
        from llmrec.tokenizers.actionpiece import _kernels as K
    except ImportError as e:  # pragma: no cover - numba is a core dependency
        raise LlmrecError("ActionPiece needs numba (pip install numba); it is a core dependency of llmrec") from e
    return K


def _layout(item_tokens: np.ndarray, sequences: Sequence[np.ndarray]):
    """Flat corpus arrays: one regular node per item occurrence, nodes of a sequence consecutive."""
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    seqs = [s for s in seqs if len(s)]
    if not seqs:
        raise LlmrecError("no non-empty training sequence to learn ActionPiece merges from")
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs)
    N = len(flat)
    tok = np.ascontiguousarray(item_tokens[flat]).astype(np.int32)
    m = tok.shape[1]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    ends = starts + lens - 1
    idx = np.arange(N, dtype=np.int64)
    nxt = idx + 1
    nxt[ends] = -1
    prv = idx - 1
    prv[starts] = -1
    seq_of = np.repeat(np.arange(len(seqs), dtype=np.int64), lens)
    return dict(
        tok=tok, sz=np.full(N, m, dtype=np.int64), ctx=np.full(N, -1, dtype=np.int64), nxt=nxt, prv=prv,
        alive=np.ones(N, dtype=np.bool_), seq_head=starts.astype(np.int64), seq_of=seq_of,
    ), len(seqs)


def _new_table(bits: int) -> np.ndarray:
    t = np.zeros((1 << bits, 4), dtype=np.int64)
    t[:, 0] = -1
    return t


def learn_merges(item_tokens: np.ndarray, sequences: Sequence[np.ndarray], n_init: int, n_merges: int, *,
                 check_every: int = 0, naive: bool = False, progress: bool = True,
                 chunk: int = 512, keep_counts: bool = False) -> MergeResult:
    """Learn up to ``n_merges`` merges.

    ``item_tokens[i]`` are the ``m`` initial token ids (``< n_init``) of item row ``i``; ``sequences`` hold
    item rows. ``check_every=k`` recounts every pair from scratch after every ``k``-th merge and raises if a
    single count differs (a debug mode; ``1`` checks after every merge). ``naive=True`` runs the full-recount
    baseline instead of the incremental updates (for benchmarks). ``keep_counts=True`` puts the final pair
    counts (``{(left, right): count}``, zeros omitted) in ``stats["pair_counts"]`` (for tests).
    """
    K = _kernels()
    item_tokens = np.asarray(item_tokens)
    if item_tokens.ndim != 2:
        raise LlmrecError(f"item tokens must be a [n_items, m] array, got shape {item_tokens.shape}")
    m = item_tokens.shape[1]
    if not 1 <= m <= MAX_FEATURES:
        raise LlmrecError(f"ActionPiece supports 1..{MAX_FEATURES} features per item, got {m}")
    if n_init + n_merges >= 2**31:
        raise LlmrecError("vocabulary too large (token ids must fit in 31 bits)")
    t0 = time.perf_counter()
    st, n_seq = _layout(item_tokens, sequences)
    N = st["tok"].shape[0]
    scale = weight_scale(m)
    if scale * N * (m + 1) >= 2**62:
        raise LlmrecError(f"corpus too large for exact int64 counts with {m} features per item")

    V = n_init + n_merges
    occ_head = np.full(V, -1, dtype=np.int64)
    occ_len = np.zeros(V, dtype=np.int64)
    pool = 3 * N * m + 16
    occ_loc = np.empty(pool, dtype=np.int64)
    occ_next = np.empty(pool, dtype=np.int64)
    scal = np.zeros(K.N_SCAL, dtype=np.int64)
    K.init_occurrences(st["tok"], st["sz"], occ_head, occ_len, occ_loc, occ_next, scal)
    scal[K.S_TOKENS] = N * m

    # distinct initial pairs <= min(pair instances, all token pairs); keep the load under MAX_LOAD
    bound = min(N * (m * (m - 1) // 2 + m * m), n_init * (n_init + 1) // 2) + 1024
    bits = max(16, int(np.ceil(np.log2(bound / K.MAX_LOAD))))
    table = _new_table(bits)
    touched = np.empty(max(1024, m * m), dtype=np.int64)
    K.count_all(st["tok"], st["sz"], st["ctx"], st["nxt"], st["seq_head"], scale, table, bits, scal, touched)
    heap = np.empty((max(1 << 16, 2 * int(scal[K.S_USED])), 2), dtype=np.int64)
    if not naive:
        K.rebuild_heap(table, heap, scal)
    ins_mark = np.zeros(N, dtype=np.int64)
    link_mark = np.zeros(N, dtype=np.int64)
    out_pair = np.zeros((n_merges, 2), dtype=np.int64)
    out_cnt = np.zeros(n_merges, dtype=np.int64)
    out_apps = np.zeros((n_merges, 3), dtype=np.int64)
    init_pairs = int(scal[K.S_USED])
    t_init = time.perf_counter() - t0

    bar = None
    if progress and n_merges > 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_merges, desc="ActionPiece merges", unit="merge", mininterval=1.0)
    step = 1 if naive else (check_every if check_every > 0 else chunk)
    grow_events = 0
    try:
        while scal[K.S_DONE] < n_merges:
            todo = int(min(step - scal[K.S_DONE] % step, n_merges - scal[K.S_DONE]))
            before = int(scal[K.S_DONE])
            status = K.run_merges(todo, n_init, scale, naive, st["tok"], st["sz"], st["ctx"], st["nxt"],
                                  st["prv"], st["alive"], st["seq_head"], st["seq_of"], occ_head, occ_len,
                                  occ_loc, occ_next, table, bits, heap, scal, ins_mark, link_mark,
                                  out_pair, out_cnt, out_apps)
            if bar is not None:
                bar.update(int(scal[K.S_DONE]) - before)
            if status == K.GROW_HASH:
                bits += 1
                new = _new_table(bits)
                scal[K.S_USED] = K.rehash(table, new, bits)
                table = new
                grow_events += 1
            elif status == K.GROW_HEAP:
                heap = np.empty((2 * heap.shape[0], 2), dtype=np.int64)
                K.rebuild_heap(table, heap, scal)
                grow_events += 1
            elif status == K.EXHAUSTED:
                log.warning("no pair left to merge after %d merges; the vocabulary stops at %d tokens",
                            int(scal[K.S_DONE]), n_init + int(scal[K.S_DONE]))
                break
            if check_every > 0 and status == K.DONE and scal[K.S_DONE] % check_every == 0:
                verify_counts(st, table, bits, scale, int(scal[K.S_DONE]))
            if naive and scal[K.S_USED] > 0.45 * table.shape[0]:
                bits += 1
                new = _new_table(bits)
                scal[K.S_USED] = K.rehash(table, new, bits)
                table = new
    finally:
        if bar is not None:
            bar.close()
    done = int(scal[K.S_DONE])
    stats = {
        "n_sequences": n_seq, "n_item_occurrences": N, "features_per_item": m, "n_init": n_init,
        "merges": done, "initial_pairs": init_pairs, "pairs_in_table": int(scal[K.S_USED]),
        "hash_slots": int(table.shape[0]), "heap_capacity": int(heap.shape[0]), "grow_events": grow_events,
        "tokens_before": N * m, "tokens_after": int(scal[K.S_TOKENS]),
        "init_seconds": round(t_init, 3), "total_seconds": round(time.perf_counter() - t0, 3),
        "naive": naive,
    }
    if keep_counts:
        live = (table[:, 0] != -1) & (table[:, 1] != 0)
        stats["pair_counts"] = {(int(k >> 32), int(k & 0xFFFFFFFF)): int(v)
                                for k, v in zip(table[live, 0].tolist(), table[live, 1].tolist())}
    return MergeResult(out_pair[:done], out_cnt[:done], out_apps[:done], scale, n_init, stats)


def verify_counts(st: dict, table: np.ndarray, bits: int, scale: int, at_merge: int) -> None:
    """Recount every pair from scratch and raise if the incremental table differs anywhere."""
    K = _kernels()
    fresh = _new_table(bits)
    scal = np.zeros(K.N_SCAL, dtype=np.int64)
    touched = np.empty(max(1024, st["tok"].shape[1] ** 2), dtype=np.int64)
    K.count_all(st["tok"], st["sz"], st["ctx"], st["nxt"], st["seq_head"], scale, fresh, bits, scal, touched)
    bad, first = K.compare_tables(table, bits, fresh)
    if bad:
        raise AssertionError(f"ActionPiece counts diverged from a full recount after merge {at_merge}: "
                             f"{bad} pair(s) differ, e.g. ({first >> 32}, {first & 0xFFFFFFFF})")
