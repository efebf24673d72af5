"""`scaleplan compile`: a plan -> engine configs and launch scripts for every phase.

Public API: `compile_plan(plan, engine, phases=None, run_dir=None) -> CompiledPlan` (in memory,
validated) and `write_compiled(compiled, out_dir, force=False)`. Engine documents per phase:
`megatron_core.megatron_core_document` (+ `build_configs` to make megatron.core objects),
`megatron_lm.megatron_lm_args`, `deepspeed.deepspeed_config`.
"""

from __future__ import annotations

from .compiler import CompiledPlan, compile_plan, write_compiled

__all__ = ["CompiledPlan", "compile_plan", "write_compiled"]
