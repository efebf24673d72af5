"""Compiled configs checked by the engines' own code (megatron-core 0.16.1, DeepSpeed 0.19.8).

- every Megatron-core document constructs TransformerConfig / OptimizerConfig / DDP config;
- every DeepSpeed config passes `DeepSpeedConfig` (data-parallel world given by a stand-in mpu)
  and our known-key list, whose keys must be DeepSpeed's own;
- `initialize_model_parallel` on gloo with 4 processes gives the planned group sizes, and a
  GPTModel built on CPU has, on each pipeline stage, the parameter count that
  `scaleplan.costmodels.memory.params_per_rank` predicts;
- Megatron-LM flags parse with core_v0.16.1's own parser when MEGATRON_LM_DIR is set.

Run as a script under torchrun (`--worker CASES OUT`) it is the 4-process worker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from compile_cases import big_variants, tiny_variants  # noqa: E402
from factories import tiny_plan  # noqa: E402

from scaleplan.executor.compile import compile_plan  # noqa: E402
from scaleplan.executor.compile.common import phase_contexts  # noqa: E402
from scaleplan.executor.compile.deepspeed import KNOWN_TOP_LEVEL_KEYS, KNOWN_ZERO_KEYS  # noqa: E402
from scaleplan.executor.compile.megatron_core import megatron_core_document  # noqa: E402
from scaleplan.executor.compile.megatron_lm import megatron_lm_args  # noqa: E402
from scaleplan.specs.errors import NotImplementedFeature  # noqa: E402

needs_megatron = pytest.mark.skipif(
    importlib.util.find_spec("megatron.core") is None,
    reason="megatron-core not installed (pip install -e '.[engines]')",
)
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed not installed (pip install -e '.[engines]')",
)


def _all_plans() -> dict[str, Any]:
    return {**tiny_variants(), **big_variants()}


def _documents(engine: str) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name, plan in _all_plans().items():
        try:
            compiled = compile_plan(plan, engine)
        except NotImplementedFeature:
            continue
        suffix = {"megatron": "megatron_core.json", "deepspeed": "deepspeed.json"}[engine]
        docs += [
            (f"{name}/{f}", json.loads(t)) for f, t in compiled.files.items() if f.endswith(suffix)
        ]
    return docs


def _te_installed() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


@pytest.mark.slow
@needs_megatron
def test_every_megatron_document_constructs_megatron_configs() -> None:
    from scaleplan.executor.compile.megatron_core import build_configs

    docs = _documents("megatron")
    assert len(docs) >= 20
    checked_without_fp8 = []
    for name, doc in docs:
        tc = doc["transformer_config"]
        if tc.get("fp8") and tc.get("num_moe_experts") and not _te_installed():
            # megatron-core checks TransformerEngine's version for fp8 MoE: a GPU-only path.
            # Check everything else here; the fp8 part runs where TE is installed.
            doc = {
                **doc,
                "transformer_config": {k: v for k, v in tc.items() if not k.startswith("fp8")},
            }
            checked_without_fp8.append(name)
        cfg = build_configs(doc)
        t = cfg["transformer"]
        assert t.tensor_model_parallel_size == doc["parallel"]["tensor_model_parallel_size"], name
        assert (
            t.num_layers == tc["num_layers"]
            and cfg["optimizer"].lr == doc["optimizer_config"]["lr"]
        )
        assert (
            cfg["ddp"].use_distributed_optimizer
            == doc["optimizer_config"]["use_distributed_optimizer"]
        )
    assert checked_without_fp8 in ([], ["deepseek_v3_ep32/01-pretrain/megatron_core.json"])
    # the constructors do reject a bad document: this check can fail
    bad = dict(
        docs[0][1],
        transformer_config={**docs[0][1]["transformer_config"], "recompute_granularity": "full"},
    )
    with pytest.raises((ValueError, AssertionError)):
        build_configs(bad)


class _DataParallelOnly:
    """The mpu DeepSpeedConfig asks for the data-parallel world size (AutoTP/pipeline ranks excluded)."""

    def __init__(self, dp: int) -> None:
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp


@pytest.mark.slow
@needs_deepspeed
def test_every_deepspeed_config_passes_deepspeed_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import deepspeed.runtime.config as ds_config
    from deepspeed.runtime.config import DeepSpeedConfig

    # DeepSpeedConfig asks the mpu only inside a running job (it calls dist.get_rank() first);
    # pose as rank 0 so the mpu's data-parallel size enters the batch arithmetic check.
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)

    docs = _documents("deepspeed")
    assert len(docs) >= 15
    for name, cfg in docs:
        dp = cfg["train_batch_size"] // (
            cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"]
        )
        ds = DeepSpeedConfig(json.loads(json.dumps(cfg)), mpu=_DataParallelOnly(dp))
        assert ds.train_batch_size == cfg["train_batch_size"], name
        assert ds.gradient_accumulation_steps == cfg["gradient_accumulation_steps"], name
        assert ds.zero_optimization_stage == cfg["zero_optimization"]["stage"], name
        assert ds.bfloat16_config.enabled == ("bf16" in cfg), name
        if "scheduler" in cfg:
            assert ds.scheduler_name == cfg["scheduler"]["type"], name
    # DeepSpeed rejects inconsistent batch arithmetic: the same config with the wrong dp fails
    name, cfg = next((n, c) for n, c in docs if c["gradient_accumulation_steps"] > 1)
    with pytest.raises(AssertionError):
        DeepSpeedConfig(json.loads(json.dumps(cfg)), mpu=_DataParallelOnly(3))


@needs_deepspeed
def test_known_deepspeed_keys_are_deepspeed_keys() -> None:
    """Every key we accept appears as a quoted key in DeepSpeed's own runtime sources."""
    root = Path(importlib.util.find_spec("deepspeed").origin).parent / "runtime"  # type: ignore[arg-type, union-attr]
    source = "\n".join(p.read_text(errors="ignore") for p in root.rglob("*.py"))
    for key in sorted(KNOWN_TOP_LEVEL_KEYS | KNOWN_ZERO_KEYS):
        assert re.search(rf"['\"]{key}['\"]", source) or re.search(rf"\b{key}\s*:", source), key


