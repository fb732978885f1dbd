"""Trie-constrained decoding shared by every backend: the logits processor and the beam search.

**Score of an item.** For an item with token sequence ``t_1 .. t_n`` and prompt ``x``::

    score(item | x) = sum_j  log_softmax( mask_j(logits_j) )[t_j]

where ``mask_j`` keeps only the children of the trie node reached by ``t_1 .. t_{j-1}`` (every other token
gets ``-inf``), i.e. the log-probability of the item under the model's next-token distribution *restricted to
the catalog* at each step. Scores are <= 0 and ``exp(score)`` over all catalog items sums to 1, so they are
comparable across prompts and usable as probabilities. Because the softmax runs over the allowed children
only, any backend that returns the logits (or log-probs, or vLLM's processed log-probs) of the allowed
tokens gives the same score: the per-row normaliser cancels. ``renormalize=False`` gives HF's convention
instead (mask applied after the full-vocabulary log-softmax: the joint probability of the SID under the
unconstrained model); rankings of the two can differ.

**Two ways to decode.**

* :class:`TrieLogitsProcessor` plugs into ``model.generate`` (HF beam search or sampling, TRL rollouts): one
  vectorized mask per step, no Python loop over beams.
* :func:`beam_search` is llmrec's own beam search over the trie. A backend only supplies next-token scores
  for a batch of (prompt, prefix) states through the :class:`StepScorer` protocol; the trie walk, the
  per-prompt top-k selection, the finished pool and the final ranking are shared. The Hugging Face backend
  (``llmrec.inference.hf``) keeps a KV cache; a vLLM backend can implement ``step`` with one
  ``max_tokens=1`` request per state (``allowed_token_ids`` = the state's children). Results: top-K unique
  catalog items per prompt with their scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch

from llmrec.errors import LlmrecError
from llmrec.inference.trie import Trie

NEG_INF = float("-inf")
# HF beam search seeds its dummy beams with -1e9; anything at or below this is not a real hypothesis.
INVALID_SCORE = -1e8


def segment_log_softmax(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Log-softmax of ``values`` within each group of equal ``rows`` (a ragged row-wise log-softmax)."""
    values = values.float()
    m = torch.full((n_rows,), NEG_INF, device=values.device).scatter_reduce(0, rows, values, "amax")
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.zeros(n_rows, device=values.device).index_add_(0, rows, torch.exp(values - m[rows]))
    return values - (m + torch.log(s))[rows]


