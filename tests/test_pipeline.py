"""Pipeline schedules: the event simulation against the 1F1B and interleaved bubble formulas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleplan.costmodels.pipeline import (
    bubble_fraction,
    pipeline_time_s,
    simulate_schedule,
)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 24), st.floats(0.1, 5.0), st.floats(0.1, 5.0))
def test_1f1b_matches_closed_form(p: int, m: int, f: float, b: float) -> None:
    tl = simulate_schedule([f] * p, [b] * p, m)
    ideal = m * (f + b)
    assert tl.makespan_s == pytest.approx((m + p - 1) * (f + b), rel=1e-9)
    assert (tl.makespan_s - ideal) / ideal == pytest.approx(float(bubble_fraction(p, m)), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(2, 4), st.floats(0.1, 3.0))
def test_interleaved_matches_closed_form(p: int, k: int, v: int, f: float) -> None:
    m = p * k  # Megatron's interleaved schedule needs m divisible by p
    tl = simulate_schedule([f] * p, [2 * f] * p, m, vp=v)
    ideal = m * 3 * f
    assert tl.makespan_s == pytest.approx(ideal * (1 + (p - 1) / (v * m)), rel=1e-9)


def test_events_do_not_overlap_and_cover_every_microbatch() -> None:
    p, m = 4, 8
    tl = simulate_schedule([1.0, 1.0, 1.0, 1.5], [2.0, 2.0, 2.0, 3.0], m, p2p_s=0.05)
    for s in range(p):
        events = tl.stage_events(s)
        for a, b in zip(events, events[1:], strict=False):
            if a.kind != "comm" and b.kind != "comm":
                assert a.end_s <= b.start_s + 1e-12
        fwd = sorted(e.microbatch for e in events if e.kind == "forward")
        bwd = sorted(e.microbatch for e in events if e.kind == "backward")
        assert fwd == list(range(m)) and bwd == list(range(m))
        busy = tl.busy_s(s)
        assert busy + tl.bubble_s(s) == pytest.approx(tl.makespan_s, rel=1e-9)
    assert {e.kind for e in tl.events} <= {"forward", "backward", "comm", "bubble"}


def test_last_stage_imbalance_is_paid_every_microbatch() -> None:
    # The LM head makes the last stage slower: steady state runs at its pace.
    p, m = 4, 16
    fwd, bwd = [1.0, 1.0, 1.0, 1.4], [2.0, 2.0, 2.0, 2.8]
    tl = simulate_schedule(fwd, bwd, m)
    t = [f + b for f, b in zip(fwd, bwd, strict=True)]
    closed, bubble = pipeline_time_s([np.array([x]) for x in t], np.array([m]))
    assert tl.makespan_s == pytest.approx(float(closed[0]), rel=0.02)
    assert tl.makespan_s > (m + p - 1) * 3.0  # slower than balanced stages
    assert float(bubble[0]) == pytest.approx(float(closed[0]) - m * max(t), rel=1e-12)


def test_p2p_delay_lengthens_the_pipeline() -> None:
    base = simulate_schedule([1.0] * 4, [2.0] * 4, 8).makespan_s
    slow = simulate_schedule([1.0] * 4, [2.0] * 4, 8, p2p_s=0.1).makespan_s
    assert slow > base
    assert any(
        e.kind == "comm" for e in simulate_schedule([1.0] * 4, [2.0] * 4, 8, p2p_s=0.1).events
    )


def test_closed_form_vectorized_reduces_to_bubble_formula() -> None:
    m = np.array([4, 8, 16])
    t = [np.full(3, 3.0)] * 4
    total, bubble = pipeline_time_s(t, m, vp=2)
    np.testing.assert_allclose(bubble / (m * 3.0), bubble_fraction(4, m, 2))
    np.testing.assert_allclose(total, m * 3.0 + bubble)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        simulate_schedule([1.0, 1.0], [1.0], 4)
    with pytest.raises(ValueError):
        simulate_schedule([1.0] * 4, [1.0] * 4, 6, vp=2)  # m not divisible by p
    with pytest.raises(ValueError):
        simulate_schedule([1.0], [1.0], 0)


def test_pipeline_timeline_of_a_layout_matches_the_step_model() -> None:
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.costmodels.step import estimate_step_batch, pipeline_timeline
    from scaleplan.specs.efficiency import EfficiencyProfile
    from scaleplan.specs.hardware import make_cluster
    from scaleplan.specs.layout import LayoutSpec
    from scaleplan.specs.model import get_model

    model, cluster, prof = get_model("llama3-8b"), make_cluster("H100", 32), EfficiencyProfile()
    for vp in (1, 2):
        lay = LayoutSpec(tp=2, pp=4, vp=vp, dp=4, micro_batch=1, global_batch=64)
        tl = pipeline_timeline(model, cluster, lay, 4096, prof)
        est = estimate_step_batch(model, cluster, LayoutBatch.from_specs([lay]), 4096, prof)
        busy = float(est.step_time_s[0] - est.dp_s[0] - est.optimizer_s[0])
        assert tl.num_stages == 4 and tl.num_microbatches == 16 and tl.vp == vp
        assert tl.makespan_s == pytest.approx(busy, rel=0.03)
