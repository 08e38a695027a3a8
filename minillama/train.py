"""A training loop you can read in one sitting: AdamW, warmup + cosine, clipping, accumulation.

The recipe is the one LLaMA (arXiv 2302.13971, section 2.2) describes: AdamW
(Loshchilov & Hutter, arXiv 1711.05101) with beta2 = 0.95, weight decay 0.1 on the
matrices only, gradient clipping at 1.0, and a learning rate that warms up linearly
then follows a cosine down to 10% of its peak:

    lr(s) = peak * s / warmup                                   s < warmup
    lr(s) = min + (peak - min) * (1 + cos(pi * progress)) / 2   afterwards

One optimiser step sees ``batch_size * grad_accum`` sequences; with DDP (launched by
``torchrun``, joined with ``setup_distributed()``) each of the ``world`` processes takes
its slice of that global batch and the gradients are averaged, so the numbers match a
single process.
With ``parallel="fsdp"`` the processes instead shard the model (FSDP2, see
``minillama.distributed``): same loop, same numbers, 1/world of the memory each, and
sharded checkpoints in ``out_dir/ckpt/`` that any number of processes can resume.

On a GPU the loop does what ``minillama.devices`` describes: the forward pass under bf16
autocast (``TrainConfig.precision``, "auto": bf16 on CUDA, fp32 on the CPU), TF32 for the
remaining fp32 matmuls, fused AdamW, pinned batches copied asynchronously, and, with
``TrainConfig.compile``, the model compiled by ``torch.compile`` (pretraining only).

Batches are a pure function of (seed, step), and a checkpoint holds model, optimiser,
schedule, RNG state and step: a resumed run continues bit-for-bit where it stopped.

The loop's pieces are the ones fine-tuning uses too: ``optimizer_step`` (NaN guard,
schedule, clipping, update), ``log_record``, and, for trainers that take one batch of
records per step (``finetune``, ``dpo_train``), ``epoch_batches`` and the loop ``fit``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoints.io import read_torch
from .config import check_token_ids, finite_positive, positive_int
from .devices import adamw, autocast, check_precision, resolve_precision, tf32, to_device
from .distributed import PARALLEL, load_sharded, save_sharded, shard
from .files import atomic_file


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16          # sequences per micro-batch, summed over all processes
    grad_accum: int = 1           # micro-batches per optimiser step
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 0           # 0: only at the end
    log_every: int = 10
    seed: int = 0
    compile: bool = False         # torch.compile the model (train() only)
    progress: bool = True
    parallel: str = "ddp"         # over torchrun's processes: "ddp" copies, "fsdp" shards
    precision: str = "auto"       # "fp32", "bf16" (autocast), "auto": bf16 on CUDA, else fp32

    def __post_init__(self):
        for f in ("steps", "batch_size", "grad_accum", "seq_len", "eval_every",
                  "eval_batches", "log_every"):
            positive_int(f"TrainConfig.{f}", getattr(self, f))
        if self.warmup < 0 or self.ckpt_every < 0:
            raise ValueError(f"TrainConfig.warmup and ckpt_every must be >= 0, "
                             f"got {self.warmup} and {self.ckpt_every}")
        finite_positive("TrainConfig.lr", self.lr)
        check_precision(self.precision, "TrainConfig.precision")
        if not isinstance(self.compile, bool):
            raise ValueError(f"TrainConfig.compile must be True or False, got {self.compile!r}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"TrainConfig.parallel must be one of {PARALLEL}, "
                             f"got {self.parallel!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], "
                             f"got {self.min_lr_ratio}")
        if not self.grad_clip > 0:          # NaN fails this too; math.inf: no clipping
            raise ValueError(f"TrainConfig.grad_clip must be > 0 (math.inf: no clipping), "
                             f"got {self.grad_clip}")
        if self.warmup > self.steps:
            warnings.warn(f"TrainConfig.warmup ({self.warmup}) exceeds steps ({self.steps}): "
                          f"the learning rate never reaches lr={self.lr}", stacklevel=3)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - 1 - cfg.warmup))
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   paged: bool = False) -> torch.optim.Optimizer:
    """AdamW with two groups: matrices decay, vectors (norm gains, biases) do not.

    Fused when every trainable parameter is on CUDA; ``paged=True`` (QLoRA) asks for
    bitsandbytes' paged AdamW, which CUDA gets and the CPU does not (``devices.adamw_kind``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return adamw(groups, cfg.lr, cfg.betas, cfg.weight_decay, paged=paged)


