"""Train the PEFT benchmark's shipped adapters (``minillama/tasks/bench.py``).

    python scripts/train_adapters.py problems        # adapters/problems.json, base.json
    python scripts/train_adapters.py sweep           # learning rates -> adapters/sweep.json
    python scripts/train_adapters.py train [NAME...] # every adapter of bench.SHIPPED (or NAME)

``sweep`` trains each method of ``bench.SWEEP`` at each of its learning rates for the full
step budget and keeps the rate with the best exact match on the *validation* problems
(the lower validation loss breaks a tie). ``train`` trains each shipped adapter at its
chosen rate, writes it to ``minillama/adapters/<name>/`` with its card (measured from the
files as written) and prints the card's figures. Both run on the CPU in the reference
setting (2 threads); the cards record hardware and wall time.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys

import torch

from minillama.files import write_json
from minillama.reference import hardware
from minillama.tasks import bench


def cmd_problems(args):
    """The problems, then the base's skill on its own 1,000 (adapters/base.json)."""
    problems = bench.make_problems()
    bench.ADAPTER_DIR.mkdir(exist_ok=True)
    write_json(problems, bench.ADAPTER_DIR / "problems.json")
    print({k: len(v) for k, v in problems.items()})
    skill = bench.base_skill()
    write_json({"base": bench.BASE, **skill}, bench.ADAPTER_DIR / "base.json")
    print(json.dumps(skill, indent=2))


def cmd_sweep(args):
    results = {}
    names = args.names or list(bench.SWEEP)
    for name in names:
        for lr in bench.SWEEP[name]:
            model, tok, log, wall = bench.run(bench.METHODS[name], lr=lr)
            fig = bench.measure(model, tok, bench.val_records())
            results.setdefault(name, []).append(
                {"lr": lr, "val_exact_match": round(fig["exact_match"], 4),
                 "val_loss": round(fig["loss"], 4), "final_train_loss": round(log[-1]["loss"], 4),
                 "wall_time_s": round(wall, 1)})
            print(name, results[name][-1], flush=True)
    path = bench.ADAPTER_DIR / "sweep.json"
    bench.ADAPTER_DIR.mkdir(exist_ok=True)
    lock = os.open(bench.ADAPTER_DIR, os.O_RDONLY)        # sweeps run in parallel merge
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text())["results"] if path.exists() else {}
        _write_sweep({**old, **results}, path)
    finally:
        os.close(lock)


def _write_sweep(results, path):
    chosen = {name: max(rows, key=lambda r: (r["val_exact_match"], -r["val_loss"]))["lr"]
              for name, rows in results.items()}
    chosen.update({child: chosen[parent] for child, parent in bench.PARENT.items()
                   if parent in chosen})
    sweep = {"steps": bench.STEPS, "batch": bench.BATCH, "val_records": bench.N_VAL,
             "rule": "best validation exact match (Alpaca template), then lower loss",
             "hardware": hardware(), "results": results, "chosen": chosen}
    write_json(sweep, path)
    print(json.dumps(chosen, indent=2))


def cmd_train(args):
    todo = [s for s in bench.SHIPPED if not args.names or bench.adapter_name(*s) in args.names]
    for name, noisy, seed in todo:
        m = bench.method(name)
        model, tok, log, wall = bench.run(m, noisy=noisy, seed=seed, steps=args.steps)
        n, share = bench.trainable_share(model, m)
        facts = {"name": bench.adapter_name(name, noisy, seed), "recipe": name,
                 "about": m.about, "options": m.options, "gates": m.gates,
                 "frozen": list(m.freeze), "data": "noisy" if noisy else "clean",
                 "noise": bench.NOISE if noisy else 0.0, "seed": seed, "steps": args.steps,
                 "batch": bench.BATCH, "lr": m.lr, "warmup": bench.WARMUP,
                 "trainable_parameters": n, "trainable_share": round(share, 6),
                 "wall_time_s": round(wall, 1), "hardware": hardware(),
                 "torch": torch.__version__, "base": bench.BASE,
                 "train_loss": [round(r["loss"], 4) for r in log],
                 "command": "python scripts/train_adapters.py train "
                            + bench.adapter_name(name, noisy, seed)}
        card = bench.publish(model, tok, m, bench.ADAPTER_DIR / facts["name"], facts)
        print(f"{facts['name']:32s} exact match {card['test_exact_match']:.1%} "
              f"{card['ci95']}  forgetting {card['forgetting']:+.1%}  {wall:.0f} s", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("problems")
    for name in ("sweep", "train"):
        sub.add_parser(name).add_argument("names", nargs="*")
    sub.choices["train"].add_argument("--steps", type=int, default=bench.STEPS,
                                      help="(development only: the shipped set uses STEPS)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"problems": cmd_problems, "sweep": cmd_sweep, "train": cmd_train}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
