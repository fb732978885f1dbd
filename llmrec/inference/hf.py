"""Hugging Face backend: constrained beam search for decoder-only and encoder-decoder ``transformers`` models.

:func:`constrained_beam_search` runs llmrec's beam search (:func:`~llmrec.inference.constrained.beam_search`)
with a KV-cached scorer: one forward pass per step for all beams of all prompts, the cache reordered with the
surviving beams. For decoder-only models whose logits are a plain ``lm_head(hidden)`` (Qwen, Llama, Mistral,
GPT-2, ...; checked numerically once per model) only the rows of the trie's tokens are multiplied
(``hidden @ W[trie_vocab].T``): a few thousand SID rows instead of a 150k vocabulary.

:func:`generate_constrained` does the same through ``model.generate`` + :class:`TrieLogitsProcessor`, with a
clean generation config (:func:`beam_generation_config`), for users who prefer HF's beam search.

Generation configs of Instruct checkpoints carry ``do_sample``/``top_k``/``top_p``/``temperature``/
``repetition_penalty``; ``generate`` fills every option you leave unset from ``model.generation_config``, so a
constraint run under them silently loses valid tokens. Both functions ignore the checkpoint's config.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from llmrec.errors import LlmrecError
from llmrec.inference.constrained import INVALID_SCORE, BeamResult, TrieLogitsProcessor, _pack, beam_search
from llmrec.inference.trie import Trie

log = logging.getLogger(__name__)
_SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _plain_lm_head(model) -> bool:
    """Whether ``model(x).logits == lm_head(base_model(x).last_hidden_state)`` (checked once, cached)."""
    cached = getattr(model, "_llmrec_plain_head", None)
    if cached is not None:
        return cached
    ok = False
    try:
        head = model.get_output_embeddings()
        base = model.base_model
        cfg = model.config
        if (not cfg.is_encoder_decoder and base is not model and isinstance(head, torch.nn.Linear)
                and not any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in _SCALED_LOGITS)):
            dev = head.weight.device
            x = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], device=dev) % head.weight.shape[0]
            with torch.no_grad():
                full = model(input_ids=x).logits[:, -1].float()
                h = base(input_ids=x).last_hidden_state[:, -1]
                mine = torch.nn.functional.linear(h, head.weight, head.bias).float()
            tol = 1e-3 if head.weight.dtype == torch.float32 else 5e-2
            ok = bool(torch.allclose(full, mine, atol=tol * max(1.0, float(full.abs().max())), rtol=0))
    except Exception as e:  # noqa: BLE001 - any surprise means: use the full forward
        log.debug("sub-vocabulary logits disabled: %s", e)
        ok = False
    try:
        model._llmrec_plain_head = ok
    except Exception:  # noqa: BLE001
        pass
    return ok


class HFCausalScorer:
    """KV-cached :class:`~llmrec.inference.constrained.StepScorer` for a decoder-only model.

    Prompts are left-padded ``input_ids`` with ``attention_mask``; positions follow the mask (padding does not
    shift them), so a prompt scores the same alone or in a batch of different lengths.
    """

    def __init__(self, model, input_ids, attention_mask=None, trie: Trie | None = None, subvocab="auto",
                 log_probs: bool = False):
        self.model = model
        self.log_probs = log_probs
        self.input_ids = input_ids
        self.attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if bool((self.attention_mask[:, -1] == 0).any()):
            raise LlmrecError("prompts must be left-padded (the last position of every row must be a real token)")
        self.sub = None
        if trie is not None and not log_probs and (subvocab is True or
                                                   (subvocab == "auto" and _plain_lm_head(model))):
            head = model.get_output_embeddings()
            vocab = trie.vocab.to(head.weight.device)
            self.sub_w = head.weight[vocab]
            self.sub_b = head.bias[vocab] if head.bias is not None else None
            self.sub = torch.full((int(vocab.max()) + 1,), -1, dtype=torch.long, device=head.weight.device)
            self.sub[vocab] = torch.arange(len(vocab), device=head.weight.device)
        self.cache = None

    def _forward(self, ids, mask, pos):
        if self.sub is not None:
            out = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                        past_key_values=self.cache, use_cache=True)
            h = out.last_hidden_state[:, -1]
            return torch.nn.functional.linear(h, self.sub_w, self.sub_b), out.past_key_values
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=self.cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    def step(self, parents, tokens, cand_rows, cand_tokens):
        dev = self.input_ids.device
        if parents is None:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=self.model.config)
            mask = self.attention_mask
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            self.mask, self.last_pos = mask, pos[:, -1]
            logits, self.cache = self._forward(self.input_ids, mask, pos)
        else:
            parents, tokens = parents.to(dev), tokens.to(dev)
            self.cache.reorder_cache(parents)
            self.mask = torch.cat([self.mask[parents], torch.ones_like(self.mask[parents][:, :1])], 1)
            self.last_pos = self.last_pos[parents] + 1
            logits, self.cache = self._forward(tokens[:, None], self.mask, self.last_pos[:, None])
        rows, toks = cand_rows.to(dev), cand_tokens.to(dev)
        cols = self.sub[toks] if self.sub is not None else toks
        if self.log_probs:
            logits = torch.log_softmax(logits.float(), -1)
        return logits[rows, cols].float()


class HFSeq2SeqScorer:
    """KV-cached scorer for encoder-decoder models (T5 and relatives, e.g. TIGER): encode once, decode SIDs."""

    def __init__(self, model, input_ids, attention_mask=None, decoder_start_token_id: int | None = None,
                 log_probs: bool = False):
        self.model = model
        self.log_probs = log_probs
        self.input_ids = input_ids
        self.attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        start = decoder_start_token_id
        if start is None:
            start = getattr(model.generation_config, "decoder_start_token_id", None)
        if start is None:
            start = model.config.decoder_start_token_id
        if start is None:
            raise LlmrecError("encoder-decoder model without decoder_start_token_id; pass it explicitly")
        self.start = int(start)
        self.cache = None

    def step(self, parents, tokens, cand_rows, cand_tokens):
        from transformers import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        dev = self.input_ids.device
        if parents is None:
            enc = self.model.get_encoder()(input_ids=self.input_ids, attention_mask=self.attention_mask)
            self.enc, self.enc_mask = enc.last_hidden_state, self.attention_mask
            self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            dec = torch.full((len(self.input_ids), 1), self.start, dtype=torch.long, device=dev)
        else:
            parents = parents.to(dev)
            self.cache.reorder_cache(parents)
            self.enc, self.enc_mask = self.enc[parents], self.enc_mask[parents]
            dec = tokens.to(dev)[:, None]
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=self.enc), attention_mask=self.enc_mask,
                         decoder_input_ids=dec, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        logits = out.logits[:, -1].float()
        if self.log_probs:
            logits = torch.log_softmax(logits, -1)
        return logits[cand_rows.to(dev), cand_tokens.to(dev)]


def constrained_beam_search(model, input_ids: torch.Tensor, trie: Trie, attention_mask: torch.Tensor | None = None,
                            num_beams: int = 10, k: int | None = None, renormalize: bool = True,
                            decoder_start_token_id: int | None = None, subvocab="auto") -> BeamResult:
    """Top-``k`` catalog items (and scores) for each prompt row of ``input_ids``, by trie-constrained beam search.

    ``model`` is any ``transformers`` causal LM (prompts left-padded) or encoder-decoder model (``input_ids``
    = encoder input; decoding starts from ``decoder_start_token_id``). ``k`` defaults to ``num_beams``. The
    model's generation config is not used, so checkpoint sampling settings cannot break the constraint.
    ``renormalize=False`` scores with full-vocabulary log-probs (HF's convention; no sub-vocabulary shortcut).
    """
    dev = next(model.parameters()).device
    input_ids = input_ids.to(dev)
    attention_mask = attention_mask.to(dev) if attention_mask is not None else None
    if model.config.is_encoder_decoder:
        scorer = HFSeq2SeqScorer(model, input_ids, attention_mask, decoder_start_token_id,
                                 log_probs=not renormalize)
    else:
        scorer = HFCausalScorer(model, input_ids, attention_mask, trie=trie, subvocab=subvocab,
                                log_probs=not renormalize)
    with torch.no_grad():
        return beam_search(scorer, trie, len(input_ids), num_beams=num_beams, k=k, renormalize=renormalize,
                           device=dev)


def beam_generation_config(num_beams: int, max_new_tokens: int, num_return_sequences: int | None = None,
                           pad_token_id: int | None = None, eos_token_id: int | None = None,
                           decoder_start_token_id: int | None = None, **extra):
    """A fully explicit beam-search ``GenerationConfig``: no sampling, no top-k/top-p, no penalties, length
    penalty 0 (the score is the plain sum of per-step scores)."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=num_beams, num_return_sequences=num_return_sequences or
                            num_beams, max_new_tokens=max_new_tokens, min_new_tokens=0, early_stopping=True,
                            length_penalty=0.0, temperature=1.0, top_k=None, top_p=1.0, typical_p=1.0,
                            repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad_token_id,
                            eos_token_id=eos_token_id, decoder_start_token_id=decoder_start_token_id,
                            return_dict_in_generate=True, output_scores=False, use_cache=True, **extra)


