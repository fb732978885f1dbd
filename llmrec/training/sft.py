"""Supervised fine-tuning of a SID-extended causal LM on instruction data, with TRL.

``train(recipe)`` does, in order (every step idempotent, so a relaunch continues where the last one stopped):

1. ``prepare``: build missing inputs (synthetic shop, item embeddings, SIDs, instruction data), main process first;
2. ``model0``: extend the base model (hub/folder, or a from-scratch Qwen3 from ``model.config``) with the SID
   tokens and save it as ``OUTPUT_DIR/model0`` (skipped when ``model.base`` is already an extended folder);
3. tokenize: prompt = :func:`~llmrec.data_builders.prompts.prompt_text`, completion =
   :func:`~llmrec.data_builders.prompts.completion_text`, tokenized separately and concatenated, so the ids a
   model trains on start with exactly the ids inference feeds it; loss on the completion only;
4. train with ``trl.SFTTrainer`` (full, LoRA with trainable embedding rows, or QLoRA), checkpoints in
   ``OUTPUT_DIR/checkpoint-N`` (each loadable with ``load_extended``), resume from the newest by default,
   constrained-beam evaluation on validation users at the steps ``eval.at`` names;
5. ``OUTPUT_DIR/final``: the trained (merged) model + tokenizer + SID table + ``llmrec.json`` (prompt settings
   of the instruction data) + ``train_report.json``.

Run it as ``accelerate launch [--config_file recipes/accelerate/...] -m llmrec.train RECIPE.yaml [key=value]``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np

from llmrec.artifacts import file_hashes, make_manifest, read_json, write_json
from llmrec.errors import LlmrecError
from llmrec.training.recipe import resolve_tokenizer

log = logging.getLogger(__name__)

MODEL0 = "model0"
FINAL = "final"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _is_extended(path) -> bool:
    from llmrec.models.vocab import INFO_FILE

    return path is not None and (Path(path) / INFO_FILE).is_file()


# --------------------------------------------------------------------------------------------------------------
# 1. inputs
# --------------------------------------------------------------------------------------------------------------
def prepare_inputs(recipe: dict) -> None:
    """Build whatever the recipe names but is missing. Call on the main process first (idempotent)."""
    from llmrec.data_builders import SyntheticConfig, build_synthetic, split_dataset

    data, prep = recipe["data"], recipe["prepare"]
    ds = data["dataset"]
    if prep.get("synthetic") is not None and ds and not (Path(ds) / "dataset.json").is_file():
        cfg = dict(prep["synthetic"] or {})
        cfg = SyntheticConfig(n_users=int(cfg.pop("users", 600)), n_items=int(cfg.pop("items", 150)),
                              seed=int(cfg.pop("seed", recipe["seed"])), **cfg)
        log.info("prepare: synthetic shop -> %s", ds)
        build_synthetic(ds, cfg)
    if ds and data["split"] and not (Path(ds) / "splits" / data["split"]).is_dir():
        if not (Path(ds) / "dataset.json").is_file():
            raise LlmrecError(f"data.dataset {ds}: not a dataset folder (build it with `llmrec data build`)")
        split_dataset(ds, data["split"])
    sids = recipe["sids"]
    if prep.get("sid") is not None and sids and not (Path(sids) / "sids.parquet").is_file():
        sid_cfg = dict(prep["sid"] or {})
        emb = sid_cfg.pop("embeddings", None) or str(Path(sids).parent / "embeddings")
        if not (Path(emb) / "embeddings.npy").is_file():
            from llmrec.data_builders.embeddings import EmbedConfig, embed_items

            emb_cfg = dict(prep.get("embeddings") or {})
            log.info("prepare: item embeddings -> %s", emb)
            embed_items(ds, emb, EmbedConfig(**emb_cfg))
        from llmrec.tokenizers.build import build_sids

        log.info("prepare: SIDs -> %s", sids)
        build_sids(emb, out=sids, plots=False, seed=int(sid_cfg.pop("seed", recipe["seed"])), **sid_cfg)
    instr = data["instructions"]
    if data.get("build") is not None and not (Path(instr) / "instructions.json").is_file():
        from llmrec.data_builders.instructions import InstructionConfig, build_instructions

        if not (ds and sids):
            raise LlmrecError("data.build needs data.dataset and sids")
        bcfg = dict(data["build"] or {})
        bcfg.setdefault("seed", recipe["seed"])
        log.info("prepare: instruction data -> %s", instr)
        build_instructions(ds, data["split"], sids, instr, InstructionConfig(**bcfg))
    if not (Path(instr) / "instructions.json").is_file():
        raise LlmrecError(f"data.instructions {instr}: not an instruction folder (build it with `llmrec "
                          "instructions build`, or give data.build in the recipe)")


# --------------------------------------------------------------------------------------------------------------
# 2. the extended starting model
# --------------------------------------------------------------------------------------------------------------
def model0_path(recipe: dict) -> Path:
    base = recipe["model"]["base"]
    return Path(base) if _is_extended(base) else Path(recipe["output_dir"]) / MODEL0


def build_model0(recipe: dict) -> Path:
    """Extend the base model with the recipe's SIDs into ``OUTPUT_DIR/model0`` (once)."""
    from llmrec.models.vocab import extend_model, extend_pretrained, save_extended
    from llmrec.tokenizers.sid_table import SidTable

    out = model0_path(recipe)
    if _is_extended(out):
        return out
    m, v = recipe["model"], recipe["vocab"]
    sids = _sid_dir(recipe)
    if m["config"] is not None:
        from llmrec.data_builders.dataset import load_dataset
        from llmrec.models.tiny import load_lm_tokenizer, tiny_qwen3

        ds = load_dataset(recipe["data"]["dataset"]) if recipe["data"]["dataset"] else None
        titles = [t for t in ds.titles[1:] if t] if ds is not None else None
        tok_path = resolve_tokenizer(m["tokenizer"])
        tok = load_lm_tokenizer(tok_path, texts=titles, vocab_size=int(m["tokenizer_vocab_size"]))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        cfg = dict(m["config"])
        cfg.pop("architecture", None)
        model = tiny_qwen3(len(tok), seed=recipe["seed"], **cfg)
        for c in (model.config, model.generation_config):
            c.pad_token_id, c.eos_token_id = tok.pad_token_id, tok.eos_token_id
        table = SidTable.load(sids)
        texts = None
        if v["init"] != "mean":
            if ds is None:
                raise LlmrecError(f"vocab.init {v['init']} needs data.dataset (item texts)")
            texts = [ds.titles[i] or ds.texts[i] for i in range(ds.n_items + 1)]
        info = extend_model(model, tok, table, wrap=v["wrap"], init=v["init"], item_texts=texts,
                            pad_to_multiple_of=v["pad_to_multiple_of"],
                            base_model=f"qwen3-from-config:{json.dumps(cfg, sort_keys=True)}")
        save_extended(out, model, tok, table, info, items=ds.items if ds is not None else None, overwrite=True,
                      config={"model": m, "vocab": v, "tokenizer": tok_path or "fallback-bpe"},
                      inputs=file_hashes([Path(sids) / "sids.parquet"]), seed=recipe["seed"])
    else:
        extend_pretrained(m["base"], sids, out, init=v["init"], wrap=v["wrap"], data=recipe["data"]["dataset"],
                          dtype=m["dtype"], pad_to_multiple_of=v["pad_to_multiple_of"], overwrite=True,
                          trust_remote_code=m["trust_remote_code"], tokenizer=resolve_tokenizer(m["tokenizer"]))
    log.info("extended model -> %s", out)
    return out


