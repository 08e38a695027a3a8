"""Linear4bit and QLoRA: a 4-bit frozen base, LoRA on top, merge back to full precision."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillama import CONFIGS, Llama, LlamaConfig
from minillama import peft as P
from minillama.peft.lora import LoRALinear
from minillama.quant import Linear4bit, dequantize_model, quantize_model, storage_bits
from minillama.quant import nf4 as N

SEVEN = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def small_model(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=128,
                      multiple_of=32, max_seq_len=64)
    model = Llama(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tokens(seed=1, batch=2, n=12):
    return torch.randint(0, 128, (batch, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def randomise_lora(model, seed=2):
    """Non-zero A and B everywhere, as after some training."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------- Linear4bit
def test_linear4bit_forward_is_linear_with_dequantised_weight_and_grads_reach_the_input(device):
    torch.manual_seed(0)
    linear = nn.Linear(192, 96, bias=True).to(device)
    q = Linear4bit.from_linear(linear, backend="torch")   # ours on any device; bnb's: below
    w = N.dequantize(q.packed, q.state)
    assert w.shape == (96, 192)
    assert (w - linear.weight).abs().max() < 0.2 * linear.weight.abs().max()
    x = torch.randn(3, 5, 192).to(device).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, ref = q(x), F.linear(x_ref, w, linear.bias.detach())
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    assert not any(p.requires_grad for p in q.parameters())
    assert {"packed", "absmax", "nested_absmax", "offset"} <= set(q.state_dict())


def test_backward_keeps_no_full_precision_weight():
    """The 4-bit layer saves only its input for backward; W is dequantised again there."""
    q = Linear4bit.from_linear(nn.Linear(256, 128, bias=False))
    saved = []
    x = torch.randn(4, 256, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t,
                                                  lambda t: t):
        y = q(x)
    assert (128, 256) not in saved and (256, 128) not in saved
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_bits_per_parameter():
    linear = nn.Linear(256, 128, bias=False)
    assert Linear4bit.from_linear(linear, double_quant=False).bits_per_parameter() == 4.5
    bits = Linear4bit.from_linear(linear).bits_per_parameter()
    assert bits == pytest.approx(4 + 8 / 64 + (32 * 2 + 32) / (256 * 128))


def test_dtype_casts_keep_the_fp32_scales(device):
    q = Linear4bit.from_linear(nn.Linear(64, 64, bias=False).to(device), double_quant=True)
    scales = q.state.scales().clone()
    q = q.to(torch.bfloat16)
    assert q.nested_absmax.dtype == torch.float32 and q.offset.dtype == torch.float32
    assert torch.equal(q.state.scales(), scales) and q.compute_dtype == torch.bfloat16
    x = torch.randn(2, 64, dtype=torch.bfloat16, device=device)
    assert q(x).dtype == torch.bfloat16


def test_bitsandbytes_backend_agrees_with_ours_on_cpu():
    # CPU reference by design; its last lines check the CUDA path whenever CUDA is present
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(1)
    linear = nn.Linear(128, 64, bias=True)
    for double_quant in (False, True):
        ours = Linear4bit.from_linear(linear, double_quant=double_quant, backend="torch")
        bnb_path = Linear4bit.from_linear(linear, double_quant=double_quant,
                                          backend="bitsandbytes")
        x = torch.randn(5, 128)
        with torch.no_grad():
            assert torch.allclose(ours(x), bnb_path(x), atol=1e-5)
    if torch.cuda.is_available():                     # the path QLoRA takes on a GPU
        gpu = Linear4bit.from_linear(linear).cuda()
        with torch.no_grad():
            assert torch.allclose(gpu(x.cuda()).cpu(), ours(x), atol=1e-4)


def test_matches_bitsandbytes_linear4bit_on_cpu(device):
    if device != "cpu":      # scripts/gpu_nf4_check.py does this comparison on CUDA
        pytest.skip("CPU-only reference: bitsandbytes' generic CPU Linear4bit path")
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(2)
    linear = nn.Linear(128, 64, bias=False)
    theirs = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32,
                               compress_statistics=True, quant_type="nf4")
    theirs.support_avx512bf16_for_cpu = False           # keep bnb's generic CPU path
    theirs.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False,
                                      compress_statistics=True, quant_type="nf4")
    theirs = theirs.to("cpu")                           # bitsandbytes quantises here
    ours = Linear4bit.from_linear(linear)
    assert torch.equal(theirs.weight.data.reshape(-1), ours.packed)
    assert torch.equal(theirs.weight.quant_state.absmax, ours.absmax)
    assert torch.equal(theirs.weight.quant_state.state2.absmax, ours.nested_absmax)
    x = torch.randn(7, 128)
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x), atol=1e-5)


def test_linear4bit_bad_inputs():
    with pytest.raises(ValueError, match="2-D weight"):
        Linear4bit(torch.randn(4, 4, 4))
    with pytest.raises(TypeError, match="nn.Linear"):
        Linear4bit.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="backend='cuda'"):
        Linear4bit.from_linear(nn.Linear(64, 64), backend="cuda")
    with pytest.raises(ValueError, match="blocksize=100"):
        Linear4bit.from_linear(nn.Linear(64, 64), blocksize=100)


