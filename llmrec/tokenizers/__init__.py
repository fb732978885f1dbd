"""Stage 3: item tokenizers (item embeddings -> Semantic IDs) and the SID table.

Python API::

    from llmrec.tokenizers import build_sids, SidTable, load_tokenizer
    res = build_sids("emb/beauty", method="rq-kmeans", levels=3, codes=256, dedup="digit", out="sid/beauty")
    res.table.item_sid(1)            # '<a_12><b_7><c_201><d_0>'
    tok = load_tokenizer("sid/beauty"); tok.encode(new_vectors)
"""

from llmrec.tokenizers.sid_table import SidTable, load_sid_codes


def __getattr__(name):  # heavier pieces load on first use
    if name in ("build_sids", "report_sids", "import_index_json", "export_index_json", "SidResult"):
        from llmrec.tokenizers import build
        return getattr(build, name)
    if name in ("load_tokenizer", "make_tokenizer", "save_tokenizer", "METHODS"):
        from llmrec.tokenizers import base
        return getattr(base, name)
    raise AttributeError(name)


__all__ = ["METHODS", "SidResult", "SidTable", "build_sids", "export_index_json", "import_index_json",
           "load_sid_codes", "load_tokenizer", "make_tokenizer", "report_sids", "save_tokenizer"]
