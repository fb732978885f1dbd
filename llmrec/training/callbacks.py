"""Trainer callbacks: loadable checkpoints, constrained-beam evaluation at chosen steps, a test interrupt."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from llmrec.artifacts import write_json

log = logging.getLogger(__name__)


class LlmrecFilesCallback(TrainerCallback):
    """Put ``llmrec.json``, ``sid/`` and ``items.parquet`` into every checkpoint, so each loads on its own
    (``load_extended``, ``llmrec recommend --model CHECKPOINT``)."""

    def __init__(self, model0: Path, prompt: dict):
        self.model0, self.prompt = Path(model0), prompt

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            from llmrec.training.sft import write_llmrec_files

            ck = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ck.is_dir():
                write_llmrec_files(self.model0, ck, self.prompt)
                tok = kw.get("processing_class")
                if tok is not None and not (ck / "tokenizer_config.json").is_file():
                    tok.save_pretrained(ck)
        return control


class InterruptCallback(TrainerCallback):
    """Kill the process (SIGKILL: no cleanup, like a crash or a pre-empted job) right after the checkpoint of
    step ``step`` is written. For testing resume (``interrupt_after_step`` in a recipe)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step >= self.step:
            log.warning("interrupt_after_step=%d: killing the process at step %d", self.step, state.global_step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        return control


def eval_steps(at: list, max_steps: int) -> set[int]:
    """Steps named by ``eval.at``: an int >= 1 is a step, a float in (0, 1] a fraction of training,
    ``"end"`` the last step."""
    out = set()
    for a in at:
        if a == "end":
            out.add(max_steps)
        elif isinstance(a, float) and 0 < a <= 1:
            out.add(max(1, round(a * max_steps)))
        elif isinstance(a, int) and a >= 1:
            out.add(min(a, max_steps))
        else:
            from llmrec.errors import LlmrecError
            raise LlmrecError(f"eval.at: {a!r} is not a step (int >= 1), a fraction in (0, 1] or 'end'")
    return out


class SidEvalCallback(TrainerCallback):
    """Recall/NDCG of trie-constrained beam search on validation users at the steps ``eval.at`` names.

    Users are a fixed random sample (``eval.users``, ``eval.seed``) of the split's validation examples, the
    prompts exactly those of inference (:class:`~llmrec.inference.recommend.Recommender`). Under several
    processes each rank decodes an equal share (padded, so collective ops under ZeRO-3 stay in step) and the
    results are gathered. Metrics go to ``OUTPUT_DIR/eval/step-N.json`` and to the trainer's log history.
    """

    def __init__(self, recipe: dict, tokenizer, sid_table, info, prompt: dict, out_dir: Path):
        from llmrec.data_builders import load_split

        self.cfg = recipe["eval"]
        self.tok, self.table, self.info = tokenizer, sid_table, info
        self.prompt = prompt
        self.out_dir = Path(out_dir)
        ds = recipe["data"]["dataset"]
        if not ds:
            from llmrec.errors import LlmrecError
            raise LlmrecError("eval.at needs data.dataset (the validation users of data.split)")
        split = load_split(ds, recipe["data"]["split"])
        ex = split.examples(self.cfg["split"])
        n = int(self.cfg["users"] or 0)
        if n and n < len(ex):
            ex = ex.iloc[np.sort(np.random.default_rng(int(self.cfg["seed"])).choice(len(ex), n, replace=False))]
        self.histories = [list(map(int, h)) for h in ex["history"]]
        self.targets = ex["target"].astype(int).tolist()
        self.n_items = split.n_items
        self.steps: set[int] = set()
        self.done: set[int] = set()

    def on_train_begin(self, args, state, control, **kw):
        self.steps = eval_steps(self.cfg["at"], state.max_steps)
        return control

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step in self.steps and state.global_step not in self.done:
            self.done.add(state.global_step)
            metrics = self.evaluate(model, state.global_step)
            if state.is_world_process_zero:
                state.log_history.append({**{f"sid_eval/{k}": v for k, v in metrics.items()},
                                          "step": state.global_step})
        return control

    def evaluate(self, model, step: int) -> dict:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        from llmrec.eval.protocol import evaluate_ranked_lists
        from llmrec.inference.recommend import Recommender

        st = PartialState()
        t0 = time.time()
        was_training = model.training
        model.eval()
        use_cache = getattr(model.config, "use_cache", None)
        model.config.use_cache = True
        idx = list(range(st.process_index, len(self.histories), st.num_processes))
        share = -(-len(self.histories) // st.num_processes)
        padded = idx + idx[:1] * (share - len(idx)) if idx else [0] * share
        rec = Recommender(model, self.tok, self.table, self.info, num_beams=int(self.cfg["beams"]),
                          batch_size=int(self.cfg["batch_size"]))
        rec.prompt_cfg = {**rec.prompt_cfg, **self.prompt}
        k = max(self.cfg["k"])
        import contextlib

        import torch
        # QLoRA: TRL keeps the trainable adapter/embedding copies in bf16 next to fp32 layers; decode under autocast
        dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
        device = next(model.parameters()).device
        ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if len(dtypes) > 1 and torch.bfloat16 in dtypes
               else contextlib.nullcontext())
        with torch.no_grad(), ctx:
            recs = rec.recommend([self.histories[i] for i in padded], k=k) if padded else []
        mine = [(i, r.items) for i, r in zip(padded[: len(idx)], recs)]
        allr = gather_object(mine) if st.num_processes > 1 else mine
        ranked = dict(allr)
        order = sorted(ranked)
        res = evaluate_ranked_lists([self.targets[i] for i in order], [ranked[i] for i in order],
                                    ks=tuple(self.cfg["k"]), n_items=self.n_items)
        model.config.use_cache = use_cache
        if was_training:
            model.train()
        m = {k_: float(v) for k_, v in res.metrics.items()}
        m["seconds"] = round(time.time() - t0, 1)
        m["step"] = step
        if st.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / f"step-{step}.json", m)
            shown = " ".join(f"{k_}={m[k_]:.4f}" for k_ in m if k_.startswith(("recall@", "ndcg@")))
            log.info("step %d: constrained-beam eval on %d %s users: %s (%.0f s)", step, len(order),
                     self.cfg["split"], shown, m["seconds"])
        return m
