"""A batch of layouts as numpy arrays: the form every cost model accepts.

A single `LayoutSpec` is a batch of one. Cost models are written over these arrays so that the
planner's search evaluates many candidates per call, with no Python loop over configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from scaleplan.specs.layout import PRECISION_CODES, RECOMPUTE_CODES, LayoutSpec, layout_as_dict

RECOMPUTE_NAMES = {code: name for name, code in RECOMPUTE_CODES.items()}
PRECISION_NAMES = {code: name for name, code in PRECISION_CODES.items()}


@dataclass(frozen=True)
class LayoutBatch:
    """Parallel arrays, one entry per layout. Booleans are stored as int 0/1."""

    tp: np.ndarray
    pp: np.ndarray
    vp: np.ndarray
    cp: np.ndarray
    dp: np.ndarray
    ep: np.ndarray
    etp: np.ndarray
    sequence_parallel: np.ndarray
    zero_stage: np.ndarray
    distributed_optimizer: np.ndarray
    micro_batch: np.ndarray
    global_batch: np.ndarray
    recompute: np.ndarray  # RECOMPUTE_CODES: 0 none, 1 selective, 2 full
    recompute_layers: np.ndarray  # full recompute: layers per stage; 0 = all layers of the stage
    offload_optimizer: np.ndarray
    offload_params: np.ndarray
    precision: np.ndarray  # PRECISION_CODES: 0 bf16, 1 fp16, 2 fp8
    overlap_grad_reduce: np.ndarray
    overlap_param_gather: np.ndarray
    # embedding and loss counted as pipeline layers (costmodels.stage_layers); 0/1
    account_embedding_loss_in_pipeline_split: np.ndarray
    # uneven (balanced) pipeline_model_parallel_layout (costmodels.stage_layers); 0/1
    balanced_pipeline_layout: np.ndarray

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    @property
    def num_gpus(self) -> np.ndarray:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def num_microbatches(self) -> np.ndarray:
        return self.global_batch // (self.dp * self.micro_batch)

    def as_rule_dict(self) -> dict[str, np.ndarray]:
        """The mapping `scaleplan.specs.layout.layout_violations` expects."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, mask_or_index: np.ndarray) -> LayoutBatch:
        return LayoutBatch(**{f.name: getattr(self, f.name)[mask_or_index] for f in fields(self)})

    @classmethod
    def from_arrays(cls, **arrays: np.ndarray | int | Sequence[int]) -> LayoutBatch:
        """Build from keyword arrays; missing fields take LayoutSpec defaults; scalars broadcast."""
        defaults = {
            "tp": 1,
            "pp": 1,
            "vp": 1,
            "cp": 1,
            "dp": 1,
            "ep": 1,
            "etp": 0,
            "sequence_parallel": 0,
            "zero_stage": 0,
            "distributed_optimizer": 0,
            "micro_batch": 1,
            "global_batch": 1,
            "recompute": 0,
            "recompute_layers": 0,
            "offload_optimizer": 0,
            "offload_params": 0,
            "precision": 0,
            "overlap_grad_reduce": 1,
            "overlap_param_gather": 1,
            "account_embedding_loss_in_pipeline_split": 0,
            "balanced_pipeline_layout": 0,
        }
        unknown = set(arrays) - set(defaults)
        if unknown:
            raise TypeError(f"unknown LayoutBatch fields: {sorted(unknown)}")
        merged = {**defaults, **arrays}
        shaped = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in merged.values()))
        out = dict(zip(merged.keys(), (np.array(a, dtype=np.int64) for a in shaped), strict=True))
        out = {k: (v.reshape(1) if v.ndim == 0 else v) for k, v in out.items()}
        out["etp"] = np.where(out["etp"] == 0, out["tp"], out["etp"])
        return cls(**out)

    @classmethod
    def from_specs(cls, layouts: Iterable[LayoutSpec]) -> LayoutBatch:
        rows = [_spec_row(layout) for layout in layouts]
        if not rows:
            raise ValueError("no layouts")
        return cls.from_arrays(**{k: [r[k] for r in rows] for k in rows[0]})

    def to_spec(self, i: int) -> LayoutSpec:
        recompute = RECOMPUTE_NAMES[int(self.recompute[i])]
        layers = int(self.recompute_layers[i])
        return LayoutSpec(
            tp=int(self.tp[i]),
            pp=int(self.pp[i]),
            vp=int(self.vp[i]),
            cp=int(self.cp[i]),
            dp=int(self.dp[i]),
            ep=int(self.ep[i]),
            etp=None if int(self.etp[i]) == int(self.tp[i]) else int(self.etp[i]),
            sequence_parallel=bool(self.sequence_parallel[i]),
            zero_stage=int(self.zero_stage[i]),
            distributed_optimizer=bool(self.distributed_optimizer[i]),
            micro_batch=int(self.micro_batch[i]),
            global_batch=int(self.global_batch[i]),
            recompute=recompute,  # type: ignore[arg-type]
            recompute_layers=layers if (recompute == "full" and layers > 0) else None,
            offload_optimizer=bool(self.offload_optimizer[i]),
            offload_params=bool(self.offload_params[i]),
            precision=PRECISION_NAMES[int(self.precision[i])],  # type: ignore[arg-type]
            overlap_grad_reduce=bool(self.overlap_grad_reduce[i]),
            overlap_param_gather=bool(self.overlap_param_gather[i]),
            account_embedding_loss_in_pipeline_split=bool(
                self.account_embedding_loss_in_pipeline_split[i]
            ),
            balanced_pipeline_layout=bool(self.balanced_pipeline_layout[i]),
        )


def _spec_row(layout: LayoutSpec) -> dict[str, int]:
    """A LayoutBatch row: the rule fields (`layout_as_dict`, one definition) plus the fields
    only the cost models read."""
    return {
        **layout_as_dict(layout),
        "recompute": RECOMPUTE_CODES[layout.recompute],
        "recompute_layers": layout.recompute_layers or 0,
        "offload_optimizer": int(layout.offload_optimizer),
        "offload_params": int(layout.offload_params),
        "precision": PRECISION_CODES[layout.precision],
        "overlap_grad_reduce": int(layout.overlap_grad_reduce),
        "overlap_param_gather": int(layout.overlap_param_gather),
    }
