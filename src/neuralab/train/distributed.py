"""Data-parallel training across processes: torchrun environment, the process group, DDP
wrapping and cross-rank reductions.

Launch with `torchrun --nproc-per-node N -m neuralab train …` (or `neuralab train --nproc N`).
Each process trains on its own shard of every batch; gradients are averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPUs, one GPU per process: cuda:LOCAL_RANK).
Outside torchrun (WORLD_SIZE unset or 1) every helper here is a no-op.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from neuralab.errors import ConfigError

Result = TypeVar("Result")
FAILURE_WAIT_S = 30  # seconds a failed process waits for the others before leaving alone


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes training together (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its own machine (torchrun's LOCAL_RANK): which GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Only the main process logs, writes checkpoints and reports."""
    return rank() == 0


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def local_module(model: nn.Module) -> nn.Module:
    """The module behind DDP (compiled or not). Evaluating it runs no collective operation, so
    processes may evaluate shards with different numbers of batches."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def split_batch(global_batch: int, processes: int, grad_accumulation: int = 1) -> int:
    """The per-process batch of a global batch: `global_batch / processes`.

    Raises:
        ConfigError: the global batch does not split evenly over the processes, or the
            per-process batch does not split evenly into `grad_accumulation` micro-batches.
    """
    per_process, rest = divmod(global_batch, processes)
    if rest or per_process == 0:
        lower = max(processes, global_batch - rest)
        raise ConfigError(
            f"train.batch_size={global_batch} is the global batch and must split evenly over "
            f"the {processes} processes; choose a multiple of {processes} "
            f"(e.g. {lower} or {lower + processes})"
        )
    if per_process % grad_accumulation:
        raise ConfigError(
            f"train.grad_accumulation={grad_accumulation} must divide the per-process batch "
            f"{per_process} (train.batch_size={global_batch} over {processes} processes); "
            f"choose a grad_accumulation that divides {per_process}"
        )
    return per_process


def device_for_rank(device: torch.device) -> torch.device:
    """With several processes and CUDA, each process drives its own GPU: cuda:LOCAL_RANK."""
    if device.type != "cuda" or world_size() == 1:
        return device
    index = local_rank()
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"process with LOCAL_RANK={index} needs GPU {index}, but this machine has "
            f"{torch.cuda.device_count()}; start at most that many processes per node "
            "(--nproc-per-node)"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group when WORLD_SIZE > 1 and leave it afterwards.

    The backend is NCCL for CUDA and gloo for CPU; rendezvous comes from torchrun's variables
    (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE). A group that already exists is used as it is
    and left open.

    Yields:
        The device this process trains on (cuda:LOCAL_RANK under CUDA).
    """
    device = device_for_rank(device)
    created = world_size() > 1 and not dist.is_initialized()
    if created:
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    try:
        yield device
    except BaseException:
        if created:
            leave_after_failure()
        raise
    if created:
        leave_together()


def leave_together() -> None:
    """Leave the process group after a run that ended well on this process.

    The processes first wait for each other, so none tears down its connections while another
    still works (rank 0 writes files and plots after the last collective): a CI run once saw
    rank 1 abort ("terminate called without an active exception") while rank 0 was still
    writing its metrics and plots. Any garbage still holding the group (a DDP reducer) is then
    freed while the interpreter is fully alive rather than during its shutdown.
    """
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def leave_after_failure() -> None:
    """Leave the process group after this process raised.

    The others usually fail alike and at about the same point (Ctrl-C reaches every process; a
    callback or a full disk fails on each), so on gloo they are waited for, up to
    `FAILURE_WAIT_S`, and all leave together as after a good run: a CI run saw rank 1 abort
    ("terminate called without an active exception") after leaving while rank 0 was still
    writing its checkpoint. A process stuck in a collective never arrives: the wait ends, and
    this process leaves alone (torchrun then stops the rest).
    """
    if dist.get_backend() == "gloo":
        with contextlib.suppress(Exception):  # a timeout, or a peer already gone
            dist.monitored_barrier(timeout=timedelta(seconds=FAILURE_WAIT_S))
    dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` inside a process group of several processes,
    `model` itself otherwise. With `sync_bn`, batch norm normalises with the statistics of the
    whole global batch (nn.SyncBatchNorm) instead of each process's shard.

    Call it after the model has its final memory format: DDP lays out its gradient buckets then.
    """
    if not is_distributed():
        return model
    check_sync_bn(sync_bn, device, world_size())
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def check_sync_bn(sync_bn: bool, device: torch.device, processes: int) -> None:
    """Raise ConfigError for `sync_bn` with several CPU processes: PyTorch's SyncBatchNorm
    synchronises only GPU tensors (it fails at the first training step on CPU). With one
    process `sync_bn` changes nothing."""
    if sync_bn and processes > 1 and device.type == "cpu":
        raise ConfigError(
            f"train.sync_bn=true needs GPUs: torch {torch.__version__}'s SyncBatchNorm "
            f"synchronises only CUDA tensors, and these {processes} processes would train on "
            "the CPU. Set train.sync_bn=false (each process then normalises with its own "
            "shard's statistics) or train on GPUs"
        )


def reduction_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """Each value summed over all processes (float64, so counts stay exact); unchanged when
    not distributed."""
    if not is_distributed():
        return [float(v) for v in values]
    totals = torch.tensor([float(v) for v in values], dtype=torch.float64)
    totals = totals.to(reduction_device())
    dist.all_reduce(totals)
    return totals.tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. batch-norm running statistics, which each process updates
    from its own shard) to every process, so that all evaluate and save the same model."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def on_main_process(function: Callable[..., Result], *args: Any) -> Result:
    """Run `function(*args)` on rank 0 only and return its result on every rank.

    An exception raised on rank 0 is raised on every rank, so none waits for a result that
    never comes. Used for decisions that must agree, such as the run directory's name.
    """
    if not is_distributed():
        return function(*args)
    box: list[Any] = [None]
    if rank() == 0:
        try:
            box[0] = (function(*args), None)
        except Exception as error:  # re-raised on every rank below
            box[0] = (None, error)
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. downloads a dataset), the others once it is done, so
    they find the files in place instead of downloading them all at once."""
    waits = is_distributed() and rank() != 0
    if waits:
        dist.barrier()
    try:
        yield
    finally:
        if is_distributed() and not waits:
            dist.barrier()


def describe_batch(global_batch: int, grad_accumulation: int) -> str:
    """The log line that makes the effective batch explicit, e.g. `batch  global 128 = 2
    processes × 64 per device`."""
    processes = world_size()
    per_device = split_batch(global_batch, processes, grad_accumulation)
    line = f"batch  global {global_batch} = {processes} process{'es' * (processes > 1)} × "
    line += f"{per_device} per device"
    if grad_accumulation > 1:
        micro = per_device // grad_accumulation
        line += f" = {grad_accumulation} accumulated micro-batches of {micro}"
    return line


def distribute_model(
    model: nn.Module, device: torch.device, channels_last: bool, sync_bn: bool
) -> nn.Module:
    """Under torchrun, the model wrapped in DistributedDataParallel (see wrap_model);
    the memory format is set first, because DDP lays out its gradient buckets when it wraps."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return wrap_model(model, device, sync_bn)
