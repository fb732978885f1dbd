"""The interface every item tokenizer implements, and the registry ``llmrec sid build --method`` reads.

An item tokenizer maps embeddings ``x [n, d]`` to code tuples ``[n, L]`` (one code per level, ``0 <= c < K``):

* ``fit(x)`` learns the codebooks and returns the codes of ``x``;
* ``encode(x)`` codes new items with the learned codebooks (deterministic; ``fit(x)`` then ``encode(x)`` agree);
* ``decode(codes)`` reconstructs ``x_hat`` (the error ``||x - x_hat|| / ||x||`` measures what codes keep);
* ``last_level_distances(x, codes)`` scores every last-level code for the re-assignment dedup;
* ``save(folder)`` writes ``codebooks.safetensors`` + ``tokenizer.json``; ``load_tokenizer(folder)`` reads them
  back (no pickle).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from llmrec.artifacts import read_json, write_json
from llmrec.errors import LlmrecError

CODEBOOKS = "codebooks.safetensors"
TOKENIZER = "tokenizer.json"

# method name -> "module:class"
METHODS = {
    "rq-kmeans": "llmrec.tokenizers.rq_kmeans:RQKMeans",
    "rq-kmeans-balanced": "llmrec.tokenizers.rq_kmeans:RQKMeans",
    "rq-vae": "llmrec.tokenizers.rq_vae:RQVAE",
}


class ItemTokenizer(Protocol):
    method: str
    levels: int
    codes: int

    def fit(self, x: np.ndarray) -> np.ndarray: ...
    def encode(self, x: np.ndarray) -> np.ndarray: ...
    def decode(self, codes: np.ndarray) -> np.ndarray: ...
    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray: ...
    def config(self) -> dict: ...
    def tensors(self) -> dict[str, np.ndarray]: ...


def _cls(method: str):
    if method not in METHODS:
        raise LlmrecError(f"unknown SID method {method!r}; choose one of {sorted(METHODS)}")
    mod, name = METHODS[method].split(":")
    return getattr(importlib.import_module(mod), name)


def make_tokenizer(method: str, **config) -> ItemTokenizer:
    """``make_tokenizer("rq-kmeans", levels=3, codes=256, seed=0)``."""
    cls = _cls(method)
    if method == "rq-kmeans-balanced":
        config.setdefault("balanced", True)
    return cls(method=method, **config)


def save_tokenizer(tok: ItemTokenizer, folder: str | Path) -> None:
    from safetensors.numpy import save_file

    folder = Path(folder)
    tensors = {k: np.ascontiguousarray(v) for k, v in tok.tensors().items()}
    save_file(tensors, str(folder / CODEBOOKS), metadata={"method": tok.method,
                                                          "config": json.dumps(tok.config(), default=str)})
    write_json(folder / TOKENIZER, {"method": tok.method, "config": tok.config()})


def load_tokenizer(folder: str | Path) -> ItemTokenizer:
    """Read ``tokenizer.json`` + ``codebooks.safetensors`` written by :func:`save_tokenizer`."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta = read_json(folder / TOKENIZER)
    if not (folder / CODEBOOKS).is_file():
        raise LlmrecError(f"{folder / CODEBOOKS}: file not found (a SID folder from `llmrec sid build` has one)")
    cls = _cls(meta["method"])
    return cls.from_tensors(meta["method"], meta["config"], load_file(str(folder / CODEBOOKS)))
