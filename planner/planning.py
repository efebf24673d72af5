"""`plan()`: a budget in, a multi-phase plan out.

The loop (per GPU count): C = GPUs x seconds x goodput x achievable FLOP/s, where achievable is
the best layout's predicted MFU for the candidate model; the law turns C into N and D (under the
data cap and the inference volume); N becomes an architecture; the architecture gets a layout;
the layout's throughput gives the next C. It stops when the architecture repeats (a fixed point)
and records every iteration. Among several GPU counts the plan with the lowest predicted loss
wins (ties within 0.1 %: the shortest wall time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from scaleplan.costmodels.flops import model_flops_per_token
from scaleplan.specs.budget import BudgetSpec, MoEBudget
from scaleplan.specs.errors import SpecError
from scaleplan.specs.hardware import ClusterSpec, get_gpu
from scaleplan.specs.loader import validate
from scaleplan.specs.model import ModelSpec
from scaleplan.specs.plan import PhaseSpec, Plan

from .allocation import (
    FLOPS_PER_PARAM_TOKEN,
    budget_law,
    check_data_cap,
    law_allocation,
    max_tokens,
    predicted_loss,
)
from .architecture import architecture_for_params, counted_params
from .laws import (
    Law,
)
from .laws.hyperparams import deepseek_lr_batch, warmup_steps
from .phases import PhaseContext, post_training, pretrain_and_anneal
from .search import NoLayoutFits, SearchResult, search_layouts

Progress = Callable[[str], None]
MAX_ITERATIONS = 8
INITIAL_MFU = 0.4  # first guess only; replaced by the searched layout's MFU after one pass


def _cluster(budget: BudgetSpec, num_gpus: int) -> ClusterSpec:
    gpu = get_gpu(budget.gpu, field="gpu")
    opts = budget.cluster
    fields: dict[str, Any] = {"gpu": gpu, "num_gpus": num_gpus}
    fields["gpus_per_node"] = min(opts.gpus_per_node or gpu.gpus_per_node, num_gpus)
    for key in ("nvlink_domain", "nic_gbps_per_gpu"):
        if getattr(opts, key) is not None:
            fields[key] = getattr(opts, key)
    fields["inter_node_topology"] = opts.inter_node_topology
    if opts.efficiency is not None:
        fields["efficiency"] = opts.efficiency
    elif opts.profile is not None:
        raise SpecError(
            "the profile file is read by `scaleplan plan`; give the profile inline as "
            "cluster.efficiency when planning from Python",
            field="cluster.profile",
        )
    fields["oversubscription"] = opts.oversubscription
    if budget.usd_per_gpu_hour is not None:
        fields["usd_per_gpu_hour"] = budget.usd_per_gpu_hour
    try:
        return validate(ClusterSpec, fields, prefix="cluster")
    except SpecError as err:
        raise SpecError(
            f"{err.reason}; choose a GPU count that fills whole nodes", field="gpus"
        ) from None


def _moe(budget: BudgetSpec) -> MoEBudget | None:
    return (budget.moe or MoEBudget()) if budget.architecture == "moe" else None


def _train_seconds(budget: BudgetSpec, cluster: ClusterSpec, post: list[PhaseSpec]) -> float:
    """Training seconds left for pretrain + anneal after the post-training phases, under both the
    wall-clock and the dollar limit (wall time = training time / goodput; the post-training slice
    is billed for its own GPUs only)."""
    price = cluster.price_usd_per_gpu_hour
    post_time = sum(p.time_s for p in post)
    post_gpu_s = sum(p.time_s * p.num_gpus for p in post)
    limits = []
    if budget.hours is not None:
        limits.append(budget.goodput * budget.hours * 3600.0 - post_time)
    if budget.dollars is not None:
        gpu_s = budget.goodput * budget.dollars / price * 3600.0
        limits.append((gpu_s - post_gpu_s) / cluster.num_gpus)
    return min(limits)


def _no_layout(err: NoLayoutFits, model: ModelSpec, cluster: ClusterSpec, phase: str) -> SpecError:
    closest = "; ".join(r["reason"] for r in err.rejected[:3]) or "every layout breaks a rule"
    return SpecError(
        f"no parallel layout of the {model.params_total / 1e9:.3g}B-parameter model fits "
        f"{cluster.num_gpus} x {cluster.gpu.name} for {phase} ({closest}); use more GPUs, GPUs "
        "with more memory, or a smaller model (target.params)",
        field="gpus",
    )


class _Candidate:
    """One GPU count's fixed-point result."""

    def __init__(self, plan: Plan, loss: float, wall_s: float) -> None:
        self.plan, self.loss, self.wall_s = plan, loss, wall_s


