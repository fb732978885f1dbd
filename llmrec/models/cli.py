"""``llmrec baseline ...``: conventional models on the same data, split and metrics."""

from __future__ import annotations


def register(sub) -> None:
    from llmrec.cli import add_group
    from llmrec.models.baselines import REGISTRY

    g = add_group(sub, "baseline", "train and evaluate baselines (floors, SASRec, GPT-2, HSTU, TIGER)")
    t = g.add_parser("train", help="fit a baseline, early-stop on validation, write test metrics",
                     description="Fit on DATASET/splits/<split>/train.parquet, select on validation, write "
                                 "OUT/metrics.json (test metrics, keys as `llmrec eval` writes them).")
    t.add_argument("--model", required=True, choices=sorted(REGISTRY))
    t.add_argument("--data", required=True, help="dataset folder (with splits/<split>)")
    t.add_argument("--split", default="loo", help="split protocol folder name (loo, temporal, minionerec)")
    t.add_argument("--config", help="YAML file of model and training options (see recipes/baselines/)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", dest="overrides",
                   help="override one config option (repeatable), e.g. --set lr=0.0005 --set epochs=50")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ks", default="5,10,20,50,100")
    t.add_argument("--exclude-history", action="store_true", help="never recommend history items")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint (OUT's .OUT.work folder)")
    t.set_defaults(func=_train)


def _train(args) -> int:
    from llmrec.eval.metrics import format_table
    from llmrec.models.baselines import load_config, parse_overrides, train_baseline

    config = {**load_config(args.config), **parse_overrides(args.overrides)}
    summary = train_baseline(args.model, args.data, args.split, config, args.out, seed=args.seed,
                             ks=args.ks, exclude_history=args.exclude_history, overwrite=args.overwrite,
                             resume=args.resume)
    print(format_table(summary["valid"], title=f"{args.model} / {args.split} / validation"))
    print(format_table(summary["test"], title=f"{args.model} / {args.split} / test"))
    bp = summary["test"].get("by_popularity")
    if bp:
        print("test by target popularity: " + "  ".join(
            f"{k} (n={v['n_users']}): R@10 {v.get('recall@10', float('nan')):.4f} N@10 {v.get('ndcg@10', float('nan')):.4f}"
            for k, v in bp.items()))
    info = summary.get("info") or {}
    if info.get("epochs_run"):
        print(f"trained {info['epochs_run']} epochs (best {info['best_epoch']}, stopped: {info['stopped']}) in "
              f"{info['train_seconds']:.0f} s; {info['train_sequences_per_s']} train seq/s, "
              f"{info['inference_users_per_s']} users/s at inference")
    print(f"wrote {args.out}/metrics.json ({summary['total_seconds']:.1f} s)")
    return 0
