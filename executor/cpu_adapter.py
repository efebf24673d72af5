"""CPU device adapter: lets megatron-core 0.16.1 train on a machine without a GPU.

Imported ONLY by `executor/train.py` when `torch.cuda.is_available()` is False; it is never
imported on a GPU machine. Megatron-core hard-wires CUDA in a few places (attention buffers,
schedules, DDP gradient buffers, gradient clipping and distributed-optimizer type checks); see
shared/notes/engines-on-cpu.md. `install()` patches exactly those, and nothing else:

1. a `TorchFunctionMode` maps `device="cuda"`/an int device/`torch.device("cuda")` to the CPU in
   every torch call, makes `Tensor.cuda()` a no-op and makes `Tensor.type()` report `torch.cuda.*`
   names so megatron's type checks pass;
2. the `torch.cuda` functions megatron calls unconditionally become CPU no-ops
   (`current_device` returns the CPU device because allocations in autograd's backward bypass
   the mode);
3. megatron's CUDA RNG tracker reads and writes the CPU generator;
4. MoE: split sizes become numpy, and the missing `moe_utils.te_general_gemm` is set to None.

Numerics on CPU are fp32 torch kernels: these runs test layouts, flag mapping, objectives and
checkpointing, never CUDA numerics or throughput.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")
_installed = False


def _to_cpu_device(dev: Any) -> Any:
    if isinstance(dev, int) or (isinstance(dev, str) and dev.startswith("cuda")):
        return _CPU
    if isinstance(dev, torch.device) and dev.type == "cuda":
        return _CPU
    return dev


class _CudaToCpu(TorchFunctionMode):
    """Redirect CUDA placements to the CPU inside every torch function call."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to:
            args = tuple(_to_cpu_device(a) for a in args)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if "cuda" not in name else name
        return func(*args, **kwargs)


class _NullContext(contextlib.nullcontext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def wait_stream(self, *args: Any) -> None: ...
    def synchronize(self) -> None: ...
    def record(self, *args: Any) -> None: ...
    def wait(self, *args: Any) -> None: ...
    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0

    def record_event(self, *args: Any) -> _NullContext:
        return _NullContext()


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: _CPU  # type: ignore[assignment]
    cuda.set_device = lambda *a, **k: None  # type: ignore[assignment]
    cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    cuda.Stream = _NullContext  # type: ignore[assignment,misc]
    cuda.Event = _NullContext  # type: ignore[assignment,misc]
    cuda.current_stream = lambda *a, **k: _NullContext()  # type: ignore[assignment]
    cuda.stream = lambda *a, **k: _NullContext()  # type: ignore[assignment]
    cuda.manual_seed = lambda *a, **k: None  # type: ignore[assignment]
    cuda.manual_seed_all = lambda *a, **k: None  # type: ignore[assignment]
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore[assignment]
    cuda.memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    cuda.max_memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    cuda.empty_cache = lambda *a, **k: None  # type: ignore[assignment]
    cuda.nvtx.range_push = lambda *a, **k: None  # type: ignore[assignment]
    cuda.nvtx.range_pop = lambda *a, **k: None  # type: ignore[assignment]


def _patch_megatron() -> None:
    from megatron.core.tensor_parallel import random as mrandom
    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)

    def _split_sizes_to_numpy(
        tensor: Any, as_numpy: bool = False, record_stream: bool = False
    ) -> Any:
        if as_numpy and isinstance(tensor, torch.Tensor):
            return tensor.numpy()
        return tensor

    for module in (moe_utils, token_dispatcher):
        if hasattr(module, "maybe_move_tensor_to_cpu"):
            module.maybe_move_tensor_to_cpu = _split_sizes_to_numpy  # type: ignore[attr-defined]
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None  # type: ignore[attr-defined]
    _patch_checkpoint_queue()


def _patch_checkpoint_queue() -> None:
    """dist_checkpointing's writer collects results through a queue served by a *spawned* manager
    process (CUDA-safe), which re-imports the entry point and torch: seconds per rank and run.
    Without CUDA there is nothing fork-unsafe, so the manager is forked (milliseconds)."""
    import multiprocessing as mp

    from megatron.core.dist_checkpointing.strategies import filesystem_async as fsa

    def results_queue() -> Any:
        if fsa._results_queue is None:
            fsa._results_queue = mp.get_context("fork").Manager().Queue()
        return fsa._results_queue

    fsa._get_write_results_queue = results_queue


def install() -> None:
    """Patch torch.cuda and megatron-core for CPU execution (idempotent, process-wide)."""
    global _installed
    if _installed:
        return
    if torch.cuda.is_available():
        raise RuntimeError("the CPU adapter must not be installed on a machine with a GPU")
    _patch_torch_cuda()
    _patch_megatron()
    _CudaToCpu().__enter__()  # stays active for the life of the process
    _installed = True