def _plan_for_count(budget: BudgetSpec, law: Law, num_gpus: int, progress: Progress) -> _Candidate:
    cluster = _cluster(budget, num_gpus)
    peak = cluster.gpu.dense16_flops
    seq = budget.data.seq_length
    if budget.phases.post_training_gpus and budget.phases.post_training_gpus > num_gpus:
        raise SpecError(
            f"post_training_gpus={budget.phases.post_training_gpus} exceeds the {num_gpus} GPUs "
            "of the budget; lower it or leave it out",
            field="phases.post_training_gpus",
        )
    moe = _moe(budget)
    counters = {"seconds": 0.0, "evaluated": 0}
    post: list[PhaseSpec] | None = None
    post_key: tuple[int, int] | None = None
    iterations: list[dict[str, Any]] = []
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    mfu = INITIAL_MFU
    hours = budget.hours or budget.dollars / (num_gpus * cluster.price_usd_per_gpu_hour)  # type: ignore[operator]
    seconds = budget.goodput * hours * 3600.0
    compute = num_gpus * seconds * peak * mfu  # first guess, in model FLOPs
    fixed: ModelSpec | None = None
    fixed_n = None
    if budget.target.kind == "fixed-size":  # the target names the total size; the law its count
        fixed = architecture_for_params(
            float(budget.target.params or 0.0),
            vocab_size=budget.data.vocab_size,
            seq_length=seq,
            moe=moe,
            param_count="total",
        )
        fixed_n = counted_params(fixed, law.param_count)
    n_law, d_law, epochs = law_allocation(budget, law, compute, fixed_n)
    state: dict[str, Any] = {}
    status = f"stopped after {MAX_ITERATIONS} iterations"
    for k in range(MAX_ITERATIONS):
        check_data_cap(budget, law, compute, n_law, d_law)
        model = fixed or architecture_for_params(
            n_law,
            vocab_size=budget.data.vocab_size,
            seq_length=seq,
            moe=moe,
            param_count=law.param_count,
        )
        key = (model.num_layers, model.hidden_size)
        if key in seen:  # the architecture repeats: a fixed point, or a cycle (keep this one)
            status = (
                "fixed point"
                if key == (state["model"].num_layers, state["model"].hidden_size)
                else "cycle"
            )
            state = seen[key]
            iterations.append({**state["record"], "iteration": k, "repeat": True})
            break
        lr, batch_tokens = deepseek_lr_batch(compute)
        try:
            result = search_layouts(model, cluster, seq, max(batch_tokens / seq, 1.0))
        except NoLayoutFits as err:
            raise _no_layout(err, model, cluster, "pretraining") from None
        counters["seconds"] += result.seconds
        counters["evaluated"] += result.layouts_evaluated
        gb = result.best.global_batch
        # sqrt rule for Adam when the layout changes the batch (Malladi et al. 2022, section 3)
        lr_scaled = lr * math.sqrt(gb * seq / batch_tokens)
        ctx = PhaseContext(budget, cluster, model, lr_scaled, cluster.price_usd_per_gpu_hour)
        if post is None:  # post-training time for the first candidate; redone for the final one
            post = _post_training(ctx, gb * seq, counters)
            post_key = key
        train_s = _train_seconds(budget, cluster, post)
        tps = result.step["tokens_per_s_per_gpu"]
        tokens_time = train_s * num_gpus * tps
        mfu = result.step["mfu"]
        compute = FLOPS_PER_PARAM_TOKEN * counted_params(model, law.param_count) * tokens_time
        record = {
            "iteration": k,
            "n_law": n_law,
            "n_model": counted_params(model, law.param_count),
            "layers": model.num_layers,
            "hidden": model.hidden_size,
            "layout": result.best.model_dump(mode="json", exclude_defaults=True),
            "mfu": mfu,
            "tokens_time": tokens_time,
            # C = GPUs x seconds x goodput x achievable FLOP/s (MFU x peak), in model FLOPs ...
            "compute_model_flops": num_gpus * train_s * mfu * peak,
            # ... and as the law counts it, 6 N D
            "compute_6nd": compute,
        }
        iterations.append(record)
        progress(
            f"iteration {k}: N={counted_params(model, law.param_count) / 1e9:.3g}B, MFU {mfu:.1%}, "
            f"{tokens_time / 1e9:.4g}B tokens fit the time"
        )
        state = {
            "model": model,
            "result": result,
            "ctx": ctx,
            "lr": lr,
            "batch_tokens": batch_tokens,
            "tokens_time": tokens_time,
            "record": record,
            "compute": compute,
        }
        seen[key] = state
        n_law, d_law, epochs = law_allocation(budget, law, compute, fixed_n)
    model, result, ctx = state["model"], state["result"], state["ctx"]
    if post is None or post_key != (model.num_layers, model.hidden_size):
        post = _post_training(ctx, result.best.global_batch * seq, counters)
        train_s = _train_seconds(budget, cluster, post)
        state["tokens_time"] = train_s * num_gpus * result.step["tokens_per_s_per_gpu"]
    n = counted_params(model, law.param_count)
    check_data_cap(budget, law, state["compute"], n, min(state["tokens_time"], max_tokens(budget)))
    tokens = min(state["tokens_time"], max_tokens(budget))
    notes = []
    if tokens < state["tokens_time"]:
        notes.append(
            f"the data cap binds: {tokens:.3g} tokens instead of the "
            f"{state['tokens_time']:.3g} the time allows; pretraining finishes early"
        )
    steps = max(1, math.ceil(tokens / (result.best.global_batch * seq)))
    warm = warmup_steps(steps, n, result.best.global_batch * seq)
    phases = pretrain_and_anneal(ctx, result, tokens, warm) + post
    loss = predicted_loss(law, n, tokens, budget.data.max_unique_tokens)
    wall_s = sum(p.time_s for p in phases) / budget.goodput
    plan = Plan(
        name=budget.name,
        scaleplan_version=_version(),
        budget=budget,
        cluster=cluster,
        model=model,
        tokens=float(sum(p.tokens for p in phases if p.name in ("pretrain", "anneal"))),
        compute_flops=model_flops_per_token(model, seq) * tokens,
        law={
            **law.to_dict(),
            "n_params": n,
            "tokens": tokens,
            "predicted_loss": loss,
            "epochs": tokens / budget.data.max_unique_tokens
            if budget.data.max_unique_tokens
            else 1.0,
            "target": budget.target.kind,
            "n_law": n_law,
            "d_law": d_law,
            "epochs_law": epochs,
            "peak_lr_law": state["lr"],
            "batch_tokens_law": state["batch_tokens"],
            "lr_rule": "DeepSeek LLM 2024 Formula 1; sqrt batch rescale (Malladi et al. 2022)",
        },
        fixed_point={
            "iterations": iterations,
            "converged": status == "fixed point",
            "status": status,
            "achievable_flops_per_gpu": result.step["mfu"] * cluster.gpu.dense16_flops,
        },
        search={
            "layouts_evaluated": counters["evaluated"],
            "seconds": round(counters["seconds"], 4),
            "pretrain": _summary(result),
            **{name: _summary(r) for name, r in ctx.searches.items()},
        },
        phases=tuple(phases),
        notes=tuple(
            notes + [f"wall clock {wall_s / 86400:.2f} days at goodput {budget.goodput:g}"]
        ),
    )
    return _Candidate(plan, loss, wall_s)


