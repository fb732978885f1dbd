"""Reward functions for RL on Semantic-ID recommendation, in the form TRL's ``GRPOTrainer`` calls them.

Each reward is a callable ``reward(prompts, completions, target=..., **kwargs) -> list[float]`` (one value per
completion). ``completions`` are the texts TRL decodes (``skip_special_tokens=True``; SID tokens are normal added
tokens, so they survive) or chat messages; the item of a completion is read back from its SID text
(:func:`completion_items`). Dataset columns arrive as keyword lists (``target``: the item id the user took next,
``history``: item ids before it) and so do the per-completion fields of llmrec's rollouts
(:mod:`llmrec.training.grpo`): ``sid_rank`` (0-based rank of the completion within its group: beam order for
beam rollouts, sequence log-probability order for sampled ones) and ``group_items`` (the items of the whole
group, which may span processes).

=================  ==============================================================================================
reward             value of a completion with item ``i`` for target ``t``
=================  ==============================================================================================
``hit``            1 if ``i == t`` else 0 (duplicates of the target each get 1)
``rank``           NDCG-shaped penalty (MiniOneRec): 0 for the hit; for a wrong item at rank ``r`` in a group of
                   ``G`` that *does* contain the target, ``-w_r / sum_{j<G} w_j`` with ``w_r = 1 / log2(r + 2)``:
                   confidently ranked wrong items cost more. Groups without a hit get 0 everywhere (no signal to
                   sharpen a ranking that holds no right answer). Duplicates share the rank of their first copy.
``semantic``       cosine similarity of the item's and the target's text embeddings (an EMB folder,
                   ``embeddings.npy``, row = item id): a graded signal even when no completion hits, which lowers
                   the share of zero-advantage groups.
``collaborative``  percentile of the item under a trained llmrec SASRec given the history: 1 for SASRec's top item,
                   0 for its last (a collaborative critic; also graded).
=================  ==============================================================================================

Completions whose text is not exactly one catalog SID (possible only without constrained decoding) get
``invalid`` (default 0; the semantic reward uses -1, its minimum).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from llmrec.errors import LlmrecError

REWARDS = ("hit", "rank", "semantic", "collaborative")
_WRAPPERS = ("<|sid_begin|>", "<|sid_end|>")


def completion_text(completion) -> str:
    """The text of a completion: a string, or the content of TRL's conversational ``[{"role", "content"}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content blocks
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
        return str(content)
    raise LlmrecError(f"cannot read a completion of type {type(completion).__name__}: expected a string or chat "
                      "messages")


def completion_items(completions: Sequence, sid_table) -> np.ndarray:
    """Item id of each completion (-1 when the text is not exactly one catalog SID, wrappers and spaces aside)."""
    out = np.full(len(completions), -1, dtype=np.int64)
    for j, c in enumerate(completions):
        text = completion_text(c)
        for w in _WRAPPERS:
            text = text.replace(w, "")
        text = "".join(text.split())
        item = sid_table.decode_item(text)
        if item is not None and sid_table.item_sid(item) == text:
            out[j] = item
    return out


def rank_weights(group_size: int) -> np.ndarray:
    """``w_r / sum_j w_j`` for ranks ``0..G-1`` with ``w_r = 1 / log2(r + 2)`` (the NDCG discount)."""
    w = 1.0 / np.log2(np.arange(group_size) + 2.0)
    return w / w.sum()


def _as_int_array(values, name: str, n: int) -> np.ndarray:
    if values is None:
        raise LlmrecError(f"the reward needs the dataset column {name!r} (one value per completion)")
    arr = np.asarray([int(v) for v in values], dtype=np.int64)
    if len(arr) != n:
        raise LlmrecError(f"{name!r} has {len(arr)} values for {n} completions")
    return arr


