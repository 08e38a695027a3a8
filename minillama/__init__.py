"""minillama: LLaMA 1 to Llama 4 and their parameter-efficient fine-tuning, from scratch.

Public names: LlamaConfig, CONFIGS, Llama, count_parameters, load, save.
"""

from .config import CONFIGS, LlamaConfig, RopeScaling
from .model import Llama, count_parameters, kv_cache_bytes_per_token

__all__ = ["LlamaConfig", "RopeScaling", "CONFIGS", "Llama", "count_parameters",
           "kv_cache_bytes_per_token", "load", "save"]


def load(path, **kwargs):
    """Load a model from any supported checkpoint format (detected from the files)."""
    from .checkpoints import load as _load
    return _load(path, **kwargs)


def save(model, path, format: str = "native", **kwargs):
    """Save ``model`` to ``path`` as ``native`` | ``hf`` | ``meta`` | ``llama2c``."""
    from .checkpoints import save as _save
    return _save(model, path, format=format, **kwargs)
