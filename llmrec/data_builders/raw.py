"""Helpers every reader shares: opening (gzip) files, JSON-lines parsing with line numbers, timestamp checks."""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from llmrec.errors import LlmrecError, where


@dataclass
class RawData:
    """What a reader returns: raw frames keyed by original ids, plus the files they came from."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    sources: list[Path]
    has_timestamps: bool = True
    extra: dict = field(default_factory=dict)


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise LlmrecError(f"{path}: file not found (expected {what})")
    return path


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_json_lines(path: Path, literal: bool = False, keep: Callable[[str], bool] | None = None
                    ) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``. ``literal=True`` parses Python-literal dicts (Amazon 2014 metadata)
    with :func:`ast.literal_eval` (never ``eval``). ``keep`` can skip lines cheaply before parsing."""
    with open_text(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or (keep is not None and not keep(line)):
                continue
            try:
                rec = ast.literal_eval(line) if literal else json.loads(line)
            except (ValueError, SyntaxError, json.JSONDecodeError) as e:
                kind = "a Python-literal dict" if literal else "a JSON object"
                raise LlmrecError(f"{where(path, n)}: malformed line, expected {kind} ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:80]})") from None
            if not isinstance(rec, dict):
                raise LlmrecError(f"{where(path, n)}: expected an object/dict, got {type(rec).__name__}")
            yield n, rec


def records_to_frame(path: Path, recs: list[tuple[int, dict]], fields: dict[str, tuple[str, ...]],
                     required: tuple[str, ...]) -> pd.DataFrame:
    """Pick ``fields`` ({out_name: (candidate keys...)}) from records, failing on the first missing required one."""
    cols: dict[str, list] = {k: [] for k in fields}
    lines = []
    for n, rec in recs:
        lines.append(n)
        for out, keys in fields.items():
            val = next((rec[k] for k in keys if k in rec), None)
            if val is None and out in required:
                raise LlmrecError(f"{where(path, n, keys[0])}: missing required field (keys present: "
                                  f"{sorted(rec)[:12]})")
            cols[out].append(val)
    df = pd.DataFrame(cols)
    df["_line"] = lines
    return df


def to_timestamps(values: pd.Series, path: Path, field: str, lines: np.ndarray | None = None,
                  unit: str = "s") -> np.ndarray:
    """Integer unix seconds from numbers or ISO dates; the first bad value is reported with its line."""
    num = pd.to_numeric(values, errors="coerce")
    if num.notna().all():
        arr = num.to_numpy(np.float64)
        if unit == "ms":
            arr = arr / 1000.0
        return np.floor(arr).astype(np.int64)
    if num.notna().any():  # mixed: some numbers, some not -> the non-numbers are errors
        bad = int(np.flatnonzero(num.isna().to_numpy())[0])
        _bad_ts(values, path, field, lines, bad)
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    if parsed.isna().any():
        bad = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        _bad_ts(values, path, field, lines, bad)
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)  # resolution-independent


def _bad_ts(values, path, field, lines, i):
    line = int(lines[i]) if lines is not None else i + 2
    raise LlmrecError(f"{where(path, line, field)}: expected a numeric unix timestamp or an ISO-8601 date, "
                      f"got {values.iloc[i]!r}")


def flatten_text(v) -> str:
    """Lists (possibly nested, e.g. Amazon categories) become ' > '/' ' joined strings."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, (list, tuple)) for x in v):  # [[cat, sub], [cat2]]
            return "; ".join(" > ".join(map(str, x)) for x in v if x)
        return " ".join(flatten_text(x) for x in v if x not in (None, "")).strip()
    if isinstance(v, dict):
        return "; ".join(f"{k}: {flatten_text(x)}" for k, x in v.items())
    return str(v).strip()