# ----------------------------------------------------------------------------- whole models
def test_quantize_model_swaps_only_the_block_linears():
    model = small_model()
    ref_logits = model(tokens())
    quantize_model(model)
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(Linear4bit) == 7 * 3 and type(model.output) is nn.Linear
    report = storage_bits(model)
    assert report["quantized_parameters"] == sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, Linear4bit))
    assert 4.12 < report["bits_per_parameter"] < 4.2
    out = model(tokens())
    assert 0 < (out - ref_logits).abs().max() < 0.5 * ref_logits.abs().max()
    dequantize_model(model)
    assert not any(isinstance(m, Linear4bit) for m in model.modules())
    assert torch.equal(model(tokens()), out)          # same weights, now plain nn.Linear


# ----------------------------------------------------------------------------- QLoRA
def test_qlora_counts_equal_lora_counts():
    with torch.device("meta"):
        qlora = P.apply(Llama(CONFIGS["llama1-7b"]), "qlora")
        lora = P.apply(Llama(CONFIGS["llama1-7b"]), "lora", r=64, targets=SEVEN)
    assert P.trainable_parameters(qlora) == P.trainable_parameters(lora) == 159_907_840
    small_q = P.apply(small_model(), "qlora", r=4)
    small_l = P.apply(small_model(), "lora", r=4, targets=SEVEN)
    assert P.trainable_parameters(small_q) == P.trainable_parameters(small_l) == 3 * 4 * (
        4 * 64 + 2 * 32 + 2 * 64 + 3 * (64 + 192))


def test_qlora_forward_equals_lora_on_the_dequantised_weights(device):
    qlora = P.apply(small_model().to(device), "qlora", r=4, alpha=8, dropout=0.0)
    randomise_lora(qlora)
    lora = small_model()
    with torch.no_grad():                             # the same base, rounded to NF4 in place
        for layer in lora.layers:
            for part in (layer.attention, layer.feed_forward):
                for name in SEVEN:
                    if hasattr(part, name):
                        w = getattr(part, name).weight
                        w.copy_(N.dequantize(*N.quantize(w)))
    P.apply(lora, "lora", r=4, alpha=8, targets=SEVEN)
    lora.load_state_dict({k: v for k, v in qlora.state_dict().items() if "lora_" in k},
                         strict=False)
    lora = lora.to(device)
    x = tokens().to(device)
    with torch.no_grad():
        assert torch.allclose(qlora(x), lora(x), atol=1e-5)


def test_short_qlora_run_lowers_the_loss(one_thread, device):
    model = P.apply(small_model().to(device), "qlora", r=8, alpha=16, dropout=0.0).train()
    packed = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("packed")}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    x = tokens(seed=5, batch=4, n=32).to(device)
    losses = []
    for _ in range(30):
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in packed.items())


def test_merge_gives_a_plain_full_precision_model_with_the_same_logits(device):
    model = P.apply(small_model().to(device), "qlora", r=4, alpha=8).eval()  # eval: no dropout
    randomise_lora(model)
    x = tokens().to(device)
    with torch.no_grad():
        before = model(x)
        P.merge(model)
        after = model(x)
    assert not any(isinstance(m, (Linear4bit, LoRALinear)) for m in model.modules())
    assert type(model.layers[0].attention.wq) is nn.Linear
    # x (W + s B A) and x W + s (x B) A round differently in float32, and the kernels'
    # summation order differs between CPUs (1.2e-5 on logits up to 2.8 on an AVX-512
    # machine): the bound is 1e-5 relative to the largest logit.
    assert (after - before).abs().max() <= 1e-5 * before.abs().max().clamp(min=1)
    assert model.layers[0].feed_forward.w2.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="qlora merges one way"):
        P.unmerge(model)
    with pytest.raises(ValueError, match="merged"):
        P.disabled(model)


def test_disabled_qlora_is_the_quantised_base(device):
    base = quantize_model(small_model().to(device))
    model = P.apply(small_model().to(device), "qlora", r=4).eval()
    randomise_lora(model)
    x = tokens().to(device)
    with torch.no_grad(), P.disabled(model):
        assert torch.equal(model(x), base(x))


def test_save_and_load_qlora_adapter(tmp_path, device):
    model = P.apply(small_model().to(device), "qlora", r=4, alpha=8, blocksize=128,
                    double_quant=False).eval()
    randomise_lora(model)
    P.save(model, tmp_path / "adapter")
    fresh = P.load(small_model().to(device), tmp_path / "adapter").eval()
    assert fresh.peft_config["options"]["blocksize"] == 128
    assert fresh.layers[1].attention.wq.base.nested_absmax is None
    x = tokens().to(device)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    P.save(model, tmp_path / "hf", format="peft")
    assert (tmp_path / "hf" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("options, message", [
    (dict(blocksize=48), "blocksize must be one of"),
    (dict(double_quant="yes"), "double_quant must be True or False"),
    (dict(r=0), "qlora: r must be a positive integer"),
    (dict(targets=["wq", "wx"]), r"qlora: unknown target\(s\) \['wx'\]"),
    (dict(bits=8), r"qlora: unknown option\(s\) bits"),
])
def test_qlora_bad_options(options, message):
    model = small_model()
    with pytest.raises(ValueError, match=message):
        P.apply(model, "qlora", **options)
    assert getattr(model, "peft_config", None) is None
    assert not any(isinstance(m, Linear4bit) for m in model.modules())


def test_lora_merge_refuses_a_quantised_base():
    model = P.apply(small_model(), "qlora", r=4)
    with pytest.raises(ValueError, match="cannot fold the update into a Linear4bit"):
        model.layers[0].attention.wq.merge()
