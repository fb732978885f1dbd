"""TIGER: T5 over SID tokens, trained from scratch, ranked by llmrec's trie-constrained beam search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_baselines import N_ITEMS, _rand_codes, _toy_split


TORCH_THREADS = 1  # tiny models: one thread beats two fighting for a shared CPU (conftest.py)


def _tiny(**kw):
    from llmrec.models.tiger import TIGERConfig
    return TIGERConfig(sids="x", d_model=32, d_ff=64, n_layers=2, n_heads=2, d_kv=16, dropout=0.0,
                       user_buckets=10, num_beams=10, **kw)


def test_dedup_level_makes_sids_unique():
    from llmrec.models.tiger import dedup_codes

    codes = np.array([[-1, -1], [0, 1], [0, 1], [2, 3], [0, 1]])
    out, k = dedup_codes(codes)
    assert k == 3 and out[1:, 2].tolist() == [0, 1, 0, 2]
    assert len({tuple(r) for r in out[1:].tolist()}) == 4 and (out[0] == -1).all()
    same, k0 = dedup_codes(np.array([[-1, -1], [0, 1], [1, 1]]))
    assert k0 == 0 and same.shape == (3, 2)


def test_tiger_decoder_is_causal():
    from llmrec.models.tiger import TIGER

    torch.manual_seed(0)
    m = TIGER(_rand_codes(N_ITEMS, [6, 6]), [6, 6], _tiny()).eval()
    ids, mask = m.encode_inputs([1, 2], [[3, 4, 5], [7]])
    assert ids[0, 0] >= m.user_base and ids[0, 1:7].tolist() == m.tokens[[3, 4, 5]].flatten().tolist()
    assert ids[1, 3] == 1 and mask[1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]   # user, SID(7), end, padding
    dec = torch.tensor([[0, 5, 9, 3], [0, 4, 11, 2]])
    alt = dec.clone()
    alt[:, 2:] = torch.tensor([[7, 7], [6, 6]])
    with torch.no_grad():
        a, b = m(ids, mask, dec), m(ids, mask, alt)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=1e-6)  # steps 0-1 do not see tokens 2-3
    assert (a[:, 2:] - b[:, 2:]).abs().max() > 1e-4


def test_tiger_trains_and_ranks_only_catalog_items(tmp_path):
    from llmrec.models.tiger import fit
    from llmrec.tokenizers import SidTable

    codes = _rand_codes(N_ITEMS, [6, 6])
    SidTable(codes, [6, 6]).save(tmp_path)
    sp = _toy_split()
    cfg = {"sids": str(tmp_path), "d_model": 32, "d_ff": 64, "n_layers": 2, "n_heads": 2, "d_kv": 16,
           "user_buckets": 10, "num_beams": 10, "epochs": 6, "batch_size": 32, "lr": 0.01, "progress": False,
           "dropout": 0.0}
    res = fit(sp, cfg, tmp_path / "w", seed=0)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
    m = res["test"].metrics
    assert m["invalid_rate"] == 0.0 and m["duplicate_rate"] == 0.0
    assert m["n_ranked"] == 10 * len(sp.test)          # every list is full: num_beams distinct catalog items
    assert m["recall@10"] > 10 / N_ITEMS               # learned the toy pattern
    assert "recall@20" not in m                        # lists have 10 items: no metric pretends to rank 20
    assert res["info"]["dedup_level_added"] == (len({tuple(r) for r in codes[1:].tolist()}) < N_ITEMS)
    assert res["info"]["test_other_history_rule"]["exclude_history"] is True


def test_tiger_is_registered_and_checks_sids(tmp_path):
    from llmrec.errors import LlmrecError
    from llmrec.models.baselines import REGISTRY
    from llmrec.models.tiger import fit

    assert REGISTRY["tiger"] == "llmrec.models.tiger:fit"
    with pytest.raises(LlmrecError, match="`sids` is required"):
        fit(_toy_split(), {}, None)


def test_selection_metric_cutoff_is_always_evaluated(tmp_path):
    from llmrec.errors import LlmrecError
    from llmrec.models.tiger import fit
    from llmrec.tokenizers import SidTable
    from llmrec.training.loop import metric_ks

    assert metric_ks((5, 20), "ndcg@10") == (5, 10, 20)          # --ks 5,20 still selects on ndcg@10
    assert metric_ks(None, "recall@10")[:3] == (5, 10, 20)
    with pytest.raises(LlmrecError, match="NAME@K"):
        metric_ks((5,), "ndcg")
    SidTable(_rand_codes(N_ITEMS, [6, 6]), [6, 6]).save(tmp_path)
    with pytest.raises(LlmrecError, match="num_beams=5"):        # caught before any training
        fit(_toy_split(), {"sids": str(tmp_path), "num_beams": 5}, None)