def _sid_dir(recipe: dict) -> Path:
    """The SID folder: ``sids`` from the recipe, else the table stored with the instruction data."""
    s = recipe["sids"] or recipe["data"]["instructions"]
    p = Path(s)
    if p.is_file():  # an index.json: the instruction folder holds the matched table
        p = Path(recipe["data"]["instructions"])
    if not (p / "sids.parquet").is_file():
        raise LlmrecError(f"{p}: no sids.parquet (set `sids:` to a SID folder)")
    return p


def check_compatible(instr_dir: Path, model_dir: Path) -> dict:
    """The instruction data must be rendered with the model's SID table and wrapping; returns its manifest."""
    from llmrec.models.vocab import SID_SUBDIR, read_info
    from llmrec.tokenizers.sid_table import SidTable

    man = read_json(instr_dir / "instructions.json")
    info = read_info(model_dir)
    a, b = SidTable.load(instr_dir), SidTable.load(model_dir / SID_SUBDIR)
    if a.codes.shape != b.codes.shape or not np.array_equal(a.codes, b.codes):
        raise LlmrecError(f"{instr_dir} was rendered with another SID table than {model_dir}/{SID_SUBDIR} "
                          "(rebuild the instructions with the model's --sids)")
    if bool(man.get("sid_wrap", False)) != bool(info.wrap):
        raise LlmrecError(f"{instr_dir}: SIDs {'are' if man.get('sid_wrap') else 'are not'} wrapped but the model "
                          f"was extended {'with' if info.wrap else 'without'} --wrap; rebuild one to match")
    return man


