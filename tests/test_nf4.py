"""NF4 from scratch: bit for bit what bitsandbytes 0.50 computes on the CPU.

Every comparison reads the raw bits (``view(int32/int16)``), not values with a tolerance:
packed bytes, absmax, the 8-bit absmax codes, the nested absmax, the offset and the
dequantised tensor.

What we saw of bitsandbytes' C++ CPU dequantize (SPEC section 6 warns it can be wrong).
Its vectorised kernels take the absmax per row (``row * (n / blocksize)``), which is only
right when every row holds whole blocks. On an AVX2 machine (no AVX-512; torch 2.13,
bitsandbytes 0.50.2) the fault did not show: for shapes (4, 32), (6, 96), (3, 100),
(2, 66), (5, 10), (3, 130), (7, 48), (3, 16), (2, 4, 48) its result equalled, bit for bit,
both its own pure-torch path (``backends/default/ops.py``) and ours. On a CPU with
AVX-512 it does show: shape (37, 128) at block size 256 had 4005 of 4736 values wrong,
and (4, 32), (6, 96), (7, 48) at block size 64 were wrong too. The tests therefore
compare every shape with bitsandbytes' pure-torch dequantize, and with its C++ kernel
only where each row holds whole blocks (a flat tensor, or a last dimension that is a
multiple of the block size), where both paths agree on any machine.

With ``--device cuda`` the bit-exact tests quantise on the GPU with both libraries:
bitsandbytes' CUDA kernels against our torch code run on CUDA, and its CUDA dequantize
(sound for every shape) is checked beside its pure-torch path. The tables are compared
on the CPU, where they are built.
"""

import math

import pytest
import torch

bnbF = pytest.importorskip("bitsandbytes.functional")
from bitsandbytes.backends.default import ops as bnb_default_ops  # noqa: E402

from minillama.quant import baselines  # noqa: E402
from minillama.quant import nf4 as N  # noqa: E402

FLOATS = [torch.float32, torch.bfloat16, torch.float16]
SPEC_TABLE = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
              -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
              0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
              0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()])


def assert_same_bits(a, b, what):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    differ = (bits(a) != bits(b)).sum().item()
    assert differ == 0, f"{what}: {differ} of {a.numel()} values differ"


def bnb_torch_dequantize(packed, absmax, blocksize, shape, dtype):
    """bitsandbytes' pure-torch 4-bit dequantize, without torch.compile."""
    f = bnb_default_ops._dequantize_4bit_compute
    f = getattr(f, "__wrapped__", f)
    code = bnbF.get_4bit_type("nf4", device=packed.device)
    return f(packed.reshape(-1), absmax, code, blocksize, shape, dtype)


def compare_with_bnb(x, blocksize=64, double_quant=True, device="cpu"):
    """Quantise and dequantise ``x`` with both libraries on ``device``; every field must
    match in bits."""
    x = x.to(device)
    ref_packed, ref = bnbF.quantize_4bit(x, blocksize=blocksize, quant_type="nf4",
                                         compress_statistics=double_quant)
    packed, state = N.quantize(x, blocksize, double_quant)
    assert_same_bits(packed, ref_packed.reshape(-1), "packed bytes")
    assert state.shape == x.shape and state.dtype == x.dtype and state.blocksize == blocksize
    if double_quant:
        assert_same_bits(state.absmax, ref.absmax, "8-bit absmax codes")
        assert_same_bits(state.nested_absmax, ref.state2.absmax, "nested absmax")
        assert_same_bits(state.offset, ref.offset, "offset")
        ref_scales = bnbF.dequantize_blockwise(ref.absmax, ref.state2) + ref.offset
    else:
        assert_same_bits(state.absmax, ref.absmax, "absmax")
        ref_scales = ref.absmax
    assert_same_bits(state.scales(), ref_scales, "decoded absmax")
    ours = N.dequantize(packed, state)
    assert ours.shape == x.shape and ours.dtype == x.dtype
    torch_path = bnb_torch_dequantize(ref_packed, ref_scales, blocksize, x.shape, x.dtype)
    assert_same_bits(ours, torch_path.reshape(x.shape), "dequantised (bnb torch path)")
    # rows of whole blocks: C++ kernel sound; bnb's CUDA kernel is sound for every shape
    if x.device.type == "cuda" or x.dim() == 1 or x.shape[-1] % blocksize == 0:
        kernel = bnbF.dequantize_4bit(ref_packed, ref, quant_type="nf4")
        assert_same_bits(ours, kernel.reshape(x.shape),
                         f"dequantised (bnb {x.device.type} kernel)")
    return packed, state


