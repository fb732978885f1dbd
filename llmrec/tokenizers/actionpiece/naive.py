"""The readable specification of ActionPiece vocabulary construction: full recount after every merge.

This is the oracle the fast builder (:mod:`._kernels`) is tested against, and the "naive" side of
``benchmarks/actionpiece_build.py``. It keeps every sequence as Python lists and recounts every pair of the
whole corpus after each merge, so it is only usable for small corpora or a handful of merges.

Corpus model (as in the paper and the authors' code). A sequence is ``R0 C0 R1 C1 ... R(n-1)``: regular nodes
``Ri`` hold the token set of item ``i``; context slots ``Ci`` between two adjacent items hold at most one token.

Weights are kept as exact integers scaled by ``scale = lcm(1..m)**2`` (``m`` = features per item), so counts
compare exactly, tie-breaking is well defined and "counts equal a full recount" is an equality, not a tolerance:

* inside ``Ri`` with ``M`` tokens, each of the ``M(M-1)/2`` pairs adds ``2/M``;
* between ``Ri`` and ``Ri+1`` with an empty ``Ci``, each pair ``(x in Ri, y in Ri+1)`` adds ``1/(|Ri||Ri+1|)``;
* with a token ``k`` in ``Ci``, each ``(x in Ri, k)`` adds ``1/|Ri|`` and each ``(k, y in Ri+1)`` adds ``1/|Ri+1|``.

Pairs are unordered (``(min, max)``; a token may pair with itself across items). The heaviest pair wins; ties go
to the smallest ``(left, right)`` token ids. A merge ``(a, b) -> c`` walks each sequence left to right; at node
``Ri`` it (1) merges inside ``Ri`` if both are there (``c`` replaces them in ``Ri``), then (2) if ``Ci`` holds
a token, merges it with ``Ri`` and then with ``Ri+1`` (``c`` replaces it in ``Ci``, the partner leaves its
node), otherwise merges across ``Ri``/``Ri+1`` (``c`` goes into ``Ci``). Afterwards an emptied node takes the
token of the context slot before it, and an empty node followed by an empty slot is removed with that slot.
"""

from __future__ import annotations

import math
from typing import Sequence

# merge application kinds, in the order of the ``apps`` columns
KINDS = ("same_item", "item_context", "adjacent_items")


def weight_scale(m: int) -> int:
    """Integer scale that makes every pair weight with at most ``m`` tokens per item an integer."""
    l = math.lcm(*range(1, max(m, 1) + 1))
    return l * l


def _key(x: int, y: int) -> tuple[int, int]:
    return (x, y) if x <= y else (y, x)


def count_pairs(seqs, scale: int) -> dict[tuple[int, int], int]:
    """Weighted pair counts of the whole corpus (zero counts omitted)."""
    out: dict[tuple[int, int], int] = {}
    for regs, ctxs in seqs:
        for i, R in enumerate(regs):
            M = len(R)
            if M >= 2:
                w = 2 * scale // M
                for p in range(M):
                    for q in range(p + 1, M):
                        k = _key(R[p], R[q])
                        out[k] = out.get(k, 0) + w
            if i + 1 < len(regs):
                N = regs[i + 1]
                c = ctxs[i]
                if c >= 0:
                    if R:
                        w = scale // len(R)
                        for x in R:
                            k = _key(x, c)
                            out[k] = out.get(k, 0) + w
                    if N:
                        w = scale // len(N)
                        for y in N:
                            k = _key(c, y)
                            out[k] = out.get(k, 0) + w
                elif R and N:
                    w = scale // (len(R) * len(N))
                    for x in R:
                        for y in N:
                            k = _key(x, y)
                            out[k] = out.get(k, 0) + w
    return {k: v for k, v in out.items() if v}


def apply_merge(regs: list[list[int]], ctxs: list[int], a: int, b: int, c: int, apps: list[int]) -> None:
    """Apply the merge ``(a, b) -> c`` (``a <= b``) to one sequence in place; count applications in ``apps``."""
    n = len(regs)
    for i in range(n):
        R = regs[i]
        if a != b and a in R and b in R:
            regs[i] = [c] + [x for x in R if x != a and x != b]
            apps[0] += 1
        if i + 1 == n:
            break
        if ctxs[i] >= 0:
            for j in (i, i + 1):  # (Ri, Ci) first, then (Ci, Ri+1)
                st = regs[j]
                if ctxs[i] == a and b in st:
                    st.remove(b)
                    ctxs[i] = c
                    apps[1] += 1
                elif ctxs[i] == b and a in st:
                    st.remove(a)
                    ctxs[i] = c
                    apps[1] += 1
        else:
            R, N = regs[i], regs[i + 1]
            if a in R and b in N:
                R.remove(a)
                N.remove(b)
                ctxs[i] = c
                apps[2] += 1
            elif b in R and a in N:
                R.remove(b)
                N.remove(a)
                ctxs[i] = c
                apps[2] += 1
    # an emptied item takes the token of the context slot before it ...
    for i in range(1, len(regs)):
        if not regs[i] and ctxs[i - 1] >= 0:
            regs[i] = [ctxs[i - 1]]
            ctxs[i - 1] = -1
    # ... and an empty item followed by an empty slot disappears with it (the last item never does)
    i = 0
    while i < len(regs) - 1:
        if not regs[i] and ctxs[i] < 0:
            regs.pop(i)
            ctxs.pop(i)
        else:
            i += 1


def naive_train(sequences: Sequence[Sequence[Sequence[int]]], n_merges: int, n_init: int, m: int,
                time_limit: float | None = None):
    """Learn up to ``n_merges`` merges by full recount; ``sequences[s][i]`` = token ids of item ``i``.

    Returns ``(merges, scale)`` with ``merges = [(left, right, count, [same_item, item_context,
    adjacent_items]), ...]``; ``count / scale`` is the merge's weight. Stops early when no pair is left or
    ``time_limit`` seconds have passed.
    """
    import time

    t0 = time.perf_counter()
    scale = weight_scale(m)
    seqs = [([list(it) for it in s], [-1] * (len(s) - 1)) for s in sequences if len(s)]
    merges = []
    for step in range(n_merges):
        counts = count_pairs(seqs, scale)
        if not counts:
            break
        (a, b), w = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        c = n_init + step
        apps = [0, 0, 0]
        for regs, ctxs in seqs:
            apply_merge(regs, ctxs, a, b, c, apps)
        merges.append((a, b, w, apps))
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    return merges, scale
