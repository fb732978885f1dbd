"""Metric definitions against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from llmrec.eval import (evaluate_ranked_lists, evaluate_scores, metrics_from_rank_counts, popularity_bins,
                         sid_prefix_accuracy)


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_single_target_positions():
    # target at position 0, 2, absent
    r = evaluate_ranked_lists([7, 7, 7], [[7, 1, 2], [1, 2, 7], [1, 2, 3]], ks=(1, 3))
    m = r.metrics
    assert m["hr@1"] == approx(1 / 3)
    assert m["hr@3"] == approx(2 / 3)
    assert m["recall@3"] == approx(2 / 3)
    assert m["ndcg@3"] == approx((1 + 1 / math.log2(4)) / 3)
    assert m["mrr@3"] == approx((1 + 1 / 3) / 3)
    assert m["mrr@1"] == approx(1 / 3)
    assert r.per_user["rank"].tolist() == [0, 2, -1]


def test_k_larger_than_list_and_empty_lists():
    r = evaluate_ranked_lists([5, 5], [[1, 5], []], ks=(10, 100))
    assert r.metrics["hr@100"] == approx(0.5)
    assert r.metrics["ndcg@10"] == approx(0.5 / math.log2(3))
    assert r.metrics["n_users"] == 2 and r.metrics["invalid_rate"] == 0.0


def test_duplicates_are_dropped_and_items_move_up():
    r = evaluate_ranked_lists([9], [[1, 1, 1, 9]], ks=(2,))
    assert r.metrics["hr@2"] == 1.0  # after dropping the repeats 9 is second
    assert r.metrics["ndcg@2"] == approx(1 / math.log2(3))
    assert r.metrics["duplicate_rate"] == approx(2 / 4)


def test_invalid_ids_keep_their_slot_and_are_counted():
    r = evaluate_ranked_lists([3, 3], [[0, 99, "x", 3], [3, 2]], ks=(3, 4), n_items=10)
    assert r.metrics["n_invalid"] == 3
    assert r.metrics["invalid_rate"] == approx(3 / 6)
    assert r.metrics["hr@3"] == approx(0.5)  # first list: 3 sits at position 3, behind three invalid slots
    assert r.metrics["hr@4"] == approx(1.0)


def test_multi_target_recall_differs_from_hr():
    r = evaluate_ranked_lists([[1, 2]], [[1, 5, 6]], ks=(3,))
    assert r.metrics["hr@3"] == 1.0
    assert r.metrics["recall@3"] == approx(0.5)
    assert r.metrics["ndcg@3"] == approx(1 / (1 + 1 / math.log2(3)))


def test_full_ranking_ties():
    # target tied with 3 other items, 2 items strictly better: positions 2..5 equally likely
    g, e = np.array([2]), np.array([3])
    exp = metrics_from_rank_counts(g, e, ks=(3, 10))
    assert exp["hr@3"][0] == approx(1 / 4)
    assert exp["hr@10"][0] == approx(1.0)
    assert exp["ndcg@10"][0] == approx(np.mean([1 / math.log2(p + 2) for p in range(2, 6)]))
    assert exp["mrr@3"][0] == approx(1 / 3 / 4)
    assert metrics_from_rank_counts(g, e, ks=(3,), ties="optimistic")["hr@3"][0] == 1.0
    assert metrics_from_rank_counts(g, e, ks=(3,), ties="pessimistic")["hr@3"][0] == 0.0


def test_evaluate_scores_matches_ranked_lists():
    rng = np.random.default_rng(0)
    n_items, n = 50, 40
    scores = rng.normal(size=(n, n_items + 1))
    targets = rng.integers(1, n_items + 1, n)
    ex = pd.DataFrame({"user": np.arange(n), "history": [[1, 2]] * n, "target": targets})
    res = evaluate_scores(lambda b: scores[b.index.to_numpy()], ex, n_items, ks=(5, 10), progress=False,
                          batch_size=7, keep_topk=20)
    ranked = [list(np.argsort(-s[1:])[:20] + 1) for s in scores]
    ref = evaluate_ranked_lists(targets, ranked, ks=(5, 10))
    for k in ("hr@5", "ndcg@10", "mrr@10"):
        assert res.metrics[k] == approx(ref.metrics[k])
    assert (res.topk[:, :5] == np.array(ranked)[:, :5]).all()


def test_exclude_history_keeps_target_rankable():
    scores = np.array([[0, 5, 4, 3, 2.0]])
    ex = pd.DataFrame({"user": [1], "history": [[1, 3]], "target": [3]})
    r = evaluate_scores(lambda b: scores, ex, 4, ks=(1, 2), exclude_history=True, progress=False)
    assert r.metrics["hr@1"] == 0.0 and r.metrics["hr@2"] == 1.0  # item 1 removed; 3 still ranked behind 2
    r2 = evaluate_scores(lambda b: scores, ex, 4, ks=(2,), progress=False)
    assert r2.metrics["hr@2"] == 0.0


def test_sid_prefix_accuracy():
    codes = np.array([[-1, -1], [1, 2], [1, 3], [2, 2]])
    acc = sid_prefix_accuracy(np.array([2, 3, 1]), np.array([1, 1, 1]), codes)
    assert acc == {"sid_prefix_acc@1": approx(2 / 3), "sid_prefix_acc@2": approx(1 / 3)}


def test_popularity_bins():
    train_items = np.array([1] * 5 + [2] * 4 + [3] * 3 + [4] * 2 + [5, 6, 7, 8])
    bins = popularity_bins(train_items, 8)
    assert bins[1:].tolist() == [0, 0, 1, 1, 1, 1, 2, 2]


def test_eval_cli_json(tmp_path, capsys):
    from llmrec.cli import main
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"user": "a", "target": 2, "ranked": [2, 3]},
                                                   {"user": "b", "target": 4, "ranked": [1, 3, 5]}]) + "\n")
    assert main(["eval", "--predictions", str(p), "--ks", "1,5", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "HR" in out and "@5" in out
    m = json.loads((tmp_path / "m.json").read_text())
    for key in ("hr@1", "recall@5", "ndcg@5", "mrr@5", "n_users", "invalid_rate"):
        assert key in m
    assert m["hr@1"] == 0.5 and m["n_users"] == 2
