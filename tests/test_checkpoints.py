"""Checkpoint formats: detection, exact round trips, the real stories260K llama2.c model,
every error path, and atomic writes."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import minillama
from minillama import LlamaConfig, RopeScaling
from minillama.checkpoints import detect_format, hf, llama2c, meta, native

FORMATS = ["native", "hf", "meta", "llama2c"]
STORIES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "stories260K.bin"
needs_stories = pytest.mark.skipif(
    not STORIES.is_file(), reason=f"the real llama2.c checkpoint {STORIES} is not present")


@torch.no_grad()
def tiny(seed=0, **kw):
    """A small random model; norm gains are random too, so no tensor is all ones."""
    cfg = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16,
               max_seq_len=32)
    model = minillama.Llama(LlamaConfig(**{**cfg, **kw}))
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1 + 0.2 * noise if "norm" in name else 0.2 * noise)
    return model.eval()


def target(tmp_path, fmt, name="ckpt"):
    return tmp_path / (name + ".bin" if fmt == "llama2c" else name)


def tokens(vocab=64, t=12):
    return torch.randint(0, vocab, (2, t), generator=torch.Generator().manual_seed(3))


def same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@torch.no_grad()
def logits(model, x=None):
    return model(tokens(model.cfg.vocab_size) if x is None else x)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_exact(fmt, tied, tmp_path):
    model = tiny(tie_embeddings=tied)
    path = minillama.save(model, target(tmp_path, fmt), format=fmt)
    assert detect_format(path) == fmt
    back = minillama.load(path)
    assert not back.training and back.output.weight.dtype == torch.float32
    assert back.cfg.tie_embeddings == tied
    assert (back.output.weight is back.tok_embeddings.weight) == tied
    c, b = model.cfg, back.cfg
    assert (b.dim, b.n_layers, b.n_heads, b.n_kv_heads, b.vocab_size, b.ffn_dim) == (
        c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.ffn_dim)
    same_tensors(model, back)
    assert torch.equal(logits(model), logits(back))


def test_native_keeps_config_dtype_and_marker(tmp_path):
    model = tiny(rope_scaling=RopeScaling(4.0, 1.0, 4.0, 8),
                 rope_theta=5e5, norm_eps=1e-6, name="course").to(torch.bfloat16)
    minillama.save(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["format"] == "minillama"
    assert load_file(tmp_path / "model.safetensors")["norm.weight"].dtype == torch.bfloat16
    back = minillama.load(tmp_path)
    assert back.cfg == model.cfg and back.norm.weight.dtype == torch.float32
    same_tensors(model, minillama.load(tmp_path, dtype=torch.bfloat16))


@pytest.mark.parametrize("fmt", ["meta", "llama2c"])
def test_half_layout_model_is_permuted_for_interleaved_formats(fmt, tmp_path):
    model = tiny(rope_layout="half")
    back = minillama.load(minillama.save(model, target(tmp_path, fmt), format=fmt))
    assert back.cfg.rope_layout == "interleaved"
    assert not torch.equal(back.layers[0].attention.wq.weight, model.layers[0].attention.wq.weight)
    assert (logits(back) - logits(model)).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- Meta
@pytest.mark.parametrize("emb_dim", [0, 1])
def test_meta_two_shards_split_like_meta_and_merge_back(emb_dim, tmp_path):
    model = tiny()
    minillama.save(model, tmp_path, format="meta", shards=2, embedding_shard_dim=emb_dim)
    params = json.loads((tmp_path / "params.json").read_text())
    assert set(params) == {"dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                           "multiple_of", "ffn_dim_multiplier", "norm_eps", "rope_theta",
                           "use_scaled_rope"}
    shards = [torch.load(tmp_path / f"consolidated.0{i}.pth", weights_only=True)
              for i in range(2)]
    s0, F = shards[0], model.cfg.ffn_dim
    assert s0["layers.0.attention.wq.weight"].shape == (16, 32)       # rows split
    assert s0["layers.0.attention.wo.weight"].shape == (32, 16)       # columns split
    assert s0["layers.1.feed_forward.w2.weight"].shape == (32, F // 2)
    assert s0["tok_embeddings.weight"].shape == ((32, 32) if emb_dim == 0 else (64, 16))
    assert torch.equal(s0["norm.weight"], shards[1]["norm.weight"])  # replicated
    back = minillama.load(tmp_path)                                   # split dim from shapes
    same_tensors(model, back)


def test_meta_llama1_style_directory(tmp_path):
    """vocab_size -1, no n_kv_heads, a stored rope.freqs table: all as LLaMA 1 shipped."""
    model = tiny(n_kv_heads=4)
    minillama.save(model, tmp_path, format="meta")
    p = json.loads((tmp_path / "params.json").read_text())
    p["vocab_size"] = -1
    del p["n_kv_heads"]
    (tmp_path / "params.json").write_text(json.dumps(p))
    shard = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    shard["rope.freqs"] = torch.zeros(4)
    torch.save(shard, tmp_path / "consolidated.00.pth")
    back = minillama.load(tmp_path, max_seq_len=32)
    assert back.cfg.vocab_size == 64 and back.cfg.n_kv_heads == 4
    same_tensors(model, back)
    with pytest.raises(ValueError, match="got \\(64, 32\\), expected \\(50, 32\\)"):
        minillama.load(tmp_path, vocab_size=50)


@pytest.mark.parametrize("hidden_dim", [40, 100])     # below / above int(8 * dim / 3) = 85
def test_meta_writes_an_explicit_hidden_dim_as_multiple_of(hidden_dim, tmp_path):
    model = tiny(hidden_dim=hidden_dim)
    back = minillama.load(minillama.save(model, tmp_path, format="meta"))
    assert back.cfg.hidden_dim is None and back.cfg.ffn_dim == hidden_dim
    same_tensors(model, back)


def test_meta_rope_scaling(tmp_path):
    meta_default = tiny(rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192))
    minillama.save(meta_default, tmp_path / "a", format="meta")
    p = json.loads((tmp_path / "a" / "params.json").read_text())
    assert p["use_scaled_rope"] is True and "rope_scaling" not in p
    assert minillama.load(tmp_path / "a").cfg.rope_scaling == meta_default.cfg.rope_scaling
    custom = tiny(rope_scaling=RopeScaling(4.0, 1.0, 4.0, 8))
    back = minillama.load(minillama.save(custom, tmp_path / "b", format="meta"))
    assert back.cfg.rope_scaling == custom.cfg.rope_scaling
    x = tokens(t=30)
    assert torch.equal(logits(back, x), logits(custom, x))


# ----------------------------------------------------------------------------- stories260K
@pytest.fixture(scope="module")
def stories():
    if not STORIES.is_file():
        pytest.skip(f"the real llama2.c checkpoint {STORIES} is not present")
    return minillama.load(STORIES)


def run_c_logits(path, toks):
    """Logits of a legacy llama2.c file computed the way llama2.c's run.c does, in numpy
    float64, reading the file independently of minillama."""
    raw = Path(path).read_bytes()
    D, F, L, H, KV, V, T = struct.unpack("<7i", raw[:28])
    flat, hd = np.frombuffer(raw, "<f4", offset=28).astype(np.float64), D // H
    sizes = dict(emb=(abs(V), D), an=(L, D), wq=(L, H * hd, D), wk=(L, KV * hd, D),
                 wv=(L, KV * hd, D), wo=(L, D, H * hd), fn=(L, D), w1=(L, F, D), w2=(L, D, F),
                 w3=(L, F, D), norm=(D,), fr=(T, hd // 2), fi=(T, hd // 2))
    w, off = {}, 0
    for k, shape in sizes.items():
        n = int(np.prod(shape))
        w[k], off = flat[off:off + n].reshape(shape), off + n
    out = w["emb"] if V > 0 else flat[off:].reshape(-V, D)
    rms = lambda x, g: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g
    t = len(toks)
    ang = np.arange(t)[:, None, None] * 10000.0 ** (-np.arange(0, hd, 2) / hd)

    def rope(x):                                  # pairs (2i, 2i+1), as run.c loops over them
        a, b, c, s, y = x[..., 0::2], x[..., 1::2], np.cos(ang), np.sin(ang), np.empty_like(x)
        y[..., 0::2], y[..., 1::2] = a * c - b * s, a * s + b * c
        return y

    x, mask = w["emb"][toks], np.triu(np.full((t, t), -np.inf), 1)
    for i in range(L):
        h = rms(x, w["an"][i])
        q = rope((h @ w["wq"][i].T).reshape(t, H, hd))
        k = np.repeat(rope((h @ w["wk"][i].T).reshape(t, KV, hd)), H // KV, 1)
        v = np.repeat((h @ w["wv"][i].T).reshape(t, KV, hd), H // KV, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", p, v).reshape(t, D) @ w["wo"][i].T
        h = rms(x, w["fn"][i])
        gate = h @ w["w1"][i].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w["w3"][i].T)) @ w["w2"][i].T
    return rms(x, w["norm"]) @ out.T


@needs_stories
def test_stories_config(stories):
    c = stories.cfg
    assert (c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads) == (64, 172, 5, 8, 4)
    assert (c.vocab_size, c.max_seq_len, c.tie_embeddings) == (512, 512, True)
    assert (c.rope_theta, c.norm_eps, c.rope_layout) == (10000.0, 1e-5, "interleaved")


@needs_stories
def test_stories_matches_run_c_arithmetic(stories):
    toks = [1, 461, 401, 378, 455, 473, 456, 300, 12, 99, 7, 250]
    ref = run_c_logits(STORIES, toks)
    ours = logits(stories, torch.tensor([toks]))[0].double().numpy()
    assert np.abs(ours - ref).max() < 1e-4


@needs_stories
def test_stories_greedy_is_deterministic_cached_or_not_and_likely(stories):
    bos = torch.tensor([1])
    a = stories.generate(bos, 32)
    assert a.shape == (32,)
    assert torch.equal(a, stories.generate(bos, 32))
    assert torch.equal(a, stories.generate(bos, 32, use_cache=False))
    seq = torch.cat([bos, a])[None]
    with torch.no_grad():
        _, loss = stories(seq[:, :-1], seq[:, 1:])
    assert loss.item() < 1.5        # confident on its own text; uniform would be ln 512 = 6.2


@needs_stories
def test_stories_hf_round_trip_is_exact(stories, tmp_path):
    back = minillama.load(minillama.save(stories, tmp_path, format="hf"))
    same_tensors(stories, back)
    assert torch.equal(logits(stories), logits(back))


@needs_stories
def test_stories_llama2c_export_reproduces_the_file(stories, tmp_path):
    path = minillama.save(stories, tmp_path / "s.bin", format="llama2c")
    same_tensors(stories, minillama.load(path))
    ours, orig = path.read_bytes(), STORIES.read_bytes()
    assert len(ours) == len(orig)
    table = 4 * 2 * 512 * 4          # freq_cis_real + _imag: recomputed, may differ in last bits
    assert ours[:len(ours) - table] == orig[:len(orig) - table]


@needs_stories
def test_stories_meta_two_shard_round_trip(stories, tmp_path):
    back = minillama.load(minillama.save(stories, tmp_path, format="meta", shards=2),
                          max_seq_len=512)
    assert back.cfg.tie_embeddings and back.cfg.ffn_dim == 172
    assert torch.equal(logits(stories), logits(back))


# ----------------------------------------------------------------------------- errors
def test_all_mismatches_in_one_message(tmp_path):
    minillama.save(tiny(), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["layers.1.ffn_norm.weight"]
    state["layers.0.attention.extra.weight"] = torch.zeros(2)
    state["layers.0.attention.wk.weight"] = torch.zeros(8, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as e:
        minillama.load(tmp_path)
    assert str(e.value) == (
        "checkpoint does not fit the config: missing: ['layers.1.ffn_norm.weight']; "
        "unexpected: ['layers.0.attention.extra.weight']; "
        "wrong shape: layers.0.attention.wk.weight (got (8, 32), expected (16, 32))")


def test_truncated_files_say_what_was_expected(tmp_path):
    model = tiny()
    bin_path = minillama.save(model, tmp_path / "m.bin", format="llama2c")
    raw = bin_path.read_bytes()
    (tmp_path / "short.bin").write_bytes(raw[:1000])
    with pytest.raises(ValueError, match=f"header promises {len(raw) - 28} bytes of weights, "
                                         f"found {1000 - 28}"):
        minillama.load(tmp_path / "short.bin")
    (tmp_path / "long.bin").write_bytes(raw + b"\0" * 8)
    with pytest.raises(ValueError, match="8 bytes more than its llama2.c header"):
        minillama.load(tmp_path / "long.bin")
    (tmp_path / "head.bin").write_bytes(raw[:10])
    with pytest.raises(ValueError, match="expected a 28-byte header, found 10"):
        minillama.load(tmp_path / "head.bin")

    minillama.save(model, tmp_path / "native")
    st = tmp_path / "native" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(ValueError, match="is truncated: header promises .* bytes of tensor data"):
        minillama.load(tmp_path / "native")

    minillama.save(model, tmp_path / "meta", format="meta")
    pth = tmp_path / "meta" / "consolidated.00.pth"
    pth.write_bytes(pth.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        minillama.load(tmp_path / "meta")


def test_bad_llama2c_headers(tmp_path):
    (tmp_path / "zero.bin").write_bytes(struct.pack("<7i", 64, 172, 5, 0, 4, 512, 512))
    with pytest.raises(ValueError, match="not a llama2.c checkpoint"):
        minillama.load(tmp_path / "zero.bin")
    (tmp_path / "v1.bin").write_bytes(struct.pack("<Ii", 0x616B3432, 1) + b"\0" * 300)
    with pytest.raises(ValueError, match="versioned llama2.c export"):
        minillama.load(tmp_path / "v1.bin")


def test_unknown_and_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        minillama.load(tmp_path / "nowhere")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "weights.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unrecognised checkpoint directory") as e:
        minillama.load(tmp_path / "odd")
    for expected in ("weights.npz", "params.json", "consolidated", "model.safetensors",
                     "llama2.c"):
        assert expected in str(e.value)
    minillama.save(tiny(), tmp_path / "n")
    with pytest.raises(ValueError, match="pass its directory"):
        minillama.load(tmp_path / "n" / "model.safetensors")
    with pytest.raises(ValueError, match="unknown checkpoint format 'onnx'"):
        minillama.save(tiny(), tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="unknown checkpoint format 'onnx'"):
        minillama.load(tmp_path / "n", format="onnx")


def test_hf_directory_errors(tmp_path):
    minillama.save(tiny(), tmp_path, format="hf")
    cfg_path = tmp_path / "config.json"
    good = json.loads(cfg_path.read_text())
    for change, message in [({"model_type": "mistral", "architectures": []}, "'mistral'"),
                            ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}},
                             "rope type 'yarn'"),
                            ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
                            ({"head_dim": 16}, "head_dim=16"),
                            ({"vocab_size": None}, "vocab_size must be a positive integer"),
                            ({"intermediate_size": 64, "num_key_value_heads": 4},
                             "gate_proj.weight \\(got \\(96, 32\\), expected \\(64, 32\\)\\)")]:
        cfg_path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message):
            minillama.load(tmp_path)
    cfg_path.write_text(json.dumps({k: v for k, v in good.items() if k != "hidden_size"}))
    with pytest.raises(ValueError, match="config.json lacks \\['hidden_size'\\]"):
        minillama.load(tmp_path)
    cfg_path.write_text(json.dumps(good))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights found"):
        minillama.load(tmp_path)


def test_savers_refuse_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="cannot record rope_theta=500000.0, norm_eps=1e-06"):
        minillama.save(tiny(norm_eps=1e-6, rope_theta=5e5), tmp_path / "a.bin", format="llama2c")
    with pytest.raises(ValueError, match="cannot split .* into 3 shards"):
        minillama.save(tiny(), tmp_path / "b", format="meta", shards=3)
    model = tiny()
    model.layers[0].attention.extra = nn.Linear(2, 2, bias=False)   # e.g. an unmerged adapter
    with pytest.raises(ValueError, match="unexpected: \\['layers.0.attention.extra.weight'\\]"):
        minillama.save(model, tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == []                        # nothing half-written


def test_meta_shards_with_different_names(tmp_path):
    minillama.save(tiny(), tmp_path, format="meta", shards=2)
    s1 = torch.load(tmp_path / "consolidated.01.pth", weights_only=True)
    del s1["norm.weight"]
    torch.save(s1, tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match="shards \\[1\\] hold different tensor names"):
        minillama.load(tmp_path)


# ----------------------------------------------------------------------------- atomic writes
class Crash(Exception):
    pass


def crash(*args, **kwargs):
    """Stand-in for a tensor writer: write part of the data, then die."""
    for a in args:
        if hasattr(a, "write"):
            a.write(b"partial")
        elif isinstance(a, (str, os.PathLike)):
            Path(a).write_bytes(b"partial")
    raise Crash


WRITERS = {"native": (native, "write_safetensors"), "hf": (hf, "write_safetensors"),
           "meta": (meta, "write_torch"), "llama2c": (llama2c, "_write_floats")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_save_keeps_the_previous_checkpoint(fmt, tmp_path, monkeypatch):
    path = target(tmp_path, fmt)
    old = tiny(seed=1)
    minillama.save(old, path, format=fmt)
    before = sorted(os.listdir(tmp_path)), path.is_dir() and sorted(os.listdir(path))
    monkeypatch.setattr(*WRITERS[fmt], crash)
    with pytest.raises(Crash):
        minillama.save(tiny(seed=2), path, format=fmt)
    with pytest.raises(Crash):
        minillama.save(tiny(seed=2), target(tmp_path, fmt, "fresh"), format=fmt)
    monkeypatch.undo()
    assert (sorted(os.listdir(tmp_path)), path.is_dir() and sorted(os.listdir(path))) == before
    assert torch.equal(logits(minillama.load(path)), logits(old))


def test_resave_keeps_other_files_and_drops_stale_shards(tmp_path):
    minillama.save(tiny(seed=1), tmp_path / "m", format="meta", shards=2)
    (tmp_path / "m" / "tokenizer.model").write_bytes(b"tok")
    new = tiny(seed=2)
    minillama.save(new, tmp_path / "m", format="meta")
    assert sorted(os.listdir(tmp_path / "m")) == ["consolidated.00.pth", "params.json",
                                                  "tokenizer.model"]
    assert os.listdir(tmp_path) == ["m"]
    same_tensors(new, minillama.load(tmp_path / "m"))