# --- every example plan ----------------------------------------------------------------------

EXAMPLES = sorted((TESTS.parent / "specs" / "examples").glob("*.yaml"))


@pytest.mark.slow
@needs_megatron
@needs_deepspeed
def test_every_example_plan_compiles_where_its_layouts_allow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plan each shipped budget; compile every phase with every engine whose layout allows it;
    every emitted document passes the engine's own validation."""
    if not EXAMPLES or importlib.util.find_spec("scaleplan.planner.planning") is None:
        pytest.skip("no example budgets or planner yet")
    import deepspeed.runtime.config as ds_config

    from scaleplan.executor.compile.megatron_core import build_configs
    from scaleplan.planner.planning import plan as make_plan
    from scaleplan.specs.budget import BudgetSpec
    from scaleplan.specs.loader import load_spec

    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
    compiled_phases: dict[str, int] = {"megatron": 0, "megatron-lm": 0, "deepspeed": 0}
    for path in EXAMPLES:
        plan = make_plan(load_spec(BudgetSpec, path))
        # scaleplan's own entry point (megatron-core) runs every layout the planner emits
        compile_plan(plan, "megatron")
        for ctx in phase_contexts(plan):
            for engine in compiled_phases:
                try:
                    out = compile_plan(plan, engine, phases=(ctx.name,))
                except NotImplementedFeature as err:
                    assert engine != "megatron" and err.field, (path.name, ctx.name, err)
                    continue
                compiled_phases[engine] += 1
                for name, text in out.files.items():
                    if name.endswith("megatron_core.json"):
                        doc = json.loads(text)
                        tc = doc["transformer_config"]
                        if tc.get("fp8") and tc.get("num_moe_experts") and not _te_installed():
                            doc["transformer_config"] = {
                                k: v for k, v in tc.items() if not k.startswith("fp8")
                            }
                        build_configs(doc)
                    elif name.endswith("deepspeed.json"):
                        cfg = json.loads(text)
                        dp = ctx.phase.layout.dp
                        ds = ds_config.DeepSpeedConfig(cfg, mpu=_DataParallelOnly(dp))
                        assert ds.train_batch_size == ctx.phase.layout.global_batch
    assert compiled_phases["megatron"] >= len(EXAMPLES) * 3
    assert compiled_phases["megatron-lm"] > 0 and compiled_phases["deepspeed"] > 0


# --- process groups and per-rank parameters (4 processes, gloo) ------------------------------

