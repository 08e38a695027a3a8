"""Graders for chapter 15 (instruction tuning): response masking and the response loss.

    python -m pytest tests/test_exercises_ch15.py --impl=exercises
"""

import math

import pytest
import torch
import torch.nn.functional as F

from minillama import Llama, LlamaConfig
from minillama.data import format_prompt, instruction_data
from minillama.finetune import sft_batch, sft_tokens
from minillama.tokenizer import ByteTokenizer

CH15 = "ch15_instruction_tuning"
TOK = ByteTokenizer()


def test_ch15_mask_response_by_hand(impl):
    # ids = [1, 10, 11, 20, 21, 2]: inputs drop the last, targets drop the first and
    # hide the two targets (10, 11) that are still prompt
    inputs, targets = impl(CH15).mask_response([1, 10, 11], [20, 21], 2)
    assert inputs == [1, 10, 11, 20, 21]
    assert targets == [-100, -100, 20, 21, 2]
    # an empty response still trains the EOS
    assert impl(CH15).mask_response([1, 7], [], 2) == ([1, 7], [-100, 2])


def test_ch15_mask_response_leaves_its_arguments_alone(impl):
    prompt, response = [1, 5, 6, 7], [8, 9]
    impl(CH15).mask_response(prompt, response, 2)
    assert prompt == [1, 5, 6, 7] and response == [8, 9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ch15_mask_response_matches_sft_tokens(impl, seed):
    for record in instruction_data(25, seed=seed):
        prompt = TOK.encode(format_prompt(record), bos=True)
        response = TOK.encode(record["output"])
        inputs, targets = impl(CH15).mask_response(prompt, response, TOK.eos_id)
        want_inputs, want_targets = sft_tokens(record, TOK)
        assert inputs == want_inputs and targets == want_targets
        # only the response and the EOS are left in the loss, in order
        assert [t for t in targets if t != -100] == response + [TOK.eos_id]
        assert targets.count(-100) == len(prompt) - 1


def test_ch15_response_loss_by_hand(impl):
    # uniform logits over V tokens: every kept target costs log V
    logits = torch.zeros(2, 3, 5)
    targets = torch.tensor([[-100, 1, 4], [-100, -100, 0]])
    assert impl(CH15).response_loss(logits, targets).item() == pytest.approx(math.log(5))
    # one kept position with p = e^2 / (e^2 + 4): the loss is its -log p
    logits[1, 2, 0] = 2.0
    only = torch.tensor([[-100, -100, -100], [-100, -100, 0]])
    want = -math.log(math.exp(2) / (math.exp(2) + 4))
    assert impl(CH15).response_loss(logits, only).item() == pytest.approx(want, rel=1e-6)


def test_ch15_response_loss_equals_the_model_loss(impl):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, vocab_size=TOK.vocab_size,
                              multiple_of=16, max_seq_len=256)).eval()
    records = instruction_data(4, seed=5, families=["max_list", "refusal", "reverse_word"])
    x, y = sft_batch([sft_tokens(r, TOK) for r in records], TOK.pad_id)
    logits, loss = model(x, y)
    got = impl(CH15).response_loss(logits, y)
    assert got.shape == ()
    torch.testing.assert_close(got, loss)
    torch.testing.assert_close(got, F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100))
    got.backward()                                   # differentiable through the logits
    assert model.output.weight.grad is not None and model.output.weight.grad.abs().sum() > 0
