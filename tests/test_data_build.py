"""Data builders: every reader on files in its exact source format, preprocessing, and the real Beauty counts."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data_builders import PreprocessConfig, build_dataset, load_dataset, read_source
from llmrec.errors import LlmrecError

FIX = Path(__file__).parent / "fixtures"


# --- real data -----------------------------------------------------------------------------------------------
def test_beauty_counts_match_published(beauty_dataset):
    ds = load_dataset(beauty_dataset)
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == (22_363, 12_101, 198_502)
    inter = ds.interactions
    assert inter["item"].min() == 1 and inter["item"].max() == 12_101
    assert inter["user"].min() == 1 and inter["user"].max() == 22_363
    # ids are kept (the CSV already numbers items 1..N) and titles line up with the source file
    src = pd.read_csv(Path(ds.meta["config"]["items"]), keep_default_na=False)
    assert (ds.titles[src["item_id"].to_numpy()] == src["title"].to_numpy()).all()
    # every input file is hashed in the manifest
    assert len(ds.meta["inputs"]) == 2 and all(len(h) == 64 for h in ds.meta["inputs"].values())
    # chronological per user, source order inside equal timestamps (user 1's first items as in the CSV)
    raw = pd.read_csv(Path(ds.meta["config"]["path"]))
    first = raw[raw.user_id == 1].item_id.tolist()
    assert inter[inter.user == 1].item.tolist() == first


def test_minionerec_folder_and_split(shared_data, tmp_path):
    root = shared_data / "minionerec-amazon2018" / "Amazon"
    out = build_dataset("minionerec", root, tmp_path / "ind")
    ds = load_dataset(out)
    assert ds.meta["has_timestamps"] is False
    assert (out / "splits" / "minionerec" / "test.parquet").is_file()
    test = pd.read_parquet(out / "splits" / "minionerec" / "test.parquet")
    assert len(test) == 4_533
    raw = pd.read_csv(next((root / "test").glob("*.csv")))
    # target titles survive the id mapping
    titles = ds.titles[test["target"].to_numpy()]
    assert (titles == raw["item_title"].to_numpy()).mean() > 0.99
    assert ds.items["description"].str.len().gt(0).mean() > 0.9


def test_lcrec_folder(shared_data, tmp_path):
    letter = shared_data / "amazon-beauty-2014" / "raw" / "letter"
    out = build_dataset("lcrec", letter, tmp_path / "lc")
    ds = load_dataset(out)
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == (22_363, 12_101, 198_502)
    # LC-Rec ids are 0-based: item "0" becomes 1
    assert ds.items.loc[ds.items.item == 1, "original_id"].item() == "0"
    assert ds.meta["source"]["sid_index"].endswith("Beauty.index.json")


def test_movielens_real_movies_file(shared_data, tmp_path):
    src = shared_data / "movielens" / "ml-1m"
    d = tmp_path / "ml-1m"
    d.mkdir()
    shutil.copy(src / "movies.dat", d)
    shutil.copy(src / "users.dat", d)
    movies = pd.read_csv(src / "movies.dat", sep="::", engine="python", header=None, encoding="latin-1")
    rng = np.random.default_rng(0)
    rows = [f"{u}::{m}::{rng.integers(1, 6)}::{978300000 + k}" for k, (u, m) in
            enumerate(zip(rng.integers(1, 50, 500), rng.choice(movies[0], 500)))]
    (d / "ratings.dat").write_text("\n".join(rows) + "\n")
    ds = load_dataset(build_dataset("movielens", d, tmp_path / "out"))
    assert ds.meta["source"]["variant"] == "1m"
    assert ds.items["text"].str.contains("Genres: ").all()
    assert not ds.items["title"].str.contains("�").any()  # Latin-1 decoded


# --- MovieLens variants, exact formats -----------------------------------------------------------------------
@pytest.mark.parametrize("folder,variant,n_inter,first_title", [
    ("ml-100k", "100k", 6, "Kolya (1996)"),
    ("ml-1m", "1m", 5, "James and the Giant Peach (1996)"),
    ("ml-10M100K", "10m", 4, "Boomerang (1992)"),
    ("ml-20m", "20m", 5, "Jumanji (1995)"),
])
def test_movielens_variants(tmp_path, folder, variant, n_inter, first_title):
    out = build_dataset("movielens", FIX / "movielens" / folder, tmp_path / "ml")
    ds = load_dataset(out)
    assert ds.meta["source"]["variant"] == variant
    assert ds.meta["n_interactions"] == n_inter
    assert ds.items.sort_values("item").iloc[0]["title"] == first_title
    assert ds.meta["has_ratings"]
    inter = ds.interactions
    for _, g in inter.groupby("user"):
        assert g["timestamp"].is_monotonic_increasing


def test_movielens_100k_genre_flags(tmp_path):
    ds = load_dataset(build_dataset("movielens", FIX / "movielens" / "ml-100k", tmp_path / "ml"))
    t = ds.items.set_index("original_id")
    assert t.loc["302", "genres"] == "Crime, Film-Noir, Mystery, Thriller"
    assert t.loc["377", "genres"] == "Children's, Comedy"


# --- Amazon dumps ---------------------------------------------------------------------------------------------
def _gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _amazon2014(tmp: Path, meta_extra: list[str] = ()) -> tuple[Path, Path]:
    reviews = [json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": "ok"})
               for u, a, r, t in [("U1", "A1", 5.0, 100), ("U1", "A2", 2.0, 200), ("U2", "A1", 4.0, 150),
                                  ("U2", "A3", 5.0, 160), ("U1", "A3", 4.0, 300)]]
    meta = [
        "{'asin': 'A1', 'title': \"L'Oreal Paris Lipstick\", 'categories': [['Beauty', 'Makeup', 'Lips']], "
        "'brand': \"L'Oreal\", 'price': 9.99, 'related': {'also_bought': ['A2']}}",
        "{'asin': 'A2', 'title': 'Nail Polish \"Red\"', 'description': 'Bright red.', 'categories': [['Beauty']]}",
        "{'asin': 'A3', 'title': 'Shampoo', 'salesRank': {'Beauty': 12}}",
        "{'asin': 'ZZ', 'title': 'not reviewed'}",
        *meta_extra,
    ]
    return _gz(tmp / "reviews_Beauty_5.json.gz", reviews), _gz(tmp / "meta_Beauty.json.gz", meta)


def test_amazon2014_python_literal_meta(tmp_path):
    r, m = _amazon2014(tmp_path)
    ds = load_dataset(build_dataset("amazon2014", r, tmp_path / "out", items=m))
    t = ds.items.set_index("original_id")
    assert t.loc["A1", "title"] == "L'Oreal Paris Lipstick"
    assert t.loc["A1", "categories"] == "Beauty > Makeup > Lips"
    assert t.loc["A2", "title"] == 'Nail Polish "Red"'
    assert "Brand: L'Oreal" in t.loc["A1", "text"]
    assert ds.n_items == 3  # ZZ has no interactions
    assert ds.interactions[ds.interactions.user == 1].item.tolist() == [1, 2, 3]


def test_amazon2014_folder_and_min_rating(tmp_path):
    _amazon2014(tmp_path)
    ds = load_dataset(build_dataset("amazon2014", tmp_path, tmp_path / "out",
                                    config=PreprocessConfig(min_rating=4)))
    assert ds.meta["n_interactions"] == 4  # the 2-star review is gone
    assert ds.meta["config"]["preprocess"]["min_rating"] == 4


def test_amazon2014_meta_never_evaluated(tmp_path):
    # a line that would run code under eval() must be rejected, not executed
    r, m = _amazon2014(tmp_path, meta_extra=["{'asin': 'A3', 'title': __import__('os').getcwd()}"])
    with pytest.raises(LlmrecError, match=r"meta_Beauty.json.gz, line 5: malformed line"):
        build_dataset("amazon2014", r, tmp_path / "out", items=m)


def test_amazon2018_and_2023(tmp_path):
    rev18 = [json.dumps({"overall": 5.0, "reviewerID": f"U{u}", "asin": f"B{i}", "unixReviewTime": 1000 + 10 * k})
             for k, (u, i) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)])]
    meta18 = [json.dumps({"asin": f"B{i}", "title": f"Item {i}", "brand": "Acme", "category": ["Tools", "Drills"],
                          "description": ["Strong.", "Light."], "feature": ["18V"]}) for i in (1, 2, 3)]
    d18 = tmp_path / "a18"
    d18.mkdir()
    _gz(d18 / "Industrial_and_Scientific_5.json.gz", rev18)
    _gz(d18 / "meta_Industrial_and_Scientific.json.gz", meta18)
    ds = load_dataset(build_dataset("amazon2018", d18, tmp_path / "o18"))
    assert ds.n_items == 3 and ds.items.iloc[0]["description"] == "Strong. Light."
    assert "Categories: Tools Drills" in ds.items.iloc[0]["text"]

    rev23 = [json.dumps({"rating": 4.0, "user_id": f"U{u}", "asin": f"C{i}x", "parent_asin": f"C{i}",
                         "timestamp": 1588687728923 + k * 1000}) for k, (u, i) in enumerate([(1, 1), (1, 2), (2, 2)])]
    meta23 = [json.dumps({"parent_asin": f"C{i}", "title": f"Cream {i}", "store": "Glow", "main_category": "Beauty",
                          "features": ["vegan"], "description": [], "details": {"Size": "1 oz"}}) for i in (1, 2)]
    d23 = tmp_path / "a23"
    d23.mkdir()
    (d23 / "All_Beauty.jsonl").write_text("\n".join(rev23) + "\n")
    (d23 / "meta_All_Beauty.jsonl").write_text("\n".join(meta23) + "\n")
    ds = load_dataset(build_dataset("amazon2023", d23, tmp_path / "o23"))
    assert ds.items.set_index("original_id").loc["C2", "brand"] == "Glow"
    assert ds.interactions["timestamp"].iloc[0] == 1588687728  # milliseconds -> seconds


# --- generic tables -----------------------------------------------------------------------------------------
def test_csv_column_mapping_and_parquet(tmp_path):
    inter = pd.DataFrame({"uid": ["x", "x", "y", "y", "y"], "iid": [10, 20, 10, 30, 20],
                          "when": ["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-03", "2024-01-05"],
                          "stars": [5, 4, 3, 5, 1]})
    items = pd.DataFrame({"product": [10, 20, 30], "name": ["A", "B", "C"], "blurb": ["a", "b", "c"]})
    inter.to_parquet(tmp_path / "i.parquet")
    items.to_csv(tmp_path / "items.csv", index=False)
    ds = load_dataset(build_dataset(
        "parquet", tmp_path / "i.parquet", tmp_path / "out", items=tmp_path / "items.csv",
        columns="user=uid,item=iid,time=when,rating=stars,title=name,meta_item=product",
        config=PreprocessConfig(text_fields=("title", "blurb"))))
    assert ds.items["title"].tolist() == ["A", "B", "C"]
    assert ds.items["text"].tolist() == ["A. Blurb: a", "B. Blurb: b", "C. Blurb: c"]
    assert ds.interactions["timestamp"].iloc[0] == 1704067200  # ISO dates parsed as UTC
    assert ds.interactions["rating"].tolist() == [5, 4, 3, 5, 1]


def test_preprocess_core_dedup_and_encoding(tmp_path):
    # user c has 2 interactions -> removed by 3-core, which then drops item 40 (only c had it) ...
    rows = [("a", 10, 1), ("a", 10, 2), ("a", 20, 3), ("a", 30, 4),
            ("b", 10, 1), ("b", 20, 2), ("b", 30, 3),
            ("c", 40, 1), ("c", 10, 2),
            ("d", 20, 1), ("d", 30, 2), ("d", 10, 3)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "i.csv", index=False)
    ds = load_dataset(build_dataset("csv", tmp_path / "i.csv", tmp_path / "out",
                                    config=PreprocessConfig(core=3, dedup_consecutive=True)))
    assert ds.meta["stats"]["after_dedup_consecutive"] == 11  # a's repeated 10 removed
    assert ds.n_users == 3 and ds.n_items == 3
    assert ds.items["original_id"].tolist() == ["10", "20", "30"]  # numeric order, ids from 1
    assert ds.interactions.groupby("user").size().min() >= 3
    # without options nothing is filtered
    ds2 = load_dataset(build_dataset("csv", tmp_path / "i.csv", tmp_path / "raw"))
    assert ds2.meta["n_interactions"] == len(rows)


def test_ties_keep_source_order(tmp_path):
    rows = [("u", "z", 5), ("u", "a", 5), ("u", "m", 5), ("u", "b", 1)]
    pd.DataFrame(rows, columns=["user", "item", "time"]).to_csv(tmp_path / "i.csv", index=False)
    ds = load_dataset(build_dataset("csv", tmp_path / "i.csv", tmp_path / "o"))
    seq = ds.items.set_index("item")["original_id"][ds.interactions["item"]].tolist()
    assert seq == ["b", "z", "a", "m"]
