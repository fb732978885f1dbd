"""Stage 3: item tokenizers (item embeddings -> Semantic IDs) and the SID table."""

from llmrec.tokenizers.sid_table import SidTable, load_sid_codes

__all__ = ["SidTable", "load_sid_codes"]
