# GENERATED from solutions/ch02_family.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch02.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 2 exercises: the LLaMA family in numbers.

Every published LLaMA (LLaMA 1, arXiv 2302.13971; Llama 2, arXiv 2307.09288; Llama 3,
arXiv 2407.21783) is fixed by a handful of integers in a ``minillama.LlamaConfig``:
width D = ``dim``, layers L = ``n_layers``, query heads H = ``n_heads``, key/value
heads KV = ``n_kv_heads``, vocabulary V = ``vocab_size``. The grader compares your
answers with ``minillama.count_parameters`` (which builds the model and counts its
tensors) on every published model.
"""

from minillama import LlamaConfig


def ffn_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """The SwiGLU hidden width F, rounded the way Meta's reference code rounds it.

        h = int(2 * 4 * dim / 3)              # keeps the FLOPs of a 4 * dim MLP
        h = int(ffn_dim_multiplier * h)       # only when a multiplier is given
        F = the smallest multiple of ``multiple_of`` that is >= h

    Example: LLaMA-7B (dim 4096, multiple_of 256, no multiplier) has F = 11008.
    """
    raise NotImplementedError("exercise: ffn_dim")


def llama_parameters(cfg: LlamaConfig) -> int:
    """The exact parameter count of a LLaMA, in closed form (head_dim hd = D / H).

    Per layer: wq and wo (D x H*hd each), wk and wv (D x KV*hd each), the three SwiGLU
    matrices w1, w2, w3 (D x F each) and two RMSNorm gains (D each). Outside the layers:
    the token embedding (V x D), the output head (V x D, absent when ``tie_embeddings``
    shares it with the embedding) and the final norm (D):

        L * (2*D*H*hd + 2*D*KV*hd + 3*D*F + 2*D) + V*D*(1 if tied else 2) + D

    F is ``cfg.hidden_dim`` when it is set, else ``ffn_dim`` of the config's numbers.
    """
    raise NotImplementedError("exercise: llama_parameters")


def kv_cache_bytes_per_token(cfg: LlamaConfig, bytes_per_value: int = 2) -> int:
    """Bytes of KV cache one token occupies during generation.

    Every layer stores one key and one value vector per KV head, each ``head_dim`` long:

        2 * L * KV * hd * bytes_per_value

    (2 bytes for bf16/fp16). Grouped-query attention shrinks it by H / KV.
    """
    raise NotImplementedError("exercise: kv_cache_bytes_per_token")
