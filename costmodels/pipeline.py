"""Pipeline-parallel schedules: closed-form bubbles and an event-level simulator.

Closed forms (Narayanan et al. 2021, section 2.2): with p stages and m micro-batches the 1F1B
(PipeDream-Flush) bubble is (p-1)/m of the ideal time, and (p-1)/(v·m) with v interleaved model
chunks per stage. `pipeline_time_s` is the vectorized form the step model uses, extended to
unequal stages (first stage: embedding; last stage: LM head and loss).

`simulate_schedule` plays Megatron's 1F1B and interleaved schedules op by op (the orders of
megatron.core.pipeline_parallel.schedules), with a point-to-point delay between dependent ops on
different stages, and returns every stage's timeline (forward, backward, comm, bubble) for
Gantt charts and for checking the closed forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

KINDS = ("forward", "backward", "comm", "bubble")


def bubble_fraction(
    pp: np.ndarray | int, num_microbatches: np.ndarray | int, vp: np.ndarray | int = 1
):
    """Bubble time over ideal time: (p-1)/(v·m) (Narayanan et al. 2021, eq. 1 and section 2.2.2)."""
    p = np.asarray(pp, dtype=np.float64)
    m = np.maximum(np.asarray(num_microbatches, dtype=np.float64), 1.0)
    v = np.asarray(vp, dtype=np.float64)
    return (p - 1.0) / (v * m)


def pipeline_time_s(
    stage_times_s: Sequence[np.ndarray],
    num_microbatches: np.ndarray,
    vp: np.ndarray | int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Makespan of one step's forward+backward work, and its bubble, vectorized over layouts.

    `stage_times_s[s]` is stage s's forward+backward time per micro-batch (p2p included).
    1F1B: (m-1)·max_s t_s + Σ_s t_s, which is (m+p-1)·t for equal stages (Narayanan 2021 eq. 1);
    interleaved: m·max_s t_s + Σ_s t_s/v - max_s t_s/v, i.e. (m + (p-1)/v)·t for equal stages.
    Returns (makespan_s, bubble_s), bubble = makespan - m·max_s t_s.
    """
    t = np.stack([np.asarray(x, dtype=np.float64) for x in stage_times_s])
    m = np.maximum(np.asarray(num_microbatches, dtype=np.float64), 1.0)
    v = np.asarray(vp, dtype=np.float64)
    t_max = t.max(axis=0)
    makespan = m * t_max + (t.sum(axis=0) - t_max) / v
    return makespan, makespan - m * t_max


@dataclass(frozen=True)
class Event:
    stage: int
    kind: str  # one of KINDS
    start_s: float
    end_s: float
    microbatch: int  # -1 for bubbles
    chunk: int = 0  # model chunk (virtual stage index on this device) for interleaving


@dataclass(frozen=True)
class PipelineTimeline:
    num_stages: int
    num_microbatches: int
    vp: int
    events: list[Event] = field(default_factory=list)

    @property
    def makespan_s(self) -> float:
        return max((e.end_s for e in self.events), default=0.0)

    def busy_s(self, stage: int) -> float:
        return sum(
            e.end_s - e.start_s
            for e in self.events
            if e.stage == stage and e.kind in ("forward", "backward")
        )

    def bubble_s(self, stage: int) -> float:
        return sum(
            e.end_s - e.start_s for e in self.events if e.stage == stage and e.kind == "bubble"
        )

    def stage_events(self, stage: int) -> list[Event]:
        return sorted((e for e in self.events if e.stage == stage), key=lambda e: e.start_s)