def get_batch(data: torch.Tensor, batch: int, seq_len: int, seed: int, step: int,
              micro: int = 0):
    """``batch`` random windows of ``data`` (a 1-D token tensor): inputs and next tokens.

    The windows depend only on (seed, step, micro), never on hidden iterator state.
    """
    if data.dim() != 1 or data.numel() < seq_len + 1:
        raise ValueError(f"data must be a 1-D token tensor of at least seq_len+1="
                         f"{seq_len + 1} tokens, got shape {tuple(data.shape)}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 997 + micro)
    starts = torch.randint(0, data.numel() - seq_len, (batch,), generator=g)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    windows = data[idx]
    return windows[:, :-1], windows[:, 1:]


# ----------------------------------------------------------------------------- the loop
# Every trainer here (pretraining below, ``finetune`` for SFT, ``dpo_train`` for DPO) runs
# the same loop and differs only in its batches and its loss:
#
#     for step in range(steps):
#         loss = the trainer's loss on the step's batch;  loss.backward()
#         optimizer_step(...)        # finite loss?  lr_at(step), clip, update, clear
#         every log_every steps: log_record(...)
#
# ``fit`` is that loop for one batch per step; ``train`` adds accumulation, DDP,
# evaluation and checkpoints around the same pieces.
class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: stop before the update spreads it into the weights."""


def epoch_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of indices into ``n`` records: a fresh random order every epoch.

    The orders come from one generator seeded with ``seed``, so the batches are fixed by
    it; a batch that does not fit in what is left of an epoch continues into the next.
    """
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:                       # next epoch's shuffle
            order += torch.randperm(n, generator=g).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        yield batch


def trainable(model) -> list[torch.nn.Parameter]:
    """The parameters training updates (``requires_grad``); an error if there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def optimizer_step(model, optimizer, step: int, cfg: TrainConfig, loss: float,
                   note: str = "") -> float:
    """One update once ``backward`` has filled the gradients; returns their norm.

    A non-finite ``loss`` clears the gradients and raises ``NonFiniteLoss`` (``note`` ends
    its message) before any weight changes. Otherwise every group gets lr_at(step), the
    gradient g of the trainable parameters is scaled to g * min(1, grad_clip / |g|) (the
    norm returned is |g|, before clipping), the optimiser steps and the gradients are cleared.
    """
    if not math.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"loss became {loss} at step {step + 1}; stopping.{note}")
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    norm = torch.nn.utils.clip_grad_norm_(trainable(model), cfg.grad_clip)
    if hasattr(norm, "full_tensor"):                # FSDP: a DTensor, summed over ranks
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def log_due(step: int, cfg: TrainConfig, last: int) -> bool:
    """Whether step ``step`` (0-based) is logged: every ``cfg.log_every``-th, and the last."""
    return (step + 1) % cfg.log_every == 0 or step + 1 == last


def log_record(step: int, loss: float, cfg: TrainConfig, t0: float, **extra) -> dict:
    """The log line of step ``step``: {"step", "loss", "lr", **extra, "time"}."""
    return {"step": step + 1, "loss": loss, "lr": lr_at(step, cfg), **extra,
            "time": time.perf_counter() - t0}


def fit(model, optimizer, cfg: TrainConfig, batches: Iterable, loss_fn) -> list[dict]:
    """The loop for one batch per step (SFT, DPO): ``cfg.steps`` steps over ``batches``.

    ``loss_fn(batch)`` returns the batch's loss (a scalar tensor) and a dict of tensors
    logged as their means; it runs under ``cfg.precision``'s autocast on the device of
    the trainable parameters (TF32 too on CUDA). Returns the log; the model is left in
    eval mode.
    """
    device = trainable(model)[0].device
    resolve_precision(cfg.precision, device)             # a bad choice fails before step 1
    model.train()
    log, t0 = [], time.perf_counter()
    with tf32(device, cfg.precision):
        for step, batch in zip(range(cfg.steps), batches):
            with autocast(device, cfg.precision):
                loss, stats = loss_fn(batch)
            loss.backward()
            value = loss.item()
            optimizer_step(model, optimizer, step, cfg, value)
            if log_due(step, cfg, cfg.steps):
                log.append(log_record(step, value, cfg, t0,
                                      **{k: v.float().mean().item() for k, v in stats.items()}))
    model.eval()
    return log


def setup_distributed(device="cpu") -> str:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); return the device.

    Each process then calls ``train`` as usual: NCCL and one GPU per process
    (``LOCAL_RANK``) for CUDA, gloo for CPU. A single process is left untouched.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.device(device).type == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return device


def _distributed():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("launched by torchrun (WORLD_SIZE > 1) but no process group: "
                           "call minillama.train.setup_distributed() before train()")
    return 0, 1


def _trim_metrics(path, upto: int):
    """Keep the records of steps <= ``upto`` (none for a fresh run): no duplicates on resume."""
    def keep(line):
        try:
            return json.loads(line)["step"] <= upto
        except (ValueError, KeyError, TypeError):       # a line cut short by a crash
            return False

    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if keep(line)]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(kept))


@torch.no_grad()
def evaluate(model, data: torch.Tensor, cfg: TrainConfig, batches: int | None = None,
             device="cpu") -> float:
    """Mean loss on ``batches`` fixed windows of ``data`` (the same windows every call)."""
    was = model.training
    model.eval()
    losses = []
    for i in range(batches or cfg.eval_batches):
        x, y = get_batch(data, cfg.batch_size, cfg.seq_len, seed=cfg.seed + 12345, step=i)
        x, y = to_device(device, x, y)
        with autocast(device, cfg.precision):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train(was)
    return sum(losses) / len(losses)


def train(model, train_data: torch.Tensor, cfg: TrainConfig, out_dir: str | None = None,
          val_data: torch.Tensor | None = None, resume: bool = False, device="cpu",
          stop_after: int | None = None) -> list[dict]:
    """Train ``model`` on ``train_data``; returns the logged metrics (also in metrics.jsonl).

    ``resume`` continues from ``out_dir/ckpt.pt`` (``out_dir/ckpt/``, sharded, for
    ``cfg.parallel == "fsdp"``). ``stop_after`` ends the run early at that step (as if
    interrupted), leaving a checkpoint to resume from. With FSDP over several processes
    ``model`` is sharded in place; ``distributed.full_state(model)`` gathers it back.
    """
    for what, data in (("train_data", train_data), ("val_data", val_data)):
        if data is not None:
            check_token_ids(data, model.cfg.vocab_size, what)
    rank, world = _distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide over {world} processes")
    resolve_precision(cfg.precision, device)             # a bad choice fails before step 1
    model.to(device).train()
    fsdp = cfg.parallel == "fsdp"
    if fsdp and world > 1:
        shard(model)                                   # before the optimiser sees the params
    optimizer = make_optimizer(model, cfg)
    start = 0
    ckpt_path = os.path.join(out_dir, "ckpt" if fsdp else "ckpt.pt") if out_dir else None
    if resume and fsdp:
        if not ckpt_path or not os.path.exists(os.path.join(ckpt_path, ".metadata")):
            raise FileNotFoundError(f"--resume: no sharded checkpoint at {ckpt_path}")
        start = load_sharded(model, optimizer, ckpt_path)
    elif resume:
        if not ckpt_path or not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        state = read_torch(ckpt_path)                  # a clear error if truncated
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    net = DistributedDataParallel(model) if world > 1 and not fsdp else model
    if cfg.compile:
        net = torch.compile(net)
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if out_dir and rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        _trim_metrics(metrics_path, start)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = None
    if cfg.progress and rank == 0:
        bar = tqdm(total=cfg.steps, initial=start, desc="train", leave=False, disable=None)
    t0 = time.perf_counter()
    per_rank, log = cfg.batch_size // world, []
    with tf32(device, cfg.precision):                  # on CUDA unless precision='fp32'
        for step in range(start, end):
            total = 0.0
            for micro in range(cfg.grad_accum):
                x, y = get_batch(train_data, cfg.batch_size, cfg.seq_len, cfg.seed, step, micro)
                mine = slice(rank * per_rank, (rank + 1) * per_rank)      # this process's rows
                x, y = to_device(device, x[mine], y[mine])
                sync = micro == cfg.grad_accum - 1 or world == 1
                if fsdp and world > 1:                # FSDP: reduce-scatter on the last only
                    model.set_requires_gradient_sync(sync)
                no_sync = net.no_sync() if not sync and not fsdp else contextlib.nullcontext()
                with no_sync:
                    with autocast(device, cfg.precision):       # the forward pass only
                        _, loss = net(x, y)
                    (loss / cfg.grad_accum).backward()
                total += loss.item() / cfg.grad_accum
            if world > 1:
                t = torch.tensor([total], device=device)
                dist.all_reduce(t)
                total = t.item() / world
            norm = optimizer_step(model, optimizer, step, cfg, total,
                                  f" The last good checkpoint ({ckpt_path or 'none saved'}) "
                                  f"is left untouched.")
            done = step + 1
            record = log_record(step, total, cfg, t0, grad_norm=norm,
                                tokens=done * cfg.batch_size * cfg.grad_accum * cfg.seq_len)
            if val_data is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
                record["val_loss"] = evaluate(model, val_data, cfg, device=device)
            if rank == 0 and (log_due(step, cfg, end) or "val_loss" in record):
                log.append(record)
                if metrics_path:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total:.3f}")
            due = ckpt_path and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == end)
            if due and fsdp:                               # every rank writes its pieces
                save_sharded(model, optimizer, ckpt_path, done, asdict(cfg))
            elif due and rank == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": torch.get_rng_state(), "step": done, "train_config": asdict(cfg)}
                with atomic_file(ckpt_path) as tmp:
                    torch.save(state, tmp)
    if bar is not None:
        bar.close()
    return log
