"""What GRPO and preference optimisation share: the recipe format, the training examples, curves, the final save.

An RL recipe starts from a model that already speaks SIDs (an SFT ``final/`` folder, or any folder
``load_extended`` reads) and trains it further on the *training* sequences of a split; validation users (never
trained on) measure the effect with trie-constrained beam search, before training and at ``eval.at``::

    method: grpo                   # grpo | dpo | sdpo
    output_dir: runs/beauty-qwen2.5-0.5b-grpo
    seed: 42
    model: {path: runs/beauty-qwen2.5-0.5b-sft/final, dtype: auto}
    data: {dataset: data/beauty, split: loo, positions: last, max_examples: null}
    peft: {method: full | lora, r: 16, ...}          # as in SFT recipes
    rollout: {mode: beam | sample, num_generations: 16, beams: null, temperature: 1.0, batch_size: 32}
    rewards: {hit: 1.0, rank: 1.0, semantic: {weight: 0.5, embeddings: EMB}, collaborative: {...}}
    grpo: {...}                    # trl.GRPOConfig fields (learning_rate, beta, max_steps, ...)
    dpo: {...}                     # trl.DPOConfig fields (dpo / sdpo)
    preference: {negatives: 4, source: beam, beams: 20}
    eval: {before: true, at: [0.5, end], users: 1000, beams: 20, k: [5, 10]}
    resume: auto

Strings may use ``${ENV_VAR}``; command-line overrides are ``key.sub=value`` (as for SFT recipes).
"""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

METHODS = ("grpo", "dpo", "sdpo")
ROLLOUT_MODES = ("beam", "sample")
FINAL = "final"

RL_SECTIONS: dict[str, dict[str, Any]] = {
    "model": {"path": None, "dtype": "auto", "attn_implementation": None, "trust_remote_code": False},
    "data": {"dataset": None, "split": "loo", "positions": "last", "max_examples": None, "min_history": 1,
             "max_history": None, "seed": 0},
    "peft": {"method": "full", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear",
             "train_embeddings": "full", "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16",
             "bnb_4bit_use_double_quant": True},
    "rollout": {"mode": "beam", "num_generations": 8, "beams": None, "temperature": 1.0, "batch_size": 32},
    "preference": {"negatives": 1, "source": "beam", "beams": 20, "batch_size": 32},
    "eval": {"before": True, "at": ["end"], "users": 1000, "beams": 20, "k": [5, 10], "batch_size": 16,
             "split": "valid", "seed": 0},
}
RL_TOP = {"method": None, "output_dir": None, "seed": 0, "rewards": {"hit": 1.0, "rank": 1.0}, "grpo": {},
          "dpo": {}, "resume": "auto", "description": None, "interrupt_after_step": None}


def load_rl_recipe(path: str | os.PathLike | dict, overrides: list[str] | tuple = ()) -> dict:
    """An RL recipe (module docstring) with overrides applied, env vars expanded and defaults filled in."""
    from llmrec.training.recipe import read_sectioned

    out, where = read_sectioned(path, overrides, RL_TOP, RL_SECTIONS)
    if out["method"] not in METHODS:
        raise LlmrecError(f"{where}: method must be one of {METHODS}, got {out['method']!r}")
    for key in ("output_dir",):
        if not out[key]:
            raise LlmrecError(f"{where}: {key} is required")
    if not out["model"]["path"]:
        raise LlmrecError(f"{where}, section 'model': path (an SFT'd llmrec model folder) is required")
    if not out["data"]["dataset"]:
        raise LlmrecError(f"{where}, section 'data': dataset (its split's training sequences are the RL data) "
                          "is required")
    if out["data"]["positions"] not in ("last", "all"):
        raise LlmrecError(f"{where}, data.positions: 'last' or 'all', got {out['data']['positions']!r}")
    if out["rollout"]["mode"] not in ROLLOUT_MODES:
        raise LlmrecError(f"{where}, rollout.mode: one of {ROLLOUT_MODES}, got {out['rollout']['mode']!r}")
    if int(out["rollout"]["num_generations"]) < 2:
        raise LlmrecError(f"{where}, rollout.num_generations: GRPO needs groups of >= 2 completions")
    if out["peft"]["method"] not in ("full", "lora", "qlora"):
        raise LlmrecError(f"{where}, peft.method: full, lora or qlora, got {out['peft']['method']!r}")
    for sec in ("grpo", "dpo", "rewards"):
        if not isinstance(out[sec], dict):
            raise LlmrecError(f"{where}, section {sec!r}: expected a mapping")
    at = out["eval"]["at"]
    out["eval"]["at"] = [at] if isinstance(at, (int, float, str)) else list(at or [])
    out["eval"]["k"] = [out["eval"]["k"]] if isinstance(out["eval"]["k"], int) else list(out["eval"]["k"])
    out["_path"] = where
    return out


