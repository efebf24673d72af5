"""Launch scripts: a torchrun script and an sbatch script per phase, and the chain script.

Every user-provided string (plan and run names, paths, data prefixes) enters a script through
`shlex.quote`; comments get a sanitised copy. Scripts pass shellcheck without warnings.

Environment knobs (all optional): RUN_DIR, TORCHRUN, SCALEPLAN_DRY_RUN (print the command instead of
running it), SCALEPLAN_FRESH (do not resume), MASTER_ADDR/MASTER_PORT/NNODES/NODE_RANK (set by sbatch.sh under
Slurm), SBATCH (the sbatch binary), SBATCH_ARGS (extra sbatch flags such as --partition),
MEGATRON_LM_DIR and DATA_DIR (Megatron-LM engine).
"""

from __future__ import annotations

import re
import shlex

from .common import PhaseContext
from .megatron_lm import MEGATRON_LM_VERSION, MegatronLMArgs

NCCL_ENV: tuple[tuple[str, str], ...] = (
    ("NCCL_DEBUG", "WARN"),
    ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    ("NCCL_IB_TIMEOUT", "22"),
    ("OMP_NUM_THREADS", "1"),
)
BACKENDS = {"megatron": "megatron", "deepspeed": "deepspeed"}


def q(value: object) -> str:
    text = str(value)
    quoted = shlex.quote(text)
    # shellcheck (SC2054) reads a bare comma inside an array as a mistaken separator
    return f"'{text}'" if quoted == text and "," in text else quoted


def comment_safe(text: str) -> str:
    """A copy of a user string that cannot leave a `#` comment line."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def job_name_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:48] or "scaleplan"


def _header(title: str, plan_name: str) -> list[str]:
    return [
        "#!/usr/bin/env bash",
        f"# {title} -- plan {comment_safe(plan_name)!r}, written by `scaleplan compile`.",
        "set -euo pipefail",
    ]


def _env_defaults(ctx: PhaseContext) -> list[str]:
    lines = [f'export {k}="${{{k}:-{v}}}"' for k, v in NCCL_ENV]
    if ctx.phase.layout.zero_stage >= 2:
        # Megatron-FSDP asserts CUDA_DEVICE_MAX_CONNECTIONS != 1 (Megatron-LM validate_args)
        lines.append("unset CUDA_DEVICE_MAX_CONNECTIONS")
    else:
        # Megatron: one hardware queue keeps TP/SP communication ordered before dependent compute
        lines.append('export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"')
    return lines


def literal(line: str, value: str) -> list[str]:
    """`line` embeds `value` single-quoted; tell shellcheck a `$` in it is meant literally."""
    if "$" in value or "`" in value:
        return ["# shellcheck disable=SC2016  # a user string, single-quoted on purpose", line]
    return [line]


def _run_dir_lines(default_run_dir: str | None, base: str = "COMPILED") -> list[str]:
    if default_run_dir is None:
        lines = [f'DEFAULT_RUN_DIR="${base}/run"']
    else:
        lines = literal(f"DEFAULT_RUN_DIR={q(default_run_dir)}", default_run_dir)
    return [*lines, 'RUN_DIR="${RUN_DIR:-$DEFAULT_RUN_DIR}"']


def torchrun_script(
    ctx: PhaseContext,
    engine: str,
    phase_dir: str,
    default_run_dir: str | None,
    lm_args: MegatronLMArgs | None = None,
) -> str:
    """One node's launcher; under Slurm, sbatch.sh runs it once per node through srun."""
    lines = _header(f"torchrun launcher of phase {ctx.name} ({engine})", ctx.plan.name)
    lines += [
        f"# phase {ctx.index + 1} of {len(ctx.plan.phases)}: {ctx.phase.num_gpus} GPUs = {ctx.nodes} node(s) x {ctx.gpus_per_node}",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'COMPILED="${SCALEPLAN_DIR:-$(dirname "$HERE")}"',
        *_run_dir_lines(default_run_dir),
        f'NNODES="${{NNODES:-${{SLURM_JOB_NUM_NODES:-{ctx.nodes}}}}}"',
        'NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"',
        f"GPUS_PER_NODE={ctx.gpus_per_node}",
        'MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"',
        'MASTER_PORT="${MASTER_PORT:-29500}"',
        'TORCHRUN="${TORCHRUN:-torchrun}"',
        *_env_defaults(ctx),
        'mkdir -p "$RUN_DIR/checkpoints" "$RUN_DIR/metrics"',
        'cmd=("$TORCHRUN" --nproc-per-node "$GPUS_PER_NODE" --nnodes "$NNODES" --node-rank "$NODE_RANK"',
        '     --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")',
    ]
    if engine == "megatron-lm":
        assert lm_args is not None
        lines += _megatron_lm_lines(ctx, lm_args)
    else:
        lines += [
            'PLAN="$COMPILED/plan.json"',
            f'cmd+=(-m scaleplan.executor.train --plan "$PLAN" --phase {q(ctx.name)} --run-dir "$RUN_DIR" --backend {BACKENDS[engine]})',
            "# continue from this phase's latest checkpoint when there is one (a requeued job, a",
            "# resubmitted chain); the entry point starts fresh when there is none",
            'if [ -z "${SCALEPLAN_FRESH:-}" ]; then',
            "  cmd+=(--resume)",
            "fi",
        ]
    lines += [
        'if [ -n "${SCALEPLAN_DRY_RUN:-}" ]; then',
        "  printf '%q ' \"${cmd[@]}\"",
        "  printf '\\n'",
        "  exit 0",
        "fi",
        'exec "${cmd[@]}"',
    ]
    return "\n".join(lines) + "\n"


