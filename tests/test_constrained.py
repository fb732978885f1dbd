"""Trie-constrained decoding: the trie, the vectorized processor and the beam search, checked against brute force
over random catalogs, random tiny models (decoder-only and encoder-decoder) and random generation configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.errors import LlmrecError
from llmrec.inference.constrained import TrieLogitsProcessor, beam_search, segment_log_softmax
from llmrec.inference.hf import constrained_beam_search, generate_constrained
from llmrec.inference.trie import Trie


TORCH_THREADS = 1  # tests/conftest.py::_torch_threads


def dict_trie(seqs):
    out: dict[tuple, set] = {}
    for s in seqs:
        for j in range(len(s)):
            out.setdefault(tuple(s[:j]), set()).add(s[j])
    return {k: sorted(v) for k, v in out.items()}


def random_catalog(rng, vocab: int, variable: bool, n_items: int):
    """Unique token sequences over ids 2..vocab-1 (0 = pad, 1 = end). Fixed-depth SID-like codes, or
    variable-length sequences ended by token 1."""
    seqs, seen = [], set()
    if variable:
        while len(seqs) < n_items:
            s = tuple(int(x) for x in rng.integers(2, vocab, rng.integers(1, 4))) + (1,)
            if s not in seen:
                seen.add(s)
                seqs.append(list(s))
    else:
        levels = int(rng.integers(1, 4))
        sizes = [int(rng.integers(2, 6)) for _ in range(levels)]
        n_items = min(n_items, int(np.prod(sizes)))
        offs = np.r_[2, 2 + np.cumsum(sizes)[:-1]]
        while len(seqs) < n_items:
            s = tuple(int(offs[l] + rng.integers(0, sizes[l])) for l in range(levels))
            if s not in seen:
                seen.add(s)
                seqs.append(list(s))
    return seqs


def tiny_model(kind: str, vocab: int, seed: int, init: float):
    from transformers import Qwen3Config, Qwen3ForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    if kind == "t5":
        cfg = T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                       num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                       initializer_factor=init * 20)
        m = T5ForConditionalGeneration(cfg)
    else:
        cfg = Qwen3Config(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=8, intermediate_size=32, initializer_range=init,
                          tie_word_embeddings=seed % 2 == 0, pad_token_id=0)
        m = Qwen3ForCausalLM(cfg)
    return m.eval()


def exact_scores(model, prompt: list[int], seqs, renormalize: bool) -> np.ndarray:
    """Score of every item by teacher forcing (the definition in llmrec.inference.constrained)."""
    trie = dict_trie(seqs)
    out = []
    for s in seqs:
        with torch.no_grad():
            if model.config.is_encoder_decoder:
                logits = model(input_ids=torch.tensor([prompt]),
                               decoder_input_ids=torch.tensor([[0] + s[:-1]])).logits[0]
            else:
                logits = model(input_ids=torch.tensor([prompt + s[:-1]])).logits[0, len(prompt) - 1:]
        tot = 0.0
        for j, tok in enumerate(s):
            row = logits[j].float()
            allowed = torch.tensor(trie[tuple(s[:j])])
            lp = torch.log_softmax(row[allowed], 0) if renormalize else torch.log_softmax(row, 0)[allowed]
            tot += float(lp[allowed.tolist().index(tok)] if renormalize else lp[allowed.tolist().index(tok)])
        out.append(tot)
    return np.array(out)


def assert_same_ranking(items_a, scores_a, items_b, scores_b, tol=1e-4):
    """Equal lists up to swaps among near-ties (float32 sums: tolerance relative to the score's size)."""
    assert len(items_a) == len(items_b)
    np.testing.assert_allclose(scores_a, scores_b, atol=tol, rtol=1e-5)
    for ia, ib, sb in zip(items_a, items_b, scores_b):
        if ia != ib:
            j = list(items_a).index(ia)
            assert abs(scores_a[j] - sb) <= tol + 1e-5 * abs(sb), (items_a, items_b)


# --- trie ---------------------------------------------------------------------------------------------------

def test_trie_matches_dict_trie():
    rng = np.random.default_rng(0)
    seqs = random_catalog(rng, 40, variable=True, n_items=300)
    items = list(range(10, 310))
    trie = Trie.from_sequences([s[:-1] for s in seqs], items=items, end_token=1)
    ref = dict_trie(seqs)
    assert trie.n_items == 300 and trie.max_depth == max(len(s) for s in seqs)
    for it, s in zip(items, seqs):
        assert trie.sequence_of(it) == s
    # children of every prefix (one batched call for all of them) == the dict trie's children
    prefixes = list(ref)
    L = max(len(p) for p in prefixes)
    arr = torch.tensor([list(p) + [0] * (L - len(p)) for p in prefixes])
    nodes = torch.stack([trie.walk(arr[i: i + 1, : len(p)])[0] for i, p in enumerate(prefixes)])
    assert (nodes >= 0).all()
    rows, toks, _ = trie.children(nodes)
    for i, p in enumerate(prefixes):
        assert toks[rows == i].tolist() == ref[p]
    # invalid steps and dead rows give -1; items_of maps full sequences back
    assert trie.step(torch.tensor([0, 0, -1]), torch.tensor([0, 39, 5])).tolist()[0] == -1
    assert trie.step(torch.tensor([-1]), torch.tensor([5])).tolist() == [-1]
    full = torch.tensor([s + [0] * (trie.max_depth - len(s)) for s in seqs])
    assert trie.items_of(full).tolist() == items


def test_trie_rejects_duplicates_and_prefixes():
    with pytest.raises(LlmrecError, match="same token sequence"):
        Trie.from_sequences([[5, 6], [5, 7], [5, 6]])
    with pytest.raises(LlmrecError, match="prefix"):
        Trie.from_sequences([[5, 6, 7], [5, 6]])
    with pytest.raises(LlmrecError, match="unique"):
        Trie.from_sequences([[5, 6], [5, 7]], items=[3, 3])
    t = Trie.from_sequences([[5, 6, 7], [5, 6]], end_token=1)      # an end token makes them prefix-free
    assert t.n_items == 2 and t.max_depth == 4


# --- processor ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("renormalize", [True, False])
def test_processor_equals_per_row_reference(renormalize):
    rng = np.random.default_rng(1)
    seqs = random_catalog(rng, 30, variable=False, n_items=60)
    depth = len(seqs[0])
    trie = Trie.from_sequences(seqs)
    ref = dict_trie(seqs)
    P, V, R = 3, 30, 40
    for t in range(depth + 1):
        gen = []
        for r in range(R):
            s = seqs[rng.integers(len(seqs))][:t]
            if r % 7 == 3 and t > 0:
                s = list(s[:-1]) + [29]                            # an invalid prefix (dead row)
            gen.append(list(s))
        ids = torch.tensor([[9] * P + g for g in gen])
        scores = torch.log_softmax(torch.randn(R, V), -1)
        proc = TrieLogitsProcessor(trie, prompt_len=P, renormalize=renormalize, end_token_id=0)
        out = proc(ids, scores.clone())
        for r, g in enumerate(gen):
            allowed = ref.get(tuple(g))
            want = torch.full((V,), float("-inf"))
            if allowed is not None and t < depth:
                v = scores[r, allowed]
                want[allowed] = torch.log_softmax(v, 0) if renormalize else v
            else:
                want[0] = 0.0                                      # complete or invalid: end token only
            assert torch.allclose(out[r], want, atol=1e-6), (t, r, g)


def test_segment_log_softmax():
    v = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.5])
    rows = torch.tensor([0, 0, 2, 2, 2])
    got = segment_log_softmax(v, rows, 3)
    assert torch.allclose(got[:2], torch.log_softmax(v[:2], 0))
    assert torch.allclose(got[2:], torch.log_softmax(v[2:], 0))


