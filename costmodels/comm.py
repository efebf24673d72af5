"""Collective communication times (alpha-beta model), vectorized over numpy arrays.

`size_bytes` is the full buffer per rank (what NCCL calls `count * sizeof(dtype)`), `n` the group
size, `bus_bytes_per_s` the effective per-GPU ring bandwidth (`topology.group_link` times the
profile's link efficiency), `latency_s` the cost of one ring step. A group of one costs nothing.

Sources: Thakur, Rabenseifner & Gropp 2005 ("Optimization of collective communication operations
in MPICH", ring algorithms); NCCL's bus-bandwidth convention (nccl-tests PERFORMANCE.md:
all-reduce busBW = algBW * 2(n-1)/n, reduce-scatter/all-gather busBW = algBW * (n-1)/n).
"""

from __future__ import annotations

import numpy as np

ArrayLike = np.ndarray | float | int


def _n(n: ArrayLike) -> np.ndarray:
    return np.maximum(np.asarray(n, dtype=np.float64), 1.0)


def all_reduce_s(
    size_bytes: ArrayLike, n: ArrayLike, bus_bytes_per_s: ArrayLike, latency_s: ArrayLike = 0.0
) -> np.ndarray:
    """Ring all-reduce: 2(n-1)/n * S / BW + 2(n-1) * latency (Thakur et al. 2005)."""
    n = _n(n)
    steps = n - 1.0
    return 2.0 * steps / n * np.asarray(size_bytes) / bus_bytes_per_s + 2.0 * steps * latency_s


def reduce_scatter_s(
    size_bytes: ArrayLike, n: ArrayLike, bus_bytes_per_s: ArrayLike, latency_s: ArrayLike = 0.0
) -> np.ndarray:
    """Ring reduce-scatter of a buffer of S bytes: (n-1)/n * S / BW + (n-1) * latency."""
    n = _n(n)
    steps = n - 1.0
    return steps / n * np.asarray(size_bytes) / bus_bytes_per_s + steps * latency_s


def all_gather_s(
    size_bytes: ArrayLike, n: ArrayLike, bus_bytes_per_s: ArrayLike, latency_s: ArrayLike = 0.0
) -> np.ndarray:
    """Ring all-gather into a buffer of S bytes: (n-1)/n * S / BW + (n-1) * latency."""
    return reduce_scatter_s(size_bytes, n, bus_bytes_per_s, latency_s)


def all_to_all_s(
    size_bytes: ArrayLike, n: ArrayLike, bus_bytes_per_s: ArrayLike, latency_s: ArrayLike = 0.0
) -> np.ndarray:
    """All-to-all where each rank holds S bytes and keeps 1/n: (n-1)/n * S / BW + (n-1) * lat."""
    n = _n(n)
    steps = n - 1.0
    return steps / n * np.asarray(size_bytes) / bus_bytes_per_s + steps * latency_s


def p2p_s(size_bytes: ArrayLike, bytes_per_s: ArrayLike, latency_s: ArrayLike = 0.0) -> np.ndarray:
    """One point-to-point send of S bytes: S / BW + latency."""
    return np.asarray(size_bytes) / bytes_per_s + latency_s


def hierarchical_all_reduce_s(
    size_bytes: ArrayLike,
    n_local: ArrayLike,
    n_nodes: ArrayLike,
    intra_bytes_per_s: ArrayLike,
    inter_bytes_per_s: ArrayLike,
    latency_s: ArrayLike = 0.0,
) -> np.ndarray:
    """Two-level all-reduce (Jia et al. 2018; NCCL tree/CollNet style): reduce-scatter inside the
    node, all-reduce of the 1/n_local shard across nodes, all-gather inside the node.

    `inter_bytes_per_s` is the network bandwidth of one GPU.
    """
    n_local = _n(n_local)
    size = np.asarray(size_bytes, dtype=np.float64)
    intra = reduce_scatter_s(size, n_local, intra_bytes_per_s, latency_s)
    inter = all_reduce_s(size / n_local, n_nodes, inter_bytes_per_s, latency_s)
    return 2.0 * intra + inter


def exposed_after_overlap(
    comm_s: ArrayLike, compute_s: ArrayLike, overlap: ArrayLike
) -> np.ndarray:
    """Communication left on the critical path when it runs beside `compute_s` of work.

    The part longer than the compute is always exposed; of the part that fits under it, the
    fraction `overlap` is hidden (stream contention and bucket boundaries hide the rest poorly).
    """
    comm = np.asarray(comm_s, dtype=np.float64)
    compute = np.asarray(compute_s, dtype=np.float64)
    hidden_room = np.minimum(comm, compute)
    return comm - hidden_room + (1.0 - np.asarray(overlap)) * hidden_room
