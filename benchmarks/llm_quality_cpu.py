"""Quality of a trained SID language model on a split's test users, beside the floors and published anchors.

Evaluates MODEL (e.g. the `final/` folder of `recipes/beauty/tiny-qwen3_full_cpu.yaml`) with trie-constrained
beam search on every test example (or --limit of them), sharded over --procs `llmrec recommend` processes
(resumable: rerun the same command after an interruption), then fits the item-kNN and most-popular floors on
the same split in the same run and prints one table:

    python benchmarks/llm_quality_cpu.py --data data/beauty --split loo --model runs/beauty/tiny-qwen3_full/final \
        --out runs/beauty/tiny-qwen3_full/test-eval --procs 2 --beams 20

Reports wall time and CPU seconds (user + sys of the worker processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ANCHORS = {  # Amazon Beauty 2014, LOO, full ranking (shared/notes/anchors.md)
    "TIGER (paper)": {"recall@5": .0454, "ndcg@5": .0321, "recall@10": .0648, "ndcg@10": .0384},
    "SASRec (TIGER paper)": {"recall@5": .0387, "ndcg@5": .0249, "recall@10": .0605, "ndcg@10": .0318},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="loo")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test examples")
    p.add_argument("--no-floors", action="store_true")
    a = p.parse_args(argv)

    from llmrec.data_builders import load_split
    from llmrec.eval.protocol import evaluate_ranked_lists

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_split(a.data, a.split)
    test = split.test if a.limit is None else split.test.iloc[: a.limit]
    rows = [{"user": int(u), "history": list(map(int, h)), "target": int(t)}
            for u, h, t in zip(test["user"], test["history"], test["target"])]
    shards = [rows[i:: a.procs] for i in range(a.procs)]
    t0 = time.time()
    procs = []
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for i, sh in enumerate(shards):
        inp = out / f"shard{i}.jsonl"
        if not inp.exists():
            inp.write_text("".join(json.dumps(r) + "\n" for r in sh))
        pred = out / f"pred{i}.jsonl"
        if pred.exists():
            continue
        cmd = [sys.executable, "-m", "llmrec", "recommend", "--model", a.model, "--input", str(inp),
               "--output", str(pred), "--k", str(a.k), "--num-beams", str(a.beams), "--batch-size",
               str(a.batch_size), "--device", "cpu"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=open(out / f"log{i}.txt", "a"), stderr=subprocess.STDOUT))
    for pr in procs:
        if pr.wait() != 0:
            raise SystemExit(f"a recommend worker failed; see {out}/log*.txt")
    wall = time.time() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = {}
    for i in range(a.procs):
        for line in open(out / f"pred{i}.jsonl", encoding="utf-8"):
            r = json.loads(line)
            got[(r["user"], r["target"])] = r["ranked"]
    targets = [r["target"] for r in rows]
    ranked = [got[(r["user"], r["target"])] for r in rows]
    res = evaluate_ranked_lists(targets, ranked, ks=(5, 10), n_items=split.n_items)
    lm = dict(res.metrics)
    lm.update(wall_s=round(wall, 1), cpu_s=round(ru.ru_utime + ru.ru_stime, 1))
    table = {f"SID LM ({Path(a.model).parent.name})": lm}
    if not a.no_floors:
        from llmrec.models.baselines import train_baseline
        for m in ("itemknn", "pop"):
            s = train_baseline(m, a.data, a.split, out=out / "floors" / m, overwrite=True)
            table[f"{m} (llmrec floor)"] = s["test"]
    table.update(ANCHORS)
    (out / "metrics.json").write_text(json.dumps(table, indent=2))
    print(f"\n{len(rows):,} test users, {a.beams} beams, {a.procs} processes: {wall:.0f} s wall, "
          f"{lm['cpu_s']:.0f} s CPU; invalid rate {lm.get('invalid_rate', 0):.4f}")
    print(f"| model | R@5 | N@5 | R@10 | N@10 |\n|---|---|---|---|---|")
    for name, m in table.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"))
              + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
