"""Preprocessing shared by every reader: filters, chronological order, label encoding, item text.

Readers hand over *raw* frames keyed by original ids:
  interactions: ``user``, ``item`` (str), ``timestamp`` (int64), optional ``rating`` (float)
  items:        ``item`` (str), ``title`` and any text fields (str)
Rows of ``interactions`` must be in source order; that order breaks timestamp ties.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

# Text fields composed into ``text``, in this order, when present (others are kept but not composed).
DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")
_DESCRIPTION_CHARS = 600


@dataclass
class PreprocessConfig:
    """What ``llmrec data build`` does between reading and writing. Defaults change nothing."""

    min_rating: float | None = None          # keep rating >= min_rating ("keep > 3" on a 1-5 scale is 4)
    core: int | None = None                  # iterative N-core on users and items
    user_core: int | None = None             # override ``core`` for users
    item_core: int | None = None             # override ``core`` for items
    dedup_consecutive: bool = False          # drop a user's immediate repeats of the same item
    missing_items: Literal["drop", "fail", "keep"] = "drop"  # interactions whose item has no metadata
    text_fields: tuple[str, ...] | None = None  # fields composed into `text` (default DEFAULT_TEXT_FIELDS)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["text_fields"] = list(self.text_fields) if self.text_fields else None
        return d


@dataclass
class Preprocessed:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    stats: dict = field(default_factory=dict)


def _natural_order(ids: pd.Series) -> np.ndarray:
    """Unique ids sorted numerically when they all are integers (so 1..N stays 1..N), else as strings."""
    uniq = pd.unique(ids)
    num = pd.to_numeric(pd.Series(uniq), errors="coerce")
    if num.notna().all() and (num == num.round()).all():
        return uniq[np.argsort(num.to_numpy(), kind="stable")]
    return np.sort(uniq.astype(str))


def iterative_core(inter: pd.DataFrame, user_core: int, item_core: int) -> tuple[pd.DataFrame, int]:
    """Drop users with < user_core and items with < item_core interactions until both hold."""
    u = pd.factorize(inter["user"])[0]
    i = pd.factorize(inter["item"])[0]
    keep = np.ones(len(u), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        uc = np.bincount(u[keep], minlength=u.max() + 1 if len(u) else 0)
        ic = np.bincount(i[keep], minlength=i.max() + 1 if len(i) else 0)
        ok = keep & (uc[u] >= user_core) & (ic[i] >= item_core)
        if (ok == keep).all() or not ok.any():
            return inter[ok], rounds
        keep = ok


def compose_text(items: pd.DataFrame, fields: tuple[str, ...]) -> pd.Series:
    """``text`` = title, then "Field: value" for each other non-empty field, joined by ". "."""
    parts = []
    for f in fields:
        if f not in items.columns:
            continue
        col = items[f].fillna("").astype(str).str.strip()
        if f == "description":
            col = col.str.slice(0, _DESCRIPTION_CHARS)
        if f == "title":
            parts.append(col)
        else:
            label = f.replace("_", " ").capitalize()
            parts.append(col.where(col == "", label + ": " + col))
    if not parts:
        return pd.Series([""] * len(items), index=items.index)
    cols = [p.tolist() for p in parts]
    return pd.Series([". ".join(x for x in row if x) for row in zip(*cols)], index=items.index)


def preprocess(inter: pd.DataFrame, items: pd.DataFrame | None, cfg: PreprocessConfig,
               source: str = "interactions", items_source: str | None = None) -> Preprocessed:
    stats: dict = {"raw_interactions": int(len(inter))}
    inter = inter.reset_index(drop=True)
    inter["_order"] = np.arange(len(inter), dtype=np.int64)
    inter["user"] = inter["user"].astype(str)
    inter["item"] = inter["item"].astype(str)

    if cfg.min_rating is not None:
        if "rating" not in inter.columns:
            raise LlmrecError(f"{source}: --min-rating given but the data has no rating column "
                              "(map one with --columns rating=COL)")
        inter = inter[inter["rating"] >= cfg.min_rating]
        stats["after_min_rating"] = int(len(inter))

    if items is not None:
        items = _clean_items(items, items_source or source)
        known = inter["item"].isin(items["item"])
        n_missing = int((~known).sum())
        stats["interactions_with_unknown_item"] = n_missing
        if n_missing:
            missing_ids = pd.unique(inter.loc[~known, "item"])
            example = ", ".join(map(str, missing_ids[:5]))
            msg = (f"{source}: {n_missing} interactions ({len(missing_ids)} items, e.g. {example}) refer to items "
                   "absent from the item metadata")
            if cfg.missing_items == "fail":
                raise LlmrecError(msg + " (use --missing-items drop to drop them)")
            if cfg.missing_items == "drop":
                log.warning("%s; dropping them (--missing-items fail to stop instead)", msg)
                inter = inter[known.to_numpy()]
            else:
                log.warning("%s; keeping them with empty text", msg)

    # Chronological per user, source order breaking ties (deterministic).
    inter = inter.sort_values(["user", "timestamp", "_order"], kind="stable")

    if cfg.dedup_consecutive:
        prev_same = (inter["user"] == inter["user"].shift()) & (inter["item"] == inter["item"].shift())
        inter = inter[~prev_same.to_numpy()]
        stats["after_dedup_consecutive"] = int(len(inter))

    ucore = cfg.user_core if cfg.user_core is not None else cfg.core
    icore = cfg.item_core if cfg.item_core is not None else cfg.core
    if ucore or icore:
        inter, rounds = iterative_core(inter, ucore or 0, icore or 0)
        stats["after_core"] = int(len(inter))
        stats["core_rounds"] = rounds

    if inter.empty:
        raise LlmrecError(f"{source}: no interactions left after filtering (config: {cfg.to_dict()}, "
                          f"counts: {stats}); relax --min-rating/--core")

    user_ids = _natural_order(inter["user"])
    item_ids = _natural_order(inter["item"])
    umap = pd.Series(np.arange(1, len(user_ids) + 1, dtype=np.int32), index=user_ids)
    imap = pd.Series(np.arange(1, len(item_ids) + 1, dtype=np.int32), index=item_ids)

    out = pd.DataFrame({
        "user": umap.reindex(inter["user"].to_numpy()).to_numpy(),
        "item": imap.reindex(inter["item"].to_numpy()).to_numpy(),
        "timestamp": inter["timestamp"].to_numpy(np.int64),
    })
    if "rating" in inter.columns:
        out["rating"] = inter["rating"].to_numpy(np.float32)
    # Re-sort by encoded user (same per-user order as before).
    out = out.iloc[np.argsort(out["user"].to_numpy(), kind="stable")].reset_index(drop=True)

    item_frame = pd.DataFrame({"item": imap.to_numpy(), "original_id": imap.index.astype(str)})
    if items is not None:
        meta = items.set_index("item")
        meta = meta.reindex(item_frame["original_id"].to_numpy())
        for col in meta.columns:
            item_frame[col] = meta[col].fillna("").astype(str).to_numpy()
    if "title" not in item_frame.columns:
        item_frame["title"] = ""
    fields = tuple(cfg.text_fields) if cfg.text_fields else DEFAULT_TEXT_FIELDS
    missing_fields = [f for f in (cfg.text_fields or ()) if f not in item_frame.columns]
    if missing_fields:
        raise LlmrecError(f"{source}: text field(s) {missing_fields} not in the item metadata "
                          f"(columns: {sorted(item_frame.columns)})")
    item_frame["text"] = compose_text(item_frame, fields).to_numpy()
    users = pd.DataFrame({"user": umap.to_numpy(), "original_id": umap.index.astype(str)})
    stats.update({"n_users": len(user_ids), "n_items": len(item_ids), "n_interactions": int(len(out)),
                  "items_with_empty_title": int((item_frame["title"].str.strip() == "").sum())})
    return Preprocessed(out, item_frame, users, stats)


def _clean_items(items: pd.DataFrame, source: str) -> pd.DataFrame:
    """One row per item id; identical duplicates collapse, conflicting titles are an error."""
    items = items.copy()
    items["item"] = items["item"].astype(str)
    for col in items.columns:
        if col != "item" and not col.startswith("_"):
            items[col] = items[col].fillna("").astype(str)
    if "title" in items.columns:
        dup = items.duplicated("item", keep=False)
        if dup.any():
            d = items[dup]
            titles = d.groupby("item", sort=False)["title"].nunique()
            bad = titles[titles > 1]
            if len(bad):
                iid = bad.index[0]
                rows = d[d["item"] == iid]
                lines = ", ".join(str(x) for x in rows["_line"][:3]) if "_line" in rows else "?"
                shown = " vs ".join(repr(t) for t in rows["title"].unique()[:2])
                raise LlmrecError(f"{source}, lines {lines}, field 'title': item id {iid!r} appears {len(rows)} "
                                  f"times with conflicting titles ({shown}); item ids must be unique")
    items = items.drop_duplicates("item", keep="first").reset_index(drop=True)
    return items.drop(columns=[c for c in items.columns if c.startswith("_")])
