"""RQ-kmeans side by side: llmrec vs scikit-learn KMeans, faiss k-means, faiss ResidualQuantizer, MiniBatchKMeans.

Two workloads, 3 levels x 256 codes each:

* ``beauty``: Amazon Beauty's 12,101 MiniLM item embeddings (an EMB folder, default /work/cache/beauty_emb);
* ``synthetic``: a 1,000,000 x 256 Gaussian mixture with structure at every level (256 top clusters, 64
  sub-clusters inside each, 256 shared fine offsets, isotropic noise), generated from a seed.

Every method runs in its own child process (so peak memory is its own), ``--repeats`` times in interleaved
order on a shared machine; the table shows the median wall time, CPU seconds (user + sys), peak RSS, relative
reconstruction error ``mean ||x - x_hat|| / ||x||``, items that would need a disambiguation digit, the largest
collision group and first-level balance. Load (``uptime``) is printed before and after.

    python benchmarks/sid_rqkmeans.py beauty --repeats 3
    python benchmarks/sid_rqkmeans.py synthetic --methods llmrec,faiss-sampled,faiss-full
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEVELS, K = 3, 256


# --- data ---------------------------------------------------------------------------------------------------
def synthetic(n: int = 1_000_000, d: int = 256, seed: int = 0) -> np.ndarray:
    """Hierarchical Gaussian mixture: x = U[a] + V[a, b] + W[c] + noise (scales 1, .6, .35, noise .45/sqrt(d))."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((256, d), dtype=np.float32) / np.sqrt(d)
    V = 0.6 * rng.standard_normal((256, 64, d), dtype=np.float32) / np.sqrt(d)
    W = 0.35 * rng.standard_normal((256, d), dtype=np.float32) / np.sqrt(d)
    x = np.empty((n, d), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        a, b, c = rng.integers(256, size=m), rng.integers(64, size=m), rng.integers(256, size=m)
        x[s: s + m] = U[a] + V[a, b] + W[c] + (0.45 / np.sqrt(d)) * rng.standard_normal((m, d), dtype=np.float32)
    return x


def load_data(workload: str, emb: str, n: int) -> np.ndarray:
    if workload == "beauty":
        from llmrec.data_builders.embeddings import load_embeddings
        return load_embeddings(emb).vectors[1:]
    cache = Path(os.environ.get("LLMREC_BENCH_CACHE", "/tmp")) / f"sid_synthetic_{n}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode=None)
    x = synthetic(n)
    np.save(cache, x)
    return x


# --- methods (each returns codes [n, 3] and reconstruction x_hat) ------------------------------------------
def run_llmrec(x, seed):
    from llmrec.tokenizers.rq_kmeans import RQKMeans
    tok = RQKMeans(levels=LEVELS, codes=K, seed=seed)
    codes = tok.fit(x)
    return codes, tok.decode(codes)


def run_llmrec_balanced(x, seed):
    from llmrec.tokenizers.rq_kmeans import RQKMeans
    tok = RQKMeans(levels=LEVELS, codes=K, seed=seed, balanced=True)
    codes = tok.fit(x)
    return codes, tok.decode(codes)


def _per_level(x, seed, fit_level):
    r = x.copy()
    codes = np.empty((len(x), LEVELS), np.int64)
    xh = np.zeros_like(x)
    for l in range(LEVELS):
        centroids, labels = fit_level(r, seed + l)
        codes[:, l] = labels
        q = centroids[labels].astype(np.float32)
        xh += q
        r -= q
    return codes, xh


def run_sklearn(x, seed):
    from sklearn.cluster import KMeans

    def f(r, s):
        km = KMeans(n_clusters=K, random_state=s).fit(r)   # the seeds' way: k-means++, Lloyd to tol=1e-4
        return km.cluster_centers_, km.labels_
    return _per_level(x, seed, f)


def run_minibatch(x, seed):
    from sklearn.cluster import MiniBatchKMeans

    def f(r, s):
        km = MiniBatchKMeans(n_clusters=K, random_state=s, batch_size=4096, n_init=3).fit(r)
        return km.cluster_centers_, km.labels_
    return _per_level(x, seed, f)


def _faiss(x, seed, max_points):
    import faiss

    def f(r, s):
        km = faiss.Kmeans(r.shape[1], K, niter=20, seed=s, max_points_per_centroid=max_points, verbose=False)
        km.train(r)
        _, lab = km.index.search(r, 1)
        return km.centroids, lab[:, 0]
    return _per_level(x, seed, f)


def run_faiss_sampled(x, seed):
    return _faiss(x, seed, 256)          # faiss default: 256 points per centroid -> 65,536 per level


def run_faiss_full(x, seed):
    return _faiss(x, seed, 1 << 30)      # every point


def run_faiss_rq(x, seed):
    import faiss
    rq = faiss.ResidualQuantizer(x.shape[1], LEVELS, 8)   # what MiniOneRec calls (3 x 8 bits), set up as it does
    rq.train_type = faiss.ResidualQuantizer.Train_default
    rq.max_beam_size = 1
    rq.train(x)
    packed = rq.compute_codes(x)
    xh = rq.decode(packed)
    # unpack 8-bit codes (one byte per level for nbits=8)
    codes = np.frombuffer(packed.tobytes(), np.uint8).reshape(len(x), -1)[:, :LEVELS].astype(np.int64)
    return codes, xh


METHODS = {
    "llmrec": run_llmrec,
    "llmrec-balanced": run_llmrec_balanced,
    "sklearn": run_sklearn,
    "faiss": run_faiss_sampled,
    "faiss-sampled": run_faiss_sampled,
    "faiss-full": run_faiss_full,
    "faiss-rq": run_faiss_rq,
    "minibatch": run_minibatch,
}


def measure(x, codes, xh, seconds, cpu) -> dict:
    from llmrec.tokenizers.dedup import collision_stats
    from llmrec.tokenizers.report import gini

    err = np.linalg.norm(x - xh, axis=1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    st = collision_stats(codes)
    c0 = np.bincount(codes[:, 0], minlength=K)
    return {"wall_s": round(seconds, 3), "cpu_s": round(cpu, 3), "recon_error": round(float(err.mean()), 4),
            "needs_digit": st["collisions"], "largest_group": st["largest_group"],
            "l0_min": int(c0[c0 > 0].min()), "l0_max": int(c0.max()), "l0_gini": round(gini(c0), 3),
            "used": [int(len(np.unique(codes[:, l]))) for l in range(LEVELS)]}


def child(args) -> None:
    x = load_data(args.workload, args.embeddings, args.n)
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    codes, xh = METHODS[args.child](x, args.seed)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out = measure(x, np.asarray(codes), np.asarray(xh, np.float32), dt, cpu)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=("beauty", "synthetic"))
    ap.add_argument("--embeddings", default="/work/cache/beauty_emb")
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic: items")
    ap.add_argument("--methods", default=None, help="comma-separated (default: all that finish here)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per run before giving up")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    default = ("llmrec,llmrec-balanced,faiss,faiss-rq,minibatch,sklearn" if args.workload == "beauty"
               else "llmrec,faiss-sampled,faiss-full")
    methods = (args.methods or default).split(",")
    if args.workload == "synthetic":
        load_data("synthetic", args.embeddings, args.n)  # generate once, outside the timings
    print(f"# {args.workload}: {time.strftime('%Y-%m-%d %H:%M')}; uptime: {os.popen('uptime').read().strip()}")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for rep in range(args.repeats):
        for m in methods if rep % 2 == 0 else methods[::-1]:
            cmd = [sys.executable, __file__, args.workload, "--child", m, "--embeddings", args.embeddings,
                   "--n", str(args.n), "--seed", str(args.seed + rep)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                results[m].append({"timeout": args.timeout})
                print(f"{m}: did not finish in {args.timeout} s", flush=True)
                continue
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(f"{m} failed:\n{p.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(line[-1][7:])
            results[m].append(r)
            print(f"{m} (run {rep + 1}): {r}", flush=True)
    print(f"# after: uptime: {os.popen('uptime').read().strip()}")
    hdr = (f"| method | wall s (median) | CPU s | peak RSS GB | recon error | items needing digit | largest group "
           f"| level-0 sizes min-max | level-0 Gini |")
    print("\n" + hdr + "\n|" + "---|" * 9)
    for m, rs in results.items():
        ok = [r for r in rs if "wall_s" in r]
        if not ok:
            print(f"| {m} | did not finish in {args.timeout} s | | | | | | | |")
            continue
        med = lambda k: float(np.median([r[k] for r in ok]))  # noqa: E731
        r = ok[len(ok) // 2]
        print(f"| {m} | {med('wall_s'):.2f} | {med('cpu_s'):.2f} | {max(r['peak_rss_gb'] for r in ok):.2f} | "
              f"{med('recon_error'):.4f} | {int(med('needs_digit')):,} | {int(med('largest_group'))} | "
              f"{r['l0_min']}-{r['l0_max']} | {r['l0_gini']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
