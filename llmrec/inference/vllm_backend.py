"""vLLM backend: trie-constrained beam search on vLLM, with the ranking of the transformers backend.

vLLM has no per-request logits processor callable any more, so the search is llmrec's own
(:func:`~llmrec.inference.constrained.beam_search`, the loop every backend shares, through the inference stage's
:class:`~llmrec.inference.constrained.PrefixStateScorer`) and vLLM only scores one step at a time:
:class:`VllmScorer` turns every live beam into one request ``TokensPrompt(prompt_ids + prefix)`` with
``max_tokens=1``, ``allowed_token_ids`` = the beam's trie children and ``logprobs`` = how many of them the search can
use. All beams of all prompts of a batch go to vLLM in one ``llm.generate`` call per step; vLLM schedules them
and prefix caching (on by default here) reuses the prompt's KV blocks across the steps and across the beams.

**Scores.** The engine runs with ``logprobs_mode="processed_logprobs"``: returned log-probabilities are computed
after the ``allowed_token_ids`` mask, i.e. ``log_softmax`` over the beam's trie children. That is exactly the
transformers backend's score (``renormalize=True``: the model's next-token distribution restricted to the catalog
at each step; see :mod:`llmrec.inference.constrained`), so both backends rank items by the same number and their
top-K lists agree up to floating-point noise. A beam only needs its best ``num_beams`` children (no other child
can enter the per-prompt top ``num_beams``), so each request asks for ``min(#children, num_beams)`` log-probs;
the engine's ``max_logprobs`` must be at least ``num_beams``.

**LoRA.** ``lora=ADAPTER_DIR`` serves an adapter on top of the model folder (the extended base it was trained on)
through vLLM's LoRA support. vLLM cannot apply adapters that also train embedding rows (``modules_to_save``
``embed_tokens``/``lm_head``, ``trainable_token_indices``: what SID training usually needs); serve the merged
``final/`` folder of the run instead, or train the adapter with ``peft.train_embeddings: none``.

vLLM is a GPU-only dependency: it is imported when a backend is built, and a missing install raises a clear
:class:`LlmrecError` naming the ``gpu`` extra. The step loop's logic is tested on CPU with an engine that honours
the same ``generate`` contract (``tests/test_vllm_backend.py``); ``scripts/gpu_check.sh`` runs the real thing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from llmrec.errors import LlmrecError
from llmrec.inference.constrained import NEG_INF, BeamResult, PrefixStateScorer, beam_search
from llmrec.inference.trie import Trie

log = logging.getLogger(__name__)

GPU_EXTRA = "pip install 'llmrec[gpu]'  (vLLM runs on CUDA GPUs only)"


def import_vllm():
    """``vllm`` or a clear :class:`LlmrecError` naming the ``gpu`` extra."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise LlmrecError(f"the vllm backend needs vLLM: {GPU_EXTRA}. ({e})") from None
    return vllm


def _logprob_value(x) -> float:
    """vLLM's ``Logprob`` object (``.logprob``) or a plain float."""
    return float(getattr(x, "logprob", x))


class VllmScorer:
    """Scores for :class:`~llmrec.inference.constrained.PrefixStateScorer` from an engine with vLLM's
    ``LLM.generate`` contract (``PrefixStateScorer`` keeps each live beam's prompt index and prefix; this turns
    them into requests).

    ``llm.generate(prompts, sampling_params, use_tqdm=False[, lora_request=...])`` takes a list of
    ``TokensPrompt`` and an equally long list of ``SamplingParams``, and returns one ``RequestOutput`` per prompt
    whose ``outputs[0].logprobs[0]`` maps token id -> ``Logprob`` (``.logprob``) for the requested top tokens.
    ``sampling_params`` / ``tokens_prompt`` build those objects (default: vLLM's classes).
    """

    def __init__(self, llm, prompt_ids: Sequence[Sequence[int]], num_beams: int, lora_request=None,
                 sampling_params: Callable[..., Any] | None = None, tokens_prompt: Callable[..., Any] | None = None):
        if sampling_params is None or tokens_prompt is None:
            import_vllm()
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            sampling_params = sampling_params or SamplingParams
            tokens_prompt = tokens_prompt or TokensPrompt
        self.llm = llm
        self.prompts = [list(map(int, p)) for p in prompt_ids]
        self.num_beams = int(num_beams)
        self.lora_request = lora_request
        self.make_params = sampling_params
        self.make_prompt = tokens_prompt
        self.requests = 0
        self.steps = 0

    def __call__(self, prompt_index, prefixes, cand_rows, cand_tokens):
        rows = cand_rows.cpu()
        n_rows = len(prompt_index)
        counts = torch.bincount(rows, minlength=n_rows).tolist()
        starts, acc = [0] * n_rows, 0
        for r, c in enumerate(counts):
            starts[r] = acc
            acc += c
        toks_l = cand_tokens.cpu().tolist()
        pidx = prompt_index.cpu().tolist()
        pre = prefixes.cpu().tolist()
        live = [r for r in range(n_rows) if counts[r]]
        prompts = [self.make_prompt(prompt_token_ids=self.prompts[pidx[r]] + pre[r]) for r in live]
        params = [self.make_params(max_tokens=1, temperature=0.0, logprobs=min(counts[r], self.num_beams),
                                   allowed_token_ids=toks_l[starts[r]: starts[r] + counts[r]], detokenize=False)
                  for r in live]
        kw = {"use_tqdm": False}
        if self.lora_request is not None:
            kw["lora_request"] = self.lora_request
        outs = self.llm.generate(prompts, params, **kw)
        if len(outs) != len(live):
            raise LlmrecError(f"vLLM returned {len(outs)} outputs for {len(live)} requests")
        vals = torch.full((len(toks_l),), NEG_INF)
        for r, out in zip(live, outs):
            steps = out.outputs[0].logprobs
            if not steps:
                raise LlmrecError("vLLM returned no log-probs: the engine needs logprobs enabled "
                                  "(max_logprobs >= num_beams)")
            lp = steps[0]
            for j in range(starts[r], starts[r] + counts[r]):
                v = lp.get(toks_l[j])
                if v is not None:
                    vals[j] = _logprob_value(v)
        self.requests += len(live)
        self.steps += 1
        return vals


