"""Per-micro-batch work of the first, a middle, and the last pipeline stage (vectorized).

Each stage's time per micro-batch is split into compute and the exposed communication of each
parallel dimension; `step.py` composes the stages into a pipeline and a step.

Communication volumes per transformer layer and micro-batch of T tokens (hidden h, bf16):
- TP (Shoeybi et al. 2019, section 3): 2 all-reduces of T·h forward and 2 backward; sequence
  parallelism (Korthikanti 2022, section 4.2.2) swaps each for a reduce-scatter + all-gather of
  the same total volume. Full recompute replays the forward ones.
- CP (ring attention; Liu et al. 2023, Megatron-core context parallelism): cp-1 ring steps of the
  local K and V, overlapped with the attention core; twice that backward (K, V and their grads).
- EP (GShard, Lepikhin et al. 2020): all-to-all dispatch + combine of T·top_k·h forward, same
  backward.
- PP (Narayanan 2021, section 4.1 scatter/gather): one send of T·h/tp forward and one backward,
  per virtual stage when interleaved (section 2.2.2).
- DP: gradients reduced over dp·cp ranks once per step (all-reduce, or reduce-scatter +
  parameter all-gather when the optimizer is sharded; ZeRO, Rajbhandari et al. 2020), bucketed
  and overlapped with the last micro-batch's backward; ZeRO-3/FSDP gathers weights forward and
  backward and reduce-scatters gradients on every micro-batch, overlapped with its compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleplan.specs.efficiency import EfficiencyProfile
from scaleplan.specs.hardware import ClusterSpec
from scaleplan.specs.model import ModelSpec

from . import comm, flops
from .batch import LayoutBatch
from .compute import ACT_BYTES, layer_times
from .memory_params import stage_rank
from .stage_layers import layers_on_rank, split_code
from .topology import links_for

STAGE_NAMES = ("first", "middle", "last")


@dataclass(frozen=True)
class StageParts:
    """One stage's per-micro-batch seconds (arrays over layouts) and its per-step DP sync."""

    compute_s: np.ndarray
    tp_s: np.ndarray
    cp_s: np.ndarray
    ep_s: np.ndarray
    pp_s: np.ndarray
    overhead_s: np.ndarray
    dp_exposed_step_s: np.ndarray
    params_updated: np.ndarray  # parameters whose Adam step this GPU runs
    forward_s: np.ndarray  # the forward share of total_s (the rest is backward + recompute)

    @property
    def total_s(self) -> np.ndarray:
        return self.compute_s + self.tp_s + self.cp_s + self.ep_s + self.pp_s + self.overhead_s


def _effective_bw(cluster: ClusterSpec, prof: EfficiencyProfile, size, stride):
    bus, _cross, network = links_for(cluster, size, stride)
    eff = np.where(network, prof.network_eff, prof.nvlink_eff)
    return np.where(np.isfinite(bus), bus * eff, 1e30), network


