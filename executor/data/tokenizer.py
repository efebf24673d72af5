"""A byte-level BPE tokenizer trained with `tokenizers` on the offline corpus.

Its vocabulary size is the plan model's `vocab_size` (special tokens included), so the embedding
matches the plan exactly. It is trained once and cached (`tokenizer-v{V}.json` in the cache
folder, RUN_DIR/cache by default); every later phase and every rank loads the same file.
Byte-level BPE (Radford et al. 2019, GPT-2 sec. 2.2) encodes any text, task strings included.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .corpus import documents

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MIN_VOCAB = 300  # 256 bytes + specials + a few merges


def tokenizer_path(cache_dir: Path, vocab_size: int) -> Path:
    return cache_dir / f"tokenizer-v{vocab_size}.json"


def train_tokenizer(vocab_size: int, max_bytes: int = 600_000) -> Tokenizer:
    """Train byte-level BPE on the `web` and `hq` corpora (deterministic)."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is below the byte-level minimum {MIN_VOCAB}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = documents("web", max_bytes=max_bytes) + documents("hq", max_bytes=max_bytes // 2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_or_train(cache_dir: Path, vocab_size: int) -> Tokenizer:
    """The cached tokenizer, trained first if absent (call on one rank, then barrier)."""
    path = tokenizer_path(cache_dir, vocab_size)
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tok = train_tokenizer(vocab_size)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tok.save(str(tmp))
        os.replace(tmp, path)
    return Tokenizer.from_file(str(path))


def special_ids(tok: Tokenizer) -> tuple[int, int]:
    """(eos_id, pad_id)."""
    eos, pad = tok.token_to_id(EOS), tok.token_to_id(PAD)
    assert eos is not None and pad is not None
    return eos, pad
