"""Graders for chapter 11 (NF4 from scratch): nibble packing and the blockwise code search.

    python -m pytest tests/test_exercises_ch11.py --impl=exercises

Every answer is compared with ``minillama.quant.nf4``, which is bit-exact with
bitsandbytes: codes and bytes exactly, absmax to the bit (apart from bitsandbytes' 1e-38
floor for an all-zero last block, which the exercise does not ask for).
"""

import pytest
import torch

from minillama.quant import nf4 as N

CH11 = "ch11_nf4"


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def random_codes(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 16, (n,), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- nibbles
@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 101, 1000])
@pytest.mark.parametrize("pad", [0, 7])
def test_ch11_pack_nibbles_matches_the_library(impl, n, pad):
    codes = random_codes(n, seed=n)
    got = impl(CH11).pack_nibbles(codes, pad)
    want = N.pack_nibbles(codes, pad)
    assert got.dtype == torch.uint8 and got.shape == ((n + 1) // 2,)
    assert torch.equal(got, want)


def test_ch11_pack_nibbles_puts_the_first_code_in_the_high_nibble(impl):
    got = impl(CH11).pack_nibbles(torch.tensor([1, 2, 15, 0, 9], dtype=torch.uint8), 7)
    assert got.tolist() == [0x12, 0xF0, 0x97]
    two_d = impl(CH11).pack_nibbles(torch.tensor([[3, 4], [5, 6]], dtype=torch.uint8))
    assert two_d.tolist() == [0x34, 0x56]                   # read flat, row-major


@pytest.mark.parametrize("n", [1, 2, 5, 64, 333])
def test_ch11_unpack_nibbles_inverts_the_library_packing(impl, n):
    codes = random_codes(n, seed=10 + n)
    packed = N.pack_nibbles(codes, pad=7)
    got = impl(CH11).unpack_nibbles(packed, n)
    assert got.dtype == torch.uint8 and got.shape == (n,)
    assert torch.equal(got, codes)
    assert torch.equal(got, N.unpack_nibbles(packed, n))


def test_ch11_unpack_nibbles_reads_bitsandbytes_bytes(impl):
    x = randn(5, 27, seed=3)                                  # 135 values: odd, padded
    packed, _ = N.quantize(x, double_quant=False)
    got = impl(CH11).unpack_nibbles(packed, x.numel())
    assert torch.equal(got, N.nf4_codes(N.blockwise_scale(x, 64)[0]))


# ----------------------------------------------------------------------------- codes
def library_codes(x, blocksize):
    s, absmax = N.blockwise_scale(x, blocksize)
    return N.nf4_codes(s), absmax


@pytest.mark.parametrize("shape, blocksize, dtype", [
    ((64,), 64, torch.float32), ((3, 100), 64, torch.float32), ((7, 33), 64, torch.bfloat16),
    ((2, 5, 31), 32, torch.float16), ((1001,), 128, torch.float32),
    ((4, 256), 256, torch.bfloat16)])
def test_ch11_quantize_blockwise_matches_the_library(impl, shape, blocksize, dtype):
    x = randn(*shape, seed=sum(shape), scale=0.02).to(dtype)
    codes, absmax = impl(CH11).quantize_blockwise(x, N.nf4_code_table(), blocksize)
    want_codes, want_absmax = library_codes(x, blocksize)
    assert codes.dtype == torch.uint8 and codes.shape == (x.numel(),)
    assert absmax.dtype == torch.float32 and absmax.shape == want_absmax.shape
    assert torch.equal(absmax, want_absmax)
    assert (codes != want_codes).sum().item() == 0


def test_ch11_quantize_blockwise_gives_bitsandbytes_bytes_and_values(impl):
    x = randn(6, 70, seed=5)                                    # 420 = 6 blocks + a tail
    codes, absmax = impl(CH11).quantize_blockwise(x, N.nf4_code_table(), 64)
    packed, state = N.quantize(x, double_quant=False)
    assert torch.equal(impl(CH11).pack_nibbles(codes, pad=7), packed)
    assert torch.equal(N.dequantize(packed, N.QuantState(x.shape, x.dtype, 64, absmax)),
                       N.dequantize(packed, state))


def test_ch11_quantize_blockwise_ties_go_to_the_lower_code(impl):
    table = N.nf4_code_table()
    midpoints = (table[:-1] + table[1:]) / 2                  # exact fp32 midpoints
    x = torch.cat([torch.ones(1), midpoints, torch.zeros(64 - 16)])   # M = 1: s = x exactly
    codes, absmax = impl(CH11).quantize_blockwise(x, table, 64)
    assert absmax.tolist() == [1.0]
    assert codes[1:16].tolist() == list(range(15))            # midpoint j -> code j
    assert codes[0].item() == 15 and (codes[16:] == 7).all()  # 1.0 -> 15, 0.0 -> 7


def test_ch11_quantize_blockwise_handles_zero_blocks_and_other_tables(impl):
    x = torch.cat([torch.zeros(64), randn(64, seed=8)])
    codes, absmax = impl(CH11).quantize_blockwise(x, N.nf4_code_table(), 64)
    assert absmax[0].item() == 0.0 and (codes[:64] == 7).all()     # zeros stay zeros
    int4 = torch.arange(-7, 8, dtype=torch.float32) / 7              # 15 levels, any table
    got, _ = impl(CH11).quantize_blockwise(x, int4, 64)
    s, _ = N.blockwise_scale(x, 64)
    torch.testing.assert_close(got.long(), torch.bucketize(s, (int4[:-1] + int4[1:]) / 2),
                               rtol=0, atol=0)