# --- beam search: property test ---------------------------------------------------------------------------------

gen_configs = st.fixed_dictionaries({
    "do_sample": st.booleans(), "top_k": st.sampled_from([None, 1, 2, 5]),
    "top_p": st.sampled_from([None, 0.01, 0.5, 1.0]), "temperature": st.sampled_from([None, 0.05, 0.7, 3.0]),
    "repetition_penalty": st.sampled_from([None, 1.0, 5.0]), "no_repeat_ngram_size": st.sampled_from([None, 0, 1]),
    "num_beams": st.sampled_from([None, 1, 3]), "length_penalty": st.sampled_from([None, -2.0, 2.0]),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["qwen3", "qwen3", "t5"]), variable=st.booleans(),
       n_items=st.integers(1, 30), k=st.integers(1, 12), extra_beams=st.integers(0, 4),
       init=st.sampled_from([0.02, 0.3, 1.0]), renormalize=st.booleans(), gcfg=gen_configs)
def test_constrained_search_properties(seed, kind, variable, n_items, k, extra_beams, init, renormalize, gcfg):
    rng = np.random.default_rng(seed)
    V = 48
    seqs = random_catalog(rng, V, variable, n_items)
    n = len(seqs)
    items = [int(x) for x in rng.permutation(1000)[:n] + 1]           # arbitrary item ids
    trie = Trie.from_array(np.array([s + [-1] * (max(map(len, seqs)) - len(s)) for s in seqs]), items)
    model = tiny_model(kind, V, seed, init)
    for key, val in gcfg.items():                                     # whatever the checkpoint carries
        setattr(model.generation_config, key, val)
    prompts = [list(rng.integers(2, V, rng.integers(1, 7))) for _ in range(3)]
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = (torch.arange(L)[None] >= torch.tensor([L - len(p) for p in prompts])[:, None]).long()
    if kind == "t5":                                                  # encoder input: right padding
        ids = torch.tensor([p + [0] * (L - len(p)) for p in prompts])
        mask = mask.flip(1)
    beams = k + extra_beams
    res = constrained_beam_search(model, ids, trie, mask, num_beams=beams, k=k, renormalize=renormalize)
    want = min(k, n)
    for b, p in enumerate(prompts):
        got, sc = res.ranked()[b], res.score_lists()[b]
        assert len(got) == want and len(set(got)) == want and set(got) <= set(items)
        assert all(np.isfinite(sc)) and all(a >= c - 1e-6 for a, c in zip(sc, sc[1:]))
        exact = exact_scores(model, p, seqs, renormalize)
        by_item = dict(zip(items, exact))
        np.testing.assert_allclose(sc, [by_item[i] for i in got], atol=2e-4, rtol=1e-5)   # scores are the defined ones
        if renormalize:
            assert np.exp(exact).sum() == pytest.approx(1.0, abs=1e-4)       # a distribution over the catalog
        if beams >= n:                                                # exhaustive: exactly the top-k items
            top = np.sort(exact)[::-1][:want]
            np.testing.assert_allclose(sc, top, atol=2e-4, rtol=1e-5)
        # the same prompt alone (no padding) gives the same list
        alone = torch.tensor([p])
        r1 = constrained_beam_search(model, alone, trie, None, num_beams=beams, k=k, renormalize=renormalize)
        assert_same_ranking(r1.ranked()[0], r1.score_lists()[0], got, sc)
    if not variable:
        # HF generate + the vectorized processor (fixed-depth catalogs: identical beam search) agrees.
        r2 = generate_constrained(model, ids, trie, mask, num_beams=beams, k=k, renormalize=renormalize,
                                  pad_token_id=0)
        for b in range(len(prompts)):
            assert_same_ranking(r2.ranked()[b], r2.score_lists()[b], res.ranked()[b], res.score_lists()[b])