# --------------------------------------------------------------------------------------------------------------
# training examples
# --------------------------------------------------------------------------------------------------------------
def training_examples(split, positions: str = "last", max_history: int = 20, min_history: int = 1,
                      max_examples: int | None = None, seed: int = 0):
    """(user, history, target) rows from the split's *training* sequences only (validation/test never leak).

    ``positions="last"``: each user's last training item as target (one example per user, MiniOneRec's RL data);
    ``"all"``: every position ``t >= min_history`` (sliding windows). Histories keep the newest ``max_history``
    items. ``max_examples`` draws a fixed random subset (``seed``).
    """
    import pandas as pd

    users, seqs = split.train_sequences()
    rows_u, rows_h, rows_t = [], [], []
    for u, seq in zip(users, seqs):
        n = len(seq)
        if n <= min_history:
            continue
        pos = [n - 1] if positions == "last" else range(min_history, n)
        for t in pos:
            rows_u.append(int(u))
            rows_h.append([int(x) for x in seq[max(0, t - max_history): t]])
            rows_t.append(int(seq[t]))
    if not rows_t:
        raise LlmrecError(f"{getattr(split, 'path', 'split')}: no training sequence longer than min_history="
                          f"{min_history}")
    df = pd.DataFrame({"user": rows_u, "history": rows_h, "target": rows_t})
    if max_examples and int(max_examples) < len(df):
        idx = np.sort(np.random.default_rng(seed).choice(len(df), int(max_examples), replace=False))
        df = df.iloc[idx].reset_index(drop=True)
    return df


def item_token_ids(sid_table, info, tokenizer) -> list[list[int]]:
    """Token ids each item is generated as (wrappers included), indexed by item id (row 0 empty)."""
    vocab = tokenizer.get_vocab()
    out: list[list[int]] = [[]]
    for i in range(1, sid_table.n_items + 1):
        toks = info.item_tokens(sid_table, i)
        try:
            out.append([vocab[t] for t in toks])
        except KeyError as e:
            raise LlmrecError(f"the tokenizer lacks the SID token {e}; extend the model first") from None
    return out


def end_token_id(tokenizer) -> int:
    """The id that closes an answer: the chat template's end-of-turn (``<|im_end|>`` for Qwen) = eos."""
    eos = tokenizer.eos_token_id
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None:
        raise LlmrecError("the tokenizer has no eos token: cannot end a completion")
    return int(eos)


# --------------------------------------------------------------------------------------------------------------
# curves, final model, report
# --------------------------------------------------------------------------------------------------------------
def plot_curves(log_history: list[dict], path: Path, title: str, panels: list[tuple[str, list[str]]],
                eval_history: list[dict] | None = None) -> Path | None:
    """A PNG with one panel per ``(title, [log keys])`` (training curves against the step) plus validation
    recall/NDCG of constrained beam search at the evaluated steps. Returns the path (None if nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(t, [k for k in keys if any(k in h for h in log_history)]) for t, keys in panels]
    shown = [(t, ks) for t, ks in shown if ks]
    evals = [e for e in (eval_history or []) if "step" in e]
    n = len(shown) + (1 if evals else 0)
    if n == 0:
        return None
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, (t, keys) in zip(axes.flat, shown):
        for k in keys:
            pts = [(h["step"], h[k]) for h in log_history if k in h and "step" in h]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="." if len(pts) < 40 else None, label=k.replace("rewards/", ""))
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if evals:
        ax = axes.flat[len(shown)]
        keys = sorted({k for e in evals for k in e if k.startswith(("recall@", "ndcg@"))})
        for k in keys:
            pts = sorted((e["step"], e[k]) for e in evals if k in e)
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=k)
        ax.set_title("validation (constrained beam search)", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_final(trainer, src_model: Path, final: Path, recipe: dict, prompt: dict, kind: str) -> None:
    """The SFT stage's final-model writer (merging QLoRA adapters in full precision) with this run's kind and the
    source model's weights as the manifest input."""
    from llmrec.training.sft import save_final as _save

    w = Path(src_model) / "model.safetensors"
    _save(trainer, Path(src_model), final, recipe, prompt, kind=kind, inputs=[w] if w.is_file() else [])


