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
    t.add_argument("--config", help="YAML file of model options (see recipes/baselines/)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ks", default="5,10,20,50,100")
    t.add_argument("--exclude-history", action="store_true", help="never recommend history items")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=_train)


def _train(args) -> int:
    from llmrec.eval.metrics import format_table
    from llmrec.models.baselines import load_config, train_baseline

    summary = train_baseline(args.model, args.data, args.split, load_config(args.config), args.out, seed=args.seed,
                             ks=args.ks, exclude_history=args.exclude_history, overwrite=args.overwrite)
    print(format_table(summary["valid"], title=f"{args.model} / {args.split} / validation"))
    print(format_table(summary["test"], title=f"{args.model} / {args.split} / test"))
    print(f"wrote {args.out}/metrics.json ({summary['total_seconds']:.1f} s)")
    return 0
