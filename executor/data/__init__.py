"""Offline training data for `scaleplan run`: a real text corpus (the Python standard library on
this machine), a BPE tokenizer trained on it, sequence packing with a deterministic resumable
order and per-phase mixes, and generated verifiable tasks for SFT, DPO and GRPO.

Nothing here downloads anything at run time.
"""
