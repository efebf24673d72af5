"""Per-step metrics as JSONL, a rich progress bar, and MFU from the one FLOP count.

Records (one JSON object per line in RUN_DIR/metrics/PHASE.jsonl):
  {"event": "start", ...layout, model, hardware...}
  {"event": "step", "step", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "mfu", ...}
  {"event": "eval", "step", ...}      objective-specific evaluations
  {"event": "end", ...}

MFU = model FLOPs per token (`scaleplan.costmodels.flops.model_flops_per_token`, the project's
one definition: Narayanan et al. 2021 eq. 3 without recompute) x tokens/s / (GPUs x peak).
On a CPU the figure is reported against the plan's GPU peak and labelled `mfu_vs: "plan-gpu
peak (measured on CPU)"`: it measures nothing about a GPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from scaleplan.specs.plan import PhaseSpec, Plan


def flops_per_token(plan: Plan, phase: PhaseSpec) -> float:
    from scaleplan.costmodels.flops import model_flops_per_token

    return float(model_flops_per_token(plan.model, phase.seq_length))


def peak_flops(plan: Plan, phase: PhaseSpec) -> float:
    precision = phase.layout.precision
    return plan.cluster.gpu.peak_flops(
        "bf16" if precision == "fp8" and not plan.cluster.gpu.peak_tflops.fp8 else precision
    )


class MetricsWriter:
    """Written by one rank (rank 0); other ranks get a writer with `enabled=False`."""

    def __init__(
        self,
        path: Path,
        plan: Plan,
        phase: PhaseSpec,
        device: str,
        enabled: bool,
        append: bool,
        start_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.plan, self.phase, self.device = plan, phase, device
        self.model_flops_per_token = flops_per_token(plan, phase)
        self.peak = peak_flops(plan, phase)
        self._progress: Any = None
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if append and path.exists():  # a resume: records past its checkpoint are trained again
            keep = [
                line
                for line in path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            path.write_text("".join(keep))
        self._file = path.open("a" if append else "w")
        self._start_progress(start_step)

    @classmethod
    def for_phase(
        cls,
        run_dir: Path,
        plan: Plan,
        phase: PhaseSpec,
        device: str,
        rank: int,
        resume_from: Any,
        start_step: int,
    ) -> MetricsWriter:
        """The phase's `metrics/<phase>.jsonl` under run_dir, written by rank 0 (appended on a
        resume)."""
        return cls(
            run_dir / "metrics" / f"{phase.name}.jsonl", plan, phase, device,
            enabled=rank == 0, append=resume_from is not None, start_step=start_step,
        )  # fmt: skip

    def start(
        self,
        step: int,
        *,
        world_size: int,
        layout: Any,
        backend: str,
        init_from: Any,
        resumed_from: Any,
        seq_length: int,
        **extra: Any,
    ) -> None:
        """The run's first record: what ran, where, from which checkpoint (calibrate reads it)."""
        self.write(
            {
                "event": "start",
                "step": step,
                "device": self.device,
                "world_size": world_size,
                "layout": layout.model_dump(),
                "backend": backend,
                "init_from": str(init_from or ""),
                "resumed_from": str(resumed_from or ""),
                "seq_length": seq_length,
                "model": self.plan.model.model_dump(mode="json"),
                "cluster": self.plan.cluster.model_dump(mode="json"),
                "model_flops_per_token": self.model_flops_per_token,
                **extra,
            }
        )

    def _start_progress(self, start_step: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"[bold]{self.phase.name}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(
            self.phase.name, total=self.phase.steps, completed=start_step, info=""
        )
        self._progress.start()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), "phase": self.phase.name, **record}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def step(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float | None,
        step_time_s: float,
        tokens: int,
        extra: dict[str, float],
    ) -> None:
        if not self.enabled:
            return
        tokens_per_s = tokens / step_time_s if step_time_s > 0 else 0.0
        mfu = self.model_flops_per_token * tokens_per_s / (self.phase.num_gpus * self.peak)
        self.write(
            {
                "event": "step",
                "step": step,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": tokens,
                "tokens_per_s": tokens_per_s,
                "step_time_s": step_time_s,
                "mfu": mfu,
                "mfu_vs": f"{self.plan.cluster.gpu.name} peak"
                + (" (measured on CPU)" if self.device == "cpu" else ""),
                **extra,
            }
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=f"loss {loss:.4f} lr {lr:.2e}")

    def close(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.write({"event": "end", **record})
        if self._progress is not None:
            self._progress.stop()
        self._file.close()
