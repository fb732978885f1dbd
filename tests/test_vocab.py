"""Vocabulary extension: SID tokens are single, survive decoding, embeddings are resized and initialised as
documented, and one folder saves/loads everything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.models.tiny import load_lm_tokenizer, random_sid_table, tiny_qwen3
from llmrec.models.vocab import (SID_BEGIN, SID_END, extend_model, load_extended, save_extended, sid_vocabulary)


@pytest.fixture(scope="module")
def qwen_tok(lm_tokenizer_dir):
    return load_lm_tokenizer(lm_tokenizer_dir)


def _fresh(tok, **kw):
    import copy

    tok = copy.deepcopy(tok)
    model = tiny_qwen3(len(tok), **kw)
    return model, tok


@pytest.fixture(scope="module")
def extended(qwen_tok):
    """A tiny Qwen3 extended with a Beauty-shaped table (3 x 256 + digit) and wrappers: (model, tok, table, info, n0)."""
    table = random_sid_table(3000, (256, 256, 256), seed=1)
    model, tok = _fresh(qwen_tok)
    n0 = len(tok)
    info = extend_model(model, tok, table, wrap=True)
    return model, tok, table, info, n0


def test_every_sid_token_is_one_token_and_round_trips(extended):
    model, tok, table, info, n0 = extended
    vocab = sid_vocabulary(table, wrap=True)
    assert len(tok) == n0 + len(vocab) == info.vocab["tokenizer_len"]
    ids = tok.convert_tokens_to_ids(vocab)
    assert len(set(ids)) == len(vocab) and min(ids) >= n0
    for t, i in zip(vocab, ids):
        assert tok(t, add_special_tokens=False)["input_ids"] == [i]
        for skip in (False, True):
            assert tok.decode([i], skip_special_tokens=skip) == t
    # Whole SIDs inside chat text, decoded the way TRL does (special tokens skipped): the SID survives.
    for item in (1, 17, 2999):
        sid = info.item_text(table, item)
        assert sid.startswith(SID_BEGIN) and sid.endswith(SID_END)
        msgs = [{"role": "user", "content": f"I bought {sid} yesterday."}, {"role": "assistant", "content": sid}]
        text = tok.apply_chat_template(msgs, tokenize=False)
        enc = tok(text, add_special_tokens=False)["input_ids"]
        want = tok.convert_tokens_to_ids(info.item_tokens(table, item))
        assert sum(enc[j: j + len(want)] == want for j in range(len(enc))) == 2
        plain = tok.decode(enc, skip_special_tokens=True)
        assert plain.count(sid) == 2 and table.decode_item(plain) == item
        assert tok.decode(enc, skip_special_tokens=False) == text


def test_resize_pads_to_64_and_mean_init(qwen_tok):
    table = random_sid_table(500, (64, 64), seed=2)
    model, tok = _fresh(qwen_tok, tie_word_embeddings=False)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    n0 = len(tok)
    info = extend_model(model, tok, table, init="mean")
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows >= len(tok) and rows - len(tok) < 64
    assert model.config.vocab_size == rows == info.vocab["embedding_rows"]
    assert model.get_output_embeddings().weight.shape[0] == rows
    new_in = model.get_input_embeddings().weight.detach()
    new_out = model.get_output_embeddings().weight.detach()
    assert torch.equal(new_in[:n0], old_in[:n0]) and torch.equal(new_out[:n0], old_out[:n0])
    # Every new row (SID tokens and padding rows) is the mean of the existing rows, per matrix.
    assert torch.allclose(new_in[n0:], old_in[:n0].mean(0).expand(rows - n0, -1), atol=1e-6)
    assert torch.allclose(new_out[n0:], old_out[:n0].mean(0).expand(rows - n0, -1), atol=1e-6)
    # The model still runs and puts finite logits on every SID token.
    ids = tok("hello <a_3><b_7>", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[-1] == rows and torch.isfinite(logits).all()


def test_extension_fits_inside_padded_rows_without_resize(qwen_tok):
    # Qwen checkpoints carry more rows than tokens (151,936 vs 151,669): small SID vocabularies fit in there.
    table = random_sid_table(100, (32, 32), seed=3, digit=False)
    model, tok = _fresh(qwen_tok)
    spare = (len(tok) // 64 + 4) * 64
    model.resize_token_embeddings(spare, mean_resizing=False)
    torch.nn.init.normal_(model.get_input_embeddings().weight.data[len(tok):], std=5.0)  # garbage padding rows
    n0 = len(tok)
    info = extend_model(model, tok, table)
    assert info.vocab["embedding_rows"] == spare == info.vocab["embedding_rows_before"]
    w = model.get_input_embeddings().weight.detach()
    assert torch.allclose(w[n0:], w[:n0].mean(0).expand(spare - n0, -1), atol=1e-6)   # no garbage left


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_text_and_codebook_init_follow_item_semantics(qwen_tok):
    rng = np.random.default_rng(0)
    words = ["lipstick", "mascara", "shampoo", "conditioner", "nail", "polish", "serum", "cream", "brush",
             "perfume", "lotion", "razor", "gel", "mask", "toner", "oil"]
    n = 400
    # Level-0 code = the item's category word, so level-0 SID tokens should start near that word's embedding.
    cat = rng.integers(0, len(words), n)
    texts = [""] + [f"{words[c]} {words[c]} {rng.choice(words)}" for c in cat]
    codes = np.full((n + 1, 2), -1)
    codes[1:, 0] = cat
    codes[1:, 1] = np.arange(n)
    from llmrec.tokenizers import SidTable

    table = SidTable(codes, [len(words), n])
    for method in ("text", "codebook"):
        model, tok = _fresh(qwen_tok, initializer_range=0.5)
        n0 = len(tok)
        emb = model.get_input_embeddings().weight.detach().clone()
        books = None
        if method == "codebook":
            # A planted codebook: level-0 vectors are a random linear image of the category's word embedding.
            A = torch.randn(emb.shape[1], 24)
            word_vec = torch.stack([emb[tok(w, add_special_tokens=False)["input_ids"]].mean(0) for w in words])
            books = [(word_vec @ A).numpy(), np.zeros((n, 24), np.float32)]
        extend_model(model, tok, table, init=method, item_texts=texts, codebooks=books)
        w = model.get_input_embeddings().weight.detach()
        mu = emb[:n0].mean(0)
        ref = (emb[:n0] - mu).norm(dim=1).mean()
        every = w[tok.convert_tokens_to_ids(table.vocabulary())]
        assert torch.allclose((every - mu).norm(dim=1).mean(), ref, rtol=1e-3)     # rescaled as documented
        rows = w[tok.convert_tokens_to_ids([table.token(0, c) for c in range(len(words))])]
        own = torch.stack([emb[tok(x, add_special_tokens=False)["input_ids"]].mean(0) for x in words])
        sim = _cos((rows - mu)[:, None], (own - mu)[None])                          # [token, word]
        # Each category token is closest to its own word among all words.
        assert (sim.argmax(1) == torch.arange(len(words))).float().mean() >= 0.9, method


def test_bad_init_fails_before_changing_anything(qwen_tok):
    table = random_sid_table(50, (8, 8), seed=4)
    tok = qwen_tok                       # shared: a failed call must leave it untouched
    model = tiny_qwen3(len(tok), hidden_size=32)
    n0 = len(tok)
    with pytest.raises(LlmrecError, match="item texts"):
        extend_model(model, tok, table, init="text")
    with pytest.raises(LlmrecError, match="item texts"):
        extend_model(model, tok, table, init="text", item_texts=["", "only one"])
    with pytest.raises(LlmrecError, match="codebooks"):
        extend_model(model, tok, table, init="codebook", item_texts=[""] * 51)
    with pytest.raises(LlmrecError, match="unknown init"):
        extend_model(model, tok, table, init="random")
    assert len(tok) == n0 and model.get_input_embeddings().weight.shape[0] == n0


def test_save_load_equality(extended, tmp_path):
    import pandas as pd

    model, tok, table, info, _ = extended
    n = table.n_items
    items = pd.DataFrame({"item": np.arange(1, n + 1), "original_id": [f"A{i}" for i in range(1, n + 1)],
                          "title": [f"Item {i}" for i in range(1, n + 1)], "ignored": 0})
    out = save_extended(tmp_path / "m", model, tok, table, info, items=items)
    for f in ("config.json", "model.safetensors", "tokenizer_config.json", "llmrec.json", "manifest.json",
              "sid/sids.parquet", "sid/sid_table.json", "items.parquet"):
        assert (out / f).is_file(), f
    m2, t2, s2, i2 = load_extended(out, device="cpu", dtype=torch.float32)
    sd1, sd2 = model.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert np.array_equal(s2.codes, table.codes) and s2.codebook_sizes == table.codebook_sizes
    assert i2 == info
    text = "buy " + info.item_text(table, 7) + " and " + info.item_text(table, 300)
    assert t2(text)["input_ids"] == tok(text)["input_ids"]
    assert t2.decode(t2(text)["input_ids"], skip_special_tokens=True) == text
    x = tok(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, m2(**x).logits, atol=1e-6)
    with pytest.raises(LlmrecError, match="already exists"):
        save_extended(out, model, tok, table, info)


def test_cli_extend(lm_tokenizer_dir, synthetic_dataset, tmp_path):
    from llmrec.cli import main
    from llmrec.data_builders import load_dataset
    from llmrec.models.vocab import load_items, read_info

    n = load_dataset(synthetic_dataset).n_items
    table = random_sid_table(n, (16, 16), seed=6)
    (tmp_path / "sid").mkdir()
    table.save(tmp_path / "sid")
    out = tmp_path / "model"
    rc = main(["model", "extend", "--base", "tiny-qwen3", "--tokenizer", str(lm_tokenizer_dir), "--sids",
               str(tmp_path / "sid"), "--data", str(synthetic_dataset), "--out", str(out), "--init", "text",
               "--wrap"])
    assert rc == 0
    info = read_info(out)
    assert info.wrap and info.init == "text" and info.n_items == n and info.levels == table.levels
    assert len(load_items(out)) == n
    model, tok, sids, _ = load_extended(out, device="cpu")
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    assert main(["model", "extend", "--base", "tiny-qwen3", "--sids", str(tmp_path / "sid"), "--out",
                 str(tmp_path / "m2"), "--init", "text"]) == 2          # text init without --data: clear error


def test_load_codebooks_layouts(tmp_path):
    from safetensors.numpy import save_file

    from llmrec.models.vocab import load_codebooks

    a, b = np.ones((4, 3), np.float32), np.zeros((5, 3), np.float32)
    save_file({"codebook.0": a, "codebook.1": b, "scales": np.ones(2, np.float32),
               "encoder.w": np.ones((2, 2), np.float32)}, str(tmp_path / "codebooks.safetensors"))
    books = load_codebooks(tmp_path)                      # the layout `llmrec sid build` writes
    assert len(books) == 2 and np.array_equal(books[0], a) and np.array_equal(books[1], b)
    save_file({"codebooks": np.stack([a, a])}, str(tmp_path / "codebooks.safetensors"))
    assert len(load_codebooks(tmp_path)) == 2
    save_file({"weights": a}, str(tmp_path / "codebooks.safetensors"))
    with pytest.raises(LlmrecError, match="codebook.0"):
        load_codebooks(tmp_path)
    with pytest.raises(LlmrecError, match="not found"):
        load_codebooks(tmp_path / "nope")
