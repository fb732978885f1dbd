"""Stage 6: the SID trie, the vectorized constrained decoder, the Hugging Face backend, recommend and chat.

Public API (imported lazily, so ``import llmrec.inference`` does not load torch)::

    Trie, sid_trie                               llmrec.inference.trie
    TrieLogitsProcessor, beam_search, StepScorer, PrefixStateScorer, BeamResult, segment_log_softmax
                                                 llmrec.inference.constrained
    constrained_beam_search, generate_constrained, beam_generation_config, clean_generation_defaults
                                                 llmrec.inference.hf
    Recommender, Recommendation, recommend_file  llmrec.inference.recommend
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Trie": "trie", "sid_trie": "trie",
    "TrieLogitsProcessor": "constrained", "beam_search": "constrained", "StepScorer": "constrained",
    "BeamResult": "constrained", "segment_log_softmax": "constrained", "PrefixStateScorer": "constrained",
    "constrained_beam_search": "hf", "generate_constrained": "hf", "beam_generation_config": "hf",
    "clean_generation_defaults": "hf",
    "Recommender": "recommend", "Recommendation": "recommend", "recommend_file": "recommend",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"llmrec.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'llmrec.inference' has no attribute {name!r}")
