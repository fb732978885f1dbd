"""DPO and softmax-DPO (several negatives from constrained beam search) on CPU with a small Qwen3-architecture
model through TRL: the S-DPO loss on hand-computed values, negatives are wrong catalog items from the reference
model's beam search, and a few steps move the loss and the preference margin the right way."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError


TORCH_THREADS = 2  # tests/conftest.py::_torch_threads


def test_sdpo_loss_hand_computed():
    from llmrec.training.dpo import sdpo_loss

    # one negative: DPO's -log sigmoid(beta * (r_w - r_l))
    r = torch.tensor([[0.5], [-0.3]])
    assert sdpo_loss(r, beta=0.1).item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * 0.8))), abs=1e-6)
    # three negatives: -log sigmoid(-log sum_j exp(beta (r_j - r_w)))
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    s = sum(math.exp(0.5 * (x - 1.0)) for x in (0.0, -1.0, 2.0))
    assert sdpo_loss(r, beta=0.5)[0].item() == pytest.approx(math.log(1 + s), abs=1e-6)
    assert sdpo_loss(r, beta=0.5)[1].item() == pytest.approx(math.log(4), abs=1e-6)   # all equal: log(1 + N)


def test_multi_negative_collator_layout():
    from llmrec.training.dpo import MultiNegativeCollator

    ex = [{"prompt_ids": [1, 2], "chosen_ids": [5, 9], "rejected_ids": [[6, 9], [7, 9]]},
          {"prompt_ids": [3], "chosen_ids": [8, 9], "rejected_ids": [[6, 9], [5, 9]]}]
    b = MultiNegativeCollator(pad_token_id=0, n_negatives=2)(ex)
    assert b["input_ids"].tolist() == [[1, 2, 5, 9], [3, 8, 9, 0], [1, 2, 6, 9], [3, 6, 9, 0], [1, 2, 7, 9],
                                       [3, 5, 9, 0]]
    assert b["completion_mask"].tolist()[0] == [0, 0, 1, 1] and b["completion_mask"].tolist()[1] == [0, 1, 1, 0]
    assert b["attention_mask"].tolist()[1] == [1, 1, 1, 0]
    with pytest.raises(LlmrecError, match="2 negatives"):
        MultiNegativeCollator(0, 2)([{**ex[0], "rejected_ids": [[6, 9]]}])


@pytest.fixture(scope="module")
def pref_setup(tmp_path_factory, fallback_tokenizer_dir, synthetic_dataset):
    from llmrec.data_builders import load_dataset
    from llmrec.models.tiny import random_sid_table
    from llmrec.models.vocab import extend_pretrained

    root = tmp_path_factory.mktemp("dpo")
    table = random_sid_table(load_dataset(synthetic_dataset).n_items, (8, 8), seed=1)
    (root / "sid").mkdir()
    table.save(root / "sid")
    model = extend_pretrained("tiny-qwen3", root / "sid", root / "model", init="text", data=synthetic_dataset,
                              tokenizer=str(fallback_tokenizer_dir))
    return {"root": root, "model": model, "data": synthetic_dataset}


def _recipe(s, method, negatives, name):
    from llmrec.training.rl_common import load_rl_recipe

    return load_rl_recipe({
        "method": method, "output_dir": str(s["root"] / name), "seed": 0,
        "model": {"path": str(s["model"]), "dtype": "float32"},
        "data": {"dataset": str(s["data"]), "split": "loo", "max_examples": 4},
        "preference": {"negatives": negatives, "source": "beam", "beams": 8},
        "dpo": {"max_steps": 4, "num_train_epochs": 10, "per_device_train_batch_size": 4, "learning_rate": 3e-3,
                "beta": 0.5, "logging_steps": 1, "save_steps": 1000},
        "eval": {"before": False, "at": []}})


def _check_negatives(s, name, n):
    import datasets as hfds

    from llmrec.inference.recommend import Recommender

    ds = hfds.load_from_disk(str(s["root"] / name / "preference_data"))
    rec = Recommender.from_pretrained(s["model"], device="cpu", dtype=torch.float32)
    for row in ds.select(range(3)):
        negs, target = row["negatives"], row["target"]
        assert len(negs) == n and target not in negs and len(set(negs)) == n
        # the negatives are the reference model's best wrong items, in beam order
        prompt = rec.tokenizer.decode(row["prompt_ids"])
        best = [i for i in rec.recommend_prompts([prompt], k=n + 1, num_beams=8)[0].items if i != target][:n]
        assert negs == best
        chosen = rec.tokenizer.decode(row["chosen_ids"], skip_special_tokens=True)
        assert chosen == rec.sid_table.item_sid(target)
    return ds


@pytest.mark.parametrize("method,negatives", [("dpo", 1), ("sdpo", 3)])
def test_preference_steps_move_the_right_way(pref_setup, method, negatives):
    from llmrec.training.dpo import train_preference

    final = train_preference(_recipe(pref_setup, method, negatives, method))
    ds = _check_negatives(pref_setup, method, negatives)
    assert (len(ds[0]["rejected_ids"]) == negatives) if method == "sdpo" else isinstance(ds[0]["rejected_ids"][0], int)
    rep = json.loads((final / "train_report.json").read_text())
    logs = [h for h in rep["log_history"] if "loss" in h and "rewards/margins" in h]
    assert len(logs) == 4
    first, last = logs[0], logs[-1]
    assert first["loss"] == pytest.approx(math.log(1 + negatives), abs=0.02)   # policy == reference at step 1
    assert last["loss"] < first["loss"] - 0.05
    assert last["rewards/margins"] > first["rewards/margins"] + 0.05
    assert last["rewards/chosen"] > last["rewards/rejected"]


def test_negatives_random_and_errors(pref_setup):
    from llmrec.inference.recommend import Recommender
    from llmrec.training.dpo import draw_negatives, train_preference

    rec = Recommender.from_pretrained(pref_setup["model"], device="cpu", dtype=torch.float32)
    targets = [1, 5, 150]
    negs = draw_negatives(rec, ["x"] * 3, targets, 4, source="random", seed=0)
    n = rec.sid_table.n_items
    assert all(len(set(ns)) == 4 and t not in ns and all(1 <= i <= n for i in ns) for ns, t in zip(negs, targets))
    assert np.array_equal(negs, draw_negatives(rec, ["x"] * 3, targets, 4, source="random", seed=0))
    with pytest.raises(LlmrecError, match="negatives"):
        draw_negatives(rec, ["x"], [1], n, source="random")
    with pytest.raises(LlmrecError, match="source"):
        draw_negatives(rec, ["x"], [1], 2, source="popular")
    with pytest.raises(LlmrecError, match="one negative"):
        train_preference(_recipe(pref_setup, "dpo", 2, "bad"))
