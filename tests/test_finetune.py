"""Instruction fine-tuning: response-only targets, padding, training, and greedy answers."""

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama import peft as P
from minillama.data.instructions import format_prompt, instruction_data, score
from minillama.finetune import (
    IGNORE,
    finetune,
    generate_answers,
    greedy_score,
    sft_batch,
    sft_loss,
    sft_tokens,
)
from minillama.tokenizer import ByteTokenizer
from minillama.train import TrainConfig, lr_at

TOK = ByteTokenizer()


def tiny_model(seed=0, max_seq_len=256):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(dim=48, n_layers=2, n_heads=4, n_kv_heads=2,
                             vocab_size=TOK.vocab_size, multiple_of=16, max_seq_len=max_seq_len))


def records(n, seed=0, families=("add", "multiply")):
    return instruction_data(n, seed=seed, families=list(families))


def test_sft_tokens_leaves_only_the_response_and_eos_as_targets():
    record = records(1)[0]
    inputs, targets = sft_tokens(record, TOK)
    prompt = TOK.encode(format_prompt(record), bos=True)
    full = prompt + TOK.encode(record["output"]) + [TOK.eos_id]
    assert inputs == full[:-1] and len(targets) == len(inputs)
    assert targets[:len(prompt) - 1] == [IGNORE] * (len(prompt) - 1)      # the prompt: masked
    kept = [t for t in targets if t != IGNORE]
    assert kept[-1] == TOK.eos_id and TOK.decode(kept[:-1]) == record["output"]
    assert targets[len(prompt) - 1:] == full[len(prompt):]                  # next tokens


def test_sft_batch_pads_on_the_right_with_ignored_targets():
    examples = [sft_tokens(r, TOK) for r in records(3, families=["add", "list_to_csv"])]
    x, y = sft_batch(examples, TOK.pad_id)
    longest = max(len(e[0]) for e in examples)
    assert x.shape == y.shape == (3, longest)
    for row, (inputs, targets) in enumerate(examples):
        assert x[row, :len(inputs)].tolist() == inputs and y[row, :len(targets)].tolist() == targets
        assert (x[row, len(inputs):] == TOK.pad_id).all()
        assert (y[row, len(targets):] == IGNORE).all()
    with pytest.raises(ValueError, match="at least one"):
        sft_batch([], TOK.pad_id)


def test_padding_does_not_change_the_loss_of_a_record():
    model = tiny_model().eval()
    short, long = records(2, families=["add", "list_to_csv"])[:2]
    alone = sft_loss(model, TOK, [short])
    x, y = sft_batch([sft_tokens(short, TOK), sft_tokens(long, TOK)], TOK.pad_id)
    with torch.no_grad():
        _, padded = model(x[:1], y[:1])          # row 0 padded to the longer row's length
    assert padded.item() == pytest.approx(alone, rel=1e-5)


def test_a_few_steps_lower_the_response_loss():
    model, data = tiny_model(), records(32)
    before = sft_loss(model, TOK, data)
    log = finetune(model, TOK, data, steps=15, lr=1e-2, batch_size=8, warmup=2)
    assert [r["step"] for r in log] == list(range(1, 16))
    assert sft_loss(model, TOK, data) < before - 1.0


def test_finetune_trains_only_what_peft_left_trainable():
    model = P.apply(tiny_model(), "lora", r=4, alpha=32, targets=["wq", "wv", "w2"])
    data = records(16)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    before = sft_loss(model, TOK, data)
    finetune(model, TOK, data, steps=5, lr=3e-2, batch_size=8, warmup=1)
    assert sft_loss(model, TOK, data) < before
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())        # base untouched
    assert any(after[k].abs().sum() > 0 for k in after if "lora_B" in k)    # B has moved


def test_greedy_score_agrees_with_generated_answers():
    model = tiny_model()
    data = records(6, seed=3, families=["add"])
    finetune(model, TOK, data, steps=60, lr=1e-2, batch_size=6, warmup=5)   # memorise
    answers = generate_answers(model, TOK, data, max_new_tokens=8)
    assert len(answers) == len(data) and all(isinstance(a, str) for a in answers)
    by_generation, by_forward = score(answers, data), greedy_score(model, TOK, data)
    assert by_forward["exact_match"] > 0                                    # some are right
    assert by_forward.pop("loss") == pytest.approx(sft_loss(model, TOK, data), rel=1e-5)
    assert by_forward == by_generation


