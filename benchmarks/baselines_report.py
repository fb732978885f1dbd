"""Collect finished `llmrec baseline train` runs into the Markdown table of docs/benchmarks.md and one plot of
their validation learning curves.

    python benchmarks/baselines_report.py RUNS_DIR [--plot docs/figures/baselines_beauty_curves.png]

RUNS_DIR holds one output folder per run (metrics.json, run.json, history.json). Rows appear in folder-name
order; metrics are the test metrics of the best validation checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(d: Path) -> dict | None:
    if not (d / "metrics.json").is_file():
        return None
    run = json.loads((d / "run.json").read_text())
    hist = json.loads((d / "history.json").read_text()) if (d / "history.json").is_file() else []
    return {"name": d.name, "m": json.loads((d / "metrics.json").read_text()), "run": run, "hist": hist,
            "info": run.get("extra", {})}


def row(r: dict) -> str:
    m, i = r["m"], r["info"]
    f = lambda k: f"{m[k]:.4f}" if k in m else "–"  # noqa: E731
    cells = [r["name"], f("recall@5"), f("recall@10"), f("recall@20"), f("ndcg@5"), f("ndcg@10"), f("ndcg@20"),
             f("mrr@20")]
    bp = m.get("by_popularity", {})
    cells.append(" / ".join(f"{bp[b]['ndcg@10']:.4f}" for b in ("hot", "middle", "cold")) if bp else "–")
    if i.get("epochs_run"):
        sps = i.get("train_user_sequences_per_s") or i["train_sequences_per_s"]
        per_cpu = sps * i["train_seconds"] / i["train_cpu_seconds"]
        ucpu = i.get("inference_users_per_cpu_s")
        cells += [f"{i['best_epoch']}/{i['epochs_run']} ({i['stopped'].replace('_', ' ')})",
                  f"{i['train_seconds'] / 60:.0f} min / {i['train_cpu_seconds'] / 60:.0f} min",
                  f"{sps:,.0f} ({per_cpu:,.0f})",
                  f"{i['inference_users_per_s']:,.0f}" + (f" ({ucpu:,.0f})" if ucpu else "")]
    else:
        t = r["run"].get("timings", {})
        cells += ["–", f"{t.get('fit_s', 0):.0f} s (fit)", "–", "–"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs")
    ap.add_argument("--plot")
    args = ap.parse_args()
    runs = [r for d in sorted(Path(args.runs).iterdir()) if d.is_dir() and (r := _load(d))]
    print("| run | R@5 | R@10 | R@20 | N@5 | N@10 | N@20 | MRR@20 | N@10 hot / middle / cold | best/run epochs "
          "| train wall / CPU | train seq/s wall (per CPU-s) | infer users/s wall (per CPU-s) |")
    print("|---|" + "---|" * 12)
    for r in runs:
        print(row(r))
    print()
    for r in runs:
        alt = r["info"].get("test_other_history_rule")
        if alt:
            print(f"{r['name']}: exclude_history={alt['exclude_history']}: R@10 {alt['recall@10']:.4f} "
                  f"N@10 {alt['ndcg@10']:.4f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 5))
        for r in runs:
            pts = [(h["epoch"], h["valid_ndcg@10"]) for h in r["hist"] if "valid_ndcg@10" in h]
            if pts:
                ax.plot(*zip(*pts), marker=".", ms=3, lw=1, label=r["name"])
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
