"""Graders for chapter 20 (scaling out: the ring all-reduce and the data-parallel gradient).

    python -m pytest tests/test_exercises_ch20.py                    # the reference answers
    python -m pytest tests/test_exercises_ch20.py --impl=exercises   # your work

The references are real process groups: ``torch.distributed`` on gloo in forked CPU
processes (``all_reduce`` with 3 ranks, ``DistributedDataParallel`` with 2), as
``minillama.train`` runs them under ``torchrun``. Where the platform cannot fork, those
two comparisons are skipped; the checks against the sums and the full-batch gradient
still run.
"""

import multiprocessing
import os

import pytest
import torch

from minillama import Llama, LlamaConfig

CH20 = "ch20_scaling_out"
MODEL = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                    multiple_of=16, max_seq_len=32)


def randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- gloo
def _worker(rank, world, init_file, out_dir, task, args):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        torch.save(task(rank, world, *args), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_gloo(tmp_path, world, task, *args):
    """``task(rank, world, *args)`` in ``world`` forked processes joined by gloo; the
    list of what each returned."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method for quick gloo process groups")
    ctx = multiprocessing.get_context("fork")
    init = tmp_path / "gloo-init"
    procs = [ctx.Process(target=_worker, args=(r, world, str(init), str(tmp_path), task, args))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _all_reduce(rank, world, tensors):
    t = tensors[rank].clone()
    torch.distributed.all_reduce(t)
    return t


def _ddp_gradients(rank, world, x, y):
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = DistributedDataParallel(Llama(MODEL))
    xb, yb = x.chunk(world)[rank], y.chunk(world)[rank]
    _, loss = model(xb, yb)
    loss.backward()
    return {k.removeprefix("module."): p.grad for k, p in model.named_parameters()}


# ----------------------------------------------------------------------------- ring
def _ring_order_sum(tensors):
    """Each chunk c summed as the ring does: (x_c + x_{c+1}) + x_{c+2} + ..."""
    n = len(tensors)
    pieces = [torch.tensor_split(t.reshape(-1), n) for t in tensors]
    out = []
    for c in range(n):
        acc = pieces[c][c].clone()
        for k in range(1, n):
            acc = acc + pieces[(c + k) % n][c]
        out.append(acc)
    return torch.cat(out).view(tensors[0].shape)


@pytest.mark.parametrize("n, shape", [(1, (5,)), (2, (4, 3)), (3, (10,)), (4, (2, 5)),
                                      (5, (3,)), (8, (64, 3))])
def test_ch20_ring_allreduce(impl, n, shape):
    tensors = [randn(*shape, seed=10 * n + r) for r in range(n)]
    before = [t.clone() for t in tensors]
    results, sent = impl(CH20).ring_allreduce(tensors)
    assert len(results) == n and len(sent) == n
    for t, b in zip(tensors, before):
        torch.testing.assert_close(t, b, rtol=0, atol=0)      # the inputs are not changed
    expected = _ring_order_sum(tensors)
    for got in results:
        assert got.shape == shape
        torch.testing.assert_close(got, expected, rtol=0, atol=0)   # the ring's bits
        torch.testing.assert_close(got, torch.stack(tensors).sum(0))
    # elements sent: all 2 (N - 1) chunks except the two a rank never sends
    sizes = [c.numel() for c in torch.tensor_split(torch.empty(tensors[0].numel()), n)]
    numel = tensors[0].numel()
    assert sent == [2 * numel - sizes[(r + 1) % n] - sizes[(r + 2) % n] if n > 1 else 0
                    for r in range(n)]
    if numel % n == 0:
        assert sent == [2 * (n - 1) * numel // n] * n             # 2 (N - 1) / N of it


def test_ch20_ring_allreduce_matches_gloo(impl, tmp_path):
    tensors = [randn(7, 5, seed=r) for r in range(3)]
    gloo = run_gloo(tmp_path, 3, _all_reduce, tensors)
    results, _ = impl(CH20).ring_allreduce(tensors)
    for got, want in zip(results, gloo):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- DDP
def _batch(seed=1, batch=8, seq=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MODEL.vocab_size, (batch, seq), generator=g)
    return x, torch.randint(0, MODEL.vocab_size, (batch, seq), generator=g)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ch20_data_parallel_gradients_are_the_full_batch_gradient(impl, one_thread, world):
    torch.manual_seed(0)
    model = Llama(MODEL)
    x, y = _batch()
    got = impl(CH20).data_parallel_gradients(model, x, y, world)
    assert all(p.grad is None for p in model.parameters())
    _, loss = model(x, y)
    loss.backward()
    expected = {k: p.grad for k, p in model.named_parameters()}
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-6, rtol=1e-4)


def test_ch20_data_parallel_gradients_match_ddp_on_gloo(impl, one_thread, tmp_path):
    x, y = _batch(seed=2)
    ddp = run_gloo(tmp_path, 2, _ddp_gradients, x, y)
    torch.manual_seed(0)
    got = impl(CH20).data_parallel_gradients(Llama(MODEL), x, y, 2)
    for k, want in ddp[0].items():
        torch.testing.assert_close(ddp[1][k], want)               # DDP: both ranks agree
        torch.testing.assert_close(got[k], want, atol=1e-6, rtol=1e-4)


def test_ch20_a_slice_gradient_is_not_the_average(impl, one_thread):
    """Guards the grader itself: one rank's gradient differs from the averaged one."""
    torch.manual_seed(0)
    model = Llama(MODEL)
    x, y = _batch()
    got = impl(CH20).data_parallel_gradients(model, x, y, 2)
    _, loss = model(x[:4], y[:4])
    loss.backward()
    assert any(not torch.allclose(got[k], p.grad, atol=1e-5)
               for k, p in model.named_parameters())
