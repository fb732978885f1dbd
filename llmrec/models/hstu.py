"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words"), as published, one file.

Per block (no feed-forward network):

    U, V, Q, K = split(SiLU(LayerNorm(x) @ W_uvqk))
    A = SiLU(Q K^T + rab_pos(j - i) + rab_time(bucket(t_query_i - t_j))) / n      (pointwise, no softmax; causal)
    x = x + W_o(dropout(U * LayerNorm(A V)))                                      (U-gating)

``bucket(dt) = floor(ln(max(|dt|, 1)) / 0.301)`` clipped to ``[0, n_buckets]`` (log-spaced time buckets, seconds);
the query time of position i is the timestamp of the item it predicts (i + 1) in training and its own timestamp
for the newest position at inference. The reference code uses the target's (request) time at inference too, so
its newest position never sees the dt = 0 bucket it was not trained on; switching to that is a known open change
(the Beauty figures in docs/benchmarks.md were measured with the behaviour described here). Input: item embedding * sqrt(d) + learned
absolute position, dropout. Output and item embeddings are L2-normalised and compared by dot product / temperature;
training uses sampled softmax over N uniform negatives (never the positive).

Defaults follow the published ML-1M setting (d=50, 2 blocks, 1 head, dropout 0.2, 128 negatives, temperature
0.05, AdamW(0.9, 0.98) lr 1e-3, batch 128) except ``max_len`` (50 for short Amazon histories).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmrec.errors import LlmrecError
from llmrec.training.loop import fit_next_item_model, sampled_softmax_loss, split_config


@dataclass
class HSTUConfig:
    max_len: int = 50
    d_model: int = 50              # item embedding / model width
    n_layers: int = 2
    n_heads: int = 1
    dqk: int = 50                  # attention dim per head
    dv: int = 50                   # linear (value / gate) dim per head
    dropout: float = 0.2           # input and output (linear) dropout
    n_buckets: int = 128           # time buckets of the relative attention bias
    use_time_bias: bool = True
    n_negatives: int = 128
    negatives: str = "position"    # position: N per position (the reference); batch: N shared by the batch
    temperature: float = 0.05
    windows: bool = False

    def __post_init__(self):
        if self.temperature <= 0:
            raise LlmrecError(f"hstu: temperature must be > 0, got {self.temperature}")


def time_buckets(dt: torch.Tensor, n_buckets: int = 128) -> torch.Tensor:
    """Log-spaced bucket of a time difference in seconds: ``floor(ln(max(|dt|, 1)) / 0.301)`` in ``[0, n_buckets]``."""
    return (torch.log(dt.abs().clamp(min=1).double()) / 0.301).long().clamp(0, n_buckets)


class RelativeBias(nn.Module):
    """``rab[i, j] = w_pos[j - i + n - 1] + w_time[bucket(t_query_i - t_j)]`` (``[B, W, W]``)."""

    def __init__(self, max_len: int, n_buckets: int, use_time: bool = True):
        super().__init__()
        self.n, self.n_buckets, self.use_time = max_len, n_buckets, use_time
        self.pos_w = nn.Parameter(torch.empty(2 * max_len - 1).normal_(std=0.02))
        self.ts_w = nn.Parameter(torch.empty(n_buckets + 1).normal_(std=0.02))

    def forward(self, W: int, ts: torch.Tensor | None, query_ts: torch.Tensor | None) -> torch.Tensor:
        i = torch.arange(W)
        bias = self.pos_w[(i[None, :] - i[:, None]) + self.n - 1][None]  # [1, W, W]
        if self.use_time and ts is not None:
            b = time_buckets(query_ts[:, :, None] - ts[:, None, :], self.n_buckets)
            bias = bias + self.ts_w[b]
        return bias