# --------------------------------------------------------------------------------------------------------------
# 3. tokenization
# --------------------------------------------------------------------------------------------------------------
def tokenize_examples(dataset, tokenizer, max_length: int | None, num_proc: int | None = None):
    """``input_ids`` = prompt ids + completion ids, ``completion_mask`` marks the completion; examples longer
    than ``max_length`` are dropped (truncating would cut the answer or break the chat template)."""
    from llmrec.data_builders.prompts import completion_text, prompt_text

    def fn(batch):
        prompts = [prompt_text(tokenizer, m) for m in batch["messages"]]
        comps = [completion_text(tokenizer, m) for m in batch["messages"]]
        p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        c = tokenizer(comps, add_special_tokens=False)["input_ids"]
        return {"input_ids": [a + b for a, b in zip(p, c)],
                "completion_mask": [[0] * len(a) + [1] * len(b) for a, b in zip(p, c)]}

    out = dataset.map(fn, batched=True, batch_size=1000, remove_columns=dataset.column_names, num_proc=num_proc,
                      desc="tokenizing")
    if max_length:
        n = len(out)
        out = out.filter(lambda x: len(x["input_ids"]) <= max_length, num_proc=num_proc)
        if len(out) < n:
            log.warning("dropped %d of %d examples longer than data.max_length=%d tokens", n - len(out), n,
                        max_length)
    return out