FOUR_RANK_CASES = {
    "tp2pp2": tiny_plan(tp=2, pp=2, phases=("pretrain",)),
    "tp2dp2": tiny_plan(tp=2, dp=2, phases=("pretrain",)),
    "pp2dp2_vp2": tiny_plan(
        pp=2, dp=2, phases=("pretrain",), phase_layouts={"pretrain": {"vp": 2}}
    ),
    "tp4_gqa_split_kv": tiny_plan(tp=4, phases=("pretrain",)),
    "moe_tp2dp2_ep2": tiny_plan(tp=2, dp=2, ep=2, moe=True, phases=("pretrain",)),
    # MoE parallel folding: EP 2 spans TP ranks (etp 1, dp 1), expert DP 2
    "moe_tp4_ep2_etp1_folded": tiny_plan(tp=4, ep=2, etp=1, moe=True, phases=("pretrain",)),
    "moe_dp4_ep2_pp1": tiny_plan(dp=4, ep=2, moe=True, phases=("pretrain",)),
    "moe_pp2_dp2_ep2": tiny_plan(pp=2, dp=2, ep=2, moe=True, phases=("pretrain",)),
    # context parallel: groups only (the local attention refuses cp>1; TE's runs it on GPUs)
    "cp2_tp2": tiny_plan(tp=2, phases=("pretrain",), phase_layouts={"pretrain": {"cp": 2}}),
    # embedding and loss counted as pipeline layers (account_for_embedding/loss_in_pipeline_
    # split): 6 layers on pp=4 hold 1, 2, 2, 1 layers; on pp=2 x vp=2 chunks of 1, 2 | 2, 1
    "split_pp4_6_layers": tiny_plan(
        pp=4,
        num_layers=6,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"account_embedding_loss_in_pipeline_split": True}},
    ),
    "split_pp2dp2_vp2_6_layers": tiny_plan(
        pp=2,
        dp=2,
        num_layers=6,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"vp": 2, "account_embedding_loss_in_pipeline_split": True}},
    ),
    # balanced uneven layout (pipeline_model_parallel_layout): 7 layers on pp=4 hold 2, 2, 2, 1;
    # 6 layers on pp=4 leave the last stage no decoder layer; on pp=2 x vp=2 chunks 2, 2 | 2, 1
    "balanced_pp4_7_layers": tiny_plan(
        pp=4,
        num_layers=7,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"balanced_pipeline_layout": True}},
    ),
    "balanced_pp4_6_layers_empty_last": tiny_plan(
        pp=4,
        num_layers=6,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"balanced_pipeline_layout": True}},
    ),
    "balanced_pp2dp2_vp2_7_layers": tiny_plan(
        pp=2,
        dp=2,
        num_layers=7,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"vp": 2, "balanced_pipeline_layout": True}},
    ),
    # MoE layers (experts split over EP 2) with the balanced layout over pp=2 x vp=2
    "moe_balanced_pp2dp2_vp2_ep2_7_layers": tiny_plan(
        pp=2,
        dp=2,
        ep=2,
        moe=True,
        num_layers=7,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"vp": 2, "balanced_pipeline_layout": True}},
    ),
}


def _worker(cases_path: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from scaleplan.executor.compile.megatron_core import build_configs

    torch.manual_seed(0)
    rank = dist.get_rank()
    results = []
    for case in json.loads(Path(cases_path).read_text()):
        doc = case["doc"]
        par = doc["parallel"]
        ps.initialize_model_parallel(**par)
        vp = par["virtual_pipeline_model_parallel_size"]
        sizes = {
            "tp": ps.get_tensor_model_parallel_world_size(),
            "pp": ps.get_pipeline_model_parallel_world_size(),
            "cp": ps.get_context_parallel_world_size(),
            "dp": ps.get_data_parallel_world_size(),
            "ep": ps.get_expert_model_parallel_world_size(),
            "etp": ps.get_expert_tensor_parallel_world_size(),
            "vp": ps.get_virtual_pipeline_model_parallel_world_size() or 1,
        }
        # Sequence parallelism moves no parameters, and torch's LayerNorm (no TE on CPU)
        # refuses it, so the parameter count builds without it.
        cpu = {
            "use_cpu_initialization": True,
            "perform_initialization": False,
            "sequence_parallel": False,
        }
        if doc["transformer_config"].get("num_moe_experts"):
            # the all-to-all dispatcher allocates CUDA streams; dispatchers hold no parameters
            cpu["moe_token_dispatcher_type"] = "allgather"
        tc = build_configs(doc, **cpu)["transformer"]
        gm = doc["gpt_model"]
        spec = get_gpt_layer_local_spec(
            num_experts=tc.num_moe_experts, moe_grouped_gemm=False, normalization=tc.normalization
        )
        params: int | None = 0
        if par["context_parallel_size"] > 1:
            params = None
        for v in range(vp or 1) if params is not None else ():
            vstage = v if vp else None
            model = GPTModel(
                config=tc,
                transformer_layer_spec=spec,
                vocab_size=gm["vocab_size"],
                max_sequence_length=gm["max_sequence_length"],
                pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vstage),
                post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vstage),
                share_embeddings_and_output_weights=gm["share_embeddings_and_output_weights"],
                position_embedding_type=gm["position_embedding_type"],
                rotary_base=int(gm["rotary_base"]),
                vp_stage=vstage,
            )
            params += sum(p.numel() for p in model.parameters())  # type: ignore[operator]
        results.append(
            {
                "case": case["name"],
                "sizes": sizes,
                "pp_rank": ps.get_pipeline_model_parallel_rank(),
                "params": params,
            }
        )
        ps.destroy_model_parallel()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.slow
