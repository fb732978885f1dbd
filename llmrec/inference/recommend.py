"""Recommendations from a model folder: ``Recommender.from_pretrained(path).recommend(histories, k=10)``.

The folder is what ``llmrec model extend`` or a training run writes (see :mod:`llmrec.models.vocab`): model,
tokenizer, SID table, item titles and ``llmrec.json``. Prompts are rendered by
:mod:`llmrec.data_builders.prompts` with the task and template the model was trained with (``llmrec.json``
``prompt``: ``seqrec`` template 0 for histories; ``itemsearch`` / ``prefsearch`` template 0 for chat requests
without / with liked items), and answered by trie-constrained beam search over the *whole* catalog.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

DEFAULT_PROMPT = {"task": "seqrec", "template": 0, "max_history": 20, "system": "default",
                  "chat_task": "itemsearch", "chat_history_task": "prefsearch"}


@dataclass
class Recommendation:
    """Ranked items for one request, best first, with their scores (log-probabilities, see
    :mod:`llmrec.inference.constrained`) and titles."""

    items: list[int]
    scores: list[float]
    titles: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


class Recommender:
    """A model that answers with catalog items. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, sid_table, info, items=None, num_beams: int | None = None,
                 batch_size: int = 16, renormalize: bool = True, backend=None, segmentations: int = 1,
                 seed: int = 0):
        from llmrec.models.vocab import LmInfo

        self.model = model
        # ``backend`` (e.g. :class:`~llmrec.inference.vllm_backend.VllmBackend`) runs the searches instead of the
        # transformers ``model``: ``backend.search(prompt_ids, trie, num_beams, k) -> BeamResult``.
        self.backend = backend
        if model is None and backend is None:
            raise LlmrecError("Recommender needs a model or a backend")
        self.tokenizer = tokenizer
        self.sid_table = sid_table
        self.info: LmInfo = info
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.renormalize = renormalize
        # ActionPiece only: histories segmented ``segmentations`` times (set permutations, seeded by ``seed``),
        # one search each, ranked lists fused by sum of 1/log2(rank+2). 1 = the deterministic segmentation.
        self.segmentations = int(segmentations)
        self.seed = int(seed)
        self.prompt_cfg = {**DEFAULT_PROMPT, **(info.prompt or {})}
        n = sid_table.n_items
        self.titles = np.full(n + 1, "", dtype=object)
        self.original_ids = (sid_table.original_ids if getattr(sid_table, "original_ids", None) is not None
                             else np.asarray([""] + [str(i) for i in range(1, n + 1)], dtype=object))
        if items is not None and len(items):
            ids = items["item"].to_numpy()
            if ids.max() > n:
                raise LlmrecError(f"items.parquet has item {ids.max()} but the SID table only {n} items")
            if "title" in items:
                self.titles[ids] = items["title"].fillna("").astype(str).to_numpy()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None, dtype="auto",
                        trust_remote_code: bool = False, backend: str = "hf", **kwargs) -> "Recommender":
        """Load model, tokenizer, SID table, titles and prompt settings from one folder.

        ``backend="vllm"`` serves the model with vLLM instead of transformers (GPU; extra keyword arguments go to
        :func:`~llmrec.inference.vllm_backend.vllm_recommender`, e.g. ``lora=ADAPTER_DIR``).
        """
        from llmrec.models.vocab import load_extended, load_items

        if backend == "vllm":
            from llmrec.inference.vllm_backend import vllm_recommender

            return vllm_recommender(path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
        if backend != "hf":
            raise LlmrecError(f"unknown backend {backend!r}; expected 'hf' or 'vllm'")

        model, tok, table, info = load_extended(path, device=device, dtype=dtype,
                                                trust_remote_code=trust_remote_code)
        return cls(model, tok, table, info, items=load_items(path), **kwargs)

    # --- the catalog trie ----------------------------------------------------------------------------------
    @cached_property
    def trie(self):
        """Trie over every catalog item's SID tokens (wrapped if the model was extended with ``--wrap``)."""
        from llmrec.inference.trie import sid_trie

        return sid_trie(self.sid_table, self.tokenizer, wrap=self.info.wrap, sid_begin=self.info.sid_begin,
                        sid_end=self.info.sid_end).to(self.device)

    @property
    def device(self):
        return next(self.model.parameters()).device if self.model is not None else torch.device("cpu")

    # --- prompts -------------------------------------------------------------------------------------------
    def _system(self):
        from llmrec.data_builders.prompts import SYSTEM_PROMPT

        s = self.prompt_cfg.get("system", "default")
        return SYSTEM_PROMPT if s == "default" else s

    def _check_items(self, items: Iterable, what: str) -> list[int]:
        out = []
        n = self.sid_table.n_items
        for j, x in enumerate(items):
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or not 1 <= int(x) <= n:
                raise LlmrecError(f"{what}[{j}] = {x!r}: expected an item id in 1..{n}")
            out.append(int(x))
        return out

    def render_history(self, history: Sequence[int], rng=None) -> str:
        """The history as prompt text (the last ``max_history`` items). ``rng`` (ActionPiece only): draw a
        set-permutation segmentation instead of the deterministic one."""
        cap = int(self.prompt_cfg.get("max_history") or 0)
        hist = list(history)[-cap:] if cap > 0 else list(history)
        return self.info.history_text(self.sid_table, hist, rng=rng)

    def history_prompt(self, history: Sequence[int], rng=None) -> str:
        """The exact prompt string for a history (task ``prompt.task``, template ``prompt.template``)."""
        from llmrec.data_builders.prompts import prompt_text

        history = self._check_items(history, "history")
        msgs = self._render(self.prompt_cfg["task"], int(self.prompt_cfg.get("template", 0)),
                            history=self.render_history(history, rng=rng))
        return prompt_text(self.tokenizer, msgs)

    def request_prompt(self, request: str, liked: Sequence[int] = ()) -> str:
        """The prompt for a natural-language request, optionally with items the user liked (chat)."""
        from llmrec.data_builders.prompts import prompt_text

        liked = self._check_items(liked, "liked")
        request = str(request).strip()
        if not request:
            raise LlmrecError("empty request")
        if liked:
            msgs = self._render(self.prompt_cfg["chat_history_task"], 0, history=self.render_history(liked),
                                query=request)
        else:
            msgs = self._render(self.prompt_cfg["chat_task"], 0, query=request)
        return prompt_text(self.tokenizer, msgs)

    def _render(self, task: str, template: int, **fields) -> list[dict]:
        from llmrec.data_builders import prompts

        if task not in prompts.TEMPLATES:
            raise LlmrecError(f"prompt task {task!r} (from llmrec.json) is not defined in "
                              f"llmrec.data_builders.prompts; known: {sorted(prompts.TEMPLATES)}")
        try:
            return prompts.render_messages(task, template, system=self._system(), **fields)
        except KeyError as e:
            raise LlmrecError(f"prompt task {task!r} needs the field {e}") from None

    # --- decoding ------------------------------------------------------------------------------------------
    def recommend_prompts(self, prompts: Sequence[str], k: int = 10, num_beams: int | None = None,
                          batch_size: int | None = None, exclude: Sequence[Sequence[int]] | None = None,
                          progress: bool = False) -> list[Recommendation]:
        """Top-``k`` items for each prompt string. Prompts are batched by length (left padding).

        ``exclude[i]`` (e.g. the history) is removed from prompt ``i``'s list; the search then runs with
        ``k + len(exclude[i])`` results so ``k`` remain when the catalog allows.
        """
        k = int(k)
        if k < 1:
            raise LlmrecError(f"k must be >= 1, got {k}")
        bs = batch_size or self.batch_size
        extra = max((len(set(e)) for e in exclude), default=0) if exclude else 0
        kk = min(k + extra, self.sid_table.n_items)
        beams = max(num_beams or self.num_beams or kk, kk)
        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = np.argsort([len(e) for e in enc], kind="stable")
        out: list[Recommendation | None] = [None] * len(prompts)
        batches = [order[s: s + bs] for s in range(0, len(order), bs)]
        it = batches
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(batches, desc="recommend", unit="batch")
        for idx in it:
            if self.backend is not None:
                res = self.backend.search([enc[i] for i in idx], self.trie, num_beams=beams, k=kk)
            else:
                res = self._hf_search(enc, idx, beams, kk)
            ranked, score_lists = res.ranked(), res.score_lists()   # one conversion per batch
            for r, i in enumerate(idx):
                items, scores = ranked[r], score_lists[r]
                if exclude:
                    ex = set(int(x) for x in exclude[i])
                    keep = [j for j, x in enumerate(items) if x not in ex]
                    items, scores = [items[j] for j in keep], [scores[j] for j in keep]
                items, scores = items[:k], scores[:k]
                out[i] = Recommendation(items, [round(float(s), 6) for s in scores],
                                        [str(self.titles[x]) for x in items])
        return out  # type: ignore[return-value]

    def _hf_search(self, enc, idx, beams: int, kk: int):
        """Left-pad the prompts ``enc[idx]`` and search them with the transformers model."""
        from llmrec.inference.hf import constrained_beam_search, left_pad

        ids, mask = left_pad([enc[i] for i in idx], self.tokenizer.pad_token_id)
        return constrained_beam_search(self.model, ids, self.trie, mask, num_beams=beams, k=kk,
                                       renormalize=self.renormalize)

    def recommend(self, histories: Sequence[Sequence[int]], k: int = 10, num_beams: int | None = None,
                  batch_size: int | None = None, exclude_history: bool = False,
                  progress: bool = False) -> list[Recommendation]:
        """Top-``k`` next items for each history (item ids, oldest first).

        With an ActionPiece model and ``segmentations > 1`` (see ``__init__``), each history is searched once per
        segmentation and the lists are fused; scores are then the fused scores (sum of ``1/log2(rank+2)``).
        """
        if histories and isinstance(histories[0], (int, np.integer)):
            histories = [histories]  # a single history
        from llmrec.models.vocab import is_actionpiece

        q = self.segmentations
        if q <= 1 or not is_actionpiece(self.sid_table):
            prompts = [self.history_prompt(h) for h in histories]
            return self.recommend_prompts(prompts, k=k, num_beams=num_beams, batch_size=batch_size,
                                          exclude=histories if exclude_history else None, progress=progress)
        from llmrec.tokenizers.actionpiece.tokenizer import fuse_ranked_lists

        prompts = []
        for h in histories:
            rng = np.random.default_rng(self.seed)  # the same q segmentations for a history, whatever the batch
            prompts += [self.history_prompt(h, rng=rng) for _ in range(q)]
        rep = [h for h in histories for _ in range(q)]
        recs = self.recommend_prompts(prompts, k=k, num_beams=num_beams, batch_size=batch_size,
                                      exclude=rep if exclude_history else None, progress=progress)
        out = []
        for i in range(len(histories)):
            items, scores = fuse_ranked_lists([r.items for r in recs[i * q:(i + 1) * q]], k=k, with_scores=True)
            out.append(Recommendation(items, [round(float(s), 6) for s in scores],
                                      [str(self.titles[x]) for x in items]))
        return out

    def chat(self, request: str, liked: Sequence[int] = (), k: int = 10,
             num_beams: int | None = None) -> Recommendation:
        """Items answering a natural-language request (optionally given items the user liked)."""
        return self.recommend_prompts([self.request_prompt(request, liked)], k=k, num_beams=num_beams)[0]

    def describe(self, item: int) -> str:
        t = self.titles[item] if item < len(self.titles) else ""
        return f"{t or '(no title)'}  [item {item}, {self.info.item_text(self.sid_table, item)}]"


def read_requests(path: str | Path) -> list[dict]:
    """Read ``{"user": ..., "history": [item, ...]}`` lines (other fields are passed through)."""
    import json

    from llmrec.errors import where

    path = Path(path)
    if not path.is_file():
        raise LlmrecError(f"{path}: input file not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise LlmrecError(f"{where(path, n)}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise LlmrecError(f"{where(path, n)}: expected a JSON object with a 'history' list")
            h = rec.get("history")
            if not isinstance(h, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in h):
                raise LlmrecError(f"{where(path, n, 'history')}: expected a list of item ids (ints), got {h!r}")
            rec.setdefault("user", n)
            rec["_line"] = n
            out.append(rec)
    if not out:
        raise LlmrecError(f"{path}: no requests (empty file)")
    return out


def requests_from_split(dataset: str | Path, protocol: str = "loo", part: str = "test",
                        limit: int | None = None) -> list[dict]:
    """Requests (user, history, target) for the examples of a split part, so ``llmrec eval`` can score them."""
    from llmrec.data_builders.splits import load_split

    sp = load_split(dataset, protocol)
    ex = sp.examples(part)
    if limit:
        ex = ex.iloc[:limit]
    return [{"user": int(u), "history": [int(x) for x in h], "target": int(t) if np.ndim(t) == 0 else
             [int(x) for x in t]} for u, h, t in zip(ex["user"], ex["history"], ex["target"])]


def recommend_file(model: str | Path, requests: list[dict], output: str | Path, k: int = 10,
                   num_beams: int | None = None, batch_size: int = 16, device: str | None = None,
                   chunk: int = 512, resume: bool = True, exclude_history: bool = False,
                   recommender: Recommender | None = None) -> Path:
    """Write one output line per request: the input fields plus ``ranked``, ``scores``, ``titles``.

    Results are appended chunk by chunk to ``OUTPUT.partial`` and renamed when complete; rerunning the same
    command resumes after the last finished chunk.
    """
    import json

    from tqdm.auto import tqdm

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    done = 0
    if partial.exists() and resume:
        with open(partial, encoding="utf-8") as f:
            users = [json.loads(line).get("user") for line in f if line.strip()]
        done = len(users)
        if done > len(requests) or users != [r.get("user") for r in requests[:done]]:
            raise LlmrecError(f"{partial}: left by a run on other requests; delete it or pass --no-resume")
        if done:
            log.info("resuming %s after %d finished requests", partial, done)
    elif partial.exists():
        partial.unlink()
    rec = recommender or Recommender.from_pretrained(model, device=device, batch_size=batch_size)
    with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(requests), initial=done, desc="recommend",
                                                          unit="user") as bar:
        for s in range(done, len(requests), chunk):
            part = requests[s: s + chunk]
            hist = []
            for r in part:
                try:
                    hist.append(rec._check_items(r["history"], "history"))
                except LlmrecError as e:
                    raise LlmrecError(f"request line {r.get('_line', '?')}: {e}") from None
            recs = rec.recommend(hist, k=k, num_beams=num_beams, exclude_history=exclude_history)
            for r, res in zip(part, recs):
                row = {key: v for key, v in r.items() if not key.startswith("_")}
                row.update(ranked=res.items, scores=res.scores, titles=res.titles)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(part))
    os.replace(partial, output)
    return output
