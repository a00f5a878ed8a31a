"""Sharded batches under torchrun / accelerate launch: each rank takes rows rank, rank+n, ...

The launchers set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. We only need a
barrier and one broadcast (the run folder), so the process group uses gloo, which works on CPU
and GPU machines alike; no tensors travel between ranks (records are files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> str | None:
        return f"{self.rank}/{self.world_size}" if self.active else None


def launched_info() -> DistInfo:
    """Rank info from the launcher's environment (world size 1 when not launched)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init(info: DistInfo) -> None:
    if info.active and not dist.is_initialized():
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)


def barrier(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.barrier()


def shared_output_dir(info: DistInfo, mine: Path) -> Path:
    """Rank 0's output folder for everyone (Hydra would give each rank its own timestamp)."""
    if not info.active:
        return mine
    obj = [str(mine)]
    dist.broadcast_object_list(obj, src=0)
    return Path(obj[0])


def finish(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()
