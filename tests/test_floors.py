"""Floors: most-popular and item-kNN, through the same protocol as every model."""

from __future__ import annotations

import json

import numpy as np

from llmrec.data_builders import load_split
from llmrec.models.baselines import train_baseline
from llmrec.models.floors import itemknn_scorer, popularity_scorer


def test_popularity_scores_are_training_counts(synthetic_dataset):
    s = load_split(synthetic_dataset, "loo")
    score = popularity_scorer(s.train, s.n_items)(s.test.iloc[:3])
    counts = np.bincount(s.train["item"], minlength=s.n_items + 1)
    assert (score[0] == counts).all()


def test_itemknn_uses_history_and_beats_popularity(synthetic_dataset, tmp_path):
    s = load_split(synthetic_dataset, "loo")
    knn = itemknn_scorer(s.train, s.n_items)
    scores = knn(s.test.iloc[:5])
    # different histories give different rankings
    assert not np.allclose(scores[0], scores[1])
    pop = train_baseline("pop", synthetic_dataset, "loo", out=tmp_path / "pop")
    knn_run = train_baseline("itemknn", synthetic_dataset, "loo", out=tmp_path / "knn")
    # the synthetic shop is sequential: co-occurrence must clearly beat popularity
    assert knn_run["test"]["ndcg@10"] > 2 * pop["test"]["ndcg@10"]
    m = json.loads((tmp_path / "knn" / "metrics.json").read_text())
    assert m["ndcg@10"] == knn_run["test"]["ndcg@10"]
    run = json.loads((tmp_path / "knn" / "run.json").read_text())
    assert run["config"]["model"] == "itemknn" and "versions" in run


def test_baseline_cli(synthetic_dataset, tmp_path, capsys):
    from llmrec.cli import main
    assert main(["baseline", "train", "--model", "pop", "--data", str(synthetic_dataset), "--split", "temporal",
                 "--out", str(tmp_path / "p"), "--ks", "5,10"]) == 0
    out = capsys.readouterr().out
    assert "pop / temporal / test" in out
    assert (tmp_path / "p" / "per_user_test.parquet").is_file()