# --------------------------------------------------------------------------------------------------------------
# 4. model, PEFT, trainer
# --------------------------------------------------------------------------------------------------------------
def _torch_dtype(name, on_gpu: bool):
    import torch

    if not on_gpu:
        return torch.float32  # CPU training in fp32 (bf16 matmuls are slow and lossy on CPU)
    if name in (None, "auto"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def bitsandbytes_config(peft: dict, on_gpu: bool):
    """The 4-bit quantization config of QLoRA; bitsandbytes is imported here only."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LlmrecError("peft.method qlora needs bitsandbytes: pip install 'llmrec[gpu]' "
                          "(or pip install bitsandbytes>=0.50)") from None
    from transformers import BitsAndBytesConfig

    compute = getattr(torch, peft["bnb_4bit_compute_dtype"]) if on_gpu else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=peft["bnb_4bit_quant_type"],
                              bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=bool(peft["bnb_4bit_use_double_quant"]),
                              llm_int8_skip_modules=["lm_head", "embed_tokens"])


def load_model(model_dir: Path, recipe: dict, on_gpu: bool):
    """``(model, tokenizer, sid_table, info)`` ready for training (4-bit for QLoRA)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrec.models.vocab import SID_SUBDIR, read_info
    from llmrec.tokenizers.sid_table import SidTable

    m, peft = recipe["model"], recipe["peft"]
    kw: dict = {"dtype": _torch_dtype(m["dtype"], on_gpu), "trust_remote_code": m["trust_remote_code"]}
    if m["attn_implementation"]:
        kw["attn_implementation"] = m["attn_implementation"]
    if peft["method"] == "qlora":
        from accelerate import PartialState

        kw["quantization_config"] = bitsandbytes_config(peft, on_gpu)
        kw["device_map"] = {"": PartialState().local_process_index if on_gpu else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kw)
    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=m["trust_remote_code"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.use_cache = False
    return model, tok, SidTable.load(model_dir / SID_SUBDIR), read_info(model_dir)


def peft_config(recipe: dict, sid_token_ids: list[int], tied: bool):
    """LoRA config with trainable embedding rows (all of them, or only the SID rows), or None for full FT."""
    p = recipe["peft"]
    if p["method"] == "full":
        return None
    from peft import LoraConfig

    kw = dict(r=int(p["r"]), lora_alpha=int(p["alpha"]), lora_dropout=float(p["dropout"]),
              target_modules=p["target_modules"], task_type="CAUSAL_LM")
    if tied and p["train_embeddings"] == "full":  # keep input and output embeddings one matrix
        kw["ensure_weight_tying"] = True
    if p["train_embeddings"] == "full":
        kw["modules_to_save"] = ["embed_tokens", "lm_head"]
    elif p["train_embeddings"] == "sid_rows":
        kw["trainable_token_indices"] = {"embed_tokens": list(sid_token_ids)}
        if not tied:
            log.warning("peft.train_embeddings sid_rows: this model's output embeddings are untied, their SID rows "
                        "stay at their initial values; use train_embeddings: full to train them")
    else:
        log.warning("peft.train_embeddings none: the new SID embedding rows will not be trained")
    return LoraConfig(**kw)


def sft_config(recipe: dict, on_gpu: bool, has_eval: bool):
    from trl import SFTConfig

    run_dir = Path(recipe["output_dir"])
    kw = {"output_dir": str(run_dir), "seed": int(recipe["seed"]), "data_seed": int(recipe["seed"]),
          "report_to": "none", "logging_steps": 10, "save_strategy": "steps", "save_steps": 500,
          "save_total_limit": 3, "per_device_train_batch_size": 16, "learning_rate": 2e-4,
          "lr_scheduler_type": "cosine", "warmup_steps": 0.03, "num_train_epochs": 1,
          "gradient_checkpointing": False, "dataloader_num_workers": 0, "ddp_find_unused_parameters": False}
    kw["completion_only_loss"] = True  # the answer only; false also trains on the prompt (e.g. the history SIDs)
    kw.update(recipe["sft"])
    kw["max_length"] = recipe["data"]["max_length"]
    kw.setdefault("eval_strategy", "no")
    if not has_eval:
        kw["eval_strategy"] = "no"
    if not on_gpu:
        kw.update(use_cpu=True, bf16=False, fp16=False)
        if kw.get("optim", "").endswith(("8bit", "paged_adamw_32bit")):
            log.warning("optimizer %s needs a GPU; using adamw_torch on CPU", kw["optim"])
            kw["optim"] = "adamw_torch"
    try:
        return SFTConfig(**kw)
    except TypeError as e:
        raise LlmrecError(f"{recipe['_path']}, section 'sft': {e} (fields are those of trl.SFTConfig)") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    cks = [p for p in Path(run_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
           and (p / "trainer_state.json").is_file()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1])) if cks else None


def _resume_arg(recipe: dict):
    r = recipe["resume"]
    if r in (False, None, "false", "no"):
        return None
    if r in (True, "auto", "true", "latest"):
        ck = latest_checkpoint(Path(recipe["output_dir"]))
        return str(ck) if ck else None
    if not (Path(r) / "trainer_state.json").is_file():
        raise LlmrecError(f"resume: {r} is not a checkpoint folder (no trainer_state.json)")
    return str(r)


def check_sids_survive_decoding(tokenizer, table, info) -> None:
    """TRL (and most generation code) decodes with ``skip_special_tokens=True``: SID tokens registered as *special*
    tokens vanish there (GRPO rewards silently become 0). Refuse such a tokenizer before training on it."""
    sid = info.item_text(table, 1)
    ids = tokenizer(sid, add_special_tokens=False)["input_ids"]
    if len(ids) != len(info.item_tokens(table, 1)):
        raise LlmrecError(f"the tokenizer splits SID {sid!r} into {len(ids)} tokens; extend the model with "
                          "`llmrec model extend` (one token per SID code)")
    if tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") != sid:
        raise LlmrecError(f"SID tokens are special tokens in this tokenizer: {sid!r} disappears when decoded with "
                          "skip_special_tokens=True (as TRL does); re-extend the model with llmrec, which adds them "
                          "as normal tokens")


def prompt_settings(manifest: dict) -> dict:
    """``llmrec.json`` ``prompt`` for a model trained on the instruction data described by ``manifest``."""
    from llmrec.data_builders.prompts import SYSTEM_PROMPT

    cfg = manifest.get("config", {})
    system = manifest.get("system_prompt", SYSTEM_PROMPT)
    return {"task": "seqrec", "template": 0, "max_history": int(cfg.get("max_history", 20)),
            "system": "default" if system == SYSTEM_PROMPT else system,
            "chat_task": "itemsearch", "chat_history_task": "prefsearch"}


def write_llmrec_files(model0: Path, dst: Path, prompt: dict, extra: dict | None = None) -> None:
    """Copy the SID table / items / llmrec.json of ``model0`` into ``dst`` with the trained prompt settings."""
    from llmrec.models.vocab import INFO_FILE, copy_llmrec_files

    copy_llmrec_files(model0, dst)
    info = read_json(dst / INFO_FILE)
    info["prompt"] = {**info.get("prompt", {}), **prompt}
    if extra:
        info.setdefault("extra", {}).update(extra)
    write_json(dst / INFO_FILE, info)


# --------------------------------------------------------------------------------------------------------------
# 5. the whole run
# --------------------------------------------------------------------------------------------------------------
def train(recipe: dict) -> Path:
    """Run a recipe (see :mod:`llmrec.training.recipe`) on the current process(es); returns ``OUTPUT_DIR/final``."""
    on_gpu = _cuda()
    if not on_gpu:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")  # before any Accelerator state: gloo, not NCCL
        if recipe.get("cpu_threads"):
            import torch

            torch.set_num_threads(int(recipe["cpu_threads"]))
    from accelerate import PartialState
    from transformers import set_seed
    from trl import SFTTrainer

    from llmrec.data_builders.instructions import load_instructions
    from llmrec.training.callbacks import InterruptCallback, LlmrecFilesCallback, SidEvalCallback

    t0, cpu0 = time.time(), _cpu_seconds()
    # cpu=True matters: without it, processes started by `accelerate launch --multi_gpu` on a machine without
    # GPUs each think they are alone (DistributedType.NO) and train separately.
    state = PartialState(cpu=not on_gpu)
    run_dir = Path(recipe["output_dir"])
    set_seed(int(recipe["seed"]))
    with state.main_process_first():
        prepare_inputs(recipe)
        model0 = build_model0(recipe)
    instr = Path(recipe["data"]["instructions"])
    manifest = check_compatible(instr, model0)
    prompt = prompt_settings(manifest)

    model, tok, table, info = load_model(model0, recipe, on_gpu)
    dd, _ = load_instructions(instr)
    with state.main_process_first():
        train_ds = tokenize_examples(dd["train"], tok, recipe["data"]["max_length"], recipe["data"]["num_proc"])
        has_eval = recipe["sft"].get("eval_strategy", "no") not in ("no", None) and len(dd["valid"]) > 0
        eval_ds = tokenize_examples(dd["valid"], tok, recipe["data"]["max_length"]) if has_eval else None
    if len(train_ds) == 0:
        raise LlmrecError(f"{instr}: no training examples fit data.max_length={recipe['data']['max_length']}")

    from llmrec.models.vocab import sid_vocabulary

    sid_ids = tok.convert_tokens_to_ids(sid_vocabulary(table, info.wrap))
    check_sids_survive_decoding(tok, table, info)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    args = sft_config(recipe, on_gpu, has_eval)
    callbacks = [LlmrecFilesCallback(model0, prompt)]
    ev = recipe["eval"]
    if ev["at"]:
        callbacks.append(SidEvalCallback(recipe, tok, table, info, prompt, run_dir / "eval"))
    if recipe.get("interrupt_after_step"):
        callbacks.append(InterruptCallback(int(recipe["interrupt_after_step"])))
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=peft_config(recipe, sid_ids, tied), callbacks=callbacks)
    _patch_trainable_tokens_head(trainer.model)
    if not on_gpu and recipe["data"].get("cpu_compact_head", True):
        score_completion_only_on_cpu()
    if state.is_main_process:
        n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in trainer.model.parameters())
        log.info("training %s parameters of %s (%s), %d examples, %d process(es) on %s", f"{n_train:,}",
                 f"{n_all:,}", recipe["peft"]["method"], len(train_ds), state.num_processes,
                 "GPU" if on_gpu else "CPU")
    resume = _resume_arg(recipe)
    if resume and state.is_main_process:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)

    final = run_dir / FINAL
    state.wait_for_everyone()
    if state.is_main_process:
        save_final(trainer, model0, final, recipe, prompt)
        report = {"train_runtime_s": result.metrics.get("train_runtime"), "global_step": result.global_step,
                  "train_loss": result.training_loss, "wall_s": round(time.time() - t0, 1),
                  "cpu_s_main_process": round(_cpu_seconds() - cpu0, 1), "num_processes": state.num_processes,
                  "device": "cuda" if on_gpu else "cpu", "resumed_from": resume,
                  "eval": _read_evals(run_dir / "eval"), "log_history": trainer.state.log_history}
        write_json(final / "train_report.json", report)
        log.info("final model -> %s", final)
    state.wait_for_everyone()
    return final


