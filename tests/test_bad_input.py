"""Bad input: one-line errors naming file/line/field and what was expected, exit code 2, nothing left behind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from llmrec.cli import main


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    return code, errors[-1] if errors else "", err


def assert_clean(out: Path):
    assert not out.exists(), "a failed build must not leave its output folder"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, f"temporary folders left behind: {leftovers}"


@pytest.fixture
def csvs(tmp_path):
    inter = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], "timestamp": [10, 20, 10, 30]})
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["a", "b", "c"]})
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


def build(tmp_path, *extra):
    return ["data", "build", "--format", "csv", "--out", str(tmp_path / "out"), *extra]


def test_missing_file(tmp_path, capsys):
    code, msg, _ = run_cli(build(tmp_path, "--path", str(tmp_path / "nope.csv")), capsys)
    assert code == 2
    assert "nope.csv: file not found" in msg and "expected an interactions table" in msg
    assert_clean(tmp_path / "out")


def test_misnamed_column(csvs, capsys):
    code, msg, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv"), "--columns", "time=ts"), capsys)
    assert code == 2
    assert "inter.csv: column 'ts' (given as time=ts) not found" in msg and "timestamp" in msg
    assert_clean(csvs / "out")


def test_missing_user_column(tmp_path, capsys):
    pd.DataFrame({"who": [1], "item_id": [1]}).to_csv(tmp_path / "i.csv", index=False)
    code, msg, _ = run_cli(build(tmp_path, "--path", str(tmp_path / "i.csv")), capsys)
    assert code == 2 and "no user column found" in msg and "--columns user=COL" in msg


def test_non_numeric_timestamp(csvs, capsys):
    df = pd.read_csv(csvs / "inter.csv")
    df["timestamp"] = df["timestamp"].astype(str)
    df.loc[2, "timestamp"] = "yesterday"
    df.to_csv(csvs / "inter.csv", index=False)
    code, msg, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv")), capsys)
    assert code == 2
    assert "inter.csv, line 4, field 'timestamp'" in msg and "'yesterday'" in msg and "unix timestamp" in msg
    assert_clean(csvs / "out")


def test_malformed_json_line(tmp_path, capsys):
    lines = [json.dumps({"reviewerID": "u", "asin": "a", "overall": 5, "unixReviewTime": 1}),
             '{"reviewerID": "u", "asin": "b", "overall": 5, "unixReviewTime": 2',
             json.dumps({"reviewerID": "u", "asin": "c", "overall": 5, "unixReviewTime": 3})]
    with gzip.open(tmp_path / "reviews_X_5.json.gz", "wt") as f:
        f.write("\n".join(lines))
    code, msg, _ = run_cli(["data", "build", "--format", "amazon2014", "--path",
                            str(tmp_path / "reviews_X_5.json.gz"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "reviews_X_5.json.gz, line 2: malformed line, expected a JSON object" in msg
    assert_clean(tmp_path / "out")


def test_items_absent_from_metadata(csvs, capsys, caplog):
    pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"]}).to_csv(csvs / "items.csv", index=False)
    args = build(csvs, "--path", str(csvs / "inter.csv"), "--items", str(csvs / "items.csv"))
    code, msg, _ = run_cli(args + ["--missing-items", "fail"], capsys)
    assert code == 2 and "1 interactions (1 items, e.g. 3) refer to items absent from the item metadata" in msg
    assert_clean(csvs / "out")
    code, _, _ = run_cli(args, capsys)  # default: drop with a warning
    assert code == 0 and "dropping them" in caplog.text
    from llmrec.data_builders import load_dataset
    assert load_dataset(csvs / "out").n_items == 2


def test_conflicting_duplicate_item_titles(csvs, capsys):
    pd.DataFrame({"item_id": [1, 2, 3, 2], "title": ["a", "b", "c", "B!"]}).to_csv(csvs / "items.csv", index=False)
    code, msg, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv"), "--items", str(csvs / "items.csv")), capsys)
    assert code == 2
    assert "items.csv, lines 3, 5, field 'title': item id '2' appears 2 times with conflicting titles" in msg
    assert_clean(csvs / "out")


def test_identical_duplicate_items_are_fine(csvs, capsys):
    pd.DataFrame({"item_id": [1, 2, 3, 2], "title": ["a", "b", "c", "b"]}).to_csv(csvs / "items.csv", index=False)
    code, _, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv"), "--items", str(csvs / "items.csv")), capsys)
    assert code == 0


def test_empty_after_filtering(csvs, capsys):
    code, msg, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv"), "--core", "5"), capsys)
    assert code == 2 and "no interactions left after filtering" in msg and "'core': 5" in msg
    assert_clean(csvs / "out")


def test_existing_output_needs_overwrite(csvs, capsys):
    args = build(csvs, "--path", str(csvs / "inter.csv"))
    assert run_cli(args, capsys)[0] == 0
    code, msg, _ = run_cli(args, capsys)
    assert code == 2 and "already exists (pass --overwrite" in msg
    assert run_cli(args + ["--overwrite"], capsys)[0] == 0


def test_min_rating_without_ratings(csvs, capsys):
    code, msg, _ = run_cli(build(csvs, "--path", str(csvs / "inter.csv"), "--min-rating", "4"), capsys)
    assert code == 2 and "no rating column" in msg


def test_temporal_split_needs_timestamps(shared_data, tmp_path, capsys):
    letter = shared_data / "amazon-beauty-2014" / "raw" / "letter"
    assert main(["data", "build", "--format", "lcrec", "--path", str(letter), "--out", str(tmp_path / "lc")]) == 0
    code, msg, _ = run_cli(["data", "split", str(tmp_path / "lc"), "--protocol", "temporal"], capsys)
    assert code == 2 and "needs real timestamps" in msg
    assert not (tmp_path / "lc" / "splits" / "temporal").exists()


def test_eval_bad_predictions(tmp_path, capsys):
    p = tmp_path / "pred.jsonl"
    p.write_text('{"user": 1, "target": 3, "ranked": [1, 2, 3]}\n{"user": 2, "ranked": [1]}\n')
    code, msg, _ = run_cli(["eval", "--predictions", str(p)], capsys)
    assert code == 2 and "pred.jsonl, line 2, field 'target': missing" in msg
    p.write_text('{"user": 1, "target": 3, "ranked": [1, 2, 3]}\nnot json\n')
    code, msg, _ = run_cli(["eval", "--predictions", str(p)], capsys)
    assert code == 2 and "pred.jsonl, line 2: malformed JSON" in msg
