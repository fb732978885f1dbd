"""Small language models and tokenizers that work offline: for tests, the quickstart and CPU experiments.

Real runs start from a hub checkpoint (``Qwen/Qwen3-0.6B`` ...). Offline, llmrec builds the same architecture
from a config (:func:`tiny_qwen3`) and pairs it with

* the real Qwen tokenizer files when they are on disk (``load_lm_tokenizer(path)``), or
* a byte-level BPE trained locally in a second (:func:`train_fallback_tokenizer`). It speaks the same ChatML
  format as Qwen (``<|im_start|>role\\n...<|im_end|>``, eos ``<|im_end|>``, pad ``<|endoftext|>``), so every
  prompt, template and decoding path is exercised exactly as with Qwen, just with a 2-4k vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from llmrec.errors import LlmrecError

# ChatML as Qwen2.5/Qwen3 render it (no tools, no thinking blocks).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
FALLBACK_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _default_corpus() -> list[str]:
    from llmrec.data_builders import prompts

    texts = [prompts.SYSTEM_PROMPT]
    for templates in prompts.TEMPLATES.values():
        texts.extend(templates)
    texts.append("0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ; : ! ? ' \" ( ) [ ] - + / & % $ # @")
    return texts


def train_fallback_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 2048,
                             out: str | os.PathLike | None = None):
    """Train a byte-level BPE tokenizer with Qwen's special tokens and a ChatML chat template.

    ``texts`` (e.g. item titles) are added to llmrec's own prompt templates as the training corpus. The result
    encodes any text (byte-level), so it is a drop-in stand-in for the Qwen tokenizer when the real files are
    not available. With ``out`` the tokenizer is also saved there (``save_pretrained`` layout).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = _default_corpus() + [str(t) for t in (texts or []) if t]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(FALLBACK_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token=None, bos_token=None, padding_side="left")
    tok.chat_template = CHATML_TEMPLATE
    if out is not None:
        tok.save_pretrained(out)
    return tok


def load_lm_tokenizer(path: str | os.PathLike | None = None, texts: Iterable[str] | None = None,
                      vocab_size: int = 2048):
    """The tokenizer at ``path`` (a folder or a hub name), or a trained fallback when ``path`` is ``None``."""
    if path is None:
        return train_fallback_tokenizer(texts, vocab_size=vocab_size)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise LlmrecError(f"{path}: cannot load a tokenizer ({e})") from None


def tiny_qwen3(vocab_size: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
               num_kv_heads: int = 2, intermediate_size: int | None = None, tie_word_embeddings: bool = True,
               initializer_range: float = 0.02, seed: int = 0, max_position_embeddings: int = 4096, **config):
    """A randomly initialised ``Qwen3ForCausalLM`` of the given size (the architecture of Qwen3-0.6B, scaled down).

    ``vocab_size`` is usually ``len(tokenizer)``; Qwen checkpoints pad it (151,669 tokens, 151,936 rows), and
    vocabulary extension handles both cases.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads:
        raise LlmrecError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                      head_dim=hidden_size // num_heads, intermediate_size=intermediate_size or 3 * hidden_size,
                      tie_word_embeddings=tie_word_embeddings, initializer_range=initializer_range,
                      max_position_embeddings=max_position_embeddings, **config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg)
    model.eval()
    return model


def tiny_lm(tokenizer_path: str | os.PathLike | Path | None = None, texts: Iterable[str] | None = None,
            seed: int = 0, **model_kwargs):
    """``(model, tokenizer)``: a tiny Qwen3 on the real tokenizer at ``tokenizer_path`` or on the fallback."""
    tok = load_lm_tokenizer(tokenizer_path, texts=texts)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = tiny_qwen3(len(tok), seed=seed, **model_kwargs)
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def random_sid_table(n_items: int, sizes: tuple[int, ...] = (256, 256, 256), seed: int = 0, digit: bool = True,
                     skew: float = 0.0):
    """A collision-free random :class:`~llmrec.tokenizers.SidTable` (for tests and benchmarks).

    Codes of the ``sizes`` levels are drawn at random (``skew`` > 0 draws them from a Zipf-like law, so some
    prefixes are crowded as with real RQ codes); with ``digit`` a last level numbers the items that share a
    prefix (``0, 1, ...``), as ``--dedup digit`` does. Without it, colliding items are redrawn.
    """
    import numpy as np

    from llmrec.tokenizers.sid_table import SidTable

    rng = np.random.default_rng(seed)

    def draw(k, n):
        if skew <= 0:
            return rng.integers(0, k, n)
        p = 1.0 / np.arange(1, k + 1) ** skew
        return rng.permutation(k)[rng.choice(k, n, p=p / p.sum())]

    codes = np.stack([draw(k, n_items) for k in sizes], 1)
    if digit:
        _, inv = np.unique(codes, axis=0, return_inverse=True)
        inv = inv.ravel()
        order = np.argsort(inv, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]
        rank = np.arange(n_items) - np.repeat(first, np.diff(np.r_[first, n_items]))
        d = np.empty(n_items, np.int64)
        d[order] = rank
        codes = np.concatenate([codes, d[:, None]], 1)
        sizes = (*sizes, int(d.max()) + 1)
    else:
        if n_items > int(np.prod(sizes)):
            raise LlmrecError(f"{n_items} items do not fit {sizes} codes without a digit level")
        seen: set = set()
        for i in range(n_items):
            while tuple(codes[i]) in seen:
                codes[i] = [draw(k, 1)[0] for k in sizes]
            seen.add(tuple(codes[i]))
    full = np.full((n_items + 1, codes.shape[1]), -1, np.int64)
    full[1:] = codes
    return SidTable(full, list(sizes))