def _unique_rows(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per distinct combination of `cols`, inverse map): cost models that
    depend on few fields run once per distinct combination, not once per layout."""
    key = np.zeros(np.asarray(cols[0]).shape, dtype=np.int64)
    for col in cols:  # mixed-radix code of the per-column ranks: exact, no hashing
        values, ranks = np.unique(np.asarray(col), return_inverse=True)
        key = key * len(values) + ranks.reshape(-1)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _stage_params(model: ModelSpec, layouts: LayoutBatch) -> list[tuple[np.ndarray, ...]]:
    """(dense params, expert params, embedding params) on one GPU of the first, a middle and the
    last stage (`memory_params.rank_params`, evaluated once per distinct tp/pp/vp/ep/etp)."""
    from .memory_params import rank_params

    first, inverse = _unique_rows(layouts.tp, layouts.pp, layouts.vp, layouts.ep, layouts.etp)
    small = layouts.select(first)
    out = []
    for stage in STAGE_NAMES:
        got = rank_params(model, small, stage)
        out.append((got.dense[inverse], got.experts[inverse], got.embedding[inverse]))
    return out


def _layer_times(model, gpu, prof, seq_length, layouts: LayoutBatch):
    first, inverse = _unique_rows(
        layouts.tp, layouts.cp, layouts.ep, layouts.etp, layouts.micro_batch,
        layouts.sequence_parallel, layouts.precision,
    )  # fmt: skip
    s = layouts.select(first)
    lt = layer_times(
        model, gpu, prof, seq_length, s.tp, s.cp, s.ep, s.etp, s.micro_batch,
        s.sequence_parallel, s.precision,
    )  # fmt: skip
    return type(lt)(**{k: v[inverse] for k, v in vars(lt).items()})


def stage_parts(
    model: ModelSpec,
    cluster: ClusterSpec,
    layouts: LayoutBatch,
    seq_length: int,
    prof: EfficiencyProfile,
) -> list[StageParts]:
    tp, pp, cp, dp, ep, etp = (
        layouts.tp, layouts.pp, layouts.cp, layouts.dp, layouts.ep, layouts.etp,
    )  # fmt: skip
    mb = layouts.micro_batch.astype(np.float64)
    lt = _layer_times(model, cluster.gpu, prof, seq_length, layouts)
    h = float(model.hidden_size)
    tokens = mb * seq_length / cp
    lat = prof.collective_latency_s
    # Rank order tp-cp-ep-dp-pp (Megatron-core default): strides of each dimension's group.
    tp_bw, _ = _effective_bw(cluster, prof, tp, np.ones_like(tp))
    cp_bw, _ = _effective_bw(cluster, prof, cp, tp)
    ep_bw, _ = _effective_bw(cluster, prof, ep, etp)
    dp_bw, _ = _effective_bw(cluster, prof, dp * cp, tp)
    _pp_bus, pp_net = _effective_bw(cluster, prof, pp, tp * cp * dp)
    # A p2p send uses one GPU's port: its NIC across nodes, its NVLink inside the domain.
    pp_bw = np.where(
        pp_net,
        cluster.nic_bytes_per_s * prof.network_eff,
        cluster.gpu.nvlink_bytes_per_s_per_direction * prof.nvlink_eff,
    )
    # --- per layer, per micro-batch communication -------------------------------------------
    act_bytes = tokens * h * ACT_BYTES
    tp_one = np.where(tp > 1, comm.all_reduce_s(act_bytes, tp, tp_bw, lat), 0.0)
    tp_keep = 1.0 - prof.tp_overlap
    kv_heads_local = np.maximum(model.kv_heads / tp, 1.0)
    kv_bytes = tokens * 2.0 * kv_heads_local * model.head_size * ACT_BYTES
    cp_fwd = np.where(cp > 1, (cp - 1.0) * comm.p2p_s(kv_bytes, cp_bw, lat), 0.0)
    cp_fwd_exposed = comm.exposed_after_overlap(cp_fwd, lt.attn_core_fwd_s, 1.0)
    cp_bwd_exposed = comm.exposed_after_overlap(2.0 * cp_fwd, lt.attn_core_bwd_s, 1.0)
    ep_fwd = 0.0
    if model.moe is not None:
        # Each rank dispatches its own tokens: with TP that is its sequence-parallel shard
        # (Megatron-core MoELayer needs sequence_parallel with tp>1; MoEAlltoAllTokenDispatcher
        # all-to-alls the shard over EP, then all-gathers over expert TP, counted in tp_layer).
        sp_shard = np.where(layouts.sequence_parallel > 0, tp, 1).astype(np.float64)
        a2a_bytes = tokens * model.moe.top_k * h * ACT_BYTES / sp_shard
        ep_fwd = np.where(ep > 1, 2.0 * comm.all_to_all_s(a2a_bytes, ep, ep_bw, lat), 0.0)
    p2p_one = np.where(pp > 1, comm.p2p_s(act_bytes / tp, pp_bw, lat), 0.0)
    # --- recompute ---------------------------------------------------------------------------
    full = layouts.recompute == 2
    selective = layouts.recompute == 1
    split = split_code(layouts)
    frac = np.asarray(
        flops.recompute_layers_fraction(
            model.num_layers, pp, layouts.recompute_layers, split, layouts.vp
        )
    )
    frac = np.where(full, frac, 0.0) * np.ones_like(mb)
    # Interleaving sends at every virtual-stage boundary: v times the p2p traffic per micro-batch
    # (Narayanan et al. 2021, section 2.2.2); Megatron-core overlaps the sends between a stage's
    # own chunks with the next chunk's compute (overlap_p2p_comm), so only their excess shows.
    inner_p2p = 2.0 * (layouts.vp.astype(np.float64) - 1.0) * p2p_one
    host = prof.layer_host_s

    def layer_work(n_dense: np.ndarray, n_moe: np.ndarray) -> dict[str, np.ndarray]:
        """Per-micro-batch work of a stage's n_dense dense-FFN and n_moe MoE layers."""
        layers = n_dense + n_moe
        per_layer = np.maximum(layers, 1.0)  # a stage may hold no layer (balanced layout)
        fwd = n_dense * lt.dense_fwd_s
        bwd = n_dense * lt.dense_bwd_s
        if model.moe is not None:
            fwd = fwd + n_moe * lt.moe_fwd_s
            bwd = bwd + n_moe * lt.moe_bwd_s
        recompute = frac * fwd + np.where(selective, layers * lt.attn_core_fwd_s, 0.0)
        # TP: 2 collectives per dense layer, 1 (+1 with expert TP) per MoE layer, per pass.
        tp_layer = n_dense * 2.0 * tp_one
        if model.moe is not None:
            tp_layer = tp_layer + n_moe * np.where(etp > 1, 2.0, 1.0) * tp_one
        ep_s = n_moe * ep_fwd * (2.0 + frac)
        # Host-bound layers (efficiency.layer_host_s): a pass waits for its kernel launches.
        fwd_layer = (fwd + tp_keep * tp_layer + ep_s / (2.0 + frac)) / per_layer + cp_fwd_exposed
        bwd_layer = (bwd + tp_keep * tp_layer + ep_s / (2.0 + frac)) / per_layer + cp_bwd_exposed
        # An MoE layer's forward cannot be launched ahead: Megatron-core's dropless all-to-all
        # dispatcher copies the per-expert token counts to the host (the all-to-all split sizes
        # and grouped-GEMM sizes) and waits for them, so the layer's remaining launches
        # (moe_layer_host_s) run while the GPU idles. The backward reuses the forward's splits.
        moe_sync = prof.moe_layer_host_s * n_moe / per_layer
        host_wait = (np.maximum(host - fwd_layer, 0.0) + moe_sync) * (1.0 + frac) + np.maximum(
            2.0 * (host + moe_sync) - bwd_layer, 0.0
        )
        return {
            "fwd": fwd,
            "bwd": bwd,
            "recompute": recompute,
            "body": fwd + bwd + recompute,
            "tp_s": tp_keep * tp_layer * (2.0 + frac),
            "cp_s": layers * (cp_fwd_exposed * (1.0 + frac) + cp_bwd_exposed),
            "ep_s": ep_s * np.ones_like(mb),
            "overhead_s": layers * host_wait,
            # forward share of a micro-batch's layer work (for event-level pipeline timelines)
            "forward_s": layers * (np.maximum(fwd_layer, host) + moe_sync),
        }

    # --- the transformer layers of each stage (costmodels.stage_layers: L/pp; one fewer on the
    # first and last stages when the embedding and loss count as layers; the balanced layout's
    # short last chunk), dense and MoE layers counted per layer index (DeepSeek-V3's first 3
    # layers are dense, on the first stage).
    vp = layouts.vp
    work = {
        name: layer_work(*layers_on_rank(model, pp, vp, stage_rank(name, pp), split))
        for name in STAGE_NAMES
    }
    # --- parameters and DP sync (differ per stage: embedding and LM head) ---------------------
    zero = layouts.zero_stage
    sharded = (layouts.distributed_optimizer > 0) | (zero >= 1)
    grad_bytes = np.where(layouts.precision == 1, 2.0, 4.0)  # fp32 main grads unless fp16
    m = np.maximum(layouts.num_microbatches, 1).astype(np.float64)
    dpcp = (dp * cp).astype(np.float64)
    # Routed experts reduce over the expert-DP group (Megatron-core expert rank order
    # etp-ep-edp-pp over the tp·cp·dp ranks): edp = tp·cp·dp/(etp·ep) ranks spaced by etp·ep,
    # so it has its own placement and links (often one member per node, one NIC).
    edp = np.maximum(dpcp * tp / (etp * ep), 1.0)
    edp_bw, _ = _effective_bw(cluster, prof, edp.astype(np.int64), etp * ep)
    # Unsharded: all-reduce = 2 x reduce-scatter; sharded: reduce-scatter + weight all-gather.
    ar_factor = np.where(sharded, 1.0, 2.0)
    overlap_grad = layouts.overlap_grad_reduce > 0
    overlap_param = layouts.overlap_param_gather > 0
    ends_first = {"first": np.ones_like(mb, dtype=bool), "middle": pp == 1, "last": pp == 1}
    ends_last = {"first": pp == 1, "middle": pp == 1, "last": np.ones_like(mb, dtype=bool)}
    out: list[StageParts] = []
    for (p_dense, p_exp, p_emb), name in zip(
        _stage_params(model, layouts), STAGE_NAMES, strict=True
    ):
        w = work[name]
        stage_pp_s = 2.0 * p2p_one + comm.exposed_after_overlap(inner_p2p, w["body"], 1.0)
        head = np.where(ends_last[name], lt.head_fwd_s + lt.head_bwd_s, 0.0)
        embed = np.where(ends_first[name], lt.embed_fwd_s + lt.embed_bwd_s, 0.0)
        head_embed_fwd = np.where(ends_last[name], lt.head_fwd_s, 0.0) + np.where(
            ends_first[name], lt.embed_fwd_s, 0.0
        )
        compute = w["body"] + head + embed
        params = p_dense + p_emb + p_exp
        grad_sync = ar_factor * comm.reduce_scatter_s(
            (p_dense + p_emb) * grad_bytes, dpcp, dp_bw, lat
        )
        if model.moe is not None:
            grad_sync = grad_sync + ar_factor * comm.reduce_scatter_s(
                p_exp * grad_bytes, edp, edp_bw, lat
            )
        param_gather = np.where(
            sharded,
            comm.all_gather_s((p_dense + p_emb) * ACT_BYTES, dpcp, dp_bw, lat)
            + comm.all_gather_s(p_exp * ACT_BYTES, edp, edp_bw, lat),
            0.0,
        )
        grad_exposed = np.where(
            overlap_grad,
            comm.exposed_after_overlap(grad_sync, w["bwd"] + w["recompute"], prof.dp_overlap),
            grad_sync,
        )
        gather_exposed = np.where(
            overlap_param,
            comm.exposed_after_overlap(param_gather, w["fwd"], prof.dp_overlap),
            param_gather,
        )
        # ZeRO-3 / FSDP: every micro-batch gathers the weights twice (forward, backward) and
        # reduce-scatters bf16 gradients, overlapped with that micro-batch's compute.
        z3_comm = 3.0 * (
            comm.all_gather_s((p_dense + p_emb) * ACT_BYTES, dpcp, dp_bw, lat)
            + comm.all_gather_s(p_exp * ACT_BYTES, edp, edp_bw, lat)
        )
        z3_exposed = m * comm.exposed_after_overlap(z3_comm, compute, prof.dp_overlap)
        dp_exposed = np.where(
            dpcp > 1, np.where(zero >= 3, z3_exposed, grad_exposed + gather_exposed), 0.0
        )
        updated = np.where(sharded, (p_dense + p_emb) / dpcp + p_exp / edp, params)
        out.append(
            StageParts(
                compute_s=compute,
                tp_s=w["tp_s"],
                cp_s=w["cp_s"],
                ep_s=w["ep_s"],
                pp_s=stage_pp_s,
                overhead_s=w["overhead_s"] + prof.microbatch_overhead_s,
                dp_exposed_step_s=dp_exposed,
                params_updated=updated,
                forward_s=w["forward_s"]
                + stage_pp_s / 2.0
                + prof.microbatch_overhead_s / 2.0
                + head_embed_fwd,
            )
        )
    return out
