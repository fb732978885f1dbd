"""Recommender / `llmrec recommend` / `llmrec chat` on a tiny extended Qwen3 with the real Qwen3 tokenizer:
left padding and batching do not change results, checkpoint generation configs are ignored, outputs are valid
catalog items that `llmrec eval` scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError


TORCH_THREADS = 1  # tests/conftest.py::_torch_threads


@pytest.fixture(scope="module")
def sid_model(tiny_sid_lm, lm_tokenizer_dir):
    """tiny-qwen3 extended with random SIDs of the synthetic shop (text init: distinct rows)."""
    return tiny_sid_lm(lm_tokenizer_dir, (8, 8, 8), seed=0)


@pytest.fixture(scope="module")
def rec(sid_model):
    from llmrec.inference.recommend import Recommender

    return Recommender.from_pretrained(sid_model, device="cpu", dtype=torch.float32)


def _histories(n_items, rng):
    return [list(map(int, rng.integers(1, n_items + 1, L))) for L in (1, 30, 4, 12, 2)]


def test_batch_and_padding_do_not_change_results(rec):
    from llmrec.inference.hf import constrained_beam_search, generate_constrained

    rng = np.random.default_rng(0)
    hists = _histories(rec.sid_table.n_items, rng)
    lens = [len(rec.tokenizer(rec.history_prompt(h))["input_ids"]) for h in hists]
    assert len(set(lens)) == len(lens)                          # prompts of different lengths: left padding
    batch = rec.recommend(hists, k=8, batch_size=len(hists))
    for h, b in zip(hists, batch):
        alone = rec.recommend([h], k=8, batch_size=1)[0]
        assert alone.items == b.items
        np.testing.assert_allclose(alone.scores, b.scores, atol=1e-4)
        assert len(b.items) == 8 == len(set(b.items)) and all(1 <= i <= rec.sid_table.n_items for i in b.items)
        assert b.scores == sorted(b.scores, reverse=True) and b.titles[0] == rec.titles[b.items[0]]
    # Sub-vocabulary logits, full logits and HF generate + the processor give the same lists.
    tok = rec.tokenizer
    tok.padding_side = "left"
    enc = tok([rec.history_prompt(h) for h in hists], return_tensors="pt", padding=True)
    a = constrained_beam_search(rec.model, enc.input_ids, rec.trie, enc.attention_mask, num_beams=8, subvocab=True)
    f = constrained_beam_search(rec.model, enc.input_ids, rec.trie, enc.attention_mask, num_beams=8, subvocab=False)
    g = generate_constrained(rec.model, enc.input_ids, rec.trie, enc.attention_mask, num_beams=8)
    assert a.ranked() == f.ranked() == g.ranked() == [b.items for b in batch]
    np.testing.assert_allclose(a.scores, g.scores, atol=1e-4)


def test_checkpoint_generation_config_is_ignored(rec):
    rng = np.random.default_rng(1)
    hists = _histories(rec.sid_table.n_items, rng)
    before = rec.recommend(hists, k=5)
    gc = rec.model.generation_config
    saved = gc.to_dict()
    try:
        # What an Instruct checkpoint may carry; applied to a constrained search these drop valid tokens.
        gc.do_sample, gc.top_k, gc.top_p, gc.temperature = True, 1, 0.05, 0.1
        gc.repetition_penalty, gc.no_repeat_ngram_size, gc.num_beams = 10.0, 1, 2
        after = rec.recommend(hists, k=5)
        from llmrec.inference.hf import generate_constrained

        enc = rec.tokenizer([rec.history_prompt(h) for h in hists], return_tensors="pt", padding=True)
        via_generate = generate_constrained(rec.model, enc.input_ids, rec.trie, enc.attention_mask, num_beams=5)
    finally:
        for key, val in saved.items():
            setattr(gc, key, val)
    assert [r.items for r in after] == [r.items for r in before] == via_generate.ranked()


def test_recommend_cli_split_eval_and_resume(sid_model, synthetic_dataset, tmp_path):
    from llmrec.cli import main
    from llmrec.inference.recommend import recommend_file, requests_from_split

    out = tmp_path / "pred.jsonl"
    assert main(["recommend", "--model", str(sid_model), "--data", str(synthetic_dataset), "--split", "loo",
                 "--limit", "12", "--k", "5", "--output", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 12
    for r in rows:
        assert {"user", "history", "target", "ranked", "scores", "titles"} <= set(r)
        assert len(r["ranked"]) == 5 == len(set(r["ranked"])) == len(r["titles"])
    assert main(["eval", "--predictions", str(out), "--ks", "5", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_users"] == 12 and metrics["invalid_rate"] == 0.0 and 0.0 <= metrics["hr@5"] <= 1.0
    # Resume: a partial file from an interrupted run is continued, giving the same output.
    reqs = requests_from_split(synthetic_dataset, "loo", "test", 12)
    part = tmp_path / "again.jsonl.partial"
    part.write_text("\n".join(out.read_text().splitlines()[:7]) + "\n")
    recommend_file(sid_model, reqs, tmp_path / "again.jsonl", k=5, chunk=4, device="cpu")
    again = [json.loads(x) for x in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert not part.exists() and len(again) == len(rows)
    for a, b in zip(again, rows):             # other batch composition: equal up to float rounding
        assert (a["user"], a["ranked"], a["titles"]) == (b["user"], b["ranked"], b["titles"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)


def test_recommend_cli_input_file_errors(sid_model, tmp_path, capsys):
    from llmrec.cli import main

    good = tmp_path / "in.jsonl"
    good.write_text(json.dumps({"user": "u1", "history": [3, 4, 5]}) + "\n" + json.dumps({"history": [7]}) + "\n")
    assert main(["recommend", "--model", str(sid_model), "--input", str(good), "--k", "3", "--output",
                 str(tmp_path / "o.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows[0]["user"] == "u1" and rows[1]["user"] == 2 and all(len(r["ranked"]) == 3 for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"history": [1]}) + "\n" + json.dumps({"history": ["x"]}) + "\n")
    assert main(["recommend", "--model", str(sid_model), "--input", str(bad), "--output",
                 str(tmp_path / "b.jsonl")]) == 2
    assert "line 2" in capsys.readouterr().err
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"history": [1, 99999]}) + "\n")
    assert main(["recommend", "--model", str(sid_model), "--input", str(unknown), "--output",
                 str(tmp_path / "u.jsonl")]) == 2
    assert "history[1] = 99999" in capsys.readouterr().err


def test_exclude_history(rec):
    h = rec.recommend([[5, 6, 7]], k=10)[0].items[:3]
    res = rec.recommend([h], k=10, exclude_history=True)[0]
    assert len(res.items) == 10 and not set(h) & set(res.items)


def test_chat_one_shot_and_interactive(sid_model, rec, monkeypatch, capsys):
    from llmrec.cli import main
    from llmrec.data_builders import prompts

    # The item-search prompts of the instruction data are what chat asks with.
    p = rec.request_prompt("a red lipstick")
    assert "a red lipstick" in p and p == prompts.prompt_text(
        rec.tokenizer, prompts.render_messages("itemsearch", 0, query="a red lipstick"))
    p2 = rec.request_prompt("a red lipstick", liked=[3, 9])
    assert rec.info.item_text(rec.sid_table, 9) in p2
    ans = rec.chat("a red lipstick", liked=[3, 9], k=4)
    assert len(ans.items) == 4 == len(set(ans.items)) and ans.scores == sorted(ans.scores, reverse=True)
    assert main(["chat", "--model", str(sid_model), "-m", "a red lipstick", "--liked", "3,9", "--k", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == ans.items and out["liked"] == [3, 9]
    lines = iter(["something for dry skin", "/like 2", "/liked", "/k 3", "and a matching cream", "/quit"])
    monkeypatch.setattr("builtins.input", lambda _="": next(lines))
    assert main(["chat", "--model", str(sid_model), "--k", "5"]) == 0
    text = capsys.readouterr().out
    assert text.count("  1. ") == 2 and "  5. " in text and "liked:" in text
    with pytest.raises(LlmrecError, match="liked"):
        rec.request_prompt("x", liked=[0])
