"""Instruction data: no leakage on real Beauty (LOO and temporal), task skipping, prompts identical to inference."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data_builders import load_dataset, load_split
from llmrec.data_builders.instructions import (InstructionConfig, build_instructions, check_no_leakage,
                                               load_instructions)
from llmrec.data_builders.prompts import (SYSTEM_PROMPT, completion_text, format_history, prompt_text,
                                          render_messages)
from llmrec.errors import LlmrecError
from llmrec.tokenizers.sid_table import SidTable


def random_sids(n_items: int, seed: int = 0, k: int = 32) -> SidTable:
    """A collision-free 3-level table: two random codes + a disambiguation digit."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, k, size=(n_items, 2))
    _, inv = np.unique(c, axis=0, return_inverse=True)
    seen: dict[int, int] = {}
    d = np.empty(n_items, dtype=np.int64)
    for i, g in enumerate(inv.ravel()):
        d[i] = seen.get(g, 0)
        seen[g] = d[i] + 1
    codes = np.full((n_items + 1, 3), -1)
    codes[1:, :2], codes[1:, 2] = c, d
    return SidTable(codes, [k, k, int(d.max()) + 1])


SEQ_TASKS = ("seqrec", "seq2title", "titleseq2sid", "prefsearch")


def _assert_no_heldout_targets(train, split):
    """Independent of check_no_leakage: Beauty has no repeated user-item pair, so a training sequence example
    whose target is the user's validation or test target would be a leak."""
    t = train.select_columns(["task", "user", "history", "target"]).to_pandas()
    t = t[t["task"].isin(SEQ_TASKS)]
    assert len(t) > 0
    for part in ("valid", "test"):
        held = getattr(split, part)[["user", "target"]]
        hit = t.merge(held, on=["user", "target"])
        assert hit.empty, f"{len(hit)} training examples target a {part} target"
        # nor does any training history contain a held-out target of the same user
        h = t[["user", "history"]].explode("history").dropna()
        h = h.rename(columns={"history": "target"}).astype({"target": np.int64})
        assert h.merge(held, on=["user", "target"]).empty


@pytest.mark.shared_data
def test_no_leakage_beauty_loo_and_temporal(beauty_dataset, tmp_path):
    from llmrec.data_builders import split_dataset

    ds = load_dataset(beauty_dataset)
    table = random_sids(ds.n_items)
    cfg = InstructionConfig(tasks=SEQ_TASKS + ("title2sid", "desc2sid"),
                            ratios={"seq2title": 0.05, "titleseq2sid": 0.05, "prefsearch": 0.05})
    out = build_instructions(beauty_dataset, "loo", table, tmp_path / "loo", cfg)
    dd, m = load_instructions(out)
    split = load_split(beauty_dataset, "loo")
    # sliding windows over every training position: one seqrec example per training interaction but the first
    n_train = split.train.groupby("user").size()
    assert m["counts"]["seqrec"] == int((n_train - 1).clip(lower=0).sum())
    assert m["leakage_check"]["ok"] and m["leakage_check"]["sequence_examples_checked"] > 100_000
    assert "desc2sid" in m["skipped"] and "description" in m["skipped"]["desc2sid"]  # Beauty has titles only
    assert max(len(h) for h in dd["train"]["history"]) <= 20
    _assert_no_heldout_targets(dd["train"], split)
    assert len(dd["valid"]) == len(split.valid)

    if not (beauty_dataset / "splits" / "temporal").is_dir():
        split_dataset(beauty_dataset, "temporal")
    out = build_instructions(beauty_dataset, "temporal", table, tmp_path / "tmp",
                             InstructionConfig(tasks=("seqrec",)))
    dd, m = load_instructions(out)
    split = load_split(beauty_dataset, "temporal")
    cut = split.meta["valid_period_start_ts"]
    ts = ds.interactions.set_index(["user", "item"])["timestamp"]
    t = dd["train"].select_columns(["user", "target"]).to_pandas()
    target_ts = ts.loc[list(zip(t["user"], t["target"]))].to_numpy()
    assert (target_ts <= cut).all(), "a temporal training target lies after the validation period's start"
    _assert_no_heldout_targets(dd["train"], split)


