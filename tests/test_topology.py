"""Topology placement: a group inside one NVLink domain uses NVLink; one spanning nodes does not."""

from __future__ import annotations

import numpy as np
import pytest

from scaleplan.costmodels.topology import cluster_graph, dimension_strides, group_link, links_for
from scaleplan.specs.hardware import make_cluster


@pytest.fixture(scope="module")
def dgx() -> object:
    return make_cluster("A100-SXM4-80GB", 64)  # 8 nodes of 8, 200 Gb/s per GPU


def test_graph_has_gpus_switches_nics_and_spine(dgx) -> None:
    g = cluster_graph(dgx)
    kinds = [d["kind"] for _, d in g.nodes(data=True) if "kind" in d]
    assert kinds.count("gpu") == 64 and kinds.count("nic") == 64
    assert g.has_edge("gpu0", "nvswitch0") and g.has_edge("gpu8", "nvswitch1")
    assert g.edges["gpu0", "nic0"]["bytes_per_s"] == pytest.approx(25e9)


def test_tp_inside_a_node_uses_nvlink(dgx) -> None:
    link = group_link(dgx, 8, 1)
    assert link.link == "nvlink" and not link.crosses_nodes
    assert link.bus_bytes_per_s == pytest.approx(dgx.gpu.nvlink_bytes_per_s_per_direction)


def test_tp_spanning_nodes_uses_the_network(dgx) -> None:
    link = group_link(dgx, 16, 1)
    assert link.crosses_nodes and link.link == "network"
    # 8 members per node, one NIC each (rail-optimized): 8 x 25 GB/s, capped by NVLink.
    assert link.bus_bytes_per_s == pytest.approx(min(8 * 25e9, 300e9))
    assert link.bus_bytes_per_s < group_link(dgx, 8, 1).bus_bytes_per_s


def test_strided_dp_group_gets_one_nic(dgx) -> None:
    # tp=8 inside each node: the DP group has one member per node, so one NIC's bandwidth.
    link = group_link(dgx, 8, 8)
    assert link.crosses_nodes and link.members_per_domain == 1
    assert link.bus_bytes_per_s == pytest.approx(25e9)
    # tp=2: four members per node share the ring's network traffic over four NICs.
    assert group_link(dgx, 32, 2).bus_bytes_per_s == pytest.approx(4 * 25e9)


def test_group_of_one_is_free(dgx) -> None:
    assert group_link(dgx, 1, 4).bus_bytes_per_s == float("inf")


def test_spine_oversubscription_slows_groups_beyond_a_leaf() -> None:
    big = make_cluster("H100", 8 * 64, oversubscription=2.0)  # 64 nodes: two leaves of 32
    flat = make_cluster("H100", 8 * 64)
    within = group_link(big, 32, 8)  # 32 nodes: one leaf
    across = group_link(big, 64, 8)  # 64 nodes: through the spine
    assert within.bus_bytes_per_s == pytest.approx(group_link(flat, 32, 8).bus_bytes_per_s)
    assert across.bus_bytes_per_s == pytest.approx(within.bus_bytes_per_s / 2.0)


def test_nvl72_domain_keeps_cross_node_tp_on_nvlink() -> None:
    gb = make_cluster("GB200", 72)
    link = group_link(gb, 16, 1)  # 4 trays of 4 GPUs, one NVLink domain
    assert link.crosses_nodes and link.link == "nvlink"


def test_links_for_matches_scalar_lookup(dgx) -> None:
    size = np.array([1, 2, 8, 16, 8, 32] * 20)
    stride = np.array([1, 1, 1, 1, 8, 2] * 20)
    bus, cross, net = links_for(dgx, size, stride)
    for i in range(6):
        link = group_link(dgx, int(size[i]), int(stride[i]))
        assert bus[i] == link.bus_bytes_per_s
        assert cross[i] == link.crosses_nodes
        assert net[i] == (link.link == "network")


def test_rank_order_strides() -> None:
    sizes = {k: np.array([v]) for k, v in dict(tp=4, cp=2, ep=2, dp=8, pp=2).items()}
    strides = dimension_strides(sizes)
    assert {k: int(v[0]) for k, v in strides.items()} == {
        "tp": 1,
        "cp": 4,
        "ep": 8,
        "dp": 8,
        "pp": 64,
    }
