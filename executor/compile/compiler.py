"""Plan -> every file a cluster runs, for every phase: built and checked in memory, then written.

Nothing is written when any phase fails; an existing non-empty output folder is kept unless
`force` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.plan import Plan

from .common import ENGINES, PhaseContext, phase_contexts
from .deepspeed import DEEPSPEED_VERSION, deepspeed_config, schedule_note
from .megatron_core import MEGATRON_CORE_VERSION, megatron_core_document
from .megatron_lm import MEGATRON_LM_VERSION, megatron_lm_args
from .scripts import chain_script, local_chain_script, sbatch_script, torchrun_script

ENGINE_VERSIONS = {
    "megatron": f"megatron-core {MEGATRON_CORE_VERSION}",
    "megatron-lm": f"Megatron-LM {MEGATRON_LM_VERSION} (pretrain_gpt.py)",
    "deepspeed": f"deepspeed {DEEPSPEED_VERSION}",
}
MANIFEST = "manifest.json"
CHAIN_SCRIPT = "submit_all.sh"
LOCAL_SCRIPT = "run_all_local.sh"


@dataclass
class CompiledPlan:
    """Files (relative path -> text) plus which are executable, the phase folders and notes."""

    engine: str
    files: dict[str, str] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)
    phases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, path: str, text: str, executable: bool = False) -> None:
        self.files[path] = text
        if executable:
            self.executable.add(path)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _phase_files(
    ctx: PhaseContext, engine: str, phase_dir: str, run_dir: str | None, out: CompiledPlan
) -> None:
    lm = None
    try:
        if engine == "megatron":
            out.add(f"{phase_dir}/megatron_core.json", _dump(megatron_core_document(ctx)))
        elif engine == "deepspeed":
            cfg = deepspeed_config(ctx)
            out.add(f"{phase_dir}/deepspeed.json", _dump(cfg))
            note = schedule_note(ctx, cfg)
            if note:
                out.notes.append(note)
        else:
            lm = megatron_lm_args(ctx)
            out.add(
                f"{phase_dir}/megatron_lm_args.json",
                _dump(
                    {
                        "megatron_lm_version": MEGATRON_LM_VERSION,
                        "args": lm.args,
                        "data_path": lm.data,
                        "save": lm.save_dir,
                        "load_first_start": lm.init_dir,
                        "first_start_flags": lm.first_start_flags,
                    }
                ),
            )
    except SpecError as err:
        field_path = err.field or ctx.field
        reason = (
            err.reason
            if err.reason.startswith(f"phase {ctx.name}")
            else f"phase {ctx.name}: {err.reason}"
        )
        raise type(err)(reason, field=field_path, source=err.source) from None
    out.add(
        f"{phase_dir}/torchrun.sh",
        torchrun_script(ctx, engine, phase_dir, run_dir, lm),
        executable=True,
    )
    out.add(f"{phase_dir}/sbatch.sh", sbatch_script(ctx, phase_dir), executable=True)


def _gpu_run_notes(plan: Plan, ctxs: list[PhaseContext]) -> list[str]:
    """Phases the entry point these scripts launch cannot train even on GPUs, and why."""
    from scaleplan.executor.run_support import run_refusal

    notes = []
    for ctx in ctxs:
        refusal = run_refusal(plan, ctx.phase, "cuda")
        if refusal is None:
            continue
        hint = (
            "; --engine megatron-lm compiles it for Megatron-LM's pretrain_gpt.py (Megatron-FSDP)"
            if ctx.phase.layout.zero_stage >= 2 and ctx.phase.objective.kind == "lm"
            else ""
        )
        notes.append(f"phase {ctx.name}: scaleplan run cannot train it: {refusal.reason}{hint}")
    return notes


def compile_plan(
    plan: Plan,
    engine: str = "megatron",
    phases: tuple[str, ...] | None = None,
    run_dir: str | None = None,
) -> CompiledPlan:
    """Build every file in memory; raise `SpecError` (nothing built) when any phase fails."""
    if engine not in ENGINES:
        raise SpecError(
            f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}", field="engine"
        )
    ctxs = phase_contexts(plan)
    if phases:
        unknown = sorted(set(phases) - {c.name for c in ctxs})
        if unknown:
            raise SpecError(f"the plan has no phase {', '.join(unknown)}", field="phases")
        ctxs = [c for c in ctxs if c.name in phases]
    out = CompiledPlan(engine=engine)
    out.add("plan.json", plan.model_dump_json(indent=2) + "\n")
    dirs: list[str] = []
    refused: list[tuple[PhaseContext, SpecError]] = []
    for ctx in ctxs:
        phase_dir = f"{ctx.index + 1:02d}-{ctx.name}"
        try:
            _phase_files(ctx, engine, phase_dir, run_dir, out)
        except SpecError as err:
            refused.append((ctx, err))
            continue
        dirs.append(phase_dir)
        out.phases.append(
            {
                "name": ctx.name,
                "dir": phase_dir,
                "nodes": ctx.nodes,
                "gpus_per_node": ctx.gpus_per_node,
                "num_gpus": ctx.phase.num_gpus,
                "steps": ctx.phase.steps,
                "init_from": ctx.phase.init_from,
            }
        )
    if refused:
        _, first = refused[0]
        ok = [c.name for c in ctxs if c.name not in {r.name for r, _ in refused}]
        if ok and all(isinstance(e, NotImplementedFeature) for _, e in refused):
            hint = f" (the {engine} engine can compile: --phases {','.join(ok)})"
            raise NotImplementedFeature(first.reason + hint, field=first.field, source=first.source)
        raise first
    if (
        ctxs
        and ctxs[0].phase.init_from is not None
        and ctxs[0].phase.init_from not in {c.name for c in ctxs}
    ):
        out.notes.append(
            f"phase {ctxs[0].name} starts from {ctxs[0].phase.init_from}'s checkpoint, which this "
            "compile does not produce: RUN_DIR must already hold it"
        )
    if engine == "megatron":
        out.notes += _gpu_run_notes(plan, ctxs)
    out.add(CHAIN_SCRIPT, chain_script(ctxs, dirs, run_dir), executable=True)
    out.add(LOCAL_SCRIPT, local_chain_script(ctxs, dirs, run_dir), executable=True)
    manifest = {
        "plan": plan.name,
        "schema_version": plan.schema_version,
        "engine": engine,
        "engine_version": ENGINE_VERSIONS[engine],
        "run_dir": run_dir,
        "phases": out.phases,
        "chain_script": CHAIN_SCRIPT,
        "local_script": LOCAL_SCRIPT,
        "notes": out.notes,
    }
    out.add(MANIFEST, _dump(manifest))
    return out


def write_compiled(compiled: CompiledPlan, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Write into `out_dir` (all or nothing: files go to a sibling temp folder, then move in)."""
    dest = Path(out_dir)
    if dest.exists() and not dest.is_dir():
        raise SpecError("exists and is not a directory", source=str(dest))
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise SpecError(
            "output directory is not empty (use --force to replace it)", source=str(dest)
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for rel, text in compiled.files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            os.chmod(path, 0o755 if rel in compiled.executable else 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [dest / rel for rel in compiled.files]
