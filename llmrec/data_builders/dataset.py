"""The normalized on-disk dataset: one folder, three files.

``interactions.parquet``  user, item, timestamp[, rating]; ids are ints from 1 (0 is padding), rows sorted by
                          (user, timestamp) with the source order breaking ties.
``items.parquet``         item, original_id, title, <text fields...>, text (the composed string used for
                          embeddings and prompts); one row per item id 1..n_items.
``users.parquet``         user, original_id.
``dataset.json``          manifest: n_users, n_items, n_interactions, preprocessing config, stats, sources + sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.artifacts import read_json
from llmrec.errors import LlmrecError

INTERACTIONS = "interactions.parquet"
ITEMS = "items.parquet"
USERS = "users.parquet"
MANIFEST = "dataset.json"


@dataclass
class Dataset:
    """A built dataset folder, loaded. Use :func:`load_dataset`."""

    path: Path
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def has_timestamps(self) -> bool:
        return bool(self.meta.get("has_timestamps", True))

    @cached_property
    def titles(self) -> np.ndarray:
        """``titles[item_id]`` (index 0 is the empty padding title)."""
        out = np.empty(self.n_items + 1, dtype=object)
        out[0] = ""
        out[self.items["item"].to_numpy()] = self.items["title"].fillna("").to_numpy()
        return out

    @cached_property
    def texts(self) -> np.ndarray:
        """``texts[item_id]``: the composed item text (index 0 empty)."""
        out = np.empty(self.n_items + 1, dtype=object)
        out[0] = ""
        out[self.items["item"].to_numpy()] = self.items["text"].fillna("").to_numpy()
        return out

    def sequences(self) -> list[np.ndarray]:
        """Chronological item sequence of each user; ``sequences()[u - 1]`` belongs to user ``u``."""
        items = self.interactions["item"].to_numpy()
        users = self.interactions["user"].to_numpy()
        bounds = np.flatnonzero(np.diff(users)) + 1
        return np.split(items, bounds)


def load_dataset(path: str | Path) -> Dataset:
    """Load a folder written by ``llmrec data build``."""
    path = Path(path)
    if not path.is_dir():
        raise LlmrecError(f"{path}: dataset folder not found (build one with `llmrec data build`)")
    for name in (MANIFEST, INTERACTIONS, ITEMS):
        if not (path / name).is_file():
            raise LlmrecError(f"{path / name}: file not found; is {path} a folder written by `llmrec data build`?")
    meta = read_json(path / MANIFEST)
    inter = pd.read_parquet(path / INTERACTIONS)
    items = pd.read_parquet(path / ITEMS)
    users = pd.read_parquet(path / USERS) if (path / USERS).is_file() else pd.DataFrame(
        {"user": np.arange(1, meta["n_users"] + 1), "original_id": np.arange(1, meta["n_users"] + 1).astype(str)})
    return Dataset(path=path, interactions=inter, items=items, users=users, meta=meta)