def _megatron_lm_lines(ctx: PhaseContext, lm: MegatronLMArgs) -> list[str]:
    lines = [
        f"# Megatron-LM {MEGATRON_LM_VERSION}: MEGATRON_LM_DIR is a checkout of that tag; DATA_DIR holds",
        "# the indexed datasets (PREFIX.bin/.idx) named in --data-path.",
        'MEGATRON_LM_DIR="${MEGATRON_LM_DIR:-}"',
        'if [ -z "$MEGATRON_LM_DIR" ] && [ -z "${SCALEPLAN_DRY_RUN:-}" ]; then',
        f'  echo "set MEGATRON_LM_DIR to a Megatron-LM {MEGATRON_LM_VERSION} checkout" >&2',
        "  exit 2",
        "fi",
        'DATA_DIR="${DATA_DIR:-$RUN_DIR/data}"',
        'export SCALEPLAN_PLAN="$COMPILED/plan.json"  # the plan this run follows, for our tools',
        'cmd+=("$MEGATRON_LM_DIR/pretrain_gpt.py")',
    ]
    groups: list[list[str]] = []
    for arg in lm.args:  # one group per flag with its values, four flags per line
        if arg.startswith("--") or not groups:
            groups.append([])
        groups[-1].append(q(arg))
    for i in range(0, len(groups), 4):
        lines.append("cmd+=(" + " ".join(" ".join(g) for g in groups[i : i + 4]) + ")")
    lines.append(
        'TOKENIZER_MODEL="${TOKENIZER_MODEL:-}"  # a Hugging Face tokenizer (name or folder)'
    )
    if lm.sft:
        lines += [
            'if [ -z "$TOKENIZER_MODEL" ] && [ -z "${SCALEPLAN_DRY_RUN:-}" ]; then',
            '  echo "SFT needs TOKENIZER_MODEL (a Hugging Face tokenizer with a chat template)" >&2',
            "  exit 2",
            "fi",
            "cmd+=(" + " ".join(q(a) for a in lm.tokenizer_args("X")[:-1]) + ' "$TOKENIZER_MODEL")',
        ]
    else:
        lines += [
            'if [ -n "$TOKENIZER_MODEL" ]; then',
            "  cmd+=("
            + " ".join(q(a) for a in lm.tokenizer_args("X")[:-1])
            + ' "$TOKENIZER_MODEL")',
            "else  # pre-tokenized data: NullTokenizer, end-of-document id = vocab_size - 1",
            "  cmd+=(" + " ".join(q(a) for a in lm.tokenizer_args(None)) + ")",
            "fi",
        ]
    data = []
    for weight, prefix in lm.data:
        path = q(prefix) if prefix.startswith("/") else f'"$DATA_DIR"/{q(prefix)}'
        data += [repr(round(weight, 6)), path]
    lines += literal("cmd+=(--data-path " + " ".join(data) + ")", "".join(p for _, p in lm.data))
    lines += [f'SAVE="$RUN_DIR"/{q(lm.save_dir)}', 'cmd+=(--save "$SAVE")']
    if lm.init_dir is None:
        lines.append('cmd+=(--load "$SAVE")')
    else:
        first = " ".join(q(f) for f in lm.first_start_flags)
        lines += [
            "# a restart resumes this phase; the first start branches from the parent's checkpoint",
            'if [ -f "$SAVE/latest_checkpointed_iteration.txt" ]; then',
            '  cmd+=(--load "$SAVE")',
            "else",
            f'  cmd+=(--load "$RUN_DIR"/{q(lm.init_dir)} {first})',
            "fi",
        ]
    return lines


