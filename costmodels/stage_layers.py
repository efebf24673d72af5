"""Transformer layers per pipeline rank and model chunk: the one definition (vectorized).

Megatron-core (core v0.16, `transformer_block.get_num_layers_to_build` and
`transformer_layer.get_transformer_layer_offset`) splits L layers into pp·vp model chunks of
C = L/(pp·vp) layers; chunk c of pipeline rank r (virtual stage c·pp + r) holds layers
[(c·pp + r)·C, (c·pp + r + 1)·C). vp = 1 is the plain, contiguous split.

With `TransformerConfig.account_for_embedding_in_pipeline_split` and
`account_for_loss_in_pipeline_split` (our `LayoutSpec.account_embedding_loss_in_pipeline_split`)
the embedding and the loss count as one layer each: L + 2 slots split into chunks of
C = (L+2)/(pp·vp), slot 0 is the embedding, slot L+1 the loss and transformer layer i sits in
slot i+1. The first chunk of rank 0 and the last chunk of rank pp-1 hold C-1 transformer layers.

`split` arguments are the layouts' 0/1 column (`LayoutBatch.account_embedding_loss_in_pipeline_split`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaleplan.specs.model import ModelSpec


def layer_slots(num_layers: int, split: Any) -> np.ndarray:
    """Layer slots the pipeline split divides: L, or L + 2 with the embedding and loss counted."""
    return num_layers + 2 * (np.asarray(split) != 0).astype(np.int64)


def embedding_loss_split(num_layers: int, pp: Any, vp: Any) -> Any:
    """Where to count the embedding and the loss as pipeline layers (Megatron-core
    account_for_embedding/loss_in_pipeline_split): exactly where num_layers does not divide by
    pp*vp and num_layers + 2 does. Where both divide, pp*vp divides 2 and the two splits put the
    same layers on every stage, so nothing is lost by leaving the option off there."""
    chunks = np.asarray(pp) * np.asarray(vp)
    return (num_layers % chunks != 0) & ((num_layers + 2) % chunks == 0)


def chunk_layers(num_layers: int, pp: Any, vp: Any, split: Any) -> np.ndarray:
    """Slots per model chunk, C = slots/(pp·vp) (float64; whole when the layout is valid)."""
    return layer_slots(num_layers, split) / (np.asarray(pp) * np.asarray(vp)).astype(np.float64)


def full_stage_layers(num_layers: int, pp: Any, split: Any) -> np.ndarray:
    """Transformer layers of a pipeline rank that holds neither the embedding nor the loss."""
    return layer_slots(num_layers, split) / np.asarray(pp, dtype=np.float64)


def stage_layers(num_layers: int, pp: Any, vp: Any, split: Any, rank: Any) -> np.ndarray:
    """Transformer layers on pipeline rank `rank` (all its chunks), per layout (float64)."""
    pp, rank = np.asarray(pp), np.asarray(rank)
    on = np.asarray(split) != 0
    out = full_stage_layers(num_layers, pp, split)
    if not on.any():  # the plain split: every rank holds L/pp
        return out * np.ones(np.broadcast_shapes(np.shape(out), rank.shape, np.shape(vp)))
    return out - np.where(on & (rank == 0), 1.0, 0.0) - np.where(on & (rank == pp - 1), 1.0, 0.0)


def layer_rank_mask(
    num_layers: int, pp: np.ndarray, vp: np.ndarray, split: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """(num_layers, n) booleans: layer i sits on pipeline rank rank[k] in layout k."""
    on = (np.asarray(split) != 0).astype(np.int64)
    slots = layer_slots(num_layers, split)
    per_chunk = np.maximum(slots // (pp * vp), 1)
    slot = np.arange(num_layers)[:, None] + on[None, :]
    return (slot // per_chunk[None, :]) % pp[None, :] == rank[None, :]


def light_chunks_in_flight(
    pp: Any, vp: Any, split: Any, rank: Any, chunks_in_flight: Any
) -> np.ndarray:
    """How many of the first `chunks_in_flight` chunk forwards of the interleaved schedule run
    the one-layer-lighter chunk of `rank` (chunk 0 on rank 0, chunk vp-1 on rank pp-1).

    Megatron's interleaved order (Narayanan 2021 section 2.2.2): the k-th forward of a rank runs
    chunk (k // pp) % vp, so of N forwards chunk c runs (N // (pp·vp))·pp + clip(N mod (pp·vp)
    - c·pp, 0, pp). Both ends count on a single-rank pipeline.
    """
    pp, vp, rank = np.asarray(pp), np.asarray(vp), np.asarray(rank)
    n = np.asarray(chunks_in_flight)
    on = np.asarray(split) != 0
    if not on.any():
        return np.zeros(np.broadcast_shapes(pp.shape, vp.shape, rank.shape, n.shape, on.shape))
    cycle = pp * vp

    def runs(chunk: Any) -> np.ndarray:
        return (n // cycle) * pp + np.clip(n % cycle - chunk * pp, 0, pp)

    first = np.where(on & (rank == 0), runs(0), 0)
    last = np.where(on & (rank == pp - 1), runs(vp - 1), 0)
    return (first + last).astype(np.float64)


def moe_layer_mask(model: ModelSpec) -> np.ndarray:
    """Boolean per layer index: True where the layer's FFN is an MoE layer (as `ModelSpec` counts)."""
    idx = np.arange(model.num_layers)
    if model.moe is None:
        return np.zeros(model.num_layers, dtype=bool)
    rest = idx - model.moe.first_dense_layers
    return (rest >= 0) & (rest % model.moe.layer_freq == 0)


def layers_on_rank(
    model: ModelSpec, pp: np.ndarray, vp: np.ndarray, rank: np.ndarray, split: Any = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(dense-FFN layers, MoE layers) on pipeline rank `rank`, per layout."""
    split = np.broadcast_to(np.asarray(split, dtype=np.int64), np.shape(pp))
    if model.moe is None:  # all dense
        n = stage_layers(model.num_layers, pp, vp, split, rank)
        return n.astype(np.float64), np.zeros(np.shape(pp), dtype=np.float64)
    # a search batch has few distinct (pp, vp, split, rank): count layers once per combination
    base = int(max(np.max(pp), np.max(vp), np.max(rank), model.num_layers)) + 1
    keys = ((np.asarray(pp, dtype=np.int64) * base + vp) * base + rank) * 2 + (split != 0)
    uniq, inverse = np.unique(keys, return_inverse=True)
    u_split, rest = uniq % 2, uniq // 2
    u_pp, u_vp, u_rank = rest // (base * base), (rest // base) % base, rest % base
    on_rank = layer_rank_mask(model.num_layers, u_pp, u_vp, u_split, u_rank)
    moe = moe_layer_mask(model)[:, None]
    n_moe = (on_rank & moe).sum(axis=0).astype(np.float64)
    n_dense = (on_rank & ~moe).sum(axis=0).astype(np.float64)
    inverse = inverse.reshape(-1)
    return n_dense[inverse], n_moe[inverse]
