"""Folders of the LC-Rec family and of MiniOneRec, so their users can bring data (and SIDs) as they are.

LC-Rec / LETTER: ``<Name>.inter.json`` ({user: [item, ...]} in chronological order, no timestamps),
``<Name>.item.json`` ({item: {title, description, brand, categories}}), ``<Name>.index.json`` (SIDs).

MiniOneRec: ``{train,valid,test}/<Cat>*.csv`` sample files (one row per history -> next item, history capped at
10, samples split 8:1:1 by the target's time) + ``index/<Cat>.item.json`` + ``index/<Cat>.index.json``. Users'
sequences are rebuilt from the samples; the published split itself is kept as ``splits/minionerec``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data_builders.raw import RawData, flatten_text, require_file
from llmrec.errors import LlmrecError, where


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LlmrecError(f"{where(path, e.lineno)}: invalid JSON ({e.msg})") from None


def _items_from_item_json(path: Path) -> pd.DataFrame:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise LlmrecError(f"{path}: expected a JSON object {{item_id: {{title, ...}}}}")
    rows = []
    for iid, rec in data.items():
        if not isinstance(rec, dict):
            raise LlmrecError(f"{path}, field {iid!r}: expected an object with title/description, got "
                              f"{type(rec).__name__}")
        desc = rec.get("description", "")
        if isinstance(desc, str) and desc.startswith("[") and desc.endswith("]"):
            try:  # MiniOneRec stores a Python-list literal inside the string
                desc = ast.literal_eval(desc)
            except (ValueError, SyntaxError):
                pass
        rows.append({"item": str(iid), "title": flatten_text(rec.get("title", "")),
                     "brand": flatten_text(rec.get("brand", "")),
                     "categories": flatten_text(rec.get("categories", "")),
                     "description": flatten_text(desc)})
    return pd.DataFrame(rows, columns=["item", "title", "brand", "categories", "description"])


def _one(folder: Path, pattern: str, what: str, required: bool = True) -> Path | None:
    hits = sorted(folder.glob(pattern))
    if not hits:
        if required:
            raise LlmrecError(f"{folder}: no {pattern} file found (expected {what})")
        return None
    if len(hits) > 1:
        raise LlmrecError(f"{folder}: several {pattern} files ({', '.join(h.name for h in hits)}); "
                          "pass the one you want as --path")
    return hits[0]


def read_lcrec(path: str | Path, items: str | Path | None = None) -> RawData:
    path = Path(path)
    if path.is_dir():
        inter_path = _one(path, "*.inter.json", "an LC-Rec interactions file <Name>.inter.json")
        stem = inter_path.name[: -len(".inter.json")]
        item_path = Path(items) if items else (path / f"{stem}.item.json")
        index_path = path / f"{stem}.index.json"
    else:
        inter_path = require_file(path, "an LC-Rec <Name>.inter.json file")
        stem = inter_path.name.split(".")[0]
        item_path = Path(items) if items else inter_path.with_name(f"{stem}.item.json")
        index_path = inter_path.with_name(f"{stem}.index.json")
    data = _load_json(inter_path)
    if not isinstance(data, dict):
        raise LlmrecError(f"{inter_path}: expected a JSON object {{user: [item, ...]}}")
    users, its, ts = [], [], []
    for u, seq in data.items():
        if not isinstance(seq, list):
            raise LlmrecError(f"{inter_path}, field {u!r}: expected a list of item ids, got {type(seq).__name__}")
        users.extend([str(u)] * len(seq))
        its.extend(str(i) for i in seq)
        ts.extend(range(len(seq)))
    inter = pd.DataFrame({"user": users, "item": its, "timestamp": np.asarray(ts, dtype=np.int64)})
    sources = [inter_path]
    meta = None
    if item_path is not None and item_path.is_file():
        sources.append(item_path)
        if item_path.suffix == ".json":
            meta = _items_from_item_json(item_path)
        else:
            from llmrec.data_builders.tabular import read_table
            meta = read_table(item_path).rename(columns={"item_id": "item"})
    elif items:
        raise LlmrecError(f"{item_path}: file not found (expected item metadata)")
    extra = {"sid_index": str(index_path)} if index_path.is_file() else {}
    return RawData(inter, meta, sources, has_timestamps=False, extra=extra)


def _parse_list(val: str, path: Path, line: int, field: str) -> list:
    try:
        out = ast.literal_eval(val)
    except (ValueError, SyntaxError):
        raise LlmrecError(f"{where(path, line, field)}: expected a list literal, got {val[:60]!r}") from None
    if not isinstance(out, list):
        raise LlmrecError(f"{where(path, line, field)}: expected a list, got {type(out).__name__}")
    return out


def read_minionerec(path: str | Path, items: str | Path | None = None) -> RawData:
    """``path``: MiniOneRec's ``data/Amazon`` folder (one category) or one of its split CSV files."""
    path = Path(path)
    if path.is_file():
        root, category = path.parent.parent, path.name.split("_5_")[0].split(".")[0]
    elif path.is_dir():
        root = path
        cats = sorted({p.name.split("_5_")[0] for sp in ("train", "valid", "test") for p in (root / sp).glob("*.csv")})
        if not cats:
            raise LlmrecError(f"{root}: no {{train,valid,test}}/*.csv sample files found (expected MiniOneRec's "
                              "data/Amazon layout)")
        if len(cats) > 1:
            raise LlmrecError(f"{root}: several categories ({', '.join(cats)}); pass one CSV, e.g. "
                              f"--path {root}/test/{cats[0]}_5_....csv")
        category = cats[0]
    else:
        raise LlmrecError(f"{path}: not found (expected MiniOneRec's data/Amazon folder)")

    samples = []
    sources = []
    for split in ("train", "valid", "test"):
        f = _one(root / split, f"{category}*.csv", f"MiniOneRec {split} samples", required=False) \
            if (root / split).is_dir() else None
        if f is None:
            continue
        sources.append(f)
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        need = {"user_id", "history_item_id", "item_id"}
        if need - set(df.columns):
            raise LlmrecError(f"{f}: missing column(s) {sorted(need - set(df.columns))} (header: {list(df.columns)})")
        for n, (u, h, t) in enumerate(zip(df["user_id"], df["history_item_id"], df["item_id"]), start=2):
            hist = [str(x) for x in _parse_list(h, f, n, "history_item_id")]
            samples.append((split, u, hist, str(t).strip()))
    if not samples:
        raise LlmrecError(f"{root}: no samples for category {category!r}")

    # Rebuild each user's sequence: the first sample's history, then each sample's target in split/row order.
    seqs: dict[str, list[str]] = {}
    order: dict[str, list[int]] = {}
    for k, (_, u, hist, t) in enumerate(samples):
        if u not in seqs:
            seqs[u] = list(hist)
            order[u] = [k] * len(hist)
        seqs[u].append(t)
        order[u].append(k)
    users, its, ts = [], [], []
    for u, seq in seqs.items():
        users += [u] * len(seq)
        its += seq
        ts += order[u]
    inter = pd.DataFrame({"user": users, "item": its, "timestamp": np.asarray(ts, dtype=np.int64)})

    index_dir = root / "index"
    item_path = Path(items) if items else index_dir / f"{category}.item.json"
    meta = None
    if item_path.is_file():
        meta = _items_from_item_json(item_path)
        sources.append(item_path)
    elif items:
        raise LlmrecError(f"{item_path}: file not found (expected MiniOneRec item metadata)")
    sid_index = index_dir / f"{category}.index.json"
    extra = {"category": category, "minionerec_samples": samples}
    if sid_index.is_file():
        extra["sid_index"] = str(sid_index)
    return RawData(inter, meta, sources, has_timestamps=False, extra=extra)
