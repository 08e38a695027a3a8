"""The GPU side of the trainers (``minillama/devices.py``): precision, TF32, fused and paged
AdamW, pinned batches, torch.compile. The decisions are tested everywhere; what they do on
CUDA runs with ``pytest --device cuda`` (tests that need CUDA skip without it and say so)."""

import warnings
from types import SimpleNamespace

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama import devices as D
from minillama import peft as P
from minillama.data.instructions import instruction_data
from minillama.dpo import dpo_train
from minillama.finetune import finetune
from minillama.tokenizer import ByteTokenizer
from minillama.train import TrainConfig, make_optimizer, train

MODEL = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                    multiple_of=16, max_seq_len=32)
PATTERN = torch.arange(64).repeat(50)          # learnable: the loss falls by ~1 in 8 steps
TOK = ByteTokenizer()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA: checks what the CUDA path does")
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(vocab=64, seed=0):
    torch.manual_seed(seed)
    return Llama(MODEL.replace(vocab_size=vocab, max_seq_len=256 if vocab != 64 else 32))


def tcfg(**kw):
    return TrainConfig(**{**dict(steps=8, batch_size=4, seq_len=16, lr=1e-2, warmup=2,
                                 log_every=1, eval_every=1000, progress=False), **kw})


def records(n):
    return instruction_data(n, seed=0, families=["add", "multiply"])


