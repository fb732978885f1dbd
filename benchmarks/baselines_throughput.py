"""Training and inference throughput of the sequence baselines, next to the naive way of doing the same work.

Measured in one run, on the same data and threads:

* training: sequences/s over a fixed number of steps, llmrec's batching (length-bucketed batches, N negatives
  shared by the batch) against the reference way (random batches padded to the longest history, N negatives per
  position, as SASRec/HSTU reference code does);
* inference: users/s of full-catalog scoring, histories sorted by length (llmrec) against dataset order.

    python benchmarks/baselines_throughput.py --data DATA/beauty [--steps 30] [--users 4000] [--threads 1]

Prints a Markdown table. Rates are given per wall second and per CPU second (user+sys of this process): on a
shared machine the wall-clock rate measures the load, the CPU rate measures the code.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def bench_train(model, data, steps: int, batch_size: int, bucket: int, seed: int = 0) -> tuple[float, float, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(data.batches(batch_size, bucket=bucket)(1, np.random.default_rng(seed)))
    model.train()
    n = 0
    w0, c0 = time.perf_counter(), _cpu()
    for _ in range(steps):
        batch, k = next(it)
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += k
    w, c = time.perf_counter() - w0, _cpu() - c0
    return n / w, w, c


def bench_infer(model, examples, n_items: int, max_len: int, timed: bool, sort: bool) -> tuple[float, float, float]:
    from llmrec.eval import evaluate_scores
    from llmrec.training.loop import history_batch

    if sort:
        examples = examples.iloc[np.argsort(examples["history"].map(len).to_numpy(), kind="stable")]
    model.eval()
    w0, c0 = time.perf_counter(), _cpu()
    evaluate_scores(lambda b: model.score(history_batch(b, max_len, timed)), examples, n_items, progress=False)
    w, c = time.perf_counter() - w0, _cpu() - c0
    return len(examples) / w, w, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder with splits/loo")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--users", type=int, default=4000, help="validation examples scored for inference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sids", help="SID folder or *.index.json for hstu-sid (skipped when absent)")
    ap.add_argument("--sid-offset", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from llmrec.data_builders import load_split
    from llmrec.models.gpt2 import GPT2Rec, GPT2RecConfig
    from llmrec.models.hstu import HSTU, HSTUConfig
    from llmrec.models.sasrec import SASRec, SASRecConfig
    from llmrec.training.loop import NextItemData

    sp = load_split(args.data, "loo")
    _, seqs = sp.train_sequences()
    data = NextItemData(seqs, sp.train_time_sequences(), 50)
    ex = sp.valid.iloc[np.random.default_rng(0).choice(len(sp.valid), min(args.users, len(sp.valid)), replace=False)]
    n = sp.n_items
    rows = []

    def row(name, way, train, infer=None):
        rows.append((name, way, *train, *(infer or (None, None, None))))
        print(rows[-1], flush=True)

    torch.manual_seed(0)
    row("SASRec, sampled softmax 256", "reference: random batches, 256 negatives per position",
        bench_train(SASRec(n, SASRecConfig(n_layers=1, ffn_mult=4, negatives="position")), data, args.steps, 128, 0))
    m = SASRec(n, SASRecConfig(n_layers=1, ffn_mult=4, negatives="batch"))
    row("SASRec, sampled softmax 256", "llmrec: length buckets, 256 shared negatives",
        bench_train(m, data, args.steps, 128, 50), bench_infer(m, ex, n, 50, False, True))
    rows.append(("SASRec (inference, dataset order)", "reference: unsorted histories", None, None, None,
                 *bench_infer(m, ex, n, 50, False, False)))
    print(rows[-1], flush=True)
    hc = dict(d_model=64, dqk=64, dv=64, dropout=0.3)
    row("HSTU", "reference: random batches, 128 negatives per position",
        bench_train(HSTU(n, HSTUConfig(**hc, n_negatives=128, negatives="position")), data, args.steps, 128, 0))
    m = HSTU(n, HSTUConfig(**hc, n_negatives=512, negatives="batch"))
    row("HSTU", "llmrec: length buckets, 512 shared negatives", bench_train(m, data, args.steps, 128, 50),
        bench_infer(m, ex, n, 50, True, True))
    if args.sids:
        from llmrec.models.hstu_sid import SIDEmbedding, load_sids
        codes, sizes = load_sids(args.sids, n, args.sid_offset)
        m = HSTU(n, HSTUConfig(**hc, n_negatives=512, negatives="batch"),
                 SIDEmbedding(codes, sizes, 64, "prefixN-indEmb", "MLP", levels=3))
        row("HSTU-SID prefixN-indEmb + MLP", "llmrec: length buckets, 512 shared negatives",
            bench_train(m, data, args.steps, 128, 50), bench_infer(m, ex, n, 50, True, True))
    g = GPT2Rec(n, GPT2RecConfig(dropout=0.3))
    row("GPT-2 (full softmax)", "random batches", bench_train(g, data, args.steps, 128, 0))
    row("GPT-2 (full softmax)", "llmrec: length buckets", bench_train(g, data, args.steps, 128, 50),
        bench_infer(g, ex, n, 50, False, True))

    print(f"\nthreads={args.threads}, steps={args.steps}, batch 128, {len(ex)} users scored over {n} items\n")
    print("| model | batching / negatives | train seq/s (wall) | train seq per CPU-s | train wall s / CPU s | "
          "infer users/s (wall) | infer users per CPU-s | infer wall s / CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda x, p=1: "" if x is None else f"{x:,.{p}f}"  # noqa: E731
    for name, way, tr, tw, tc, ir, iw, ic in rows:
        tcpu = tr * tw / tc if tr else None
        icpu = ir * iw / ic if ir else None
        print(f"| {name} | {way} | {f(tr, 0)} | {f(tcpu, 0)} | {f(tw)} / {f(tc)} | {f(ir, 0)} | {f(icpu, 0)} | "
              f"{f(iw)} / {f(ic)} |")


if __name__ == "__main__":
    main()
