"""`scaleplan simulate`: dry-run a layout (or every phase of a plan): FLOPs and memory per GPU.

Structure: `simulation_inputs` turns flags/files into validated inputs; `simulate_result` builds
one JSON-able dict per input from the cost models, section by section (`SECTIONS`);
`render_result` prints it as rich tables, section by section (`RENDERERS`). A new section is a
builder appended to `SECTIONS` and a renderer appended to `RENDERERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from scaleplan.planner.cli import POSITIVE_FINITE
from scaleplan.specs.errors import SpecError

from .simulate_inputs import RUN_FILE_HELP, SimulationInput
from .simulate_step import add_token_budget, render_explain, render_step, step_section

GIB = 1024**3
LAYOUT_FLAGS = (
    "tp", "pp", "vp", "cp", "dp", "ep", "etp", "sequence_parallel", "zero_stage",
    "distributed_optimizer", "micro_batch", "global_batch", "recompute", "recompute_layers",
    "offload_optimizer", "offload_params", "precision", "account_embedding_loss_in_pipeline_split",
    "balanced_pipeline_layout",
)  # fmt: skip

Section = Callable[[SimulationInput, dict[str, Any]], dict[str, Any]]


# --- result: one dict per input, built section by section ---------------------------------------
def _summary_section(inp: SimulationInput, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": inp.name,
        "phase": inp.phase,
        "model": inp.model.name,
        "gpu": inp.cluster.gpu.name,
        "gpus": inp.cluster.num_gpus,
        "seq_length": inp.seq_length,
        "layout": inp.layout.model_dump(mode="json"),
        "params_total": inp.model.params_total,
        "params_active": inp.model.params_active,
    }


def _flops_section(inp: SimulationInput, result: dict[str, Any]) -> dict[str, Any]:
    from scaleplan.costmodels import flops
    from scaleplan.costmodels.stage_layers import split_code

    lay = inp.layout
    fraction = flops.recompute_layers_fraction(
        inp.model.num_layers, lay.pp, lay.recompute_layers, split_code(lay), lay.vp
    )
    report = flops.flops_report(inp.model, inp.seq_length, lay.recompute, float(fraction))
    tokens_per_step = lay.global_batch * inp.seq_length
    return {
        "flops_forward_by_op": report["forward_by_op"],
        "flops_per_token_forward": report["forward"],
        "flops_per_token_model": report["model"],
        "flops_per_token_hardware": report["hardware"],
        "tokens_per_step": tokens_per_step,
        "flops_per_step_model": report["model"] * tokens_per_step,
        "flops_per_step_hardware": report["hardware"] * tokens_per_step,
    }


def _memory_section(inp: SimulationInput, result: dict[str, Any]) -> dict[str, Any]:
    from scaleplan.costmodels.batch import LayoutBatch
    from scaleplan.costmodels.memory import memory_per_gpu, params_per_rank

    batch = LayoutBatch.from_specs([inp.layout])
    # fused (FlashAttention) kernels unless the cluster's efficiency profile says unfused
    flash = inp.cluster.profile.attention_score_passes == 0
    by_stage = {
        stage: memory_per_gpu(
            inp.model, batch, inp.seq_length, stage, flash_attention=flash
        ).component(0)
        for stage in ("first", "middle", "last")
    }
    worst = memory_per_gpu(inp.model, batch, inp.seq_length, "max", flash_attention=flash)
    memory = worst.component(0)
    hbm = inp.cluster.gpu.hbm_bytes
    return {
        "params_per_gpu": {
            stage: params_per_rank(inp.model, inp.layout, stage, vocab_divisible_by=128)
            for stage in ("first", "middle", "last")
        },
        "memory_bytes": memory,
        "memory_stage_rank": int(worst.stage_rank[0]),
        "memory_bytes_by_stage": by_stage,
        "hbm_bytes": hbm,
        "headroom_bytes": hbm - memory["total"],
        "fits": bool(memory["total"] <= hbm),
    }


SECTIONS: list[Section] = [_summary_section, _flops_section, _memory_section, step_section]


def simulate_result(inp: SimulationInput) -> dict[str, Any]:
    """Everything `simulate` reports about one input, as a JSON-able dict."""
    result: dict[str, Any] = {}
    for section in SECTIONS:
        result.update(section(inp, result))
    return result


# --- rendering ------------------------------------------------------------------------------------
def _render_header(result: dict[str, Any], console: Any) -> None:
    lay = result["layout"]
    parts = [
        f"{k}={lay[k]}"
        for k in ("tp", "pp", "vp", "cp", "dp", "ep")
        if lay[k] != 1 or k in ("tp", "pp", "dp")
    ]
    if lay.get("account_embedding_loss_in_pipeline_split"):
        parts.append("(embedding+loss in pp split)")
    if lay.get("balanced_pipeline_layout"):
        parts.append("(balanced pp layout)")
    console.print(
        f"[bold]{result['name']}[/bold]: {result['model']} "
        f"({result['params_total'] / 1e9:.2f}B params, {result['params_active'] / 1e9:.2f}B active) "
        f"on {result['gpus']} x {result['gpu']}, seq {result['seq_length']}, "
        f"{' '.join(parts)} sp={lay['sequence_parallel']} mb={lay['micro_batch']} "
        f"gb={lay['global_batch']} recompute={lay['recompute']}"
    )


def _render_flops(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title="FLOPs per token (forward, by op; 2mnk per matmul, full-sequence attention)"
    )
    table.add_column("op")
    table.add_column("GFLOP/token", justify="right")
    table.add_column("share", justify="right")
    fwd = result["flops_forward_by_op"]
    total = result["flops_per_token_forward"]
    for op, value in fwd.items():
        if value:
            table.add_row(op, f"{value / 1e9:.3f}", f"{100 * value / total:.1f} %")
    table.add_row("forward", f"{total / 1e9:.3f}", "", style="bold")
    table.add_row("model (fwd+bwd, MFU)", f"{result['flops_per_token_model'] / 1e9:.3f}", "")
    table.add_row(
        "hardware (+recompute, HFU)", f"{result['flops_per_token_hardware'] / 1e9:.3f}", ""
    )
    console.print(table)


def _render_memory(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    hbm = result["hbm_bytes"]
    table = Table(
        title=f"Memory per GPU (worst pipeline stage: rank {result['memory_stage_rank']})"
    )
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("% of HBM", justify="right")
    for name, value in result["memory_bytes"].items():
        style = "bold" if name == "total" else None
        table.add_row(name, f"{value / GIB:.2f}", f"{100 * value / hbm:.1f} %", style=style)
    table.add_row("HBM capacity", f"{hbm / GIB:.2f}", "100.0 %")
    console.print(table)
    verdict = "[green]yes[/green]" if result["fits"] else "[red]no[/red]"
    console.print(f"fits: {verdict} (headroom {result['headroom_bytes'] / GIB:.2f} GiB)")


Renderer = Callable[[dict[str, Any], Any], None]
RENDERERS: list[Renderer] = [_render_header, _render_flops, _render_memory, render_step]


def render_result(result: dict[str, Any], console: Any) -> None:
    for renderer in RENDERERS:
        renderer(result, console)


# --- the command ------------------------------------------------------------------------------------
def simulation_inputs(spec_file: str | None, opts: dict[str, Any]) -> list[SimulationInput]:
    """Validated inputs from a file (plan or run) or from flags; flags override a run file."""
    from .simulate_inputs import build_input, inputs_from_file, resolve_model

    layout = {k: opts[k] for k in LAYOUT_FLAGS if opts.get(k) is not None}
    if spec_file is not None:
        top = {"model": opts.get("model"), "gpu": opts.get("gpu"), "gpus": opts.get("gpus"),
               "seq_length": opts.get("seq_len")}  # fmt: skip
        overrides = {k: v for k, v in top.items() if v is not None}
        if layout:
            overrides["layout"] = layout
        return inputs_from_file(spec_file, overrides or None)
    for key, flag in (("model", "--model"), ("gpu", "--gpu")):
        if not opts.get(key):
            raise SpecError(f"missing {flag} (or give a run/plan file)", field=key)
    model = resolve_model(opts["model"])
    return [
        build_input(model.name, model, opts["gpu"], opts.get("gpus"), layout, opts.get("seq_len"))
    ]


def with_profile(inputs: list[SimulationInput], path: str) -> list[SimulationInput]:
    """Each input's cluster with the file's profile for its GPU (`--profile`)."""
    import dataclasses

    from scaleplan.specs.loader import profile_for_gpu, read_profiles

    profiles = read_profiles(path)
    return [
        dataclasses.replace(
            inp,
            cluster=inp.cluster.model_copy(
                update={"efficiency": profile_for_gpu(profiles, inp.cluster.gpu.name, path)}
            ),
        )
        for inp in inputs
    ]


_POS = click.IntRange(min=1)


@click.command("simulate", epilog=RUN_FILE_HELP)
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="model preset (llama3-70b, gpt3-175b, mixtral-8x7b, ...)")
@click.option("--gpu", help="GPU name or alias (h100-sxm, a100-80gb, ...)")
@click.option("--gpus", type=_POS, help="total GPUs (default tp*pp*cp*dp)")
@click.option("--tp", type=_POS, help="tensor parallel size")
@click.option("--pp", type=_POS, help="pipeline parallel size")
@click.option("--vp", type=_POS, help="virtual pipeline stages per rank (interleaved 1F1B)")
@click.option("--cp", type=_POS, help="context parallel size")
@click.option("--dp", type=_POS, help="data parallel size (default gpus/(tp*pp*cp))")
@click.option("--ep", type=_POS, help="expert parallel size")
@click.option("--etp", type=_POS, help="expert tensor parallel size (default tp)")
@click.option(
    "--sp/--no-sp",
    "sequence_parallel",
    default=None,
    help="sequence parallel (default: on when tp>1)",
)
@click.option("--zero", "zero_stage", type=click.IntRange(0, 3), help="ZeRO stage (DeepSpeed/FSDP)")
@click.option(
    "--distributed-optimizer", is_flag=True, default=None, help="Megatron distributed optimizer"
)
@click.option("--micro-batch", type=_POS, help="sequences per micro-batch")
@click.option("--global-batch", type=_POS, help="sequences per optimizer step")
@click.option("--seq-len", type=_POS, help="sequence length (default: the model's)")
@click.option(
    "--recompute", type=click.Choice(["none", "selective", "full"]), help="activation recompute"
)
@click.option("--recompute-layers", type=_POS, help="full recompute: layers per stage")
@click.option(
    "--offload-optimizer", is_flag=True, default=None, help="optimizer states in host memory"
)
@click.option("--offload-params", is_flag=True, default=None, help="weights in host memory")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp8"]), help="compute precision")
@click.option(
    "--embedding-loss-in-pp",
    "account_embedding_loss_in_pipeline_split",
    is_flag=True,
    default=None,
    help="count the embedding and loss as pipeline layers ((layers+2) % (pp*vp) == 0; "
    "Megatron --account-for-embedding/loss-in-pipeline-split)",
)
@click.option(
    "--balanced-pp",
    "balanced_pipeline_layout",
    is_flag=True,
    default=None,
    help="uneven pipeline layout for layers that split neither way: ceil(layers/(pp*vp)) per "
    "model chunk, the rest on the last (Megatron --pipeline-model-parallel-layout, as "
    "Megatron-Bridge's DeepSeek-V3 recipes)",
)
@click.option("--tokens", type=POSITIVE_FINITE, help="token budget: time and $")
@click.option(
    "--profile",
    "profile_file",
    type=click.Path(dir_okay=False),
    help="efficiency profile file (`scaleplan calibrate --out`) instead of the shipped one",
)
@click.option("--explain", is_flag=True, help="print each step-time term with formula and source")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object to stdout")
def simulate(
    spec_file: str | None,
    as_json: bool,
    tokens: float | None,
    explain: bool,
    profile_file: str | None,
    **opts: Any,
) -> None:
    """Dry-run a layout, or every phase of a plan: FLOPs per token (model and hardware, by op)
    and memory per GPU by component against HBM, and whether it fits.

    Give flags (--model --gpu --gpus --tp ... --global-batch), or SPEC_FILE: a run file
    (YAML/JSON) or a plan file; flags override a run file's values.

    --json keys: params_total, params_active, flops_per_token_model (MFU numerator),
    flops_per_token_hardware (with recompute), flops_forward_by_op, memory_bytes (component ->
    bytes, with total; worst pipeline stage), memory_bytes_by_stage, hbm_bytes, fits, layout,
    step (step_time_s, compute_s, tp_s/cp_s/ep_s/pp_s/dp_s exposed comm, bubble_s, optimizer_s,
    overhead_s, mfu, hfu, tokens_per_s_per_gpu, terms; with --tokens: time_to_train_s, cost_usd).
    A plan file gives {"plan": name, "phases": [one such object per phase]}.
    """
    inputs = simulation_inputs(spec_file, opts)
    if profile_file is not None:
        inputs = with_profile(inputs, profile_file)
    results = [simulate_result(inp) for inp in inputs]
    for result in results:
        add_token_budget(result, tokens)
    if as_json:
        is_plan = inputs[0].phase is not None
        payload = (
            {"plan": inputs[0].name.split("/")[0], "phases": results} if is_plan else results[0]
        )
        click.echo(json.dumps(payload, indent=2, sort_keys=False))
        return
    from rich.console import Console

    console = Console()
    for result in results:
        render_result(result, console)
        if explain:
            render_explain(result, console)