def score_completion_only_on_cpu() -> None:
    """Make TRL's fused LM head score only the loss positions on CPU too.

    TRL 1.16 projects only the positions with a label onto the vocabulary on Triton devices, but every position
    elsewhere (to keep tile shapes fixed for compilers such as Neuron). On CPU nothing recompiles, and instruction
    examples have ~5 answer tokens in ~100, so scoring every position wastes most of the LM-head work (nearly all of
    it with a 151k Qwen vocabulary). The loss and gradients are identical (checked in tests/test_training.py).
    """
    try:
        import trl.trainer.utils as tu
    except ImportError:
        return
    orig = getattr(tu, "_use_triton", None)
    if orig is None or getattr(orig, "_llmrec_cpu_compact", False):
        return

    def use_compact(device):
        return device.type == "cpu" or orig(device)

    use_compact._llmrec_cpu_compact = True
    tu._use_triton = use_compact


def _patch_trainable_tokens_head(model) -> None:
    """TRL's fused LM head reads ``lm_head.bias``; PEFT's TrainableTokensWrapper (``train_embeddings: sid_rows`` on
    a tied model) only forwards ``weight`` (the merged rows). Give the wrapper the base layer's bias."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and type(head).__name__ == "TrainableTokensWrapper":
        base = head.original_module if hasattr(head, "original_module") else None
        object.__setattr__(head, "bias", getattr(base, "bias", None))


def save_final(trainer, model0: Path, final: Path, recipe: dict, prompt: dict, kind: str = "sft",
               inputs: list | None = None) -> None:
    """A plain (merged) model folder that ``load_extended`` / ``Recommender.from_pretrained`` read, with the SID
    table, items and ``llmrec.json`` of ``model0`` (the model training started from) and a manifest of this run
    (``kind``: sft, grpo, dpo, sdpo; ``inputs``: files to hash, default the instruction data's manifest)."""
    from llmrec.artifacts import atomic_dir

    model = trainer.accelerator.unwrap_model(trainer.model)
    with atomic_dir(final, overwrite=True) as tmp:
        if recipe["peft"]["method"] != "full":
            model.save_pretrained(tmp / "adapter")
            if recipe["peft"]["method"] == "qlora":
                # merging into 4-bit weights is lossy: reload the base in full precision and merge there
                from peft import PeftModel
                from transformers import AutoModelForCausalLM

                base = AutoModelForCausalLM.from_pretrained(str(model0), dtype=_torch_dtype(
                    recipe["model"]["dtype"], _cuda()))
                merged = PeftModel.from_pretrained(base, str(tmp / "adapter")).merge_and_unload()
            else:
                merged = model.merge_and_unload()
        else:
            merged = model
        merged.config.use_cache = True
        merged.save_pretrained(tmp, safe_serialization=True)
        trainer.processing_class.save_pretrained(tmp)
        extra = {"trained_with": recipe["_path"], **({} if kind == "sft" else {"method": kind})}
        write_llmrec_files(model0, tmp, prompt, extra=extra)
        cfg = {k: v for k, v in recipe.items() if not k.startswith("_")}
        if inputs is None:
            inputs = [Path(recipe["data"]["instructions"]) / "instructions.json"]
        write_json(tmp / "manifest.json", make_manifest(kind, config=cfg, seed=recipe["seed"],
                                                        inputs=file_hashes(inputs)))


def _read_evals(folder: Path) -> list:
    if not folder.is_dir():
        return []
    return [read_json(p) for p in sorted(folder.glob("step-*.json"), key=lambda p: int(p.stem.split("-")[1]))]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
