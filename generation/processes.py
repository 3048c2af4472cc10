"""Where a generation process sits among its peers: one plain process, or one of many under ``torchrun``.

``torchrun --nproc_per_node N [--nnodes M ...] -m generation ...`` starts ``N x M`` processes whose
environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each process generates the shard
``RANK / WORLD_SIZE`` on ``cuda:LOCAL_RANK`` (when the configured device is CUDA); the processes
join a CPU (gloo) process group only to wait for each other before rank 0 merges the metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

BARRIER_TIMEOUT = timedelta(days=2)
"""How long a finished shard waits for the slowest one (a CG-Aug shard can run for many hours)."""


@dataclass(frozen=True)
class Peers:
    """This process's ``rank`` among ``world_size`` processes and its GPU index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def shard(self) -> tuple[int, int]:
        """The shard ``(i, N)`` this process generates when none was asked for."""
        return self.rank, self.world_size


def peers_from_env() -> Peers:
    """The ``torchrun`` position of this process (rank 0 of 1 without ``torchrun``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Peers()
    return Peers(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def process_device(device: str, peers: Peers) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` for one of several processes; any other device as given."""
    if device == "cuda" and peers.world_size > 1:
        return f"cuda:{peers.local_rank}"
    return device


def join(peers: Peers, device: str) -> None:
    """Make ``device`` (when it names a GPU by index) this process's current GPU, and join the
    process group of a multi-process run."""
    target = torch.device(device)
    if target.type == "cuda" and target.index is not None and torch.cuda.is_available():
        torch.cuda.set_device(target)
    if peers.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
