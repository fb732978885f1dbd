"""Stage 4 and baselines: vocabulary extension of HF causal LMs; baselines (floors, SASRec, GPT-2, HSTU, TIGER)."""
