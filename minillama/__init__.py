"""minillama: LLaMA 1 to Llama 4 and their parameter-efficient fine-tuning, from scratch.

Public names: LlamaConfig, CONFIGS, Llama, count_parameters, load, save (any checkpoint
format, detected from the files: ``checkpoints/``).
"""

from .checkpoints import load, save
from .config import CONFIGS, LlamaConfig, RopeScaling
from .model import Llama, count_parameters, kv_cache_bytes_per_token

__all__ = ["LlamaConfig", "RopeScaling", "CONFIGS", "Llama", "count_parameters",
           "kv_cache_bytes_per_token", "load", "save"]
