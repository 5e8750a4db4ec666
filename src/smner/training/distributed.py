"""Data-parallel training on the standard PyTorch stack (torch.distributed + DDP).

Plain DistributedDataParallel rather than Accelerate inside the trainer: both launchers
(`torchrun` and `accelerate launch`) set the same environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT), DDP is what either would wrap the model in, and the trainer keeps full
control of its exact-resume checkpoints. A single process (no WORLD_SIZE) runs unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: torch.device) -> DistributedContext:
        """Join the process group that the launcher describes in the environment, if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        initialised_here = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            initialised_here = True
        return cls(rank, world_size, local_rank, initialised_here)

    def device_for(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def shard(self, items: list[int]) -> list[int]:
        """This rank's share of a global batch (strided, so shards differ by at most one)."""
        return items[self.rank :: self.world_size]

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
