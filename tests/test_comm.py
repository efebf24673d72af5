"""Collective costs against their closed forms (Thakur et al. 2005; nccl-tests conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaleplan.costmodels import comm

SIZES = st.floats(min_value=1.0, max_value=1e11)
GROUPS = st.integers(min_value=1, max_value=4096)
BW = st.floats(min_value=1e8, max_value=1e13)
LAT = st.floats(min_value=0.0, max_value=1e-3)


@given(SIZES, GROUPS, BW, LAT)
def test_all_reduce_is_ring_closed_form(size: float, n: int, bw: float, lat: float) -> None:
    expected = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * lat
    assert float(comm.all_reduce_s(size, n, bw, lat)) == pytest.approx(expected, rel=1e-12)


@given(SIZES, GROUPS, BW, LAT)
def test_reduce_scatter_and_all_gather_are_half_an_all_reduce(
    size: float, n: int, bw: float, lat: float
) -> None:
    rs = float(comm.reduce_scatter_s(size, n, bw, lat))
    ag = float(comm.all_gather_s(size, n, bw, lat))
    assert rs == pytest.approx((n - 1) / n * size / bw + (n - 1) * lat, rel=1e-12)
    assert ag == pytest.approx(rs, rel=1e-12)
    assert rs + ag == pytest.approx(float(comm.all_reduce_s(size, n, bw, lat)), rel=1e-9)


@given(SIZES, GROUPS, BW, LAT)
def test_all_to_all_and_p2p(size: float, n: int, bw: float, lat: float) -> None:
    assert float(comm.all_to_all_s(size, n, bw, lat)) == pytest.approx(
        (n - 1) / n * size / bw + (n - 1) * lat, rel=1e-12
    )
    assert float(comm.p2p_s(size, bw, lat)) == pytest.approx(size / bw + lat, rel=1e-12)


def test_a_group_of_one_costs_nothing() -> None:
    for fn in (comm.all_reduce_s, comm.reduce_scatter_s, comm.all_gather_s, comm.all_to_all_s):
        assert float(fn(1e9, 1, 1e9, 1e-5)) == 0.0


def test_vectorized_over_arrays() -> None:
    n = np.array([1, 2, 8, 64])
    got = comm.all_reduce_s(np.full(4, 1e9), n, 1e11, 0.0)
    assert got.shape == (4,)
    assert np.all(np.diff(got) > 0)  # 2(n-1)/n grows with n


def test_hierarchical_all_reduce_matches_its_three_phases() -> None:
    size, local, nodes, intra, inter = 4e9, 8, 16, 2e11, 2.5e10
    expected = (
        2 * (local - 1) / local * size / intra  # reduce-scatter + all-gather in the node
        + 2 * (nodes - 1) / nodes * (size / local) / inter  # all-reduce of the shard
    )
    got = float(comm.hierarchical_all_reduce_s(size, local, nodes, intra, inter))
    assert got == pytest.approx(expected, rel=1e-12)
    # One node: just the intra-node all-reduce.
    one = float(comm.hierarchical_all_reduce_s(size, local, 1, intra, inter))
    assert one == pytest.approx(float(comm.all_reduce_s(size, local, intra)), rel=1e-12)


@given(st.floats(0, 10), st.floats(0, 10), st.floats(0, 1))
def test_exposed_after_overlap_bounds(c: float, w: float, ov: float) -> None:
    exposed = float(comm.exposed_after_overlap(c, w, ov))
    assert max(0.0, c - w) - 1e-12 <= exposed <= c + 1e-12
    assert float(comm.exposed_after_overlap(c, w, 0.0)) == pytest.approx(c)
    assert float(comm.exposed_after_overlap(c, w, 1.0)) == pytest.approx(max(0.0, c - w))
