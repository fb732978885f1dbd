"""Semantic IDs: k-means engine, RQ-kmeans (plain, balanced), RQ-VAE, collision-free codes, artifacts, report,
LC-Rec / MiniOneRec index.json round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.errors import LlmrecError
from llmrec.tokenizers import SidTable
from llmrec.tokenizers.base import load_tokenizer
from llmrec.tokenizers.build import build_sids, export_index_json, import_index_json, report_sids
from llmrec.tokenizers.dedup import add_digit, collision_stats, reassign
from llmrec.tokenizers.kmeans import balanced_kmeans, kmeans, nearest


def _mixture(n=3000, d=32, k=40, seed=0, noise=0.35):
    """Clustered vectors with sub-structure (centres + sub-centres + noise), like text embeddings."""
    rng = np.random.default_rng(seed)
    top = rng.standard_normal((k, d))
    sub = 0.5 * rng.standard_normal((k, 6, d))
    a, b = rng.integers(k, size=n), rng.integers(6, size=n)
    return (top[a] + sub[a, b] + noise * rng.standard_normal((n, d))).astype(np.float32)


def _unique(table: SidTable) -> bool:
    return table.n_unique() == table.n_items and len(table.item_of) == table.n_items


# --- k-means engine --------------------------------------------------------------------------------------
def test_kmeans_matches_scikit_learn_quality_and_plain_lloyd():
    from sklearn.cluster import KMeans

    x = _mixture()
    ours = kmeans(x, 32, seed=0)
    ref = KMeans(32, random_state=0, n_init=1).fit(x)
    assert ours.inertia <= ref.inertia_ * 1.02
    # labels are the nearest centroids of the returned codebook (the bounds never skip a real move)
    lab, d2 = nearest(x, ours.centroids)
    assert (lab == ours.labels).mean() > 0.999
    assert abs(float(d2.sum()) - ours.inertia) / ours.inertia < 1e-3
    # Hamerly-accelerated Lloyd == plain Lloyd from the same start
    init = x[:32].copy()
    fast = kmeans(x, 32, init=init, max_iter=8, tol=0)
    c = init.copy()
    for _ in range(8):
        l, _ = nearest(x, c)
        c = np.stack([x[l == j].mean(0) if (l == j).any() else c[j] for j in range(32)]).astype(np.float32)
    assert np.allclose(fast.centroids, c, atol=1e-4) or fast.n_iter < 8


def test_balanced_kmeans_sizes_are_exact():
    x = _mixture(n=2001)
    res = balanced_kmeans(x, 16, seed=0)
    sizes = np.bincount(res.labels, minlength=16)
    assert set(sizes.tolist()) <= {2001 // 16, 2001 // 16 + 1} and sizes.sum() == 2001
    plain = kmeans(x, 16, seed=0)
    assert res.inertia < plain.inertia * 1.6  # balanced costs some distortion, not an arbitrary amount


# --- collision-free codes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dedup", ["digit", "reassign"])
def test_uniqueness_under_adversarial_inputs(dedup):
    rng = np.random.default_rng(1)
    cases = {
        "identical": np.concatenate([np.ones((300, 16)), rng.standard_normal((200, 16))]).astype(np.float32),
        "fewer_items_than_codes": rng.standard_normal((10, 16)).astype(np.float32),
        "one_item": rng.standard_normal((1, 16)).astype(np.float32),
        "all_identical": np.zeros((50, 16), np.float32),
    }
    for name, x in cases.items():
        res = build_sids(x, levels=3, codes=16, dedup=dedup, report=True, plots=False)
        assert _unique(res.table), (name, dedup)
        assert res.report["n_unique_sids"] == len(x)
        codes = res.table.codes[1:]
        assert (codes >= 0).all() and all((codes[:, l] < k).all() for l, k in enumerate(res.table.codebook_sizes))
    # 300 identical vectors need a digit with 300 values; reassign overflows 16 codes and falls back to it
    res = build_sids(cases["identical"], levels=2, codes=16, dedup="digit", plots=False)
    assert res.table.codebook_sizes[-1] >= 300 and res.report["largest_collision_group"] >= 300


def test_reassign_keeps_levels_when_codes_suffice_and_errors_on_overflow():
    x = _mixture(n=800, d=16)
    x[100:104] = x[100]  # a few exact duplicates: they share every code
    res = build_sids(x, levels=2, codes=64, dedup="reassign", plots=False)
    assert res.table.levels == 2 and _unique(res.table)
    raw = res.tokenizer.encode(x)
    moved = np.flatnonzero((raw != res.table.codes[1:]).any(1))
    assert len(moved) == res.report["dedup"]["n_reassigned"] > 0
    assert (raw[moved, 0] == res.table.codes[1:][moved, 0]).all()  # only the last level changes
    with pytest.raises(LlmrecError, match="more items than"):
        build_sids(np.zeros((40, 8), np.float32), levels=2, codes=8, dedup="reassign", on_overflow="error",
                   plots=False)


def test_digit_orders_by_key_and_reassign_is_optimal_per_prefix():
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 3]])
    out, size = add_digit(codes, key=np.array([0.5, 0.1, 0.9, 0.0]))
    assert size == 3 and out[:, 2].tolist() == [1, 0, 2, 0]
    dist = np.array([[5.0, 0.0, 1.0, 9.0], [5.0, 0.0, 9.0, 1.0], [9.0, 0.0, 9.0, 9.0], [0.0, 9.0, 9.0, 9.0]])
    out, info = reassign(np.array([[0, 1], [0, 1], [0, 1], [0, 0]]), dist)
    assert collision_stats(out)["collisions"] == 0 and info["n_reassigned"] == 2
    # item 0 keeps code 1 (ties broken by item order); the optimal assignment of the others to free codes 2, 3
    # gives item 1 its cheap code 3 and item 2 code 2
    assert out[:, 1].tolist() == [1, 3, 2, 0]


# --- tokenizers: determinism, save/load/encode --------------------------------------------------------------
@pytest.mark.parametrize("method,kw", [("rq-kmeans", {}), ("rq-kmeans-balanced", {}),
                                       ("rq-kmeans", {"normalize_residuals": True}),
                                       ("rq-vae", {"epochs": 3, "warmup_epochs": 2, "batch_size": 256,
                                                   "hidden": (64,), "latent_dim": 8})])
def test_determinism_and_save_load_encode(tmp_path, method, kw):
    x = _mixture(n=1200, d=24)
    a = build_sids(x, method=method, levels=3, codes=16, seed=3, out=tmp_path / "a", plots=False, **kw)
    b = build_sids(x, method=method, levels=3, codes=16, seed=3, plots=False, **kw)
    assert np.array_equal(a.table.codes, b.table.codes)
    tok = load_tokenizer(tmp_path / "a")
    new = _mixture(n=300, d=24, seed=9)
    assert np.array_equal(tok.encode(new), a.tokenizer.encode(new))
    assert np.allclose(tok.decode(tok.encode(new)), a.tokenizer.decode(a.tokenizer.encode(new)), atol=1e-5)
    if method == "rq-kmeans":
        # the table's codes are what encode gives for the training items (before dedup)
        assert np.array_equal(tok.encode(x), a.table.codes[1:, :3])
    t = SidTable.load(tmp_path / "a")
    assert np.array_equal(t.codes, a.table.codes) and _unique(t)
    assert not list((tmp_path / "a").glob("*.pkl")) and not list((tmp_path / "a").glob("*.pt"))
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["config"]["method"] == method and man["seed"] == 3


def test_balanced_levels_and_report(tmp_path):
    x = _mixture(n=2000, d=24)
    res = build_sids(x, method="rq-kmeans-balanced", levels=2, codes=16, out=tmp_path / "s")
    for lev in res.report["levels"][:2]:
        assert lev["min_cluster"] >= 2000 // 16 and lev["max_cluster"] <= 2000 // 16 + 1
    plain = build_sids(x, method="rq-kmeans", levels=2, codes=16, plots=False)
    assert res.report["recon_error"] >= plain.report["recon_error"] - 1e-3


def test_report_contents_and_plots(tmp_path):
    x = _mixture(n=1500, d=24)
    titles = np.array([f"brand{i % 7} item colour{i % 5}" for i in range(1500)], dtype=object)
    res = build_sids(x, levels=3, codes=32, out=tmp_path / "s", titles=titles)
    rep = json.loads((tmp_path / "s" / "report.json").read_text())
    for key in ("n_items", "n_unique_sids", "collisions_before_dedup", "recon_error", "levels", "semantic"):
        assert key in rep
    assert rep["n_items"] == rep["n_unique_sids"] == 1500
    for lev in rep["levels"]:
        assert {"used_codes", "max_cluster", "entropy_bits", "perplexity", "gini", "min_cluster",
                "median_cluster"} <= set(lev)
    errs = [lev["recon_error_after_level"] for lev in rep["levels"][:3]]
    assert errs[0] > errs[1] > errs[2] == pytest.approx(rep["recon_error"])
    assert 0 < rep["recon_error"] < 1
    for png in ("cluster_sizes.png", "projection.png"):
        assert (tmp_path / "s" / png).read_bytes()[:4] == b"\x89PNG"
    # the report command reads the stored report and can recompute it
    assert report_sids(tmp_path / "s")["n_unique_sids"] == 1500


# --- LC-Rec / MiniOneRec *.index.json --------------------------------------------------------------------------
def test_index_json_round_trip_minionerec(shared_data, tmp_path):
    src = shared_data / "minionerec-amazon2018" / "Amazon" / "index" / "Industrial_and_Scientific.index.json"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    out = import_index_json(src, tmp_path / "sid", offset=-1)   # keys are 0-based item ids
    table = SidTable.load(out)
    original = json.loads(src.read_text())
    assert table.n_items == len(original) and table.levels == 3
    export_index_json(out, tmp_path / "back.index.json", key="item", offset=-1)
    assert json.loads((tmp_path / "back.index.json").read_text()) == original
    # the report works on imported SIDs (no tokenizer): codes used, collisions
    rep = report_sids(out, recompute=True, plots=False)
    assert rep["n_items"] == len(original) and rep["levels"][0]["used_codes"] <= 256


def test_index_json_bad_input(tmp_path):
    bad = tmp_path / "bad.index.json"
    bad.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>"]}))
    with pytest.raises(LlmrecError, match="levels"):
        import_index_json(bad, tmp_path / "o", offset=-1)
    assert not (tmp_path / "o").exists()


def test_cli_sid_build_report_export(tmp_path, capsys):
    from llmrec.cli import main

    x = np.zeros((401, 16), np.float32)
    x[1:] = _mixture(n=400, d=16)
    np.save(tmp_path / "emb.npy", x)
    assert main(["sid", "build", "--embeddings", str(tmp_path / "emb.npy"), "--levels", "2", "--codes", "16",
                 "--no-plots", "--out", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert main(["sid", "report", str(tmp_path / "s"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_unique_sids"] == 400
    assert main(["sid", "export", str(tmp_path / "s"), "--key", "item", "--out", str(tmp_path / "x.json")]) == 0
    assert len(json.loads((tmp_path / "x.json").read_text())) == 400
    assert main(["sid", "build", "--embeddings", str(tmp_path / "missing"), "--out", str(tmp_path / "t")]) == 2
