"""Training recipes: one readable YAML file per run, loaded into plain dicts with defaults and checks.

A recipe has these sections (every one optional but ``output_dir`` and the data/model needed)::

    output_dir: runs/beauty-qwen3-0.6b        # checkpoints, model0/, final/, eval/ (relative to the CWD)
    seed: 42
    prepare: {...}        # optional: build missing inputs first (synthetic shop, embeddings, SIDs, instructions)
    data:
      dataset: data/beauty                    # dataset folder (validation users for evaluation)
      split: loo
      instructions: data/beauty-instr         # from `llmrec instructions build` (built here if `build:` given)
      build: {tasks: [...], ratios: {...}, max_history: 20, ...}
      max_length: 1024                        # longer examples are dropped (and counted)
    sids: data/beauty-sid                     # SID folder or *.index.json
    model:
      base: Qwen/Qwen3-0.6B                   # hub name or folder, or an extended llmrec folder, or
      config: {hidden_size: 128, num_layers: 4, ...}   # a from-scratch Qwen3-architecture model
      tokenizer: [${LLMREC_SHARED_DATA}/qwen3-tokenizer, fallback]   # first that exists; fallback = local BPE
      dtype: bfloat16
    vocab: {init: mean, wrap: false, pad_to_multiple_of: 64}
    peft: {method: full | lora | qlora, r: 16, alpha: 32, dropout: 0.05, target_modules: all-linear,
           train_embeddings: full | sid_rows | none}
    sft: {...}            # any trl.SFTConfig field (learning_rate, num_train_epochs, per_device_train_batch_size...)
    eval: {at: [0.5, 1.0], users: 2000, beams: 20, k: [5, 10], batch_size: 16}
    resume: auto          # auto: continue from the newest checkpoint in output_dir; false; or a checkpoint path
    cpu_threads: 1        # torch threads per process on CPU (1 is fastest on a busy shared machine)

Strings may use ``${ENV_VAR}``; command-line overrides are ``key.sub=value`` (the value is parsed as YAML).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from llmrec.artifacts import read_yaml_mapping
from llmrec.errors import LlmrecError

SECTIONS: dict[str, dict[str, Any]] = {
    "data": {"dataset": None, "split": "loo", "instructions": None, "build": None, "max_length": 1024,
             "num_proc": None, "cpu_compact_head": True},
    "model": {"base": None, "config": None, "tokenizer": None, "dtype": "auto", "attn_implementation": None,
              "trust_remote_code": False, "tokenizer_vocab_size": 4096},
    "vocab": {"init": "mean", "wrap": False, "pad_to_multiple_of": 64},
    "peft": {"method": "full", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear",
             "train_embeddings": "full", "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16",
             "bnb_4bit_use_double_quant": True},
    "eval": {"at": [], "users": 1000, "beams": 20, "k": [5, 10], "batch_size": 16, "split": "valid",
             "seed": 0},
    "prepare": {"synthetic": None, "embeddings": None, "sid": None},
}
TOP = {"output_dir": None, "seed": 0, "sids": None, "sft": {}, "resume": "auto", "interrupt_after_step": None,
       "description": None, "cpu_threads": None}
PEFT_METHODS = ("full", "lora", "qlora")
TRAIN_EMBEDDINGS = ("full", "sid_rows", "none")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(obj):
    if isinstance(obj, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(0)), obj)
    if isinstance(obj, list):
        return [_expand(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    return obj


def apply_override(recipe: dict, item: str) -> None:
    """``a.b=value`` sets ``recipe["a"]["b"]`` (value parsed as YAML: numbers, booleans, lists)."""
    import yaml

    if "=" not in item:
        raise LlmrecError(f"override {item!r}: expected KEY=VALUE, e.g. sft.max_steps=10")
    key, val = item.split("=", 1)
    parts = key.strip().split(".")
    d = recipe
    for p in parts[:-1]:
        if d.get(p) is None:
            d[p] = {}
        if not isinstance(d[p], dict):
            raise LlmrecError(f"override {item!r}: {p!r} is not a section")
        d = d[p]
    val = _expand(val)  # ${VAR} inside a value ("[${LLMREC_SHARED_DATA}/tok, fallback]") before YAML parsing
    try:
        d[parts[-1]] = yaml.safe_load(val) if val != "" else None
    except yaml.YAMLError as e:
        raise LlmrecError(f"override {item!r}: cannot parse the value ({e})") from None


def read_sectioned(path: str | os.PathLike | dict, overrides, top: dict, sections: dict) -> tuple[dict, str]:
    """A recipe's mapping with overrides applied and env vars expanded, checked against its known keys: ``top``
    (key -> default) and ``sections`` (section -> {key: default}); unknown keys fail with the file and section."""
    raw, where = read_yaml_mapping(path, "recipe")
    for o in overrides:
        apply_override(raw, o)
    raw = _expand(raw)
    unknown = set(raw) - set(sections) - set(top)
    if unknown:
        raise LlmrecError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(set(sections) | set(top))}")
    out: dict = {k: copy.deepcopy(raw[k] if k in raw else v) for k, v in top.items()}
    for sec, defaults in sections.items():
        got = raw.get(sec) or {}
        if not isinstance(got, dict):
            raise LlmrecError(f"{where}, section {sec!r}: expected a mapping, got {type(got).__name__}")
        bad = set(got) - set(defaults)
        if bad:
            raise LlmrecError(f"{where}, section {sec!r}: unknown key(s) {sorted(bad)}; known: {sorted(defaults)}")
        out[sec] = {**copy.deepcopy(defaults), **got}
    return out, where


def load_recipe(path: str | os.PathLike | dict, overrides: list[str] | tuple = ()) -> dict:
    """The recipe at ``path`` (or a dict) with overrides applied, env vars expanded and defaults filled in."""
    out, where = read_sectioned(path, overrides, TOP, SECTIONS)
    if not out["output_dir"]:
        raise LlmrecError(f"{where}: output_dir is required")
    if not isinstance(out["sft"], dict):
        raise LlmrecError(f"{where}, section 'sft': expected a mapping of trl.SFTConfig fields")
    m = out["model"]
    if bool(m["base"]) == bool(m["config"]):
        raise LlmrecError(f"{where}, section 'model': give exactly one of base (hub name or folder) or config "
                          "(a from-scratch Qwen3-architecture model)")
    if out["peft"]["method"] not in PEFT_METHODS:
        raise LlmrecError(f"{where}, peft.method: {out['peft']['method']!r}, expected one of {PEFT_METHODS}")
    if out["peft"]["train_embeddings"] not in TRAIN_EMBEDDINGS:
        raise LlmrecError(f"{where}, peft.train_embeddings: {out['peft']['train_embeddings']!r}, expected one of "
                          f"{TRAIN_EMBEDDINGS}")
    if not out["data"]["instructions"]:
        raise LlmrecError(f"{where}, section 'data': instructions (an instruction folder) is required")
    at = out["eval"]["at"]
    out["eval"]["at"] = [at] if isinstance(at, (int, float, str)) else list(at or [])
    out["eval"]["k"] = [out["eval"]["k"]] if isinstance(out["eval"]["k"], int) else list(out["eval"]["k"])
    out["_path"] = where
    return out


def resolve_tokenizer(spec) -> str | None:
    """First existing entry of ``model.tokenizer`` (a path/name or a list); ``None`` means the fallback BPE."""
    if spec is None:
        return None
    cands = spec if isinstance(spec, list) else [spec]
    for c in cands:
        if c in (None, "fallback"):
            return None
        c = str(c)
        if "${" in c:          # an unset environment variable: skip this candidate
            continue
        if Path(c).expanduser().exists():
            return str(Path(c).expanduser())
        if _HUB_ID.fullmatch(c):  # org/name on the Hugging Face Hub
            return c
    raise LlmrecError(f"model.tokenizer: none of {cands} exists (add 'fallback' to the list to train a local BPE)")
