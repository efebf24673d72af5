"""Generated verifiable tasks for SFT, DPO and GRPO, scored by exact match.

A task is a prompt and its one correct answer. Kinds (Zelikman-style toy reasoning; chosen to be
learnable by a tiny model): `upper` (upper-case a short lower-case word), `reverse` (reverse a
short word), `add` (sum of two small integers). Prompts are split once into train and held-out
sets by a hash of the prompt text, so GRPO's held-out reward is measured on prompts never
trained on. DPO pairs take the correct answer as chosen and a corrupted one as rejected.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

import numpy as np

KINDS = ("upper", "reverse", "add")
HELD_OUT_PERCENT = 15


@dataclass(frozen=True)
class Task:
    kind: str
    prompt: str
    answer: str


def _make(rng: np.random.Generator, kinds: tuple[str, ...]) -> Task:
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "add":
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        return Task(kind, f"add {a} {b} =", f" {a + b}")
    word = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(1, 3))))
    if kind == "upper":
        return Task(kind, f"upper {word} =", f" {word.upper()}")
    return Task(kind, f"reverse {word} =", f" {word[::-1]}")


def is_held_out(task: Task) -> bool:
    digest = hashlib.sha1(task.prompt.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


def task(index: int, seed: int, held_out: bool = False, kinds: tuple[str, ...] = KINDS) -> Task:
    """The index-th task of a split: a pure function of (seed, index, split)."""
    rng = np.random.default_rng((seed, 7, index, int(held_out)))
    while True:
        t = _make(rng, kinds)
        if is_held_out(t) == held_out:
            return t


def corrupt(t: Task, rng: np.random.Generator) -> str:
    """A wrong answer of the same shape (for DPO's rejected response)."""
    while True:
        if t.kind == "add":
            wrong = f" {int(t.answer) + int(rng.choice([-2, -1, 1, 2]))}"
        else:
            chars = list(t.answer[1:])
            chars[int(rng.integers(len(chars)))] = str(rng.choice(list(string.ascii_letters)))
            wrong = " " + "".join(chars)
        if wrong != t.answer:
            return wrong


def reward(t: Task, completion: str) -> float:
    """Exact match of the completion (up to EOS) with the answer, surrounding spaces ignored."""
    return 1.0 if completion.strip() == t.answer.strip() else 0.0
