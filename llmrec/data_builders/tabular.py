"""Generic CSV / TSV / Parquet interactions (+ optional item metadata) with a column mapping.

``--columns user=COL,item=COL,time=COL,rating=COL,title=COL`` maps source columns; unmapped keys default to
common names (user_id/userId/user, item_id/itemId/item, timestamp/time, rating, title). Other item-file
columns are kept as text fields. ``meta_item=COL`` names the id column of the item file when it differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data_builders.raw import RawData, require_file, to_timestamps
from llmrec.errors import LlmrecError

_DEFAULTS = {
    "user": ("user_id", "userId", "user", "reviewerID", "uid"),
    "item": ("item_id", "itemId", "item", "asin", "parent_asin", "movieId", "iid"),
    "time": ("timestamp", "time", "unixReviewTime", "ts", "datetime", "date"),
    "rating": ("rating", "overall", "score"),
    "title": ("title", "name", "item_title"),
}
_KEYS = {"user", "item", "time", "rating", "title", "meta_item"}


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"user=uid,item=iid"`` -> ``{"user": "uid", "item": "iid"}``."""
    out: dict[str, str] = {}
    if not spec:
        return out
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise LlmrecError(f"--columns: expected KEY=COLUMN pairs separated by commas, got {part!r}")
        k, v = (x.strip() for x in part.split("=", 1))
        if k not in _KEYS:
            raise LlmrecError(f"--columns: unknown key {k!r}; expected one of {sorted(_KEYS)}")
        out[k] = v
    return out


def read_table(path: Path) -> pd.DataFrame:
    suffixes = "".join(path.suffixes).lower()
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            return pd.read_parquet(path)
        sep = "\t" if (".tsv" in suffixes or ".inter" in suffixes) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        raise LlmrecError(f"{path}: cannot read as {'Parquet' if 'parquet' in suffixes else 'CSV'} "
                          f"({str(e).splitlines()[0]})") from None


def _pick(df: pd.DataFrame, key: str, mapping: dict, path: Path, required: bool) -> str | None:
    if key in mapping:
        col = mapping[key]
        if col not in df.columns:
            raise LlmrecError(f"{path}: column {col!r} (given as {key}={col}) not found; columns are "
                              f"{list(df.columns)}")
        return col
    for c in _DEFAULTS.get(key, ()):
        if c in df.columns:
            return c
    if required:
        raise LlmrecError(f"{path}: no {key} column found (looked for {list(_DEFAULTS[key])}); columns are "
                          f"{list(df.columns)}; map it with --columns {key}=COL")
    return None


def read_tabular(path: str | Path, items: str | Path | None = None, columns: str | dict | None = None) -> RawData:
    mapping = parse_columns(columns) if isinstance(columns, (str, type(None))) else dict(columns)
    path = require_file(path, "an interactions table (.csv, .tsv or .parquet)")
    df = read_table(path)
    if df.empty:
        raise LlmrecError(f"{path}: no rows")
    ucol = _pick(df, "user", mapping, path, True)
    icol = _pick(df, "item", mapping, path, True)
    tcol = _pick(df, "time", mapping, path, False)
    rcol = _pick(df, "rating", mapping, path, False)
    inter = pd.DataFrame({"user": df[ucol].astype(str), "item": df[icol].astype(str)})
    lines = np.arange(len(df)) + 2
    for name, col in (("user", ucol), ("item", icol)):
        blank = inter[name].str.strip() == ""
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise LlmrecError(f"{path}, line {lines[i]}, field {col!r}: empty {name} id")
    has_ts = tcol is not None
    if has_ts:
        inter["timestamp"] = to_timestamps(df[tcol], path, tcol, lines)
    else:  # no time column: the row order within each user is the chronology
        inter["timestamp"] = inter.groupby("user", sort=False).cumcount().to_numpy(np.int64)
    if rcol is not None:
        r = pd.to_numeric(df[rcol], errors="coerce")
        if r.isna().any():
            i = int(np.flatnonzero(r.isna().to_numpy())[0])
            raise LlmrecError(f"{path}, line {lines[i]}, field {rcol!r}: expected a number, got {df[rcol].iloc[i]!r}")
        inter["rating"] = r.astype(np.float32)
    sources = [path]

    meta = None
    if items is not None:
        ipath = require_file(items, "an item metadata table (.csv, .tsv or .parquet)")
        sources.append(ipath)
        idf = read_table(ipath)
        mid = mapping.get("meta_item") or (mapping.get("item") if mapping.get("item") in idf.columns else None) \
            or _pick(idf, "item", {}, ipath, False)
        if mid is None or mid not in idf.columns:
            raise LlmrecError(f"{ipath}: item id column {mapping.get('meta_item') or icol!r} not found; columns are "
                              f"{list(idf.columns)}; map it with --columns meta_item=COL")
        title = _pick(idf, "title", mapping, ipath, False)
        meta = idf.rename(columns={mid: "item", **({title: "title"} if title else {})}).copy()
        meta = meta.loc[:, ~meta.columns.duplicated()]
        meta["item"] = meta["item"].astype(str)
        meta["_line"] = np.arange(len(meta)) + 2
    return RawData(inter, meta, sources, has_timestamps=has_ts)
