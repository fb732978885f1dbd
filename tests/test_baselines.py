"""Sequence baselines (SASRec, GPT-2, HSTU, HSTU-SID) and the shared training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.training.loop import (NextItemData, TrainConfig, TrainingPaused, pad_left, sample_negatives,
                                  sample_shared_negatives, sampled_logits, train)

N_ITEMS = 40


TORCH_THREADS = 1  # tiny models: one thread beats two fighting for a shared CPU (conftest.py)


def _rand_codes(n_items, sizes, seed=0, zero_first=True):
    rng = np.random.default_rng(seed)
    codes = np.full((n_items + 1, len(sizes)), -1)
    codes[1:] = np.stack([rng.integers(0, k, n_items) for k in sizes], 1)
    if zero_first:
        codes[1, 0] = 0  # an item whose first-level code is 0
    return codes


def _models():
    """Every model variant, tiny, built from its config (name, model, uses timestamps)."""
    from llmrec.models.gpt2 import GPT2Rec, GPT2RecConfig
    from llmrec.models.hstu import HSTU, HSTUConfig
    from llmrec.models.hstu_sid import SIDEmbedding
    from llmrec.models.sasrec import SASRec, SASRecConfig

    text = np.random.default_rng(0).normal(size=(N_ITEMS + 1, 12)).astype(np.float32)
    hc = HSTUConfig(max_len=10, d_model=16, dqk=8, dv=8, n_heads=2, dropout=0.0, n_negatives=8)
    sid = SIDEmbedding(_rand_codes(N_ITEMS, [4, 4, 3]), [4, 4, 3], 16, "prefixN-indEmb", "MLP")
    return [
        ("sasrec", SASRec(N_ITEMS, SASRecConfig(max_len=10, d_model=16, n_heads=2, dropout=0.0)), False),
        ("gpt2-none", GPT2Rec(N_ITEMS, GPT2RecConfig(max_len=10, d_model=16, dropout=0.0)), False),
        ("gpt2-init", GPT2Rec(N_ITEMS, GPT2RecConfig(max_len=10, d_model=16, dropout=0.0, content="init",
                                                     embeddings="x"), text), False),
        ("gpt2-frozen", GPT2Rec(N_ITEMS, GPT2RecConfig(max_len=10, d_model=16, dropout=0.0, content="frozen",
                                                       embeddings="x", proj_layers=2), text), False),
        ("hstu", HSTU(N_ITEMS, hc), True),
        ("hstu-sid", HSTU(N_ITEMS, hc, item_embedding=sid), True),
    ]


@pytest.mark.parametrize("idx", range(6), ids=["sasrec", "gpt2-none", "gpt2-init", "gpt2-frozen", "hstu", "hstu-sid"])
def test_causality_future_items_do_not_change_earlier_outputs(idx):
    torch.manual_seed(0)
    name, model, timed = _models()[idx]
    model.eval()
    items = torch.tensor([[0, 0, 3, 7, 1, 9, 12, 4], [5, 6, 7, 8, 9, 10, 11, 12]])
    ts = torch.tensor([[0, 0, 10, 100, 1000, 10_000, 100_000, 10**6]] * 2)
    t = 4  # positions <= t must not depend on items > t
    future = items.clone()
    future[:, t + 1:] = torch.tensor([[30, 31, 32], [33, 34, 35]])
    fts = ts.clone()
    fts[:, t + 2:] += 12345  # HSTU's query time at t is the next item's timestamp (t + 1), by design
    with torch.no_grad():
        a = model(items, ts) if timed else model(items)
        b = model(future, fts) if timed else model(future)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-4, f"{name}: later positions should see the change"


def test_sample_negatives_never_equal_positive_and_cover_the_rest():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(1, N_ITEMS + 1, (500,), generator=g)
    pos[:50] = 1
    pos[50:100] = N_ITEMS  # the edges of the id range
    neg = sample_negatives(pos, N_ITEMS, 64, g)
    assert neg.shape == (500, 64)
    assert not (neg == pos[:, None]).any()
    assert neg.min() >= 1 and neg.max() <= N_ITEMS
    # uniform over the other items: every other item shows up for a fixed positive
    assert set(neg[:50].flatten().tolist()) == set(range(2, N_ITEMS + 1))
    counts = np.bincount(neg[100:].flatten().numpy(), minlength=N_ITEMS + 1)[1:]
    assert counts.min() > 0.6 * counts.mean()


def test_shared_negatives_never_count_the_positive():
    g = torch.Generator().manual_seed(1)
    neg = sample_shared_negatives(N_ITEMS, 16, g)
    assert len(set(neg.tolist())) == 16 and neg.min() >= 1 and neg.max() <= N_ITEMS
    emb = torch.nn.Embedding(N_ITEMS + 1, 8)
    h = torch.randn(N_ITEMS, 8)
    pos = torch.arange(1, N_ITEMS + 1)  # every item is somebody's positive: collisions guaranteed
    logits = sampled_logits(h, pos, emb, N_ITEMS, 16, "batch", torch.Generator().manual_seed(1))
    same = neg[None, :] == pos[:, None]
    assert same.sum() == 16
    assert torch.isinf(logits[:, 1:][same]).all() and torch.isfinite(logits[:, 1:][~same]).all()
    assert torch.isfinite(logits[:, 0]).all()


def test_hstu_time_buckets_on_known_inputs():
    from llmrec.models.hstu import RelativeBias, time_buckets

    dt = torch.tensor([0, 1, -1, 2, 3, 60, 3600, 86_400, -86_400, 365 * 86_400, 10**12, 10**18])
    # floor(ln(max(|dt|, 1)) / 0.301), clipped to [0, 128]
    assert time_buckets(dt).tolist() == [0, 0, 0, 2, 3, 13, 27, 37, 37, 57, 91, 128]
    assert time_buckets(dt, n_buckets=40).tolist() == [0, 0, 0, 2, 3, 13, 27, 37, 37, 40, 40, 40]
    rb = RelativeBias(max_len=5, n_buckets=128)
    with torch.no_grad():
        rb.pos_w.copy_(torch.arange(9.0))
        rb.ts_w.copy_(torch.arange(129.0) * 10)
    day = 86_400
    ts = torch.tensor([[0, 0, day, 2 * day]])
    q = torch.cat([ts[:, 1:], ts[:, -1:]], 1)  # query time = the next item's time; the newest: its own
    bias = rb(4, ts, q)[0]
    # bias[i, j] = w_pos[j - i + 4] + w_time[bucket(q_i - t_j)]
    assert bias[2, 0].item() == 2 + 10 * 40     # 2 days: ln(172800) / 0.301 = 40.07
    assert bias[1, 0].item() == 3 + 10 * 37     # 1 day
    assert bias[3, 2].item() == 3 + 10 * 37     # newest query uses its own time: 2 days - 1 day
    assert bias[3, 3].item() == 4 + 0           # same time: bucket 0


def test_hstu_relative_bias_indexes_distance():
    from llmrec.models.hstu import RelativeBias

    rb = RelativeBias(max_len=5, n_buckets=8, use_time=False)
    with torch.no_grad():
        rb.pos_w.copy_(torch.arange(9.0))
    b = rb(4, None, None)[0]
    # rab[i, j] = w[j - i + n - 1]: the diagonal is w[4], one step back is w[3]
    assert b.diagonal().tolist() == [4.0] * 4
    assert b[3, 0].item() == 1.0 and b[2, 1].item() == 3.0 and b[0, 3].item() == 7.0


@pytest.mark.parametrize("method,fusion", [("ngram", "sum"), ("prefixN", "sum"), ("RQsum-indEmb", "sum"),
                                           ("RQsum-indEmb", "vectorGate")] +
                         [("prefixN-indEmb", f) for f in ("sum", "FC", "MLP", "scalarGate", "vectorGate",
                                                          "scalarWeight")])
def test_every_sid_method_and_fusion_trains(method, fusion):
    from llmrec.models.hstu import HSTU, HSTUConfig
    from llmrec.models.hstu_sid import SIDEmbedding

    torch.manual_seed(0)
    sizes = [4, 4, 3]
    codes = _rand_codes(N_ITEMS, sizes)
    emb = SIDEmbedding(codes, sizes, 16, method, fusion, levels=2)
    model = HSTU(N_ITEMS, HSTUConfig(max_len=8, d_model=16, dqk=8, dv=8, dropout=0.0, n_negatives=8), emb)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 9, rng.integers(3, 9)) for _ in range(64)]   # a small sub-catalog: learnable
    data = NextItemData(seqs, [np.arange(len(s)) * 86_400 for s in seqs], max_len=8)
    batch = data.batch(np.arange(len(data)))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < losses[0] - 0.3, (method, fusion, losses[0], losses[-5:])
    used = [p for n, p in emb.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(used) == len(list(emb.parameters())), "every parameter of the SID embedding gets gradient"
    assert emb.levels == 2


def test_first_level_code_zero_is_not_the_padding_row():
    from llmrec.models.hstu_sid import METHODS, SIDEmbedding

    sizes = [4, 4, 3]
    codes = _rand_codes(N_ITEMS, sizes)
    codes[1] = [0, 0, 0]
    codes[2] = [0, 3, 1]
    for method in METHODS:
        emb = SIDEmbedding(codes, sizes, 8, method, "sum")
        assert (emb.rows[0] == 0).all(), "padding item uses the padding row"
        assert (emb.rows[1:] > 0).all(), f"{method}: a real item fell on the padding row"
        out = emb(torch.tensor([0, 1, 2]))
        assert out[0].abs().sum() == 0
        assert out[1].abs().sum() > 0
        out[1].sum().backward()
        assert emb.table.weight.grad[emb.rows[1]].abs().sum() > 0, f"{method}: code-0 rows must train"
    # prefixes of different lengths never share a row: (0) vs (0, 0), (3) vs (0, 3)
    emb = SIDEmbedding(codes, sizes, 8, "prefixN")
    assert len(set(emb.rows[1].tolist())) == 3
    assert emb.rows[1, 0] == emb.rows[2, 0] and emb.rows[1, 1] != emb.rows[2, 1]


def test_ngram_hashes_large_code_spaces():
    from llmrec.models.hstu_sid import sid_rows

    codes = np.array([[-1, -1, -1], [0, 0, 0], [255, 255, 255], [1, 2, 3]])
    rows, total = sid_rows(codes, [256, 256, 256], "ngram", table_size=1000)
    assert total == 1001 and rows[1:].min() >= 1 and rows[1:].max() <= 1000
    assert rows[3, 0] == 1 + (1 * 256 * 256 + 2 * 256 + 3) % 1000


def test_pad_left_and_next_item_data():
    x = pad_left([[1, 2, 3], [4], []], max_len=2)
    assert x.tolist() == [[2, 3], [0, 4], [0, 0]]
    d = NextItemData([np.array([5, 6, 7, 8])], [np.array([1, 2, 3, 4])], max_len=2)
    b = d.batch([0])
    assert b["items"].tolist() == [[6, 7]] and b["targets"].tolist() == [[7, 8]]
    assert b["ts"].tolist() == [[2, 3]] and b["next_ts"].tolist() == [[3, 4]]
    w = NextItemData([np.arange(1, 8)], None, max_len=3, windows=True)
    assert [list(t) for t in w.targets] == [[5, 6, 7], [2, 3, 4]]


def _toy_split(n_users=120, seed=0):
    """A tiny in-memory split with a learnable pattern (item i is followed by i + 1)."""
    import pandas as pd
    from llmrec.data_builders.splits import Split

    rng = np.random.default_rng(seed)
    rows, valid, test = [], [], []
    for u in range(1, n_users + 1):
        start = rng.integers(1, N_ITEMS - 8)
        seq = list(range(start, start + rng.integers(5, 9)))
        ts = list(range(len(seq)))
        for it, t in zip(seq[:-2], ts[:-2]):
            rows.append((u, it, t))
        valid.append((u, seq[:-2], ts[:-2], seq[-2], ts[-2]))
        test.append((u, seq[:-1], ts[:-1], seq[-1], ts[-1]))
    cols = ["user", "history", "history_ts", "target", "target_ts"]
    return Split(path=None, protocol="loo", train=pd.DataFrame(rows, columns=["user", "item", "timestamp"]),
                 valid=pd.DataFrame(valid, columns=cols), test=pd.DataFrame(test, columns=cols),
                 meta={"n_items": N_ITEMS})


@pytest.mark.parametrize("model,extra", [
    ("sasrec", {"loss": "sampled_softmax", "n_negatives": 16}),
    ("sasrec", {"loss": "bce", "n_negatives": 1, "negatives": "position"}),
    ("sasrec", {"loss": "full_softmax"}),
    ("gpt2", {"content": "none"}),
    ("hstu", {"n_negatives": 16, "negatives": "position"}),
])
def test_each_model_trains_and_loss_falls(model, extra, tmp_path):
    import importlib
    from llmrec.models.baselines import REGISTRY

    sp = _toy_split()
    mod, fn = REGISTRY[model].split(":")
    fit = getattr(importlib.import_module(mod), fn)
    small = {"sasrec": {"d_model": 16}, "gpt2": {"d_model": 16}, "hstu": {"d_model": 16, "dqk": 8, "dv": 8}}[model]
    cfg = {"max_len": 8, "dropout": 0.0, "epochs": 6, "batch_size": 16, "lr": 0.01, "progress": False,
           "patience": 10, **small, **extra}
    res = fit(sp, cfg, tmp_path / "w", seed=0)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < losses[0] * 0.9, losses
    best = max(h["valid_ndcg@10"] for h in res["history"])
    assert res["info"]["best_epoch"] == [h["valid_ndcg@10"] for h in res["history"]].index(best) + 1
    assert res["valid"].metrics["ndcg@10"] == pytest.approx(best)   # the best checkpoint was restored
    assert res["test"].metrics["recall@10"] > 10 / N_ITEMS            # better than chance on the toy pattern
    assert (tmp_path / "w" / "model.safetensors").is_file() and not (tmp_path / "w" / "checkpoint").exists()


def test_gpt2_content_variants(tmp_path):
    from llmrec.models.gpt2 import GPT2Rec, GPT2RecConfig, fit, load_item_embeddings, pca_init

    sp = _toy_split()
    E = np.random.default_rng(0).normal(size=(N_ITEMS + 1, 24)).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", E)
    init = pca_init(E, 16, 0.02)
    assert init.shape == (N_ITEMS + 1, 16) and init[0].abs().sum() == 0
    assert init[1:].std().item() == pytest.approx(0.02, rel=1e-3)
    m = GPT2Rec(N_ITEMS, GPT2RecConfig(d_model=16, content="init", embeddings="x"), E)
    torch.testing.assert_close(m.gpt.transformer.wte.weight, m.gpt.lm_head.weight)  # tied
    torch.testing.assert_close(m.gpt.transformer.wte.weight.detach(), init)
    res = fit(sp, {"content": "frozen", "embeddings": str(tmp_path), "d_model": 16, "max_len": 8, "epochs": 3,
                   "batch_size": 16, "lr": 0.01, "progress": False, "dropout": 0.0}, None, seed=0)
    assert res["history"][-1]["loss"] < res["history"][0]["loss"]
    fr = GPT2Rec(N_ITEMS, GPT2RecConfig(d_model=16, content="frozen", embeddings="x"), E)
    assert not any("text" in n for n, _ in fr.named_parameters())   # the text table is an input, not trained
    fr.loss({"items": torch.tensor([[1, 2, 3]]), "targets": torch.tensor([[2, 3, 4]])}).backward()
    assert fr.proj.weight.grad.abs().sum() > 0
    torch.testing.assert_close(fr.text, torch.from_numpy(E))
    np.save(tmp_path / "bad.npy", E[:-1])
    with pytest.raises(LlmrecError, match=r"bad.npy.*\[41, dim\]"):
        load_item_embeddings(tmp_path / "bad.npy", N_ITEMS)
    with pytest.raises(LlmrecError, match="needs `embeddings`"):
        GPT2RecConfig(content="init")


def test_resume_continues_exactly(tmp_path):
    from llmrec.models.sasrec import SASRec, SASRecConfig
    from llmrec.training.loop import load_weights

    sp = _toy_split()
    data = NextItemData(sp.train_sequences()[1], None, 8)

    def run(workdir, stop_at=None, resume=False, session_minutes=0.0):
        torch.manual_seed(0)
        m = SASRec(N_ITEMS, SASRecConfig(max_len=8, d_model=16, n_negatives=8))
        make = data.batches(16)

        def batches(epoch, rng):
            if stop_at and epoch == stop_at:
                raise KeyboardInterrupt
            return make(epoch, rng)

        from llmrec.eval import evaluate_scores
        from llmrec.training.loop import history_batch
        ev = lambda mm, ex, d: evaluate_scores(lambda b: mm.score(history_batch(b, 8)), ex, N_ITEMS,
                                               progress=False)
        return m, train(m, batches=batches, loss_fn=lambda mm, b: mm.loss(b), evaluate=ev, valid=sp.valid,
                        test=sp.test, cfg=TrainConfig(epochs=3, lr=0.01, progress=False,
                                                      session_minutes=session_minutes),
                        workdir=workdir, seed=3, resume=resume)

    _, full = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_at=3)
    assert (tmp_path / "b" / "checkpoint" / "state.json").is_file()
    with pytest.raises(LlmrecError, match="resume"):
        run(tmp_path / "b")
    _, resumed = run(tmp_path / "b", resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.test.metrics == full.test.metrics
    # session_minutes: each session trains one epoch, keeps the checkpoint and pauses; resuming ends identically
    for epoch in (1, 2):
        with pytest.raises(TrainingPaused, match=f"paused after epoch {epoch}.*--resume") as e:
            run(tmp_path / "c", resume=True, session_minutes=1e-9)
        assert e.value.epoch == epoch and not (tmp_path / "c" / "train_info.json").exists()
    _, paused = run(tmp_path / "c", resume=True, session_minutes=1e-9)
    assert [h["loss"] for h in paused.history] == [h["loss"] for h in full.history]
    assert paused.test.metrics == full.test.metrics
    a = SASRec(N_ITEMS, SASRecConfig(max_len=8, d_model=16))
    b = SASRec(N_ITEMS, SASRecConfig(max_len=8, d_model=16))
    load_weights(a, tmp_path / "a" / "model.safetensors")
    load_weights(b, tmp_path / "b" / "model.safetensors")
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


def test_unknown_config_key_is_a_clear_error():
    from llmrec.models.sasrec import fit

    with pytest.raises(LlmrecError, match=r"unknown config key\(s\) \['n_layer'\].*n_layers"):
        fit(_toy_split(), {"n_layer": 2}, None)
    with pytest.raises(LlmrecError, match="loss must be one of"):
        fit(_toy_split(), {"loss": "softmax"}, None)


def test_cli_train_writes_metrics_checkpoint_and_curve(synthetic_dataset, tmp_path):
    from llmrec.cli import main
    from llmrec.tokenizers import SidTable

    sp_items = json.loads((synthetic_dataset / "dataset.json").read_text())["n_items"]
    SidTable(_rand_codes(sp_items, [8, 8, 4]), [8, 8, 4]).save(tmp_path)
    out = tmp_path / "run"
    args = ["baseline", "train", "--model", "hstu-sid", "--data", str(synthetic_dataset), "--out", str(out),
            "--set", f"sids={tmp_path}", "--set", "method=RQsum-indEmb", "--set", "fusion=scalarGate",
            "--set", "d_model=16", "--set", "dqk=16", "--set", "dv=16", "--set", "epochs=2",
            "--set", "progress=false", "--ks", "5,10,20"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"recall@10", "ndcg@10", "mrr@20"} <= set(m)
    assert set(m["by_popularity"]) == {"hot", "middle", "cold"}
    assert sum(v["n_users"] for v in m["by_popularity"].values()) == m["n_users"]
    for f in ("model.safetensors", "history.json", "learning_curve.png", "model_config.json", "run.json"):
        assert (out / f).is_file(), f
    run = json.loads((out / "run.json").read_text())
    assert run["extra"]["train_sequences_per_s"] > 0 and run["extra"]["inference_users_per_s"] > 0
    assert run["config"]["method"] == "RQsum-indEmb"
    assert main(args) == 2  # exists, no --overwrite


def test_letter_sids_align_with_beauty(shared_data):
    from llmrec.models.hstu_sid import load_sids

    codes, sizes = load_sids(shared_data / "amazon-beauty-2014/raw/letter/Beauty.index.json", 12101, offset=-1)
    assert codes.shape == (12102, 4) and (codes[0] == -1).all() and (codes[1:] >= 0).all()
    assert max(sizes) <= 256
    with pytest.raises(LlmrecError, match="12101 items, but the dataset has 500"):
        load_sids(shared_data / "amazon-beauty-2014/raw/letter/Beauty.index.json", 500, offset=-1)
