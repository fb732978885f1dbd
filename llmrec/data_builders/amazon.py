"""Amazon review dumps (McAuley lab): 2014, 2018 and 2023 releases.

2014: ``reviews_<Cat>_5.json.gz`` (JSON lines) + ``meta_<Cat>.json.gz`` whose lines are *Python-literal* dicts
(parsed with ``ast.literal_eval``, never ``eval``). 2018: ``<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``, both JSON
lines. 2023: ``<Cat>.jsonl[.gz]`` + ``meta_<Cat>.jsonl[.gz]``; items are keyed by ``parent_asin`` and timestamps
are in milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from llmrec.data_builders.raw import (RawData, flatten_text, iter_json_lines, records_to_frame, require_file,
                                      to_timestamps)
from llmrec.errors import LlmrecError

_RELEASES = {
    # release: (review globs, meta globs, review fields, item key in meta, literal meta, ts unit)
    "amazon2014": (("reviews_*.json.gz", "reviews_*.json"), ("meta_*.json.gz", "meta_*.json"),
                   {"user": ("reviewerID",), "item": ("asin",), "timestamp": ("unixReviewTime",),
                    "rating": ("overall",)}, "asin", True, "s"),
    "amazon2018": (("*_5.json.gz", "*_5.json", "*.json.gz", "*.json"), ("meta_*.json.gz", "meta_*.json"),
                   {"user": ("reviewerID",), "item": ("asin",), "timestamp": ("unixReviewTime",),
                    "rating": ("overall",)}, "asin", False, "s"),
    "amazon2023": (("*.jsonl.gz", "*.jsonl"), ("meta_*.jsonl.gz", "meta_*.jsonl"),
                   {"user": ("user_id",), "item": ("parent_asin", "asin"), "timestamp": ("timestamp",),
                    "rating": ("rating",)}, "parent_asin", False, "ms"),
}

# Metadata fields (output name: candidate keys) composed into item text.
_META_FIELDS = {
    "title": ("title",),
    "brand": ("brand", "store"),
    "categories": ("categories", "category"),
    "description": ("description",),
    "features": ("feature", "features"),
    "main_category": ("main_cat", "main_category"),
}


def _find(folder: Path, globs: tuple[str, ...], exclude_meta: bool) -> Path | None:
    for g in globs:
        hits = sorted(p for p in folder.glob(g) if not (exclude_meta and p.name.startswith("meta_")))
        if hits:
            return hits[0]
    return None


def read_amazon(release: str, path: str | Path, items: str | Path | None = None) -> RawData:
    if release not in _RELEASES:
        raise LlmrecError(f"unknown Amazon release {release!r}; expected one of {sorted(_RELEASES)}")
    rglobs, mglobs, rfields, key, literal, unit = _RELEASES[release]
    path = Path(path)
    if path.is_dir():
        folder = path
        found = _find(folder, rglobs, exclude_meta=True)
        if found is None:
            raise LlmrecError(f"{folder}: no review file found for {release} (looked for {', '.join(rglobs)})")
        path = found
        if items is None:
            items = _find(folder, mglobs, exclude_meta=False)
    path = require_file(path, f"an {release} review file (JSON lines)")

    recs = list(iter_json_lines(path))
    if not recs:
        raise LlmrecError(f"{path}: no reviews found (empty file)")
    inter = records_to_frame(path, recs, rfields, required=("user", "item", "timestamp"))
    inter["timestamp"] = to_timestamps(inter["timestamp"], path, rfields["timestamp"][0],
                                       inter["_line"].to_numpy(), unit=unit)
    inter["rating"] = pd.to_numeric(inter["rating"], errors="coerce")
    inter["item"] = inter["item"].astype(str)
    sources = [path]

    meta = None
    if items is not None:
        mpath = require_file(items, f"an {release} metadata file (meta_*.json{'l' if release == 'amazon2023' else ''}.gz)")
        sources.append(mpath)
        meta = read_amazon_meta(mpath, key, literal, set(inter["item"].unique()))
    return RawData(inter.drop(columns="_line"), meta, sources)


def read_amazon_meta(path: Path, key: str, literal: bool, wanted: set[str] | None = None) -> pd.DataFrame:
    """Item metadata; lines whose id is not in ``wanted`` are skipped before parsing (meta dumps are large)."""
    quote = "'" if literal else '"'
    pat = re.compile(re.escape(f"{quote}{key}{quote}") + r"\s*:\s*[\"']([^\"']+)[\"']")

    def keep(line: str) -> bool:
        if wanted is None:
            return True
        m = pat.search(line)
        return m is None or m.group(1) in wanted  # unparseable id: parse and let the checks speak

    rows, lines = [], []
    for n, rec in iter_json_lines(path, literal=literal, keep=keep):
        if key not in rec:
            raise LlmrecError(f"{path}, line {n}, field {key!r}: missing item id in metadata record")
        row = {"item": str(rec[key])}
        for out, keys in _META_FIELDS.items():
            row[out] = flatten_text(next((rec[k] for k in keys if k in rec), ""))
        rows.append(row)
        lines.append(n)
    df = pd.DataFrame(rows, columns=["item", *_META_FIELDS])
    df["_line"] = lines
    return df
