"""RL rewards on hand-computed values: hits, the NDCG-shaped rank penalty (groups with and without a hit,
duplicates), semantic cosine, the collaborative SASRec percentile, invalid completions, and the recipe parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.tokenizers.sid_table import SidTable
from llmrec.training import rewards as R


@pytest.fixture(scope="module")
def table():
    # 6 items, 2 levels: item i has codes below (row 0 padding)
    codes = np.array([[-1, -1], [0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])
    return SidTable(codes, [3, 2])


def sid(table, i):
    return table.item_sid(i)


def test_completion_items_parse_exactly_one_sid(table):
    comps = [sid(table, 3), " " + sid(table, 5) + "\n", "<|sid_begin|>" + sid(table, 2) + "<|sid_end|>",
             [{"role": "assistant", "content": sid(table, 6)}],           # conversational form
             "<a_0>", "<a_9><b_0>", sid(table, 1) + " and more", "", sid(table, 1) + sid(table, 2)]
    assert R.completion_items(comps, table).tolist() == [3, 5, 2, 6, -1, -1, -1, -1, -1]


def test_hit_reward_values_duplicates_invalid(table):
    hit = R.HitReward(table)
    assert hit.__name__ == "hit"
    comps = [sid(table, 2), sid(table, 2), sid(table, 4), "garbage", sid(table, 1)]
    logged = {}
    out = hit(prompts=["p"] * 5, completions=comps, target=[2, 2, 2, 2, 5],
              group_items=[[2, 2, 4, -1]] * 4 + [[1, 3, 4, 6]], log_metric=logged.__setitem__)
    assert out == [1.0, 1.0, 0.0, 0.0, 0.0]           # each duplicate of the target is a hit
    assert logged["sid/valid_rate"] == pytest.approx(0.8)
    assert logged["sid/group_hit_rate"] == pytest.approx(0.8)   # 4 of 5 completions are in a group with a hit


def test_rank_weights_hand_computed():
    w = R.rank_weights(4)
    raw = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]   # 1, 0.6309, 0.5, 0.4307
    assert w.tolist() == pytest.approx([x / sum(raw) for x in raw])
    assert w.sum() == pytest.approx(1.0)
    assert w[1] == pytest.approx(0.246302, abs=1e-6)


def test_rank_reward_group_with_and_without_hit(table):
    rank = R.RankReward(table)
    # group A (target 3): beams ranked 0..3 = items 1, 3, 4, 6 -> the hit at rank 1 gets 0, wrong beams pay w_r
    # group B (target 5): items 1, 2, 3, 4 -> no hit -> all 0
    comps = [sid(table, i) for i in (1, 3, 4, 6, 1, 2, 3, 4)]
    groups = [[1, 3, 4, 6]] * 4 + [[1, 2, 3, 4]] * 4
    out = rank(completions=comps, target=[3] * 4 + [5] * 4, sid_rank=[0, 1, 2, 3, 0, 1, 2, 3], group_items=groups)
    raw = np.array([1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)])
    w = raw / raw.sum()
    assert out[:4] == pytest.approx([-w[0], 0.0, -w[2], -w[3]])
    assert out[:4] == pytest.approx([-0.390380, 0.0, -0.195190, -0.168128], abs=1e-6)
    assert out[4:] == [0.0, 0.0, 0.0, 0.0]
    # hit + rank, as a recipe combines them: the hit is the only positive, wrong top beams cost most
    hit = R.HitReward(table)(completions=comps, target=[3] * 4 + [5] * 4)
    total = np.add(hit, out)
    assert total[1] == 1.0 and total[0] < total[2] < total[3] < 0


def test_rank_reward_duplicates_share_rank(table):
    # sampled group of 4 (target 2): item 4 sampled twice, ranked first (dense rank 0) -> both pay w_0
    rank = R.RankReward(table)
    comps = [sid(table, i) for i in (4, 2, 4, 6)]
    out = rank(completions=comps, target=[2] * 4, sid_rank=[0, 1, 0, 2], group_items=[[4, 2, 4, 6]] * 4)
    w = R.rank_weights(4)
    assert out == pytest.approx([-w[0], 0.0, -w[0], -w[2]])


def test_rank_reward_needs_rollout_fields(table):
    with pytest.raises(LlmrecError, match="sid_rank"):
        R.RankReward(table)(completions=[sid(table, 1)], target=[1])


def test_semantic_reward_cosine(table):
    emb = np.zeros((7, 2), np.float32)
    emb[1:] = [[1, 0], [0, 2], [3, 3], [-1, 0], [1, 1], [0, -5]]
    sem = R.SemanticReward(table, emb)
    out = sem(completions=[sid(table, i) for i in (1, 2, 3, 4)] + ["bad"], target=[1, 1, 1, 1, 1])
    assert out == pytest.approx([1.0, 0.0, 1 / math.sqrt(2), -1.0, -1.0])   # invalid -> -1 (the minimum)
    # a group with no hit still gets graded rewards (not all equal): GRPO gets an advantage signal
    out = sem(completions=[sid(table, i) for i in (2, 3, 4)], target=[6, 6, 6])
    assert out == pytest.approx([-1.0, -1 / math.sqrt(2), 0.0])
    with pytest.raises(LlmrecError, match="n_items"):
        R.SemanticReward(table, np.zeros((5, 2)))


def test_semantic_reward_reads_emb_folder(table, tmp_path):
    emb = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", emb)
    sem = R.SemanticReward(table, tmp_path)
    out = sem(completions=[sid(table, 3)], target=[5])
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert out[0] == pytest.approx(float(e[3] @ e[5]), abs=1e-6)
    with pytest.raises(LlmrecError, match="no embeddings.npy.*llmrec items embed"):
        R.SemanticReward(table, tmp_path / "missing")


class _FixedSASRec(torch.nn.Module):
    """Stand-in with SASRec's scoring interface: score = a fixed preference over items, shifted by history."""

    def __init__(self, n_items):
        super().__init__()
        self.n_items = n_items
        self.cfg = type("C", (), {"max_len": 5})()

    def score(self, batch):
        items = batch["items"]
        base = torch.arange(self.n_items + 1, dtype=torch.float32)  # higher item id = better
        out = base.expand(len(items), -1).clone()
        out[items[:, -1] == 6] = -base      # after item 6, lower ids are better
        return out


