"""4-bit quantisation of frozen weights: NF4 (QLoRA's data type) and the layer that uses it.

    packed, state = minillama.quant.quantize(w)          # NF4, blocks of 64, double quant
    w4 = minillama.quant.dequantize(packed, state)       # back to w's shape and dtype
    model = minillama.quant.quantize_model(model)        # every linear of the blocks -> 4 bit
    minillama.quant.storage_bits(model)                  # bits per quantised weight

``nf4.py`` is bit-exact with bitsandbytes' CPU path; ``baselines.py`` holds the int4 and
FP4 round trips the chapter compares NF4 with; ``linear4bit.py`` the module.
"""

from .baselines import fp4, int4_absmax
from .linear4bit import Linear4bit, dequantize_model, quantize_model, storage_bits
from .nf4 import (
    QuantState,
    dequantize,
    dynamic_map,
    nf4_code_table,
    pack_nibbles,
    quantize,
    unpack_nibbles,
)

__all__ = ["quantize", "dequantize", "QuantState", "nf4_code_table", "dynamic_map",
           "pack_nibbles", "unpack_nibbles", "Linear4bit", "quantize_model",
           "dequantize_model", "storage_bits", "int4_absmax", "fp4"]