@needs_megatron
def test_process_groups_and_per_rank_params_match_plan_and_cost_model(tmp_path: Path) -> None:
    from scaleplan.costmodels.memory import params_per_rank

    cases = []
    for name, plan in FOUR_RANK_CASES.items():
        (ctx,) = phase_contexts(plan)
        cases.append({"name": name, "doc": megatron_core_document(ctx)})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "4",
        "--master-port",
        "29631",
        __file__,
        "--worker",
        str(tmp_path / "cases.json"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    mismatches = []
    for i, (name, plan) in enumerate(FOUR_RANK_CASES.items()):
        lay = plan.phases[0].layout
        planned = {
            "tp": lay.tp,
            "pp": lay.pp,
            "cp": lay.cp,
            "dp": lay.dp,
            "ep": lay.ep,
            "etp": lay.expert_tp,
            "vp": lay.vp,
        }
        for r in range(4):
            got = by_rank[r][i]
            assert got["case"] == name and got["sizes"] == planned, (name, r, got["sizes"])
            stage = (
                "first"
                if got["pp_rank"] == 0
                else "last"
                if got["pp_rank"] == lay.pp - 1
                else "middle"
            )
            if got["params"] is None:
                continue
            predicted = params_per_rank(plan.model, lay, stage)
            if predicted != got["params"]:
                mismatches.append(
                    (
                        name,
                        f"{name} rank {r} ({stage}): megatron {got['params']} vs cost model {predicted}",
                    )
                )
    assert not mismatches, "\n".join(m for _, m in mismatches)


# --- Megatron-LM's own parser -------------------------------------------------------------

MEGATRON_LM_DIR = os.environ.get("MEGATRON_LM_DIR")

_PARSE = """
import argparse, json, sys
from megatron.training.arguments import add_megatron_arguments
parser = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
add_megatron_arguments(parser)
for name, argv in json.load(open(sys.argv[1])):
    args, unknown = parser.parse_known_args(argv)
    assert not unknown, (name, unknown)
print("parsed", len(json.load(open(sys.argv[1]))))
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not MEGATRON_LM_DIR,
    reason="set MEGATRON_LM_DIR to a Megatron-LM core_v0.16.1 checkout to parse the flags",
)
def test_megatron_lm_flags_parse_with_megatron_lms_parser(tmp_path: Path) -> None:
    arg_lists = []
    for name, plan in _all_plans().items():
        for ctx in phase_contexts(plan):
            try:
                lm = megatron_lm_args(ctx)
            except NotImplementedFeature:
                continue
            data = [x for w, p in lm.data for x in (str(w), p)]
            extra = ["--data-path", *data, "--save", "s", "--load", "l", *lm.first_start_flags]
            for tok in ["tok"] if lm.sft else [None, "tok"]:
                arg_lists.append(
                    (f"{name}/{ctx.name}/{tok}", [*lm.args, *lm.tokenizer_args(tok), *extra])
                )
    (tmp_path / "args.json").write_text(json.dumps(arg_lists))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [MEGATRON_LM_DIR, os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE, str(tmp_path / "args.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"parsed {len(arg_lists)}" in proc.stdout


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2], sys.argv[3])