class CurvesCallback(TrainerCallback):
    """Redraws ``OUTPUT_DIR/curves.png`` at every save and at the end (the trainer's log history + evaluations)."""

    def __init__(self, out_dir: Path, title: str, panels: list[tuple[str, list[str]]]):
        self.out_dir, self.title, self.panels = Path(out_dir), title, panels

    def draw(self, state) -> None:
        if state.is_world_process_zero:
            plot_curves(state.log_history, self.out_dir / "curves.png", self.title, self.panels,
                        read_evals(self.out_dir / "eval"))

    def on_save(self, args, state, control, **kw):
        self.draw(state)
        return control

    def on_train_end(self, args, state, control, **kw):
        self.draw(state)
        return control


def eval_callback(recipe: dict, tokenizer, sid_table, info, prompt: dict, out_dir: Path):
    """SFT's constrained-beam evaluation callback (``eval.at``), plus an evaluation of the starting model at step 0
    when ``eval.before`` (at train begin, once the model sits on its device; skipped when resuming)."""
    from llmrec.training.callbacks import SidEvalCallback

    class _Eval(SidEvalCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            control = super().on_train_begin(args, state, control, model=model, **kw)
            if (recipe["eval"]["before"] and state.global_step == 0 and 0 not in self.done
                    and not (Path(out_dir) / "step-0.json").is_file()):
                self.done.add(0)
                metrics = self.evaluate(model, 0)
                if state.is_world_process_zero:
                    state.log_history.append({**{f"sid_eval/{k}": v for k, v in metrics.items()}, "step": 0})
            return control

    return _Eval(recipe, tokenizer, sid_table, info, prompt, out_dir)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def resume_arg(recipe: dict):
    from llmrec.training.sft import _resume_arg

    return _resume_arg(recipe)


def read_evals(folder: Path) -> list:
    from llmrec.training.sft import _read_evals

    return _read_evals(folder)


def trl_config(cls, kw: dict, recipe: dict, section: str, on_gpu: bool):
    """``cls(**kw)`` for a TRL config class (CPU runs forced to fp32 on CPU); bad fields name the recipe section."""
    if not on_gpu:
        kw.update(use_cpu=True, bf16=False, fp16=False)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise LlmrecError(f"{recipe['_path']}, section {section!r}: {e} (fields are those of trl.{cls.__name__})") \
            from None


def rl_callbacks_and_peft(recipe: dict, model, tok, table, info, prompt: dict, model_dir: Path, run_dir: Path,
                          title: str, panels) -> tuple[list, object]:
    """What GRPO and DPO trainers share: the callbacks (llmrec files in checkpoints, curves, constrained-beam
    evaluation when asked, test interruption) and the PEFT config whose trainable rows include the SID tokens."""
    from llmrec.models.vocab import sid_vocabulary
    from llmrec.training.callbacks import InterruptCallback, LlmrecFilesCallback
    from llmrec.training.sft import peft_config

    callbacks = [LlmrecFilesCallback(model_dir, prompt), CurvesCallback(run_dir, title, panels)]
    if recipe["eval"]["at"] or recipe["eval"]["before"]:
        callbacks.append(eval_callback(recipe, tok, table, info, prompt, run_dir / "eval"))
    if recipe.get("interrupt_after_step"):
        callbacks.append(InterruptCallback(int(recipe["interrupt_after_step"])))
    sid_ids = tok.convert_tokens_to_ids(sid_vocabulary(table, info.wrap))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return callbacks, peft_config(recipe, sid_ids, tied)
