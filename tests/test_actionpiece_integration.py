"""ActionPiece plugged into the LLM side: its tokens as added tokens of the real Qwen3 tokenizer, and the
constrained-decoding trie built from the items' target segmentations.

Needs the vocabulary-extension (`llmrec.models.vocab`) and trie (`llmrec.inference.trie`) modules; skipped
where they are absent."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.tokenizers.actionpiece import train_actionpiece


@pytest.fixture(scope="module")
def ap():
    rng = np.random.default_rng(1)
    ids = list(range(1, 301))
    feats = [[str(rng.integers(0, 16)), str(rng.integers(0, 16)), str(rng.integers(0, 16)), str(i % 64)]
             for i in ids]
    seqs = [rng.choice(ids, size=rng.integers(2, 12)).tolist() for _ in range(2000)]
    return train_actionpiece(ids, feats, seqs, 1200, progress=False)


def test_tokens_extend_qwen3_tokenizer_and_trie_decodes_every_item(ap, qwen3_tokenizer_dir):
    vocab = pytest.importorskip("llmrec.models.vocab")
    trie_mod = pytest.importorskip("llmrec.inference.trie")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
    n0 = len(tok)
    ids = vocab.add_sid_tokens(tok, ap.vocabulary())  # raises unless each token is exactly one token id
    assert len(tok) == n0 + ap.vocab_size and ids == list(range(n0, n0 + ap.vocab_size))
    targets = {it: tok(ap.item_sid(it), add_special_tokens=False)["input_ids"] for it in ap.item_ids}
    assert all(t == [n0 + i for i in ap.segment_item(it)] for it, t in targets.items())
    # generated text round-trips through the Qwen tokenizer and ActionPiece's decoder
    it = ap.item_ids[17]
    text = tok.decode(targets[it] + tok("</s> and more", add_special_tokens=False)["input_ids"])
    assert ap.decode_item(text) == it

    trie = trie_mod.Trie.from_sequences(list(targets.values()), items=list(targets))
    assert trie.n_items == ap.n_items
    for it, seq in targets.items():
        assert trie.sequence_of(it) == seq
        assert ap.decode([i - n0 for i in seq], canonical=True) == it