def sbatch_script(ctx: PhaseContext, phase_dir: str) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --nodes={ctx.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={ctx.gpus_per_node}",
        f"# sbatch script of phase {ctx.name} -- plan {comment_safe(ctx.plan.name)!r}, written by `scaleplan compile`.",
        "# Submit through ../submit_all.sh (it sets SCALEPLAN_DIR, RUN_DIR, --job-name and --output).",
        "set -euo pipefail",
        'COMPILED="${SCALEPLAN_DIR:?submit through submit_all.sh, or export SCALEPLAN_DIR=<compiled dir>}"',
        "# first node of the allocation; fake nodes of one host share `hostname`, so ask Slurm",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)"',
        "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # one port per job",
        'NNODES="$SLURM_JOB_NUM_NODES"',
        "export MASTER_ADDR MASTER_PORT NNODES",
        *_env_defaults(ctx),
        f'srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$COMPILED"/{q(phase_dir)}/torchrun.sh',
    ]
    return "\n".join(lines) + "\n"


def chain_script(
    ctxs: list[PhaseContext], phase_dirs: list[str], default_run_dir: str | None
) -> str:
    """Submit every phase with sbatch, each after the previous one succeeded (afterok)."""
    plan_name = ctxs[0].plan.name
    lines = _header("submit every phase to Slurm, chained with --dependency=afterok", plan_name)
    lines += [
        "# prints one line per phase: PHASE JOB_ID",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'export SCALEPLAN_DIR="$HERE"',
        *_run_dir_lines(default_run_dir, base="HERE"),
        "export RUN_DIR",
        f"JOB_PREFIX={q(job_name_safe(plan_name))}",
        'SBATCH="${SBATCH:-sbatch}"',
        'read -r -a EXTRA <<< "${SBATCH_ARGS:-}"',
        'mkdir -p "$RUN_DIR/logs"',
        'prev=""',
        "submit() {",
        "  local phase=$1 dir=$2 out",
        "  local dep=()",
        '  if [ -n "$prev" ]; then dep=(--dependency="afterok:$prev" --kill-on-invalid-dep=yes); fi',
        '  out="$("$SBATCH" --parsable "${dep[@]}" "${EXTRA[@]}" --job-name "$JOB_PREFIX-$phase" \\',
        '    --output "$RUN_DIR/logs/$phase-%j.out" "$HERE/$dir/sbatch.sh")"',
        '  prev="${out%%;*}"  # --parsable prints ID or ID;CLUSTER',
        '  printf \'%s %s\\n\' "$phase" "$prev"',
        "}",
    ]
    lines += [f"submit {q(c.name)} {q(d)}" for c, d in zip(ctxs, phase_dirs, strict=True)]
    return "\n".join(lines) + "\n"


def local_chain_script(
    ctxs: list[PhaseContext], phase_dirs: list[str], default_run_dir: str | None
) -> str:
    """Run every phase in order on this machine (single node), stopping at the first failure."""
    lines = _header("run every phase in order on this node with torchrun", ctxs[0].plan.name)
    lines += [
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'export SCALEPLAN_DIR="$HERE"',
        *_run_dir_lines(default_run_dir, base="HERE"),
        "export RUN_DIR",
    ]
    for c, d in zip(ctxs, phase_dirs, strict=True):
        if c.nodes > 1:
            lines.append(
                f"# phase {c.name} needs {c.nodes} nodes: run $HERE/{d}/torchrun.sh on each (NODE_RANK, MASTER_ADDR)"
            )
        lines.append(f'bash "$HERE"/{q(d)}/torchrun.sh')
    return "\n".join(lines) + "\n"
