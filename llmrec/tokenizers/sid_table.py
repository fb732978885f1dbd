"""The item <-> Semantic ID table every generative model stands on.

``codes[item]`` is the item's code tuple (one int per level); row 0 is padding (-1). Level ``l`` code ``c``
is written as the token ``<{letter_l}_{c}>`` (``<a_12><b_7><c_201><d_0>``), the format LC-Rec and MiniOneRec
use, so their ``*.index.json`` files round-trip.

On disk (inside a SID folder): ``sids.parquet`` with columns ``item``, ``original_id``, ``c0..c{L-1}``, ``sid``
and ``sid_table.json`` with the per-level codebook sizes and token letters.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.artifacts import read_json, write_json
from llmrec.errors import LlmrecError, where

LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


@dataclass
class SidTable:
    codes: np.ndarray                      # [n_items + 1, L] int, row 0 = -1
    codebook_sizes: list[int]              # K per level (the disambiguation level included)
    letters: str = LETTERS
    original_ids: np.ndarray | None = field(default=None, repr=False)  # [n_items + 1] str, row 0 ""

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        if self.codes.ndim != 2 or len(self.codes) < 2:
            raise LlmrecError(f"SID codes must be a [n_items + 1, levels] array, got shape {self.codes.shape}")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise LlmrecError(f"{len(self.codebook_sizes)} codebook sizes for {self.codes.shape[1]} levels")

    @property
    def n_items(self) -> int:
        return len(self.codes) - 1

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    def token(self, level: int, code: int) -> str:
        return f"<{self.letters[level]}_{int(code)}>"

    def item_tokens(self, item: int) -> list[str]:
        return [self.token(l, c) for l, c in enumerate(self.codes[item])]

    def item_sid(self, item: int) -> str:
        return "".join(self.item_tokens(item))

    def vocabulary(self) -> list[str]:
        """Every token of every level (``K_l`` per level), in level order: what a language model must know."""
        return [self.token(l, c) for l, k in enumerate(self.codebook_sizes) for c in range(k)]

    @cached_property
    def item_of(self) -> dict[tuple, int]:
        """``{code tuple: item}``; raises if two items share a SID (use a collision-free table)."""
        out: dict[tuple, int] = {}
        for item in range(1, len(self.codes)):
            key = tuple(int(x) for x in self.codes[item])
            if key in out:
                raise LlmrecError(f"items {out[key]} and {item} share the SID {self.item_sid(item)}; "
                                  "build SIDs with a disambiguation level (--dedup digit)")
            out[key] = item
        return out

    def parse(self, text: str) -> tuple[int, ...] | None:
        """Codes of the first complete SID in ``text`` (``None`` if there is none)."""
        toks = _TOKEN.findall(text)
        want = list(self.letters[: self.levels])
        for s in range(len(toks) - self.levels + 1):
            win = toks[s: s + self.levels]
            if [w[0] for w in win] == want:
                return tuple(int(w[1]) for w in win)
        return None

    def decode_item(self, text: str) -> int | None:
        codes = self.parse(text)
        return None if codes is None else self.item_of.get(codes)

    def n_unique(self) -> int:
        return len({tuple(r) for r in self.codes[1:].tolist()})

    # --- persistence -------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        cols = {"item": np.arange(1, len(self.codes), dtype=np.int32)}
        cols["original_id"] = (self.original_ids[1:] if self.original_ids is not None
                               else cols["item"].astype(str))
        for l in range(self.levels):
            cols[f"c{l}"] = self.codes[1:, l].astype(np.int32)
        cols["sid"] = [self.item_sid(i) for i in range(1, len(self.codes))]
        pd.DataFrame(cols).to_parquet(folder / "sids.parquet", index=False)
        write_json(folder / "sid_table.json", {"levels": self.levels, "codebook_sizes": list(self.codebook_sizes),
                                               "letters": self.letters[: self.levels], "n_items": self.n_items})

    @classmethod
    def load(cls, folder: str | Path) -> "SidTable":
        folder = Path(folder)
        if not (folder / "sids.parquet").is_file():
            raise LlmrecError(f"{folder}: no sids.parquet (build SIDs with `llmrec sid build`)")
        meta = read_json(folder / "sid_table.json")
        df = pd.read_parquet(folder / "sids.parquet").sort_values("item")
        L = int(meta["levels"])
        n = int(df["item"].max())
        if not np.array_equal(df["item"].to_numpy(), np.arange(1, n + 1)):
            raise LlmrecError(f"{folder / 'sids.parquet'}: item ids must be exactly 1..{n}")
        codes = np.full((n + 1, L), -1, dtype=np.int64)
        codes[1:] = df[[f"c{l}" for l in range(L)]].to_numpy()
        orig = np.empty(n + 1, dtype=object)
        orig[0] = ""
        orig[1:] = df["original_id"].astype(str).to_numpy()
        letters = meta.get("letters", LETTERS[:L])
        return cls(codes, list(meta["codebook_sizes"]), letters + LETTERS[len(letters):], orig)

    # --- LC-Rec / MiniOneRec *.index.json ----------------------------------------------------------------
    def to_index_json(self, path: str | Path, key: str = "original_id", offset: int = 0) -> None:
        """Write ``{"item_id": ["<a_1>", "<b_2>", ...]}``. ``key="item"`` uses llmrec ids (+ ``offset``),
        ``key="original_id"`` the source ids (LC-Rec files use 0-based source ids)."""
        out = {}
        for item in range(1, len(self.codes)):
            k = str(self.original_ids[item]) if key == "original_id" and self.original_ids is not None \
                else str(item + offset)
            out[k] = self.item_tokens(item)
        Path(path).write_text(json.dumps(out))

    @classmethod
    def from_index_json(cls, path: str | Path, original_ids: np.ndarray | list | None = None,
                        offset: int = 0) -> "SidTable":
        """Read an ``*.index.json``. Items are matched to llmrec ids through ``original_ids`` (``[n_items+1]``,
        the dataset's ``original_id`` per item id) or, without it, ``item = int(key) - offset``."""
        path = Path(path)
        if not path.is_file():
            raise LlmrecError(f"{path}: file not found (expected an LC-Rec/MiniOneRec *.index.json)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LlmrecError(f"{where(path, e.lineno)}: invalid JSON ({e.msg})") from None
        if not isinstance(data, dict) or not data:
            raise LlmrecError(f"{path}: expected a non-empty object {{item_id: [\"<a_1>\", ...]}}")
        parsed = {}
        L = None
        letters = None
        for k, toks in data.items():
            if not isinstance(toks, list) or not toks:
                raise LlmrecError(f"{path}, field {k!r}: expected a list of SID tokens, got {toks!r}")
            m = [_TOKEN.fullmatch(t) if isinstance(t, str) else None for t in toks]
            if not all(m):
                raise LlmrecError(f"{path}, field {k!r}: tokens must look like <a_12>, got {toks!r}")
            lets = "".join(x.group(1) for x in m)
            if L is None:
                L, letters = len(toks), lets
            elif len(toks) != L or lets != letters:
                raise LlmrecError(f"{path}, field {k!r}: {len(toks)} levels {lets!r}, expected {L} levels "
                                  f"{letters!r} as in the first entry")
            parsed[str(k)] = [int(x.group(2)) for x in m]
        if original_ids is not None:
            orig = [str(x) for x in original_ids]
            n = len(orig) - 1
            missing = [o for o in orig[1:] if o not in parsed]
            if missing:
                raise LlmrecError(f"{path}: {len(missing)} dataset items have no SID (e.g. {missing[:3]}); "
                                  "check the id mapping (--key/--offset)")
            codes = np.full((n + 1, L), -1, np.int64)
            for i in range(1, n + 1):
                codes[i] = parsed[orig[i]]
            orig_arr = np.asarray(orig, dtype=object)
        else:
            ids = {int(k) - offset: v for k, v in parsed.items()}
            n = max(ids)
            if sorted(ids) != list(range(1, n + 1)):
                raise LlmrecError(f"{path}: keys minus offset {offset} must be exactly 1..N; pass original ids or "
                                  "the right offset (LC-Rec files are 0-based: offset -1)")
            codes = np.full((n + 1, L), -1, np.int64)
            for i, v in ids.items():
                codes[i] = v
            orig_arr = np.asarray([""] + [str(i + offset) for i in range(1, n + 1)], dtype=object)
        sizes = [int(codes[1:, l].max()) + 1 for l in range(L)]
        return cls(codes, sizes, letters + LETTERS[len(letters):], orig_arr)


def load_sid_codes(folder: str | Path) -> np.ndarray:
    """``[n_items + 1, L]`` code array of a SID folder (row 0 = -1)."""
    return SidTable.load(folder).codes
