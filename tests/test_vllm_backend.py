"""The vLLM backend's step loop on CPU: :class:`VllmScorer` + the shared beam search, fed by an engine that honours
vLLM's ``LLM.generate`` contract (TokensPrompt in, ``outputs[0].logprobs[0]`` of processed log-probs out, top-N
per request) and computes real scores with a transformers model. Its top-K lists must equal the transformers
backend's; the engine also checks every request the loop sends (prompt + a valid trie prefix, allowed ids = the
prefix's trie children, one new token). Real vLLM on a GPU: scripts/gpu_check.sh."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError


TORCH_THREADS = 1  # tests/conftest.py::_torch_threads


# --- stand-ins for vllm.SamplingParams / TokensPrompt / RequestOutput (same fields) ---------------------------
@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    logprobs: int | None = None
    allowed_token_ids: list[int] | None = None
    detokenize: bool = True


def TokensPrompt(prompt_token_ids):  # noqa: N802 - vLLM's TokensPrompt is a TypedDict
    return {"prompt_token_ids": list(prompt_token_ids)}


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


@dataclass
class TransformersEngine:
    """``generate`` with vLLM's contract and ``logprobs_mode="processed_logprobs"`` semantics, on a transformers
    model: log-probs after the ``allowed_token_ids`` mask, the top ``logprobs`` of them (plus the sampled token)."""

    model: object
    prompt_len: dict = field(default_factory=dict)    # prompt ids (tuple) -> True, to check requests
    trie: object = None
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append(len(prompts))
        seqs = [p["prompt_token_ids"] for p in prompts]
        for p, sp in zip(seqs, sampling_params):
            assert sp.max_tokens == 1 and sp.temperature == 0.0 and sp.allowed_token_ids
            assert sp.logprobs is not None and 1 <= sp.logprobs <= len(sp.allowed_token_ids)
            self._check_request(p, sp.allowed_token_ids)
        L = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), L), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, L - len(s):] = torch.tensor(s)
            mask[r, L - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
        out = []
        for r, (s, sp) in enumerate(zip(seqs, sampling_params)):
            allowed = torch.tensor(sp.allowed_token_ids)
            lp = torch.log_softmax(logits[r, allowed], -1)          # processed: renormalised over the allowed set
            order = torch.argsort(lp, descending=True, stable=True)
            top = {int(allowed[j]): Logprob(float(lp[j]), rank=n + 1) for n, j in enumerate(order[: sp.logprobs])}
            sampled = int(allowed[order[0]])                          # greedy (temperature 0)
            out.append(RequestOutput(s, [CompletionOutput([sampled], [top])]))
        return out

    def _check_request(self, seq, allowed):
        # the request is one of the prompts + a valid trie prefix, and allowed = that prefix's children
        for prompt in self.prompt_len:
            if tuple(seq[: len(prompt)]) == prompt:
                suffix = torch.tensor([seq[len(prompt):]], dtype=torch.long)
                node = self.trie.walk(suffix) if suffix.shape[1] else torch.zeros(1, dtype=torch.long)
                assert int(node[0]) >= 0 and not bool(self.trie.is_leaf(node)[0])
                _, toks, _ = self.trie.children(node)
                assert sorted(toks.tolist()) == sorted(allowed)
                return
        raise AssertionError("request does not start with any prompt")


@pytest.fixture(scope="module")
def sid_model(tiny_sid_lm, fallback_tokenizer_dir):
    return tiny_sid_lm(fallback_tokenizer_dir, (12, 8), seed=3)


@pytest.fixture(scope="module")
def hf_rec(sid_model):
    from llmrec.inference.recommend import Recommender

    return Recommender.from_pretrained(sid_model, device="cpu", dtype=torch.float32)


def _vllm_rec(sid_model, hf_rec, batch_size=8):
    from llmrec.inference.vllm_backend import VllmBackend, vllm_recommender

    engine = TransformersEngine(hf_rec.model)
    backend = VllmBackend(engine, sampling_params=SamplingParams, tokens_prompt=TokensPrompt)
    rec = vllm_recommender(sid_model, backend=backend, batch_size=batch_size)
    engine.trie = rec.trie
    return rec, engine


def test_vllm_step_loop_matches_transformers_backend(sid_model, hf_rec):
    rng = np.random.default_rng(0)
    n = hf_rec.sid_table.n_items
    hists = [list(map(int, rng.integers(1, n + 1, L))) for L in (1, 3, 7, 12, 2, 20, 5)]
    vrec, engine = _vllm_rec(sid_model, hf_rec)
    assert vrec.model is None                                   # no transformers model on the vLLM side
    engine.prompt_len = {tuple(hf_rec.tokenizer(vrec.history_prompt(h), add_special_tokens=False)["input_ids"]): 1
                         for h in hists}
    # 5 beams < 12 first-level children: each request asks only for its best 5 log-probs (pruned, still exact)
    for beams, k in ((5, 5), (10, 10), (16, 10)):
        ref = hf_rec.recommend(hists, k=k, num_beams=beams)
        got = vrec.recommend(hists, k=k, num_beams=beams)
        for a, b in zip(ref, got):
            assert b.items == a.items
            np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
            assert len(set(b.items)) == k and all(1 <= i <= n for i in b.items)
    # one generate call per decoding step per batch (2 SID levels -> 2 steps), all beams of all prompts batched
    assert engine.calls[:2] == [len(hists), len(hists) * 5]


def test_vllm_loop_exclude_history_and_batches(sid_model, hf_rec):
    rng = np.random.default_rng(1)
    n = hf_rec.sid_table.n_items
    hists = [list(map(int, rng.integers(1, n + 1, L))) for L in (4, 9, 1)]
    vrec, engine = _vllm_rec(sid_model, hf_rec, batch_size=2)
    engine.prompt_len = {tuple(hf_rec.tokenizer(vrec.history_prompt(h), add_special_tokens=False)["input_ids"]): 1
                         for h in hists}
    ref = hf_rec.recommend(hists, k=6, num_beams=12, exclude_history=True)
    got = vrec.recommend(hists, k=6, num_beams=12, exclude_history=True)
    assert [r.items for r in got] == [r.items for r in ref]
    assert all(not set(r.items) & set(h) for r, h in zip(got, hists))


def test_vllm_missing_logprobs_is_a_clear_error(sid_model, hf_rec):
    from llmrec.inference.vllm_backend import vllm_beam_search

    class NoLogprobs(TransformersEngine):
        def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
            return [RequestOutput(p["prompt_token_ids"], [CompletionOutput([0], [])]) for p in prompts]

    ids = hf_rec.tokenizer([hf_rec.history_prompt([1, 2])], add_special_tokens=False)["input_ids"]
    with pytest.raises(LlmrecError, match="max_logprobs"):
        vllm_beam_search(NoLogprobs(hf_rec.model), ids, hf_rec.trie, num_beams=4, sampling_params=SamplingParams,
                         tokens_prompt=TokensPrompt)


def test_without_vllm_a_clear_message(sid_model, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    from llmrec.inference.recommend import Recommender

    with pytest.raises(LlmrecError, match=r"llmrec\[gpu\]"):
        Recommender.from_pretrained(sid_model, backend="vllm")
    from llmrec.cli import main

    (tmp_path / "x.jsonl").write_text('{"user": 1, "history": [1, 2]}\n')   # a valid request: the backend fails
    capsys.readouterr()
    assert main(["recommend", "--model", str(sid_model), "--backend", "vllm", "--input", str(tmp_path / "x.jsonl"),
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "llmrec[gpu]" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_lora_adapter_check(tmp_path):
    from llmrec.inference.vllm_backend import check_lora_adapter

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"]}))
    assert check_lora_adapter(tmp_path / "ok")["r"] == 8
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["embed_tokens",
                                                                                                  "lm_head"]}))
    with pytest.raises(LlmrecError, match="embedding rows"):
        check_lora_adapter(tmp_path / "emb")
    with pytest.raises(LlmrecError, match="not a PEFT adapter"):
        check_lora_adapter(tmp_path)