def _post_training(
    ctx: PhaseContext, batch_tokens: float, counters: dict[str, Any]
) -> list[PhaseSpec]:
    """The post-training phases for ctx's model, with their searches counted."""
    budget = ctx.budget
    try:
        post = post_training(ctx, batch_tokens, "anneal" if budget.phases.anneal else "pretrain")
    except NoLayoutFits as err:
        raise _no_layout(err, ctx.model, ctx.cluster, "post-training") from None
    for r in ctx.searches.values():
        counters["seconds"] += r.seconds
        counters["evaluated"] += r.layouts_evaluated
    if _train_seconds(budget, ctx.cluster, post) <= 0:
        raise SpecError(
            f"post-training alone ({sum(p.time_s for p in post) / 3600:.1f} h of training) "
            "uses the whole budget; raise hours/dollars or shrink the post-training phases",
            field="phases",
        )
    return post


def _summary(result: SearchResult) -> dict[str, Any]:
    return result.summary()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scaleplan")
    except PackageNotFoundError:
        return "0+unknown"


def plan(budget: BudgetSpec, *, progress: Progress | None = None) -> Plan:
    """Turn a budget into a plan. With several GPU counts, each is planned and the one whose
    model reaches the lowest predicted loss is kept (ties within 0.1 %: shortest wall time)."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    get_gpu(budget.gpu, field="gpu")  # an unknown GPU fails before any work
    law = budget_law(budget)
    candidates: list[_Candidate] = []
    failures: list[str] = []
    for count in budget.gpu_counts:
        say(f"planning on {count} x {budget.gpu}")
        try:
            candidates.append(_plan_for_count(budget, law, count, say))
        except SpecError as err:
            if len(budget.gpu_counts) == 1:
                raise
            failures.append(f"{count} GPUs: {err.reason}")
    if not candidates:
        raise SpecError("no GPU count gives a plan: " + " | ".join(failures), field="gpus")
    best_loss = min(c.loss for c in candidates)
    close = [c for c in candidates if c.loss <= best_loss * 1.001]
    chosen = min(close, key=lambda c: c.wall_s)
    notes = list(chosen.plan.notes)
    if len(budget.gpu_counts) > 1:
        notes.append(
            "GPU count chosen by lowest predicted loss (ties within 0.1 %: shortest wall time): "
            + ", ".join(f"{c.plan.cluster.num_gpus} GPUs -> loss {c.loss:.4f}" for c in candidates)
            + "".join(f"; {f}" for f in failures)
        )
    search = {**chosen.plan.search, "plan_seconds": round(time.perf_counter() - start, 4)}
    return chosen.plan.model_copy(update={"notes": tuple(notes), "search": search})


__all__ = ["law_allocation", "plan"]
