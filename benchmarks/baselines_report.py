"""Collect finished `llmrec baseline train` runs into the Markdown table of docs/benchmarks.md, beside the published
anchors, with each run's training budget and throughput, and plot their validation learning curves.

    python benchmarks/baselines_report.py RUNS_DIR [--plot docs/img/baselines_beauty_curves.png] [--commands]

RUNS_DIR holds one output folder per run (metrics.json, run.json, history.json, train_info.json). Metrics are the
test metrics of the best validation checkpoint. `--commands` also prints the command line each run was made with
(from run.json; a resumed run shows its last session's command). `--quiet-after ISO_TIME` marks the inference rates
of runs scored before that time as measured on a loaded machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmrec.artifacts import read_json  # noqa: E402

# display order and label of the run folders (other folders follow in name order, under their folder name)
LABELS = {
    "sasrec": "SASRec (sampled softmax, 256 shared negatives)",
    "sasrec_neg1024": "SASRec (sampled softmax, 1024 shared negatives)",
    "sasrec_bce": "SASRec (BCE, 1 negative per position, as the paper)",
    "gpt2_none": "GPT-2, random item embeddings",
    "gpt2_init": "GPT-2, embeddings initialised from item text",
    "gpt2_frozen": "GPT-2, frozen item-text input + projection",
    "hstu": "HSTU",
    "hsid_ngram": "HSTU-SID ngram (SID only)",
    "hsid_prefixN": "HSTU-SID prefixN (SID only)",
    "hsid_prefixN-indEmb_sum": "HSTU-SID prefixN-indEmb, sum",
    "hsid_RQsum-indEmb_sum": "HSTU-SID RQsum-indEmb, sum",
    "hsid_RQsum-indEmb_FC": "HSTU-SID RQsum-indEmb, FC",
    "hsid_RQsum-indEmb_MLP": "HSTU-SID RQsum-indEmb, MLP",
    "hsid_RQsum-indEmb_scalarGate": "HSTU-SID RQsum-indEmb, scalarGate",
    "hsid_RQsum-indEmb_vectorGate": "HSTU-SID RQsum-indEmb, vectorGate",
    "hsid_RQsum-indEmb_scalarWeight": "HSTU-SID RQsum-indEmb, scalarWeight",
    "tiger_cpu": "TIGER (CPU-sized T5, 2+2 layers, d 64)",
    "pop_excl": "floor: most popular",
    "itemknn_excl": "floor: item-kNN",
    "pop": "floor: most popular (history not excluded)",
    "itemknn": "floor: item-kNN (history not excluded)",
}

# published Beauty LOO numbers (../shared/notes/anchors.md): R@5, N@5, R@10, N@10
ANCHORS = [
    ("SASRec as reported in TIGER", ".0387", ".0249", ".0605", ".0318"),
    ("SASRec + sampled softmax, tuned (transformer_benchmark)", "", "", ".0921", ".0531"),
    ("HSTU (ActionPiece paper)", ".0469", ".0314", ".0704", ".0389"),
    ("TIGER (TIGER paper)", ".0454", ".0321", ".0648", ".0384"),
]

# the targets: (folder prefix, R@10, N@10)
TARGETS = [("sasrec", "SASRec", .0605, .0318), ("hstu", "HSTU", .0704, .0389), ("tiger", "TIGER", .0648, .0384)]


def _load(d: Path) -> dict | None:
    if not (d / "metrics.json").is_file():
        return None
    run = read_json(d / "run.json")
    hist = read_json(d / "history.json") if (d / "history.json").is_file() else []
    return {"name": d.name, "m": read_json(d / "metrics.json"), "run": run, "hist": hist,
            "info": run.get("extra", {})}


def _order(runs: list) -> list:
    keys = list(LABELS)
    return sorted(runs, key=lambda r: (keys.index(r["name"]) if r["name"] in keys else len(keys), r["name"]))


def row(r: dict, quiet_after: str = "") -> str:
    m, i = r["m"], r["info"]
    f = lambda k: f"{m[k]:.4f}" if k in m else "–"  # noqa: E731
    cells = [LABELS.get(r["name"], r["name"]), f("recall@5"), f("recall@10"), f("recall@20"), f("ndcg@5"),
             f("ndcg@10"), f("ndcg@20"), f("mrr@20")]
    bp = m.get("by_popularity", {})
    cells.append(" / ".join(f"{bp[b]['ndcg@10']:.4f}" for b in ("hot", "middle", "cold")) if bp else "–")
    if i.get("epochs_run"):
        # rates: over all epochs (wall, so it carries the machine's load) and the fastest epoch (a quiet machine)
        sps = i.get("train_sequences_per_s") or 0
        ratio = (i.get("train_user_sequences_per_s") or sps) / sps if sps else 1.0  # TIGER: examples -> users
        fastest = max((h.get("train_seq_per_s") or 0 for h in r["hist"]), default=0) * ratio
        cells += [f"{i['best_epoch']}/{i['epochs_run']}, {i['stopped'].replace('_', ' ')}",
                  f"{i['train_seconds'] / 60:.0f} / {i['train_cpu_seconds'] / 60:.1f}",
                  f"{sps * ratio:,.0f} ({fastest:,.0f})",
                  f"{i['inference_users_per_s']:,.0f}"
                  + (" (loaded)" if quiet_after and r["run"].get("created", "") < quiet_after else "")]
    else:
        t = r["run"].get("timings", {})
        cells += ["–", f"{t.get('fit_s', 0) / 60:.2f} (fit)", "–", "–"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs")
    ap.add_argument("--plot", help="PNG of every run's validation NDCG@10 per epoch")
    ap.add_argument("--commands", action="store_true", help="print each run's command line")
    ap.add_argument("--quiet-after", default="", help="ISO time: runs finished (scored) before it mark their "
                    "test users/s as measured on a loaded machine")
    args = ap.parse_args()
    runs = _order([r for d in sorted(Path(args.runs).iterdir()) if d.is_dir() and (r := _load(d))])
    print("| model | R@5 | R@10 | R@20 | N@5 | N@10 | N@20 | MRR@20 | N@10 hot / middle / cold | best/run epochs, "
          "stop | train min wall / CPU | train user seq/s: all epochs (fastest epoch) | test users/s |")
    print("|---|" + "---|" * 12)
    for r in runs:
        print(row(r, args.quiet_after))
    print("\n| published anchor | R@5 | N@5 | R@10 | N@10 |\n|---|---|---|---|---|")
    for a in ANCHORS:
        print("| " + " | ".join(a) + " |")
    print()
    for prefix, label, tr, tn in TARGETS:
        for r in runs:
            if r["name"] == prefix or r["name"].startswith(prefix + "_"):
                r10, n10 = r["m"]["recall@10"], r["m"]["ndcg@10"]
                ok = "met" if r10 >= tr and n10 >= tn else "NOT met"
                print(f"- {label} target R@10 >= {tr} / N@10 >= {tn}: {r['name']} {r10:.4f} / {n10:.4f}: {ok}")
    print("\nthe same checkpoints under the other history rule (history items left rankable):\n")
    print("| run | R@10 | N@10 |\n|---|---|---|")
    for r in runs:
        alt = r["info"].get("test_other_history_rule")
        if alt:
            print(f"| {r['name']} (exclude_history={alt['exclude_history']}) | {alt['recall@10']:.4f} | "
                  f"{alt['ndcg@10']:.4f} |")
    if args.commands:
        print()
        for r in runs:
            print(f"{r['name']}: {r['run'].get('command', '?')}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 5))
        for j, r in enumerate(runs):
            pts = [(h["epoch"], h["valid_ndcg@10"]) for h in r["hist"] if "valid_ndcg@10" in h]
            if pts:
                ax.plot(*zip(*pts), marker=".", ms=3, lw=1, label=r["name"], color=plt.cm.tab20(j % 20),
                        ls="--" if r["name"].startswith(("gpt2", "tiger")) else "-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NDCG@10")
        ax.set_title("Beauty LOO: validation NDCG@10 per epoch (selection metric)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
