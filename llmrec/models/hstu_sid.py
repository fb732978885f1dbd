"""HSTU with Semantic-ID item embeddings (the hstu-semantic-id study), one file.

The item embedding of :mod:`llmrec.models.hstu` (input and output side) is replaced by one built from the item's
SID, using its first ``levels`` codes ``(c_1, ..., c_N)`` with codebook sizes ``K_l``:

``ngram``           one row per full N-gram ``(c_1..c_N)``. SID only.
``prefixN``         one row per prefix ``(c_1)``, ``(c_1, c_2)``, ..., ``(c_1..c_N)``, summed; each prefix length has
                    its own row range, so ``(5)`` and ``(0, 5)`` never share a row. SID only.
``prefixN-indEmb``  ``prefixN`` fused with the item-id embedding.
``RQsum-indEmb``    one row per (level, code), summed (``K_1 + ... + K_N`` rows), fused with the item-id embedding.

Fusions of the SID embedding ``s`` with the id embedding ``e``: ``sum`` (s + e), ``FC`` (Linear[s; e]), ``MLP``
(Linear-ReLU-Linear[s; e]), ``scalarGate`` (g = sigmoid(Linear[s; e]) in R, g s + (1 - g) e), ``vectorGate``
(the same with g in R^d) and ``scalarWeight`` (a learned alpha: alpha s + (1 - alpha) e).

By default a table has one row per distinct n-gram / prefix that occurs in the catalog (exact, no waste);
``table_size=N`` instead hashes the mixed-radix rank into N rows per prefix length, as the reference does for
open catalogs. Row 0 of every table is padding and *only* padding: every real code row is shifted by one, so a first-level code
0 is a trainable row (the reference code maps it onto the frozen zero padding row). Padding items (id 0) get the
zero embedding.

SIDs come from ``sids``: a SID folder (``llmrec sid build``, :class:`llmrec.tokenizers.SidTable`) or an LC-Rec /
MiniOneRec ``*.index.json`` (with ``sid_offset``, e.g. -1 for 0-based LC-Rec keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llmrec.errors import LlmrecError
from llmrec.models.hstu import HSTU, HSTUConfig
from llmrec.training.loop import fit_next_item_model, split_config

METHODS = ("ngram", "prefixN", "prefixN-indEmb", "RQsum-indEmb")
FUSIONS = ("sum", "FC", "MLP", "scalarGate", "vectorGate", "scalarWeight")


@dataclass
class HSTUSIDConfig(HSTUConfig):
    sids: str | None = None        # SID folder or *.index.json
    sid_offset: int = 0            # *.index.json only: item id = int(key) - sid_offset
    method: str = "prefixN-indEmb"
    fusion: str = "sum"            # for the -indEmb methods
    levels: int = 0                # use the first N SID levels (0 = all)
    table_size: int = 0            # 0: one row per distinct n-gram / prefix of the catalog; N: hash into N rows
    scale_sid: bool = False        # divide summed SID embeddings by sqrt(number of rows summed)

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise LlmrecError(f"hstu-sid: method must be one of {METHODS}, got {self.method!r}")
        if self.fusion not in FUSIONS:
            raise LlmrecError(f"hstu-sid: fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.sids:
            raise LlmrecError("hstu-sid: `sids` is required (a SID folder from `llmrec sid build` or an "
                              "LC-Rec *.index.json)")
        if self.levels < 0 or self.table_size < 0:
            raise LlmrecError(f"hstu-sid: levels and table_size must be >= 0 (got {self.levels}, "
                              f"{self.table_size})")


def load_sids(path: str | Path, n_items: int, offset: int = 0) -> tuple[np.ndarray, list[int]]:
    """``(codes [n_items + 1, L] with row 0 = -1, codebook sizes)`` from a SID folder or an ``*.index.json``."""
    from llmrec.tokenizers import SidTable

    p = Path(path)
    if p.is_dir():
        table = SidTable.load(p)
    elif p.is_file() and p.suffix == ".json":
        table = SidTable.from_index_json(p, offset=offset)
    else:
        raise LlmrecError(f"{p}: expected a SID folder (sids.parquet + sid_table.json) or an *.index.json file")
    if table.n_items != n_items:
        raise LlmrecError(f"{p}: SIDs for {table.n_items} items, but the dataset has {n_items} (row = item id; "
                          "for *.index.json check sid_offset)")
    codes = table.codes.copy()
    sizes = [max(int(k), int(codes[1:, l].max()) + 1) for l, k in enumerate(table.codebook_sizes)]
    if (codes[1:] < 0).any():
        raise LlmrecError(f"{p}: some items have negative SID codes")
    return codes, sizes


def sid_rows(codes: np.ndarray, sizes: list[int], method: str, table_size: int) -> tuple[np.ndarray, int]:
    """Table rows per item ``[n_items + 1, R]`` (row 0 = padding, used only by item 0) and the table size."""
    codes = np.asarray(codes, np.int64)[:, : len(sizes)]
    n = len(codes)
    real = codes[1:]
    if method == "RQsum-indEmb":
        offs = np.r_[0, np.cumsum(sizes)[:-1]]
        rows = 1 + offs[None, :] + real
        total = 1 + int(sum(sizes))
    else:
        prefixes = [len(sizes)] if method == "ngram" else list(range(1, len(sizes) + 1))
        cols, start = [], 1
        for p in prefixes:
            if table_size <= 0:            # exact: one row per distinct prefix that some item has
                _, key = np.unique(real[:, :p], axis=0, return_inverse=True)
                key = key.ravel()
                width = int(key.max()) + 1
            else:                          # hashed, as the reference: mixed-radix rank mod table_size
                space = 1
                for k in sizes[:p]:
                    space *= int(k)        # Python int: no overflow however long the SID
                width = min(space, table_size)
                key = np.zeros(len(real), np.int64)
                for l in range(p):         # reduced mod width as it goes (= rank mod width)
                    key = (key * int(sizes[l]) + real[:, l]) % width
            cols.append(start + key)
            start += width
        rows = np.stack(cols, axis=1)
        total = start
    out = np.zeros((n, rows.shape[1]), np.int64)
    out[1:] = rows
    return out, total


class Fusion(nn.Module):
    """Combine the SID embedding ``s`` and the item-id embedding ``e`` (see the module docstring)."""

    def __init__(self, kind: str, d: int):
        super().__init__()
        self.kind = kind
        if kind == "FC":
            self.net = nn.Linear(2 * d, d)
        elif kind == "MLP":
            self.net = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        elif kind == "scalarGate":
            self.net = nn.Linear(2 * d, 1)
        elif kind == "vectorGate":
            self.net = nn.Linear(2 * d, d)
        elif kind == "scalarWeight":
            self.alpha = nn.Parameter(torch.tensor(0.5))
        elif kind != "sum":
            raise LlmrecError(f"unknown fusion {kind!r}; expected one of {FUSIONS}")

    def forward(self, s: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k == "sum":
            return s + e
        if k == "scalarWeight":
            return self.alpha * s + (1 - self.alpha) * e
        z = self.net(torch.cat([s, e], dim=-1))
        if k in ("FC", "MLP"):
            return z
        g = torch.sigmoid(z)
        return g * s + (1 - g) * e


class SIDEmbedding(nn.Module):
    """Item embedding from Semantic IDs (+ the item-id embedding for the ``-indEmb`` methods)."""

    def __init__(self, codes: np.ndarray, sizes: list[int], d: int, method: str = "prefixN-indEmb",
                 fusion: str = "sum", levels: int = 0, table_size: int = 0, scale: bool = False):
        super().__init__()
        if method not in METHODS:
            raise LlmrecError(f"unknown SID method {method!r}; expected one of {METHODS}")
        L = len(sizes) if levels <= 0 else min(levels, len(sizes))
        self.method, self.levels = method, L
        rows, total = sid_rows(codes, list(sizes[:L]), method, table_size)
        self.register_buffer("rows", torch.from_numpy(rows), persistent=False)
        self.table = nn.Embedding(total, d, padding_idx=0)
        nn.init.trunc_normal_(self.table.weight, std=0.02)
        with torch.no_grad():
            self.table.weight[0].zero_()
        self.scale = 1.0 / float(np.sqrt(rows.shape[1])) if scale else 1.0
        self.ind = None
        if method.endswith("-indEmb"):
            self.ind = nn.Embedding(len(codes), d, padding_idx=0)
            nn.init.trunc_normal_(self.ind.weight, std=0.02)
            with torch.no_grad():
                self.ind.weight[0].zero_()
            self.fuse = Fusion(fusion, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.table(self.rows[ids]).sum(-2) * self.scale
        if self.ind is None:
            return s
        return self.fuse(s, self.ind(ids))


def fit(split, config: dict, out, seed: int = 0, *, ks=None, exclude_history: bool = False) -> dict:
    """Registry entry for ``llmrec baseline train --model hstu-sid`` (config: HSTUSIDConfig + TrainConfig keys)."""
    cfg, tcfg, resume = split_config(config, HSTUSIDConfig, "hstu-sid")
    codes, sizes = load_sids(cfg.sids, split.n_items, cfg.sid_offset)
    torch.manual_seed(seed)
    emb = SIDEmbedding(codes, sizes, cfg.d_model, cfg.method, cfg.fusion, cfg.levels, cfg.table_size, cfg.scale_sid)
    model = HSTU(split.n_items, cfg, item_embedding=emb)
    L = emb.levels
    n_unique = len({tuple(r) for r in codes[1:, :L].tolist()})
    info = {"sid_levels_used": L, "sid_codebook_sizes": sizes[:L], "sid_table_rows": emb.table.num_embeddings,
            "items_sharing_a_sid_prefix": int(split.n_items - n_unique)}
    name = f"hstu-sid[{cfg.method}" + (f",{cfg.fusion}]" if cfg.method.endswith("-indEmb") else "]")
    return fit_next_item_model(model, name=name, split=split, model_cfg=cfg, train_cfg=tcfg, workdir=out,
                               seed=seed, resume=resume, with_time=True, windows=cfg.windows, ks=ks,
                               exclude_history=exclude_history, extra_info=info)