def test_clear_errors():
    model = tiny_model(max_seq_len=64)
    data = records(2)
    with pytest.raises(ValueError, match="max_seq_len"):
        finetune(model, TOK, data, steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate_answers(model, TOK, data)
    with pytest.raises(ValueError, match="at least one record"):
        finetune(tiny_model(), TOK, [], steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="log_every must be a positive integer"):
        finetune(tiny_model(), TOK, data, steps=1, lr=1e-3, log_every=0)
    for measure in (sft_loss, greedy_score):
        with pytest.raises(ValueError, match="at least one record"):
            measure(model, TOK, [])
    frozen = tiny_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        finetune(frozen, TOK, data, steps=1, lr=1e-3)


def test_the_sft_loss_is_the_mean_over_response_tokens_only():
    model = tiny_model().eval()
    record = records(1)[0]
    inputs, targets = sft_tokens(record, TOK)
    prompt_len = len(TOK.encode(format_prompt(record), bos=True))
    x = torch.tensor([inputs])
    with torch.no_grad():
        logits, loss = model(x, torch.tensor([targets]))
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    full = inputs + [targets[-1]]
    # response token t (t >= prompt_len, EOS included) is predicted at position t - 1
    response = range(prompt_len, len(full))
    direct = -sum(logp[t - 1, full[t]].item() for t in response) / len(response)
    assert loss.item() == pytest.approx(direct, rel=1e-5)
    # the control: with the prompt's next tokens as targets too, the loss would differ
    with torch.no_grad():
        _, unmasked = model(x, torch.tensor([full[1:]]))
    assert abs(unmasked.item() - loss.item()) > 1e-3


def test_finetune_takes_an_optimizer_factory_and_still_schedules_its_lr():
    data = records(16)
    default = P.apply(tiny_model(), "lora", r=4, alpha=8, targets=["wq", "wv"])
    finetune(default, TOK, data, steps=4, lr=1e-2, batch_size=4, warmup=2)
    made = []

    def adamw(params):                         # what make_optimizer builds, with no decay
        made.append((params, torch.optim.AdamW(params, lr=123.0, betas=(0.9, 0.95),
                                                  weight_decay=0.0)))
        return made[-1][1]

    custom = P.apply(tiny_model(), "lora", r=4, alpha=8, targets=["wq", "wv"])
    finetune(custom, TOK, data, steps=4, lr=1e-2, batch_size=4, warmup=2, optimizer=adamw)
    params, optimizer = made[0]
    assert len(made) == 1 and params == [p for p in custom.parameters() if p.requires_grad]
    assert len(params) == 8 and all("lora" in n for n, p in custom.named_parameters()
                                    if p.requires_grad)
    # the schedule overrides the factory's lr=123: the last step ran at lr_at(3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        lr_at(3, TrainConfig(steps=4, lr=1e-2, warmup=2)))
    assert optimizer.state[params[0]]["step"].item() == 4
    for a, b in zip(default.state_dict().values(), custom.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)   # same AdamW, same run

    sgd = P.apply(tiny_model(), "lora", r=4, alpha=8, targets=["wq", "wv"])
    finetune(sgd, TOK, data, steps=4, lr=1e-2, batch_size=4, warmup=2,
             optimizer=lambda ps: torch.optim.SGD(ps, lr=0.0))
    b_sgd = sgd.layers[0].attention.wq.lora_B.detach()
    assert b_sgd.abs().max() > 0                                # SGD moved B off zero ...
    assert not torch.allclose(b_sgd, default.layers[0].attention.wq.lora_B.detach())  # not AdamW
    with pytest.raises(TypeError, match="torch optimiser"):
        finetune(tiny_model(), TOK, data, steps=1, lr=1e-3, optimizer=lambda ps: ps)