def _op_order(stage: int, p: int, m: int, v: int) -> list[tuple[str, int, int]]:
    """Megatron's op order on one stage: (kind, microbatch, chunk)."""
    if v == 1:
        warmup = min(p - stage - 1, m)
        ops: list[tuple[str, int, int]] = [("forward", i, 0) for i in range(warmup)]
        f, b = warmup, 0
        while f < m:
            ops.append(("forward", f, 0))
            f += 1
            ops.append(("backward", b, 0))
            b += 1
        ops.extend(("backward", i, 0) for i in range(b, m))
        return ops
    # Interleaved (Narayanan 2021 section 2.2.2; megatron ...schedules.forward_backward_pipelining_
    # with_interleaving): virtual micro-batch k runs chunk (k // p) % v of micro-batch
    # (k // (p·v))·p + k % p; backwards walk the chunks in reverse.
    total = m * v

    def fwd(k: int) -> tuple[str, int, int]:
        return ("forward", (k // (p * v)) * p + k % p, (k // p) % v)

    def bwd(k: int) -> tuple[str, int, int]:
        return ("backward", (k // (p * v)) * p + k % p, v - 1 - (k // p) % v)

    warmup = min((p - stage - 1) * 2 + (v - 1) * p, total)
    ops = [fwd(k) for k in range(warmup)]
    for k in range(warmup, total):
        ops.append(fwd(k))
        ops.append(bwd(k - warmup))
    ops.extend(bwd(k) for k in range(total - warmup, total))
    return ops


def simulate_schedule(
    stage_forward_s: Sequence[float],
    stage_backward_s: Sequence[float],
    num_microbatches: int,
    vp: int = 1,
    p2p_s: float = 0.0,
) -> PipelineTimeline:
    """Play a 1F1B (vp=1) or interleaved (vp>1) schedule event by event.

    `stage_forward_s[s]` / `stage_backward_s[s]`: time of one micro-batch through all of stage s's
    layers (each of the vp chunks takes 1/vp of it). A forward on virtual stage j waits for the
    forward of j-1 plus `p2p_s`; a backward on j waits for the backward of j+1 plus `p2p_s`.
    A `comm` event is the transfer arriving at a stage (it may overlap that stage's compute of
    another micro-batch); `bubble` events are the stage's idle gaps.
    """
    p, m, v = len(stage_forward_s), int(num_microbatches), int(vp)
    if p == 0 or len(stage_backward_s) != p:
        raise ValueError("stage_forward_s and stage_backward_s must have one entry per stage")
    if m < 1 or v < 1:
        raise ValueError("num_microbatches and vp must be >= 1")
    if v > 1 and (p == 1 or m % p):
        raise ValueError(
            "the interleaved schedule needs pp > 1 and num_microbatches divisible by pp"
        )
    orders = [_op_order(s, p, m, v) for s in range(p)]
    done: dict[tuple[str, int, int], float] = {}  # (kind, microbatch, virtual stage) -> end
    pos = [0] * p
    free = [0.0] * p
    events: list[Event] = []
    last_virtual = p * v - 1
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for s in range(p):
            while pos[s] < len(orders[s]):
                kind, mb, chunk = orders[s][pos[s]]
                j = chunk * p + s  # virtual stage
                if kind == "forward":
                    dep = ("forward", mb, j - 1) if j > 0 else None
                else:
                    dep = ("backward", mb, j + 1) if j < last_virtual else ("forward", mb, j)
                if dep is not None and dep not in done:
                    break
                ready = 0.0
                if dep is not None:
                    ready = done[dep] + (p2p_s if dep[2] % p != s or dep[0] != kind else 0.0)
                    if p2p_s > 0 and dep[2] % p != s and dep[0] == kind:
                        events.append(Event(s, "comm", done[dep], ready, mb, chunk))
                start = max(free[s], ready)
                if start > free[s]:
                    events.append(Event(s, "bubble", free[s], start, -1, chunk))
                dur = (stage_forward_s[s] if kind == "forward" else stage_backward_s[s]) / v
                events.append(Event(s, kind, start, start + dur, mb, chunk))
                done[(kind, mb, j)] = start + dur
                free[s] = start + dur
                pos[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:  # pragma: no cover - the schedules above are deadlock-free
            raise RuntimeError("pipeline schedule deadlocked")
    end = max(free)
    for s in range(p):  # idle tail until the last stage finishes (the flush)
        if free[s] < end:
            events.append(Event(s, "bubble", free[s], end, -1, 0))
    return PipelineTimeline(p, m, v, events)
