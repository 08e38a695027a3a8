"""One DDP process for ``test_train.py::test_ddp_matches_single_process``.

Run as ``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT``:
each process joins the gloo group with ``setup_distributed()``, trains the same tiny
model on the same random tokens, and rank 0 saves its per-step losses and final
weights to ``OUT/ddp.pt``. The test imports ``run`` to make the single-process twin.
"""

import sys

import torch

from minillama import Llama, LlamaConfig
from minillama.train import TrainConfig, setup_distributed, train

MODEL = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                    multiple_of=16, max_seq_len=32)
TRAIN = TrainConfig(steps=4, batch_size=8, grad_accum=2, seq_len=16, lr=1e-2, warmup=1,
                    log_every=1, eval_every=1000, progress=False)


def run(out_dir=None):
    """(logged records, trained model) for the shared setup, in this process's group."""
    data = torch.randint(0, MODEL.vocab_size, (4000,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = Llama(MODEL)
    return train(model, data, TRAIN, out_dir=out_dir), model


if __name__ == "__main__":
    torch.set_num_threads(1)
    setup_distributed("cpu")
    log, model = run()
    if torch.distributed.get_rank() == 0:
        torch.save({"world": torch.distributed.get_world_size(),
                    "losses": [r["loss"] for r in log], "state": model.state_dict()},
                   f"{sys.argv[1]}/ddp.pt")
    torch.distributed.destroy_process_group()
