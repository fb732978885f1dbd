"""Compiled (numba) kernels of the incremental ActionPiece vocabulary builder.

Semantics are exactly those of :mod:`.naive` (read that first); this module only makes them fast:

* the corpus lives in flat arrays: regular node ``r`` (one per item occurrence, ids in sequence order) has its
  tokens in ``tok[r, :sz[r]]``, the context slot after it in ``ctx[r]`` (-1 = empty), links ``nxt``/``prv``;
* every token keeps a list of the places it was put (``occ_*``; entries go stale lazily), so a merge visits
  only the places holding its rarer token and recounts only the terms (inside an item, between two items)
  around them: subtract the old contributions, apply the merge, add the new ones;
* pair counts are exact integers in an open-addressing hash table keyed by ``min << 32 | max``;
* a lazily invalidated max-heap (count desc, key asc) finds the next merge: increases push a new entry,
  decreases push nothing; a popped entry whose count is stale is re-pushed with the current count.

Kernels return a status so the Python side can grow the hash table or the heap and call again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# status codes of run_merges
DONE, GROW_HASH, GROW_HEAP, EXHAUSTED = 0, 1, 2, 3
# slots of the ``scal`` int64 array (counters shared between calls)
S_USED, S_HEAP_N, S_N_OCC, S_DONE, S_EPOCH, S_TOKENS, S_NTOUCH = 0, 1, 2, 3, 4, 5, 7
N_SCAL = 8
# columns of the hash table
K_KEY, K_VAL, K_EPOCH, K_OLD = 0, 1, 2, 3

_HMUL = np.uint64(0x9E3779B97F4A7C15)
MAX_LOAD = 0.6


@njit(cache=True, inline="always")
def pair_key(x, y):
    if x <= y:
        return (np.int64(x) << 32) | np.int64(y)
    return (np.int64(y) << 32) | np.int64(x)


@njit(cache=True, inline="always")
def _find(table, bits, key):
    """Slot of ``key`` or of the empty slot where it would go."""
    mask = (np.int64(1) << bits) - 1
    i = np.int64((np.uint64(key) * _HMUL) >> np.uint64(64 - bits))
    while True:
        k = table[i, K_KEY]
        if k == key or k == -1:
            return i
        i = (i + 1) & mask


@njit(cache=True)
def _add(table, bits, scal, key, delta, epoch, touched):
    i = _find(table, bits, key)
    if table[i, K_KEY] == -1:
        table[i, K_KEY] = key
        table[i, K_VAL] = 0
        table[i, K_EPOCH] = 0
        scal[S_USED] += 1
    if table[i, K_EPOCH] != epoch:
        table[i, K_EPOCH] = epoch
        table[i, K_OLD] = table[i, K_VAL]
        touched[scal[S_NTOUCH]] = i
        scal[S_NTOUCH] += 1
    table[i, K_VAL] += delta


@njit(cache=True)
def _term_inside(z, sgn, tok, sz, scale, table, bits, scal, epoch, touched):
    M = sz[z]
    if M < 2:
        return
    w = sgn * (2 * scale // M)
    for p in range(M):
        x = tok[z, p]
        for q in range(p + 1, M):
            _add(table, bits, scal, pair_key(x, tok[z, q]), w, epoch, touched)


@njit(cache=True)
def _term_link(z, sgn, tok, sz, ctx, nxt, scale, table, bits, scal, epoch, touched):
    n = nxt[z]
    if n < 0:
        return
    A = sz[z]
    B = sz[n]
    k = ctx[z]
    if k >= 0:
        if A > 0:
            w = sgn * (scale // A)
            for p in range(A):
                _add(table, bits, scal, pair_key(tok[z, p], k), w, epoch, touched)
        if B > 0:
            w = sgn * (scale // B)
            for q in range(B):
                _add(table, bits, scal, pair_key(k, tok[n, q]), w, epoch, touched)
    elif A > 0 and B > 0:
        w = sgn * (scale // (A * B))
        for p in range(A):
            x = tok[z, p]
            for q in range(B):
                _add(table, bits, scal, pair_key(x, tok[n, q]), w, epoch, touched)


@njit(cache=True)
def count_all(tok, sz, ctx, nxt, seq_head, scale, table, bits, scal, touched):
    """Add every term of the corpus to ``table`` (a fresh table: epochs are ignored afterwards)."""
    for s in range(seq_head.shape[0]):
        z = seq_head[s]
        while z >= 0:
            scal[S_NTOUCH] = 0
            _term_inside(z, 1, tok, sz, scale, table, bits, scal, -1, touched)
            scal[S_NTOUCH] = 0
            _term_link(z, 1, tok, sz, ctx, nxt, scale, table, bits, scal, -1, touched)
            z = nxt[z]
    scal[S_NTOUCH] = 0


@njit(cache=True)
def rehash(old, new, bits):
    """Move every used slot of ``old`` into the empty table ``new`` (epochs reset)."""
    used = 0
    for i in range(old.shape[0]):
        key = old[i, K_KEY]
        if key != -1:
            j = _find(new, bits, key)
            new[j, K_KEY] = key
            new[j, K_VAL] = old[i, K_VAL]
            new[j, K_EPOCH] = 0
            used += 1
    return used


# ---------------------------------------------------------------------------------------------- heap
@njit(cache=True, inline="always")
def _better(heap, i, j):
    ci = heap[i, 0]
    cj = heap[j, 0]
    return ci > cj or (ci == cj and heap[i, 1] < heap[j, 1])


@njit(cache=True)
def _sift_down(heap, n, i):
    while True:
        l = 2 * i + 1
        if l >= n:
            return
        best = l
        r = l + 1
        if r < n and _better(heap, r, l):
            best = r
        if _better(heap, best, i):
            for c in range(2):
                t = heap[i, c]
                heap[i, c] = heap[best, c]
                heap[best, c] = t
            i = best
        else:
            return


@njit(cache=True)
def _heap_push(heap, scal, cnt, key):
    i = scal[S_HEAP_N]
    scal[S_HEAP_N] += 1
    heap[i, 0] = cnt
    heap[i, 1] = key
    while i > 0:
        p = (i - 1) // 2
        if _better(heap, i, p):
            for c in range(2):
                t = heap[i, c]
                heap[i, c] = heap[p, c]
                heap[p, c] = t
            i = p
        else:
            break


@njit(cache=True)
def rebuild_heap(table, heap, scal):
    """Heap := one entry per pair with a positive count. Returns False if the heap is too small."""
    n = 0
    for i in range(table.shape[0]):
        if table[i, K_KEY] != -1 and table[i, K_VAL] > 0:
            if n >= heap.shape[0]:
                return False
            heap[n, 0] = table[i, K_VAL]
            heap[n, 1] = table[i, K_KEY]
            n += 1
    scal[S_HEAP_N] = n
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(heap, n, i)
    return True


@njit(cache=True)
def _pop_best(table, bits, heap, scal):
    """(count, key) of the heaviest pair (ties: smallest key); (0, -1) when no pair has a positive count."""
    while scal[S_HEAP_N] > 0:
        cnt = heap[0, 0]
        key = heap[0, 1]
        n = scal[S_HEAP_N] - 1
        scal[S_HEAP_N] = n
        heap[0, 0] = heap[n, 0]
        heap[0, 1] = heap[n, 1]
        _sift_down(heap, n, 0)
        cur = table[_find(table, bits, key), K_VAL]
        if cur == cnt:
            return cnt, key
        if cur > 0 and cur < cnt:
            _heap_push(heap, scal, cur, key)
    return np.int64(0), np.int64(-1)


# ---------------------------------------------------------------------------------------------- corpus
@njit(cache=True, inline="always")
def _has(tok, sz, z, t):
    for p in range(sz[z]):
        if tok[z, p] == t:
            return True
    return False


@njit(cache=True, inline="always")
def _remove(tok, sz, z, t):
    n = sz[z]
    for p in range(n):
        if tok[z, p] == t:
            tok[z, p] = tok[z, n - 1]
            sz[z] = n - 1
            return


@njit(cache=True)
def _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, t, loc):
    e = scal[S_N_OCC]
    scal[S_N_OCC] = e + 1
    occ_loc[e] = loc
    occ_next[e] = occ_head[t]
    occ_head[t] = e
    occ_len[t] += 1


@njit(cache=True)
def init_occurrences(tok, sz, occ_head, occ_len, occ_loc, occ_next, scal):
    for z in range(tok.shape[0]):
        for p in range(sz[z]):
            _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, tok[z, p], z)


@njit(cache=True)
def _grow(buf, need):
    if need <= buf.shape[0]:
        return buf
    out = np.empty(max(need, 2 * buf.shape[0]), dtype=buf.dtype)
    out[: buf.shape[0]] = buf
    return out


@njit(cache=True)
def run_merges(n_todo, n_init, scale, naive,
               tok, sz, ctx, nxt, prv, alive, seq_head, seq_of,
               occ_head, occ_len, occ_loc, occ_next,
               table, bits, heap, scal, ins_mark, link_mark,
               out_pair, out_cnt, out_apps):
    """Learn up to ``n_todo`` merges. Returns a status code (see the module constants).

    ``naive=True`` is the full-recount baseline: the merge walks every node of the corpus and all counts are
    recomputed from scratch afterwards (same application code, no inverted index, no incremental update).
    """
    N = tok.shape[0]
    m = tok.shape[1]
    cand = np.empty(1024, dtype=np.int64)
    terms_in = np.empty(1024, dtype=np.int64)
    terms_ln = np.empty(1024, dtype=np.int64)
    touched = np.empty(1024, dtype=np.int64)
    cap = table.shape[0]
    for _ in range(n_todo):
        done = scal[S_DONE]
        if naive:
            best_cnt = np.int64(0)
            best_key = np.int64(-1)
            for i in range(cap):
                v = table[i, K_VAL]
                if table[i, K_KEY] != -1 and v > 0:
                    if v > best_cnt or (v == best_cnt and table[i, K_KEY] < best_key):
                        best_cnt = v
                        best_key = table[i, K_KEY]
        else:
            best_cnt, best_key = _pop_best(table, bits, heap, scal)
        if best_key < 0:
            return EXHAUSTED
        a = best_key >> 32
        b = best_key & 0xFFFFFFFF
        c = n_init + done

        # ---- places where the pair may be: around every valid occurrence of the rarer token
        nc = 0
        if naive:
            cand = _grow(cand, N)
            for s in range(seq_head.shape[0]):
                z = seq_head[s]
                while z >= 0:
                    cand[nc] = z
                    nc += 1
                    z = nxt[z]
        else:
            t = a if occ_len[a] <= occ_len[b] else b
            o = b if t == a else a
            cand = _grow(cand, 3 * occ_len[t] + 3)
            e = occ_head[t]
            pe = -1
            while e >= 0:
                loc = occ_loc[e]
                ne = occ_next[e]
                if loc < N:
                    valid = alive[loc] and _has(tok, sz, loc, t)
                else:
                    valid = alive[loc - N] and ctx[loc - N] == t
                if not valid:  # drop the stale entry
                    if pe < 0:
                        occ_head[t] = ne
                    else:
                        occ_next[pe] = ne
                    occ_len[t] -= 1
                else:
                    pe = e
                    if loc < N:
                        x = loc
                        if a != b and _has(tok, sz, x, o):
                            cand[nc] = x
                            nc += 1
                        p = prv[x]
                        if p >= 0:
                            if (ctx[p] == o) if ctx[p] >= 0 else _has(tok, sz, p, o):
                                cand[nc] = p
                                nc += 1
                        y = nxt[x]
                        if y >= 0:
                            if (ctx[x] == o) if ctx[x] >= 0 else _has(tok, sz, y, o):
                                cand[nc] = x
                                nc += 1
                    else:
                        x = loc - N
                        y = nxt[x]
                        if _has(tok, sz, x, o) or (y >= 0 and _has(tok, sz, y, o)):
                            cand[nc] = x
                            nc += 1
                e = ne
        steps = np.unique(cand[:nc])
        ns = steps.shape[0]

        # ---- capacity for this merge (touched pairs, new keys, heap pushes)
        bound = ns * (m * (m - 1) + 4 * m * m) * 2 + 16
        if not naive:
            if scal[S_USED] + bound > MAX_LOAD * cap:
                _heap_push(heap, scal, best_cnt, best_key)
                return GROW_HASH
            if scal[S_HEAP_N] + bound > heap.shape[0]:
                _heap_push(heap, scal, best_cnt, best_key)
                if not rebuild_heap(table, heap, scal) or scal[S_HEAP_N] + bound > heap.shape[0]:
                    return GROW_HEAP
        touched = _grow(touched, bound)
        epoch = scal[S_EPOCH] + 1
        scal[S_EPOCH] = epoch
        scal[S_NTOUCH] = 0

        # ---- subtract the old contributions of every term the merge can change
        ni = 0
        nl = 0
        if not naive:
            terms_in = _grow(terms_in, 2 * ns)
            terms_ln = _grow(terms_ln, 4 * ns)
            for j in range(ns):
                y = steps[j]
                n1 = nxt[y]
                for z in (y, n1):
                    if z >= 0 and ins_mark[z] != epoch:
                        ins_mark[z] = epoch
                        terms_in[ni] = z
                        ni += 1
                p0 = prv[y]
                # an empty item before y may lose its slot's token to y and disappear, which re-links the one
                # before it: that link changes too
                pp = prv[p0] if p0 >= 0 and sz[p0] == 0 else np.int64(-1)
                for z in (pp, p0, y, n1):
                    if z >= 0 and link_mark[z] != epoch:
                        link_mark[z] = epoch
                        terms_ln[nl] = z
                        nl += 1
            for j in range(ni):
                _term_inside(terms_in[j], -1, tok, sz, scale, table, bits, scal, epoch, touched)
            for j in range(nl):
                _term_link(terms_ln[j], -1, tok, sz, ctx, nxt, scale, table, bits, scal, epoch, touched)

        # ---- apply the merge, left to right
        app0 = 0
        app1 = 0
        app2 = 0
        for j in range(ns):
            y = steps[j]
            if a != b and _has(tok, sz, y, a) and _has(tok, sz, y, b):
                _remove(tok, sz, y, a)
                _remove(tok, sz, y, b)
                tok[y, sz[y]] = c
                sz[y] += 1
                _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, c, y)
                app0 += 1
            n1 = nxt[y]
            if n1 < 0:
                continue
            if ctx[y] >= 0:
                for z in (y, n1):
                    k = ctx[y]
                    if k == a and _has(tok, sz, z, b):
                        _remove(tok, sz, z, b)
                        ctx[y] = c
                        _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, c, N + y)
                        app1 += 1
                    elif k == b and _has(tok, sz, z, a):
                        _remove(tok, sz, z, a)
                        ctx[y] = c
                        _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, c, N + y)
                        app1 += 1
            else:
                if _has(tok, sz, y, a) and _has(tok, sz, n1, b):
                    _remove(tok, sz, y, a)
                    _remove(tok, sz, n1, b)
                    ctx[y] = c
                    _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, c, N + y)
                    app2 += 1
                elif _has(tok, sz, y, b) and _has(tok, sz, n1, a):
                    _remove(tok, sz, y, b)
                    _remove(tok, sz, n1, a)
                    ctx[y] = c
                    _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, c, N + y)
                    app2 += 1

        # ---- empty items: take the token of the slot before; then drop empty item + empty slot
        for phase in range(2):
            for j in range(ns):
                y = steps[j]
                # phase 0 can empty the slot before y, so phase 1 also looks at the item before y
                for z in (prv[y] if phase == 1 else np.int64(-1), y, nxt[y]):
                    if z < 0 or not alive[z] or sz[z] != 0:
                        continue
                    p = prv[z]
                    if phase == 0:
                        if p >= 0 and ctx[p] >= 0:
                            tok[z, 0] = ctx[p]
                            sz[z] = 1
                            _occ_push(occ_head, occ_len, occ_loc, occ_next, scal, ctx[p], z)
                            ctx[p] = -1
                    else:
                        n1 = nxt[z]
                        if n1 >= 0 and ctx[z] < 0:
                            if p >= 0:
                                nxt[p] = n1
                            else:
                                seq_head[seq_of[z]] = n1
                            prv[n1] = p
                            alive[z] = False

        # ---- add the new contributions
        if naive:
            table[:, K_KEY] = -1
            table[:, K_VAL] = 0
            scal[S_USED] = 0
            count_all(tok, sz, ctx, nxt, seq_head, scale, table, bits, scal, touched)
        else:
            for j in range(ni):
                z = terms_in[j]
                if alive[z]:
                    _term_inside(z, 1, tok, sz, scale, table, bits, scal, epoch, touched)
            for j in range(nl):
                z = terms_ln[j]
                if alive[z]:
                    _term_link(z, 1, tok, sz, ctx, nxt, scale, table, bits, scal, epoch, touched)
            for j in range(scal[S_NTOUCH]):
                i = touched[j]
                if table[i, K_VAL] > table[i, K_OLD]:
                    _heap_push(heap, scal, table[i, K_VAL], table[i, K_KEY])
        scal[S_NTOUCH] = 0

        out_pair[done, 0] = a
        out_pair[done, 1] = b
        out_cnt[done] = best_cnt
        out_apps[done, 0] = app0
        out_apps[done, 1] = app1
        out_apps[done, 2] = app2
        scal[S_TOKENS] -= app0 + app1 + app2
        scal[S_DONE] = done + 1
    return DONE


@njit(cache=True)
def compare_tables(inc, inc_bits, fresh):
    """Number of pairs whose incremental count differs from a fresh recount, and the first such key."""
    bad = 0
    first = np.int64(-1)
    nz_inc = 0
    for i in range(inc.shape[0]):
        if inc[i, K_KEY] != -1 and inc[i, K_VAL] != 0:
            nz_inc += 1
    nz_fresh = 0
    fresh_bits = np.int64(np.log2(fresh.shape[0]) + 0.5)
    for i in range(fresh.shape[0]):
        key = fresh[i, K_KEY]
        if key != -1 and fresh[i, K_VAL] != 0:
            nz_fresh += 1
            j = _find(inc, inc_bits, key)
            if inc[j, K_KEY] != key or inc[j, K_VAL] != fresh[i, K_VAL]:
                bad += 1
                if first < 0:
                    first = key
    if bad == 0 and nz_inc != nz_fresh:
        bad = abs(nz_inc - nz_fresh)
        # find a pair the incremental table has but the recount does not
        for i in range(inc.shape[0]):
            key = inc[i, K_KEY]
            if key != -1 and inc[i, K_VAL] != 0:
                j = _find(fresh, fresh_bits, key)
                if fresh[j, K_KEY] != key:
                    first = key
                    break
    return bad, first
