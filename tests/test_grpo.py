"""GRPO on CPU with a small Qwen3-architecture model: a few TRL steps with trie-constrained beam and sampled
rollouts; the reward functions receive TRL's decoded completions with the SID tokens intact; groups are distinct
catalog items in beam order; the policy moves; the final folder loads as a Recommender; curves are drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError


TORCH_THREADS = 2  # tests/conftest.py::_torch_threads


@pytest.fixture(scope="module")
def rl_setup(tmp_path_factory, tiny_sid_lm, fallback_tokenizer_dir, synthetic_dataset):
    """An extended tiny Qwen3 (the small fallback tokenizer: fast steps) + item embeddings for the semantic reward."""
    from llmrec.data_builders import load_dataset

    model = tiny_sid_lm(fallback_tokenizer_dir, (8, 8), seed=0)
    root = tmp_path_factory.mktemp("grpo")
    n = load_dataset(synthetic_dataset).n_items
    emb = np.random.default_rng(0).normal(size=(n + 1, 16)).astype(np.float32)
    (root / "emb").mkdir()
    np.save(root / "emb" / "embeddings.npy", emb)
    return {"root": root, "model": model, "data": synthetic_dataset, "emb": root / "emb"}


def _recipe(s, name, **over):
    r = {"method": "grpo", "output_dir": str(s["root"] / name), "seed": 0,
         "model": {"path": str(s["model"]), "dtype": "float32"},
         "data": {"dataset": str(s["data"]), "split": "loo", "max_examples": 8},
         "rollout": {"mode": "beam", "num_generations": 4},
         "rewards": {"hit": 1.0, "rank": 1.0, "semantic": {"weight": 1.0, "embeddings": str(s["emb"])}},
         "grpo": {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1,
                  "save_steps": 1000},
         "eval": {"before": False, "at": []}}
    for k, v in over.items():
        r[k] = {**r[k], **v} if isinstance(v, dict) and isinstance(r.get(k), dict) else v
    from llmrec.training.rl_common import load_rl_recipe

    return load_rl_recipe(r)


@pytest.fixture
def record_rewards(monkeypatch):
    """Record what TRL hands the reward functions (completions and per-completion fields)."""
    from llmrec.training import rewards as R

    seen = []
    orig = R.HitReward.__call__

    def spy(self, prompts=None, completions=None, target=None, **kw):
        seen.append({"prompts": list(prompts), "completions": list(completions), "target": list(target),
                     "sid_rank": list(kw.get("sid_rank") or []), "group_items": list(kw.get("group_items") or [])})
        return orig(self, prompts=prompts, completions=completions, target=target, **kw)

    monkeypatch.setattr(R.HitReward, "__call__", spy)
    return seen


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_grpo_beam_rollouts_train_and_rewards_see_sids(rl_setup, record_rewards):
    from llmrec.inference.recommend import Recommender
    from llmrec.models.vocab import load_extended
    from llmrec.training.grpo import train_grpo

    final = train_grpo(_recipe(rl_setup, "beam"))
    _, tok, table, info = load_extended(rl_setup["model"], device="cpu")
    assert record_rewards, "the reward functions were never called"
    for call in record_rewards:
        comps = call["completions"]
        assert len(comps) == 8 and all(isinstance(c, str) for c in comps)
        # TRL decoded with skip_special_tokens=True: every completion is still exactly one catalog SID
        items = [table.decode_item(c) for c in comps]
        assert all(i is not None and table.item_sid(i) == c.strip() for i, c in zip(items, comps))
        assert all("<a_" in c and "<b_" in c and "<c_" in c for c in comps)
        # two groups of 4: distinct items in beam order, each completion its group's member of its rank
        for g in range(2):
            grp = slice(4 * g, 4 * g + 4)
            assert call["sid_rank"][grp] == [0, 1, 2, 3]
            assert len(set(items[grp])) == 4 and call["group_items"][4 * g] == items[grp]
            assert len(set(call["prompts"][grp])) == 1 and len(set(call["target"][grp])) == 1
    rep = json.loads((final / "train_report.json").read_text())
    assert rep["global_step"] == 2 and rep["rollout_calls"] >= 1
    logs = [h for h in rep["log_history"] if "reward" in h]
    assert logs and all("frac_reward_zero_std" in h and "rewards/semantic/mean" in h for h in logs)
    # the semantic reward is graded, so groups have non-zero advantages and the policy moves
    before, after = _weights(rl_setup["model"]), _weights(final)
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    assert (rl_setup["root"] / "beam" / "curves.png").stat().st_size > 10_000
    rec = Recommender.from_pretrained(final, device="cpu")
    out = rec.recommend([[1, 2, 3]], k=5)[0]
    assert len(out.items) == 5 == len(set(out.items))


def test_grpo_sampled_rollouts(rl_setup, record_rewards):
    from llmrec.tokenizers.sid_table import SidTable
    from llmrec.training.grpo import train_grpo

    train_grpo(_recipe(rl_setup, "sample", rollout={"mode": "sample", "temperature": 1.5},
                       rewards={"hit": 1.0, "rank": 0.5}, grpo={"max_steps": 1}))
    table = SidTable.load(rl_setup["model"] / "sid")
    call = record_rewards[0]
    items = [table.decode_item(c) for c in call["completions"]]
    assert all(i is not None for i in items)
    for g in range(2):
        grp = slice(4 * g, 4 * g + 4)
        assert call["group_items"][4 * g] == items[grp]
        ranks = call["sid_rank"][grp]
        # dense ranks: duplicates share one, ranks are 0..(distinct items - 1)
        assert sorted(set(ranks)) == list(range(len(set(items[grp]))))
        for a in range(4):
            for b in range(4):
                assert (items[grp][a] == items[grp][b]) == (ranks[a] == ranks[b])


def test_grpo_recipe_errors(rl_setup, tmp_path):
    from llmrec.training.rl_common import load_rl_recipe

    base = {"method": "grpo", "output_dir": str(tmp_path), "model": {"path": str(rl_setup["model"])},
            "data": {"dataset": str(rl_setup["data"])}}
    with pytest.raises(LlmrecError, match="method"):
        load_rl_recipe({**base, "method": "ppo"})
    with pytest.raises(LlmrecError, match="rollout.mode"):
        load_rl_recipe({**base, "rollout": {"mode": "greedy"}})
    with pytest.raises(LlmrecError, match="unknown key"):
        load_rl_recipe({**base, "rollout": {"beam_width": 3}})
    with pytest.raises(LlmrecError, match="groups of >= 2"):
        load_rl_recipe({**base, "rollout": {"num_generations": 1}})
    from llmrec.training.grpo import train_grpo

    with pytest.raises(LlmrecError, match="differs from rollout.num_generations"):
        train_grpo(load_rl_recipe({**base, "grpo": {"num_generations": 3}}))
    with pytest.raises(LlmrecError, match="not an llmrec model folder"):
        train_grpo(load_rl_recipe({**base, "model": {"path": str(tmp_path)}}))


@pytest.mark.parametrize("wrap", [False, True])
def test_trl_decoding_keeps_sids_with_the_real_qwen3_tokenizer(qwen3_tokenizer_dir, wrap):
    """What TRL does to rollout completions (batch_decode with skip_special_tokens=True), with the real Qwen3
    tokenizer extended by llmrec: the SIDs (and wrappers) survive and the rewards read the right items."""
    from transformers import AutoTokenizer

    from llmrec.models.tiny import random_sid_table
    from llmrec.models.vocab import SID_BEGIN, SID_END, LmInfo, add_sid_tokens, sid_vocabulary
    from llmrec.training.rewards import HitReward, completion_items
    from llmrec.training.rl_common import end_token_id, item_token_ids

    tok = AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir))
    table = random_sid_table(300, (256, 256, 256), seed=0)
    add_sid_tokens(tok, sid_vocabulary(table, wrap))
    info = LmInfo(base_model="qwen3", levels=table.levels, codebook_sizes=list(table.codebook_sizes), letters="abcd",
                  n_items=table.n_items, wrap=wrap, sid_begin=SID_BEGIN if wrap else None,
                  sid_end=SID_END if wrap else None)
    ids = item_token_ids(table, info, tok)
    items = list(range(1, 301, 7))
    completion_ids = [ids[i] + [end_token_id(tok)] for i in items]          # what SidRollout hands TRL
    assert tok.convert_ids_to_tokens(completion_ids[0][-1]) == "<|im_end|>"
    texts = tok.batch_decode(completion_ids, skip_special_tokens=True)        # what TRL hands the rewards
    assert all(table.item_sid(i) in t for i, t in zip(items, texts))
    assert all((SID_BEGIN in t) == wrap for t in texts)
    assert completion_items(texts, table).tolist() == items
    assert HitReward(table)(completions=texts, target=items) == [1.0] * len(items)
