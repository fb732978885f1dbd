"""SASRec (Kang & McAuley, 2018): causal self-attention over item ids, one file.

Three training losses, because published SASRec numbers differ mostly by loss: ``bce`` (the paper: one
uniform negative per position), ``sampled_softmax`` (softmax over the positive and N uniform negatives; the
tuned setting that reaches R@10 ~.09 on Beauty) and ``full_softmax`` (cross-entropy over the whole catalog).
Input and output item embeddings are shared. Histories are right-aligned (left-padded), so the newest item
always sits in the last column and absolute positions count back from it.

Python API::

    from llmrec.models.sasrec import SASRec, SASRecConfig, fit
    result = fit(split, {"loss": "sampled_softmax", "n_negatives": 256}, out, seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmrec.errors import LlmrecError
from llmrec.training.loop import (bce_loss, fit_next_item_model, full_softmax_loss, sampled_softmax_loss,
                                  split_config)

LOSSES = ("bce", "sampled_softmax", "full_softmax")


@dataclass
class SASRecConfig:
    max_len: int = 50              # newest history items the model sees
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    ffn_mult: int = 1              # feed-forward width = ffn_mult * d_model (the paper: 1)
    dropout: float = 0.2
    loss: str = "sampled_softmax"  # bce | sampled_softmax | full_softmax
    n_negatives: int = 256         # for bce and sampled_softmax
    negatives: str = "batch"       # batch: N distinct negatives shared by the batch; position: N per position
    temperature: float = 1.0       # logits / temperature (softmax losses)
    windows: bool = False          # also train on older windows of sequences longer than max_len + 1

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise LlmrecError(f"sasrec: loss must be one of {LOSSES}, got {self.loss!r}")
        if self.d_model % self.n_heads:
            raise LlmrecError(f"sasrec: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


def causal_mask(items: torch.Tensor) -> torch.Tensor:
    """``[B, 1, W, W]`` boolean attention mask: a query sees itself and earlier non-padding keys."""
    W = items.shape[1]
    causal = torch.ones(W, W, dtype=torch.bool).tril()
    keys = (items > 0)[:, None, None, :]
    eye = torch.eye(W, dtype=torch.bool)   # padded queries see themselves only (no all-masked rows -> no NaN)
    return (causal & keys) | eye


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, W, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, W, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, W, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.n_items, self.cfg = n_items, cfg
        d = cfg.d_model
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.ffn_mult * d, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` ``[B, W]`` right-aligned -> hidden states ``[B, W, d]`` (position t sees items <= t)."""
        B, W = items.shape
        pos = torch.arange(self.cfg.max_len - W, self.cfg.max_len)  # counted back from the newest item
        x = self.item_emb(items) * math.sqrt(self.cfg.d_model) + self.pos_emb(pos)
        x = self.drop(x) * (items > 0).unsqueeze(-1)
        mask = causal_mask(items)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln_f(x)

    def loss(self, batch: dict) -> torch.Tensor:
        h = self(batch["items"])
        keep = batch["targets"] > 0
        h, pos = h[keep], batch["targets"][keep]
        c = self.cfg
        if c.loss == "full_softmax":
            return full_softmax_loss(h, pos, self.item_emb.weight, c.temperature)
        if c.loss == "bce":
            return bce_loss(h, pos, self.item_emb, self.n_items, c.n_negatives, c.negatives)
        return sampled_softmax_loss(h, pos, self.item_emb, self.n_items, c.n_negatives, c.temperature, c.negatives)

    @torch.no_grad()
    def score(self, batch: dict) -> torch.Tensor:
        """Scores of every item (column 0 = padding) for the next item after each history."""
        return self(batch["items"])[:, -1] @ self.item_emb.weight.T


def fit(split, config: dict, out, seed: int = 0, *, ks=None, exclude_history: bool = False) -> dict:
    """Registry entry for ``llmrec baseline train --model sasrec`` (config: SASRecConfig + TrainConfig keys)."""
    cfg, tcfg, resume = split_config(config, SASRecConfig, "sasrec")
    torch.manual_seed(seed)
    model = SASRec(split.n_items, cfg)
    return fit_next_item_model(model, name="sasrec", split=split, model_cfg=cfg, train_cfg=tcfg, workdir=out,
                               seed=seed, resume=resume, windows=cfg.windows, ks=ks,
                               exclude_history=exclude_history)
