"""Evaluation splits. Both protocols write ``DATASET/splits/<protocol>/``:

``train.parquet``            user, item, timestamp: the interactions a model may train on
``valid.parquet``/``test.parquet``  one row per example: user, history (list), history_ts (list), target, target_ts
``split.json``               protocol, options, sizes, cut times

Leave-one-out (``loo``): per user with n >= 3 interactions, the validation target is the second-to-last item
(history: everything before it), the test target is the last item (history: everything before it, the
validation target included), and training gets the first n - 2 items. Users with n = 2 get only a test example
(training gets the first item); users with n = 1 only train.

Global temporal (``temporal``): all interactions are ordered by (timestamp, user, position in the user's
sequence); the last ``test_frac`` of them form the test period and the last ``valid_frac`` of the rest the
validation period. In each period, a user's *last* interaction there is that user's target and the history is
every interaction of the user before it (whatever its period). Training gets the interactions before the
validation period only. Users whose target has no history are skipped (counted in split.json).

Either way no validation or test target ever appears in ``train.parquet``.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmrec.artifacts import atomic_dir, make_manifest, read_json, sha256_file, write_json
from llmrec.data_builders.dataset import INTERACTIONS, Dataset, load_dataset
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)
PROTOCOLS = ("loo", "temporal")


@dataclass
class Split:
    """A loaded split. ``valid``/``test`` rows are examples (history -> target)."""

    path: Path
    protocol: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    def examples(self, which: str) -> pd.DataFrame:
        if which not in ("valid", "test"):
            raise LlmrecError(f"unknown split part {which!r}; expected 'valid' or 'test'")
        return getattr(self, which)

    def train_sequences(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """(users, item sequences) of the training interactions, chronological."""
        return _group(self.train)

    def train_time_sequences(self) -> list[np.ndarray]:
        users = self.train["user"].to_numpy()
        return np.split(self.train["timestamp"].to_numpy(), np.flatnonzero(np.diff(users)) + 1)


def _group(inter: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    users = inter["user"].to_numpy()
    if len(users) == 0:
        return users, []
    bounds = np.flatnonzero(np.diff(users)) + 1
    return users[np.r_[0, bounds]], np.split(inter["item"].to_numpy(), bounds)


def _examples(users, items, times, starts, target_pos) -> pd.DataFrame:
    """Examples whose target is at global row ``target_pos`` and history is rows ``starts[k]..target_pos-1``."""
    hist = [items[s:t] for s, t in zip(starts, target_pos)]
    hts = [times[s:t] for s, t in zip(starts, target_pos)]
    table = pa.table({
        "user": pa.array(users[target_pos], pa.int32()),
        "history": pa.array(hist, pa.list_(pa.int32())),
        "history_ts": pa.array(hts, pa.list_(pa.int64())),
        "target": pa.array(items[target_pos], pa.int32()),
        "target_ts": pa.array(times[target_pos], pa.int64()),
    })
    return table


def _loo(inter: pd.DataFrame):
    users = inter["user"].to_numpy()
    items = inter["item"].to_numpy()
    times = inter["timestamp"].to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    ends = np.r_[starts[1:], len(users)]
    n = ends - starts
    has_valid = n >= 3
    has_test = n >= 2
    test_pos = ends[has_test] - 1
    valid_pos = ends[has_valid] - 2
    valid = _examples(users, items, times, starts[has_valid], valid_pos)
    test = _examples(users, items, times, starts[has_test], test_pos)
    drop = np.zeros(len(users), dtype=bool)
    drop[test_pos] = True
    drop[valid_pos] = True
    train = inter.loc[~drop, ["user", "item", "timestamp"]].reset_index(drop=True)
    info = {"users_with_valid": int(has_valid.sum()), "users_with_test": int(has_test.sum()),
            "users_train_only": int((~has_test).sum())}
    return train, valid, test, info


def _date(ts: int) -> str:
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _temporal(inter: pd.DataFrame, test_frac: float, valid_frac: float, has_timestamps: bool):
    if not has_timestamps:
        raise LlmrecError("the temporal protocol needs real timestamps, but this dataset has none (its source "
                          "gives only an order); use --protocol loo")
    if not (0 < test_frac < 1 and 0 < valid_frac < 1):
        raise LlmrecError(f"--test-frac and --valid-frac must be in (0, 1), got {test_frac}, {valid_frac}")
    users = inter["user"].to_numpy()
    items = inter["item"].to_numpy()
    times = inter["timestamp"].to_numpy()
    N = len(users)
    starts_u = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    pos = np.arange(N) - np.repeat(starts_u, np.diff(np.r_[starts_u, N]))
    order = np.lexsort((pos, users, times))  # global time order, deterministic ties
    n_test = int(round(N * test_frac))
    n_valid = int(round((N - n_test) * valid_frac))
    period = np.zeros(N, dtype=np.int8)  # 0 train, 1 valid, 2 test
    period[order[N - n_test:]] = 2
    period[order[N - n_test - n_valid: N - n_test]] = 1
    if not (n_test and n_valid):
        raise LlmrecError(f"temporal split: {N} interactions are too few for test/valid fractions "
                          f"{test_frac}/{valid_frac}")
    # Within a user, periods are non-decreasing along the sequence (time order is preserved per user).
    user_start = np.repeat(starts_u, np.diff(np.r_[starts_u, N]))
    parts, info = {}, {}
    for name, code in (("valid", 1), ("test", 2)):
        in_p = period == code
        # last interaction of each user within the period: next row is another user or another period
        nxt_same = np.r_[(users[1:] == users[:-1]) & (period[1:] == code), False]
        target = np.flatnonzero(in_p & ~nxt_same)
        has_hist = target > user_start[target]
        info[f"{name}_users_without_history"] = int((~has_hist).sum())
        target = target[has_hist]
        parts[name] = _examples(users, items, times, user_start[target], target)
    cut_valid = times[order[N - n_test - n_valid]]
    cut_test = times[order[N - n_test]]
    train = inter.loc[period == 0, ["user", "item", "timestamp"]].reset_index(drop=True)
    info.update({
        "valid_period_start": _date(cut_valid), "test_period_start": _date(cut_test),
        "valid_period_start_ts": int(cut_valid), "test_period_start_ts": int(cut_test),
        "interactions_train_period": int((period == 0).sum()),
        "interactions_valid_period": int(n_valid), "interactions_test_period": int(n_test),
        "test_frac": test_frac, "valid_frac": valid_frac,
    })
    return train, parts["valid"], parts["test"], info


def split_dataset(dataset: str | Path | Dataset, protocol: str, test_frac: float = 0.1, valid_frac: float = 0.1,
                  overwrite: bool = True) -> Path:
    """Write ``DATASET/splits/<protocol>/`` and return its path."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    if protocol not in PROTOCOLS:
        raise LlmrecError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    inter = ds.interactions
    if protocol == "loo":
        train, valid, test, info = _loo(inter)
        config = {}
    else:
        train, valid, test, info = _temporal(inter, test_frac, valid_frac, ds.has_timestamps)
        config = {"test_frac": test_frac, "valid_frac": valid_frac}
    out = ds.path / "splits" / protocol
    with atomic_dir(out, overwrite=overwrite) as tmp:
        train.to_parquet(tmp / "train.parquet", index=False)
        pq.write_table(valid, tmp / "valid.parquet")
        pq.write_table(test, tmp / "test.parquet")
        meta = make_manifest("split", config={"protocol": protocol, **config},
                             inputs={str(ds.path / INTERACTIONS): sha256_file(ds.path / INTERACTIONS)},
                             protocol=protocol, n_items=ds.n_items, n_users=ds.n_users,
                             n_train_interactions=int(len(train)), n_valid=valid.num_rows, n_test=test.num_rows,
                             **info)
        write_json(tmp / "split.json", meta)
    return out


