"""``llmrec quickstart``: the whole pipeline, offline, on the embedded synthetic shop, in a few minutes on 2 CPUs.

Every artifact stays in ``--workdir`` (dataset, split, embeddings, SIDs, instruction data, models, predictions,
metrics), so a user can open each stage's folder afterwards. Steps are plain functions run in order; each adds
rows to the final table:

1. synthetic shop + leave-one-out split            5. a small Qwen3-architecture model extended with the SIDs
2. floors: most-popular and item-kNN                  (real Qwen3 tokenizer when $LLMREC_SHARED_DATA has it)
3. item embeddings (all-MiniLM-L6-v2) + RQ-kmeans   6. brief SFT on the instruction data (TRL)
4. instruction data (LC-Rec-style tasks)            7. trie-constrained beam search on every test user
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="run the pipeline offline on the embedded synthetic shop",
                       description="Build the synthetic shop, split it, train and evaluate the floors and a small "
                                   "SID language model (embeddings -> RQ-kmeans SIDs -> instruction data -> Qwen3 "
                                   "with SID tokens -> SFT -> constrained beam search), and print one metrics "
                                   "table. All artifacts are left in --workdir.")
    p.add_argument("--workdir", default="llmrec-quickstart", help="folder for every artifact (default ./llmrec-quickstart)")
    p.add_argument("--users", type=int, default=1500, help="synthetic users")
    p.add_argument("--items", type=int, default=400, help="synthetic items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="SFT steps of the language model (default 400; --fast 40)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer folder for the small Qwen3 (default: $LLMREC_SHARED_DATA/qwen3-tokenizer when it "
                        "exists, else a BPE trained on the spot); 'fallback' forces the trained BPE")
    p.add_argument("--no-llm", action="store_true", help="stop after the floors")
    p.add_argument("--fast", action="store_true", help="smallest settings (for tests)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    run_quickstart(args.workdir, n_users=args.users, n_items=args.items, seed=args.seed, fast=args.fast,
                   llm=not args.no_llm, steps=args.steps, tokenizer=args.tokenizer)
    return 0


def default_tokenizer() -> str | None:
    """The real Qwen3 tokenizer files when ``$LLMREC_SHARED_DATA`` has them (offline), else ``None`` (fallback)."""
    root = os.environ.get("LLMREC_SHARED_DATA")
    if root and (Path(root) / "qwen3-tokenizer" / "tokenizer.json").is_file():
        return str(Path(root) / "qwen3-tokenizer")
    return None


def run_quickstart(workdir: str | Path, n_users: int = 1500, n_items: int = 400, seed: int = 0,
                   fast: bool = False, llm: bool = True, steps: int | None = None,
                   tokenizer: str | None = None) -> dict:
    from llmrec.data_builders import SyntheticConfig, build_synthetic, split_dataset
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
    if llm:
        results["sid-lm (qwen3)"] = _sid_lm(work, ds, seed, fast, steps, tokenizer)
    ks = (5, 10, 20)
    print()
    print(f"{'model':16}" + "".join(f"{m + '@' + str(k):>10}" for m in ("hr", "ndcg") for k in ks))
    for name, m in results.items():
        print(f"{name:16}" + "".join(f"{m[f'{mm}@{k}']:10.4f}" for mm in ("hr", "ndcg") for k in ks))
    print(f"\nquickstart finished in {time.perf_counter() - t0:.0f} s; artifacts in {work}/")
    from llmrec.artifacts import write_json
    write_json(work / "metrics.json", results)
    return results


def _sid_lm(work: Path, ds: Path, seed: int, fast: bool, steps: int | None, tokenizer: str | None) -> dict:
    """Steps 3-7: SIDs, instruction data, a small Qwen3 with SID tokens, SFT, constrained-beam evaluation."""
    import json

    from llmrec.data_builders import load_split
    from llmrec.data_builders.embeddings import embed_items
    from llmrec.data_builders.instructions import InstructionConfig, build_instructions
    from llmrec.eval.protocol import evaluate_ranked_lists, write_predictions
    from llmrec.inference.recommend import Recommender
    from llmrec.tokenizers.build import build_sids
    from llmrec.training.recipe import load_recipe
    from llmrec.training.sft import train

    emb, sids, instr = work / "embeddings", work / "sids", work / "instructions"
    print(f"[3] item embeddings (all-MiniLM-L6-v2) -> {emb}; RQ-kmeans SIDs -> {sids}")
    embed_items(ds, emb, cache_dir=work / ".embedding-cache", overwrite=True, progress=False)
    build_sids(emb, method="rq-kmeans", levels=2, codes=16, dedup="digit", out=sids, seed=seed, overwrite=True,
               plots=False)
    print(f"[4] instruction data -> {instr}")
    build_instructions(ds, "loo", sids, instr, InstructionConfig(
        tasks=("seqrec", "title2sid", "sid2title", "itemsearch"), max_history=10, template_mode="first",
        system_prompt=None, seed=seed), overwrite=True)
    tok = tokenizer if tokenizer is not None else default_tokenizer()
    if tok == "fallback":
        tok = None
    print(f"[5] small Qwen3 + SID tokens ({'Qwen3 tokenizer ' + tok if tok else 'locally trained BPE tokenizer'})")
    n_steps = steps or (40 if fast else 400)
    run = work / "models" / "sid-lm"
    recipe = load_recipe({
        "output_dir": str(run), "seed": seed, "cpu_threads": 1 if fast else None,
        "data": {"dataset": str(ds), "split": "loo", "instructions": str(instr), "max_length": 256},
        "sids": str(sids),
        "model": {"config": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                             "intermediate_size": 192},
                  "tokenizer": tok or "fallback", "tokenizer_vocab_size": 2048},
        "vocab": {"init": "mean"}, "peft": {"method": "full"},
        "sft": {"max_steps": n_steps, "per_device_train_batch_size": 32, "learning_rate": 3e-3,
                "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "logging_steps": max(1, n_steps // 10),
                "save_steps": n_steps, "save_total_limit": 1, "disable_tqdm": True},
        "eval": {"at": []}, "resume": False})
    print(f"[6] SFT, {n_steps} steps -> {run}")
    import shutil
    shutil.rmtree(run, ignore_errors=True)
    final = train(recipe)
    print("[7] trie-constrained beam search on every test user")
    split = load_split(ds, "loo")
    rec = Recommender.from_pretrained(final, device="cpu", batch_size=64)
    hist = [list(map(int, h)) for h in split.test["history"]]
    got = rec.recommend(hist, k=20, num_beams=20)
    ranked = [r.items for r in got]
    targets = split.test["target"].astype(int).tolist()
    res = evaluate_ranked_lists(targets, ranked, ks=(5, 10, 20), n_items=split.n_items)
    write_predictions(work / "predictions" / "sid-lm.test.jsonl", split.test["user"].tolist(), targets, ranked)
    (work / "predictions" / "sid-lm.test.metrics.json").write_text(json.dumps(res.metrics, indent=2))
    return dict(res.metrics)
