"""Collision-free SIDs: two ways to give every item its own code tuple.

``digit`` (default; TIGER, hstu-semantic-id "uniq"): append one level; items sharing a tuple get 0, 1, 2, ... in
order of how well the codes reconstruct them (best first; ties by item id). Its codebook size is the largest
collision group, so it is as small as the data allows.

``reassign``: keep ``L`` levels; in every group of items sharing a tuple, the best-reconstructed item keeps its
code and the others move to the nearest *free* last-level codes of the same prefix (an optimal assignment per
prefix, ``scipy.optimize.linear_sum_assignment``). A prefix with more items than last-level codes cannot be
made unique this way: ``on_overflow="digit"`` then appends a digit (as above, zero for everyone else),
``"error"`` raises.
"""

from __future__ import annotations

import numpy as np

from llmrec.errors import LlmrecError

DEDUP = ("digit", "reassign", "none")


def group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inverse, sizes)``: the id of every row's tuple and the size of every tuple group."""
    codes = np.asarray(codes)
    if codes.shape[1] == 0:
        return np.zeros(len(codes), np.int64), np.array([len(codes)])
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inv.reshape(-1), counts


def collision_stats(codes: np.ndarray) -> dict:
    inv, sizes = group_ids(codes)
    return {"n_unique": int(len(sizes)), "collisions": int(len(codes) - len(sizes)),
            "items_in_collisions": int(sizes[sizes > 1].sum()), "largest_group": int(sizes.max()) if len(sizes) else 0,
            "n_groups_with_collisions": int((sizes > 1).sum())}


def add_digit(codes: np.ndarray, key: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Append the disambiguation digit. ``key`` (lower first, e.g. reconstruction error) orders each group;
    item order breaks ties. Returns ``(codes [n, L+1], digit codebook size)``."""
    codes = np.asarray(codes, np.int64)
    n = len(codes)
    inv, sizes = group_ids(codes)
    key = np.zeros(n) if key is None else np.asarray(key, np.float64)
    order = np.lexsort((np.arange(n), key, inv))
    g = inv[order]
    first = np.searchsorted(g, g, side="left")
    digit = np.empty(n, np.int64)
    digit[order] = np.arange(n) - first
    out = np.concatenate([codes, digit[:, None]], axis=1)
    return out, int(sizes.max()) if n else 1


def reassign(codes: np.ndarray, last_dist: np.ndarray, on_overflow: str = "digit",
             key: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Move colliding items to free last-level codes of their prefix (see the module docstring).

    ``last_dist [n, K]``: cost of each last-level code for each item (squared distance of its last residual).
    Returns ``(codes, info)``; ``codes`` has an extra digit level only if a prefix overflowed and
    ``on_overflow="digit"``.
    """
    from scipy.optimize import linear_sum_assignment

    if on_overflow not in ("digit", "error"):
        raise LlmrecError(f"on_overflow must be 'digit' or 'error', got {on_overflow!r}")
    codes = np.asarray(codes, np.int64).copy()
    n, L = codes.shape
    K = last_dist.shape[1]
    own = last_dist[np.arange(n), codes[:, -1]]
    key = own if key is None else key
    inv, sizes = group_ids(codes)
    if (sizes <= 1).all():
        return codes, {"n_reassigned": 0, "overflow_prefixes": 0, "mean_extra_cost": 0.0}
    pinv, psizes = group_ids(codes[:, :-1])
    bad_prefixes = np.unique(pinv[sizes[inv] > 1])
    moved = 0
    extra = 0.0
    overflow = []
    # items of each bad prefix, grouped without a Python scan over all items
    order = np.argsort(pinv, kind="stable")
    starts = np.searchsorted(pinv[order], bad_prefixes, side="left")
    ends = np.searchsorted(pinv[order], bad_prefixes, side="right")
    for p, s, e in zip(bad_prefixes, starts, ends):
        items = order[s:e]
        if len(items) > K:
            overflow.append((int(p), len(items)))
            continue
        last = codes[items, -1]
        # the keeper of each code is its best-reconstructed item; the rest move
        srt = items[np.lexsort((items, key[items], last))]
        lc = codes[srt, -1]
        keep = np.ones(len(srt), bool)
        keep[1:] = lc[1:] != lc[:-1]
        movers = srt[~keep]
        used = np.zeros(K, bool)
        used[codes[srt[keep], -1]] = True
        free = np.flatnonzero(~used)
        cost = last_dist[np.ix_(movers, free)].astype(np.float64)
        rows, cols = linear_sum_assignment(cost)
        extra += float((cost[rows, cols] - own[movers[rows]]).sum())
        codes[movers[rows], -1] = free[cols]
        moved += len(movers)
    info = {"n_reassigned": moved, "overflow_prefixes": len(overflow),
            "mean_extra_cost": extra / max(moved, 1)}
    if overflow:
        worst = max(overflow, key=lambda t: t[1])
        msg = (f"{len(overflow)} SID prefixes hold more items than the {K} last-level codes (largest: "
               f"{worst[1]} items), so re-assignment cannot make them unique")
        if on_overflow == "error":
            raise LlmrecError(msg + "; use --dedup digit or more codes per level")
        codes, size = add_digit(codes, key)
        info.update({"fallback": "digit", "digit_size": size, "warning": msg})
    st = collision_stats(codes)
    assert st["collisions"] == 0, st
    return codes, info
