"""What plot 2 draws: the LR of every optimizer step of pretraining and annealing, and the loss
the multi-power schedule law (planner.laws.schedule_law, Luo et al. 2025) predicts along it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaleplan.specs.plan import PhaseSpec, ScheduleSpec

from .context import ReportContext
from .figures import Unavailable

LM_PHASES = ("pretrain", "anneal")  # phases whose loss is next-token loss on the pretraining scale
MAX_EVAL_POINTS = 400  # steps at which the loss is evaluated (the curve is smooth between them)


def lr_per_step(schedule: ScheduleSpec, steps: int) -> np.ndarray:
    """The LR of each optimizer step 0..steps-1, as the executor's Megatron-core
    OptimizerParamScheduler produces it from this schedule (executor/train.py maps the fields;
    megatron/core/optimizer_param_scheduler.py `get_lr` defines the curve)."""
    s = schedule
    total = max(steps, s.warmup_steps + 1)
    max_lr = s.start_lr if (s.start_lr is not None and s.warmup_steps == 0) else s.peak_lr
    init_lr = (s.start_lr or 0.0) if s.warmup_steps else max_lr
    min_lr = min(s.min_lr, max_lr)
    n = np.arange(steps, dtype=np.float64)
    lr = np.full(steps, max_lr, dtype=np.float64)
    if s.style != "constant":
        if s.style == "wsd":
            decay = min(s.decay_steps, total)
            start = total - decay
            r = np.clip((n - start) / max(decay, 1), 0.0, 1.0)
            coeff = {
                "linear": 1.0 - r,
                "cosine": 0.5 * (np.cos(np.pi * r) + 1.0),
                "exponential": 2.0 * 0.5**r - 1.0,
                "sqrt": 1.0 - np.sqrt(r),  # Megatron's "minus_sqrt" (Hägele et al. 2024 1-sqrt)
            }[s.decay_shape]
            coeff = np.where(n <= start, 1.0, coeff)
        else:
            r = np.clip((n - s.warmup_steps) / max(total - s.warmup_steps, 1), 0.0, 1.0)
            coeff = 1.0 - r if s.style == "linear" else 0.5 * (np.cos(np.pi * r) + 1.0)
        lr = min_lr + coeff * (max_lr - min_lr)
    if s.warmup_steps:
        warm = n <= s.warmup_steps
        lr = np.where(warm, init_lr + (max_lr - init_lr) * n / s.warmup_steps, lr)
    return lr


@dataclass(frozen=True)
class Forecast:
    phases: tuple[PhaseSpec, ...]  # the LM phases drawn, in order
    lr: np.ndarray  # per optimizer step, all LM phases concatenated
    tokens_per_step: np.ndarray  # per step
    eval_steps: np.ndarray  # step indices where the loss is predicted
    loss: np.ndarray  # predicted loss after each eval step
    origin: str  # where the law's parameters came from
    fitted: bool  # a fit of the user's curves (True) or the law's default prior, shifted (False)
    shift: float  # nats added to the prior's prediction (0 for a fit)


def _mpl_params(data: Any, source: str) -> Any:
    from scaleplan.planner.laws.schedule_law import PARAM_NAMES, MPLParams

    for candidate in (
        (data.get("params"), data.get("schedule_law"), data) if isinstance(data, dict) else ()
    ):
        if isinstance(candidate, dict) and all(k in candidate for k in PARAM_NAMES):
            try:
                values = {k: float(candidate[k]) for k in PARAM_NAMES}
            except (TypeError, ValueError):
                break
            if all(math.isfinite(v) for v in values.values()):
                return MPLParams(
                    **values,
                    source=str(candidate.get("source", source)),
                    warmup_in_decay=candidate.get("warmup_in_decay") is True,
                )
    raise Unavailable(f"{source} holds no multi-power-law parameters ({', '.join(PARAM_NAMES)})")


def _sized_law(data: Any) -> Any:
    """The size-aware law of a `fit --law mpl` file fitted on curves of several model sizes, or
    None for a single-size fit."""
    from scaleplan.planner.laws.schedule_law_sized import sized_from_dict
    from scaleplan.specs.errors import SpecError

    law = data.get("law") if isinstance(data, dict) else None
    if not isinstance(law, dict) or law.get("form") != "mpl-sized":
        return None
    try:
        return sized_from_dict(law.get("params") or {})
    except SpecError as err:
        raise Unavailable(f"the size-aware schedule fit is incomplete: {err.reason}") from None


def _extrapolation(data: dict[str, Any], n_params: float) -> str:
    """' (3.2x beyond the largest fitted size, 400M)' when the plan's model is larger than any
    curve the law was fitted on; '' otherwise."""
    sizes = [float(v) for v in data["law"].get("sizes") or [] if isinstance(v, (int, float))]
    if not sizes or n_params <= max(sizes):
        return ""
    return f" ({n_params / max(sizes):.3g}x beyond the largest fitted size, {max(sizes):.3g})"


def schedule_params(ctx: ReportContext) -> tuple[Any, str, bool]:
    """(MPL parameters, where from, fitted?): the budget's schedule fit, the plan's recorded one,
    else the schedule law's default parameters (`schedule_law.default_params`)."""
    from scaleplan.planner.laws.schedule_law import default_params

    recorded = ctx.plan.law.get("schedule")
    if isinstance(recorded, dict):
        return _mpl_params(recorded, "the plan's law.schedule"), "the plan's schedule fit", True
    path = ctx.plan.budget.law.schedule_fit if ctx.plan.budget is not None else None
    if path:
        p = Path(path)
        if not p.is_file():
            raise Unavailable(f"the schedule fit {path} named by the budget was not found")
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Unavailable(f"the schedule fit {path} could not be read ({exc})") from None
        sized = _sized_law(data)
        if sized is not None:
            n = float(ctx.plan.model.params_total)
            return sized.at(n), f"schedule fit {path} at N={n:.3g}{_extrapolation(data, n)}", True
        return _mpl_params(data, path), f"schedule fit {path}", True
    prior = default_params()
    return prior, prior.source, False


