"""Logits parity with transformers' LlamaForCausalLM through our HF export and import.

Both directions, on tiny random models whose every weight (norm gains included) is
random and large enough that attention depends strongly on position, so a wrong q/k
permutation or RoPE setting cannot hide.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import minillama
from minillama import LlamaConfig, RopeScaling
from minillama.checkpoints.hf import hf_to_meta_permute, meta_to_hf_permute
from minillama.rope import apply_rotary_emb, precompute_freqs_cis

transformers = pytest.importorskip("transformers")

SEQ = 40
SCALING = RopeScaling(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_seq_len=16)           # small, so positions 16..39 feel it
CASES = {  # name: (n_kv_heads, tied, llama3 rope scaling)
    "mha-untied": (4, False, False),
    "gqa-tied": (2, True, False),
    "mqa-untied": (1, False, False),
    "mqa-tied": (1, True, False),
    "llama3-gqa-untied": (2, False, True),
    "llama3-mha-tied": (4, True, True),
}


def our_config(kv, tied, llama3, **kw):
    rope = dict(rope_scaling=SCALING, rope_theta=500000.0) if llama3 else {}
    return LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=kv, vocab_size=128,
                       multiple_of=32, max_seq_len=64, tie_embeddings=tied, **rope, **kw)


def hf_config(kv, tied, llama3):
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if llama3:
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16}
    return transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=64,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, rope_parameters=rope)


@torch.no_grad()
def randomise(model, seed=0):
    """Every weight random, norm gains around 1: nothing trivially symmetric.

    q and k get std 0.2, so attention is sharp and depends on position; the rest get
    0.1, which keeps logits O(1) so float32 rounding stays well under the tolerance.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        sharp = any(s in name for s in ("wq", "wk", "q_proj", "k_proj"))
        p.copy_(1 + 0.2 * noise if "norm" in name else (0.2 if sharp else 0.1) * noise)
    return model.eval()


