"""Command line: ``python -m minillama {train,generate,count,eval,publish}`` (each has --help).

    python -m minillama train --recipe stories --out runs/stories
    python -m minillama generate minillama/reference/stories --prompt "Once upon a time"
    python -m minillama generate ~/models/Llama-3.2-1B-Instruct --chat   # any HF snapshot
    python -m minillama count llama2-7b llama3-8b
    python -m minillama eval minillama/reference/arithmetic
    python -m minillama eval minillama/adapters/lora-qv   # a shipped PEFT adapter
    python -m minillama publish runs/stories      # -> minillama/reference/stories (bf16)

Bad arguments and bad paths end with one line on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from . import course, load, save
from .chat_cli import add_arguments as add_generate_arguments
from .config import CONFIGS
from .devices import PRECISIONS, resolve_precision
from .distributed import close_group, full_state, gather_objects, measure_held, placement
from .files import read_json
from .model import count_parameters, kv_cache_bytes_per_token
from .recipes import RECIPES, build_data, fit_supervised, get_recipe, initial_model
from .reference import REFERENCE_DIR, hardware, verify, write_card
from .tasks import bench
from .tokenizer import Tokenizer
from .train import NonFiniteLoss, setup_distributed, train


def _device(name):
    """``auto``: with one process the notebooks' choice, ``course.device()`` (cuda for the
    full profile, which is the default where CUDA is available; cpu otherwise); under
    torchrun's ``WORLD_SIZE`` processes ``placement`` (cuda when every process gets a GPU
    of its own, else cpu). An explicit cuda is checked the same way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if name == "auto":
        return course.device() if world == 1 else placement(world).device
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name == "cuda" and placement(world).device != "cuda":
        raise ValueError(f"--device cuda: {world} processes but {torch.cuda.device_count()} "
                         f"GPU(s); NCCL needs one GPU per process: start fewer processes "
                         f"or use --device cpu (gloo)")
    return name


def _measure(model, tok, recipe, val_data, n_problems: int = 200) -> dict:
    """Validation loss, and the task's own figures on ``n_problems`` it never trained on."""
    task = recipe.task
    return {"val_loss": round(task.val_loss(model, tok, val_data, recipe.train), 4),
            **task.scores(model, tok, n_problems)}


def _train_supervised(model, tok, records, recipe, out: Path, resume: bool, device):
    """``recipes.fit_supervised`` (response-only loss, the recipe's schedule); log to
    metrics.jsonl."""
    if resume:
        raise ValueError(f"--resume: recipe {recipe.name} trains by supervised fine-tuning, "
                         f"which keeps no checkpoint to resume from")
    log = fit_supervised(model, tok, records, recipe, device)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def cmd_train(args):
    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size,
                                       lr=args.lr, seed=args.seed,
                                       log_every=args.log_every, parallel=args.parallel,
                                       precision=args.precision,
                                       compile=args.compile).items() if v is not None}
    recipe = get_recipe(args.recipe, **overrides)
    out = Path(args.out or f"runs/{recipe.name}")
    stop = args.stop_after is not None and args.stop_after < recipe.train.steps
    if args.stop_after is not None and recipe.task.supervised:
        raise ValueError(f"--stop-after: recipe {recipe.name} trains by supervised "
                         f"fine-tuning, which keeps no checkpoint to resume from")
    if out.exists() and not out.is_dir():               # say so before training, not after
        raise ValueError(f"--out {out} is an existing file; name a directory for the run")
    if recipe.task.supervised and recipe.train.parallel == "fsdp":
        raise ValueError(f"--parallel fsdp: recipe {recipe.name} trains by supervised "
                         f"fine-tuning, which runs on one process; drop --parallel")
    if recipe.task.supervised and recipe.train.compile:
        raise ValueError(f"--compile: recipe {recipe.name} trains by supervised fine-tuning, "
                         f"whose batches change length every step; drop --compile")
    device = setup_distributed(_device(args.device))     # torchrun: join the group
    precision = resolve_precision(recipe.train.precision, device)   # fails now if bad
    torch.manual_seed(recipe.train.seed)
    tok, train_data, val_data = build_data(recipe)
    model = initial_model(recipe)
    t0 = time.perf_counter()
    with measure_held() as held:        # bytes of model state this process holds
        if recipe.task.supervised:      # one example per row, the loss on the answers
            _train_supervised(model, tok, train_data, recipe, out, args.resume, device)
        else:
            train(model, train_data, recipe.train, out_dir=str(out), val_data=val_data,
                  resume=args.resume, device=device, stop_after=args.stop_after)
    wall = time.perf_counter() - t0
    held = gather_objects(held)         # one entry per process (collective)
    if stop:                            # as if interrupted: the checkpoint, no model
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        close_group()
        if rank == 0:
            ckpt = out / ("ckpt" if recipe.train.parallel == "fsdp" else "ckpt.pt")
            print(json.dumps({"stopped_at_step": args.stop_after, "checkpoint": str(ckpt),
                              "held_bytes": held}, indent=2))
        return
    if torch.distributed.is_initialized():          # rank 0 alone saves and reports
        rank = torch.distributed.get_rank()
        if recipe.train.parallel == "fsdp":        # gather the shards on rank 0 (collective)
            state = full_state(model)
            if rank == 0:
                model = initial_model(recipe)
                model.load_state_dict(state)
        close_group()
        if rank != 0:
            return
    model.eval()
    save(model.cpu(), out / "model")
    tok.save(out / "model" / "tokenizer.json")
    seen = ({"examples_seen": recipe.train.steps * recipe.train.batch_size}
            if recipe.task.supervised else
            {"tokens_seen": recipe.train.steps * recipe.train.batch_size
             * recipe.train.grad_accum * recipe.train.seq_len})
    facts = dict(recipe=recipe.name, steps=recipe.train.steps, **seen,
                 parameters=sum(p.numel() for p in model.parameters()),
                 **_measure(model, tok, recipe, val_data),
                 device=device, precision=precision, hardware=hardware(),
                 wall_time_s=round(wall, 1), processes=len(held), held_bytes=held,
                 resumed=bool(args.resume), torch=torch.__version__,
                 **({"init_from": recipe.init_from} if recipe.init_from else {}),
                 command=" ".join(["python -m minillama"] + sys.argv[1:]))
    card = write_card(out / "model", **facts)
    print(json.dumps({k: v for k, v in card.items() if k != "sha256"}, indent=2))


