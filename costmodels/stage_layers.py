"""Transformer layers per pipeline rank and model chunk: the one definition (vectorized).

Megatron-core (core v0.16, `transformer_block.get_num_layers_to_build` and
`transformer_layer.get_transformer_layer_offset`) splits L layers into K = pp·vp model chunks
of C = L/K layers; chunk c of pipeline rank r (virtual stage k = c·pp + r) holds layers
[k·C, (k + 1)·C). vp = 1 is the plain, contiguous split.

Three splits, coded per layout by `split_code` (EVEN 0, EMBEDDING_LOSS 1, BALANCED 2):
- EMBEDDING_LOSS: `TransformerConfig.account_for_embedding_in_pipeline_split` and
  `account_for_loss_in_pipeline_split` (our `LayoutSpec.account_embedding_loss_in_pipeline_split`):
  the embedding and the loss count as one layer each, L + 2 slots split into chunks of
  C = (L+2)/K, slot 0 is the embedding, slot L+1 the loss and transformer layer i sits in
  slot i+1. The first chunk of rank 0 and the last chunk of rank pp-1 hold C-1 layers.
- BALANCED: `TransformerConfig.pipeline_model_parallel_layout` as Megatron-Bridge's DeepSeek-V3
  recipes build it (our `LayoutSpec.balanced_pipeline_layout`): a = ceil(L/K) layers on each
  of the virtual stages 0..K-2 (stage 0 also holds the embedding), the remaining L - a·(K-1)
  (>= 0) and the loss on stage K-1, so layer i sits on virtual stage i // a. Only the last
  chunk of rank pp-1 is short, by a·K - L layers.

`split` arguments are such codes (0/1 booleans read as EVEN/EMBEDDING_LOSS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scaleplan.specs.layout import balanced_chunk_layers
from scaleplan.specs.model import ModelSpec

EVEN, EMBEDDING_LOSS, BALANCED = 0, 1, 2


def split_code(layouts: Any) -> np.ndarray:
    """The pipeline split of a `LayoutSpec` or of each layout of a `LayoutBatch` (int64)."""
    emb = np.asarray(layouts.account_embedding_loss_in_pipeline_split) != 0
    bal = np.asarray(layouts.balanced_pipeline_layout) != 0
    return np.where(bal, BALANCED, np.where(emb, EMBEDDING_LOSS, EVEN)).astype(np.int64)


def _code(split: Any) -> np.ndarray:
    return np.asarray(split).astype(np.int64)


def embedding_loss_split(num_layers: int, pp: Any, vp: Any) -> Any:
    """Where to count the embedding and the loss as pipeline layers (Megatron-core
    account_for_embedding/loss_in_pipeline_split): exactly where num_layers does not divide by
    pp*vp and num_layers + 2 does. Where both divide, pp*vp divides 2 and the two splits put the
    same layers on every stage, so nothing is lost by leaving the option off there."""
    chunks = np.asarray(pp) * np.asarray(vp)
    return (num_layers % chunks != 0) & ((num_layers + 2) % chunks == 0)


def balanced_layout(num_layers: int, pp: Any, vp: Any) -> Any:
    """Where to use the balanced layout: neither num_layers nor num_layers + 2 divides by pp*vp
    and ceil(L/(pp*vp)) layers per chunk leave the last chunk >= 0 layers."""
    chunks = np.asarray(pp) * np.asarray(vp)
    _, last = balanced_chunk_layers(num_layers, chunks)
    return (num_layers % chunks != 0) & ((num_layers + 2) % chunks != 0) & (last >= 0)


def chunk_layers(num_layers: int, pp: Any, vp: Any, split: Any) -> np.ndarray:
    """Transformer layers (embedding/loss split: slots) of a full model chunk (float64; whole
    when the layout is valid): L/K, (L+2)/K, or ceil(L/K) balanced."""
    code, chunks = _code(split), np.asarray(pp) * np.asarray(vp)
    slots = num_layers + 2 * (code == EMBEDDING_LOSS)
    full, _ = balanced_chunk_layers(num_layers, chunks)
    return np.where(code == BALANCED, full, slots / chunks.astype(np.float64))


def short_chunks(num_layers: int, pp: Any, vp: Any, split: Any) -> tuple[np.ndarray, np.ndarray]:
    """(layers the first chunk of rank 0 lacks, layers the last chunk of rank pp-1 lacks) with
    respect to a full chunk: 1 and 1 with the embedding/loss split, 0 and a·K - L balanced."""
    code = _code(split)
    full, last = balanced_chunk_layers(num_layers, np.asarray(pp) * np.asarray(vp))
    first = (code == EMBEDDING_LOSS).astype(np.float64)
    return first, np.where(code == BALANCED, full - last, first).astype(np.float64)


def full_stage_layers(num_layers: int, pp: Any, vp: Any, split: Any) -> np.ndarray:
    """Transformer layers of a pipeline rank none of whose chunks is short (the busiest):
    L/pp, (L+2)/pp with the embedding/loss split, vp·ceil(L/(pp·vp)) balanced."""
    code = _code(split)
    slots = num_layers + 2 * (code == EMBEDDING_LOSS)
    per_stage = slots / np.asarray(pp, dtype=np.float64)
    if not (code == BALANCED).any():
        return per_stage
    full, _ = balanced_chunk_layers(num_layers, np.asarray(pp) * np.asarray(vp))
    return np.where(code == BALANCED, np.asarray(vp) * full, per_stage).astype(np.float64)


def stage_layers(num_layers: int, pp: Any, vp: Any, split: Any, rank: Any) -> np.ndarray:
    """Transformer layers on pipeline rank `rank` (all its chunks), per layout (float64)."""
    pp, rank = np.asarray(pp), np.asarray(rank)
    code = _code(split)
    out = full_stage_layers(num_layers, pp, vp, code)
    if not (code != EVEN).any():  # the plain split: every rank holds L/pp
        return out * np.ones(np.broadcast_shapes(np.shape(out), rank.shape, np.shape(vp)))
    first, last = short_chunks(num_layers, pp, vp, code)
    return out - np.where(rank == 0, first, 0.0) - np.where(rank == pp - 1, last, 0.0)


def layer_virtual_stage(num_layers: int, pp: Any, vp: Any, split: Any) -> np.ndarray:
    """(num_layers, n) ints: the virtual stage (model chunk c·pp + r) layer i sits on in layout k:
    i // C (even), (i + 1) // C (embedding/loss split), i // ceil(L/K) (balanced)."""
    pp, vp = np.atleast_1d(pp), np.atleast_1d(vp)
    code = np.broadcast_to(_code(split), pp.shape)
    emb = (code == EMBEDDING_LOSS).astype(np.int64)
    per_chunk = np.maximum(-(-(num_layers + 2 * emb) // (pp * vp)), 1)
    slot = np.arange(num_layers)[:, None] + emb[None, :]
    return slot // per_chunk[None, :]


def layer_rank_mask(
    num_layers: int, pp: np.ndarray, vp: np.ndarray, split: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """(num_layers, n) booleans: layer i sits on pipeline rank rank[k] in layout k."""
    stage = layer_virtual_stage(num_layers, pp, vp, split)
    return stage % np.atleast_1d(pp)[None, :] == np.atleast_1d(rank)[None, :]


def chunk_layer_counts(num_layers: int, pp: int, vp: int, split: int) -> list[int]:
    """Transformer layers of each model chunk, in virtual-stage order (chunk k on pipeline
    rank k % pp, model chunk k // pp)."""
    stage = layer_virtual_stage(num_layers, pp, vp, split)[:, 0]
    return [int(n) for n in np.bincount(stage, minlength=pp * vp)]


def short_layers_in_flight(
    num_layers: int, pp: Any, vp: Any, split: Any, rank: Any, chunks_in_flight: Any
) -> np.ndarray:
    """Layers that the first `chunks_in_flight` chunk forwards of the interleaved schedule on
    `rank` lack against as many full chunks: the short chunk (chunk 0 of rank 0, chunk vp-1 of
    rank pp-1) times how often it ran.

    Megatron's interleaved order (Narayanan 2021 section 2.2.2): the k-th forward of a rank runs
    chunk (k // pp) % vp, so of N forwards chunk c runs (N // (pp·vp))·pp + clip(N mod (pp·vp)
    - c·pp, 0, pp). Both ends count on a single-rank pipeline.
    """
    pp, vp, rank = np.asarray(pp), np.asarray(vp), np.asarray(rank)
    n = np.asarray(chunks_in_flight)
    code = _code(split)
    if not (code != EVEN).any():
        return np.zeros(np.broadcast_shapes(pp.shape, vp.shape, rank.shape, n.shape, code.shape))
    cycle = pp * vp

    def runs(chunk: Any) -> np.ndarray:
        return (n // cycle) * pp + np.clip(n % cycle - chunk * pp, 0, pp)

    first, last = short_chunks(num_layers, pp, vp, code)
    at_first = np.where(rank == 0, first * runs(0), 0.0)
    at_last = np.where(rank == pp - 1, last * runs(vp - 1), 0.0)
    return (at_first + at_last).astype(np.float64)


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
    split = np.broadcast_to(_code(split), np.shape(pp))
    if model.moe is None:  # all dense
        n = stage_layers(model.num_layers, pp, vp, split, rank)
        return n.astype(np.float64), np.zeros(np.shape(pp), dtype=np.float64)
    # a search batch has few distinct (pp, vp, split, rank): count layers once per combination
    base = int(max(np.max(pp), np.max(vp), np.max(rank), model.num_layers)) + 1
    keys = ((np.asarray(pp, dtype=np.int64) * base + vp) * base + rank) * 3 + split
    uniq, inverse = np.unique(keys, return_inverse=True)
    u_split, rest = uniq % 3, uniq // 3
    u_pp, u_vp, u_rank = rest // (base * base), (rest // base) % base, rest % base
    on_rank = layer_rank_mask(model.num_layers, u_pp, u_vp, u_split, u_rank)
    moe = moe_layer_mask(model)[:, None]
    n_moe = (on_rank & moe).sum(axis=0).astype(np.float64)
    n_dense = (on_rank & ~moe).sum(axis=0).astype(np.float64)
    inverse = inverse.reshape(-1)
    return n_dense[inverse], n_moe[inverse]
