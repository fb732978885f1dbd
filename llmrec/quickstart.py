"""``llmrec quickstart``: the whole pipeline, offline, on the embedded synthetic shop, in a few minutes on 2 CPUs.

Every artifact stays in ``--workdir`` (dataset, split, models, predictions, metrics), so a user can open each
stage's folder afterwards. Steps are plain functions run in order; each adds rows to the final table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="run the pipeline offline on the embedded synthetic shop",
                       description="Build the synthetic shop, split it, train and evaluate the models, and print "
                                   "a metrics table. All artifacts are left in --workdir.")
    p.add_argument("--workdir", default="llmrec-quickstart", help="folder for every artifact (default ./llmrec-quickstart)")
    p.add_argument("--users", type=int, default=1500, help="synthetic users")
    p.add_argument("--items", type=int, default=400, help="synthetic items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="smallest settings (for tests)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    run_quickstart(args.workdir, n_users=args.users, n_items=args.items, seed=args.seed, fast=args.fast)
    return 0


def run_quickstart(workdir: str | Path, n_users: int = 1500, n_items: int = 400, seed: int = 0,
                   fast: bool = False) -> dict:
    from llmrec.data_builders import SyntheticConfig, build_synthetic, split_dataset
    from llmrec.eval.metrics import format_table
    from llmrec.models.baselines import train_baseline

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = work / "dataset"
    print(f"[1] synthetic shop -> {ds}")
    build_synthetic(ds, SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed), overwrite=True)
    split_dataset(ds, "loo")
    results: dict[str, dict] = {}
    print("[2] floors: most-popular and item-kNN")
    for model in ("pop", "itemknn"):
        s = train_baseline(model, ds, "loo", out=work / "models" / model, seed=seed, overwrite=True)
        results[model] = s["test"]
    ks = (5, 10, 20)
    print()
    print(f"{'model':14}" + "".join(f"{m + '@' + str(k):>10}" for m in ("hr", "ndcg") for k in ks))
    for name, m in results.items():
        print(f"{name:14}" + "".join(f"{m[f'{mm}@{k}']:10.4f}" for mm in ("hr", "ndcg") for k in ks))
    print(f"\nquickstart finished in {time.perf_counter() - t0:.0f} s; artifacts in {work}/")
    return results
