"""Benchmark: Beauty read -> filter -> split -> Parquet, and scoring 22,363 top-100 lists.

Each llmrec path is timed beside a straightforward per-user Python implementation (the way many research repos
do it) in the same run, and the two results are checked to be identical.

    LLMREC_SHARED_DATA=../shared/data python benchmarks/data_and_eval.py
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data_builders import PreprocessConfig, build_dataset, load_split, split_dataset
from llmrec.eval import evaluate_ranked_lists, evaluate_scores, read_predictions, write_predictions


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    w, c = time.perf_counter(), cpu()
    out = fn()
    return out, time.perf_counter() - w, cpu() - c


def naive_pipeline(inter_csv: Path, out: Path):
    """Per-user Python loops: read, 5-core by repeated counting, consecutive dedup, LOO split, write."""
    df = pd.read_csv(inter_csv)
    seqs = defaultdict(list)
    for u, i, t in zip(df.user_id, df.item_id, df.timestamp):
        if not seqs[u] or seqs[u][-1][0] != i:
            seqs[u].append((i, t))
    while True:
        ic = defaultdict(int)
        for s in seqs.values():
            for i, _ in s:
                ic[i] += 1
        changed = False
        for u in list(seqs):
            s = [x for x in seqs[u] if ic[x[0]] >= 5]
            if len(s) < 5:
                del seqs[u]
                changed = True
            elif len(s) != len(seqs[u]):
                seqs[u] = s
                changed = True
        if not changed:
            break
    train, valid, test = [], [], []
    for u in sorted(seqs):
        s = sorted(seqs[u], key=lambda x: x[1])
        items = [i for i, _ in s]
        train += [(u, i) for i in items[:-2]]
        valid.append((u, items[:-2], items[-2]))
        test.append((u, items[:-1], items[-1]))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train, columns=["user", "item"]).to_parquet(out / "train.parquet")
    pd.DataFrame(valid, columns=["user", "history", "target"]).to_parquet(out / "valid.parquet")
    pd.DataFrame(test, columns=["user", "history", "target"]).to_parquet(out / "test.parquet")
    return len(test), test


def naive_metrics(targets, ranked, ks=(5, 10, 20, 50, 100)):
    """The usual per-user loop."""
    out = {f"{m}@{k}": 0.0 for m in ("hr", "ndcg", "mrr") for k in ks}
    for t, r in zip(targets, ranked):
        seen, lst = set(), []
        for x in r:
            if x not in seen:
                seen.add(x)
                lst.append(x)
        for k in ks:
            top = lst[:k]
            if t in top:
                p = top.index(t)
                out[f"hr@{k}"] += 1
                out[f"ndcg@{k}"] += 1 / math.log2(p + 2)
                out[f"mrr@{k}"] += 1 / (p + 1)
    return {k: v / len(targets) for k, v in out.items()}


def main():
    shared = Path(os.environ.get("LLMREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    beauty = shared / "amazon-beauty-2014"
    tmp = Path(tempfile.mkdtemp(prefix="llmrec-bench-"))
    rows = []
    try:
        cfg = PreprocessConfig(core=5, dedup_consecutive=True)

        def ours():
            out = build_dataset("csv", beauty / "beauty_interactions.csv", tmp / "beauty",
                                items=beauty / "beauty_items.csv", config=cfg)
            split_dataset(out, "loo")
            split_dataset(out, "temporal")
            return load_split(out, "loo")

        split, w, c = timed(ours)
        rows.append(("llmrec: read+5-core+dedup -> dataset + LOO + temporal splits", w, c))
        (n_naive, naive_test), w2, c2 = timed(lambda: naive_pipeline(beauty / "beauty_interactions.csv", tmp / "naive"))
        rows.append(("per-user Python loops: read+5-core+dedup -> LOO split only", w2, c2))
        assert n_naive == len(split.test)
        assert [t for _, _, t in naive_test] == split.test["target"].tolist()

        rng = np.random.default_rng(0)
        n_items = split.n_items
        targets = split.test["target"].to_numpy()
        ranked = [list(rng.choice(n_items, 100, replace=False) + 1) for _ in range(len(targets))]
        for i in range(0, len(ranked), 7):  # put the target somewhere in some lists
            ranked[i][i % 100] = int(targets[i])
        pred = tmp / "pred.jsonl"
        write_predictions(pred, split.test["user"], targets, ranked)

        def ours_eval():
            u, t, r = read_predictions(pred)
            return evaluate_ranked_lists(t, r, n_items=n_items).metrics

        evaluate_ranked_lists(targets[:100], ranked[:100], n_items=n_items)  # warm up lazy imports
        m, w3, c3 = timed(ours_eval)
        rows.append((f"llmrec eval: read JSONL + score {len(targets):,} x top-100", w3, c3))

        def naive_eval():
            recs = [json.loads(line) for line in open(pred)]
            return naive_metrics([r["target"] for r in recs], [r["ranked"] for r in recs])

        m2, w4, c4 = timed(naive_eval)
        rows.append((f"per-user Python loop: read JSONL + score {len(targets):,} x top-100", w4, c4))
        for k in m2:
            assert abs(m[k] - m2[k]) < 1e-12, k

        # Full ranking of the whole catalog from a score matrix (what every score-based model needs).
        emb = rng.normal(size=(n_items + 1, 32)).astype(np.float32)
        users = rng.normal(size=(len(targets), 32)).astype(np.float32)
        ex = split.test.assign(_row=np.arange(len(targets)))

        def score(batch):
            return users[batch["_row"].to_numpy()] @ emb.T

        def ours_full():
            return evaluate_scores(score, ex, n_items, ks=(10,), batch_size=512, progress=False).metrics

        mf, w5, c5 = timed(ours_full)
        rows.append((f"llmrec full ranking: {len(targets):,} users x {n_items:,} items", w5, c5))

        def naive_full():  # argsort every user's scores, look up the target's position
            hr = ndcg = 0.0
            for s in range(0, len(targets), 512):
                sc = score(ex.iloc[s:s + 512])
                sc[:, 0] = -np.inf
                for row, t in zip(sc, targets[s:s + 512]):
                    rank = int(np.where(np.argsort(-row, kind="stable") == t)[0][0])
                    if rank < 10:
                        hr += 1
                        ndcg += 1 / math.log2(rank + 2)
            return {"hr@10": hr / len(targets), "ndcg@10": ndcg / len(targets)}

        mn, w6, c6 = timed(naive_full)
        rows.append((f"per-user argsort loop: {len(targets):,} users x {n_items:,} items", w6, c6))
        assert abs(mf["hr@10"] - mn["hr@10"]) < 1e-9 and abs(mf["ndcg@10"] - mn["ndcg@10"]) < 1e-9
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'step':78} {'wall s':>8} {'CPU s':>8}")
    for name, w, c in rows:
        print(f"{name:78} {w:8.2f} {c:8.2f}")
    print(f"load average: {os.getloadavg()[0]:.2f}; results identical between llmrec and the loops: yes")


if __name__ == "__main__":
    main()
