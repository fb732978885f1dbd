"""Shared fixtures. Tests that need ../shared/data read its path from LLMREC_SHARED_DATA (set by .ci/run)
and skip with a message when it is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared() -> Path | None:
    p = os.environ.get("LLMREC_SHARED_DATA")
    return Path(p) if p and Path(p).is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    p = _shared()
    if p is None:
        pytest.skip("LLMREC_SHARED_DATA is not set (point it at ../shared/data to run the real-data tests)")
    return p


@pytest.fixture(scope="session")
def beauty_dir(shared_data) -> Path:
    d = shared_data / "amazon-beauty-2014"
    if not (d / "beauty_interactions.csv").is_file():
        pytest.skip(f"{d}/beauty_interactions.csv not found")
    return d


@pytest.fixture(scope="session")
def beauty_dataset(beauty_dir, tmp_path_factory) -> Path:
    """Full Amazon Beauty 2014 built once per session (no filtering) with its LOO split."""
    from llmrec.data_builders import build_dataset, split_dataset

    out = tmp_path_factory.mktemp("beauty") / "beauty"
    build_dataset("csv", beauty_dir / "beauty_interactions.csv", out, items=beauty_dir / "beauty_items.csv")
    split_dataset(out, "loo")
    return out


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic shop (600 users, 150 items) with its LOO split."""
    from llmrec.data_builders import SyntheticConfig, build_synthetic, split_dataset

    out = tmp_path_factory.mktemp("synthetic") / "shop"
    build_synthetic(out, SyntheticConfig(n_users=600, n_items=150, seed=0))
    split_dataset(out, "loo")
    split_dataset(out, "temporal")
    return out


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(shared_data) -> Path:
    d = shared_data / "qwen3-tokenizer"
    if not (d / "tokenizer.json").is_file():
        pytest.skip(f"{d}/tokenizer.json not found")
    return d


@pytest.fixture(scope="session")
def lm_tokenizer_dir(tmp_path_factory) -> Path:
    """A Qwen-style tokenizer folder: the real Qwen3 tokenizer when LLMREC_SHARED_DATA is set, else a byte-level
    BPE trained locally with the same special tokens and a ChatML template (llmrec.models.tiny)."""
    p = _shared()
    if p is not None and (p / "qwen3-tokenizer" / "tokenizer.json").is_file():
        return p / "qwen3-tokenizer"
    from llmrec.models.tiny import train_fallback_tokenizer

    out = tmp_path_factory.mktemp("fallback-tokenizer")
    train_fallback_tokenizer(out=out)
    return out


@pytest.fixture(scope="session")
def fallback_tokenizer_dir(tmp_path_factory) -> Path:
    """Always the small locally trained Qwen-style BPE (ChatML, Qwen's special tokens): for training tests whose
    cost grows with the vocabulary (a 151k-row embedding makes every optimizer step many times slower)."""
    from llmrec.models.tiny import train_fallback_tokenizer

    out = tmp_path_factory.mktemp("fallback-bpe")
    train_fallback_tokenizer(out=out)
    return out


@pytest.fixture(autouse=True, scope="module")
def _torch_threads(request):
    """A module that sets ``TORCH_THREADS = n`` runs with n torch threads (tiny models: 1 is as fast and immune to
    spin contention on a shared 2-core machine); others keep torch's default."""
    n = getattr(request.module, "TORCH_THREADS", None)
    if n is None:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def tiny_sid_lm(tmp_path_factory, synthetic_dataset):
    """Builder of tiny-qwen3 models extended with random SIDs for the synthetic shop's items (text init, so the
    new rows differ): ``tiny_sid_lm(tokenizer_dir, sizes=(8, 8, 8), seed=0) -> model folder``."""
    def build(tokenizer_dir, sizes=(8, 8, 8), seed: int = 0) -> Path:
        from llmrec.data_builders import load_dataset
        from llmrec.models.tiny import random_sid_table
        from llmrec.models.vocab import extend_pretrained

        root = tmp_path_factory.mktemp("sidlm")
        (root / "sid").mkdir()
        random_sid_table(load_dataset(synthetic_dataset).n_items, sizes, seed=seed).save(root / "sid")
        return extend_pretrained("tiny-qwen3", root / "sid", root / "model", init="text", data=synthetic_dataset,
                                 tokenizer=str(tokenizer_dir))
    return build