def vllm_beam_search(llm, prompt_ids: Sequence[Sequence[int]], trie: Trie, num_beams: int = 10,
                     k: int | None = None, lora_request=None, sampling_params=None, tokens_prompt=None) -> BeamResult:
    """Top-``k`` catalog items (and scores) per prompt (token-id lists) by trie-constrained beam search on vLLM.

    Same loop, same trie, same score as :func:`llmrec.inference.hf.constrained_beam_search` (module docstring).
    """
    scores = VllmScorer(llm, prompt_ids, num_beams, lora_request=lora_request, sampling_params=sampling_params,
                        tokens_prompt=tokens_prompt)
    # vLLM's processed log-probs are already log_softmax over the allowed tokens: no renormalisation (it would
    # also be wrong, since only each beam's best num_beams children are returned).
    return beam_search(PrefixStateScorer(len(scores.prompts), scores), trie.to("cpu"), len(scores.prompts),
                       num_beams=num_beams, k=k, renormalize=False, device="cpu")


def check_lora_adapter(path: str | os.PathLike) -> dict:
    """The adapter's config, after checking vLLM can serve it (no trained embedding rows)."""
    p = Path(path)
    cfg_file = p / "adapter_config.json"
    if not cfg_file.is_file():
        raise LlmrecError(f"{p}: not a PEFT adapter folder (no adapter_config.json)")
    cfg = json.loads(cfg_file.read_text())
    saved = set(cfg.get("modules_to_save") or [])
    if saved & {"embed_tokens", "lm_head"} or cfg.get("trainable_token_indices"):
        raise LlmrecError(f"{p}: the adapter trains embedding rows (modules_to_save / trainable_token_indices), "
                          "which vLLM's LoRA cannot serve; serve the merged model folder of the run (final/) or "
                          "train the adapter with peft.train_embeddings: none")
    return cfg


class VllmBackend:
    """What :class:`~llmrec.inference.recommend.Recommender` calls for ``backend="vllm"``: one vLLM engine
    (``vllm.LLM``) and, optionally, a LoRA adapter. ``search(prompt_ids, trie, num_beams, k)`` -> BeamResult."""

    name = "vllm"

    def __init__(self, llm, lora_request=None, sampling_params=None, tokens_prompt=None):
        self.llm = llm
        self.lora_request = lora_request
        self.sampling_params = sampling_params
        self.tokens_prompt = tokens_prompt

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike, lora: str | os.PathLike | None = None, max_beams: int = 50,
                       dtype: str = "auto", gpu_memory_utilization: float = 0.85, seed: int = 0,
                       trust_remote_code: bool = False, **engine_kwargs) -> "VllmBackend":
        """Start a vLLM engine on the model folder (prefix caching on, processed log-probs, ``max_logprobs``
        = ``max_beams``), with LoRA enabled when ``lora`` names an adapter."""
        import_vllm()
        from vllm import LLM

        kw: dict = dict(model=str(path), tokenizer=str(path), dtype=dtype, seed=seed,
                        gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                        max_logprobs=max(int(max_beams), 20), logprobs_mode="processed_logprobs",
                        trust_remote_code=trust_remote_code)
        lora_request = None
        if lora is not None:
            from vllm.lora.request import LoRARequest

            cfg = check_lora_adapter(lora)
            kw.update(enable_lora=True, max_lora_rank=max(8, int(cfg.get("r", 16))), max_loras=1)
            lora_request = LoRARequest("llmrec-adapter", 1, str(lora))
        kw.update(engine_kwargs)
        try:
            llm = LLM(**kw)
        except TypeError as e:
            raise LlmrecError(f"vLLM engine arguments not accepted by this vLLM version: {e}") from None
        return cls(llm, lora_request=lora_request)

    def search(self, prompt_ids: Sequence[Sequence[int]], trie: Trie, num_beams: int, k: int) -> BeamResult:
        return vllm_beam_search(self.llm, prompt_ids, trie, num_beams=num_beams, k=k, lora_request=self.lora_request,
                                sampling_params=self.sampling_params, tokens_prompt=self.tokens_prompt)


def vllm_recommender(path: str | os.PathLike, lora: str | os.PathLike | None = None, batch_size: int = 256,
                     num_beams: int | None = None, max_beams: int = 50, trust_remote_code: bool = False,
                     backend: VllmBackend | None = None, **engine_kwargs):
    """A :class:`~llmrec.inference.recommend.Recommender` whose searches run on vLLM (no transformers model is
    loaded). ``backend`` reuses an engine (or passes a CPU stand-in in tests)."""
    from transformers import AutoTokenizer

    from llmrec.inference.recommend import Recommender
    from llmrec.models.vocab import SID_SUBDIR, load_items, read_info
    from llmrec.tokenizers.sid_table import SidTable

    path = Path(path)
    info = read_info(path)
    table = SidTable.load(path / SID_SUBDIR)
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if backend is None:
        backend = VllmBackend.from_model_dir(path, lora=lora, max_beams=max(max_beams, num_beams or 0),
                                             trust_remote_code=trust_remote_code, **engine_kwargs)
    return Recommender(None, tok, table, info, items=load_items(path), num_beams=num_beams, batch_size=batch_size,
                       backend=backend)
