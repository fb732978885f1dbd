"""Stage 5: SFT / RL / DPO on TRL for LLMs; the small training loop for sequence baselines."""
