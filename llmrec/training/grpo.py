"""GRPO for Semantic-ID recommendation on TRL's ``GRPOTrainer``, with trie-constrained rollouts.

**Rollouts** (:class:`SidRollout`, TRL's ``rollout_func`` hook) use the same trie and decoder as evaluation,
batch inference and chat (:class:`~llmrec.inference.recommend.Recommender`):

* ``mode: beam`` (MiniOneRec): a group is the top-``G`` items of one trie-constrained beam search (``beams >= G``
  beams), so its ``G`` completions are distinct valid items and the beam order is a ranking the rank reward
  reads. TRL spreads a group's ``G`` copies of a prompt over processes; each group is decoded once, on one
  process, and the items are shared (``gather_object``), so a group never holds duplicates.
* ``mode: sample``: each completion is sampled independently (``temperature``) through
  :class:`~llmrec.inference.constrained.TrieLogitsProcessor`; duplicates are possible, a group's ranking is by
  the sampled items' constrained log-probabilities (duplicates share a rank).

A completion is the item's SID tokens followed by the end-of-turn token, exactly what SFT taught after the same
prompt. TRL decodes it with special tokens skipped; SID tokens are normal added tokens, so the rewards
(:mod:`llmrec.training.rewards`) read the SIDs from the text, and the rollout also passes ``sid_rank``,
``group_items`` and ``beam_score`` per completion.

**Loss**: TRL's (``grpo.loss_type``, default ``dapo``), KL to the reference model with ``grpo.beta`` (default
``1e-3``; under LoRA the reference is the base with adapters disabled). TRL logs ``frac_reward_zero_std``: the
share of groups whose rewards are all equal, i.e. zero advantage and no gradient (MiniOneRec reproductions report
~70% with exact-hit rewards); ``sid/group_hit_rate`` is the share of completions whose group contains the target.

Run: ``accelerate launch [--config_file recipes/accelerate/...] -m llmrec.rl RECIPE.yaml`` (``method: grpo``).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.training.rl_common import (FINAL, cpu_seconds, end_token_id, item_token_ids, plot_curves, read_evals,
                                       resume_arg, rl_callbacks_and_peft, save_final, training_examples,
                                       trl_config)

log = logging.getLogger(__name__)

GRPO_PANELS = [
    ("reward (mean over completions)", ["reward", "rewards/hit/mean", "rewards/rank/mean",
                                        "rewards/semantic/mean", "rewards/collaborative/mean"]),
    ("zero-advantage groups / groups with a hit", ["frac_reward_zero_std", "sid/group_hit_rate"]),
    ("KL to the reference (SFT) model", ["kl"]),
]


# --------------------------------------------------------------------------------------------------------------
# rollouts
# --------------------------------------------------------------------------------------------------------------
class SidRollout:
    """TRL ``rollout_func``: ``(prompts, trainer) -> {prompt_ids, completion_ids, logprobs, sid_rank, ...}``.

    ``prompts`` are the local (this process's) prompt strings, each repeated ``G`` times by TRL's sampler;
    completion ``i`` of process ``p`` is member ``(p * N + i) % G`` of group ``(p * N + i) // G`` (TRL's own
    layout: rewards are gathered in that order and grouped by ``G``).
    """

    def __init__(self, recommender, mode: str = "beam", num_beams: int | None = None, temperature: float = 1.0,
                 batch_size: int = 32):
        if mode not in ("beam", "sample"):
            raise LlmrecError(f"rollout mode must be 'beam' or 'sample', got {mode!r}")
        self.rec = recommender
        self.mode = mode
        self.num_beams = num_beams
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        tok = recommender.tokenizer
        self.end_id = end_token_id(tok)
        self.item_ids = item_token_ids(recommender.sid_table, recommender.info, tok)
        self.calls = 0
        self.seconds = 0.0

    # -- the hook ----------------------------------------------------------------------------------------------
    def __call__(self, prompts: list, trainer) -> dict:
        import torch
        from trl.models.utils import unwrap_model_for_generation

        t0 = time.perf_counter()
        texts = [p if isinstance(p, str) else self._render(p) for p in prompts]
        mode = "train" if trainer.model.training else "eval"
        G = trainer.num_generations if mode == "train" else trainer.num_generations_eval
        acc = trainer.accelerator
        offset = acc.process_index * len(texts)
        args = trainer.args
        with unwrap_model_for_generation(trainer.model_wrapped, acc,
                                         gather_deepspeed3_params=args.ds3_gather_for_generation,
                                         gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            model.eval()        # no dropout: every process must see the same policy
            try:
                with torch.no_grad():
                    if self.mode == "beam":
                        out = self.beam(model, texts, G, offset, acc)
                    else:
                        out = self.sample(model, texts, G, offset, acc)
            finally:
                if was_training:
                    model.train()
        self.calls += 1
        self.seconds += time.perf_counter() - t0
        return out

    def _render(self, messages) -> str:
        from llmrec.data_builders.prompts import prompt_text

        return prompt_text(self.rec.tokenizer, messages)

    def _encode(self, texts):
        return [list(ids) for ids in self.rec.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _completion(self, item: int) -> list[int]:
        return list(self.item_ids[item]) + [self.end_id]

    # -- beam groups -------------------------------------------------------------------------------------------
    def beam(self, model, texts: list[str], G: int, offset: int, acc) -> dict:
        from accelerate.utils import gather_object

        N = len(texts)
        gpos = offset + np.arange(N)
        group, member = gpos // G, gpos % G
        first = {}
        for i, g in enumerate(group.tolist()):
            first.setdefault(g, i)
        # which process decodes which group: the lowest rank that holds one of its members
        mine_local = [(acc.process_index, g, texts[i]) for g, i in first.items()]
        everyone = gather_object(mine_local) if acc.num_processes > 1 else mine_local
        owner: dict[int, int] = {}
        text_of: dict[int, str] = {}
        for p, g, t in everyone:
            if g not in owner or p < owner[g]:
                owner[g] = p
                text_of[g] = t
        todo = sorted(g for g, p in owner.items() if p == acc.process_index)
        n_items = self.rec.sid_table.n_items
        if G > n_items:
            raise LlmrecError(f"rollout: num_generations={G} > {n_items} catalog items")
        beams = max(int(self.num_beams or G), G)
        self.rec.model = model
        recs = self.rec.recommend_prompts([text_of[g] for g in todo], k=G, num_beams=beams,
                                          batch_size=self.batch_size) if todo else []
        results = [(g, r.items, r.scores) for g, r in zip(todo, recs)]
        if acc.num_processes > 1:
            results = gather_object(results)
        table = {g: (items, scores) for g, items, scores in results}
        log.debug("rollout rank %d: groups %s members %s prompts %s", acc.process_index, group.tolist(),
                  member.tolist(), [zlib.crc32(t.encode()) % 10_000 for t in texts])
        ids = self._encode(texts)
        comp, ranks, groups, bscore = [], [], [], []
        for i in range(N):
            items, scores = table[int(group[i])]
            if len(items) < G:
                raise LlmrecError(f"rollout: beam search found {len(items)} items for a group of {G}")
            m = int(member[i])
            comp.append(self._completion(items[m]))
            ranks.append(m)
            groups.append(list(items))
            bscore.append(float(scores[m]))
        return {"prompt_ids": ids, "completion_ids": comp, "logprobs": None, "sid_rank": ranks,
                "group_items": groups, "beam_score": bscore}

    # -- sampled groups ----------------------------------------------------------------------------------------
    def sample(self, model, texts: list[str], G: int, offset: int, acc) -> dict:
        import torch
        from accelerate.utils import gather_object
        from transformers import GenerationConfig, LogitsProcessorList

        from llmrec.inference.constrained import TrieLogitsProcessor
        from llmrec.inference.hf import clean_generation_defaults, left_pad

        tok = self.rec.tokenizer
        trie = self.rec.trie.to(next(model.parameters()).device)
        dev = next(model.parameters()).device
        ids = self._encode(texts)
        N = len(ids)
        comp: list[list[int]] = [[] for _ in range(N)]
        items = np.full(N, -1, np.int64)
        seqscore = np.full(N, -np.inf)
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.end_id
        for s in range(0, N, self.batch_size):
            idx = list(range(s, min(N, s + self.batch_size)))
            x, mask = left_pad([ids[i] for i in idx], pad)
            L = x.shape[1]
            proc = TrieLogitsProcessor(trie, prompt_len=L, renormalize=True, end_token_id=self.end_id)
            cfg = GenerationConfig(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, min_p=None,
                                   max_new_tokens=trie.max_depth + 1, pad_token_id=pad, eos_token_id=self.end_id,
                                   output_scores=True, return_dict_in_generate=True, use_cache=True)
            with clean_generation_defaults(model):
                out = model.generate(input_ids=x.to(dev), attention_mask=mask.to(dev), generation_config=cfg,
                                     logits_processor=LogitsProcessorList([proc]))
            gen = out.sequences[:, L:]
            it = trie.items_of(gen).cpu().numpy()
            steps = torch.stack(out.scores, 1).float()                       # [b, t, V]
            tok_sc = steps.gather(2, gen[:, : steps.shape[1], None]).squeeze(2)
            is_end = gen[:, : steps.shape[1]] == self.end_id
            upto = (torch.cumsum(is_end.int(), 1) - is_end.int()) == 0      # tokens up to and incl. the first end
            sc = torch.where(upto, tok_sc, torch.zeros_like(tok_sc)).sum(1).cpu().numpy()
            for r, i in enumerate(idx):
                g = gen[r].tolist()
                cut = g.index(self.end_id) + 1 if self.end_id in g else len(g)
                comp[i] = g[:cut]
                items[i] = it[r]
                seqscore[i] = sc[r] if it[r] > 0 else -np.inf
        gpos = offset + np.arange(N)
        local = list(zip(gpos.tolist(), items.tolist(), seqscore.tolist()))
        allv = gather_object(local) if acc.num_processes > 1 else local
        by_group: dict[int, list] = {}
        for p, item, score in allv:
            by_group.setdefault(p // G, []).append((p, item, score))
        rank_of: dict[int, int] = {}
        members: dict[int, list[int]] = {}
        for g, rows in by_group.items():
            rows.sort()
            members[g] = [item for _, item, _ in rows]
            best: dict[int, float] = {}
            for _, item, score in rows:
                best[item] = max(best.get(item, -np.inf), score)
            order = sorted(best, key=lambda k: -best[k])          # dense rank: duplicates share it
            dense = {item: r for r, item in enumerate(order)}
            for p, item, _ in rows:
                rank_of[p] = dense[item]
        return {"prompt_ids": ids, "completion_ids": comp, "logprobs": None,
                "sid_rank": [rank_of[int(p)] for p in gpos], "group_items": [members[int(p) // G] for p in gpos],
                "beam_score": seqscore.tolist()}


# --------------------------------------------------------------------------------------------------------------
# trainer pieces
# --------------------------------------------------------------------------------------------------------------
def grpo_config(recipe: dict, on_gpu: bool, weights: list[float], num_generations: int):
    """``trl.GRPOConfig`` from the recipe's ``grpo`` section with llmrec's defaults."""
    from trl import GRPOConfig

    kw = {"output_dir": str(recipe["output_dir"]), "seed": int(recipe["seed"]), "data_seed": int(recipe["seed"]),
          "report_to": "none", "logging_steps": 5, "save_strategy": "steps", "save_steps": 200,
          "save_total_limit": 2, "per_device_train_batch_size": 2 * num_generations, "learning_rate": 1e-5,
          "lr_scheduler_type": "constant", "warmup_steps": 0, "num_train_epochs": 1, "beta": 1e-3,
          "disable_dropout": True, "remove_unused_columns": False, "log_completions": False,
          "dataloader_num_workers": 0, "ddp_find_unused_parameters": False, "max_grad_norm": 1.0}
    kw.update(recipe["grpo"])
    given = recipe["grpo"].get("num_generations")
    if given is not None and int(given) != num_generations:
        raise LlmrecError(f"grpo.num_generations={given} differs from rollout.num_generations={num_generations}; "
                          "set the group size in rollout only")
    kw["num_generations"] = num_generations
    kw["reward_weights"] = weights
    kw["use_vllm"] = False      # rollouts are llmrec's (trie-constrained); vLLM serves batch inference
    kw.setdefault("max_completion_length", 64)
    return trl_config(GRPOConfig, kw, recipe, "grpo", on_gpu)


def rl_dataset(recipe: dict, rec, split):
    """The RL examples as a ``datasets.Dataset``: ``prompt`` (the exact inference prompt), ``target``,
    ``history``, ``user``."""
    import datasets as hfds

    d = recipe["data"]
    max_hist = int(d["max_history"] or rec.prompt_cfg.get("max_history") or 20)
    ex = training_examples(split, d["positions"], max_history=max_hist, min_history=int(d["min_history"]),
                           max_examples=d["max_examples"], seed=int(d["seed"]))
    prompts = [rec.history_prompt(h) for h in ex["history"]]
    return hfds.Dataset.from_dict({"prompt": prompts, "target": ex["target"].tolist(),
                                   "history": [list(h) for h in ex["history"]], "user": ex["user"].tolist()})


def load_policy(recipe: dict, on_gpu: bool):
    """``(model, tokenizer, sid_table, info, model_dir)`` of the starting model, ready for training."""
    from llmrec.models.vocab import INFO_FILE
    from llmrec.training.sft import load_model

    model_dir = Path(recipe["model"]["path"])
    if not (model_dir / INFO_FILE).is_file():
        raise LlmrecError(f"model.path {model_dir}: not an llmrec model folder (no {INFO_FILE}); give the final/ "
                          "folder of an SFT run")
    m = dict(recipe["model"])
    rcp = {"model": {**m, "trust_remote_code": m["trust_remote_code"]}, "peft": recipe["peft"]}
    model, tok, table, info = load_model(model_dir, rcp, on_gpu)
    return model, tok, table, info, model_dir


def _engine(trainer) -> str:
    """How the trainer is distributed, for the log: DeepSpeed ZeRO stage, DDP, or a single process."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        cfg = trainer.accelerator.state.deepspeed_plugin.deepspeed_config
        return f"DeepSpeed ZeRO-{cfg.get('zero_optimization', {}).get('stage', '?')}"
    return str(trainer.accelerator.distributed_type).split(".")[-1]


