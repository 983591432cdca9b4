"""Which device this process runs on and, data-parallel, who it is among the processes
torchrun started, with the few collectives the trainer needs.

torchrun (python -m torch.distributed.run) starts one process per GPU (or per CPU
worker) and tells each who it is through the environment: WORLD_SIZE processes in all,
this one's RANK among them, its LOCAL_RANK on this node, and MASTER_ADDR / MASTER_PORT
of the rendezvous store. With one process -- the usual case -- nothing here imports or
initialises torch.distributed, and every collective is the identity.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import UserError

# Rank 0 samples pictures and writes checkpoints while the others wait in the next
# collective; the default timeouts (10 min for NCCL) are short for a large sample grid.
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class World:
    """The processes of one training run; World() is a single process."""

    rank: int = 0  # this process, 0..size-1; rank 0 logs, samples and writes the run directory
    size: int = 1  # processes in all (torchrun's WORLD_SIZE)
    local_rank: int = 0  # this process on its node: its GPU index

    @property
    def active(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of n rows (n divisible by size)."""
        share = n // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """x [...] from every rank -> [size, ...], in rank order, on every rank."""
        if not self.active:
            return x.unsqueeze(0)
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)


def world_from_env(environ=os.environ) -> World:
    """The World torchrun describes in the environment (World() when not launched by it)."""
    size = int(environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in environ]
    if missing:
        raise UserError(
            f"WORLD_SIZE={size} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; "
            "start data-parallel training with torchrun --nproc-per-node N -m ddpmkit train ..."
        )
    return World(rank=int(environ["RANK"]), size=size, local_rank=int(environ["LOCAL_RANK"]))


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA, then Apple MPS, then CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but CUDA is not available here; use --device cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise UserError("--device mps was asked for but Apple MPS is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def rank_device(world: World, name: str | None) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK when CUDA is asked for or available, else the CPU."""
    if not world.active:
        return pick_device(name)
    device = torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"data-parallel training runs on CUDA (NCCL) or the CPU (gloo), not on {device.type}; use --device cuda or cpu")
    if device.index is not None:
        raise UserError(f"under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda, not {name}")
    if not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available here; use --device cpu (gloo)")
    visible = torch.cuda.device_count()
    if world.local_rank >= visible:
        raise UserError(
            f"torchrun started more processes on this node than there are GPUs ({visible} visible, "
            f"LOCAL_RANK {world.local_rank}); use --nproc-per-node {visible} or fewer"
        )
    return torch.device("cuda", world.local_rank)


@contextmanager
def quiet_unless_main(world: World) -> Iterator[None]:
    """Python warnings shown on rank 0 only, for the duration of the block: every rank runs
    the same code on the same data, so the others would repeat each warning (of unreadable
    image files, say) once per process."""
    with warnings.catch_warnings():
        if not world.is_main:
            warnings.simplefilter("ignore")
        yield


@contextmanager
def launch(device_name: str | None = None) -> Iterator[tuple[World, torch.device]]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU) for the
    duration of the block, and yield (world, this rank's device). A single process gets
    World() and pick_device(device_name); a process group the caller already set up is
    used as it is and left open. Inside the block only rank 0 shows Python warnings."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield World(), rank_device(World(), device_name)
        return
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own process group
        world = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
        with quiet_unless_main(world):
            yield world, rank_device(world, device_name)
        return
    world = world_from_env()
    device = rank_device(world, device_name)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    # NCCL binds this process's communicators to its GPU up front (torch >= 2.3 takes device_id).
    bind = device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters
    try:
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT,
                                **({"device_id": device} if bind else {}))
    except (RuntimeError, ValueError, OSError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"rank {world.rank} of {world.size} could not join the {backend} process group at {where} ({detail}); "
            "check that every node was started with the same --rdzv-endpoint (or --master-addr/--master-port) "
            "and that the port is reachable"
        ) from None
    try:
        with quiet_unless_main(world):
            yield world, device
        # Every rank done with its collectives before any tears the group down: a rank that
        # destroyed it and exited while another was still finishing (rank 0 gathering the
        # checkpoint's replica digests) was aborted in gloo's teardown now and then.
        dist.barrier()
    finally:
        dist.destroy_process_group()