def forecast(ctx: ReportContext) -> Forecast:
    from scaleplan.planner.laws import schedule_law

    phases = tuple(p for p in ctx.plan.phases if p.name in LM_PHASES and p.steps > 0)
    if not phases:
        raise Unavailable(
            "the plan has no pretraining or annealing phase, so there is no pretraining loss to forecast"
        )
    params, origin, fitted = schedule_params(ctx)
    lr = np.concatenate([lr_per_step(p.schedule, p.steps) for p in phases])
    tokens = np.concatenate([np.full(p.steps, p.tokens / p.steps) for p in phases])
    if lr.max() <= 0:
        raise Unavailable("the schedule's learning rate is zero throughout")
    ends = np.cumsum([p.steps for p in phases]) - 1
    first = int(np.flatnonzero(lr > 0)[0])  # the law needs some LR behind a point (S1 > 0)
    early = (
        np.geomspace(first + 1, len(lr), MAX_EVAL_POINTS // 2) - 1
    )  # dense where loss falls fast
    even = np.linspace(first, len(lr) - 1, MAX_EVAL_POINTS // 2)
    eval_steps = np.unique(np.concatenate([early, even, ends]).astype(int))
    # Loss at chosen steps only: the full curve would hold a steps x drops matrix.
    loss = schedule_law.predict_loss_at(params, lr, eval_steps)
    shift = 0.0
    if not fitted:
        target = ctx.plan.law.get("predicted_loss")
        if not isinstance(target, (int, float)):
            raise Unavailable(
                "no schedule fit was given (budget law.schedule_fit) and the plan records no predicted loss "
                "to place the multi-power-law prior on"
            )
        shift = float(target) - float(loss[-1])
        loss = loss + shift
    return Forecast(phases, lr, tokens, eval_steps, loss, origin, fitted, shift)
