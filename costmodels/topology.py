"""The cluster as a networkx graph, and where each parallel group of a layout lands on it.

Graph: every GPU links to its NVLink domain's switch (NVSwitch, or the xGMI fabric) and to its own
NIC; NICs link to the leaf switch of their rail (rail-optimized, as in NVIDIA DGX SuperPOD
reference architectures) or of their node's leaf (fat-tree); leaves link to a spine whose uplinks
carry `1/oversubscription` of the leaves' downlink bandwidth.

Ranks are placed in the layout's rank order, innermost first (Megatron-core's default
`tp-cp-ep-dp-pp`): a dimension's group is `size` ranks spaced by `stride` = the product of the
sizes of the dimensions inside it. `group_link` gives the group's effective bus bandwidth for
ring collectives and whether it leaves the NVLink domain. Results are cached per
(cluster, size, stride), so vectorized evaluation of many layouts touches the graph once per
distinct group shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import networkx as nx
import numpy as np

from scaleplan.specs.hardware import ClusterSpec

# Nodes per leaf switch (one scalable unit of a DGX SuperPOD: 32 nodes, NVIDIA DGX SuperPOD
# reference architecture, DGX A100/H100). Beyond it, traffic crosses the spine.
NODES_PER_LEAF = 32

DIMENSIONS = ("tp", "cp", "ep", "dp", "pp")


@dataclass(frozen=True)
class GroupLink:
    """Where one communication group sits and how fast a ring collective over it runs."""

    size: int
    stride: int
    crosses_nodes: bool
    crosses_nvlink_domain: bool
    members_per_domain: int  # group members inside one NVLink domain
    bus_bytes_per_s: float  # raw (before efficiency) per-GPU ring bandwidth, one direction
    link: str  # 'self', 'nvlink' or 'network': the bottleneck


def _cluster_key(cluster: ClusterSpec) -> tuple:
    return (
        cluster.num_gpus,
        cluster.gpus_per_node,
        cluster.nvlink_domain_size,
        cluster.gpu.nvlink_bytes_per_s_per_direction,
        cluster.nic_bytes_per_s,
        cluster.oversubscription,
        cluster.inter_node_topology,
    )


@functools.lru_cache(maxsize=32)
def _graph(key: tuple) -> nx.Graph:
    """Leaves and spine; GPUs and NICs attach on first use (`_add_gpu`)."""
    num_gpus, per_node, domain, nvlink_bps, nic_bps, oversub, topo = key
    g = nx.Graph()
    num_nodes = max(1, -(-num_gpus // per_node))
    num_leaves = max(1, -(-num_nodes // NODES_PER_LEAF))
    rails = per_node if topo == "rail-optimized" else 1
    g.add_node("spine", kind="spine")
    for leaf in range(num_leaves):
        for rail in range(rails):
            name = f"leaf{leaf}.{rail}"
            g.add_node(name, kind="leaf")
            # Leaf uplink: the downlink bandwidth of its NICs divided by the oversubscription.
            nics_below = min(NODES_PER_LEAF, num_nodes) * (per_node // rails)
            g.add_edge(name, "spine", bytes_per_s=nics_below * nic_bps / oversub, kind="uplink")
    return g


def _add_gpu(g: nx.Graph, key: tuple, rank: int) -> None:
    """Attach GPU `rank`, its NIC and their links to the graph (idempotent).

    GPUs are attached on first use: a group query touches only its members, so a 16k-GPU
    cluster costs a few dozen nodes per distinct group shape instead of 32k up front.
    """
    gpu = f"gpu{rank}"
    if gpu in g:
        return
    _, per_node, domain, nvlink_bps, nic_bps, _, topo = key
    rails = per_node if topo == "rail-optimized" else 1
    node, domain_id = rank // per_node, rank // domain
    nic = f"nic{rank}"
    g.add_node(gpu, kind="gpu", node=node, domain=domain_id)
    g.add_node(nic, kind="nic", node=node)
    g.add_edge(gpu, f"nvswitch{domain_id}", bytes_per_s=nvlink_bps, kind="nvlink")
    g.add_edge(gpu, nic, bytes_per_s=nic_bps, kind="pcie")
    leaf = f"leaf{node // NODES_PER_LEAF}.{rank % per_node if rails > 1 else 0}"
    g.add_edge(nic, leaf, bytes_per_s=nic_bps, kind="network")


def cluster_graph(cluster: ClusterSpec) -> nx.Graph:
    """The cluster's graph (GPUs, NVSwitches, NICs, leaves, spine); edges carry `bytes_per_s`."""
    key = _cluster_key(cluster)
    g = _graph(key)
    for rank in range(key[0]):
        _add_gpu(g, key, rank)
    return g


