"""Shared by the pipeline-split tests (test_stage_layers.py, test_balanced_layout.py): a model of
any depth, a layout with defaults, and where megatron-core itself places the decoder layers."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from scaleplan.specs.layout import LayoutSpec
from scaleplan.specs.model import ModelSpec, get_model

needs_megatron = pytest.mark.skipif(
    importlib.util.find_spec("megatron.core") is None, reason="megatron-core not installed"
)


def llama_with_layers(num_layers: int) -> ModelSpec:
    return get_model("llama3-70b").model_copy(update={"num_layers": num_layers})


def layout_of(**kw: object) -> LayoutSpec:
    base: dict[str, object] = dict(tp=8, pp=4, dp=2, micro_batch=1, global_batch=64)
    base.update(kw)
    return LayoutSpec.model_validate(base)


def megatron_layers_held(config: Any, pp: int, vp: int, rank: int) -> list[int]:
    """The decoder layers megatron-core 0.16.1 builds on pipeline rank `rank`, all its model
    chunks (`get_num_layers_to_build` + `get_transformer_layer_offset`)."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    held: list[int] = []
    for v in range(vp):
        stage = v if vp > 1 else None
        n = get_num_layers_to_build(config, vp_stage=stage, pp_rank=rank)
        start = get_transformer_layer_offset(config, vp_stage=stage, pp_rank=rank) if pp > 1 else 0
        held += list(range(start, start + n))
    return held