def test_leak_is_caught(synthetic_dataset):
    split = load_split(synthetic_dataset, "loo")
    row = split.test.iloc[0]
    rows = {"task": ["seqrec"], "user": [int(row["user"])], "history": [list(map(int, row["history"]))[-3:]],
            "target": [int(row["target"])]}
    with pytest.raises(LlmrecError, match="leakage"):
        check_no_leakage(rows, split)


def test_windows_ratios_and_determinism(synthetic_dataset, tmp_path):
    ds = load_dataset(synthetic_dataset)
    table = random_sids(ds.n_items, seed=1)
    cfg = InstructionConfig(max_history=3, ratios={"title2sid": 2.0, "sid2title": 0.5, "seq2title": 0.0}, seed=3)
    a = build_instructions(synthetic_dataset, "loo", table, tmp_path / "a", cfg)
    b = build_instructions(synthetic_dataset, "loo", table, tmp_path / "b", cfg)
    da, ma = load_instructions(a)
    db, _ = load_instructions(b)
    assert da["train"]["messages"] == db["train"]["messages"]          # same seed, same data
    assert ma["counts"]["title2sid"] == 2 * ds.n_items                  # ratio 2: every item twice
    assert 0.3 * ds.n_items < ma["counts"]["sid2title"] < 0.7 * ds.n_items
    assert "seq2title" in ma["skipped"]
    tr = da["train"].to_pandas()
    assert tr.loc[tr.task != "title2sid", "history"].map(len).max() <= 3
    # each title2sid pair of copies uses the paraphrase the rng picked: several templates appear
    assert tr.loc[tr.task == "title2sid", "template"].nunique() > 1
    # rows are shuffled across tasks
    assert tr["task"].iloc[:50].nunique() > 1
    # every answer is the target's SID or title
    for task, tgt, msgs in tr[["task", "target", "messages"]].head(300).itertuples(index=False):
        ans = msgs[-1]["content"]
        assert ans == (ds.titles[tgt] if task in ("sid2title", "seq2title") else table.item_sid(tgt))


@pytest.mark.shared_data
def test_industrial_fields_and_index_json(shared_data, tmp_path):
    from llmrec.data_builders import build_dataset, split_dataset

    root = shared_data / "minionerec-amazon2018" / "Amazon"
    ds_dir = build_dataset("minionerec", root / "test" / "Industrial_and_Scientific_5_2016-10-2018-11.csv",
                           tmp_path / "ind")
    split_dataset(ds_dir, "loo")
    out = build_instructions(ds_dir, "loo", root / "index" / "Industrial_and_Scientific.index.json",
                             tmp_path / "instr", InstructionConfig(tasks=("desc2sid", "titledesc2sid", "itemsearch"),
                                                                   ratios={"desc2sid": 1.0}))
    dd, m = load_instructions(out)
    assert not m["skipped"]
    ds = load_dataset(ds_dir)
    n_desc = int((ds.items["description"].fillna("") != "").sum())
    assert m["counts"]["desc2sid"] == n_desc
    search = [x["messages"][-2]["content"] for x in dd["train"] if x["task"] == "itemsearch"]
    assert any("from " in q or "brand " in q for q in search)          # brands reach the queries
    # published split without its training CSV: sequence tasks cannot be built, and say so
    with pytest.raises(LlmrecError, match="no training interactions"):
        build_instructions(ds_dir, "minionerec", root / "index" / "Industrial_and_Scientific.index.json",
                           tmp_path / "x", InstructionConfig(tasks=("seqrec",)))


def _train_text(tok, msgs):
    return prompt_text(tok, msgs) + completion_text(tok, msgs)


