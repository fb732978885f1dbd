"""ActionPiece vs RQ-kmeans SIDs as the item tokenizer of the same small Qwen3-architecture model, side by side.

Both arms are identical except the item tokenizer: the same from-scratch Qwen3 config and locally trained 2k BPE
(`recipes/beauty/tiny-qwen3_full_cpu.yaml`), the same instruction tasks/ratios/seed (for ActionPiece the
histories are set-permutation segmentations, the targets deterministic), vocabulary extension with
`llmrec.models.vocab.extend_model` (init mean), the same TRL SFT settings and number of steps, then trie-constrained
beam search (`Recommender`) on the same fixed random sample of test users with the same beams. ActionPiece is also
scored with q fused segmentations (`--segmentations`).

    python benchmarks/actionpiece_vs_rq.py --data data/beauty --rq-sids data/beauty-sid --ap data/beauty-ap \
        --out runs/ap-vs-rq --arm rq --max-steps 500 --users 2000 --beams 20
    python benchmarks/actionpiece_vs_rq.py ... --arm ap --segmentations 3
    python benchmarks/actionpiece_vs_rq.py ... --report          # the table of both (metrics.json)

Every stage (instructions, model0, training with checkpoints, evaluation) is skipped when its output exists, so
an interrupted run continues. Reports wall and CPU seconds (user + sys of this process) per stage.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

MODEL = {"hidden_size": 128, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 384}
BUILD = {"tasks": ["seqrec", "title2sid", "sid2title", "itemsearch"],
         "ratios": {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 0.5, "itemsearch": 0.5},
         "max_history": 20, "template_mode": "first", "system_prompt": None, "seed": 0}
SFT = {"per_device_train_batch_size": 64, "learning_rate": 2.0e-3, "lr_scheduler_type": "cosine",
       "warmup_steps": 0.02, "weight_decay": 0.01, "train_sampling_strategy": "group_by_length",
       "logging_steps": 25, "save_steps": 100, "save_total_limit": 1}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def instructions(arm: str, a, out: Path) -> Path:
    from llmrec.data_builders.instructions import InstructionConfig, build_instructions

    if arm == "rq" and a.rq_instructions:
        return Path(a.rq_instructions)
    if arm == "ap" and a.ap_instructions and (Path(a.ap_instructions) / "instructions.json").is_file():
        return Path(a.ap_instructions)
    p = out / "instructions"
    if not (p / "instructions.json").is_file():
        build_instructions(a.data, "loo", a.rq_sids if arm == "rq" else a.ap, p, InstructionConfig(**BUILD))
    return p


def model0(arm: str, a, out: Path) -> Path:
    from llmrec.data_builders import load_dataset
    from llmrec.models.tiny import load_lm_tokenizer, tiny_qwen3
    from llmrec.models.vocab import INFO_FILE, extend_model, load_item_tokenizer, save_extended

    p = out / "model0"
    if (p / INFO_FILE).is_file():
        return p
    ds = load_dataset(a.data)
    tok = load_lm_tokenizer(None, texts=[t for t in ds.titles[1:] if t], vocab_size=2048)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = tiny_qwen3(len(tok), seed=0, **MODEL)
    for c in (model.config, model.generation_config):
        c.pad_token_id, c.eos_token_id = tok.pad_token_id, tok.eos_token_id
    table = load_item_tokenizer(a.rq_sids if arm == "rq" else a.ap)
    info = extend_model(model, tok, table, init="mean", pad_to_multiple_of=64,
                        base_model=f"qwen3-from-config:{json.dumps(MODEL, sort_keys=True)}")
    save_extended(p, model, tok, table, info, items=ds.items, overwrite=True, config={"model": MODEL, "arm": arm})
    return p


class TimeLimit:
    """Stop training after ``seconds`` (a guard: the step budget is meant to fit; the report says if it hit)."""

    def __new__(cls, seconds: float):
        from transformers import TrainerCallback

        class _T(TrainerCallback):
            hit = False

            def on_train_begin(self, args, state, control, **kw):
                self.t0 = time.time()

            def on_step_end(self, args, state, control, **kw):
                if time.time() - self.t0 > seconds:
                    _T.hit = True
                    control.should_training_stop = True
                return control

        return _T()


def train(arm: str, a, out: Path, m0: Path, instr: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from llmrec.artifacts import write_json
    from llmrec.data_builders.instructions import load_instructions
    from llmrec.training.sft import (latest_checkpoint, prompt_settings, score_completion_only_on_cpu, sft_config,
                                     tokenize_examples, write_llmrec_files)

    final = out / "final"
    if (final / "train_report.json").is_file():
        return final
    torch.set_num_threads(a.threads)
    t0, c0 = time.time(), _cpu()
    dd, man = load_instructions(instr)
    tok = AutoTokenizer.from_pretrained(str(m0))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(m0), dtype=torch.float32)
    model.config.use_cache = False
    ds = tokenize_examples(dd["train"], tok, 256)
    n_tok = sum(len(x) for x in ds["input_ids"])
    recipe = {"output_dir": str(out / "train"), "seed": 0, "sft": {**SFT, "max_steps": a.max_steps},
              "data": {"max_length": 256}, "_path": __file__}
    args = sft_config(recipe, on_gpu=False, has_eval=False)
    limit = TimeLimit(a.time_limit)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[limit])
    score_completion_only_on_cpu()
    ck = latest_checkpoint(out / "train")
    t1, c1 = time.time(), _cpu()
    res = trainer.train(resume_from_checkpoint=str(ck) if ck else None)
    t2, c2 = time.time(), _cpu()
    final.mkdir(parents=True, exist_ok=True)
    trainer.model.config.use_cache = True
    trainer.save_model(str(final))
    tok.save_pretrained(str(final))
    write_llmrec_files(m0, final, prompt_settings(man), extra={"trained_with": "benchmarks/actionpiece_vs_rq.py"})
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    write_json(final / "train_report.json", {
        "arm": arm, "steps": res.global_step, "max_steps": a.max_steps, "time_limit_hit": type(limit).hit,
        "train_wall_s": round(t2 - t1, 1), "train_cpu_s": round(c2 - c1, 1), "setup_wall_s": round(t1 - t0, 1),
        "setup_cpu_s": round(c1 - c0, 1), "resumed_from": str(ck) if ck else None, "threads": a.threads,
        "n_examples": len(ds), "mean_tokens_per_example": round(n_tok / len(ds), 1),
        "examples_seen": res.global_step * SFT["per_device_train_batch_size"],
        "first_losses": losses[:3], "last_losses": losses[-3:], "sft": recipe["sft"], "model": MODEL})
    return final


def evaluate(a, final: Path, out: Path, segmentations: int = 1) -> dict:
    import torch

    from llmrec.data_builders import load_split
    from llmrec.eval.protocol import evaluate_ranked_lists
    from llmrec.inference.recommend import Recommender

    name = f"eval_q{segmentations}_u{a.users}_b{a.beams}.json"
    if (out / name).is_file():
        return json.loads((out / name).read_text())
    torch.set_num_threads(a.threads)
    split = load_split(a.data, "loo")
    test = split.test
    idx = np.sort(np.random.default_rng(a.seed).choice(len(test), size=min(a.users, len(test)), replace=False))
    hists = [list(map(int, test["history"].iloc[i])) for i in idx]
    targets = [int(test["target"].iloc[i]) for i in idx]
    t0, c0 = time.time(), _cpu()
    rec = Recommender.from_pretrained(final, device="cpu", dtype=torch.float32, batch_size=a.batch_size,
                                      segmentations=segmentations)
    recs = rec.recommend(hists, k=10, num_beams=a.beams, progress=True)
    res = evaluate_ranked_lists(targets, [r.items for r in recs], ks=(5, 10), n_items=split.n_items)
    m = {**{k: float(v) for k, v in res.metrics.items()}, "users": len(idx), "beams": a.beams,
         "segmentations": segmentations, "wall_s": round(time.time() - t0, 1), "cpu_s": round(_cpu() - c0, 1),
         "user_sample_seed": a.seed}
    (out / name).write_text(json.dumps(m, indent=2))
    return m


def report(a) -> None:
    root = Path(a.out)
    rows = []
    for arm in ("rq", "ap"):
        tr = root / arm / "final" / "train_report.json"
        if not tr.is_file():
            continue
        t = json.loads(tr.read_text())
        for ev in sorted((root / arm).glob(f"eval_q*_u{a.users}_b{a.beams}.json")):
            m = json.loads(ev.read_text())
            label = {"rq": "RQ-kmeans SIDs (3x256 + digit)", "ap": "ActionPiece"}[arm]
            if arm == "ap":
                label += f", q={m['segmentations']}" + (" (deterministic)" if m["segmentations"] == 1 else " fused")
            rows.append((label, t, m))
    print(f"{a.users} test users (sample seed {a.seed}), {a.beams} beams")
    print("| item tokenizer | R@5 | R@10 (95% CI) | N@5 | N@10 | steps | train wall / CPU s | eval wall / CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, t, m in rows:
        r, n = m["recall@10"], m["users"]
        half = 1.96 * (r * (1 - r) / n) ** 0.5  # binomial: recall@10 with one target is a hit rate
        print(f"| {label} | {m['recall@5']:.4f} | {r:.4f} ({r - half:.4f}-{r + half:.4f}) | {m['ndcg@5']:.4f} | "
              f"{m['ndcg@10']:.4f} | {t['steps']} | {t['train_wall_s']:.0f} / {t['train_cpu_s']:.0f} | "
              f"{m['wall_s']:.0f} / {m['cpu_s']:.0f} |")
    (root / "metrics.json").write_text(json.dumps([{"label": l, "train": t, "eval": m} for l, t, m in rows],
                                                  indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder with its loo split")
    p.add_argument("--rq-sids", required=True, help="RQ-kmeans SID folder")
    p.add_argument("--rq-instructions", default=None, help="existing instruction folder of --rq-sids built with "
                                                           "the same settings (else built under OUT/rq)")
    p.add_argument("--ap", required=True, help="ActionPiece folder (llmrec sid build --method actionpiece)")
    p.add_argument("--ap-instructions", default=None, help="existing instruction folder of --ap built by this script "
                                                           "(else built under OUT/ap)")
    p.add_argument("--out", required=True)
    p.add_argument("--arm", choices=("rq", "ap"), help="train and evaluate one arm")
    p.add_argument("--report", action="store_true", help="print the side-by-side table")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--time-limit", type=float, default=600, help="training stops after this many seconds (guard)")
    p.add_argument("--users", type=int, default=2000, help="random test users (fixed sample, --seed)")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--segmentations", type=int, default=1, help="ap: also evaluate with q fused segmentations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.arm:
        out = Path(a.out) / a.arm
        out.mkdir(parents=True, exist_ok=True)
        t0, c0 = time.time(), _cpu()
        instr = instructions(a.arm, a, out)
        m0 = model0(a.arm, a, out)
        print(f"[{a.arm}] inputs ready in {time.time() - t0:.0f} s wall / {_cpu() - c0:.0f} s CPU", flush=True)
        final = train(a.arm, a, out, m0, instr)
        print(f"[{a.arm}] trained: {json.loads((final / 'train_report.json').read_text())}", flush=True)
        for q in sorted({1, a.segmentations if a.arm == "ap" else 1}):
            print(f"[{a.arm}] q={q}: {evaluate(a, final, out, q)}", flush=True)
    if a.report or not a.arm:
        report(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