def _setup(recipe: dict):
    import torch

    on_gpu = torch.cuda.is_available()
    # `accelerate launch --use_deepspeed` (or a DEEPSPEED config) also works on CPU (gloo): keep it then
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if not on_gpu and not deepspeed:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")   # rollout_func is TRL's documented experimental hook
    from accelerate import PartialState
    from transformers import set_seed

    state = PartialState(cpu=not on_gpu and not deepspeed)
    set_seed(int(recipe["seed"]))
    return on_gpu, state


def train_grpo(recipe: dict) -> Path:
    """Run a ``method: grpo`` recipe on the current process(es); returns ``OUTPUT_DIR/final``."""
    from trl import GRPOTrainer

    from llmrec.data_builders import load_split
    from llmrec.inference.recommend import Recommender
    from llmrec.models.vocab import load_items
    from llmrec.training.rewards import build_rewards
    from llmrec.training.sft import check_sids_survive_decoding

    t0, cpu0 = time.time(), cpu_seconds()
    on_gpu, state = _setup(recipe)
    run_dir = Path(recipe["output_dir"])
    model, tok, table, info, model_dir = load_policy(recipe, on_gpu)
    check_sids_survive_decoding(tok, table, info)     # else TRL's decoded completions lose the SIDs (rewards 0)
    prompt = dict(info.prompt or {})
    rec = Recommender(model, tok, table, info, items=load_items(model_dir))
    split = load_split(recipe["data"]["dataset"], recipe["data"]["split"])
    if split.n_items != table.n_items:
        raise LlmrecError(f"{recipe['data']['dataset']} has {split.n_items} items, the model's SID table "
                          f"{table.n_items}")
    with state.main_process_first():
        train_ds = rl_dataset(recipe, rec, split)
    ro = recipe["rollout"]
    G = int(ro["num_generations"])
    funcs, weights = build_rewards(recipe["rewards"], table)
    args = grpo_config(recipe, on_gpu, weights, G)
    rollout = SidRollout(Recommender(model, tok, table, info), mode=ro["mode"], num_beams=ro["beams"],
                         temperature=ro["temperature"], batch_size=int(ro["batch_size"]))
    callbacks, peft = rl_callbacks_and_peft(recipe, model, tok, table, info, prompt, model_dir, run_dir,
                                            f"GRPO: {run_dir.name}", GRPO_PANELS)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train_ds, processing_class=tok,
                          peft_config=peft, callbacks=callbacks, rollout_func=rollout)
    if state.is_main_process:
        n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        log.info("GRPO: %s trainable parameters (%s), %d prompts, groups of %d (%s rollouts), rewards %s, "
                 "%d process(es) on %s (%s)", f"{n_train:,}", recipe["peft"]["method"], len(train_ds), G, ro["mode"],
                 dict(zip([f.__name__ for f in funcs], weights)), state.num_processes, "GPU" if on_gpu else "CPU",
                 _engine(trainer))
    resume = resume_arg(recipe)
    result = trainer.train(resume_from_checkpoint=resume)

    final = run_dir / FINAL
    state.wait_for_everyone()
    if state.is_main_process:
        save_final(trainer, model_dir, final, recipe, prompt, "grpo")
        evals = read_evals(run_dir / "eval")
        report = {"method": "grpo", "global_step": result.global_step, "train_loss": result.training_loss,
                  "train_runtime_s": result.metrics.get("train_runtime"), "wall_s": round(time.time() - t0, 1),
                  "cpu_s_main_process": round(cpu_seconds() - cpu0, 1), "num_processes": state.num_processes,
                  "rollout_calls": rollout.calls, "rollout_s_main_process": round(rollout.seconds, 1),
                  "device": "cuda" if on_gpu else "cpu", "resumed_from": resume, "eval": evals,
                  "log_history": trainer.state.log_history}
        from llmrec.artifacts import write_json

        write_json(final / "train_report.json", report)
        plot_curves(trainer.state.log_history, run_dir / "curves.png", f"GRPO: {run_dir.name}", GRPO_PANELS, evals)
        log.info("final model -> %s (curves: %s)", final, run_dir / "curves.png")
    state.wait_for_everyone()
    return final
