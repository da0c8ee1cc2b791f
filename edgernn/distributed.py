"""Data-parallel training on torch.distributed: ``torchrun --nproc_per_node=N -m edgernn train ...``.

torchrun sets RANK / WORLD_SIZE / MASTER_ADDR; without them everything here is a no-op on one process.
The backend is gloo on CPU and NCCL where CUDA is available. Rank 0 alone writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    active: bool = False

    @classmethod
    def from_environment(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), active=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model`` (which keeps the parameters) when running on several ranks."""
        if not self.active:
            return model
        return nn.parallel.DistributedDataParallel(model)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` from every rank, in rank order (same shape on every rank)."""
        if not self.active:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
