"""ActionPiece vocabulary construction speed: incremental (llmrec) vs full recount, on Beauty LOO.

Every configuration runs in a fresh child process so its CPU time and peak RSS are its own. Features are
OPQ 4 x 256 codes of the item embeddings + a 128-bucket digit (5 per item), computed once and cached as
FEATURES.json in --work; the sequences are the LOO training sequences.

    PYTHONPATH=$PWD python benchmarks/actionpiece_build.py --dataset /path/to/beauty \\
        --embeddings /path/to/emb --work /tmp/ap_bench

Rows:
  incremental Q=10k / 40k     llmrec.tokenizers.actionpiece (numba kernels, exact counts), numba cache warm
  incremental Q=40k checked   same, recounting every pair from scratch after every 1,000th merge
  numba compile               the Q=10k run with an empty numba cache (one-time JIT cost)
  naive (compiled)            same kernels, but every merge walks the whole corpus and recounts every pair
  naive (Python oracle)       llmrec.tokenizers.actionpiece.naive: pure Python, full recount per merge
Naive rows run a few merges only; "per merge" x merges gives their projected time to Q.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    import numpy as np

    from llmrec.tokenizers.actionpiece import learn_merges
    from llmrec.tokenizers.actionpiece.run import _dataset_sequences, _value_order

    t_start, c_start = time.perf_counter(), time.process_time()
    feats = json.loads(Path(args.features).read_text())
    seqs = _dataset_sequences(Path(args.dataset), "loo")
    ids = [int(k) for k in feats]
    rows = list(feats.values())
    m = len(rows[0])
    vals = [_value_order({r[p] for r in rows}) for p in range(m)]
    tid = {(p, v): i for i, (p, v) in enumerate((p, v) for p in range(m) for v in vals[p])}
    n_init = len(tid)
    mat = np.zeros((max(ids) + 1, m), dtype=np.int64)
    for i, r in zip(ids, rows):
        mat[i] = [tid[(p, v)] for p, v in enumerate(r)]
    seqs = [np.asarray(s, dtype=np.int64) for s in seqs]
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_merges = args.q - n_init
    w0, c0 = time.perf_counter(), time.process_time()
    if args.mode == "python":
        from llmrec.tokenizers.actionpiece.naive import naive_train

        merges, scale = naive_train([[list(mat[i]) for i in s] for s in seqs], n_merges, n_init, m,
                                    time_limit=args.time_limit)
        pairs = [[int(a), int(b)] for a, b, _, _ in merges]
        counts = [int(w) for _, _, w, _ in merges]
        done = len(merges)
    else:
        res = learn_merges(mat, seqs, n_init, n_merges, naive=args.mode == "naive", progress=False,
                           check_every=args.check_every)
        pairs, counts, done = res.pairs.tolist(), res.counts.tolist(), len(res.pairs)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "mode": args.mode, "q": args.q, "n_init": n_init, "merges": done, "learn_wall": wall, "learn_cpu": cpu,
        "total_wall": time.perf_counter() - t_start, "total_cpu": time.process_time() - c_start,
        "peak_rss_mb": ru.ru_maxrss / 1024, "rss_after_load_mb": rss_data, "pairs": pairs[:200],
        "counts": counts[:200],
        "n_items": len(ids), "n_sequences": len(seqs), "occurrences": int(sum(len(s) for s in seqs)),
    }))


def run_child(mode: str, q: int, a, env_extra: dict | None = None, check_every: int = 0,
              time_limit: float | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--q", str(q), "--features", str(a.features_path),
           "--dataset", a.dataset, "--check-every", str(check_every)]
    if time_limit:
        cmd += ["--time-limit", str(time_limit)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"child failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_wall"] = time.perf_counter() - t0
    row["process_cpu"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return row


def make_features(a) -> Path:
    path = Path(a.work) / "features_opq4x256_h128.json"
    if path.is_file():
        return path
    from llmrec.tokenizers.actionpiece.run import _dataset_sequences, build_features

    seqs = _dataset_sequences(Path(a.dataset), "loo")
    t0 = time.perf_counter()
    ids, rows, names, desc = build_features(dataset=Path(a.dataset), embeddings=Path(a.embeddings),
                                            sequences=seqs, hash_buckets=128, seed=0)
    print(f"features: {names}, {len(ids)} items, {time.perf_counter() - t0:.1f}s ({desc})", flush=True)
    path.write_text(json.dumps({str(i): [str(v) for v in r] for i, r in zip(ids, rows)}))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="Beauty dataset folder with its LOO split")
    p.add_argument("--embeddings", help="item embeddings (.npy or folder); not needed if --work has features")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "ap_bench"))
    p.add_argument("--qs", default="10000,40000")
    p.add_argument("--naive-merges", type=int, default=60, help="merges for the compiled full-recount baseline")
    p.add_argument("--python-seconds", type=float, default=60, help="time budget of the pure-Python oracle")
    p.add_argument("--skip-cold", action="store_true", help="skip the empty-numba-cache compile measurement")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fast", help=argparse.SUPPRESS)
    p.add_argument("--q", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--features", help=argparse.SUPPRESS)
    p.add_argument("--check-every", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--time-limit", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    a.features_path = make_features(a)
    qs = [int(x) for x in a.qs.split(",")]
    print(f"machine: {os.cpu_count()} CPUs; load {os.getloadavg()}; {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)

    rows = []
    run_child("fast", qs[0], a)  # warm the numba cache
    for q in qs:
        rows.append(("incremental", run_child("fast", q, a)))
        print(f"  incremental Q={q}: done", flush=True)
    rows.append(("incremental, full recount check every 1,000 merges",
                 run_child("fast", qs[-1], a, check_every=1000)))
    if not a.skip_cold:
        with tempfile.TemporaryDirectory() as d:
            rows.append(("incremental, empty numba cache (includes JIT compile)",
                         run_child("fast", qs[0], a, env_extra={"NUMBA_CACHE_DIR": d})))
    n_init = rows[0][1]["n_init"]
    rows.append(("naive: compiled full recount per merge", run_child("naive", n_init + a.naive_merges, a)))
    print("  naive compiled: done", flush=True)
    rows.append(("naive: pure-Python oracle, full recount per merge",
                 run_child("python", n_init + 1000, a, time_limit=a.python_seconds)))
    print("  naive python: done", flush=True)

    # the baselines must learn exactly the incremental builder's merges
    ref = rows[0][1]
    for name, r in rows[1:]:
        k = min(len(r["pairs"]), len(ref["pairs"]))
        same = r["pairs"][:k] == ref["pairs"][:k] and r["counts"][:k] == ref["counts"][:k]
        print(f"  same first {k} merges as incremental: {same}  ({name})")
        if not same:
            sys.exit("MISMATCH")

    r = rows[0][1]
    print(f"\nBeauty LOO training: {r['n_sequences']:,} sequences, {r['occurrences']:,} item occurrences, "
          f"{r['n_items']:,} items x 5 features, {n_init} initial tokens\n")
    print("| builder | Q | merges | merge wall s | merge CPU s | process wall s | process CPU s | CPU s / merge "
          "| projected CPU s to Q=40k | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        per = r["learn_cpu"] / max(r["merges"], 1)
        proj = f"{per * (40000 - n_init):,.0f}" if name.startswith("naive") else ""
        print(f"| {name} | {r['q']:,} | {r['merges']:,} | {r['learn_wall']:.1f} | {r['learn_cpu']:.1f} | "
              f"{r['process_wall']:.1f} | {r['process_cpu']:.1f} | {per * 1000:.2f} ms | {proj} | "
              f"{r['peak_rss_mb']:.0f} |")
    print("\n(process = the whole child: interpreter, imports, loading data and features, building; peak RSS of "
          f"the child; RSS after loading the data and before building: {rows[0][1]['rss_after_load_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
