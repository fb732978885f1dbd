"""Stage 6: the SID trie, the vectorized constrained logits processor, hf and vllm backends, chat."""