def test_stateless_backend_interface_gives_the_same_ranking():
    """A backend that only scores (prompt, prefix) states — the shape of a vLLM backend — through
    PrefixStateScorer ranks exactly like the KV-cached HF backend."""
    from llmrec.inference.constrained import PrefixStateScorer

    rng = np.random.default_rng(3)
    seqs = random_catalog(rng, 48, variable=False, n_items=40)
    trie = Trie.from_sequences(seqs)
    model = tiny_model("qwen3", 48, 1, 0.5)
    prompts = [list(rng.integers(2, 48, n)) for n in (2, 5, 3)]
    calls = []

    def score_fn(prompt_index, prefixes, cand_rows, cand_tokens):
        calls.append(len(prefixes))
        rows = [prompts[int(p)] + prefixes[r].tolist() for r, p in enumerate(prompt_index)]
        L = max(map(len, rows))
        ids = torch.tensor([[0] * (L - len(x)) + x for x in rows])
        mask = (ids != 0).long()               # real tokens are >= 2; 0 is left padding
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():                  # no cache: every state recomputed from scratch, like a server
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        return logits[cand_rows, cand_tokens]

    res = beam_search(PrefixStateScorer(len(prompts), score_fn), trie, len(prompts), num_beams=6, k=4)
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = (torch.arange(L)[None] >= torch.tensor([L - len(p) for p in prompts])[:, None]).long()
    ref = constrained_beam_search(model, ids, trie, mask, num_beams=6, k=4)
    for b in range(len(prompts)):
        assert_same_ranking(res.ranked()[b], res.score_lists()[b], ref.ranked()[b], ref.score_lists()[b])
    assert calls[0] == len(prompts) and len(calls) == trie.max_depth