def load_split(dataset: str | Path, protocol: str) -> Split:
    path = Path(dataset) / "splits" / protocol
    if not (path / "split.json").is_file():
        raise LlmrecError(f"{path}: split not found; run `llmrec data split {dataset} --protocol {protocol}`")
    meta = read_json(path / "split.json")
    return Split(path=path, protocol=protocol, train=pd.read_parquet(path / "train.parquet"),
                 valid=pd.read_parquet(path / "valid.parquet"), test=pd.read_parquet(path / "test.parquet"),
                 meta=meta)


def describe_split(meta: dict) -> str:
    lines = [f"protocol: {meta['protocol']}",
             f"train interactions: {meta['n_train_interactions']:,}",
             f"valid examples: {meta['n_valid']:,}", f"test examples: {meta['n_test']:,}"]
    if meta["protocol"] == "temporal":
        lines += [f"validation period starts: {meta['valid_period_start']} UTC "
                  f"({meta['interactions_valid_period']:,} interactions)",
                  f"test period starts: {meta['test_period_start']} UTC "
                  f"({meta['interactions_test_period']:,} interactions)",
                  f"targets skipped for lack of history: valid {meta['valid_users_without_history']}, "
                  f"test {meta['test_users_without_history']}"]
    return "\n".join(lines)
