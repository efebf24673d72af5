"""Sequence packing, per-phase mixes by weight, and a deterministic, resumable data order.

Each text source is tokenized once (documents joined by EOS, Brown et al. 2020 sec. 2.2 style
packing) and cached as a `.npy` token stream. The stream is cut into windows of seq_length+1
tokens; the last `EVAL_FRACTION` of windows are held out for evaluation.

Order: global sample i (counted over the whole phase, across DP ranks and micro-batches) draws
its source from the mix weights with a generator seeded by (seed, i), and takes the next window
of a per-epoch seeded permutation of that source. Sample i is therefore a pure function of
(seed, i): resuming needs only the count of consumed samples, which the checkpoint stores, and
the same global batch is seen whatever the data-parallel layout.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .corpus import documents
from .tokenizer import special_ids

EVAL_FRACTION = 0.05
MAX_EVAL_WINDOWS = 16


def token_stream(tok: Tokenizer, cache_dir: Path, name: str, path: str | None) -> np.ndarray:
    """The whole source as one int32 token array (cached; build on one rank, then barrier)."""
    key = name if path is None else f"{name}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"
    out = cache_dir / f"{key}-v{tok.get_vocab_size()}.npy"
    if not out.exists():
        eos, _ = special_ids(tok)
        ids: list[int] = []
        for enc in tok.encode_batch(documents(name, path)):
            ids.extend(enc.ids)
            ids.append(eos)
        tmp = out.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, np.asarray(ids, dtype=np.int32))
        os.replace(tmp, out)
    return np.load(out)


class PackedSource:
    """One token stream cut into windows of seq_length+1 tokens, with an eval tail."""

    def __init__(self, name: str, tokens: np.ndarray, seq_length: int) -> None:
        self.name, self.tokens, self.seq_length = name, tokens, seq_length
        windows = (len(tokens) - 1) // seq_length
        if windows < 2:
            raise ValueError(
                f"source {name} has {len(tokens)} tokens: too few for seq {seq_length}"
            )
        self.num_eval = max(1, min(MAX_EVAL_WINDOWS, int(windows * EVAL_FRACTION)))
        self.num_train = windows - self.num_eval

    def window(self, k: int) -> np.ndarray:
        start = k * self.seq_length
        return self.tokens[start : start + self.seq_length + 1]

    def eval_windows(self) -> np.ndarray:
        return np.stack([self.window(self.num_train + k) for k in range(self.num_eval)])


class MixedData:
    """A weighted mix of packed sources; `samples(indices)` is deterministic in (seed, index)."""

    def __init__(self, sources: list[tuple[PackedSource, float]], seed: int) -> None:
        weights = np.asarray([w for _, w in sources], dtype=np.float64)
        self.sources = [s for s, _ in sources]
        self.cum = np.cumsum(weights / weights.sum())
        self.seed = seed

    @functools.lru_cache(maxsize=64)  # noqa: B019 - small, per-process object
    def _perm(self, j: int, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, j, epoch)).permutation(self.sources[j].num_train)

    def sample(self, i: int) -> np.ndarray:
        u = np.random.default_rng((self.seed, 1 << 20, i)).random()
        j = min(int(np.searchsorted(self.cum, u, side="right")), len(self.sources) - 1)
        n = self.sources[j].num_train
        return self.sources[j].window(int(self._perm(j, i // n)[i % n]))

    def samples(self, indices: range | list[int]) -> np.ndarray:
        """[len(indices), seq_length+1] int64 token windows."""
        return np.stack([self.sample(i) for i in indices]).astype(np.int64)
