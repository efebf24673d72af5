"""The model architecture a published-runs row describes: from its architecture columns (the
activation and tied embeddings chosen by the stated parameter count), or from a catalog preset
when the row names a model the schema cannot express or gives no architecture columns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scaleplan.specs.errors import SpecError
from scaleplan.specs.model import ModelSpec, MoESpec, get_model

from .validation_rows import cell_float, cell_int

DEFAULT_VOCAB = 51200  # Megatron's padded GPT-2 BPE vocabulary (Narayanan 2021 section 5.1)
PARAMS_TOLERANCE = 0.25  # an architecture further than this from params_billion is not trusted
# Rows of a model the schema cannot express (MLA, shared experts, leading dense layers) that a
# catalog preset describes: model_name pattern -> preset (the row keeps its seq_len)
PRESET_ROWS = ((re.compile(r"deepseek-?v3", re.IGNORECASE), "deepseek-v3"),)
# Well-known models a row may name without architecture columns: their catalog presets.
NAMED_ROWS = (
    (re.compile(r"llama[\s_-]*3(?:\.\d)?[\s_-]*8b", re.IGNORECASE), "llama3-8b"),
    (re.compile(r"llama[\s_-]*3(?:\.\d)?[\s_-]*70b", re.IGNORECASE), "llama3-70b"),
    (re.compile(r"llama[\s_-]*3(?:\.\d)?[\s_-]*405b", re.IGNORECASE), "llama3-405b"),
    (re.compile(r"mixtral[\s_-]*8x7b", re.IGNORECASE), "mixtral-8x7b"),
    (re.compile(r"gpt[\s_-]*3[\s_-]*175b", re.IGNORECASE), "gpt3-175b"),
)
# Multi-token prediction (DeepSeek-V3 section 2.2) adds modules no cost model counts yet
MTP_ROW = re.compile(r"\bw(ith|/)\s*MTP\b", re.IGNORECASE)


def named_preset(
    name: str, seq: int | None, params_billion: float | None, assumptions: list[str]
) -> ModelSpec | None:
    """The catalog preset a row without architecture columns names ('Llama 3.1 70B'), if any."""
    for pattern, preset in NAMED_ROWS:
        if not pattern.search(name):
            continue
        model = get_model(preset)
        total = model.params_total / 1e9
        if params_billion and abs(total - params_billion) / params_billion > PARAMS_TOLERANCE:
            raise SpecError(
                f"the row names {preset} ({total:.1f}B parameters) but states {params_billion:g}B",
                field="params_billion",
            )
        assumptions.append(
            f"architecture from the catalog preset {preset} (no architecture columns)"
        )
        if seq is None:
            assumptions.append(f"seq_len={model.seq_length} (the preset's; not stated)")
            return model
        return model.model_copy(update={"seq_length": seq})
    return None


ARCH_NUMBERS = (
    "params_billion", "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "seq_len",
    "moe_experts", "moe_topk",
)  # fmt: skip


def model_from_row(row: Mapping[str, str], assumptions: list[str]) -> ModelSpec:
    for key in ARCH_NUMBERS:  # a stated size is positive; empty cells are "not stated"
        value = cell_float(row, key)
        if value is not None and value <= 0:
            raise SpecError(f"must be positive (got {row.get(key)!r})", field=key)
    name = (row.get("model_name") or "custom").strip()
    layers, hidden, heads = cell_int(row, "layers"), cell_int(row, "hidden"), cell_int(row, "heads")
    seq = cell_int(row, "seq_len")
    if not (layers or hidden or heads):
        named = named_preset(name, seq, cell_float(row, "params_billion"), assumptions)
        if named is not None:
            return named
    if not (layers and hidden and heads and seq):
        raise SpecError(
            "layers, hidden, heads and seq_len are needed (or a model_name the catalog knows: "
            + ", ".join(preset for _, preset in NAMED_ROWS)
            + ")",
            field="model",
        )
    if MTP_ROW.search(name):
        raise SpecError(
            "multi-token prediction (MTP) modules are not modelled (extra layers on the last "
            "pipeline stage and their loss)",
            field="model_name",
        )
    for pattern, preset in PRESET_ROWS:
        if pattern.search(name):
            assumptions.append(
                f"architecture from the catalog preset {preset}; the schema cannot express "
                "MLA/shared experts/dense layers"
            )
            return get_model(preset).model_copy(update={"seq_length": seq})
    kv = cell_int(row, "kv_heads") or heads
    vocab = cell_int(row, "vocab")
    if vocab is None:
        vocab = DEFAULT_VOCAB
        assumptions.append(f"vocab={DEFAULT_VOCAB} (Megatron GPT default; not stated)")
    ffn = cell_int(row, "ffn_hidden")
    experts, topk = cell_int(row, "moe_experts"), cell_int(row, "moe_topk")
    moe = None
    if experts and experts > 1:
        if not (topk and ffn):
            raise SpecError("MoE row without moe_topk or expert ffn_hidden", field="moe")
        moe = MoESpec(num_experts=experts, top_k=topk, expert_ffn_hidden_size=ffn)
    if ffn is None:
        ffn = 4 * hidden
        assumptions.append("ffn_hidden=4*hidden (not stated)")
    target = cell_float(row, "params_billion")
    base: dict[str, Any] = {
        "name": name,
        "num_layers": layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": kv if kv != heads else None,
        "ffn_hidden_size": ffn,
        "vocab_size": vocab,
        "seq_length": seq,
        "moe": moe,
    }
    # The schema has no activation column: take the one whose parameter count matches
    # params_billion (GPT-style GeLU MLPs have 2 matrices, SwiGLU 3).
    candidates = [
        ModelSpec(**base, activation="gelu", norm="layernorm", bias=True,
                  position_embedding="learned"),
        ModelSpec(**base, activation="swiglu", norm="rmsnorm", bias=False,
                  position_embedding="rope"),
    ]  # fmt: skip
    # ... and tied or separate LM-head weights (GPT-3/MPT tie them, Llama does not).
    candidates += [c.model_copy(update={"tied_embeddings": True}) for c in list(candidates)]
    if target:
        errors = [abs(c.params_total / 1e9 - target) / target for c in candidates]
        best = min(range(len(candidates)), key=lambda i: errors[i])
        if errors[best] > PARAMS_TOLERANCE:
            raise SpecError(
                f"architecture columns give {candidates[best].params_total / 1e9:.1f}B parameters, "
                f"the row states {target:g}B (details such as shared experts, dense layers or "
                "MLA are not in the schema)",
                field="params_billion",
            )
        chosen = candidates[best]
    else:
        chosen = candidates[0] if ffn == 4 * hidden else candidates[1]
    assumptions.append(
        f"activation={chosen.activation}, tied_embeddings={chosen.tied_embeddings} "
        "(from the parameter count)"
    )
    return chosen