def _load_with_tokenizer(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if (path / "card.json").exists():
        verify(path)
    tok = Tokenizer.load(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
    return load(path, quiet=True), tok


def cmd_count(args):
    names = args.models or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(CONFIGS)}")
    print(f"{'model':16s} {'parameters':>19s} {'KV KiB/token (bf16)':>20s}")
    for name in names:
        print(f"{name:16s} {count_parameters(name):19,d} "
              f"{kv_cache_bytes_per_token(name) / 1024:20.2f}")


def _is_adapter(path) -> bool:
    card = Path(path) / "card.json"
    return card.is_file() and "test_exact_match" in read_json(card)


def cmd_eval_adapter(args):
    """Re-measure a shipped adapter's card figures from its files (``tasks/bench.py``)."""
    model, tok, card = bench.load_adapter(args.checkpoint)
    figures = bench.card_figures(bench.measure(model, tok))
    result = {"adapter": args.checkpoint, **figures,
              "card_agrees": all(figures[k] == card.get(k) for k in CARD_FIGURES)}
    print(json.dumps(result, indent=2))
    if not result["card_agrees"]:
        differ = {k: (card.get(k), figures[k]) for k in CARD_FIGURES if figures[k] != card.get(k)}
        raise ValueError(f"{args.checkpoint}: re-measured figures differ from card.json "
                         f"(card, measured): {differ}")


CARD_FIGURES = ("test_exact_match", "test_records", "ci95", "forgetting")


def cmd_eval(args):
    if _is_adapter(args.checkpoint):
        return cmd_eval_adapter(args)
    model, tok = _load_with_tokenizer(args.checkpoint)
    name = args.recipe or model.cfg.name
    recipe = get_recipe(name)
    recipe_tok, _, val = build_data(recipe)
    if recipe_tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"recipe {name!r} encodes its data with {recipe_tok.vocab_size} token "
                         f"ids but {args.checkpoint} has vocab_size {model.cfg.vocab_size}; "
                         f"pass the recipe the checkpoint was trained with (--recipe)")
    result = {"checkpoint": args.checkpoint, "recipe": name,
              **_measure(model, tok, recipe, val, args.n)}
    print(json.dumps(result, indent=2))


