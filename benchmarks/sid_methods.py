"""llmrec's SID methods side by side on one catalog: rq-kmeans (digit / reassign), rq-kmeans-balanced, rq-vae
(with and without a Sinkhorn-balanced last level), each through ``build_sids`` exactly as ``llmrec sid build``
runs it, each in its own child process (wall, CPU = user + sys, peak RSS).

    python benchmarks/sid_methods.py --embeddings /work/cache/beauty_emb
    python benchmarks/sid_methods.py --methods rq-vae --rqvae-epochs 100
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    "rq-kmeans": dict(method="rq-kmeans", dedup="digit"),
    "rq-kmeans/reassign": dict(method="rq-kmeans", dedup="reassign"),
    "rq-kmeans-balanced": dict(method="rq-kmeans-balanced", dedup="digit"),
    "rq-vae": dict(method="rq-vae", dedup="digit"),
    "rq-vae/sinkhorn": dict(method="rq-vae", dedup="digit", sinkhorn=True),
}


def child(args) -> None:
    from llmrec.tokenizers.build import build_sids

    kw = dict(RUNS[args.child])
    if kw["method"] == "rq-vae" and args.rqvae_epochs:
        kw["epochs"] = args.rqvae_epochs
    if kw["method"] == "rq-vae" and args.rqvae_time_budget:
        kw["time_budget_s"] = args.rqvae_time_budget
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = build_sids(args.embeddings, levels=3, codes=256, seed=args.seed, plots=False, **kw)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    rep = res.report
    lv = rep["levels"]
    out = {"wall_s": round(dt, 1), "cpu_s": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 1),
           "fit_s": rep["fit_seconds"], "peak_rss_gb": round(r1.ru_maxrss / 2 ** 20, 2),
           "recon_error": rep["recon_error"], "unique": rep["n_unique_sids"], "n": rep["n_items"],
           "collisions": rep["collisions_before_dedup"], "largest_group": rep["largest_collision_group"],
           "levels": res.table.levels, "digit": res.table.codebook_sizes[3] if res.table.levels > 3 else None,
           "used": [l["used_codes"] for l in lv[:3]], "perplexity": [l["perplexity"] for l in lv[:3]],
           "l0": f"{lv[0]['min_cluster']}-{lv[0]['max_cluster']}", "gini": [l["gini"] for l in lv[:3]],
           "lift": rep.get("semantic", {}).get("lift_first_code"), "dedup": rep["dedup"],
           "fit_stats": rep.get("fit_stats")}
    print("RESULT " + json.dumps(out, default=str), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", default="/work/cache/beauty_emb")
    ap.add_argument("--methods", default=",".join(RUNS))
    ap.add_argument("--rqvae-epochs", type=int, default=None)
    ap.add_argument("--rqvae-time-budget", type=float, default=None, help="seconds; rq-vae stops training there")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; uptime: {os.popen('uptime').read().strip()}", flush=True)
    results = {}
    for m in args.methods.split(","):
        cmd = [sys.executable, __file__, "--child", m, "--embeddings", args.embeddings, "--seed", str(args.seed)]
        if args.rqvae_epochs:
            cmd += ["--rqvae-epochs", str(args.rqvae_epochs)]
        if args.rqvae_time_budget:
            cmd += ["--rqvae-time-budget", str(args.rqvae_time_budget)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"{m} failed:\n{p.stderr[-3000:]}", flush=True)
            continue
        results[m] = json.loads(line[-1][7:])
        print(f"{m}: {results[m]}", flush=True)
    print(f"# after: uptime: {os.popen('uptime').read().strip()}")
    print("\n| method | wall s | CPU s | recon error | collisions before dedup (largest group) | unique SIDs | "
          "digit values | codes used per level | perplexity per level | level-0 sizes | Gini per level | "
          "title-word lift |")
    print("|" + "---|" * 12)
    for m, r in results.items():
        extra = ""
        if r["dedup"].get("n_reassigned") is not None:
            extra = f", {r['dedup']['n_reassigned']} re-assigned"
        print(f"| {m} | {r['wall_s']} | {r['cpu_s']} | {r['recon_error']:.4f} | {r['collisions']:,} "
              f"({r['largest_group']}){extra} | {r['unique']:,} / {r['n']:,} | {r['digit'] or '—'} | "
              f"{'/'.join(map(str, r['used']))} | {'/'.join(f'{p:.0f}' for p in r['perplexity'])} | {r['l0']} | "
              f"{'/'.join(f'{g:.2f}' for g in r['gini'])} | {r['lift']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
