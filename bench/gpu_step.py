"""Measured vs predicted step time and MFU of a ~1B-parameter phase on one GPU (H200 by default).

Prepared for a GPU session; it needs CUDA (megatron-core without the CPU adapter):

    .venv/bin/python bench/gpu_step.py --steps 100 --run-dir /tmp/gpu_step
    .venv/bin/python bench/gpu_step.py --dry-run      # setup only: works on a CPU

It writes a one-phase plan (a 1.0B dense Llama-shaped model, seq 2048, bf16, TP=PP=DP=1), runs
`scaleplan.executor.train` on it through torchrun for `--steps` steps, reads the metrics JSONL,
and prints the median measured step time (after `--skip` warm-up steps) and MFU against the
cost model's `estimate_step` for the same model, layout and GPU. Paste the table into
bench/RESULTS.md ("GPU step: measured vs predicted").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from scaleplan.costmodels.step import estimate_step
from scaleplan.specs.hardware import make_cluster
from scaleplan.specs.layout import LayoutSpec, validate_layout
from scaleplan.specs.model import ModelSpec
from scaleplan.specs.plan import PhaseSpec, Plan, ScheduleSpec


def bench_plan(
    gpu: str, seq: int, micro_batch: int, global_batch: int, steps: int, recompute: str
) -> Plan:
    model = ModelSpec(
        name="bench-1b",
        num_layers=18,
        hidden_size=2048,
        num_heads=16,
        num_kv_heads=8,
        ffn_hidden_size=5632,
        vocab_size=32000,
        seq_length=seq,
    )
    layout = LayoutSpec(
        micro_batch=micro_batch,
        global_batch=global_batch,
        recompute=recompute,
        precision="bf16",
        overlap_grad_reduce=False,
        overlap_param_gather=False,
    )
    validate_layout(layout, model, num_gpus=1, seq_length=seq)
    phase = PhaseSpec(
        name="pretrain",
        num_gpus=1,
        layout=layout,
        seq_length=seq,
        tokens=float(steps * global_batch * seq),
        steps=steps,
        schedule=ScheduleSpec(style="wsd", peak_lr=3e-4, min_lr=3e-5, warmup_steps=10),
        checkpoint_every_steps=10**6,
        time_s=0.0,
        cost_usd=0.0,
        mfu=0.0,
    )
    return Plan(
        name="gpu-step",
        cluster=make_cluster(gpu, 1),
        model=model,
        tokens=phase.tokens,
        phases=(phase,),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", default="H200-SXM-141GB")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the median")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    p.add_argument("--run-dir", default="/tmp/scaleplan_gpu_step")
    p.add_argument(
        "--dry-run", action="store_true", help="build plan, prediction and config; do not train"
    )
    args = p.parse_args()

    plan = bench_plan(
        args.gpu, args.seq, args.micro_batch, args.global_batch, args.steps, args.recompute
    )
    phase = plan.phases[0]
    pred = estimate_step(plan.model, plan.cluster, phase.layout, phase.seq_length)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path = run_dir / "plan.json"
    plan_path.write_text(plan.model_dump_json(indent=1))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "1",
        "-m",
        "scaleplan.executor.train",
        "--plan",
        str(plan_path),
        "--phase",
        "pretrain",
        "--run-dir",
        str(run_dir),
        "--max-steps",
        str(args.steps),
    ]
    print(
        f"model {plan.model.params_total / 1e9:.2f}B params, seq {args.seq}, mb {args.micro_batch}, "
        f"gb {args.global_batch}, {args.gpu}"
    )
    print(
        f"predicted: step {pred.step_time_s:.3f} s, MFU {pred.mfu:.3f}, memory {pred.memory_bytes / 2**30:.1f} GiB"
    )
    if args.dry_run:
        from scaleplan.executor.mcore_build import megatron_configs, phase_document

        # the GPU configs the entry point builds from the compiled document, validated on CPU
        config = megatron_configs(phase_document(plan, phase), "cuda")["transformer"]
        print(
            f"dry run: TransformerConfig ok (bf16={config.bf16}, layers={config.num_layers}); would run:"
        )
        print(" ".join(cmd))
        return
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "8"})
    rows = [
        json.loads(x) for x in (run_dir / "metrics" / "pretrain.jsonl").read_text().splitlines()
    ]
    steps = [r for r in rows if r["event"] == "step"][args.skip :]
    measured = statistics.median(r["step_time_s"] for r in steps)
    mfu = statistics.median(r["mfu"] for r in steps)
    print("| quantity | measured | predicted | error |")
    print("|---|---|---|---|")
    print(
        f"| step time (s) | {measured:.4f} | {pred.step_time_s:.4f} | {100 * (pred.step_time_s / measured - 1):+.1f} % |"
    )
    print(f"| MFU | {mfu:.3f} | {pred.mfu:.3f} | {100 * (pred.mfu / mfu - 1):+.1f} % |")
    print(f"({len(steps)} steps after {args.skip} warm-up; metrics in {run_dir / 'metrics'})")


if __name__ == "__main__":
    main()
