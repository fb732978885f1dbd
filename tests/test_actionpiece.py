"""ActionPiece: hand-computed counts and merges, exact agreement with the full-recount oracle, determinism,
segmentation / decoding, and an encode -> decode round trip for every Beauty item."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import numpy as np
import pytest

from llmrec.errors import LlmrecError
from llmrec.tokenizers.actionpiece import ActionPiece, fuse_ranked_lists, learn_merges, train_actionpiece
from llmrec.tokenizers.actionpiece.naive import apply_merge, count_pairs, naive_train, weight_scale


def _w(counts: dict, scale: int) -> dict:
    return {k: Fraction(v, scale) for k, v in counts.items()}


def _merges(res):
    return [(int(a), int(b), Fraction(int(c), res.scale), [int(x) for x in ap])
            for (a, b), c, ap in zip(res.pairs, res.counts, res.apps)]


# ------------------------------------------------------------------------------------------------ by hand
def test_within_item_and_adjacent_items_by_hand():
    # m = 2; items I0 = {0, 2}, I1 = {1, 3}; sequences [I0, I1] and [I0]
    items = np.array([[0, 2], [1, 3]])
    seqs = [np.array([0, 1]), np.array([0])]
    q = Fraction(1, 4)
    # inside an item of 2 tokens the pair adds 2/2; each of the 4 cross pairs adds 1/(2*2)
    res = learn_merges(items, seqs, 4, 0, keep_counts=True, progress=False)
    assert _w(res.stats["pair_counts"], res.scale) == {(0, 2): 2, (1, 3): 1, (0, 1): q, (0, 3): q, (1, 2): q,
                                                       (2, 3): q}
    # merge 1: (0, 2) -> 4 inside both I0 occurrences; then I0 = {4} pairs with I1's two tokens at 1/(1*2)
    res = learn_merges(items, seqs, 4, 1, keep_counts=True, check_every=1, progress=False)
    assert _merges(res) == [(0, 2, 2, [2, 0, 0])]
    assert _w(res.stats["pair_counts"], res.scale) == {(1, 3): 1, (1, 4): Fraction(1, 2), (3, 4): Fraction(1, 2)}
    # merge 2: (1, 3) -> 5 inside I1; merge 3: (4, 5) across the two items -> 6; then nothing is left
    res = learn_merges(items, seqs, 4, 10, keep_counts=True, check_every=1, progress=False)
    assert _merges(res) == [(0, 2, 2, [2, 0, 0]), (1, 3, 1, [1, 0, 0]), (4, 5, 1, [0, 0, 1])]
    assert res.stats["pair_counts"] == {}
    assert res.stats["tokens_after"] == 2  # [{6}] and [{4}]


def test_item_context_slot_merges_by_hand():
    # P_i = {0, 2+i}, Q_j = {1, 7+j} (i, j < 5); the 25 sequences [P_i, Q_j]. Cross pair (0, 1): 25 * 1/4 = 6.25
    # beats every inside pair (5 * 2/2 = 5), so the first merge puts token 12 into the slot between the items.
    items = np.array([[0, 2 + i] for i in range(5)] + [[1, 7 + j] for j in range(5)])
    seqs = [np.array([i, 5 + j]) for i in range(5) for j in range(5)]
    res = learn_merges(items, seqs, 12, 1, keep_counts=True, check_every=1, progress=False)
    assert _merges(res) == [(0, 1, Fraction(25, 4), [0, 0, 25])]
    # each sequence is now {2+i} [12] {7+j}: the slot token pairs with each side at 1/1
    exp = {(2 + i, 12): 5 for i in range(5)} | {(7 + j, 12): 5 for j in range(5)}
    assert _w(res.stats["pair_counts"], res.scale) == exp
    # all ten tie at 5: the smallest pair (2, 12) wins; it merges the item token into the slot (item-slot merge),
    # the emptied first item stays in place and 13 keeps only its right neighbour
    res = learn_merges(items, seqs, 12, 2, keep_counts=True, check_every=1, progress=False)
    assert _merges(res)[1] == (2, 12, 5, [0, 5, 0])
    exp = ({(2 + i, 12): 5 for i in range(1, 5)} | {(7 + j, 12): 4 for j in range(5)}
           | {(7 + j, 13): 1 for j in range(5)})
    assert _w(res.stats["pair_counts"], res.scale) == exp
    res = learn_merges(items, seqs, 12, 3, check_every=1, progress=False)
    assert _merges(res)[2] == (3, 12, 5, [0, 5, 0])


def test_weights_and_empty_items_follow_the_oracle_by_hand():
    # with m = 5 the scale is lcm(1..5)^2 = 3600 and weights 2/5, 2/3, 1/25 ... are exact integers
    assert weight_scale(5) == 3600
    regs, ctxs = [[0], [1], [2]], [-1, -1]
    apply_merge(regs, ctxs, 0, 1, 9, apps := [0, 0, 0])
    # the first two items merge into the slot; the emptied second item takes it, the emptied first disappears
    assert (regs, ctxs, apps) == ([[9], [2]], [-1], [0, 0, 1])
    regs, ctxs = [[], [4], [], [5], [8]], [12, -1, 12, -1]
    apply_merge(regs, ctxs, 5, 8, 24, [0, 0, 0])
    assert (regs, ctxs) == ([[], [4], [12], [24]], [12, -1, -1])


# ------------------------------------------------------------------------------------------------ oracle
def _random_case(seed):
    r = np.random.default_rng(seed)
    m = int(r.integers(1, 6))
    vals = int(r.integers(1, 5))
    n_items = int(r.integers(1, 30))
    items = r.integers(0, vals, size=(n_items, m)) + np.arange(m) * vals
    seqs = [r.integers(0, n_items, size=r.integers(0, 12)) for _ in range(int(r.integers(1, 25)))]
    return items, seqs, m * vals, m, int(r.integers(1, 120))


@pytest.mark.parametrize("chunk", range(4))
def test_incremental_counts_equal_full_recount_and_oracle(chunk):
    """After every merge the incremental counts equal a full recount (check_every=1 raises otherwise), and
    the merges, weights and application counts are exactly those of the naive oracle."""
    for seed in range(chunk * 20, chunk * 20 + 20):
        items, seqs, n_init, m, n = _random_case(seed)
        if not any(len(s) for s in seqs):
            continue
        ref, scale = naive_train([[list(items[i]) for i in s] for s in seqs], n, n_init, m)
        res = learn_merges(items, seqs, n_init, n, check_every=1, progress=False)
        assert res.scale == scale
        assert _merges(res) == [(a, b, Fraction(w, scale), ap) for a, b, w, ap in ref], f"seed {seed}"
        assert (res.apps.sum(1) > 0).all(), "a merge that is never applied anywhere"


def test_verification_catches_a_wrong_count():
    from llmrec.tokenizers.actionpiece import build as B

    items = np.array([[0, 2], [1, 3]])
    st, _ = B._layout(items, [np.array([0, 1])])
    table = B._new_table(16)
    with pytest.raises(AssertionError, match="diverged from a full recount after merge 7"):
        B.verify_counts(st, table, 16, weight_scale(2), 7)  # empty table vs real counts


def test_determinism_and_order_independence():
    items, seqs, n_init, m, _ = _random_case(3)
    a = learn_merges(items, seqs, n_init, 200, progress=False)
    b = learn_merges(items, seqs, n_init, 200, progress=False)
    c = learn_merges(items, list(reversed(seqs)), n_init, 200, progress=False)
    for x in (b, c):
        assert np.array_equal(a.pairs, x.pairs) and np.array_equal(a.counts, x.counts)


def test_naive_mode_learns_the_same_merges():
    items, seqs, n_init, m, _ = _random_case(11)
    a = learn_merges(items, seqs, n_init, 80, progress=False)
    b = learn_merges(items, seqs, n_init, 80, naive=True, progress=False)
    assert _merges(a) == _merges(b)


# ------------------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def small_ap():
    rng = np.random.default_rng(0)
    ids = list(range(1, 61))
    feats = [[f"c{rng.integers(0, 6)}", f"d{rng.integers(0, 6)}", f"e{i % 7}", str(i)] for i in ids]
    seqs = [rng.choice(ids, size=rng.integers(2, 9)).tolist() for _ in range(300)]
    return train_actionpiece(ids, feats, seqs, 24 * 4 + 150, progress=False), feats, seqs


def test_targets_decode_and_reject(small_ap):
    ap, feats, _ = small_ap
    targets = ap.target_sequences()
    assert len({tuple(t) for t in targets.values()}) == ap.n_items
    for it, toks in targets.items():
        assert ap.decode(toks, canonical=True) == it
        assert ap.decode(list(reversed(toks))) == it  # a token set: order does not matter ...
        assert ap.decode_text("".join(toks)) == it
        assert sorted(v for t in toks for _, v in ap.token_features(t)) == sorted(feats[it - 1])
    # ... but coverage does: missing a position, covering one twice, unknown tokens, non-items
    it = 7
    init = [ap.token(t) for t in ap.item_features[ap.row_of(it)]]
    assert ap.decode(init) == it
    assert ap.decode(init, canonical=True) == (it if init == ap.item_tokens(it) else None)
    assert ap.decode(init[:-1]) is None
    assert ap.decode(init + init[:1]) is None
    assert ap.decode(init[:-1] + ["<ap_999999>"]) is None
    assert ap.decode(init[:-1] + ["not a token"]) is None
    other = ap.item_features[ap.row_of(8)]
    assert ap.decode(init[:-1] + [ap.token(other[-1])]) is None  # valid coverage, but no such item
    cross = [k for k in range(len(ap.merges))
             if len({p for p, _ in ap.token_features(ap.n_init + k)}) < len(ap.token_features(ap.n_init + k))]
    if cross:  # a token spanning two items that repeats a position can never be part of an item
        assert ap.decode([ap.token(ap.n_init + cross[0])] + init) is None
    # SidTable-style text API: the first complete target in generated text
    assert ap.item_sid(it) == "".join(ap.item_tokens(it))
    assert ap.decode_item(f"Next: {ap.item_sid(it)} then {ap.item_sid(8)}") == it
    assert ap.decode_item("".join(init[:-1]) + ap.item_sid(9)) == 9
    assert ap.decode_item("".join(init[:-1])) is None
    # no target is a prefix of another (each covers every position): a trie needs no end marker ambiguity
    seqs = sorted(tuple(t) for t in targets.values())
    assert not any(b[: len(a)] == a for a, b in zip(seqs, seqs[1:]))


def test_history_segmentation_permutation_and_coverage(small_ap):
    ap, feats, seqs = small_ap
    hist = seqs[0] + seqs[1]
    det = ap.history_tokens(hist)
    assert det == ap.history_tokens(hist)  # rng=None: position order, deterministic
    a = ap.history_tokens(hist, rng=5)
    assert a == ap.history_tokens(hist, rng=5)
    variants = ap.history_variants(hist, q=8, seed=1)
    assert len({tuple(v) for v in variants}) > 1  # set permutation changes the segmentation
    want = sorted(v for it in hist for v in feats[it - 1])
    for toks in [det, a, *variants]:
        assert sorted(v for t in toks for _, v in ap.token_features(t)) == want
        assert len(toks) <= len(want)
    assert len(det) < len(want)  # merges did apply


def test_bpe_applies_merges_by_rank_leftmost_first():
    # merges: (0,1) -> 3 (rank 0), (1,2) -> 4 (rank 1), (3,2) -> 5 (rank 2)
    ap = ActionPiece([(0, "a"), (1, "b"), (2, "c")], [[0, 1], [1, 2], [2, 3]], [30, 20, 10], 1, ["x"], [[0, 1, 2]])
    assert ap._bpe([0, 1, 2]) == [5]          # (0,1) first, then (3,2)
    assert ap._bpe([2, 1, 0]) == [5]          # pairs are unordered
    assert ap._bpe([1, 2, 0, 1]) == [4, 3]    # (0,1) at rank 0 before (1,2) at rank 1
    assert ap._bpe([0, 0, 1, 1]) == [0, 3, 1]


def test_target_merges_in_priority_order():
    # rank 0 has weight 2, rank 1 weight 5: inside one item the heavier merge (1,2) wins despite its rank
    ap = ActionPiece([(0, "a"), (1, "b"), (2, "c")], [[0, 1], [1, 2]], [2, 5], 1, ["x"], [[0, 1, 2]])
    assert ap.segment_item("x") == [4, 0]
    assert ap.decode(["<ap_4>", "<ap_0>"], canonical=True) == "x"
    assert ap.decode(["<ap_3>", "<ap_2>"]) == "x" and ap.decode(["<ap_3>", "<ap_2>"], canonical=True) is None


def test_fuse_ranked_lists_by_hand():
    # scores: a = 1 + 1/log2(3); b = 1/log2(3) + 1; c = 1/log2(4) = 0.5; d = 1/log2(5)
    fused = fuse_ranked_lists([["a", "b", "c"], ["b", "a", "d"]])
    assert fused[:2] == ["a", "b"]  # tie: same best rank 0, a seen first
    assert fused[2:] == ["c", "d"]
    assert fuse_ranked_lists([["x", "y"], ["y", "z"], ["y"]], k=1) == ["y"]
    assert fuse_ranked_lists([["x", "x", "y"]]) == ["x", "y"]


def test_save_load_roundtrip(small_ap, tmp_path):
    ap, _, seqs = small_ap
    ap.save(tmp_path)
    back = ActionPiece.load(tmp_path)
    assert back.vocabulary() == ap.vocabulary()
    assert np.array_equal(back.merges, ap.merges) and np.array_equal(back.counts, ap.counts)
    assert back.item_ids == ap.item_ids
    assert all(back.item_tokens(i) == ap.item_tokens(i) for i in ap.item_ids)
    assert back.history_tokens(seqs[3], rng=2) == ap.history_tokens(seqs[3], rng=2)
    merges = json.loads((tmp_path / "merges.json").read_text())
    assert len(merges) == len(ap.merges)
    left, right, new, w = merges[0]
    assert re.fullmatch(r"<ap_\d+>", left) and new == f"<ap_{ap.n_init}>" and w == pytest.approx(ap.weights[0])
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert targets["7"] == ap.item_tokens(7)


# ------------------------------------------------------------------------------------------------ features
def test_opq_codes_and_disambiguation_digit():
    from llmrec.tokenizers.actionpiece.features import disambiguation_digit, opq_codes

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(300, 16))
    x = (centers[rng.integers(0, 300, 3000)] + 0.1 * rng.normal(size=(3000, 16))).astype(np.float32)
    a = opq_codes(x, 4, 16, train_rows=np.arange(2000))
    assert a.shape == (3000, 4) and a.min() >= 0 and a.max() < 16
    assert np.array_equal(a, opq_codes(x, 4, 16, train_rows=np.arange(2000)))  # reproducible
    assert len({tuple(r) for r in a.tolist()}) > 200
    d = disambiguation_digit(a, 64)
    assert len({tuple(r) + (k,) for r, k in zip(a.tolist(), d.tolist())}) == len(a)
    assert np.array_equal(d, disambiguation_digit(a, 64))
    with pytest.raises(LlmrecError, match="raise --hash-buckets"):
        disambiguation_digit(np.zeros((5, 2), dtype=int), 4)
    with pytest.raises(LlmrecError, match="not divisible"):
        opq_codes(x[:, :15], 4, 16)


# ------------------------------------------------------------------------------------------------ CLI
def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_cli_precomputed_inputs_and_errors(tmp_path, capsys):
    from llmrec.cli import main

    feats = {"a": ["x1", "y1"], "b": ["x1", "y2"], "c": ["x2", "y2"], "d": ["x2", "y1"]}
    seqs = [["a", "b", "c"], ["a", "b"], ["d", "a", "b", "c"], ["c", "d"]]
    f, s = _write(tmp_path / "f.json", feats), _write(tmp_path / "s.json", seqs)
    out = tmp_path / "ap"
    assert main(["sid-actionpiece", "build", "--features", f, "--sequences", s, "--vocab-size", "9",
                 "--out", str(out), "--check-every", "1", "--no-plots"]) == 0
    merges = json.loads((out / "merges.json").read_text())
    assert len(merges) == 5 and all(len(m) == 4 for m in merges)
    assert [m[2] for m in merges] == [f"<ap_{i}>" for i in range(4, 9)]
    vocab = json.loads((out / "vocab.json").read_text())
    assert [t["features"] for t in vocab["tokens"][:4]] == [[[0, "x1"]], [[0, "x2"]], [[1, "y1"]], [[1, "y2"]]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "actionpiece" and manifest["config"]["vocab_size"] == 9
    report = json.loads((out / "report.json").read_text())
    assert report["roundtrip_items"] == 4 and report["merges_never_applied"] == 0
    # same input again -> byte-identical merges
    out2 = tmp_path / "ap2"
    main(["sid-actionpiece", "build", "--features", f, "--sequences", s, "--vocab-size", "9", "--out", str(out2),
          "--no-plots"])
    assert (out / "merges.json").read_bytes() == (out2 / "merges.json").read_bytes()
    assert main(["sid-actionpiece", "show", str(out), "--item", "a", "--history", "a", "b", "--decode",
                 "".join(json.loads((out / "targets.json").read_text())["c"])]) == 0
    assert "item c" in capsys.readouterr().out

    def err(args):
        capsys.readouterr()
        assert main(args) == 2
        return capsys.readouterr().err

    base = ["sid-actionpiece", "build", "--vocab-size", "9", "--out", str(tmp_path / "bad")]
    assert "sequence 1: item 'zz' has no features" in err(
        base + ["--features", f, "--sequences", _write(tmp_path / "s2.json", [["a"], ["a", "zz"]])])
    assert "item 'b': 1 features" in err(
        base + ["--features", _write(tmp_path / "f2.json", {"a": ["x", "y"], "b": ["x"]}), "--sequences", s])
    assert "--hash-buckets" in err(
        base + ["--features", _write(tmp_path / "f3.json", {k: ["x", "y"] for k in "abcd"}), "--sequences", s])
    assert "smaller than the 4 initial" in err(["sid-actionpiece", "build", "--vocab-size", "3", "--out",
                                                str(tmp_path / "bad"), "--features", f, "--sequences", s])
    assert "already exists" in err(["sid-actionpiece", "build", "--vocab-size", "9", "--out", str(out),
                                    "--features", f, "--sequences", s])
    (tmp_path / "s3.json").write_text("[")
    assert "invalid JSON" in err(base + ["--features", f, "--sequences", str(tmp_path / "s3.json")])
    assert not (tmp_path / "bad").exists()
    # a hash digit makes duplicated feature sets usable
    assert main(base + ["--features", str(tmp_path / "f3.json"), "--sequences", s, "--hash-buckets", "8",
                        "--no-plots"]) == 0


# ------------------------------------------------------------------------------------------------ Beauty
@pytest.mark.shared_data
def test_beauty_every_item_round_trips(beauty_dataset, beauty_dir, tmp_path):
    """Real Beauty LOO training sequences, LETTER's 4 x 256 codes + a 128-bucket digit: build with periodic full
    recount checks, then every item's target decodes back to it and histories cover their items' features."""
    import pandas as pd

    from llmrec.tokenizers.actionpiece import run_actionpiece

    items = pd.read_csv(beauty_dir / "beauty_items.csv")
    feats = {str(i): re.findall(r"_(\d+)>", s) for i, s in zip(items["item_id"], items["letter_sid"])}
    fpath = _write(tmp_path / "features.json", feats)
    ap = run_actionpiece(tmp_path / "ap", vocab_size=4000, dataset=beauty_dataset, features=fpath,
                         hash_buckets=128, check_every=1000, progress=False, plots=False)
    assert ap.n_items == 12101 and ap.vocab_size == 4000 and ap.n_positions == 5
    report = json.loads((tmp_path / "ap" / "report.json").read_text())
    assert report["n_sequences"] == 22363 and report["item_occurrences"] == 153776
    assert report["merges_never_applied"] == 0
    targets = ap.target_sequences()
    assert len({tuple(t) for t in targets.values()}) == 12101
    assert all(ap.decode(t, canonical=True) == it for it, t in targets.items())
    assert sum(len(t) for t in targets.values()) < 12101 * 5  # merges shorten items
    from llmrec.data_builders import load_split

    split = load_split(beauty_dataset, "loo")
    for hist in split.test["history"].head(300):
        hist = [str(i) for i in hist]
        want = sorted(ap.features[f] for it in hist for f in ap.item_features[ap.row_of(it)])
        for rng in (None, 0):
            toks = ap.history_tokens(hist, rng=rng)
            assert sorted(f for t in toks for f in ap.token_features(t)) == want


def test_categorical_metadata_features(synthetic_dataset, tmp_path):
    from llmrec.cli import main

    out = tmp_path / "ap"
    assert main(["sid-actionpiece", "build", "--dataset", str(synthetic_dataset), "--categorical",
                 "brand,categories,price_tier", "--vocab-size", "600", "--out", str(out), "--check-every", "50",
                 "--no-plots"]) == 0
    ap = ActionPiece.load(out)
    report = json.loads((out / "report.json").read_text())
    assert report["position_names"] == ["brand", "categories", "price_tier", "hash"]
    assert report["roundtrip_items"] == ap.n_items == 150 and report["merges_never_applied"] == 0
    items = __import__("pandas").read_parquet(synthetic_dataset / "items.parquet")
    row = items.iloc[0]
    assert [v for _, v in sorted(f for t in ap.item_tokens(int(row["item"])) for f in ap.token_features(t))][:3] \
        == [row["brand"], row["categories"], row["price_tier"]]


def test_embeddings_of_another_catalog_are_refused(tmp_path):
    from llmrec.errors import LlmrecError
    from llmrec.tokenizers.actionpiece.run import _load_embeddings

    np.save(tmp_path / "embeddings.npy", np.ones((12, 4), np.float32))      # 11 items + padding row
    assert _load_embeddings(tmp_path, 11).shape == (12, 4)
    with pytest.raises(LlmrecError, match="12 rows, expected n_items \\+ 1 = 11"):
        _load_embeddings(tmp_path, 10)                                      # was silently truncated before