def test_collaborative_reward_percentile(table):
    col = R.CollaborativeReward(table, _FixedSASRec(6))
    comps = [sid(table, i) for i in (6, 1, 3, 6, 1)] + ["bad"]
    out = col(completions=comps, target=[2] * 6, history=[[1], [1], [1], [2, 6], [2, 6], [1]])
    # 6 items: percentile = 1 - rank/5; with history [1]: item 6 rank 0 -> 1.0, item 1 rank 5 -> 0.0, item 3 -> 0.4
    assert out == pytest.approx([1.0, 0.0, 0.4, 0.0, 1.0, 0.0])


def test_collaborative_reward_loads_trained_sasrec(table, tmp_path):
    from llmrec.artifacts import write_json
    from llmrec.models.sasrec import SASRec, SASRecConfig
    from llmrec.training.loop import save_weights

    cfg = SASRecConfig(max_len=5, d_model=8, n_layers=1, n_heads=1)
    torch.manual_seed(0)
    m = SASRec(6, cfg)
    save_weights(m, tmp_path / "model.safetensors")
    import dataclasses
    write_json(tmp_path / "model_config.json", {"model": "sasrec", **dataclasses.asdict(cfg), "n_items": 6})
    col = R.CollaborativeReward(table, tmp_path)
    m.eval()
    with torch.no_grad():
        sc = m.score({"items": torch.tensor([[0, 0, 0, 1, 2]])})[0, 1:]
    best = int(torch.argmax(sc)) + 1
    worst = int(torch.argmin(sc)) + 1
    out = col(completions=[sid(table, best), sid(table, worst)], target=[1, 1], history=[[1, 2], [1, 2]])
    assert out == pytest.approx([1.0, 0.0])
    with pytest.raises(LlmrecError, match="not a trained SASRec"):
        R.load_sasrec(tmp_path / "nope")


def test_build_rewards_from_recipe_section(table, tmp_path):
    np.save(tmp_path / "embeddings.npy", np.ones((7, 3), np.float32))
    funcs, weights = R.build_rewards({"hit": 1.0, "rank": 0.5, "semantic": {"weight": 0.2, "embeddings":
                                                                              str(tmp_path)}}, table)
    assert [f.__name__ for f in funcs] == ["hit", "rank", "semantic"] and weights == [1.0, 0.5, 0.2]
    with pytest.raises(LlmrecError, match="unknown reward"):
        R.build_rewards({"bleu": 1.0}, table)
    with pytest.raises(LlmrecError, match="at least one"):
        R.build_rewards({"hit": 0}, table)
    with pytest.raises(LlmrecError, match="needs embeddings"):
        R.build_rewards({"semantic": 1.0}, table)
