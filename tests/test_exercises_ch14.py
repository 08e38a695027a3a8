"""Graders for chapter 14 (PEFT head-to-head: training state, telling scores apart).

    python -m pytest tests/test_exercises_ch14.py                    # the reference answers
    python -m pytest tests/test_exercises_ch14.py --impl=exercises   # your work

``training_state_bytes`` is checked against the tensors a real AdamW step creates on small
models (full fine-tuning and PEFT methods), ``wilson`` against
``minillama.metrics.wilson_interval`` (``--impl``: see ``conftest.py``).
"""

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama import peft as P
from minillama.metrics import wilson_interval

CH14 = "ch14_head_to_head"
CFG = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=16)


def measured_bytes(model) -> int:
    """Parameters and buffers, plus the gradients and AdamW moments one real step creates."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    x = torch.randint(CFG.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    moments = sum(t.numel() * t.element_size() for st in optimizer.state.values()
                  for t in st.values() if torch.is_tensor(t) and t.dim() > 0)
    return held + grads + moments


@pytest.mark.parametrize("method, options", [
    (None, {}), ("lora", dict(r=4, targets=("wq", "wv"))), ("adapter_v1", dict(layers=2)),
    ("adapter_v2", dict(layers=1)), ("excitor", dict(layers=2))])
def test_ch14_training_state_bytes(impl, one_thread, method, options):
    torch.manual_seed(0)
    model = Llama(CFG)
    if method is not None:
        P.apply(model, method, **options)
    got = impl(CH14).training_state_bytes(model)
    assert got == measured_bytes(model)


def test_ch14_training_state_shrinks_with_peft(impl, one_thread):
    """The measured trend: PEFT holds far less training state than full fine-tuning."""
    torch.manual_seed(0)
    full = impl(CH14).training_state_bytes(Llama(CFG))
    lora = impl(CH14).training_state_bytes(P.apply(Llama(CFG), "lora", r=4))
    weights = sum(p.numel() * p.element_size() for p in Llama(CFG).parameters())
    assert full > 3.9 * weights and lora < 1.5 * weights


@pytest.mark.parametrize("hits, n", [(0, 10), (10, 10), (7, 20), (250, 500), (1, 1000),
                                     (421, 500)])
def test_ch14_wilson(impl, hits, n):
    got = impl(CH14).wilson(hits, n)
    assert got == pytest.approx(wilson_interval(hits, n), abs=1e-9)


@pytest.mark.parametrize("a, b, expected", [((400, 500), (300, 500), True),
                                            ((400, 500), (390, 500), False),
                                            ((0, 500), (10, 500), True),
                                            ((5, 20), (10, 20), False)])
def test_ch14_apart(impl, a, b, expected):
    assert impl(CH14).apart(*a, *b) is expected
    assert impl(CH14).apart(*b, *a) is expected