# ----------------------------------------------------------------------------- tables
def test_code_table_is_bitsandbytes_table_in_every_bit():
    ours = N.nf4_code_table()
    assert_same_bits(ours, bnbF.get_4bit_type("nf4", device="cpu"), "NF4 table")
    assert_same_bits(ours, torch.tensor(SPEC_TABLE), "NF4 table (SPEC)")
    assert ours[7] == 0 and ours[0] == -1 and ours[15] == 1
    assert (ours[8:15] > 0).all() and (ours[1:7] < 0).all()        # 8 positive, 7 negative


def test_dynamic_map_is_bitsandbytes_map_in_every_bit():
    ours = N.dynamic_map()
    assert_same_bits(ours, bnbF.create_dynamic_map(signed=True), "dynamic map")
    assert ours.numel() == 256 and (ours.diff() > 0).all()
    assert ours[-1] == 1 and abs(ours[0].item() + 0.99297) < 1e-5


def test_fast_code_lookup_equals_counting_midpoints():
    mids = N.nf4_midpoints()
    up, down = torch.nextafter(mids, torch.tensor(2.0)), torch.nextafter(mids, torch.tensor(-2.0))
    g = torch.Generator().manual_seed(0)
    s = torch.cat([torch.rand(200_000, generator=g) * 2 - 1, mids, up, down,
                   torch.tensor([-1.0, 1.0, 0.0, -0.0, 1e-40, -1e-40, 1.0000001, -1.0000001])])
    assert torch.equal(N.nf4_codes(s).long(), torch.bucketize(s, mids))
    assert torch.equal(N.nf4_codes(mids).long(), torch.arange(15))            # ties go low
    assert torch.equal(N.nf4_codes(up).long(), torch.arange(1, 16))


def test_pack_and_unpack_nibbles():
    codes = torch.tensor([1, 2, 3, 15, 0], dtype=torch.uint8)
    packed = N.pack_nibbles(codes, pad=7)
    assert packed.tolist() == [0x12, 0x3F, 0x07]             # first element: high nibble
    assert N.pack_nibbles(codes).tolist() == [0x12, 0x3F, 0x00]
    assert torch.equal(N.unpack_nibbles(packed, 5), codes)
    many = torch.randint(0, 16, (1001,), dtype=torch.uint8)
    assert torch.equal(N.unpack_nibbles(N.pack_nibbles(many), 1001), many)


# ----------------------------------------------------------------------------- bit-exact
SHAPES = [(64 * 5,), (1000,), (1,), (63,), (65,), (3, 100), (7, 33), (2, 3, 64), (4, 32),
          (6, 96), (300, 257)]


@pytest.mark.parametrize("double_quant", [False, True], ids=["plain", "double"])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bit_exact_with_bitsandbytes(shape, dtype, double_quant, device):
    g = torch.Generator().manual_seed(math.prod(shape))
    x = (torch.randn(shape, generator=g) * 0.05).to(dtype)
    packed, state = compare_with_bnb(x, 64, double_quant, device)
    assert packed.numel() == (x.numel() + 1) // 2


@pytest.mark.parametrize("blocksize", [32, 128, 256, 4096])
def test_bit_exact_other_blocksizes(blocksize, device):
    g = torch.Generator().manual_seed(blocksize)
    for double_quant in (False, True):
        compare_with_bnb(torch.randn(37, 128, generator=g), blocksize, double_quant, device)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_all_zero_blocks(dtype, device):
    x = torch.randn(64 * 4 + 10)
    x[64:128] = 0                                     # a full block of zeros
    x[256:] = 0                                       # the partial last block
    x = x.to(dtype)
    for double_quant in (False, True):
        packed, state = compare_with_bnb(x, 64, double_quant, device)
        assert (packed[32:64] == 0x77).all()          # zero is code 7
        if not double_quant:
            assert state.absmax[1] == 0 and state.absmax[-1].item() == pytest.approx(1e-38)
        assert (N.dequantize(packed, state)[256:] == 0).all()