def output_dtypes(model, seen):
    """Record the dtype of the head's output at every forward."""
    return model.output.register_forward_hook(lambda m, i, o: seen.append(o.dtype))


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 32])
def test_a_bad_precision_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match=r"TrainConfig.precision must be one of auto, fp32, "
                                         r"bf16, got"):
        TrainConfig(precision=bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        finetune(tiny(TOK.vocab_size), TOK, records(2), 1, 1e-3, precision=bad)
    with pytest.raises(ValueError, match="TrainConfig.compile must be True or False"):
        TrainConfig(compile="yes")


def test_what_each_precision_means_on_each_device(device):
    assert TrainConfig().precision == "auto"
    assert D.resolve_precision("auto", "cpu") == "fp32"           # CPU: fp32 unless asked
    assert D.resolve_precision("bf16", "cpu") == "bf16"
    assert D.resolve_precision("fp32", device) == "fp32"
    gpu_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported(False)
    assert D.resolve_precision("auto", device) == ("bf16" if gpu_bf16 else "fp32")
    with D.autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with D.autocast("cpu", "auto"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocast_trains_close_to_fp32(device):
    """Same seed, same batches, 8 steps: bf16 rounds matmul inputs to 2^-9 relative, so the
    losses may differ by a few 1e-3 (measured on the CPU: 1.5e-3); we allow 0.02, 0.5% of a
    loss of ~4 and 1/50 of what 8 steps learn. Weights, gradients and AdamW stay fp32."""
    logs, seen = {}, []
    for precision in ("fp32", "bf16"):
        model = tiny()
        hook = output_dtypes(model, seen) if precision == "bf16" else None
        logs[precision] = [r["loss"] for r in train(model, PATTERN, tcfg(precision=precision),
                                                    device=device)]
        if hook:
            hook.remove()
    assert seen and set(seen) == {torch.bfloat16}             # the forward ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    gap = max(abs(a - b) for a, b in zip(logs["fp32"], logs["bf16"]))
    assert gap < 0.02, (gap, logs)
    assert logs["bf16"][0] - logs["bf16"][-1] > 0.5            # and it learns


def test_fit_gives_finetune_and_dpo_the_same_autocast():
    seen = []
    model = tiny(TOK.vocab_size)
    output_dtypes(model, seen)
    log = finetune(model, TOK, records(8), steps=2, lr=1e-3, batch_size=4, warmup=1,
                   precision="bf16")
    assert set(seen) == {torch.bfloat16} and all(r["loss"] > 0 for r in log)
    seen.clear()
    pairs = [{"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a)} for a in range(4)]
    dpo_train(model, TOK, pairs, steps=2, lr=1e-3, batch_size=2, precision="bf16")
    assert seen and set(seen) == {torch.bfloat16}             # reference and policy passes
    seen.clear()
    finetune(model, TOK, records(4), steps=1, lr=1e-3, batch_size=4, warmup=1)
    assert set(seen) == {torch.float32}                        # auto on the CPU: fp32


def test_qlora_trains_under_bf16_autocast():
    """The 4-bit layers' own autograd function works under autocast (they hand back their
    input's dtype, fp32 here); the head computes in bf16; the LoRA matrices stay fp32."""
    model = P.apply(tiny(TOK.vocab_size), "qlora", r=4, targets=("wq", "wv"))
    seen = []
    output_dtypes(model, seen)
    log = finetune(model, TOK, records(8), steps=3, lr=3e-3, batch_size=4, warmup=1,
                   precision="bf16")
    assert set(seen) == {torch.bfloat16} and all(r["loss"] > 0 for r in log)
    lora = [p for p in model.parameters() if p.requires_grad]
    assert lora and all(p.dtype == torch.float32 for p in lora)


# ----------------------------------------------------------------------------- TF32
def test_tf32_only_on_cuda_and_restored_after(device):
    before = torch.get_float32_matmul_precision()
    assert not D.uses_tf32("cpu") and not D.uses_tf32("cuda", "fp32")
    assert D.uses_tf32("cuda") and D.uses_tf32("cuda:1", "bf16")
    with D.tf32("cuda", "auto"):                               # a flag: settable without a GPU
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before
    during = []
    model = tiny()
    model.output.register_forward_hook(
        lambda *a: during.append(torch.get_float32_matmul_precision()))
    train(model, PATTERN, tcfg(steps=2), device=device)
    assert set(during) == {"high" if device.startswith("cuda") else before}
    assert torch.get_float32_matmul_precision() == before


# ----------------------------------------------------------------------------- AdamW
def test_adamw_kind_fused_only_on_cuda_paged_only_when_asked(monkeypatch):
    cuda, cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    monkeypatch.setattr(D, "bitsandbytes_cuda", lambda: True)
    assert D.adamw_kind([cuda, cuda]) == "fused"
    assert D.adamw_kind([{"params": [cuda]}, {"params": []}]) == "fused"
    assert D.adamw_kind([cuda, cpu]) == "plain" and D.adamw_kind([cpu]) == "plain"
    assert D.adamw_kind([cuda], paged=True) == "paged"
    assert D.adamw_kind([cpu], paged=True) == "plain"        # the CPU decision: no paging
    monkeypatch.setattr(D, "bitsandbytes_cuda", lambda: False)
    assert D.adamw_kind([cuda], paged=True) == "fused"       # no bitsandbytes CUDA library
    with pytest.raises(ValueError, match="AdamW kind must be one of"):
        D.build_adamw("lion", [cpu], 1e-3)


def test_make_optimizer_fuses_exactly_on_cuda(device):
    model = tiny().to(device)
    cuda = device.startswith("cuda")
    opt = make_optimizer(model, tcfg())
    assert type(opt) is torch.optim.AdamW
    assert [bool(g["fused"]) for g in opt.param_groups] == [cuda, cuda]
    paged = make_optimizer(model, tcfg(), paged=True)            # paged: CUDA only
    wanted = "PagedAdamW" if cuda and D.bitsandbytes_cuda() else "AdamW"
    assert type(paged).__name__ == wanted


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_paged_adamw_built_from_our_groups_steps_like_adamw():
    """bitsandbytes' PagedAdamW on the CPU (unpaged there) against torch's AdamW: the same
    groups, betas and decay give the same weights (both fp32 AdamW; measured: equal)."""
    pytest.importorskip("bitsandbytes")
    a, b = tiny(), tiny()
    cfg = tcfg(weight_decay=0.1)
    paged = D.build_adamw("paged", make_optimizer(a, cfg).param_groups, cfg.lr, cfg.betas)
    plain = make_optimizer(b, cfg)
    assert type(paged).__name__ == "PagedAdamW"
    assert [g["weight_decay"] for g in paged.param_groups] == [0.1, 0.0]
    x, y = PATTERN[:16].view(1, -1), PATTERN[1:17].view(1, -1)
    for _ in range(3):
        for model, opt in ((a, paged), (b, plain)):
            model(x, y)[1].backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_the_benchmark_pages_qlora_only(monkeypatch):
    from minillama.tasks import bench
    asked = []
    monkeypatch.setattr(bench, "fresh", lambda m, seed, device: (None, TOK))
    monkeypatch.setattr(bench, "finetune", lambda *a, **kw: asked.append(kw["paged"]))
    for name in ("qlora", "lora-qv", "full"):
        bench.run(bench.METHODS[name], steps=1)
    assert asked == [True, False, False]


def test_linear4bit_auto_takes_bitsandbytes_kernels_only_for_cuda_inputs(monkeypatch):
    """The decision, with a stand-in CUDA input; what it does on a GPU: the test below."""
    from minillama.quant import linear4bit as L
    layer, on_cuda = L.Linear4bit(torch.randn(8, 64)), SimpleNamespace(device=torch.device("cuda"))
    monkeypatch.setattr(L, "bitsandbytes_cuda", lambda: True)
    assert layer.backend == "auto" and layer.uses_bitsandbytes(on_cuda)
    assert not layer.uses_bitsandbytes(torch.zeros(1, 64))           # CPU input: ours
    assert not L.Linear4bit(torch.randn(8, 64), backend="torch").uses_bitsandbytes(on_cuda)
    monkeypatch.setattr(L, "bitsandbytes_cuda", lambda: False)
    assert not layer.uses_bitsandbytes(on_cuda)                      # no CUDA library: ours
    model = P.apply(tiny(TOK.vocab_size), "qlora", r=4, targets=("wq", "wv"))
    assert {m.backend for m in model.modules() if isinstance(m, L.Linear4bit)} == {"auto"}


@needs_cuda
def test_qlora_on_cuda_uses_bitsandbytes_kernels_and_paged_adamw():
    assert D.bitsandbytes_cuda(), "bitsandbytes has no CUDA library on this GPU machine"
    model = P.apply(tiny(TOK.vocab_size), "qlora", r=4, targets=("wq", "wv")).to("cuda")
    wq = model.layers[0].attention.wq.base
    assert wq.backend == "auto" and wq.uses_bitsandbytes(torch.empty(0, device="cuda"))
    opt = make_optimizer(model, tcfg(), paged=True)
    assert type(opt).__name__ == "PagedAdamW"
    log = finetune(model, TOK, records(16), steps=4, lr=3e-3, batch_size=4,
                   device="cuda", paged=True)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


# ----------------------------------------------------------------------------- batches
def test_batches_are_pinned_only_for_cuda(monkeypatch, device):
    calls = []
    real = torch.Tensor.pin_memory

    def spy(self, *a, **kw):
        calls.append(self.shape)
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    assert D.pins("cuda") and D.pins("cuda:0") and not D.pins("cpu")
    x = torch.arange(6).view(2, 3)
    (moved,) = D.to_device(device, x)
    assert torch.equal(moved.cpu(), x) and moved.device.type == torch.device(device).type
    train(tiny(), PATTERN, tcfg(steps=1, warmup=1, grad_accum=2), device=device)
    if device.startswith("cuda"):
        assert calls and calls[0] == (2, 3)                     # to_device, then the loop's
    else:
        assert calls == [] and moved is x                       # the CPU: nothing to move


# ----------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_compile_trains_like_eager(monkeypatch, device):
    """torch.compile (inductor) on 3 steps: ~20 s of compiling on a CPU. Fused kernels round
    differently (~1e-7), which Adam lifts to ~1e-5 in the weights; losses within 1e-4 (fp32)."""
    compiled = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(m) or real(m, **kw))
    eager = [r["loss"] for r in train(tiny(), PATTERN, tcfg(steps=3, precision="fp32"),
                                      device=device)]
    assert compiled == []
    with warnings.catch_warnings():           # RoPE's complex multiply stays eager: fine
        warnings.filterwarnings("ignore", "Torchinductor does not support code generation")
        fast = [r["loss"] for r in train(tiny(), PATTERN,
                                         tcfg(steps=3, precision="fp32", compile=True),
                                         device=device)]
    assert len(compiled) == 1
    assert max(abs(a - b) for a, b in zip(eager, fast)) < 1e-4, (eager, fast)
