"""MovieLens (GroupLens) in every published layout, variant detected from the files present.

100K: ``u.data`` (tab-separated user, item, rating, time) + ``u.item`` (``|``-separated, Latin-1, 19 genre flags)
1M / 10M: ``ratings.dat`` + ``movies.dat`` (``::``-separated; 1M has ``users.dat``, 10M has ``tags.dat``)
20M / 25M / 32M / latest: ``ratings.csv`` + ``movies.csv`` (with headers)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data_builders.raw import RawData, require_file, to_timestamps
from llmrec.errors import LlmrecError, where

_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                "War", "Western"]


def detect_variant(folder: Path) -> str:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if "u.data" in names:
        return "100k"
    if "ratings.dat" in names:
        return "10m" if "tags.dat" in names and "users.dat" not in names else "1m"
    if "ratings.csv" in names:
        low = folder.name.lower()
        for v in ("20m", "25m", "32m", "latest-small", "latest"):
            if v in low:
                return v
        return "csv"
    raise LlmrecError(f"{folder}: not a MovieLens folder (expected u.data, ratings.dat or ratings.csv; found "
                      f"{sorted(names)[:10]})")


def _read_sep(path: Path, sep: str, names: list[str], encoding: str) -> pd.DataFrame:
    text = path.read_bytes().decode(encoding)
    if sep == "::":
        text = text.replace("::", "\t")
        sep = "\t"
    df = pd.read_csv(io.StringIO(text), sep=sep, header=None, names=names, dtype=str, keep_default_na=False,
                     quoting=3, engine="c", on_bad_lines="error")
    return df


def _check_rows(df: pd.DataFrame, path: Path, line_offset: int = 1) -> None:
    empty = (df == "").to_numpy()
    if empty.any():
        r, c = np.argwhere(empty)[0]
        raise LlmrecError(f"{where(path, int(r) + line_offset, df.columns[c])}: missing value "
                          f"(expected {len(df.columns)} fields per line)")


def read_movielens(path: str | Path) -> RawData:
    folder = Path(path)
    if not folder.exists():
        raise LlmrecError(f"{folder}: folder not found (expected a MovieLens folder such as ml-1m/)")
    variant = detect_variant(folder)
    try:
        if variant == "100k":
            rpath = require_file(folder / "u.data", "MovieLens 100K ratings (u.data)")
            ratings = _read_sep(rpath, "\t", ["user", "item", "rating", "timestamp"], "latin-1")
            _check_rows(ratings, rpath)
            ipath = require_file(folder / "u.item", "MovieLens 100K items (u.item)")
            raw = _read_sep(ipath, "|", ["item", "title", "release", "video", "url", *_GENRES_100K], "latin-1")
            flags = raw[_GENRES_100K].to_numpy() == "1"
            genres = [", ".join(g for g, f in zip(_GENRES_100K, row) if f) for row in flags]
            items = pd.DataFrame({"item": raw["item"], "title": raw["title"], "genres": genres})
        elif variant in ("1m", "10m"):
            rpath = require_file(folder / "ratings.dat", "MovieLens ratings.dat")
            ratings = _read_sep(rpath, "::", ["user", "item", "rating", "timestamp"], "latin-1")
            _check_rows(ratings, rpath)
            ipath = require_file(folder / "movies.dat", "MovieLens movies.dat")
            raw = _read_sep(ipath, "::", ["item", "title", "genres"], "latin-1")
            items = pd.DataFrame({"item": raw["item"], "title": raw["title"],
                                  "genres": raw["genres"].str.replace("|", ", ", regex=False)})
        else:
            rpath = require_file(folder / "ratings.csv", "MovieLens ratings.csv")
            ratings = pd.read_csv(rpath, dtype=str, keep_default_na=False)
            missing = {"userId", "movieId", "rating", "timestamp"} - set(ratings.columns)
            if missing:
                raise LlmrecError(f"{rpath}: missing column(s) {sorted(missing)} (header: {list(ratings.columns)})")
            ratings = ratings.rename(columns={"userId": "user", "movieId": "item"})[
                ["user", "item", "rating", "timestamp"]]
            _check_rows(ratings, rpath, line_offset=2)
            ipath = require_file(folder / "movies.csv", "MovieLens movies.csv")
            raw = pd.read_csv(ipath, dtype=str, keep_default_na=False)
            items = pd.DataFrame({"item": raw["movieId"], "title": raw["title"],
                                  "genres": raw["genres"].str.replace("|", ", ", regex=False)})
    except pd.errors.ParserError as e:
        raise LlmrecError(f"{folder}: malformed MovieLens file ({e})") from None
    offset = 2 if variant not in ("100k", "1m", "10m") else 1
    ratings["timestamp"] = to_timestamps(ratings["timestamp"], rpath, "timestamp",
                                         np.arange(len(ratings)) + offset)
    rating = pd.to_numeric(ratings["rating"], errors="coerce")
    if rating.isna().any():
        i = int(np.flatnonzero(rating.isna().to_numpy())[0])
        raise LlmrecError(f"{where(rpath, i + offset, 'rating')}: expected a number, got {ratings['rating'].iloc[i]!r}")
    ratings["rating"] = rating.astype(np.float32)
    items = items.copy()
    items["_line"] = np.arange(len(items)) + (2 if variant not in ("100k", "1m", "10m") else 1)
    return RawData(ratings, items, [rpath, ipath], extra={"variant": variant, "text_fields": ("title", "genres")})
