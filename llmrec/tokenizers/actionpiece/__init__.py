"""ActionPiece: context-aware item tokenization (Hou et al., ICML 2025), fast and with exact counts.

Items are unordered sets of features; a BPE-like vocabulary is learned from weighted co-occurrence inside items
and across adjacent items of the training sequences. See docs/actionpiece.md.

    from llmrec.tokenizers.actionpiece import run_actionpiece, ActionPiece, fuse_ranked_lists
    ap = run_actionpiece("out/ap", vocab_size=40000, dataset="data/beauty", embeddings="emb/")
    ap.item_tokens(42)            # target tokens, e.g. ['<ap_31877>', '<ap_5120>']
    ap.history_tokens([3, 9], rng=0)
    ap.decode(['<ap_31877>', '<ap_5120>'])   # -> 42
"""

from llmrec.tokenizers.actionpiece.build import MergeResult, learn_merges
from llmrec.tokenizers.actionpiece.run import build_features, run_actionpiece, train_actionpiece
from llmrec.tokenizers.actionpiece.tokenizer import TOKEN_FORMAT, ActionPiece, fuse_ranked_lists

__all__ = [
    "ActionPiece", "MergeResult", "TOKEN_FORMAT", "build_features", "fuse_ranked_lists", "learn_merges",
    "run_actionpiece", "train_actionpiece",
]
