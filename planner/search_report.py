"""What a layout search reports besides its best: the Pareto front over time, dollars and memory
headroom, and why whole families of layouts (all TP=16, all PP=1, ...) were rejected.

Vectorized like the search: loops run over dimensions and their few values, never over layouts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaleplan.costmodels.batch import RECOMPUTE_NAMES, LayoutBatch

GIB = 1024**3
MAX_FRONT = 25  # Pareto entries kept in the report (the fastest first)
_OPT_NAMES = {(0, 0): "replicated", (0, 1): "distributed", (3, 0): "zero3"}


def _dims(cand: LayoutBatch, gpus: np.ndarray) -> dict[str, tuple[np.ndarray, Any]]:
    """Family dimension -> (value per layout, how to print a value)."""
    opt = cand.zero_stage * 2 + cand.distributed_optimizer
    return {
        "tp": (cand.tp, lambda v: f"TP={v}"),
        "pp": (cand.pp, lambda v: f"PP={v}"),
        "cp": (cand.cp, lambda v: f"CP={v}"),
        "vp": (cand.vp, lambda v: f"VP={v}"),
        "ep": (cand.ep, lambda v: f"EP={v}"),
        "etp": (cand.etp, lambda v: f"ETP={v}"),
        "micro_batch": (cand.micro_batch, lambda v: f"micro_batch={v}"),
        "recompute": (cand.recompute, lambda v: f"recompute={RECOMPUTE_NAMES[int(v)]}"),
        "optimizer": (opt, lambda v: f"optimizer={_OPT_NAMES.get((int(v) // 2, int(v) % 2), v)}"),
        "sequence_parallel": (cand.sequence_parallel, lambda v: f"SP={'on' if v else 'off'}"),
        "num_gpus": (gpus, lambda v: f"GPUs={v}"),
    }


def describe(cand: LayoutBatch, i: int, num_gpus: int | None = None) -> str:
    """A one-line layout: `tp8 pp16 vp2 cp1 dp128 sp mb1 gb2048 selective distributed`."""
    opt = _OPT_NAMES.get((int(cand.zero_stage[i]), int(cand.distributed_optimizer[i])), "zero")
    parts = [
        f"tp{cand.tp[i]}",
        f"pp{cand.pp[i]}",
        f"vp{cand.vp[i]}",
        f"cp{cand.cp[i]}",
        f"dp{cand.dp[i]}",
    ]
    if cand.ep[i] > 1:
        parts.append(f"ep{cand.ep[i]}")
    if cand.etp[i] != cand.tp[i]:
        parts.append(f"etp{cand.etp[i]}")  # expert TP differs from tp (EP folded over TP)
    if cand.account_embedding_loss_in_pipeline_split[i]:
        parts.append("emb+loss-in-pp")  # embedding and loss counted as pipeline layers
    if cand.balanced_pipeline_layout[i]:
        parts.append("balanced-pp")  # uneven pipeline_model_parallel_layout (stage_layers)
    if cand.sequence_parallel[i]:
        parts.append("sp")
    parts += [
        f"mb{cand.micro_batch[i]}",
        f"gb{cand.global_batch[i]}",
        RECOMPUTE_NAMES[int(cand.recompute[i])],
        opt,
    ]
    if num_gpus is not None:
        parts.append(f"on {num_gpus} GPUs")
    return " ".join(parts)


def family_rejections(
    cand: LayoutBatch,
    gpus: np.ndarray,
    code: np.ndarray,
    reasons: list[str],
    over_bytes: np.ndarray,
    fits: np.ndarray,
) -> list[dict[str, Any]]:
    """Families (one value of one dimension) none of whose layouts survived, each with its main
    reason and, when memory was the last obstacle, the closest miss in GiB."""
    mem_code = len(reasons) - 1
    out: list[dict[str, Any]] = []
    for dim, (values, label) in _dims(cand, gpus).items():
        uniq, inv = np.unique(values, return_inverse=True)
        if len(uniq) < 2 and dim != "num_gpus":
            continue  # a dimension with one value is not a choice
        alive = np.bincount(inv, weights=fits.astype(np.float64), minlength=len(uniq)) > 0
        for u in np.flatnonzero(~alive):
            member = inv == u
            codes = code[member]
            counts = np.bincount(codes[codes >= 0], minlength=len(reasons))
            entry: dict[str, Any] = {"family": label(int(uniq[u])), "layouts": int(member.sum())}
            if counts[mem_code]:
                oom = np.flatnonzero(member & (code == mem_code))
                j = int(oom[np.argmin(over_bytes[oom])])
                miss = float(over_bytes[j]) / GIB
                entry.update(
                    rule="out of memory",
                    closest_miss_gib=round(miss, 2),
                    closest=describe(cand, j),
                    reason=f"{entry['family']} out of memory by {miss:.1f} GiB at best "
                    f"({describe(cand, j)})",
                )
            else:
                main = int(np.argmax(counts))
                entry.update(
                    rule=reasons[main],
                    reason=f"{entry['family']}: {reasons[main]} "
                    f"({int(counts[main])} of {entry['layouts']} layouts)",
                )
            out.append(entry)
    return out


def pareto_front(
    lay: LayoutBatch,
    gpus: np.ndarray,
    sec_per_token: np.ndarray,
    usd_per_token: np.ndarray,
    headroom_bytes: np.ndarray,
    step_time_s: np.ndarray,
) -> list[dict[str, Any]]:
    """Layouts no other beats on all of time, dollars and memory headroom (fastest first).

    Within one GPU count dollars are proportional to time, so the 3-D front is contained in the
    union of the per-count (time, headroom) fronts; those are found by a sort and a running
    maximum, and the union is then filtered pairwise (it is small)."""
    order = np.lexsort((-headroom_bytes, sec_per_token, gpus))
    g_sorted, h_sorted = gpus[order], headroom_bytes[order]
    starts = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    group = np.cumsum(starts) - 1
    # running max of headroom within each GPU-count group (before each element)
    offset = group * (np.abs(h_sorted).max() * 4 + 1.0)
    run = np.maximum.accumulate(h_sorted + offset) - offset
    prev = np.r_[-np.inf, run[:-1]]
    prev = np.where(starts, -np.inf, prev)
    cand = order[h_sorted > prev]
    t, d, h = sec_per_token[cand], usd_per_token[cand], headroom_bytes[cand]
    dominated = (
        (t[None, :] <= t[:, None])
        & (d[None, :] <= d[:, None])
        & (h[None, :] >= h[:, None])
        & ((t[None, :] < t[:, None]) | (d[None, :] < d[:, None]) | (h[None, :] > h[:, None]))
    ).any(axis=1)
    front = cand[~dominated]
    front = front[np.argsort(sec_per_token[front], kind="stable")][:MAX_FRONT]
    return [
        {
            "layout": describe(lay, int(i), int(gpus[i])),
            "num_gpus": int(gpus[i]),
            "step_time_s": float(step_time_s[i]),
            "tokens_per_s": float(1.0 / sec_per_token[i]),
            "usd_per_million_tokens": float(usd_per_token[i] * 1e6),
            "headroom_gib": round(float(headroom_bytes[i]) / GIB, 2),
        }
        for i in front
    ]
