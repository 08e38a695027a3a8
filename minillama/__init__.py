"""minillama: LLaMA 1 to Llama 4 and their parameter-efficient fine-tuning, from scratch.

Public names: LlamaConfig, CONFIGS, Llama, count_parameters, load, save (any checkpoint
format, detected from the files: ``checkpoints/``); load_tokenizer (any LLaMA tokenizer
file: ``tokenizer_files.py``) and apply_chat_template (Llama 2 / Llama 3 chat: ``chat.py``).
"""

from .chat import apply_chat_template
from .checkpoints import load, save
from .config import CONFIGS, LlamaConfig, RopeScaling
from .model import Llama, count_parameters, kv_cache_bytes_per_token
from .tokenizer_files import load_tokenizer

__all__ = ["LlamaConfig", "RopeScaling", "CONFIGS", "Llama", "count_parameters",
           "kv_cache_bytes_per_token", "load", "save", "load_tokenizer", "apply_chat_template"]