def cmd_publish(args):
    """Store a finished run as a shipped reference: bf16 weights, re-measured, hashed."""
    run = Path(args.run)
    card = verify(run / "model")
    model, tok = _load_with_tokenizer(run / "model")
    recipe = get_recipe(card["recipe"])
    dest = Path(args.dest) if args.dest else REFERENCE_DIR / recipe.name
    stored = model.to(torch.bfloat16)
    save(stored, dest)
    tok.save(dest / "tokenizer.json")
    if (run / "metrics.jsonl").exists():
        (dest / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text())
    _, _, val = build_data(recipe)
    rounded = load(dest)                     # what users will load: bf16 values, fp32 compute
    facts = {k: v for k, v in card.items() if k != "sha256"}
    facts.update({f"{k}_before_rounding": facts[k] for k in list(facts)
                  if k == "val_loss" or k.startswith("accuracy_")})
    facts.update(_measure(rounded, tok, recipe, val), stored_dtype="bfloat16")
    card = write_card(dest, **facts)
    print(json.dumps({k: v for k, v in card.items() if k != "sha256"}, indent=2))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (and exit status 2)."""

    def error(self, message):
        name = self.prog.removeprefix("python -m ")      # "minillama train", as elsewhere
        self.exit(2, f"{name}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a bad one is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _examples() -> str:
    """The module docstring's example commands, for the epilog of --help."""
    return "examples:\n" + "\n".join(line for line in __doc__.splitlines()
                                      if line.startswith("    python -m"))


def build_parser():
    ap = _Parser(
        prog="python -m minillama", epilog=_examples(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, sample, count, evaluate and publish LLaMA models "
                    "(every command has its own --help).")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train a recipe from scratch (or --resume)")
    t.add_argument("--recipe", required=True, choices=list(RECIPES), metavar="RECIPE",
                   help=f"one of: {', '.join(RECIPES)}")
    t.add_argument("--out", help="run directory (default runs/<recipe>)")
    t.add_argument("--steps", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--log-every", type=_positive_int, help="steps between metrics.jsonl records")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto (default): what the notebooks pick, cuda for the full profile "
                        "(MINILLAMA_PROFILE; full where CUDA is available), else cpu")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 autocast on a CUDA GPU with bf16, else fp32; "
                        "fp32 also turns TF32 off")
    t.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model (pretraining recipes; the first steps "
                        "pay for compiling)")
    t.add_argument("--parallel", choices=["ddp", "fsdp"],
                   help="under torchrun: ddp copies the model into every process (default), "
                        "fsdp shards it (checkpoints in <out>/ckpt/)")
    t.add_argument("--stop-after", type=_positive_int, metavar="STEP",
                   help="end at STEP with a checkpoint, as if interrupted (then --resume)")
    t.add_argument("--resume", action="store_true",
                   help="continue from <out>/ckpt.pt (<out>/ckpt/ with --parallel fsdp)")
    t.set_defaults(fn=cmd_train)
    g = sub.add_parser("generate", help="sample text from a checkpoint directory, or chat "
                                        "with it (--chat)")
    add_generate_arguments(g, _positive_int)
    c = sub.add_parser("count", help="exact parameter counts and KV-cache size")
    c.add_argument("models", nargs="*",
                   help="names from minillama.CONFIGS (default: all of them)")
    c.set_defaults(fn=cmd_count)
    e = sub.add_parser("eval", help="validation loss (and accuracy) of a checkpoint, or a "
                                    "shipped adapter's card figures re-measured")
    e.add_argument("checkpoint")
    e.add_argument("--recipe", help="recipe whose validation data to use (default: the model's)")
    e.add_argument("-n", type=_positive_int, default=200,
                   help="held-out problems to score (default 200)")
    e.set_defaults(fn=cmd_eval)
    p = sub.add_parser("publish", help="store a finished run as a shipped reference (bf16)")
    p.add_argument("run", help="a training run directory (holding model/ and metrics.jsonl)")
    p.add_argument("--dest", help="default: minillama/reference/<recipe>")
    p.set_defaults(fn=cmd_publish)
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)

    def one_line(message, category, *rest, **kw):      # warnings too: one line each
        print(f"minillama {args.command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():                    # restores showwarning afterwards
        warnings.showwarning = one_line
        try:
            args.fn(args)
        except (ValueError, TypeError, OSError, KeyError, NonFiniteLoss) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e  # no repr quotes
            print(f"minillama {args.command}: error: {message}", file=sys.stderr)
            sys.exit(2)


def _end_torchrun_worker() -> None:
    """End a process ``torchrun`` started at once, without the interpreter's teardown.

    gloo's worker threads free the work objects of the last collectives on their own
    schedule. Those hold tensors made in Python (``all_gather_object``'s), and freeing
    one needs the GIL: if the main thread is already finalising the interpreter, the
    worker cannot take it and the process aborts ("terminate called without an active
    exception"; 2 of 132 two-process runs here, and the core dump shows
    ``ProcessGroupGloo::runLoop`` freeing the barrier's work inside ``Py_FinalizeEx``;
    the race PyTorch PR 179291 describes). By now the group is left and every file
    written, so nothing is lost by skipping the teardown; only the streams need flushing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _end_torchrun_worker()