@pytest.mark.parametrize("which", ["qwen3", "plain"])
def test_training_text_is_inference_prompt_plus_answer(which, synthetic_dataset, tmp_path, request):
    """The bytes a model is trained on for a next-item example = the inference prompt + the answer."""
    if which == "qwen3":
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(request.getfixturevalue("qwen3_tokenizer_dir"))
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        t = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1}, unk_token="[UNK]"))
        t.pre_tokenizer = pre_tokenizers.Whitespace()
        tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="</s>", unk_token="[UNK]")
    ds = load_dataset(synthetic_dataset)
    table = random_sids(ds.n_items)
    tok.add_tokens(table.vocabulary())
    out = build_instructions(synthetic_dataset, "loo", table, tmp_path / "i", InstructionConfig(tasks=("seqrec",)))
    dd, _ = load_instructions(out)
    ex = next(x for x in dd["train"] if x["template"] == 0)
    hist = [table.item_sid(i) for i in ex["history"]]
    inference = prompt_text(tok, render_messages("seqrec", 0, history=format_history(hist)))
    answer = table.item_sid(ex["target"])
    text = _train_text(tok, ex["messages"])
    assert text.startswith(inference + answer)
    assert text[len(inference + answer):] in ("<|im_end|>\n", "</s>")
    assert ex["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    # token level: the inference prompt's ids are a prefix of the training ids, SID tokens stay whole
    ids = tok(text, add_special_tokens=False).input_ids
    pids = tok(inference, add_special_tokens=False).input_ids
    assert ids[: len(pids)] == pids
    assert tok.convert_ids_to_tokens(ids[len(pids): len(pids) + 3]) == table.item_tokens(ex["target"])


def test_cli_build_and_preview(synthetic_dataset, tmp_path, capsys):
    from llmrec.cli import main

    sid_dir = tmp_path / "sids"
    sid_dir.mkdir()
    random_sids(load_dataset(synthetic_dataset).n_items).save(sid_dir)
    out = tmp_path / "instr"
    assert main(["instructions", "build", "--data", str(synthetic_dataset), "--split", "temporal", "--sids",
                 str(sid_dir), "--out", str(out), "--tasks", "seqrec,sid2title", "--ratio", "sid2title=0.5",
                 "--no-system-prompt"]) == 0
    _, m = load_instructions(out)
    assert m["config"]["system_prompt"] is None and set(m["counts"]) == {"seqrec", "sid2title"}
    assert main(["instructions", "preview", str(out), "-n", "1"]) == 0
    shown = capsys.readouterr().out
    assert "===== seqrec" in shown and "===== sid2title" in shown and "system:" not in shown
    assert main(["instructions", "build", "--data", str(synthetic_dataset), "--split", "loo", "--sids",
                 str(sid_dir), "--out", str(out), "--tasks", "nope"]) == 2


def test_wrap_markers_match_vocabulary_extension(synthetic_dataset, tmp_path):
    from llmrec.data_builders.instructions import SID_BEGIN, SID_END
    from llmrec.models import vocab

    assert (SID_BEGIN, SID_END) == (vocab.SID_BEGIN, vocab.SID_END)
    ds = load_dataset(synthetic_dataset)
    table = random_sids(ds.n_items)
    out = build_instructions(synthetic_dataset, "loo", table, tmp_path / "w",
                             InstructionConfig(tasks=("seqrec",), wrap=True))
    dd, m = load_instructions(out)
    ex = dd["train"][0]
    assert m["sid_wrap"] and ex["messages"][-1]["content"] == f"{SID_BEGIN}{table.item_sid(ex['target'])}{SID_END}"


def test_last_window_only(synthetic_dataset, tmp_path):
    split = load_split(synthetic_dataset, "loo")
    table = random_sids(load_dataset(synthetic_dataset).n_items)
    out = build_instructions(synthetic_dataset, "loo", table, tmp_path / "last",
                             InstructionConfig(tasks=("seqrec",), windows="last", max_history=50))
    dd, m = load_instructions(out)
    users, seqs = split.train_sequences()
    full = {int(u): s.tolist() for u, s in zip(users, seqs)}
    assert m["counts"]["seqrec"] == sum(len(s) >= 2 for s in full.values())
    for u, h, t in zip(dd["train"]["user"], dd["train"]["history"], dd["train"]["target"]):
        assert h + [t] == full[u]                                        # the whole training sequence