def test_processor_under_sampling_gives_valid_items_then_eos():
    """TRL-style rollouts: sampling (with top-k/top-p/temperature) under the processor, max_new_tokens past the
    SID depth: every sample is a catalog item followed by eos."""
    from transformers import GenerationConfig

    rng = np.random.default_rng(5)
    seqs = random_catalog(rng, 48, variable=True, n_items=25)
    trie = Trie.from_sequences([s[:-1] for s in seqs], end_token=1)
    model = tiny_model("qwen3", 48, 2, 0.5)
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = (ids != 0).long()
    proc = TrieLogitsProcessor(trie, prompt_len=ids.shape[1], end_token_id=1)
    cfg = GenerationConfig(do_sample=True, top_k=3, top_p=0.9, temperature=0.7, max_new_tokens=trie.max_depth + 3,
                           num_return_sequences=16, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, logits_processor=[proc])
    gen = out[:, ids.shape[1]:]
    items = trie.items_of(gen)
    assert (items >= 1).all()
    for row, it in zip(gen.tolist(), items.tolist()):
        n = len(trie.sequence_of(it))
        assert row[:n] == trie.sequence_of(it) and all(t in (0, 1) for t in row[n:])
    assert len(set(items.tolist())) > 1                          # it samples, not a single forced answer


def test_beam_search_needs_enough_beams():
    trie = Trie.from_sequences([[2, 3], [2, 4]])
    with pytest.raises(LlmrecError, match="num_beams >= k"):
        beam_search(None, trie, 1, num_beams=2, k=3)


def test_sid_trie_on_beauty_letter_sids(beauty_dir, lm_tokenizer_dir):
    """Real SIDs: the LETTER index of Amazon Beauty (12,101 items, 4 x 256). It ships colliding SIDs: the trie
    refuses them by name instead of silently mapping two items to one leaf."""
    import pandas as pd

    from llmrec.inference.trie import sid_trie
    from llmrec.models.tiny import load_lm_tokenizer
    from llmrec.models.vocab import add_sid_tokens, sid_vocabulary
    from llmrec.tokenizers import SidTable

    df = pd.read_csv(beauty_dir / "beauty_items.csv", keep_default_na=False)
    idx = beauty_dir / "raw" / "letter" / "Beauty.index.json"
    table = SidTable.from_index_json(idx, offset=-1) if idx.is_file() else None
    if table is None:
        pytest.skip(f"{idx} not found")
    assert table.n_items == len(df) == 12101
    tok = load_lm_tokenizer(lm_tokenizer_dir)
    add_sid_tokens(tok, sid_vocabulary(table))
    with pytest.raises(LlmrecError, match="same token sequence"):
        sid_trie(table, tok)
    first = {}
    for i in range(1, table.n_items + 1):
        first.setdefault(tuple(table.codes[i]), i)
    keep = sorted(first.values())
    trie = sid_trie(table, tok, items=keep)
    assert trie.n_items == len(keep) > 12000 and trie.max_depth == 4
    for item in (keep[0], keep[len(keep) // 2], keep[-1]):
        assert trie.sequence_of(item) == tok.convert_tokens_to_ids(table.item_tokens(item))
