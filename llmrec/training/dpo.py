"""Preference optimisation for SID recommendation on TRL's ``DPOTrainer``: DPO and softmax-DPO (S-DPO).

**Data** (:func:`preference_dataset`): for each training example (history -> next item, from the split's training
sequences only), ``chosen`` is the true next item and the negatives are the best *wrong* items of the reference
(starting) model under the same trie-constrained beam search that serves inference (``preference.source: beam``,
hard negatives the model currently confuses with the answer) or uniform random catalog items (``random``). Prompt
and answers are token ids built exactly as the rollouts of :mod:`llmrec.training.grpo` build them: the inference
prompt, then the item's SID tokens and the end-of-turn token.

**Losses**

* ``method: dpo`` - one negative; TRL's own loss (``dpo.loss_type``: sigmoid, ipo, hinge, ...).
* ``method: sdpo`` - ``N`` negatives, the softmax-DPO loss of Chen et al. (2024, "On Softmax Direct Preference
  Optimization for Recommendation")::

      L = -log sigmoid( -log sum_j exp( beta * (r(y_j) - r(y_w)) ) ),   r(y) = log pi(y|x) - log pi_ref(y|x)

  which is DPO's loss when ``N = 1``. :class:`SidPreferenceTrainer` computes it on batches laid out as
  ``[chosen; negative_1; ...; negative_N]`` (:class:`MultiNegativeCollator`), with TRL's fused log-prob head and
  TRL's reference handling (a frozen copy, or the base with adapters disabled under LoRA).

Run: ``accelerate launch [...] -m llmrec.rl RECIPE.yaml`` with ``method: dpo`` or ``method: sdpo``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from trl import DPOTrainer

from llmrec.errors import LlmrecError
from llmrec.training.rl_common import (FINAL, cpu_seconds, end_token_id, item_token_ids, plot_curves, read_evals,
                                       resume_arg, rl_callbacks_and_peft, save_final, training_examples,
                                       trl_config)

log = logging.getLogger(__name__)

DPO_PANELS = [
    ("loss", ["loss"]),
    ("implicit rewards (beta * log-ratio)", ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
    ("preference accuracy", ["rewards/accuracies"]),
]


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------
def draw_negatives(rec, prompts: list[str], targets: list[int], n: int, source: str = "beam", beams: int = 20,
                   batch_size: int = 32, seed: int = 0, progress: bool = False) -> list[list[int]]:
    """``n`` wrong items per prompt: the reference model's best wrong items (``beam``) or uniform ones (``random``)."""
    n_items = rec.sid_table.n_items
    if n < 1 or n >= n_items:
        raise LlmrecError(f"preference.negatives must be in 1..{n_items - 1}, got {n}")
    if source == "random":
        rng = np.random.default_rng(seed)
        out = []
        for t in targets:
            r = rng.choice(n_items - 1, size=n, replace=False) + 1     # 1..n_items-1, shifted past the target
            out.append([int(x) + (1 if x >= t else 0) for x in r])
        return out
    if source != "beam":
        raise LlmrecError(f"preference.source must be 'beam' or 'random', got {source!r}")
    recs = rec.recommend_prompts(prompts, k=n + 1, num_beams=max(int(beams), n + 1), batch_size=batch_size,
                                 progress=progress)
    return [[i for i in r.items if i != t][:n] for r, t in zip(recs, targets)]


def preference_dataset(rec, examples, negatives: int, source: str = "beam", beams: int = 20, batch_size: int = 32,
                       seed: int = 0, progress: bool = False):
    """``datasets.Dataset`` with ``prompt_ids``, ``chosen_ids`` and ``rejected_ids`` (one list of ids when
    ``negatives == 1``, else a list of ``negatives`` lists), plus ``target``, ``negatives``, ``user``."""
    import datasets as hfds

    tok = rec.tokenizer
    item_ids = item_token_ids(rec.sid_table, rec.info, tok)
    end = end_token_id(tok)
    prompts = [rec.history_prompt(h) for h in examples["history"]]
    targets = [int(t) for t in examples["target"]]
    negs = draw_negatives(rec, prompts, targets, negatives, source, beams, batch_size, seed, progress)
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    answer = [list(ids) + [end] for ids in item_ids]
    rejected = [[answer[j] for j in ns] for ns in negs]
    if negatives == 1:
        rejected = [r[0] for r in rejected]
    return hfds.Dataset.from_dict({"prompt_ids": [list(p) for p in p_ids], "chosen_ids": [answer[t] for t in targets],
                                   "rejected_ids": rejected, "target": targets, "negatives": negs,
                                   "user": [int(u) for u in examples["user"]]})


