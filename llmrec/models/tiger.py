"""TIGER (Rajput et al., NeurIPS 2023): generative retrieval of the next item's Semantic ID, one file.

A Hugging Face ``T5ForConditionalGeneration`` built from a ``T5Config`` (trained from scratch) reads the user's
history as SID tokens and generates the next item's SID:

    encoder:  <user bucket> <a_12><b_7><c_201><d_0> <a_3>...  (the last ``max_items`` items, oldest first) </s>
    decoder:  <a_40><b_9><c_17><d_1>                           (the target item's SID, one token per level)

Token ids: 0 = padding (also the decoder start), 1 = end of input, then one block of ``K_l`` ids per SID level,
then ``user_buckets`` hashed user ids (TIGER's user token). Every prefix of every training sequence is an example.
Items are ranked by llmrec's trie-constrained beam search (:func:`llmrec.inference.constrained_beam_search`):
only catalog SIDs can come out, each at most once, scored by their log-probability under the model.

If the first levels of the SID table do not identify items uniquely, a disambiguation level is appended
(item rank among the items sharing the SID), as TIGER does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llmrec.errors import LlmrecError
from llmrec.training.loop import metric_ks, split_config, train

PAD, EOS, FIRST = 0, 1, 2


@dataclass
class TIGERConfig:
    sids: str | None = None        # SID folder (llmrec sid build) or LC-Rec/MiniOneRec *.index.json
    sid_offset: int = 0            # *.index.json only: item id = int(key) - sid_offset
    levels: int = 0                # use the first N SID levels (0 = all); a dedup level is added if needed
    max_items: int = 20            # history items in the encoder input
    d_model: int = 128
    d_ff: int = 1024
    n_layers: int = 4              # encoder layers = decoder layers
    n_heads: int = 6
    d_kv: int = 64
    dropout: float = 0.1
    user_buckets: int = 2000       # hashed user-id token at the start of the input (0 = none)
    num_beams: int = 20            # beams = length of the ranked list (metrics @K need K <= num_beams)

    def __post_init__(self):
        if not self.sids:
            raise LlmrecError("tiger: `sids` is required (a SID folder from `llmrec sid build` or an *.index.json)")
        if self.max_items < 1 or self.num_beams < 1 or self.user_buckets < 0:
            raise LlmrecError("tiger: max_items and num_beams must be >= 1 and user_buckets >= 0")


def dedup_codes(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append a level that numbers items sharing the same code tuple (0, 1, ...) when any tuple repeats.
    Returns ``(codes, size of the new level)``; ``size`` is 0 when the codes were already unique."""
    real = codes[1:]
    _, inverse, counts = np.unique(real, axis=0, return_inverse=True, return_counts=True)
    if counts.max() == 1:
        return codes, 0
    rank = np.zeros(len(real), np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(inverse.ravel()):
        rank[i] = seen.get(g, 0)
        seen[g] = rank[i] + 1
    out = np.full((len(codes), codes.shape[1] + 1), -1, np.int64)
    out[1:] = np.c_[real, rank]
    return out, int(counts.max())


class TIGER(nn.Module):
    """T5 encoder-decoder over SID tokens. ``tokens[item]`` = the item's decoder tokens (row 0 unused)."""

    def __init__(self, codes: np.ndarray, sizes: list[int], cfg: TIGERConfig):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        self.cfg = cfg
        offs = FIRST + np.r_[0, np.cumsum(sizes)[:-1]]
        tokens = np.zeros_like(codes)
        tokens[1:] = codes[1:] + offs[None, :]
        self.register_buffer("tokens", torch.from_numpy(tokens), persistent=False)
        self.user_base = FIRST + int(sum(sizes))
        self.vocab_size = self.user_base + cfg.user_buckets
        hf = T5Config(vocab_size=self.vocab_size, d_model=cfg.d_model, d_ff=cfg.d_ff, d_kv=cfg.d_kv,
                      num_layers=cfg.n_layers, num_decoder_layers=cfg.n_layers, num_heads=cfg.n_heads,
                      dropout_rate=cfg.dropout, feed_forward_proj="relu", pad_token_id=PAD, eos_token_id=EOS,
                      decoder_start_token_id=PAD, tie_word_embeddings=True, is_encoder_decoder=True)
        self.t5 = T5ForConditionalGeneration(hf)

    def user_token(self, users: np.ndarray) -> np.ndarray:
        # a fixed multiplicative hash, so the bucket of a user does not depend on Python's hash seed
        return self.user_base + (np.asarray(users, np.int64) * 2654435761 % (2 ** 32)) % self.cfg.user_buckets

    def encode_inputs(self, users, histories) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded encoder ``input_ids`` / ``attention_mask`` for (user, history item list) pairs."""
        tok = self.tokens.numpy()
        rows = []
        ut = self.user_token(users) if self.cfg.user_buckets else None
        for i, h in enumerate(histories):
            h = np.asarray(h, np.int64)[-self.cfg.max_items:]
            seq = tok[h].ravel()
            pre = [int(ut[i])] if ut is not None else []
            rows.append(np.r_[pre, seq, EOS].astype(np.int64))
        W = max(len(r) for r in rows)
        ids = np.zeros((len(rows), W), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        ids = torch.from_numpy(ids)
        return ids, (ids != PAD).long()

    def forward(self, input_ids, attention_mask, decoder_input_ids) -> torch.Tensor:
        """Decoder logits ``[B, T, vocab]`` (teacher forcing; decoder position t sees tokens <= t only)."""
        return self.t5(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=decoder_input_ids, use_cache=False).logits

    def loss(self, batch: dict) -> torch.Tensor:
        return self.t5(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"], use_cache=False).loss

    def trie(self):
        from llmrec.inference import Trie

        return Trie.from_array(self.tokens[1:].numpy(), items=np.arange(1, len(self.tokens)))

    @torch.no_grad()
    def recommend(self, users, histories, k: int | None = None, trie=None) -> list[list[int]]:
        """Top-``k`` items (default ``num_beams``) per history by trie-constrained beam search."""
        from llmrec.inference import constrained_beam_search

        ids, mask = self.encode_inputs(users, histories)
        res = constrained_beam_search(self.t5, ids, trie if trie is not None else self.trie(), attention_mask=mask,
                                      num_beams=self.cfg.num_beams, k=k or self.cfg.num_beams,
                                      decoder_start_token_id=PAD)
        return res.ranked()


class TigerData:
    """Every prefix of every training sequence -> next item; batches of similar history length."""

    def __init__(self, model: TIGER, users, sequences):
        self.model = model
        self.users, self.hist, self.target = [], [], []
        m = model.cfg.max_items
        for u, s in zip(users, sequences):
            s = np.asarray(s, np.int64)
            for t in range(1, len(s)):
                self.users.append(u)
                self.hist.append(s[max(0, t - m):t])
                self.target.append(s[t])
        if not self.target:
            raise LlmrecError("no training sequence has 2 or more items; nothing to learn from")
        self.users = np.asarray(self.users)
        self.target = np.asarray(self.target)
        self.lengths = np.array([len(h) for h in self.hist])

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, idx) -> dict:
        ids, mask = self.model.encode_inputs(self.users[idx], [self.hist[i] for i in idx])
        return {"input_ids": ids, "attention_mask": mask, "labels": self.model.tokens[self.target[idx]]}

    def batches(self, batch_size: int, bucket: int = 50):
        def make(epoch, rng):
            order = rng.permutation(len(self))
            chunk = bucket * batch_size
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")]
                                    for p in (order[s: s + chunk] for s in range(0, len(order), chunk))])
            cuts = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
            cuts = [cuts[i] for i in rng.permutation(len(cuts))]
            return _Iter(self, cuts)
        return make


class _Iter:
    def __init__(self, data, cuts):
        self.data, self.cuts = data, cuts

    def __len__(self):
        return len(self.cuts)

    def __iter__(self):
        for idx in self.cuts:
            yield self.data.batch(idx), len(idx)


def evaluate_tiger(model: TIGER, examples, n_items: int, ks=None, exclude_history: bool = False,
                   batch_size: int = 256, progress: bool = True, desc: str = "tiger", trie=None):
    """Rank by constrained beam search and score with :func:`llmrec.eval.evaluate_ranked_lists` (metrics @K for
    K <= num_beams only: the ranked lists have num_beams items)."""
    from tqdm.auto import tqdm

    from llmrec.eval import evaluate_ranked_lists, parse_ks

    ks = tuple(k for k in parse_ks(ks) if k <= model.cfg.num_beams) or (model.cfg.num_beams,)
    trie = trie if trie is not None else model.trie()
    lengths = np.minimum(examples["history"].map(len).to_numpy(), model.cfg.max_items)
    order = np.argsort(lengths, kind="stable")
    users = examples["user"].to_numpy()
    hist = examples["history"].to_numpy()
    targets = examples["target"].to_numpy()
    raw: list = [None] * len(examples)
    bar = tqdm(total=len(examples), desc=desc, unit="ex", disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        for i, r in zip(idx, model.recommend(users[idx], [hist[i] for i in idx], trie=trie)):
            raw[i] = r
        bar.update(len(idx))
    bar.close()

    def score(exclude: bool):
        ranked = raw
        if exclude:  # drop history items (never the target itself), as the full-ranking protocol does
            ranked = []
            for r, h, t in zip(raw, hist, targets):
                seen = set(np.asarray(h).tolist())
                ranked.append([x for x in r if x == t or x not in seen])
        res = evaluate_ranked_lists(targets.tolist(), ranked, ks=ks, n_items=n_items, users=users)
        res.metrics["exclude_history"] = exclude
        return res

    res = score(exclude_history)
    res.alt = score(not exclude_history)  # the other history rule, from the same beams
    return res


def fit(split, config: dict, out, seed: int = 0, *, ks=None, exclude_history: bool = False) -> dict:
    """Registry entry for ``llmrec baseline train --model tiger`` (config: TIGERConfig + TrainConfig keys)."""
    from llmrec.artifacts import write_json
    from llmrec.models.hstu_sid import load_sids

    cfg, tcfg, resume = split_config(config, TIGERConfig, "tiger")
    ks = metric_ks(ks, tcfg.metric)   # cut-offs above num_beams are dropped at evaluation, except the metric's
    if int(tcfg.metric.split("@")[1]) > cfg.num_beams:
        raise LlmrecError(f"tiger: num_beams={cfg.num_beams} ranks that many items, fewer than the selection "
                          f"metric {tcfg.metric} needs; raise num_beams")
    codes, sizes = load_sids(cfg.sids, split.n_items, cfg.sid_offset)
    L = len(sizes) if cfg.levels <= 0 else min(cfg.levels, len(sizes))
    codes, sizes = np.ascontiguousarray(codes[:, :L]), list(sizes[:L])
    codes, extra = dedup_codes(codes)
    if extra:
        sizes.append(extra)
    torch.manual_seed(seed)
    model = TIGER(codes, sizes, cfg)
    users, seqs = split.train_sequences()
    data = TigerData(model, users, seqs)
    trie = model.trie()

    def evaluate(m, examples, desc):
        return evaluate_tiger(m, examples, split.n_items, ks, exclude_history, tcfg.eval_batch_size,
                              tcfg.progress, desc, trie)

    mc = dataclasses.asdict(cfg)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "model_config.json", {"model": "tiger", **mc, "n_items": split.n_items,
                                                     "sid_codebook_sizes": sizes, "dedup_level_added": bool(extra)})
    res = train(model, batches=data.batches(tcfg.batch_size), loss_fn=lambda m, b: m.loss(b), evaluate=evaluate,
                valid=split.valid, test=split.test, cfg=tcfg, workdir=out, seed=seed, resume=resume,
                fingerprint={"model": "tiger", **mc, "exclude_history": exclude_history,
                             "n_items": split.n_items}, name="tiger")
    n_seq = sum(len(x) >= 2 for x in seqs)
    info = {**res.info, "train_sequences": len(data), "sid_levels": len(sizes), "sid_codebook_sizes": sizes,
            "dedup_level_added": bool(extra), "num_beams": cfg.num_beams,
            "train_user_sequences_per_s": round(res.info["train_sequences_per_s"] * n_seq / len(data), 1)
            if res.info.get("train_sequences_per_s") else None,
            "test_other_history_rule": {k: v for k, v in res.test.alt.metrics.items()
                                        if "@" in k or k == "exclude_history"}}
    return {"valid": res.valid, "test": res.test, "info": info, "history": res.history}
