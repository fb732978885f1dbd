"""`llmrec quickstart`: offline, end to end (shop -> floors -> embeddings -> SIDs -> instructions -> small Qwen3
with SID tokens -> SFT -> constrained beam search), one table, every artifact left in the workdir."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, capsys, monkeypatch):
    from llmrec.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "qs"
    assert main(["quickstart", "--workdir", str(work), "--fast", "--users", "300", "--items", "80",
                 "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "sid-lm (qwen3)" in out and "itemknn" in out and "pop" in out
    for folder in ("dataset", "embeddings", "sids", "instructions", "models/sid-lm/final", "models/itemknn"):
        assert (work / folder).is_dir(), folder
    m = json.loads((work / "metrics.json").read_text())
    lm = m["sid-lm (qwen3)"]
    assert lm["n_users"] == 300 and lm["invalid_rate"] == 0.0          # every user, only catalog items
    assert 0.0 <= lm["ndcg@10"] <= lm["hr@10"] <= lm["hr@20"] <= 1.0
    info = json.loads((work / "models" / "sid-lm" / "final" / "llmrec.json").read_text())
    assert info["prompt"]["system"] is None and info["levels"] == 3     # 2 RQ levels + the dedup digit
