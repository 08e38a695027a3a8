"""Chapter 20 exercises: the ring all-reduce, and data parallelism's averaged gradient.

Data parallelism gives each of N ranks 1/N of the batch; before every optimiser step the
ranks sum their gradients with an all-reduce and divide by N, so every copy of the model
takes the same step:

    g = (1 / N) sum_r g_r,     g_r = gradient of the mean loss on rank r's slice

With equal slices g is exactly the gradient of the global batch.

**The ring all-reduce** (Patarasuk & Yuan 2009; what NCCL and gloo use for large
tensors). Each rank cuts its flat tensor into N chunks, ``torch.tensor_split(flat, N)``
(chunk c is the same slice on every rank), and the ranks sit in a ring, rank r sending
only to rank (r + 1) mod N:

    reduce-scatter, steps s = 0 .. N-2: rank r sends its chunk (r - s) mod N to rank
        r + 1, which adds it to its own copy of that chunk. Afterwards rank r holds the
        full sum of chunk (r + 1) mod N.
    all-gather, steps s = 0 .. N-2: rank r sends its chunk (r + 1 - s) mod N to rank
        r + 1, which replaces its copy with it.

Within a step every send uses the values from *before* the step. Each rank sends
2 (N - 1) chunks, about 2 (N - 1) / N of the tensor, whatever N: the bandwidth cost of
an all-reduce barely grows with the number of ranks.

The graders run your all-reduce against ``torch.distributed.all_reduce`` on gloo (3
processes), and your averaged gradient against the full batch's gradient and against
``DistributedDataParallel`` on gloo (2 processes).
"""

import torch


def ring_allreduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Simulate the ring all-reduce of ``tensors`` (one per rank, equal shapes).

    Returns (results, sent): ``results[r]`` is what rank r holds at the end (the sum of
    all tensors, in the input shape), ``sent[r]`` how many elements rank r sent. Follow
    the schedule above exactly: then chunk c is summed in ring order, starting from rank
    c's values ((x_c + x_{c+1}) + x_{c+2} ...), and the grader checks the bits.
    """
    # BEGIN SOLUTION
    n = len(tensors)
    shape = tensors[0].shape
    chunks = [list(torch.tensor_split(t.reshape(-1).clone(), n)) for t in tensors]
    sent = [0] * n
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            outgoing = []
            for r in range(n):
                c = (r - s) % n if phase == "reduce-scatter" else (r + 1 - s) % n
                outgoing.append((r, c, chunks[r][c].clone()))
                sent[r] += chunks[r][c].numel()
            for r, c, values in outgoing:
                dst = (r + 1) % n
                chunks[dst][c] = chunks[dst][c] + values if phase == "reduce-scatter" \
                    else values
    return [torch.cat(own).view(shape) for own in chunks], sent
    # END SOLUTION


def data_parallel_gradients(model, x: torch.Tensor, y: torch.Tensor,
                            world: int) -> dict[str, torch.Tensor]:
    """The gradient N = ``world`` data-parallel ranks agree on, computed in one process.

    ``model(xb, yb)`` returns ``(logits, loss)`` with the mean loss of the batch. Cut x
    and y (batch first; the batch size is a multiple of ``world``) into ``world`` equal
    slices, one per rank; compute each rank's gradient on its slice; sum them with
    ``ring_allreduce`` and divide by ``world``. Returns {parameter name: gradient} for
    the parameters that require one; leaves the model's ``.grad`` fields as None.
    """
    # BEGIN SOLUTION
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    per_rank = []
    for xb, yb in zip(x.chunk(world), y.chunk(world)):
        _, loss = model(xb, yb)
        grads = torch.autograd.grad(loss, [p for _, p in named])
        per_rank.append(torch.cat([g.reshape(-1) for g in grads]))
    summed, _ = ring_allreduce(per_rank)
    flat = summed[0] / world
    out, offset = {}, 0
    for k, p in named:
        out[k] = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return out
    # END SOLUTION
