"""Split definitions on hand-made data, and their invariants on real and synthetic data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec.data_builders import build_dataset, load_split, split_dataset


@pytest.fixture
def tiny(tmp_path):
    # user 1: 5 items over days 1..5; user 2: 2 items; user 3: 1 item; user 4: 3 items late
    rows = [(1, "a", 1), (1, "b", 2), (1, "c", 3), (1, "d", 4), (1, "e", 5),
            (2, "a", 2), (2, "c", 6),
            (3, "b", 3),
            (4, "d", 7), (4, "e", 8), (4, "a", 9)]
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    df["timestamp"] *= 86400
    df.to_csv(tmp_path / "i.csv", index=False)
    return build_dataset("csv", tmp_path / "i.csv", tmp_path / "ds")


def test_leave_one_out(tiny):
    split_dataset(tiny, "loo")
    s = load_split(tiny, "loo")
    a, b, c, d, e = 1, 2, 3, 4, 5
    assert s.test.set_index("user")["target"].to_dict() == {1: e, 2: c, 4: a}
    assert s.valid.set_index("user")["target"].to_dict() == {1: d, 4: e}
    assert list(s.test.set_index("user").loc[1, "history"]) == [a, b, c, d]
    assert list(s.valid.set_index("user").loc[1, "history"]) == [a, b, c]
    tr = s.train.groupby("user")["item"].apply(list).to_dict()
    assert tr == {1: [a, b, c], 2: [a], 3: [b], 4: [d]}


def test_global_temporal(tiny):
    # 11 interactions: test = last round(1.1) = 1 (user 4's 'a' at day 9);
    # valid = last round(10 * 0.1) = 1 of the rest (user 4's 'e' at day 8)
    split_dataset(tiny, "temporal")
    s = load_split(tiny, "temporal")
    assert s.meta["interactions_test_period"] == 1 and s.meta["interactions_valid_period"] == 1
    assert s.test[["user", "target"]].values.tolist() == [[4, 1]]
    assert list(s.test.iloc[0]["history"]) == [4, 5]
    assert s.valid[["user", "target"]].values.tolist() == [[4, 5]]
    assert len(s.train) == 9
    assert s.meta["test_period_start"].startswith("1970-01-10")


def test_bigger_temporal_fractions(tiny):
    split_dataset(tiny, "temporal", test_frac=0.3, valid_frac=0.25)
    s = load_split(tiny, "temporal")
    # test period = last 3 interactions (days 7, 8, 9, all user 4) -> one example, target a
    assert s.test[["user", "target"]].values.tolist() == [[4, 1]]
    assert s.test.iloc[0]["history"].tolist() == [4, 5]
    # valid period = last round(8 * .25) = 2 of the rest: days 5 (user 1 'e') and 6 (user 2 'c')
    assert sorted(s.valid[["user", "target"]].values.tolist()) == [[1, 5], [2, 3]]
    assert s.valid.set_index("user").loc[1, "history"].tolist() == [1, 2, 3, 4]


def _no_target_in_train(s):
    train = set(zip(s.train.user, s.train.item, s.train.timestamp))
    for part in (s.valid, s.test):
        for u, t, ts in zip(part.user, part.target, part.target_ts):
            assert (u, t, ts) not in train


def test_beauty_splits(beauty_dataset, capsys):
    s = load_split(beauty_dataset, "loo")
    assert len(s.test) == 22_363 and len(s.valid) == 22_363
    assert len(s.train) == 198_502 - 2 * 22_363
    _no_target_in_train(s)
    from llmrec.cli import main
    assert main(["data", "split", str(beauty_dataset), "--protocol", "temporal"]) == 0
    out = capsys.readouterr().out
    assert "test period starts: 2014-05-13" in out and "validation period starts:" in out
    t = load_split(beauty_dataset, "temporal")
    assert t.meta["interactions_test_period"] == round(0.1 * 198_502)
    assert (t.test.target_ts >= t.meta["test_period_start_ts"]).all()
    assert (t.train.timestamp <= t.meta["valid_period_start_ts"]).all()
    _no_target_in_train(t)
    # history is everything before the target, in order
    row = t.test.iloc[0]
    seq = s.train  # noqa: F841 (LOO train not needed here)
    assert (np.diff(row.history_ts) >= 0).all() and row.history_ts[-1] <= row.target_ts


def test_synthetic_split_invariants(synthetic_dataset):
    for protocol in ("loo", "temporal"):
        s = load_split(synthetic_dataset, protocol)
        _no_target_in_train(s)
        assert s.test["history"].map(len).min() >= 1
