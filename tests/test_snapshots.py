"""Published snapshot layouts of every Llama generation, loaded and checked against transformers.

Each case writes a small random model with transformers' own ``save_pretrained`` (sharded:
``model-0000N-of-0000M.safetensors`` + ``model.safetensors.index.json``, in bfloat16 as the
hub ships them, with a ``generation_config.json``) in the config.json of one generation,
loads it with ``minillama.load`` and compares logits with transformers' model holding the
same (bf16-rounded) weights. Tolerance: max |logit difference| <= 1e-4 in float32 (the
logits are O(1); float32 rounding of the two orders of summation is ~1e-6).
"""

import copy
import json

import pytest
import torch
from test_hf_parity import randomise

import minillama
from minillama.checkpoints import NotEnoughMemory
from minillama.checkpoints.hf import eos_ids
from minillama.checkpoints.memory import parameter_count

transformers = pytest.importorskip("transformers")

VOCAB, SEQ, TOL = 160, 40, 1e-4
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
GENERATIONS = {  # name: (LlamaConfig changes, generation_config eos ids)
    "llama1": (dict(num_key_value_heads=4), 2),
    "llama2": (dict(num_key_value_heads=2), 2),
    "llama3": (dict(num_key_value_heads=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), 150),
    "llama3.1": (dict(num_key_value_heads=2, rope_parameters={**LLAMA3, "factor": 8.0}),
                 [150, 151, 152]),
    "llama3.2": (dict(num_key_value_heads=2, tie_word_embeddings=True,
                      rope_parameters={**LLAMA3, "factor": 32.0}), [150, 151, 152]),
}


def hf_model(changes):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
        **{"tie_word_embeddings": False, **changes})
    return bf16_exact(randomise(transformers.LlamaForCausalLM(cfg)))


@torch.no_grad()
def bf16_exact(model):
    """Round every weight to a bf16 value (kept in float32), as a bf16 file holds them.
    Parameters only: a whole-model .to(bf16) would also round RoPE's inv_freq buffer."""
    for p in model.parameters():
        p.copy_(p.bfloat16().float())
    return model


def publish(model, path, eos, llama1=False):
    """Write ``model`` as the hub does: bf16 shards, index, generation_config.json."""
    model.generation_config = transformers.GenerationConfig(bos_token_id=1, eos_token_id=eos)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(path, max_shard_size="40KB")
    if llama1:          # LLaMA 1's config.json predates GQA and rope settings
        d = json.loads((path / "config.json").read_text())
        for key in ("num_key_value_heads", "head_dim", "rope_parameters", "rope_theta"):
            d.pop(key, None)
        (path / "config.json").write_text(json.dumps(d))
    return path


def tokens(seed=1):
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_diff(ours, hf, x):
    return (ours(x.to(ours.output.weight.device)).float().cpu() - hf(x).logits).abs().max().item()


@pytest.mark.parametrize("name", list(GENERATIONS))
def test_sharded_snapshot_matches_transformers(name, tmp_path, device):
    changes, eos = GENERATIONS[name]
    hf = hf_model(changes).eval()
    path = publish(hf, tmp_path / name, eos, llama1=name == "llama1")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (path / "model.safetensors.index.json").is_file(), shards
    model = minillama.load(path, device=device)
    assert model.output.weight.dtype == torch.float32
    assert model.output.weight.device.type == torch.device(device).type
    assert model.cfg.tie_embeddings == (name == "llama3.2")
    assert (model.cfg.rope_scaling is not None) == name.startswith("llama3.")
    assert max_diff(model, hf, tokens()) <= TOL
    assert eos_ids(path) == ([eos] if isinstance(eos, int) else eos)
    unique = sum(p.numel() for p in model.parameters())        # a tied head counted once
    assert parameter_count(path, "hf") == unique