@contextlib.contextmanager
def clean_generation_defaults(model):
    """Temporarily replace ``model.generation_config`` by an empty one, so ``generate`` cannot fill unset
    options (``top_k``, ``top_p``, ``do_sample``, penalties, ...) from the checkpoint."""
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def left_pad(prompts, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> left-padded ``input_ids`` and ``attention_mask`` (``[B, longest]``), so every prompt
    ends at the last column where generation starts."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[r, L - len(p):] = 1
    return ids, mask


def _pad_id(model, pad_token_id):
    for v in (pad_token_id, getattr(model.generation_config, "pad_token_id", None), model.config.pad_token_id,
              getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


def generate_constrained(model, input_ids: torch.Tensor, trie: Trie, attention_mask: torch.Tensor | None = None,
                         num_beams: int = 10, k: int | None = None, renormalize: bool = True,
                         processor=None, prefix_allowed_tokens_fn=None, pad_token_id: int | None = None,
                         end_token_id: int | None = None, decoder_start_token_id: int | None = None,
                         with_scores: bool = True) -> BeamResult:
    """The same ranking through ``model.generate`` (HF beam search) with :class:`TrieLogitsProcessor`.

    ``processor`` / ``prefix_allowed_tokens_fn`` replace the default processor (the benchmark uses this to
    time other constraint implementations on identical runs). ``end_token_id`` is the eos of variable-length
    tries (sequences end with it); fixed-depth tries stop at ``max_depth`` new tokens. ``with_scores=False``
    skips HF's per-step score copies (``output_scores``, a [beams, vocab] tensor per step) and returns the
    ranking with ``scores = -rank``.
    """
    k = num_beams if k is None else k
    if num_beams < k:
        raise LlmrecError(f"need num_beams >= k (got num_beams={num_beams}, k={k})")
    dev = next(model.parameters()).device
    input_ids = input_ids.to(dev)
    pad = _pad_id(model, pad_token_id)
    enc_dec = model.config.is_encoder_decoder
    if enc_dec and decoder_start_token_id is None:
        decoder_start_token_id = getattr(model.generation_config, "decoder_start_token_id", None) or \
            model.config.decoder_start_token_id
    prompt_len = 1 if enc_dec else input_ids.shape[1]
    procs = []
    if prefix_allowed_tokens_fn is None:
        procs.append(processor if processor is not None else
                     TrieLogitsProcessor(trie, prompt_len=prompt_len, renormalize=renormalize,
                                         end_token_id=end_token_id, inplace=num_beams > 1))
    cfg = beam_generation_config(num_beams, trie.max_depth, num_beams, pad_token_id=pad, eos_token_id=end_token_id,
                                 decoder_start_token_id=decoder_start_token_id)
    cfg.output_scores = with_scores
    cfg.output_logits = with_scores and num_beams == 1 and not renormalize
    from transformers import LogitsProcessorList

    with torch.no_grad(), clean_generation_defaults(model):
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask.to(dev) if attention_mask is not None
                             else None, generation_config=cfg, logits_processor=LogitsProcessorList(procs),
                             prefix_allowed_tokens_fn=prefix_allowed_tokens_fn)
    gen = out.sequences[:, prompt_len:]
    items = trie.to(dev).items_of(gen)
    B = len(input_ids)
    group = torch.arange(B, device=dev).repeat_interleave(num_beams)
    # HF returns each prompt's beams best first. Without scores, rank = position (scores are -rank).
    if not with_scores:
        scores = -torch.arange(len(items), device=dev).float()
    elif num_beams == 1:
        # Greedy search: HF passes raw logits to processors and returns per-step scores only.
        steps = torch.stack(out.scores if renormalize else out.logits, 1).float()     # [B, t, V]
        if not renormalize:
            steps = torch.log_softmax(steps, -1)
        scores = steps.gather(2, gen[:, : steps.shape[1], None]).squeeze(2).sum(1)
    else:
        scores = out.sequences_scores.float()
    ok = (items >= 0) & (scores > INVALID_SCORE)
    # Drop repeats of an item (only possible from HF's -1e9 dummy beams when a prompt has < num_beams items).
    key = group * (int(items.max()) + 2) + items + 1
    first = torch.full((int(key.max()) + 1,), len(key), device=dev).scatter_reduce(
        0, key, torch.arange(len(key), device=dev), "amin")
    ok &= first[key] == torch.arange(len(key), device=dev)
    return _pack(group[ok], scores[ok], items[ok], B, k, dev)
