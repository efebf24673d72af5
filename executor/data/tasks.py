"""Generated verifiable tasks for SFT, DPO and GRPO, scored by exact match.

A task is a prompt and its one correct answer. Kinds (Zelikman-style toy reasoning; chosen to be
learnable by a tiny model): `upper` (upper-case a short lower-case word), `reverse` (reverse a
short word), `add` (sum of two small integers), `copy` (repeat a short word), `first` (the first of two digits:
the easiest, and its answers are shared by train and held-out prompts).
A phase mixes kinds by the weights of its data sources: a source named after a kind draws only
that kind; the generic names `sft`, `dpo` and `rlvr` draw every kind uniformly. Prompts are split once into train and held-out
sets by a hash of the prompt text, so GRPO's held-out reward is measured on prompts never
trained on. DPO pairs take the correct answer as chosen and a corrupted one as rejected.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

import numpy as np

KINDS = ("upper", "reverse", "add", "copy", "first")
GENERIC = ("sft", "dpo", "rlvr", "tasks")
HELD_OUT_PERCENT = 15


@dataclass(frozen=True)
class Task:
    kind: str
    prompt: str
    answer: str


def kind_weights(sources: list[tuple[str, float]]) -> dict[str, float]:
    """Task-kind weights from a phase's data sources (see the module docstring)."""
    weights = dict.fromkeys(KINDS, 0.0)
    for name, w in sources:
        if name in GENERIC:
            for k in KINDS:
                weights[k] += w / len(KINDS)
        elif name in KINDS:
            weights[name] += w
        else:
            raise ValueError(f"unknown task source '{name}'; use {', '.join(GENERIC + KINDS)}")
    return {k: w for k, w in weights.items() if w > 0}


def _make(rng: np.random.Generator, kinds: dict[str, float]) -> Task:
    names = list(kinds)
    p = np.asarray([kinds[k] for k in names])
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    if kind in ("add", "first"):
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        if kind == "first":
            return Task(kind, f"first {a} {b} =", f" {a}")
        return Task(kind, f"add {a} {b} =", f" {a + b}")
    word = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(1, 3))))
    if kind == "upper":
        return Task(kind, f"upper {word} =", f" {word.upper()}")
    if kind == "copy":
        return Task(kind, f"copy {word} =", f" {word}")
    return Task(kind, f"reverse {word} =", f" {word[::-1]}")


def is_held_out(task: Task) -> bool:
    digest = hashlib.sha1(task.prompt.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


def task(
    index: int, seed: int, held_out: bool = False, kinds: dict[str, float] | None = None
) -> Task:
    """The index-th task of a split: a pure function of (seed, index, split)."""
    rng = np.random.default_rng((seed, 7, index, int(held_out)))
    kinds = kinds or dict.fromkeys(KINDS, 1.0)
    while True:
        t = _make(rng, kinds)
        if is_held_out(t) == held_out:
            return t


def corrupt(t: Task, rng: np.random.Generator) -> str:
    """A wrong answer of the same shape (for DPO's rejected response)."""
    while True:
        if t.kind in ("add", "first"):
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