class SidReward:
    """Base class: parses items from completions; subclasses implement :meth:`score`."""

    name = "sid"

    def __init__(self, sid_table, invalid: float = 0.0):
        self.sid_table = sid_table
        self.invalid = float(invalid)
        self.__name__ = self.name  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts=None, completions=None, target=None, **kwargs) -> list[float]:
        if completions is None:
            raise LlmrecError(f"reward {self.name}: no completions given")
        items = completion_items(completions, self.sid_table)
        targets = _as_int_array(target, "target", len(items))
        values = np.asarray(self.score(items, targets, **kwargs), dtype=np.float64)
        values[items < 0] = self.invalid
        return values.tolist()

    def score(self, items: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
        raise NotImplementedError


class HitReward(SidReward):
    """1 for the target item, else 0. Also logs the share of valid completions and of groups with a hit."""

    name = "hit"

    def score(self, items, targets, group_items=None, log_metric=None, **kw):
        hit = (items == targets).astype(np.float64)
        if log_metric is not None:
            log_metric("sid/valid_rate", float((items >= 0).mean()))
            if group_items is not None:
                log_metric("sid/group_hit_rate", float(np.mean([t in set(g) for g, t in zip(group_items, targets)])))
        return hit


class RankReward(SidReward):
    """MiniOneRec's NDCG-shaped penalty on wrong items of groups that contain the target (module docstring)."""

    name = "rank"

    def score(self, items, targets, sid_rank=None, group_items=None, **kw):
        if sid_rank is None or group_items is None:
            raise LlmrecError("the rank reward needs sid_rank and group_items per completion: train with llmrec's "
                              "rollouts (llmrec.training.grpo), which supply them")
        out = np.zeros(len(items))
        for j, (item, t, r, group) in enumerate(zip(items, targets, sid_rank, group_items)):
            if item == t or t not in set(int(x) for x in group):
                continue
            out[j] = -rank_weights(len(group))[int(r)]
        return out


class SemanticReward(SidReward):
    """Cosine similarity of item text embeddings (``EMB/embeddings.npy``, row = item id, row 0 padding)."""

    name = "semantic"

    def __init__(self, sid_table, embeddings, invalid: float = -1.0):
        super().__init__(sid_table, invalid)
        if isinstance(embeddings, (str, Path)):
            from llmrec.data_builders.embeddings import load_embeddings

            embeddings = load_embeddings(embeddings).vectors
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != sid_table.n_items + 1:
            raise LlmrecError(f"item embeddings of shape {emb.shape}: expected [n_items + 1 = "
                              f"{sid_table.n_items + 1}, dim] (row = item id, row 0 padding)")
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        self.emb = emb / np.maximum(norm, 1e-12)

    def score(self, items, targets, **kw):
        ok = items >= 0
        out = np.zeros(len(items))
        out[ok] = np.einsum("ij,ij->i", self.emb[items[ok]], self.emb[targets[ok]])
        return out


def load_sasrec(workdir: str | Path):
    """A trained llmrec SASRec (``llmrec baseline train --model sasrec`` work folder) in eval mode."""
    from llmrec.artifacts import read_json
    from llmrec.models.sasrec import SASRec, SASRecConfig
    from llmrec.training.loop import BEST, load_weights

    w = Path(workdir)
    cfg_path, weights = w / "model_config.json", w / BEST
    if not cfg_path.is_file() or not weights.is_file():
        raise LlmrecError(f"{w}: not a trained SASRec folder (expected model_config.json and {BEST}; train one with "
                          "`llmrec baseline train --model sasrec`)")
    cfg = dict(read_json(cfg_path))
    if cfg.pop("model", "sasrec") != "sasrec":
        raise LlmrecError(f"{cfg_path}: model {cfg.get('model')!r}, expected sasrec")
    n_items = int(cfg.pop("n_items"))
    fields = SASRecConfig.__dataclass_fields__
    model = SASRec(n_items, SASRecConfig(**{k: v for k, v in cfg.items() if k in fields}))
    load_weights(model, weights)
    return model.eval()


class CollaborativeReward(SidReward):
    """Percentile of the item among all items under a trained SASRec given the history (1 = SASRec's best)."""

    name = "collaborative"

    def __init__(self, sid_table, sasrec, batch_size: int = 256):
        super().__init__(sid_table, 0.0)
        self.model = load_sasrec(sasrec) if isinstance(sasrec, (str, Path)) else sasrec.eval()
        if self.model.n_items != sid_table.n_items:
            raise LlmrecError(f"SASRec was trained on {self.model.n_items} items, the SID table has "
                              f"{sid_table.n_items}")
        self.batch_size = batch_size

    def score(self, items, targets, history=None, **kw):
        import pandas as pd
        import torch

        from llmrec.training.loop import history_batch

        if history is None:
            raise LlmrecError("the collaborative reward needs the dataset column 'history' (item ids)")
        out = np.zeros(len(items))
        n = self.model.n_items
        # one SASRec pass per distinct history (a group's completions share theirs)
        keys = [tuple(int(x) for x in h) for h in history]
        uniq = list(dict.fromkeys(keys))
        row = {k: i for i, k in enumerate(uniq)}
        pct = []
        with torch.no_grad():
            for s in range(0, len(uniq), self.batch_size):
                part = uniq[s: s + self.batch_size]
                df = pd.DataFrame({"history": [list(h) if h else [0] for h in part]})
                sc = self.model.score(history_batch(df, self.model.cfg.max_len)).float()
                # rank of every item among 1..n (0 = best), as a percentile in [0, 1]
                order = torch.argsort(sc[:, 1:], dim=1, descending=True)
                rank = torch.empty_like(order)
                rank.scatter_(1, order, torch.arange(n).expand_as(order))
                pct.append(1.0 - rank.double() / max(n - 1, 1))
        pct_all = torch.cat(pct).numpy() if pct else np.zeros((0, n))
        ok = items >= 0
        idx = np.asarray([row[k] for k in keys])
        out[ok] = pct_all[idx[ok], items[ok] - 1]
        return out


def build_rewards(spec: dict, sid_table) -> tuple[list, list[float]]:
    """Reward callables and weights from a recipe's ``rewards`` section.

    ``{hit: 1.0, rank: 1.0, semantic: {weight: 0.5, embeddings: EMB}, collaborative: {weight: 0.5, sasrec: DIR}}``:
    a number is the weight; a mapping gives ``weight`` and the reward's options. Weight 0 / null leaves it out.
    """
    funcs, weights = [], []
    unknown = set(spec) - set(REWARDS)
    if unknown:
        raise LlmrecError(f"rewards: unknown reward(s) {sorted(unknown)}; known: {', '.join(REWARDS)}")
    for name in REWARDS:
        opt = spec.get(name)
        if opt is None or opt is False:
            continue
        opt = {"weight": float(opt)} if isinstance(opt, (int, float)) else dict(opt)
        w = float(opt.pop("weight", 1.0))
        if w == 0:
            continue
        try:
            if name == "hit":
                f = HitReward(sid_table, **opt)
            elif name == "rank":
                f = RankReward(sid_table, **opt)
            elif name == "semantic":
                if "embeddings" not in opt:
                    raise LlmrecError("rewards.semantic needs embeddings: an EMB folder (llmrec items embed)")
                f = SemanticReward(sid_table, **opt)
            else:
                if "sasrec" not in opt:
                    raise LlmrecError("rewards.collaborative needs sasrec: a trained SASRec folder")
                f = CollaborativeReward(sid_table, **opt)
        except TypeError as e:
            raise LlmrecError(f"rewards.{name}: {e}") from None
        funcs.append(f)
        weights.append(w)
    if not funcs:
        raise LlmrecError("rewards: every reward has weight 0; give at least one (e.g. hit: 1.0)")
    return funcs, weights
