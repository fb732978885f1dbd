"""llmrec RQ-kmeans settings beside faiss k-means on Beauty, in one warm process (no start-up cost in the times).

Times the default (4 joint refinement rounds) and lighter settings (fewer refinement rounds, fewer Lloyd
iterations) against faiss k-means per level (20 iterations), each 3 times interleaved; prints medians.

    python benchmarks/sid_rqkmeans_variants.py [EMB_DIR]
"""
import time, resource, sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from llmrec.data_builders.embeddings import load_embeddings
from llmrec.tokenizers.rq_kmeans import RQKMeans
import faiss
x = np.ascontiguousarray(load_embeddings(sys.argv[1] if len(sys.argv) > 1 else "/work/cache/beauty_emb").vectors[1:], dtype=np.float32)
def err(x, xh): return float(np.mean(np.linalg.norm(x - xh, axis=1) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)))
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
def run_faiss():
    r = x.copy(); xh = np.zeros_like(x)
    for l in range(3):
        km = faiss.Kmeans(x.shape[1], 256, niter=20, seed=l); km.train(r)
        _, I = km.index.search(r, 1); c = km.centroids[I[:, 0]]; r -= c; xh += c
    return err(x, xh)
def run_ll(**kw):
    tok = RQKMeans(levels=3, codes=256, seed=0, **kw); codes = tok.fit(x)
    return err(x, tok.decode(codes))
variants = {"faiss": run_faiss, "llmrec default": lambda: run_ll()}
for rr in (0, 1, 2):
    variants[f"refine {rr}"] = (lambda rr=rr: run_ll(refine_rounds=rr))
for mi in (20, 30):
    variants[f"max_iter {mi}, refine 1"] = (lambda mi=mi: run_ll(max_iter=mi, refine_rounds=1))
    variants[f"max_iter {mi}, refine 2"] = (lambda mi=mi: run_ll(max_iter=mi, refine_rounds=2))
res = {k: [] for k in variants}
for rep in range(3):
    for k, f in variants.items():
        t, c = time.perf_counter(), cpu(); e = f(); res[k].append((time.perf_counter() - t, cpu() - c, e))
print("| variant | wall s (median of 3) | CPU s | recon error |")
for k, v in res.items():
    v = np.array(v); print(f"| {k} | {np.median(v[:,0]):.2f} | {np.median(v[:,1]):.2f} | {np.median(v[:,2]):.4f} |")
