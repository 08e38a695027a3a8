"""FSDP2: every process keeps only its share of the weights, gradients and AdamW state.

DDP copies the whole model, its gradients and the optimiser's two moments into every
process, so memory does not shrink as processes are added. ZeRO stage 3 (Rajbhandari
et al., arXiv 1910.02054) and PyTorch's FSDP (Zhao et al., arXiv 2304.11277) cut every
parameter into ``world`` pieces, one per process. A unit (here: each transformer block,
then the root holding the embeddings, final norm and head) is put back together by an
all-gather just before its forward (and again before its backward), used, and dropped;
its gradients are summed and cut up again by a reduce-scatter, so each process updates
only its piece. Memory for the model state falls as 1/world, at the cost of the gathers.

``torch.distributed.fsdp.fully_shard`` (FSDP2) turns each parameter into a ``DTensor``
sharded along its first dimension. The training loop is the same as for DDP.

Checkpoints are sharded too: ``torch.distributed.checkpoint`` (DCP) writes each process's
pieces plus a global index, so they can be read back by any number of processes (1 or
more), and ``to_single_file`` turns one into the ordinary single-file checkpoint.

``placement`` picks the backend and device for a number of processes on this machine, and
``measure_held`` records the bytes of model state each process actually holds.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.optim.optimizer import register_optimizer_step_post_hook

from .checkpoints import save
from .config import LlamaConfig
from .files import atomic_directory, read_json, write_json
from .model import Llama

PARALLEL = ("ddp", "fsdp")
SHARDED_FILES = ("*.distcp", ".metadata", "config.json")


class Placement(NamedTuple):
    backend: str        # "nccl" or "gloo"
    device: str         # "cuda" or "cpu"


def placement(world: int, gpus: int | None = None) -> Placement:
    """Where ``world`` processes on this machine run: NCCL with one GPU each when there are
    at least ``world`` GPUs (``gpus``; default ``torch.cuda.device_count()``), otherwise
    gloo on the CPU. NCCL refuses two ranks on one GPU, so 2 processes with 1 GPU share
    the CPU over gloo; a single process takes the GPU whenever there is one."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a whole number of processes >= 1, got {world!r}")
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"gpus must be a whole number >= 0, got {gpus!r}")
    return Placement("nccl", "cuda") if gpus >= world else Placement("gloo", "cpu")


def _local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t     # FSDP2: this process's shard
    return t.numel() * t.element_size()


def held_bytes(optimizer: torch.optim.Optimizer) -> dict:
    """Bytes this process holds for the ``parameters`` ``optimizer`` updates, their
    ``gradients`` and the ``optimizer`` state (AdamW: two moments and a step count per
    tensor), counted from the tensors themselves: local shards under FSDP2, whole
    tensors for one process or DDP (whose gradient buckets are not counted)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {"parameters": sum(_local_bytes(p) for p in params),
            "gradients": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
            "optimizer": sum(_local_bytes(v) for state in optimizer.state.values()
                             for v in state.values() if torch.is_tensor(v))}


@contextlib.contextmanager
def measure_held():
    """Yield a dict that the first optimiser step taken inside fills with ``held_bytes``
    (right after the update, before the gradients are cleared)."""
    held: dict = {}

    def hook(optimizer, args, kwargs):
        if not held:
            held.update(held_bytes(optimizer))

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield held
    finally:
        handle.remove()


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group). Collective."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def close_group() -> None:
    """Leave the process group: a barrier first, so no process exits (closing its gloo
    connections) while a peer still waits on the last message of a collective; then
    ``destroy_process_group``. (The command line then ends its torchrun workers without
    the interpreter's teardown, where gloo's threads could still free tensors: see
    ``minillama.__main__._end_torchrun_worker``.)"""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Apply FSDP2 in place: one unit per transformer block, then the root; returns it."""
    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def local_fraction(model: torch.nn.Module) -> float:
    """The share of all parameter values that this process stores (1/world when sharded)."""
    mine = total = 0
    for p in model.parameters():
        total += p.numel()
        mine += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
    return mine / total


@contextlib.contextmanager
def _quiet():
    """Without a process group DCP warns that it assumes one process: that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        yield


def _rank0_broadcast(obj):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save_sharded(model, optimizer, path, step: int, train_config: dict) -> Path:
    """Every process writes its pieces of model and optimiser into the directory ``path``.

    Kill-safe: all write into one temporary directory that rank 0 renames over ``path``
    only once every piece is on disk (``atomic_directory``). Collective: call on all ranks.
    """
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd, "rng": torch.get_rng_state()}
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    with (atomic_directory(path, SHARDED_FILES) if rank0 else contextlib.nullcontext()) as tmp:
        tmp = _rank0_broadcast(str(tmp) if rank0 else None)
        with _quiet():
            dcp.save(state, checkpoint_id=tmp)
        if rank0:
            write_json({"step": step, "model_config": model.cfg.to_dict(),
                        "train_config": train_config}, Path(tmp) / "config.json")
        if dist.is_initialized():
            dist.barrier()                      # every piece written before the rename
    if dist.is_initialized():
        dist.barrier()                          # nobody reads before the rename
    return Path(path)


def load_sharded(model, optimizer, path) -> int:
    """Read a sharded checkpoint into ``model`` and ``optimizer`` (sharded or not, any
    number of processes); restores the RNG state and returns the step to continue from."""
    path = Path(path)
    meta = read_json(path / "config.json")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd, "rng": torch.get_rng_state()}
    with _quiet():
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    torch.set_rng_state(state["rng"])
    return meta["step"]


def full_state(model) -> dict:
    """The whole (unsharded) model state on CPU in rank 0 ({} elsewhere). Collective."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def to_single_file(path, out=None):
    """Turn the sharded checkpoint ``path`` into an ordinary model; with ``out``, save it
    there in minillama's own format (loadable by ``minillama.load``). Runs in one process."""
    meta = read_json(Path(path) / "config.json")
    model = Llama(LlamaConfig.from_dict(meta["model_config"]))
    state = {"model": model.state_dict()}
    with _quiet():                              # only the model; the optimiser stays behind
        dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    if out is not None:
        save(model, out)
    return model