def test_bf16_load_is_bf16_and_close(tmp_path):
    hf = hf_model(GENERATIONS["llama3.1"][0]).eval()
    model = minillama.load(publish(hf, tmp_path / "s", 2), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ref = minillama.load(tmp_path / "s")                        # same weights, float32
    assert torch.equal(model.output.weight.float(), ref.output.weight)
    diff = max_diff(model, hf, tokens())
    print(f"bf16 compute vs transformers float32: max |dlogit| = {diff:.3f}")
    assert diff < 0.25                                          # bf16 arithmetic, O(1) logits


def test_llama4_text_sharded_snapshot(tmp_path):
    from test_llama4 import HF_BASE
    from test_llama4 import randomise as randomise4
    hf = randomise4(transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**HF_BASE)))
    hf = bf16_exact(hf).eval()
    path = publish(hf, tmp_path / "l4", [5, 6])
    assert (path / "model.safetensors.index.json").is_file()
    model = minillama.load(path)
    x = torch.randint(0, HF_BASE["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(1))
    assert max_diff(model, hf, x) <= TOL
    assert eos_ids(path) == [5, 6]
    assert parameter_count(path, "hf") == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shards", [1, 2])
def test_meta_consolidated_shards_match_transformers(shards, tmp_path):
    """Meta's layout (params.json + consolidated.NN.pth, one per model-parallel rank),
    written from the HF snapshot, loads to the same logits as transformers."""
    hf = hf_model(GENERATIONS["llama3.1"][0]).eval()
    ours = minillama.load(publish(hf, tmp_path / "hf", 2))
    minillama.save(ours, tmp_path / "meta", format="meta", shards=shards)
    (tmp_path / "meta" / "tokenizer.model").write_bytes(b"stand-in")   # as Meta ships it
    assert len(list((tmp_path / "meta").glob("consolidated.*.pth"))) == shards
    model = minillama.load(tmp_path / "meta", max_seq_len=64)
    assert max_diff(model, hf, tokens()) <= TOL
    stored = parameter_count(tmp_path / "meta", "meta")
    assert stored == sum(p.numel() for p in model.parameters())


def test_meta_tied_scaled_rope_means_llama32_factor(tmp_path):
    """A tied Llama 3 params.json with use_scaled_rope and no factor: Llama 3.2's 32."""
    hf = hf_model(GENERATIONS["llama3.2"][0]).eval()
    ours = minillama.load(publish(hf, tmp_path / "hf", 2))
    minillama.save(ours, tmp_path / "meta", format="meta")
    params = json.loads((tmp_path / "meta" / "params.json").read_text())
    params = {k: v for k, v in params.items() if k not in ("rope_scaling", "rope_scaling_factor")}
    params.update(use_scaled_rope=True)       # as Meta's 3.2 1B params.json: no factor
    (tmp_path / "meta" / "params.json").write_text(json.dumps(params))
    model = minillama.load(tmp_path / "meta", max_seq_len=64)
    assert model.cfg.rope_scaling.factor == 32.0
    assert model.cfg.rope_scaling.original_max_seq_len == 8192        # Meta's fixed setting


def test_refuses_when_weights_exceed_free_memory(tmp_path, monkeypatch, capsys):
    hf = hf_model(GENERATIONS["llama2"][0])
    path = publish(hf, tmp_path / "s", 2)
    n = sum(p.numel() for p in hf.parameters())
    minillama.load(path, max_bytes=4 * n)                       # exactly fits in float32
    err = capsys.readouterr().err
    assert f"{n:,} parameters x 4 bytes (float32)" in err, err
    with pytest.raises(NotEnoughMemory, match=r"need .* GiB .* float32.* but cpu has"):
        minillama.load(path, max_bytes=4 * n - 1)
    capsys.readouterr()
    minillama.load(path, max_bytes=4 * n - 1, dtype=torch.bfloat16, quiet=True)  # half: fits
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MINILLAMA_MAX_BYTES", str(n))
    with pytest.raises(NotEnoughMemory, match="MINILLAMA_MAX_BYTES"):
        minillama.load(path, dtype=torch.bfloat16)


def test_cli_refusal_is_one_line(tmp_path):
    import subprocess
    import sys

    from tokenizer_standins import make_sentencepiece_file
    path = publish(hf_model(GENERATIONS["llama2"][0]), tmp_path / "s", 2)
    make_sentencepiece_file(path)                       # Llama 2's tokenizer.model format
    run = subprocess.run([sys.executable, "-m", "minillama", "generate", str(path),
                          "--prompt", "hi"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "MINILLAMA_MAX_BYTES": "1000"})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("minillama generate: error:") and "free" in lines[-1], lines


def test_parameter_count_reads_no_tensor(tmp_path, monkeypatch):
    """The estimate comes from the headers: reading a tensor during it is an error."""
    hf = hf_model(GENERATIONS["llama2"][0])
    path = publish(hf, tmp_path / "s", 2)
    import safetensors

    def no_reading(*a, **k):
        raise AssertionError("a tensor was read")
    monkeypatch.setattr(safetensors, "safe_open", no_reading)
    monkeypatch.setattr("minillama.checkpoints.io.safe_open", no_reading)
    assert parameter_count(path, "hf") == sum(p.numel() for p in hf.parameters())