def grouped_topk(groups: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best ``scores`` within each group, ordered by (group, score descending).

    Ties keep the input order (stable), so results are deterministic.
    """
    if len(scores) == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    g = groups[order]
    rank = torch.arange(len(g), device=g.device) - torch.searchsorted(g, g)
    return order[rank < k]


# --------------------------------------------------------------------------------------------------------------
# Logits processor for model.generate
# --------------------------------------------------------------------------------------------------------------

class TrieLogitsProcessor:
    """Restrict generation to the catalog trie; a ``transformers`` logits processor.

    Per step it walks each row's generated suffix down the trie (a loop over depth, <= max_depth steps, each a
    batched ``searchsorted``), gathers the scores of the allowed children with one index, fills the rest with
    ``-inf`` and (``renormalize=True``) renormalises them per row. Works for any batch of rows: left-padded
    prompts (the suffix starts after the common padded prompt length), beams, encoder-decoder decoders.

    ``prompt_len`` is the padded prompt length (for encoder-decoder models: the decoder prompt, usually 1). If
    ``None`` it is taken from the first call and re-detected when a new ``generate`` call starts; pass it
    explicitly (or call :meth:`reset`) when one processor serves several ``generate`` calls.

    Rows whose item is complete may only emit ``end_token_id`` (default: the eos/pad id given), which lets
    sampling with a longer ``max_new_tokens`` stop cleanly; rows with an invalid prefix (forced by another
    processor) may only emit it too and keep their ``-inf`` beam score.

    ``renormalize=False`` only masks: the values ``generate`` passes in are kept (log-probs in HF beam search,
    which gives HF's convention of scores; raw logits in greedy/sampling, whose softmax then runs over the
    allowed tokens).

    ``inplace=True`` writes the mask into the incoming tensor instead of a new one (saves allocating a
    [rows, vocab] tensor per step). Safe in HF beam search, which passes a fresh log-softmax; not in greedy or
    sampling with ``output_logits=True``, where HF keeps a reference to the tensor it passes in.

    ``timer`` accumulates the seconds spent inside the processor (for benchmarks).
    """

    def __init__(self, trie: Trie, prompt_len: int | None = None, renormalize: bool = True,
                 end_token_id: int | None = None, fixed_prompt_len: bool | None = None, inplace: bool = False):
        self.trie = trie
        self.inplace = inplace
        self.renormalize = renormalize
        self.end_token_id = end_token_id
        self.prompt_len = prompt_len
        self._fixed = prompt_len is not None if fixed_prompt_len is None else fixed_prompt_len
        self._last_len = -1
        self._dev_trie: dict = {}
        self.timer = 0.0
        self.calls = 0

    def reset(self, prompt_len: int | None = None) -> None:
        self.prompt_len = prompt_len
        self._fixed = prompt_len is not None
        self._last_len = -1

    def _trie_on(self, device) -> Trie:
        key = str(device)
        if key not in self._dev_trie:
            self._dev_trie[key] = self.trie.to(device)
        return self._dev_trie[key]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        T = input_ids.shape[1]
        if not self._fixed and (self.prompt_len is None or T <= self._last_len or
                                T - self.prompt_len > self.trie.max_depth + 1 or T != self._last_len + 1):
            self.prompt_len = T                 # a new generate() call started
        self._last_len = T
        if T < self.prompt_len:
            raise LlmrecError(f"TrieLogitsProcessor: sequence length {T} < prompt length {self.prompt_len}")
        trie = self._trie_on(scores.device)
        gen = input_ids[:, self.prompt_len:]
        R = scores.shape[0]
        node = torch.zeros(R, dtype=torch.long, device=scores.device)
        done = torch.zeros(R, dtype=torch.bool, device=scores.device)    # passed a complete item
        for j in range(gen.shape[1]):
            done |= trie.is_leaf(node)
            node = trie.step(node, gen[:, j])
        done |= trie.is_leaf(node)
        node = torch.where(done, torch.full_like(node, -1), node)
        rows, toks, _ = trie.children(node)
        vals = scores[rows, toks].float()
        if self.renormalize:
            vals = segment_log_softmax(vals, rows, R)
        if self.inplace:                        # one write pass over [rows, vocab], no new allocation
            out = scores.fill_(NEG_INF)
        else:
            out = torch.full_like(scores, NEG_INF)
        out[rows, toks] = vals.to(out.dtype)
        stuck = node < 0                        # complete items (done) and invalid prefixes
        if self.end_token_id is not None and bool(stuck.any()):
            out[stuck, self.end_token_id] = 0.0
        self.timer += time.perf_counter() - t0
        self.calls += 1
        return out


# --------------------------------------------------------------------------------------------------------------
# Backend-independent beam search
# --------------------------------------------------------------------------------------------------------------

class StepScorer(Protocol):
    """What a backend implements for :func:`beam_search`.

    ``step`` is called once per decoding step. At the first call ``parents`` and ``tokens`` are ``None`` and
    the rows are the prompts (row ``i`` = prompt ``i``). Afterwards row ``r`` continues row ``parents[r]`` of
    the previous call with ``tokens[r]`` appended (rows may be fewer or more than before). It returns the
    next-token score of each candidate pair ``(cand_rows[j], cand_tokens[j])``: logits or log-probabilities;
    any per-row constant shift is allowed (the search renormalises over the candidates of a row).
    """

    def step(self, parents: torch.Tensor | None, tokens: torch.Tensor | None, cand_rows: torch.Tensor,
             cand_tokens: torch.Tensor) -> torch.Tensor: ...


class PrefixStateScorer:
    """Adapter from :class:`StepScorer` to stateless backends such as vLLM.

    It keeps, for every live row, the prompt it belongs to and the generated prefix, and asks
    ``score_fn(prompt_index [R], prefixes [R, t], cand_rows, cand_tokens)`` for the candidates' scores. A vLLM
    backend implements ``score_fn`` with one ``max_tokens=1`` request per row (``TokensPrompt(prompt + prefix)``,
    ``allowed_token_ids`` = that row's candidates, prefix caching on).
    """

    def __init__(self, n_prompts: int, score_fn):
        self.n_prompts = n_prompts
        self.score_fn = score_fn
        self.prompt_index = self.prefixes = None

    def step(self, parents, tokens, cand_rows, cand_tokens):
        if parents is None:
            self.prompt_index = torch.arange(self.n_prompts, device=cand_rows.device)
            self.prefixes = torch.zeros((self.n_prompts, 0), dtype=torch.long, device=cand_rows.device)
        else:
            self.prompt_index = self.prompt_index[parents]
            self.prefixes = torch.cat([self.prefixes[parents], tokens[:, None]], 1)
        return self.score_fn(self.prompt_index, self.prefixes, cand_rows, cand_tokens)


@dataclass
class BeamResult:
    """Top-K items per prompt. ``items[b, j]`` is the j-th best item of prompt ``b`` (-1 where fewer than K
    exist); ``scores`` are the item scores (module docstring), ``-inf`` for missing entries."""

    items: torch.Tensor
    scores: torch.Tensor
    steps: int = 0
    timings: dict | None = None   # seconds: total, model (backend steps), search (trie + selection)

    def ranked(self) -> list[list[int]]:
        return [[int(i) for i in row if i >= 0] for row in self.items.tolist()]

    def score_lists(self) -> list[list[float]]:
        return [[float(s) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(self.scores.tolist(), self.items.tolist())]


def _pack(groups, scores, items, n_groups: int, k: int, device) -> BeamResult:
    keep = grouped_topk(groups, scores, k)
    g = groups[keep]
    rank = torch.arange(len(g), device=device) - torch.searchsorted(g, g)
    out_items = torch.full((n_groups, k), -1, dtype=torch.long, device=device)
    out_scores = torch.full((n_groups, k), NEG_INF, device=device)
    out_items[g, rank] = items[keep]
    out_scores[g, rank] = scores[keep]
    return BeamResult(out_items, out_scores)


@torch.no_grad()
def beam_search(scorer: StepScorer, trie: Trie, n_prompts: int, num_beams: int, k: int | None = None,
                renormalize: bool = True, device=None) -> BeamResult:
    """Beam search over ``trie`` for ``n_prompts`` prompts; returns the top ``k`` items (default ``num_beams``).

    Each step expands every live beam into all its trie children (one :meth:`StepScorer.step` call for the
    whole batch), keeps the ``num_beams`` best unfinished prefixes per prompt and moves completed items into a
    per-prompt pool of the ``k`` best. It stops when no beam is left or no live beam can beat the pool's
    ``k``-th score (scores only decrease). Each beam is a distinct trie node, so items are unique.
    """
    k = num_beams if k is None else k
    if k < 1 or num_beams < k:
        raise LlmrecError(f"need num_beams >= k >= 1 (got num_beams={num_beams}, k={k})")
    device = torch.device(device) if device is not None else trie.device
    trie = trie.to(device)
    nodes = torch.zeros(n_prompts, dtype=torch.long, device=device)
    prompt = torch.arange(n_prompts, device=device)
    score = torch.zeros(n_prompts, device=device)
    parents = tokens = None
    pool_g = torch.zeros(0, dtype=torch.long, device=device)
    pool_s = torch.zeros(0, device=device)
    pool_i = torch.zeros(0, dtype=torch.long, device=device)
    steps = 0
    t_model = 0.0
    t_start = time.perf_counter()
    for _ in range(trie.max_depth):
        rows, toks, child = trie.children(nodes)
        if len(rows) == 0:
            break
        t0 = time.perf_counter()
        vals = scorer.step(parents, tokens, rows, toks).to(device).float()
        t_model += time.perf_counter() - t0
        steps += 1
        logp = segment_log_softmax(vals, rows, len(nodes)) if renormalize else vals
        cand = score[rows] + logp
        cprompt = prompt[rows]
        leaf = trie.is_leaf(child) & torch.isfinite(cand)    # a backend may leave unusable children at -inf
        if bool(leaf.any()):
            pool_g = torch.cat([pool_g, cprompt[leaf]])
            pool_s = torch.cat([pool_s, cand[leaf]])
            pool_i = torch.cat([pool_i, trie.item_at(child[leaf])])
            keep = grouped_topk(pool_g, pool_s, k)
            pool_g, pool_s, pool_i = pool_g[keep], pool_s[keep], pool_i[keep]
        inner = torch.nonzero(~trie.is_leaf(child) & torch.isfinite(cand)).flatten()
        if len(inner) == 0:
            break
        sel = inner[grouped_topk(cprompt[inner], cand[inner], num_beams)]
        parents, tokens, nodes, score, prompt = rows[sel], toks[sel], child[sel], cand[sel], cprompt[sel]
        # Early stop: every prompt has k finished items and no live beam can still beat the k-th of them.
        if len(pool_g) == n_prompts * k:
            kth = torch.full((n_prompts,), NEG_INF, device=device).scatter_reduce(0, pool_g, pool_s, "amin",
                                                                                 include_self=False)
            best = torch.full((n_prompts,), NEG_INF, device=device).scatter_reduce(0, prompt, score, "amax")
            if bool((best <= kth).all()):
                break
    res = _pack(pool_g, pool_s, pool_i, n_prompts, k, device)
    res.steps = steps
    total = time.perf_counter() - t_start
    res.timings = {"total": total, "model": t_model, "search": total - t_model}
    return res
