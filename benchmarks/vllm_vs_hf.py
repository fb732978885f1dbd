"""vLLM vs transformers backends: same top-K lists? how many users/s at 50 beams? (+ the steps of scripts/gpu_check.sh)

    python benchmarks/vllm_vs_hf.py compare --model MODEL_DIR --data DATASET_DIR --users 512 --beams 50 --k 10
    python benchmarks/vllm_vs_hf.py prepare WORK_DIR        # small offline setup for scripts/gpu_check.sh
    python benchmarks/vllm_vs_hf.py table WORK_DIR          # the one table of scripts/gpu_check.sh

``compare`` decodes the same validation users with both backends (trie-constrained beam search, identical
prompts and trie, the same score definition: log-probabilities restricted to the catalog) and reports the mean
overlap of the two top-K lists, the share of identical lists, top-1 agreement and Recall@K of each, and users/s of
each (after a warm-up batch, CUDA synchronised). As a noise floor it also compares the transformers backend in
bf16 with itself in fp32 (``--fp32-reference``): two bf16 engines cannot agree more than bf16 agrees with fp32.
``--no-vllm`` runs the transformers side alone (e.g. on a CPU, to check the script).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(rec, hists, k, beams):
    rec.recommend(hists[: min(8, len(hists))], k=k, num_beams=beams)        # warm-up (kernels, caches, graphs)
    _sync()
    t0 = time.perf_counter()
    out = rec.recommend(hists, k=k, num_beams=beams)
    _sync()
    return [r.items for r in out], time.perf_counter() - t0


def _agreement(a: list[list[int]], b: list[list[int]], k: int) -> dict:
    ov = [len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)]
    return {"overlap@k": float(np.mean(ov)), "identical_lists": float(np.mean([x[:k] == y[:k] for x, y in zip(a, b)])),
            "top1_agree": float(np.mean([x[:1] == y[:1] for x, y in zip(a, b)]))}


def compare(args) -> dict:
    import torch

    from llmrec.data_builders import load_split
    from llmrec.eval import evaluate_ranked_lists
    from llmrec.inference.recommend import Recommender

    split = load_split(args.data, args.split)
    ex = split.valid.iloc[: args.users]
    hists = [list(map(int, h)) for h in ex["history"]]
    targets = ex["target"].astype(int).tolist()
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    res: dict = {"users": len(hists), "beams": args.beams, "k": args.k, "model": str(args.model), "device": dev}
    if dev == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    dtype = getattr(torch, args.dtype)
    hf = Recommender.from_pretrained(args.model, device=dev, dtype=dtype, batch_size=args.hf_batch_size)
    hf_lists, hf_s = _timed(hf, hists, args.k, args.beams)
    res["hf"] = {"seconds": round(hf_s, 3), "users_per_s": round(len(hists) / hf_s, 2), "dtype": args.dtype,
                 "batch_size": args.hf_batch_size,
                 "recall@k": evaluate_ranked_lists(targets, hf_lists, ks=(args.k,)).metrics[f"recall@{args.k}"]}
    if args.fp32_reference and dtype != torch.float32:
        ref = Recommender.from_pretrained(args.model, device=dev, dtype=torch.float32, batch_size=args.hf_batch_size)
        ref_lists, _ = _timed(ref, hists, args.k, args.beams)
        res["hf_bf16_vs_fp32"] = _agreement(hf_lists, ref_lists, args.k)
        del ref
    del hf
    if dev == "cuda":
        torch.cuda.empty_cache()
    if not args.no_vllm:
        from llmrec.inference.vllm_backend import vllm_recommender

        t0 = time.perf_counter()
        vr = vllm_recommender(args.model, batch_size=args.vllm_batch_size, max_beams=args.beams, dtype=args.dtype,
                              gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager)
        start_s = time.perf_counter() - t0
        v_lists, v_s = _timed(vr, hists, args.k, args.beams)
        res["vllm"] = {"seconds": round(v_s, 3), "users_per_s": round(len(hists) / v_s, 2), "startup_s":
                       round(start_s, 1), "batch_size": args.vllm_batch_size, "dtype": args.dtype,
                       "recall@k": evaluate_ranked_lists(targets, v_lists, ks=(args.k,)).metrics[f"recall@{args.k}"]}
        res["vllm_vs_hf"] = _agreement(v_lists, hf_lists, args.k)
        res["speedup"] = round(res["vllm"]["users_per_s"] / res["hf"]["users_per_s"], 2)
    return res


def print_compare(res: dict) -> None:
    k = res["k"]
    print(f"\n{res['users']} users, {res['beams']} beams, top-{k}, {res.get('gpu', res['device'])}")
    print(f"| backend | users/s | seconds | recall@{k} |")
    print("|---|---|---|---|")
    for name in ("hf", "vllm"):
        if name in res:
            r = res[name]
            print(f"| {name} ({r['dtype']}) | {r['users_per_s']} | {r['seconds']} | {r['recall@k']:.4f} |")
    for name in ("vllm_vs_hf", "hf_bf16_vs_fp32"):
        if name in res:
            a = res[name]
            print(f"{name}: overlap@{k} {a['overlap@k']:.4f}, identical lists {a['identical_lists']:.3f}, "
                  f"top-1 agreement {a['top1_agree']:.3f}")


# --------------------------------------------------------------------------------------------------------------
# scripts/gpu_check.sh steps
# --------------------------------------------------------------------------------------------------------------
def prepare(work: Path, users: int = 2000, items: int = 600) -> None:
    """Offline inputs: synthetic shop + LOO split, random collision-free SIDs, instruction data, a small
    Qwen3-architecture model extended with the SID tokens, and the recipes/accelerate configs of the check."""
    from llmrec.data_builders import SyntheticConfig, build_synthetic, load_dataset, split_dataset
    from llmrec.data_builders.instructions import InstructionConfig, build_instructions
    from llmrec.models.tiny import random_sid_table

    work.mkdir(parents=True, exist_ok=True)
    shop = work / "shop"
    if not (shop / "dataset.json").is_file():
        build_synthetic(shop, SyntheticConfig(n_users=users, n_items=items, seed=0), overwrite=True)
        split_dataset(shop, "loo")
    n = load_dataset(shop).n_items
    sid = work / "sid"
    if not (sid / "sids.parquet").is_file():
        sid.mkdir(exist_ok=True)
        random_sid_table(n, (32, 32), seed=0).save(sid)
    instr = work / "instructions"
    if not (instr / "instructions.json").is_file():
        build_instructions(shop, "loo", sid, instr, InstructionConfig(tasks=("seqrec",), max_history=10,
                                                                      template_mode="first", system_prompt=None),
                           overwrite=True)
    model0 = work / "model0"
    if not (model0 / "llmrec.json").is_file():
        # a small (not tiny) Qwen3 from a config: 4 layers of width 256, on a locally trained BPE tokenizer
        from llmrec.models.tiny import tiny_lm
        from llmrec.models.vocab import extend_model, save_extended
        from llmrec.tokenizers.sid_table import SidTable

        ds = load_dataset(shop)
        texts = [ds.titles[i] or ds.texts[i] for i in range(ds.n_items + 1)]
        model, tok = tiny_lm(None, texts=texts[1:], hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2)
        table = SidTable.load(sid)
        info = extend_model(model, tok, table, init="text", item_texts=texts, base_model="qwen3-from-config:4x256")
        save_extended(model0, model, tok, table, info, items=ds.items, overwrite=True, config={"gpu_check": True},
                      seed=0)
    common = {"seed": 0, "data": {"dataset": str(shop), "split": "loo", "instructions": str(instr),
                                  "max_length": 256}, "sids": str(sid), "model": {"base": str(model0)}}
    sft = {**common, "output_dir": str(work / "sft"), "peft": {"method": "full"},
           "sft": {"max_steps": 600, "per_device_train_batch_size": 64, "learning_rate": 3e-3,
                   "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "bf16": True, "logging_steps": 50,
                   "save_steps": 10_000, "report_to": "none"}, "eval": {"at": []}}
    lora = {**common, "output_dir": str(work / "sft-lora-zero2"),
            "model": {"base": str(work / "sft" / "final")},
            "peft": {"method": "lora", "r": 8, "alpha": 16, "train_embeddings": "full"},
            "sft": {"max_steps": 10, "per_device_train_batch_size": 32, "learning_rate": 1e-4, "bf16": True,
                    "logging_steps": 2, "save_steps": 10_000}, "eval": {"at": []}}
    grpo = {"method": "grpo", "output_dir": str(work / "grpo-lora-zero2"), "seed": 0,
            "model": {"path": str(work / "sft" / "final"), "dtype": "bfloat16"},
            "data": {"dataset": str(shop), "split": "loo", "max_examples": 256},
            "peft": {"method": "lora", "r": 8, "alpha": 16, "train_embeddings": "full"},
            "rollout": {"mode": "beam", "num_generations": 8, "beams": 16},
            "rewards": {"hit": 1.0, "rank": 1.0},
            "grpo": {"max_steps": 5, "per_device_train_batch_size": 32, "learning_rate": 5e-5, "bf16": True,
                     "logging_steps": 1, "save_steps": 10_000},
            "eval": {"before": True, "at": ["end"], "users": 256, "beams": 20, "k": [10], "batch_size": 64}}
    import yaml

    for name, r in (("sft.yaml", sft), ("sft-lora-zero2.yaml", lora), ("grpo-lora-zero2.yaml", grpo)):
        (work / name).write_text(yaml.safe_dump(r, sort_keys=False))
    ds_json = {"zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True,
                                     "reduce_bucket_size": "auto", "allgather_bucket_size": 5e8},
               "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
               "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "train_batch_size": "auto",
               "train_micro_batch_size_per_gpu": "auto", "zero_allow_untested_optimizer": True}
    (work / "ds_zero2.json").write_text(json.dumps(ds_json, indent=1))
    (work / "accelerate-zero2.yaml").write_text(yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "DEEPSPEED",
        "deepspeed_config": {"deepspeed_config_file": str(work / "ds_zero2.json"), "zero3_init_flag": False},
        "num_machines": 1, "num_processes": 1, "machine_rank": 0, "main_training_function": "main",
        "rdzv_backend": "static", "same_network": True, "use_cpu": False}, sort_keys=False))
    print(f"prepared {work}: {n} items, SIDs 32x32 (+digit), model0 = Qwen3 4x256")


def _last(log_history: list, key: str):
    vals = [h[key] for h in log_history if key in h]
    return vals[-1] if vals else None


def table(work: Path) -> int:
    """The one table of scripts/gpu_check.sh from the files its steps wrote; exit status 1 if a check failed."""
    rows = []
    status = 0
    t = {}
    tf = work / "timings.tsv"
    if tf.is_file():
        for line in tf.read_text().splitlines():
            name, sec, rc = line.split("\t")
            t[name] = (int(sec), int(rc))

    def row(name, what, result, key):
        nonlocal status
        sec, rc = t.get(key, (None, None))
        ok = "ok" if rc == 0 else ("FAILED" if rc is not None else "not run")
        if rc not in (0,):
            status = 1
        rows.append((name, what, result if rc == 0 else ok, f"{sec}" if sec is not None else "-", ok))

    def report(d):
        p = work / d / "final" / "train_report.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    pre = work / "prerequisites.txt"
    row("prerequisites", "GPU, CUDA torch, vllm, deepspeed, trl, peft", pre.read_text().strip()[:160]
        if pre.is_file() else "", "prerequisites")
    r = report("sft")
    row("SFT, full, bf16 (setup)", "small Qwen3 on the synthetic shop",
        f"{r.get('global_step')} steps, loss {r.get('train_loss', float('nan')):.3f}" if r else "", "sft")
    cmp_file = work / "compare.json"
    c = json.loads(cmp_file.read_text()) if cmp_file.is_file() else {}
    if c:
        k = c["k"]
        a = c.get("vllm_vs_hf", {})
        floor = c.get("hf_bf16_vs_fp32", {})
        row("vLLM vs transformers top-10", f"{c['users']} valid users, {c['beams']} beams",
            f"overlap@{k} {a.get('overlap@k', float('nan')):.4f}, identical "
            f"{a.get('identical_lists', float('nan')):.3f} (hf bf16 vs fp32: overlap "
            f"{floor.get('overlap@k', float('nan')):.4f})", "compare")
        row(f"throughput @{c['beams']} beams", f"users/s, {c.get('gpu', c['device'])}",
            f"hf {c['hf']['users_per_s']}, vllm {c.get('vllm', {}).get('users_per_s')} "
            f"(x{c.get('speedup')}; vLLM start {c.get('vllm', {}).get('startup_s')} s)", "compare")
    else:
        row("vLLM vs transformers top-10", "", "", "compare")
    big = work / "compare-0.5b.json"
    if big.is_file():
        b = json.loads(big.read_text())
        row(f"throughput @{b['beams']} beams, 0.5B shape", "random Qwen2.5-0.5B-shaped model",
            f"hf {b['hf']['users_per_s']}, vllm {b.get('vllm', {}).get('users_per_s')} (x{b.get('speedup')})",
            "compare-0.5b")
    r = report("sft-lora-zero2")
    row("LoRA SFT, bf16, DeepSpeed ZeRO-2", "accelerate launch -m llmrec.train",
        f"{r.get('global_step')} steps, loss {r.get('train_loss', float('nan')):.3f}" if r else "", "sft-lora-zero2")
    r = report("grpo-lora-zero2")
    if r:
        lh = r.get("log_history", [])
        ev = r.get("eval", [])
        res = (f"{r.get('global_step')} steps, reward {_last(lh, 'reward')}, zero-adv groups "
               f"{_last(lh, 'frac_reward_zero_std')}, R@10 {ev[0].get('recall@10') if ev else '?'} -> "
               f"{ev[-1].get('recall@10') if ev else '?'}")
    else:
        res = ""
    row("GRPO, LoRA, bf16, DeepSpeed ZeRO-2", "accelerate launch -m llmrec.rl", res, "grpo-lora-zero2")
    print("\n| check | setting | result | seconds | status |")
    print("|---|---|---|---|---|")
    for name, what, result, sec, ok in rows:
        print(f"| {name} | {what} | {result} | {sec} | {ok} |")
    total = sum(s for s, _ in t.values())
    print(f"\ntotal {total} s; {'ALL CHECKS PASSED' if status == 0 else 'SOME CHECKS FAILED'}")
    return status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="same top-K lists and users/s of both backends")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--split", default="loo")
    c.add_argument("--users", type=int, default=512)
    c.add_argument("--beams", type=int, default=50)
    c.add_argument("--k", type=int, default=10)
    c.add_argument("--dtype", default="bfloat16")
    c.add_argument("--device")
    c.add_argument("--hf-batch-size", type=int, default=32)
    c.add_argument("--vllm-batch-size", type=int, default=512)
    c.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    c.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs (faster start)")
    c.add_argument("--fp32-reference", action="store_true", help="also compare hf bf16 with hf fp32 (noise floor)")
    c.add_argument("--no-vllm", action="store_true")
    c.add_argument("--out")
    pr = sub.add_parser("prepare")
    pr.add_argument("work")
    tb = sub.add_parser("table")
    tb.add_argument("work")
    s = sub.add_parser("shape-0.5b", help="a random Qwen2.5-0.5B-shaped model with the check's SID tokens")
    s.add_argument("work")
    args = p.parse_args(argv)
    if args.cmd == "compare":
        res = compare(args)
        print_compare(res)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
        return 0
    if args.cmd == "prepare":
        prepare(Path(args.work))
        return 0
    if args.cmd == "shape-0.5b":
        shape_05b(Path(args.work))
        return 0
    return table(Path(args.work))


def shape_05b(work: Path) -> None:
    """A randomly initialised model of Qwen2.5-0.5B's shape (24 layers, width 896, 14/2 heads) on the check's
    tokenizer and SIDs: throughput of a realistic size (its rankings are meaningless)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from llmrec.models.vocab import load_items, read_info, save_extended
    from llmrec.tokenizers.sid_table import SidTable

    src = work / "sft" / "final"
    tok = AutoTokenizer.from_pretrained(str(src))
    info = read_info(src)
    cfg = Qwen2Config(vocab_size=len(tok) + (-len(tok)) % 64, hidden_size=896, intermediate_size=4864,
                      num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=True, torch_dtype="bfloat16")
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    for c in (m.config, m.generation_config):
        c.pad_token_id, c.eos_token_id = tok.pad_token_id, tok.eos_token_id
    save_extended(work / "shape-0.5b", m, tok, SidTable.load(src / "sid"), info, items=load_items(src),
                  overwrite=True, config={"gpu_check": "qwen2.5-0.5b shape, random"}, seed=0)


if __name__ == "__main__":
    raise SystemExit(main())
