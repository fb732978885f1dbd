"""A prefix tree over the catalog's token sequences, stored as flat tensors so every lookup is vectorized.

Each item is a sequence of token ids (its SID tokens, optionally wrapped, or any other tokenization such as
ActionPiece; lengths may differ). Nodes are numbered level by level (root = 0) and the edges are kept in CSR
form sorted by (parent, token)::

    child_ptr[n] .. child_ptr[n+1]   the edges leaving node n
    child_tok[e], child_node[e]      token and target node of edge e
    edge_key[e] = parent * key_base + token   (sorted: one searchsorted finds the edge of (node, token))
    leaf_item[n]                     the item whose sequence ends at node n (-1 for inner nodes)

Two batched operations serve every decoder: :meth:`Trie.step` (node, token -> child node, -1 if not a valid
edge) and :meth:`Trie.children` (nodes -> the flat list of their (row, token, child) edges). Neither loops in
Python over rows, beams or items; a whole decoding step costs a handful of tensor ops.

Sequences must be prefix-free (no item's sequence is the start of another's); give an ``end_token`` to append
to every sequence when they are not (variable-length tokenizations).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from llmrec.errors import LlmrecError


class Trie:
    """Vectorized prefix tree. Build with :meth:`from_sequences`, :meth:`from_array` or :func:`sid_trie`."""

    def __init__(self, child_ptr, child_tok, child_node, leaf_item, depth_of, key_base: int, max_depth: int,
                 n_items: int):
        self.child_ptr = child_ptr
        self.child_tok = child_tok
        self.child_node = child_node
        self.leaf_item = leaf_item
        self.depth_of = depth_of
        self.key_base = int(key_base)
        self.max_depth = int(max_depth)
        self.n_items = int(n_items)
        self.edge_key = (self._parents() * self.key_base + child_tok)
        self.item_leaf = torch.full((int(leaf_item.max()) + 1 if len(leaf_item) else 1,), -1, dtype=torch.long,
                                    device=leaf_item.device)
        leaves = torch.nonzero(leaf_item >= 0).flatten()
        self.item_leaf[leaf_item[leaves]] = leaves
        self._vocab: torch.Tensor | None = None

    # --- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_array(cls, tokens, items=None, pad: int = -1) -> "Trie":
        """Build from a ``[n, L]`` integer array of token ids (rows padded with ``pad`` when shorter).

        ``items[i]`` is the item id of row ``i`` (default ``1..n``). Duplicate sequences and sequences that are
        a prefix of another raise :class:`LlmrecError`.
        """
        tok = np.asarray(tokens, dtype=np.int64)
        if tok.ndim != 2 or tok.shape[0] == 0 or tok.shape[1] == 0:
            raise LlmrecError(f"expected a non-empty [n_items, length] token array, got shape {tok.shape}")
        n, L = tok.shape
        items = np.arange(1, n + 1, dtype=np.int64) if items is None else np.asarray(items, dtype=np.int64)
        if len(items) != n:
            raise LlmrecError(f"{len(items)} item ids for {n} sequences")
        if (items < 0).any() or len(np.unique(items)) != n:
            raise LlmrecError("item ids must be unique and >= 0")
        valid = tok != pad
        lengths = valid.sum(1)
        if (lengths == 0).any():
            raise LlmrecError(f"item {items[np.argmax(lengths == 0)]} has an empty token sequence")
        if not np.array_equal(valid, np.arange(L)[None, :] < lengths[:, None]):
            raise LlmrecError("padding must come after the tokens of each sequence")
        if (tok[valid] < 0).any():
            raise LlmrecError("token ids must be >= 0")
        # Sort rows lexicographically (pad = -1 sorts first, so a prefix comes before its extensions).
        key = np.where(valid, tok, -1)
        order = np.lexsort(key.T[::-1])
        s = key[order]
        it = items[order]
        ln = lengths[order]
        same_as_prev = np.zeros((n, L), bool)   # row shares the prefix [:d+1] with the previous row
        eq = s[1:] == s[:-1]
        same_as_prev[1:] = np.logical_and.accumulate(eq, axis=1)
        dup = np.flatnonzero(same_as_prev[1:, L - 1]) if L else []
        if len(dup):
            i = dup[0]
            raise LlmrecError(f"items {it[i]} and {it[i + 1]} have the same token sequence; make them unique "
                              "(e.g. SIDs with a disambiguation level)")
        # A row that is a strict prefix of the next row: the next row shares all its tokens.
        nxt_shares = np.zeros(n, bool)
        nxt_shares[:-1] = same_as_prev[1:][np.arange(n - 1), ln[:-1] - 1]
        if nxt_shares.any():
            i = np.flatnonzero(nxt_shares)[0]
            raise LlmrecError(f"the token sequence of item {it[i]} is a prefix of item {it[i + 1]}'s; append an "
                              "end token to every sequence (end_token=...)")
        # Node ids level by level: a new node at depth d+1 wherever the prefix [:d+1] changes.
        node_at = np.full((n, L), -1, np.int64)
        next_id = 1
        parents, toks, childs = [], [], []
        prev_level = np.zeros(n, np.int64)       # node of each row at depth d (root for d = 0)
        depth_of = [0]
        for d in range(L):
            has = ln > d
            new = has & ~same_as_prev[:, d]
            k = int(new.sum())
            ids = np.full(n, -1, np.int64)
            ids[new] = np.arange(next_id, next_id + k)
            # rows that continue an existing node at this depth inherit the id of the row above
            if has.any():
                run = np.maximum.accumulate(np.where(new, np.arange(n), -1))
                ids = np.where(has, ids[np.maximum(run, 0)], -1)
            node_at[:, d] = ids
            parents.append(prev_level[new])
            toks.append(s[new, d])
            childs.append(ids[new])
            depth_of.extend([d + 1] * k)
            next_id += k
            prev_level = ids
        n_nodes = next_id
        parent = np.concatenate(parents)
        child_tok = np.concatenate(toks)
        child_node = np.concatenate(childs)
        # Edges are grouped by parent (parents ascending level by level, tokens ascending within a parent).
        assert np.all(np.diff(parent) >= 0)
        counts = np.bincount(parent, minlength=n_nodes)
        child_ptr = np.zeros(n_nodes + 1, np.int64)
        np.cumsum(counts, out=child_ptr[1:])
        leaf_item = np.full(n_nodes, -1, np.int64)
        leaf_item[node_at[np.arange(n), ln - 1]] = it
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return cls(t(child_ptr), t(child_tok), t(child_node), t(leaf_item), t(np.asarray(depth_of, np.int64)),
                   key_base=int(child_tok.max()) + 1, max_depth=int(ln.max()), n_items=n)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], items: Sequence[int] | None = None,
                       end_token: int | None = None) -> "Trie":
        """Build from one token-id list per item (lengths may differ); ``end_token`` is appended to each."""
        seqs = [list(map(int, s)) + ([int(end_token)] if end_token is not None else []) for s in sequences]
        if not seqs:
            raise LlmrecError("no sequences to build a trie from")
        L = max(len(s) for s in seqs)
        arr = np.full((len(seqs), L), -1, np.int64)
        for i, s in enumerate(seqs):
            arr[i, : len(s)] = s
        return cls.from_array(arr, items)

    # --- properties ----------------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.child_ptr) - 1

    @property
    def device(self) -> torch.device:
        return self.child_tok.device

    @property
    def vocab(self) -> torch.Tensor:
        """Sorted unique token ids used by the trie (the sub-vocabulary a constrained decoder can produce)."""
        if self._vocab is None:
            self._vocab = torch.unique(self.child_tok)
        return self._vocab

    def _parents(self) -> torch.Tensor:
        counts = self.child_ptr[1:] - self.child_ptr[:-1]
        return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)

    def to(self, device) -> "Trie":
        """A copy of the trie on ``device`` (itself if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        new = object.__new__(Trie)
        for k, v in self.__dict__.items():
            setattr(new, k, v.to(device) if isinstance(v, torch.Tensor) else v)
        return new

    # --- batched operations --------------------------------------------------------------------------------
    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each ``nodes[i]`` along ``tokens[i]``; -1 where there is no such edge (or ``nodes[i] < 0``)."""
        tokens = tokens.to(torch.long)
        ok = (nodes >= 0) & (tokens >= 0) & (tokens < self.key_base)
        key = nodes.clamp(min=0) * self.key_base + tokens.clamp(0, self.key_base - 1)
        pos = torch.searchsorted(self.edge_key, key).clamp(max=len(self.edge_key) - 1)
        hit = ok & (self.edge_key[pos] == key)
        return torch.where(hit, self.child_node[pos], torch.full_like(nodes, -1))

    def walk(self, prefixes: torch.Tensor, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Node reached by each row of ``prefixes`` ([R, t] token ids) from ``nodes`` (default the root)."""
        cur = torch.zeros(prefixes.shape[0], dtype=torch.long, device=prefixes.device) if nodes is None else nodes
        for j in range(prefixes.shape[1]):           # loop over depth only (<= max_depth steps)
            cur = self.step(cur, prefixes[:, j])
        return cur

    def children(self, nodes: torch.Tensor):
        """All edges leaving ``nodes`` as flat tensors ``(row, token, child)``, grouped by row, tokens ascending.

        ``row[j]`` indexes ``nodes``; rows with ``nodes < 0`` (dead) or at a leaf contribute nothing.
        """
        alive = nodes >= 0
        n = nodes.clamp(min=0)
        start = self.child_ptr[n]
        count = torch.where(alive, self.child_ptr[n + 1] - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        first = torch.cumsum(count, 0) - count
        edge = start[rows] + (torch.arange(len(rows), device=nodes.device) - first[rows])
        return rows, self.child_tok[edge], self.child_node[edge]

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        return (nodes >= 0) & (self.leaf_item[nodes.clamp(min=0)] >= 0)

    def item_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item id of each node (-1 for inner or dead nodes)."""
        return torch.where(nodes >= 0, self.leaf_item[nodes.clamp(min=0)], torch.full_like(nodes, -1))

    def items_of(self, sequences: torch.Tensor) -> torch.Tensor:
        """Item id of each row of generated token ids ([R, t], trailing tokens after the leaf ignored)."""
        cur = torch.zeros(sequences.shape[0], dtype=torch.long, device=sequences.device)
        item = torch.full_like(cur, -1)
        for j in range(min(sequences.shape[1], self.max_depth)):
            cur = self.step(cur, sequences[:, j])
            item = torch.where(item < 0, self.item_at(cur), item)
        return item

    def sequence_of(self, item: int) -> list[int]:
        """Token ids of ``item``'s path (for checks and tests)."""
        if item >= len(self.item_leaf) or self.item_leaf[item] < 0:
            raise LlmrecError(f"item {item} is not in the trie")
        node = int(self.item_leaf[item])
        parent_of = self._parents()
        out = []
        while node != 0:
            e = int(torch.nonzero(self.child_node == node)[0])
            out.append(int(self.child_tok[e]))
            node = int(parent_of[e])
        return out[::-1]

    def __repr__(self) -> str:
        return (f"Trie(items={self.n_items}, nodes={self.n_nodes}, max_depth={self.max_depth}, "
                f"vocab={len(self.vocab)}, device={self.device})")


def sid_trie(sid_table, tokenizer, items: Sequence[int] | None = None, wrap: bool = False,
             sid_begin: str | None = None, sid_end: str | None = None) -> Trie:
    """Trie over the SID token ids of ``items`` (default: the whole catalog, never only test items).

    Token ids come from ``tokenizer`` (the extended tokenizer of the model). With ``wrap`` every sequence is
    ``<|sid_begin|> <a_..> ... <|sid_end|>``. An ActionPiece tokenizer in place of ``sid_table`` gives
    :func:`actionpiece_trie`.
    """
    from llmrec.models.vocab import is_actionpiece

    if is_actionpiece(sid_table):
        if wrap:
            raise LlmrecError("ActionPiece models are extended without --wrap")
        return actionpiece_trie(sid_table, tokenizer, items)
    ids = np.asarray(items if items is not None else np.arange(1, sid_table.n_items + 1), dtype=np.int64)
    vocab = sid_table.vocabulary()
    tid = tokenizer.convert_tokens_to_ids(vocab)
    unk = getattr(tokenizer, "unk_token_id", None)
    if any(t is None or (unk is not None and t == unk) for t in tid):
        raise LlmrecError("the tokenizer lacks the SID tokens; extend the model first (`llmrec model extend`)")
    offsets = np.r_[0, np.cumsum(sid_table.codebook_sizes)[:-1]]
    tid = np.asarray(tid, dtype=np.int64)
    codes = sid_table.codes[ids]
    if (codes < 0).any():
        raise LlmrecError("items without SID codes (row 0 is padding; item ids start at 1)")
    arr = tid[codes + offsets[None, :]]
    if wrap:
        b, e = tokenizer.convert_tokens_to_ids([sid_begin, sid_end])
        arr = np.concatenate([np.full((len(arr), 1), b), arr, np.full((len(arr), 1), e)], 1)
    return Trie.from_array(arr, ids)


def actionpiece_trie(ap, tokenizer, items: Sequence[int] | None = None) -> Trie:
    """Trie over the ActionPiece *target* segmentations (deterministic, one per item) of ``items`` (default all).

    Targets have 1..m tokens and none is a prefix of another (each covers every feature position), so no end
    token is needed. Item ids must be integers (an ActionPiece built on a dataset's items).
    """
    tid = np.asarray(tokenizer.convert_tokens_to_ids(ap.vocabulary()), dtype=object)
    unk = getattr(tokenizer, "unk_token_id", None)
    if any(t is None or (unk is not None and t == unk) for t in tid):
        raise LlmrecError("the tokenizer lacks the ActionPiece tokens; extend the model first (`llmrec model extend`)")
    tid = tid.astype(np.int64)
    ids = list(items) if items is not None else list(ap.item_ids)
    if not all(isinstance(i, (int, np.integer)) for i in ids):
        raise LlmrecError("ActionPiece item ids must be integers (build it on a dataset, or with integer keys "
                          "in FEATURES.json) to serve as catalog items")
    return Trie.from_sequences([tid[ap.segment_item(i)] for i in ids], items=ids)