class HSTUBlock(nn.Module):
    def __init__(self, cfg: HSTUConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.n_heads
        self.uvqk = nn.Parameter(torch.empty(cfg.d_model, 2 * h * cfg.dv + 2 * h * cfg.dqk).normal_(std=0.02))
        self.o = nn.Linear(h * cfg.dv, cfg.d_model)
        nn.init.xavier_uniform_(self.o.weight)
        self.rab = RelativeBias(cfg.max_len, cfg.n_buckets, cfg.use_time_bias)

    def forward(self, x, mask, ts, query_ts):
        c = self.cfg
        B, W, d = x.shape
        h = c.n_heads
        u, v, q, k = torch.split(F.silu(F.layer_norm(x, (d,), eps=1e-6) @ self.uvqk),
                                 [h * c.dv, h * c.dv, h * c.dqk, h * c.dqk], dim=-1)
        qk = torch.einsum("bnhd,bmhd->bhnm", q.view(B, W, h, c.dqk), k.view(B, W, h, c.dqk))
        qk = qk + self.rab(W, ts, query_ts).unsqueeze(1)
        attn = F.silu(qk) / c.max_len * mask.unsqueeze(1)
        a = torch.einsum("bhnm,bmhd->bnhd", attn, v.view(B, W, h, c.dv)).reshape(B, W, h * c.dv)
        o = u * F.layer_norm(a, (h * c.dv,), eps=1e-6)
        return x + self.o(F.dropout(o, p=c.dropout, training=self.training))


class ItemEmbedding(nn.Module):
    """Plain item-id embedding (HSTU-SID swaps in a Semantic-ID one with the same interface)."""

    def __init__(self, n_items: int, d: int):
        super().__init__()
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.trunc_normal_(self.emb.weight, std=0.02)
        with torch.no_grad():
            self.emb.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class HSTU(nn.Module):
    def __init__(self, n_items: int, cfg: HSTUConfig, item_embedding: nn.Module | None = None):
        super().__init__()
        self.n_items, self.cfg = n_items, cfg
        self.item = item_embedding if item_embedding is not None else ItemEmbedding(n_items, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        nn.init.xavier_normal_(self.pos_emb.weight)
        self.blocks = nn.ModuleList(HSTUBlock(cfg) for _ in range(cfg.n_layers))

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised item embeddings (the output side of the dot product)."""
        return F.normalize(self.item(ids), dim=-1, eps=1e-6)

    def forward(self, items: torch.Tensor, ts: torch.Tensor | None = None,
                query_ts: torch.Tensor | None = None) -> torch.Tensor:
        """Right-aligned ``items`` ``[B, W]`` (+ timestamps) -> L2-normalised states ``[B, W, d]`` (causal).

        ``query_ts`` (the time each position predicts for) defaults to the next item's timestamp, and the
        newest position's own timestamp."""
        B, W = items.shape
        valid = items > 0
        if ts is not None and query_ts is None:
            query_ts = torch.cat([ts[:, 1:], ts[:, -1:]], dim=1)
        pos = (valid.long().cumsum(1) - 1).clamp(0, self.cfg.max_len - 1)  # from each sequence's first item
        x = self.item(items) * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        x = F.dropout(x, p=self.cfg.dropout, training=self.training) * valid.unsqueeze(-1)
        mask = (torch.ones(W, W, dtype=torch.bool).tril()[None] & valid[:, None, :]).to(x.dtype)
        for blk in self.blocks:
            x = blk(x, mask, ts, query_ts)
        return F.normalize(x, dim=-1, eps=1e-6)

    def loss(self, batch: dict) -> torch.Tensor:
        h = self(batch["items"], batch["ts"], batch["next_ts"])
        keep = batch["targets"] > 0
        c = self.cfg
        return sampled_softmax_loss(h[keep], batch["targets"][keep], self.item_vectors, self.n_items, c.n_negatives,
                                    c.temperature, c.negatives)

    @torch.no_grad()
    def score(self, batch: dict) -> torch.Tensor:
        h = self(batch["items"], batch.get("ts"))[:, -1]
        return h @ self.item_vectors(torch.arange(self.n_items + 1)).T


def fit(split, config: dict, out, seed: int = 0, *, ks=None, exclude_history: bool = False) -> dict:
    """Registry entry for ``llmrec baseline train --model hstu`` (config: HSTUConfig + TrainConfig keys)."""
    cfg, tcfg, resume = split_config(config, HSTUConfig, "hstu")
    torch.manual_seed(seed)
    model = HSTU(split.n_items, cfg)
    return fit_next_item_model(model, name="hstu", split=split, model_cfg=cfg, train_cfg=tcfg, workdir=out,
                               seed=seed, resume=resume, with_time=True, windows=cfg.windows, ks=ks,
                               exclude_history=exclude_history)
