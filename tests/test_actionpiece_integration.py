"""ActionPiece plugged into the LLM side, on a tiny Qwen3 built from a config and the real Qwen3 tokenizer:
`llmrec sid build --method actionpiece`, its tokens as added tokens (same vocabulary-extension code as SIDs), the
instruction data (set-permutation histories for training, deterministic targets), the trie from the targets'
segmentations, decoding generated text back to items, and recommendation with q fused segmentations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.tokenizers.actionpiece import ActionPiece, fuse_ranked_lists, train_actionpiece


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ap():
    rng = np.random.default_rng(1)
    ids = list(range(1, 301))
    feats = [[str(rng.integers(0, 16)), str(rng.integers(0, 16)), str(rng.integers(0, 16)), str(i % 64)]
             for i in ids]
    seqs = [rng.choice(ids, size=rng.integers(2, 12)).tolist() for _ in range(2000)]
    return train_actionpiece(ids, feats, seqs, 1200, progress=False)


@pytest.fixture(scope="module")
def shop_ap(synthetic_dataset, tmp_path_factory):
    """`llmrec sid build --method actionpiece` on the synthetic shop's LOO training sequences, features from
    (random) item embeddings: OPQ 2 x 16 codes + a 16-bucket hash digit."""
    from llmrec.cli import main
    from llmrec.data_builders import load_dataset

    root = tmp_path_factory.mktemp("shop_ap")
    n = load_dataset(synthetic_dataset).n_items
    emb = np.random.default_rng(0).normal(size=(n + 1, 16)).astype(np.float32)
    emb[0] = 0
    np.save(root / "emb.npy", emb)
    out = root / "ap"
    assert main(["sid", "build", "--method", "actionpiece", "--dataset", str(synthetic_dataset), "--embeddings",
                 str(root / "emb.npy"), "--n-codebooks", "2", "--codebook-size", "16", "--hash-buckets", "16",
                 "--vocab-size", "400", "--out", str(out), "--no-plots", "--check-every", "25"]) == 0
    return out


@pytest.fixture(scope="module")
def shop_model(shop_ap, synthetic_dataset, qwen3_tokenizer_dir, tmp_path_factory):
    from llmrec.models.vocab import extend_pretrained

    return extend_pretrained("tiny-qwen3", shop_ap, tmp_path_factory.mktemp("aplm") / "model",
                             data=synthetic_dataset, tokenizer=str(qwen3_tokenizer_dir))


def test_sid_build_method_actionpiece(shop_ap, tmp_path, capsys):
    from llmrec.cli import main

    ap = ActionPiece.load(shop_ap)
    assert ap.vocab_size == 400 and ap.n_items == 150 and ap.item_ids == list(range(1, 151))
    assert ap.position_names == ["opq0", "opq1", "hash"]
    merges = json.loads((shop_ap / "merges.json").read_text())
    assert len(merges) == 400 - ap.n_init
    for k, (left, right, new, weight) in enumerate(merges):
        assert new == f"<ap_{ap.n_init + k}>" and isinstance(weight, float) and weight > 0
        assert ap.token_id(left) < ap.n_init + k and ap.token_id(right) < ap.n_init + k
    man = json.loads((shop_ap / "manifest.json").read_text())
    assert man["config"]["method"] == "actionpiece" and man["config"]["n_codebooks"] == 2
    # precomputed inputs through the same command; same merges as `sid-actionpiece build`
    f, s = tmp_path / "f.json", tmp_path / "s.json"
    f.write_text(json.dumps({"a": ["x1", "y1"], "b": ["x1", "y2"], "c": ["x2", "y2"], "d": ["x2", "y1"]}))
    s.write_text(json.dumps([["a", "b", "c"], ["a", "b"], ["d", "a", "b", "c"], ["c", "d"]]))
    for cmd, out in (("sid build --method actionpiece", "a1"), ("sid-actionpiece build", "a2")):
        assert main(cmd.split() + ["--features", str(f), "--sequences", str(s), "--vocab-size", "9",
                                   "--out", str(tmp_path / out), "--no-plots"]) == 0
    assert (tmp_path / "a1" / "merges.json").read_bytes() == (tmp_path / "a2" / "merges.json").read_bytes()
    capsys.readouterr()
    assert main(["sid", "build", "--method", "actionpiece", "--features", str(f), "--sequences", str(s),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "needs --vocab-size" in capsys.readouterr().err
    assert main(["sid", "build", "--embeddings", str(tmp_path), "--vocab-size", "9", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "only for --method actionpiece" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_tokens_extend_qwen3_tokenizer_and_trie_decodes_every_item(ap, qwen3_tokenizer_dir):
    from transformers import AutoTokenizer

    from llmrec.inference import trie as trie_mod
    from llmrec.models import vocab

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
    n0 = len(tok)
    ids = vocab.add_sid_tokens(tok, ap.vocabulary())  # raises unless each token is exactly one token id
    assert len(tok) == n0 + ap.vocab_size and ids == list(range(n0, n0 + ap.vocab_size))
    targets = {it: tok(ap.item_sid(it), add_special_tokens=False)["input_ids"] for it in ap.item_ids}
    assert all(t == [n0 + i for i in ap.segment_item(it)] for it, t in targets.items())
    # generated text round-trips through the Qwen tokenizer and ActionPiece's decoder
    it = ap.item_ids[17]
    text = tok.decode(targets[it] + tok("</s> and more", add_special_tokens=False)["input_ids"])
    assert ap.decode_item(text) == it

    trie = trie_mod.sid_trie(ap, tok)  # dispatches to actionpiece_trie
    assert trie.n_items == ap.n_items and trie.max_depth == max(len(t) for t in targets.values())
    for it, seq in targets.items():
        assert trie.sequence_of(it) == seq
        assert ap.decode([i - n0 for i in seq], canonical=True) == it
    # a generated sequence that covers a feature position twice, or misses one, is no item
    x = ap.segment_item(ap.item_ids[3])
    feats = ap.item_features[ap.row_of(ap.item_ids[3])].tolist()
    assert ap.decode(feats) == ap.item_ids[3]
    assert ap.decode(feats[:-1]) is None and ap.decode(feats + feats[:1]) is None
    assert ap.decode(x + [feats[0]]) is None
    with pytest.raises(LlmrecError, match="without --wrap"):
        trie_mod.sid_trie(ap, tok, wrap=True)


def test_extended_model_folder(shop_model, shop_ap):
    from llmrec.models.vocab import is_actionpiece, load_extended, read_info

    info = read_info(shop_model)
    assert info.item_tokenizer == "actionpiece" and info.levels == 3 and info.n_items == 150
    model, tok, table, info = load_extended(shop_model, device="cpu")
    assert is_actionpiece(table) and table.vocab_size == 400
    assert (shop_model / "sid" / "merges.json").read_bytes() == (shop_ap / "merges.json").read_bytes()
    ids = tok.convert_tokens_to_ids(table.vocabulary())
    assert ids == list(range(ids[0], ids[0] + 400)) and model.get_input_embeddings().weight.shape[0] >= ids[-1] + 1
    w = model.get_input_embeddings().weight
    assert torch.allclose(w[ids[0]], w[ids[-1]])  # init mean: every new row the mean row
    for item in (1, 77, 150):
        enc = tok(info.item_text(table, item), add_special_tokens=False)["input_ids"]
        assert enc == [ids[i] for i in table.segment_item(item)]
        assert table.decode_item(tok.decode(enc, skip_special_tokens=True)) == item


def test_extend_rejects_sid_only_options(ap, lm_tokenizer_dir):
    from llmrec.models.tiny import load_lm_tokenizer, tiny_qwen3
    from llmrec.models.vocab import extend_model

    tok = load_lm_tokenizer(lm_tokenizer_dir)
    model = tiny_qwen3(len(tok))
    n0 = len(tok)
    with pytest.raises(LlmrecError, match="init mean"):
        extend_model(model, tok, ap, init="text", item_texts=[""] * 301)
    with pytest.raises(LlmrecError, match="without --wrap"):
        extend_model(model, tok, ap, wrap=True)
    assert len(tok) == n0  # nothing added


def test_instruction_data_with_actionpiece(shop_ap, synthetic_dataset, tmp_path):
    from llmrec.data_builders import load_split
    from llmrec.data_builders.instructions import InstructionConfig, build_instructions, load_instructions

    ap = ActionPiece.load(shop_ap)
    cfg = InstructionConfig(tasks=("seqrec", "title2sid", "sid2title"), max_history=6, system_prompt=None,
                            template_mode="first")
    out = build_instructions(synthetic_dataset, "loo", shop_ap, tmp_path / "instr", cfg)
    dd, man = load_instructions(out)
    assert man["item_tokenizer"] == "actionpiece" and man["leakage_check"]["ok"]
    assert ActionPiece.load(out).vocab_size == ap.vocab_size  # the tokenizer travels with the data
    tr = dd["train"].to_dict()
    seen_segs: dict[tuple, set] = {}
    for task, msgs, hist, target in zip(tr["task"], tr["messages"], tr["history"], tr["target"]):
        answer = msgs[-1]["content"]
        if task == "sid2title":
            continue
        assert answer == ap.item_sid(target)  # targets: the deterministic segmentation
        if task != "seqrec":
            continue
        toks = ap.parse(msgs[-2]["content"])
        # the history segmentation covers exactly the history items' features
        want = sorted(f for it in hist for f in ap.item_features[ap.row_of(it)].tolist())
        assert sorted(f for t in toks for f in ap._expand[t]) == want
        seen_segs.setdefault(tuple(hist), set()).add(tuple(toks))
    # set-permutation regularisation: a history that recurs is not always segmented the same way
    assert any(len(v) > 1 for v in seen_segs.values())
    # validation prompts use the deterministic segmentation
    split = load_split(synthetic_dataset, "loo")
    v = dd["valid"][0]
    h = list(split.valid["history"].iloc[0])[-6:]
    assert "".join(ap.history_tokens(h)) in v["messages"][-2]["content"]
    assert v["messages"][-1]["content"] == ap.item_sid(int(split.valid["target"].iloc[0]))
    with pytest.raises(LlmrecError, match="not wrapped"):
        build_instructions(synthetic_dataset, "loo", shop_ap, tmp_path / "w", InstructionConfig(wrap=True))


def test_recommender_trie_and_fused_segmentations(shop_model, synthetic_dataset):
    from llmrec.data_builders import load_split
    from llmrec.inference.recommend import Recommender

    rec = Recommender.from_pretrained(shop_model, device="cpu", dtype=torch.float32, batch_size=4)
    ap = rec.sid_table
    n0 = rec.tokenizer.convert_tokens_to_ids(ap.token(0))
    assert rec.trie.n_items == 150
    assert all(rec.trie.sequence_of(it) == [n0 + t for t in ap.segment_item(it)] for it in (1, 50, 150))
    hists = [list(map(int, h))[-5:] for h in load_split(synthetic_dataset, "loo").test["history"].head(4)]
    assert "".join(ap.history_tokens(hists[0])) in rec.history_prompt(hists[0])
    one = rec.recommend(hists, k=5, num_beams=8)
    for r in one:
        assert len(r.items) == 5 == len(set(r.items)) and all(1 <= i <= 150 for i in r.items)
        assert r.scores == sorted(r.scores, reverse=True)
    # q = 3 set-permutation segmentations, each searched, fused by sum of 1/log2(rank + 2)
    rec.segmentations = 3
    fused = rec.recommend(hists, k=5, num_beams=8)
    rng = np.random.default_rng(rec.seed)
    prompts = [rec.history_prompt(hists[1], rng=rng) for _ in range(3)]
    assert len(set(prompts)) > 1
    lists = [r.items for r in rec.recommend_prompts(prompts, k=5, num_beams=8)]
    items, scores = fuse_ranked_lists(lists, k=5, with_scores=True)
    assert fused[1].items == items and fused[1].scores == pytest.approx(scores, abs=1e-6)
    assert fused[1].scores[0] <= 3.0 and len(set(fused[1].items)) == 5
