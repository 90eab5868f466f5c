"""Where a run trains: the device, torchrun's process group, DistributedDataParallel and precision.

Distributed training uses PyTorch's own launcher (``torchrun --nproc_per_node N -m aesr_sci.cli
train RECIPE``), which sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..errors import MismatchError

__all__ = ["Placement", "Precision", "mixed_precision", "place"]


@dataclass(frozen=True)
class Placement:
    """The device of this process and its place among torchrun's processes."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process validates and writes the run's files (rank 0)."""
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel when distributed, else itself."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def agree(self, value: int) -> int:
        """The minimum of ``value`` over processes, so that all of them take the same decision."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def place(device: str | None) -> Placement:
    """Select the device, join torchrun's process group when there is one, set CPU threads."""
    from ..infer import select_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = select_device(device)
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda" and local >= torch.cuda.device_count():
            raise MismatchError(
                f"torchrun started process {local} on a node with {torch.cuda.device_count()} GPU(s): "
                "use --nproc_per_node at most the number of GPUs, or --device cpu"
            )
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
    elif dev.type == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    return Placement(dev, rank=rank, world=world)


@dataclass(frozen=True)
class Precision:
    """Precision of the training step: autocast's dtype, memory layout, and whether losses are scaled.

    float16 needs its losses scaled (their gradients underflow otherwise), bfloat16 does not. The
    weights and the optimiser stay float32 whatever the choice.
    """

    enabled: bool = False
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.dtype)

    def scaler(self, device_type: str) -> torch.amp.GradScaler:
        """A new gradient scaler; disabled (a pass-through) unless the dtype is float16."""
        return torch.amp.GradScaler(device_type, enabled=self.enabled and self.dtype == torch.float16)


def mixed_precision(device: torch.device, precision: str) -> Precision:
    """``train.precision`` on ``device``, chosen as inference chooses it
    (:func:`aesr_sci.infer.resolve_precision`): ``auto`` is bfloat16 with channels-last memory on
    CUDA and on CPUs with native bfloat16, float32 elsewhere."""
    from ..infer import resolve_precision

    dtype, layout = resolve_precision(precision, device)
    if dtype is None:
        return Precision()
    return Precision(True, dtype, layout)
