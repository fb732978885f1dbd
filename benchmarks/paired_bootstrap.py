"""Paired comparison of two prediction files on the same users, with bootstrap confidence intervals.

    python benchmarks/paired_bootstrap.py A.jsonl[,A2.jsonl] B.jsonl[,B2.jsonl] [--ks 5,10] [--resamples 2000]

Each file is what ``llmrec recommend`` writes (``user``, ``target``, ``ranked``); comma-separated files are
concatenated (e.g. the validation and the test predictions of one model). For recall@K, NDCG@K and MRR@K it prints
the mean of A, of B, of B - A per user, and a 95% percentile bootstrap interval of the mean difference: an interval
that excludes 0 says B differs from A beyond what resampling the users explains.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def _load(spec: str) -> dict:
    out = {}
    for n, path in enumerate(spec.split(",")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out[(n, r["user"])] = (r["target"], list(r["ranked"]))
    return out


def per_user(pred: dict, keys: list, k: int) -> dict[str, np.ndarray]:
    rec, ndcg, mrr = [], [], []
    for key in keys:
        t, r = pred[key]
        r = r[:k]
        pos = r.index(t) if t in r else -1
        rec.append(float(pos >= 0))
        ndcg.append(1.0 / np.log2(pos + 2) if pos >= 0 else 0.0)
        mrr.append(1.0 / (pos + 1) if pos >= 0 else 0.0)
    return {f"recall@{k}": np.array(rec), f"ndcg@{k}": np.array(ndcg), f"mrr@{k}": np.array(mrr)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ks", default="5,10")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    A, B = _load(args.a), _load(args.b)
    keys = sorted(set(A) & set(B))
    if not keys:
        raise SystemExit("no common users")
    if any(A[k][0] != B[k][0] for k in keys):
        raise SystemExit("targets differ between the files: not the same examples")
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(keys), size=(args.resamples, len(keys)))
    print(f"{len(keys)} users; A = {args.a}; B = {args.b}")
    print("| metric | A | B | B - A | 95% CI |")
    print("|---|---|---|---|---|")
    for k in (int(x) for x in args.ks.split(",")):
        ma, mb = per_user(A, keys, k), per_user(B, keys, k)
        for name in ma:
            d = mb[name] - ma[name]
            lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
            print(f"| {name} | {ma[name].mean():.4f} | {mb[name].mean():.4f} | {d.mean():+.4f} | "
                  f"[{lo:+.4f}, {hi:+.4f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