# --------------------------------------------------------------------------------------------------------------
# S-DPO on TRL
# --------------------------------------------------------------------------------------------------------------
@dataclass
class MultiNegativeCollator:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``completion_mask`` for ``[chosen; neg_1; ...; neg_N]``
    (rows ``j * B + b`` = answer ``j`` of example ``b``; ``j = 0`` is the chosen answer)."""

    pad_token_id: int
    n_negatives: int

    def __call__(self, examples: list[dict]) -> dict:
        from trl.trainer.utils import pad

        n = self.n_negatives
        if any(len(e["rejected_ids"]) != n for e in examples):
            raise LlmrecError(f"every example needs {n} negatives (rejected_ids lists of {n} answers)")
        answers = [[e["chosen_ids"] for e in examples]] + [[e["rejected_ids"][j] for e in examples] for j in range(n)]
        seqs, masks = [], []
        for col in answers:
            for e, a in zip(examples, col):
                seqs.append(torch.tensor(list(e["prompt_ids"]) + list(a)))
                masks.append(torch.tensor([0] * len(e["prompt_ids"]) + [1] * len(a)))
        return {"input_ids": pad(seqs, padding_value=self.pad_token_id, padding_side="right"),
                "attention_mask": pad([torch.ones_like(s) for s in seqs], padding_value=0, padding_side="right"),
                "completion_mask": pad(masks, padding_value=0, padding_side="right")}


def sdpo_loss(logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-example softmax-DPO loss from ``logratios`` ``[1 + N, B]`` (row 0 chosen, rows 1.. negatives)."""
    diff = beta * (logratios[1:] - logratios[:1])               # [N, B]
    return -F.logsigmoid(-torch.logsumexp(diff, dim=0))


class SidPreferenceTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` on llmrec's pre-tokenized preference data; several negatives per example give S-DPO."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        need = {"prompt_ids", "chosen_ids", "rejected_ids"}
        if not need <= set(dataset.column_names):
            raise LlmrecError(f"{dataset_name} dataset: expected columns {sorted(need)} (llmrec.training.dpo."
                              "preference_dataset), got {dataset.column_names}")
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "chosen_ids", "rejected_ids"]

    @property
    def multi_negative(self) -> bool:
        return isinstance(self.data_collator, MultiNegativeCollator)

    def _sequence_logps(self, model, inputs, labels):
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                    use_cache=False, fused_lm_head=True)
        seq_len = inputs["completion_mask"].shape[1] - 1
        return out.log_probs[:, -seq_len:].sum(dim=1)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.multi_negative:
            return super()._compute_loss(model, inputs, return_outputs)
        from accelerate.utils import is_peft_model
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        mode = "train" if self.model.training else "eval"
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        logps = self._sequence_logps(model, inputs, labels)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                ctx = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
                ref_model = self.model
            else:
                ctx, ref_model = contextlib.nullcontext(), self.ref_model
            with ctx:
                ref_logps = self._sequence_logps(ref_model, inputs, labels)
        groups = 1 + self.data_collator.n_negatives
        ratios = (logps - ref_logps).view(groups, -1)              # [1 + N, B]
        loss = sdpo_loss(ratios, self.beta).mean()
        rewards = self.beta * ratios.detach()
        chosen, rejected = rewards[0], rewards[1:]
        g = self.accelerator.gather
        self._metrics[mode]["rewards/chosen"].append(g(chosen).mean().item())
        self._metrics[mode]["rewards/rejected"].append(g(rejected.mean(0)).mean().item())
        self._metrics[mode]["rewards/accuracies"].append(g((chosen > rejected.max(0).values).float()).mean().item())
        self._metrics[mode]["rewards/margins"].append(g(chosen - rejected.max(0).values).mean().item())
        self._metrics[mode]["logps/chosen"].append(g(logps.detach().view(groups, -1)[0]).mean().item())
        self._metrics[mode]["logps/rejected"].append(g(logps.detach().view(groups, -1)[1:].mean(0)).mean().item())
        if return_outputs:
            raise LlmrecError("S-DPO does not return logits (use prediction_loss_only evaluation)")
        return loss


def dpo_config(recipe: dict, on_gpu: bool):
    from trl import DPOConfig

    kw = {"output_dir": str(recipe["output_dir"]), "seed": int(recipe["seed"]), "data_seed": int(recipe["seed"]),
          "report_to": "none", "logging_steps": 5, "save_strategy": "steps", "save_steps": 200,
          "save_total_limit": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-5, "beta": 0.1,
          "lr_scheduler_type": "constant", "num_train_epochs": 1, "dataloader_num_workers": 0,
          "ddp_find_unused_parameters": False, "max_length": None}
    kw.update(recipe["dpo"])
    if recipe["method"] == "sdpo" and kw.get("precompute_ref_log_probs"):
        raise LlmrecError("dpo.precompute_ref_log_probs is not supported with method sdpo")
    return trl_config(DPOConfig, kw, recipe, "dpo", on_gpu)


# --------------------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------------------
def train_preference(recipe: dict) -> Path:
    """Run a ``method: dpo`` / ``sdpo`` recipe on the current process(es); returns ``OUTPUT_DIR/final``."""
    import json

    from llmrec.artifacts import json_default, read_json, write_json
    from llmrec.data_builders import load_split
    from llmrec.inference.recommend import Recommender
    from llmrec.models.vocab import load_items
    from llmrec.training.grpo import _engine, _setup, load_policy

    t0, cpu0 = time.time(), cpu_seconds()
    on_gpu, state = _setup(recipe)
    run_dir = Path(recipe["output_dir"])
    method = recipe["method"]
    model, tok, table, info, model_dir = load_policy(recipe, on_gpu)
    prompt = dict(info.prompt or {})
    pref = recipe["preference"]
    n_neg = int(pref["negatives"])
    if method == "dpo" and n_neg != 1:
        raise LlmrecError(f"method dpo takes one negative (preference.negatives={n_neg}); use method sdpo for "
                          "several")
    split = load_split(recipe["data"]["dataset"], recipe["data"]["split"])
    if split.n_items != table.n_items:
        raise LlmrecError(f"{recipe['data']['dataset']} has {split.n_items} items, the model's SID table "
                          f"{table.n_items}")
    d = recipe["data"]
    rec = Recommender(model, tok, table, info, items=load_items(model_dir))
    max_hist = int(d["max_history"] or rec.prompt_cfg.get("max_history") or 20)
    ex = training_examples(split, d["positions"], max_history=max_hist, min_history=int(d["min_history"]),
                           max_examples=d["max_examples"], seed=int(d["seed"]))
    # negatives come from the starting (= reference) model; decoded once, on the main process, then shared
    cache = run_dir / "preference_data"
    built_with = {"preference": pref, "data": d, "seed": int(recipe["seed"]), "model": str(model_dir)}
    with state.main_process_first():
        stale = not (cache / "dataset_info.json").is_file() or not (cache / "built_with.json").is_file() \
            or read_json(cache / "built_with.json") != json.loads(json.dumps(built_with, default=json_default))
        if state.is_main_process and stale:   # rebuilt when the negatives' settings changed since the last run
            if on_gpu:
                model.to("cuda")
            model.eval()
            ds = preference_dataset(rec, ex, n_neg, pref["source"], int(pref["beams"]), int(pref["batch_size"]),
                                    seed=int(recipe["seed"]), progress=True)
            model.train()
            from llmrec.artifacts import atomic_dir

            with atomic_dir(cache, overwrite=True) as tmp:
                ds.save_to_disk(str(tmp))
                write_json(tmp / "built_with.json", built_with)
    import datasets as hfds

    train_ds = hfds.load_from_disk(str(cache))
    args = dpo_config(recipe, on_gpu)
    collator = MultiNegativeCollator(tok.pad_token_id, n_neg) if method == "sdpo" else None
    callbacks, peft = rl_callbacks_and_peft(recipe, model, tok, table, info, prompt, model_dir, run_dir,
                                            f"{method.upper()}: {run_dir.name}", DPO_PANELS)
    trainer = SidPreferenceTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                                   data_collator=collator, peft_config=peft,
                                   callbacks=callbacks)
    if state.is_main_process:
        n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        log.info("%s: %s trainable parameters (%s), %d examples with %d %s negative(s) each, %d process(es) on %s "
                 "(%s)", method.upper(), f"{n_train:,}", recipe["peft"]["method"], len(train_ds), n_neg,
                 pref["source"], state.num_processes, "GPU" if on_gpu else "CPU", _engine(trainer))
    resume = resume_arg(recipe)
    result = trainer.train(resume_from_checkpoint=resume)

    final = run_dir / FINAL
    state.wait_for_everyone()
    if state.is_main_process:
        save_final(trainer, model_dir, final, recipe, prompt, method)
        evals = read_evals(run_dir / "eval")
        write_json(final / "train_report.json", {
            "method": method, "global_step": result.global_step, "train_loss": result.training_loss,
            "train_runtime_s": result.metrics.get("train_runtime"), "wall_s": round(time.time() - t0, 1),
            "cpu_s_main_process": round(cpu_seconds() - cpu0, 1), "num_processes": state.num_processes,
            "negatives": n_neg, "negative_source": pref["source"], "device": "cuda" if on_gpu else "cpu",
            "resumed_from": resume, "eval": evals, "log_history": trainer.state.log_history})
        plot_curves(trainer.state.log_history, run_dir / "curves.png", f"{method.upper()}: {run_dir.name}",
                    DPO_PANELS, evals)
        log.info("final model -> %s (curves: %s)", final, run_dir / "curves.png")
    state.wait_for_everyone()
    return final
