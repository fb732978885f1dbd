"""GPT-2 over item tokens (Hugging Face ``GPT2LMHeadModel`` from a ``GPT2Config``, trained from scratch).

Each item id is one token (vocabulary = ``n_items + 1``, token 0 = padding); the model is trained as a language
model for next-item prediction with a full softmax over the catalog. Three ways to use item *content* (the seed
question "SASRec and GPT-2 with and without content embeddings"), chosen with ``content``:

``none``    random item embeddings (a plain ID model);
``init``    the tied input/output item embeddings start from the item text embeddings (PCA to ``d_model``,
            scaled to the usual init std) and are then trained;
``frozen``  the text embeddings stay frozen and enter through a trained projection (``inputs_embeds``); the
            output layer is a learned item-id embedding (the tied ``wte``).

Text embeddings come from ``embeddings``: an ``.npy`` file or an EMB folder (``llmrec items embed``) holding
``embeddings.npy`` with one row per item id (row 0 = padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llmrec.errors import LlmrecError
from llmrec.training.loop import fit_next_item_model, split_config

CONTENT = ("none", "init", "frozen")


@dataclass
class GPT2RecConfig:
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 4
    dropout: float = 0.2
    content: str = "none"          # none | init | frozen (see module docstring)
    embeddings: str | None = None  # .npy or EMB folder with embeddings.npy (row = item id); for init / frozen
    proj_layers: int = 1           # frozen: 1 = linear projection, 2 = Linear-GELU-Linear
    label_smoothing: float = 0.0
    windows: bool = False

    def __post_init__(self):
        if self.content not in CONTENT:
            raise LlmrecError(f"gpt2: content must be one of {CONTENT}, got {self.content!r}")
        if self.content != "none" and not self.embeddings:
            raise LlmrecError(f"gpt2: content={self.content!r} needs `embeddings` (an .npy file or an EMB folder "
                              "made by `llmrec items embed`)")
        if self.proj_layers not in (1, 2):
            raise LlmrecError(f"gpt2: proj_layers must be 1 or 2, got {self.proj_layers}")


def load_item_embeddings(path: str | Path, n_items: int) -> np.ndarray:
    """``[n_items + 1, D]`` float32 text embeddings from an ``.npy`` file or a folder with ``embeddings.npy``."""
    p = Path(path)
    if p.is_dir():
        p = p / "embeddings.npy"
    if not p.is_file():
        raise LlmrecError(f"{p}: item embeddings not found (expected an .npy file or an EMB folder with "
                          "embeddings.npy; make one with `llmrec items embed`)")
    if p.suffix != ".npy":
        raise LlmrecError(f"{p}: expected a .npy file of item embeddings")
    E = np.load(p, allow_pickle=False)
    if E.ndim != 2 or E.shape[0] != n_items + 1:
        raise LlmrecError(f"{p}: expected shape [n_items + 1, dim] = [{n_items + 1}, dim] (row = item id, row 0 = "
                          f"padding), got {list(E.shape)}")
    E = E.astype(np.float32)
    if not np.isfinite(E).all():
        raise LlmrecError(f"{p}: embeddings contain NaN or inf")
    return E


def pca_init(E: np.ndarray, d: int, std: float) -> torch.Tensor:
    """Rows 1.. of ``E`` projected on their top-``d`` principal directions, scaled to per-entry ``std``
    (extra columns, if ``d`` exceeds the text dimension, get small noise). Row 0 stays zero."""
    X = torch.from_numpy(E[1:]).double()
    X = X - X.mean(0)
    k = min(d, X.shape[1], X.shape[0])
    _, _, V = torch.linalg.svd(X, full_matrices=False)
    Z = X @ V[:k].T
    Z = Z / Z.std() * std
    out = torch.zeros(E.shape[0], d)
    out[1:, :k] = Z.float()
    if k < d:
        out[1:, k:] = torch.randn(E.shape[0] - 1, d - k) * std * 0.1
    return out


class GPT2Rec(nn.Module):
    def __init__(self, n_items: int, cfg: GPT2RecConfig, text: np.ndarray | None = None):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.n_items, self.cfg = n_items, cfg
        hf = GPT2Config(vocab_size=n_items + 1, n_positions=cfg.max_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                        n_head=cfg.n_heads, n_inner=cfg.ffn_mult * cfg.d_model, resid_pdrop=cfg.dropout,
                        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=0, eos_token_id=0,
                        pad_token_id=0, tie_word_embeddings=True)
        self.gpt = GPT2LMHeadModel(hf)
        wte = self.gpt.transformer.wte.weight
        if cfg.content == "init":
            with torch.no_grad():
                wte.copy_(pca_init(text, cfg.d_model, hf.initializer_range))
        else:
            with torch.no_grad():
                wte[0].zero_()
        if cfg.content == "frozen":
            self.register_buffer("text", torch.from_numpy(text), persistent=False)
            D = text.shape[1]
            self.proj = nn.Linear(D, cfg.d_model) if cfg.proj_layers == 1 else nn.Sequential(
                nn.Linear(D, 2 * cfg.d_model), nn.GELU(), nn.Linear(2 * cfg.d_model, cfg.d_model))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Right-aligned ``items`` ``[B, W]`` -> last hidden states ``[B, W, d]`` (causal)."""
        mask = (items > 0).long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # positions count from each sequence's first real item
        kw = {"inputs_embeds": self.proj(self.text[items])} if self.cfg.content == "frozen" else {"input_ids": items}
        return self.gpt.transformer(attention_mask=mask, position_ids=pos, use_cache=False, **kw).last_hidden_state

    def loss(self, batch: dict) -> torch.Tensor:
        h = self(batch["items"])
        keep = batch["targets"] > 0
        logits = self.gpt.lm_head(h[keep])[:, 1:]  # padding (token 0) is never a class
        return nn.functional.cross_entropy(logits, batch["targets"][keep] - 1, label_smoothing=self.cfg.label_smoothing)

    @torch.no_grad()
    def score(self, batch: dict) -> torch.Tensor:
        return self.gpt.lm_head(self(batch["items"])[:, -1])


def fit(split, config: dict, out, seed: int = 0, *, ks=None, exclude_history: bool = False) -> dict:
    """Registry entry for ``llmrec baseline train --model gpt2`` (config: GPT2RecConfig + TrainConfig keys)."""
    cfg, tcfg, resume = split_config(config, GPT2RecConfig, "gpt2")
    text = load_item_embeddings(cfg.embeddings, split.n_items) if cfg.content != "none" else None
    torch.manual_seed(seed)
    model = GPT2Rec(split.n_items, cfg, text)
    return fit_next_item_model(model, name=f"gpt2-{cfg.content}", split=split, model_cfg=cfg, train_cfg=tcfg,
                               workdir=out, seed=seed, resume=resume, windows=cfg.windows, ks=ks,
                               exclude_history=exclude_history)
