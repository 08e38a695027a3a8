"""DPO: the loss against its formula, the reference (LoRA off = base model), and a tiny run."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from minillama import Llama, LlamaConfig
from minillama import peft as P
from minillama.dpo import dpo_loss, dpo_train, pair_tokens, reference_logprobs
from minillama.finetune import sequence_logprobs
from minillama.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                             vocab_size=TOK.vocab_size, multiple_of=16, max_seq_len=64))


def toy_pairs():
    """Prompts "Q: a+b=\\nA: " with the right sum chosen and the sum + 1 rejected."""
    return [{"prompt": f"Q: {a}+{b}=\nA: ", "chosen": str(a + b), "rejected": str(a + b + 1)}
            for a in range(1, 5) for b in range(1, 5)]


def logprobs_of(model, pairs, which):
    ids = [pair_tokens(p, TOK) for p in pairs]
    col = {"chosen": 1, "rejected": 2}[which]
    with torch.no_grad():
        return sequence_logprobs(model.eval(), [t[0] for t in ids], [t[col] for t in ids],
                                 TOK.pad_id)


# ----------------------------------------------------------------------------- the loss
def test_dpo_loss_on_fixed_numbers():
    pi_w, pi_l = torch.tensor([-3.0, -5.0]), torch.tensor([-5.0, -4.0])
    ref_w, ref_l = torch.tensor([-4.0, -5.0]), torch.tensor([-4.0, -5.0])
    # beta = 0.5.  pair 1: rewards 0.5*(-3+4) = 0.5 and 0.5*(-5+4) = -0.5, margin 1
    #                      loss -log sigma(1) = log(1 + e^-1) = 0.3132617
    #              pair 2: rewards 0.5*(-5+5) = 0 and 0.5*(-4+5) = 0.5, margin -0.5
    #                      loss -log sigma(-0.5) = log(1 + e^0.5) = 0.9740770
    loss, stats = dpo_loss(pi_w, pi_l, ref_w, ref_l, beta=0.5)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.6436693, abs=1e-6)
    assert stats["chosen_reward"].tolist() == [0.5, 0.0]
    assert stats["rejected_reward"].tolist() == [-0.5, 0.5]
    assert stats["margin"].tolist() == [1.0, -0.5]
    assert stats["accuracy"].item() == 0.5
    # the NLL term: mean(-pi_w / |y_w|) = mean(3/2, 5/5) = 1.25, times 0.2 = 0.25 more
    loss2, stats2 = dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.5, nll_weight=0.2,
                             chosen_lengths=torch.tensor([2, 5]))
    assert stats2["nll"].item() == pytest.approx(1.25)
    assert loss2.item() == pytest.approx(expected + 0.25, abs=1e-6)
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.5, nll_weight=0.2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.0)


def test_at_the_reference_the_loss_is_log2_and_the_gradient_is_minus_beta_over_2():
    # policy = reference: m = 0, L = -log sigma(0) = log 2 for any beta, and
    # dL/dpi_w = -beta sigma(-beta m) / B = -beta / (2B), dL/dpi_l = +beta / (2B)
    beta, B = 0.3, 4
    values = torch.tensor([-7.0, -2.5, -11.0, -4.0])
    pi_w = values.clone().requires_grad_()
    pi_l = (values - 1.0).requires_grad_()
    loss, stats = dpo_loss(pi_w, pi_l, values.clone(), values - 1.0, beta)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert stats["accuracy"].item() == 0.0                    # a tie is not a win
    loss.backward()
    assert torch.allclose(pi_w.grad, torch.full((B,), -beta / (2 * B)))
    assert torch.allclose(pi_l.grad, torch.full((B,), beta / (2 * B)))
    # beta -> 0: every pair's loss tends to log 2, whatever the margins
    far, _ = dpo_loss(torch.tensor([0.0, -30.0]), torch.tensor([-40.0, 0.0]),
                      torch.zeros(2), torch.zeros(2), beta=1e-7)
    assert far.item() == pytest.approx(math.log(2), abs=1e-5)


def test_identical_chosen_and_rejected_give_a_zero_gradient():
    model = tiny_model().train()
    pair = {"prompt": "Q: 2+2=\nA: ", "chosen": "4", "rejected": "4"}
    p, w, lose = pair_tokens(pair, TOK)
    out = sequence_logprobs(model, [p, p], [w, lose], TOK.pad_id)
    loss, _ = dpo_loss(out[:1], out[1:], torch.tensor([-3.0]), torch.tensor([-3.0]), 0.1)
    loss.backward()
    # the bracket is (pi_w - ref) - (pi_l - ref) = 0 and its gradient grad pi_w - grad pi_l = 0
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    grads = torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])
    # zero up to float32 round-off: the two identical rows of the batch may be summed in
    # different orders by multithreaded kernels (seen: 1.5e-8 on 2 threads); a real
    # preference gradient at this beta is orders of magnitude larger (checked below)
    assert grads.abs().max().item() < 1e-6
    model.zero_grad()
    other = sequence_logprobs(model, [p, p], [w, pair_tokens({**pair, "rejected": "5"},
                                                             TOK)[2]], TOK.pad_id)
    loss, _ = dpo_loss(other[:1], other[1:], torch.tensor([-3.0]), torch.tensor([-3.0]), 0.1)
    loss.backward()
    real = torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])
    assert real.abs().max().item() > 1e-4


# ----------------------------------------------------------------------------- log-probs
def test_sequence_logprobs_sum_only_the_response_tokens():
    model = tiny_model().eval()
    prompts = [TOK.encode("Q: 1+1=\nA: ", bos=True), TOK.encode("Q: 10+10=\nA: ", bos=True)]
    responses = [TOK.encode("2") + [TOK.eos_id], TOK.encode("20") + [TOK.eos_id]]
    with torch.no_grad():
        batched = sequence_logprobs(model, prompts, responses, TOK.pad_id)
        for row, (p, r) in enumerate(zip(prompts, responses)):
            logp = F.log_softmax(model(torch.tensor([p + r]))[0].float(), dim=-1)
            direct = sum(logp[len(p) + j - 1, t].item() for j, t in enumerate(r))
            assert batched[row].item() == pytest.approx(direct, abs=1e-4)   # padding: no effect
    assert pair_tokens({"prompt": "x", "chosen": "ab", "rejected": "c"}, TOK)[1][-1] == TOK.eos_id
    with pytest.raises(ValueError, match="'rejected'"):
        pair_tokens({"prompt": "x", "chosen": "y"}, TOK)


def test_lora_disabled_is_the_base_model_and_is_the_dpo_reference():
    pairs = toy_pairs()[:6]
    base = tiny_model()
    lora = P.apply(copy.deepcopy(base), "lora", r=4, alpha=8, targets=["wq", "wv", "w2"])
    with torch.no_grad():
        for name, q in lora.named_parameters():
            if "lora_B" in name:
                q.normal_(0, 0.5)                                # as if trained
    want = logprobs_of(base, pairs, "chosen")
    assert (logprobs_of(lora, pairs, "chosen") - want).abs().max() > 1e-3
    with P.disabled(lora):
        assert torch.equal(logprobs_of(lora, pairs, "chosen"), want)
    assert (logprobs_of(lora, pairs, "chosen") - want).abs().max() > 1e-3   # back on
    ref = reference_logprobs(lora, TOK, pairs)
    assert torch.equal(ref[:, 0], want) and torch.equal(ref[:, 1],
                                                        logprobs_of(base, pairs, "rejected"))
    with pytest.raises(RuntimeError), P.disabled(lora):          # restored after an error too
        raise RuntimeError
    assert all(m.enabled for m in P.lora_modules(lora))
    P.merge(lora)
    with pytest.raises(ValueError, match="unmerge"), P.disabled(lora):
        pass
    with pytest.raises(ValueError, match="only lora"):
        P.disabled(P.apply(tiny_model(), "adapter_v1", prompt_len=2, layers=1))


# ----------------------------------------------------------------------------- training
def preference_accuracy(model, pairs):
    """Share of pairs where the model itself gives y_w more probability than y_l."""
    return (logprobs_of(model, pairs, "chosen") > logprobs_of(model, pairs, "rejected")).float()


def test_a_tiny_dpo_run_learns_the_preferences(one_thread):
    pairs = toy_pairs()
    model = tiny_model(seed=1)
    before = preference_accuracy(model, pairs).mean().item()
    log = dpo_train(model, TOK, pairs, steps=30, lr=1e-2, beta=0.5, batch_size=8, seed=0)
    assert [r["step"] for r in log] == list(range(1, 31))
    # step 1 sees policy = reference (the model before training): margin 0, loss log 2
    assert log[0]["margin"] == 0.0 and log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert log[-1]["accuracy"] == 1.0 and log[-1]["margin"] > 0.5 and log[-1]["loss"] < 0.5
    assert before <= 0.75 and preference_accuracy(model, pairs).mean().item() == 1.0
    assert not model.training


def test_dpo_with_lora_trains_only_the_adapter_against_the_base_model(one_thread):
    pairs = toy_pairs()
    model = P.apply(tiny_model(seed=1), "lora", r=4, alpha=16, targets=["wq", "wv", "w2"])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    log = dpo_train(model, TOK, pairs, steps=30, lr=2e-2, beta=0.5, batch_size=8)
    assert log[0]["margin"] == 0.0                         # B = 0: LoRA off == LoRA on at first
    assert log[-1]["accuracy"] == 1.0
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())


def test_the_nll_term_keeps_the_chosen_answers_likely(one_thread):
    pairs = toy_pairs()
    chosen = {}
    for weight in (0.0, 1.0):
        model = tiny_model(seed=1)
        log = dpo_train(model, TOK, pairs, steps=30, lr=1e-2, beta=0.5, batch_size=8,
                        nll_weight=weight)
        chosen[weight] = logprobs_of(model, pairs, "chosen").mean().item()
        assert ("nll" in log[-1]) == (weight > 0)
    assert chosen[1.0] > chosen[0.0] + 0.5


def test_other_peft_methods_use_the_model_before_training_as_the_reference(one_thread):
    model = P.apply(tiny_model(seed=1), "adapter_v1", prompt_len=2, layers=1, gate="scalar")
    with torch.no_grad():
        for q in model.parameters():
            if q.requires_grad:
                q.normal_(0, 0.3)                 # an adapter that already changes the model
    log = dpo_train(model, TOK, toy_pairs(), steps=3, lr=1e-2, beta=0.5, batch_size=8)
    assert log[0]["margin"] == 0.0 and log[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