def tokens(seed=1):
    return torch.randint(0, 128, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def hf_load(path):
    return transformers.LlamaForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


def max_diff(ours, hf, x, device="cpu"):
    """Largest logit difference, both models and the tokens on ``device`` (--device)."""
    ours, hf, x = ours.to(device), hf.to(device), x.to(device)
    with torch.no_grad():
        return (ours(x) - hf(x).logits).abs().max().item()


@pytest.mark.parametrize("case", CASES)
def test_our_export_matches_transformers(case, tmp_path, device):
    kv, tied, llama3 = CASES[case]
    model = randomise(minillama.Llama(our_config(kv, tied, llama3)))
    minillama.save(model, tmp_path / "hf", format="hf")
    hf = hf_load(tmp_path / "hf")
    assert hf.config.tie_word_embeddings == tied
    assert max_diff(model, hf, tokens(), device) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_transformers_model_loads_into_ours(case, tmp_path, device):
    kv, tied, llama3 = CASES[case]
    hf = randomise(transformers.LlamaForCausalLM(hf_config(kv, tied, llama3)))
    hf.save_pretrained(tmp_path)
    model = minillama.load(tmp_path)
    c = model.cfg
    assert (c.n_kv_heads, c.tie_embeddings, c.ffn_dim) == (kv, tied, 96)
    assert c.rope_scaling == (SCALING if llama3 else None)
    assert not model.training and model.output.weight.dtype == torch.float32
    assert max_diff(model, hf, tokens(), device) <= 1e-5


def test_llama3_scaling_changes_the_logits_at_these_lengths():
    """Guards the llama3 cases above: with this setup the scaling is not a no-op."""
    model = randomise(minillama.Llama(our_config(2, False, True)))
    plain = minillama.Llama(model.cfg.replace(rope_scaling=None))
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (model(tokens()) - plain.eval()(tokens())).abs().max() > 1e-2


def test_permutations_are_inverse_and_preserve_attention_scores():
    h, hd, d_in, t = 4, 16, 64, 10
    w, x = torch.randn(h * hd, d_in), torch.randn(1, t, d_in)
    w_hf = meta_to_hf_permute(w, h)
    assert torch.equal(hf_to_meta_permute(w_hf, h), w)
    assert not torch.equal(w_hf, w)
    # head 0, rows 0..15: Meta pairs (0,1) (2,3)...; HF pairs (0,8) (1,9)...
    assert torch.equal(w_hf[:8], w[0:16:2]) and torch.equal(w_hf[8:16], w[1:16:2])
    freqs = precompute_freqs_cis(hd, t)

    def heads(weight, layout):
        q = (x @ weight.T).view(1, t, h, hd).transpose(1, 2)
        return apply_rotary_emb(q, freqs, layout)

    scores = lambda q: q @ q.transpose(-1, -2)
    assert torch.allclose(scores(heads(w, "interleaved")), scores(heads(w_hf, "half")),
                          atol=1e-4)


def test_half_layout_model_is_written_and_read_without_permutation(tmp_path):
    model = randomise(minillama.Llama(our_config(2, False, False, rope_layout="half")))
    minillama.save(model, tmp_path / "hf", format="hf")
    raw = load_file(tmp_path / "hf" / "model.safetensors")
    assert torch.equal(raw["model.layers.0.self_attn.q_proj.weight"],
                       model.layers[0].attention.wq.weight)
    assert torch.equal(raw["model.layers.1.self_attn.k_proj.weight"],
                       model.layers[1].attention.wk.weight)
    assert max_diff(model, hf_load(tmp_path / "hf"), tokens()) <= 1e-5
    same = minillama.load(tmp_path / "hf", rope_layout="half")
    assert same.cfg.rope_layout == "half"
    for k, v in model.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    meta_layout = minillama.load(tmp_path / "hf")           # default: permuted to interleaved
    assert meta_layout.cfg.rope_layout == "interleaved"
    with torch.no_grad():
        assert (meta_layout(tokens()) - model(tokens())).abs().max() <= 1e-5


def test_without_the_permutation_the_logits_differ(tmp_path):
    """Control: HF rows used with interleaved pairs give a different model."""
    model = randomise(minillama.Llama(our_config(2, False, False)))
    minillama.save(model, tmp_path, format="hf")
    hf_rows = minillama.load(tmp_path, rope_layout="half")
    wrong = minillama.Llama(model.cfg)                          # interleaved
    wrong.load_state_dict(hf_rows.state_dict())
    with torch.no_grad():
        assert (wrong.eval()(tokens()) - model(tokens())).abs().max() > 1e-2


def test_exported_config_has_both_rope_generations(tmp_path):
    model = minillama.Llama(our_config(2, True, True))
    minillama.save(model, tmp_path, format="hf")
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["model_type"] == "llama" and d["architectures"] == ["LlamaForCausalLM"]
    assert (d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"]) == (64, 192, 2)
    assert (d["num_attention_heads"], d["num_key_value_heads"], d["vocab_size"]) == (4, 2, 128)
    assert d["tie_word_embeddings"] is True and d["torch_dtype"] == "float32"
    assert d["rope_theta"] == 500000.0 and d["rope_scaling"]["rope_type"] == "llama3"
    assert d["rope_parameters"] == {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 16}
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")


@pytest.mark.parametrize("style", ["rope_type", "type"])
def test_transformers4_style_config_is_read(style, tmp_path):
    model = randomise(minillama.Llama(our_config(2, False, True)))
    minillama.save(model, tmp_path, format="hf")
    d = json.loads((tmp_path / "config.json").read_text())
    del d["rope_parameters"], d["dtype"]
    d["rope_scaling"][style] = d["rope_scaling"].pop("rope_type")
    (tmp_path / "config.json").write_text(json.dumps(d))
    back = minillama.load(tmp_path)
    assert back.cfg.rope_scaling == SCALING
    assert back.cfg.rope_theta == 500000.0
    with torch.no_grad():
        assert (back(tokens()) - model(tokens())).abs().max() <= 1e-5


def test_sharded_safetensors_and_pytorch_bin(tmp_path, device):
    hf = randomise(transformers.LlamaForCausalLM(hf_config(2, False, False)))
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert max_diff(minillama.load(tmp_path / "sharded"), hf, tokens(), device) <= 1e-5
    (tmp_path / "bin").mkdir()
    hf.config.save_pretrained(tmp_path / "bin")
    torch.save(hf.cpu().state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert max_diff(minillama.load(tmp_path / "bin"), hf, tokens(), device) <= 1e-5


def test_missing_lm_head_falls_back_to_tied(tmp_path, device):
    hf = randomise(transformers.LlamaForCausalLM(hf_config(2, True, False)))
    hf.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    d["tie_word_embeddings"] = False                   # config says untied, file has no head
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    model = minillama.load(tmp_path)
    assert model.cfg.tie_embeddings and model.output.weight is model.tok_embeddings.weight
    assert max_diff(model, hf, tokens(), device) <= 1e-5


def test_hf_shape_errors_use_transformers_names(tmp_path):
    model = minillama.Llama(our_config(2, False, False))
    minillama.save(model, tmp_path, format="hf")
    raw = load_file(tmp_path / "model.safetensors")
    del raw["model.layers.1.mlp.up_proj.weight"]
    raw["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 64)
    save_file(raw, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as e:
        minillama.load(tmp_path)
    msg = str(e.value)
    assert "missing: ['model.layers.1.mlp.up_proj.weight']" in msg
    assert "model.layers.0.self_attn.k_proj.weight (got (3, 64), expected (32, 64))" in msg