def test_exact_midpoint_ties(device):
    """s exactly on (c_j + c_{j+1}) / 2 takes the lower code, the next float up the upper."""
    mids = N.nf4_midpoints()
    up = torch.nextafter(mids, torch.tensor(2.0))
    row = torch.cat([torch.ones(1), mids, up, torch.zeros(64 - 31)])     # absmax 1: s == x
    for scale in (1.0, 2.0, 0.25):                                       # powers of 2: exact
        x = torch.cat([row, row[:40]]) * scale        # a full block, then a partial one
        packed, state = compare_with_bnb(x, 64, double_quant=False, device=device)
        codes = N.unpack_nibbles(packed, x.numel()).long().cpu()
        assert torch.equal(codes[1:16], torch.arange(15))
        assert torch.equal(codes[16:31], torch.arange(1, 16))
        assert torch.equal(codes[65:80], torch.arange(15))              # partial block too
        compare_with_bnb(x, 64, double_quant=True, device=device)


def test_random_bit_exact_sweep(device):
    """Many lengths and magnitudes at once (partial blocks, odd lengths, tiny and big values)."""
    for trial in range(30):
        g = torch.Generator().manual_seed(1000 + trial)
        n = int(torch.randint(1, 3000, (1,), generator=g))
        scale = 10.0 ** int(torch.randint(-6, 4, (1,), generator=g))
        x = (torch.randn(n, generator=g) * scale).to(FLOATS[trial % 3])
        compare_with_bnb(x, 64, double_quant=trial % 2 == 0, device=device)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_non_contiguous_input_is_read_row_major(dtype, device):
    x = torch.randn(96, 130, generator=torch.Generator().manual_seed(7)).to(dtype)
    x = x.to(device).t()
    assert not x.is_contiguous()
    compare_with_bnb(x, 64, double_quant=True, device=device)


def test_bnb_cpp_dequantize_on_row_shapes_we_checked():
    """The shapes SPEC flags: ours equals bnb's torch path (asserted in compare_with_bnb) and
    is a faithful quantisation (error below half the largest code gap times the absmax)."""
    for shape in [(4, 32), (6, 96), (3, 16), (7, 48)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        packed, state = compare_with_bnb(x, 64, double_quant=False)
        err = (N.dequantize(packed, state) - x).abs().reshape(-1)
        scale = state.absmax.repeat_interleave(64)[: x.numel()]
        assert (err <= 0.5 * N.nf4_code_table().diff().max() * scale + 1e-7).all()


# ----------------------------------------------------------------------------- state, errors
def test_state_bytes_and_meta_shapes():
    x = torch.randn(256, 256)
    packed, plain = N.quantize(x, double_quant=False)
    assert 8 * (packed.numel() + plain.nbytes()) / x.numel() == 4.5
    packed, double = N.quantize(x)
    bits_dq = 8 * (packed.numel() + double.nbytes()) / x.numel()
    assert bits_dq == pytest.approx(4 + 8 / 64 + (32 * 4 + 32) / 65536)
    meta_packed, meta_state = N.quantize(torch.empty(10, 70, device="meta"))
    assert meta_packed.shape == (350,) and meta_state.absmax.shape == (11,)
    assert meta_state.nested_absmax.shape == (1,)
    assert N.dequantize(meta_packed, meta_state).shape == (10, 70)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="fp32, bf16 or fp16"):
        N.quantize(torch.arange(64))
    with pytest.raises(TypeError, match="tensor"):
        N.quantize([1.0, 2.0])
    with pytest.raises(ValueError, match="blocksize=48"):
        N.quantize(torch.randn(64), blocksize=48)
    with pytest.raises(ValueError, match="inf or nan"):
        N.quantize(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="empty"):
        N.quantize(torch.randn(0))
    packed, state = N.quantize(torch.randn(4, 64))
    with pytest.raises(ValueError, match="needs 128"):
        N.dequantize(packed[:-1], state)
    with pytest.raises(TypeError, match="uint8"):
        N.dequantize(packed.float(), state)
    _, other = N.quantize(torch.randn(8, 64))
    with pytest.raises(ValueError, match=r"shape=\(8, 64\) needs 256"):
        N.dequantize(packed, other)
    _, plain = N.quantize(torch.randn(4, 64), double_quant=False)
    plain.absmax = plain.absmax[:-1]
    with pytest.raises(ValueError, match="state.absmax"):
        N.dequantize(packed, plain)
    state.nested_absmax = torch.ones(2)
    with pytest.raises(ValueError, match="nested_absmax"):
        N.dequantize(packed, state)
    with pytest.raises(TypeError, match="QuantState"):
        N.dequantize(packed, {"absmax": 1})
    with pytest.raises(TypeError, match="fp32 bit patterns"):
        N.nf4_codes(torch.zeros(4, dtype=torch.bfloat16))


