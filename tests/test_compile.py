"""`scaleplan compile`: engine documents, batch arithmetic, lineage, CLI behaviour, shell safety.

Engine-side validation (megatron-core constructors, DeepSpeedConfig, process groups, parameter
counts) lives in test_compile_engines.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from compile_cases import LM_PHASES, big_variants, tiny_variants
from factories import tiny_plan

from scaleplan.executor.compile import compile_plan, write_compiled
from scaleplan.executor.compile.common import phase_contexts
from scaleplan.executor.compile.deepspeed import (
    KNOWN_TOP_LEVEL_KEYS,
    check_known_keys,
    deepspeed_config,
)
from scaleplan.executor.compile.megatron_lm import megatron_lm_args
from scaleplan.planner.cli import main
from scaleplan.specs.errors import NotImplementedFeature, SpecError
from scaleplan.specs.plan import Plan

WEIRD = "run with 'quotes' \"dq\" $(touch pwned) `x` & ; *"


def _write_plan(path: Path, plan: Plan | dict) -> Path:
    text = plan.model_dump_json(indent=2) if isinstance(plan, Plan) else json.dumps(plan)
    path.write_text(text)
    return path


def _args_map(args: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    key = None
    for a in args:
        if a.startswith("--"):
            key = a
            out[key] = []
        else:
            assert key is not None
            out[key].append(a)
    return out


# --- documents ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["megatron", "megatron-lm", "deepspeed"])
def test_every_tiny_variant_compiles_or_is_refused_with_reason(engine: str) -> None:
    compiled = 0
    refused = {"deepspeed": {"tp2pp2", "moe_ep2"}}.get(engine, set())
    for name, plan in tiny_variants().items():
        try:
            out = compile_plan(plan, engine)
        except NotImplementedFeature as err:
            assert name in refused, (name, err)
            assert "deepspeed" in err.reason.lower()
            continue
        compiled += 1
        manifest = json.loads(out.files["manifest.json"])
        assert [p["name"] for p in manifest["phases"]] == [p.name for p in plan.phases]
        # the compiled folder is self-contained: its plan.json round-trips
        assert Plan.model_validate_json(out.files["plan.json"]) == plan
        for p in manifest["phases"]:
            assert {f"{p['dir']}/torchrun.sh", f"{p['dir']}/sbatch.sh"} <= set(out.files)
    assert compiled == len(tiny_variants()) - len(refused)


def test_megatron_core_document_maps_layout_model_and_schedule() -> None:
    plan = tiny_variants()["tp2pp2"]
    doc = json.loads(compile_plan(plan, "megatron").files["01-pretrain/megatron_core.json"])
    tc, oc, ddp = doc["transformer_config"], doc["optimizer_config"], doc["ddp_config"]
    assert (tc["tensor_model_parallel_size"], tc["pipeline_model_parallel_size"]) == (2, 2)
    assert tc["pipeline_dtype"] == "bfloat16" and tc["bf16"] is True
    assert (tc["num_layers"], tc["hidden_size"], tc["num_attention_heads"]) == (4, 64, 4)
    assert (
        tc["num_query_groups"] == 2 and tc["gated_linear_unit"] and tc["normalization"] == "RMSNorm"
    )
    assert oc["lr"] == plan.phases[0].schedule.peak_lr and oc["use_distributed_optimizer"] is False
    assert ddp["overlap_param_gather"] is False  # nothing to gather without a sharded optimizer
    tr = doc["training"]
    assert (
        tr["num_microbatches"] == 8 // (1 * 2)
        and tr["checkpoint"]["save_dir"] == "checkpoints/pretrain"
    )
    anneal = json.loads(compile_plan(plan, "megatron").files["02-anneal/megatron_core.json"])
    assert anneal["training"]["checkpoint"]["init_from_dir"] == "checkpoints/pretrain"
    assert [d["name"] for d in anneal["training"]["data"]] == ["hq", "web"]
    assert sum(d["weight"] for d in anneal["training"]["data"]) == pytest.approx(1.0)


def test_recompute_and_moe_mapping() -> None:
    big = big_variants()
    doc = json.loads(
        compile_plan(big["llama3_8b_fp8_cp2"], "megatron").files["01-pretrain/megatron_core.json"]
    )
    tc = doc["transformer_config"]
    assert (tc["recompute_granularity"], tc["recompute_method"], tc["recompute_num_layers"]) == (
        "full",
        "block",
        2,
    )
    assert tc["fp8"] == "hybrid" and tc["context_parallel_size"] == 2
    ds = json.loads(
        compile_plan(big["deepseek_v3_ep32"], "megatron").files["01-pretrain/megatron_core.json"]
    )
    tc = ds["transformer_config"]
    assert ds["transformer_config_class"] == "MLATransformerConfig"
    assert tc["moe_layer_freq"] == [0, 0, 0] + [1] * 58 and tc["num_moe_experts"] == 256
    assert (
        tc["moe_shared_expert_intermediate_size"] == 2048 and tc["expert_model_parallel_size"] == 32
    )


def test_megatron_lm_flags_for_big_interleaved_layout() -> None:
    plan = big_variants()["llama3_70b_tp8pp4vp5"]
    a = _args_map(megatron_lm_args(phase_contexts(plan)[0]).args)
    assert a["--tensor-model-parallel-size"] == ["8"] and a["--pipeline-model-parallel-size"] == [
        "4"
    ]
    assert a["--num-layers-per-virtual-pipeline-stage"] == [
        "4"
    ]  # 80 layers / (4 stages * 5 chunks)
    for flag in (
        "--sequence-parallel",
        "--use-distributed-optimizer",
        "--bf16",
        "--swiglu",
        "--group-query-attention",
        "--untie-embeddings-and-output-weights",
        "--overlap-param-gather",
    ):
        assert a[flag] == [], flag
    assert a["--recompute-granularity"] == ["selective"] and a["--num-query-groups"] == ["8"]
    assert a["--rotary-base"] == ["500000"] and a["--normalization"] == ["RMSNorm"]
    assert a["--lr-decay-style"] == ["WSD"] and a["--lr-wsd-decay-iters"] == ["200"]
    assert a["--train-iters"] == ["1000"] and a["--global-batch-size"] == ["512"]
    moe = _args_map(megatron_lm_args(phase_contexts(big_variants()["deepseek_v3_ep32"])[0]).args)
    assert moe["--moe-layer-freq"] == ["([0]*3+[1]*58)"] and moe["--multi-latent-attention"] == []
    assert moe["--fp8-format"] == ["hybrid"] and moe["--expert-model-parallel-size"] == ["32"]


def test_embedding_and_loss_in_pipeline_split_compile_to_megatron_flags() -> None:
    """The layout option becomes TransformerConfig's two account_for_* fields and Megatron-LM's
    two flags; the virtual-stage size counts the embedding and loss slots; DeepSpeed refuses."""
    from scaleplan.executor.compile.megatron_core import transformer_config

    (ctx,) = phase_contexts(big_variants()["llama3_405b_tp8pp8vp8_split"])
    _, tc = transformer_config(ctx)
    assert tc["account_for_embedding_in_pipeline_split"] is True
    assert tc["account_for_loss_in_pipeline_split"] is True
    assert tc["num_layers"] == 126 and tc["virtual_pipeline_model_parallel_size"] == 8
    a = _args_map(megatron_lm_args(ctx).args)
    assert a["--account-for-embedding-in-pipeline-split"] == []
    assert a["--account-for-loss-in-pipeline-split"] == []
    # Megatron-LM: vp = (126 + 2) / pp / this = 8
    assert a["--num-layers-per-virtual-pipeline-stage"] == ["2"] and a["--num-layers"] == ["126"]
    off = phase_contexts(big_variants()["llama3_70b_tp8pp4vp5"])[0]
    assert not any(k.startswith("account_for") for k in transformer_config(off)[1])
    assert "--account-for-loss-in-pipeline-split" not in megatron_lm_args(off).args
    split_pp2 = tiny_plan(
        pp=2,
        num_layers=6,
        phases=("pretrain",),
        phase_layouts={"pretrain": {"account_embedding_loss_in_pipeline_split": True}},
    )
    with pytest.raises(NotImplementedFeature, match="embedding/loss") as info:
        deepspeed_config(phase_contexts(split_pp2)[0])
    assert info.value.field.endswith("layout.account_embedding_loss_in_pipeline_split")


def test_megatron_lm_lineage_anneal_continues_and_later_phases_finetune() -> None:
    plan = tiny_plan(phases=LM_PHASES, steps=20)
    ctxs = phase_contexts(plan)
    pre, ann, lc, sft = (megatron_lm_args(c) for c in ctxs)
    assert pre.init_dir is None and pre.first_start_flags == []
    # the WSD anneal continues the stable run: iterations counted on, decay = its own steps
    a = _args_map(ann.args)
    assert (
        a["--train-iters"] == ["40"]
        and a["--lr-wsd-decay-iters"] == ["20"]
        and a["--lr-warmup-iters"] == ["0"]
    )
    assert ann.init_dir == "checkpoints/pretrain" and ann.first_start_flags == [
        "--override-opt_param-scheduler"
    ]
    lca = _args_map(lc.args)
    assert lca["--lr-decay-style"] == ["cosine"] and lca["--train-iters"] == ["20"]
    assert lca["--seq-length"] == ["128"] and lca["--rotary-base"] == ["40000"]
    assert lc.first_start_flags == ["--finetune"] and lc.init_dir == "checkpoints/anneal"
    assert "--sft" in sft.args and sft.init_dir == "checkpoints/long_context"


@pytest.mark.parametrize("name", list(tiny_variants()) + list(big_variants()))
def test_deepspeed_batch_arithmetic_and_known_keys(name: str) -> None:
    plan = {**tiny_variants(), **big_variants()}[name]
    for ctx in phase_contexts(plan):
        try:
            cfg = deepspeed_config(ctx)
        except NotImplementedFeature as err:
            assert name in ("tp2pp2", "moe_ep2") or name.startswith(
                ("llama3_70b", "llama3_405b", "llama3_8b_fp8", "mixtral", "deepseek")
            )
            assert err.reason.startswith("DeepSpeed: ")
            continue
        lay = ctx.phase.layout
        assert (
            cfg["train_batch_size"]
            == cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * lay.dp
        )
        assert set(cfg) <= KNOWN_TOP_LEVEL_KEYS
        assert cfg["zero_optimization"]["stage"] == max(
            lay.zero_stage, int(lay.distributed_optimizer)
        )


def test_deepspeed_schedules_are_exact_or_absent() -> None:
    big = big_variants()
    cos = deepspeed_config(phase_contexts(big["llama3_8b_zero3_offload"])[0])
    assert cos["scheduler"]["type"] == "WarmupCosineLR"
    assert cos["scheduler"]["params"]["cos_min_ratio"] == pytest.approx(0.1)
    assert cos["zero_optimization"]["offload_param"]["device"] == "cpu"
    ctxs = phase_contexts(tiny_plan(phases=("pretrain", "anneal")))
    assert deepspeed_config(ctxs[0])["scheduler"]["type"] == "WarmupLR"  # WSD stable part
    assert "scheduler" not in deepspeed_config(ctxs[1])  # WSD decay to min_lr>0: no exact built-in
    with pytest.raises(SpecError, match="unknown DeepSpeed top-level keys"):
        check_known_keys({"zero_optimisation": {}})


def test_broken_layouts_give_clear_errors() -> None:
    plan = tiny_plan(phases=("pretrain",))
    bad_pp = plan.model_dump()
    bad_pp["phases"][0]["layout"]["pp"] = 3
    bad_pp["phases"][0]["num_gpus"] = 3
    bad_pp["cluster"]["num_gpus"] = 3
    with pytest.raises(SpecError, match="num_layers=4 is not divisible by pp") as err:
        compile_plan(Plan.model_validate(bad_pp), "megatron")
    assert err.value.field == "phases[0].layout.vp"
    ds = tiny_plan(pp=2, dp=2, zero_stage=1, phases=("pretrain",)).model_dump()
    ds["phases"][0]["layout"]["zero_stage"] = 3
    with pytest.raises(SpecError, match="ZeRO-2/3 with pipeline parallelism cannot be compiled"):
        compile_plan(Plan.model_validate(ds), "deepspeed")
    with pytest.raises(NotImplementedFeature, match="no DPO objective"):
        compile_plan(tiny_plan(phases=("pretrain", "dpo")), "megatron-lm")
    out = compile_plan(tiny_plan(phases=("pretrain", "dpo")), "megatron-lm", phases=("pretrain",))
    assert "01-pretrain/megatron_lm_args.json" in out.files


# --- CLI ------------------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_compile_writes_refuses_overwrite_and_prints_launch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _write_plan(tmp_path / "plan.json", tiny_plan(phases=("pretrain", "anneal")))
    out = tmp_path / "out"
    code, stdout, _ = _cli(["compile", str(plan), "--out", str(out)], capsys)
    assert code == 0
    assert "submit_all.sh" in stdout and "torchrun.sh" in stdout and "scaleplan submit" in stdout
    assert (out / "02-anneal" / "megatron_core.json").is_file()
    assert os.stat(out / "01-pretrain" / "torchrun.sh").st_mode & stat.S_IXUSR
    code, _, err = _cli(["compile", str(plan), "--out", str(out), "--engine", "deepspeed"], capsys)
    assert (
        code == 2 and "not empty" in err and not (out / "01-pretrain" / "deepspeed.json").exists()
    )
    code, stdout, _ = _cli(
        ["compile", str(plan), "--out", str(out), "--engine", "deepspeed", "--force", "--json"],
        capsys,
    )
    assert code == 0 and json.loads(stdout)["engine"] == "deepspeed"
    assert (out / "01-pretrain" / "deepspeed.json").is_file() and not (
        out / "01-pretrain" / "megatron_core.json"
    ).exists()


@pytest.mark.parametrize(
    "engine,edit,message",
    [
        ("megatron", {"pp": 3}, "not divisible by pp"),
        (
            "deepspeed",
            {"pp": 2, "zero_stage": 3},
            "ZeRO-2/3 with pipeline parallelism cannot be compiled",
        ),
    ],
)
def test_cli_hand_broken_plan_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str, edit: dict, message: str
) -> None:
    data = tiny_plan(phases=("pretrain", "anneal")).model_dump(mode="json")
    gpus = edit.get("pp", 1)
    data["cluster"]["num_gpus"] = gpus
    data["phases"][1]["layout"].update(edit)  # only the second phase is broken
    data["phases"][1]["num_gpus"] = gpus
    plan = _write_plan(tmp_path / "broken.json", data)
    code, out, err = _cli(
        ["compile", str(plan), "--out", str(tmp_path / "o"), "--engine", engine], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith(f"error: {plan}: phases[1].layout.") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and [p.name for p in tmp_path.iterdir()] == ["broken.json"]


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    compiled = compile_plan(tiny_plan(phases=("pretrain",)), "megatron")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("x")
    with pytest.raises(SpecError, match="not empty"):
        write_compiled(compiled, tmp_path / "keep")
    assert [p.name for p in (tmp_path / "keep").iterdir()] == ["mine.txt"]
    written = write_compiled(compiled, tmp_path / "keep", force=True)
    assert not (tmp_path / "keep" / "mine.txt").exists() and all(p.is_file() for p in written)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]  # no temp folder left behind


# --- shell safety ---------------------------------------------------------------------------

needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed (apt-get install shellcheck)",
)


@needs_shellcheck
@pytest.mark.parametrize("engine", ["megatron", "megatron-lm", "deepspeed"])
def test_scripts_pass_shellcheck(tmp_path: Path, engine: str) -> None:
    plans = [
        tiny_plan(phases=("pretrain", "anneal"), name=WEIRD),
        tiny_plan(tp=2, dp=2, phases=LM_PHASES),
    ]
    if engine != "deepspeed":
        plans.append(big_variants()["mixtral_ep8"])
    scripts: list[str] = []
    for i, plan in enumerate(plans):
        out = write_compiled(
            compile_plan(plan, engine, run_dir=f"/scratch/{WEIRD}"), tmp_path / f"p{i}"
        )
        scripts += [str(p) for p in out if p.suffix == ".sh"]
    proc = subprocess.run(
        ["shellcheck", "--severity=style", "-x", *scripts],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def _recorder(tmp_path: Path) -> Path:
    """A stand-in for torchrun/sbatch that records its argv NUL-separated (and prints a job id)."""
    rec = tmp_path / "recorder.sh"
    rec.write_text(
        '#!/usr/bin/env bash\nn=$(( $(ls "$REC_DIR" | wc -l) + 1 ))\n'
        'printf \'%s\\0\' "$@" > "$REC_DIR/$n"\necho "$((100 + n));cluster"\n'
    )
    rec.chmod(0o755)
    return rec


def _recorded(rec_dir: Path) -> list[list[str]]:
    """Every recorded argv, in call order."""
    calls = sorted(rec_dir.iterdir(), key=lambda p: int(p.name))
    return [[a.decode() for a in p.read_bytes().split(b"\0")[:-1]] for p in calls]


def test_torchrun_script_passes_weird_names_intact(tmp_path: Path) -> None:
    base = tmp_path / WEIRD
    out = base / "compiled"
    run_dir = base / "run dir"
    write_compiled(
        compile_plan(
            tiny_plan(phases=("pretrain", "anneal"), name=WEIRD), "megatron", run_dir=str(run_dir)
        ),
        out,
    )
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    env = dict(os.environ, TORCHRUN=str(_recorder(tmp_path)), REC_DIR=str(rec_dir))
    env.pop("RUN_DIR", None)
    proc = subprocess.run(
        ["bash", str(out / "02-anneal" / "torchrun.sh")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (argv,) = _recorded(rec_dir)
    assert argv[argv.index("--plan") + 1] == str(out / "plan.json")
    assert argv[argv.index("--run-dir") + 1] == str(run_dir)
    assert argv[argv.index("--phase") + 1] == "anneal" and argv[-3:] == [
        "--backend",
        "megatron",
        "--resume",
    ]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    # dry mode prints a command line that bash reads back into the same words
    dry = subprocess.run(
        ["bash", str(out / "02-anneal" / "torchrun.sh")],
        env=dict(env, SCALEPLAN_DRY_RUN="1"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    words = subprocess.run(
        ["bash", "-c", 'eval "w=($1)"; printf "%s\\0" "${w[@]}"', "_", dry],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")[:-1]
    assert [w.decode() for w in words] == [str(rec_dir.parent / "recorder.sh"), *argv]


def test_chain_script_submits_in_order_with_afterok(tmp_path: Path) -> None:
    out = tmp_path / WEIRD
    write_compiled(compile_plan(tiny_plan(phases=LM_PHASES, name=WEIRD), "megatron"), out)
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    run_dir = tmp_path / "run $(x)"
    env = dict(
        os.environ,
        SBATCH=str(_recorder(tmp_path)),
        REC_DIR=str(rec_dir),
        RUN_DIR=str(run_dir),
        SBATCH_ARGS="--partition=gpu --account=a1",
    )
    proc = subprocess.run(
        ["bash", str(out / "submit_all.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:4] == [
        "pretrain 101",
        "anneal 102",
        "long_context 103",
        "sft 104",
    ]
    calls = _recorded(rec_dir)
    assert len(calls) == 4 and all("--parsable" in c and "--partition=gpu" in c for c in calls)
    assert not any(a.startswith("--dependency") for a in calls[0])
    for i, call in enumerate(calls[1:], start=1):
        assert f"--dependency=afterok:{100 + i}" in call
    assert calls[0][-1] == str(out / "01-pretrain" / "sbatch.sh")
    assert calls[1][calls[1].index("--output") + 1] == f"{run_dir}/logs/anneal-%j.out"
    assert calls[0][calls[0].index("--job-name") + 1].endswith("-pretrain")


def test_moe_layer_pattern_matches_the_model_spec() -> None:
    from scaleplan.executor.compile.megatron_core import moe_layer_freq
    from scaleplan.specs.model import get_model

    ds = get_model("deepseek-v3")
    pattern = moe_layer_freq(ds)
    assert (
        isinstance(pattern, list) and len(pattern) == 61 and sum(pattern) == ds.num_moe_layers == 58
    )
    every_other = ds.model_copy(update={"moe": ds.moe.model_copy(update={"layer_freq": 2})})  # type: ignore[union-attr]
    pattern = moe_layer_freq(every_other)
    assert isinstance(pattern, list) and sum(pattern) == every_other.num_moe_layers == 29
    assert pattern[:6] == [0, 0, 0, 1, 0, 1]
    assert moe_layer_freq(get_model("mixtral-8x7b")) == 1


def test_megatron_document_pads_vocab_once_and_inherits_rope_base() -> None:
    """The document the entry point trains from: the embedding padded to a multiple of 128 that
    every phase's TP divides (so checkpoints reshard between phases), and the RoPE base of a
    long-context phase carried into the phases that start from it."""
    from scaleplan.executor.compile.common import embedding_vocab_size
    from scaleplan.executor.compile.megatron_core import megatron_core_document

    plan = tiny_plan(phase_layouts={"sft": {"tp": 2, "dp": 1}})
    plan = plan.model_copy(update={"model": plan.model.model_copy(update={"vocab_size": 50257})})
    assert embedding_vocab_size(plan) == 50304  # Megatron's GPT-2 padding
    docs = {c.name: megatron_core_document(c) for c in phase_contexts(plan)}
    for doc in docs.values():
        assert doc["gpt_model"]["vocab_size"] == 50304
        assert doc["gpt_model"]["tokenizer_vocab_size"] == 50257
    assert docs["pretrain"]["gpt_model"]["rotary_base"] == plan.model.rope_base
    for name in ("long_context", "sft", "dpo", "grpo"):  # sft starts from long_context
        assert docs[name]["gpt_model"]["rotary_base"] == 40000.0, name
    odd = plan.model_copy(
        update={
            "phases": (
                plan.phases[0].model_copy(
                    update={"layout": plan.phases[0].layout.model_copy(update={"tp": 3})}
                ),
            )
        }
    )
    assert embedding_vocab_size(odd) % 384 == 0  # lcm(128, 3)
