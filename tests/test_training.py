"""Training recipes: real `accelerate launch` runs of recipes/tiny-cpu.yaml (1 and 2 CPU processes), resume after
a killed run, QLoRA / LoRA paths, recipe validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrec.errors import LlmrecError
from llmrec.training.recipe import load_recipe, resolve_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny-cpu.yaml"
ACCEL = ROOT / "recipes" / "accelerate"


@pytest.fixture(scope="session")
def tiny_inputs(synthetic_dataset, tmp_path_factory):
    """SIDs + a small instruction set for the synthetic shop (no embedding model needed)."""
    from llmrec.data_builders import load_dataset
    from llmrec.data_builders.instructions import InstructionConfig, build_instructions
    from llmrec.models.tiny import random_sid_table

    d = tmp_path_factory.mktemp("tiny_inputs")
    table = random_sid_table(load_dataset(synthetic_dataset).n_items, sizes=(16, 16), seed=0)
    (d / "sids").mkdir()
    table.save(d / "sids")
    build_instructions(synthetic_dataset, "loo", d / "sids", d / "instr",
                       InstructionConfig(tasks=("seqrec", "title2sid"), ratios={"seqrec": 0.3}, max_history=10,
                                         template_mode="first", system_prompt=None))
    return {"dataset": str(synthetic_dataset), "sids": str(d / "sids"), "instr": str(d / "instr")}


def _overrides(inp, out, **extra) -> list[str]:
    o = {"output_dir": out, "data.dataset": inp["dataset"], "data.instructions": inp["instr"], "sids": inp["sids"],
         "sft.max_steps": 6, "sft.save_steps": 3, "sft.logging_steps": 1, "sft.per_device_train_batch_size": 8,
         "eval.at": "[end]", "eval.users": 24, "eval.beams": 5, "eval.k": "[5]"}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_USE_CPU", None)  # the entry point must get CPU right by itself
    return env


def _launch(args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", *args] if accelerate.exists() else \
        [sys.executable, "-m", "accelerate.commands.launch", *args]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _python_train(overrides: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmrec.train", str(RECIPE), *overrides], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _report(out: Path) -> dict:
    return json.loads((out / "final" / "train_report.json").read_text())


def _losses(report: dict) -> list[tuple[int, float]]:
    return [(h["step"], round(h["loss"], 5)) for h in report["log_history"] if "loss" in h]


def _ok(p: subprocess.CompletedProcess):
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]


@pytest.mark.slow
def test_accelerate_launch_tiny_cpu_one_and_two_processes_and_resume(tiny_inputs, tmp_path):
    from llmrec.inference.recommend import Recommender

    # 1 process, through accelerate launch with the one-process CPU config
    ref = tmp_path / "one"
    _ok(_launch(["--config_file", str(ACCEL / "cpu.yaml"), "-m", "llmrec.train", str(RECIPE),
                 *_overrides(tiny_inputs, ref)]))
    rep = _report(ref)
    assert rep["num_processes"] == 1 and rep["global_step"] == 6
    ev = json.loads((ref / "eval" / "step-6.json").read_text())
    assert ev["n_users"] == 24 and ev["invalid_rate"] == 0.0 and 0.0 <= ev["recall@5"] <= 1.0
    assert (ref / "checkpoint-3" / "llmrec.json").is_file()          # every checkpoint loads on its own
    rec = Recommender.from_pretrained(ref / "final", device="cpu")
    assert rec.prompt_cfg["system"] is None and rec.prompt_cfg["max_history"] == 10  # from the instruction data
    # the prompt inference builds for a history is byte-identical to the one the model was trained on
    from llmrec.data_builders.instructions import load_instructions
    from llmrec.data_builders.prompts import prompt_text
    dd, _ = load_instructions(tiny_inputs["instr"])
    ex = next(x for x in dd["train"] if x["task"] == "seqrec" and len(x["history"]) > 2)
    assert rec.history_prompt(ex["history"]) == prompt_text(rec.tokenizer, ex["messages"])
    out = rec.recommend([[1, 2, 3], [5]], k=5, num_beams=5)
    assert all(len(r.items) == 5 and len(set(r.items)) == 5 for r in out)
    assert all(1 <= i <= rec.sid_table.n_items for r in out for i in r.items)

    # 2 CPU processes (gloo DDP): one optimizer step consumes both processes' batches
    two = tmp_path / "two"
    _ok(_launch(["--config_file", str(ACCEL / "cpu-2proc.yaml"), "-m", "llmrec.train", str(RECIPE),
                 *_overrides(tiny_inputs, two, **{"sft.max_steps": 3, "sft.save_steps": 100})]))
    rep2 = _report(two)
    assert rep2["num_processes"] == 2 and rep2["global_step"] == 3
    tokens1 = next(h["num_tokens"] for h in rep["log_history"] if h.get("step") == 3 and "num_tokens" in h)
    tokens2 = next(h["num_tokens"] for h in rep2["log_history"] if h.get("step") == 3 and "num_tokens" in h)
    assert tokens2 > 1.5 * tokens1                                      # twice the examples per step
    assert (two / "eval" / "step-3.json").is_file()

    # resume: kill the run right after the step-3 checkpoint, relaunch, and land on the uninterrupted result
    res = tmp_path / "resume"
    p = _python_train(_overrides(tiny_inputs, res, interrupt_after_step=3))
    assert p.returncode != 0 and (res / "checkpoint-3" / "optimizer.pt").is_file()
    assert not (res / "final").exists() and not (res / "checkpoint-6").exists()
    _ok(_python_train(_overrides(tiny_inputs, res)))
    rep3 = _report(res)
    assert rep3["resumed_from"].endswith("checkpoint-3") and rep3["global_step"] == 6
    assert _losses(rep3) == _losses(rep)                               # steps 4-6 continue, not restart
    from safetensors.numpy import load_file
    a, b = load_file(str(ref / "final" / "model.safetensors")), load_file(str(res / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5    # optimizer state + data order restored


def test_qlora_without_bitsandbytes_says_how_to_install(monkeypatch):
    from llmrec.training.sft import bitsandbytes_config

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(LlmrecError, match="pip install 'llmrec\\[gpu\\]'"):
        bitsandbytes_config({"bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16",
                             "bnb_4bit_use_double_quant": True}, on_gpu=False)


@pytest.mark.slow
def test_lora_sid_rows_and_qlora_train_in_process(tiny_inputs, tmp_path):
    from safetensors.numpy import load_file

    from llmrec.models.vocab import load_extended
    from llmrec.training.sft import train

    base = _overrides(tiny_inputs, tmp_path / "lora", **{"sft.max_steps": 2, "eval.users": 8})
    final = train(load_recipe(RECIPE, base + ["peft.method=lora", "peft.train_embeddings=sid_rows",
                                              "sft.learning_rate=0.01"]))
    model, tok, table, _ = load_extended(final, device="cpu")
    assert type(model).__name__ == "Qwen3ForCausalLM"                   # merged: a plain model folder
    assert (final / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "eval" / "step-2.json").is_file()     # evaluation of a PEFT-wrapped model
    a = load_file(str(tmp_path / "lora" / "model0" / "model.safetensors"))["model.embed_tokens.weight"]
    b = load_file(str(final / "model.safetensors"))["model.embed_tokens.weight"]
    sid = tok.convert_tokens_to_ids(table.vocabulary())
    other = np.setdiff1d(np.arange(len(a)), sid)
    assert np.abs(a[sid] - b[sid]).max() > 0                            # SID rows trained
    assert np.abs(a[other] - b[other]).max() == 0                       # every other row untouched

    pytest.importorskip("bitsandbytes")
    q = tmp_path / "qlora"
    final = train(load_recipe(RECIPE, _overrides(tiny_inputs, q, **{"sft.max_steps": 2, "eval.users": 8})
                              + ["peft.method=qlora"]))
    model, *_ = load_extended(final, device="cpu")
    assert model.dtype.is_floating_point and _report(q)["global_step"] == 2
    # constrained-beam evaluation ran on the 4-bit model with its bf16 adapter (mixed dtypes)
    assert json.loads((q / "eval" / "step-2.json").read_text())["invalid_rate"] == 0.0


def test_recipe_validation(tmp_path, monkeypatch):
    r = load_recipe(RECIPE, ["sft.max_steps=7", "eval.at=[0.5,end]", "peft.method=lora"])
    assert r["sft"]["max_steps"] == 7 and r["eval"]["at"] == [0.5, "end"] and r["peft"]["method"] == "lora"
    assert r["model"]["config"]["hidden_size"] > 0 and r["vocab"]["init"] == "mean"
    with pytest.raises(LlmrecError, match="unknown key"):
        load_recipe(RECIPE, ["peft.rank=8"])
    with pytest.raises(LlmrecError, match="peft.method"):
        load_recipe(RECIPE, ["peft.method=dora"])
    with pytest.raises(LlmrecError, match="exactly one of base"):
        load_recipe(RECIPE, ["model.base=Qwen/Qwen3-0.6B"])
    with pytest.raises(LlmrecError, match="KEY=VALUE"):
        load_recipe(RECIPE, ["sft.max_steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nmodle: {}\n")
    with pytest.raises(LlmrecError, match="modle"):
        load_recipe(bad)
    # ${ENV} expansion and tokenizer fallbacks
    monkeypatch.delenv("LLMREC_NOPE", raising=False)
    assert resolve_tokenizer(["${LLMREC_NOPE}/qwen3-tokenizer", "fallback"]) is None
    monkeypatch.setenv("LLMREC_TOK", str(tmp_path))
    r = load_recipe(RECIPE, ["model.tokenizer=[${LLMREC_TOK}, fallback]"])
    assert resolve_tokenizer(r["model"]["tokenizer"]) == str(tmp_path)
    assert resolve_tokenizer("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    with pytest.raises(LlmrecError, match="none of"):
        resolve_tokenizer([str(tmp_path / "missing" / "tok")])


def test_recipes_parse_and_name_their_parts():
    """Every shipped recipe loads, and its file name says dataset/model/method/devices."""
    import yaml

    from llmrec.training.rl_common import load_rl_recipe

    recipes = sorted(p for p in (ROOT / "recipes").rglob("*.yaml")
                     if "accelerate" not in p.parts and "baselines" not in p.parts)
    assert len(recipes) >= 9
    for p in recipes:
        rl = "method" in yaml.safe_load(p.read_text())  # RL recipes name their method at the top level
        r = load_rl_recipe(p) if rl else load_recipe(p)
        if p.parent.name == "recipes":
            continue
        if rl:
            assert r["method"] in p.stem, p
            continue
        dataset, name = p.parent.name, p.stem
        model, method, devices = name.rsplit("_", 2)
        assert r["peft"]["method"] == method, p
        assert devices in ("cpu", "1gpu", "8gpu"), p
        assert dataset in str(r["data"]["dataset"]).lower() or dataset in str(r["output_dir"]), p
    for cfg in (ACCEL).glob("*.yaml"):
        assert yaml.safe_load(cfg.read_text())["distributed_type"], cfg


def test_cpu_compact_head_gives_identical_loss_and_gradients():
    """The CPU patch of TRL's fused LM head (score answer positions only) changes cost, not results."""
    import torch
    import trl.trainer.utils as tu

    from llmrec.models.tiny import tiny_qwen3
    from llmrec.training.sft import score_completion_only_on_cpu

    torch.manual_seed(0)
    ids = torch.randint(0, 300, (3, 40))
    labels = torch.full_like(ids, -100)
    labels[:, 33:] = ids[:, 33:]                                    # a short answer at the end, as in SFT data
    labels[2, 20:] = -100                                           # and a row whose answer was padded away
    results = []
    orig = tu._use_triton
    try:
        for compact in (False, True):
            tu._use_triton = orig
            if compact:
                score_completion_only_on_cpu()
                assert tu._use_triton(torch.device("cpu"))
            model = tiny_qwen3(300, hidden_size=32, num_heads=2, num_kv_heads=1, seed=0).train()
            tu.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
            out.loss.backward()
            results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    finally:
        tu._use_triton = orig
    (l0, g0), (l1, g1) = results
    assert torch.allclose(l0, l1, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))


def test_special_sid_tokens_are_refused():
    from llmrec.models.tiny import random_sid_table, train_fallback_tokenizer
    from llmrec.models.vocab import LmInfo
    from llmrec.training.sft import check_sids_survive_decoding

    table = random_sid_table(20, sizes=(4, 4), seed=0)
    info = LmInfo(base_model="x", levels=table.levels, codebook_sizes=table.codebook_sizes, letters="abc",
                  n_items=20)
    good = train_fallback_tokenizer(["a few words"], vocab_size=300)
    good.add_tokens(table.vocabulary(), special_tokens=False)
    check_sids_survive_decoding(good, table, info)
    bad = train_fallback_tokenizer(["a few words"], vocab_size=300)
    bad.add_tokens(table.vocabulary(), special_tokens=True)
    with pytest.raises(LlmrecError, match="special tokens"):
        check_sids_survive_decoding(bad, table, info)
    plain = train_fallback_tokenizer(["a few words"], vocab_size=300)
    with pytest.raises(LlmrecError, match="splits SID"):
        check_sids_survive_decoding(plain, table, info)