# ----------------------------------------------------------------------------- storage
def test_storage_of_a_real_model():
    """4.5 bits per weight without double quantisation; ~4.127 with it (block tails aside)."""
    import copy

    from minillama.quant import quantize_model, storage_bits
    from minillama.reference import load_reference
    model, _, _ = load_reference("stories")
    plain = storage_bits(quantize_model(copy.deepcopy(model), 64, double_quant=False))
    double = storage_bits(quantize_model(model, 64, double_quant=True))
    n = plain["quantized_parameters"]
    assert n == 6 * (2 * 192 * 192 + 2 * 64 * 192 + 3 * 512 * 192)
    assert plain["bits_per_parameter"] == 4.5
    # per matrix: 4 bits + 8 per 64 + 32 per 256 blocks (rounded up) + a 32-bit offset
    sizes = [192 * 192, 64 * 192, 64 * 192, 192 * 192, 512 * 192, 192 * 512, 512 * 192]
    want = 6 * sum(4 * k + 8 * k / 64 + 32 * math.ceil(k / 64 / 256) + 32 for k in sizes) / n
    assert double["bits_per_parameter"] == pytest.approx(want, rel=1e-12)
    assert double["bits_per_parameter"] == pytest.approx(4.127, abs=0.005)
    assert double["other_parameters"] == plain["other_parameters"] == 2 * 512 * 192 + 192 + \
        6 * 2 * 192                                   # embeddings, head and the norms stay


# ----------------------------------------------------------------------------- baselines
def test_fp4_round_trip_equals_bitsandbytes_fp4():
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(3))
    packed, st = bnbF.quantize_4bit(x, blocksize=64, quant_type="fp4")
    ref = bnb_default_ops._dequantize_4bit_compute
    ref = getattr(ref, "__wrapped__", ref)(packed.reshape(-1), st.absmax,
                                           bnbF.get_4bit_type("fp4", device="cpu"), 64,
                                           x.shape, torch.float32)
    assert torch.equal(baselines.fp4(x), ref)         # == : +0 and -0 count as equal
    assert baselines.FP4_LEVELS.numel() == 15


def test_nf4_beats_fp4_and_int4_on_normal_weights():
    x = torch.randn(512, 512, generator=torch.Generator().manual_seed(4)) * 0.02
    mse = {name: (f(x) - x).pow(2).mean().item() for name, f in
           [("int4", baselines.int4_absmax), ("fp4", baselines.fp4), ("nf4", baselines.nf4)]}
    assert mse["nf4"] < mse["fp4"] and mse["nf4"] < mse["int4"]
    assert torch.equal(baselines.nf4(x), N.dequantize(*N.quantize(x, double_quant=False)))
    # 0.6 * 7 = 4.2 -> 4; 0.5 * 7 = 3.5 is a tie and goes to the lower level, 3
    assert baselines.int4_absmax(torch.tensor([1.0, 0.6, -0.2, 0.5])).tolist() == pytest.approx(
        [1.0, 4 / 7, -1 / 7, 3 / 7])