@functools.lru_cache(maxsize=4096)
def _group_link(key: tuple, size: int, stride: int) -> GroupLink:
    if size <= 1:
        return GroupLink(size, stride, False, False, 1, float("inf"), "self")
    g = _graph(key)
    num_gpus, per_node, domain = key[0], key[1], key[2]
    members = (np.arange(size, dtype=np.int64) * stride) % max(num_gpus, 1)
    # `_add_gpu`'s placement rule (node = rank // gpus_per_node, domain = rank // domain size),
    # vectorized: an 8k-member DP group needs no 8k graph look-ups. The links are read from the
    # graph for the members in the first member's NVLink domain.
    nodes, domains = members // per_node, members // domain
    per_domain = int(np.count_nonzero(domains == domains[0]))
    for rank in members[:per_domain].tolist():
        _add_gpu(g, key, rank)
    nvlink_bps = g.edges[f"gpu{members[0]}", f"nvswitch{domains[0]}"]["bytes_per_s"]
    crosses_nodes = bool(np.any(nodes != nodes[0]))
    if per_domain == size:
        return GroupLink(size, stride, crosses_nodes, False, size, nvlink_bps, "nvlink")
    # A ring leaving the domain: NCCL runs one ring per NIC, so the group's share of the network
    # per domain is the NICs of its members there (rail-optimized: one NIC per GPU); each member
    # also forwards the ring's traffic over its NVLink port (min of the two).
    nic_bps = sum(
        g.edges[f"gpu{r}", f"nic{r}"]["bytes_per_s"] for r in members[:per_domain].tolist()
    )
    network_bps = nic_bps
    if np.any(
        nodes // NODES_PER_LEAF != nodes[0] // NODES_PER_LEAF
    ):  # crossing the spine: the leaf uplinks carry 1/oversubscription
        network_bps = nic_bps / key[5]
    bus = min(network_bps, nvlink_bps) if per_domain > 1 else network_bps
    return GroupLink(size, stride, crosses_nodes, True, per_domain, bus, "network")


def group_link(cluster: ClusterSpec, size: int, stride: int) -> GroupLink:
    """The placement and ring bus bandwidth of a group of `size` ranks spaced by `stride`."""
    return _group_link(_cluster_key(cluster), int(size), int(stride))


def dimension_strides(sizes: dict[str, np.ndarray], rank_order: str = "tp-cp-ep-dp-pp") -> dict:
    """Stride of each dimension's group for a rank order, innermost first (vectorized).

    EP is carved out of DP x CP (Megatron-core expert parallelism), so the `ep` entry of the order
    contributes no extra ranks: its stride is the product of the dimensions inside it, and the DP
    stride skips it.
    """
    strides: dict[str, np.ndarray] = {}
    acc = np.ones_like(np.asarray(sizes["tp"]))
    for dim in rank_order.split("-"):
        strides[dim] = acc
        if dim != "ep":
            acc = acc * np.asarray(sizes[dim])
    return strides


def links_for(cluster: ClusterSpec, size: np.ndarray, stride: np.ndarray) -> tuple[np.ndarray, ...]:
    """Vectorized `group_link`: (bus_bytes_per_s, crosses_nodes, is_network) arrays.

    Distinct (size, stride) pairs are looked up once each; the rest is numpy indexing.
    """
    size = np.asarray(size, dtype=np.int64)
    stride = np.asarray(stride, dtype=np.int64)
    shape = size.shape
    key = _cluster_key(cluster)
    flat_size, flat_stride = size.reshape(-1), np.broadcast_to(stride, shape).reshape(-1)
    if flat_size.size <= 64:  # small batches: the lru_cache is faster than np.unique
        links = [
            _group_link(key, s, st)
            for s, st in zip(flat_size.tolist(), flat_stride.tolist(), strict=False)
        ]
        bus = np.array([lk.bus_bytes_per_s for lk in links]).reshape(shape)
        cross = np.array([lk.crosses_nodes for lk in links], dtype=bool).reshape(shape)
        net = np.array([lk.link == "network" for lk in links], dtype=bool).reshape(shape)
        return bus, cross, net
    combined = flat_size * (1 << 32) + flat_stride
    uniq, inverse = np.unique(combined, return_inverse=True)
    bus = np.empty(len(uniq))
    cross = np.empty(len(uniq), dtype=bool)
    net = np.empty(len(uniq), dtype=bool)
    for i, code in enumerate(uniq.tolist()):
        link = _group_link(key, code >> 32, code & 0xFFFFFFFF)
        bus[i], cross[i], net[i] = link.bus_bytes_per_s, link.crosses_nodes, link.link == "network"
    inverse = inverse.reshape(-1)
    return bus[inverse].reshape(shape), cross[inverse].reshape(shape), net[inverse].reshape(shape)
